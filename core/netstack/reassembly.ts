/**
 * Fragment reassembly for IPv4 (RFC 791 3.2, RFC 815) and IPv6 (RFC 8200 4.5).
 *
 * Fragments are copied on arrival (the caller's buffer is not ours to keep) into a list sorted by
 * offset; when the last byte arrives the datagram is copied once into a buffer of its final size,
 * with a header that says "not a fragment", and handed back to be processed like any packet.
 *
 * Policy, where the RFCs leave a choice:
 * - Any overlap that is not an exact duplicate abandons the whole datagram, for both families
 *   (RFC 5722 for IPv6; for IPv4 the same, as Linux does since CVE-2018-5391, instead of RFC 791's
 *   "later data wins", which made overlap attacks on filters possible). Later fragments of an
 *   abandoned datagram are dropped until its timer runs out. An exact duplicate (same offset, same
 *   length) is ignored: the network may duplicate packets.
 * - A datagram whose reassembled size would pass 65535 bytes (IPv4 Total Length, IPv6 Payload
 *   Length) is abandoned ("ping of death").
 * - Memory: fragments cost their length plus a fixed overhead; when the global budget is spent,
 *   new fragments are refused (not older datagrams evicted), and space returns as datagrams
 *   complete or time out.
 * - Timers start with the first fragment and are not refreshed: 30 s for IPv4 (Linux
 *   `ipfrag_time`; RFC 791 suggests 15 s as a lower bound), 60 s for IPv6 (RFC 8200 4.5).
 *
 * @module
 */
import { addrKey } from "../wire/ip.ts";
import { Ipv4Flags, Ipv4Packet } from "../wire/ipv4.ts";
import { IPV6_FRAG_HEADER_LEN, Ipv6FragmentHeader, Ipv6Packet } from "../wire/ipv6.ts";

export interface ReassemblyLimits {
  /** IPv4 reassembly timeout in ms. */
  timeoutV4: number;
  /** IPv6 reassembly timeout in ms. */
  timeoutV6: number;
  /** Global budget for buffered fragments, in bytes (overheads included). */
  memory: number;
}

export const REASSEMBLY_DEFAULTS: ReassemblyLimits = {
  timeoutV4: 30_000,
  timeoutV6: 60_000,
  memory: 4 * 1024 * 1024,
};

/** Accounting cost of one buffered fragment beyond its data (list slot, object, copy header). */
export const FRAGMENT_OVERHEAD = 64;
/** Accounting cost of one datagram being reassembled, beyond its fragments. */
export const DATAGRAM_OVERHEAD = 256;

/** Largest reassembled IPv4 datagram and IPv6 payload (16-bit length fields). */
const MAX_REASSEMBLED = 65535;

/**
 * What happened to a fragment that did not complete a datagram:
 * - `pending`: kept (or an exact duplicate, ignored); the datagram is not complete yet.
 * - `overlap`: it overlapped another fragment, or belongs to a datagram abandoned for that.
 * - `too-big`: the datagram would exceed 65535 bytes; abandoned.
 * - `memory`: the global budget is spent; the fragment was refused.
 * - `malformed`: empty, not a multiple of 8 with more to come, or inconsistent with the end
 *   another fragment declared; the datagram is abandoned when it contradicts it.
 */
export type FragmentStatus = "pending" | "overlap" | "too-big" | "memory" | "malformed";

/** A datagram dropped by {@link Reassembler.expire}. */
export interface ExpiredDatagram {
  v6: boolean;
  /**
   * When the first fragment had arrived: that fragment as received (header and its data), to
   * quote in ICMP Time Exceeded / fragment reassembly time exceeded (RFC 792, RFC 8200 4.5).
   */
  firstFragment?: Uint8Array;
}

interface Fragment {
  start: number;
  end: number;
  data: Uint8Array;
}

interface Datagram {
  expires: number;
  frags: Fragment[];
  /** Sum of the fragments' lengths; they never overlap, so this is the bytes covered. */
  received: number;
  /** Length of the reassembled data once the last fragment has been seen, else -1. */
  total: number;
  /** First fragment's header: IPv4 header, or IPv6 bytes up to the end of the Fragment header. */
  header: Uint8Array | undefined;
  /** IPv6: where the Fragment header starts, and the offset of the Next Header byte naming it. */
  fragAt: number;
  nhAt: number;
  /** IPv6: the Next Header of the first fragment's Fragment header. */
  nextHeader: number;
  cost: number;
  abandoned: boolean;
}

