/**
 * Keys: our X25519, base64 and key commands against the real `wg` binary, plus the decoder's
 * edge cases and secret redaction.
 */
import assert from "node:assert/strict";
import {
  clampPrivateKey,
  decodeKey,
  encodeKey,
  generatePresharedKey,
  generatePrivateKey,
  publicKeyOf,
  redactSecret,
} from "../core/wireguard/keys.ts";
import { genkey, genpsk, type KeysIO, pubkey } from "../cli/keys.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const CLI_MAIN = new URL("../cli/main.ts", import.meta.url).pathname;

// The interop tests need wg-tools. In CI they must run (and fail if wg is missing); elsewhere
// they are skipped with a one-line reason.
async function findWg(): Promise<string | undefined> {
  try {
    const out = await new Deno.Command("wg", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    })
      .output();
    return out.success ? undefined : "`wg --version` failed";
  } catch {
    return "wg (wireguard-tools) is not installed";
  }
}
const wgMissing = await findWg();
const inCI = Deno.env.get("CI") !== undefined;
const skipWg = wgMissing !== undefined && !inCI;
if (skipWg) console.log(`keys_test: skipping wg interop tests: ${wgMissing}`);

/** Runs a program with `input` on stdin; returns exit code and raw output bytes. */
async function run(cmd: string, args: string[], input: Uint8Array | string = "") {
  const child = new Deno.Command(cmd, {
    args,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(typeof input === "string" ? enc.encode(input) : input);
  await writer.close();
  const out = await child.output();
  return { code: out.code, stdout: out.stdout, stderr: dec.decode(out.stderr) };
}

/** A KeysIO that records what a command writes. */
function fakeIO(stdin: Uint8Array | string = "", worldAccessible = false) {
  const out: number[] = [];
  let err = "";
  const io: KeysIO = {
    readStdin: () => Promise.resolve(typeof stdin === "string" ? enc.encode(stdin) : stdin),
    writeStdout: (b) => {
      out.push(...b);
      return Promise.resolve();
    },
    writeStderr: (t) => {
      err += t;
      return Promise.resolve();
    },
    stdoutIsWorldAccessibleFile: () => worldAccessible,
  };
  return { io, stdout: () => Uint8Array.from(out), stderr: () => err };
}

Deno.test({
  name: "wg is installed (required when CI is set)",
  ignore: !inCI,
  fn() {
    assert.equal(wgMissing, undefined, `wg interop tests cannot run in CI: ${wgMissing}`);
  },
});

Deno.test({
  name: "publicKeyOf matches wg pubkey for 100 keys from wg genkey",
  ignore: skipWg,
  async fn() {
    const gen = await run("sh", ["-c", "for i in $(seq 100); do wg genkey; done"]);
    assert.equal(gen.code, 0, gen.stderr);
    const privs = dec.decode(gen.stdout).trim().split("\n");
    assert.equal(privs.length, 100);
    const pubs = await run(
      "sh",
      ["-c", 'while read -r k; do echo "$k" | wg pubkey; done'],
      privs.join("\n") + "\n",
    );
    assert.equal(pubs.code, 0, pubs.stderr);
    const wgPubs = dec.decode(pubs.stdout).trim().split("\n");
    assert.equal(wgPubs.length, 100);
    for (let i = 0; i < 100; i++) {
      const priv = decodeKey(privs[i]!);
      assert.ok(priv, `our decoder rejected wg's key ${privs[i]}`);
      assert.equal(encodeKey(priv), privs[i], "decode/encode is not the identity");
      assert.equal(encodeKey(publicKeyOf(priv)), wgPubs[i], `public key of ${privs[i]}`);
    }
  },
});

Deno.test({
  name: "wg pubkey matches publicKeyOf for 100 keys from generatePrivateKey",
  ignore: skipWg,
  async fn() {
    const privs = Array.from({ length: 100 }, () => generatePrivateKey());
    const texts = privs.map(encodeKey);
    const pubs = await run(
      "sh",
      ["-c", 'while read -r k; do echo "$k" | wg pubkey; done'],
      texts.join("\n") + "\n",
    );
    assert.equal(pubs.code, 0, pubs.stderr);
    const wgPubs = dec.decode(pubs.stdout).trim().split("\n");
    assert.equal(wgPubs.length, 100);
    privs.forEach((priv, i) => assert.equal(encodeKey(publicKeyOf(priv)), wgPubs[i], texts[i]));
  },
});

Deno.test({
  name: "wg genpsk output decodes to 32 bytes and re-encodes to the same text",
  ignore: skipWg,
  async fn() {
    for (let i = 0; i < 5; i++) {
      const out = await run("wg", ["genpsk"]);
      assert.equal(out.code, 0, out.stderr);
      const text = dec.decode(out.stdout);
      assert.match(text, /^[A-Za-z0-9+/]{43}=\n$/);
      const psk = decodeKey(text.trimEnd());
      assert.equal(psk?.length, 32);
      assert.equal(encodeKey(psk!), text.trimEnd());
    }
  },
});

Deno.test({
  name: "pubkey command: same exit code and stdout bytes as wg pubkey",
  ignore: skipWg,
  async fn(t) {
    const key = encodeKey(generatePrivateKey());
    const cases: [string, Uint8Array | string][] = [
      ["key and newline", key + "\n"],
      ["key without newline", key],
      ["trailing NUL and whitespace", key + "\0 \t\r\n\v\f\n"],
      ["leading space", " " + key],
      ["trailing garbage", key + " x"],
      ["too short", key.slice(0, 43)],
      ["empty", ""],
      ["non-canonical last character", key.slice(0, 42) + "B="],
      ["url-safe alphabet", "-" + key.slice(1)],
      ["non-ASCII byte", Uint8Array.from([0xc3, ...enc.encode(key.slice(1))])],
      ["no padding", key.slice(0, 43) + "A"],
    ];
    for (const [name, input] of cases) {
      await t.step(name, async () => {
        const wg = await run("wg", ["pubkey"], input);
        const ours = fakeIO(input);
        const code = await pubkey([], ours.io);
        assert.equal(code, wg.code, `exit code; wg said ${wg.stderr}`);
        assert.deepEqual(ours.stdout(), wg.stdout);
        if (wg.code !== 0) {
          // Same diagnosis as wg, with our prefix instead of wg's program name.
          assert.equal(ours.stderr(), wg.stderr.replace(/^\S*wg: /, "pubkey: "));
        }
      });
    }
  },
});

Deno.test({
  name: "cli/main.ts pubkey as a subprocess prints exactly what wg pubkey prints",
  ignore: skipWg,
  async fn() {
    const input = encodeKey(generatePrivateKey()) + "\n";
    const wg = await run("wg", ["pubkey"], input);
    const ours = await run(Deno.execPath(), ["run", "-A", CLI_MAIN, "pubkey"], input);
    assert.equal(ours.code, 0, ours.stderr);
    assert.deepEqual(ours.stdout, wg.stdout);
    const bad = await run(Deno.execPath(), ["run", "-A", CLI_MAIN, "pubkey"], "not a key\n");
    assert.equal(bad.code, 1);
    assert.equal(bad.stdout.length, 0);
    assert.equal(bad.stderr, "pubkey: Key is not the correct length or format\n");
  },
});

Deno.test({
  name: "genkey and genpsk commands write the world-accessible warning as wg does",
  ignore: skipWg,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      for (const cmd of ["genkey", "genpsk"]) {
        const script = `umask 022; wg ${cmd} > "$1/wg"; "$2" run -A "$3" ${cmd} > "$1/ours"`;
        const out = await run("sh", ["-c", script, "sh", dir, Deno.execPath(), CLI_MAIN]);
        assert.equal(out.code, 0);
        const warning = "Warning: writing to world accessible file.\n" +
          "Consider setting the umask to 077 and trying again.\n";
        assert.equal(out.stderr, warning + warning, `${cmd}: both should warn once`);
        const ours = await Deno.readTextFile(`${dir}/ours`);
        assert.match(ours, /^[A-Za-z0-9+/]{43}=\n$/);
      }
      const quiet = await run("sh", [
        "-c",
        `umask 077; "$2" run -A "$3" genkey > "$1/private"`,
        "sh",
        dir,
        Deno.execPath(),
        CLI_MAIN,
      ]);
      assert.equal(quiet.stderr, "", "no warning for a 0600 file");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "genkey command output is a clamped key that wg pubkey accepts",
  ignore: skipWg,
  async fn() {
    const io = fakeIO();
    assert.equal(await genkey([], io.io), 0);
    const text = dec.decode(io.stdout());
    assert.match(text, /^[A-Za-z0-9+/]{43}=\n$/);
    const priv = decodeKey(text.trimEnd())!;
    assert.equal(priv[0]! & 7, 0);
    assert.equal(priv[31]! & 0xc0, 0x40);
    const wg = await run("wg", ["pubkey"], text);
    assert.equal(wg.code, 0);
    assert.equal(dec.decode(wg.stdout), encodeKey(publicKeyOf(priv)) + "\n");
  },
});

Deno.test("genpsk command prints 32 random bytes in base64", async () => {
  const a = fakeIO(), b = fakeIO();
  assert.equal(await genpsk([], a.io), 0);
  assert.equal(await genpsk([], b.io), 0);
  const ta = dec.decode(a.stdout()), tb = dec.decode(b.stdout());
  assert.match(ta, /^[A-Za-z0-9+/]{43}=\n$/);
  assert.notEqual(ta, tb);
  assert.equal(decodeKey(ta.trimEnd())?.length, 32);
  assert.equal(a.stderr(), "");
});

Deno.test("key commands: --help prints usage and succeeds; other arguments fail", async () => {
  for (const command of [genkey, pubkey, genpsk]) {
    const help = fakeIO();
    assert.equal(await command(["--help"], help.io), 0);
    assert.match(dec.decode(help.stdout()), /^Usage: wrapguard (genkey|pubkey|genpsk)/);
    const extra = fakeIO();
    assert.equal(await command(["extra"], extra.io), 1);
    assert.equal(extra.stdout().length, 0);
    assert.match(extra.stderr(), /^Usage: /);
  }
});

Deno.test("genkey warns when stdout is a world-accessible file", async () => {
  const io = fakeIO("", true);
  assert.equal(await genkey([], io.io), 0);
  assert.match(io.stderr(), /^Warning: writing to world accessible file\.\n/);
  assert.equal(io.stdout().length, 45);
});

Deno.test("publicKeyOf: RFC 7748 (6.1) test vectors", () => {
  const hex = (s: string) => Uint8Array.from(s.match(/../g)!, (h) => parseInt(h, 16));
  const toHex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  assert.equal(
    toHex(publicKeyOf(hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))),
    "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
  );
  assert.equal(
    toHex(publicKeyOf(hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))),
    "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
  );
  assert.throws(() => publicKeyOf(new Uint8Array(31)), RangeError);
});

