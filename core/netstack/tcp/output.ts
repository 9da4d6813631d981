/**
 * What a connection sends, and when. One pass of {@link transmit} sends, in this order:
 *
 * ```text
 *  1. data deemed lost  runs of LOST records minus SACKed ranges  (RFC 8985 / 6675 / 6582 / 5681)
 *  2. new data          limited by the peer's window, cwnd − pipe, Nagle and sender SWS
 *  3. a FIN             after the last byte
 *  4. an ACK            if one is owed and nothing above carried it
 * ```
 *
 * then arms the retransmission timer (something in flight) or the persist timer (data waits
 * for a closed window), and the loss probe timer after new data (RFC 8985 7.2). Each data
 * segment sent gets a record in the send log, and each retransmission refreshes its record's
 * send time, which is what RACK reasons about (`rack.ts`). Every segment is built in one buffer allocated at its final size: the
 * header from the layer's scratch {@link TcpRepr}, the data copied straight from the send ring.
 *
 * @module
 */
import type { IpBytes } from "../../wire/addr.ts";
import { IpProtocol } from "../../wire/ip.ts";
import { tcpChecksum, TcpField, TcpFlag } from "../../wire/tcp.ts";
import { MAX_WINDOW_FIELD } from "./constants.ts";
import { dropCovered, nextLostRun, noteRetransmitted, scheduleTlp } from "./rack.ts";
import { rcvSeqOf, Recovery, RtxKind, State, type Tcb, type TcbHost } from "./tcb.ts";
import { seqAdd } from "./seq.ts";

/** States in which our side may still send data or a FIN (or retransmit them). */
export function canSendData(state: number): boolean {
  return state === State.ESTABLISHED || state === State.CLOSE_WAIT ||
    state === State.FIN_WAIT_1 || state === State.CLOSING || state === State.LAST_ACK;
}

/** Sends whatever is due now (see the module comment). */
export function transmit(tcb: Tcb, now: number): void {
  const st = tcb.state;
  if (st === State.CLOSED) return;
  if (canSendData(st)) sendData(tcb, now);
  if (tcb.ackNow && st !== State.SYN_SENT) sendAck(tcb, now);
}

