/**
 * The engine's UDP socket through the batched helper (native/udpio.c) loaded with Deno FFI.
 *
 * ```text
 * receive: wgio_recv on a Deno worker thread (nonblocking symbol) ─► up to 64 datagrams in #rx
 *          ─► one copy each into its own array (the device decrypts in place and the stack may
 *             keep the packet) ─► onDatagram ─► next wgio_recv
 * send:    slot() hands out the next slot of #tx, which the device seals a transport message
 *          straight into (send() copies other datagrams there) ─► one wgio_send (sendmmsg) per
 *          batch, at the end of the current JavaScript turn, or when a 65th slot is asked for
 * ```
 *
 * The helper is loaded once per process ({@link udpHelper}): its bytes are written to a fresh
 * 0700 directory under /tmp, opened, and removed at once (the mapping stays). The CLI grants
 * `--allow-ffi=/tmp` only for this and revokes ffi once the tunnel is up, before it reads a packet.
 * The same library carries the transport AEAD (native/aead.c) and X25519 (native/x25519.c): loading
 * it also opens libcrypto or libsodium, there and then (before any sandbox), and offers that AEAD
 * to crypto.ts (aead_native.ts), which takes it only if it reproduces noble, and that X25519 to
 * x25519.ts (x25519_native.ts), which takes it only if it reproduces RFC 7748.
 *
 * @module
 */
import { udpHelpers } from "../../../native/build/embedded.ts";
import { type IpBytes, parseIP } from "../../wire/addr.ts";
import type { Endpoint } from "../../wireguard/peer.ts";
import { type NativeAeadState, offerNativeAead } from "../../wireguard/aead_native.ts";
import { type NativeX25519State, offerNativeX25519 } from "../../wireguard/x25519_native.ts";
import { loadX25519Fallback } from "../../wireguard/x25519.ts";
import type { UdpTransport, UdpTransportOptions } from "./udp.ts";

const Symbols = {
  wgio_version: { parameters: [], result: "i32" },
  wgio_open: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  wgio_port: { parameters: ["i32"], result: "i32" },
  wgio_rcvbuf: { parameters: ["i32"], result: "i32" },
  wgio_waker: { parameters: [], result: "i32" },
  wgio_wake: { parameters: ["i32"], result: "void" },
  wgio_close: { parameters: ["i32"], result: "void" },
  wgio_recv: {
    parameters: ["i32", "i32", "buffer", "i32", "i32", "buffer"],
    result: "i32",
    nonblocking: true,
  },
  wgio_try_recv: { parameters: ["i32", "buffer", "i32", "i32", "buffer"], result: "i32" },
  wgio_send: {
    parameters: ["i32", "i32", "buffer", "i32", "i32", "buffer", "buffer"],
    result: "i32",
  },
  wgc_available: { parameters: [], result: "i32" },
  wgc_use: { parameters: ["i32"], result: "i32" },
  wgc_seal: {
    parameters: ["buffer", "buffer", "buffer", "i32", "buffer", "i32", "buffer"],
    result: "i32",
  },
  wgc_open: {
    parameters: ["buffer", "buffer", "buffer", "i32", "buffer", "i32", "buffer"],
    result: "i32",
  },
  wgx_available: { parameters: [], result: "i32" },
  wgx_use: { parameters: ["i32"], result: "i32" },
  wgx_public: { parameters: ["buffer", "buffer"], result: "i32" },
  wgx_shared: { parameters: ["buffer", "buffer", "buffer"], result: "i32" },
} as const;

export type UdpHelperLib = Deno.DynamicLibrary<typeof Symbols>["symbols"];

/** The helper, or why it is not available; and its crypto's library, or why that is not used. */
export interface UdpHelper {
  lib?: UdpHelperLib;
  reason?: string;
  aead?: NativeAeadState;
  x25519?: NativeX25519State;
}

/** Per-datagram metadata in the helper's layout (udpio.c). */
const Meta = 24;
/** Datagrams per crossing, each way. */
const Batch = 64;
/** What the helper asks the kernel for (wireguard-go asks for 7 MiB). */
const SocketBuffer = 7 << 20;
const HelperVersion = 4;
/** Batches taken on the event loop's thread before it waits (and yields) once. */
const InlineBatches = 4;

let loading: Promise<UdpHelper> | undefined;

/** Loads the helper once per process; later calls return the same result. */
export function udpHelper(): Promise<UdpHelper> {
  return loading ??= load().then(async (helper) => {
    // Without the helper's X25519, noble must be at hand before a choice can need it.
    if (!helper.x25519?.library) await loadX25519Fallback();
    return helper;
  });
}

