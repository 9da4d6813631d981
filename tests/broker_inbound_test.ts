/**
 * Inbound connections to a wrapped program: it binds and listens (on its tunnel address, or on the
 * wildcard), and a second tunnel connects to it through WireGuard over 127.0.0.1, the userspace
 * stack and the broker. No root needed.
 *
 *   Tunnel B (10.203.0.1, library connect) ═ WireGuard ═ Tunnel A (10.203.0.2) ─ Broker
 *        ─ Unix socket ─ interposer ─ python3 / socat listening
 */
import assert from "node:assert/strict";
import { parseConfig } from "../core/config/mod.ts";
import { Broker } from "../core/host/broker/mod.ts";
import type { TunnelConn } from "../core/host/tunnel/tcp.ts";
import { Tunnel } from "../core/host/tunnel/mod.ts";
import { encodeKey, generatePrivateKey, publicKeyOf } from "../core/wireguard/keys.ts";
import { preloadLibrary } from "./_support/fake_broker.ts";
import { spawn, type Spawned, which } from "./_support/proc.ts";

const lib = await preloadLibrary();

interface Setup {
  a: Tunnel;
  b: Tunnel;
  broker: Broker;
  procs: Spawned[];
  [Symbol.asyncDispose](): Promise<void>;
}

async function setup(): Promise<Setup> {
  const ka = generatePrivateKey(), kb = generatePrivateKey();
  const b = await Tunnel.start(
    parseConfig(
      `[Interface]\nPrivateKey = ${encodeKey(kb)}\nAddress = 10.203.0.1/32, fd23::1/128\n\n` +
        `[Peer]\nPublicKey = ${
          encodeKey(publicKeyOf(ka))
        }\nAllowedIPs = 10.203.0.2/32, fd23::2/128\n`,
    ),
    { listenAddress: "127.0.0.1" },
  );
  const a = await Tunnel.start(
    parseConfig(
      `[Interface]\nPrivateKey = ${encodeKey(ka)}\nAddress = 10.203.0.2/32, fd23::2/128\n\n` +
        `[Peer]\nPublicKey = ${encodeKey(publicKeyOf(kb))}\nEndpoint = 127.0.0.1:${b.udp.port}\n` +
        `AllowedIPs = 10.203.0.0/24, fd23::/64\n`,
    ),
    { listenAddress: "127.0.0.1" },
  );
  // B only learns where A is from A's first packet: shake hands from A's side.
  await a.ping("10.203.0.1");
  const broker = await Broker.start(a);
  const procs: Spawned[] = [];
  return {
    a,
    b,
    broker,
    procs,
    async [Symbol.asyncDispose]() {
      for (const p of procs) await p.kill();
      await broker.close();
      a.close();
      b.close();
      await new Promise((r) => setTimeout(r, 20));
    },
  };
}

/** Starts a wrapped program and waits for it to print `ready`. */
async function start(s: Setup, argv: string[], ready: RegExp): Promise<Spawned> {
  const p = spawn(null, argv, {
    env: { ...s.broker.env(), LD_PRELOAD: lib },
    stdin: "piped",
  });
  s.procs.push(p);
  await p.waitForOutput(ready, { timeoutMs: 10_000 });
  return p;
}

async function exchange(conn: TunnelConn, text: string): Promise<string> {
  await conn.writeAll(new TextEncoder().encode(text));
  await conn.closeWrite();
  const chunks: Uint8Array[] = [];
  for (;;) {
    const c = await conn.readChunk();
    if (c === null) break;
    chunks.push(c);
  }
  conn.close();
  return new TextDecoder().decode(
    chunks.reduce((a, c) => {
      const n = new Uint8Array(a.length + c.length);
      n.set(a);
      n.set(c, a.length);
      return n;
    }, new Uint8Array(0)),
  );
}

const echoServer = `
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(family)
s.bind((host, port))
s.listen(8)
print("ready", s.getsockname()[1], flush=True)
for i in range(int(sys.argv[3])):
    c, peer = s.accept()
    print("peer", peer[0], peer[1], "local", c.getsockname()[0], c.getsockname()[1], flush=True)
    data = b""
    while True:
        b = c.recv(65536)
        if not b:
            break
        data += b
    c.sendall(data.upper())
    c.close()
print("done", flush=True)
`;

Deno.test("broker inbound: a program listening on its tunnel address accepts tunnel peers", async () => {
  await using s = await setup();
  const p = await start(
    s,
    ["python3", "-c", echoServer, "10.203.0.2", "8000", "2"],
    /ready 8000/,
  );
  for (const word of ["first", "second"]) {
    const conn = await s.b.connect({ hostname: "10.203.0.2", port: 8000 });
    assert.equal(await exchange(conn, word), word.toUpperCase());
    const line = p.stdoutText().split("\n").filter((l) => l.startsWith("peer")).pop()!;
    // accept() and getsockname report tunnel addresses: the peer as it dialled from.
    assert.equal(line, `peer 10.203.0.1 ${conn.localAddr.port} local 10.203.0.2 8000`);
  }
  const r = await p.wait(10_000);
  assert.equal(r.code, 0, r.stderr);
});

