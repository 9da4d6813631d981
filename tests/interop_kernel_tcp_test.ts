// Our TCP against the Linux kernel's TCP, across wireguard-go in a namespace. The kernel side is
// tests/_support/tcp_peer.py; our side is the library API of a Tunnel in this process.
import assert from "node:assert/strict";
import { concat, randomBytes, sha256 } from "./_support/bytes.ts";
import { netnsTest, type Topology, withTopology } from "./_support/netns.ts";
import { withPair } from "./_support/wg_pair.ts";
import type { TunnelConn } from "../core/host/tunnel/tcp.ts";
import type { Tunnel } from "../core/host/tunnel/mod.ts";
import { TIME_WAIT_DURATION } from "../core/netstack/tcp/constants.ts";

const peerScript = new URL("./_support/tcp_peer.py", import.meta.url).pathname;
const MiB = 1 << 20;

/**
 * Collects what a connection received and hashes it at the end. WebCrypto has no incremental
 * digest, so the bytes are kept, with a cap so that a runaway transfer fails loudly.
 */
class StreamHash {
  #chunks: Uint8Array[] = [];
  bytes = 0;
  constructor(readonly limit = 128 * MiB) {}
  update(chunk: Uint8Array): void {
    this.#chunks.push(chunk);
    this.bytes += chunk.length;
    if (this.bytes > this.limit) throw new RangeError("StreamHash over its limit");
  }
  digest(): Promise<string> {
    return sha256(concat(this.#chunks));
  }
}

/** Sends `data` and reads to end of stream at the same time, like the kernel side does. */
async function exchange(conn: TunnelConn, data: Uint8Array): Promise<StreamHash> {
  const received = new StreamHash();
  const reading = (async () => {
    for (;;) {
      const chunk = await conn.readChunk();
      if (chunk === null) break;
      received.update(chunk);
    }
  })();
  await conn.writeAll(data);
  await conn.closeWrite();
  await reading;
  conn.close();
  return received;
}

async function kernel(topo: Topology, args: string[]) {
  const proc = topo.spawn(topo.peer, ["python3", peerScript, ...args]);
  if (args[0] !== "client") await proc.waitForOutput(/listening/, { timeoutMs: 5000 });
  return {
    proc,
    async result(): Promise<Record<string, string | number | boolean>> {
      const r = await proc.wait(300_000);
      const lines = r.stdout.trim().split("\n");
      return JSON.parse(lines[lines.length - 1]!);
    },
  };
}

for (const family of [4, 6] as const) {
  const peerAddr = family === 4 ? "10.77.0.1" : "fd77::1";
  const ourAddr = family === 4 ? "10.77.0.2" : "fd77::2";

  netnsTest(`IPv${family}: 100 MiB each way, our connect to a kernel listener`, async () => {
    await withTopology({}, (topo) =>
      withPair(topo, {}, async ({ tunnel }) => {
        const k = await kernel(topo, ["server", peerAddr, "5001", String(100 * MiB)]);
        const data = randomBytes(100 * MiB);
        const conn = await tunnel.connect({ hostname: peerAddr, port: 5001 });
        const received = await exchange(conn, data);
        const r = await k.result();
        assert.equal(r.received, await sha256(data));
        assert.equal(received.bytes, 100 * MiB);
        assert.equal(await received.digest(), r.sent);
        assert.equal(r.peer, ourAddr);
      }));
  }, { requires: ["python3"], timeoutMs: 300_000 });

  netnsTest(`IPv${family}: 100 MiB each way, a kernel connect to our listener`, async () => {
    await withTopology({}, (topo) =>
      withPair(topo, {}, async ({ tunnel }) => {
        const listener = tunnel.listen({ port: 5002 });
        const k = await kernel(topo, ["client", ourAddr, "5002", String(100 * MiB)]);
        const conn = await listener.accept();
        assert.equal(conn.remoteAddr.hostname, peerAddr);
        const data = randomBytes(100 * MiB);
        const received = await exchange(conn, data);
        const r = await k.result();
        assert.equal(r.received, await sha256(data));
        assert.equal(await received.digest(), r.sent);
        listener.close();
      }));
  }, { requires: ["python3"], timeoutMs: 300_000 });
}

netnsTest("200 concurrent connections each echo 1 MiB intact", async () => {
  await withTopology({}, (topo) =>
    withPair(topo, {}, async ({ tunnel }) => {
      await kernel(topo, ["echo", "10.77.0.1", "5003"]);
      const results = await Promise.all(Array.from({ length: 200 }, async () => {
        const data = randomBytes(MiB);
        const conn = await tunnel.connect({ hostname: "10.77.0.1", port: 5003 });
        const received = await exchange(conn, data);
        return (await received.digest()) === await sha256(data);
      }));
      assert.equal(results.filter(Boolean).length, 200);
    }));
  // Minutes, not seconds: Deno keeps the tunnel's UDP receive buffer at the kernel default, so
  // 200 flows at once overflow it and TCP recovers the losses with retransmission timeouts.
}, { requires: ["python3"], timeoutMs: 600_000 });

netnsTest("1000 sequential short connections leave the table empty after TIME-WAIT", async () => {
  await withTopology({}, (topo) =>
    withPair(topo, {}, async ({ tunnel }) => {
      await kernel(topo, ["echo", "10.77.0.1", "5004"]);
      const ping = new TextEncoder().encode("ping");
      for (let i = 0; i < 1000; i++) {
        const conn = await tunnel.connect({ hostname: "10.77.0.1", port: 5004 });
        const got = await exchange(conn, ping);
        assert.equal(got.bytes, 4);
      }
      // We closed first on some and the kernel on others: what remains is TIME-WAIT and closing.
      assert.ok(tunnel.tcp.connectionCount <= 1000);
      // The stack is pure: hand it the time at which every TIME-WAIT has expired.
      tunnel.tcp.tick(tunnel.now() + TIME_WAIT_DURATION + 1000);
      assert.equal(tunnel.tcp.connectionCount, 0);
    }));
}, { requires: ["python3"], timeoutMs: 300_000 });

netnsTest("half-close: the kernel shuts down writing first, we keep sending", async () => {
  await withTopology({}, (topo) =>
    withPair(topo, {}, async ({ tunnel }) => {
      const k = await kernel(topo, ["halfclose", "10.77.0.1", "5005"]);
      const conn = await tunnel.connect({ hostname: "10.77.0.1", port: 5005 });
      // End of stream arrives first...
      assert.equal(await conn.readChunk(), null);
      // ...and our direction still works: 4 MiB after their FIN.
      const data = randomBytes(4 * MiB);
      await conn.writeAll(data);
      await conn.closeWrite();
      const r = await k.result();
      assert.equal(r.received, await sha256(data));
      conn.close();
    }));
}, { requires: ["python3"] });

netnsTest("a kernel RST mid-transfer surfaces as a connection reset", async () => {
  await withTopology({}, (topo) =>
    withPair(topo, {}, async ({ tunnel }) => {
      await kernel(topo, ["rst", "10.77.0.1", "5006", String(64 * 1024)]);
      const conn = await tunnel.connect({ hostname: "10.77.0.1", port: 5006 });
      await assert.rejects(
        (async () => {
          // Keep writing: the reset must reach the writer too, not only the reader.
          for (;;) await conn.write(randomBytes(64 * 1024));
        })(),
        (e: Error) =>
          e instanceof Deno.errors.ConnectionReset || e instanceof Deno.errors.BrokenPipe,
      );
      assert.equal(conn.tcp.error?.code, "ECONNRESET");
    }));
}, { requires: ["python3"] });

netnsTest("a closed port is refused; an unreachable host times out in bounded time", async () => {
  await withTopology(
    {},
    (topo) =>
      withPair(topo, { tunnel: { tcp: { synRetries: 2 } } }, async ({ tunnel }) => {
        await assert.rejects(
          tunnel.connect({ hostname: "10.77.0.1", port: 5999 }),
          (e: Error) => e instanceof Deno.errors.ConnectionRefused,
        );
        // 10.77.0.99 is inside the tunnel's AllowedIPs, but nothing answers there.
        const start = performance.now();
        await assert.rejects(
          tunnel.connect({ hostname: "10.77.0.99", port: 80 }),
          (e: Error) => e instanceof Deno.errors.TimedOut,
        );
        // Two SYN retries: 1 + 2 + 4 s of backoff, with margin.
        const took = performance.now() - start;
        assert.ok(took >= 6000 && took < 12_000, `timed out after ${took} ms`);
      }),
  );
}, { requires: ["python3"], timeoutMs: 60_000 });

netnsTest(
  "a reader that stops for 10 s: the window closes, memory stays bounded, then resumes",
  async () => {
    await withTopology({}, (topo) =>
      withPair(topo, {}, async ({ tunnel }: { tunnel: Tunnel }) => {
        const k = await kernel(topo, ["flood", "10.77.0.1", "5007", String(32 * MiB)]);
        const conn = await tunnel.connect({ hostname: "10.77.0.1", port: 5007 });
        // Read nothing for 10 s while the kernel keeps trying to send.
        const samples: number[] = [];
        for (let i = 0; i < 10; i++) {
          await new Promise((r) => setTimeout(r, 1000));
          samples.push(conn.tcp.readableLength);
        }
        const rcvBuf = 256 * 1024; // the default receive buffer (DEFAULT_BUFFER_SIZE)
        assert.ok(samples.every((n) => n <= rcvBuf), `buffered: ${samples.join(", ")}`);
        // The window closed: nothing more arrived over the last several seconds.
        assert.equal(samples[9], samples[4]);
        assert.ok(samples[9]! > 0);
        // Resume and get every byte.
        const received = new StreamHash();
        for (;;) {
          const chunk = await conn.readChunk();
          if (chunk === null) break;
          received.update(chunk);
        }
        conn.close();
        const r = await k.result();
        assert.equal(received.bytes, 32 * MiB);
        assert.equal(await received.digest(), r.sent);
      }));
  },
  { requires: ["python3"], timeoutMs: 120_000 },
);
