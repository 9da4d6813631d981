// DNS wire format (core/wire/dns.ts): encode, decode, compression, and hostile input.
import assert from "node:assert/strict";
import {
  canonicalName,
  checkName,
  decodeMessage,
  DNS_DEFAULT_EDNS_PAYLOAD,
  DnsClass,
  type DnsMessage,
  type DnsParseError,
  DnsRcode,
  type DnsRecord,
  DnsType,
  encodeMessage,
  encodeQuery,
  isAbsoluteName,
  nameEquals,
} from "../core/wire/dns.ts";
import { parseIP } from "../core/wire/addr.ts";

const ERRORS: readonly DnsParseError[] = ["truncated", "malformed", "bad-pointer", "name-too-long"];

function decoded(buf: Uint8Array): DnsMessage {
  const m = decodeMessage(buf);
  if (typeof m === "string") throw new assert.AssertionError({ message: `decode failed: ${m}` });
  return m;
}

/** Bytes from a list of numbers and ASCII strings (each string is copied byte by byte). */
function bytes(...parts: (number | string | number[])[]): Uint8Array {
  const out: number[] = [];
  for (const p of parts) {
    if (typeof p === "number") out.push(p);
    else if (typeof p === "string") { for (const c of p) out.push(c.charCodeAt(0)); }
    else out.push(...p);
  }
  return Uint8Array.from(out);
}

/** A response header: id 0x1234, QR RD RA, the given counts. */
function header(qd: number, an: number, ns = 0, ar = 0, rcode = 0): number[] {
  return [0x12, 0x34, 0x81, 0x80 | rcode, 0, qd, 0, an, 0, ns, 0, ar];
}

const A = (addr: string, name = "svc.wg.test", ttl = 60): DnsRecord => ({
  name,
  type: addr.includes(":") ? DnsType.AAAA : DnsType.A,
  class: DnsClass.IN,
  ttl,
  kind: "address",
  address: parseIP(addr)!,
});

Deno.test("encodeQuery: header, question and RD as a stub sends them", async (t) => {
  await t.step("bytes of an A query without EDNS", () => {
    const { id, message } = encodeQuery("svc.wg.test", DnsType.A, { id: 0xbeef });
    assert.equal(id, 0xbeef);
    assert.deepEqual(
      message,
      bytes(
        [0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0],
        3,
        "svc",
        2,
        "wg",
        4,
        "test",
        0,
        [0, 1, 0, 1],
      ),
    );
  });
  await t.step("random IDs", () => {
    const ids = new Set<number>();
    for (let i = 0; i < 64; i++) ids.add(encodeQuery("a.test", DnsType.A).id);
    // 64 draws from 65536 values: a repeat is possible, a constant is not.
    assert.ok(ids.size >= 60, `only ${ids.size} distinct IDs`);
  });
  await t.step("EDNS OPT record", () => {
    const { message } = encodeQuery("a.test", DnsType.AAAA, { id: 1, edns: {} });
    // ARCOUNT 1; OPT: root, type 41, class = payload size, TTL 0, RDLENGTH 0.
    assert.equal(message[11], 1);
    assert.deepEqual(
      message.subarray(message.length - 11),
      bytes(0, [0, 41], [DNS_DEFAULT_EDNS_PAYLOAD >> 8, DNS_DEFAULT_EDNS_PAYLOAD & 0xff], [
        0,
        0,
        0,
        0,
      ], [0, 0]),
    );
    const m = decoded(message);
    assert.equal(m.edns?.udpPayloadSize, DNS_DEFAULT_EDNS_PAYLOAD);
    assert.equal(m.additionals.length, 0);
    assert.ok(m.rd && !m.qr);
  });
  await t.step("RD can be cleared", () => {
    assert.equal(
      decoded(encodeQuery("a", DnsType.A, { recursionDesired: false }).message).rd,
      false,
    );
  });
});

