/**
 * What both proxies need before the relay starts: reading a client's request piece by piece
 * (with what was read past it handed on to the relay), checking credentials, and where to listen.
 *
 * @module
 */
import type { Duplex } from "../forward/relay.ts";
import { isLoopback, parseHostPort } from "../forward/spec.ts";

/** The client closed or sent something malformed before the request was complete. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

/**
 * A {@link Duplex} with read-ahead: `readExact` and `readHead` parse a request, and whatever
 * arrived after it is returned first by `read`, so the wrapper itself can go to the relay.
 */
export class BufferedDuplex implements Duplex {
  readonly inner: Duplex;
  #buf = new Uint8Array(0);

  constructor(inner: Duplex) {
    this.inner = inner;
  }

  async #fill(): Promise<boolean> {
    const chunk = new Uint8Array(16 * 1024);
    const n = await this.inner.read(chunk);
    if (n === null) return false;
    const merged = new Uint8Array(this.#buf.length + n);
    merged.set(this.#buf);
    merged.set(chunk.subarray(0, n), this.#buf.length);
    this.#buf = merged;
    return true;
  }

  /** Exactly `n` bytes; a ProtocolError when the stream ends first. */
  async readExact(n: number): Promise<Uint8Array> {
    while (this.#buf.length < n) {
      if (!(await this.#fill())) throw new ProtocolError("the client closed mid-request");
    }
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  /**
   * Everything up to and including the first CRLF CRLF, as latin1 text; a ProtocolError when it
   * is longer than `max` bytes or the stream ends first.
   */
  async readHead(max: number): Promise<string> {
    let from = 0;
    for (;;) {
      const b = this.#buf;
      for (let i = Math.max(from, 3); i < b.length; i++) {
        if (b[i] === 10 && b[i - 1] === 13 && b[i - 2] === 10 && b[i - 3] === 13) {
          if (i + 1 > max) break;
          const head = b.subarray(0, i + 1);
          this.#buf = b.subarray(i + 1);
          return latin1(head);
        }
      }
      from = b.length;
      if (b.length > max) throw new ProtocolError(`the request head is over ${max} bytes`);
      if (!(await this.#fill())) throw new ProtocolError("the client closed mid-request");
    }
  }

  /** The bytes read ahead and not yet consumed (taken: later reads do not see them again). */
  takeBuffered(): Uint8Array {
    const out = this.#buf;
    this.#buf = new Uint8Array(0);
    return out;
  }

  read(p: Uint8Array): Promise<number | null> {
    if (this.#buf.length > 0) {
      const n = Math.min(p.length, this.#buf.length);
      p.set(this.#buf.subarray(0, n));
      this.#buf = this.#buf.subarray(n);
      return Promise.resolve(n);
    }
    return this.inner.read(p);
  }

  write(p: Uint8Array): Promise<number> {
    return this.inner.write(p);
  }

  async writeAll(p: Uint8Array): Promise<void> {
    let off = 0;
    while (off < p.length) off += await this.inner.write(p.subarray(off));
  }

  closeWrite(): Promise<void> {
    return this.inner.closeWrite();
  }

  close(): void {
    this.inner.close();
  }

  abort(): void {
    if (this.inner.abort) this.inner.abort();
    else this.inner.close();
  }
}

/** Bytes as latin1 text (one char per byte), as HTTP heads are read. */
export function latin1(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    s += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return s;
}

async function digest(s: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)));
}

/** Usernames and passwords a proxy accepts (RFC 1929 for SOCKS5, Basic for HTTP). */
export class Credentials {
  readonly #users: Map<string, Uint8Array>;

  private constructor(users: Map<string, Uint8Array>) {
    this.#users = users;
  }

  /**
   * Parses `user:password` lines (the password is everything after the first colon; blank lines
   * and lines starting with # are skipped). Both must fit RFC 1929's 255 bytes.
   */
  static async parse(text: string, source: string): Promise<Credentials> {
    const users = new Map<string, Uint8Array>();
    const lines = text.split("\n");
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!.replace(/\r$/, "");
      if (line.trim() === "" || line.startsWith("#")) continue;
      const colon = line.indexOf(":");
      const where = `${source}:${i + 1}`;
      if (colon <= 0) throw new SyntaxError(`Cannot parse ${where}: expected user:password`);
      const user = line.slice(0, colon), pass = line.slice(colon + 1);
      const enc = new TextEncoder();
      if (enc.encode(user).length > 255 || enc.encode(pass).length > 255) {
        throw new RangeError(`Cannot use ${where}: user and password are at most 255 bytes`);
      }
      if (pass === "") throw new SyntaxError(`Cannot use ${where}: the password is empty`);
      users.set(user, await digest(pass));
    }
    if (users.size === 0) throw new SyntaxError(`Cannot use ${source}: it holds no user:password`);
    return new Credentials(users);
  }

  /** Whether the pair is one of ours; compares digests in constant time. */
  async check(user: string, password: string): Promise<boolean> {
    const want = this.#users.get(user);
    const got = await digest(password);
    const ref = want ?? new Uint8Array(32);
    let diff = want ? 0 : 1;
    for (let i = 0; i < 32; i++) diff |= ref[i]! ^ got[i]!;
    return diff === 0;
  }
}

/** Where a proxy listens. */
export interface ListenAddr {
  hostname: string;
  port: number;
}

/**
 * `PORT` (on 127.0.0.1), `ADDR:PORT` or `[IPV6]:PORT`; port 0 picks one. An address that is not
 * loopback is refused unless `allowRemote`.
 */
export function parseListenAddr(text: string, what: string, allowRemote: boolean): ListenAddr {
  const addr = /^\d+$/.test(text)
    ? { hostname: "127.0.0.1", port: Number(text) }
    : parseHostPort(text, what, true);
  if (addr.port > 65535) throw new RangeError(`${what}: port ${addr.port} is out of range`);
  if (!allowRemote && !isLoopback(addr.hostname)) {
    throw new RangeError(
      `${what}: ${addr.hostname} is not a loopback address; anyone who can reach it could use ` +
        `the tunnel (pass --allow-remote, and better --auth-file, if that is what you want)`,
    );
  }
  return addr;
}
