/**
 * A UDP relay with fault injection, for the impairments `tc … netem` would give (this kernel has
 * no sch_netem). The test points one side (the "client", e.g. our Tunnel's peer Endpoint) at the
 * relay's listen socket; the relay forwards to the target from a second socket and sends the
 * target's datagrams back to the client, impairing each direction as configured:
 *
 * ```
 *   client ──► listen socket ─[toTarget impairments]─► outbound socket ──► target
 *   client ◄── listen socket ◄─[toClient impairments]─ outbound socket ◄── target
 * ```
 *
 * The client is whoever last sent to the listen socket. Datagrams reaching the outbound socket
 * from anyone but the target are dropped. WireGuard encrypts whole IP packets into single UDP
 * datagrams, so impairing the WireGuard stream is impairing the tunnel's IP packets.
 *
 * Per datagram and direction, in netem's order: rate limit (tail drop when the queue is full),
 * loss (Gilbert–Elliott, then independent), corruption (one byte flipped), duplication, then
 * delay ± jitter, plus `reorderDelayMs` more for the share held back to reorder. Jitter alone can
 * reorder too, as with netem. Every random choice comes from a PRNG seeded per direction, so the
 * same seed and the same traffic give the same faults.
 *
 * @module
 */
import dgram from "node:dgram";

/** Gilbert–Elliott two-state loss: Good ⇄ Bad with per-datagram transition probabilities. */
export interface GilbertElliott {
  /** Good → Bad. */
  p: number;
  /** Bad → Good (mean burst length 1/r when `lossBad` is 1). */
  r: number;
  /** Loss probability in Bad, default 1. */
  lossBad?: number;
  /** Loss probability in Good, default 0. */
  lossGood?: number;
}

/** What to do to one direction. Probabilities are 0..1; absent means none. */
export interface Impairments {
  /** Independent loss. */
  loss?: number;
  /** Bursty loss. */
  burst?: GilbertElliott;
  /** Share of datagrams sent twice. */
  duplicate?: number;
  /** Share of datagrams with one byte changed. */
  corrupt?: number;
  /** Share of datagrams held back by `reorderDelayMs`, so that later ones overtake them. */
  reorder?: number;
  /** Default 10 ms. */
  reorderDelayMs?: number;
  /** Fixed delay. */
  delayMs?: number;
  /** Uniform ± added to the delay (never below zero in total). */
  jitterMs?: number;
  /** Bytes per second; the datagrams queue behind each other. */
  rateBytesPerSec?: number;
  /** Datagrams that may wait for the rate limiter before more are dropped; default 1000. */
  queueLimit?: number;
}

/** What the relay did in one direction. */
export interface DirectionStats {
  received: number;
  /** Datagrams sent on (duplicates included). */
  forwarded: number;
  bytesReceived: number;
  bytesForwarded: number;
  /** Dropped by independent loss. */
  lost: number;
  /** Dropped by the Gilbert–Elliott model. */
  burstLost: number;
  /** Times the Gilbert–Elliott model entered Bad. */
  badStates: number;
  /** Dropped because the rate limiter's queue was full. */
  rateDropped: number;
  duplicated: number;
  corrupted: number;
  /** Held back for reordering. */
  reordered: number;
  /** toClient: dropped because no client has sent anything yet. */
  noClient: number;
}

/** Where the relay listens and where it forwards. */
export interface RelayOptions {
  /** Client side; default 127.0.0.1, any port. */
  listen?: { host?: string; port?: number };
  /** The socket that talks to the target; default the listen host, any port. */
  outbound?: { host?: string; port?: number };
  /** May be set later with {@link Relay.target}. */
  target?: { host: string; port: number };
  toTarget?: Impairments;
  toClient?: Impairments;
  /** PRNG seed; default 1. */
  seed?: number;
}

/** A small seeded PRNG (mulberry32): uniform in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function emptyStats(): DirectionStats {
  return {
    received: 0,
    forwarded: 0,
    bytesReceived: 0,
    bytesForwarded: 0,
    lost: 0,
    burstLost: 0,
    badStates: 0,
    rateDropped: 0,
    duplicated: 0,
    corrupted: 0,
    reordered: 0,
    noClient: 0,
  };
}

function checkProbability(v: number | undefined, what: string): void {
  if (v !== undefined && !(v >= 0 && v <= 1)) {
    throw new RangeError(`Cannot use ${what} ${v}: expected a probability 0..1`);
  }
}

function checkImpairments(i: Impairments): void {
  checkProbability(i.loss, "loss");
  checkProbability(i.duplicate, "duplicate");
  checkProbability(i.corrupt, "corrupt");
  checkProbability(i.reorder, "reorder");
  if (i.burst) {
    checkProbability(i.burst.p, "burst.p");
    checkProbability(i.burst.r, "burst.r");
    checkProbability(i.burst.lossBad, "burst.lossBad");
    checkProbability(i.burst.lossGood, "burst.lossGood");
  }
  for (const [k, v] of Object.entries(i)) {
    if (typeof v === "number" && (v < 0 || !Number.isFinite(v))) {
      throw new RangeError(`Cannot use ${k} ${v}`);
    }
  }
  if (i.rateBytesPerSec === 0) throw new RangeError("Cannot use a rate of 0 bytes per second");
}

/** One direction's impairment machinery. */
class Direction {
  readonly stats: DirectionStats = emptyStats();
  #imp: Impairments = {};
  #random: () => number;
  #bad = false;
  /** When the rate limiter's link is next free (performance.now() ms). */
  #linkFreeAt = 0;
  #queued = 0;
  readonly #send: (data: Uint8Array) => boolean;
  readonly #timers: Set<ReturnType<typeof setTimeout>>;

