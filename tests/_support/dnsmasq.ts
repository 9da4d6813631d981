/**
 * dnsmasq as the DNS server on the far side of a tunnel: started in a namespace of a
 * {@link Topology}, bound only to the addresses given (with `--bind-interfaces`, so nothing else
 * in the namespace answers), serving only the records given (`--no-resolv --no-hosts`, no
 * config file), logging every query to stderr. Stopped with the topology.
 *
 * ```ts ignore
 * const dns = await startDnsmasq(topo, topo.peer, {
 *   listen: ["10.77.0.1"],
 *   localDomains: ["wg.test"],
 *   hostRecords: [{ name: "svc.wg.test", addresses: ["10.77.0.1", "fd77::1"] }],
 * });
 * // …ask 10.77.0.1:53 through the tunnel…
 * assert.ok(dns.queries().some((q) => q.name === "svc.wg.test"));
 * ```
 *
 * @module
 */
import { sleep, type Spawned, which } from "./proc.ts";
import type { Topology } from "./netns.ts";

/** What dnsmasq serves and where. */
export interface DnsmasqOptions {
  /** Addresses to listen on; each must already exist on an interface of the namespace. */
  listen: string[];
  /** Default 53. */
  port?: number;
  /** `--host-record=name,addr…`: exactly that name; A and AAAA from the addresses given. */
  hostRecords?: { name: string; addresses: string[] }[];
  /**
   * `--address=/domain/addr`: the name and every name below it. dnsmasq answers NXDOMAIN for the
   * family not given.
   */
  addresses?: { domain: string; address: string }[];
  /** `--cname=alias,target`. */
  cnames?: { alias: string; target: string }[];
  /** `--local=/domain/`: answered from the records above only; other names get NXDOMAIN. */
  localDomains?: string[];
  /** `--local-ttl`: TTL of the answers, default 60 s (dnsmasq's own default is 0). */
  ttl?: number;
  /** Anything else, appended as given. */
  extraArgs?: string[];
}

/** One `query[TYPE] name from addr` line of dnsmasq's log. */
export interface DnsmasqQuery {
  type: string;
  name: string;
  from: string;
}

/** A running dnsmasq. */
export class Dnsmasq {
  readonly ns: string;
  readonly listen: readonly string[];
  readonly port: number;
  readonly proc: Spawned;
  /** Queries that were start-up probes, not the test's. */
  #probes = 0;

  readonly #logFile: string;

  constructor(ns: string, listen: readonly string[], port: number, proc: Spawned, logFile: string) {
    this.ns = ns;
    this.listen = listen;
    this.port = port;
    this.proc = proc;
    this.#logFile = logFile;
  }

  /**
   * dnsmasq's log so far, then anything it printed to stderr. The log is a file read on the spot:
   * dnsmasq writes a query's line when the query arrives, before it answers, so the file already
   * has it when the answer reaches us (a pipe is read by our event loop, possibly later).
   */
  log(): string {
    let text = "";
    try {
      text = Deno.readTextFileSync(this.#logFile);
    } catch {
      // not created yet
    }
    return text + this.proc.stderrText();
  }

  /** The queries dnsmasq has received since it was ready, in order (not the start-up probes). */
  queries(): DnsmasqQuery[] {
    return this.#allQueries().slice(this.#probes);
  }

  /** @internal Marks what was asked so far as start-up probes. */
  _ready(): void {
    this.#probes = this.#allQueries().length;
  }

  #allQueries(): DnsmasqQuery[] {
    const out: DnsmasqQuery[] = [];
    for (const m of this.log().matchAll(/query\[(\w+)\] (\S+) from (\S+)/g)) {
      out.push({ type: m[1]!, name: m[2]!, from: m[3]! });
    }
    return out;
  }

  /** Stops it (the topology would at close anyway). */
  async stop(): Promise<void> {
    await this.proc.kill("SIGTERM", 1000);
  }
}

/** True when dnsmasq is installed. */
export function haveDnsmasq(): boolean {
  return which("dnsmasq") !== undefined;
}

/**
 * Starts dnsmasq in `ns` and waits until every listen address answers on UDP (a query for the
 * root's NS record, which dnsmasq answers or refuses, either way proving the socket is up).
 */
export async function startDnsmasq(
  topo: Topology,
  ns: string,
  opts: DnsmasqOptions,
): Promise<Dnsmasq> {
  if (opts.listen.length === 0) throw new Error("startDnsmasq: no listen address");
  const port = opts.port ?? 53;
  const dir = await Deno.makeTempDir({ dir: topo.tmpDir, prefix: "dnsmasq-" });
  const argv = [
    "dnsmasq",
    "--keep-in-foreground",
    "--conf-file=/dev/null",
    "--no-resolv",
    "--no-hosts",
    "--no-poll",
    "--bind-interfaces",
    ...opts.listen.map((a) => `--listen-address=${a}`),
    `--port=${port}`,
    `--pid-file=${dir}/dnsmasq.pid`,
    `--dhcp-leasefile=${dir}/dnsmasq.leases`,
    // dnsmasq would otherwise change to "nobody", who can not enter the private temp dir.
    "--user=root",
    `--log-facility=${dir}/dnsmasq.log`,
    "--log-queries",
    `--local-ttl=${opts.ttl ?? 60}`,
    ...(opts.localDomains ?? []).map((d) => `--local=/${d}/`),
    ...(opts.hostRecords ?? []).map((h) => `--host-record=${[h.name, ...h.addresses].join(",")}`),
    ...(opts.addresses ?? []).map((a) => `--address=/${a.domain}/${a.address}`),
    ...(opts.cnames ?? []).map((c) => `--cname=${c.alias},${c.target}`),
    ...(opts.extraArgs ?? []),
  ];
  const proc = topo.spawn(ns, argv);
  const dns = new Dnsmasq(ns, opts.listen, port, proc, `${dir}/dnsmasq.log`);
  const deadline = Date.now() + 5000;
  while (!/started, version/.test(dns.log())) {
    if (proc.exited || Date.now() > deadline) {
      throw new Error(`dnsmasq did not start\n${dns.log()}`);
    }
    await sleep(20);
  }
  for (const addr of opts.listen) {
    for (;;) {
      const r = await topo.run(ns, [
        "dig",
        "+tries=1",
        "+time=1",
        "-p",
        String(port),
        `@${addr}`,
        ".",
        "NS",
      ]);
      if (/status: \w+/.test(r.stdout)) break;
      if (proc.exited || Date.now() > deadline) {
        throw new Error(`dnsmasq does not answer on ${addr}:${port}\n${dns.log()}`);
      }
      await sleep(50);
    }
  }
  dns._ready();
  return dns;
}
