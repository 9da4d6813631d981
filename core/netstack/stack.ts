/**
 * The IP layer of the userspace stack: validates packets from the tunnel, reassembles fragments,
 * walks IPv6 extension headers, and hands each datagram to UDP, ICMP or an attached transport.
 * On the way out it builds IPv4/IPv6 headers and fragments what does not fit the path MTU.
 *
 * ```text
 * input(now, pkt) ─ version ─┬─ IPv4: lengths, checksum, ours? ─┐
 *                            └─ IPv6: lengths, ours? ext hdrs ──┤
 *                                    fragment? ─► Reassembler ──┤ (whole datagram, again)
 *                                                               ▼
 *                        demux by protocol: UDP (udp.ts) │ ICMP/ICMPv6 (icmp.ts) │ attach()ed
 *
 * send(src, dst, proto, payload) ─ _build (one allocation at final size) ─ _transmit
 *                                 ─ fits path MTU? output(pkt) : fragments → output(each)
 * ```
 *
 * Every packet given to {@link Stack.input} ends in exactly one outcome counter of
 * {@link StackStats}; no bytes make it throw.
 * Pure: `now` is passed in, nothing here reads a clock or arms a timer.
 *
 * @module
 */
import { type IpBytes, ipEquals } from "../wire/addr.ts";
import {
  addrKey,
  DEFAULT_HOP_LIMIT,
  IpProtocol,
  isLoopback,
  isMulticastOrBroadcast,
  isUnspecified,
} from "../wire/ip.ts";
import { emitIpv4, IPV4_HEADER_LEN, IPV4_MIN_MTU, Ipv4Flags, Ipv4Packet } from "../wire/ipv4.ts";
import {
  emitIpv6,
  emitIpv6Fragment,
  forEachOption,
  IPV6_FRAG_HEADER_LEN,
  IPV6_HEADER_LEN,
  IPV6_MAX_PAYLOAD,
  IPV6_MIN_MTU,
  Ipv6ExtHeader,
  Ipv6FragmentHeader,
  Ipv6Packet,
  optionAction,
} from "../wire/ipv6.ts";
import { Icmpv6ParamProblem } from "../wire/icmp.ts";
import { IcmpLayer, type IcmpRateLimit } from "./icmp.ts";
import { MessageTooLongError, NetUnreachableError } from "./ip_errors.ts";
import { Reassembler, type ReassemblyLimits } from "./reassembly.ts";
import type { IcmpErrorKind, IpOutput, Transport } from "./types.ts";
import { UdpLayer } from "./udp.ts";

/**
 * Counters. The "outcome" counters partition what arrived: every `input()` call grows exactly
 * one of them, so `received === delivered + fragments + (the drop counters)`. A fragment that
 * completes a datagram is not counted in `fragments`: it takes the outcome of the datagram.
 */
export interface StackStats {
  /** Packets given to `input()`. */
  received: number;
  /** Datagrams completed by reassembly (each then processed like a received packet). */
  reassembled: number;

  // --- outcomes ---
  /** Handed to UDP sockets, ICMP (echo answered, reply or error consumed) or a transport. */
  delivered: number;
  /** A fragment kept for reassembly (exact duplicates included). */
  fragments: number;
  /** Bad version, lengths, header fields, truncated extension headers, bad fragment sizes. */
  malformed: number;
  /** Bad IPv4 header, UDP, or ICMP checksum; zero UDP checksum over IPv6. */
  checksum: number;
  /** Destination is not one of our addresses. */
  notForUs: number;
  /** Source can not be a remote host: ours, loopback, multicast, broadcast, unspecified. */
  martian: number;
  /** No transport for the protocol (also IPv6 No Next Header). */
  noProtocol: number;
  /** UDP to a port without a socket. */
  noPort: number;
  /** IPv6 extension header we must not skip: unknown option asking to discard, routing header
   * with segments left, Hop-by-Hop not first. */
  extensionHeader: number;
  /** ICMP not acted on: unknown type, error quoting a packet we did not send or nobody owns. */
  icmpIgnored: number;
  /** Fragment overlapping another, or for a datagram abandoned for overlap. */
  reassemblyOverlap: number;
  /** Fragment that would make the datagram exceed 65535 bytes. */
  reassemblyTooBig: number;
  /** Fragment refused because the reassembly memory budget is spent. */
  reassemblyMemory: number;

