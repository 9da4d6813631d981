import assert from "node:assert/strict";
import { type IpBytes, parseIP } from "../core/wire/addr.ts";
import { internetChecksum } from "../core/wire/checksum.ts";
import { emitIcmp, IcmpPacket, type IcmpRepr } from "../core/wire/icmp.ts";
import { emitIpv4, Ipv4Packet } from "../core/wire/ipv4.ts";
import { emitIpv6, emitIpv6Fragment, Ipv6Packet } from "../core/wire/ipv6.ts";
import { emitUdp, UdpPacket } from "../core/wire/udp.ts";
import { Stack, type StackOptions, type StackStats } from "../core/netstack/stack.ts";
import type { Transport } from "../core/netstack/types.ts";

// ---------------------------------------------------------------------------------------------
// Packet builders (on top of the wire emitters, which have their own byte-exact tests)

const ip = (s: string): IpBytes => parseIP(s)!;
const A4 = ip("10.0.0.1"), B4 = ip("10.0.0.2"), C4 = ip("10.0.0.3");
const A6 = ip("fd00::1"), B6 = ip("fd00::2"), C6 = ip("fd00::3");

function concat(...parts: (Uint8Array | number[])[]): Uint8Array {
  const arrs = parts.map((p) => (p instanceof Uint8Array ? p : Uint8Array.from(p)));
  const out = new Uint8Array(arrs.reduce((n, a) => n + a.length, 0));
  let o = 0;
  for (const a of arrs) {
    out.set(a, o);
    o += a.length;
  }
  return out;
}

interface V4Opts {
  ident?: number;
  df?: boolean;
  mf?: boolean;
  offset?: number;
}

function v4(src: IpBytes, dst: IpBytes, protocol: number, payload: Uint8Array, o: V4Opts = {}) {
  const b = new Uint8Array(20 + payload.length);
  emitIpv4({
    src,
    dst,
    protocol,
    payloadLen: payload.length,
    ttl: 64,
    ident: o.ident ?? 7,
    dontFragment: o.df ?? false,
    moreFragments: o.mf,
    fragmentOffset: o.offset,
  }, b);
  b.set(payload, 20);
  return b;
}

function v6(src: IpBytes, dst: IpBytes, nextHeader: number, payload: Uint8Array): Uint8Array {
  const b = new Uint8Array(40 + payload.length);
  emitIpv6({ src, dst, nextHeader, payloadLen: payload.length, hopLimit: 64 }, b);
  b.set(payload, 40);
  return b;
}

function udp(src: IpBytes, dst: IpBytes, sp: number, dp: number, data: Uint8Array): Uint8Array {
  const b = new Uint8Array(8 + data.length);
  emitUdp({ srcPort: sp, dstPort: dp, payloadLen: data.length }, b, src, dst, data);
  return b;
}

function icmp(repr: IcmpRepr, v6addrs?: { src: IpBytes; dst: IpBytes }): Uint8Array {
  const b = new Uint8Array(8 + repr.data.length);
  emitIcmp(repr, b, v6addrs);
  return b;
}

/** A generic IPv6 extension header with `body` after the two first bytes (padded to 8n). */
function ext(nextHeader: number, body: number[]): Uint8Array {
  const len = Math.ceil((body.length + 2) / 8) * 8;
  const b = new Uint8Array(len);
  b[0] = nextHeader;
  b[1] = len / 8 - 1;
  b.set(body, 2);
  return b;
}

function fragHdr(nextHeader: number, offset: number, more: boolean, ident: number): Uint8Array {
  const b = new Uint8Array(8);
  emitIpv6Fragment({ nextHeader, fragmentOffset: offset, moreFragments: more, ident }, b);
  return b;
}

