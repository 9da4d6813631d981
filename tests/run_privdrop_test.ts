/**
 * The tunnel survives privilege drops and chroot (issue 11): a wrapped process that becomes
 * `nobody`, or chroots into an empty directory, or both, can no longer reach the broker's socket
 * by its path (a 0700 directory of the user who ran wrapguard), and still reaches the peer
 * through the inherited channel (preload/channel.c, PROTOCOL.md "The channel"). Another user's
 * process holds no channel and still cannot use the broker or read the secret; the channel's
 * helper is one per run, and ends with the program or with the run.
 */
import assert from "node:assert/strict";
import { netnsTest, run, sleep, withTopology } from "./_support/netns.ts";
import type { RunResult } from "./_support/proc.ts";
import { OURS4, PEER4, withRunWorld } from "./_support/run_world.ts";

const tcpPeer = new URL("./_support/tcp_peer.py", import.meta.url).pathname;

/** The channel's fd number (WG_CHANNEL_FD in preload/wrapguard.h). */
const CHANNEL_FD = 1021;

/** Drops as told, then connects to the peer's echo, and prints the echo and its uid. */
const DROP = `
import os, platform, socket, sys
import encodings.idna  # before chroot: the codec cannot be loaded inside it
mode, root = sys.argv[1], sys.argv[2]
if "cut" in mode:
    # Closes the channel behind the interposer's back (a raw close, as a program's own syscall
    # would): the control, which must lose the tunnel after setuid.
    import ctypes
    nr = {"x86_64": 3, "aarch64": 57}[platform.machine()]
    ctypes.CDLL(None, use_errno=True).syscall(nr, ${CHANNEL_FD})
if "chroot" in mode:
    os.chroot(root)
    os.chdir("/")
if "setuid" in mode:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
try:
    s = socket.create_connection(("${PEER4}", 5001), timeout=10)
    s.sendall(b"through the tunnel")
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        b = s.recv(100)
        if not b:
            break
        got += b
    print(got.decode(), os.getuid())
except OSError as e:
    print(type(e).__name__, e.errno, os.getuid())
`;

/** Pids of the channel helpers (comm `wrapguard-chan`) that serve the run of `socketDir`. */
function helpersOf(socketDir: string): number[] {
  const found: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      if (Deno.readTextFileSync(`/proc/${e.name}/comm`).trim() !== "wrapguard-chan") continue;
      const env = Deno.readTextFileSync(`/proc/${e.name}/environ`).split("\0");
      if (env.includes(`WRAPGUARD_SOCKET_DIR=${socketDir}`)) found.push(Number(e.name));
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

/** Waits up to `ms` for the run of `socketDir` to have no helper left; returns those left. */
async function helpersGone(socketDir: string, ms = 5000): Promise<number[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const left = helpersOf(socketDir);
    if (left.length === 0 || Date.now() > deadline) return left;
    await sleep(100);
  }
}

/** Runs `argv` as `uid` (not a wrapped process: no channel, none of the run's environment). */
function asUser(uid: number, argv: string[]): Promise<RunResult> {
  return run(null, [
    "setpriv",
    `--reuid=${uid}`,
    `--regid=${uid}`,
    "--clear-groups",
    "--",
    ...argv,
  ], { env: { PATH: "/usr/bin:/bin" } });
}

