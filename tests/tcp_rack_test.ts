/**
 * RACK-TLP (RFC 8985) as scripts: a lost tail is probed after two RTTs, and the probe's SACK
 * lets RACK repair the rest without the RTO.
 */
import assert from "node:assert/strict";
import { patternData, TcpScript } from "./_support/tcp_script.ts";

const MSS = 1380; // 1400-byte payloads, no timestamps; SACK on

Deno.test("TLP: a lost tail is probed and repaired without the RTO (RFC 8985 7)", () => {
  const s = new TcpScript();
  const { conn, iss, irs } = s.openActive({ ts: false });
  const seq = (k: number) => iss + 1 + k * MSS;
  conn.write(patternData(5 * MSS));
  s.expect(Array.from({ length: 5 }, (_, k) => ({ seq: seq(k), len: MSS })));
  // 0-2 arrive; 3 and 4, the tail, are lost: no ACK will ever show it.
  s.send(20, { flags: "A", seq: irs + 1, ack: seq(3) });
  s.expectNone();
  const pto = s.tcp.pollAt();
  assert.equal(pto, 20 + 2 * conn.info.srtt, "PTO = 2 SRTT after the last ACK");
  s.tick(pto);
  s.expect([{ seq: seq(4), len: MSS }], "the probe: the last segment again");
  // The probe's SACK shows 3 lost: RACK repairs it at once.
  s.send(pto + 10, { flags: "A", seq: irs + 1, ack: seq(3), sack: [[seq(4), seq(5)]] });
  s.expect([{ seq: seq(3), len: MSS }], "recovery triggered by the probe");
  s.send(pto + 20, { flags: "A", seq: irs + 1, ack: seq(5) });
  s.expectNone();
  assert.equal(s.tcp.stats.timeouts, 0);
  assert.equal(s.tcp.stats.retransmits, 2);
  assert.equal(s.tcp.pollAt(), Infinity);
});
