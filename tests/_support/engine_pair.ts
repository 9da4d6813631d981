/**
 * Two engines joined by an in-memory "network" with a fake clock, for protocol tests that
 * need exact control of time and of every datagram (drop, replay, reorder).
 *
 * @module
 */
import { Device, type DeviceEvent, type Endpoint, type Peer } from "../../core/wireguard/device.ts";
import { dhGenerate, dhPublic } from "../../core/wireguard/crypto.ts";
import { parsePrefix, type Prefix } from "../../core/wire/addr.ts";

export interface Datagram {
  from: Endpoint;
  to: Endpoint;
  data: Uint8Array;
}

export interface Side {
  device: Device;
  endpoint: Endpoint;
  /** The peer object this side has for the other side. */
  peer: Peer;
  delivered: Uint8Array[];
  events: DeviceEvent[];
}

const random = (n: number) => crypto.getRandomValues(new Uint8Array(n));

function prefix(text: string): Prefix {
  const p = parsePrefix(text);
  if (!p) throw new TypeError(text);
  return p;
}

/**
 * A and B: A owns 10.0.0.1 / fd00::1, B owns 10.0.0.2 / fd00::2. Datagrams queue in `wire`
 * until `flush()` delivers them (optionally through a filter that may drop or alter them).
 */
export class EnginePair {
  now = 1_000_000;
  readonly wire: Datagram[] = [];
  readonly a: Side;
  readonly b: Side;

  /** Datagrams A's device sealed into a slot from `udpSlot` (with `slots`), not via sendUdp. */
  slotted = 0;

  /**
   * `slots`: A's host offers `udpSlot`, handing out buffers full of stale 0xa5 bytes (as the
   * native transport's reused batch slots are), which join the wire as sent.
   */
  constructor(
    options: {
      psk?: [Uint8Array | undefined, Uint8Array | undefined];
      keepalive?: number;
      slots?: boolean;
    } = {},
  ) {
    const keyA = dhGenerate(random), keyB = dhGenerate(random);
    const epA: Endpoint = { address: Uint8Array.of(192, 0, 2, 1), port: 51820 };
    const epB: Endpoint = { address: Uint8Array.of(192, 0, 2, 2), port: 51820 };
    const make = (
      priv: Uint8Array,
      own: Endpoint,
      otherPub: Uint8Array,
      otherEp: Endpoint,
      otherAllowed: string[],
      psk: Uint8Array | undefined,
    ): Side => {
      const side = { delivered: [], events: [] } as unknown as Side;
      side.endpoint = own;
      const slots = options.slots && own === epA;
      side.device = new Device({ privateKey: priv, wallClockOffset: 1.7e12, random }, {
        sendUdp: (to, data) => this.wire.push({ from: own, to, data }),
        udpSlot: slots
          ? (to, length) => {
            const data = new Uint8Array(length).fill(0xa5);
            this.wire.push({ from: own, to, data });
            this.slotted++;
            return data;
          }
          : undefined,
        deliver: (packet) => side.delivered.push(packet.slice()),
        event: (e) => side.events.push(e),
      });
      side.peer = side.device.addPeer({
        publicKey: otherPub,
        presharedKey: psk,
        endpoint: otherEp,
        allowedIPs: otherAllowed.map(prefix),
        persistentKeepalive: options.keepalive,
      });
      return side;
    };
    this.a = make(keyA, epA, dhPublic(keyB), epB, ["10.0.0.2/32", "fd00::2/128"], options.psk?.[0]);
    this.b = make(keyB, epB, dhPublic(keyA), epA, ["10.0.0.1/32", "fd00::1/128"], options.psk?.[1]);
  }

  sideAt(ep: Endpoint): Side {
    return ep === this.a.endpoint || ep.address[3] === 1 ? this.a : this.b;
  }

  /** Delivers queued datagrams (and those they cause) until the wire is quiet. */
  flush(filter?: (d: Datagram) => Uint8Array | undefined): number {
    let n = 0;
    while (this.wire.length > 0) {
      const d = this.wire.shift()!;
      const data = filter ? filter(d) : d.data;
      if (!data) continue;
      this.sideAt(d.to).device.receive(this.now, d.from, data);
      n++;
    }
    return n;
  }

  /** Advances the clock to `t`, firing both devices' timers in order on the way. */
  advanceTo(t: number, filter?: (d: Datagram) => Uint8Array | undefined): void {
    for (;;) {
      const next = Math.min(this.a.device.pollAt(), this.b.device.pollAt());
      if (next > t) break;
      this.now = Math.max(this.now, next);
      this.a.device.tick(this.now);
      this.b.device.tick(this.now);
      this.flush(filter);
    }
    this.now = t;
  }
}

/** A minimal IPv4 UDP packet from `src` to `dst` carrying `payload` (checksum left zero). */
export function ipv4Packet(src: number[], dst: number[], payload: Uint8Array): Uint8Array {
  const p = new Uint8Array(28 + payload.length);
  p[0] = 0x45;
  p[2] = p.length >> 8;
  p[3] = p.length & 0xff;
  p[8] = 64;
  p[9] = 17;
  p.set(src, 12);
  p.set(dst, 16);
  p[24] = (8 + payload.length) >> 8;
  p[25] = (8 + payload.length) & 0xff;
  p.set(payload, 28);
  return p;
}
