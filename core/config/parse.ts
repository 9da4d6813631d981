/**
 * Reads the wg-quick configuration format the way wg-quick(8) and wg(8) read it: `[Interface]`
 * and `[Peer]` sections, `Key = Value` lines, `#` comments, names matched without regard to case.
 * The keys wg-quick handles itself (`Address`, `DNS`, `MTU`) and those it passes to `wg setconf`
 * (`PrivateKey`, `ListenPort`, `PublicKey`, `Endpoint`, …) are understood, plus wrapguard's own
 * `Route`. Keys that only make sense for a kernel interface are accepted with a warning.
 *
 * Where wg and wg-quick are lenient in ways that hide mistakes, this parser is stricter, and says
 * so in its message: a second `[Interface]`, a peer without a key, two peers with the same key,
 * and a peer whose key is our own are errors rather than silently merged or ignored.
 *
 * @module
 */
import {
  formatPrefix,
  type IpBytes,
  maskPrefix,
  parseIP,
  parseIPv4,
  parseIPv6,
  parsePrefix,
  type Prefix,
  prefixContains,
  splitHostPort,
} from "../wire/addr.ts";
import { decodeKey, isZeroKey, keysEqual, publicKeyOf, redactSecret } from "../wireguard/keys.ts";
import { ConfigError } from "./errors.ts";
import type { Config, ConfigWarning, PeerConfig, RouteRule } from "./types.ts";

/** Options for {@link parseConfig}. */
export interface ParseOptions {
  /** Name used in error messages; `<config>` by default. */
  file?: string;
}

/** Smallest MTU accepted: RFC 791 requires every IPv4 host to take 576-byte datagrams. */
export const MIN_MTU = 576;
/** Smallest MTU with an IPv6 address: RFC 8200 (5) requires every IPv6 link to carry 1280. */
export const MIN_MTU_IPV6 = 1280;
/** Largest MTU accepted: the largest IPv4 or IPv6 (non-jumbogram) packet. */
export const MAX_MTU = 65535;

/** wg-quick's own keys in [Interface] that a wrapped program has no use for, and why. */
const NO_EFFECT: Record<string, string> = {
  preup: "PreUp",
  postup: "PostUp",
  predown: "PreDown",
  postdown: "PostDown",
  table: "Table",
  saveconfig: "SaveConfig",
  fwmark: "FwMark",
};
const NO_EFFECT_REASON: Record<string, string> = {
  PreUp: "there is no interface to bring up, so the command is not run",
  PostUp: "there is no interface to bring up, so the command is not run",
  PreDown: "there is no interface to take down, so the command is not run",
  PostDown: "there is no interface to take down, so the command is not run",
  Table: "no kernel routes are installed; AllowedIPs and Route decide what uses the tunnel",
  SaveConfig: "wrapguard never writes the config file",
  FwMark: "wrapguard's UDP socket is not marked",
};

const INTERFACE_KEYS: Record<string, string> = {
  privatekey: "PrivateKey",
  address: "Address",
  listenport: "ListenPort",
  dns: "DNS",
  mtu: "MTU",
};
const PEER_KEYS: Record<string, string> = {
  publickey: "PublicKey",
  presharedkey: "PresharedKey",
  endpoint: "Endpoint",
  allowedips: "AllowedIPs",
  persistentkeepalive: "PersistentKeepalive",
  route: "Route",
};

/** A peer while its section is read: the result plus the lines things came from. */
interface PeerDraft {
  peer: PeerConfig;
  /** Line of the PublicKey that counted (the last one). */
  publicKeyLine: number;
  /** Line of each AllowedIPs entry, same order as `peer.allowedIPs`. */
  allowedIPLines: number[];
  routeLines: number[];
  seen: Map<string, number>;
}

