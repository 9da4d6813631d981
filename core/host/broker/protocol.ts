/**
 * The records the interposer (`preload/`) and the broker exchange over the broker's Unix socket,
 * byte for byte as `preload/protocol.c` writes them (`preload/PROTOCOL.md` is the prose). Every
 * integer is big-endian. Decoders check the length before reading and reject anything a v1 encoder
 * would not produce, with a {@link ProtocolError} naming the rule that failed, the same names the C
 * decoder uses.
 *
 * ```text
 * request (96)  magic "WGB1" │ secret 32 │ ver op proto family │ flags │ padding │ arg
 *               │ lport rport │ laddr 16 │ raddr 16 │ tag 8
 * reply   (48)  magic "WGR1" │ ver status family 0 │ arg │ lport rport │ laddr 16 │ raddr 16
 * frame   (24)  length │ port │ family 0 0 0 │ addr 16          then `length` payload bytes
 * ```
 *
 * @module
 */
import type { IpBytes } from "../../wire/addr.ts";

export const PROTOCOL_VERSION = 1;
export const SECRET_LEN = 32;
export const TAG_LEN = 8;
export const REQUEST_LEN = 96;
export const REPLY_LEN = 48;
export const FRAME_HEADER_LEN = 24;
/** Most filler a request may announce. */
export const MAX_PADDING = 4 << 20;

/** Request field offsets (protocol.h `WGP_REQ_*`). */
const Req = {
  magic: 0,
  secret: 4,
  version: 36,
  op: 37,
  proto: 38,
  family: 39,
  flags: 40,
  padding: 44,
  arg: 48,
  localPort: 52,
  remotePort: 54,
  localAddr: 56,
  remoteAddr: 72,
  tag: 88,
} as const;

/** Reply field offsets (protocol.h `WGP_REP_*`). */
const Rep = {
  magic: 0,
  version: 4,
  status: 5,
  family: 6,
  reserved: 7,
  arg: 8,
  localPort: 12,
  remotePort: 14,
  localAddr: 16,
  remoteAddr: 32,
} as const;

/** UDP frame header field offsets (protocol.h `WGP_FRAME_*`). */
const Frm = { length: 0, port: 2, family: 4, flags: 5, error: 6, reserved: 7, addr: 8 } as const;

const REQUEST_MAGIC = [0x57, 0x47, 0x42, 0x31]; // "WGB1"
const REPLY_MAGIC = [0x57, 0x47, 0x52, 0x31]; // "WGR1"

export const Op = {
  Connect: 1,
  Bind: 2,
  Listen: 3,
  Accept: 4,
  Udp: 5,
  Lookup: 6,
  /** A process loaded the interposer; `arg` is its pid. No body. */
  Hello: 7,
  /** A host name (`arg` bytes follow) to resolve through the tunnel's DNS. */
  Resolve: 8,
  /** A DNS message (`arg` bytes follow) to send to the tunnel's DNS server. */
  Query: 9,
} as const;
export type Op = (typeof Op)[keyof typeof Op];
const OP_MAX = Op.Query;

/** Ops that ask for a service, not a socket: proto 0, no endpoints, `arg` bytes of body follow. */
export function isServiceOp(op: number): boolean {
  return op >= Op.Hello && op <= Op.Query;
}

/** Longest name a RESOLVE carries (253 characters and a final dot). */
export const MAX_NAME = 254;
/** Shortest and longest DNS message a QUERY carries. */
export const MIN_DNS_MESSAGE = 12;
export const MAX_DNS_MESSAGE = 65535;
/** Most addresses a RESOLVE reply lists. */
export const MAX_ADDRESSES = 32;
/** One address in a RESOLVE reply body: a family byte and a 16-byte address field. */
export const RESOLVE_ENTRY_LEN = 17;

/** `None` only with the service ops. */
export const Proto = { None: 0, Tcp: 6, Udp: 17 } as const;
export type Proto = (typeof Proto)[keyof typeof Proto];

/** Family codes on the wire. */
export const Family = { None: 0, V4: 4, V6: 6 } as const;
export type Family = (typeof Family)[keyof typeof Family];

