/**
 * RACK-TLP (RFC 8985): as scripts, a lost tail is probed after two RTTs and the probe's SACK
 * lets RACK repair the rest without the RTO; over a simulated congested link, the per-segment
 * bookkeeping stays right through bursts of loss.
 */
import assert from "node:assert/strict";
import { TcpLayer } from "../core/netstack/tcp.ts";
import { echoClient, echoServer } from "./_support/sim_echo.ts";
import { patternData, seededRandom, SimNetwork, TcpScript } from "./_support/tcp_script.ts";

const MSS = 1380; // 1400-byte payloads, no timestamps; SACK on

Deno.test("TLP: a lost tail is probed and repaired without the RTO (RFC 8985 7)", () => {
  const s = new TcpScript();
  const { conn, iss, irs } = s.openActive({ ts: false });
  const seq = (k: number) => iss + 1 + k * MSS;
  conn.write(patternData(5 * MSS));
  s.expect(Array.from({ length: 5 }, (_, k) => ({ seq: seq(k), len: MSS })));
  // 0-2 arrive; 3 and 4, the tail, are lost: no ACK will ever show it.
  s.send(20, { flags: "A", seq: irs + 1, ack: seq(3) });
  s.expectNone();
  const pto = s.tcp.pollAt();
  assert.equal(pto, 20 + 2 * conn.info.srtt, "PTO = 2 SRTT after the last ACK");
  s.tick(pto);
  s.expect([{ seq: seq(4), len: MSS }], "the probe: the last segment again");
  // The probe's SACK shows 3 lost: RACK repairs it at once.
  s.send(pto + 10, { flags: "A", seq: irs + 1, ack: seq(3), sack: [[seq(4), seq(5)]] });
  s.expect([{ seq: seq(3), len: MSS }], "recovery triggered by the probe");
  s.send(pto + 20, { flags: "A", seq: irs + 1, ack: seq(5) });
  s.expectNone();
  assert.equal(s.tcp.stats.timeouts, 0);
  assert.equal(s.tcp.stats.retransmits, 2);
  assert.equal(s.tcp.pollAt(), Infinity);
});

Deno.test("RACK: a lost retransmission is sent again without the RTO (RFC 8985 6.2)", () => {
  const s = new TcpScript();
  const { conn, iss, irs } = s.openActive({ ts: false });
  const seq = (k: number) => iss + 1 + k * MSS;
  conn.write(patternData(10 * MSS));
  s.out();
  s.send(20, { flags: "A", seq: irs + 1, ack: seq(2) });
  // Segment 2 is lost; 3-9 arrive: fast retransmit.
  s.send(21, { flags: "A", seq: irs + 1, ack: seq(2), sack: [[seq(3), seq(10)]] });
  s.expect([{ seq: seq(2), len: MSS }], "fast retransmit");
  conn.write(patternData(2 * MSS));
  s.expect([{ seq: seq(10) }, { seq: seq(11) }], "new data after the retransmission");
  // The retransmission is lost too. Segment 10, sent after it, is SACKed: by send time, 2 is
  // lost again. Duplicate ACK counting never says so (recovery is already under way).
  s.send(45, { flags: "A", seq: irs + 1, ack: seq(2), sack: [[seq(3), seq(11)]] });
  s.expect([{ seq: seq(2), len: MSS }], "the lost retransmission, found by RACK");
  assert.equal(s.tcp.stats.timeouts, 0);
  s.send(60, { flags: "A", seq: irs + 1, ack: seq(12) });
  s.expectNone();
});

Deno.test("PRR: recovery sends in proportion to what is delivered (RFC 6937)", () => {
  const s = new TcpScript();
  const { conn, iss, irs } = s.openActive({ ts: false });
  const seq = (k: number) => iss + 1 + k * MSS;
  const sent = () => s.out().map((x) => (x.seq - iss - 1) / MSS);
  conn.write(patternData(40 * MSS));
  s.out();
  s.send(20, { flags: "A", seq: irs + 1, ack: seq(10) });
  assert.equal(sent().length, 11, "slow start: 11 in flight");
  // Segment 10 is lost; the peer SACKs 11, 12, ... one per ACK.
  const sack = (t: number, k: number) =>
    s.send(t, { flags: "A", seq: irs + 1, ack: seq(10), sack: [[seq(11), seq(k + 1)]] });
  sack(31, 11);
  sack(32, 12);
  sent();
  sack(33, 13);
  assert.deepEqual(sent(), [10], "three duplicates: fast retransmit");
  assert.equal(conn.info.ssthresh, 6.5 * MSS);
  // The pipe (12 segments) is above ssthresh: one new segment per two delivered, ssthresh over
  // RecoverFS, so the pipe comes down to ssthresh smoothly, without a stall or a burst.
  const got: number[][] = [];
  for (let k = 14; k <= 21; k++) {
    sack(20 + k, k);
    got.push(sent());
  }
  assert.deepEqual(got, [[], [], [23], [], [], [24], [25], [26]]);
  assert.equal(conn.info.cwnd, conn.info.ssthresh, "at ssthresh: one segment per delivery");
});

/**
 * Many echo connections through one congested drop-tail queue: losses in bursts, a segment
 * size that shrinks when SACK blocks take header room (so lost segments go out again in
 * pieces), and SACKs that cover part of a segment sent again. Every connection must finish
 * byte-exact. Seeds 5 and 7 once left a segment marked lost behind the run that was
 * retransmitting it: the sender's count of lost bytes went wrong, and the connection stalled
 * until it timed out.
 */
Deno.test("RACK bookkeeping: 60 echo connections over a drop-tail queue all finish", async (t) => {
  const A = new Uint8Array([10, 0, 0, 1]), B = new Uint8Array([10, 0, 0, 2]);
  const SIZE = 128 * 1024;
  for (const seed of [5, 7, 11]) {
    await t.step(`seed ${seed}`, () => {
      const net = new SimNetwork({
        delay: 5,
        loss: 0.005 * (seed % 4),
        rate: 3000,
        queueLimit: 30 + (seed % 5) * 10,
        seed,
      });
      const a = new TcpLayer({ ip: net.host(A, 1400), random: seededRandom(seed * 7) });
      const b = new TcpLayer({ ip: net.host(B, 1400), random: seededRandom(seed * 13) });
      net.attach(A, a);
      net.attach(B, b);
      echoServer(b, 7);
      const data = seededRandom(seed)(SIZE);
      const clients = Array.from({ length: 60 }, () => echoClient(a, net, B, 7, data));
      const finished = net.run(() => clients.every((c) => c.closed), 600_000);
      const stuck = clients.filter((c) => !c.closed || c.error || !sameBytes(c.received(), data));
      assert.ok(finished, `${stuck.length} connections did not finish`);
      assert.equal(stuck.length, 0, `errors: ${stuck.map((c) => c.error).join(", ")}`);
      assert.ok(net.stats.queueDrops > 1000, "the queue dropped in bursts");
    });
  }
});

function sameBytes(x: Uint8Array, y: Uint8Array): boolean {
  return x.length === y.length && x.every((v, i) => v === y[i]);
}
