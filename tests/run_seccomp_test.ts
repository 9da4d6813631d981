/**
 * Wrapping programs no interposer can enter (issue 12): `wrapguard run` starts every program under
 * wrapguard-supervisor's seccomp filter. The wrapped side has a default route (to the peer
 * namespace's veth address, inside a namespace this test created), so anything that escaped
 * would get out; tcpdump on its interface must see only WireGuard's UDP.
 *
 * 1. A static C client (gcc -static) and a Go program (CGO_ENABLED=0, Debian's golang-go) fetch
 *    10 MiB byte-exact from the peer and resolve a dnsmasq name; errors are the kernel's; both
 *    send and receive unconnected UDP.
 * 2. A dynamic program that re-execs itself with an empty environment still reaches the peer,
 *    never the host network.
 * 3. A static server listening on the tunnel address is reached from the peer (busybox httpd on
 *    the tunnel address and the wildcard, a Go TCP and a Go UDP server), which sees the tunnel
 *    peer's address.
 */
import assert from "node:assert/strict";
import { netnsTest, run, waitForPort, which, withTopology } from "./_support/netns.ts";
import {
  OURS4,
  OURS6,
  PEER4,
  PEER6,
  type RunWorld,
  sha256,
  SVC_NAME,
  withRunWorld,
  writeBlob,
} from "./_support/run_world.ts";
import { capture, leaks, stopCapture } from "./_support/capture.ts";

const FIXTURES = new URL("./fixtures/seccomp/", import.meta.url).pathname;
const UDP_ECHO = new URL("./_support/udp_echo.py", import.meta.url).pathname;
const BLOB_SIZE = 10 << 20;

/** Builds the static C client into `dir`. */
async function buildStaticC(dir: string): Promise<string> {
  const out = `${dir}/fetch-static`;
  const cc = await run(null, ["gcc", "-static", "-O2", "-o", out, `${FIXTURES}fetch.c`]);
  assert.equal(cc.code, 0, cc.stderr);
  return out;
}

/** Builds the Go client into `dir` (CGO_ENABLED=0: static, raw system calls). */
async function buildGo(dir: string): Promise<string> {
  const src = `${dir}/gosrc`;
  await Deno.mkdir(src, { recursive: true });
  await Deno.copyFile(`${FIXTURES}fetch.go`, `${src}/fetch.go`);
  const out = `${dir}/fetch-go`;
  const r = await run(null, ["go", "build", "-o", out, "fetch.go"], {
    cwd: src,
    env: {
      CGO_ENABLED: "0",
      GOCACHE: `${dir}/gocache`,
      GOPATH: `${dir}/gopath`,
      GOFLAGS: "-mod=mod",
      GO111MODULE: "off",
      HOME: dir,
    },
    timeoutMs: 120_000,
  });
  assert.equal(r.code, 0, r.stderr);
  return out;
}

/** tcpdump's lines for WireGuard between our endpoint and wireguard-go's. */
function wireguardOnly(w: RunWorld): RegExp {
  const host = w.topo.hostAddr.replaceAll(".", "\\.");
  const peer = w.topo.peerAddr.replaceAll(".", "\\.");
  return new RegExp(
    `IP ${host}\\.${w.listenPort} > ${peer}\\.${w.wg.listenPort}: UDP|` +
      `IP ${peer}\\.${w.wg.listenPort} > ${host}\\.${w.listenPort}: UDP`,
  );
}

/** Runs `fn` with tcpdump on the wrapped side's veth and asserts only WireGuard went out. */
async function onlyWireguard(w: RunWorld, fn: () => Promise<void>): Promise<void> {
  const dump = await capture(w.topo, w.host, w.topo.links[0]!.hostIf);
  let lines: string[];
  try {
    await fn();
  } finally {
    lines = await stopCapture(dump);
  }
  const wg = wireguardOnly(w);
  assert.ok(lines.some((l) => wg.test(l)), `no WireGuard packets captured:\n${lines.join("\n")}`);
  // Between two wrapped runs nothing listens on our WireGuard port: the kernel answers
  // wireguard-go's keepalives with port unreachable. Exactly that message is allowed.
  const between = new RegExp(
    `ICMP ${w.topo.hostAddr.replaceAll(".", "\\.")} udp port ${w.listenPort} unreachable`,
  );
  assert.deepEqual(
    leaks(lines, wg).filter((l) => !between.test(l)),
    [],
    "packets other than WireGuard left the wrapped side",
  );
}

