/*
 * TCP connect to a tunnel destination, for a program the interposer is not in:
 *
 *   worker: CONNECT (broker) ─► reply: an error is the connect's errno, nothing else changes
 *           OK ─► a one-shot listener on loopback ─► connect OUR COPY of the program's socket to it
 *              ─► accept (the peer must be that socket's port) ─► answer the call: 0
 *              ─► relay: loopback connection ⇄ broker connection (a thread per direction)
 *
 * The program's socket stays the same kernel object (its epoll registrations, O_NONBLOCK,
 * socket options and fd number are untouched), so nothing is installed into its fd table; it is
 * connected to the relay instead of the peer, and getsockname/getpeername are answered from the
 * table with the tunnel endpoints. A non-blocking connect returns 0 once the tunnel handshake is
 * done, which callers of non-blocking connect accept as "connected at once" (Go does).
 *
 * Ends: the program's FIN ─► shutdown(broker, SHUT_WR) ─► FIN to the peer; the peer's FIN (the
 * broker shuts its side) ─► shutdown(loopback, SHUT_WR). A reset from the peer (the broker closes
 * the connection, PROTOCOL.md "Resets") ─► the loopback connection closed with SO_LINGER 0, so
 * the program's socket gets ECONNRESET as from a kernel; a reset or vanished program ─► the
 * broker connection closed (the broker resets the peer).
 */
#include "supervisor.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

socklen_t sv_loopback(int domain, int v6only, uint16_t port, struct sockaddr_storage *out) {
  memset(out, 0, sizeof *out);
  if (domain == AF_INET6) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    if (v6only) {
      in6->sin6_addr = in6addr_loopback;
    } else {
      uint8_t *a = (uint8_t *)&in6->sin6_addr; /* ::ffff:127.0.0.1 */
      a[10] = a[11] = 0xff;
      a[12] = 127;
      a[15] = 1;
    }
    return sizeof *in6;
  }
  struct sockaddr_in *in = (struct sockaddr_in *)out;
  in->sin_family = AF_INET;
  in->sin_port = htons(port);
  in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sizeof *in;
}

