/**
 * Moving data, as scripts: ACKs and delayed ACKs, Nagle, windows (scaling, a slow reader,
 * zero window and persist probes), SACK blocks for out-of-order data, keepalive.
 */
import assert from "node:assert/strict";
import { patternData, TcpScript } from "./_support/tcp_script.ts";

const text = (s: string) => new TextEncoder().encode(s);

Deno.test("receiving", async (t) => {
  await t.step("in-order data is readable at once; the ACK waits 40 ms", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false });
    let readable = 0;
    conn.onReadable = () => readable++;
    s.send(100, { flags: "PA", seq: irs + 1, ack: iss + 1, data: "hello" });
    s.expectNone("the ACK is delayed");
    assert.equal(readable, 1);
    assert.equal(conn.readableLength, 5);
    assert.equal(s.tcp.pollAt(), 140);
    s.tick(139);
    s.expectNone();
    s.tick(140);
    s.expect([{ flags: "A", seq: iss + 1, ack: irs + 6 }]);
    const into = new Uint8Array(3);
    assert.equal(new TextDecoder().decode(conn.read(into)), "hel");
    assert.equal(new TextDecoder().decode(conn.read()), "lo");
    assert.equal(conn.read().length, 0);
  });

  await t.step("every second full-sized segment is acknowledged at once (RFC 5681 4.2)", () => {
    const s = new TcpScript();
    const { iss, irs } = s.openActive({ ts: false });
    s.send(100, { flags: "A", seq: irs + 1, ack: iss + 1, data: 1380 });
    s.expectNone();
    s.send(101, { flags: "A", seq: irs + 1381, ack: iss + 1, data: 1380 });
    s.expect([{ flags: "A", ack: irs + 2761 }]);
    s.send(102, { flags: "A", seq: irs + 2761, ack: iss + 1, data: 1380 });
    s.expectNone();
    s.tick(142);
    s.expect([{ flags: "A", ack: irs + 4141 }]);
    assert.equal(s.tcp.pollAt(), Infinity);
  });

  await t.step("a reply written in onReadable carries the ACK", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false });
    conn.onReadable = () => conn.write(conn.read());
    s.send(100, { flags: "PA", seq: irs + 1, ack: iss + 1, data: "ping" });
    s.expect([{ flags: "PA", seq: iss + 1, ack: irs + 5, data: "ping" }]);
    s.tick(200);
    s.expectNone("no separate ACK");
  });

  await t.step("duplicates and old data are acknowledged at once", () => {
    const s = new TcpScript();
    const { iss, irs } = s.openActive({ ts: false });
    s.send(100, { flags: "A", seq: irs + 1, ack: iss + 1, data: 10 });
    s.tick(140);
    s.expect([{ flags: "A", ack: irs + 11 }]);
    s.send(150, { flags: "A", seq: irs + 1, ack: iss + 1, data: 10 });
    s.expect([{ flags: "A", ack: irs + 11 }], "a retransmission we already have");
    s.send(160, { flags: "A", seq: irs + 6, ack: iss + 1, data: 10 });
    s.expectNone("half new: the new half is delayed-ACKed like any data");
    s.tick(200);
    s.expect([{ flags: "A", ack: irs + 16 }]);
  });

  await t.step("SACK blocks for out-of-order data, most recent first (RFC 2018 4)", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false });
    const d = (from: number, len: number) => ({
      flags: "A",
      seq: irs + 1 + from,
      ack: iss + 1,
      data: patternData(len, from),
    });
    s.send(100, d(0, 1000));
    s.expectNone();
    s.send(101, d(2000, 1000));
    s.expect(
      [{ flags: "A", ack: irs + 1001, sack: [[irs + 2001, irs + 3001]] }],
      "hole: ACK at once",
    );
    s.send(102, d(4000, 1000));
    s.expect([{ ack: irs + 1001, sack: [[irs + 4001, irs + 5001], [irs + 2001, irs + 3001]] }]);
    s.send(103, d(2500, 1000)); // extends the first block
    s.expect([{ ack: irs + 1001, sack: [[irs + 2001, irs + 3501], [irs + 4001, irs + 5001]] }]);
    assert.equal(conn.readableLength, 1000, "only in-order data is readable");
    s.send(104, d(1000, 1000));
    s.expect(
      [{ ack: irs + 3501, sack: [[irs + 4001, irs + 5001]] }],
      "a filled hole is ACKed at once",
    );
    s.send(105, d(3500, 500));
    s.expect([{ ack: irs + 5001, sack: [] }]);
    const all = conn.read();
    assert.deepEqual(all, patternData(5000));
  });

  await t.step("without SACK permitted no blocks are sent", () => {
    const s = new TcpScript();
    const { iss, irs } = s.openActive({ ts: false, sack: false });
    s.send(100, { flags: "A", seq: irs + 101, ack: iss + 1, data: 100 });
    s.expect([{ flags: "A", ack: irs + 1, sack: [] }]);
  });

  await t.step("the window closes for a slow reader and reopens when it reads", () => {
    const s = new TcpScript({ limits: { receiveBuffer: 4096 } });
    const { conn, iss, irs } = s.openActive({ ts: false });
    assert.equal(conn.info.receiveWindow, 4096);
    s.send(100, { flags: "A", seq: irs + 1, ack: iss + 1, data: 1380 });
    s.send(101, { flags: "A", seq: irs + 1381, ack: iss + 1, data: 1380 });
    s.expect([{ ack: irs + 2761, window: 1336 }]);
    s.send(102, { flags: "A", seq: irs + 2761, ack: iss + 1, data: 1336 });
    s.tick(142);
    s.expect([{ ack: irs + 4097, window: 0 }]);
    s.send(150, { flags: "A", seq: irs + 4097, ack: iss + 1, data: 100 });
    s.expect([{ ack: irs + 4097, window: 0 }], "no room: data refused, ACK at once");
    assert.equal(conn.readableLength, 4096);
    conn.read(new Uint8Array(1000));
    s.expectNone("1000 bytes free is less than an MSS: SWS avoidance keeps the window shut");
    conn.read();
    s.expect([{ ack: irs + 4097, window: 4096 }], "window update");
  });

  await t.step("a reader keeping up causes no window updates", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false });
    s.send(100, { flags: "A", seq: irs + 1, ack: iss + 1, data: 1380 });
    s.send(101, { flags: "A", seq: irs + 1381, ack: iss + 1, data: 1380 });
    s.expect([{ ack: irs + 2761 }]);
    conn.read();
    s.expectNone();
  });

  await t.step("windows we advertise are scaled by our shift", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false });
    s.send(100, { flags: "A", seq: irs + 1, ack: iss + 1, data: 1380 });
    s.send(101, { flags: "A", seq: irs + 1381, ack: iss + 1, data: 1380 });
    s.expect([{ ack: irs + 2761, window: (262144 - 2760) >> 3 }]);
    // 5 more bytes, 10 read: too little change to move the edge (SWS), and rounding the
    // window to units of 8 must not pull the edge back either.
    s.send(102, { flags: "PA", seq: irs + 2761, ack: iss + 1, data: 5 });
    conn.read(new Uint8Array(10));
    s.tick(142);
    s.expect([{ ack: irs + 2766, window: (262144 - 2765 + 5) >> 3 }]);
  });
});

