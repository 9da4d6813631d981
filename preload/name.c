/*
 * getsockname(2) / getpeername(2): a tunnel socket reports its tunnel addresses (in the family
 * the program created the socket with), never the Unix connection behind the fd.
 */
#include "wrapguard.h"

#include <errno.h>

typedef int (*getname_fn)(int, struct sockaddr *, socklen_t *);
WG_EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *len);
WG_EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *len);
WG_DEFINE_REAL(getsockname, getname_fn)
WG_DEFINE_REAL(getpeername, getname_fn)

static int name_of(int fd, struct wg_sock *s, int peer, struct sockaddr *addr, socklen_t *len) {
  if (!addr || !len) {
    errno = EFAULT;
    return -1;
  }
  /* A connect that has completed tells us the real local port; do not wait for it. */
  if (s->state == WG_S_PENDING) wg_resolve(fd, s, 0);
  pthread_mutex_lock(&s->lock);
  int connected = s->state == WG_S_CONNECTED || (s->type == SOCK_DGRAM && s->has_remote);
  struct wgp_endpoint ep = peer ? s->remote : s->local;
  uint8_t family = peer ? s->remote_family : s->family;
  if (peer) wg_dns_shown(s, &family, &ep);
  pthread_mutex_unlock(&s->lock);
  if (peer && !connected) {
    errno = ENOTCONN;
    return -1;
  }
  struct sockaddr_storage ss;
  socklen_t full = wg_sockaddr_build(s->domain, family, &ep, &ss);
  wg_sockaddr_copy_out(&ss, full, addr, len);
  return 0;
}

static int wg_getname(int fd, int peer, struct sockaddr *addr, socklen_t *len) {
  struct wg_sock *s = wg_kind(fd) != WG_K_NONE ? wg_get(fd) : NULL;
  if (s && s->state == WG_S_RELAY) {
    wg_put(s); /* a kernel listener: its own name is right */
    s = NULL;
  }
  if (!s) {
    return peer ? WG_CALL_REAL(getpeername, fd, addr, len)
                : WG_CALL_REAL(getsockname, fd, addr, len);
  }
  int r = name_of(fd, s, peer, addr, len);
  int e = errno;
  wg_put(s);
  errno = e;
  return r;
}

int getsockname(int fd, struct sockaddr *addr, socklen_t *len) {
  wg_init();
  return wg_getname(fd, 0, addr, len);
}

int getpeername(int fd, struct sockaddr *addr, socklen_t *len) {
  wg_init();
  return wg_getname(fd, 1, addr, len);
}
