/**
 * Command-line options as `node:util`'s `parseArgs` reads them in strict mode without positionals,
 * for the subset our commands use: `--name value`, `--name=value`, `-x value`, `-xvalue`, boolean
 * flags, repeatable options.
 *
 * Why not `parseArgs` itself: importing anything from `node:` loads Deno's Node compatibility
 * layer, about 12 ms of every start on our 2-core machines (docs/performance.md "Cold start"), and
 * `run` needs nothing else from it. The messages follow `parseArgs`'s, so a user who knows one
 * knows the other.
 *
 * @module
 */

/** One option: a string that takes a value, or a boolean flag; `multiple` collects every use. */
export interface OptionSpec {
  readonly type: "string" | "boolean";
  readonly short?: string;
  readonly multiple?: boolean;
}

type ValueOf<S extends OptionSpec> = S["type"] extends "boolean" ? boolean : string;

/** What {@link parseOptions} returns: an absent option is absent, a repeatable one is a list. */
export type OptionValues<O extends Record<string, OptionSpec>> = {
  -readonly [K in keyof O]?: O[K]["multiple"] extends true ? ValueOf<O[K]>[] : ValueOf<O[K]>;
};

/**
 * Reads `args` against `options`.
 * @throws {TypeError} for an unknown option, a missing or ambiguous value, a value given to a
 *   flag, or any word that is not an option (this subset takes no positionals).
 */
export function parseOptions<O extends Record<string, OptionSpec>>(
  args: readonly string[],
  options: O,
): OptionValues<O> {
  const shorts = new Map<string, string>();
  for (const [name, spec] of Object.entries(options)) {
    if (spec.short !== undefined) shorts.set(spec.short, name);
  }
  const values: Record<string, unknown> = {};
  const store = (name: string, value: string | boolean) => {
    if (options[name]!.multiple) ((values[name] ??= []) as unknown[]).push(value);
    else values[name] = value;
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    let name: string | undefined;
    let inline: string | undefined;
    let shown: string;
    if (arg.startsWith("--") && arg.length > 2) {
      const eq = arg.indexOf("=");
      name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      inline = eq < 0 ? undefined : arg.slice(eq + 1);
      shown = `--${name}`;
      if (!Object.hasOwn(options, name)) throw new TypeError(`Unknown option '${shown}'`);
    } else if (arg.startsWith("-") && arg.length > 1 && arg !== "--") {
      shown = arg.slice(0, 2);
      name = shorts.get(arg[1]!);
      if (name === undefined) throw new TypeError(`Unknown option '${shown}'`);
      if (arg.length > 2) {
        // A group of flags (`-ab`) or a short option with its value attached (`-cFILE`).
        if (options[name]!.type === "boolean") {
          args = [...args.slice(0, i + 1), `-${arg.slice(2)}`, ...args.slice(i + 1)];
        } else inline = arg.slice(2);
      }
    } else {
      throw new TypeError(
        `Unexpected argument '${arg}'. This command does not take positional arguments`,
      );
    }
    const spec = options[name]!;
    if (spec.type === "boolean") {
      if (inline !== undefined) throw new TypeError(`Option '${shown}' does not take an argument`);
      store(name, true);
      continue;
    }
    if (inline === undefined) {
      const next = args[i + 1];
      if (next === undefined) throw new TypeError(`Option '${shown} <value>' argument missing`);
      if (next.startsWith("-") && next !== "-") {
        throw new TypeError(
          `Option '${shown}' argument is ambiguous. To specify an option argument starting ` +
            `with a dash use '--${name}=-XYZ'`,
        );
      }
      inline = next;
      i++;
    }
    store(name, inline);
  }
  return values as OptionValues<O>;
}
