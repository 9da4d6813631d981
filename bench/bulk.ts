/**
 * Bulk TCP throughput: the library API (our engine and stack, in this process) against the same
 * transfer between two wireguard-go namespaces with kernel TCP, the baseline a root user would
 * pick. Same machine, same run; prints MB/s and the ratio. Needs root (namespaces, TUN).
 *
 *   deno task bench            (default 64 MiB per direction and run)
 *   deno task bench --mib 256
 *
 * @module
 */
import { parseArgs } from "node:util";
import { requireRoot, type Topology, waitForPort, withTopology } from "../tests/_support/netns.ts";
import { withPair } from "../tests/_support/wg_pair.ts";

const peerScript = new URL("../tests/_support/tcp_peer.py", import.meta.url).pathname;
const { values } = parseArgs({
  args: Deno.args,
  options: { mib: { type: "string", default: "64" } },
});
const MiB = 1 << 20;
const size = Number(values.mib) * MiB;

const skip = requireRoot(["python3"]);
if (skip) {
  console.error(`bench: ${skip}`);
  Deno.exit(1);
}

interface Row {
  what: string;
  mbps: number;
}

function mbps(bytes: number, ms: number): number {
  return bytes / 1e6 / (ms / 1000);
}

/** Kernel → kernel through two wireguard-go instances (host and peer namespaces). */
async function baseline(direction: "upload" | "download"): Promise<number> {
  return await withTopology({ hostNamespace: true }, async (topo: Topology) => {
    const a = await topo.startWireguardGo(topo.host!, { addresses: ["10.78.0.2/24"], peers: [] });
    const b = await topo.startWireguardGo(topo.peer, {
      addresses: ["10.78.0.1/24"],
      peers: [{ publicKey: a.publicKey, allowedIPs: ["10.78.0.2/32"] }],
    });
    await a.setPeer({
      publicKey: b.publicKey,
      allowedIPs: ["10.78.0.1/32"],
      endpoint: topo.endpoint(b),
    });
    const [send, recv] = direction === "upload" ? [String(size), "0"] : ["0", String(size)];
    const server = topo.spawn(topo.peer, [
      "python3",
      peerScript,
      "server",
      "10.78.0.1",
      "6001",
      recv,
    ]);
    await waitForPort(topo.peer, 6001);
    const start = performance.now();
    const client = await topo.run(topo.host, [
      "python3",
      peerScript,
      "client",
      "10.78.0.1",
      "6001",
      send,
    ], {
      timeoutMs: 600_000,
    });
    const ms = performance.now() - start;
    await server.wait(10_000);
    if (client.code !== 0) throw new Error(`baseline client failed: ${client.stderr}`);
    return mbps(size, ms);
  });
}

/** Our library API → kernel TCP behind wireguard-go. */
async function library(direction: "upload" | "download"): Promise<number> {
  let result = 0;
  await withTopology({}, (topo) =>
    withPair(topo, {}, async ({ tunnel }) => {
      const send = direction === "download" ? String(size) : "0";
      const server = topo.spawn(topo.peer, [
        "python3",
        peerScript,
        "server",
        "10.77.0.1",
        "6002",
        send,
      ]);
      await waitForPort(topo.peer, 6002);
      const data = new Uint8Array(direction === "upload" ? size : 0);
      const start = performance.now();
      const conn = await tunnel.connect({ hostname: "10.77.0.1", port: 6002 });
      let received = 0;
      const reading = (async () => {
        for (;;) {
          const c = await conn.readChunk();
          if (c === null) break;
          received += c.length;
        }
      })();
      await conn.writeAll(data);
      await conn.closeWrite();
      await reading;
      const ms = performance.now() - start;
      conn.close();
      await server.wait(10_000);
      if (direction === "download" && received !== size) throw new Error(`received ${received}`);
      result = mbps(size, ms);
    }));
  return result;
}

const rows: Row[] = [];
for (const direction of ["upload", "download"] as const) {
  const base = await baseline(direction);
  const ours = await library(direction);
  rows.push({ what: `wireguard-go pair, kernel TCP, ${direction}`, mbps: base });
  rows.push({ what: `library API, ${direction}`, mbps: ours });
}

const date = new Date().toISOString().slice(0, 10);
console.log(
  `\nbulk TCP, ${
    size / MiB
  } MiB per run, ${date}, ${Deno.build.arch} ${navigator.hardwareConcurrency} cores\n`,
);
console.log("  workload                                     MB/s   ratio to wireguard-go");
for (let i = 0; i < rows.length; i += 2) {
  const base = rows[i]!, ours = rows[i + 1]!;
  console.log(`  ${base.what.padEnd(42)} ${base.mbps.toFixed(1).padStart(7)}   1.00`);
  console.log(
    `  ${ours.what.padEnd(42)} ${ours.mbps.toFixed(1).padStart(7)}   ${
      (ours.mbps / base.mbps).toFixed(2)
    }`,
  );
}
