/**
 * The TCP layer: one per stack, attached as the transport for protocol 6. It owns the table of
 * connections (by 4-tuple), the listeners (by port), the ephemeral ports, the ISN secret, and
 * one timer heap across all connections, so {@link TcpLayer.pollAt} is O(1) and a tick touches
 * only connections with something due.
 *
 * ```text
 * input(now, src, dst, payload)
 *   ─ check header, checksum, options ─ 4-tuple lookup ─┬─ TCB: segmentArrives → transmit
 *                                                      ├─ SYN + listener: new TCB (SYN-RECEIVED)
 *                                                      └─ nothing: RST (RFC 9293 3.10.7.1)
 * tick(now) ─ pop due TCBs from the heap ─ onTimer → transmit ─ back in the heap
 * then, for each TCB touched: the user's hooks, and the listener's onAccept.
 * ```
 *
 * Re-entrancy: if the IP layer delivers a packet synchronously while we are sending (loopback),
 * it is copied and processed after the current work finishes, never in the middle of it.
 *
 * @module
 */
import { type IpBytes, ipEquals, unmapIPv4 } from "../../wire/addr.ts";
import { IpProtocol } from "../../wire/ip.ts";
import { TcpFlag, TcpPacket, TcpRepr } from "../../wire/tcp.ts";
import { AddrInUseError, AddrNotAvailableError, NetUnreachableError } from "../ip_errors.ts";
import type { IcmpErrorKind, IpOutput, Transport } from "../types.ts";
import { TcpConnection } from "./connection.ts";
import {
  CHALLENGE_ACK_LIMIT,
  DEFAULT_BACKLOG,
  DEFAULT_BUFFER_SIZE,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_RANGES,
  DEFAULT_SYN_BACKLOG,
  DELAYED_ACK_TIMEOUT,
  EPHEMERAL_FIRST,
  EPHEMERAL_LAST,
  IDLE_TRIM,
  MAX_RETRANSMITS,
  MIN_RTO,
  SYN_RETRIES,
  SYNACK_RETRIES,
} from "./constants.ts";
import { TcpError } from "./errors.ts";
import { acceptsNewSyn, icmpArrives, openFromListen, segmentArrives } from "./input.ts";
import { IsnGenerator } from "./isn.ts";
import { type ListenerHost, TcpListener } from "./listener.ts";
import { sendRst, sendStatelessReset, sendSyn } from "./output.ts";
import { seqAdd } from "./seq.ts";
import {
  newStats,
  RtxKind,
  State,
  Tcb,
  type TcbHost,
  type TcpLimits,
  type TcpStats,
} from "./tcb.ts";
import { onTimer } from "./timers.ts";
import { TimerHeap } from "./timer_heap.ts";

export interface TcpLayerOptions {
  ip: IpOutput;
  /** Random bytes (ISN secret, timestamp offsets, ports); defaults to crypto.getRandomValues. */
  random?: (n: number) => Uint8Array;
  limits?: Partial<TcpLimits>;
}

export interface TcpConnectOptions {
  dst: IpBytes;
  dstPort: number;
  /** One of our addresses; by default the IP layer's choice for `dst`. */
  src?: IpBytes;
  /** By default an ephemeral port. */
  srcPort?: number;
  /** Disable Nagle's algorithm from the start. */
  noDelay?: boolean;
}

export interface TcpListenOptions {
  /** One of our addresses; undefined listens on all of them, both families. */
  address?: IpBytes;
  /** 0 picks an ephemeral port. */
  port: number;
  /** Accept-queue limit (default 128). */
  backlog?: number;
}

/** The defaults for {@link TcpLimits}. */
export const DEFAULT_LIMITS: Readonly<TcpLimits> = {
  sendBuffer: DEFAULT_BUFFER_SIZE,
  receiveBuffer: DEFAULT_BUFFER_SIZE,
  maxConnections: DEFAULT_MAX_CONNECTIONS,
  synBacklog: DEFAULT_SYN_BACKLOG,
  maxRanges: DEFAULT_MAX_RANGES,
  synRetries: SYN_RETRIES,
  synAckRetries: SYNACK_RETRIES,
  maxRetransmits: MAX_RETRANSMITS,
  minRto: MIN_RTO,
  delayedAck: DELAYED_ACK_TIMEOUT,
};