/**
 * Parses wg-quick text into a {@link Config}. Throws {@link ConfigError} naming the file and line
 * of the first problem.
 *
 * @example
 * ```ts
 * import { parseConfig } from "./parse.ts";
 * const config = parseConfig(`
 * [Interface]
 * PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
 * Address = 10.0.0.2/24
 *
 * [Peer]
 * PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
 * AllowedIPs = 10.0.0.0/24
 * Route = 192.168.1.0/24:tcp:443
 * `, { file: "wg0.conf" });
 * if (config.peers[0]!.routes[0]!.port !== 443) throw new Error();
 * ```
 */
export function parseConfig(text: string, options: ParseOptions = {}): Config {
  const file = options.file ?? "<config>";
  const fail: (line: number, reason: string) => never = (line, reason) => {
    throw new ConfigError(file, line, reason);
  };
  const warnings: ConfigWarning[] = [];

  let interfaceLine = 0;
  let privateKey: Uint8Array | undefined;
  const addresses: Prefix[] = [];
  let listenPort: number | undefined;
  const dns: { servers: IpBytes[]; search: string[] } = { servers: [], search: [] };
  let mtu: number | undefined;
  let mtuLine = 0;
  const interfaceSeen = new Map<string, number>();
  const drafts: PeerDraft[] = [];
  let section: "none" | "interface" | "peer" = "none";

  /** wg uses the last of a repeated single-valued key; say so, since it is usually a mistake. */
  const noteRepeat = (seen: Map<string, number>, key: string, line: number) => {
    const first = seen.get(key);
    if (first !== undefined) {
      warnings.push({
        line,
        key,
        message: `${key} is given again (line ${first} set it first); the later value is used`,
      });
    }
    seen.set(key, line);
  };

  const lines = text.replace(/^\uFEFF/, "").split("\n");
  for (let i = 0; i < lines.length; i++) {
    const n = i + 1;
    const raw = lines[i]!;
    const hash = raw.indexOf("#");
    const line = (hash < 0 ? raw : raw.slice(0, hash)).trim();
    if (line === "") continue;

    if (line.startsWith("[")) {
      const name = line.toLowerCase();
      if (name === "[interface]") {
        if (interfaceLine) {
          fail(n, `a second [Interface] section (the first is on line ${interfaceLine})`);
        }
        interfaceLine = n;
        section = "interface";
      } else if (name === "[peer]") {
        section = "peer";
        drafts.push({
          peer: { publicKey: new Uint8Array(0), allowedIPs: [], routes: [], line: n },
          publicKeyLine: 0,
          allowedIPLines: [],
          routeLines: [],
          seen: new Map(),
        });
      } else {
        fail(n, `unknown section ${line}; expected [Interface] or [Peer]`);
      }
      continue;
    }

    const eq = line.indexOf("=");
    if (eq < 0) {
      // Name only the leading word: the rest may be a key pasted without "PrivateKey =".
      const word = /^[A-Za-z]{1,32}(?=\s|$)/.exec(line)?.[0];
      fail(
        n,
        `expected "Key = Value", found a line without "="${word ? ` starting "${word}"` : ""}`,
      );
    }
    const rawKey = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    const lower = rawKey.toLowerCase();

    if (section === "none") {
      fail(n, `${rawKey} is outside a section; put it under [Interface] or [Peer]`);
    } else if (section === "interface") {
      const key = INTERFACE_KEYS[lower];
      const ignored = NO_EFFECT[lower];
      if (ignored) {
        warnings.push({
          line: n,
          key: ignored,
          message: `${ignored} has no effect in wrapguard: ${NO_EFFECT_REASON[ignored]}`,
        });
      } else if (key === "PrivateKey") {
        noteRepeat(interfaceSeen, key, n);
        const k = parseKey(value);
        if (typeof k === "string") fail(n, `PrivateKey ${k}`);
        if (isZeroKey(k)) fail(n, "PrivateKey is all zeros, which wg treats as no key");
        privateKey = redactSecret(k);
      } else if (key === "Address") {
        for (const entry of splitList(value)) {
          const p = parsePrefix(entry);
          if (!p) {
            fail(n, `Address "${entry}" is not an IP address with an optional /prefix length`);
          }
          addresses.push(p);
        }
      } else if (key === "ListenPort") {
        noteRepeat(interfaceSeen, key, n);
        const port = parsePort(value);
        if (port === undefined) {
          fail(n, `ListenPort must be a number from 0 to 65535, found "${value}"`);
        }
        listenPort = port;
      } else if (key === "DNS") {
        for (const entry of splitList(value)) {
          // wg-quick's test: digits and dots, or anything with a colon, is a server address.
          if (/^[0-9.]+$/.test(entry) || entry.includes(":")) {
            const ip = parseIP(entry);
            if (!ip) fail(n, `DNS server "${entry}" is not an IP address`);
            dns.servers.push(ip);
          } else if (isHostname(entry)) {
            dns.search.push(entry);
          } else {
            fail(n, `DNS entry "${entry}" is neither an IP address nor a search domain`);
          }
        }
      } else if (key === "MTU") {
        noteRepeat(interfaceSeen, key, n);
        // wg-quick treats an empty MTU as unset and picks one itself.
        if (value === "") {
          mtu = undefined;
          continue;
        }
        const m = /^[0-9]{1,5}$/.test(value) ? Number(value) : NaN;
        if (!(m >= MIN_MTU && m <= MAX_MTU)) {
          fail(n, `MTU must be a number from ${MIN_MTU} to ${MAX_MTU}, found "${value}"`);
        }
        mtu = m;
        mtuLine = n;
      } else if (PEER_KEYS[lower]) {
        fail(n, `${PEER_KEYS[lower]} belongs in a [Peer] section, not [Interface]`);
      } else {
        fail(n, `unknown key "${rawKey}" in [Interface]`);
      }
    } else {
      const draft = drafts[drafts.length - 1]!;
      const peer = draft.peer;
      const key = PEER_KEYS[lower];
      if (key === "PublicKey") {
        noteRepeat(draft.seen, key, n);
        const k = parseKey(value);
        if (typeof k === "string") fail(n, `PublicKey ${k}`);
        peer.publicKey = k;
        draft.publicKeyLine = n;
      } else if (key === "PresharedKey") {
        noteRepeat(draft.seen, key, n);
        const k = parseKey(value);
        if (typeof k === "string") fail(n, `PresharedKey ${k}`);
        peer.presharedKey = redactSecret(k);
      } else if (key === "Endpoint") {
        noteRepeat(draft.seen, key, n);
        const ep = parseEndpoint(value);
        if (typeof ep === "string") fail(n, ep);
        peer.endpoint = ep;
      } else if (key === "AllowedIPs") {
        // wg accepts an empty value (no addresses) but not an empty entry in a list.
        if (value === "") continue;
        for (const entry of value.split(",").map((s) => s.trim())) {
          const p = parsePrefix(entry);
          if (!p) fail(n, `AllowedIPs entry "${entry}" is not an IP address or CIDR prefix`);
          const masked = maskPrefix(p);
          if (peer.allowedIPs.some((q) => samePrefix(q, masked))) continue;
          peer.allowedIPs.push(masked);
          draft.allowedIPLines.push(n);
        }
      } else if (key === "PersistentKeepalive") {
        noteRepeat(draft.seen, key, n);
        const seconds = value.toLowerCase() === "off" ? 0 : parsePort(value);
        if (seconds === undefined) {
          fail(
            n,
            `PersistentKeepalive must be off or a number of seconds from 0 to 65535, found "${value}"`,
          );
        }
        if (seconds) peer.persistentKeepalive = seconds;
        else delete peer.persistentKeepalive;
      } else if (key === "Route") {
        for (const entry of splitList(value)) {
          const r = parseRoute(entry);
          if (typeof r === "string") fail(n, r);
          peer.routes.push(r);
          draft.routeLines.push(n);
        }
      } else if (INTERFACE_KEYS[lower] || NO_EFFECT[lower]) {
        const name = INTERFACE_KEYS[lower] ?? NO_EFFECT[lower];
        fail(n, `${name} belongs in the [Interface] section, not [Peer]`);
      } else {
        fail(n, `unknown key "${rawKey}" in [Peer]`);
      }
    }
  }

  if (!interfaceLine) fail(0, "no [Interface] section");
  if (!privateKey) fail(interfaceLine, "[Interface] has no PrivateKey");
  const ownPublic = publicKeyOf(privateKey!);
  if (mtu !== undefined && mtu < MIN_MTU_IPV6 && addresses.some((a) => a.addr.length === 16)) {
    fail(
      mtuLine,
      `MTU ${mtu} is below ${MIN_MTU_IPV6}, the minimum for the IPv6 address configured`,
    );
  }

  for (let i = 0; i < drafts.length; i++) {
    const d = drafts[i]!;
    if (!d.publicKeyLine) fail(d.peer.line, "[Peer] has no PublicKey");
    if (keysEqual(d.peer.publicKey, ownPublic)) {
      fail(d.publicKeyLine, "PublicKey is this interface's own public key (from its PrivateKey)");
    }
    for (let j = 0; j < i; j++) {
      const e = drafts[j]!;
      if (keysEqual(e.peer.publicKey, d.peer.publicKey)) {
        fail(d.publicKeyLine, `PublicKey is the same as the peer on line ${e.peer.line}`);
      }
    }
  }

  // As in wg, a prefix belongs to one peer: the one that names it last.
  for (let i = 0; i < drafts.length; i++) {
    const earlier = drafts[i]!;
    for (let k = earlier.peer.allowedIPs.length - 1; k >= 0; k--) {
      const p = earlier.peer.allowedIPs[k]!;
      for (let j = drafts.length - 1; j > i; j--) {
        const later = drafts[j]!;
        const at = later.peer.allowedIPs.findIndex((q) => samePrefix(q, p));
        if (at < 0) continue;
        warnings.push({
          line: later.allowedIPLines[at]!,
          key: "AllowedIPs",
          message: `${formatPrefix(p)} is also in AllowedIPs of the peer on line ` +
            `${earlier.peer.line}; as in wg, only this later peer gets it`,
        });
        earlier.peer.allowedIPs.splice(k, 1);
        earlier.allowedIPLines.splice(k, 1);
        break;
      }
    }
  }

  // WireGuard drops packets from a peer whose source is outside its AllowedIPs, so replies to
  // routed traffic only come back when the route lies inside them.
  for (const d of drafts) {
    d.peer.routes.forEach((r, k) => {
      const covered = d.peer.allowedIPs.some((a) =>
        a.addr.length === r.prefix.addr.length && a.bits <= r.prefix.bits &&
        prefixContains(a, r.prefix.addr)
      );
      if (!covered) {
        warnings.push({
          line: d.routeLines[k]!,
          key: "Route",
          message: `Route ${formatPrefix(r.prefix)} is not inside one of this peer's ` +
            `AllowedIPs; replies from it will be dropped by cryptokey routing`,
        });
      }
    });
  }

  warnings.sort((a, b) => a.line - b.line);
  const iface: Config["interface"] = { privateKey: privateKey!, addresses, dns };
  if (listenPort !== undefined) iface.listenPort = listenPort;
  if (mtu !== undefined) iface.mtu = mtu;
  return { interface: iface, peers: drafts.map((d) => d.peer), warnings };
}

