// `wrapguard forward` end to end against wireguard-go: the wrapguard process runs in a
// namespace with no default route; kernel services run behind wireguard-go in the peer namespace;
// the local ends are Unix sockets that this test process opens directly.
import assert from "node:assert/strict";
import { randomBytes, sha256 } from "./_support/bytes.ts";
import { netnsTest, withTopology } from "./_support/netns.ts";
import { withRunWorld } from "./_support/run_world.ts";
import {
  exchange,
  HOST_ENV,
  logLines,
  spawnWrapguard,
  unixEcho,
  waitForLog,
  wrapguardArgv,
} from "./_support/forward_world.ts";

const tcpPeer = new URL("./_support/tcp_peer.py", import.meta.url).pathname;
const MiB = 1 << 20;

/** 20 threads in the peer namespace, each sending 1 MiB to ADDR:PORT and checking the echo. */
const CONCURRENT_CLIENTS = `
import hashlib, json, os, socket, sys, threading
addr, port, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ok = []
def one():
    data = os.urandom(size)
    s = socket.create_connection((addr, port), timeout=60)
    got = bytearray()
    def reader():
        while True:
            d = s.recv(65536)
            if not d:
                break
            got.extend(d)
    t = threading.Thread(target=reader); t.start()
    s.sendall(data); s.shutdown(socket.SHUT_WR); t.join(); s.close()
    ok.append(hashlib.sha256(got).digest() == hashlib.sha256(data).digest())
threads = [threading.Thread(target=one) for _ in range(n)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"ok": sum(ok), "of": n}), flush=True)
`;

netnsTest(
  "forward -L unix: and -R in one process: 50 MiB each way byte-exact, 20 concurrent, half-close",
  async (t) => {
    await withTopology(
      { hostNamespace: true },
      (topo) =>
        withRunWorld(topo, { dns: false }, async (w) => {
          const dir = topo.tmpDir;
          // Kernel services behind the peer: a threaded echo, and one that half-closes at once.
          const echo = topo.spawn(topo.peer, ["python3", tcpPeer, "echo", "10.77.0.1", "5001"]);
          await echo.waitForOutput(/listening/);
          const half = topo.spawn(topo.peer, [
            "python3",
            tcpPeer,
            "halfclose",
            "10.77.0.1",
            "5002",
          ]);
          await half.waitForOutput(/listening/);
          // The local service that -R delivers to.
          const localEcho = unixEcho(`${dir}/local-echo.sock`);

          const fwd = spawnWrapguard(w, "forward", [
            "-L",
            `unix:${dir}/echo.sock=10.77.0.1:5001`,
            "-L",
            `unix:${dir}/half.sock=10.77.0.1:5002`,
            "-R",
            `6001=unix:${dir}/local-echo.sock`,
          ]);
          try {
            const listening = await waitForLog(fwd, "forward listening", 3);
            assert.deepEqual(
              listening.map((l) => l.listening).sort(),
              [`unix:${dir}/echo.sock`, `unix:${dir}/half.sock`, "tunnel:0.0.0.0:6001"].sort(),
            );

            await t.step("the Unix sockets are mode 0600", async () => {
              for (const name of ["echo.sock", "half.sock"]) {
                const st = await Deno.lstat(`${dir}/${name}`);
                assert.ok(st.isSocket);
                assert.equal(st.mode! & 0o777, 0o600, `${name} mode ${st.mode!.toString(8)}`);
              }
            });

            await t.step("-L: 50 MiB to the kernel echo and back, byte-exact", async () => {
              const data = randomBytes(50 * MiB);
              const conn = await Deno.connect({ transport: "unix", path: `${dir}/echo.sock` });
              const back = await exchange(conn, data);
              assert.equal(back.length, data.length);
              assert.equal(await sha256(back), await sha256(data));
            });

            await t.step("-L: 20 concurrent connections, 1 MiB each, byte-exact", async () => {
              const results = await Promise.all(Array.from({ length: 20 }, async () => {
                const data = randomBytes(MiB);
                const conn = await Deno.connect({ transport: "unix", path: `${dir}/echo.sock` });
                const back = await exchange(conn, data);
                return (await sha256(back)) === (await sha256(data));
              }));
              assert.equal(results.filter(Boolean).length, 20);
            });

            await t.step(
              "-L: the peer's half-close arrives first, our direction still flows",
              async () => {
                const conn = await Deno.connect({ transport: "unix", path: `${dir}/half.sock` });
                assert.equal(await conn.read(new Uint8Array(16)), null);
                const data = randomBytes(4 * MiB);
                let off = 0;
                while (off < data.length) off += await conn.write(data.subarray(off));
                await conn.closeWrite();
                const r = await half.wait(30_000);
                conn.close();
                const lines = r.stdout.trim().split("\n");
                assert.equal(JSON.parse(lines[lines.length - 1]!).received, await sha256(data));
              },
            );

            await t.step(
              "-R: a kernel client sends 50 MiB to the local Unix echo and back",
              async () => {
                const r = await topo.run(
                  topo.peer,
                  ["python3", tcpPeer, "client", "10.77.0.2", "6001", String(50 * MiB)],
                  { timeoutMs: 120_000, check: true },
                );
                const res = JSON.parse(r.stdout.trim().split("\n").pop()!);
                assert.equal(res.receivedBytes, 50 * MiB);
                assert.equal(res.received, res.sent);
              },
            );

            await t.step("-R: 20 concurrent kernel clients, 1 MiB each", async () => {
              const r = await topo.run(
                topo.peer,
                ["python3", "-c", CONCURRENT_CLIENTS, "10.77.0.2", "6001", "20", String(MiB)],
                { timeoutMs: 120_000, check: true },
              );
              assert.deepEqual(JSON.parse(r.stdout.trim()), { ok: 20, of: 20 });
              assert.ok(localEcho.accepted() >= 21);
            });

            await t.step("SIGTERM: exit 0, the Unix sockets are removed", async () => {
              Deno.kill(fwd.pid, "SIGTERM");
              const r = await fwd.wait(10_000);
              assert.equal(r.code, 0, r.stderr);
              for (const name of ["echo.sock", "half.sock"]) {
                await assert.rejects(Deno.lstat(`${dir}/${name}`), Deno.errors.NotFound);
              }
              assert.ok(logLines(fwd).some((l) => l.msg === "stopping" && l.signal === "SIGTERM"));
            });
          } finally {
            await fwd.kill();
            await localEcho.close();
          }
        }),
    );
  },
  { requires: ["python3"], timeoutMs: 180_000 },
);

