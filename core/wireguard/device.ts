/**
 * The WireGuard engine: one local identity, its peers, and the protocol between them, as a pure
 * state machine. The host calls three entry points and acts on what the handlers receive:
 *
 *   receive(now, from, datagram)  UDP from the network   → handlers.deliver(ip packet, peer)
 *                                                          handlers.sendUdp(handshake / cookie)
 *   send(now, ipPacket)           IP from the stack      → handlers.sendUdp(transport message),
 *                                                          or sealed straight into the buffer
 *                                                          handlers.udpSlot gives, if it does
 *   tick(now)                     at pollAt()            → retransmits, keepalives, rekeys
 *
 * `now` is a monotonic time in milliseconds; the engine never reads a clock. TAI64N needs the
 * wall clock, which is `now + wallClockOffset`. Everything runs synchronously on the caller's
 * turn, so the per-packet path has no promises and decrypts in place in the datagram it is given.
 *
 * @module
 */
import { type IpBytes, type Prefix, prefixContains } from "../wire/addr.ts";
import {
  messageType,
  readCounter,
  readU32,
  Response,
  Transport,
  writeCounter,
  writeHeader,
  writeU32,
} from "../wire/wireguard.ts";
import { CookieReply, Initiation } from "../wire/wireguard.ts";
import { AllowedIPs } from "./allowedips.ts";
import {
  AeadTagSize,
  HandshakeInitiationRate,
  KeepaliveTimeout,
  MaxStagedPackets,
  MaxTimerHandshakes,
  MessageCookieReplySize,
  MessageCookieReplyType,
  MessageInitiationSize,
  MessageInitiationType,
  MessageResponseSize,
  MessageResponseType,
  MessageTransportHeaderSize,
  MessageTransportMinSize,
  MessageTransportType,
  PaddingMultiple,
  RejectAfterMessages,
  RejectAfterTime,
  RekeyAfterMessages,
  RekeyAfterTime,
  RekeyTimeout,
  RekeyTimeoutJitterMax,
  ResolveEveryAttempts,
  UnderLoadAfterTime,
  UnderLoadThreshold,
} from "./constants.ts";
import { CookieChecker } from "./cookie.ts";
import { aeadOpen, aeadSeal, dh, EMPTY } from "./crypto.ts";
import {
  consumeInitiation,
  consumeResponse,
  createInitiation,
  createResponse,
  deriveTransportKeys,
  type LocalIdentity,
  localIdentity,
  type PeerKeys,
  timestampIsNewer,
} from "./handshake.ts";
import { Keypair } from "./keypair.ts";
import { type Endpoint, endpointEquals, Peer, type PeerOptions } from "./peer.ts";

export type { Endpoint, PeerOptions };
export { Peer };

/** Things worth a log line; the host decides how to log them. */
export type DeviceEvent =
  | { type: "handshake-initiated"; peer: Peer; retry: boolean }
  | { type: "handshake-complete"; peer: Peer; role: "initiator" | "responder" }
  | { type: "handshake-failed"; peer: Peer; attempts: number }
  | { type: "endpoint-changed"; peer: Peer; endpoint: Endpoint }
  | { type: "keys-zeroed"; peer: Peer }
  | { type: "under-load"; active: boolean };

export interface DeviceHandlers {
  /** Sends one datagram; the engine never touches `data` again. */
  sendUdp(to: Endpoint, data: Uint8Array): void;
  /**
   * Optional: queues a `length`-byte datagram to `to` and returns its bytes, which the engine
   * fills before it returns (transport messages are sealed straight into them; they are stale,
   * not zero); undefined if the host refused it (and counted that, as `sendUdp` would). Without
   * it every datagram goes through `sendUdp`.
   */
  udpSlot?(to: Endpoint, length: number): Uint8Array | undefined;
  /** A decrypted packet whose source the peer may use; a view into the received datagram. */
  deliver(packet: Uint8Array, peer: Peer): void;
  /** Asks the host to re-resolve a hostname endpoint and call `setEndpoint` with the result. */
  resolve?(peer: Peer): void;
  event?(event: DeviceEvent): void;
}

