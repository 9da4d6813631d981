/**
 * Opening connections, as scripts: a segment from the peer at time t, then exactly the
 * segments that must come out. Active, passive and simultaneous open; refusals (RST, closed
 * port, ICMP); SYN retransmission; listener backlogs and port conflicts.
 */
import assert from "node:assert/strict";
import { buildSegment, TcpScript } from "./_support/tcp_script.ts";
import type { TcpError } from "../core/netstack/tcp.ts";

function closeRecorder(conn: { onClose?: (e?: TcpError) => void }) {
  const rec = { closed: 0, code: undefined as string | undefined };
  conn.onClose = (e) => {
    rec.closed++;
    rec.code = e?.code;
  };
  return rec;
}

Deno.test("active open", async (t) => {
  await t.step("SYN with our options, SYN-ACK, ACK; options negotiated", () => {
    const s = new TcpScript();
    const conn = s.tcp.connect(0, { dst: s.remote, dstPort: 80 });
    s.localPort = conn.localPort;
    assert.ok(conn.localPort >= 49152 && conn.localPort <= 65535, "an ephemeral port");
    let opened = 0;
    conn.onOpen = () => opened++;
    // 256 KiB receive buffer: shift 3; window in a SYN is not scaled (RFC 7323 2.2).
    const [syn] = s.expect([{ flags: "S", window: 65535, mss: 1380, ws: 3, sackPerm: true }]);
    assert.ok(syn!.timestamp && syn!.tsEcr === 0);
    assert.equal(conn.state, "SYN-SENT");
    assert.equal(s.tcp.pollAt(), 1000, "RFC 6298 2.1: initial RTO 1 s");
    const iss = syn!.seq;
    s.send(30, {
      flags: "SA",
      seq: 7000,
      ack: iss + 1,
      window: 29200,
      mss: 1460,
      ws: 7,
      sackPerm: true,
      ts: [123, syn!.tsVal],
    });
    s.expect([{ flags: "A", seq: iss + 1, ack: 7001, window: 32768, ts: [syn!.tsVal + 30, 123] }]);
    assert.equal(conn.state, "ESTABLISHED");
    assert.equal(opened, 1);
    const info = conn.info;
    assert.deepEqual(info.windowScale, { send: 7, receive: 3 });
    assert.equal(info.sack, true);
    assert.equal(info.timestamps, true);
    assert.equal(info.mss, 1400 - 20 - 12, "path limits the segment; timestamps take 12 bytes");
    assert.equal(info.sendWindow, 29200, "the SYN-ACK's window is not scaled");
    assert.equal(info.srtt, 30, "RTT from the echoed timestamp");
    assert.equal(s.tcp.pollAt(), Infinity, "nothing to do");
  });

  await t.step("a peer without options: no scaling, no SACK, no timestamps, MSS 536", () => {
    const s = new TcpScript();
    const conn = s.tcp.connect(0, { dst: s.remote, dstPort: 80 });
    s.localPort = conn.localPort;
    const [syn] = s.expect([{ flags: "S" }]);
    s.send(10, { flags: "SA", seq: 1, ack: syn!.seq + 1, window: 8192 });
    s.expect([{ flags: "A", ts: null, sack: [], window: 65535 }]);
    const info = conn.info;
    assert.equal(info.windowScale, undefined);
    assert.equal(info.sack, false);
    assert.equal(info.timestamps, false);
    assert.equal(info.mss, 536, "RFC 9293 3.7.1 default");
    assert.equal(info.srtt, 10, "RTT from the SYN sent once (Karn)");
  });

  await t.step("IPv6 uses the IPv6 default MSS", () => {
    const s = new TcpScript({ v6: true, payload: 1380 });
    const conn = s.tcp.connect(0, { dst: s.remote, dstPort: 80 });
    s.localPort = conn.localPort;
    const [syn] = s.expect([{ flags: "S", mss: 1360 }]);
    s.send(10, { flags: "SA", seq: 1, ack: syn!.seq + 1 });
    s.expect([{ flags: "A" }]);
    assert.equal(conn.info.mss, 1220);
  });

  await t.step("an ACK that does not acknowledge our SYN is answered with RST", () => {
    const s = new TcpScript();
    const conn = s.tcp.connect(0, { dst: s.remote, dstPort: 80 });
    s.localPort = conn.localPort;
    const [syn] = s.expect([{ flags: "S" }]);
    s.send(10, { flags: "SA", seq: 1, ack: syn!.seq + 5 });
    s.expect([{ flags: "R", seq: syn!.seq + 5 }]);
    assert.equal(conn.state, "SYN-SENT");
    s.send(20, { flags: "SA", seq: 1, ack: syn!.seq + 1 });
    s.expect([{ flags: "A" }]);
    assert.equal(conn.state, "ESTABLISHED");
  });

  await t.step("data written before the handshake goes right after it", () => {
    const s = new TcpScript();
    const conn = s.tcp.connect(0, { dst: s.remote, dstPort: 80 });
    s.localPort = conn.localPort;
    const [syn] = s.expect([{ flags: "S" }]);
    assert.equal(conn.write(new TextEncoder().encode("early")), 5);
    s.expectNone("no data before the handshake");
    s.send(10, { flags: "SA", seq: 1, ack: syn!.seq + 1, ws: 0 });
    s.expect([{ flags: "PA", seq: syn!.seq + 1, ack: 2, data: "early" }]);
  });
});

