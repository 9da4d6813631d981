/**
 * `wrapguard <command>`: dispatches to one module per command. Each command module exports
 * `main(args): Promise<number>` returning the process exit code, so commands are testable
 * without spawning a process.
 *
 * @module
 */

type Command = {
  summary: string;
  load: () => Promise<{ main(args: string[]): Promise<number> }>;
  /** Opens a tunnel: the batched UDP helper is loaded first, then ffi is revoked. */
  tunnel?: true;
};

const commands: Record<string, Command> = {
  run: {
    summary: "run a program with its network traffic on the WireGuard network",
    load: () => import("./run.ts"),
    tunnel: true,
  },
  forward: {
    summary: "forward Unix/TCP sockets to and from the WireGuard network (like ssh -L/-R)",
    load: () => import("./forward.ts"),
    tunnel: true,
  },
  proxy: {
    summary: "SOCKS5 and HTTP proxy into the WireGuard network (for static programs, browsers…)",
    load: () => import("./proxy.ts"),
    tunnel: true,
  },
  show: {
    summary: "list your running tunnels: peers, endpoints, handshakes, transfer (as wg show)",
    load: () => import("./show.ts"),
  },
  doctor: {
    summary: "check a config, its peers, the interposer and a program before running it",
    load: () => import("./doctor.ts"),
    tunnel: true,
  },
  selftest: {
    summary: "prove the tunnel works on this machine with an embedded peer",
    load: () => import("./selftest.ts"),
    tunnel: true,
  },
  genkey: {
    summary: "print a new private key (as wg genkey)",
    load: () => import("./keys.ts").then((m) => ({ main: m.genkey })),
  },
  pubkey: {
    summary: "read a private key on stdin, print its public key (as wg pubkey)",
    load: () => import("./keys.ts").then((m) => ({ main: m.pubkey })),
  },
  genpsk: {
    summary: "print a new preshared key (as wg genpsk)",
    load: () => import("./keys.ts").then((m) => ({ main: m.genpsk })),
  },
};

export const VERSION = "0.1.0";

function usage(): string {
  const lines = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
  return `Usage: wrapguard <command> [options]\n\nCommands:\n${lines.join("\n")}\n\n` +
    `Run 'wrapguard <command> --help' for a command's options.\n`;
}

export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    console.log(usage());
    return name === undefined ? 2 : 0;
  }
  if (name === "--version" || name === "-V") {
    console.log(`wrapguard ${VERSION}`);
    return 0;
  }
  const command = commands[name];
  if (!command) {
    console.error(`wrapguard: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  return await (await command.load()).main(rest);
}

if (import.meta.main) {
  // Only commands with a tunnel: the others need no helper, and revoking a permission under
  // --allow-all also ends the "all" that reading /proc/self/fd needs (genkey's umask warning).
  if (commands[Deno.args[0] ?? ""]?.tunnel) {
    const { loadHelperThenDropFfi } = await import("../core/host/sandbox.ts");
    await loadHelperThenDropFfi();
  }
  Deno.exit(await main(Deno.args));
}
