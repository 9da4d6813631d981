// The selftest as a newcomer runs it: a subprocess with exactly the CLI's permission flags,
// and, where unprivileged user namespaces exist, inside one with no network but loopback.
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url).pathname;
const flags = (await Deno.readTextFile(`${root}cli/permissions.flags`)).split(/\s+/).filter(
  Boolean,
);

async function selftest(
  prefix: string[],
  extra: string[] = [],
): Promise<{ code: number; report: { ok: boolean; checks: { name: string; ok: boolean }[] } }> {
  const argv = [
    ...prefix,
    Deno.execPath(),
    "run",
    ...flags,
    "cli/main.ts",
    "selftest",
    "--json",
    ...extra,
  ];
  const out = await new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  try {
    return { code: out.code, report: JSON.parse(text) };
  } catch {
    throw new Error(
      `selftest printed no JSON (exit ${out.code}):\n${text}\n${
        new TextDecoder().decode(out.stderr)
      }`,
    );
  }
}

function assertAllPassed(r: Awaited<ReturnType<typeof selftest>>) {
  assert.equal(r.code, 0, JSON.stringify(r.report, null, 2));
  assert.equal(r.report.ok, true);
  const names = r.report.checks.map((c) => c.name);
  for (
    const expected of [
      "handshake",
      "ICMP echo over IPv4",
      "ICMPv6 echo over IPv6",
      "UDP over IPv4",
      "UDP over IPv6",
      "interposer loads into the probe",
      "DNS through the tunnel (getaddrinfo)",
      "outbound TCP (probe, HTTP by name)",
      "inbound listen (probe)",
      "UDP (probe, sendto/recvfrom)",
    ]
  ) {
    assert.ok(names.includes(expected), `missing check ${expected}: ${names.join(", ")}`);
  }
  assert.ok(r.report.checks.every((c) => c.ok));
}

Deno.test("selftest passes with the CLI's permission flags, outside a namespace", async () => {
  assertAllPassed(await selftest([], ["--no-namespace"]));
});

const unshare = await new Deno.Command("unshare", { args: ["-rn", "true"], stderr: "null" })
  .output()
  .then((o) => o.success, () => false);
Deno.test({
  name: "selftest passes in a network namespace with only loopback",
  ignore: !unshare,
  async fn() {
    // The selftest enters the namespace itself (unshare -rn, then `ip link set lo up`).
    const r = await selftest([]);
    assertAllPassed(r);
    assert.equal((r.report as { namespace?: boolean }).namespace, true, "ran in a namespace");
  },
});

// Must-show: a newcomer who is not root. A copy of the project and of the npm cache, owned by
// `nobody`, run as `nobody` with an empty environment and --cached-only (nothing is fetched).
const isRoot = Deno.uid() === 0;
const setpriv = await new Deno.Command("setpriv", { args: ["--version"], stdout: "null" })
  .output()
  .then((o) => o.success, () => false);
Deno.test({
  name: "selftest passes as an unprivileged user (nobody) on a copy of the project",
  ignore: !isRoot || !setpriv,
  async fn() {
    const base = await Deno.makeTempDir({ prefix: "wrapguard-nobody-" });
    try {
      await Deno.chmod(base, 0o755);
      const repo = `${base}/repo`;
      await Deno.mkdir(repo);
      for (const item of ["cli", "core", "preload", "native", "deno.json", "deno.lock"]) {
        const r = await new Deno.Command("cp", { args: ["-r", `${root}${item}`, repo] }).output();
        assert.ok(r.success, `copy ${item}`);
      }
      const cache = Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME")}/.cache/deno`;
      await Deno.mkdir(`${base}/deno`);
      const c = await new Deno.Command("cp", { args: ["-r", `${cache}/npm`, `${base}/deno/`] })
        .output();
      assert.ok(c.success, "copy the npm cache");
      for (const d of ["home", "tmp"]) await Deno.mkdir(`${base}/${d}`);
      const own = await new Deno.Command("chown", { args: ["-R", "nobody:nogroup", base] })
        .output();
      assert.ok(own.success);
      const out = await new Deno.Command("setpriv", {
        args: [
          "--reuid=nobody",
          "--regid=nogroup",
          "--clear-groups",
          Deno.execPath(),
          "run",
          "--cached-only",
          ...flags,
          "cli/main.ts",
          "selftest",
          "--json",
        ],
        cwd: repo,
        clearEnv: true,
        env: {
          HOME: `${base}/home`,
          DENO_DIR: `${base}/deno`,
          TMPDIR: `${base}/tmp`,
          PATH: "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
          DENO_NO_UPDATE_CHECK: "1",
        },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      let report;
      try {
        report = JSON.parse(text);
      } catch {
        throw new Error(
          `no JSON (exit ${out.code}):\n${text}\n${new TextDecoder().decode(out.stderr)}`,
        );
      }
      assertAllPassed({ code: out.code, report });
      // Nothing left behind in the user's temp dir.
      assert.deepEqual([...Deno.readDirSync(`${base}/tmp`)].map((e) => e.name), []);
    } finally {
      await Deno.remove(base, { recursive: true });
    }
  },
});
