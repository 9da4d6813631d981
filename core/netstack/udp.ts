/**
 * UDP sockets on the stack (RFC 768), with the kernel's rules where a program can tell:
 * bind conflicts raise EADDRINUSE, a connected socket only hears its peer (and a datagram from
 * anyone else is answered with Port Unreachable, as Linux does when no socket matches), ICMP
 * errors reach connected sockets, ephemeral ports come from 49152-65535 (RFC 6335) in a
 * randomised order (RFC 6056 algorithm 1).
 *
 * @module
 */
import { type IpBytes, ipEquals, unmapIPv4 } from "../wire/addr.ts";
import { IpProtocol } from "../wire/ip.ts";
import { IPV4_HEADER_LEN } from "../wire/ipv4.ts";
import { IPV6_HEADER_LEN } from "../wire/ipv6.ts";
import { emitUdp, UDP_HEADER_LEN, UdpPacket } from "../wire/udp.ts";
import {
  AddrInUseError,
  AddrNotAvailableError,
  MessageTooLongError,
  NetUnreachableError,
} from "./ip_errors.ts";
import type { Stack } from "./stack.ts";
import type { IcmpErrorKind } from "./types.ts";

/** IANA dynamic ports (RFC 6335 6). */
export const EPHEMERAL_FIRST = 49152;
export const EPHEMERAL_LAST = 65535;

/** Largest UDP payload over IPv4: Total Length 65535 - 20 (IP) - 8 (UDP). */
export const UDP_MAX_PAYLOAD_V4 = 65535 - IPV4_HEADER_LEN - UDP_HEADER_LEN;
/** Largest UDP payload over IPv6: UDP Length is 16 bits (no jumbograms, RFC 2675). */
export const UDP_MAX_PAYLOAD_V6 = 65535 - UDP_HEADER_LEN;

export interface UdpBindOptions {
  /** One of the stack's addresses; undefined binds the wildcard of both families. */
  address?: IpBytes;
  /** 0 or undefined picks an ephemeral port. */
  port?: number;
  /**
   * With no `address`: the wildcard of this family only, as an `AF_INET` socket or an
   * `AF_INET6` one with `IPV6_V6ONLY` binds it. Such a socket shares its port with one of the
   * other family (a server that binds `0.0.0.0:P` and `[::]:P` apart, as dnsmasq does).
   */
  family?: 4 | 6;
  /**
   * Report ICMP errors on an unconnected socket too (Linux `IP_RECVERR`). Connected sockets
   * always get them.
   */
  recvErr?: boolean;
}

/** What {@link UdpLayer._input} did with a datagram. */
export type UdpInputResult = "delivered" | "no-port" | "malformed" | "checksum";

function familyOf(addr: IpBytes): 4 | 6 {
  return addr.length === 4 ? 4 : 6;
}

function checkPort(port: number, what: string): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`Cannot use ${what} ${port}: expected an integer 0-65535`);
  }
}

/** A UDP socket; create with {@link UdpLayer.bind}. */
export class UdpSocket {
  /**
   * A datagram for this socket. `data` is a view into the received packet, valid only during
   * the call: copy it (`data.slice()`) to keep it. The addresses are the socket's to keep.
   */
  onDatagram?: (data: Uint8Array, srcAddr: IpBytes, srcPort: number, dstAddr: IpBytes) => void;
  /**
   * An ICMP error about a datagram this socket sent, e.g. `port-unreachable` (ECONNREFUSED on
   * a connected socket). `addr`/`port` are where that datagram was going.
   */
  onError?: (kind: IcmpErrorKind, addr: IpBytes, port: number) => void;

  readonly #layer: UdpLayer;
  readonly #stack: Stack;
  readonly #port: number;
  /** The address given to bind (undefined = wildcard). */
  readonly #bound: IpBytes | undefined;
  /** The address in use: the bound one, or after connect() on a wildcard, the source chosen. */
  #local: IpBytes | undefined;
  #remote: IpBytes | undefined;
  #remotePort = 0;
  #closed = false;
  /** With a wildcard bind: the one family it serves, or undefined for both. */
  readonly #family: 4 | 6 | undefined;
  /** @internal */
  readonly recvErr: boolean;

  /** @internal Use {@link UdpLayer.bind}. */
  constructor(
    layer: UdpLayer,
    stack: Stack,
    address: IpBytes | undefined,
    port: number,
    recvErr: boolean,
    family?: 4 | 6,
  ) {
    this.#layer = layer;
    this.#stack = stack;
    this.#bound = address;
    this.#local = address;
    this.#port = port;
    this.recvErr = recvErr;
    this.#family = address === undefined ? family : undefined;
  }

