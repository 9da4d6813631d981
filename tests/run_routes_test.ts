/**
 * Issue 5, must-show 3: with two wireguard-go peers in two namespaces, `--exit-node` and
 * `--route` (and a config's `Route =` with a port filter) send a wrapped program's traffic to the
 * peer they name. Both peers serve the same far addresses and answer with their own name, so the
 * answer tells which peer received the connection.
 */
import assert from "node:assert/strict";
import { netnsTest, withTopology } from "./_support/netns.ts";
import { FAR4, FAR6, SPLIT4, withRoutesWorld } from "./_support/routes_world.ts";

netnsTest(
  "run --exit-node / --route / Route =: traffic reaches the peer they name",
  async (t) => {
    await withTopology({ hostNamespace: true }, async (topo) => {
      await withRoutesWorld(topo, async (w) => {
        await t.step("without a route the far address is unreachable", async () => {
          const r = await w.ask(FAR4, 8080);
          assert.notEqual(r.code, 0, r.stdout);
          assert.match(r.stderr, /unreachable/i);
        });

        await t.step("--exit-node picks the peer that owns the IP (IPv4 and IPv6)", async () => {
          for (const [via, name] of [["10.88.0.1", "B"], ["10.77.0.1", "A"], ["fd88::1", "B"]]) {
            for (const dst of [FAR4, FAR6]) {
              const r = await w.ask(dst, 8080, ["--exit-node", via!]);
              assert.equal(r.code, 0, `${via} → ${dst}: ${r.stderr}`);
              assert.equal(r.stdout, `${name}\n`, `--exit-node ${via}, ${dst}`);
            }
          }
        });

        await t.step("an exit node keeps the other peer's AllowedIPs with that peer", async () => {
          // 172.20.0.0/16 is in A's AllowedIPs: longer than 0.0.0.0/0, so it stays A's.
          const r = await w.ask(SPLIT4, 8080, ["--exit-node", "10.88.0.1"]);
          assert.equal(r.code, 0, r.stderr);
          assert.equal(r.stdout, "A\n");
        });

        await t.step("--route CIDR:IP, IPv4 and IPv6, repeatable", async () => {
          const both = ["--route", "198.51.100.0/24:10.77.0.1", "--route", "fd99::/64:fd88::1"];
          const v4 = await w.ask(FAR4, 8080, both);
          assert.equal(v4.code, 0, v4.stderr);
          assert.equal(v4.stdout, "A\n");
          const v6 = await w.ask(FAR6, 8080, both);
          assert.equal(v6.code, 0, v6.stderr);
          assert.equal(v6.stdout, "B\n");
          const toB = await w.ask(FAR4, 8080, ["--route", "198.51.100.7/32:10.88.0.1"]);
          assert.equal(toB.code, 0, toB.stderr);
          assert.equal(toB.stdout, "B\n");
          // A more specific --route wins over AllowedIPs, as a longer kernel route would.
          const split = await w.ask(SPLIT4, 8080, ["--route", "172.20.0.1/32:10.88.0.1"]);
          assert.equal(split.code, 0, split.stderr);
          assert.equal(split.stdout, "B\n");
        });

        await t.step("Route = 172.20.0.0/16:tcp:8081 sends only that port to B", async () => {
          const other = await w.ask(SPLIT4, 8080);
          assert.equal(other.code, 0, other.stderr);
          assert.equal(other.stdout, "A\n", "port 8080 follows A's AllowedIPs");
          const routed = await w.ask(SPLIT4, 8081);
          assert.equal(routed.code, 0, routed.stderr);
          assert.equal(routed.stdout, "B\n", "port 8081 goes to B by the Route line");
        });

        await t.step("a route through an IP no peer owns is a usage error", async () => {
          const r = await w.ask(FAR4, 8080, ["--route", "198.51.100.0/24:10.99.0.1"]);
          assert.equal(r.code, 2);
          assert.match(r.stderr, /10\.99\.0\.1 is in no peer's AllowedIPs/);
          const e = await w.ask(FAR4, 8080, ["--exit-node", "nope"]);
          assert.equal(e.code, 2);
          assert.match(e.stderr, /--exit-node must be/);
        });
      });
    });
  },
  { requires: ["socat"], timeoutMs: 120_000 },
);
