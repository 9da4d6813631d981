/**
 * Reverse lookups under `wrapguard run` with `DNS =`: gethostbyaddr (getent), getnameinfo and
 * gethostbyaddr_r (python), and dig -x ask dnsmasq's PTR records through the tunnel, after
 * /etc/hosts; the host namespace has a default route (to the peer's veth address), so a query that
 * escaped would leave, and tcpdump on its veth sees only WireGuard.
 */
import assert from "node:assert/strict";
import { netnsTest, run, withTopology } from "./_support/netns.ts";
import { OURS4, PEER4, PEER6, SVC_NAME, withRunWorld } from "./_support/run_world.ts";
import { startDnsmasq } from "./_support/dnsmasq.ts";
import { capture, leaks, stopCapture } from "./_support/capture.ts";

const esc = (s: string) => s.replaceAll(".", "\\.");

/** A tunnel address that only a --ptr-record names (no A record, nothing in /etc/hosts). */
const PTR_ONLY = OURS4;
const PTR_ONLY_NAME = "me.wg.test";
/** A tunnel address that only the namespace's /etc/hosts names. */
const IN_HOSTS = "10.77.0.7";
/** A tunnel address nobody names. */
const NAMELESS = "10.77.0.99";

const PY = `
import socket, sys
def show(f):
    try:
        print(repr(f()))
    except OSError as e:
        print(type(e).__name__, e.errno)
show(lambda: socket.gethostbyaddr("${PEER4}"))
show(lambda: socket.gethostbyaddr("${PEER6}"))
show(lambda: socket.gethostbyaddr("${IN_HOSTS}"))
show(lambda: socket.gethostbyaddr("${NAMELESS}"))
show(lambda: socket.getnameinfo(("${PTR_ONLY}", 80), 0))
show(lambda: socket.getnameinfo(("${PTR_ONLY}", 80), socket.NI_NUMERICSERV | socket.NI_NOFQDN))
show(lambda: socket.getnameinfo(("${PEER6}", 53, 0, 0), socket.NI_DGRAM))
show(lambda: socket.getnameinfo(("${NAMELESS}", 22), 0))
show(lambda: socket.getnameinfo(("${NAMELESS}", 22), socket.NI_NAMEREQD))
show(lambda: socket.getnameinfo(("${PEER4}", 22), socket.NI_NUMERICHOST))
`;

