/**
 * SOCKS version 5 (RFC 1928) into the tunnel, with username/password authentication (RFC 1929):
 *
 * ```text
 *   client                              proxy
 *   VER=5 NMETHODS METHODS…      ─►
 *                                ◄─     VER=5 METHOD (00 none | 02 user/pass | FF no acceptable)
 *   [VER=1 ULEN UNAME PLEN PASSWD ─►    RFC 1929
 *                                ◄─     VER=1 STATUS (00 success; else the connection closes)]
 *   VER=5 CMD RSV ATYP DST.ADDR DST.PORT ─►
 *                                ◄─     VER=5 REP RSV ATYP BND.ADDR BND.PORT
 *   CONNECT: bytes both ways;  UDP ASSOCIATE: datagrams (socks5_udp.ts) while this
 *   connection stays open;  BIND: refused (command not supported)
 * ```
 *
 * Domain names (ATYP 3) are resolved through the tunnel with the config's `DNS =`, never by the
 * host's resolver, so `curl --socks5-hostname` leaks no lookups.
 *
 * @module
 */
import { type IpBytes, parseIP } from "../../wire/addr.ts";
import { type DialError, dialTunnel } from "../forward/dial.ts";
import { relay } from "../forward/relay.ts";
import type { Logger } from "../log.ts";
import { type BufferedDuplex, type Credentials, ProtocolError } from "./io.ts";
import { UdpAssociation } from "./socks5_udp.ts";
import {
  Atyp,
  Cmd,
  encodeAddr,
  hostText,
  Method,
  Rep,
  replyFor,
  type SocksAddr,
  SocksVersion,
  UserPassVersion,
} from "./socks5_wire.ts";
import type { Tunnel } from "../tunnel/mod.ts";

function reply(rep: number, bound?: SocksAddr): Uint8Array {
  const addr = encodeAddr(bound ?? { host: new Uint8Array(4), port: 0 });
  return new Uint8Array([SocksVersion, rep, 0, ...addr]);
}

async function readAddr(c: BufferedDuplex, atyp: number): Promise<SocksAddr | undefined> {
  let host: IpBytes | string;
  if (atyp === Atyp.IPv4) host = await c.readExact(4);
  else if (atyp === Atyp.IPv6) host = await c.readExact(16);
  else if (atyp === Atyp.Domain) {
    const [len] = await c.readExact(1);
    if (len === 0) throw new ProtocolError("an empty domain name");
    host = new TextDecoder().decode(await c.readExact(len!));
    // A name that is an address literal is used as one.
    const literal = parseIP(host);
    if (literal) host = literal;
  } else return undefined;
  const p = await c.readExact(2);
  return { host, port: (p[0]! << 8) | p[1]! };
}

/** What a SOCKS5 session needs from the server. */
export interface Socks5Context {
  tunnel: Tunnel;
  credentials?: Credentials;
  logger: Logger;
  /** The client's address, as the control connection shows it. */
  client: Deno.NetAddr;
  /** Our end of the control connection: UDP ASSOCIATE binds the same address. */
  local: Deno.NetAddr;
  /** Called when the request phase is over (the server stops its handshake timer). */
  established(): void;
}

/** Serves one SOCKS5 client connection to its end. */
export async function serveSocks5(c: BufferedDuplex, ctx: Socks5Context): Promise<void> {
  const log = ctx.logger;
  // RFC 1928 (3): method selection.
  const [ver, nmethods] = await c.readExact(2);
  if (ver !== SocksVersion) throw new ProtocolError(`not SOCKS5 (version byte ${ver})`);
  const methods = await c.readExact(nmethods!);
  const wanted = ctx.credentials ? Method.UserPass : Method.NoAuth;
  if (!methods.includes(wanted)) {
    await c.writeAll(new Uint8Array([SocksVersion, Method.NoAcceptable]));
    log.warn("socks5 client refused", {
      reason: ctx.credentials ? "it offers no username/password" : "it offers no 'no auth'",
    });
    return;
  }
  await c.writeAll(new Uint8Array([SocksVersion, wanted]));

  let user: string | undefined;
  if (wanted === Method.UserPass) {
    // RFC 1929 (2).
    const [uver, ulen] = await c.readExact(2);
    if (uver !== UserPassVersion) {
      throw new ProtocolError(`username/password version ${uver}, not 1`);
    }
    user = new TextDecoder().decode(await c.readExact(ulen!));
    const [plen] = await c.readExact(1);
    const password = new TextDecoder().decode(await c.readExact(plen!));
    const ok = await ctx.credentials!.check(user, password);
    // RFC 1929 (2): a non-zero STATUS, and the server MUST close the connection.
    await c.writeAll(new Uint8Array([UserPassVersion, ok ? 0 : 1]));
    if (!ok) {
      log.warn("socks5 authentication failed", { user });
      return;
    }
  }

  // RFC 1928 (4): the request.
  const [rver, cmd, , atyp] = await c.readExact(4);
  if (rver !== SocksVersion) throw new ProtocolError(`request version ${rver}`);
  const dst = await readAddr(c, atyp!);
  if (!dst) {
    await c.writeAll(reply(Rep.AddressTypeNotSupported));
    return;
  }
  const target = `${hostText(dst.host)}:${dst.port}`;
  if (cmd === Cmd.Connect) {
    let conn;
    try {
      conn = await dialTunnel(ctx.tunnel, hostText(dst.host), dst.port);
    } catch (e) {
      const kind = (e as DialError).kind ?? "other";
      log.info("socks5 connect failed", {
        user,
        to: target,
        reason: kind,
        error: (e as Error).message,
      });
      await c.writeAll(reply(replyFor(kind)));
      return;
    }
    const bound = conn.localAddr;
    await c.writeAll(reply(Rep.Succeeded, { host: parseIP(bound.hostname)!, port: bound.port }));
    ctx.established();
    log.debug("socks5 connect", { user, to: target, via: `${bound.hostname}:${bound.port}` });
    const r = await relay(c, conn);
    log.debug("socks5 connection closed", {
      to: target,
      sent: r.aToB,
      received: r.bToA,
      error: r.error?.message,
    });
  } else if (cmd === Cmd.UdpAssociate) {
    let assoc: UdpAssociation;
    try {
      assoc = await UdpAssociation.open(ctx.tunnel, {
        clientHost: ctx.client.hostname,
        // RFC 1928 (4): DST.ADDR/DST.PORT are where the client will send from; zeros if unknown.
        clientPort: dst.port,
        localHost: ctx.local.hostname,
        logger: log,
      });
    } catch (e) {
      log.warn("socks5 udp associate failed", { error: (e as Error).message });
      await c.writeAll(reply(Rep.GeneralFailure));
      return;
    }
    try {
      await c.writeAll(reply(Rep.Succeeded, { host: parseIP(assoc.address)!, port: assoc.port }));
      ctx.established();
      log.debug("socks5 udp associate", { user, relay: `${assoc.address}:${assoc.port}` });
      // RFC 1928 (7): the association ends with the TCP connection it arrived on.
      const sink = new Uint8Array(512);
      try {
        while ((await c.read(sink)) !== null) { /* nothing more is expected on it */ }
      } catch {
        // reset: the association ends all the same
      }
    } finally {
      assoc.close();
      log.debug("socks5 udp association closed", {
        sent: assoc.stats.toTunnel,
        received: assoc.stats.fromTunnel,
        dropped: assoc.stats.dropped,
      });
    }
  } else {
    await c.writeAll(reply(Rep.CommandNotSupported));
    log.info("socks5 command not supported", { user, command: cmd });
  }
}
