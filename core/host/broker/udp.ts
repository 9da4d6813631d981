/**
 * UDP: one stack UDP socket per program socket. After the reply, the Unix connection carries
 * frames both ways (PROTOCOL.md "UDP frames"): from the program, a destination and a payload to
 * send; to the program, each datagram with its source, and each ICMP error about a datagram it
 * sent (an error frame: the interposer reports it on a socket connected to that peer, as Linux
 * does). Like a kernel socket's receive buffer, what the program does not read in time is dropped,
 * not queued without bound. A socket bound to the wildcard has a host-network half too
 * (udp_host.ts), whose frames carry the Host flag.
 *
 * @module
 */
import { formatIP, type IpBytes, unmapIPv4 } from "../../wire/addr.ts";
import type { UdpSocket } from "../../netstack/udp.ts";
import type { IcmpErrorKind } from "../../netstack/types.ts";
import type { BrokerContext } from "./context.ts";
import { readExact, writeAll } from "./io.ts";
import { bindHostUdp, type HostUdp } from "./udp_host.ts";
import {
  decodeFrameHeader,
  encodeErrorFrame,
  encodeFrame,
  encodeReply,
  errorReply,
  Family,
  Flag,
  FRAME_HEADER_LEN,
  FrameFlag,
  type Request,
  Status,
  statusOf,
} from "./protocol.ts";

/** Bytes of datagrams queued towards the program before new ones are dropped (≈ rmem_default). */
export const UDP_QUEUE_LIMIT = 212992;

function isZero(addr: IpBytes): boolean {
  return addr.every((b) => b === 0);
}

/** The status of an error frame, as Linux's icmp_err_convert / icmpv6_err_convert name them. */
const ICMP_STATUS: Record<IcmpErrorKind, Status> = {
  "port-unreachable": Status.ConnRefused,
  "net-unreachable": Status.NetUnreach,
  "host-unreachable": Status.HostUnreach,
  "prohibited": Status.Prohibited,
  "too-big": Status.MsgSize,
  "time-exceeded": Status.HostUnreach,
};

/**
 * A wildcard bind of 0.0.0.0 (or ::ffff:0.0.0.0), or of :: with V6ONLY, serves its family only,
 * so that a server may bind both apart. (Without the Host flag the request's family is the first
 * destination's, which says nothing of the socket's.)
 */
function wildcardFamily(req: Request): 4 | 6 | undefined {
  if (req.family === Family.V4) return 4;
  return req.flags & Flag.V6Only ? 6 : undefined;
}

export async function serveUdp(ctx: BrokerContext, unix: Deno.Conn, req: Request): Promise<void> {
  const { host, stats } = ctx;
  let queued = 0;
  let writing = Promise.resolve();
  const toProgram = (frame: Uint8Array, size: number) => {
    if (queued + size > UDP_QUEUE_LIMIT) {
      stats.udpDropped++;
      return;
    }
    queued += frame.length;
    writing = writing.then(() => writeAll(unix, frame)).then(
      () => void (queued -= frame.length),
      () => void (queued -= frame.length),
    );
  };
  const wildcard = (req.flags & Flag.Host) !== 0 && isZero(req.local.addr);
  let hostHalf: HostUdp | undefined;
  let sock: UdpSocket;
  try {
    if (wildcard) {
      hostHalf = await bindHostUdp({
        family: req.family,
        port: req.local.port,
        v6only: (req.flags & Flag.V6Only) !== 0,
        reuseAddr: (req.flags & Flag.ReuseAddr) !== 0,
        onDatagram: (data, addr, port) =>
          toProgram(encodeFrame({ addr, port }, data, FrameFlag.Host), data.length),
      });
    }
    sock = host.stack.udp.bind({
      address: isZero(req.local.addr) ? undefined : req.local.addr,
      port: hostHalf?.port ?? req.local.port,
      family: wildcard ? wildcardFamily(req) : undefined,
      // The program keeps its association (connect) itself, so the stack socket stays
      // unconnected and asks for every error; the interposer keeps those about its peer.
      recvErr: true,
    });
  } catch (e) {
    hostHalf?.close();
    await writeAll(unix, errorReply(statusOf(e)));
    return;
  }
  stats.udpAssociations++;
  const untrack = ctx.track(sock);
  let refused = false;
  sock.onDatagram = (data, srcAddr, srcPort) =>
    toProgram(encodeFrame({ addr: unmapIPv4(srcAddr), port: srcPort }, data), data.length);
  sock.onError = (kind, addr, port) =>
    toProgram(encodeErrorFrame({ addr: unmapIPv4(addr), port }, ICMP_STATUS[kind]), 0);
  try {
    const zero = new Uint8Array(req.family === Family.V4 ? 4 : 16);
    const local = wildcard ? zero : sock.localAddress ?? host.stack.sourceFor(zero) ?? zero;
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
      if ((f.flags ?? 0) & FrameFlag.Host) {
        if (hostHalf) hostHalf.send(dst, f.peer.port, payload);
        else stats.udpSendErrors++;
        continue;
      }
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
    hostHalf?.close();
    sock.close();
    host.poke();
    await writing;
  }
}
