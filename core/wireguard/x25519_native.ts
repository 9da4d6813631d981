/**
 * X25519 through the helper library (native/x25519.c), the fastest backend of x25519.ts: one FFI
 * call per public key or shared secret, from libsodium or OpenSSL's libcrypto, whichever the
 * helper found (`wgx_available`).
 *
 * This module does no I/O: the host loads the helper (core/host/tunnel/udp_native.ts) and hands
 * its symbols to {@link offerNativeX25519}, which installs the backend only if it reproduces
 * RFC 7748 (`agreesWithRfc7748`); otherwise node:crypto or noble stay in use. Lengths are checked
 * here, before the call, because the C side trusts them.
 *
 * @module
 */
import { NativeAeadLibraries } from "./aead_native.ts";
import { offerX25519, type X25519Backend, x25519Backend } from "./x25519.ts";

/** The helper's X25519 symbols (a subset of the library `udp_native.ts` opens). */
export interface NativeX25519Symbols {
  wgx_available(): number;
  wgx_use(which: number): number;
  wgx_public(out: Uint8Array, privateKey: Uint8Array): number;
  wgx_shared(out: Uint8Array, privateKey: Uint8Array, publicKey: Uint8Array): number;
}

/** What `wgx_available` / `wgx_use` return, by number: native/syslib.h's, the AEAD's too. */
export const NativeX25519Libraries: Readonly<Record<number, string>> = NativeAeadLibraries;

function checkLength(key: Uint8Array, what: string): void {
  if (key.length !== 32) throw new RangeError(`An X25519 ${what} key is 32 bytes`);
}

/** A backend over the helper's symbols; whichever library the helper has active is used. */
export function nativeX25519(lib: NativeX25519Symbols): X25519Backend {
  return {
    name: "native",
    publicKey(privateKey) {
      checkLength(privateKey, "private");
      const out = new Uint8Array(32);
      if (lib.wgx_public(out, privateKey) !== 0) throw new Error("native X25519 failed");
      return out;
    },
    shared(privateKey, publicKey) {
      checkLength(privateKey, "private");
      checkLength(publicKey, "public");
      const out = new Uint8Array(32);
      // Fails for a low-order point (an all-zero secret), as noble and node:crypto throw.
      if (lib.wgx_shared(out, privateKey, publicKey) !== 0) {
        throw new Error("X25519: low-order public key, or the library refused");
      }
      return out;
    },
  };
}

/** What {@link offerNativeX25519} found: the library in use, or why the native X25519 is not. */
export interface NativeX25519State {
  library?: string;
  reason?: string;
}

/**
 * Installs the helper's X25519 if it has a library and reproduces RFC 7748 (and no caller chose a
 * backend explicitly with `setX25519Backend`); says what happened.
 */
export function offerNativeX25519(lib: NativeX25519Symbols): NativeX25519State {
  const library = NativeX25519Libraries[lib.wgx_available()];
  if (!library) return { reason: "neither libcrypto.so.3 nor libsodium.so.23 could be opened" };
  switch (offerX25519(nativeX25519(lib))) {
    case "installed":
      return { library };
    case "disagrees":
      return { reason: `${library} does not reproduce RFC 7748` };
    case "explicit":
      return { reason: "another backend was chosen explicitly" };
  }
}

/** One line for `doctor` and `selftest`: the X25519 in use and, if it is not the helper's, why. */
export function describeX25519(state: NativeX25519State | undefined): string {
  const name = x25519Backend().name;
  if (name === "native") return `native (${state?.library ?? "helper"})`;
  const why = state?.reason ?? "the helper is not loaded";
  return `${name === "node" ? "node:crypto" : "noble"} (native X25519: ${why})`;
}
