/**
 * `wrapguard run --config wg0.conf -- cmd args…`: starts `cmd` with the interposer preloaded, so
 * that its sockets (and its children's) use the tunnel, and waits for it.
 *
 * ```text
 * parse ─► load config ─► check the program (core/host/launch.ts: PATH, ELF, #!, setuid; static
 *      or Go: the supervisor's path)
 *   ─► private dir (0700): libwrapguard.so and wrapguard-supervisor (from the embedded bytes)
 *      + broker.sock
 *   ─► Tunnel.start ─► routes (core/host/tunnel/routes.ts: --exit-node, --route, Route =)
 *   ─► Broker.start (+ Resolver.forTunnel when the config has DNS =; WRAPGUARD_ROUTES from the
 *      routes) ─► status socket for `wrapguard show` (core/host/status.ts)
 *   ─► spawn wrapguard-supervisor -- cmd (stdio inherited, env + WRAPGUARD_* + LD_PRELOAD
 *      appended): it installs its seccomp filter, then becomes cmd (same pid)
 *   ─► lockDown: revoke run, write, env ─► HELLO for cmd within 5 s (the interposer's, or the
 *      supervisor's on its path), or kill it (fail closed)
 *   ─► forward SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 ─► cmd exits
 *   ─► close broker and tunnel, remove the dir ─► exit with cmd's code (128+signal if killed)
 * ```
 *
 * Exit codes of wrapguard itself: 2 usage, 1 config/tunnel failure, 126 the program cannot be
 * wrapped safely (refused, or the interposer did not load), 127 the program was not found.
 *
 * @module
 */
import { lockDown, type Sandbox } from "../core/host/sandbox.ts";
import { parseOptions } from "./_args.ts";
import { type Config, loadConfig } from "../core/config/mod.ts";
import { Broker } from "../core/host/broker/mod.ts";
import {
  childEnv,
  inspectTarget,
  LaunchRefused,
  materialize,
  materializeInterposer,
  resolveCommand,
  runDirPrefix,
  SUPERVISOR_NAME,
  supervisorArgv,
  supervisorEnv,
  sweepStaleRunDirs,
  type TargetInfo,
  usableInLdPreload,
} from "../core/host/launch.ts";
import type { LogLevel } from "../core/host/log.ts";
import {
  applyRoutes,
  describeRule,
  interposerRoutes,
  planRoutes,
  RouteError,
  type RoutePlan,
} from "../core/host/tunnel/routes.ts";
import { statusDir, type StatusRecord, StatusServer } from "../core/host/status.ts";
import type { Tunnel } from "../core/host/tunnel/mod.ts";
import {
  hostAddresses,
  makeLogger,
  TUNNEL_OPTIONS,
  TUNNEL_OPTIONS_HELP,
  TUNNEL_OPTIONS_WITH_VALUE,
  type TunnelCliOptions,
  tunnelOptions,
  UsageError,
} from "./_options.ts";
import { formatIP, type IpBytes, prefixContains } from "../core/wire/addr.ts";
// The interposer travels inside the program. preload/build.sh (`deno task build:preload`, run by
// .ci/run) writes this module from the libraries it built: a static import is what `deno compile`
// bundles, and it works unchanged for `deno run` from source. (Reading the .so beside the source
// with import.meta.dirname would need `deno compile --include` and a second code path.)
import { libraries, supervisors } from "../preload/build/embedded.ts";

const HELP = `Usage: wrapguard run --config FILE [options] [--] COMMAND [ARGS…]

Runs COMMAND with its network traffic on the WireGuard network of FILE (a wg-quick
config), without root, a TUN device or a kernel module. Children of COMMAND stay
wrapped. Destinations in a peer's AllowedIPs go through the tunnel; others use the
host network, as wg-quick's routes would (see --kill-switch). With "DNS =" in the
config, COMMAND's name lookups go to those servers through the tunnel and never to
the host's resolver (reverse lookups too). TCP listeners and UDP sockets bound to
the tunnel address, or to the wildcard with a port, are reachable from the peers.

Options:
${TUNNEL_OPTIONS_HELP}
      --kill-switch     destinations outside the tunnel fail with "network unreachable"
                        (on by default when AllowedIPs covers 0.0.0.0/0 or ::/0)
  -h, --help

With --log-level debug (and no --log-file) the interposer and the supervisor
also print their decisions on COMMAND's stderr. 'wrapguard show' lists the running tunnel.

Every program runs under a seccomp filter (wrapguard-supervisor) that it and its
children inherit: what escapes the interposer (a static or Go program, a child
that clears its environment) is still answered by the supervisor, and never
reaches a tunnel destination over the host network. Dynamically linked programs
take the interposer's fast path; static and Go programs the supervisor's (TCP
out and in; UDP; DNS to the resolv.conf nameserver). setuid/setgid
programs are refused (use 'wrapguard forward' or 'wrapguard proxy'). 'wrapguard
doctor -- COMMAND' tells which path a program takes.

Exit status: COMMAND's own, or 128+N when a signal N ended it; 1 when the tunnel
could not start, 2 for usage errors, 126 when COMMAND cannot be wrapped, 127 when
it was not found. SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are
passed on to COMMAND (with a terminal on stdin, ^C and ^\\ reach COMMAND from the
terminal itself, so wrapguard does not pass SIGINT/SIGQUIT on a second time).
`;

