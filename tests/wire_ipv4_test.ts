import assert from "node:assert/strict";
import { parseIP } from "../core/wire/addr.ts";
import {
  emitIpv4,
  IPV4_HEADER_LEN,
  ipv4BufferLen,
  Ipv4Packet,
  type Ipv4Repr,
  parseIpv4,
} from "../core/wire/ipv4.ts";

const hex = (s: string) =>
  Uint8Array.from(s.replace(/\s+/g, "").match(/../g)!, (b) => parseInt(b, 16));
const ip = (s: string) => parseIP(s)!;

// A header with a checksum computed by hand from the RFC 791 layout (the classic example:
// 192.168.0.1 -> 192.168.0.199, UDP, total length 0x73, DF, TTL 64 => checksum 0xb861).
const KNOWN = hex("45000073 00004000 4011b861 c0a80001 c0a800c7");

Deno.test("Ipv4Packet reads a known header and verifies its checksum", () => {
  const buf = new Uint8Array(0x73);
  buf.set(KNOWN);
  const p = Ipv4Packet.check(buf);
  assert.ok(p instanceof Ipv4Packet);
  assert.equal(p.version, 4);
  assert.equal(p.headerLen, 20);
  assert.equal(p.totalLen, 0x73);
  assert.equal(p.ident, 0);
  assert.equal(p.dontFragment, true);
  assert.equal(p.moreFragments, false);
  assert.equal(p.fragmentOffset, 0);
  assert.equal(p.isFragment, false);
  assert.equal(p.ttl, 64);
  assert.equal(p.protocol, 17);
  assert.equal(p.checksum, 0xb861);
  assert.deepEqual(p.src, ip("192.168.0.1"));
  assert.deepEqual(p.dst, ip("192.168.0.199"));
  assert.equal(p.payload.length, 0x73 - 20);
  assert.equal(p.verifyChecksum(), true);
});

Deno.test("Ipv4Packet.verifyChecksum fails for any single changed header byte", () => {
  for (let i = 0; i < 20; i++) {
    if (i === 10 || i === 11) continue; // flipping the checksum itself is covered below
    const buf = new Uint8Array(0x73);
    buf.set(KNOWN);
    buf[i]! ^= 0x01;
    const p = new Ipv4Packet(buf);
    assert.equal(p.verifyChecksum(), false, `byte ${i}`);
  }
  const buf = KNOWN.slice();
  buf[11]! ^= 0x40;
  assert.equal(new Ipv4Packet(buf).verifyChecksum(), false);
});

Deno.test("Ipv4Packet.check refuses what does not hold a whole datagram", async (t) => {
  const base = () => {
    const b = new Uint8Array(40);
    b.set(KNOWN);
    b[2] = 0;
    b[3] = 40;
    return b;
  };
  const cases: [string, Uint8Array, string][] = [
    ["empty", new Uint8Array(0), "truncated"],
    ["19 bytes", base().subarray(0, 19), "truncated"],
    [
      "version 6",
      (() => {
        const b = base();
        b[0] = 0x65;
        return b;
      })(),
      "malformed",
    ],
    [
      "IHL 4",
      (() => {
        const b = base();
        b[0] = 0x44;
        return b;
      })(),
      "malformed",
    ],
    [
      "IHL 15 past the end",
      (() => {
        const b = base().subarray(0, 40);
        b[0] = 0x4f;
        return b;
      })(),
      "truncated",
    ],
    [
      "total length below header",
      (() => {
        const b = base();
        b[3] = 19;
        return b;
      })(),
      "malformed",
    ],
    [
      "total length past the buffer",
      (() => {
        const b = base();
        b[3] = 41;
        return b;
      })(),
      "truncated",
    ],
  ];
  for (const [name, bytes, want] of cases) {
    await t.step(name, () => assert.equal(Ipv4Packet.check(bytes), want));
  }
  await t.step("link padding after Total Length is allowed and not payload", () => {
    const b = new Uint8Array(60);
    b.set(base());
    const p = Ipv4Packet.check(b);
    assert.ok(p instanceof Ipv4Packet);
    assert.equal(p.payload.length, 20);
    assert.equal(p.packet.length, 40);
  });
  await t.step("options: payload starts after IHL", () => {
    const b = base();
    b[0] = 0x46;
    const p = Ipv4Packet.check(b);
    assert.ok(p instanceof Ipv4Packet);
    assert.equal(p.headerLen, 24);
    assert.equal(p.payload.length, 16);
  });
});

Deno.test("emitIpv4 writes every header byte (buffer pre-filled with 0xa5)", () => {
  const repr: Ipv4Repr = {
    src: ip("10.0.0.1"),
    dst: ip("10.0.0.2"),
    protocol: 17,
    payloadLen: 12,
    ttl: 64,
    ident: 0x1234,
    dontFragment: true,
  };
  const buf = new Uint8Array(ipv4BufferLen(repr)).fill(0xa5);
  emitIpv4(repr, buf);
  // Checksum 0x1497 computed independently over the same 20 bytes.
  assert.deepEqual(
    buf.subarray(0, IPV4_HEADER_LEN),
    hex("4500 0020 1234 4000 4011 1497 0a000001 0a000002"),
  );
  // The payload is not the header's to touch.
  assert.ok(buf.subarray(20).every((b) => b === 0xa5));
  const p = Ipv4Packet.check(buf);
  assert.ok(p instanceof Ipv4Packet);
  assert.equal(p.verifyChecksum(), true);
  const back = parseIpv4(p);
  assert.deepEqual(back, {
    ...repr,
    moreFragments: false,
    fragmentOffset: 0,
    dscpEcn: 0,
  });
});

Deno.test("emitIpv4 encodes fragment fields: MF and offset in 8-byte units", () => {
  const buf = new Uint8Array(28).fill(0xa5);
  emitIpv4({
    src: ip("10.0.0.1"),
    dst: ip("10.0.0.2"),
    protocol: 17,
    payloadLen: 8,
    ttl: 1,
    ident: 0xbeef,
    dontFragment: false,
    moreFragments: true,
    fragmentOffset: 1480,
  }, buf);
  const p = new Ipv4Packet(buf);
  assert.equal(p.flagsFrag, 0x2000 | 185);
  assert.equal(p.moreFragments, true);
  assert.equal(p.dontFragment, false);
  assert.equal(p.fragmentOffset, 1480);
  assert.equal(p.isFragment, true);
  assert.equal(p.verifyChecksum(), true);
});
