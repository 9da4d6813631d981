/**
 * The broker: serves the interposer (`preload/`) of a wrapped program on a Unix socket, turning
 * each of the program's tunnel sockets into a connection or socket of the tunnel's userspace
 * stack. The wire protocol is `preload/PROTOCOL.md`; its records are in `broker/protocol.ts`.
 *
 * ```text
 * accept ─► read the 96-byte request (10 s) ─► decode ─ bad ─► BADREQ, close
 *                                                │
 *                          secret (constant time) ─ wrong ─► AUTH, close
 *                                                │
 *       CONNECT ─► tcp.ts        UDP ─► udp.ts
 *       BIND (then LISTEN), LISTEN+RELAY, ACCEPT, LOOKUP ─► listen.ts
 * ```
 *
 * Two steps, so that a launcher can start its program before the tunnel is up: {@link Broker.open}
 * listens and answers HELLO (the interposer's first words, which hold the program until answered),
 * and every other request waits until {@link Broker.attach} gives it the tunnel. `run` spawns the
 * program between the two, and the program's start overlaps the tunnel's (docs/performance.md
 * "Cold start"). {@link Broker.start} is both at once.
 *
 * Private by construction (DESIGN.md decision 2): the socket lives in a directory only the
 * invoking user can enter, and every connection must first prove it knows the per-run secret
 * that only the wrapped program's environment carries. Nothing listens on a TCP port.
 *
 * @example
 * ```ts ignore
 * const broker = await Broker.start(tunnel, { logger });
 * const child = new Deno.Command("curl", {
 *   args: ["http://10.0.0.1/"],
 *   env: { ...broker.env(), LD_PRELOAD: "/path/to/libwrapguard-x86_64.so" },
 * }).spawn();
 * await child.status;
 * await broker.close();
 * ```
 *
 * Folder: `protocol.ts` (the records), `context.ts` (what handlers share), `io.ts` (exact reads),
 * `tcp.ts`, `udp.ts` (with `udp_host.ts`, the host-network half of a wildcard-bound UDP socket),
 * `listen.ts` (inbound), `dns.ts` (HELLO, RESOLVE, QUERY).
 *
 * @module
 */
import { formatIP, formatPrefix, type IpBytes, type Prefix } from "../../wire/addr.ts";
import type { BrokerContext, BrokerHost, BrokerStats } from "./context.ts";
import { readExact, writeAll } from "./io.ts";
import {
  decodeRequest,
  errorReply,
  Flag,
  Op,
  ProtocolError,
  REQUEST_LEN,
  SECRET_LEN,
  secretEqual,
  Status,
} from "./protocol.ts";
import { Inbound, serveAccept, serveBind, serveLookup, serveRelayListen } from "./listen.ts";
import { serveConnect } from "./tcp.ts";
import { type BrokerDns, serveHello, serveQuery, serveResolve, stackDnsTransport } from "./dns.ts";
import type { Resolver } from "../tunnel/dns.ts";
import { serveUdp } from "./udp.ts";
import { type Logger, silentLogger } from "../log.ts";

export type { BrokerHost, BrokerStats } from "./context.ts";

/** The socket's name inside the broker directory. */
export const BROKER_SOCKET_NAME = "broker.sock";

/** How long a new connection may take to send its request. */
export const REQUEST_TIMEOUT_MS = 10_000;

