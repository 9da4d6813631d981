// The fault-injection relay (tests/_support/relay.ts): each impairment happens, at about the rate
// configured, to plain UDP on 127.0.0.1; and a Tunnel keeps working through 5% loss to
// wireguard-go in a namespace.
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { type Impairments, OrderedSender, Relay, type RelayOptions } from "./_support/relay.ts";
import { netnsTest, sleep, waitForPort, withTopology } from "./_support/netns.ts";
import { withPair } from "./_support/wg_pair.ts";
import { parseIP } from "../core/wire/addr.ts";

/**
 * seq (4 bytes) | pattern | seq again (4 bytes): one flipped byte leaves one copy of seq intact,
 * and the pattern depends on every bit of seq, so only the right copy matches it.
 */
function payload(seq: number, size = 64): Uint8Array {
  const d = new Uint8Array(size);
  const v = new DataView(d.buffer);
  v.setUint32(0, seq);
  const h = Math.imul(seq ^ (seq >>> 16), 0x9e3779b1) >>> 0;
  for (let i = 4; i < size - 4; i++) d[i] = ((h >>> ((i % 4) * 8)) + i * 7) & 0xff;
  v.setUint32(size - 4, seq);
  return d;
}

function diffCount(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Infinity;
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n;
}

/** The datagram's sequence number, and whether it arrived exactly as sent. */
function identify(d: Uint8Array): { seq: number; intact: boolean; diff: number } {
  const v = new DataView(d.buffer, d.byteOffset, d.byteLength);
  const head = v.getUint32(0), tail = v.getUint32(d.length - 4);
  const dh = diffCount(d, payload(head, d.length));
  const dt = diffCount(d, payload(tail, d.length));
  const seq = dh <= dt ? head : tail;
  const diff = Math.min(dh, dt);
  return { seq, intact: diff === 0, diff };
}

interface Arrival {
  seq: number;
  intact: boolean;
  diff: number;
  at: number;
}

interface Loop {
  relay: Relay;
  /** What reached the target (which echoes everything back). */
  atTarget: Arrival[];
  /** What came back to the client. */
  atClient: Arrival[];
  /** performance.now() at which each seq was sent. */
  sentAt: Map<number, number>;
  /** Sends `n` datagrams, `burst` at a time with `gapMs` between bursts. */
  send(n: number, opts?: { size?: number; burst?: number; gapMs?: number }): Promise<void>;
  /** Waits until nothing has arrived for `quietMs`. */
  settle(quietMs?: number): Promise<void>;
}

function bind(): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket("udp4");
    s.once("error", reject);
    s.bind(0, "127.0.0.1", () => {
      s.off("error", reject);
      resolve(s);
    });
  });
}

const WINDOW = 64;

const closeSocket = (s: dgram.Socket) => new Promise<void>((r) => s.close(() => r()));

async function withLoop(
  options: Omit<RelayOptions, "target">,
  fn: (l: Loop) => Promise<void>,
): Promise<void> {
  const target = await bind();
  const client = await bind();
  const relay = await Relay.open({
    ...options,
    target: { host: "127.0.0.1", port: target.address().port },
  });
  const atTarget: Arrival[] = [], atClient: Arrival[] = [];
  let last = performance.now();
  const record = (into: Arrival[], msg: Uint8Array) => {
    last = performance.now();
    into.push({ ...identify(new Uint8Array(msg)), at: last });
  };
  // Ordered senders: node:dgram in Deno may reorder back-to-back sends (see OrderedSender).
  const echo = new OrderedSender(target), out = new OrderedSender(client);
  target.on("message", (msg: Uint8Array, rinfo: dgram.RemoteInfo) => {
    record(atTarget, msg);
    echo.send(msg, rinfo.port, rinfo.address);
  });
  client.on("message", (msg: Uint8Array) => record(atClient, msg));
  const sentAt = new Map<number, number>();
  let next = 0;
  const loop: Loop = {
    relay,
    atTarget,
    atClient,
    sentAt,
    async send(n, opts = {}) {
      const burst = opts.burst ?? 25;
      for (let i = 0; i < n; i++) {
        // At most WINDOW datagrams between the client and the relay: the relay shares this
        // process's event loop, and a stall must not overflow its socket buffer. Only the
        // relay may lose datagrams in these tests.
        while (next - relay.stats.toTarget.received >= WINDOW) await sleep(1);
        const seq = next++;
        sentAt.set(seq, performance.now());
        out.send(payload(seq, opts.size), relay.port, "127.0.0.1");
        if ((i + 1) % burst === 0) await sleep(opts.gapMs ?? 1);
      }
    },
    async settle(quietMs = 150) {
      last = performance.now();
      while (performance.now() - last < quietMs) await sleep(20);
    },
  };
  try {
    await fn(loop);
  } finally {
    echo.close();
    out.close();
    await relay.close();
    await closeSocket(client);
    await closeSocket(target);
  }
}

