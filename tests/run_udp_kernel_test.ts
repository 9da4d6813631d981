/**
 * UDP under `wrapguard run` as a kernel socket behaves (issue 13, must-shows 2 and 3):
 *
 * - a server bound to the wildcard (`0.0.0.0:P`, `[::]:P`), as python, `nc -lu`, dnsmasq and QUIC
 *   servers bind, answers the peer's datagrams from its tunnel address, and still answers a local
 *   client on loopback;
 * - a connected UDP socket whose datagram hits a closed port on the peer gets ECONNREFUSED on the
 *   next recv, from the ICMP port unreachable the peer's kernel sends back through wireguard-go.
 *   The same script run unwrapped against a closed port of the peer's kernel must print the same.
 */
import assert from "node:assert/strict";
import { netnsTest, run, withTopology } from "./_support/netns.ts";
import { OURS4, OURS6, PEER4, PEER6, type RunWorld, withRunWorld } from "./_support/run_world.ts";

/** A UDP echo server on `host`:`port` that says whom it heard: "py <source> <data>". */
const SERVER = `
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
if ":" in host:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind((host, port))
print("bound", s.getsockname()[:2], flush=True)
while True:
    data, src = s.recvfrom(2048)
    s.sendto(b"py " + src[0].encode() + b" " + data, src)
`;

/** One socket per family on the same port; each answers "v4|v6 <source> <data>". */
const TWO_SOCKETS = `
import selectors, socket, sys
port = int(sys.argv[1])
s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s4.bind(("0.0.0.0", port))
s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s6.bind(("::", port))
print("bound both", flush=True)
sel = selectors.DefaultSelector()
sel.register(s4, selectors.EVENT_READ, b"v4")
sel.register(s6, selectors.EVENT_READ, b"v6")
while True:
    for key, _ in sel.select():
        data, src = key.fileobj.recvfrom(2048)
        key.fileobj.sendto(key.data + b" " + src[0].encode() + b" " + data, src)
`;

/**
 * Sends one datagram from `src` (or any) to host:port and prints the answer and its source;
 * tried `attempts` times, `wait` seconds each (default 5 and 5).
 */
const CLIENT = `
import socket, sys
host, port, src, msg = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
attempts, wait = (int(sys.argv[5]), float(sys.argv[6])) if len(sys.argv) > 6 else (5, 5)
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
if src:
    s.bind((src, 0))
s.settimeout(wait)
for attempt in range(attempts):
    s.sendto(msg.encode(), (host, port))
    try:
        data, who = s.recvfrom(2048)
        print(data.decode().strip(), who[0], who[1], flush=True)
        break
    except socket.timeout:
        continue
else:
    print("no answer")
`;

/**
 * Connected and unconnected sockets towards a closed port: what send and recv give. The
 * unconnected one must see no error (Linux reports none without IP_RECVERR).
 */
const REFUSED = `
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
def report(what, f):
    try:
        print(what, f())
    except socket.timeout:
        print(what, "timeout")
    except OSError as e:
        print(what, type(e).__name__, e.errno)
c = socket.socket(fam, socket.SOCK_DGRAM)
c.settimeout(5)
c.connect((host, port))
report("send", lambda: c.send(b"knock"))
report("recv", lambda: len(c.recv(100)))
report("send", lambda: c.send(b"again"))
report("recv", lambda: len(c.recv(100)))
u = socket.socket(fam, socket.SOCK_DGRAM)
u.settimeout(1)
report("sendto", lambda: u.sendto(b"knock", (host, port)))
report("recvfrom", lambda: len(u.recvfrom(100)[0]))
`;

