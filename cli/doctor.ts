/**
 * `wrapguard doctor [--config FILE] [--offline] [-- TARGET …]`: checks what `run` will need and
 * says what to fix. Each check passes, warns or fails with a hint; the exit status is 1 when any
 * failed. The checks themselves live in core/host/doctor/mod.ts.
 *
 * @module
 */
import { parseOptions } from "./_args.ts";
import { type DoctorCheck, runDoctor } from "../core/host/doctor/mod.ts";
import { libraries, probes, supervisors } from "../preload/build/embedded.ts";

const HELP = `Usage: wrapguard doctor [--config FILE] [--offline] [--timeout SECONDS] [--json]
                        [-- TARGET [ARGS…]]

Checks what 'wrapguard run' needs, each reported as pass, warn or fail with a hint:
  - the config parses (a broken one is named by file and line)
  - each peer's Endpoint resolves
  - a UDP socket opens (on ListenPort when the config has one)
  - a handshake with each peer completes, with its time (skipped with --offline)
  - the interposer extracts, loads into a probe program and captures its connect
    (through an embedded peer on 127.0.0.1: nothing leaves the machine)
  - TARGET is a dynamically linked ELF of this architecture, not setuid, not static
    and not Go (otherwise use 'wrapguard forward' or 'wrapguard proxy')
  - the Deno permissions in force

Options:
  -c, --config FILE     the wg-quick config to check
      --offline         do not contact the peers
      --timeout SECONDS how long each handshake may take (default 5)
      --json            print the report as one JSON object
  -h, --help

Exit status: 0 when nothing failed (warnings allowed), 1 otherwise, 2 for usage errors.
`;

function print(checks: DoctorCheck[]): void {
  const width = Math.max(...checks.map((c) => c.name.length));
  console.log("wrapguard doctor\n");
  for (const c of checks) {
    const mark = c.status === "fail" ? "FAIL" : c.status;
    console.log(
      `  ${mark.padEnd(4)}  ${c.name.padEnd(width)}  ${
        c.ms.toFixed(0).padStart(5)
      } ms  ${c.detail}`,
    );
    if (c.hint) console.log(`  ${"".padEnd(4)}  ${"".padEnd(width)}            hint: ${c.hint}`);
  }
  const count = (s: string) => checks.filter((c) => c.status === s).length;
  console.log(
    `\n${count("pass")} passed, ${count("warn")} warnings, ${count("fail")} failed` +
      (count("skip") > 0 ? `, ${count("skip")} skipped` : ""),
  );
}

export async function main(args: string[]): Promise<number> {
  const dash = args.indexOf("--");
  const own = dash >= 0 ? args.slice(0, dash) : args;
  const target = dash >= 0 ? args.slice(dash + 1) : [];
  let values;
  try {
    values = parseOptions(own, {
      config: { type: "string", short: "c" },
      offline: { type: "boolean" },
      timeout: { type: "string" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    });
  } catch (e) {
    console.error(`wrapguard doctor: ${(e as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const timeout = Number(values.timeout ?? "5");
  if (!Number.isFinite(timeout) || timeout <= 0) {
    console.error(`wrapguard doctor: --timeout must be a positive number of seconds\n\n${HELP}`);
    return 2;
  }
  const checks = await runDoctor({
    config: values.config,
    offline: values.offline ?? false,
    handshakeTimeoutMs: timeout * 1000,
    target,
    libraries,
    probes,
    supervisors,
  });
  const failed = checks.some((c) => c.status === "fail");
  if (values.json) console.log(JSON.stringify({ ok: !failed, checks }, null, 2));
  else print(checks);
  return failed ? 1 : 0;
}
