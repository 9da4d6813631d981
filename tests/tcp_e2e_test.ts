/**
 * Two TCP layers joined by a simulated link (loss, reordering, duplication, delay, a rate
 * limit with a drop-tail queue), driven by a fake clock. A 4 MiB transfer must arrive byte for
 * byte (SHA-256 compared) and both sides must close cleanly, whatever the link does.
 */
import assert from "node:assert/strict";
import type { IpBytes } from "../core/wire/addr.ts";
import { TcpLayer } from "../core/netstack/tcp.ts";
import type { TcpConnection, TcpLimits } from "../core/netstack/tcp.ts";
import { echoClient, echoServer } from "./_support/sim_echo.ts";
import { type LinkOptions, seededRandom, SimNetwork } from "./_support/tcp_script.ts";

const A4 = new Uint8Array([10, 0, 0, 1]);
const B4 = new Uint8Array([10, 0, 0, 2]);
const A6 = new Uint8Array([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
const B6 = new Uint8Array([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);

function testData(size: number, seed: number): Uint8Array {
  return seededRandom(seed)(size);
}

async function sha256(data: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));
  return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
}

interface Pair {
  net: SimNetwork;
  a: TcpLayer;
  b: TcpLayer;
  addrA: IpBytes;
  addrB: IpBytes;
}

function makePair(
  link: LinkOptions,
  v6 = false,
  limits?: Partial<TcpLimits>,
  payload = 1400,
): Pair {
  const net = new SimNetwork(link);
  const addrA = v6 ? A6 : A4, addrB = v6 ? B6 : B4;
  const a = new TcpLayer({ ip: net.host(addrA, payload), random: seededRandom(11), limits });
  const b = new TcpLayer({ ip: net.host(addrB, payload), random: seededRandom(22), limits });
  net.attach(addrA, a);
  net.attach(addrB, b);
  return { net, a, b, addrA, addrB };
}

/** A writes `data` to B and closes; B reads everything and closes when it sees the end. */
function transfer(p: Pair, data: Uint8Array) {
  const listener = p.b.listen({ port: 9000 });
  const chunks: Uint8Array[] = [];
  let received = 0;
  let server: TcpConnection | undefined;
  let serverClosed = false, clientClosed = false;
  let serverError: string | undefined, clientError: string | undefined;
  const readBuf = new Uint8Array(16384);
  listener.onAccept = () => {
    const c = listener.accept()!;
    server = c;
    const drain = () => {
      for (let got = c.read(readBuf); got.length > 0; got = c.read(readBuf)) {
        chunks.push(got.slice());
        received += got.length;
      }
      if (c.readableEnded) c.close();
    };
    c.onReadable = drain;
    c.onEnd = drain;
    c.onClose = (e) => {
      serverClosed = true;
      serverError = e?.code;
    };
    drain();
  };
  const client = p.a.connect(p.net.now, { dst: p.addrB, dstPort: 9000 });
  let written = 0;
  const pump = () => {
    while (written < data.length) {
      const n = client.write(data.subarray(written, Math.min(data.length, written + 65536)));
      if (n === 0) return;
      written += n;
    }
    if (client.state === "ESTABLISHED") client.close();
  };
  client.onOpen = pump;
  client.onWritable = pump;
  client.onClose = (e) => {
    clientClosed = true;
    clientError = e?.code;
  };
  const done = () => serverClosed && clientClosed;
  const finished = p.net.run(done, 3_600_000);
  return {
    finished,
    received: () => {
      const out = new Uint8Array(received);
      let o = 0;
      for (const c of chunks) {
        out.set(c, o);
        o += c.length;
      }
      return out;
    },
    written: () => written,
    serverError: () => serverError,
    clientError: () => clientError,
    server: () => server,
    client,
  };
}

const SIZE = 4 * 1024 * 1024;

async function runCase(name: string, link: LinkOptions, v6 = false) {
  const p = makePair(link, v6);
  const data = testData(SIZE, 99);
  const r = transfer(p, data);
  const got = r.received();
  assert.ok(
    r.finished,
    `${name}: did not finish (got ${got.length} of ${SIZE}, net ${JSON.stringify(p.net.stats)})`,
  );
  assert.equal(r.clientError(), undefined, `${name}: client error`);
  assert.equal(r.serverError(), undefined, `${name}: server error`);
  assert.equal(got.length, SIZE, `${name}: length`);
  assert.equal(await sha256(got), await sha256(data), `${name}: SHA-256`);
  // Both tables drain: the closer's TIME-WAIT ends after 2 MSL.
  p.net.advance(p.net.now + 61_000);
  assert.equal(p.a.connectionCount, 0, `${name}: A's table`);
  assert.equal(p.b.connectionCount, 0, `${name}: B's table`);
  return p;
}

Deno.test("TCP end to end, 4 MiB", async (t) => {
  await t.step("clean link", async () => {
    const p = await runCase("clean", { delay: 10 });
    assert.equal(p.a.stats.retransmits, 0);
  });
  await t.step("3% loss", async () => {
    const p = await runCase("loss", { delay: 10, loss: 0.03, seed: 3 });
    assert.ok(p.net.stats.lost > 0);
    assert.ok(p.a.stats.retransmits > 0);
  });
  await t.step("reordering", async () => {
    const p = await runCase("reorder", { delay: 10, reorder: 0.1, reorderDelay: 15, seed: 4 });
    assert.ok(p.net.stats.reordered > 0);
    assert.ok(p.b.stats.outOfOrder > 0, "the receiver saw out-of-order data");
  });
  await t.step("duplication", async () => {
    const p = await runCase("dup", { delay: 10, duplicate: 0.05, seed: 5 });
    assert.ok(p.net.stats.duplicated > 0);
  });
  await t.step("loss, reordering and duplication together, over IPv6", async () => {
    await runCase("mixed", {
      delay: 15,
      loss: 0.03,
      reorder: 0.05,
      reorderDelay: 20,
      duplicate: 0.02,
      seed: 6,
    }, true);
  });
  await t.step("a slow bottleneck with a small drop-tail queue", async () => {
    const p = await runCase("bottleneck", { delay: 5, rate: 1250, queueLimit: 20, seed: 8 });
    assert.ok(p.net.stats.queueDrops > 0, "congestion losses happened");
  });
});

/**
 * Echo servers that stop reading while their replies do not fit (as a blocking echo does):
 * windows close and reopen in both directions on every connection, over a congested, lossy
 * link. Every byte must come back in order.
 */
Deno.test("TCP end to end: 24 concurrent echo connections over a congested, lossy link", async () => {
  const p = makePair(
    { delay: 8, loss: 0.01, reorder: 0.02, reorderDelay: 10, rate: 2500, queueLimit: 40, seed: 12 },
    false,
    { sendBuffer: 32 * 1024, receiveBuffer: 32 * 1024 },
  );
  echoServer(p.b, 7);
  const SIZE = 256 * 1024;
  const clients = Array.from({ length: 24 }, (_, i) => {
    const data = testData(SIZE, 1000 + i);
    return { data, echo: echoClient(p.a, p.net, p.addrB, 7, data) };
  });
  const finished = p.net.run(() => clients.every((c) => c.echo.closed), 3_600_000);
  assert.ok(finished, `not all closed: ${clients.filter((c) => !c.echo.closed).length} open`);
  for (const [i, { data, echo }] of clients.entries()) {
    assert.equal(echo.error, undefined, `client ${i}`);
    const got = echo.received();
    assert.equal(got.length, SIZE, `client ${i} length`);
    assert.equal(await sha256(got), await sha256(data), `client ${i} SHA-256`);
  }
  assert.ok(p.net.stats.queueDrops + p.net.stats.lost > 0);
  p.net.advance(p.net.now + 61_000);
  assert.equal(p.a.connectionCount + p.b.connectionCount, 0);
});
