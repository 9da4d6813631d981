// `wrapguard forward` and `wrapguard proxy` as a user meets them: help, usage errors (exit 2),
// start-up failures (exit 1) with a message that says what to fix. No root, no traffic.
import assert from "node:assert/strict";
import { encodeKey, generatePrivateKey, publicKeyOf } from "../core/wireguard/keys.ts";
import { HOST_ENV, wrapguardArgv } from "./_support/forward_world.ts";

async function wrapguard(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const [cmd, ...rest] = wrapguardArgv(args);
  const out = await new Deno.Command(cmd!, { args: rest, env: HOST_ENV, stdin: "null" }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** A config with one peer on loopback and no endpoint: starts, sends nothing. */
async function quietConfig(dir: string): Promise<string> {
  const path = `${dir}/wg.conf`;
  await Deno.writeTextFile(
    path,
    `[Interface]\nPrivateKey = ${encodeKey(generatePrivateKey())}\nAddress = 10.9.0.2/32\n` +
      `ListenPort = 0\n\n[Peer]\nPublicKey = ${
        encodeKey(publicKeyOf(generatePrivateKey()))
      }\nAllowedIPs = 10.9.0.1/32\n`,
    { mode: 0o600 },
  );
  return path;
}

Deno.test("forward and proxy: help and usage errors", async (t) => {
  await t.step("--help lists the forms", async () => {
    const f = await wrapguard(["forward", "--help"]);
    assert.equal(f.code, 0);
    assert.match(f.stdout, /-L LOCAL=DEST/);
    assert.match(f.stdout, /systemd\[:NAME\]/);
    const p = await wrapguard(["proxy", "--help"]);
    assert.equal(p.code, 0);
    assert.match(p.stdout, /--socks5 ADDR:PORT/);
    assert.match(p.stdout, /--allow-remote/);
  });
  const cases: [string[], RegExp][] = [
    [["forward", "-L", "unix:/tmp/x=10.0.0.1:80"], /--config is required/],
    [["forward", "-c", "x.conf"], /no forward given/],
    [["forward", "-c", "x.conf", "-L", "tcp:127.0.0.1:80=fd00::1:80"], /in brackets/],
    [["forward", "-c", "x.conf", "-R", "80=tcp:host"], /not host:port/],
    [["forward", "-c", "x.conf", "-L", "unix:/a=10.0.0.1:1", "--log-level", "loud"], /log-level/],
    [["proxy", "-c", "x.conf"], /give --socks5 or --http/],
    [["proxy", "-c", "x.conf", "--socks5", "0.0.0.0:1080"], /not a loopback address/],
    [["proxy", "-c", "x.conf", "--http", "[::]:3128"], /not a loopback address/],
  ];
  for (const [args, message] of cases) {
    await t.step(args.join(" "), async () => {
      const r = await wrapguard(args);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
    });
  }
});

Deno.test("forward and proxy: start-up failures exit 1 and say why", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const conf = await quietConfig(dir);
    const missing = await wrapguard([
      "forward",
      "-c",
      `${dir}/none.conf`,
      "-L",
      `unix:${dir}/a.sock=10.9.0.1:80`,
    ]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /none\.conf/);
    // A path that is a regular file is never replaced.
    await Deno.writeTextFile(`${dir}/taken`, "");
    const taken = await wrapguard([
      "forward",
      "-c",
      conf,
      "-L",
      `unix:${dir}/taken=10.9.0.1:80`,
    ]);
    assert.equal(taken.code, 1);
    assert.match(taken.stderr, /exists and is not a socket/);
    // Socket activation asked for, but nothing passed.
    const noFds = await wrapguard(["forward", "-c", conf, "-L", "systemd=10.9.0.1:80"]);
    assert.equal(noFds.code, 1);
    assert.match(noFds.stderr, /no sockets were passed/);
    // A proxy port in use.
    const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const proxy = await wrapguard(["proxy", "-c", conf, "--http", String(busy.addr.port)]);
    busy.close();
    assert.equal(proxy.code, 1);
    assert.match(proxy.stderr, /Cannot listen on 127\.0\.0\.1:\d+ for http/);
    const badAuth = await wrapguard(["proxy", "-c", conf, "--socks5", "0", "--auth-file", conf]);
    assert.equal(badAuth.code, 1);
    assert.match(badAuth.stderr, /expected user:password/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
