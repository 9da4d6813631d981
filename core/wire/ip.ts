/**
 * Family-neutral pieces of the IP layer: protocol numbers (IANA "Assigned Internet Protocol
 * Numbers"), the error a checked view reports, and address classes both families share.
 *
 * @module
 */
import type { IpBytes } from "./addr.ts";

/** IP protocol / IPv6 Next Header values used by the stack (IANA protocol numbers). */
export const IpProtocol = {
  HOP_BY_HOP: 0,
  ICMP: 1,
  TCP: 6,
  UDP: 17,
  IPV6_ROUTING: 43,
  IPV6_FRAGMENT: 44,
  ESP: 50,
  AH: 51,
  ICMPV6: 58,
  IPV6_NO_NEXT: 59,
  IPV6_DEST_OPTS: 60,
} as const;

/**
 * Why a checked view refused a buffer: `truncated` when the bytes end before a length the header
 * promises, `malformed` when a field holds a value the format forbids.
 */
export type WireError = "truncated" | "malformed";

/** Default TTL / Hop Limit for packets we originate (RFC 1700 era value, as Linux uses). */
export const DEFAULT_HOP_LIMIT = 64;

/** The IP version nibble of a raw packet, or 0 for an empty buffer. */
export function ipVersion(packet: Uint8Array): number {
  return packet.length === 0 ? 0 : packet[0]! >> 4;
}

/**
 * A string usable as a Map key for an address: one UTF-16 unit per byte, so IPv4 and IPv6 keys
 * never collide (their lengths differ).
 */
export function addrKey(addr: IpBytes): string {
  return String.fromCharCode.apply(null, addr as unknown as number[]);
}

/** True for the all-zero address (`0.0.0.0`, `::`). */
export function isUnspecified(addr: IpBytes): boolean {
  for (let i = 0; i < addr.length; i++) if (addr[i] !== 0) return false;
  return true;
}

/** True for multicast (224.0.0.0/4, ff00::/8) and for the IPv4 limited broadcast. */
export function isMulticastOrBroadcast(addr: IpBytes): boolean {
  if (addr.length === 4) {
    if ((addr[0]! & 0xf0) === 0xe0) return true;
    return addr[0] === 255 && addr[1] === 255 && addr[2] === 255 && addr[3] === 255;
  }
  return addr[0] === 0xff;
}

/** True for loopback (127.0.0.0/8, ::1): such sources never arrive from a tunnel. */
export function isLoopback(addr: IpBytes): boolean {
  if (addr.length === 4) return addr[0] === 127;
  for (let i = 0; i < 15; i++) if (addr[i] !== 0) return false;
  return addr[15] === 1;
}
