/**
 * ICMP and ICMPv6 endpoints of the stack: answers Echo Requests, surfaces Echo Replies, turns
 * received errors into {@link IcmpErrorKind}s for the socket that sent the quoted packet, and
 * sends the errors a host owes (port/protocol unreachable, reassembly time exceeded, parameter
 * problem) through one token bucket.
 *
 * @module
 */
import type { IpBytes } from "../wire/addr.ts";
import { IpProtocol } from "../wire/ip.ts";
import {
  emitIcmp,
  ICMP_HEADER_LEN,
  IcmpPacket,
  type IcmpRepr,
  IcmpTimeExceeded,
  Icmpv4Type,
  Icmpv4Unreachable,
  Icmpv6ParamProblem,
  Icmpv6Type,
  Icmpv6Unreachable,
  isIcmpv4Error,
  isIcmpv6Error,
  parseIcmp,
} from "../wire/icmp.ts";
import { IPV4_HEADER_LEN, Ipv4Packet } from "../wire/ipv4.ts";
import { IPV6_HEADER_LEN, IPV6_MIN_MTU } from "../wire/ipv6.ts";
import type { Stack } from "./stack.ts";
import type { IcmpErrorKind } from "./types.ts";

/** A token bucket: `burst` tokens, refilled at `perSecond`. */
export interface IcmpRateLimit {
  burst: number;
  perSecond: number;
}

/** Default limit on ICMP errors we send: bursts of 10, then 10 per second. */
export const ICMP_RATE_DEFAULT: IcmpRateLimit = { burst: 10, perSecond: 10 };

/** RFC 1812 4.3.2.3: an ICMPv4 error is at most 576 bytes. */
const ICMPV4_ERROR_MAX = 576;
/** RFC 4443 2.4(c): an ICMPv6 error must not exceed the minimum IPv6 MTU. */
const ICMPV6_ERROR_MAX = IPV6_MIN_MTU;

/** Rate limiting fed by the caller's clock (RFC 4443 2.4(f) suggests a token bucket). */
export class TokenBucket {
  #tokens: number;
  #last: number | undefined;

  constructor(readonly limit: IcmpRateLimit) {
    this.#tokens = limit.burst;
  }

