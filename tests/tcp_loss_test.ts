/**
 * Loss and recovery, as scripts: retransmission timeout with backoff and Karn's rule, fast
 * retransmit on three duplicate ACKs with NewReno partial ACKs, SACK-based recovery that
 * skips SACKed data, timeouts that give up, and Packet Too Big.
 */
import assert from "node:assert/strict";
import { patternData, TcpScript } from "./_support/tcp_script.ts";

const MSS = 1380; // 1400-byte payloads, no timestamps

Deno.test("retransmission timeout (RFC 6298)", async (t) => {
  await t.step("backs off exponentially; Karn: no RTT sample from a retransmitted segment", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false }); // SYN-ACK at 10: SRTT 10, RTO 200
    assert.equal(conn.info.rto, 200);
    conn.write(patternData(100));
    s.expect([{ flags: "PA", seq: iss + 1, len: 100 }]);
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const at = s.tcp.pollAt();
      times.push(at);
      s.tick(at);
      s.expect([{ flags: "PA", seq: iss + 1, data: patternData(100) }], `retransmission ${i + 1}`);
    }
    assert.deepEqual(times, [210, 610, 1410]);
    assert.equal(conn.info.rto, 1600);
    s.send(1500, { flags: "A", seq: irs + 1, ack: iss + 101 });
    assert.equal(conn.info.srtt, 10, "the ACK of a retransmitted segment gives no sample");
    assert.equal(conn.info.rto, 200, "new data acknowledged: the backoff is over");
    assert.equal(s.tcp.pollAt(), Infinity);
    conn.write(patternData(10));
    s.expect([{ len: 10 }]);
    s.send(1550, { flags: "A", seq: irs + 1, ack: iss + 111 });
    assert.equal(conn.info.srtt, 10 * 7 / 8 + 50 / 8, "a segment sent once gives a sample");
  });

  await t.step("cwnd drops to one segment; recovery resends in slow start", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false });
    conn.write(patternData(5 * MSS));
    s.expect(Array.from({ length: 5 }, () => ({ len: MSS })));
    s.tick(210);
    s.expect([{ seq: iss + 1, len: MSS }], "only the first: cwnd = 1 MSS");
    assert.equal(conn.info.cwnd, MSS);
    assert.equal(conn.info.ssthresh, 5 * MSS / 2);
    s.send(230, { flags: "A", seq: irs + 1, ack: iss + 1 + MSS });
    s.expect([{ seq: iss + 1 + MSS }, { seq: iss + 1 + 2 * MSS }], "cwnd 2: the next two");
  });

  await t.step("gives up after the retransmission limit: ETIMEDOUT", () => {
    const s = new TcpScript({ limits: { maxRetransmits: 3 } });
    const { conn } = s.openActive({ ts: false });
    let code: string | undefined;
    conn.onClose = (e) => code = e?.code;
    conn.write(patternData(10));
    s.out();
    s.runUntil(3009);
    assert.equal(s.out().length, 3);
    assert.equal(conn.state, "ESTABLISHED");
    s.tick(3010);
    assert.equal(code, "ETIMEDOUT");
    assert.equal(conn.state, "CLOSED");
    assert.equal(s.tcp.connectionCount, 0);
  });
});

