/**
 * The two AEAD backends side by side on transport-sized inputs: microseconds per seal and open
 * (one nonce, key and buffer reused, as the device does). No root needed.
 *
 *   deno run bench/aead.ts
 *
 * @module
 */
import { type AeadBackend, nobleAead, nodeAead } from "../core/wireguard/crypto.ts";

const N = 20000;
const key = crypto.getRandomValues(new Uint8Array(32));
const nonce = new Uint8Array(12);
const none = new Uint8Array(0);

function time(f: () => void): number {
  for (let i = 0; i < N / 10; i++) f();
  const t = performance.now();
  for (let i = 0; i < N; i++) f();
  return (performance.now() - t) * 1000 / N;
}

for (const size of [64, 1420]) {
  const row: Record<string, string> = { size: String(size) };
  for (const b of [nobleAead, nodeAead] as AeadBackend[]) {
    const plain = crypto.getRandomValues(new Uint8Array(size));
    const sealed = new Uint8Array(size + 16);
    b.seal(key, nonce, plain, none, sealed);
    const out = new Uint8Array(size);
    row[`${b.name} seal µs`] = time(() => b.seal(key, nonce, plain, none, sealed)).toFixed(2);
    row[`${b.name} open µs`] = time(() => b.open(key, nonce, sealed, none, out)).toFixed(2);
  }
  console.log(JSON.stringify(row));
}
