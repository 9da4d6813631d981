import assert from "node:assert/strict";
import {
  TCP_HEADER_LEN,
  tcpChecksum,
  TcpField,
  TcpFlag,
  TcpPacket,
  TcpRepr,
} from "../core/wire/tcp.ts";

const SRC = new Uint8Array([192, 168, 0, 1]);
const DST = new Uint8Array([192, 168, 0, 2]);

/** An independent RFC 1071 sum over pseudo-header and segment, word by word. */
function referenceChecksum(src: Uint8Array, dst: Uint8Array, seg: Uint8Array): number {
  const bytes = [...src, ...dst, 0, 6, seg.length >> 8, seg.length & 0xff, ...seg];
  if (bytes.length % 2) bytes.push(0);
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) sum += (bytes[i]! << 8) + bytes[i + 1]!;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function linuxLikeSyn(): TcpRepr {
  const r = new TcpRepr();
  r.srcPort = 0xa1b2;
  r.dstPort = 443;
  r.seq = 0xdeadbeef;
  r.flags = TcpFlag.SYN;
  r.window = 64240;
  r.mss = 1460;
  r.sackPermitted = true;
  r.timestamp = true;
  r.tsVal = 0x01020304;
  r.tsEcr = 0;
  r.windowScale = 7;
  return r;
}

Deno.test("TcpRepr.emit", async (t) => {
  await t.step("writes every header field and lays out SYN options as Linux does", () => {
    const r = linuxLikeSyn();
    assert.equal(r.headerLen, 40);
    const buf = new Uint8Array(r.bufferLen).fill(0xa5);
    r.emit(buf, SRC, DST);
    const expected = [
      0xa1,
      0xb2,
      0x01,
      0xbb, // ports
      0xde,
      0xad,
      0xbe,
      0xef, // seq
      0x00,
      0x00,
      0x00,
      0x00, // ack (no ACK flag: zero)
      0xa0,
      0x02,
      0xfa,
      0xf0, // data offset 10, SYN, window 64240
      -1,
      -1,
      0x00,
      0x00, // checksum, urgent
      0x02,
      0x04,
      0x05,
      0xb4, // MSS 1460
      0x04,
      0x02, // SACK permitted
      0x08,
      0x0a,
      0x01,
      0x02,
      0x03,
      0x04,
      0x00,
      0x00,
      0x00,
      0x00, // timestamps
      0x01,
      0x03,
      0x03,
      0x07, // NOP, window scale 7
    ];
    expected.forEach((b, i) => {
      if (b >= 0) assert.equal(buf[i], b, `byte ${i}`);
    });
    assert.equal(
      (buf[TcpField.CHECKSUM]! << 8) | buf[TcpField.CHECKSUM + 1]!,
      referenceChecksum(
        SRC,
        DST,
        new Uint8Array([...buf.subarray(0, 16), 0, 0, ...buf.subarray(18)]),
      ),
    );
  });

  await t.step("data segment: NOP NOP timestamps, SACK blocks, payload", () => {
    const r = new TcpRepr();
    r.srcPort = 1;
    r.dstPort = 2;
    r.seq = 100;
    r.ack = 200;
    r.flags = TcpFlag.ACK | TcpFlag.PSH;
    r.window = 5;
    r.timestamp = true;
    r.tsVal = 7;
    r.tsEcr = 8;
    r.addSack(300, 400).addSack(500, 600);
    r.payload = new Uint8Array([1, 2, 3]);
    const buf = new Uint8Array(r.bufferLen).fill(0xa5);
    r.emit(buf, SRC, DST);
    assert.equal(r.headerLen, 20 + 12 + 4 + 16);
    assert.deepEqual([...buf.subarray(20, 24)], [1, 1, 8, 10]);
    assert.deepEqual([...buf.subarray(32, 36)], [1, 1, 5, 18]);
    assert.deepEqual([...buf.subarray(buf.length - 3)], [1, 2, 3]);
    const p = TcpPacket.check(buf)!;
    assert.ok(p.checksumValid(SRC, DST));
    assert.equal(tcpChecksum(buf, SRC, DST), 0);
  });

  await t.step("at most three SACK blocks fit beside timestamps, four without", () => {
    const r = new TcpRepr();
    r.flags = TcpFlag.ACK;
    for (let i = 0; i < 4; i++) r.addSack(i * 10, i * 10 + 5);
    r.timestamp = true;
    assert.equal(r.optionsLen, 12 + 4 + 24);
    const back = TcpRepr.parse(TcpPacket.check(r.toBytes(SRC, DST))!)!;
    assert.equal(back.sackCount, 3);
    r.timestamp = false;
    assert.equal(r.optionsLen, 4 + 32);
    assert.equal(TcpRepr.parse(TcpPacket.check(r.toBytes(SRC, DST))!)!.sackCount, 4);
  });

  await t.step("a buffer too small for the header is refused", () => {
    assert.throws(() => linuxLikeSyn().emitHeader(new Uint8Array(39)), RangeError);
  });
});

