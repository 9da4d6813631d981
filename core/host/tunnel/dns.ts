/**
 * The DNS stub resolver that asks the config's `DNS =` servers through the tunnel (DESIGN.md
 * decision 4), behaving like glibc's with `options ndots:1 timeout:1 attempts:3`:
 *
 *   resolve(name)
 *     ├─ an IP literal, or localhost (RFC 6761 6.3) ─► answered here
 *     ├─ the positive cache (TTL honoured) ─► answered here
 *     └─ for each candidate of the search list (ndots rule, as res_search):
 *          A and AAAA queries in parallel, each:
 *            one socket (random port), one ID; tries = attempts × servers, rotating; a try ends
 *            on its timeout, on SERVFAIL/REFUSED (that server is skipped from then on), or on an
 *            ICMP port unreachable; FORMERR to an EDNS query is retried once without EDNS
 *          ─► CNAME chain followed in the answer (and re-asked when the server stopped short)
 *
 * A response counts only when it comes from a server this query was sent to, from its port, with
 * the query's ID and the same question; anything else is counted in {@link ResolverStats} and
 * dropped (RFC 5452 9.1). A truncated response (TC) is retried over TCP when `tcpConnect` is
 * given; without it, whatever records did fit are used.
 *
 * The transport and the clock are injected, so the resolver runs over a fake network in tests
 * and over the tunnel's UDP (and, for truncated answers, its TCP) in {@link Resolver.forTunnel}.
 *
 * @module
 */
import {
  formatIP,
  type IpBytes,
  ipEquals,
  parseIPv4,
  parseIPv6,
  unmapIPv4,
} from "../../wire/addr.ts";
import {
  canonicalName,
  checkName,
  decodeMessage,
  DnsClass,
  type DnsMessage,
  DnsOpcode,
  DnsRcode,
  DnsType,
  encodeQuery,
  isAbsoluteName,
  nameEquals,
  randomQueryId,
} from "../../wire/dns.ts";
import type { Config } from "../../config/types.ts";
import type { IcmpErrorKind } from "../../netstack/types.ts";
import type { UdpLayer } from "../../netstack/udp.ts";
import type { TcpLayer } from "../../netstack/tcp/layer.ts";
import { connectTcp } from "./tcp.ts";

// ---------------------------------------------------------------------------------------------
// Seams

/** What a transport reports to the resolver's socket. */
export interface DnsSocketHandlers {
  /** A datagram arrived; `data` may be a view valid only during the call. */
  onDatagram(data: Uint8Array, srcAddr: IpBytes, srcPort: number): void;
  /** An ICMP error about a datagram this socket sent to `addr`:`port`. */
  onError?(kind: IcmpErrorKind, addr: IpBytes, port: number): void;
}

/** One UDP socket on a fresh local port. `send` may throw (e.g. no route): the try fails. */
export interface DnsDatagramSocket {
  send(dst: IpBytes, port: number, data: Uint8Array): void;
  close(): void;
}

/** Opens UDP sockets for queries; the resolver opens one per query and closes it after. */
export interface DnsTransport {
  open(handlers: DnsSocketHandlers): DnsDatagramSocket;
}

/** A connected TCP stream, for answers that did not fit UDP (RFC 7766). */
export interface DnsStream {
  write(data: Uint8Array): Promise<void>;
  /** The next bytes, or null at end of stream. */
  read(): Promise<Uint8Array | null>;
  close(): void;
}

/** Opens a TCP connection to a name server. */
export type DnsTcpConnect = (server: IpBytes, port: number) => Promise<DnsStream>;

/** Monotonic time in milliseconds, and one-shot timers that can be cancelled. */
export interface DnsClock {
  now(): number;
  /** Calls `fn` after `ms`; the returned function cancels it. */
  after(ms: number, fn: () => void): () => void;
}

/** The system clock: `performance.now()` and `setTimeout`. */
export const systemDnsClock: DnsClock = {
  now: () => performance.now(),
  after(ms, fn) {
    const t = setTimeout(fn, ms);
    return () => clearTimeout(t);
  },
};

