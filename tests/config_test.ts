/**
 * The wg-quick config format: parsing every key, printing and re-parsing, the errors (with their
 * line numbers) and the warnings.
 */
import assert from "node:assert/strict";
import {
  type Config,
  ConfigError,
  formatConfig,
  formatRoute,
  loadConfig,
  parseConfig,
} from "../core/config/mod.ts";
import { formatIP, formatPrefix, type Prefix } from "../core/wire/addr.ts";
import { encodeKey } from "../core/wireguard/keys.ts";

const FIXTURE = new URL("./fixtures/config/full.conf", import.meta.url).pathname;

const KEY_A = "OFs8M3gqp+qhMNFT16pomxh1O/PYNDG/0YXCrQLtpUU="; // private; public is PUB_A
const PUB_A = "q80eo5ee3q8xdwYXrKZ7LJb30aVjEFwQUt87xbCTXTA=";
const PUB_B = "sVgZ+ZaGPoToMx5JilN05za9f3IGFdQjNjI8MWWzgH4=";
const PUB_C = "8ZSBwoj42v5XXdlOba+gDQYwCOsCH8Rj49XQZrtsSXQ=";
const PUB_D = "UW4f0QGyK2L2zppqlLg0bBJeTtdP5/R3sesebo7l8C4=";
const PSK = "LDVMSfOTDcE/UwawHq/IMWiSV+sijAWP/xi2r1xpxos=";

const prefixes = (ps: Prefix[]) => ps.map(formatPrefix);
const iface = (extra = "") => `[Interface]\nPrivateKey = ${KEY_A}\n${extra}`;

/** The parts of a Config that describe the network (not warnings or line numbers). */
function essence(c: Config) {
  return {
    interface: c.interface,
    peers: c.peers.map(({ line: _line, ...rest }) => rest),
  };
}

Deno.test("full config: every key parses to the documented values", async () => {
  const c = await loadConfig(FIXTURE);
  const i = c.interface;
  assert.equal(encodeKey(i.privateKey), KEY_A);
  // Our own addresses keep their host bits; a bare address is a host prefix.
  assert.deepEqual(prefixes(i.addresses), ["10.0.0.2/24", "fd00::2/64", "10.0.1.5/32"]);
  assert.equal(i.listenPort, 51820);
  assert.deepEqual(i.dns.servers.map(formatIP), ["10.0.0.1", "fd00::53"]);
  assert.deepEqual(i.dns.search, ["corp.example", "lan"]);
  assert.equal(i.mtu, 1420);

  assert.equal(c.peers.length, 3);
  const [b, cc, d] = c.peers as [Config["peers"][0], Config["peers"][0], Config["peers"][0]];
  assert.equal(encodeKey(b.publicKey), PUB_B);
  assert.equal(encodeKey(b.presharedKey!), PSK);
  assert.deepEqual(b.endpoint, { host: "2001:db8::1", port: 51820 });
  // AllowedIPs are masked as wg shows them, and repeated lines add up.
  assert.deepEqual(prefixes(b.allowedIPs), ["10.0.0.0/24", "192.168.0.0/16", "fd00::/64"]);
  assert.equal(b.persistentKeepalive, 25);
  assert.deepEqual(b.routes.map(formatRoute), [
    "192.168.0.0/16:tcp:443",
    "10.0.0.0/24",
    "fd00::/64:udp",
  ]);
  assert.deepEqual(b.routes[0]!.protocol, "tcp");
  assert.deepEqual(b.routes[0]!.port, 443);
  assert.equal(b.routes[1]!.protocol, undefined);
  assert.equal(b.line, 14);

  assert.equal(encodeKey(cc.publicKey), PUB_C);
  assert.equal(cc.presharedKey, undefined);
  assert.deepEqual(cc.endpoint, { host: "vpn.example.com", port: 51820 });
  assert.equal(cc.persistentKeepalive, undefined, "off means no keepalive");
  assert.deepEqual(cc.routes, [{
    prefix: { addr: new Uint8Array([172, 16, 5, 0]), bits: 24 },
    protocol: "udp",
    port: 53,
  }]);
  assert.equal(cc.line, 24);

  assert.equal(encodeKey(d.publicKey), PUB_D);
  assert.deepEqual(d.endpoint, { host: "203.0.113.5", port: 4500 });
  assert.deepEqual(d.allowedIPs, [], "an empty AllowedIPs is allowed, as in wg");
  assert.equal(d.persistentKeepalive, undefined, "0 means no keepalive");
  assert.equal(d.line, 31);

  // Keys only wg-quick acts on, with their lines; the fixture is 0644, so loadConfig also warns.
  const lineWarnings = c.warnings.filter((w) => w.line > 0);
  assert.deepEqual(lineWarnings.map((w) => [w.line, w.key]), [
    [9, "PostUp"],
    [10, "Table"],
    [11, "SaveConfig"],
    [12, "FwMark"],
  ]);
  for (const w of lineWarnings) assert.match(w.message, /has no effect in wrapguard/);
});

