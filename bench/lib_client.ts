/**
 * The bench's workloads written against the library API (`Tunnel` in this process): the same
 * clients as bench/load.py, so that row (c) differs from the others only in the tunnel. Run by
 * bench/main.ts inside the host namespace; prints one JSON line.
 *
 *   deno run -A bench/lib_client.ts CONFIG pingpong HOST PORT N
 *   deno run -A bench/lib_client.ts CONFIG connrate HOST PORT SECONDS
 *   deno run -A bench/lib_client.ts CONFIG udpblast HOST PORT SIZE SECONDS
 *   deno run -A bench/lib_client.ts CONFIG hold HOST PORT N SECONDS
 *   deno run -A bench/lib_client.ts CONFIG firstbyte HOST PORT
 *   deno run -A bench/lib_client.ts CONFIG bulk HOST PORT up|down STREAMS SECONDS
 *
 * @module
 */
import { Tunnel } from "../core/host/tunnel/mod.ts";
import { parseIP } from "../core/wire/addr.ts";
import type { TunnelConn } from "../core/host/tunnel/tcp.ts";
import { nobleAead, setAeadBackend } from "../core/wireguard/crypto.ts";

const [config, mode, host, portText, ...rest] = Deno.args;
if (!config || !mode || !host || !portText) {
  console.error("usage: lib_client.ts CONFIG MODE HOST PORT ...");
  Deno.exit(2);
}
const port = Number(portText);
// BENCH_AEAD=noble measures the reference AEAD, for before/after ratios (docs/performance.md).
if (Deno.env.get("BENCH_AEAD") === "noble") setAeadBackend(nobleAead);
const tunnel = await Tunnel.fromFile(config);
const x = new Uint8Array([0x78]);
const one = new Uint8Array(1);

async function readOne(c: TunnelConn): Promise<void> {
  if ((await c.read(one)) === null) throw new Error("closed");
}

function dial(): Promise<TunnelConn> {
  return tunnel.connect({ hostname: host!, port, noDelay: true });
}

function print(v: unknown): void {
  console.log(JSON.stringify(v));
}

async function pingpong(n: number): Promise<void> {
  const c = await dial();
  const samples: number[] = [];
  for (let i = 0; i < n + Math.floor(n / 10); i++) {
    const t = performance.now();
    await c.write(x);
    await readOne(c);
    if (i >= Math.floor(n / 10)) samples.push(performance.now() - t);
  }
  c.close();
  samples.sort((a, b) => a - b);
  print({
    p50: samples[samples.length >> 1],
    p99: samples[Math.min(samples.length - 1, Math.floor(samples.length * 0.99))],
    n: samples.length,
  });
}

async function connrate(seconds: number): Promise<void> {
  const start = performance.now(), end = start + seconds * 1000;
  let n = 0;
  while (performance.now() < end) {
    const c = await dial();
    await c.write(x);
    await readOne(c);
    c.close();
    n++;
  }
  print({ perSecond: n / ((performance.now() - start) / 1000), n });
}

async function udpblast(size: number, seconds: number): Promise<void> {
  const sock = tunnel.stack.udp.bind({});
  const dst = parseIP(host!)!;
  // The first datagram may wait for the handshake: send one and let it complete.
  sock.send(dst, port, new Uint8Array(size));
  tunnel.poke();
  while ([...tunnel.device.peers][0]?.keypairs.current === undefined) {
    await new Promise((r) => setTimeout(r, 5));
  }
  let n = 1;
  const start = performance.now(), end = start + seconds * 1000;
  while (performance.now() < end) {
    // Keep the UDP socket's queue short, as a kernel socket's buffer would. The batched helper
    // hands each batch to the kernel at once (its queue never fills), so also at most 256 per turn.
    for (let k = 0; k < 256 && tunnel.udp.queued < 256; k++) {
      sock.send(dst, port, new Uint8Array(size));
      n++;
    }
    tunnel.poke();
    await new Promise((r) => setTimeout(r, 0));
  }
  print({ sent: n, seconds: (performance.now() - start) / 1000 });
}

async function hold(n: number, seconds: number): Promise<void> {
  const conns: TunnelConn[] = [];
  for (let i = 0; i < n; i++) {
    const c = await dial();
    await c.write(x);
    await readOne(c);
    conns.push(c);
  }
  print({ held: conns.length });
  await new Promise((r) => setTimeout(r, seconds * 1000));
  for (const c of conns) c.close();
}

async function firstbyte(): Promise<void> {
  const c = await dial();
  await readOne(c);
  print({ at: Date.now() });
  c.close();
}

async function bulk(direction: string, streams: number, seconds: number): Promise<void> {
  const block = new Uint8Array(1 << 17).fill(0xa5);
  const start = performance.now(), end = start + seconds * 1000;
  const one = async (): Promise<number> => {
    const c = await dial();
    await c.writeAll(new TextEncoder().encode(direction === "up" ? "U" : "D"));
    if (direction === "up") {
      while (performance.now() < end) await c.writeAll(block);
      await c.closeWrite();
      const reply = new Uint8Array(8);
      let got = 0;
      while (got < 8) {
        const r = await c.read(reply.subarray(got));
        if (r === null) throw new Error("no byte count from the server");
        got += r;
      }
      c.close();
      return Number(new DataView(reply.buffer).getBigUint64(0));
    }
    let n = 0;
    while (performance.now() < end) {
      const chunk = await c.readChunk();
      if (chunk === null) break;
      n += chunk.length;
    }
    c.abort();
    return n;
  };
  const counts = await Promise.all(Array.from({ length: streams }, one));
  const secs = (performance.now() - start) / 1000;
  print({ bytes: counts.reduce((a, b) => a + b, 0), seconds: secs });
}

// Killed as the bench kills every client (SIGTERM): close the tunnel, so that its connections are
// reset at the peer, as the kernel does for (a) and `run` does for (b), instead of left half-open
// for the next client on the same address to collide with.
Deno.addSignalListener("SIGTERM", () => {
  tunnel.close();
  Deno.exit(143);
});

try {
  const num = rest.map(Number);
  switch (mode) {
    case "pingpong":
      await pingpong(num[0]!);
      break;
    case "connrate":
      await connrate(num[0]!);
      break;
    case "udpblast":
      await udpblast(num[0]!, num[1]!);
      break;
    case "hold":
      await hold(num[0]!, num[1]!);
      break;
    case "firstbyte":
      await firstbyte();
      break;
    case "bulk":
      await bulk(rest[0]!, num[1]!, num[2]!);
      break;
    default:
      throw new TypeError(`unknown mode ${mode}`);
  }
} finally {
  tunnel.close();
}
// node:dgram closes asynchronously; exit rather than wait for every handle.
Deno.exit(0);