export interface DeviceOptions {
  privateKey: Uint8Array;
  peers?: PeerOptions[];
  /** Tunnel MTU: transport plaintext is padded up to it (paper 5.4.6). Default 1420. */
  mtu?: number;
  /** Wall clock = now + this, for TAI64N timestamps. Default: Date.now() - performance.now(). */
  wallClockOffset?: number;
  random?: (n: number) => Uint8Array;
}

/** Drops and their reasons; every malformed or refused input lands in exactly one counter. */
export interface DeviceStats {
  malformed: number;
  mac1Invalid: number;
  cookieRepliesSent: number;
  cookieRepliesAccepted: number;
  handshakeInvalid: number;
  initiationReplayed: number;
  initiationFlood: number;
  unknownIndex: number;
  counterTooLarge: number;
  staleKeypair: number;
  replayed: number;
  decryptFailed: number;
  invalidInnerPacket: number;
  allowedIPsMismatch: number;
  noRoute: number;
  noEndpoint: number;
  stagedDropped: number;
  keepalivesReceived: number;
  packetsReceived: number;
  packetsSent: number;
}

type IndexEntry =
  | { kind: "handshake"; peer: Peer }
  | { kind: "keypair"; peer: Peer; keypair: Keypair };

function defaultRandom(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
}

function keyId(key: Uint8Array): string {
  return String.fromCharCode(...key);
}

export class Device {
  readonly local: LocalIdentity;
  readonly stats: DeviceStats = {
    malformed: 0,
    mac1Invalid: 0,
    cookieRepliesSent: 0,
    cookieRepliesAccepted: 0,
    handshakeInvalid: 0,
    initiationReplayed: 0,
    initiationFlood: 0,
    unknownIndex: 0,
    counterTooLarge: 0,
    staleKeypair: 0,
    replayed: 0,
    decryptFailed: 0,
    invalidInnerPacket: 0,
    allowedIPsMismatch: 0,
    noRoute: 0,
    noEndpoint: 0,
    stagedDropped: 0,
    keepalivesReceived: 0,
    packetsReceived: 0,
    packetsSent: 0,
  };
  readonly mtu: number;

  readonly #handlers: DeviceHandlers;
  readonly #random: (n: number) => Uint8Array;
  readonly #wallClockOffset: number;
  readonly #cookies: CookieChecker;
  readonly #peers = new Map<string, Peer>();
  readonly #routes = new AllowedIPs<Peer>();
  /** Sources a peer may also use without being routed there (filtered policy routes). */
  readonly #extraSources = new Map<Peer, Prefix[]>();
  readonly #indices = new Map<number, IndexEntry>();
  // Handshake messages seen in the current one-second window, and how long load lasts.
  #loadWindowStart = -Infinity;
  #loadCount = 0;
  #underLoadUntil = -Infinity;

  constructor(options: DeviceOptions, handlers: DeviceHandlers) {
    this.local = localIdentity(options.privateKey);
    this.mtu = options.mtu ?? 1420;
    this.#handlers = handlers;
    this.#random = options.random ?? defaultRandom;
    this.#wallClockOffset = options.wallClockOffset ?? Date.now() - performance.now();
    this.#cookies = new CookieChecker(this.local.publicKey, this.#random);
    for (const p of options.peers ?? []) this.addPeer(p);
  }

  // --- Peers -------------------------------------------------------------------------------