function sendData(tcb: Tcb, now: number): void {
  const stats = tcb.host.stats;
  let force = tcb.forceRtx;
  tcb.forceRtx = false;
  let sentNew = false;
  for (;;) {
    const room = tcb.dataRoom();
    // 1. Retransmissions.
    if (tcb.rtxNextOff >= tcb.rtxLimitOff && tcb.lostBytes > 0) nextLostRun(tcb);
    if (tcb.rtxNextOff < tcb.rtxLimitOff) {
      const sb = tcb.scoreboard;
      const off = sb.nextUncovered(tcb.rtxNextOff);
      const limit = Math.min(tcb.rtxLimitOff, sb.nextStartAfter(off), tcb.sndNxtOff);
      if (off >= limit) {
        // Everything left in the lost run was SACKed.
        dropCovered(tcb, tcb.rtxNextOff, tcb.rtxLimitOff);
        tcb.rtxNextOff = tcb.rtxLimitOff;
        continue;
      }
      // SACKed bytes the run steps over are as good as sent.
      if (off > tcb.rtxNextOff) dropCovered(tcb, tcb.rtxNextOff, off);
      // A window the peer shrank is respected: what lies beyond it waits, except the segment
      // at SND.UNA when the timer forces it, which then serves as a zero-window probe (Linux).
      let wndRoom = tcb.sndUnaOff + tcb.sndWnd - off;
      if (wndRoom <= 0) {
        if (off !== tcb.sndUnaOff || !force) break;
        wndRoom = room;
      }
      const dataEnd = tcb.finSent ? tcb.finOff : tcb.sndNxtOff;
      const len = Math.max(0, Math.min(room, wndRoom, limit - off, dataEnd - off));
      const fin = tcb.finSent && off + len === tcb.finOff && limit > tcb.finOff;
      // RFC 6675 5 (C): only while cwnd − pipe leaves room, except the one forced segment.
      if (!force && tcb.pipe() + len + (fin ? 1 : 0) > tcb.cc.cwnd) break;
      emitData(tcb, now, off, len, fin);
      stats.retransmits++;
      const end = off + len + (fin ? 1 : 0);
      noteRetransmitted(tcb, now, off, end);
      if (tcb.recovery === Recovery.FAST) tcb.cc.prrSent(end - off);
      tcb.rtxNextOff = end;
      // RFC 6298 3 (Karn): no RTT sample from a segment sent twice.
      tcb.rttOff = -1;
      force = false;
      continue;
    }
    force = false;
    // 2. New data.
    const unsent = tcb.unsent;
    if (unsent > 0) {
      const inFlight = tcb.sndNxtOff > tcb.sndUnaOff;
      let len = Math.min(unsent, room);
      const wndRoom = tcb.sndUnaOff + tcb.sndWnd - tcb.sndNxtOff;
      if (len > wndRoom) {
        // RFC 9293 3.8.6.2.1 (sender SWS avoidance): a segment cut by the window goes only if
        // it is at least half the largest window offered, or the persist timer says so.
        if (wndRoom <= 0) break;
        if (wndRoom < tcb.maxSndWnd / 2 && !tcb.persistOverride) break;
        len = wndRoom;
      }
      // RFC 5681 4.1: after an idle period longer than an RTO, start again from the IW.
      if (!inFlight && now - tcb.lastSendAt > tcb.rtt.rto) tcb.cc.restartAfterIdle(tcb.smss);
      // A loss probe (RFC 8985 7.3) goes whatever cwnd and Nagle say.
      const probe = tcb.tlpNewData;
      if (inFlight && !probe && tcb.pipe() + len > tcb.cc.cwnd) break;
      // RFC 9293 3.7.4 (Nagle): a short segment waits while data is unacknowledged, unless
      // no-delay is set or the FIN follows (closing flushes, as in Linux).
      if (
        len < room && len === unsent && inFlight && !tcb.noDelay && !tcb.finQueued &&
        !tcb.persistOverride && !probe
      ) break;
      const fin = tcb.finQueued && tcb.sndNxtOff + len === tcb.finOff;
      const off = tcb.sndNxtOff;
      emitData(tcb, now, off, len, fin);
      if (tcb.rttOff < 0 && !tcb.tsOn) {
        tcb.rttOff = off + len;
        tcb.rttStart = now;
      }
      const end = off + len + (fin ? 1 : 0);
      tcb.sendLog.push(off, end, now);
      if (tcb.recovery === Recovery.FAST) tcb.cc.prrSent(end - off);
      tcb.sndNxtOff = end;
      tcb.persistOverride = false;
      sentNew = true;
      if (probe) {
        tcb.tlpNewData = false;
        tcb.tlpEndOff = end;
      }
      continue;
    }
    // 3. A FIN on its own. It needs no window: receivers take a bare FIN at a zero window.
    if (tcb.finQueued && tcb.sndNxtOff === tcb.finOff) {
      emitData(tcb, now, tcb.finOff, 0, true);
      tcb.sendLog.push(tcb.finOff, tcb.finOff + 1, now);
      tcb.sndNxtOff = tcb.finOff + 1;
      sentNew = true;
      continue;
    }
    break;
  }
  tcb.persistOverride = false;
  tcb.tlpNewData = false;
  // RFC 6298 5.1: the timer runs while anything is in flight.
  if (tcb.sndNxtOff > tcb.sndUnaOff) {
    if (tcb.rtxKind !== RtxKind.RETRANSMIT) {
      tcb.rtxKind = RtxKind.RETRANSMIT;
      tcb.rtxAt = now + tcb.rtt.rto;
    }
  } else if (tcb.unsent > 0) {
    // RFC 9293 3.8.6.1: data waits for a window with nothing in flight: probe it.
    if (tcb.rtxKind !== RtxKind.PERSIST) {
      tcb.rtxKind = RtxKind.PERSIST;
      tcb.rtxAt = now + tcb.persistInterval();
    }
  } else if (tcb.rtxKind !== RtxKind.NONE) {
    tcb.rtxKind = RtxKind.NONE;
    tcb.rtxAt = Infinity;
  }
  // RFC 8985 7.2: the probe timer restarts with each new segment.
  if (sentNew) scheduleTlp(tcb, now);
}

