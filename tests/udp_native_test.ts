/**
 * The batched UDP helper (native/udpio.c through core/host/tunnel/udp_native.ts) against the
 * kernel's UDP through node:dgram sockets we did not write: order and bytes both ways, both
 * families on the dual-stack socket, oversized datagrams dropped and counted, close, a taken port;
 * then the permission model (the CLI's flags load it and revoke ffi; without ffi the fallback).
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { NativeUdpTransport, udpHelper } from "../core/host/tunnel/udp_native.ts";
import { encodeKey, generatePrivateKey, publicKeyOf, Tunnel } from "../mod.ts";
import type { Endpoint } from "../core/wireguard/peer.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const FLAGS = Deno.readTextFileSync(`${ROOT}cli/permissions.flags`).split(/\s+/).filter((f) => f);

function kernelSocket(type: "udp4" | "udp6", address: string): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket({ type, ipv6Only: type === "udp6" });
    s.once("error", reject);
    s.bind(0, address, () => resolve(s));
  });
}

/** Datagram i: its index in the first 4 bytes, then bytes derived from it, 1..1452 long. */
function datagram(i: number): Uint8Array {
  const len = 4 + (i * 37) % 1449;
  const d = new Uint8Array(len);
  new DataView(d.buffer).setUint32(0, i);
  for (let k = 4; k < len; k++) d[k] = (i + k) & 0xff;
  return d;
}

function assertDatagram(d: Uint8Array, i: number) {
  assert.equal(new DataView(d.buffer, d.byteOffset).getUint32(0), i, "in order");
  assert.deepEqual(d, datagram(i));
}

function send(k: dgram.Socket, d: Uint8Array, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => k.send(d, port, host, (e) => e ? reject(e) : resolve()));
}

async function until(cond: () => boolean, ms = 5000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}

const helper = await udpHelper();

Deno.test("batched UDP helper: it loads here (Linux, a built helper, ffi granted to the tests)", () => {
  // Not an ignore: a helper that stopped loading must fail here, not skip the tests below and
  // leave every tunnel in the suite quietly on node:dgram.
  assert.ok(helper.lib, `the helper did not load: ${helper.reason}`);
});

