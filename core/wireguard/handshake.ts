/**
 * Noise_IKpsk2 as the WireGuard paper (5.4.2 – 5.4.5) specifies it. Each step is preceded by the
 * line of the paper it implements. The functions build and consume message bodies; MACs, indices
 * bookkeeping, rate limits and timers belong to the device.
 *
 * @module
 */
import {
  CONSTRUCTION,
  IDENTIFIER,
  MessageInitiationType,
  MessageResponseType,
} from "./constants.ts";
import {
  compareBytes,
  dh,
  dhGenerate,
  dhPublic,
  EMPTY,
  hash,
  hashString,
  kdf1,
  kdf2,
  kdf3,
  open,
  seal,
  tai64n,
} from "./crypto.ts";
import { Initiation, readU32, Response, writeHeader, writeU32 } from "../wire/wireguard.ts";

const encoder = new TextEncoder();
/** Ci = HASH(CONSTRUCTION) */
const initialChainKey = hashString(CONSTRUCTION);
/** Hi = HASH(Ci || IDENTIFIER) */
const initialHashBase = hash(initialChainKey, encoder.encode(IDENTIFIER));

/** Hi = HASH(Hi || Spub_r): the responder's static key opens the transcript. */
export function initialHash(responderPublic: Uint8Array): Uint8Array {
  return hash(initialHashBase, responderPublic);
}

export interface LocalIdentity {
  readonly privateKey: Uint8Array;
  readonly publicKey: Uint8Array;
  /** initialHash(publicKey), computed once: every initiation we receive starts from it. */
  readonly initialHash: Uint8Array;
}

export function localIdentity(privateKey: Uint8Array): LocalIdentity {
  const publicKey = dhPublic(privateKey);
  return { privateKey, publicKey, initialHash: initialHash(publicKey) };
}

/** What one side keeps of a handshake in progress. */
export interface HandshakeState {
  chainKey: Uint8Array;
  hash: Uint8Array;
  localEphemeral: Uint8Array;
  remoteEphemeral: Uint8Array;
  localIndex: number;
  remoteIndex: number;
}

export interface PeerKeys {
  readonly publicKey: Uint8Array;
  /** DH(Spriv_local, Spub_peer), computed once per peer. */
  readonly staticStatic: Uint8Array;
  /** Q in the paper: 32 zero bytes when no PresharedKey is set. */
  readonly presharedKey: Uint8Array;
}

/** Builds an initiation (MACs left zero) and the state to finish it with. */
export function createInitiation(
  local: LocalIdentity,
  peer: PeerKeys,
  localIndex: number,
  wallMs: number,
  random: (n: number) => Uint8Array,
): { message: Uint8Array; state: HandshakeState } {
  const msg = new Uint8Array(Initiation.size);
  writeHeader(msg, MessageInitiationType);
  writeU32(msg, Initiation.sender, localIndex);
  // Ci = HASH(CONSTRUCTION); Hi = HASH(HASH(Ci || IDENTIFIER) || Spub_r)
  let c = initialChainKey;
  let h = initialHash(peer.publicKey);
  // (Epriv_i, Epub_i) = DH-GENERATE(); Ci = KDF1(Ci, Epub_i); msg.unencrypted_ephemeral = Epub_i
  const ePriv = dhGenerate(random);
  const ePub = dhPublic(ePriv);
  c = kdf1(c, ePub);
  msg.set(ePub, Initiation.ephemeral);
  // Hi = HASH(Hi || msg.unencrypted_ephemeral)
  h = hash(h, ePub);
  // (Ci, κ) = KDF2(Ci, DH(Epriv_i, Spub_r)); msg.encrypted_static = AEAD(κ, 0, Spub_i, Hi)
  const es = dh(ePriv, peer.publicKey);
  if (!es) throw new RangeError("peer public key is a low-order point");
  let k: Uint8Array;
  [c, k] = kdf2(c, es);
  const encStatic = seal(k, local.publicKey, h);
  msg.set(encStatic, Initiation.encryptedStatic);
  // Hi = HASH(Hi || msg.encrypted_static)
  h = hash(h, encStatic);
  // (Ci, κ) = KDF2(Ci, DH(Spriv_i, Spub_r)); msg.encrypted_timestamp = AEAD(κ, 0, TAI64N(), Hi)
  [c, k] = kdf2(c, peer.staticStatic);
  const encTs = seal(k, tai64n(wallMs), h);
  msg.set(encTs, Initiation.encryptedTimestamp);
  // Hi = HASH(Hi || msg.encrypted_timestamp)
  h = hash(h, encTs);
  return {
    message: msg,
    state: {
      chainKey: c,
      hash: h,
      localEphemeral: ePriv,
      remoteEphemeral: EMPTY,
      localIndex,
      remoteIndex: 0,
    },
  };
}

export interface ConsumedInitiation {
  peerPublicKey: Uint8Array;
  timestamp: Uint8Array;
  state: HandshakeState;
}

/**
 * Opens an initiation addressed to us. `findPeer` maps the decrypted static key to that peer's
 * precomputed keys (undefined for an unknown key, which ends the handshake).
 */