  // --- not outcomes ---
  /** Datagrams dropped incomplete when their reassembly timer ran out. */
  reassemblyTimeout: number;
  /** Packets (fragments counted one by one) passed to `output`. */
  sent: number;
  /** ICMP errors we sent. */
  icmpErrorsOut: number;
  /** ICMP errors we did not send because of the rate limit. */
  icmpRateLimited: number;
}

function zeroStats(): StackStats {
  return {
    received: 0,
    reassembled: 0,
    delivered: 0,
    fragments: 0,
    malformed: 0,
    checksum: 0,
    notForUs: 0,
    martian: 0,
    noProtocol: 0,
    noPort: 0,
    extensionHeader: 0,
    icmpIgnored: 0,
    reassemblyOverlap: 0,
    reassemblyTooBig: 0,
    reassemblyMemory: 0,
    reassemblyTimeout: 0,
    sent: 0,
    icmpErrorsOut: 0,
    icmpRateLimited: 0,
  };
}

export interface StackOptions {
  /** Our addresses, IPv4 and/or IPv6. */
  addresses: IpBytes[];
  /** Tunnel MTU: the largest IP packet given to `output`. */
  mtu: number;
  /**
   * Called with each IP packet to send into the tunnel (the buffer is the receiver's to keep,
   * unless `outputCopies`).
   */
  output: (packet: Uint8Array) => void;
  /**
   * `output` copies what it keeps, so a packet is valid only during the call (the engine seals
   * each packet into its datagram): TCP's segments are then built in one buffer the stack reuses,
   * with no allocation per segment. Default false.
   */
  outputCopies?: boolean;
  /** Limits of fragment reassembly (timeouts, memory). */
  reassembly?: Partial<ReassemblyLimits>;
  /** Token bucket for ICMP errors we send (RFC 1812 4.3.2.8, RFC 4443 2.4(f)). */
  icmpRateLimit?: IcmpRateLimit;
  /** Random numbers in [0, 1) for ephemeral ports and IP identifications; crypto by default. */
  random?: () => number;
}

/** Path MTU estimates expire after 10 minutes (RFC 1191 6.3, RFC 8201 5.3). */
export const PMTU_TIMEOUT = 10 * 60_000;
/**
 * Lowest IPv4 path MTU we accept from an ICMP message. RFC 1191 allows 68; Linux refuses below
 * 552 (`min_pmtu`) so that forged ICMP can not shrink every packet to a few bytes.
 */
export const PMTU_MIN_V4 = 552;
/** Most destinations with a learned path MTU; older entries are dropped first. */
export const PMTU_MAX_ENTRIES = 1024;

function defaultRandom(): number {
  const b = new Uint32Array(1);
  crypto.getRandomValues(b);
  return b[0]! / 0x1_0000_0000;
}

/** Length of the common prefix of two equal-length addresses, in bits. */
function commonPrefixBits(a: IpBytes, b: IpBytes): number {
  let bits = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]! ^ b[i]!;
    if (x === 0) {
      bits += 8;
      continue;
    }
    return bits + Math.clz32(x) - 24;
  }
  return bits;
}

