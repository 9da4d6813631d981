/**
 * Two of our tunnels on 127.0.0.1, each the other's only peer, for `forward` and `proxy` tests
 * that need no root: `near` (10.9.0.2, fd09::2) is where the forwarder or proxy runs, `far`
 * (10.9.0.1, fd09::1) plays the services on the WireGuard network. `near` routes 10.9.0.0/24
 * and fd09::/64 to `far`, so 10.9.0.99 is routed but silent and 10.10.0.1 is not routed. The
 * two have completed a handshake when `fn` starts, so either side can open connections.
 *
 * @module
 */
import { parseConfig } from "../../core/config/mod.ts";
import { Tunnel } from "../../core/host/tunnel/mod.ts";
import { encodeKey, generatePrivateKey, publicKeyOf } from "../../core/wireguard/keys.ts";

export const NEAR4 = "10.9.0.2";
export const FAR4 = "10.9.0.1";
export const FAR6 = "fd09::1";

export interface LoopbackPair {
  near: Tunnel;
  far: Tunnel;
}

/** Runs `fn` with the pair, then closes both tunnels (and waits for their sockets to close). */
export async function withLoopbackPair(
  fn: (p: LoopbackPair) => Promise<void>,
  opts: { nearExtra?: string } = {},
): Promise<void> {
  const nearKey = generatePrivateKey(), farKey = generatePrivateKey();
  const far = await Tunnel.start(
    parseConfig(
      `[Interface]\nPrivateKey = ${encodeKey(farKey)}\nAddress = ${FAR4}/32, ${FAR6}/128\n\n` +
        `[Peer]\nPublicKey = ${encodeKey(publicKeyOf(nearKey))}\n` +
        `AllowedIPs = ${NEAR4}/32, fd09::2/128\n`,
    ),
    { listenAddress: "127.0.0.1" },
  );
  let near: Tunnel | undefined;
  try {
    near = await Tunnel.start(
      parseConfig(
        `[Interface]\nPrivateKey = ${encodeKey(nearKey)}\nAddress = ${NEAR4}/32, fd09::2/128\n` +
          `${opts.nearExtra ?? ""}\n\n[Peer]\nPublicKey = ${encodeKey(publicKeyOf(farKey))}\n` +
          `Endpoint = 127.0.0.1:${far.udp.port}\nAllowedIPs = 10.9.0.0/24, fd09::/64\n`,
      ),
      { listenAddress: "127.0.0.1", tcp: { synRetries: 1 } },
    );
    // The far side learns near's endpoint from the handshake: make it happen before `fn`.
    await near.ping(FAR4, { timeout: 5000 });
    await fn({ near, far });
  } finally {
    near?.close();
    far.close();
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Writes all of `data`. */
export async function writeAll(
  conn: { write(p: Uint8Array): Promise<number> },
  data: Uint8Array,
): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}