netnsTest(
  "forward -L systemd:NAME takes the listening socket passed as fd 3 (systemd-socket-activate)",
  async () => {
    await withTopology(
      { hostNamespace: true },
      (topo) =>
        withRunWorld(topo, { dns: false }, async (w) => {
          const dir = topo.tmpDir;
          const echo = topo.spawn(topo.peer, ["python3", tcpPeer, "echo", "10.77.0.1", "5001"]);
          await echo.waitForOutput(/listening/);
          const path = `${dir}/activated.sock`;
          // systemd-socket-activate passes only what -E names; Deno needs its cache directory.
          const pass = ["HOME", "DENO_DIR", "XDG_CACHE_HOME"].filter((v) => Deno.env.get(v));
          const activator = topo.spawn(w.host, [
            "systemd-socket-activate",
            "-l",
            path,
            "--fdname=waypipe",
            ...Object.entries(HOST_ENV).map(([k, v]) => `-E${k}=${v}`),
            ...pass.map((v) => `-E${v}`),
            ...wrapguardArgv([
              "forward",
              "--config",
              w.configPath,
              "-L",
              "systemd:waypipe=10.77.0.1:5001",
            ]),
          ]);
          await activator.waitForOutput(/Listening on/, { stream: "stderr" });
          // Nothing runs yet but the activator: the first connection starts wrapguard, and waits
          // in the socket's backlog until wrapguard takes the socket over.
          assert.equal(logLines(activator).length, 0);
          const data = randomBytes(4 * MiB);
          const first = await Deno.connect({ transport: "unix", path });
          const back = await exchange(first, data);
          assert.equal(await sha256(back), await sha256(data));
          const [line] = await waitForLog(activator, "forward listening");
          assert.match(String(line!.listening), /^systemd:waypipe \(fd 3, /);
          // It is a listener, not one connection: more connections, at once.
          const more = await Promise.all([1, 2, 3].map(async () => {
            const d = randomBytes(MiB);
            const c = await Deno.connect({ transport: "unix", path });
            return (await sha256(await exchange(c, d))) === (await sha256(d));
          }));
          assert.deepEqual(more, [true, true, true]);
          Deno.kill(activator.pid, "SIGTERM");
          const r = await activator.wait(10_000);
          assert.equal(r.code, 0, r.stderr);
          // The socket belongs to the service manager: wrapguard leaves its path alone.
          assert.ok((await Deno.lstat(path)).isSocket);
        }),
    );
  },
  { requires: ["python3", "systemd-socket-activate"], timeoutMs: 60_000 },
);
