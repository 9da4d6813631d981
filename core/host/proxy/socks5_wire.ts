/**
 * The bytes of SOCKS5 (RFC 1928) and its username/password subnegotiation (RFC 1929): the
 * constants under their RFC names, and the address field (ATYP, DST.ADDR, DST.PORT) shared by
 * requests, replies and UDP datagram headers.
 *
 * @module
 */
import { formatIP, type IpBytes } from "../../wire/addr.ts";
import type { DialFailure } from "../forward/dial.ts";

/** RFC 1928 (3): the protocol version. */
export const SocksVersion = 5;
/** RFC 1929 (2): the version of the username/password subnegotiation. */
export const UserPassVersion = 1;

/** RFC 1928 (3): METHOD values. */
export const Method = { NoAuth: 0x00, UserPass: 0x02, NoAcceptable: 0xff } as const;
/** RFC 1928 (4): CMD values. */
export const Cmd = { Connect: 1, Bind: 2, UdpAssociate: 3 } as const;
/** RFC 1928 (5): ATYP values. */
export const Atyp = { IPv4: 1, Domain: 3, IPv6: 4 } as const;
/** RFC 1928 (6): REP values. */
export const Rep = {
  Succeeded: 0x00,
  GeneralFailure: 0x01,
  NotAllowed: 0x02,
  NetworkUnreachable: 0x03,
  HostUnreachable: 0x04,
  ConnectionRefused: 0x05,
  TtlExpired: 0x06,
  CommandNotSupported: 0x07,
  AddressTypeNotSupported: 0x08,
} as const;

/** The reply for a failed dial. RFC 1928 has no "timed out" or "no such name": both are 04. */
export function replyFor(kind: DialFailure): number {
  switch (kind) {
    case "refused":
      return Rep.ConnectionRefused;
    case "network-unreachable":
      return Rep.NetworkUnreachable;
    case "host-unreachable":
    case "timeout":
    case "name-not-found":
      return Rep.HostUnreachable;
    default:
      return Rep.GeneralFailure;
  }
}

/** A SOCKS address: an IP (4 or 16 bytes) or a domain name, and a port. */
export interface SocksAddr {
  host: IpBytes | string;
  port: number;
}

/** ATYP, address and port as the wire has them (RFC 1928 (4), (5), (7)). */
export function encodeAddr(addr: SocksAddr): Uint8Array {
  let head: Uint8Array;
  if (typeof addr.host === "string") {
    const name = new TextEncoder().encode(addr.host);
    if (name.length > 255) throw new RangeError(`Cannot encode ${addr.host}: over 255 bytes`);
    head = new Uint8Array([Atyp.Domain, name.length, ...name]);
  } else {
    head = new Uint8Array([addr.host.length === 4 ? Atyp.IPv4 : Atyp.IPv6, ...addr.host]);
  }
  const out = new Uint8Array(head.length + 2);
  out.set(head);
  out[head.length] = addr.port >> 8;
  out[head.length + 1] = addr.port & 0xff;
  return out;
}

/**
 * Parses ATYP, address and port at `off` of `b` (a UDP request header). Returns undefined when
 * `b` is too short or the ATYP unknown; `end` is the offset after the port.
 */
export function decodeAddr(
  b: Uint8Array,
  off: number,
): { addr: SocksAddr; end: number } | undefined {
  const atyp = b[off];
  let host: IpBytes | string, p: number;
  if (atyp === Atyp.IPv4) {
    if (b.length < off + 7) return undefined;
    host = b.slice(off + 1, off + 5);
    p = off + 5;
  } else if (atyp === Atyp.IPv6) {
    if (b.length < off + 19) return undefined;
    host = b.slice(off + 1, off + 17);
    p = off + 17;
  } else if (atyp === Atyp.Domain) {
    const len = b[off + 1];
    if (len === undefined || len === 0 || b.length < off + 2 + len + 2) return undefined;
    host = new TextDecoder().decode(b.subarray(off + 2, off + 2 + len));
    p = off + 2 + len;
  } else return undefined;
  return { addr: { host, port: (b[p]! << 8) | b[p + 1]! }, end: p + 2 };
}

/** The host of a SOCKS address as text: an IP literal or the name. */
export function hostText(host: IpBytes | string): string {
  return typeof host === "string" ? host : formatIP(host);
}
