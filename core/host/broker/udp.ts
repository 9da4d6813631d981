/**
 * UDP: one stack UDP socket per program socket. After the reply, the Unix connection carries
 * frames both ways (PROTOCOL.md "UDP frames"): from the program, a destination and a payload to
 * send; to the program, each datagram with its source. Like a kernel socket's receive buffer, what
 * the program does not read in time is dropped, not queued without bound.
 *
 * @module
 */
import { formatIP, type IpBytes, unmapIPv4 } from "../../wire/addr.ts";
import type { UdpSocket } from "../../netstack/udp.ts";
import type { BrokerContext } from "./context.ts";
import { readExact, writeAll } from "./io.ts";
import {
  decodeFrameHeader,
  encodeFrame,
  encodeReply,
  errorReply,
  Family,
  FRAME_HEADER_LEN,
  type Request,
  Status,
  statusOf,
} from "./protocol.ts";

/** Bytes of datagrams queued towards the program before new ones are dropped (≈ rmem_default). */
export const UDP_QUEUE_LIMIT = 212992;

function isZero(addr: IpBytes): boolean {
  return addr.every((b) => b === 0);
}

export async function serveUdp(ctx: BrokerContext, unix: Deno.Conn, req: Request): Promise<void> {
  const { host, stats } = ctx;
  let sock: UdpSocket;
  try {
    sock = host.stack.udp.bind({
      address: isZero(req.local.addr) ? undefined : req.local.addr,
      port: req.local.port,
    });
  } catch (e) {
    await writeAll(unix, errorReply(statusOf(e)));
    return;
  }
  stats.udpAssociations++;
  const untrack = ctx.track(sock);
  let queued = 0;
  let refused = false;
  let writing = Promise.resolve();
  sock.onDatagram = (data, srcAddr, srcPort) => {
    if (queued + data.length > UDP_QUEUE_LIMIT) {
      stats.udpDropped++;
      return;
    }
    const frame = encodeFrame({ addr: unmapIPv4(srcAddr), port: srcPort }, data);
    queued += frame.length;
    writing = writing.then(() => writeAll(unix, frame)).then(
      () => void (queued -= frame.length),
      () => void (queued -= frame.length),
    );
  };
  try {
    const zero = new Uint8Array(req.family === Family.V4 ? 4 : 16);
    const local = sock.localAddress ?? host.stack.sourceFor(zero) ?? zero;
    await writeAll(
      unix,
      encodeReply({
        status: Status.Ok,
        family: req.family,
        arg: 0,
        local: { addr: local.length === zero.length ? local : zero, port: sock.localPort },
        remote: { addr: new Uint8Array(0), port: 0 },
      }),
    );
    for (;;) {
      const head = await readExact(unix, FRAME_HEADER_LEN);
      if (!head) break;
      const f = decodeFrameHeader(head);
      const payload = await readExact(unix, f.length);
      if (!payload) break;
      const dst = unmapIPv4(f.peer.addr);
      const routed = host.routeFor
        ? host.routeFor(dst, "udp", f.peer.port)
        : host.device.route(dst);
      if (!routed) {
        stats.udpSendErrors++;
        if (!refused) {
          refused = true; // once per socket: a program may send many
          ctx.logger.warn("refused: no peer routes this destination", {
            dst: formatIP(dst),
            port: f.peer.port,
            protocol: "udp",
          });
        }
        continue;
      }
      try {
        sock.send(f.peer.addr, f.peer.port, payload);
      } catch {
        // The program's sendto has returned already: like a datagram lost on the way.
        stats.udpSendErrors++;
      } finally {
        host.poke();
      }
    }
  } finally {
    untrack();
    sock.close();
    host.poke();
    await writing;
  }
}
