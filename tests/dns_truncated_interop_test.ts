// The library resolver (Resolver.forTunnel, behind tunnel.resolve and the broker's RESOLVE) asks
// again over TCP through the tunnel when dnsmasq's UDP answer is truncated: 100 A records for one
// name do not fit the 1232 bytes of EDNS payload. A capture on wireguard-go's interface shows the
// TCP query arriving from our tunnel address.
import assert from "node:assert/strict";
import { netnsTest, type Spawned, withTopology } from "./_support/netns.ts";
import { withPair } from "./_support/wg_pair.ts";
import { startDnsmasq } from "./_support/dnsmasq.ts";
import { Resolver } from "../core/host/tunnel/dns.ts";
import { formatIP } from "../core/wire/addr.ts";

const COUNT = 100;
const MANY = Array.from({ length: COUNT }, (_, i) => `10.77.${1 + (i >> 8)}.${i & 0xff}`);

netnsTest(
  "a truncated UDP answer is asked again over TCP through the tunnel",
  async (t) => {
    await withTopology(
      {},
      (topo) =>
        withPair(topo, { interfaceExtra: "DNS = 10.77.0.1, wg.test" }, async ({ tunnel, wg }) => {
          const hosts = `${topo.tmpDir}/many.hosts`;
          await Deno.writeTextFile(hosts, MANY.map((a) => `${a} many.wg.test\n`).join(""));
          const dns = await startDnsmasq(topo, topo.peer, {
            listen: ["10.77.0.1"],
            localDomains: ["wg.test"],
            extraArgs: [`--addn-hosts=${hosts}`],
          });

          await t.step("without TCP the answer is cut short (the control)", async () => {
            const udpOnly = Resolver.forTunnel(tunnel, { tcpConnect: undefined, cache: false });
            const got = await udpOnly.resolve("many.wg.test", { family: 4 }).then(
              (r) => r.addresses.length,
              () => 0,
            );
            assert.ok(got < COUNT, `UDP alone gave ${got} addresses`);
            assert.equal(udpOnly.stats.truncated, 1);
            assert.equal(udpOnly.stats.tcpQueries, 0);
          });

          await t.step("forTunnel gets every address, over TCP through the tunnel", async () => {
            const dump: Spawned = topo.spawn(topo.peer, [
              "tcpdump",
              "-i",
              wg.ifname,
              "-n",
              "-l",
              "-U",
              "tcp port 53",
            ]);
            await dump.waitForOutput(/listening on/, { stream: "stderr", timeoutMs: 10_000 });
            const before = dns.queries().length;
            const resolver = Resolver.forTunnel(tunnel, { cache: false });
            let addrs: string[];
            try {
              addrs = (await resolver.resolve("many.wg.test", { family: 4 })).addresses.map(
                formatIP,
              );
            } finally {
              await new Promise((r) => setTimeout(r, 300));
              await dump.kill("SIGINT");
            }
            assert.deepEqual([...addrs].sort(), [...MANY].sort());
            assert.equal(resolver.stats.truncated, 1);
            assert.equal(resolver.stats.tcpQueries, 1);
            // dnsmasq was asked twice (UDP, then TCP), both times from our tunnel address.
            const asked = dns.queries().slice(before).filter((q) => q.name === "many.wg.test");
            assert.equal(asked.length, 2, dns.log());
            assert.ok(asked.every((q) => q.from === "10.77.0.2"), dns.log());
            const lines = dump.stdoutText();
            assert.match(lines, /IP 10\.77\.0\.2\.\d+ > 10\.77\.0\.1\.53: Flags \[S\]/, lines);
            assert.match(lines, /IP 10\.77\.0\.1\.53 > 10\.77\.0\.2\.\d+: Flags \[P\.\]/, lines);
          });

          await t.step("tunnel.resolve (the library API) gets the full answer too", async () => {
            const addrs = await tunnel.resolve("many.wg.test", { family: 4 });
            assert.equal(addrs.length, COUNT);
            assert.deepEqual(new Set(addrs), new Set(MANY));
          });
        }),
    );
  },
  { requires: ["dnsmasq", "tcpdump"], timeoutMs: 60_000 },
);
