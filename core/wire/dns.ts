/**
 * DNS messages (RFC 1035 4.1) with EDNS(0) (RFC 6891): decode any message, encode queries and
 * (for tests and the broker) whole messages.
 *
 * ```text
 *                                 1  1  1  1  1  1
 *   0  1  2  3  4  5  6  7  8  9  0  1  2  3  4  5
 * +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
 * |                      ID                       |
 * |QR|   Opcode  |AA|TC|RD|RA| Z|AD|CD|   RCODE   |
 * |                    QDCOUNT                    |
 * |                    ANCOUNT                    |
 * |                    NSCOUNT                    |
 * |                    ARCOUNT                    |
 * +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
 * question: QNAME QTYPE QCLASS; then answer, authority, additional records:
 * NAME TYPE CLASS TTL(32) RDLENGTH RDATA
 * ```
 *
 * Decoding never throws: untrusted bytes give a {@link DnsMessage} or a {@link DnsParseError}.
 * Names come back in presentation form without the final dot (`svc.wg.test`, the root is `.`),
 * with `.`, `\` and bytes outside printable ASCII escaped (`\.`, `\\`, `\032`) so that two
 * different names on the wire never print the same. Compression pointers are followed only
 * backwards, each one further back than the last, so a message can not make the decoder loop.
 *
 * @module
 */
import type { IpBytes } from "./addr.ts";

/** Offsets of the header fields. */
export const DnsField = {
  ID: 0,
  FLAGS: 2,
  QDCOUNT: 4,
  ANCOUNT: 6,
  NSCOUNT: 8,
  ARCOUNT: 10,
} as const;

export const DNS_HEADER_LEN = 12;
/** RFC 1035 3.1: a name is at most 255 bytes on the wire, counting length bytes and the root. */
export const DNS_MAX_NAME_WIRE_LEN = 255;
/** RFC 1035 3.1: labels are 63 bytes or less (the two top bits of the length mark pointers). */
export const DNS_MAX_LABEL_LEN = 63;
/** RFC 1035 4.2.1: the UDP payload a server may send without EDNS. */
export const DNS_CLASSIC_UDP_PAYLOAD = 512;
/** The EDNS UDP payload we advertise: 1232 fits an IPv6 minimum MTU (DNS Flag Day 2020). */
export const DNS_DEFAULT_EDNS_PAYLOAD = 1232;
/**
 * Pointers followed within one name. Each must point further back than the last, which already
 * bounds the walk; this is a second, tighter bound (a real name has at most 127 labels).
 */
export const DNS_MAX_POINTER_HOPS = 128;

/** Record types (IANA "Resource Record (RR) TYPEs"). */
export const DnsType = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  OPT: 41,
  ANY: 255,
} as const;

export const DnsClass = { IN: 1 } as const;

export const DnsOpcode = { QUERY: 0 } as const;

/** Response codes (RFC 1035 4.1.1; BADVERS from RFC 6891 needs EDNS's upper bits). */
export const DnsRcode = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
  BADVERS: 16,
} as const;

const Flag = {
  QR: 0x8000,
  AA: 0x0400,
  TC: 0x0200,
  RD: 0x0100,
  RA: 0x0080,
  AD: 0x0020,
  CD: 0x0010,
  OPCODE_SHIFT: 11,
  OPCODE_MASK: 0xf,
  RCODE_MASK: 0xf,
} as const;

/** Fixed part of a resource record after its name: TYPE, CLASS, TTL, RDLENGTH. */
const RR_FIXED_LEN = 10;
/** Fixed part of a question after its name: QTYPE, QCLASS. */
const QUESTION_FIXED_LEN = 4;

/**
 * Why a message was refused: `truncated` when it ends before what its counts and lengths
 * promise, `bad-pointer` for a compression pointer that does not point strictly backwards (a
 * loop, or a forward reference), `name-too-long` for a name over 255 bytes, `malformed` for any
 * other field the format forbids (a reserved label type, an A record that is not 4 bytes, a second
 * OPT record).
 */
export type DnsParseError = "truncated" | "malformed" | "bad-pointer" | "name-too-long";

/** One entry of the question section. */
export interface DnsQuestion {
  name: string;
  type: number;
  class: number;
}

/**
 * What a record holds: addresses for A and AAAA (class IN), a name for CNAME, NS and PTR, the raw
 * RDATA for every other type.
 */
