/**
 * `wrapguard run` as a process (issue 4, "Launching" and "The process"): refusals before anything
 * starts, exit status, signals passed on, the terminal left to the program, an existing LD_PRELOAD
 * kept, the private directory removed however the program ends, and the interposer's HELLO
 * required. The tunnel here has a peer on 127.0.0.1 that is never used: nothing is sent anywhere.
 */
import assert from "node:assert/strict";
import { liveGroupMembers, run, sleep, spawn, type Spawned, which } from "./_support/netns.ts";
import {
  childEnv,
  inspectExecutable,
  inspectTarget,
  LaunchRefused,
  resolveCommand,
  sweepStaleRunDirs,
} from "../core/host/launch.ts";
import { encodeKey, generatePrivateKey, publicKeyOf } from "../core/wireguard/keys.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const FLAGS = Deno.readTextFileSync(`${ROOT}cli/permissions.flags`).split(/\s+/).filter((f) => f);
const HAVE_GCC = which("gcc") !== undefined;
const IS_ROOT = Deno.uid() === 0;

async function makeConfig(dir: string): Promise<string> {
  const path = `${dir}/local.conf`;
  await Deno.writeTextFile(
    path,
    `[Interface]\nPrivateKey = ${encodeKey(generatePrivateKey())}\nAddress = 10.99.0.2/32\n\n` +
      `[Peer]\nPublicKey = ${encodeKey(publicKeyOf(generatePrivateKey()))}\n` +
      `Endpoint = 127.0.0.1:9\nAllowedIPs = 10.99.0.0/24\n`,
    { mode: 0o600 },
  );
  return path;
}

function wrapguardArgv(args: string[]): string[] {
  return [Deno.execPath(), "run", ...FLAGS, `${ROOT}cli/main.ts`, ...args];
}