/** wg-quick splits Address and DNS on commas and whitespace and skips empty entries. */
function splitList(value: string): string[] {
  return value.split(/[\s,]+/).filter((s) => s !== "");
}

/** A key, or the end of the error sentence "PublicKey …". Never echoes the (maybe secret) text. */
function parseKey(value: string): Uint8Array | string {
  const key = decodeKey(value);
  if (key) return key;
  return value.length === 44
    ? "is not 32 bytes of base64 (the text is 44 characters but not a valid key)"
    : `is not 32 bytes of base64 (expected 44 characters as wg genkey prints, found ${value.length})`;
}

/** A decimal 0..65535, no sign, no spaces. */
function parsePort(value: string): number | undefined {
  if (!/^[0-9]{1,5}$/.test(value)) return undefined;
  const n = Number(value);
  return n <= 65535 ? n : undefined;
}

/** A DNS name: labels of letters, digits, `-` and `_`, at most 63 each, 253 in all. */
function isHostname(text: string): boolean {
  const name = text.endsWith(".") ? text.slice(0, -1) : text;
  if (name.length === 0 || name.length > 253) return false;
  return name.split(".").every((l) => /^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/.test(l));
}

function parseEndpoint(value: string): { host: string; port: number } | string {
  const hp = splitHostPort(value);
  if (!hp) {
    if (value === "") return "Endpoint is empty; expected host:port";
    if (!value.startsWith("[") && value.indexOf(":") !== value.lastIndexOf(":")) {
      return `Endpoint "${value}" looks like an IPv6 address; write it as [address]:port`;
    }
    return `Endpoint "${value}" is not host:port with a port from 1 to 65535`;
  }
  if (hp.port === 0) return `Endpoint "${value}" has port 0; expected 1 to 65535`;
  if (value.startsWith("[")) {
    if (!parseIPv6(hp.host)) return `Endpoint "${value}" has an invalid IPv6 address in brackets`;
  } else if (/^[0-9.]+$/.test(hp.host)) {
    if (!parseIPv4(hp.host)) return `Endpoint "${value}" has an invalid IPv4 address`;
  } else if (!isHostname(hp.host)) {
    return `Endpoint "${value}" has a host that is neither an IP address nor a DNS name`;
  }
  return hp;
}

