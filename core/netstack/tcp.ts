/**
 * TCP for the userspace stack (RFC 9293), attached to the IP layer as the transport for
 * protocol 6. Pure: time is passed in, `pollAt()` says when to call `tick`.
 *
 * What it does, and where:
 *
 * | concern | file |
 * | --- | --- |
 * | demux, listeners, ports, timer heap | `tcp/layer.ts` |
 * | the TCB and its derived values | `tcp/tcb.ts` |
 * | segment arrives (state machine, RFC 5961, PAWS, SACK in, recovery) | `tcp/input.ts` |
 * | what to send (retransmit, new data, Nagle, SWS, FIN, ACK, SACK out) | `tcp/output.ts` |
 * | retransmission, persist, delayed ACK, keepalive, TIME-WAIT | `tcp/timers.ts` |
 * | the user's handle | `tcp/connection.ts`, `tcp/listener.ts` |
 * | RTO (RFC 6298), NewReno (RFC 5681, 6582, 6675), ISN (RFC 6528) | `tcp/rtt.ts`, `tcp/congestion.ts`, `tcp/isn.ts` |
 * | bounded buffers | `tcp/ring.ts`, `tcp/recv_buffer.ts`, `tcp/range_set.ts` |
 *
 * @module
 */
export {
  DEFAULT_LIMITS,
  type TcpConnectOptions,
  TcpLayer,
  type TcpLayerOptions,
  type TcpListenOptions,
} from "./tcp/layer.ts";
export { type KeepAliveOptions, TcpConnection, type TcpInfo } from "./tcp/connection.ts";
export { TcpListener } from "./tcp/listener.ts";
export { TcpError, type TcpErrorCode } from "./tcp/errors.ts";
export type { TcpLimits, TcpStateName, TcpStats } from "./tcp/tcb.ts";
export { MSL, TIME_WAIT_DURATION } from "./tcp/constants.ts";
