/**
 * The V8 flag in cli/permissions.flags keeps the young generation small. Without it, a burst of
 * short-lived objects that survive a scavenge or two (connections opening, docs/performance.md
 * "Memory per idle connection") grows it to tens of MB that V8 never gives back.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;
const FLAGS = Deno.readTextFileSync(`${ROOT}cli/permissions.flags`).split(/\s+/).filter((f) => f);

const CHURN = `
import v8 from "node:v8";
const keep = new Array(20_000);
for (let i = 0; i < 400_000; i++) keep[i % keep.length] = { i, a: [i, i + 1], s: new Uint8Array(16) };
const s = v8.getHeapSpaceStatistics().find((x) => x.space_name === "new_space");
console.log(s.space_size);
`;

async function newSpaceAfterChurn(flags: string[]): Promise<number> {
  const dir = await Deno.makeTempDir({ prefix: "wg-mem-" });
  try {
    const script = `${dir}/churn.js`;
    await Deno.writeTextFile(script, CHURN);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...flags, script],
      env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    return Number(new TextDecoder().decode(out.stdout).trim());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("cli/permissions.flags keeps V8's young generation at a few MiB under allocation bursts", async () => {
  const without = await newSpaceAfterChurn(FLAGS.filter((f) => !f.startsWith("--v8-flags")));
  assert.ok(without > 8 << 20, `the burst grows the default young generation (${without} bytes)`);
  const withFlags = await newSpaceAfterChurn(FLAGS);
  assert.ok(withFlags <= 4 << 20, `with the flags it stays small (${withFlags} bytes)`);
});
