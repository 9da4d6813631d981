/**
 * The Transmission Control Block (RFC 9293 3.3.1): everything one connection remembers. The
 * rules that change it live beside it, one file per concern: `input.ts` (a segment arrives),
 * `output.ts` (what to send now), `timers.ts` (a deadline passed); `connection.ts` is the face
 * the user holds.
 *
 * Sequence space is tracked in *stream offsets*, plain numbers that do not wrap: our SYN is
 * offset -1, data byte `k` is offset `k`, our FIN is offset `finOff`. `seqOf` turns an offset
 * into a 32-bit sequence number; incoming sequence numbers are turned into offsets relative to
 * SND.UNA / RCV.NXT, which is exact because everything in flight lies within 2^30 of them.
 *
 * @module
 */
import type { IpBytes } from "../../wire/addr.ts";
import type { TcpRepr } from "../../wire/tcp.ts";
import type { IpOutput } from "../types.ts";
import { NewReno } from "./congestion.ts";
import {
  DEFAULT_MSS_V4,
  DEFAULT_MSS_V6,
  KEEPALIVE_COUNT,
  KEEPALIVE_IDLE,
  KEEPALIVE_INTERVAL,
  MAX_PERSIST_INTERVAL,
  MAX_WINDOW_FIELD,
  MAX_WINDOW_SHIFT,
} from "./constants.ts";
import type { TcpError, TcpErrorCode } from "./errors.ts";
import { RangeSet } from "./range_set.ts";
import { ReceiveBuffer } from "./recv_buffer.ts";
import { ByteRing } from "./ring.ts";
import { RttEstimator } from "./rtt.ts";
import { SendLog } from "./send_log.ts";
import { seqAdd, seqDiff } from "./seq.ts";
import type { TimerItem } from "./timer_heap.ts";

/** Connection states (RFC 9293 3.3.2). LISTEN belongs to `TcpListener`. */
export const State = {
  CLOSED: 0,
  SYN_SENT: 1,
  SYN_RECEIVED: 2,
  ESTABLISHED: 3,
  FIN_WAIT_1: 4,
  FIN_WAIT_2: 5,
  CLOSE_WAIT: 6,
  CLOSING: 7,
  LAST_ACK: 8,
  TIME_WAIT: 9,
} as const;

/** A state as RFC 9293 spells it. */
export type TcpStateName =
  | "CLOSED"
  | "SYN-SENT"
  | "SYN-RECEIVED"
  | "ESTABLISHED"
  | "FIN-WAIT-1"
  | "FIN-WAIT-2"
  | "CLOSE-WAIT"
  | "CLOSING"
  | "LAST-ACK"
  | "TIME-WAIT";

export const STATE_NAMES: readonly TcpStateName[] = [
  "CLOSED",
  "SYN-SENT",
  "SYN-RECEIVED",
  "ESTABLISHED",
  "FIN-WAIT-1",
  "FIN-WAIT-2",
  "CLOSE-WAIT",
  "CLOSING",
  "LAST-ACK",
  "TIME-WAIT",
];

/** Events waiting to be delivered to the user's hooks (a bit set). */
export const Ev = { OPEN: 1, READABLE: 2, END: 4, WRITABLE: 8, CLOSE: 16 } as const;

/** Which loss recovery is under way. */
export const Recovery = { NONE: 0, FAST: 1, TIMEOUT: 2 } as const;

/** What the one retransmission-slot timer is for (like Linux, persist shares it). */
export const RtxKind = { NONE: 0, RETRANSMIT: 1, PERSIST: 2 } as const;

/** Per-layer limits; every field has a default (see `constants.ts`). */
export interface TcpLimits {
  /** Send buffer per connection, bytes. */
  sendBuffer: number;
  /** Receive buffer per connection, bytes: the largest window offered. */
  receiveBuffer: number;
  /** Connections in any state, TIME-WAIT included. */
  maxConnections: number;
  /** Half-open (SYN-RECEIVED) connections per listener. */
  synBacklog: number;
  /** Out-of-order ranges a receiver keeps, SACKed ranges a sender keeps. */
  maxRanges: number;
  synRetries: number;
  synAckRetries: number;
  /** Retransmissions of the same data (or unanswered zero-window probes) before ETIMEDOUT. */
  maxRetransmits: number;
  /** RTO floor, ms. */
  minRto: number;
  /** Delayed-ACK timeout, ms. */
  delayedAck: number;
}

