/**
 * The forwards of `wrapguard forward`, written the way ssh writes them:
 *
 * ```text
 *   -L LOCAL=DEST     a local listener whose connections go to DEST through the tunnel
 *        LOCAL  unix:/path | tcp:127.0.0.1:8080 | tcp:[::1]:8080 | systemd | systemd:NAME
 *        DEST   10.0.0.1:4000 | [fd00::1]:4000 | name.example:4000 (resolved through the tunnel)
 *   -R BIND=TARGET    a listener on our tunnel address whose connections go to a local TARGET
 *        BIND   4000 | 10.0.0.2:4000 | [fd00::2]:4000
 *        TARGET unix:/path | tcp:host:port | tcp:[::1]:port
 * ```
 *
 * `systemd` takes a listening socket passed by the service manager (`LISTEN_FDS`): plain
 * `systemd` the next one in order, `systemd:NAME` the one whose `FileDescriptorName=` is NAME.
 * A Unix path may contain `=` in `-L` (split at the last one) and in `-R` (split at the first).
 *
 * @module
 */
import { parseIP } from "../../wire/addr.ts";

/** Where a `-L` forward accepts local connections. */
export type LocalListen =
  | { kind: "unix"; path: string }
  | { kind: "tcp"; hostname: string; port: number }
  | { kind: "systemd"; name?: string };

/** Where a `-R` forward delivers the connections it accepts on the tunnel. */
export type LocalTarget =
  | { kind: "unix"; path: string }
  | { kind: "tcp"; hostname: string; port: number };

/** A host (IP literal or name) and port. */
export interface HostPort {
  hostname: string;
  port: number;
}

/** A `-L` forward; `text` is what the user wrote. */
export interface LocalForward {
  direction: "local";
  text: string;
  listen: LocalListen;
  to: HostPort;
}

/** A `-R` forward; `text` is what the user wrote. */
export interface RemoteForward {
  direction: "remote";
  text: string;
  bind: { hostname?: string; port: number };
  to: LocalTarget;
}

/** One forward, as parsed from the command line. */
export type ForwardSpec = LocalForward | RemoteForward;

/** Thrown for a forward that cannot be parsed; the message names the option and the reason. */
export class ForwardSpecError extends SyntaxError {
  constructor(message: string) {
    super(message);
    this.name = "ForwardSpecError";
  }
}

function port(text: string, what: string, allowZero: boolean): number {
  if (!/^\d{1,5}$/.test(text)) throw new ForwardSpecError(`${what}: '${text}' is not a port`);
  const n = Number(text);
  if (n > 65535 || (n === 0 && !allowZero)) {
    throw new ForwardSpecError(`${what}: port ${n} is out of range (1-65535)`);
  }
  return n;
}

/**
 * `host:port` or `[v6]:port`. A bare IPv6 address without brackets is refused: its last group
 * could not be told from a port.
 */
export function parseHostPort(text: string, what: string, allowZero = false): HostPort {
  let host: string, portText: string;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0 || text[close + 1] !== ":") {
      throw new ForwardSpecError(`${what}: '${text}' is not [address]:port`);
    }
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    const ip = parseIP(host);
    if (!ip || ip.length !== 16) {
      throw new ForwardSpecError(`${what}: '${host}' in brackets is not an IPv6 address`);
    }
  } else {
    const colon = text.lastIndexOf(":");
    if (colon <= 0) throw new ForwardSpecError(`${what}: '${text}' is not host:port`);
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(":")) {
      throw new ForwardSpecError(`${what}: write an IPv6 address in brackets, as [${host}]:port`);
    }
    if (!/^[A-Za-z0-9.-]+$/.test(host) || host.startsWith(".") || host.startsWith("-")) {
      throw new ForwardSpecError(`${what}: '${host}' is not a host name or address`);
    }
  }
  return { hostname: host, port: port(portText, what, allowZero) };
}

function unixPath(path: string, what: string): string {
  if (path === "") throw new ForwardSpecError(`${what}: the Unix socket path is empty`);
  if (path.includes("\0")) throw new ForwardSpecError(`${what}: the path contains a NUL byte`);
  // sun_path holds 108 bytes with the terminating NUL.
  if (new TextEncoder().encode(path).length > 107) {
    throw new ForwardSpecError(`${what}: the Unix socket path is longer than 107 bytes`);
  }
  return path;
}

function localEnd(text: string, what: string, listening: boolean): LocalListen {
  if (text.startsWith("unix:")) return { kind: "unix", path: unixPath(text.slice(5), what) };
  if (text.startsWith("tcp:")) {
    const hp = parseHostPort(text.slice(4), what, listening);
    if (listening && !parseIP(hp.hostname)) {
      throw new ForwardSpecError(`${what}: listen on an IP address, not '${hp.hostname}'`);
    }
    return { kind: "tcp", ...hp };
  }
  if (listening && (text === "systemd" || text.startsWith("systemd:"))) {
    const name = text.slice(8);
    if (text.length > 7 && !/^[A-Za-z0-9._-]{1,255}$/.test(name)) {
      throw new ForwardSpecError(`${what}: '${name}' is not a FileDescriptorName`);
    }
    return name === "" ? { kind: "systemd" } : { kind: "systemd", name };
  }
  const kinds = listening
    ? "unix:PATH, tcp:ADDR:PORT or systemd[:NAME]"
    : "unix:PATH or tcp:HOST:PORT";
  throw new ForwardSpecError(`${what}: '${text}' is not ${kinds}`);
}

/** Parses the argument of `-L`. */
export function parseLocalForward(text: string): LocalForward {
  const what = `-L ${text}`;
  const eq = text.lastIndexOf("=");
  if (eq < 0) throw new ForwardSpecError(`${what}: expected LOCAL=ADDRESS:PORT`);
  const listen = localEnd(text.slice(0, eq), what, true);
  const to = parseHostPort(text.slice(eq + 1), what);
  return { direction: "local", text, listen, to };
}

/** Parses the argument of `-R`. */
export function parseRemoteForward(text: string): RemoteForward {
  const what = `-R ${text}`;
  const eq = text.indexOf("=");
  if (eq < 0) throw new ForwardSpecError(`${what}: expected PORT=TARGET`);
  const left = text.slice(0, eq);
  let bind: { hostname?: string; port: number };
  if (/^\d+$/.test(left)) bind = { port: port(left, what, false) };
  else {
    bind = parseHostPort(left, what);
    if (!parseIP(bind.hostname!)) {
      throw new ForwardSpecError(`${what}: bind to a tunnel IP address, not '${bind.hostname}'`);
    }
  }
  const to = localEnd(text.slice(eq + 1), what, false) as LocalTarget;
  return { direction: "remote", text, bind, to };
}

/** Whether `hostname` (an IP literal) is a loopback address: 127.0.0.0/8 or ::1. */
export function isLoopback(hostname: string): boolean {
  const ip = parseIP(hostname);
  if (!ip) return hostname === "localhost";
  if (ip.length === 4) return ip[0] === 127;
  // ::ffff:127.x.y.z counts too.
  const mapped = ip.subarray(0, 10).every((b) => b === 0) && ip[10] === 0xff && ip[11] === 0xff;
  if (mapped) return ip[12] === 127;
  return ip.subarray(0, 15).every((b) => b === 0) && ip[15] === 1;
}