const seqs = (a: Arrival[]) => a.map((x) => x.seq);

/** Lengths of runs of consecutive sequence numbers missing from `got` among 0..n-1. */
function lossRuns(got: Arrival[], n: number): number[] {
  const seen = new Set(seqs(got));
  const runs: number[] = [];
  let run = 0;
  for (let i = 0; i < n; i++) {
    if (seen.has(i)) {
      if (run > 0) runs.push(run);
      run = 0;
    } else run++;
  }
  if (run > 0) runs.push(run);
  return runs;
}

function between(v: number, lo: number, hi: number, what: string): void {
  assert.ok(v >= lo && v <= hi, `${what}: ${v} not in [${lo}, ${hi}]`);
}

Deno.test("relay: without impairments every datagram passes, intact and in order, both ways", async () => {
  await withLoop({}, async (l) => {
    await l.send(2000);
    await l.settle();
    const all = Array.from({ length: 2000 }, (_, i) => i);
    assert.deepEqual(seqs(l.atTarget), all);
    assert.deepEqual(seqs(l.atClient), all);
    assert.ok(l.atTarget.every((a) => a.intact) && l.atClient.every((a) => a.intact));
    for (const d of [l.relay.stats.toTarget, l.relay.stats.toClient]) {
      assert.equal(d.received, 2000);
      assert.equal(d.forwarded, 2000);
      assert.equal(d.bytesForwarded, 2000 * 64);
      assert.equal(d.lost + d.burstLost + d.duplicated + d.corrupted + d.reordered, 0);
    }
    assert.equal(l.relay.client?.host, "127.0.0.1");
  });
});

Deno.test("relay: independent loss, each direction on its own", async (t) => {
  const N = 4000;
  await t.step("10% toward the target", async () => {
    await withLoop({ toTarget: { loss: 0.1 }, seed: 11 }, async (l) => {
      await l.send(N);
      await l.settle();
      const s = l.relay.stats.toTarget;
      assert.equal(s.received, N);
      between(s.lost, 0.08 * N, 0.12 * N, "lost");
      assert.equal(l.atTarget.length, N - s.lost);
      assert.equal(s.forwarded, N - s.lost);
      // Independent loss rarely loses two in a row.
      const runs = lossRuns(l.atTarget, N);
      assert.ok(runs.reduce((a, b) => a + b, 0) / runs.length < 1.3);
      // What arrived came back unharmed.
      assert.equal(l.atClient.length, l.atTarget.length);
      assert.equal(l.relay.stats.toClient.lost, 0);
    });
  });
  await t.step("10% toward the client", async () => {
    await withLoop({ toClient: { loss: 0.1 }, seed: 12 }, async (l) => {
      await l.send(N);
      await l.settle();
      assert.equal(l.atTarget.length, N);
      const s = l.relay.stats.toClient;
      between(s.lost, 0.08 * N, 0.12 * N, "lost");
      assert.equal(l.atClient.length, N - s.lost);
    });
  });
  await t.step("the same seed drops the same datagrams; another seed others", async () => {
    const missing = async (seed: number) => {
      let out: number[] = [];
      await withLoop({ toTarget: { loss: 0.1 }, seed }, async (l) => {
        await l.send(1000);
        await l.settle();
        const seen = new Set(seqs(l.atTarget));
        out = Array.from({ length: 1000 }, (_, i) => i).filter((i) => !seen.has(i));
      });
      return out;
    };
    const a = await missing(7), b = await missing(7), c = await missing(8);
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
  });
});

