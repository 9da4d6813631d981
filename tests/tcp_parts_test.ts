/** The TCP layer's building blocks, each on its own. */
import assert from "node:assert/strict";
import { ByteRing } from "../core/netstack/tcp/ring.ts";
import { RangeSet } from "../core/netstack/tcp/range_set.ts";
import { ReceiveBuffer } from "../core/netstack/tcp/recv_buffer.ts";
import { RttEstimator } from "../core/netstack/tcp/rtt.ts";
import { NewReno } from "../core/netstack/tcp/congestion.ts";
import { TimerHeap } from "../core/netstack/tcp/timer_heap.ts";
import { IsnGenerator, sipHash24 } from "../core/netstack/tcp/isn.ts";
import { seqAdd, seqDiff, seqGt, seqLe, seqLt } from "../core/netstack/tcp/seq.ts";

function bytes(from: number, n: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (from + i) & 0xff);
}

Deno.test("seq arithmetic wraps at 2^32", () => {
  assert.equal(seqAdd(0xffff_fff0, 0x20), 0x10);
  assert.equal(seqDiff(0x10, 0xffff_fff0), 0x20);
  assert.ok(seqLt(0xffff_fff0, 0x10));
  assert.ok(seqGt(0x10, 0xffff_fff0));
  assert.ok(seqLe(5, 5));
  assert.equal(seqAdd(5, -6), 0xffff_ffff);
});

Deno.test("ByteRing", async (t) => {
  await t.step("allocates lazily and grows by doubling up to capacity", () => {
    const r = new ByteRing(10_000);
    assert.equal(r.allocated, 0);
    assert.equal(r.push(bytes(0, 100)), 100);
    assert.equal(r.allocated, 512, "a small exchange costs a small buffer");
    assert.equal(r.push(bytes(100, 5000)), 5000);
    assert.equal(r.allocated, 8192);
    assert.equal(r.push(bytes(5100, 9000)), 4900, "only what fits");
    assert.equal(r.allocated, 10_000);
    assert.equal(r.free, 0);
    const all = new Uint8Array(10_000);
    assert.equal(r.read(all), 10_000);
    assert.deepEqual(all, bytes(0, 10_000));
  });

  await t.step("wraps around and keeps order across growth", () => {
    const r = new ByteRing(1 << 16);
    r.push(bytes(0, 3000));
    r.consume(2500);
    r.push(bytes(3000, 3000)); // wraps in the 4096-byte allocation
    assert.equal(r.allocated, 4096);
    r.push(bytes(6000, 2000)); // grows while wrapped
    assert.equal(r.allocated, 8192);
    const out = new Uint8Array(5500);
    r.copyOut(0, out, 0, 5500);
    assert.deepEqual(out, bytes(2500, 5500));
    const mid = new Uint8Array(10);
    r.copyOut(1000, mid, 0, 10);
    assert.deepEqual(mid, bytes(3500, 10));
  });

  await t.step("writeAt ahead of the readable end, then commit", () => {
    const r = new ByteRing(100);
    r.writeAt(10, bytes(10, 5));
    assert.equal(r.length, 0);
    r.writeAt(0, bytes(0, 10));
    r.commit(15);
    const out = new Uint8Array(15);
    r.read(out);
    assert.deepEqual(out, bytes(0, 15));
    assert.throws(() => r.writeAt(99, bytes(0, 2)), RangeError);
  });
});

Deno.test("RangeSet", async (t) => {
  await t.step("merges overlapping and touching ranges, counts bytes", () => {
    const s = new RangeSet(8);
    s.add(10, 20);
    s.add(30, 40);
    s.add(20, 25); // touches the first
    assert.equal(s.count, 2);
    assert.equal(s.total, 25);
    s.add(15, 35); // bridges both
    assert.equal(s.count, 1);
    assert.deepEqual([s.start(0), s.end(0)], [10, 40]);
    assert.equal(s.total, 30);
  });

  await t.step("refuses a new range when full, still merges", () => {
    const s = new RangeSet(2);
    assert.ok(s.add(0, 1));
    assert.ok(s.add(5, 6));
    assert.equal(s.add(10, 11), false);
    assert.equal(s.count, 2);
    assert.ok(s.add(6, 8), "extending an existing range needs no slot");
    assert.equal(s.total, 4);
  });

  await t.step("removeBelow cuts a straddling range; queries", () => {
    const s = new RangeSet(8);
    s.add(10, 20);
    s.add(30, 40);
    s.removeBelow(15);
    assert.deepEqual([s.start(0), s.end(0), s.total], [15, 20, 15]);
    assert.equal(s.nextUncovered(15), 20);
    assert.equal(s.nextUncovered(12), 12);
    assert.equal(s.nextStartAfter(20), 30);
    assert.equal(s.indexOf(35), 1);
    assert.equal(s.indexOf(25), -1);
    assert.equal(s.coveredIn(18, 35), 2 + 5);
    assert.equal(s.takeFrontThrough(15), 20);
    assert.equal(s.count, 1);
  });
});