Deno.test("sending", async (t) => {
  await t.step("full segments up to the initial window, PSH on the last byte, cwnd grows", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false });
    assert.equal(conn.write(patternData(20_000)), 20_000);
    const segs = s.expect(
      Array.from({ length: 10 }, (_, i) => ({ flags: "A", seq: iss + 1 + 1380 * i, len: 1380 })),
    );
    assert.deepEqual(segs[3]!.payload, patternData(1380, 3 * 1380));
    s.send(50, { flags: "A", seq: irs + 1, ack: iss + 1 + 2760 });
    s.expect(
      [{ seq: iss + 1 + 13800, len: 1380 }, { len: 1380 }, { len: 1380 }],
      "slow start: 1 MSS per ACK",
    );
    assert.equal(conn.info.cwnd, 13_800 + 1380);
    s.send(60, { flags: "A", seq: irs + 1, ack: iss + 1 + 17_940 });
    s.expect([{ flags: "A", len: 1380 }], "the 680-byte tail waits behind it (Nagle)");
    assert.equal(conn.writableLength, 20_000 - 17_940);
    s.send(70, { flags: "A", seq: irs + 1, ack: iss + 1 + 19_320 });
    s.expect([{ flags: "PA", len: 680 }]);
  });

  await t.step("Nagle holds small writes while data is in flight; no-delay does not", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false });
    conn.write(text("a"));
    s.expect([{ flags: "PA", seq: iss + 1, data: "a" }], "nothing in flight: goes at once");
    conn.write(text("b"));
    conn.write(text("c"));
    s.expectNone("held by Nagle");
    s.send(50, { flags: "A", seq: irs + 1, ack: iss + 2 });
    s.expect([{ flags: "PA", seq: iss + 2, data: "bc" }], "coalesced when the ACK came");
    conn.write(patternData(3000));
    s.expect([{ len: 1380 }, { len: 1380 }], "full segments go; the 240-byte tail waits");
    conn.setNoDelay(true);
    s.expect([{ flags: "PA", len: 240 }], "turning Nagle off pushes what it held");
    conn.write(text("d"));
    conn.write(text("e"));
    s.expect([{ data: "d" }, { data: "e" }]);
  });

  await t.step("the peer's window, scaled by its shift, limits what is sent", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false, ws: 7 });
    s.send(20, { flags: "A", seq: irs + 1, ack: iss + 1, window: 40 }); // 40 << 7 = 5120 bytes
    assert.equal(conn.info.sendWindow, 5120);
    conn.write(patternData(20_000));
    s.expect([{ len: 1380 }, { len: 1380 }, { len: 1380 }]);
    // 980 more would fit, but that is under half the largest window offered (RFC 9293 3.8.6.2.1).
    s.send(30, { flags: "A", seq: irs + 1, ack: iss + 1 + 4140, window: 40 });
    s.expect([{ len: 1380 }, { len: 1380 }, { len: 1380 }]);
  });

  await t.step(
    "a window the peer shrank: ACKs start at its edge, retransmissions fit in it",
    () => {
      // Linux drops a segment that starts beyond its window, ACK field included; if our ACKs
      // started at SND.NXT, a peer whose reader stalled would never see them (a deadlock seen
      // against the kernel with many connections over a lossy tunnel).
      const s = new TcpScript();
      const { conn, iss, irs } = s.openActive({ ts: false, ws: 7 });
      conn.write(patternData(4 * 1380));
      s.expect([{ len: 1380 }, { len: 1380 }, { len: 1380 }, { len: 1380 }]);
      s.send(20, { flags: "PA", seq: irs + 1, ack: iss + 1, window: 1, data: "x" }); // 128 bytes
      s.tick(60);
      s.expect([{ flags: "A", seq: iss + 1 + 128, ack: irs + 2 }], "SEQ = the window's right edge");
      s.tick(210);
      s.expect(
        [{ flags: "A", seq: iss + 1, data: patternData(128) }],
        "RTO: only what the window takes",
      );
      s.send(220, { flags: "A", seq: irs + 2, ack: iss + 129, window: 0 });
      s.expectNone("nothing fits a zero window");
      for (const at of [420, 820, 1620, 3220, 6420, 12820, 25620, 51220]) {
        s.tick(at);
        s.expect([{ flags: "A", seq: iss + 129, len: 1380 }], `the timer's probe at ${at}`);
        s.send(at + 10, { flags: "A", seq: irs + 2, ack: iss + 129, window: 0 });
      }
      assert.equal(conn.state, "ESTABLISHED", "answered probes do not use up the retries");
      s.send(60_000, { flags: "A", seq: irs + 2, ack: iss + 1 + 1380 + 128, window: 100 });
      s.expect(
        [{ seq: iss + 1 + 1508, len: 1380 }, { len: 1380 }],
        "slow start after the timeouts",
      );
    },
  );

  await t.step(
    "zero window: persist probes back off, go on while answered; data goes when it opens",
    () => {
      const s = new TcpScript();
      const { conn, iss, irs } = s.openActive({ ts: false });
      s.send(20, { flags: "A", seq: irs + 1, ack: iss + 1, window: 0 });
      assert.equal(conn.write(text("waiting")), 7);
      s.expectNone();
      const times: number[] = [];
      for (let i = 0; i < 4; i++) {
        const at = s.tcp.pollAt();
        times.push(at);
        s.tick(at);
        // The probe: an old sequence number, no data; the peer must answer with its window.
        s.expect([{ flags: "A", seq: iss, len: 0 }], `probe ${i + 1}`);
        s.send(at + 10, { flags: "A", seq: irs + 1, ack: iss + 1, window: 0 });
        s.expectNone();
      }
      assert.deepEqual(times, [220, 620, 1420, 3020]);
      s.runUntil(10 * 60_000);
      assert.equal(conn.state, "ESTABLISHED", "still probing: the peer never failed to answer");
      s.out();
      s.send(s.now + 1, { flags: "A", seq: irs + 1, ack: iss + 1, window: 1000 });
      s.expect([{ flags: "PA", seq: iss + 1, data: "waiting" }]);
    },
  );

  await t.step("zero-window probes that get no answer end in ETIMEDOUT", () => {
    const s = new TcpScript({ limits: { maxRetransmits: 3 } });
    const { conn, iss, irs } = s.openActive({ ts: false });
    let code: string | undefined;
    conn.onClose = (e) => code = e?.code;
    s.send(20, { flags: "A", seq: irs + 1, ack: iss + 1, window: 0 });
    conn.write(text("x"));
    s.runUntil(60_000);
    assert.equal(s.out().length, 3);
    assert.equal(code, "ETIMEDOUT");
  });

  await t.step(
    "a write larger than the send buffer takes what fits; onWritable when ACKs free room",
    () => {
      const s = new TcpScript({ limits: { sendBuffer: 5000 } });
      const { conn, iss, irs } = s.openActive({ ts: false });
      let writable = 0;
      conn.onWritable = () => writable++;
      assert.equal(conn.write(patternData(8000)), 5000);
      assert.equal(conn.write(patternData(10)), 0);
      assert.equal(conn.writableFree, 0);
      s.expect([{ len: 1380 }, { len: 1380 }, { len: 1380 }]);
      s.send(30, { flags: "A", seq: irs + 1, ack: iss + 1 + 2760 });
      s.expectNone("the 860-byte tail still waits for the last full segment's ACK");
      assert.equal(writable, 1);
      assert.equal(conn.writableFree, 2760);
      s.send(31, { flags: "A", seq: irs + 1, ack: iss + 1 + 4140 });
      s.expect([{ flags: "PA", len: 860 }]);
      assert.equal(writable, 1, "only after a write was cut short");
    },
  );
});

