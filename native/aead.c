/*
 * ChaCha20-Poly1305 (RFC 8439) for the transport path, from a system library found at run time,
 * loaded by core/host/tunnel/udp_native.ts as part of libwgio and used by
 * core/wireguard/aead_native.ts.
 *
 * Why: node:crypto makes a cipher object, an output Buffer and a tag Buffer per packet, about a
 * fifth of the engine's CPU (docs/performance.md). Here a packet is one FFI call with no
 * allocation: the caller's bytes are sealed or opened where they lie.
 *
 * Where the cipher comes from (the first call to wgc_available() opens the preferred one, and the
 * other only if that fails):
 *   1 OpenSSL's libcrypto.so.3, EVP "chacha20-poly1305": one EVP_CIPHER_CTX per thread and
 *     direction, made once and re-keyed and re-nonced per call;
 *   2 libsodium.so.23, crypto_aead_chacha20poly1305_ietf_*_detached, which keeps no state.
 * On x86_64 libsodium is used when both are there: bench/aead.ts on our machines has them equal at
 * 1420 bytes (1.2-1.3 us per seal or open) but libsodium 2.5x faster at 64 bytes (0.3 against 0.8
 * us; EVP's re-initialisation is most of OpenSSL's cost on a small packet), and a tunnel carrying
 * bulk data sends or receives a small ACK for every two full packets. Elsewhere libcrypto comes
 * first: libsodium has SIMD ChaCha20 and Poly1305 only for x86 (not measured here).
 * Both are opened with dlopen, not linked: libwgio still needs only libc, so UDP keeps working
 * where neither library is installed (wgc_available() then returns 0 and JavaScript uses
 * node:crypto or noble). No OpenSSL or libsodium header is needed to build, for either
 * architecture: the few prototypes and constants used are declared below, as both libraries
 * document them (their ABI is stable across the .so version named).
 *
 * Contract (the same as noble's, see aead_node.ts): 12-byte nonce, 16-byte tag appended after the
 * ciphertext, `out` may be `in` itself (in place), and wgc_open writes nothing to `out` when the
 * tag does not verify. Neither library keeps that last promise by itself (OpenSSL decrypts before
 * it checks the tag; libsodium checks first but zeroes the output on failure), so an open goes
 * into a per-thread scratch buffer (grown when needed, never allocated per packet) and is copied
 * to `out` only once the tag verified.
 *
 * JavaScript checks the result against noble at load and drops this backend on any difference.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))
#define WGC_TAG 16
#define WGC_NONE 0
#define WGC_LIBCRYPTO 1
#define WGC_LIBSODIUM 2

/* OpenSSL: include/openssl/evp.h. */
#define EVP_CTRL_AEAD_GET_TAG 0x10
#define EVP_CTRL_AEAD_SET_TAG 0x11
typedef struct evp_cipher_ctx EVP_CIPHER_CTX;
typedef struct evp_cipher EVP_CIPHER;
static struct {
  EVP_CIPHER_CTX *(*ctx_new)(void);
  const EVP_CIPHER *(*chacha20_poly1305)(void);
  int (*init)(EVP_CIPHER_CTX *, const EVP_CIPHER *, void *engine, const uint8_t *key,
              const uint8_t *iv, int enc);
  int (*update)(EVP_CIPHER_CTX *, uint8_t *out, int *outl, const uint8_t *in, int inl);
  int (*final)(EVP_CIPHER_CTX *, uint8_t *out, int *outl);
  int (*ctrl)(EVP_CIPHER_CTX *, int type, int arg, void *ptr);
} ossl;

/* libsodium: include/sodium/crypto_aead_chacha20poly1305.h. */
static struct {
  int (*init)(void);
  int (*seal)(uint8_t *c, uint8_t *mac, unsigned long long *maclen, const uint8_t *m,
              unsigned long long mlen, const uint8_t *ad, unsigned long long adlen,
              const uint8_t *nsec, const uint8_t *npub, const uint8_t *k);
  int (*open)(uint8_t *m, uint8_t *nsec, const uint8_t *c, unsigned long long clen,
              const uint8_t *mac, const uint8_t *ad, unsigned long long adlen,
              const uint8_t *npub, const uint8_t *k);
} sodium;

static int have_libcrypto, have_libsodium;
static int active = WGC_NONE;
static pthread_once_t loaded = PTHREAD_ONCE_INIT;

