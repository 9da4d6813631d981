/**
 * The host's sandbox after launch (DESIGN.md decision 7): a process started with exactly the CLI's
 * permission flags (cli/permissions.flags) starts a child, calls lockDown(dir), and then can no
 * longer spawn a program, write a file or read the environment; its private directory is still
 * removed when it releases the sandbox, and when it is killed with SIGKILL.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;
const FLAGS = Deno.readTextFileSync(`${ROOT}cli/permissions.flags`).split(/\s+/).filter((f) => f);
const SANDBOX = new URL("../core/host/sandbox.ts", import.meta.url).href;

// The host, reduced to what matters: a private dir with files, a child, then lockDown.
const HOST = `
import { lockDown } from ${JSON.stringify(SANDBOX)};
const [scratch, mode] = Deno.args;
const dir = await Deno.makeTempDir({ dir: scratch, prefix: "wrapguard-run-" });
await Deno.chmod(dir, 0o700);
await Deno.writeTextFile(dir + "/libwrapguard.so", "stand-in");
const child = new Deno.Command("sleep", { args: ["0.3"] }).spawn();
const sandbox = await lockDown(dir, { deferWrite: mode === "deferred" });
const r = { dir, revoked: sandbox.revoked, janitor: sandbox.janitor };
const attempt = (name, fn) => {
  try { fn(); r[name] = "allowed"; } catch (e) { r[name] = e.name; }
};
if (mode === "deferred") {
  // What run does between the program's start and its status socket: spawn and env are gone,
  // write is still there until revokeDeferred().
  attempt("deferredSpawn", () => new Deno.Command("true").spawn());
  attempt("deferredEnv", () => Deno.env.get("HOME"));
  attempt("deferredWrite", () => Deno.writeTextFileSync(dir + "/status.sock", "x"));
  r.deferredRevoked = [...sandbox.revoked];
  await sandbox.revokeDeferred();
  r.revoked = sandbox.revoked;
}
attempt("spawn", () => new Deno.Command("true").spawn());
attempt("writeOutside", () => Deno.writeTextFileSync(scratch + "/outside", "x"));
attempt("writeInside", () => Deno.writeTextFileSync(dir + "/more", "x"));
attempt("remove", () => Deno.removeSync(dir + "/libwrapguard.so"));
attempt("env", () => Deno.env.get("HOME"));
r.childCode = (await child.status).code;
r.stillThere = Deno.statSync(dir + "/libwrapguard.so").isFile;
console.log(JSON.stringify(r));
if (mode !== "hang") await sandbox.release();
else await new Promise(() => setInterval(() => {}, 1000));
`;

async function withScratch(fn: (scratch: string, script: string) => Promise<void>) {
  const scratch = await Deno.makeTempDir({ prefix: "wg-sandbox-" });
  try {
    const script = `${scratch}/host.js`;
    await Deno.writeTextFile(script, HOST);
    await fn(scratch, script);
  } finally {
    await Deno.remove(scratch, { recursive: true });
  }
}

function start(script: string, scratch: string, mode: string): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    // The script lives in /tmp: the project's import map (the noble packages) comes by --config.
    args: ["run", "--config", `${ROOT}deno.json`, ...FLAGS, script, scratch, mode],
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

interface Report {
  dir: string;
  revoked: string[];
  janitor: boolean;
  spawn: string;
  writeOutside: string;
  writeInside: string;
  remove: string;
  env: string;
  childCode: number;
  stillThere: boolean;
}

function assertLocked(r: Report, scratch: string) {
  assert.deepEqual(r.revoked, ["run", "write", "env"]);
  assert.equal(r.janitor, true);
  assert.equal(r.spawn, "NotCapable", "the host can no longer start a program");
  assert.equal(r.writeOutside, "NotCapable", "the host can no longer write");
  assert.equal(r.writeInside, "NotCapable");
  assert.equal(r.remove, "NotCapable");
  assert.equal(r.env, "NotCapable");
  assert.equal(r.childCode, 0, "the child started before lockDown runs on");
  assert.equal(r.stillThere, true);
  assert.throws(() => Deno.statSync(`${scratch}/outside`), Deno.errors.NotFound);
}

async function gone(path: string, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      Deno.statSync(path);
    } catch {
      return true;
    }
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("sandbox: after launch the host cannot spawn or write; release removes its dir", async () => {
  await withScratch(async (scratch, script) => {
    const out = await start(script, scratch, "release").output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const r: Report = JSON.parse(text);
    assertLocked(r, scratch);
    // release() returns once the janitor is done: nothing to wait for.
    assert.throws(() => Deno.statSync(r.dir), Deno.errors.NotFound, "private dir removed");
  });
});

Deno.test("sandbox: the private dir is removed even when the host is killed", async () => {
  await withScratch(async (scratch, script) => {
    const host = start(script, scratch, "hang");
    const reader = host.stdout.getReader();
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    reader.releaseLock();
    const r: Report = JSON.parse(text);
    assertLocked(r, scratch);
    assert.equal(Deno.statSync(r.dir).isDirectory, true);
    host.kill("SIGKILL");
    await host.status;
    await host.stdout.cancel();
    await host.stderr.cancel();
    assert.ok(await gone(r.dir, 3000), "the janitor removed the dir after SIGKILL");
  });
});

Deno.test("sandbox: deferWrite keeps write (only) until revokeDeferred, then the same lock", async () => {
  await withScratch(async (scratch, script) => {
    const out = await start(script, scratch, "deferred").output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const r = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.deepEqual(r.deferredRevoked, ["run", "env"]);
    assert.equal(r.deferredSpawn, "NotCapable");
    assert.equal(r.deferredEnv, "NotCapable");
    assert.equal(r.deferredWrite, "allowed");
    assertLocked(r, scratch);
    assert.throws(() => Deno.statSync(r.dir), Deno.errors.NotFound, "private dir removed");
  });
});
