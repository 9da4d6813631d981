/**
 * `wrapguard selftest`: proves the whole path on this machine with nothing but Deno and a C
 * runtime. An embedded peer (a second engine of ours) listens on 127.0.0.1 UDP and serves HTTP,
 * a UDP echo and DNS behind its tunnel address; the local tunnel handshakes with it, and real
 * programs run under the interposer go through it: the system curl when there is one, and the
 * probe program carried inside wrapguard (preload/probe.c). Every check is timed and printed as a
 * table; any failure exits 1.
 *
 * Where unprivileged user namespaces exist, the checks run inside a new network namespace with
 * only loopback (`unshare -rn`), so no test traffic can leave even by mistake; elsewhere only
 * 127.0.0.1 is used.
 *
 * @module
 */
import { parseOptions } from "./_args.ts";
import {
  type EmbeddedWorld,
  embeddedWorld,
  HTTP_BODY,
  LOCAL_V4,
  normalizeAddress,
  PEER_V4,
  PEER_V6,
  SELFTEST_NAME,
  type WrappedResult,
  WrapSession,
} from "../core/host/doctor/world.ts";
import type { Tunnel } from "../core/host/tunnel/mod.ts";
import { resolveCommand } from "../core/host/launch.ts";
import { formatIP, type IpBytes, parseIP } from "../core/wire/addr.ts";
import { libraries, probes } from "../preload/build/embedded.ts";
import { udpHelper } from "../core/host/tunnel/udp_native.ts";
import { describeAead } from "../core/wireguard/aead_native.ts";
import { describeX25519 } from "../core/wireguard/x25519_native.ts";

const HELP = `Usage: wrapguard selftest [--json] [--no-namespace]

Runs an embedded WireGuard peer on 127.0.0.1 that serves HTTP, UDP echo and DNS
behind its tunnel address, and checks through a real tunnel to it: the handshake,
ICMP and UDP of every size, and real programs under the interposer (curl when
installed, and wrapguard's own probe) doing outbound TCP, an inbound listen, UDP
and DNS. Needs no root, no WireGuard module and no network. Where unprivileged
user namespaces exist it runs inside a new network namespace with only loopback.
Exits 0 when every check passes.

Options:
  --json           print the results as one JSON object instead of a table
  --no-namespace   run here, not inside a new network namespace
  -h, --help
`;

/** Set in the environment of the copy of us that runs inside the namespace. */
const INSIDE = "WRAPGUARD_SELFTEST_NAMESPACE";

interface Check {
  name: string;
  status: "pass" | "fail" | "skip";
  ok: boolean;
  ms: number;
  detail: string;
}

const TIMEOUT = 5000;

function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer in ${TIMEOUT} ms`)), TIMEOUT);
    }),
  ]).finally(() => clearTimeout(timer));
}

function ping(tunnel: Tunnel, dst: IpBytes): Promise<number> {
  return withTimeout(tunnel.ping(formatIP(dst), { timeout: TIMEOUT }), `ping ${formatIP(dst)}`);
}

/** Sends datagrams of sizes 1..max to the peer's echo port and compares every reply. */
async function udpEcho(local: Tunnel, dst: IpBytes, max: number): Promise<string> {
  const sock = local.stack.udp.bind({});
  try {
    let count = 0;
    for (let size = 1; size <= max; size += size < 64 ? 1 : 61) {
      const payload = crypto.getRandomValues(new Uint8Array(size));
      const got = await withTimeout(
        new Promise<Uint8Array>((resolve) => {
          sock.onDatagram = (data) => resolve(data.slice());
          sock.send(dst, 7, payload);
          local.poke();
        }),
        `UDP echo of ${size} bytes`,
      );
      if (got.length !== size || got.some((b, i) => b !== payload[i])) {
        throw new Error(`a ${size}-byte datagram came back different`);
      }
      count++;
    }
    return `${count} datagrams, 1–${max} bytes, intact`;
  } finally {
    sock.close();
  }
}

class Skip extends Error {}

/** Throws unless the wrapped program loaded the interposer and exited 0. */
function expectClean(what: string, r: WrappedResult): void {
  if (!r.hello) {
    throw new Error(`the interposer did not load into ${what} (no HELLO): ${r.stderr.trim()}`);
  }
  if (r.timedOut) throw new Error(`${what} did not finish in time: ${r.stderr.trim()}`);
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}: ${r.stderr.trim()}`);
}

