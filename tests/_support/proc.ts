/**
 * Process helpers for the namespace test harness: run a command (optionally inside a named network
 * namespace) with a timeout, or spawn one in its own process group so that it and all its children
 * can be killed at teardown.
 *
 * Every command is started through `setsid`, which (because a child of Deno is never a process-group
 * leader) calls setsid(2) in place and execs: the pid we get back is the pid, the process-group id
 * and the session id of the command. `ip netns exec` also execs in place, so the chain
 * `setsid ip netns exec <ns> <argv…>` keeps one pid from start to end, and `kill(-pid)` reaches the
 * command and everything it forked.
 *
 * @module
 */

/** A network namespace name, or `null` for the namespace of the test process (the root one). */
export type Ns = string | null;

/** What a finished command produced. */
export interface RunResult {
  /** Exit code; 128 + signal number when killed by a signal. */
  code: number;
  /** The signal that ended the process, if any. */
  signal: Deno.Signal | null;
  /** stdout decoded as UTF-8 (lossy). */
  stdout: string;
  /** stdout exactly as written. */
  stdoutBytes: Uint8Array;
  /** stderr decoded as UTF-8 (lossy). */
  stderr: string;
}

/** Options shared by {@link run} and {@link spawn}. */
export interface ProcOptions {
  /** Extra environment variables (the test process's environment is inherited). */
  env?: Record<string, string>;
  /** Working directory. */
  cwd?: string;
}

/** Options for {@link spawn}. */
export interface SpawnOptions extends ProcOptions {
  /** `"piped"` lets you {@link Spawned.write} and {@link Spawned.closeStdin}. Default `"null"`. */
  stdin?: "piped" | "null";
  /** `"collect"` (default) buffers the stream in memory; `"inherit"` passes it through. */
  stdout?: "collect" | "null" | "inherit";
  /** As `stdout`. */
  stderr?: "collect" | "null" | "inherit";
}

/** Options for {@link run}. */
export interface RunOptions extends ProcOptions {
  /** Bytes or text fed to stdin, which is then closed. Without it stdin is /dev/null. */
  stdin?: string | Uint8Array;
  /** Kill the process group and throw after this long. Default 10 000 ms. */
  timeoutMs?: number;
  /** Throw (with stderr in the message) when the exit code is not 0. Default false. */
  check?: boolean;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The argv that runs `argv` inside `ns` (unchanged for `null`). */
export function nsArgv(ns: Ns, argv: readonly string[]): string[] {
  return ns === null ? [...argv] : ["ip", "netns", "exec", ns, ...argv];
}

/** Absolute path of an executable found on PATH, or undefined. */
export function which(name: string): string | undefined {
  const path = Deno.env.get("PATH") ??
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (const dir of path.split(":")) {
    if (dir === "") continue;
    const candidate = `${dir}/${name}`;
    try {
      const st = Deno.statSync(candidate);
      if (st.isFile && st.mode !== null && (st.mode & 0o111) !== 0) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const c of chunks) n += c.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

function describe(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(" ");
}

/** Sends `signal` to process group `pgid`; false when no such group exists any more. */
function killGroup(pgid: number, signal: Deno.Signal): boolean {
  try {
    Deno.kill(-pgid, signal);
    return true;
  } catch {
    return false;
  }
}

/**
 * Pids of the processes in process group `pgid` that are still running (zombies, which only wait
 * to be reaped, are not counted), read from /proc.
 */
export function liveGroupMembers(pgid: number): number[] {
  const pids: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    let stat: string;
    try {
      stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
    } catch {
      continue; // exited meanwhile
    }
    // "pid (comm) state ppid pgrp …"; comm may contain spaces and parentheses.
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(f[2]) === pgid && f[0] !== "Z" && f[0] !== "X") pids.push(Number(e.name));
  }
  return pids;
}

/** A timer that does not keep the test's op sanitizer busy once cleared. */
function delay(ms: number): { promise: Promise<void>; cancel(): void } {
  let id: ReturnType<typeof setTimeout> | undefined;
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
    id = setTimeout(r, ms);
  });
  return {
    promise,
    cancel() {
      if (id !== undefined) clearTimeout(id);
      resolve();
    },
  };
}