Deno.test("fast retransmit and NewReno (RFC 5681, RFC 6582)", async (t) => {
  await t.step("three duplicate ACKs resend the hole; a partial ACK resends the next one", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false, sack: false });
    const seq = (k: number) => iss + 1 + k * MSS; // start of segment k (0-based)
    conn.write(patternData(10 * MSS));
    s.expect(Array.from({ length: 10 }, (_, k) => ({ seq: seq(k), len: MSS })));
    const ack = (at: number, k: number) => s.send(at, { flags: "A", seq: irs + 1, ack: seq(k) });
    // Segments 2 and 5 are lost. The peer ACKs 0-1, then each later arrival repeats that ACK.
    ack(20, 2);
    s.expectNone();
    ack(21, 2);
    ack(22, 2);
    s.expectNone("two duplicates are not enough");
    ack(23, 2);
    s.expect([{ seq: seq(2), data: patternData(MSS, 2 * MSS) }], "fast retransmit");
    assert.equal(conn.info.ssthresh, (8 * MSS) / 2);
    assert.equal(conn.info.cwnd, 4 * MSS + 3 * MSS, "ssthresh + 3 MSS");
    ack(24, 2);
    ack(25, 2);
    ack(26, 2);
    s.expectNone("more duplicates inflate cwnd; there is no new data to send");
    // The retransmission fills the first hole: the ACK reaches the second (a partial ACK).
    ack(40, 5);
    s.expect([{ seq: seq(5), len: MSS }], "NewReno: the next hole at once");
    ack(60, 10);
    s.expectNone();
    assert.equal(conn.info.cwnd, MSS, "RFC 6582 (1): min(ssthresh, FlightSize + MSS)");
    assert.equal(s.tcp.stats.fastRecoveries, 1);
    assert.equal(s.tcp.stats.timeouts, 0);
    assert.equal(s.tcp.pollAt(), Infinity);
  });

  await t.step("duplicate ACKs for data sent before a recovery do not start another", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false, sack: false });
    const seq = (k: number) => iss + 1 + k * MSS;
    conn.write(patternData(6 * MSS));
    s.out();
    // A new ACK, then three duplicates of it.
    for (let i = 0; i < 4; i++) s.send(20 + i, { flags: "A", seq: irs + 1, ack: seq(1) });
    s.expect([{ seq: seq(1) }]);
    // A partial ACK, then duplicates of it: still the same recovery (RFC 6582 step 3-5).
    s.send(40, { flags: "A", seq: irs + 1, ack: seq(3) });
    s.expect([{ seq: seq(3) }]);
    for (let i = 0; i < 4; i++) s.send(41 + i, { flags: "A", seq: irs + 1, ack: seq(3) });
    s.expectNone();
    assert.equal(s.tcp.stats.fastRecoveries, 1);
  });
});

Deno.test("SACK-based recovery (RFC 2018, RFC 6675)", async (t) => {
  await t.step("resends every hole the scoreboard shows lost, and nothing SACKed", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false });
    const seq = (k: number) => iss + 1 + k * MSS;
    conn.write(patternData(10 * MSS));
    s.out();
    s.send(20, { flags: "A", seq: irs + 1, ack: seq(2) });
    s.expectNone();
    // Segments 2 and 5 lost: the peer SACKs 3-4 and 6-9.
    s.send(21, {
      flags: "A",
      seq: irs + 1,
      ack: seq(2),
      sack: [[seq(6), seq(10)], [seq(3), seq(5)]],
    });
    s.expect([{ seq: seq(2), len: MSS }, { seq: seq(5), len: MSS }]);
    assert.equal(conn.info.cwnd, 4 * MSS, "RFC 6675: cwnd = ssthresh, no inflation");
    s.send(40, { flags: "A", seq: irs + 1, ack: seq(5), sack: [[seq(6), seq(10)]] });
    s.expectNone("the partial ACK's hole was already resent");
    s.send(50, { flags: "A", seq: irs + 1, ack: seq(10) });
    s.expectNone();
    assert.equal(s.tcp.stats.retransmits, 2);
  });

  await t.step("after a timeout, resending skips what the peer SACKed", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false });
    const seq = (k: number) => iss + 1 + k * MSS;
    conn.write(patternData(5 * MSS));
    s.out();
    // Only segments 1 and 3 arrive: too little to call anything lost.
    s.send(20, {
      flags: "A",
      seq: irs + 1,
      ack: seq(0),
      sack: [[seq(1), seq(2)], [seq(3), seq(4)]],
    });
    s.expectNone();
    s.tick(210);
    s.expect([{ seq: seq(0) }], "RTO: the first segment");
    s.send(230, { flags: "A", seq: irs + 1, ack: seq(2), sack: [[seq(3), seq(4)]] });
    s.expect([{ seq: seq(2) }, { seq: seq(4) }], "segment 3 was SACKed: not sent again");
  });
});

Deno.test("Packet Too Big lowers the segment size and resends (RFC 1191, RFC 8201)", () => {
  const s = new TcpScript();
  const { conn, iss } = s.openActive({ ts: false });
  conn.write(patternData(3 * MSS));
  s.expect([{ len: MSS }, { len: MSS }, { len: MSS }]);
  s.ip.payload = 1000; // the IP layer learned a smaller path MTU
  const quoted = new Uint8Array(8);
  quoted.set([conn.localPort >> 8, conn.localPort & 0xff, 0, 80]);
  new DataView(quoted.buffer).setUint32(4, iss + 1);
  s.tcp.icmpError(30, "too-big", s.local, s.remote, quoted);
  const segs = s.expect([{ len: 980 }, { len: 980 }, { len: 980 }, { len: 980 }, { len: 220 }]);
  assert.deepEqual(segs.flatMap((r) => [...r.payload]), [...patternData(3 * MSS)]);
  assert.equal(conn.info.mss, 980);
});
