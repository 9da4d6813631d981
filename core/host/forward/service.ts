/**
 * What `wrapguard forward` and `wrapguard proxy` share as long-running services: the log (JSON
 * lines, or a readable form on a terminal), the tunnel started from a config file with its
 * warnings reported, giving up permissions that are no longer needed, and running until SIGINT,
 * SIGTERM or SIGHUP.
 *
 * @module
 */
import { loadConfig } from "../../config/mod.ts";
import { isLogLevel, Logger, type LogLevel, type LogSink } from "../log.ts";
import { Tunnel } from "../tunnel/mod.ts";

/** The signals that stop a service cleanly (exit status 0). */
export const StopSignals: readonly Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];

/** Checks a `--log-level` value; throws a TypeError naming the choices. */
export function logLevel(value: string | undefined, fallback: LogLevel): LogLevel {
  const level = value ?? fallback;
  if (!isLogLevel(level)) {
    throw new TypeError(`--log-level must be error, warn, info or debug, not '${level}'`);
  }
  return level;
}

/** A logger to stderr (text on a terminal, else JSON lines) or appended to `file` as JSON. */
export function makeLogger(
  level: LogLevel,
  file: string | undefined,
  fields: Record<string, unknown>,
): { logger: Logger; close(): void } {
  if (file !== undefined) {
    const f = Deno.openSync(file, { append: true, create: true, mode: 0o600 });
    const enc = new TextEncoder();
    const sink: LogSink = { write: (line) => void f.writeSync(enc.encode(line)) };
    return { logger: new Logger({ level, sink, format: "json", fields }), close: () => f.close() };
  }
  const format = Deno.stderr.isTerminal() ? "text" : "json";
  return { logger: new Logger({ level, format, fields }), close() {} };
}

/** Loads the config (reporting its warnings) and starts the tunnel; throws with a clear message. */
export async function startTunnel(path: string, logger: Logger): Promise<Tunnel> {
  const config = await loadConfig(path);
  for (const w of config.warnings) {
    logger.warn("config warning", { file: path, line: w.line, warning: w.message });
  }
  return await Tunnel.start(config, { logger });
}

/**
 * Gives up what a running forward or proxy never needs again (DESIGN.md decision 7): starting
 * programs and the environment. Reading, writing (Unix socket paths) and the network stay.
 */
export async function dropPermissions(): Promise<void> {
  for (const name of ["run", "env"] as const) {
    await Deno.permissions.revoke({ name }).catch(() => {});
  }
}

/** Resolves with the first of {@link StopSignals} to arrive; the handlers are then removed. */
export function untilStopSignal(): { signal: Promise<Deno.Signal>; cancel(): void } {
  const handlers: [Deno.Signal, () => void][] = [];
  let resolve!: (s: Deno.Signal) => void;
  const signal = new Promise<Deno.Signal>((r) => resolve = r);
  const cancel = () => {
    for (const [sig, h] of handlers.splice(0)) Deno.removeSignalListener(sig, h);
  };
  for (const sig of StopSignals) {
    const h = () => {
      cancel();
      resolve(sig);
    };
    Deno.addSignalListener(sig, h);
    handlers.push([sig, h]);
  }
  return { signal, cancel };
}
