/*
 * The system crypto libraries that aead.c and x25519.c take their primitives from, opened at run
 * time with dlopen so that libwgio itself needs only libc.
 */
#ifndef WG_SYSLIB_H
#define WG_SYSLIB_H

#include <dlfcn.h>
#include <pthread.h>

#define WG_LIB_NONE 0
#define WG_LIB_LIBCRYPTO 1 /* OpenSSL's libcrypto.so.3 */
#define WG_LIB_LIBSODIUM 2 /* libsodium.so.23 */

/* One module's use of the libraries: how it makes each usable (resolves its symbols, sets itself
 * up; 1 when usable), and what it found. Initialise with WG_SYSLIB(resolve_crypto, resolve_sodium). */
struct wg_syslib {
  int (*resolve[3])(void *lib);
  pthread_mutex_t lock;
  int tried[3], have[3];
  int chosen;
  int active; /* read without the lock on the hot path: set at the first choice, then by use() */
};
#define WG_SYSLIB(crypto, sodium)                                                                  \
  { .resolve = {0, (crypto), (sodium)}, .lock = PTHREAD_MUTEX_INITIALIZER }

/* In a resolve function: takes `name` from `lib` into the function pointer `field`, or fails. */
#define WG_RESOLVE(lib, field, name)                                                               \
  if (!(*(void **)&(field) = dlsym(lib, name))) return 0

/* On the first call: the preferred library (libsodium on x86_64, libcrypto elsewhere), and the
 * other only if that one is missing or unusable. Returns the one in use (WG_LIB_*). */
int wg_syslib_choose(struct wg_syslib *s);

/* Switches to `which` if it can be made usable (opening it now if need be); returns the one in
 * use. For the tests, which hold both libraries to the reference. */
int wg_syslib_use(struct wg_syslib *s, int which);

#endif
