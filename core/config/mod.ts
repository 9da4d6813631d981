/**
 * The wg-quick configuration format: {@link parseConfig} reads it, {@link formatConfig} prints it,
 * {@link loadConfig} reads a file. Problems are {@link ConfigError}s naming file and line; keys
 * that only a kernel interface would act on come back as `config.warnings`.
 *
 * @example
 * ```ts
 * import { ConfigError, parseConfig } from "./mod.ts";
 * try {
 *   parseConfig("[Interface]\nPrivateKey = nope\n", { file: "wg0.conf" });
 *   throw new Error("expected a ConfigError");
 * } catch (e) {
 *   if (!(e instanceof ConfigError) || e.line !== 2) throw e;
 * }
 * ```
 *
 * @module
 */
export type { Config, ConfigWarning, InterfaceConfig, PeerConfig, RouteRule } from "./types.ts";
export { ConfigError } from "./errors.ts";
export { MAX_MTU, MIN_MTU, MIN_MTU_IPV6, parseConfig, type ParseOptions } from "./parse.ts";
export { formatConfig, type FormatOptions, formatRoute } from "./format.ts";
export { loadConfig } from "./load.ts";