export type DnsRecordData =
  | { kind: "address"; address: IpBytes }
  | { kind: "name"; target: string }
  | { kind: "raw"; rdata: Uint8Array };

/** A resource record. `ttl` is in seconds; RFC 2181 8: a value with the top bit set reads as 0. */
export type DnsRecord = { name: string; type: number; class: number; ttl: number } & DnsRecordData;

/** An EDNS(0) option (RFC 6891 6.1.2). */
export interface DnsEdnsOption {
  code: number;
  data: Uint8Array;
}

/** The OPT pseudo-record's contents (RFC 6891 6.1.3). */
export interface DnsEdns {
  /** The largest UDP payload the sender can receive. */
  udpPayloadSize: number;
  version: number;
  /** The DO bit (RFC 3225). */
  dnssecOk: boolean;
  options: DnsEdnsOption[];
}

/** A decoded message. The OPT record is not among `additionals`: it is `edns`. */
export interface DnsMessage {
  id: number;
  /** True for a response. */
  qr: boolean;
  opcode: number;
  aa: boolean;
  /** Truncated: the answer did not fit the UDP payload. */
  tc: boolean;
  rd: boolean;
  ra: boolean;
  ad: boolean;
  cd: boolean;
  /** The full response code: the header's 4 bits, plus the OPT record's upper 8 bits. */
  rcode: number;
  questions: DnsQuestion[];
  answers: DnsRecord[];
  authorities: DnsRecord[];
  additionals: DnsRecord[];
  edns?: DnsEdns;
}

/** What {@link encodeMessage} needs: an ID, and whatever else is not zero or empty. */
export interface DnsMessageInit {
  id: number;
  qr?: boolean;
  opcode?: number;
  aa?: boolean;
  tc?: boolean;
  rd?: boolean;
  ra?: boolean;
  ad?: boolean;
  cd?: boolean;
  /** Up to 12 bits; the upper 8 need `edns`. */
  rcode?: number;
  questions?: DnsQuestion[];
  answers?: DnsRecord[];
  authorities?: DnsRecord[];
  additionals?: DnsRecord[];
  edns?: Partial<DnsEdns>;
}

// ---------------------------------------------------------------------------------------------
// Names

function formatLabel(buf: Uint8Array, start: number, len: number): string {
  let s = "";
  for (let i = start; i < start + len; i++) {
    const b = buf[i]!;
    if (b === 0x2e || b === 0x5c) s += "\\" + String.fromCharCode(b);
    else if (b > 0x20 && b < 0x7f) s += String.fromCharCode(b);
    else s += "\\" + b.toString().padStart(3, "0");
  }
  return s;
}

/**
 * Splits a presentation-form name into label bytes (RFC 1035 5.1 escapes `\X` and `\DDD`).
 * A single final dot is allowed; `""` and `"."` are the root. Returns the problem as text.
 */
function nameToLabels(text: string): Uint8Array[] | { problem: string; range: boolean } {
  if (text === "" || text === ".") return [];
  const labels: Uint8Array[] = [];
  let cur: number[] = [];
  let wire = 1;
  const endLabel = (): string | undefined => {
    if (cur.length === 0) return "it has an empty label";
    if (cur.length > DNS_MAX_LABEL_LEN) return `a label is longer than ${DNS_MAX_LABEL_LEN} bytes`;
    labels.push(Uint8Array.from(cur));
    wire += cur.length + 1;
    cur = [];
    return undefined;
  };
  let endsWithDot = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    endsWithDot = c === 0x2e;
    if (c === 0x2e) {
      const p = endLabel();
      if (p) return { problem: p, range: p.startsWith("a label") };
      continue;
    }
    if (c === 0x5c) {
      const d = text.slice(i + 1, i + 4);
      if (/^[0-9]{3}$/.test(d)) {
        const v = Number(d);
        if (v > 255) return { problem: `the escape \\${d} is over 255`, range: false };
        cur.push(v);
        i += 3;
      } else if (i + 1 < text.length && text.charCodeAt(i + 1) < 0x80) {
        cur.push(text.charCodeAt(i + 1));
        i += 1;
      } else {
        return { problem: "it ends with a lone backslash", range: false };
      }
      continue;
    }
    if (c >= 0x80) return { problem: "it is not ASCII (IDNA is not supported)", range: false };
    cur.push(c);
  }
  // Only the final dot may leave an empty label behind it.
  if (!endsWithDot) {
    const p = endLabel();
    if (p) return { problem: p, range: p.startsWith("a label") };
  }
  if (wire > DNS_MAX_NAME_WIRE_LEN) {
    return { problem: `it is longer than ${DNS_MAX_NAME_WIRE_LEN} bytes on the wire`, range: true };
  }
  return labels;
}