/** Counters kept by a layer. */
export interface TcpStats {
  segmentsIn: number;
  segmentsOut: number;
  /** Too short, bad data offset, malformed options, port 0. */
  malformed: number;
  badChecksum: number;
  resetsSent: number;
  resetsReceived: number;
  /** Segments sent again (RTO, fast retransmit, recovery). */
  retransmits: number;
  timeouts: number;
  fastRecoveries: number;
  dupAcksIn: number;
  /** Segments stored beyond a hole. */
  outOfOrder: number;
  /** Out-of-order segments dropped because the range table was full. */
  outOfOrderDropped: number;
  /** SYNs dropped: no room in a listener's backlogs or the connection table. */
  synDropped: number;
  /** Handshake-completing ACKs dropped because the accept queue was full. */
  acceptQueueFull: number;
  pawsRejected: number;
  challengeAcks: number;
  activeOpens: number;
  passiveOpens: number;
}

export function newStats(): TcpStats {
  return {
    segmentsIn: 0,
    segmentsOut: 0,
    malformed: 0,
    badChecksum: 0,
    resetsSent: 0,
    resetsReceived: 0,
    retransmits: 0,
    timeouts: 0,
    fastRecoveries: 0,
    dupAcksIn: 0,
    outOfOrder: 0,
    outOfOrderDropped: 0,
    synDropped: 0,
    acceptQueueFull: 0,
    pawsRejected: 0,
    challengeAcks: 0,
    activeOpens: 0,
    passiveOpens: 0,
  };
}

/** What a TCB needs from its layer. */
export interface TcbHost {
  readonly ip: IpOutput;
  readonly limits: TcpLimits;
  readonly stats: TcpStats;
  /** Scratch representation for building segments. */
  readonly tx: TcpRepr;
  /** The latest time passed into the layer. */
  readonly now: number;
  /** The TCB's earliest deadline changed. */
  reschedule(tcb: Tcb): void;
  /** The TCB reached CLOSED: forget it. */
  release(tcb: Tcb): void;
  /** A passive open is about to complete: false when the accept queue has no room. */
  acceptRoom(tcb: Tcb): boolean;
  /** A passive open completed: queue it on its listener. */
  established(tcb: Tcb): void;
  /** The TCB entered TIME-WAIT (the layer may reclaim it early when the table is full). */
  timeWait(tcb: Tcb): void;
  /** RFC 5961 10: may another challenge ACK go out now? */
  challengeAckAllowed(now: number): boolean;
  /** Marks the start and end of work that may send, so re-entrant input waits (see layer). */
  enter(): void;
  leave(): void;
}

/** The user's side of a connection, as the TCB calls it back. */
export interface TcbUser {
  onOpen?: () => void;
  onReadable?: () => void;
  onWritable?: () => void;
  onEnd?: () => void;
  onClose?: (error?: TcpError) => void;
}

/** What a listener needs from a TCB it owns until `accept`. */
export interface TcbListener {
  /** The TCB left SYN-RECEIVED or the accept queue without being accepted. */
  _forget(tcb: Tcb): void;
  /** Delivers the listener's pending notification, if any. */
  _dispatch(): void;
}

export class Tcb implements TimerItem {
  // --- identity and bookkeeping -----------------------------------------------------------
  readonly host: TcbHost;
  readonly local: IpBytes;
  readonly localPort: number;
  readonly remote: IpBytes;
  readonly remotePort: number;
  state: number = State.CLOSED;
  deadline = Infinity;
  heapIndex = -1;
  /** The user's hooks (set by `TcpConnection`). */
  user: TcbUser = {};
  /** The listener that made us, until the user accepts us. */
  listener: TcbListener | undefined = undefined;
  /** In the listener's accept queue. */
  queued = false;

