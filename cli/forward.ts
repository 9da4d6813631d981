/**
 * `wrapguard forward --config FILE -L LOCAL=DEST -R PORT=TARGET …`: ssh-style port forwards
 * between this machine and the WireGuard network, with no root, interface or socat.
 *
 * @module
 */
import { parseOptions } from "./_args.ts";
import { Forwarder } from "../core/host/forward/mod.ts";
import {
  type ForwardSpec,
  ForwardSpecError,
  parseLocalForward,
  parseRemoteForward,
} from "../core/host/forward/spec.ts";
import { type PassedSocket, passedSockets } from "../core/host/forward/systemd.ts";
import { TUNNEL_OPTIONS, type TunnelCliOptions, UsageError } from "./_options.ts";
import { ROUTING_HELP, serviceMain, serviceOptions } from "./_service.ts";

const HELP = `Usage: wrapguard forward --config FILE [-L LOCAL=DEST]… [-R BIND=TARGET]… [options]

Forwards connections between this machine and the WireGuard network of FILE (a
wg-quick config) as ssh -L/-R do, without root, a TUN device or socat. Any number
of forwards run in one process; each carries many connections at once, and a
half-close (shutdown of one direction) is passed through.

  -L LOCAL=DEST     accept on LOCAL, connect to DEST through the tunnel
       LOCAL   unix:PATH          a Unix socket, created mode 0600, removed on exit
               tcp:127.0.0.1:PORT, tcp:[::1]:PORT
               systemd[:NAME]     a listening socket passed by systemd (LISTEN_FDS):
                                  the next one, or the one with FileDescriptorName=NAME
       DEST    ADDRESS:PORT, [IPV6]:PORT or NAME:PORT (NAME resolved through the
               tunnel with the config's DNS =)
  -R BIND=TARGET    accept on our tunnel address, connect to TARGET on this machine
       BIND    PORT (every tunnel address), ADDRESS:PORT or [IPV6]:PORT
       TARGET  unix:PATH, tcp:HOST:PORT or tcp:[IPV6]:PORT

Options:
  -c, --config FILE     the wg-quick config (required)
      --allow-remote    allow -L tcp: on an address that is not loopback
${ROUTING_HELP}
      --log-level LEVEL error, warn, info (default) or debug (one line per connection)
      --log-file FILE   append the log to FILE (JSON lines) instead of stderr
      --log-format FMT  json or text for the log on stderr (default: text on a
                        terminal, json otherwise)
  -h, --help

Examples:
  wrapguard forward -c wg0.conf -L unix:/run/user/1000/waypipe.sock=10.0.0.2:4000
  wrapguard forward -c wg0.conf -R 4000=unix:/run/user/1000/waypipe-server.sock
  wrapguard forward -c wg0.conf -L tcp:127.0.0.1:5432=db.internal:5432
  wrapguard forward -c wg0.conf -L tcp:127.0.0.1:8080=192.0.2.7:80 --exit-node 10.0.0.1

'wrapguard show' lists the running tunnel. Runs until SIGINT, SIGTERM or SIGHUP
(exit 0). Exit status 1 when the tunnel or a forward cannot start, 2 for usage
errors.
`;

interface ForwardOptions extends TunnelCliOptions {
  specs: ForwardSpec[];
  allowRemote: boolean;
}

function parse(args: string[]): ForwardOptions | "help" {
  let values;
  try {
    values = parseOptions(args, {
      ...TUNNEL_OPTIONS,
      local: { type: "string", short: "L", multiple: true },
      remote: { type: "string", short: "R", multiple: true },
      "allow-remote": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (values.help) return "help";
  const shared = serviceOptions("forward", values);
  const specs: ForwardSpec[] = [];
  try {
    for (const l of values.local ?? []) specs.push(parseLocalForward(l));
    for (const r of values.remote ?? []) specs.push(parseRemoteForward(r));
  } catch (e) {
    if (e instanceof ForwardSpecError) throw new UsageError(e.message);
    throw e;
  }
  if (specs.length === 0) throw new UsageError("no forward given (-L or -R)");
  return { ...shared, specs, allowRemote: values["allow-remote"] ?? false };
}

export function main(args: string[]): Promise<number> {
  return serviceMain<ForwardOptions, PassedSocket[], Forwarder>(args, {
    kind: "forward",
    help: HELP,
    parse,
    // Passed sockets are ours alone: read them once and keep them from anything started later.
    prepare() {
      const passed = passedSockets(Deno.env.toObject(), Deno.pid);
      for (const v of ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"]) Deno.env.delete(v);
      return passed;
    },
    describe: (opts) =>
      opts.specs.map((s) => `${s.direction === "local" ? "-L" : "-R"} ${s.text}`).join(" "),
    start: (tunnel, opts, passed, logger) =>
      Forwarder.start(tunnel, opts.specs, { logger, passed, allowRemote: opts.allowRemote }),
    announce(forwarder, _opts, logger) {
      for (const f of forwarder.forwards) {
        logger.info("forward listening", {
          forward: `${f.spec.direction === "local" ? "-L" : "-R"} ${f.spec.text}`,
          listening: f.listening,
        });
      }
    },
  });
}
