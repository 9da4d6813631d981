/**
 * CONNECT: a TCP connection through the tunnel for one of the program's sockets.
 *
 * ```text
 * request ─► route? ─ no peer ─► NETUNREACH
 *              │
 *           tcp.connect ─ onClose(err) ─► status from err.code, close
 *              │ onOpen
 *           reply OK (our address and port) ─► drain the filler ─► relay both ways
 * ```
 *
 * The relay keeps TCP's half-close: end of stream from the program (shutdown(SHUT_WR), or close)
 * becomes our FIN; the peer's FIN becomes end of stream for the program. A failed write to the
 * program (it closed its socket) or a read error resets the connection, as a kernel answers data
 * for a closed socket with RST.
 *
 * @module
 */
import { formatIP, type IpBytes, unmapIPv4 } from "../../wire/addr.ts";
import type { TcpConnection } from "../../netstack/tcp/connection.ts";
import { TcpError } from "../../netstack/tcp/errors.ts";
import { TunnelConn } from "../tunnel/tcp.ts";
import { nextReadBuffer, ReadBufferStart } from "../forward/relay.ts";
import type { BrokerContext } from "./context.ts";
import { discardExact, writeAll } from "./io.ts";
import { encodeReply, errorReply, familyOf, type Request, Status, statusOf } from "./protocol.ts";

function isZero(addr: IpBytes): boolean {
  return addr.every((b) => b === 0);
}

/** Waits for the handshake: undefined once open, the error once it failed. */
function opened(conn: TcpConnection): Promise<TcpError | undefined> {
  if (conn.state === "ESTABLISHED") return Promise.resolve(undefined);
  return new Promise((resolve) => {
    // Both are cleared once called: an open connection keeps neither, nor this promise.
    conn.onOpen = () => {
      conn.onOpen = conn.onClose = undefined;
      resolve(undefined);
    };
    conn.onClose = (e) => {
      conn.onOpen = conn.onClose = undefined;
      resolve(e ?? new TcpError("ECONNREFUSED", "connection closed while connecting"));
    };
  });
}

export async function serveConnect(
  ctx: BrokerContext,
  unix: Deno.Conn,
  req: Request,
): Promise<void> {
  const { host, logger } = ctx;
  const dst = unmapIPv4(req.remote.addr).slice();
  // No peer's AllowedIPs cover the destination: a kernel without a route says ENETUNREACH.
  const peer = host.routeFor ? host.routeFor(dst, "tcp", req.remote.port) : host.device.route(dst);
  if (!peer) {
    ctx.stats.tcpFailed++;
    logger.warn("refused: no peer routes this destination", {
      dst: formatIP(dst),
      port: req.remote.port,
      protocol: "tcp",
    });
    await writeAll(unix, errorReply(Status.NetUnreach));
    return;
  }
  let tcp: TcpConnection;
  try {
    host.tcp.tick(host.now());
    tcp = host.tcp.connect(host.now(), {
      dst,
      dstPort: req.remote.port,
      src: isZero(req.local.addr) ? undefined : req.local.addr,
      srcPort: req.local.port || undefined,
    });
  } catch (e) {
    ctx.stats.tcpFailed++;
    await writeAll(unix, errorReply(statusOf(e)));
    return;
  } finally {
    host.poke();
  }
  const untrack = ctx.track({ close: () => tcp.abort() });
  let relayed: Promise<void> | undefined;
  try {
    const err = await opened(tcp);
    if (err) {
      ctx.stats.tcpFailed++;
      logger.debug("tunnel connect failed", { dst: req.remote.port, code: err.code });
      await writeAll(unix, errorReply(statusOf(err)));
      return;
    }
    ctx.stats.tcpConnects++;
    const conn = new TunnelConn(tcp, host);
    try {
      await writeAll(
        unix,
        encodeReply({
          status: Status.Ok,
          family: familyOf(tcp.localAddr),
          arg: 0,
          local: { addr: tcp.localAddr, port: tcp.localPort },
          remote: { addr: tcp.remoteAddr, port: tcp.remotePort },
        }),
      );
      // Taking the filler makes the program's socket writable: that is its "connected".
      if (req.padding > 0 && !(await discardExact(unix, req.padding))) {
        conn.abort();
        return;
      }
    } catch {
      conn.abort(); // the program went away while we connected
      return;
    }
    // Returned, not awaited: this frame (and the request it holds) is not kept suspended for
    // the connection's life; only the relay's pumps are (docs/performance.md).
    relayed = relay(unix, conn).finally(untrack);
    return relayed;
  } finally {
    if (!relayed) untrack();
  }
}

/**
 * Copies both ways between a local stream (the program's Unix connection, or a loopback TCP
 * connection to its listener) and a tunnel connection, until both directions have ended; resets
 * both on an error.
 */
export function relay(unix: Deno.Conn, conn: TunnelConn): Promise<void> {
  let failed = false;
  const fail = () => {
    if (failed) return;
    failed = true;
    conn.abort();
    try {
      unix.close();
    } catch {
      // already closed
    }
  };
  const up = (async () => {
    // Small until reads fill it (see forward/relay.ts): a pending read holds its buffer.
    let buf = new Uint8Array(ReadBufferStart);
    try {
      for (;;) {
        const n = await unix.read(buf);
        if (n === null) break;
        await conn.writeAll(buf.subarray(0, n));
        buf = nextReadBuffer(buf, n);
      }
      await conn.closeWrite();
    } catch {
      fail();
    }
  })();
  const down = (async () => {
    try {
      for (;;) {
        const chunk = await conn.readChunk();
        if (chunk === null) break;
        await writeAll(unix, chunk);
      }
      await unix.closeWrite();
    } catch {
      fail();
    }
  })();
  // Chained rather than awaited, so that an idle connection keeps no suspended frame here.
  return Promise.all([up, down]).then(() => {
    if (!failed) conn.close();
  });
}
