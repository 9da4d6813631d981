/**
 * Network-namespace topologies with real WireGuard peers, for interop and end-to-end tests.
 *
 * ```
 *   near side: the root namespace (default; the Deno test process runs the engine there)
 *              or a "host" namespace (hostNamespace: true; lo + veths only, NO default route)
 *        │ veth vh<id> ── vp<id>, random /30 from 198.18.0.0/15 (+ a /64 from 2001:2::/48)
 *   netns wgt-<id>-peer   : wireguard-go (wgp<id>), kernel services
 *        │ more veths via addPeerNamespace(): wgt-<id>-peer2, vh<id>-2 ── vp<id>-2, …
 * ```
 *
 * Usage:
 *
 * ```ts ignore
 * netnsTest("engine talks to wireguard-go", async () => {
 *   await withTopology({}, async (topo) => {
 *     const wg = await topo.startWireguardGo(topo.peer, {
 *       addresses: ["10.77.0.2/24"],
 *       peers: [{ publicKey: ourPub, allowedIPs: ["10.77.0.1/32"] }],
 *     });
 *     const endpoint = topo.endpoint(wg); // "198.18.x.y:port", reachable from the test process
 *     // …run the engine in-process against `endpoint`, then check wg.dump()…
 *   });
 * });
 * ```
 *
 * Everything a Topology creates is removed by {@link Topology.close}, which is safe to call from a
 * `finally` after a partial creation and more than once.
 *
 * @module
 */

import {
  type Ns,
  run,
  type RunOptions,
  type RunResult,
  sleep,
  spawn,
  type Spawned,
  type SpawnOptions,
  which,
} from "./proc.ts";
import { startWireguardGo, type WireguardGo, type WireguardGoOptions } from "./wggo.ts";

export * from "./proc.ts";
export * from "./wggo.ts";

const REQUIRED_TOOLS = ["ip", "wireguard-go", "wg", "setsid"];

function ciIsSet(): boolean {
  const v = Deno.env.get("CI");
  return v !== undefined && v !== "" && v !== "0" && v.toLowerCase() !== "false";
}

/**
 * Why namespace tests cannot run here (not root, `ip`/`wireguard-go`/`wg`/`setsid` or any of
 * `extraTools` missing, no /dev/net/tun), as one line; undefined when they can. When the `CI`
 * environment variable is set (and not "0"/"false") it throws instead: CI runs as root and must run
 * every such test.
 */
export function requireRoot(extraTools: readonly string[] = []): string | undefined {
  const problems: string[] = [];
  if (Deno.uid() !== 0) problems.push("not root");
  const missing = [...REQUIRED_TOOLS, ...extraTools].filter((t) => which(t) === undefined);
  if (missing.length > 0) problems.push(`missing ${missing.join(", ")}`);
  try {
    Deno.statSync("/dev/net/tun");
  } catch {
    problems.push("no /dev/net/tun");
  }
  if (problems.length === 0) return undefined;
  const reason = `needs root, network namespaces and wireguard-go: ${problems.join("; ")}`;
  if (ciIsSet()) throw new Error(`CI is set, so this test must run, but it ${reason}`);
  return reason;
}

/** Options for {@link netnsTest}. */
export interface NetnsTestOptions {
  /** Tools the test needs beyond ip, wireguard-go, wg (e.g. "socat"). */
  requires?: string[];
  /** Fail the test after this long. Default 60 000 ms. */
  timeoutMs?: number;
  /** Passed to Deno.test; default true (a Topology closes everything it opened). */
  sanitizeOps?: boolean;
  /** Passed to Deno.test; default true. */
  sanitizeResources?: boolean;
  only?: boolean;
}

/**
 * Declares a test that needs root and namespaces. Where it cannot run it is registered as ignored
 * and the reason is printed on one line; under CI it is registered and fails with the reason.
 */
