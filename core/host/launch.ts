/**
 * What `wrapguard run` checks and prepares before it starts a program (DESIGN.md decision 5, fail
 * closed):
 *
 * ```text
 * command ─► resolveCommand (PATH, as execvp) ─► inspectTarget
 *              │                                   ├─ ELF: our architecture, 64-bit?
 *              │                                   │       not setuid/setgid?
 *              │                                   │       dynamically linked and not Go: the
 *              │                                   │       interposer's fast path; static or Go:
 *              │                                   │       the supervisor alone
 *              │                                   └─ "#!" script: the same for its interpreter
 *              │                                          (and for `env`'s program), ≤ 4 levels
 *              ▼
 *   materialize: the embedded interposer and supervisor into a private directory (0700)
 *   childEnv: LD_PRELOAD appended to the program's own, the broker's WRAPGUARD_* variables
 *   supervisorArgv / supervisorEnv: the program runs under wrapguard-supervisor, whose seccomp
 *     filter every program and descendant gets, whichever path it takes (PROTOCOL.md
 *     "Supervisor (seccomp)")
 * ```
 *
 * The checks are what can be known before the program runs. What only the program can show
 * (file capabilities, a temporary directory mounted noexec, a loader that refuses the library)
 * is proven afterwards by the HELLO to the broker (`Broker.waitForHello`): the interposer's, or
 * for a program on the supervisor's path the supervisor's, once its filter is in place.
 *
 * @module
 */

/** Why a program cannot be wrapped. */
export type RefusalReason =
  | "not-found"
  | "not-executable"
  | "setuid"
  | "architecture"
  | "interpreter";

/**
 * How a program is wrapped: `interposer` (dynamically linked, the preloaded library sees its
 * sockets; the supervisor's filter stands behind it) or `supervisor` (statically linked or Go:
 * only the seccomp supervisor sees its sockets).
 */
export type WrapPath = "interposer" | "supervisor";

/** What inspectTarget found. */
export interface TargetInfo {
  /** The files that were checked, the program first, then its interpreters. */
  chain: string[];
  path: WrapPath;
  /** Why the supervisor path: the file that is statically linked or built by Go. */
  why?: { file: string; reason: "static" | "go" };
}

/** A program the interposer cannot be active in: `run` refuses to start it. */
export class LaunchRefused extends Error {
  readonly reason: RefusalReason;
  /** The file the reason is about (the program, or the interpreter of a script). */
  readonly path: string;
  constructor(reason: RefusalReason, path: string, message: string) {
    super(message);
    this.name = "LaunchRefused";
    this.reason = reason;
    this.path = path;
  }
}

/** ELF `e_machine` values of the architectures the interposer is built for. */
const ELF_MACHINE: Record<string, number> = { x86_64: 62, aarch64: 183 };
const PT_INTERP = 3;
/** Linux follows at most this many interpreters (binfmt_script, BINPRM_MAX_RECURSION is 4). */
const MAX_INTERPRETERS = 4;

/** What the header of an executable says. */
export type ExecutableInfo =
  | {
    kind: "elf";
    bits: 32 | 64;
    machine: number;
    /** Has a PT_INTERP program header: the dynamic loader runs first (and reads LD_PRELOAD). */
    dynamic: boolean;
    /** The loader it names. */
    interpreter?: string;
    /**
     * Built by Go (a `.go.buildinfo`, `.gopclntab` or `.note.go.buildid` section): its runtime
     * makes system calls itself, so no preloaded library sees its sockets, even when it is
     * dynamically linked (cgo).
     */
    go: boolean;
  }
  | { kind: "script"; interpreter: string; arg?: string }
  | { kind: "other" };

function isExecutableFile(path: string): boolean {
  try {
    const st = Deno.statSync(path);
    return st.isFile && st.mode !== null && (st.mode & 0o111) !== 0;
  } catch {
    return false;
  }
}

/**
 * The file `command` names, as execvp(3) finds it: a name with a slash as is, otherwise the first
 * executable file of that name on `path`.
 * @throws {LaunchRefused} `not-found` or `not-executable`.
 */
export function resolveCommand(command: string, path = Deno.env.get("PATH") ?? ""): string {
  if (command === "") throw new LaunchRefused("not-found", command, "empty command name");
  if (command.includes("/")) {
    let st: Deno.FileInfo;
    try {
      st = Deno.statSync(command);
    } catch {
      throw new LaunchRefused("not-found", command, `${command}: no such file`);
    }
    if (!st.isFile || st.mode === null || (st.mode & 0o111) === 0) {
      throw new LaunchRefused("not-executable", command, `${command}: not an executable file`);
    }
    return command;
  }
  for (const dir of (path || "/usr/local/bin:/usr/bin:/bin").split(":")) {
    const candidate = `${dir === "" ? "." : dir}/${command}`;
    if (isExecutableFile(candidate)) return candidate;
  }
  throw new LaunchRefused("not-found", command, `${command}: command not found`);
}

