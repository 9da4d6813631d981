/**
 * The IPv6 header (RFC 8200 3) and the extension headers a host walks (RFC 8200 4): the generic
 * Hop-by-Hop / Destination Options / Routing layout, their TLV options, and the Fragment header.
 *
 * ```text
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |Version| Traffic Class |           Flow Label                  |
 * |         Payload Length        |  Next Header  |   Hop Limit   |
 * |                  Source Address (16 bytes)                    |
 * |               Destination Address (16 bytes)                  |
 * ```
 *
 * @module
 */
import type { IpBytes } from "./addr.ts";
import type { WireError } from "./ip.ts";

/** Byte offsets of the fixed IPv6 header. */
export const Ipv6Field = {
  VER_TC_FLOW: 0,
  PAYLOAD_LEN: 4,
  NEXT_HEADER: 6,
  HOP_LIMIT: 7,
  SRC: 8,
  DST: 24,
  END: 40,
} as const;

/** Byte offsets shared by Hop-by-Hop, Routing and Destination Options headers (RFC 8200 4.3-4.6). */
export const Ipv6ExtField = {
  NEXT_HEADER: 0,
  /** Length in 8-octet units, not counting the first 8 octets. */
  LENGTH: 1,
  /** Routing header: routing type and segments left (RFC 8200 4.4). */
  ROUTING_TYPE: 2,
  SEGMENTS_LEFT: 3,
  /** Options area of Hop-by-Hop / Destination Options. */
  OPTIONS: 2,
} as const;

/** Byte offsets of the Fragment header (RFC 8200 4.5). */
export const Ipv6FragField = {
  NEXT_HEADER: 0,
  RESERVED: 1,
  /** 13-bit offset in 8-octet units, 2 reserved bits, M flag. */
  OFFSET_FLAGS: 2,
  IDENT: 4,
  END: 8,
} as const;

export const IPV6_HEADER_LEN = 40;
export const IPV6_FRAG_HEADER_LEN = 8;
/** RFC 8200 5: every link carries packets of 1280 octets. */
export const IPV6_MIN_MTU = 1280;
/** Payload Length is 16 bits (jumbograms, RFC 2675, are not supported). */
export const IPV6_MAX_PAYLOAD = 65535;

/** A view over an IPv6 packet; see {@link Ipv6Packet.check}. */
export class Ipv6Packet {
  constructor(readonly buffer: Uint8Array) {}

  /**
   * Checks the version and that the buffer holds the fixed header and the Payload Length it
   * declares. Bytes beyond that are ignored.
   */
  static check(buffer: Uint8Array): Ipv6Packet | WireError {
    if (buffer.length < IPV6_HEADER_LEN) return "truncated";
    const p = new Ipv6Packet(buffer);
    if (p.version !== 6) return "malformed";
    if (buffer.length < IPV6_HEADER_LEN + p.payloadLen) return "truncated";
    return p;
  }

