/**
 * ChaCha20-Poly1305 (RFC 8439) through the runtime's native `node:crypto`, the faster AEAD
 * backend of DESIGN decision 8. Same contract as noble's: 12-byte nonce, 16-byte tag appended,
 * and nothing is written to `out` when authentication fails. `crypto.ts` checks it against an
 * RFC 8439 vector before using it and falls back to noble when it is missing or differs;
 * `tests/wireguard_aead_test.ts` proves byte-identical output on vectors and random inputs.
 *
 * node:crypto itself is loaded at the first call (node_crypto.ts), not at import.
 *
 * One cipher object per call (node:crypto has no reusable one-shot AEAD); on a 1420-byte packet
 * that still costs about half of noble's pure-JavaScript ChaCha20 and Poly1305 (docs/performance.md).
 *
 * @module
 */
import { nodeCrypto } from "./node_crypto.ts";

const Algorithm = "chacha20-poly1305";
const TagSize = 16;
const options = { authTagLength: TagSize } as const;

/** Seals `plain` into `out` (plain.length + 16 bytes; `out` may share plain's memory). */
export function nodeSeal(
  key: Uint8Array,
  nonce: Uint8Array,
  plain: Uint8Array,
  aad: Uint8Array,
  out: Uint8Array,
): void {
  const c = nodeCrypto().createCipheriv(Algorithm, key, nonce, options);
  if (aad.length > 0) c.setAAD(aad, { plaintextLength: plain.length });
  const ct = c.update(plain);
  c.final();
  out.set(ct);
  out.set(c.getAuthTag(), plain.length);
}

/** Opens `sealed` into `out` (sealed.length - 16 bytes); false, and `out` untouched, if forged. */
export function nodeOpen(
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad: Uint8Array,
  out: Uint8Array,
): boolean {
  if (sealed.length < TagSize) return false;
  const n = sealed.length - TagSize;
  const d = nodeCrypto().createDecipheriv(Algorithm, key, nonce, options);
  d.setAuthTag(sealed.subarray(n));
  if (aad.length > 0) d.setAAD(aad, { plaintextLength: n });
  const pt = d.update(sealed.subarray(0, n));
  try {
    d.final();
  } catch {
    return false;
  }
  out.set(pt);
  return true;
}
