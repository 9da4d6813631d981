/**
 * The host-network half of a UDP socket bound to the wildcard (`0.0.0.0:P`, `[::]:P`). A kernel
 * socket bound so receives on every interface; under `run` it must receive from the tunnel as
 * well, yet one program fd can be only one thing. The interposer hands such a socket to the
 * broker whole (request flag Host), and the broker binds both halves on port P: the stack's
 * wildcard for the tunnel, and this node:dgram socket for the host. Frames with
 * {@link FrameFlag.Host} travel between the program and this half; the rest go to the tunnel.
 *
 * @module
 */
import { formatIP, type IpBytes, parseIP, unmapIPv4 } from "../../wire/addr.ts";
import { Family } from "./protocol.ts";

export interface HostUdp {
  readonly port: number;
  /** Sends to a host destination; errors are the datagram's loss, as after a kernel sendto. */
  send(addr: IpBytes, port: number, payload: Uint8Array): void;
  close(): void;
}

/**
 * Binds the wildcard of `family` on the host network. Rejects with the bind error (its `code`,
 * EADDRINUSE or EACCES, becomes the reply status).
 */
export async function bindHostUdp(opts: {
  family: Family;
  port: number;
  v6only: boolean;
  reuseAddr: boolean;
  onDatagram: (data: Uint8Array, addr: IpBytes, port: number) => void;
}): Promise<HostUdp> {
  // Loaded at the first host-network UDP socket, not at import: node: modules cost every run's
  // start (docs/performance.md, "Cold start"), and most programs never bind one.
  const [{ default: dgram }, { Buffer }] = await Promise.all([
    import("node:dgram"),
    import("node:buffer"),
  ]);
  const v6 = opts.family === Family.V6;
  const sock = dgram.createSocket({
    type: v6 ? "udp6" : "udp4",
    ipv6Only: v6 && opts.v6only,
    reuseAddr: opts.reuseAddr,
  });
  return new Promise((resolve, reject) => {
    sock.once("error", reject);
    sock.bind(opts.port, v6 ? "::" : "0.0.0.0", () => {
      sock.off("error", reject);
      // Errors after bind concern single datagrams (ICMP on a later send): nothing to report on
      // an unconnected socket, as the kernel reports none.
      sock.on("error", () => {});
      sock.on("message", (msg, rinfo) => {
        const addr = parseIP(rinfo.address);
        if (!addr) return;
        opts.onDatagram(msg, unmapIPv4(addr), rinfo.port);
      });
      const port = sock.address().port;
      resolve({
        port,
        send(addr, dstPort, payload) {
          // A dual-stack socket reaches IPv4 destinations by their mapped form.
          const text = v6 && addr.length === 4 ? `::ffff:${formatIP(addr)}` : formatIP(addr);
          try {
            sock.send(
              Buffer.from(payload.buffer, payload.byteOffset, payload.length),
              dstPort,
              text,
            );
          } catch {
            // Like a datagram lost on the way (a closed socket, an unreachable family).
          }
        },
        close() {
          try {
            sock.close();
          } catch {
            // Closed already.
          }
        },
      });
    });
  });
}
