/**
 * Curve25519 keys as WireGuard uses them: generation, public-key derivation and the base64 text
 * form that `wg(8)` prints and accepts. Keys are plain 32-byte `Uint8Array`s; secret ones (private
 * and preshared keys) are marked with {@link redactSecret} so that `console.log`, `Deno.inspect`,
 * `String()` and `JSON.stringify` print `<redacted>` instead of their bytes.
 *
 * @module
 */
import { x25519Backend } from "./x25519.ts";

/** Length in bytes of every WireGuard key (private, public, preshared). */
export const KEY_LEN = 32;
/** Length of a key's base64 text: 43 characters and one `=` of padding. */
export const KEY_TEXT_LEN = 44;

const REDACTED = "<redacted>";
const redactedInspect = (): string => REDACTED;

/**
 * Marks `bytes` as secret, in place, and returns it: inspecting, stringifying or JSON-encoding it
 * then shows `<redacted>`. The array is still an ordinary `Uint8Array` (same prototype, same
 * contents, equal under `assert.deepStrictEqual`); only its printed forms change.
 *
 * @example
 * ```ts
 * import { redactSecret } from "./keys.ts";
 * const k = redactSecret(new Uint8Array(32));
 * if (Deno.inspect(k) !== "<redacted>" || String(k) !== "<redacted>") throw new Error();
 * ```
 */
export function redactSecret<T extends Uint8Array>(bytes: T): T {
  for (const key of [Symbol.for("Deno.customInspect"), Symbol.for("nodejs.util.inspect.custom")]) {
    Object.defineProperty(bytes, key, { value: redactedInspect, configurable: true });
  }
  Object.defineProperty(bytes, "toString", { value: redactedInspect, configurable: true });
  Object.defineProperty(bytes, "toJSON", { value: redactedInspect, configurable: true });
  return bytes;
}

/**
 * A new private key: 32 random bytes clamped as RFC 7748 (5) and `wg genkey` do (clear the three
 * low bits of byte 0, clear the top bit and set the second-highest bit of byte 31). The result is
 * marked secret (see {@link redactSecret}).
 *
 * @example
 * ```ts
 * import { generatePrivateKey } from "./keys.ts";
 * const k = generatePrivateKey();
 * if (k.length !== 32 || (k[0]! & 7) !== 0 || (k[31]! & 0xc0) !== 0x40) throw new Error();
 * ```
 */
export function generatePrivateKey(): Uint8Array {
  const key = crypto.getRandomValues(new Uint8Array(KEY_LEN));
  clampPrivateKey(key);
  return redactSecret(key);
}

/** Applies RFC 7748 (5) `decodeScalar25519` clamping to `key`, in place. */
export function clampPrivateKey(key: Uint8Array): void {
  if (key.length !== KEY_LEN) throw new RangeError(`A private key is ${KEY_LEN} bytes`);
  key[0]! &= 248;
  key[31]! &= 127;
  key[31]! |= 64;
}

/**
 * The public key of `privateKey`: X25519 of the private key and the base point 9. The private key
 * need not be clamped already; X25519 clamps it (RFC 7748 (5)), as `wg pubkey` does.
 *
 * @example
 * ```ts
 * import { decodeKey, encodeKey, publicKeyOf } from "./keys.ts";
 * // RFC 7748 (6.1), Alice's key pair.
 * const priv = Uint8Array.from(
 *   "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a".match(/../g)!,
 *   (h) => parseInt(h, 16),
 * );
 * const pub = encodeKey(publicKeyOf(priv));
 * if (pub !== "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=") throw new Error(pub);
 * ```
 */
export function publicKeyOf(privateKey: Uint8Array): Uint8Array {
  if (privateKey.length !== KEY_LEN) throw new RangeError(`A private key is ${KEY_LEN} bytes`);
  return x25519Backend().publicKey(privateKey);
}

