import assert from "node:assert/strict";
import { parseIP } from "../core/wire/addr.ts";
import { emitUdp, parseUdp, UDP_HEADER_LEN, UdpPacket } from "../core/wire/udp.ts";

const hex = (s: string) =>
  Uint8Array.from(s.replace(/\s+/g, "").match(/../g)!, (b) => parseInt(b, 16));
const ip = (s: string) => parseIP(s)!;
const text = (s: string) => new TextEncoder().encode(s);

// Checksums below were computed independently (pseudo-header + header + data, RFC 768 and
// RFC 8200 8.1) for 1234 -> 5678 carrying "hello".
const A4 = ip("10.0.0.1"), B4 = ip("10.0.0.2");
const A6 = ip("fd00::1"), B6 = ip("fd00::2");

Deno.test("emitUdp over IPv4 writes header and checksum (0xa5 pre-fill)", () => {
  const buf = new Uint8Array(13).fill(0xa5);
  emitUdp({ srcPort: 1234, dstPort: 5678, payloadLen: 5 }, buf, A4, B4, text("hello"));
  assert.deepEqual(buf, hex("04d2 162e 000d 8cff 68656c6c6f"));
  const p = UdpPacket.check(buf);
  assert.ok(p instanceof UdpPacket);
  assert.equal(p.verifyChecksum(A4, B4), true);
  assert.deepEqual(parseUdp(p), { srcPort: 1234, dstPort: 5678, payloadLen: 5 });
  assert.deepEqual(p.payload, text("hello"));
});

Deno.test("emitUdp over IPv6 uses the IPv6 pseudo-header", () => {
  const buf = new Uint8Array(13).fill(0xa5);
  emitUdp({ srcPort: 1234, dstPort: 5678, payloadLen: 5 }, buf, A6, B6, text("hello"));
  assert.deepEqual(buf, hex("04d2 162e 000d a6fd 68656c6c6f"));
  const p = new UdpPacket(buf);
  assert.equal(p.verifyChecksum(A6, B6), true);
  // The same bytes are wrong under other addresses: the pseudo-header is covered.
  assert.equal(p.verifyChecksum(A6, ip("fd00::3")), false);
});

Deno.test("a computed checksum of zero is sent as 0xffff and verifies (RFC 768)", () => {
  // Payload word 0xd0d7 makes the sum come out at exactly zero for these addresses/ports.
  const buf = new Uint8Array(10).fill(0xa5);
  emitUdp({ srcPort: 1234, dstPort: 5678, payloadLen: 2 }, buf, A4, B4, hex("d0d7"));
  const p = new UdpPacket(buf);
  assert.equal(p.checksum, 0xffff);
  assert.equal(p.verifyChecksum(A4, B4), true);
});

Deno.test("verifyChecksum fails for a flipped data bit", () => {
  const buf = new Uint8Array(13);
  emitUdp({ srcPort: 1, dstPort: 2, payloadLen: 5 }, buf, A4, B4, text("hello"));
  buf[12]! ^= 0x10;
  assert.equal(new UdpPacket(buf).verifyChecksum(A4, B4), false);
});

Deno.test("UdpPacket.check: header, Length at least 8 and within the buffer", () => {
  assert.equal(UdpPacket.check(new Uint8Array(7)), "truncated");
  assert.equal(UdpPacket.check(hex("0001 0002 0007 0000")), "malformed");
  assert.equal(UdpPacket.check(hex("0001 0002 000a 0000 00")), "truncated");
  const p = UdpPacket.check(hex("0001 0002 0009 0000 41 ffff"));
  assert.ok(p instanceof UdpPacket);
  // Trimmed to Length: the trailing bytes are not data.
  assert.equal(p.buffer.length, 9);
  assert.deepEqual(p.payload, hex("41"));
  assert.equal(UDP_HEADER_LEN, 8);
});
