/**
 * `wrapguard doctor`'s checks: each one small, named, timed, and reported as pass, warn, fail or
 * skip with a hint for what to do. The CLI (cli/doctor.ts) prints them; tests call
 * {@link runDoctor} directly to inject what is hard to arrange from outside (a build without an
 * interposer).
 *
 * ```text
 * config parses ─► endpoints resolve ─► a UDP socket opens ─► a handshake with each peer (online)
 * interposer extracts, loads into the probe, captures a connect (embedded peer on 127.0.0.1)
 * supervisor extracts and this kernel can supervise (seccomp user notification, pidfd_getfd)
 * target: found, ELF of this architecture, not setuid; which path it takes (the interposer's,
 *   or the supervisor's alone for a static or Go program)
 * permissions in force
 * ```
 *
 * Folder: `world.ts` is the embedded peer and probe program that doctor and selftest both use.
 *
 * @module
 */
import { lookup } from "node:dns/promises";
import { ConfigError } from "../../config/errors.ts";
import { loadConfig } from "../../config/mod.ts";
import type { Config } from "../../config/types.ts";
import { formatIP, parseIP } from "../../wire/addr.ts";
import { type EmbeddedWorld, embeddedWorld, HTTP_BODY, PEER_V4, WrapSession } from "./world.ts";
import {
  inspectExecutable,
  inspectTarget,
  LaunchRefused,
  materialize,
  resolveCommand,
  SUPERVISOR_NAME,
  type TargetInfo,
} from "../launch.ts";
import { permissionStates } from "../sandbox.ts";
import { Tunnel } from "../tunnel/mod.ts";
import { UdpTransport } from "../tunnel/udp.ts";
import { udpHelper } from "../tunnel/udp_native.ts";
import { describeAead } from "../../wireguard/aead_native.ts";
import { describeX25519 } from "../../wireguard/x25519_native.ts";

/** How one check ended. */
export type CheckStatus = "pass" | "warn" | "fail" | "skip";

/** One line of the report. */
export interface DoctorCheck {
  name: string;
  status: CheckStatus;
  ms: number;
  detail: string;
  /** What to do about a warning or failure. */
  hint?: string;
}

/** What {@link runDoctor} checks. */
export interface DoctorOptions {
  /** The wg-quick config; without it the config, endpoint, UDP and handshake checks are skipped. */
  config?: string;
  /** Skip the handshakes (nothing is sent to the peers). */
  offline?: boolean;
  /** How long each handshake may take. Default 5000 ms. */
  handshakeTimeoutMs?: number;
  /** The program to check, as given to `run` (name or path), and its arguments. */
  target?: string[];
  /** The embedded interposer and probe per architecture (preload/build/embedded.ts). */
  libraries: Readonly<Record<string, string>>;
  probes: Readonly<Record<string, string>>;
  /** The embedded supervisor per architecture; without it the supervisor check is skipped. */
  supervisors?: Readonly<Record<string, string>>;
  arch?: string;
}

class Problem extends Error {
  readonly status: CheckStatus;
  readonly hint?: string;
  constructor(status: CheckStatus, message: string, hint?: string) {
    super(message);
    this.status = status;
    this.hint = hint;
  }
}

const fail = (message: string, hint?: string) => new Problem("fail", message, hint);
const warn = (message: string, hint?: string) => new Problem("warn", message, hint);
const skip = (message: string) => new Problem("skip", message);

function b64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

function shortKey(key: Uint8Array): string {
  return b64(key).slice(0, 8) + "…";
}

const ALTERNATIVES = "give it the tunnel with 'wrapguard forward' or 'wrapguard proxy' instead";