netnsTest(
  "wrapguard run: UDP servers on the wildcard, ICMP errors on connected sockets",
  async (t) => {
    await withTopology({ hostNamespace: true }, async (topo) => {
      await withRunWorld(topo, { dns: false }, async (w: RunWorld) => {
        const fromPeer = async (dst: string, port: number, src: string, msg: string) => {
          const r = await run(topo.peer, ["python3", "-c", CLIENT, dst, String(port), src, msg], {
            timeoutMs: 40_000,
          });
          assert.equal(r.code, 0, r.stderr);
          return r.stdout.trim();
        };

        await t.step(
          "python bound to 0.0.0.0 answers the peer from its tunnel address",
          async () => {
            const srv = w.spawnWrapped(["python3", "-u", "-c", SERVER, "0.0.0.0", "7100"]);
            await srv.waitForOutput(/bound \('0\.0\.0\.0', 7100\)/, { timeoutMs: 20_000 });
            assert.equal(
              await fromPeer(OURS4, 7100, PEER4, "hello"),
              `py ${PEER4} hello ${OURS4} 7100`,
            );
            // A local client on loopback still reaches it, as without the wrapper.
            const local = await run(w.host, [
              "python3",
              "-c",
              CLIENT,
              "127.0.0.1",
              "7100",
              "",
              "local",
            ]);
            assert.equal(local.stdout.trim(), "py 127.0.0.1 local 127.0.0.1 7100", local.stderr);
            await srv.kill();
          },
        );

        await t.step("python bound to [::] (dual-stack) answers both families", async () => {
          const srv = w.spawnWrapped(["python3", "-u", "-c", SERVER, "::", "7102"]);
          await srv.waitForOutput(/bound \('::', 7102\)/, { timeoutMs: 20_000 });
          assert.equal(await fromPeer(OURS6, 7102, PEER6, "six"), `py ${PEER6} six ${OURS6} 7102`);
          assert.equal(
            await fromPeer(OURS4, 7102, PEER4, "four"),
            `py ::ffff:${PEER4} four ${OURS4} 7102`,
          );
          const local = await run(w.host, ["python3", "-c", CLIENT, "::1", "7102", "", "lo"]);
          assert.equal(local.stdout.trim(), "py ::1 lo ::1 7102", local.stderr);
          await srv.kill();
        });

        await t.step("0.0.0.0:P and [::]:P (V6ONLY) bound apart, as dnsmasq does", async () => {
          const srv = w.spawnWrapped(["python3", "-u", "-c", TWO_SOCKETS, "7103"]);
          await srv.waitForOutput(/bound both/, { timeoutMs: 20_000 });
          assert.equal(await fromPeer(OURS4, 7103, PEER4, "a"), `v4 ${PEER4} a ${OURS4} 7103`);
          assert.equal(await fromPeer(OURS6, 7103, PEER6, "b"), `v6 ${PEER6} b ${OURS6} 7103`);
          await srv.kill();
        });

        await t.step("nc -lu 0.0.0.0 answers the peer", async () => {
          const nc = w.spawnWrapped(["nc", "-n", "-u", "-l", "0.0.0.0", "7101"], {
            stdin: "piped",
          });
          // nc prints nothing when it is ready: the datagram is retried until it is.
          const peer = topo.spawn(topo.peer, [
            "python3",
            "-c",
            CLIENT,
            OURS4,
            "7101",
            PEER4,
            "hello nc\n",
            "30",
            "1",
          ]);
          await nc.waitForOutput(/hello nc/, { timeoutMs: 30_000 });
          await nc.write("answer\n");
          const got = await peer.wait(30_000);
          assert.equal(got.stdout.trim(), `answer ${OURS4} 7101`, got.stderr);
          await nc.kill();
        });

        await t.step(
          "a connected socket gets ECONNREFUSED from the peer's closed port",
          async () => {
            for (const host of [PEER4, PEER6]) {
              const wrapped = await w.wrap(["python3", "-c", REFUSED, host, "7199"]);
              assert.equal(wrapped.code, 0, wrapped.stderr);
              // The kernel's own answer, against a closed port of the peer's namespace from its
              // veth neighbour (the host namespace, unwrapped).
              const kernelHost = host === PEER4 ? topo.peerAddr : topo.peerAddr6;
              const kernel = await run(w.host, ["python3", "-c", REFUSED, kernelHost, "7199"]);
              assert.equal(kernel.code, 0, kernel.stderr);
              assert.equal(wrapped.stdout, kernel.stdout, `wrapped differs from the kernel's own`);
              assert.equal(
                wrapped.stdout,
                "send 5\nrecv ConnectionRefusedError 111\nsend 5\nrecv ConnectionRefusedError 111\n" +
                  "sendto 5\nrecvfrom timeout\n",
              );
            }
          },
        );
      });
    });
  },
  { requires: ["python3", "nc"], timeoutMs: 180_000 },
);
