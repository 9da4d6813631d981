/**
 * The host's sandbox once the wrapped program has started (DESIGN.md decision 7): it gives up
 * starting programs (`run`), writing files (`write`) and reading the environment (`env`), so that
 * a flaw in the host reached through the tunnel can neither spawn nor write anything.
 *
 * ```text
 * before the child: --allow-write (private dir, log file), --allow-run, --allow-env
 *   spawn child ─► lockDown(dir): start the janitor ─► revoke run, write, env
 *     (with deferWrite: run and env; write at revokeDeferred(), once the status socket exists)
 *   …the child runs; the host keeps net and read…
 *   release(): close the janitor's stdin ─► it removes dir ─► wait for it
 * ```
 *
 * The private directory still has to go when the run ends, but the host can no longer remove it:
 * `Deno.permissions.revoke({ name: "write", path })` only drops a grant of exactly that path, so
 * write cannot be narrowed to one directory after the fact. The removal is left to a janitor
 * started before the revocation: `/bin/sh` waiting for end of file on a pipe from the host, then
 * `rm -rf` of the directory. The pipe closes when the host releases it, exits, or is killed with
 * SIGKILL, so the directory goes in every case. The janitor ignores the terminal's signals, so ^C
 * cannot remove it before the host is done with the directory.
 *
 * @module
 */
import { type UdpHelper, udpHelper } from "./tunnel/udp_native.ts";

/** What {@link lockDown} gave up, and how to end the run. */
export interface Sandbox {
  /** The permissions revoked (now "prompt", which `--no-prompt` turns into a refusal). */
  readonly revoked: readonly Deno.PermissionName[];
  /** Whether a janitor will remove the private directory. */
  readonly janitor: boolean;
  /**
   * Revokes what `deferWrite` kept (write, when a janitor runs); nothing otherwise. `revoked`
   * names it from then on.
   */
  revokeDeferred(): Promise<void>;
  /**
   * Ends the run: the janitor removes the private directory. Resolves once it has (at most
   * `timeoutMs`). Safe to call more than once.
   */
  release(timeoutMs?: number): Promise<void>;
}

/** The shell the janitor runs in; any POSIX sh. */
export const JANITOR_SHELL = "/bin/sh";

const JANITOR_SCRIPT = 'trap "" HUP INT QUIT TERM TSTP; while read -r _; do :; done; ' +
  'exec rm -rf -- "$1"';

/**
 * Starts the janitor for `privateDir`, then revokes `run`, `write` and `env` for the rest of the
 * process's life. Call it right after the wrapped program has started, and `release()` when it
 * has ended. Without a usable `/bin/sh` (or permission to run it) nothing is revoked but `run`
 * and `env`, and write stays so that the host can remove the directory itself. With `deferWrite`
 * write stays until `revokeDeferred()`: `run` creates its status socket (which needs write) once
 * its tunnel is up, after the program has started, and the janitor must be running from the
 * program's start (a host killed in between still leaves no directory).
 *
 * @example
 * ```ts ignore
 * const child = new Deno.Command(target, { args, env }).spawn();
 * const sandbox = await lockDown(dir);
 * try {
 *   await child.status;
 * } finally {
 *   await sandbox.release();
 * }
 * ```
 */
export async function lockDown(
  privateDir: string,
  options: { shell?: string; deferWrite?: boolean } = {},
): Promise<Sandbox> {
  let janitor: Deno.ChildProcess | undefined;
  let writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  try {
    janitor = new Deno.Command(options.shell ?? JANITOR_SHELL, {
      args: ["-c", JANITOR_SCRIPT, "wrapguard-janitor", privateDir],
      stdin: "piped",
      stdout: "null",
      stderr: "null",
    }).spawn();
    writer = janitor.stdin.getWriter();
    // The host may end (Deno.exit) without releasing: the janitor must not keep it alive.
    janitor.unref();
  } catch {
    janitor = undefined;
  }
  const revoked: Deno.PermissionName[] = janitor && !options.deferWrite
    ? ["run", "write", "env"]
    : ["run", "env"];
  for (const name of revoked) await Deno.permissions.revoke({ name });

  let released: Promise<void> | undefined;
  return {
    revoked,
    janitor: janitor !== undefined,
    async revokeDeferred(): Promise<void> {
      if (!janitor || revoked.includes("write")) return;
      await Deno.permissions.revoke({ name: "write" });
      revoked.splice(1, 0, "write");
    },
    release(timeoutMs = 5000): Promise<void> {
      released ??= (async () => {
        if (!janitor || !writer) {
          await Deno.remove(privateDir, { recursive: true }).catch(() => {});
          return;
        }
        await writer.close().catch(() => {});
        janitor.ref();
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          janitor.status,
          new Promise((resolve) => timer = setTimeout(resolve, timeoutMs)),
        ]);
        clearTimeout(timer);
        janitor.unref();
      })();
      return released;
    },
  };
}

/** Every permission Deno knows, in the order `doctor` reports them. */
const PERMISSION_NAMES: readonly Deno.PermissionName[] = [
  "net",
  "read",
  "write",
  "run",
  "env",
  "sys",
  "ffi",
];

/** The state of each permission in this process (granted, prompt or denied). */
export async function permissionStates(): Promise<Record<string, Deno.PermissionState>> {
  const out: Record<string, Deno.PermissionState> = {};
  for (const name of PERMISSION_NAMES) {
    try {
      out[name] = (await Deno.permissions.query({ name } as Deno.PermissionDescriptor)).state;
    } catch {
      // a name this Deno does not know
    }
  }
  return out;
}

/**
 * The CLI's first step: loads the batched UDP helper (the only use of FFI), then revokes ffi for
 * the rest of the process's life, before any config or packet is read, so that nothing reached
 * through the tunnel can open a library. Returns the helper's state for `doctor` and the log.
 */
export async function loadHelperThenDropFfi(): Promise<UdpHelper> {
  const helper = await udpHelper();
  await Deno.permissions.revoke({ name: "ffi" });
  return helper;
}
