/**
 * A broker that plays the tunnel with the kernel's own sockets, to prove the interposer and its
 * protocol without the userspace TCP stack: it listens where the real broker would (a 0700
 * directory, `broker.sock`), checks the secret, and for each request decides by a test-supplied
 * table what the "tunnel" does — relay a TCP CONNECT to a kernel server on 127.0.0.1, refuse it,
 * time it out, delay it, or never answer; relay UDP frames to kernel UDP ports and back.
 *
 * It speaks exactly `preload/PROTOCOL.md` through `core/host/broker/protocol.ts`, so a preloaded
 * program that works against it works against any broker that follows the protocol.
 *
 * @module
 */
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import {
  decodeFrameHeader,
  decodeRequest,
  encodeFrame,
  encodeReply,
  type Endpoint,
  errorReply,
  Family,
  familyOf,
  FRAME_HEADER_LEN,
  Op,
  ProtocolError,
  type Request,
  REQUEST_LEN,
  secretEqual,
  Status,
} from "../../core/host/broker/protocol.ts";
import { formatIP, parseIP } from "../../core/wire/addr.ts";

/** What a TCP CONNECT to a tunnel destination does. */
export type ConnectAction =
  /** Relay to a kernel TCP server at `hostname` (default 127.0.0.1) : `port`. */
  | { kind: "relay"; port: number; hostname?: string; delayMs?: number }
  /** Answer with an error status (after `delayMs`). */
  | { kind: "fail"; status: Status; delayMs?: number }
  /** Never answer (the program sees a connect that does not complete). */
  | { kind: "hang" };

/** A destination as the handlers see it. */
export interface Destination {
  address: string;
  port: number;
}

export interface FakeBrokerOptions {
  /** What a CONNECT does; default refuse (ECONNREFUSED). */
  connect?: (dst: Destination) => ConnectAction;
  /** Where a UDP datagram to a tunnel destination goes (a kernel port on 127.0.0.1), or drop. */
  udp?: (dst: Destination) => number | undefined;
  /** WRAPGUARD_ROUTES for the child. */
  routes?: string;
  /** WRAPGUARD_ADDRESSES for the child, and what replies name as the local address. */
  addresses?: string[];
  /** The secret; default 32 random bytes. */
  secret?: Uint8Array;
}

/** One authenticated request, as the broker saw it. */
export interface SeenRequest {
  op: number;
  proto: number;
  remote?: Destination;
  local: Destination;
  padding: number;
}

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** The interposer library for this machine. Builds it (preload/build.sh) when it is missing. */
export async function preloadLibrary(): Promise<string> {
  const root = new URL("../../", import.meta.url).pathname;
  const arch = Deno.build.arch === "aarch64" ? "aarch64" : "x86_64";
  const lib = `${root}preload/build/libwrapguard-${arch}.so`;
  const test = `${root}preload/build/protocol_test`;
  const exists = (p: string) => {
    try {
      Deno.statSync(p);
      return true;
    } catch {
      return false;
    }
  };
  if (!exists(lib) || !exists(test)) {
    const out = await new Deno.Command("bash", { args: [`${root}preload/build.sh`] }).output();
    if (!out.success) {
      throw new Error(`preload/build.sh failed: ${new TextDecoder().decode(out.stderr)}`);
    }
  }
  return lib;
}

