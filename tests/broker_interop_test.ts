/**
 * Wrapped programs against kernel services across wireguard-go (shared/TESTING.md topology). Our
 * Tunnel and the Broker run in this test process; wireguard-go (10.77.0.1) and kernel servers in
 * the peer namespace. The wrapped programs run in a further namespace with only loopback and a
 * veth without routes: if the interposer did not capture their sockets they would fail with
 * "network unreachable" rather than leave the machine. The broker's Unix socket is a path, so it is
 * reachable from any namespace.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Broker } from "../core/host/broker/mod.ts";
import { netnsTest, run, waitForPort, withTopology } from "./_support/netns.ts";
import { withPair } from "./_support/wg_pair.ts";
import { preloadLibrary } from "./_support/fake_broker.ts";

function sha256(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

netnsTest("broker interop: curl and python reach kernel servers behind wireguard-go", async () => {
  const lib = await preloadLibrary();
  await withTopology({}, async (topo) => {
    const isolated = (await topo.addPeerNamespace()).peerNs;
    await withPair(topo, {}, async ({ tunnel }) => {
      const broker = await Broker.start(tunnel);
      try {
        const env = { ...broker.env(), LD_PRELOAD: lib };
        const blob = crypto.getRandomValues(new Uint8Array(60000));
        const big = new Uint8Array(2 << 20);
        for (let i = 0; i < big.length; i += blob.length) {
          big.set(blob.subarray(0, Math.min(blob.length, big.length - i)), i);
        }
        await Deno.writeFile(`${topo.tmpDir}/blob`, big);
        topo.spawn(topo.peer, [
          "python3",
          "-m",
          "http.server",
          "--bind",
          "10.77.0.1",
          "--directory",
          topo.tmpDir,
          "8080",
        ]);
        await waitForPort(topo.peer, 8080);

        // Without the interposer this namespace cannot reach the tunnel address at all.
        const bare = await run(isolated, [
          "curl",
          "-sS",
          "--max-time",
          "5",
          "http://10.77.0.1:8080/blob",
        ]);
        assert.equal(bare.code, 7, bare.stderr);

        const got = await run(isolated, [
          "curl",
          "-sS",
          "--max-time",
          "30",
          "http://10.77.0.1:8080/blob",
        ], { env, timeoutMs: 40_000 });
        assert.equal(got.code, 0, got.stderr);
        assert.equal(sha256(got.stdoutBytes), sha256(big));

        // The kernel refuses a closed port with RST: ECONNREFUSED, curl exit 7.
        const refused = await run(isolated, [
          "curl",
          "-v",
          "--max-time",
          "10",
          "http://10.77.0.1:8081/",
        ], { env, timeoutMs: 20_000 });
        assert.equal(refused.code, 7);
        assert.match(refused.stderr, /Connection refused/);

        // Inbound: a wrapped program listening on our tunnel address, a kernel client in the
        // peer namespace.
        const server = topo.spawn(isolated, [
          "python3",
          "-c",
          `
import socket
s = socket.socket()
s.bind(("10.77.0.2", 9000))
s.listen()
print("ready", flush=True)
c, peer = s.accept()
data = b""
while True:
    b = c.recv(65536)
    if not b:
        break
    data += b
c.sendall(data.upper())
c.close()
print("peer", peer[0], flush=True)
`,
        ], { env });
        await server.waitForOutput(/ready/, { timeoutMs: 10_000 });
        const client = await run(topo.peer, [
          "python3",
          "-c",
          `
import socket
c = socket.create_connection(("10.77.0.2", 9000), timeout=10)
c.sendall(b"from the kernel")
c.shutdown(socket.SHUT_WR)
print(c.recv(100).decode(), c.getsockname()[0])
`,
        ], { timeoutMs: 20_000 });
        assert.equal(client.code, 0, client.stderr);
        assert.equal(client.stdout.trim(), "FROM THE KERNEL 10.77.0.1");
        await server.waitForOutput(/peer 10\.77\.0\.1/, { timeoutMs: 10_000 });
      } finally {
        await broker.close();
      }
    });
  });
}, { requires: ["curl", "python3"], timeoutMs: 120_000 });