function emitData(tcb: Tcb, now: number, off: number, len: number, fin: boolean): void {
  let flags: number = TcpFlag.ACK;
  if (fin) flags |= TcpFlag.FIN;
  if (len > 0 && off + len === tcb.writtenOff) flags |= TcpFlag.PSH;
  emitSegment(tcb, now, flags, tcb.seqOf(off), off, len);
  tcb.lastSendAt = now;
}

/**
 * The sequence number for a segment without data: SND.NXT, or the right edge of the peer's
 * window when that lies before SND.NXT. A peer whose window shrank (its reader stalled) drops
 * segments that start beyond it, ACK field and all, as RFC 9293 3.10.7.4 says it should, and
 * two stacks can then wait on each other forever. Linux does the same (tcp_acceptable_seq).
 */
function acceptableSeq(tcb: Tcb): number {
  return tcb.seqOf(Math.max(Math.min(tcb.sndNxtOff, tcb.sndUnaOff + tcb.sndWnd), 0));
}

/** A bare ACK: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> (see {@link acceptableSeq}). */
export function sendAck(tcb: Tcb, now: number): void {
  emitSegment(tcb, now, TcpFlag.ACK, acceptableSeq(tcb), 0, 0);
}

/**
 * A zero-window or keepalive probe: an ACK with SEQ = SND.UNA − 1, which the peer finds
 * unacceptable and answers with an ACK showing its window (RFC 9293 3.8.6.1, RFC 1122 4.2.3.6).
 */
export function sendProbe(tcb: Tcb, now: number): void {
  emitSegment(tcb, now, TcpFlag.ACK, seqAdd(tcb.seqOf(tcb.sndUnaOff), -1), 0, 0);
}

/** Our SYN (SYN-SENT) or SYN-ACK (SYN-RECEIVED), the same each time it is sent again. */
export function sendSyn(tcb: Tcb, now: number): void {
  const flags = tcb.state === State.SYN_RECEIVED ? TcpFlag.SYN | TcpFlag.ACK : TcpFlag.SYN;
  emitSegment(tcb, now, flags, tcb.iss, 0, 0);
  tcb.lastSendAt = now;
}

/** RST from a connection: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=RST,ACK>, as Linux aborts. */
export function sendRst(tcb: Tcb, now: number): void {
  emitSegment(tcb, now, TcpFlag.RST | TcpFlag.ACK, acceptableSeq(tcb), 0, 0);
}

/**
 * Builds and sends one segment of `tcb`. SYNs carry our options and an unscaled window; other
 * segments carry timestamps and SACK blocks as negotiated. Any segment with ACK settles the
 * ACK we owed.
 */