export function netnsTest(
  name: string,
  fn: (t: Deno.TestContext) => Promise<void>,
  opts: NetnsTestOptions = {},
): void {
  let reason: string | undefined;
  let ciError: unknown;
  try {
    reason = requireRoot(opts.requires ?? []);
  } catch (e) {
    ciError = e;
  }
  if (reason !== undefined) console.log(`skipping "${name}": ${reason}`);
  const timeoutMs = opts.timeoutMs ?? 60_000;
  Deno.test({
    name,
    ignore: reason !== undefined,
    only: opts.only,
    sanitizeOps: opts.sanitizeOps ?? true,
    sanitizeResources: opts.sanitizeResources ?? true,
    async fn(t) {
      if (ciError !== undefined) throw ciError;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`${name}: timed out after ${timeoutMs} ms`)),
          timeoutMs,
        );
      });
      try {
        await Promise.race([fn(t), timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
  });
}

/**
 * Creates a Topology, runs `fn`, and always closes it. Cleanup problems fail the call only when
 * `fn` itself succeeded (so they never hide the test's own error; they are printed either way).
 */
export async function withTopology<T>(
  opts: TopologyOptions,
  fn: (topo: Topology) => Promise<T>,
): Promise<T> {
  const topo = await Topology.create(opts);
  let r: T;
  try {
    r = await fn(topo);
  } catch (e) {
    await topo.close();
    throw e;
  }
  const problems = await topo.close();
  if (problems.length > 0) throw new Error(`topology cleanup failed:\n${problems.join("\n")}`);
  return r;
}

/**
 * Polls `ss` in `ns` until something listens on `port` (`tcp`) or is bound to it (`udp`); with
 * `address`, on that address (where two servers share a port, one per family, the first one up
 * does not mean the other is).
 */
export async function waitForPort(
  ns: Ns,
  port: number,
  proto: "tcp" | "udp" = "tcp",
  opts: { timeoutMs?: number; address?: string } = {},
): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 5000);
  const argv = ["ss", ...(ns === null ? [] : ["-N", ns]), "-H", proto === "tcp" ? "-ltn" : "-lun"];
  argv.push("sport", "=", `:${port}`);
  const local = opts.address === undefined
    ? undefined
    : opts.address.includes(":")
    ? `[${opts.address}]:${port}`
    : `${opts.address}:${port}`;
  for (;;) {
    const r = await run(null, argv, { check: true });
    // Columns: state, recv-q, send-q, local address:port, peer.
    const lines = r.stdout.trim().split("\n").filter((l) => l !== "");
    if (lines.some((l) => local === undefined || l.split(/\s+/)[3] === local)) return;
    if (Date.now() > deadline) {
      throw new Error(
        `nothing ${proto === "tcp" ? "listening on" : "bound to"} ${proto}/${port} in ${
          ns ?? "root"
        }`,
      );
    }
    await sleep(20);
  }
}

/** The outcome of {@link ping}. */
export interface PingResult {
  transmitted: number;
  received: number;
  /** The pinger's output (for assertion messages). */
  output: string;
}

/**
 * ICMP echo from `ns` to `dest` (IPv4 or IPv6): `ping -n -c count -W timeoutSec -i intervalSec`
 * when a ping is installed, else an equivalent raw-socket pinger in Python (tests/_support/ping.py).
 */
export async function ping(
  ns: Ns,
  dest: string,
  opts: { count?: number; timeoutSec?: number; intervalSec?: number } = {},
): Promise<PingResult> {
  const count = opts.count ?? 3;
  const timeoutSec = opts.timeoutSec ?? 1;
  const intervalSec = opts.intervalSec ?? 0.2;
  const argv = which("ping") !== undefined
    ? ["ping", "-n", "-c", String(count), "-W", String(timeoutSec), "-i", String(intervalSec), dest]
    : [
      "python3",
      new URL("./ping.py", import.meta.url).pathname,
      dest,
      String(count),
      String(timeoutSec),
      String(intervalSec),
    ];
  const r = await run(ns, argv, { timeoutMs: (count * (timeoutSec + intervalSec) + 5) * 1000 });
  const output = r.stdout + r.stderr;
  const m = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(output);
  if (m === null) {
    throw new Error(`ping ${dest} from ${ns ?? "root"}: no summary in output:\n${output}`);
  }
  return { transmitted: Number(m[1]), received: Number(m[2]), output };
}

