/**
 * Cryptokey routing (paper 2): a longest-prefix-match table from address prefixes to peers,
 * one binary trie per family. Outbound, the destination picks the peer; inbound, the table
 * answers whether a decrypted packet's source belongs to the peer that sent it.
 *
 * @module
 */
import { type IpBytes, maskPrefix, type Prefix } from "../wire/addr.ts";

interface Node<T> {
  zero?: Node<T>;
  one?: Node<T>;
  value?: T;
}

export class AllowedIPs<T> {
  #v4: Node<T> = {};
  #v6: Node<T> = {};

  /** Adds (or moves to `value`) a prefix; like `wg set`, host bits are ignored. */
  insert(prefix: Prefix, value: T): void {
    const p = maskPrefix(prefix);
    let node = p.addr.length === 4 ? this.#v4 : this.#v6;
    for (let i = 0; i < p.bits; i++) {
      const bit = (p.addr[i >> 3]! >> (7 - (i & 7))) & 1;
      node = bit ? (node.one ??= {}) : (node.zero ??= {});
    }
    node.value = value;
  }

  /** The value of the longest prefix containing `addr`, or undefined. */
  lookup(addr: IpBytes): T | undefined {
    let node: Node<T> | undefined = addr.length === 4 ? this.#v4 : this.#v6;
    let best = node.value;
    const bits = addr.length * 8;
    for (let i = 0; i < bits && node; i++) {
      node = (addr[i >> 3]! >> (7 - (i & 7))) & 1 ? node.one : node.zero;
      if (node?.value !== undefined) best = node.value;
    }
    return best;
  }

  /** Removes every prefix that maps to `value`. */
  removeValue(value: T): void {
    const prune = (node: Node<T>): boolean => {
      if (node.value === value) delete node.value;
      if (node.zero && prune(node.zero)) delete node.zero;
      if (node.one && prune(node.one)) delete node.one;
      return node.value === undefined && !node.zero && !node.one;
    };
    prune(this.#v4);
    prune(this.#v6);
  }

  /** Every prefix mapping to `value`, as `wg show allowed-ips` lists them. */
  prefixesOf(value: T): Prefix[] {
    const out: Prefix[] = [];
    const walk = (node: Node<T>, addr: Uint8Array, depth: number) => {
      if (node.value === value) out.push({ addr: addr.slice(), bits: depth });
      for (const [child, bit] of [[node.zero, 0], [node.one, 1]] as const) {
        if (!child) continue;
        const byte = depth >> 3, mask = 0x80 >> (depth & 7);
        if (bit) addr[byte]! |= mask;
        walk(child, addr, depth + 1);
        addr[byte]! &= ~mask;
      }
    };
    walk(this.#v4, new Uint8Array(4), 0);
    walk(this.#v6, new Uint8Array(16), 0);
    return out;
  }
}
