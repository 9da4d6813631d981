/**
 * A running tunnel: the WireGuard device, the userspace stack, the UDP socket and the one timer
 * that drives both pure machines. Packets move synchronously:
 *
 *   UDP datagram ─► device.receive ─► deliver ─► stack.input ─► sockets' callbacks
 *   socket write ─► stack output ─► device.send ─► UDP datagram
 *
 * After every input the scheduler is kicked, which re-arms the timer at the end of the turn only
 * if a deadline moved earlier.
 *
 * This folder is the tunnel's own edges, what the library's {@link Tunnel} is made of: `udp.ts`
 * (the WireGuard socket), `scheduler.ts` (the one timer), `tcp.ts` (stack TCP as `Deno.Conn`),
 * `dns.ts` (the stub resolver), `http.ts` (`fetch`), `routes.ts` (`--exit-node`, `--route`,
 * `Route =`). The services (`broker/`, `forward/`, `proxy/`, `doctor/`) sit beside it and use it.
 *
 * @module
 */
import type { Config } from "../../config/types.ts";
import { loadConfig, parseConfig } from "../../config/mod.ts";
import { formatIP, type IpBytes, parseIP } from "../../wire/addr.ts";
import { Device, type DeviceEvent, type Endpoint, type Peer } from "../../wireguard/device.ts";
import { formatEndpoint } from "../../wireguard/peer.ts";
import { Stack } from "../../netstack/stack.ts";
import { TcpLayer } from "../../netstack/tcp/layer.ts";
import type { TcpLimits } from "../../netstack/tcp/tcb.ts";
import { connectTcp, netAddr, type TunnelConn, TunnelListener } from "./tcp.ts";
import { Resolver } from "./dns.ts";
import { tunnelFetch } from "./http.ts";
import { type Logger, silentLogger } from "../log.ts";
import { PolicyTable } from "./routes.ts";
import { Scheduler } from "./scheduler.ts";
import { type UdpBackend, UdpTransport } from "./udp.ts";

export interface TunnelOptions {
  /** Where the UDP socket binds; default all addresses. */
  listenAddress?: string;
  logger?: Logger;
  /** TCP buffer sizes, retry counts and other limits (defaults follow Linux). */
  tcp?: Partial<TcpLimits>;
  /**
   * How the UDP socket is driven: "auto" (default) uses the batched helper when the process may
   * load it (`--allow-ffi=/tmp`), else node:dgram. See core/host/tunnel/udp.ts.
   */
  udpBackend?: UdpBackend;
}

export interface PeerStatus {
  publicKey: string;
  endpoint?: string;
  allowedIPs: string[];
  /** Wall-clock ms of the latest handshake, 0 for never. */
  latestHandshake: number;
  rxBytes: number;
  txBytes: number;
  persistentKeepalive: number;
}

export interface TunnelStatus {
  publicKey: string;
  listenPort: number;
  addresses: string[];
  peers: PeerStatus[];
}

const DefaultMtu = 1420;

function b64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

/** How often quiet TCP connections are looked at to give back their buffers. */
const TrimEveryMs = 2000;

export class Tunnel {
  readonly config: Config;
  readonly device: Device;
  readonly stack: Stack;
  readonly tcp: TcpLayer;
  readonly udp: UdpTransport;
  readonly scheduler: Scheduler;
  readonly logger: Logger;
  /** Filtered policy routes (`Route = CIDR:tcp:443`), checked before cryptokey routing. */
  readonly policy: PolicyTable = new PolicyTable();
  #closed = false;
  readonly #trimTimer: ReturnType<typeof setInterval>;
  #pingSeq = 0;
  #resolver: Resolver | undefined;
  readonly #pings = new Map<number, () => void>();

  private constructor(
    config: Config,
    udp: UdpTransport,
    logger: Logger,
    tcpLimits?: Partial<TcpLimits>,
  ) {
    this.config = config;
    this.udp = udp;
    this.logger = logger;
    const mtu = config.interface.mtu ?? DefaultMtu;
    this.device = new Device({ privateKey: config.interface.privateKey, mtu }, {
      sendUdp: (to, data) => this.udp.send(to, data),
      udpSlot: udp.slot?.bind(udp),
      deliver: (packet) => this.stack.input(this.scheduler.now(), packet),
      resolve: (peer) => void this.#resolve(peer),
      event: (e) => this.#onEvent(e),
    });
    this.stack = new Stack({
      addresses: config.interface.addresses.map((p) => p.addr),
      mtu,
      // The engine copies every packet into its datagram (or stages a copy): see Device.send.
      outputCopies: true,
      output: (packet) => {
        const peer = this.policy.forPacket(packet);
        if (peer) this.device.sendToPeer(this.scheduler.now(), peer, packet);
        else this.device.send(this.scheduler.now(), packet);
      },
    });
    this.stack.onEchoReply = (_now, _from, _ident, seq) => this.#pings.get(seq)?.();
    this.tcp = new TcpLayer({ ip: this.stack, limits: tcpLimits });
    this.stack.attach(this.tcp);
    this.scheduler = new Scheduler([this.device, this.stack]);
    // Quiet connections give back their empty buffers (TcpLayer.trimIdle). Unref'd: it never
    // keeps a process alive.
    const trim = setInterval(() => this.tcp.trimIdle(this.scheduler.now()), TrimEveryMs);
    Deno.unrefTimer(trim);
    this.#trimTimer = trim;
    for (const p of config.peers) {
      const literal = p.endpoint && parseIP(p.endpoint.host);
      this.device.addPeer({
        publicKey: p.publicKey,
        presharedKey: p.presharedKey,
        endpoint: literal ? { address: literal, port: p.endpoint!.port } : undefined,
        endpointHost: p.endpoint && !literal ? p.endpoint : undefined,
        allowedIPs: p.allowedIPs,
        persistentKeepalive: p.persistentKeepalive,
      });
    }
  }

