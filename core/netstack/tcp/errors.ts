/**
 * The error a connection ends with, carrying the errno a kernel would give the program
 * (DESIGN.md decision 6). Errors of `listen` and `connect` that a kernel reports at once
 * (EADDRINUSE, EADDRNOTAVAIL, ENETUNREACH) use the stack's classes in `../ip_errors.ts`, as UDP
 * does.
 *
 * @module
 */

/** Why a connection ended or an operation on it was refused. */
export type TcpErrorCode =
  /** RST in answer to our SYN, or ICMP port unreachable while connecting. */
  | "ECONNREFUSED"
  /** RST on a synchronized connection. */
  | "ECONNRESET"
  /** SYN or data retransmissions exhausted, keepalive or zero-window probes unanswered. */
  | "ETIMEDOUT"
  /** ICMP host unreachable or administratively prohibited while connecting. */
  | "EHOSTUNREACH"
  /** ICMP network unreachable while connecting. */
  | "ENETUNREACH"
  /** Writing after `shutdownWrite`/`close`, or on a connection that has ended. */
  | "EPIPE"
  /** The layer's connection limit is reached. */
  | "ENOBUFS";

/**
 * A connection-level error; `code` is the errno name.
 *
 * @example
 * ```ts
 * import { TcpError } from "./errors.ts";
 * const e = new TcpError("ECONNRESET", "Connection reset by peer");
 * console.assert(e.code === "ECONNRESET" && e instanceof Error);
 * ```
 */
export class TcpError extends Error {
  override name = "TcpError";
  readonly code: TcpErrorCode;

  constructor(code: TcpErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}
