// `wrapguard proxy` end to end against wireguard-go: the proxy runs in a namespace with no
// default route and a resolv.conf pointing at a decoy; the clients (curl, python, a statically
// linked busybox) run beside it; the services (python http.server, dnsmasq, a UDP echo) run
// behind wireguard-go in the peer namespace. Names reach dnsmasq only through the tunnel.
import assert from "node:assert/strict";
import { randomBytes, sha256 } from "./_support/bytes.ts";
import { netnsTest, type Spawned, withTopology } from "./_support/netns.ts";
import { OURS4, PEER4, type RunWorld, SVC_NAME, withRunWorld } from "./_support/run_world.ts";
import { spawnWrapguard, waitForLog } from "./_support/forward_world.ts";

const udpEcho = new URL("./_support/udp_echo.py", import.meta.url).pathname;
const BLOB = 3 << 20;

/**
 * A SOCKS5 UDP ASSOCIATE client: asks dnsmasq for SVC_NAME's A record at PEER4:53 (ATYP 1), then
 * sends datagrams to the UDP echo by name (ATYP 3); prints one JSON line of what came back.
 */
const UDP_CLIENT = `
import json, socket, struct, sys
port, peer, name, echo_port = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
c = socket.create_connection(("127.0.0.1", port), timeout=10)
def exact(n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d: raise SystemExit("control connection closed")
        b += d
    return b
c.sendall(b"\\x05\\x01\\x00"); assert exact(2) == b"\\x05\\x00"
c.sendall(b"\\x05\\x03\\x00\\x01" + bytes(6))
rep = exact(4); assert rep[1] == 0, rep
bnd = socket.inet_ntoa(exact(4)); bport = struct.unpack("!H", exact(2))[0]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
out = {"relay": [bnd, bport]}
# DNS: one A question for name.
q = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\x00" + struct.pack("!HH", 1, 1)
u.sendto(b"\\x00\\x00\\x00\\x01" + socket.inet_aton(peer) + struct.pack("!H", 53) + q, (bnd, bport))
d, _ = u.recvfrom(65535)
assert d[:4] == b"\\x00\\x00\\x00\\x01", d[:4]
out["dnsFrom"] = [socket.inet_ntoa(d[4:8]), struct.unpack("!H", d[8:10])[0]]
dns = d[10:]
out["dnsId"] = struct.unpack("!H", dns[:2])[0]
out["dnsAnswers"] = struct.unpack("!H", dns[6:8])[0]
out["dnsA"] = socket.inet_ntoa(dns[-4:])
# Echo by name, several sizes.
ok = 0
for size in (1, 100, 1000, 1300):
    payload = bytes((i * 7 + size) & 255 for i in range(size))
    hdr = b"\\x00\\x00\\x00\\x03" + bytes([len(name)]) + name.encode() + struct.pack("!H", echo_port)
    u.sendto(hdr + payload, (bnd, bport))
    d, _ = u.recvfrom(65535)
    if d[3] == 1 and d[10:] == payload and struct.unpack("!H", d[8:10])[0] == echo_port:
        ok += 1
out["echoOk"] = ok
print(json.dumps(out), flush=True)
`;

function curl(w: RunWorld, args: string[]) {
  return w.topo.run(w.host, ["curl", "-sS", "--max-time", "20", "-o", "-", ...args], {
    timeoutMs: 30_000,
  });
}

async function listening(p: Spawned): Promise<{ socks5: number; http: number }> {
  const lines = await waitForLog(p, "proxy listening", 2);
  const port = (proto: string) =>
    Number(String(lines.find((l) => l.protocol === proto)!.address).split(":").pop());
  return { socks5: port("socks5"), http: port("http") };
}

/** Whether an ELF file has no program interpreter (PT_INTERP), i.e. is statically linked. */
function isStatic(path: string): boolean {
  const b = Deno.readFileSync(path);
  const v = new DataView(b.buffer);
  if (v.getUint32(0) !== 0x7f454c46 || b[4] !== 2) return false; // ELF64 only
  const phoff = Number(v.getBigUint64(32, true));
  const phentsize = v.getUint16(54, true), phnum = v.getUint16(56, true);
  for (let i = 0; i < phnum; i++) {
    if (v.getUint32(phoff + i * phentsize, true) === 3) return false;
  }
  return true;
}

