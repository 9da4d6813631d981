/**
 * Listening sockets passed by a service manager (systemd's socket activation, sd_listen_fds(3)):
 * `LISTEN_FDS=n` sockets start at fd 3, `LISTEN_PID` must be our pid, `LISTEN_FDNAMES` names them
 * (colon-separated, from each socket's `FileDescriptorName=`, by default the socket unit's name).
 *
 * Deno has no API that turns an inherited descriptor into a `Deno.Listener`, but its `node:net`
 * does: `server.listen({ fd })` adopts a listening socket (Unix or TCP) as Node's does, with no
 * FFI, no helper process and no extra permission. Only `Accept=no` units fit (a listening socket,
 * not one connection per process).
 *
 * @module
 */
import { NodeListener } from "./node_listener.ts";
import type { NodeSocketDuplex } from "./relay.ts";

/** The first passed descriptor (SD_LISTEN_FDS_START). */
export const ListenFdsStart = 3;

/** One socket passed by the service manager. */
export interface PassedSocket {
  fd: number;
  /** Its `FileDescriptorName=`, or "unknown" when the manager passed no names (as systemd). */
  name: string;
}

/** Thrown when the environment says sockets were passed but they cannot be used. */
export class SocketActivationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SocketActivationError";
  }
}

/**
 * Reads `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` from `env`. Empty when nothing was
 * passed to `pid` (no variables, or they were meant for another process, e.g. a parent).
 */
export function passedSockets(
  env: Record<string, string | undefined>,
  pid: number,
): PassedSocket[] {
  const fds = env.LISTEN_FDS, forPid = env.LISTEN_PID;
  if (fds === undefined || fds === "") return [];
  if (forPid !== undefined && forPid !== "" && Number(forPid) !== pid) return [];
  if (!/^\d+$/.test(fds) || Number(fds) > 1024) {
    throw new SocketActivationError(`LISTEN_FDS='${fds}' is not a count of descriptors`);
  }
  const n = Number(fds);
  const names = env.LISTEN_FDNAMES?.split(":") ?? [];
  if (names.length > 0 && names.length !== n) {
    throw new SocketActivationError(
      `LISTEN_FDNAMES names ${names.length} sockets but LISTEN_FDS is ${n}`,
    );
  }
  return Array.from(
    { length: n },
    (_, i) => ({ fd: ListenFdsStart + i, name: names[i] ?? "unknown" }),
  );
}

/**
 * Picks a passed socket for each request, in order: a name takes the socket of that name, no name
 * the first socket not yet taken. Throws when one cannot be satisfied.
 */
export function assignPassedSockets(
  requests: readonly (string | undefined)[],
  passed: readonly PassedSocket[],
): PassedSocket[] {
  const taken = new Set<number>();
  const out: PassedSocket[] = [];
  // Named requests first, so that an unnamed one cannot take a socket a later name needs.
  const byIndex = new Map<number, PassedSocket>();
  requests.forEach((name, i) => {
    if (name === undefined) return;
    const s = passed.find((p) => p.name === name && !taken.has(p.fd));
    if (!s) {
      const names = passed.map((p) => p.name).join(", ") || "none";
      throw new SocketActivationError(`no passed socket is named '${name}' (passed: ${names})`);
    }
    taken.add(s.fd);
    byIndex.set(i, s);
  });
  requests.forEach((name, i) => {
    if (name !== undefined) return;
    const s = passed.find((p) => !taken.has(p.fd));
    if (!s) {
      throw new SocketActivationError(
        passed.length === 0
          ? "systemd: no sockets were passed (LISTEN_FDS is not set for this process)"
          : `systemd: ${requests.length} forwards want a passed socket, but ${passed.length} were passed`,
      );
    }
    taken.add(s.fd);
    byIndex.set(i, s);
  });
  for (let i = 0; i < requests.length; i++) out.push(byIndex.get(i)!);
  return out;
}

/** A passed listening socket, adopted through `node:net`. */
export class PassedListener {
  readonly fd: number;
  readonly name: string;
  readonly #listener: NodeListener;

  private constructor(socket: PassedSocket, listener: NodeListener) {
    this.fd = socket.fd;
    this.name = socket.name;
    this.#listener = listener;
  }

  /** Starts accepting on `socket.fd`; rejects when it is not a listening socket. */
  static async adopt(socket: PassedSocket): Promise<PassedListener> {
    try {
      return new PassedListener(socket, await NodeListener.listen({ fd: socket.fd }));
    } catch (e) {
      throw new SocketActivationError(
        `cannot listen on passed fd ${socket.fd} (${socket.name}): ${(e as Error).message}; it ` +
          `must be a listening stream socket (a .socket unit with Accept=no)`,
      );
    }
  }

  /** What `address()` says: `host:port` for TCP; Unix sockets show only their fd. */
  describe(): string {
    return this.#listener.address() ?? `fd ${this.fd}`;
  }

  /** The next connection; rejects with `BadResource` once closed. */
  accept(): Promise<NodeSocketDuplex> {
    return this.#listener.accept();
  }

  /** Stops accepting; the socket stays the service manager's to listen on. */
  close(): Promise<void> {
    return this.#listener.close();
  }
}
