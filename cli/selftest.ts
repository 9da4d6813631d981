/**
 * `wrapguard selftest`: proves the path on this machine with nothing but Deno. An embedded peer
 * (a second engine of ours) listens on 127.0.0.1; the local tunnel handshakes with it and sends
 * ICMP and UDP through it. Every check is timed and printed as a table; any failure exits 1.
 *
 * Only loopback UDP is used: no traffic can leave the machine.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { parseConfig } from "../core/config/mod.ts";
import { Tunnel } from "../core/host/tunnel.ts";
import { encodeKey, generatePrivateKey, publicKeyOf } from "../core/wireguard/keys.ts";
import { formatIP, type IpBytes, parseIP } from "../core/wire/addr.ts";

const HELP = `Usage: wrapguard selftest [--json]

Runs an embedded WireGuard peer on 127.0.0.1 and checks, through a real tunnel to it:
the handshake, ICMP echo over IPv4 and IPv6, and UDP datagrams of every size up to the MTU.
Needs no root, no WireGuard module and no network. Exits 0 when every check passes.

Options:
  --json    print the results as one JSON object instead of a table
  -h, --help
`;

interface Check {
  name: string;
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

/** Two tunnels that are each other's only peer, over loopback UDP. */
async function embeddedPair(): Promise<{ local: Tunnel; peer: Tunnel }> {
  const localKey = generatePrivateKey(), peerKey = generatePrivateKey();
  const peer = await Tunnel.start(
    parseConfig(
      `[Interface]\nPrivateKey = ${encodeKey(peerKey)}\nAddress = 10.200.0.1/32, fd20::1/128\n` +
        `ListenPort = 0\n\n[Peer]\nPublicKey = ${encodeKey(publicKeyOf(localKey))}\n` +
        `AllowedIPs = 10.200.0.2/32, fd20::2/128\n`,
      { file: "<selftest peer>" },
    ),
    { listenAddress: "127.0.0.1" },
  );
  const local = await Tunnel.start(
    parseConfig(
      `[Interface]\nPrivateKey = ${encodeKey(localKey)}\nAddress = 10.200.0.2/32, fd20::2/128\n\n` +
        `[Peer]\nPublicKey = ${encodeKey(publicKeyOf(peerKey))}\n` +
        `Endpoint = 127.0.0.1:${peer.udp.port}\nAllowedIPs = 10.200.0.0/24, fd20::/64\n`,
      { file: "<selftest local>" },
    ),
    { listenAddress: "127.0.0.1" },
  );
  return { local, peer };
}

function ping(tunnel: Tunnel, dst: IpBytes): Promise<number> {
  return withTimeout(tunnel.ping(formatIP(dst), { timeout: TIMEOUT }), `ping ${formatIP(dst)}`);
}

/** Sends datagrams of sizes 1..max to an echo socket on the peer and compares every reply. */
async function udpEcho(local: Tunnel, peer: Tunnel, dst: IpBytes, max: number): Promise<string> {
  const echo = peer.stack.udp.bind({ port: 7 });
  echo.onDatagram = (data, src, srcPort) => {
    echo.send(src, srcPort, data.slice());
    peer.poke();
  };
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
    echo.close();
  }
}

export async function main(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: { json: { type: "boolean" }, help: { type: "boolean", short: "h" } },
    }));
  } catch (e) {
    console.error(`wrapguard selftest: ${(e as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }

  const checks: Check[] = [];
  const run = async (name: string, fn: () => Promise<string>) => {
    const start = performance.now();
    try {
      const detail = await fn();
      checks.push({ name, ok: true, ms: performance.now() - start, detail });
    } catch (e) {
      checks.push({ name, ok: false, ms: performance.now() - start, detail: (e as Error).message });
    }
  };

  let pair: { local: Tunnel; peer: Tunnel } | undefined;
  await run("embedded peer on 127.0.0.1", async () => {
    pair = await embeddedPair();
    return `peer UDP port ${pair.peer.udp.port}, local UDP port ${pair.local.udp.port}`;
  });
  if (pair) {
    const { local, peer } = pair;
    await run("handshake", async () => {
      const rtt = await ping(local, parseIP("10.200.0.1")!);
      const p = [...local.device.peers][0]!;
      if (p.stats.handshakesCompleted < 1) throw new Error("no handshake completed");
      return `completed; first packet answered in ${rtt.toFixed(1)} ms`;
    });
    await run("ICMP echo over IPv4", async () => {
      const rtt = await ping(local, parseIP("10.200.0.1")!);
      return `10.200.0.1 answered in ${rtt.toFixed(2)} ms`;
    });
    await run("ICMPv6 echo over IPv6", async () => {
      const rtt = await ping(local, parseIP("fd20::1")!);
      return `fd20::1 answered in ${rtt.toFixed(2)} ms`;
    });
    const mtu = local.device.mtu;
    await run("UDP over IPv4", () => udpEcho(local, peer, parseIP("10.200.0.1")!, mtu - 28));
    await run("UDP over IPv6", () => udpEcho(local, peer, parseIP("fd20::1")!, mtu - 48));
    local.close();
    peer.close();
  }

  const failed = checks.filter((c) => !c.ok).length;
  if (values.json) {
    console.log(JSON.stringify({ ok: failed === 0, checks }, null, 2));
  } else {
    const width = Math.max(...checks.map((c) => c.name.length));
    console.log(`wrapguard selftest\n`);
    for (const c of checks) {
      const mark = c.ok ? "pass" : "FAIL";
      console.log(
        `  ${mark}  ${c.name.padEnd(width)}  ${c.ms.toFixed(0).padStart(5)} ms  ${c.detail}`,
      );
    }
    console.log(`\n${checks.length - failed} passed, ${failed} failed`);
  }
  return failed === 0 ? 0 : 1;
}