function pattern(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

/** Splits an IPv4 payload into fragments at the given byte boundaries. */
function v4Frags(
  src: IpBytes,
  dst: IpBytes,
  protocol: number,
  ident: number,
  payload: Uint8Array,
  pieces: [number, number][],
): Uint8Array[] {
  return pieces.map(([start, end]) =>
    v4(src, dst, protocol, payload.subarray(start, end), {
      ident,
      mf: end < payload.length,
      offset: start,
    })
  );
}

function v6Frags(
  src: IpBytes,
  dst: IpBytes,
  nextHeader: number,
  ident: number,
  payload: Uint8Array,
  pieces: [number, number][],
): Uint8Array[] {
  return pieces.map(([start, end]) =>
    v6(
      src,
      dst,
      44,
      concat(fragHdr(nextHeader, start, end < payload.length, ident), payload.subarray(start, end)),
    )
  );
}

const OUTCOMES = [
  "delivered",
  "fragments",
  "malformed",
  "checksum",
  "notForUs",
  "martian",
  "noProtocol",
  "noPort",
  "extensionHeader",
  "icmpIgnored",
  "reassemblyOverlap",
  "reassemblyTooBig",
  "reassemblyMemory",
] as const satisfies readonly (keyof StackStats)[];

function outcomes(s: StackStats): Record<string, number> {
  const o: Record<string, number> = {};
  for (const k of OUTCOMES) if (s[k] !== 0) o[k] = s[k];
  return o;
}

/** Every input() ends in exactly one outcome (a completing fragment takes its datagram's). */
function outcomeSum(s: StackStats): number {
  return OUTCOMES.reduce((n, k) => n + s[k], 0);
}

interface Received {
  data: Uint8Array;
  from: IpBytes;
  port: number;
  to: IpBytes;
}

/** Stack A (10.0.0.1, fd00::1) with a wildcard UDP socket on port 7 that records datagrams. */
function setup(opts: Partial<StackOptions> = {}) {
  const out: Uint8Array[] = [];
  const stack = new Stack({
    addresses: [A4, A6],
    mtu: 1420,
    output: (p) => out.push(p),
    random: () => 0.5,
    ...opts,
  });
  const got: Received[] = [];
  const sock = stack.udp.bind({ port: 7 });
  sock.onDatagram = (data, from, port, to) => got.push({ data: data.slice(), from, port, to });
  return { stack, out, got, sock };
}

// ---------------------------------------------------------------------------------------------
// The table: every packet ends in exactly one counter and nothing throws.

const hello = new TextEncoder().encode("hello");
const udp4 = (dp = 7, src = B4, dst = A4) => udp(src, dst, 4000, dp, hello);
const udp6 = (dp = 7, src = B6, dst = A6) => udp(src, dst, 4000, dp, hello);
const goodV4 = () => v4(B4, A4, 17, udp4());
const goodV6 = () => v6(B6, A6, 17, udp6());

function mutate(p: Uint8Array, f: (b: Uint8Array) => void, fixV4Checksum = false): Uint8Array {
  const b = p.slice();
  f(b);
  if (fixV4Checksum) {
    b[10] = b[11] = 0;
    const c = internetChecksum(b, 0, (b[0]! & 0x0f) * 4);
    b[10] = c >> 8;
    b[11] = c & 0xff;
  }
  return b;
}

interface Case {
  name: string;
  packet: Uint8Array;
  counter: (typeof OUTCOMES)[number];
  /** Packets the stack sends in answer (ICMP errors). */
  replies?: number;
}

const CASES: Case[] = [
  // --- controls: these are delivered
  { name: "v4 UDP to an open port", packet: goodV4(), counter: "delivered" },
  { name: "v6 UDP to an open port", packet: goodV6(), counter: "delivered" },
  {
    name: "v4 UDP with zero checksum (RFC 768 allows)",
    packet: v4(B4, A4, 17, mutate(udp4(), (b) => (b[6] = b[7] = 0))),
    counter: "delivered",
  },
  {
    name: "v4 with IP options (IHL 6)",
    packet: (() => {
      const u = udp4();
      const b = new Uint8Array(24 + u.length);
      b.set(v4(B4, A4, 17, u).subarray(0, 20));
      b.set(u, 24);
      b[0] = 0x46;
      b[2] = b.length >> 8;
      b[3] = b.length & 0xff;
      b[20] = 1; // NOP options
      b[21] = 1;
      b[22] = 1;
      b[23] = 0;
      return mutate(b, () => {}, true);
    })(),
    counter: "delivered",
  },
  {
    name: "v4 with link padding after Total Length",
    packet: concat(goodV4(), [0, 0, 0, 0]),
    counter: "delivered",
  },
  {
    name: "v6 Hop-by-Hop (router alert, skippable) + Dest Opts (PadN) + UDP",
    packet: v6(B6, A6, 0, concat(ext(60, [5, 2, 0, 0]), ext(17, [1, 4, 0, 0, 0, 0]), udp6())),
    counter: "delivered",
  },
  {
    name: "v6 unknown option with action 00 is skipped",
    packet: v6(B6, A6, 60, concat(ext(17, [0x1e, 2, 9, 9]), udp6())),
    counter: "delivered",
  },
  {
    name: "v6 Routing header with Segments Left 0 is ignored",
    packet: v6(B6, A6, 43, concat(ext(17, [4, 0, 0, 0, 0, 0]), udp6())),
    counter: "delivered",
  },
  {
    name: "v6 atomic fragment (RFC 6946)",
    packet: v6(B6, A6, 44, concat(fragHdr(17, 0, false, 99), udp6())),
    counter: "delivered",
  },
  {
    name: "v4 ICMP echo request is answered",
    packet: v4(B4, A4, 1, icmp({ kind: "echo-request", ident: 1, seq: 1, data: hello })),
    counter: "delivered",
    replies: 1,
  },
  {
    name: "v6 ICMPv6 echo request is answered",
    packet: v6(
      B6,
      A6,
      58,
      icmp({ kind: "echo-request", ident: 1, seq: 1, data: hello }, { src: B6, dst: A6 }),
    ),
    counter: "delivered",
    replies: 1,
  },
  // --- IP layer, both families
  { name: "empty", packet: new Uint8Array(0), counter: "malformed" },
  { name: "version 0", packet: new Uint8Array(40), counter: "malformed" },
  { name: "version 5", packet: mutate(goodV4(), (b) => (b[0] = 0x55)), counter: "malformed" },
  { name: "v4 19 bytes", packet: goodV4().subarray(0, 19), counter: "malformed" },
  { name: "v4 IHL 4", packet: mutate(goodV4(), (b) => (b[0] = 0x44), true), counter: "malformed" },
  {
    name: "v4 IHL past the packet",
    packet: mutate(goodV4(), (b) => (b[0] = 0x4f)).subarray(0, 40),
    counter: "malformed",
  },
  {
    name: "v4 Total Length below header",
    packet: mutate(goodV4(), (b) => (b[2] = 0, b[3] = 16), true),
    counter: "malformed",
  },
  {
    name: "v4 Total Length past the buffer",
    packet: mutate(goodV4(), (b) => (b[3]! += 1), true),
    counter: "malformed",
  },
  {
    name: "v4 bad header checksum",
    packet: mutate(goodV4(), (b) => (b[8] = 1)),
    counter: "checksum",
  },
  { name: "v4 not our address", packet: v4(B4, C4, 17, udp4(7, B4, C4)), counter: "notForUs" },
  { name: "v4 source is ours", packet: v4(A4, A4, 17, udp4(7, A4, A4)), counter: "martian" },
  {
    name: "v4 source broadcast",
    packet: v4(ip("255.255.255.255"), A4, 17, udp4(7, ip("255.255.255.255"))),
    counter: "martian",
  },
  {
    name: "v4 source multicast",
    packet: v4(ip("224.0.0.1"), A4, 17, udp4(7, ip("224.0.0.1"))),
    counter: "martian",
  },
  {
    name: "v4 source loopback",
    packet: v4(ip("127.0.0.1"), A4, 17, udp4(7, ip("127.0.0.1"))),
    counter: "martian",
  },
  {
    name: "v4 source unspecified",
    packet: v4(ip("0.0.0.0"), A4, 17, udp4(7, ip("0.0.0.0"))),
    counter: "martian",
  },
  {
    name: "v4 unknown protocol gets Protocol Unreachable",
    packet: v4(B4, A4, 253, hello),
    counter: "noProtocol",
    replies: 1,
  },
  {
    name: "v4 carrying ICMPv6 (58) is an unknown protocol",
    packet: v4(B4, A4, 58, new Uint8Array(8)),
    counter: "noProtocol",
    replies: 1,
  },
  { name: "v6 39 bytes", packet: goodV6().subarray(0, 39), counter: "malformed" },
  {
    name: "v6 Payload Length past the buffer",
    packet: mutate(goodV6(), (b) => (b[5]! += 1)),
    counter: "malformed",
  },
  { name: "v6 not our address", packet: v6(B6, C6, 17, udp6(7, B6, C6)), counter: "notForUs" },
  { name: "v6 source is ours", packet: v6(A6, A6, 17, udp6(7, A6, A6)), counter: "martian" },
  {
    name: "v6 source multicast",
    packet: v6(ip("ff02::1"), A6, 17, udp6(7, ip("ff02::1"))),
    counter: "martian",
  },
  { name: "v6 source ::1", packet: v6(ip("::1"), A6, 17, udp6(7, ip("::1"))), counter: "martian" },
  { name: "v6 source ::", packet: v6(ip("::"), A6, 17, udp6(7, ip("::"))), counter: "martian" },
  {
    name: "v6 unknown next header gets Parameter Problem",
    packet: v6(B6, A6, 253, hello),
    counter: "noProtocol",
    replies: 1,
  },
  {
    name: "v6 carrying ICMPv4 (1) is an unknown protocol",
    packet: v6(B6, A6, 1, new Uint8Array(8)),
    counter: "noProtocol",
    replies: 1,
  },
  { name: "v6 No Next Header", packet: v6(B6, A6, 59, new Uint8Array(0)), counter: "noProtocol" },
  {
    name: "v6 Hop-by-Hop not first (RFC 8200 4.1)",
    packet: v6(B6, A6, 60, concat(ext(0, []), ext(17, []), udp6())),
    counter: "extensionHeader",
    replies: 1,
  },
  {
    name: "v6 unknown option, action 01: discard silently",
    packet: v6(B6, A6, 60, concat(ext(17, [0x41, 2, 0, 0]), udp6())),
    counter: "extensionHeader",
  },
  {
    name: "v6 unknown option, action 10: discard, Parameter Problem",
    packet: v6(B6, A6, 60, concat(ext(17, [0x81, 2, 0, 0]), udp6())),
    counter: "extensionHeader",
    replies: 1,
  },
  {
    name: "v6 Jumbo Payload option (0xc2) is not supported",
    packet: v6(B6, A6, 0, concat(ext(17, [0xc2, 4, 0, 0, 0, 0]), udp6())),
    counter: "extensionHeader",
    replies: 1,
  },
  {
    name: "v6 Routing header with Segments Left",
    packet: v6(B6, A6, 43, concat(ext(17, [4, 1, 0, 0, 0, 0]), udp6())),
    counter: "extensionHeader",
    replies: 1,
  },
  {
    name: "v6 extension header longer than the packet",
    packet: v6(B6, A6, 60, mutate(ext(17, []), (b) => (b[1] = 3))),
    counter: "malformed",
  },
  {
    name: "v6 extension header cut short",
    packet: v6(B6, A6, 60, new Uint8Array([17, 0, 1, 0])),
    counter: "malformed",
  },
  {
    name: "v6 option running past its header",
    packet: v6(B6, A6, 60, concat(ext(17, [1, 9, 0, 0]), udp6())),
    counter: "malformed",
  },
  {
    name: "v6 Fragment header cut short",
    packet: v6(B6, A6, 44, new Uint8Array([17, 0, 0, 1])),
    counter: "malformed",
  },
  // --- UDP
  {
    name: "v4 UDP shorter than its header",
    packet: v4(B4, A4, 17, udp4().subarray(0, 7)),
    counter: "malformed",
  },
  {
    name: "v4 UDP Length past the IP payload",
    packet: v4(B4, A4, 17, mutate(udp4(), (b) => (b[5]! += 1))),
    counter: "malformed",
  },
  {
    name: "v4 UDP Length below 8",
    packet: v4(B4, A4, 17, mutate(udp4(), (b) => (b[5] = 7))),
    counter: "malformed",
  },
  {
    name: "v4 UDP bad checksum",
    packet: v4(B4, A4, 17, mutate(udp4(), (b) => (b[8]! ^= 1))),
    counter: "checksum",
  },
  {
    name: "v4 UDP to a closed port gets Port Unreachable",
    packet: v4(B4, A4, 17, udp4(9)),
    counter: "noPort",
    replies: 1,
  },
  {
    name: "v4 UDP to port 0",
    packet: v4(B4, A4, 17, udp4(0)),
    counter: "noPort",
    replies: 1,
  },
  {
    name: "v6 UDP zero checksum (RFC 8200 8.1)",
    packet: v6(B6, A6, 17, mutate(udp6(), (b) => (b[6] = b[7] = 0))),
    counter: "checksum",
  },
  {
    name: "v6 UDP bad checksum",
    packet: v6(B6, A6, 17, mutate(udp6(), (b) => (b[9]! ^= 1))),
    counter: "checksum",
  },
  {
    name: "v6 UDP to a closed port gets Port Unreachable",
    packet: v6(B6, A6, 17, udp6(9)),
    counter: "noPort",
    replies: 1,
  },
  // --- ICMP
  {
    name: "v4 ICMP shorter than 8",
    packet: v4(B4, A4, 1, new Uint8Array(7)),
    counter: "malformed",
  },
  {
    name: "v4 ICMP bad checksum",
    packet: v4(
      B4,
      A4,
      1,
      mutate(icmp({ kind: "echo-request", ident: 1, seq: 1, data: hello }), (b) => (b[8]! ^= 1)),
    ),
    counter: "checksum",
  },
  {
    name: "v6 ICMPv6 checksum without the pseudo-header",
    packet: v6(B6, A6, 58, icmp({ kind: "echo-request", ident: 1, seq: 1, data: hello })),
    counter: "checksum",
  },
  {
    name: "v4 ICMP timestamp (unhandled type)",
    packet: v4(B4, A4, 1, icmp({ kind: "other", type: 13, code: 0, data: new Uint8Array(12) })),
    counter: "icmpIgnored",
  },
  {
    name: "v4 ICMP error quoting a packet we did not send",
    packet: v4(
      B4,
      A4,
      1,
      icmp({
        kind: "dest-unreachable",
        code: 3,
        value: 0,
        data: v4(C4, B4, 17, udp(C4, B4, 7, 9, hello)),
      }),
    ),
    counter: "icmpIgnored",
  },
  {
    name: "v4 ICMP error with a quote too short for ports",
    packet: v4(
      B4,
      A4,
      1,
      icmp({
        kind: "dest-unreachable",
        code: 3,
        value: 0,
        data: v4(A4, B4, 17, udp(A4, B4, 7, 9, hello)).subarray(0, 24),
      }),
    ),
    counter: "icmpIgnored",
  },
  {
    name: "v4 ICMP error for a socket that is not connected",
    packet: v4(
      B4,
      A4,
      1,
      icmp({
        kind: "dest-unreachable",
        code: 3,
        value: 0,
        data: v4(A4, B4, 17, udp(A4, B4, 7, 9, hello)),
      }),
    ),
    counter: "icmpIgnored",
  },
  // --- fragments
  {
    name: "v4 fragment with MF and a length not a multiple of 8",
    packet: v4(B4, A4, 17, new Uint8Array(12), { mf: true }),
    counter: "malformed",
  },
  {
    name: "v4 empty fragment",
    packet: v4(B4, A4, 17, new Uint8Array(0), { offset: 8 }),
    counter: "malformed",
  },
  {
    name: "v4 fragment past 65535 bytes (ping of death)",
    packet: v4(B4, A4, 1, new Uint8Array(16), { offset: 65520 }),
    counter: "reassemblyTooBig",
  },
  {
    name: "v4 first fragment is kept",
    packet: v4(B4, A4, 17, new Uint8Array(16), { mf: true }),
    counter: "fragments",
  },
  {
    name: "v6 fragment with M and a length not a multiple of 8",
    packet: v6(B6, A6, 44, concat(fragHdr(17, 0, true, 5), new Uint8Array(12))),
    counter: "malformed",
  },
  {
    name: "v6 fragment past 65535 bytes",
    packet: v6(B6, A6, 44, concat(fragHdr(17, 65528, false, 5), new Uint8Array(16))),
    counter: "reassemblyTooBig",
  },
];

Deno.test("input: each packet is counted under exactly one outcome, nothing throws", async (t) => {
  for (const c of CASES) {
    await t.step(c.name, () => {
      const { stack, out } = setup();
      stack.input(0, c.packet);
      assert.equal(stack.stats.received, 1);
      assert.deepEqual(outcomes(stack.stats), { [c.counter]: 1 });
      assert.equal(out.length, c.replies ?? 0, "packets sent in answer");
      for (const p of out) assertWellFormed(p, 1420);
    });
  }
});

Deno.test("input: controls reach the socket with the right addresses", () => {
  const { stack, got } = setup();
  stack.input(0, goodV4());
  stack.input(0, goodV6());
  assert.equal(got.length, 2);
  assert.deepEqual(got[0], { data: hello, from: B4, port: 4000, to: A4 });
  assert.deepEqual(got[1], { data: hello, from: B6, port: 4000, to: A6 });
});

Deno.test("input: Parameter Problem pointers name the offending byte (RFC 4443 3.4)", () => {
  const cases: [Uint8Array, number, number][] = [
    [v6(B6, A6, 253, hello), 1, 6],
    // Unknown protocol behind a Destination Options header: the pointer is that header's byte 0.
    [v6(B6, A6, 60, concat(ext(253, []), hello)), 1, 40],
    [v6(B6, A6, 60, concat(ext(17, [0x81, 2, 0, 0]), udp6())), 2, 42],
    [v6(B6, A6, 43, concat(ext(17, [4, 1, 0, 0, 0, 0]), udp6())), 0, 42],
  ];
  for (const [packet, code, pointer] of cases) {
    const { stack, out } = setup();
    stack.input(0, packet);
    assert.equal(out.length, 1);
    const ipr = new Ipv6Packet(out[0]!);
    assert.deepEqual(ipr.dst, B6);
    const m = new IcmpPacket(ipr.payload);
    assert.equal(m.type, 4);
    assert.equal(m.code, code);
    assert.equal(m.rest, pointer);
    assert.deepEqual(m.data, packet);
  }
});

/** Our own output must always parse: header, checksums, size. */
function assertWellFormed(p: Uint8Array, mtu: number): void {
  assert.ok(p.length <= mtu, `packet of ${p.length} > MTU ${mtu}`);
  if (p[0]! >> 4 === 4) {
    const ip4 = Ipv4Packet.check(p);
    assert.ok(ip4 instanceof Ipv4Packet);
    assert.equal(ip4.packet.length, p.length);
    assert.ok(ip4.verifyChecksum());
    if (ip4.isFragment) return;
    if (ip4.protocol === 1) assert.ok(new IcmpPacket(ip4.payload).verifyChecksumV4());
    if (ip4.protocol === 17) assert.ok(new UdpPacket(ip4.payload).verifyChecksum(ip4.src, ip4.dst));
  } else {
    const ip6 = Ipv6Packet.check(p);
    assert.ok(ip6 instanceof Ipv6Packet);
    assert.equal(ip6.packet.length, p.length);
    if (ip6.nextHeader === 58) {
      assert.ok(new IcmpPacket(ip6.payload).verifyChecksumV6(ip6.src, ip6.dst));
    }
    if (ip6.nextHeader === 17) {
      assert.ok(new UdpPacket(ip6.payload).verifyChecksum(ip6.src, ip6.dst));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Reassembly

const DATA = pattern(3000, 42);

Deno.test("reassembly v4: in order, out of order, duplicated", async (t) => {
  const src = B4, dst = A4;
  const dgram = udp(src, dst, 4000, 7, DATA);
  const pieces: [number, number][] = [[0, 1480], [1480, 2960], [2960, dgram.length]];
  const orders: [string, number[]][] = [
    ["in order", [0, 1, 2]],
    ["reversed", [2, 1, 0]],
    ["last first", [2, 0, 1]],
    ["duplicated middle and first", [0, 1, 1, 0, 2]],
    ["duplicated last", [2, 2, 1, 0]],
  ];
  for (const [name, order] of orders) {
    await t.step(name, () => {
      const { stack, got } = setup();
      const frags = v4Frags(src, dst, 17, 0x4242, dgram, pieces);
      for (const i of order) stack.input(1000, frags[i]!);
      assert.equal(got.length, 1);
      assert.deepEqual(got[0]!.data, DATA);
      assert.equal(stack.stats.reassembled, 1);
      assert.equal(stack.stats.fragments, order.length - 1);
      assert.equal(stack.stats.delivered, 1);
      assert.equal(stack.reassemblyMemory, 0);
      assert.equal(stack.pollAt(), Infinity);
    });
  }
  await t.step("a duplicate after completion is not delivered twice", () => {
    const { stack, got } = setup();
    const frags = v4Frags(src, dst, 17, 0x4243, dgram, pieces);
    for (const i of [0, 1, 2, 1]) stack.input(0, frags[i]!);
    assert.equal(got.length, 1);
    // It starts a new datagram that can only time out.
    assert.ok(stack.reassemblyMemory > 0);
    assert.equal(stack.pollAt(), 30_000);
    stack.tick(30_000);
    assert.equal(stack.reassemblyMemory, 0);
    assert.equal(got.length, 1);
  });
  await t.step("many small fragments in a shuffled order", () => {
    const { stack, got } = setup();
    const ps: [number, number][] = [];
    for (let s = 0; s < dgram.length; s += 64) ps.push([s, Math.min(s + 64, dgram.length)]);
    const frags = v4Frags(src, dst, 17, 0x77, dgram, ps);
    const rnd = pattern(frags.length, 9);
    const order = frags.map((_, i) => i).sort((a, b) => rnd[a]! - rnd[b]! || a - b);
    for (const i of order) stack.input(0, frags[i]!);
    assert.equal(got.length, 1);
    assert.deepEqual(got[0]!.data, DATA);
  });
  await t.step("fragments of two interleaved datagrams do not mix", () => {
    const { stack, got } = setup();
    const other = udp(src, dst, 4001, 7, pattern(3000, 3));
    const f1 = v4Frags(src, dst, 17, 1, dgram, pieces);
    const f2 = v4Frags(src, dst, 17, 2, other, pieces);
    for (let i = 0; i < 3; i++) {
      stack.input(0, f1[i]!);
      stack.input(0, f2[2 - i]!);
    }
    assert.equal(got.length, 2);
    assert.deepEqual(got.map((g) => g.port).sort(), [4000, 4001]);
    assert.deepEqual(got.find((g) => g.port === 4000)!.data, DATA);
    assert.deepEqual(got.find((g) => g.port === 4001)!.data, pattern(3000, 3));
  });
});

Deno.test("reassembly v4: overlap abandons the datagram, later pieces too", () => {
  const { stack, got, out } = setup();
  const dgram = udp(B4, A4, 4000, 7, DATA);
  const [f0, f1, f2] = v4Frags(B4, A4, 17, 9, dgram, [[0, 1480], [1472, 2960], [2960, 3008]]);
  stack.input(0, f0!);
  stack.input(0, f1!); // starts 8 bytes inside f0
  assert.equal(stack.stats.reassemblyOverlap, 1);
  stack.input(0, f2!);
  assert.equal(stack.stats.reassemblyOverlap, 2);
  assert.equal(got.length, 0);
  // Only the bookkeeping of the abandoned datagram is left.
  assert.ok(stack.reassemblyMemory > 0 && stack.reassemblyMemory < 1000);
  stack.tick(30_000);
  assert.equal(stack.reassemblyMemory, 0);
  // Abandoned, not timed out: no Time Exceeded for it.
  assert.equal(stack.stats.reassemblyTimeout, 0);
  assert.equal(out.length, 0);
  // The same identification works again afterwards.
  for (const f of v4Frags(B4, A4, 17, 9, dgram, [[0, 1480], [1480, 3008]])) stack.input(31_000, f);
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]!.data, DATA);
});

Deno.test("reassembly v4: a last fragment contradicting the known end abandons", () => {
  const { stack, got } = setup();
  const dgram = udp(B4, A4, 4000, 7, DATA);
  stack.input(0, v4(B4, A4, 17, dgram.subarray(2960), { ident: 3, offset: 2960 }));
  stack.input(0, v4(B4, A4, 17, dgram.subarray(1480, 2000), { ident: 3, offset: 1480 }));
  assert.equal(stack.stats.malformed, 1);
  stack.input(0, v4(B4, A4, 17, dgram.subarray(0, 1480), { ident: 3, mf: true }));
  assert.equal(stack.stats.reassemblyOverlap, 1);
  assert.equal(got.length, 0);
});

Deno.test("reassembly v4: timeout after 30 s sends Time Exceeded quoting fragment 0", () => {
  const { stack, out, got } = setup();
  const dgram = udp(B4, A4, 4000, 7, DATA);
  const [f0, , f2] = v4Frags(B4, A4, 17, 5, dgram, [[0, 1480], [1480, 2960], [2960, 3008]]);
  stack.input(10_000, f0!);
  stack.input(12_000, f2!);
  assert.equal(stack.pollAt(), 40_000);
  stack.tick(39_999);
  assert.equal(stack.stats.reassemblyTimeout, 0);
  assert.equal(out.length, 0);
  stack.tick(40_000);
  assert.equal(stack.stats.reassemblyTimeout, 1);
  assert.equal(stack.reassemblyMemory, 0);
  assert.equal(stack.pollAt(), Infinity);
  assert.equal(out.length, 1);
  assertWellFormed(out[0]!, 1420);
  const reply = new Ipv4Packet(out[0]!);
  assert.deepEqual(reply.dst, B4);
  assert.deepEqual(reply.src, A4);
  const m = new IcmpPacket(reply.payload);
  assert.equal(m.type, 11);
  assert.equal(m.code, 1);
  // RFC 1812 4.3.2.3: as much of the original as fits in 576 bytes.
  assert.equal(reply.totalLen, 576);
  assert.deepEqual(m.data, f0!.subarray(0, 576 - 28));
  // The missing piece alone, later, starts a new datagram and completes nothing.
  stack.input(41_000, v4Frags(B4, A4, 17, 5, dgram, [[1480, 2960]])[0]!);
  assert.equal(got.length, 0);
});

Deno.test("reassembly v4: timeout without fragment 0 sends nothing", () => {
  const { stack, out } = setup();
  const dgram = udp(B4, A4, 4000, 7, DATA);
  stack.input(0, v4Frags(B4, A4, 17, 5, dgram, [[1480, 2960]])[0]!);
  stack.tick(30_000);
  assert.equal(stack.stats.reassemblyTimeout, 1);
  assert.equal(out.length, 0);
});

Deno.test("reassembly: no Time Exceeded about an ICMP error", () => {
  const { stack, out } = setup();
  const err = icmp({ kind: "dest-unreachable", code: 1, value: 0, data: new Uint8Array(1600) });
  stack.input(0, v4Frags(B4, A4, 1, 8, err, [[0, 1480]])[0]!);
  stack.tick(30_000);
  assert.equal(stack.stats.reassemblyTimeout, 1);
  assert.equal(out.length, 0);
});

Deno.test("reassembly: memory cap refuses fragments, frees on completion and timeout", () => {
  const { stack, got } = setup({ reassembly: { memory: 8192 } });
  const dgram = udp(B4, A4, 4000, 7, DATA);
  let accepted = 0;
  for (let id = 1; id <= 20; id++) {
    stack.input(0, v4Frags(B4, A4, 17, id, dgram, [[0, 1480]])[0]!);
    if (stack.stats.reassemblyMemory === 0) accepted++;
    assert.ok(stack.reassemblyMemory <= 8192);
  }
  assert.ok(accepted >= 2 && accepted < 20, `accepted ${accepted}`);
  assert.equal(stack.stats.fragments, accepted);
  assert.equal(stack.stats.reassemblyMemory, 20 - accepted);
  // While the budget is spent, even the rest of an accepted datagram is refused: new
  // fragments are refused, old ones are not evicted.
  stack.input(0, v4Frags(B4, A4, 17, 1, dgram, [[1480, 3008]])[0]!);
  assert.equal(stack.stats.reassemblyMemory, 21 - accepted);
  assert.equal(got.length, 0);
  // Time frees the budget; then a whole datagram goes through.
  stack.tick(30_000);
  assert.equal(stack.reassemblyMemory, 0);
  for (const f of v4Frags(B4, A4, 17, 99, dgram, [[0, 1480], [1480, 2960], [2960, 3008]])) {
    stack.input(31_000, f);
  }
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]!.data, DATA);
});

