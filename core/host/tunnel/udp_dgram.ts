/**
 * The engine's UDP socket through node:dgram: the fallback where the batched helper
 * (udp_native.ts) cannot load. One dual-stack socket when the host has IPv6, else IPv4 only; peers'
 * addresses arrive as text from node:dgram and are turned into cached Endpoint objects, so a
 * steady stream from one peer costs one Map lookup per datagram, not a parse.
 *
 * @module
 */
import dgram from "node:dgram";
import { formatIP, type IpBytes, parseIP, unmapIPv4 } from "../../wire/addr.ts";
import type { Endpoint } from "../../wireguard/peer.ts";
import type { UdpTransport, UdpTransportOptions } from "./udp.ts";

/** Datagrams waiting to be sent, at most (two arrays slots each). */
const MaxQueuedDatagrams = 8192;

export class DgramTransport implements UdpTransport {
  readonly backend = "dgram";
  #socket: dgram.Socket;
  #dualStack: boolean;
  #endpoints = new Map<string, Endpoint>();
  #targets = new WeakMap<Endpoint, string>();
  sendErrors = 0;
  /** Datagrams dropped because the send queue was full (as a full socket buffer drops). */
  queueDrops = 0;
  #inFlight = false;
  #closed = false;
  // Endpoint, data, endpoint, data, ... consumed from #queueHead: no per-datagram object.
  #queue: (Endpoint | Uint8Array)[] = [];
  #queueHead = 0;

  private constructor(socket: dgram.Socket, dualStack: boolean) {
    this.#socket = socket;
    this.#dualStack = dualStack;
  }

  static async open(options: UdpTransportOptions): Promise<DgramTransport> {
    const wantV4Only = options.address !== undefined && !options.address.includes(":");
    const tryBind = (type: "udp4" | "udp6") =>
      new Promise<dgram.Socket>((resolve, reject) => {
        // The kernel receive buffer stays at net.core.rmem_default (~208 KiB): Deno's node:dgram
        // accepts recvBufferSize/setRecvBufferSize but does not apply them (checked with ss),
        // and Deno exposes no fd to set SO_RCVBUF ourselves. Bursts beyond it are dropped by
        // the kernel and recovered by TCP; wireguard-go asks for 7 MiB.
        const socket = dgram.createSocket({ type, ipv6Only: false, reuseAddr: false });
        socket.once("error", reject);
        socket.bind(
          options.port ?? 0,
          options.address ?? (type === "udp6" ? "::" : "0.0.0.0"),
          () => {
            socket.off("error", reject);
            resolve(socket);
          },
        );
      });
    let socket: dgram.Socket, dualStack = false;
    if (wantV4Only) socket = await tryBind("udp4");
    else {
      try {
        socket = await tryBind("udp6");
        dualStack = true;
      } catch (e) {
        // No IPv6 on this host, or the port is taken: an IPv4 socket tells which.
        if (options.address?.includes(":")) throw e;
        socket = await tryBind("udp4");
      }
    }
    const transport = new DgramTransport(socket, dualStack);
    socket.on("message", (msg: Uint8Array, rinfo: dgram.RemoteInfo) => {
      // A plain Uint8Array view over the Buffer: Buffer's slice() shares memory, and the layers
      // above rely on slice() copying.
      const data = new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength);
      options.onDatagram(transport.#endpoint(rinfo.address, rinfo.port), data);
    });
    socket.on("error", (e: Error) => options.onError?.(e));
    return transport;
  }

  get port(): number {
    return this.#socket.address().port;
  }

  /** Datagrams waiting for their turn to be sent (not counting the one in flight). */
  get queued(): number {
    return (this.#queue.length - this.#queueHead) / 2;
  }

  /**
   * Queues one datagram. Deno's node:dgram completes concurrent sends in any order, which would
   * reorder the tunnel's packets and look like network reordering to TCP; so one send is in
   * flight at a time and the rest wait here, bounded like a kernel socket buffer.
   */
  send(to: Endpoint, data: Uint8Array): void {
    if (this.#inFlight) {
      if (this.#queue.length - this.#queueHead >= 2 * MaxQueuedDatagrams) {
        this.queueDrops++;
        return;
      }
      this.#queue.push(to, data);
      return;
    }
    this.#transmit(to, data);
  }

  #transmit(to: Endpoint, data: Uint8Array): void {
    let target = this.#targets.get(to);
    if (target === undefined) {
      target = to.address.length === 4 && this.#dualStack
        ? `::ffff:${formatIP(to.address)}`
        : formatIP(to.address);
      this.#targets.set(to, target);
    }
    this.#inFlight = true;
    this.#socket.send(data, to.port, target, this.#sent);
  }

  readonly #sent = (err: Error | null): void => {
    this.#inFlight = false;
    if (err) this.sendErrors++;
    if (this.#queueHead === this.#queue.length || this.#closed) return;
    const to = this.#queue[this.#queueHead++] as Endpoint;
    const data = this.#queue[this.#queueHead++] as Uint8Array;
    if (this.#queueHead === this.#queue.length) {
      this.#queue.length = 0;
      this.#queueHead = 0;
    } else if (this.#queueHead > 4096) {
      this.#queue.splice(0, this.#queueHead);
      this.#queueHead = 0;
    }
    this.#transmit(to, data);
  };

  close(): void {
    this.#closed = true;
    this.#socket.close();
  }

  #endpoint(address: string, port: number): Endpoint {
    const key = `${address}|${port}`;
    let ep = this.#endpoints.get(key);
    if (!ep) {
      const bytes: IpBytes = unmapIPv4(parseIP(address) ?? new Uint8Array(4));
      ep = { address: bytes.slice(), port };
      // Bounded: a spoofing flood of sources must not grow this without end.
      if (this.#endpoints.size > 4096) this.#endpoints.clear();
      this.#endpoints.set(key, ep);
    }
    return ep;
  }
}
