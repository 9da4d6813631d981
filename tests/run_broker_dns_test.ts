/**
 * The broker's service ops for `wrapguard run` (HELLO, RESOLVE, QUERY), spoken byte for byte from
 * TypeScript against a real Broker on a real Tunnel whose peer (a second Tunnel over 127.0.0.1)
 * runs a small DNS server on its stack; and the records checked against the C side
 * (preload/protocol.c) through its batch binary. No root, no traffic beyond 127.0.0.1.
 */
import assert from "node:assert/strict";
import { parseConfig } from "../core/config/mod.ts";
import { Broker } from "../core/host/broker/mod.ts";
import {
  decodeReply,
  encodeRequest,
  Family,
  MAX_NAME,
  Op,
  Proto,
  ProtocolError,
  REPLY_LEN,
  Status,
} from "../core/host/broker/protocol.ts";
import { encodeResolveBody } from "../core/host/broker/dns.ts";
import { Resolver } from "../core/host/tunnel/dns.ts";
import { Tunnel } from "../core/host/tunnel/mod.ts";
import { formatIP, parseIP } from "../core/wire/addr.ts";
import { decodeMessage, DnsType, encodeMessage, encodeQuery } from "../core/wire/dns.ts";
import { encodeKey, generatePrivateKey, publicKeyOf } from "../core/wireguard/keys.ts";
import { preloadLibrary } from "./_support/fake_broker.ts";

await preloadLibrary();
const testBinary = new URL("../preload/build/protocol_test", import.meta.url).pathname;

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function unhex(s: string): Uint8Array {
  return Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));
}

