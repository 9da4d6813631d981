/**
 * ICMP for IPv4 (RFC 792) and ICMPv6 (RFC 4443). Both share the layout below; they differ in type
 * numbers, in where an MTU sits, and in the checksum (ICMPv6 adds the IPv6 pseudo-header).
 *
 * ```text
 * +--------+--------+--------+--------+
 * |  Type  |  Code  |    Checksum     |
 * |  Identifier / unused / MTU / ptr  |
 * |   Sequence      |                 |
 * |  data: echo payload, or the quoted original packet  |
 * ```
 *
 * @module
 */
import type { IpBytes } from "./addr.ts";
import { finish, internetChecksum, pseudoHeaderSum, sumWords } from "./checksum.ts";
import { IpProtocol, type WireError } from "./ip.ts";

export const IcmpField = {
  TYPE: 0,
  CODE: 1,
  CHECKSUM: 2,
  /** Echo: identifier. */
  IDENT: 4,
  /** Echo: sequence number. */
  SEQ: 6,
  /** ICMPv4 Fragmentation Needed: next-hop MTU (RFC 1191 4), low 16 bits of the word. */
  V4_NEXT_HOP_MTU: 6,
  /** ICMPv6 Packet Too Big: 32-bit MTU; Parameter Problem: 32-bit pointer. */
  V6_MTU: 4,
  V6_POINTER: 4,
  /** ICMPv4 Parameter Problem: 8-bit pointer. */
  V4_POINTER: 4,
  DATA: 8,
} as const;

export const ICMP_HEADER_LEN = 8;

export const Icmpv4Type = {
  ECHO_REPLY: 0,
  DEST_UNREACHABLE: 3,
  SOURCE_QUENCH: 4,
  REDIRECT: 5,
  ECHO_REQUEST: 8,
  TIME_EXCEEDED: 11,
  PARAM_PROBLEM: 12,
} as const;

/** RFC 792, RFC 1122 3.2.2.1, RFC 1812 5.2.7.1. */
export const Icmpv4Unreachable = {
  NET: 0,
  HOST: 1,
  PROTOCOL: 2,
  PORT: 3,
  FRAG_NEEDED: 4,
  SOURCE_ROUTE_FAILED: 5,
  NET_UNKNOWN: 6,
  HOST_UNKNOWN: 7,
  HOST_ISOLATED: 8,
  NET_PROHIBITED: 9,
  HOST_PROHIBITED: 10,
  NET_TOS: 11,
  HOST_TOS: 12,
  COMM_PROHIBITED: 13,
  HOST_PRECEDENCE: 14,
  PRECEDENCE_CUTOFF: 15,
} as const;

export const IcmpTimeExceeded = { TTL: 0, REASSEMBLY: 1 } as const;

export const Icmpv6Type = {
  DEST_UNREACHABLE: 1,
  PACKET_TOO_BIG: 2,
  TIME_EXCEEDED: 3,
  PARAM_PROBLEM: 4,
  ECHO_REQUEST: 128,
  ECHO_REPLY: 129,
} as const;

/** RFC 4443 3.1. */
export const Icmpv6Unreachable = {
  NO_ROUTE: 0,
  PROHIBITED: 1,
  BEYOND_SCOPE: 2,
  ADDRESS: 3,
  PORT: 4,
  SOURCE_POLICY: 5,
  REJECT_ROUTE: 6,
} as const;

/** RFC 4443 3.4. */
export const Icmpv6ParamProblem = { HEADER_FIELD: 0, NEXT_HEADER: 1, OPTION: 2 } as const;

/** RFC 792: types 3, 4, 5, 11, 12 are errors (never answered with another error). */
export function isIcmpv4Error(type: number): boolean {
  return type === 3 || type === 4 || type === 5 || type === 11 || type === 12;
}

/** RFC 4443 2.1: types 0-127 are errors. */
export function isIcmpv6Error(type: number): boolean {
  return type < 128;
}

/** A view over an ICMP or ICMPv6 message; see {@link IcmpPacket.check}. */
export class IcmpPacket {
  constructor(readonly buffer: Uint8Array) {}

  /** Every ICMP message has the 8-byte header. */
  static check(buffer: Uint8Array): IcmpPacket | WireError {
    if (buffer.length < ICMP_HEADER_LEN) return "truncated";
    return new IcmpPacket(buffer);
  }

