/**
 * A small sorted set of disjoint, non-adjacent `[start, end)` ranges of stream offsets, with a
 * fixed maximum count so that a peer can not make it grow. The receiver keeps its out-of-order
 * data in one (RFC 9293 3.10.7.4 "segments with higher beginning sequence numbers may be held"),
 * the sender its SACK scoreboard in another (RFC 2018, RFC 6675 2).
 *
 * Offsets are stream offsets (plain numbers that do not wrap), not sequence numbers. Storage is
 * allocated at the first range and given back by {@link RangeSet.release}: most connections never
 * see a hole or a SACK, and an idle one should hold no memory for them.
 *
 * @module
 */

const NONE = new Float64Array(0);

export class RangeSet {
  readonly maxRanges: number;
  #starts: Float64Array = NONE;
  #ends: Float64Array = NONE;
  #count = 0;
  #total = 0;

  constructor(maxRanges: number) {
    this.maxRanges = maxRanges;
  }

  /** Bytes of storage held. */
  get allocated(): number {
    return this.#starts.byteLength + this.#ends.byteLength;
  }

  /** Gives the storage back; only when the set is empty. */
  release(): void {
    if (this.#count !== 0) return;
    this.#starts = this.#ends = NONE;
  }

  get count(): number {
    return this.#count;
  }

  /** Bytes covered by all ranges. */
  get total(): number {
    return this.#total;
  }

  start(i: number): number {
    return this.#starts[i]!;
  }

  end(i: number): number {
    return this.#ends[i]!;
  }

  /** End of the last range, or -Infinity when empty. */
  get highest(): number {
    return this.#count === 0 ? -Infinity : this.#ends[this.#count - 1]!;
  }

  clear(): void {
    this.#count = 0;
    this.#total = 0;
  }

  /**
   * Adds `[s, e)`, merging with ranges it overlaps or touches. Returns false, changing nothing,
   * when it would need a new slot and all are taken.
   */
  add(s: number, e: number): boolean {
    if (e <= s) return true;
    if (this.#starts.length === 0) {
      this.#starts = new Float64Array(this.maxRanges);
      this.#ends = new Float64Array(this.maxRanges);
    }
    const starts = this.#starts, ends = this.#ends;
    const n = this.#count;
    // First range that ends at or after s (could merge), and first that starts after e.
    let lo = 0;
    while (lo < n && ends[lo]! < s) lo++;
    let hi = lo;
    while (hi < n && starts[hi]! <= e) hi++;
    if (lo === hi) {
      // Disjoint: insert at lo.
      if (n === this.maxRanges) return false;
      for (let k = n; k > lo; k--) {
        starts[k] = starts[k - 1]!;
        ends[k] = ends[k - 1]!;
      }
      starts[lo] = s;
      ends[lo] = e;
      this.#count = n + 1;
      this.#total += e - s;
      return true;
    }
    // Merge ranges lo..hi-1 with [s, e) into slot lo.
    let covered = 0;
    for (let k = lo; k < hi; k++) covered += ends[k]! - starts[k]!;
    const ns = Math.min(s, starts[lo]!), ne = Math.max(e, ends[hi - 1]!);
    starts[lo] = ns;
    ends[lo] = ne;
    const removed = hi - lo - 1;
    if (removed > 0) {
      for (let k = lo + 1; k + removed < n; k++) {
        starts[k] = starts[k + removed]!;
        ends[k] = ends[k + removed]!;
      }
      this.#count = n - removed;
    }
    this.#total += ne - ns - covered;
    return true;
  }

  /** Removes everything below `off`, cutting a range that straddles it. */
  removeBelow(off: number): void {
    const starts = this.#starts, ends = this.#ends;
    const n = this.#count;
    let k = 0;
    while (k < n && ends[k]! <= off) {
      this.#total -= ends[k]! - starts[k]!;
      k++;
    }
    if (k < n && starts[k]! < off) {
      this.#total -= off - starts[k]!;
      starts[k] = off;
    }
    if (k > 0) {
      for (let j = 0; j + k < n; j++) {
        starts[j] = starts[j + k]!;
        ends[j] = ends[j + k]!;
      }
      this.#count = n - k;
    }
  }

  /**
   * Joins `[-∞, off)` with the leading ranges it reaches: removes them and returns the end of
   * the joined run (`off` when the first range starts after it).
   */
  takeFrontThrough(off: number): number {
    while (this.#count > 0 && this.#starts[0]! <= off) {
      off = Math.max(off, this.#ends[0]!);
      this.removeBelow(off);
    }
    return off;
  }

  /** Index of the range holding `off`, or -1. */
  indexOf(off: number): number {
    for (let k = 0; k < this.#count; k++) {
      if (this.#starts[k]! > off) return -1;
      if (off < this.#ends[k]!) return k;
    }
    return -1;
  }

  /** The first offset at or after `off` that no range covers. */
  nextUncovered(off: number): number {
    for (let k = 0; k < this.#count; k++) {
      if (this.#starts[k]! > off) break;
      if (off < this.#ends[k]!) off = this.#ends[k]!;
    }
    return off;
  }

  /** The start of the first range that begins after `off`, or Infinity. */
  nextStartAfter(off: number): number {
    for (let k = 0; k < this.#count; k++) if (this.#starts[k]! > off) return this.#starts[k]!;
    return Infinity;
  }

  /** Bytes of `[s, e)` that the ranges cover. */
  coveredIn(s: number, e: number): number {
    let sum = 0;
    for (let k = 0; k < this.#count; k++) {
      const a = Math.max(s, this.#starts[k]!), b = Math.min(e, this.#ends[k]!);
      if (b > a) sum += b - a;
      if (this.#starts[k]! >= e) break;
    }
    return sum;
  }
}
