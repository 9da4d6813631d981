/**
 * A tunnel process that loaded the helper library never loads node:crypto: config loading, the
 * handshake and transport data all use the helper's X25519 and AEAD. Loading node:crypto costs
 * 15-25 ms of every `wrapguard run`'s start (docs/performance.md, "Cold start"), so a static
 * import or an eager backend check creeping back in would be a regression this test names.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;
const FLAGS = Deno.readTextFileSync(`${ROOT}cli/permissions.flags`).split(/\s+/).filter((f) => f);

Deno.test("start-up, handshake and data with the helper loaded: node:crypto stays unloaded", async () => {
  // A fresh process, started as the CLI starts one (same flags, helper first, then ffi dropped):
  // this test's own process has had other tests' backends.
  const script = `
import { loadHelperThenDropFfi } from "${ROOT}core/host/sandbox.ts";
const helper = await loadHelperThenDropFfi();
const { parseConfig } = await import("${ROOT}core/config/mod.ts");
const { Tunnel } = await import("${ROOT}core/host/tunnel/mod.ts");
const { encodeKey, generatePrivateKey, publicKeyOf } = await import("${ROOT}core/wireguard/keys.ts");
const { aeadBackend } = await import("${ROOT}core/wireguard/crypto.ts");
const { x25519Backend } = await import("${ROOT}core/wireguard/x25519.ts");
const { nodeCryptoLoaded } = await import("${ROOT}core/wireguard/node_crypto.ts");
const ka = generatePrivateKey(), kb = generatePrivateKey();
const b = await Tunnel.start(parseConfig(
  "[Interface]\\nPrivateKey = " + encodeKey(kb) + "\\nAddress = 10.202.0.1/32\\n\\n[Peer]\\nPublicKey = " +
    encodeKey(publicKeyOf(ka)) + "\\nAllowedIPs = 10.202.0.2/32\\n"), { listenAddress: "127.0.0.1" });
const a = await Tunnel.start(parseConfig(
  "[Interface]\\nPrivateKey = " + encodeKey(ka) + "\\nAddress = 10.202.0.2/32\\n\\n[Peer]\\nPublicKey = " +
    encodeKey(publicKeyOf(kb)) + "\\nEndpoint = 127.0.0.1:" + b.udp.port + "\\nAllowedIPs = 10.202.0.0/24\\n"),
  { listenAddress: "127.0.0.1" });
const listener = b.listen({ port: 7, hostname: "10.202.0.1" });
const accepted = listener.accept();
const conn = await a.connect({ hostname: "10.202.0.1", port: 7 });
const server = await accepted;
await conn.write(new TextEncoder().encode("ping"));
const buf = new Uint8Array(4);
const n = await server.read(buf);
console.log(JSON.stringify({
  helper: helper.reason ?? "loaded", got: new TextDecoder().decode(buf.subarray(0, n ?? 0)),
  aead: aeadBackend(), x25519: x25519Backend().name, nodeCrypto: nodeCryptoLoaded(),
  aeadLib: helper.aead?.library,
}));
// Alive until told, so that the test can read which libraries this process has mapped.
await Deno.stdin.read(new Uint8Array(1));
Deno.exit(0);
`;
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(file, script);
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...FLAGS, "--config", `${ROOT}deno.json`, file],
      env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await lines.read();
      if (done) break;
      text += value;
    }
    // What the process has mapped (a Deno program may not read its own /proc/self/maps).
    const maps = text ? await Deno.readTextFile(`/proc/${child.pid}/maps`) : "";
    await child.stdin.close();
    await lines.cancel();
    const status = await child.status;
    assert.equal(status.code, 0, await stderr);
    const r = JSON.parse(text);
    assert.equal(r.helper, "loaded");
    assert.equal(r.got, "ping", "the handshake completed and data went through");
    assert.equal(r.aead, "native");
    assert.equal(r.x25519, "native");
    assert.equal(r.nodeCrypto, false, "node:crypto was loaded although the helper has both");
    // Only the library in use is opened (native/syslib.c): libsodium on x86_64, where CI installs
    // both (.ci/run); libcrypto would be about 2 ms and 5 MB more for nothing.
    if (Deno.build.arch === "x86_64") {
      assert.equal(r.aeadLib, "libsodium.so.23", "x86_64 prefers libsodium");
      assert.ok(maps.includes("libsodium.so.23"), "libsodium.so.23 is mapped");
      assert.ok(!maps.includes("libcrypto.so.3"), "libcrypto.so.3 was opened as well");
    }
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("nothing on the CLI's tunnel path imports node:crypto or noble's curves up front", async () => {
  // Type-only imports are erased; a code import would load it at start whatever the backends.
  // noble's curves come only through x25519_noble.ts, which x25519.ts imports dynamically.
  for (const entry of ["cli/run.ts", "cli/forward.ts", "cli/proxy.ts", "core/host/sandbox.ts"]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", "--config", `${ROOT}deno.json`, `${ROOT}${entry}`],
      env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const graph = JSON.parse(new TextDecoder().decode(out.stdout)) as {
      modules: { specifier: string; dependencies?: { specifier: string; code?: unknown }[] }[];
    };
    assert.ok(graph.modules.length > 20, `${entry}: the graph was read`);
    const importers = graph.modules.filter((m) =>
      m.dependencies?.some((d) => d.specifier === "node:crypto" && d.code !== undefined)
    ).map((m) => m.specifier);
    assert.deepEqual(importers, [], `${entry}: node:crypto imported for its code`);
    const curves = graph.modules.filter((m) =>
      !m.specifier.endsWith("/core/wireguard/x25519_noble.ts") &&
      m.dependencies?.some((d) => d.specifier.startsWith("@noble/curves/") && d.code !== undefined)
    ).map((m) => m.specifier);
    assert.deepEqual(curves, [], `${entry}: @noble/curves imported up front`);
  }
});
