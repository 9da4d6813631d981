/**
 * Protocol constants, named as in the WireGuard paper (section 6.1, "Protocol constants") and
 * split like wireguard-go into what the specification fixes and what this implementation chose.
 *
 * @module
 */

// --- Specification -------------------------------------------------------------------------

/** Noise protocol name: the initial chaining key is its hash. */
export const CONSTRUCTION = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/** Mixed into the initial hash so that WireGuard handshakes are distinct from other Noise uses. */
export const IDENTIFIER = "WireGuard v1 zx2c4 Jason@zx2c4.com";
export const LABEL_MAC1 = "mac1----";
export const LABEL_COOKIE = "cookie--";

/** Counters past this start a new handshake (2^60). */
export const RekeyAfterMessages = 2 ** 60;
/**
 * Counters at or past this are never used (2^64 - 2^13 - 1). Our counters are JavaScript numbers,
 * so in practice the limit that applies is {@link MaxSafeCounter}.
 */
export const RejectAfterMessages = 2 ** 64 - 2 ** 13 - 1;
/** Milliseconds, as are all times in the engine. */
export const RekeyAfterTime = 120_000;
export const RejectAfterTime = 180_000;
export const RekeyAttemptTime = 90_000;
export const RekeyTimeout = 5_000;
export const KeepaliveTimeout = 10_000;
export const CookieRefreshTime = 120_000;

// --- Implementation ------------------------------------------------------------------------

/**
 * Counters are kept as doubles: 2^53 packets is centuries at line rate, and refusing larger
 * counters keeps the per-packet path free of BigInt.
 */
export const MaxSafeCounter = Number.MAX_SAFE_INTEGER;
/** Paper 6.1: the retransmission timer is Rekey-Timeout plus up to a third of a second. */
export const RekeyTimeoutJitterMax = 334;
/** A peer's initiations closer together than this are dropped (wireguard-go's value). */
export const HandshakeInitiationRate = 50;
/** How many initiations Rekey-Attempt-Time allows at Rekey-Timeout spacing. */
export const MaxTimerHandshakes = RekeyAttemptTime / RekeyTimeout;
/** Handshake messages per second above which the responder demands cookies (mac2). */
export const UnderLoadThreshold = 64;
/** Stay under load this long after the rate falls, so an attacker cannot flap it. */
export const UnderLoadAfterTime = 1_000;
/** Packets held per peer while a handshake is under way. */
export const MaxStagedPackets = 128;
/** After failed handshakes, ask the host to re-resolve a hostname endpoint every this many. */
export const ResolveEveryAttempts = 3;

// --- Message layout (paper 5.4) --------------------------------------------------------------

export const MessageInitiationType = 1;
export const MessageResponseType = 2;
export const MessageCookieReplyType = 3;
export const MessageTransportType = 4;

export const MessageInitiationSize = 148;
export const MessageResponseSize = 92;
export const MessageCookieReplySize = 64;
/** Header (type, reserved, receiver, counter) before the ciphertext of a transport message. */
export const MessageTransportHeaderSize = 16;
export const AeadTagSize = 16;
export const MessageTransportMinSize = MessageTransportHeaderSize + AeadTagSize;
/** Transport plaintext is padded to a multiple of this (paper 5.4.6). */
export const PaddingMultiple = 16;