async function withDefaultRoute(
  fn: (w: RunWorld, blobSum: string) => Promise<void>,
): Promise<void> {
  await withTopology({ hostNamespace: true }, async (topo) => {
    await withRunWorld(topo, {}, async (w) => {
      await run(null, ["ip", "-n", w.host, "route", "add", "default", "via", topo.peerAddr], {
        check: true,
      });
      const www = `${topo.tmpDir}/www`;
      await Deno.mkdir(www);
      const blobSum = await sha256(await writeBlob(`${www}/blob`, BLOB_SIZE));
      topo.spawn(topo.peer, [
        "python3",
        "-m",
        "http.server",
        "--bind",
        "::",
        "--directory",
        www,
        "8080",
      ]);
      topo.spawn(topo.peer, ["python3", UDP_ECHO, "server", PEER4, "9999"]);
      await waitForPort(topo.peer, 8080);
      await waitForPort(topo.peer, 9999, "udp");
      await fn(w, blobSum);
    });
  });
}

netnsTest(
  "wrapguard run: a static C program and a Go program through the supervisor, nothing leaks",
  async (t) => {
    await withDefaultRoute(async (w, blobSum) => {
      const dir = w.topo.tmpDir;
      const staticC = await buildStaticC(dir);
      const goProg = await buildGo(dir);

      await onlyWireguard(w, async () => {
        await t.step(
          "static C: 10 MiB by address, byte-exact; tunnel addresses shown",
          async () => {
            const out = `${dir}/got-c`;
            const r = await w.wrap([staticC, "fetch", PEER4, "8080", "/blob", out]);
            assert.equal(r.code, 0, r.stderr);
            assert.equal(await sha256(await Deno.readFile(out)), blobSum);
            assert.match(r.stdout, new RegExp(`^peer ${PEER4} 8080$`, "m"));
            assert.match(r.stdout, new RegExp(`^local ${OURS4} \\d+$`, "m"));
          },
        );
        await t.step(
          "a static shell's children stay on the tunnel (busybox sh, wget)",
          async () => {
            const busybox = which("busybox")!;
            const out = `${dir}/got-bb`;
            const r = await w.wrap([
              busybox,
              "sh",
              "-c",
              `${busybox} wget -q -O ${out} http://${PEER4}:8080/blob && echo done`,
            ]);
            assert.equal(r.stdout, "done\n", r.stderr);
            assert.equal(await sha256(await Deno.readFile(out)), blobSum);
          },
        );
        await t.step("static C: errors are the kernel's; the kill switch holds", async () => {
          // Nothing listens on port 1 of the peer: its RST comes back through the broker.
          const refused = await w.wrap([staticC, "fetch", PEER4, "1", "/", `${dir}/none`]);
          assert.equal(refused.code, 1);
          assert.match(refused.stderr, /connect: Connection refused/);
          // The peer's veth address is routed (default route) but not a tunnel destination.
          const ks = await w.wrap(
            [staticC, "fetch", w.topo.peerAddr, "8080", "/blob", `${dir}/x`],
            {
              args: ["--kill-switch"],
            },
          );
          assert.equal(ks.code, 1);
          assert.match(ks.stderr, /connect: Network is unreachable/);
        });
        await t.step("static C: glibc's resolver asks the tunnel's dnsmasq", async () => {
          // getaddrinfo in a static glibc sends UDP to resolv.conf's nameserver (the decoy)
          // itself: redirected to the tunnel's DNS, the answer shown as from the decoy.
          const r = await w.wrap([staticC, "resolve", SVC_NAME]);
          assert.equal(r.code, 0, r.stderr);
          assert.equal(r.stdout, `address ${PEER4} 0\n`);
          // By name: getaddrinfo puts the IPv6 address first, an AF_INET6 socket connects.
          const byName = await w.wrap([staticC, "fetch", SVC_NAME, "8080", "/blob", `${dir}/c2`]);
          assert.equal(byName.code, 0, byName.stderr);
          assert.equal(await sha256(await Deno.readFile(`${dir}/c2`)), blobSum);
          assert.match(byName.stdout, /^peer fd77::1 8080$/m);
          assert.match(byName.stdout, /^local fd77::2 \d+$/m);
        });
        await t.step("static C: unconnected UDP, sendto and recvfrom", async () => {
          const r = await w.wrap([staticC, "udp", PEER4, "9999"]);
          assert.equal(r.code, 0, r.stderr);
          assert.equal(r.stdout, `reply static udp\nfrom ${PEER4} 9999\n`);
        });
        await t.step("static C: sendmmsg to the tunnel, three datagrams in one call", async () => {
          const r = await w.wrap([staticC, "udpmm", PEER4, "9999"]);
          assert.equal(r.code, 0, r.stderr);
          const lines = r.stdout.trim().split("\n");
          assert.equal(lines[0], "sent 3, lengths 3 3 5");
          assert.deepEqual(lines.slice(1).sort(), ["reply one", "reply three", "reply two"]);
        });
        await t.step("Go: unconnected UDP, WriteTo and ReadFrom", async () => {
          const r = await w.wrap([goProg, "udp", `${PEER4}:9999`]);
          assert.equal(r.code, 0, r.stderr);
          assert.equal(r.stdout, `reply go udp\nfrom ${PEER4}:9999\n`);
        });
        await t.step("Go: its own resolver asks the tunnel's dnsmasq", async () => {
          const r = await w.wrap([goProg, "resolve", SVC_NAME]);
          assert.equal(r.code, 0, r.stderr);
          assert.equal(r.stdout, `address ${PEER4}\naddress fd77::1\n`);
        });
        await t.step("Go: 10 MiB by name, byte-exact", async () => {
          const out = `${dir}/got-go-name`;
          const r = await w.wrap([goProg, "fetch", `http://${SVC_NAME}:8080/blob`, out]);
          assert.equal(r.code, 0, r.stderr);
          assert.equal(await sha256(await Deno.readFile(out)), blobSum);
        });
        await t.step("Go: 10 MiB by address, byte-exact", async () => {
          const out = `${dir}/got-go`;
          const r = await w.wrap([goProg, "fetch", `http://${PEER4}:8080/blob`, out]);
          assert.equal(r.code, 0, r.stderr);
          assert.equal(await sha256(await Deno.readFile(out)), blobSum);
          assert.match(r.stdout, new RegExp(`^peer ${PEER4}:8080$`, "m"));
          assert.match(r.stdout, new RegExp(`^local ${OURS4}:\\d+$`, "m"));
        });
      });
    });
  },
  { requires: ["tcpdump", "python3", "dnsmasq", "gcc", "go", "busybox"], timeoutMs: 240_000 },
);