/**
 * The IP layer. See the module documentation.
 *
 * @example Two stacks wired back to back exchange a datagram and a ping
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseIP } from "../wire/addr.ts";
 *
 * const wire: [Stack, Uint8Array][] = [];
 * const a: Stack = new Stack({
 *   addresses: [parseIP("10.0.0.1")!],
 *   mtu: 1420,
 *   output: (p) => wire.push([b, p]),
 * });
 * const b: Stack = new Stack({
 *   addresses: [parseIP("10.0.0.2")!],
 *   mtu: 1420,
 *   output: (p) => wire.push([a, p]),
 * });
 * const server = b.udp.bind({ port: 53 });
 * const seen: string[] = [];
 * server.onDatagram = (data) => seen.push(new TextDecoder().decode(data));
 * a.udp.bind().send(parseIP("10.0.0.2")!, 53, new TextEncoder().encode("hi"));
 * a.onEchoReply = (_now, _from, ident, seq) => seen.push(`pong ${ident}/${seq}`);
 * a.ping(parseIP("10.0.0.2")!, 1, 2);
 * for (let i = 0; i < wire.length; i++) wire[i]![0].input(0, wire[i]![1]);
 * assert.deepEqual(seen, ["hi", "pong 1/2"]);
 * ```
 */
export class Stack implements IpOutput {
  readonly stats: StackStats = zeroStats();
  /** Tunnel MTU given at construction. */
  readonly mtu: number;
  /** UDP sockets on this stack. */
  readonly udp: UdpLayer;
  /**
   * An ICMP / ICMPv6 Echo Reply addressed to us. `data` is a view valid during the call.
   */
  onEchoReply?: (now: number, from: IpBytes, ident: number, seq: number, data: Uint8Array) => void;
  /**
   * An ICMP error about an Echo Request we sent with {@link ping} (`to` is where it was going).
   */
  onEchoError?: (now: number, kind: IcmpErrorKind, to: IpBytes, ident: number, seq: number) => void;

  readonly #addresses: IpBytes[];
  readonly #output: (packet: Uint8Array) => void;
  readonly #outputCopies: boolean;
  /** Where {@link build} writes TCP's segments when `output` copies; grown on demand. */
  #txScratch = new Uint8Array(2048);
  readonly #transports = new Map<number, Transport>();
  readonly #reassembler: Reassembler;
  readonly #icmp: IcmpLayer;
  readonly #random: () => number;
  #ipv4Ident: number;
  #ipv6Ident: number;
  /** Learned path MTUs by destination, in expiry order. */
  readonly #pmtu = new Map<string, { mtu: number; expires: number }>();

  constructor(options: StackOptions) {
    const { addresses, mtu } = options;
    for (const a of addresses) {
      if (a.length !== 4 && a.length !== 16) {
        throw new TypeError(`Cannot use an address of ${a.length} bytes: expected 4 or 16`);
      }
      if (isUnspecified(a) || isMulticastOrBroadcast(a)) {
        throw new TypeError("Cannot use an unspecified, multicast or broadcast address as ours");
      }
    }
    if (!Number.isInteger(mtu) || mtu > 65535) {
      throw new RangeError(`Cannot use MTU ${mtu}: expected an integer up to 65535`);
    }
    if (addresses.some((a) => a.length === 4) && mtu < IPV4_MIN_MTU) {
      throw new RangeError(`Cannot use MTU ${mtu} with IPv4: RFC 791 needs at least 68`);
    }
    if (addresses.some((a) => a.length === 16) && mtu < IPV6_MIN_MTU) {
      throw new RangeError(`Cannot use MTU ${mtu} with IPv6: RFC 8200 needs at least 1280`);
    }
    this.#addresses = addresses.map((a) => a.slice());
    this.mtu = mtu;
    this.#output = options.output;
    this.#outputCopies = options.outputCopies ?? false;
    this.#random = options.random ?? defaultRandom;
    this.#ipv4Ident = Math.floor(this.#random() * 0x10000);
    this.#ipv6Ident = Math.floor(this.#random() * 0x1_0000_0000);
    this.#reassembler = new Reassembler(options.reassembly);
    this.#icmp = new IcmpLayer(this, options.icmpRateLimit);
    this.udp = new UdpLayer(this);
  }

  /** Our addresses (copies made at construction). */
  get addresses(): readonly IpBytes[] {
    return this.#addresses;
  }

  /** Bytes held by fragment reassembly. */
  get reassemblyMemory(): number {
    return this.#reassembler.memory;
  }

