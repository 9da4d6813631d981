/**
 * What `forward` and `proxy` share around their tunnel: the routing options as they take them,
 * loading the config with its routes, starting the tunnel with the routes installed and a status
 * socket for `wrapguard show`, and stopping it all again.
 *
 * @module
 */
import { type Config, loadConfig } from "../core/config/mod.ts";
import type { Logger } from "../core/host/log.ts";
import {
  applyRoutes,
  describeRule,
  planRoutes,
  RouteError,
  type RoutePlan,
} from "../core/host/routes.ts";
import { currentUid, statusDir, type StatusRecord, StatusServer } from "../core/host/status.ts";
import { Tunnel } from "../core/host/tunnel.ts";
import {
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