  /** The local address, or undefined for the wildcard (what getsockname(2) shows). */
  get localAddress(): IpBytes | undefined {
    return this.#local;
  }
  get localPort(): number {
    return this.#port;
  }
  /** The peer after {@link connect}. */
  get remoteAddress(): IpBytes | undefined {
    return this.#remote;
  }
  get remotePort(): number | undefined {
    return this.#remote ? this.#remotePort : undefined;
  }
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Fixes the peer: `send(data)` goes there and only its datagrams are delivered. On a wildcard
   * socket the local address becomes the source chosen for `addr`, as connect(2) does.
   * @throws {NetUnreachableError} when no address of that family is ours.
   */
  connect(addr: IpBytes, port: number): void {
    this.#checkOpen();
    checkPort(port, "port");
    if (port === 0) throw new RangeError("Cannot connect to port 0");
    addr = unmapIPv4(addr);
    const src = this.#sourceFor(addr);
    this.#local = src.slice();
    this.#remote = addr.slice();
    this.#remotePort = port;
  }

  /** Forgets the peer (connect(2) with AF_UNSPEC); the local address reverts to the bound one. */
  disconnect(): void {
    this.#remote = undefined;
    this.#remotePort = 0;
    this.#local = this.#bound;
  }

  /** Sends to the connected peer. */
  send(data: Uint8Array): void;
  /** Sends to `dst`:`dstPort`. */
  send(dst: IpBytes, dstPort: number, data: Uint8Array): void;
  /**
   * @throws {TypeError} when closed, or unconnected without a destination (EDESTADDRREQ).
   * @throws {NetUnreachableError} when no address of the destination's family is ours.
   * @throws {MessageTooLongError} when `data` can not fit one datagram (EMSGSIZE).
   */
  send(a: IpBytes, b?: number, c?: Uint8Array): void {
    this.#checkOpen();
    let dst: IpBytes, port: number, data: Uint8Array;
    if (b === undefined) {
      if (!this.#remote) throw new TypeError("Cannot send without a destination: not connected");
      dst = this.#remote;
      port = this.#remotePort;
      data = a;
    } else {
      if (!c) throw new TypeError("Cannot send: no data");
      dst = unmapIPv4(a);
      port = b;
      data = c;
      checkPort(port, "port");
      if (port === 0) throw new RangeError("Cannot send to port 0");
    }
    const src = this.#sourceFor(dst);
    const max = dst.length === 4 ? UDP_MAX_PAYLOAD_V4 : UDP_MAX_PAYLOAD_V6;
    if (data.length > max) {
      throw new MessageTooLongError(
        `Cannot send a ${data.length}-byte UDP datagram: at most ${max} fit`,
      );
    }
    const stack = this.#stack;
    // One allocation at the final size; the IP layer fragments it if the path MTU is smaller.
    const packet = stack._build(src, dst, IpProtocol.UDP, UDP_HEADER_LEN + data.length);
    const hl = dst.length === 4 ? IPV4_HEADER_LEN : IPV6_HEADER_LEN;
    emitUdp(
      { srcPort: this.#port, dstPort: port, payloadLen: data.length },
      packet.subarray(hl),
      src,
      dst,
      data,
    );
    stack._transmit(packet);
  }

  /** Releases the port. Further sends throw; nothing more is delivered. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#layer._remove(this);
  }

  #checkOpen(): void {
    if (this.#closed) throw new TypeError("Cannot use a closed UDP socket");
  }

  #sourceFor(dst: IpBytes): IpBytes {
    if (dst.length !== 4 && dst.length !== 16) {
      throw new TypeError(`Cannot use an address of ${dst.length} bytes`);
    }
    const local = this.#local;
    if (local) {
      if (local.length !== dst.length) {
        throw new NetUnreachableError(
          "Cannot reach an address of the other family from a socket bound to one address",
        );
      }
      return local;
    }
    const src = this.#stack.sourceFor(dst);
    if (!src) {
      throw new NetUnreachableError(
        `Cannot send: no ${dst.length === 4 ? "IPv4" : "IPv6"} address on this stack`,
      );
    }
    return src;
  }

  /** @internal Would this socket accept a datagram from `src`:`srcPort` to `dst`? 0 = no,
   * else a score (specific address and connected peer rank higher, as in Linux). */
  _score(src: IpBytes, srcPort: number, dst: IpBytes): number {
    if (this.#family !== undefined && familyOf(dst) !== this.#family) return 0;
    let score = 1;
    if (this.#local) {
      if (!ipEquals(this.#local, dst)) return 0;
      score += 2;
    }
    if (this.#remote) {
      if (this.#remotePort !== srcPort || !ipEquals(this.#remote, src)) return 0;
      score += 4;
    }
    return score;
  }

  /** @internal */
  _bindConflicts(address: IpBytes | undefined, family: 4 | 6 | undefined): boolean {
    // Without SO_REUSEADDR: the wildcard conflicts with every address on the port, and an
    // address with itself; a one-family wildcard only within its family.
    const mine = this.#local;
    const myFamily = mine ? familyOf(mine) : this.#family;
    const theirs = address ? familyOf(address) : family;
    if (myFamily !== undefined && theirs !== undefined && myFamily !== theirs) return false;
    return mine === undefined || address === undefined || ipEquals(mine, address);
  }
}

/** The UDP half of {@link Stack}: sockets by port, and demux of incoming datagrams. */
export class UdpLayer {
  readonly #stack: Stack;
  readonly #ports = new Map<number, UdpSocket[]>();

  /** @internal Created by the stack. */
  constructor(stack: Stack) {
    this.#stack = stack;
  }

  /** Number of open sockets. */
  get size(): number {
    let n = 0;
    for (const s of this.#ports.values()) n += s.length;
    return n;
  }

  /**
   * Opens a socket.
   * @throws {AddrInUseError} when the address and port are taken.
   * @throws {AddrNotAvailableError} when `address` is not one of the stack's.
   * @throws {RangeError} for a port outside 0-65535.
   * @example A UDP echo server
   * ```ts
   * import { Stack } from "./stack.ts";
   * import { parseIP } from "../wire/addr.ts";
   *
   * const stack = new Stack({ addresses: [parseIP("10.0.0.1")!], mtu: 1420, output: () => {} });
   * const s = stack.udp.bind({ port: 7 });
   * s.onDatagram = (data, from, port) => s.send(from, port, data);
   * ```
   */
  bind(options: UdpBindOptions = {}): UdpSocket {
    let address = options.address === undefined ? undefined : unmapIPv4(options.address);
    if (address !== undefined) {
      if (!this.#stack.isLocal(address)) {
        throw new AddrNotAvailableError("Cannot bind to an address that is not the stack's");
      }
      address = address.slice();
    }
    let port = options.port ?? 0;
    checkPort(port, "port");
    const family = address === undefined ? options.family : undefined;
    if (port === 0) port = this.#ephemeral(address, family);
    else if (this.#conflicts(address, family, port)) {
      throw new AddrInUseError(`Cannot bind UDP port ${port}: address already in use`);
    }
    const s = new UdpSocket(this, this.#stack, address, port, options.recvErr ?? false, family);
    const list = this.#ports.get(port);
    if (list) list.push(s);
    else this.#ports.set(port, [s]);
    return s;
  }

  #conflicts(address: IpBytes | undefined, family: 4 | 6 | undefined, port: number): boolean {
    const list = this.#ports.get(port);
    if (!list) return false;
    for (const s of list) if (s._bindConflicts(address, family)) return true;
    return false;
  }

  /** RFC 6056 3.3.1: start at a random port, probe upwards. */
  #ephemeral(address: IpBytes | undefined, family: 4 | 6 | undefined): number {
    const count = EPHEMERAL_LAST - EPHEMERAL_FIRST + 1;
    const start = Math.floor(this.#stack._random() * count) % count;
    for (let i = 0; i < count; i++) {
      const port = EPHEMERAL_FIRST + ((start + i) % count);
      if (!this.#conflicts(address, family, port)) return port;
    }
    throw new AddrInUseError("Cannot bind UDP: every ephemeral port is in use");
  }

  /** @internal */
  _remove(s: UdpSocket): void {
    const list = this.#ports.get(s.localPort);
    if (!list) return;
    const i = list.indexOf(s);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.#ports.delete(s.localPort);
  }

  /** @internal A datagram addressed to us; the stack counts the result. */
  _input(
    _now: number,
    v6: boolean,
    src: IpBytes,
    dst: IpBytes,
    payload: Uint8Array,
  ): UdpInputResult {
    const udp = UdpPacket.check(payload);
    if (typeof udp === "string") return "malformed";
    // RFC 768: zero means "no checksum" over IPv4; RFC 8200 8.1: over IPv6 it is invalid.
    if (udp.checksum === 0) {
      if (v6) return "checksum";
    } else if (!udp.verifyChecksum(src, dst)) {
      return "checksum";
    }
    const dstPort = udp.dstPort, srcPort = udp.srcPort;
    // Source port 0 is allowed (RFC 768: "optional"); destination port 0 reaches nobody.
    const list = dstPort === 0 ? undefined : this.#ports.get(dstPort);
    let best: UdpSocket | undefined, bestScore = 0;
    if (list) {
      for (const s of list) {
        const score = s._score(src, srcPort, dst);
        if (score > bestScore) [best, bestScore] = [s, score];
      }
    }
    if (!best) return "no-port";
    best.onDatagram?.(udp.payload, src, srcPort, dst);
    return "delivered";
  }

  /**
   * @internal An ICMP error quoting a datagram we sent from `src` to `dst`. Goes to the socket
   * that sent it when it is connected to that peer, or asked for errors (`recvErr`).
   */
  _icmpError(
    _now: number,
    kind: IcmpErrorKind,
    src: IpBytes,
    dst: IpBytes,
    quoted: Uint8Array,
  ): boolean {
    if (quoted.length < UDP_HEADER_LEN) return false;
    const srcPort = (quoted[0]! << 8) | quoted[1]!;
    const dstPort = (quoted[2]! << 8) | quoted[3]!;
    const list = this.#ports.get(srcPort);
    if (!list) return false;
    let told = false;
    for (const s of [...list]) {
      const local = s.localAddress;
      if (local && !ipEquals(local, src)) continue;
      const remote = s.remoteAddress;
      if (remote) {
        if (s.remotePort !== dstPort || !ipEquals(remote, dst)) continue;
      } else if (!s.recvErr) {
        continue;
      }
      told = true;
      s.onError?.(kind, dst, dstPort);
    }
    return told;
  }
}