/** How long the program has to prove the interposer loaded (its HELLO to the broker). */
export const HELLO_TIMEOUT_MS = 5000;

const FORWARDED: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"];
/** Signal numbers, the same on x86_64 and aarch64 Linux. */
const SIGNUM: Partial<Record<Deno.Signal, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGUSR1: 10,
  SIGUSR2: 12,
  SIGTERM: 15,
};

interface RunOptions extends TunnelCliOptions {
  command: string[];
}

function parse(args: string[]): RunOptions | "help" {
  // Options end at "--" or at the first word that is not one: the rest is the command's.
  const dash = args.indexOf("--");
  let own = dash >= 0 ? args.slice(0, dash) : args;
  let command = dash >= 0 ? args.slice(dash + 1) : [];
  if (dash < 0) {
    const withValue = new Set(TUNNEL_OPTIONS_WITH_VALUE);
    let i = 0;
    while (i < args.length && args[i]!.startsWith("-")) i += withValue.has(args[i]!) ? 2 : 1;
    own = args.slice(0, i);
    command = args.slice(i);
  }
  let values;
  try {
    values = parseOptions(own, { ...TUNNEL_OPTIONS, help: { type: "boolean", short: "h" } });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (values.help) return "help";
  const shared = tunnelOptions(values, { logLevel: "warn" as LogLevel });
  if (command.length === 0) throw new UsageError("no command given");
  return { ...shared, command };
}

/**
 * Whether a terminal delivers SIGINT/SIGQUIT to the program itself: the program shares our process
 * group and our terminal, so ^C reaches both of us, and forwarding would deliver it twice. (Which
 * group is in the foreground could only be read from /proc, which Deno opens only with
 * --allow-all; a terminal on stdin is the case that matters.)
 */
function terminalDelivers(): boolean {
  return Deno.stdin.isTerminal();
}

function covered(config: Config, plan: RoutePlan, addr: IpBytes): boolean {
  if (plan.rules.some((r) => r.protocol === undefined && prefixContains(r.prefix, addr))) {
    return true;
  }
  return config.peers.some((p) =>
    p.allowedIPs.some((pre) => {
      if (pre.addr.length !== addr.length) return false;
      let bits = pre.bits;
      for (let i = 0; bits > 0; i++, bits -= 8) {
        const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
        if ((pre.addr[i]! & mask) !== (addr[i]! & mask)) return false;
      }
      return true;
    })
  );
}

/** wg-quick's interface name: the config file's name without `.conf`. */
function interfaceName(path: string): string {
  return (path.split("/").pop() ?? path).replace(/\.conf$/, "");
}

/** Policy routes per peer public key, for `wrapguard show`. */
function routeLines(config: Config, plan: RoutePlan, tunnel: Tunnel): Record<string, string[]> {
  const keys = tunnel.status().peers.map((p) => p.publicKey);
  const out: Record<string, string[]> = {};
  for (const r of plan.rules) {
    const key = keys[r.peerIndex];
    if (key === undefined || config.peers[r.peerIndex] === undefined) continue;
    const text = describeRule(r) + (r.origin === "--exit-node" ? " (exit node)" : "");
    (out[key] ??= []).push(text);
  }
  return out;
}

function say(message: string): void {
  console.error(`wrapguard: ${message}`);
}

export async function main(args: string[]): Promise<number> {
  let opts: RunOptions | "help";
  try {
    opts = parse(args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`wrapguard run: ${e.message}\n\n${HELP}`);
    return 2;
  }
  if (opts === "help") {
    console.log(HELP);
    return 0;
  }

  let config: Config;
  try {
    config = await loadConfig(opts.config);
  } catch (e) {
    say((e as Error).message);
    return 1;
  }
  let plan: RoutePlan;
  try {
    plan = planRoutes(config, opts);
  } catch (e) {
    if (!(e instanceof RouteError)) throw e;
    console.error(`wrapguard run: ${e.message}\n\n${HELP}`);
    return 2;
  }
  // Warnings are log lines: a JSON log stays JSON, and --log-file keeps the terminal silent.
  const warnings: string[] = config.warnings.map((w) =>
    `${opts.config}${w.line > 0 ? `:${w.line}` : ""}: ${w.message}`
  );
  for (const server of config.interface.dns.servers) {
    if (!covered(config, plan, server)) {
      warnings.push(
        `DNS server ${formatIP(server)} is in no peer's AllowedIPs: ` +
          `name lookups will fail`,
      );
    }
  }

  // Fail closed before anything starts: a program the interposer cannot enter is refused.
  const [name, ...rest] = opts.command;
  let target: string;
  let inspected: TargetInfo;
  try {
    target = resolveCommand(name!);
    inspected = inspectTarget(target);
  } catch (e) {
    if (!(e instanceof LaunchRefused)) throw e;
    say(e.message);
    return e.reason === "not-found" ? 127 : 126;
  }

  const tmp = Deno.env.get("TMPDIR") || "/tmp";
  const dir = await Deno.makeTempDir({ prefix: runDirPrefix() });
  // Our own directory tells our uid (Deno.uid() would need --allow-sys).
  const uid = (await Deno.stat(dir)).uid;
  if (uid !== null) await sweepStaleRunDirs(tmp, uid);
  const { logger, close: closeLog } = makeLogger(opts);
  for (const w of warnings) logger.warn(w);
  const statusPath = uid === null ? undefined : statusDir(uid);

  // Signals: before the program runs they end the start-up; after, they go to the program.
  let child: Deno.ChildProcess | undefined;
  let sandbox: Sandbox | undefined;
  let early: Deno.Signal | undefined;
  const listeners = FORWARDED.map((sig) => {
    const handler = () => {
      if (!child) {
        early ??= sig;
        return;
      }
      if ((sig === "SIGINT" || sig === "SIGQUIT") && terminalDelivers()) return;
      try {
        child.kill(sig);
      } catch {
        // it has exited meanwhile
      }
    };
    Deno.addSignalListener(sig, handler);
    return { sig, handler };
  });

  let tunnel: Tunnel | undefined;
  let broker: Broker | undefined;
  let statusServer: StatusServer | undefined;
  try {
    await Deno.chmod(dir, 0o700);
    if (!usableInLdPreload(dir)) {
      say(
        `the temporary directory ${dir} contains a space or colon, which LD_PRELOAD cannot carry`,
      );
      return 1;
    }
    let lib: string;
    let supervisor: string;
    try {
      lib = await materializeInterposer(dir, libraries);
      supervisor = await materialize(dir, SUPERVISOR_NAME, supervisors);
    } catch (e) {
      say((e as Error).message);
      return 1;
    }
    // With "DNS =" the program's lookups go through the tunnel's resolver (DESIGN.md decision 4).
    const tunnelDns = config.interface.dns.servers.length > 0;
    // The broker answers HELLO from here on and holds every other request until the tunnel is
    // up: the program starts now, and its start (an interpreter, a shell's execs) overlaps the
    // loading of the tunnel's modules and the tunnel's start (docs/performance.md "Cold start").
    try {
      broker = await Broker.open(config, {
        logger,
        dir,
        routes: interposerRoutes(config, plan, hostAddresses()),
        killSwitch: opts.killSwitch || undefined,
        dnsServers: tunnelDns ? config.interface.dns.servers : undefined,
      });
    } catch (e) {
      say(`cannot start the tunnel: ${(e as Error).message}`);
      return 1;
    }
    if (early) return 128 + (SIGNUM[early] ?? 0);

    const extra: Record<string, string> = { WRAPGUARD_HELLO: "1" };
    if (opts.logLevel === "debug" && opts.logFile === undefined) extra.WRAPGUARD_DEBUG = "1";
    const env = childEnv(Deno.env.toObject(), broker.env(), lib, extra);
    if (inspected.why) {
      logger.info("supervisor path", { file: inspected.why.file, reason: inspected.why.reason });
    }
    try {
      child = new Deno.Command(supervisor, {
        args: supervisorArgv(inspected.path, target, rest),
        env: supervisorEnv(env),
        clearEnv: true,
        stdin: "inherit",
        stdout: "inherit",
        stderr: "inherit",
      }).spawn();
    } catch (e) {
      const hint = e instanceof Deno.errors.PermissionDenied
        ? ` (is ${tmp} mounted noexec? set TMPDIR elsewhere)`
        : "";
      say(`cannot start ${name} under the supervisor: ${(e as Error).message}${hint}`);
      return 126;
    }
    logger.info("started", { command: name, pid: child.pid });
    // DESIGN.md decision 7: from here on the host cannot start programs or read the
    // environment, and a janitor started just before removes the private directory at the end.
    // Write goes too once the status socket exists (below): until then the broker answers
    // nothing but HELLO.
    sandbox = await lockDown(dir, { deferWrite: true });
    if (early) child.kill(early);
    const running = child;
    const helloDone = new AbortController();
    let killed = false;
    const helloCheck = broker.waitForHello(running.pid, HELLO_TIMEOUT_MS, helloDone.signal)
      .then((ok) => {
        if (ok || helloDone.signal.aborted) return;
        killed = true;
        try {
          running.kill("SIGKILL");
        } catch {
          // exited meanwhile
        }
      });
    // The HELLO first (it comes within milliseconds): loading the tunnel's modules keeps the
    // event loop busy, and the program would wait for its answer all that time instead of
    // starting alongside.
    await Promise.race([helloCheck, running.status]);

    try {
      const [{ Tunnel }, { Resolver }] = await Promise.all([
        import("../core/host/tunnel/mod.ts"),
        import("../core/host/tunnel/dns.ts"),
      ]);
      tunnel = await Tunnel.start(config, { logger });
      applyRoutes(tunnel, plan);
      for (const r of plan.rules) {
        logger.info("route", {
          route: describeRule(r),
          peer: tunnel.status().peers[r.peerIndex]?.publicKey,
          origin: r.origin,
        });
      }
      const resolver = tunnelDns ? Resolver.forTunnel(tunnel) : undefined;
      broker.attach(tunnel, resolver);
    } catch (e) {
      // The program has not reached the tunnel (its requests wait for attach): it ends here.
      say(`cannot start the tunnel: ${(e as Error).message}`);
      try {
        running.kill("SIGKILL");
      } catch {
        // exited meanwhile
      }
      await running.status;
      helloDone.abort();
      await helloCheck;
      return 1;
    }
    if (statusPath !== undefined && uid !== null) {
      const running = tunnel;
      const started = Date.now();
      const routes = routeLines(config, plan, running);
      const killSwitch = broker.env().WRAPGUARD_KILL_SWITCH === "1";
      const record = (): StatusRecord => ({
        ...running.status(),
        pid: Deno.pid,
        kind: "run",
        interface: interfaceName(opts.config),
        config: opts.config,
        command: opts.command.join(" "),
        started,
        routes,
        killSwitch,
      });
      try {
        statusServer = await StatusServer.start(statusPath, uid, record);
      } catch (e) {
        logger.warn("wrapguard show will not list this tunnel", {
          dir: statusPath,
          error: (e as Error).message,
        });
      }
    }
    await sandbox.revokeDeferred();

    const status = await running.status;
    helloDone.abort();
    await helloCheck;
    // The supervisor exits 126 with its reason before the program starts (a kernel without
    // seccomp user notification, an unreachable broker).
    const supervisorFailed = inspected.path === "supervisor" || status.code === 126;
    if (!broker.helloFrom(running.pid) && supervisorFailed && !killed) {
      say(
        `the supervisor could not start ${name} (see its message above): its network traffic ` +
          `would not have gone through the tunnel`,
      );
      return 126;
    }
    if (!broker.helloFrom(running.pid)) {
      say(
        `the interposer did not load into ${name}${
          killed ? ` within ${HELLO_TIMEOUT_MS / 1000} s, so it was killed` : ""
        }: its network traffic would not have gone through the tunnel. This happens with ` +
          `programs that have file capabilities, a temporary directory mounted noexec (set ` +
          `TMPDIR elsewhere), or a loader that refuses the library; use 'wrapguard forward' or ` +
          `'wrapguard proxy' for such a program`,
      );
      return 126;
    }
    logger.info("exited", { command: name, code: status.code, signal: status.signal });
    return status.code;
  } finally {
    await sandbox?.release();
    for (const { sig, handler } of listeners) Deno.removeSignalListener(sig, handler);
    // With write revoked, the status socket's file stays; `show` removes stale ones.
    await statusServer?.close().catch(() => {});
    await broker?.close().catch(() => {});
    tunnel?.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    closeLog();
  }
}
