/**
 * The reference WireGuard peer: wireguard-go on a TUN device inside a network namespace,
 * configured with `wg` and `ip` the way wg-quick would.
 *
 * wireguard-go's control socket is `/var/run/wireguard/<ifname>.sock` on the shared filesystem,
 * not per namespace, so interface names must be unique across everything running on the machine
 * ({@link Topology} derives them from its random id).
 *
 * @module
 */

import { type Ns, run, type RunResult, sleep, spawn, type Spawned } from "./proc.ts";

/** Where wireguard-go puts its UAPI sockets (shared by all namespaces). */
export const WG_SOCKET_DIR = "/var/run/wireguard";

/** One `[Peer]` of a wireguard-go instance. Keys are base64, as `wg` prints them. */
export interface WgPeerConfig {
  publicKey: string;
  presharedKey?: string;
  /** CIDRs; each also gets a route via the interface (wg-quick semantics). */
  allowedIPs: string[];
  /** `host:port` or `[v6]:port`. */
  endpoint?: string;
  /** Seconds; 0 or absent turns it off. */
  persistentKeepalive?: number;
}

/** How to start a wireguard-go instance. */
export interface WireguardGoOptions {
  /** TUN interface name (≤ 15 chars, unique machine-wide). Default: `wgp` + random hex. */
  ifname?: string;
  /** Base64 private key; generated with `wg genkey` when absent. */
  privateKey?: string;
  /** UDP port to listen on; absent or 0 lets wireguard-go pick one (read back afterwards). */
  listenPort?: number;
  /** Interface addresses with prefix, e.g. `"10.77.0.1/24"`, `"fd77::1/64"` (IPv6 gets `nodad`). */
  addresses: string[];
  /** Interface MTU; wireguard-go's default (1420) when absent. */
  mtu?: number;
  peers?: WgPeerConfig[];
  /** wireguard-go's LOG_LEVEL. Default `"verbose"` (handshakes and keepalives; not per packet). */
  logLevel?: "verbose" | "error" | "silent";
}

/** One peer as `wg show <if> dump` reports it. */
export interface WgPeerState {
  publicKey: string;
  presharedKey?: string;
  /** Current endpoint (`addr:port`), learned or configured; undefined when none. */
  endpoint?: string;
  allowedIPs: string[];
  /** Unix time in seconds of the latest handshake; 0 when there has been none. */
  latestHandshake: number;
  rxBytes: number;
  txBytes: number;
  persistentKeepalive?: number;
}

/** The parsed output of `wg show <if> dump`. */
export interface WgDump {
  privateKey: string;
  publicKey: string;
  listenPort: number;
  fwmark?: number;
  peers: WgPeerState[];
}

function none(s: string | undefined): string | undefined {
  return s === undefined || s === "(none)" || s === "off" || s === "" ? undefined : s;
}

/** Parses `wg show <if> dump` (tab-separated; interface line first, then one line per peer). */
export function parseDump(text: string): WgDump {
  const lines = text.split("\n").filter((l) => l.length > 0);
  const head = lines[0]?.split("\t");
  if (head === undefined || head.length < 4) throw new Error(`unexpected wg dump: ${text}`);
  const fw = none(head[3]);
  const peers = lines.slice(1).map((line): WgPeerState => {
    const f = line.split("\t");
    if (f.length < 8) throw new Error(`unexpected wg dump peer line: ${line}`);
    const ips = none(f[3]);
    const ka = none(f[7]);
    return {
      publicKey: f[0]!,
      presharedKey: none(f[1]),
      endpoint: none(f[2]),
      allowedIPs: ips === undefined ? [] : ips.split(","),
      latestHandshake: Number(f[4]),
      rxBytes: Number(f[5]),
      txBytes: Number(f[6]),
      persistentKeepalive: ka === undefined ? undefined : Number(ka),
    };
  });
  return {
    privateKey: head[0]!,
    publicKey: head[1]!,
    listenPort: Number(head[2]),
    fwmark: fw === undefined ? undefined : Number(fw),
    peers,
  };
}

async function wgTool(args: string[], stdin?: string): Promise<string> {
  const r = await run(null, ["wg", ...args], { stdin, check: true });
  return r.stdout.trim();
}

/** A new private key (`wg genkey`). */
export function genKey(): Promise<string> {
  return wgTool(["genkey"]);
}

/** A new preshared key (`wg genpsk`). */
export function genPsk(): Promise<string> {
  return wgTool(["genpsk"]);
}

