/**
 * A segment arrives (RFC 9293 3.10.7), for a connection that exists. The checks run in the
 * RFC's order, with the amendments of RFC 7323 (PAWS first), RFC 5961 (RST and SYN in a
 * synchronized state get a challenge ACK unless exactly at RCV.NXT; ACKs too old are refused)
 * and RFC 6191 (a new SYN may reuse a 4-tuple in TIME-WAIT):
 *
 * ```text
 *  SYN-SENT:   ACK acceptable? → RST? → SYN → ESTABLISHED (or SYN-RECEIVED: simultaneous open)
 *  TIME-WAIT:  RST → CLOSED; retransmitted FIN → ACK and restart 2 MSL; else ACK
 *  otherwise:  PAWS → sequence acceptable? → RST → SYN → ACK (una, SACK, window, recovery)
 *              → state changes on our FIN acked → data into the receive buffer → FIN
 * ```
 *
 * Nothing here sends directly except resets: it sets `ackNow`, moves the retransmission range,
 * and `transmit` (called by the layer after this) sends what is owed.
 *
 * @module
 */
import type { IcmpErrorKind } from "../types.ts";
import { TcpFlag, type TcpRepr } from "../../wire/tcp.ts";
import {
  DUP_THRESH,
  FIN_WAIT_2_TIMEOUT,
  PAWS_IDLE_LIMIT,
  TIME_WAIT_DURATION,
} from "./constants.ts";
import { TcpError, type TcpErrorCode } from "./errors.ts";
import { canSendData, sendRst, sendStatelessReset, sendSyn, transmit } from "./output.ts";
import {
  clearLost,
  markLost,
  rackBeginAck,
  rackDelivered,
  rackDetectLoss,
  rackDsack,
  rackEndAck,
  rackRecoveryEnded,
  resetRun,
  scheduleTlp,
} from "./rack.ts";
import { Seg } from "./send_log.ts";
import { seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt } from "./seq.ts";
import { Ev, Recovery, RtxKind, State, type Tcb } from "./tcb.ts";

const { SYN, ACK, RST, FIN } = TcpFlag;

/** Messages for the errors a connection can end with. */
export function connectionError(code: TcpErrorCode): TcpError {
  switch (code) {
    case "ECONNREFUSED":
      return new TcpError(code, "Connection refused");
    case "ECONNRESET":
      return new TcpError(code, "Connection reset by peer");
    case "ETIMEDOUT":
      return new TcpError(code, "Connection timed out");
    case "EHOSTUNREACH":
      return new TcpError(code, "No route to host");
    case "ENETUNREACH":
      return new TcpError(code, "Network is unreachable");
    default:
      return new TcpError(code, code);
  }
}

/** Sets up a TCB made by a listener for an arriving SYN and answers with SYN-ACK. */
export function openFromListen(tcb: Tcb, now: number, seg: TcpRepr): void {
  tcb.irs = seg.seq;
  tcb.rcvNxt = seqAdd(seg.seq, 1);
  tcb.negotiate(seg);
  // RFC 7323 2.2: the window of a SYN is not scaled.
  tcb.sndWnd = seg.window;
  tcb.maxSndWnd = seg.window;
  tcb.sndWl1 = seg.seq;
  tcb.sndWl2 = 0;
  tcb.state = State.SYN_RECEIVED;
  tcb.lastRecvAt = now;
  // The SYN's data, if any, is not taken (no TCP Fast Open); the peer sends it again.
  sendSyn(tcb, now);
  tcb.sndUnaOff = -1;
  tcb.sndNxtOff = 0;
  // Time the SYN-ACK (RFC 6298 3): its ACK gives the first RTT sample when there are no
  // timestamps, unless it has to be sent again.
  tcb.rttOff = 0;
  tcb.rttStart = now;
  tcb.rtxKind = RtxKind.RETRANSMIT;
  tcb.rtxAt = now + tcb.rtt.rto;
}

/** RFC 6191 / Linux: may a SYN for this TIME-WAIT TCB's 4-tuple start a new connection? */
export function acceptsNewSyn(tcb: Tcb, seg: TcpRepr): boolean {
  if (tcb.state !== State.TIME_WAIT) return false;
  if ((seg.flags & (SYN | ACK | RST)) !== SYN) return false;
  if (tcb.tsOn && seg.timestamp) return seqGt(seg.tsVal, tcb.tsRecent);
  return seqGt(seg.seq, tcb.rcvNxt);
}

