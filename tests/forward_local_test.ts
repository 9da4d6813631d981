// The forwarder in process, between two of our tunnels on loopback (no root needed): local Unix
// sockets, -L and -R, half-close, and what each side sees when the other end is missing.
import assert from "node:assert/strict";
import { readAll } from "./_support/bytes.ts";
import { Forwarder, ForwardError } from "../core/host/forward/mod.ts";
import { listenUnix, PathInUseError } from "../core/host/forward/local.ts";
import { parseLocalForward, parseRemoteForward } from "../core/host/forward/spec.ts";
import { FAR4, FAR6, NEAR4, withLoopbackPair, writeAll } from "./_support/forward_pair.ts";

const enc = new TextEncoder(), dec = new TextDecoder();

Deno.test("listenUnix: 0600, stale sockets replaced, live ones and files refused", async (t) => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/s.sock`;
    await t.step("created 0600, removed on close", async () => {
      const l = await listenUnix(path);
      const st = await Deno.lstat(path);
      assert.ok(st.isSocket);
      assert.equal(st.mode! & 0o777, 0o600);
      // No staging directory is left behind.
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["s.sock"]);
      await l.close();
      await assert.rejects(Deno.lstat(path), Deno.errors.NotFound);
    });
    await t.step("a live socket is refused, a stale one replaced", async () => {
      const other = Deno.listen({ transport: "unix", path });
      await assert.rejects(listenUnix(path), PathInUseError);
      other.close();
      // A socket file with nobody listening, as a killed program leaves behind (Deno removes its
      // own on close, so another program makes one).
      const stale = new Deno.Command("python3", {
        args: ["-c", "import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", path],
      });
      assert.equal((await stale.output()).code, 0);
      assert.ok((await Deno.lstat(path)).isSocket);
      const l = await listenUnix(path);
      const c = await Deno.connect({ transport: "unix", path });
      const accepted = await l.accept();
      c.close();
      accepted.close();
      await l.close();
    });
    await t.step("a regular file is refused and left alone", async () => {
      await Deno.writeTextFile(path, "not a socket");
      await assert.rejects(listenUnix(path), PathInUseError);
      assert.equal(await Deno.readTextFile(path), "not a socket");
      await Deno.remove(path);
    });
    await t.step("close leaves a path that someone else took over", async () => {
      const l = await listenUnix(path);
      await Deno.remove(path);
      const other = Deno.listen({ transport: "unix", path });
      await l.close();
      assert.ok((await Deno.lstat(path)).isSocket);
      other.close();
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Forwarder -L: Unix and TCP listeners to tunnel services, half-close both ways", async () => {
  const dir = await Deno.makeTempDir();
  await withLoopbackPair(async ({ near, far }) => {
    // A service on the far tunnel that reads to end of stream, then answers, then closes.
    const svc = far.listen({ port: 4000 });
    const serving = (async () => {
      for (let i = 0; i < 2; i++) {
        const c = await svc.accept();
        const got = dec.decode(await readAll(c));
        await c.writeAll(enc.encode(`${c.remoteAddr.hostname} said ${got}`));
        await c.closeWrite();
        await c.closed();
        c.close();
      }
    })();
    const fwd = await Forwarder.start(near, [
      parseLocalForward(`unix:${dir}/a.sock=${FAR4}:4000`),
      parseLocalForward(`tcp:127.0.0.1:0=[${FAR6}]:4000`),
    ]);
    try {
      const tcpPort = Number(fwd.forwards[1]!.listening.split(":").pop());
      for (
        const conn of [
          await Deno.connect({ transport: "unix", path: `${dir}/a.sock` }),
          await Deno.connect({ hostname: "127.0.0.1", port: tcpPort }),
        ]
      ) {
        await writeAll(conn, enc.encode("hello"));
        // The answer only comes after our FIN has crossed the tunnel: half-close carried.
        await conn.closeWrite();
        const answer = dec.decode(await readAll(conn));
        conn.close();
        assert.match(answer, /^(10\.9\.0\.2|fd09::2) said hello$/);
      }
      await serving;
    } finally {
      await fwd.close();
      svc.close();
    }
  });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("Forwarder -R: a tunnel listener to a local Unix service; a missing one resets", async () => {
  const dir = await Deno.makeTempDir();
  await withLoopbackPair(async ({ near, far }) => {
    const local = Deno.listen({ transport: "unix", path: `${dir}/svc.sock` });
    const serving = (async () => {
      const c = await local.accept();
      const got = dec.decode(await readAll(c));
      await writeAll(c, enc.encode(got.toUpperCase()));
      c.close();
    })();
    const fwd = await Forwarder.start(near, [
      parseRemoteForward(`${NEAR4}:5000=unix:${dir}/svc.sock`),
      parseRemoteForward(`5001=unix:${dir}/nobody.sock`),
    ]);
    try {
      assert.deepEqual(fwd.forwards.map((f) => f.listening), [
        `tunnel:${NEAR4}:5000`,
        "tunnel:0.0.0.0:5001",
      ]);
      const c = await far.connect({ hostname: NEAR4, port: 5000 });
      await c.writeAll(enc.encode("quiet words"));
      await c.closeWrite();
      assert.equal(dec.decode(await readAll(c)), "QUIET WORDS");
      c.close();
      await serving;
      // Nothing listens on the target: the peer gets a reset, not a silent end of stream.
      const d = await far.connect({ hostname: NEAR4, port: 5001 });
      await assert.rejects(readAll(d), Deno.errors.ConnectionReset);
      d.close();
    } finally {
      await fwd.close();
      local.close();
    }
  });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("Forwarder: an unreachable destination closes the local connection", async () => {
  await withLoopbackPair(async ({ near }) => {
    // 10.10.0.1 is in no peer's AllowedIPs; the far tunnel has nothing on 10.9.0.1:4999.
    const fwd = await Forwarder.start(near, [
      parseLocalForward("tcp:127.0.0.1:0=10.10.0.1:80"),
      parseLocalForward(`tcp:127.0.0.1:0=${FAR4}:4999`),
    ]);
    try {
      for (const f of fwd.forwards) {
        const port = Number(f.listening.split(":").pop());
        const c = await Deno.connect({ hostname: "127.0.0.1", port });
        assert.equal((await readAll(c)).length, 0);
        c.close();
      }
    } finally {
      await fwd.close();
    }
  });
});

Deno.test("Forwarder: a non-loopback -L tcp: needs allowRemote; a failed start leaves nothing", async () => {
  const dir = await Deno.makeTempDir();
  await withLoopbackPair(async ({ near }) => {
    await assert.rejects(
      Forwarder.start(near, [
        parseLocalForward(`unix:${dir}/first.sock=${FAR4}:1`),
        parseLocalForward(`tcp:0.0.0.0:0=${FAR4}:1`),
      ]),
      (e: Error) => e instanceof ForwardError && /--allow-remote/.test(e.message),
    );
    // The forward opened before the failure was closed again.
    await assert.rejects(Deno.lstat(`${dir}/first.sock`), Deno.errors.NotFound);
    const fwd = await Forwarder.start(near, [parseLocalForward(`tcp:0.0.0.0:0=${FAR4}:1`)], {
      allowRemote: true,
    });
    await fwd.close();
    // -L systemd without passed sockets.
    await assert.rejects(
      Forwarder.start(near, [parseLocalForward(`systemd=${FAR4}:1`)]),
      /no sockets were passed/,
    );
  });
  await Deno.remove(dir, { recursive: true });
});