/** Waits `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * A running command in its own process group. Collected output can be read at any time;
 * {@link kill} ends the whole group (SIGTERM, then SIGKILL after a grace period) and waits for it.
 */
export class Spawned {
  /** pid == process-group id == session id. */
  readonly pid: number;
  /** What was actually executed (including `setsid` / `ip netns exec`). */
  readonly argv: readonly string[];
  readonly #child: Deno.ChildProcess;
  readonly #out: Uint8Array[] = [];
  readonly #err: Uint8Array[] = [];
  readonly #done: Promise<RunResult>;
  #writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  readonly #readers: ReadableStreamDefaultReader<Uint8Array>[] = [];
  #exited = false;
  #waiters: (() => void)[] = [];

  constructor(ns: Ns, argv: readonly string[], opts: SpawnOptions = {}) {
    if (argv.length === 0) throw new Error("spawn: empty argv");
    const full = ["setsid", ...nsArgv(ns, argv)];
    this.argv = full;
    const mode = (m: "collect" | "null" | "inherit" | undefined) =>
      m === "null" ? "null" : m === "inherit" ? "inherit" : "piped";
    const child = new Deno.Command(full[0]!, {
      args: full.slice(1),
      env: opts.env,
      cwd: opts.cwd,
      stdin: opts.stdin === "piped" ? "piped" : "null",
      stdout: mode(opts.stdout),
      stderr: mode(opts.stderr),
    }).spawn();
    this.#child = child;
    this.pid = child.pid;
    if (opts.stdin === "piped") this.#writer = child.stdin.getWriter();
    const pump = async (stream: ReadableStream<Uint8Array>, into: Uint8Array[]) => {
      const reader = stream.getReader();
      this.#readers.push(reader);
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        into.push(value);
        this.#notify();
      }
    };
    const pumps: Promise<void>[] = [];
    if (mode(opts.stdout) === "piped") pumps.push(pump(child.stdout, this.#out));
    if (mode(opts.stderr) === "piped") pumps.push(pump(child.stderr, this.#err));
    this.#done = (async () => {
      const [status] = await Promise.all([child.status, ...pumps]);
      this.#exited = true;
      this.#notify();
      return {
        code: status.code,
        signal: status.signal,
        stdout: this.stdoutText(),
        stdoutBytes: this.stdoutBytes(),
        stderr: this.stderrText(),
      };
    })();
  }

  #notify(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /** True once the process has exited and its output streams have closed. */
  get exited(): boolean {
    return this.#exited;
  }

  /** Everything written to stdout so far. */
  stdoutBytes(): Uint8Array {
    return concat(this.#out);
  }

  /** Everything written to stdout so far, as text. */
  stdoutText(): string {
    return decoder.decode(this.stdoutBytes());
  }

  /** Everything written to stderr so far, as text. */
  stderrText(): string {
    return decoder.decode(concat(this.#err));
  }

  /** Writes to stdin (requires `stdin: "piped"`). */
  async write(data: string | Uint8Array): Promise<void> {
    if (this.#writer === undefined) throw new Error("spawn: stdin is not piped");
    await this.#writer.write(typeof data === "string" ? encoder.encode(data) : data);
  }

  /** Closes stdin (no-op when not piped or already closed). */
  async closeStdin(): Promise<void> {
    const w = this.#writer;
    if (w === undefined) return;
    this.#writer = undefined;
    try {
      await w.close();
    } catch {
      // the process may already be gone (EPIPE)
    }
  }

  /**
   * Waits until `pattern` appears in stdout or stderr (whichever `stream` says). Throws on timeout
   * or when the process exits first, with what was collected in the message.
   */
  async waitForOutput(
    pattern: string | RegExp,
    opts: { stream?: "stdout" | "stderr" | "both"; timeoutMs?: number } = {},
  ): Promise<void> {
    const stream = opts.stream ?? "both";
    const timeoutMs = opts.timeoutMs ?? 5000;
    const text = () =>
      stream === "stdout"
        ? this.stdoutText()
        : stream === "stderr"
        ? this.stderrText()
        : this.stdoutText() + this.stderrText();
    const matches = () =>
      typeof pattern === "string" ? text().includes(pattern) : pattern.test(text());
    const deadline = Date.now() + timeoutMs;
    while (!matches()) {
      if (this.#exited) {
        throw new Error(
          `${describe(this.argv)} exited before printing ${pattern}\n${this.#report()}`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `timed out waiting for ${pattern} from ${describe(this.argv)}\n${this.#report()}`,
        );
      }
      const t = delay(left);
      await Promise.race([t.promise, new Promise<void>((r) => this.#waiters.push(r))]);
      t.cancel();
    }
  }

  #report(): string {
    return `--- stdout\n${this.stdoutText().slice(-4000)}\n--- stderr\n${
      this.stderrText().slice(-4000)
    }`;
  }

  /**
   * Waits for the process to exit. With `timeoutMs`, kills the group and throws when it is
   * exceeded.
   */
  async wait(timeoutMs?: number): Promise<RunResult> {
    if (timeoutMs === undefined) return await this.#done;
    const t = delay(timeoutMs);
    const r = await Promise.race([this.#done, t.promise.then(() => undefined)]);
    t.cancel();
    if (r !== undefined) return r;
    await this.kill();
    throw new Error(`timed out after ${timeoutMs} ms: ${describe(this.argv)}\n${this.#report()}`);
  }

  /**
   * Ends the whole process group: `signal` (default SIGTERM), then SIGKILL if anything of it is
   * still alive after `graceMs`. Also signals the group when the leader has already exited, so
   * that background children die too, and returns only once no process of the group runs
   * (see {@link liveGroupMembers}). Idempotent; returns the leader's result.
   */
  async kill(signal: Deno.Signal = "SIGTERM", graceMs = 2000): Promise<RunResult> {
    await this.closeStdin();
    killGroup(this.pid, signal);
    const t = delay(graceMs);
    const r = await Promise.race([this.#done, t.promise.then(() => undefined)]);
    t.cancel();
    // The leader may be gone while children that hold no pipe of ours live on.
    killGroup(this.pid, "SIGKILL");
    let result = r;
    if (result === undefined) {
      const t2 = delay(2000);
      result = await Promise.race([this.#done, t2.promise.then(() => undefined)]);
      t2.cancel();
    }
    if (result === undefined) {
      // Something outside the group (a daemon that called setsid) still holds our pipes: stop
      // reading them so that the leader's exit status is enough.
      for (const reader of this.#readers) await reader.cancel().catch(() => {});
      result = await this.#done;
    }
    // SIGKILL is delivered asynchronously: make sure nothing of the group still runs on return.
    for (let i = 0; i < 100 && liveGroupMembers(this.pid).length > 0; i++) await sleep(10);
    return result;
  }
}

/** Starts `argv` (inside `ns` unless null) in its own process group. */
export function spawn(ns: Ns, argv: readonly string[], opts: SpawnOptions = {}): Spawned {
  return new Spawned(ns, argv, opts);
}

/**
 * Runs `argv` (inside `ns` unless null) to completion and returns its exit code and output.
 * Throws when `timeoutMs` (default 10 s) passes — after killing the process group — or, with
 * `check: true`, when the exit code is not 0.
 */
export async function run(
  ns: Ns,
  argv: readonly string[],
  opts: RunOptions = {},
): Promise<RunResult> {
  const p = new Spawned(ns, argv, {
    env: opts.env,
    cwd: opts.cwd,
    stdin: opts.stdin === undefined ? "null" : "piped",
  });
  let feeding: Promise<void> = Promise.resolve();
  if (opts.stdin !== undefined) {
    // Written concurrently with the output pumps, so large inputs cannot deadlock.
    const input = opts.stdin;
    feeding = (async () => {
      try {
        await p.write(input);
      } catch {
        // the process exited without reading all input; its exit status tells the story
      }
      await p.closeStdin();
    })();
  }
  let r: RunResult;
  try {
    r = await p.wait(opts.timeoutMs ?? 10_000);
  } finally {
    await feeding;
  }
  if (opts.check && r.code !== 0) {
    throw new Error(
      `${describe(argv)}${
        ns === null ? "" : ` (in ${ns})`
      } exited with ${r.code}: ${r.stderr.trim()}`,
    );
  }
  return r;
}