export function consumeInitiation(
  local: LocalIdentity,
  msg: Uint8Array,
  findPeer: (publicKey: Uint8Array) => PeerKeys | undefined,
): (ConsumedInitiation & { peer: PeerKeys }) | undefined {
  const ePub = msg.slice(Initiation.ephemeral, Initiation.ephemeral + 32);
  let c = kdf1(initialChainKey, ePub);
  let h = hash(local.initialHash, ePub);
  const es = dh(local.privateKey, ePub);
  if (!es) return undefined;
  let k: Uint8Array;
  [c, k] = kdf2(c, es);
  const encStatic = msg.subarray(Initiation.encryptedStatic, Initiation.encryptedTimestamp);
  const peerPublic = open(k, encStatic, h);
  if (!peerPublic) return undefined;
  h = hash(h, encStatic);
  const peer = findPeer(peerPublic);
  if (!peer) return undefined;
  [c, k] = kdf2(c, peer.staticStatic);
  const encTs = msg.subarray(Initiation.encryptedTimestamp, Initiation.mac1);
  const timestamp = open(k, encTs, h);
  if (!timestamp) return undefined;
  h = hash(h, encTs);
  return {
    peer,
    peerPublicKey: peerPublic,
    timestamp,
    state: {
      chainKey: c,
      hash: h,
      localEphemeral: EMPTY,
      remoteEphemeral: ePub,
      localIndex: 0,
      remoteIndex: readU32(msg, Initiation.sender),
    },
  };
}

/** True when `timestamp` is strictly newer than the newest one accepted from the peer. */
export function timestampIsNewer(timestamp: Uint8Array, newest: Uint8Array | undefined): boolean {
  return newest === undefined || compareBytes(timestamp, newest) > 0;
}

/** Builds the response to a consumed initiation; returns the message and the final chain key. */
export function createResponse(
  peer: PeerKeys,
  state: HandshakeState,
  localIndex: number,
  random: (n: number) => Uint8Array,
): { message: Uint8Array; chainKey: Uint8Array } {
  const msg = new Uint8Array(Response.size);
  writeHeader(msg, MessageResponseType);
  writeU32(msg, Response.sender, localIndex);
  writeU32(msg, Response.receiver, state.remoteIndex);
  let c = state.chainKey, h = state.hash;
  // (Epriv_r, Epub_r) = DH-GENERATE(); Cr = KDF1(Cr, Epub_r); msg.unencrypted_ephemeral = Epub_r
  const ePriv = dhGenerate(random);
  const ePub = dhPublic(ePriv);
  c = kdf1(c, ePub);
  msg.set(ePub, Response.ephemeral);
  // Hr = HASH(Hr || msg.unencrypted_ephemeral)
  h = hash(h, ePub);
  // Cr = KDF1(Cr, DH(Epriv_r, Epub_i)); Cr = KDF1(Cr, DH(Epriv_r, Spub_i))
  const ee = dh(ePriv, state.remoteEphemeral);
  const se = dh(ePriv, peer.publicKey);
  if (!ee || !se) throw new RangeError("low-order ephemeral or static key");
  c = kdf1(c, ee);
  c = kdf1(c, se);
  // (Cr, τ, κ) = KDF3(Cr, Q); Hr = HASH(Hr || τ)
  const [c3, tau, k] = kdf3(c, peer.presharedKey);
  c = c3;
  h = hash(h, tau);
  // msg.encrypted_nothing = AEAD(κ, 0, ε, Hr); Hr = HASH(Hr || msg.encrypted_nothing)
  const encNothing = seal(k, EMPTY, h);
  msg.set(encNothing, Response.encryptedNothing);
  return { message: msg, chainKey: c };
}

/** Opens a response to our initiation; returns the final chain key or undefined. */
export function consumeResponse(
  local: LocalIdentity,
  peer: PeerKeys,
  state: HandshakeState,
  msg: Uint8Array,
): Uint8Array | undefined {
  const ePub = msg.subarray(Response.ephemeral, Response.ephemeral + 32);
  let c = kdf1(state.chainKey, ePub);
  let h = hash(state.hash, ePub);
  const ee = dh(state.localEphemeral, ePub);
  const se = dh(local.privateKey, ePub);
  if (!ee || !se) return undefined;
  c = kdf1(c, ee);
  c = kdf1(c, se);
  const [c3, tau, k] = kdf3(c, peer.presharedKey);
  h = hash(h, tau);
  const encNothing = msg.subarray(Response.encryptedNothing, Response.mac1);
  if (!open(k, encNothing, h)) return undefined;
  return c3;
}

/**
 * (T_send_i = T_recv_r, T_recv_i = T_send_r) = KDF2(Ci = Cr, ε)
 */
export function deriveTransportKeys(
  chainKey: Uint8Array,
  isInitiator: boolean,
): { send: Uint8Array; receive: Uint8Array } {
  const [a, b] = kdf2(chainKey, EMPTY);
  return isInitiator ? { send: a, receive: b } : { send: b, receive: a };
}