Deno.test("full config: format prints canonical text, and parsing it gives the same config", async () => {
  const c = await loadConfig(FIXTURE);
  const text = formatConfig(c);
  assert.equal(
    text,
    `[Interface]
PrivateKey = ${KEY_A}
Address = 10.0.0.2/24, fd00::2/64, 10.0.1.5/32
ListenPort = 51820
DNS = 10.0.0.1, fd00::53, corp.example, lan
MTU = 1420

[Peer]
PublicKey = ${PUB_B}
PresharedKey = ${PSK}
Endpoint = [2001:db8::1]:51820
AllowedIPs = 10.0.0.0/24, 192.168.0.0/16, fd00::/64
PersistentKeepalive = 25
Route = 192.168.0.0/16:tcp:443, 10.0.0.0/24, fd00::/64:udp

[Peer]
PublicKey = ${PUB_C}
Endpoint = vpn.example.com:51820
AllowedIPs = 172.16.0.0/12
Route = 172.16.5.0/24:udp:53

[Peer]
PublicKey = ${PUB_D}
Endpoint = 203.0.113.5:4500
`,
  );
  const again = parseConfig(text, { file: "printed.conf" });
  assert.deepEqual(essence(again), essence(c));
  assert.deepEqual(again.warnings, []);
  assert.equal(formatConfig(again), text, "printing is stable");
});

Deno.test("format with redact hides private and preshared keys only", async () => {
  const c = await loadConfig(FIXTURE);
  const text = formatConfig(c, { redact: true });
  assert.ok(!text.includes(KEY_A));
  assert.ok(!text.includes(PSK));
  assert.match(text, /^PrivateKey = <redacted>$/m);
  assert.match(text, /^PresharedKey = <redacted>$/m);
  assert.ok(text.includes(PUB_B), "public keys are not secret");
  // Printing the parsed Config object itself does not show the secrets either.
  const shown = Deno.inspect(c, { depth: 10 }) + JSON.stringify(c);
  assert.ok(!shown.includes(KEY_A) && !shown.includes(PSK));
  const privBytes = Array.from(c.interface.privateKey).join(", ");
  assert.ok(!Deno.inspect(c, { depth: 10, iterableLimit: 1000 }).includes(privBytes));
});

Deno.test("the wg(8) man page example config parses as wg reads it", () => {
  const c = parseConfig(`[Interface]
PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
ListenPort = 51820

[Peer]
PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
Endpoint = 192.95.5.67:1234
AllowedIPs = 10.192.122.3/32, 10.192.124.1/24

[Peer]
PublicKey = TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=
Endpoint = [2607:5300:60:6b0::c05f:543]:2468
AllowedIPs = 10.192.122.4/32, 192.168.0.0/16

[Peer]
PublicKey = gN65BkIKy1eCE9pP1wdc8ROUtkHLF2PfAqYdyYBz6EA=
Endpoint = test.wireguard.com:18981
AllowedIPs = 10.10.10.230/32
`);
  assert.equal(c.interface.listenPort, 51820);
  assert.deepEqual(c.interface.addresses, []);
  assert.deepEqual(c.peers.map((p) => prefixes(p.allowedIPs)), [
    ["10.192.122.3/32", "10.192.124.0/24"],
    ["10.192.122.4/32", "192.168.0.0/16"],
    ["10.10.10.230/32"],
  ]);
  assert.deepEqual(c.peers.map((p) => p.endpoint), [
    { host: "192.95.5.67", port: 1234 },
    { host: "2607:5300:60:6b0::c05f:543", port: 2468 },
    { host: "test.wireguard.com", port: 18981 },
  ]);
  assert.deepEqual(c.warnings, []);
});