netnsTest("wrapguard run: after setuid or chroot the tunnel is still reached", async (t) => {
  await withTopology({ hostNamespace: true }, async (topo) => {
    await withRunWorld(topo, { dns: false }, async (w) => {
      const echo = topo.spawn(topo.peer, ["python3", tcpPeer, "echo", PEER4, "5001"]);
      await echo.waitForOutput(/listening/);
      const empty = `${topo.tmpDir}/empty-root`;
      await Deno.mkdir(empty, { mode: 0o755 });

      for (
        const [mode, uid] of [["setuid", 65534], ["chroot", 0], ["chroot+setuid", 65534]] as const
      ) {
        await t.step(`${mode}, then connect`, async () => {
          const r = await w.wrap(["python3", "-c", DROP, mode, empty]);
          assert.equal(r.code, 0, r.stderr);
          assert.equal(r.stdout.trim(), `through the tunnel ${uid}`, r.stderr);
        });
      }

      await t.step("through a shell and an exec'd shell script, still one channel", async () => {
        // `python3` here may itself be a shell script (a pyenv shim): exec'd images find the
        // channel by its number, not by anything a shell would have to pass on.
        const r = await w.wrap([
          "sh",
          "-c",
          `sh -c 'exec python3 -c "$0" setuid /' "$1"; echo "dir=$WRAPGUARD_SOCKET_DIR"; ` +
          `readlink /proc/$$/fd/${CHANNEL_FD}; ` +
          // Other tests' runs have helpers too, and may exit while this looks: only this run's
          // count, and a vanished one is not an error.
          "for p in $(pgrep -x wrapguard-chan); do tr '\\0' '\\n' 2>/dev/null </proc/$p/environ | " +
          'grep -qx "WRAPGUARD_SOCKET_DIR=$WRAPGUARD_SOCKET_DIR" && echo "helper $p"; done; true',
          "sh",
          DROP,
        ]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /^through the tunnel 65534$/m, r.stderr);
        assert.match(r.stdout, /^socket:\[\d+\]$/m);
        assert.equal(r.stdout.match(/^helper \d+$/gm)?.length, 1, r.stdout);
        const dir = r.stdout.match(/^dir=(.+)$/m)?.[1];
        assert.ok(dir, r.stdout);
        assert.deepEqual(await helpersGone(dir), [], "the helper outlived its run");
      });

      await t.step(
        "descendants adopt the channel by its recorded cookie; a wrong record means asking",
        async () => {
          // The record (`channel` beside the broker's socket) spares every exec the round trip
          // to the helper; when it does not match, the helper is asked as before, and the
          // tunnel is still reached after setuid.
          const r = await w.wrap([
            "sh",
            "-c",
            `python3 -c "$0" setuid /; printf x > "$WRAPGUARD_SOCKET_DIR/channel"; ` +
            `python3 -c "$0" setuid /`,
            DROP,
          ], { args: ["--log-level", "debug"] });
          assert.equal(r.code, 0, r.stderr);
          assert.equal(r.stdout.match(/^through the tunnel 65534$/gm)?.length, 2, r.stderr);
          const adopted = [...r.stderr.matchAll(/channel: fd \d+ adopted \((.+)\)/g)].map((m) =>
            m[1]
          );
          assert.ok(adopted.includes("its cookie is the one recorded"), r.stderr);
          assert.ok(adopted.includes("its helper answered"), r.stderr);
          const cut = adopted.indexOf("its helper answered");
          assert.ok(
            adopted.slice(0, cut).every((a) => a === "its cookie is the one recorded"),
            `nothing asked before the record was spoiled: ${adopted.join("; ")}`,
          );
        },
      );

      await t.step("a killed helper is noticed despite the record, and replaced", async () => {
        // The record only spares the question while the helper's end is open: once this run's
        // helper is gone, the next program hangs up on it, asks, and starts its own.
        const r = await w.wrap([
          "sh",
          "-c",
          "for p in $(pgrep -x wrapguard-chan); do tr '\\0' '\\n' 2>/dev/null </proc/$p/environ | " +
          'grep -qx "WRAPGUARD_SOCKET_DIR=$WRAPGUARD_SOCKET_DIR" && kill $p; done; sleep 0.2; ' +
          'python3 -c "$0" setuid /',
          DROP,
        ], { args: ["--log-level", "debug"] });
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /^through the tunnel 65534$/m, r.stderr);
        assert.match(r.stderr, /channel: the inherited fd \d+ does not answer for this run/);
      });

      await t.step(
        "a foreign socket pair at the channel's number is not taken for it",
        async () => {
          // What a channel inherited from another run looks like: right type, but no helper of
          // this run answers (here nobody reads the other end). The child gives up asking after a
          // bounded wait, starts its own helper, and still reaches the peer after setuid.
          const r = await w.wrap([
            "python3",
            "-c",
            `
import os, socket, subprocess, sys, time
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
os.dup2(a.fileno(), ${CHANNEL_FD}, inheritable=True)
t = time.monotonic()
p = subprocess.run([sys.executable, "-c", sys.argv[1], "setuid", "/"], pass_fds=(${CHANNEL_FD},),
                   capture_output=True, text=True, timeout=20)
print(p.stdout.strip(), "in", round(time.monotonic() - t), "s")
print(p.stderr, file=sys.stderr)
`,
            DROP,
          ]);
          assert.equal(r.code, 0, r.stderr);
          const m = r.stdout.match(/^through the tunnel 65534 in (\d+) s$/m);
          assert.ok(m, `${r.stdout}${r.stderr}`);
          assert.ok(Number(m[1]) < 8, r.stdout);
        },
      );

      await t.step(
        "the control: with the channel cut, setuid loses the tunnel",
        async () => {
          const r = await w.wrap(["python3", "-c", DROP, "cut+setuid", empty]);
          assert.equal(r.code, 0, r.stderr);
          assert.match(r.stdout, /^OSError 101 65534$/m, `${r.stdout}${r.stderr}`);
          assert.match(r.stderr, /cannot reach the tunnel broker .*Permission denied/);
        },
      );

      await t.step("a program that dies by SIGKILL leaves no helper", async () => {
        const r = await w.wrap([
          "sh",
          "-c",
          'echo "dir=$WRAPGUARD_SOCKET_DIR"; kill -KILL $$',
        ]);
        assert.equal(r.code, 137, r.stderr);
        const dir = r.stdout.match(/^dir=(.+)$/m)?.[1];
        assert.ok(dir, r.stdout);
        assert.deepEqual(await helpersGone(dir), [], "the helper outlived its program");
      });

      await t.step("a child that outlives the run does not keep the helper", async () => {
        // The background sleep holds the channel; the run ends with the shell, the broker's
        // directory goes, and the helper sees it.
        const r = await w.wrap([
          "sh",
          "-c",
          'sleep 60 </dev/null >/dev/null 2>&1 & echo "dir=$WRAPGUARD_SOCKET_DIR bg=$!"',
        ]);
        const bg = Number(r.stdout.match(/bg=(\d+)/)?.[1]);
        try {
          assert.equal(r.code, 0, r.stderr);
          const dir = r.stdout.match(/dir=(\S+)/)?.[1];
          assert.ok(dir, r.stdout);
          assert.ok(
            Deno.readLinkSync(`/proc/${bg}/fd/${CHANNEL_FD}`).startsWith("socket:"),
            "the background child holds the channel",
          );
          assert.deepEqual(await helpersGone(dir), [], "the helper outlived its run");
        } finally {
          if (bg > 0) await run(null, ["kill", "-KILL", String(bg)]);
        }
      });

      await t.step("another user can neither use the broker nor read the secret", async () => {
        // A wrapped program that stays, as root, and a child of it that became nobody.
        const p = w.spawnWrapped([
          "python3",
          "-c",
          `
import os, sys, time
print("dir", os.environ["WRAPGUARD_SOCKET_DIR"], flush=True)
child = os.fork()
if child == 0:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
    time.sleep(60)
    os._exit(0)
print("pids", os.getpid(), child, flush=True)
sys.stdin.read()
os.kill(child, 9)
`,
        ], { stdin: "piped" });
        try {
          await p.waitForOutput(/^pids \d+ \d+$/m, { timeoutMs: 15_000 });
          const out = p.stdoutText();
          const dir = out.match(/^dir (.+)$/m)![1]!;
          const [, root, dropped] = out.match(/^pids (\d+) (\d+)$/m)!.map(Number) as [
            number,
            number,
            number,
          ];
          const helpers = helpersOf(dir);
          assert.equal(helpers.length, 1, `helpers of ${dir}: ${helpers}`);
          // The broker's socket: the 0700 directory keeps another user out.
          const connect = `import socket; s = socket.socket(socket.AF_UNIX)
try:
    s.connect("${dir}/broker.sock"); print("connected")
except OSError as e:
    print(type(e).__name__)`;
          for (const uid of [12345, 65534]) {
            const c = await asUser(uid, ["/usr/bin/python3", "-c", connect]);
            assert.equal(c.stdout.trim(), "PermissionError", `uid ${uid}: ${c.stdout}${c.stderr}`);
          }
          // The secret: in the environment of the wrapped processes and of the helper, which
          // another user cannot read — nor can nobody read that of the process that became
          // nobody (a process that changed its credentials is not dumpable).
          for (const [uid, pid] of [[12345, root], [12345, helpers[0]!], [65534, dropped]]) {
            const c = await asUser(uid!, ["cat", `/proc/${pid}/environ`]);
            assert.notEqual(c.code, 0, `uid ${uid} read /proc/${pid}/environ`);
            assert.match(c.stderr, /Permission denied/);
            assert.doesNotMatch(c.stdout, /WRAPGUARD_SECRET/);
          }
          // The control: root reads it there (the secret is really in these environments).
          const env = Deno.readTextFileSync(`/proc/${dropped}/environ`);
          assert.match(env, /WRAPGUARD_SECRET=[0-9a-f]{64}/);
        } finally {
          await p.closeStdin();
          await p.wait(15_000).catch(() => p.kill());
        }
      });
    });
  });
}, { requires: ["python3", "setpriv"], timeoutMs: 180_000 });

