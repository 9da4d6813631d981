/*
 * connect(2): decide (pass to libc / tunnel / deny), then act.
 *
 * A tunnel TCP connect sends CONNECT to the broker on a fresh Unix connection and puts that
 * connection onto the program's fd. Blocking sockets wait for the reply here and keep their kernel
 * socket when it is an error, as a kernel leaves a socket after a failed connect. Non-blocking
 * sockets get the Unix connection at once, with filler that keeps it unwritable until the broker
 * drains it on establishment (PROTOCOL.md "Readiness"), and EINPROGRESS.
 */
#include "wrapguard.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <string.h>

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);
WG_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len);
WG_DEFINE_REAL(connect, connect_fn)

static int pass(int fd, const struct sockaddr *addr, socklen_t len) {
  return WG_CALL_REAL(connect, fd, addr, len);
}

static int fail(int e) {
  errno = e;
  return -1;
}

/* What the kernel says the socket is. -1 when it is not a socket (the kernel then answers). */
static int socket_identity(int fd, int *domain, int *type, int *protocol) {
  socklen_t l = sizeof(int);
  if (sys_getsockopt(fd, SOL_SOCKET, SO_DOMAIN, domain, &l) != 0) return -1;
  l = sizeof(int);
  if (sys_getsockopt(fd, SOL_SOCKET, SO_TYPE, type, &l) != 0) return -1;
  l = sizeof(int);
  if (sys_getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, protocol, &l) != 0) return -1;
  return 0;
}

static int int_opt(int fd, int level, int name) {
  int v = 0;
  socklen_t l = sizeof v;
  return sys_getsockopt(fd, level, name, &v, &l) == 0 ? v : 0;
}

/* Our guess at the local address before the broker names it: the first tunnel address of the
 * family, port 0 (what getsockname shows while a kernel socket is in SYN-SENT is similar). */
static void default_local(uint8_t family, struct wgp_endpoint *ep) {
  memset(ep, 0, sizeof *ep);
  for (int i = 0; i < wg_cfg.naddresses; i++) {
    if (wg_cfg.addresses[i].family == family) {
      memcpy(ep->addr, wg_cfg.addresses[i].addr, 16);
      return;
    }
  }
}

int wg_broker_unreachable(void) {
  static int warned;
  if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED)) {
    wg_warn("cannot reach the tunnel broker at %s: %s", wg_cfg.socket_path, strerror(errno));
  }
  errno = ENETUNREACH;
  return -1;
}

