/**
 * One session's transport keys (paper 5.4.5) with its counters and replay window. A peer holds
 * up to three: the previous one (still accepted while the other side switches), the current one,
 * and, on the responder, the next one, which becomes current when the initiator first uses it.
 *
 * @module
 */
import { ReplayWindow } from "./replay.ts";

export class Keypair {
  /** The next counter to send with. */
  sendCounter = 0;
  readonly replay: ReplayWindow = new ReplayWindow();

  constructor(
    readonly sendKey: Uint8Array,
    readonly receiveKey: Uint8Array,
    readonly isInitiator: boolean,
    readonly createdAt: number,
    /** Our index: incoming transport messages name it as their receiver. */
    readonly localIndex: number,
    /** The peer's index: our transport messages carry it. */
    readonly remoteIndex: number,
  ) {}

  /** Erases the keys in memory (paper 6.3: keys are zeroed after 3 × Reject-After-Time). */
  wipe(): void {
    this.sendKey.fill(0);
    this.receiveKey.fill(0);
  }
}

export interface Keypairs {
  previous?: Keypair;
  current?: Keypair;
  next?: Keypair;
}