  addPeer(options: PeerOptions): Peer {
    const id = keyId(options.publicKey);
    if (this.#peers.has(id)) throw new RangeError("a peer with this public key already exists");
    const staticStatic = dh(this.local.privateKey, options.publicKey);
    if (!staticStatic) throw new RangeError("peer public key is a low-order point");
    const keys: PeerKeys = {
      publicKey: options.publicKey,
      staticStatic,
      presharedKey: options.presharedKey ?? new Uint8Array(32),
    };
    const peer = new Peer(options, keys);
    this.#peers.set(id, peer);
    for (const prefix of options.allowedIPs) this.#routes.insert(prefix, peer);
    return peer;
  }

  removePeer(peer: Peer): void {
    this.#peers.delete(keyId(peer.publicKey));
    this.#routes.removeValue(peer);
    this.#extraSources.delete(peer);
    this.#zeroKeys(peer);
  }

  /**
   * Routes `prefix` to `peer` in both directions, exactly as adding it to the peer's AllowedIPs
   * would: `send` picks the peer for destinations in it (longest prefix wins), and the peer may
   * send from it. This is wg-quick's exit node (`0.0.0.0/0`) or a policy route.
   */
  addRoute(prefix: Prefix, peer: Peer): void {
    this.#routes.insert(prefix, peer);
  }

  /**
   * Lets `peer` send from `prefix` without routing `prefix` to it: for policy routes that match
   * only some traffic (one protocol or port), whose packets go out with {@link sendToPeer} and
   * whose replies must pass the inbound source check.
   */
  acceptFrom(prefix: Prefix, peer: Peer): void {
    const list = this.#extraSources.get(peer);
    if (list) list.push(prefix);
    else this.#extraSources.set(peer, [prefix]);
  }

  #acceptsFrom(peer: Peer, src: IpBytes): boolean {
    return this.#extraSources.get(peer)?.some((p) => prefixContains(p, src)) ?? false;
  }

  get peers(): Iterable<Peer> {
    return this.#peers.values();
  }

  peerByPublicKey(publicKey: Uint8Array): Peer | undefined {
    return this.#peers.get(keyId(publicKey));
  }

  /** The peer whose AllowedIPs cover `dst` (longest prefix), or undefined. */
  route(dst: IpBytes): Peer | undefined {
    return this.#routes.lookup(dst);
  }

  /** Sets a peer's endpoint, e.g. after the host resolved its hostname. */
  setEndpoint(peer: Peer, endpoint: Endpoint): void {
    if (endpointEquals(peer.endpoint, endpoint)) return;
    peer.endpoint = endpoint;
    this.#handlers.event?.({ type: "endpoint-changed", peer, endpoint });
  }

  // --- Outbound ----------------------------------------------------------------------------

  /**
   * Sends an IP packet to the peer its destination routes to. Returns false when no peer's
   * AllowedIPs cover the destination (the caller may send it elsewhere). The packet is copied
   * into the datagram, so the caller keeps ownership.
   */
  send(now: number, packet: Uint8Array): boolean {
    const dst = destinationOf(packet);
    const peer = dst && this.#routes.lookup(dst);
    if (!peer) {
      this.stats.noRoute++;
      return false;
    }
    this.sendToPeer(now, peer, packet);
    return true;
  }

  /** Sends an IP packet to a given peer (policy routing picks the peer itself). */
  sendToPeer(now: number, peer: Peer, packet: Uint8Array): void {
    if (!this.#encryptAndSend(now, peer, packet)) {
      if (peer.staged.length >= MaxStagedPackets) {
        peer.staged.shift();
        this.stats.stagedDropped++;
      }
      peer.staged.push(packet.slice());
      this.#initiateHandshake(now, peer, false);
    }
  }

  /** Starts a handshake now (as wg does on `wg set ... endpoint`, or for tests). */
  initiate(now: number, peer: Peer): void {
    this.#initiateHandshake(now, peer, false);
  }

