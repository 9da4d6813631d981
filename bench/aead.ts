/**
 * The AEAD backends side by side on transport-sized inputs: microseconds per seal and open (one
 * nonce, key and buffer reused, as the device does). The helper's native AEAD is timed with each
 * library it could open (OpenSSL libcrypto, libsodium). No root needed.
 *
 *   deno run -A bench/aead.ts
 *
 * @module
 */
import { type AeadBackend, nobleAead, nodeAead } from "../core/wireguard/crypto.ts";
import { nativeAead, NativeAeadLibraries } from "../core/wireguard/aead_native.ts";
import { udpHelper } from "../core/host/tunnel/udp_native.ts";

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

const { lib, reason } = await udpHelper();
if (!lib) console.error(`native AEAD not timed: ${reason}`);
const backends: [string, AeadBackend, number?][] = [["noble", nobleAead], ["node", nodeAead]];
if (lib) {
  const active = lib.wgc_available();
  for (const which of [1, 2]) {
    if (lib.wgc_use(which) === which) {
      backends.push([NativeAeadLibraries[which]!.split(" ").pop()!, nativeAead(lib), which]);
    }
  }
  lib.wgc_use(active);
}

for (const size of [64, 1420]) {
  const row: Record<string, string> = { size: String(size) };
  for (const [name, b, which] of backends) {
    if (which !== undefined) lib!.wgc_use(which);
    const plain = crypto.getRandomValues(new Uint8Array(size));
    const sealed = new Uint8Array(size + 16);
    b.seal(key, nonce, plain, none, sealed);
    const out = new Uint8Array(size);
    row[`${name} seal µs`] = time(() => b.seal(key, nonce, plain, none, sealed)).toFixed(2);
    row[`${name} open µs`] = time(() => b.open(key, nonce, sealed, none, out)).toFixed(2);
  }
  console.log(JSON.stringify(row));
}