Deno.test("timestamps (RFC 7323)", async (t) => {
  await t.step("TSval follows our clock, TSecr echoes the segment being acknowledged", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ tsVal: 1000 });
    conn.write(text("x"));
    const [d] = s.expect([{ flags: "PA", data: "x" }]);
    const ourTs = d!.tsVal;
    s.send(100, { flags: "A", seq: irs + 1, ack: iss + 2, ts: [1090, ourTs], data: "y" });
    s.send(110, { flags: "A", seq: irs + 2, ack: iss + 2, ts: [1100, ourTs], data: "z" });
    s.tick(140);
    s.expect(
      [{ flags: "A", ack: irs + 3, ts: [ourTs + 140 - 10, 1090] }],
      "echo of the earliest unacknowledged",
    );
    // Samples: 10 ms from the handshake, then 90 ms: SRTT = 7/8·10 + 1/8·90.
    assert.equal(conn.info.srtt, 20);
  });

  await t.step(
    "PAWS: a segment with an older timestamp is dropped and answered with an ACK",
    () => {
      const s = new TcpScript();
      const { conn, iss, irs } = s.openActive({ tsVal: 1000 });
      s.send(100, { flags: "A", seq: irs + 1, ack: iss + 1, ts: [1100, 0], data: "new" });
      s.send(101, { flags: "A", seq: irs + 4, ack: iss + 1, ts: [900, 0], data: "old" });
      s.expect([{ flags: "A", ack: irs + 4 }]);
      assert.equal(new TextDecoder().decode(conn.read()), "new");
      assert.equal(s.tcp.stats.pawsRejected, 1);
    },
  );
});

