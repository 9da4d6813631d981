/**
 * The stream relay (core/host/forward/relay.ts) used by forward, proxy and the broker: bytes and
 * half-closes both ways, and the read buffer that starts small (an idle connection's pending read
 * holds it) and grows only while reads fill it.
 */
import assert from "node:assert/strict";
import { type Duplex, relay } from "../core/host/forward/relay.ts";

/** A scripted side: reads come from `incoming` in order; what it is given to write is kept. */
class Scripted implements Duplex {
  readonly readSizes: number[] = [];
  readonly written: Uint8Array[] = [];
  writeClosed = false;
  readonly #incoming: Uint8Array[];
  constructor(incoming: Uint8Array[]) {
    this.#incoming = incoming;
  }
  read(p: Uint8Array): Promise<number | null> {
    this.readSizes.push(p.length);
    const next = this.#incoming.shift();
    if (!next) return Promise.resolve(null);
    // A stream read takes what fits; the rest waits for the next read.
    const n = Math.min(p.length, next.length);
    p.set(next.subarray(0, n));
    if (n < next.length) this.#incoming.unshift(next.subarray(n));
    return Promise.resolve(n);
  }
  write(p: Uint8Array): Promise<number> {
    this.written.push(p.slice());
    return Promise.resolve(p.length);
  }
  closeWrite(): Promise<void> {
    this.writeClosed = true;
    return Promise.resolve();
  }
  close(): void {}
}

function joined(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) out.set(p, (off += p.length) - p.length);
  return out;
}

Deno.test("relay: the read buffer starts at 256 bytes and grows ×4 to 64 KiB only while reads fill it", async () => {
  const bulk = Uint8Array.from({ length: 300_000 }, (_, i) => (i * 2654435761) >>> 24);
  const a = new Scripted([new Uint8Array([1, 2, 3]), bulk]);
  const b = new Scripted([]);
  const r = await relay(a, b);
  assert.equal(r.aToB, 300_003);
  assert.equal(r.error, undefined);
  assert.deepEqual(joined(b.written), joined([new Uint8Array([1, 2, 3]), bulk]), "bytes intact");
  assert.ok(b.writeClosed && a.writeClosed, "both half-closes carried");
  // 3 bytes do not fill 256: no growth; then full reads grow it to 1, 4, 16, 64 KiB and no more.
  assert.deepEqual(a.readSizes.slice(0, 6), [256, 256, 1024, 4096, 16384, 65536]);
  assert.ok(a.readSizes.every((n) => n <= 65536));
  assert.deepEqual(b.readSizes, [256], "the idle direction kept its first, small buffer");
});

/** A side that hands over its chunks (as TunnelConn and NodeSocketDuplex do) and takes owned ones. */
class Chunked extends Scripted {
  readonly owned: Uint8Array[] = [];
  readonly #chunks: Uint8Array[];
  #waiting?: () => void;
  constructor(chunks: Uint8Array[], readonly holdOpen = false) {
    super([]);
    this.#chunks = chunks;
  }
  async readChunk(): Promise<Uint8Array | null> {
    const next = this.#chunks.shift();
    if (next) return next;
    // Idle until released: what a quiet connection's relay waits in.
    if (this.holdOpen) await new Promise<void>((r) => this.#waiting = r);
    return null;
  }
  release(): void {
    this.#waiting?.();
  }
  writeOwned(p: Uint8Array): Promise<void> {
    this.owned.push(p);
    return Promise.resolve();
  }
}

Deno.test("relay: a side with readChunk is never read into a buffer, and its chunks are passed on as they are", async () => {
  const one = new Uint8Array([1, 2, 3]), two = new Uint8Array(70_000).fill(7);
  const a = new Chunked([one, two]);
  const b = new Chunked([new Uint8Array([9])], true);
  const done = relay(a, b);
  await new Promise((r) => setTimeout(r, 10));
  // a has ended; b is idle in readChunk: neither side has been handed a read buffer.
  assert.deepEqual(a.readSizes, [], "no read buffer toward b");
  assert.deepEqual(b.readSizes, [], "no read buffer held by the idle direction");
  b.release();
  const r = await done;
  assert.equal(r.aToB, 70_003);
  assert.equal(r.bToA, 1);
  assert.equal(b.owned[0], one, "the same array, not a copy");
  assert.equal(b.owned[1], two);
  assert.deepEqual(a.owned, [new Uint8Array([9])]);
  assert.ok(a.writeClosed && b.writeClosed);
});