/**
 * `CIDR[:tcp|udp[:port]]`. With a `/bits` the prefix ends after the digits, so `fd00::/64:tcp:443`
 * splits cleanly; without one, an IPv4 address ends at the first colon, and an IPv6 address can only
 * stand alone.
 */
function parseRoute(text: string): RouteRule | string {
  const usage = "expected CIDR[:tcp|udp[:port]]";
  let prefixText: string, rest: string;
  const slash = text.indexOf("/");
  if (slash >= 0) {
    const digits = /^[0-9]*/.exec(text.slice(slash + 1))![0];
    prefixText = text.slice(0, slash + 1 + digits.length);
    rest = text.slice(prefixText.length);
  } else if (parseIP(text)) {
    prefixText = text;
    rest = "";
  } else {
    const colon = text.indexOf(":");
    prefixText = colon < 0 ? text : text.slice(0, colon);
    rest = colon < 0 ? "" : text.slice(colon);
    if (!parseIPv4(prefixText) && text.split(":").length > 2) {
      return `Route "${text}": write an IPv6 route with its /prefix length before the protocol, ` +
        `as in fd00::1/128:tcp`;
    }
  }
  const parsed = parsePrefix(prefixText);
  if (!parsed) return `Route "${text}" does not start with an IP address or CIDR prefix; ${usage}`;
  const prefix = maskPrefix(parsed);
  if (rest === "") return { prefix };
  const parts = rest.slice(1).split(":");
  const protocol = parts[0]!.toLowerCase();
  if (!rest.startsWith(":") || (protocol !== "tcp" && protocol !== "udp") || parts.length > 2) {
    return `Route "${text}": ${usage}`;
  }
  if (parts.length === 1) return { prefix, protocol };
  const port = parsePort(parts[1]!);
  if (!port) return `Route "${text}" has a bad port; expected 1 to 65535`;
  return { prefix, protocol, port };
}

function samePrefix(a: Prefix, b: Prefix): boolean {
  return a.bits === b.bits && a.addr.length === b.addr.length &&
    a.addr.every((byte, i) => byte === b.addr[i]);
}