/** Reads exactly `n` bytes; null on end of stream first. */
async function readExact(conn: Deno.Conn, n: number): Promise<Uint8Array | null> {
  const buf = new Uint8Array(n);
  let off = 0;
  while (off < n) {
    const r = await conn.read(buf.subarray(off));
    if (r === null) return null;
    off += r;
  }
  return buf;
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

/** Copies src to dst until end of stream, then half-closes dst. */
async function pump(src: Deno.Conn, dst: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  try {
    for (;;) {
      const n = await src.read(buf);
      if (n === null) break;
      await writeAll(dst, buf.subarray(0, n));
    }
    await dst.closeWrite();
  } catch {
    // a reset on either side ends the relay; the other pump sees it too
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export class FakeBroker {
  readonly dir: string;
  readonly socketPath: string;
  readonly secret: Uint8Array;
  readonly addresses: string[];
  readonly routes: string;
  /** Authenticated requests in arrival order. */
  readonly requests: SeenRequest[] = [];
  /** Connections whose secret did not match. */
  authFailures = 0;
  /** Connections whose request did not decode, by error code. */
  readonly malformed: string[] = [];
  readonly #listener: Deno.UnixListener;
  readonly #options: FakeBrokerOptions;
  readonly #conns = new Set<Deno.Conn>();
  readonly #udp = new Set<UdpSocket>();
  readonly #tasks = new Set<Promise<void>>();
  #nextPort = 40000;
  #closed = false;
  readonly #accepting: Promise<void>;

  private constructor(dir: string, listener: Deno.UnixListener, options: FakeBrokerOptions) {
    this.dir = dir;
    this.socketPath = `${dir}/broker.sock`;
    this.#listener = listener;
    this.#options = options;
    this.secret = options.secret ?? crypto.getRandomValues(new Uint8Array(32));
    this.addresses = options.addresses ?? ["10.99.0.1", "fd99::1"];
    this.routes = options.routes ?? "10.99.0.0/24,fd99::/64";
    this.#accepting = this.#acceptLoop();
  }

  static async start(options: FakeBrokerOptions = {}): Promise<FakeBroker> {
    const dir = await Deno.makeTempDir({ prefix: "wrapguard-broker-" });
    await Deno.chmod(dir, 0o700);
    const listener = Deno.listen({ transport: "unix", path: `${dir}/broker.sock` });
    return new FakeBroker(dir, listener, options);
  }

  /** The environment a wrapped child needs (LD_PRELOAD included). */
  env(lib: string, extra: Record<string, string> = {}): Record<string, string> {
    return {
      LD_PRELOAD: lib,
      WRAPGUARD_SOCKET_DIR: this.dir,
      WRAPGUARD_SECRET: hex(this.secret),
      WRAPGUARD_ROUTES: this.routes,
      WRAPGUARD_ADDRESSES: this.addresses.join(","),
      ...extra,
    };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#listener.close();
    for (const c of this.#conns) {
      try {
        c.close();
      } catch {
        // already closed
      }
    }
    for (const u of this.#udp) u.close();
    await this.#accepting;
    await Promise.allSettled([...this.#tasks]);
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  #track(p: Promise<void>): void {
    this.#tasks.add(p);
    p.finally(() => this.#tasks.delete(p));
  }

  async #acceptLoop(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        this.#conns.add(conn);
        this.#track(
          this.#serve(conn).catch(() => {}).finally(() => {
            this.#conns.delete(conn);
            try {
              conn.close();
            } catch {
              // closed by the relay already
            }
          }),
        );
      }
    } catch {
      // listener closed
    }
  }

  #localFor(family: Family): Uint8Array {
    for (const a of this.addresses) {
      const ip = parseIP(a);
      if (ip && familyOf(ip) === family) return ip;
    }
    return new Uint8Array(family === Family.V4 ? 4 : 16);
  }

  async #serve(conn: Deno.Conn): Promise<void> {
    const head = await readExact(conn, REQUEST_LEN);
    if (!head) return;
    let req: Request;
    try {
      req = decodeRequest(head);
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.malformed.push(e.code);
      await writeAll(conn, errorReply(Status.BadRequest)).catch(() => {});
      return;
    }
    // The secret first: nothing about a request is acted on before it is proven.
    if (!secretEqual(req.secret, this.secret)) {
      this.authFailures++;
      await writeAll(conn, errorReply(Status.Auth)).catch(() => {});
      return;
    }
    const dest = (e: Endpoint): Destination => ({ address: formatIP(e.addr), port: e.port });
    this.requests.push({
      op: req.op,
      proto: req.proto,
      remote: req.op === Op.Connect ? dest(req.remote) : undefined,
      local: dest(req.local),
      padding: req.padding,
    });
    if (req.op === Op.Connect) return await this.#connect(conn, req);
    if (req.op === Op.Udp) return await this.#udpAssociate(conn, req);
    await writeAll(conn, errorReply(Status.BadRequest));
  }

  async #connect(conn: Deno.Conn, req: Request): Promise<void> {
    const dst = { address: formatIP(req.remote.addr), port: req.remote.port };
    const action = this.#options.connect?.(dst) ??
      { kind: "fail", status: Status.ConnRefused } as ConnectAction;
    if (action.kind === "hang") {
      // Hold the connection open without answering until the program gives up.
      await conn.read(new Uint8Array(1)).catch(() => null);
      return;
    }
    if (action.delayMs) await sleep(action.delayMs);
    if (action.kind === "fail") {
      await writeAll(conn, errorReply(action.status));
      return;
    }
    let upstream: Deno.TcpConn;
    try {
      upstream = await Deno.connect({
        hostname: action.hostname ?? "127.0.0.1",
        port: action.port,
      });
    } catch {
      await writeAll(conn, errorReply(Status.ConnRefused));
      return;
    }
    this.#conns.add(upstream);
    try {
      const local = { addr: this.#localFor(req.family), port: this.#nextPort++ };
      await writeAll(
        conn,
        encodeReply({ status: Status.Ok, family: req.family, arg: 0, local, remote: req.remote }),
      );
      // The filler kept the program's socket unwritable while "connecting"; drain it now.
      if (req.padding > 0 && !(await readExact(conn, req.padding))) return;
      await Promise.all([pump(conn, upstream), pump(upstream, conn)]);
    } finally {
      this.#conns.delete(upstream);
      try {
        upstream.close();
      } catch {
        // closed
      }
    }
  }

  async #udpAssociate(conn: Deno.Conn, req: Request): Promise<void> {
    const sock = createSocket("udp4");
    this.#udp.add(sock);
    await new Promise<void>((r) => sock.bind(0, "127.0.0.1", r));
    // Kernel port of the far end -> the tunnel endpoint it plays.
    const byKernelPort = new Map<number, Endpoint>();
    const local = { addr: this.#localFor(req.family), port: req.local.port || this.#nextPort++ };
    let writing = Promise.resolve();
    sock.on("message", (msg: Uint8Array, rinfo: { port: number }) => {
      const peer = byKernelPort.get(rinfo.port);
      if (!peer) return;
      const frame = encodeFrame(peer, new Uint8Array(msg));
      writing = writing.then(() => writeAll(conn, frame)).catch(() => {});
    });
    try {
      await writeAll(
        conn,
        encodeReply({
          status: Status.Ok,
          family: req.family,
          arg: 0,
          local,
          remote: { addr: new Uint8Array(0), port: 0 },
        }),
      );
      for (;;) {
        const head = await readExact(conn, FRAME_HEADER_LEN);
        if (!head) break;
        const f = decodeFrameHeader(head);
        const payload = f.length > 0 ? await readExact(conn, f.length) : new Uint8Array(0);
        if (!payload) break;
        const port = this.#options.udp?.({ address: formatIP(f.peer.addr), port: f.peer.port });
        if (port === undefined) continue;
        byKernelPort.set(port, f.peer);
        sock.send(payload, port, "127.0.0.1");
      }
    } finally {
      await writing;
      this.#udp.delete(sock);
      sock.close();
    }
  }
}
