/**
 * DoS mitigation (paper 5.3 and 5.4.7): MAC1 proves a sender knows our public key; under load,
 * MAC2 proves it can receive at its source address, via a cookie we sent there encrypted.
 *
 *   responder: τ = MAC(Rm, Am)                      Rm random, changed every 2 minutes
 *              msg.encrypted_cookie = XAEAD(HASH(LABEL_COOKIE || Spub_m), nonce, τ, M's mac1)
 *   initiator: msg.mac2 = MAC(τ, msg[0 : offsetof(mac2)]) while τ is younger than 120 s
 *
 * @module
 */
import { CookieRefreshTime, LABEL_COOKIE, LABEL_MAC1 } from "./constants.ts";
import { equalConstantTime, hash, mac, xaeadOpen, xaeadSeal } from "./crypto.ts";
import { CookieReply, writeHeader, writeU32 } from "../wire/wireguard.ts";
import { MessageCookieReplyType } from "./constants.ts";

const encoder = new TextEncoder();
const labelMac1 = encoder.encode(LABEL_MAC1);
const labelCookie = encoder.encode(LABEL_COOKIE);

export function mac1Key(publicKey: Uint8Array): Uint8Array {
  return hash(labelMac1, publicKey);
}

export function cookieKey(publicKey: Uint8Array): Uint8Array {
  return hash(labelCookie, publicKey);
}

/** Checks MAC1 and, when asked, MAC2 of our own incoming handshake messages. */
export class CookieChecker {
  readonly #mac1Key: Uint8Array;
  readonly #encryptionKey: Uint8Array;
  #secret: Uint8Array;
  #secretSetAt = -Infinity;
  readonly #random: (n: number) => Uint8Array;

  constructor(ourPublicKey: Uint8Array, random: (n: number) => Uint8Array) {
    this.#mac1Key = mac1Key(ourPublicKey);
    this.#encryptionKey = cookieKey(ourPublicKey);
    this.#random = random;
    this.#secret = random(32);
  }

  /** MAC1 over msg[0:mac1Offset] must equal the 16 bytes at mac1Offset. */
  checkMac1(msg: Uint8Array, mac1Offset: number): boolean {
    const expected = mac(this.#mac1Key, msg.subarray(0, mac1Offset));
    return equalConstantTime(expected, msg.subarray(mac1Offset, mac1Offset + 16));
  }

  /** MAC2 must match the cookie we would give `source` now. */
  checkMac2(now: number, msg: Uint8Array, mac2Offset: number, source: Uint8Array): boolean {
    const cookie = this.#cookieFor(now, source);
    const expected = mac(cookie, msg.subarray(0, mac2Offset));
    return equalConstantTime(expected, msg.subarray(mac2Offset, mac2Offset + 16));
  }

  /** A 64-byte cookie reply to `msg` (whose sender index and mac1 we quote). */
  createReply(
    now: number,
    msg: Uint8Array,
    senderIndex: number,
    mac1Offset: number,
    source: Uint8Array,
  ): Uint8Array {
    const cookie = this.#cookieFor(now, source);
    const nonce = this.#random(24);
    const sealed = xaeadSeal(
      this.#encryptionKey,
      nonce,
      cookie,
      msg.subarray(mac1Offset, mac1Offset + 16),
    );
    const out = new Uint8Array(CookieReply.size);
    writeHeader(out, MessageCookieReplyType);
    writeU32(out, CookieReply.receiver, senderIndex);
    out.set(nonce, CookieReply.nonce);
    out.set(sealed, CookieReply.encryptedCookie);
    return out;
  }

  #cookieFor(now: number, source: Uint8Array): Uint8Array {
    if (now - this.#secretSetAt >= CookieRefreshTime) {
      this.#secret = this.#random(32);
      this.#secretSetAt = now;
    }
    return mac(this.#secret, source);
  }
}

/** Adds MAC1/MAC2 to messages we send to one peer and takes the cookies it replies with. */
export class CookieGenerator {
  readonly #mac1Key: Uint8Array;
  readonly #decryptionKey: Uint8Array;
  #cookie: Uint8Array | undefined;
  #cookieAt = -Infinity;
  #lastMac1: Uint8Array | undefined;

  constructor(peerPublicKey: Uint8Array) {
    this.#mac1Key = mac1Key(peerPublicKey);
    this.#decryptionKey = cookieKey(peerPublicKey);
  }

  /** Writes mac1, and mac2 if we hold a fresh cookie, into a message ready but for its MACs. */
  addMacs(now: number, msg: Uint8Array, mac1Offset: number): void {
    const mac1 = mac(this.#mac1Key, msg.subarray(0, mac1Offset));
    msg.set(mac1, mac1Offset);
    this.#lastMac1 = mac1;
    const mac2Offset = mac1Offset + 16;
    if (this.#cookie && now - this.#cookieAt < CookieRefreshTime) {
      msg.set(mac(this.#cookie, msg.subarray(0, mac2Offset)), mac2Offset);
    } else {
      msg.fill(0, mac2Offset, mac2Offset + 16);
    }
  }

  /** Takes a cookie reply; false when it does not decrypt against our last mac1. */
  consumeReply(now: number, reply: Uint8Array): boolean {
    if (!this.#lastMac1) return false;
    const cookie = xaeadOpen(
      this.#decryptionKey,
      reply.subarray(CookieReply.nonce, CookieReply.nonce + 24),
      reply.subarray(CookieReply.encryptedCookie, CookieReply.size),
      this.#lastMac1,
    );
    if (!cookie) return false;
    this.#cookie = cookie;
    this.#cookieAt = now;
    return true;
  }
}
