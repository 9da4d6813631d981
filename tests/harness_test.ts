// Proves the namespace harness (tests/_support) against the real thing: two wireguard-go peers in
// namespaces handshake and carry ICMP and kernel TCP, the host namespace cannot leave the machine,
// the root namespace reaches every peer namespace over UDP, and close() leaves nothing behind.

import assert from "node:assert/strict";
import dgram from "node:dgram";
import {
  genKey,
  genPsk,
  liveGroupMembers,
  netemAvailable,
  NetemUnavailableError,
  netnsTest,
  ping,
  pubKey,
  run,
  sleep,
  Topology,
  WG_SOCKET_DIR,
  withTopology,
} from "./_support/netns.ts";

async function sha256(data: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) crypto.getRandomValues(out.subarray(off, off + 65536));
  return out;
}

/** Everything named after `id` that still exists: namespaces, links (root), wireguard-go sockets. */
async function leftovers(id: string): Promise<string[]> {
  const found: string[] = [];
  const ns = await run(null, ["ip", "netns", "list"], { check: true });
  for (const l of ns.stdout.split("\n")) if (l.includes(id)) found.push(`netns ${l.trim()}`);
  const links = await run(null, ["ip", "-o", "link", "show"], { check: true });
  for (const l of links.stdout.split("\n")) if (l.includes(id)) found.push(`link ${l.trim()}`);
  try {
    for (const e of Deno.readDirSync(WG_SOCKET_DIR)) {
      if (e.name.includes(id)) found.push(`socket ${WG_SOCKET_DIR}/${e.name}`);
    }
  } catch {
    // no socket dir at all
  }
  return found;
}

async function assertGone(topo: Topology): Promise<void> {
  assert.deepEqual(await leftovers(topo.id), []);
  await assert.rejects(Deno.stat(topo.tmpDir), Deno.errors.NotFound);
}

/** Sends `msg` to host:port from the test process and returns the first reply. */
async function udpRoundTrip(type: "udp4" | "udp6", host: string, port: number, msg: string) {
  const sock = dgram.createSocket(type);
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await new Promise<string>((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no UDP reply from ${host}:${port}`)), 3000);
      sock.on("message", (m) => resolve(m.toString()));
      sock.on("error", reject);
      sock.send(msg, port, host);
    });
  } finally {
    clearTimeout(timer);
    await new Promise<void>((r) => sock.close(() => r()));
  }
}

// A UDP echo bound to [::]:port (IPv4 too) that prefixes replies with its namespace's name.
const UDP_ECHO = `
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1])))
while True:
    d, a = s.recvfrom(65535)
    s.sendto(sys.argv[2].encode() + b":" + d, a)