/** Reassembly state for both families. Pure: time is passed in. */
export class Reassembler {
  readonly limits: ReassemblyLimits;
  /** Bytes currently charged against {@link ReassemblyLimits.memory}. */
  memory = 0;
  // One map per family: with a constant timeout and a monotonic clock, insertion order is expiry
  // order, so the first entry is the next deadline.
  #v4 = new Map<string, Datagram>();
  #v6 = new Map<string, Datagram>();

  constructor(limits: Partial<ReassemblyLimits> = {}) {
    this.limits = { ...REASSEMBLY_DEFAULTS, ...limits };
  }

  /** Datagrams in progress (abandoned ones included until they expire). */
  get pending(): number {
    return this.#v4.size + this.#v6.size;
  }

  /**
   * Offers a checked IPv4 fragment (MF set or offset non-zero). Returns the whole datagram, as a
   * new packet with MF and offset cleared, Total Length and checksum rewritten, or a status.
   */
  ipv4(now: number, ip: Ipv4Packet): Uint8Array | FragmentStatus {
    const start = ip.fragmentOffset;
    const data = ip.payload;
    const more = ip.moreFragments;
    // RFC 791: every fragment but the last carries a multiple of 8 octets.
    if (data.length === 0 || (more && (data.length & 7) !== 0)) return "malformed";
    const src = ip.src, dst = ip.dst;
    // RFC 791 3.2: a datagram is identified by source, destination, protocol and identification.
    const key = addrKey(src) + addrKey(dst) + String.fromCharCode(ip.protocol, ip.ident);
    const hl = ip.headerLen;
    const status = this.#offer(
      this.#v4,
      key,
      now + this.limits.timeoutV4,
      start,
      data,
      more,
      MAX_REASSEMBLED - hl,
      start === 0 ? ip.header : undefined,
      0,
      0,
      0,
    );
    if (typeof status === "string") return status;
    return buildV4(status);
  }

  /**
   * Offers an IPv6 fragment. `packet` ends at Payload Length; the Fragment header starts at
   * `fragAt` (already checked to fit) and the Next Header byte that named it is at `nhAt`.
   * Returns the whole packet with the Fragment header removed, or a status.
   */
  ipv6(now: number, packet: Uint8Array, fragAt: number, nhAt: number): Uint8Array | FragmentStatus {
    const fh = new Ipv6FragmentHeader(packet.subarray(fragAt, fragAt + IPV6_FRAG_HEADER_LEN));
    const dataAt = fragAt + IPV6_FRAG_HEADER_LEN;
    const data = packet.subarray(dataAt);
    const start = fh.fragmentOffset;
    const more = fh.moreFragments;
    // RFC 8200 4.5: a fragment with M set whose length is not a multiple of 8 is discarded.
    if (data.length === 0 || (more && (data.length & 7) !== 0)) return "malformed";
    const ip = new Ipv6Packet(packet);
    // RFC 8200 4.5: fragments are matched on source, destination and Identification.
    const id = fh.ident;
    const key = addrKey(ip.src) + addrKey(ip.dst) + String.fromCharCode(id >>> 16, id & 0xffff);
    // RFC 8200 4.5: the reassembled Payload Length (unfragmentable headers + data) is 16 bits.
    const maxEnd = MAX_REASSEMBLED - (fragAt - 40);
    const status = this.#offer(
      this.#v6,
      key,
      now + this.limits.timeoutV6,
      start,
      data,
      more,
      maxEnd,
      start === 0 ? packet.subarray(0, dataAt) : undefined,
      fragAt,
      nhAt,
      fh.nextHeader,
    );
    if (typeof status === "string") return status;
    return buildV6(status);
  }

  #offer(
    map: Map<string, Datagram>,
    key: string,
    expires: number,
    start: number,
    data: Uint8Array,
    more: boolean,
    maxEnd: number,
    header: Uint8Array | undefined,
    fragAt: number,
    nhAt: number,
    nextHeader: number,
  ): Datagram | FragmentStatus {
    const end = start + data.length;
    const cost = data.length + FRAGMENT_OVERHEAD + (header ? header.length : 0);
    let d = map.get(key);
    if (!d) {
      if (end > maxEnd) return "too-big";
      if (this.memory + DATAGRAM_OVERHEAD + cost > this.limits.memory) return "memory";
      d = {
        expires,
        frags: [],
        received: 0,
        total: -1,
        header: undefined,
        fragAt: 0,
        nhAt: 0,
        nextHeader: 0,
        cost: DATAGRAM_OVERHEAD,
        abandoned: false,
      };
      map.set(key, d);
      this.memory += DATAGRAM_OVERHEAD;
    }
    if (d.abandoned) return "overlap";
    if (end > maxEnd) {
      this.#abandon(d);
      return "too-big";
    }
    const frags = d.frags;
    if (!more) {
      // The last fragment fixes the length; it must agree with what is already known.
      const lastEnd = frags.length > 0 ? frags[frags.length - 1]!.end : 0;
      if ((d.total >= 0 && d.total !== end) || lastEnd > end) {
        this.#abandon(d);
        return "malformed";
      }
    } else if (d.total >= 0 && end >= d.total) {
      this.#abandon(d);
      return "malformed";
    }
    // Binary search: i is the first fragment starting at or after `start`.
    let lo = 0, hi = frags.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (frags[mid]!.start < start) lo = mid + 1;
      else hi = mid;
    }
    const next = frags[lo];
    const prev = lo > 0 ? frags[lo - 1] : undefined;
    if (next && next.start === start && next.end === end) return "pending"; // exact duplicate
    if ((next && next.start < end) || (prev && prev.end > start)) {
      // RFC 5722: overlapping fragments abandon the datagram.
      this.#abandon(d);
      return "overlap";
    }
    if (this.memory + cost > this.limits.memory) return "memory";
    frags.splice(lo, 0, { start, end, data: data.slice() });
    d.received += data.length;
    d.cost += cost;
    this.memory += cost;
    if (!more) d.total = end;
    if (header) {
      d.header = header.slice();
      d.fragAt = fragAt;
      d.nhAt = nhAt;
      d.nextHeader = nextHeader;
    }
    if (d.total < 0 || d.received !== d.total) return "pending";
    map.delete(key);
    this.memory -= d.cost;
    return d;
  }

  #abandon(d: Datagram): void {
    this.memory -= d.cost - DATAGRAM_OVERHEAD;
    d.cost = DATAGRAM_OVERHEAD;
    d.frags = [];
    d.header = undefined;
    d.abandoned = true;
  }

  /** The earliest expiry of a datagram in progress, or Infinity. */
  pollAt(): number {
    let t = Infinity;
    for (const m of [this.#v4, this.#v6]) {
      for (const d of m.values()) {
        if (d.expires < t) t = d.expires;
        break;
      }
    }
    return t;
  }

  /**
   * Drops datagrams whose timer ran out at `now`. Abandoned datagrams leave silently; the others
   * are returned (with their first fragment when it had arrived).
   */
  expire(now: number): ExpiredDatagram[] {
    const out: ExpiredDatagram[] = [];
    for (const [m, v6] of [[this.#v4, false], [this.#v6, true]] as const) {
      for (const [key, d] of m) {
        if (d.expires > now) break;
        m.delete(key);
        this.memory -= d.cost;
        if (d.abandoned) continue;
        const first = d.frags[0];
        if (d.header && first && first.start === 0) {
          const f = new Uint8Array(d.header.length + first.data.length);
          f.set(d.header);
          f.set(first.data, d.header.length);
          out.push({ v6, firstFragment: f });
        } else {
          out.push({ v6 });
        }
      }
    }
    return out;
  }
}

function buildV4(d: Datagram): Uint8Array {
  const h = d.header!;
  const out = new Uint8Array(h.length + d.total);
  out.set(h);
  for (const f of d.frags) out.set(f.data, h.length + f.start);
  const ip = new Ipv4Packet(out);
  ip.totalLen = out.length;
  ip.flagsFrag = ip.flagsFrag & Ipv4Flags.DONT_FRAGMENT;
  ip.fillChecksum();
  return out;
}

function buildV6(d: Datagram): Uint8Array {
  const h = d.header!;
  const unfrag = d.fragAt;
  const out = new Uint8Array(unfrag + d.total);
  out.set(h.subarray(0, unfrag));
  for (const f of d.frags) out.set(f.data, unfrag + f.start);
  // RFC 8200 4.5: the Next Header of the last unfragmentable header comes from the first
  // fragment's Fragment header, and Payload Length is recomputed.
  out[d.nhAt] = d.nextHeader;
  new Ipv6Packet(out).payloadLen = out.length - 40;
  return out;
}