// ---------------------------------------------------------------------------------------------
// Errors

/** A name could not be resolved; `code` says why, as Node's `dns` module names it. */
export class DnsError extends Error {
  /** The name as the caller gave it. */
  readonly hostname: string;
  constructor(message: string, hostname: string, options?: ErrorOptions) {
    super(message, options);
    this.hostname = hostname;
  }
}

/** NXDOMAIN, or the name exists without an address of the family asked (EAI_NONAME). */
export class DnsNotFoundError extends DnsError {
  readonly code: "ENOTFOUND" = "ENOTFOUND";
  override readonly name: string = "DnsNotFoundError";
  /** True when the name exists but has no address of the family asked (NODATA). */
  readonly nodata: boolean;
  constructor(message: string, hostname: string, nodata = false) {
    super(message, hostname);
    this.nodata = nodata;
  }
}

/** Every server that answered refused or failed (SERVFAIL, REFUSED, …) (EAI_AGAIN). */
export class DnsServerFailError extends DnsError {
  readonly code: "ESERVFAIL" = "ESERVFAIL";
  override readonly name: string = "DnsServerFailError";
  /** The last response code received. */
  readonly rcode: number;
  constructor(message: string, hostname: string, rcode: number) {
    super(message, hostname);
    this.rcode = rcode;
  }
}

/** No usable answer before the tries ran out (EAI_AGAIN). `cause` holds a send error if any. */
export class DnsTimeoutError extends DnsError {
  readonly code: "ETIMEDOUT" = "ETIMEDOUT";
  override readonly name: string = "DnsTimeoutError";
}

// ---------------------------------------------------------------------------------------------
// Options and results

/** How a {@link Resolver} behaves. */
export interface ResolverOptions {
  /** Name servers in order of preference; at least one. */
  servers: IpBytes[];
  /** Search domains, tried as resolv.conf's `search` (see `ndots`). */
  search?: string[];
  /** Server port, default 53. */
  port?: number;
  /** How long one try waits, default 1000 ms (resolv.conf `timeout:1`). */
  timeoutMs?: number;
  /** Rounds over the server list, default 3 (resolv.conf `attempts:3`). */
  attempts?: number;
  /**
   * resolv.conf `ndots`, default 1: a name with fewer dots tries the search domains first, then
   * itself; one with as many or more tries itself first. A final dot means "only itself".
   */
  ndots?: number;
  /** Send an EDNS(0) OPT record (payload 1232), default true; FORMERR turns it off per query. */
  edns?: boolean;
  /** Positive cache: false turns it off; default 1000 entries, TTLs capped at one day. */
  cache?: false | { maxEntries?: number; maxTtlSeconds?: number };
  clock?: DnsClock;
  /** Query IDs; default the system CSPRNG. */
  randomId?: () => number;
  /** When given, truncated answers are asked again over TCP. */
  tcpConnect?: DnsTcpConnect;
}

/** Options of {@link Resolver.resolve}. */
export interface ResolveOptions {
  /** 4: A only, 6: AAAA only, 0 (default): both, IPv4 addresses first. */
  family?: 0 | 4 | 6;
}

/** What {@link Resolver.resolve} found. */
export interface ResolveResult {
  /** Copies: the caller may keep and change them. */
  addresses: IpBytes[];
  /** Seconds the answer may be reused: the smallest TTL on the way (CNAMEs included). */
  ttl: number;
  /** The name the addresses belong to, when it is not the name asked (a CNAME or search domain). */
  canonicalName?: string;
}

/** What the resolver counted; for tests and `doctor`. */
export interface ResolverStats {
  /** Datagrams sent (tries, EDNS fallbacks). */
  queriesSent: number;
  /** Responses accepted as answers to a query. */
  responses: number;
  /** Datagrams dropped because source, port, ID or question did not match a query. */
  ignored: number;
  /** Datagrams from a server that did not decode. */
  malformed: number;
  /** Responses with TC set. */
  truncated: number;
  /** Queries sent over TCP. */
  tcpQueries: number;
  /** Queries answered from the cache. */
  cacheHits: number;
}

