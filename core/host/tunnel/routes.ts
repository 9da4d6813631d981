/**
 * Policy routing beyond AllowedIPs (DESIGN.md decision 3): `--exit-node IP`, `--route CIDR:IP` and
 * the config's `Route = CIDR[:tcp|udp[:port]]` lines.
 *
 * ```text
 * options + config ─► planRoutes ─► RoutePlan { rules (prefix ─► peer, maybe proto/port) }
 *   ├─► applyRoutes(tunnel): whole prefix  ─► device.addRoute   (both directions, like AllowedIPs)
 *   │                        proto/port    ─► tunnel.policy + device.acceptFrom (sendToPeer)
 *   └─► interposerRoutes: WRAPGUARD_ROUTES for the program (AllowedIPs + routed prefixes, or
 *       everything non-local with an exit node)
 * ```
 *
 * A route sends its prefix to a peer *and* accepts that prefix as a source from the peer, exactly
 * as adding it to the peer's AllowedIPs would: with wg-quick, an exit node works because the
 * peer's AllowedIPs is `0.0.0.0/0`, so replies from anywhere pass the inbound check.
 *
 * Longest prefix wins across AllowedIPs and routes, as in a kernel routing table: a peer's own
 * AllowedIPs stay with it under an exit node. A filtered route (`:tcp:443`) is checked first, per
 * packet, and only for traffic it matches; the rest of its prefix follows AllowedIPs.
 *
 * The interposer decides per destination address only (it has no port filters), so a filtered
 * route hands its whole prefix to the broker: connections to it that the filter does not match go
 * by AllowedIPs, and fail with ENETUNREACH (logged as a refusal) when no peer's AllowedIPs cover
 * them — they do not leave on the host network.
 *
 * @module
 */
import type { Config, PeerConfig } from "../../config/types.ts";
import {
  formatIP,
  formatPrefix,
  type IpBytes,
  maskPrefix,
  parseIP,
  parsePrefix,
  type Prefix,
  prefixContains,
} from "../../wire/addr.ts";
import type { Peer } from "../../wireguard/device.ts";

/** A routing option that cannot be used: its message is meant for the user. */
export class RouteError extends TypeError {
  constructor(message: string) {
    super(message);
    this.name = "RouteError";
  }
}

/** One route, resolved to the config peer it goes to. */
export interface RouteRule {
  prefix: Prefix;
  /** The config's peer (index into `config.peers`). */
  peerIndex: number;
  protocol?: "tcp" | "udp";
  /** Destination port (only with a protocol). */
  port?: number;
  /** Where the rule came from, for logs: `--exit-node`, `--route` or `Route`. */
  origin: "--exit-node" | "--route" | "Route";
}

/** What the routing options asked for, resolved against a config. */
export interface RoutePlan {
  rules: RouteRule[];
  /** With `--exit-node`: the peer everything non-local goes to. */
  exitPeer?: number;
}

/** Parses `--route CIDR:IP` (`10.1.0.0/16:10.0.0.1`, `fd01::/64:fd00::1`). */
export function parseRouteOption(text: string): { prefix: Prefix; via: IpBytes } {
  const slash = text.indexOf("/");
  const colon = slash < 0 ? -1 : text.indexOf(":", slash);
  if (slash < 0 || colon < 0) {
    throw new RouteError(`--route must be CIDR:PEER-IP (e.g. 10.1.0.0/16:10.0.0.1), not '${text}'`);
  }
  const prefix = parsePrefix(text.slice(0, colon));
  const via = parseIP(text.slice(colon + 1));
  if (!prefix) throw new RouteError(`--route ${text}: '${text.slice(0, colon)}' is not a CIDR`);
  if (!via) {
    throw new RouteError(`--route ${text}: '${text.slice(colon + 1)}' is not an IP address`);
  }
  return { prefix: maskPrefix(prefix), via };
}

