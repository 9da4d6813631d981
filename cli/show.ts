/**
 * `wrapguard show [--json]`: this user's running tunnels, as `wg show` prints interfaces — public
 * key and listening port, then per peer its endpoint, allowed IPs, latest handshake and transfer.
 * Each `run` answers on its status socket (core/host/status.ts); no root is needed, and another
 * user's tunnels are not visible.
 *
 * @module
 */
import { parseOptions } from "./_args.ts";
import { currentUid, listStatus, statusDir, type StatusRecord } from "../core/host/status.ts";

const HELP = `Usage: wrapguard show [--json]

Lists your running tunnels (wrapguard run) as 'wg show' does: the interface's
public key and listening port, then for each peer its endpoint, allowed IPs,
policy routes, latest handshake and bytes received and sent.

Options:
      --json   one JSON array of the tunnels' status, for scripts
  -h, --help
`;

/** `1 minute, 5 seconds` as wg(8) prints durations. */
export function formatAgo(ms: number): string {
  let s = Math.max(0, Math.floor(ms / 1000));
  if (s === 0) return "Now";
  const parts: string[] = [];
  for (
    const [unit, size] of [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]] as const
  ) {
    const n = Math.floor(s / size);
    s -= n * size;
    if (n > 0) parts.push(`${n} ${unit}${n === 1 ? "" : "s"}`);
  }
  return `${parts.join(", ")} ago`;
}

/** Bytes as wg(8) prints transfer: B, KiB, MiB, GiB, TiB with two decimals. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(2)} ${units[i]}`;
}

/** The text `show` prints for some tunnels, at wall-clock time `now`. */
export function formatStatus(records: StatusRecord[], now: number): string {
  const out: string[] = [];
  for (const r of records) {
    if (out.length > 0) out.push("");
    out.push(`interface: ${r.interface}`);
    out.push(`  public key: ${r.publicKey}`);
    out.push(`  listening port: ${r.listenPort}`);
    if (r.addresses.length > 0) out.push(`  address: ${r.addresses.join(", ")}`);
    out.push(`  process: ${r.pid} (${r.kind}${r.command ? `: ${r.command}` : ""})`);
    if (r.killSwitch) out.push(`  kill switch: on`);
    // wg shows the peers with the most recent handshake first.
    const peers = [...r.peers].sort((a, b) => b.latestHandshake - a.latestHandshake);
    for (const p of peers) {
      out.push("");
      out.push(`peer: ${p.publicKey}`);
      if (p.endpoint) out.push(`  endpoint: ${p.endpoint}`);
      out.push(`  allowed ips: ${p.allowedIPs.length > 0 ? p.allowedIPs.join(", ") : "(none)"}`);
      const routes = r.routes?.[p.publicKey];
      if (routes && routes.length > 0) out.push(`  routes: ${routes.join(", ")}`);
      if (p.latestHandshake > 0) {
        out.push(`  latest handshake: ${formatAgo(now - p.latestHandshake)}`);
      }
      if (p.rxBytes > 0 || p.txBytes > 0) {
        out.push(`  transfer: ${formatBytes(p.rxBytes)} received, ${formatBytes(p.txBytes)} sent`);
      }
      if (p.persistentKeepalive > 0) {
        out.push(`  persistent keepalive: every ${p.persistentKeepalive} seconds`);
      }
    }
  }
  return out.join("\n") + (out.length > 0 ? "\n" : "");
}

export async function main(args: string[]): Promise<number> {
  let values;
  try {
    values = parseOptions(args, {
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    });
  } catch (e) {
    console.error(`wrapguard show: ${(e as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  let records: StatusRecord[];
  try {
    const uid = await currentUid();
    records = await listStatus(statusDir(uid), uid);
  } catch (e) {
    console.error(`wrapguard show: ${(e as Error).message}`);
    return 1;
  }
  if (values.json) {
    console.log(JSON.stringify(records, null, 2));
  } else if (records.length > 0) {
    Deno.stdout.writeSync(new TextEncoder().encode(formatStatus(records, Date.now())));
  }
  return 0;
}