/** Processes one segment for `tcb`, then sends what is owed. */
export function segmentArrives(tcb: Tcb, now: number, seg: TcpRepr): void {
  switch (tcb.state) {
    case State.CLOSED:
      return;
    case State.SYN_SENT:
      synSent(tcb, now, seg);
      break;
    case State.TIME_WAIT:
      timeWait(tcb, now, seg);
      break;
    default:
      synchronized(tcb, now, seg);
  }
  transmit(tcb, now);
}

// ---------------------------------------------------------------------------------------------
// SYN-SENT (RFC 9293 3.10.7.3)

function synSent(tcb: Tcb, now: number, seg: TcpRepr): void {
  const f = seg.flags;
  if (f & ACK) {
    // First: the ACK must acknowledge our SYN exactly (SND.UNA = ISS, SND.NXT = ISS + 1).
    if (seg.ack !== tcb.seqOf(0)) {
      if (!(f & RST)) {
        sendStatelessReset(
          tcb.host,
          tcb.local,
          tcb.localPort,
          tcb.remote,
          tcb.remotePort,
          seg.ack,
          undefined,
        );
      }
      return;
    }
  }
  if (f & RST) {
    // RFC 5961 3.2 / RFC 9293: a RST is believed in SYN-SENT only if it acknowledges the SYN.
    if (f & ACK) {
      tcb.host.stats.resetsReceived++;
      tcb.finish(connectionError("ECONNREFUSED"));
    }
    return;
  }
  if (!(f & SYN)) return;
  tcb.irs = seg.seq;
  tcb.rcvNxt = seqAdd(seg.seq, 1);
  tcb.negotiate(seg);
  tcb.lastRecvAt = now;
  if (f & ACK) {
    // Our SYN is acknowledged. RTT from the echoed timestamp, or (Karn) from the SYN if it
    // was sent once.
    if (tcb.tsOn && seg.tsEcr !== 0) takeRttSample(tcb, now, seg);
    else if (tcb.retries === 0) tcb.rtt.sample(now - tcb.lastSendAt);
    tcb.sndUnaOff = 0;
    tcb.retries = 0;
    tcb.rtxKind = RtxKind.NONE;
    tcb.rtxAt = Infinity;
    tcb.sndWnd = seg.window; // RFC 7323 2.2: not scaled in a SYN
    tcb.maxSndWnd = seg.window;
    tcb.sndWl1 = seg.seq;
    tcb.sndWl2 = seg.ack;
    tcb.recoverOff = 0;
    establish(tcb, now);
    tcb.ackNow = true;
    // Data or FIN riding on the SYN-ACK (rare) is processed like any other.
    if (seg.payload.length > 0 || f & FIN) {
      receiveText(tcb, now, tcb.rcvNxt, seg.payload, (f & FIN) !== 0);
    }
  } else {
    // Simultaneous open (RFC 9293 figure 8): answer with SYN-ACK, same ISS.
    tcb.sndWnd = seg.window;
    tcb.maxSndWnd = seg.window;
    tcb.sndWl1 = seg.seq;
    tcb.state = State.SYN_RECEIVED;
    sendSyn(tcb, now);
  }
}

/** ESTABLISHED, or FIN-WAIT-1 when the user already shut down the send side. */
function establish(tcb: Tcb, now: number): void {
  tcb.state = tcb.finQueued ? State.FIN_WAIT_1 : State.ESTABLISHED;
  tcb.signal(Ev.OPEN);
  if (tcb.keepAlive) tcb.keepAt = now + tcb.keepIdle;
  if (tcb.listener) tcb.host.established(tcb);
}

// ---------------------------------------------------------------------------------------------
// TIME-WAIT

function timeWait(tcb: Tcb, now: number, seg: TcpRepr): void {
  const f = seg.flags;
  if (f & RST) {
    // RFC 9293: RST in TIME-WAIT closes; RFC 5961 3.2: only when exactly at RCV.NXT.
    if (seg.seq === tcb.rcvNxt) {
      tcb.host.stats.resetsReceived++;
      tcb.finish();
    }
    return;
  }
  const segEnd = seqAdd(seg.seq, seg.payload.length + (f & FIN ? 1 : 0));
  if (f & FIN && segEnd === tcb.rcvNxt) {
    // RFC 9293 3.10.7.4: the remote FIN again: acknowledge it and restart the 2 MSL timeout.
    tcb.lifeAt = now + TIME_WAIT_DURATION;
  }
  tcb.ackNow = true;
}

