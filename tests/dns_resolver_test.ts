// The stub resolver (core/host/tunnel/dns.ts) over a fake network and a fake clock: every datagram it
// sends is seen by a scripted server, and time moves only when the test says so.
import assert from "node:assert/strict";
import {
  type DnsClock,
  type DnsDatagramSocket,
  DnsNotFoundError,
  DnsServerFailError,
  type DnsSocketHandlers,
  type DnsStream,
  DnsTimeoutError,
  type DnsTransport,
  Resolver,
  type ResolverOptions,
} from "../core/host/tunnel/dns.ts";
import {
  decodeMessage,
  DnsClass,
  type DnsMessage,
  DnsRcode,
  type DnsRecord,
  DnsType,
  encodeMessage,
} from "../core/wire/dns.ts";
import { formatIP, type IpBytes, parseIP } from "../core/wire/addr.ts";

class FakeClock implements DnsClock {
  #now = 0;
  #timers: { at: number; seq: number; fn: () => void }[] = [];
  #seq = 0;
  now(): number {
    return this.#now;
  }
  after(ms: number, fn: () => void): () => void {
    const t = { at: this.#now + ms, seq: this.#seq++, fn };
    this.#timers.push(t);
    return () => {
      this.#timers = this.#timers.filter((x) => x !== t);
    };
  }
  get pending(): number {
    return this.#timers.length;
  }
  /** Moves time forward by `ms`, firing due timers in order and letting promises settle. */
  async advance(ms: number): Promise<void> {
    const end = this.#now + ms;
    await settle();
    for (;;) {
      this.#timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const t = this.#timers[0];
      if (!t || t.at > end) break;
      this.#timers.shift();
      this.#now = t.at;
      t.fn();
      await settle();
    }
    this.#now = end;
    await settle();
  }
}

/** Lets queued microtasks and one macrotask turn run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((r) => setTimeout(r, 0));
}

interface Sent {
  at: number;
  server: string;
  port: number;
  query: DnsMessage;
  socket: FakeSocket;
}

/** What the scripted server does with a query: datagrams to deliver (after `delayMs`). */
interface Reply {
  data: Uint8Array;
  from?: string;
  fromPort?: number;
  delayMs?: number;
}

type Server = (q: DnsMessage, s: Sent) => Reply[] | Reply | undefined | "unreachable";

class FakeSocket implements DnsDatagramSocket {
  closed = false;
  constructor(
    readonly net: FakeNet,
    readonly handlers: DnsSocketHandlers,
    readonly port: number,
  ) {}
  send(dst: IpBytes, port: number, data: Uint8Array): void {
    if (this.closed) throw new Error("send on a closed socket");
    if (this.net.sendThrows) throw this.net.sendThrows;
    const query = decodeMessage(data);
    if (typeof query === "string") throw new Error(`resolver sent garbage: ${query}`);
    const s: Sent = { at: this.net.clock.now(), server: formatIP(dst), port, query, socket: this };
    this.net.sent.push(s);
    const r = this.net.server(query, s);
    if (r === "unreachable") {
      queueMicrotask(() => this.handlers.onError?.("port-unreachable", dst, port));
      return;
    }
    for (const reply of r === undefined ? [] : Array.isArray(r) ? r : [r]) {
      const deliver = () => {
        if (this.closed) return;
        this.handlers.onDatagram(
          reply.data,
          parseIP(reply.from ?? s.server)!,
          reply.fromPort ?? 53,
        );
      };
      if (reply.delayMs) this.net.clock.after(reply.delayMs, deliver);
      else queueMicrotask(deliver);
    }
  }
  close(): void {
    this.closed = true;
  }
}

class FakeNet implements DnsTransport {
  readonly clock: FakeClock = new FakeClock();
  readonly sent: Sent[] = [];
  readonly sockets: FakeSocket[] = [];
  sendThrows: Error | undefined;
  #port = 40000;
  constructor(public server: Server) {}
  open(handlers: DnsSocketHandlers): DnsDatagramSocket {
    const s = new FakeSocket(this, handlers, this.#port++);
    this.sockets.push(s);
    return s;
  }
  get openSockets(): number {
    return this.sockets.filter((s) => !s.closed).length;
  }
  /** `name/TYPE` of every query sent, in order. */
  get asked(): string[] {
    return this.sent.map((s) => {
      const q = s.query.questions[0]!;
      return `${q.name}/${q.type === DnsType.A ? "A" : q.type === DnsType.AAAA ? "AAAA" : q.type}`;
    });
  }
}

const rec = (name: string, value: string, ttl = 300): DnsRecord => {
  const addr = parseIP(value);
  if (addr) {
    return {
      name,
      type: addr.length === 4 ? DnsType.A : DnsType.AAAA,
      class: DnsClass.IN,
      ttl,
      kind: "address",
      address: addr,
    };
  }
  return { name, type: DnsType.CNAME, class: DnsClass.IN, ttl, kind: "name", target: value };
};

/** A response to `q` with the given rcode and records (the question echoed). */
function reply(
  q: DnsMessage,
  answers: DnsRecord[] = [],
  opts: { rcode?: number; id?: number; tc?: boolean; question?: DnsMessage["questions"] } = {},
): Reply {
  return {
    data: encodeMessage({
      id: opts.id ?? q.id,
      qr: true,
      rd: q.rd,
      ra: true,
      tc: opts.tc,
      rcode: opts.rcode ?? DnsRcode.NOERROR,
      questions: opts.question ?? q.questions,
      answers,
    }),
  };
}

/**
 * A server for a zone: `records` by owner name (lower case); CNAMEs are chased within the zone
 * and put in the answer, as a recursive server does. Unknown names get NXDOMAIN.
 */
function zoneServer(records: Record<string, string[]>, ttl = 300): Server {
  return (q) => {
    const question = q.questions[0]!;
    const answers: DnsRecord[] = [];
    let name = question.name.toLowerCase();
    for (let i = 0; i < 10; i++) {
      const values = records[name];
      if (!values) {
        return reply(q, answers, { rcode: i === 0 ? DnsRcode.NXDOMAIN : DnsRcode.NXDOMAIN });
      }
      const cname = values.find((v) => !parseIP(v));
      if (cname) {
        answers.push(rec(name, cname, ttl));
        name = cname;
        continue;
      }
      for (const v of values) {
        const r = rec(name, v, ttl);
        if (r.type === question.type) answers.push(r);
      }
      return reply(q, answers);
    }
    return reply(q, answers);
  };
}

const S1 = "10.77.0.1", S2 = "10.77.0.53";

function resolver(net: FakeNet, opts: Partial<ResolverOptions> = {}): Resolver {
  return new Resolver(net, { servers: [parseIP(S1)!], clock: net.clock, ...opts });
}

/** The promise's outcome so far without waiting: "pending", or its value / error. */
async function peek<T>(p: Promise<T>): Promise<"pending" | { value: T } | { error: unknown }> {
  let r: "pending" | { value: T } | { error: unknown } = "pending";
  p.then((value) => r = { value }, (error) => r = { error });
  await settle();
  return r;
}

const text = (addrs: IpBytes[]) => addrs.map(formatIP);

Deno.test("resolve: A, AAAA, and both in parallel with IPv4 first", async (t) => {
  const zone = { "svc.wg.test": ["10.77.0.9", "fd77::9", "10.77.0.10"] };
  await t.step("family 4", async () => {
    const net = new FakeNet(zoneServer(zone));
    const r = await resolver(net).resolve("svc.wg.test", { family: 4 });
    assert.deepEqual(text(r.addresses), ["10.77.0.9", "10.77.0.10"]);
    assert.equal(r.ttl, 300);
    assert.equal(r.canonicalName, undefined);
    assert.deepEqual(net.asked, ["svc.wg.test/A"]);
    assert.equal(net.openSockets, 0);
  });
  await t.step("family 6", async () => {
    const net = new FakeNet(zoneServer(zone));
    const r = await resolver(net).resolve("svc.wg.test", { family: 6 });
    assert.deepEqual(text(r.addresses), ["fd77::9"]);
    assert.deepEqual(net.asked, ["svc.wg.test/AAAA"]);
  });
  await t.step("family 0: both queries leave before either answer arrives", async () => {
    const net: FakeNet = new FakeNet((q) => ({
      ...zoneServer(zone)(q, net.sent[0]!) as Reply,
      delayMs: 50,
    }));
    const p = resolver(net).resolve("svc.wg.test");
    await net.clock.advance(0);
    assert.deepEqual(net.asked.sort(), ["svc.wg.test/A", "svc.wg.test/AAAA"]);
    assert.equal(await peek(p), "pending");
    await net.clock.advance(50);
    const r = await p;
    assert.deepEqual(text(r.addresses), ["10.77.0.9", "10.77.0.10", "fd77::9"]);
    // Two sockets, so two source ports (RFC 5452 randomises ports per query).
    assert.notEqual(net.sent[0]!.socket.port, net.sent[1]!.socket.port);
    assert.equal(net.openSockets, 0);
  });
  await t.step("family 0 where only IPv6 exists", async () => {
    const net = new FakeNet(zoneServer({ "six.wg.test": ["fd77::6"] }));
    const r = await resolver(net).resolve("six.wg.test");
    assert.deepEqual(text(r.addresses), ["fd77::6"]);
  });
  await t.step("queries carry RD and EDNS", () => {
    const net = new FakeNet(() => undefined);
    void resolver(net).resolve("x.test", { family: 4 }).catch(() => {});
    const q = net.sent[0]!.query;
    assert.ok(q.rd);
    assert.equal(q.edns?.udpPayloadSize, 1232);
    return net.clock.advance(10_000);
  });
});

Deno.test("resolve: literals and localhost are answered without a query", async () => {
  const net = new FakeNet(() => {
    throw new Error("no query expected");
  });
  const r = resolver(net);
  assert.deepEqual(text((await r.resolve("10.1.2.3")).addresses), ["10.1.2.3"]);
  assert.deepEqual(text((await r.resolve("fd77::2", { family: 6 })).addresses), ["fd77::2"]);
  await assert.rejects(r.resolve("10.1.2.3", { family: 6 }), DnsNotFoundError);
  assert.deepEqual(text((await r.resolve("localhost")).addresses), ["127.0.0.1", "::1"]);
  assert.deepEqual(text((await r.resolve("LocalHost.", { family: 4 })).addresses), ["127.0.0.1"]);
  assert.deepEqual(text((await r.resolve("db.localhost", { family: 6 })).addresses), ["::1"]);
  for (const bad of ["a..b", "", ".", "x".repeat(64) + ".test", "a b.test", "a\\.b", "a\n"]) {
    await assert.rejects(r.resolve(bad), (e) => e instanceof DnsNotFoundError, bad);
  }
  await assert.rejects(r.resolve("a", { family: 5 as 4 }), RangeError);
  assert.equal(net.sent.length, 0);
});

Deno.test("resolve: retries after the timeout, rotating over the servers", async (t) => {
  await t.step("one server that ignores the first two tries", async () => {
    const net: FakeNet = new FakeNet((q) =>
      net.sent.length >= 3 ? reply(q, [rec("a.test", "1.2.3.4")]) : undefined
    );
    const p = resolver(net).resolve("a.test", { family: 4 });
    await net.clock.advance(1999);
    assert.equal(await peek(p), "pending");
    assert.deepEqual(net.sent.map((s) => s.at), [0, 1000]);
    await net.clock.advance(1);
    assert.deepEqual(text((await p).addresses), ["1.2.3.4"]);
    assert.deepEqual(net.sent.map((s) => s.at), [0, 1000, 2000]);
    // Same question and ID each time, from the same socket.
    assert.equal(new Set(net.sent.map((s) => s.query.id)).size, 1);
    assert.equal(new Set(net.sent.map((s) => s.socket)).size, 1);
  });
  await t.step("two servers: the second is asked after the first's timeout", async () => {
    const net = new FakeNet((q, s) =>
      s.server === S2 ? reply(q, [rec("a.test", "1.2.3.4")]) : undefined
    );
    const p = resolver(net, { servers: [parseIP(S1)!, parseIP(S2)!] }).resolve("a.test", {
      family: 4,
    });
    await net.clock.advance(1000);
    assert.deepEqual(text((await p).addresses), ["1.2.3.4"]);
    assert.deepEqual(net.sent.map((s) => [s.server, s.at]), [[S1, 0], [S2, 1000]]);
  });
  await t.step("a late answer from the first server still counts", async () => {
    const net = new FakeNet((q, s) =>
      s.server === S1 ? { ...reply(q, [rec("a.test", "1.2.3.4")]), delayMs: 1500 } : undefined
    );
    const p = resolver(net, { servers: [parseIP(S1)!, parseIP(S2)!] }).resolve("a.test", {
      family: 4,
    });
    await net.clock.advance(1500);
    assert.deepEqual(text((await p).addresses), ["1.2.3.4"]);
    assert.deepEqual(net.sent.map((s) => s.server), [S1, S2]);
  });
  await t.step("nobody answers: ETIMEDOUT after attempts × servers tries", async () => {
    const net = new FakeNet(() => undefined);
    const p = resolver(net, { servers: [parseIP(S1)!, parseIP(S2)!] }).resolve("a.test", {
      family: 4,
    });
    await net.clock.advance(5999);
    assert.equal(await peek(p), "pending");
    await net.clock.advance(1);
    const r = await peek(p);
    assert.ok(typeof r === "object" && "error" in r);
    assert.ok(r.error instanceof DnsTimeoutError);
    assert.equal(r.error.code, "ETIMEDOUT");
    assert.deepEqual(net.sent.map((s) => s.server), [S1, S2, S1, S2, S1, S2]);
    assert.equal(net.openSockets, 0);
    assert.equal(net.clock.pending, 0);
  });
  await t.step("custom timeout and attempts", async () => {
    const net = new FakeNet(() => undefined);
    const p = resolver(net, { timeoutMs: 250, attempts: 2 }).resolve("a.test", { family: 4 });
    const rejected = assert.rejects(p, DnsTimeoutError);
    await net.clock.advance(500);
    await rejected;
    assert.deepEqual(net.sent.map((s) => s.at), [0, 250]);
  });
});

Deno.test("resolve: responses that do not match the query are ignored", async (t) => {
  const cases: [string, (q: DnsMessage) => Reply][] = [
    ["wrong ID", (q) => reply(q, [rec("a.test", "6.6.6.6")], { id: (q.id + 1) & 0xffff })],
    [
      "wrong source address",
      (q) => ({ ...reply(q, [rec("a.test", "6.6.6.6")]), from: "10.77.0.66" }),
    ],
    ["wrong source port", (q) => ({ ...reply(q, [rec("a.test", "6.6.6.6")]), fromPort: 5353 })],
    ["wrong question name", (q) =>
      reply(q, [rec("b.test", "6.6.6.6")], {
        question: [{ name: "b.test", type: DnsType.A, class: DnsClass.IN }],
      })],
    ["wrong question type", (q) =>
      reply(q, [rec("a.test", "fd00::6")], {
        question: [{ name: "a.test", type: DnsType.AAAA, class: DnsClass.IN }],
      })],
    ["a query, not a response", (q) => ({
      data: encodeMessage({
        id: q.id,
        questions: q.questions,
        answers: [rec("a.test", "6.6.6.6")],
      }),
    })],
    ["garbage", () => ({ data: Uint8Array.of(1, 2, 3) })],
  ];
  for (const [what, spoof] of cases) {
    await t.step(what, async () => {
      const net = new FakeNet((
        q,
      ) => [spoof(q), { ...reply(q, [rec("a.test", "1.2.3.4")]), delayMs: 10 }]);
      const r = resolver(net);
      const p = r.resolve("a.test", { family: 4 });
      await net.clock.advance(10);
      assert.deepEqual(text((await p).addresses), ["1.2.3.4"]);
      assert.equal(r.stats.ignored + r.stats.malformed, 1);
      assert.equal(r.stats.responses, 1);
    });
  }
  await t.step("a spoofed answer alone does not end the wait; the retry is answered", async () => {
    const net: FakeNet = new FakeNet((q) =>
      net.sent.length === 1
        ? reply(q, [rec("a.test", "6.6.6.6")], { id: q.id ^ 1 })
        : reply(q, [rec("a.test", "1.2.3.4")])
    );
    const p = resolver(net).resolve("a.test", { family: 4 });
    await net.clock.advance(1000);
    assert.deepEqual(text((await p).addresses), ["1.2.3.4"]);
  });
  await t.step(
    "an answer for a different owner name in a matching response is not taken",
    async () => {
      const net = new FakeNet((q) => reply(q, [rec("evil.test", "6.6.6.6")]));
      const e = await resolver(net).resolve("a.test", { family: 4 }).catch((e) => e);
      assert.ok(e instanceof DnsNotFoundError && e.nodata);
    },
  );
});

Deno.test("resolve: NXDOMAIN, NODATA and server failures", async (t) => {
  await t.step("NXDOMAIN is ENOTFOUND at once, without retries", async () => {
    const net = new FakeNet(zoneServer({}));
    const e = await resolver(net).resolve("nope.test").catch((e) => e);
    assert.ok(e instanceof DnsNotFoundError);
    assert.equal(e.code, "ENOTFOUND");
    assert.equal(e.nodata, false);
    assert.equal(e.hostname, "nope.test");
    assert.equal(net.sent.length, 2); // A and AAAA, once each
    assert.equal(net.clock.now(), 0);
  });
  await t.step("NODATA is ENOTFOUND with nodata", async () => {
    const net = new FakeNet(zoneServer({ "v4.test": ["10.0.0.4"] }));
    const e = await resolver(net).resolve("v4.test", { family: 6 }).catch((e) => e);
    assert.ok(e instanceof DnsNotFoundError && e.nodata);
  });
  await t.step(
    "SERVFAIL from the only server: ESERVFAIL, that server not asked again",
    async () => {
      const net = new FakeNet((q) => reply(q, [], { rcode: DnsRcode.SERVFAIL }));
      const e = await resolver(net).resolve("a.test", { family: 4 }).catch((e) => e);
      assert.ok(e instanceof DnsServerFailError);
      assert.equal(e.code, "ESERVFAIL");
      assert.equal(e.rcode, DnsRcode.SERVFAIL);
      assert.equal(net.sent.length, 1);
      assert.equal(net.clock.now(), 0);
    },
  );
  await t.step("REFUSED from the first server: the second is asked at once", async () => {
    const net = new FakeNet((q, s) =>
      s.server === S1
        ? reply(q, [], { rcode: DnsRcode.REFUSED })
        : reply(q, [rec("a.test", "1.2.3.4")])
    );
    const r = await resolver(net, { servers: [parseIP(S1)!, parseIP(S2)!] }).resolve("a.test", {
      family: 4,
    });
    assert.deepEqual(text(r.addresses), ["1.2.3.4"]);
    assert.deepEqual(net.sent.map((s) => [s.server, s.at]), [[S1, 0], [S2, 0]]);
  });
  await t.step("ICMP port unreachable: the next server at once", async () => {
    const net = new FakeNet((q, s) =>
      s.server === S1 ? "unreachable" : reply(q, [rec("a.test", "1.2.3.4")])
    );
    const r = await resolver(net, { servers: [parseIP(S1)!, parseIP(S2)!] }).resolve("a.test", {
      family: 4,
    });
    assert.deepEqual(text(r.addresses), ["1.2.3.4"]);
    assert.equal(net.clock.now(), 0);
  });
  await t.step("a send that throws fails fast, with the error as cause", async () => {
    const net = new FakeNet(() => undefined);
    net.sendThrows = new Error("Cannot send: no IPv4 address on this stack");
    const e = await resolver(net).resolve("a.test", { family: 4 }).catch((e) => e);
    assert.ok(e instanceof DnsTimeoutError);
    assert.equal(e.cause, net.sendThrows);
    assert.equal(net.openSockets, 0);
  });
  await t.step("FORMERR to an EDNS query: asked again without EDNS", async () => {
    const net = new FakeNet((q) =>
      q.edns
        ? { data: encodeMessage({ id: q.id, qr: true, rcode: DnsRcode.FORMERR }) }
        : reply(q, [rec("a.test", "1.2.3.4")])
    );
    const r = await resolver(net).resolve("a.test", { family: 4 });
    assert.deepEqual(text(r.addresses), ["1.2.3.4"]);
    assert.deepEqual(net.sent.map((s) => s.query.edns !== undefined), [true, false]);
  });
});

Deno.test("resolve: search domains as resolv.conf with ndots:1", async (t) => {
  const search = ["a.test", "b.test"];
  await t.step("a bare name tries the search list first, then itself", async () => {
    const net = new FakeNet(zoneServer({ "svc.b.test": ["10.0.0.2"] }));
    const r = await resolver(net, { search }).resolve("svc", { family: 4 });
    assert.deepEqual(text(r.addresses), ["10.0.0.2"]);
    assert.equal(r.canonicalName, "svc.b.test");
    assert.deepEqual(net.asked, ["svc.a.test/A", "svc.b.test/A"]);
  });
  await t.step("a bare name found only as itself", async () => {
    const net = new FakeNet(zoneServer({ "svc": ["10.0.0.3"] }));
    const r = await resolver(net, { search }).resolve("svc", { family: 4 });
    assert.deepEqual(text(r.addresses), ["10.0.0.3"]);
    assert.deepEqual(net.asked, ["svc.a.test/A", "svc.b.test/A", "svc/A"]);
  });
  await t.step("a dotted name tries itself first, then the search list", async () => {
    const net = new FakeNet(zoneServer({ "x.y.a.test": ["10.0.0.4"] }));
    const r = await resolver(net, { search }).resolve("x.y", { family: 4 });
    assert.deepEqual(text(r.addresses), ["10.0.0.4"]);
    assert.deepEqual(net.asked, ["x.y/A", "x.y.a.test/A"]);
  });
  await t.step("a final dot: only the name itself", async () => {
    const net = new FakeNet(zoneServer({ "svc.a.test": ["10.0.0.2"] }));
    await assert.rejects(
      resolver(net, { search }).resolve("svc.", { family: 4 }),
      DnsNotFoundError,
    );
    assert.deepEqual(net.asked, ["svc/A"]);
  });
  await t.step("ndots:3 sends a two-dot name through the list first", async () => {
    const net = new FakeNet(zoneServer({ "x.y.z": ["10.0.0.5"] }));
    await resolver(net, { search, ndots: 3 }).resolve("x.y.z", { family: 4 });
    assert.deepEqual(net.asked, ["x.y.z.a.test/A", "x.y.z.b.test/A", "x.y.z/A"]);
  });
  await t.step("NODATA on one candidate and NXDOMAIN on the rest: ENOTFOUND (nodata)", async () => {
    const net = new FakeNet(zoneServer({ "svc.a.test": ["fd00::1"] }));
    const e = await resolver(net, { search }).resolve("svc", { family: 4 }).catch((e) => e);
    assert.ok(e instanceof DnsNotFoundError && e.nodata);
    assert.equal(net.sent.length, 3);
  });
  await t.step("SERVFAIL on one candidate does not stop the search", async () => {
    const zone = zoneServer({ "svc.b.test": ["10.0.0.2"] });
    const net = new FakeNet((q, s) =>
      q.questions[0]!.name === "svc.a.test"
        ? reply(q, [], { rcode: DnsRcode.SERVFAIL })
        : zone(q, s)
    );
    const r = await resolver(net, { search }).resolve("svc", { family: 4 });
    assert.deepEqual(text(r.addresses), ["10.0.0.2"]);
  });
  await t.step("a timeout ends the search", async () => {
    const net = new FakeNet(() => undefined);
    const p = resolver(net, { search, attempts: 1 }).resolve("svc", { family: 4 });
    const rejected = assert.rejects(p, DnsTimeoutError);
    await net.clock.advance(1000);
    await rejected;
    assert.deepEqual(net.asked, ["svc.a.test/A"]);
  });
});

Deno.test("resolve: CNAME chains", async (t) => {
  await t.step("a chain in one answer: the target's addresses, the smallest TTL", async () => {
    const net = new FakeNet((q) =>
      reply(q, [
        rec("www.test", "mid.test", 600),
        rec("mid.test", "svc.test", 30),
        rec("svc.test", "10.0.0.7", 120),
        rec("other.test", "6.6.6.6", 120),
      ])
    );
    const r = await resolver(net).resolve("WWW.test", { family: 4 });
    assert.deepEqual(text(r.addresses), ["10.0.0.7"]);
    assert.equal(r.canonicalName, "svc.test");
    assert.equal(r.ttl, 30);
  });
  await t.step("a server that stops at the CNAME: the target is asked", async () => {
    const net = new FakeNet((q) => {
      const name = q.questions[0]!.name;
      return name === "www.test"
        ? reply(q, [rec("www.test", "far.example", 60)])
        : name === "far.example"
        ? reply(q, [rec("far.example", "192.0.2.8", 90)])
        : reply(q, [], { rcode: DnsRcode.NXDOMAIN });
    });
    const r = await resolver(net).resolve("www.test", { family: 4 });
    assert.deepEqual(text(r.addresses), ["192.0.2.8"]);
    assert.equal(r.canonicalName, "far.example");
    assert.equal(r.ttl, 60);
    assert.deepEqual(net.asked, ["www.test/A", "far.example/A"]);
  });
  await t.step("a CNAME loop is a server failure", async () => {
    const net = new FakeNet((q) => reply(q, [rec("a.test", "b.test"), rec("b.test", "a.test")]));
    await assert.rejects(resolver(net).resolve("a.test", { family: 4 }), DnsServerFailError);
  });
  await t.step("NXDOMAIN at the end of a chain", async () => {
    const net = new FakeNet((q) =>
      reply(q, [rec("a.test", "gone.test")], { rcode: DnsRcode.NXDOMAIN })
    );
    await assert.rejects(resolver(net).resolve("a.test", { family: 4 }), DnsNotFoundError);
  });
});

Deno.test("resolve: the positive cache honours TTLs on the injected clock", async (t) => {
  await t.step("hit within the TTL, counting down; miss after it", async () => {
    const net = new FakeNet(zoneServer({ "a.test": ["10.0.0.1"] }, 10));
    const r = resolver(net);
    assert.equal((await r.resolve("a.test", { family: 4 })).ttl, 10);
    await net.clock.advance(4000);
    const again = await r.resolve("A.TEST", { family: 4 });
    assert.deepEqual(text(again.addresses), ["10.0.0.1"]);
    assert.equal(again.ttl, 6);
    assert.equal(net.sent.length, 1);
    assert.equal(r.stats.cacheHits, 1);
    // Addresses handed out are copies: changing them does not change the cache.
    again.addresses[0]![0] = 99;
    assert.deepEqual(text((await r.resolve("a.test", { family: 4 })).addresses), ["10.0.0.1"]);
    await net.clock.advance(6000);
    await r.resolve("a.test", { family: 4 });
    assert.equal(net.sent.length, 2);
  });
  await t.step("TTL 0 is not cached; failures are not cached", async () => {
    const net = new FakeNet(zoneServer({ "a.test": ["10.0.0.1"] }, 0));
    const r = resolver(net);
    await r.resolve("a.test", { family: 4 });
    await r.resolve("a.test", { family: 4 });
    await assert.rejects(r.resolve("b.test", { family: 4 }));
    await assert.rejects(r.resolve("b.test", { family: 4 }));
    assert.equal(net.sent.length, 4);
  });
  await t.step("a chain's TTL: the CNAME's shorter TTL bounds the entry", async () => {
    const net = new FakeNet((q) =>
      reply(q, [rec("w.test", "s.test", 5), rec("s.test", "10.0.0.9", 500)])
    );
    const r = resolver(net);
    await r.resolve("w.test", { family: 4 });
    await net.clock.advance(5000);
    await r.resolve("w.test", { family: 4 });
    assert.equal(net.sent.length, 2);
  });
  await t.step("bounded: the oldest entry goes first; cache: false turns it off", async () => {
    const net = new FakeNet(
      zoneServer({ "a.test": ["1.1.1.1"], "b.test": ["2.2.2.2"], "c.test": ["3.3.3.3"] }),
    );
    const r = resolver(net, { cache: { maxEntries: 2 } });
    for (const n of ["a", "b", "c", "c", "b", "a"]) await r.resolve(`${n}.test`, { family: 4 });
    assert.deepEqual(net.asked, ["a.test/A", "b.test/A", "c.test/A", "a.test/A"]);
    const off = new FakeNet(zoneServer({ "a.test": ["1.1.1.1"] }));
    const r2 = resolver(off, { cache: false });
    await r2.resolve("a.test", { family: 4 });
    await r2.resolve("a.test", { family: 4 });
    assert.equal(off.sent.length, 2);
  });
});

Deno.test("resolve: truncated answers", async (t) => {
  const big = Array.from({ length: 40 }, (_, i) => rec("many.test", `10.0.1.${i}`));
  await t.step("without tcpConnect the records that fit are used", async () => {
    const net = new FakeNet((q) => reply(q, big.slice(0, 3), { tc: true }));
    const r = resolver(net);
    const got = await r.resolve("many.test", { family: 4 });
    assert.equal(got.addresses.length, 3);
    assert.equal(r.stats.truncated, 1);
  });
  await t.step("with tcpConnect the query is asked again over TCP", async () => {
    const net = new FakeNet((q) => reply(q, big.slice(0, 3), { tc: true }));
    const connects: string[] = [];
    const r = resolver(net, {
      tcpConnect: (server, port) => {
        connects.push(`${formatIP(server)}:${port}`);
        let response: Uint8Array | undefined;
        let sent = false;
        const stream: DnsStream = {
          write(data) {
            const len = (data[0]! << 8) | data[1]!;
            assert.equal(len, data.length - 2);
            const q = decodeMessage(data.subarray(2));
            if (typeof q === "string") throw new Error(q);
            const body = reply(q, big).data;
            response = new Uint8Array(2 + body.length);
            response[0] = body.length >> 8;
            response[1] = body.length & 0xff;
            response.set(body, 2);
            return Promise.resolve();
          },
          read() {
            // Delivered in two pieces, to exercise reassembly of the length-prefixed message.
            if (!response) return Promise.resolve(null);
            if (!sent) {
              sent = true;
              return Promise.resolve(response.subarray(0, 7));
            }
            const rest = response.subarray(7);
            response = undefined;
            return Promise.resolve(rest);
          },
          close() {},
        };
        return Promise.resolve(stream);
      },
    });
    const got = await r.resolve("many.test", { family: 4 });
    assert.equal(got.addresses.length, 40);
    assert.deepEqual(connects, [`${S1}:53`]);
    assert.equal(r.stats.tcpQueries, 1);
  });
});

Deno.test("forTunnel: takes servers and search domains from the config", () => {
  const config = {
    interface: {
      privateKey: new Uint8Array(32),
      addresses: [],
      dns: { servers: [parseIP("10.77.0.1")!, parseIP("fd77::1")!], search: ["wg.test"] },
    },
    peers: [],
    warnings: [],
  };
  const fake = { config, stack: { udp: {} as never }, poke() {} };
  const r = Resolver.forTunnel(fake);
  assert.deepEqual(r.servers.map(formatIP), ["10.77.0.1", "fd77::1"]);
  assert.throws(
    () =>
      Resolver.forTunnel({
        ...fake,
        config: { ...config, interface: { ...config.interface, dns: { servers: [], search: [] } } },
      }),
    RangeError,
  );
});
