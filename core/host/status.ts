/**
 * How `wrapguard show` finds this user's running tunnels without root: every `run` (and, once
 * wired, `forward`/`proxy`) listens on a Unix socket in a per-user directory only that user can
 * enter, and answers each connection with one JSON {@link StatusRecord} line, then closes.
 *
 * ```text
 * $XDG_RUNTIME_DIR/wrapguard/   or   /tmp/wrapguard-<uid>/     (0700, ours, not a symlink)
 *   <pid>-<random>.sock  ─ connect ─►  {"pid":…,"kind":"run","interface":"wg0",…}\n  ─ close
 * ```
 *
 * A socket whose process is gone refuses connections: {@link listStatus} skips it and removes it.
 * Nothing secret is served (public keys, endpoints, counters), and the directory keeps other
 * users out anyway.
 *
 * @module
 */
import type { TunnelStatus } from "./tunnel/mod.ts";

/** One running tunnel, as its status socket reports it. */
export interface StatusRecord extends TunnelStatus {
  pid: number;
  /** Which command runs it. */
  kind: "run" | "forward" | "proxy";
  /** The config file's name without `.conf`, as wg-quick names the interface. */
  interface: string;
  /** The config file as given. */
  config: string;
  /** For `run`: the wrapped command. */
  command?: string;
  /** Wall-clock ms when the tunnel started. */
  started: number;
  /** Policy routes per peer public key (`0.0.0.0/0 (exit node)`, `172.16.0.0/12 tcp 443`). */
  routes?: Record<string, string[]>;
  /** Whether non-tunnel destinations fail (`--kill-switch`). */
  killSwitch?: boolean;
}

/** The socket file suffix. */
const SUFFIX = ".sock";
/** How long `show` waits for one tunnel's answer. */
export const STATUS_TIMEOUT_MS = 2000;

/**
 * The caller's uid without `--allow-sys`: the owner of a file it just created (with the sys
 * permission granted, `Deno.uid()`).
 */
export async function currentUid(): Promise<number> {
  if (Deno.permissions.querySync({ name: "sys", kind: "uid" }).state === "granted") {
    const uid = Deno.uid();
    if (uid !== null) return uid;
  }
  const probe = await Deno.makeTempFile({ prefix: "wrapguard-uid-" });
  try {
    const uid = (await Deno.stat(probe)).uid;
    if (uid === null) throw new Deno.errors.NotSupported("Cannot tell the current user's uid");
    return uid;
  } finally {
    await Deno.remove(probe).catch(() => {});
  }
}

/**
 * The per-user status directory: `$XDG_RUNTIME_DIR/wrapguard` when that variable names a
 * directory, else `/tmp/wrapguard-<uid>`. Not `$TMPDIR`: a `show` started from another shell
 * must find the same directory, and a run's `$TMPDIR` is often private to it. Reads the
 * environment: call it before the environment permission is revoked.
 */
export function statusDir(uid: number, env: (name: string) => string | undefined = envGet): string {
  const xdg = env("XDG_RUNTIME_DIR");
  if (xdg) {
    try {
      if (Deno.statSync(xdg).isDirectory) return `${xdg}/wrapguard`;
    } catch {
      // not there: fall back
    }
  }
  return `/tmp/wrapguard-${uid}`;
}

function envGet(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/**
 * Checks that `dir` is a real directory (not a symlink) owned by `uid` that no one else can enter;
 * creates it (0700) when `create` and it does not exist.
 * @throws {Deno.errors.PermissionDenied} when it is someone else's or open to others.
 */
export async function checkPrivateDir(dir: string, uid: number, create: boolean): Promise<void> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.lstat(dir);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound) || !create) throw e;
    await Deno.mkdir(dir, { mode: 0o700 }).catch((err) => {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    });
    st = await Deno.lstat(dir);
  }
  if (!st.isDirectory || st.isSymlink) {
    throw new Deno.errors.PermissionDenied(`${dir} is not a directory`);
  }
  if (st.uid !== uid) throw new Deno.errors.PermissionDenied(`${dir} belongs to another user`);
  if (st.mode === null || (st.mode & 0o077) !== 0) {
    throw new Deno.errors.PermissionDenied(`${dir} is open to other users (mode must be 0700)`);
  }
}

/** A tunnel's status socket: answers every connection with `record()` as one JSON line. */
export class StatusServer {
  /** The socket's path. */
  readonly path: string;
  readonly #listener: Deno.UnixListener;
  readonly #record: () => StatusRecord;
  readonly #serving: Promise<void>;
  #closed = false;

  private constructor(path: string, listener: Deno.UnixListener, record: () => StatusRecord) {
    this.path = path;
    this.#listener = listener;
    this.#record = record;
    this.#serving = this.#serve();
  }

  /** Creates (or checks) the directory and listens in it. */
  static async start(dir: string, uid: number, record: () => StatusRecord): Promise<StatusServer> {
    await checkPrivateDir(dir, uid, true);
    const rand = Array.from(
      crypto.getRandomValues(new Uint8Array(4)),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    const path = `${dir}/${Deno.pid}-${rand}${SUFFIX}`;
    const listener = Deno.listen({ transport: "unix", path });
    await Deno.chmod(path, 0o600);
    return new StatusServer(path, listener, record);
  }

  async #serve(): Promise<void> {
    const enc = new TextEncoder();
    try {
      for await (const conn of this.#listener) {
        try {
          const data = enc.encode(JSON.stringify(this.#record()) + "\n");
          for (let off = 0; off < data.length;) off += await conn.write(data.subarray(off));
        } catch {
          // the reader went away
        } finally {
          try {
            conn.close();
          } catch {
            // closed
          }
        }
      }
    } catch (e) {
      if (!this.#closed) throw e;
    }
  }

  /** Stops answering and removes the socket. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#listener.close();
    await this.#serving.catch(() => {});
    await Deno.remove(this.path).catch(() => {});
  }
}

/** Asks one status socket; undefined when its process is gone (the socket is then removed). */
export async function queryStatus(path: string): Promise<StatusRecord | undefined> {
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path });
  } catch (e) {
    if (e instanceof Deno.errors.ConnectionRefused || e instanceof Deno.errors.NotFound) {
      await Deno.remove(path).catch(() => {});
      return undefined;
    }
    throw e;
  }
  const timer = setTimeout(() => conn.close(), STATUS_TIMEOUT_MS);
  try {
    const dec = new TextDecoder();
    const buf = new Uint8Array(16384);
    let text = "";
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += dec.decode(buf.subarray(0, n), { stream: true });
    }
    return JSON.parse(text) as StatusRecord;
  } catch {
    return undefined; // closed by the timeout, or not a status answer
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // already closed by the timeout
    }
  }
}

/** Every running tunnel of this user with a socket in `dir`, oldest first. */
export async function listStatus(dir: string, uid: number): Promise<StatusRecord[]> {
  try {
    await checkPrivateDir(dir, uid, false);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  const paths: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.name.endsWith(SUFFIX)) paths.push(`${dir}/${entry.name}`);
  }
  const found = await Promise.all(paths.map(queryStatus));
  return found.filter((r): r is StatusRecord => r !== undefined).sort((a, b) =>
    a.started - b.started
  );
}