function ciIsSet(): boolean {
  const v = Deno.env.get("CI");
  return v !== undefined && v !== "" && v !== "0" && v.toLowerCase() !== "false";
}

netnsTest(
  "proxy: curl over SOCKS5 and HTTP reaches a peer service by a tunnel name; UDP ASSOCIATE; a static program",
  async (t) => {
    await withTopology({ hostNamespace: true }, (topo) =>
      withRunWorld(topo, {}, async (w) => {
        const www = `${topo.tmpDir}/www`;
        await Deno.mkdir(www);
        const blob = randomBytes(BLOB);
        await Deno.writeFile(`${www}/blob`, blob);
        const want = await sha256(blob);
        const http = topo.spawn(topo.peer, [
          "python3",
          "-m",
          "http.server",
          "--bind",
          PEER4,
          "--directory",
          www,
          "8000",
        ]);
        const echo = topo.spawn(topo.peer, ["python3", udpEcho, "server", PEER4, "7007"]);
        await echo.waitForOutput("listening");
        await topo.waitForPort(topo.peer, 8000);

        const proxy = spawnWrapguard(w, "proxy", ["--socks5", "127.0.0.1:0", "--http", "0"]);
        try {
          const ports = await listening(proxy);
          const url = `http://${SVC_NAME}:8000/blob`;

          await t.step(
            "curl --socks5-hostname: the name is resolved through the tunnel",
            async () => {
              const before = w.dns!.queries().length;
              const r = await curl(w, ["--socks5-hostname", `127.0.0.1:${ports.socks5}`, url]);
              assert.equal(r.code, 0, r.stderr);
              assert.equal(await sha256(r.stdoutBytes as Uint8Array<ArrayBuffer>), want);
              const asked = w.dns!.queries().slice(before);
              assert.ok(
                asked.some((q) => q.name === SVC_NAME && q.from === OURS4),
                JSON.stringify(asked),
              );
              // python's log line: the request came from our tunnel address.
              assert.match(
                http.stderrText(),
                new RegExp(`${OURS4.replaceAll(".", "\\.")} .*GET /blob`),
              );
            },
          );

          await t.step("curl --proxy (HTTP): a plain forward request, and CONNECT", async () => {
            const plain = await curl(w, ["--proxy", `http://127.0.0.1:${ports.http}`, url]);
            assert.equal(plain.code, 0, plain.stderr);
            assert.equal(await sha256(plain.stdoutBytes as Uint8Array<ArrayBuffer>), want);
            const tunnelled = await curl(w, [
              "--proxytunnel",
              "--proxy",
              `http://127.0.0.1:${ports.http}`,
              url,
            ]);
            assert.equal(tunnelled.code, 0, tunnelled.stderr);
            assert.equal(await sha256(tunnelled.stdoutBytes as Uint8Array<ArrayBuffer>), want);
            // The proxy's own answer for a name the tunnel DNS does not know.
            const missing = await curl(w, [
              "-w",
              "%{http_code}",
              "--proxy",
              `http://127.0.0.1:${ports.http}`,
              "http://nothing.wg.test/",
            ]);
            assert.match(missing.stdout, /502$/);
          });

          await t.step(
            "SOCKS5 UDP ASSOCIATE: DNS to the peer by address, echo by name",
            async () => {
              const r = await topo.run(w.host, [
                "python3",
                "-c",
                UDP_CLIENT,
                String(ports.socks5),
                PEER4,
                SVC_NAME,
                "7007",
              ], { timeoutMs: 30_000 });
              assert.equal(r.code, 0, r.stderr);
              const out = JSON.parse(r.stdout.trim());
              assert.equal(out.relay[0], "127.0.0.1");
              assert.deepEqual(out.dnsFrom, [PEER4, 53]);
              assert.equal(out.dnsId, 0x4242);
              assert.equal(out.dnsAnswers, 1);
              assert.equal(out.dnsA, PEER4);
              assert.equal(out.echoOk, 4);
            },
          );

          await t.step(
            "a statically linked program (busybox wget) through http_proxy",
            async (s) => {
              const busybox = ["/bin/busybox", "/usr/bin/busybox"].find((p) => {
                try {
                  return isStatic(p);
                } catch {
                  return false;
                }
              });
              if (busybox === undefined) {
                const why = "no statically linked busybox (Debian's busybox-static)";
                if (ciIsSet()) throw new Error(`CI is set, but there is ${why}`);
                console.log(`skipping "${s.name}": ${why}`);
                return;
              }
              const out = `${topo.tmpDir}/wget.out`;
              const r = await topo.run(w.host, [busybox, "wget", "-q", "-O", out, url], {
                env: { http_proxy: `http://127.0.0.1:${ports.http}` },
                timeoutMs: 30_000,
              });
              assert.equal(r.code, 0, r.stderr);
              assert.equal(await sha256(await Deno.readFile(out)), want);
              // Without the proxy it has no way in: no route, and the decoy resolver.
              const direct = await topo.run(w.host, [busybox, "wget", "-q", "-O", "-", url], {
                timeoutMs: 30_000,
              });
              assert.notEqual(direct.code, 0);
            },
          );
        } finally {
          await proxy.kill();
        }
      }));
  },
  { requires: ["python3", "curl", "dnsmasq", "dig"], timeoutMs: 90_000 },
);

