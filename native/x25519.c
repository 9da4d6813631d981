/*
 * X25519 (RFC 7748) from a system library found at run time, loaded by
 * core/host/tunnel/udp_native.ts as part of libwgio and used by core/wireguard/x25519_native.ts.
 *
 * Why: the alternatives both cost a wrapped program's first byte. noble builds a base-point table
 * on its first public key (about 16 ms) and spends 1.7-3 ms per shared secret; node:crypto is fast
 * per call, but importing it loads most of Deno's Node compatibility layer, 15-25 ms of a 100 ms
 * start (docs/performance.md, "Cold start"). The helper is loaded anyway, for UDP and the AEAD.
 *
 * Where it comes from, as for aead.c (syslib.c opens the library, with dlopen, so libwgio still
 * needs only libc): libsodium.so.23 (crypto_scalarmult_curve25519*) or OpenSSL's libcrypto.so.3
 * (EVP_PKEY X25519 keys and EVP_PKEY_derive), in the same order of preference.
 *
 * Contract (noble's and node's): 32-byte little-endian scalar and u-coordinate, the scalar clamped
 * and the u-coordinate's top bit ignored as RFC 7748 says; a shared secret of all zeros (a
 * low-order public key) is a failure. Both libraries refuse it themselves (libsodium by its list of
 * low-order points, OpenSSL by checking the output); wgx_shared checks the output again, so the
 * contract does not rest on either. JavaScript checks RFC 7748's vectors at load and drops this
 * backend on any difference.
 */
#define _GNU_SOURCE
#include "syslib.h"

#include <stddef.h>
#include <stdint.h>

#define EXPORT __attribute__((visibility("default")))
#define WGX_KEY 32

/* OpenSSL: include/openssl/evp.h and obj_mac.h. */
#define EVP_PKEY_X25519 1034
typedef struct evp_pkey EVP_PKEY;
typedef struct evp_pkey_ctx EVP_PKEY_CTX;
static struct {
  EVP_PKEY *(*new_private)(int type, void *engine, const uint8_t *key, size_t len);
  EVP_PKEY *(*new_public)(int type, void *engine, const uint8_t *key, size_t len);
  int (*get_public)(const EVP_PKEY *, uint8_t *out, size_t *len);
  void (*free)(EVP_PKEY *);
  EVP_PKEY_CTX *(*ctx_new)(EVP_PKEY *, void *engine);
  void (*ctx_free)(EVP_PKEY_CTX *);
  int (*derive_init)(EVP_PKEY_CTX *);
  int (*derive_set_peer)(EVP_PKEY_CTX *, EVP_PKEY *peer);
  int (*derive)(EVP_PKEY_CTX *, uint8_t *out, size_t *len);
} ossl;

/* libsodium: include/sodium/crypto_scalarmult_curve25519.h. */
static struct {
  int (*init)(void);
  int (*mult)(uint8_t *q, const uint8_t *n, const uint8_t *p);
  int (*mult_base)(uint8_t *q, const uint8_t *n);
} sodium;

static int resolve_libcrypto(void *lib) {
  WG_RESOLVE(lib, ossl.new_private, "EVP_PKEY_new_raw_private_key");
  WG_RESOLVE(lib, ossl.new_public, "EVP_PKEY_new_raw_public_key");
  WG_RESOLVE(lib, ossl.get_public, "EVP_PKEY_get_raw_public_key");
  WG_RESOLVE(lib, ossl.free, "EVP_PKEY_free");
  WG_RESOLVE(lib, ossl.ctx_new, "EVP_PKEY_CTX_new");
  WG_RESOLVE(lib, ossl.ctx_free, "EVP_PKEY_CTX_free");
  WG_RESOLVE(lib, ossl.derive_init, "EVP_PKEY_derive_init");
  WG_RESOLVE(lib, ossl.derive_set_peer, "EVP_PKEY_derive_set_peer");
  WG_RESOLVE(lib, ossl.derive, "EVP_PKEY_derive");
  return 1;
}

static int resolve_libsodium(void *lib) {
  WG_RESOLVE(lib, sodium.init, "sodium_init");
  WG_RESOLVE(lib, sodium.mult, "crypto_scalarmult_curve25519");
  WG_RESOLVE(lib, sodium.mult_base, "crypto_scalarmult_curve25519_base");
  return sodium.init() >= 0;
}

static struct wg_syslib libs = WG_SYSLIB(resolve_libcrypto, resolve_libsodium);

/* Which library the next calls use: 1 libcrypto, 2 libsodium, 0 none (the first call opens it). */
EXPORT int32_t wgx_available(void) { return wg_syslib_choose(&libs); }

/* Switches to `which` if that library can be used; returns the one now in use (for the tests). */
EXPORT int32_t wgx_use(int32_t which) { return wg_syslib_use(&libs, which); }

static int all_zero(const uint8_t *b) {
  uint8_t acc = 0;
  for (int i = 0; i < WGX_KEY; i++) acc |= b[i];
  return acc == 0;
}

static int ossl_public(uint8_t *out, const uint8_t *priv) {
  EVP_PKEY *k = ossl.new_private(EVP_PKEY_X25519, NULL, priv, WGX_KEY);
  if (!k) return -1;
  size_t len = WGX_KEY;
  int ok = ossl.get_public(k, out, &len) == 1 && len == WGX_KEY;
  ossl.free(k);
  return ok ? 0 : -1;
}

static int ossl_shared(uint8_t *out, const uint8_t *priv, const uint8_t *pub) {
  int ok = 0;
  EVP_PKEY *k = ossl.new_private(EVP_PKEY_X25519, NULL, priv, WGX_KEY);
  EVP_PKEY *peer = ossl.new_public(EVP_PKEY_X25519, NULL, pub, WGX_KEY);
  EVP_PKEY_CTX *c = k ? ossl.ctx_new(k, NULL) : NULL;
  size_t len = WGX_KEY;
  if (c && peer && ossl.derive_init(c) == 1 && ossl.derive_set_peer(c, peer) == 1 &&
      ossl.derive(c, out, &len) == 1 && len == WGX_KEY)
    ok = 1;
  if (c) ossl.ctx_free(c);
  if (peer) ossl.free(peer);
  if (k) ossl.free(k);
  return ok ? 0 : -1;
}

/* The public key of `priv` into `out` (32 bytes each). Returns 0, or -1 with no library. */
EXPORT int32_t wgx_public(uint8_t *out, const uint8_t *priv) {
  switch (libs.active) {
  case WG_LIB_LIBCRYPTO:
    return ossl_public(out, priv);
  case WG_LIB_LIBSODIUM:
    return sodium.mult_base(out, priv) == 0 ? 0 : -1;
  default:
    return -1;
  }
}

/*
 * The shared secret of `priv` and `pub` into `out` (32 bytes each). Returns 0; -1 when it is all
 * zeros (a low-order `pub`), when the library refused, or with no library.
 */
EXPORT int32_t wgx_shared(uint8_t *out, const uint8_t *priv, const uint8_t *pub) {
  int rc;
  switch (libs.active) {
  case WG_LIB_LIBCRYPTO:
    rc = ossl_shared(out, priv, pub);
    break;
  case WG_LIB_LIBSODIUM:
    rc = sodium.mult(out, priv, pub) == 0 ? 0 : -1;
    break;
  default:
    return -1;
  }
  return rc == 0 && !all_zero(out) ? 0 : -1;
}