/**
 * Why `name` can not be encoded (an empty label, a label over 63 bytes, over 255 bytes in all, a
 * bad escape, non-ASCII text), or undefined when it can.
 */
export function checkName(name: string): string | undefined {
  const r = nameToLabels(name);
  return Array.isArray(r) ? undefined : r.problem;
}

/**
 * True when `name` ends with a dot that is not escaped (`a\\.` is a label ending in a dot): an
 * absolute name, which a resolver does not extend with search domains.
 */
export function isAbsoluteName(name: string): boolean {
  if (!name.endsWith(".")) return false;
  let slashes = 0;
  for (let i = name.length - 2; i >= 0 && name[i] === "\\"; i--) slashes++;
  return slashes % 2 === 0;
}

/**
 * The name as a comparison key: ASCII letters lowered (RFC 4343), the final dot removed.
 * @example
 * ```ts
 * import { canonicalName } from "./dns.ts";
 * if (canonicalName("Svc.WG.test.") !== "svc.wg.test") throw new Error();
 * ```
 */
export function canonicalName(name: string): string {
  if (name.length > 1 && isAbsoluteName(name)) name = name.slice(0, -1);
  return name === "" ? "." : name.replace(/[A-Z]+/g, (s) => s.toLowerCase());
}

/** True when two names are the same name (RFC 4343: ASCII case does not matter). */
export function nameEquals(a: string, b: string): boolean {
  return canonicalName(a) === canonicalName(b);
}

// ---------------------------------------------------------------------------------------------
// Decoding

const u16 = (b: Uint8Array, o: number): number => (b[o]! << 8) | b[o + 1]!;
const u32 = (b: Uint8Array, o: number): number =>
  ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;

/**
 * Reads the name at `offset`. Returns it and the offset just after its bytes in place (after the
 * first pointer, or after the root label).
 */
function readName(buf: Uint8Array, offset: number): [string, number] | DnsParseError {
  let pos = offset;
  let next = -1;
  // Every pointer must land before the start of the stretch of labels it ends; the stretches
  // move strictly backwards, so the walk ends (RFC 1035 4.1.4 pointers go to a "prior" name).
  let floor = offset;
  let hops = 0;
  let wire = 1;
  let name = "";
  for (;;) {
    if (pos >= buf.length) return "truncated";
    const len = buf[pos]!;
    if (len === 0) {
      if (next < 0) next = pos + 1;
      break;
    }
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      if (pos + 1 >= buf.length) return "truncated";
      const target = ((len & 0x3f) << 8) | buf[pos + 1]!;
      if (target >= floor || target < DNS_HEADER_LEN || ++hops > DNS_MAX_POINTER_HOPS) {
        return "bad-pointer";
      }
      if (next < 0) next = pos + 2;
      pos = floor = target;
      continue;
    }
    // 0x40 and 0x80: extended label types, none of which is in use (RFC 6891 5).
    if (kind !== 0) return "malformed";
    if (pos + 1 + len > buf.length) return "truncated";
    wire += len + 1;
    if (wire > DNS_MAX_NAME_WIRE_LEN) return "name-too-long";
    name += (name === "" ? "" : ".") + formatLabel(buf, pos + 1, len);
    pos += 1 + len;
  }
  return [name === "" ? "." : name, next];
}

type Section = DnsRecord[];