function resolveLimits(partial: Partial<TcpLimits> = {}): TcpLimits {
  const limits = { ...DEFAULT_LIMITS, ...partial };
  for (const [name, v] of Object.entries(limits)) {
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
      throw new RangeError(`Cannot use TCP limit ${name} = ${v}: expected a whole number >= 0`);
    }
  }
  for (const name of ["sendBuffer", "receiveBuffer", "maxRanges"] as const) {
    if (limits[name] < 1) throw new RangeError(`Cannot use TCP limit ${name} = 0`);
  }
  if (limits.receiveBuffer > 0x3fff_c000) {
    throw new RangeError("Cannot use a receive buffer above 1 GiB (RFC 7323 2.3)");
  }
  return limits;
}

function checkPort(port: number, what: string, allowZero: boolean): void {
  if (!Number.isInteger(port) || port < (allowZero ? 0 : 1) || port > 65535) {
    throw new RangeError(
      `Cannot use ${what} ${port}: expected an integer ${allowZero ? 0 : 1}-65535`,
    );
  }
}

function defaultRandom(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
}

type Deferred =
  | { kind: "input"; now: number; src: IpBytes; dst: IpBytes; payload: Uint8Array }
  | {
    kind: "icmp";
    now: number;
    icmp: IcmpErrorKind;
    src: IpBytes;
    dst: IpBytes;
    quoted: Uint8Array;
  };

/**
 * TCP (RFC 9293) over an {@link IpOutput}, pure: time comes in as `now` (ms), and `pollAt()`
 * says when to call `tick`.
 *
 * @example
 * ```ts
 * import { TcpLayer } from "./layer.ts";
 * const sent: Uint8Array[] = [];
 * const me = new Uint8Array([10, 0, 0, 1]);
 * const tcp = new TcpLayer({
 *   ip: {
 *     send: (_s, _d, _p, seg) => void sent.push(seg),
 *     maxPayload: () => 1400,
 *     sourceFor: () => me,
 *     isLocal: () => true,
 *   },
 * });
 * const conn = tcp.connect(0, { dst: new Uint8Array([10, 0, 0, 2]), dstPort: 80 });
 * console.assert(conn.state === "SYN-SENT" && sent.length === 1 && tcp.pollAt() === 1000);
 * ```
 */
export class TcpLayer implements Transport {
  readonly protocol = IpProtocol.TCP;
  readonly stats: TcpStats = newStats();
  readonly limits: Readonly<TcpLimits>;

  readonly #ip: IpOutput;
  readonly #random: (n: number) => Uint8Array;
  readonly #isn: IsnGenerator;
  readonly #host: TcbHost;
  readonly #listenerHost: ListenerHost;
  /** TCBs by (localPort << 16 | remotePort); a few share a key only across addresses. */
  readonly #conns = new Map<number, Tcb[]>();
  #count = 0;
  readonly #listeners = new Map<number, TcpListener[]>();
  /** TCBs in TIME-WAIT, oldest first. */
  readonly #timeWait = new Set<Tcb>();
  readonly #heap = new TimerHeap<Tcb>();
  readonly #rx = new TcpRepr();
  #now = 0;
  #depth = 0;
  readonly #deferred: Deferred[] = [];
  #challengeSecond = -Infinity;
  #challengeCount = 0;