Deno.test("decodeMessage: a hand-built compressed response", () => {
  // Question svc.wg.test A at 12; answer 1: CNAME alias→ pointer; the CNAME target "real" + ptr
  // to "wg.test" (offset 16); answer 2: A for that target name via a pointer to the target.
  const msg = bytes(
    header(1, 3, 0, 0),
    3,
    "svc",
    2,
    "wg",
    4,
    "test",
    0, // 12..24
    [0, 1, 0, 1], // 25..28
    // answer 1 at 29: name = ptr 12, CNAME IN ttl 300, rdata "real" + ptr 16
    [0xc0, 12],
    [0, 5, 0, 1, 0, 0, 1, 0x2c, 0, 7],
    4,
    "real",
    [0xc0, 16], // target starts at 41
    // answer 2 at 48: name = ptr 41 (real.wg.test), A 10.77.0.9 ttl 60
    [0xc0, 41],
    [0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 77, 0, 9],
    // answer 3: AAAA with TTL top bit set (RFC 2181 8: read as 0)
    [0xc0, 41],
    [0, 28, 0, 1, 0x80, 0, 0, 5, 0, 16],
    [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
  );
  const m = decoded(msg);
  assert.equal(m.id, 0x1234);
  assert.ok(m.qr && m.rd && m.ra && !m.tc && !m.aa);
  assert.equal(m.rcode, DnsRcode.NOERROR);
  assert.deepEqual(m.questions, [{ name: "svc.wg.test", type: DnsType.A, class: DnsClass.IN }]);
  assert.deepEqual(m.answers[0], {
    name: "svc.wg.test",
    type: DnsType.CNAME,
    class: 1,
    ttl: 300,
    kind: "name",
    target: "real.wg.test",
  });
  assert.deepEqual(m.answers[1], A("10.77.0.9", "real.wg.test", 60));
  assert.deepEqual(m.answers[2], A("fd77::1", "real.wg.test", 0));
});

Deno.test("decodeMessage: compression pointers that loop or point forward are refused", async (t) => {
  const q = (...name: (number | string | number[])[]) => bytes(header(1, 0), ...name, [0, 1, 0, 1]);
  await t.step("a pointer to itself", () => {
    assert.equal(decodeMessage(q([0xc0, 12])), "bad-pointer");
  });
  await t.step("a pointer forward", () => {
    assert.equal(decodeMessage(q([0xc0, 14], 1, "a", 0)), "bad-pointer");
  });
  await t.step("a pointer into the header", () => {
    assert.equal(decodeMessage(q([0xc0, 2])), "bad-pointer");
  });
  await t.step("two names pointing at each other", () => {
    // Question 1 at 12: "a" then ptr→ question 2's name (17); question 2 at 17: ptr → 12.
    const msg = bytes(header(2, 0), 1, "a", [0xc0, 19], [0, 1, 0, 1], [0xc0, 12], [0, 1, 0, 1]);
    assert.equal(decodeMessage(msg), "bad-pointer");
  });
  await t.step("labels that run into a pointer back to their own start", () => {
    // 12: "a" 14: ptr→12. The pointer is behind itself, but not behind where its name began.
    const msg = bytes(header(1, 0), 1, "a", [0xc0, 12], [0, 1, 0, 1]);
    assert.equal(decodeMessage(msg), "bad-pointer");
  });
  await t.step("a loop inside a CNAME's RDATA", () => {
    const msg = bytes(
      header(0, 1),
      1,
      "a",
      0,
      [0, 5, 0, 1, 0, 0, 0, 1, 0, 2],
      [0xc0, 25], // points at itself
    );
    assert.equal(decodeMessage(msg), "bad-pointer");
  });
  await t.step("a long backward chain of pointers is fine and bounded", () => {
    // 100 names, each one label plus a pointer to the previous: 100 labels, 200 bytes of name.
    const parts: number[] = [...header(100, 0), 1, 0x61, 0, 0, 1, 0, 1];
    let prev = 12;
    for (let i = 1; i < 100; i++) {
      const at = parts.length;
      parts.push(1, 0x61 + (i % 26), 0xc0 | (prev >> 8), prev & 0xff, 0, 1, 0, 1);
      prev = at;
    }
    const m = decoded(Uint8Array.from(parts));
    assert.equal(m.questions.length, 100);
    assert.equal(m.questions[99]!.name.split(".").length, 100);
  });
  await t.step("a chain that grows past 255 bytes", () => {
    const parts: number[] = [...header(5, 0)];
    let prev = -1;
    for (let i = 0; i < 5; i++) {
      const at = parts.length;
      parts.push(60, ...new Array(60).fill(0x62));
      if (prev < 0) parts.push(0);
      else parts.push(0xc0 | (prev >> 8), prev & 0xff);
      parts.push(0, 1, 0, 1);
      prev = at;
    }
    assert.equal(decodeMessage(Uint8Array.from(parts)), "name-too-long");
  });
});

Deno.test("decodeMessage: malformed fields", async (t) => {
  await t.step("extended label types 0x40 and 0x80", () => {
    for (const b of [0x40, 0x80]) {
      assert.equal(decodeMessage(bytes(header(1, 0), b | 1, "a", 0, [0, 1, 0, 1])), "malformed");
    }
  });
  await t.step("an A record of 5 bytes, an AAAA of 4", () => {
    const a5 = bytes(header(0, 1), 0, [0, 1, 0, 1, 0, 0, 0, 1, 0, 5, 1, 2, 3, 4, 5]);
    assert.equal(decodeMessage(a5), "malformed");
    const aaaa4 = bytes(header(0, 1), 0, [0, 28, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]);
    assert.equal(decodeMessage(aaaa4), "malformed");
  });
  await t.step("a CNAME whose name does not fill its RDATA", () => {
    const m = bytes(header(0, 1), 0, [0, 5, 0, 1, 0, 0, 0, 1, 0, 4], 1, "a", 0, 0xff);
    assert.equal(decodeMessage(m), "malformed");
  });
  await t.step("two OPT records; OPT in the answer section", () => {
    const opt = [0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0];
    assert.equal(decodeMessage(bytes(header(0, 0, 0, 2), opt, opt)), "malformed");
    assert.equal(decodeMessage(bytes(header(0, 1, 0, 0), opt)), "malformed");
  });
  await t.step("an extended rcode from OPT", () => {
    const opt = [0, 0, 41, 0x04, 0xd0, 1, 0, 0, 0, 0, 0];
    const m = decoded(bytes(header(0, 0, 0, 1, 0), opt));
    assert.equal(m.rcode, DnsRcode.BADVERS);
  });
  await t.step("fewer than 12 bytes", () => {
    assert.equal(decodeMessage(new Uint8Array(11)), "truncated");
  });
});

/** A response with compression, EDNS, CNAME and both address families. */
function sampleResponse(): Uint8Array {
  return encodeMessage({
    id: 0x4242,
    qr: true,
    rd: true,
    ra: true,
    aa: true,
    questions: [{ name: "alias.wg.test", type: DnsType.AAAA, class: DnsClass.IN }],
    answers: [
      {
        name: "alias.wg.test",
        type: DnsType.CNAME,
        class: 1,
        ttl: 30,
        kind: "name",
        target: "svc.wg.test",
      },
      A("fd77::1", "svc.wg.test", 60),
      A("fd77::2", "svc.wg.test", 60),
    ],
    authorities: [{
      name: "wg.test",
      type: DnsType.NS,
      class: 1,
      ttl: 3600,
      kind: "name",
      target: "ns.wg.test",
    }],
    additionals: [A("10.77.0.1", "ns.wg.test", 3600)],
    edns: { udpPayloadSize: 1232, options: [{ code: 10, data: Uint8Array.of(1, 2, 3, 4) }] },
  });
}

Deno.test("encodeMessage: compresses names and decodes back to the same message", () => {
  const compressed = sampleResponse();
  const m = decoded(compressed);
  const plain = encodeMessage(m, { compress: false });
  assert.ok(compressed.length < plain.length - 30, `${compressed.length} vs ${plain.length}`);
  assert.deepEqual(decoded(plain), m);
  assert.equal(m.answers.length, 3);
  assert.equal(m.authorities.length, 1);
  assert.equal(m.additionals.length, 1);
  assert.deepEqual(m.edns, {
    udpPayloadSize: 1232,
    version: 0,
    dnssecOk: false,
    options: [{ code: 10, data: Uint8Array.of(1, 2, 3, 4) }],
  });
  // Pointers: "svc.wg.test" in answer 2 is two bytes (0xc0xx) after the CNAME's target.
  const pointers =
    [...compressed].filter((b, i) => (b & 0xc0) === 0xc0 && i > 12 && i + 1 < compressed.length)
      .length;
  assert.ok(pointers >= 5, `only ${pointers} pointer-looking bytes`);
});

Deno.test("decodeMessage: every strict prefix of a response is truncated", () => {
  const full = sampleResponse();
  for (let n = 0; n < full.length; n++) {
    assert.equal(decodeMessage(full.subarray(0, n)), "truncated", `prefix of ${n} bytes`);
  }
  decoded(full);
});

Deno.test("names: escapes, limits, case and the final dot", async (t) => {
  await t.step("labels with dots, backslashes and unprintable bytes round-trip", () => {
    const name = "a\\.b.c\\\\d.e\\032f\\255";
    const m = decoded(encodeQuery(name, DnsType.A, { id: 1 }).message);
    assert.equal(m.questions[0]!.name, name);
    // On the wire: 3 "a.b", 3 "c\d", 4 "e f\xff".
    const wire = encodeQuery(name, DnsType.A, { id: 1 }).message.subarray(12, 12 + 14);
    assert.deepEqual(wire, bytes(3, "a.b", 3, "c\\d", 4, "e f", 0xff, 0));
  });
  await t.step("checkName", () => {
    assert.equal(checkName("svc.wg.test"), undefined);
    assert.equal(checkName("svc.wg.test."), undefined);
    assert.match(checkName("a..b")!, /empty label/);
    assert.match(checkName(".a")!, /empty label/);
    assert.match(checkName("a".repeat(64))!, /longer than 63/);
    assert.equal(checkName("a".repeat(63)), undefined);
    // 4 labels of 63 = 4*64+1 = 257 bytes on the wire.
    assert.match(checkName(Array(4).fill("a".repeat(63)).join("."))!, /255/);
    assert.match(checkName("café.test")!, /ASCII/);
    assert.match(checkName("a\\")!, /backslash/);
    assert.throws(() => encodeQuery("a..b", DnsType.A), SyntaxError);
    assert.throws(() => encodeQuery("a".repeat(64), DnsType.A), RangeError);
  });
  await t.step("case-insensitive comparison, final dot", () => {
    assert.ok(nameEquals("SVC.Wg.Test.", "svc.wg.test"));
    assert.ok(!nameEquals("svc.wg.test", "svc.wg.tes"));
    assert.equal(canonicalName("."), ".");
    assert.equal(canonicalName(""), ".");
    assert.ok(isAbsoluteName("a.b."));
    assert.ok(!isAbsoluteName("a.b"));
    assert.ok(!isAbsoluteName("a\\."), "an escaped dot is part of the label");
    assert.ok(isAbsoluteName("a\\\\."), "an escaped backslash before a real dot");
  });
  await t.step("encoding compresses case-insensitively and keeps each name's case", () => {
    const msg = encodeMessage({
      id: 7,
      questions: [
        { name: "Svc.WG.test", type: 1, class: 1 },
        { name: "other.wg.TEST", type: 1, class: 1 },
      ],
    });
    // Second question: "other" + a 2-byte pointer + type/class.
    assert.equal(msg.length, 12 + 13 + 4 + 6 + 2 + 4);
    const m = decoded(msg);
    assert.equal(m.questions[0]!.name, "Svc.WG.test");
    // The suffix came from the first name, case and all.
    assert.equal(m.questions[1]!.name, "other.WG.test");
  });
});

/** Deterministic PRNG for the fuzzer (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("decodeMessage: 20 000 mutated responses never throw, and what decodes re-encodes", () => {
  const seeds = [
    sampleResponse(),
    encodeMessage({
      id: 1,
      qr: true,
      questions: [{ name: "x.y", type: DnsType.PTR, class: 1 }],
      answers: [
        { name: "x.y", type: DnsType.PTR, class: 1, ttl: 5, kind: "name", target: "p.q.y" },
        {
          name: "x.y",
          type: DnsType.TXT,
          class: 1,
          ttl: 5,
          kind: "raw",
          rdata: bytes(5, "hello"),
        },
      ],
    }),
  ];
  const rand = prng(0x5eed);
  const int = (n: number) => Math.floor(rand() * n);
  let ok = 0;
  const errors = new Map<string, number>();
  for (let i = 0; i < 20_000; i++) {
    const base = seeds[i % seeds.length]!;
    let buf: Uint8Array = base.slice();
    const edits = 1 + int(4);
    for (let e = 0; e < edits; e++) {
      switch (int(6)) {
        case 0: // flip a bit
          if (buf.length) buf[int(buf.length)]! ^= 1 << int(8);
          break;
        case 1: // set a byte to an interesting value
          if (buf.length) buf[int(buf.length)] = [0, 0xff, 0xc0, 0x3f, 0x40, 1, 12][int(7)]!;
          break;
        case 2: // truncate
          buf = buf.subarray(0, int(buf.length + 1));
          break;
        case 3: // a random pointer somewhere
          if (buf.length > 2) {
            const at = int(buf.length - 1);
            buf[at] = 0xc0 | int(2);
            buf[at + 1] = int(256);
          }
          break;
        case 4: { // insert random bytes
          const at = int(buf.length + 1);
          const ins = Uint8Array.from({ length: 1 + int(8) }, () => int(256));
          const next = new Uint8Array(buf.length + ins.length);
          next.set(buf.subarray(0, at));
          next.set(ins, at);
          next.set(buf.subarray(at), at + ins.length);
          buf = next;
          break;
        }
        case 5: // raise a count
          if (buf.length >= 12) buf[4 + 2 * int(4) + 1] = int(256);
          break;
      }
    }
    let r: DnsMessage | DnsParseError;
    try {
      r = decodeMessage(buf);
    } catch (e) {
      throw new assert.AssertionError({
        message: `decodeMessage threw on case ${i}: ${e}\n${Array.from(buf).join(",")}`,
      });
    }
    if (typeof r === "string") {
      assert.ok(ERRORS.includes(r), `unknown error ${r}`);
      errors.set(r, (errors.get(r) ?? 0) + 1);
      continue;
    }
    ok++;
    // Whatever decodes is a message we can write again and read back identically.
    for (const name of [...r.questions, ...r.answers, ...r.authorities, ...r.additionals]) {
      assert.equal(checkName(name.name), undefined, `case ${i}: ${name.name}`);
    }
    assert.deepEqual(decoded(encodeMessage(r)), r, `case ${i} did not round-trip`);
  }
  // The mutations must reach both outcomes and the common refusals, or they prove little
  // (a name over 255 bytes needs a long pointer chain, which the test above builds on purpose).
  assert.ok(ok > 1000, `only ${ok} mutated messages decoded`);
  for (const e of ["truncated", "malformed", "bad-pointer"]) {
    assert.ok((errors.get(e) ?? 0) > 10, `${e}: ${errors.get(e) ?? 0}`);
  }
});
