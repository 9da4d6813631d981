/**
 * `wrapguard doctor`: a broken config is named by line, an unreachable endpoint fails its
 * handshake, a static target and a build without an interposer are flagged, and a healthy setup
 * against a live wireguard-go peer passes. Traffic goes to 127.0.0.1 or into namespaces the test
 * creates.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { type DoctorCheck, runDoctor } from "../core/host/doctor/mod.ts";
import { encodeKey, generatePrivateKey, publicKeyOf } from "../core/wireguard/keys.ts";
import { libraries, probes } from "../preload/build/embedded.ts";
import { genKey, netnsTest, run, which, withTopology } from "./_support/netns.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const FLAGS = Deno.readTextFileSync(`${ROOT}cli/permissions.flags`).split(/\s+/).filter((f) => f);

async function doctor(
  args: string[],
): Promise<{ code: number; ok: boolean; checks: DoctorCheck[] }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...FLAGS, `${ROOT}cli/main.ts`, "doctor", "--json", ...args],
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  try {
    return { code: out.code, ...JSON.parse(text) };
  } catch {
    throw new Error(`doctor printed no JSON (exit ${out.code}): ${text}
${new TextDecoder().decode(out.stderr)}`);
  }
}

function find(checks: DoctorCheck[], prefix: string): DoctorCheck {
  const c = checks.find((c) => c.name.startsWith(prefix));
  assert.ok(c, `no check ${prefix}: ${checks.map((c) => c.name).join(", ")}`);
  return c;
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "wg-doctor-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function configText(endpoint: string, peerPublic = encodeKey(publicKeyOf(generatePrivateKey()))) {
  return `[Interface]\nPrivateKey = ${
    encodeKey(generatePrivateKey())
  }\nAddress = 10.98.0.2/32\n\n` +
    `[Peer]\nPublicKey = ${peerPublic}\nEndpoint = ${endpoint}\nAllowedIPs = 10.98.0.0/24\n`;
}

Deno.test("doctor names the line of a broken config and exits 1", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/broken.conf`;
    const lines = configText("127.0.0.1:9").split("\n");
    lines[5] = "PublicKey = not-a-key"; // line 6
    await Deno.writeTextFile(path, lines.join("\n"), { mode: 0o600 });
    const r = await doctor(["--offline", "-c", path]);
    assert.equal(r.code, 1);
    assert.equal(r.ok, false);
    const c = find(r.checks, "config");
    assert.equal(c.status, "fail");
    assert.match(c.detail, new RegExp(`^${path}:6: PublicKey`));
    assert.match(c.hint ?? "", /line 6/);
  });
});

Deno.test("doctor: an endpoint nobody answers on fails its handshake after the timeout", async () => {
  await withDir(async (dir) => {
    // A UDP port on 127.0.0.1 that we hold and never answer on.
    const silent = dgram.createSocket("udp4");
    const arrived: Uint8Array[] = [];
    silent.on("message", (m) => arrived.push(new Uint8Array(m)));
    await new Promise<void>((r) => silent.bind(0, "127.0.0.1", () => r()));
    try {
      const path = `${dir}/wg0.conf`;
      const port = silent.address().port;
      await Deno.writeTextFile(path, configText(`127.0.0.1:${port}`), { mode: 0o600 });
      const r = await doctor(["-c", path, "--timeout", "1"]);
      assert.equal(r.code, 1);
      assert.equal(find(r.checks, "config").status, "pass");
      assert.equal(find(r.checks, "endpoint").status, "pass");
      const udp = find(r.checks, "UDP socket");
      assert.equal(udp.status, "pass");
      // The UDP line says which UDP path, AEAD and X25519 the tunnel uses (all native here).
      const lib = "(OpenSSL libcrypto\\.so\\.3|libsodium\\.so\\.23)";
      assert.match(
        udp.detail,
        new RegExp(
          `batched \\(recvmmsg/sendmmsg\\); AEAD native \\(${lib}\\); X25519 native \\(${lib}\\)`,
        ),
      );
      const hs = find(r.checks, "handshake");
      assert.equal(hs.status, "fail");
      assert.match(hs.detail, /no handshake with 127\.0\.0\.1:\d+ within 1 s/);
      assert.ok(hs.ms >= 900, `waited ${hs.ms} ms`);
      // It did try: our handshake initiations reached the silent port.
      assert.ok(arrived.length > 0, "an initiation arrived");
      assert.equal(arrived[0]![0], 1, "a WireGuard handshake initiation");
      // --offline skips it.
      const off = await doctor(["-c", path, "--offline"]);
      assert.equal(off.code, 0, JSON.stringify(off.checks, null, 2));
      assert.equal(find(off.checks, "handshake").status, "skip");
    } finally {
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });
});

const HAVE_STATIC = which("gcc") !== undefined &&
  (await run(null, ["gcc", "-static", "-x", "c", "-o", "/dev/null", "-"], {
    stdin: "int main(void){return 0;}",
  }).then((r) => r.code === 0, () => false));

Deno.test({
  name: "doctor names the path a target takes: the supervisor's for a static one",
  ignore: !HAVE_STATIC,
  async fn() {
    await withDir(async (dir) => {
      const r0 = await run(null, ["gcc", "-static", "-x", "c", "-o", `${dir}/static`, "-"], {
        stdin: "int main(void){return 0;}",
      });
      assert.equal(r0.code, 0, r0.stderr);
      const r = await doctor(["--", `${dir}/static`]);
      assert.equal(r.code, 0, JSON.stringify(r.checks, null, 2));
      const t = find(r.checks, "target");
      assert.equal(t.status, "pass");
      assert.match(t.detail, /is statically linked, not setuid: the supervisor's path/);
      assert.equal(find(r.checks, "interposer").status, "pass");
      const sv = find(r.checks, "supervisor");
      assert.equal(sv.status, "pass", sv.detail);
      assert.match(sv.detail, /supervisor \(\d+ KiB\) extracted; this kernel has seccomp user/);
      const ok = await doctor(["--", "sh", "-c", "true"]);
      assert.equal(find(ok.checks, "target").status, "pass");
      assert.match(find(ok.checks, "target").detail, /the interposer's path/);
      const suid = `${dir}/suid`;
      await Deno.copyFile("/bin/true", suid);
      await Deno.chmod(suid, 0o4755);
      const refused = await doctor(["--", suid]);
      assert.equal(refused.code, 1);
      assert.equal(find(refused.checks, "target").status, "fail");
      assert.match(find(refused.checks, "target").detail, /is setuid/);
      assert.equal(ok.code, 0, JSON.stringify(ok.checks, null, 2));
      const perms = find(ok.checks, "permissions");
      assert.match(perms.detail, /granted: net, read, write, run, env; not granted: sys, ffi/);
    });
  },
});

Deno.test("doctor flags a build without the interposer, and proves a present one captures", async () => {
  const missing = await runDoctor({ libraries: {}, probes });
  const c = find(missing, "interposer");
  assert.equal(c.status, "fail");
  assert.match(c.detail, new RegExp(`no interposer for ${Deno.build.arch}`));
  assert.match(c.hint ?? "", /build:preload/);
  const present = await runDoctor({ libraries, probes });
  const p = find(present, "interposer");
  assert.equal(p.status, "pass", p.detail);
  assert.match(p.detail, /captured/);
});

netnsTest("doctor passes a healthy setup against a live wireguard-go peer", async () => {
  await withTopology({}, async (topo) => {
    const ourPrivate = await genKey();
    const ourPublic = encodeKey(
      publicKeyOf(Uint8Array.fromBase64(ourPrivate)),
    );
    const wg = await topo.startWireguardGo(topo.peer, {
      addresses: ["10.78.0.1/24"],
      peers: [{ publicKey: ourPublic, allowedIPs: ["10.78.0.2/32"] }],
    });
    await withDir(async (dir) => {
      const path = `${dir}/wg0.conf`;
      await Deno.writeTextFile(
        path,
        `[Interface]\nPrivateKey = ${ourPrivate}\nAddress = 10.78.0.2/32\n\n[Peer]\n` +
          `PublicKey = ${wg.publicKey}\nEndpoint = ${
            topo.endpoint(wg)
          }\nAllowedIPs = 10.78.0.0/24\n`,
        { mode: 0o600 },
      );
      const r = await doctor(["-c", path, "--", "curl"]);
      assert.equal(r.code, 0, JSON.stringify(r.checks, null, 2));
      assert.ok(r.checks.every((c) => c.status === "pass"), JSON.stringify(r.checks, null, 2));
      const hs = find(r.checks, "handshake");
      assert.match(hs.detail, /^completed in \d+ ms with 198\.1[89]\./);
      assert.ok((await wg.peer(ourPublic)).latestHandshake > 0, "wireguard-go saw the handshake");
    });
  });
}, { requires: ["curl"] });
