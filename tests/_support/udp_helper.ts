/**
 * Loaded before every test module (`--preload` in deno.json's test task): loads the batched UDP
 * helper once, so that the tunnels the tests start use it as the CLI's do, and so that Deno's
 * resource sanitizer does not take the library, opened once per process and kept, for a leak of
 * whichever test started the first tunnel.
 *
 * @module
 */
import { udpHelper } from "../../core/host/tunnel/udp_native.ts";

await udpHelper();