/** Runs every check in order and returns the report. */
export async function runDoctor(options: DoctorOptions): Promise<DoctorCheck[]> {
  const checks: DoctorCheck[] = [];
  const check = async (name: string, fn: () => Promise<string>): Promise<boolean> => {
    const start = performance.now();
    try {
      const detail = await fn();
      checks.push({ name, status: "pass", ms: performance.now() - start, detail });
      return true;
    } catch (e) {
      const ms = performance.now() - start;
      if (e instanceof Problem) {
        checks.push({ name, status: e.status, ms, detail: e.message, hint: e.hint });
        return e.status !== "fail";
      }
      checks.push({ name, status: "fail", ms, detail: (e as Error).message });
      return false;
    }
  };

  await configChecks(options, check, checks);
  await check("interposer", () => interposerCheck(options));
  await check("supervisor", () => supervisorCheck(options));
  if (options.target && options.target.length > 0) {
    await check(
      `target ${options.target[0]}`,
      () => targetCheck(options.target![0]!, options.arch),
    );
  }
  await check("permissions", permissionCheck);
  return checks;
}

type CheckFn = (name: string, fn: () => Promise<string>) => Promise<boolean>;

async function configChecks(
  options: DoctorOptions,
  check: CheckFn,
  checks: DoctorCheck[],
): Promise<void> {
  const path = options.config;
  if (path === undefined) {
    await check("config", () => {
      throw skip("no --config given: config, endpoint, UDP and handshake checks skipped");
    });
    return;
  }
  let config: Config | undefined;
  const parsed = await check("config", async () => {
    try {
      config = await loadConfig(path);
    } catch (e) {
      if (e instanceof ConfigError) {
        throw fail(
          e.message,
          e.line > 0 ? `fix line ${e.line} of ${path}` : `${path} needs an [Interface] section`,
        );
      }
      if (e instanceof Deno.errors.NotFound) throw fail(`${path}: no such file`);
      throw fail(`${path}: ${(e as Error).message}`);
    }
    const detail = `${path}: ${config.peers.length} peer(s), address ` +
      config.interface.addresses.map((a) => `${formatIP(a.addr)}/${a.bits}`).join(", ");
    if (config.warnings.length > 0) {
      throw warn(
        `${detail}; ` +
          config.warnings.map((w) => `${w.line > 0 ? `line ${w.line}: ` : ""}${w.message}`)
            .join("; "),
        "'run' goes ahead with these warnings; fix them to silence them",
      );
    }
    return detail;
  });
  if (!parsed || !config) return;
  const cfg = config;

  for (const peer of cfg.peers) {
    const who = shortKey(peer.publicKey);
    const ep = peer.endpoint;
    await check(`endpoint of peer ${who}`, async () => {
      if (!ep) {
        throw warn(
          "no Endpoint: the peer must contact us first",
          "set Endpoint (and PersistentKeepalive on the peer) unless it reaches you",
        );
      }
      const shown = ep.host.includes(":") ? `[${ep.host}]:${ep.port}` : `${ep.host}:${ep.port}`;
      if (parseIP(ep.host)) return `${shown} (an address)`;
      try {
        const r = await lookup(ep.host);
        return `${shown} → ${r.address}`;
      } catch (e) {
        throw fail(
          `${shown} does not resolve: ${(e as Error).message}`,
          "check the name, or the host's resolver (/etc/resolv.conf)",
        );
      }
    });
  }

  const udpOk = await check("UDP socket", async () => {
    const port = cfg.interface.listenPort ?? 0;
    let sock: UdpTransport;
    try {
      sock = await UdpTransport.open({ port, onDatagram() {} });
    } catch (e) {
      throw fail(
        `cannot open UDP port ${port}: ${(e as Error).message}`,
        port !== 0
          ? `ListenPort ${port} is in use (by a running wrapguard or wg?); pick another or omit it`
          : undefined,
      );
    }
    const got = sock.port;
    const helper = await udpHelper();
    const via = sock.backend === "native"
      ? "batched (recvmmsg/sendmmsg)"
      : `node:dgram, one datagram per call (batched helper: ${helper.reason ?? "not used"})`;
    sock.close();
    await new Promise((r) => setTimeout(r, 10));
    const aead = describeAead(helper.aead);
    return `${port === 0 ? "opened on ephemeral port" : "opened on ListenPort"} ${got}; ${via}; ` +
      `AEAD ${aead}; X25519 ${describeX25519(helper.x25519)}`;
  });

  const withEndpoint = cfg.peers.filter((p) => p.endpoint);
  if (options.offline) {
    for (const peer of withEndpoint) {
      await check(`handshake with ${shortKey(peer.publicKey)}`, () => {
        throw skip("skipped (--offline)");
      });
    }
    return;
  }
  if (!udpOk || withEndpoint.length === 0) return;
  let tunnel: Tunnel | undefined;
  try {
    tunnel = await Tunnel.start(cfg);
    const timeout = options.handshakeTimeoutMs ?? 5000;
    const t = tunnel;
    await Promise.all([...t.device.peers].map(async (peer) => {
      const conf = cfg.peers.find((p) => b64(p.publicKey) === b64(peer.publicKey));
      if (!conf?.endpoint) return;
      const name = `handshake with ${shortKey(peer.publicKey)}`;
      const start = performance.now();
      if (!peer.endpoint) await new Promise((r) => setTimeout(r, 50)); // endpoint resolving
      if (peer.stats.handshakesCompleted === 0) {
        t.device.initiate(t.now(), peer);
        t.poke();
      }
      while (peer.stats.handshakesCompleted === 0 && performance.now() - start < timeout) {
        await new Promise((r) => setTimeout(r, 10));
      }
      const ms = performance.now() - start;
      const ep = `${conf.endpoint.host}:${conf.endpoint.port}`;
      checks.push(
        peer.stats.handshakesCompleted > 0
          ? { name, status: "pass", ms, detail: `completed in ${ms.toFixed(0)} ms with ${ep}` }
          : {
            name,
            status: "fail",
            ms,
            detail: `no handshake with ${ep} within ${(timeout / 1000).toFixed(0)} s`,
            hint: "check that the peer is up at that Endpoint, that it has our public key " +
              `(${b64(t.device.local.publicKey)}) as a peer, and that UDP to it is not blocked`,
          },
      );
    }));
  } catch (e) {
    checks.push({
      name: "handshake",
      status: "fail",
      ms: 0,
      detail: `cannot start the tunnel: ${(e as Error).message}`,
    });
  } finally {
    tunnel?.close();
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function interposerCheck(options: DoctorOptions): Promise<string> {
  const arch = options.arch ?? Deno.build.arch;
  if (options.libraries[arch] === undefined) {
    const has = Object.keys(options.libraries);
    throw fail(
      `this wrapguard carries no interposer for ${arch} (it has ${has.join(", ") || "none"})`,
      "build it with 'deno task build:preload' (needs gcc, and gcc-aarch64-linux-gnu for " +
        "aarch64), or use a release binary; without it 'run' refuses every program",
    );
  }
  let world: EmbeddedWorld | undefined;
  let session: WrapSession | undefined;
  try {
    world = await embeddedWorld();
    try {
      session = await WrapSession.start(world.local, options);
    } catch (e) {
      throw fail(
        `cannot extract the interposer: ${(e as Error).message}`,
        "set TMPDIR to a writable directory",
      );
    }
    const r = await session.run(session.probe, ["tcp", PEER_V4, "80", "GET / HTTP/1.0\r\n\r\n"]);
    if (!r.hello) {
      throw fail(
        `the interposer did not load into the probe (${r.stderr.trim() || `exit ${r.code}`})`,
        `is ${session.dir.replace(/\/[^/]*$/, "")} mounted noexec? set TMPDIR elsewhere`,
      );
    }
    const captured = session.broker.stats.tcpConnects;
    if (captured < 1) throw fail("the probe's connect did not reach the broker");
    if (r.code !== 0 || !r.stdout.endsWith(HTTP_BODY)) {
      throw fail(`the probe's connection failed: ${r.stderr.trim() || r.stdout.slice(0, 80)}`);
    }
    const size = Math.round(Uint8Array.fromBase64(options.libraries[arch]!).length / 1024);
    return `${arch} library (${size} KiB) extracted, loaded into the probe, ` +
      `its connect to ${PEER_V4}:80 captured and carried through a loopback tunnel`;
  } finally {
    await session?.close();
    world?.close();
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The supervisor extracts, runs, and finds what it needs in this kernel (`--check`). */
async function supervisorCheck(options: DoctorOptions): Promise<string> {
  const arch = options.arch ?? Deno.build.arch;
  if (options.supervisors === undefined) throw skip("no supervisor given");
  if (options.supervisors[arch] === undefined) {
    throw fail(
      `this build carries no supervisor for ${arch}`,
      "run 'deno task build:preload' (gcc and gcc-aarch64-linux-gnu) and rebuild",
    );
  }
  const dir = await Deno.makeTempDir({ prefix: "wrapguard-doctor-" });
  try {
    await Deno.chmod(dir, 0o700);
    const path = await materialize(dir, SUPERVISOR_NAME, options.supervisors, arch);
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command(path, { args: ["--check"], stdout: "piped", stderr: "piped" })
        .output();
    } catch (e) {
      throw fail(
        `the supervisor does not start: ${(e as Error).message}`,
        `is ${dir.replace(/\/[^/]*$/, "")} mounted noexec? set TMPDIR elsewhere`,
      );
    }
    const said = new TextDecoder().decode(out.stdout).trim();
    if (out.code !== 0) {
      throw fail(
        `this kernel cannot supervise programs: ${said || `exit ${out.code}`}`,
        "Linux 5.8 or later with seccomp is needed; 'wrapguard run' refuses to start programs",
      );
    }
    const size = Math.round(Uint8Array.fromBase64(options.supervisors[arch]!).length / 1024);
    return `${arch} supervisor (${size} KiB) extracted; this kernel has ${
      said.replace(/^yes: /, "")
    }`;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

function targetCheck(name: string, arch?: string): Promise<string> {
  let path: string;
  try {
    path = resolveCommand(name);
  } catch (e) {
    if (e instanceof LaunchRefused) throw fail(e.message, "check the name and PATH");
    throw e;
  }
  let target: TargetInfo;
  try {
    target = inspectTarget(path, arch);
  } catch (e) {
    if (!(e instanceof LaunchRefused)) throw e;
    throw fail(e.message, ALTERNATIVES);
  }
  const chain = target.chain;
  const last = chain[chain.length - 1]!;
  const info = inspectExecutable(last);
  const via = chain.length > 1 ? ` via ${chain.slice(0, -1).join(" → ")}` : "";
  if (target.why) {
    const what = target.why.reason === "static" ? "statically linked" : "a Go program";
    return Promise.resolve(
      `${last}${via}: ${target.why.file} is ${what}, not setuid: the supervisor's path ` +
        `(seccomp: TCP and UDP out and in, DNS to the resolv.conf nameserver)`,
    );
  }
  const how = info.kind === "elf"
    ? `dynamically linked ${info.bits}-bit ELF for ${arch ?? Deno.build.arch}` +
      (info.interpreter ? ` (loader ${info.interpreter})` : "")
    : "not an ELF file; the interposer's HELLO will tell at run time";
  return Promise.resolve(
    `${last}${via}: ${how}, not setuid, not Go: the interposer's path (the supervisor's ` +
      `filter behind it)`,
  );
}

async function permissionCheck(): Promise<string> {
  const states = await permissionStates();
  const granted = Object.entries(states).filter(([, s]) => s === "granted").map(([n]) => n);
  const others = Object.entries(states).filter(([, s]) => s !== "granted").map(([n]) => n);
  const detail = `granted: ${granted.join(", ") || "none"}; not granted: ${others.join(", ")}`;
  const extra = granted.filter((n) => n === "sys" || n === "ffi");
  if (extra.length > 0) {
    throw warn(
      `${detail}`,
      `${extra.join(" and ")} are more than wrapguard needs: run it with cli/permissions.flags`,
    );
  }
  const missing = ["net", "read", "write", "run", "env"].filter((n) => !granted.includes(n));
  if (missing.length > 0) {
    throw fail(
      detail,
      `'run' needs ${missing.join(", ")} too: use the flags in cli/permissions.flags`,
    );
  }
  return detail;
}
