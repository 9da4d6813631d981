/**
 * tcpdump as a leak detector for the run tests: start a capture on an interface, stop it and
 * take its lines, and keep the lines that are neither the allowed traffic nor link-local
 * housekeeping (ARP, IPv6 neighbour/router discovery, multicast listener reports).
 *
 * @module
 */
import type { Spawned } from "./netns.ts";

/** tcpdump on `dev` in `ns`, one line per packet. */
export async function capture(
  topo: { spawn(ns: string, argv: string[]): Spawned },
  ns: string,
  dev: string,
): Promise<Spawned> {
  const p = topo.spawn(ns, ["tcpdump", "-i", dev, "-n", "-l", "-p", "-U", "-tt"]);
  await p.waitForOutput(/listening on/, { stream: "stderr", timeoutMs: 10_000 });
  return p;
}

/** Stops the capture and returns its packet lines. */
export async function stopCapture(p: Spawned): Promise<string[]> {
  // Let the last packets reach the capture before it stops.
  await new Promise((r) => setTimeout(r, 300));
  await p.kill("SIGINT");
  return p.stdoutText().split("\n").filter((l) => l.trim() !== "");
}

/** Lines matching none of `allowed` that are not link-local housekeeping either. */
export function leaks(lines: string[], ...allowed: RegExp[]): string[] {
  return lines.filter((l) =>
    !allowed.some((a) => a.test(l)) &&
    !/ ARP, /.test(l) &&
    !/ICMP6, (neighbor|router) (solicitation|advertisement)|ICMP6, multicast listener/.test(l)
  );
}
