/**
 * The Internet checksum (RFC 1071) and the pseudo-headers TCP, UDP and ICMPv6 add to it
 * (RFC 9293 3.1, RFC 768, RFC 8200 8.1). Sums are kept as unfolded 32-bit-safe numbers so that a
 * caller can add a pseudo-header and a payload without building a joined buffer.
 *
 * @module
 */

/** Adds the 16-bit big-endian words of `buf[start, end)` to `sum` (unfolded). */
export function sumWords(buf: Uint8Array, start = 0, end = buf.length, sum = 0): number {
  let i = start;
  // Folding every 2^15 words keeps the running sum inside a safe small integer.
  while (i + 1 < end) {
    sum += (buf[i]! << 8) | buf[i + 1]!;
    i += 2;
    if ((i & 0xffff) === 0) sum = (sum & 0xffff) + (sum >>> 16);
  }
  if (i < end) sum += buf[i]! << 8; // RFC 1071: an odd byte is padded with zero
  return sum;
}

/** Folds a running sum to 16 bits and complements it. */
export function finish(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

/** The pseudo-header sum for TCP/UDP/ICMPv6 over IPv4 or IPv6 (addresses of equal family). */
export function pseudoHeaderSum(
  src: Uint8Array,
  dst: Uint8Array,
  protocol: number,
  length: number,
): number {
  let sum = sumWords(src) + sumWords(dst) + protocol;
  // IPv6 carries a 32-bit upper-layer length; IPv4 a 16-bit one. Both add the same way here.
  sum += (length >>> 16) + (length & 0xffff);
  return sum;
}

/** Checksum of a whole buffer, as used in the IPv4 header and ICMPv4. */
export function internetChecksum(buf: Uint8Array, start = 0, end = buf.length): number {
  return finish(sumWords(buf, start, end));
}
