/**
 * The UDP header (RFC 768) as a checked view, with the pseudo-header checksum of RFC 768 (IPv4)
 * and RFC 8200 8.1 (IPv6).
 *
 * ```text
 * +--------+--------+--------+--------+
 * |   Source Port   |    Dest Port    |
 * |     Length      |    Checksum     |
 * +--------+--------+--------+--------+
 * ```
 *
 * @module
 */
import type { IpBytes } from "./addr.ts";
import { finish, pseudoHeaderSum, sumWords } from "./checksum.ts";
import { IpProtocol, type WireError } from "./ip.ts";

export const UdpField = {
  SRC_PORT: 0,
  DST_PORT: 2,
  LENGTH: 4,
  CHECKSUM: 6,
  PAYLOAD: 8,
} as const;

export const UDP_HEADER_LEN = 8;
/** Length is 16 bits and counts the header. */
export const UDP_MAX_PAYLOAD = 65535 - UDP_HEADER_LEN;

/** A view over a UDP datagram; see {@link UdpPacket.check}. */
export class UdpPacket {
  constructor(readonly buffer: Uint8Array) {}

  /**
   * Checks the header and that Length is at least 8 and fits the buffer. The view is trimmed to
   * Length (RFC 768: bytes after it are not part of the datagram).
   */
  static check(buffer: Uint8Array): UdpPacket | WireError {
    if (buffer.length < UDP_HEADER_LEN) return "truncated";
    const len = (buffer[UdpField.LENGTH]! << 8) | buffer[UdpField.LENGTH + 1]!;
    if (len < UDP_HEADER_LEN) return "malformed";
    if (len > buffer.length) return "truncated";
    return new UdpPacket(buffer.subarray(0, len));
  }

  get srcPort(): number {
    return (this.buffer[UdpField.SRC_PORT]! << 8) | this.buffer[UdpField.SRC_PORT + 1]!;
  }
  set srcPort(v: number) {
    this.buffer[UdpField.SRC_PORT] = v >> 8;
    this.buffer[UdpField.SRC_PORT + 1] = v;
  }
  get dstPort(): number {
    return (this.buffer[UdpField.DST_PORT]! << 8) | this.buffer[UdpField.DST_PORT + 1]!;
  }
  set dstPort(v: number) {
    this.buffer[UdpField.DST_PORT] = v >> 8;
    this.buffer[UdpField.DST_PORT + 1] = v;
  }
  get length(): number {
    return (this.buffer[UdpField.LENGTH]! << 8) | this.buffer[UdpField.LENGTH + 1]!;
  }
  set length(v: number) {
    this.buffer[UdpField.LENGTH] = v >> 8;
    this.buffer[UdpField.LENGTH + 1] = v;
  }
  get checksum(): number {
    return (this.buffer[UdpField.CHECKSUM]! << 8) | this.buffer[UdpField.CHECKSUM + 1]!;
  }
  set checksum(v: number) {
    this.buffer[UdpField.CHECKSUM] = v >> 8;
    this.buffer[UdpField.CHECKSUM + 1] = v;
  }
  get payload(): Uint8Array {
    return this.buffer.subarray(UDP_HEADER_LEN, this.length);
  }

  /**
   * True when the checksum over pseudo-header, header and data is correct. A zero checksum
   * field ("not computed", RFC 768) is not special here: the caller decides, because IPv4 allows
   * it and IPv6 does not (RFC 8200 8.1).
   */
  verifyChecksum(src: IpBytes, dst: IpBytes): boolean {
    const len = this.length;
    const sum = sumWords(this.buffer, 0, len, pseudoHeaderSum(src, dst, IpProtocol.UDP, len));
    return finish(sum) === 0;
  }

  /** Computes and writes the checksum; a computed zero is sent as 0xffff (RFC 768). */
  fillChecksum(src: IpBytes, dst: IpBytes): void {
    this.checksum = 0;
    const len = this.length;
    const c = finish(sumWords(this.buffer, 0, len, pseudoHeaderSum(src, dst, IpProtocol.UDP, len)));
    this.checksum = c === 0 ? 0xffff : c;
  }
}

export interface UdpRepr {
  srcPort: number;
  dstPort: number;
  payloadLen: number;
}

export function parseUdp(p: UdpPacket): UdpRepr {
  return { srcPort: p.srcPort, dstPort: p.dstPort, payloadLen: p.length - UDP_HEADER_LEN };
}

export function udpBufferLen(repr: UdpRepr): number {
  return UDP_HEADER_LEN + repr.payloadLen;
}

/**
 * Writes the header for `repr` at the start of `buf` and, when `payload` is given, copies it
 * after the header; then fills the checksum. Pass no payload when it is already in place.
 */
export function emitUdp(
  repr: UdpRepr,
  buf: Uint8Array,
  src: IpBytes,
  dst: IpBytes,
  payload?: Uint8Array,
): void {
  const p = new UdpPacket(buf);
  p.srcPort = repr.srcPort;
  p.dstPort = repr.dstPort;
  p.length = UDP_HEADER_LEN + repr.payloadLen;
  if (payload) buf.set(payload, UDP_HEADER_LEN);
  p.fillChecksum(src, dst);
}
