/*
 * Connected UDP to a tunnel destination (and DNS to a resolv.conf nameserver, redirected to the
 * tunnel's server), for a program the interposer is not in. A raw UDP fd cannot carry the
 * broker's frames (PROTOCOL.md "UDP"), so the supervisor relays:
 *
 *   worker: op UDP (broker) ─► reply: the tunnel's local endpoint
 *           a relay socket R on loopback ─► connect OUR COPY of the program's socket to R
 *           ─► connect R to the program's loopback port ─► answer the call: 0
 *   up:   datagram on R (from the program) ─► frame to the destination ─► broker
 *   down: frame from the broker ─► only from the destination (connected semantics) ─► R ─► program
 *
 * The program's socket keeps its fd, epoll registrations and options. getsockname/getpeername
 * report the tunnel endpoints (the table), and recvfrom with an address on such a socket is
 * answered by the supervisor (serve.c) so that the source is the peer the program connected to,
 * not R: resolvers (glibc's, musl's) drop answers from any other address. recvmsg is not trapped:
 * a program that reads its connected socket's source with recvmsg sees R's loopback address.
 *
 * Nothing tells the supervisor when the program closes the socket: the up thread checks every
 * 5 s of silence whether it is still listed in /proc/net/udp{,6} and ends the relay otherwise.
 * ICMP errors (error frames) are dropped.
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

struct udp_relay {
  int r; /* relay socket, connected to the program's */
  int u; /* broker connection carrying frames */
  uint64_t ino;
  uint8_t family;
  struct wgp_endpoint peer;
  pthread_mutex_t lock;
  int refs;
};

static void udp_put(struct udp_relay *x) {
  pthread_mutex_lock(&x->lock);
  int last = --x->refs == 0;
  pthread_mutex_unlock(&x->lock);
  if (!last) return;
  close(x->r);
  close(x->u);
  sv_table_drop(x->ino);
  pthread_mutex_destroy(&x->lock);
  free(x);
}

static void *udp_up(void *arg) {
  struct udp_relay *x = arg;
  uint8_t *buf = malloc(WGP_MAX_DATAGRAM);
  while (buf) {
    struct pollfd p = {.fd = x->r, .events = POLLIN};
    int n = poll(&p, 1, 5000);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) {
      if (sv_socket_listed(x->ino, 0)) continue;
      break; /* the program closed its socket */
    }
    ssize_t len = recv(x->r, buf, WGP_MAX_DATAGRAM, MSG_DONTWAIT);
    if (len < 0) {
      if (errno == EAGAIN || errno == EINTR || errno == ECONNREFUSED) continue;
      break;
    }
    struct wgp_frame f;
    memset(&f, 0, sizeof f);
    f.length = (uint16_t)len;
    f.family = x->family;
    f.peer = x->peer;
    uint8_t head[WGP_FRAME_HEADER_LEN];
    if (wgp_encode_frame(&f, head) != 0) continue;
    struct iovec iov[2] = {{head, sizeof head}, {buf, (size_t)len}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
    size_t total = sizeof head + (size_t)len;
    ssize_t w = sendmsg(x->u, &m, MSG_NOSIGNAL);
    if (w >= 0 && (size_t)w < total) {
      /* The rest of a frame, whatever it takes: half a frame would break the stream. */
      size_t done = (size_t)w;
      if (done < sizeof head) {
        if (sv_send_all(x->u, head + done, sizeof head - done) != 0) break;
        done = sizeof head;
      }
      if (sv_send_all(x->u, buf + (done - sizeof head), total - done) != 0) break;
    } else if (w < 0) {
      break;
    }
  }
  free(buf);
  shutdown(x->u, SHUT_RDWR); /* ends `down` too */
  udp_put(x);
  return NULL;
}

static void *udp_down(void *arg) {
  struct udp_relay *x = arg;
  uint8_t *buf = malloc(WGP_MAX_DATAGRAM);
  while (buf) {
    uint8_t head[WGP_FRAME_HEADER_LEN];
    struct wgp_frame f;
    if (sv_recv_all(x->u, head, sizeof head) != 0) break;
    if (wgp_decode_frame(head, sizeof head, &f) != 0) {
      sv_log("malformed frame from the broker");
      break;
    }
    if (f.length > 0 && sv_recv_all(x->u, buf, f.length) != 0) break;
    if (f.flags & WGP_FRAME_F_ERROR) continue;
    if (f.family != x->family || memcmp(&f.peer.addr, &x->peer.addr, 16) != 0 ||
        f.peer.port != x->peer.port) {
      continue; /* another peer: a connected socket does not hear it */
    }
    send(x->r, buf, f.length, MSG_DONTWAIT | MSG_NOSIGNAL);
  }
  free(buf);
  shutdown(x->r, SHUT_RDWR); /* wakes `up`'s poll */
  udp_put(x);
  return NULL;
}