static uint16_t port_of(const struct sockaddr_storage *ss) {
  if (ss->ss_family == AF_INET) return ntohs(((const struct sockaddr_in *)ss)->sin_port);
  if (ss->ss_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
  return 0;
}

/* Waits for `events` on fd, up to ms; 1 when they came. */
static int wait_for(int fd, short events, int ms) {
  struct pollfd p = {.fd = fd, .events = events};
  for (;;) {
    int r = poll(&p, 1, ms);
    if (r < 0 && errno == EINTR) continue;
    return r > 0;
  }
}

/*
 * Connects the program's socket `sock` (our copy) to a fresh loopback listener and returns our
 * end of that connection, or -1 with errno.
 */
static int splice_loopback(int sock, int domain) {
  int v6only = 0;
  socklen_t ol = sizeof v6only;
  if (domain == AF_INET6) getsockopt(sock, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &ol);
  struct sockaddr_storage la, target;
  /* An AF_INET6 socket that is not V6ONLY reaches an IPv4 listener as ::ffff:127.0.0.1. */
  int ldomain = domain == AF_INET6 && v6only ? AF_INET6 : AF_INET;
  socklen_t llen = sv_loopback(ldomain, 1, 0, &la);
  int l = socket(ldomain, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0) return -1;
  if (bind(l, (struct sockaddr *)&la, llen) != 0 || listen(l, 1) != 0) goto fail;
  llen = sizeof la;
  if (getsockname(l, (struct sockaddr *)&la, &llen) != 0) goto fail;
  socklen_t tlen = sv_loopback(domain, v6only, port_of(&la), &target);
  if (connect(sock, (struct sockaddr *)&target, tlen) != 0 && errno != EINPROGRESS) goto fail;
  struct sockaddr_storage mine;
  socklen_t mlen = sizeof mine;
  if (getsockname(sock, (struct sockaddr *)&mine, &mlen) != 0) goto fail;
  for (int tries = 0; tries < 4; tries++) {
    if (!wait_for(l, POLLIN, 2000)) break;
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    int a = accept4(l, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
    if (a < 0) continue;
    if (port_of(&peer) != port_of(&mine)) {
      close(a); /* someone else's connection to our listener: not the program's */
      continue;
    }
    close(l);
    /* The program's side of a non-blocking connect: established by now or very soon. */
    wait_for(sock, POLLOUT, 2000);
    int one = 1;
    setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return a;
  }
  errno = ETIMEDOUT;
fail:;
  int e = errno;
  close(l);
  errno = e;
  return -1;
}

/* One connection's relay: two threads share it; the last one out closes both ends. */
struct relay {
  int a; /* loopback connection to the program's socket */
  int u; /* broker connection */
  pthread_mutex_t lock;
  int refs;
  int prog_shut; /* the program sent its FIN: the broker's end of stream is no reset */
  int reset;     /* the peer reset: close the program's side with an RST */
};

static void relay_put(struct relay *r) {
  pthread_mutex_lock(&r->lock);
  int last = --r->refs == 0;
  pthread_mutex_unlock(&r->lock);
  if (!last) return;
  if (r->reset) {
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(r->a, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  close(r->a);
  close(r->u);
  pthread_mutex_destroy(&r->lock);
  free(r);
}

static int write_all(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* The program's bytes to the broker. */
static void *up(void *arg) {
  struct relay *r = arg;
  uint8_t *buf = malloc(65536);
  for (; buf;) {
    ssize_t n = recv(r->a, buf, 65536, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n > 0 && write_all(r->u, buf, (size_t)n) == 0) continue;
    pthread_mutex_lock(&r->lock);
    int reset = r->reset;
    if (n == 0 && !reset) r->prog_shut = 1;
    pthread_mutex_unlock(&r->lock);
    if (n == 0 && !reset) {
      shutdown(r->u, SHUT_WR); /* the program's FIN */
    } else if (!reset) {
      shutdown(r->u, SHUT_RDWR); /* the program reset or the broker is gone: end it all */
    }
    break;
  }
  free(buf);
  sv_relay_end();
  relay_put(r);
  return NULL;
}

/* Whether the broker closed the whole connection (a reset), not only its sending side. */
static int broker_reset(int u) {
  for (int i = 0; i < 20; i++) {
    struct pollfd p = {.fd = u, .events = 0};
    if (poll(&p, 1, 0) == 1 && (p.revents & POLLHUP)) return 1;
    struct timespec t = {0, 100000};
    nanosleep(&t, NULL);
  }
  return 0;
}

/* The broker's bytes to the program. */
static void *down(void *arg) {
  struct relay *r = arg;
  uint8_t *buf = malloc(65536);
  for (; buf;) {
    ssize_t n = recv(r->u, buf, 65536, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n > 0 && write_all(r->a, buf, (size_t)n) == 0) continue;
    if (n > 0) {
      shutdown(r->u, SHUT_RDWR); /* the program is gone: the broker resets the peer */
      break;
    }
    pthread_mutex_lock(&r->lock);
    int prog_shut = r->prog_shut;
    pthread_mutex_unlock(&r->lock);
    if (n == 0 && (prog_shut || !broker_reset(r->u))) {
      shutdown(r->a, SHUT_WR); /* the peer's FIN */
      break;
    }
    pthread_mutex_lock(&r->lock);
    r->reset = 1;
    pthread_mutex_unlock(&r->lock);
    shutdown(r->a, SHUT_RD); /* wakes `up`; the close then sends the RST */
    break;
  }
  free(buf);
  relay_put(r);
  return NULL;
}

void sv_relay_start(int a, int u) {
  struct relay *r = calloc(1, sizeof *r);
  if (!r) {
    close(a);
    close(u);
    return;
  }
  r->a = a;
  r->u = u;
  r->refs = 2;
  pthread_mutex_init(&r->lock, NULL);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 128 * 1024);
  pthread_t t;
  sv_relay_begin();
  if (pthread_create(&t, &attr, up, r) != 0) {
    sv_relay_end();
    r->refs--;
    shutdown(u, SHUT_RDWR);
  }
  if (pthread_create(&t, &attr, down, r) != 0) relay_put(r);
  pthread_attr_destroy(&attr);
}

void *sv_tcp_connect(void *arg) {
  struct sv_call *c = arg;
  int u = sv_broker_open();
  if (u < 0) {
    sv_log("cannot reach the broker: %s", strerror(errno));
    sv_reply(c->listener, c->id, ENETUNREACH, 0);
    goto out;
  }
  struct wgp_request req;
  memset(&req, 0, sizeof req);
  req.op = WGP_OP_CONNECT;
  req.proto = WGP_PROTO_TCP;
  req.family = c->family;
  req.remote = c->ep;
  struct wgp_reply rep;
  if (sv_broker_call(u, &req, &rep) != 0) {
    sv_reply(c->listener, c->id, ECONNRESET, 0);
    close(u);
    goto out;
  }
  if (rep.status != WGP_OK) {
    sv_debug("connect: fd %d: %s", c->fd, wgp_status_name(rep.status));
    sv_reply(c->listener, c->id, wgp_status_errno(rep.status), 0);
    close(u);
    goto out;
  }
  if (!sv_valid(c->listener, c->id)) {
    close(u); /* the thread was killed meanwhile: the broker resets the connection */
    goto out;
  }
  int a = splice_loopback(c->sock, c->domain);
  if (a < 0) {
    sv_log("connect: cannot relay fd %d over loopback: %s", c->fd, strerror(errno));
    sv_reply(c->listener, c->id, ENETUNREACH, 0);
    close(u);
    goto out;
  }
  struct sv_entry e;
  memset(&e, 0, sizeof e);
  e.ino = sv_inode(c->sock);
  e.kind = SV_TCP;
  e.domain = c->domain;
  e.local_family = rep.family;
  e.local = rep.local;
  e.remote_family = c->shown_family;
  e.remote = c->shown;
  e.has_remote = 1;
  sv_table_put(&e);
  sv_debug("connect: fd %d through the tunnel", c->fd);
  sv_reply(c->listener, c->id, 0, 0);
  close(c->sock);
  c->sock = -1;
  sv_relay_start(a, u);
out:
  if (c->sock >= 0) close(c->sock);
  free(c);
  return NULL;
}
