// Our engine and IP layer against wireguard-go in a namespace (shared/TESTING.md). The tunnel runs
// in this test process in the root namespace and talks UDP over a veth to the peer namespace; all
// traffic stays on that veth. Tunnel addresses: wireguard-go 10.77.0.1 / fd77::1, us .2 / ::2.
import assert from "node:assert/strict";
import { genPsk, ping, waitForPort, withTopology } from "./_support/netns.ts";
import { PAIR_MTU, withPair } from "./_support/wg_pair.ts";
import { netnsTest } from "./_support/netns.ts";
import type { Tunnel } from "../core/host/tunnel/mod.ts";
import { parseIP } from "../core/wire/addr.ts";

const echoScript = new URL("./_support/udp_echo.py", import.meta.url).pathname;
const MTU = PAIR_MTU;

netnsTest("wireguard-go: we initiate the handshake; ping both families 20/20", async () => {
  await withTopology({}, async (topo) => {
    await withPair(topo, {}, async ({ wg, tunnel, ourPublic }) => {
      const peer = [...tunnel.device.peers][0]!;
      tunnel.device.initiate(tunnel.now(), peer);
      tunnel.poke();
      const state = await wg.waitForHandshake(ourPublic);
      assert.ok(state.latestHandshake > 0);
      assert.equal(peer.stats.handshakesCompleted, 1);
      for (const dest of ["10.77.0.2", "fd77::2"]) {
        const r = await ping(topo.peer, dest, { count: 20, intervalSec: 0.05, timeoutSec: 2 });
        assert.equal(r.received, 20, r.output);
      }
    });
  });
});

netnsTest("wireguard-go initiates: its first ping completes a handshake with us", async () => {
  await withTopology({}, async (topo) => {
    await withPair(topo, {}, async ({ tunnel, wg, ourPublic }) => {
      const peer = [...tunnel.device.peers][0]!;
      assert.equal(peer.stats.handshakesCompleted, 0);
      const r = await ping(topo.peer, "10.77.0.2", { count: 3, intervalSec: 0.2, timeoutSec: 2 });
      assert.equal(r.received, 3, r.output);
      assert.equal(peer.stats.handshakesCompleted, 1);
      // We were the responder: we never sent an initiation of our own.
      assert.equal(peer.lastInitiationSentAt, -Infinity);
      assert.ok((await wg.peer(ourPublic)).latestHandshake > 0);
    });
  });
});

/** Sends `count` datagrams of sizes 1..max through our stack to `dst` and checks each echo. */
async function echoFromUs(tunnel: Tunnel, dst: string, port: number, count: number, max: number) {
  const sock = tunnel.stack.udp.bind({});
  const dstAddr = parseIP(dst)!;
  try {
    let pending: { resolve: (d: Uint8Array) => void } | undefined;
    sock.onDatagram = (data) => pending?.resolve(data.slice());
    for (let i = 0; i < count; i++) {
      const size = i === count - 1 ? max : 1 + ((i * 7919) % max);
      const payload = new Uint8Array(size);
      for (let j = 0; j < size; j++) payload[j] = (i * 131 + j * 7) & 0xff;
      let got: Uint8Array | undefined;
      for (let attempt = 0; attempt < 3 && !got; attempt++) {
        const reply = new Promise<Uint8Array>((resolve) => pending = { resolve });
        sock.send(dstAddr, port, payload);
        tunnel.poke();
        let timer: ReturnType<typeof setTimeout> | undefined;
        got = await Promise.race([
          reply,
          new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), 2000)),
        ]);
        clearTimeout(timer);
      }
      assert.ok(got, `no echo for datagram ${i} (${size} bytes) to ${dst}`);
      assert.deepEqual(got, payload, `datagram ${i} (${size} bytes) came back different`);
    }
  } finally {
    sock.close();
  }
}

netnsTest(
  "UDP: 1000 datagrams of 1 byte to the MTU limit echo intact, both ways, both families",
  async (t) => {
    await withTopology({}, async (topo) => {
      await withPair(topo, {}, async ({ tunnel }) => {
        const server4 = topo.spawn(topo.peer, [
          "python3",
          echoScript,
          "server",
          "10.77.0.1",
          "7000",
        ]);
        const server6 = topo.spawn(topo.peer, ["python3", echoScript, "server", "fd77::1", "7000"]);
        await waitForPort(topo.peer, 7000, "udp");
        await server4.waitForOutput(/listening/);
        await server6.waitForOutput(/listening/);

        await t.step("from us to a kernel UDP echo server, IPv4", async () => {
          await echoFromUs(tunnel, "10.77.0.1", 7000, 1000, MTU - 28);
        });
        await t.step("from us to a kernel UDP echo server, IPv6", async () => {
          await echoFromUs(tunnel, "fd77::1", 7000, 1000, MTU - 48);
        });

        // Our echo server on the tunnel address; kernel clients in the peer namespace.
        const echo = tunnel.stack.udp.bind({ port: 7001 });
        echo.onDatagram = (data, src, srcPort) => {
          echo.send(src, srcPort, data.slice());
          tunnel.poke();
        };
        try {
          for (const [dst, max] of [["10.77.0.2", MTU - 28], ["fd77::2", MTU - 48]] as const) {
            await t.step(`from a kernel client to our UDP echo server, ${dst}`, async () => {
              const r = await topo.run(
                topo.peer,
                ["python3", echoScript, "client", dst, "7001", "1000", String(max)],
                { timeoutMs: 60_000 },
              );
              assert.equal(r.stdout.trim(), "ok 1000", r.stdout + r.stderr);
            });
          }
        } finally {
          echo.close();
        }
      });
    });
  },
  { requires: ["python3"], timeoutMs: 120_000 },
);

netnsTest("preshared keys: equal on both sides work, mismatched pass nothing", async (t) => {
  const psk = await genPsk();
  await t.step("equal", async () => {
    await withTopology({}, async (topo) => {
      await withPair(topo, { ourPsk: psk, theirPsk: psk }, async () => {
        const r = await ping(topo.peer, "10.77.0.2", { count: 3, intervalSec: 0.2, timeoutSec: 2 });
        assert.equal(r.received, 3, r.output);
      });
    });
  });
  await t.step("mismatched", async () => {
    const other = await genPsk();
    await withTopology({}, async (topo) => {
      await withPair(topo, { ourPsk: psk, theirPsk: other }, async ({ tunnel, wg, ourPublic }) => {
        const r = await ping(topo.peer, "10.77.0.2", { count: 3, intervalSec: 0.2, timeoutSec: 1 });
        assert.equal(r.received, 0, r.output);
        const peer = [...tunnel.device.peers][0]!;
        assert.equal(peer.stats.handshakesCompleted, 0);
        assert.equal((await wg.peer(ourPublic)).latestHandshake, 0);
        // Our side answered their initiation (it cannot tell), and they refused the answer:
        // nothing they sent after it was accepted as data.
        assert.equal(tunnel.device.stats.packetsReceived, 0);
      });
    });
  });
});