// ---------------------------------------------------------------------------------------------
// SYN-RECEIVED and the synchronized states (RFC 9293 3.10.7.4)

function synchronized(tcb: Tcb, now: number, seg: TcpRepr): void {
  const host = tcb.host;
  const f = seg.flags;
  let seq = seg.seq;
  let syn = (f & SYN) !== 0;
  const fin = (f & FIN) !== 0;
  const data = seg.payload;

  if (syn && tcb.state === State.SYN_RECEIVED && seq === tcb.irs) {
    if (!(f & ACK)) {
      // The peer's SYN again: our SYN-ACK was lost. Send it again (and, Karn, stop timing).
      if (!(f & RST)) {
        tcb.rttOff = -1;
        sendSyn(tcb, now);
      }
      return;
    }
    // A SYN-ACK in a simultaneous open: its SYN is the one we have; take the rest.
    seq = seqAdd(seq, 1);
    syn = false;
  }

  // RFC 7323 5.3 (PAWS): an older timestamp than TS.Recent marks an old duplicate.
  if (tcb.tsOn && seg.timestamp && !(f & RST) && seqLt(seg.tsVal, tcb.tsRecent)) {
    // R1: unless TS.Recent is older than 24 days (RFC 7323 5.5), then it is invalid.
    if (now - tcb.tsRecentAt <= PAWS_IDLE_LIMIT) {
      host.stats.pawsRejected++;
      tcb.ackNow = true;
      return;
    }
  }

  // Sequence acceptability (RFC 9293 3.10.7.4, the table of four cases).
  const segLen = data.length + (syn ? 1 : 0) + (fin ? 1 : 0);
  const wnd = Math.max(0, seqDiff(tcb.rcvAdvEdge, tcb.rcvNxt));
  const rel = seqDiff(seq, tcb.rcvNxt);
  let acceptable: boolean;
  if (segLen === 0) acceptable = wnd === 0 ? rel === 0 : rel >= 0 && rel < wnd;
  // A zero window takes no data, but "special allowance" (the RFC's words) is made for the
  // ACK, RST and FIN of a segment exactly at RCV.NXT.
  else if (wnd === 0) acceptable = rel === 0;
  else acceptable = (rel >= 0 && rel < wnd) || (rel + segLen - 1 >= 0 && rel + segLen - 1 < wnd);
  if (!acceptable) {
    if (!(f & RST)) tcb.ackNow = true;
    return;
  }

  // RST (RFC 5961 3.2): exactly at RCV.NXT resets; elsewhere in the window, a challenge ACK.
  if (f & RST) {
    if (rel === 0) {
      host.stats.resetsReceived++;
      reset(tcb);
    } else if (host.challengeAckAllowed(now)) {
      host.stats.challengeAcks++;
      tcb.ackNow = true;
    }
    return;
  }

  // SYN in a synchronized state (RFC 5961 4.2): challenge ACK, drop.
  if (syn) {
    if (host.challengeAckAllowed(now)) {
      host.stats.challengeAcks++;
      tcb.ackNow = true;
    }
    return;
  }

  if (!(f & ACK)) return;

  tcb.lastRecvAt = now;
  tcb.keepProbes = 0;
  // RFC 7323 4.3 (2): remember the timestamp of the segment that will be acknowledged next.
  if (tcb.tsOn && seg.timestamp && seqLe(seq, tcb.lastAckSent) && seqGe(seg.tsVal, tcb.tsRecent)) {
    tcb.tsRecent = seg.tsVal;
    tcb.tsRecentAt = now;
  }

  if (tcb.state === State.SYN_RECEIVED) {
    const una = tcb.seqOf(tcb.sndUnaOff), nxt = tcb.seqOf(tcb.sndNxtOff);
    if (!(seqGt(seg.ack, una) && seqLe(seg.ack, nxt))) {
      sendStatelessReset(
        host,
        tcb.local,
        tcb.localPort,
        tcb.remote,
        tcb.remotePort,
        seg.ack,
        undefined,
      );
      return;
    }
    // Linux: with the accept queue full, the completing ACK is dropped; our SYN-ACK timer
    // runs on and the peer's ACK (or data) will come again.
    if (tcb.listener && !host.acceptRoom(tcb)) {
      host.stats.acceptQueueFull++;
      return;
    }
  }

  if (!processAck(tcb, now, seg, seq)) return;

  switch (tcb.state) {
    case State.SYN_RECEIVED:
      tcb.recoverOff = 0;
      establish(tcb, now);
      break;
    case State.FIN_WAIT_1:
      if (tcb.sndUnaOff > tcb.finOff) {
        tcb.state = State.FIN_WAIT_2;
        if (tcb.orphaned) tcb.lifeAt = now + FIN_WAIT_2_TIMEOUT;
        // Everything we sent is acknowledged and nothing more will be.
        tcb.releaseSendSide();
      }
      break;
    case State.CLOSING:
      if (tcb.sndUnaOff > tcb.finOff) enterTimeWait(tcb, now);
      return;
    case State.LAST_ACK:
      if (tcb.sndUnaOff > tcb.finOff) tcb.finish();
      return;
  }

  // URG is not given special meaning: urgent data stays inline (RFC 6093 advises against it).
  if (data.length > 0 || fin) receiveText(tcb, now, seq, data, fin);
}