  // --- send side (RFC 9293 3.3.1 "Send Sequence Variables") -------------------------------
  iss = 0;
  /** SND.UNA as a stream offset; -1 while our SYN is unacknowledged. */
  sndUnaOff = -1;
  /** SND.NXT as a stream offset: the next new offset to send (never moved back). */
  sndNxtOff = -1;
  /** Stream offset one past the last byte the user queued. */
  writtenOff = 0;
  /** Stream offset of the send buffer's first byte. */
  sndBufStart = 0;
  readonly sendBuf: ByteRing;
  finQueued = false;
  /** Stream offset of our FIN, once queued. */
  finOff = Infinity;
  /** SND.WND in bytes (scaled). */
  sndWnd = 0;
  sndWl1 = 0;
  sndWl2 = 0;
  /** The largest window the peer has offered (RFC 9293 3.8.6.2.1, RFC 5961 5.2). */
  maxSndWnd = 0;
  /** Shift applied to windows the peer sends (its window scale). */
  sndShift = 0;

  // --- receive side --------------------------------------------------------------------------
  irs = 0;
  /** RCV.NXT as a sequence number. */
  rcvNxt = 0;
  readonly rcvBuf: ReceiveBuffer;
  /** RCV.NXT + RCV.WND as last advertised. */
  rcvAdvEdge = 0;
  /** The ACK number we last sent (RFC 7323 "Last.ACK.sent"). */
  lastAckSent = 0;
  finReceived = false;
  /** Stream offset of a FIN that arrived ahead of a hole, or -1. */
  rcvFinOff = -1;
  /** Our window scale (shift we apply to windows we send). */
  rcvShift = 0;
  /** The peer's segment size as seen (for "every second full-sized segment", RFC 5681 4.2). */
  rcvMssSeen: number;
  /** Stream offsets inside the most recent out-of-order arrivals, newest first (RFC 2018 4). */
  readonly recentSacks: number[] = [];

  // --- negotiated ------------------------------------------------------------------------------
  /** MSS we advertise: payload room to the peer minus the fixed TCP header. */
  ourMss: number;
  peerMss: number;
  /** Largest TCP segment (header, options, data) we send: min(peer MSS + 20, path payload). */
  segLimit: number;
  /** Data bytes in a full segment (segLimit minus fixed header and timestamp option). */
  smss: number;
  /** Both SYNs carried a window scale (RFC 7323 2.2). */
  wsOn = false;
  tsOn = false;
  tsRecent = 0;
  tsRecentAt = 0;
  /** Random offset added to our timestamp clock (RFC 7323 5.4). */
  tsOffset = 0;
  sackOn = false;

  // --- congestion control and loss recovery ---------------------------------------------------
  cc: NewReno;
  recovery: number = Recovery.NONE;
  /** RFC 6582 "recover": SND.NXT when the last recovery began. */
  recoverOff = 0;
  dupAcks = 0;
  /**
   * The run being retransmitted: offsets `[rtxNextOff, rtxLimitOff)` minus SACKed data go out
   * again in order. Every byte of it lies in a `sendLog` record marked LOST until it is sent.
   */
  rtxNextOff = 0;
  rtxLimitOff = 0;
  /** Send one retransmission whatever cwnd says (fast retransmit, timeout, loss probe). */
  forceRtx = false;
  /** SACKed ranges above SND.UNA (RFC 6675 scoreboard). */
  readonly scoreboard: RangeSet;
  /** One record per segment in flight: send time and state, for RACK (RFC 8985 5.2). */
  readonly sendLog: SendLog;
  /** Bytes of records marked LOST: RFC 6675's "deemed lost and not yet retransmitted". */
  lostBytes = 0;
  /** No record below this offset is marked LOST (where the next run is looked for). */
  lostScanOff = Infinity;
  /** RFC 6675 IsLost has marked everything below this offset in the current recovery. */
  lossMarkedOff = 0;

  // --- RACK (RFC 8985 6) ------------------------------------------------------------------------
  /** RACK.xmit_ts and RACK.end_seq: the most recently sent segment known delivered. */
  rackXmitTs = -Infinity;
  rackEndOff = -Infinity;
  /** RACK.rtt: the RTT of that segment. */
  rackRtt = 0;
  rackMinRtt = Infinity;
  /** RACK.fack: the highest end of a delivered segment. */
  rackFack = -Infinity;
  /** RACK.reordering_seen. */
  rackReordering = false;
  /** RACK.reo_wnd_mult, RACK.reo_wnd_persist and RACK.dsack_round (RFC 8985 6.2 step 4). */
  rackReoMult = 1;
  rackReoPersist = 0;
  rackDsackRound = -1;
  /** The reordering timer (RFC 8985 6.3), Infinity when off. */
  rackAt = Infinity;

