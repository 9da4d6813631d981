/**
 * An HTTP/1.1 proxy into the tunnel (RFC 9110, RFC 9112):
 *
 * ```text
 *   CONNECT host:port HTTP/1.1        ─► dial through the tunnel ─► "200 Connection established",
 *                                        then bytes both ways (TLS, ssh, anything)
 *   GET http://host:port/path HTTP/1.1 ─► dial ─► "GET /path HTTP/1.1" with Host from the URI,
 *                                        hop-by-hop fields removed, Via and Connection: close
 *                                        added; the response head likewise; bodies as they come
 * ```
 *
 * One request per client connection: the proxy answers with `Connection: close`, so there is no
 * request framing to track. Bodies (and Transfer-Encoding with them) are relayed byte for byte
 * in both directions; since their framing is passed on unchanged, Transfer-Encoding is the one
 * connection-specific field kept (RFC 9112 (7): a proxy that does not change the body need not
 * re-frame it). Names are resolved through the tunnel.
 *
 * @module
 */
import { type DialError, type DialFailure, dialTunnel } from "../forward/dial.ts";
import { type Duplex, relay } from "../forward/relay.ts";
import { parseHostPort } from "../forward/spec.ts";
import type { Logger } from "../log.ts";
import { BufferedDuplex, type Credentials, ProtocolError } from "./io.ts";
import type { Tunnel } from "../tunnel/mod.ts";

/** The longest request or response head accepted. */
export const MaxHeadBytes = 64 * 1024;

/**
 * Fields that belong to one connection, not the message (RFC 9110 (7.6.1)), besides those that
 * `Connection` names. Transfer-Encoding is deliberately absent (see the module doc).
 */
const HopByHop = new Set([
  "connection",
  "proxy-connection",
  "keep-alive",
  "te",
  "trailer",
  "upgrade",
  "proxy-authorization",
  "proxy-authenticate",
]);

const Via = "1.1 wrapguard";

/** One header field as received (name case kept). */
export interface HeaderField {
  name: string;
  value: string;
}

/** A parsed head: the start line and the fields. */
export interface Head {
  startLine: string;
  fields: HeaderField[];
}

/** Parses a head that ends with CRLF CRLF. Obsolete line folding is refused (RFC 9112 (5.2)). */
export function parseHead(text: string): Head {
  const lines = text.split("\r\n");
  // The head ends with an empty line, and split gives one more empty string after it.
  lines.splice(-2, 2);
  const startLine = lines.shift() ?? "";
  const fields: HeaderField[] = [];
  for (const line of lines) {
    if (line.startsWith(" ") || line.startsWith("\t")) {
      throw new ProtocolError("obsolete line folding in the head");
    }
    const colon = line.indexOf(":");
    if (colon <= 0 || /\s/.test(line.slice(0, colon))) {
      throw new ProtocolError(`a malformed header line: ${JSON.stringify(line.slice(0, 80))}`);
    }
    fields.push({ name: line.slice(0, colon), value: line.slice(colon + 1).trim() });
  }
  return { startLine, fields };
}

/** The fields without hop-by-hop ones (including those named by Connection) and without Host. */
export function endToEnd(fields: readonly HeaderField[]): HeaderField[] {
  const named = new Set(HopByHop);
  for (const f of fields) {
    if (f.name.toLowerCase() === "connection") {
      for (const n of f.value.split(",")) named.add(n.trim().toLowerCase());
    }
  }
  named.add("host");
  return fields.filter((f) => !named.has(f.name.toLowerCase()));
}

function field(fields: readonly HeaderField[], name: string): string | undefined {
  return fields.find((f) => f.name.toLowerCase() === name)?.value;
}

function serialize(startLine: string, fields: readonly HeaderField[]): Uint8Array {
  const text = `${startLine}\r\n${fields.map((f) => `${f.name}: ${f.value}\r\n`).join("")}\r\n`;
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0xff;
  return out;
}

const Reason: Record<number, string> = {
  400: "Bad Request",
  405: "Method Not Allowed",
  407: "Proxy Authentication Required",
  431: "Request Header Fields Too Large",
  501: "Not Implemented",
  502: "Bad Gateway",
  504: "Gateway Timeout",
};

