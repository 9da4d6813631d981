/**
 * WireGuard message layouts (paper 5.4). Offsets live here once; the engine reads and writes
 * fields through them. All integers are little-endian.
 *
 * @module
 */

/** Handshake initiation: 148 bytes. */
export const Initiation = {
  type: 0,
  sender: 4,
  ephemeral: 8,
  encryptedStatic: 40, // 32 + 16
  encryptedTimestamp: 88, // 12 + 16
  mac1: 116,
  mac2: 132,
  size: 148,
} as const;

/** Handshake response: 92 bytes. */
export const Response = {
  type: 0,
  sender: 4,
  receiver: 8,
  ephemeral: 12,
  encryptedNothing: 44, // 0 + 16
  mac1: 60,
  mac2: 76,
  size: 92,
} as const;

/** Cookie reply: 64 bytes. */
export const CookieReply = {
  type: 0,
  receiver: 4,
  nonce: 8, // 24
  encryptedCookie: 32, // 16 + 16
  size: 64,
} as const;

/** Transport data: 16-byte header then the AEAD ciphertext. */
export const Transport = {
  type: 0,
  receiver: 4,
  counter: 8,
  content: 16,
} as const;

/** The message type, or 0 when the reserved bytes are not zero (such messages are invalid). */
export function messageType(buf: Uint8Array): number {
  if (buf.length < 4 || buf[1] !== 0 || buf[2] !== 0 || buf[3] !== 0) return 0;
  return buf[0]!;
}

export function readU32(buf: Uint8Array, off: number): number {
  return (buf[off]! | (buf[off + 1]! << 8) | (buf[off + 2]! << 16) | (buf[off + 3]! << 24)) >>> 0;
}

export function writeU32(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v & 0xff;
  buf[off + 1] = (v >>> 8) & 0xff;
  buf[off + 2] = (v >>> 16) & 0xff;
  buf[off + 3] = (v >>> 24) & 0xff;
}

/** Reads a 64-bit counter; returns -1 when it is past 2^53 (see MaxSafeCounter). */
export function readCounter(buf: Uint8Array, off: number): number {
  const lo = readU32(buf, off), hi = readU32(buf, off + 4);
  if (hi >= 0x200000) return -1;
  return hi * 0x1_0000_0000 + lo;
}

export function writeCounter(buf: Uint8Array, off: number, v: number): void {
  writeU32(buf, off, v >>> 0);
  writeU32(buf, off + 4, Math.floor(v / 0x1_0000_0000));
}

/** Starts a message: type byte and three reserved zero bytes. */
export function writeHeader(buf: Uint8Array, type: number): void {
  buf[0] = type;
  buf[1] = 0;
  buf[2] = 0;
  buf[3] = 0;
}
