/*
 * accept(2) / accept4(2).
 *
 * On a tunnel listener (bound to a tunnel address) the fd carries accept notices: it polls
 * readable exactly when a connection waits. accept takes one notice, claims that connection with
 * an ACCEPT request on a new broker connection, and returns the new connection as the new fd.
 *
 * On a relayed kernel listener (wildcard) the kernel accepts; when the peer is on loopback the
 * broker is asked (LOOKUP) whether it is a tunnel connection it relays, and if so the new fd
 * reports the tunnel addresses. A genuinely local client is left alone.
 */
#include "wrapguard.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

typedef int (*accept_fn)(int, struct sockaddr *, socklen_t *);
typedef int (*accept4_fn)(int, struct sockaddr *, socklen_t *, int);
WG_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len);
WG_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
WG_DEFINE_REAL(accept, accept_fn)
WG_DEFINE_REAL(accept4, accept4_fn)

static int fail(int e) {
  errno = e;
  return -1;
}

/* Fills the caller's address from an entry. */
static void report_peer(const struct wg_sock *s, struct sockaddr *addr, socklen_t *len) {
  if (!addr || !len) return;
  struct sockaddr_storage ss;
  socklen_t full = wg_sockaddr_build(s->domain, s->remote_family, &s->remote, &ss);
  wg_sockaddr_copy_out(&ss, full, addr, len);
}

static int apply_flags(int fd, int flags) {
  if (flags & SOCK_NONBLOCK) {
    long fl = sys_fcntl(fd, F_GETFL, 0);
    if (fl < 0 || sys_fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -1;
  }
  /* Broker connections are made close-on-exec; keep that only if asked. */
  if (!(flags & SOCK_CLOEXEC) && sys_fcntl(fd, F_SETFD, 0) < 0) return -1;
  return 0;
}

static int tunnel_accept(int fd, struct wg_sock *l, struct sockaddr *addr, socklen_t *len,
                         int flags) {
  long fl = sys_fcntl(fd, F_GETFL, 0);
  int block = fl >= 0 && !(fl & O_NONBLOCK);
  struct wgp_reply notice;
  pthread_mutex_lock(&l->rlock);
  int r = wg_broker_recv(fd, &notice, block);
  pthread_mutex_unlock(&l->rlock);
  if (r != 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return -1;
    return fail(ECONNABORTED); /* the broker dropped the listener */
  }
  int u = wg_broker_open();
  if (u < 0) return wg_broker_unreachable();
  struct wgp_request req;
  wg_request_init(&req, WGP_OP_ACCEPT, WGP_PROTO_TCP, WGP_FAMILY_NONE);
  req.arg = notice.arg;
  struct wgp_reply rep;
  if (wg_broker_send(u, &req) != 0 || wg_broker_recv(u, &rep, 1) != 0 || rep.status != WGP_OK) {
    sys_close(u);
    /* Reset before we took it: the kernel's accept says ECONNABORTED too (programs retry). */
    return fail(ECONNABORTED);
  }
  struct wg_sock *s = wg_sock_new(l->domain, SOCK_STREAM, IPPROTO_TCP);
  if (!s) {
    sys_close(u);
    return -1;
  }
  s->state = WG_S_CONNECTED;
  s->connect_reported = 1;
  s->family = rep.family;
  s->remote_family = rep.family;
  s->local = rep.local;
  s->remote = rep.remote;
  s->has_remote = 1;
  s->nodelay = l->nodelay;
  if (apply_flags(u, flags) != 0) {
    int e = errno;
    sys_close(u);
    wg_put(s);
    return fail(e);
  }
  wg_note_identity(u, s);
  if (wg_set(u, s) != 0) {
    sys_close(u);
    wg_put(s);
    return fail(EMFILE);
  }
  report_peer(s, addr, len);
  wg_put(s);
  wg_debug("fd %d: accepted tunnel connection as fd %d", fd, u);
  return u;
}

/* After the kernel accepted `k` on a relayed listener: a tunnel connection gets its entry. */
static void adopt_relayed(int k, struct wg_sock *l) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (sys_getpeername(k, (struct sockaddr *)&ss, &sl) != 0) return;
  uint8_t family;
  struct wgp_endpoint peer;
  int mapped;
  if (wg_sockaddr_parse((struct sockaddr *)&ss, sl, &family, &peer, &mapped) != 0) return;
  if (!wg_is_loopback(family, peer.addr)) return; /* the broker relays over loopback only */
  int u = wg_broker_open();
  if (u < 0) return;
  struct wgp_request req;
  wg_request_init(&req, WGP_OP_LOOKUP, WGP_PROTO_TCP, family);
  req.local.port = l->relay_port;
  req.remote = peer;
  struct wgp_reply rep;
  int ok = wg_broker_send(u, &req) == 0 && wg_broker_recv(u, &rep, 1) == 0 && rep.status == WGP_OK;
  sys_close(u);
  if (!ok) return; /* a local client */
  struct wg_sock *s = wg_sock_new(l->domain, SOCK_STREAM, IPPROTO_TCP);
  if (!s) return;
  s->is_kernel = 1;
  s->state = WG_S_CONNECTED;
  s->connect_reported = 1;
  s->family = rep.family;
  s->remote_family = rep.family;
  s->local = rep.local;
  s->remote = rep.remote;
  s->has_remote = 1;
  wg_note_identity(k, s);
  wg_set(k, s);
  wg_put(s);
}

static int wg_accept(int fd, struct sockaddr *addr, socklen_t *len, int flags, int four) {
  struct wg_sock *l = wg_kind(fd) != WG_K_NONE ? wg_get(fd) : NULL;
  if (l && l->state == WG_S_LISTENING) {
    int r = tunnel_accept(fd, l, addr, len, flags);
    int e = errno;
    wg_put(l);
    errno = e;
    return r;
  }
  if (l && l->state != WG_S_RELAY) {
    wg_put(l);
    return fail(EINVAL); /* not listening */
  }
  int k = four ? WG_CALL_REAL(accept4, fd, addr, len, flags) : WG_CALL_REAL(accept, fd, addr, len);
  if (k < 0) {
    if (l) {
      int e = errno;
      wg_put(l);
      errno = e;
    }
    return -1;
  }
  /* A reused number may still have a stale entry. */
  if (wg_kind(k) != WG_K_NONE) wg_clear(k);
  if (l) {
    int saved = errno;
    adopt_relayed(k, l);
    struct wg_sock *s = wg_get(k);
    if (s) {
      report_peer(s, addr, len);
      wg_put(s);
    }
    wg_put(l);
    errno = saved;
  }
  return k;
}

int accept(int fd, struct sockaddr *addr, socklen_t *len) {
  wg_init();
  return wg_accept(fd, addr, len, 0, 0);
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
  wg_init();
  return wg_accept(fd, addr, len, flags, 1);
}
