/**
 * A connection's deadlines, checked when the layer's tick reaches them (boringtun's way: times
 * in the TCB, no OS timer per event):
 *
 * - `rtxAt`: retransmission (RFC 6298 5.4-5.7, RFC 5681 3.1 (4)-(5)) or, sharing the slot as
 *   in Linux, the persist timer (RFC 9293 3.8.6.1; RFC 1122 4.2.2.17);
 * - `rackAt`: RACK's reordering timer (RFC 8985 6.3): a segment sent before one delivered
 *   becomes lost once the reordering window has passed;
 * - `tlpAt`: the probe timeout (RFC 8985 7): the tail of a flight may be lost;
 * - `ackAt`: the delayed ACK (RFC 5681 4.2);
 * - `keepAt`: keepalive (RFC 1122 4.2.3.6);
 * - `lifeAt`: TIME-WAIT's 2 MSL (RFC 9293 3.6.1), or FIN-WAIT-2 of a connection the user closed.
 *
 * @module
 */
import { MAX_RTO } from "./constants.ts";
import { connectionError, rackLossResponse } from "./input.ts";
import { canSendData, sendProbe, sendSyn, transmit } from "./output.ts";
import { forgetSacked, markLost, rackDetectLoss, resetRun, tlpFire } from "./rack.ts";
import { Recovery, RtxKind, State, type Tcb } from "./tcb.ts";

/** Runs whatever of `tcb`'s timers is due at `now`, then sends what is owed. */
export function onTimer(tcb: Tcb, now: number): void {
  if (tcb.lifeAt <= now) {
    // TIME-WAIT over (the user heard onClose when it began), or an abandoned FIN-WAIT-2.
    tcb.finish();
    return;
  }
  if (tcb.rtxAt <= now) {
    const kind = tcb.rtxKind;
    tcb.rtxAt = Infinity;
    tcb.rtxKind = RtxKind.NONE;
    if (kind === RtxKind.RETRANSMIT) retransmitTimeout(tcb, now);
    else if (kind === RtxKind.PERSIST) persistTimeout(tcb, now);
    if (tcb.state === State.CLOSED) return;
  }
  if (tcb.rackAt <= now) {
    tcb.rackAt = Infinity;
    if (canSendData(tcb.state) && rackDetectLoss(tcb, now)) rackLossResponse(tcb);
  }
  if (tcb.tlpAt <= now) {
    tcb.tlpAt = Infinity;
    if (canSendData(tcb.state)) tlpFire(tcb, now);
  }
  if (tcb.ackAt <= now) {
    tcb.ackAt = Infinity;
    tcb.ackNow = true;
  }
  if (tcb.keepAt <= now) {
    keepaliveTimeout(tcb, now);
    if (tcb.state === State.CLOSED) return;
  }
  transmit(tcb, now);
}

/** ETIMEDOUT, or the soft error ICMP reported meanwhile (as Linux reports it). */
function timedOut(tcb: Tcb): void {
  tcb.finish(connectionError(tcb.softError ?? "ETIMEDOUT"));
}