Deno.test("reassembly: a datagram of exactly 65535 bytes is the largest accepted", () => {
  const { stack, got } = setup();
  const data = pattern(65535 - 28, 5);
  const dgram = udp(B4, A4, 4000, 7, data);
  const ps: [number, number][] = [];
  for (let s = 0; s < dgram.length; s += 1400) ps.push([s, Math.min(s + 1400, dgram.length)]);
  for (const f of v4Frags(B4, A4, 17, 1, dgram, ps)) stack.input(0, f);
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]!.data, data);
  // One more byte in the last fragment passes 65535 and abandons the datagram.
  const big = concat(dgram, [0]);
  for (
    const f of v4Frags(B4, A4, 17, 2, big, ps.slice(0, -1).concat([[ps.at(-1)![0], big.length]]))
  ) {
    stack.input(0, f);
  }
  assert.equal(stack.stats.reassemblyTooBig, 1);
  assert.equal(got.length, 1);
});

Deno.test("reassembly v6: orders, duplicates, headers before the Fragment header", async (t) => {
  const dgram = udp(B6, A6, 4000, 7, DATA);
  const pieces: [number, number][] = [[0, 1232], [1232, 2464], [2464, dgram.length]];
  for (const order of [[0, 1, 2], [2, 1, 0], [1, 0, 1, 0, 2]]) {
    await t.step(`order ${order}`, () => {
      const { stack, got } = setup();
      const frags = v6Frags(B6, A6, 17, 0xabcdef01, dgram, pieces);
      for (const i of order) stack.input(0, frags[i]!);
      assert.equal(got.length, 1);
      assert.deepEqual(got[0]!.data, DATA);
      assert.equal(stack.stats.fragments, order.length - 1);
      assert.equal(stack.reassemblyMemory, 0);
    });
  }
  await t.step("Destination Options in the unfragmentable part", () => {
    const { stack, got } = setup();
    for (const [s, e] of pieces) {
      const body = concat(
        ext(44, [1, 4, 0, 0, 0, 0]),
        fragHdr(17, s, e < dgram.length, 77),
        dgram.subarray(s, e),
      );
      stack.input(0, v6(B6, A6, 60, body));
    }
    assert.equal(got.length, 1);
    assert.deepEqual(got[0]!.data, DATA);
  });
  await t.step("a Fragment header inside the reassembled data is refused", () => {
    const { stack, got } = setup();
    const inner = concat(fragHdr(17, 0, false, 1), dgram);
    const frags = v6Frags(B6, A6, 44, 78, inner, [[0, 1232], [1232, inner.length]]);
    for (const f of frags) stack.input(0, f);
    assert.equal(stack.stats.reassembled, 1);
    assert.equal(stack.stats.malformed, 1);
    assert.equal(got.length, 0);
  });
});