Deno.test("relay: Gilbert–Elliott loss comes in bursts at the stationary rate", async () => {
  const N = 10_000;
  // Bad is entered with p = 1%, left with r = 20%: stationary loss p/(p+r) ≈ 4.8%, bursts of
  // mean length 1/r = 5.
  await withLoop({ toTarget: { burst: { p: 0.01, r: 0.2 } }, seed: 21 }, async (l) => {
    await l.send(N);
    await l.settle();
    const s = l.relay.stats.toTarget;
    assert.equal(s.received, N);
    between(s.burstLost, 0.025 * N, 0.075 * N, "burst-lost");
    assert.equal(l.atTarget.length, N - s.burstLost);
    const runs = lossRuns(l.atTarget, N);
    const mean = runs.reduce((a, b) => a + b, 0) / runs.length;
    between(mean, 3, 8, "mean burst length");
    assert.ok(s.badStates >= runs.length - 1, `${s.badStates} bad states, ${runs.length} runs`);
  });
});

Deno.test("relay: duplication", async () => {
  const N = 4000;
  await withLoop({ toTarget: { duplicate: 0.05 }, seed: 31 }, async (l) => {
    await l.send(N);
    await l.settle();
    const s = l.relay.stats.toTarget;
    between(s.duplicated, 0.035 * N, 0.065 * N, "duplicated");
    const count = new Map<number, number>();
    for (const a of l.atTarget) count.set(a.seq, (count.get(a.seq) ?? 0) + 1);
    assert.equal(count.size, N);
    assert.equal([...count.values()].filter((c) => c === 2).length, s.duplicated);
    assert.ok([...count.values()].every((c) => c <= 2));
    assert.equal(s.forwarded, N + s.duplicated);
  });
});

Deno.test("relay: corruption flips exactly one byte", async () => {
  const N = 4000;
  await withLoop({ toTarget: { corrupt: 0.05 }, seed: 41 }, async (l) => {
    await l.send(N);
    await l.settle();
    const s = l.relay.stats.toTarget;
    between(s.corrupted, 0.035 * N, 0.065 * N, "corrupted");
    const bad = l.atTarget.filter((a) => !a.intact);
    assert.equal(l.atTarget.length, N);
    assert.equal(bad.length, s.corrupted);
    assert.ok(bad.every((a) => a.diff === 1), "a corrupted datagram differs in one byte");
    assert.equal(new Set(seqs(l.atTarget)).size, N);
  });
});

Deno.test("relay: reordering holds a share back so later datagrams overtake it", async () => {
  const N = 2000;
  await withLoop({ toTarget: { reorder: 0.1, reorderDelayMs: 20 }, seed: 51 }, async (l) => {
    await l.send(N);
    await l.settle();
    const s = l.relay.stats.toTarget;
    between(s.reordered, 0.07 * N, 0.13 * N, "held back");
    assert.equal(l.atTarget.length, N);
    let max = -1, late = 0;
    for (const a of l.atTarget) {
      if (a.seq < max) late++;
      max = Math.max(max, a.seq);
    }
    // Every held datagram is overtaken, except perhaps one of the very last few.
    between(late, s.reordered - 3, s.reordered, "arrived after a later one");
    assert.deepEqual([...seqs(l.atTarget)].sort((a, b) => a - b), [...Array(N).keys()]);
  });
});

Deno.test("relay: delay and jitter", async (t) => {
  const latencies = async (imp: Impairments) => {
    const out: number[] = [];
    await withLoop({ toTarget: imp, seed: 61 }, async (l) => {
      await l.send(200, { burst: 1, gapMs: 2 });
      await l.settle(200);
      assert.equal(l.atTarget.length, 200);
      for (const a of l.atTarget) out.push(a.at - l.sentAt.get(a.seq)!);
    });
    return out;
  };
  const stats = (v: number[]) => ({
    min: Math.min(...v),
    max: Math.max(...v),
    mean: v.reduce((a, b) => a + b, 0) / v.length,
  });
  await t.step("a fixed 40 ms", async () => {
    const s = stats(await latencies({ delayMs: 40 }));
    // Timers fire late, never early: the lower bound is firm.
    assert.ok(s.min >= 39, `min ${s.min}`);
    assert.ok(s.mean < 80, `mean ${s.mean}`);
  });
  await t.step("30 ms ± 10 ms", async () => {
    const s = stats(await latencies({ delayMs: 30, jitterMs: 10 }));
    assert.ok(s.min >= 19, `min ${s.min}`);
    between(s.mean, 25, 60, "mean");
    assert.ok(s.max - s.min >= 10, `spread ${s.max - s.min}: no jitter`);
  });
});