function retransmitTimeout(tcb: Tcb, now: number): void {
  const host = tcb.host;
  const st = tcb.state;
  if (st === State.SYN_SENT || st === State.SYN_RECEIVED) {
    const passive = tcb.listener !== undefined;
    const max = passive ? host.limits.synAckRetries : host.limits.synRetries;
    if (tcb.retries >= max) {
      // A half-open connection nobody holds is dropped quietly; a connect() times out.
      if (passive) tcb.finish();
      else timedOut(tcb);
      return;
    }
    tcb.retries++;
    tcb.rtt.backoff();
    host.stats.timeouts++;
    host.stats.retransmits++;
    tcb.rttOff = -1; // RFC 6298 3 (Karn)
    sendSyn(tcb, now);
    tcb.rtxKind = RtxKind.RETRANSMIT;
    tcb.rtxAt = now + tcb.rtt.rto;
    return;
  }
  if (!canSendData(st) || tcb.flight === 0) return;
  if (tcb.sndWnd === 0) {
    // The peer shrank its window to nothing: our retransmissions are zero-window probes now,
    // and a peer that answers them may keep its window closed (RFC 1122 4.2.2.17). Like Linux,
    // give up only when it has said nothing for MAX_RTO.
    if (now - tcb.lastRecvAt > MAX_RTO) {
      timedOut(tcb);
      return;
    }
  } else if (tcb.retries >= host.limits.maxRetransmits) {
    timedOut(tcb);
    return;
  }
  host.stats.timeouts++;
  // RFC 5681 (4): ssthresh only when this data was not already sent again by the timer.
  const first = tcb.retries === 0;
  tcb.retries++;
  // RFC 6298 5.5.
  tcb.rtt.backoff();
  tcb.cc.onTimeout(tcb.flight, tcb.smss, first);
  // RFC 2018 8: the receiver may have discarded what it SACKed. Trust the scoreboard for one
  // timeout, not for two in a row.
  if (tcb.retries > 1) {
    tcb.scoreboard.clear();
    forgetSacked(tcb);
  }
  // RFC 6582 3.2: after a timeout, recover = the highest sequence sent; everything in flight is
  // deemed lost and sent again as cwnd allows, skipping what was SACKed (RFC 8985 6.3 marks
  // the same). RACK goes on watching the retransmissions; the probe is over.
  tcb.recovery = Recovery.TIMEOUT;
  tcb.recoverOff = tcb.sndNxtOff;
  tcb.dupAcks = 0;
  resetRun(tcb);
  markLost(tcb, tcb.sndUnaOff, tcb.sndNxtOff);
  tcb.lossMarkedOff = tcb.sndNxtOff;
  tcb.rackAt = tcb.tlpAt = Infinity;
  tcb.tlpEndOff = -1;
  tcb.tlpNewData = false;
  tcb.forceRtx = true;
  // RFC 6298 5.6: restart the timer with the backed-off RTO.
  tcb.rtxKind = RtxKind.RETRANSMIT;
  tcb.rtxAt = now + tcb.rtt.rto;
}

function persistTimeout(tcb: Tcb, now: number): void {
  if (!canSendData(tcb.state) || tcb.flight > 0 || tcb.unsent === 0) return;
  // RFC 1122 4.2.2.17: probing goes on while the peer answers; `probes` counts probes since
  // the last ACK, so only a silent peer times out.
  tcb.probes++;
  if (tcb.probes > tcb.host.limits.maxRetransmits) {
    timedOut(tcb);
    return;
  }
  tcb.persistBackoff++;
  if (tcb.sndWnd > 0) {
    // A window too small for sender SWS avoidance: the timer overrides it (RFC 9293 3.8.6.2.1).
    tcb.persistOverride = true;
  } else {
    sendProbe(tcb, now);
  }
  tcb.rtxKind = RtxKind.PERSIST;
  tcb.rtxAt = now + tcb.persistInterval();
}

function keepaliveTimeout(tcb: Tcb, now: number): void {
  tcb.keepAt = Infinity;
  const st = tcb.state;
  if (
    !tcb.keepAlive ||
    (st !== State.ESTABLISHED && st !== State.CLOSE_WAIT && st !== State.FIN_WAIT_2)
  ) return;
  // Linux: no probes while data is outstanding; the retransmission timer watches the peer.
  if (tcb.flight > 0 || tcb.unsent > 0) {
    tcb.keepAt = now + tcb.keepIdle;
    return;
  }
  const idleUntil = tcb.lastRecvAt + tcb.keepIdle;
  if (tcb.keepProbes === 0 && now < idleUntil) {
    tcb.keepAt = idleUntil;
    return;
  }
  if (tcb.keepProbes >= tcb.keepCount) {
    timedOut(tcb);
    return;
  }
  sendProbe(tcb, now);
  tcb.keepProbes++;
  tcb.keepAt = now + tcb.keepInterval;
}