const DEFAULT_TIMEOUT_MS = 1000;
const DEFAULT_ATTEMPTS = 3;
const DEFAULT_NDOTS = 1;
const DEFAULT_CACHE_ENTRIES = 1000;
const DEFAULT_MAX_TTL = 86_400;
/** CNAME links followed per lookup, in one answer and across re-asking (glibc follows 16). */
const MAX_CNAME_HOPS = 16;
/** RFC 1035 4.2.2: a TCP message is prefixed by its 16-bit length. */
const MAX_TCP_MESSAGE = 0xffff;

type QueryOutcome =
  | { status: "ok"; addresses: IpBytes[]; ttl: number; owner: string }
  | { status: "nxdomain" }
  | { status: "nodata" }
  | { status: "servfail"; rcode: number }
  | { status: "timeout"; cause?: unknown };

type Exchange =
  | { status: "answer"; message: DnsMessage }
  | { status: "servfail"; rcode: number }
  | { status: "timeout"; cause?: unknown };

interface CacheEntry {
  addresses: IpBytes[];
  owner: string;
  expiresAt: number;
}

/** The parts of a {@link Tunnel} the resolver uses. */
export interface DnsTunnel {
  readonly config: Config;
  readonly stack: { readonly udp: UdpLayer };
  poke(): void;
  /** The tunnel's TCP and its clock: with both, truncated answers are asked again over TCP. */
  readonly tcp?: TcpLayer;
  now?(): number;
}

/**
 * TCP connections through a tunnel's stack, for answers that did not fit UDP (RFC 7766): the
 * connection is given up after `timeoutMs` if the server does not accept it.
 */
export function tunnelDnsTcp(
  host: { readonly tcp: TcpLayer; now(): number; poke(): void },
  timeoutMs = DEFAULT_TIMEOUT_MS * DEFAULT_ATTEMPTS,
): DnsTcpConnect {
  return async (server, port) => {
    const conn = await connectTcp(host, {
      dst: server,
      port,
      noDelay: true,
      signal: AbortSignal.timeout(timeoutMs),
    });
    return {
      write: (data) => conn.writeAll(data),
      read: () => conn.readChunk(),
      close: () => conn.close(),
    };
  };
}

/**
 * UDP sockets on a tunnel's stack: each query binds a random ephemeral port on the tunnel
 * addresses, with ICMP errors reported (so a closed port on the server fails the try at once).
 */
export function tunnelDnsTransport(tunnel: DnsTunnel): DnsTransport {
  return {
    open(handlers) {
      const sock = tunnel.stack.udp.bind({ recvErr: true });
      sock.onDatagram = (data, src, port) => handlers.onDatagram(data, src, port);
      sock.onError = (kind, addr, port) => handlers.onError?.(kind, addr, port);
      return {
        send(dst, port, data) {
          sock.send(dst, port, data);
          // Sends from timers and promise callbacks are outside a packet event.
          tunnel.poke();
        },
        close() {
          sock.close();
        },
      };
    },
  };
}

/** No escapes, spaces or control characters: what a program could mean as a host name. */
function isHostNameText(name: string): boolean {
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c <= 0x20 || c === 0x7f || c === 0x5c) return false;
  }
  return true;
}

function familyOf(addr: IpBytes): 4 | 6 {
  return addr.length === 4 ? 4 : 6;
}

function localhostAddresses(family: 0 | 4 | 6): IpBytes[] {
  const v4 = Uint8Array.of(127, 0, 0, 1);
  const v6 = new Uint8Array(16);
  v6[15] = 1;
  return family === 4 ? [v4] : family === 6 ? [v6] : [v4, v6];
}

