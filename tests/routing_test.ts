// Policy routing in the engine (DESIGN.md decision 3): routes that widen a peer's AllowedIPs in
// both directions, filtered routes, and how --exit-node / --route / Route = are resolved.
import assert from "node:assert/strict";
import { EnginePair, ipv4Packet } from "./_support/engine_pair.ts";
import { formatIP, parseIP, parsePrefix, type Prefix } from "../core/wire/addr.ts";
import {
  interposerRoutes,
  parseExitNode,
  parseRouteOption,
  planRoutes,
  PolicyTable,
  RouteError,
} from "../core/host/tunnel/routes.ts";
import { parseConfig } from "../core/config/mod.ts";
import type { Peer } from "../core/wireguard/device.ts";

const enc = new TextEncoder();
const FAR = [198, 51, 100, 7]; // "the internet", behind B
const pfx = (t: string): Prefix => parsePrefix(t)!;

/** An IPv4 packet of protocol `proto` with destination port `dport` (TCP/UDP header start). */
function l4Packet(
  src: number[],
  dst: number[],
  proto: number,
  dport: number,
  frag = 0,
): Uint8Array {
  const p = ipv4Packet(src, dst, new Uint8Array(20));
  p[9] = proto;
  p[6] = frag >> 8;
  p[7] = frag & 0xff;
  p[20] = 0x30;
  p[21] = 0x39;
  p[22] = dport >> 8;
  p[23] = dport & 0xff;
  return p;
}

Deno.test("Device.addRoute: a destination outside AllowedIPs goes to the peer, replies are accepted", async (t) => {
  await t.step("without the route: not sent, and replies from there are dropped", () => {
    const pair = new EnginePair();
    assert.equal(
      pair.a.device.send(pair.now, ipv4Packet([10, 0, 0, 1], FAR, enc.encode("x"))),
      false,
    );
    // Establish a session, then B sends from FAR: A's cryptokey check drops it.
    pair.a.device.send(pair.now, ipv4Packet([10, 0, 0, 1], [10, 0, 0, 2], enc.encode("hi")));
    pair.flush();
    pair.b.device.send(pair.now, ipv4Packet(FAR, [10, 0, 0, 1], enc.encode("reply")));
    pair.flush();
    assert.equal(pair.a.delivered.length, 0);
    assert.equal(pair.a.device.stats.allowedIPsMismatch, 1);
  });
  await t.step("with 0.0.0.0/0 routed to B (an exit node): both directions pass", () => {
    const pair = new EnginePair();
    pair.a.device.addRoute(pfx("0.0.0.0/0"), pair.a.peer);
    const out = ipv4Packet([10, 0, 0, 1], FAR, enc.encode("to the internet"));
    assert.equal(pair.a.device.send(pair.now, out), true);
    pair.flush();
    assert.deepEqual(pair.b.delivered[0], out);
    const reply = ipv4Packet(FAR, [10, 0, 0, 1], enc.encode("from the internet"));
    pair.b.device.send(pair.now, reply);
    pair.flush();
    assert.deepEqual(pair.a.delivered[0], reply);
    assert.equal(pair.a.device.stats.allowedIPsMismatch, 0);
    // Longest prefix still wins: the peer's own /32 is unchanged, and route() agrees.
    assert.equal(pair.a.device.route(parseIP("10.0.0.2")!), pair.a.peer);
    assert.equal(pair.a.device.route(parseIP("203.0.113.9")!), pair.a.peer);
  });
  await t.step("removePeer drops its routes", () => {
    const pair = new EnginePair();
    pair.a.device.addRoute(pfx("::/0"), pair.a.peer);
    assert.equal(pair.a.device.route(parseIP("2001:db8::1")!), pair.a.peer);
    pair.a.device.removePeer(pair.a.peer);
    assert.equal(pair.a.device.route(parseIP("2001:db8::1")!), undefined);
  });
});

Deno.test("Device.acceptFrom: sendToPeer out, replies from the prefix accepted, nothing routed", () => {
  const pair = new EnginePair();
  const out = ipv4Packet([10, 0, 0, 1], FAR, enc.encode("policy"));
  pair.a.device.sendToPeer(pair.now, pair.a.peer, out);
  pair.flush();
  assert.deepEqual(pair.b.delivered[0], out);
  const reply = ipv4Packet(FAR, [10, 0, 0, 1], enc.encode("back"));
  pair.b.device.send(pair.now, reply);
  pair.flush();
  assert.equal(pair.a.delivered.length, 0, "dropped before acceptFrom");
  pair.a.device.acceptFrom(pfx("198.51.100.0/24"), pair.a.peer);
  pair.b.device.send(pair.now, reply);
  pair.flush();
  assert.deepEqual(pair.a.delivered[0], reply);
  // Outbound routing is unchanged: acceptFrom only widens what the peer may send.
  assert.equal(pair.a.device.route(parseIP("198.51.100.7")!), undefined);
  // A source outside the accepted prefix is still dropped.
  pair.b.device.send(pair.now, ipv4Packet([198, 51, 101, 1], [10, 0, 0, 1], enc.encode("no")));
  pair.flush();
  assert.equal(pair.a.delivered.length, 1);
});