/** Thrown by {@link Topology.netem} when the kernel has no sch_netem. */
export class NetemUnavailableError extends Error {
  constructor(detail: string) {
    super(`tc netem is not available in this kernel (sch_netem): ${detail}`);
    this.name = "NetemUnavailableError";
  }
}

let netemProbe: Promise<boolean> | undefined;

/** Whether `tc qdisc … netem` works here (probed once, on lo of a throwaway namespace). */
export function netemAvailable(): Promise<boolean> {
  netemProbe ??= run(null, [
    "unshare",
    "--net",
    "tc",
    "qdisc",
    "add",
    "dev",
    "lo",
    "root",
    "netem",
    "delay",
    "1ms",
  ])
    .then((r) => r.code === 0, () => false);
  return netemProbe;
}

/** Options for {@link Topology.create}. */
export interface TopologyOptions {
  /**
   * Put the near end of the veths in a new namespace `wgt-<id>-host` (loopback + veths, no default
   * route) instead of the root namespace. For wrapped programs; the engine-in-process tests use the
   * default (root).
   */
  hostNamespace?: boolean;
}

/** One veth between the near side and a peer namespace. */
export interface Link {
  /** The peer namespace at the far end. */
  peerNs: string;
  /** The near end: in the host namespace, or the root namespace when there is none. */
  hostIf: string;
  /** The far end, in `peerNs`. */
  peerIf: string;
  /** IPv4 of the near end (prefix /30). */
  hostAddr: string;
  /** IPv4 of the far end (prefix /30). */
  peerAddr: string;
  /** IPv6 of the near end (prefix /64, no DAD). */
  hostAddr6: string;
  /** IPv6 of the far end (prefix /64, no DAD). */
  peerAddr6: string;
}

const V4_BASE = ((198 << 24) | (18 << 16)) >>> 0; // 198.18.0.0/15: 32768 /30s

function randomInt(n: number): number {
  return crypto.getRandomValues(new Uint32Array(1))[0]! % n;
}

function randomHex(bytes: number): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(bytes)),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
}

