/**
 * The seams inside the stack. The IP layer (`stack.ts`) owns addresses, demux, fragments and ICMP;
 * each transport (UDP, TCP) implements {@link Transport} and is called with the payload of a
 * packet already checked, reassembled and addressed to us. Everything here is pure: `now` is a
 * monotonic time in milliseconds passed in by the host, and nothing reads a clock or arms a timer.
 *
 * @module
 */
import type { IpBytes } from "../wire/addr.ts";

/** What an ICMP/ICMPv6 error means to the socket it refers to (RFC 1122 4.2.3.9, RFC 4443). */
export type IcmpErrorKind =
  | "net-unreachable"
  | "host-unreachable"
  | "port-unreachable"
  | "prohibited"
  | "too-big"
  | "time-exceeded";

/** The IP layer as a transport sees it: how to send, and the stack's view of the tunnel. */
export interface IpOutput {
  /**
   * Sends one transport payload. The IP layer builds the header and fills the transport
   * checksum's pseudo-header part is NOT done here: transports write their own checksum, using
   * `core/wire/checksum.ts` `pseudoHeaderSum`.
   */
  send(src: IpBytes, dst: IpBytes, protocol: number, payload: Uint8Array): void;
  /**
   * Optional, for a transport that writes its payload in place (TCP, every segment): a packet of
   * its final size with the IP header written; the caller fills the last `payloadLen` bytes
   * (checksum included) and hands the packet to {@link transmit}. One allocation and no copy
   * where {@link send} takes two and one.
   */
  build?(src: IpBytes, dst: IpBytes, protocol: number, payloadLen: number): Uint8Array;
  /** Sends a packet made by {@link build}; present whenever `build` is. */
  transmit?(packet: Uint8Array): void;
  /** Largest transport payload that fits one tunnel packet to `dst` (MTU minus IP header). */
  maxPayload(dst: IpBytes): number;
  /** Picks our source address for a destination (the configured address of the same family). */
  sourceFor(dst: IpBytes): IpBytes | undefined;
  /** True when `addr` is one of our addresses. */
  isLocal(addr: IpBytes): boolean;
}

/** A transport protocol attached to the IP layer. */
export interface Transport {
  readonly protocol: number;
  /**
   * A packet for us: `payload` is the transport header and data. All three are views of a buffer
   * that is reused once this returns: copy what you keep (addresses too).
   */
  input(now: number, src: IpBytes, dst: IpBytes, payload: Uint8Array): void;
  /** An ICMP error about a packet we sent; `quoted` is its transport header as far as quoted. */
  icmpError(now: number, kind: IcmpErrorKind, src: IpBytes, dst: IpBytes, quoted: Uint8Array): void;
  /** The earliest time at which `tick` has work, or Infinity. */
  pollAt(): number;
  tick(now: number): void;
}
