/**
 * The tunnel survives privilege drops and chroot (issue 11): a wrapped process that becomes
 * `nobody`, or chroots into an empty directory, or both, can no longer reach the broker's socket
 * by its path (a 0700 directory of the user who ran wrapguard), and still reaches the peer
 * through the inherited channel (preload/channel.c). Another user's process holds no channel and
 * still cannot use the broker.
 */
import assert from "node:assert/strict";
import { netnsTest, run, withTopology } from "./_support/netns.ts";
import { PEER4, withRunWorld } from "./_support/run_world.ts";

const tcpPeer = new URL("./_support/tcp_peer.py", import.meta.url).pathname;

/** Drops as told, then connects to the peer's echo, and prints the echo and its uid. */
const DROP = `
import os, socket, sys
import encodings.idna  # before chroot: the codec cannot be loaded inside it
mode, root = sys.argv[1], sys.argv[2]
if "chroot" in mode:
    os.chroot(root)
    os.chdir("/")
if "setuid" in mode:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
try:
    s = socket.create_connection(("${PEER4}", 5001), timeout=10)
    s.sendall(b"through the tunnel")
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        b = s.recv(100)
        if not b:
            break
        got += b
    print(got.decode(), os.getuid())
except OSError as e:
    print(type(e).__name__, e.errno, os.getuid())
`;

netnsTest("wrapguard run: after setuid or chroot the tunnel is still reached", async (t) => {
  await withTopology({ hostNamespace: true }, async (topo) => {
    await withRunWorld(topo, { dns: false }, async (w) => {
      const echo = topo.spawn(topo.peer, ["python3", tcpPeer, "echo", PEER4, "5001"]);
      await echo.waitForOutput(/listening/);
      const empty = `${topo.tmpDir}/empty-root`;
      await Deno.mkdir(empty, { mode: 0o755 });

      for (
        const [mode, uid] of [["setuid", 65534], ["chroot", 0], ["chroot+setuid", 65534]] as const
      ) {
        await t.step(`${mode}, then connect`, async () => {
          const r = await w.wrap(["python3", "-c", DROP, mode, empty]);
          assert.equal(r.code, 0, r.stderr);
          assert.equal(r.stdout.trim(), `through the tunnel ${uid}`, r.stderr);
        });
      }

      await t.step(
        "the control: without the inherited channel, setuid loses the tunnel",
        async () => {
          // A channel variable that names no socket of ours: the process adopts none.
          const r = await w.wrap(["python3", "-c", DROP, "setuid", empty], {
            env: { WRAPGUARD_CHANNEL: "1000:0:0" },
          });
          assert.equal(r.code, 0, r.stderr);
          assert.match(
            r.stdout,
            /^OSError 101 65534$|^ConnectionRefusedError|Network is unreachable/m,
          );
          assert.match(r.stderr, /cannot reach the tunnel broker/);
        },
      );

      await t.step("the helper holds nothing of the program's, and ends with it", async () => {
        const r = await w.wrap([
          "sh",
          "-c",
          // The helper is this run's only other process with the channel's socket inode.
          'ls -l /proc/$$/fd | grep -c socket; ch=${WRAPGUARD_CHANNEL%%:*}; echo "fd $ch"; ' +
          "test $ch -ge 3 && readlink /proc/$$/fd/$ch",
        ]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /^fd \d+$/m);
        assert.match(r.stdout, /socket:\[\d+\]/);
      });
    });
    // Every helper is gone once its program has ended.
    const left = await run(null, ["pgrep", "-f", "-a", "python3 -c"]);
    assert.doesNotMatch(left.stdout, /chroot\+setuid|setuid, then/);
  });
}, { requires: ["python3"], timeoutMs: 120_000 });
