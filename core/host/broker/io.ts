/**
 * Exact reads and whole writes on the broker's Unix connections. Reads never ask for more than
 * the record being read: the bytes after a request (the filler, then the program's data) must stay
 * in the socket until the broker decides to take them, because their presence is what keeps a
 * connecting program's socket unwritable (PROTOCOL.md "Readiness").
 *
 * @module
 */

/** Something to read bytes from, like `Deno.Conn`. */
export interface Reader {
  read(p: Uint8Array): Promise<number | null>;
}

/** Something to write bytes to, like `Deno.Conn`. */
export interface Writer {
  write(p: Uint8Array): Promise<number>;
}

/** Reads exactly `n` bytes; null when the stream ends first. */
export async function readExact(conn: Reader, n: number): Promise<Uint8Array | null> {
  const buf = new Uint8Array(n);
  let off = 0;
  while (off < n) {
    const r = await conn.read(buf.subarray(off));
    if (r === null) return null;
    off += r;
  }
  return buf;
}

/**
 * Where discarded bytes land. One for every connection: what is read into it is never looked at,
 * so reads that overlap may share it, and a connecting program's filler (about 100 KiB, see
 * PROTOCOL.md "Readiness") costs no buffer of its own.
 */
let discardScratch: Uint8Array | undefined;

/** Reads and discards exactly `n` bytes, in bounded pieces; false when the stream ends first. */
export async function discardExact(conn: Reader, n: number): Promise<boolean> {
  const buf = discardScratch ??= new Uint8Array(64 * 1024);
  while (n > 0) {
    const r = await conn.read(buf.subarray(0, Math.min(n, buf.length)));
    if (r === null) return false;
    n -= r;
  }
  return true;
}

/** Writes all of `data` (a socket may take it in pieces). */
export async function writeAll(conn: Writer, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}
