/**
 * Issue 5, must-show 4: the log is one JSON object per line (timestamp, level, message, fields),
 * `--log-file` takes all of it and leaves the terminal silent, and handshakes and refusals are in
 * it. The Logger itself and the shared option parsing are checked without namespaces.
 */
import assert from "node:assert/strict";
import { netnsTest, waitForPort, withTopology } from "./_support/netns.ts";
import { withRunWorld } from "./_support/run_world.ts";
import { Logger } from "../core/host/log.ts";
import { makeLogger, tunnelOptions, UsageError } from "../cli/_options.ts";

function collect(): { lines: string[]; sink: { write(l: string): void } } {
  const lines: string[] = [];
  return { lines, sink: { write: (l) => void lines.push(l) } };
}

interface LogLine {
  ts: string;
  level: string;
  msg: string;
  [field: string]: unknown;
}

/** Parses a JSON-lines log strictly: every line one object with ts, level and msg. */
function parseLog(text: string): LogLine[] {
  assert.ok(text.endsWith("\n"), "the log ends with a newline");
  return text.slice(0, -1).split("\n").map((line, i) => {
    const o = JSON.parse(line) as LogLine;
    assert.equal(typeof o, "object", `line ${i + 1}`);
    assert.ok(!Number.isNaN(Date.parse(o.ts)) && o.ts.endsWith("Z"), `line ${i + 1}: ts ${o.ts}`);
    assert.ok(["error", "warn", "info", "debug"].includes(o.level), `line ${i + 1}: ${o.level}`);
    assert.equal(typeof o.msg, "string", `line ${i + 1}`);
    return o;
  });
}

Deno.test("Logger: JSON lines with fields, levels filter, text form for terminals", () => {
  const { lines, sink } = collect();
  const log = new Logger({ level: "info", sink }).with({ peer: "K=" });
  log.info("handshake complete", { role: "initiator", quote: 'a "b"\nc' });
  log.debug("not shown");
  log.error("bad", { n: 1 });
  assert.equal(lines.length, 2);
  const parsed = parseLog(lines.join(""));
  assert.deepEqual({ ...parsed[0], ts: "" }, {
    ts: "",
    level: "info",
    msg: "handshake complete",
    peer: "K=",
    role: "initiator",
    quote: 'a "b"\nc',
  });
  assert.equal(parsed[1]!.level, "error");
  const text = collect();
  new Logger({ level: "warn", sink: text.sink, format: "text" }).warn("refused", { port: 80 });
  assert.match(text.lines[0]!, /^\d{4}-\d\d-\d\dT\S+Z WARN {2}refused port=80\n$/);
});

Deno.test("shared options: log level, format and file; routes checked", async () => {
  assert.equal(tunnelOptions({ config: "x" }).logLevel, "warn");
  assert.equal(tunnelOptions({ config: "x", "log-level": "debug" }).logLevel, "debug");
  assert.throws(() => tunnelOptions({ config: "x", "log-level": "loud" }), UsageError);
  assert.throws(() => tunnelOptions({ config: "x", "log-format": "xml" }), UsageError);
  assert.throws(() => tunnelOptions({}), /--config is required/);
  assert.throws(() => tunnelOptions({ config: "x", route: ["10.0.0.0/8"] }), UsageError);
  const o = tunnelOptions({ config: "x", route: ["10.1.0.0/16:10.0.0.1"], "exit-node": "fd00::1" });
  assert.equal(o.routes.length, 1);
  assert.equal(o.exitNode?.length, 16);

  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/wg.log`;
    const { logger, close } = makeLogger({ logLevel: "info", logFile: file });
    logger.info("one", { a: 1 });
    logger.debug("hidden");
    close();
    const again = makeLogger({ logLevel: "info", logFile: file });
    again.logger.warn("two");
    again.close();
    const lines = parseLog(await Deno.readTextFile(file));
    assert.deepEqual(lines.map((l) => l.msg), ["one", "two"]);
    assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

netnsTest(
  "run --log-file: JSON lines with the handshake and a refusal, nothing on the terminal",
  async (t) => {
    await withTopology({ hostNamespace: true }, async (topo) => {
      await withRunWorld(topo, { dns: false }, async (w) => {
        topo.spawn(topo.peer, [
          "socat",
          "TCP6-LISTEN:8080,fork,reuseaddr,ipv6only=0",
          "SYSTEM:echo hello",
        ]);
        await waitForPort(topo.peer, 8080);
        // A filtered route to the peer: port 443 only. Port 80 to that prefix reaches the broker
        // (the interposer routes by address) and is refused there: no peer routes it.
        const config = `${topo.tmpDir}/logged.conf`;
        await Deno.writeTextFile(
          config,
          (await Deno.readTextFile(w.configPath)) + "Route = 172.31.0.0/16:tcp:443\n",
        );
        const ask = (target: string, args: string[]) =>
          topo.run(
            w.host,
            w.wrapArgv(["socat", "-u", `TCP:${target},connect-timeout=5`, "STDOUT"], [
              "--config",
              config,
              ...args,
            ]),
            { env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" }, timeoutMs: 30_000 },
          );

        await t.step("--log-file: the program's output only, the log in the file", async () => {
          const file = `${topo.tmpDir}/wg.log`;
          const r = await ask("10.77.0.1:8080", ["--log-level", "debug", "--log-file", file]);
          assert.equal(r.code, 0, r.stderr);
          assert.equal(r.stdout, "hello\n");
          assert.equal(r.stderr, "", "nothing on the terminal");
          const log = parseLog(await Deno.readTextFile(file));
          const msgs = log.map((l) => l.msg);
          assert.ok(msgs.includes("tunnel up"), msgs.join(" | "));
          const hs = log.find((l) => l.msg === "handshake complete");
          assert.ok(hs, msgs.join(" | "));
          assert.equal(hs.peer, w.wg.publicKey);
          assert.equal(hs.level, "info");
          const route = log.find((l) => l.msg === "route");
          assert.equal(route?.route, "172.31.0.0/16 tcp 443");
          assert.ok(msgs.includes("exited"), msgs.join(" | "));
        });

        await t.step("a refusal by the broker is logged", async () => {
          const file = `${topo.tmpDir}/refused.log`;
          const r = await ask("172.31.0.5:80", ["--log-file", file]);
          assert.notEqual(r.code, 0);
          assert.match(r.stderr, /unreachable/i); // socat's own message
          const log = parseLog(await Deno.readTextFile(file));
          const refusal = log.find((l) => l.msg.startsWith("refused"));
          assert.ok(refusal, JSON.stringify(log));
          assert.equal(refusal.level, "warn");
          assert.equal(refusal.dst, "172.31.0.5");
          assert.equal(refusal.port, 80);
        });

        await t.step(
          "stderr that is not a terminal gets JSON lines; --log-format text",
          async () => {
            const json = await ask("10.77.0.1:8080", ["--log-level", "info"]);
            assert.equal(json.code, 0, json.stderr);
            const lines = parseLog(json.stderr);
            assert.ok(lines.some((l) => l.msg === "handshake complete"), json.stderr);
            const text = await ask("10.77.0.1:8080", [
              "--log-level",
              "info",
              "--log-format",
              "text",
            ]);
            assert.equal(text.code, 0, text.stderr);
            assert.match(text.stderr, /^\S+Z INFO {2}tunnel up /m);
            assert.match(text.stderr, /^\S+Z INFO {2}handshake complete peer=/m);
          },
        );
      });
    });
  },
  { requires: ["socat"], timeoutMs: 90_000 },
);
