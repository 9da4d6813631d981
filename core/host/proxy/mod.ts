/**
 * `wrapguard proxy`'s server: SOCKS5 and HTTP listeners on this machine (loopback unless told
 * otherwise), every accepted connection served on its own:
 *
 * ```text
 *   accept ─► request phase (≤ 30 s, else closed) ─► dial through the tunnel ─► relay
 * ```
 *
 * The request phase is in socks5.ts and http.ts; both share the tunnel, the
 * credentials and the log. Nothing is ever sent to the host network: a destination outside every
 * peer's AllowedIPs is refused.
 *
 * Folder: `socks5.ts` + `socks5_wire.ts` + `socks5_udp.ts` (RFC 1928/1929), `http.ts` (CONNECT
 * and absolute-form requests), `io.ts` (buffered reads, credentials, listen addresses).
 *
 * @module
 */
import { type Logger, silentLogger } from "../log.ts";
import { serveHttp } from "./http.ts";
import { BufferedDuplex, type Credentials, type ListenAddr, ProtocolError } from "./io.ts";
import { serveSocks5 } from "./socks5.ts";
import type { Tunnel } from "../tunnel/mod.ts";

/** How long a client has to finish its request before it is disconnected. */
export const RequestTimeoutMs = 30_000;

export type ProxyProtocol = "socks5" | "http";

export interface ProxyOptions {
  socks5?: readonly ListenAddr[];
  http?: readonly ListenAddr[];
  /** When given, clients must authenticate (SOCKS5 RFC 1929, HTTP Basic). */
  credentials?: Credentials;
  logger?: Logger;
  /** Default {@link RequestTimeoutMs}. */
  requestTimeoutMs?: number;
}

/** A listening proxy endpoint. */
export interface ProxyListening {
  protocol: ProxyProtocol;
  /** The address actually bound (the port, when 0 was asked, is the one taken). */
  hostname: string;
  port: number;
}

/** The SOCKS5 and HTTP proxy listeners of one tunnel. */
export class ProxyServer {
  readonly listening: readonly ProxyListening[];
  readonly #tunnel: Tunnel;
  readonly #listeners: Deno.TcpListener[];
  readonly #opts: ProxyOptions;
  readonly #logger: Logger;
  readonly #conns = new Set<BufferedDuplex>();
  readonly #loops: Promise<void>[] = [];
  #closed = false;
  #nextId = 0;

  private constructor(
    tunnel: Tunnel,
    listeners: { protocol: ProxyProtocol; listener: Deno.TcpListener }[],
    opts: ProxyOptions,
  ) {
    this.#tunnel = tunnel;
    this.#opts = opts;
    this.#logger = opts.logger ?? silentLogger;
    this.#listeners = listeners.map((l) => l.listener);
    this.listening = listeners.map(({ protocol, listener }) => ({
      protocol,
      hostname: listener.addr.hostname,
      port: listener.addr.port,
    }));
    for (const { protocol, listener } of listeners) {
      this.#loops.push(this.#acceptLoop(protocol, listener));
    }
  }

  /** Binds every listener (all or none) and starts serving. */
  static start(tunnel: Tunnel, opts: ProxyOptions): ProxyServer {
    const wanted: { protocol: ProxyProtocol; addr: ListenAddr }[] = [
      ...(opts.socks5 ?? []).map((addr) => ({ protocol: "socks5" as const, addr })),
      ...(opts.http ?? []).map((addr) => ({ protocol: "http" as const, addr })),
    ];
    const bound: { protocol: ProxyProtocol; listener: Deno.TcpListener }[] = [];
    try {
      for (const { protocol, addr } of wanted) {
        try {
          bound.push({ protocol, listener: Deno.listen({ ...addr, transport: "tcp" }) });
        } catch (e) {
          const shown = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
          throw new Error(
            `Cannot listen on ${shown}:${addr.port} for ${protocol}: ${(e as Error).message}`,
            { cause: e },
          );
        }
      }
    } catch (e) {
      for (const b of bound) b.listener.close();
      throw e;
    }
    return new ProxyServer(tunnel, bound, opts);
  }

  async #acceptLoop(protocol: ProxyProtocol, listener: Deno.TcpListener): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (e) {
        if (this.#closed || e instanceof Deno.errors.BadResource) return;
        this.#logger.warn("accept failed", { protocol, error: (e as Error).message });
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      void this.#serve(protocol, conn);
    }
  }

  async #serve(protocol: ProxyProtocol, conn: Deno.TcpConn): Promise<void> {
    const c = new BufferedDuplex(conn);
    this.#conns.add(c);
    const client = conn.remoteAddr;
    const logger = this.#logger.with({
      proxy: protocol,
      conn: ++this.#nextId,
      client: client.hostname.includes(":")
        ? `[${client.hostname}]:${client.port}`
        : `${client.hostname}:${client.port}`,
    });
    const timer = setTimeout(() => {
      logger.info("request not completed in time: closing", {
        timeoutMs: this.#opts.requestTimeoutMs ?? RequestTimeoutMs,
      });
      c.close();
    }, this.#opts.requestTimeoutMs ?? RequestTimeoutMs);
    const established = () => clearTimeout(timer);
    try {
      const ctx = {
        tunnel: this.#tunnel,
        credentials: this.#opts.credentials,
        logger,
        established,
      };
      if (protocol === "socks5") {
        await serveSocks5(c, { ...ctx, client, local: conn.localAddr });
      } else await serveHttp(c, ctx);
    } catch (e) {
      if (!this.#closed) {
        const level = e instanceof ProtocolError ? "info" : "warn";
        logger[level]("client connection failed", { error: (e as Error).message });
      }
    } finally {
      clearTimeout(timer);
      this.#conns.delete(c);
      try {
        c.close();
      } catch {
        // the relay closed it
      }
    }
  }

  /** Stops listening and resets the connections still open. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const l of this.#listeners) {
      try {
        l.close();
      } catch {
        // closed already
      }
    }
    for (const c of this.#conns) c.abort();
    this.#conns.clear();
    await Promise.all(this.#loops);
    this.#tunnel.poke();
  }
}
