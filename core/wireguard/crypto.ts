/**
 * The primitives of paper section 5.4: HASH, MAC, HMAC, KDF1..3, AEAD, XAEAD, DH and TAI64N.
 * noble is the reference implementation (DESIGN decision 8). Every function here is synchronous
 * and allocation-light: the transport path seals and opens in place in the caller's buffer.
 * AEAD, fastest first: the helper library's ChaCha20-Poly1305 (aead_native.ts, offered by the host
 * once it has loaded the helper), the runtime's node:crypto (aead_node.ts), noble. A backend is used
 * only when it reproduces noble ({@link agreesWithNoble}); {@link aeadBackend} says which is. The
 * choice is made when the helper offers its AEAD or at the first seal or open, not at import, so
 * that a process with the helper never loads node:crypto (node_crypto.ts says why that matters).
 * DH goes through x25519.ts, which chooses the same way.
 *
 * @module
 */
import { blake2s } from "@noble/hashes/blake2.js";
import { hmac } from "@noble/hashes/hmac.js";
import { chacha20poly1305, xchacha20poly1305 } from "@noble/ciphers/chacha.js";
import { nodeOpen, nodeSeal } from "./aead_node.ts";
import { x25519Backend } from "./x25519.ts";

const encoder = new TextEncoder();

/** HASH(a || b || ...): BLAKE2s-256 over the concatenation, without building it. */
export function hash(...parts: Uint8Array[]): Uint8Array {
  const h = blake2s.create();
  for (const p of parts) h.update(p);
  return h.digest();
}

export function hashString(s: string): Uint8Array {
  return blake2s(encoder.encode(s));
}

/** MAC(key, input): keyed BLAKE2s with a 16-byte output. */
export function mac(key: Uint8Array, input: Uint8Array): Uint8Array {
  return blake2s(input, { key, dkLen: 16 });
}

/** HMAC(key, input) over BLAKE2s (RFC 2104 with a 64-byte block). */
export function hmacBlake2s(key: Uint8Array, ...input: Uint8Array[]): Uint8Array {
  const h = hmac.create(blake2s, key);
  for (const p of input) h.update(p);
  return h.digest();
}

const ONE = Uint8Array.of(1), TWO = Uint8Array.of(2), THREE = Uint8Array.of(3);

export function kdf1(key: Uint8Array, input: Uint8Array): Uint8Array {
  const t0 = hmacBlake2s(key, input);
  return hmacBlake2s(t0, ONE);
}

export function kdf2(key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array] {
  const t0 = hmacBlake2s(key, input);
  const t1 = hmacBlake2s(t0, ONE);
  return [t1, hmacBlake2s(t0, t1, TWO)];
}

export function kdf3(key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array, Uint8Array] {
  const t0 = hmacBlake2s(key, input);
  const t1 = hmacBlake2s(t0, ONE);
  const t2 = hmacBlake2s(t0, t1, TWO);
  return [t1, t2, hmacBlake2s(t0, t2, THREE)];
}

// One nonce buffer reused by every call: all calls are synchronous, so it is never shared live.
const nonce = new Uint8Array(12);
const nonceView = new DataView(nonce.buffer);
function counterNonce(counter: number): Uint8Array {
  // Paper 5.4.6: 32 bits of zeros then the 64-bit little-endian counter.
  nonceView.setUint32(4, counter >>> 0, true);
  nonceView.setUint32(8, Math.floor(counter / 0x1_0000_0000), true);
  return nonce;
}

const EMPTY = new Uint8Array(0);

/** The AEAD backends: the helper library (aead_native.ts), node:crypto, noble. */
export type AeadName = "native" | "node" | "noble";

/** A ChaCha20-Poly1305 implementation: 12-byte nonce, tag appended, `out` untouched if forged. */
export interface AeadBackend {
  readonly name: AeadName;
  seal(
    key: Uint8Array,
    nonce: Uint8Array,
    plain: Uint8Array,
    aad: Uint8Array,
    out: Uint8Array,
  ): void;
  open(
    key: Uint8Array,
    nonce: Uint8Array,
    sealed: Uint8Array,
    aad: Uint8Array,
    out: Uint8Array,
  ): boolean;
}

