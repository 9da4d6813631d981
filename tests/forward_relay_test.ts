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

Deno.test("relay: the read buffer starts at 1 KiB and grows ×4 to 64 KiB only while reads fill it", async () => {
  const bulk = Uint8Array.from({ length: 300_000 }, (_, i) => (i * 2654435761) >>> 24);
  const a = new Scripted([new Uint8Array([1, 2, 3]), bulk]);
  const b = new Scripted([]);
  const r = await relay(a, b);
  assert.equal(r.aToB, 300_003);
  assert.equal(r.error, undefined);
  assert.deepEqual(joined(b.written), joined([new Uint8Array([1, 2, 3]), bulk]), "bytes intact");
  assert.ok(b.writeClosed && a.writeClosed, "both half-closes carried");
  // 3 bytes do not fill 1 KiB: no growth; then full reads grow it 1 → 4 → 16 → 64 KiB and no more.
  assert.deepEqual(a.readSizes.slice(0, 5), [1024, 1024, 4096, 16384, 65536]);
  assert.ok(a.readSizes.every((n) => n <= 65536));
  assert.deepEqual(b.readSizes, [1024], "the idle direction kept its first, small buffer");
});
