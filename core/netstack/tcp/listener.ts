/**
 * A listening socket (RFC 9293 LISTEN). Two bounded queues, as in Linux: half-open connections
 * (SYN-RECEIVED, at most `limits.synBacklog`) and connections whose handshake completed and
 * that wait for `accept()` (at most `backlog`). A SYN that finds either full is dropped, and the
 * peer retries; no SYN cookies.
 *
 * @module
 */
import type { IpBytes } from "../../wire/addr.ts";
import { TcpConnection } from "./connection.ts";
import { sendRst } from "./output.ts";
import type { Tcb, TcbListener } from "./tcb.ts";

/** What a listener needs from its layer. */
export interface ListenerHost {
  readonly now: number;
  readonly synBacklog: number;
  removeListener(l: TcpListener): void;
  enter(): void;
  leave(): void;
}

/**
 * Created by {@link TcpLayer.listen}. Pull connections with {@link accept}; {@link onAccept}
 * says when there is one to pull.
 *
 * @example
 * ```ts ignore
 * const l = tcp.listen({ port: 8080 });
 * l.onAccept = () => {
 *   for (let c = l.accept(); c; c = l.accept()) c.onReadable = () => c.write(c.read());
 * };
 * ```
 */
export class TcpListener implements TcbListener {
  /** The bound address; undefined for the wildcard of both families. */
  readonly address: IpBytes | undefined;
  readonly port: number;
  /** Accept-queue limit. */
  readonly backlog: number;
  /**
   * A connection completed its handshake and waits in the accept queue. Called after the
   * segment was processed; call {@link accept} until it returns undefined.
   */
  onAccept?: () => void;

  readonly #host: ListenerHost;
  readonly #halfOpen = new Set<Tcb>();
  readonly #queue: Tcb[] = [];
  #signalled = false;
  #closed = false;

  /** @internal Use {@link TcpLayer.listen}. */
  constructor(host: ListenerHost, address: IpBytes | undefined, port: number, backlog: number) {
    this.#host = host;
    this.address = address;
    this.port = port;
    this.backlog = backlog;
  }

  /** Connections waiting for accept(). */
  get pending(): number {
    return this.#queue.length;
  }

  /** Half-open connections (SYN received, handshake not complete). */
  get halfOpen(): number {
    return this.#halfOpen.size;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * The oldest connection that completed its handshake, or undefined. It may already hold
   * data, or even the peer's FIN: check `readableLength` and `readableEnded` before waiting for
   * hooks. A connection reset before it was accepted is not returned.
   */
  accept(): TcpConnection | undefined {
    const tcb = this.#queue.shift();
    if (!tcb) return undefined;
    tcb.queued = false;
    tcb.listener = undefined;
    return new TcpConnection(tcb);
  }

  /**
   * Stops listening. Connections not yet accepted, half-open or queued, are reset (as Linux
   * does when a listening socket with a backlog is closed).
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const host = this.#host;
    host.enter();
    try {
      host.removeListener(this);
      const all = [...this.#halfOpen, ...this.#queue];
      for (const t of all) {
        sendRst(t, host.now);
        t.finish();
      }
    } finally {
      host.leave();
    }
  }

  /** @internal May a new SYN start a handshake here? */
  _hasRoom(): boolean {
    return !this.#closed && this.#halfOpen.size < this.#host.synBacklog &&
      this.#queue.length < this.backlog;
  }

  /** @internal A new half-open connection. */
  _adopt(tcb: Tcb): void {
    tcb.listener = this;
    this.#halfOpen.add(tcb);
  }

  /** @internal Room for one more completed connection? */
  _acceptRoom(): boolean {
    return this.#queue.length < this.backlog;
  }

  /** @internal A half-open connection completed its handshake. */
  _enqueue(tcb: Tcb): void {
    this.#halfOpen.delete(tcb);
    this.#queue.push(tcb);
    tcb.queued = true;
    this.#signalled = true;
  }

  /** @internal The TCB closed before it was accepted. */
  _forget(tcb: Tcb): void {
    if (tcb.queued) {
      const i = this.#queue.indexOf(tcb);
      if (i >= 0) this.#queue.splice(i, 1);
      tcb.queued = false;
    } else {
      this.#halfOpen.delete(tcb);
    }
    tcb.listener = undefined;
  }

  /** @internal Calls onAccept if a connection was queued since the last call. */
  _dispatch(): void {
    if (!this.#signalled) return;
    this.#signalled = false;
    if (this.#queue.length > 0) this.onAccept?.();
  }
}
