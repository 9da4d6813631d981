/**
 * UDP through the interposer against the fake broker, which relays frames to a kernel UDP echo
 * server on 127.0.0.1: datagram boundaries, source addresses, truncation, non-blocking reads of
 * bursts, and concurrent TCP connects from many threads (the fd table under contention).
 */
import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import { FakeBroker, preloadLibrary } from "./_support/fake_broker.ts";
import { run } from "./_support/proc.ts";
import { Status } from "../core/host/broker/protocol.ts";

const lib = await preloadLibrary();

async function udpEcho(): Promise<{ port: number; close(): Promise<void> }> {
  const sock = createSocket("udp4");
  sock.on("message", (msg, rinfo) => sock.send(msg, rinfo.port, rinfo.address));
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", r));
  return {
    port: sock.address().port,
    close: () => new Promise<void>((r) => sock.close(() => r())),
  };
}

async function python(broker: FakeBroker, script: string): Promise<string[]> {
  const r = await run(null, ["python3", "-c", script], {
    env: broker.env(lib),
    timeoutMs: 30_000,
  });
  assert.equal(r.code, 0, `python3 failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout.trim().split("\n");
}

Deno.test("preload udp: datagrams keep their boundaries and report tunnel sources", async () => {
  const echo = await udpEcho();
  const broker = await FakeBroker.start({
    udp: (d) => d.address === "10.99.0.2" && d.port === 53 ? echo.port : undefined,
  });
  try {
    const out = await python(
      broker,
      `
import socket, selectors, os, hashlib
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(5)
u.sendto(b"one", ("10.99.0.2", 53))
print(u.recvfrom(100), u.getsockname()[0])
# A burst (small enough for the kernel UDP buffers behind the fake broker), then read non-blocking through a selector: every datagram whole, in order.
sent = [os.urandom(1 + (i * 997) % 1500) for i in range(100)]
for d in sent:
    u.sendto(d, ("10.99.0.2", 53))
u.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(u, selectors.EVENT_READ)
got = []
while len(got) < len(sent):
    if not sel.select(5):
        break
    while True:
        try:
            got.append(u.recv(65536))
        except BlockingIOError:
            break
print(len(got), got == sent)
# MSG_PEEK leaves the datagram; a short buffer truncates it (and the rest is gone).
u.setblocking(True)
u.sendto(b"peekaboo", ("10.99.0.2", 53))
u.sendto(b"after", ("10.99.0.2", 53))
print(u.recv(100, socket.MSG_PEEK), u.recv(4), u.recv(100))
# Nothing answers on another port: the datagram is simply lost.
u.sendto(b"lost", ("10.99.0.2", 54))
u.settimeout(0.3)
try:
    u.recv(100)
    print("answer?!")
except socket.timeout:
    print("timeout")
`,
    );
    assert.deepEqual(out, [
      "(b'one', ('10.99.0.2', 53)) 10.99.0.1",
      "100 True",
      "b'peekaboo' b'peek' b'after'",
      "timeout",
    ]);
    assert.deepEqual(broker.requests.map((q) => q.op), [5]); // one association for the socket
  } finally {
    await broker.close();
    await echo.close();
  }
});

Deno.test("preload tcp: many threads connecting at once", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    for await (const c of listener) {
      (async () => {
        const buf = new Uint8Array(256);
        const n = await c.read(buf);
        if (n) await c.write(buf.subarray(0, n));
        c.close();
      })().catch(() => {});
    }
  })().catch(() => {});
  const port = (listener.addr as Deno.NetAddr).port;
  const broker = await FakeBroker.start({
    connect: (d) =>
      d.port === 7
        ? { kind: "relay", port, delayMs: d.address.endsWith(".3") ? 30 : 0 }
        : { kind: "fail", status: Status.ConnRefused },
  });
  try {
    const out = await python(
      broker,
      `
import socket, threading, errno
results = []
lock = threading.Lock()
def worker(i):
    for j in range(5):
        host = "10.99.0.%d" % (2 + (i + j) % 2)
        s = socket.socket()
        if (i + j) % 3 == 0:
            try:
                s.connect((host, 9))
            except ConnectionRefusedError:
                r = "refused"
        else:
            s.connect((host, 7))
            msg = ("t%d-%d" % (i, j)).encode()
            s.sendall(msg)
            r = "ok" if s.recv(256) == msg and s.getpeername() == (host, 7) else "bad"
        s.close()
        with lock:
            results.append(r)
threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
for t in threads: t.start()
for t in threads: t.join()
print(len(results), results.count("ok"), results.count("refused"), results.count("bad"))
`,
    );
    // 80 connects: (i + j) % 3 == 0 for 27 of the 16 × 5 pairs.
    assert.deepEqual(out, ["80 53 27 0"]);
    assert.equal(broker.requests.length, 80);
  } finally {
    await broker.close();
    listener.close();
    await serving;
  }
});
