/**
 * Helpers for the `forward` and `proxy` tests, on top of the world of `wrapguard run`
 * (run_world.ts): wireguard-go and kernel services in the peer namespace, and the wrapguard
 * process, here `forward` or `proxy`, in the routeless host namespace. Unix sockets live in the
 * topology's temp dir, which the test process reaches directly (a path is not per namespace).
 *
 * @module
 */
import type { Spawned } from "./proc.ts";
import type { RunWorld } from "./run_world.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const FLAGS = Deno.readTextFileSync(`${ROOT}cli/permissions.flags`).split(/\s+/).filter((f) => f);
/** No colours; no update check (the runtime's own traffic, not ours). */
export const HOST_ENV: Record<string, string> = { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" };

/** argv of `wrapguard <args…>` as the dev task runs it (the permission flags of the README). */
export function wrapguardArgv(args: string[]): string[] {
  return [Deno.execPath(), "run", ...FLAGS, `${ROOT}cli/main.ts`, ...args];
}

/** One JSON log line of wrapguard. */
export type LogLine = Record<string, unknown> & { level: string; msg: string };

/** The JSON lines wrapguard has written to stderr so far. */
export function logLines(p: Spawned): LogLine[] {
  const out: LogLine[] = [];
  for (const line of p.stderrText().split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      out.push(JSON.parse(line));
    } catch {
      // a line still being written
    }
  }
  return out;
}

/** Waits until wrapguard has logged `count` lines with message `msg`; returns them. */
export async function waitForLog(
  p: Spawned,
  msg: string,
  count = 1,
  timeoutMs = 20_000,
): Promise<LogLine[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = logLines(p).filter((l) => l.msg === msg);
    if (found.length >= count) return found;
    if (p.exited || Date.now() > deadline) {
      throw new Error(
        `wrapguard did not log ${count}× "${msg}" (${p.exited ? "it exited" : "timeout"}):\n` +
          p.stderrText().slice(-4000),
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts `wrapguard <cmd> --config <world config> <args…>` in the host namespace. */
export function spawnWrapguard(
  w: RunWorld,
  cmd: "forward" | "proxy",
  args: string[],
  env: Record<string, string> = {},
): Spawned {
  return w.topo.spawn(w.host, wrapguardArgv([cmd, "--config", w.configPath, ...args]), {
    env: { ...HOST_ENV, ...env },
  });
}

function concat(chunks: Uint8Array[], total: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** Writes `data` and half-closes while reading to end of stream; returns what was read. */
export async function exchange(
  conn: Deno.Conn,
  data: Uint8Array,
): Promise<Uint8Array<ArrayBuffer>> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reading = (async () => {
    const buf = new Uint8Array(65536);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
      total += n;
    }
  })();
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off, off + 65536));
  await conn.closeWrite();
  await reading;
  conn.close();
  return concat(chunks, total);
}

/** A Unix-socket echo server in this process (each connection echoes until end of stream). */
export function unixEcho(path: string): { close(): Promise<void>; accepted: () => number } {
  const listener = Deno.listen({ transport: "unix", path });
  let accepted = 0;
  const conns = new Set<Deno.Conn>();
  const serving: Promise<void>[] = [];
  const loop = (async () => {
    for await (const conn of listener) {
      accepted++;
      conns.add(conn);
      serving.push((async () => {
        const buf = new Uint8Array(65536);
        try {
          for (;;) {
            const n = await conn.read(buf);
            if (n === null) break;
            let off = 0;
            while (off < n) off += await conn.write(buf.subarray(off, n));
          }
          await conn.closeWrite();
        } catch {
          // the other side went away
        } finally {
          conns.delete(conn);
          try {
            conn.close();
          } catch {
            // closed
          }
        }
      })());
    }
  })();
  return {
    accepted: () => accepted,
    async close() {
      listener.close();
      await loop.catch(() => {});
      for (const c of conns) c.close();
      await Promise.all(serving);
    },
  };
}