/** RST accepted: what it means depends on the state (RFC 9293 3.10.7.4, "second"). */
function reset(tcb: Tcb): void {
  if (tcb.state === State.SYN_RECEIVED) {
    // From a listener: back to LISTEN, which for us means forgetting the half-open TCB.
    // From a simultaneous open: the connection was refused.
    tcb.finish(tcb.listener ? undefined : connectionError("ECONNREFUSED"));
    return;
  }
  tcb.finish(connectionError("ECONNRESET"));
}

function enterTimeWait(tcb: Tcb, now: number): void {
  tcb.state = State.TIME_WAIT;
  tcb.rtxAt = tcb.keepAt = Infinity;
  tcb.rtxKind = RtxKind.NONE;
  tcb.lifeAt = now + TIME_WAIT_DURATION;
  tcb.releaseSendSide();
  tcb.rcvBuf.releaseIfEmpty();
  tcb.signalClose();
  tcb.host.timeWait(tcb);
}

// ---------------------------------------------------------------------------------------------
// ACK processing

/** Returns false when the segment must be dropped (an ACK for data never sent, or too old). */
function processAck(tcb: Tcb, now: number, seg: TcpRepr, seq: number): boolean {
  const ack = seg.ack;
  const una = tcb.seqOf(tcb.sndUnaOff);
  if (seqGt(ack, tcb.seqOf(tcb.sndNxtOff))) {
    // RFC 9293: an ACK for something not yet sent: send an ACK, drop the segment.
    tcb.ackNow = true;
    return false;
  }
  const d = seqDiff(ack, una);
  if (d < 0 && -d > Math.max(tcb.maxSndWnd, 1)) {
    // RFC 5961 5.2: older than SND.UNA − MAX.SND.WND: challenge ACK, drop.
    if (tcb.host.challengeAckAllowed(now)) {
      tcb.host.stats.challengeAcks++;
      tcb.ackNow = true;
    }
    return false;
  }
  const wnd = seg.window * 2 ** tcb.sndShift;
  const sackedBefore = tcb.scoreboard.total;
  const tsEcr = tcb.tsOn && seg.timestamp ? seg.tsEcr : -1;
  rackBeginAck(tcb);
  dsackSeen = false;
  const newlySacked = tcb.sackOn && seg.sackCount > 0 ? takeSackBlocks(tcb, now, seg, tsEcr) : 0;

  if (d > 0) {
    newAck(tcb, now, seg, d, tsEcr);
  } else if (d === 0 && tcb.sndNxtOff > tcb.sndUnaOff) {
    // RFC 5681 2 (duplicate ACK), and RFC 6675 5: an ACK bringing new SACK information.
    const pure = seg.payload.length === 0 && !(seg.flags & (SYN | FIN));
    if ((pure && wnd === tcb.sndWnd) || newlySacked > 0) dupAck(tcb);
  }

  if (tcb.sackOn && canSendData(tcb.state)) {
    // RFC 8985 6.2: after every ACK, by the send times of what it delivered.
    if (dsackSeen) rackDsack(tcb);
    rackEndAck(tcb, now);
    if (tcb.sendLog.count > 0 && rackDetectLoss(tcb, now)) rackLossResponse(tcb);
    // RFC 8985 7.4: the ACK of a probe. A retransmitted probe that the peer did not report as
    // a duplicate (D-SACK) repaired a real loss, which calls for a congestion response.
    if (tcb.tlpEndOff >= 0 && tcb.sndUnaOff >= tcb.tlpEndOff) {
      if (tcb.tlpRetrans && !dsackSeen) tcb.cc.onTailLossRepaired(tcb.smss);
      tcb.tlpEndOff = -1;
    }
    if (tcb.recovery === Recovery.FAST) {
      // RFC 6937: DeliveredData = change in SND.UNA + change in SACKed bytes.
      const delivered = Math.max(d, 0) + tcb.scoreboard.total - sackedBefore;
      tcb.cc.prrAck(Math.max(delivered, 0), tcb.pipe(), tcb.smss);
    }
    if (d > 0) scheduleTlp(tcb, now);
  }

  // Window update (RFC 9293 3.10.7.4): only from a segment newer than the last update.
  if (d >= 0 && (seqLt(tcb.sndWl1, seq) || (tcb.sndWl1 === seq && seqLe(tcb.sndWl2, ack)))) {
    tcb.sndWnd = wnd;
    tcb.sndWl1 = seq;
    tcb.sndWl2 = ack;
    if (wnd > tcb.maxSndWnd) tcb.maxSndWnd = wnd;
    if (wnd > 0) tcb.persistBackoff = 0;
  }
  tcb.probes = 0;
  return true;
}