/**
 * A new preshared key: 32 random bytes, unclamped, as `wg genpsk` makes. Marked secret.
 *
 * @example
 * ```ts
 * import { generatePresharedKey } from "./keys.ts";
 * if (generatePresharedKey().length !== 32) throw new Error();
 * ```
 */
export function generatePresharedKey(): Uint8Array {
  return redactSecret(crypto.getRandomValues(new Uint8Array(KEY_LEN)));
}

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const DECODE = new Int8Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) DECODE[ALPHABET.charCodeAt(i)] = i;

/**
 * The standard base64 (RFC 4648 (4)) text of a 32-byte key: 44 characters ending in `=`, as `wg`
 * prints keys.
 *
 * @example
 * ```ts
 * import { encodeKey } from "./keys.ts";
 * if (encodeKey(new Uint8Array(32)) !== "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=") throw new Error();
 * ```
 */
export function encodeKey(key: Uint8Array): string {
  if (key.length !== KEY_LEN) throw new RangeError(`A key is ${KEY_LEN} bytes, not ${key.length}`);
  let out = "";
  for (let i = 0; i < 30; i += 3) {
    const v = (key[i]! << 16) | (key[i + 1]! << 8) | key[i + 2]!;
    out += ALPHABET[v >> 18]! + ALPHABET[(v >> 12) & 63]! + ALPHABET[(v >> 6) & 63]! +
      ALPHABET[v & 63]!;
  }
  const v = (key[30]! << 16) | (key[31]! << 8);
  return out + ALPHABET[v >> 18]! + ALPHABET[(v >> 12) & 63]! + ALPHABET[(v >> 6) & 63]! + "=";
}

/**
 * Decodes a key's base64 text. Accepts exactly what `wg` accepts: 44 characters of the standard
 * alphabet, the last one `=`, and the canonical encoding only (the two bits the 43rd character
 * carries beyond the 32nd byte must be zero, so each key has one text form). Anything else,
 * including surrounding whitespace, gives `undefined`.
 *
 * @example
 * ```ts
 * import { decodeKey } from "./keys.ts";
 * if (decodeKey("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")?.length !== 32) throw new Error();
 * if (decodeKey("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=") !== undefined) throw new Error();
 * ```
 */
export function decodeKey(text: string): Uint8Array | undefined {
  if (text.length !== KEY_TEXT_LEN || text[KEY_TEXT_LEN - 1] !== "=") return undefined;
  const sextets = new Uint8Array(KEY_TEXT_LEN - 1);
  for (let i = 0; i < sextets.length; i++) {
    const c = text.charCodeAt(i);
    const v = c < 128 ? DECODE[c]! : -1;
    if (v < 0) return undefined;
    sextets[i] = v;
  }
  // 43 sextets carry 258 bits; the last two must be zero for the 256-bit key.
  if ((sextets[42]! & 3) !== 0) return undefined;
  const out = new Uint8Array(KEY_LEN);
  for (let i = 0, j = 0; i < 40; i += 4) {
    const v = (sextets[i]! << 18) | (sextets[i + 1]! << 12) | (sextets[i + 2]! << 6) |
      sextets[i + 3]!;
    out[j++] = v >> 16;
    out[j++] = (v >> 8) & 0xff;
    out[j++] = v & 0xff;
  }
  const v = (sextets[40]! << 18) | (sextets[41]! << 12) | (sextets[42]! << 6);
  out[30] = v >> 16;
  out[31] = (v >> 8) & 0xff;
  return out;
}

/** True when every byte of `key` is zero (wg treats an all-zero key as "no key"). */
export function isZeroKey(key: Uint8Array): boolean {
  let acc = 0;
  for (const b of key) acc |= b;
  return acc === 0;
}

/** Compares two keys in time independent of where they differ. */
export function keysEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let acc = 0;
  for (let i = 0; i < a.length; i++) acc |= a[i]! ^ b[i]!;
  return acc === 0;
}