Deno.test("TcpRepr.parse", async (t) => {
  await t.step("round trip of every field and option", () => {
    const r = linuxLikeSyn();
    r.flags = TcpFlag.SYN | TcpFlag.ACK;
    r.ack = 0x11223344;
    r.payload = new TextEncoder().encode("hi");
    const bytes = r.toBytes(SRC, DST);
    const p = TcpPacket.check(bytes)!;
    assert.ok(p.checksumValid(SRC, DST));
    const back = TcpRepr.parse(p)!;
    assert.equal(back.srcPort, 0xa1b2);
    assert.equal(back.dstPort, 443);
    assert.equal(back.seq, 0xdeadbeef);
    assert.equal(back.ack, 0x11223344);
    assert.equal(back.flags, TcpFlag.SYN | TcpFlag.ACK);
    assert.equal(back.window, 64240);
    assert.equal(back.mss, 1460);
    assert.equal(back.windowScale, 7);
    assert.equal(back.sackPermitted, true);
    assert.equal(back.timestamp, true);
    assert.equal(back.tsVal, 0x01020304);
    assert.equal(back.tsEcr, 0);
    assert.equal(new TextDecoder().decode(back.payload), "hi");
  });

  await t.step("the checksum covers the pseudo-header", () => {
    const bytes = linuxLikeSyn().toBytes(SRC, DST);
    assert.ok(TcpPacket.check(bytes)!.checksumValid(SRC, DST));
    assert.ok(!TcpPacket.check(bytes)!.checksumValid(SRC, new Uint8Array([192, 168, 0, 3])));
    bytes[30] = bytes[30]! ^ 1;
    assert.ok(!TcpPacket.check(bytes)!.checksumValid(SRC, DST));
  });

  await t.step("checked view refuses short buffers and bad data offsets", () => {
    assert.equal(TcpPacket.check(new Uint8Array(19)), undefined);
    const b = new Uint8Array(20);
    b[12] = 4 << 4;
    assert.equal(TcpPacket.check(b), undefined, "data offset below 5");
    b[12] = 6 << 4;
    assert.equal(TcpPacket.check(b), undefined, "header longer than the buffer");
    b[12] = 5 << 4;
    assert.ok(TcpPacket.check(b));
  });

  function withOptions(opts: number[]): Uint8Array {
    const len = TCP_HEADER_LEN + Math.ceil(opts.length / 4) * 4;
    const b = new Uint8Array(len);
    b[12] = (len / 4) << 4;
    b.set(opts, 20);
    return b;
  }

  await t.step("malformed option lengths make the segment unparseable", () => {
    assert.equal(TcpRepr.parse(TcpPacket.check(withOptions([2, 0, 0, 0]))!), undefined, "length 0");
    assert.equal(TcpRepr.parse(TcpPacket.check(withOptions([1, 1, 8, 10]))!), undefined, "overrun");
    assert.equal(
      TcpRepr.parse(TcpPacket.check(withOptions([1, 1, 1, 2]))!),
      undefined,
      "kind w/o length",
    );
  });

  await t.step("unknown options are skipped, wrong-length known ones ignored, EOL ends", () => {
    const r = TcpRepr.parse(
      TcpPacket.check(withOptions([30, 4, 9, 9, 2, 3, 5, 3, 3, 20, 0, 2, 4, 5, 180]))!,
    )!;
    assert.equal(r.mss, undefined, "MSS with length 3 is ignored");
    assert.equal(r.windowScale, 14, "a shift above 14 is taken as 14 (RFC 7323 2.3)");
    const e = TcpRepr.parse(TcpPacket.check(withOptions([0, 2, 4, 5, 180]))!)!;
    assert.equal(e.mss, undefined, "nothing after EOL is read");
  });

  await t.step("SACK blocks", () => {
    const opts = [1, 1, 5, 26];
    for (const v of [1, 2, 3, 4, 5, 6]) opts.push(0, 0, 0, v);
    const r = TcpRepr.parse(TcpPacket.check(withOptions(opts))!)!;
    assert.equal(r.sackCount, 3);
    assert.deepEqual([...r.sackBlocks.subarray(0, 6)], [1, 2, 3, 4, 5, 6]);
  });

  await t.step("parse into a reused object clears what the last segment had", () => {
    const reuse = new TcpRepr();
    TcpRepr.parse(TcpPacket.check(linuxLikeSyn().toBytes(SRC, DST))!, reuse);
    assert.equal(reuse.mss, 1460);
    const plain = new TcpRepr();
    plain.flags = TcpFlag.ACK;
    const again = TcpRepr.parse(TcpPacket.check(plain.toBytes(SRC, DST))!, reuse)!;
    assert.equal(again, reuse);
    assert.equal(again.mss, undefined);
    assert.equal(again.timestamp, false);
    assert.equal(again.sackPermitted, false);
  });

  await t.step("IPv6 pseudo-header", () => {
    const a = new Uint8Array(16).fill(0xfd), b = new Uint8Array(16).fill(0xfe);
    const bytes = linuxLikeSyn().toBytes(a, b);
    const sum = (bytes[16]! << 8) | bytes[17]!;
    bytes[16] = bytes[17] = 0;
    const pseudo = [...a, ...b, 0, 0, 0, bytes.length, 0, 0, 0, 6];
    const all = [...pseudo, ...bytes];
    let s = 0;
    for (let i = 0; i < all.length; i += 2) s += (all[i]! << 8) + (all[i + 1] ?? 0);
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    assert.equal(sum, ~s & 0xffff);
  });
});
