/**
 * What `wrapguard selftest` and `wrapguard doctor` share: an embedded peer (a second engine of
 * ours on 127.0.0.1 UDP) with services behind its tunnel address, and a session that runs real
 * programs under the interposer against a local tunnel to it.
 *
 * ```text
 *  wrapped program ─LD_PRELOAD─► broker (Unix socket, private dir) ─► local Tunnel
 *        ─► 127.0.0.1 UDP ─► peer Tunnel: HTTP :80, UDP echo :7, DNS :53 on 10.200.0.1, fd20::1
 * ```
 *
 * Nothing here sends a datagram anywhere but 127.0.0.1.
 *
 * @module
 */
import { parseConfig } from "../../config/mod.ts";
import { formatIP, parseIP } from "../../wire/addr.ts";
import { decodeMessage, DnsType, encodeMessage } from "../../wire/dns.ts";
import { encodeKey, generatePrivateKey, publicKeyOf } from "../../wireguard/keys.ts";
import { Broker } from "../broker/mod.ts";
import { Resolver } from "../tunnel/dns.ts";
import { childEnv, materializeInterposer } from "../launch.ts";
import type { TunnelConn } from "../tunnel/tcp.ts";
import { Tunnel } from "../tunnel/mod.ts";

/** The peer's tunnel addresses and ours. */
export const PEER_V4 = "10.200.0.1";
export const PEER_V6 = "fd20::1";
export const LOCAL_V4 = "10.200.0.2";
export const LOCAL_V6 = "fd20::2";
/** The name the embedded DNS server answers (with {@link PEER_V4} and {@link PEER_V6}). */
export const SELFTEST_NAME = "selftest.wrapguard.test";
/** The body of every HTTP answer of the embedded peer. */
export const HTTP_BODY = "wrapguard selftest: hello through the tunnel\n";

/** A local tunnel and its embedded peer, with the peer's services running. */
export interface EmbeddedWorld {
  local: Tunnel;
  peer: Tunnel;
  /** Names the peer's DNS server was asked. */
  dnsAsked: string[];
  /** HTTP requests the peer answered. */
  httpRequests: number;
  close(): void;
}

const text = new TextEncoder();

async function serveHttp(conn: TunnelConn, world: { httpRequests: number }): Promise<void> {
  try {
    let head = "";
    const buf = new Uint8Array(4096);
    while (!head.includes("\r\n\r\n") && head.length < 16384) {
      const n = await conn.read(buf);
      if (n === null) break;
      head += new TextDecoder().decode(buf.subarray(0, n));
    }
    world.httpRequests++;
    const body = text.encode(HTTP_BODY);
    await conn.writeAll(text.encode(
      `HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n` +
        `Connection: close\r\n\r\n`,
    ));
    await conn.writeAll(body);
    await conn.closeWrite();
  } catch {
    // the client went away
  } finally {
    conn.close();
  }
}

/**
 * Starts two tunnels that are each other's only peer over 127.0.0.1 UDP; the peer serves HTTP on
 * port 80, a UDP echo on port 7 and DNS on port 53 (answering {@link SELFTEST_NAME}, NXDOMAIN
 * for anything else). The local side's config has `DNS =` the peer.
 */
export async function embeddedWorld(): Promise<EmbeddedWorld> {
  const localKey = generatePrivateKey(), peerKey = generatePrivateKey();
  const peer = await Tunnel.start(
    parseConfig(
      `[Interface]\nPrivateKey = ${encodeKey(peerKey)}\nAddress = ${PEER_V4}/32, ${PEER_V6}/128\n` +
        `ListenPort = 0\n\n[Peer]\nPublicKey = ${encodeKey(publicKeyOf(localKey))}\n` +
        `AllowedIPs = ${LOCAL_V4}/32, ${LOCAL_V6}/128\n`,
      { file: "<selftest peer>" },
    ),
    { listenAddress: "127.0.0.1" },
  );
  let local: Tunnel;
  try {
    local = await Tunnel.start(
      parseConfig(
        `[Interface]\nPrivateKey = ${encodeKey(localKey)}\n` +
          `Address = ${LOCAL_V4}/32, ${LOCAL_V6}/128\nDNS = ${PEER_V4}\n\n` +
          `[Peer]\nPublicKey = ${encodeKey(publicKeyOf(peerKey))}\n` +
          `Endpoint = 127.0.0.1:${peer.udp.port}\nAllowedIPs = 10.200.0.0/24, fd20::/64\n`,
        { file: "<selftest local>" },
      ),
      { listenAddress: "127.0.0.1" },
    );
  } catch (e) {
    peer.close();
    throw e;
  }
  const world: EmbeddedWorld = {
    local,
    peer,
    dnsAsked: [],
    httpRequests: 0,
    close() {
      listener.close();
      echo.close();
      dns.close();
      local.close();
      peer.close();
    },
  };

  const listener = peer.listen({ port: 80 });
  (async () => {
    try {
      for await (const conn of listener) void serveHttp(conn, world);
    } catch {
      // closed
    }
  })();

  const echo = peer.stack.udp.bind({ port: 7 });
  echo.onDatagram = (data, src, srcPort) => {
    echo.send(src, srcPort, data.slice());
    peer.poke();
  };

  const dns = peer.stack.udp.bind({ port: 53 });
  dns.onDatagram = (data, src, port) => {
    const q = decodeMessage(data);
    if (typeof q === "string" || q.qr) return;
    const question = q.questions[0];
    if (!question) return;
    world.dnsAsked.push(question.name);
    const known = question.name.toLowerCase().replace(/\.$/, "") === SELFTEST_NAME;
    const answers = [];
    if (known && (question.type === DnsType.A || question.type === DnsType.AAAA)) {
      const address = parseIP(question.type === DnsType.A ? PEER_V4 : PEER_V6)!;
      answers.push({ ...question, ttl: 60, kind: "address" as const, address });
    }
    dns.send(
      src,
      port,
      encodeMessage({
        id: q.id,
        qr: true,
        rd: q.rd,
        ra: true,
        aa: true,
        rcode: known ? 0 : 3,
        questions: [question],
        answers,
      }),
    );
    peer.poke();
  };
  return world;
}