  /** Takes one token if there is one at `now`. */
  take(now: number): boolean {
    if (this.#last !== undefined && now > this.#last) {
      this.#tokens = Math.min(
        this.limit.burst,
        this.#tokens + ((now - this.#last) * this.limit.perSecond) / 1000,
      );
    }
    if (this.#last === undefined || now > this.#last) this.#last = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}

/** What an ICMPv4 Destination Unreachable code means to a socket (RFC 1122 4.2.3.9). */
function v4UnreachableKind(code: number): IcmpErrorKind {
  switch (code) {
    case Icmpv4Unreachable.NET:
    case Icmpv4Unreachable.NET_UNKNOWN:
    case Icmpv4Unreachable.NET_TOS:
      return "net-unreachable";
    // Protocol unreachable is a hard "refused", as port unreachable (RFC 1122 4.2.3.9).
    case Icmpv4Unreachable.PROTOCOL:
    case Icmpv4Unreachable.PORT:
      return "port-unreachable";
    case Icmpv4Unreachable.NET_PROHIBITED:
    case Icmpv4Unreachable.HOST_PROHIBITED:
    case Icmpv4Unreachable.COMM_PROHIBITED:
      return "prohibited";
    default:
      return "host-unreachable";
  }
}

/** What an ICMPv6 Destination Unreachable code means to a socket (RFC 4443 3.1). */
function v6UnreachableKind(code: number): IcmpErrorKind {
  switch (code) {
    case Icmpv6Unreachable.NO_ROUTE:
      return "net-unreachable";
    case Icmpv6Unreachable.PROHIBITED:
    case Icmpv6Unreachable.SOURCE_POLICY:
    case Icmpv6Unreachable.REJECT_ROUTE:
      return "prohibited";
    case Icmpv6Unreachable.PORT:
      return "port-unreachable";
    default:
      return "host-unreachable";
  }
}

/**
 * Finds the upper-layer header of an IPv6 packet (possibly a truncated quote): skips Hop-by-Hop,
 * Routing, Destination Options and a first Fragment header. Undefined when it is not reachable
 * (a later fragment, or the bytes end first).
 */
export function ipv6UpperLayer(packet: Uint8Array): { protocol: number; at: number } | undefined {
  if (packet.length < IPV6_HEADER_LEN) return undefined;
  let nh = packet[6]!;
  let at = IPV6_HEADER_LEN;
  for (;;) {
    if (
      nh === IpProtocol.HOP_BY_HOP || nh === IpProtocol.IPV6_ROUTING ||
      nh === IpProtocol.IPV6_DEST_OPTS
    ) {
      if (at + 2 > packet.length) return undefined;
      nh = packet[at]!;
      at += (packet[at + 1]! + 1) * 8;
    } else if (nh === IpProtocol.IPV6_FRAGMENT) {
      if (at + 8 > packet.length) return undefined;
      const offset = ((packet[at + 2]! << 8) | packet[at + 3]!) & 0xfff8;
      if (offset !== 0) return undefined;
      nh = packet[at]!;
      at += 8;
    } else {
      return at <= packet.length ? { protocol: nh, at } : undefined;
    }
  }
}

/** True when `packet` (a whole or first-fragment IP packet) carries an ICMP error message. */
function carriesIcmpError(v6: boolean, packet: Uint8Array): boolean {
  if (v6) {
    const u = ipv6UpperLayer(packet);
    if (!u || u.protocol !== IpProtocol.ICMPV6) return false;
    return u.at < packet.length && isIcmpv6Error(packet[u.at]!);
  }
  const hl = (packet[0]! & 0x0f) * 4;
  if (packet[9] !== IpProtocol.ICMP || hl >= packet.length) return false;
  return isIcmpv4Error(packet[hl]!);
}

/** @internal The ICMP half of {@link Stack}; one per stack. */
export class IcmpLayer {
  readonly #stack: Stack;
  readonly #bucket: TokenBucket;

  constructor(stack: Stack, limit: IcmpRateLimit = ICMP_RATE_DEFAULT) {
    this.#stack = stack;
    this.#bucket = new TokenBucket(limit);
  }

  /** An ICMP/ICMPv6 message addressed to us; counts exactly one outcome. */
  input(
    now: number,
    v6: boolean,
    src: IpBytes,
    dst: IpBytes,
    payload: Uint8Array,
  ): void {
    const stats = this.#stack.stats;
    const icmp = IcmpPacket.check(payload);
    if (typeof icmp === "string") {
      stats.malformed++;
      return;
    }
    if (v6 ? !icmp.verifyChecksumV6(src, dst) : !icmp.verifyChecksumV4()) {
      stats.checksum++;
      return;
    }
    const repr = parseIcmp(icmp, v6);
    switch (repr.kind) {
      case "echo-request":
        // RFC 1122 3.2.2.6 / RFC 4443 4.2: reply from the address asked, with the same
        // identifier, sequence number and data.
        stats.delivered++;
        this.#echo("echo-reply", dst, src, repr.ident, repr.seq, repr.data);
        return;
      case "echo-reply":
        stats.delivered++;
        this.#stack.onEchoReply?.(now, src, repr.ident, repr.seq, repr.data);
        return;
      case "dest-unreachable":
      case "packet-too-big":
      case "time-exceeded":
      case "param-problem": {
        const kind = this.#errorKind(v6, repr);
        if (kind && this.#deliverError(now, v6, kind, repr.value, repr.data, repr.kind)) {
          stats.delivered++;
        } else {
          stats.icmpIgnored++;
        }
        return;
      }
      default:
        // Redirects, source quench (RFC 6633), router/neighbour discovery: nothing to do in a
        // point-to-point tunnel.
        stats.icmpIgnored++;
    }
  }

  #errorKind(v6: boolean, repr: IcmpRepr): IcmpErrorKind | undefined {
    if (repr.kind === "packet-too-big") return "too-big";
    if (repr.kind === "time-exceeded") return "time-exceeded";
    if (repr.kind === "dest-unreachable") {
      return v6 ? v6UnreachableKind(repr.code) : v4UnreachableKind(repr.code);
    }
    if (repr.kind === "param-problem") {
      // RFC 4443 3.4 code 1 is how IPv6 says "protocol unreachable"; other parameter problems
      // have no socket meaning here.
      return v6 && repr.code === Icmpv6ParamProblem.NEXT_HEADER ? "port-unreachable" : undefined;
    }
    return undefined;
  }

  /**
   * Finds the packet we sent in the quote and tells its sender. True when someone was told.
   * RFC 1122 3.2.2: the quote holds the original IP header and at least 8 bytes of its data.
   */
  #deliverError(
    now: number,
    v6: boolean,
    kind: IcmpErrorKind,
    value: number,
    quote: Uint8Array,
    what: IcmpRepr["kind"],
  ): boolean {
    let qsrc: IpBytes, qdst: IpBytes, protocol: number, at: number;
    if (v6) {
      if (quote.length < IPV6_HEADER_LEN || quote[0]! >> 4 !== 6) return false;
      const u = ipv6UpperLayer(quote);
      if (!u) return false;
      protocol = u.protocol;
      at = u.at;
      qsrc = quote.subarray(8, 24);
      qdst = quote.subarray(24, 40);
    } else {
      if (quote.length < IPV4_HEADER_LEN) return false;
      const q = new Ipv4Packet(quote);
      if (q.version !== 4 || q.headerLen < IPV4_HEADER_LEN) return false;
      if (q.fragmentOffset !== 0) return false; // no transport header in a later fragment
      protocol = q.protocol;
      at = q.headerLen;
      qsrc = q.src;
      qdst = q.dst;
    }
    // The quoted transport header must be there (8 bytes: ports, or ICMP id/seq).
    if (quote.length < at + 8) return false;
    const stack = this.#stack;
    // Only errors about packets we sent: the quoted source is ours.
    if (!stack.isLocal(qsrc)) return false;
    const src = qsrc.slice(), dst = qdst.slice();
    if (what === "packet-too-big") {
      let mtu = value;
      if (!v6 && mtu === 0) {
        // RFC 1191 5: a router that predates it sends 0; guess the next plateau down.
        mtu = plateauBelow(new Ipv4Packet(quote).totalLen);
      }
      stack._updatePmtu(now, dst, mtu);
    }
    const quoted = quote.subarray(at);
    if (protocol === IpProtocol.UDP) return stack.udp._icmpError(now, kind, src, dst, quoted);
    if (protocol === (v6 ? IpProtocol.ICMPV6 : IpProtocol.ICMP)) {
      const echoRequest = v6 ? Icmpv6Type.ECHO_REQUEST : Icmpv4Type.ECHO_REQUEST;
      if (quoted[0] !== echoRequest || !stack.onEchoError) return false;
      const ident = (quoted[4]! << 8) | quoted[5]!, seq = (quoted[6]! << 8) | quoted[7]!;
      stack.onEchoError(now, kind, dst, ident, seq);
      return true;
    }
    const t = stack._transport(protocol);
    if (!t) return false;
    t.icmpError(now, kind, src, dst, quoted);
    return true;
  }

