/**
 * TCP over the tunnel shaped like `Deno.Conn` and `Deno.Listener`: promise-based `read`/`write`,
 * web streams, `closeWrite`, addresses. The pure TCP layer raises callbacks; this file turns them
 * into promises. Reads pull from the connection's receive buffer only when asked, so a reader
 * that stops lets the buffer fill and the advertised window close: memory stays bounded and
 * the sender is paced, as with a kernel socket.
 *
 * @module
 */
import { formatIP, type IpBytes } from "../../wire/addr.ts";
import type { TcpConnection } from "../../netstack/tcp/connection.ts";
import type { TcpError } from "../../netstack/tcp/errors.ts";
import type { TcpLayer } from "../../netstack/tcp/layer.ts";
import type { TcpListener } from "../../netstack/tcp/listener.ts";

/** What the wrappers need from the tunnel: the clock and a nudge for the timers. */
export interface TcpHost {
  readonly tcp: TcpLayer;
  now(): number;
  poke(): void;
}

/** Deno's error classes by errno, so callers can `instanceof Deno.errors.ConnectionRefused`. */
export function toDenoError(e: TcpError | undefined, fallback = "connection closed"): Error {
  const message = e ? `${e.message} (${e.code})` : fallback;
  let err: Error;
  switch (e?.code) {
    case "ECONNREFUSED":
      err = new Deno.errors.ConnectionRefused(message);
      break;
    case "ECONNRESET":
      err = new Deno.errors.ConnectionReset(message);
      break;
    case "ETIMEDOUT":
      err = new Deno.errors.TimedOut(message);
      break;
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      err = new Deno.errors.NetworkUnreachable(message);
      break;
    case "EPIPE":
      err = new Deno.errors.BrokenPipe(message);
      break;
    default:
      err = new Deno.errors.NotConnected(message);
  }
  Object.defineProperty(err, "code", { value: e?.code ?? "ENOTCONN" });
  return err;
}

export function netAddr(addr: IpBytes, port: number): Deno.NetAddr {
  return { transport: "tcp", hostname: formatIP(addr), port };
}

/** A one-shot "something changed" signal that many awaits can share. */
class Signal {
  #waiters: (() => void)[] = [];
  wait(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
  fire(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }
}

/** A TCP connection over the tunnel, with the surface of `Deno.Conn`. */
export class TunnelConn {
  readonly localAddr: Deno.NetAddr;
  readonly remoteAddr: Deno.NetAddr;
  readonly #conn: TcpConnection;
  readonly #host: TcpHost;
  readonly #changed = new Signal();
  #closed = false;
  #readable?: ReadableStream<Uint8Array<ArrayBuffer>>;
  #writable?: WritableStream<Uint8Array>;

  constructor(conn: TcpConnection, host: TcpHost) {
    this.#conn = conn;
    this.#host = host;
    this.localAddr = netAddr(conn.localAddr, conn.localPort);
    this.remoteAddr = netAddr(conn.remoteAddr, conn.remotePort);
    const fire = () => this.#changed.fire();
    conn.onReadable = fire;
    conn.onWritable = fire;
    conn.onEnd = fire;
    conn.onClose = fire;
  }

  /** The underlying pure connection, for status and tests. */
  get tcp(): TcpConnection {
    return this.#conn;
  }

  /** Runs one operation on the connection at the current time, then re-arms the timers. */
  #op<T>(fn: () => T): T {
    this.#host.tcp.tick(this.#host.now());
    try {
      return fn();
    } finally {
      this.#host.poke();
    }
  }

