/*
 * Unconnected UDP through the tunnel, for a program the interposer is not in: a socket that
 * sends to a tunnel destination with sendto/sendmsg, or a UDP server bound to a tunnel address
 * or to a wildcard port (which hears the host and the tunnel, as with the interposer).
 *
 *   first tunnel send (or bind to a tunnel address) ─► op UDP (broker) with the socket's port;
 *     an unbound socket is bound first (the kernel would pick a port at this send anyway), a
 *     tunnel address is bound on loopback instead
 *   each send to a tunnel destination ─► the payload, read from the program, as a frame
 *     (answered here: the program's socket never sees it)
 *   each frame from the broker ─► from a loopback socket of its own per tunnel peer, to the
 *     program's port: the source port tells the peer apart, so recvfrom (trapped when it asks
 *     for the source, serve.c) shows the tunnel peer, and no queue can go out of step when the
 *     kernel drops a datagram
 *
 * Datagrams to host destinations stay the kernel's. At most SV_DGRAM_PEERS peers per socket
 * are told apart (the least recently heard is reused beyond that). The association ends when
 * the socket is no longer listed in /proc/net/udp{,6} (checked every 5 s of silence).
 */
#include "supervisor.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define SV_DGRAM_PEERS 64

struct dgram_peer {
  uint8_t family;
  struct wgp_endpoint ep;
  int r;          /* loopback socket connected to the program's */
  uint16_t rport; /* its port: what the program sees as the source */
  uint64_t used;
};

struct dgram {
  struct dgram *next;
  uint64_t ino;
  int u;
  int domain;
  int v6only;
  struct sockaddr_storage prog; /* where the program's socket receives on loopback */
  socklen_t prog_len;
  pthread_mutex_t lock;
  struct dgram_peer peers[SV_DGRAM_PEERS];
  int npeers;
  uint64_t clock;
};

static struct dgram *dgrams;
static pthread_mutex_t dgrams_lock = PTHREAD_MUTEX_INITIALIZER;

/* The association of socket `ino`, locked (its lock held), or NULL. */
static struct dgram *find_locked(uint64_t ino) {
  pthread_mutex_lock(&dgrams_lock);
  struct dgram *d = dgrams;
  while (d && d->ino != ino) d = d->next;
  if (d) pthread_mutex_lock(&d->lock);
  pthread_mutex_unlock(&dgrams_lock);
  return d;
}

static void drop(struct dgram *d) {
  pthread_mutex_lock(&dgrams_lock);
  for (struct dgram **p = &dgrams; *p; p = &(*p)->next) {
    if (*p == d) {
      *p = d->next;
      break;
    }
  }
  pthread_mutex_lock(&d->lock);
  pthread_mutex_unlock(&dgrams_lock);
  for (int i = 0; i < d->npeers; i++) close(d->peers[i].r);
  close(d->u);
  sv_table_drop(d->ino);
  pthread_mutex_unlock(&d->lock);
  pthread_mutex_destroy(&d->lock);
  free(d);
}

/* The loopback socket that speaks for `peer` (made on first use). -1 when none can be made. */
static int peer_socket(struct dgram *d, uint8_t family, const struct wgp_endpoint *ep) {
  int oldest = 0;
  for (int i = 0; i < d->npeers; i++) {
    struct dgram_peer *p = &d->peers[i];
    if (p->family == family && memcmp(&p->ep, ep, sizeof *ep) == 0) {
      p->used = ++d->clock;
      return p->r;
    }
    if (p->used < d->peers[oldest].used) oldest = i;
  }
  int slot = d->npeers < SV_DGRAM_PEERS ? d->npeers : oldest;
  int rdomain = d->prog.ss_family;
  struct sockaddr_storage la;
  socklen_t llen = sv_loopback(rdomain, 1, 0, &la);
  int r = socket(rdomain, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (r < 0) return -1;
  if (bind(r, (struct sockaddr *)&la, llen) != 0 ||
      connect(r, (struct sockaddr *)&d->prog, d->prog_len) != 0 ||
      getsockname(r, (struct sockaddr *)&la, &llen) != 0) {
    close(r);
    return -1;
  }
  struct dgram_peer *p = &d->peers[slot];
  if (slot < d->npeers) close(p->r);
  else d->npeers++;
  p->family = family;
  p->ep = *ep;
  p->r = r;
  p->rport = la.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&la)->sin6_port)
                                      : ntohs(((struct sockaddr_in *)&la)->sin_port);
  p->used = ++d->clock;
  return r;
}

