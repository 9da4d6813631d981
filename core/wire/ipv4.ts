/**
 * The IPv4 header (RFC 791 3.1) as a checked view over bytes, and its parsed representation.
 *
 * ```text
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |Version|  IHL  |    DSCP/ECN   |          Total Length         |
 * |         Identification        |Flags|      Fragment Offset    |
 * |  Time to Live |    Protocol   |         Header Checksum       |
 * |                       Source Address                          |
 * |                    Destination Address                        |
 * |                    Options (IHL > 5)                          |
 * ```
 *
 * @module
 */
import type { IpBytes } from "./addr.ts";
import { internetChecksum } from "./checksum.ts";
import type { WireError } from "./ip.ts";

/** Byte offsets of the IPv4 header fields. */
export const Ipv4Field = {
  VER_IHL: 0,
  DSCP_ECN: 1,
  LENGTH: 2,
  IDENT: 4,
  FLAGS_FRAG: 6,
  TTL: 8,
  PROTOCOL: 9,
  CHECKSUM: 10,
  SRC: 12,
  DST: 16,
  /** First byte after a header without options. */
  END: 20,
} as const;

/** Bits of the 16-bit flags/fragment-offset word (RFC 791 3.1). */
export const Ipv4Flags = {
  RESERVED: 0x8000,
  DONT_FRAGMENT: 0x4000,
  MORE_FRAGMENTS: 0x2000,
  OFFSET_MASK: 0x1fff,
} as const;

/** Length of a header without options. */
export const IPV4_HEADER_LEN = 20;
/** Largest header: IHL is 4 bits of 32-bit words. */
export const IPV4_MAX_HEADER_LEN = 60;
/** RFC 791: every host must handle datagrams of 68 octets without further fragmentation. */
export const IPV4_MIN_MTU = 68;
/** RFC 791: Total Length is 16 bits. */
export const IPV4_MAX_PACKET = 65535;

/**
 * A view over an IPv4 packet. Build it with {@link Ipv4Packet.check} for untrusted bytes; after
 * that no getter reads outside the buffer. The unchecked constructor is for buffers we are
 * filling ourselves.
 */
export class Ipv4Packet {
  constructor(readonly buffer: Uint8Array) {}

  /**
   * Checks that `buffer` holds a whole IPv4 header and the Total Length it declares (RFC 1122
   * 3.2.1.1-3.2.1.2 minus the checksum, which {@link verifyChecksum} checks). Bytes after Total
   * Length (link padding) are allowed; {@link payload} ends at Total Length.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * const bytes = Uint8Array.from([
   *   0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 17, 0x26, 0xd7, 10, 0, 0, 1, 10, 0, 0, 2,
   * ]);
   * const p = Ipv4Packet.check(bytes);
   * assert.ok(p instanceof Ipv4Packet && p.verifyChecksum() && p.protocol === 17);
   * assert.equal(Ipv4Packet.check(bytes.subarray(0, 19)), "truncated");
   * ```
   */
  static check(buffer: Uint8Array): Ipv4Packet | WireError {
    if (buffer.length < IPV4_HEADER_LEN) return "truncated";
    const p = new Ipv4Packet(buffer);
    if (p.version !== 4) return "malformed";
    const hl = p.headerLen;
    if (hl < IPV4_HEADER_LEN) return "malformed";
    if (buffer.length < hl) return "truncated";
    const total = p.totalLen;
    if (total < hl) return "malformed";
    if (buffer.length < total) return "truncated";
    return p;
  }