Deno.test("reassembly v6: overlap abandons the datagram (RFC 5722)", () => {
  const { stack, got } = setup();
  const dgram = udp(B6, A6, 4000, 7, DATA);
  const frags = v6Frags(B6, A6, 17, 1, dgram, [[0, 1232], [1224, 2464], [2464, dgram.length]]);
  for (const f of frags) stack.input(0, f);
  assert.equal(stack.stats.fragments, 1);
  assert.equal(stack.stats.reassemblyOverlap, 2);
  assert.equal(got.length, 0);
  // Even the exact pieces, while the abandoned datagram is remembered, are dropped.
  for (const f of v6Frags(B6, A6, 17, 1, dgram, [[0, 1232], [1232, dgram.length]])) {
    stack.input(1, f);
  }
  assert.equal(got.length, 0);
  assert.equal(stack.stats.reassemblyOverlap, 4);
});

Deno.test("reassembly v6: 60 s timeout, ICMPv6 Time Exceeded code 1", () => {
  const { stack, out } = setup();
  const dgram = udp(B6, A6, 4000, 7, DATA);
  const [f0] = v6Frags(B6, A6, 17, 1, dgram, [[0, 1232]]);
  stack.input(0, f0!);
  stack.tick(30_000);
  assert.equal(out.length, 0);
  assert.equal(stack.pollAt(), 60_000);
  stack.tick(60_000);
  assert.equal(stack.stats.reassemblyTimeout, 1);
  assert.equal(out.length, 1);
  assertWellFormed(out[0]!, 1420);
  const r = new Ipv6Packet(out[0]!);
  const m = new IcmpPacket(r.payload);
  assert.equal(m.type, 3);
  assert.equal(m.code, 1);
  // RFC 4443 2.4(c): the error stays within the minimum MTU.
  assert.equal(out[0]!.length, 1280);
  assert.deepEqual(m.data, f0!.subarray(0, 1280 - 48));
});

