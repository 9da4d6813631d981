/*
 * X25519 (RFC 7748) from a system library found at run time, loaded by
 * core/host/tunnel/udp_native.ts as part of libwgio and used by core/wireguard/x25519_native.ts.
 *
 * Why: the alternatives both cost a wrapped program's first byte. noble builds a base-point table
 * on its first public key (about 16 ms) and spends 1.7-3 ms per shared secret; node:crypto is fast
 * per call, but importing it loads most of Deno's Node compatibility layer, 15-25 ms of a 100 ms
 * start (docs/performance.md, "Cold start"). The helper is loaded anyway, for UDP and the AEAD.
 *
 * Where it comes from, as in aead.c (and opened the same way, with dlopen, so libwgio still needs
 * only libc): libsodium.so.23 (crypto_scalarmult_curve25519*) or OpenSSL's libcrypto.so.3 (EVP_PKEY
 * X25519 keys and EVP_PKEY_derive). On x86_64 libsodium comes first, elsewhere libcrypto, the same
 * order as the AEAD's.
 *
 * Contract (noble's and node's): 32-byte little-endian scalar and u-coordinate, the scalar clamped
 * and the u-coordinate's top bit ignored as RFC 7748 says; a shared secret of all zeros (a
 * low-order public key) is a failure. Both libraries refuse it themselves (libsodium by its list of
 * low-order points, OpenSSL by checking the output); wgx_shared checks the output again, so the
 * contract does not rest on either. JavaScript checks RFC 7748's vectors at load and drops this
 * backend on any difference.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define EXPORT __attribute__((visibility("default")))
#define WGX_NONE 0
#define WGX_LIBCRYPTO 1
#define WGX_LIBSODIUM 2
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

static int have_libcrypto, have_libsodium;
static int active = WGX_NONE;
static pthread_once_t loaded = PTHREAD_ONCE_INIT;

#define RESOLVE(lib, field, name)                                                                  \
  if (!(*(void **)&field = dlsym(lib, name))) return 0

static int resolve_libcrypto(void *lib) {
  RESOLVE(lib, ossl.new_private, "EVP_PKEY_new_raw_private_key");
  RESOLVE(lib, ossl.new_public, "EVP_PKEY_new_raw_public_key");
  RESOLVE(lib, ossl.get_public, "EVP_PKEY_get_raw_public_key");
  RESOLVE(lib, ossl.free, "EVP_PKEY_free");
  RESOLVE(lib, ossl.ctx_new, "EVP_PKEY_CTX_new");
  RESOLVE(lib, ossl.ctx_free, "EVP_PKEY_CTX_free");
  RESOLVE(lib, ossl.derive_init, "EVP_PKEY_derive_init");
  RESOLVE(lib, ossl.derive_set_peer, "EVP_PKEY_derive_set_peer");
  RESOLVE(lib, ossl.derive, "EVP_PKEY_derive");
  return 1;
}

static int resolve_libsodium(void *lib) {
  RESOLVE(lib, sodium.init, "sodium_init");
  RESOLVE(lib, sodium.mult, "crypto_scalarmult_curve25519");
  RESOLVE(lib, sodium.mult_base, "crypto_scalarmult_curve25519_base");
  return sodium.init() >= 0;
}

static pthread_once_t crypto_once = PTHREAD_ONCE_INIT, sodium_once = PTHREAD_ONCE_INIT;

// Each library stays open for the life of the process once loaded, as libwgio itself does.
static void load_libcrypto(void) {
  void *lib = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
  if (lib && !(have_libcrypto = resolve_libcrypto(lib))) dlclose(lib);
}

static void load_libsodium(void) {
  void *lib = dlopen("libsodium.so.23", RTLD_NOW | RTLD_LOCAL);
  if (lib && !(have_libsodium = resolve_libsodium(lib))) dlclose(lib);
}

/* The preferred library, and the other only if that one is missing: opening libcrypto.so.3 and
 * setting up its cipher is about 2 ms of every start, for a library not used where libsodium is
 * (docs/performance.md, "Cold start"). wgx_use loads the other when asked for it. */
static void load(void) {
#if defined(__x86_64__)
  pthread_once(&sodium_once, load_libsodium);
  if (!have_libsodium) pthread_once(&crypto_once, load_libcrypto);
  active = have_libsodium ? WGX_LIBSODIUM : have_libcrypto ? WGX_LIBCRYPTO : WGX_NONE;
#else
  pthread_once(&crypto_once, load_libcrypto);
  if (!have_libcrypto) pthread_once(&sodium_once, load_libsodium);
  active = have_libcrypto ? WGX_LIBCRYPTO : have_libsodium ? WGX_LIBSODIUM : WGX_NONE;
#endif
}

/* Which library the next calls use: 1 libcrypto, 2 libsodium, 0 none (first call loads them). */
EXPORT int32_t wgx_available(void) {
  pthread_once(&loaded, load);
  return active;
}

/* Switches to `which` if that library loaded; returns the one now in use (for the tests). */
EXPORT int32_t wgx_use(int32_t which) {
  pthread_once(&loaded, load);
  if (which == WGX_LIBCRYPTO) pthread_once(&crypto_once, load_libcrypto);
  if (which == WGX_LIBSODIUM) pthread_once(&sodium_once, load_libsodium);
  if ((which == WGX_LIBCRYPTO && have_libcrypto) || (which == WGX_LIBSODIUM && have_libsodium))
    active = which;
  return active;
}

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
  switch (active) {
  case WGX_LIBCRYPTO:
    return ossl_public(out, priv);
  case WGX_LIBSODIUM:
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
  switch (active) {
  case WGX_LIBCRYPTO:
    rc = ossl_shared(out, priv, pub);
    break;
  case WGX_LIBSODIUM:
    rc = sodium.mult(out, priv, pub) == 0 ? 0 : -1;
    break;
  default:
    return -1;
  }
  return rc == 0 && !all_zero(out) ? 0 : -1;
}