export interface BrokerOptions {
  logger?: Logger;
  /**
   * A directory for the socket, which must be private to this user (mode 0700 or stricter);
   * by default a new one under the temporary directory, removed again by {@link Broker.close}.
   */
  dir?: string;
  /**
   * Destinations the program's sockets send through the tunnel, as CIDR text; a leading `!`
   * excludes (the host network keeps it). Default: every peer's AllowedIPs, as wg-quick routes.
   */
  routes?: string[];
  /** Our tunnel addresses as the program should see them. Default: the config's `Address`. */
  addresses?: Prefix[];
  /**
   * Non-tunnel destinations fail with ENETUNREACH. Default: on when a route covers everything
   * (`0.0.0.0/0` or `::/0`), as wg-quick's kill switch (DESIGN.md decision 3).
   */
  killSwitch?: boolean;
  /**
   * Answers the program's name lookups (RESOLVE, QUERY) through the tunnel, usually
   * `Resolver.forTunnel(tunnel)`. With it the environment names its servers (`WRAPGUARD_DNS`) and
   * the interposer sends every lookup here (DESIGN.md decision 4); without it lookups stay the
   * host's.
   */
  resolver?: Resolver;
  /** Search domains for the interposer's `res_search` (default: the config's `DNS =` ones). */
  dnsSearch?: string[];
}

/** What the broker's defaults come from: a tunnel's config (a `Config` is one). */
export interface BrokerConfig {
  interface: { addresses: Prefix[]; dns?: { search: string[] } };
  peers: { allowedIPs: Prefix[] }[];
}

/** {@link BrokerOptions} for {@link Broker.open}, before the tunnel (and its resolver) exist. */
export interface BrokerOpenOptions extends Omit<BrokerOptions, "resolver"> {
  /**
   * The servers the environment names (`WRAPGUARD_DNS`) when the resolver that
   * {@link Broker.attach} brings will answer the program's lookups.
   */
  dnsServers?: IpBytes[];
}

/** A `BrokerHost` that also names its routes and addresses (a `Tunnel` is one). */
export interface BrokerTunnel extends BrokerHost {
  readonly config: BrokerConfig;
}

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

export class Broker {
  /** The private directory that holds the socket. */
  readonly dir: string;
  /** The Unix socket the interposer connects to. */
  readonly socketPath: string;
  readonly stats: BrokerStats = {
    connections: 0,
    authFailures: 0,
    malformed: 0,
    tcpConnects: 0,
    tcpFailed: 0,
    udpAssociations: 0,
    udpDropped: 0,
    udpSendErrors: 0,
    hellos: 0,
    resolves: 0,
    queries: 0,
  };
  readonly #secret: Uint8Array;
  readonly #listener: Deno.UnixListener;
  readonly #ownsDir: boolean;
  readonly #env: Record<string, string>;
  readonly #logger: Logger;
  /** Set by {@link attach}: until then only HELLO is served. */
  #ctx: BrokerContext | undefined;
  #dns: BrokerDns | undefined;
  /** Settles with the attach (true) or the close (false), whichever comes first. */
  readonly #attached = Promise.withResolvers<boolean>();
  readonly #inbound = new Inbound();
  readonly #live = new Set<{ close(): void }>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #accepting: Promise<void>;
  readonly #hellos = new Set<number>();
  #helloWaiters: (() => void)[] = [];
  #closed = false;

  private constructor(
    config: BrokerConfig,
    dir: string,
    ownsDir: boolean,
    listener: Deno.UnixListener,
    options: BrokerOpenOptions,
  ) {
    this.dir = dir;
    this.socketPath = `${dir}/${BROKER_SOCKET_NAME}`;
    this.#ownsDir = ownsDir;
    this.#listener = listener;
    this.#secret = crypto.getRandomValues(new Uint8Array(SECRET_LEN));
    this.#logger = options.logger ?? silentLogger;
    const routes = options.routes ??
      config.peers.flatMap((p) => p.allowedIPs.map(formatPrefix));
    const everything = routes.some((r) => r.endsWith("/0") && !r.startsWith("!"));
    const addresses = options.addresses ?? config.interface.addresses;
    this.#env = {
      WRAPGUARD_SOCKET_DIR: dir,
      WRAPGUARD_SECRET: hex(this.#secret),
      WRAPGUARD_ROUTES: routes.join(","),
      WRAPGUARD_ADDRESSES: addresses.map(formatPrefix).join(","),
      WRAPGUARD_KILL_SWITCH: (options.killSwitch ?? everything) ? "1" : "0",
    };
    if (options.dnsServers) {
      this.#env.WRAPGUARD_DNS = options.dnsServers.map(formatIP).join(",");
      this.#env.WRAPGUARD_DNS_SEARCH = (options.dnsSearch ?? config.interface.dns?.search ?? [])
        .join(",");
    }
    this.#accepting = this.#acceptLoop();
  }