Deno.test("keepalive", async (t) => {
  await t.step("probes after the idle time; answered probes keep the connection", () => {
    const s = new TcpScript();
    const { conn, iss, irs } = s.openActive({ ts: false });
    conn.setKeepAlive(true, { idle: 1000, interval: 100, count: 3 });
    assert.equal(s.tcp.pollAt(), 1010);
    s.tick(1010);
    s.expect([{ flags: "A", seq: iss, len: 0 }]);
    s.send(1020, { flags: "A", seq: irs + 1, ack: iss + 1 });
    s.runUntil(2019);
    s.expectNone("idle timer restarts from the answer");
    s.tick(2020);
    s.expect([{ flags: "A", seq: iss }]);
    assert.equal(conn.state, "ESTABLISHED");
  });

  await t.step("unanswered probes: ETIMEDOUT", () => {
    const s = new TcpScript();
    const { conn } = s.openActive({ ts: false });
    let code: string | undefined;
    conn.onClose = (e) => code = e?.code;
    conn.setKeepAlive(true, { idle: 1000, interval: 100, count: 3 });
    s.runUntil(1210);
    assert.equal(s.out().length, 3, "probes at 1010, 1110, 1210");
    assert.equal(conn.state, "ESTABLISHED");
    s.tick(1310);
    assert.equal(code, "ETIMEDOUT");
    assert.equal(s.tcp.connectionCount, 0);
  });
});