Deno.test("relay: rate limit", async (t) => {
  await t.step("datagrams queue behind each other at the rate", async () => {
    // 100 × 1000 bytes at 200 000 B/s: 0.5 s on the wire.
    await withLoop({ toTarget: { rateBytesPerSec: 200_000 } }, async (l) => {
      await l.send(100, { size: 1000 });
      await l.settle(200);
      assert.equal(l.atTarget.length, 100);
      const span = l.atTarget.at(-1)!.at - l.atTarget[0]!.at;
      assert.ok(span >= 450, `100 kB passed in ${span} ms`);
      assert.deepEqual(seqs(l.atTarget), [...Array(100).keys()]);
    });
  });
  await t.step("a full queue drops", async () => {
    await withLoop({ toTarget: { rateBytesPerSec: 100_000, queueLimit: 10 } }, async (l) => {
      // 100 kB handed over in about 4 ms; the link drains 1000 bytes per 10 ms.
      await l.send(100, { size: 1000 });
      await l.settle(200);
      const s = l.relay.stats.toTarget;
      assert.equal(s.received, 100);
      assert.ok(s.rateDropped >= 80, `dropped ${s.rateDropped}`);
      assert.equal(l.atTarget.length, 100 - s.rateDropped);
    });
  });
  await t.step("bad settings are refused", async () => {
    await assert.rejects(Relay.open({ toTarget: { loss: 1.5 } }), RangeError);
    await assert.rejects(Relay.open({ toClient: { delayMs: -1 } }), RangeError);
  });
});

const echoScript = new URL("./_support/udp_echo.py", import.meta.url).pathname;

netnsTest(
  "relay end to end: 200 UDP echoes through our Tunnel, 5% loss each way, wireguard-go",
  async () => {
    await withTopology({}, async (topo) => {
      const relay = await Relay.open({
        listen: { host: topo.hostAddr },
        toTarget: { loss: 0.05 },
        toClient: { loss: 0.05 },
        seed: 77,
      });
      try {
        await withPair(topo, {
          // wireguard-go learns our endpoint from our packets: the relay's outbound socket.
          theyKnowOurEndpoint: false,
          endpointFor: (wgEndpoint) => {
            const colon = wgEndpoint.lastIndexOf(":");
            relay.target = {
              host: wgEndpoint.slice(0, colon),
              port: Number(wgEndpoint.slice(colon + 1)),
            };
            return relay.endpoint;
          },
        }, async ({ tunnel, wg, ourPublic }) => {
          topo.spawn(topo.peer, ["python3", echoScript, "server", "10.77.0.1", "7000"]);
          await waitForPort(topo.peer, 7000, "udp");
          const sock = tunnel.stack.udp.bind({});
          const dst = parseIP("10.77.0.1")!;
          let waiting: { seq: number; resolve: () => void } | undefined;
          sock.onDatagram = (data) => {
            const { seq, intact } = identify(data);
            if (intact && waiting?.seq === seq) waiting.resolve();
          };
          let retries = 0;
          try {
            for (let seq = 0; seq < 200; seq++) {
              let ok = false;
              // The first echo also waits out handshake retries (5 s each, RFC whitepaper 6.4).
              const tries = seq === 0 ? 40 : 15;
              for (let attempt = 0; attempt < tries && !ok; attempt++) {
                if (attempt > 0) retries++;
                const got = new Promise<true>((resolve) =>
                  waiting = { seq, resolve: () => resolve(true) }
                );
                sock.send(dst, 7000, payload(seq, 100));
                tunnel.poke();
                let timer: ReturnType<typeof setTimeout> | undefined;
                ok = await Promise.race([
                  got,
                  new Promise<false>((r) => timer = setTimeout(() => r(false), 400)),
                ]);
                clearTimeout(timer);
              }
              assert.ok(ok, `echo ${seq} never came back`);
            }
          } finally {
            sock.close();
          }
          const s = relay.stats;
          const drops = s.toTarget.lost + s.toClient.lost;
          assert.ok(drops > 0, "the relay dropped nothing");
          assert.ok(retries > 0, "no echo needed a retry");
          assert.ok(s.toTarget.forwarded >= 200 && s.toClient.forwarded >= 200);
          // Everything wireguard-go got came through the relay.
          assert.equal(
            (await wg.peer(ourPublic)).endpoint,
            `${topo.hostAddr}:${relay.outboundPort}`,
          );
          assert.equal(relay.strangers, 0);
          console.log(
            `relay: ${drops} dropped of ${s.toTarget.received + s.toClient.received}; ` +
              `${retries} retries for 200 echoes`,
          );
        });
      } finally {
        await relay.close();
      }
    });
  },
  { requires: ["python3"], timeoutMs: 120_000 },
);
