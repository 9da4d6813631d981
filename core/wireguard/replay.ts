/**
 * The anti-replay sliding window of RFC 6479: a ring of 32-bit blocks, so advancing the window
 * clears whole blocks instead of shifting a bitmap. Checking is split from marking: the engine
 * checks before the (expensive) AEAD open and marks only after authentication succeeds, so a
 * forged packet can never move the window.
 *
 * @module
 */

const BlockBits = 32;
const RingBlocks = 64; // a power of two
const BlockMask = RingBlocks - 1;
/** Counters this far behind the newest are still accepted once (2016 packets). */
export const WindowSize = (RingBlocks - 1) * BlockBits;

export class ReplayWindow {
  #ring = new Uint32Array(RingBlocks);
  /** The newest counter accepted; -1 before the first. */
  #last = -1;

  /** True when `counter` would be accepted (not too old, not seen). */
  check(counter: number): boolean {
    if (counter > this.#last) return true;
    if (this.#last - counter >= WindowSize) return false;
    const block = Math.floor(counter / BlockBits) & BlockMask;
    return (this.#ring[block]! & (1 << (counter % BlockBits))) === 0;
  }

  /** Records `counter`; returns false if it was a replay or too old (and changes nothing). */
  accept(counter: number): boolean {
    if (!this.check(counter)) return false;
    if (counter > this.#last) {
      const oldBlock = this.#last < 0 ? -1 : Math.floor(this.#last / BlockBits);
      const newBlock = Math.floor(counter / BlockBits);
      // Clear the blocks the window slid over, at most the whole ring.
      const clear = Math.min(newBlock - oldBlock, RingBlocks);
      for (let i = 1; i <= clear; i++) this.#ring[(oldBlock + i) & BlockMask] = 0;
      this.#last = counter;
    }
    const block = Math.floor(counter / BlockBits) & BlockMask;
    this.#ring[block]! |= 1 << (counter % BlockBits);
    return true;
  }

  reset(): void {
    this.#ring.fill(0);
    this.#last = -1;
  }
}
