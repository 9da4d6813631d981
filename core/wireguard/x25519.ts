/**
 * X25519 (RFC 7748), fastest first: the helper library's (x25519_native.ts, from libsodium or
 * libcrypto, offered by the host once it has loaded the helper), the runtime's `node:crypto`, and
 * noble (the reference of DESIGN decision 8). A backend is used only when it reproduces RFC 7748's
 * own vectors ({@link agreesWithRfc7748}).
 *
 * Why not noble alone: its first public-key derivation builds a precomputed table of the base
 * point, about 16 ms, and each shared secret costs 1.7-3 ms of JavaScript; config loading and the
 * first handshake pay both before a wrapped program's first byte. node:crypto costs about 0.6 ms
 * for the first derivation and 0.07 ms per shared secret, but loading it is 15-25 ms of start-up
 * (node_crypto.ts), which is why the helper's comes first and node:crypto is loaded only when a
 * choice is made without it. noble itself (x25519_noble.ts) is not imported here either: its module
 * builds every ed25519 object at import, about 7 ms of a run's start. Whoever loads the helper
 * loads noble too when the helper's X25519 is not installed ({@link loadX25519Fallback}), so it is
 * there before a choice can need it. The load check uses fixed vectors, not noble, because running
 * noble once would pay the very table this module avoids; `tests/wireguard_x25519_test.ts` proves
 * the backends byte-identical on random keys.
 *
 * @module
 */
import { nodeBuffer, nodeCrypto } from "./node_crypto.ts";
import type { KeyObject } from "node:crypto";

/** An X25519 implementation; `shared` throws for a low-order public key, as both libraries do. */
export interface X25519Backend {
  readonly name: "native" | "node" | "noble";
  publicKey(privateKey: Uint8Array): Uint8Array;
  shared(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array;
}

const hex = (s: string) => Uint8Array.fromHex(s);

// The fixed DER framing of a raw X25519 key (RFC 8410): PKCS #8 for private, SPKI for public.
const Pkcs8Prefix = hex("302e020100300506032b656e04220420");
const SpkiPrefix = hex("302a300506032b656e032100");

function privateKeyObject(raw: Uint8Array): KeyObject {
  const der = nodeBuffer().Buffer.alloc(Pkcs8Prefix.length + 32);
  der.set(Pkcs8Prefix);
  der.set(raw, Pkcs8Prefix.length);
  const key = nodeCrypto().createPrivateKey({ key: der, format: "der", type: "pkcs8" });
  der.fill(0);
  return key;
}

function publicKeyObject(raw: Uint8Array): KeyObject {
  const der = nodeBuffer().Buffer.alloc(SpkiPrefix.length + 32);
  der.set(SpkiPrefix);
  der.set(raw, SpkiPrefix.length);
  return nodeCrypto().createPublicKey({ key: der, format: "der", type: "spki" });
}

function checkLength(key: Uint8Array, what: string): void {
  if (key.length !== 32) throw new RangeError(`An X25519 ${what} key is 32 bytes`);
}

/** node:crypto (OpenSSL underneath), loaded at its first call. */
export const nodeX25519: X25519Backend = {
  name: "node",
  publicKey(privateKey) {
    checkLength(privateKey, "private");
    const spki = nodeCrypto().createPublicKey(privateKeyObject(privateKey)).export({
      format: "der",
      type: "spki",
    });
    return new Uint8Array(spki.subarray(SpkiPrefix.length));
  },
  shared(privateKey, publicKey) {
    checkLength(privateKey, "private");
    checkLength(publicKey, "public");
    const out = nodeCrypto().diffieHellman({
      privateKey: privateKeyObject(privateKey),
      publicKey: publicKeyObject(publicKey),
    });
    return new Uint8Array(out.buffer, out.byteOffset, out.length);
  },
};

/**
 * Whether `candidate` reproduces RFC 7748: the scalar-multiplication vector of 5.2, Alice's and
 * Bob's public keys and their shared secret of 6.1, and a refusal of the all-zero (low-order)
 * point. Anything else, including a throw, means "do not use it".
 */
export function agreesWithRfc7748(candidate: X25519Backend): boolean {
  try {
    const same = (a: Uint8Array, b: Uint8Array) =>
      a.length === b.length && a.every((x, i) => x === b[i]);
    const scalar = hex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
    const u = hex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
    const want = hex("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
    if (!same(candidate.shared(scalar, u), want)) return false;
    const alice = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    const alicePub = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    const bob = hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    const bobPub = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    const secret = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    if (!same(candidate.publicKey(alice), alicePub)) return false;
    if (!same(candidate.publicKey(bob), bobPub)) return false;
    if (!same(candidate.shared(alice, bobPub), secret)) return false;
    if (!same(candidate.shared(bob, alicePub), secret)) return false;
    try {
      candidate.shared(alice, new Uint8Array(32));
      return false;
    } catch {
      return true;
    }
  } catch {
    return false;
  }
}

let backend: X25519Backend | undefined;
/** noble, once {@link loadX25519Fallback} has loaded it. */
let fallback: X25519Backend | undefined;
/** Set once a caller picks a backend itself; an offered backend does not override that. */
let chosenExplicitly = false;

/**
 * The backend in use. Unless one was offered or set before, the first call chooses (and checks)
 * node:crypto, else noble if it was loaded. Throws only when neither node:crypto works nor noble
 * was loaded, which a process that loaded the helper never meets.
 */
export function x25519Backend(): X25519Backend {
  if (backend) return backend;
  if (agreesWithRfc7748(nodeX25519)) return backend = nodeX25519;
  if (fallback) return backend = fallback;
  throw new Error(
    "X25519: node:crypto does not reproduce RFC 7748, and noble is not loaded yet " +
      "(await loadX25519Fallback() first)",
  );
}

/** Loads noble's X25519 as the last fallback (once); returns it. */
export async function loadX25519Fallback(): Promise<X25519Backend> {
  return fallback ??= (await import("./x25519_noble.ts")).nobleX25519;
}

/** Chooses the backend (tests compare them); returns the previous one. */
export function setX25519Backend(next: X25519Backend): X25519Backend {
  const previous = x25519Backend();
  backend = next;
  chosenExplicitly = true;
  return previous;
}

/**
 * Uses `candidate` from now on if it reproduces RFC 7748 and no backend was chosen explicitly
 * (x25519_native.ts offers the helper's this way); otherwise the current one stays.
 */
export function offerX25519(candidate: X25519Backend): "installed" | "disagrees" | "explicit" {
  if (chosenExplicitly) return "explicit";
  if (!agreesWithRfc7748(candidate)) return "disagrees";
  backend = candidate;
  return "installed";
}
