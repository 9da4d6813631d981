/*
 * bind(2) and listen(2).
 *
 * A socket bound to one of our tunnel addresses exists only in the tunnel: a TCP one gets a
 * broker connection with a BIND request (EADDRINUSE / EADDRNOTAVAIL come back here, as from a
 * kernel), and listen() sends LISTEN on that same connection, which then carries accept notices.
 * A UDP one becomes a tunnel UDP socket with that local address.
 *
 * A UDP socket bound to the wildcard with a port is handed to the broker whole: it binds the port
 * on the host network and in the tunnel, so the one fd answers both (udp.c).
 *
 * A TCP socket bound to the wildcard (or not bound at all) stays a kernel socket, so it stays
 * reachable locally; when such a TCP socket listens, a LISTEN request with the RELAY flag asks the
 * broker to listen on the same port in the tunnel and to relay each tunnel connection to the
 * kernel listener over loopback (accept.c turns the loopback peer back into the tunnel peer).
 */
#include "wrapguard.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);
typedef int (*listen_fn)(int, int);
WG_EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len);
WG_EXPORT int listen(int fd, int backlog);
WG_DEFINE_REAL(bind, bind_fn)
WG_DEFINE_REAL(listen, listen_fn)

static int fail(int e) {
  errno = e;
  return -1;
}

static int int_opt(int fd, int level, int name) {
  int v = 0;
  socklen_t l = sizeof v;
  return sys_getsockopt(fd, level, name, &v, &l) == 0 ? v : 0;
}

static int tcp_bind(int fd, int domain, uint8_t family, const struct wgp_endpoint *local) {
  int v6only = domain == AF_INET6 ? int_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY) : 0;
  int nodelay = int_opt(fd, IPPROTO_TCP, TCP_NODELAY);
  int u = wg_broker_open();
  if (u < 0) return wg_broker_unreachable();
  struct wgp_request req;
  wg_request_init(&req, WGP_OP_BIND, WGP_PROTO_TCP, family);
  req.local = *local;
  if (v6only) req.flags |= WGP_FLAG_V6ONLY;
  if (int_opt(fd, SOL_SOCKET, SO_REUSEADDR)) req.flags |= WGP_FLAG_REUSEADDR;
  struct wgp_reply rep;
  if (wg_broker_send(u, &req) != 0 || wg_broker_recv(u, &rep, 1) != 0) {
    sys_close(u);
    return wg_broker_unreachable();
  }
  if (rep.status != WGP_OK) {
    if (rep.status == WGP_ST_AUTH) wg_warn("the broker refused our secret");
    sys_close(u);
    return fail(wgp_status_errno(rep.status));
  }
  struct wg_sock *s = wg_sock_new(domain, SOCK_STREAM, IPPROTO_TCP);
  if (!s) {
    sys_close(u);
    return -1;
  }
  s->state = WG_S_BOUND;
  s->family = rep.family;
  s->remote_family = rep.family;
  s->local = rep.local;
  s->v6only = v6only;
  s->nodelay = nodelay;
  int r = -1;
  if (wg_install(u, fd) == 0) {
    wg_note_identity(fd, s);
    r = wg_set(fd, s);
  }
  wg_put(s);
  if (r == 0) wg_debug("fd %d: bound to a tunnel address, port %u", fd, rep.local.port);
  return r;
}

static int wg_bind(int fd, const struct sockaddr *addr, socklen_t len) {
  if (!wg_cfg.active || !addr || len < (socklen_t)sizeof(sa_family_t) ||
      (addr->sa_family != AF_INET && addr->sa_family != AF_INET6)) {
    return WG_CALL_REAL(bind, fd, addr, len);
  }
  struct wg_sock *ours = wg_get(fd);
  if (ours) {
    wg_put(ours);
    return fail(EINVAL); /* already bound (or connected), as the kernel says */
  }
  uint8_t family;
  struct wgp_endpoint ep;
  int mapped;
  if (wg_sockaddr_parse(addr, len, &family, &ep, &mapped) != 0) {
    return WG_CALL_REAL(bind, fd, addr, len);
  }
  int tunnel = wg_is_tunnel_address(&wg_cfg, family, ep.addr);
  int wildcard = wg_is_unspecified(family, ep.addr) && ep.port != 0;
  if (!tunnel && !wildcard) {
    /* Loopback or a host address: the kernel's business. */
    return WG_CALL_REAL(bind, fd, addr, len);
  }
  int domain, type;
  socklen_t l = sizeof domain;
  if (sys_getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &l) != 0) return -1;
  l = sizeof type;
  if (sys_getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) != 0) return -1;
  if (wildcard) {
    /* A UDP server on a wildcard port serves the tunnel and the host alike, from one fd: the
     * broker binds both (udp.c). TCP stays a kernel socket until listen (relay_listen); port 0
     * stays with the kernel, as clients that bind it usually mean the host. */
    int r;
    if (type == SOCK_DGRAM && !(domain == AF_INET && addr->sa_family == AF_INET6) &&
        wg_udp_bind_wildcard(fd, domain, family, &ep, &r)) {
      return r;
    }
    return WG_CALL_REAL(bind, fd, addr, len);
  }
  if (domain == AF_INET && addr->sa_family == AF_INET6) return fail(EAFNOSUPPORT);
  if (type == SOCK_STREAM) return tcp_bind(fd, domain, family, &ep);
  if (type == SOCK_DGRAM) return wg_udp_bind(fd, domain, family, &ep);
  return fail(EADDRNOTAVAIL);
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
  wg_init();
  return wg_bind(fd, addr, len);
}