/** The reference implementation. */
export const nobleAead: AeadBackend = {
  name: "noble",
  seal(key, nonce, plain, aad, out) {
    chacha20poly1305(key, nonce, aad).encrypt(plain, out);
  },
  open(key, nonce, sealed, aad, out) {
    try {
      chacha20poly1305(key, nonce, aad).decrypt(sealed, out);
      return true;
    } catch {
      return false;
    }
  },
};

/** The runtime's native implementation (aead_node.ts). */
export const nodeAead: AeadBackend = { name: "node", seal: nodeSeal, open: nodeOpen };

/** Deterministic bytes (xorshift32) for the load-time check: varied, reproducible, no I/O. */
function filler(seed: number): (n: number) => Uint8Array {
  let x = seed >>> 0 || 1;
  return (n) => {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      out[i] = x & 0xff;
    }
    return out;
  };
}

/**
 * The inputs of the load-time check: RFC 8439 2.8.2 (with AAD), and pseudo-random keys, nonces and
 * inputs of 0 to 1424 bytes, with and without AAD. Deterministic, so that noble's outputs for them
 * can be recorded ({@link NobleSealed}).
 */
export function aeadCheckInputs(): [Uint8Array, Uint8Array, Uint8Array, Uint8Array][] {
  const hex = (s: string) => Uint8Array.from(s.match(/../g)!, (b) => parseInt(b, 16));
  const rfcKey = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
  const rfcNonce = hex("070000004041424344454647");
  const rfcAad = hex("50515253c0c1c2c3c4c5c6c7");
  const rfcPlain = new TextEncoder().encode(
    "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the " +
      "future, sunscreen would be it.",
  );
  const bytes = filler(0x5eed);
  const inputs: [Uint8Array, Uint8Array, Uint8Array, Uint8Array][] = [
    [rfcKey, rfcNonce, rfcPlain, rfcAad],
  ];
  const sizes: [number, number][] = [[0, 0], [1, 0], [17, 32], [64, 0], [1424, 0], [1424, 13]];
  for (const [size, aadSize] of sizes) {
    inputs.push([bytes(32), bytes(12), bytes(size), bytes(aadSize)]);
  }
  return inputs;
}

/**
 * noble's sealed output for each of {@link aeadCheckInputs}, concatenated, as base64. Recorded
 * rather than computed at load: running noble's ChaCha20-Poly1305 there, not yet compiled by the
 * JIT, cost 3-7 ms of every start (docs/performance.md, "Cold start").
 * `tests/wireguard_aead_test.ts` seals the inputs with noble and compares them with this, so the
 * record cannot drift from noble.
 */