  constructor(
    seed: number,
    send: (data: Uint8Array) => boolean,
    timers: Set<ReturnType<typeof setTimeout>>,
  ) {
    this.#random = seededRandom(seed);
    this.#send = send;
    this.#timers = timers;
  }

  set(imp: Impairments): void {
    checkImpairments(imp);
    this.#imp = { ...imp };
    this.#bad = false;
  }

  handle(data: Uint8Array): void {
    const imp = this.#imp;
    const rand = this.#random;
    const s = this.stats;
    s.received++;
    s.bytesReceived += data.length;
    if (imp.burst) {
      const ge = imp.burst;
      if (this.#bad ? rand() < ge.r : rand() < ge.p) {
        this.#bad = !this.#bad;
        if (this.#bad) s.badStates++;
      }
      const p = this.#bad ? ge.lossBad ?? 1 : ge.lossGood ?? 0;
      if (p > 0 && rand() < p) {
        s.burstLost++;
        return;
      }
    }
    if (imp.loss && rand() < imp.loss) {
      s.lost++;
      return;
    }
    let out = data;
    if (imp.corrupt && rand() < imp.corrupt && data.length > 0) {
      out = data.slice();
      const i = Math.floor(rand() * out.length);
      out[i] = out[i]! ^ (1 + Math.floor(rand() * 255));
      s.corrupted++;
    }
    let copies = 1;
    if (imp.duplicate && rand() < imp.duplicate) {
      copies = 2;
      s.duplicated++;
    }
    for (let c = 0; c < copies; c++) this.#schedule(out);
  }

  #schedule(data: Uint8Array): void {
    const imp = this.#imp;
    const rand = this.#random;
    const now = performance.now();
    let leave = now;
    let queued = false;
    if (imp.rateBytesPerSec) {
      if (this.#queued >= (imp.queueLimit ?? 1000)) {
        this.stats.rateDropped++;
        return;
      }
      const start = Math.max(now, this.#linkFreeAt);
      this.#linkFreeAt = start + (data.length * 1000) / imp.rateBytesPerSec;
      leave = this.#linkFreeAt;
      queued = true;
      this.#queued++;
    }
    let extra = imp.delayMs ?? 0;
    if (imp.jitterMs) extra += (rand() * 2 - 1) * imp.jitterMs;
    if (imp.reorder && rand() < imp.reorder) {
      extra += imp.reorderDelayMs ?? 10;
      this.stats.reordered++;
    }
    leave += Math.max(0, extra);
    const go = () => {
      if (queued) this.#queued--;
      if (this.#send(data)) {
        this.stats.forwarded++;
        this.stats.bytesForwarded += data.length;
      }
    };
    if (leave <= now) {
      go();
      return;
    }
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      go();
    }, leave - now);
    this.#timers.add(timer);
  }
}

function bind(host: string, port: number): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket(host.includes(":") ? "udp6" : "udp4");
    socket.once("error", reject);
    socket.bind(port, host, () => {
      socket.off("error", reject);
      resolve(socket);
    });
  });
}

/**
 * Sends datagrams from one node:dgram socket strictly in the order given, one at a time: the next
 * is handed to the runtime only when the previous send has completed. Deno's node:dgram (2.9)
 * does not keep the order of sends issued back to back: the first burst from a new socket goes
 * out reversed, and a socket that sends while it is receiving swaps some datagrams. A relay that
 * reorders on its own would spoil every measurement of the reordering it is told to do.
 */
export class OrderedSender {
  readonly #socket: dgram.Socket;
  readonly #queue: { data: Uint8Array; port: number; host: string }[] = [];
  #busy = false;
  #closed = false;
  /** Sends that failed (reported by the runtime). */
  errors: number = 0;

  constructor(socket: dgram.Socket) {
    this.#socket = socket;
  }

  /** Datagrams waiting for their turn. */
  get backlog(): number {
    return this.#queue.length;
  }

  send(data: Uint8Array, port: number, host: string): void {
    if (this.#closed) return;
    this.#queue.push({ data, port, host });
    if (!this.#busy) this.#next();
  }

  /** Drops what is still queued; later sends do nothing. */
  close(): void {
    this.#closed = true;
    this.#queue.length = 0;
  }

  #next(): void {
    const item = this.#queue.shift();
    if (!item || this.#closed) {
      this.#busy = false;
      return;
    }
    this.#busy = true;
    this.#socket.send(item.data, item.port, item.host, (e) => {
      if (e) this.errors++;
      this.#next();
    });
  }
}

