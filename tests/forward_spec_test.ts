import assert from "node:assert/strict";
import {
  ForwardSpecError,
  isLoopback,
  parseLocalForward,
  parseRemoteForward,
} from "../core/host/forward/spec.ts";
import {
  assignPassedSockets,
  passedSockets,
  SocketActivationError,
} from "../core/host/forward/systemd.ts";

Deno.test("parseLocalForward", async (t) => {
  await t.step("unix, tcp v4 and v6 listeners; names and literals as destinations", () => {
    assert.deepEqual(parseLocalForward("unix:/run/user/1000/w.sock=10.0.0.2:4000"), {
      direction: "local",
      text: "unix:/run/user/1000/w.sock=10.0.0.2:4000",
      listen: { kind: "unix", path: "/run/user/1000/w.sock" },
      to: { hostname: "10.0.0.2", port: 4000 },
    });
    assert.deepEqual(parseLocalForward("tcp:127.0.0.1:8080=db.internal:5432").listen, {
      kind: "tcp",
      hostname: "127.0.0.1",
      port: 8080,
    });
    const v6 = parseLocalForward("tcp:[::1]:8080=[fd00::2]:80");
    assert.deepEqual(v6.listen, { kind: "tcp", hostname: "::1", port: 8080 });
    assert.deepEqual(v6.direction === "local" && v6.to, { hostname: "fd00::2", port: 80 });
  });
  await t.step("a path may hold '=': the last one splits", () => {
    const s = parseLocalForward("unix:/tmp/a=b.sock=10.0.0.1:1");
    assert.deepEqual(s.direction === "local" && s.listen, { kind: "unix", path: "/tmp/a=b.sock" });
  });
  await t.step("systemd, plain and named", () => {
    assert.deepEqual(parseLocalForward("systemd=10.0.0.1:1").listen, { kind: "systemd" });
    assert.deepEqual(parseLocalForward("systemd:waypipe=10.0.0.1:1").listen, {
      kind: "systemd",
      name: "waypipe",
    });
  });
  await t.step("refusals", () => {
    for (
      const bad of [
        "10.0.0.1:80",
        "unix:=10.0.0.1:80",
        "tcp:localhost:80=10.0.0.1:80",
        "tcp:127.0.0.1:80=fd00::1:80",
        "tcp:127.0.0.1:80=10.0.0.1:0",
        "tcp:127.0.0.1:80=10.0.0.1:65536",
        "tcp:127.0.0.1:80=10.0.0.1",
        "tcp:127.0.0.1:80=[10.0.0.1]:80",
        "udp:127.0.0.1:80=10.0.0.1:80",
        `unix:/${"x".repeat(107)}=10.0.0.1:80`,
        "systemd:bad name=10.0.0.1:80",
      ]
    ) {
      assert.throws(() => parseLocalForward(bad), ForwardSpecError, bad);
    }
  });
});

Deno.test("parseRemoteForward", () => {
  assert.deepEqual(parseRemoteForward("4000=unix:/tmp/x=y.sock"), {
    direction: "remote",
    text: "4000=unix:/tmp/x=y.sock",
    bind: { port: 4000 },
    to: { kind: "unix", path: "/tmp/x=y.sock" },
  });
  const r = parseRemoteForward("[fd00::2]:22=tcp:localhost:22");
  assert.deepEqual(r.direction === "remote" && r.bind, { hostname: "fd00::2", port: 22 });
  assert.deepEqual(r.direction === "remote" && r.to, {
    kind: "tcp",
    hostname: "localhost",
    port: 22,
  });
  for (const bad of ["4000", "0=unix:/x", "name:80=unix:/x", "80=systemd", "80=tcp:h"]) {
    assert.throws(() => parseRemoteForward(bad), ForwardSpecError, bad);
  }
});

Deno.test("isLoopback", () => {
  for (const yes of ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "localhost"]) {
    assert.ok(isLoopback(yes), yes);
  }
  for (const no of ["0.0.0.0", "::", "10.0.0.1", "::2", "fe80::1", "example.org"]) {
    assert.ok(!isLoopback(no), no);
  }
});

Deno.test("passedSockets: LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES", () => {
  assert.deepEqual(passedSockets({}, 7), []);
  assert.deepEqual(passedSockets({ LISTEN_FDS: "2", LISTEN_PID: "7" }, 7), [
    { fd: 3, name: "unknown" },
    { fd: 4, name: "unknown" },
  ]);
  assert.deepEqual(
    passedSockets({ LISTEN_FDS: "2", LISTEN_PID: "7", LISTEN_FDNAMES: "a:b" }, 7),
    [{ fd: 3, name: "a" }, { fd: 4, name: "b" }],
  );
  // Meant for another process (say, the shell that exec'd a wrapper): not ours.
  assert.deepEqual(passedSockets({ LISTEN_FDS: "1", LISTEN_PID: "8" }, 7), []);
  assert.throws(
    () => passedSockets({ LISTEN_FDS: "x", LISTEN_PID: "7" }, 7),
    SocketActivationError,
  );
  assert.throws(
    () => passedSockets({ LISTEN_FDS: "2", LISTEN_PID: "7", LISTEN_FDNAMES: "a" }, 7),
    SocketActivationError,
  );
});

Deno.test("assignPassedSockets: names first, then the rest in order", () => {
  const passed = [{ fd: 3, name: "a" }, { fd: 4, name: "b" }, { fd: 5, name: "c" }];
  assert.deepEqual(
    assignPassedSockets([undefined, "a", undefined], passed).map((p) => p.fd),
    [4, 3, 5],
  );
  assert.throws(() => assignPassedSockets(["z"], passed), /no passed socket is named 'z'/);
  assert.throws(() => assignPassedSockets([undefined], []), /no sockets were passed/);
  assert.throws(
    () => assignPassedSockets([undefined, undefined], [{ fd: 3, name: "unknown" }]),
    /2 forwards want a passed socket, but 1 were passed/,
  );
});
