/**
 * Prints a {@link Config} back as wg-quick text that {@link parseConfig} reads into an equal
 * Config. Warnings and the keys they were about are not printed: they had no effect.
 *
 * @module
 */
import { formatIP, formatPrefix } from "../wire/addr.ts";
import { encodeKey } from "../wireguard/keys.ts";
import type { Config, RouteRule } from "./types.ts";

/** Options for {@link formatConfig}. */
export interface FormatOptions {
  /**
   * Print `<redacted>` instead of the PrivateKey and PresharedKeys, for logs and bug reports.
   * The output then no longer parses.
   */
  redact?: boolean;
}

/**
 * The config as wg-quick text: `[Interface]` first, then each `[Peer]`, one blank line between
 * sections, lists joined with `, `. Secrets are included unless `redact` is set, since this is
 * what a config file holds. `Route` lines are wrapguard's own; wg-quick would reject them.
 *
 * @example
 * ```ts
 * import { formatConfig, parseConfig } from "./mod.ts";
 * const text = "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n";
 * const out = formatConfig(parseConfig(text), { redact: true });
 * if (out !== "[Interface]\nPrivateKey = <redacted>\n") throw new Error(out);
 * ```
 */
export function formatConfig(config: Config, options: FormatOptions = {}): string {
  const secret = (key: Uint8Array) => options.redact ? "<redacted>" : encodeKey(key);
  const iface = config.interface;
  const out: string[] = ["[Interface]", `PrivateKey = ${secret(iface.privateKey)}`];
  if (iface.addresses.length) out.push(`Address = ${iface.addresses.map(formatPrefix).join(", ")}`);
  if (iface.listenPort !== undefined) out.push(`ListenPort = ${iface.listenPort}`);
  const dns = [...iface.dns.servers.map(formatIP), ...iface.dns.search];
  if (dns.length) out.push(`DNS = ${dns.join(", ")}`);
  if (iface.mtu !== undefined) out.push(`MTU = ${iface.mtu}`);

  for (const peer of config.peers) {
    out.push("", "[Peer]", `PublicKey = ${encodeKey(peer.publicKey)}`);
    if (peer.presharedKey) out.push(`PresharedKey = ${secret(peer.presharedKey)}`);
    if (peer.endpoint) {
      const { host, port } = peer.endpoint;
      out.push(`Endpoint = ${host.includes(":") ? `[${host}]` : host}:${port}`);
    }
    if (peer.allowedIPs.length) {
      out.push(`AllowedIPs = ${peer.allowedIPs.map(formatPrefix).join(", ")}`);
    }
    if (peer.persistentKeepalive) out.push(`PersistentKeepalive = ${peer.persistentKeepalive}`);
    if (peer.routes.length) out.push(`Route = ${peer.routes.map(formatRoute).join(", ")}`);
  }
  return out.join("\n") + "\n";
}

/** `CIDR[:proto[:port]]`, as the `Route` key takes it. */
export function formatRoute(route: RouteRule): string {
  let text = formatPrefix(route.prefix);
  if (route.protocol) text += `:${route.protocol}`;
  if (route.protocol && route.port !== undefined) text += `:${route.port}`;
  return text;
}
