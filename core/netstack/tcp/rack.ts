/**
 * Loss detection by time (RACK, RFC 8985 6) and the Tail Loss Probe (TLP, RFC 8985 7), over
 * the per-segment records of {@link SendLog}.
 *
 * Counting duplicate ACKs (RFC 5681, RFC 6675) can not see a retransmission that is lost again:
 * nothing sent after it is ever SACKed "three times above" it before the timer. RACK asks a
 * different question: was a segment sent before one that has been delivered, longer ago than
 * an RTT and a reordering window? Then it is lost, whether it is original data or a
 * retransmission. The timer is then left for what RACK can not see: a loss at the tail, with
 * nothing after it to be delivered. TLP probes that tail after about two RTTs instead of
 * waiting for the (backed-off) RTO, so the probe's ACK lets RACK or SACK recovery repair it.
 *
 * Records are marked LOST here; `output.ts` takes runs of LOST records and sends them again.
 *
 * @module
 */
import { DUP_THRESH, TLP_DELAYED_ACK } from "./constants.ts";
import { Seg } from "./send_log.ts";
import { seqLt } from "./seq.ts";
import { Recovery, type Tcb } from "./tcb.ts";

const { SACKED, LOST, RETRANS } = Seg;

/** Marks record `i` lost, all of it (it must not be SACKed). */
function markRecordLost(tcb: Tcb, i: number): void {
  const log = tcb.sendLog;
  const start = log.start(i), len = log.end(i) - start;
  log.setFlags(i, log.flags(i) | LOST);
  tcb.lostBytes += len - log.lost(i);
  log.setLost(i, len);
  if (start < tcb.lostScanOff) tcb.lostScanOff = start;
}

/** Record `i` is no longer lost (delivered, or sent again in full). */
export function clearLost(tcb: Tcb, i: number): void {
  const log = tcb.sendLog;
  tcb.lostBytes -= log.lost(i);
  log.setLost(i, 0);
  log.setFlags(i, log.flags(i) & ~LOST);
}

/** Marks every record overlapping `[from, to)` lost, except those SACKed. */
export function markLost(tcb: Tcb, from: number, to: number): void {
  const log = tcb.sendLog;
  for (let i = log.find(from); i < log.count && log.start(i) < to; i++) {
    if ((log.flags(i) & SACKED) === 0) markRecordLost(tcb, i);
  }
}

/**
 * When the run being retransmitted is used up: the next run of adjacent LOST records, into
 * `[rtxNextOff, rtxLimitOff)`. False when nothing is marked lost.
 */
export function nextLostRun(tcb: Tcb): boolean {
  const log = tcb.sendLog;
  if (tcb.lostBytes <= 0) return false;
  let i = log.find(tcb.lostScanOff);
  while (i < log.count && (log.flags(i) & LOST) === 0) i++;
  if (i === log.count) {
    // Only a bookkeeping slip gets here. Count again from the records, which are the truth,
    // rather than trust a stale total: one that stays above zero would spin here, and one
    // that goes below zero would hide every later loss from the sender.
    tcb.lostBytes = 0;
    for (let k = 0; k < log.count; k++) tcb.lostBytes += log.lost(k);
    tcb.lostScanOff = 0;
    if (tcb.lostBytes <= 0) return false;
    return nextLostRun(tcb);
  }
  let j = i;
  while (j + 1 < log.count && (log.flags(j + 1) & LOST) !== 0) j++;
  tcb.rtxNextOff = log.start(i);
  tcb.rtxLimitOff = log.end(j);
  tcb.lostScanOff = log.end(j);
  return true;
}

/**
 * Abandons the run being retransmitted (a new loss episode marks its own). What it had not
 * sent yet is still marked LOST, so the scan must look there again.
 */
export function resetRun(tcb: Tcb): void {
  if (tcb.rtxNextOff < tcb.rtxLimitOff && tcb.rtxNextOff < tcb.lostScanOff) {
    tcb.lostScanOff = tcb.rtxNextOff;
  }
  tcb.rtxNextOff = tcb.rtxLimitOff = tcb.sndUnaOff;
}

/**
 * The bytes of LOST record `i` in `[from, to)` no longer wait to be sent: they went out again,
 * or the run passed over them because the scoreboard covers them. A run walks its records in
 * offset order, so once it reaches a record's end the whole record is dealt with.
 */
function settle(tcb: Tcb, i: number, from: number, to: number): void {
  const log = tcb.sendLog;
  if (to >= log.end(i)) {
    clearLost(tcb, i);
    return;
  }
  const n = Math.min(log.lost(i), to - Math.max(log.start(i), from));
  log.setLost(i, log.lost(i) - n);
  tcb.lostBytes -= n;
}

