/**
 * `fetch` over the tunnel: an HTTP/1.1 client on a {@link TunnelConn}, returning a standard
 * `Response` whose body streams from the connection. One request per connection
 * (`Connection: close`), which keeps the client small and correct; bodies are framed by
 * Content-Length, chunked transfer coding (RFC 9112 7.1) or the end of the connection.
 *
 * HTTPS is not supported yet: it needs TLS over our own stream, which Deno does not expose.
 *
 * @module
 */
import type { TunnelConn } from "./tcp.ts";

/** How the tunnel opens the connection for a URL. */
export type Dial = (hostname: string, port: number, signal?: AbortSignal) => Promise<TunnelConn>;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const MaxHeaderBytes = 64 * 1024;

/** Buffered reading over a connection: header lines, then body bytes. */
class Reader {
  #buf = new Uint8Array(0);
  #eof = false;
  constructor(readonly conn: TunnelConn) {}

  async #fill(): Promise<boolean> {
    if (this.#eof) return false;
    const chunk = await this.conn.readChunk();
    if (chunk === null) {
      this.#eof = true;
      return false;
    }
    if (this.#buf.length === 0) {
      this.#buf = chunk;
      return true;
    }
    const joined = new Uint8Array(this.#buf.length + chunk.length);
    joined.set(this.#buf);
    joined.set(chunk, this.#buf.length);
    this.#buf = joined;
    return true;
  }

  /** The bytes up to CRLF CRLF (exclusive), or throws when the header is too long or cut off. */
  async head(): Promise<string> {
    for (;;) {
      const end = indexOfCrlfCrlf(this.#buf);
      if (end >= 0) {
        const head = decoder.decode(this.#buf.subarray(0, end));
        this.#buf = this.#buf.slice(end + 4);
        return head;
      }
      if (this.#buf.length > MaxHeaderBytes) throw new TypeError("HTTP response header too long");
      if (!await this.#fill()) {
        throw new TypeError("connection closed before the HTTP header ended");
      }
    }
  }

  async line(): Promise<string> {
    for (;;) {
      const i = this.#buf.indexOf(10);
      if (i >= 0) {
        const line = decoder.decode(this.#buf.subarray(0, i)).replace(/\r$/, "");
        this.#buf = this.#buf.slice(i + 1);
        return line;
      }
      if (!await this.#fill()) throw new TypeError("connection closed inside a chunked body");
    }
  }

  /** Up to `max` bytes (at least one), or null at end of stream. */
  async some(max: number): Promise<Uint8Array | null> {
    if (this.#buf.length === 0 && !await this.#fill()) return null;
    const n = Math.min(max, this.#buf.length);
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }
}

function indexOfCrlfCrlf(b: Uint8Array): number {
  for (let i = 0; i + 3 < b.length; i++) {
    if (b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10) return i;
  }
  return -1;
}

/** Performs one HTTP/1.1 request over a connection from `dial`. */
export async function tunnelFetch(
  dial: Dial,
  input: string | URL | Request,
  init?: RequestInit,
): Promise<Response> {
  const request = new Request(input, init);
  const url = new URL(request.url);
  if (url.protocol !== "http:") {
    throw new TypeError(`Cannot fetch ${url.protocol} URLs over the tunnel yet: only http:`);
  }
  const hostname = url.hostname.replace(/^\[|\]$/g, "");
  const port = url.port ? Number(url.port) : 80;
  const body = request.body ? new Uint8Array(await request.arrayBuffer()) : undefined;
  const conn = await dial(hostname, port, request.signal);
  const onAbort = () => conn.abort();
  request.signal.addEventListener("abort", onAbort, { once: true });
  try {
    const headers = new Headers(request.headers);
    headers.set("host", url.host);
    headers.set("connection", "close");
    if (!headers.has("user-agent")) headers.set("user-agent", "wrapguard");
    if (!headers.has("accept")) headers.set("accept", "*/*");
    if (body) headers.set("content-length", String(body.length));
    let head = `${request.method} ${url.pathname}${url.search} HTTP/1.1\r\n`;
    for (const [k, v] of headers) head += `${k}: ${v}\r\n`;
    await conn.writeAll(encoder.encode(head + "\r\n"));
    if (body) await conn.writeAll(body);

    const reader = new Reader(conn);
    let statusLine: string, fields: string[];
    let status: number;
    // 1xx interim responses (RFC 9110 15.2) are skipped.
    do {
      [statusLine, ...fields] = (await reader.head()).split("\r\n") as [string, ...string[]];
      const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(statusLine);
      if (!m) throw new TypeError(`not an HTTP/1.x response: ${statusLine.slice(0, 80)}`);
      status = Number(m[1]);
      if (status >= 200 || status === 101) {
        return respond(conn, reader, request, status, m[2] ?? "", fields, onAbort);
      }
    } while (status < 200);
    throw new TypeError("unreachable");
  } catch (e) {
    request.signal.removeEventListener("abort", onAbort);
    conn.close();
    throw e;
  }
}

function respond(
  conn: TunnelConn,
  reader: Reader,
  request: Request,
  status: number,
  statusText: string,
  fields: string[],
  onAbort: () => void,
): Response {
  const headers = new Headers();
  for (const f of fields) {
    const colon = f.indexOf(":");
    if (colon <= 0) throw new TypeError(`malformed HTTP header line: ${f.slice(0, 80)}`);
    headers.append(f.slice(0, colon).trim(), f.slice(colon + 1).trim());
  }
  const done = () => {
    request.signal.removeEventListener("abort", onAbort);
    conn.close();
  };
  const noBody = request.method === "HEAD" || status === 204 || status === 304;
  const chunked = /(^|,)\s*chunked\s*$/i.test(headers.get("transfer-encoding") ?? "");
  const lengthText = headers.get("content-length");
  let remaining = chunked || lengthText === null ? Infinity : Number(lengthText);
  if (!Number.isFinite(remaining) && lengthText !== null && !chunked) {
    throw new TypeError(`bad Content-Length: ${lengthText}`);
  }
  if (noBody) {
    done();
    return new Response(null, { status, statusText, headers });
  }
  let chunkLeft = 0;
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        if (chunked) {
          if (chunkLeft === 0) {
            const sizeLine = await reader.line();
            chunkLeft = parseInt(sizeLine.split(";")[0]!.trim(), 16);
            if (!Number.isFinite(chunkLeft) || chunkLeft < 0) {
              throw new TypeError(`bad chunk size: ${sizeLine.slice(0, 40)}`);
            }
            if (chunkLeft === 0) {
              // Trailer fields, then the empty line.
              while ((await reader.line()) !== "");
              done();
              controller.close();
              return;
            }
          }
          const data = await reader.some(chunkLeft);
          if (!data) throw new TypeError("connection closed inside a chunk");
          chunkLeft -= data.length;
          if (chunkLeft === 0) await reader.line(); // the CRLF after the chunk's data
          controller.enqueue(data);
          return;
        }
        if (remaining === 0) {
          done();
          controller.close();
          return;
        }
        const data = await reader.some(Math.min(remaining, 256 * 1024));
        if (!data) {
          if (remaining !== Infinity) {
            throw new TypeError("connection closed before the body ended");
          }
          done();
          controller.close();
          return;
        }
        remaining -= data.length;
        controller.enqueue(data);
      } catch (e) {
        done();
        controller.error(e);
      }
    },
    cancel: () => done(),
  }, { highWaterMark: 0 });
  return new Response(stream, { status, statusText, headers });
}