/**
 * Request flags. V6Only, ReuseAddr: the socket options of a BIND or UDP socket. Relay: a LISTEN
 * relayed to a kernel listener. Host: a UDP socket bound to the wildcard with a port, which the
 * broker also binds on the host network (frames then carry {@link FrameFlag.Host}).
 */
export const Flag = { V6Only: 0x1, ReuseAddr: 0x2, Relay: 0x4, Host: 0x8 } as const;
const FLAGS_KNOWN = Flag.V6Only | Flag.ReuseAddr | Flag.Relay | Flag.Host;

/** Reply status codes; the interposer turns them into errno values (PROTOCOL.md table). */
export const Status = {
  Ok: 0,
  Auth: 1,
  BadRequest: 2,
  ConnRefused: 3,
  TimedOut: 4,
  NetUnreach: 5,
  HostUnreach: 6,
  AddrInUse: 7,
  AddrNotAvail: 8,
  ConnReset: 9,
  NoBufs: 10,
  AfNoSupport: 11,
  NoEnt: 12,
  Access: 13,
  Prohibited: 14,
  /** RESOLVE/QUERY: the name does not exist (NXDOMAIN). */
  NotFound: 15,
  /** RESOLVE: the name has no address of the family asked. */
  NoData: 16,
  /** RESOLVE/QUERY: no answer in time, or the servers failed (SERVFAIL, REFUSED). */
  Again: 17,
  /** RESOLVE/QUERY: the tunnel has no DNS server. */
  NoDns: 18,
  /** UDP error frames: ICMP fragmentation needed / packet too big. */
  MsgSize: 19,
} as const;
export type Status = (typeof Status)[keyof typeof Status];
const STATUS_MAX = 19;

/** Names a decoder gives to what it refused (protocol.c `wgp_error_name`). */
export type ProtocolErrorCode =
  | "short"
  | "magic"
  | "version"
  | "op"
  | "proto"
  | "family"
  | "addr"
  | "flags"
  | "padding"
  | "reserved"
  | "status"
  | "length";

/** A record that does not follow the protocol. */
export class ProtocolError extends Error {
  readonly code: ProtocolErrorCode;
  constructor(code: ProtocolErrorCode, what: string) {
    super(`Cannot decode broker ${what}: ${code}`);
    this.name = "ProtocolError";
    this.code = code;
  }
}

/** An address and port. `addr` is 4 bytes (IPv4), 16 (IPv6) or empty (no address, family None). */
export interface Endpoint {
  addr: IpBytes;
  port: number;
}

export interface Request {
  secret: Uint8Array;
  op: Op;
  proto: Proto;
  family: Family;
  flags: number;
  /** Filler bytes that follow the request on the stream (non-blocking TCP connect). */
  padding: number;
  /** LISTEN: backlog; ACCEPT: connection id; otherwise 0. */
  arg: number;
  local: Endpoint;
  remote: Endpoint;
}

export interface Reply {
  status: Status;
  family: Family;
  /** Accept notices: the connection id. */
  arg: number;
  local: Endpoint;
  remote: Endpoint;
}

export interface Frame {
  /** Payload bytes after the header. */
  length: number;
  family: Family;
  /** Destination on the way out, source on the way in. */
  peer: Endpoint;
  /** {@link FrameFlag} bits (0 when absent). */
  flags?: number;
  /** With {@link FrameFlag.Error}: the status (ConnRefused, HostUnreach, …); else 0. */
  error?: number;
}

/**
 * Frame flags. Host: the datagram goes out on (or came in from) the host network, for a socket
 * bound to a wildcard address, which lives in both. Error: no datagram but an ICMP error about
 * one the socket sent to `peer`, with the status in `error` and length 0.
 */
export const FrameFlag = { Host: 0x1, Error: 0x2 } as const;
const FRAME_FLAGS_KNOWN = FrameFlag.Host | FrameFlag.Error;

/** The empty endpoint of family None. */
export const NO_ENDPOINT: Endpoint = Object.freeze({ addr: new Uint8Array(0), port: 0 });

function addrLen(family: Family): number {
  return family === Family.V4 ? 4 : family === Family.V6 ? 16 : 0;
}

