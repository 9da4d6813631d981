/**
 * The user's handle on one connection: bounded buffers to write into and read from, shutdown,
 * close and abort, options, and hooks the host drives. Every call acts at once, at the layer's
 * latest time (`now` of the last `input`/`tick`/`connect`); a host that wants exact timing calls
 * `tick(now)` before acting.
 *
 * Hooks are called after the segment or timer that caused them was fully processed, never in
 * the middle; it is safe to read, write, close or abort from inside them.
 *
 * Streams fit on top without extra copies: `read(view)` copies from the receive buffer straight
 * into a BYOB request's view, and `write(chunk)` copies a chunk into the send buffer, returning
 * how much fitted; `onWritable` says when to offer the rest.
 *
 * @module
 */
import type { IpBytes } from "../../wire/addr.ts";
import {
  FIN_WAIT_2_TIMEOUT,
  KEEPALIVE_COUNT,
  KEEPALIVE_IDLE,
  KEEPALIVE_INTERVAL,
} from "./constants.ts";
import { TcpError } from "./errors.ts";
import { canSendData, sendRst, transmit } from "./output.ts";
import { seqDiff } from "./seq.ts";
import { State, STATE_NAMES, type Tcb, type TcpStateName } from "./tcb.ts";

const EMPTY = new Uint8Array(0);

/** Keepalive settings (Linux names: TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT), ms. */
export interface KeepAliveOptions {
  /** Idle time before the first probe (default 2 h, RFC 1122 4.2.3.6). */
  idle?: number;
  /** Between unanswered probes (default 75 s). */
  interval?: number;
  /** Unanswered probes before ETIMEDOUT (default 9). */
  count?: number;
}

/** A snapshot of a connection's internals, as `ss -ti` shows them. */
export interface TcpInfo {
  state: TcpStateName;
  /** Smoothed RTT and its variation, ms (0 before any sample). */
  srtt: number;
  rttvar: number;
  rto: number;
  cwnd: number;
  ssthresh: number;
  /** Data bytes in a full segment we send. */
  mss: number;
  /** MSS we advertised. */
  advertisedMss: number;
  /** The peer's current window, bytes. */
  sendWindow: number;
  /** The window we last advertised, bytes. */
  receiveWindow: number;
  bytesInFlight: number;
  /** Window scale shifts in use (send: the peer's; receive: ours), undefined when off. */
  windowScale: { send: number; receive: number } | undefined;
  sack: boolean;
  timestamps: boolean;
}

/**
 * One TCP connection, from {@link TcpLayer.connect} or a listener's `accept()`.
 *
 * @example
 * ```ts ignore
 * const conn = tcp.connect(now, { dst, dstPort: 80 });
 * conn.onOpen = () => conn.write(new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n"));
 * conn.onReadable = () => console.log(new TextDecoder().decode(conn.read()));
 * conn.onEnd = () => conn.close();
 * conn.onClose = (err) => console.log("closed", err?.code ?? "cleanly");
 * ```
 */
export class TcpConnection {
  /** The handshake completed (active opens; accepted connections are already open). */
  onOpen?: () => void;
  /** New in-order data can be read. */
  onReadable?: () => void;
  /** A write was cut short earlier, and there is room in the send buffer again. */
  onWritable?: () => void;
  /** The peer sent FIN: after the buffered data, read returns nothing more. */
  onEnd?: () => void;
  /**
   * The connection is over for the user: both directions closed (TIME-WAIT or CLOSED), reset,
   * timed out or aborted. `error` is set when it failed. Called once.
   */
  onClose?: (error?: TcpError) => void;

  readonly #tcb: Tcb;

  /** @internal Made by the layer. */
  constructor(tcb: Tcb) {
    this.#tcb = tcb;
    tcb.user = this;
  }

  get localAddr(): IpBytes {
    return this.#tcb.local;
  }
  get localPort(): number {
    return this.#tcb.localPort;
  }
  get remoteAddr(): IpBytes {
    return this.#tcb.remote;
  }
  get remotePort(): number {
    return this.#tcb.remotePort;
  }