  /**
   * {@link open} and {@link attach} at once: a broker that serves everything from the start.
   * @throws {Deno.errors.PermissionDenied} when `options.dir` is reachable by other users.
   */
  static async start(tunnel: BrokerTunnel, options: BrokerOptions = {}): Promise<Broker> {
    const broker = await Broker.open(tunnel.config, {
      ...options,
      dnsServers: options.resolver?.servers,
    });
    broker.attach(tunnel, options.resolver);
    return broker;
  }

  /**
   * Creates the private directory (or checks the given one) and starts listening, before there
   * is a tunnel: HELLO is answered at once, every other request waits for {@link attach} (or
   * ends unanswered when the broker closes first). `config` gives the defaults of `options`.
   * @throws {Deno.errors.PermissionDenied} when `options.dir` is reachable by other users.
   */
  static async open(config: BrokerConfig, options: BrokerOpenOptions = {}): Promise<Broker> {
    let dir = options.dir;
    const ownsDir = dir === undefined;
    if (dir === undefined) {
      dir = await Deno.makeTempDir({ prefix: "wrapguard-" });
      await Deno.chmod(dir, 0o700);
    } else {
      const st = await Deno.stat(dir);
      if (!st.isDirectory || st.mode === null || (st.mode & 0o077) !== 0) {
        throw new Deno.errors.PermissionDenied(
          `Cannot serve the broker in ${dir}: it must be a directory only its owner can enter`,
        );
      }
    }
    const listener = Deno.listen({ transport: "unix", path: `${dir}/${BROKER_SOCKET_NAME}` });
    return new Broker(config, dir, ownsDir, listener, options);
  }

  /**
   * Gives the broker its tunnel (and the resolver that answers lookups, when the environment
   * names DNS servers): the requests that waited are served now, in the order they came.
   */
  attach(tunnel: BrokerHost, resolver?: Resolver): void {
    if (this.#ctx || this.#closed) return;
    if (resolver) this.#dns = { resolver, transport: stackDnsTransport(tunnel), tcp: tunnel };
    this.#ctx = {
      host: tunnel,
      logger: this.#logger,
      stats: this.stats,
      track: (r) => {
        this.#live.add(r);
        return () => this.#live.delete(r);
      },
    };
    this.#attached.resolve(true);
  }