/** The probe listening on the tunnel address, and the peer connecting to it through the tunnel. */
async function inboundListen(world: EmbeddedWorld, session: WrapSession): Promise<string> {
  const port = 8000 + Math.floor(Math.random() * 1000);
  const child = session.spawn(session.probe, ["listen", LOCAL_V4, String(port)]);
  const reader = child.stdout.getReader();
  let out = "";
  const dec = new TextDecoder();
  const errText = new Response(child.stderr).text();
  let kill = true;
  try {
    await withTimeout(
      (async () => {
        while (!out.includes("listening\n")) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`the probe ended before listening: ${(await errText).trim()}`);
          out += dec.decode(value, { stream: true });
        }
      })(),
      "probe listen",
    );
    const conn = await withTimeout(
      world.peer.connect({ hostname: LOCAL_V4, port }),
      `connect from the peer to ${LOCAL_V4}:${port}`,
    );
    let reply = "";
    try {
      await conn.writeAll(new TextEncoder().encode("hello from the peer\n"));
      await conn.closeWrite();
      const buf = new Uint8Array(1024);
      for (;;) {
        const n = await withTimeout(conn.read(buf), "the probe's answer");
        if (n === null) break;
        reply += dec.decode(buf.subarray(0, n));
      }
    } finally {
      conn.close();
    }
    if (reply !== "echo: hello from the peer\n") {
      throw new Error(`the peer got ${JSON.stringify(reply)} back`);
    }
    for (;;) {
      const { value, done } = await withTimeout(reader.read(), "the probe's exit");
      if (done) break;
      out += dec.decode(value, { stream: true });
    }
    const status = await child.status;
    kill = false;
    if (!session.broker.helloFrom(child.pid)) throw new Error("the interposer did not load");
    if (status.code !== 0) throw new Error(`the probe exited ${status.code}: ${await errText}`);
    const from = /accepted (\S+)/.exec(out)?.[1];
    if (from !== PEER_V4) throw new Error(`the probe saw the client as ${from}, not ${PEER_V4}`);
    return `probe listened on ${LOCAL_V4}:${port}; the peer connected, seen as ${from}`;
  } finally {
    reader.releaseLock();
    if (kill) {
      try {
        child.kill("SIGKILL");
      } catch {
        // exited
      }
      await child.status;
    }
    await child.stdout.cancel().catch(() => {});
    await errText.catch(() => {});
  }
}