/** The wire family of an address by its length. */
export function familyOf(addr: IpBytes): Family {
  return addr.length === 4 ? Family.V4 : addr.length === 16 ? Family.V6 : Family.None;
}

function allZero(b: Uint8Array): boolean {
  for (const x of b) if (x !== 0) return false;
  return true;
}

/** A 16-byte address field from an endpoint: IPv4 in the first 4 bytes; empty means zero. */
function field16(ep: Endpoint, family: Family, what: string): Uint8Array {
  const out = new Uint8Array(16);
  if (ep.addr.length === 0) return out;
  if (ep.addr.length !== addrLen(family)) throw new ProtocolError("family", what);
  out.set(ep.addr);
  return out;
}

/** protocol.c `check_endpoint`. */
function checkEndpoint(family: Family, addr: Uint8Array, port: number, what: string): void {
  if (family === Family.V4) {
    if (!allZero(addr.subarray(4))) throw new ProtocolError("addr", what);
  } else if (family === Family.None) {
    if (!allZero(addr) || port !== 0) throw new ProtocolError("addr", what);
  } else if (family !== Family.V6) {
    throw new ProtocolError("family", what);
  }
}

function endpointOf(family: Family, addr: Uint8Array, port: number): Endpoint {
  return { addr: addr.slice(0, addrLen(family)), port };
}

function checkPort(port: number, what: string): void {
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) {
    throw new RangeError(`Cannot encode broker ${what}: port ${port} is not 0..65535`);
  }
}

function checkU32(v: number, name: string, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new RangeError(`Cannot encode broker ${what}: ${name} ${v} is not a 32-bit value`);
  }
}

/** A request with its address fields as on the wire. */
interface RawRequest {
  op: number;
  proto: number;
  family: number;
  flags: number;
  padding: number;
  arg: number;
  localPort: number;
  remotePort: number;
  localAddr: Uint8Array;
  remoteAddr: Uint8Array;
  tag: Uint8Array;
}

/** protocol.c `check_request`, rule for rule and in the same order, so that both decoders name
 * the same failure for the same bytes. */
function checkRequest(r: RawRequest): void {
  const what = "request";
  if (r.op < 1 || r.op > OP_MAX) throw new ProtocolError("op", what);
  const service = isServiceOp(r.op);
  if (service) {
    if (r.proto !== Proto.None) throw new ProtocolError("proto", what);
  } else {
    if (r.proto !== Proto.Tcp && r.proto !== Proto.Udp) throw new ProtocolError("proto", what);
    if ((r.op === Op.Udp) !== (r.proto === Proto.Udp)) throw new ProtocolError("proto", what);
  }
  if (r.family !== Family.V4 && r.family !== Family.V6) {
    const noneOk = r.op === Op.Accept || service;
    if (!(noneOk && r.family === Family.None)) throw new ProtocolError("family", what);
  } else if (r.op === Op.Hello || r.op === Op.Query) {
    throw new ProtocolError("family", what);
  }
  if ((r.flags & ~FLAGS_KNOWN) !== 0) throw new ProtocolError("flags", what);
  if (service && r.flags !== 0) throw new ProtocolError("flags", what);
  if (r.padding > MAX_PADDING) throw new ProtocolError("padding", what);
  if (r.padding !== 0 && !(r.op === Op.Connect && r.proto === Proto.Tcp)) {
    throw new ProtocolError("padding", what);
  }
  const family = r.family as Family;
  checkEndpoint(family, r.localAddr, r.localPort, what);
  checkEndpoint(family, r.remoteAddr, r.remotePort, what);
  if (
    r.op !== Op.Connect && r.op !== Op.Lookup && (r.remotePort !== 0 || !allZero(r.remoteAddr))
  ) {
    throw new ProtocolError("reserved", what);
  }
  if (service && (r.localPort !== 0 || !allZero(r.localAddr))) {
    throw new ProtocolError("reserved", what);
  }
  if (!allZero(r.tag)) throw new ProtocolError("reserved", what);
  if (r.op !== Op.Listen && r.op !== Op.Accept && !service && r.arg !== 0) {
    throw new ProtocolError("reserved", what);
  }
  if (r.op === Op.Resolve && (r.arg < 1 || r.arg > MAX_NAME)) {
    throw new ProtocolError("length", what);
  }
  if (r.op === Op.Query && (r.arg < MIN_DNS_MESSAGE || r.arg > MAX_DNS_MESSAGE)) {
    throw new ProtocolError("length", what);
  }
}

