/**
 * Test support for the TCP layer, used by `tests/tcp_*_test.ts`: an {@link IpOutput} that
 * records what is sent, a seeded random source, a script harness in smoltcp's style (inject a
 * segment at time t, assert exactly which segments come out), and a simulated network (loss,
 * reordering, duplication, delay, rate) driven by a fake clock. Not used by the stack itself.
 *
 * @module
 */
import { formatIP, type IpBytes, ipEquals } from "../../core/wire/addr.ts";
import { IpProtocol } from "../../core/wire/ip.ts";
import { TcpFlag, TcpPacket, TcpRepr } from "../../core/wire/tcp.ts";
import type { IpOutput, Transport } from "../../core/netstack/types.ts";
import type { TcpConnection } from "../../core/netstack/tcp/connection.ts";
import { TcpLayer } from "../../core/netstack/tcp/layer.ts";
import type { TcpListener } from "../../core/netstack/tcp/listener.ts";
import type { TcpLimits } from "../../core/netstack/tcp/tcb.ts";

/** A segment the layer sent, parsed. */
export interface Sent {
  src: IpBytes;
  dst: IpBytes;
  bytes: Uint8Array;
  seg: TcpRepr;
}

/** An IpOutput that keeps what is sent; `payload` is what `maxPayload` answers. */
export class RecordingIp implements IpOutput {
  readonly sent: Sent[] = [];
  readonly addresses: IpBytes[];
  payload: number;
  /** Called for each segment sent, after it is recorded. */
  onSend?: (s: Sent) => void;

  constructor(addresses: IpBytes[], payload = 1400) {
    this.addresses = addresses;
    this.payload = payload;
  }

  send(src: IpBytes, dst: IpBytes, protocol: number, payload: Uint8Array): void {
    if (protocol !== IpProtocol.TCP) throw new Error(`unexpected protocol ${protocol}`);
    const packet = TcpPacket.check(payload);
    if (!packet) throw new Error("sent a malformed segment");
    if (!packet.checksumValid(src, dst)) throw new Error("sent a segment with a bad checksum");
    const seg = TcpRepr.parse(packet);
    if (!seg) throw new Error("sent a segment with malformed options");
    seg.payload = seg.payload.slice();
    const s = { src: src.slice(), dst: dst.slice(), bytes: payload, seg };
    this.sent.push(s);
    this.onSend?.(s);
  }

  maxPayload(_dst: IpBytes): number {
    return this.payload;
  }

  sourceFor(dst: IpBytes): IpBytes | undefined {
    return this.addresses.find((a) => a.length === dst.length);
  }

  isLocal(addr: IpBytes): boolean {
    return this.addresses.some((a) => ipEquals(a, addr));
  }

  /** Everything sent since the last call. */
  take(): TcpRepr[] {
    return this.sent.splice(0).map((s) => s.seg);
  }
}

/** A deterministic random source (xorshift32) for `TcpLayerOptions.random`. */
export function seededRandom(seed: number): (n: number) => Uint8Array {
  let x = (seed >>> 0) || 0x9e3779b9;
  return (n: number) => {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      out[i] = x & 0xff;
    }
    return out;
  };
}

