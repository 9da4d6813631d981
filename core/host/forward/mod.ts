/**
 * Port forwarding between this machine and the WireGuard network, without an interface:
 *
 * ```text
 *   -L  local listener ──accept──► dialTunnel(DEST) ──► relay
 *   -R  tunnel.listen(PORT) ──accept──► connectLocal(TARGET) ──► relay
 * ```
 *
 * Every forward accepts concurrently and every connection relays on its own (half-close carried
 * through, see relay.ts). All listeners are opened before any accepts, so a forward that
 * cannot listen fails the start and leaves nothing behind.
 *
 * Folder: `spec.ts` (parsing `-L`/`-R`), `local.ts` (this machine's side: Unix, TCP, passed
 * sockets), `node_listener.ts` (node:net listeners, for passed sockets and resets), `systemd.ts`
 * (socket activation), `dial.ts` (the tunnel side), `relay.ts` (bytes both
 * ways), `service.ts` (one start/stop for the CLI).
 *
 * @module
 */
import { type DialError, dialTunnel } from "./dial.ts";
import {
  connectLocal,
  describeTarget,
  listenPassed,
  listenTcp,
  listenUnix,
  type LocalListener,
} from "./local.ts";
import { type Duplex, relay } from "./relay.ts";
import { type ForwardSpec, isLoopback, type LocalForward, type RemoteForward } from "./spec.ts";
import { assignPassedSockets, type PassedSocket } from "./systemd.ts";
import type { TunnelConn, TunnelListener } from "../tunnel/tcp.ts";
import { type Logger, silentLogger } from "../log.ts";
import type { Tunnel } from "../tunnel/mod.ts";

export interface ForwarderOptions {
  logger?: Logger;
  /** Sockets passed by the service manager, for `-L systemd[:NAME]`. */
  passed?: PassedSocket[];
  /** Allow a `-L tcp:` listener on an address that is not loopback. */
  allowRemote?: boolean;
}

/** One forward that is listening: what it was asked and where it listens. */
export interface ActiveForward {
  spec: ForwardSpec;
  /** `unix:/path`, `tcp:127.0.0.1:8080`, `systemd:NAME (fd 3, …)` or `tunnel:10.0.0.2:4000`. */
  listening: string;
}

/** Thrown for a forward that cannot start; the message names it. */
export class ForwardError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ForwardError";
  }
}

type Opened =
  | { spec: LocalForward; local: LocalListener }
  | { spec: RemoteForward; remote: TunnelListener };

/** Runs a set of forwards over one tunnel. */
export class Forwarder {
  readonly forwards: readonly ActiveForward[];
  readonly #tunnel: Tunnel;
  readonly #logger: Logger;
  readonly #opened: Opened[];
  readonly #conns = new Set<Duplex>();
  #active = 0;
  readonly #loops: Promise<void>[] = [];
  #closed = false;
  #nextId = 0;

  private constructor(tunnel: Tunnel, opened: Opened[], logger: Logger) {
    this.#tunnel = tunnel;
    this.#opened = opened;
    this.#logger = logger;
    this.forwards = opened.map((o) => ({
      spec: o.spec,
      listening: "local" in o ? o.local.description : `tunnel:${showAddr(o.remote.addr)}`,
    }));
  }