  // --- TLP (RFC 8985 7) -------------------------------------------------------------------------
  /** The probe timeout, Infinity when off. */
  tlpAt = Infinity;
  /** TLP.end_seq: SND.NXT when the outstanding probe was sent, or -1 (no probe in flight). */
  tlpEndOff = -1;
  /** TLP.is_retrans: the outstanding probe sent old data again. */
  tlpRetrans = false;
  /** The next new-data segment is a probe: it goes whatever cwnd says. */
  tlpNewData = false;

  // --- PRR (RFC 6937) -----------------------------------------------------------------------------
  prrDelivered = 0;
  prrOut = 0;
  recoverFs = 0;

  // --- round-trip time ---------------------------------------------------------------------------
  readonly rtt: RttEstimator;
  /** Without timestamps: the offset whose acknowledgment ends the timed segment, or -1. */
  rttOff = -1;
  rttStart = 0;

  // --- timers (absolute ms; Infinity when off) ----------------------------------------------------
  rtxAt = Infinity;
  rtxKind: number = RtxKind.NONE;
  /** Consecutive timeouts of the same data (or SYN). */
  retries = 0;
  persistBackoff = 0;
  /** Zero-window probes sent without any ACK since. */
  probes = 0;
  /** The persist timer allows a segment smaller than SWS avoidance wants. */
  persistOverride = false;
  ackAt = Infinity;
  ackNow = false;
  keepAt = Infinity;
  keepAlive = false;
  keepIdle = KEEPALIVE_IDLE;
  keepInterval = KEEPALIVE_INTERVAL;
  keepCount = KEEPALIVE_COUNT;
  keepProbes = 0;
  /** TIME-WAIT expiry, or FIN-WAIT-2 timeout of a connection the user closed. */
  lifeAt = Infinity;
  lastRecvAt = 0;
  lastSendAt = -Infinity;

  // --- user side ------------------------------------------------------------------------------------
  noDelay = false;
  /** The user called `close()`: nobody will read again. */
  orphaned = false;
  /** A `write` was cut short; tell the user when room frees up. */
  writeBlocked = false;
  events = 0;
  #dispatching = false;
  error: TcpError | undefined = undefined;
  /** A soft error seen from ICMP, reported if the connection later times out (as Linux). */
  softError: TcpErrorCode | undefined = undefined;
  #closeSignalled = false;

  constructor(
    host: TcbHost,
    local: IpBytes,
    localPort: number,
    remote: IpBytes,
    remotePort: number,
  ) {
    this.host = host;
    this.local = local;
    this.localPort = localPort;
    this.remote = remote;
    this.remotePort = remotePort;
    const limits = host.limits;
    this.sendBuf = new ByteRing(limits.sendBuffer);
    this.rcvBuf = new ReceiveBuffer(limits.receiveBuffer, limits.maxRanges);
    this.scoreboard = new RangeSet(limits.maxRanges);
    this.sendLog = new SendLog();
    this.rtt = new RttEstimator(limits.minRto);
    const room = host.ip.maxPayload(remote);
    this.ourMss = Math.min(Math.max(room - 20, 1), 0xffff);
    this.peerMss = remote.length === 4 ? DEFAULT_MSS_V4 : DEFAULT_MSS_V6;
    this.segLimit = Math.min(this.peerMss + 20, room);
    this.smss = this.segLimit - 20;
    this.rcvMssSeen = Math.min(this.ourMss, DEFAULT_MSS_V4);
    this.cc = new NewReno(this.smss, 2 * (limits.sendBuffer + limits.receiveBuffer));
    // RFC 7323 2.3: the smallest shift that lets the window cover the whole receive buffer.
    let shift = 0;
    while (shift < MAX_WINDOW_SHIFT && (limits.receiveBuffer >> shift) > MAX_WINDOW_FIELD) shift++;
    this.rcvShift = shift;
  }

  // --- sequence space ----------------------------------------------------------------------