/**
 * Encodes a request. An endpoint with an empty `addr` stands for the zero address of the family.
 * @throws {ProtocolError} for a request no decoder would accept; {RangeError} for out-of-range
 * numbers.
 */
export function encodeRequest(r: Request): Uint8Array {
  const what = "request";
  if (r.secret.length !== SECRET_LEN) {
    throw new RangeError(`Cannot encode broker request: secret is not ${SECRET_LEN} bytes`);
  }
  checkPort(r.local.port, what);
  checkPort(r.remote.port, what);
  checkU32(r.flags, "flags", what);
  checkU32(r.padding, "padding", what);
  checkU32(r.arg, "arg", what);
  const raw: RawRequest = {
    op: r.op,
    proto: r.proto,
    family: r.family,
    flags: r.flags,
    padding: r.padding,
    arg: r.arg,
    localPort: r.local.port,
    remotePort: r.remote.port,
    localAddr: field16(r.local, r.family, what),
    remoteAddr: field16(r.remote, r.family, what),
    tag: new Uint8Array(TAG_LEN),
  };
  checkRequest(raw);
  const out = new Uint8Array(REQUEST_LEN);
  const dv = new DataView(out.buffer);
  out.set(REQUEST_MAGIC, Req.magic);
  out.set(r.secret, Req.secret);
  out[Req.version] = PROTOCOL_VERSION;
  out[Req.op] = r.op;
  out[Req.proto] = r.proto;
  out[Req.family] = r.family;
  dv.setUint32(Req.flags, r.flags);
  dv.setUint32(Req.padding, r.padding);
  dv.setUint32(Req.arg, r.arg);
  dv.setUint16(Req.localPort, r.local.port);
  dv.setUint16(Req.remotePort, r.remote.port);
  out.set(raw.localAddr, Req.localAddr);
  out.set(raw.remoteAddr, Req.remoteAddr);
  return out;
}

/**
 * Decodes a request. Endpoints come back with addresses of the family's length (all zero when
 * the interposer named none); empty for family None.
 * @throws {ProtocolError} when the bytes are not a valid v1 request.
 */
export function decodeRequest(bytes: Uint8Array): Request {
  const what = "request";
  if (bytes.length < REQUEST_LEN) throw new ProtocolError("short", what);
  for (let i = 0; i < 4; i++) {
    if (bytes[Req.magic + i] !== REQUEST_MAGIC[i]) throw new ProtocolError("magic", what);
  }
  if (bytes[Req.version] !== PROTOCOL_VERSION) throw new ProtocolError("version", what);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, REQUEST_LEN);
  const raw: RawRequest = {
    op: bytes[Req.op]!,
    proto: bytes[Req.proto]!,
    family: bytes[Req.family]!,
    flags: dv.getUint32(Req.flags),
    padding: dv.getUint32(Req.padding),
    arg: dv.getUint32(Req.arg),
    localPort: dv.getUint16(Req.localPort),
    remotePort: dv.getUint16(Req.remotePort),
    localAddr: bytes.subarray(Req.localAddr, Req.localAddr + 16),
    remoteAddr: bytes.subarray(Req.remoteAddr, Req.remoteAddr + 16),
    tag: bytes.subarray(Req.tag, Req.tag + TAG_LEN),
  };
  checkRequest(raw);
  const family = raw.family as Family;
  return {
    secret: bytes.slice(Req.secret, Req.secret + SECRET_LEN),
    op: raw.op as Op,
    proto: raw.proto as Proto,
    family,
    flags: raw.flags,
    padding: raw.padding,
    arg: raw.arg,
    local: endpointOf(family, raw.localAddr, raw.localPort),
    remote: endpointOf(family, raw.remoteAddr, raw.remotePort),
  };
}

