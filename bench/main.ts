/**
 * `deno task bench`: every workload, in the same run, through
 *
 *   (a) two wireguard-go namespaces with kernel TCP: the baseline a root user would pick
 *   (b) `wrapguard run` wrapping the same client, against the same wireguard-go peer
 *   (c) the library API (bench/lib_client.ts: the same workloads against `Tunnel`), run with -A
 *       and the V8 flag of cli/permissions.flags
 *   (d) `wrapguard forward -L tcp:127.0.0.1:…`, the same client dialing the forward
 *
 * and prints a table with ratios to (a); writes docs/bench.svg and docs/bench.json. Needs root.
 *
 * ```text
 *   netns wgt-<id>-host: wireguard-go 10.77.0.3 (a) │ wrapguard run / lib_client 10.77.0.2 (b, c)
 *                        wrapguard forward 10.77.0.4 (d) │ clients: bench/load.py, iperf3
 *        │ veth
 *   netns wgt-<id>-peer: wireguard-go 10.77.0.1; iperf3 -s, load.py echo/hello/bulk/udpsink
 * ```
 *
 *   deno task bench                      default sizes (about 8 minutes)
 *   deno task bench --quick              tiny sizes, one bulk variant (the smoke test)
 *   deno task bench --repeat 5 --seconds 5 --only bulk,latency
 *   BENCH_DENO_FLAGS="--cpu-prof --cpu-prof-dir=/tmp/prof" deno task bench --only connrate
 *                                        the same, with these Deno flags for (b) and (d)
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  genKey,
  liveGroupMembers,
  pubKey,
  requireRoot,
  sleep,
  type Spawned,
  Topology,
  waitForPort,
  type WireguardGo,
} from "../tests/_support/netns.ts";
import { renderChart } from "./chart.ts";
import { formatTable, type Result, type Workload } from "./report.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const LOAD = `${ROOT}bench/load.py`;
const LIB = `${ROOT}bench/lib_client.ts`;
const FLAGS = Deno.readTextFileSync(`${ROOT}cli/permissions.flags`).split(/\s+/).filter((f) => f);
const V8_FLAGS = FLAGS.filter((f) => f.startsWith("--v8-flags"));
const HOST_ENV = { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" };

const { values } = parseArgs({
  args: Deno.args,
  options: {
    quick: { type: "boolean", default: false },
    repeat: { type: "string" },
    seconds: { type: "string" },
    only: { type: "string" },
    out: { type: "string", default: `${ROOT}docs` },
    "no-write": { type: "boolean", default: false },
  },
});
const quick = values.quick;
const repeat = Number(values.repeat ?? (quick ? 1 : 3));
const seconds = Number(values.seconds ?? (quick ? 0.5 : 3));
const pingCount = quick ? 100 : 2000;
const holdCount = quick ? 20 : 1000;
const only = values.only?.split(",");
const want = (w: string) => only === undefined || only.includes(w);

const skip = requireRoot(["python3", "iperf3"]);
if (skip) {
  console.error(`bench: ${skip}`);
  Deno.exit(1);
}

type Mode = "a" | "b" | "c" | "d";
const MODES: Mode[] = ["a", "b", "c", "d"];
const PEER = "10.77.0.1";
const PORTS = { echo: 7000, hello: 7001, bulk: 7003, iperf: 5201 };
/** Forward's local port for a peer port. */
const fwdPort = (p: number) => 10000 + p;

const HZ = 100; // USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s on Linux

function procStat(pid: number): { cpu: number; comm: string } | undefined {
  try {
    const s = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const comm = s.slice(s.indexOf("(") + 1, s.lastIndexOf(")"));
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return { cpu: (Number(f[11]) + Number(f[12])) / HZ, comm };
  } catch {
    return undefined;
  }
}

function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** The tunnel process in a process group: wireguard-go or deno. */
function tunnelPid(pgid: number, comm: string): number | undefined {
  return liveGroupMembers(pgid).find((p) => procStat(p)?.comm === comm);
}

function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

function lastJson(text: string): Record<string, number> {
  const lines = text.trim().split("\n").filter((l) => l.startsWith("{"));
  if (lines.length === 0) throw new Error(`no JSON in output:\n${text.slice(-2000)}`);
  return JSON.parse(lines[lines.length - 1]!);
}