  /** Opens the UDP socket, resolves hostname endpoints and starts the timers. */
  static async start(config: Config, options: TunnelOptions = {}): Promise<Tunnel> {
    const logger = options.logger ?? silentLogger;
    // Datagrams can only arrive once the socket exists, before the Tunnel that handles them.
    const ref: { tunnel?: Tunnel } = {};
    const udp = await UdpTransport.open({
      port: config.interface.listenPort,
      address: options.listenAddress,
      backend: options.udpBackend,
      maxDatagram: (config.interface.mtu ?? DefaultMtu) + 32,
      onDatagram: (from, data) => {
        const tunnel = ref.tunnel;
        if (!tunnel) return;
        tunnel.device.receive(tunnel.scheduler.now(), from, data);
        tunnel.scheduler.kick();
      },
      onError: (e) => logger.warn("udp socket error", { error: e.message }),
    });
    const tunnel = ref.tunnel = new Tunnel(config, udp, logger, options.tcp);
    await Promise.all(
      [...tunnel.device.peers].map((p) => p.endpointHost ? tunnel.#resolve(p) : undefined),
    );
    // Peers with persistent keepalive announce themselves at once, as wg-quick's do.
    for (const peer of tunnel.device.peers) {
      if (peer.persistentKeepaliveInterval > 0 && peer.endpoint) {
        tunnel.device.initiate(tunnel.scheduler.now(), peer);
      }
    }
    tunnel.scheduler.kick();
    logger.info("tunnel up", {
      publicKey: b64(tunnel.device.local.publicKey),
      listenPort: udp.port,
      addresses: config.interface.addresses.map((a) => formatIP(a.addr)),
    });
    return tunnel;
  }

  /** Starts a tunnel from a wg-quick file; errors name the file and line. */
  static async fromFile(path: string, options: TunnelOptions = {}): Promise<Tunnel> {
    return await Tunnel.start(await loadConfig(path), options);
  }

  /** Starts a tunnel from wg-quick text. */
  static async fromText(text: string, options: TunnelOptions = {}): Promise<Tunnel> {
    return await Tunnel.start(parseConfig(text), options);
  }

  /** The peer a connection to `dst` goes to: a matching policy route, else AllowedIPs. */
  routeFor(dst: IpBytes, protocol: "tcp" | "udp", port: number): Peer | undefined {
    return this.policy.match(dst, protocol, port) ?? this.device.route(dst);
  }

  /** Kicks the timers after the caller handed the stack new work outside a packet event. */
  poke(): void {
    this.scheduler.kick();
  }

  now(): number {
    return this.scheduler.now();
  }

  /**
   * Resolves a name through the config's `DNS =` servers, over the tunnel (the host resolver is
   * never asked). IPv4 addresses first; `family` restricts to one.
   */
  async resolve(hostname: string, options: { family?: 0 | 4 | 6 } = {}): Promise<string[]> {
    return (await this.#lookupAll(hostname, options.family ?? 0)).map(formatIP);
  }

  /** An IP address, or the first address of a name resolved through the tunnel's DNS. */
  async lookup(hostname: string): Promise<IpBytes> {
    const literal = parseIP(hostname);
    if (literal) return literal;
    return (await this.#lookupAll(hostname, 0))[0]!;
  }

  async #lookupAll(hostname: string, family: 0 | 4 | 6): Promise<IpBytes[]> {
    if (this.config.interface.dns.servers.length === 0 && !parseIP(hostname)) {
      throw new Deno.errors.NotFound(`Cannot resolve ${hostname}: the config has no DNS servers`);
    }
    this.#resolver ??= Resolver.forTunnel(this);
    return (await this.#resolver.resolve(hostname, { family })).addresses;
  }

  /** `fetch` through the tunnel (http: only), names resolved through the tunnel's DNS. */
  fetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
    return tunnelFetch(
      (hostname, port, signal) => this.connect({ hostname, port, signal }),
      input,
      init,
    );
  }

  /** Opens a TCP connection through the tunnel (like `Deno.connect`). */
  async connect(
    options: { hostname: string; port: number; noDelay?: boolean; signal?: AbortSignal },
  ): Promise<TunnelConn> {
    const dst = await this.lookup(options.hostname);
    return await connectTcp(this, { dst, ...options });
  }

  /** Listens for TCP connections on the tunnel address(es) (like `Deno.listen`). */
  listen(options: { port: number; hostname?: string; backlog?: number }): TunnelListener {
    const address = options.hostname === undefined || options.hostname === "0.0.0.0" ||
        options.hostname === "::"
      ? undefined
      : parseIP(options.hostname);
    if (
      options.hostname !== undefined && address === undefined && options.hostname !== "0.0.0.0" &&
      options.hostname !== "::"
    ) {
      throw new TypeError(`Cannot listen on ${options.hostname}: not an IP address`);
    }
    this.tcp.tick(this.now());
    const listener = this.tcp.listen({ address, port: options.port, backlog: options.backlog });
    const shown = address ?? parseIP(options.hostname?.includes(":") ? "::" : "0.0.0.0")!;
    return new TunnelListener(listener, this, netAddr(shown, listener.port));
  }

  /** Sends one ICMP/ICMPv6 echo; resolves to the round-trip time in ms. */
  ping(hostname: string, options: { timeout?: number; data?: Uint8Array } = {}): Promise<number> {
    return this.lookup(hostname).then((dst) =>
      new Promise<number>((resolve, reject) => {
        const ident = 0x5747, seq = this.#pingSeq = (this.#pingSeq + 1) & 0xffff;
        const start = performance.now();
        const timer = setTimeout(() => {
          this.#pings.delete(seq);
          reject(new Deno.errors.TimedOut(`no echo reply from ${hostname}`));
        }, options.timeout ?? 5000);
        this.#pings.set(seq, () => {
          this.#pings.delete(seq);
          clearTimeout(timer);
          resolve(performance.now() - start);
        });
        this.stack.ping(dst, ident, seq, options.data ?? new Uint8Array(32));
        this.poke();
      })
    );
  }

