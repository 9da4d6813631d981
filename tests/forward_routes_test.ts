/**
 * `wrapguard proxy` and `wrapguard forward` take `--exit-node` and `--route` as `run` does, and
 * `wrapguard show` lists them. With two wireguard-go peers that both serve the same far address
 * and answer with their own name (tests/_support/routes_world.ts), the answer tells which peer
 * the connection went to.
 */
import assert from "node:assert/strict";
import { netnsTest, run, sleep, type Spawned, withTopology } from "./_support/netns.ts";
import { HOST_ENV, waitForLog, wrapguardArgv } from "./_support/forward_world.ts";
import { FAR4, withRoutesWorld } from "./_support/routes_world.ts";
import type { StatusRecord } from "../core/host/status.ts";

netnsTest(
  "proxy and forward: --exit-node and --route pick the peer; show lists the forward",
  async (t) => {
    await withTopology({ hostNamespace: true }, async (topo) => {
      await withRoutesWorld(topo, async (w) => {
        const xdg = `${topo.tmpDir}/xdg`;
        await Deno.mkdir(xdg, { mode: 0o700 });
        const env = { ...HOST_ENV, XDG_RUNTIME_DIR: xdg };
        const start = (cmd: "forward" | "proxy", args: string[]): Spawned =>
          topo.spawn(w.host, wrapguardArgv([cmd, "--config", w.configPath, ...args]), { env });

        for (const [via, name] of [["10.77.0.1", "A"], ["10.88.0.1", "B"]]) {
          await t.step(`proxy --http --exit-node ${via} answers ${name}`, async () => {
            const proxy = start("proxy", ["--http", "0", "--exit-node", via!]);
            try {
              const [line] = await waitForLog(proxy, "proxy listening");
              const port = Number(String(line!.address).split(":").pop());
              // The service only says its name and closes, so the client is a raw HTTP CONNECT
              // (socat's PROXY address) that prints whatever comes after the proxy's 200.
              const r = await topo.run(w.host, [
                "socat",
                "-u",
                `PROXY:127.0.0.1:${FAR4}:8080,proxyport=${port}`,
                "-",
              ], { timeoutMs: 15_000 });
              assert.equal(r.code, 0, r.stderr + proxy.stderrText().slice(-2000));
              assert.equal(r.stdout, `${name}\n`);
            } finally {
              await proxy.kill();
            }
          });
        }

        await t.step("forward -L --route answers B; show --json lists it", async () => {
          const port = 20000 + Math.floor(Math.random() * 20000);
          const fwd = start("forward", [
            "-L",
            `tcp:127.0.0.1:${port}=${FAR4}:8080`,
            "--route",
            "198.51.100.0/24:10.88.0.1",
          ]);
          try {
            await waitForLog(fwd, "forward listening");
            const r = await topo.run(w.host, [
              "socat",
              "-u",
              `TCP:127.0.0.1:${port},connect-timeout=5`,
              "STDOUT",
            ], { timeoutMs: 15_000 });
            assert.equal(r.code, 0, r.stderr + fwd.stderrText().slice(-2000));
            assert.equal(r.stdout, "B\n");

            let records: StatusRecord[] = [];
            const deadline = Date.now() + 10_000;
            while (Date.now() < deadline) {
              const s = await run(w.host, wrapguardArgv(["show", "--json"]), {
                env,
                timeoutMs: 15_000,
              });
              assert.equal(s.code, 0, s.stderr);
              records = JSON.parse(s.stdout);
              if (records.length > 0) break;
              await sleep(200);
            }
            assert.equal(records.length, 1, JSON.stringify(records));
            const rec = records[0]!;
            assert.equal(rec.kind, "forward");
            assert.equal(rec.interface, "routes");
            assert.equal(rec.config, w.configPath);
            assert.match(rec.command ?? "", /-L tcp:127\.0\.0\.1:\d+=198\.51\.100\.7:8080/);
            assert.deepEqual(rec.routes?.[w.b.publicKey], [
              "172.20.0.0/16 tcp 8081",
              "198.51.100.0/24",
            ]);
            assert.deepEqual(rec.peers.map((p) => p.publicKey), [w.a.publicKey, w.b.publicKey]);
          } finally {
            await fwd.kill();
          }
          // Stopped cleanly: its status socket is gone.
          assert.deepEqual([...Deno.readDirSync(`${xdg}/wrapguard`)].map((e) => e.name), []);
        });
      });
    });
  },
  { requires: ["socat", "curl"], timeoutMs: 60_000 },
);