static void *dgram_down(void *arg) {
  struct dgram *d = arg;
  uint8_t *buf = malloc(WGP_MAX_DATAGRAM);
  while (buf) {
    struct pollfd p = {.fd = d->u, .events = POLLIN};
    int n = poll(&p, 1, 5000);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) {
      if (sv_socket_listed(d->ino, 0)) continue;
      break; /* the program closed its socket */
    }
    uint8_t head[WGP_FRAME_HEADER_LEN];
    struct wgp_frame f;
    if (sv_recv_all(d->u, head, sizeof head) != 0) break;
    if (wgp_decode_frame(head, sizeof head, &f) != 0) {
      sv_log("malformed frame from the broker");
      break;
    }
    if (f.length > 0 && sv_recv_all(d->u, buf, f.length) != 0) break;
    if (f.flags & WGP_FRAME_F_ERROR) continue;
    pthread_mutex_lock(&d->lock);
    int r = peer_socket(d, f.family, &f.peer);
    if (r >= 0) send(r, buf, f.length, MSG_DONTWAIT | MSG_NOSIGNAL);
    pthread_mutex_unlock(&d->lock);
  }
  free(buf);
  drop(d);
  return NULL;
}

static uint16_t port_of(const struct sockaddr_storage *ss) {
  if (ss->ss_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
  return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

/*
 * Starts the association for the program's UDP socket `sock` (our copy): `local` is the tunnel
 * endpoint it is bound to (a server), or NULL (a client: the socket's own port). 0 or an errno.
 */
static int start(int sock, int domain, const uint8_t *local_family,
                 const struct wgp_endpoint *local) {
  int v6only = 0;
  socklen_t ol = sizeof v6only;
  if (domain == AF_INET6) getsockopt(sock, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &ol);
  struct sockaddr_storage mine;
  socklen_t mlen = sizeof mine;
  memset(&mine, 0, sizeof mine);
  if (getsockname(sock, (struct sockaddr *)&mine, &mlen) != 0) return errno;
  if (port_of(&mine) == 0) {
    /* Unbound: bind the wildcard, port 0, as the kernel's first send would have. */
    struct sockaddr_storage any;
    memset(&any, 0, sizeof any);
    any.ss_family = (sa_family_t)domain;
    socklen_t alen = domain == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(sock, (struct sockaddr *)&any, alen) != 0) return errno;
    mlen = sizeof mine;
    if (getsockname(sock, (struct sockaddr *)&mine, &mlen) != 0) return errno;
  }
  struct dgram *d = calloc(1, sizeof *d);
  if (!d) return ENOBUFS;
  d->u = sv_broker_open();
  if (d->u < 0) {
    free(d);
    return ENETUNREACH;
  }
  struct wgp_request req;
  memset(&req, 0, sizeof req);
  req.op = WGP_OP_UDP;
  req.proto = WGP_PROTO_UDP;
  if (local) {
    req.family = *local_family;
    req.local = *local;
  } else {
    req.family = domain == AF_INET6 ? WGP_FAMILY_V6 : WGP_FAMILY_V4;
    req.local.port = port_of(&mine);
  }
  if (v6only) req.flags |= WGP_FLAG_V6ONLY;
  struct wgp_reply rep;
  memset(&rep, 0, sizeof rep);
  if (sv_broker_call(d->u, &req, &rep) != 0 || rep.status != WGP_OK) {
    int e = rep.status ? wgp_status_errno(rep.status) : ENETUNREACH;
    close(d->u);
    free(d);
    return e;
  }
  d->ino = sv_inode(sock);
  d->domain = domain;
  d->v6only = v6only;
  /* The program's socket receives from loopback on its port (127.0.0.1 also reaches a dual-stack
   * AF_INET6 socket as ::ffff:127.0.0.1; a V6ONLY one needs ::1). */
  d->prog_len = sv_loopback(domain == AF_INET6 && v6only ? AF_INET6 : AF_INET, 1, port_of(&mine),
                            &d->prog);
  pthread_mutex_init(&d->lock, NULL);
  struct sv_entry e;
  memset(&e, 0, sizeof e);
  e.ino = d->ino;
  e.kind = local ? SV_UDP_BOUND : SV_UDP_OPEN;
  e.domain = domain;
  e.local_family = rep.family ? rep.family : req.family;
  e.local = local ? *local : rep.local;
  if (local) e.local.port = rep.local.port ? rep.local.port : local->port;
  sv_table_put(&e);
  pthread_mutex_lock(&dgrams_lock);
  d->next = dgrams;
  dgrams = d;
  pthread_mutex_unlock(&dgrams_lock);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 128 * 1024);
  pthread_t t;
  int bad = pthread_create(&t, &attr, dgram_down, d);
  pthread_attr_destroy(&attr);
  if (bad) {
    drop(d);
    return ENOBUFS;
  }
  return 0;
}