  /** Encrypts with the current session; false when there is no usable session. */
  #encryptAndSend(now: number, peer: Peer, packet: Uint8Array): boolean {
    const kp = peer.keypairs.current;
    if (
      !kp || now - kp.createdAt >= RejectAfterTime || kp.sendCounter >= RejectAfterMessages ||
      kp.sendCounter >= Number.MAX_SAFE_INTEGER
    ) return false;
    if (!peer.endpoint) {
      this.stats.noEndpoint++;
      return true; // nowhere to send: the packet is lost, as it would be with wg
    }
    const counter = kp.sendCounter++;
    // Paper 5.4.6: pad to a multiple of 16, without going past the MTU.
    let padded = packet.length === 0
      ? 0
      : Math.ceil(packet.length / PaddingMultiple) * PaddingMultiple;
    if (padded > this.mtu) padded = Math.max(packet.length, this.mtu);
    const size = MessageTransportHeaderSize + padded + AeadTagSize;
    const udpSlot = this.#handlers.udpSlot;
    // Refused by the host: sealed into a throwaway, so the timers below run as for a lost packet.
    const slot = udpSlot?.(peer.endpoint, size);
    const msg = slot ?? new Uint8Array(size);
    writeHeader(msg, MessageTransportType);
    writeU32(msg, Transport.receiver, kp.remoteIndex);
    writeCounter(msg, Transport.counter, counter);
    const plain = msg.subarray(Transport.content, Transport.content + padded);
    plain.set(packet);
    if (slot) plain.fill(0, packet.length); // the padding is zeros (paper 5.4.6), the slot stale
    aeadSeal(kp.sendKey, counter, plain, EMPTY, msg.subarray(Transport.content));
    if (udpSlot) peer.stats.txBytes += size; // counted as sendUdp counts, queued or refused
    else this.#sendUdp(peer, msg);
    this.stats.packetsSent++;