/** protocol.c `check_reply`. */
function checkReply(
  status: number,
  family: number,
  local: Uint8Array,
  lport: number,
  remote: Uint8Array,
  rport: number,
): void {
  const what = "reply";
  if (status > STATUS_MAX) throw new ProtocolError("status", what);
  if (status !== Status.Ok && family !== Family.None) throw new ProtocolError("family", what);
  checkEndpoint(family as Family, local, lport, what);
  checkEndpoint(family as Family, remote, rport, what);
}

/**
 * Encodes a reply (or accept notice).
 * @throws {ProtocolError} for a reply no decoder would accept.
 */
export function encodeReply(r: Reply): Uint8Array {
  const what = "reply";
  if (!Number.isInteger(r.status) || r.status < 0) throw new ProtocolError("status", what);
  checkPort(r.local.port, what);
  checkPort(r.remote.port, what);
  checkU32(r.arg, "arg", what);
  const local = field16(r.local, r.family, what);
  const remote = field16(r.remote, r.family, what);
  checkReply(r.status, r.family, local, r.local.port, remote, r.remote.port);
  const out = new Uint8Array(REPLY_LEN);
  const dv = new DataView(out.buffer);
  out.set(REPLY_MAGIC, Rep.magic);
  out[Rep.version] = PROTOCOL_VERSION;
  out[Rep.status] = r.status;
  out[Rep.family] = r.family;
  dv.setUint32(Rep.arg, r.arg);
  dv.setUint16(Rep.localPort, r.local.port);
  dv.setUint16(Rep.remotePort, r.remote.port);
  out.set(local, Rep.localAddr);
  out.set(remote, Rep.remoteAddr);
  return out;
}

/** @throws {ProtocolError} when the bytes are not a valid v1 reply. */
export function decodeReply(bytes: Uint8Array): Reply {
  const what = "reply";
  if (bytes.length < REPLY_LEN) throw new ProtocolError("short", what);
  for (let i = 0; i < 4; i++) {
    if (bytes[Rep.magic + i] !== REPLY_MAGIC[i]) throw new ProtocolError("magic", what);
  }
  if (bytes[Rep.version] !== PROTOCOL_VERSION) throw new ProtocolError("version", what);
  if (bytes[Rep.reserved] !== 0) throw new ProtocolError("reserved", what);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, REPLY_LEN);
  const status = bytes[Rep.status]!;
  const family = bytes[Rep.family]!;
  const local = bytes.subarray(Rep.localAddr, Rep.localAddr + 16);
  const remote = bytes.subarray(Rep.remoteAddr, Rep.remoteAddr + 16);
  const lport = dv.getUint16(Rep.localPort);
  const rport = dv.getUint16(Rep.remotePort);
  checkReply(status, family, local, lport, remote, rport);
  return {
    status: status as Status,
    family: family as Family,
    arg: dv.getUint32(Rep.arg),
    local: endpointOf(family as Family, local, lport),
    remote: endpointOf(family as Family, remote, rport),
  };
}

/** A failure reply: status and nothing else. */
export function errorReply(status: Status): Uint8Array {
  return encodeReply({
    status,
    family: Family.None,
    arg: 0,
    local: NO_ENDPOINT,
    remote: NO_ENDPOINT,
  });
}

/**
 * Encodes a frame header.
 * @throws {ProtocolError} for a family other than IPv4/IPv6; {RangeError} for lengths.
 */
export function encodeFrameHeader(f: Frame): Uint8Array {
  const what = "frame";
  const flags = f.flags ?? 0, error = f.error ?? 0;
  if (!Number.isInteger(flags) || flags < 0 || flags > 0xff || error < 0 || error > 0xff) {
    throw new RangeError(`Cannot encode broker frame: flags ${flags} or error ${error} not a byte`);
  }
  if (flags & ~FRAME_FLAGS_KNOWN) throw new ProtocolError("flags", what);
  if (f.family !== Family.V4 && f.family !== Family.V6) throw new ProtocolError("family", what);
  if (!Number.isInteger(f.length) || f.length < 0 || f.length > 0xffff) {
    throw new RangeError(`Cannot encode broker frame: length ${f.length} is not 0..65535`);
  }
  checkPort(f.peer.port, what);
  const out = new Uint8Array(FRAME_HEADER_LEN);
  const dv = new DataView(out.buffer);
  dv.setUint16(Frm.length, f.length);
  dv.setUint16(Frm.port, f.peer.port);
  out[Frm.family] = f.family;
  out[Frm.flags] = flags;
  out[Frm.error] = error;
  out.set(field16(f.peer, f.family, what), Frm.addr);
  checkFrameRules(f.length, flags, error, what);
  return out;
}

