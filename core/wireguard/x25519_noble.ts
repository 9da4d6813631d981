/**
 * noble's X25519, the reference implementation (DESIGN decision 8) and the last fallback of
 * x25519.ts. Its own module because `@noble/curves/ed25519.js` builds every ed25519 object when it
 * is imported (about 7 ms): only the tests, which hold every backend to it, and a process without
 * the helper's X25519 ({@link loadX25519Fallback} in x25519.ts) load it.
 *
 * @module
 */
import { x25519 } from "@noble/curves/ed25519.js";
import type { X25519Backend } from "./x25519.ts";

/** The reference implementation. */
export const nobleX25519: X25519Backend = {
  name: "noble",
  publicKey: (privateKey) => x25519.getPublicKey(privateKey),
  shared: (privateKey, publicKey) => x25519.getSharedSecret(privateKey, publicKey),
};
