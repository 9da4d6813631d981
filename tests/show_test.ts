/**
 * Issue 5, must-show 6: `wrapguard show` lists a running `wrapguard run` with a recent handshake,
 * as `wg show` does, found through the per-user status socket; a tunnel whose process is gone is
 * skipped and its socket removed. The formatting is checked without namespaces too.
 */
import assert from "node:assert/strict";
import { netnsTest, run, sleep, withTopology } from "./_support/netns.ts";
import { withRunWorld } from "./_support/run_world.ts";
import { formatAgo, formatBytes, formatStatus } from "../cli/show.ts";
import {
  checkPrivateDir,
  currentUid,
  listStatus,
  type StatusRecord,
  StatusServer,
} from "../core/host/status.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const FLAGS = Deno.readTextFileSync(`${ROOT}cli/permissions.flags`).split(/\s+/).filter((f) => f);

const RECORD: StatusRecord = {
  pid: 4242,
  kind: "run",
  interface: "wg0",
  config: "/etc/wg0.conf",
  command: "curl http://10.0.0.1/",
  started: 1_700_000_000_000,
  publicKey: "OURKEY=",
  listenPort: 51820,
  addresses: ["10.0.0.2/32"],
  routes: { "PEERKEY=": ["0.0.0.0/0 (exit node)"] },
  peers: [{
    publicKey: "PEERKEY=",
    endpoint: "198.18.0.2:51820",
    allowedIPs: ["10.0.0.0/24"],
    latestHandshake: 1_700_000_100_000,
    rxBytes: 1_536,
    txBytes: 92,
    persistentKeepalive: 25,
  }],
};

Deno.test("show: wg show's layout, durations and units", () => {
  assert.equal(formatAgo(0), "Now");
  assert.equal(formatAgo(5_400), "5 seconds ago");
  assert.equal(formatAgo(65_000), "1 minute, 5 seconds ago");
  assert.equal(formatAgo(2 * 86400_000 + 3600_000), "2 days, 1 hour ago");
  assert.equal(formatBytes(92), "92 B");
  assert.equal(formatBytes(1536), "1.50 KiB");
  assert.equal(formatBytes(3 * 1024 * 1024 * 1024), "3.00 GiB");
  assert.equal(
    formatStatus([RECORD], 1_700_000_107_000),
    `interface: wg0
  public key: OURKEY=
  listening port: 51820
  address: 10.0.0.2/32
  process: 4242 (run: curl http://10.0.0.1/)

peer: PEERKEY=
  endpoint: 198.18.0.2:51820
  allowed ips: 10.0.0.0/24
  routes: 0.0.0.0/0 (exit node)
  latest handshake: 7 seconds ago
  transfer: 1.50 KiB received, 92 B sent
  persistent keepalive: every 25 seconds
`,
  );
});

Deno.test("status sockets: listed while serving, stale ones removed, private dir enforced", async () => {
  const base = await Deno.makeTempDir();
  try {
    const uid = await currentUid();
    const dir = `${base}/wrapguard-${uid}`;
    const server = await StatusServer.start(dir, uid, () => RECORD);
    assert.equal((await Deno.stat(dir)).mode! & 0o777, 0o700);
    assert.deepEqual(await listStatus(dir, uid), [RECORD]);
    // A socket nobody serves any more (the process was killed): skipped and removed.
    const stale = `${dir}/1-dead.sock`;
    const bound = await new Deno.Command("python3", {
      args: ["-c", "import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", stale],
    }).output();
    assert.equal(bound.code, 0);
    assert.ok((await Deno.lstat(stale)).isSocket, "the dead socket is still there");
    assert.deepEqual(await listStatus(dir, uid), [RECORD]);
    await assert.rejects(Deno.lstat(stale), Deno.errors.NotFound);
    await server.close();
    assert.deepEqual(await listStatus(dir, uid), []);
    // A directory others can enter is refused.
    await Deno.chmod(dir, 0o755);
    await assert.rejects(checkPrivateDir(dir, uid, false), Deno.errors.PermissionDenied);
    await assert.rejects(StatusServer.start(dir, uid, () => RECORD), Deno.errors.PermissionDenied);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

netnsTest(
  "wrapguard show lists a running run with a recent handshake; gone after it exits",
  async () => {
    await withTopology({ hostNamespace: true }, async (topo) => {
      await withRunWorld(topo, { dns: false }, async (w) => {
        const xdg = `${topo.tmpDir}/xdg`;
        await Deno.mkdir(xdg, { mode: 0o700 });
        const env = { XDG_RUNTIME_DIR: xdg, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" };
        const show = (args: string[] = []) =>
          run(w.host, [Deno.execPath(), "run", ...FLAGS, `${ROOT}cli/main.ts`, "show", ...args], {
            env,
            timeoutMs: 15_000,
          });
        const none = await show();
        assert.equal(none.code, 0, none.stderr);
        assert.equal(none.stdout, "");

        // A wrapped program that stays up, and pings once so that bytes flow both ways.
        const runner = w.spawnWrapped(
          ["sh", "-c", "exec sleep 60"],
          { env: { XDG_RUNTIME_DIR: xdg } },
        );
        let records: StatusRecord[] = [];
        const deadline = Date.now() + 15_000;
        while (Date.now() < deadline) {
          const r = await show(["--json"]);
          assert.equal(r.code, 0, r.stderr);
          records = JSON.parse(r.stdout);
          if (records[0]?.peers[0]?.latestHandshake) break;
          await sleep(200);
        }
        assert.equal(records.length, 1, JSON.stringify(records));
        const rec = records[0]!;
        assert.equal(rec.kind, "run");
        assert.equal(rec.interface, "run");
        assert.equal(rec.listenPort, w.listenPort);
        assert.equal(rec.command, "sh -c exec sleep 60");
        const peer = rec.peers[0]!;
        assert.equal(peer.publicKey, w.wg.publicKey);
        assert.ok(Date.now() - peer.latestHandshake < 15_000, `handshake ${peer.latestHandshake}`);
        assert.ok(peer.rxBytes > 0 && peer.txBytes > 0, JSON.stringify(peer));
        // The other side agrees: wireguard-go has a handshake with our public key.
        const dump = await w.wg.dump();
        assert.equal(dump.peers[0]!.publicKey, rec.publicKey);
        assert.ok(dump.peers[0]!.latestHandshake > 0);

        const text = await show();
        assert.equal(text.code, 0, text.stderr);
        assert.match(text.stdout, /^interface: run\n {2}public key: /);
        assert.match(text.stdout, new RegExp(`listening port: ${w.listenPort}\n`));
        assert.match(text.stdout, new RegExp(`peer: ${w.wg.publicKey.replace(/[+/]/g, "\\$&")}`));
        assert.match(text.stdout, /endpoint: [0-9.]+:\d+\n/);
        assert.match(text.stdout, /allowed ips: 10\.77\.0\.0\/24, fd77::\/64\n/);
        assert.match(text.stdout, /latest handshake: (Now|\d+ seconds? ago)\n/);
        assert.match(
          text.stdout,
          /transfer: \d+(\.\d+)? (B|KiB) received, \d+(\.\d+)? (B|KiB) sent/,
        );

        // Killed without a chance to clean up: its socket stays, and show skips and removes it.
        await runner.kill("SIGKILL");
        const after = await show(["--json"]);
        assert.equal(after.code, 0, after.stderr);
        assert.deepEqual(JSON.parse(after.stdout), []);
        const left = [...Deno.readDirSync(`${xdg}/wrapguard`)].map((e) => e.name);
        assert.deepEqual(left, []);
      });
    });
  },
  { timeoutMs: 60_000 },
);
