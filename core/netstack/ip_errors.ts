/**
 * Errors of the IP and UDP layers that callers are expected to catch and turn into the errno a
 * kernel would give (DESIGN.md decision 6). Each carries that errno's name in `code`.
 *
 * @module
 */

/** The local address and port are taken (bind(2) EADDRINUSE). */
export class AddrInUseError extends Error {
  readonly code = "EADDRINUSE";
  override name = "AddrInUseError";
}

/** The address to bind is not one of the stack's addresses (bind(2) EADDRNOTAVAIL). */
export class AddrNotAvailableError extends Error {
  readonly code = "EADDRNOTAVAIL";
  override name = "AddrNotAvailableError";
}

/** No address of the destination's family is configured (connect(2)/sendto(2) ENETUNREACH). */
export class NetUnreachableError extends Error {
  readonly code = "ENETUNREACH";
  override name = "NetUnreachableError";
}

/** A datagram longer than the protocol can carry (sendto(2) EMSGSIZE). */
export class MessageTooLongError extends RangeError {
  readonly code = "EMSGSIZE";
  override name = "MessageTooLongError";
}