  status(): TunnelStatus {
    return {
      publicKey: b64(this.device.local.publicKey),
      listenPort: this.udp.port,
      addresses: this.config.interface.addresses.map((a) => `${formatIP(a.addr)}/${a.bits}`),
      peers: [...this.device.peers].map((p) => ({
        publicKey: b64(p.publicKey),
        endpoint: p.endpoint ? formatEndpoint(p.endpoint) : undefined,
        allowedIPs: this.config.peers.find((c) => b64(c.publicKey) === b64(p.publicKey))
          ?.allowedIPs.map((a) => `${formatIP(a.addr)}/${a.bits}`) ?? [],
        latestHandshake: p.stats.lastHandshakeWall,
        rxBytes: p.stats.rxBytes,
        txBytes: p.stats.txBytes,
        persistentKeepalive: p.persistentKeepaliveInterval / 1000,
      })),
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#trimTimer);
    // Peers are told, as a kernel tells them when a process ends: a reset for every open
    // connection, sent before the socket closes (the transport sends what is queued on close).
    this.tcp.abortAll(this.scheduler.now());
    this.scheduler.close();
    this.udp.close();
    this.logger.info("tunnel down");
  }

  async #resolve(peer: Peer): Promise<void> {
    const host = peer.endpointHost;
    if (!host) return;
    try {
      // getaddrinfo order, as wg(8) takes the first result. Imported here, not at the top: only
      // a hostname endpoint needs it, and node: modules cost a run's start (docs/performance.md).
      const { lookup } = await import("node:dns/promises");
      const result = await lookup(host.host);
      const address: IpBytes | undefined = parseIP(result.address);
      if (!address || this.#closed) return;
      const endpoint: Endpoint = { address, port: host.port };
      this.device.setEndpoint(peer, endpoint);
      this.scheduler.kick();
    } catch (e) {
      this.logger.warn("cannot resolve peer endpoint", {
        peer: b64(peer.publicKey),
        host: host.host,
        error: (e as Error).message,
      });
    }
  }

  #onEvent(e: DeviceEvent): void {
    const peer = "peer" in e ? b64(e.peer.publicKey) : undefined;
    switch (e.type) {
      case "handshake-complete":
        this.logger.info("handshake complete", { peer, role: e.role });
        break;
      case "handshake-initiated":
        this.logger.debug("handshake initiated", { peer, retry: e.retry });
        break;
      case "handshake-failed":
        this.logger.warn("handshake did not complete", { peer, attempts: e.attempts });
        break;
      case "endpoint-changed":
        this.logger.info("peer endpoint changed", { peer, endpoint: formatEndpoint(e.endpoint) });
        break;
      case "keys-zeroed":
        this.logger.debug("session keys erased", { peer });
        break;
      case "under-load":
        this.logger.warn(e.active ? "under load: demanding cookies" : "load subsided");
        break;
    }
  }
}
