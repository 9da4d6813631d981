/**
 * Logs as one JSON object per line: `{"ts":"…","level":"info","msg":"…",…fields}`. Terminals
 * may get a readable form instead (`format: "text"`); files and pipes always get JSON, so a log
 * can be parsed line by line whatever produced it.
 *
 * @module
 */

export type LogLevel = "error" | "warn" | "info" | "debug";
const rank: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

export function isLogLevel(s: string): s is LogLevel {
  return s in rank;
}

export interface LogSink {
  write(line: string): void;
}

export class Logger {
  readonly level: LogLevel;
  readonly #sink: LogSink;
  readonly #format: "json" | "text";
  readonly #fields: Record<string, unknown>;

  constructor(
    options: {
      level?: LogLevel;
      sink?: LogSink;
      format?: "json" | "text";
      fields?: Record<string, unknown>;
    } = {},
  ) {
    this.level = options.level ?? "info";
    this.#sink = options.sink ?? stderrSink;
    this.#format = options.format ?? "json";
    this.#fields = options.fields ?? {};
  }

  /** A logger that adds `fields` to every line (e.g. the peer a component serves). */
  with(fields: Record<string, unknown>): Logger {
    return new Logger({
      level: this.level,
      sink: this.#sink,
      format: this.#format,
      fields: { ...this.#fields, ...fields },
    });
  }

  enabled(level: LogLevel): boolean {
    return rank[level] <= rank[this.level];
  }

  error(msg: string, fields?: Record<string, unknown>): void {
    this.#log("error", msg, fields);
  }
  warn(msg: string, fields?: Record<string, unknown>): void {
    this.#log("warn", msg, fields);
  }
  info(msg: string, fields?: Record<string, unknown>): void {
    this.#log("info", msg, fields);
  }
  debug(msg: string, fields?: Record<string, unknown>): void {
    this.#log("debug", msg, fields);
  }

  #log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void {
    if (!this.enabled(level)) return;
    const ts = new Date().toISOString();
    const all = { ...this.#fields, ...fields };
    if (this.#format === "text") {
      const extra = Object.entries(all).map(([k, v]) =>
        `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`
      );
      this.#sink.write(
        `${ts} ${level.toUpperCase().padEnd(5)} ${msg}${
          extra.length ? " " + extra.join(" ") : ""
        }\n`,
      );
    } else {
      this.#sink.write(JSON.stringify({ ts, level, msg, ...all }) + "\n");
    }
  }
}

const encoder = new TextEncoder();
const stderrSink: LogSink = { write: (line) => void Deno.stderr.writeSync(encoder.encode(line)) };

/** A logger that drops everything (library default: a library does not write to stderr). */
export const silentLogger = new Logger({ level: "error", sink: { write() {} } });