`;

netnsTest(
  "harness: wireguard-go in host and peer namespaces carries ping (v4, v6) and 5 MiB of kernel TCP",
  async () => {
    const topo = await Topology.create({ hostNamespace: true });
    let problems: string[];
    try {
      const host = topo.host;
      assert.ok(host !== null);
      const [hostKey, peerKey, psk] = await Promise.all([genKey(), genKey(), genPsk()]);
      const [hostPub, peerPub] = await Promise.all([pubKey(hostKey), pubKey(peerKey)]);
      const peerWg = await topo.startWireguardGo(topo.peer, {
        privateKey: peerKey,
        listenPort: 51820,
        addresses: ["10.77.0.2/24", "fd77::2/64"],
        peers: [{
          publicKey: hostPub,
          presharedKey: psk,
          allowedIPs: ["10.77.0.1/32", "fd77::1/128"],
        }],
      });
      assert.equal(peerWg.listenPort, 51820);
      const hostWg = await topo.startWireguardGo(host, {
        privateKey: hostKey,
        addresses: ["10.77.0.1/24", "fd77::1/64"],
        mtu: 1400,
        peers: [{
          publicKey: peerPub,
          presharedKey: psk,
          allowedIPs: ["10.77.0.2/32", "fd77::2/128"],
          endpoint: topo.endpoint(peerWg),
        }],
      });
      assert.equal(hostWg.ifname, `wgp${topo.id}-2`);
      assert.ok(hostWg.listenPort > 0);
      const link = await run(null, ["ip", "-n", host, "-o", "link", "show", "dev", hostWg.ifname]);
      assert.match(link.stdout, /mtu 1400/);

      const v4 = await ping(host, "10.77.0.2", { count: 3, timeoutSec: 1 });
      assert.equal(v4.received, 3, v4.output);
      const v6 = await ping(host, "fd77::2", { count: 3, timeoutSec: 1 });
      assert.equal(v6.received, 3, v6.output);

      const now = Date.now() / 1000;
      const seenByHost = await hostWg.peer(peerPub);
      assert.ok(
        Math.abs(seenByHost.latestHandshake - now) < 30,
        `handshake at ${seenByHost.latestHandshake}`,
      );
      assert.ok(seenByHost.rxBytes > 0 && seenByHost.txBytes > 0, JSON.stringify(seenByHost));
      assert.equal(seenByHost.endpoint, `${topo.peerAddr}:51820`);
      assert.equal(seenByHost.presharedKey, psk);
      const seenByPeer = await peerWg.waitForHandshake(hostPub);
      // wireguard-go learned the host's address from the handshake (no endpoint was configured).
      assert.equal(seenByPeer.endpoint, `${topo.hostAddr}:${hostWg.listenPort}`);

      // Kernel TCP through the tunnel, checked end to end and on wireguard-go's counters.
      const data = randomBytes(5 << 20);
      const receiver = topo.spawn(topo.peer, [
        "socat",
        "-u",
        "TCP-LISTEN:5001,bind=10.77.0.2,reuseaddr",
        "STDOUT",
      ]);
      await topo.waitForPort(topo.peer, 5001, "tcp");
      const t0 = performance.now();
      const sent = await run(host, ["socat", "-u", "STDIN", "TCP:10.77.0.2:5001"], {
        stdin: data,
        timeoutMs: 15_000,
      });
      assert.equal(sent.code, 0, sent.stderr);
      const got = await receiver.wait(10_000);
      const ms = performance.now() - t0;
      assert.equal(got.code, 0, got.stderr);
      assert.equal(got.stdoutBytes.length, data.length);
      assert.equal(await sha256(got.stdoutBytes), await sha256(data));
      const after = await hostWg.peer(peerPub);
      assert.ok(
        after.txBytes - seenByHost.txBytes > data.length,
        `tx ${seenByHost.txBytes} -> ${after.txBytes}`,
      );
      console.log(`5 MiB through wireguard-go ↔ wireguard-go: ${ms.toFixed(0)} ms`);
    } finally {
      // Asserted after the finally, so that a failure above is not masked by this one.
      problems = await topo.close();
    }
    assert.deepEqual(problems, []);
    await assertGone(topo);
  },
  { requires: ["socat", "python3", "ss"] },
);

netnsTest("harness: the host namespace has no default route", async () => {
  await withTopology({ hostNamespace: true }, async (topo) => {
    const host = topo.host;
    assert.ok(host !== null);
    for (const family of ["-4", "-6"]) {
      const r = await run(null, ["ip", family, "-n", host, "route", "show", "default"], {
        check: true,
      });
      assert.equal(r.stdout.trim(), "");
    }
    // The veth itself works…
    const near = await ping(host, topo.peerAddr, { count: 1 });
    assert.equal(near.received, 1, near.output);
    // …but nothing else is reachable, over TCP, UDP or IPv6.
    for (
      const argv of [
        ["nc", "-v", "-z", "-w", "1", "192.0.2.1", "80"],
        ["nc", "-v", "-u", "-z", "-w", "1", "192.0.2.1", "53"],
        ["nc", "-6", "-v", "-z", "-w", "1", "2001:db8::1", "80"],
      ]
    ) {
      const r = await run(host, argv);
      assert.equal(r.code, 1, `${argv.join(" ")}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, /Network is unreachable/, argv.join(" "));
    }
  });
}, { requires: ["nc", "python3"] });