  get type(): number {
    return this.buffer[IcmpField.TYPE]!;
  }
  set type(v: number) {
    this.buffer[IcmpField.TYPE] = v;
  }
  get code(): number {
    return this.buffer[IcmpField.CODE]!;
  }
  set code(v: number) {
    this.buffer[IcmpField.CODE] = v;
  }
  get checksum(): number {
    return (this.buffer[IcmpField.CHECKSUM]! << 8) | this.buffer[IcmpField.CHECKSUM + 1]!;
  }
  set checksum(v: number) {
    this.buffer[IcmpField.CHECKSUM] = v >> 8;
    this.buffer[IcmpField.CHECKSUM + 1] = v;
  }
  get ident(): number {
    return (this.buffer[IcmpField.IDENT]! << 8) | this.buffer[IcmpField.IDENT + 1]!;
  }
  set ident(v: number) {
    this.buffer[IcmpField.IDENT] = v >> 8;
    this.buffer[IcmpField.IDENT + 1] = v;
  }
  get seq(): number {
    return (this.buffer[IcmpField.SEQ]! << 8) | this.buffer[IcmpField.SEQ + 1]!;
  }
  set seq(v: number) {
    this.buffer[IcmpField.SEQ] = v >> 8;
    this.buffer[IcmpField.SEQ + 1] = v;
  }
  /** The second 32-bit word (MTU, pointer, or unused), unsigned. */
  get rest(): number {
    const b = this.buffer;
    return ((b[4]! << 24) | (b[5]! << 16) | (b[6]! << 8) | b[7]!) >>> 0;
  }
  set rest(v: number) {
    const b = this.buffer;
    b[4] = v >>> 24;
    b[5] = v >>> 16;
    b[6] = v >>> 8;
    b[7] = v;
  }
  /** ICMPv4 Fragmentation Needed next-hop MTU (0 from routers older than RFC 1191). */
  get nextHopMtu(): number {
    return (this.buffer[IcmpField.V4_NEXT_HOP_MTU]! << 8) |
      this.buffer[IcmpField.V4_NEXT_HOP_MTU + 1]!;
  }
  /** Echo data, or the quoted original packet of an error. */
  get data(): Uint8Array {
    return this.buffer.subarray(ICMP_HEADER_LEN);
  }

  /** ICMPv4: the checksum covers the message only (RFC 792). */
  verifyChecksumV4(): boolean {
    return internetChecksum(this.buffer) === 0;
  }
  fillChecksumV4(): void {
    this.checksum = 0;
    this.checksum = internetChecksum(this.buffer);
  }
  /** ICMPv6: the checksum adds the IPv6 pseudo-header (RFC 4443 2.3). */
  verifyChecksumV6(src: IpBytes, dst: IpBytes): boolean {
    const len = this.buffer.length;
    return finish(
      sumWords(this.buffer, 0, len, pseudoHeaderSum(src, dst, IpProtocol.ICMPV6, len)),
    ) ===
      0;
  }
  fillChecksumV6(src: IpBytes, dst: IpBytes): void {
    this.checksum = 0;
    const len = this.buffer.length;
    this.checksum = finish(
      sumWords(this.buffer, 0, len, pseudoHeaderSum(src, dst, IpProtocol.ICMPV6, len)),
    );
  }
}

/**
 * The messages the stack understands, family-neutral. `data` of an error is the quoted packet.
 * `value` is the second header word: MTU for too-big/frag-needed, pointer for param-problem.
 */
export type IcmpRepr =
  | { kind: "echo-request" | "echo-reply"; ident: number; seq: number; data: Uint8Array }
  | {
    kind: "dest-unreachable" | "packet-too-big" | "time-exceeded" | "param-problem";
    code: number;
    value: number;
    data: Uint8Array;
  }
  | { kind: "other"; type: number; code: number; data: Uint8Array };

