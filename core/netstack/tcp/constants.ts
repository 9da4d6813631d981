/**
 * TCP constants, split as wireguard-go splits its own: values a specification fixes, and values
 * this implementation chose (each with the reason). Times are milliseconds.
 *
 * @module
 */

// ---------------------------------------------------------------------------------------------
// Specification

/**
 * Maximum Segment Lifetime. RFC 9293 3.4.2 suggests 2 minutes; like Linux (TIME-WAIT of 60 s)
 * we use 30 s, which is ample for a tunnel where a segment can not outlive the session keys.
 */
export const MSL = 30_000;
/** RFC 9293 3.6.1: TIME-WAIT lasts 2 × MSL. */
export const TIME_WAIT_DURATION = 2 * MSL;
/** RFC 6298 2.1: the RTO before any RTT sample. */
export const INITIAL_RTO = 1_000;
/** RFC 6298 2.5: a maximum may be placed on RTO provided it is at least 60 s. */
export const MAX_RTO = 60_000;
/** RFC 6298 2.4 / 4: clock granularity G; our clock is in milliseconds. */
export const CLOCK_GRANULARITY = 1;
/** RFC 5681 3.2: the number of duplicate ACKs that signals a loss. */
export const DUP_THRESH = 3;
/** RFC 8985 7.2: WCDelAckT, the worst case a peer may delay the ACK of a lone segment. */
export const TLP_DELAYED_ACK = 200;
/** RFC 9293 3.7.1: MSS assumed when the peer sends none (IPv4); RFC 8200 5 for IPv6 (1280 - 60). */
export const DEFAULT_MSS_V4 = 536;
export const DEFAULT_MSS_V6 = 1220;
/** RFC 9293 3.1: the window field is 16 bits. */
export const MAX_WINDOW_FIELD = 0xffff;
/** RFC 7323 2.3: the largest shift count. */
export const MAX_WINDOW_SHIFT = 14;
/** RFC 7323 5.5: TS.Recent is invalid after 24 days idle. */
export const PAWS_IDLE_LIMIT = 24 * 24 * 3600 * 1000;
/** RFC 1122 4.2.3.6: keepalive idle time default no less than two hours. */
export const KEEPALIVE_IDLE = 2 * 3600 * 1000;
/** IANA dynamic ports (RFC 6335 6), the same range UDP uses. */
export const EPHEMERAL_FIRST = 49152;
export const EPHEMERAL_LAST = 65535;

// ---------------------------------------------------------------------------------------------
// Implementation

/**
 * The RTO floor. RFC 6298 2.4 says 1 s; like Linux (TCP_RTO_MIN) we use 200 ms: the peer is
 * usually Linux with the same floor, the RFC's value was chosen for coarse 1990s clocks, and
 * our clock has millisecond granularity with per-ACK RTT samples from timestamps.
 */
export const MIN_RTO = 200;
/**
 * How long an ACK may be delayed. RFC 5681 4.2 allows up to 500 ms; the brief asks at most
 * 200 ms; like Linux's minimum ATO we use 40 ms, which keeps Nagle on the peer from stalling
 * a request behind our delayed ACK for long.
 */
export const DELAYED_ACK_TIMEOUT = 40;
/** Quiet (nothing sent or received) after which a connection gives back its empty buffers, ms. */
export const IDLE_TRIM = 1000;
/** Linux defaults (tcp_keepalive_intvl, tcp_keepalive_probes). */
export const KEEPALIVE_INTERVAL = 75_000;
export const KEEPALIVE_COUNT = 9;
/** How long a connection closed by the user waits in FIN-WAIT-2 (Linux tcp_fin_timeout). */
export const FIN_WAIT_2_TIMEOUT = 60_000;
/** Zero-window probes back off up to this interval. */
export const MAX_PERSIST_INTERVAL = 60_000;
/** SYN retransmissions before ETIMEDOUT (Linux tcp_syn_retries: about 127 s in all). */
export const SYN_RETRIES = 6;
/** SYN-ACK retransmissions before a half-open connection is dropped (Linux tcp_synack_retries). */
export const SYNACK_RETRIES = 5;
/** Data retransmissions (and unanswered zero-window probes) before ETIMEDOUT (Linux tcp_retries2). */
export const MAX_RETRANSMITS = 15;
/** Send and receive buffer sizes per connection. */
export const DEFAULT_BUFFER_SIZE = 256 * 1024;
/** Out-of-order ranges kept by a receiver, and SACKed ranges kept by a sender. */
export const DEFAULT_MAX_RANGES = 32;
/** Connections (any state, TIME-WAIT included) per layer. */
export const DEFAULT_MAX_CONNECTIONS = 16384;
/** Accept-queue length when `listen` is given none (Linux SOMAXCONN). */
export const DEFAULT_BACKLOG = 128;
/** Half-open (SYN-RECEIVED) connections per listener. */
export const DEFAULT_SYN_BACKLOG = 256;
/** RFC 5961 10: challenge ACKs per second per layer (Linux tcp_challenge_ack_limit). */
export const CHALLENGE_ACK_LIMIT = 1000;
/** RFC 6928 2: the initial window is min(10 × MSS, max(2 × MSS, 14600)) bytes. */
export const INITIAL_WINDOW_SEGMENTS = 10;
export const INITIAL_WINDOW_BYTES = 14600;