/** Reads one record; OPT records are returned raw, the caller interprets them. */
function readRecord(buf: Uint8Array, offset: number): [DnsRecord, number] | DnsParseError {
  const n = readName(buf, offset);
  if (typeof n === "string") return n;
  const [name, at] = n;
  if (at + RR_FIXED_LEN > buf.length) return "truncated";
  const type = u16(buf, at);
  const cls = u16(buf, at + 2);
  let ttl = u32(buf, at + 4);
  // RFC 2181 8: "treated as if the entire value received was zero". Not for OPT, whose TTL
  // field holds flags (RFC 6891 6.1.3).
  if (ttl >= 0x8000_0000 && type !== DnsType.OPT) ttl = 0;
  const rdlen = u16(buf, at + 8);
  const start = at + RR_FIXED_LEN;
  const end = start + rdlen;
  if (end > buf.length) return "truncated";
  const base = { name, type, class: cls, ttl };
  if (cls === DnsClass.IN && (type === DnsType.A || type === DnsType.AAAA)) {
    if (rdlen !== (type === DnsType.A ? 4 : 16)) return "malformed";
    return [{ ...base, kind: "address", address: buf.slice(start, end) }, end];
  }
  if (type === DnsType.CNAME || type === DnsType.NS || type === DnsType.PTR) {
    const t = readName(buf, start);
    if (typeof t === "string") return t === "truncated" ? "malformed" : t;
    // The name must fill RDATA exactly: not run past it, not leave bytes over.
    if (t[1] !== end) return "malformed";
    return [{ ...base, kind: "name", target: t[0] }, end];
  }
  return [{ ...base, kind: "raw", rdata: buf.slice(start, end) }, end];
}

function readEdns(rec: DnsRecord): { edns: DnsEdns; rcodeHigh: number } | DnsParseError {
  if (rec.kind !== "raw" || rec.name !== ".") return "malformed";
  const options: DnsEdnsOption[] = [];
  const d = rec.rdata;
  for (let i = 0; i < d.length;) {
    if (i + 4 > d.length) return "malformed";
    const len = u16(d, i + 2);
    if (i + 4 + len > d.length) return "malformed";
    options.push({ code: u16(d, i), data: d.slice(i + 4, i + 4 + len) });
    i += 4 + len;
  }
  // The TTL field is EXTENDED-RCODE(8) VERSION(8) DO(1) Z(15).
  return {
    edns: {
      udpPayloadSize: rec.class,
      version: (rec.ttl >>> 16) & 0xff,
      dnssecOk: (rec.ttl & 0x8000) !== 0,
      options,
    },
    rcodeHigh: rec.ttl >>> 24,
  };
}

/**
 * Decodes a whole message. Bytes after the last record are ignored.
 * @example
 * ```ts
 * import { decodeMessage, DnsType, encodeQuery } from "./dns.ts";
 *
 * const { message } = encodeQuery("svc.wg.test", DnsType.AAAA);
 * const m = decodeMessage(message);
 * if (typeof m === "string") throw new Error(m);
 * if (m.questions[0]?.name !== "svc.wg.test" || !m.rd) throw new Error("round trip");
 * ```
 */
export function decodeMessage(buf: Uint8Array): DnsMessage | DnsParseError {
  if (buf.length < DNS_HEADER_LEN) return "truncated";
  const flags = u16(buf, DnsField.FLAGS);
  const counts = [
    u16(buf, DnsField.QDCOUNT),
    u16(buf, DnsField.ANCOUNT),
    u16(buf, DnsField.NSCOUNT),
    u16(buf, DnsField.ARCOUNT),
  ] as const;
  let pos = DNS_HEADER_LEN;
  const questions: DnsQuestion[] = [];
  for (let i = 0; i < counts[0]; i++) {
    const n = readName(buf, pos);
    if (typeof n === "string") return n;
    const at = n[1];
    if (at + QUESTION_FIXED_LEN > buf.length) return "truncated";
    questions.push({ name: n[0], type: u16(buf, at), class: u16(buf, at + 2) });
    pos = at + QUESTION_FIXED_LEN;
  }
  const sections: [Section, Section, Section] = [[], [], []];
  let edns: DnsEdns | undefined;
  let rcode = flags & Flag.RCODE_MASK;
  for (let s = 0; s < 3; s++) {
    const count = counts[s + 1]!;
    const into = sections[s]!;
    for (let i = 0; i < count; i++) {
      const r = readRecord(buf, pos);
      if (typeof r === "string") return r;
      pos = r[1];
      const rec = r[0];
      if (rec.type === DnsType.OPT) {
        // RFC 6891 6.1.1: one OPT at most, and only in the additional section.
        if (s !== 2 || edns) return "malformed";
        const e = readEdns(rec);
        if (typeof e === "string") return e;
        edns = e.edns;
        rcode |= e.rcodeHigh << 4;
        continue;
      }
      into.push(rec);
    }
  }
  const m: DnsMessage = {
    id: u16(buf, DnsField.ID),
    qr: (flags & Flag.QR) !== 0,
    opcode: (flags >> Flag.OPCODE_SHIFT) & Flag.OPCODE_MASK,
    aa: (flags & Flag.AA) !== 0,
    tc: (flags & Flag.TC) !== 0,
    rd: (flags & Flag.RD) !== 0,
    ra: (flags & Flag.RA) !== 0,
    ad: (flags & Flag.AD) !== 0,
    cd: (flags & Flag.CD) !== 0,
    rcode,
    questions,
    answers: sections[0],
    authorities: sections[1],
    additionals: sections[2],
  };
  if (edns) m.edns = edns;
  return m;
}

