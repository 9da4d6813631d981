/**
 * The retransmission timeout (RFC 6298): smoothed RTT and its variance from samples, the RTO
 * computed from them with a floor and a ceiling, and exponential backoff. Which samples are
 * valid (Karn's rule, RFC 6298 3; timestamps, RFC 7323 4) is the connection's business.
 *
 * @module
 */
import { CLOCK_GRANULARITY, INITIAL_RTO, MAX_RTO, MIN_RTO } from "./constants.ts";

export class RttEstimator {
  readonly minRto: number;
  readonly maxRto: number;
  /** Smoothed RTT; 0 until the first sample. */
  srtt = 0;
  rttvar = 0;
  #hasSample = false;
  /** RTO before backoff. */
  #base = INITIAL_RTO;
  #backoff = 0;

  constructor(minRto = MIN_RTO, maxRto = MAX_RTO) {
    this.minRto = minRto;
    this.maxRto = maxRto;
  }

  get hasSample(): boolean {
    return this.#hasSample;
  }

  /** Times the RTO was doubled since the last sample. */
  get backoffCount(): number {
    return this.#backoff;
  }

  /** RTO without backoff. */
  get baseRto(): number {
    return this.#base;
  }

  /** The current RTO: base, doubled per backoff (RFC 6298 5.5), at most maxRto. */
  get rto(): number {
    return Math.min(this.#base * 2 ** this.#backoff, this.maxRto);
  }

  /** Takes one RTT measurement `r` (ms) and clears the backoff. */
  sample(r: number): void {
    if (r < 0) return;
    if (!this.#hasSample) {
      // RFC 6298 2.2: the first measurement.
      this.srtt = r;
      this.rttvar = r / 2;
      this.#hasSample = true;
    } else {
      // RFC 6298 2.3: beta = 1/4, alpha = 1/8, RTTVAR updated with the old SRTT.
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - r);
      this.srtt = 0.875 * this.srtt + 0.125 * r;
    }
    const rto = this.srtt + Math.max(CLOCK_GRANULARITY, 4 * this.rttvar);
    // RFC 6298 2.4 / 2.5: floor and ceiling (our floor is documented in constants.ts).
    this.#base = Math.min(Math.max(rto, this.minRto), this.maxRto);
    this.#backoff = 0;
  }

  /** RFC 6298 5.5: the timer expired; double the RTO. */
  backoff(): void {
    if (this.#base * 2 ** this.#backoff < this.maxRto) this.#backoff++;
  }

  /** Keeps the estimate but forgets the backoff (new data was acknowledged, RFC 6298 5.7 note). */
  clearBackoff(): void {
    this.#backoff = 0;
  }
}