/** Parses `--exit-node IP`. */
export function parseExitNode(text: string): IpBytes {
  const ip = parseIP(text);
  if (!ip) throw new RouteError(`--exit-node must be a peer's tunnel IP address, not '${text}'`);
  return ip;
}

/** The config peer whose AllowedIPs contain `ip` (longest prefix), as an index. */
export function peerOwning(config: Config, ip: IpBytes): number | undefined {
  let best: number | undefined, bestBits = -1;
  config.peers.forEach((p, i) => {
    for (const a of p.allowedIPs) {
      if (a.bits > bestBits && prefixContains(a, ip)) {
        best = i;
        bestBits = a.bits;
      }
    }
  });
  return best;
}

const EVERYTHING: Prefix[] = [
  { addr: new Uint8Array(4), bits: 0 },
  { addr: new Uint8Array(16), bits: 0 },
];

/**
 * Resolves `--exit-node`, `--route` and every peer's `Route =` lines against `config`.
 * @throws {RouteError} when a named IP belongs to no peer's AllowedIPs.
 */
export function planRoutes(
  config: Config,
  options: { exitNode?: IpBytes; routes?: { prefix: Prefix; via: IpBytes }[] } = {},
): RoutePlan {
  const rules: RouteRule[] = [];
  const owner = (ip: IpBytes, what: string): number => {
    const i = peerOwning(config, ip);
    if (i === undefined) {
      throw new RouteError(`${what}: ${formatIP(ip)} is in no peer's AllowedIPs`);
    }
    return i;
  };
  config.peers.forEach((p: PeerConfig, i) => {
    for (const r of p.routes) {
      rules.push({
        prefix: r.prefix,
        peerIndex: i,
        protocol: r.protocol,
        port: r.port,
        origin: "Route",
      });
    }
  });
  for (const r of options.routes ?? []) {
    const peerIndex = owner(r.via, `--route ${formatPrefix(r.prefix)}:${formatIP(r.via)}`);
    rules.push({ prefix: r.prefix, peerIndex, origin: "--route" });
  }
  let exitPeer: number | undefined;
  if (options.exitNode) {
    exitPeer = owner(options.exitNode, `--exit-node ${formatIP(options.exitNode)}`);
    for (const prefix of EVERYTHING) {
      rules.push({ prefix, peerIndex: exitPeer, origin: "--exit-node" });
    }
  }
  return { rules, exitPeer };
}

/** Destinations that are never sent to an exit node: link-local (loopback is never intercepted). */
export const LOCAL_PREFIXES: readonly string[] = ["169.254.0.0/16", "fe80::/10"];

/**
 * `WRAPGUARD_ROUTES` for the interposer: every peer's AllowedIPs and every routed prefix; with an
 * exit node everything, except link-local and `hostAddresses` (the machine's own addresses, which
 * stay local as they would with wg-quick).
 */
export function interposerRoutes(
  config: Config,
  plan: RoutePlan,
  hostAddresses: readonly IpBytes[] = [],
): string[] {
  const out = new Set<string>();
  for (const p of config.peers) for (const a of p.allowedIPs) out.add(formatPrefix(a));
  for (const r of plan.rules) out.add(formatPrefix(r.prefix));
  if (plan.exitPeer !== undefined) {
    for (const l of LOCAL_PREFIXES) out.add(`!${l}`);
    const tunnel = config.interface.addresses.map((a) => formatIP(a.addr));
    for (const h of hostAddresses) {
      // Our tunnel addresses are the tunnel's, even when some interface also carries them.
      if (tunnel.includes(formatIP(h))) continue;
      out.add(`!${formatIP(h)}/${h.length * 8}`);
    }
  }
  return [...out];
}

interface PolicyEntry {
  prefix: Prefix;
  protocol: number;
  port?: number;
  peer: Peer;
}

const PROTO = { tcp: 6, udp: 17 } as const;

