// The fast X25519 backends (the helper's, from libsodium and from libcrypto, and node:crypto)
// against noble, the reference: same public keys, same shared secrets, the same refusals, on
// RFC 7748's vectors and on random and hostile inputs.
import assert from "node:assert/strict";
import { udpHelper } from "../core/host/tunnel/udp_native.ts";
import { dh } from "../core/wireguard/crypto.ts";
import {
  agreesWithRfc7748,
  nodeX25519,
  type X25519Backend,
  x25519Backend,
} from "../core/wireguard/x25519.ts";
import { nobleX25519 } from "../core/wireguard/x25519_noble.ts";
import { nativeX25519, NativeX25519Libraries } from "../core/wireguard/x25519_native.ts";

const hex = (s: string) => Uint8Array.from(s.match(/../g)!, (b) => parseInt(b, 16));
const random = (n: number) => crypto.getRandomValues(new Uint8Array(n));

/** The result, or the fact that it threw: the two backends must agree on both. */
function outcome(f: () => Uint8Array): string {
  try {
    return Array.from(f(), (b) => b.toString(16).padStart(2, "0")).join("");
  } catch {
    return "throws";
  }
}

const helper = await udpHelper();
const lib = helper.lib;
const LibCrypto = 1, LibSodium = 2;

/** The helper's X25519 with `which` library active, for `f`; then the previous one again. */
function withLibrary<T>(which: number, f: (b: X25519Backend) => T): T {
  if (!lib) throw new Error(`no helper: ${helper.reason}`);
  const before = lib.wgx_available();
  assert.equal(lib.wgx_use(which), which, `${NativeX25519Libraries[which]} did not load`);
  try {
    return f(nativeX25519(lib));
  } finally {
    lib.wgx_use(before);
  }
}

/** Every fast backend this machine has, by name (CI installs both libraries). */
const fast: [string, (f: (b: X25519Backend) => void) => void][] = [
  ["node:crypto", (f) => f(nodeX25519)],
  ["native libsodium", (f) => withLibrary(LibSodium, f)],
  ["native libcrypto", (f) => withLibrary(LibCrypto, f)],
];

Deno.test("every backend reproduces RFC 7748, and the helper's is the one in use here", () => {
  assert.equal(agreesWithRfc7748(nobleX25519), true);
  for (const [name, use] of fast) use((b) => assert.equal(agreesWithRfc7748(b), true, name));
  assert.equal(helper.x25519?.library, NativeX25519Libraries[lib!.wgx_available()]);
  assert.equal(x25519Backend().name, "native");
});

Deno.test("the load check refuses a backend that is wrong on any of its vectors", () => {
  const wrongPublic: X25519Backend = {
    name: "node",
    publicKey: (k) => {
      const p = nodeX25519.publicKey(k);
      p[0]! ^= 1;
      return p;
    },
    shared: nodeX25519.shared,
  };
  const acceptsLowOrder: X25519Backend = {
    name: "node",
    publicKey: nodeX25519.publicKey,
    shared: (k, p) => p.every((b) => b === 0) ? new Uint8Array(32) : nodeX25519.shared(k, p),
  };
  const throwing: X25519Backend = {
    name: "node",
    publicKey: () => {
      throw new Error("no X25519 here");
    },
    shared: nodeX25519.shared,
  };
  for (const b of [wrongPublic, acceptsLowOrder, throwing]) {
    assert.equal(agreesWithRfc7748(b), false);
  }
});

for (const [name, use] of fast) {
  Deno.test(`${name}: public keys and shared secrets equal noble's for 300 random keys`, () => {
    use((x) => {
      for (let i = 0; i < 300; i++) {
        // Raw random bytes, not clamped: both clamp as RFC 7748 5 says.
        const a = random(32), b = random(32);
        const pa = x.publicKey(a), pb = x.publicKey(b);
        assert.deepEqual(pa, nobleX25519.publicKey(a));
        assert.deepEqual(pb, nobleX25519.publicKey(b));
        const s = x.shared(a, pb);
        assert.deepEqual(s, nobleX25519.shared(a, pb));
        assert.deepEqual(x.shared(b, pa), s);
      }
    });
  });
}

Deno.test("random and non-canonical public keys: the same secret or the same refusal", () => {
  const p = (1n << 255n) - 19n;
  const le = (n: bigint) => {
    const out = new Uint8Array(32);
    for (let i = 0; i < 32; i++) out[i] = Number((n >> BigInt(8 * i)) & 0xffn);
    return out;
  };
  const hostile = [
    new Uint8Array(32), // 0
    le(1n),
    le(p - 1n),
    le(p),
    le(p + 1n),
    le((1n << 255n) - 1n), // above p, high bit clear
    hex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"), // order 8
    hex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"), // order 8
  ];
  for (let i = 0; i < 200; i++) {
    const u = random(32);
    if (i % 2) u[31]! |= 0x80; // RFC 7748 5: the high bit is masked, not an error
    hostile.push(u);
  }
  for (const [name, use] of fast) {
    use((x) => {
      for (const u of hostile) {
        const k = random(32);
        assert.equal(outcome(() => x.shared(k, u)), outcome(() => nobleX25519.shared(k, u)), name);
      }
    });
  }
});

Deno.test("dh() says undefined for low-order points with either backend, as peers require", () => {
  const k = random(32);
  const low = [
    new Uint8Array(32),
    hex("0100000000000000000000000000000000000000000000000000000000000000"),
    hex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
  ];
  for (const u of low) assert.equal(dh(k, u), undefined);
});

Deno.test("wrong key lengths are refused, not truncated", () => {
  for (const [name, use] of fast) {
    use((x) => {
      assert.throws(() => x.publicKey(new Uint8Array(31)), RangeError, name);
      assert.throws(() => x.shared(random(32), new Uint8Array(33)), RangeError, name);
    });
  }
});