  /**
   * The `WRAPGUARD_*` variables the wrapped program needs (LD_PRELOAD is the launcher's). They
   * include the secret: give them only to the program.
   */
  env(): Record<string, string> {
    return { ...this.#env };
  }

  /** Whether a process with this pid has said HELLO (it loaded the interposer). */
  helloFrom(pid: number): boolean {
    return this.#hellos.has(pid);
  }

  /**
   * Waits until the process `pid` says HELLO, at most `timeoutMs`; false when it did not. The
   * launcher's proof that the interposer is active in the program it started (DESIGN.md
   * decision 5).
   */
  async waitForHello(pid: number, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    while (!this.#hellos.has(pid)) {
      const left = deadline - performance.now();
      if (left <= 0 || this.#closed || signal?.aborted) return false;
      const { promise, resolve } = Promise.withResolvers<void>();
      signal?.addEventListener("abort", () => resolve(), { once: true });
      this.#helloWaiters.push(resolve);
      const timer = setTimeout(resolve, left);
      await promise;
      clearTimeout(timer);
    }
    return true;
  }

  #noteHello(pid: number): void {
    this.#logger.debug("hello", { pid });
    this.stats.hellos++;
    this.#hellos.add(pid);
    const w = this.#helloWaiters;
    this.#helloWaiters = [];
    for (const f of w) f();
  }

  /** Stops listening, ends every connection it serves, and removes a directory it created. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#attached.resolve(false);
    for (const f of this.#helloWaiters.splice(0)) f();
    this.#listener.close();
    for (const r of this.#live) {
      try {
        r.close();
      } catch {
        // already closed
      }
    }
    this.#ctx?.host.poke();
    await this.#accepting;
    await Promise.allSettled([...this.#tasks]);
    if (this.#ownsDir) await Deno.remove(this.dir, { recursive: true }).catch(() => {});
    else await Deno.remove(this.socketPath).catch(() => {});
  }

  async #acceptLoop(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        this.stats.connections++;
        // One promise per connection for its whole life (it never rejects): every promise and
        // closure kept here is kept by each idle connection.
        const task = this.#serveOne(conn);
        this.#tasks.add(task);
        task.then(() => this.#tasks.delete(task));
      }
    } catch (e) {
      if (!this.#closed) {
        this.#logger.error("broker stopped accepting", { error: (e as Error).message });
      }
    }
  }

  async #serveOne(conn: Deno.Conn): Promise<void> {
    this.#live.add(conn);
    try {
      await this.#serve(conn);
    } catch (e) {
      this.#logger.debug("broker connection ended with an error", {
        error: (e as Error).message,
      });
    } finally {
      this.#live.delete(conn);
      try {
        conn.close();
      } catch {
        // closed by the handler
      }
    }
  }

  async #readRequest(conn: Deno.Conn): Promise<Uint8Array | null> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), REQUEST_TIMEOUT_MS);
    });
    try {
      return await Promise.race([readExact(conn, REQUEST_LEN), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async #serve(conn: Deno.Conn): Promise<void> {
    const { stats } = this;
    const logger = this.#logger;
    const head = await this.#readRequest(conn);
    if (!head) {
      stats.malformed++;
      return;
    }
    let req;
    try {
      req = decodeRequest(head);
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      stats.malformed++;
      logger.warn("malformed request from the interposer", { rule: e.code });
      await writeAll(conn, errorReply(Status.BadRequest));
      return;
    }
    // The secret decides before anything in the request is acted on.
    if (!secretEqual(req.secret, this.#secret)) {
      stats.authFailures++;
      logger.warn("a connection to the broker presented a wrong secret");
      await writeAll(conn, errorReply(Status.Auth));
      return;
    }
    if (req.op === Op.Hello) return await serveHello(conn, req, (pid) => this.#noteHello(pid));
    // Before attach the request waits here, its connection open: the program's call blocks as
    // it would on a slow network.
    if (!this.#ctx && !(await this.#attached.promise)) return;
    const ctx = this.#ctx!;
    switch (req.op) {
      case Op.Connect:
        // Not awaited: #serve's frame and the request would stay alive as long as the relay.
        return serveConnect(ctx, conn, req);
      case Op.Udp:
        return await serveUdp(ctx, conn, req);
      case Op.Bind:
        return await serveBind(
          ctx,
          this.#inbound,
          conn,
          req,
          (r) => secretEqual(r.secret, this.#secret),
        );
      case Op.Accept:
        return serveAccept(ctx, this.#inbound, conn, req); // not awaited, as Connect
      case Op.Lookup:
        return await serveLookup(ctx, this.#inbound, conn, req);
      case Op.Resolve:
        stats.resolves++;
        return await serveResolve(ctx, conn, req, this.#dns);
      case Op.Query:
        stats.queries++;
        return await serveQuery(ctx, conn, req, this.#dns);
      case Op.Listen:
        // A first request may only LISTEN for a kernel listener (RELAY); a tunnel listener's
        // LISTEN follows its BIND on the same connection.
        if (req.flags & Flag.Relay) {
          return await serveRelayListen(ctx, this.#inbound, conn, req);
        }
        await writeAll(conn, errorReply(Status.BadRequest));
    }
  }
}
