/*
 * getsockopt(2) / setsockopt(2) on tunnel sockets.
 *
 * SOL_SOCKET options mostly apply to the Unix connection behind the fd (buffer sizes, timeouts,
 * SO_KEEPALIVE) and go to it; the ones that describe the socket (SO_ERROR, SO_TYPE, SO_DOMAIN,
 * SO_PROTOCOL, SO_ACCEPTCONN) are answered from our state. IP, IPv6 and TCP level options have no
 * meaning for a Unix socket: they succeed and read back what was set (or the kernel default), as
 * programs expect of a TCP/UDP socket.
 */
#include "wrapguard.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <string.h>

typedef int (*getsockopt_fn)(int, int, int, void *, socklen_t *);
typedef int (*setsockopt_fn)(int, int, int, const void *, socklen_t);
WG_EXPORT int getsockopt(int fd, int level, int name, void *val, socklen_t *len);
WG_EXPORT int setsockopt(int fd, int level, int name, const void *val, socklen_t len);
WG_DEFINE_REAL(getsockopt, getsockopt_fn)
WG_DEFINE_REAL(setsockopt, setsockopt_fn)

static int put_int(void *val, socklen_t *len, int v) {
  if (!val || !len) {
    errno = EFAULT;
    return -1;
  }
  socklen_t n = *len < (socklen_t)sizeof v ? *len : (socklen_t)sizeof v;
  memcpy(val, &v, n);
  *len = n;
  return 0;
}

static int get_ours(int fd, struct wg_sock *s, int level, int name, void *val, socklen_t *len) {
  if (level == SOL_SOCKET) {
    switch (name) {
    case SO_ERROR:
      if (s->state == WG_S_PENDING) {
        /* A blocking fd can only be pending after an interrupted connect; it waits here for
         * the answer. A non-blocking one reports 0 while connecting, as a kernel does. */
        long fl = sys_fcntl(fd, F_GETFL, 0);
        wg_resolve(fd, s, fl >= 0 && !(fl & O_NONBLOCK));
      }
      return put_int(val, len, wg_take_error(s));
    case SO_TYPE:
      return put_int(val, len, s->type);
    case SO_DOMAIN:
      return put_int(val, len, s->domain);
    case SO_PROTOCOL:
      return put_int(val, len, s->protocol);
    case SO_ACCEPTCONN:
      return put_int(val, len, s->state == WG_S_LISTENING);
    default:
      return WG_CALL_REAL(getsockopt, fd, level, name, val, len);
    }
  }
  if (level == IPPROTO_TCP && s->type == SOCK_STREAM) {
    switch (name) {
    case TCP_NODELAY:
      return put_int(val, len, s->nodelay);
    case TCP_MAXSEG:
      return put_int(val, len, 1380); /* 1420 MTU - 40 */
    case TCP_INFO: {
      if (!val || !len) {
        errno = EFAULT;
        return -1;
      }
      struct tcp_info ti;
      memset(&ti, 0, sizeof ti);
      ti.tcpi_state = s->state == WG_S_CONNECTED   ? TCP_ESTABLISHED
                      : s->state == WG_S_PENDING   ? TCP_SYN_SENT
                      : s->state == WG_S_LISTENING ? TCP_LISTEN
                                                   : TCP_CLOSE;
      socklen_t n = *len < (socklen_t)sizeof ti ? *len : (socklen_t)sizeof ti;
      memcpy(val, &ti, n);
      *len = n;
      return 0;
    }
    default:
      return put_int(val, len, 0);
    }
  }
  if (level == IPPROTO_IPV6 && name == IPV6_V6ONLY) return put_int(val, len, s->v6only);
  if (level == IPPROTO_IP || level == IPPROTO_IPV6 || level == IPPROTO_TCP ||
      level == IPPROTO_UDP) {
    return put_int(val, len, 0);
  }
  errno = ENOPROTOOPT;
  return -1;
}

static int set_ours(int fd, struct wg_sock *s, int level, int name, const void *val,
                    socklen_t len) {
  if (level == SOL_SOCKET) {
    int r = WG_CALL_REAL(setsockopt, fd, level, name, val, len);
    /* Options a Unix socket does not have (SO_BINDTODEVICE, SO_PRIORITY, …) are accepted and
     * ignored: they would have applied to a network interface we do not use. */
    if (r != 0 && (errno == ENOPROTOOPT || errno == EOPNOTSUPP || errno == EPERM)) return 0;
    return r;
  }
  int v = 0;
  if (val && len >= (socklen_t)sizeof(int)) memcpy(&v, val, sizeof v);
  if (!val && len > 0) {
    errno = EFAULT;
    return -1;
  }
  pthread_mutex_lock(&s->lock);
  if (level == IPPROTO_TCP && name == TCP_NODELAY) s->nodelay = v != 0;
  if (level == IPPROTO_IPV6 && name == IPV6_V6ONLY) s->v6only = v != 0;
  pthread_mutex_unlock(&s->lock);
  return 0;
}

/* A kernel socket we only annotate (relayed listener and its connections) keeps its options. */
static struct wg_sock *get_unless_kernel(int fd) {
  struct wg_sock *s = wg_kind(fd) != WG_K_NONE ? wg_get(fd) : NULL;
  if (s && s->is_kernel) {
    wg_put(s);
    return NULL;
  }
  return s;
}

int getsockopt(int fd, int level, int name, void *val, socklen_t *len) {
  wg_init();
  struct wg_sock *s = get_unless_kernel(fd);
  if (!s) return WG_CALL_REAL(getsockopt, fd, level, name, val, len);
  int r = get_ours(fd, s, level, name, val, len);
  int e = errno;
  wg_put(s);
  errno = e;
  return r;
}

int setsockopt(int fd, int level, int name, const void *val, socklen_t len) {
  wg_init();
  struct wg_sock *s = get_unless_kernel(fd);
  if (!s) return WG_CALL_REAL(setsockopt, fd, level, name, val, len);
  int r = set_ours(fd, s, level, name, val, len);
  int e = errno;
  wg_put(s);
  errno = e;
  return r;
}