Deno.test("lexical rules follow wg-quick: comments, case, whitespace, CRLF, BOM", async (t) => {
  await t.step("comments, blank lines and spacing around =", () => {
    const c = parseConfig(
      `\uFEFF  # leading comment\r\n\r\n  [interface]  # trailing comment\r\n` +
        `privatekey=${KEY_A}\r\n\tADDRESS\t =\t10.1.2.3/8 # ours\r\n` +
        `MTU = 1280\r\n[peer]\r\nPUBLICKEY =${PUB_B}\r\nallowedips = 10.0.0.0/8,fd00::/8\r\n`,
    );
    assert.equal(encodeKey(c.interface.privateKey), KEY_A);
    assert.deepEqual(prefixes(c.interface.addresses), ["10.1.2.3/8"]);
    assert.equal(c.interface.mtu, 1280);
    assert.deepEqual(prefixes(c.peers[0]!.allowedIPs), ["10.0.0.0/8", "fd00::/8"]);
    assert.equal(c.peers[0]!.line, 7);
  });
  await t.step("Address and DNS split on commas and spaces, skipping empty entries", () => {
    const c = parseConfig(
      iface("Address = 10.0.0.2/24 ,, fd00::2\nDNS = 1.1.1.1 9.9.9.9,,home.arpa,\nDNS =\n"),
    );
    assert.deepEqual(prefixes(c.interface.addresses), ["10.0.0.2/24", "fd00::2/128"]);
    assert.deepEqual(c.interface.dns.servers.map(formatIP), ["1.1.1.1", "9.9.9.9"]);
    assert.deepEqual(c.interface.dns.search, ["home.arpa"]);
  });
  await t.step("an empty MTU is unset, as wg-quick treats it", () => {
    assert.equal(parseConfig(iface("MTU =\n")).interface.mtu, undefined);
  });
  await t.step("a MTU below 1280 is fine without IPv6 addresses", () => {
    assert.equal(parseConfig(iface("Address = 10.0.0.2/24\nMTU = 576\n")).interface.mtu, 576);
  });
  await t.step("ListenPort 0 and 65535 are valid", () => {
    assert.equal(parseConfig(iface("ListenPort = 0\n")).interface.listenPort, 0);
    assert.equal(parseConfig(iface("ListenPort = 65535\n")).interface.listenPort, 65535);
    assert.equal(parseConfig(iface()).interface.listenPort, undefined);
  });
  await t.step("AllowedIPs duplicates within one peer collapse, like wg shows them", () => {
    const c = parseConfig(
      iface(
        `[Peer]\nPublicKey = ${PUB_B}\nAllowedIPs = 10.0.0.1/24, 10.0.0.0/24\nAllowedIPs = 10.0.0.9/24\n`,
      ),
    );
    assert.deepEqual(prefixes(c.peers[0]!.allowedIPs), ["10.0.0.0/24"]);
  });
  await t.step("Route forms", () => {
    const c = parseConfig(iface(
      `[Peer]\nPublicKey = ${PUB_B}\nAllowedIPs = 0.0.0.0/0, ::/0\n` +
        `Route = 10.9.9.9, 10.9.9.9:tcp, 10.1.2.3/16:TCP:22, fd00::1, fd00::/64:tcp:443, 2001:db8::7/128:udp\n`,
    ));
    assert.deepEqual(c.peers[0]!.routes.map(formatRoute), [
      "10.9.9.9/32",
      "10.9.9.9/32:tcp",
      "10.1.0.0/16:tcp:22",
      "fd00::1/128",
      "fd00::/64:tcp:443",
      "2001:db8::7/128:udp",
    ]);
    assert.deepEqual(c.warnings, []);
  });
  await t.step("PersistentKeepalive OFF is case-insensitive", () => {
    const c = parseConfig(iface(`[Peer]\nPublicKey = ${PUB_B}\nPersistentKeepalive = OFF\n`));
    assert.equal(c.peers[0]!.persistentKeepalive, undefined);
  });
  await t.step("a config with no peers and default file name", () => {
    const c = parseConfig(iface());
    assert.deepEqual(c.peers, []);
    assert.deepEqual(c.interface.dns, { servers: [], search: [] });
  });
});

