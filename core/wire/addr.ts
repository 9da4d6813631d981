/**
 * IP addresses and prefixes as bytes, with text forms that match what `ip`, `wg` and the kernel
 * print. Every layer (config, cryptokey routing, the stack, the broker) shares these so that an
 * address parsed once is compared, hashed and printed the same way everywhere.
 *
 * @module
 */

/** An IPv4 (4 bytes) or IPv6 (16 bytes) address. */
export type IpBytes = Uint8Array;

/** An address with its prefix length, as in `10.0.0.0/24` or `fd00::/64`. */
export interface Prefix {
  readonly addr: IpBytes;
  readonly bits: number;
}

/** Parses dotted-quad IPv4 text; returns undefined when it is not exactly that. */
export function parseIPv4(text: string): IpBytes | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    // Leading zeros are refused: inet_pton(3) does, and "010" is octal to some parsers.
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out[i] = n;
  }
  return out;
}

/** Parses IPv6 text (RFC 4291 2.2, including `::` and an embedded IPv4 tail). */
export function parseIPv6(text: string): IpBytes | undefined {
  const zone = text.indexOf("%");
  if (zone >= 0) text = text.slice(0, zone);
  if (text.length < 2 || !/^[0-9a-fA-F:.]+$/.test(text)) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groups = (s: string): number[] | undefined => {
    if (s === "") return [];
    const out: number[] = [];
    const parts = s.split(":");
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (i === parts.length - 1 && p.includes(".")) {
        const v4 = parseIPv4(p);
        if (!v4) return undefined;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return undefined;
        out.push(parseInt(p, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return undefined;
  const total = head.length + tail.length;
  if (halves.length === 1 ? total !== 8 : total > 7) return undefined;
  const words = [...head, ...new Array<number>(8 - total).fill(0), ...tail];
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[2 * i] = words[i]! >> 8;
    out[2 * i + 1] = words[i]! & 0xff;
  }
  return out;
}

/** Parses either family; brackets around IPv6 (`[::1]`) are accepted. */
export function parseIP(text: string): IpBytes | undefined {
  if (text.startsWith("[") && text.endsWith("]")) return parseIPv6(text.slice(1, -1));
  return text.includes(":") ? parseIPv6(text) : parseIPv4(text);
}

/** Formats an address as the kernel prints it (RFC 5952 for IPv6). */
export function formatIP(addr: IpBytes): string {
  if (addr.length === 4) return `${addr[0]}.${addr[1]}.${addr[2]}.${addr[3]}`;
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push((addr[i]! << 8) | addr[i + 1]!);
  // RFC 5952 4.2.3: the longest run of two or more zero words becomes "::", the first on a tie.
  let bestStart = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) [bestStart, bestLen] = [i, j - i];
    i = j;
  }
  // RFC 5952 5: IPv4-mapped addresses keep the dotted tail.
  if (bestStart === 0 && bestLen === 5 && words[5] === 0xffff) {
    return `::ffff:${addr[12]}.${addr[13]}.${addr[14]}.${addr[15]}`;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}

/** Parses `addr/bits`; a bare address is a host prefix (/32 or /128). */
export function parsePrefix(text: string): Prefix | undefined {
  const slash = text.indexOf("/");
  const addr = parseIP(slash < 0 ? text : text.slice(0, slash));
  if (!addr) return undefined;
  const max = addr.length * 8;
  if (slash < 0) return { addr, bits: max };
  const bitsText = text.slice(slash + 1);
  if (!/^[0-9]{1,3}$/.test(bitsText)) return undefined;
  const bits = Number(bitsText);
  if (bits > max) return undefined;
  return { addr, bits };
}

/** The prefix with host bits cleared, as `wg` shows AllowedIPs. */
export function maskPrefix(p: Prefix): Prefix {
  const addr = new Uint8Array(p.addr.length);
  for (let i = 0; i < addr.length; i++) {
    const keep = Math.max(0, Math.min(8, p.bits - 8 * i));
    addr[i] = p.addr[i]! & ((0xff << (8 - keep)) & 0xff);
  }
  return { addr, bits: p.bits };
}

export function formatPrefix(p: Prefix): string {
  return `${formatIP(p.addr)}/${p.bits}`;
}

/** True when `addr` lies inside `p` (families must match). */
export function prefixContains(p: Prefix, addr: IpBytes): boolean {
  if (p.addr.length !== addr.length) return false;
  let bits = p.bits;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((p.addr[i]! & mask) !== (addr[i]! & mask)) return false;
  }
  return true;
}

export function ipEquals(a: IpBytes, b: IpBytes): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** `::ffff:a.b.c.d` → the 4-byte address; anything else unchanged. */
export function unmapIPv4(addr: IpBytes): IpBytes {
  if (addr.length !== 16) return addr;
  for (let i = 0; i < 10; i++) if (addr[i] !== 0) return addr;
  if (addr[10] !== 0xff || addr[11] !== 0xff) return addr;
  return addr.subarray(12, 16);
}

/** Parses `host:port`, `[v6]:port`; the host part may be a name (returned as text). */
export function splitHostPort(text: string): { host: string; port: number } | undefined {
  let host: string, portText: string;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0 || text[close + 1] !== ":") return undefined;
    host = text.slice(1, close);
    portText = text.slice(close + 2);
  } else {
    const colon = text.lastIndexOf(":");
    if (colon <= 0) return undefined;
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(":")) return undefined; // bare IPv6 needs brackets
  }
  if (!/^[0-9]{1,5}$/.test(portText)) return undefined;
  const port = Number(portText);
  if (port > 65535 || host === "") return undefined;
  return { host, port };
}