/** Samples a process's CPU and RSS while `fn` runs. */
async function measured<T>(
  pid: () => number | undefined,
  fn: () => Promise<T>,
): Promise<{ value: T; cpu: number; rssMax: number }> {
  let rssMax = 0, cpu0: number | undefined, cpu1 = 0, seen: number | undefined;
  let running = true;
  const sampler = (async () => {
    while (running) {
      const p = pid();
      if (p !== undefined) {
        if (seen !== p) {
          seen = p;
          cpu0 = procStat(p)?.cpu ?? 0;
        }
        cpu1 = procStat(p)?.cpu ?? cpu1;
        rssMax = Math.max(rssMax, rssOf(p));
      }
      await sleep(100);
    }
  })();
  try {
    const value = await fn();
    return { value, cpu: cpu1 - (cpu0 ?? cpu1), rssMax };
  } finally {
    running = false;
    await sampler;
  }
}

// --- The world ------------------------------------------------------------------------------

const topo = await Topology.create({ hostNamespace: true });
const host = topo.host!;
let forward: Spawned | undefined;
const results: Result[] = [];
try {
  const ourPrivate = await genKey(), ourPublic = await pubKey(ourPrivate);
  const fwdPrivate = await genKey(), fwdPublic = await pubKey(fwdPrivate);
  const listenPort = 40000 + (parseInt(topo.id, 16) % 20000);
  const peerWg = await topo.startWireguardGo(topo.peer, {
    addresses: [`${PEER}/24`],
    mtu: 1420,
    logLevel: "error",
    peers: [
      {
        publicKey: ourPublic,
        allowedIPs: ["10.77.0.2/32"],
        endpoint: `${topo.hostAddr}:${listenPort}`,
      },
      {
        publicKey: fwdPublic,
        allowedIPs: ["10.77.0.4/32"],
        endpoint: `${topo.hostAddr}:${listenPort + 1}`,
      },
    ],
  });
  const hostWg: WireguardGo = await topo.startWireguardGo(host, {
    addresses: ["10.77.0.3/24"],
    mtu: 1420,
    logLevel: "error",
    peers: [{
      publicKey: peerWg.publicKey,
      allowedIPs: [`${PEER}/32`],
      endpoint: topo.endpoint(peerWg),
    }],
  });
  await peerWg.setPeer({ publicKey: hostWg.publicKey, allowedIPs: ["10.77.0.3/32"] });

  const conf = (key: string, addr: string, port: number) =>
    `[Interface]
PrivateKey = ${key}
Address = ${addr}/32
ListenPort = ${port}
MTU = 1420

[Peer]
PublicKey = ${peerWg.publicKey}
Endpoint = ${topo.endpoint(peerWg)}
AllowedIPs = 10.77.0.0/24
PersistentKeepalive = 25
`;
  const ourConf = `${topo.tmpDir}/bench.conf`, fwdConf = `${topo.tmpDir}/forward.conf`;
  await Deno.writeTextFile(ourConf, conf(ourPrivate, "10.77.0.2", listenPort), { mode: 0o600 });
  await Deno.writeTextFile(fwdConf, conf(fwdPrivate, "10.77.0.4", listenPort + 1), {
    mode: 0o600,
  });

  for (const [mode, port] of [["echo", PORTS.echo], ["hello", PORTS.hello], ["bulk", PORTS.bulk]]) {
    topo.spawn(topo.peer, ["python3", LOAD, String(mode), PEER, String(port)]);
  }
  topo.spawn(topo.peer, ["iperf3", "-s", "-B", PEER, "-p", String(PORTS.iperf)]);
  for (const p of Object.values(PORTS)) await waitForPort(topo.peer, p);

  const fwdArgs = Object.values(PORTS).flatMap((
    p,
  ) => ["-L", `tcp:127.0.0.1:${fwdPort(p)}=${PEER}:${p}`]);
  const denoRun = [
    Deno.execPath(),
    "run",
    ...FLAGS,
    ...(Deno.env.get("BENCH_DENO_FLAGS")?.split(/\s+/).filter((f) => f) ?? []),
    `${ROOT}cli/main.ts`,
  ];
  /** (Re)starts the forward; returns the time from spawn to the first byte through it. */
  const startForward = async (): Promise<number> => {
    if (forward) await forward.kill("SIGTERM", 2000);
    const t0 = Date.now();
    forward = topo.spawn(host, [
      ...denoRun,
      "forward",
      "-c",
      fwdConf,
      "--log-level",
      "warn",
      ...fwdArgs,
    ], {
      env: HOST_ENV,
    });
    const r = await topo.run(host, [
      "python3",
      LOAD,
      "firstbyte",
      "127.0.0.1",
      String(fwdPort(PORTS.hello)),
    ], {
      timeoutMs: 30_000,
    });
    if (r.code !== 0) {
      throw new Error(`forward did not come up: ${r.stderr}\n${forward.stderrText().slice(-2000)}`);
    }
    return lastJson(r.stdout).at! - t0;
  };

  /** argv of a workload client in `mode`; `load` are load.py's arguments after HOST PORT. */
  const client = (
    mode: Mode,
    workload: string,
    port: number,
    args: (string | number)[],
  ): string[] => {
    const a = args.map(String);
    switch (mode) {
      case "a":
        return ["python3", LOAD, workload, PEER, String(port), ...a];
      case "b":
        return [
          ...denoRun,
          "run",
          "--config",
          ourConf,
          "--",
          "python3",
          LOAD,
          workload,
          PEER,
          String(port),
          ...a,
        ];
      case "c":
        // With the CLI's V8 flag, as the README advises a program with many connections.
        return [
          Deno.execPath(),
          "run",
          "-A",
          ...V8_FLAGS,
          LIB,
          ourConf,
          workload,
          PEER,
          String(port),
          ...a,
        ];
      case "d":
        return ["python3", LOAD, workload, "127.0.0.1", String(fwdPort(port)), ...a];
    }
  };

  /** The pid of the tunnel for `mode` (the wireguard-go, wrapguard or forward process). */
  const tunnelOf = (mode: Mode, clientProc?: Spawned): number | undefined => {
    if (mode === "a") return tunnelPid(hostWg.proc.pid, "wireguard-go");
    if (mode === "d") return forward && tunnelPid(forward.pid, "deno");
    return clientProc && tunnelPid(clientProc.pid, "deno");
  };

  const runClient = async (
    mode: Mode,
    argv: string[],
    timeoutMs = 120_000,
  ): Promise<{ out: Record<string, number>; cpu: number; rssMax: number }> => {
    const proc = topo.spawn(host, argv, { env: HOST_ENV });
    const m = await measured(() => tunnelOf(mode, proc), async () => {
      const r = await proc.wait(timeoutMs);
      if (r.code !== 0) {
        throw new Error(`${argv.join(" ")} exited ${r.code}:\n${r.stderr.slice(-3000)}`);
      }
      return r.stdout;
    });
    return { out: lastJson(m.value), cpu: m.cpu, rssMax: m.rssMax };
  };

  const add = (w: Workload, mode: Mode, samples: number[]) =>
    results.push({ ...w, mode, value: median(samples), samples });

  /** Runs `one` for every mode, `repeat` times, modes interleaved so that drift hits all. */
  const each = async (
    w: Workload,
    modes: Mode[],
    one: (m: Mode) => Promise<number>,
  ): Promise<void> => {
    const samples = new Map<Mode, number[]>(modes.map((m) => [m, []]));
    for (let i = 0; i < repeat; i++) {
      for (const m of modes) {
        try {
          samples.get(m)!.push(await one(m));
        } catch (e) {
          console.error(`bench: ${w.name} (${m}) failed: ${(e as Error).message.slice(0, 600)}`);
        }
      }
    }
    for (const m of modes) add(w, m, samples.get(m)!);
    const line = modes.map((m) => `${m}=${median(samples.get(m)!).toFixed(2)}`).join(" ");
    console.error(`bench: ${w.name}: ${line} ${w.unit}`);
  };

  // Warm the caches (deno type-checks and compiles on first run), and bring every tunnel up.
  console.error("bench: warming up");
  await startForward();
  for (const m of MODES) await runClient(m, client(m, "pingpong", PORTS.echo, [10]));

  // --- Cold start --------------------------------------------------------------------------
  if (want("cold")) {
    await each(
      { name: "cold start to first byte", unit: "ms", better: "lower" },
      MODES,
      async (m) => {
        if (m === "d") return await startForward();
        const t0 = Date.now();
        const r = await runClient(m, client(m, "firstbyte", PORTS.hello, []));
        return r.out.at! - t0;
      },
    );
  }

  // --- Bulk --------------------------------------------------------------------------------
  const cpuPerGiB = new Map<string, number[]>();
  const rssBulk = new Map<Mode, number[]>();
  if (want("bulk")) {
    const variants = quick
      ? [{ dir: "up", streams: 1 }]
      : [{ dir: "up", streams: 1 }, { dir: "down", streams: 1 }, { dir: "up", streams: 4 }, {
        dir: "down",
        streams: 4,
      }];
    for (const v of variants) {
      const name = `bulk TCP ${v.dir === "up" ? "upload" : "download"}, ${v.streams} stream${
        v.streams > 1 ? "s" : ""
      }`;
      await each({ name, unit: "MB/s", better: "higher" }, MODES, async (m) => {
        let bytes: number, secs: number, cpu: number, rssMax: number;
        if (m === "c") {
          const r = await runClient(m, client(m, "bulk", PORTS.bulk, [v.dir, v.streams, seconds]));
          ({ bytes, seconds: secs } = r.out as { bytes: number; seconds: number });
          ({ cpu, rssMax } = r);
        } else {
          const target = m === "d"
            ? ["127.0.0.1", "-p", String(fwdPort(PORTS.iperf))]
            : [PEER, "-p", String(PORTS.iperf)];
          const iperf = [
            "iperf3",
            "-c",
            ...target,
            "-t",
            String(Math.max(1, Math.round(seconds))),
            "-P",
            String(v.streams),
            "-J",
            ...(v.dir === "down" ? ["-R"] : []),
          ];
          const argv = m === "b" ? [...denoRun, "run", "--config", ourConf, "--", ...iperf] : iperf;
          const proc = topo.spawn(host, argv, { env: HOST_ENV });
          const r = await measured(() => tunnelOf(m, proc), async () => {
            const res = await proc.wait(seconds * 1000 + 60_000);
            if (res.code !== 0) {
              throw new Error(
                `iperf3 exited ${res.code}: ${res.stdout.slice(-800)} ${res.stderr.slice(-800)}`,
              );
            }
            return res.stdout;
          });
          const j = JSON.parse(r.value.slice(r.value.indexOf("{")));
          bytes = j.end.sum_received.bytes;
          secs = j.end.sum_received.seconds;
          ({ cpu, rssMax } = r);
        }
        if (v.streams === 1) {
          const key = `${m}${v.dir}`;
          cpuPerGiB.set(key, [...(cpuPerGiB.get(key) ?? []), cpu / (bytes / 2 ** 30)]);
          rssBulk.set(m, [...(rssBulk.get(m) ?? []), rssMax]);
        }
        return bytes / 1e6 / secs;
      });
    }
    for (const dir of quick ? ["up"] : ["up", "down"]) {
      const w: Workload = {
        name: `CPU per GiB, bulk ${dir === "up" ? "upload" : "download"} (tunnel process)`,
        unit: "s/GiB",
        better: "lower",
      };
      for (const m of MODES) add(w, m, cpuPerGiB.get(`${m}${dir}`) ?? []);
    }
    const w: Workload = { name: "RSS during bulk transfer", unit: "MB", better: "lower" };
    for (const m of MODES) add(w, m, (rssBulk.get(m) ?? []).map((b) => b / 1e6));
  }

  // --- Latency and connection rate ----------------------------------------------------------
  if (want("latency")) {
    const p50: Map<Mode, number[]> = new Map(), p99: Map<Mode, number[]> = new Map();
    await each(
      { name: "TCP 1-byte ping-pong p50", unit: "ms", better: "lower" },
      MODES,
      async (m) => {
        const r = await runClient(m, client(m, "pingpong", PORTS.echo, [pingCount]));
        p99.set(m, [...(p99.get(m) ?? []), r.out.p99!]);
        p50.set(m, [...(p50.get(m) ?? []), r.out.p50!]);
        return r.out.p50!;
      },
    );
    const w: Workload = { name: "TCP 1-byte ping-pong p99", unit: "ms", better: "lower" };
    for (const m of MODES) add(w, m, p99.get(m) ?? []);
  }
  if (want("connrate")) {
    await each(
      { name: "TCP connect, request, close", unit: "conn/s", better: "higher" },
      MODES,
      async (m) => {
        const r = await runClient(m, client(m, "connrate", PORTS.echo, [seconds]));
        return r.out.perSecond!;
      },
    );
  }

  // --- UDP ---------------------------------------------------------------------------------
  if (want("udp")) {
    let sinkPort = 7100;
    for (const size of [64, 1400]) {
      // forward carries TCP only; SOCKS5 UDP through `proxy` is not driven here yet.
      await each(
        { name: `UDP ${size}-byte datagrams received`, unit: "kpkt/s", better: "higher" },
        ["a", "b", "c"],
        async (m) => {
          const port = sinkPort++;
          const sink = topo.spawn(topo.peer, ["python3", LOAD, "udpsink", PEER, String(port)]);
          await waitForPort(topo.peer, port, "udp");
          await runClient(m, client(m, "udpblast", port, [size, seconds]));
          const r = await sink.wait(40_000);
          const j = lastJson(r.stdout);
          return j.seconds! > 0 ? j.count! / j.seconds! / 1000 : 0;
        },
      );
    }
  }

  // --- Memory ------------------------------------------------------------------------------
  if (want("memory")) {
    const idle: Map<Mode, number[]> = new Map(), per: Map<Mode, number[]> = new Map();
    for (let i = 0; i < repeat; i++) {
      for (const m of MODES) {
        try {
          const sample = async (n: number): Promise<number> => {
            const proc = topo.spawn(host, client(m, "hold", PORTS.echo, [n, 60]), {
              env: HOST_ENV,
            });
            try {
              await proc.waitForOutput(/"held"/, { stream: "stdout", timeoutMs: 20_000 });
              await sleep(1000);
              const pid = tunnelOf(m, proc);
              if (pid === undefined) throw new Error("no tunnel process");
              return rssOf(pid);
            } finally {
              await proc.kill("SIGTERM", 2000);
            }
          };
          if (m === "d") await startForward(); // a fresh forward, as the others are fresh
          const r0 = await sample(0);
          const r1 = await sample(holdCount);
          idle.set(m, [...(idle.get(m) ?? []), r0 / 1e6]);
          per.set(m, [...(per.get(m) ?? []), (r1 - r0) / holdCount / 1024]);
        } catch (e) {
          console.error(`bench: memory (${m}) failed: ${(e as Error).message.slice(0, 600)}`);
        }
      }
    }
    const w1: Workload = { name: "RSS idle (tunnel process)", unit: "MB", better: "lower" };
    const w2: Workload = {
      name: `RSS per idle connection (${holdCount} open)`,
      unit: "KiB",
      better: "lower",
    };
    for (const m of MODES) add(w1, m, idle.get(m) ?? []);
    for (const m of MODES) add(w2, m, per.get(m) ?? []);
  }
} finally {
  await forward?.kill("SIGTERM", 2000);
  const problems = await topo.close();
  if (problems.length > 0) console.error(`bench: cleanup: ${problems.join("; ")}`);
}

const date = new Date().toISOString().slice(0, 10);
const cpuModel = (() => {
  try {
    return /model name\s*:\s*(.*)/.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1]?.trim();
  } catch {
    return undefined;
  }
})() ?? Deno.build.arch;
const machine = `${cpuModel}, ${navigator.hardwareConcurrency} cores, Linux ${Deno.osRelease()}`;
const meta = { date, machine, repeat, seconds, quick, deno: Deno.version.deno };
console.log(formatTable(results, meta));
if (!values["no-write"]) {
  await Deno.mkdir(values.out!, { recursive: true });
  await Deno.writeTextFile(
    `${values.out}/bench.json`,
    JSON.stringify({ ...meta, results }, null, 1) + "\n",
  );
  await Deno.writeTextFile(`${values.out}/bench.svg`, renderChart(results, meta));
  console.log(`wrote ${values.out}/bench.svg and ${values.out}/bench.json`);
}