  /**
   * Attaches a transport (TCP, …) for its protocol number. UDP and ICMP are built in.
   * @throws {TypeError} when the protocol is built in or already attached.
   */
  attach(transport: Transport): void {
    const p = transport.protocol;
    if (p === IpProtocol.UDP || p === IpProtocol.ICMP || p === IpProtocol.ICMPV6) {
      throw new TypeError(`Cannot attach protocol ${p}: it is built into the stack`);
    }
    if (this.#transports.has(p)) {
      throw new TypeError(`Cannot attach protocol ${p}: a transport is already attached`);
    }
    this.#transports.set(p, transport);
  }

  /** Detaches a transport attached with {@link attach}. */
  detach(transport: Transport): void {
    if (this.#transports.get(transport.protocol) === transport) {
      this.#transports.delete(transport.protocol);
    }
  }

  // ------------------------------------------------------------------------------------------
  // Input

  /** Processes one IP packet from the tunnel. Never throws for any bytes. */
  input(now: number, packet: Uint8Array): void {
    this.stats.received++;
    const version = packet.length === 0 ? 0 : packet[0]! >> 4;
    if (version === 4) this.#inputV4(now, packet);
    else if (version === 6) this.#inputV6(now, packet, false);
    else this.stats.malformed++;
  }

  #martian(src: IpBytes): boolean {
    return isUnspecified(src) || isMulticastOrBroadcast(src) || isLoopback(src) ||
      this.isLocal(src);
  }

  #inputV4(now: number, buf: Uint8Array): void {
    const stats = this.stats;
    const ip = Ipv4Packet.check(buf);
    if (typeof ip === "string") {
      stats.malformed++;
      return;
    }
    // RFC 1122 3.2.1.2: a host MUST verify the header checksum and silently discard on failure.
    if (!ip.verifyChecksum()) {
      stats.checksum++;
      return;
    }
    const dst = ip.dst;
    if (!this.isLocal(dst)) {
      stats.notForUs++;
      return;
    }
    // RFC 1122 3.2.1.3: discard datagrams whose source is not a valid unicast address.
    const src = ip.src;
    if (this.#martian(src)) {
      stats.martian++;
      return;
    }
    if (ip.isFragment) {
      const r = this.#reassembler.ipv4(now, ip);
      if (typeof r === "string") {
        this.#countFragment(r);
        return;
      }
      stats.reassembled++;
      this.#inputV4(now, r);
      return;
    }
    this.#deliver(now, false, ip.packet, src, dst, ip.protocol, ip.headerLen, -1);
  }

  #countFragment(r: string): void {
    const stats = this.stats;
    if (r === "pending") stats.fragments++;
    else if (r === "overlap") stats.reassemblyOverlap++;
    else if (r === "too-big") stats.reassemblyTooBig++;
    else if (r === "memory") stats.reassemblyMemory++;
    else stats.malformed++;
  }

  #inputV6(now: number, buf: Uint8Array, reassembled: boolean): void {
    const stats = this.stats;
    const ip = Ipv6Packet.check(buf);
    if (typeof ip === "string") {
      stats.malformed++;
      return;
    }
    const dst = ip.dst;
    if (!this.isLocal(dst)) {
      stats.notForUs++;
      return;
    }
    const src = ip.src;
    if (this.#martian(src)) {
      stats.martian++;
      return;
    }
    const packet = ip.packet;
    let nh = ip.nextHeader;
    let at = IPV6_HEADER_LEN;
    let nhAt = 6; // offset of the Next Header byte that announced `nh`
    // RFC 8200 4: walk the chain in order; each header is at least 8 bytes, so this ends.
    for (;;) {
      if (nh === IpProtocol.HOP_BY_HOP || nh === IpProtocol.IPV6_DEST_OPTS) {
        // RFC 8200 4.3: Hop-by-Hop is allowed only right after the IPv6 header.
        if (nh === IpProtocol.HOP_BY_HOP && at !== IPV6_HEADER_LEN) {
          stats.extensionHeader++;
          this.#icmp.paramProblem(now, packet, Icmpv6ParamProblem.NEXT_HEADER, nhAt);
          return;
        }
        const h = Ipv6ExtHeader.check(packet.subarray(at));
        if (typeof h === "string") {
          stats.malformed++;
          return;
        }
        // RFC 8200 4.2: an unrecognised option's two high bits say whether it may be skipped.
        const bad = forEachOption(
          h.options,
          (type, off) => optionAction(type) === "skip" ? undefined : { type, off },
        );
        if (bad === "truncated") {
          stats.malformed++;
          return;
        }
        if (bad !== undefined) {
          stats.extensionHeader++;
          // Action 10 and 11 ask for Parameter Problem code 2; our destination is unicast.
          if (optionAction(bad.type) !== "discard") {
            this.#icmp.paramProblem(now, packet, Icmpv6ParamProblem.OPTION, at + 2 + bad.off);
          }
          return;
        }
        nhAt = at;
        nh = h.nextHeader;
        at += h.headerLen;
        continue;
      }
      if (nh === IpProtocol.IPV6_ROUTING) {
        const h = Ipv6ExtHeader.check(packet.subarray(at));
        if (typeof h === "string") {
          stats.malformed++;
          return;
        }
        // RFC 8200 4.4: with Segments Left zero the header is ignored; otherwise we would have
        // to forward, which a host does not do (and type 0 is deprecated by RFC 5095).
        if (h.segmentsLeft !== 0) {
          stats.extensionHeader++;
          this.#icmp.paramProblem(now, packet, Icmpv6ParamProblem.HEADER_FIELD, at + 2);
          return;
        }
        nhAt = at;
        nh = h.nextHeader;
        at += h.headerLen;
        continue;
      }
      if (nh === IpProtocol.IPV6_FRAGMENT) {
        const fh = Ipv6FragmentHeader.check(packet.subarray(at));
        // A Fragment header inside a reassembled packet would be a fragment of a fragment.
        if (typeof fh === "string" || reassembled) {
          stats.malformed++;
          return;
        }
        // RFC 6946: an atomic fragment (offset 0, M clear) is processed on its own.
        if (fh.fragmentOffset === 0 && !fh.moreFragments) {
          nhAt = at;
          nh = fh.nextHeader;
          at += IPV6_FRAG_HEADER_LEN;
          continue;
        }
        const r = this.#reassembler.ipv6(now, packet, at, nhAt);
        if (typeof r === "string") {
          this.#countFragment(r);
          return;
        }
        stats.reassembled++;
        this.#inputV6(now, r, true);
        return;
      }
      if (nh === IpProtocol.IPV6_NO_NEXT) {
        stats.noProtocol++; // RFC 8200 4.7: nothing follows; there is nothing to deliver.
        return;
      }
      this.#deliver(now, true, packet, src, dst, nh, at, nhAt);
      return;
    }
  }

  /**
   * Hands the upper-layer part of a whole datagram to its protocol. `packet` is the whole IP
   * packet (for ICMP quotes); the payload starts at `at`. `nhAt` is the offset of the IPv6 Next
   * Header byte naming the protocol (for Parameter Problem), -1 for IPv4.
   */
  #deliver(
    now: number,
    v6: boolean,
    packet: Uint8Array,
    srcView: IpBytes,
    dstView: IpBytes,
    protocol: number,
    at: number,
    nhAt: number,
  ): void {
    const stats = this.stats;
    const payload = packet.subarray(at);
    // An attached transport (never UDP or ICMP: attach refuses them) gets views and copies what
    // it keeps (TCP only for a new connection): two allocations fewer on every segment. The
    // built-in receivers may keep the addresses, and the packet buffer is the host's: copies.
    const t = this.#transports.get(protocol);
    if (t) {
      stats.delivered++;
      t.input(now, srcView, dstView, payload);
      return;
    }
    const src = srcView.slice(), dst = dstView.slice();
    if (protocol === IpProtocol.UDP) {
      const r = this.udp._input(now, v6, src, dst, payload);
      if (r === "delivered") stats.delivered++;
      else if (r === "checksum") stats.checksum++;
      else if (r === "malformed") stats.malformed++;
      else {
        stats.noPort++;
        // RFC 1122 4.1.3.1: a datagram for a port with no listener gets Port Unreachable.
        this.#icmp.portUnreachable(now, v6, packet);
      }
      return;
    }
    if (protocol === (v6 ? IpProtocol.ICMPV6 : IpProtocol.ICMP)) {
      this.#icmp.input(now, v6, src, dst, payload);
      return;
    }
    stats.noProtocol++;
    // RFC 1122 3.2.2.1 (Protocol Unreachable), RFC 8200 4 (Parameter Problem code 1).
    this.#icmp.protocolUnreachable(now, v6, packet, nhAt);
  }

  // ------------------------------------------------------------------------------------------
  // Internal seams for icmp.ts and udp.ts

  /** @internal The transport for a protocol, if attached. */
  _transport(protocol: number): Transport | undefined {
    return this.#transports.get(protocol);
  }

  /** @internal A random number in [0, 1). */
  _random(): number {
    return this.#random();
  }

  /**
   * @internal Lowers the path MTU towards `dst` after Packet Too Big / Fragmentation Needed.
   * RFC 1191 6.1 / RFC 8201 4: never raised by ICMP, floored to protect against forged tiny
   * values (RFC 8201 4: below 1280 for IPv6 means 1280).
   */
  _updatePmtu(now: number, dst: IpBytes, mtu: number): void {
    const floor = dst.length === 4 ? PMTU_MIN_V4 : IPV6_MIN_MTU;
    mtu = Math.max(floor, Math.min(mtu, this.mtu));
    const key = addrKey(dst);
    const old = this.#pmtu.get(key);
    if (old && old.mtu <= mtu) return;
    if (mtu >= this.mtu) return;
    this.#pmtu.delete(key);
    if (this.#pmtu.size >= PMTU_MAX_ENTRIES) {
      const oldest = this.#pmtu.keys().next();
      if (!oldest.done) this.#pmtu.delete(oldest.value);
    }
    this.#pmtu.set(key, { mtu, expires: now + PMTU_TIMEOUT });
  }

  /** The path MTU towards `dst`: the tunnel MTU unless ICMP taught us less. */
  pathMtu(dst: IpBytes): number {
    if (this.#pmtu.size === 0) return this.mtu;
    const e = this.#pmtu.get(addrKey(dst));
    return e ? e.mtu : this.mtu;
  }

  /**
   * @internal Allocates a packet of its final size with the IP header written (or, given `into`,
   * writes it at the start of `into` and returns that view); the caller writes the payload at
   * `packet.subarray(headerLen)` and passes it to {@link _transmit}.
   * @throws {MessageTooLongError} when the payload can not fit one IP datagram.
   */
  _build(
    src: IpBytes,
    dst: IpBytes,
    protocol: number,
    payloadLen: number,
    into?: Uint8Array,
  ): Uint8Array {
    if (src.length !== dst.length) {
      throw new TypeError("Cannot send between addresses of different families");
    }
    if (src.length === 4) {
      if (IPV4_HEADER_LEN + payloadLen > 65535) {
        throw new MessageTooLongError(
          `Cannot send ${payloadLen} bytes over IPv4: at most ${65535 - IPV4_HEADER_LEN} fit`,
        );
      }
      const packet = into
        ? into.subarray(0, IPV4_HEADER_LEN + payloadLen)
        : new Uint8Array(IPV4_HEADER_LEN + payloadLen);
      this.#ipv4Ident = (this.#ipv4Ident + 1) & 0xffff;
      emitIpv4({
        src,
        dst,
        protocol,
        payloadLen,
        ttl: DEFAULT_HOP_LIMIT,
        ident: this.#ipv4Ident,
        dontFragment: true,
      }, packet);
      return packet;
    }
    if (payloadLen > IPV6_MAX_PAYLOAD) {
      throw new MessageTooLongError(
        `Cannot send ${payloadLen} bytes over IPv6: at most ${IPV6_MAX_PAYLOAD} fit`,
      );
    }
    const packet = into
      ? into.subarray(0, IPV6_HEADER_LEN + payloadLen)
      : new Uint8Array(IPV6_HEADER_LEN + payloadLen);
    emitIpv6({ src, dst, nextHeader: protocol, payloadLen, hopLimit: DEFAULT_HOP_LIMIT }, packet);
    return packet;
  }

  /**
   * @internal Sends a packet made by {@link _build} (payload and transport checksum written).
   * Packets larger than the path MTU are fragmented: IPv4 per RFC 791 3.2 with DF clear on the
   * fragments, IPv6 with a Fragment header (RFC 8200 4.5).
   */
  _transmit(packet: Uint8Array): void {
    const v6 = packet[0]! >> 4 === 6;
    const dst = v6 ? packet.subarray(24, 40) : packet.subarray(16, 20);
    const mtu = this.pathMtu(dst);
    if (packet.length <= mtu) {
      this.stats.sent++;
      this.#output(packet);
      return;
    }
    if (v6) this.#fragmentV6(packet, mtu);
    else this.#fragmentV4(packet, mtu);
  }

  #fragmentV4(packet: Uint8Array, mtu: number): void {
    const ip = new Ipv4Packet(packet);
    const hl = ip.headerLen;
    const data = ip.payload;
    // RFC 791 3.2: fragment data is a multiple of 8 octets, except in the last fragment.
    const chunk = Math.floor((mtu - hl) / 8) * 8;
    for (let off = 0; off < data.length; off += chunk) {
      const len = Math.min(chunk, data.length - off);
      const frag = new Uint8Array(hl + len);
      frag.set(packet.subarray(0, hl));
      frag.set(data.subarray(off, off + len), hl);
      const f = new Ipv4Packet(frag);
      f.totalLen = hl + len;
      // Like Linux for a socket in "want PMTU" mode: fragments go without DF.
      f.flagsFrag = (off + len < data.length ? Ipv4Flags.MORE_FRAGMENTS : 0) | (off >> 3);
      f.fillChecksum();
      this.stats.sent++;
      this.#output(frag);
    }
  }

  #fragmentV6(packet: Uint8Array, mtu: number): void {
    const nextHeader = packet[6]!;
    const data = packet.subarray(IPV6_HEADER_LEN);
    const chunk = Math.floor((mtu - IPV6_HEADER_LEN - IPV6_FRAG_HEADER_LEN) / 8) * 8;
    this.#ipv6Ident = (this.#ipv6Ident + 1) >>> 0;
    const ident = this.#ipv6Ident;
    for (let off = 0; off < data.length; off += chunk) {
      const len = Math.min(chunk, data.length - off);
      const frag = new Uint8Array(IPV6_HEADER_LEN + IPV6_FRAG_HEADER_LEN + len);
      frag.set(packet.subarray(0, IPV6_HEADER_LEN));
      const f = new Ipv6Packet(frag);
      f.nextHeader = IpProtocol.IPV6_FRAGMENT;
      f.payloadLen = IPV6_FRAG_HEADER_LEN + len;
      emitIpv6Fragment(
        { nextHeader, fragmentOffset: off, moreFragments: off + len < data.length, ident },
        frag.subarray(IPV6_HEADER_LEN),
      );
      frag.set(data.subarray(off, off + len), IPV6_HEADER_LEN + IPV6_FRAG_HEADER_LEN);
      this.stats.sent++;
      this.#output(frag);
    }
  }

  // ------------------------------------------------------------------------------------------
  // IpOutput

  /**
   * Sends one transport payload from `src` (one of ours) to `dst`. Fragments when the payload
   * does not fit the path MTU.
   * @throws {TypeError} when `src` is not ours or the families differ.
   * @throws {MessageTooLongError} when the payload can not fit one IP datagram.
   */
  send(src: IpBytes, dst: IpBytes, protocol: number, payload: Uint8Array): void {
    if (!this.isLocal(src)) throw new TypeError("Cannot send from an address that is not ours");
    const packet = this._build(src, dst, protocol, payload.length);
    packet.set(payload, packet.length - payload.length);
    this._transmit(packet);
  }

  /**
   * {@link _build} for a transport, after {@link send}'s check of the source. With
   * `outputCopies`, into one buffer the stack keeps: the packet is valid until {@link transmit}
   * returns, and `transmit` comes before the next `build`.
   * @throws {TypeError} when `src` is not ours or the families differ.
   * @throws {MessageTooLongError} when the payload can not fit one IP datagram.
   */
  build(src: IpBytes, dst: IpBytes, protocol: number, payloadLen: number): Uint8Array {
    if (!this.isLocal(src)) throw new TypeError("Cannot send from an address that is not ours");
    if (!this.#outputCopies) return this._build(src, dst, protocol, payloadLen);
    const size = (src.length === 4 ? IPV4_HEADER_LEN : IPV6_HEADER_LEN) + payloadLen;
    if (size > this.#txScratch.length && size <= 65535 + IPV6_HEADER_LEN) {
      this.#txScratch = new Uint8Array(Math.max(size, 2 * this.#txScratch.length));
    }
    return this._build(src, dst, protocol, payloadLen, this.#txScratch);
  }

  /** {@link _transmit} for a transport: sends a packet made by {@link build}. */
  transmit(packet: Uint8Array): void {
    this._transmit(packet);
  }

  maxPayload(dst: IpBytes): number {
    return this.pathMtu(dst) - (dst.length === 4 ? IPV4_HEADER_LEN : IPV6_HEADER_LEN);
  }

  /**
   * Our address of `dst`'s family; with several, the one sharing the longest prefix with `dst`
   * (RFC 6724 rule 8), the first configured on a tie.
   */
  sourceFor(dst: IpBytes): IpBytes | undefined {
    let best: IpBytes | undefined, bestBits = -1;
    for (const a of this.#addresses) {
      if (a.length !== dst.length) continue;
      const bits = commonPrefixBits(a, dst);
      if (bits > bestBits) [best, bestBits] = [a, bits];
    }
    return best;
  }

  isLocal(addr: IpBytes): boolean {
    for (const a of this.#addresses) if (ipEquals(a, addr)) return true;
    return false;
  }

  // ------------------------------------------------------------------------------------------
  // Echo

  /**
   * Sends an ICMP / ICMPv6 Echo Request; the reply arrives through {@link onEchoReply}.
   * @throws {NetUnreachableError} when we have no address of `dst`'s family.
   */
  ping(dst: IpBytes, ident: number, seq: number, data: Uint8Array = new Uint8Array(0)): void {
    const src = this.sourceFor(dst);
    if (!src) {
      throw new NetUnreachableError(
        `Cannot ping: no ${dst.length === 4 ? "IPv4" : "IPv6"} address`,
      );
    }
    this.#icmp.echoRequest(src, dst, ident & 0xffff, seq & 0xffff, data);
  }

  // ------------------------------------------------------------------------------------------
  // Time

  /** The earliest time `tick` has work: reassembly or path MTU expiry, or a transport's timer. */
  pollAt(): number {
    let t = this.#reassembler.pollAt();
    for (const e of this.#pmtu.values()) {
      // Entries are kept in expiry order (refreshed entries are re-inserted).
      if (e.expires < t) t = e.expires;
      break;
    }
    for (const tr of this.#transports.values()) t = Math.min(t, tr.pollAt());
    return t;
  }

  /** Runs timers due at `now`: reassembly timeouts, path MTU expiry, then each transport. */
  tick(now: number): void {
    for (const d of this.#reassembler.expire(now)) {
      this.stats.reassemblyTimeout++;
      // RFC 792 / RFC 8200 4.5: Time Exceeded (reassembly) only if the first fragment arrived.
      if (d.firstFragment) this.#icmp.reassemblyTimeout(now, d.v6, d.firstFragment);
    }
    for (const [key, e] of this.#pmtu) {
      if (e.expires > now) break;
      this.#pmtu.delete(key);
    }
    for (const tr of [...this.#transports.values()]) tr.tick(now);
  }
}