/** A number in [0, 1) from a seeded stream. */
export function seededUniform(seed: number): () => number {
  const bytes = seededRandom(seed);
  return () => {
    const b = bytes(4);
    return (((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0) / 2 ** 32;
  };
}

const FLAG_LETTERS: [string, number][] = [
  ["S", TcpFlag.SYN],
  ["A", TcpFlag.ACK],
  ["F", TcpFlag.FIN],
  ["R", TcpFlag.RST],
  ["P", TcpFlag.PSH],
  ["U", TcpFlag.URG],
];

/** "SA" → SYN|ACK (letters S A F R P U, any order). */
export function flagsOf(letters: string): number {
  let f = 0;
  for (const ch of letters) {
    const e = FLAG_LETTERS.find(([l]) => l === ch);
    if (!e) throw new Error(`unknown flag letter ${ch}`);
    f |= e[1];
  }
  return f;
}

export function flagString(f: number): string {
  return FLAG_LETTERS.filter(([, bit]) => f & bit).map(([l]) => l).join("");
}

/** A segment to inject or to expect; unset fields are defaults (inject) or not compared (expect). */
export interface SegSpec {
  srcPort?: number;
  dstPort?: number;
  seq?: number;
  ack?: number;
  flags?: string;
  window?: number;
  mss?: number | null;
  ws?: number | null;
  sackPerm?: boolean;
  /** [TSval, TSecr], or null for none. */
  ts?: [number, number] | null;
  sack?: [number, number][];
  /** Data, as bytes, text, or a length (filled with a pattern from the sequence number). */
  data?: Uint8Array | string | number;
  /** Expect only: the data length. */
  len?: number;
}

/** The byte at sequence-relative position `i` of pattern data (what `data: number` makes). */
export function patternByte(i: number): number {
  return (i * 7 + 3) & 0xff;
}

export function patternData(len: number, start = 0): Uint8Array {
  const d = new Uint8Array(len);
  for (let i = 0; i < len; i++) d[i] = patternByte(start + i);
  return d;
}

function dataOf(d: Uint8Array | string | number | undefined): Uint8Array {
  if (d === undefined) return new Uint8Array(0);
  if (typeof d === "string") return new TextEncoder().encode(d);
  if (typeof d === "number") return patternData(d);
  return d;
}

/** A segment's bytes (checksum filled) from a spec. */
export function buildSegment(spec: SegSpec, src: IpBytes, dst: IpBytes): Uint8Array {
  const r = new TcpRepr();
  r.srcPort = spec.srcPort ?? 0;
  r.dstPort = spec.dstPort ?? 0;
  r.seq = (spec.seq ?? 0) >>> 0;
  r.ack = (spec.ack ?? 0) >>> 0;
  r.flags = flagsOf(spec.flags ?? "A");
  r.window = spec.window ?? 65535;
  if (spec.mss != null) r.mss = spec.mss;
  if (spec.ws != null) r.windowScale = spec.ws;
  r.sackPermitted = spec.sackPerm ?? false;
  if (spec.ts) {
    r.timestamp = true;
    r.tsVal = spec.ts[0] >>> 0;
    r.tsEcr = spec.ts[1] >>> 0;
  }
  for (const [l, rr] of spec.sack ?? []) r.addSack(l >>> 0, rr >>> 0);
  r.payload = dataOf(spec.data);
  return r.toBytes(src, dst);
}

/** One line describing a segment, for assertion messages. */
export function describe(r: TcpRepr): string {
  const parts = [`${r.srcPort}>${r.dstPort}`, `[${flagString(r.flags)}]`, `seq=${r.seq}`];
  if (r.flags & TcpFlag.ACK) parts.push(`ack=${r.ack}`);
  parts.push(`win=${r.window}`);
  if (r.mss !== undefined) parts.push(`mss=${r.mss}`);
  if (r.windowScale !== undefined) parts.push(`ws=${r.windowScale}`);
  if (r.sackPermitted) parts.push("sackOK");
  if (r.timestamp) parts.push(`ts=${r.tsVal}/${r.tsEcr}`);
  if (r.sackCount > 0) {
    const b: string[] = [];
    for (let i = 0; i < r.sackCount; i++) {
      b.push(`${r.sackBlocks[2 * i]}-${r.sackBlocks[2 * i + 1]}`);
    }
    parts.push(`sack=${b.join(",")}`);
  }
  parts.push(`len=${r.payload.length}`);
  return parts.join(" ");
}

/** Undefined when `r` matches every field `spec` sets; else what differs. */
export function mismatch(r: TcpRepr, spec: SegSpec): string | undefined {
  const bad: string[] = [];
  const eq = (name: string, got: unknown, want: unknown) => {
    if (want !== undefined && got !== want) bad.push(`${name}: got ${got}, want ${want}`);
  };
  eq("srcPort", r.srcPort, spec.srcPort);
  eq("dstPort", r.dstPort, spec.dstPort);
  eq("seq", r.seq, spec.seq === undefined ? undefined : spec.seq >>> 0);
  if (spec.ack !== undefined) eq("ack", r.flags & TcpFlag.ACK ? r.ack : "none", spec.ack >>> 0);
  if (spec.flags !== undefined) eq("flags", flagString(r.flags), flagString(flagsOf(spec.flags)));
  eq("window", r.window, spec.window);
  if (spec.mss !== undefined) eq("mss", r.mss ?? null, spec.mss);
  if (spec.ws !== undefined) eq("ws", r.windowScale ?? null, spec.ws);
  eq("sackPerm", r.sackPermitted, spec.sackPerm);
  if (spec.ts !== undefined) {
    const got = r.timestamp ? `${r.tsVal}/${r.tsEcr}` : "none";
    const want = spec.ts === null ? "none" : `${spec.ts[0] >>> 0}/${spec.ts[1] >>> 0}`;
    eq("ts", got, want);
  }
  if (spec.sack !== undefined) {
    const got: string[] = [];
    for (let i = 0; i < r.sackCount; i++) {
      got.push(`${r.sackBlocks[2 * i]}-${r.sackBlocks[2 * i + 1]}`);
    }
    eq("sack", got.join(","), spec.sack.map(([a, b]) => `${a >>> 0}-${b >>> 0}`).join(","));
  }
  eq("len", r.payload.length, spec.len);
  if (spec.data !== undefined) {
    const want = dataOf(spec.data);
    const same = want.length === r.payload.length && want.every((b, i) => r.payload[i] === b);
    if (!same) {
      bad.push(`data: got ${r.payload.length} bytes, want ${want.length} (content differs)`);
    }
  }
  return bad.length ? bad.join("; ") : undefined;
}

/** Options of the scripted peer's SYN or SYN-ACK. */
export interface OpenOptions {
  t?: number;
  /** The peer's ISN (default 1 000 000). */
  irs?: number;
  /** The peer's window field (default 65535; scaled by `ws` after the handshake). */
  window?: number;
  mss?: number;
  /** The peer's window scale; null for none (default 7). */
  ws?: number | null;
  sack?: boolean;
  /** Timestamps on (default). */
  ts?: boolean;
  tsVal?: number;
  /** Time the SYN-ACK / ACK takes (default 10). */
  rtt?: number;
  noDelay?: boolean;
}

export interface Opened {
  conn: TcpConnection;
  /** Our ISN. */
  iss: number;
  /** The peer's ISN. */
  irs: number;
}

export interface ScriptOptions {
  limits?: Partial<TcpLimits>;
  /** What maxPayload answers (MTU minus IP header). */
  payload?: number;
  seed?: number;
  v6?: boolean;
}

/**
 * One layer at `local` talking to a scripted peer at `remote`: `send(t, spec)` injects a
 * segment from the peer at time t; `expect([...])` asserts exactly what came out since.
 */
export class TcpScript {
  readonly local: IpBytes;
  readonly remote: IpBytes;
  readonly ip: RecordingIp;
  readonly tcp: TcpLayer;
  now = 0;

  constructor(options: ScriptOptions = {}) {
    this.local = options.v6
      ? new Uint8Array([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
      : new Uint8Array([10, 0, 0, 1]);
    this.remote = options.v6
      ? new Uint8Array([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2])
      : new Uint8Array([10, 0, 0, 2]);
    this.ip = new RecordingIp([this.local], options.payload ?? 1400);
    this.tcp = new TcpLayer({
      ip: this.ip,
      random: seededRandom(options.seed ?? 1),
      limits: options.limits,
    });
  }

  /** Ports `send` fills in when a spec has none: the peer's, then ours. */
  peerPort = 80;
  localPort = 0;

  /** The peer sends `spec` at time `t` (ports default to the script's connection). */
  send(t: number, spec: SegSpec): void {
    this.now = t;
    const full = { srcPort: this.peerPort, dstPort: this.localPort, ...spec };
    this.tcp.input(t, this.remote, this.local, buildSegment(full, this.remote, this.local));
  }

  /**
   * Active open at time `t` against a scripted peer whose ISN is `irs`: checks our SYN, answers
   * SYN-ACK with the given options, checks our ACK. Returns the connection and both ISNs.
   */
  openActive(options: OpenOptions = {}): Opened {
    const t = options.t ?? 0;
    const conn = this.tcp.connect(t, {
      dst: this.remote,
      dstPort: this.peerPort,
      noDelay: options.noDelay,
    });
    this.localPort = conn.localPort;
    const [syn] = this.expect([{ flags: "S", mss: this.ip.payload - 20, sackPerm: true }], "SYN");
    const iss = syn!.seq;
    const irs = options.irs ?? 1_000_000;
    const ts = options.ts ?? true;
    this.send(t + (options.rtt ?? 10), {
      flags: "SA",
      seq: irs,
      ack: iss + 1,
      window: options.window ?? 65535,
      mss: options.mss ?? 1460,
      ws: options.ws === undefined ? 7 : options.ws,
      sackPerm: options.sack ?? true,
      ts: ts ? [options.tsVal ?? 500, syn!.tsVal] : null,
    });
    this.expect([{ flags: "A", seq: iss + 1, ack: irs + 1 }], "handshake ACK");
    if (conn.state !== "ESTABLISHED") throw new Error(`not established: ${conn.state}`);
    return { conn, iss, irs };
  }

  /**
   * Passive open: listens on `port`, the peer sends SYN (ISN `irs`) with the given options,
   * checks the SYN-ACK, completes with ACK, accepts. Returns the connection and both ISNs.
   */
  openPassive(options: OpenOptions & { port?: number } = {}): Opened & { listener: TcpListener } {
    const t = options.t ?? 0;
    const port = options.port ?? 8080;
    const listener = this.tcp.listen({ port });
    this.localPort = port;
    this.peerPort = 40000;
    const irs = options.irs ?? 1_000_000;
    const ts = options.ts ?? true;
    this.send(t, {
      flags: "S",
      seq: irs,
      window: options.window ?? 65535,
      mss: options.mss ?? 1460,
      ws: options.ws === undefined ? 7 : options.ws,
      sackPerm: options.sack ?? true,
      ts: ts ? [options.tsVal ?? 500, 0] : null,
    });
    const [sa] = this.expect([{ flags: "SA", ack: irs + 1 }], "SYN-ACK");
    const iss = sa!.seq;
    this.send(t + (options.rtt ?? 10), {
      flags: "A",
      seq: irs + 1,
      ack: iss + 1,
      window: options.window ?? 65535,
      ts: ts ? [(options.tsVal ?? 500) + 1, sa!.tsVal] : null,
    });
    this.expectNone("after the handshake ACK");
    const conn = listener.accept();
    if (!conn) throw new Error("nothing to accept");
    if (options.noDelay) conn.setNoDelay(true);
    return { conn, iss, irs, listener };
  }

  /** Runs timers at `t`. */
  tick(t: number): void {
    this.now = t;
    this.tcp.tick(t);
  }

  /** Runs every timer due up to `t`, in order. */
  runUntil(t: number): void {
    for (let at = this.tcp.pollAt(); at <= t; at = this.tcp.pollAt()) this.tick(at);
    this.now = t;
  }

  /** Everything sent since the last call. */
  out(): TcpRepr[] {
    return this.ip.take();
  }

  /** Asserts that exactly `specs.length` segments went out since the last call, each matching. */
  expect(specs: SegSpec[], what = ""): TcpRepr[] {
    const got = this.out();
    const lines = got.map(describe).join("\n  ");
    const where = what ? ` (${what})` : "";
    if (got.length !== specs.length) {
      throw new Error(
        `expected ${specs.length} segment(s)${where}, got ${got.length}:\n  ${lines}`,
      );
    }
    specs.forEach((spec, i) => {
      const m = mismatch(got[i]!, spec);
      if (m) throw new Error(`segment ${i}${where} differs: ${m}\n  ${lines}`);
    });
    return got;
  }

  /** Asserts nothing went out. */
  expectNone(what = ""): void {
    this.expect([], what);
  }
}

// ---------------------------------------------------------------------------------------------
// A simulated network

export interface LinkOptions {
  /** One-way delay, ms. */
  delay: number;
  /** Probability a packet is lost. */
  loss?: number;
  /** Probability a packet is delivered twice. */
  duplicate?: number;
  /** Probability a packet is held back by up to `reorderDelay` ms more (overtaken). */
  reorder?: number;
  reorderDelay?: number;
  /** Bytes per ms each direction can carry (undefined: unlimited). */
  rate?: number;
  /** Packets a direction's queue holds before dropping (with `rate`). */
  queueLimit?: number;
  seed?: number;
}

interface InFlight {
  at: number;
  order: number;
  src: IpBytes;
  dst: IpBytes;
  payload: Uint8Array;
}

/** Counters of what the network did. */
export interface NetStats {
  sent: number;
  delivered: number;
  lost: number;
  duplicated: number;
  reordered: number;
  queueDrops: number;
}

/**
 * Hosts joined by one link with the given faults, driven by a fake clock: `run` moves time to
 * the next delivery or timer, delivers, ticks, until a condition holds.
 */
export class SimNetwork {
  now = 0;
  readonly stats: NetStats = {
    sent: 0,
    delivered: 0,
    lost: 0,
    duplicated: 0,
    reordered: 0,
    queueDrops: 0,
  };
  readonly #opts: LinkOptions;
  readonly #rand: () => number;
  readonly #hosts: { addr: IpBytes; transport?: Transport }[] = [];
  #queue: InFlight[] = [];
  #order = 0;
  /** Per source address: when its direction of the link is free again. */
  readonly #busyUntil = new Map<string, number>();

  constructor(options: LinkOptions) {
    this.#opts = options;
    this.#rand = seededUniform(options.seed ?? 7);
  }

  /** An IpOutput for a host at `addr`; attach its transport with {@link attach}. */
  host(addr: IpBytes, payload = 1400): IpOutput {
    const entry: { addr: IpBytes; transport?: Transport } = { addr };
    this.#hosts.push(entry);
    return {
      send: (src, dst, _p, data) => this.#send(src, dst, data),
      maxPayload: () => payload,
      sourceFor: (dst) => (dst.length === addr.length ? addr : undefined),
      isLocal: (a) => ipEquals(a, addr),
    };
  }

  attach(addr: IpBytes, transport: Transport): void {
    const h = this.#hosts.find((x) => ipEquals(x.addr, addr));
    if (!h) throw new Error(`no host ${formatIP(addr)}`);
    h.transport = transport;
  }

  #send(src: IpBytes, dst: IpBytes, payload: Uint8Array): void {
    const o = this.#opts;
    this.stats.sent++;
    if (o.loss && this.#rand() < o.loss) {
      this.stats.lost++;
      return;
    }
    let depart = this.now;
    if (o.rate) {
      const key = formatIP(src);
      const busy = Math.max(this.#busyUntil.get(key) ?? 0, this.now);
      const backlog = (busy - this.now) * o.rate / 1400;
      if (o.queueLimit !== undefined && backlog > o.queueLimit) {
        this.stats.queueDrops++;
        return;
      }
      depart = busy + payload.length / o.rate;
      this.#busyUntil.set(key, depart);
    }
    let at = depart + o.delay;
    if (o.reorder && this.#rand() < o.reorder) {
      this.stats.reordered++;
      at += this.#rand() * (o.reorderDelay ?? o.delay);
    }
    const copy = payload.slice();
    this.#push({ at, order: this.#order++, src: src.slice(), dst: dst.slice(), payload: copy });
    if (o.duplicate && this.#rand() < o.duplicate) {
      this.stats.duplicated++;
      const again = at + this.#rand() * o.delay;
      this.#push({
        at: again,
        order: this.#order++,
        src: src.slice(),
        dst: dst.slice(),
        payload: copy,
      });
    }
  }

  #push(p: InFlight): void {
    // Sorted insert from the end: most packets go last.
    const q = this.#queue;
    let i = q.length;
    while (i > 0 && (q[i - 1]!.at > p.at || (q[i - 1]!.at === p.at && q[i - 1]!.order > p.order))) {
      i--;
    }
    q.splice(i, 0, p);
  }

  /** The next time something happens: a delivery or a transport's timer. */
  nextEvent(): number {
    let t = this.#queue.length > 0 ? this.#queue[0]!.at : Infinity;
    for (const h of this.#hosts) if (h.transport) t = Math.min(t, h.transport.pollAt());
    return t;
  }

  /** Advances to `t`, delivering and ticking everything due on the way. */
  advance(t: number): void {
    for (;;) {
      const next = this.nextEvent();
      if (next > t) break;
      this.#step(Math.max(next, this.now));
    }
    this.now = Math.max(this.now, t);
  }

  #step(at: number): void {
    this.now = at;
    while (this.#queue.length > 0 && this.#queue[0]!.at <= at) {
      const p = this.#queue.shift()!;
      const h = this.#hosts.find((x) => ipEquals(x.addr, p.dst));
      if (!h?.transport) continue;
      this.stats.delivered++;
      h.transport.input(at, p.src, p.dst, p.payload);
    }
    for (const h of this.#hosts) {
      if (h.transport && h.transport.pollAt() <= at) h.transport.tick(at);
    }
  }

  /**
   * Runs until `done()` holds or nothing is left to happen or `limit` (ms of simulated time)
   * passes. Returns whether `done()` held.
   */
  run(done: () => boolean, limit = 3_600_000): boolean {
    const end = this.now + limit;
    while (!done()) {
      const next = this.nextEvent();
      if (next === Infinity || next > end) return done();
      this.#step(Math.max(next, this.now));
    }
    return true;
  }
}
