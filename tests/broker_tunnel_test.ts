/**
 * The real broker on a real tunnel: real programs, preloaded, reach services of a second tunnel
 * through WireGuard over 127.0.0.1, the userspace TCP/IP stack and the broker. No root needed.
 *
 *   python3/curl/socat ─ interposer ─ Unix socket ─ Broker ─ Tunnel A (10.202.0.2)
 *        ═ WireGuard over 127.0.0.1 UDP ═ Tunnel B (10.202.0.1): echo, HTTP, UDP echo (library API)
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { parseConfig } from "../core/config/mod.ts";
import { Broker } from "../core/host/broker/mod.ts";
import type { TunnelConn, TunnelListener } from "../core/host/tunnel/tcp.ts";
import { Tunnel } from "../core/host/tunnel/mod.ts";
import { encodeKey, generatePrivateKey, publicKeyOf } from "../core/wireguard/keys.ts";
import { preloadLibrary } from "./_support/fake_broker.ts";
import { run, sleep, spawn, which } from "./_support/proc.ts";

const lib = await preloadLibrary();

function sha256(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

interface Setup {
  a: Tunnel;
  b: Tunnel;
  broker: Broker;
  /** Remote ports B's servers saw, in accept order. */
  seenPorts: number[];
  [Symbol.asyncDispose](): Promise<void>;
}

/** Serves every connection of `listener` with `handle` until it closes. */
function serve(listener: TunnelListener, seen: number[], handle: (c: TunnelConn) => Promise<void>) {
  (async () => {
    for await (const conn of listener) {
      seen.push(conn.remoteAddr.port);
      handle(conn).catch(() => {}).finally(() => conn.close());
    }
  })().catch(() => {});
}

async function echo(conn: TunnelConn): Promise<void> {
  for (;;) {
    const chunk = await conn.readChunk();
    if (chunk === null) break;
    await conn.writeAll(chunk);
  }
  await conn.closeWrite();
  await conn.closed();
}

/** HTTP/1.0 by hand: GET returns `body`, POST returns the SHA-256 of the request body. */
function http(body: Uint8Array) {
  return async (conn: TunnelConn): Promise<void> => {
    let buf = new Uint8Array(0);
    const more = async () => {
      const chunk = await conn.readChunk();
      if (chunk === null) return false;
      const next = new Uint8Array(buf.length + chunk.length);
      next.set(buf);
      next.set(chunk, buf.length);
      buf = next;
      return true;
    };
    let end = -1;
    while ((end = new TextDecoder().decode(buf).indexOf("\r\n\r\n")) < 0) {
      if (!(await more())) return;
    }
    const head = new TextDecoder().decode(buf.subarray(0, end));
    const length = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
    while (buf.length < end + 4 + length) if (!(await more())) return;
    const reply = head.startsWith("POST")
      ? new TextEncoder().encode(sha256(buf.subarray(end + 4, end + 4 + length)))
      : body;
    await conn.writeAll(
      new TextEncoder().encode(
        `HTTP/1.0 200 OK\r\nContent-Length: ${reply.length}\r\nConnection: close\r\n\r\n`,
      ),
    );
    await conn.writeAll(reply);
    await conn.closeWrite();
    await conn.closed();
  };
}

const body = randomBytes(1 << 20);

async function setup(brokerRoutes?: string[]): Promise<Setup> {
  const ka = generatePrivateKey(), kb = generatePrivateKey();
  const b = await Tunnel.start(
    parseConfig(
      `[Interface]\nPrivateKey = ${encodeKey(kb)}\nAddress = 10.202.0.1/32, fd22::1/128\n\n` +
        `[Peer]\nPublicKey = ${
          encodeKey(publicKeyOf(ka))
        }\nAllowedIPs = 10.202.0.2/32, fd22::2/128\n`,
    ),
    { listenAddress: "127.0.0.1" },
  );
  const a = await Tunnel.start(
    parseConfig(
      `[Interface]\nPrivateKey = ${encodeKey(ka)}\nAddress = 10.202.0.2/32, fd22::2/128\n\n` +
        `[Peer]\nPublicKey = ${encodeKey(publicKeyOf(kb))}\nEndpoint = 127.0.0.1:${b.udp.port}\n` +
        `AllowedIPs = 10.202.0.0/24, fd22::/64\n`,
    ),
    // One SYN retransmission: an unanswered connect gives up within seconds.
    { listenAddress: "127.0.0.1", tcp: { synRetries: 1 } },
  );
  const seenPorts: number[] = [];
  const listeners = [
    b.listen({ port: 7, hostname: "::" }),
    b.listen({ port: 80, hostname: "10.202.0.1" }),
  ];
  serve(listeners[0]!, seenPorts, echo);
  serve(listeners[1]!, seenPorts, http(body));
  const udpEcho = b.stack.udp.bind({ port: 53 });
  udpEcho.onDatagram = (data, from, port) => {
    udpEcho.send(from, port, data.slice());
    b.poke();
  };
  const broker = await Broker.start(a, brokerRoutes ? { routes: brokerRoutes } : {});
  return {
    a,
    b,
    broker,
    seenPorts,
    async [Symbol.asyncDispose]() {
      await broker.close();
      for (const l of listeners) l.close();
      udpEcho.close();
      a.close();
      b.close();
      await new Promise((r) => setTimeout(r, 20));
    },
  };
}

