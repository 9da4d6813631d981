/**
 * Closing and resetting, as scripts, state by state: FIN-WAIT-1/2, CLOSING, TIME-WAIT and its
 * expiry, CLOSE-WAIT, LAST-ACK; RST in each state (with RFC 5961's challenge ACK); abort;
 * close with unread data; half-close.
 */
import assert from "node:assert/strict";
import { patternData, TcpScript } from "./_support/tcp_script.ts";
import type { TcpConnection } from "../core/netstack/tcp.ts";

function watch(conn: TcpConnection) {
  const log: string[] = [];
  conn.onEnd = () => log.push("end");
  conn.onClose = (e) => log.push(e ? `close:${e.code}` : "close");
  return log;
}

Deno.test("active close", async (t) => {
  await t.step("FIN-WAIT-1 → FIN-WAIT-2 → TIME-WAIT → expiry empties the table", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false });
    const log = watch(conn);
    conn.close();
    s.expect([{ flags: "FA", seq: iss + 1, ack: irs + 1 }]);
    assert.equal(conn.state, "FIN-WAIT-1");
    s.send(20, { flags: "A", seq: irs + 1, ack: iss + 2 });
    s.expectNone();
    assert.equal(conn.state, "FIN-WAIT-2");
    s.send(30, { flags: "FA", seq: irs + 1, ack: iss + 2 });
    s.expect([{ flags: "A", seq: iss + 2, ack: irs + 2 }]);
    assert.equal(conn.state, "TIME-WAIT");
    assert.deepEqual(log, ["end", "close"], "the user is done when TIME-WAIT begins");
    assert.equal(s.tcp.connectionCount, 1);
    assert.equal(s.tcp.pollAt(), 30 + 60_000, "2 MSL");
    // The peer's FIN again (our ACK was lost): ACK again, restart 2 MSL.
    s.send(1000, { flags: "FA", seq: irs + 1, ack: iss + 2 });
    s.expect([{ flags: "A", seq: iss + 2, ack: irs + 2 }]);
    assert.equal(s.tcp.pollAt(), 1000 + 60_000);
    s.tick(61_000);
    assert.equal(conn.state, "CLOSED");
    assert.equal(s.tcp.connectionCount, 0);
    assert.equal(s.tcp.pollAt(), Infinity);
    assert.deepEqual(log, ["end", "close"], "onClose only once");
  });

  await t.step("the FIN rides on the last data segment and is retransmitted with it", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false });
    conn.write(new TextEncoder().encode("bye"));
    s.expect([{ flags: "PA", data: "bye" }]);
    conn.write(new TextEncoder().encode("!"));
    s.expectNone("Nagle");
    conn.close();
    s.expect(
      [{ flags: "FPA", seq: iss + 4, data: "!" }],
      "closing flushes what Nagle held, with FIN",
    );
    s.tick(210);
    s.expect(
      [{ flags: "FPA", seq: iss + 1, data: "bye!" }],
      "RTO: resent as one segment, FIN included",
    );
    s.send(220, { flags: "A", seq: irs + 1, ack: iss + 4 });
    s.expectNone("the rest was already resent");
    s.send(230, { flags: "A", seq: irs + 1, ack: iss + 6 });
    assert.equal(conn.state, "FIN-WAIT-2");
  });

  await t.step("a lone FIN is retransmitted on RTO", () => {
    const s = new TcpScript();
    const { conn, iss } = s.openActive({ ts: false });
    conn.close();
    s.expect([{ flags: "FA", seq: iss + 1 }]);
    s.tick(210);
    s.expect([{ flags: "FA", seq: iss + 1, len: 0 }]);
    s.tick(610);
    s.expect([{ flags: "FA", seq: iss + 1, len: 0 }]);
  });

  await t.step("simultaneous close: FIN-WAIT-1 → CLOSING → TIME-WAIT", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false });
    const log = watch(conn);
    conn.close();
    s.expect([{ flags: "FA", seq: iss + 1 }]);
    s.send(20, { flags: "FA", seq: irs + 1, ack: iss + 1 }); // the peer's FIN, ours not yet seen
    s.expect([{ flags: "A", seq: iss + 2, ack: irs + 2 }]);
    assert.equal(conn.state, "CLOSING");
    s.send(30, { flags: "A", seq: irs + 2, ack: iss + 2 });
    assert.equal(conn.state, "TIME-WAIT");
    assert.deepEqual(log, ["end", "close"]);
    s.runUntil(30 + 60_000);
    assert.equal(s.tcp.connectionCount, 0);
  });

  await t.step("FIN and the ACK of ours in one segment: FIN-WAIT-1 → TIME-WAIT", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false });
    conn.close();
    s.out();
    s.send(20, { flags: "FA", seq: irs + 1, ack: iss + 2 });
    s.expect([{ flags: "A", ack: irs + 2 }]);
    assert.equal(conn.state, "TIME-WAIT");
  });

  await t.step(
    "after close(), FIN-WAIT-2 gives up after 60 s; after shutdownWrite() it waits",
    () => {
      const s = new TcpScript();
      const { conn, iss, irs } = s.openActive({ ts: false });
      const log = watch(conn);
      conn.close();
      s.send(20, { flags: "A", seq: irs + 1, ack: iss + 2 });
      assert.equal(conn.state, "FIN-WAIT-2");
      assert.equal(s.tcp.pollAt(), 20 + 60_000);
      s.tick(60_020);
      assert.equal(conn.state, "CLOSED");
      assert.deepEqual(log, ["close"]);

      const h = new TcpScript();
      const o = h.openActive({ ts: false });
      o.conn.shutdownWrite();
      h.send(20, { flags: "A", seq: o.irs + 1, ack: o.iss + 2 });
      assert.equal(o.conn.state, "FIN-WAIT-2");
      assert.equal(h.tcp.pollAt(), Infinity, "a half-closed connection still reads");
    },
  );

  await t.step("half-close: after shutdownWrite the peer's data still arrives", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false });
    const log = watch(conn);
    conn.shutdownWrite();
    s.expect([{ flags: "FA" }]);
    assert.throws(() => conn.write(new Uint8Array(1)), { code: "EPIPE" });
    s.send(20, { flags: "PA", seq: irs + 1, ack: iss + 2, data: "more" });
    s.send(21, { flags: "FA", seq: irs + 5, ack: iss + 2 });
    s.expect([{ flags: "A", ack: irs + 6 }]);
    assert.equal(new TextDecoder().decode(conn.read()), "more");
    assert.ok(conn.readableEnded);
    assert.equal(conn.state, "TIME-WAIT");
    assert.deepEqual(log, ["end", "close"]);
  });
});