/** Polls `url` from the peer namespace until it answers; returns the body. */
async function fetchFromPeer(ns: string, url: string, ms = 20_000): Promise<string> {
  const deadline = Date.now() + ms;
  for (;;) {
    const r = await run(ns, ["curl", "-sS", "--max-time", "3", url]);
    if (r.code === 0) return r.stdout;
    if (Date.now() > deadline) throw new Error(`${url} never answered: ${r.stderr}`);
    await sleep(200);
  }
}

/** A directory every user can read (for servers whose workers are nobody), removed by `fn`'s end. */
async function withPublicDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "wgt-privdrop-" });
  try {
    await Deno.chmod(dir, 0o755);
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

netnsTest("wrapguard run: servers that drop privileges serve through the tunnel", async (t) => {
  await withTopology({ hostNamespace: true }, async (topo) => {
    await withRunWorld(topo, { dns: false }, async (w) => {
      await withPublicDir(async (dir) => {
        const www = `${dir}/www`;
        await Deno.mkdir(www, { mode: 0o755 });
        const page = `served by a worker that is nobody ${crypto.randomUUID()}\n`;
        await Deno.writeTextFile(`${www}/index.html`, page, { mode: 0o644 });

        await t.step("nginx as root with `user nobody`: page and access log", async () => {
          const conf = `${dir}/nginx.conf`;
          await Deno.writeTextFile(
            conf,
            `daemon off;
master_process on;
worker_processes 2;
user nobody nogroup;
pid ${dir}/nginx.pid;
error_log stderr info;
events { worker_connections 64; }
http {
  access_log ${dir}/access.log;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  server {
    listen ${OURS4}:8080;
    root ${www};
  }
}
`,
          );
          const nginx = w.spawnWrapped(["/usr/sbin/nginx", "-e", "stderr", "-p", dir, "-c", conf]);
          try {
            const body = await fetchFromPeer(topo.peer, `http://${OURS4}:8080/index.html`);
            assert.equal(body, page, nginx.stderrText());
            const master = Number((await Deno.readTextFile(`${dir}/nginx.pid`)).trim());
            const workers = await run(null, ["ps", "-o", "user=", "--ppid", String(master)]);
            assert.match(workers.stdout, /^nobody$/m, "the workers are nobody");
            assert.doesNotMatch(workers.stdout, /^root$/m);
            const log = await Deno.readTextFile(`${dir}/access.log`);
            assert.match(
              log,
              new RegExp(`^${PEER4.replaceAll(".", "\\.")} - - .*"GET /index.html`, "m"),
              log,
            );
            assert.doesNotMatch(nginx.stderrText(), /cannot reach the tunnel broker/);
          } finally {
            await nginx.kill();
          }
        });

        await t.step("python3 -m http.server inbound", async () => {
          const py = w.spawnWrapped([
            "python3",
            "-m",
            "http.server",
            "--directory",
            www,
            "8081",
          ]);
          try {
            const body = await fetchFromPeer(topo.peer, `http://${OURS4}:8081/index.html`);
            assert.equal(body, page, py.stderrText());
            await py.waitForOutput(
              new RegExp(`^${PEER4.replaceAll(".", "\\.")} - - .*GET /index.html`, "m"),
              { stream: "stderr" },
            );
          } finally {
            await py.kill();
          }
        });

        await t.step("sshd with privilege separation: ssh runs a command", async () => {
          await Deno.mkdir("/run/sshd", { recursive: true, mode: 0o755 });
          const keys = `${dir}/keys`;
          await Deno.mkdir(keys, { mode: 0o700 });
          for (const name of ["host", "client"]) {
            await run(null, [
              "ssh-keygen",
              "-q",
              "-t",
              "ed25519",
              "-N",
              "",
              "-f",
              `${keys}/${name}`,
            ], { check: true });
          }
          await Deno.copyFile(`${keys}/client.pub`, `${keys}/authorized_keys`);
          const conf = `${dir}/sshd_config`;
          await Deno.writeTextFile(
            conf,
            `Port 2222
ListenAddress ${OURS4}
HostKey ${keys}/host
PidFile ${dir}/sshd.pid
AuthorizedKeysFile ${keys}/authorized_keys
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
LogLevel VERBOSE
`,
          );
          const sshd = w.spawnWrapped(["/usr/sbin/sshd", "-D", "-e", "-f", conf]);
          try {
            await sshd.waitForOutput(/Server listening on/, { timeoutMs: 15_000 });
            const ssh = await run(topo.peer, [
              "ssh",
              "-i",
              `${keys}/client`,
              "-o",
              "StrictHostKeyChecking=no",
              "-o",
              "UserKnownHostsFile=/dev/null",
              "-o",
              "BatchMode=yes",
              "-o",
              "ConnectTimeout=10",
              "-p",
              "2222",
              `root@${OURS4}`,
              "echo ok-through-the-tunnel",
            ], { timeoutMs: 30_000 });
            assert.equal(ssh.code, 0, `${ssh.stderr}\n--- sshd\n${sshd.stderrText()}`);
            assert.equal(ssh.stdout.trim(), "ok-through-the-tunnel");
            assert.match(sshd.stderrText(), /Accepted publickey for root/);
          } finally {
            await sshd.kill();
          }
        });
      });
    });
  });
}, { requires: ["python3", "curl", "nginx", "sshd", "ssh", "ssh-keygen"], timeoutMs: 180_000 });
