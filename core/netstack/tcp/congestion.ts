/**
 * Congestion control: slow start and congestion avoidance (RFC 5681 3.1) with appropriate byte
 * counting (RFC 3465), fast recovery with NewReno's partial-ACK rules (RFC 6582) or, when SACK
 * is on, the conservative pipe-based recovery of RFC 6675 (no window inflation), and the
 * timeout response (RFC 5681 (4)-(5)). With SACK, cwnd during recovery follows Proportional
 * Rate Reduction (RFC 6937): a burst of losses then neither stalls the sender (as halving at
 * once with a pipe far above ssthresh would) nor lets it send a burst (as pipe collapsing far
 * below ssthresh would). The connection decides when each event happens and computes the
 * pipe; this class only holds `cwnd` and `ssthresh` and applies the rules.
 *
 * @module
 */
import { INITIAL_WINDOW_BYTES, INITIAL_WINDOW_SEGMENTS } from "./constants.ts";

export class NewReno {
  cwnd: number;
  /** RFC 5681 3.1: initially arbitrarily high. */
  ssthresh = Infinity;
  /** cwnd never grows past this, so it stays meaningful when the peer's window is the limit. */
  readonly maxCwnd: number;
  #acked = 0;
  /** RFC 6937 prr_delivered, prr_out and RecoverFS. */
  #prrDelivered = 0;
  #prrOut = 0;
  #recoverFs = 1;

  constructor(mss: number, maxCwnd: number) {
    this.cwnd = NewReno.initialWindow(mss);
    this.maxCwnd = Math.max(maxCwnd, this.cwnd);
  }

  /** RFC 6928 2. */
  static initialWindow(mss: number): number {
    return Math.min(INITIAL_WINDOW_SEGMENTS * mss, Math.max(2 * mss, INITIAL_WINDOW_BYTES));
  }

  /** The MSS changed before any data was sent (handshake done): restart from the initial window. */
  resetInitial(mss: number): void {
    this.cwnd = NewReno.initialWindow(mss);
  }

  /** New data acknowledged outside recovery. */
  onAck(acked: number, mss: number): void {
    if (this.cwnd < this.ssthresh) {
      // RFC 5681 (2) with RFC 3465 L = 1: at most one MSS per ACK.
      this.cwnd += Math.min(acked, mss);
    } else {
      // RFC 5681 3.1 / RFC 3465 2.1: one MSS per cwnd of acknowledged bytes.
      this.#acked += acked;
      if (this.#acked >= this.cwnd) {
        this.#acked -= this.cwnd;
        this.cwnd += mss;
      }
    }
    if (this.cwnd > this.maxCwnd) this.cwnd = this.maxCwnd;
  }

  /** RFC 5681 (4) / RFC 6582 3.2 step 2 / RFC 6675 5 step 4. */
  enterRecovery(flight: number, mss: number, sack: boolean): void {
    this.ssthresh = Math.max(Math.floor(flight / 2), 2 * mss);
    this.cwnd = sack ? this.ssthresh : this.ssthresh + 3 * mss;
    this.#acked = 0;
  }

  /** RFC 6937 3: recovery begins with `flight` (RecoverFS) outstanding. */
  prrStart(flight: number): void {
    this.#prrDelivered = 0;
    this.#prrOut = 0;
    this.#recoverFs = Math.max(flight, 1);
  }

  /** RFC 6937 3: bytes sent (new or again) during recovery. */
  prrSent(bytes: number): void {
    this.#prrOut += bytes;
  }

  /**
   * RFC 6937 3, on each ACK in recovery: `delivered` is DeliveredData (the change in SND.UNA
   * plus the change in SACKed bytes), `pipe` the pipe after the ACK. While the pipe is above
   * ssthresh, send in proportion to what is delivered so that the pipe ends at ssthresh one
   * RTT later; below it, slow-start back up (the SSRB bound: at most one MSS more than was
   * delivered).
   */
  prrAck(delivered: number, pipe: number, mss: number): void {
    this.#prrDelivered += delivered;
    let sndcnt: number;
    if (pipe > this.ssthresh) {
      sndcnt = Math.ceil(this.#prrDelivered * this.ssthresh / this.#recoverFs) - this.#prrOut;
    } else {
      const limit = Math.max(this.#prrDelivered - this.#prrOut, delivered) + mss;
      sndcnt = Math.min(this.ssthresh - pipe, limit);
    }
    this.cwnd = pipe + Math.max(sndcnt, 0);
  }

  /** RFC 6582 3.2 step 3: each further duplicate ACK inflates cwnd (not with SACK, RFC 6675). */
  onDupAckInRecovery(mss: number, sack: boolean): void {
    if (!sack) this.cwnd += mss;
  }

  /** RFC 6582 3.2 step 5: deflate by what was acknowledged, add back one MSS if it was a full one. */
  onPartialAck(acked: number, mss: number, sack: boolean): void {
    if (sack) return;
    this.cwnd = Math.max(this.cwnd - acked + (acked >= mss ? mss : 0), mss);
  }

  /**
   * RFC 8985 7.4.2: a loss probe repaired a loss at the tail that no recovery saw; respond as
   * a fast recovery would have, by halving the window.
   */
  onTailLossRepaired(mss: number): void {
    this.ssthresh = Math.max(Math.floor(this.cwnd / 2), 2 * mss);
    this.cwnd = this.ssthresh;
    this.#acked = 0;
  }

  /** RFC 6582 3.2 step 6 option (1): cwnd = min(ssthresh, FlightSize + MSS). */
  exitRecovery(flight: number, mss: number): void {
    this.cwnd = Math.max(Math.min(this.ssthresh, flight + mss), mss);
  }

  /** RFC 5681 (4)-(5): ssthresh only on the first timeout of an episode; cwnd = 1 MSS (LW). */
  onTimeout(flight: number, mss: number, first: boolean): void {
    if (first) this.ssthresh = Math.max(Math.floor(flight / 2), 2 * mss);
    this.cwnd = mss;
    this.#acked = 0;
  }

  /** RFC 5681 4.1: after an idle period longer than the RTO, restart from the initial window. */
  restartAfterIdle(mss: number): void {
    this.cwnd = Math.min(this.cwnd, NewReno.initialWindow(mss));
  }
}