/** The ACK being processed carried a D-SACK (RFC 2883 4). */
let dsackSeen = false;

/**
 * SACK blocks into the scoreboard (RFC 2018, RFC 6675 4), and the segments they complete
 * into RACK; returns the bytes newly SACKed.
 */
function takeSackBlocks(tcb: Tcb, now: number, seg: TcpRepr, tsEcr: number): number {
  const sb = tcb.scoreboard;
  const log = tcb.sendLog;
  const before = sb.total;
  for (let i = 0; i < seg.sackCount; i++) {
    const l = tcb.offOf(seg.sackBlocks[2 * i]!);
    const r = tcb.offOf(seg.sackBlocks[2 * i + 1]!);
    if (i === 0 && r > l) {
      // RFC 2883 4: a first block below SND.UNA, or inside the second, reports a duplicate.
      const l1 = seg.sackCount > 1 ? tcb.offOf(seg.sackBlocks[2]!) : 0;
      const r1 = seg.sackCount > 1 ? tcb.offOf(seg.sackBlocks[3]!) : 0;
      if (r <= tcb.sndUnaOff || (seg.sackCount > 1 && l >= l1 && r <= r1)) dsackSeen = true;
    }
    // Blocks must lie within what is outstanding; D-SACKs and nonsense add nothing.
    if (r <= l || r > tcb.sndNxtOff || r <= tcb.sndUnaOff) continue;
    const from = Math.max(l, tcb.sndUnaOff);
    sb.add(from, r);
    for (let k = log.find(from); k < log.count && log.start(k) < r; k++) {
      const f = log.flags(k);
      if (f & Seg.SACKED || sb.nextUncovered(log.start(k)) < log.end(k)) continue;
      if (f & Seg.LOST) clearLost(tcb, k);
      log.setFlags(k, log.flags(k) | Seg.SACKED);
      rackDelivered(tcb, now, k, tsEcr);
    }
  }
  return sb.total - before;
}

/** RFC 6675 IsLost marking, up to the current loss edge (what is below was marked before). */
function markToLossEdge(tcb: Tcb): number {
  const edge = lossEdge(tcb);
  if (edge > tcb.lossMarkedOff) {
    markLost(tcb, Math.max(tcb.lossMarkedOff, tcb.sndUnaOff), edge);
    tcb.lossMarkedOff = edge;
  }
  return edge;
}

