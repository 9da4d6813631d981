/**
 * TCP segments (RFC 9293 3.1): a checked view over the bytes ({@link TcpPacket}) and a parsed
 * representation ({@link TcpRepr}) with the options wrapguard speaks: MSS (RFC 9293 3.7.1),
 * window scale and timestamps (RFC 7323), SACK-permitted and SACK blocks (RFC 2018), NOP and
 * EOL. The checksum covers the pseudo-header (RFC 9293 3.1, `checksum.ts`).
 *
 * `TcpPacket.check` does the one length check; after it no accessor can throw or read past the
 * buffer. `TcpRepr.parse` can fill a caller's object so the receive path allocates nothing, and
 * `emitHeader` writes into a buffer the caller allocated once at its final size.
 *
 * @module
 */
import { finish, pseudoHeaderSum, sumWords } from "./checksum.ts";
import type { IpBytes } from "./addr.ts";
import { IpProtocol } from "./ip.ts";

/** Length of the fixed header (data offset 5). */
export const TCP_HEADER_LEN = 20;
/** Longest header: data offset 15. */
export const TCP_MAX_HEADER_LEN = 60;
/** Room for options after the fixed header. */
export const TCP_MAX_OPTIONS_LEN = TCP_MAX_HEADER_LEN - TCP_HEADER_LEN;
/** RFC 7323 2.3: a shift count above 14 is used as 14. */
export const TCP_MAX_WINDOW_SCALE = 14;
/** RFC 2018 3: at most four blocks fit in 40 bytes of options. */
export const TCP_MAX_SACK_BLOCKS = 4;

/** Field offsets (RFC 9293 3.1, figure 1). */
export const TcpField = {
  SRC_PORT: 0,
  DST_PORT: 2,
  SEQ_NUM: 4,
  ACK_NUM: 8,
  /** Data offset in the high nibble, in 32-bit words. */
  DATA_OFFSET: 12,
  FLAGS: 13,
  WINDOW: 14,
  CHECKSUM: 16,
  URGENT: 18,
  OPTIONS: 20,
} as const;

/** Control bits (RFC 9293 3.1; ECE/CWR from RFC 3168). */
export const TcpFlag = {
  FIN: 0x01,
  SYN: 0x02,
  RST: 0x04,
  PSH: 0x08,
  ACK: 0x10,
  URG: 0x20,
  ECE: 0x40,
  CWR: 0x80,
} as const;

/** Option kinds (IANA "TCP Option Kind Numbers"). */
export const TcpOption = {
  EOL: 0,
  NOP: 1,
  MSS: 2,
  WINDOW_SCALE: 3,
  SACK_PERMITTED: 4,
  SACK: 5,
  TIMESTAMP: 8,
} as const;

/** Option lengths for the kinds with a fixed length. */
const OptionLen = { MSS: 4, WINDOW_SCALE: 3, SACK_PERMITTED: 2, TIMESTAMP: 10 } as const;

const EMPTY = new Uint8Array(0);

function get16(b: Uint8Array, o: number): number {
  return (b[o]! << 8) | b[o + 1]!;
}

function get32(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
}

function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 8;
  b[o + 1] = v;
}

function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = v >>> 16;
  b[o + 2] = v >>> 8;
  b[o + 3] = v;
}

/**
 * The TCP checksum of `segment` (header and data) between `src` and `dst`, with whatever the
 * checksum field holds counted in: 0 over a correct segment, the value to store when the field
 * was zeroed.
 */
export function tcpChecksum(segment: Uint8Array, src: IpBytes, dst: IpBytes): number {
  const pseudo = pseudoHeaderSum(src, dst, IpProtocol.TCP, segment.length);
  return finish(sumWords(segment, 0, segment.length, pseudo));
}

/**
 * A checked view over a TCP segment.
 *
 * @example
 * ```ts
 * import { TcpPacket } from "./tcp.ts";
 * const bytes = new Uint8Array(20);
 * bytes[12] = 5 << 4; // data offset: 5 words
 * const p = TcpPacket.check(bytes);
 * console.assert(p !== undefined && p.payload.length === 0);
 * ```
 */
export class TcpPacket {
  readonly buffer: Uint8Array;

  private constructor(buffer: Uint8Array) {
    this.buffer = buffer;
  }

