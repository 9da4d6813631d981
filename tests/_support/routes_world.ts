/**
 * Two wireguard-go peers for the routing tests (issue 5, must-show 3): wrapguard runs in a host
 * namespace without routes; peer A and peer B each carry the same "far" addresses on their
 * loopback, with a TCP service that names its namespace, so only routing decides who answers.
 *
 * ```text
 *   netns host : wrapguard run (10.77.0.2, fd77::2)
 *     ├─ veth ─ netns peer  (A): wg 10.77.0.1/24 fd77::1/64; lo 198.51.100.7 172.20.0.1 fd99::1
 *     └─ veth ─ netns peer2 (B): wg 10.88.0.1/24 fd88::1/64; lo 198.51.100.7 172.20.0.1 fd99::1
 *   services on both: TCP 8080 and 8081 answer "A\n" / "B\n" (socat, dual stack)
 * ```
 *
 * The config gives A `AllowedIPs = 10.77.0.0/24, fd77::/64, 172.20.0.0/16` and B
 * `AllowedIPs = 10.88.0.0/24, fd88::/64` with `Route = 172.20.0.0/16:tcp:8081`.
 *
 * @module
 */
import { genKey, pubKey, run, type Topology, waitForPort } from "./netns.ts";
import type { RunResult } from "./proc.ts";
import type { WireguardGo } from "./wggo.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const FLAGS = Deno.readTextFileSync(`${ROOT}cli/permissions.flags`).split(/\s+/).filter((f) => f);
const HOST_ENV = { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" };

export const FAR4 = "198.51.100.7";
export const FAR6 = "fd99::1";
export const SPLIT4 = "172.20.0.1";

export interface RoutesWorld {
  host: string;
  a: WireguardGo;
  b: WireguardGo;
  configPath: string;
  /** Runs `wrapguard run --config … ARGS -- cmd` in the host namespace. */
  wrap(cmd: string[], args?: string[], env?: Record<string, string>): Promise<RunResult>;
  /** Connects with a wrapped socat to `host:port` and returns what the service said. */
  ask(host: string, port: number, args?: string[]): Promise<RunResult>;
}

async function serveIdentity(topo: Topology, ns: string, name: string): Promise<void> {
  await run(null, ["ip", "-n", ns, "address", "add", `${FAR4}/32`, "dev", "lo"], { check: true });
  await run(null, ["ip", "-n", ns, "address", "add", `${SPLIT4}/32`, "dev", "lo"], { check: true });
  await run(null, ["ip", "-n", ns, "address", "add", `${FAR6}/128`, "dev", "lo"], { check: true });
  for (const port of [8080, 8081]) {
    topo.spawn(ns, [
      "socat",
      `TCP6-LISTEN:${port},fork,reuseaddr,ipv6only=0`,
      `SYSTEM:echo ${name}`,
    ]);
    await waitForPort(ns, port);
  }
}

/** Builds the world on `topo` (created with `hostNamespace: true`) and runs `fn`. */
export async function withRoutesWorld(
  topo: Topology,
  fn: (w: RoutesWorld) => Promise<void>,
): Promise<void> {
  const host = topo.host;
  if (host === null) throw new Error("withRoutesWorld needs a host namespace");
  const linkB = await topo.addPeerNamespace();
  const ourPrivate = await genKey();
  const ourPublic = await pubKey(ourPrivate);
  const listenPort = 40000 + (parseInt(topo.id, 16) % 20000);
  const us = [`10.77.0.2/32`, `fd77::2/128`];
  const a = await topo.startWireguardGo(topo.peer, {
    addresses: ["10.77.0.1/24", "fd77::1/64"],
    peers: [{ publicKey: ourPublic, allowedIPs: us, endpoint: `${topo.hostAddr}:${listenPort}` }],
  });
  const b = await topo.startWireguardGo(linkB.peerNs, {
    addresses: ["10.88.0.1/24", "fd88::1/64"],
    peers: [{ publicKey: ourPublic, allowedIPs: us, endpoint: `${linkB.hostAddr}:${listenPort}` }],
  });
  await serveIdentity(topo, topo.peer, "A");
  await serveIdentity(topo, linkB.peerNs, "B");
  const configPath = `${topo.tmpDir}/routes.conf`;
  await Deno.writeTextFile(
    configPath,
    `[Interface]
PrivateKey = ${ourPrivate}
Address = 10.77.0.2/32, fd77::2/128
ListenPort = ${listenPort}

[Peer]
PublicKey = ${a.publicKey}
Endpoint = ${topo.endpoint(a)}
AllowedIPs = 10.77.0.0/24, fd77::/64, 172.20.0.0/16
PersistentKeepalive = 25

[Peer]
PublicKey = ${b.publicKey}
Endpoint = ${topo.endpoint(b)}
AllowedIPs = 10.88.0.0/24, fd88::/64
Route = 172.20.0.0/16:tcp:8081
PersistentKeepalive = 25
`,
    { mode: 0o600 },
  );
  const wrap = (cmd: string[], args: string[] = [], env: Record<string, string> = {}) =>
    topo.run(host, [
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
    ], { env: { ...HOST_ENV, ...env }, timeoutMs: 30_000 });
  const ask = (addr: string, port: number, args: string[] = []) =>
    wrap([
      "socat",
      "-u",
      `TCP:${addr.includes(":") ? `[${addr}]` : addr}:${port},connect-timeout=5`,
      "STDOUT",
    ], args);
  await fn({ host, a, b, configPath, wrap, ask });
}
