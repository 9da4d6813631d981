/**
 * The world `wrapguard run` is proven in (issue 4): wireguard-go and kernel services in a peer
 * namespace, and the wrapguard host process itself, with the programs it wraps, in a "host"
 * namespace that has no default route:
 *
 * ```text
 *   netns wgt-<id>-host   : `deno run … cli/main.ts run --config run.conf -- cmd`  (10.77.0.2,
 *                           fd77::2 on the tunnel; UDP from its veth address), resolv.conf
 *                           pointing at a decoy (the peer's veth address, where nothing answers
 *                           DNS) so that a query that escaped the interposer would show
 *        │ veth
 *   netns wgt-<id>-peer   : wireguard-go 10.77.0.1/24, fd77::1/64; dnsmasq on 10.77.0.1 (names
 *                           under wg.test); whatever servers a test starts
 * ```
 *
 * `DNS = 10.77.0.1, wg.test` is in the config unless `dns: false`.
 *
 * @module
 */
import { genKey, pubKey, type Spawned, type Topology, which } from "./netns.ts";
import type { RunResult } from "./proc.ts";
import { type Dnsmasq, startDnsmasq } from "./dnsmasq.ts";
import type { WireguardGo } from "./wggo.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const FLAGS = Deno.readTextFileSync(`${ROOT}cli/permissions.flags`).split(/\s+/).filter((f) => f);

/**
 * For the wrapguard host process: no colours, and no update check (`deno run` would otherwise ask
 * dl.deno.land, which is the runtime's traffic, not the wrapped program's; a compiled wrapguard
 * does not check).
 */
const HOST_ENV = { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" };

export const PEER4 = "10.77.0.1";
export const PEER6 = "fd77::1";
export const OURS4 = "10.77.0.2";
export const OURS6 = "fd77::2";
/** A name dnsmasq serves with both addresses of the peer. */
export const SVC_NAME = "svc.wg.test";

export interface RunWorldOptions {
  /** `DNS =` in the config (default true). */
  dns?: boolean;
  /** Extra lines for [Interface]. */
  interfaceExtra?: string;
  /**
   * `PersistentKeepalive` for the peer (default 25): it also makes each run handshake at start,
   * so that wireguard-go drops the previous run's session at once (a wrapped server is reachable
   * immediately, instead of after wireguard-go's ~15 s of unanswered packets). 0 for none.
   */
  keepalive?: number;
}

export interface RunWorld {
  topo: Topology;
  /** The namespace wrapguard runs in. */
  host: string;
  wg: WireguardGo;
  dns?: Dnsmasq;
  /** The wg-quick config wrapguard is given. */
  configPath: string;
  /** Our UDP port (fixed, so that wireguard-go can reach us first). */
  listenPort: number;
  /** The decoy nameserver of the host namespace's resolv.conf. */
  decoyNameserver: string;
  /** argv that runs `wrapguard run --config … [args] -- cmd` inside the host namespace. */
  wrapArgv(cmd: string[], args?: string[]): string[];
  /** Runs a wrapped command to completion (in the host namespace). */
  wrap(
    cmd: string[],
    opts?: {
      args?: string[];
      env?: Record<string, string>;
      timeoutMs?: number;
      stdin?: string;
    },
  ): Promise<RunResult>;
  /** Starts a wrapped command (killed with the topology). */
  spawnWrapped(
    cmd: string[],
    opts?: { args?: string[]; env?: Record<string, string>; stdin?: "piped" | "null" },
  ): Spawned;
}

/**
 * Builds the world on `topo` (created with `hostNamespace: true`), runs `fn`, and removes what it
 * added outside the topology (the namespace's resolv.conf under /etc/netns).
 */
export async function withRunWorld(
  topo: Topology,
  opts: RunWorldOptions,
  fn: (w: RunWorld) => Promise<void>,
): Promise<void> {
  const host = topo.host;
  if (host === null) throw new Error("withRunWorld needs Topology.create({ hostNamespace: true })");
  const ourPrivate = await genKey();
  const ourPublic = await pubKey(ourPrivate);
  const listenPort = 40000 + (parseInt(topo.id, 16) % 20000);
  const wg = await topo.startWireguardGo(topo.peer, {
    addresses: [`${PEER4}/24`, `${PEER6}/64`],
    peers: [{
      publicKey: ourPublic,
      allowedIPs: [`${OURS4}/32`, `${OURS6}/128`],
      endpoint: `${topo.hostAddr}:${listenPort}`,
    }],
  });
  const useDns = opts.dns ?? true;
  let dns: Dnsmasq | undefined;
  if (useDns) {
    dns = await startDnsmasq(topo, topo.peer, {
      listen: [PEER4],
      localDomains: ["wg.test"],
      hostRecords: [{ name: SVC_NAME, addresses: [PEER4, PEER6] }],
      addresses: [{ domain: "v4only.wg.test", address: PEER4 }],
    });
  }
  const configPath = `${topo.tmpDir}/run.conf`;
  await Deno.writeTextFile(
    configPath,
    `[Interface]
PrivateKey = ${ourPrivate}
Address = ${OURS4}/32, ${OURS6}/128
ListenPort = ${listenPort}
${useDns ? `DNS = ${PEER4}, wg.test` : ""}
${opts.interfaceExtra ?? ""}

[Peer]
PublicKey = ${wg.publicKey}
Endpoint = ${topo.endpoint(wg)}
AllowedIPs = 10.77.0.0/24, fd77::/64
${(opts.keepalive ?? 25) > 0 ? `PersistentKeepalive = ${opts.keepalive ?? 25}` : ""}
`,
    { mode: 0o600 },
  );
  // `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf.
  const etc = `/etc/netns/${host}`;
  await Deno.mkdir(etc, { recursive: true });
  const decoyNameserver = topo.peerAddr;
  await Deno.writeTextFile(`${etc}/resolv.conf`, `nameserver ${decoyNameserver}\n`);
  const wrapArgv = (cmd: string[], args: string[] = []) => [
    Deno.execPath(),
    "run",
    ...FLAGS,
    `${ROOT}cli/main.ts`,
    "run",
    "--config",
    configPath,
    ...args,
    "--",
    ...cmd,
  ];
  const world: RunWorld = {
    topo,
    host,
    wg,
    dns,
    configPath,
    listenPort,
    decoyNameserver,
    wrapArgv,
    wrap: (cmd, o = {}) =>
      topo.run(host, wrapArgv(cmd, o.args), {
        env: { ...HOST_ENV, ...o.env },
        timeoutMs: o.timeoutMs ?? 30_000,
        stdin: o.stdin,
      }),
    spawnWrapped: (cmd, o = {}) =>
      topo.spawn(host, wrapArgv(cmd, o.args), {
        env: { ...HOST_ENV, ...o.env },
        stdin: o.stdin,
      }),
  };
  try {
    await fn(world);
  } finally {
    await Deno.remove(etc, { recursive: true }).catch(() => {});
  }
}

/** Tools the run tests drive. */
export const RUN_TOOLS = ["curl", "python3", "socat", "dnsmasq", "dig", "getent"];

/** True when `name` is installed. */
export function have(name: string): boolean {
  return which(name) !== undefined;
}

/** SHA-256 of bytes, as hex. */
export async function sha256(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A file of `size` pseudo-random bytes (a random block repeated at odd offsets). */
export async function writeBlob(path: string, size: number): Promise<Uint8Array<ArrayBuffer>> {
  const block = crypto.getRandomValues(new Uint8Array(65521));
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i += block.length) {
    out.set(block.subarray(0, Math.min(block.length, size - i)), i);
  }
  await Deno.writeFile(path, out);
  return out;
}