/** A world of one temporary directory: a config, and TMPDIR for the runs. */
async function withScratch(fn: (s: { dir: string; tmp: string; config: string }) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "wg-run-process-" });
  try {
    const tmp = `${dir}/tmp`;
    await Deno.mkdir(tmp);
    await fn({ dir, tmp, config: await makeConfig(dir) });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function envFor(tmp: string, extra: Record<string, string> = {}): Record<string, string> {
  return { TMPDIR: tmp, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1", ...extra };
}

function entries(dir: string): string[] {
  return Array.from(Deno.readDirSync(dir), (e) => e.name).sort();
}

/**
 * The descendants of `pid` whose command name is `comm` (the janitor is a child too; the program
 * is the supervisor's child, a grandchild of wrapguard).
 */
function childrenNamed(pid: number, comm: string): number[] {
  const all: number[] = [];
  for (let level = childrenOf(pid); level.length > 0; level = level.flatMap(childrenOf)) {
    all.push(...level);
  }
  return all.filter((k) => {
    try {
      return Deno.readTextFileSync(`/proc/${k}/comm`).trim() === comm;
    } catch {
      return false;
    }
  });
}

/** Waits until `pid` has a descendant named `comm` (a `sh -c "…; exec sleep"` takes a moment). */
async function waitForChildNamed(pid: number, comm: string): Promise<number[]> {
  for (let i = 0; i < 200; i++) {
    const found = childrenNamed(pid, comm);
    if (found.length > 0) return found;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no child named ${comm} of ${pid}`);
}

async function waitUntilEmpty(dir: string): Promise<void> {
  for (let i = 0; i < 200 && entries(dir).length > 0; i++) {
    await new Promise((r) => setTimeout(r, 25));
  }
}

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

/** Runs argv[1…] with seccomp(2) failing with ENOSYS (its own filter, no_new_privs first). */
const NO_SECCOMP = `
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_seccomp, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog p = {.len = 4, .filter = f};
  if (argc < 2 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
      prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &p) != 0) return 99;
  execvp(argv[1], argv + 1);
  return 98;
}
`;

async function compile(source: string, out: string, flags: string[]): Promise<void> {
  const r = await run(null, ["gcc", ...flags, "-x", "c", "-o", out, "-"], { stdin: source });
  assert.equal(r.code, 0, r.stderr);
}

Deno.test("launch: resolving and inspecting the program before it runs", async (t) => {
  await t.step("PATH lookup as execvp", () => {
    assert.equal(resolveCommand("sh", "/nonexistent:/usr/bin:/bin"), "/usr/bin/sh");
    assert.throws(() => resolveCommand("no-such-command-here", "/usr/bin"), LaunchRefused);
    const plain = Deno.makeTempFileSync();
    try {
      assert.throws(
        () => resolveCommand(plain),
        (e) => e instanceof LaunchRefused && e.reason === "not-executable",
      );
    } finally {
      Deno.removeSync(plain);
    }
  });
  await t.step("ELF headers: dynamic programs have an interpreter", () => {
    const sh = inspectExecutable("/bin/sh");
    assert.equal(sh.kind, "elf");
    if (sh.kind === "elf") {
      assert.equal(sh.dynamic, true);
      assert.equal(sh.bits, 64);
      assert.match(sh.interpreter ?? "", /ld-linux/);
    }
    assert.deepEqual(inspectTarget("/bin/sh"), {
      chain: ["/bin/sh"],
      path: "interposer",
      why: undefined,
    });
    assert.equal(sh.kind === "elf" && sh.go, false);
  });
  await t.step("#! scripts are judged by their interpreter, through env", async () => {
    await withScratch(async ({ dir }) => {
      const script = `${dir}/script`;
      await Deno.writeTextFile(script, "#!/usr/bin/env -S sh -e\necho hi\n", { mode: 0o755 });
      assert.deepEqual(inspectExecutable(script), {
        kind: "script",
        interpreter: "/usr/bin/env",
        arg: "-S sh -e",
      });
      const { chain, path } = inspectTarget(script, Deno.build.arch, "/usr/bin:/bin");
      assert.equal(path, "interposer");
      assert.equal(chain[0], script);
      assert.equal(chain.at(-1), "/usr/bin/sh");
    });
  });
  await t.step("an existing LD_PRELOAD is kept, an outer run's variables are not", () => {
    const env = childEnv(
      { LD_PRELOAD: "/opt/other.so", WRAPGUARD_SECRET: "stale", WRAPGUARD_DEBUG: "1", HOME: "/h" },
      { WRAPGUARD_SOCKET_DIR: "/tmp/x", WRAPGUARD_ROUTES: "10.0.0.0/8" },
      "/tmp/x/libwrapguard.so",
    );
    assert.equal(env.LD_PRELOAD, "/opt/other.so:/tmp/x/libwrapguard.so");
    assert.equal(env.WRAPGUARD_SECRET, undefined);
    assert.equal(env.WRAPGUARD_DEBUG, "1");
    assert.equal(env.HOME, "/h");
    assert.equal(childEnv({}, {}, "/l.so").LD_PRELOAD, "/l.so");
  });
  await t.step("stale run directories (old, nobody listening) are swept", async () => {
    await withScratch(async ({ tmp }) => {
      const uid = Deno.statSync(tmp).uid!;
      const old = new Date(Date.now() - 60_000);
      for (const name of ["wrapguard-run-1-dead", "wrapguard-run-2-live", "wrapguard-run-3-new"]) {
        await Deno.mkdir(`${tmp}/${name}`);
      }
      await Deno.mkdir(`${tmp}/unrelated`);
      const listener = Deno.listen({
        transport: "unix",
        path: `${tmp}/wrapguard-run-2-live/broker.sock`,
      });
      try {
        for (const name of ["wrapguard-run-1-dead", "wrapguard-run-2-live", "unrelated"]) {
          await Deno.utime(`${tmp}/${name}`, old, old);
        }
        const removed = await sweepStaleRunDirs(tmp, uid);
        assert.deepEqual(removed, [`${tmp}/wrapguard-run-1-dead`]);
        assert.deepEqual(entries(tmp), [
          "unrelated",
          "wrapguard-run-2-live",
          "wrapguard-run-3-new",
        ]);
        // Someone else's: left alone.
        assert.deepEqual(await sweepStaleRunDirs(tmp, uid + 1), []);
      } finally {
        listener.close();
      }
    });
  });
});

Deno.test("wrapguard run: usage errors and refused programs", async (t) => {
  await withScratch(async ({ dir, tmp, config }) => {
    const wg = (args: string[]) =>
      run(null, wrapguardArgv(args), { env: envFor(tmp), timeoutMs: 20_000 });
    await t.step("usage", async () => {
      const help = await wg(["run", "--help"]);
      assert.equal(help.code, 0);
      assert.match(help.stdout, /Usage: wrapguard run --config FILE/);
      assert.equal((await wg(["run", "--", "true"])).code, 2);
      assert.equal((await wg(["run", "--config", config])).code, 2);
      const bad = await wg(["run", "--config", config, "--log-level", "loud", "--", "true"]);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /--log-level/);
      const noConfig = await wg(["run", "--config", `${dir}/missing.conf`, "--", "true"]);
      assert.equal(noConfig.code, 1);
      assert.match(noConfig.stderr, /missing\.conf/);
    });
    await t.step("a program that is not there: 127", async () => {
      const r = await wg(["run", "--config", config, "--", "no-such-program-anywhere"]);
      assert.equal(r.code, 127);
      assert.match(r.stderr, /command not found/);
    });
    await t.step("setuid: refused with a pointer to forward/proxy", async () => {
      const suid = `${dir}/suid-true`;
      await Deno.copyFile("/bin/true", suid);
      await Deno.chmod(suid, 0o4755);
      const r = await wg(["run", "--config", config, "--", suid]);
      assert.equal(r.code, 126);
      assert.match(r.stderr, /is setuid/);
      assert.match(r.stderr, /wrapguard forward/);
    });
    if (which("wireguard-go") !== undefined) {
      await t.step(
        "a Go program (its own system calls): the supervisor's path, it runs",
        async () => {
          const go = which("wireguard-go")!;
          const info = inspectExecutable(go);
          assert.ok(info.kind === "elf" && info.go);
          assert.deepEqual(inspectTarget(go).why, { file: go, reason: "go" });
          const r = await wg(["run", "--config", config, "--", go, "--version"]);
          assert.equal(r.code, 0, r.stderr);
          assert.match(r.stdout, /wireguard-go/);
        },
      );
    }
    if (HAVE_GCC) {
      await t.step(
        "statically linked, directly or as a script's interpreter: the supervisor's path",
        async () => {
          const stat = `${dir}/static`;
          await compile("int main(int c, char **v) { return c == 2 ? 7 : 3; }", stat, ["-static"]);
          assert.deepEqual(inspectTarget(stat).why, { file: stat, reason: "static" });
          const r = await wg(["run", "--config", config, "--", stat]);
          assert.equal(r.code, 3, r.stderr);
          const script = `${dir}/via-static`;
          await Deno.writeTextFile(script, `#!${stat}\n`, { mode: 0o755 });
          assert.equal(inspectTarget(script).path, "supervisor");
          const s = await wg(["run", "--config", config, "--", script]);
          assert.equal(s.code, 7, s.stderr);
          // Both run directories were removed at the end.
          assert.deepEqual(entries(tmp), []);
        },
      );
      await t.step(
        "a kernel without seccomp user notification: nothing runs, 126 with the reason",
        async () => {
          // A launcher whose own filter makes seccomp(2) fail with ENOSYS, as an old kernel would.
          const noSeccomp = `${dir}/no-seccomp`;
          await compile(NO_SECCOMP, noSeccomp, []);
          const marker = `${dir}/ran`;
          const r = await run(null, [
            noSeccomp,
            ...wrapguardArgv(["run", "--config", config, "--", "sh", "-c", `touch ${marker}`]),
          ], { env: envFor(tmp), timeoutMs: 20_000 });
          assert.equal(r.code, 126, r.stderr);
          assert.match(r.stderr, /this kernel cannot supervise programs/);
          assert.match(r.stderr, /the supervisor could not start sh/);
          assert.equal(await Deno.stat(marker).then(() => true, () => false), false);
        },
      );
    }
  });
});