  /** The sequence number of stream offset `off` (SYN is -1). */
  seqOf(off: number): number {
    return (this.iss + 1 + off) >>> 0;
  }

  /** The stream offset of a sequence number near SND.UNA. */
  offOf(seq: number): number {
    return this.sndUnaOff + seqDiff(seq, this.seqOf(this.sndUnaOff));
  }

  /** Bytes (and SYN/FIN) sent and not yet acknowledged (RFC 5681 FlightSize). */
  get flight(): number {
    return this.sndNxtOff - this.sndUnaOff;
  }

  /** Queued data not yet sent. */
  get unsent(): number {
    return Math.max(0, this.writtenOff - Math.max(this.sndNxtOff, 0));
  }

  get finSent(): boolean {
    return this.sndNxtOff > this.finOff;
  }

  /**
   * RFC 6675 2 "pipe": what is still in the network. Outstanding data minus what the peer
   * SACKed, minus what we deem lost and have not sent again.
   */
  pipe(): number {
    // A lost record partly SACKed counts in both; the floor keeps that slip harmless.
    return Math.max(0, this.flight - this.scoreboard.total - this.lostBytes);
  }

  /** Our timestamp clock (RFC 7323 5.4: milliseconds plus a random per-connection offset). */
  tsNow(now: number): number {
    return (Math.floor(now) + this.tsOffset) >>> 0;
  }

  /** Applies what the peer's SYN (or SYN-ACK) offered; our SYN always offers everything. */
  negotiate(seg: TcpRepr): void {
    if (seg.mss !== undefined && seg.mss > 0) this.peerMss = seg.mss;
    // RFC 7323 2.2: scaling is on only when both SYNs carry the option.
    this.wsOn = seg.windowScale !== undefined;
    if (seg.windowScale !== undefined) {
      this.sndShift = seg.windowScale;
    } else {
      this.sndShift = 0;
      this.rcvShift = 0;
    }
    this.tsOn = seg.timestamp;
    if (this.tsOn) {
      this.tsRecent = seg.tsVal;
      this.tsRecentAt = this.host.now;
    }
    this.sackOn = seg.sackPermitted;
    this.updateSegLimit();
    this.cc.resetInitial(this.smss);
  }

  /** Recomputes the segment size from the peer's MSS and the path (after PMTU changes too). */
  updateSegLimit(): boolean {
    const limit = Math.min(this.peerMss + 20, this.host.ip.maxPayload(this.remote));
    const smss = Math.max(limit - 20 - (this.tsOn ? 12 : 0), 1);
    const changed = limit !== this.segLimit;
    this.segLimit = limit;
    this.smss = smss;
    return changed;
  }

  /**
   * The largest data length of a segment sent now: the segment limit minus the header with the
   * options that go on it (timestamps; SACK blocks while we hold out-of-order data).
   */
  dataRoom(): number {
    let hl = 20 + (this.tsOn ? 12 : 0);
    const n = this.sackOn ? this.rcvBuf.ranges.count : 0;
    if (n > 0) hl += 4 + 8 * Math.min(n, this.tsOn ? 3 : 4);
    return Math.max(this.segLimit - hl, 1);
  }

  // --- receive window ------------------------------------------------------------------------

  /** The largest window we can express: 65535 << scale, and no more than the buffer. */
  get maxWindow(): number {
    return Math.min(this.rcvBuf.capacity, MAX_WINDOW_FIELD * 2 ** this.rcvShift);
  }

  /**
   * The window to advertise now, in bytes (a multiple of 2^rcvShift). RFC 9293 3.8.6.2.2
   * (receiver SWS avoidance): the right edge moves only when it can move by at least
   * min(buffer / 2, MSS); otherwise the old edge is kept.
   */
  windowToAdvertise(): number {
    const free = Math.min(this.rcvBuf.free, this.maxWindow);
    const cur = Math.max(0, seqDiff(this.rcvAdvEdge, this.rcvNxt));
    const step = Math.min(this.rcvBuf.capacity >> 1, this.ourMss);
    const wnd = free - cur >= step ? free : Math.min(cur, free);
    // The field counts units of 2^shift. Rounding down could pull the edge back a few bytes
    // (a shrinking window, RFC 9293 3.8.6); round up instead when the buffer has that room.
    const unit = 2 ** this.rcvShift;
    let scaled = Math.floor(wnd / unit) * unit;
    if (scaled < cur && scaled + unit <= free) scaled += unit;
    return scaled;
  }

