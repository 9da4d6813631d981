/**
 * The broker's service ops (PROTOCOL.md "Service ops"): HELLO, RESOLVE and QUERY. None of them
 * has a socket behind it: the request's `arg` says how many body bytes follow, the broker answers
 * with one reply and, for RESOLVE and QUERY, a body of `arg` bytes, then closes.
 *
 * ```text
 * HELLO   pid                 ─► noted (the launcher learns the interposer loaded) ─► OK
 * RESOLVE family, name        ─► Resolver.resolve through the tunnel ─► OK + canonical name
 *                                                                        and addresses
 * QUERY   a DNS message        ─► to the DNS = servers through the tunnel (UDP; TCP when the
 *                                 answer was truncated) ─► OK + the server's response
 * ```
 *
 * Names are only ever asked of the tunnel's `DNS =` servers (DESIGN.md decision 4): without them
 * RESOLVE and QUERY answer NODNS, and the host resolver is never consulted.
 *
 * @module
 */
import { type IpBytes, unmapIPv4 } from "../../wire/addr.ts";
import { decodeMessage, type DnsMessage, nameEquals } from "../../wire/dns.ts";
import {
  DnsNotFoundError,
  DnsServerFailError,
  DnsTimeoutError,
  type DnsTransport,
  type Resolver,
  systemDnsClock,
} from "../tunnel/dns.ts";
import { connectTcp, type TcpHost } from "../tunnel/tcp.ts";
import type { BrokerContext, BrokerHost } from "./context.ts";
import { readExact, writeAll } from "./io.ts";
import {
  encodeReply,
  errorReply,
  Family,
  MAX_ADDRESSES,
  MAX_NAME,
  NO_ENDPOINT,
  type Request,
  RESOLVE_ENTRY_LEN,
  Status,
} from "./protocol.ts";

/** How the broker answers RESOLVE and QUERY. */
export interface BrokerDns {
  /** Resolves names through the tunnel (`Resolver.forTunnel`). */
  resolver: Resolver;
  /** Opens UDP sockets on the tunnel for QUERY (`tunnelDnsTransport`). */
  transport: DnsTransport;
  /** For a truncated QUERY answer: TCP through the tunnel. */
  tcp?: TcpHost;
  /** How long one QUERY try waits (default 1000 ms), and rounds over the servers (default 3). */
  timeoutMs?: number;
  attempts?: number;
}

/** UDP sockets on the tunnel's stack for QUERY, with ICMP errors reported. */
export function stackDnsTransport(host: BrokerHost): DnsTransport {
  return {
    open(handlers) {
      const sock = host.stack.udp.bind({ recvErr: true });
      sock.onDatagram = (data, src, port) => handlers.onDatagram(data, src, port);
      sock.onError = (kind, addr, port) => handlers.onError?.(kind, addr, port);
      return {
        send(dst, port, data) {
          sock.send(dst, port, data);
          host.poke();
        },
        close() {
          sock.close();
        },
      };
    },
  };
}