function v4ToInt(s: string): number {
  const p = s.split(".").map(Number);
  return (((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0);
}

function intToV4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

/**
 * A set of namespaces, veths and processes created for one test, all named after a random id so
 * that concurrent runs do not collide. Create with {@link Topology.create}; end with
 * {@link Topology.close}.
 */
export class Topology {
  /** Random per-run id (6 hex digits) in every name this topology creates. */
  readonly id: string;
  /** The near-side namespace, or null for the root namespace. */
  readonly host: Ns;
  /** Temp directory, removed at close. */
  readonly tmpDir: string;
  /** The veths, first one created by `create`, more by `addPeerNamespace`. */
  readonly links: Link[] = [];

  readonly #namespaces: string[] = [];
  readonly #veths: { ns: Ns; name: string }[] = [];
  readonly #procs: Spawned[] = [];
  readonly #wgs: WireguardGo[] = [];
  #wgCount = 0;
  #closing: Promise<string[]> | undefined;

  private constructor(id: string, host: Ns, tmpDir: string) {
    this.id = id;
    this.host = host;
    this.tmpDir = tmpDir;
  }

  /** Builds the topology; on failure removes whatever was created and rethrows. */
  static async create(opts: TopologyOptions = {}): Promise<Topology> {
    for (let attempt = 0;; attempt++) {
      const id = randomHex(3);
      const peerNs = `wgt-${id}-peer`;
      // `ip netns add` creates /run/netns/<name> with O_EXCL: success means the id is ours.
      const r = await run(null, ["ip", "netns", "add", peerNs]);
      if (r.code !== 0) {
        if (/exists/i.test(r.stderr) && attempt < 5) continue;
        throw new Error(`ip netns add ${peerNs}: ${r.stderr.trim()}`);
      }
      const host = opts.hostNamespace ? `wgt-${id}-host` : null;
      let topo: Topology | undefined;
      let tmpDir: string | undefined;
      try {
        tmpDir = await Deno.makeTempDir({ prefix: `wgt-${id}-` });
        topo = new Topology(id, host, tmpDir);
        topo.#namespaces.push(peerNs);
        await ip(null, "-n", peerNs, "link", "set", "lo", "up");
        if (host !== null) {
          topo.#namespaces.push(host);
          await ip(null, "netns", "add", host);
          await ip(null, "-n", host, "link", "set", "lo", "up");
        }
        await topo.#addLink(peerNs);
        return topo;
      } catch (e) {
        if (topo !== undefined) {
          await topo.close();
        } else {
          await run(null, ["ip", "netns", "del", peerNs]);
          if (tmpDir !== undefined) await Deno.remove(tmpDir, { recursive: true }).catch(() => {});
        }
        throw e;
      }
    }
  }

  /** The first peer namespace. */
  get peer(): string {
    return this.#link0().peerNs;
  }

  /** Near-end IPv4 of the first veth. */
  get hostAddr(): string {
    return this.#link0().hostAddr;
  }

  /** Far-end IPv4 of the first veth. */
  get peerAddr(): string {
    return this.#link0().peerAddr;
  }

  /** Near-end IPv6 of the first veth. */
  get hostAddr6(): string {
    return this.#link0().hostAddr6;
  }

  /** Far-end IPv6 of the first veth. */
  get peerAddr6(): string {
    return this.#link0().peerAddr6;
  }

  /** The namespaces this topology created (peer namespaces, and the host namespace if any). */
  get namespaces(): readonly string[] {
    return [...this.#namespaces];
  }

  #link0(): Link {
    const l = this.links[0];
    if (l === undefined) throw new Error("topology has no link");
    return l;
  }

  /** A further peer namespace `wgt-<id>-peer<n>`, joined to the near side by its own veth. */
  async addPeerNamespace(): Promise<Link> {
    this.#assertOpen();
    const ns = `wgt-${this.id}-peer${this.links.length + 1}`;
    this.#namespaces.push(ns);
    await ip(null, "netns", "add", ns);
    await ip(null, "-n", ns, "link", "set", "lo", "up");
    return await this.#addLink(ns);
  }

  async #addLink(peerNs: string): Promise<Link> {
    const n = this.links.length;
    const suffix = n === 0 ? "" : `-${n + 1}`;
    const hostIf = `vh${this.id}${suffix}`;
    const peerIf = `vp${this.id}${suffix}`;
    // Tracked before creation, so a failure half-way is still cleaned up.
    this.#veths.push({ ns: this.host, name: hostIf });
    const into = this.host === null ? [] : ["netns", this.host];
    await ip(
      null,
      "link",
      "add",
      hostIf,
      ...into,
      "type",
      "veth",
      "peer",
      "name",
      peerIf,
      "netns",
      peerNs,
    );
    const near = (...a: string[]) => ip(this.host, ...a);
    let chosen: { base: number; p6: string } | undefined;
    for (let attempt = 0; attempt < 20 && chosen === undefined; attempt++) {
      const base = V4_BASE + randomInt(32768) * 4;
      const p6 = `2001:2:0:${(1 + randomInt(0xffff)).toString(16)}:`;
      if (await this.#inUse(base, p6, hostIf)) continue;
      await near("address", "add", `${intToV4(base + 1)}/30`, "dev", hostIf);
      await near("address", "add", `${p6}:1/64`, "dev", hostIf, "nodad");
      // Another run may have picked the same prefix at the same moment: check again, back off.
      if (await this.#inUse(base, p6, hostIf)) {
        await near("address", "flush", "dev", hostIf);
        continue;
      }
      chosen = { base, p6 };
    }
    if (chosen === undefined) throw new Error("could not find a free /30 in 198.18.0.0/15");
    const link: Link = {
      peerNs,
      hostIf,
      peerIf,
      hostAddr: intToV4(chosen.base + 1),
      peerAddr: intToV4(chosen.base + 2),
      hostAddr6: `${chosen.p6}:1`,
      peerAddr6: `${chosen.p6}:2`,
    };
    await ip(null, "-n", peerNs, "address", "add", `${link.peerAddr}/30`, "dev", peerIf);
    await ip(null, "-n", peerNs, "address", "add", `${link.peerAddr6}/64`, "dev", peerIf, "nodad");
    await near("link", "set", "dev", hostIf, "up");
    await ip(null, "-n", peerNs, "link", "set", "dev", peerIf, "up");
    await waitLowerUp(this.host, hostIf);
    await waitLowerUp(peerNs, peerIf);
    this.links.push(link);
    return link;
  }

  /** Does any interface other than `except` (on the near side) hold an address overlapping ours? */
  async #inUse(base: number, p6: string, except: string): Promise<boolean> {
    const r = await ip(this.host, "-o", "address", "show");
    for (const line of r.stdout.split("\n")) {
      const f = line.trim().split(/\s+/);
      const dev = f[1]?.replace(/@.*/, "");
      const addr = f[3];
      if (dev === undefined || addr === undefined || dev === except) continue;
      if (f[2] === "inet") {
        const [a, len] = addr.split("/");
        const bits = Number(len ?? 32);
        const size = 2 ** (32 - bits);
        const start = Math.floor(v4ToInt(a!) / size) * size;
        if (start < base + 4 && base < start + size) return true;
      } else if (f[2] === "inet6" && addr.startsWith(p6)) {
        return true;
      }
    }
    return false;
  }

  /**
   * Starts wireguard-go in `ns` (a namespace of this topology) with a unique interface name
   * (`wgp<id>`, then `wgp<id>-2`, …); it is stopped at close. See {@link startWireguardGo}.
   */
  async startWireguardGo(ns: string, opts: WireguardGoOptions): Promise<WireguardGo> {
    this.#assertOpen();
    if (!this.#namespaces.includes(ns)) {
      throw new Error(`${ns} is not a namespace of this topology`);
    }
    this.#wgCount++;
    const ifname = opts.ifname ?? `wgp${this.id}${this.#wgCount === 1 ? "" : `-${this.#wgCount}`}`;
    const wg = await startWireguardGo(ns, { ...opts, ifname });
    this.#wgs.push(wg);
    return wg;
  }

  /**
   * `addr:port` at which the test process or the near side reaches `wg`'s UDP socket: the far
   * end of the veth leading to its namespace (or the near end, for one in the host namespace).
   */
  endpoint(wg: WireguardGo, family: 4 | 6 = 4): string {
    const link = this.links.find((l) => l.peerNs === wg.ns);
    const near = wg.ns === this.host ? this.#link0() : undefined;
    const addr = link !== undefined
      ? (family === 4 ? link.peerAddr : link.peerAddr6)
      : near !== undefined
      ? (family === 4 ? near.hostAddr : near.hostAddr6)
      : undefined;
    if (addr === undefined) throw new Error(`${wg.ifname} is not in a namespace of this topology`);
    return family === 4 ? `${addr}:${wg.listenPort}` : `[${addr}]:${wg.listenPort}`;
  }

  /** {@link run} (not tracked: it has finished when it returns). */
  run(ns: Ns, argv: readonly string[], opts?: RunOptions): Promise<RunResult> {
    return run(ns, argv, opts);
  }

  /** {@link spawn}, with the process group killed at close. */
  spawn(ns: Ns, argv: readonly string[], opts?: SpawnOptions): Spawned {
    this.#assertOpen();
    const p = spawn(ns, argv, opts);
    this.#procs.push(p);
    return p;
  }

  /** {@link waitForPort}. */
  waitForPort(ns: Ns, port: number, proto: "tcp" | "udp" = "tcp"): Promise<void> {
    return waitForPort(ns, port, proto);
  }

  #veth(which: "host" | "peer", link: number): { ns: Ns; dev: string } {
    const l = this.links[link];
    if (l === undefined) throw new Error(`no link ${link}`);
    return which === "host" ? { ns: this.host, dev: l.hostIf } : { ns: l.peerNs, dev: l.peerIf };
  }

  /**
   * `tc qdisc replace dev <veth> root netem <args>` on the near (`"host"`) or far (`"peer"`) end of
   * veth `link` (default the first). netem shapes egress: "host" affects what the near side sends.
   * Throws {@link NetemUnavailableError} when the kernel lacks sch_netem.
   */
  async netem(which: "host" | "peer", args: string, link = 0): Promise<void> {
    const { ns, dev } = this.#veth(which, link);
    const argv = [
      "tc",
      ...(ns === null ? [] : ["-n", ns]),
      "qdisc",
      "replace",
      "dev",
      dev,
      "root",
      "netem",
    ];
    const r = await run(null, [...argv, ...args.trim().split(/\s+/).filter((a) => a !== "")]);
    if (r.code === 0) return;
    if (/qdisc kind is unknown/i.test(r.stderr)) throw new NetemUnavailableError(r.stderr.trim());
    throw new Error(`${argv.join(" ")} ${args}: ${r.stderr.trim()}`);
  }

  /** Removes the root qdisc set by {@link netem} (no-op when there is none). */
  async clearNetem(which: "host" | "peer", link = 0): Promise<void> {
    const { ns, dev } = this.#veth(which, link);
    const r = await run(null, [
      "tc",
      ...(ns === null ? [] : ["-n", ns]),
      "qdisc",
      "del",
      "dev",
      dev,
      "root",
    ]);
    if (r.code !== 0 && !/handle of zero|No such file|not find/i.test(r.stderr)) {
      throw new Error(`tc qdisc del dev ${dev} root: ${r.stderr.trim()}`);
    }
  }

  #assertOpen(): void {
    if (this.#closing !== undefined) throw new Error("topology is closed");
  }

  /**
   * Kills spawned process groups, stops wireguard-go, deletes veths and namespaces, removes the
   * temp dir. Never throws: returns (and prints) what could not be cleaned. Idempotent.
   */
  close(): Promise<string[]> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<string[]> {
    const problems: string[] = [];
    const attempt = async (what: string, f: () => Promise<unknown>) => {
      try {
        await f();
      } catch (e) {
        problems.push(`${what}: ${e instanceof Error ? e.message : String(e)}`);
      }
    };
    await Promise.all(
      this.#procs.map((p) => attempt(`kill ${p.argv.join(" ")}`, () => p.kill("SIGTERM", 1000))),
    );
    await Promise.all(this.#wgs.map((w) => attempt(`stop ${w.ifname}`, () => w.stop())));
    for (const v of [...this.#veths].reverse()) {
      await attempt(`delete ${v.name}`, async () => {
        const r = await run(null, [
          "ip",
          ...(v.ns === null ? [] : ["-n", v.ns]),
          "link",
          "del",
          v.name,
        ]);
        if (r.code !== 0 && !/Cannot find device|does not exist|No such file/i.test(r.stderr)) {
          throw new Error(r.stderr.trim());
        }
      });
    }
    for (const ns of [...this.#namespaces].reverse()) {
      await attempt(`delete netns ${ns}`, async () => {
        const r = await run(null, ["ip", "netns", "del", ns]);
        if (r.code !== 0 && !/No such file/i.test(r.stderr)) throw new Error(r.stderr.trim());
      });
    }
    await attempt(`remove ${this.tmpDir}`, () => Deno.remove(this.tmpDir, { recursive: true }));
    for (const p of problems) console.error(`topology ${this.id} cleanup: ${p}`);
    return problems;
  }

  /** `await using topo = await Topology.create()`: closes, throwing if cleanup failed. */
  async [Symbol.asyncDispose](): Promise<void> {
    const problems = await this.close();
    if (problems.length > 0) throw new Error(`topology cleanup failed:\n${problems.join("\n")}`);
  }
}

async function ip(ns: Ns, ...args: string[]): Promise<RunResult> {
  return await run(null, ["ip", ...(ns === null ? [] : ["-n", ns]), ...args], { check: true });
}

async function waitLowerUp(ns: Ns, dev: string): Promise<void> {
  const deadline = Date.now() + 3000;
  for (;;) {
    const r = await ip(ns, "-o", "link", "show", "dev", dev);
    if (/[<,]LOWER_UP[,>]/.test(r.stdout)) return;
    if (Date.now() > deadline) throw new Error(`${dev} did not come up: ${r.stdout.trim()}`);
    await sleep(10);
  }
}