/**
 * The filtered policy routes (`Route = 172.16.0.0/12:tcp:443`), matched per packet before
 * cryptokey routing. Whole-prefix routes are not here: they live in the device's AllowedIPs
 * table ({@link applyRoutes}).
 */
export class PolicyTable {
  readonly #entries: PolicyEntry[] = [];

  get size(): number {
    return this.#entries.length;
  }

  add(prefix: Prefix, protocol: "tcp" | "udp", port: number | undefined, peer: Peer): void {
    this.#entries.push({ prefix: maskPrefix(prefix), protocol: PROTO[protocol], port, peer });
    // Longest prefix first, then a port-specific rule before a protocol-wide one.
    this.#entries.sort((a, b) =>
      b.prefix.bits - a.prefix.bits ||
      (b.port === undefined ? 0 : 1) - (a.port === undefined ? 0 : 1)
    );
  }

  /** The peer for a destination, protocol and port (`undefined` port: any). */
  match(dst: IpBytes, protocol: "tcp" | "udp" | number, port?: number): Peer | undefined {
    const proto = typeof protocol === "number" ? protocol : PROTO[protocol];
    for (const e of this.#entries) {
      if (e.protocol !== proto || !prefixContains(e.prefix, dst)) continue;
      if (e.port === undefined || port === undefined || e.port === port) return e.peer;
    }
    return undefined;
  }

  /**
   * The peer for an outbound IP packet, or undefined to leave it to cryptokey routing. A
   * non-first fragment carries no port: it goes where its protocol and prefix point.
   */
  forPacket(p: Uint8Array): Peer | undefined {
    if (this.#entries.length === 0 || p.length < 20) return undefined;
    const version = p[0]! >> 4;
    let proto: number, dst: Uint8Array, l4: number, first = true;
    if (version === 4) {
      const ihl = (p[0]! & 0x0f) * 4;
      proto = p[9]!;
      dst = p.subarray(16, 20);
      l4 = ihl;
      first = (((p[6]! << 8) | p[7]!) & 0x1fff) === 0;
    } else if (version === 6 && p.length >= 40) {
      proto = p[6]!;
      dst = p.subarray(24, 40);
      l4 = 40;
      if (proto === 44 && p.length >= 48) { // Fragment header (RFC 8200 4.5)
        proto = p[40]!;
        first = (((p[42]! << 8) | p[43]!) >> 3) === 0;
        l4 = 48;
      }
    } else {
      return undefined;
    }
    const port = first && p.length >= l4 + 4 ? (p[l4 + 2]! << 8) | p[l4 + 3]! : undefined;
    return this.match(dst, proto, port);
  }
}

/** The parts of a tunnel {@link applyRoutes} changes (a `Tunnel` is one). */
export interface RoutableTunnel {
  readonly config: Config;
  readonly policy: PolicyTable;
  readonly device: {
    peerByPublicKey(key: Uint8Array): Peer | undefined;
    addRoute(prefix: Prefix, peer: Peer): void;
    acceptFrom(prefix: Prefix, peer: Peer): void;
  };
}

/** Installs a plan's rules in a running tunnel's engine. */
export function applyRoutes(tunnel: RoutableTunnel, plan: RoutePlan): void {
  for (const r of plan.rules) {
    const cfg = tunnel.config.peers[r.peerIndex];
    const peer = cfg && tunnel.device.peerByPublicKey(cfg.publicKey);
    if (!peer) throw new RangeError(`route ${formatPrefix(r.prefix)}: no such peer`);
    if (r.protocol === undefined) {
      tunnel.device.addRoute(r.prefix, peer);
    } else {
      tunnel.policy.add(r.prefix, r.protocol, r.port, peer);
      tunnel.device.acceptFrom(r.prefix, peer);
    }
  }
}

/** A rule as one line of text, for logs and `show`: `172.16.0.0/12 tcp 443`. */
export function describeRule(r: RouteRule): string {
  return [formatPrefix(r.prefix), r.protocol, r.port].filter((x) => x !== undefined).join(" ");
}
