// The SOCKS5 proxy in process, between two of our tunnels on loopback (no root needed), spoken to
// byte by byte: method selection, RFC 1929, each reply code we send, UDP ASSOCIATE's header and
// source checks, and the request timeout.
import assert from "node:assert/strict";
import { readAll, readExact } from "./_support/bytes.ts";
import dgram from "node:dgram";
import { ProxyServer } from "../core/host/proxy/mod.ts";
import { Credentials } from "../core/host/proxy/io.ts";
import { Atyp, decodeAddr, encodeAddr, Rep } from "../core/host/proxy/socks5_wire.ts";
import { formatIP, parseIP } from "../core/wire/addr.ts";
import { FAR4, FAR6, NEAR4, withLoopbackPair, writeAll } from "./_support/forward_pair.ts";
import type { Tunnel } from "../core/host/tunnel/mod.ts";

const enc = new TextEncoder(), dec = new TextDecoder();

/** An echo service on the far tunnel's TCP port 7 (until the returned function is called). */
function tcpEcho(far: Tunnel): () => void {
  const l = far.listen({ port: 7 });
  void (async () => {
    for await (const c of l) void c.readable.pipeTo(c.writable).catch(() => {});
  })();
  return () => l.close();
}

async function withProxy(
  fn: (port: number, pair: { near: Tunnel; far: Tunnel }) => Promise<void>,
  opts: { credentials?: Credentials; requestTimeoutMs?: number } = {},
): Promise<void> {
  await withLoopbackPair(async (pair) => {
    const stopEcho = tcpEcho(pair.far);
    const proxy = ProxyServer.start(pair.near, {
      socks5: [{ hostname: "127.0.0.1", port: 0 }],
      ...opts,
    });
    try {
      await fn(proxy.listening[0]!.port, pair);
    } finally {
      await proxy.close();
      stopEcho();
    }
  });
}

/** Greets with no-auth and sends a request; returns the connection and the reply. */
async function request(
  port: number,
  cmd: number,
  addr: Uint8Array,
): Promise<{ conn: Deno.TcpConn; rep: number; bound?: { host: string; port: number } }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(conn, new Uint8Array([5, 1, 0]));
  assert.deepEqual(await readExact(conn, 2), new Uint8Array([5, 0]));
  await writeAll(conn, new Uint8Array([5, cmd, 0, ...addr]));
  const head = await readExact(conn, 4);
  const rest = await readExact(conn, head[3] === Atyp.IPv6 ? 18 : 6);
  const parsed = decodeAddr(new Uint8Array([...head.subarray(3), ...rest]), 0)!;
  const host = parsed.addr.host;
  return {
    conn,
    rep: head[1]!,
    bound: {
      host: typeof host === "string" ? host : formatIP(host),
      port: parsed.addr.port,
    },
  };
}

const ip = (s: string, port: number) => encodeAddr({ host: parseIP(s)!, port });

Deno.test("SOCKS5 CONNECT: IPv4 and IPv6, BND is our tunnel address, bytes both ways", async () => {
  await withProxy(async (port) => {
    for (const [dst, ours] of [[FAR4, NEAR4], [FAR6, "fd09::2"]] as const) {
      const { conn, rep, bound } = await request(port, 1, ip(dst, 7));
      assert.equal(rep, Rep.Succeeded);
      assert.equal(bound!.host, ours);
      assert.ok(bound!.port > 0);
      const data = crypto.getRandomValues(new Uint8Array(60_000));
      await writeAll(conn, data);
      await conn.closeWrite();
      assert.deepEqual(await readAll(conn), data);
      conn.close();
    }
  });
});

Deno.test("SOCKS5 replies: refused 05, not routed 03, no DNS 04, BIND 07, bad ATYP 08", async () => {
  await withProxy(async (port) => {
    const cases: [number, Uint8Array, number][] = [
      [1, ip(FAR4, 4999), Rep.ConnectionRefused],
      [1, ip("10.10.0.1", 80), Rep.NetworkUnreachable],
      [1, encodeAddr({ host: "svc.wg.test", port: 80 }), Rep.HostUnreachable],
      [2, ip(FAR4, 7), Rep.CommandNotSupported],
    ];
    for (const [cmd, addr, want] of cases) {
      const { conn, rep } = await request(port, cmd, addr);
      assert.equal(rep, want);
      // The connection ends after a failure reply.
      assert.equal((await readAll(conn)).length, 0);
      conn.close();
    }
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(conn, new Uint8Array([5, 1, 0]));
    await readExact(conn, 2);
    await writeAll(conn, new Uint8Array([5, 1, 0, 9, 1, 2, 3, 4, 0, 80]));
    assert.equal((await readExact(conn, 2))[1], Rep.AddressTypeNotSupported);
    conn.close();
    // Not SOCKS5 at all: closed without an answer.
    const v4 = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(v4, new Uint8Array([4, 1, 0, 80, 10, 9, 0, 1, 0]));
    assert.equal((await readAll(v4)).length, 0);
    v4.close();
  });
});

