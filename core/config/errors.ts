/**
 * The one error a config reader throws for bad contents.
 *
 * @module
 */

/**
 * A config file that wg-quick or wrapguard would refuse. The message reads
 * `file:line: reason`, as compilers print it; `line` is 0 when the problem is the file as a whole
 * (no `[Interface]` at all).
 *
 * @example
 * ```ts
 * import { ConfigError } from "./errors.ts";
 * const e = new ConfigError("wg0.conf", 7, "PublicKey is not 32 bytes of base64");
 * if (e.message !== "wg0.conf:7: PublicKey is not 32 bytes of base64") throw new Error();
 * ```
 */
export class ConfigError extends SyntaxError {
  /** The file name given to the parser (`<config>` when none was). */
  readonly file: string;
  /** 1-based line number, or 0 for the whole file. */
  readonly line: number;
  /** The message without the `file:line: ` prefix. */
  readonly reason: string;

  constructor(file: string, line: number, reason: string) {
    super(line > 0 ? `${file}:${line}: ${reason}` : `${file}: ${reason}`);
    this.name = "ConfigError";
    this.file = file;
    this.line = line;
    this.reason = reason;
  }
}