  /** Sends an Echo Request or Reply (fragmented if larger than the path MTU). */
  echoRequest(src: IpBytes, dst: IpBytes, ident: number, seq: number, data: Uint8Array): void {
    this.#echo("echo-request", src, dst, ident, seq, data);
  }

  #echo(
    kind: "echo-request" | "echo-reply",
    src: IpBytes,
    dst: IpBytes,
    ident: number,
    seq: number,
    data: Uint8Array,
  ): void {
    const v6 = src.length === 16;
    const stack = this.#stack;
    const packet = stack._build(
      src,
      dst,
      v6 ? IpProtocol.ICMPV6 : IpProtocol.ICMP,
      ICMP_HEADER_LEN + data.length,
    );
    const hl = v6 ? IPV6_HEADER_LEN : IPV4_HEADER_LEN;
    emitIcmp({ kind, ident, seq, data }, packet.subarray(hl), v6 ? { src, dst } : undefined);
    stack._transmit(packet);
  }

  /** Port Unreachable for a UDP datagram (`original` is the whole IP packet). */
  portUnreachable(now: number, v6: boolean, original: Uint8Array): void {
    this.#sendError(now, v6, original, {
      kind: "dest-unreachable",
      code: v6 ? Icmpv6Unreachable.PORT : Icmpv4Unreachable.PORT,
      value: 0,
      data: original,
    });
  }

  /**
   * A protocol nobody handles: ICMPv4 Protocol Unreachable, or ICMPv6 Parameter Problem code 1
   * pointing at the Next Header byte (`nhAt`) that named it.
   */
  protocolUnreachable(now: number, v6: boolean, original: Uint8Array, nhAt: number): void {
    if (v6) this.paramProblem(now, original, Icmpv6ParamProblem.NEXT_HEADER, nhAt);
    else {
      this.#sendError(now, false, original, {
        kind: "dest-unreachable",
        code: Icmpv4Unreachable.PROTOCOL,
        value: 0,
        data: original,
      });
    }
  }

  /** ICMPv6 Parameter Problem (RFC 4443 3.4); `pointer` is a byte offset in `original`. */
  paramProblem(now: number, original: Uint8Array, code: number, pointer: number): void {
    this.#sendError(now, true, original, {
      kind: "param-problem",
      code,
      value: pointer,
      data: original,
    });
  }

  /** Time Exceeded / fragment reassembly time exceeded, quoting the first fragment. */
  reassemblyTimeout(now: number, v6: boolean, firstFragment: Uint8Array): void {
    this.#sendError(now, v6, firstFragment, {
      kind: "time-exceeded",
      code: IcmpTimeExceeded.REASSEMBLY,
      value: 0,
      data: firstFragment,
    });
  }

  /**
   * Sends an error about `original` back to its source, quoting as much of it as the size limit
   * allows. RFC 1122 3.2.2 / RFC 4443 2.4(e): never about an ICMP error (no error storms); the
   * caller has already made sure the original was a unicast packet to us from a unicast source.
   */
  #sendError(now: number, v6: boolean, original: Uint8Array, repr: IcmpRepr): void {
    if (carriesIcmpError(v6, original)) return;
    const stack = this.#stack;
    if (!this.#bucket.take(now)) {
      stack.stats.icmpRateLimited++;
      return;
    }
    const hl = v6 ? IPV6_HEADER_LEN : IPV4_HEADER_LEN;
    const max = (v6 ? ICMPV6_ERROR_MAX : ICMPV4_ERROR_MAX) - hl - ICMP_HEADER_LEN;
    const quote = original.subarray(0, Math.min(original.length, max));
    // Back to where it came from, from the address it was sent to.
    const from = v6 ? original.subarray(24, 40) : original.subarray(16, 20);
    const to = v6 ? original.subarray(8, 24) : original.subarray(12, 16);
    const packet = stack._build(
      from,
      to,
      v6 ? IpProtocol.ICMPV6 : IpProtocol.ICMP,
      ICMP_HEADER_LEN + quote.length,
    );
    emitIcmp(
      { ...repr, data: quote },
      packet.subarray(hl),
      v6 ? { src: from, dst: to } : undefined,
    );
    stack.stats.icmpErrorsOut++;
    stack._transmit(packet);
  }
}

/** RFC 1191 7: the table of common MTU plateaus. */
const MTU_PLATEAUS = [65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68];

function plateauBelow(size: number): number {
  for (const p of MTU_PLATEAUS) if (p < size) return p;
  return 68;
}
