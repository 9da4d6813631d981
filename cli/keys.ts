/**
 * `wrapguard genkey`, `pubkey` and `genpsk`: the same bytes out as `wg genkey`, `wg pubkey` and
 * `wg genpsk`, so the commands can stand in for each other in scripts
 * (`wrapguard genkey | tee priv | wrapguard pubkey > pub`).
 *
 * @module
 */
import {
  decodeKey,
  encodeKey,
  generatePresharedKey,
  generatePrivateKey,
  KEY_TEXT_LEN,
  publicKeyOf,
} from "../core/wireguard/keys.ts";

/** Where a key command reads and writes; the process's stdio unless a test passes its own. */
export interface KeysIO {
  readStdin(): Promise<Uint8Array>;
  writeStdout(bytes: Uint8Array): Promise<void>;
  writeStderr(text: string): Promise<void>;
  /** True when stdout is a regular file that other users may access (wg warns about it). */
  stdoutIsWorldAccessibleFile(): boolean;
}

async function writeAll(w: { write(p: Uint8Array): Promise<number> }, bytes: Uint8Array) {
  for (let off = 0; off < bytes.length;) off += await w.write(bytes.subarray(off));
}

/** The process's own stdin, stdout and stderr. */
export const processIO: KeysIO = {
  async readStdin() {
    return new Uint8Array(await new Response(Deno.stdin.readable).arrayBuffer());
  },
  writeStdout: (bytes) => writeAll(Deno.stdout, bytes),
  writeStderr: (text) => writeAll(Deno.stderr, new TextEncoder().encode(text)),
  stdoutIsWorldAccessibleFile() {
    // wg fstat()s fd 1; Deno exposes no fstat on stdout, so follow Linux's /proc link. Elsewhere, or
    // without read permission (never prompt for it), skip the warning.
    const path = "/proc/self/fd/1";
    try {
      if (Deno.permissions.querySync({ name: "read", path }).state !== "granted") return false;
      const st = Deno.statSync(path);
      return st.isFile && st.mode !== null && (st.mode & 0o007) !== 0;
    } catch {
      return false;
    }
  },
};

const WORLD_ACCESSIBLE_WARNING = "Warning: writing to world accessible file.\n" +
  "Consider setting the umask to 077 and trying again.\n";

const USAGE: Record<string, string> = {
  genkey: "Usage: wrapguard genkey\n\n" +
    "Prints a new random private key in base64, as `wg genkey` does.\n",
  pubkey: "Usage: wrapguard pubkey < private.key\n\n" +
    "Reads a base64 private key on stdin and prints its public key, as `wg pubkey` does.\n",
  genpsk: "Usage: wrapguard genpsk\n\n" +
    "Prints a new random preshared key in base64, as `wg genpsk` does.\n",
};

/**
 * Handles arguments the way wg does (none are accepted), plus `--help`/`-h`. Returns an exit code
 * when the command should stop, `undefined` to go on.
 */
async function checkArgs(name: string, args: string[], io: KeysIO): Promise<number | undefined> {
  if (args.length === 0) return undefined;
  if (args.length === 1 && (args[0] === "--help" || args[0] === "-h")) {
    await io.writeStdout(new TextEncoder().encode(USAGE[name]!));
    return 0;
  }
  await io.writeStderr(USAGE[name]!);
  return 1;
}

async function printNewKey(key: Uint8Array, io: KeysIO): Promise<number> {
  if (io.stdoutIsWorldAccessibleFile()) await io.writeStderr(WORLD_ACCESSIBLE_WARNING);
  await io.writeStdout(new TextEncoder().encode(encodeKey(key) + "\n"));
  return 0;
}

/** `wrapguard genkey`: prints a new clamped private key and a newline. */
export async function genkey(args: string[], io: KeysIO = processIO): Promise<number> {
  return await checkArgs("genkey", args, io) ??
    await printNewKey(generatePrivateKey(), io);
}

/** `wrapguard genpsk`: prints a new preshared key and a newline. */
export async function genpsk(args: string[], io: KeysIO = processIO): Promise<number> {
  return await checkArgs("genpsk", args, io) ??
    await printNewKey(generatePresharedKey(), io);
}

/** wg's `char_is_space`: space, \t, \n, \v, \f, \r. */
const isSpace = (b: number) => b === 0x20 || (b >= 0x09 && b <= 0x0d);

/**
 * `wrapguard pubkey`: reads a private key on stdin, prints its public key and a newline. Like
 * `wg pubkey`, the first 44 bytes are the key and what follows may only be whitespace or NULs.
 */
export async function pubkey(args: string[], io: KeysIO = processIO): Promise<number> {
  const stop = await checkArgs("pubkey", args, io);
  if (stop !== undefined) return stop;
  const input = await io.readStdin();
  if (input.length < KEY_TEXT_LEN) {
    await io.writeStderr("pubkey: Key is not the correct length or format\n");
    return 1;
  }
  for (const b of input.subarray(KEY_TEXT_LEN)) {
    if (b !== 0 && !isSpace(b)) {
      await io.writeStderr("pubkey: Trailing characters found after key\n");
      return 1;
    }
  }
  // One character per byte, so a non-ASCII byte is one invalid character, as in wg's decoder.
  const priv = decodeKey(String.fromCharCode(...input.subarray(0, KEY_TEXT_LEN)));
  if (!priv) {
    await io.writeStderr("pubkey: Key is not the correct length or format\n");
    return 1;
  }
  await io.writeStdout(new TextEncoder().encode(encodeKey(publicKeyOf(priv)) + "\n"));
  return 0;
}