async function load(): Promise<UdpHelper> {
  const encoded = udpHelpers[Deno.build.arch];
  if (Deno.build.os !== "linux" || !encoded) {
    return { reason: `no helper built for ${Deno.build.os}/${Deno.build.arch}` };
  }
  let dir: string | undefined;
  try {
    // Asking first keeps a missing grant from being an exception (or, without --no-prompt, a
    // prompt); the grant is scoped to /tmp, where the file goes.
    const probe = { name: "ffi", path: "/tmp" } as const;
    if ((await Deno.permissions.query(probe)).state !== "granted") {
      return { reason: "no --allow-ffi for /tmp" };
    }
    dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "wrapguard-io-" });
    const path = `${dir}/libwgio.so`;
    // Sync, as launch.ts's materialize writes: the async call would load Deno's streams first.
    Deno.writeFileSync(path, Uint8Array.fromBase64(encoded), { mode: 0o500 });
    const lib = Deno.dlopen(path, Symbols).symbols;
    if (lib.wgio_version() !== HelperVersion) return { reason: "helper version mismatch" };
    return { lib, aead: offerNativeAead(lib), x25519: offerNativeX25519(lib) };
  } catch (e) {
    return { reason: (e as Error).message };
  } finally {
    if (dir) await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

const Errnos: Record<number, string> = {
  13: "EACCES",
  97: "EAFNOSUPPORT",
  98: "EADDRINUSE",
  99: "EADDRNOTAVAIL",
};

function errnoError(what: string, rc: number): Error {
  const code = Errnos[-rc] ?? `errno ${-rc}`;
  const text = code === "EADDRINUSE" ? "address already in use" : code;
  return Object.assign(new Error(`${what}: ${text}`), { code });
}

export class NativeUdpTransport implements UdpTransport {
  readonly backend = "native";
  sendErrors = 0;
  queueDrops = 0;
  /** Datagrams longer than a slot, dropped whole. */
  truncated = 0;
  readonly #lib: UdpHelperLib;
  readonly #fd: number;
  readonly #waker: number;
  readonly #v6: number;
  readonly #slot: number;
  readonly #options: UdpTransportOptions;
  readonly #rx: Uint8Array;
  readonly #rxMeta: Uint8Array;
  readonly #rxView: DataView;
  readonly #tx: Uint8Array;
  readonly #txMeta: Uint8Array;
  readonly #txView: DataView;
  readonly #counts = new Int32Array(2);
  #txCount = 0;
  #flushQueued = false;
  /** Batches taken in a row without waiting on a worker thread. */
  #inline = 0;
  #closed = false;
  readonly #endpoints = new Map<number | string, Endpoint>();
  /** Resolves once the receiving thread has returned and the socket is closed. */
  readonly done: Promise<void>;

  private constructor(lib: UdpHelperLib, fd: number, v6: boolean, options: UdpTransportOptions) {
    this.#lib = lib;
    this.#fd = fd;
    this.#v6 = v6 ? 1 : 0;
    this.#options = options;
    // Room for the largest WireGuard message with jumbo MTUs, in whole cache lines.
    this.#slot = Math.max(2048, ((options.maxDatagram ?? 1452) + 63) & ~63);
    this.#rx = new Uint8Array(Batch * this.#slot);
    this.#rxMeta = new Uint8Array(Batch * Meta);
    this.#rxView = new DataView(this.#rxMeta.buffer);
    this.#tx = new Uint8Array(Batch * this.#slot);
    this.#txMeta = new Uint8Array(Batch * Meta);
    this.#txView = new DataView(this.#txMeta.buffer);
    const waker = lib.wgio_waker();
    if (waker < 0) {
      lib.wgio_close(fd);
      throw errnoError("eventfd", waker);
    }
    this.#waker = waker;
    this.done = this.#receive();
  }

  static open(lib: UdpHelperLib, options: UdpTransportOptions): NativeUdpTransport {
    const port = options.port ?? 0;
    const bind = (v6: boolean, address: IpBytes) =>
      lib.wgio_open(v6 ? 1 : 0, address, port, SocketBuffer);
    let fd: number, v6: boolean;
    if (options.address !== undefined) {
      const address = parseIP(options.address);
      if (!address) throw new Error(`not an IP address: ${options.address}`);
      v6 = address.length === 16;
      fd = bind(v6, address);
    } else {
      v6 = true;
      fd = bind(true, new Uint8Array(16));
      // No IPv6 on this host (or only the IPv4 port is free): an IPv4 socket tells which.
      if (fd < 0) [v6, fd] = [false, bind(false, new Uint8Array(4))];
    }
    if (fd < 0) throw errnoError(`bind UDP port ${port}`, fd);
    return new NativeUdpTransport(lib, fd, v6, options);
  }

  get port(): number {
    return this.#lib.wgio_port(this.#fd);
  }

  /** The kernel's receive buffer in bytes, as SO_RCVBUF reports it. */
  get receiveBuffer(): number {
    return this.#lib.wgio_rcvbuf(this.#fd);
  }

  get queued(): number {
    return this.#txCount;
  }

  send(to: Endpoint, data: Uint8Array): void {
    this.slot(to, data.length)?.set(data);
  }

  /**
   * Takes the next slot of the batch for a `length`-byte datagram to `to`; the caller fills the
   * returned bytes before the turn ends. A full batch is sent when the next slot is asked for
   * (the last one's bytes are written by then) or at the end of the turn.
   */
  slot(to: Endpoint, length: number): Uint8Array | undefined {
    if (this.#closed) return undefined;
    const family = to.address.length === 4 ? 4 : 6;
    if (length > this.#slot || (family === 6 && !this.#v6)) {
      this.sendErrors++;
      return undefined;
    }
    if (this.#txCount === Batch) this.#flush();
    const i = this.#txCount++;
    const m = i * Meta;
    this.#txView.setUint32(m, length, true);
    this.#txView.setUint16(m + 4, to.port, true);
    this.#txMeta[m + 6] = family;
    this.#txMeta.set(to.address, m + 8);
    if (!this.#flushQueued) {
      this.#flushQueued = true;
      queueMicrotask(this.#flush);
    }
    const at = i * this.#slot;
    return this.#tx.subarray(at, at + length);
  }

  readonly #flush = (): void => {
    this.#flushQueued = false;
    const n = this.#txCount;
    if (n === 0 || this.#closed) return;
    this.#txCount = 0;
    this.#lib.wgio_send(
      this.#fd,
      this.#v6,
      this.#tx,
      this.#slot,
      n,
      this.#txMeta,
      this.#counts,
    );
    this.sendErrors += this.#counts[0]!;
    this.queueDrops += this.#counts[1]!;
  };

  async #receive(): Promise<void> {
    const { onDatagram, onError } = this.#options;
    try {
      for (;;) {
        // While datagrams keep coming, take the next batch on this thread (after the turn's
        // microtasks, so the replies go out first); every few batches, or when the socket is
        // empty, wait on a worker thread, which also lets timers and other I/O run.
        let n = 0;
        if (++this.#inline <= InlineBatches) {
          await null;
          if (this.#closed) return;
          n = this.#lib.wgio_try_recv(this.#fd, this.#rx, this.#slot, Batch, this.#rxMeta);
        }
        if (n === 0) {
          this.#inline = 0;
          n = await this.#lib.wgio_recv(
            this.#fd,
            this.#waker,
            this.#rx,
            this.#slot,
            Batch,
            this.#rxMeta,
          );
        }
        if (this.#closed || n === -1) return;
        if (n < 0) {
          // Not fatal (node:dgram's socket also lives on after an "error"): report, pause so that
          // a persistent error cannot spin, and go on receiving.
          onError?.(errnoError("recvmmsg", n));
          await new Promise((r) => setTimeout(r, 10));
          if (this.#closed) return;
          continue;
        }
        for (let i = 0; i < n; i++) {
          const m = i * Meta;
          if (this.#rxMeta[m + 7] !== 0) {
            this.truncated++;
            continue;
          }
          const at = i * this.#slot;
          // A view, not a copy: a copy per datagram (an ArrayBuffer each, and the GC work that
          // external memory brings) was a third of the receive path's CPU (docs/performance.md).
          const data = this.#rx.subarray(at, at + this.#rxView.getUint32(m, true));
          onDatagram(this.#endpoint(m), data);
        }
      }
    } finally {
      this.#lib.wgio_close(this.#fd);
      this.#lib.wgio_close(this.#waker);
    }
  }

  close(): void {
    if (this.#closed) return;
    // What this turn queued (the resets Tunnel.close sends) goes out before the socket closes.
    this.#flush();
    this.#closed = true;
    this.#lib.wgio_wake(this.#waker);
  }

  #endpoint(m: number): Endpoint {
    const meta = this.#rxMeta, view = this.#rxView;
    const port = view.getUint16(m + 4, true);
    const v4 = meta[m + 6] === 4;
    // IPv4: address and port in one exact number; IPv6: its bytes as text.
    const key: number | string = v4
      ? view.getUint32(m + 8) * 65536 + port
      : `${meta.subarray(m + 8, m + 24).join(",")}|${port}`;
    let ep = this.#endpoints.get(key);
    if (!ep) {
      ep = { address: meta.slice(m + 8, m + (v4 ? 12 : 24)), port };
      // Bounded: a spoofing flood of sources must not grow this without end.
      if (this.#endpoints.size > 4096) this.#endpoints.clear();
      this.#endpoints.set(key, ep);
    }
    return ep;
  }
}
