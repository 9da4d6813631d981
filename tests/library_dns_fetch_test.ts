// resolve() and fetch() of the library API, against dnsmasq and python's http.server in the
// wireguard-go namespace: names resolve through the tunnel and bodies arrive intact.
import assert from "node:assert/strict";
import { randomBytes, sha256 } from "./_support/bytes.ts";
import { netnsTest, waitForPort, withTopology } from "./_support/netns.ts";
import { withPair } from "./_support/wg_pair.ts";
import { startDnsmasq } from "./_support/dnsmasq.ts";

netnsTest(
  "resolve() and fetch() go through the tunnel to dnsmasq and a kernel HTTP server",
  async (t) => {
    await withTopology(
      {},
      (topo) =>
        withPair(topo, { interfaceExtra: "DNS = 10.77.0.1, wg.test" }, async ({ tunnel }) => {
          const dns = await startDnsmasq(topo, topo.peer, {
            listen: ["10.77.0.1"],
            hostRecords: [{ name: "svc.wg.test", addresses: ["10.77.0.1", "fd77::1"] }],
            localDomains: ["wg.test"],
          });
          const dir = await Deno.makeTempDir({ dir: topo.tmpDir, prefix: "www-" });
          const blob = randomBytes(3 << 20);
          await Deno.writeFile(`${dir}/blob`, blob);
          for (const bind of ["10.77.0.1", "fd77::1"]) {
            topo.spawn(topo.peer, [
              "python3",
              "-m",
              "http.server",
              "8000",
              "--bind",
              bind,
              "--directory",
              dir,
            ]);
          }
          for (const address of ["10.77.0.1", "fd77::1"]) {
            await waitForPort(topo.peer, 8000, "tcp", { address });
          }
          const want = await sha256(blob);

          await t.step(
            "resolve returns the A and AAAA records, asked through the tunnel",
            async () => {
              assert.deepEqual(await tunnel.resolve("svc.wg.test"), ["10.77.0.1", "fd77::1"]);
              assert.deepEqual(await tunnel.resolve("svc", { family: 6 }), ["fd77::1"]); // search domain
              const queries = dns.queries();
              assert.ok(queries.length >= 2);
              assert.ok(
                queries.every((q) => q.from.split("/")[0] === "10.77.0.2"),
                JSON.stringify(queries),
              );
            },
          );
          await t.step("an unknown name is not found", async () => {
            await assert.rejects(
              tunnel.resolve("nothing.wg.test"),
              (e: Error & { code?: string }) => e.code === "ENOTFOUND",
            );
          });
          await t.step("fetch by name returns the kernel server's body", async () => {
            const res = await tunnel.fetch("http://svc.wg.test:8000/blob");
            assert.equal(res.status, 200);
            assert.equal(res.headers.get("content-length"), String(blob.length));
            assert.equal(await sha256(new Uint8Array(await res.arrayBuffer())), want);
          });
          await t.step("fetch an IPv6 literal URL, and a 404", async () => {
            const res = await tunnel.fetch("http://[fd77::1]:8000/blob");
            assert.equal(await sha256(new Uint8Array(await res.arrayBuffer())), want);
            const missing = await tunnel.fetch("http://10.77.0.1:8000/missing");
            assert.equal(missing.status, 404);
            await missing.body?.cancel();
          });
        }),
    );
  },
  { requires: ["python3", "dnsmasq"], timeoutMs: 60_000 },
);
