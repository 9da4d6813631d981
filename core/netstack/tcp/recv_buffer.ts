/**
 * The receive buffer: in-order bytes waiting for the reader, and out-of-order bytes already
 * placed where they belong (RFC 9293 3.10.7.4: segments beyond RCV.NXT "may be held for later
 * processing"). Memory is bounded twice: by `capacity` bytes, and by a fixed number of
 * out-of-order ranges. Offsets are stream offsets: byte `k` of the peer's data is offset `k`.
 *
 * The free space is what the connection advertises as its window, so a slow reader closes it.
 *
 * @module
 */
import { ByteRing } from "./ring.ts";
import { RangeSet } from "./range_set.ts";

export class ReceiveBuffer {
  readonly #ring: ByteRing;
  /** Out-of-order ranges, all beyond {@link end}. */
  readonly ranges: RangeSet;
  /** Stream offset of the first unread byte. */
  #start = 0;

  constructor(capacity: number, maxRanges: number) {
    this.#ring = new ByteRing(capacity);
    this.ranges = new RangeSet(maxRanges);
  }

  get capacity(): number {
    return this.#ring.capacity;
  }

  /** Stream offset of the first unread byte. */
  get start(): number {
    return this.#start;
  }

  /** Stream offset just past the in-order data (RCV.NXT as an offset). */
  get end(): number {
    return this.#start + this.#ring.length;
  }

  /** In-order bytes the reader can take. */
  get readable(): number {
    return this.#ring.length;
  }

  /** Room not taken by unread in-order data: the most the window may offer. */
  get free(): number {
    return this.#ring.free;
  }

  /** Stream offset one past the last byte that fits. */
  get limit(): number {
    return this.#start + this.#ring.capacity;
  }

  /**
   * Stores `data` found at stream offset `off`. Bytes before {@link end} (already received) and
   * beyond {@link limit} are cut. Returns how far the in-order end advanced (0 for out-of-order
   * data), or -1 when the data was out of order and a new range was needed but none is free
   * (nothing stored).
   */
  insert(off: number, data: Uint8Array): number {
    const end = this.end;
    let s = off, e = off + data.length;
    if (s < end) s = end;
    if (e > this.limit) e = this.limit;
    if (e <= s) return 0;
    const bytes = s === off && e - s === data.length ? data : data.subarray(s - off, e - off);
    if (s > end) {
      if (!this.ranges.add(s, e)) return -1;
      this.#ring.writeAt(s - this.#start, bytes);
      return 0;
    }
    this.#ring.writeAt(s - this.#start, bytes);
    const newEnd = this.ranges.takeFrontThrough(e);
    this.#ring.commit(newEnd - end);
    return newEnd - end;
  }

  /** Copies up to `into.length` in-order bytes out; returns the count. */
  read(into: Uint8Array): number {
    const n = this.#ring.read(into);
    this.#start += n;
    return n;
  }

  /** Forgets out-of-order data (after a FIN: nothing can follow it). */
  dropOutOfOrder(): void {
    this.ranges.clear();
  }

  /** Frees the storage once everything was read. */
  releaseIfEmpty(): void {
    this.ranges.release();
    if (this.#ring.length === 0 && this.ranges.count === 0) this.#ring.release();
  }

  /** Bytes of storage held (the ring and the out-of-order ranges). */
  get allocated(): number {
    return this.#ring.allocated + this.ranges.allocated;
  }
}