Deno.test("passive close", async (t) => {
  await t.step("FIN → CLOSE-WAIT (still writing) → close → LAST-ACK → CLOSED", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false });
    const log = watch(conn);
    s.send(20, { flags: "PFA", seq: irs + 1, ack: iss + 1, data: "last" });
    s.expect([{ flags: "A", ack: irs + 6 }], "a FIN is acknowledged at once");
    assert.equal(conn.state, "CLOSE-WAIT");
    assert.deepEqual(log, ["end"]);
    assert.equal(conn.readableEnded, false, "data before the FIN is still unread");
    assert.equal(new TextDecoder().decode(conn.read()), "last");
    assert.equal(conn.readableEnded, true);
    conn.write(new TextEncoder().encode("reply"));
    s.expect([{ flags: "PA", data: "reply" }]);
    conn.close();
    s.expect([{ flags: "FA", seq: iss + 6 }]);
    assert.equal(conn.state, "LAST-ACK");
    s.send(40, { flags: "A", seq: irs + 6, ack: iss + 7 });
    s.expectNone();
    assert.equal(conn.state, "CLOSED");
    assert.deepEqual(log, ["end", "close"]);
    assert.equal(s.tcp.connectionCount, 0);
  });

  await t.step("a FIN after a hole waits for the hole", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false });
    const log = watch(conn);
    s.send(20, { flags: "FA", seq: irs + 11, ack: iss + 1, data: "world" });
    s.expect([{ flags: "A", ack: irs + 1 }]);
    assert.equal(conn.state, "ESTABLISHED");
    s.send(21, { flags: "A", seq: irs + 1, ack: iss + 1, data: "hello, the" });
    s.expect([{ flags: "A", ack: irs + 17 }]);
    assert.equal(conn.state, "CLOSE-WAIT");
    assert.equal(new TextDecoder().decode(conn.read()), "hello, theworld");
    assert.deepEqual(log, ["end"]);
  });
});