/**
 * Writes the embedded probe program for `arch` into `dir` and returns its path.
 * @throws {Deno.errors.NotSupported} when this build carries no probe for `arch`.
 */
export async function materializeProbe(
  dir: string,
  probes: Readonly<Record<string, string>>,
  arch: string = Deno.build.arch,
): Promise<string> {
  const b64 = probes[arch];
  if (b64 === undefined) {
    throw new Deno.errors.NotSupported(`this wrapguard carries no probe program for ${arch}`);
  }
  const path = `${dir}/wrapguard-probe`;
  await Deno.writeFile(path, Uint8Array.fromBase64(b64), { mode: 0o500 });
  await Deno.chmod(path, 0o500);
  return path;
}

/** What a wrapped program did. */
export interface WrappedResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Whether the interposer said HELLO from this process (it was loaded and reached us). */
  hello: boolean;
  /** Whether it was killed for running too long. */
  timedOut: boolean;
}

/** Options for {@link WrapSession.start}. */
export interface WrapSessionOptions {
  /** The interposer per architecture, base64 (`libraries` of preload/build/embedded.ts). */
  libraries: Readonly<Record<string, string>>;
  /** The probe per architecture, base64 (`probes` of preload/build/embedded.ts). */
  probes: Readonly<Record<string, string>>;
  /** Answer the program's name lookups through the tunnel's `DNS =` servers. */
  dns?: boolean;
  arch?: string;
}

/**
 * A private directory with the interposer, the probe and a broker for one tunnel: runs programs
 * the way `wrapguard run` does (LD_PRELOAD, the broker's variables, HELLO asked for).
 */
export class WrapSession {
  readonly dir: string;
  readonly interposer: string;
  readonly probe: string;
  readonly broker: Broker;

  private constructor(dir: string, interposer: string, probe: string, broker: Broker) {
    this.dir = dir;
    this.interposer = interposer;
    this.probe = probe;
    this.broker = broker;
  }

  /**
   * Extracts the interposer and the probe, and starts a broker.
   * @throws {Deno.errors.NotSupported} when the build carries no interposer or probe for `arch`.
   */
  static async start(tunnel: Tunnel, options: WrapSessionOptions): Promise<WrapSession> {
    const dir = await Deno.makeTempDir({ prefix: "wrapguard-check-" });
    try {
      await Deno.chmod(dir, 0o700);
      const lib = await materializeInterposer(dir, options.libraries, options.arch);
      const probe = await materializeProbe(dir, options.probes, options.arch);
      const resolver = options.dns ? Resolver.forTunnel(tunnel) : undefined;
      const broker = await Broker.start(tunnel, { dir, resolver });
      return new WrapSession(dir, lib, probe, broker);
    } catch (e) {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw e;
    }
  }

  /** The environment of a wrapped program: only PATH of ours, so no proxy variable applies. */
  env(): Record<string, string> {
    const path = Deno.env.get("PATH") ?? "/usr/local/bin:/usr/bin:/bin";
    return childEnv({ PATH: path }, this.broker.env(), this.interposer, { WRAPGUARD_HELLO: "1" });
  }

  /** Starts `cmd` wrapped, with stdout and stderr piped. */
  spawn(cmd: string, args: string[]): Deno.ChildProcess {
    return new Deno.Command(cmd, {
      args,
      env: this.env(),
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  }

  /** Runs `cmd` wrapped to its end, killing it after `timeoutMs`. */
  async run(cmd: string, args: string[], timeoutMs = 15_000): Promise<WrappedResult> {
    const child = this.spawn(cmd, args);
    return await this.finish(child, timeoutMs);
  }

  /** Waits for a child from {@link spawn}, killing it after `timeoutMs`. */
  async finish(child: Deno.ChildProcess, timeoutMs = 15_000): Promise<WrappedResult> {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        child.kill("SIGKILL");
      } catch {
        // exited meanwhile
      }
    }, timeoutMs);
    try {
      const out = await child.output();
      const dec = new TextDecoder();
      return {
        code: out.code,
        stdout: dec.decode(out.stdout),
        stderr: dec.decode(out.stderr),
        hello: this.broker.helloFrom(child.pid),
        timedOut,
      };
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    await this.broker.close().catch(() => {});
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** `a.b.c.d` or IPv6 text of an address the probe printed, normalised for comparison. */
export function normalizeAddress(s: string): string | undefined {
  const ip = parseIP(s.trim());
  return ip ? formatIP(ip) : undefined;
}
