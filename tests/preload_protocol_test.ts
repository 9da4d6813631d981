/**
 * The broker protocol without preloading anything: the C codec's own unit tests
 * (preload/test/protocol_test.c), and the C and TypeScript codecs checked against each other —
 * what one encodes the other decodes to the same fields, and for corrupted bytes both decoders
 * give the same verdict and name the same broken rule.
 */
import assert from "node:assert/strict";
import {
  decodeFrameHeader,
  decodeReply,
  decodeRequest,
  encodeFrameHeader,
  encodeReply,
  encodeRequest,
  errorReply,
  Family,
  type Frame,
  FrameFlag,
  MAX_PADDING,
  Op,
  Proto,
  ProtocolError,
  type Reply,
  type Request,
  REQUEST_LEN,
  secretEqual,
  Status,
} from "../core/host/broker/protocol.ts";
import { preloadLibrary } from "./_support/fake_broker.ts";

const root = new URL("../", import.meta.url).pathname;
const testBinary = `${root}preload/build/protocol_test`;

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function unhex(s: string): Uint8Array {
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Runs the C test binary in batch mode: one answer line per command line. */
async function batch(lines: string[]): Promise<string[]> {
  const child = new Deno.Command(testBinary, {
    args: ["batch"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(lines.map((l) => l + "\n").join("")));
  await w.close();
  const out = await child.output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const answers = new TextDecoder().decode(out.stdout).split("\n");
  answers.pop();
  assert.equal(answers.length, lines.length);
  return answers;
}

/** A deterministic generator, so a failure reproduces. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomBytes(r: () => number, n: number): Uint8Array {
  return Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
}

function field16(addr: Uint8Array): string {
  const f = new Uint8Array(16);
  f.set(addr);
  return hex(f);
}

/** A random request that a v1 encoder accepts. */
function randomRequest(r: () => number): Request {
  const ops = [Op.Connect, Op.Bind, Op.Listen, Op.Accept, Op.Udp, Op.Lookup];
  const op = ops[Math.floor(r() * ops.length)]!;
  const proto = op === Op.Udp ? Proto.Udp : Proto.Tcp;
  const family = op === Op.Accept && r() < 0.5 ? Family.None : r() < 0.5 ? Family.V4 : Family.V6;
  const n = family === Family.V4 ? 4 : family === Family.V6 ? 16 : 0;
  const ep = () => ({ addr: randomBytes(r, n), port: n ? Math.floor(r() * 65536) : 0 });
  return {
    secret: randomBytes(r, 32),
    op,
    proto,
    family,
    flags: Math.floor(r() * 16),
    padding: op === Op.Connect && r() < 0.5 ? Math.floor(r() * MAX_PADDING) : 0,
    arg: op === Op.Listen || op === Op.Accept ? Math.floor(r() * 2 ** 32) : 0,
    local: ep(),
    remote: op === Op.Connect || op === Op.Lookup ? ep() : { addr: new Uint8Array(n), port: 0 },
  };
}

function requestFields(q: Request): string {
  return [
    q.op,
    q.proto,
    q.family,
    q.flags,
    q.padding,
    q.arg,
    hex(q.secret),
    q.local.port,
    field16(q.local.addr),
    q.remote.port,
    field16(q.remote.addr),
  ].join(" ");
}

function randomReply(r: () => number): Reply {
  const ok = r() < 0.6;
  const family = !ok ? Family.None : r() < 0.5 ? Family.V4 : Family.V6;
  const n = family === Family.V4 ? 4 : family === Family.V6 ? 16 : 0;
  const ep = () => ({ addr: randomBytes(r, n), port: n ? Math.floor(r() * 65536) : 0 });
  return {
    status: ok ? Status.Ok : (1 + Math.floor(r() * 14)) as Status,
    family,
    arg: Math.floor(r() * 2 ** 32),
    local: ep(),
    remote: ep(),
  };
}

function replyFields(p: Reply): string {
  return [
    p.status,
    p.family,
    p.arg,
    p.local.port,
    field16(p.local.addr),
    p.remote.port,
    field16(p.remote.addr),
  ].join(" ");
}

/** Data frames, host frames, error frames, and now and then one that breaks a flag rule. */
function randomFrame(r: () => number): Frame {
  const family = r() < 0.5 ? Family.V4 : Family.V6;
  const kind = r();
  const error = kind < 0.3;
  return {
    length: error && r() < 0.9 ? 0 : Math.floor(r() * 65536),
    family,
    peer: { addr: randomBytes(r, family === Family.V4 ? 4 : 16), port: Math.floor(r() * 65536) },
    flags: error
      ? FrameFlag.Error | (r() < 0.2 ? FrameFlag.Host : 0)
      : kind < 0.6
      ? FrameFlag.Host
      : kind < 0.95
      ? 0
      : Math.floor(r() * 256),
    error: error ? Math.floor(r() * 21) : kind > 0.9 ? Math.floor(r() * 3) : 0,
  };
}

function frameFields(f: Frame): string {
  return [f.length, f.family, f.peer.port, field16(f.peer.addr), f.flags ?? 0, f.error ?? 0].join(
    " ",
  );
}

/** What the TS decoder says about bytes, in the C batch's words. */
function tsVerdict<T>(decode: (b: Uint8Array) => T, fields: (t: T) => string, b: Uint8Array) {
  try {
    return `ok ${fields(decode(b))}`;
  } catch (e) {
    if (e instanceof ProtocolError) return `err ${e.code}`;
    throw e;
  }
}

/** Corrupts 1–3 bytes, biased towards the fields that carry rules. */
function mutate(r: () => number, b: Uint8Array, hot: number[]): Uint8Array {
  const out = b.slice();
  const k = 1 + Math.floor(r() * 3);
  for (let i = 0; i < k; i++) {
    const at = r() < 0.7 ? hot[Math.floor(r() * hot.length)]! : Math.floor(r() * out.length);
    const choices = [0, 1, 2, 4, 5, 6, 17, 0xff, Math.floor(r() * 256)];
    out[at] = choices[Math.floor(r() * choices.length)]!;
  }
  return out;
}

Deno.test("preload protocol: the C unit tests pass", async () => {
  await preloadLibrary();
  const out = await new Deno.Command(testBinary, { args: ["self"] }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, text);
  assert.match(text, /^ok \d+\n$/);
  assert.ok(Number(text.split(" ")[1]) > 100, "the C suite ran its checks");
});

Deno.test("preload protocol: requests encode identically in C and TypeScript", async () => {
  await preloadLibrary();
  const r = rng(1);
  const reqs = Array.from({ length: 400 }, () => randomRequest(r));
  const encoded = reqs.map(encodeRequest);
  // C decodes what TS encoded…
  const decoded = await batch(encoded.map((b) => `dreq ${hex(b)}`));
  // … and encodes the same fields to the same bytes.
  const reencoded = await batch(reqs.map((q) =>
    [
      "ereq",
      q.op,
      q.proto,
      q.family,
      q.flags,
      q.padding,
      q.arg,
      q.local.port,
      q.remote.port,
      field16(q.local.addr),
      field16(q.remote.addr),
      hex(q.secret),
    ].join(" ")
  ));
  for (let i = 0; i < reqs.length; i++) {
    const q = reqs[i]!;
    const c = `ok ${q.op} ${q.proto} ${q.family} ${q.flags} ${q.padding} ${q.arg} ${
      hex(q.secret)
    } ${q.local.port} ${field16(q.local.addr)} ${q.remote.port} ${field16(q.remote.addr)}`;
    assert.equal(decoded[i], c, `request ${i}`);
    assert.equal(reencoded[i], `ok ${hex(encoded[i]!)}`, `request ${i}`);
    // And TS reads its own bytes back.
    assert.equal(requestFields(decodeRequest(encoded[i]!)), requestFields(q));
  }
});

Deno.test("preload protocol: corrupted requests get the same verdict from both decoders", async () => {
  await preloadLibrary();
  const r = rng(2);
  const hot = [0, 3, 36, 37, 38, 39, 40, 43, 44, 45, 48, 51, 53, 55, 60, 70, 75, 87, 88, 95];
  const samples: Uint8Array[] = [];
  for (let i = 0; i < 1500; i++) samples.push(mutate(r, encodeRequest(randomRequest(r)), hot));
  // Truncations too.
  samples.push(encodeRequest(randomRequest(r)).subarray(0, REQUEST_LEN - 1), new Uint8Array(0));
  const c = await batch(samples.map((b) => `dreq ${hex(b)}`));
  const codes = new Set<string>();
  for (let i = 0; i < samples.length; i++) {
    const ts = tsVerdict(decodeRequest, requestFields, samples[i]!);
    assert.equal(ts, c[i], `sample ${i}: ${hex(samples[i]!)}`);
    codes.add(ts.split(" ")[0] === "err" ? ts : "ok");
  }
  // The corpus exercised every rule, so agreement means something.
  for (
    const code of [
      "short",
      "magic",
      "version",
      "op",
      "proto",
      "family",
      "addr",
      "flags",
      "padding",
      "reserved",
    ]
  ) {
    assert.ok(codes.has(`err ${code}`), `no sample broke rule ${code}`);
  }
  assert.ok(codes.has("ok"));
});

Deno.test("preload protocol: replies and UDP frame headers agree in C and TypeScript", async () => {
  await preloadLibrary();
  const r = rng(3);
  const replies = Array.from({ length: 300 }, () => randomReply(r));
  const frames = Array.from({ length: 300 }, () => randomFrame(r));
  const lines = [
    ...replies.map((p) =>
      `erep ${p.status} ${p.family} ${p.arg} ${p.local.port} ${p.remote.port} ${
        field16(p.local.addr)
      } ${field16(p.remote.addr)}`
    ),
    ...frames.map((f) =>
      `efrm ${f.length} ${f.family} ${f.peer.port} ${field16(f.peer.addr)} ${f.flags} ${f.error}`
    ),
  ];
  const c = await batch(lines);
  for (let i = 0; i < replies.length; i++) {
    assert.equal(c[i], `ok ${hex(encodeReply(replies[i]!))}`, `reply ${i}`);
    assert.equal(replyFields(decodeReply(unhex(c[i]!.slice(3)))), replyFields(replies[i]!));
  }
  const encoded: Uint8Array[] = [];
  const verdicts = new Set<string>();
  for (let i = 0; i < frames.length; i++) {
    let ts: string;
    try {
      const bytes = encodeFrameHeader(frames[i]!);
      encoded.push(bytes);
      ts = `ok ${hex(bytes)}`;
      assert.equal(frameFields(decodeFrameHeader(bytes)), frameFields(frames[i]!));
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      ts = `err ${e.code}`;
    }
    assert.equal(c[replies.length + i], ts, `frame ${i}`);
    verdicts.add(ts.startsWith("ok") ? "ok" : ts);
  }
  // Every frame rule was broken by some sample, and most samples were valid.
  for (const v of ["ok", "err flags", "err status", "err length", "err reserved"]) {
    assert.ok(verdicts.has(v), `no frame sample gave ${v}`);
  }
  // Corrupted replies and frames.
  const badReplies = replies.map((p) => mutate(r, encodeReply(p), [2, 4, 5, 6, 7, 12, 20, 30, 40]));
  const badFrames = encoded.map((b) => mutate(r, b, [4, 5, 6, 7, 12, 20, 23]));
  const c2 = await batch([
    ...badReplies.map((b) => `drep ${hex(b)}`),
    ...badFrames.map((b) => `dfrm ${hex(b)}`),
  ]);
  const seen = new Set<string>();
  for (let i = 0; i < badReplies.length; i++) {
    const v = tsVerdict(decodeReply, replyFields, badReplies[i]!);
    assert.equal(v, c2[i], `reply sample ${i}`);
    seen.add(v.startsWith("ok") ? "ok" : v);
  }
  for (let i = 0; i < badFrames.length; i++) {
    const v = tsVerdict(decodeFrameHeader, frameFields, badFrames[i]!);
    assert.equal(v, c2[badReplies.length + i], `frame sample ${i}`);
    seen.add(v.startsWith("ok") ? "ok" : v);
  }
  for (const code of ["magic", "version", "reserved", "status", "family", "addr"]) {
    assert.ok(seen.has(`err ${code}`), `no sample broke rule ${code}`);
  }
});

Deno.test("preload protocol: the TypeScript side refuses what a v1 peer must not send", () => {
  const base: Request = {
    secret: new Uint8Array(32),
    op: Op.Connect,
    proto: Proto.Tcp,
    family: Family.V4,
    flags: 0,
    padding: 0,
    arg: 0,
    local: { addr: new Uint8Array(0), port: 0 },
    remote: { addr: new Uint8Array([10, 99, 0, 2]), port: 80 },
  };
  const code = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return e instanceof ProtocolError ? e.code : (e as Error).name;
    }
    return "accepted";
  };
  assert.equal(code(() => encodeRequest(base)), "accepted");
  assert.equal(code(() => encodeRequest({ ...base, proto: Proto.Udp })), "proto");
  assert.equal(code(() => encodeRequest({ ...base, op: Op.Bind })), "reserved");
  assert.equal(code(() => encodeRequest({ ...base, padding: MAX_PADDING + 1 })), "padding");
  assert.equal(code(() => encodeRequest({ ...base, flags: 16 })), "flags");
  assert.equal(code(() => encodeRequest({ ...base, family: Family.V6 })), "family");
  assert.equal(code(() => encodeRequest({ ...base, secret: new Uint8Array(31) })), "RangeError");
  assert.equal(
    code(() => encodeRequest({ ...base, remote: { ...base.remote, port: 70000 } })),
    "RangeError",
  );
  assert.equal(
    code(() => encodeReply({ ...decodeReply(errorReply(Status.Auth)), family: Family.V4 })),
    "family",
  );
  assert.equal(decodeReply(errorReply(Status.TimedOut)).status, Status.TimedOut);
  // Constant-time comparison still compares.
  const s = crypto.getRandomValues(new Uint8Array(32));
  assert.ok(secretEqual(s, s.slice()));
  const t = s.slice();
  t[31]! ^= 1;
  assert.ok(!secretEqual(s, t));
  assert.ok(!secretEqual(s, s.subarray(0, 31)));
});

Deno.test("preload protocol: routing decisions (C config parser)", async () => {
  await preloadLibrary();
  const cases: [string, string, string, string, string][] = [
    ["10.99.0.0/24", "-", "0", "10.99.0.7", "tunnel"],
    ["10.99.0.0/24", "-", "0", "10.98.0.7", "pass"],
    ["10.99.0.0/24", "-", "1", "10.98.0.7", "deny"],
    ["10.99.0.0/24", "-", "1", "127.0.0.1", "pass"],
    ["0.0.0.0/0,::/0", "-", "0", "192.0.2.1", "tunnel"],
    ["0.0.0.0/0,!192.168.0.0/16", "-", "1", "192.168.3.4", "pass"],
    ["0.0.0.0/0,!192.168.0.0/16", "-", "1", "2001:db8::1", "deny"],
    ["fd00::/8,!fd00::/16", "-", "0", "fd00::1", "pass"],
    ["fd00::/8,!fd00::/16", "-", "0", "fd01::1", "tunnel"],
    ["fd00::/8", "-", "0", "::1", "pass"],
    ["10.0.0.0/8,10.1.0.0/16,!10.1.2.0/24,10.1.2.3/32", "-", "0", "10.1.2.3", "tunnel"],
    ["10.0.0.0/8,10.1.0.0/16,!10.1.2.0/24,10.1.2.3/32", "-", "0", "10.1.2.4", "pass"],
    ["not-a-prefix", "-", "0", "10.1.2.4", "deny"], // malformed: fail closed
  ];
  const answers = await batch(cases.map(([r, a, k, ip]) => `route ${r} ${a} ${k} ${ip}`));
  cases.forEach((c, i) => assert.equal(answers[i], c[4], `route ${c.join(" ")}`));
});

Deno.test("preload build: each library is an ELF of its architecture exporting every hook", async () => {
  await preloadLibrary();
  const hooks = [
    "socket",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "close",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "getsockname",
    "getpeername",
    "getsockopt",
    "setsockopt",
    "read",
    "readv",
    "recv",
    "recvfrom",
    "recvmsg",
    "recvmmsg",
    "__read_chk",
    "__recv_chk",
    "__recvfrom_chk",
    "write",
    "writev",
    "send",
    "sendto",
    "sendmsg",
    "sendmmsg",
  ];
  // e_machine: 62 x86-64, 183 AArch64.
  const machines: Record<string, number> = { x86_64: 62, aarch64: 183 };
  let checked = 0;
  for (const [arch, machine] of Object.entries(machines)) {
    const path = `${root}preload/build/libwrapguard-${arch}.so`;
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(path);
    } catch {
      // The cross compiler is optional (build.sh says so); the native library is not.
      assert.notEqual(arch, Deno.build.arch, `${path} is missing`);
      continue;
    }
    assert.deepEqual([...bytes.subarray(0, 5)], [0x7f, 0x45, 0x4c, 0x46, 2], `${arch}: ELF64`);
    assert.equal(new DataView(bytes.buffer).getUint16(18, true), machine, `${arch}: e_machine`);
    const nm = await new Deno.Command("nm", { args: ["-D", "--defined-only", path] }).output();
    assert.ok(nm.success, new TextDecoder().decode(nm.stderr));
    const exported = new Set(
      new TextDecoder().decode(nm.stdout).split("\n").map((l) => l.split(" ")[2]),
    );
    for (const h of hooks) assert.ok(exported.has(h), `${arch}: ${h} is not exported`);
    // Internals stay hidden: only the hooks (and nothing like wg_*) are visible.
    assert.ok(![...exported].some((s) => s?.startsWith("wg")), `${arch}: internals exported`);
    checked++;
  }
  assert.ok(checked >= 1);
});
