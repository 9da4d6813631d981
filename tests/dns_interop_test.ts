// Names resolve where the traffic goes (DESIGN.md decision 4): our Tunnel in this process, started
// from a config with `DNS =`, asks dnsmasq in the peer namespace through wireguard-go. dnsmasq is
// bound only to the tunnel addresses, so an answer can only have come through the tunnel.
import assert from "node:assert/strict";
import { netnsTest, type Topology, withTopology } from "./_support/netns.ts";
import { withPair } from "./_support/wg_pair.ts";
import { type Dnsmasq, startDnsmasq } from "./_support/dnsmasq.ts";
import type { WireguardGo } from "./_support/wggo.ts";
import type { Tunnel } from "../core/host/tunnel/mod.ts";
import {
  DnsNotFoundError,
  DnsServerFailError,
  DnsTimeoutError,
  Resolver,
} from "../core/host/tunnel/dns.ts";
import { formatIP, parseIP } from "../core/wire/addr.ts";

/** wireguard-go (10.77.0.1, fd77::1) and our tunnel (.2, ::2) with the given `DNS =` line. */
function withDnsPair(
  topo: Topology,
  dnsLine: string,
  fn: (p: { wg: WireguardGo; tunnel: Tunnel }) => Promise<void>,
): Promise<void> {
  return withPair(topo, { interfaceExtra: dnsLine }, ({ wg, tunnel }) => fn({ wg, tunnel }));
}

function startServer(topo: Topology): Promise<Dnsmasq> {
  return startDnsmasq(topo, topo.peer, {
    listen: ["10.77.0.1", "fd77::1"],
    localDomains: ["wg.test"],
    addresses: [{ domain: "svc.wg.test", address: "10.77.0.1" }],
    hostRecords: [
      { name: "svc6.wg.test", addresses: ["fd77::1"] },
      { name: "both.wg.test", addresses: ["10.77.0.5", "fd77::5"] },
      { name: "bare.wg.test", addresses: ["10.77.0.7"] },
    ],
    cnames: [{ alias: "alias.wg.test", target: "both.wg.test" }],
    ttl: 120,
  });
}

const text = (a: Uint8Array[]) => a.map(formatIP);

netnsTest(
  "DNS through the tunnel: Resolver.forTunnel asks dnsmasq in the peer namespace",
  async (t) => {
    await withTopology({}, async (topo) => {
      await withDnsPair(topo, "DNS = 10.77.0.1, wg.test", async ({ tunnel }) => {
        const dns = await startServer(topo);
        const resolver = Resolver.forTunnel(tunnel);
        assert.deepEqual(resolver.servers.map(formatIP), ["10.77.0.1"]);

        await t.step("A", async () => {
          const r = await resolver.resolve("svc.wg.test", { family: 4 });
          assert.deepEqual(text(r.addresses), ["10.77.0.1"]);
          assert.equal(r.ttl, 120);
        });
        await t.step("AAAA", async () => {
          const r = await resolver.resolve("svc6.wg.test", { family: 6 });
          assert.deepEqual(text(r.addresses), ["fd77::1"]);
        });
        await t.step("both families at once", async () => {
          const r = await resolver.resolve("both.wg.test");
          assert.deepEqual(text(r.addresses), ["10.77.0.5", "fd77::5"]);
        });
        await t.step("the queries came from our tunnel address, through the tunnel", () => {
          const seen = dns.queries();
          assert.ok(seen.some((q) => q.type === "A" && q.name === "svc.wg.test"), dns.log());
          assert.ok(seen.some((q) => q.type === "AAAA" && q.name === "svc6.wg.test"), dns.log());
          assert.ok(seen.every((q) => q.from === "10.77.0.2"), dns.log());
        });
        await t.step("a bare name through the search domain", async () => {
          const r = await resolver.resolve("bare", { family: 4 });
          assert.deepEqual(text(r.addresses), ["10.77.0.7"]);
          assert.equal(r.canonicalName, "bare.wg.test");
          // The search domain was applied before the bare name was tried.
          assert.deepEqual(
            dns.queries().filter((q) => q.name.startsWith("bare")).map((q) => q.name),
            ["bare.wg.test"],
          );
        });
        await t.step("a CNAME", async () => {
          const r = await resolver.resolve("alias.wg.test", { family: 4 });
          assert.deepEqual(text(r.addresses), ["10.77.0.5"]);
          assert.equal(r.canonicalName, "both.wg.test");
        });
        await t.step("an unknown name is ENOTFOUND", async () => {
          const e = await resolver.resolve("nope.wg.test").catch((e) => e);
          assert.ok(e instanceof DnsNotFoundError, String(e));
          assert.equal(e.code, "ENOTFOUND");
          assert.equal(e.nodata, false);
          assert.ok(dns.queries().some((q) => q.name === "nope.wg.test"));
        });
        await t.step("a name with no address of the family is ENOTFOUND (NODATA)", async () => {
          const e = await resolver.resolve("svc6.wg.test", { family: 4 }).catch((e) => e);
          assert.ok(e instanceof DnsNotFoundError && e.nodata, String(e));
        });
        await t.step("a name dnsmasq refuses (no upstream) is ESERVFAIL", async () => {
          const e = await resolver.resolve("elsewhere.example.", { family: 4 }).catch((e) => e);
          assert.ok(e instanceof DnsServerFailError, String(e));
          assert.equal(e.code, "ESERVFAIL");
        });
        await t.step("the answers are cached: asking again sends nothing", async () => {
          const before = dns.queries().length;
          const sent = resolver.stats.queriesSent;
          const r = await resolver.resolve("svc.wg.test", { family: 4 });
          assert.deepEqual(text(r.addresses), ["10.77.0.1"]);
          assert.equal(resolver.stats.queriesSent, sent);
          assert.equal(dns.queries().length, before);
        });
        await t.step("over IPv6 to fd77::1", async () => {
          const v6 = Resolver.forTunnel(tunnel, { servers: [parseIP("fd77::1")!] });
          const r = await v6.resolve("both.wg.test");
          assert.deepEqual(text(r.addresses), ["10.77.0.5", "fd77::5"]);
          assert.ok(dns.queries().some((q) => q.from === "fd77::2"), dns.log());
        });
        await t.step(
          "a closed port fails at once on the ICMP error, not after the timeout",
          async () => {
            const closed = Resolver.forTunnel(tunnel, {
              port: 5353,
              timeoutMs: 10_000,
              attempts: 1,
            });
            const start = performance.now();
            const e = await closed.resolve("svc.wg.test", { family: 4 }).catch((e) => e);
            assert.ok(e instanceof DnsTimeoutError, String(e));
            assert.ok(performance.now() - start < 5000, "waited for the timeout");
          },
        );
        assert.equal(resolver.stats.ignored, 0);
      });
    });
  },
  { requires: ["dnsmasq", "dig"], timeoutMs: 60_000 },
);

netnsTest(
  "DNS through the tunnel: a silent server times out as ETIMEDOUT after every try",
  async () => {
    await withTopology({}, async (topo) => {
      // 10.77.0.53 is inside AllowedIPs, so queries go through the tunnel, but nobody has it.
      await withDnsPair(topo, "DNS = 10.77.0.53", async ({ tunnel }) => {
        const resolver = Resolver.forTunnel(tunnel, { timeoutMs: 300, attempts: 2 });
        const e = await resolver.resolve("svc.wg.test", { family: 4 }).catch((e) => e);
        assert.ok(e instanceof DnsTimeoutError, String(e));
        assert.equal(e.code, "ETIMEDOUT");
        assert.equal(resolver.stats.queriesSent, 2);
      });
    });
  },
);