/**
 * A stub resolver. Create it over the tunnel with {@link Resolver.forTunnel}, or over any
 * {@link DnsTransport}.
 * @example Resolving over a fake transport
 * ```ts
 * import { Resolver } from "./dns.ts";
 * import { decodeMessage, DnsType, encodeMessage } from "../../wire/dns.ts";
 *
 * const server = Uint8Array.of(10, 77, 0, 1);
 * const resolver = new Resolver({
 *   open(h) {
 *     return {
 *       send(_dst, port, data) {
 *         const q = decodeMessage(data);
 *         if (typeof q === "string") return;
 *         const question = q.questions[0]!;
 *         const answers = question.type === DnsType.A
 *           ? [{ ...question, ttl: 60, kind: "address" as const, address: Uint8Array.of(10, 77, 0, 9) }]
 *           : [];
 *         const reply = encodeMessage({ id: q.id, qr: true, questions: [question], answers });
 *         queueMicrotask(() => h.onDatagram(reply, server, port));
 *       },
 *       close() {},
 *     };
 *   },
 * }, { servers: [server] });
 * const { addresses } = await resolver.resolve("svc.wg.test", { family: 4 });
 * if (addresses[0]?.join(".") !== "10.77.0.9") throw new Error("unexpected answer");
 * ```
 */
export class Resolver {
  readonly stats: ResolverStats = {
    queriesSent: 0,
    responses: 0,
    ignored: 0,
    malformed: 0,
    truncated: 0,
    tcpQueries: 0,
    cacheHits: 0,
  };
  readonly #transport: DnsTransport;
  readonly #servers: IpBytes[];
  readonly #search: string[];
  readonly #port: number;
  readonly #timeoutMs: number;
  readonly #attempts: number;
  readonly #ndots: number;
  readonly #edns: boolean;
  readonly #clock: DnsClock;
  readonly #randomId: () => number;
  readonly #tcpConnect: DnsTcpConnect | undefined;
  readonly #cache: Map<string, CacheEntry> | undefined;
  readonly #cacheMax: number;
  readonly #maxTtl: number;

