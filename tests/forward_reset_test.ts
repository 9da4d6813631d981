/**
 * A reset from the tunnel reaches a client of `forward -L` as a reset (issue 13, must-show 1):
 * the kernel's TCP behind wireguard-go resets mid-stream, and the local python client gets
 * ECONNRESET after every byte sent before it, as it does connecting to that server directly. A
 * FIN stays end of stream. A Unix-socket forward can only end the stream: Unix sockets have no
 * reset, so its client reads end of stream and the test says so.
 */
import assert from "node:assert/strict";
import { netnsTest, run, waitForPort, withTopology } from "./_support/netns.ts";
import { PEER4, withRunWorld } from "./_support/run_world.ts";
import { spawnWrapguard, waitForLog } from "./_support/forward_world.ts";

const SERVER = new URL("./_support/rst_server.py", import.meta.url).pathname;
const CLIENT = new URL("./_support/rst_client.py", import.meta.url).pathname;

netnsTest("forward -L: a reset from the tunnel is a reset for the local client", async (t) => {
  await withTopology({ hostNamespace: true }, async (topo) => {
    await withRunWorld(topo, { dns: false }, async (w) => {
      topo.spawn(topo.peer, ["python3", SERVER, PEER4, "7001", "rst"]);
      topo.spawn(topo.peer, ["python3", SERVER, PEER4, "7002", "fin"]);
      await waitForPort(topo.peer, 7001);
      await waitForPort(topo.peer, 7002);
      const sock = `${topo.tmpDir}/rst.sock`;
      const fwd = spawnWrapguard(w, "forward", [
        "-L",
        `tcp:127.0.0.1:7101=${PEER4}:7001`,
        "-L",
        `tcp:127.0.0.1:7102=${PEER4}:7002`,
        "-L",
        `unix:${sock}=${PEER4}:7001`,
      ]);
      await waitForLog(fwd, "forward listening", 3);

      const client = async (ns: string | null, addr: string, port: string, mode: string) => {
        const r = await run(ns, ["python3", CLIENT, addr, port, mode], { timeoutMs: 30_000 });
        assert.equal(r.code, 0, r.stderr);
        return r.stdout;
      };

      await t.step("python through -L tcp: ECONNRESET after the data, as direct", async () => {
        const direct = await client(topo.peer, PEER4, "7001", "read");
        assert.equal(direct, "ConnectionResetError 104 5044\nthen 0\n");
        assert.equal(await client(w.host, "127.0.0.1", "7101", "read"), direct);
        assert.equal(await client(w.host, "127.0.0.1", "7101", "half"), direct);
      });

      await t.step("python through -L tcp: a write after the reset fails as direct", async () => {
        const direct = await client(topo.peer, PEER4, "7001", "write");
        assert.equal(direct, "send ConnectionResetError 104\nsend BrokenPipeError 32\n");
        assert.equal(await client(w.host, "127.0.0.1", "7101", "write"), direct);
      });

      await t.step("a FIN is still end of stream", async () => {
        assert.equal(await client(w.host, "127.0.0.1", "7102", "read"), "EOF 5044\nthen 0\n");
      });

      await t.step("curl through -L tcp: 'Connection reset by peer', exit 56", async () => {
        const r = await run(w.host, ["curl", "-sS", "-o", "/dev/null", "http://127.0.0.1:7101/"]);
        assert.equal(r.code, 56, r.stderr);
        assert.match(r.stderr, /Connection reset by peer/);
      });

      await t.step("-L unix: no reset exists there; the client reads end of stream", async () => {
        assert.equal(await client(w.host, sock, "unix", "read"), "EOF 5044\nthen 0\n");
      });
    });
  });
}, { requires: ["python3", "curl"], timeoutMs: 120_000 });