/**
 * Re-execs itself with an empty environment (no LD_PRELOAD, no WRAPGUARD_*, as a program that
 * sanitises its environment does), then resolves a tunnel name and fetches the blob.
 */
const REEXEC = `
import hashlib, os, socket, sys, urllib.request
if sys.argv[1:] != ["child"]:
    os.execve(sys.executable, [sys.executable, sys.argv[0], "child"], {})
maps = open("/proc/self/maps").read()
print("interposer", "yes" if "libwrapguard" in maps else "no")
print("inherited", ",".join(k for k in os.environ if k == "LD_PRELOAD" or k.startswith("WRAPGUARD")))
print("resolved", socket.getaddrinfo("${SVC_NAME}", 8080, socket.AF_INET)[0][4][0])
body = urllib.request.urlopen("http://${PEER4}:8080/blob", timeout=20).read()
print("sha256", hashlib.sha256(body).hexdigest())
`;

netnsTest(
  "wrapguard run: a dynamic program that re-execs with an empty environment stays on the tunnel",
  async (t) => {
    await withDefaultRoute(async (w, blobSum) => {
      const script = `${w.topo.tmpDir}/reexec.py`;
      await Deno.writeTextFile(script, REEXEC);
      await onlyWireguard(w, async () => {
        await t.step(
          "no interposer after the re-exec, yet the peer and its DNS are reached",
          async () => {
            const r = await w.wrap(["python3", script]);
            assert.equal(r.code, 0, r.stderr);
            assert.match(r.stdout, /^interposer no$/m);
            assert.match(r.stdout, /^inherited $/m);
            assert.match(r.stdout, new RegExp(`^resolved ${PEER4}$`, "m"));
            assert.match(r.stdout, new RegExp(`^sha256 ${blobSum}$`, "m"));
          },
        );
      });
    });
  },
  { requires: ["tcpdump", "python3", "dnsmasq"], timeoutMs: 120_000 },
);

