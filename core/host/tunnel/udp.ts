/**
 * The engine's UDP socket, whichever way it is driven:
 *
 * ```text
 * UdpTransport.open ─► "native": the batched helper (udp_native.ts; recvmmsg/sendmmsg through
 *                    │            Deno FFI, large kernel buffers), when it loads
 *                    └► "dgram":  node:dgram (udp_dgram.ts), one datagram per op
 * ```
 *
 * "auto" (the default) takes the helper when this process may load it (`--allow-ffi` and write to
 * the temporary directory, at the time of the first open) and falls back to node:dgram otherwise;
 * both carry the same datagrams in the same order.
 *
 * @module
 */
import type { Endpoint } from "../../wireguard/peer.ts";
import { NativeUdpTransport, udpHelper } from "./udp_native.ts";

/** Which implementation carries the tunnel's datagrams. */
export type UdpBackend = "auto" | "native" | "dgram";

export interface UdpTransportOptions {
  /** 0 or undefined: an ephemeral port, as wg-quick without ListenPort. */
  port?: number;
  /** Bind address; default all addresses. Tests bind 127.0.0.1. */
  address?: string;
  /** Default "auto". "native" fails when the helper cannot load. */
  backend?: UdpBackend;
  /** The largest datagram expected (the tunnel's MTU plus WireGuard's 32 bytes); default 1452. */
  maxDatagram?: number;
  /**
   * One datagram. `data` may be a view of the transport's receive buffer, valid only during the
   * call (the native transport reuses it for the next batch): copy what you keep. The engine
   * decrypts it in place and every layer above copies what it keeps (TCP into its ring, UDP
   * sockets by their own contract, fragments into the reassembler).
   */
  onDatagram(from: Endpoint, data: Uint8Array): void;
  onError?(error: Error): void;
}

/** One bound UDP socket. `send` never blocks and keeps the order of the datagrams given to it. */
export interface UdpTransport {
  readonly backend: "native" | "dgram";
  readonly port: number;
  /** Datagrams waiting for their turn to be sent. */
  readonly queued: number;
  /** Datagrams the kernel refused (unreachable, wrong family). */
  sendErrors: number;
  /** Datagrams dropped because the send queue or the socket buffer was full. */
  queueDrops: number;
  send(to: Endpoint, data: Uint8Array): void;
  /**
   * Optional: queues a `length`-byte datagram to `to` and returns its bytes, to be filled before
   * the current turn ends (they are stale, not zero); undefined, counted in `sendErrors`, when
   * `send` would refuse it too.
   */
  slot?(to: Endpoint, length: number): Uint8Array | undefined;
  close(): void;
}

/** Opens the tunnel's socket with the backend `options.backend` asks for (see the module doc). */
export const UdpTransport: {
  open(options: UdpTransportOptions): Promise<UdpTransport>;
} = {
  async open(options: UdpTransportOptions): Promise<UdpTransport> {
    const backend = options.backend ?? "auto";
    if (backend !== "dgram") {
      const helper = await udpHelper();
      if (helper.lib) return NativeUdpTransport.open(helper.lib, options);
      if (backend === "native") throw new Error(`batched UDP helper: ${helper.reason}`);
    }
    // The fallback's node:dgram is imported only when it is used (it costs every start).
    const { DgramTransport } = await import("./udp_dgram.ts");
    return await DgramTransport.open(options);
  },
};
