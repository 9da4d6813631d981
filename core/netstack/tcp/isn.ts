/**
 * Initial sequence numbers as RFC 6528 3 asks: ISN = M + F(localip, localport, remoteip,
 * remoteport, secretkey), where M is a timer ticking every 4 µs and F a keyed pseudorandom
 * function. F is SipHash-2-4 (Aumasson and Bernstein, 2012), written here from the paper; the
 * key comes from the layer's random source once. Connections to different peers get unrelated
 * sequence spaces, and a reused 4-tuple gets ISNs that keep moving forward with time.
 *
 * The 64-bit arithmetic uses BigInt: it runs once per connection, not per segment.
 *
 * @module
 */
import type { IpBytes } from "../../wire/addr.ts";

const MASK64 = 0xffff_ffff_ffff_ffffn;

function rotl(x: bigint, b: bigint): bigint {
  return ((x << b) | (x >> (64n - b))) & MASK64;
}

function readLe64(b: Uint8Array, o: number): bigint {
  let v = 0n;
  for (let i = 7; i >= 0; i--) v = (v << 8n) | BigInt(b[o + i]!);
  return v;
}

/** SipHash-2-4 of `msg` under a 16-byte `key`, as an unsigned 64-bit BigInt. */
export function sipHash24(key: Uint8Array, msg: Uint8Array): bigint {
  if (key.length !== 16) throw new RangeError(`Cannot use a ${key.length}-byte SipHash key`);
  const k0 = readLe64(key, 0), k1 = readLe64(key, 8);
  let v0 = k0 ^ 0x736f6d6570736575n;
  let v1 = k1 ^ 0x646f72616e646f6dn;
  let v2 = k0 ^ 0x6c7967656e657261n;
  let v3 = k1 ^ 0x7465646279746573n;
  const round = () => {
    v0 = (v0 + v1) & MASK64;
    v1 = rotl(v1, 13n);
    v1 ^= v0;
    v0 = rotl(v0, 32n);
    v2 = (v2 + v3) & MASK64;
    v3 = rotl(v3, 16n);
    v3 ^= v2;
    v0 = (v0 + v3) & MASK64;
    v3 = rotl(v3, 21n);
    v3 ^= v0;
    v2 = (v2 + v1) & MASK64;
    v1 = rotl(v1, 17n);
    v1 ^= v2;
    v2 = rotl(v2, 32n);
  };
  const whole = msg.length - (msg.length % 8);
  for (let i = 0; i < whole; i += 8) {
    const m = readLe64(msg, i);
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  }
  // The last block: the remaining bytes, and the message length mod 256 in the top byte.
  let last = BigInt(msg.length & 0xff) << 56n;
  for (let i = whole; i < msg.length; i++) last |= BigInt(msg[i]!) << BigInt(8 * (i - whole));
  v3 ^= last;
  round();
  round();
  v0 ^= last;
  v2 ^= 0xffn;
  round();
  round();
  round();
  round();
  return (v0 ^ v1 ^ v2 ^ v3) & MASK64;
}

/** Generates ISNs for one layer (one secret key). */
export class IsnGenerator {
  readonly #key: Uint8Array;

  /** `key`: 16 random bytes. */
  constructor(key: Uint8Array) {
    this.#key = key.slice();
  }

  /** The ISN for a connection at time `now` (ms). */
  next(
    now: number,
    local: IpBytes,
    localPort: number,
    remote: IpBytes,
    remotePort: number,
  ): number {
    const msg = new Uint8Array(local.length + remote.length + 4);
    msg.set(local, 0);
    msg.set(remote, local.length);
    const p = local.length + remote.length;
    msg[p] = localPort >> 8;
    msg[p + 1] = localPort;
    msg[p + 2] = remotePort >> 8;
    msg[p + 3] = remotePort;
    const f = Number(sipHash24(this.#key, msg) & 0xffff_ffffn);
    // RFC 6528 3: M is a 4-microsecond timer.
    const m = Math.floor(now * 250);
    return (m + f) >>> 0;
  }
}
