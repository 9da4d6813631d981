import assert from "node:assert/strict";
import { type IpBytes, parseIP } from "../core/wire/addr.ts";
import { emitIcmp, IcmpPacket, type IcmpRepr } from "../core/wire/icmp.ts";
import { emitIpv4, Ipv4Packet } from "../core/wire/ipv4.ts";
import { emitIpv6, Ipv6Packet } from "../core/wire/ipv6.ts";
import { PMTU_TIMEOUT, Stack, type StackOptions } from "../core/netstack/stack.ts";
import { NetUnreachableError } from "../core/netstack/ip_errors.ts";
import type { IcmpErrorKind, Transport } from "../core/netstack/types.ts";

const ip = (s: string): IpBytes => parseIP(s)!;
const hex = (s: string) =>
  Uint8Array.from(s.replace(/\s+/g, "").match(/../g)!, (b) => parseInt(b, 16));
const A4 = ip("10.0.0.1"), B4 = ip("10.0.0.2"), R4 = ip("10.9.9.9");
const A6 = ip("fd00::1"), B6 = ip("fd00::2"), R6 = ip("fd00::99");

function pattern(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

function v4(src: IpBytes, dst: IpBytes, protocol: number, payload: Uint8Array): Uint8Array {
  const b = new Uint8Array(20 + payload.length);
  emitIpv4({
    src,
    dst,
    protocol,
    payloadLen: payload.length,
    ttl: 64,
    ident: 0,
    dontFragment: false,
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

/** An ICMP(v6) message from `from` to `to`, in its IP packet. */
function icmpPacket(from: IpBytes, to: IpBytes, repr: IcmpRepr): Uint8Array {
  const m = new Uint8Array(8 + repr.data.length);
  if (from.length === 4) {
    emitIcmp(repr, m);
    return v4(from, to, 1, m);
  }
  emitIcmp(repr, m, { src: from, dst: to });
  return v6(from, to, 58, m);
}

/** Two stacks wired output→input through queues, and a log of every packet on the wire. */
function pair(opts: Partial<StackOptions> = {}) {
  const toA: Uint8Array[] = [], toB: Uint8Array[] = [];
  const wire: Uint8Array[] = [];
  const a = new Stack({
    addresses: [A4, A6],
    mtu: 1420,
    output: (p) => (wire.push(p), toB.push(p)),
    random: () => 0,
    ...opts,
  });
  const b = new Stack({
    addresses: [B4, B6],
    mtu: 1420,
    output: (p) => (wire.push(p), toA.push(p)),
    random: () => 0,
    ...opts,
  });
  const pump = (now = 0) => {
    while (toA.length > 0 || toB.length > 0) {
      while (toB.length > 0) b.input(now, toB.shift()!);
      while (toA.length > 0) a.input(now, toA.shift()!);
    }
  };
  return { a, b, pump, wire, toA, toB };
}

// ---------------------------------------------------------------------------------------------
// Echo

Deno.test("echo request gets a byte-exact reply (same id, seq, data; addresses swapped)", () => {
  const out: Uint8Array[] = [];
  const stack = new Stack({
    addresses: [A4],
    mtu: 1420,
    output: (p) => out.push(p),
    random: () => 0,
  });
  const request = v4(B4, A4, 1, hex("0800 2f33 0102 0304 61626364"));
  stack.input(0, request);
  assert.equal(out.length, 1);
  // Header: ident 1 (first from the counter), DF, TTL 64, checksum 0x26da; ICMP checksum 0x3733.
  // Both checksums were computed independently.
  assert.deepEqual(
    out[0],
    hex("4500 0020 0001 4000 4001 26da 0a000001 0a000002  0000 3733 0102 0304 61626364"),
  );
});

Deno.test("ping: both families, small and fragmented, replies reach onEchoReply", () => {
  const { a, b, pump } = pair();
  const replies: [number, IpBytes, number, number, Uint8Array][] = [];
  a.onEchoReply = (now, from, ident, seq, data) =>
    replies.push([now, from, ident, seq, data.slice()]);
  const big = pattern(4000, 3);
  a.ping(B4, 77, 1, Uint8Array.of(1, 2, 3));
  a.ping(B6, 77, 2, Uint8Array.of(4, 5));
  a.ping(B4, 78, 3, big);
  a.ping(B6, 78, 4, big);
  a.ping(B6, 0x1ffff, 0x10005); // id and seq are 16 bits; no data
  pump(123);
  assert.deepEqual(replies, [
    [123, B4, 77, 1, Uint8Array.of(1, 2, 3)],
    [123, B6, 77, 2, Uint8Array.of(4, 5)],
    [123, B4, 78, 3, big],
    [123, B6, 78, 4, big],
    [123, B6, 0xffff, 5, new Uint8Array(0)],
  ]);
  assert.equal(b.stats.delivered, 5);
  assert.equal(a.stats.delivered, 5);
});

Deno.test("ping: no address of that family is ENETUNREACH", () => {
  const s = new Stack({ addresses: [A6], mtu: 1420, output: () => {} });
  assert.throws(() => s.ping(B4, 1, 1), (e: unknown) => e instanceof NetUnreachableError);
});

Deno.test("onEchoError: an ICMP error about our echo request", () => {
  const { a, wire } = pair();
  const errs: [IcmpErrorKind, IpBytes, number, number][] = [];
  a.onEchoError = (_now, kind, to, ident, seq) => errs.push([kind, to, ident, seq]);
  a.ping(B4, 5, 6, pattern(20));
  a.ping(B6, 7, 8, pattern(20));
  const [sent4, sent6] = wire;
  a.input(0, icmpPacket(R4, A4, { kind: "dest-unreachable", code: 1, value: 0, data: sent4! }));
  a.input(0, icmpPacket(R6, A6, { kind: "time-exceeded", code: 0, value: 0, data: sent6! }));
  assert.deepEqual(errs, [["host-unreachable", B4, 5, 6], ["time-exceeded", B6, 7, 8]]);
});

// ---------------------------------------------------------------------------------------------
// Errors to UDP sockets

Deno.test("port unreachable → onError on a connected UDP socket, both families", () => {
  const { a, b, pump } = pair();
  for (const dst of [B4, B6]) {
    const s = a.udp.bind();
    const errs: [IcmpErrorKind, IpBytes, number][] = [];
    s.onError = (kind, addr, port) => errs.push([kind, addr, port]);
    s.connect(dst, 4242);
    s.send(Uint8Array.of(1));
    pump();
    assert.deepEqual(errs, [["port-unreachable", dst, 4242]]);
  }
  assert.equal(b.stats.noPort, 2);
  assert.equal(b.stats.icmpErrorsOut, 2);
});

Deno.test("unconnected sockets hear errors only with recvErr (IP_RECVERR)", () => {
  const { a, pump } = pair();
  const plain = a.udp.bind({ port: 1000 });
  const asked = a.udp.bind({ port: 1001, recvErr: true });
  const errs: string[] = [];
  plain.onError = (k) => errs.push(`plain ${k}`);
  asked.onError = (k, addr, port) => errs.push(`asked ${k} ${addr.length} ${port}`);
  plain.send(B4, 9, Uint8Array.of(1));
  asked.send(B6, 9, Uint8Array.of(1));
  pump();
  assert.deepEqual(errs, ["asked port-unreachable 16 9"]);
  assert.equal(a.stats.icmpIgnored, 1);
});

Deno.test("a connected socket ignores errors about another peer", () => {
  const { a, wire } = pair();
  const s = a.udp.bind({ port: 1000 });
  const errs: string[] = [];
  s.onError = (k) => errs.push(k);
  s.send(B4, 53, Uint8Array.of(1));
  s.connect(B4, 54);
  a.input(0, icmpPacket(B4, A4, { kind: "dest-unreachable", code: 3, value: 0, data: wire[0]! }));
  assert.deepEqual(errs, []);
  assert.equal(a.stats.icmpIgnored, 1);
});

Deno.test("ICMP codes map to socket errors (RFC 1122 4.2.3.9, RFC 4443 3)", async (t) => {
  const v4cases: [number, number, IcmpErrorKind | undefined][] = [
    [3, 0, "net-unreachable"],
    [3, 1, "host-unreachable"],
    [3, 2, "port-unreachable"],
    [3, 3, "port-unreachable"],
    [3, 5, "host-unreachable"],
    [3, 6, "net-unreachable"],
    [3, 7, "host-unreachable"],
    [3, 9, "prohibited"],
    [3, 10, "prohibited"],
    [3, 13, "prohibited"],
    [11, 0, "time-exceeded"],
    [11, 1, "time-exceeded"],
    [12, 0, undefined],
    [4, 0, undefined], // source quench: RFC 6633 says ignore
  ];
  const v6cases: [number, number, IcmpErrorKind | undefined][] = [
    [1, 0, "net-unreachable"],
    [1, 1, "prohibited"],
    [1, 3, "host-unreachable"],
    [1, 4, "port-unreachable"],
    [1, 5, "prohibited"],
    [1, 6, "prohibited"],
    [3, 0, "time-exceeded"],
    [4, 1, "port-unreachable"],
    [4, 0, undefined],
  ];
  for (const [family, cases] of [["v4", v4cases], ["v6", v6cases]] as const) {
    for (const [type, code, want] of cases) {
      await t.step(`${family} type ${type} code ${code} → ${want ?? "ignored"}`, () => {
        const { a, wire } = pair();
        const peer = family === "v4" ? B4 : B6;
        const s = a.udp.bind();
        const errs: IcmpErrorKind[] = [];
        s.onError = (k) => errs.push(k);
        s.connect(peer, 53);
        s.send(Uint8Array.of(1));
        const quote = wire[0]!;
        const m = new Uint8Array(8 + quote.length);
        m[0] = type;
        m[1] = code;
        m.set(quote, 8);
        const from = family === "v4" ? R4 : R6, to = family === "v4" ? A4 : A6;
        const pkt = family === "v4" ? v4(from, to, 1, m) : v6(from, to, 58, m);
        // Fill the checksum through the view (type/code already in place).
        const view = new IcmpPacket(pkt.subarray(family === "v4" ? 20 : 40));
        if (family === "v4") view.fillChecksumV4();
        else view.fillChecksumV6(from, to);
        a.input(0, pkt);
        assert.deepEqual(errs, want ? [want] : []);
        assert.equal(a.stats.delivered + a.stats.icmpIgnored, 1);
      });
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Rate limit

Deno.test("ICMP errors are rate-limited by a token bucket fed by now", () => {
  const { a, b, pump } = pair({ icmpRateLimit: { burst: 10, perSecond: 10 } });
  const s = a.udp.bind();
  for (let i = 0; i < 25; i++) s.send(B4, 9, Uint8Array.of(i));
  pump(1000);
  assert.equal(b.stats.noPort, 25);
  assert.equal(b.stats.icmpErrorsOut, 10);
  assert.equal(b.stats.icmpRateLimited, 15);
  // Half a second later: 5 tokens.
  for (let i = 0; i < 10; i++) s.send(B6, 9, Uint8Array.of(i));
  pump(1500);
  assert.equal(b.stats.icmpErrorsOut, 15);
  assert.equal(b.stats.icmpRateLimited, 20);
  // Much later the bucket is full again, but no fuller than the burst.
  for (let i = 0; i < 20; i++) s.send(B4, 9, Uint8Array.of(i));
  pump(1_000_000);
  assert.equal(b.stats.icmpErrorsOut, 25);
  // Echo replies are not errors and are never limited.
  let replies = 0;
  a.onEchoReply = () => replies++;
  for (let i = 0; i < 30; i++) a.ping(B4, 1, i);
  pump(1_000_000);
  assert.equal(replies, 30);
});

// ---------------------------------------------------------------------------------------------
// Path MTU

Deno.test("Fragmentation Needed lowers the path MTU, tells the socket, expires later", () => {
  const { a, wire, toB } = pair();
  const s = a.udp.bind();
  const errs: IcmpErrorKind[] = [];
  s.onError = (k) => errs.push(k);
  s.connect(B4, 53);
  s.send(pattern(1300));
  assert.equal(a.maxPayload(B4), 1400);
  const ptb = (mtu: number, now: number) =>
    a.input(
      now,
      icmpPacket(R4, A4, {
        kind: "packet-too-big",
        code: 4,
        value: mtu,
        data: wire[0]!.subarray(0, 28),
      }),
    );
  ptb(1000, 5000);
  assert.deepEqual(errs, ["too-big"]);
  assert.equal(a.maxPayload(B4), 980);
  assert.equal(a.maxPayload(B6), 1380); // other destinations unaffected
  assert.equal(a.pollAt(), 5000 + PMTU_TIMEOUT);
  // RFC 1191: a larger value never raises the estimate.
  ptb(1300, 6000);
  assert.equal(a.maxPayload(B4), 980);
  // The next datagram that does not fit is fragmented to the new size.
  toB.length = 0;
  s.send(pattern(1300));
  assert.equal(toB.length, 2);
  assert.ok(toB.every((p) => p.length <= 1000));
  // A forged tiny value is floored at 552.
  ptb(100, 7000);
  assert.equal(a.maxPayload(B4), 532);
  // After 10 minutes the estimate is forgotten.
  a.tick(7000 + PMTU_TIMEOUT - 1);
  assert.equal(a.maxPayload(B4), 532);
  a.tick(7000 + PMTU_TIMEOUT);
  assert.equal(a.maxPayload(B4), 1400);
  assert.equal(a.pollAt(), Infinity);
});

Deno.test("Fragmentation Needed with MTU 0 (pre-RFC 1191 router) uses the plateau table", () => {
  const { a, wire } = pair();
  a.udp.bind().send(B4, 53, pattern(1300));
  a.input(
    0,
    icmpPacket(R4, A4, {
      kind: "packet-too-big",
      code: 4,
      value: 0,
      data: wire[0]!.subarray(0, 28),
    }),
  );
  // Total length 1320 → next plateau below is 1006.
  assert.equal(a.pathMtu(B4), 1006);
});

Deno.test("ICMPv6 Packet Too Big: below 1280 means 1280 (RFC 8201 4)", () => {
  const { a, wire } = pair();
  const s = a.udp.bind();
  const errs: IcmpErrorKind[] = [];
  s.onError = (k) => errs.push(k);
  s.connect(B6, 53);
  s.send(pattern(1300));
  a.input(0, icmpPacket(R6, A6, { kind: "packet-too-big", code: 0, value: 1000, data: wire[0]! }));
  assert.deepEqual(errs, ["too-big"]);
  assert.equal(a.pathMtu(B6), 1280);
  assert.equal(a.maxPayload(B6), 1240);
});

Deno.test("an error quoting a packet that is not ours changes nothing", () => {
  const { a } = pair();
  const forged = v4(B4, R4, 17, new Uint8Array(8));
  a.input(0, icmpPacket(R4, A4, { kind: "packet-too-big", code: 4, value: 600, data: forged }));
  assert.equal(a.pathMtu(R4), 1420);
  assert.equal(a.stats.icmpIgnored, 1);
});

// ---------------------------------------------------------------------------------------------
// Attached transports, protocol unreachable

class FakeTransport implements Transport {
  inputs: [number, IpBytes, IpBytes, Uint8Array][] = [];
  /** The source addresses as handed over, uncopied. */
  rawSources: IpBytes[] = [];
  errors: [IcmpErrorKind, IpBytes, IpBytes, Uint8Array][] = [];
  ticks: number[] = [];
  next = Infinity;
  constructor(readonly protocol: number) {}
  input(now: number, src: IpBytes, dst: IpBytes, payload: Uint8Array): void {
    this.rawSources.push(src);
    this.inputs.push([now, src.slice(), dst.slice(), payload.slice()]);
  }
  icmpError(_now: number, kind: IcmpErrorKind, src: IpBytes, dst: IpBytes, quoted: Uint8Array) {
    this.errors.push([kind, src, dst, quoted.slice()]);
  }
  pollAt(): number {
    return this.next;
  }
  tick(now: number): void {
    this.ticks.push(now);
  }
}

Deno.test("attach: a transport gets its packets, its errors, and its timers", () => {
  const { a, b, pump } = pair();
  const ta = new FakeTransport(6), tb = new FakeTransport(6);
  a.attach(ta);
  b.attach(tb);
  const seg = pattern(20, 6);
  a.send(A4, B4, 6, seg);
  a.send(A6, B6, 6, seg);
  pump(50);
  assert.equal(tb.inputs.length, 2);
  assert.deepEqual(tb.inputs[0], [50, A4, B4, seg]);
  assert.deepEqual(tb.inputs[1], [50, A6, B6, seg]);
  // The addresses handed over are views into the packet, as the payload is (a transport copies
  // what it keeps, as TcpLayer does for a new connection): no allocation per segment.
  const packet = v4(A4, B4, 6, seg);
  b.input(60, packet);
  assert.deepEqual(tb.rawSources[2], A4);
  packet.fill(0);
  assert.deepEqual(tb.rawSources[2], new Uint8Array(4));
  assert.deepEqual(tb.inputs[2]![1], A4);
  // Timers: pollAt is the earliest of the transports', tick reaches them.
  assert.equal(a.pollAt(), Infinity);
  ta.next = 900;
  assert.equal(a.pollAt(), 900);
  a.tick(900);
  assert.deepEqual(ta.ticks, [900]);
  // Detached: protocol unreachable again.
  b.detach(tb);
  a.send(A4, B4, 6, seg);
  pump(70);
  assert.equal(b.stats.noProtocol, 1);
  assert.equal(ta.errors.length, 1);
  assert.equal(ta.errors[0]![0], "port-unreachable");
  assert.deepEqual(ta.errors[0]![1], A4);
  assert.deepEqual(ta.errors[0]![2], B4);
  assert.deepEqual(ta.errors[0]![3], seg);
});

Deno.test("no transport: IPv4 Protocol Unreachable, IPv6 Parameter Problem code 1", () => {
  const { a, b, pump, wire } = pair();
  const ta = new FakeTransport(6);
  a.attach(ta);
  a.send(A4, B4, 6, pattern(20));
  a.send(A6, B6, 6, pattern(20));
  pump();
  assert.equal(b.stats.noProtocol, 2);
  const err4 = new Ipv4Packet(wire[2]!);
  const m4 = new IcmpPacket(err4.payload);
  assert.deepEqual([m4.type, m4.code], [3, 2]);
  const err6 = new Ipv6Packet(wire[3]!);
  const m6 = new IcmpPacket(err6.payload);
  assert.deepEqual([m6.type, m6.code, m6.rest], [4, 1, 6]);
  assert.deepEqual(ta.errors.map((e) => e[0]), ["port-unreachable", "port-unreachable"]);
});

Deno.test("attach refuses built-in protocols and a second transport", () => {
  const { a } = pair();
  for (const p of [1, 17, 58]) assert.throws(() => a.attach(new FakeTransport(p)), TypeError);
  a.attach(new FakeTransport(6));
  assert.throws(() => a.attach(new FakeTransport(6)), TypeError);
});

Deno.test("no ICMP error is sent about an ICMP error", () => {
  const { b, wire } = pair();
  // An error about a packet B never sent: ignored, and certainly not answered.
  const m = new Uint8Array(8 + 28);
  m[0] = 3;
  m[1] = 1;
  m.set(v4(R4, A4, 17, new Uint8Array(8)), 8);
  const pkt = v4(A4, B4, 1, m);
  new IcmpPacket(pkt.subarray(20)).fillChecksumV4();
  b.input(0, pkt);
  assert.equal(b.stats.icmpIgnored, 1);
  assert.equal(wire.length, 0);
});

Deno.test("constructor validates addresses and MTU", () => {
  const out = () => {};
  assert.throws(
    () => new Stack({ addresses: [new Uint8Array(5)], mtu: 1420, output: out }),
    TypeError,
  );
  assert.throws(
    () => new Stack({ addresses: [ip("224.0.0.1")], mtu: 1420, output: out }),
    TypeError,
  );
  assert.throws(() => new Stack({ addresses: [A4], mtu: 67, output: out }), RangeError);
  assert.throws(() => new Stack({ addresses: [A6], mtu: 1279, output: out }), RangeError);
  assert.throws(() => new Stack({ addresses: [A4], mtu: 70000, output: out }), RangeError);
  const s = new Stack({ addresses: [A4, ip("10.1.0.1"), A6], mtu: 1280, output: out });
  // RFC 6724 rule 8: the source sharing the longest prefix.
  assert.deepEqual(s.sourceFor(ip("10.1.2.3")), ip("10.1.0.1"));
  assert.deepEqual(s.sourceFor(ip("10.0.9.9")), A4);
  assert.deepEqual(s.sourceFor(B6), A6);
  assert.equal(s.isLocal(A6), true);
  assert.equal(s.isLocal(B6), false);
  assert.equal(s.maxPayload(B4), 1260);
});
