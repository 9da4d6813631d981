/**
 * No leaks (issue 4, must-show 6): the wrapped side gets a default route (to the peer namespace's
 * veth address, inside a namespace this test created), so that anything the interposer failed to
 * capture would get out; tcpdump on its interface must then see nothing but WireGuard's UDP while
 * wrapped programs reach tunnel names and addresses. A second capture with unwrapped programs
 * proves the capture would have seen a leak. A statically linked program, which only the
 * supervisor's seccomp filter sees, leaks nothing either.
 */
import assert from "node:assert/strict";
import { netnsTest, run, waitForPort, withTopology } from "./_support/netns.ts";
import { OURS4, PEER4, PEER6, SVC_NAME, withRunWorld } from "./_support/run_world.ts";

import { capture, leaks, stopCapture } from "./_support/capture.ts";

const UDP_ECHO = new URL("./_support/udp_echo.py", import.meta.url).pathname;

const STATIC_PROBE = `
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
  /* If this ran unwrapped it would send a DNS-sized datagram to argv[1]:53. */
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons(53);
  inet_pton(AF_INET, argc > 1 ? argv[1] : "127.0.0.1", &a.sin_addr);
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  sendto(s, "static leak probe", 17, 0, (struct sockaddr *)&a, sizeof a);
  return 0;
}
`;

