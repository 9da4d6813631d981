/**
 * `node:crypto` and `node:buffer`, loaded at their first use instead of at import.
 *
 * Why: importing `node:crypto` loads most of Deno's Node compatibility layer, 15-25 ms and a few
 * MB before a wrapped program can start (docs/performance.md, "Cold start"). A process that
 * loaded the helper library has the native AEAD and X25519 and never needs it; only the fallback
 * does. `process.getBuiltinModule` (Node 22.3, in Deno 2) loads a built-in synchronously, so the
 * backends that use it stay synchronous too.
 *
 * @module
 */

type NodeCrypto = typeof import("node:crypto");
type NodeBuffer = typeof import("node:buffer");
type Loader = { getBuiltinModule(id: string): unknown };

function builtin<T>(id: string): T {
  // The global, not an `import` of node:process: that import alone costs 6-10 ms at start.
  const process = (globalThis as { process?: Loader }).process;
  if (!process?.getBuiltinModule) throw new Error(`${id} cannot be loaded in this runtime`);
  return process.getBuiltinModule(id) as T;
}

let crypto: NodeCrypto | undefined;
let buffer: NodeBuffer | undefined;

/** node:crypto, loaded on the first call. */
export function nodeCrypto(): NodeCrypto {
  return crypto ??= builtin<NodeCrypto>("node:crypto");
}

/** node:buffer, loaded on the first call. */
export function nodeBuffer(): NodeBuffer {
  return buffer ??= builtin<NodeBuffer>("node:buffer");
}

/** Whether node:crypto has been loaded through this module (the start-up test watches it). */
export function nodeCryptoLoaded(): boolean {
  return crypto !== undefined;
}