  get state(): TcpStateName {
    return STATE_NAMES[this.#tcb.state]!;
  }

  /** The error the connection ended with, if it failed. */
  get error(): TcpError | undefined {
    return this.#tcb.error;
  }

  /** Bytes waiting to be read. */
  get readableLength(): number {
    return this.#tcb.rcvBuf.readable;
  }

  /** The peer's FIN arrived and every byte before it was read: read() will return no more. */
  get readableEnded(): boolean {
    return this.#tcb.finReceived && this.#tcb.rcvBuf.readable === 0;
  }

  /** Bytes written and not yet acknowledged by the peer. */
  get writableLength(): number {
    return this.#tcb.sendBuf.length;
  }

  /** Room left in the send buffer. */
  get writableFree(): number {
    const t = this.#tcb;
    return t.finQueued || t.state === State.CLOSED ? 0 : t.sendBuf.free;
  }

  get noDelay(): boolean {
    return this.#tcb.noDelay;
  }

  get info(): TcpInfo {
    const t = this.#tcb;
    return {
      state: this.state,
      srtt: t.rtt.srtt,
      rttvar: t.rtt.rttvar,
      rto: t.rtt.rto,
      cwnd: t.cc.cwnd,
      ssthresh: t.cc.ssthresh,
      mss: t.smss,
      advertisedMss: t.ourMss,
      sendWindow: t.sndWnd,
      receiveWindow: Math.max(0, seqDiff(t.rcvAdvEdge, t.rcvNxt)),
      bytesInFlight: Math.max(0, t.flight),
      windowScale: t.wsOn ? { send: t.sndShift, receive: t.rcvShift } : undefined,
      sack: t.sackOn,
      timestamps: t.tsOn,
    };
  }

  /**
   * Ends a unit of work that began with `host.enter()` (every call below): the TCB's deadline
   * goes back to the layer, the hooks run, then any input that arrived meanwhile (loopback).
   */
  #settle(t: Tcb): void {
    try {
      if (t.state !== State.CLOSED) t.reschedule();
      t.dispatch();
    } finally {
      t.host.leave();
    }
  }

  /**
   * Copies as much of `data` as fits into the send buffer and returns the count; 0 means the
   * buffer is full: wait for {@link onWritable}. Data written before the handshake completes
   * is sent after it.
   * @throws {TcpError} EPIPE after `shutdownWrite`/`close`, or once the connection has ended.
   */
  write(data: Uint8Array): number {
    const t = this.#tcb;
    if (t.finQueued || t.state === State.CLOSED || t.state > State.CLOSE_WAIT) {
      throw new TcpError("EPIPE", "Cannot write: the connection is shut down for writing");
    }
    if (data.length === 0) return 0;
    t.host.enter();
    try {
      const n = t.sendBuf.push(data);
      t.writtenOff += n;
      if (n < data.length) t.writeBlocked = true;
      if (n > 0 && canSendData(t.state)) transmit(t, t.host.now);
      return n;
    } finally {
      this.#settle(t);
    }
  }

  /**
   * Takes received bytes: copies them into `into` and returns the filled part of it, or, with
   * no argument, returns all that is buffered in a new array. An empty result means nothing is
   * buffered (see {@link readableEnded} for the end of the stream). Reading reopens the window;
   * when that is worth telling the peer, an ACK goes out.
   */
  read(into?: Uint8Array): Uint8Array {
    const t = this.#tcb;
    const avail = t.rcvBuf.readable;
    if (avail === 0) return into ? into.subarray(0, 0) : EMPTY;
    const out = into ? into.subarray(0, Math.min(into.length, avail)) : new Uint8Array(avail);
    t.host.enter();
    try {
      t.rcvBuf.read(out);
      if (t.state === State.CLOSED || t.state === State.TIME_WAIT) {
        t.rcvBuf.releaseIfEmpty();
      } else if (!t.finReceived && t.state !== State.SYN_SENT && t.windowUpdateWanted()) {
        t.ackNow = true;
        transmit(t, t.host.now);
      }
      return out;
    } finally {
      this.#settle(t);
    }
  }