/** The public key of a private key (`wg pubkey`). */
export function pubKey(privateKey: string): Promise<string> {
  return wgTool(["pubkey"], privateKey + "\n");
}

function randomHex(bytes: number): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(bytes)),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Runs `wg set` with the secrets written to 0600 files in a private temp dir, removed after. */
async function wgSet(
  ns: string,
  ifname: string,
  build: (secret: (value: string) => Promise<string>) => Promise<string[]>,
): Promise<RunResult> {
  const dir = await Deno.makeTempDir({ prefix: "wgt-keys-" });
  try {
    await Deno.chmod(dir, 0o700);
    let n = 0;
    const secret = async (value: string) => {
      const path = `${dir}/k${n++}`;
      await Deno.writeTextFile(path, value + "\n", { mode: 0o600 });
      return path;
    };
    const args = await build(secret);
    return await run(ns, ["wg", "set", ifname, ...args], { check: true });
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

async function peerArgs(
  p: WgPeerConfig,
  secret: (v: string) => Promise<string>,
): Promise<string[]> {
  const a = ["peer", p.publicKey];
  if (p.presharedKey !== undefined) a.push("preshared-key", await secret(p.presharedKey));
  if (p.endpoint !== undefined) a.push("endpoint", p.endpoint);
  if (p.persistentKeepalive !== undefined) {
    a.push(
      "persistent-keepalive",
      p.persistentKeepalive === 0 ? "off" : String(p.persistentKeepalive),
    );
  }
  a.push("allowed-ips", p.allowedIPs.join(","));
  return a;
}

/** A running wireguard-go. Stopped by {@link stop} (or by the owning Topology's close). */
export class WireguardGo {
  readonly ns: string;
  readonly ifname: string;
  readonly privateKey: string;
  readonly publicKey: string;
  /** The UDP port wireguard-go listens on (inside `ns`, all addresses). */
  listenPort = 0;
  /** The wireguard-go process (`ip netns exec <ns> wireguard-go -f <ifname>`). */
  readonly proc: Spawned;
  readonly #peers = new Map<string, string[]>();
  readonly #routes = new Set<string>();
  #stopping: Promise<void> | undefined;

  /** @internal use {@link startWireguardGo}. */
  constructor(ns: string, ifname: string, privateKey: string, publicKey: string, proc: Spawned) {
    this.ns = ns;
    this.ifname = ifname;
    this.privateKey = privateKey;
    this.publicKey = publicKey;
    this.proc = proc;
  }

  /** Path of the UAPI socket. */
  get socketPath(): string {
    return `${WG_SOCKET_DIR}/${this.ifname}.sock`;
  }

  /** wireguard-go's output so far (its log goes to stdout; the startup banner to stderr). */
  logs(): string {
    return this.proc.stderrText() + this.proc.stdoutText();
  }

  /** Adds or replaces a peer (allowed IPs are replaced, not merged) and syncs the routes. */
  async setPeer(peer: WgPeerConfig): Promise<void> {
    await wgSet(this.ns, this.ifname, (secret) => peerArgs(peer, secret));
    this.#peers.set(peer.publicKey, [...peer.allowedIPs]);
    await this.#syncRoutes();
  }

  async #adoptPeers(peers: readonly WgPeerConfig[]): Promise<void> {
    for (const p of peers) this.#peers.set(p.publicKey, [...p.allowedIPs]);
    await this.#syncRoutes();
  }

  /** Removes a peer and the routes only it needed. */
  async removePeer(publicKey: string): Promise<void> {
    await run(this.ns, ["wg", "set", this.ifname, "peer", publicKey, "remove"], { check: true });
    this.#peers.delete(publicKey);
    await this.#syncRoutes();
  }

  /** wg-quick: a route via the interface for every allowed IP of every peer. */
  async #syncRoutes(): Promise<void> {
    const want = new Set<string>();
    for (const ips of this.#peers.values()) for (const ip of ips) want.add(ip);
    for (const r of this.#routes) {
      if (!want.has(r)) {
        await run(null, ["ip", "-n", this.ns, "route", "del", r, "dev", this.ifname]);
        this.#routes.delete(r);
      }
    }
    for (const r of want) {
      if (!this.#routes.has(r)) {
        await run(null, ["ip", "-n", this.ns, "route", "replace", r, "dev", this.ifname], {
          check: true,
        });
        this.#routes.add(r);
      }
    }
  }

  /** Parsed `wg show <if> dump`. */
  async dump(): Promise<WgDump> {
    const r = await run(this.ns, ["wg", "show", this.ifname, "dump"], { check: true });
    return parseDump(r.stdout);
  }

  /** The state of one peer (throws when it is not configured). */
  async peer(publicKey: string): Promise<WgPeerState> {
    const p = (await this.dump()).peers.find((x) => x.publicKey === publicKey);
    if (p === undefined) throw new Error(`${this.ifname}: no peer ${publicKey}`);
    return p;
  }

  /**
   * Polls until `publicKey` (default: the only peer) reports a handshake newer than `after` (unix
   * seconds, default 0 = any), and returns its state. Throws with wireguard-go's log on timeout.
   */
  async waitForHandshake(
    publicKey?: string,
    opts: { after?: number; timeoutMs?: number } = {},
  ): Promise<WgPeerState> {
    const deadline = Date.now() + (opts.timeoutMs ?? 5000);
    for (;;) {
      const d = await this.dump();
      const p = publicKey === undefined
        ? (d.peers.length === 1 ? d.peers[0] : undefined)
        : d.peers.find((x) => x.publicKey === publicKey);
      if (p === undefined) {
        throw new Error(`${this.ifname}: peer not found (${publicKey ?? "only"})`);
      }
      if (p.latestHandshake > (opts.after ?? 0)) return p;
      if (Date.now() > deadline) {
        throw new Error(
          `${this.ifname}: no handshake with ${p.publicKey}\n${this.logs().slice(-4000)}`,
        );
      }
      await sleep(25);
    }
  }

  /** Terminates wireguard-go (which removes its TUN and socket). Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      await this.proc.kill("SIGTERM", 2000);
      // After a SIGKILL the socket file stays behind.
      await Deno.remove(this.socketPath).catch(() => {});
    })();
    return this.#stopping;
  }

  /** See {@link startWireguardGo}. */
  static async start(ns: string, opts: WireguardGoOptions): Promise<WireguardGo> {
    if ((ns as Ns) === null) {
      throw new Error("startWireguardGo: refusing to run in the root namespace");
    }
    const ifname = opts.ifname ?? `wgp${randomHex(4)}`;
    if (ifname.length > 15) throw new Error(`interface name too long: ${ifname}`);
    const sock = `${WG_SOCKET_DIR}/${ifname}.sock`;
    if (await exists(sock)) throw new Error(`${sock} exists: interface name ${ifname} is in use`);
    const privateKey = opts.privateKey ?? await genKey();
    const publicKey = await pubKey(privateKey);

    const proc = spawn(ns, ["wireguard-go", "-f", ifname], {
      env: { WG_PROCESS_FOREGROUND: "1", LOG_LEVEL: opts.logLevel ?? "verbose" },
    });
    const wg = new WireguardGo(ns, ifname, privateKey, publicKey, proc);
    try {
      const deadline = Date.now() + 5000;
      while (!(await exists(sock))) {
        if (proc.exited) throw new Error(`wireguard-go ${ifname} exited at start:\n${wg.logs()}`);
        if (Date.now() > deadline) {
          throw new Error(`wireguard-go ${ifname}: no socket:\n${wg.logs()}`);
        }
        await sleep(10);
      }
      await wgSet(ns, ifname, async (secret) => {
        const a = ["private-key", await secret(privateKey)];
        if (opts.listenPort) a.push("listen-port", String(opts.listenPort));
        for (const p of opts.peers ?? []) a.push(...await peerArgs(p, secret));
        return a;
      });
      const ip = (...args: string[]) => run(null, ["ip", "-n", ns, ...args], { check: true });
      for (const a of opts.addresses) {
        await ip("address", "add", a, "dev", ifname, ...(a.includes(":") ? ["nodad"] : []));
      }
      await ip("link", "set", "dev", ifname, ...(opts.mtu ? ["mtu", String(opts.mtu)] : []), "up");
      await wg.#adoptPeers(opts.peers ?? []);
      const port = await run(ns, ["wg", "show", ifname, "listen-port"], { check: true });
      wg.listenPort = Number(port.stdout.trim());
      return wg;
    } catch (e) {
      await wg.stop();
      throw e;
    }
  }
}

/**
 * Starts wireguard-go inside namespace `ns` and configures it: key, listen port, peers (with
 * routes for their allowed IPs), addresses, MTU, link up. On any failure the process is stopped
 * before the error is thrown.
 */
export function startWireguardGo(ns: string, opts: WireguardGoOptions): Promise<WireguardGo> {
  return WireguardGo.start(ns, opts);
}