/** The flag and error rules, in protocol.c's order (after family and endpoint). */
function checkFrameRules(length: number, flags: number, error: number, what: string): void {
  if (!(flags & FrameFlag.Error)) {
    if (error !== 0) throw new ProtocolError("reserved", what);
    return;
  }
  if (error === Status.Ok || error > STATUS_MAX) throw new ProtocolError("status", what);
  if (length !== 0) throw new ProtocolError("length", what);
}

/** An error frame: an ICMP error about a datagram the program sent to `peer`. */
export function encodeErrorFrame(peer: Endpoint, status: Status): Uint8Array {
  return encodeFrameHeader({
    length: 0,
    family: familyOf(peer.addr),
    peer,
    flags: FrameFlag.Error,
    error: status,
  });
}

/** A whole frame: header and payload in one buffer, as it should be written. */
export function encodeFrame(peer: Endpoint, payload: Uint8Array, flags = 0): Uint8Array {
  const header = encodeFrameHeader({
    length: payload.length,
    family: familyOf(peer.addr),
    peer,
    flags,
  });
  const out = new Uint8Array(FRAME_HEADER_LEN + payload.length);
  out.set(header);
  out.set(payload, FRAME_HEADER_LEN);
  return out;
}

/** @throws {ProtocolError} when the bytes are not a valid frame header. */
export function decodeFrameHeader(bytes: Uint8Array): Frame {
  const what = "frame";
  if (bytes.length < FRAME_HEADER_LEN) throw new ProtocolError("short", what);
  if (bytes[Frm.reserved] !== 0) throw new ProtocolError("reserved", what);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, FRAME_HEADER_LEN);
  const flags = bytes[Frm.flags]!, error = bytes[Frm.error]!;
  if (flags & ~FRAME_FLAGS_KNOWN) throw new ProtocolError("flags", what);
  const family = bytes[Frm.family]!;
  if (family !== Family.V4 && family !== Family.V6) throw new ProtocolError("family", what);
  const addr = bytes.subarray(Frm.addr, Frm.addr + 16);
  const port = dv.getUint16(Frm.port);
  checkEndpoint(family as Family, addr, port, what);
  const length = dv.getUint16(Frm.length);
  checkFrameRules(length, flags, error, what);
  return {
    length,
    family: family as Family,
    peer: endpointOf(family as Family, addr, port),
    flags,
    error,
  };
}

/** Compares two secrets in time that depends only on their length. */
export function secretEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

const STATUS_BY_ERRNO: Record<string, Status> = {
  ECONNREFUSED: Status.ConnRefused,
  ETIMEDOUT: Status.TimedOut,
  ENETUNREACH: Status.NetUnreach,
  EHOSTUNREACH: Status.HostUnreach,
  EADDRINUSE: Status.AddrInUse,
  EADDRNOTAVAIL: Status.AddrNotAvail,
  ECONNRESET: Status.ConnReset,
  ENOBUFS: Status.NoBufs,
  EAFNOSUPPORT: Status.AfNoSupport,
  EACCES: Status.Access,
};

/**
 * The status for an error of the stack (`TcpError`, `AddrInUseError`, … carry the errno name in
 * `code`); NoBufs for anything else.
 */
export function statusOf(e: unknown): Status {
  const code = typeof e === "object" && e !== null ? (e as { code?: unknown }).code : undefined;
  return typeof code === "string" ? STATUS_BY_ERRNO[code] ?? Status.NoBufs : Status.NoBufs;
}
