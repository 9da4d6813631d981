import assert from "node:assert/strict";
import { parseIP } from "../core/wire/addr.ts";
import {
  emitIpv6,
  emitIpv6Fragment,
  forEachOption,
  IPV6_HEADER_LEN,
  Ipv6ExtHeader,
  Ipv6FragmentHeader,
  Ipv6Packet,
  optionAction,
  parseIpv6,
} from "../core/wire/ipv6.ts";

const hex = (s: string) =>
  Uint8Array.from(s.replace(/\s+/g, "").match(/../g)!, (b) => parseInt(b, 16));
const ip = (s: string) => parseIP(s)!;

Deno.test("emitIpv6 writes every fixed-header byte (0xa5 pre-fill) and parses back", () => {
  const repr = {
    src: ip("fd00::1"),
    dst: ip("fd00::2"),
    nextHeader: 17,
    payloadLen: 13,
    hopLimit: 64,
    trafficClass: 0xb8,
    flowLabel: 0x12345,
  };
  const buf = new Uint8Array(IPV6_HEADER_LEN + 13).fill(0xa5);
  emitIpv6(repr, buf);
  assert.deepEqual(
    buf.subarray(0, 40),
    hex(
      "6b812345 000d 11 40" +
        "fd000000000000000000000000000001" +
        "fd000000000000000000000000000002",
    ),
  );
  assert.ok(buf.subarray(40).every((b) => b === 0xa5));
  const p = Ipv6Packet.check(buf);
  assert.ok(p instanceof Ipv6Packet);
  assert.deepEqual(parseIpv6(p), repr);
  assert.equal(p.payload.length, 13);
});

Deno.test("Ipv6Packet.check: version, and Payload Length against the buffer", () => {
  const buf = new Uint8Array(48);
  emitIpv6({ src: ip("::1"), dst: ip("::2"), nextHeader: 59, payloadLen: 8, hopLimit: 1 }, buf);
  assert.ok(Ipv6Packet.check(buf) instanceof Ipv6Packet);
  assert.equal(Ipv6Packet.check(buf.subarray(0, 39)), "truncated");
  assert.equal(Ipv6Packet.check(buf.subarray(0, 47)), "truncated");
  const v4 = buf.slice();
  v4[0] = 0x45;
  assert.equal(Ipv6Packet.check(v4), "malformed");
  // Extra bytes after Payload Length are not part of the packet.
  const padded = new Uint8Array(64);
  padded.set(buf);
  const p = Ipv6Packet.check(padded);
  assert.ok(p instanceof Ipv6Packet);
  assert.equal(p.packet.length, 48);
});

Deno.test("Ipv6ExtHeader: length in 8-octet units after the first 8", () => {
  // Destination Options, next header UDP, length 1 => 16 bytes: PadN(4), unknown 0x1e len 6.
  const h = hex("1101 0104 00000000 1e06 010203040506");
  const v = Ipv6ExtHeader.check(h);
  assert.ok(v instanceof Ipv6ExtHeader);
  assert.equal(v.nextHeader, 17);
  assert.equal(v.headerLen, 16);
  const seen: [number, number, number][] = [];
  const r = forEachOption(v.options, (type, off, data) => {
    seen.push([type, off, data.length]);
    return undefined;
  });
  assert.equal(r, undefined);
  assert.deepEqual(seen, [[0x1e, 6, 6]]);
  assert.equal(Ipv6ExtHeader.check(h.subarray(0, 15)), "truncated");
  assert.equal(Ipv6ExtHeader.check(h.subarray(0, 7)), "truncated");
});

Deno.test("forEachOption: Pad1, truncated options, early stop", () => {
  assert.equal(forEachOption(hex("00 00 00 00 00 00"), () => 1), undefined);
  assert.equal(forEachOption(hex("00 00 01 05 00 00"), () => 1), "truncated");
  assert.equal(forEachOption(hex("00 00 00 00 00 c2"), () => 1), "truncated");
  assert.deepEqual(
    forEachOption(hex("01 00 c2 02 0000"), (type, off) => ({ type, off })),
    { type: 0xc2, off: 2 },
  );
});

Deno.test("optionAction follows the two high bits (RFC 8200 4.2)", () => {
  assert.equal(optionAction(0x05), "skip");
  assert.equal(optionAction(0x45), "discard");
  assert.equal(optionAction(0x85), "discard-icmp");
  assert.equal(optionAction(0xc2), "discard-icmp-unicast");
});

Deno.test("Fragment header emit (0xa5 pre-fill) and parse", () => {
  const buf = new Uint8Array(8).fill(0xa5);
  emitIpv6Fragment(
    { nextHeader: 17, fragmentOffset: 1232, moreFragments: true, ident: 0xdeadbeef },
    buf,
  );
  // Offset 1232 bytes = 154 units => 154 << 3 = 0x04d0, M => 0x04d1.
  assert.deepEqual(buf, hex("11 00 04d1 deadbeef"));
  const f = Ipv6FragmentHeader.check(buf);
  assert.ok(f instanceof Ipv6FragmentHeader);
  assert.equal(f.nextHeader, 17);
  assert.equal(f.fragmentOffset, 1232);
  assert.equal(f.moreFragments, true);
  assert.equal(f.ident, 0xdeadbeef);
  assert.equal(Ipv6FragmentHeader.check(buf.subarray(0, 7)), "truncated");
});
