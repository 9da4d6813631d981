/**
 * Carrying bytes between two stream sockets, one of them usually a tunnel connection:
 *
 * ```text
 *   a.read ─► b.writeAll      until a's end of stream ─► b.closeWrite (half-close carried)
 *   b.read ─► a.writeAll      until b's end of stream ─► a.closeWrite
 *   both ended ─► close both;   a read or write error ─► abort both (a reset, where possible)
 * ```
 *
 * Each direction writes what it read before reading again, so a slow reader on one side fills the
 * other side's receive window instead of our memory. A side that can hand over what it has buffered
 * ({@link Duplex.readChunk}: the tunnel's connections, node sockets) is read that way, so an idle
 * direction waits without holding any buffer and a chunk is written on without another copy. Any
 * other side is read into one buffer per direction that starts at 256 bytes and grows (×4, to
 * 64 KiB) while reads fill it: a pending read holds its buffer, so a buffer allocated at its largest
 * would be kept for the connection's whole life.
 *
 * `Deno.Conn` and `TunnelConn` are {@link Duplex} as they are; a socket from `node:net` (what a
 * socket passed by systemd becomes) is adapted by {@link NodeSocketDuplex}.
 *
 * @module
 */
import type { Socket } from "node:net";

/** The part of `Deno.Conn` that a relay needs. */
export interface Duplex {
  read(p: Uint8Array): Promise<number | null>;
  /**
   * Takes what is buffered now as an array the caller owns (never empty), or null at end of
   * stream: a relay then waits without holding a buffer of its own.
   */
  readChunk?(): Promise<Uint8Array | null>;
  write(p: Uint8Array): Promise<number>;
  /** Writes all of `p`, which the caller gives up (so it need not be copied). */
  writeOwned?(p: Uint8Array): Promise<void>;
  /** Sends end of stream; reading goes on. */
  closeWrite(): Promise<void>;
  close(): void;
  /** Closes with a reset where the transport has one (TCP on the tunnel). */
  abort?(): void;
}

/** How a relay ended: bytes each way, and the error that cut it short, if any. */
export interface RelayResult {
  aToB: number;
  bToA: number;
  error?: Error;
}

/** A relay's first read buffer, and the most it grows to under bulk. */
export const ReadBufferStart = 256;
export const ReadBufferMax = 64 * 1024;

/** The buffer for the next read: four times larger after a read that filled it, up to the most. */
export function nextReadBuffer(buf: Uint8Array<ArrayBuffer>, n: number): Uint8Array<ArrayBuffer> {
  return n === buf.length && buf.length < ReadBufferMax
    ? new Uint8Array(Math.min(buf.length * 4, ReadBufferMax))
    : buf;
}

async function writeAll(to: Duplex, p: Uint8Array): Promise<void> {
  let off = 0;
  while (off < p.length) off += await to.write(p.subarray(off));
}

function quietly(fn: () => unknown): void {
  try {
    const r = fn();
    if (r instanceof Promise) r.catch(() => {});
  } catch {
    // already closed
  }
}

/** Relays until both directions have ended, then closes both sides. */
export async function relay(a: Duplex, b: Duplex): Promise<RelayResult> {
  const result: RelayResult = { aToB: 0, bToA: 0 };
  let failed = false;
  const fail = (e: Error) => {
    if (failed) return;
    failed = true;
    result.error = e;
    for (const side of [a, b]) quietly(() => side.abort ? side.abort() : side.close());
  };
  const pump = async (from: Duplex, to: Duplex, count: (n: number) => void) => {
    try {
      if (from.readChunk) {
        for (;;) {
          const chunk = await from.readChunk();
          if (chunk === null) break;
          await (to.writeOwned ? to.writeOwned(chunk) : writeAll(to, chunk));
          count(chunk.length);
        }
      } else {
        let buf = new Uint8Array(ReadBufferStart);
        for (;;) {
          const n = await from.read(buf);
          if (n === null) break;
          await writeAll(to, buf.subarray(0, n));
          count(n);
          buf = nextReadBuffer(buf, n);
        }
      }
      await to.closeWrite();
    } catch (e) {
      if (!failed) fail(e as Error);
    }
  };
  await Promise.all([
    pump(a, b, (n) => result.aToB += n),
    pump(b, a, (n) => result.bToA += n),
  ]);
  if (!failed) {
    quietly(() => a.close());
    quietly(() => b.close());
  }
  return result;
}

/** Buffered bytes at which a node socket is paused until the relay catches up. */
const NodeHighWater = 256 * 1024;

/**
 * A `node:net` socket as a {@link Duplex}: `data` events are queued (pausing the socket above
 * 256 KiB, so the kernel's window closes), `end` is end of stream. The socket must have been
 * created with `allowHalfOpen: true`, or node would end our side when the peer's FIN arrives.
 */
export class NodeSocketDuplex implements Duplex {
  readonly #socket: Socket;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #ended = false;
  #error: Error | undefined;
  #wake: (() => void) | undefined;

  constructor(socket: Socket) {
    this.#socket = socket;
    socket.on("data", (d: Uint8Array) => {
      this.#queue.push(d);
      this.#queued += d.length;
      if (this.#queued >= NodeHighWater) socket.pause();
      this.#notify();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#notify();
    });
    socket.on("error", (e: Error) => {
      this.#error = e;
      this.#notify();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#notify();
    });
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  async readChunk(): Promise<Uint8Array | null> {
    for (;;) {
      const head = this.#queue.shift();
      if (head) {
        this.#dequeued(head.length);
        return head;
      }
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((r) => this.#wake = r);
    }
  }

  #dequeued(n: number): void {
    this.#queued -= n;
    if (this.#queued < NodeHighWater / 2 && this.#socket.isPaused()) this.#socket.resume();
  }

  async read(p: Uint8Array): Promise<number | null> {
    for (;;) {
      const head = this.#queue[0];
      if (head) {
        const n = Math.min(p.length, head.length);
        p.set(head.subarray(0, n));
        if (n === head.length) this.#queue.shift();
        else this.#queue[0] = head.subarray(n);
        this.#dequeued(n);
        return n;
      }
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((r) => this.#wake = r);
    }
  }

  write(p: Uint8Array): Promise<number> {
    if (this.#error) return Promise.reject(this.#error);
    // A copy: the caller reuses its buffer once this resolves.
    const copy = p.slice();
    return new Promise((resolve, reject) => {
      this.#socket.write(copy, (err?: Error | null) => err ? reject(err) : resolve(copy.length));
    });
  }

  writeOwned(p: Uint8Array): Promise<void> {
    if (this.#error) return Promise.reject(this.#error);
    return new Promise((resolve, reject) => {
      this.#socket.write(p, (err?: Error | null) => err ? reject(err) : resolve());
    });
  }

  closeWrite(): Promise<void> {
    return new Promise((resolve) => this.#socket.end(() => resolve()));
  }

  close(): void {
    this.#socket.destroy();
  }

  abort(): void {
    // Closing with unread data makes the kernel send a reset; resetAndDestroy says so outright.
    const s = this.#socket as Socket & { resetAndDestroy?: () => void };
    if (s.resetAndDestroy) s.resetAndDestroy();
    else s.destroy();
  }
}
