import assert from "node:assert/strict";
import { type IpBytes, parseIP } from "../core/wire/addr.ts";
import { IcmpPacket } from "../core/wire/icmp.ts";
import { Ipv4Packet } from "../core/wire/ipv4.ts";
import { Ipv6FragmentHeader, Ipv6Packet } from "../core/wire/ipv6.ts";
import { emitUdp } from "../core/wire/udp.ts";
import { emitIpv4 } from "../core/wire/ipv4.ts";
import { Stack } from "../core/netstack/stack.ts";
import {
  EPHEMERAL_FIRST,
  EPHEMERAL_LAST,
  UDP_MAX_PAYLOAD_V4,
  UDP_MAX_PAYLOAD_V6,
  type UdpSocket,
} from "../core/netstack/udp.ts";
import {
  AddrInUseError,
  AddrNotAvailableError,
  MessageTooLongError,
  NetUnreachableError,
} from "../core/netstack/ip_errors.ts";

const ip = (s: string): IpBytes => parseIP(s)!;
const A4 = ip("10.0.0.1"), B4 = ip("10.0.0.2"), A4b = ip("10.0.0.11");
const A6 = ip("fd00::1"), B6 = ip("fd00::2");

function pattern(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

/**
 * Two stacks, A and B, each one's output queued for the other's input. `wire` records every
 * packet that crossed, for assertions about what went on the tunnel.
 */
function pair(mtu = 1420, extraA: IpBytes[] = []) {
  const toA: Uint8Array[] = [], toB: Uint8Array[] = [];
  const wire: Uint8Array[] = [];
  let seed = 0.1;
  const random = () => (seed = (seed * 9301 + 0.49297) % 1);
  const a = new Stack({
    addresses: [A4, A6, ...extraA],
    mtu,
    output: (p) => (wire.push(p), toB.push(p)),
    random,
  });
  const b = new Stack({
    addresses: [B4, B6],
    mtu,
    output: (p) => (wire.push(p), toA.push(p)),
    random,
  });
  const pump = (now = 0) => {
    while (toA.length > 0 || toB.length > 0) {
      while (toB.length > 0) b.input(now, toB.shift()!);
      while (toA.length > 0) a.input(now, toA.shift()!);
    }
  };
  return { a, b, pump, wire, toA, toB };
}

interface Got {
  data: Uint8Array;
  from: IpBytes;
  port: number;
  to: IpBytes;
}

function record(s: UdpSocket): Got[] {
  const got: Got[] = [];
  s.onDatagram = (data, from, port, to) => got.push({ data: data.slice(), from, port, to });
  return got;
}

Deno.test("two stacks exchange UDP datagrams of every size, 1 byte to the maximum", async (t) => {
  for (
    const [fam, srcAddr, dstAddr, max, hdr] of [
      ["IPv4", A4, B4, UDP_MAX_PAYLOAD_V4, 28],
      ["IPv6", A6, B6, UDP_MAX_PAYLOAD_V6, 48],
    ] as const
  ) {
    await t.step(fam, () => {
      const { a, b, pump, wire } = pair();
      const sa = a.udp.bind({ port: 1000 });
      const sb = b.udp.bind({ address: dstAddr, port: 2000 });
      const got = record(sb);
      const sizes: number[] = [];
      for (let n = 1; n <= 3000; n++) sizes.push(n);
      // Around every fragment boundary, and up to the largest datagram.
      for (let n = 3001; n < max; n += 997) sizes.push(n);
      sizes.push(1420 - hdr, 1420 - hdr + 1, max - 1, max);
      for (const n of sizes) {
        const data = pattern(n, n);
        wire.length = 0;
        sa.send(dstAddr, 2000, data);
        pump();
        assert.equal(got.length, 1, `size ${n}`);
        const g = got.pop()!;
        assert.deepEqual(g.data, data, `size ${n}`);
        assert.deepEqual(g.from, srcAddr);
        assert.equal(g.port, 1000);
        assert.deepEqual(g.to, dstAddr);
        for (const p of wire) assert.ok(p.length <= 1420, `packet of ${p.length} bytes`);
        // Fragmented exactly when the datagram does not fit one packet.
        const fragments = n + hdr > 1420;
        assert.equal(wire.length > 1, fragments, `size ${n}`);
      }
      assert.equal(b.stats.delivered, sizes.length);
      assert.equal(b.stats.received, b.stats.delivered + b.stats.fragments);
      assert.equal(b.reassemblyMemory, 0);
    });
  }
});

Deno.test("whole IPv4 packets carry DF; fragments do not; IPv6 fragments use the Fragment header", () => {
  const { a, b, pump, wire } = pair(1280);
  a.udp.bind({ port: 1000 }).send(B4, 9, new Uint8Array(10));
  const whole = new Ipv4Packet(wire[0]!);
  assert.equal(whole.dontFragment, true);
  assert.equal(whole.ttl, 64);
  wire.length = 0;
  a.udp.bind({ port: 1001 }).send(B4, 9, new Uint8Array(3000));
  assert.equal(wire.length, 3);
  const ids = new Set<number>();
  let covered = 0;
  for (const [i, p] of wire.entries()) {
    const f = new Ipv4Packet(p);
    assert.equal(f.dontFragment, false);
    assert.equal(f.moreFragments, i < 2);
    assert.equal(f.fragmentOffset, covered);
    assert.ok(f.verifyChecksum());
    covered += f.payload.length;
    ids.add(f.ident);
  }
  assert.equal(covered, 3008);
  assert.equal(ids.size, 1);
  assert.notEqual([...ids][0], whole.ident);
  wire.length = 0;
  a.udp.bind({ port: 1002 }).send(B6, 9, new Uint8Array(3000));
  assert.equal(wire.length, 3);
  for (const [i, p] of wire.entries()) {
    const v = new Ipv6Packet(p);
    assert.equal(v.nextHeader, 44);
    assert.equal(v.hopLimit, 64);
    const fh = new Ipv6FragmentHeader(v.payload);
    assert.equal(fh.nextHeader, 17);
    assert.equal(fh.moreFragments, i < 2);
    assert.equal(fh.fragmentOffset % 8, 0);
  }
  pump();
  // All three datagrams reassembled at B and found no socket.
  assert.equal(b.stats.noPort, 3);
});

Deno.test("send: too large throws MessageTooLongError (EMSGSIZE, a RangeError)", () => {
  const { a } = pair();
  const s = a.udp.bind();
  for (const [dst, max] of [[B4, UDP_MAX_PAYLOAD_V4], [B6, UDP_MAX_PAYLOAD_V6]] as const) {
    assert.throws(
      () => s.send(dst, 9, new Uint8Array(max + 1)),
      (e: unknown) =>
        e instanceof MessageTooLongError && e instanceof RangeError && e.code === "EMSGSIZE" &&
        /at most/.test(e.message),
    );
  }
  assert.equal(a.stats.sent, 0);
});

Deno.test("bind: conflicts raise AddrInUseError, distinct addresses coexist", () => {
  const { a } = pair(1420, [A4b]);
  const wild = a.udp.bind({ port: 53 });
  const inUse = (f: () => void) =>
    assert.throws(f, (e: unknown) => e instanceof AddrInUseError && e.code === "EADDRINUSE");
  inUse(() => a.udp.bind({ port: 53 }));
  inUse(() => a.udp.bind({ address: A4, port: 53 }));
  wild.close();
  const s1 = a.udp.bind({ address: A4, port: 53 });
  const s2 = a.udp.bind({ address: A4b, port: 53 });
  const s3 = a.udp.bind({ address: A6, port: 53 });
  inUse(() => a.udp.bind({ address: A4, port: 53 }));
  inUse(() => a.udp.bind({ port: 53 }));
  assert.equal(a.udp.size, 3);
  for (const s of [s1, s2, s3]) s.close();
  assert.equal(a.udp.size, 0);
  a.udp.bind({ port: 53 }).close();
  assert.throws(
    () => a.udp.bind({ address: B4, port: 53 }),
    (e: unknown) => e instanceof AddrNotAvailableError && e.code === "EADDRNOTAVAIL",
  );
  assert.throws(() => a.udp.bind({ port: 65536 }), RangeError);
  assert.throws(() => a.udp.bind({ port: -1 }), RangeError);
});

Deno.test("bind: ephemeral ports are distinct and in 49152-65535", () => {
  const { a } = pair();
  const ports = new Set<number>();
  for (let i = 0; i < 500; i++) {
    const s = a.udp.bind();
    assert.ok(s.localPort >= EPHEMERAL_FIRST && s.localPort <= EPHEMERAL_LAST);
    ports.add(s.localPort);
  }
  assert.equal(ports.size, 500);
  // Not simply sequential from the bottom of the range (RFC 6056).
  assert.ok([...ports].some((p) => p > EPHEMERAL_FIRST + 1000));
});

Deno.test("bind: exhausting the ephemeral range raises AddrInUseError", () => {
  const { a } = pair();
  const n = EPHEMERAL_LAST - EPHEMERAL_FIRST + 1;
  for (let i = 0; i < n; i++) a.udp.bind();
  assert.throws(() => a.udp.bind(), AddrInUseError);
});

Deno.test("a wildcard socket hears both families and learns the destination address", () => {
  const { a, b, pump } = pair();
  const got = record(b.udp.bind({ port: 7 }));
  const sa = a.udp.bind({ port: 1000 });
  sa.send(B4, 7, Uint8Array.of(4));
  sa.send(B6, 7, Uint8Array.of(6));
  // A v4-mapped IPv6 destination goes out as IPv4.
  sa.send(ip("::ffff:10.0.0.2"), 7, Uint8Array.of(46));
  pump();
  assert.deepEqual(got.map((g) => [g.data[0], g.from, g.to]), [
    [4, A4, B4],
    [6, A6, B6],
    [46, A4, B4],
  ]);
});

Deno.test("one-family wildcards share a port, each hearing its own family", () => {
  const { a, b, pump } = pair();
  const inUse = (f: () => void) => assert.throws(f, AddrInUseError);
  const v4 = b.udp.bind({ port: 53, family: 4 });
  const v6 = b.udp.bind({ port: 53, family: 6 });
  // Each conflicts with its own family and with the two-family wildcard, as on Linux.
  inUse(() => b.udp.bind({ port: 53, family: 4 }));
  inUse(() => b.udp.bind({ port: 53 }));
  inUse(() => b.udp.bind({ address: B6, port: 53 }));
  const got4 = record(v4), got6 = record(v6);
  const sa = a.udp.bind({ port: 1000 });
  sa.send(B4, 53, Uint8Array.of(4));
  sa.send(B6, 53, Uint8Array.of(6));
  pump();
  assert.deepEqual(got4.map((g) => [g.data[0], g.from]), [[4, A4]]);
  assert.deepEqual(got6.map((g) => [g.data[0], g.from]), [[6, A6]]);
  v6.close();
  // With the IPv6 one gone its address is free, and the IPv4 wildcard still does not hear it.
  const only6 = record(b.udp.bind({ address: B6, port: 53 }));
  sa.send(B6, 53, Uint8Array.of(66));
  pump();
  assert.equal(only6.length, 1);
  assert.equal(got4.length, 1);
});

Deno.test("a socket bound to one address does not hear the other", () => {
  const { a, b, pump } = pair();
  const got = record(b.udp.bind({ address: B6, port: 7 }));
  const sa = a.udp.bind({ port: 1000 });
  sa.send(B4, 7, Uint8Array.of(1));
  pump();
  assert.equal(got.length, 0);
  assert.equal(b.stats.noPort, 1);
  sa.send(B6, 7, Uint8Array.of(2));
  pump();
  assert.equal(got.length, 1);
  // And it can not send to the other family.
  const sb = b.udp.bind({ address: B6, port: 8 });
  assert.throws(() => sb.send(A4, 1000, Uint8Array.of(1)), NetUnreachableError);
});

Deno.test("connect: only the peer is heard, others get Port Unreachable", () => {
  const { a, b, pump } = pair();
  const sb = b.udp.bind({ port: 7 });
  sb.connect(A4, 1000);
  assert.deepEqual(sb.localAddress, B4); // as getsockname after connect(2)
  assert.deepEqual(sb.remoteAddress, A4);
  assert.equal(sb.remotePort, 1000);
  const got = record(sb);
  const peer = a.udp.bind({ port: 1000 });
  const other = a.udp.bind({ port: 1001 });
  const errors: string[] = [];
  other.connect(B4, 7);
  other.onError = (kind) => errors.push(kind);
  peer.send(B4, 7, Uint8Array.of(1));
  other.send(Uint8Array.of(2));
  peer.send(B6, 7, Uint8Array.of(3)); // right port, wrong family address
  pump();
  assert.deepEqual(got.map((g) => g.data[0]), [1]);
  assert.equal(b.stats.noPort, 2);
  assert.deepEqual(errors, ["port-unreachable"]);
  // Replies go back to the peer with send(data).
  const back = record(peer);
  sb.send(Uint8Array.of(9));
  pump();
  assert.deepEqual(back.map((g) => [g.data[0], g.from, g.port]), [[9, B4, 7]]);
  sb.disconnect();
  assert.equal(sb.localAddress, undefined);
  assert.equal(sb.remoteAddress, undefined);
  assert.throws(() => sb.send(Uint8Array.of(1)), TypeError);
  other.send(Uint8Array.of(4));
  pump();
  assert.deepEqual(got.map((g) => g.data[0]), [1, 4]);
});

Deno.test("a socket can answer from inside onDatagram (echo server)", () => {
  const { a, b, pump } = pair();
  const server = b.udp.bind({ port: 7 });
  server.onDatagram = (data, from, port) => server.send(from, port, data);
  const client = a.udp.bind();
  client.connect(B6, 7);
  const got = record(client);
  for (let i = 1; i <= 5; i++) client.send(pattern(i * 700, i));
  pump();
  assert.deepEqual(got.map((g) => g.data), [1, 2, 3, 4, 5].map((i) => pattern(i * 700, i)));
});

Deno.test("close: no more delivery, sends throw, the port is free again", () => {
  const { a, b, pump } = pair();
  const sb = b.udp.bind({ port: 7 });
  const got = record(sb);
  sb.close();
  assert.equal(sb.closed, true);
  assert.throws(() => sb.send(A4, 1, Uint8Array.of(1)), TypeError);
  assert.throws(() => sb.connect(A4, 1), TypeError);
  a.udp.bind({ port: 1000 }).send(B4, 7, Uint8Array.of(1));
  pump();
  assert.equal(got.length, 0);
  assert.equal(b.stats.noPort, 1);
  b.udp.bind({ port: 7 });
});

Deno.test("send: errors callers can map to errno", () => {
  const out: Uint8Array[] = [];
  const v4only = new Stack({ addresses: [A4], mtu: 1420, output: (p) => out.push(p) });
  const s = v4only.udp.bind();
  assert.throws(
    () => s.send(B6, 7, Uint8Array.of(1)),
    (e: unknown) => e instanceof NetUnreachableError && e.code === "ENETUNREACH",
  );
  assert.throws(() => s.connect(B6, 7), NetUnreachableError);
  assert.throws(() => s.send(B4, 0, Uint8Array.of(1)), RangeError);
  assert.throws(() => s.send(B4, 70000, Uint8Array.of(1)), RangeError);
  assert.throws(() => s.send(Uint8Array.of(1)), TypeError); // EDESTADDRREQ
  assert.equal(out.length, 0);
  s.send(B4, 7, new Uint8Array(0)); // an empty datagram is a datagram
  assert.equal(out.length, 1);
  assert.equal(new Ipv4Packet(out[0]!).totalLen, 28);
});

Deno.test("source port 0 is delivered (RFC 768: optional)", () => {
  const { b } = pair();
  const got = record(b.udp.bind({ port: 7 }));
  const d = new Uint8Array(9);
  emitUdp({ srcPort: 0, dstPort: 7, payloadLen: 1 }, d, A4, B4, Uint8Array.of(5));
  const p = new Uint8Array(29);
  emitIpv4(
    { src: A4, dst: B4, protocol: 17, payloadLen: 9, ttl: 64, ident: 1, dontFragment: true },
    p,
  );
  p.set(d, 20);
  b.input(0, p);
  assert.equal(got.length, 1);
  assert.equal(got[0]!.port, 0);
});

Deno.test("Port Unreachable quotes the datagram within 576 / 1280 bytes", () => {
  for (const [dst, limit, hl] of [[B4, 576, 20], [B6, 1280, 40]] as const) {
    const { a, b, pump, wire } = pair(9000);
    a.udp.bind({ port: 1000 }).send(dst, 9, pattern(5000));
    const original = wire[0]!;
    pump();
    assert.equal(b.stats.noPort, 1);
    assert.equal(wire.length, 2);
    const err = wire[1]!;
    // RFC 1812 4.3.2.3 / RFC 4443 2.4(c): as much of the original as fits.
    assert.equal(err.length, limit);
    const m = new IcmpPacket(err.subarray(hl));
    assert.equal(m.type, hl === 20 ? 3 : 1);
    assert.equal(m.code, hl === 20 ? 3 : 4);
    assert.deepEqual(m.data, original.subarray(0, limit - hl - 8));
    // A's socket is not connected and did not ask for errors: the error is consumed quietly.
    assert.equal(a.stats.icmpIgnored, 1);
  }
});