export const NobleSealed =
  "0xqNNGSOYNt7hq+8U+9+wqSt7VEpbgj+qeK1pzbuYtY9vqRejKlnEoL6+2naknKLGnHeCp4GCykF1qW2fs07NpLdvX8t" +
  "d4uMmAOu4ygJG1j6syTk+tZ1lFWFgItIMde8P/Te8I5Lep3ldtJlhs7GS2EWGuELWU8J4mp+kC7L0GAGkXuHKpE0grew" +
  "uDpVCOBP+NBWF4q+zhp732EbFUBut2U/iAsEC8Azy58GReZGfhf6TrK/eM3c/ytTboHP5TI956+k6ihZRKJwZm5odhPi" +
  "SzwBQIYdT5of26ATQfl+RBeE6jCVgt2hXSZrIzXdNhPY89eSBq2CTzcKiW9ZtQpByPzN/juj1wWQ0mSM75dFGaFQcpFp" +
  "M/WHkTlh9aXhnzWGOFrc+LW+8vpB+TMAKO7IiG/XYdTmgmIbgFTKOVpqphEfk9/yvrBJlHl+x4TGumwqya3uoGfnFbe1" +
  "unmTOOzDZDTsNeQr3fpv1QMtmIyWmSk8NKpguXg12s1ai1U0OiRn75KdOZDAx8vnd505tVtMYruaYI3ee3IeOvM89QvH" +
  "3MqkFUpCwk5Iskzb3/ioyGiNFuG0YQiCXUPUFdsbGGosrKKy6wFpzf/owJ4hEJFWs7dQjKiSTUAKIZuSdA9Z8gxR/r4l" +
  "ax/w1B9HlYpZVFHSqSyH2lA+ekeH8m5eXyNvij21AWnj9XGlTcLVOCJU4SbrH37hdCv2swhiEChXALcUF7qcW2209kOQ" +
  "eJ2UrK1pVxgi8swGQvcIgzQ2anR90L7F76EJ2tKiJZiw/iF91jwZ9IsGaChk3YnjWghMCaB6hvH6Y/hUYUOkUmXmyMD2" +
  "TThTBDigFctM64SD3Q+lcbEtQITNYkeBnpFBlafJnl+TtBE+N4hfnc5gyrj+k0CHr2JxDUW50cOoFgXYx5yRV2S0rkOj" +
  "VyDgCCpzJ1iNapePdWNFkZzBCLv7jVgbC7FJ37081XElc9FxdRWvLz3XTx1Biz2ynV4NyZiHKmbcFJF20vphl0TaTIxt" +
  "Ek58PIYLRvlwEB4lcnrIpMF4MV/rXZdQgNYWuarM0txTJ/HJrbI/mYcx4IXE015jCB6mH/Lmr0ZvwwbKcTt80zyXJDaE" +
  "YMzLP/oc+qoXCi357fMaIxL6IgDF1e0p0P4vGWaLBSrCLh/GHqJQxa2evInsR5VOuF9uu3DQ3pyDNYTp/951qrRe6l+d" +
  "OS/Z7vgWk8nudOlDU118PkSIl3L8VqxkB3wy2lKIcfWJESXTfwZKetk6pMr4ovGMm5z7wCQNhNCgthoshr2PV5I32ZTK" +
  "GVjTLltjspP5hssWTLmPLNL5gHgiHKilw6JBfcyL5xoaiJ+Bnx2NhboJEhhXi5Pj3Tjqn1guT4/oxKmQd8ytkLRpAeeY" +
  "5LWXltu111fLCKhxft1qL0vbLiJ+FScUwe2TO/ZnAvLpCGT/X7czCTGft7b6QtoY8vLwk8FLPxPqH+SKIyjXU+2Ozhxz" +
  "h9HNqX54DQZmJLy3yCC8KDsp+V7Kn+c69k4AhQi+ffTUjQBDc9IMOh07uBofpmfnN0551s3EBBegM1C5L5chdu4xFwxd" +
  "856XfiyHx2jujqKXsxz25Hj/s3O5mELnZmOX4ZLH8WMd6Yl3N+w6/Uer+k3kV7Be/6STfOSzINr4y+Huz5lldjWCGUCX" +
  "qSY3x275XkalpRGLmR3dupqBERdfUAwtFOLQic4rf7jaU2uuZnfsduJfdSlfYVZYFpFmJ1bSdvrzKrRn67zkqzdNwTTK" +
  "0YeJPQmkXhCesV2xe7KFZvmG1qV9oOW6ntKgdLi1Gx7F1AlWNWlrvEfXwjp+EhzAFoTEGD5WIpentn6HlJ3Pqyp+xUzl" +
  "sAYYvYVDRCOIHDXyUcBasUMZAadeJkLjS+iOO8rmjoKJ5oem3BAs/heK1NiKDTN6X9aFllg42DICcLJRryCW3RjiK5UK" +
  "SgUNYldIj4JNK9M0CUFMJrrLcQiJ8OzguNqUGw1yT71dkZ5iQVeY5pUN+3J8kEUWTP1qEx/VCgALx8X2qUwg2H6LDpbU" +
  "GoSKRr3VlmPYZGKZVXZAVqarHmqAabOBpK6lgxCeuytrBXuG925APd7PLF+650HLsFjLi03yWjrJUprN/6PCABefuALq" +
  "InsHgn2j2D/7UcdMLXL0Njc5/N24fMY0zehumTXqECMXNtvThGb7JLlkhmxaSz9WgKB9K1GUUJe9RRw/QBuuqlCeu95I" +
  "8069Hy1WTdJh1JYEz7clW8FjjvT+jsFshF5YPMErm4YyCqeybgK2py5xb5dN5x+v2z7WXrVYjptON27MLQKrHLvprWXc" +
  "HjzmhjOlGjohWg/U6sN301hcWcOdfAKWcGsS5CnQ56EhRSRI6bpch+nSZgtv82RznU6Iugxv6ORbQYGWeQnV8QuiqLJE" +
  "DU17dFcrO3c5dSR9sI63YynXddcgXfSKDkhqxuS6q7rX20mYiMF6x2xbFw1wP8GMKyCYr1m+jmSogyxp87B6jqurH/Mf" +
  "Smy5WIq8BsMMNVVAOe5DKj38gmICoyJcRyQ1t8owD50H3E2c49+blcZ2CNMLQQZfoRj0qWIQRYkKhZ5NOv7dqWTg3wGg" +
  "PiZ+6AAFdQI1G6dNbWgKZ2hSfXlmnPECQ1exz565JGcKO8AeMGZHWs93jH79p4qUadpO+2GpYqw72hQKKXeRU4ElYYyu" +
  "xFtz8hDr06HcgmWs477AbiNOXh0mCCP1A/bk6aHfJ6SvRfwIV1Q7W0MrKcNryO4R4d/sIUjiDr4Iproh6j7XxvPDGI6V" +
  "NQJScxGy5hR7x8Ei5LYeg/xn0FrpcAzqgpF97Nsim52KFZnNwacfq3ED5CylLwBeaIcUw9AtNsyY9DdVht54tYnD4y29" +
  "DGB5HCnxJmmSrj/tKlJ2GDMbfFMBqGB3oVzAqGezbcdVAK/Uog4wyA1r16C63c3JRRLzn3H04V3uKik3o7Afv+lVpnFk" +
  "afwofPmwxwFrUq6kIAoZ0AP7vdEaMMKxA4sPY+znckpccwxjQ1ne8pPHf6HlS9jseFuAEWna1IxJtqtYpZ5+REN2rS1I" +
  "0NQktwlzu389/v9AyH8Mq4g2Ob7Y56JvSj6AUmhELDeEk2uhmHlVgTIVOy07NzzwszZ7cfRcRcA5Tsnu488hlnvV6ZMU" +
  "BGe5PVwnUYJxKoNpiiglFzgZFj2ETheEw8FIYcafwcOjctoToSWk2Cu6fEbQgmZsNZ4vZbMZj81NGuauR0AEw6f3Q2F+" +
  "79/c5YwVitKsuKms/wBgqr4DnaXyrFMbP6AVbTIC02yEj15EPsCSzznnCy3JlQgwUKtwXnbiuTDXiqQS+xpeTW75aQTw" +
  "y6/F+eeEGuqLBxOJsvQQkCuSYTAi/oWWNeB5kdn4lg5n6OrmQa5GXlMSwqvacg2hUcGgFUyGie5nliUVnyVSMyxADEY0" +
  "e3BBAc6FSlhCcyUtVZ6Jj84nw2OZF5hSHxkzw8iBhxQkUsVr4wteznFdFyRSIMEATPCvpqIrnzYF6vJFgeTWMrgZBD1I" +
  "KCRd5jA5wIEuBckv5Qjqc7bmLU8aluF+5YuYYJdBLbub6WlL7kxWrXhmaYyEjksMFlLJO1RdkomIqBnrN/Wz6fDn//GQ" +
  "hRoRvIqDecUNJsuyyscz05KqkQD51UtbWp/Pq9ImDnFb3EY9y+YItQuBI+3It8UDtTibxyuBQgwxdaIcxdGSepcHUuSX" +
  "Y5kJeSIIDQVAQB218ETJwi47wmdlItnf0Zh5rAQjrJ38gvUImly4CXtUGmQCMWLR5Z9zCyvAk6IjyElNbAwk0xqYUxXg" +
  "11lO5Bb//e5wZpD2JWrnk3bhA05RFOiAs4C2ekgtXQd2uQ0qEfMbm+v6DD9EC9ga3shEP8uAaqstS22CCeLccNlyXOvw" +
  "NCVV5tNJLJKucqnRQctfIr6bK5oo+TIDIix1qXNmupagMAa6FhWMz2rKeL3H+24dOkvCiw3+c80GfQNFmAxElB/+uTk2" +
  "T5t3IqEuFyAZeLH+WXfS4NNlpoWpHgVrb6Ilk2pR4X0HBqY7IpqD7N0Cs7T6vLHobvq/4FIjAHsWMwVvQ70tKPrg3vy+" +
  "pdNq4O1Nq64C+eyMiurzSzhG7r8VfVNxUNChdOyoLi69K8tnNkdjeeUMWUtdHJy2GMQPyHtQ4DUGVMhwWZCTH0gnJFKA" +
  "2mtDZMWD+iH7cPgtwo2IexJ9ExuZad+F2jFKspJEr+Dyu6KSwlPb7y8sQshzL5EDXbYV";