// ---------------------------------------------------------------------------------------------
// Encoding

/** A growable byte buffer with the name-compression table of one message. */
class Writer {
  #buf = new Uint8Array(512);
  length = 0;
  readonly #compress: boolean;
  /** Lower-cased suffix in wire form → offset of its first label. */
  readonly #suffixes = new Map<string, number>();

  constructor(compress: boolean) {
    this.#compress = compress;
  }

  #reserve(n: number): void {
    if (this.length + n <= this.#buf.length) return;
    const next = new Uint8Array(Math.max(this.#buf.length * 2, this.length + n));
    next.set(this.#buf.subarray(0, this.length));
    this.#buf = next;
  }
  u8(v: number): void {
    this.#reserve(1);
    this.#buf[this.length++] = v;
  }
  u16(v: number): void {
    this.#reserve(2);
    this.#buf[this.length++] = v >> 8;
    this.#buf[this.length++] = v;
  }
  u32(v: number): void {
    this.u16(v >>> 16);
    this.u16(v & 0xffff);
  }
  bytes(b: Uint8Array): void {
    this.#reserve(b.length);
    this.#buf.set(b, this.length);
    this.length += b.length;
  }
  setU16(at: number, v: number): void {
    this.#buf[at] = v >> 8;
    this.#buf[at + 1] = v;
  }
  /** Writes a name; with compression, its longest already-written suffix becomes a pointer. */
  name(text: string, compressible: boolean): void {
    const labels = nameToLabels(text);
    if (!Array.isArray(labels)) {
      const msg = `Cannot encode DNS name "${text}": ${labels.problem}`;
      throw labels.range ? new RangeError(msg) : new SyntaxError(msg);
    }
    // Length-prefixed, so that labels containing any byte can not run together.
    const keys = labels.map((l) =>
      String.fromCharCode(l.length, ...l.map((b) => (b >= 0x41 && b <= 0x5a ? b + 0x20 : b)))
    );
    for (let i = 0; i < labels.length; i++) {
      const key = keys.slice(i).join("");
      const at = this.#compress && compressible ? this.#suffixes.get(key) : undefined;
      if (at !== undefined) {
        this.u16(0xc000 | at);
        return;
      }
      // Pointers have 14 bits of offset (RFC 1035 4.1.4).
      if (this.length < 0x4000 && !this.#suffixes.has(key)) this.#suffixes.set(key, this.length);
      this.u8(labels[i]!.length);
      this.bytes(labels[i]!);
    }
    this.u8(0);
  }
  finish(): Uint8Array {
    return this.#buf.slice(0, this.length);
  }
}

function writeRecord(w: Writer, r: DnsRecord): void {
  w.name(r.name, true);
  w.u16(r.type);
  w.u16(r.class);
  w.u32(r.ttl >>> 0);
  const lenAt = w.length;
  w.u16(0);
  const start = w.length;
  switch (r.kind) {
    case "address":
      w.bytes(r.address);
      break;
    case "name":
      // RFC 3597 4: compression inside RDATA only for the types of RFC 1035.
      w.name(r.target, true);
      break;
    case "raw":
      w.bytes(r.rdata);
      break;
  }
  const rdlen = w.length - start;
  if (rdlen > 0xffff) throw new RangeError(`Cannot encode ${rdlen} bytes of RDATA`);
  w.setU16(lenAt, rdlen);
}

function writeOpt(w: Writer, e: Partial<DnsEdns>, rcodeHigh: number): void {
  w.u8(0); // root name
  w.u16(DnsType.OPT);
  w.u16(e.udpPayloadSize ?? DNS_DEFAULT_EDNS_PAYLOAD);
  w.u8(rcodeHigh);
  w.u8(e.version ?? 0);
  w.u16(e.dnssecOk ? 0x8000 : 0);
  const lenAt = w.length;
  w.u16(0);
  const start = w.length;
  for (const o of e.options ?? []) {
    w.u16(o.code);
    w.u16(o.data.length);
    w.bytes(o.data);
  }
  w.setU16(lenAt, w.length - start);
}

function checkCount(n: number, what: string): number {
  if (n > 0xffff) throw new RangeError(`Cannot encode ${n} ${what}: at most 65535`);
  return n;
}

/**
 * Encodes a message; names are compressed unless `compress` is false. The upper 8 bits of
 * `rcode` go into the OPT record, so an rcode above 15 needs `edns`.
 * @throws {SyntaxError} for a name with an empty label or a bad escape.
 * @throws {RangeError} for a label over 63 bytes, a name over 255, an rcode that does not fit.
 */
export function encodeMessage(m: DnsMessageInit, options: { compress?: boolean } = {}): Uint8Array {
  const rcode = m.rcode ?? 0;
  if (rcode < 0 || rcode > 0xfff || (rcode > 0xf && !m.edns)) {
    throw new RangeError(`Cannot encode rcode ${rcode}${m.edns ? "" : " without EDNS"}`);
  }
  const w = new Writer(options.compress ?? true);
  w.u16(m.id & 0xffff);
  let flags = ((m.opcode ?? 0) & Flag.OPCODE_MASK) << Flag.OPCODE_SHIFT;
  if (m.qr) flags |= Flag.QR;
  if (m.aa) flags |= Flag.AA;
  if (m.tc) flags |= Flag.TC;
  if (m.rd) flags |= Flag.RD;
  if (m.ra) flags |= Flag.RA;
  if (m.ad) flags |= Flag.AD;
  if (m.cd) flags |= Flag.CD;
  w.u16(flags | (rcode & Flag.RCODE_MASK));
  const questions = m.questions ?? [];
  const answers = m.answers ?? [];
  const authorities = m.authorities ?? [];
  const additionals = m.additionals ?? [];
  w.u16(checkCount(questions.length, "questions"));
  w.u16(checkCount(answers.length, "answers"));
  w.u16(checkCount(authorities.length, "authority records"));
  w.u16(checkCount(additionals.length + (m.edns ? 1 : 0), "additional records"));
  for (const q of questions) {
    w.name(q.name, true);
    w.u16(q.type);
    w.u16(q.class);
  }
  for (const r of answers) writeRecord(w, r);
  for (const r of authorities) writeRecord(w, r);
  for (const r of additionals) writeRecord(w, r);
  if (m.edns) writeOpt(w, m.edns, rcode >> 4);
  return w.finish();
}

/** Options of {@link encodeQuery}. */
export interface DnsQueryOptions {
  /** Default: 16 random bits from the system CSPRNG (RFC 5452 9.2). */
  id?: number;
  /** RD, default true: a stub asks the server to recurse. */
  recursionDesired?: boolean;
  /** Add an OPT record (default payload 1232); false or absent sends none. */
  edns?: Partial<DnsEdns> | false;
  /** Default IN. */
  class?: number;
}

/** A random 16-bit query ID from the system CSPRNG. */
export function randomQueryId(): number {
  return crypto.getRandomValues(new Uint16Array(1))[0]!;
}

/**
 * A standard query for one name and type, as a stub resolver sends it.
 * @throws {SyntaxError} / {RangeError} for a name that can not be encoded (see {@link checkName}).
 * @example
 * ```ts
 * import { DnsType, encodeQuery } from "./dns.ts";
 *
 * const { id, message } = encodeQuery("svc.wg.test", DnsType.A, { edns: {} });
 * if (message[0] !== id >> 8 || message[1] !== (id & 0xff)) throw new Error("id first");
 * ```
 */
export function encodeQuery(
  name: string,
  type: number,
  options: DnsQueryOptions = {},
): { id: number; message: Uint8Array } {
  const id = options.id ?? randomQueryId();
  const message = encodeMessage({
    id,
    rd: options.recursionDesired ?? true,
    questions: [{ name, type, class: options.class ?? DnsClass.IN }],
    edns: options.edns === false ? undefined : options.edns,
  });
  return { id, message };
}
