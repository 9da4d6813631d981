/**
 * What RACK (RFC 8985 5.2) needs to remember per segment in flight: its range of stream
 * offsets, when it was last (re)transmitted, whether it was SACKed, deemed lost or ever
 * retransmitted, and how many of its bytes still wait to be sent again (a lost segment may go
 * out again in pieces when the segment size shrank, and the pipe must count only the rest). Kept
 * as parallel typed arrays in a ring, in offset order (new data is only ever appended at
 * SND.NXT), so the per-packet path allocates nothing; the ring is allocated at
 * the first segment and doubles when the flight outgrows it, which a connection does a handful
 * of times at most, and {@link SendLog.release} gives it back when the connection goes idle.
 *
 * Indices passed to the accessors are logical: 0 is the oldest record (the one at SND.UNA).
 *
 * @module
 */

/** Record flags. */
export const Seg = {
  /** Every byte is covered by the SACK scoreboard. */
  SACKED: 1,
  /** Deemed lost and not yet sent again (RFC 8985 "Segment.lost"). */
  LOST: 2,
  /** Sent more than once, so an ACK of it is ambiguous (RFC 8985 6.2 step 2). */
  RETRANS: 4,
} as const;

const NONE = new Float64Array(0);
const NO_FLAGS = new Uint8Array(0);

export class SendLog {
  // Empty until the first segment (and again after release): see the module doc.
  #start = NONE;
  #end = NONE;
  #ts = NONE;
  #flags = NO_FLAGS;
  #lost = NONE;
  #head = 0;
  #count = 0;
  #mask = -1;

  /** Records the first allocation holds; the ring then doubles as the flight needs. */
  readonly #initial: number;

  constructor(initialCapacity = 8) {
    let cap = 1;
    while (cap < initialCapacity) cap <<= 1;
    this.#initial = cap;
  }

  /** Bytes of storage held. */
  get allocated(): number {
    return (this.#mask + 1) * 33;
  }

  /** Gives the storage back; only when no segment is in flight. */
  release(): void {
    if (this.#count !== 0) return;
    this.#start =
      this.#end =
      this.#ts =
      this.#lost =
        NONE;
    this.#flags = NO_FLAGS;
    this.#head = 0;
    this.#mask = -1;
  }

  get count(): number {
    return this.#count;
  }

  start(i: number): number {
    return this.#start[(this.#head + i) & this.#mask]!;
  }

  end(i: number): number {
    return this.#end[(this.#head + i) & this.#mask]!;
  }

  ts(i: number): number {
    return this.#ts[(this.#head + i) & this.#mask]!;
  }

  flags(i: number): number {
    return this.#flags[(this.#head + i) & this.#mask]!;
  }

  /** Bytes of a LOST record not yet sent again. */
  lost(i: number): number {
    return this.#lost[(this.#head + i) & this.#mask]!;
  }

  setLost(i: number, bytes: number): void {
    this.#lost[(this.#head + i) & this.#mask] = bytes;
  }

  setTs(i: number, ts: number): void {
    this.#ts[(this.#head + i) & this.#mask] = ts;
  }

  setFlags(i: number, flags: number): void {
    this.#flags[(this.#head + i) & this.#mask] = flags;
  }

  clear(): void {
    this.#head = 0;
    this.#count = 0;
  }

  /** Appends the segment `[start, end)` sent at `ts` (start must be the last record's end). */
  push(start: number, end: number, ts: number): void {
    if (this.#count > this.#mask) this.#grow();
    const k = (this.#head + this.#count) & this.#mask;
    this.#start[k] = start;
    this.#end[k] = end;
    this.#ts[k] = ts;
    this.#flags[k] = 0;
    this.#lost[k] = 0;
    this.#count++;
  }

  /** Drops the oldest record. */
  shift(): void {
    this.#head = (this.#head + 1) & this.#mask;
    this.#count--;
  }

  /** Cuts the oldest record so that it begins at `off` (a cumulative ACK inside it). */
  trimFront(off: number): void {
    this.#start[this.#head] = off;
  }

  /** The index of the first record that ends after `off` (count when none does). */
  find(off: number): number {
    let lo = 0, hi = this.#count;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.end(mid) <= off) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  #grow(): void {
    const cap = Math.max(this.#initial, (this.#mask + 1) * 2);
    const start = new Float64Array(cap), end = new Float64Array(cap);
    const ts = new Float64Array(cap), flags = new Uint8Array(cap), lost = new Float64Array(cap);
    for (let i = 0; i < this.#count; i++) {
      const k = (this.#head + i) & this.#mask;
      start[i] = this.#start[k]!;
      end[i] = this.#end[k]!;
      ts[i] = this.#ts[k]!;
      flags[i] = this.#flags[k]!;
      lost[i] = this.#lost[k]!;
    }
    this.#start = start;
    this.#end = end;
    this.#ts = ts;
    this.#flags = flags;
    this.#lost = lost;
    this.#head = 0;
    this.#mask = cap - 1;
  }
}
