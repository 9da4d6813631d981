/**
 * Sequence number arithmetic modulo 2^32 (RFC 9293 3.4). Two sequence numbers compare by their
 * signed 32-bit difference, which is right as long as they lie within 2^31 of each other —
 * windows are at most 2^30 (RFC 7323 2.3), so they always do.
 *
 * @module
 */

/** `a - b` as a signed 32-bit number. */
export function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}

/** `a + n` modulo 2^32 (n may be any safe integer, negative too). */
export function seqAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}

export function seqLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}

export function seqLe(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}

export function seqGt(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}

export function seqGe(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0;
}
