/**
 * What `forward` and `proxy` share around their tunnel: the routing options as they take them,
 * loading the config with its routes, starting the tunnel with the routes installed and a status
 * socket for `wrapguard show`, and the whole life of the command ({@link serviceMain}).
 *
 * @module
 */
import { type Config, loadConfig } from "../core/config/mod.ts";
import { dropPermissions, untilStopSignal } from "../core/host/forward/service.ts";
import type { Logger } from "../core/host/log.ts";
import {
  applyRoutes,
  describeRule,
  planRoutes,
  RouteError,
  type RoutePlan,
} from "../core/host/tunnel/routes.ts";
import { currentUid, statusDir, type StatusRecord, StatusServer } from "../core/host/status.ts";
import { Tunnel } from "../core/host/tunnel/mod.ts";
import {
  makeLogger,
  type TunnelCliOptions,
  tunnelOptions,
  type TunnelOptionValues,
  UsageError,
} from "./_options.ts";

/**
 * Help for --exit-node and --route as `forward` and `proxy` use them (they reach only tunnel
 * destinations, so there is no host network to keep local, and no --kill-switch).
 */
export const ROUTING_HELP =
  `      --exit-node IP    send every destination through the peer whose AllowedIPs
                        contain IP (another peer's own AllowedIPs stay with it);
                        that peer's replies from anywhere are accepted
      --route CIDR:IP   send CIDR (IPv4 or IPv6) through the peer whose AllowedIPs
                        contain IP, and accept CIDR from it; repeatable. Config
                        peers may have "Route = CIDR[:tcp|udp[:PORT]]" lines too`;

/**
 * The shared options as `forward` and `proxy` take them: log level "info" by default, and no
 * --kill-switch (they reach only tunnel destinations anyway).
 * @throws {UsageError}
 */
export function serviceOptions(cmd: string, values: TunnelOptionValues): TunnelCliOptions {
  if (values["kill-switch"]) {
    throw new UsageError(
      `--kill-switch is for 'wrapguard run': ${cmd} reaches nothing but tunnel destinations`,
    );
  }
  return tunnelOptions(values, { logLevel: "info" });
}

/** A running tunnel of `forward` or `proxy`, with its routes and its status socket. */
export interface Service {
  tunnel: Tunnel;
  status?: StatusServer;
}

/**
 * Loads the config (its warnings logged) and plans its routes.
 * @throws {UsageError} for a route through an IP no peer owns; other errors for the config.
 */
export async function loadService(
  opts: TunnelCliOptions,
  logger: Logger,
): Promise<{ config: Config; plan: RoutePlan }> {
  const config = await loadConfig(opts.config);
  for (const w of config.warnings) {
    logger.warn("config warning", { file: opts.config, line: w.line, warning: w.message });
  }
  try {
    return { config, plan: planRoutes(config, opts) };
  } catch (e) {
    if (e instanceof RouteError) throw new UsageError(e.message);
    throw e;
  }
}

/**
 * Starts the tunnel, installs the routes (as `run` does) and registers a status socket so that
 * `wrapguard show` lists it; a status socket that cannot be made is a warning. Call it before
 * the environment permission is dropped (the status directory may come from XDG_RUNTIME_DIR).
 */