/** Reads up to `n` bytes at `offset` of an open file. */
function readAt(file: Deno.FsFile, offset: number, n: number): Uint8Array {
  file.seekSync(offset, Deno.SeekMode.Start);
  const buf = new Uint8Array(n);
  let have = 0;
  while (have < n) {
    const r = file.readSync(buf.subarray(have));
    if (r === null || r === 0) break;
    have += r;
  }
  return buf.subarray(0, have);
}

/** Parses the headers of the executable at `path` (reads only its first bytes and program
 * headers). */
export function inspectExecutable(path: string): ExecutableInfo {
  using file = Deno.openSync(path, { read: true });
  const head = readAt(file, 0, 256);
  if (head[0] === 0x23 && head[1] === 0x21) {
    // "#!interpreter [one argument]" up to the end of the line, as binfmt_script reads it.
    let end = head.indexOf(0x0a);
    if (end < 0) end = head.length;
    const line = new TextDecoder().decode(head.subarray(2, end)).trim();
    const m = /^(\S+)(?:\s+(.*))?$/.exec(line);
    if (!m) return { kind: "other" };
    return { kind: "script", interpreter: m[1]!, arg: m[2]?.trim() || undefined };
  }
  if (head.length < 52 || head[0] !== 0x7f || head[1] !== 0x45 || head[2] !== 0x4c) {
    return { kind: "other" };
  }
  if (head[3] !== 0x46) return { kind: "other" };
  const bits = head[4] === 2 ? 64 : 32;
  const little = head[5] !== 2;
  const dv = new DataView(head.buffer, head.byteOffset, head.length);
  const machine = dv.getUint16(18, little);
  const phoff = bits === 64 ? Number(dv.getBigUint64(32, little)) : dv.getUint32(28, little);
  const phentsize = dv.getUint16(bits === 64 ? 54 : 42, little);
  const phnum = dv.getUint16(bits === 64 ? 56 : 44, little);
  let dynamic = false;
  let interpreter: string | undefined;
  if (phentsize >= 8 && phnum > 0 && phnum < 4096) {
    const table = readAt(file, phoff, phentsize * phnum);
    const tv = new DataView(table.buffer, table.byteOffset, table.length);
    for (let i = 0; i + 1 <= phnum && (i + 1) * phentsize <= table.length; i++) {
      const at = i * phentsize;
      if (tv.getUint32(at, little) !== PT_INTERP) continue;
      dynamic = true;
      const off = bits === 64
        ? Number(tv.getBigUint64(at + 8, little))
        : tv.getUint32(at + 4, little);
      const size = bits === 64
        ? Number(tv.getBigUint64(at + 32, little))
        : tv.getUint32(at + 16, little);
      if (size > 0 && size < 4096) {
        const raw = readAt(file, off, size);
        interpreter = new TextDecoder().decode(raw).replace(/\0.*$/s, "");
      }
      break;
    }
  }
  return {
    kind: "elf",
    bits,
    machine,
    dynamic,
    interpreter,
    go: hasGoSections(file, dv, bits, little),
  };
}

/** Whether the section names include Go's (read from the section header string table). */
function hasGoSections(file: Deno.FsFile, head: DataView, bits: 32 | 64, little: boolean): boolean {
  const shoff = bits === 64 ? Number(head.getBigUint64(40, little)) : head.getUint32(32, little);
  const shentsize = head.getUint16(bits === 64 ? 58 : 46, little);
  const shnum = head.getUint16(bits === 64 ? 60 : 48, little);
  const shstrndx = head.getUint16(bits === 64 ? 62 : 50, little);
  if (shoff === 0 || shentsize < 24 || shnum === 0 || shnum > 4096 || shstrndx >= shnum) {
    return false;
  }
  const table = readAt(file, shoff, shentsize * shnum);
  if (table.length < shentsize * shnum) return false;
  const tv = new DataView(table.buffer, table.byteOffset, table.length);
  const at = shstrndx * shentsize;
  const strOff = bits === 64
    ? Number(tv.getBigUint64(at + 24, little))
    : tv.getUint32(at + 16, little);
  const strSize = bits === 64
    ? Number(tv.getBigUint64(at + 32, little))
    : tv.getUint32(at + 20, little);
  if (strSize === 0 || strSize > 1 << 20) return false;
  const names = new TextDecoder().decode(readAt(file, strOff, strSize)).split("\0");
  return names.some((n) => n === ".go.buildinfo" || n === ".gopclntab" || n === ".note.go.buildid");
}