static int tcp_connect(int fd, int domain, const struct wg_sock *bound, uint8_t family,
                       const struct wgp_endpoint *remote) {
  long fl = sys_fcntl(fd, F_GETFL, 0);
  if (fl < 0) return -1;
  int nonblock = (fl & O_NONBLOCK) != 0;
  struct wg_sock *s = wg_sock_new(domain, SOCK_STREAM, IPPROTO_TCP);
  if (!s) return -1;
  s->family = family;
  s->remote_family = family;
  s->remote = *remote;
  s->has_remote = 1;
  if (bound) {
    s->local = bound->local;
    s->nodelay = bound->nodelay;
  } else {
    default_local(family, &s->local);
    /* Options set before connect live on the kernel socket we are about to replace. */
    s->nodelay = int_opt(fd, IPPROTO_TCP, TCP_NODELAY);
    s->v6only = domain == AF_INET6 ? int_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY) : 0;
  }
  int keepalive = int_opt(fd, SOL_SOCKET, SO_KEEPALIVE);

  int u = wg_broker_open();
  if (u < 0) {
    wg_put(s);
    return wg_broker_unreachable();
  }
  if (keepalive) sys_setsockopt(u, SOL_SOCKET, SO_KEEPALIVE, &keepalive, sizeof keepalive);
  struct wgp_request req;
  wg_request_init(&req, WGP_OP_CONNECT, WGP_PROTO_TCP, family);
  req.remote = *remote;
  if (bound) req.local = bound->local;
  req.padding = nonblock ? wg_padding_for(u) : 0;
  if (wg_broker_send(u, &req) != 0) {
    sys_close(u);
    wg_put(s);
    return wg_broker_unreachable();
  }
  wg_debug("fd %d: tunnel connect (%s)", fd, nonblock ? "non-blocking" : "blocking");

  if (!nonblock) {
    struct wgp_reply rep;
    if (wg_broker_recv(u, &rep, 1) != 0) {
      if (errno != EINTR) {
        sys_close(u);
        wg_put(s);
        return wg_broker_unreachable();
      }
      /* Interrupted by a signal: as in the kernel, the connect goes on in the background and
       * the program learns the outcome from SO_ERROR, poll or its next call. */
      s->state = WG_S_PENDING;
    } else if (rep.status != WGP_OK) {
      if (rep.status == WGP_ST_AUTH) wg_warn("the broker refused our secret");
      sys_close(u);
      wg_put(s);
      wg_debug("fd %d: connect failed: %s", fd, wgp_status_name(rep.status));
      return fail(wgp_status_errno(rep.status));
    } else {
      s->state = WG_S_CONNECTED;
      s->connect_reported = 1;
      s->family = rep.family;
      s->remote_family = rep.family;
      s->local = rep.local;
      s->remote = rep.remote;
    }
  } else {
    s->state = WG_S_PENDING;
  }
  if (wg_install(u, fd) != 0) {
    wg_put(s);
    return -1;
  }
  wg_note_identity(fd, s);
  int connected = s->state == WG_S_CONNECTED;
  int r = wg_set(fd, s);
  wg_put(s);
  if (r != 0) return -1;
  if (connected) return 0;
  return fail(nonblock ? EINPROGRESS : EINTR);
}

