/**
 * Inbound TCP: BIND, LISTEN, ACCEPT and LOOKUP (PROTOCOL.md "Inbound").
 *
 * Tunnel listener (the program bound a tunnel address):
 *
 * ```text
 * BIND ─► probe the port ─► reply ─► [same connection] LISTEN ─► tcp.listen ─► reply
 *   each established connection ─► id ─► notice on the listener's connection
 *   ACCEPT id (new connection) ─► reply ─► relay (broker/tcp.ts)
 *   end of stream on the listener's connection ─► close the listener, reset unclaimed connections
 * ```
 *
 * Relayed listener (the program listens on a wildcard kernel socket, RELAY flag):
 *
 * ```text
 * LISTEN+RELAY ─► tcp.listen(port) ─► reply
 *   each established connection ─► connect to the program's port on loopback ─► relay
 *   LOOKUP (new connection, loopback peer) ─► the tunnel endpoints of that relay, or NOENT
 * ```
 *
 * @module
 */
import { formatIP, type IpBytes } from "../../wire/addr.ts";
import type { TcpConnection } from "../../netstack/tcp/connection.ts";
import type { TcpListener } from "../../netstack/tcp/listener.ts";
import { TunnelConn } from "../tunnel/tcp.ts";
import type { BrokerContext } from "./context.ts";
import { readExact, writeAll } from "./io.ts";
import {
  decodeRequest,
  encodeReply,
  type Endpoint,
  errorReply,
  Family,
  familyOf,
  Flag,
  Op,
  type Reply,
  type Request,
  REQUEST_LEN,
  Status,
  statusOf,
} from "./protocol.ts";
import { relay } from "./tcp.ts";

/** A connection that completed its handshake and waits for the program's accept(). */
interface Unclaimed {
  conn: TcpConnection;
  listener: TunnelListenerState;
}

interface TunnelListenerState {
  unclaimed: Set<number>;
  backlog: number;
  pump(): void;
}

/** A relayed listener's connections, by the broker's loopback source port. */
interface RelayState {
  byLoopbackPort: Map<number, { local: Endpoint; remote: Endpoint }>;
  connecting: Set<Promise<void>>;
}

/** Broker-wide state of inbound connections. */
export class Inbound {
  #nextId = 1;
  readonly #unclaimed = new Map<number, Unclaimed>();
  readonly #relays = new Map<number, RelayState>();

  /** Registers a connection for ACCEPT; returns its id. */
  offer(conn: TcpConnection, listener: TunnelListenerState): number {
    const id = this.#nextId;
    this.#nextId = this.#nextId >= 0xffffffff ? 1 : this.#nextId + 1;
    this.#unclaimed.set(id, { conn, listener });
    listener.unclaimed.add(id);
    return id;
  }

  claim(id: number): TcpConnection | undefined {
    const u = this.#unclaimed.get(id);
    if (!u) return undefined;
    this.#unclaimed.delete(id);
    u.listener.unclaimed.delete(id);
    u.listener.pump();
    return u.conn;
  }

  /** Resets what a closed listener's program never took. */
  dropAll(listener: TunnelListenerState): void {
    for (const id of listener.unclaimed) {
      this.#unclaimed.get(id)?.conn.abort();
      this.#unclaimed.delete(id);
    }
    listener.unclaimed.clear();
  }

  relay(port: number): RelayState | undefined {
    return this.#relays.get(port);
  }

  addRelay(port: number): RelayState {
    const r: RelayState = { byLoopbackPort: new Map(), connecting: new Set() };
    this.#relays.set(port, r);
    return r;
  }

