/**
 * `wrapguard run` end to end (issue 4, must-shows 1, 2, 3 and 5): the wrapguard host process runs
 * inside a namespace with no default route (`ip netns exec <host> deno run … cli/main.ts run …`),
 * wireguard-go and kernel servers in the peer namespace. A program the interposer did not
 * capture can reach nothing there but its own veth; everything that works below went through
 * the tunnel.
 */
import assert from "node:assert/strict";
import { netnsTest, run, waitForPort, withTopology } from "./_support/netns.ts";
import {
  OURS4,
  PEER4,
  PEER6,
  type RunWorld,
  sha256,
  SVC_NAME,
  withRunWorld,
  writeBlob,
} from "./_support/run_world.ts";

const BLOB_SIZE = 50 << 20;
const SMALL = "small file through the tunnel\n";

/** Polls `url` from the peer namespace until it answers (a wrapped server is starting). */
async function untilServing(w: RunWorld, url: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const r = await run(w.topo.peer, ["curl", "-sS", "--max-time", "2", "-o", "/dev/null", url]);
    if (r.code === 0) return;
    if (Date.now() > deadline) throw new Error(`${url} never answered: ${r.stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

netnsTest(
  "wrapguard run: real programs through wireguard-go, from a namespace without routes",
  async (t) => {
    await withTopology({ hostNamespace: true }, async (topo) => {
      await withRunWorld(topo, {}, async (w) => {
        const www = `${topo.tmpDir}/www`;
        await Deno.mkdir(www);
        const blob = await writeBlob(`${www}/blob`, BLOB_SIZE);
        const blobSum = await sha256(blob);
        await Deno.writeTextFile(`${www}/small`, SMALL);
        // Dual stack: "::" takes IPv4 too (python's DualStackServer).
        topo.spawn(topo.peer, [
          "python3",
          "-m",
          "http.server",
          "--bind",
          "::",
          "--directory",
          www,
          "8080",
        ]);
        await waitForPort(topo.peer, 8080);

        await t.step(
          "without the wrapper the tunnel is unreachable from this namespace",
          async () => {
            const bare = await run(w.host, [
              "curl",
              "-sS",
              "--max-time",
              "5",
              `http://${PEER4}:8080/`,
            ]);
            assert.equal(bare.code, 7, bare.stderr);
            assert.match(bare.stderr, /Network is unreachable|Couldn't connect/);
          },
        );

        await t.step("curl fetches 50 MiB over IPv4 and IPv6, SHA-256 intact", async () => {
          for (
            const [label, url] of [["v4", `http://${PEER4}:8080/blob`], [
              "v6",
              `http://[${PEER6}]:8080/blob`,
            ]]
          ) {
            const out = `${topo.tmpDir}/got-${label}`;
            const r = await w.wrap(["curl", "-sS", "--max-time", "60", "-o", out, url!], {
              timeoutMs: 70_000,
            });
            assert.equal(r.code, 0, `${label}: ${r.stderr}`);
            const got = await Deno.readFile(out);
            assert.equal(got.length, BLOB_SIZE, label);
            assert.equal(await sha256(got), blobSum, label);
            await Deno.remove(out);
          }
        });

        await t.step("curl reaches a name served by dnsmasq behind the tunnel", async () => {
          const r = await w.wrap([
            "curl",
            "-sS",
            "--max-time",
            "10",
            `http://${SVC_NAME}:8080/small`,
          ]);
          assert.equal(r.code, 0, r.stderr);
          assert.equal(r.stdout, SMALL);
          // The query reached dnsmasq from our tunnel address: it crossed the tunnel.
          assert.ok(
            w.dns!.queries().some((q) => q.name === SVC_NAME && q.from === OURS4),
            w.dns!.log(),
          );
          // The search domain from "DNS = 10.77.0.1, wg.test" applies too.
          const short = await w.wrap(["curl", "-sS", "--max-time", "10", "http://svc:8080/small"]);
          assert.equal(short.code, 0, short.stderr);
          assert.equal(short.stdout, SMALL);
        });

        await t.step(
          "a wrapped python http.server is fetched from the peer, and logs its address",
          async () => {
            await Deno.writeTextFile(`${topo.tmpDir}/served`, "served by a wrapped python\n");
            const server = w.spawnWrapped([
              "python3",
              "-u",
              "-m",
              "http.server",
              "--bind",
              OURS4,
              "--directory",
              topo.tmpDir,
              "8000",
            ]);
            await untilServing(w, `http://${OURS4}:8000/served`);
            const r = await run(topo.peer, [
              "curl",
              "-sS",
              "--max-time",
              "10",
              `http://${OURS4}:8000/served`,
            ]);
            assert.equal(r.code, 0, r.stderr);
            assert.equal(r.stdout, "served by a wrapped python\n");
            // http.server logs "<client address> - - [date] "GET /served HTTP/1.1" 200 -".
            await server.waitForOutput(
              new RegExp(`^${PEER4.replaceAll(".", "\\.")} - - .*GET /served`, "m"),
              {
                stream: "stderr",
                timeoutMs: 5000,
              },
            );
            await server.kill("SIGTERM");
          },
        );

        await t.step(
          "a wrapped socat TCP-LISTEN bound to the tunnel address is reached from the peer",
          async () => {
            const server = w.spawnWrapped([
              "socat",
              `TCP-LISTEN:5999,bind=${OURS4},reuseaddr,fork`,
              "EXEC:/usr/bin/rev",
            ]);
            const deadline = Date.now() + 15_000;
            let r;
            for (;;) {
              r = await run(topo.peer, ["socat", "-t", "2", "-", `TCP:${OURS4}:5999`], {
                stdin: "hello socat\n",
              });
              if (r.code === 0 && r.stdout !== "") break;
              if (Date.now() > deadline) break;
              await new Promise((res) => setTimeout(res, 100));
            }
            assert.equal(r.code, 0, r.stderr);
            assert.equal(r.stdout, "tacos olleh\n");
            await server.kill("SIGTERM");
          },
        );

        await t.step(
          "wrapped node: an http server reached from the peer, an http client by name",
          async () => {
            const server = w.spawnWrapped([
              "node",
              "-e",
              `require("http").createServer((q, s) => s.end("node saw " + q.socket.remoteAddress))` +
              `.listen(7000, "${OURS4}", () => console.log("ready"))`,
            ]);
            await server.waitForOutput("ready", { timeoutMs: 15_000 });
            const r = await run(topo.peer, [
              "curl",
              "-sS",
              "--max-time",
              "10",
              `http://${OURS4}:7000/`,
            ]);
            assert.equal(r.code, 0, r.stderr);
            assert.equal(r.stdout, `node saw ${PEER4}`);
            await server.kill("SIGTERM");

            const client = await w.wrap([
              "node",
              "-e",
              `require("http").get("http://${SVC_NAME}:8080/small", (r) => {` +
              `let d = ""; r.on("data", (c) => d += c);` +
              `r.on("end", () => console.log(r.statusCode, r.socket.localAddress, JSON.stringify(d)));` +
              `}).on("error", (e) => { console.error(e); process.exit(1); });`,
            ]);
            assert.equal(client.code, 0, client.stderr);
            assert.equal(client.stdout.trim(), `200 ${OURS4} ${JSON.stringify(SMALL)}`);
          },
        );

        await t.step(
          "a wrapped python asyncio client, and threads resolving and fetching at once",
          async () => {
            const r = await w.wrap([
              "python3",
              "-c",
              `
import asyncio, concurrent.futures, socket, urllib.request
async def main():
    r, w = await asyncio.open_connection("${SVC_NAME}", 8080, family=socket.AF_INET)
    w.write(b"GET /small HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
    await w.drain()
    data = await r.read()
    print(w.get_extra_info("sockname")[0], w.get_extra_info("peername"))
    print(data.split(b"\\r\\n\\r\\n", 1)[1].decode(), end="")
    w.close()
asyncio.run(main())
def fetch(i):
    host = "${SVC_NAME}" if i % 2 else "[${PEER6}]"
    return urllib.request.urlopen(f"http://{host}:8080/small", timeout=10).read()
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    got = list(pool.map(fetch, range(16)))
print(sum(g == ${JSON.stringify(SMALL)}.encode() for g in got))
`,
            ]);
            assert.equal(r.code, 0, r.stderr);
            assert.equal(r.stdout, `${OURS4} ('${PEER4}', 8080)\n${SMALL}16\n`);
          },
        );

        await t.step(
          "a wrapped shell script's curl stays wrapped; exit codes come back",
          async () => {
            const sh = await w.wrap([
              "sh",
              "-c",
              `curl -sS --max-time 10 http://${PEER4}:8080/small && exit 3`,
            ]);
            assert.equal(sh.code, 3, sh.stderr);
            assert.equal(sh.stdout, SMALL);
            assert.equal((await w.wrap(["sh", "-c", "exit 0"])).code, 0);
            // Killed by SIGTERM: 128 + 15.
            const killed = await w.wrap(["sh", "-c", "kill -TERM $$; sleep 5"]);
            assert.equal(killed.code, 143, killed.stderr);
          },
        );

        await t.step("connection refused and timeouts read as curl's usual messages", async () => {
          const refused = await w.wrap(["curl", "-v", "--max-time", "10", `http://${PEER4}:8081/`]);
          assert.equal(refused.code, 7);
          assert.match(refused.stderr, /Connection refused/);
          // 10.77.0.99 is inside AllowedIPs but nobody answers: the SYN goes unanswered.
          const silent = await w.wrap([
            "curl",
            "-sS",
            "--connect-timeout",
            "2",
            "http://10.77.0.99:8080/",
          ]);
          assert.equal(silent.code, 28, silent.stderr);
          assert.match(silent.stderr, /Connection timed out|Timeout was reached/);
          const nxdomain = await w.wrap([
            "curl",
            "-sS",
            "--max-time",
            "10",
            "http://nope.wg.test/",
          ]);
          assert.equal(nxdomain.code, 6, nxdomain.stderr);
          assert.match(nxdomain.stderr, /Could not resolve host: nope\.wg\.test/);
        });
      });
    });
  },
  { requires: ["curl", "python3", "socat", "node", "dnsmasq", "dig", "rev"], timeoutMs: 150_000 },
);