Deno.test("PolicyTable: protocol and port filters, longest prefix first, fragments", () => {
  const table = new PolicyTable();
  const b = { name: "b" } as unknown as Peer, c = { name: "c" } as unknown as Peer;
  table.add(pfx("172.16.0.0/12"), "tcp", 443, b);
  table.add(pfx("172.16.5.0/24"), "udp", undefined, c);
  const src = [10, 0, 0, 1];
  assert.equal(table.forPacket(l4Packet(src, [172, 20, 1, 1], 6, 443)), b);
  assert.equal(table.forPacket(l4Packet(src, [172, 20, 1, 1], 6, 80)), undefined);
  assert.equal(table.forPacket(l4Packet(src, [172, 20, 1, 1], 17, 443)), undefined);
  assert.equal(table.forPacket(l4Packet(src, [172, 15, 1, 1], 6, 443)), undefined);
  assert.equal(table.forPacket(l4Packet(src, [172, 16, 5, 9], 17, 53)), c);
  assert.equal(table.forPacket(l4Packet(src, [172, 16, 5, 9], 6, 443)), b);
  // A non-first fragment has no ports: its protocol and prefix decide.
  assert.equal(table.forPacket(l4Packet(src, [172, 20, 1, 1], 6, 9999, 185)), b);
  assert.equal(table.match(parseIP("172.20.0.1")!, "tcp", 443), b);
  assert.equal(table.match(parseIP("172.20.0.1")!, "tcp", 22), undefined);
  // IPv6
  const t6 = new PolicyTable();
  t6.add(pfx("fd99::/64"), "tcp", 8081, b);
  const p6 = new Uint8Array(60);
  p6[0] = 0x60;
  p6[6] = 6;
  p6.set(parseIP("fd99::1")!, 24);
  p6[42] = 8081 >> 8;
  p6[43] = 8081 & 0xff;
  assert.equal(t6.forPacket(p6), b);
  p6[43] = 0;
  assert.equal(t6.forPacket(p6), undefined);
});

const KEY = "eHl6eHl6eHl6eHl6eHl6eHl6eHl6eHl6eHl6eHl6eHk=";
const K1 = "MDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA=";
const K2 = "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=";
const CONFIG = `[Interface]
PrivateKey = ${KEY}
Address = 10.77.0.2/32, fd77::2/128

[Peer]
PublicKey = ${K1}
AllowedIPs = 10.77.0.0/24, fd77::/64

[Peer]
PublicKey = ${K2}
AllowedIPs = 10.88.0.0/24, fd88::/64
Route = 172.16.0.0/12:tcp:443
`;

Deno.test("parseRouteOption / parseExitNode", () => {
  const r = parseRouteOption("10.1.2.3/16:10.88.0.1");
  assert.equal(formatIP(r.prefix.addr), "10.1.0.0");
  assert.equal(r.prefix.bits, 16);
  assert.equal(formatIP(r.via), "10.88.0.1");
  const r6 = parseRouteOption("fd99::/64:fd88::1");
  assert.equal(formatIP(r6.prefix.addr), "fd99::");
  assert.equal(formatIP(r6.via), "fd88::1");
  for (const bad of ["10.0.0.0/8", "10.0.0.1:10.0.0.2", "10.0.0.0/33:10.0.0.1", "x/8:1.2.3.4"]) {
    assert.throws(() => parseRouteOption(bad), RouteError, bad);
  }
  assert.equal(formatIP(parseExitNode("10.88.0.1")), "10.88.0.1");
  assert.throws(() => parseExitNode("peer-b"), RouteError);
});

Deno.test("planRoutes: peers resolved by AllowedIPs; interposer routes", () => {
  const config = parseConfig(CONFIG);
  const plan = planRoutes(config, {
    exitNode: parseIP("10.88.0.1"),
    routes: [parseRouteOption("fd99::/64:fd77::1")],
  });
  const shown = plan.rules.map((r) => `${formatIP(r.prefix.addr)}/${r.prefix.bits}>${r.peerIndex}`);
  assert.deepEqual(shown, ["172.16.0.0/12>1", "fd99::/64>0", "0.0.0.0/0>1", "::/0>1"]);
  assert.equal(plan.rules[0]!.protocol, "tcp");
  assert.equal(plan.rules[0]!.port, 443);
  assert.equal(plan.exitPeer, 1);
  assert.throws(
    () => planRoutes(config, { exitNode: parseIP("10.99.0.1") }),
    /--exit-node 10\.99\.0\.1: 10\.99\.0\.1 is in no peer's AllowedIPs/,
  );
  assert.throws(
    () => planRoutes(config, { routes: [parseRouteOption("1.0.0.0/8:9.9.9.9")] }),
    RouteError,
  );

  const routes = interposerRoutes(config, plan, [parseIP("198.18.0.1")!, parseIP("10.77.0.2")!]);
  assert.deepEqual(routes, [
    "10.77.0.0/24",
    "fd77::/64",
    "10.88.0.0/24",
    "fd88::/64",
    "172.16.0.0/12",
    "fd99::/64",
    "0.0.0.0/0",
    "::/0",
    "!169.254.0.0/16",
    "!fe80::/10",
    "!198.18.0.1/32",
  ]);
  // Without an exit node: AllowedIPs and routed prefixes only, nothing excluded.
  assert.deepEqual(interposerRoutes(config, planRoutes(config), [parseIP("198.18.0.1")!]), [
    "10.77.0.0/24",
    "fd77::/64",
    "10.88.0.0/24",
    "fd88::/64",
    "172.16.0.0/12",
  ]);
});
