/**
 * Dialling through the tunnel for `forward` and `proxy`: names are resolved through the config's
 * `DNS =` over the tunnel, and a destination that no peer's AllowedIPs covers fails at once with
 * "network unreachable" (these commands never fall back to the host network). Failures are sorted
 * into the few kinds that SOCKS5 replies and HTTP statuses can tell apart.
 *
 * @module
 */
import { formatIP, type IpBytes, parseIP } from "../../wire/addr.ts";
import { DnsError } from "../tunnel/dns.ts";
import type { TunnelConn } from "../tunnel/tcp.ts";
import type { Tunnel } from "../tunnel/mod.ts";

/** Why a dial failed, in the terms a proxy can report. */
export type DialFailure =
  | "refused"
  | "network-unreachable"
  | "host-unreachable"
  | "timeout"
  | "name-not-found"
  | "other";

/** A failed dial: `kind` for the reply, `message` for the log. */
export class DialError extends Error {
  readonly kind: DialFailure;
  constructor(kind: DialFailure, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DialError";
    this.kind = kind;
  }
}

/** The first address of `hostname` (an IP literal, or a name through the tunnel's DNS). */
export async function resolveThroughTunnel(tunnel: Tunnel, hostname: string): Promise<IpBytes> {
  const literal = parseIP(hostname);
  if (literal) return literal;
  try {
    return await tunnel.lookup(hostname);
  } catch (e) {
    if (e instanceof DnsError || e instanceof Deno.errors.NotFound) {
      throw new DialError("name-not-found", `cannot resolve ${hostname}: ${(e as Error).message}`, {
        cause: e,
      });
    }
    throw new DialError("other", `cannot resolve ${hostname}: ${(e as Error).message}`, {
      cause: e,
    });
  }
}

/** Sorts an error from `tunnel.connect` into a {@link DialFailure}. */
export function classify(e: unknown): DialFailure {
  if (e instanceof DialError) return e.kind;
  if (e instanceof Deno.errors.ConnectionRefused) return "refused";
  if (e instanceof Deno.errors.TimedOut) return "timeout";
  if (e instanceof Deno.errors.NetworkUnreachable) {
    const code = (e as { code?: string }).code;
    return code === "EHOSTUNREACH" ? "host-unreachable" : "network-unreachable";
  }
  return "other";
}

/** Opens a TCP connection to `hostname:port` through the tunnel; failures are {@link DialError}s. */
export async function dialTunnel(
  tunnel: Tunnel,
  hostname: string,
  port: number,
  options: { signal?: AbortSignal } = {},
): Promise<TunnelConn> {
  const dst = await resolveThroughTunnel(tunnel, hostname);
  const where = `${hostname}:${port}`;
  if (!tunnel.device.route(dst)) {
    throw new DialError(
      "network-unreachable",
      `${where}: ${formatIP(dst)} is in no peer's AllowedIPs`,
    );
  }
  try {
    // No Nagle: a relay forwards what the application already chose to send; holding a small
    // write back for an ACK would only add latency (ssh does the same for its forwards).
    return await tunnel.connect({
      hostname: formatIP(dst),
      port,
      signal: options.signal,
      noDelay: true,
    });
  } catch (e) {
    throw new DialError(classify(e), `${where}: ${(e as Error).message}`, { cause: e });
  }
}