  /** Reads into `p`; resolves to the count, or null at the end of the stream (peer's FIN). */
  async read(p: Uint8Array): Promise<number | null> {
    if (p.length === 0) return 0;
    for (;;) {
      if (this.#closed) throw new Deno.errors.BadResource("the connection is closed");
      const c = this.#conn;
      if (c.readableLength > 0) return this.#op(() => c.read(p).length);
      if (c.readableEnded) return null;
      if (c.state === "CLOSED") throw toDenoError(c.error);
      await this.#changed.wait();
    }
  }

  /** Takes everything buffered now as one new array (sized to it), or null at end of stream. */
  async readChunk(): Promise<Uint8Array<ArrayBuffer> | null> {
    for (;;) {
      if (this.#closed) throw new Deno.errors.BadResource("the connection is closed");
      const c = this.#conn;
      if (c.readableLength > 0) {
        return this.#op(() => c.read() as Uint8Array<ArrayBuffer>);
      }
      if (c.readableEnded) return null;
      if (c.state === "CLOSED") throw toDenoError(c.error);
      await this.#changed.wait();
    }
  }

  /** Writes as much of `p` as the send buffer takes now (at least one byte), like a socket. */
  async write(p: Uint8Array): Promise<number> {
    if (p.length === 0) return 0;
    for (;;) {
      if (this.#closed) throw new Deno.errors.BadResource("the connection is closed");
      const c = this.#conn;
      if (c.state === "CLOSED") throw toDenoError(c.error);
      let n: number;
      try {
        n = this.#op(() => c.write(p));
      } catch (e) {
        throw toDenoError(e as TcpError);
      }
      if (n > 0) return n;
      await this.#changed.wait();
    }
  }

  /** Writes all of `p`, waiting for buffer space as needed. */
  async writeAll(p: Uint8Array): Promise<void> {
    let off = 0;
    while (off < p.length) off += await this.write(p.subarray(off));
  }

  /** Sends FIN after what is queued: the peer reads end of stream; we can still read. */
  closeWrite(): Promise<void> {
    this.#op(() => this.#conn.shutdownWrite());
    return Promise.resolve();
  }

  /** Closes both directions (gracefully; a reset if unread data remains, as Linux does). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#op(() => this.#conn.close());
    this.#changed.fire();
  }

  /** Resets the connection at once. */
  abort(): void {
    this.#closed = true;
    this.#op(() => this.#conn.abort());
    this.#changed.fire();
  }

  setNoDelay(noDelay = true): void {
    this.#op(() => this.#conn.setNoDelay(noDelay));
  }

  setKeepAlive(keepAlive = true): void {
    this.#op(() => this.#conn.setKeepAlive(keepAlive));
  }

  /** Resolves once the peer's FIN has arrived and every byte before it has been read. */
  get readable(): ReadableStream<Uint8Array<ArrayBuffer>> {
    this.#readable ??= new ReadableStream<Uint8Array<ArrayBuffer>>({
      pull: async (controller) => {
        try {
          const chunk = await this.readChunk();
          if (chunk === null) controller.close();
          else controller.enqueue(chunk);
        } catch (e) {
          controller.error(e);
        }
      },
      cancel: () => this.close(),
      // Nothing is pulled ahead of the reader: unread bytes stay in the TCP receive buffer,
      // where they count against the window we advertise.
    }, { highWaterMark: 0 });
    return this.#readable;
  }

  get writable(): WritableStream<Uint8Array> {
    this.#writable ??= new WritableStream<Uint8Array>({
      write: (chunk) => this.writeAll(chunk),
      close: () => this.closeWrite(),
      abort: () => this.abort(),
    });
    return this.#writable;
  }

  /** Waits until the connection is fully closed (both FINs, or a reset); returns its error. */
  async closed(): Promise<TcpError | undefined> {
    while (this.#conn.state !== "CLOSED" && this.#conn.state !== "TIME-WAIT") {
      await this.#changed.wait();
    }
    return this.#conn.error;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Opens a connection; resolves once established, rejects with Deno's error class otherwise. */
export async function connectTcp(
  host: TcpHost,
  options: { dst: IpBytes; port: number; noDelay?: boolean; signal?: AbortSignal },
): Promise<TunnelConn> {
  host.tcp.tick(host.now());
  let conn: TcpConnection;
  try {
    conn = host.tcp.connect(host.now(), {
      dst: options.dst,
      dstPort: options.port,
      noDelay: options.noDelay,
    });
  } finally {
    host.poke();
  }
  await new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      conn.abort();
      host.poke();
      reject(options.signal!.reason ?? new Deno.errors.Interrupted("connect aborted"));
    };
    options.signal?.addEventListener("abort", onAbort, { once: true });
    conn.onOpen = () => {
      options.signal?.removeEventListener("abort", onAbort);
      resolve();
    };
    conn.onClose = (e) => {
      options.signal?.removeEventListener("abort", onAbort);
      reject(toDenoError(e, "connection closed while connecting"));
    };
  });
  return new TunnelConn(conn, host);
}

/** A listening TCP socket on the tunnel, with the surface of `Deno.Listener`. */
export class TunnelListener implements AsyncIterable<TunnelConn> {
  readonly addr: Deno.NetAddr;
  readonly #listener: TcpListener;
  readonly #host: TcpHost;
  readonly #changed = new Signal();

  constructor(listener: TcpListener, host: TcpHost, addr: Deno.NetAddr) {
    this.#listener = listener;
    this.#host = host;
    this.addr = addr;
    listener.onAccept = () => this.#changed.fire();
  }

  /** Waits for the next established connection. */
  async accept(): Promise<TunnelConn> {
    for (;;) {
      if (this.#listener.closed) throw new Deno.errors.BadResource("the listener is closed");
      const conn = this.#listener.accept();
      if (conn) {
        this.#host.poke();
        return new TunnelConn(conn, this.#host);
      }
      await this.#changed.wait();
    }
  }

  close(): void {
    this.#listener.close();
    this.#host.poke();
    this.#changed.fire();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<TunnelConn> {
    for (;;) {
      try {
        yield await this.accept();
      } catch (e) {
        if (e instanceof Deno.errors.BadResource) return;
        throw e;
      }
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