  get version(): number {
    return this.buffer[Ipv4Field.VER_IHL]! >> 4;
  }
  /** Header length in bytes (IHL × 4). */
  get headerLen(): number {
    return (this.buffer[Ipv4Field.VER_IHL]! & 0x0f) * 4;
  }
  get dscpEcn(): number {
    return this.buffer[Ipv4Field.DSCP_ECN]!;
  }
  set dscpEcn(v: number) {
    this.buffer[Ipv4Field.DSCP_ECN] = v;
  }
  get totalLen(): number {
    return (this.buffer[Ipv4Field.LENGTH]! << 8) | this.buffer[Ipv4Field.LENGTH + 1]!;
  }
  set totalLen(v: number) {
    this.buffer[Ipv4Field.LENGTH] = v >> 8;
    this.buffer[Ipv4Field.LENGTH + 1] = v;
  }
  get ident(): number {
    return (this.buffer[Ipv4Field.IDENT]! << 8) | this.buffer[Ipv4Field.IDENT + 1]!;
  }
  set ident(v: number) {
    this.buffer[Ipv4Field.IDENT] = v >> 8;
    this.buffer[Ipv4Field.IDENT + 1] = v;
  }
  /** The whole flags/fragment-offset word. */
  get flagsFrag(): number {
    return (this.buffer[Ipv4Field.FLAGS_FRAG]! << 8) | this.buffer[Ipv4Field.FLAGS_FRAG + 1]!;
  }
  set flagsFrag(v: number) {
    this.buffer[Ipv4Field.FLAGS_FRAG] = v >> 8;
    this.buffer[Ipv4Field.FLAGS_FRAG + 1] = v;
  }
  get dontFragment(): boolean {
    return (this.flagsFrag & Ipv4Flags.DONT_FRAGMENT) !== 0;
  }
  get moreFragments(): boolean {
    return (this.flagsFrag & Ipv4Flags.MORE_FRAGMENTS) !== 0;
  }
  /** Fragment offset in bytes (the field counts 8-octet units). */
  get fragmentOffset(): number {
    return (this.flagsFrag & Ipv4Flags.OFFSET_MASK) * 8;
  }
  /** True for any piece of a fragmented datagram (MF set or a non-zero offset). */
  get isFragment(): boolean {
    return (this.flagsFrag & (Ipv4Flags.MORE_FRAGMENTS | Ipv4Flags.OFFSET_MASK)) !== 0;
  }
  get ttl(): number {
    return this.buffer[Ipv4Field.TTL]!;
  }
  set ttl(v: number) {
    this.buffer[Ipv4Field.TTL] = v;
  }
  get protocol(): number {
    return this.buffer[Ipv4Field.PROTOCOL]!;
  }
  set protocol(v: number) {
    this.buffer[Ipv4Field.PROTOCOL] = v;
  }
  get checksum(): number {
    return (this.buffer[Ipv4Field.CHECKSUM]! << 8) | this.buffer[Ipv4Field.CHECKSUM + 1]!;
  }
  set checksum(v: number) {
    this.buffer[Ipv4Field.CHECKSUM] = v >> 8;
    this.buffer[Ipv4Field.CHECKSUM + 1] = v;
  }
  /** The source address (a view into the packet). */
  get src(): IpBytes {
    return this.buffer.subarray(Ipv4Field.SRC, Ipv4Field.SRC + 4);
  }
  set src(a: IpBytes) {
    this.buffer.set(a, Ipv4Field.SRC);
  }
  /** The destination address (a view into the packet). */
  get dst(): IpBytes {
    return this.buffer.subarray(Ipv4Field.DST, Ipv4Field.DST + 4);
  }
  set dst(a: IpBytes) {
    this.buffer.set(a, Ipv4Field.DST);
  }
  /** The header including options. */
  get header(): Uint8Array {
    return this.buffer.subarray(0, this.headerLen);
  }
  /** The bytes between the header and Total Length. */
  get payload(): Uint8Array {
    return this.buffer.subarray(this.headerLen, this.totalLen);
  }
  /** The packet up to Total Length (without link padding). */
  get packet(): Uint8Array {
    return this.buffer.subarray(0, this.totalLen);
  }

  /** RFC 1071: the header including its checksum field sums to 0xffff. */
  verifyChecksum(): boolean {
    return internetChecksum(this.buffer, 0, this.headerLen) === 0;
  }
  /** Writes the header checksum over the current header bytes. */
  fillChecksum(): void {
    this.checksum = 0;
    this.checksum = internetChecksum(this.buffer, 0, this.headerLen);
  }
}

/** The fields of an IPv4 header we emit (no options). */
export interface Ipv4Repr {
  src: IpBytes;
  dst: IpBytes;
  protocol: number;
  /** Bytes after the header. */
  payloadLen: number;
  ttl: number;
  ident: number;
  dontFragment: boolean;
  moreFragments?: boolean;
  /** In bytes; must be a multiple of 8. */
  fragmentOffset?: number;
  dscpEcn?: number;
}

/** Reads the header fields of a checked packet (options are not represented). */
export function parseIpv4(p: Ipv4Packet): Ipv4Repr {
  return {
    src: p.src,
    dst: p.dst,
    protocol: p.protocol,
    payloadLen: p.totalLen - p.headerLen,
    ttl: p.ttl,
    ident: p.ident,
    dontFragment: p.dontFragment,
    moreFragments: p.moreFragments,
    fragmentOffset: p.fragmentOffset,
    dscpEcn: p.dscpEcn,
  };
}

/** Bytes needed for the header and payload of `repr`. */
export function ipv4BufferLen(repr: Ipv4Repr): number {
  return IPV4_HEADER_LEN + repr.payloadLen;
}

/**
 * Writes a 20-byte header for `repr` at the start of `buf` (which must hold at least the header)
 * and fills its checksum. The payload is the caller's to write.
 */
export function emitIpv4(repr: Ipv4Repr, buf: Uint8Array): void {
  const p = new Ipv4Packet(buf);
  buf[Ipv4Field.VER_IHL] = 0x45;
  p.dscpEcn = repr.dscpEcn ?? 0;
  p.totalLen = IPV4_HEADER_LEN + repr.payloadLen;
  p.ident = repr.ident;
  p.flagsFrag = (repr.dontFragment ? Ipv4Flags.DONT_FRAGMENT : 0) |
    (repr.moreFragments ? Ipv4Flags.MORE_FRAGMENTS : 0) |
    (((repr.fragmentOffset ?? 0) >> 3) & Ipv4Flags.OFFSET_MASK);
  p.ttl = repr.ttl;
  p.protocol = repr.protocol;
  p.src = repr.src;
  p.dst = repr.dst;
  p.fillChecksum();
}
