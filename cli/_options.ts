/**
 * Options shared by the commands that run a tunnel (`run`, and `forward`/`proxy` where they make
 * sense): the config, routing (`--exit-node`, `--route`, `--kill-switch`) and logging
 * (`--log-level`, `--log-file`, `--log-format`).
 *
 * `run` uses all of them. For `forward` and `proxy` (another engineer's files, not yet wired):
 * spread {@link TUNNEL_OPTIONS} into their `parseOptions` (cli/_args.ts) options, call
 * {@link tunnelOptions} on the values, {@link makeLogger} for the log, and after `Tunnel.start` call
 * `applyRoutes(tunnel, planRoutes(config, opts))` (core/host/tunnel/routes.ts) and
 * `StatusServer.start(...)` (core/host/status.ts) so that `wrapguard show` lists them.
 * `--kill-switch` means nothing to them (only tunnel destinations are reachable through them).
 *
 * @module
 */
import { isLogLevel, Logger, type LogLevel, type LogSink } from "../core/host/log.ts";
import { parseExitNode, parseRouteOption, RouteError } from "../core/host/tunnel/routes.ts";
import { type IpBytes, parseIP, type Prefix } from "../core/wire/addr.ts";

/** A command-line mistake: the command prints it with its help and exits 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The shared options, as `parseOptions` (cli/_args.ts) reads them. */
export const TUNNEL_OPTIONS = {
  config: { type: "string", short: "c" },
  "exit-node": { type: "string" },
  route: { type: "string", multiple: true },
  "kill-switch": { type: "boolean" },
  "log-level": { type: "string" },
  "log-file": { type: "string" },
  "log-format": { type: "string" },
} as const;

/** The shared options that take a value (for splitting a command line at the program's name). */
export const TUNNEL_OPTIONS_WITH_VALUE: readonly string[] = [
  "-c",
  "--config",
  "--exit-node",
  "--route",
  "--log-level",
  "--log-file",
  "--log-format",
];

/** Help text for the shared options (columns as the commands' own help). */
export const TUNNEL_OPTIONS_HELP = `  -c, --config FILE     the wg-quick config (required)
      --exit-node IP    send everything that is not local (loopback, link-local,
                        this machine's addresses) through the peer whose AllowedIPs
                        contain IP; that peer's replies from anywhere are accepted
      --route CIDR:IP   send CIDR (IPv4 or IPv6) through the peer whose AllowedIPs
                        contain IP, and accept CIDR from it; repeatable. Config
                        peers may have "Route = CIDR[:tcp|udp[:PORT]]" lines too
      --log-level LEVEL error, warn (default), info or debug; refusals are warnings,
                        info adds handshakes, endpoint changes and routes
      --log-file FILE   append the log to FILE as JSON lines; nothing goes to the
                        terminal
      --log-format FMT  json or text for the log on stderr (default: text on a
                        terminal, json otherwise; a file is always json)`;

/** The values of the shared options, checked. */
export interface TunnelCliOptions {
  config: string;
  exitNode?: IpBytes;
  routes: { prefix: Prefix; via: IpBytes }[];
  killSwitch: boolean;
  logLevel: LogLevel;
  logFile?: string;
  logFormat?: "json" | "text";
}

/** What `parseOptions` returns for {@link TUNNEL_OPTIONS}. */
export interface TunnelOptionValues {
  config?: string;
  "exit-node"?: string;
  route?: string[];
  "kill-switch"?: boolean;
  "log-level"?: string;
  "log-file"?: string;
  "log-format"?: string;
}

/**
 * Checks the shared options.
 * @throws {UsageError} naming the option at fault.
 */
export function tunnelOptions(
  values: TunnelOptionValues,
  defaults: { logLevel?: LogLevel } = {},
): TunnelCliOptions {
  if (values.config === undefined) throw new UsageError("--config is required");
  const level = values["log-level"] ?? defaults.logLevel ?? "warn";
  if (!isLogLevel(level)) {
    throw new UsageError(`--log-level must be error, warn, info or debug, not '${level}'`);
  }
  const format = values["log-format"];
  if (format !== undefined && format !== "json" && format !== "text") {
    throw new UsageError(`--log-format must be json or text, not '${format}'`);
  }
  try {
    return {
      config: values.config,
      exitNode: values["exit-node"] === undefined ? undefined : parseExitNode(values["exit-node"]),
      routes: (values.route ?? []).map(parseRouteOption),
      killSwitch: values["kill-switch"] ?? false,
      logLevel: level,
      logFile: values["log-file"],
      logFormat: format,
    };
  } catch (e) {
    if (e instanceof RouteError) throw new UsageError(e.message);
    throw e;
  }
}

/**
 * The log: JSON lines appended to `file` (mode 0600) and nothing on the terminal, or stderr as
 * `format` says (default: readable text on a terminal, JSON lines otherwise).
 */
export function makeLogger(
  opts: { logLevel: LogLevel; logFile?: string; logFormat?: "json" | "text" },
  fields: Record<string, unknown> = {},
): { logger: Logger; close(): void } {
  if (opts.logFile !== undefined) {
    const file = Deno.openSync(opts.logFile, { append: true, create: true, mode: 0o600 });
    const enc = new TextEncoder();
    const sink: LogSink = { write: (line) => void file.writeSync(enc.encode(line)) };
    return {
      logger: new Logger({ level: opts.logLevel, sink, format: "json", fields }),
      close: () => file.close(),
    };
  }
  const format = opts.logFormat ?? (Deno.stderr.isTerminal() ? "text" : "json");
  return { logger: new Logger({ level: opts.logLevel, format, fields }), close() {} };
}

/**
 * This machine's own addresses, which stay local under `--exit-node`; empty when the permission
 * to list interfaces (`--allow-sys=networkInterfaces`) was not given, so that Deno never prompts.
 */
export function hostAddresses(): IpBytes[] {
  if (Deno.permissions.querySync({ name: "sys", kind: "networkInterfaces" }).state !== "granted") {
    return [];
  }
  const out: IpBytes[] = [];
  for (const i of Deno.networkInterfaces()) {
    const bytes = parseIP(i.address.replace(/%.*$/, ""));
    if (bytes) out.push(bytes);
  }
  return out;
}