Deno.test("refused and failed connects", async (t) => {
  await t.step(
    "RST+ACK to our SYN: ECONNREFUSED; a RST without ACK or a wrong ACK is ignored",
    () => {
      const s = new TcpScript();
      const conn = s.tcp.connect(0, { dst: s.remote, dstPort: 80 });
      s.localPort = conn.localPort;
      const rec = closeRecorder(conn);
      const [syn] = s.expect([{ flags: "S" }]);
      s.send(5, { flags: "R", seq: 0 });
      s.send(6, { flags: "RA", seq: 0, ack: syn!.seq + 9 });
      s.expectNone();
      assert.equal(conn.state, "SYN-SENT");
      s.send(10, { flags: "RA", seq: 0, ack: syn!.seq + 1 });
      s.expectNone("no answer to a RST");
      assert.equal(conn.state, "CLOSED");
      assert.deepEqual(rec, { closed: 1, code: "ECONNREFUSED" });
      assert.equal(conn.error?.code, "ECONNREFUSED");
      assert.equal(s.tcp.connectionCount, 0);
      assert.equal(s.tcp.pollAt(), Infinity);
    },
  );

  await t.step("SYN to a closed port: RST+ACK; an ACK: RST; a RST: nothing", () => {
    const s = new TcpScript();
    s.localPort = 81;
    s.send(0, { flags: "S", seq: 100 });
    s.expect([{ flags: "RA", seq: 0, ack: 101, window: 0 }]);
    s.send(1, { flags: "A", seq: 5, ack: 777 });
    s.expect([{ flags: "R", seq: 777 }]);
    s.send(2, { flags: "PA", seq: 5, ack: 9, data: "xyz" });
    s.expect([{ flags: "R", seq: 9 }]);
    s.send(3, { flags: "F", seq: 10 });
    s.expect([{ flags: "RA", seq: 0, ack: 11 }]);
    s.send(4, { flags: "RA", seq: 5, ack: 9 });
    s.expectNone();
  });

  await t.step("SYN retransmitted with exponential backoff, then ETIMEDOUT", () => {
    const s = new TcpScript();
    const conn = s.tcp.connect(0, { dst: s.remote, dstPort: 80 });
    s.localPort = conn.localPort;
    const rec = closeRecorder(conn);
    const [syn] = s.expect([{ flags: "S" }]);
    const times: number[] = [];
    for (let i = 0; i < 6; i++) {
      const at = s.tcp.pollAt();
      times.push(at);
      s.tick(at);
      s.expect([{ flags: "S", seq: syn!.seq, mss: 1380, ws: 3, sackPerm: true }], `retry ${i + 1}`);
    }
    assert.deepEqual(times, [1000, 3000, 7000, 15000, 31000, 63000]);
    assert.equal(s.tcp.pollAt(), 123000, "the seventh wait is capped at 60 s (RFC 6298 2.5)");
    s.tick(123000);
    s.expectNone();
    assert.deepEqual(rec, { closed: 1, code: "ETIMEDOUT" });
    assert.equal(s.tcp.connectionCount, 0);
  });

  for (
    const [kind, code] of [
      ["port-unreachable", "ECONNREFUSED"],
      ["net-unreachable", "ENETUNREACH"],
      ["host-unreachable", "EHOSTUNREACH"],
      ["prohibited", "EHOSTUNREACH"],
    ] as const
  ) {
    await t.step(`ICMP ${kind} while connecting: ${code}`, () => {
      const s = new TcpScript();
      const conn = s.tcp.connect(0, { dst: s.remote, dstPort: 80 });
      const rec = closeRecorder(conn);
      const [syn] = s.expect([{ flags: "S" }]);
      const quoted = new Uint8Array(8);
      quoted.set([conn.localPort >> 8, conn.localPort & 0xff, 0, 80]);
      // A forged error quoting a sequence number we did not send is ignored (RFC 5927 4.1).
      new DataView(quoted.buffer).setUint32(4, (syn!.seq + 1) >>> 0);
      s.tcp.icmpError(5, kind, s.local, s.remote, quoted);
      assert.equal(conn.state, "SYN-SENT");
      new DataView(quoted.buffer).setUint32(4, syn!.seq);
      s.tcp.icmpError(6, kind, s.local, s.remote, quoted);
      assert.equal(conn.state, "CLOSED");
      assert.deepEqual(rec, { closed: 1, code });
      s.expectNone();
    });
  }

  await t.step("ICMP on an established connection is soft; reported if it then times out", () => {
    const s = new TcpScript({ limits: { maxRetransmits: 2 } });
    const { conn, iss } = s.openActive({ ts: false });
    const rec = closeRecorder(conn);
    conn.write(new Uint8Array(10));
    s.expect([{ flags: "PA", len: 10 }]);
    const quoted = new Uint8Array(8);
    quoted.set([conn.localPort >> 8, conn.localPort & 0xff, 0, 80]);
    new DataView(quoted.buffer).setUint32(4, iss + 1);
    s.tcp.icmpError(20, "host-unreachable", s.local, s.remote, quoted);
    assert.equal(conn.state, "ESTABLISHED");
    s.runUntil(100_000);
    assert.equal(s.out().length, 2, "two retransmissions");
    assert.deepEqual(rec, { closed: 1, code: "EHOSTUNREACH" });
  });
});