netnsTest(
  "harness: root namespace reaches every peer namespace; close() cleans up everything",
  async () => {
    const topo = await Topology.create();
    let problems: string[];
    try {
      assert.equal(topo.host, null);
      const second = await topo.addPeerNamespace();
      assert.equal(second.peerNs, `wgt-${topo.id}-peer2`);
      assert.equal(topo.links.length, 2);
      for (const l of topo.links) {
        assert.match(l.hostAddr, /^198\.1[89]\./);
        for (const name of [l.peerNs, l.hostIf, l.peerIf]) {
          assert.ok(
            name.length <= 15 || name === l.peerNs,
          );
        }
      }
      assert.notEqual(topo.links[0]!.hostAddr, second.hostAddr);

      // The test process (root namespace) reaches each peer namespace over UDP, IPv4 and IPv6, and
      // each link leads to its own namespace.
      for (const l of topo.links) {
        topo.spawn(l.peerNs, ["python3", "-c", UDP_ECHO, "7777", l.peerNs]);
        await topo.waitForPort(l.peerNs, 7777, "udp");
        assert.equal(await udpRoundTrip("udp4", l.peerAddr, 7777, "hi4"), `${l.peerNs}:hi4`);
        assert.equal(await udpRoundTrip("udp6", l.peerAddr6, 7777, "hi6"), `${l.peerNs}:hi6`);
      }

      // Two wireguard-go peers, one per namespace, each with its own socket.
      const wgs = await Promise.all(topo.links.map((l, i) =>
        topo.startWireguardGo(l.peerNs, {
          addresses: [`10.78.${i}.1/24`],
          peers: [],
        })
      ));
      for (const wg of wgs) {
        await Deno.stat(wg.socketPath);
        assert.equal((await wg.dump()).publicKey, wg.publicKey);
      }
      assert.equal(topo.endpoint(wgs[1]!), `${second.peerAddr}:${wgs[1]!.listenPort}`);

      // Peers can be added and removed at runtime, with their routes.
      const extraPub = await pubKey(await genKey());
      await wgs[0]!.setPeer({
        publicKey: extraPub,
        allowedIPs: ["10.99.0.0/16"],
        persistentKeepalive: 25,
      });
      const p = await wgs[0]!.peer(extraPub);
      assert.deepEqual(p.allowedIPs, ["10.99.0.0/16"]);
      assert.equal(p.persistentKeepalive, 25);
      const route = () =>
        run(null, ["ip", "-n", topo.peer, "route", "show", "10.99.0.0/16"], { check: true });
      assert.match((await route()).stdout, new RegExp(`dev ${wgs[0]!.ifname}`));
      await wgs[0]!.removePeer(extraPub);
      assert.equal((await wgs[0]!.dump()).peers.length, 0);
      assert.equal((await route()).stdout.trim(), "");

      // A wireguard-go that fails to configure is stopped and leaves no socket behind.
      await assert.rejects(
        topo.startWireguardGo(topo.peer, { privateKey: "not a key", addresses: [] }),
      );
      assert.deepEqual(
        Array.from(Deno.readDirSync(WG_SOCKET_DIR)).filter((e) => e.name.includes(`${topo.id}-3`)),
        [],
      );

      // A spawned process that forked: its whole group must die at close.
      const tree = topo.spawn(topo.peer, ["sh", "-c", "sleep 300 & sleep 301 & wait"]);
      for (let i = 0; i < 200 && liveGroupMembers(tree.pid).length < 3; i++) await sleep(10);
      assert.equal(liveGroupMembers(tree.pid).length, 3);

      assert.deepEqual(await topo.close(), []);
      // Not pgrep: it also lists zombies, and this VM's init reaps orphans lazily.
      assert.deepEqual(liveGroupMembers(tree.pid), []);
    } finally {
      problems = await topo.close(); // idempotent: the same (empty) answer again
    }
    assert.deepEqual(problems, []);
    await assertGone(topo);
    await assert.rejects(topo.addPeerNamespace(), /closed/);
  },
  { requires: ["python3", "ss"] },
);

netnsTest("harness: netem on a veth, or a clear error where the kernel has no netem", async () => {
  await withTopology({}, async (topo) => {
    if (!(await netemAvailable())) {
      await assert.rejects(topo.netem("peer", "delay 100ms"), NetemUnavailableError);
      console.log("this kernel has no sch_netem: netem() throws NetemUnavailableError");
      return;
    }
    topo.spawn(topo.peer, ["python3", "-c", UDP_ECHO, "7777", topo.peer]);
    await topo.waitForPort(topo.peer, 7777, "udp");
    await topo.netem("peer", "delay 100ms");
    const t0 = performance.now();
    assert.equal(await udpRoundTrip("udp4", topo.peerAddr, 7777, "x"), `${topo.peer}:x`);
    assert.ok(performance.now() - t0 >= 95, "netem delay not applied");
    await topo.clearNetem("peer");
    await topo.clearNetem("peer"); // no qdisc left: still fine
  });
}, { requires: ["tc", "unshare", "python3", "ss"] });