const ALTERNATIVES = "use 'wrapguard forward' or 'wrapguard proxy' for such a program";

/**
 * Checks that the program at `path` (for `arch`, a `Deno.build.arch`) can be wrapped, and how:
 * follows `#!` interpreters (and `env`'s program, looked up on `path`); refuses setuid/setgid and
 * foreign-architecture executables; a statically linked or Go executable anywhere in the chain
 * puts the program on the supervisor's path.
 * @throws {LaunchRefused} naming the reason and the file.
 */
export function inspectTarget(
  path: string,
  arch: string = Deno.build.arch,
  searchPath = Deno.env.get("PATH") ?? "",
): TargetInfo {
  const chain: string[] = [];
  let why: TargetInfo["why"];
  const done = (): TargetInfo => ({ chain, path: why ? "supervisor" : "interposer", why });
  let current = path;
  for (let depth = 0; depth <= MAX_INTERPRETERS; depth++) {
    chain.push(current);
    const st = Deno.statSync(current);
    if (st.mode !== null && (st.mode & 0o6000) !== 0) {
      const what = (st.mode & 0o4000) !== 0 ? "setuid" : "setgid";
      throw new LaunchRefused(
        "setuid",
        current,
        `${current} is ${what}: the dynamic loader ignores LD_PRELOAD for it, and under the ` +
          `supervisor's filter (no_new_privs) it would run without its privileges; ${ALTERNATIVES}`,
      );
    }
    const info = inspectExecutable(current);
    if (info.kind === "elf") {
      const want = ELF_MACHINE[arch];
      if (info.bits !== 64 || (want !== undefined && info.machine !== want)) {
        throw new LaunchRefused(
          "architecture",
          current,
          `${current} is a ${info.bits}-bit program for another architecture (ELF machine ` +
            `${info.machine}); the interposer and supervisor are built for ${arch} only; ` +
            ALTERNATIVES,
        );
      }
      if (!info.dynamic) why ??= { file: current, reason: "static" };
      else if (info.go) why ??= { file: current, reason: "go" };
      return done();
    }
    if (info.kind === "other") return done(); // binfmt_misc or unknown: HELLO will tell
    let next = info.interpreter;
    if (next.split("/").pop() === "env" && info.arg !== undefined) {
      // "#!/usr/bin/env [-S] prog args": env runs prog from PATH; check that one too.
      const words = info.arg.split(/\s+/).filter((w) => w !== "");
      const prog = words.find((w) => !w.startsWith("-") && !w.includes("="));
      if (prog !== undefined) {
        chain.push(next);
        const envInfo = inspectExecutable(next);
        if (envInfo.kind === "elf" && !envInfo.dynamic) why ??= { file: next, reason: "static" };
        try {
          next = resolveCommand(prog, searchPath);
        } catch {
          throw new LaunchRefused(
            "interpreter",
            prog,
            `${current} runs ${prog}, which is not on PATH`,
          );
        }
      }
    }
    if (!isExecutableFile(next)) {
      throw new LaunchRefused(
        "interpreter",
        next,
        `${current} names the interpreter ${next}, which is not an executable file`,
      );
    }
    current = next;
  }
  throw new LaunchRefused(
    "interpreter",
    current,
    `${path}: too many levels of #! interpreters`,
  );
}

/** The interposer's file name inside the private directory. */
export const INTERPOSER_NAME = "libwrapguard.so";
/** The supervisor's file name inside the private directory. */
export const SUPERVISOR_NAME = "wrapguard-supervisor";

/**
 * Writes the embedded file for `arch` from `table` (architecture → base64, as in
 * preload/build/embedded.ts) into `dir` (which the caller made private) as `name`, mode 0500, and
 * returns its path.
 * @throws {Deno.errors.NotSupported} when this build carries none for `arch`.
 */
export async function materialize(
  dir: string,
  name: string,
  table: Readonly<Record<string, string>>,
  arch: string = Deno.build.arch,
): Promise<string> {
  const b64 = table[arch];
  if (b64 === undefined) {
    throw new Deno.errors.NotSupported(
      `this wrapguard carries no ${name} for ${arch} (built for ${
        Object.keys(table).join(", ") || "none"
      })`,
    );
  }
  const bytes = Uint8Array.fromBase64(b64);
  const path = `${dir}/${name}`;
  // Sync on purpose: Deno.writeFile loads Deno's web streams on its first call (it accepts a
  // ReadableStream), about 4 ms of every start, for a write of a few hundred KB into tmpfs.
  Deno.writeFileSync(path, bytes, { mode: 0o500 });
  await Deno.chmod(path, 0o500);
  return path;
}