/**
 * Whether `candidate` reproduces noble's output on {@link aeadCheckInputs} (apart and in place),
 * opens it, and refuses a flipped tag without writing to `out`. Anything else, including a throw,
 * means "do not use it".
 */
export function agreesWithNoble(candidate: AeadBackend): boolean {
  try {
    const sealed = Uint8Array.fromBase64(NobleSealed);
    let at = 0;
    for (const [key, nonce, p, a] of aeadCheckInputs()) {
      const want = sealed.slice(at, at += p.length + 16);
      if (want.length !== p.length + 16) return false;
      const got = new Uint8Array(p.length + 16);
      candidate.seal(key, nonce, p, a, got);
      if (!equalConstantTime(want, got)) return false;
      // In place, as the device seals and opens.
      const buf = new Uint8Array(p.length + 16);
      buf.set(p);
      candidate.seal(key, nonce, buf.subarray(0, p.length), a, buf);
      if (!equalConstantTime(want, buf)) return false;
      if (!candidate.open(key, nonce, buf, a, buf.subarray(0, p.length))) return false;
      if (!equalConstantTime(buf.subarray(0, p.length), p)) return false;
      const back = new Uint8Array(p.length);
      if (!candidate.open(key, nonce, want, a, back) || !equalConstantTime(back, p)) return false;
      want[want.length - 1]! ^= 1;
      const untouched = new Uint8Array(p.length).fill(0xa5);
      if (candidate.open(key, nonce, want, a, untouched)) return false;
      if (untouched.some((b) => b !== 0xa5)) return false;
    }
    return at === sealed.length;
  } catch {
    return false;
  }
}