/** Brings a fresh connection to `state` and returns what the test needs. */
function inState(state: string) {
  const s = new TcpScript();
  const o = s.openActive({ ts: false });
  const { conn, iss, irs } = o;
  let rcv = irs + 1, snd = iss + 1;
  switch (state) {
    case "ESTABLISHED":
      break;
    case "FIN-WAIT-1":
      conn.close();
      snd++;
      break;
    case "FIN-WAIT-2":
      conn.shutdownWrite();
      snd++;
      s.send(15, { flags: "A", seq: rcv, ack: snd });
      break;
    case "CLOSE-WAIT":
      s.send(15, { flags: "FA", seq: rcv, ack: snd });
      rcv++;
      break;
    case "CLOSING":
      conn.close();
      s.send(15, { flags: "FA", seq: rcv, ack: snd });
      snd++;
      rcv++;
      break;
    case "LAST-ACK":
      s.send(15, { flags: "FA", seq: rcv, ack: snd });
      rcv++;
      conn.close();
      snd++;
      break;
    case "TIME-WAIT":
      conn.close();
      snd++;
      s.send(15, { flags: "FA", seq: rcv, ack: snd });
      rcv++;
      break;
  }
  assert.equal(conn.state, state);
  const log = watch(conn);
  s.out();
  return { s, conn, rcv, snd, log };
}

Deno.test("RST in each state", async (t) => {
  for (
    const [state, expected] of [
      ["ESTABLISHED", ["close:ECONNRESET"]],
      ["FIN-WAIT-1", ["close:ECONNRESET"]],
      ["FIN-WAIT-2", ["close:ECONNRESET"]],
      ["CLOSE-WAIT", ["close:ECONNRESET"]],
      ["CLOSING", ["close:ECONNRESET"]],
      ["LAST-ACK", ["close:ECONNRESET"]],
      ["TIME-WAIT", []], // the user already heard onClose
    ] as const
  ) {
    await t.step(`${state}: in-window RST → challenge ACK; RST at RCV.NXT → CLOSED`, () => {
      const { s, conn, rcv, snd, log } = inState(state);
      if (state !== "TIME-WAIT") {
        s.send(50, { flags: "R", seq: rcv + 100 });
        s.expect([{ flags: "A", seq: snd, ack: rcv }], "RFC 5961 3.2 challenge ACK");
        assert.equal(conn.state, state);
        s.send(51, { flags: "R", seq: rcv - 100_000 });
        s.expectNone("a RST outside the window is dropped silently");
        assert.equal(conn.state, state);
      }
      s.send(60, { flags: "R", seq: rcv });
      s.expectNone();
      assert.equal(conn.state, "CLOSED");
      assert.deepEqual(log, expected);
      assert.equal(s.tcp.connectionCount, 0);
      assert.equal(s.tcp.pollAt(), Infinity);
    });
  }

  await t.step("a SYN on an established connection gets a challenge ACK (RFC 5961 4.2)", () => {
    const { s, conn, rcv, snd } = inState("ESTABLISHED");
    s.send(50, { flags: "S", seq: rcv + 5 });
    s.expect([{ flags: "A", seq: snd, ack: rcv }]);
    assert.equal(conn.state, "ESTABLISHED");
  });

  await t.step("an ACK for data never sent is answered with an ACK and dropped", () => {
    const { s, conn, rcv, snd } = inState("ESTABLISHED");
    s.send(50, { flags: "PA", seq: rcv, ack: snd + 1000, data: "x" });
    s.expect([{ flags: "A", seq: snd, ack: rcv }]);
    assert.equal(conn.readableLength, 0);
  });
});