// ---------------------------------------------------------------------------------------------
// Fuzz

/** xorshift32: reproducible. */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  return (n: number) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

/** Repairs the IPv4 header checksum and the UDP/ICMP checksum, so mutations reach deeper. */
function fixChecksums(p: Uint8Array): void {
  if (p.length < 20) return;
  if (p[0]! >> 4 === 4) {
    const hl = (p[0]! & 0x0f) * 4;
    if (hl < 20 || hl > p.length) return;
    p[10] = p[11] = 0;
    const c = internetChecksum(p, 0, hl);
    p[10] = c >> 8;
    p[11] = c & 0xff;
    const ipv = Ipv4Packet.check(p);
    if (typeof ipv === "string" || ipv.isFragment) return;
    const pl = ipv.payload;
    if (ipv.protocol === 17) {
      const u = UdpPacket.check(pl);
      if (typeof u !== "string") u.fillChecksum(ipv.src, ipv.dst);
    } else if (ipv.protocol === 1 && pl.length >= 8) new IcmpPacket(pl).fillChecksumV4();
  } else if (p.length >= 40) {
    const ipv = Ipv6Packet.check(p);
    if (typeof ipv === "string") return;
    const pl = ipv.payload;
    if (ipv.nextHeader === 17) {
      const u = UdpPacket.check(pl);
      if (typeof u !== "string") u.fillChecksum(ipv.src, ipv.dst);
    } else if (ipv.nextHeader === 58 && pl.length >= 8) {
      new IcmpPacket(pl).fillChecksumV6(ipv.src, ipv.dst);
    }
  }
}

