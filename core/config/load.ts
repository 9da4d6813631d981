/**
 * Reading a config file from disk.
 *
 * @module
 */
import { parseConfig } from "./parse.ts";
import type { Config } from "./types.ts";

/**
 * Reads and parses the config file at `path`. Errors name the file: a {@link ConfigError}'s
 * message starts with `path:line:`, and a read failure is the runtime's own error (for example
 * `Deno.errors.NotFound`), whose message includes the path. Like wg-quick, it adds a warning
 * (line 0) when the file is readable by other users, since it holds a private key.
 *
 * @example
 * ```ts
 * import { loadConfig } from "./load.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.writeTextFile(path, "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n");
 * const config = await loadConfig(path);
 * await Deno.remove(path);
 * if (config.peers.length !== 0) throw new Error();
 * ```
 */
export async function loadConfig(path: string): Promise<Config> {
  const text = await Deno.readTextFile(path);
  const config = parseConfig(text, { file: path });
  try {
    const mode = (await Deno.stat(path)).mode;
    if (mode !== null && (mode & 0o007) !== 0) {
      config.warnings.unshift({
        line: 0,
        key: "",
        message: `${path} is world accessible; it holds a private key (chmod 600 it)`,
      });
    }
  } catch {
    // The file was just read; a failed stat only loses the warning.
  }
  return config;
}