function kindToType(repr: IcmpRepr, v6: boolean): number {
  switch (repr.kind) {
    case "echo-request":
      return v6 ? Icmpv6Type.ECHO_REQUEST : Icmpv4Type.ECHO_REQUEST;
    case "echo-reply":
      return v6 ? Icmpv6Type.ECHO_REPLY : Icmpv4Type.ECHO_REPLY;
    case "dest-unreachable":
      return v6 ? Icmpv6Type.DEST_UNREACHABLE : Icmpv4Type.DEST_UNREACHABLE;
    case "packet-too-big":
      // ICMPv4 says "too big" as Destination Unreachable / Fragmentation Needed (RFC 1191).
      return v6 ? Icmpv6Type.PACKET_TOO_BIG : Icmpv4Type.DEST_UNREACHABLE;
    case "time-exceeded":
      return v6 ? Icmpv6Type.TIME_EXCEEDED : Icmpv4Type.TIME_EXCEEDED;
    case "param-problem":
      return v6 ? Icmpv6Type.PARAM_PROBLEM : Icmpv4Type.PARAM_PROBLEM;
    case "other":
      return repr.type;
  }
}

/** Reads a checked message of either family into an {@link IcmpRepr}. */
export function parseIcmp(p: IcmpPacket, v6: boolean): IcmpRepr {
  const type = p.type, code = p.code, data = p.data;
  if (v6) {
    switch (type) {
      case Icmpv6Type.ECHO_REQUEST:
        return { kind: "echo-request", ident: p.ident, seq: p.seq, data };
      case Icmpv6Type.ECHO_REPLY:
        return { kind: "echo-reply", ident: p.ident, seq: p.seq, data };
      case Icmpv6Type.DEST_UNREACHABLE:
        return { kind: "dest-unreachable", code, value: 0, data };
      case Icmpv6Type.PACKET_TOO_BIG:
        return { kind: "packet-too-big", code, value: p.rest, data };
      case Icmpv6Type.TIME_EXCEEDED:
        return { kind: "time-exceeded", code, value: 0, data };
      case Icmpv6Type.PARAM_PROBLEM:
        return { kind: "param-problem", code, value: p.rest, data };
    }
  } else {
    switch (type) {
      case Icmpv4Type.ECHO_REQUEST:
        return { kind: "echo-request", ident: p.ident, seq: p.seq, data };
      case Icmpv4Type.ECHO_REPLY:
        return { kind: "echo-reply", ident: p.ident, seq: p.seq, data };
      case Icmpv4Type.DEST_UNREACHABLE:
        if (code === Icmpv4Unreachable.FRAG_NEEDED) {
          return { kind: "packet-too-big", code, value: p.nextHopMtu, data };
        }
        return { kind: "dest-unreachable", code, value: 0, data };
      case Icmpv4Type.TIME_EXCEEDED:
        return { kind: "time-exceeded", code, value: 0, data };
      case Icmpv4Type.PARAM_PROBLEM:
        return { kind: "param-problem", code, value: p.buffer[IcmpField.V4_POINTER]!, data };
    }
  }
  return { kind: "other", type, code, data };
}

export function icmpBufferLen(repr: IcmpRepr): number {
  return ICMP_HEADER_LEN + repr.data.length;
}

/**
 * Writes `repr` into `buf` (exactly {@link icmpBufferLen} bytes) with its checksum. For ICMPv6,
 * pass the IPv6 source and destination for the pseudo-header; for ICMPv4 leave them out.
 * `data` may already sit at offset 8 of `buf` (then it is not copied).
 */
export function emitIcmp(repr: IcmpRepr, buf: Uint8Array, v6?: { src: IpBytes; dst: IpBytes }) {
  const p = new IcmpPacket(buf);
  p.type = kindToType(repr, v6 !== undefined);
  switch (repr.kind) {
    case "echo-request":
    case "echo-reply":
      p.code = 0;
      p.ident = repr.ident;
      p.seq = repr.seq;
      break;
    case "packet-too-big":
      p.code = v6 ? 0 : Icmpv4Unreachable.FRAG_NEEDED;
      p.rest = v6 ? repr.value : repr.value & 0xffff;
      break;
    case "param-problem":
      p.code = repr.code;
      // ICMPv4 carries an 8-bit pointer in the first byte of the word (RFC 792).
      p.rest = v6 ? repr.value : (repr.value & 0xff) << 24;
      break;
    case "dest-unreachable":
    case "time-exceeded":
    case "other":
      p.code = repr.code;
      p.rest = 0;
      break;
  }
  const data = repr.data;
  if (data.buffer !== buf.buffer || data.byteOffset !== buf.byteOffset + ICMP_HEADER_LEN) {
    buf.set(data, ICMP_HEADER_LEN);
  }
  if (v6) p.fillChecksumV6(v6.src, v6.dst);
  else p.fillChecksumV4();
}