  /**
   * Sends FIN after all queued data (RFC 9293 3.10.4 CLOSE, half-close): the peer reads end of
   * stream; we can still read what it sends.
   */
  shutdownWrite(): void {
    const t = this.#tcb;
    t.host.enter();
    try {
      shutdown(t, t.host.now);
    } finally {
      this.#settle(t);
    }
  }

  /**
   * Closes gracefully: FIN after queued data, and nothing more will be read. If received data
   * is still unread, the connection is reset instead (RFC 2525 2.17, as Linux does), since the
   * peer would otherwise believe it was delivered. Data the peer sends afterwards is answered
   * with RST. No-op once closed.
   */
  close(): void {
    const t = this.#tcb;
    if (t.state === State.CLOSED || t.orphaned) return;
    const now = t.host.now;
    t.host.enter();
    try {
      if (t.state === State.SYN_SENT) {
        // RFC 9293 3.10.4: delete the TCB; nothing was sent that needs an answer.
        t.finish();
      } else if (t.rcvBuf.readable > 0 || t.rcvBuf.ranges.count > 0) {
        abortNow(t, now);
      } else {
        t.orphaned = true;
        shutdown(t, now);
        if (t.state === State.FIN_WAIT_2) t.lifeAt = now + FIN_WAIT_2_TIMEOUT;
      }
    } finally {
      this.#settle(t);
    }
  }

  /** Resets the connection at once (RFC 9293 3.10.5 ABORT): RST to the peer, buffers dropped. */
  abort(): void {
    const t = this.#tcb;
    t.host.enter();
    try {
      abortNow(t, t.host.now);
    } finally {
      this.#settle(t);
    }
  }

  /** Turns Nagle's algorithm off (true) or on (false), like TCP_NODELAY. */
  setNoDelay(noDelay = true): void {
    const t = this.#tcb;
    t.host.enter();
    try {
      t.noDelay = noDelay;
      // Linux: setting TCP_NODELAY pushes what Nagle was holding back.
      if (noDelay && canSendData(t.state)) transmit(t, t.host.now);
    } finally {
      this.#settle(t);
    }
  }

  /** Turns keepalive probes on or off (SO_KEEPALIVE with TCP_KEEPIDLE/INTVL/CNT). */
  setKeepAlive(enable: boolean, options: KeepAliveOptions = {}): void {
    const t = this.#tcb;
    t.host.enter();
    try {
      t.keepAlive = enable;
      t.keepIdle = options.idle ?? KEEPALIVE_IDLE;
      t.keepInterval = options.interval ?? KEEPALIVE_INTERVAL;
      t.keepCount = options.count ?? KEEPALIVE_COUNT;
      t.keepProbes = 0;
      const synchronized = t.state !== State.SYN_SENT && t.state !== State.SYN_RECEIVED;
      const now = t.host.now;
      t.keepAt = enable && synchronized ? Math.max(now, t.lastRecvAt) + t.keepIdle : Infinity;
    } finally {
      this.#settle(t);
    }
  }
}

function shutdown(t: Tcb, now: number): void {
  if (t.finQueued || t.state === State.CLOSED) return;
  t.finQueued = true;
  t.finOff = t.writtenOff;
  switch (t.state) {
    case State.ESTABLISHED:
      t.state = State.FIN_WAIT_1;
      break;
    case State.CLOSE_WAIT:
      t.state = State.LAST_ACK;
      break;
      // SYN-SENT, SYN-RECEIVED: the FIN goes after the handshake (RFC 9293 3.10.4 "queue for
      // processing after entering ESTABLISHED"; see `establish` in input.ts).
  }
  if (canSendData(t.state)) transmit(t, now);
}

function abortNow(t: Tcb, now: number): void {
  const st = t.state;
  // RFC 9293 3.10.5: a reset is sent in the synchronized states (and SYN-RECEIVED).
  if (st !== State.CLOSED && st !== State.SYN_SENT && st !== State.TIME_WAIT) sendRst(t, now);
  t.finish();
}