    const t = peer.timers;
    t.sendKeepalive = Infinity; // any authenticated packet sent answers the peer
    if (packet.length > 0 && t.newHandshake === Infinity) {
      t.newHandshake = now + KeepaliveTimeout + RekeyTimeout + this.#jitter();
    }
    this.#authenticatedTraversal(now, peer);
    // Paper 6.2: the initiator of the current session rekeys it when it ages or wears out.
    if (
      kp.isInitiator &&
      (now - kp.createdAt >= RekeyAfterTime || kp.sendCounter >= RekeyAfterMessages)
    ) this.#initiateHandshake(now, peer, false);
    return true;
  }

  #sendKeepalive(now: number, peer: Peer): void {
    if (peer.staged.length > 0) {
      this.#flushStaged(now, peer);
      return;
    }
    if (!this.#encryptAndSend(now, peer, EMPTY)) this.#initiateHandshake(now, peer, false);
  }

  #flushStaged(now: number, peer: Peer): void {
    while (peer.staged.length > 0) {
      if (!this.#encryptAndSend(now, peer, peer.staged[0]!)) {
        this.#initiateHandshake(now, peer, false);
        return;
      }
      peer.staged.shift();
    }
  }

  #initiateHandshake(now: number, peer: Peer, retry: boolean): void {
    if (!retry) {
      // A fresh attempt is rate-limited to one per Rekey-Timeout (paper 6.4).
      if (now - peer.lastInitiationSentAt < RekeyTimeout) return;
      peer.handshakeAttempts = 0;
    }
    if (!peer.endpoint) {
      this.stats.noEndpoint++;
      if (peer.endpointHost) this.#handlers.resolve?.(peer);
      return;
    }
    if (peer.handshake) this.#indices.delete(peer.handshake.localIndex);
    const localIndex = this.#newIndex();
    const { message, state } = createInitiation(
      this.local,
      peer.keys,
      localIndex,
      now + this.#wallClockOffset,
      this.#random,
    );
    peer.cookies.addMacs(now, message, Initiation.mac1);
    peer.handshake = { ...state, sentAt: now };
    peer.lastInitiationSentAt = now;
    this.#indices.set(localIndex, { kind: "handshake", peer });
    this.#sendUdp(peer, message);
    this.#authenticatedTraversal(now, peer);
    peer.timers.retransmitHandshake = now + RekeyTimeout + this.#jitter();
    this.#handlers.event?.({ type: "handshake-initiated", peer, retry });
  }

  #sendUdp(peer: Peer, data: Uint8Array): void {
    peer.stats.txBytes += data.length;
    this.#handlers.sendUdp(peer.endpoint!, data);
  }

  // --- Inbound -----------------------------------------------------------------------------

  /** Handles one UDP datagram from `from`. Never throws on any input. */
  receive(now: number, from: Endpoint, datagram: Uint8Array): void {
    switch (messageType(datagram)) {
      case MessageTransportType:
        if (datagram.length < MessageTransportMinSize) break;
        return this.#receiveTransport(now, from, datagram);
      case MessageInitiationType:
        if (datagram.length !== MessageInitiationSize) break;
        return this.#receiveInitiation(now, from, datagram);
      case MessageResponseType:
        if (datagram.length !== MessageResponseSize) break;
        return this.#receiveResponse(now, from, datagram);
      case MessageCookieReplyType:
        if (datagram.length !== MessageCookieReplySize) break;
        return this.#receiveCookieReply(now, datagram);
    }
    this.stats.malformed++;
  }

  /** MAC1 always; under load also MAC2, answering a cookie reply when it is missing. */
  #admitHandshake(now: number, from: Endpoint, msg: Uint8Array, mac1Offset: number): boolean {
    if (!this.#cookies.checkMac1(msg, mac1Offset)) {
      this.stats.mac1Invalid++;
      return false;
    }
    if (!this.#underLoad(now)) return true;
    const source = endpointBytes(from);
    if (this.#cookies.checkMac2(now, msg, mac1Offset + 16, source)) return true;
    const sender = readU32(msg, 4); // both handshake messages carry the sender index here
    this.#handlers.sendUdp(from, this.#cookies.createReply(now, msg, sender, mac1Offset, source));
    this.stats.cookieRepliesSent++;
    return false;
  }

  #underLoad(now: number): boolean {
    if (now - this.#loadWindowStart >= 1000) {
      this.#loadWindowStart = now;
      this.#loadCount = 0;
    }
    this.#loadCount++;
    const wasUnderLoad = now < this.#underLoadUntil;
    if (this.#loadCount > UnderLoadThreshold) this.#underLoadUntil = now + UnderLoadAfterTime;
    const isUnderLoad = now < this.#underLoadUntil;
    if (isUnderLoad !== wasUnderLoad) {
      this.#handlers.event?.({ type: "under-load", active: isUnderLoad });
    }
    return isUnderLoad;
  }

  #receiveInitiation(now: number, from: Endpoint, msg: Uint8Array): void {
    if (!this.#admitHandshake(now, from, msg, Initiation.mac1)) return;
    const consumed = consumeInitiation(
      this.local,
      msg,
      (key) => this.#peers.get(keyId(key))?.keys,
    );
    if (!consumed) {
      this.stats.handshakeInvalid++;
      return;
    }
    const peer = this.#peers.get(keyId(consumed.peerPublicKey))!;
    // Paper 5.1: a timestamp not newer than the newest seen is a replayed initiation.
    if (!timestampIsNewer(consumed.timestamp, peer.newestTimestamp)) {
      this.stats.initiationReplayed++;
      return;
    }
    if (now - peer.lastInitiationConsumedAt < HandshakeInitiationRate) {
      this.stats.initiationFlood++;
      return;
    }
    peer.newestTimestamp = consumed.timestamp;
    peer.lastInitiationConsumedAt = now;
    this.setEndpoint(peer, from);

    const localIndex = this.#newIndex();
    const { message, chainKey } = createResponse(
      peer.keys,
      consumed.state,
      localIndex,
      this.#random,
    );
    peer.cookies.addMacs(now, message, Response.mac1);
    // Our own initiation, if any, loses to theirs: its response could no longer be matched.
    if (peer.handshake) {
      this.#indices.delete(peer.handshake.localIndex);
      peer.handshake = undefined;
    }
    const keys = deriveTransportKeys(chainKey, false);
    const kp = new Keypair(
      keys.send,
      keys.receive,
      false,
      now,
      localIndex,
      consumed.state.remoteIndex,
    );
    // The responder may not send with the new session until the initiator has used it.
    const { previous, next } = peer.keypairs;
    if (next) this.#dropKeypair(next);
    if (previous) this.#dropKeypair(previous);
    peer.keypairs.previous = undefined;
    peer.keypairs.next = kp;
    this.#indices.set(localIndex, { kind: "keypair", peer, keypair: kp });
    this.#sendUdp(peer, message);
    this.#authenticatedReceived(peer, msg.length);
    this.#authenticatedTraversal(now, peer);
    this.#sessionDerived(now, peer);
  }

  #receiveResponse(now: number, from: Endpoint, msg: Uint8Array): void {
    if (!this.#admitHandshake(now, from, msg, Response.mac1)) return;
    const entry = this.#indices.get(readU32(msg, Response.receiver));
    const peer = entry?.kind === "handshake" ? entry.peer : undefined;
    const hs = peer?.handshake;
    if (!peer || !hs || hs.localIndex !== readU32(msg, Response.receiver)) {
      this.stats.unknownIndex++;
      return;
    }
    const chainKey = consumeResponse(this.local, peer.keys, hs, msg);
    if (!chainKey) {
      this.stats.handshakeInvalid++;
      return;
    }
    peer.handshake = undefined;
    const keys = deriveTransportKeys(chainKey, true);
    const kp = new Keypair(
      keys.send,
      keys.receive,
      true,
      now,
      hs.localIndex,
      readU32(msg, Response.sender),
    );
    const kps = peer.keypairs;
    if (kps.previous) this.#dropKeypair(kps.previous);
    if (kps.next) {
      // The responder-side session was never confirmed; it becomes the one to phase out.
      kps.previous = kps.next;
      kps.next = undefined;
      if (kps.current) this.#dropKeypair(kps.current);
    } else {
      kps.previous = kps.current;
    }
    kps.current = kp;
    this.#indices.set(hs.localIndex, { kind: "keypair", peer, keypair: kp });
    this.setEndpoint(peer, from);
    this.#handshakeComplete(now, peer, "initiator");
    this.#sessionDerived(now, peer);
    this.#authenticatedReceived(peer, msg.length);
    this.#authenticatedTraversal(now, peer);
    // Send what waited for this session; with nothing waiting, a keepalive confirms it.
    if (peer.staged.length > 0) this.#flushStaged(now, peer);
    else this.#encryptAndSend(now, peer, EMPTY);
  }

  #receiveCookieReply(now: number, msg: Uint8Array): void {
    const entry = this.#indices.get(readU32(msg, CookieReply.receiver));
    if (!entry) {
      this.stats.unknownIndex++;
      return;
    }
    if (entry.peer.cookies.consumeReply(now, msg)) this.stats.cookieRepliesAccepted++;
    else this.stats.handshakeInvalid++;
  }

  #receiveTransport(now: number, from: Endpoint, msg: Uint8Array): void {
    const entry = this.#indices.get(readU32(msg, Transport.receiver));
    if (!entry || entry.kind !== "keypair") {
      this.stats.unknownIndex++;
      return;
    }
    const { peer, keypair: kp } = entry;
    const counter = readCounter(msg, Transport.counter);
    if (counter < 0) {
      this.stats.counterTooLarge++;
      return;
    }
    if (now - kp.createdAt >= RejectAfterTime) {
      this.stats.staleKeypair++;
      return;
    }
    // Cheap check first; the window only moves once the packet is authenticated.
    if (!kp.replay.check(counter)) {
      this.stats.replayed++;
      return;
    }
    const plain = msg.subarray(Transport.content, msg.length - AeadTagSize);
    if (!aeadOpen(kp.receiveKey, counter, msg.subarray(Transport.content), EMPTY, plain)) {
      this.stats.decryptFailed++;
      return;
    }
    kp.replay.accept(counter);
    this.stats.packetsReceived++;

    const kps = peer.keypairs;
    if (kp === kps.next) {
      // The initiator used the new session: it is confirmed (paper 5.4.5 / 6.1).
      if (kps.previous) this.#dropKeypair(kps.previous);
      kps.previous = kps.current;
      kps.current = kp;
      kps.next = undefined;
      this.#handshakeComplete(now, peer, "responder");
      this.#flushStaged(now, peer);
    }
    this.setEndpoint(peer, from);
    // Paper 6.2: an initiator receiving on an old session asks for a new one before it expires.
    const current = kps.current;
    if (
      current && current === kp && current.isInitiator && !peer.sentLastMinuteHandshake &&
      now - current.createdAt >= RejectAfterTime - KeepaliveTimeout - RekeyTimeout
    ) {
      peer.sentLastMinuteHandshake = true;
      this.#initiateHandshake(now, peer, false);
    }
    this.#authenticatedReceived(peer, msg.length);
    this.#authenticatedTraversal(now, peer);
    if (plain.length === 0) {
      this.stats.keepalivesReceived++;
      return;
    }
    // Data received: if we send nothing back within Keepalive-Timeout, a keepalive goes out.
    if (peer.timers.sendKeepalive === Infinity) peer.timers.sendKeepalive = now + KeepaliveTimeout;
    else peer.needAnotherKeepalive = true;

    const length = innerLength(plain);
    if (length === 0) {
      this.stats.invalidInnerPacket++;
      return;
    }
    const packet = plain.subarray(0, length);
    // Cryptokey routing inbound: the source must be one this peer is allowed to use.
    const src = sourceOf(packet);
    if (!src || (this.#routes.lookup(src) !== peer && !this.#acceptsFrom(peer, src))) {
      this.stats.allowedIPsMismatch++;
      return;
    }
    this.#handlers.deliver(packet, peer);
  }

  // --- Timers (paper 6; names follow wireguard-go's timers.go) ---------------------------------

  /** The earliest time `tick` has work, or Infinity. */
  pollAt(): number {
    let at = Infinity;
    for (const peer of this.#peers.values()) at = Math.min(at, peer.nextDeadline());
    return at;
  }

  tick(now: number): void {
    for (const peer of this.#peers.values()) {
      const t = peer.timers;
      if (t.retransmitHandshake <= now) {
        t.retransmitHandshake = Infinity;
        this.#retransmitHandshake(now, peer);
      }
      if (t.sendKeepalive <= now) {
        t.sendKeepalive = Infinity;
        this.#sendKeepalive(now, peer);
        if (peer.needAnotherKeepalive) {
          peer.needAnotherKeepalive = false;
          t.sendKeepalive = now + KeepaliveTimeout;
        }
      }
      if (t.newHandshake <= now) {
        // We sent data and heard nothing for Keepalive-Timeout + Rekey-Timeout.
        t.newHandshake = Infinity;
        this.#initiateHandshake(now, peer, false);
      }
      if (t.zeroKeyMaterial <= now) {
        t.zeroKeyMaterial = Infinity;
        this.#zeroKeys(peer);
        this.#handlers.event?.({ type: "keys-zeroed", peer });
      }
      if (t.persistentKeepalive <= now) {
        t.persistentKeepalive = Infinity;
        if (peer.persistentKeepaliveInterval > 0) this.#sendKeepalive(now, peer);
      }
    }
  }

  #retransmitHandshake(now: number, peer: Peer): void {
    if (peer.handshakeAttempts >= MaxTimerHandshakes) {
      // Rekey-Attempt-Time has passed: give up, drop what waited, erase keys later.
      this.#handlers.event?.({ type: "handshake-failed", peer, attempts: peer.handshakeAttempts });
      peer.timers.sendKeepalive = Infinity;
      this.stats.stagedDropped += peer.staged.length;
      peer.staged.length = 0;
      if (peer.handshake) this.#indices.delete(peer.handshake.localIndex);
      peer.handshake = undefined;
      if (peer.timers.zeroKeyMaterial === Infinity) {
        peer.timers.zeroKeyMaterial = now + 3 * RejectAfterTime;
      }
      return;
    }
    peer.handshakeAttempts++;
    if (peer.endpointHost && peer.handshakeAttempts % ResolveEveryAttempts === 0) {
      this.#handlers.resolve?.(peer);
    }
    this.#initiateHandshake(now, peer, true);
  }

  #handshakeComplete(now: number, peer: Peer, role: "initiator" | "responder"): void {
    peer.timers.retransmitHandshake = Infinity;
    peer.handshakeAttempts = 0;
    peer.sentLastMinuteHandshake = false;
    peer.stats.lastHandshakeWall = now + this.#wallClockOffset;
    peer.stats.handshakesCompleted++;
    this.#handlers.event?.({ type: "handshake-complete", peer, role });
  }

  #sessionDerived(now: number, peer: Peer): void {
    peer.timers.zeroKeyMaterial = now + 3 * RejectAfterTime;
  }

  #authenticatedReceived(peer: Peer, bytes: number): void {
    peer.stats.rxBytes += bytes;
    peer.timers.newHandshake = Infinity;
  }

  #authenticatedTraversal(now: number, peer: Peer): void {
    if (peer.persistentKeepaliveInterval > 0) {
      peer.timers.persistentKeepalive = now + peer.persistentKeepaliveInterval;
    }
  }

  // --- Helpers -----------------------------------------------------------------------------

  #zeroKeys(peer: Peer): void {
    const kps = peer.keypairs;
    for (const kp of [kps.previous, kps.current, kps.next]) if (kp) this.#dropKeypair(kp);
    kps.previous = kps.current = kps.next = undefined;
    if (peer.handshake) this.#indices.delete(peer.handshake.localIndex);
    peer.handshake = undefined;
  }

  #dropKeypair(kp: Keypair): void {
    const entry = this.#indices.get(kp.localIndex);
    if (entry?.kind === "keypair" && entry.keypair === kp) this.#indices.delete(kp.localIndex);
    kp.wipe();
  }

  #newIndex(): number {
    for (;;) {
      const b = this.#random(4);
      const index = (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
      if (!this.#indices.has(index)) return index;
    }
  }

  #jitter(): number {
    const b = this.#random(2);
    return ((b[0]! << 8) | b[1]!) % RekeyTimeoutJitterMax;
  }
}