#define RESOLVE(lib, field, name)                                                                  \
  if (!(*(void **)&field = dlsym(lib, name))) return 0

static EVP_CIPHER_CTX *context(int enc);

static int resolve_libcrypto(void *lib) {
  RESOLVE(lib, ossl.ctx_new, "EVP_CIPHER_CTX_new");
  RESOLVE(lib, ossl.chacha20_poly1305, "EVP_chacha20_poly1305");
  RESOLVE(lib, ossl.init, "EVP_CipherInit_ex");
  RESOLVE(lib, ossl.update, "EVP_CipherUpdate");
  RESOLVE(lib, ossl.final, "EVP_CipherFinal_ex");
  RESOLVE(lib, ossl.ctrl, "EVP_CIPHER_CTX_ctrl");
  // This thread's two contexts now, while the helper loads: OpenSSL's own first-use set-up
  // (configuration, provider) happens here, not at the first packet, after any sandboxing.
  return ossl.chacha20_poly1305() != NULL && context(0) != NULL && context(1) != NULL;
}

static int resolve_libsodium(void *lib) {
  RESOLVE(lib, sodium.init, "sodium_init");
  RESOLVE(lib, sodium.seal, "crypto_aead_chacha20poly1305_ietf_encrypt_detached");
  RESOLVE(lib, sodium.open, "crypto_aead_chacha20poly1305_ietf_decrypt_detached");
  return sodium.init() >= 0; // 1 means "already initialised", also fine
}

/* Each library is opened at most once; it stays open for the life of the process, as libwgio does. */
static int tried_libcrypto, tried_libsodium;

static void open_libcrypto(void) {
  if (tried_libcrypto) return;
  tried_libcrypto = 1;
  void *lib = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
  if (lib && !(have_libcrypto = resolve_libcrypto(lib))) dlclose(lib);
}

static void open_libsodium(void) {
  if (tried_libsodium) return;
  tried_libsodium = 1;
  void *lib = dlopen("libsodium.so.23", RTLD_NOW | RTLD_LOCAL);
  if (lib && !(have_libsodium = resolve_libsodium(lib))) dlclose(lib);
}

/*
 * Only the preferred library is opened, the other one only when it is missing (or when wgc_use
 * asks for it): opening and initialising libcrypto alone costs about 3.3 MB of resident memory,
 * a twentieth of an idle tunnel's (docs/performance.md, "Memory per idle connection").
 */
static void load(void) {
#if defined(__x86_64__)
  open_libsodium();
  if (!have_libsodium) open_libcrypto();
  active = have_libsodium ? WGC_LIBSODIUM : have_libcrypto ? WGC_LIBCRYPTO : WGC_NONE;
#else
  open_libcrypto();
  if (!have_libcrypto) open_libsodium();
  active = have_libcrypto ? WGC_LIBCRYPTO : have_libsodium ? WGC_LIBSODIUM : WGC_NONE;
#endif
}

/* Which library the next calls use: 1 libcrypto, 2 libsodium, 0 none (first call loads them). */
EXPORT int32_t wgc_available(void) {
  pthread_once(&loaded, load);
  return active;
}

/*
 * Switches to `which` (1 or 2), opening it first if that was not tried yet, if it loaded; returns
 * the one now in use. For the tests, which hold both to noble, and for bench/aead.ts; not for
 * concurrent use with seal and open.
 */
EXPORT int32_t wgc_use(int32_t which) {
  pthread_once(&loaded, load);
  if (which == WGC_LIBCRYPTO) open_libcrypto();
  if (which == WGC_LIBSODIUM) open_libsodium();
  if ((which == WGC_LIBCRYPTO && have_libcrypto) || (which == WGC_LIBSODIUM && have_libsodium))
    active = which;
  return active;
}

/* One context per thread and direction, made on a thread's first packet and kept. */
static __thread EVP_CIPHER_CTX *ctx_for[2];
static __thread uint8_t *scratch;
static __thread size_t scratch_len;

static EVP_CIPHER_CTX *context(int enc) {
  EVP_CIPHER_CTX *c = ctx_for[enc];
  if (c) return c;
  c = ossl.ctx_new();
  if (!c) return NULL;
  if (ossl.init(c, ossl.chacha20_poly1305(), NULL, NULL, NULL, enc) != 1) return NULL; // leaks one
  return ctx_for[enc] = c;
}