  /**
   * The view when `buffer` holds at least a fixed header and the header length it declares;
   * undefined otherwise. Nothing else is read here.
   */
  static check(buffer: Uint8Array): TcpPacket | undefined {
    if (buffer.length < TCP_HEADER_LEN) return undefined;
    const headerLen = (buffer[TcpField.DATA_OFFSET]! >> 4) * 4;
    if (headerLen < TCP_HEADER_LEN || headerLen > buffer.length) return undefined;
    return new TcpPacket(buffer);
  }

  get srcPort(): number {
    return get16(this.buffer, TcpField.SRC_PORT);
  }
  set srcPort(v: number) {
    put16(this.buffer, TcpField.SRC_PORT, v);
  }
  get dstPort(): number {
    return get16(this.buffer, TcpField.DST_PORT);
  }
  set dstPort(v: number) {
    put16(this.buffer, TcpField.DST_PORT, v);
  }
  get seqNumber(): number {
    return get32(this.buffer, TcpField.SEQ_NUM);
  }
  set seqNumber(v: number) {
    put32(this.buffer, TcpField.SEQ_NUM, v);
  }
  get ackNumber(): number {
    return get32(this.buffer, TcpField.ACK_NUM);
  }
  set ackNumber(v: number) {
    put32(this.buffer, TcpField.ACK_NUM, v);
  }
  /** Header length in bytes (data offset × 4), checked to lie within the buffer. */
  get headerLen(): number {
    return (this.buffer[TcpField.DATA_OFFSET]! >> 4) * 4;
  }
  get flags(): number {
    return this.buffer[TcpField.FLAGS]!;
  }
  set flags(v: number) {
    this.buffer[TcpField.FLAGS] = v;
  }
  get window(): number {
    return get16(this.buffer, TcpField.WINDOW);
  }
  set window(v: number) {
    put16(this.buffer, TcpField.WINDOW, v);
  }
  get checksum(): number {
    return get16(this.buffer, TcpField.CHECKSUM);
  }
  set checksum(v: number) {
    put16(this.buffer, TcpField.CHECKSUM, v);
  }
  get urgent(): number {
    return get16(this.buffer, TcpField.URGENT);
  }
  /** The option bytes (a view). */
  get options(): Uint8Array {
    return this.buffer.subarray(TcpField.OPTIONS, this.headerLen);
  }
  /** The data after the header (a view). */
  get payload(): Uint8Array {
    return this.buffer.subarray(this.headerLen);
  }

  /** True when the checksum over the pseudo-header and the whole buffer is right. */
  checksumValid(src: IpBytes, dst: IpBytes): boolean {
    return tcpChecksum(this.buffer, src, dst) === 0;
  }

  /** Computes and stores the checksum over the pseudo-header and the whole buffer. */
  fillChecksum(src: IpBytes, dst: IpBytes): void {
    put16(this.buffer, TcpField.CHECKSUM, 0);
    put16(this.buffer, TcpField.CHECKSUM, tcpChecksum(this.buffer, src, dst));
  }
}

/**
 * A parsed segment. Absent options are `undefined` (MSS, window scale) or `false`
 * (SACK-permitted, timestamp). SACK blocks are kept as `[left, right)` sequence pairs in
 * {@link sackBlocks}, `sackCount` of them.
 *
 * @example
 * ```ts
 * import { TcpFlag, TcpPacket, TcpRepr } from "./tcp.ts";
 * const src = new Uint8Array([10, 0, 0, 1]), dst = new Uint8Array([10, 0, 0, 2]);
 * const syn = new TcpRepr();
 * syn.srcPort = 40000;
 * syn.dstPort = 80;
 * syn.seq = 1000;
 * syn.flags = TcpFlag.SYN;
 * syn.window = 65535;
 * syn.mss = 1380;
 * const bytes = syn.toBytes(src, dst);
 * const back = TcpRepr.parse(TcpPacket.check(bytes)!)!;
 * console.assert(back.mss === 1380 && back.seq === 1000);
 * ```
 */
