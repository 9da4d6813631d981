import assert from "node:assert/strict";
import { parseIP } from "../core/wire/addr.ts";
import {
  emitIcmp,
  icmpBufferLen,
  IcmpPacket,
  type IcmpRepr,
  isIcmpv4Error,
  isIcmpv6Error,
  parseIcmp,
} from "../core/wire/icmp.ts";

const hex = (s: string) =>
  Uint8Array.from(s.replace(/\s+/g, "").match(/../g)!, (b) => parseInt(b, 16));
const ip = (s: string) => parseIP(s)!;
const text = (s: string) => new TextEncoder().encode(s);

Deno.test("ICMPv4 echo request: known bytes and checksum (0xa5 pre-fill)", () => {
  const repr: IcmpRepr = { kind: "echo-request", ident: 0x0102, seq: 0x0304, data: text("abcd") };
  const buf = new Uint8Array(icmpBufferLen(repr)).fill(0xa5);
  emitIcmp(repr, buf);
  // Checksum computed independently over 08 00 0000 0102 0304 "abcd".
  assert.deepEqual(buf, hex("08 00 2f33 0102 0304 61626364"));
  const p = IcmpPacket.check(buf);
  assert.ok(p instanceof IcmpPacket);
  assert.equal(p.verifyChecksumV4(), true);
  assert.deepEqual(parseIcmp(p, false), repr);
  buf[9]! ^= 1;
  assert.equal(p.verifyChecksumV4(), false);
});

Deno.test("ICMPv6 echo request: the pseudo-header is in the checksum", () => {
  const src = ip("fd00::1"), dst = ip("fd00::2");
  const repr: IcmpRepr = { kind: "echo-request", ident: 1, seq: 2, data: text("ping") };
  const buf = new Uint8Array(icmpBufferLen(repr)).fill(0xa5);
  emitIcmp(repr, buf, { src, dst });
  assert.deepEqual(buf, hex("80 00 a6e0 0001 0002 70696e67"));
  const p = new IcmpPacket(buf);
  assert.equal(p.verifyChecksumV6(src, dst), true);
  assert.equal(p.verifyChecksumV6(src, ip("fd00::3")), false);
  assert.deepEqual(parseIcmp(p, true), repr);
});

Deno.test("errors: type numbers per family, MTU and pointer words", async (t) => {
  const quote = new Uint8Array(28).fill(7);
  await t.step("ICMPv4 fragmentation needed carries a 16-bit next-hop MTU", () => {
    const buf = new Uint8Array(36).fill(0xa5);
    emitIcmp({ kind: "packet-too-big", code: 4, value: 1400, data: quote }, buf);
    assert.deepEqual(buf.subarray(0, 2), hex("0304"));
    assert.deepEqual(buf.subarray(4, 8), hex("0000 0578"));
    const p = new IcmpPacket(buf);
    assert.equal(p.verifyChecksumV4(), true);
    assert.equal(p.nextHopMtu, 1400);
    assert.deepEqual(parseIcmp(p, false), {
      kind: "packet-too-big",
      code: 4,
      value: 1400,
      data: quote,
    });
  });
  await t.step("ICMPv6 packet too big carries a 32-bit MTU", () => {
    const src = ip("fd00::1"), dst = ip("fd00::2");
    const buf = new Uint8Array(36).fill(0xa5);
    emitIcmp({ kind: "packet-too-big", code: 0, value: 1280, data: quote }, buf, { src, dst });
    assert.deepEqual(buf.subarray(0, 2), hex("0200"));
    assert.deepEqual(buf.subarray(4, 8), hex("00000500"));
    assert.equal(new IcmpPacket(buf).verifyChecksumV6(src, dst), true);
  });
  await t.step("ICMPv4 port unreachable clears the unused word", () => {
    const buf = new Uint8Array(36).fill(0xa5);
    emitIcmp({ kind: "dest-unreachable", code: 3, value: 0, data: quote }, buf);
    assert.deepEqual(buf.subarray(0, 2), hex("0303"));
    assert.deepEqual(buf.subarray(4, 8), hex("00000000"));
    assert.deepEqual(buf.subarray(8), quote);
    assert.deepEqual(parseIcmp(new IcmpPacket(buf), false), {
      kind: "dest-unreachable",
      code: 3,
      value: 0,
      data: quote,
    });
  });
  await t.step("ICMPv6 parameter problem: 32-bit pointer", () => {
    const src = ip("fd00::1"), dst = ip("fd00::2");
    const buf = new Uint8Array(36);
    emitIcmp({ kind: "param-problem", code: 1, value: 6, data: quote }, buf, { src, dst });
    assert.deepEqual(buf.subarray(0, 2), hex("0401"));
    assert.deepEqual(buf.subarray(4, 8), hex("00000006"));
    assert.deepEqual(parseIcmp(new IcmpPacket(buf), true), {
      kind: "param-problem",
      code: 1,
      value: 6,
      data: quote,
    });
  });
  await t.step("ICMPv4 parameter problem: 8-bit pointer in the first byte", () => {
    const buf = new Uint8Array(36);
    emitIcmp({ kind: "param-problem", code: 0, value: 9, data: quote }, buf);
    assert.deepEqual(buf.subarray(0, 8).subarray(4), hex("09000000"));
    assert.equal((parseIcmp(new IcmpPacket(buf), false) as { value: number }).value, 9);
  });
  await t.step("time exceeded and unknown types", () => {
    const buf = new Uint8Array(36);
    emitIcmp({ kind: "time-exceeded", code: 1, value: 0, data: quote }, buf);
    assert.deepEqual(buf.subarray(0, 2), hex("0b01"));
    const other = hex("0d00 0000 00000000");
    assert.deepEqual(parseIcmp(new IcmpPacket(other), false), {
      kind: "other",
      type: 13,
      code: 0,
      data: new Uint8Array(0),
    });
  });
});

Deno.test("error classification (RFC 792, RFC 4443 2.1)", () => {
  assert.deepEqual([0, 3, 4, 5, 8, 11, 12, 13].map(isIcmpv4Error), [
    false,
    true,
    true,
    true,
    false,
    true,
    true,
    false,
  ]);
  assert.deepEqual([1, 2, 127, 128, 129, 135].map(isIcmpv6Error), [
    true,
    true,
    true,
    false,
    false,
    false,
  ]);
});

Deno.test("IcmpPacket.check needs the 8-byte header", () => {
  assert.equal(IcmpPacket.check(new Uint8Array(7)), "truncated");
  assert.ok(IcmpPacket.check(new Uint8Array(8)) instanceof IcmpPacket);
});