async function batch(lines: string[]): Promise<string[]> {
  const out = await new Deno.Command(testBinary, {
    args: ["batch"],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const w = out.stdin.getWriter();
  await w.write(new TextEncoder().encode(lines.map((l) => l + "\n").join("")));
  await w.close();
  const r = await out.output();
  const answers = new TextDecoder().decode(r.stdout).split("\n");
  answers.pop();
  assert.equal(answers.length, lines.length);
  return answers;
}

const ZERO = { addr: new Uint8Array(0), port: 0 };

interface World {
  a: Tunnel;
  b: Tunnel;
  broker: Broker;
  secret: Uint8Array;
  /** Names the DNS server on B was asked, in order. */
  asked: string[];
  close(): Promise<void>;
}

/** A answers A/AAAA for svc.t.test, A only for v4.t.test; everything else NXDOMAIN. */
async function world(withDns = true): Promise<World> {
  const ka = generatePrivateKey(), kb = generatePrivateKey();
  const b = await Tunnel.start(
    parseConfig(
      `[Interface]\nPrivateKey = ${encodeKey(kb)}\nAddress = 10.203.0.1/32, fd23::1/128\n\n` +
        `[Peer]\nPublicKey = ${encodeKey(publicKeyOf(ka))}\nAllowedIPs = 10.203.0.2/32\n`,
    ),
    { listenAddress: "127.0.0.1" },
  );
  const a = await Tunnel.start(
    parseConfig(
      `[Interface]\nPrivateKey = ${encodeKey(ka)}\nAddress = 10.203.0.2/32\n` +
        `${withDns ? "DNS = 10.203.0.1, t.test\n" : ""}\n` +
        `[Peer]\nPublicKey = ${encodeKey(publicKeyOf(kb))}\nEndpoint = 127.0.0.1:${b.udp.port}\n` +
        `AllowedIPs = 10.203.0.0/24, fd23::/64\n`,
    ),
    { listenAddress: "127.0.0.1" },
  );
  const asked: string[] = [];
  const dns = b.stack.udp.bind({ port: 53 });
  dns.onDatagram = (data, src, port) => {
    const q = decodeMessage(data);
    if (typeof q === "string") return;
    const question = q.questions[0]!;
    asked.push(question.name);
    const name = question.name.toLowerCase().replace(/\.$/, "");
    const known = name === "svc.t.test" || name === "v4.t.test";
    const answers = [];
    if (known && question.type === DnsType.A) {
      answers.push({
        ...question,
        ttl: 60,
        kind: "address" as const,
        address: parseIP("10.203.0.9")!,
      });
    }
    if (name === "svc.t.test" && question.type === DnsType.AAAA) {
      answers.push({
        ...question,
        ttl: 60,
        kind: "address" as const,
        address: parseIP("fd23::9")!,
      });
    }
    const reply = encodeMessage({
      id: q.id,
      qr: true,
      rd: q.rd,
      ra: true,
      aa: true,
      rcode: known ? 0 : 3,
      questions: [question],
      answers,
    });
    dns.send(src, port, reply);
    b.poke();
  };
  const broker = await Broker.start(a, {
    resolver: withDns ? Resolver.forTunnel(a, { timeoutMs: 500, attempts: 2 }) : undefined,
  });
  const secret = unhex(broker.env().WRAPGUARD_SECRET!);
  return {
    a,
    b,
    broker,
    secret,
    asked,
    async close() {
      await broker.close();
      dns.close();
      a.close();
      b.close();
      await new Promise((r) => setTimeout(r, 10));
    },
  };
}

/** One service request on a fresh connection: the reply and its body. */
async function ask(
  w: World,
  op: number,
  family: number,
  body: Uint8Array,
  arg = body.length,
  secret = w.secret,
): Promise<{ status: number; body: Uint8Array }> {
  const conn = await Deno.connect({ transport: "unix", path: w.broker.socketPath });
  try {
    const req = encodeRequest({
      secret,
      op: op as Op,
      proto: Proto.None,
      family: family as Family,
      flags: 0,
      padding: 0,
      arg,
      local: ZERO,
      remote: ZERO,
    });
    const out = new Uint8Array(req.length + body.length);
    out.set(req);
    out.set(body, req.length);
    await conn.write(out);
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(70000);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
    const all = new Uint8Array(chunks.reduce((s, c) => s + c.length, 0));
    let off = 0;
    for (const c of chunks) {
      all.set(c, off);
      off += c.length;
    }
    const rep = decodeReply(all.subarray(0, REPLY_LEN));
    const rest = all.subarray(REPLY_LEN);
    if (rep.status === Status.Ok) assert.equal(rest.length, rep.arg, "body as announced");
    return { status: rep.status, body: rest.slice() };
  } finally {
    try {
      conn.close();
    } catch {
      // closed by the broker
    }
  }
}

const text = (s: string) => new TextEncoder().encode(s);

Deno.test("broker service ops: HELLO, RESOLVE and QUERY through the tunnel", async (t) => {
  const w = await world();
  try {
    await t.step("the environment names the tunnel's DNS for the interposer", () => {
      const env = w.broker.env();
      assert.equal(env.WRAPGUARD_DNS, "10.203.0.1");
      assert.equal(env.WRAPGUARD_DNS_SEARCH, "t.test");
    });
    await t.step("HELLO is recorded per pid; waitForHello times out for others", async () => {
      assert.equal(w.broker.helloFrom(4242), false);
      const waiting = w.broker.waitForHello(4242, 5000);
      const r = await ask(w, Op.Hello, Family.None, new Uint8Array(0), 4242);
      assert.equal(r.status, Status.Ok);
      assert.equal(await waiting, true);
      assert.equal(w.broker.helloFrom(4242), true);
      assert.equal(await w.broker.waitForHello(4343, 30), false);
    });
    await t.step(
      "RESOLVE answers with the canonical name and addresses, read by the C decoder",
      async () => {
        const both = await ask(w, Op.Resolve, Family.None, text("svc.t.test"));
        assert.equal(both.status, Status.Ok);
        const v4 = `0acb0009${"0".repeat(24)}`; // 10.203.0.9 in a 16-byte field
        const [c] = await batch([`dres ${hex(both.body)}`]);
        assert.equal(c, `ok svc.t.test 2 4:${v4} 6:fd230000000000000000000000000009`);
        // The search domain: "svc" is svc.t.test.
        const short = await ask(w, Op.Resolve, Family.V4, text("svc"));
        assert.equal(short.status, Status.Ok);
        assert.equal((await batch([`dres ${hex(short.body)}`]))[0], `ok svc.t.test 1 4:${v4}`);
        assert.ok(w.asked.some((n) => /^svc\.t\.test\.?$/i.test(n)));
      },
    );
    await t.step("RESOLVE failures: NXDOMAIN, no address of the family", async () => {
      assert.equal(
        (await ask(w, Op.Resolve, Family.V4, text("nope.t.test"))).status,
        Status.NotFound,
      );
      assert.equal((await ask(w, Op.Resolve, Family.V6, text("v4.t.test"))).status, Status.NoData);
    });
    await t.step("QUERY relays a DNS message and its response", async () => {
      const { id, message } = encodeQuery("svc.t.test", DnsType.AAAA);
      const r = await ask(w, Op.Query, Family.None, message);
      assert.equal(r.status, Status.Ok);
      const resp = decodeMessage(r.body);
      assert.ok(typeof resp !== "string");
      assert.equal(resp.id, id);
      assert.equal(resp.answers.length, 1);
      const ans = resp.answers[0]!;
      assert.ok(ans.kind === "address" && formatIP(ans.address) === "fd23::9");
      const nx = await ask(w, Op.Query, Family.None, encodeQuery("nope.t.test", DnsType.A).message);
      assert.equal(nx.status, Status.Ok);
      assert.equal((decodeMessage(nx.body) as { rcode: number }).rcode, 3);
    });
    await t.step("a wrong secret is refused before anything is asked", async () => {
      const before = w.asked.length;
      const bad = w.secret.slice();
      bad[0]! ^= 1;
      // The name is announced but never sent: the broker answers on the request alone.
      const r = await ask(w, Op.Resolve, Family.V4, new Uint8Array(0), 10, bad);
      assert.equal(r.status, Status.Auth);
      assert.equal(w.asked.length, before);
    });
  } finally {
    await w.close();
  }
});

Deno.test("broker service ops: without DNS = lookups get NODNS and the environment names none", async () => {
  const w = await world(false);
  try {
    assert.equal(w.broker.env().WRAPGUARD_DNS, undefined);
    assert.equal((await ask(w, Op.Resolve, Family.V4, text("svc.t.test"))).status, Status.NoDns);
    const q = encodeQuery("svc.t.test", DnsType.A).message;
    assert.equal((await ask(w, Op.Query, Family.None, q)).status, Status.NoDns);
    assert.deepEqual(w.asked, []);
  } finally {
    await w.close();
  }
});

Deno.test("broker service ops: requests and RESOLVE bodies agree between C and TypeScript", async () => {
  const secret = crypto.getRandomValues(new Uint8Array(32));
  const zero16 = "0".repeat(32);
  const cases: { op: number; family: number; arg: number; proto?: number; flags?: number }[] = [
    { op: Op.Hello, family: Family.None, arg: 31337 },
    { op: Op.Resolve, family: Family.None, arg: 1 },
    { op: Op.Resolve, family: Family.V4, arg: MAX_NAME },
    { op: Op.Resolve, family: Family.V6, arg: 40 },
    { op: Op.Query, family: Family.None, arg: 12 },
    { op: Op.Query, family: Family.None, arg: 65535 },
    // Refused by both, for the same reason.
    { op: Op.Resolve, family: Family.V4, arg: 0 },
    { op: Op.Resolve, family: Family.V4, arg: MAX_NAME + 1 },
    { op: Op.Query, family: Family.None, arg: 11 },
    { op: Op.Query, family: Family.V4, arg: 40 },
    { op: Op.Hello, family: Family.V6, arg: 1 },
    { op: Op.Hello, family: Family.None, arg: 1, proto: Proto.Tcp },
    { op: Op.Resolve, family: Family.None, arg: 5, flags: 1 },
  ];
  const ts = cases.map((c) => {
    try {
      const b = encodeRequest({
        secret,
        op: c.op as Op,
        proto: (c.proto ?? Proto.None) as Proto,
        family: c.family as Family,
        flags: c.flags ?? 0,
        padding: 0,
        arg: c.arg,
        local: ZERO,
        remote: ZERO,
      });
      return `ok ${hex(b)}`;
    } catch (e) {
      if (e instanceof ProtocolError) return `err ${e.code}`;
      throw e;
    }
  });
  const c = await batch(
    cases.map((k) =>
      `ereq ${k.op} ${k.proto ?? 0} ${k.family} ${
        k.flags ?? 0
      } 0 ${k.arg} 0 0 ${zero16} ${zero16} ${hex(secret)}`
    ),
  );
  assert.deepEqual(c, ts);
  assert.deepEqual(ts.slice(6), [
    "err length",
    "err length",
    "err length",
    "err family",
    "err family",
    "err proto",
    "err flags",
  ]);
  // What the TS encoder writes for RESOLVE replies, the C decoder reads back.
  const body = encodeResolveBody("a.example", [parseIP("192.0.2.1")!, parseIP("2001:db8::1")!]);
  assert.deepEqual(await batch([`dres ${hex(body)}`, `dres ${hex(encodeResolveBody("", []))}`]), [
    `ok a.example 2 4:c0000201${"0".repeat(24)} 6:20010db8000000000000000000000001`,
    "ok - 0",
  ]);
  assert.throws(() => encodeResolveBody("x".repeat(MAX_NAME + 1), []), RangeError);
});