  get version(): number {
    return this.buffer[Ipv6Field.VER_TC_FLOW]! >> 4;
  }
  get trafficClass(): number {
    return ((this.buffer[0]! & 0x0f) << 4) | (this.buffer[1]! >> 4);
  }
  get flowLabel(): number {
    return ((this.buffer[1]! & 0x0f) << 16) | (this.buffer[2]! << 8) | this.buffer[3]!;
  }
  /** Writes version 6, the traffic class and the flow label together. */
  setVersionClassFlow(trafficClass: number, flowLabel: number): void {
    this.buffer[0] = 0x60 | ((trafficClass >> 4) & 0x0f);
    this.buffer[1] = ((trafficClass & 0x0f) << 4) | ((flowLabel >> 16) & 0x0f);
    this.buffer[2] = flowLabel >> 8;
    this.buffer[3] = flowLabel;
  }
  get payloadLen(): number {
    return (this.buffer[Ipv6Field.PAYLOAD_LEN]! << 8) | this.buffer[Ipv6Field.PAYLOAD_LEN + 1]!;
  }
  set payloadLen(v: number) {
    this.buffer[Ipv6Field.PAYLOAD_LEN] = v >> 8;
    this.buffer[Ipv6Field.PAYLOAD_LEN + 1] = v;
  }
  get nextHeader(): number {
    return this.buffer[Ipv6Field.NEXT_HEADER]!;
  }
  set nextHeader(v: number) {
    this.buffer[Ipv6Field.NEXT_HEADER] = v;
  }
  get hopLimit(): number {
    return this.buffer[Ipv6Field.HOP_LIMIT]!;
  }
  set hopLimit(v: number) {
    this.buffer[Ipv6Field.HOP_LIMIT] = v;
  }
  get src(): IpBytes {
    return this.buffer.subarray(Ipv6Field.SRC, Ipv6Field.SRC + 16);
  }
  set src(a: IpBytes) {
    this.buffer.set(a, Ipv6Field.SRC);
  }
  get dst(): IpBytes {
    return this.buffer.subarray(Ipv6Field.DST, Ipv6Field.DST + 16);
  }
  set dst(a: IpBytes) {
    this.buffer.set(a, Ipv6Field.DST);
  }
  /** Everything after the fixed header up to Payload Length (extension headers included). */
  get payload(): Uint8Array {
    return this.buffer.subarray(IPV6_HEADER_LEN, IPV6_HEADER_LEN + this.payloadLen);
  }
  /** The packet up to Payload Length. */
  get packet(): Uint8Array {
    return this.buffer.subarray(0, IPV6_HEADER_LEN + this.payloadLen);
  }
}

/** The fixed-header fields we emit. */
export interface Ipv6Repr {
  src: IpBytes;
  dst: IpBytes;
  nextHeader: number;
  /** Bytes after the fixed header. */
  payloadLen: number;
  hopLimit: number;
  trafficClass?: number;
  flowLabel?: number;
}

export function parseIpv6(p: Ipv6Packet): Ipv6Repr {
  return {
    src: p.src,
    dst: p.dst,
    nextHeader: p.nextHeader,
    payloadLen: p.payloadLen,
    hopLimit: p.hopLimit,
    trafficClass: p.trafficClass,
    flowLabel: p.flowLabel,
  };
}

export function ipv6BufferLen(repr: Ipv6Repr): number {
  return IPV6_HEADER_LEN + repr.payloadLen;
}

/** Writes the 40-byte fixed header for `repr` at the start of `buf`. */
export function emitIpv6(repr: Ipv6Repr, buf: Uint8Array): void {
  const p = new Ipv6Packet(buf);
  p.setVersionClassFlow(repr.trafficClass ?? 0, repr.flowLabel ?? 0);
  p.payloadLen = repr.payloadLen;
  p.nextHeader = repr.nextHeader;
  p.hopLimit = repr.hopLimit;
  p.src = repr.src;
  p.dst = repr.dst;
}

/**
 * A generic extension header (Hop-by-Hop, Routing, Destination Options): Next Header, a length in
 * 8-octet units after the first 8, and type-specific data.
 */
export class Ipv6ExtHeader {
  constructor(readonly buffer: Uint8Array) {}

  /** Checks the first two bytes and that the whole header fits; the view is trimmed to it. */
  static check(buffer: Uint8Array): Ipv6ExtHeader | WireError {
    if (buffer.length < 8) return "truncated";
    const len = (buffer[Ipv6ExtField.LENGTH]! + 1) * 8;
    if (buffer.length < len) return "truncated";
    return new Ipv6ExtHeader(buffer.subarray(0, len));
  }

  get nextHeader(): number {
    return this.buffer[Ipv6ExtField.NEXT_HEADER]!;
  }
  /** Length of the whole header in bytes. */
  get headerLen(): number {
    return (this.buffer[Ipv6ExtField.LENGTH]! + 1) * 8;
  }
  get routingType(): number {
    return this.buffer[Ipv6ExtField.ROUTING_TYPE]!;
  }
  get segmentsLeft(): number {
    return this.buffer[Ipv6ExtField.SEGMENTS_LEFT]!;
  }
  /** The TLV options area of a Hop-by-Hop or Destination Options header. */
  get options(): Uint8Array {
    return this.buffer.subarray(Ipv6ExtField.OPTIONS, this.headerLen);
  }
}