netnsTest("proxy --auth-file: right credentials pass, wrong ones are refused", async () => {
  await withTopology({ hostNamespace: true }, (topo) =>
    withRunWorld(topo, {}, async (w) => {
      const www = `${topo.tmpDir}/www`;
      await Deno.mkdir(www);
      await Deno.writeTextFile(`${www}/hello`, "hello through the proxy\n");
      topo.spawn(topo.peer, ["python3", "-m", "http.server", "--bind", PEER4, "-d", www, "8000"]);
      await topo.waitForPort(topo.peer, 8000);
      const auth = `${topo.tmpDir}/proxy-users`;
      await Deno.writeTextFile(auth, "# user:password\nalice:correct horse\n", { mode: 0o600 });
      const proxy = spawnWrapguard(w, "proxy", [
        "--socks5",
        "0",
        "--http",
        "0",
        "--auth-file",
        auth,
      ]);
      try {
        const ports = await listening(proxy);
        const url = `http://${SVC_NAME}:8000/hello`;
        const socks = (user?: string) =>
          curl(w, [
            "--socks5-hostname",
            `127.0.0.1:${ports.socks5}`,
            ...(user ? ["--proxy-user", user] : []),
            url,
          ]);
        const viaHttp = (user?: string) =>
          curl(w, [
            "-w",
            "\n%{http_code}",
            "--proxy",
            `http://127.0.0.1:${ports.http}`,
            ...(user ? ["--proxy-user", user] : []),
            url,
          ]);

        const good = await socks("alice:correct horse");
        assert.equal(good.code, 0, good.stderr);
        assert.equal(good.stdout, "hello through the proxy\n");
        const goodHttp = await viaHttp("alice:correct horse");
        assert.equal(goodHttp.stdout, "hello through the proxy\n\n200");

        // SOCKS5: a wrong password, an unknown user, and no credentials at all.
        for (const user of ["alice:wrong", "mallory:correct horse", undefined]) {
          const r = await socks(user);
          assert.notEqual(r.code, 0, `${user} got through`);
          assert.equal(r.stdout, "");
        }
        // HTTP: 407 with a challenge.
        for (const user of ["alice:wrong", undefined]) {
          const r = await viaHttp(user);
          assert.match(r.stdout, /407$/, `${user}: ${r.stdout}`);
        }
        const refused = (await waitForLog(proxy, "socks5 authentication failed", 2))
          .map((l) => l.user);
        assert.deepEqual(refused, ["alice", "mallory"]);
      } finally {
        await proxy.kill();
      }
    }));
}, { requires: ["python3", "curl", "dnsmasq", "dig"], timeoutMs: 60_000 });
