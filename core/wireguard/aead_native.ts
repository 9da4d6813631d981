/**
 * ChaCha20-Poly1305 through the helper library (native/aead.c), the fastest AEAD backend of
 * DESIGN decision 8: one FFI call per packet, sealing and opening where the bytes lie, with no
 * object, Buffer or BigInt made per packet. The cipher itself is OpenSSL's libcrypto or libsodium,
 * whichever the helper found (`wgc_available`).
 *
 * This module does no I/O: the host loads the helper (core/host/tunnel/udp_native.ts) and hands
 * its symbols to {@link offerNativeAead}, which installs the backend only if it reproduces noble
 * (`agreesWithNoble` in crypto.ts); otherwise node:crypto or noble stay in use.
 *
 * Same contract as noble's: 12-byte nonce, 16-byte tag appended, `out` may be the input's own
 * memory (same start), and nothing is written to `out` when authentication fails. Sizes are checked
 * here, before the call, because the C side trusts them.
 *
 * @module
 */
import { type AeadBackend, aeadBackend, offerAead } from "./crypto.ts";

/** The helper's AEAD symbols (a subset of the library `udp_native.ts` opens). */
export interface NativeAeadSymbols {
  wgc_available(): number;
  wgc_use(which: number): number;
  wgc_seal(
    key: Uint8Array,
    nonce: Uint8Array,
    input: Uint8Array,
    length: number,
    aad: Uint8Array,
    aadLength: number,
    out: Uint8Array,
  ): number;
  wgc_open(
    key: Uint8Array,
    nonce: Uint8Array,
    input: Uint8Array,
    length: number,
    aad: Uint8Array,
    aadLength: number,
    out: Uint8Array,
  ): number;
}

/** What `wgc_available` / `wgc_use` return, by number (WG_LIB_* in native/syslib.h). */
export const NativeAeadLibraries: Readonly<Record<number, string>> = {
  1: "OpenSSL libcrypto.so.3",
  2: "libsodium.so.23",
};

const KeySize = 32;
const NonceSize = 12;
const TagSize = 16;

function checkKeyNonce(key: Uint8Array, nonce: Uint8Array): void {
  if (key.length !== KeySize) throw new RangeError(`AEAD key is ${key.length} bytes, not 32`);
  if (nonce.length !== NonceSize) {
    throw new RangeError(`AEAD nonce is ${nonce.length} bytes, not 12`);
  }
}

/** A backend over the helper's symbols; whichever library the helper has active is used. */
export function nativeAead(lib: NativeAeadSymbols): AeadBackend {
  return {
    name: "native",
    seal(key, nonce, plain, aad, out) {
      checkKeyNonce(key, nonce);
      if (out.length < plain.length + TagSize) {
        throw new RangeError(`AEAD output is ${out.length} bytes, needs ${plain.length + TagSize}`);
      }
      if (lib.wgc_seal(key, nonce, plain, plain.length, aad, aad.length, out) !== 0) {
        throw new Error("native ChaCha20-Poly1305 seal failed");
      }
    },
    open(key, nonce, sealed, aad, out) {
      checkKeyNonce(key, nonce);
      if (sealed.length < TagSize) return false;
      if (out.length < sealed.length - TagSize) {
        throw new RangeError(
          `AEAD output is ${out.length} bytes, needs ${sealed.length - TagSize}`,
        );
      }
      return lib.wgc_open(key, nonce, sealed, sealed.length, aad, aad.length, out) === 0;
    },
  };
}

/** What {@link offerNativeAead} found: the library in use, or why the native AEAD is not. */
export interface NativeAeadState {
  library?: string;
  reason?: string;
}

/**
 * Installs the helper's AEAD if it has a library and agrees with noble (and no caller chose a
 * backend explicitly with `setAeadBackend`); says what happened.
 */
export function offerNativeAead(lib: NativeAeadSymbols): NativeAeadState {
  const which = lib.wgc_available();
  const library = NativeAeadLibraries[which];
  if (!library) return { reason: "neither libcrypto.so.3 nor libsodium.so.23 could be opened" };
  switch (offerAead(nativeAead(lib))) {
    case "installed":
      return { library };
    case "disagrees":
      return { reason: `${library} does not reproduce noble's bytes` };
    case "explicit":
      return { reason: "another backend was chosen explicitly" };
  }
}

/** One line for `doctor` and `selftest`: the AEAD in use and, if it is not the helper's, why. */
export function describeAead(state: NativeAeadState | undefined): string {
  const name = aeadBackend();
  if (name === "native") return `native (${state?.library ?? "helper"})`;
  const why = state?.reason ?? "the helper is not loaded";
  return `${name === "node" ? "node:crypto" : "noble"} (native AEAD: ${why})`;
}