Deno.test("abort and close with data at stake", async (t) => {
  await t.step("abort sends RST and closes without an error", () => {
    const { s, conn, rcv, snd, log } = inState("ESTABLISHED");
    conn.write(patternData(100));
    s.out();
    conn.abort();
    s.expect([{ flags: "RA", seq: snd + 100, ack: rcv }]);
    assert.equal(conn.state, "CLOSED");
    assert.deepEqual(log, ["close"]);
    assert.equal(s.tcp.connectionCount, 0);
    assert.throws(() => conn.write(new Uint8Array(1)), { code: "EPIPE" });
  });

  await t.step("close with unread data resets (RFC 2525 2.17)", () => {
    const { s, conn, rcv, snd, log } = inState("ESTABLISHED");
    s.send(50, { flags: "PA", seq: rcv, ack: snd, data: "unread" });
    s.out();
    conn.close();
    s.expect([{ flags: "RA", seq: snd, ack: rcv + 6 }]);
    assert.deepEqual(log, ["close"]);
  });

  await t.step("data arriving after close is answered with RST", () => {
    const { s, conn, rcv, snd, log } = inState("ESTABLISHED");
    conn.close();
    s.expect([{ flags: "FA", seq: snd }]);
    s.send(50, { flags: "PA", seq: rcv, ack: snd + 1, data: "late" });
    s.expect([{ flags: "RA", seq: snd + 1 }]);
    assert.equal(conn.state, "CLOSED");
    assert.deepEqual(log, ["close"]);
  });

  await t.step("close in SYN-SENT forgets the connection silently", () => {
    const s = new TcpScript();
    const conn = s.tcp.connect(0, { dst: s.remote, dstPort: 80 });
    s.out();
    conn.close();
    s.expectNone();
    assert.equal(conn.state, "CLOSED");
    assert.equal(s.tcp.connectionCount, 0);
  });
});

Deno.test("TIME-WAIT reuse by a new SYN (RFC 6191)", () => {
  const s = new TcpScript();
  const { conn, listener, iss, irs } = s.openPassive({ ts: false });
  conn.close();
  s.expect([{ flags: "FA", seq: iss + 1 }]);
  s.send(20, { flags: "FA", seq: irs + 1, ack: iss + 2 });
  s.expect([{ flags: "A" }]);
  assert.equal(conn.state, "TIME-WAIT");
  s.send(30, { flags: "S", seq: irs + 1 }); // not beyond the old connection's sequence space
  s.expect([{ flags: "A", ack: irs + 2 }], "an old SYN in TIME-WAIT just gets an ACK");
  s.send(40, { flags: "S", seq: irs + 100_000 });
  s.expect([{ flags: "SA", ack: irs + 100_001 }], "a new incarnation");
  assert.equal(listener.halfOpen, 1);
  assert.equal(s.tcp.connectionCount, 1);
});

Deno.test("a full table gives up its oldest TIME-WAIT connection for a new one", () => {
  const s = new TcpScript({ limits: { maxConnections: 1 } });
  const { conn, iss, irs } = s.openActive({ ts: false });
  conn.close();
  s.send(20, { flags: "FA", seq: irs + 1, ack: iss + 2 });
  assert.equal(conn.state, "TIME-WAIT");
  s.out();
  const next = s.tcp.connect(30, { dst: s.remote, dstPort: 81 });
  assert.equal(conn.state, "CLOSED");
  assert.equal(next.state, "SYN-SENT");
  assert.equal(s.tcp.connectionCount, 1);
  assert.throws(() => s.tcp.connect(31, { dst: s.remote, dstPort: 82 }), { code: "ENOBUFS" });
});