/** Fast recovery begins (RFC 6675 5 step 4, RFC 6582 3.2 step 2, RFC 6937 3). */
function startFastRecovery(tcb: Tcb): void {
  tcb.host.stats.fastRecoveries++;
  tcb.recovery = Recovery.FAST;
  tcb.recoverOff = tcb.sndNxtOff;
  tcb.cc.enterRecovery(tcb.flight, tcb.smss, tcb.sackOn);
  tcb.cc.prrStart(tcb.flight);
  tcb.lossMarkedOff = tcb.sndUnaOff;
  // A probe outstanding is part of this episode now; recovery answers for it (RFC 8985 7.4).
  tcb.tlpEndOff = -1;
  tcb.tlpAt = Infinity;
  tcb.forceRtx = true;
}

/** RACK marked segments lost (RFC 8985 6.2): outside recovery, that starts one. */
export function rackLossResponse(tcb: Tcb): void {
  if (tcb.recovery === Recovery.NONE) startFastRecovery(tcb);
}

/**
 * RFC 6675 IsLost, for the whole scoreboard: holes below the returned offset have DupThresh
 * SACKed ranges or more than (DupThresh − 1) × SMSS SACKed bytes above them.
 */
function lossEdge(tcb: Tcb): number {
  const sb = tcb.scoreboard;
  let bytes = 0;
  for (let i = sb.count - 1; i >= 0; i--) {
    bytes += sb.end(i) - sb.start(i);
    if (bytes > (DUP_THRESH - 1) * tcb.smss || sb.count - i >= DUP_THRESH) return sb.start(i);
  }
  return tcb.sndUnaOff;
}

function newAck(tcb: Tcb, now: number, seg: TcpRepr, acked: number, tsEcr: number): void {
  const ackOff = tcb.sndUnaOff + acked;
  // Records of what is now acknowledged: delivered, for RACK, unless SACKed before.
  const log = tcb.sendLog;
  while (log.count > 0 && log.end(0) <= ackOff) {
    const f = log.flags(0);
    if (!(f & Seg.SACKED)) rackDelivered(tcb, now, 0, tsEcr);
    if (f & Seg.LOST) clearLost(tcb, 0);
    log.shift();
  }
  if (log.count > 0 && log.start(0) < ackOff) {
    // What is left of a lost record is at most its unacknowledged tail.
    const rest = log.end(0) - ackOff;
    if (log.lost(0) > rest) {
      tcb.lostBytes -= log.lost(0) - rest;
      log.setLost(0, rest);
    }
    log.trimFront(ackOff);
  }
  // Data leaving the send buffer.
  const bufEnd = Math.min(ackOff, tcb.writtenOff);
  if (bufEnd > tcb.sndBufStart) {
    tcb.sendBuf.consume(bufEnd - tcb.sndBufStart);
    tcb.sndBufStart = bufEnd;
    if (tcb.writeBlocked) {
      tcb.writeBlocked = false;
      tcb.signal(Ev.WRITABLE);
    }
  }
  tcb.sndUnaOff = ackOff;
  tcb.scoreboard.removeBelow(ackOff);
  if (tcb.rtxNextOff < ackOff) tcb.rtxNextOff = ackOff;
  if (tcb.rtxLimitOff < ackOff) tcb.rtxLimitOff = ackOff;

  // RTT: RFC 7323 4 (timestamps) or RFC 6298 3 (one timed segment, Karn's rule).
  if (tcb.tsOn && seg.timestamp && seg.tsEcr !== 0) {
    takeRttSample(tcb, now, seg);
  } else if (tcb.rttOff >= 0 && ackOff >= tcb.rttOff) {
    tcb.rtt.sample(now - tcb.rttStart);
    tcb.rttOff = -1;
  }
  tcb.retries = 0;
  tcb.rtt.clearBackoff();

  const mss = tcb.smss;
  if (tcb.recovery === Recovery.FAST) {
    if (ackOff >= tcb.recoverOff) {
      // RFC 6582 3.2 step 6: a full acknowledgment ends recovery.
      tcb.recovery = Recovery.NONE;
      tcb.cc.exitRecovery(tcb.flight, mss);
      tcb.dupAcks = 0;
      rackRecoveryEnded(tcb);
    } else if (tcb.sackOn) {
      // RFC 6675: go on repairing the holes the scoreboard shows lost.
      markToLossEdge(tcb);
    } else {
      // RFC 6582 3.2 step 5: a partial ACK: send the first unacknowledged segment again.
      tcb.cc.onPartialAck(acked, mss, false);
      resetRun(tcb);
      markLost(tcb, ackOff, Math.min(ackOff + mss, tcb.sndNxtOff));
      tcb.forceRtx = true;
    }
  } else {
    if (tcb.recovery === Recovery.TIMEOUT && ackOff >= tcb.recoverOff) {
      tcb.recovery = Recovery.NONE;
      rackRecoveryEnded(tcb);
    }
    tcb.cc.onAck(acked, mss);
    tcb.dupAcks = 0;
  }

  // RFC 6298 5.2 / 5.3: stop the timer when all is acknowledged, else restart it.
  if (tcb.sndUnaOff >= tcb.sndNxtOff) {
    if (tcb.rtxKind === RtxKind.RETRANSMIT) {
      tcb.rtxKind = RtxKind.NONE;
      tcb.rtxAt = Infinity;
    }
  } else {
    tcb.rtxKind = RtxKind.RETRANSMIT;
    tcb.rtxAt = now + tcb.rtt.rto;
  }
}