  /** Opens every listener, then starts accepting. On any failure, closes what was opened. */
  static async start(
    tunnel: Tunnel,
    specs: readonly ForwardSpec[],
    options: ForwarderOptions = {},
  ): Promise<Forwarder> {
    const logger = options.logger ?? silentLogger;
    const activated = specs.filter((s): s is LocalForward =>
      s.direction === "local" && s.listen.kind === "systemd"
    );
    let passed: PassedSocket[] = [];
    if (activated.length > 0) {
      try {
        passed = assignPassedSockets(
          activated.map((s) => s.listen.kind === "systemd" ? s.listen.name : undefined),
          options.passed ?? [],
        );
      } catch (e) {
        throw new ForwardError((e as Error).message, { cause: e });
      }
    }
    const opened: Opened[] = [];
    try {
      for (const spec of specs) {
        if (spec.direction === "local") {
          const l = spec.listen;
          let local: LocalListener;
          try {
            if (l.kind === "unix") local = await listenUnix(l.path);
            else if (l.kind === "tcp") {
              if (!options.allowRemote && !isLoopback(l.hostname)) {
                throw new ForwardError(
                  `${l.hostname} is not a loopback address: anyone who can reach it could use ` +
                    `the tunnel (pass --allow-remote if that is what you want)`,
                );
              }
              local = await listenTcp(l.hostname, l.port);
            } else local = await listenPassed(passed[activated.indexOf(spec)]!);
          } catch (e) {
            throw new ForwardError(`-L ${spec.text}: ${(e as Error).message}`, { cause: e });
          }
          opened.push({ spec, local });
        } else {
          let remote: TunnelListener;
          try {
            remote = tunnel.listen({ port: spec.bind.port, hostname: spec.bind.hostname });
          } catch (e) {
            throw new ForwardError(`-R ${spec.text}: ${(e as Error).message}`, { cause: e });
          }
          opened.push({ spec, remote });
        }
      }
    } catch (e) {
      for (const o of opened) {
        if ("local" in o) await o.local.close();
        else o.remote.close();
      }
      throw e;
    }
    const f = new Forwarder(tunnel, opened, logger);
    for (const o of opened) f.#loops.push(f.#acceptLoop(o));
    return f;
  }

  async #acceptLoop(o: Opened): Promise<void> {
    const fwd = `${o.spec.direction === "local" ? "-L" : "-R"} ${o.spec.text}`;
    for (;;) {
      let conn: Duplex;
      try {
        conn = "local" in o ? await o.local.accept() : await o.remote.accept();
      } catch (e) {
        if (this.#closed) return;
        if (e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted) return;
        // A transient accept failure (e.g. out of descriptors): note it and go on.
        this.#logger.warn("accept failed", { forward: fwd, error: (e as Error).message });
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      if (this.#closed) {
        conn.close();
        return;
      }
      void this.#serve(o, conn, fwd);
    }
  }

  async #serve(o: Opened, accepted: Duplex, fwd: string): Promise<void> {
    const id = ++this.#nextId;
    const log = this.#logger.with({ forward: fwd, conn: id });
    this.#conns.add(accepted);
    this.#active++;
    let other: Duplex | undefined;
    try {
      if (o.spec.direction === "local") {
        const { hostname, port } = o.spec.to;
        try {
          other = await dialTunnel(this.#tunnel, hostname, port);
        } catch (e) {
          log.warn("cannot reach the tunnel destination", {
            to: `${hostname}:${port}`,
            reason: (e as DialError).kind,
            error: (e as Error).message,
          });
          accepted.close();
          return;
        }
        const tc = other as TunnelConn;
        log.debug("connection", { to: showAddr(tc.remoteAddr), via: showAddr(tc.localAddr) });
      } else {
        const tc = accepted as TunnelConn;
        tc.setNoDelay(true);
        const from = showAddr(tc.remoteAddr);
        try {
          other = await connectLocal(o.spec.to);
        } catch (e) {
          log.warn("cannot reach the local target", {
            from,
            to: describeTarget(o.spec.to),
            error: (e as Error).message,
          });
          // A reset tells the peer at once, as a refused connection would have.
          tc.abort();
          return;
        }
        log.debug("connection", { from, to: describeTarget(o.spec.to) });
      }
      this.#conns.add(other);
      const r = await relay(accepted, other);
      const fields = { sent: r.aToB, received: r.bToA };
      if (r.error && !this.#closed) {
        log.info("connection reset", { ...fields, error: r.error.message });
      } else log.debug("connection closed", fields);
    } finally {
      this.#active--;
      this.#conns.delete(accepted);
      if (other) this.#conns.delete(other);
    }
  }

  /** Connections accepted and not yet finished. */
  get connectionCount(): number {
    return this.#active;
  }

  /** Stops listening, removes Unix socket paths, and resets the connections still open. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const o of this.#opened) {
      if ("local" in o) await o.local.close();
      else o.remote.close();
    }
    for (const c of this.#conns) {
      try {
        if (c.abort) c.abort();
        else c.close();
      } catch {
        // closed already
      }
    }
    this.#conns.clear();
    await Promise.all(this.#loops);
    this.#tunnel.poke();
  }
}

function showAddr(a: Deno.NetAddr): string {
  return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
}