/** Unless one was offered or set first, chosen (and checked) at the first seal or open. */
let backend: AeadBackend | undefined;
const current = () => backend ??= agreesWithNoble(nodeAead) ? nodeAead : nobleAead;
/** Set once a caller picks a backend itself; an offered backend does not override that. */
let chosenExplicitly = false;

/** The AEAD in use: "native" (the helper), "node" (node:crypto) or "noble" (the reference). */
export function aeadBackend(): AeadName {
  return current().name;
}

/** Chooses the AEAD (tests and benchmarks compare them); returns the previous one. */
export function setAeadBackend(next: AeadBackend): AeadBackend {
  const previous = current();
  backend = next;
  chosenExplicitly = true;
  return previous;
}

/**
 * Uses `candidate` from now on if it agrees with noble and no backend was chosen explicitly
 * (aead_native.ts offers the helper's this way); otherwise the current one stays.
 */
export function offerAead(candidate: AeadBackend): "installed" | "disagrees" | "explicit" {
  if (chosenExplicitly) return "explicit";
  if (!agreesWithNoble(candidate)) return "disagrees";
  backend = candidate;
  return "installed";
}

/** AEAD(key, counter, plain, aad) into `out` (plain.length + 16 bytes; may be plain's buffer). */
export function aeadSeal(
  key: Uint8Array,
  counter: number,
  plain: Uint8Array,
  aad: Uint8Array,
  out: Uint8Array,
): void {
  (backend ?? current()).seal(key, counterNonce(counter), plain, aad, out);
}