export class TcpRepr {
  srcPort = 0;
  dstPort = 0;
  seq = 0;
  /** Meaningful when `flags` has ACK. */
  ack = 0;
  flags = 0;
  /** The window field as sent (not scaled). */
  window = 0;
  urgent = 0;
  mss: number | undefined = undefined;
  /** The shift count as sent (parse clamps it to 14, RFC 7323 2.3). */
  windowScale: number | undefined = undefined;
  sackPermitted = false;
  timestamp = false;
  tsVal = 0;
  tsEcr = 0;
  sackCount = 0;
  /** `[left0, right0, left1, right1, …]`, `sackCount` pairs. */
  readonly sackBlocks: Uint32Array = new Uint32Array(2 * TCP_MAX_SACK_BLOCKS);
  /** The data; after `parse`, a view into the parsed buffer. */
  payload: Uint8Array = EMPTY;

  /** Clears every field for reuse. */
  reset(): this {
    this.srcPort =
      this.dstPort =
      this.seq =
      this.ack =
      this.flags =
        0;
    this.window = this.urgent = 0;
    this.mss = this.windowScale = undefined;
    this.sackPermitted = this.timestamp = false;
    this.tsVal = this.tsEcr = this.sackCount = 0;
    this.payload = EMPTY;
    return this;
  }

  /** Appends a SACK block; ignored beyond four. */
  addSack(left: number, right: number): this {
    if (this.sackCount < TCP_MAX_SACK_BLOCKS) {
      this.sackBlocks[2 * this.sackCount] = left;
      this.sackBlocks[2 * this.sackCount + 1] = right;
      this.sackCount++;
    }
    return this;
  }

  /**
   * Parses a checked packet into `into` (a new object by default). Undefined when the options
   * are malformed: a length below 2 or running past the header (RFC 9293 3.1 asks that an
   * illegal length not crash the receiver; the segment is dropped). Known options with a wrong
   * length and unknown options are skipped.
   */
  static parse(packet: TcpPacket, into: TcpRepr = new TcpRepr()): TcpRepr | undefined {
    const b = packet.buffer;
    const r = into.reset();
    r.srcPort = get16(b, TcpField.SRC_PORT);
    r.dstPort = get16(b, TcpField.DST_PORT);
    r.seq = get32(b, TcpField.SEQ_NUM);
    r.ack = get32(b, TcpField.ACK_NUM);
    r.flags = b[TcpField.FLAGS]!;
    r.window = get16(b, TcpField.WINDOW);
    r.urgent = get16(b, TcpField.URGENT);
    const end = packet.headerLen;
    let i: number = TcpField.OPTIONS;
    while (i < end) {
      const kind = b[i]!;
      if (kind === TcpOption.EOL) break;
      if (kind === TcpOption.NOP) {
        i++;
        continue;
      }
      if (i + 1 >= end) return undefined;
      const len = b[i + 1]!;
      if (len < 2 || i + len > end) return undefined;
      switch (kind) {
        case TcpOption.MSS:
          if (len === OptionLen.MSS) r.mss = get16(b, i + 2);
          break;
        case TcpOption.WINDOW_SCALE:
          if (len === OptionLen.WINDOW_SCALE) {
            r.windowScale = Math.min(b[i + 2]!, TCP_MAX_WINDOW_SCALE);
          }
          break;
        case TcpOption.SACK_PERMITTED:
          if (len === OptionLen.SACK_PERMITTED) r.sackPermitted = true;
          break;
        case TcpOption.SACK:
          if ((len - 2) % 8 === 0 && len > 2) {
            const n = Math.min((len - 2) / 8, TCP_MAX_SACK_BLOCKS);
            for (let k = 0; k < n; k++) r.addSack(get32(b, i + 2 + 8 * k), get32(b, i + 6 + 8 * k));
          }
          break;
        case TcpOption.TIMESTAMP:
          if (len === OptionLen.TIMESTAMP) {
            r.timestamp = true;
            r.tsVal = get32(b, i + 2);
            r.tsEcr = get32(b, i + 6);
          }
          break;
      }
      i += len;
    }
    r.payload = b.subarray(end);
    return r;
  }