Deno.test("passive open", async (t) => {
  await t.step("SYN, SYN-ACK answering the peer's options, ACK, accept", () => {
    const s = new TcpScript();
    const l = s.tcp.listen({ port: 8080 });
    let notified = 0;
    l.onAccept = () => notified++;
    s.localPort = 8080;
    s.peerPort = 40000;
    s.send(0, {
      flags: "S",
      seq: 500,
      window: 64240,
      mss: 1460,
      ws: 7,
      sackPerm: true,
      ts: [1000, 0],
    });
    const [sa] = s.expect([{
      flags: "SA",
      srcPort: 8080,
      dstPort: 40000,
      ack: 501,
      window: 65535,
      mss: 1380,
      ws: 3,
      sackPerm: true,
    }]);
    assert.equal(sa!.tsEcr, 1000, "echoes the SYN's timestamp");
    assert.equal(l.halfOpen, 1);
    assert.equal(l.accept(), undefined, "not before the handshake completes");
    s.send(15, { flags: "A", seq: 501, ack: sa!.seq + 1, ts: [1015, sa!.tsVal] });
    s.expectNone();
    assert.equal(notified, 1);
    assert.equal(l.pending, 1);
    assert.equal(l.halfOpen, 0);
    const conn = l.accept()!;
    assert.equal(conn.state, "ESTABLISHED");
    assert.deepEqual([...conn.localAddr], [...s.local]);
    assert.deepEqual([...conn.remoteAddr], [...s.remote]);
    assert.equal(conn.localPort, 8080);
    assert.equal(conn.remotePort, 40000);
    assert.deepEqual(conn.info.windowScale, { send: 7, receive: 3 });
    assert.equal(conn.info.srtt, 15);
    assert.equal(l.accept(), undefined);
  });

  await t.step("a SYN without options gets a SYN-ACK without them (RFC 7323, RFC 2018)", () => {
    const s = new TcpScript();
    const l = s.tcp.listen({ port: 8080 });
    s.localPort = 8080;
    s.send(0, { flags: "S", seq: 500, mss: 1000 });
    const [sa] = s.expect([{ flags: "SA", mss: 1380, ws: null, sackPerm: false, ts: null }]);
    s.send(25, { flags: "A", seq: 501, ack: sa!.seq + 1 });
    const conn = l.accept()!;
    assert.equal(conn.info.srtt, 25, "RTT from the SYN-ACK, sent once");
    assert.equal(conn.info.mss, 1000);
  });

  await t.step(
    "the SYN again: SYN-ACK again; SYN-ACK retransmitted, then the half-open TCB dropped",
    () => {
      const s = new TcpScript();
      const l = s.tcp.listen({ port: 8080 });
      s.localPort = 8080;
      s.send(0, { flags: "S", seq: 500 });
      const [sa] = s.expect([{ flags: "SA", ack: 501 }]);
      s.send(300, { flags: "S", seq: 500 });
      s.expect([{ flags: "SA", seq: sa!.seq, ack: 501 }]);
      const times: number[] = [];
      for (let at = s.tcp.pollAt(); at < Infinity; at = s.tcp.pollAt()) {
        times.push(at);
        s.tick(at);
      }
      assert.deepEqual(times, [1000, 3000, 7000, 15000, 31000, 63000]);
      assert.equal(s.out().length, 5, "five SYN-ACK retransmissions (Linux tcp_synack_retries)");
      assert.equal(l.halfOpen, 0);
      assert.equal(s.tcp.connectionCount, 0);
    },
  );

  await t.step("RST in SYN-RECEIVED forgets the half-open connection", () => {
    const s = new TcpScript();
    const l = s.tcp.listen({ port: 8080 });
    s.localPort = 8080;
    s.send(0, { flags: "S", seq: 500 });
    s.expect([{ flags: "SA" }]);
    s.send(5, { flags: "R", seq: 501 });
    s.expectNone();
    assert.equal(l.halfOpen, 0);
    assert.equal(s.tcp.connectionCount, 0);
  });

  await t.step("an ACK not for our SYN-ACK is answered with RST", () => {
    const s = new TcpScript();
    s.tcp.listen({ port: 8080 });
    s.localPort = 8080;
    s.send(0, { flags: "S", seq: 500 });
    const [sa] = s.expect([{ flags: "SA" }]);
    s.send(5, { flags: "A", seq: 501, ack: sa!.seq + 10 });
    s.expect([{ flags: "R", seq: sa!.seq + 10 }]);
  });

  await t.step(
    "a listener on one address does not answer for another; wildcard covers both families",
    () => {
      const s = new TcpScript();
      const other = new Uint8Array([10, 0, 0, 9]);
      const v6 = new Uint8Array([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
      const peer6 = new Uint8Array([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
      s.ip.addresses.push(other, v6);
      const specific = s.tcp.listen({ port: 8080, address: other });
      s.localPort = 8080;
      s.send(0, { flags: "S", seq: 1 });
      s.expect([{ flags: "RA", ack: 2 }], "nobody listens on 10.0.0.1:8080");
      s.tcp.input(
        1,
        s.remote,
        other,
        buildSegment({ srcPort: 80, dstPort: 8080, flags: "S", seq: 1 }, s.remote, other),
      );
      s.expect([{ flags: "SA", ack: 2 }], "the specific address answers");
      specific.close();
      s.out();
      const wild = s.tcp.listen({ port: 8080 });
      s.send(2, { flags: "S", seq: 1 });
      s.expect([{ flags: "SA", ack: 2 }], "IPv4 through the wildcard");
      s.tcp.input(
        3,
        peer6,
        v6,
        buildSegment({ srcPort: 80, dstPort: 8080, flags: "S", seq: 7 }, peer6, v6),
      );
      const [sa6] = s.ip.sent.splice(0);
      assert.deepEqual([...sa6!.src], [...v6]);
      assert.equal(sa6!.seg.ack, 8, "IPv6 through the wildcard");
      assert.equal(wild.halfOpen, 2);
    },
  );
});

Deno.test("simultaneous open (RFC 9293 figure 8)", async (t) => {
  for (const finalSegment of ["SA", "A"] as const) {
    await t.step(`both send SYN; the peer then sends ${finalSegment}`, () => {
      const s = new TcpScript();
      s.peerPort = 5000;
      const conn = s.tcp.connect(0, { dst: s.remote, dstPort: 5000, srcPort: 6000 });
      s.localPort = 6000;
      let opened = 0;
      conn.onOpen = () => opened++;
      const [syn] = s.expect([{ flags: "S", srcPort: 6000, dstPort: 5000 }]);
      const iss = syn!.seq;
      // The peer's SYN crosses ours.
      s.send(10, { flags: "S", seq: 300, mss: 1460, ws: 2, sackPerm: true, ts: [50, 0] });
      s.expect([{ flags: "SA", seq: iss, ack: 301, ws: 3, sackPerm: true }]);
      assert.equal(conn.state, "SYN-RECEIVED");
      // The peer's answer to our SYN: a SYN-ACK (its SYN again, with the ACK), or an ACK.
      s.send(20, {
        flags: finalSegment,
        seq: finalSegment === "SA" ? 300 : 301,
        ack: iss + 1,
        ts: [60, syn!.tsVal],
      });
      s.expectNone();
      assert.equal(conn.state, "ESTABLISHED");
      assert.equal(opened, 1);
      conn.write(new Uint8Array([1, 2, 3]));
      s.expect([{ flags: "PA", seq: iss + 1, ack: 301, len: 3 }]);
    });
  }
});

Deno.test("listener limits", async (t) => {
  await t.step(
    "half-open limit drops extra SYNs; a full accept queue drops the completing ACK",
    () => {
      const s = new TcpScript({ limits: { synBacklog: 3 } });
      const l = s.tcp.listen({ port: 8080, backlog: 2 });
      s.localPort = 8080;
      const isn: number[] = [];
      for (let i = 0; i < 4; i++) {
        s.peerPort = 40000 + i;
        s.send(i, { flags: "S", seq: 1000 * i });
      }
      for (
        const r of s.expect([{ flags: "SA", dstPort: 40000 }, { flags: "SA", dstPort: 40001 }, {
          flags: "SA",
          dstPort: 40002,
        }])
      ) isn.push(r.seq);
      assert.equal(s.tcp.stats.synDropped, 1);
      assert.equal(l.halfOpen, 3);
      for (let i = 0; i < 3; i++) {
        s.peerPort = 40000 + i;
        s.send(10 + i, { flags: "A", seq: 1000 * i + 1, ack: isn[i]! + 1 });
      }
      s.expectNone();
      assert.equal(l.pending, 2);
      assert.equal(l.halfOpen, 1, "the third stays half-open: its ACK was dropped");
      assert.equal(s.tcp.stats.acceptQueueFull, 1);
      // With the accept queue full, even a SYN the half-open limit would allow is dropped.
      s.peerPort = 40009;
      s.send(20, { flags: "S", seq: 9 });
      s.expectNone();
      // Accepting makes room: the peer's next segment (its ACK again, here with data) completes.
      assert.ok(l.accept());
      s.peerPort = 40002;
      s.send(30, { flags: "PA", seq: 2001, ack: isn[2]! + 1, data: "hi" });
      assert.equal(l.pending, 2);
      assert.equal(l.halfOpen, 0);
      l.accept();
      const third = l.accept()!;
      assert.equal(third.remotePort, 40002);
      assert.equal(new TextDecoder().decode(third.read()), "hi", "data that came with the ACK");
    },
  );

  await t.step("closing a listener resets connections not yet accepted", () => {
    const s = new TcpScript();
    const l = s.tcp.listen({ port: 8080 });
    s.localPort = 8080;
    s.peerPort = 40000;
    s.send(0, { flags: "S", seq: 100 });
    const [sa] = s.expect([{ flags: "SA" }]);
    s.send(1, { flags: "A", seq: 101, ack: sa!.seq + 1 });
    s.peerPort = 40001;
    s.send(2, { flags: "S", seq: 200 });
    s.expect([{ flags: "SA", dstPort: 40001 }]);
    l.close();
    s.expect([{ flags: "RA", dstPort: 40001 }, {
      flags: "RA",
      dstPort: 40000,
      seq: sa!.seq + 1,
      ack: 101,
    }]);
    assert.equal(s.tcp.connectionCount, 0);
    s.send(3, { flags: "S", seq: 300 });
    s.expect([{ flags: "RA", ack: 301 }], "the port is closed now");
  });

  await t.step("port conflicts: EADDRINUSE; a foreign address: EADDRNOTAVAIL", () => {
    const s = new TcpScript();
    const other = new Uint8Array([10, 0, 0, 9]);
    s.ip.addresses.push(other);
    const l = s.tcp.listen({ port: 8080 });
    assert.throws(() => s.tcp.listen({ port: 8080 }), { code: "EADDRINUSE" });
    assert.throws(() => s.tcp.listen({ port: 8080, address: other }), { code: "EADDRINUSE" });
    s.tcp.listen({ port: 8081, address: other });
    s.tcp.listen({ port: 8081, address: s.local });
    assert.throws(() => s.tcp.listen({ port: 8081 }), { code: "EADDRINUSE" });
    assert.throws(() => s.tcp.listen({ port: 1, address: new Uint8Array([1, 2, 3, 4]) }), {
      code: "EADDRNOTAVAIL",
    });
    l.close();
    s.tcp.listen({ port: 8080 });
    const eph = s.tcp.listen({ port: 0 });
    assert.ok(eph.port >= 49152);
  });

  await t.step(
    "connect errors: no address of the family, a taken 4-tuple, the connection limit",
    () => {
      const s = new TcpScript({ limits: { maxConnections: 1 } });
      assert.throws(() => s.tcp.connect(0, { dst: new Uint8Array(16), dstPort: 1 }), {
        code: "ENETUNREACH",
      });
      s.tcp.connect(0, { dst: s.remote, dstPort: 80, srcPort: 1234 });
      assert.throws(() => s.tcp.connect(0, { dst: s.remote, dstPort: 80, srcPort: 1234 }), {
        code: "ENOBUFS",
      });
      const t2 = new TcpScript();
      t2.tcp.connect(0, { dst: t2.remote, dstPort: 80, srcPort: 1234 });
      assert.throws(() => t2.tcp.connect(0, { dst: t2.remote, dstPort: 80, srcPort: 1234 }), {
        code: "EADDRINUSE",
      });
      assert.throws(() => t2.tcp.connect(0, { dst: t2.remote, dstPort: 0 }), RangeError);
    },
  );
});
