/**
 * wireguard-go in a peer namespace and our Tunnel in this test process (root namespace),
 * configured for each other over the topology's veth. Tunnel addresses: wireguard-go
 * 10.77.0.1 / fd77::1, us 10.77.0.2 / fd77::2. Everything is torn down when `fn` returns.
 *
 * @module
 */
import { parseConfig } from "../../core/config/mod.ts";
import { Tunnel, type TunnelOptions } from "../../core/host/tunnel/mod.ts";
import { publicKeyOf } from "../../core/wireguard/keys.ts";
import { genKey, type Topology } from "./netns.ts";
import type { WireguardGo } from "./wggo.ts";

export const PAIR_MTU = 1420;

export interface Pair {
  topo: Topology;
  wg: WireguardGo;
  tunnel: Tunnel;
  /** Our public key as base64, as `wg` names the peer. */
  ourPublic: string;
}

export interface PairOptions {
  ourPsk?: string;
  theirPsk?: string;
  /** Whether wireguard-go is told our endpoint (default true); else it learns it from us. */
  theyKnowOurEndpoint?: boolean;
  /** Where our tunnel sends its UDP (default: wireguard-go's address); e.g. a fault relay. */
  endpointFor?: (wgEndpoint: string) => string;
  tunnel?: TunnelOptions;
  /** Extra lines for our [Interface] section, e.g. `DNS = 10.77.0.1, wg.test`. */
  interfaceExtra?: string;
}

export async function withPair(
  topo: Topology,
  opts: PairOptions,
  fn: (p: Pair) => Promise<void>,
): Promise<void> {
  const ourPrivate = await genKey();
  const ourPublic = btoa(String.fromCharCode(...publicKeyOf(
    Uint8Array.fromBase64(ourPrivate),
  )));
  const wg = await topo.startWireguardGo(topo.peer, {
    addresses: ["10.77.0.1/24", "fd77::1/64"],
    mtu: PAIR_MTU,
    peers: [],
  });
  const endpoint = opts.endpointFor?.(topo.endpoint(wg)) ?? topo.endpoint(wg);
  const config = parseConfig(
    `[Interface]
PrivateKey = ${ourPrivate}
Address = 10.77.0.2/32, fd77::2/128
MTU = ${PAIR_MTU}
${opts.interfaceExtra ?? ""}

[Peer]
PublicKey = ${wg.publicKey}
${opts.ourPsk ? `PresharedKey = ${opts.ourPsk}` : ""}
Endpoint = ${endpoint}
AllowedIPs = 10.77.0.0/24, fd77::/64
`,
    { file: "pair.conf" },
  );
  const tunnel = await Tunnel.start(config, { listenAddress: topo.hostAddr, ...opts.tunnel });
  try {
    await wg.setPeer({
      publicKey: ourPublic,
      presharedKey: opts.theirPsk,
      allowedIPs: ["10.77.0.2/32", "fd77::2/128"],
      endpoint: opts.theyKnowOurEndpoint === false
        ? undefined
        : `${topo.hostAddr}:${tunnel.udp.port}`,
    });
    await fn({ topo, wg, tunnel, ourPublic });
  } finally {
    tunnel.close();
    // node:dgram closes asynchronously; let it finish before the sanitizers look.
    await new Promise((r) => setTimeout(r, 10));
  }
}