/** Writes the embedded interposer for `arch` into `dir` (see {@link materialize}). */
export function materializeInterposer(
  dir: string,
  libraries: Readonly<Record<string, string>>,
  arch: string = Deno.build.arch,
): Promise<string> {
  return materialize(dir, INTERPOSER_NAME, libraries, arch);
}

/**
 * The supervisor's arguments that start `target` (with `args`) under it: with `--hello` on the
 * supervisor's path, where no interposer will say HELLO.
 */
export function supervisorArgv(
  path: WrapPath,
  target: string,
  args: string[],
): string[] {
  return [...(path === "supervisor" ? ["--hello"] : []), "--", target, ...args];
}

/**
 * The supervisor's environment: the program's, with its LD_PRELOAD held in WRAPGUARD_PRELOAD
 * (the supervisor puts it back just before it execs the program), so that the interposer is not
 * loaded into the supervisor itself.
 */
export function supervisorEnv(env: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = { ...env };
  delete out.LD_PRELOAD;
  if (env.LD_PRELOAD !== undefined) out.WRAPGUARD_PRELOAD = env.LD_PRELOAD;
  return out;
}

/** The prefix of run directories, `wrapguard-run-<pid>-…`, so that a later run can tell whose
 * they were. */
export function runDirPrefix(pid = Deno.pid): string {
  return `wrapguard-run-${pid}-`;
}

/** A run directory younger than this may still be starting (its broker not yet listening). */
export const STALE_AFTER_MS = 30_000;

/** Whether something accepts connections on the Unix socket at `path`. */
async function listening(path: string): Promise<boolean> {
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

/**
 * Removes run directories left in `tmp` by wrapguard processes that were killed before they could
 * clean up (SIGKILL): directories named like ours, owned by `uid`, older than
 * {@link STALE_AFTER_MS}, whose broker socket nobody listens on any more. (Whether their process
 * lives cannot be asked of /proc without --allow-all; a socket without a listener is the same
 * fact.) Returns what it removed.
 */
export async function sweepStaleRunDirs(
  tmp: string,
  uid: number,
  now = Date.now(),
): Promise<string[]> {
  const removed: string[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = Array.from(Deno.readDirSync(tmp));
  } catch {
    return removed;
  }
  for (const e of entries) {
    if (!/^wrapguard-run-\d+-/.test(e.name) || !e.isDirectory) continue;
    const path = `${tmp}/${e.name}`;
    try {
      const st = Deno.statSync(path);
      if (st.uid !== uid) continue;
      if (st.mtime !== null && now - st.mtime.getTime() < STALE_AFTER_MS) continue;
    } catch {
      continue;
    }
    if (await listening(`${path}/broker.sock`)) continue;
    try {
      await Deno.remove(path, { recursive: true });
      removed.push(path);
    } catch {
      // not ours to remove after all
    }
  }
  return removed;
}

/** The variables a launcher sets for one run (PROTOCOL.md "Environment"). */
const RUN_VARIABLES = [
  "WRAPGUARD_SOCKET_DIR",
  "WRAPGUARD_SECRET",
  "WRAPGUARD_ROUTES",
  "WRAPGUARD_ADDRESSES",
  "WRAPGUARD_KILL_SWITCH",
  "WRAPGUARD_DNS",
  "WRAPGUARD_DNS_SEARCH",
  "WRAPGUARD_HELLO",
  "WRAPGUARD_PRELOAD",
  "WRAPGUARD_HELLO_AS",
];

/**
 * The wrapped program's environment: the launcher's own, the broker's `WRAPGUARD_*` variables,
 * and `LD_PRELOAD` with the interposer appended to whatever the program would have preloaded.
 */
export function childEnv(
  base: Record<string, string>,
  brokerEnv: Record<string, string>,
  interposer: string,
  extra: Record<string, string> = {},
): Record<string, string> {
  const env: Record<string, string> = { ...base };
  // What an outer run set must not leak into this one (WRAPGUARD_DEBUG is the user's to keep).
  for (const k of RUN_VARIABLES) delete env[k];
  Object.assign(env, brokerEnv, extra);
  const existing = (base.LD_PRELOAD ?? "").trim();
  env.LD_PRELOAD = existing === "" ? interposer : `${existing}:${interposer}`;
  return env;
}

/** `ip:port`-style names are fine; LD_PRELOAD splits on spaces and colons. */
export function usableInLdPreload(path: string): boolean {
  return !/[\s:]/.test(path);
}