Deno.test("wrapguard run: signals reach the program, its status comes back, nothing is left", async (t) => {
  await withScratch(async ({ tmp, config }) => {
    const start = (cmd: string[], extra: Record<string, string> = {}, stdin?: "piped") =>
      spawn(null, wrapguardArgv(["run", "--config", config, "--", ...cmd]), {
        env: envFor(tmp, extra),
        stdin,
      });
    const trapper = (sig: string, code: number) => [
      "sh",
      "-c",
      `trap 'echo got-${sig}; exit ${code}' ${sig}; echo ready; while :; do sleep 0.05; done`,
    ];

    for (const [sig, code] of [["TERM", 41], ["INT", 42], ["HUP", 43]] as const) {
      await t.step(
        `SIG${sig} to wrapguard is passed on; the program's exit code comes back`,
        async () => {
          const p = start(trapper(sig, code));
          try {
            await p.waitForOutput("ready", { timeoutMs: 15_000 });
            // While it runs: one private directory with the library, the supervisor, the
            // broker's socket and the channel's record (preload/channel.c).
            const dirs = entries(tmp);
            assert.equal(dirs.length, 1);
            assert.match(dirs[0]!, new RegExp(`^wrapguard-run-${p.pid}-`));
            const st = await Deno.stat(`${tmp}/${dirs[0]}`);
            assert.equal(st.mode! & 0o777, 0o700);
            assert.deepEqual(entries(`${tmp}/${dirs[0]}`), [
              "broker.sock",
              "channel",
              "libwrapguard.so",
              "wrapguard-supervisor",
            ]);
            Deno.kill(p.pid, `SIG${sig}`);
            const r = await p.wait(15_000);
            assert.equal(r.code, code, r.stderr);
            assert.match(r.stdout, new RegExp(`got-${sig}`));
            assert.deepEqual(entries(tmp), []);
          } finally {
            await p.kill("SIGKILL");
          }
        },
      );
    }

    await t.step(
      "the program killed with SIGKILL: 137, and the directory is still removed",
      async () => {
        const p = start(["sh", "-c", "echo ready; exec sleep 60"]);
        try {
          await p.waitForOutput("ready", { timeoutMs: 15_000 });
          const kids = await waitForChildNamed(p.pid, "sleep");
          assert.equal(kids.length, 1);
          Deno.kill(kids[0]!, "SIGKILL");
          const r = await p.wait(15_000);
          assert.equal(r.code, 137);
          assert.deepEqual(entries(tmp), []);
          assert.deepEqual(liveGroupMembers(p.pid), []);
        } finally {
          await p.kill("SIGKILL");
        }
      },
    );

    await t.step(
      "wrapguard SIGKILLed: its janitor removes the directory",
      async () => {
        const p = start(["sh", "-c", "echo ready; exec sleep 60"]);
        await p.waitForOutput("ready", { timeoutMs: 15_000 });
        const program = await waitForChildNamed(p.pid, "sleep");
        Deno.kill(p.pid, "SIGKILL"); // wrapguard itself: it cannot clean up
        for (const k of program) Deno.kill(k, "SIGKILL");
        await waitUntilEmpty(tmp);
        await p.kill("SIGKILL");
        assert.deepEqual(entries(tmp), []);
      },
    );

    await t.step(
      "a directory left when wrapguard and its janitor were both killed is swept by the next run",
      async () => {
        const p = start(["sh", "-c", "echo ready; exec sleep 60"]);
        await p.waitForOutput("ready", { timeoutMs: 15_000 });
        const program = await waitForChildNamed(p.pid, "sleep");
        const janitor = childrenNamed(p.pid, "sh");
        assert.equal(janitor.length, 1);
        // The janitor first, so that it cannot see wrapguard go.
        for (const k of janitor) Deno.kill(k, "SIGKILL");
        Deno.kill(p.pid, "SIGKILL");
        for (const k of program) Deno.kill(k, "SIGKILL");
        await p.kill("SIGKILL");
        assert.equal(entries(tmp).length, 1);
        // Old enough not to be a run that is still starting.
        const old = new Date(Date.now() - 60_000);
        await Deno.utime(`${tmp}/${entries(tmp)[0]}`, old, old);
        const next = await run(null, wrapguardArgv(["run", "--config", config, "--", "true"]), {
          env: envFor(tmp),
        });
        assert.equal(next.code, 0, next.stderr);
        assert.deepEqual(entries(tmp), []);
      },
    );

    if (HAVE_GCC) {
      await t.step("an existing LD_PRELOAD is kept, ahead of the interposer", async () => {
        const other = `${tmp}/../other-preload.so`;
        await compile(
          `#include <unistd.h>
__attribute__((constructor)) static void hello(void) { write(2, "other-preload\\n", 14); }`,
          other,
          ["-shared", "-fPIC"],
        );
        const r = await run(
          null,
          wrapguardArgv(["run", "--config", config, "--", "sh", "-c", 'echo "$LD_PRELOAD"']),
          { env: envFor(tmp, { LD_PRELOAD: other }) },
        );
        assert.equal(r.code, 0, r.stderr);
        assert.match(
          r.stdout,
          new RegExp(
            `^${other.replaceAll(".", "\\.")}:${tmp}/wrapguard-run-\\d+-\\w+/libwrapguard\\.so$`,
            "m",
          ),
        );
        assert.match(r.stderr, /other-preload/);
      });
    }

    if (which("script") !== undefined && which("python3") !== undefined) {
      await t.step("an interactive program keeps the terminal; ^C reaches it once", async () => {
        const inner = wrapguardArgv([
          "run",
          "--config",
          config,
          "--",
          "python3",
          "-c",
          `
import os, signal, sys, time
n = [0]
signal.signal(signal.SIGINT, lambda *a: n.__setitem__(0, n[0] + 1))
print("tty", os.isatty(0) and os.isatty(1), os.tcgetpgrp(0) == os.getpgrp(), flush=True)
line = sys.stdin.readline().strip()
print("ready", line, flush=True)
time.sleep(1.5)
print("ints", n[0], flush=True)
`,
        ]).map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(" ");
        const p: Spawned = spawn(null, ["script", "-qec", inner, "/dev/null"], {
          env: envFor(tmp),
          stdin: "piped",
        });
        try {
          await p.waitForOutput(/tty True True/, { timeoutMs: 15_000 });
          await p.write("typed line\n");
          await p.waitForOutput(/ready typed line/, { timeoutMs: 10_000 });
          await p.write("\x03");
          await p.waitForOutput(/ints \d/, { timeoutMs: 10_000 });
          assert.match(p.stdoutText(), /ints 1\b/, p.stdoutText());
        } finally {
          await p.kill("SIGKILL");
        }
        await sleep(100);
        assert.deepEqual(entries(tmp), []);
      });
    }
  });
});