netnsTest(
  "wrapguard run: with a default route present, only WireGuard leaves the wrapped side",
  async (t) => {
    await withTopology({ hostNamespace: true }, async (topo) => {
      await withRunWorld(topo, {}, async (w) => {
        const link = topo.links[0]!;
        await run(null, ["ip", "-n", w.host, "route", "add", "default", "via", topo.peerAddr], {
          check: true,
        });
        await run(null, [
          "ip",
          "-n",
          w.host,
          "-6",
          "route",
          "add",
          "default",
          "via",
          topo.peerAddr6,
        ], {
          check: true,
        });
        await Deno.writeTextFile(`${topo.tmpDir}/small`, "small\n");
        topo.spawn(topo.peer, [
          "python3",
          "-m",
          "http.server",
          "--bind",
          "::",
          "--directory",
          topo.tmpDir,
          "8080",
        ]);
        topo.spawn(topo.peer, ["python3", UDP_ECHO, "server", PEER4, "9999"]);
        await waitForPort(topo.peer, 8080);
        await waitForPort(topo.peer, 9999, "udp");
        const probe = `${topo.tmpDir}/static-probe`;
        const cc = await run(null, ["gcc", "-static", "-x", "c", "-o", probe, "-"], {
          stdin: STATIC_PROBE,
        });
        assert.equal(cc.code, 0, cc.stderr);

        const wgUdp = new RegExp(
          `IP ${topo.hostAddr.replaceAll(".", "\\.")}\\.${w.listenPort} > ${
            topo.peerAddr.replaceAll(".", "\\.")
          }\\.${w.wg.listenPort}: UDP|IP ${
            topo.peerAddr.replaceAll(".", "\\.")
          }\\.${w.wg.listenPort} > ${topo.hostAddr.replaceAll(".", "\\.")}\\.${w.listenPort}: UDP`,
        );

        await t.step(
          "wrapped programs reach tunnel names and addresses; the capture sees only WireGuard",
          async () => {
            const dump = await capture(topo, w.host, link.hostIf);
            let lines: string[];
            try {
              const byName = await w.wrap([
                "curl",
                "-sS",
                "--max-time",
                "10",
                `http://${SVC_NAME}:8080/small`,
              ]);
              assert.equal(byName.stdout, "small\n", byName.stderr);
              const v6 = await w.wrap([
                "curl",
                "-sS",
                "--max-time",
                "10",
                `http://[${PEER6}]:8080/small`,
              ]);
              assert.equal(v6.stdout, "small\n", v6.stderr);
              const getent = await w.wrap(["getent", "ahosts", SVC_NAME]);
              assert.match(getent.stdout, /10\.77\.0\.1/, getent.stderr);
              const dig = await w.wrap(["dig", "+short", "+tries=1", "+time=3", SVC_NAME]);
              assert.equal(dig.stdout.trim(), PEER4, dig.stderr);
              const udp = await w.wrap(["nc", "-u", "-w", "2", PEER4, "9999"], { stdin: "udp\n" });
              assert.equal(udp.stdout, "udp\n", udp.stderr);
              // node: getaddrinfo (dns.lookup) and c-ares (dns.resolve4, its own UDP to resolv.conf).
              const node = await w.wrap([
                "node",
                "-e",
                `const dns = require("dns").promises;
Promise.all([dns.lookup("${SVC_NAME}", 4), dns.resolve4("${SVC_NAME}")])
  .then(([a, b]) => console.log(a.address, b.join(",")))
  .catch((e) => { console.error(e); process.exit(1); });`,
              ]);
              assert.equal(node.stdout.trim(), `${PEER4} ${PEER4}`, node.stderr);
              // A name that does not exist fails without asking the host's resolver.
              const nx = await w.wrap(["getent", "hosts", "nope.wg.test"]);
              assert.equal(nx.code, 2);
              // Reverse lookups ask the tunnel's DNS (PTR), inside this same capture: libc's own
              // resolver, whose sockets no interposer sees, is never used for them.
              const ptr = await w.wrap(["getent", "hosts", PEER4]);
              assert.equal(ptr.code, 0, ptr.stderr);
              assert.match(ptr.stdout, /svc\.wg\.test/);
              const ptr6 = await w.wrap([
                "python3",
                "-c",
                `
import socket
print(socket.gethostbyaddr("${PEER6}")[0])
`,
              ]);
              assert.equal(ptr6.stdout, "svc.wg.test\n", ptr6.stderr);
              // --kill-switch: a destination outside the tunnel is unreachable, although routed.
              const ks = await w.wrap(
                ["curl", "-sS", "--max-time", "5", `http://${topo.peerAddr}:8080/small`],
                { args: ["--kill-switch"] },
              );
              assert.equal(ks.code, 7, ks.stderr);
              assert.match(ks.stderr, /Network is unreachable|Couldn't connect/);
              // A statically linked program runs under the supervisor alone: its datagram to the
              // decoy nameserver (port 53 of resolv.conf's, so redirected to the tunnel's DNS)
              // must not leave as it is (this capture), nor reach the decoy.
              const st = await w.wrap([probe, w.decoyNameserver]);
              assert.equal(st.code, 0, st.stderr);
            } finally {
              lines = await stopCapture(dump);
            }
            assert.ok(
              lines.some((l) => wgUdp.test(l)),
              `no WireGuard packets captured:\n${lines.join("\n")}`,
            );
            // Between two wrapped runs nothing listens on the WireGuard port, so the kernel
            // answers wireguard-go's keepalives with port unreachable: WireGuard housekeeping,
            // carrying nothing of the wrapped programs. Exactly that message is allowed.
            const betweenRuns = new RegExp(
              `IP ${topo.hostAddr.replaceAll(".", "\\.")} > ${
                topo.peerAddr.replaceAll(".", "\\.")
              }: ICMP ${topo.hostAddr.replaceAll(".", "\\.")} udp port ${w.listenPort} unreachable`,
            );
            assert.deepEqual(
              leaks(lines, wgUdp).filter((l) => !betweenRuns.test(l)),
              [],
              "packets other than WireGuard left the wrapped side",
            );
          },
        );

        await t.step(
          "the same capture sees unwrapped programs' traffic (it would have caught a leak)",
          async () => {
            const dump = await capture(topo, w.host, link.hostIf);
            let lines: string[];
            try {
              // Through the default route straight to the peer namespace, not through the tunnel.
              const curl = await run(w.host, [
                "curl",
                "-sS",
                "--max-time",
                "5",
                `http://${PEER4}:8080/small`,
              ]);
              assert.equal(curl.stdout, "small\n", curl.stderr);
              await run(w.host, ["getent", "hosts", SVC_NAME]);
              await run(w.host, [probe, w.decoyNameserver]);
            } finally {
              lines = await stopCapture(dump);
            }
            const leaked = leaks(lines, wgUdp).join("\n");
            assert.match(leaked, /> 10\.77\.0\.1\.8080: Flags \[S\]/);
            assert.match(
              leaked,
              new RegExp(`> ${w.decoyNameserver.replaceAll(".", "\\.")}\\.53: `),
            );
            assert.ok(!leaked.includes(OURS4), "the tunnel address never appears on the veth");
          },
        );
      });
    });
  },
  {
    requires: ["tcpdump", "curl", "python3", "dnsmasq", "dig", "getent", "nc", "node", "gcc"],
    timeoutMs: 90_000,
  },
);
