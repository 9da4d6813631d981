/*
 * Finding the system crypto libraries for aead.c and x25519.c (syslib.h).
 *
 * Only the preferred library is opened unless it is missing: opening libcrypto.so.3 and setting up
 * its cipher was about 2 ms of every start and 4.9 MB of a tunnel's resident memory, for a library
 * not used where libsodium is (docs/performance.md, "Cold start"). libsodium comes first on x86_64,
 * where bench/aead.ts has it equal at 1420 bytes and 2.5x faster at 64; elsewhere libcrypto, since
 * libsodium's SIMD ChaCha20 and Poly1305 are x86-only. A library that was opened stays open for the
 * life of the process, as libwgio itself does.
 */
#define _GNU_SOURCE
#include "syslib.h"

#include <dlfcn.h>

static const char *const names[3] = {0, "libcrypto.so.3", "libsodium.so.23"};

/* Called with s->lock held. */
static int try_lib(struct wg_syslib *s, int which) {
  if (!s->tried[which]) {
    s->tried[which] = 1;
    void *lib = dlopen(names[which], RTLD_NOW | RTLD_LOCAL);
    if (lib && !(s->have[which] = s->resolve[which](lib))) dlclose(lib);
  }
  return s->have[which];
}

int wg_syslib_choose(struct wg_syslib *s) {
  pthread_mutex_lock(&s->lock);
  if (!s->chosen) {
#if defined(__x86_64__)
    const int first = WG_LIB_LIBSODIUM, second = WG_LIB_LIBCRYPTO;
#else
    const int first = WG_LIB_LIBCRYPTO, second = WG_LIB_LIBSODIUM;
#endif
    s->active = try_lib(s, first) ? first : try_lib(s, second) ? second : WG_LIB_NONE;
    s->chosen = 1;
  }
  int active = s->active;
  pthread_mutex_unlock(&s->lock);
  return active;
}

int wg_syslib_use(struct wg_syslib *s, int which) {
  wg_syslib_choose(s);
  pthread_mutex_lock(&s->lock);
  if ((which == WG_LIB_LIBCRYPTO || which == WG_LIB_LIBSODIUM) && try_lib(s, which)) {
    s->active = which;
  }
  int active = s->active;
  pthread_mutex_unlock(&s->lock);
  return active;
}