Deno.test("generatePrivateKey clamps as RFC 7748 (5) and is random", () => {
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const k = generatePrivateKey();
    assert.equal(k.length, 32);
    assert.equal(k[0]! & 7, 0);
    assert.equal(k[31]! & 0x80, 0);
    assert.equal(k[31]! & 0x40, 0x40);
    seen.add(encodeKey(k));
  }
  assert.equal(seen.size, 200);
  const ones = new Uint8Array(32).fill(0xff);
  clampPrivateKey(ones);
  assert.equal(ones[0], 0xf8);
  assert.equal(ones[31], 0x7f);
  assert.equal(ones[1], 0xff);
  // A preshared key is not clamped: over 200 keys some low bit of byte 0 is set.
  assert.ok(Array.from({ length: 200 }, generatePresharedKey).some((k) => (k[0]! & 7) !== 0));
});

Deno.test("encodeKey/decodeKey round-trip and match btoa", () => {
  for (let i = 0; i < 500; i++) {
    const bytes = crypto.getRandomValues(new Uint8Array(32));
    const text = encodeKey(bytes);
    assert.equal(text, btoa(String.fromCharCode(...bytes)));
    assert.deepEqual(decodeKey(text), bytes);
  }
  assert.throws(() => encodeKey(new Uint8Array(33)), RangeError);
});