Deno.test("SOCKS5 with credentials (RFC 1929)", async () => {
  const credentials = await Credentials.parse("alice:s3cret\nbob:pa:ss\n", "<test>");
  await withProxy(async (port) => {
    const auth = async (methods: number[], user?: string, pass?: string) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await writeAll(conn, new Uint8Array([5, methods.length, ...methods]));
      const [, method] = await readExact(conn, 2);
      if (method !== 2 || user === undefined) return { conn, method, status: undefined };
      const u = enc.encode(user), p = enc.encode(pass!);
      await writeAll(conn, new Uint8Array([1, u.length, ...u, p.length, ...p]));
      const [, status] = await readExact(conn, 2);
      return { conn, method, status };
    };
    // A client that offers no username/password gets "no acceptable methods".
    const none = await auth([0]);
    assert.equal(none.method, 0xff);
    assert.equal((await readAll(none.conn)).length, 0);
    none.conn.close();
    for (const [user, pass] of [["alice", "wrong"], ["carol", "s3cret"], ["alice", "s3cre"]]) {
      const r = await auth([0, 2], user, pass);
      assert.equal(r.method, 2);
      assert.notEqual(r.status, 0, `${user}:${pass}`);
      // RFC 1929: the server closes after a failure.
      assert.equal((await readAll(r.conn)).length, 0);
      r.conn.close();
    }
    // A password with a colon in it.
    const ok = await auth([2], "bob", "pa:ss");
    assert.equal(ok.status, 0);
    await writeAll(ok.conn, new Uint8Array([5, 1, 0, ...ip(FAR4, 7)]));
    assert.equal((await readExact(ok.conn, 10))[1], Rep.Succeeded);
    await writeAll(ok.conn, enc.encode("authenticated"));
    await ok.conn.closeWrite();
    assert.equal(dec.decode(await readAll(ok.conn)), "authenticated");
    ok.conn.close();
  }, { credentials });
});

Deno.test("SOCKS5 UDP ASSOCIATE: header both ways, other senders and fragments dropped", async () => {
  await withProxy(async (port, { far }) => {
    const echo = far.stack.udp.bind({ port: 7 });
    echo.onDatagram = (data, src, srcPort) => {
      echo.send(src, srcPort, data.slice());
      far.poke();
    };
    const client = dgram.createSocket("udp4");
    const stranger = dgram.createSocket("udp4");
    await Promise.all(
      [client, stranger].map((s) => new Promise<void>((r) => s.bind(0, "127.0.0.1", r))),
    );
    const { conn, rep, bound } = await request(port, 3, ip("0.0.0.0", 0));
    try {
      assert.equal(rep, Rep.Succeeded);
      assert.equal(bound!.host, "127.0.0.1");
      const replies: Uint8Array[] = [];
      client.on("message", (m: Uint8Array) => replies.push(new Uint8Array(m)));
      stranger.on("message", (m: Uint8Array) => replies.push(new Uint8Array(m)));
      const send = (s: dgram.Socket, frag: number, payload: string) =>
        s.send(
          new Uint8Array([0, 0, frag, ...ip(FAR4, 7), ...enc.encode(payload)]),
          bound!.port,
          "127.0.0.1",
        );
      send(client, 0, "first");
      const deadline = Date.now() + 5000;
      while (replies.length === 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(replies.length, 1);
      const got = replies[0]!;
      assert.deepEqual(got.subarray(0, 3), new Uint8Array([0, 0, 0]));
      const from = decodeAddr(got, 3)!;
      assert.deepEqual(from.addr, { host: parseIP(FAR4), port: 7 });
      assert.equal(dec.decode(got.subarray(from.end)), "first");
      // The client's port is now fixed; another sender, and a fragment, are not relayed.
      send(stranger, 0, "stranger");
      send(client, 1, "fragment");
      send(client, 0, "last");
      while (replies.length < 2 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10));
      }
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(replies.slice(1).map((r) => dec.decode(r.subarray(10))), ["last"]);
    } finally {
      conn.close();
      client.close();
      stranger.close();
      echo.close();
    }
  });
});

Deno.test("a client that never completes its request is disconnected", async () => {
  await withProxy(async (port) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(conn, new Uint8Array([5]));
    const start = performance.now();
    assert.equal((await readAll(conn)).length, 0);
    assert.ok(performance.now() - start < 5000);
    conn.close();
  }, { requestTimeoutMs: 300 });
});