/* LISTEN on a tunnel-bound socket's own connection. */
static int tunnel_listen(int fd, struct wg_sock *s, int backlog) {
  pthread_mutex_lock(&s->rlock);
  struct wgp_request req;
  wg_request_init(&req, WGP_OP_LISTEN, WGP_PROTO_TCP, s->family);
  req.local = s->local;
  req.arg = backlog > 0 ? (uint32_t)backlog : 1;
  if (s->v6only) req.flags |= WGP_FLAG_V6ONLY;
  struct wgp_reply rep;
  int r = 0;
  if (wg_broker_send(fd, &req) != 0 || wg_broker_recv(fd, &rep, 1) != 0) {
    r = wg_broker_unreachable();
  } else if (rep.status != WGP_OK) {
    r = fail(wgp_status_errno(rep.status));
  } else {
    pthread_mutex_lock(&s->lock);
    s->state = WG_S_LISTENING;
    s->local = rep.local;
    pthread_mutex_unlock(&s->lock);
    wg_debug("fd %d: listening in the tunnel on port %u", fd, rep.local.port);
  }
  pthread_mutex_unlock(&s->rlock);
  return r;
}

/* After a kernel listen(): a wildcard listener is offered to the tunnel too. Failures only
 * warn: the local listener works regardless. */
static void relay_listen(int fd, int backlog) {
  int type = 0;
  socklen_t l = sizeof type;
  if (sys_getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) != 0 || type != SOCK_STREAM) return;
  struct sockaddr_storage ss;
  l = sizeof ss;
  if (syscall(SYS_getsockname, fd, &ss, &l) != 0) return;
  if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) return;
  uint8_t family;
  struct wgp_endpoint ep;
  int mapped;
  if (wg_sockaddr_parse((struct sockaddr *)&ss, l, &family, &ep, &mapped) != 0) return;
  if (!wg_is_unspecified(family, ep.addr)) return; /* bound to one address: local only */
  int domain = ss.ss_family;
  int v6only = domain == AF_INET6 ? int_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY) : 0;
  int u = wg_broker_open();
  if (u < 0) {
    wg_warn("fd %d: port %u listens locally only: cannot reach the broker", fd, ep.port);
    return;
  }
  struct wgp_request req;
  wg_request_init(&req, WGP_OP_LISTEN, WGP_PROTO_TCP,
                  domain == AF_INET ? WGP_FAMILY_V4 : WGP_FAMILY_V6);
  req.local.port = ep.port;
  req.flags = WGP_FLAG_RELAY | (v6only ? WGP_FLAG_V6ONLY : 0);
  req.arg = backlog > 0 ? (uint32_t)backlog : 1;
  struct wgp_reply rep;
  if (wg_broker_send(u, &req) != 0 || wg_broker_recv(u, &rep, 1) != 0 || rep.status != WGP_OK) {
    wg_warn("fd %d: port %u listens locally only: the tunnel refused it", fd, ep.port);
    sys_close(u);
    return;
  }
  struct wg_sock *s = wg_sock_new(domain, SOCK_STREAM, IPPROTO_TCP);
  if (!s) {
    sys_close(u);
    return;
  }
  s->state = WG_S_RELAY;
  s->is_kernel = 1;
  s->aux_fd = u;
  s->relay_port = ep.port;
  s->v6only = v6only;
  s->family = family;
  s->local.port = ep.port;
  wg_note_identity(fd, s);
  wg_set(fd, s);
  wg_put(s);
  wg_debug("fd %d: port %u listens locally and in the tunnel", fd, ep.port);
}

static int wg_listen(int fd, int backlog) {
  struct wg_sock *s = wg_kind(fd) != WG_K_NONE ? wg_get(fd) : NULL;
  if (s) {
    int r;
    if (s->state == WG_S_BOUND) {
      r = tunnel_listen(fd, s, backlog);
    } else if (s->state == WG_S_LISTENING || s->state == WG_S_RELAY) {
      /* Listening again only changes the backlog; the kernel socket takes it. */
      r = s->state == WG_S_RELAY ? WG_CALL_REAL(listen, fd, backlog) : 0;
    } else {
      r = fail(s->type == SOCK_STREAM ? EINVAL : EOPNOTSUPP);
    }
    int e = errno;
    wg_put(s);
    errno = e;
    return r;
  }
  int r = WG_CALL_REAL(listen, fd, backlog);
  if (r == 0 && wg_cfg.active && !wg_cfg.broken) {
    int saved = errno;
    relay_listen(fd, backlog);
    errno = saved;
  }
  return r;
}

int listen(int fd, int backlog) {
  wg_init();
  return wg_listen(fd, backlog);
}