Deno.test("batched UDP helper: datagrams keep their bytes and order against kernel sockets", async (t) => {
  const lib = helper.lib;
  assert.ok(lib, helper.reason);
  const got: { from: Endpoint; data: Uint8Array }[] = [];
  const native = NativeUdpTransport.open(lib, {
    // The data is a view of the receive buffer, valid during the call (udp.ts): kept, copied.
    onDatagram: (from, data) => got.push({ from, data: data.slice() }),
  });
  /** `count` datagrams from kernel socket `k` to the helper: all arrive, intact and in order. */
  const fromKernel = async (k: dgram.Socket, host: string, count: number) => {
    // One send at a time: Deno's node:dgram may complete concurrent sends out of order.
    for (let i = 0; i < count; i++) await send(k, datagram(i), native.port, host);
    await until(() => got.length === count);
    got.forEach((g, i) => assertDatagram(g.data, i));
  };
  try {
    assert.equal(native.backend, "native");
    assert.ok(native.port > 0);

    await t.step("kernel IPv4 → helper: 3000 datagrams, from 127.0.0.1", async () => {
      const k = await kernelSocket("udp4", "127.0.0.1");
      try {
        await fromKernel(k, "127.0.0.1", 3000);
        assert.deepEqual([...got[0]!.from.address], [127, 0, 0, 1], "unmapped IPv4");
        assert.equal(got[0]!.from.port, k.address().port);
        assert.equal(got[0]!.from, got[2999]!.from, "one Endpoint object per source");
      } finally {
        k.close();
        got.length = 0;
      }
    });

    await t.step("kernel IPv6 → helper: from ::1 with its 16 bytes", async () => {
      const k = await kernelSocket("udp6", "::1");
      try {
        await fromKernel(k, "::1", 200);
        const loop6 = new Uint8Array(16);
        loop6[15] = 1;
        assert.deepEqual(got[0]!.from.address, loop6);
      } finally {
        k.close();
        got.length = 0;
      }
    });

    await t.step("helper → kernel IPv4 and IPv6: 3000, 50 per turn, arrive in order", async () => {
      for (
        const [type, address, bytes] of [
          ["udp4", "127.0.0.1", new Uint8Array([127, 0, 0, 1])],
          ["udp6", "::1", Uint8Array.from({ length: 16 }, (_, i) => i === 15 ? 1 : 0)],
        ] as const
      ) {
        const k = await kernelSocket(type, address);
        const seen: Uint8Array[] = [];
        k.on("message", (m: Uint8Array) => seen.push(new Uint8Array(m)));
        try {
          const to = { address: bytes, port: k.address().port };
          // The receiver's buffer is the kernel default (~208 KiB of skb memory, about 90 such
          // datagrams), so 50 per turn: each turn is one sendmmsg.
          for (let r = 0; r < 60; r++) {
            for (let i = r * 50; i < (r + 1) * 50; i++) native.send(to, datagram(i));
            await until(() => seen.length === (r + 1) * 50);
          }
          seen.forEach((d, i) => assertDatagram(d, i));
          assert.equal(native.sendErrors, 0);
          assert.equal(native.queueDrops, 0);
        } finally {
          k.close();
        }
      }
    });

    await t.step(
      "slot(): filled after it returns, 130 in one turn (three sendmmsg), all arrive",
      async () => {
        const k = await kernelSocket("udp4", "127.0.0.1");
        const seen: Uint8Array[] = [];
        k.on("message", (m: Uint8Array) => seen.push(new Uint8Array(m)));
        try {
          const to = { address: new Uint8Array([127, 0, 0, 1]), port: k.address().port };
          // Small datagrams so that 130 fit the receiver's default buffer. The 65th and the 129th
          // slot send the full batch before them: their bytes were written by then.
          const small = (i: number) => datagram(i).subarray(0, 4 + (i % 60));
          for (let i = 0; i < 130; i++) native.slot(to, small(i).length)!.set(small(i));
          await until(() => seen.length === 130);
          seen.forEach((d, i) => assert.deepEqual(d, small(i), `datagram ${i}`));
          assert.equal(native.slot(to, 4096), undefined, "larger than a slot");
        } finally {
          k.close();
        }
      },
    );

    await t.step(
      "a datagram larger than a slot is dropped and counted; the next one arrives",
      async () => {
        const k = await kernelSocket("udp4", "127.0.0.1");
        try {
          k.send(new Uint8Array(9000), native.port, "127.0.0.1");
          k.send(datagram(7), native.port, "127.0.0.1");
          await until(() => got.length === 1);
          assertDatagram(got[0]!.data, 7);
          assert.equal(native.truncated, 1);
        } finally {
          k.close();
          got.length = 0;
        }
      },
    );

    if (Deno.uid() === 0) {
      await t.step("as root the socket gets the large receive buffer", () => {
        // The kernel reports twice what was set; 7 MiB was asked for.
        assert.ok(native.receiveBuffer >= 7 << 20, `${native.receiveBuffer}`);
      });
    }
  } finally {
    native.close();
  }
  await native.done;

  await t.step(
    "after close the port is free again, and a taken port is refused by name",
    async () => {
      const a = NativeUdpTransport.open(lib, { onDatagram() {} });
      assert.throws(
        () => NativeUdpTransport.open(lib, { port: a.port, onDatagram() {} }),
        (e: Error & { code?: string }) =>
          e.code === "EADDRINUSE" && /already in use/.test(e.message),
      );
      const taken = a.port;
      a.close();
      await a.done;
      const b = NativeUdpTransport.open(lib, { port: taken, onDatagram() {} });
      assert.equal(b.port, taken);
      b.close();
      await b.done;
    },
  );
});

Deno.test("node:dgram fallback: two tunnels on it still carry TCP byte for byte", async () => {
  const a = generatePrivateKey(), b = generatePrivateKey();
  const opts = { listenAddress: "127.0.0.1", udpBackend: "dgram" as const };
  const server = await Tunnel.fromText(
    `[Interface]\nPrivateKey = ${encodeKey(a)}\nAddress = 10.9.0.1/32\n\n` +
      `[Peer]\nPublicKey = ${encodeKey(publicKeyOf(b))}\nAllowedIPs = 10.9.0.2/32\n`,
    opts,
  );
  const client = await Tunnel.fromText(
    `[Interface]\nPrivateKey = ${encodeKey(b)}\nAddress = 10.9.0.2/32\n\n` +
      `[Peer]\nPublicKey = ${encodeKey(publicKeyOf(a))}\nAllowedIPs = 10.9.0.1/32\n` +
      `Endpoint = 127.0.0.1:${server.udp.port}\n`,
    opts,
  );
  try {
    assert.equal(server.udp.backend, "dgram");
    assert.equal(client.udp.backend, "dgram");
    const listener = server.listen({ port: 7 });
    const data = crypto.getRandomValues(new Uint8Array(65536));
    const sink = (async () => {
      const c = await listener.accept();
      const chunks: Uint8Array[] = [];
      for (let chunk; (chunk = await c.readChunk()) !== null;) chunks.push(chunk.slice());
      c.close();
      return new Uint8Array(await new Blob(chunks as BlobPart[]).arrayBuffer());
    })();
    const conn = await client.connect({ hostname: "10.9.0.1", port: 7 });
    for (let i = 0; i < 16; i++) await conn.writeAll(data);
    await conn.closeWrite();
    const got = await sink;
    assert.equal(got.length, 16 * data.length);
    for (let i = 0; i < 16; i++) assert.deepEqual(got.subarray(i * 65536, (i + 1) * 65536), data);
    conn.close();
    listener.close();
  } finally {
    client.close();
    server.close();
  }
});