Deno.test({
  name: "wrapguard run: a temporary directory mounted noexec: nothing runs unwrapped (fail closed)",
  ignore: !IS_ROOT || which("unshare") === undefined,
  async fn() {
    await withScratch(async ({ dir, config }) => {
      // A temporary directory mounted noexec: the loader could not map the library and would run
      // the program without it, but the supervisor (which every program is started under) cannot
      // be executed from there either, so nothing runs: 126, with the reason.
      const noexec = `${dir}/noexec`;
      await Deno.mkdir(noexec);
      const quote = (a: string) => `'${a.replaceAll("'", `'\\''`)}'`;
      const wrap = (cmd: string) =>
        `${wrapguardArgv(["run", "--config", config, "--", "sh", "-c", cmd]).map(quote).join(" ")}`;
      const script = `mount -t tmpfs -o noexec,mode=1777 none ${quote(noexec)} || exit 99
${wrap("echo quick")}; echo "rc=$?"
${wrap("echo slow; exec sleep 30")}; echo "rc=$?"`;
      const started = Date.now();
      const r = await run(null, ["unshare", "-m", "--propagation", "private", "sh", "-c", script], {
        env: envFor(noexec),
        timeoutMs: 40_000,
      });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "rc=126\nrc=126\n", r.stdout + r.stderr);
      assert.match(r.stderr, /cannot start sh under the supervisor/);
      assert.match(r.stderr, /noexec/);
      assert.ok(Date.now() - started < 30_000, "nothing was waited for");
    });
  },
});

Deno.test("wrapguard run: only the program says HELLO, not every program a script starts", async () => {
  await withScratch(async ({ tmp, config }) => {
    // A shell that runs two programs, then execs another shell (the same pid, still the
    // supervisor's child) that runs one more: two HELLOs, both for the run's own pid. Before,
    // every exec said one, a broker round trip each for a launcher like the pyenv shim.
    const r = await run(
      null,
      wrapguardArgv([
        "run",
        "--config",
        config,
        "--log-level",
        "debug",
        "--",
        "sh",
        "-c",
        "/bin/true; /bin/true; exec sh -c '/bin/true; echo done'",
      ]),
      { env: envFor(tmp), timeoutMs: 30_000 },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "done\n");
    const hellos = r.stderr.split("\n").filter((l) => l.includes('"msg":"hello"'))
      .map((l) => JSON.parse(l).pid as number);
    const started = r.stderr.split("\n").find((l) => l.includes('"msg":"started"'));
    assert.ok(started, r.stderr);
    assert.deepEqual(hellos, [JSON.parse(started).pid, JSON.parse(started).pid], r.stderr);
  });
});