function errorResponse(status: number, message: string, extra: HeaderField[] = []): Uint8Array {
  const body = new TextEncoder().encode(`${message}\n`);
  const head = serialize(`HTTP/1.1 ${status} ${Reason[status] ?? "Error"}`, [
    { name: "Content-Type", value: "text/plain; charset=utf-8" },
    { name: "Content-Length", value: String(body.length) },
    { name: "Connection", value: "close" },
    { name: "Via", value: Via },
    ...extra,
  ]);
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

/** The status for a failed dial: 504 when the destination did not answer in time, else 502. */
export function statusFor(kind: DialFailure): number {
  return kind === "timeout" ? 504 : 502;
}

/**
 * The upstream side of a plain request: the first read(s) return the response head(s) rewritten
 * (hop-by-hop fields out, Via and Connection: close in), then the body as it comes. Interim 1xx
 * responses are rewritten too, and the final head after them.
 */
class ResponseRewriter implements Duplex {
  readonly #up: BufferedDuplex;
  #pending: Uint8Array | undefined;
  #inHead = true;

  constructor(up: BufferedDuplex) {
    this.#up = up;
  }

  async read(p: Uint8Array): Promise<number | null> {
    if (!this.#pending && this.#inHead) {
      const head = parseHead(await this.#up.readHead(MaxHeadBytes));
      const m = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(head.startLine);
      if (!m) throw new ProtocolError(`not an HTTP/1.x response: ${head.startLine.slice(0, 80)}`);
      const status = Number(m[1]);
      // 101 would switch protocols, but Upgrade was not passed on; every other 1xx is interim.
      this.#inHead = status >= 100 && status < 200 && status !== 101;
      const fields = endToEnd(head.fields);
      if (!this.#inHead) fields.push({ name: "Connection", value: "close" });
      fields.push({ name: "Via", value: Via });
      this.#pending = serialize(head.startLine, fields);
    }
    if (this.#pending) {
      const n = Math.min(p.length, this.#pending.length);
      p.set(this.#pending.subarray(0, n));
      this.#pending = n === this.#pending.length ? undefined : this.#pending.subarray(n);
      return n;
    }
    return await this.#up.read(p);
  }

  write(p: Uint8Array): Promise<number> {
    return this.#up.write(p);
  }
  closeWrite(): Promise<void> {
    return this.#up.closeWrite();
  }
  close(): void {
    this.#up.close();
  }
  abort(): void {
    this.#up.abort();
  }
}

/** What an HTTP proxy session needs from the server. */
export interface HttpContext {
  tunnel: Tunnel;
  credentials?: Credentials;
  logger: Logger;
  /** Called when the request phase is over (the server stops its handshake timer). */
  established(): void;
}

async function authorized(fields: HeaderField[], creds: Credentials): Promise<string | undefined> {
  const auth = field(fields, "proxy-authorization");
  const m = auth && /^Basic\s+([A-Za-z0-9+/=]+)$/i.exec(auth);
  if (!m) return undefined;
  let decoded: string;
  try {
    decoded = new TextDecoder().decode(Uint8Array.fromBase64(m[1]!));
  } catch {
    return undefined;
  }
  const colon = decoded.indexOf(":");
  if (colon < 0) return undefined;
  const user = decoded.slice(0, colon);
  return (await creds.check(user, decoded.slice(colon + 1))) ? user : undefined;
}

/** Serves one HTTP proxy client connection to its end. */
export async function serveHttp(c: BufferedDuplex, ctx: HttpContext): Promise<void> {
  const log = ctx.logger;
  let head: Head;
  try {
    head = parseHead(await c.readHead(MaxHeadBytes));
  } catch (e) {
    if (e instanceof ProtocolError && /over \d+ bytes/.test(e.message)) {
      await c.writeAll(errorResponse(431, e.message));
      return;
    }
    throw e;
  }
  const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP\/1\.([01])$/.exec(head.startLine);
  if (!m) {
    await c.writeAll(errorResponse(400, "not an HTTP/1.x request line"));
    return;
  }
  const [, method, target] = m as unknown as [string, string, string];

  let user: string | undefined;
  if (ctx.credentials) {
    user = await authorized(head.fields, ctx.credentials);
    if (user === undefined) {
      const had = field(head.fields, "proxy-authorization") !== undefined;
      if (had) log.warn("http proxy authentication failed");
      await c.writeAll(
        errorResponse(407, "proxy authentication required", [
          { name: "Proxy-Authenticate", value: 'Basic realm="wrapguard", charset="UTF-8"' },
        ]),
      );
      return;
    }
  }

  let hostname: string, port: number, upstreamHead: Uint8Array | undefined;
  if (method === "CONNECT") {
    try {
      ({ hostname, port } = parseHostPort(target, "CONNECT"));
    } catch (e) {
      await c.writeAll(errorResponse(400, (e as Error).message));
      return;
    }
  } else {
    let url: URL;
    try {
      url = new URL(target);
    } catch {
      await c.writeAll(errorResponse(400, "a proxy request needs an absolute URI (http://…)"));
      return;
    }
    if (url.protocol !== "http:") {
      await c.writeAll(
        errorResponse(501, `${url.protocol} URIs are not fetched; use CONNECT for https`),
      );
      return;
    }
    hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
    port = url.port === "" ? 80 : Number(url.port);
    const fields = endToEnd(head.fields);
    // RFC 9112 (3.2.2): Host is replaced by the authority of the request target.
    fields.unshift({ name: "Host", value: url.host });
    fields.push({ name: "Via", value: Via }, { name: "Connection", value: "close" });
    upstreamHead = serialize(`${method} ${url.pathname}${url.search} HTTP/1.1`, fields);
  }

  let conn;
  try {
    conn = await dialTunnel(ctx.tunnel, hostname, port);
  } catch (e) {
    const kind = (e as DialError).kind ?? "other";
    log.info("http proxy: cannot reach destination", {
      user,
      to: `${hostname}:${port}`,
      reason: kind,
      error: (e as Error).message,
    });
    await c.writeAll(errorResponse(statusFor(kind), `${hostname}:${port}: ${kind}`));
    return;
  }
  ctx.established();
  log.debug("http proxy", { user, method, to: `${hostname}:${port}` });
  let r;
  if (upstreamHead === undefined) {
    await c.writeAll(new TextEncoder().encode("HTTP/1.1 200 Connection established\r\n\r\n"));
    r = await relay(c, conn);
  } else {
    await conn.writeAll(upstreamHead);
    r = await relay(c, new ResponseRewriter(new BufferedDuplex(conn)));
  }
  log.debug("http proxy connection closed", {
    to: `${hostname}:${port}`,
    sent: r.aToB,
    received: r.bToA,
    error: r.error?.message,
  });
}
