/**
 * Idle connections give back their buffers (TcpLayer.trimIdle): only after a quiet second, only
 * what is empty, and the connection carries data again afterwards.
 */
import assert from "node:assert/strict";
import { patternData, TcpScript } from "./_support/tcp_script.ts";

Deno.test("trimIdle frees the empty buffers of quiet connections only, and they grow back", () => {
  const s = new TcpScript();
  const { conn, iss, irs } = s.openActive({ ts: false });
  conn.write(patternData(100));
  s.expect([{ flags: "PA", seq: iss + 1, len: 100 }]);
  assert.equal(s.tcp.trimIdle(500), 0, "data in flight and not quiet: nothing is freed");
  s.send(20, { flags: "A", seq: irs + 1, ack: iss + 101 });
  assert.equal(s.tcp.trimIdle(900), 0, "acknowledged but quiet for less than a second");
  const freed = s.tcp.trimIdle(1100);
  assert.ok(freed > 512, `the send ring (512 bytes) and the send log were freed (${freed} bytes)`);
  assert.equal(s.tcp.trimIdle(5000), 0, "nothing is left to free");
  conn.write(patternData(10));
  s.expect([{ flags: "PA", seq: iss + 101, data: patternData(10) }]);
});