Deno.test("broker inbound: bind conflicts, port 0, and asyncio's non-blocking accept", async () => {
  await using s = await setup();
  const p = await start(
    s,
    [
      "python3",
      "-c",
      `
import socket, errno, asyncio
a = socket.socket()
a.bind(("10.203.0.2", 0))
port = a.getsockname()[1]
a.listen()
b = socket.socket()
try:
    b.bind(("10.203.0.2", port))
    b.listen()
    print("second listener?!")
except OSError as e:
    print("conflict", errno.errorcode[e.errno], flush=True)
a.close()
async def handle(r, w):
    data = await r.read()
    w.write(data[::-1])
    await w.drain()
    w.close()
async def main():
    server = await asyncio.start_server(handle, "fd23::2", 8443)
    print("ready", port > 0, flush=True)
    async with server:
        await asyncio.sleep(30)
asyncio.run(main())
`,
    ],
    /ready True/,
  );
  assert.match(p.stdoutText(), /conflict EADDRINUSE/);
  const conns = await Promise.all(
    [1, 2, 3].map(() => s.b.connect({ hostname: "fd23::2", port: 8443 })),
  );
  const answers = await Promise.all(conns.map((c, i) => exchange(c, `abc${i}`)));
  assert.deepEqual(answers, ["0cba", "1cba", "2cba"]);
});

Deno.test("broker inbound: a wildcard listener is reachable locally and through the tunnel", async () => {
  await using s = await setup();
  const p = await start(s, ["python3", "-c", echoServer, "0.0.0.0", "0", "2"], /ready \d+/);
  const port = Number(/ready (\d+)/.exec(p.stdoutText())![1]);
  // Locally, as without the wrapper.
  const local = await Deno.connect({ hostname: "127.0.0.1", port });
  await local.write(new TextEncoder().encode("local"));
  await local.closeWrite();
  const buf = new Uint8Array(16);
  const n = await local.read(buf);
  local.close();
  assert.equal(new TextDecoder().decode(buf.subarray(0, n!)), "LOCAL");
  // And from the tunnel, where the program sees the tunnel peer, not the loopback relay.
  const conn = await s.b.connect({ hostname: "10.203.0.2", port });
  assert.equal(await exchange(conn, "tunnel"), "TUNNEL");
  await p.waitForOutput(/done/, { timeoutMs: 10_000 });
  const peers = p.stdoutText().split("\n").filter((l) => l.startsWith("peer"));
  assert.match(peers[0]!, new RegExp(`^peer 127\\.0\\.0\\.1 \\d+ local 127\\.0\\.0\\.1 ${port}$`));
  assert.equal(peers[1], `peer 10.203.0.1 ${conn.localAddr.port} local 10.203.0.2 ${port}`);
});

Deno.test({
  name: "broker inbound: socat TCP-LISTEN bound to the tunnel address",
  ignore: which("socat") === undefined,
  async fn() {
    await using s = await setup();
    const p = spawn(null, [
      "socat",
      "-d",
      "-d",
      "TCP-LISTEN:9000,bind=10.203.0.2,reuseaddr",
      "SYSTEM:tr a-z A-Z",
    ], { env: { ...s.broker.env(), LD_PRELOAD: lib } });
    s.procs.push(p);
    // socat logs "listening on" to stderr once it listens.
    for (let i = 0; i < 100 && !/listening on/.test(p.stderrText()); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.match(p.stderrText(), /listening on/);
    const conn = await s.b.connect({ hostname: "10.203.0.2", port: 9000 });
    assert.equal(await exchange(conn, "through socat\n"), "THROUGH SOCAT\n");
    const r = await p.wait(10_000);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /accepting connection from AF=2 10\.203\.0\.1:/);
  },
});

Deno.test({
  name: "broker inbound: a node http server on the wildcard serves tunnel peers",
  ignore: which("node") === undefined,
  async fn() {
    await using s = await setup();
    const p = await start(s, [
      "node",
      "-e",
      `require("http").createServer((req, res) => res.end("seen " + req.socket.remoteAddress))
         .listen(8080, "::", () => console.log("ready"));`,
    ], /ready/);
    assert.ok(p);
    const conn = await s.b.connect({ hostname: "fd23::2", port: 8080 });
    const reply = await exchange(conn, "GET / HTTP/1.0\r\nHost: x\r\n\r\n");
    assert.match(reply, /^HTTP\/1\.1 200 OK/);
    assert.match(reply, /seen fd23::1$/);
  },
});