async function python(s: Setup, script: string, env: Record<string, string> = {}) {
  const r = await run(null, ["python3", "-c", script], {
    env: { ...s.broker.env(), LD_PRELOAD: lib, ...env },
    timeoutMs: 30_000,
  });
  assert.equal(r.code, 0, `python3 failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout.trim().split("\n");
}

Deno.test("broker: the environment it hands out, and its private directory", async () => {
  await using s = await setup();
  const env = s.broker.env();
  assert.equal(env.WRAPGUARD_ROUTES, "10.202.0.0/24,fd22::/64");
  assert.equal(env.WRAPGUARD_ADDRESSES, "10.202.0.2/32,fd22::2/128");
  assert.equal(env.WRAPGUARD_KILL_SWITCH, "0");
  assert.match(env.WRAPGUARD_SECRET!, /^[0-9a-f]{64}$/);
  assert.equal((await Deno.stat(env.WRAPGUARD_SOCKET_DIR!)).mode! & 0o777, 0o700);
  assert.equal(s.broker.socketPath, `${env.WRAPGUARD_SOCKET_DIR}/broker.sock`);
  // A directory others can enter is refused.
  const open = await Deno.makeTempDir();
  try {
    await Deno.chmod(open, 0o755);
    await assert.rejects(() => Broker.start(s.a, { dir: open }), Deno.errors.PermissionDenied);
  } finally {
    await Deno.remove(open, { recursive: true });
  }
  // Every-destination routes turn the kill switch on, as wg-quick does.
  const all = await Broker.start(s.a, { routes: ["0.0.0.0/0", "::/0"] });
  try {
    assert.equal(all.env().WRAPGUARD_KILL_SWITCH, "1");
    assert.notEqual(all.env().WRAPGUARD_SECRET, env.WRAPGUARD_SECRET);
  } finally {
    await all.close();
  }
});

Deno.test("broker: python blocking sockets and asyncio over the userspace TCP stack", async () => {
  await using s = await setup();
  const out = await python(
    s,
    `
import socket, os, hashlib, asyncio, threading
s = socket.create_connection(("10.202.0.1", 7))
print(s.getpeername(), s.getsockname()[0], s.getsockname()[1])
data = os.urandom(4 << 20)
# Write and read at once: an echo's buffers are far smaller than the data.
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=send).start()
h = hashlib.sha256()
while True:
    b = s.recv(1 << 16)
    if not b:
        break
    h.update(b)
print(h.digest() == hashlib.sha256(data).digest())
s.close()
async def one(i):
    r, w = await asyncio.open_connection("fd22::1", 7)
    data = os.urandom(300000 + i)
    reading = asyncio.create_task(r.read())
    w.write(data)
    await w.drain()
    w.write_eof()
    got = await reading
    w.close()
    return got == data
async def main():
    print(all(await asyncio.gather(*(one(i) for i in range(6)))))
asyncio.run(main())
`,
  );
  assert.equal(out[0]!.split(" ")[0], "('10.202.0.1',");
  const [ourAddr, ourPort] = out[0]!.split(") ")[1]!.split(" ");
  assert.equal(ourAddr, "10.202.0.2");
  // getsockname shows the port the peer actually saw.
  assert.equal(Number(ourPort), s.seenPorts[0]);
  assert.deepEqual(out.slice(1), ["True", "True"]);
  assert.equal(s.broker.stats.tcpConnects, 7);
});

Deno.test({
  name: "broker: curl GET and POST through the tunnel, refused is exit 7",
  ignore: which("curl") === undefined,
  async fn() {
    await using s = await setup();
    const env = { ...s.broker.env(), LD_PRELOAD: lib };
    const get = await run(null, ["curl", "-sS", "--max-time", "20", "http://10.202.0.1/"], {
      env,
      timeoutMs: 30_000,
    });
    assert.equal(get.code, 0, get.stderr);
    assert.equal(sha256(get.stdoutBytes), sha256(body));
    const upload = randomBytes(1 << 20);
    const file = await Deno.makeTempFile();
    try {
      await Deno.writeFile(file, upload);
      const post = await run(null, [
        "curl",
        "-sS",
        "--max-time",
        "20",
        "--data-binary",
        `@${file}`,
        "http://10.202.0.1/up",
      ], { env, timeoutMs: 30_000 });
      assert.equal(post.code, 0, post.stderr);
      assert.equal(post.stdout, sha256(upload));
    } finally {
      await Deno.remove(file);
    }
    // Nothing listens on port 81 of the peer: its TCP answers RST.
    const refused = await run(null, ["curl", "-v", "--max-time", "10", "http://10.202.0.1:81/"], {
      env,
      timeoutMs: 20_000,
    });
    assert.equal(refused.code, 7, refused.stderr);
    assert.match(refused.stderr, /Connection refused/);
  },
});

Deno.test({
  name: "broker: socat through the tunnel",
  ignore: which("socat") === undefined,
  async fn() {
    await using s = await setup();
    const input = randomBytes(1 << 20);
    const r = await run(null, ["socat", "-t", "5", "-", "TCP:10.202.0.1:7"], {
      env: { ...s.broker.env(), LD_PRELOAD: lib },
      stdin: input,
      timeoutMs: 30_000,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sha256(r.stdoutBytes), sha256(input));
  },
});

Deno.test("broker: errors of the tunnel are the errno values a kernel gives", async () => {
  // 10.203.0.0/24 is routed to the tunnel, but no peer's AllowedIPs cover it.
  await using s = await setup(["10.202.0.0/24", "10.203.0.0/24"]);
  const out = await python(
    s,
    `
import socket, errno
for addr in (("10.202.0.1", 81), ("10.203.0.1", 80), ("10.202.0.9", 80)):
    s = socket.socket()
    try:
        s.connect(addr)
        print("connected?!")
    except OSError as e:
        print(errno.errorcode[e.errno])
`,
  );
  // RST from the peer; no route; no answer to SYNs (10.202.0.9 is nobody).
  assert.deepEqual(out, ["ECONNREFUSED", "ENETUNREACH", "ETIMEDOUT"]);
  assert.equal(s.broker.stats.tcpFailed, 3);
});

Deno.test("broker: UDP sendto/recvfrom and connected UDP through the stack", async () => {
  await using s = await setup();
  const out = await python(
    s,
    `
import socket, os
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(5)
u.sendto(b"hello", ("10.202.0.1", 53))
data, peer = u.recvfrom(100)
print(data, peer, u.getsockname()[0])
big = os.urandom(60000)
u.sendto(big, ("10.202.0.1", 53))
data, peer = u.recvfrom(65536)
print(data == big)
# A datagram longer than the buffer is truncated; the rest of it is gone.
u.sendto(b"0123456789", ("10.202.0.1", 53))
u.sendto(b"next", ("10.202.0.1", 53))
print(u.recv(4), u.recv(100))
c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
c.settimeout(5)
c.connect(("fd22::1", 53))
c.send(b"connected")
print(c.recv(100), c.getpeername()[:2])
`,
  );
  assert.deepEqual(out, [
    "b'hello' ('10.202.0.1', 53) 10.202.0.2",
    "True",
    "b'0123' b'next'",
    "b'connected' ('fd22::1', 53)",
  ]);
  assert.equal(s.broker.stats.udpAssociations, 2);
});

Deno.test("broker: a wrong secret is refused and nothing is opened", async () => {
  await using s = await setup();
  const out = await python(
    s,
    `
import socket, errno
s = socket.socket()
try:
    s.connect(("10.202.0.1", 7))
    print("connected")
except OSError as e:
    print(errno.errorcode[e.errno])
`,
    { WRAPGUARD_SECRET: "00".repeat(32) },
  );
  assert.deepEqual(out, ["EACCES"]);
  assert.equal(s.broker.stats.authFailures, 1);
  assert.equal(s.broker.stats.tcpConnects + s.broker.stats.tcpFailed, 0);
  assert.equal(s.seenPorts.length, 0);
});

Deno.test("broker: opened before its tunnel, it answers HELLO and holds the rest until attach", async () => {
  await using s = await setup();
  // A second broker on the same tunnel, in the two steps `run` takes.
  const early = await Broker.open(s.a.config);
  try {
    const child = spawn(null, [
      "python3",
      "-c",
      `
import socket, sys
print("started", flush=True)
s = socket.create_connection(("10.202.0.1", 7))
s.sendall(b"held, then served")
print(s.recv(100).decode(), flush=True)
`,
    ], { env: { ...early.env(), LD_PRELOAD: lib, WRAPGUARD_HELLO: "1" } });
    // HELLO is answered without a tunnel: the program runs its own start meanwhile.
    assert.ok(await early.waitForHello(child.pid, 10_000), "HELLO before attach");
    await child.waitForOutput("started", { stream: "stdout", timeoutMs: 10_000 });
    // Its connect waits: nothing has reached the peer, and the program has not gone on.
    await sleep(300);
    assert.equal(child.exited, false);
    assert.deepEqual(s.seenPorts, []);
    early.attach(s.a);
    const r = await child.wait(15_000);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /held, then served/);
    assert.equal(s.seenPorts.length, 1);
  } finally {
    await early.close();
  }
});

Deno.test("broker: closed before any tunnel came, the held requests end unanswered", async () => {
  await using s = await setup();
  const early = await Broker.open(s.a.config);
  const child = spawn(null, [
    "python3",
    "-c",
    `
import socket
print("started", flush=True)
try:
    socket.create_connection(("10.202.0.1", 7))
    print("connected")
except OSError as e:
    print("refused", e.errno)
`,
  ], { env: { ...early.env(), LD_PRELOAD: lib, WRAPGUARD_HELLO: "1" } });
  await child.waitForOutput("started", { stream: "stdout", timeoutMs: 10_000 });
  await sleep(200);
  await early.close();
  const r = await child.wait(15_000);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /refused \d+/);
  assert.deepEqual(s.seenPorts, []);
});