int sv_dgram_start(int sock, int domain) {
  struct dgram *d = find_locked(sv_inode(sock));
  if (d) {
    pthread_mutex_unlock(&d->lock);
    return 0;
  }
  return start(sock, domain, NULL, NULL);
}

int sv_dgram_bind(int sock, int domain, uint8_t family, const struct wgp_endpoint *local) {
  struct sockaddr_storage lo;
  socklen_t len = sv_loopback(domain, family == WGP_FAMILY_V6, local->port, &lo);
  if (bind(sock, (struct sockaddr *)&lo, len) != 0) return errno;
  struct sockaddr_storage got;
  socklen_t glen = sizeof got;
  if (getsockname(sock, (struct sockaddr *)&got, &glen) != 0) return errno;
  struct wgp_endpoint ep = *local;
  ep.port = port_of(&got);
  return start(sock, domain, &family, &ep);
}

int sv_dgram_send(int sock, int domain, uint8_t family, const struct wgp_endpoint *to,
                  const uint8_t *payload, size_t len) {
  if (len > WGP_MAX_DATAGRAM) return EMSGSIZE;
  uint64_t ino = sv_inode(sock);
  struct dgram *d = find_locked(ino);
  if (!d) {
    int e = start(sock, domain, NULL, NULL);
    if (e != 0) return e;
    d = find_locked(ino);
    if (!d) return ENETUNREACH;
  }
  struct wgp_frame f;
  memset(&f, 0, sizeof f);
  f.length = (uint16_t)len;
  f.family = family;
  f.peer = *to;
  uint8_t head[WGP_FRAME_HEADER_LEN];
  int e = 0;
  if (wgp_encode_frame(&f, head) != 0) {
    e = EINVAL;
  } else if (sv_send_all(d->u, head, sizeof head) != 0 || sv_send_all(d->u, payload, len) != 0) {
    e = ENETDOWN; /* the broker is gone */
  }
  pthread_mutex_unlock(&d->lock);
  return e;
}

int sv_dgram_source(uint64_t ino, uint16_t port, uint8_t *family, struct wgp_endpoint *ep) {
  struct dgram *d = find_locked(ino);
  if (!d) return 0;
  int found = 0;
  for (int i = 0; i < d->npeers && !found; i++) {
    if (d->peers[i].rport == port) {
      *family = d->peers[i].family;
      *ep = d->peers[i].ep;
      found = 1;
    }
  }
  pthread_mutex_unlock(&d->lock);
  return found;
}