  /**
   * @throws {RangeError} without servers, or with a port, timeout, attempts or ndots out of range.
   */
  constructor(transport: DnsTransport, options: ResolverOptions) {
    if (options.servers.length === 0) {
      throw new RangeError("Cannot create a resolver without name servers");
    }
    for (const s of options.servers) {
      if (s.length !== 4 && s.length !== 16) {
        throw new RangeError(`Cannot use a name server address of ${s.length} bytes`);
      }
    }
    const port = options.port ?? 53;
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new RangeError(`Cannot use name server port ${port}: expected 1-65535`);
    }
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!(timeoutMs > 0)) throw new RangeError(`Cannot use a timeout of ${timeoutMs} ms`);
    const attempts = options.attempts ?? DEFAULT_ATTEMPTS;
    if (!Number.isInteger(attempts) || attempts < 1) {
      throw new RangeError(`Cannot make ${attempts} attempts: expected a positive integer`);
    }
    const ndots = options.ndots ?? DEFAULT_NDOTS;
    if (!Number.isInteger(ndots) || ndots < 0) {
      throw new RangeError(`Cannot use ndots ${ndots}: expected an integer 0 or more`);
    }
    this.#transport = transport;
    this.#servers = options.servers.map((s) => unmapIPv4(s).slice());
    this.#search = (options.search ?? []).filter((d) => checkName(d) === undefined);
    this.#port = port;
    this.#timeoutMs = timeoutMs;
    this.#attempts = attempts;
    this.#ndots = ndots;
    this.#edns = options.edns ?? true;
    this.#clock = options.clock ?? systemDnsClock;
    this.#randomId = options.randomId ?? randomQueryId;
    this.#tcpConnect = options.tcpConnect;
    this.#cache = options.cache === false ? undefined : new Map();
    this.#cacheMax = (options.cache || undefined)?.maxEntries ?? DEFAULT_CACHE_ENTRIES;
    this.#maxTtl = (options.cache || undefined)?.maxTtlSeconds ?? DEFAULT_MAX_TTL;
  }

  /**
   * A resolver for the tunnel's `DNS =` servers and search domains, asking through the tunnel:
   * UDP, and TCP for an answer that came back truncated (when the tunnel has a TCP layer).
   * `options` override the config (e.g. `timeoutMs`).
   * @throws {RangeError} when the config has no DNS servers and `options` gives none.
   */
  static forTunnel(tunnel: DnsTunnel, options: Partial<ResolverOptions> = {}): Resolver {
    const dns = tunnel.config.interface.dns;
    const tcp = tunnel.tcp;
    const now = tunnel.now?.bind(tunnel);
    const tcpConnect = tcp && now
      ? tunnelDnsTcp({ tcp, now, poke: () => tunnel.poke() })
      : undefined;
    return new Resolver(tunnelDnsTransport(tunnel), {
      servers: dns.servers,
      search: dns.search,
      tcpConnect,
      ...options,
    });
  }

  /** The name servers, in the order they are tried. */
  get servers(): IpBytes[] {
    return this.#servers.map((s) => s.slice());
  }

  /** Forgets every cached answer. */
  clearCache(): void {
    this.#cache?.clear();
  }

  /**
   * The addresses of `name`.
   * @throws {DnsNotFoundError} (`ENOTFOUND`) when the name does not exist, has no address of
   *   the family, or is not a valid name.
   * @throws {DnsServerFailError} (`ESERVFAIL`) when the servers answered only with failures.
   * @throws {DnsTimeoutError} (`ETIMEDOUT`) when no server answered in time.
   * @throws {RangeError} for a family other than 0, 4, 6.
   */
  async resolve(name: string, options: ResolveOptions = {}): Promise<ResolveResult> {
    const family = options.family ?? 0;
    if (family !== 0 && family !== 4 && family !== 6) {
      throw new RangeError(`Cannot resolve for family ${family}: expected 0, 4 or 6`);
    }
    const literal = parseIPv4(name) ?? parseIPv6(name);
    if (literal) {
      // getaddrinfo(3) without AI_V4MAPPED: a literal of the other family is no answer.
      if (family !== 0 && familyOf(literal) !== family) {
        throw new DnsNotFoundError(
          `Cannot resolve "${name}" for IPv${family}: it is an IPv${familyOf(literal)} address`,
          name,
          true,
        );
      }
      return { addresses: [literal], ttl: 0 };
    }
    const canon = canonicalName(name);
    // RFC 6761 6.3: localhost and names below it are loopback, never asked of a server.
    if (canon === "localhost" || canon.endsWith(".localhost")) {
      return { addresses: localhostAddresses(family), ttl: 0 };
    }
    const problem = canon === "."
      ? "it is the root"
      : !isHostNameText(name)
      ? "it is not a host name"
      : checkName(name);
    if (problem !== undefined) {
      throw new DnsNotFoundError(`Cannot resolve "${name}": ${problem}`, name);
    }
    let sawNodata = false;
    let servfail: number | undefined;
    for (const candidate of this.#candidates(name)) {
      const r = await this.#lookup(candidate, family);
      switch (r.status) {
        case "ok": {
          const result: ResolveResult = { addresses: r.addresses, ttl: r.ttl };
          if (!nameEquals(r.owner, name)) result.canonicalName = canonicalName(r.owner);
          return result;
        }
        case "nxdomain":
          continue;
        case "nodata":
          sawNodata = true;
          continue;
        case "servfail":
          servfail = r.rcode;
          continue;
        case "timeout":
          // As res_search: a server that does not answer ends the search.
          throw new DnsTimeoutError(
            `Cannot resolve "${name}": no answer from ${
              this.#servers.map(formatIP).join(", ")
            } (asked "${candidate}")`,
            name,
            r.cause === undefined ? undefined : { cause: r.cause },
          );
      }
    }
    // A failure that might pass is worth more to the caller than "not found" for another name.
    if (servfail !== undefined) {
      throw new DnsServerFailError(
        `Cannot resolve "${name}": the name servers failed (rcode ${servfail})`,
        name,
        servfail,
      );
    }
    throw new DnsNotFoundError(
      sawNodata
        ? `Cannot resolve "${name}": it has no ${
          family === 0 ? "" : `IPv${family} `
        }address (NODATA)`
        : `Cannot resolve "${name}": no such name (NXDOMAIN)`,
      name,
      sawNodata,
    );
  }

  /** The names to ask, in order, as res_search builds them. */
  #candidates(name: string): string[] {
    if (isAbsoluteName(name)) return [name];
    const dots = name.split(".").length - 1;
    const out: string[] = [];
    if (dots >= this.#ndots) out.push(name);
    for (const domain of this.#search) {
      const full = `${name}.${canonicalName(domain)}`;
      if (checkName(full) === undefined) out.push(full);
    }
    if (dots < this.#ndots) out.push(name);
    const seen = new Set<string>();
    return out.filter((n) => {
      const key = canonicalName(n);
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
  }

  async #lookup(name: string, family: 0 | 4 | 6): Promise<QueryOutcome> {
    if (family === 4) return await this.#query(name, DnsType.A);
    if (family === 6) return await this.#query(name, DnsType.AAAA);
    const [a, aaaa] = await Promise.all([
      this.#query(name, DnsType.A),
      this.#query(name, DnsType.AAAA),
    ]);
    if (a.status === "ok" || aaaa.status === "ok") {
      const oks = [a, aaaa].filter((r): r is QueryOutcome & { status: "ok" } => r.status === "ok");
      return {
        status: "ok",
        addresses: oks.flatMap((r) => r.addresses),
        ttl: Math.min(...oks.map((r) => r.ttl)),
        owner: oks[0]!.owner,
      };
    }
    // The name does not exist for any type; else the most informative failure wins.
    for (const status of ["nxdomain", "timeout", "servfail"] as const) {
      const r = [a, aaaa].find((x) => x.status === status);
      if (r) return r;
    }
    return { status: "nodata" };
  }

  /** One name and type: the cache, else the servers, following CNAMEs. */
  async #query(qname: string, qtype: number): Promise<QueryOutcome> {
    const key = `${canonicalName(qname)}/${qtype}`;
    const cached = this.#cacheGet(key);
    if (cached) return cached;
    let name = qname;
    let chainTtl = Infinity;
    let hops = 0;
    for (;;) {
      const ex = await this.#exchange(name, qtype);
      if (ex.status !== "answer") return ex;
      const m = ex.message;
      // Follow the CNAME chain inside the answer (RFC 1034 3.6.2, 5.3.3).
      let owner = name;
      const seen = new Set([canonicalName(owner)]);
      for (;;) {
        const link = m.answers.find((r) =>
          r.kind === "name" && r.type === DnsType.CNAME && nameEquals(r.name, owner)
        );
        if (!link || link.kind !== "name") break;
        if (++hops > MAX_CNAME_HOPS || seen.has(canonicalName(link.target))) {
          return { status: "servfail", rcode: DnsRcode.SERVFAIL };
        }
        chainTtl = Math.min(chainTtl, link.ttl);
        owner = link.target;
        seen.add(canonicalName(owner));
      }
      const addresses: IpBytes[] = [];
      let ttl = chainTtl;
      for (const r of m.answers) {
        if (r.kind === "address" && r.type === qtype && r.class === DnsClass.IN) {
          if (!nameEquals(r.name, owner)) continue;
          addresses.push(r.address);
          ttl = Math.min(ttl, r.ttl);
        }
      }
      if (addresses.length > 0) {
        const ok = { status: "ok" as const, addresses, ttl, owner };
        this.#cacheSet(key, ok);
        return { ...ok, addresses: addresses.map((a) => a.slice()) };
      }
      if (m.rcode === DnsRcode.NXDOMAIN) return { status: "nxdomain" };
      // The server stopped at a CNAME whose target it does not serve: ask for the target.
      if (!nameEquals(owner, name) && hops < MAX_CNAME_HOPS) {
        name = owner;
        continue;
      }
      return { status: "nodata" };
    }
  }

  #cacheGet(key: string): QueryOutcome | undefined {
    const cache = this.#cache;
    const e = cache?.get(key);
    if (!cache || !e) return undefined;
    const left = e.expiresAt - this.#clock.now();
    if (left <= 0) {
      cache.delete(key);
      return undefined;
    }
    this.stats.cacheHits++;
    return {
      status: "ok",
      addresses: e.addresses.map((a) => a.slice()),
      ttl: Math.floor(left / 1000),
      owner: e.owner,
    };
  }

  #cacheSet(key: string, r: { addresses: IpBytes[]; ttl: number; owner: string }): void {
    const cache = this.#cache;
    const ttl = Math.min(r.ttl, this.#maxTtl);
    if (!cache || !(ttl > 0) || this.#cacheMax <= 0) return;
    cache.delete(key);
    // Oldest insertion first out: Map iterates in insertion order.
    while (cache.size >= this.#cacheMax) cache.delete(cache.keys().next().value!);
    cache.set(key, {
      addresses: r.addresses.map((a) => a.slice()),
      owner: r.owner,
      expiresAt: this.#clock.now() + ttl * 1000,
    });
  }

  /** Sends one question to the servers in turn until one answers it (or all tries are spent). */
  #exchange(qname: string, qtype: number): Promise<Exchange> {
    const servers = this.#servers;
    const port = this.#port;
    const clock = this.#clock;
    const stats = this.stats;
    const total = this.#attempts * servers.length;
    const id = this.#randomId() & 0xffff;
    let edns = this.#edns;
    const encode = () => encodeQuery(qname, qtype, { id, edns: edns ? {} : false }).message;
    let query = encode();
    return new Promise<Exchange>((resolve) => {
      let tries = 0;
      let done = false;
      let cancelTimer: (() => void) | undefined;
      /** Servers this query went to. */
      const asked = new Set<number>();
      /** Servers given up on: their rcode, or -1 for unreachable / send error. */
      const failed = new Map<number, number>();
      let lastRcode = -1;
      let sendError: unknown;
      /** Bumped when a TCP exchange is started or abandoned; a stale one's result is dropped. */
      let tcpRound = 0;

      const arm = (fn: () => void) => {
        cancelTimer?.();
        cancelTimer = clock.after(this.#timeoutMs, fn);
      };
      const finish = (r: Exchange) => {
        if (done) return;
        done = true;
        cancelTimer?.();
        socket.close();
        resolve(r);
      };
      const sendTo = (idx: number): boolean => {
        try {
          socket.send(servers[idx]!, port, query);
        } catch (e) {
          sendError = e;
          failed.set(idx, -1);
          return false;
        }
        asked.add(idx);
        stats.queriesSent++;
        return true;
      };
      const next = () => {
        cancelTimer?.();
        cancelTimer = undefined;
        tcpRound++;
        while (tries < total && failed.size < servers.length) {
          const idx = tries++ % servers.length;
          if (failed.has(idx)) continue;
          if (sendTo(idx)) {
            arm(next);
            return;
          }
        }
        finish(
          lastRcode >= 0
            ? { status: "servfail", rcode: lastRcode }
            : { status: "timeout", cause: sendError },
        );
      };
      const serverIndex = (addr: IpBytes, srcPort: number): number => {
        if (srcPort !== port) return -1;
        const a = unmapIPv4(addr);
        for (const idx of asked) if (ipEquals(servers[idx]!, a)) return idx;
        return -1;
      };
      const matches = (m: DnsMessage): boolean => {
        if (!m.qr || m.id !== id || m.opcode !== DnsOpcode.QUERY) return false;
        // RFC 6891 7: a server without EDNS may answer FORMERR with no question.
        if (m.questions.length === 0) return m.rcode === DnsRcode.FORMERR;
        const q = m.questions[0]!;
        return m.questions.length === 1 && nameEquals(q.name, qname) && q.type === qtype &&
          q.class === DnsClass.IN;
      };
      /** Handles a matching response from server `idx`; returns nothing, acts. */
      const accept = (m: DnsMessage, idx: number) => {
        stats.responses++;
        if (m.rcode === DnsRcode.FORMERR && edns) {
          // RFC 6891 7: the server may not know EDNS; ask again without it, same try.
          edns = false;
          query = encode();
          if (sendTo(idx)) arm(next);
          else next();
          return;
        }
        if (m.rcode !== DnsRcode.NOERROR && m.rcode !== DnsRcode.NXDOMAIN) {
          lastRcode = m.rcode;
          failed.set(idx, m.rcode);
          next();
          return;
        }
        if (m.tc) {
          stats.truncated++;
          if (this.#tcpConnect) {
            overTcp(idx);
            return;
          }
        }
        finish({ status: "answer", message: m });
      };
      const overTcp = (idx: number) => {
        const round = ++tcpRound;
        arm(() => {
          failed.set(idx, -1);
          next();
        });
        stats.tcpQueries++;
        this.#overTcp(servers[idx]!, port, query).then((reply) => {
          if (done || round !== tcpRound) return;
          const m = reply && decodeMessage(reply);
          if (!m || typeof m === "string" || !matches(m)) {
            if (m !== undefined) stats.malformed++;
            failed.set(idx, -1);
            next();
            return;
          }
          if (m.rcode === DnsRcode.NOERROR || m.rcode === DnsRcode.NXDOMAIN) {
            finish({ status: "answer", message: m });
          } else {
            lastRcode = m.rcode;
            failed.set(idx, m.rcode);
            next();
          }
        });
      };

      const socket = this.#transport.open({
        onDatagram: (data, src, srcPort) => {
          if (done) return;
          const idx = serverIndex(src, srcPort);
          if (idx < 0) {
            stats.ignored++;
            return;
          }
          const m = decodeMessage(data);
          if (typeof m === "string") {
            stats.malformed++;
            return;
          }
          if (!matches(m)) {
            stats.ignored++;
            return;
          }
          accept(m, idx);
        },
        onError: (kind, addr, dstPort) => {
          if (done) return;
          const idx = serverIndex(addr, dstPort);
          if (idx < 0 || kind === "too-big") return;
          // As glibc on ECONNREFUSED: this server is out for this query, go on at once.
          failed.set(idx, -1);
          next();
        },
      });
      next();
    });
  }

  /** One query over a fresh TCP connection; undefined when it fails in any way. */
  async #overTcp(
    server: IpBytes,
    port: number,
    query: Uint8Array,
  ): Promise<Uint8Array | undefined> {
    let stream: DnsStream | undefined;
    try {
      stream = await this.#tcpConnect!(server, port);
      const framed = new Uint8Array(2 + query.length);
      framed[0] = query.length >> 8;
      framed[1] = query.length & 0xff;
      framed.set(query, 2);
      await stream.write(framed);
      let buf = new Uint8Array(0);
      let want = -1;
      for (;;) {
        if (want < 0 && buf.length >= 2) want = 2 + ((buf[0]! << 8) | buf[1]!);
        if (want >= 0 && buf.length >= want) return buf.slice(2, want);
        const chunk = await stream.read();
        if (chunk === null) return undefined;
        if (buf.length + chunk.length > 2 + MAX_TCP_MESSAGE) return undefined;
        const grown = new Uint8Array(buf.length + chunk.length);
        grown.set(buf);
        grown.set(chunk, buf.length);
        buf = grown;
      }
    } catch {
      return undefined;
    } finally {
      stream?.close();
    }
  }
}