/** A reply with a body of `body.length` bytes announced in `arg`. */
function okWithBody(body: Uint8Array): Uint8Array {
  const head = encodeReply({
    status: Status.Ok,
    family: Family.None,
    arg: body.length,
    local: NO_ENDPOINT,
    remote: NO_ENDPOINT,
  });
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

/**
 * A RESOLVE reply body: the canonical name's length (1 byte) and its ASCII text, then for each
 * address a family byte (4 or 6) and a 16-byte address field (IPv4 in the first 4 bytes).
 * @throws {RangeError} for a name longer than {@link MAX_NAME} or more than
 *   {@link MAX_ADDRESSES} addresses.
 */
export function encodeResolveBody(canonicalName: string, addresses: IpBytes[]): Uint8Array {
  const name = new TextEncoder().encode(canonicalName);
  if (name.length > MAX_NAME) {
    throw new RangeError(`Cannot encode a canonical name of ${name.length} bytes`);
  }
  if (addresses.length > MAX_ADDRESSES) {
    throw new RangeError(`Cannot encode ${addresses.length} addresses (at most ${MAX_ADDRESSES})`);
  }
  const out = new Uint8Array(1 + name.length + addresses.length * RESOLVE_ENTRY_LEN);
  out[0] = name.length;
  out.set(name, 1);
  let off = 1 + name.length;
  for (const a of addresses) {
    const addr = unmapIPv4(a);
    out[off] = addr.length === 4 ? Family.V4 : Family.V6;
    out.set(addr, off + 1);
    off += RESOLVE_ENTRY_LEN;
  }
  return out;
}

/** HELLO: a process of the wrapped program loaded the interposer. */
export async function serveHello(
  unix: Deno.Conn,
  req: Request,
  onHello: (pid: number) => void,
): Promise<void> {
  onHello(req.arg);
  await writeAll(unix, errorReply(Status.Ok));
}

/** The status for a resolver error. */
function dnsStatus(e: unknown): Status {
  if (e instanceof DnsNotFoundError) return e.nodata ? Status.NoData : Status.NotFound;
  if (e instanceof DnsServerFailError || e instanceof DnsTimeoutError) return Status.Again;
  return Status.Again;
}

/** RESOLVE: a host name, through the tunnel's DNS servers, with their search list. */
export async function serveResolve(
  ctx: BrokerContext,
  unix: Deno.Conn,
  req: Request,
  dns: BrokerDns | undefined,
): Promise<void> {
  const body = await readExact(unix, req.arg);
  if (!body) return;
  if (!dns) {
    await writeAll(unix, errorReply(Status.NoDns));
    return;
  }
  let name: string;
  try {
    name = new TextDecoder("utf-8", { fatal: true }).decode(body);
  } catch {
    await writeAll(unix, errorReply(Status.NotFound));
    return;
  }
  const family = req.family === Family.V4 ? 4 : req.family === Family.V6 ? 6 : 0;
  try {
    const r = await dns.resolver.resolve(name, { family });
    const addresses = r.addresses.slice(0, MAX_ADDRESSES);
    let canonical = r.canonicalName ?? name;
    if (canonical.endsWith(".") && canonical.length > 1) canonical = canonical.slice(0, -1);
    if (new TextEncoder().encode(canonical).length > MAX_NAME) canonical = "";
    ctx.logger.debug("resolved a name for the program", { name, family, count: addresses.length });
    await writeAll(unix, okWithBody(encodeResolveBody(canonical, addresses)));
  } catch (e) {
    const status = dnsStatus(e);
    ctx.logger.debug("a name the program asked for did not resolve", {
      name,
      family,
      error: (e as Error).message,
    });
    await writeAll(unix, errorReply(status));
  }
}

/** Whether `resp` answers `query`: same ID, a response, the same question. */
function answers(query: DnsMessage, resp: DnsMessage): boolean {
  if (resp.id !== query.id || !resp.qr) return false;
  if (resp.questions.length !== query.questions.length) return false;
  return query.questions.every((q, i) => {
    const r = resp.questions[i]!;
    return r.type === q.type && r.class === q.class && nameEquals(r.name, q.name);
  });
}

/** One try over UDP: the first matching response from `server`:53, or undefined on timeout. */
function udpTry(
  dns: BrokerDns,
  server: IpBytes,
  message: Uint8Array,
  query: DnsMessage,
  timeoutMs: number,
): Promise<{ bytes: Uint8Array; parsed: DnsMessage } | undefined> {
  return new Promise((resolve) => {
    let cancel = () => {};
    let settled = false;
    const done = (v: { bytes: Uint8Array; parsed: DnsMessage } | undefined) => {
      if (settled) return;
      settled = true;
      cancel();
      sock.close();
      resolve(v);
    };
    const sock = dns.transport.open({
      onDatagram(data, src, port) {
        if (port !== 53 || !sameAddr(src, server)) return;
        const parsed = decodeMessage(data);
        if (typeof parsed === "string" || !answers(query, parsed)) return;
        done({ bytes: data.slice(), parsed });
      },
      onError(_kind, addr, port) {
        if (port === 53 && sameAddr(addr, server)) done(undefined);
      },
    });
    cancel = systemDnsClock.after(timeoutMs, () => done(undefined));
    try {
      sock.send(server, 53, message);
    } catch {
      done(undefined);
    }
  });
}

function sameAddr(a: IpBytes, b: IpBytes): boolean {
  const x = unmapIPv4(a), y = unmapIPv4(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

/** The same query over TCP (RFC 7766), for an answer that did not fit UDP. */
async function tcpTry(
  host: TcpHost,
  server: IpBytes,
  message: Uint8Array,
  query: DnsMessage,
  timeoutMs: number,
): Promise<Uint8Array | undefined> {
  const signal = AbortSignal.timeout(timeoutMs);
  let conn;
  try {
    conn = await connectTcp(host, { dst: server, port: 53, signal });
  } catch {
    return undefined;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const framed = new Uint8Array(2 + message.length);
    framed[0] = message.length >> 8;
    framed[1] = message.length & 0xff;
    framed.set(message, 2);
    await conn.writeAll(framed);
    const read = (async () => {
      const chunks: Uint8Array[] = [];
      let have = 0;
      let need = 2;
      let len = -1;
      for (;;) {
        if (have >= need) {
          const all = new Uint8Array(have);
          let o = 0;
          for (const c of chunks) {
            all.set(c, o);
            o += c.length;
          }
          if (len < 0) {
            len = (all[0]! << 8) | all[1]!;
            need = 2 + len;
            if (have >= need) return all.slice(2, need);
            continue;
          }
          return all.slice(2, need);
        }
        const c = await conn.readChunk();
        if (c === null) return undefined;
        chunks.push(c);
        have += c.length;
      }
    })();
    const timeout = new Promise<undefined>((r) => {
      timer = setTimeout(() => r(undefined), timeoutMs);
    });
    const bytes = await Promise.race([read, timeout]);
    if (!bytes) return undefined;
    const parsed = decodeMessage(bytes);
    return typeof parsed !== "string" && answers(query, parsed) ? bytes : undefined;
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
    conn.abort();
  }
}

/**
 * Sends a program's DNS message to the tunnel's servers, as a stub resolver would: rounds of
 * tries over the servers in order, each waiting `timeoutMs`, until one gives a response to this
 * question; a truncated response is asked again over TCP. Undefined when nothing answered.
 */
export async function relayQuery(
  dns: BrokerDns,
  servers: IpBytes[],
  message: Uint8Array,
): Promise<Uint8Array | undefined> {
  const query = decodeMessage(message);
  if (typeof query === "string" || query.qr) return undefined;
  const timeoutMs = dns.timeoutMs ?? 1000;
  const attempts = dns.attempts ?? 3;
  let fallback: Uint8Array | undefined;
  for (let round = 0; round < attempts; round++) {
    for (const server of servers) {
      const got = await udpTry(dns, server, message, query, timeoutMs);
      if (!got) continue;
      if (got.parsed.tc && dns.tcp) {
        fallback = got.bytes;
        const full = await tcpTry(dns.tcp, server, message, query, timeoutMs * 3);
        if (full) return full;
        return fallback;
      }
      return got.bytes;
    }
  }
  return fallback;
}

/** QUERY: a DNS message from the program (res_query, res_send), relayed through the tunnel. */
export async function serveQuery(
  ctx: BrokerContext,
  unix: Deno.Conn,
  req: Request,
  dns: BrokerDns | undefined,
): Promise<void> {
  const message = await readExact(unix, req.arg);
  if (!message) return;
  if (!dns) {
    await writeAll(unix, errorReply(Status.NoDns));
    return;
  }
  const response = await relayQuery(dns, dns.resolver.servers, message);
  if (!response) {
    ctx.logger.debug("a DNS query from the program got no answer");
    await writeAll(unix, errorReply(Status.Again));
    return;
  }
  await writeAll(unix, okWithBody(response));
}