netnsTest(
  "wrapguard run: reverse lookups ask the tunnel's DNS (PTR), never the host",
  async (t) => {
    await withTopology({ hostNamespace: true }, async (topo) => {
      await withRunWorld(
        topo,
        { dns: false, interfaceExtra: `DNS = ${PEER4}, wg.test` },
        async (w) => {
          const dns = await startDnsmasq(topo, topo.peer, {
            listen: [PEER4],
            localDomains: ["wg.test", "0.77.10.in-addr.arpa", "7.7.d.f.ip6.arpa"],
            // A host record brings its PTR records with it (dnsmasq(8) --host-record).
            hostRecords: [{ name: SVC_NAME, addresses: [PEER4, PEER6] }],
            extraArgs: [`--ptr-record=2.0.77.10.in-addr.arpa,${PTR_ONLY_NAME}`],
          });
          // `ip netns exec` bind-mounts /etc/netns/<ns>/hosts over /etc/hosts.
          await Deno.writeTextFile(
            `/etc/netns/${w.host}/hosts`,
            `127.0.0.1 localhost\n${IN_HOSTS} fromhosts.wg.test fromhosts\n`,
          );
          for (
            const args of [["default", "via", topo.peerAddr], [
              "-6",
              "default",
              "via",
              topo.peerAddr6,
            ]]
          ) {
            const six = args[0] === "-6";
            await run(null, [
              "ip",
              "-n",
              w.host,
              ...(six ? ["-6"] : []),
              "route",
              "add",
              ...args.filter((a) => a !== "-6"),
            ], {
              check: true,
            });
          }
          const link = topo.links[0]!;
          const wgUdp = new RegExp(
            `IP ${esc(topo.hostAddr)}\\.${w.listenPort} > ${
              esc(topo.peerAddr)
            }\\.${w.wg.listenPort}: UDP|` +
              `IP ${esc(topo.peerAddr)}\\.${w.wg.listenPort} > ${
                esc(topo.hostAddr)
              }\\.${w.listenPort}: UDP`,
          );
          const betweenRuns = new RegExp(
            `IP ${esc(topo.hostAddr)} > ${esc(topo.peerAddr)}: ICMP ${
              esc(topo.hostAddr)
            } udp port ${w.listenPort} unreachable`,
          );

          await t.step(
            "getent, dig -x and python get dnsmasq's PTR answers; only WireGuard leaves",
            async () => {
              const dump = await capture(topo, w.host, link.hostIf);
              let lines: string[];
              const before = dns.queries().length;
              try {
                const g4 = await w.wrap(["getent", "hosts", PEER4]);
                assert.equal(g4.code, 0, g4.stderr);
                assert.match(g4.stdout, new RegExp(`^${esc(PEER4)}\\s+${esc(SVC_NAME)}$`, "m"));
                const g6 = await w.wrap(["getent", "hosts", PEER6]);
                assert.equal(g6.code, 0, g6.stderr);
                assert.match(g6.stdout, new RegExp(`^${PEER6}\\s+${esc(SVC_NAME)}$`, "m"));
                const only = await w.wrap(["getent", "hosts", PTR_ONLY]);
                assert.match(
                  only.stdout,
                  new RegExp(`^${esc(PTR_ONLY)}\\s+${esc(PTR_ONLY_NAME)}$`, "m"),
                  only.stderr,
                );
                const nameless = await w.wrap(["getent", "hosts", NAMELESS]);
                assert.equal(nameless.code, 2, nameless.stdout);

                const dig = await w.wrap(["dig", "+short", "+tries=1", "+time=3", "-x", PEER4]);
                assert.equal(dig.code, 0, dig.stderr);
                assert.equal(dig.stdout.trim(), `${SVC_NAME}.`);
                const dig6 = await w.wrap(["dig", "+short", "+tries=1", "+time=3", "-x", PEER6]);
                assert.equal(dig6.stdout.trim(), `${SVC_NAME}.`, dig6.stderr);

                const py = await w.wrap(["python3", "-c", PY]);
                assert.equal(py.code, 0, py.stderr);
                assert.deepEqual(py.stdout.trim().split("\n"), [
                  `('${SVC_NAME}', [], ['${PEER4}'])`,
                  `('${SVC_NAME}', [], ['${PEER6}'])`,
                  `('fromhosts.wg.test', ['fromhosts'], ['${IN_HOSTS}'])`,
                  "herror 1", // HOST_NOT_FOUND
                  `('${PTR_ONLY_NAME}', 'http')`,
                  "('me', '80')",
                  `('${SVC_NAME}', 'domain')`,
                  `('${NAMELESS}', 'ssh')`,
                  `gaierror ${-2}`, // EAI_NONAME
                  `('${PEER4}', 'ssh')`,
                ]);
              } finally {
                lines = await stopCapture(dump);
              }
              assert.ok(
                lines.some((l) => wgUdp.test(l)),
                `no WireGuard packets captured:\n${lines.join("\n")}`,
              );
              assert.deepEqual(
                leaks(lines, wgUdp, betweenRuns),
                [],
                "packets other than WireGuard left the wrapped side",
              );

              // Every PTR question reached dnsmasq from our tunnel address; /etc/hosts answered its
              // own address without one.
              const asked = dns.queries().slice(before);
              const ptrs = asked.filter((q) => q.type === "PTR");
              assert.ok(asked.every((q) => q.from === OURS4), dns.log());
              const names = new Set(ptrs.map((q) => q.name));
              for (
                const n of [
                  "1.0.77.10.in-addr.arpa",
                  "2.0.77.10.in-addr.arpa",
                  "99.0.77.10.in-addr.arpa",
                ]
              ) {
                assert.ok(names.has(n), `no PTR query for ${n}:\n${dns.log()}`);
              }
              assert.ok([...names].some((n) => n.endsWith(".7.7.d.f.ip6.arpa")), dns.log());
              assert.ok(
                !names.has("7.0.77.10.in-addr.arpa"),
                "/etc/hosts answers before the tunnel",
              );
            },
          );

          await t.step(
            "unwrapped, the same lookup leaves for the host's resolver (the control)",
            async () => {
              const dump = await capture(topo, w.host, link.hostIf);
              let lines: string[];
              try {
                await run(w.host, ["getent", "hosts", NAMELESS], { timeoutMs: 20_000 });
              } finally {
                lines = await stopCapture(dump);
              }
              assert.match(
                leaks(lines, wgUdp, betweenRuns).join("\n"),
                new RegExp(`> ${esc(w.decoyNameserver)}\\.53: .*PTR\\?`),
              );
            },
          );
        },
      );
    });
  },
  { requires: ["tcpdump", "python3", "dnsmasq", "dig", "getent"], timeoutMs: 120_000 },
);
