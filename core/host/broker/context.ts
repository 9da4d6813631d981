/**
 * What the broker's request handlers share: the tunnel they use, a logger, counters, and a way to
 * register what must be torn down when the broker closes.
 *
 * @module
 */
import type { IpBytes } from "../../wire/addr.ts";
import type { UdpLayer } from "../../netstack/udp.ts";
import type { Logger } from "../log.ts";
import type { TcpHost } from "../tunnel/tcp.ts";

/** The parts of a `Tunnel` the broker uses (a `Tunnel` is one). */
export interface BrokerHost extends TcpHost {
  readonly stack: {
    readonly udp: UdpLayer;
    sourceFor(dst: IpBytes): IpBytes | undefined;
  };
  /** Cryptokey routing: the peer a destination goes to, if any. */
  readonly device: { route(dst: IpBytes): unknown };
  /** Policy routing first (a `Route = CIDR:tcp:443`), then cryptokey routing; a `Tunnel` has it. */
  routeFor?(dst: IpBytes, protocol: "tcp" | "udp", port: number): unknown;
}

/** Counters, for status output and tests. */
export interface BrokerStats {
  /** Unix connections accepted. */
  connections: number;
  /** Connections that presented a wrong secret. */
  authFailures: number;
  /** Connections whose request did not decode, or came too slowly. */
  malformed: number;
  tcpConnects: number;
  tcpFailed: number;
  udpAssociations: number;
  /** UDP datagrams from the tunnel dropped because the program did not keep up. */
  udpDropped: number;
  /** UDP datagrams from the program the stack refused (too big, no route). */
  udpSendErrors: number;
  /** Processes that said HELLO (loaded the interposer). */
  hellos: number;
  /** Name lookups (RESOLVE) and DNS messages (QUERY) the program sent. */
  resolves: number;
  queries: number;
}

export interface BrokerContext {
  readonly host: BrokerHost;
  readonly logger: Logger;
  readonly stats: BrokerStats;
  /** Closes `r` if the broker closes first; call the returned function when done with it. */
  track(r: { close(): void }): () => void;
}
