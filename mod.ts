/**
 * wrapguard as a library: a userspace WireGuard engine and TCP/IP stack for Deno, with no root,
 * no TUN device and no kernel module.
 *
 * {@link Tunnel} brings up the engine and the userspace stack from a wg-quick config:
 * `tunnel.connect()` and `tunnel.listen()` give TCP shaped like `Deno.Conn` / `Deno.Listener`,
 * `tunnel.resolve()` and `tunnel.fetch()` use the config's `DNS =` through the tunnel,
 * `tunnel.stack.udp` datagrams, `tunnel.ping()` ICMP echo, `tunnel.status()` what `wg show` shows.
 *
 * @example Two tunnels on this machine, and a TCP echo between them
 * ```ts
 * import { encodeKey, generatePrivateKey, publicKeyOf, Tunnel } from "./mod.ts";
 *
 * const serverKey = generatePrivateKey(), clientKey = generatePrivateKey();
 * const server = await Tunnel.fromText(
 *   `[Interface]\nPrivateKey = ${encodeKey(serverKey)}\nAddress = 10.9.0.1/32\n\n` +
 *     `[Peer]\nPublicKey = ${encodeKey(publicKeyOf(clientKey))}\nAllowedIPs = 10.9.0.2/32\n`,
 *   { listenAddress: "127.0.0.1" },
 * );
 * const client = await Tunnel.fromText(
 *   `[Interface]\nPrivateKey = ${encodeKey(clientKey)}\nAddress = 10.9.0.2/32\n\n` +
 *     `[Peer]\nPublicKey = ${encodeKey(publicKeyOf(serverKey))}\nAllowedIPs = 10.9.0.1/32\n` +
 *     `Endpoint = 127.0.0.1:${server.udp.port}\n`,
 *   { listenAddress: "127.0.0.1" },
 * );
 *
 * const listener = server.listen({ port: 7 });
 * (async () => {
 *   const conn = await listener.accept();
 *   await conn.readable.pipeTo(conn.writable); // echo until the client half-closes
 * })();
 *
 * const conn = await client.connect({ hostname: "10.9.0.1", port: 7 });
 * await conn.writeAll(new TextEncoder().encode("hello through WireGuard"));
 * await conn.closeWrite();
 * const echoed = await new Response(conn.readable).text();
 * if (echoed !== "hello through WireGuard") throw new Error(echoed);
 *
 * listener.close();
 * client.close();
 * server.close();
 * await new Promise((r) => setTimeout(r, 10)); // let the UDP sockets finish closing
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
} from "./core/host/tunnel/mod.ts";
export { Logger, type LogLevel } from "./core/host/log.ts";
export { type TunnelConn, type TunnelListener } from "./core/host/tunnel/tcp.ts";
export {
  DnsError,
  DnsNotFoundError,
  DnsServerFailError,
  DnsTimeoutError,
} from "./core/host/tunnel/dns.ts";