  removeRelay(port: number, r: RelayState): void {
    if (this.#relays.get(port) === r) this.#relays.delete(port);
  }
}

function isZero(addr: IpBytes): boolean {
  return addr.every((b) => b === 0);
}

/** Whether a connection's family suits the program's socket (v4 socket, v6-only socket). */
function familyFits(conn: TcpConnection, req: Request): boolean {
  const f = familyOf(conn.localAddr);
  if (req.family === Family.V4) return f === Family.V4;
  if (req.flags & Flag.V6Only) return f === Family.V6;
  return true;
}

function okReply(conn: TcpConnection, arg = 0): Reply {
  return {
    status: Status.Ok,
    family: familyOf(conn.localAddr),
    arg,
    local: { addr: conn.localAddr, port: conn.localPort },
    remote: { addr: conn.remoteAddr, port: conn.remotePort },
  };
}

/** Waits until the program closes its end (we never expect data on a listener's connection). */
async function untilClosed(unix: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(1);
  try {
    while ((await unix.read(buf)) !== null) {
      // Nothing is defined after LISTEN: ignore stray bytes.
    }
  } catch {
    // reset: closed too
  }
}

export async function serveBind(
  ctx: BrokerContext,
  inbound: Inbound,
  unix: Deno.Conn,
  req: Request,
  secretOk: (r: Request) => boolean,
): Promise<void> {
  const { host } = ctx;
  if (isZero(req.local.addr)) {
    await writeAll(unix, errorReply(Status.BadRequest));
    return;
  }
  // Probe: a kernel reports EADDRINUSE/EADDRNOTAVAIL at bind(), and picks port 0's port there.
  let port: number;
  try {
    const probe = host.tcp.listen({ address: req.local.addr, port: req.local.port });
    port = probe.port;
    probe.close();
  } catch (e) {
    await writeAll(unix, errorReply(statusOf(e)));
    return;
  }
  const local = { addr: req.local.addr, port };
  await writeAll(
    unix,
    encodeReply({
      status: Status.Ok,
      family: req.family,
      arg: 0,
      local,
      remote: { addr: new Uint8Array(0), port: 0 },
    }),
  );
  // The same connection then says LISTEN, or closes (bound, then connect()ed or closed).
  const head = await readExact(unix, REQUEST_LEN);
  if (!head) return;
  let next: Request;
  try {
    next = decodeRequest(head);
  } catch {
    ctx.stats.malformed++;
    await writeAll(unix, errorReply(Status.BadRequest));
    return;
  }
  if (!secretOk(next)) {
    ctx.stats.authFailures++;
    await writeAll(unix, errorReply(Status.Auth));
    return;
  }
  if (next.op !== Op.Listen || next.family !== req.family) {
    await writeAll(unix, errorReply(Status.BadRequest));
    return;
  }
  await serveTunnelListen(ctx, inbound, unix, { ...next, local });
}

async function serveTunnelListen(
  ctx: BrokerContext,
  inbound: Inbound,
  unix: Deno.Conn,
  req: Request,
): Promise<void> {
  const { host, logger } = ctx;
  let listener: TcpListener;
  try {
    host.tcp.tick(host.now());
    listener = host.tcp.listen({
      address: req.local.addr,
      port: req.local.port,
      backlog: req.arg,
    });
  } catch (e) {
    await writeAll(unix, errorReply(statusOf(e)));
    return;
  } finally {
    host.poke();
  }
  const untrack = ctx.track(listener);
  let writing = Promise.resolve();
  const state: TunnelListenerState = {
    unclaimed: new Set(),
    backlog: Math.max(1, req.arg),
    pump() {
      // Take connections from the stack only while the program keeps up: the rest wait in the
      // stack's accept queue, which is bounded by the backlog and drops SYNs when full.
      while (state.unclaimed.size < state.backlog) {
        const conn = listener.accept();
        if (!conn) break;
        if (!familyFits(conn, req)) {
          conn.abort();
          continue;
        }
        const id = inbound.offer(conn, state);
        const notice = encodeReply(okReply(conn, id));
        writing = writing.then(() => writeAll(unix, notice)).catch(() => {});
      }
      host.poke();
    },
  };
  listener.onAccept = () => state.pump();
  try {
    await writeAll(
      unix,
      encodeReply({
        status: Status.Ok,
        family: req.family,
        arg: 0,
        local: req.local,
        remote: { addr: new Uint8Array(0), port: 0 },
      }),
    );
    logger.debug("tunnel listener", { address: formatIP(req.local.addr), port: listener.port });
    state.pump();
    await untilClosed(unix);
  } finally {
    untrack();
    listener.close();
    inbound.dropAll(state);
    host.poke();
    await writing;
  }
}

export async function serveAccept(
  ctx: BrokerContext,
  inbound: Inbound,
  unix: Deno.Conn,
  req: Request,
): Promise<void> {
  const conn = inbound.claim(req.arg);
  if (!conn || conn.state === "CLOSED") {
    await writeAll(unix, errorReply(Status.NoEnt));
    return;
  }
  const untrack = ctx.track({ close: () => conn.abort() });
  let relayed: Promise<void> | undefined;
  try {
    const tc = new TunnelConn(conn, ctx.host);
    try {
      await writeAll(unix, encodeReply(okReply(conn)));
    } catch {
      tc.abort();
      return;
    }
    // Returned, not awaited, as in serveConnect: an idle connection keeps no frame of ours.
    relayed = relay(unix, tc).finally(untrack);
    return relayed;
  } finally {
    if (!relayed) untrack();
  }
}

/** LISTEN with RELAY: the program's kernel listener on `port` is reached over loopback. */
export async function serveRelayListen(
  ctx: BrokerContext,
  inbound: Inbound,
  unix: Deno.Conn,
  req: Request,
): Promise<void> {
  const { host, logger } = ctx;
  const port = req.local.port;
  let listener: TcpListener;
  try {
    host.tcp.tick(host.now());
    listener = host.tcp.listen({ port, backlog: req.arg });
  } catch (e) {
    await writeAll(unix, errorReply(statusOf(e)));
    return;
  } finally {
    host.poke();
  }
  const untrack = ctx.track(listener);
  const state = inbound.addRelay(port);
  const loopback = req.flags & Flag.V6Only ? "::1" : "127.0.0.1";
  const forward = async (conn: TcpConnection) => {
    const tunnelConn = new TunnelConn(conn, host);
    let kernel: Deno.TcpConn;
    const connecting = Deno.connect({ hostname: loopback, port }).then((k) => {
      kernel = k;
      state.byLoopbackPort.set((k.localAddr as Deno.NetAddr).port, {
        local: { addr: conn.localAddr, port: conn.localPort },
        remote: { addr: conn.remoteAddr, port: conn.remotePort },
      });
    });
    const settled = connecting.catch(() => {});
    state.connecting.add(settled);
    try {
      await connecting;
    } catch {
      tunnelConn.abort(); // the program stopped listening
      return;
    } finally {
      state.connecting.delete(settled);
    }
    const k = kernel!;
    const untrackConn = ctx.track({ close: () => tunnelConn.abort() });
    // Chained, not awaited, as in serveConnect: an idle connection keeps no frame of ours.
    return relay(k, tunnelConn).finally(() => {
      untrackConn();
      state.byLoopbackPort.delete((k.localAddr as Deno.NetAddr).port);
      try {
        k.close();
      } catch {
        // closed by the relay
      }
    });
  };
  listener.onAccept = () => {
    for (let c = listener.accept(); c; c = listener.accept()) {
      if (!familyFits(c, req)) {
        c.abort();
        continue;
      }
      forward(c).catch((e) => logger.debug("relay ended", { error: (e as Error).message }));
    }
    host.poke();
  };
  try {
    await writeAll(
      unix,
      encodeReply({
        status: Status.Ok,
        family: req.family,
        arg: 0,
        local: { addr: new Uint8Array(0), port: listener.port },
        remote: { addr: new Uint8Array(0), port: 0 },
      }),
    );
    logger.debug("relayed listener", { port });
    await untilClosed(unix);
  } finally {
    untrack();
    listener.close();
    inbound.removeRelay(port, state);
    host.poke();
  }
}

/** How long a LOOKUP waits for relays still connecting before it says NOENT. */
const LOOKUP_WAIT_MS = 2000;

export async function serveLookup(
  _ctx: BrokerContext,
  inbound: Inbound,
  unix: Deno.Conn,
  req: Request,
): Promise<void> {
  const state = inbound.relay(req.local.port);
  let found = state?.byLoopbackPort.get(req.remote.port);
  // The program may accept before our connect() has resolved here: wait for those in flight.
  if (state && !found && state.connecting.size > 0) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all([...state.connecting]),
      new Promise((r) => timer = setTimeout(r, LOOKUP_WAIT_MS)),
    ]);
    clearTimeout(timer);
    found = state.byLoopbackPort.get(req.remote.port);
  }
  if (!found) {
    await writeAll(unix, errorReply(Status.NoEnt));
    return;
  }
  await writeAll(
    unix,
    encodeReply({
      status: Status.Ok,
      family: familyOf(found.local.addr),
      arg: 0,
      local: found.local,
      remote: found.remote,
    }),
  );
}
