/**
 * The parsed form of a wg-quick configuration file. {@link parseConfig} builds it from text; a
 * program may also build one directly (keys are 32-byte `Uint8Array`s, addresses come from
 * `core/wire/addr.ts`).
 *
 * @module
 */
import type { IpBytes, Prefix } from "../wire/addr.ts";

/** The whole file: one `[Interface]`, its peers, and what was accepted but has no effect. */
export interface Config {
  interface: InterfaceConfig;
  /** Peers in file order. */
  peers: PeerConfig[];
  /** Things that are valid for wg/wg-quick but that wrapguard ignores or overrides. */
  warnings: ConfigWarning[];
}

/** The `[Interface]` section. */
export interface InterfaceConfig {
  /**
   * `PrivateKey`: 32 bytes as written (not clamped; X25519 clamps when it uses the key). Marked
   * with `redactSecret` by the parser, so it prints as `<redacted>`.
   */
  privateKey: Uint8Array;
  /**
   * `Address`: our own addresses, host bits kept (`10.0.0.2/24` is the address 10.0.0.2 on
   * 10.0.0.0/24). A bare address is /32 or /128.
   */
  addresses: Prefix[];
  /** `ListenPort`: the UDP port to listen on; undefined or 0 means any free port. */
  listenPort?: number;
  /**
   * `DNS`: as wg-quick splits it, entries that are IP addresses are name servers and the rest are
   * search domains. Both keep the file's order.
   */
  dns: { servers: IpBytes[]; search: string[] };
  /**
   * `MTU` of the tunnel: 576 to 65535, and at least 1280 when an IPv6 address is configured.
   * Undefined means the engine's default (wg-quick would derive one from the route to the peer).
   */
  mtu?: number;
}

/** One `[Peer]` section. */
export interface PeerConfig {
  /** `PublicKey`: the peer's 32-byte Curve25519 public key. */
  publicKey: Uint8Array;
  /** `PresharedKey`: 32 bytes mixed into the handshake; marked to print as `<redacted>`. */
  presharedKey?: Uint8Array;
  /**
   * `Endpoint`: where to send handshakes until the peer roams. `host` is the text as written,
   * an IPv4 address, an IPv6 address without brackets, or a name still to be resolved.
   */
  endpoint?: { host: string; port: number };
  /**
   * `AllowedIPs`, masked as `wg` shows them (`10.0.0.7/24` is stored as 10.0.0.0/24) and without
   * duplicates. As in wg, a prefix listed by two peers belongs to the later one only (the parser
   * removes it from the earlier peer and warns).
   */
  allowedIPs: Prefix[];
  /** `PersistentKeepalive` in seconds, 1 to 65535; undefined when absent, `0` or `off`. */
  persistentKeepalive?: number;
  /** wrapguard's `Route` entries: traffic they match is sent to this peer. */
  routes: RouteRule[];
  /** 1-based line number of this peer's `[Peer]` header (0 for a peer not read from a file). */
  line: number;
}

/**
 * `Route = CIDR[:tcp|udp[:port]]`: connections to `prefix` (optionally only of one protocol, and
 * only to one destination port) go through the peer that lists the route.
 */
export interface RouteRule {
  /** Destination prefix, masked. */
  prefix: Prefix;
  protocol?: "tcp" | "udp";
  /** Destination port, 1 to 65535; only with a protocol. */
  port?: number;
}

/** A key that was accepted but does nothing, or a value wrapguard adjusted. */
export interface ConfigWarning {
  /** 1-based line number; 0 when the warning is about the whole file. */
  line: number;
  /** The key as wg spells it (`PostUp`, `AllowedIPs`); empty for whole-file warnings. */
  key: string;
  message: string;
}