/**
 * The run skipped `[from, to)` because the scoreboard covers it: the LOST records there are
 * settled for those bytes (a record SACKed only in part would otherwise stay LOST behind the
 * run, and its bytes would count against the pipe forever), and a record covered entirely is
 * SACKed.
 */
export function dropCovered(tcb: Tcb, from: number, to: number): void {
  const log = tcb.sendLog, sb = tcb.scoreboard;
  for (let i = log.find(from); i < log.count && log.start(i) < to; i++) {
    if (log.flags(i) & LOST) settle(tcb, i, from, to);
    if (sb.nextUncovered(log.start(i)) >= log.end(i)) log.setFlags(i, log.flags(i) | SACKED);
  }
}

/** The scoreboard was cleared (RFC 2018 8): no record counts as SACKed any more. */
export function forgetSacked(tcb: Tcb): void {
  const log = tcb.sendLog;
  for (let i = 0; i < log.count; i++) log.setFlags(i, log.flags(i) & ~SACKED);
}

/**
 * `[from, to)` was just sent again: its records are ambiguous to ACK, and, once sent to their
 * end, no longer lost and stamped with the new send time, so that RACK sees a retransmission
 * lost again (RFC 8985 6.1). A record sent only in part stays lost for the rest.
 */
export function noteRetransmitted(tcb: Tcb, now: number, from: number, to: number): void {
  const log = tcb.sendLog;
  for (let i = log.find(from); i < log.count && log.start(i) < to; i++) {
    const f = log.flags(i);
    log.setFlags(i, f | RETRANS);
    if (f & LOST) {
      settle(tcb, i, from, to);
      if (to < log.end(i)) continue;
    }
    log.setTs(i, now);
  }
}

/** A pass of RACK_update over one ACK (RFC 8985 6.2 step 2): the newest valid send time. */
let ackNewestTs = -Infinity;

/** RACK.fack before this ACK: reordering is judged against earlier ACKs only. */
let ackFackBefore = -Infinity;

/** Starts collecting the segments an ACK delivers. */
export function rackBeginAck(tcb: Tcb): void {
  ackNewestTs = -Infinity;
  ackFackBefore = tcb.rackFack;
}

/**
 * Record `i` was just delivered (cumulatively or by SACK). `tsEcr` is the ACK's echoed
 * timestamp, or -1 without one.
 */
export function rackDelivered(tcb: Tcb, now: number, i: number, tsEcr: number): void {
  const log = tcb.sendLog;
  const ts = log.ts(i), end = log.end(i), f = log.flags(i);
  const rtt = now - ts;
  if (f & RETRANS) {
    // Step 2: the ACK may be for an earlier transmission; then it says nothing of this one.
    if (tsEcr >= 0 ? seqLt(tsEcr, tcb.tsNow(ts)) : rtt < tcb.rackMinRtt) return;
  } else if (end < ackFackBefore) {
    // Step 3: delivered below what was already delivered, never sent twice: reordering.
    tcb.rackReordering = true;
  }
  if (end > tcb.rackFack) tcb.rackFack = end;
  if (rtt < tcb.rackMinRtt) tcb.rackMinRtt = rtt;
  if (ts > ackNewestTs) ackNewestTs = ts;
  if (ts > tcb.rackXmitTs || (ts === tcb.rackXmitTs && end > tcb.rackEndOff)) {
    tcb.rackXmitTs = ts;
    tcb.rackEndOff = end;
  }
}

/** Ends the pass: RACK.rtt comes from the most recently sent segment the ACK delivered. */
export function rackEndAck(tcb: Tcb, now: number): void {
  if (ackNewestTs > -Infinity) tcb.rackRtt = now - ackNewestTs;
}

/** An ACK carried a D-SACK (RFC 2883): a retransmission was spurious. */
export function rackDsack(tcb: Tcb): void {
  // RFC 8985 6.2 step 4: widen the window by min_RTT / 4 at most once per round trip, and
  // keep it widened for 16 recoveries.
  if (tcb.rackDsackRound >= 0) return;
  tcb.rackDsackRound = tcb.sndNxtOff;
  tcb.rackReoMult++;
  tcb.rackReoPersist = 16;
}

/** A recovery ended (RFC 8985 6.2 step 4: the widened window decays). */
export function rackRecoveryEnded(tcb: Tcb): void {
  if (tcb.rackReoPersist > 0 && --tcb.rackReoPersist === 0) tcb.rackReoMult = 1;
}

