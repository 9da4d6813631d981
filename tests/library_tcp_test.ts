// The library API between two of our tunnels over 127.0.0.1 UDP: TCP shaped like Deno.Conn.
// No root needed; the kernel-TCP proofs are in interop_kernel_tcp_test.ts.
import assert from "node:assert/strict";
import { randomBytes, readAll, sha256 } from "./_support/bytes.ts";
import { parseConfig } from "../core/config/mod.ts";
import { Tunnel } from "../core/host/tunnel/mod.ts";
import { encodeKey, generatePrivateKey, publicKeyOf } from "../core/wireguard/keys.ts";

async function pair(): Promise<{ a: Tunnel; b: Tunnel; [Symbol.asyncDispose](): Promise<void> }> {
  const ka = generatePrivateKey(), kb = generatePrivateKey();
  const b = await Tunnel.start(
    parseConfig(
      `[Interface]\nPrivateKey = ${encodeKey(kb)}\nAddress = 10.201.0.1/32, fd21::1/128\n\n` +
        `[Peer]\nPublicKey = ${
          encodeKey(publicKeyOf(ka))
        }\nAllowedIPs = 10.201.0.2/32, fd21::2/128\n`,
    ),
    { listenAddress: "127.0.0.1" },
  );
  const a = await Tunnel.start(
    parseConfig(
      `[Interface]\nPrivateKey = ${encodeKey(ka)}\nAddress = 10.201.0.2/32, fd21::2/128\n\n` +
        `[Peer]\nPublicKey = ${encodeKey(publicKeyOf(kb))}\nEndpoint = 127.0.0.1:${b.udp.port}\n` +
        `AllowedIPs = 10.201.0.0/24, fd21::/64\n`,
    ),
    { listenAddress: "127.0.0.1" },
  );
  return {
    a,
    b,
    [Symbol.asyncDispose]: () => {
      a.close();
      b.close();
      // Let the sockets' close callbacks run before the sanitizers look.
      return new Promise((r) => setTimeout(r, 10));
    },
  };
}

Deno.test("connect/listen: echo, addresses, half-close, both families", async () => {
  await using p = await pair();
  for (const [listenOn, dial] of [["10.201.0.1", "10.201.0.1"], ["::", "fd21::1"]] as const) {
    const listener = p.b.listen({ port: 8080, hostname: listenOn });
    const accepted = listener.accept();
    const conn = await p.a.connect({ hostname: dial, port: 8080 });
    const server = await accepted;
    assert.equal(conn.remoteAddr.hostname, dial);
    assert.equal(server.remoteAddr.hostname, conn.localAddr.hostname);
    assert.equal(server.remoteAddr.port, conn.localAddr.port);
    await conn.writeAll(new TextEncoder().encode("hello"));
    await conn.closeWrite();
    // Half-close: the server reads to end of stream, then still answers.
    const got = await readAll(server);
    assert.equal(new TextDecoder().decode(got), "hello");
    await server.writeAll(new TextEncoder().encode("world"));
    server.close();
    assert.equal(new TextDecoder().decode(await readAll(conn)), "world");
    conn.close();
    listener.close();
  }
});

Deno.test("8 MiB each way concurrently arrives intact (SHA-256)", async () => {
  await using p = await pair();
  const listener = p.b.listen({ port: 9000 });
  const up = randomBytes(8 << 20), down = randomBytes(8 << 20);
  const serverSide = (async () => {
    const s = await listener.accept();
    const [received] = await Promise.all([readAll(s), s.writeAll(down).then(() => s.closeWrite())]);
    s.close();
    return received;
  })();
  const c = await p.a.connect({ hostname: "10.201.0.1", port: 9000 });
  const [gotDown] = await Promise.all([readAll(c), c.writeAll(up).then(() => c.closeWrite())]);
  c.close();
  assert.equal(await sha256(await serverSide), await sha256(up));
  assert.equal(await sha256(gotDown), await sha256(down));
  listener.close();
});

Deno.test("a closed port is connection refused", async () => {
  await using p = await pair();
  await assert.rejects(
    p.a.connect({ hostname: "10.201.0.1", port: 1 }),
    (e: Error) => e instanceof Deno.errors.ConnectionRefused,
  );
});

Deno.test("web streams: pipe through a server that uppercases", async () => {
  await using p = await pair();
  const listener = p.b.listen({ port: 7070 });
  const server = (async () => {
    const s = await listener.accept();
    await s.readable
      .pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform: (chunk, ctl) =>
            ctl.enqueue(new TextEncoder().encode(new TextDecoder().decode(chunk).toUpperCase())),
        }),
      )
      .pipeTo(s.writable);
  })();
  const c = await p.a.connect({ hostname: "10.201.0.1", port: 7070 });
  const writer = c.writable.getWriter();
  await writer.write(new TextEncoder().encode("shout "));
  await writer.write(new TextEncoder().encode("this"));
  await writer.close();
  const text = await new Response(c.readable).text();
  assert.equal(text, "SHOUT THIS");
  await server;
  listener.close();
});

Deno.test("ping and status", async () => {
  await using p = await pair();
  const rtt = await p.a.ping("fd21::1");
  assert.ok(rtt >= 0 && rtt < 5000);
  const status = p.a.status();
  assert.equal(status.peers.length, 1);
  assert.ok(status.peers[0]!.latestHandshake > 0);
  assert.ok(status.peers[0]!.rxBytes > 0 && status.peers[0]!.txBytes > 0);
});

Deno.test("closing a tunnel resets its open connections at the peer (none left half-open)", async () => {
  // A process that ends must not leave its peers holding connections: the next process on the
  // same address would meet them, its SYNs answered by challenge ACKs (TcpLayer.abortAll).
  await using p = await pair();
  const listener = p.b.listen({ port: 8090, hostname: "10.201.0.1" });
  const accepted = listener.accept();
  const conn = await p.a.connect({ hostname: "10.201.0.1", port: 8090 });
  const server = await accepted;
  await conn.writeAll(new TextEncoder().encode("hi"));
  const buf = new Uint8Array(8);
  assert.equal(await server.read(buf), 2);
  assert.equal(p.b.tcp.connectionCount, 1);
  p.a.close();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("no reset within 5 s")), 5000);
  });
  await assert.rejects(() => Promise.race([server.read(buf), late]), Deno.errors.ConnectionReset);
  clearTimeout(timer);
  assert.equal(p.b.tcp.connectionCount, 0, "the peer's side is gone at once");
  server.close();
  listener.close();
});