function takeRttSample(tcb: Tcb, now: number, seg: TcpRepr): void {
  const r = (tcb.tsNow(now) - seg.tsEcr) >>> 0;
  // A sample more than 2^31 ms back is a broken echo, not an RTT.
  if (r < 0x8000_0000) tcb.rtt.sample(r);
}

function dupAck(tcb: Tcb): void {
  tcb.host.stats.dupAcksIn++;
  const mss = tcb.smss;
  if (tcb.recovery === Recovery.FAST) {
    tcb.cc.onDupAckInRecovery(mss, tcb.sackOn);
    if (tcb.sackOn) markToLossEdge(tcb);
    return;
  }
  if (tcb.recovery === Recovery.TIMEOUT) return;
  tcb.dupAcks++;
  const lost = tcb.dupAcks >= DUP_THRESH ||
    (tcb.sackOn && lossEdge(tcb) > tcb.sndUnaOff);
  // RFC 6582 3.2 step 1: not again until everything sent before the last recovery is acked.
  if (!lost || tcb.sndUnaOff < tcb.recoverOff) return;
  startFastRecovery(tcb);
  // RFC 5681 3.2 / RFC 6675 5 step 4: the first segment at once, then every hole IsLost shows.
  resetRun(tcb);
  markLost(tcb, tcb.sndUnaOff, Math.min(tcb.sndUnaOff + mss, tcb.sndNxtOff));
  if (tcb.sackOn) markToLossEdge(tcb);
  tcb.lossMarkedOff = Math.max(tcb.lossMarkedOff, Math.min(tcb.sndUnaOff + mss, tcb.sndNxtOff));
}

// ---------------------------------------------------------------------------------------------
// Data and FIN

function receiveText(tcb: Tcb, now: number, seq: number, data: Uint8Array, fin: boolean): void {
  if (tcb.finReceived) return; // nothing counts after the peer's FIN
  const st = tcb.state;
  const host = tcb.host;
  const buf = tcb.rcvBuf;
  // The stream offset where this segment's data (or its lone FIN) begins.
  const off = buf.end + seqDiff(seq, tcb.rcvNxt);
  let finUsable = fin;
  if (data.length > 0) {
    if (st !== State.ESTABLISHED && st !== State.FIN_WAIT_1 && st !== State.FIN_WAIT_2) return;
    const end = buf.end;
    if (tcb.orphaned && off + data.length > end) {
      // The user closed and will read no more: new data can not be delivered. Like Linux
      // (RFC 2525 2.17), answer with RST so the peer learns it.
      sendRst(tcb, now);
      tcb.finish();
      return;
    }
    const wasHole = buf.ranges.count > 0;
    const fits = off + data.length <= buf.limit;
    const grown = buf.insert(off, data);
    if (grown < 0) {
      host.stats.outOfOrderDropped++;
      tcb.ackNow = true;
      finUsable = false;
    } else if (off > end) {
      // Out of order: acknowledge at once so the sender sees the hole (RFC 5681 4.2), and
      // remember the block for SACK (RFC 2018 4).
      host.stats.outOfOrder++;
      noteSack(tcb, off);
      tcb.ackNow = true;
    } else if (grown > 0) {
      tcb.rcvNxt = seqAdd(tcb.rcvNxt, grown);
      tcb.signal(Ev.READABLE);
      if (data.length > tcb.rcvMssSeen) tcb.rcvMssSeen = Math.min(data.length, tcb.ourMss);
      if (wasHole) {
        // RFC 5681 4.2: a segment that fills a hole is acknowledged at once.
        tcb.ackNow = true;
      } else if (seqDiff(tcb.rcvNxt, tcb.lastAckSent) >= 2 * tcb.rcvMssSeen) {
        // RFC 5681 4.2 / RFC 1122 4.2.3.2: at least every second full-sized segment.
        tcb.ackNow = true;
      } else if (tcb.ackAt === Infinity) {
        tcb.ackAt = now + host.limits.delayedAck;
      }
    } else {
      // Nothing new: a duplicate. Tell the peer where we are.
      tcb.ackNow = true;
    }
    if (!fits) {
      // Beyond the window: cut, and the FIN after it can not count either.
      tcb.ackNow = true;
      finUsable = false;
    }
  }
  if (finUsable) {
    const finOff = off + data.length;
    if (finOff === buf.end) finReceived(tcb, now);
    else if (finOff > buf.end) tcb.rcvFinOff = finOff;
  }
  if (!tcb.finReceived && tcb.rcvFinOff >= 0 && tcb.rcvFinOff === buf.end) finReceived(tcb, now);
}