async function checks(record: (name: string, fn: () => Promise<string>) => Promise<boolean>) {
  let world: EmbeddedWorld | undefined;
  await record("embedded peer on 127.0.0.1", async () => {
    world = await embeddedWorld();
    const via = world.local.udp.backend === "native" ? "batched helper" : "node:dgram";
    const helper = await udpHelper();
    return `peer UDP port ${world.peer.udp.port}, local UDP port ${world.local.udp.port} (${via}); ` +
      `AEAD ${describeAead(helper.aead)}; X25519 ${describeX25519(helper.x25519)}`;
  });
  if (!world) return;
  const { local } = world;
  let session: WrapSession | undefined;
  try {
    const up = await record("handshake", async () => {
      const rtt = await ping(local, parseIP(PEER_V4)!);
      const p = [...local.device.peers][0]!;
      if (p.stats.handshakesCompleted < 1) throw new Error("no handshake completed");
      return `completed; first packet answered in ${rtt.toFixed(1)} ms`;
    });
    if (!up) return;
    await record("ICMP echo over IPv4", async () => {
      const rtt = await ping(local, parseIP(PEER_V4)!);
      return `${PEER_V4} answered in ${rtt.toFixed(2)} ms`;
    });
    await record("ICMPv6 echo over IPv6", async () => {
      const rtt = await ping(local, parseIP(PEER_V6)!);
      return `${PEER_V6} answered in ${rtt.toFixed(2)} ms`;
    });
    const mtu = local.device.mtu;
    await record("UDP over IPv4", () => udpEcho(local, parseIP(PEER_V4)!, mtu - 28));
    await record("UDP over IPv6", () => udpEcho(local, parseIP(PEER_V6)!, mtu - 48));

    const loaded = await record("interposer loads into the probe", async () => {
      session = await WrapSession.start(local, { libraries, probes, dns: true });
      const r = await session.run(session.probe, ["resolve", "localhost"]);
      expectClean("the probe", r);
      return `${Deno.build.arch} library and probe extracted; HELLO received`;
    });
    if (!loaded || !session) return;
    const s = session;

    await record("DNS through the tunnel (getaddrinfo)", async () => {
      const r = await s.run(s.probe, ["resolve", SELFTEST_NAME]);
      expectClean("the probe", r);
      const got = r.stdout.split("\n").map(normalizeAddress).filter((a) => a !== undefined);
      for (const want of [PEER_V4, PEER_V6]) {
        if (!got.includes(want)) {
          throw new Error(`${SELFTEST_NAME} resolved to ${got.join(", ") || "nothing"}`);
        }
      }
      if (!world!.dnsAsked.some((n) => n.toLowerCase().startsWith(SELFTEST_NAME))) {
        throw new Error("the embedded DNS server was not asked");
      }
      return `${SELFTEST_NAME} → ${got.join(", ")}, answered by the peer's DNS server`;
    });
    await record("outbound TCP (probe, HTTP by name)", async () => {
      const r = await s.run(s.probe, [
        "tcp",
        SELFTEST_NAME,
        "80",
        `GET / HTTP/1.0\r\nHost: ${SELFTEST_NAME}\r\n\r\n`,
      ]);
      expectClean("the probe", r);
      if (!r.stdout.startsWith("HTTP/1.0 200") || !r.stdout.endsWith(HTTP_BODY)) {
        throw new Error(`unexpected answer: ${JSON.stringify(r.stdout.slice(0, 80))}`);
      }
      return `HTTP 200 from ${SELFTEST_NAME}:80, ${r.stdout.length} bytes`;
    });
    await record("outbound TCP over IPv6 (probe)", async () => {
      const r = await s.run(s.probe, ["tcp", PEER_V6, "80", "GET / HTTP/1.0\r\n\r\n"]);
      expectClean("the probe", r);
      if (!r.stdout.endsWith(HTTP_BODY)) throw new Error(`unexpected answer: ${r.stdout}`);
      return `HTTP 200 from [${PEER_V6}]:80`;
    });
    await record("curl http://" + SELFTEST_NAME + "/", async () => {
      let curl: string;
      try {
        curl = resolveCommand("curl");
      } catch {
        throw new Skip("curl is not installed; the probe covered outbound TCP");
      }
      const r = await s.run(curl, [
        "-q",
        "-sS",
        "--max-time",
        "10",
        "-o",
        "-",
        "-w",
        "%{http_code}",
        `http://${SELFTEST_NAME}/`,
      ]);
      expectClean("curl", r);
      if (r.stdout !== HTTP_BODY + "200") {
        throw new Error(`curl printed ${JSON.stringify(r.stdout.slice(0, 80))}`);
      }
      return `${curl}: HTTP 200, body intact`;
    });
    await record("inbound listen (probe)", () => inboundListen(world!, s));
    await record("UDP (probe, sendto/recvfrom)", async () => {
      const message = `udp-${crypto.randomUUID()}`;
      const r = await s.run(s.probe, ["udp", PEER_V4, "7", message]);
      expectClean("the probe", r);
      return r.stdout.trim();
    });
    await record("UDP over IPv6 (probe)", async () => {
      const r = await s.run(s.probe, ["udp", PEER_V6, "7", `udp6-${crypto.randomUUID()}`]);
      expectClean("the probe", r);
      return r.stdout.trim();
    });
  } finally {
    await session?.close();
    world.close();
  }
}