export async function startService(
  kind: "forward" | "proxy",
  opts: TunnelCliOptions,
  config: Config,
  plan: RoutePlan,
  logger: Logger,
  command: string,
): Promise<Service> {
  const tunnel = await Tunnel.start(config, { logger });
  const keys = tunnel.status().peers.map((p) => p.publicKey);
  const routes: Record<string, string[]> = {};
  try {
    applyRoutes(tunnel, plan);
    for (const r of plan.rules) {
      const key = keys[r.peerIndex];
      logger.info("route", { route: describeRule(r), peer: key, origin: r.origin });
      if (key === undefined) continue;
      const text = describeRule(r) + (r.origin === "--exit-node" ? " (exit node)" : "");
      (routes[key] ??= []).push(text);
    }
  } catch (e) {
    tunnel.close();
    throw e;
  }
  const started = Date.now();
  const record = (): StatusRecord => ({
    ...tunnel.status(),
    pid: Deno.pid,
    kind,
    interface: (opts.config.split("/").pop() ?? opts.config).replace(/\.conf$/, ""),
    config: opts.config,
    command,
    started,
    routes,
  });
  let dir: string | undefined;
  try {
    const uid = await currentUid();
    dir = statusDir(uid);
    return { tunnel, status: await StatusServer.start(dir, uid, record) };
  } catch (e) {
    logger.warn("wrapguard show will not list this tunnel", {
      dir,
      error: (e as Error).message,
    });
    return { tunnel };
  }
}

/** Closes what {@link startService} started. */
export async function stopService(service: Service | undefined): Promise<void> {
  await service?.status?.close().catch(() => {});
  service?.tunnel.close();
}

/** What a long-running tunnel command (`forward`, `proxy`) supplies to {@link serviceMain}. */
export interface ServiceCommand<
  O extends TunnelCliOptions,
  C,
  S extends { close(): Promise<void> },
> {
  kind: "forward" | "proxy";
  help: string;
  /** @throws {UsageError} printed with the help, exit 2. */
  parse(args: string[]): O | "help";
  /** Work before the log and the tunnel exist; an error ends the command (exit 1). */
  prepare(opts: O): C;
  /** What `wrapguard show` lists as the command line. */
  describe(opts: O): string;
  /** Starts what serves on the tunnel; an error is logged as "cannot start" (exit 1). */
  start(tunnel: Tunnel, opts: O, context: C, logger: Logger): Promise<S>;
  /** Logs what listens where, once everything has started. */
  announce(server: S, opts: O, logger: Logger): void;
}

/**
 * The life of `forward` and `proxy`: parse, log, load the config and its routes, start the
 * tunnel and the server, give up what is no longer needed, serve until a stop signal, then close
 * the server, the tunnel and the log, in that order.
 */
export async function serviceMain<
  O extends TunnelCliOptions,
  C,
  S extends { close(): Promise<void> },
>(args: string[], c: ServiceCommand<O, C, S>): Promise<number> {
  const name = `wrapguard ${c.kind}`;
  let opts: O | "help";
  try {
    opts = c.parse(args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`${name}: ${e.message}\n\n${c.help}`);
    return 2;
  }
  if (opts === "help") {
    console.log(c.help);
    return 0;
  }
  let context: C;
  try {
    context = c.prepare(opts);
  } catch (e) {
    console.error(`${name}: ${(e as Error).message}`);
    return 1;
  }

  const { logger, close: closeLog } = makeLogger(opts, { cmd: c.kind });
  const stop = untilStopSignal();
  let service: Service | undefined;
  let server: S | undefined;
  try {
    try {
      let loaded;
      try {
        loaded = await loadService(opts, logger);
      } catch (e) {
        if (!(e instanceof UsageError)) throw e;
        console.error(`${name}: ${e.message}\n\n${c.help}`);
        return 2;
      }
      service = await startService(
        c.kind,
        opts,
        loaded.config,
        loaded.plan,
        logger,
        c.describe(opts),
      );
      server = await c.start(service.tunnel, opts, context, logger);
    } catch (e) {
      logger.error("cannot start", { error: (e as Error).message });
      if (opts.logFile !== undefined) console.error(`${name}: ${(e as Error).message}`);
      return 1;
    }
    c.announce(server, opts, logger);
    await dropPermissions();
    const sig = await stop.signal;
    logger.info("stopping", { signal: sig });
    return 0;
  } finally {
    stop.cancel();
    await server?.close();
    await stopService(service);
    // node:dgram closes asynchronously; give it a turn before the process ends.
    await new Promise((r) => setTimeout(r, 10));
    closeLog();
  }
}