Deno.test("ReceiveBuffer", async (t) => {
  await t.step("in-order data becomes readable; out-of-order waits for the hole", () => {
    const b = new ReceiveBuffer(1000, 4);
    assert.equal(b.insert(0, bytes(0, 100)), 100);
    assert.equal(b.insert(200, bytes(200, 100)), 0);
    assert.equal(b.insert(400, bytes(400, 50)), 0);
    assert.equal(b.ranges.count, 2);
    assert.equal(b.readable, 100);
    assert.equal(b.insert(100, bytes(100, 100)), 200, "fills the hole up to the next range's end");
    assert.equal(b.end, 300);
    assert.equal(b.insert(250, bytes(250, 200)), 150, "overlapping data and the next range join");
    assert.equal(b.end, 450);
    const out = new Uint8Array(450);
    assert.equal(b.read(out), 450);
    assert.deepEqual(out, bytes(0, 450));
  });

  await t.step("cuts data beyond the capacity and before the end", () => {
    const b = new ReceiveBuffer(100, 4);
    assert.equal(b.insert(0, bytes(0, 150)), 100);
    assert.equal(b.free, 0);
    assert.equal(b.insert(50, bytes(50, 80)), 0, "all old or beyond the limit");
    b.read(new Uint8Array(30));
    assert.equal(b.limit, 130);
    assert.equal(b.insert(90, bytes(90, 60)), 30);
    const out = new Uint8Array(100);
    b.read(out);
    assert.deepEqual(out, bytes(30, 100));
  });

  await t.step("a full range table refuses new out-of-order data", () => {
    const b = new ReceiveBuffer(1000, 2);
    b.insert(10, bytes(10, 1));
    b.insert(20, bytes(20, 1));
    assert.equal(b.insert(30, bytes(30, 1)), -1);
    assert.equal(b.ranges.count, 2);
  });
});

Deno.test("RttEstimator follows RFC 6298", () => {
  const r = new RttEstimator(200, 60_000);
  assert.equal(r.rto, 1000, "2.1: 1 s before any sample");
  r.sample(100);
  // 2.2: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 RTTVAR.
  assert.equal(r.srtt, 100);
  assert.equal(r.rttvar, 50);
  assert.equal(r.rto, 300);
  r.sample(200);
  // 2.3: RTTVAR = 3/4·50 + 1/4·|100−200| = 62.5; SRTT = 7/8·100 + 1/8·200 = 112.5.
  assert.equal(r.rttvar, 62.5);
  assert.equal(r.srtt, 112.5);
  assert.equal(r.rto, 362.5);
  r.backoff();
  r.backoff();
  assert.equal(r.rto, 1450, "5.5: doubled per expiry");
  for (let i = 0; i < 20; i++) r.backoff();
  assert.equal(r.rto, 60_000, "capped");
  r.sample(50);
  assert.ok(r.rto < 1450 && r.backoffCount === 0, "a sample clears the backoff");
  const fast = new RttEstimator(200, 60_000);
  fast.sample(1);
  assert.equal(fast.rto, 200, "2.4: the floor (ours is 200 ms)");
});