/** The command line that runs this same selftest again (for the namespace). */
function selfCommand(rest: string[]): string[] {
  if (Deno.build.standalone) return [Deno.execPath(), "selftest", ...rest];
  const flagsFile = new URL("./permissions.flags", import.meta.url);
  const flags = Deno.readTextFileSync(flagsFile).split(/\s+/).filter((f) => f !== "");
  const main = new URL("./main.ts", import.meta.url).href;
  return [Deno.execPath(), "run", ...flags, main, "selftest", ...rest];
}

/**
 * Runs the selftest again inside `unshare -rn` (a user and network namespace with only loopback,
 * brought up with `ip`). Undefined when that is not possible here, so the caller runs in place.
 */
async function inNamespace(rest: string[]): Promise<number | undefined> {
  let unshare: string, ip: string;
  try {
    unshare = resolveCommand("unshare");
    ip = resolveCommand("ip");
  } catch {
    return undefined;
  }
  const works = await new Deno.Command(unshare, {
    args: ["-rn", ip, "link", "set", "lo", "up"],
    stdout: "null",
    stderr: "null",
  }).output().then((o) => o.success, () => false);
  if (!works) return undefined;
  const argv = selfCommand(rest);
  const child = new Deno.Command(unshare, {
    args: ["-rn", "sh", "-c", `"$0" link set lo up && exec "$@"`, ip, ...argv],
    env: { [INSIDE]: "1" },
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  return (await child.status).code;
}

export async function main(args: string[]): Promise<number> {
  let values;
  try {
    values = parseOptions(args, {
      json: { type: "boolean" },
      "no-namespace": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    });
  } catch (e) {
    console.error(`wrapguard selftest: ${(e as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const inside = Deno.env.get(INSIDE) === "1";
  if (!inside && !values["no-namespace"]) {
    const code = await inNamespace(values.json ? ["--json"] : []);
    if (code !== undefined) return code;
  }

  const results: Check[] = [];
  const record = async (name: string, fn: () => Promise<string>): Promise<boolean> => {
    const start = performance.now();
    try {
      const detail = await fn();
      results.push({ name, status: "pass", ok: true, ms: performance.now() - start, detail });
      return true;
    } catch (e) {
      const ms = performance.now() - start;
      const detail = (e as Error).message;
      results.push(
        e instanceof Skip
          ? { name, status: "skip", ok: true, ms, detail }
          : { name, status: "fail", ok: false, ms, detail },
      );
      return e instanceof Skip;
    }
  };
  const isolation = inside
    ? "inside a new network namespace with only loopback (unshare -rn)"
    : "in this network namespace; only 127.0.0.1 is used";
  await checks(record);

  const failed = results.filter((c) => !c.ok).length;
  if (values.json) {
    console.log(JSON.stringify({ ok: failed === 0, namespace: inside, checks: results }, null, 2));
  } else {
    const width = Math.max(...results.map((c) => c.name.length));
    console.log(`wrapguard selftest: ${isolation}\n`);
    for (const c of results) {
      const mark = c.status === "fail" ? "FAIL" : c.status;
      console.log(
        `  ${mark}  ${c.name.padEnd(width)}  ${c.ms.toFixed(0).padStart(5)} ms  ${c.detail}`,
      );
    }
    const skipped = results.filter((c) => c.status === "skip").length;
    console.log(
      `\n${results.length - failed - skipped} passed, ${failed} failed` +
        (skipped > 0 ? `, ${skipped} skipped` : ""),
    );
  }
  return failed === 0 ? 0 : 1;
}
