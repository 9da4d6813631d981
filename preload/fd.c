/*
 * Calls that create, copy or destroy fd numbers: socket, close, dup, dup2, dup3, fcntl(F_DUPFD*).
 * They keep the fd table in step with the kernel's: a dup'd tunnel socket is a tunnel socket under
 * both numbers, a closed one is forgotten, a new socket reusing a number starts clean.
 */
#include "wrapguard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>

typedef int (*socket_fn)(int, int, int);
typedef int (*close_fn)(int);
typedef int (*dup_fn)(int);
typedef int (*dup2_fn)(int, int);
typedef int (*dup3_fn)(int, int, int);
typedef int (*fcntl_fn)(int, int, ...);

WG_EXPORT int socket(int domain, int type, int protocol);
WG_EXPORT int close(int fd);
WG_EXPORT int dup(int fd);
WG_EXPORT int dup2(int from, int to);
WG_EXPORT int dup3(int from, int to, int flags);
WG_EXPORT int fcntl(int fd, int cmd, ...);
WG_EXPORT int fcntl64(int fd, int cmd, ...);

WG_DEFINE_REAL(socket, socket_fn)
WG_DEFINE_REAL(close, close_fn)
WG_DEFINE_REAL(dup, dup_fn)
WG_DEFINE_REAL(dup2, dup2_fn)
WG_DEFINE_REAL(dup3, dup3_fn)
WG_DEFINE_REAL(fcntl, fcntl_fn)
WG_DEFINE_REAL(fcntl64, fcntl_fn)

int socket(int domain, int type, int protocol) {
  wg_init();
  int fd = WG_CALL_REAL(socket, domain, type, protocol);
  /* The number may still be in our table if it was closed behind our back. */
  if (fd >= 0 && wg_kind(fd) != WG_K_NONE) wg_clear(fd);
  return fd;
}

int close(int fd) {
  wg_init();
  /* The inherited broker channel is ours, not the program's (channel.c). */
  if (fd >= 0 && fd == wg_channel_fd()) return 0;
  if (wg_kind(fd) != WG_K_NONE) wg_clear(fd);
  return WG_CALL_REAL(close, fd);
}

int dup(int fd) {
  wg_init();
  int r = WG_CALL_REAL(dup, fd);
  if (r >= 0) wg_dup(fd, r);
  return r;
}

int dup2(int from, int to) {
  wg_init();
  wg_channel_evict(to);
  int r = WG_CALL_REAL(dup2, from, to);
  if (r >= 0) wg_dup(from, r);
  return r;
}

int dup3(int from, int to, int flags) {
  wg_init();
  wg_channel_evict(to);
  int r = WG_CALL_REAL(dup3, from, to, flags);
  if (r >= 0) wg_dup(from, r);
  return r;
}

/* fcntl's third argument is an int or a pointer depending on cmd; like the C library we pass on
 * whatever word is there. */
static int wg_fcntl(fcntl_fn fn, int fd, int cmd, void *arg) {
  if (!fn) {
    errno = ENOSYS;
    return -1;
  }
  /* Marking the channel close-on-exec would cut off what the program execs (channel.c). */
  if (cmd == F_SETFD && fd >= 0 && fd == wg_channel_fd()) return 0;
  int r = fn(fd, cmd, arg);
  if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) wg_dup(fd, r);
  return r;
}

int fcntl(int fd, int cmd, ...) {
  wg_init();
  va_list ap;
  va_start(ap, cmd);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  return wg_fcntl(real_fcntl(), fd, cmd, arg);
}

int fcntl64(int fd, int cmd, ...) {
  wg_init();
  va_list ap;
  va_start(ap, cmd);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  return wg_fcntl(real_fcntl64(), fd, cmd, arg);
}
