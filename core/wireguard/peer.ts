/**
 * What the engine knows about one peer: keys, endpoint, handshake in progress, sessions, packets
 * waiting for a session, and the timers of paper 6 as plain deadlines (Infinity = not armed).
 * The device drives all of it; a Peer has no behaviour of its own beyond bookkeeping.
 *
 * @module
 */
import type { IpBytes, Prefix } from "../wire/addr.ts";
import { formatIP } from "../wire/addr.ts";
import { CookieGenerator } from "./cookie.ts";
import type { HandshakeState, PeerKeys } from "./handshake.ts";
import type { Keypairs } from "./keypair.ts";

/** A UDP address of a peer. */
export interface Endpoint {
  readonly address: IpBytes;
  readonly port: number;
}

export function endpointEquals(a: Endpoint | undefined, b: Endpoint): boolean {
  if (!a || a.port !== b.port || a.address.length !== b.address.length) return false;
  for (let i = 0; i < a.address.length; i++) if (a.address[i] !== b.address[i]) return false;
  return true;
}

export function formatEndpoint(e: Endpoint): string {
  const host = formatIP(e.address);
  return e.address.length === 16 ? `[${host}]:${e.port}` : `${host}:${e.port}`;
}

/** Per-peer options, shaped like a wg-quick [Peer] section. */
export interface PeerOptions {
  publicKey: Uint8Array;
  presharedKey?: Uint8Array;
  /** A literal endpoint; for a hostname, the host resolves it and calls `setEndpoint`. */
  endpoint?: Endpoint;
  /** The configured endpoint text when it is a hostname, so it can be re-resolved. */
  endpointHost?: { host: string; port: number };
  allowedIPs: Prefix[];
  /** Seconds; 0 or undefined is off. */
  persistentKeepalive?: number;
}

export interface PeerTimers {
  /** Resend an initiation that got no response (Rekey-Timeout + jitter). */
  retransmitHandshake: number;
  /** We received data and sent nothing back: send a keepalive (Keepalive-Timeout). */
  sendKeepalive: number;
  /** We sent data and heard nothing: start a handshake (Keepalive-Timeout + Rekey-Timeout). */
  newHandshake: number;
  /** Erase all session keys (3 × Reject-After-Time after the last session was derived). */
  zeroKeyMaterial: number;
  persistentKeepalive: number;
}

export interface PeerStats {
  rxBytes: number;
  txBytes: number;
  /** Wall-clock milliseconds of the last completed handshake, 0 if none. */
  lastHandshakeWall: number;
  handshakesCompleted: number;
}

export class Peer {
  readonly publicKey: Uint8Array;
  readonly keys: PeerKeys;
  readonly cookies: CookieGenerator;
  endpoint: Endpoint | undefined;
  readonly endpointHost: { host: string; port: number } | undefined;
  /** Milliseconds; 0 is off. */
  persistentKeepaliveInterval: number;

  /** Our initiation waiting for its response. */
  handshake: (HandshakeState & { sentAt: number }) | undefined;
  /** The newest TAI64N timestamp accepted from this peer: older initiations are replays. */
  newestTimestamp: Uint8Array | undefined;
  lastInitiationConsumedAt = -Infinity;
  lastInitiationSentAt = -Infinity;
  handshakeAttempts = 0;
  /** Set once per session so that a receiving initiator asks for a fresh one only once. */
  sentLastMinuteHandshake = false;
  needAnotherKeepalive = false;

  readonly keypairs: Keypairs = {};
  /** Packets that wait for a session; copies, oldest first. */
  readonly staged: Uint8Array[] = [];
  readonly timers: PeerTimers = {
    retransmitHandshake: Infinity,
    sendKeepalive: Infinity,
    newHandshake: Infinity,
    zeroKeyMaterial: Infinity,
    persistentKeepalive: Infinity,
  };
  readonly stats: PeerStats = {
    rxBytes: 0,
    txBytes: 0,
    lastHandshakeWall: 0,
    handshakesCompleted: 0,
  };

  constructor(options: PeerOptions, keys: PeerKeys) {
    this.publicKey = options.publicKey;
    this.keys = keys;
    this.cookies = new CookieGenerator(options.publicKey);
    this.endpoint = options.endpoint;
    this.endpointHost = options.endpointHost;
    this.persistentKeepaliveInterval = (options.persistentKeepalive ?? 0) * 1000;
  }

  /** The earliest armed timer. */
  nextDeadline(): number {
    const t = this.timers;
    return Math.min(
      t.retransmitHandshake,
      t.sendKeepalive,
      t.newHandshake,
      t.zeroKeyMaterial,
      t.persistentKeepalive,
    );
  }

  /** Secrets never print: a peer shows as its public key. */
  toString(): string {
    return `Peer(${btoa(String.fromCharCode(...this.publicKey))})`;
  }
}