Deno.test("permissions: the CLI's flags load the helper and then refuse Deno.dlopen; without ffi, node:dgram", async (t) => {
  const script = `
import { loadHelperThenDropFfi } from "${ROOT}core/host/sandbox.ts";
import { UdpTransport } from "${ROOT}core/host/tunnel/udp.ts";
import { aeadBackend } from "${ROOT}core/wireguard/crypto.ts";
const helper = await loadHelperThenDropFfi();
const sock = await UdpTransport.open({ address: "127.0.0.1", onDatagram() {} });
let dlopen = "allowed";
try {
  Deno.dlopen("/tmp/anything.so", { f: { parameters: [], result: "void" } });
} catch (e) {
  dlopen = e.name;
}
console.log(JSON.stringify({ backend: sock.backend, reason: helper.reason ?? null, dlopen,
  aead: aeadBackend(),
  ffi: (await Deno.permissions.query({ name: "ffi", path: "/tmp" })).state }));
sock.close();
Deno.exit(0);
`;
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  await Deno.writeTextFile(file, script);
  const launch = async (flags: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      // The script lives in /tmp: the project's import map (the noble packages) comes by --config.
      args: ["run", "--quiet", "--config", `${ROOT}deno.json`, ...flags, file],
      env: { DENO_NO_UPDATE_CHECK: "1" },
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    return JSON.parse(text);
  };
  try {
    await t.step("cli/permissions.flags: helper loaded, then ffi is gone", async () => {
      const r = await launch(FLAGS);
      assert.equal(r.backend, "native", r.reason);
      assert.equal(r.ffi, "prompt");
      assert.equal(r.dlopen, "NotCapable", "Deno.dlopen refused after launch");
      // The helper's AEAD opened its library while loading: revoking ffi does not take it away.
      assert.equal(r.aead, "native");
    });
    await t.step("the same flags without --allow-ffi: node:dgram, and it says why", async () => {
      const r = await launch(FLAGS.filter((f) => !f.startsWith("--allow-ffi")));
      assert.equal(r.backend, "dgram");
      assert.match(r.reason, /allow-ffi/);
      assert.equal(r.dlopen, "NotCapable");
      assert.equal(r.aead, "node");
    });
  } finally {
    await Deno.remove(file);
  }
});

Deno.test({
  name:
    "without libcrypto and libsodium the helper still loads: UDP stays batched, AEAD and X25519 are node's",
  // A private mount namespace with /dev/null over both libraries needs root.
  ignore: Deno.uid() !== 0,
  async fn() {
    const script = `
import { udpHelper } from "${ROOT}core/host/tunnel/udp_native.ts";
import { UdpTransport } from "${ROOT}core/host/tunnel/udp.ts";
import { aeadBackend } from "${ROOT}core/wireguard/crypto.ts";
import { x25519Backend } from "${ROOT}core/wireguard/x25519.ts";
const helper = await udpHelper();
let got = 0;
const sock = await UdpTransport.open({ address: "127.0.0.1", onDatagram(_from, d) { got = d.length; } });
sock.send({ address: Uint8Array.of(127, 0, 0, 1), port: sock.port }, new Uint8Array(100));
const end = Date.now() + 5000;
while (got === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
console.log(JSON.stringify({ backend: sock.backend, aead: aeadBackend(), got,
  why: helper.aead?.reason ?? null, x25519: x25519Backend().name,
  x25519Why: helper.x25519?.reason ?? null }));
sock.close();
Deno.exit(0);
`;
    const file = await Deno.makeTempFile({ suffix: ".ts" });
    await Deno.writeTextFile(file, script);
    // Every path the loader's cache knows for either library, hidden behind /dev/null.
    const hide = `for l in libcrypto.so.3 libsodium.so.23; do
  ldconfig -p | awk -v l="$l" '$1 == l { print $NF }' | while read -r p; do
    mount --bind /dev/null "$p" || exit 1
  done
done
exec "$0" run --quiet --config "$1" ${FLAGS.join(" ")} "$2"`;
    try {
      const out = await new Deno.Command("unshare", {
        args: [
          "-m",
          "--propagation",
          "private",
          "sh",
          "-c",
          hide,
          Deno.execPath(),
          `${ROOT}deno.json`,
          file,
        ],
        env: { DENO_NO_UPDATE_CHECK: "1" },
      }).output();
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      const r = JSON.parse(new TextDecoder().decode(out.stdout));
      assert.equal(r.backend, "native", "the helper loaded without the crypto libraries");
      assert.equal(r.got, 100, "a datagram went round through it");
      assert.equal(r.aead, "node");
      assert.match(r.why, /neither libcrypto\.so\.3 nor libsodium\.so\.23/);
      assert.equal(r.x25519, "node");
      assert.match(r.x25519Why, /neither libcrypto\.so\.3 nor libsodium\.so\.23/);
    } finally {
      await Deno.remove(file);
    }
  },
});
