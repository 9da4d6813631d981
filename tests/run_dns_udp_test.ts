/**
 * `wrapguard run` with UDP and DNS (issue 4, must-shows 4 and 7), the host process in a routeless
 * namespace whose resolv.conf names a decoy nameserver (the peer's veth address, where nothing
 * answers DNS): every answer below came from dnsmasq through the tunnel.
 */
import assert from "node:assert/strict";
import { netnsTest, run, type Spawned, waitForPort, withTopology } from "./_support/netns.ts";
import {
  OURS4,
  PEER4,
  PEER6,
  type RunWorld,
  SVC_NAME,
  withRunWorld,
} from "./_support/run_world.ts";

const UDP_ECHO = new URL("./_support/udp_echo.py", import.meta.url).pathname;

/** The processes whose parent is `pid`. */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(f[1]) === pid) out.push(Number(e.name));
    } catch {
      // gone
    }
  }
  return out;
}

/** The environment of a process, as a map. */
function environOf(pid: number): Record<string, string> {
  const raw = Deno.readTextFileSync(`/proc/${pid}/environ`);
  const env: Record<string, string> = {};
  for (const kv of raw.split("\0")) {
    const i = kv.indexOf("=");
    if (i > 0) env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return env;
}

async function waitFor<T>(what: string, f: () => T | undefined, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The wrapped program under a running `wrapguard run`: among wrapguard's descendants (the
 * sandbox's janitor `sh` is a child too; the program is the supervisor's child).
 */
async function wrappedChild(wrapper: Spawned, comm = "sleep"): Promise<number> {
  return await waitFor("the wrapped program", () => {
    const all: number[] = [];
    for (let level = childrenOf(wrapper.pid); level.length > 0; level = level.flatMap(childrenOf)) {
      all.push(...level);
    }
    const kids = all.filter((k) => {
      try {
        return Deno.readTextFileSync(`/proc/${k}/comm`).trim() === comm;
      } catch {
        return false;
      }
    });
    return kids.length === 1 ? kids[0] : undefined;
  });
}

netnsTest("wrapguard run: UDP both ways and name lookups through the tunnel", async (t) => {
  await withTopology({ hostNamespace: true }, async (topo) => {
    await withRunWorld(topo, {}, async (w: RunWorld) => {
      topo.spawn(topo.peer, ["python3", UDP_ECHO, "server", PEER4, "9999"]);
      topo.spawn(topo.peer, ["python3", UDP_ECHO, "server", PEER6, "9999"]);
      await waitForPort(topo.peer, 9999, "udp");

      await t.step(
        "nc -u from the wrapped side, IPv4 and IPv6: a datagram and its echo",
        async () => {
          const r = await w.wrap(["nc", "-u", "-w", "2", PEER4, "9999"], {
            stdin: "ping over udp\n",
          });
          assert.equal(r.stdout, "ping over udp\n", r.stderr);
          const r6 = await w.wrap(["nc", "-6", "-u", "-w", "2", PEER6, "9999"], {
            stdin: "v6 ping\n",
          });
          assert.equal(r6.stdout, "v6 ping\n", r6.stderr);
        },
      );

      await t.step("nc -u listening on the tunnel address gets the peer's datagram", async () => {
        const listener = w.spawnWrapped(["nc", "-u", "-l", OURS4, "9998"]);
        try {
          const deadline = Date.now() + 15_000;
          while (!listener.stdoutText().includes("hello from the peer")) {
            if (listener.exited || Date.now() > deadline) break;
            await run(topo.peer, ["nc", "-u", "-w", "1", OURS4, "9998"], {
              stdin: "hello from the peer\n",
            });
          }
          assert.match(listener.stdoutText(), /hello from the peer/, listener.stderrText());
        } finally {
          await listener.kill("SIGTERM");
        }
      });

      await t.step(
        "getent hosts and ahosts are answered by dnsmasq through the tunnel",
        async () => {
          const before = w.dns!.queries().length;
          const hosts = await w.wrap(["getent", "hosts", SVC_NAME]);
          assert.equal(hosts.code, 0, hosts.stderr);
          // gethostbyname2(AF_INET6) first, as getent does.
          assert.match(hosts.stdout, new RegExp(`^${PEER6}\\s+${SVC_NAME}$`, "m"));
          const v4 = await w.wrap(["getent", "ahostsv4", SVC_NAME]);
          assert.equal(v4.code, 0, v4.stderr);
          assert.match(
            v4.stdout,
            new RegExp(`^${PEER4.replaceAll(".", "\\.")}\\s+STREAM ${SVC_NAME}$`, "m"),
          );
          const v6 = await w.wrap(["getent", "ahostsv6", SVC_NAME]);
          assert.equal(v6.code, 0, v6.stderr);
          assert.match(v6.stdout, new RegExp(`^${PEER6}\\s+STREAM`, "m"));
          // The search domain ("DNS = 10.77.0.1, wg.test").
          const short = await w.wrap(["getent", "hosts", "svc"]);
          assert.match(short.stdout, /svc\.wg\.test/, short.stderr);
          const missing = await w.wrap(["getent", "hosts", "nope.wg.test"]);
          assert.equal(missing.code, 2, "getent: key not found");
          const asked = w.dns!.queries().slice(before);
          assert.ok(asked.length > 0 && asked.every((q) => q.from === OURS4), w.dns!.log());
        },
      );

      await t.step(
        "dig, with its own resolver, is answered by dnsmasq through the tunnel",
        async () => {
          const before = w.dns!.queries().length;
          // dig sends to resolv.conf's nameserver (the decoy): the interposer redirects it.
          const a = await w.wrap(["dig", "+short", "+tries=1", "+time=3", SVC_NAME, "A"]);
          assert.equal(a.code, 0, a.stderr);
          assert.equal(a.stdout.trim(), PEER4);
          const tcp = await w.wrap([
            "dig",
            "+tcp",
            "+short",
            "+tries=1",
            "+time=3",
            SVC_NAME,
            "AAAA",
          ]);
          assert.equal(tcp.code, 0, tcp.stderr);
          assert.equal(tcp.stdout.trim(), PEER6);
          // The full output names the server dig asked, as it believes it asked it.
          const full = await w.wrap(["dig", "+tries=1", "+time=3", SVC_NAME]);
          assert.match(
            full.stdout,
            new RegExp(`SERVER: ${w.decoyNameserver.replaceAll(".", "\\.")}#53`),
          );
          // @server explicitly.
          const at = await w.wrap(["dig", "+short", "+tries=1", "+time=3", `@${PEER4}`, SVC_NAME]);
          assert.equal(at.stdout.trim(), PEER4, at.stderr);
          const asked = w.dns!.queries().slice(before);
          assert.ok(asked.length >= 4 && asked.every((q) => q.from === OURS4), w.dns!.log());
          // Unwrapped, dig reaches only the decoy, which does not answer.
          const bare = await run(w.host, ["dig", "+short", "+tries=1", "+time=1", SVC_NAME]);
          assert.notEqual(bare.code, 0);
        },
      );

      await t.step(
        "res_query and res_search (libc's resolver API) go through the tunnel",
        async () => {
          const r = await w.wrap([
            "python3",
            "-c",
            `
import ctypes
libc = ctypes.CDLL(None)
buf = ctypes.create_string_buffer(512)
n = libc.res_query(b"${SVC_NAME}", 1, 1, buf, 512)
print(n > 0 and bytes([10, 77, 0, 1]) in buf.raw[:n])
n = libc.res_search(b"svc", 1, 28, buf, 512)
print(n > 0 and bytes.fromhex("fd770000000000000000000000000001") in buf.raw[:n])
print(libc.res_query(b"nope.wg.test", 1, 1, buf, 512))
`,
          ]);
          assert.equal(r.code, 0, r.stderr);
          assert.equal(r.stdout, "True\nTrue\n-1\n");
        },
      );
    });
  });
}, { requires: ["nc", "python3", "dnsmasq", "dig", "getent"], timeoutMs: 90_000 });

netnsTest(
  "wrapguard run: another local user can neither reach the broker nor use the tunnel",
  async () => {
    await withTopology({ hostNamespace: true }, async (topo) => {
      await withRunWorld(topo, { dns: false }, async (w) => {
        await Deno.writeTextFile(`${topo.tmpDir}/index.html`, "tunnel content\n");
        await Deno.chmod(topo.tmpDir, 0o755);
        topo.spawn(topo.peer, [
          "python3",
          "-m",
          "http.server",
          "--bind",
          PEER4,
          "--directory",
          topo.tmpDir,
          "8080",
        ]);
        await waitForPort(topo.peer, 8080);
        const wrapper = w.spawnWrapped(["sleep", "60"]);
        try {
          const child = await wrappedChild(wrapper);
          const env = await waitFor("the broker's variables", () => {
            const e = environOf(child);
            return e.WRAPGUARD_SOCKET_DIR !== undefined ? e : undefined;
          });
          const dir = env.WRAPGUARD_SOCKET_DIR!;
          const st = await Deno.stat(dir);
          assert.equal(st.mode! & 0o777, 0o700);
          // The owner itself gets through (the control), with the secret.
          const own = await run(w.host, [
            "curl",
            "-sS",
            "--max-time",
            "10",
            `http://${PEER4}:8080/index.html`,
          ], { env: { ...env, WRAPGUARD_HELLO: "0" } });
          assert.equal(own.code, 0, own.stderr);
          assert.equal(own.stdout, "tunnel content\n");

          const asNobody = (argv: string[], extra: Record<string, string> = {}) =>
            run(
              w.host,
              ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", ...argv],
              {
                env: extra,
              },
            );
          // The socket is in a directory nobody may enter.
          const sock = await asNobody([
            "socat",
            "-u",
            "/dev/null",
            `UNIX-CONNECT:${dir}/broker.sock`,
          ]);
          assert.notEqual(sock.code, 0);
          assert.match(sock.stderr, /Permission denied/);
          // The secret is in the program's environment, which only its user (and root) can read.
          const environ = await asNobody(["cat", `/proc/${child}/environ`]);
          assert.notEqual(environ.code, 0);
          assert.match(environ.stderr, /Permission denied/);
          // Even handed the whole environment, secret included, nobody's curl cannot use the tunnel.
          const curl = await asNobody(
            ["curl", "-sS", "--max-time", "5", `http://${PEER4}:8080/index.html`],
            { ...env, WRAPGUARD_HELLO: "0" },
          );
          assert.notEqual(curl.code, 0);
          assert.doesNotMatch(curl.stdout, /tunnel content/);
          // And no TCP port is listening for the broker in the namespace.
          const ss = await run(w.host, ["ss", "-Hltnp"]);
          assert.doesNotMatch(ss.stdout, /deno/, ss.stdout);
        } finally {
          await wrapper.kill("SIGTERM");
        }
      });
    });
  },
  { requires: ["setpriv", "socat", "curl", "python3", "ss"], timeoutMs: 60_000 },
);
