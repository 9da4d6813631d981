/**
 * A `node:net` server as a queue of accepted connections. Two kinds of forward listener need
 * `node:net` rather than `Deno.listen`: a socket passed by the service manager (only `node:net`
 * adopts a descriptor), and loopback TCP, because a `node:net` socket can be closed with a reset
 * (`resetAndDestroy`) and a `Deno.Conn` cannot: when the tunnel side of a relay is reset, the
 * local client must see ECONNRESET as it would from the server itself, not a clean end of stream.
 *
 * @module
 */
import net from "node:net";
import { NodeSocketDuplex } from "./relay.ts";

export class NodeListener {
  readonly #server: net.Server;
  #pending: NodeSocketDuplex[] = [];
  #waiter: (() => void) | undefined;
  #closed = false;

  private constructor(server: net.Server) {
    this.#server = server;
    server.on("connection", (s: net.Socket) => {
      this.#pending.push(new NodeSocketDuplex(s));
      const w = this.#waiter;
      this.#waiter = undefined;
      w?.();
    });
  }

  /**
   * Listens as `server.listen(options)` does (a port, or `{ fd }` to adopt a descriptor); rejects
   * with the listen error (EADDRINUSE, EACCES, not a listening socket).
   */
  static listen(options: net.ListenOptions | { fd: number }): Promise<NodeListener> {
    return new Promise((resolve, reject) => {
      // Half-close is carried by the relay: node must not end our side at the peer's FIN.
      const server = net.createServer({ allowHalfOpen: true });
      server.once("error", reject);
      server.listen(options, () => {
        server.off("error", reject);
        resolve(new NodeListener(server));
      });
    });
  }

  /** `host:port` (`[v6]:port`) for TCP; a Unix socket shows its path or nothing. */
  address(): string | undefined {
    const a = this.#server.address();
    if (a && typeof a === "object") {
      return a.family === "IPv6" ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
    }
    return typeof a === "string" ? a : undefined;
  }

  /** The next connection; rejects with `BadResource` once closed. */
  async accept(): Promise<NodeSocketDuplex> {
    for (;;) {
      const next = this.#pending.shift();
      if (next) return next;
      if (this.#closed) throw new Deno.errors.BadResource("the listener is closed");
      await new Promise<void>((r) => this.#waiter = r);
    }
  }

  /** Stops accepting and drops connections not yet taken. */
  close(): Promise<void> {
    this.#closed = true;
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
    for (const p of this.#pending) p.close();
    this.#pending = [];
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}