function emitSegment(
  tcb: Tcb,
  now: number,
  flags: number,
  seq: number,
  dataOff: number,
  dataLen: number,
): void {
  const host = tcb.host;
  const r = host.tx.reset();
  r.srcPort = tcb.localPort;
  r.dstPort = tcb.remotePort;
  r.seq = seq;
  r.flags = flags;
  const syn = (flags & TcpFlag.SYN) !== 0;
  const rst = (flags & TcpFlag.RST) !== 0;
  if (flags & TcpFlag.ACK) r.ack = tcb.rcvNxt;
  let wnd: number;
  if (syn) {
    // RFC 7323 2.2: the window in a SYN is never scaled.
    wnd = Math.min(tcb.rcvBuf.free, MAX_WINDOW_FIELD);
    r.window = wnd;
    r.mss = tcb.ourMss;
    const passive = tcb.state === State.SYN_RECEIVED;
    // Active: offer everything. Passive: answer only what the peer offered (RFC 7323 2.2,
    // 3.2; RFC 2018 2).
    if (!passive || tcb.wsOn) r.windowScale = tcb.rcvShift;
    if (!passive || tcb.sackOn) r.sackPermitted = true;
    if (!passive || tcb.tsOn) {
      r.timestamp = true;
      r.tsVal = tcb.tsNow(now);
      r.tsEcr = passive ? tcb.tsRecent : 0;
    }
  } else if (rst) {
    wnd = 0;
  } else {
    wnd = tcb.windowToAdvertise();
    r.window = wnd >> tcb.rcvShift;
    if (tcb.tsOn) {
      r.timestamp = true;
      r.tsVal = tcb.tsNow(now);
      r.tsEcr = tcb.tsRecent;
    }
    if (tcb.sackOn && (flags & TcpFlag.ACK)) fillSackBlocks(tcb);
  }
  const hl = r.headerLen;
  // The segment is written where it goes, inside the IP packet, when the IP layer offers that:
  // one buffer per segment instead of two and a copy (docs/performance.md, bulk upload).
  const ip = host.ip;
  const packet = ip.build?.(tcb.local, tcb.remote, IpProtocol.TCP, hl + dataLen);
  const buf = packet ? packet.subarray(packet.length - hl - dataLen) : new Uint8Array(hl + dataLen);
  r.emitHeader(buf);
  if (dataLen > 0) tcb.sendBuf.copyOut(dataOff - tcb.sndBufStart, buf, hl, dataLen);
  const sum = tcpChecksum(buf, tcb.local, tcb.remote);
  buf[TcpField.CHECKSUM] = sum >>> 8;
  buf[TcpField.CHECKSUM + 1] = sum;
  if (flags & TcpFlag.ACK && !rst) {
    tcb.lastAckSent = tcb.rcvNxt;
    tcb.rcvAdvEdge = seqAdd(tcb.rcvNxt, wnd);
    tcb.ackNow = false;
    tcb.ackAt = Infinity;
  }
  host.stats.segmentsOut++;
  if (rst) host.stats.resetsSent++;
  if (packet) ip.transmit!(packet);
  else ip.send(tcb.local, tcb.remote, IpProtocol.TCP, buf);
}

/**
 * RFC 2018 4: the first block holds the most recent arrival, then the most recently reported
 * other blocks, then any others, up to what fits.
 */
function fillSackBlocks(tcb: Tcb): void {
  const ranges = tcb.rcvBuf.ranges;
  if (ranges.count === 0) return;
  const r = tcb.host.tx;
  let used = 0; // bit k: range k already reported (only the first 31 ranges are tracked)
  const recent = tcb.recentSacks;
  for (let i = 0; i < recent.length && r.sackCount < 4; i++) {
    const k = ranges.indexOf(recent[i]!);
    if (k < 0 || (k < 31 && used & (1 << k))) continue;
    if (k < 31) used |= 1 << k;
    r.addSack(rcvSeqOf(tcb, ranges.start(k)), rcvSeqOf(tcb, ranges.end(k)));
  }
  for (let k = 0; k < ranges.count && r.sackCount < 4; k++) {
    if (k < 31 && used & (1 << k)) continue;
    r.addSack(rcvSeqOf(tcb, ranges.start(k)), rcvSeqOf(tcb, ranges.end(k)));
  }
}

/**
 * A reset for a segment that matched no connection (RFC 9293 3.10.7.1): with ACK set,
 * <SEQ=SEG.ACK><CTL=RST>; otherwise <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
 */
export function sendStatelessReset(
  host: TcbHost,
  local: IpBytes,
  localPort: number,
  remote: IpBytes,
  remotePort: number,
  seq: number,
  ack: number | undefined,
): void {
  const r = host.tx.reset();
  r.srcPort = localPort;
  r.dstPort = remotePort;
  r.seq = seq;
  if (ack === undefined) {
    r.flags = TcpFlag.RST;
  } else {
    r.flags = TcpFlag.RST | TcpFlag.ACK;
    r.ack = ack;
  }
  const buf = r.toBytes(local, remote);
  host.stats.segmentsOut++;
  host.stats.resetsSent++;
  host.ip.send(local, remote, IpProtocol.TCP, buf);
}