  /** Bytes of options without SACK blocks, as emitted (a multiple of 4). */
  #baseOptionsLen(): number {
    let n = 0;
    if (this.mss !== undefined) n += 4;
    // SACK-permitted rides in the two bytes before the timestamp, as Linux lays out a SYN.
    if (this.timestamp) n += 12;
    else if (this.sackPermitted) n += 4;
    if (this.windowScale !== undefined) n += 4;
    return n;
  }

  /** How many SACK blocks fit beside the other options (RFC 2018 3: three with timestamps). */
  #sackBlocksEmitted(base: number): number {
    if (this.sackCount === 0) return 0;
    const room = Math.floor((TCP_MAX_OPTIONS_LEN - base - 4) / 8);
    return Math.max(0, Math.min(this.sackCount, room));
  }

  /** Bytes of options as emitted (a multiple of 4). */
  get optionsLen(): number {
    const base = this.#baseOptionsLen();
    const n = this.#sackBlocksEmitted(base);
    return base + (n > 0 ? 4 + 8 * n : 0);
  }

  get headerLen(): number {
    return TCP_HEADER_LEN + this.optionsLen;
  }

  /** Header, options and payload. */
  get bufferLen(): number {
    return this.headerLen + this.payload.length;
  }

  /**
   * Writes the header and options into `buf[0, headerLen)` with a zero checksum and returns the
   * header length. The caller writes the data after it and then the checksum.
   */
  emitHeader(buf: Uint8Array): number {
    const base = this.#baseOptionsLen();
    const sacks = this.#sackBlocksEmitted(base);
    const hl = TCP_HEADER_LEN + base + (sacks > 0 ? 4 + 8 * sacks : 0);
    if (buf.length < hl) {
      throw new RangeError(`Cannot emit a ${hl}-byte TCP header into ${buf.length} bytes`);
    }
    put16(buf, TcpField.SRC_PORT, this.srcPort);
    put16(buf, TcpField.DST_PORT, this.dstPort);
    put32(buf, TcpField.SEQ_NUM, this.seq);
    put32(buf, TcpField.ACK_NUM, this.flags & TcpFlag.ACK ? this.ack : 0);
    buf[TcpField.DATA_OFFSET] = (hl / 4) << 4;
    buf[TcpField.FLAGS] = this.flags;
    put16(buf, TcpField.WINDOW, this.window);
    put16(buf, TcpField.CHECKSUM, 0);
    put16(buf, TcpField.URGENT, this.urgent);
    let i: number = TcpField.OPTIONS;
    if (this.mss !== undefined) {
      buf[i++] = TcpOption.MSS;
      buf[i++] = OptionLen.MSS;
      put16(buf, i, this.mss);
      i += 2;
    }
    if (this.timestamp) {
      if (this.sackPermitted) {
        buf[i++] = TcpOption.SACK_PERMITTED;
        buf[i++] = OptionLen.SACK_PERMITTED;
      } else {
        buf[i++] = TcpOption.NOP;
        buf[i++] = TcpOption.NOP;
      }
      buf[i++] = TcpOption.TIMESTAMP;
      buf[i++] = OptionLen.TIMESTAMP;
      put32(buf, i, this.tsVal);
      put32(buf, i + 4, this.tsEcr);
      i += 8;
    } else if (this.sackPermitted) {
      buf[i++] = TcpOption.NOP;
      buf[i++] = TcpOption.NOP;
      buf[i++] = TcpOption.SACK_PERMITTED;
      buf[i++] = OptionLen.SACK_PERMITTED;
    }
    if (this.windowScale !== undefined) {
      buf[i++] = TcpOption.NOP;
      buf[i++] = TcpOption.WINDOW_SCALE;
      buf[i++] = OptionLen.WINDOW_SCALE;
      buf[i++] = this.windowScale;
    }
    if (sacks > 0) {
      buf[i++] = TcpOption.NOP;
      buf[i++] = TcpOption.NOP;
      buf[i++] = TcpOption.SACK;
      buf[i++] = 2 + 8 * sacks;
      for (let k = 0; k < sacks; k++) {
        put32(buf, i, this.sackBlocks[2 * k]!);
        put32(buf, i + 4, this.sackBlocks[2 * k + 1]!);
        i += 8;
      }
    }
    return hl;
  }

  /** Writes the whole segment (header, options, payload, checksum) into `buf[0, bufferLen)`. */
  emit(buf: Uint8Array, src: IpBytes, dst: IpBytes): void {
    const hl = this.emitHeader(buf);
    const end = hl + this.payload.length;
    buf.set(this.payload, hl);
    const seg = buf.subarray(0, end);
    put16(seg, TcpField.CHECKSUM, tcpChecksum(seg, src, dst));
  }

  /** The segment in a new buffer of exactly its length. */
  toBytes(src: IpBytes, dst: IpBytes): Uint8Array {
    const buf = new Uint8Array(this.bufferLen);
    this.emit(buf, src, dst);
    return buf;
  }
}
