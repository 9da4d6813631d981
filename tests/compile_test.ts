/**
 * The single binary's ingredients: preload/build.sh builds the interposer, the probe and the
 * supervisor for both
 * architectures (x86_64 and aarch64 — a missing cross compiler is a failure here, as CI installs
 * it), the ELF machine fields are right, and the bytes embedded in preload/build/embedded.ts are
 * the built files. Then `deno task compile` (.ci/compile): it builds both binaries where a runtime
 * base is available (DENORT_BIN*), and otherwise says so plainly and exits 1 — run inside a
 * network namespace so that its download attempt cannot leave the machine.
 */
import assert from "node:assert/strict";
import { libraries, probes, supervisors } from "../preload/build/embedded.ts";
import { udpHelpers } from "../native/build/embedded.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const MACHINE: Record<string, number> = { x86_64: 62, aarch64: 183 };

function elfMachine(bytes: Uint8Array): number {
  assert.deepEqual([...bytes.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46], "an ELF file");
  assert.equal(bytes[4], 2, "64-bit");
  return new DataView(bytes.buffer, bytes.byteOffset).getUint16(18, true);
}

/**
 * Runs `script` with its output directory set to a fresh one (through `outVar`) and calls `check`
 * with a reader for what it built; a file it did not build fails naming its compiler.
 */
async function withBuild(
  script: string,
  outVar: string,
  check: (read: (name: string) => Promise<Uint8Array>) => Promise<void>,
): Promise<void> {
  const out = await Deno.makeTempDir({ prefix: "wg-build-" });
  try {
    const r = await new Deno.Command("bash", {
      args: [`${ROOT}${script}`],
      env: { [outVar]: out },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const log = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
    assert.equal(r.code, 0, log);
    await check((name) =>
      Deno.readFile(`${out}/${name}`).catch(() => {
        throw new Error(`${name} was not built (is its compiler installed?):\n${log}`);
      })
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
}

Deno.test("preload: both interposers, probes and supervisors build for their architecture; embedded = built", async () => {
  await withBuild("preload/build.sh", "WRAPGUARD_PRELOAD_OUT", async (read) => {
    for (const arch of ["x86_64", "aarch64"]) {
      for (const name of [`libwrapguard-${arch}.so`, `probe-${arch}`, `supervisor-${arch}`]) {
        assert.equal(elfMachine(await read(name)), MACHINE[arch], `${name} is for ${arch}`);
      }
      // What the program carries is what preload/build holds (CI builds it before the tests).
      const lib = Uint8Array.fromBase64(libraries[arch] ?? "");
      const probe = Uint8Array.fromBase64(probes[arch] ?? "");
      assert.equal(elfMachine(lib), MACHINE[arch]);
      assert.equal(elfMachine(probe), MACHINE[arch]);
      assert.deepEqual(lib, await Deno.readFile(`${ROOT}preload/build/libwrapguard-${arch}.so`));
      assert.deepEqual(probe, await Deno.readFile(`${ROOT}preload/build/probe-${arch}`));
      const supervisor = Uint8Array.fromBase64(supervisors[arch] ?? "");
      assert.equal(elfMachine(supervisor), MACHINE[arch]);
      assert.deepEqual(
        supervisor,
        await Deno.readFile(`${ROOT}preload/build/supervisor-${arch}`),
      );
    }
  });
});

Deno.test("native: the batched UDP helper builds for both architectures; embedded = built", async () => {
  await withBuild("native/build.sh", "WRAPGUARD_NATIVE_OUT", async (read) => {
    for (const arch of ["x86_64", "aarch64"]) {
      const built = await read(`libwgio-${arch}.so`);
      assert.equal(elfMachine(built), MACHINE[arch]);
      // The committed embedded.ts is what this source builds to (a C change without a rebuild
      // would ship the old helper).
      assert.deepEqual(
        Uint8Array.fromBase64(udpHelpers[arch] ?? ""),
        built,
        `embedded ${arch} is stale`,
      );
    }
  });
});

const HAVE_BASE = ["DENORT_BIN", "DENORT_BIN_X86_64", "DENORT_BIN_AARCH64"].some((v) =>
  (Deno.env.get(v) ?? "") !== ""
);
const UNSHARE = await new Deno.Command("unshare", { args: ["-rn", "true"], stderr: "null" })
  .output().then((o) => o.success, () => false);

Deno.test({
  name: "compile: without a runtime base it says so plainly and exits 1",
  ignore: HAVE_BASE || !UNSHARE,
  async fn() {
    const dist = await Deno.makeTempDir({ prefix: "wg-dist-" });
    try {
      const r = await new Deno.Command("unshare", {
        args: ["-rn", "bash", `${ROOT}.ci/compile`],
        env: { WRAPGUARD_DIST: dist, WRAPGUARD_COMPILE_TIMEOUT: "60", DENO_NO_UPDATE_CHECK: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const err = new TextDecoder().decode(r.stderr);
      assert.equal(r.code, 1, err);
      for (const arch of ["x86_64", "aarch64"]) {
        assert.match(
          err,
          new RegExp(
            `cannot build ${dist}/wrapguard-${arch}-linux: deno compile needs Deno's runtime base`,
          ),
        );
        assert.match(err, new RegExp(`DENORT_BIN_${arch.toUpperCase()}=/path/to/denort`));
      }
      assert.deepEqual([...Deno.readDirSync(dist)].filter((e) => !e.name.includes(".tmp")), []);
    } finally {
      await Deno.remove(dist, { recursive: true });
    }
  },
});

Deno.test({
  name: "compile: with a runtime base, both binaries build and the native one passes selftest",
  ignore: !HAVE_BASE,
  async fn() {
    const dist = await Deno.makeTempDir({ prefix: "wg-dist-" });
    try {
      const r = await new Deno.Command("bash", {
        args: [`${ROOT}.ci/compile`],
        env: { WRAPGUARD_DIST: dist },
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
      for (const arch of ["x86_64", "aarch64"]) {
        const bytes = await Deno.readFile(`${dist}/wrapguard-${arch}-linux`);
        assert.equal(elfMachine(bytes), MACHINE[arch]);
      }
      const st = await new Deno.Command(`${dist}/wrapguard-${Deno.build.arch}-linux`, {
        args: ["selftest", "--json"],
        clearEnv: true,
        env: { PATH: "/usr/bin:/bin" },
        stdout: "piped",
      }).output();
      assert.equal(st.code, 0, new TextDecoder().decode(st.stdout));
    } finally {
      await Deno.remove(dist, { recursive: true });
    }
  },
});
