/**
 * Both ends in this process: two tunnels on 127.0.0.1 and a bulk TCP transfer between them
 * through the library API. No root, no wireguard-go: the per-packet path of both directions at
 * once, for `--cpu-prof` and quick before/after checks of an optimization.
 *
 *   deno run -A bench/loopback.ts [--mib 64] [--aead noble|node] [--udp dgram|native]
 *   deno run -A --cpu-prof --cpu-prof-dir=/tmp/prof bench/loopback.ts
 *
 * Prints one JSON line: MB/s, CPU seconds per GiB (both ends), and the AEAD backend.
 *
 * @module
 */
import { parseArgs } from "node:util";
import process from "node:process";
import { encodeKey, generatePrivateKey, publicKeyOf, Tunnel } from "../mod.ts";
import { aeadBackend, nobleAead, nodeAead, setAeadBackend } from "../core/wireguard/crypto.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    mib: { type: "string", default: "64" },
    aead: { type: "string" },
    udp: { type: "string", default: "auto" },
  },
});
// Chosen before the tunnels load the helper, whose native AEAD then stays unused.
if (values.aead === "noble") setAeadBackend(nobleAead);
if (values.aead === "node") setAeadBackend(nodeAead);
const size = Number(values.mib) * (1 << 20);
const udpBackend = values.udp as "auto" | "native" | "dgram";

const serverKey = generatePrivateKey(), clientKey = generatePrivateKey();
const server = await Tunnel.fromText(
  `[Interface]\nPrivateKey = ${encodeKey(serverKey)}\nAddress = 10.9.0.1/32\n\n` +
    `[Peer]\nPublicKey = ${encodeKey(publicKeyOf(clientKey))}\nAllowedIPs = 10.9.0.2/32\n`,
  { listenAddress: "127.0.0.1", udpBackend },
);
const client = await Tunnel.fromText(
  `[Interface]\nPrivateKey = ${encodeKey(clientKey)}\nAddress = 10.9.0.2/32\n\n` +
    `[Peer]\nPublicKey = ${encodeKey(publicKeyOf(serverKey))}\nAllowedIPs = 10.9.0.1/32\n` +
    `Endpoint = 127.0.0.1:${server.udp.port}\n`,
  { listenAddress: "127.0.0.1", udpBackend },
);
const listener = server.listen({ port: 9 });
const sink = (async () => {
  const conn = await listener.accept();
  let n = 0;
  for (;;) {
    const c = await conn.readChunk();
    if (c === null) break;
    n += c.length;
  }
  conn.close();
  return n;
})();
const conn = await client.connect({ hostname: "10.9.0.1", port: 9 });
const block = new Uint8Array(1 << 16).fill(0xa5);
const cpu0 = process.cpuUsage();
const t0 = performance.now();
for (let sent = 0; sent < size; sent += block.length) await conn.writeAll(block);
await conn.closeWrite();
const received = await sink;
const secs = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
conn.close();
listener.close();
client.close();
server.close();
const cpuSecs = (cpu.user + cpu.system) / 1e6;
console.log(JSON.stringify({
  aead: aeadBackend(),
  udp: client.udp.backend,
  mib: size / (1 << 20),
  received,
  mbps: +(received / 1e6 / secs).toFixed(1),
  cpuPerGiB: +(cpuSecs / (received / 2 ** 30)).toFixed(2),
  retransmits: client.tcp.stats.retransmits,
  udpQueueDrops: client.udp.queueDrops + server.udp.queueDrops,
}));
Deno.exit(0);
