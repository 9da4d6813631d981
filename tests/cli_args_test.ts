/**
 * `cli/_args.ts` against `node:util`'s `parseArgs`, which it replaces on the start-up path: the
 * same command lines, with the commands' real option sets, give the same values or both refuse.
 */
import assert from "node:assert/strict";
import { parseArgs } from "node:util";
import { parseOptions } from "../cli/_args.ts";
import { TUNNEL_OPTIONS } from "../cli/_options.ts";

const FORWARD = {
  ...TUNNEL_OPTIONS,
  local: { type: "string", short: "L", multiple: true },
  remote: { type: "string", short: "R", multiple: true },
  "allow-remote": { type: "boolean" },
  help: { type: "boolean", short: "h" },
  verbose: { type: "boolean", short: "v" },
} as const;

const LINES: string[][] = [
  [],
  ["--config", "wg0.conf"],
  ["--config=wg0.conf"],
  ["-c", "wg0.conf"],
  ["-cwg0.conf"],
  ["-c", "-"],
  ["--config", "a.conf", "--config", "b.conf"],
  ["--route", "10.0.0.0/8:10.9.0.1", "--route=fd00::/8:fd09::1"],
  ["-L", "8080:10.9.0.1:80", "-L9090:10.9.0.1:90", "--local", "x"],
  ["--kill-switch", "--allow-remote", "-h"],
  ["-hv"],
  ["-vh", "-c", "x"],
  ["--config="],
  ["--log-level", "debug", "--log-file", "/tmp/x.log", "--log-format", "json"],
  // Refused by both:
  ["--config"],
  ["-c"],
  ["--config", "--kill-switch"],
  ["-c", "-v"],
  ["--kill-switch=yes"],
  ["--nope"],
  ["-x"],
  ["wg0.conf"],
  ["--config", "a", "extra"],
  ["--", "cmd"],
  ["-"],
  ["-hx"],
];

function outcome(f: () => unknown): unknown {
  try {
    return { values: JSON.parse(JSON.stringify(f())) };
  } catch (e) {
    assert.ok(e instanceof TypeError, `a TypeError, not ${e}`);
    return "refused";
  }
}

Deno.test("cli args: the same values as node:util parseArgs, or refused by both", () => {
  for (const args of LINES) {
    const node = outcome(() =>
      parseArgs({ args, options: FORWARD, strict: true, allowPositionals: false }).values
    );
    const ours = outcome(() => parseOptions(args, FORWARD));
    assert.deepEqual(ours, node, `for ${JSON.stringify(args)}`);
  }
});

Deno.test("cli args: messages name the option at fault", () => {
  const refusal = (args: string[]) => {
    try {
      parseOptions(args, FORWARD);
    } catch (e) {
      return (e as Error).message;
    }
    throw new Error(`${JSON.stringify(args)} was accepted`);
  };
  assert.match(refusal(["--nope"]), /Unknown option '--nope'/);
  assert.match(refusal(["-x"]), /Unknown option '-x'/);
  assert.match(refusal(["--config"]), /'--config <value>' argument missing/);
  assert.match(refusal(["-c", "-v"]), /'-c' argument is ambiguous.*'--config=-XYZ'/);
  assert.match(refusal(["--kill-switch=1"]), /'--kill-switch' does not take an argument/);
  assert.match(refusal(["wg0.conf"]), /Unexpected argument 'wg0.conf'/);
});
