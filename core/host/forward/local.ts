/**
 * The local ends of forwards: listeners on Unix paths and loopback TCP (or a socket passed by the
 * service manager), and connections to local targets.
 *
 * A Unix socket is created mode 0600 with no moment at which another user could connect: it is
 * bound inside a fresh 0700 directory next to the requested path, chmod-ed, then renamed into
 * place (the socket belongs to the inode, so a rename keeps it listening). An existing path is
 * replaced only when it is a stale socket (nothing accepts on it); a live socket or any other
 * file is refused. On close the path is removed if it is still our socket.
 *
 * @module
 */
import type { Duplex } from "./relay.ts";
import type { LocalTarget } from "./spec.ts";
import { NodeListener } from "./node_listener.ts";
import { PassedListener, type PassedSocket } from "./systemd.ts";

/** A local listener of any kind. */
export interface LocalListener {
  /** For logs: `unix:/path`, `tcp:127.0.0.1:8080`, `systemd:NAME (fd 3)`. */
  readonly description: string;
  accept(): Promise<Duplex>;
  close(): Promise<void>;
}

/** Thrown when a Unix socket path is taken by something we must not replace. */
export class PathInUseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PathInUseError";
  }
}

function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : path.slice(0, i);
}

/** Whether a socket at `path` has a listener (connect succeeds) or is stale. */
async function socketIsLive(path: string): Promise<boolean> {
  try {
    const c = await Deno.connect({ transport: "unix", path });
    c.close();
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.ConnectionRefused || e instanceof Deno.errors.NotFound) {
      return false;
    }
    // Anything else (permission denied: someone else's socket) is not ours to replace.
    return true;
  }
}

class DenoListener implements LocalListener {
  readonly description: string;
  readonly #listener: Deno.Listener;
  readonly #onClose: () => Promise<void>;

  constructor(listener: Deno.Listener, description: string, onClose = () => Promise.resolve()) {
    this.#listener = listener;
    this.description = description;
    this.#onClose = onClose;
  }

  accept(): Promise<Duplex> {
    return this.#listener.accept();
  }

  get addr(): Deno.Addr {
    return this.#listener.addr;
  }

  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // closed already
    }
    await this.#onClose();
  }
}

/** Listens on a Unix socket at `path`, mode 0600 from the start. */
export async function listenUnix(path: string): Promise<LocalListener> {
  let existing: Deno.FileInfo | undefined;
  try {
    existing = await Deno.lstat(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (existing) {
    if (!existing.isSocket) {
      throw new PathInUseError(`Cannot listen on ${path}: it exists and is not a socket`);
    }
    if (await socketIsLive(path)) {
      throw new PathInUseError(`Cannot listen on ${path}: something is listening there already`);
    }
  }
  const dir = await Deno.makeTempDir({ dir: dirname(path), prefix: ".wg" });
  let listener: Deno.Listener | undefined;
  try {
    await Deno.chmod(dir, 0o700);
    const staging = `${dir}/s`;
    if (new TextEncoder().encode(staging).length > 107) {
      throw new RangeError(
        `Cannot listen on ${path}: the staging path ${staging} is too long for a Unix socket`,
      );
    }
    listener = Deno.listen({ transport: "unix", path: staging });
    await Deno.chmod(staging, 0o600);
    await Deno.rename(staging, path);
  } catch (e) {
    listener?.close();
    throw e;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  const ino = (await Deno.lstat(path)).ino;
  return new DenoListener(listener, `unix:${path}`, async () => {
    try {
      const now = await Deno.lstat(path);
      // Only our own socket: another process may have replaced it meanwhile.
      if (now.isSocket && now.ino === ino) await Deno.remove(path);
    } catch {
      // gone already
    }
  });
}

/**
 * Listens on TCP `hostname:port` (port 0 picks one; the description shows the one taken). Through
 * `node:net`, so that a tunnel reset reaches the local client as a reset (node_listener.ts).
 */
export async function listenTcp(hostname: string, port: number): Promise<LocalListener> {
  const l = await NodeListener.listen({ host: hostname, port });
  return {
    description: `tcp:${l.address()}`,
    accept: () => l.accept(),
    close: () => l.close(),
  };
}

/** Adopts a socket passed by the service manager. */
export async function listenPassed(socket: PassedSocket): Promise<LocalListener> {
  const l = await PassedListener.adopt(socket);
  const description = `systemd:${socket.name} (fd ${socket.fd}, ${l.describe()})`;
  return {
    description,
    accept: () => l.accept(),
    close: () => l.close(),
  };
}

/** Connects to a local target. */
export async function connectLocal(target: LocalTarget): Promise<Duplex> {
  if (target.kind === "unix") return await Deno.connect({ transport: "unix", path: target.path });
  return await Deno.connect({ transport: "tcp", hostname: target.hostname, port: target.port });
}

/** `unix:/path` or `tcp:host:port`, for logs. */
export function describeTarget(target: LocalTarget): string {
  if (target.kind === "unix") return `unix:${target.path}`;
  const h = target.hostname.includes(":") ? `[${target.hostname}]` : target.hostname;
  return `tcp:${h}:${target.port}`;
}