  /**
   * After the user read: is the window now worth announcing? As Linux decides: when the window
   * we last offered has fallen to half the most we can offer and the new one is at least twice
   * it (so a reader keeping up causes no extra ACKs, and a reopening window is announced).
   */
  windowUpdateWanted(): boolean {
    const cur = Math.max(0, seqDiff(this.rcvAdvEdge, this.rcvNxt));
    if (2 * cur > this.maxWindow) return false;
    const next = this.windowToAdvertise();
    return next > 0 && next >= 2 * cur;
  }

  /** Persist timer interval: RTO with its own exponential backoff, capped. */
  persistInterval(): number {
    return Math.min(this.rtt.baseRto * 2 ** this.persistBackoff, MAX_PERSIST_INTERVAL);
  }

  // --- state, events, teardown ----------------------------------------------------------------

  signal(ev: number): void {
    this.events |= ev;
  }

  /** The user will not hear from this connection again (TIME-WAIT or CLOSED). */
  signalClose(): void {
    if (this.#closeSignalled) return;
    this.#closeSignalled = true;
    this.events |= Ev.CLOSE;
  }

  /** Delivers pending events to the user's hooks (outside of any segment processing). */
  dispatch(): void {
    if (this.#dispatching) return;
    this.#dispatching = true;
    try {
      while (this.events !== 0) {
        const ev = this.events;
        this.events = 0;
        const u = this.user;
        if (ev & Ev.OPEN) u.onOpen?.();
        if (ev & Ev.READABLE) u.onReadable?.();
        if (ev & Ev.END) u.onEnd?.();
        if (ev & Ev.WRITABLE) u.onWritable?.();
        if (ev & Ev.CLOSE) u.onClose?.(this.error);
      }
    } finally {
      this.#dispatching = false;
    }
  }

  /** Recomputes the earliest deadline and tells the layer. */
  reschedule(): void {
    this.host.reschedule(this);
  }

  /** The earliest of the timers. */
  nextDeadline(): number {
    return Math.min(this.rtxAt, this.rackAt, this.tlpAt, this.ackAt, this.keepAt, this.lifeAt);
  }

  /** Frees the send ring, the send log and the SACK scoreboard: nothing is in flight. */
  releaseSendSide(): void {
    this.sendBuf.release();
    this.sendLog.release();
    this.scoreboard.release();
  }

  /**
   * Gives back the storage of whatever is empty (rings, send log, range sets) and returns how
   * many bytes that was; it grows back at the next segment. The layer calls it for connections
   * that went quiet ({@link TcpLayer.trimIdle}).
   */
  releaseEmpty(): number {
    const before = this.sendBuf.allocated + this.rcvBuf.allocated + this.sendLog.allocated +
      this.scoreboard.allocated;
    if (this.sendBuf.length === 0) this.sendBuf.release();
    this.rcvBuf.releaseIfEmpty();
    this.sendLog.release();
    this.scoreboard.release();
    return before - (this.sendBuf.allocated + this.rcvBuf.allocated + this.sendLog.allocated +
      this.scoreboard.allocated);
  }

  /** Stops every timer. */
  stopTimers(): void {
    this.rtxAt =
      this.rackAt =
      this.tlpAt =
      this.ackAt =
      this.keepAt =
      this.lifeAt =
        Infinity;
    this.rtxKind = RtxKind.NONE;
  }

  /** Enters CLOSED: forgets the TCB, frees the send buffer, tells the user (with `error`). */
  finish(error?: TcpError): void {
    if (this.state === State.CLOSED) return;
    this.state = State.CLOSED;
    if (error && !this.error) this.error = error;
    this.stopTimers();
    this.ackNow = false;
    this.sendBuf.release();
    this.rcvBuf.releaseIfEmpty();
    this.host.release(this);
    this.signalClose();
  }
}

/** The RCV.NXT sequence number for stream offset `off` of the peer's data. */
export function rcvSeqOf(tcb: Tcb, off: number): number {
  return seqAdd(tcb.rcvNxt, off - tcb.rcvBuf.end);
}