Deno.test("fuzz: 30 000 random and mutated packets, nothing escapes, counters add up", () => {
  const out: Uint8Array[] = [];
  const stack = new Stack({
    addresses: [A4, A6],
    mtu: 1280,
    output: (p) => out.push(p),
    random: () => 0.25,
    reassembly: { memory: 16 * 1024 },
    icmpRateLimit: { burst: 1000, perSecond: 1000 },
  });
  const echo = stack.udp.bind({ port: 7 });
  echo.onDatagram = (data, from, port) => {
    if (port !== 0) echo.send(from, port, data); // re-entrant sends from inside input()
  };
  const conn = stack.udp.bind({ port: 5000 });
  conn.connect(B4, 4000);
  conn.onError = () => {};
  const seen: number[] = [];
  const tcp: Transport = {
    protocol: 6,
    input: (_now, _s, _d, p) => void seen.push(p.length),
    icmpError: () => void seen.push(-1),
    pollAt: () => Infinity,
    tick: () => {},
  };
  stack.attach(tcp);
  stack.onEchoReply = () => {};

  const sent4 = v4(A4, B4, 17, udp(A4, B4, 5000, 4000, hello));
  const sent6 = v6(A6, B6, 17, udp(A6, B6, 5000, 4000, hello));
  const big = udp(B4, A4, 4000, 7, pattern(2500));
  const big6 = udp(B6, A6, 4000, 7, pattern(2500));
  const corpus: Uint8Array[] = [
    goodV4(),
    goodV6(),
    v4(B4, A4, 6, pattern(40)),
    v6(B6, A6, 6, pattern(40)),
    v4(B4, A4, 1, icmp({ kind: "echo-request", ident: 1, seq: 2, data: hello })),
    v4(B4, A4, 1, icmp({ kind: "echo-reply", ident: 1, seq: 2, data: hello })),
    v6(
      B6,
      A6,
      58,
      icmp({ kind: "echo-request", ident: 1, seq: 2, data: hello }, { src: B6, dst: A6 }),
    ),
    v4(B4, A4, 1, icmp({ kind: "dest-unreachable", code: 3, value: 0, data: sent4 })),
    v4(B4, A4, 1, icmp({ kind: "packet-too-big", code: 4, value: 600, data: sent4 })),
    v6(
      B6,
      A6,
      58,
      icmp({ kind: "dest-unreachable", code: 4, value: 0, data: sent6 }, { src: B6, dst: A6 }),
    ),
    v6(
      B6,
      A6,
      58,
      icmp({ kind: "packet-too-big", code: 0, value: 1280, data: sent6 }, { src: B6, dst: A6 }),
    ),
    v6(
      B6,
      A6,
      0,
      concat(ext(60, [5, 2, 0, 0]), ext(43, [0, 0, 0, 0]), ext(17, [1, 4, 0, 0, 0, 0]), udp6()),
    ),
    ...v4Frags(B4, A4, 17, 11, big, [[0, 1248], [1248, 2496], [2496, big.length]]),
    ...v6Frags(B6, A6, 17, 12, big6, [[0, 1232], [1232, 2464], [2464, big6.length]]),
    ...CASES.map((c) => c.packet),
  ];
  const r = rng(0x5eed);
  let now = 0;
  const N = 30_000;
  for (let i = 0; i < N; i++) {
    let p: Uint8Array;
    const mode = r(10);
    if (mode === 0) {
      p = new Uint8Array(r(120));
      for (let j = 0; j < p.length; j++) p[j] = r(256);
      if (p.length > 0) p[0] = (r(2) ? 0x40 : 0x60) | (p[0]! & 0x0f);
    } else {
      const base = corpus[r(corpus.length)]!;
      p = base.slice();
      const flips = mode === 1 ? 0 : 1 + r(4);
      for (let j = 0; j < flips && p.length > 0; j++) {
        // Bias towards headers, where the decisions are.
        const at = r(3) ? r(Math.min(p.length, 64)) : r(p.length);
        p[at] = r(3) === 0 ? [0, 0xff, 0x80, 0x01][r(4)]! : r(256);
      }
      if (r(8) === 0) p = p.subarray(0, r(p.length + 1));
      if (r(16) === 0) p = concat(p, pattern(r(40), i));
      if (r(2)) fixChecksums(p);
      // Vary the fragment identification so datagrams do not all share one queue.
      if (p.length >= 20 && p[0]! >> 4 === 4 && r(2)) {
        p[5] = r(4);
        fixChecksums(p);
      }
    }
    now += r(50);
    stack.input(now, p);
    if (i % 500 === 0) {
      stack.tick(now);
      assert.ok(stack.pollAt() > now);
    }
    assert.ok(stack.reassemblyMemory <= 16 * 1024);
  }
  const s = stack.stats;
  assert.equal(s.received, N);
  assert.equal(s.received, outcomeSum(s), JSON.stringify(s));
  // The fuzz reached deep: every kind of outcome happened.
  for (const k of OUTCOMES) assert.ok(s[k] > 0, `${k} never happened`);
  assert.ok(s.reassembled > 0);
  assert.ok(seen.length > 0);
  for (const p of out) assertWellFormed(p, 1280);
  // After everything has timed out, reassembly holds nothing.
  stack.tick(now + 60_000);
  assert.equal(stack.reassemblyMemory, 0);
});