  constructor(options: TcpLayerOptions) {
    this.#ip = options.ip;
    this.#random = options.random ?? defaultRandom;
    this.limits = resolveLimits(options.limits);
    this.#isn = new IsnGenerator(this.#randomBytes(16));
    const limits = this.limits;
    const clock = () => this.#now;
    this.#host = {
      ip: this.#ip,
      limits,
      stats: this.stats,
      tx: new TcpRepr(),
      get now() {
        return clock();
      },
      reschedule: (t) => this.#heap.set(t, t.nextDeadline()),
      release: (t) => this.#remove(t),
      acceptRoom: (t) => t.listener === undefined || (t.listener as TcpListener)._acceptRoom(),
      established: (t) => (t.listener as TcpListener | undefined)?._enqueue(t),
      timeWait: (t) => void this.#timeWait.add(t),
      challengeAckAllowed: (now) => this.#challengeAckAllowed(now),
      enter: () => void this.#depth++,
      leave: () => this.#leave(),
    };
    this.#listenerHost = {
      get now() {
        return clock();
      },
      synBacklog: limits.synBacklog,
      removeListener: (l) => this.#removeListener(l),
      enter: () => void this.#depth++,
      leave: () => this.#leave(),
    };
  }

  /** Connections in the table (any state, TIME-WAIT and half-open included). */
  get connectionCount(): number {
    return this.#count;
  }

  /**
   * Gives back the empty buffers of every connection that neither sent nor received anything
   * for `quietMs`, and returns the bytes freed. Rings keep what a burst grew them to, and a
   * server with thousands of idle keep-alive connections would hold that for each; Linux frees
   * a segment's memory at its ACK, which a ring cannot. The host calls this every few seconds
   * rather than a timer per connection, so that `pollAt` keeps meaning "protocol work is due".
   */
  trimIdle(now: number, quietMs: number = IDLE_TRIM): number {
    let freed = 0;
    for (const list of this.#conns.values()) {
      for (const t of list) {
        if (now - Math.max(t.lastRecvAt, t.lastSendAt) >= quietMs) freed += t.releaseEmpty();
      }
    }
    return freed;
  }

  /**
   * Resets every connection, as a host whose stack goes away should (RFC 9293 3.10.5 ABORT for
   * each: RST where the connection is synchronized, nothing in SYN-SENT or TIME-WAIT), and returns
   * how many resets were sent. Without it the peers keep the connections of a process that ended
   * half-open, and the next process on the same address meets them: a SYN to a 4-tuple the peer
   * still holds gets a challenge ACK and waits out a retransmission, a second each (1000 held
   * connections made the next 1000 take over 20 s in the bench).
   */
  abortAll(now: number): number {
    this.#advance(now);
    this.#depth++;
    let resets = 0;
    try {
      for (const list of [...this.#conns.values()]) {
        for (const t of [...list]) {
          const st = t.state;
          if (st !== State.CLOSED && st !== State.SYN_SENT && st !== State.TIME_WAIT) {
            sendRst(t, this.#now);
            resets++;
          }
          t.finish();
        }
      }
    } finally {
      this.#leave();
    }
    return resets;
  }

  #randomBytes(n: number): Uint8Array {
    const b = this.#random(n);
    if (b.length < n) throw new RangeError(`The random source gave ${b.length} bytes, not ${n}`);
    return b;
  }

  #random32(): number {
    const b = this.#randomBytes(4);
    return ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
  }

  #advance(now: number): void {
    if (now > this.#now) this.#now = now;
  }

  #leave(): void {
    if (--this.#depth > 0) return;
    while (this.#deferred.length > 0) {
      const d = this.#deferred.shift()!;
      this.#depth++;
      try {
        if (d.kind === "input") this.#input(d.now, d.src, d.dst, d.payload);
        else this.#icmpError(d.now, d.icmp, d.src, d.dst, d.quoted);
      } finally {
        this.#depth--;
      }
    }
  }

  // --- table --------------------------------------------------------------------------------

  #find(local: IpBytes, localPort: number, remote: IpBytes, remotePort: number): Tcb | undefined {
    const list = this.#conns.get(localPort * 65536 + remotePort);
    if (!list) return undefined;
    for (let i = 0; i < list.length; i++) {
      const t = list[i]!;
      if (ipEquals(t.remote, remote) && ipEquals(t.local, local)) return t;
    }
    return undefined;
  }

  #insert(t: Tcb): void {
    const key = t.localPort * 65536 + t.remotePort;
    const list = this.#conns.get(key);
    if (list) list.push(t);
    else this.#conns.set(key, [t]);
    this.#count++;
  }

  #remove(t: Tcb): void {
    const key = t.localPort * 65536 + t.remotePort;
    const list = this.#conns.get(key);
    const i = list ? list.indexOf(t) : -1;
    if (list && i >= 0) {
      list.splice(i, 1);
      if (list.length === 0) this.#conns.delete(key);
      this.#count--;
    }
    this.#heap.remove(t);
    this.#timeWait.delete(t);
    t.listener?._forget(t);
  }

  /**
   * Room for one more connection? When the table is full, the oldest TIME-WAIT connection is
   * given up early, as Linux does beyond tcp_max_tw_buckets: a full table of them must not
   * lock out new connections.
   */
  #roomForOne(): boolean {
    if (this.#count < this.limits.maxConnections) return true;
    const oldest = this.#timeWait.values().next();
    if (oldest.done) return false;
    oldest.value.finish();
    return true;
  }

  #findListener(local: IpBytes, port: number): TcpListener | undefined {
    const list = this.#listeners.get(port);
    if (!list) return undefined;
    let wildcard: TcpListener | undefined;
    for (const l of list) {
      if (l.address === undefined) wildcard = l;
      else if (ipEquals(l.address, local)) return l;
    }
    return wildcard;
  }

  #removeListener(l: TcpListener): void {
    const list = this.#listeners.get(l.port);
    if (!list) return;
    const i = list.indexOf(l);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.#listeners.delete(l.port);
  }

  /** RFC 6056 3.3.1 (algorithm 1): start at a random port, probe upwards for a free 4-tuple. */
  #ephemeralPort(local: IpBytes, remote: IpBytes | undefined, remotePort: number): number {
    const count = EPHEMERAL_LAST - EPHEMERAL_FIRST + 1;
    const start = this.#random32() % count;
    for (let i = 0; i < count; i++) {
      const port = EPHEMERAL_FIRST + ((start + i) % count);
      if (this.#listeners.has(port)) continue;
      if (remote === undefined) {
        if (!this.#portInUse(port)) return port;
      } else if (!this.#find(local, port, remote, remotePort)) {
        return port;
      }
    }
    throw new AddrNotAvailableError("Cannot find a free local port");
  }

  #portInUse(port: number): boolean {
    for (const list of this.#conns.values()) if (list[0]!.localPort === port) return true;
    return false;
  }

  #challengeAckAllowed(now: number): boolean {
    if (now - this.#challengeSecond >= 1000) {
      this.#challengeSecond = now;
      this.#challengeCount = 0;
    }
    return ++this.#challengeCount <= CHALLENGE_ACK_LIMIT;
  }

  #newTcb(
    now: number,
    local: IpBytes,
    localPort: number,
    remote: IpBytes,
    remotePort: number,
  ): Tcb {
    const t = new Tcb(this.#host, local, localPort, remote, remotePort);
    t.iss = this.#isn.next(now, local, localPort, remote, remotePort);
    t.tsOffset = this.#random32();
    return t;
  }

  // --- user API ---------------------------------------------------------------------------------

  /**
   * Starts an active open (RFC 9293 3.10.1): sends SYN and returns the connection in SYN-SENT.
   * The outcome arrives as `onOpen`, or `onClose(error)` with ECONNREFUSED, ETIMEDOUT,
   * EHOSTUNREACH or ENETUNREACH.
   * @throws {NetUnreachableError} when we have no address of `dst`'s family.
   * @throws {AddrNotAvailableError} when `src` is not ours, or no ephemeral port is free.
   * @throws {AddrInUseError} when `srcPort` is given and the 4-tuple is taken.
   * @throws {TcpError} ENOBUFS when the connection limit is reached.
   */
  connect(now: number, options: TcpConnectOptions): TcpConnection {
    this.#advance(now);
    checkPort(options.dstPort, "destination port", false);
    if (options.srcPort !== undefined) checkPort(options.srcPort, "source port", false);
    const dst = unmapIPv4(options.dst).slice();
    let src: IpBytes;
    if (options.src !== undefined) {
      src = unmapIPv4(options.src).slice();
      if (!this.#ip.isLocal(src)) {
        throw new AddrNotAvailableError("Cannot connect from an address that is not ours");
      }
      if (src.length !== dst.length) {
        throw new NetUnreachableError("Cannot connect across address families");
      }
    } else {
      const s = this.#ip.sourceFor(dst);
      if (!s) {
        throw new NetUnreachableError(
          `Cannot connect: no ${dst.length === 4 ? "IPv4" : "IPv6"} address`,
        );
      }
      src = s.slice();
    }
    if (!this.#roomForOne()) {
      throw new TcpError("ENOBUFS", "Cannot connect: too many connections");
    }
    let srcPort: number;
    if (options.srcPort !== undefined) {
      srcPort = options.srcPort;
      if (this.#find(src, srcPort, dst, options.dstPort)) {
        throw new AddrInUseError(`Cannot connect from port ${srcPort}: the connection exists`);
      }
    } else {
      srcPort = this.#ephemeralPort(src, dst, options.dstPort);
    }
    const t = this.#newTcb(now, src, srcPort, dst, options.dstPort);
    t.noDelay = options.noDelay ?? false;
    const conn = new TcpConnection(t);
    this.#insert(t);
    this.stats.activeOpens++;
    t.state = State.SYN_SENT;
    this.#depth++;
    try {
      sendSyn(t, now);
      t.sndNxtOff = 0;
      t.rtxKind = RtxKind.RETRANSMIT;
      t.rtxAt = now + t.rtt.rto;
      t.reschedule();
    } finally {
      this.#leave();
    }
    return conn;
  }

  /**
   * Listens on `port` (RFC 9293 3.10.1 passive OPEN).
   * @throws {AddrInUseError} when a listener already covers this address and port.
   * @throws {AddrNotAvailableError} when `address` is not ours.
   */
  listen(options: TcpListenOptions): TcpListener {
    checkPort(options.port, "port", true);
    const address = options.address === undefined ? undefined : unmapIPv4(options.address).slice();
    if (address && !this.#ip.isLocal(address)) {
      throw new AddrNotAvailableError("Cannot listen on an address that is not ours");
    }
    let port = options.port;
    if (port === 0) port = this.#ephemeralPort(address ?? new Uint8Array(4), undefined, 0);
    const list = this.#listeners.get(port) ?? [];
    for (const l of list) {
      if (l.address === undefined || address === undefined || ipEquals(l.address, address)) {
        throw new AddrInUseError(`Cannot listen on port ${port}: it is in use`);
      }
    }
    const backlog = Math.max(1, Math.floor(options.backlog ?? DEFAULT_BACKLOG));
    const l = new TcpListener(this.#listenerHost, address, port, backlog);
    list.push(l);
    this.#listeners.set(port, list);
    return l;
  }

  // --- Transport ----------------------------------------------------------------------------------

  input(now: number, src: IpBytes, dst: IpBytes, payload: Uint8Array): void {
    if (this.#depth > 0) {
      this.#deferred.push({
        kind: "input",
        now,
        src: src.slice(),
        dst: dst.slice(),
        payload: payload.slice(),
      });
      return;
    }
    this.#depth++;
    try {
      this.#input(now, src, dst, payload);
    } finally {
      this.#leave();
    }
  }

  #input(now: number, src: IpBytes, dst: IpBytes, payload: Uint8Array): void {
    this.#advance(now);
    const stats = this.stats;
    stats.segmentsIn++;
    const packet = TcpPacket.check(payload);
    if (!packet) {
      stats.malformed++;
      return;
    }
    if (!packet.checksumValid(src, dst)) {
      stats.badChecksum++;
      return;
    }
    const seg = TcpRepr.parse(packet, this.#rx);
    if (!seg || seg.srcPort === 0 || seg.dstPort === 0) {
      stats.malformed++;
      return;
    }
    let t = this.#find(dst, seg.dstPort, src, seg.srcPort);
    if (t && acceptsNewSyn(t, seg) && this.#findListener(dst, seg.dstPort)) {
      // RFC 6191: a new incarnation of a connection in TIME-WAIT.
      t.finish();
      t = undefined;
    }
    if (t) {
      const l = t.listener;
      segmentArrives(t, now, seg);
      if (t.state !== State.CLOSED) t.reschedule();
      t.dispatch();
      l?._dispatch();
      return;
    }
    const f = seg.flags;
    if ((f & (TcpFlag.SYN | TcpFlag.ACK | TcpFlag.RST)) === TcpFlag.SYN) {
      const l = this.#findListener(dst, seg.dstPort);
      if (l) {
        this.#passiveOpen(now, l, src, dst, seg);
        return;
      }
    }
    // RFC 9293 3.10.7.1 (CLOSED) and 3.10.7.2 (LISTEN): answer anything but a RST with RST;
    // a listener ignores segments that carry neither SYN nor ACK.
    if (f & TcpFlag.RST) return;
    if (f & TcpFlag.ACK) {
      sendStatelessReset(this.#host, dst, seg.dstPort, src, seg.srcPort, seg.ack, undefined);
    } else if (!this.#findListener(dst, seg.dstPort)) {
      const len = seg.payload.length + (f & TcpFlag.SYN ? 1 : 0) + (f & TcpFlag.FIN ? 1 : 0);
      sendStatelessReset(this.#host, dst, seg.dstPort, src, seg.srcPort, 0, seqAdd(seg.seq, len));
    }
  }

  #passiveOpen(now: number, l: TcpListener, src: IpBytes, dst: IpBytes, seg: TcpRepr): void {
    if (!l._hasRoom() || !this.#roomForOne()) {
      this.stats.synDropped++;
      return;
    }
    const t = this.#newTcb(now, dst.slice(), seg.dstPort, src.slice(), seg.srcPort);
    l._adopt(t);
    this.#insert(t);
    this.stats.passiveOpens++;
    openFromListen(t, now, seg);
    t.reschedule();
  }

  icmpError(
    now: number,
    kind: IcmpErrorKind,
    src: IpBytes,
    dst: IpBytes,
    quoted: Uint8Array,
  ): void {
    if (this.#depth > 0) {
      this.#deferred.push({
        kind: "icmp",
        now,
        icmp: kind,
        src: src.slice(),
        dst: dst.slice(),
        quoted: quoted.slice(),
      });
      return;
    }
    this.#depth++;
    try {
      this.#icmpError(now, kind, src, dst, quoted);
    } finally {
      this.#leave();
    }
  }

  /** `src`/`dst`/`quoted` describe the segment we sent: `src` is ours (see icmp.ts). */
  #icmpError(
    now: number,
    kind: IcmpErrorKind,
    src: IpBytes,
    dst: IpBytes,
    quoted: Uint8Array,
  ): void {
    this.#advance(now);
    if (quoted.length < 8) return;
    const srcPort = (quoted[0]! << 8) | quoted[1]!;
    const dstPort = (quoted[2]! << 8) | quoted[3]!;
    const seq = ((quoted[4]! << 24) | (quoted[5]! << 16) | (quoted[6]! << 8) | quoted[7]!) >>> 0;
    const t = this.#find(src, srcPort, dst, dstPort);
    if (!t) return;
    const l = t.listener;
    icmpArrives(t, now, kind, seq);
    if (t.state !== State.CLOSED) t.reschedule();
    t.dispatch();
    l?._dispatch();
  }

  pollAt(): number {
    return this.#heap.peekDeadline();
  }

  tick(now: number): void {
    this.#advance(now);
    this.#depth++;
    const due: Tcb[] = [];
    let i = 0;
    try {
      for (let t = this.#heap.popDue(now); t; t = this.#heap.popDue(now)) due.push(t);
      for (; i < due.length; i++) {
        const t = due[i]!;
        if (t.state === State.CLOSED) continue;
        const l = t.listener;
        onTimer(t, now);
        if (t.state !== State.CLOSED) t.reschedule();
        t.dispatch();
        l?._dispatch();
      }
    } finally {
      // If a hook threw, the TCBs not yet handled go back in the heap.
      for (let j = i; j < due.length; j++) {
        const t = due[j]!;
        if (t.state !== State.CLOSED) t.reschedule();
      }
      this.#leave();
    }
  }
}