/** [case name, config text, expected line, fragment of the message] */
const ERRORS: [string, string, number, string | RegExp][] = [
  ["unknown key", iface("Foo = bar\n"), 3, 'unknown key "Foo" in [Interface]'],
  [
    "unknown key in a peer",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nKeepalive = 5\n`),
    5,
    'unknown key "Keepalive" in [Peer]',
  ],
  ["unknown section", iface("[Peers]\n"), 3, "unknown section [Peers]"],
  ["section with spaces inside", iface("[ Peer ]\n"), 3, "unknown section [ Peer ]"],
  [
    "key before any section",
    `PrivateKey = ${KEY_A}\n[Interface]\n`,
    1,
    "PrivateKey is outside a section",
  ],
  [
    "line without =",
    iface("Address 10.0.0.2/24\n"),
    3,
    'expected "Key = Value", found a line without "=" starting "Address"',
  ],
  [
    "second [Interface]",
    iface("[Interface]\n"),
    3,
    "a second [Interface] section (the first is on line 1)",
  ],
  ["no [Interface]", `# nothing\n[Peer]\nPublicKey = ${PUB_B}\n`, 0, "no [Interface] section"],
  ["empty file", "", 0, "no [Interface] section"],
  [
    "missing PrivateKey",
    "# c\n\n[Interface]\nAddress = 10.0.0.2/24\n",
    3,
    "[Interface] has no PrivateKey",
  ],
  [
    "bad base64 PrivateKey",
    "[Interface]\nPrivateKey = not-a-key\n",
    2,
    "PrivateKey is not 32 bytes of base64 (expected 44 characters",
  ],
  [
    "PrivateKey of 33 bytes",
    `[Interface]\nPrivateKey = ${btoa("x".repeat(33))}\n`,
    2,
    "PrivateKey is not 32 bytes of base64",
  ],
  [
    "non-canonical PrivateKey",
    `[Interface]\nPrivateKey = ${KEY_A.slice(0, 42)}V=\n`,
    2,
    "PrivateKey is not 32 bytes of base64 (the text is 44 characters",
  ],
  ["all-zero PrivateKey", `[Interface]\nPrivateKey = ${"A".repeat(43)}=\n`, 2, "all zeros"],
  [
    "PublicKey too short",
    iface(`\n[Peer]\nPublicKey = ${PUB_B.slice(1)}\n`),
    5,
    "PublicKey is not 32 bytes of base64",
  ],
  [
    "bad PresharedKey",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nPresharedKey = ${PSK}x\n`),
    5,
    "PresharedKey is not 32 bytes of base64",
  ],
  [
    "bad Address",
    iface("Address = 10.0.0.300/24\n"),
    3,
    'Address "10.0.0.300/24" is not an IP address',
  ],
  ["Address prefix too long", iface("Address = 10.0.0.1/33\n"), 3, 'Address "10.0.0.1/33"'],
  ["Address as a name", iface("Address = 10.0.0.2/24, myhost\n"), 3, 'Address "myhost"'],
  [
    "AllowedIPs bad CIDR",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nAllowedIPs = fd00::/129\n`),
    5,
    'AllowedIPs entry "fd00::/129"',
  ],
  [
    "AllowedIPs empty entry",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nAllowedIPs = 10.0.0.0/8,,10.1.0.0/16\n`),
    5,
    'AllowedIPs entry ""',
  ],
  [
    "AllowedIPs missing bits",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nAllowedIPs = 10.0.0.0/\n`),
    5,
    'AllowedIPs entry "10.0.0.0/"',
  ],
  [
    "ListenPort too big",
    iface("ListenPort = 65536\n"),
    3,
    'ListenPort must be a number from 0 to 65535, found "65536"',
  ],
  ["ListenPort negative", iface("ListenPort = -1\n"), 3, "ListenPort must be a number"],
  ["ListenPort empty", iface("ListenPort =\n"), 3, "ListenPort must be a number"],
  [
    "Endpoint without port",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nEndpoint = 1.2.3.4\n`),
    5,
    "is not host:port",
  ],
  [
    "Endpoint port too big",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nEndpoint = 1.2.3.4:65536\n`),
    5,
    "is not host:port",
  ],
  ["Endpoint port 0", iface(`[Peer]\nPublicKey = ${PUB_B}\nEndpoint = 1.2.3.4:0\n`), 5, "port 0"],
  [
    "Endpoint IPv6 without brackets",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nEndpoint = 2001:db8::1:51820\n`),
    5,
    "write it as [address]:port",
  ],
  [
    "Endpoint bad IPv6 in brackets",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nEndpoint = [vpn.example]:1\n`),
    5,
    "invalid IPv6",
  ],
  [
    "Endpoint bad IPv4",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nEndpoint = 300.1.1.1:1\n`),
    5,
    "invalid IPv4",
  ],
  [
    "Endpoint bad host name",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nEndpoint = bad host!:1\n`),
    5,
    "neither an IP address nor a DNS name",
  ],
  ["Endpoint empty", iface(`[Peer]\nPublicKey = ${PUB_B}\nEndpoint =\n`), 5, "Endpoint is empty"],
  ["MTU too small", iface("MTU = 100\n"), 3, 'MTU must be a number from 576 to 65535, found "100"'],
  ["MTU too big", iface("MTU = 70000\n"), 3, "MTU must be a number from 576 to 65535"],
  ["MTU not a number", iface("MTU = auto\n"), 3, "MTU must be a number"],
  [
    "MTU below 1280 with IPv6",
    iface("MTU = 1000\nAddress = 10.0.0.2/24, fd00::2/64\n"),
    3,
    "MTU 1000 is below 1280, the minimum for the IPv6 address",
  ],
  [
    "keepalive too big",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nPersistentKeepalive = 65536\n`),
    5,
    "PersistentKeepalive must be off or a number of seconds from 0 to 65535",
  ],
  [
    "keepalive on",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nPersistentKeepalive = on\n`),
    5,
    'found "on"',
  ],
  [
    "keepalive negative",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nPersistentKeepalive = -5\n`),
    5,
    "PersistentKeepalive must be",
  ],
  [
    "peer without PublicKey",
    iface(`[Peer]\nPublicKey = ${PUB_B}\n\n[Peer] # second\nAllowedIPs = 10.0.0.0/8\n`),
    6,
    "[Peer] has no PublicKey",
  ],
  [
    "two peers with the same key",
    iface(`[Peer]\nPublicKey = ${PUB_B}\n[Peer]\nAllowedIPs = 10.0.0.0/8\nPublicKey = ${PUB_B}\n`),
    7,
    "PublicKey is the same as the peer on line 3",
  ],
  [
    "peer key is our own",
    iface(`[Peer]\nPublicKey = ${PUB_A}\n`),
    4,
    "PublicKey is this interface's own public key",
  ],
  [
    "peer key in [Interface]",
    iface(`PublicKey = ${PUB_B}\n`),
    3,
    "PublicKey belongs in a [Peer] section",
  ],
  [
    "interface key in [Peer]",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nAddress = 10.0.0.2/24\n`),
    5,
    "Address belongs in the [Interface] section",
  ],
  [
    "wg-quick hook in [Peer]",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nPostUp = true\n`),
    5,
    "PostUp belongs in the [Interface] section",
  ],
  [
    "DNS server not an address",
    iface("DNS = 1.1.1\n"),
    3,
    'DNS server "1.1.1" is not an IP address',
  ],
  [
    "DNS search domain not a name",
    iface("DNS = 1.1.1.1, bad!domain\n"),
    3,
    'DNS entry "bad!domain"',
  ],
  [
    "Route unknown protocol",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nRoute = 10.0.0.0/8:icmp\n`),
    5,
    'Route "10.0.0.0/8:icmp": expected CIDR[:tcp|udp[:port]]',
  ],
  [
    "Route port without protocol",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nRoute = 10.0.0.0/8:443\n`),
    5,
    "expected CIDR[:tcp|udp[:port]]",
  ],
  [
    "Route port 0",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nRoute = 10.0.0.0/8:tcp:0\n`),
    5,
    "has a bad port",
  ],
  [
    "Route port too big",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nRoute = 10.0.0.0/8:tcp:65536\n`),
    5,
    "has a bad port",
  ],
  [
    "Route extra field",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nRoute = 10.0.0.0/8:tcp:443:1\n`),
    5,
    "expected CIDR",
  ],
  [
    "Route bad CIDR",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nRoute = 10.0.0.0/40:tcp\n`),
    5,
    "does not start with an IP address or CIDR prefix",
  ],
  [
    "Route with a name",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nRoute = example.com:tcp\n`),
    5,
    "does not start with an IP address",
  ],
  [
    "Route IPv6 without bits before protocol",
    iface(`[Peer]\nPublicKey = ${PUB_B}\nRoute = fd00::1:tcp\n`),
    5,
    "write an IPv6 route with its /prefix length",
  ],
  ["Route in [Interface]", iface("Route = 10.0.0.0/8\n"), 3, "Route belongs in a [Peer] section"],
];

Deno.test("errors name the file and the exact line", async (t) => {
  for (const [name, text, line, fragment] of ERRORS) {
    await t.step(name, () => {
      let caught: unknown;
      try {
        parseConfig(text, { file: "wg0.conf" });
      } catch (e) {
        caught = e;
      }
      assert.ok(caught instanceof ConfigError, `expected a ConfigError, got ${caught}`);
      assert.ok(caught instanceof SyntaxError);
      assert.equal(caught.file, "wg0.conf");
      assert.equal(caught.line, line, caught.message);
      const prefix = line > 0 ? `wg0.conf:${line}: ` : "wg0.conf: ";
      assert.ok(caught.message.startsWith(prefix), caught.message);
      assert.equal(caught.message, prefix + caught.reason);
      if (typeof fragment === "string") {
        assert.ok(caught.reason.includes(fragment), `"${caught.reason}" lacks "${fragment}"`);
      } else {
        assert.match(caught.reason, fragment);
      }
    });
  }
});

Deno.test("error messages never echo a secret key's text", () => {
  const almost = KEY_A.slice(0, 43); // a real key missing its padding
  for (
    const text of [
      `[Interface]\nPrivateKey = ${almost}\n`,
      iface(`[Peer]\nPublicKey = ${PUB_B}\nPresharedKey = ${almost}\n`),
      `[Interface]\n${almost}\n`, // a key pasted without "PrivateKey ="
      `[Interface]\nPrivateKey ${almost}\n`,
    ]
  ) {
    assert.throws(() => parseConfig(text), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.ok(!e.message.includes(almost), e.message);
      return true;
    });
  }
});

Deno.test("the default file name is <config>", () => {
  assert.throws(() => parseConfig("[Interface]\nbogus\n"), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.equal(e.file, "<config>");
    assert.ok(e.message.startsWith("<config>:2: "), e.message);
    return true;
  });
});

Deno.test("warnings", async (t) => {
  await t.step("keys only wg-quick acts on are accepted and warned about", () => {
    const c = parseConfig(iface(
      "PreUp = echo 1\npostup = echo 2\nPreDown = echo 3\nPOSTDOWN = echo 4\n" +
        "Table = 1234\nSaveConfig = true\nFwMark = 51820\n",
    ));
    assert.deepEqual(c.warnings.map((w) => [w.line, w.key]), [
      [3, "PreUp"],
      [4, "PostUp"],
      [5, "PreDown"],
      [6, "PostDown"],
      [7, "Table"],
      [8, "SaveConfig"],
      [9, "FwMark"],
    ]);
    for (const w of c.warnings) {
      assert.ok(w.message.startsWith(`${w.key} has no effect in wrapguard: `), w.message);
    }
  });
  await t.step("a repeated single-valued key: the later value wins, with a warning", () => {
    const c = parseConfig(
      iface(
        `ListenPort = 1000\nListenPort = 2000\n[Peer]\nPublicKey = ${PUB_C}\nPublicKey = ${PUB_B}\n`,
      ),
    );
    assert.equal(c.interface.listenPort, 2000);
    assert.equal(encodeKey(c.peers[0]!.publicKey), PUB_B);
    assert.deepEqual(c.warnings.map((w) => [w.line, w.key]), [[4, "ListenPort"], [7, "PublicKey"]]);
    assert.match(c.warnings[0]!.message, /line 3 set it first/);
  });
  await t.step("a prefix in two peers' AllowedIPs goes to the later peer, as in wg", () => {
    const c = parseConfig(iface(
      `[Peer]\nPublicKey = ${PUB_B}\nAllowedIPs = 10.0.0.0/24, 10.0.1.0/24\n` +
        `[Peer]\nPublicKey = ${PUB_C}\nAllowedIPs = 10.0.0.7/24\n`,
    ));
    assert.deepEqual(prefixes(c.peers[0]!.allowedIPs), ["10.0.1.0/24"]);
    assert.deepEqual(prefixes(c.peers[1]!.allowedIPs), ["10.0.0.0/24"]);
    assert.equal(c.warnings.length, 1);
    assert.equal(c.warnings[0]!.line, 8);
    assert.equal(c.warnings[0]!.key, "AllowedIPs");
    assert.match(
      c.warnings[0]!.message,
      /10\.0\.0\.0\/24 is also in AllowedIPs of the peer on line 3/,
    );
  });
  await t.step(
    "a Route outside the peer's AllowedIPs is warned about (replies would be dropped)",
    () => {
      const c = parseConfig(iface(
        `[Peer]\nPublicKey = ${PUB_B}\nAllowedIPs = 10.0.0.0/8\nRoute = 10.1.0.0/16:tcp, 192.168.0.0/16\nRoute = 10.0.0.0/7\n`,
      ));
      assert.deepEqual(c.warnings.map((w) => [w.line, w.key]), [[6, "Route"], [7, "Route"]]);
      assert.match(c.warnings[0]!.message, /Route 192\.168\.0\.0\/16 is not inside/);
      assert.match(c.warnings[1]!.message, /Route 10\.0\.0\.0\/7 is not inside/);
      assert.equal(c.peers[0]!.routes.length, 3, "the routes are still kept");
    },
  );
});

Deno.test("loadConfig: errors and warnings name the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const bad = `${dir}/broken.conf`;
    await Deno.writeTextFile(bad, iface("MTU = 9\n"));
    await assert.rejects(() => loadConfig(bad), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.file, bad);
      assert.ok(e.message.startsWith(`${bad}:3: MTU`), e.message);
      return true;
    });

    await assert.rejects(() => loadConfig(`${dir}/missing.conf`), (e: unknown) => {
      assert.ok(e instanceof Deno.errors.NotFound);
      assert.ok((e as Error).message.includes(`${dir}/missing.conf`), (e as Error).message);
      return true;
    });

    const good = `${dir}/wg0.conf`;
    await Deno.writeTextFile(good, iface(), { mode: 0o600 });
    await Deno.chmod(good, 0o600);
    assert.deepEqual((await loadConfig(good)).warnings, []);
    await Deno.chmod(good, 0o644);
    const warned = (await loadConfig(good)).warnings;
    assert.equal(warned.length, 1);
    assert.deepEqual([warned[0]!.line, warned[0]!.key], [0, ""]);
    assert.match(warned[0]!.message, /wg0\.conf is world accessible/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a Config built by hand formats and parses back", () => {
  const parsed = parseConfig(iface(`[Peer]\nPublicKey = ${PUB_B}\n`));
  const built: Config = {
    interface: {
      privateKey: parsed.interface.privateKey,
      addresses: [{ addr: new Uint8Array([10, 7, 0, 1]), bits: 16 }],
      dns: { servers: [new Uint8Array([10, 7, 0, 53])], search: [] },
      listenPort: 4500,
    },
    peers: [{
      publicKey: parsed.peers[0]!.publicKey,
      allowedIPs: [{ addr: new Uint8Array([10, 7, 0, 0]), bits: 16 }],
      routes: [{ prefix: { addr: new Uint8Array([10, 7, 3, 0]), bits: 24 }, protocol: "tcp" }],
      endpoint: { host: "fe80::1", port: 1 },
      line: 0,
    }],
    warnings: [],
  };
  const text = formatConfig(built);
  assert.match(text, /^Endpoint = \[fe80::1\]:1$/m);
  assert.match(text, /^Route = 10\.7\.3\.0\/24:tcp$/m);
  assert.deepEqual(essence(parseConfig(text)), essence(built));
});