/** Option types with a meaning of their own (RFC 8200 4.2). */
export const Ipv6Option = { PAD1: 0, PADN: 1 } as const;

/**
 * What RFC 8200 4.2 says to do with an option we do not recognise, from its two high-order bits:
 * `skip` (00), `discard` (01), `discard-icmp` (10), `discard-icmp-unicast` (11).
 */
export type Ipv6OptionAction = "skip" | "discard" | "discard-icmp" | "discard-icmp-unicast";

export function optionAction(type: number): Ipv6OptionAction {
  switch (type >> 6) {
    case 0:
      return "skip";
    case 1:
      return "discard";
    case 2:
      return "discard-icmp";
    default:
      return "discard-icmp-unicast";
  }
}

/**
 * Walks TLV options, calling `visit(type, offsetInArea, data)` for each one other than Pad1/PadN.
 * Stops early and returns the callback's non-undefined result; returns "truncated" when an option
 * runs past the area, undefined when all options were visited.
 */
export function forEachOption<T>(
  area: Uint8Array,
  visit: (type: number, offset: number, data: Uint8Array) => T | undefined,
): T | "truncated" | undefined {
  let i = 0;
  while (i < area.length) {
    const type = area[i]!;
    if (type === Ipv6Option.PAD1) {
      i++;
      continue;
    }
    if (i + 2 > area.length) return "truncated";
    const len = area[i + 1]!;
    if (i + 2 + len > area.length) return "truncated";
    if (type !== Ipv6Option.PADN) {
      const r = visit(type, i, area.subarray(i + 2, i + 2 + len));
      if (r !== undefined) return r;
    }
    i += 2 + len;
  }
  return undefined;
}

/** A view over the 8-byte Fragment header. */
export class Ipv6FragmentHeader {
  constructor(readonly buffer: Uint8Array) {}

  static check(buffer: Uint8Array): Ipv6FragmentHeader | WireError {
    if (buffer.length < IPV6_FRAG_HEADER_LEN) return "truncated";
    return new Ipv6FragmentHeader(buffer);
  }

  get nextHeader(): number {
    return this.buffer[Ipv6FragField.NEXT_HEADER]!;
  }
  /** Offset of this fragment's data in bytes. */
  get fragmentOffset(): number {
    const w = (this.buffer[Ipv6FragField.OFFSET_FLAGS]! << 8) |
      this.buffer[Ipv6FragField.OFFSET_FLAGS + 1]!;
    return w & 0xfff8;
  }
  get moreFragments(): boolean {
    return (this.buffer[Ipv6FragField.OFFSET_FLAGS + 1]! & 1) !== 0;
  }
  get ident(): number {
    const b = this.buffer, o = Ipv6FragField.IDENT;
    return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
  }
}

export interface Ipv6FragmentRepr {
  nextHeader: number;
  /** In bytes; a multiple of 8. */
  fragmentOffset: number;
  moreFragments: boolean;
  ident: number;
}

/** Writes an 8-byte Fragment header at the start of `buf`. */
export function emitIpv6Fragment(repr: Ipv6FragmentRepr, buf: Uint8Array): void {
  buf[Ipv6FragField.NEXT_HEADER] = repr.nextHeader;
  buf[Ipv6FragField.RESERVED] = 0;
  const w = (repr.fragmentOffset & 0xfff8) | (repr.moreFragments ? 1 : 0);
  buf[Ipv6FragField.OFFSET_FLAGS] = w >> 8;
  buf[Ipv6FragField.OFFSET_FLAGS + 1] = w;
  const id = repr.ident >>> 0;
  buf[Ipv6FragField.IDENT] = id >>> 24;
  buf[Ipv6FragField.IDENT + 1] = id >>> 16;
  buf[Ipv6FragField.IDENT + 2] = id >>> 8;
  buf[Ipv6FragField.IDENT + 3] = id;
}