function view(msg: Uint8Array): Uint8Array {
  return new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength);
}

/** A running relay; see the module doc. Create with {@link Relay.open}, end with {@link close}. */
export class Relay {
  /** Where the client sends. */
  readonly host: string;
  readonly port: number;
  /** The relay's address as the target sees it. */
  readonly outboundHost: string;
  readonly outboundPort: number;
  /** Where datagrams from the client go; while undefined they are dropped (not forwarded). */
  target: { host: string; port: number } | undefined;
  readonly #listen: dgram.Socket;
  readonly #outbound: dgram.Socket;
  readonly #toClientOut: OrderedSender;
  readonly #toTargetOut: OrderedSender;
  readonly #toTarget: Direction;
  readonly #toClient: Direction;
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  #client: { host: string; port: number } | undefined;
  #closed = false;
  /** Datagrams at the outbound socket from someone other than the target. */
  strangers: number = 0;

  private constructor(listen: dgram.Socket, outbound: dgram.Socket, options: RelayOptions) {
    this.#listen = listen;
    this.#outbound = outbound;
    this.host = listen.address().address;
    this.port = listen.address().port;
    this.outboundHost = outbound.address().address;
    this.outboundPort = outbound.address().port;
    this.target = options.target;
    this.#toTargetOut = new OrderedSender(outbound);
    this.#toClientOut = new OrderedSender(listen);
    const seed = options.seed ?? 1;
    this.#toTarget = new Direction(seed, (d) => {
      const t = this.target;
      if (!t || this.#closed) return false;
      this.#toTargetOut.send(d, t.port, t.host);
      return true;
    }, this.#timers);
    this.#toClient = new Direction(seed ^ 0x9e3779b9, (d) => {
      const c = this.#client;
      if (this.#closed) return false;
      if (!c) {
        this.#toClient.stats.noClient++;
        return false;
      }
      this.#toClientOut.send(d, c.port, c.host);
      return true;
    }, this.#timers);
    this.#toTarget.set(options.toTarget ?? {});
    this.#toClient.set(options.toClient ?? {});
    listen.on("message", (msg: Uint8Array, rinfo: dgram.RemoteInfo) => {
      if (this.#closed) return;
      const c = this.#client;
      if (!c || c.host !== rinfo.address || c.port !== rinfo.port) {
        this.#client = { host: rinfo.address, port: rinfo.port };
      }
      this.#toTarget.handle(view(msg));
    });
    outbound.on("message", (msg: Uint8Array, rinfo: dgram.RemoteInfo) => {
      if (this.#closed) return;
      const t = this.target;
      if (!t || rinfo.port !== t.port || !sameHost(rinfo.address, t.host)) {
        this.strangers++;
        return;
      }
      this.#toClient.handle(view(msg));
    });
  }

  /** Binds both sockets. */
  static async open(options: RelayOptions = {}): Promise<Relay> {
    checkImpairments(options.toTarget ?? {});
    checkImpairments(options.toClient ?? {});
    const host = options.listen?.host ?? "127.0.0.1";
    const listen = await bind(host, options.listen?.port ?? 0);
    let outbound: dgram.Socket | undefined;
    try {
      outbound = await bind(options.outbound?.host ?? host, options.outbound?.port ?? 0);
    } catch (e) {
      listen.close();
      outbound?.close();
      throw e;
    }
    return new Relay(listen, outbound, options);
  }

  /** What the relay did, per direction. */
  get stats(): { toTarget: DirectionStats; toClient: DirectionStats } {
    return { toTarget: this.#toTarget.stats, toClient: this.#toClient.stats };
  }

  /** The client address in use (the last one that sent to the listen socket). */
  get client(): { host: string; port: number } | undefined {
    return this.#client;
  }

  /** `host:port` for a client to send to (IPv6 in brackets). */
  get endpoint(): string {
    return this.host.includes(":") ? `[${this.host}]:${this.port}` : `${this.host}:${this.port}`;
  }

  /** Replaces one direction's impairments (the Gilbert–Elliott state restarts in Good). */
  impair(direction: "toTarget" | "toClient", impairments: Impairments): void {
    (direction === "toTarget" ? this.#toTarget : this.#toClient).set(impairments);
  }

  /** Drops what is still delayed and closes both sockets. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    this.#toTargetOut.close();
    this.#toClientOut.close();
    await Promise.all([
      new Promise<void>((r) => this.#listen.close(() => r())),
      new Promise<void>((r) => this.#outbound.close(() => r())),
    ]);
  }
}

function sameHost(a: string, b: string): boolean {
  const strip = (s: string) => s.startsWith("::ffff:") ? s.slice(7) : s;
  return strip(a) === strip(b);
}
