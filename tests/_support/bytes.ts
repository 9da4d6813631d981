/**
 * Byte helpers the interop tests share: random payloads, SHA-256 as hex, and reading a
 * Deno.Conn-shaped stream to its end or to a length.
 *
 * @module
 */

/** `count` random bytes (getRandomValues fills at most 64 KiB a call). */
export function randomBytes(count: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(count);
  for (let off = 0; off < count; off += 65536) {
    crypto.getRandomValues(out.subarray(off, Math.min(count, off + 65536)));
  }
  return out;
}

/** SHA-256 as lowercase hex, as `sha256sum` and python's hexdigest print it. */
export async function sha256(data: Uint8Array): Promise<string> {
  const d = new Uint8Array(
    await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>),
  );
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The chunks joined into one array. */
export function concat(chunks: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  let total = 0;
  for (const c of chunks) total += c.length;
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** Reads a Deno.Conn-like stream to its end. */
export async function readAll(
  conn: { read(p: Uint8Array): Promise<number | null> },
): Promise<Uint8Array<ArrayBuffer>> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(65536);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) return concat(chunks);
    chunks.push(buf.slice(0, n));
  }
}

/** Reads exactly `n` bytes (throws at an early end of stream). */
export async function readExact(
  conn: { read(p: Uint8Array): Promise<number | null> },
  n: number,
): Promise<Uint8Array<ArrayBuffer>> {
  const out = new Uint8Array(n);
  let off = 0;
  while (off < n) {
    const got = await conn.read(out.subarray(off));
    if (got === null) throw new Error(`end of stream after ${off} of ${n} bytes`);
    off += got;
  }
  return out;
}
