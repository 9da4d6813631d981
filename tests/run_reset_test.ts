/**
 * A peer's TCP reset reaches a wrapped program as ECONNRESET, as from a kernel socket (issue 13,
 * must-show 1), and a FIN still as end of stream. The server is the kernel's TCP behind
 * wireguard-go; the clients are curl and python under `wrapguard run`. Each python case is also
 * run without wrapguard, in the peer's namespace against the same server, and must print the
 * same: that is what "as on Linux" means here.
 */
import assert from "node:assert/strict";
import { netnsTest, run, waitForPort, withTopology } from "./_support/netns.ts";
import { PEER4, PEER6, type RunWorld, withRunWorld } from "./_support/run_world.ts";

const SERVER = new URL("./_support/rst_server.py", import.meta.url).pathname;

const CLIENT = new URL("./_support/rst_client.py", import.meta.url).pathname;

netnsTest("wrapguard run: a peer's reset is ECONNRESET, a FIN end of stream", async (t) => {
  await withTopology({ hostNamespace: true }, async (topo) => {
    await withRunWorld(topo, { dns: false }, async (w: RunWorld) => {
      topo.spawn(topo.peer, ["python3", SERVER, PEER4, "7001", "rst"]);
      topo.spawn(topo.peer, ["python3", SERVER, PEER6, "7001", "rst"]);
      topo.spawn(topo.peer, ["python3", SERVER, PEER4, "7002", "fin"]);
      await waitForPort(topo.peer, 7001);
      await waitForPort(topo.peer, 7002);

      /** The client's output wrapped, after checking it equals the kernel's own. */
      const both = async (host: string, port: number, mode: string): Promise<string> => {
        const argv = ["python3", CLIENT, host, String(port), mode];
        const wrapped = await w.wrap(argv);
        assert.equal(wrapped.code, 0, wrapped.stderr);
        const kernel = await run(topo.peer, argv);
        assert.equal(kernel.code, 0, kernel.stderr);
        assert.equal(wrapped.stdout, kernel.stdout, `wrapped differs from the kernel's own`);
        return wrapped.stdout;
      };

      await t.step("python: ConnectionResetError after the data, then end of stream", async () => {
        for (const host of [PEER4, PEER6]) {
          const out = await both(host, 7001, "read");
          // Every byte sent before the reset arrived (the header and 5000 of body).
          assert.match(out, /^ConnectionResetError 104 5044\nthen 0\n$/, out);
        }
      });

      await t.step("python: a write after the reset is ECONNRESET, then EPIPE", async () => {
        const out = await both(PEER4, 7001, "write");
        assert.equal(out, "send ConnectionResetError 104\nsend BrokenPipeError 32\n");
      });

      await t.step("python: a FIN is end of stream, not a reset", async () => {
        assert.equal(await both(PEER4, 7002, "read"), "EOF 5044\nthen 0\n");
        assert.equal(await both(PEER4, 7002, "half"), "EOF 5044\nthen 0\n");
      });

      await t.step("curl: 'Connection reset by peer', exit 56", async () => {
        const r = await w.wrap(["curl", "-sS", "-o", "/dev/null", `http://${PEER4}:7001/`]);
        assert.equal(r.code, 56, r.stderr);
        assert.match(r.stderr, /Connection reset by peer/);
        // Control: the same short body closed with a FIN is curl's "transfer closed" (18).
        const fin = await w.wrap(["curl", "-sS", "-o", "/dev/null", `http://${PEER4}:7002/`]);
        assert.equal(fin.code, 18, fin.stderr);
      });
    });
  });
}, { requires: ["python3", "curl"], timeoutMs: 120_000 });