/** Opens `sealed` into `out` (sealed.length - 16 bytes); false when authentication fails. */
export function aeadOpen(
  key: Uint8Array,
  counter: number,
  sealed: Uint8Array,
  aad: Uint8Array,
  out: Uint8Array,
): boolean {
  return (backend ?? current()).open(key, counterNonce(counter), sealed, aad, out);
}

/** Convenience for handshake fields: returns a new sealed array. */
export function seal(key: Uint8Array, plain: Uint8Array, aad: Uint8Array): Uint8Array {
  const out = new Uint8Array(plain.length + 16);
  aeadSeal(key, 0, plain, aad, out);
  return out;
}

/** Convenience for handshake fields: returns the plaintext or undefined. */
export function open(key: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array | undefined {
  if (sealed.length < 16) return undefined;
  const out = new Uint8Array(sealed.length - 16);
  return aeadOpen(key, 0, sealed, aad, out) ? out : undefined;
}

export function xaeadSeal(
  key: Uint8Array,
  nonce24: Uint8Array,
  plain: Uint8Array,
  aad: Uint8Array,
) {
  return xchacha20poly1305(key, nonce24, aad).encrypt(plain);
}

export function xaeadOpen(
  key: Uint8Array,
  nonce24: Uint8Array,
  sealed: Uint8Array,
  aad: Uint8Array,
): Uint8Array | undefined {
  try {
    return xchacha20poly1305(key, nonce24, aad).decrypt(sealed);
  } catch {
    return undefined;
  }
}

/** X25519; undefined for a low-order public key (all-zero shared secret), which peers reject. */
export function dh(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array | undefined {
  try {
    const shared = x25519Backend().shared(privateKey, publicKey);
    let acc = 0;
    for (const b of shared) acc |= b;
    return acc === 0 ? undefined : shared;
  } catch {
    return undefined;
  }
}

export function dhPublic(privateKey: Uint8Array): Uint8Array {
  return x25519Backend().publicKey(privateKey);
}

/** A fresh clamped X25519 secret from `random` (RFC 7748 5). */
export function dhGenerate(random: (n: number) => Uint8Array): Uint8Array {
  const k = random(32);
  k[0]! &= 248;
  k[31]! &= 127;
  k[31]! |= 64;
  return k;
}

/**
 * TAI64N of a wall-clock time in milliseconds: 8 bytes of 2^62 + 10 + seconds, then nanoseconds,
 * both big-endian. Nanoseconds are rounded down to 2^24 ns (~16.8 ms) like wireguard-go, so the
 * timestamp does not give away a precise clock to whoever can decrypt it.
 */
export function tai64n(wallMs: number): Uint8Array {
  const out = new Uint8Array(12);
  const view = new DataView(out.buffer);
  const seconds = Math.floor(wallMs / 1000);
  const nanos = Math.floor((wallMs - seconds * 1000) * 1e6) & ~0xffffff;
  view.setBigUint64(0, 0x4000000000000000n + 10n + BigInt(seconds));
  view.setUint32(8, nanos >>> 0);
  return out;
}

/** Lexicographic comparison of equal-length byte strings (TAI64N compares this way). */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length && i < b.length; i++) {
    if (a[i] !== b[i]) return a[i]! < b[i]! ? -1 : 1;
  }
  return a.length - b.length;
}

/** Constant-time equality for MACs and keys. */
export function equalConstantTime(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let acc = 0;
  for (let i = 0; i < a.length; i++) acc |= a[i]! ^ b[i]!;
  return acc === 0;
}

export { EMPTY };
