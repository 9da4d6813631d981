/**
 * `wrapguard proxy --config FILE --socks5 ADDR:PORT --http ADDR:PORT`: a SOCKS5 and HTTP proxy
 * into the WireGuard network, for programs that cannot be wrapped (static binaries, Go programs)
 * or that speak to proxies anyway (browsers, git, kubectl, curl).
 *
 * @module
 */
import { parseOptions } from "./_args.ts";
import { isLoopback } from "../core/host/forward/spec.ts";
import { ProxyServer } from "../core/host/proxy/mod.ts";
import { Credentials, type ListenAddr, parseListenAddr } from "../core/host/proxy/io.ts";
import { TUNNEL_OPTIONS, type TunnelCliOptions, UsageError } from "./_options.ts";
import { ROUTING_HELP, serviceMain, serviceOptions } from "./_service.ts";

const HELP =
  `Usage: wrapguard proxy --config FILE [--socks5 ADDR:PORT]… [--http ADDR:PORT]… [options]

Serves a SOCKS5 and/or an HTTP proxy whose connections go into the WireGuard network
of FILE (a wg-quick config), for programs that cannot be wrapped with 'wrapguard run'
(statically linked programs, Go programs) and for proxy-aware ones (browsers, git,
kubectl, curl). Names are resolved through the tunnel with the config's DNS =.
Nothing goes to the host network: a destination outside every peer's AllowedIPs (and
every --route, --exit-node and Route =) is refused.

  --socks5 ADDR:PORT  SOCKS5 (RFC 1928): CONNECT and UDP ASSOCIATE; names sent by the
                      client (socks5h://, curl --socks5-hostname) resolve in the tunnel
  --http ADDR:PORT    HTTP: CONNECT (https and anything else) and plain http:// requests
                      ADDR:PORT may be PORT alone (127.0.0.1), or [::1]:PORT; port 0
                      picks a free one (the log says which)

Options:
  -c, --config FILE     the wg-quick config (required)
      --auth-file FILE  require a user and password from FILE, one "user:password" per
                        line (SOCKS5 RFC 1929 and HTTP Basic); keep it mode 0600
      --allow-remote    allow listening on an address that is not loopback (anyone who
                        can reach it can use the tunnel: combine with --auth-file)
${ROUTING_HELP}
      --log-level LEVEL error, warn, info (default) or debug (one line per connection)
      --log-file FILE   append the log to FILE (JSON lines) instead of stderr
      --log-format FMT  json or text for the log on stderr (default: text on a
                        terminal, json otherwise)
  -h, --help

Examples:
  wrapguard proxy -c wg0.conf --socks5 1080 --http 3128
  curl --socks5-hostname 127.0.0.1:1080 http://service.internal/
  HTTPS_PROXY=http://127.0.0.1:3128 kubectl get pods
  git -c http.proxy=socks5h://127.0.0.1:1080 clone http://git.internal/repo
  wrapguard proxy -c wg0.conf --http 3128 --exit-node 10.0.0.1   # the web via a peer

'wrapguard show' lists the running tunnel. Runs until SIGINT, SIGTERM or SIGHUP
(exit 0). Exit status 1 when the tunnel or a listener cannot start, 2 for usage
errors.
`;

interface ProxyCliOptions extends TunnelCliOptions {
  socks5: ListenAddr[];
  http: ListenAddr[];
  authFile?: string;
}

function parse(args: string[]): ProxyCliOptions | "help" {
  let values;
  try {
    values = parseOptions(args, {
      ...TUNNEL_OPTIONS,
      socks5: { type: "string", multiple: true },
      http: { type: "string", multiple: true },
      "auth-file": { type: "string" },
      "allow-remote": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (values.help) return "help";
  const shared = serviceOptions("proxy", values);
  const allowRemote = values["allow-remote"] ?? false;
  let socks5: ListenAddr[], http: ListenAddr[];
  try {
    socks5 = (values.socks5 ?? []).map((a) => parseListenAddr(a, `--socks5 ${a}`, allowRemote));
    http = (values.http ?? []).map((a) => parseListenAddr(a, `--http ${a}`, allowRemote));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (socks5.length + http.length === 0) throw new UsageError("give --socks5 or --http (or both)");
  return { ...shared, socks5, http, authFile: values["auth-file"] };
}

function hostPort(a: { hostname: string; port: number }): string {
  return `${a.hostname.includes(":") ? `[${a.hostname}]` : a.hostname}:${a.port}`;
}

export function main(args: string[]): Promise<number> {
  return serviceMain<ProxyCliOptions, undefined, ProxyServer>(args, {
    kind: "proxy",
    help: HELP,
    parse,
    prepare: () => undefined,
    describe: (opts) =>
      [
        ...opts.socks5.map((a) => `--socks5 ${hostPort(a)}`),
        ...opts.http.map((a) => `--http ${hostPort(a)}`),
      ].join(" "),
    async start(tunnel, opts, _context, logger) {
      let credentials: Credentials | undefined;
      if (opts.authFile !== undefined) {
        credentials = await Credentials.parse(
          await Deno.readTextFile(opts.authFile),
          opts.authFile,
        );
        const mode = (await Deno.stat(opts.authFile)).mode;
        if (mode !== null && (mode & 0o077) !== 0) {
          logger.warn("the auth file is readable by others (chmod 600 it)", {
            file: opts.authFile,
          });
        }
      }
      const server = ProxyServer.start(tunnel, {
        socks5: opts.socks5,
        http: opts.http,
        credentials,
        logger,
      });
      if (!credentials && opts.socks5.concat(opts.http).some((a) => !isLoopback(a.hostname))) {
        logger.warn(
          "listening beyond loopback without --auth-file: whoever reaches it can use the tunnel",
        );
      }
      return server;
    },
    announce(server, opts, logger) {
      for (const l of server.listening) {
        logger.info("proxy listening", {
          protocol: l.protocol,
          address: hostPort(l),
          auth: opts.authFile !== undefined,
        });
      }
    },
  });
}