/** The destination address of an IPv4/IPv6 packet (a view), or undefined if malformed. */
export function destinationOf(packet: Uint8Array): IpBytes | undefined {
  const version = packet[0]! >> 4;
  if (version === 4 && packet.length >= 20) return packet.subarray(16, 20);
  if (version === 6 && packet.length >= 40) return packet.subarray(24, 40);
  return undefined;
}

function sourceOf(packet: Uint8Array): IpBytes | undefined {
  const version = packet[0]! >> 4;
  if (version === 4) return packet.subarray(12, 16);
  if (version === 6) return packet.subarray(8, 24);
  return undefined;
}

/** The IP packet's own length inside padded plaintext; 0 when the header is not valid. */
function innerLength(plain: Uint8Array): number {
  const version = plain[0]! >> 4;
  if (version === 4 && plain.length >= 20) {
    const total = (plain[2]! << 8) | plain[3]!;
    return total >= 20 && total <= plain.length ? total : 0;
  }
  if (version === 6 && plain.length >= 40) {
    const total = 40 + ((plain[4]! << 8) | plain[5]!);
    return total <= plain.length ? total : 0;
  }
  return 0;
}

/** The cookie's source binding: address bytes then the port, big-endian. */
function endpointBytes(e: Endpoint): Uint8Array {
  const out = new Uint8Array(e.address.length + 2);
  out.set(e.address);
  out[e.address.length] = e.port >> 8;
  out[e.address.length + 1] = e.port & 0xff;
  return out;
}
