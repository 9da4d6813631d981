/**
 * wrapguard as a library: a userspace WireGuard engine and TCP/IP stack for Deno, with no root,
 * no TUN device and no kernel module.
 *
 * {@link Tunnel} brings up the engine and the userspace stack from a wg-quick config:
 * `tunnel.connect()` and `tunnel.listen()` give TCP shaped like `Deno.Conn` / `Deno.Listener`,
 * `tunnel.resolve()` and `tunnel.fetch()` use the config's `DNS =` through the tunnel,
 * `tunnel.stack.udp` datagrams, `tunnel.ping()` ICMP echo, `tunnel.status()` what `wg show` shows.
 *
 * @example Derive a public key and read a config
 * ```ts
 * import { encodeKey, generatePrivateKey, parseConfig, publicKeyOf } from "./mod.ts";
 *
 * const key = generatePrivateKey();
 * const config = parseConfig(
 *   `[Interface]\nPrivateKey = ${encodeKey(key)}\nAddress = 10.0.0.2/32\n\n` +
 *     `[Peer]\nPublicKey = ${encodeKey(publicKeyOf(generatePrivateKey()))}\n` +
 *     `AllowedIPs = 10.0.0.0/24\nEndpoint = 127.0.0.1:51820\n`,
 * );
 * if (config.peers.length !== 1) throw new Error("expected one peer");
 * ```
 *
 * @module
 */
export {
  type Config,
  ConfigError,
  type ConfigWarning,
  formatConfig,
  type InterfaceConfig,
  loadConfig,
  parseConfig,
  type PeerConfig,
  type RouteRule,
} from "./core/config/mod.ts";
export {
  decodeKey,
  encodeKey,
  generatePresharedKey,
  generatePrivateKey,
  publicKeyOf,
} from "./core/wireguard/keys.ts";
export {
  type PeerStatus,
  Tunnel,
  type TunnelOptions,
  type TunnelStatus,
} from "./core/host/tunnel.ts";
export { Logger, type LogLevel } from "./core/host/log.ts";
export { type TunnelConn, type TunnelListener } from "./core/host/net_tcp.ts";
export {
  DnsError,
  DnsNotFoundError,
  DnsServerFailError,
  DnsTimeoutError,
} from "./core/host/dns.ts";