/* Gives fd a fresh kernel socket like the one it had (for a new connect after a failed one). */
static int restore_kernel_socket(int fd, struct wg_sock *s) {
  long fl = sys_fcntl(fd, F_GETFL, 0);
  long fdfl = sys_fcntl(fd, F_GETFD, 0);
  if (fl < 0 || fdfl < 0) return -1;
  int k = (int)sys_socket(s->domain, s->type | ((fl & O_NONBLOCK) ? SOCK_NONBLOCK : 0),
                          s->protocol);
  if (k < 0) return -1;
  if (s->domain == AF_INET6 && s->v6only) {
    int one = 1;
    sys_setsockopt(k, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  if (sys_dup3(k, fd, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
    int e = errno;
    sys_close(k);
    errno = e;
    return -1;
  }
  sys_close(k);
  wg_clear(fd);
  return 0;
}

static int connect_fresh(int fd, const struct sockaddr *addr, socklen_t len);

/* connect() on an fd that is already a tunnel socket. */
static int connect_ours(int fd, struct wg_sock *s, const struct sockaddr *addr, socklen_t len) {
  if (s->type == SOCK_DGRAM) return wg_udp_connect(fd, s, addr, len);
  if (s->state == WG_S_PENDING) {
    long fl = sys_fcntl(fd, F_GETFL, 0);
    if (wg_resolve(fd, s, fl >= 0 && !(fl & O_NONBLOCK)) != 0) {
      return fail(errno == EINTR ? EINTR : EALREADY);
    }
  }
  pthread_mutex_lock(&s->lock);
  int state = s->state;
  int first = !s->connect_reported;
  s->connect_reported = 1;
  int err = s->so_error;
  s->so_error = 0;
  pthread_mutex_unlock(&s->lock);
  switch (state) {
  case WG_S_CONNECTED:
    /* Linux: the first connect() after an asynchronous connect completed returns 0. */
    return first ? 0 : fail(EISCONN);
  case WG_S_FAILED:
    /* The pending error once (kernel: "sock_error"), then the socket may connect again. */
    if (err) return fail(err);
    if (restore_kernel_socket(fd, s) != 0) return -1;
    return connect_fresh(fd, addr, len);
  case WG_S_BOUND: {
    uint8_t family;
    struct wgp_endpoint ep;
    int mapped;
    if (wg_sockaddr_parse(addr, len, &family, &ep, &mapped) != 0) return -1;
    if (family != s->family) return fail(EINVAL);
    return tcp_connect(fd, s->domain, s, family, &ep);
  }
  case WG_S_LISTENING:
    return fail(EISCONN);
  default:
    return fail(EINVAL);
  }
}

static int connect_fresh(int fd, const struct sockaddr *addr, socklen_t len) {
  if (addr->sa_family != AF_INET && addr->sa_family != AF_INET6) return pass(fd, addr, len);
  uint8_t family;
  struct wgp_endpoint ep;
  int mapped;
  if (wg_sockaddr_parse(addr, len, &family, &ep, &mapped) != 0) return pass(fd, addr, len);
  /* A query to the host's nameserver goes to the tunnel's instead (dns.c). */
  uint8_t shown_family = family;
  struct wgp_endpoint shown = ep;
  int redirected = wg_dns_redirect(&wg_dns, &family, &ep);
  enum wg_decision d = wg_route(&wg_cfg, family, ep.addr);
  if (redirected && d != WG_TUNNEL) return fail(ENETUNREACH); /* never to the host's server */
  if (d == WG_PASS) return pass(fd, addr, len);

  int domain, type, protocol;
  if (socket_identity(fd, &domain, &type, &protocol) != 0) return pass(fd, addr, len);
  if (domain != AF_INET && domain != AF_INET6) return pass(fd, addr, len);
  /* The kernel's own answer for an IPv6 address on an IPv4 socket (EAFNOSUPPORT). */
  if (domain == AF_INET && addr->sa_family == AF_INET6) return pass(fd, addr, len);
  if (d == WG_DENY) {
    wg_debug("fd %d: denied (not a tunnel destination)", fd);
    return fail(ENETUNREACH);
  }
  /* An IPv4 peer on an IPv6-only socket: the kernel says ENETUNREACH. */
  if (domain == AF_INET6 && family == WGP_FAMILY_V4 && int_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY)) {
    return fail(ENETUNREACH);
  }
  if (type == SOCK_STREAM && (protocol == IPPROTO_TCP || protocol == 0)) {
    /* A kernel socket that is already connected or listening answers for itself. */
    struct sockaddr_storage peer;
    socklen_t pl = sizeof peer;
    if (sys_getpeername(fd, (struct sockaddr *)&peer, &pl) == 0) return fail(EISCONN);
    if (int_opt(fd, SOL_SOCKET, SO_ACCEPTCONN)) return fail(EISCONN);
    int r = tcp_connect(fd, domain, NULL, family, &ep);
    if (redirected) {
      int e = errno;
      struct wg_sock *s = wg_get(fd);
      if (s) {
        wg_dns_mark(s, family, &ep, shown_family, &shown);
        wg_put(s);
      }
      errno = e;
    }
    return r;
  }
  if (type == SOCK_DGRAM && (protocol == IPPROTO_UDP || protocol == 0)) {
    return wg_udp_connect(fd, NULL, addr, len);
  }
  /* Raw sockets, SCTP, … cannot cross the tunnel. */
  wg_debug("fd %d: socket type %d cannot use the tunnel", fd, type);
  return fail(ENETUNREACH);
}

static int wg_connect(int fd, const struct sockaddr *addr, socklen_t len) {
  if (!wg_cfg.active || !addr || len < (socklen_t)sizeof(sa_family_t)) {
    return pass(fd, addr, len);
  }
  struct wg_sock *s = wg_get(fd);
  if (s) {
    int r = connect_ours(fd, s, addr, len);
    int e = errno;
    wg_put(s);
    errno = e;
    return r;
  }
  return connect_fresh(fd, addr, len);
}

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
  wg_init();
  return wg_connect(fd, addr, len);
}