/** RFC 8985 6.2 step 4: RACK.reo_wnd. */
function reoWnd(tcb: Tcb): number {
  if (tcb.rackDsackRound >= 0 && tcb.sndUnaOff >= tcb.rackDsackRound) tcb.rackDsackRound = -1;
  if (!tcb.rackReordering) {
    // Without reordering seen, a loss is a loss once recovery is under way or DupThresh
    // segments are SACKed above it (as RFC 6675 would say).
    if (tcb.recovery !== Recovery.NONE) return 0;
    if (tcb.scoreboard.total > (DUP_THRESH - 1) * tcb.smss) return 0;
  }
  const minRtt = tcb.rackMinRtt === Infinity ? 0 : tcb.rackMinRtt;
  const srtt = tcb.rtt.hasSample ? tcb.rtt.srtt : Infinity;
  return Math.min(minRtt / 4 * tcb.rackReoMult, srtt);
}

/**
 * RFC 8985 6.2 step 5 (RACK_detect_loss): marks lost every outstanding record sent before
 * RACK's segment and longer than RACK.rtt + reo_wnd ago, and arms the reordering timer for
 * those not yet old enough (6.3). Returns whether anything was marked.
 */
export function rackDetectLoss(tcb: Tcb, now: number): boolean {
  tcb.rackAt = Infinity;
  if (tcb.rackXmitTs === -Infinity) return false;
  const log = tcb.sendLog;
  const reo = reoWnd(tcb);
  const xts = tcb.rackXmitTs, xend = tcb.rackEndOff;
  let timeout = 0;
  let marked = false;
  for (let i = 0; i < log.count; i++) {
    const f = log.flags(i);
    if (f & (SACKED | LOST)) continue;
    const ts = log.ts(i);
    if (ts > xts || (ts === xts && log.end(i) >= xend)) {
      // Sent after RACK's segment. Records are in offset order, which for data sent once is
      // send order, and a retransmission's time only grows: past the first such record sent
      // once, every record was sent after RACK's segment.
      if ((f & RETRANS) === 0) break;
      continue;
    }
    const remaining = ts + tcb.rackRtt + reo - now;
    if (remaining <= 0) {
      markRecordLost(tcb, i);
      marked = true;
    } else if (remaining > timeout) {
      timeout = remaining;
    }
  }
  if (timeout > 0) tcb.rackAt = now + timeout;
  return marked;
}

/**
 * RFC 8985 7.2: arms the probe timeout after new data went out or an ACK came, if a probe may
 * be sent: SACK on, no recovery, no probe outstanding, and something in flight. A probe that
 * would not fire before the RTO is not armed: the RTO then acts, as it did before TLP.
 */
export function scheduleTlp(tcb: Tcb, now: number): void {
  tcb.tlpAt = Infinity;
  if (
    !tcb.sackOn || tcb.recovery !== Recovery.NONE || tcb.tlpEndOff >= 0 ||
    tcb.sndNxtOff <= tcb.sndUnaOff || !tcb.rtt.hasSample
  ) return;
  let pto = 2 * tcb.rtt.srtt;
  // One segment in flight: its ACK may be delayed by the peer (WCDelAckT).
  if (tcb.flight <= tcb.smss) pto += TLP_DELAYED_ACK;
  pto = Math.max(pto, 1);
  if (now + pto < tcb.rtxAt) tcb.tlpAt = now + pto;
}

/**
 * RFC 8985 7.3: the probe timeout expired. Send one new segment if there is one the peer's
 * window takes, else the last segment sent again; the RTO is restarted either way.
 */
export function tlpFire(tcb: Tcb, now: number): void {
  tcb.tlpAt = Infinity;
  const log = tcb.sendLog;
  if (tcb.recovery !== Recovery.NONE || log.count === 0) return;
  const wndRoom = tcb.sndUnaOff + tcb.sndWnd - tcb.sndNxtOff;
  if (tcb.unsent > 0 && wndRoom > 0) {
    tcb.tlpNewData = true;
    tcb.tlpRetrans = false;
  } else {
    const last = log.count - 1;
    const f = log.flags(last);
    // A probe the peer's window would not take is no probe; leave the RTO to act.
    if (f & (SACKED | LOST) || log.start(last) >= tcb.sndUnaOff + tcb.sndWnd) return;
    markRecordLost(tcb, last);
    tcb.forceRtx = true;
    tcb.tlpRetrans = true;
  }
  tcb.tlpEndOff = tcb.sndNxtOff;
  tcb.rtxAt = now + tcb.rtt.rto;
}
