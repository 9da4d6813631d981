/**
 * SOCKS5 UDP ASSOCIATE (RFC 1928 (7)): a local UDP socket, on the address the client reached us
 * at, carries datagrams with a request header; a UDP socket on the tunnel sends them on and
 * receives the answers, which go back with the sender's address in the same header:
 *
 * ```text
 *   +----+------+------+----------+----------+----------+
 *   |RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
 *   +----+------+------+----------+----------+----------+
 *   | 2  |  1   |  1   | Variable |    2     | Variable |
 * ```
 *
 * Only datagrams from the client's IP address are relayed; its port is the one the request named,
 * or else the first one a datagram comes from. Fragments (FRAG ≠ 0) are dropped, which RFC 1928
 * allows of an implementation that does not reassemble. Names are resolved through the tunnel.
 *
 * @module
 */
import dgram from "node:dgram";
import { formatIP, type IpBytes, parseIP, unmapIPv4 } from "../../wire/addr.ts";
import type { UdpSocket } from "../../netstack/udp.ts";
import { resolveThroughTunnel } from "../forward/dial.ts";
import type { Logger } from "../log.ts";
import { decodeAddr, encodeAddr } from "./socks5_wire.ts";
import type { Tunnel } from "../tunnel/mod.ts";

/** Names resolved for one association, at most (a client could otherwise grow it at will). */
const MaxCachedNames = 256;

export interface UdpAssociationOptions {
  /** The client's IP, from the control connection. */
  clientHost: string;
  /** DST.PORT of the request: where the client will send from, 0 when it did not say. */
  clientPort: number;
  /** Our address on the control connection; the relay socket binds it. */
  localHost: string;
  logger: Logger;
}

function sameHost(a: string, b: string): boolean {
  const x = parseIP(a), y = parseIP(b);
  if (!x || !y) return a === b;
  return formatIP(unmapIPv4(x)) === formatIP(unmapIPv4(y));
}

/** One UDP association: open while its control connection is. */
export class UdpAssociation {
  /** The relay socket's address and port (BND.ADDR, BND.PORT of the reply). */
  readonly address: string;
  readonly port: number;
  readonly stats: { toTunnel: number; fromTunnel: number; dropped: number } = {
    toTunnel: 0,
    fromTunnel: 0,
    dropped: 0,
  };
  readonly #local: dgram.Socket;
  readonly #remote: UdpSocket;
  readonly #tunnel: Tunnel;
  readonly #opts: UdpAssociationOptions;
  readonly #names = new Map<string, IpBytes>();
  #clientPort: number;
  #closed = false;

  private constructor(
    tunnel: Tunnel,
    local: dgram.Socket,
    remote: UdpSocket,
    opts: UdpAssociationOptions,
  ) {
    this.#tunnel = tunnel;
    this.#local = local;
    this.#remote = remote;
    this.#opts = opts;
    this.#clientPort = opts.clientPort;
    const a = local.address();
    this.address = opts.localHost;
    this.port = a.port;
    local.on("message", (msg: Uint8Array, rinfo: dgram.RemoteInfo) => {
      void this.#fromClient(new Uint8Array(msg), rinfo.address, rinfo.port);
    });
    local.on(
      "error",
      (e: Error) => opts.logger.debug("udp relay socket error", { error: e.message }),
    );
    remote.onDatagram = (data, src, srcPort) => this.#fromTunnel(data, src, srcPort);
  }

  /** Binds the local relay socket and a tunnel UDP socket. */
  static async open(tunnel: Tunnel, opts: UdpAssociationOptions): Promise<UdpAssociation> {
    const v6 = opts.localHost.includes(":");
    const local = dgram.createSocket({ type: v6 ? "udp6" : "udp4" });
    await new Promise<void>((resolve, reject) => {
      local.once("error", reject);
      local.bind(0, opts.localHost, () => {
        local.off("error", reject);
        resolve();
      });
    });
    let remote: UdpSocket;
    try {
      remote = tunnel.stack.udp.bind({});
    } catch (e) {
      local.close();
      throw e;
    }
    return new UdpAssociation(tunnel, local, remote, opts);
  }

  async #fromClient(msg: Uint8Array, host: string, port: number): Promise<void> {
    if (this.#closed || !sameHost(host, this.#opts.clientHost)) {
      this.stats.dropped++;
      return;
    }
    if (this.#clientPort === 0) this.#clientPort = port;
    else if (port !== this.#clientPort) {
      this.stats.dropped++;
      return;
    }
    // RSV(2) FRAG(1) ATYP…: a fragment, or a header we cannot read, is dropped.
    const parsed = msg.length >= 4 && msg[2] === 0 ? decodeAddr(msg, 3) : undefined;
    if (!parsed) {
      this.stats.dropped++;
      return;
    }
    const { addr, end } = parsed;
    let dst: IpBytes;
    if (typeof addr.host === "string") {
      const cached = this.#names.get(addr.host);
      if (cached) dst = cached;
      else {
        try {
          dst = await resolveThroughTunnel(this.#tunnel, addr.host);
        } catch (e) {
          this.#opts.logger.debug("udp relay: cannot resolve", {
            name: addr.host,
            error: (e as Error).message,
          });
          this.stats.dropped++;
          return;
        }
        if (this.#names.size >= MaxCachedNames) this.#names.clear();
        this.#names.set(addr.host, dst);
      }
    } else dst = addr.host;
    dst = unmapIPv4(dst);
    if (this.#closed || !this.#tunnel.device.route(dst)) {
      this.stats.dropped++;
      return;
    }
    try {
      this.#remote.send(dst, addr.port, msg.subarray(end));
      this.stats.toTunnel++;
    } catch (e) {
      this.#opts.logger.debug("udp relay: cannot send", { error: (e as Error).message });
      this.stats.dropped++;
    }
    this.#tunnel.poke();
  }

  #fromTunnel(data: Uint8Array, src: IpBytes, srcPort: number): void {
    if (this.#closed || this.#clientPort === 0) {
      this.stats.dropped++;
      return;
    }
    const header = encodeAddr({ host: unmapIPv4(src), port: srcPort });
    const out = new Uint8Array(3 + header.length + data.length);
    out.set(header, 3);
    out.set(data, 3 + header.length);
    this.stats.fromTunnel++;
    this.#local.send(out, this.#clientPort, this.#opts.clientHost);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#remote.close();
    this.#local.close();
  }
}