function noteSack(tcb: Tcb, off: number): void {
  const recent = tcb.recentSacks;
  if (recent.length >= 4) recent.pop();
  recent.unshift(off);
}

/** RFC 9293 3.10.7.4 "eighth, check the FIN bit". */
function finReceived(tcb: Tcb, now: number): void {
  tcb.finReceived = true;
  tcb.rcvFinOff = -1;
  tcb.rcvNxt = seqAdd(tcb.rcvNxt, 1);
  tcb.rcvBuf.dropOutOfOrder();
  tcb.recentSacks.length = 0;
  tcb.ackNow = true;
  tcb.signal(Ev.END);
  switch (tcb.state) {
    case State.SYN_RECEIVED:
    case State.ESTABLISHED:
      tcb.state = State.CLOSE_WAIT;
      break;
    case State.FIN_WAIT_1:
      // Our FIN is not acknowledged yet (else we would be in FIN-WAIT-2): simultaneous close.
      tcb.state = State.CLOSING;
      break;
    case State.FIN_WAIT_2:
      enterTimeWait(tcb, now);
      break;
  }
}

// ---------------------------------------------------------------------------------------------
// ICMP

function icmpCode(kind: IcmpErrorKind): TcpErrorCode | undefined {
  switch (kind) {
    case "net-unreachable":
      return "ENETUNREACH";
    case "host-unreachable":
    case "prohibited":
    case "time-exceeded":
      return "EHOSTUNREACH";
    case "port-unreachable":
      return "ECONNREFUSED";
    default:
      return undefined;
  }
}

/**
 * An ICMP error about a segment we sent with sequence number `seq`. RFC 5927 4.1: believed
 * only when `seq` is one we sent and is not yet acknowledged. While connecting, unreachable
 * errors end the attempt (as Linux); later they are soft (RFC 1122 4.2.3.9) and only reported
 * if the connection times out. Packet Too Big lowers the segment size and resends (RFC 1191,
 * RFC 8201; the IP layer has already lowered the path MTU).
 */
export function icmpArrives(tcb: Tcb, now: number, kind: IcmpErrorKind, seq: number): void {
  const st = tcb.state;
  if (st === State.CLOSED || st === State.TIME_WAIT) return;
  const connecting = st === State.SYN_SENT || st === State.SYN_RECEIVED;
  const valid = connecting
    ? seq === tcb.iss
    : seqGe(seq, tcb.seqOf(tcb.sndUnaOff)) && seqLt(seq, tcb.seqOf(tcb.sndNxtOff));
  if (!valid) return;
  if (kind === "too-big") {
    if (tcb.updateSegLimit() && canSendData(st) && tcb.flight > 0) {
      resetRun(tcb);
      markLost(tcb, tcb.sndUnaOff, tcb.sndNxtOff);
      tcb.forceRtx = true;
      tcb.rttOff = -1;
      transmit(tcb, now);
    }
    return;
  }
  const code = icmpCode(kind);
  if (code === undefined) return;
  if (connecting && kind !== "time-exceeded") {
    if (tcb.listener) tcb.finish(); // a half-open connection nobody holds yet
    else tcb.finish(connectionError(code));
    return;
  }
  tcb.softError = code;
}