static int ossl_seal(const uint8_t *key, const uint8_t *nonce, const uint8_t *in, int len,
                     const uint8_t *aad, int aadlen, uint8_t *out) {
  EVP_CIPHER_CTX *c = context(1);
  int ignored, n = 0, tail = 0;
  if (!c || ossl.init(c, NULL, NULL, key, nonce, 1) != 1) return -1;
  if (aadlen > 0 && ossl.update(c, NULL, &ignored, aad, aadlen) != 1) return -1;
  if (len > 0 && ossl.update(c, out, &n, in, len) != 1) return -1;
  if (ossl.final(c, out + n, &tail) != 1 || n + tail != len) return -1;
  return ossl.ctrl(c, EVP_CTRL_AEAD_GET_TAG, WGC_TAG, out + len) == 1 ? 0 : -1;
}

/* The per-thread buffer an open decrypts into before it knows the tag is good. */
static uint8_t *scratch_for(int len) {
  size_t want = len > 0 ? (size_t)len : 1;
  if (scratch_len < want) {
    uint8_t *grown = realloc(scratch, want);
    if (!grown) return NULL;
    scratch = grown;
    scratch_len = want;
  }
  return scratch;
}

static int ossl_open(const uint8_t *key, const uint8_t *nonce, const uint8_t *in, int len,
                     const uint8_t *aad, int aadlen, uint8_t *tmp) {
  EVP_CIPHER_CTX *c = context(0);
  int ignored, n = 0, tail = 0;
  if (!c || ossl.init(c, NULL, NULL, key, nonce, 0) != 1) return -1;
  if (ossl.ctrl(c, EVP_CTRL_AEAD_SET_TAG, WGC_TAG, (void *)(in + len)) != 1) return -1;
  if (aadlen > 0 && ossl.update(c, NULL, &ignored, aad, aadlen) != 1) return -1;
  if (len > 0 && ossl.update(c, tmp, &n, in, len) != 1) return -1;
  return ossl.final(c, tmp + n, &tail) == 1 && n + tail == len ? 0 : -1;
}

/*
 * Seals `len` bytes of `in` into `out` (len + 16 bytes: ciphertext, then tag). `out` may be `in`.
 * Returns 0, or -1 if no library is loaded or it failed (out's contents are then unspecified).
 */
EXPORT int32_t wgc_seal(const uint8_t *key, const uint8_t *nonce, const uint8_t *in, int32_t len,
                        const uint8_t *aad, int32_t aadlen, uint8_t *out) {
  if (len < 0 || aadlen < 0) return -1;
  switch (active) {
  case WGC_LIBCRYPTO:
    return ossl_seal(key, nonce, in, len, aad, aadlen, out);
  case WGC_LIBSODIUM:
    return sodium.seal(out, out + len, NULL, in, (unsigned long long)len, aad,
                       (unsigned long long)aadlen, NULL, nonce, key) == 0
               ? 0
               : -1;
  default:
    return -1;
  }
}

/*
 * Opens `len` bytes of `in` (ciphertext then its 16-byte tag, len >= 16) into `out` (len - 16
 * bytes; may be `in`). Returns 0; or -1, with `out` untouched, if the tag does not verify.
 * Both libraries write their output before returning a failure (OpenSSL decrypts before it
 * checks, libsodium zeroes the output), so they write into scratch, copied to `out` on success.
 */
EXPORT int32_t wgc_open(const uint8_t *key, const uint8_t *nonce, const uint8_t *in, int32_t len,
                        const uint8_t *aad, int32_t aadlen, uint8_t *out) {
  if (len < WGC_TAG || aadlen < 0) return -1;
  int32_t n = len - WGC_TAG;
  uint8_t *tmp = scratch_for(n);
  if (!tmp) return -1;
  int rc;
  switch (active) {
  case WGC_LIBCRYPTO:
    rc = ossl_open(key, nonce, in, n, aad, aadlen, tmp);
    break;
  case WGC_LIBSODIUM:
    rc = sodium.open(tmp, NULL, in, (unsigned long long)n, in + n, aad,
                     (unsigned long long)aadlen, nonce, key) == 0
             ? 0
             : -1;
    break;
  default:
    return -1;
  }
  if (rc == 0) memcpy(out, tmp, (size_t)n);
  return rc;
}