netnsTest(
  "wrapguard run: a static server on the tunnel address is reached from the peer",
  async (t) => {
    await withDefaultRoute(async (w) => {
      const www = `${w.topo.tmpDir}/static-www`;
      await Deno.mkdir(www);
      await Deno.writeTextFile(`${www}/small`, "from a static server\n");
      const busybox = which("busybox")!;
      const goProg = await buildGo(w.topo.tmpDir);
      /** Retries `argv` in the peer namespace until it succeeds (the server is starting). */
      const fromPeer = async (argv: string[]): Promise<string> => {
        const deadline = Date.now() + 15_000;
        for (;;) {
          const r = await run(w.topo.peer, argv);
          if (r.code === 0 && r.stdout !== "") return r.stdout;
          if (Date.now() > deadline) throw new Error(`${argv.join(" ")}: ${r.stderr}`);
          await new Promise((res) => setTimeout(res, 200));
        }
      };
      await onlyWireguard(w, async () => {
        for (
          const [label, bind, port] of [
            ["the tunnel address", `${OURS4}:8081`, 8081],
            ["the wildcard", "8082", 8082],
          ] as const
        ) {
          await t.step(`busybox httpd (static) bound to ${label}`, async () => {
            const server = w.spawnWrapped([busybox, "httpd", "-f", "-vv", "-p", bind, "-h", www]);
            try {
              const got = await fromPeer([
                "curl",
                "-sS",
                "--max-time",
                "2",
                `http://${OURS4}:${port}/small`,
              ]);
              assert.equal(got, "from a static server\n");
            } finally {
              await server.kill("SIGTERM");
            }
            // The accepted connection is shown as the tunnel peer, not the loopback relay.
            assert.match(server.stderrText(), new RegExp(PEER4.replaceAll(".", "\\.")));
            assert.doesNotMatch(server.stderrText(), /127\.0\.0\.1/);
          });
        }
        for (
          const [label, bind, port] of [
            ["the tunnel address", `${OURS4}:9997`, 9997],
            ["a wildcard port", ":9996", 9996],
          ] as const
        ) {
          await t.step(`a Go UDP server on ${label} answers the peer`, async () => {
            const server = w.spawnWrapped([goProg, "udpserve", bind]);
            try {
              await server.waitForOutput(/listening/, { timeoutMs: 15_000 });
              const got = await fromPeer([
                "python3",
                "-c",
                `import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("${PEER4}", 0)); s.settimeout(1)
for _ in range(5):
    s.sendto(b"hi", ("${OURS4}", ${port}))
    try:
        print(s.recvfrom(100)[0].decode(), s.getsockname()[1]); break
    except socket.timeout:
        pass`,
              ]);
              // The reply names the peer's own address and port (the last word is that port).
              const m = /^hi saw (\S+) (\d+)$/.exec(got.trim());
              assert.ok(m, got);
              assert.match(
                m[1]!,
                new RegExp(`^(\\[::ffff:)?${PEER4.replaceAll(".", "\\.")}\\]?:${m[2]}$`),
              );
            } finally {
              await server.kill("SIGTERM");
            }
          });
        }
        await t.step("a Go server on the tunnel address sees the tunnel peer", async () => {
          const server = w.spawnWrapped([goProg, "serve", `${OURS4}:8083`]);
          try {
            await server.waitForOutput(/listening/, { timeoutMs: 15_000 });
            const got = await fromPeer(["nc", "-w", "3", OURS4, "8083"]);
            assert.match(got, new RegExp(`^go saw ${OURS4}:8083 from ${PEER4}:\\d+\n$`));
          } finally {
            await server.kill("SIGTERM");
          }
        });
        await t.step("a Go server on the IPv6 tunnel address sees the tunnel peer", async () => {
          const server = w.spawnWrapped([goProg, "serve", `[${OURS6}]:8084`]);
          try {
            await server.waitForOutput(/listening/, { timeoutMs: 15_000 });
            const got = await fromPeer(["nc", "-6", "-w", "3", OURS6, "8084"]);
            assert.match(
              got,
              new RegExp(`^go saw \\[${OURS6}\\]:8084 from \\[${PEER6}\\]:\\d+\n$`),
            );
          } finally {
            await server.kill("SIGTERM");
          }
        });
      });
    });
  },
  {
    requires: ["tcpdump", "python3", "dnsmasq", "curl", "busybox", "nc", "go"],
    timeoutMs: 240_000,
  },
);