Deno.test("NewReno", async (t) => {
  await t.step("initial window (RFC 6928), slow start, congestion avoidance", () => {
    const cc = new NewReno(1000, 1 << 30);
    assert.equal(cc.cwnd, 10_000);
    assert.equal(new NewReno(1460, 1 << 30).cwnd, 14_600);
    assert.equal(new NewReno(536, 1 << 30).cwnd, 5360);
    cc.onAck(3000, 1000);
    assert.equal(cc.cwnd, 11_000, "slow start: at most one MSS per ACK (RFC 3465 L=1)");
    cc.ssthresh = 11_000;
    for (let i = 0; i < 10; i++) cc.onAck(1000, 1000);
    assert.equal(cc.cwnd, 11_000, "not yet a window's worth");
    cc.onAck(1000, 1000);
    assert.equal(cc.cwnd, 12_000, "one MSS per window");
  });

  await t.step("recovery without SACK inflates and deflates (RFC 6582)", () => {
    const cc = new NewReno(1000, 1 << 30);
    cc.enterRecovery(20_000, 1000, false);
    assert.equal(cc.ssthresh, 10_000);
    assert.equal(cc.cwnd, 13_000);
    cc.onDupAckInRecovery(1000, false);
    assert.equal(cc.cwnd, 14_000);
    cc.onPartialAck(3000, 1000, false);
    assert.equal(cc.cwnd, 12_000);
    cc.exitRecovery(4000, 1000);
    assert.equal(cc.cwnd, 5000, "min(ssthresh, flight + MSS)");
  });

  await t.step("recovery with SACK does not inflate (RFC 6675)", () => {
    const cc = new NewReno(1000, 1 << 30);
    cc.enterRecovery(20_000, 1000, true);
    assert.equal(cc.cwnd, 10_000);
    cc.onDupAckInRecovery(1000, true);
    assert.equal(cc.cwnd, 10_000);
  });

  await t.step("timeout: ssthresh halves once, cwnd = 1 MSS", () => {
    const cc = new NewReno(1000, 1 << 30);
    cc.onTimeout(30_000, 1000, true);
    assert.deepEqual([cc.ssthresh, cc.cwnd], [15_000, 1000]);
    cc.onTimeout(1000, 1000, false);
    assert.deepEqual([cc.ssthresh, cc.cwnd], [15_000, 1000]);
  });
});

Deno.test("TimerHeap keeps the earliest deadline on top as deadlines move", () => {
  const heap = new TimerHeap<{ deadline: number; heapIndex: number; name: string }>();
  const items = Array.from(
    { length: 50 },
    (_, i) => ({ deadline: Infinity, heapIndex: -1, name: `t${i}` }),
  );
  items.forEach((it, i) => heap.set(it, ((i * 37) % 50) + 100));
  assert.equal(heap.size, 50);
  assert.equal(heap.peekDeadline(), 100);
  heap.set(items[10]!, 5);
  assert.equal(heap.peekDeadline(), 5);
  heap.set(items[10]!, 1000);
  assert.equal(heap.peekDeadline(), 100);
  heap.set(items[3]!, Infinity);
  assert.equal(heap.size, 49);
  const order: number[] = [];
  for (let it = heap.popDue(10_000); it; it = heap.popDue(10_000)) order.push(it.deadline);
  assert.equal(order.length, 49);
  assert.deepEqual(order, [...order].sort((a, b) => a - b));
  assert.equal(heap.popDue(10_000), undefined);
});

Deno.test("ISN (RFC 6528)", async (t) => {
  await t.step("SipHash-2-4 matches the paper's test vector", () => {
    const key = Uint8Array.from({ length: 16 }, (_, i) => i);
    const msg = Uint8Array.from({ length: 15 }, (_, i) => i);
    assert.equal(sipHash24(key, msg), 0xa129ca6149be45e5n);
  });

  await t.step("moves with the 4 µs clock and differs per 4-tuple and per key", () => {
    const g = new IsnGenerator(new Uint8Array(16).fill(7));
    const a = new Uint8Array([10, 0, 0, 1]), b = new Uint8Array([10, 0, 0, 2]);
    const i0 = g.next(0, a, 1000, b, 80);
    assert.equal(g.next(1, a, 1000, b, 80), (i0 + 250) >>> 0, "one ms is 250 ticks");
    assert.notEqual(g.next(0, a, 1001, b, 80), i0);
    assert.notEqual(g.next(0, b, 1000, a, 80), i0);
    assert.notEqual(new IsnGenerator(new Uint8Array(16).fill(8)).next(0, a, 1000, b, 80), i0);
  });
});