Deno.test("decodeKey rejects everything but 44 canonical base64 characters", async (t) => {
  const good = "q80eo5ee3q8xdwYXrKZ7LJb30aVjEFwQUt87xbCTXTA=";
  assert.ok(decodeKey(good));
  const bad: [string, string][] = [
    ["empty", ""],
    ["43 characters", good.slice(0, 43)],
    ["45 characters", good + "="],
    ["trailing newline", good + "\n"],
    ["leading space", " " + good.slice(0, 43)],
    ["no padding", good.slice(0, 43) + "A"],
    ["double padding", good.slice(0, 42) + "=="],
    ["url-safe alphabet", "q80eo5ee3q8xdwYXrKZ7LJb30aVjEFwQUt87xbCTXT-="],
    ["non-canonical trailing bits", good.slice(0, 42) + "B="],
    ["non-ASCII", "é" + good.slice(1)],
    ["44 characters without padding (a 33-byte key)", btoa("x".repeat(33))],
  ];
  for (const [name, text] of bad) {
    await t.step(name, () => assert.equal(decodeKey(text), undefined, text));
  }
});

Deno.test("secret keys print as <redacted> but stay plain Uint8Arrays", () => {
  for (
    const key of [generatePrivateKey(), generatePresharedKey(), redactSecret(new Uint8Array(32))]
  ) {
    assert.equal(Deno.inspect(key), "<redacted>");
    assert.equal(Deno.inspect({ key }), "{ key: <redacted> }");
    assert.equal(String(key), "<redacted>");
    assert.equal(`${key}`, "<redacted>");
    assert.equal(JSON.stringify({ key }), '{"key":"<redacted>"}');
    assert.equal(Object.getPrototypeOf(key), Uint8Array.prototype);
    assert.deepEqual(key, new Uint8Array(key));
    assert.equal(encodeKey(key).length, 44);
  }
  // A public key is not secret and prints its bytes.
  assert.notEqual(Deno.inspect(publicKeyOf(generatePrivateKey())), "<redacted>");
});
