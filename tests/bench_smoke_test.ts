/**
 * `deno task bench` at tiny sizes, so that the harness cannot rot: every workload runs in every
 * mode it supports and produces a number. No timing is asserted (bench/ is where speed is judged).
 */
import assert from "node:assert/strict";
import { netnsTest } from "./_support/netns.ts";

const ROOT = new URL("../", import.meta.url).pathname;

netnsTest("bench --quick measures every workload in every mode", async () => {
  const out = await Deno.makeTempDir({ prefix: "wrapguard-bench-" });
  try {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${ROOT}bench/main.ts`, "--quick", "--out", out],
      env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(r.stdout);
    const err = new TextDecoder().decode(r.stderr);
    assert.equal(r.code, 0, `bench failed:\n${text}\n${err.slice(-4000)}`);
    assert.doesNotMatch(err, /failed:/, err.slice(-4000));
    const json = JSON.parse(await Deno.readTextFile(`${out}/bench.json`));
    const results: { name: string; mode: string; value: number }[] = json.results;
    const names = new Set(results.map((x) => x.name));
    for (
      const want of [
        "cold start to first byte",
        "bulk TCP upload, 1 stream",
        "TCP 1-byte ping-pong p50",
        "TCP connect, request, close",
        "UDP 64-byte datagrams received",
        "UDP 1400-byte datagrams received",
        "RSS idle (tunnel process)",
      ]
    ) assert.ok(names.has(want), `no ${want} in ${[...names].join(", ")}`);
    for (const x of results) {
      // RSS per connection may be 0 for the kernel; everything else must be a positive number.
      if (x.name.startsWith("RSS per")) {
        assert.ok(Number.isFinite(x.value), `${x.name} (${x.mode})`);
      } else assert.ok(x.value > 0, `${x.name} (${x.mode}) = ${x.value}`);
    }
    const modes = new Set(results.filter((x) => x.name.startsWith("bulk")).map((x) => x.mode));
    assert.deepEqual([...modes].sort(), ["a", "b", "c", "d"]);
    const svg = await Deno.readTextFile(`${out}/bench.svg`);
    assert.match(svg, /^<svg[\s\S]*<\/svg>\n$/);
    assert.match(text, /\| TCP 1-byte ping-pong p50/);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
}, { requires: ["python3", "iperf3"], timeoutMs: 120_000 });
