/**
 * A bounded byte queue over one `Uint8Array`, used for both send and receive buffers. Storage is
 * allocated on first use and doubled when needed, up to `capacity`, so an idle or half-open
 * connection costs no buffer memory. Bytes can be written ahead of the readable end (out-of-order
 * data) with {@link ByteRing.writeAt} and made readable with {@link ByteRing.commit}.
 *
 * @module
 */

const EMPTY = new Uint8Array(0);
/**
 * The first allocation. Small: a connection that exchanges a few bytes and goes quiet (most
 * keep-alive connections) would otherwise allocate 4 KiB per direction, and what malloc gave a
 * freed ring stays in the process's RSS (docs/performance.md, "Memory per idle connection").
 */
const INITIAL_ALLOCATION = 512;

export class ByteRing {
  readonly capacity: number;
  #buf: Uint8Array = EMPTY;
  #head = 0;
  #len = 0;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`Cannot make a buffer of ${capacity} bytes`);
    }
    this.capacity = capacity;
  }

  /** Readable bytes. */
  get length(): number {
    return this.#len;
  }

  /** Bytes that can still be queued. */
  get free(): number {
    return this.capacity - this.#len;
  }

  /** Bytes of storage currently allocated. */
  get allocated(): number {
    return this.#buf.length;
  }

  /** Makes storage for offsets `[0, size)` from the head, keeping the bytes already there. */
  #reserve(size: number): void {
    const old = this.#buf;
    if (size <= old.length) return;
    let n = Math.max(INITIAL_ALLOCATION, old.length);
    while (n < size) n *= 2;
    const next = new Uint8Array(Math.min(n, this.capacity));
    if (old.length > 0) {
      // Unwrap: the byte at the head lands at 0, so offsets from the head are unchanged.
      const first = old.subarray(this.#head);
      next.set(first);
      next.set(old.subarray(0, this.#head), first.length);
    }
    this.#buf = next;
    this.#head = 0;
  }

  /**
   * Copies `src` to `offset` bytes past the head, without making it readable. The caller keeps
   * `offset + src.length <= capacity`.
   */
  writeAt(offset: number, src: Uint8Array): void {
    const n = src.length;
    if (n === 0) return;
    if (offset < 0 || offset + n > this.capacity) {
      throw new RangeError(`Cannot write ${n} bytes at ${offset} into ${this.capacity}`);
    }
    this.#reserve(offset + n);
    const buf = this.#buf, size = buf.length;
    let pos = this.#head + offset;
    if (pos >= size) pos -= size;
    const first = Math.min(n, size - pos);
    buf.set(first === n ? src : src.subarray(0, first), pos);
    if (first < n) buf.set(src.subarray(first), 0);
  }

  /** Makes `n` more bytes (already written with `writeAt`) readable. */
  commit(n: number): void {
    this.#len += n;
  }

  /** Queues as much of `src` as fits; returns how many bytes were taken. */
  push(src: Uint8Array): number {
    const n = Math.min(src.length, this.free);
    if (n === 0) return 0;
    this.writeAt(this.#len, n === src.length ? src : src.subarray(0, n));
    this.#len += n;
    return n;
  }

  /** Copies `n` bytes starting `offset` past the head into `dst` at `dstOffset`. */
  copyOut(offset: number, dst: Uint8Array, dstOffset: number, n: number): void {
    if (n === 0) return;
    const buf = this.#buf, size = buf.length;
    let pos = this.#head + offset;
    if (pos >= size) pos -= size;
    const first = Math.min(n, size - pos);
    dst.set(buf.subarray(pos, pos + first), dstOffset);
    if (first < n) dst.set(buf.subarray(0, n - first), dstOffset + first);
  }

  /** Drops `n` readable bytes from the head. */
  consume(n: number): void {
    if (n <= 0) return;
    this.#len -= n;
    this.#head += n;
    if (this.#head >= this.#buf.length) this.#head -= this.#buf.length;
  }

  /** Copies readable bytes into `dst` and consumes them; returns the count. */
  read(dst: Uint8Array): number {
    const n = Math.min(dst.length, this.#len);
    this.copyOut(0, dst, 0, n);
    this.consume(n);
    return n;
  }

  /** Frees the storage; only when nothing is stored. */
  release(): void {
    this.#buf = EMPTY;
    this.#head = 0;
    this.#len = 0;
  }
}