void *sv_udp_connect(void *arg) {
  struct sv_call *c = arg;
  int u = sv_broker_open();
  int r = -1;
  if (u < 0) {
    sv_log("cannot reach the broker: %s", strerror(errno));
    sv_reply(c->listener, c->id, ENETUNREACH, 0);
    goto out;
  }
  int v6only = 0;
  socklen_t ol = sizeof v6only;
  if (c->domain == AF_INET6) getsockopt(c->sock, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &ol);
  struct wgp_request req;
  memset(&req, 0, sizeof req);
  req.op = WGP_OP_UDP;
  req.proto = WGP_PROTO_UDP;
  req.family = c->family;
  if (v6only) req.flags |= WGP_FLAG_V6ONLY;
  struct wgp_reply rep;
  memset(&rep, 0, sizeof rep);
  if (sv_broker_call(u, &req, &rep) != 0 || rep.status != WGP_OK) {
    int e = errno;
    sv_reply(c->listener, c->id, rep.status ? wgp_status_errno(rep.status) : e, 0);
    goto out;
  }
  int rdomain = c->domain == AF_INET6 && v6only ? AF_INET6 : AF_INET;
  struct sockaddr_storage ra, target, mine;
  socklen_t rlen = sv_loopback(rdomain, 1, 0, &ra);
  r = socket(rdomain, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (r < 0 || bind(r, (struct sockaddr *)&ra, rlen) != 0) goto fail;
  rlen = sizeof ra;
  if (getsockname(r, (struct sockaddr *)&ra, &rlen) != 0) goto fail;
  uint16_t rport = ra.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ra)->sin6_port)
                                            : ntohs(((struct sockaddr_in *)&ra)->sin_port);
  socklen_t tlen = sv_loopback(c->domain, v6only, rport, &target);
  if (!sv_valid(c->listener, c->id)) goto out;
  if (connect(c->sock, (struct sockaddr *)&target, tlen) != 0) goto fail;
  socklen_t mlen = sizeof mine;
  if (getsockname(c->sock, (struct sockaddr *)&mine, &mlen) != 0) goto fail;
  uint16_t mport = mine.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&mine)->sin6_port)
                                              : ntohs(((struct sockaddr_in *)&mine)->sin_port);
  struct sockaddr_storage back;
  socklen_t blen = sv_loopback(rdomain, 1, mport, &back);
  if (connect(r, (struct sockaddr *)&back, blen) != 0) goto fail;
  struct udp_relay *x = calloc(1, sizeof *x);
  if (!x) goto fail;
  x->r = r;
  x->u = u;
  x->ino = sv_inode(c->sock);
  x->family = c->family;
  x->peer = c->ep;
  x->refs = 2;
  pthread_mutex_init(&x->lock, NULL);
  struct sv_entry e;
  memset(&e, 0, sizeof e);
  e.ino = x->ino;
  e.kind = SV_UDP;
  e.domain = c->domain;
  e.local_family = rep.family ? rep.family : c->family;
  e.local = rep.local;
  e.remote_family = c->shown_family;
  e.remote = c->shown;
  e.has_remote = 1;
  sv_table_put(&e);
  sv_debug("connect: UDP fd %d through the tunnel", c->fd);
  sv_reply(c->listener, c->id, 0, 0);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 128 * 1024);
  pthread_t t;
  if (pthread_create(&t, &attr, udp_up, x) != 0) {
    x->refs--;
    shutdown(u, SHUT_RDWR);
  }
  if (pthread_create(&t, &attr, udp_down, x) != 0) udp_put(x);
  pthread_attr_destroy(&attr);
  close(c->sock);
  free(c);
  return NULL;
fail:
  sv_log("connect: cannot relay UDP fd %d: %s", c->fd, strerror(errno));
  sv_reply(c->listener, c->id, ENETUNREACH, 0);
out:
  if (r >= 0) close(r);
  if (u >= 0) close(u);
  close(c->sock);
  free(c);
  return NULL;
}
