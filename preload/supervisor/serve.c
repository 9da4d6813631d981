/*
 * The notification loop: one thread receives every trapped call and decides it at once from the
 * address the program passed (read from its memory) and the socket's type (from a copy of its
 * fd). Whatever must wait (a broker round trip, a TCP handshake through the tunnel) goes to a
 * worker thread of its own, so one slow connect never stalls another process's calls.
 *
 *   connect    not AF_INET/AF_INET6              -> continue in the kernel
 *              DNS to a resolv.conf nameserver   -> redirected to the tunnel's DNS server first
 *              loopback, excluded, or not routed -> continue (the host network, as wg-quick)
 *              not routed, kill switch           -> ENETUNREACH
 *              tunnel, TCP                        -> worker: tcp.c
 *              tunnel, UDP                        -> worker: udp.c
 *              tunnel, another type               -> ENETUNREACH
 *   sendto / sendmsg / sendmmsg with an address: continue unless it is a tunnel or denied
 *              destination; UDP datagrams to the tunnel are sent here as frames (dgram.c; a
 *              sendmmsg naming one is sent here whole); denied: ENETUNREACH
 *   getsockname / getpeername of a socket we relay -> the tunnel endpoints; others continue
 *   recvfrom with an address, on a UDP socket we relay -> read here, the source shown as the
 *              peer the program connected to (udp.c); others continue
 *   bind of a tunnel address                       -> bound to loopback instead (TCP: listen.c,
 *              UDP: dgram.c, which also starts the association)
 *   listen on a socket bound there or on a wildcard -> also listened on in the tunnel
 *   accept/accept4 on such a listener              -> accepted here, shown as the tunnel peer
 *
 * "continue" (SECCOMP_USER_NOTIF_FLAG_CONTINUE) lets the kernel run the call with the memory as
 * it is then: a program that rewrites the address between our read and the kernel's can pass a
 * different one (PROTOCOL.md, limits). The filter guards against accidents, not against a program
 * that attacks its own wrapper.
 */
#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SECCOMP_IOCTL_NOTIF_ID_VALID
#define SECCOMP_IOCTL_NOTIF_ID_VALID SECCOMP_IOW(2, __u64)
#endif

void sv_reply(int listener, uint64_t id, int error, int64_t val) {
  struct seccomp_notif_resp resp;
  memset(&resp, 0, sizeof resp);
  resp.id = id;
  resp.error = error ? -error : 0;
  resp.val = error ? 0 : val;
  if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp) != 0 && errno != ENOENT) {
    sv_debug("answer: %s", strerror(errno));
  }
}

void sv_continue(int listener, uint64_t id) {
  struct seccomp_notif_resp resp;
  memset(&resp, 0, sizeof resp);
  resp.id = id;
  resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
  ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
}

int sv_valid(int listener, uint64_t id) {
  return ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
}

static pthread_mutex_t relay_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t relay_done = PTHREAD_COND_INITIALIZER;
static int relays;

void sv_relay_begin(void) {
  pthread_mutex_lock(&relay_lock);
  relays++;
  pthread_mutex_unlock(&relay_lock);
}

void sv_relay_end(void) {
  pthread_mutex_lock(&relay_lock);
  relays--;
  pthread_cond_broadcast(&relay_done);
  pthread_mutex_unlock(&relay_lock);
}

void sv_spawn(void *(*fn)(void *), struct sv_call *call) {
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  if (pthread_create(&t, &attr, fn, call) != 0) {
    sv_reply(call->listener, call->id, ENOBUFS, 0);
    if (call->sock >= 0) close(call->sock);
    free(call);
  }
  pthread_attr_destroy(&attr);
}

/* What a destination is. */
enum verdict { V_KERNEL, V_TUNNEL, V_DENY, V_FAULT, V_AFNOSUPPORT };

/* Reads and decides the sockaddr at `addr` (`len` bytes) for a socket of `domain` (0: not yet
 * known). Fills family/ep (after the DNS redirect) and shown (as the program named it). */
static enum verdict decide(pid_t tid, uint64_t addr, uint64_t len, uint8_t *family,
                           struct wgp_endpoint *ep, uint8_t *shown_family,
                           struct wgp_endpoint *shown) {
  struct sockaddr_storage ss;
  if (addr == 0 || len < sizeof(sa_family_t)) return V_KERNEL; /* the kernel says EINVAL/EFAULT */
  if (len > sizeof ss) len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  if (sv_read_mem(tid, addr, &ss, (size_t)len) != 0) {
    /* Unreadable here is unreadable for the kernel too, unless we lack the rights: then the
     * destination is unknown and must not reach the host network. */
    return errno == EFAULT ? V_FAULT : V_DENY;
  }
  if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) return V_KERNEL;
  int mapped;
  if (wg_sockaddr_parse((struct sockaddr *)&ss, (socklen_t)len, family, ep, &mapped) != 0) {
    return V_KERNEL; /* too short: EINVAL from the kernel */
  }
  *shown_family = *family;
  *shown = *ep;
  int redirected = wg_dns_redirect(&wg_dns, family, ep);
  switch (wg_route(&wg_cfg, *family, ep->addr)) {
  case WG_TUNNEL:
    return V_TUNNEL;
  case WG_DENY:
    return V_DENY;
  default:
    return redirected ? V_DENY : V_KERNEL; /* never to the host's nameserver */
  }
}

static int sockopt_int(int s, int level, int name) {
  int v = -1;
  socklen_t l = sizeof v;
  if (getsockopt(s, level, name, &v, &l) != 0) return -1;
  return v;
}

/* Our copy of the program's socket `fd` with its domain and type; -1 with *err set (0: not a
 * socket the supervisor has a say in, let the kernel answer). */
static int take_socket(pid_t tid, int fd, int *domain, int *type, int *err) {
  int s = sv_getfd(tid, fd);
  if (s < 0) {
    /* EBADF: no such fd, the kernel will say so. Anything else: we cannot see the socket, so
     * a tunnel destination must not be let through. */
    *err = errno == EBADF ? 0 : ENETUNREACH;
    if (*err) sv_log("cannot inspect fd %d of thread %d: %s", fd, (int)tid, strerror(errno));
    return -1;
  }
  *domain = sockopt_int(s, SOL_SOCKET, SO_DOMAIN);
  *type = sockopt_int(s, SOL_SOCKET, SO_TYPE);
  if (*domain < 0 || *type < 0) {
    close(s);
    *err = 0; /* not a socket: ENOTSOCK from the kernel */
    return -1;
  }
  return s;
}

static void on_connect(int listener, struct seccomp_notif *n) {
  struct sv_call c;
  memset(&c, 0, sizeof c);
  c.listener = listener;
  c.id = n->id;
  c.tid = (pid_t)n->pid;
  c.fd = (int)n->data.args[0];
  enum verdict v = decide(c.tid, n->data.args[1], n->data.args[2], &c.family, &c.ep,
                          &c.shown_family, &c.shown);
  if (v == V_KERNEL) return sv_continue(listener, c.id);
  if (v == V_FAULT) return sv_reply(listener, c.id, EFAULT, 0);
  int err = 0;
  c.sock = take_socket(c.tid, c.fd, &c.domain, &c.type, &err);
  if (c.sock < 0) {
    if (err) return sv_reply(listener, c.id, err, 0);
    return sv_continue(listener, c.id);
  }
  if (c.domain != AF_INET && c.domain != AF_INET6) {
    close(c.sock);
    return sv_reply(listener, c.id, EAFNOSUPPORT, 0);
  }
  if (c.domain == AF_INET && c.shown_family == WGP_FAMILY_V6) {
    close(c.sock);
    return sv_reply(listener, c.id, EAFNOSUPPORT, 0);
  }
  if (v == V_DENY) {
    sv_debug("connect: fd %d denied (not a tunnel destination, kill switch)", c.fd);
    close(c.sock);
    return sv_reply(listener, c.id, ENETUNREACH, 0);
  }
  if (c.domain == AF_INET6 && c.family == WGP_FAMILY_V4 &&
      sockopt_int(c.sock, IPPROTO_IPV6, IPV6_V6ONLY) == 1) {
    close(c.sock);
    return sv_reply(listener, c.id, ENETUNREACH, 0);
  }
  int fl = fcntl(c.sock, F_GETFL);
  c.nonblock = fl >= 0 && (fl & O_NONBLOCK);
  struct sv_entry e;
  if (sv_table_get(sv_inode(c.sock), &e) && (e.kind == SV_TCP || e.kind == SV_UDP) &&
      c.type == SOCK_STREAM) {
    close(c.sock);
    return sv_reply(listener, c.id, EISCONN, 0);
  }
  struct sv_call *w = malloc(sizeof *w);
  if (!w) {
    close(c.sock);
    return sv_reply(listener, c.id, ENOBUFS, 0);
  }
  *w = c;
  if (c.type == SOCK_STREAM) return sv_spawn(sv_tcp_connect, w);
  if (c.type == SOCK_DGRAM) return sv_spawn(sv_udp_connect, w);
  close(c.sock);
  free(w);
  sv_reply(listener, c.id, ENETUNREACH, 0);
}

/* Reads the `n` remote iovecs at `iov` of the program into one buffer (at most 64 KiB); returns
 * its length, or -1 with errno. */
static ssize_t gather(pid_t tid, const struct iovec *iov, size_t n, uint8_t *out) {
  size_t have = 0;
  for (size_t i = 0; i < n; i++) {
    size_t len = iov[i].iov_len;
    if (len > WGP_MAX_DATAGRAM - have) {
      errno = EMSGSIZE;
      return -1;
    }
    if (len > 0 && sv_read_mem(tid, (uint64_t)(uintptr_t)iov[i].iov_base, out + have, len) != 0) {
      return -1;
    }
    have += len;
  }
  return (ssize_t)have;
}

/*
 * A datagram's destination. A TCP socket ignores it (unless MSG_FASTOPEN, which connects). A UDP
 * datagram to a tunnel destination is read from the program and sent as a frame (dgram.c);
 * `iov` (n entries, in the program's memory) is its payload.
 */
static void on_send_to(int listener, struct seccomp_notif *n, uint64_t addr, uint64_t len,
                       uint64_t flags, const struct iovec *iov, size_t niov) {
  uint8_t family, shown_family;
  struct wgp_endpoint ep, shown;
  enum verdict v = decide((pid_t)n->pid, addr, len, &family, &ep, &shown_family, &shown);
  if (v == V_KERNEL) return sv_continue(listener, n->id);
  if (v == V_FAULT) return sv_reply(listener, n->id, EFAULT, 0);
  if (v == V_TUNNEL && !(flags & MSG_FASTOPEN)) {
    int domain, type, err = 0;
    int s = take_socket((pid_t)n->pid, (int)n->data.args[0], &domain, &type, &err);
    if (s >= 0 && type == SOCK_STREAM) {
      close(s);
      return sv_continue(listener, n->id);
    }
    if (s >= 0 && type == SOCK_DGRAM && (domain == AF_INET || domain == AF_INET6)) {
      int e = 0;
      ssize_t got = -1;
      uint8_t *buf = malloc(WGP_MAX_DATAGRAM);
      if (domain == AF_INET && shown_family == WGP_FAMILY_V6) {
        e = EAFNOSUPPORT;
      } else if (!buf) {
        e = ENOBUFS;
      } else if ((got = gather((pid_t)n->pid, iov, niov, buf)) < 0) {
        e = errno;
      } else {
        e = sv_dgram_send(s, domain, family, &ep, buf, (size_t)got);
      }
      free(buf);
      close(s);
      if (e == 0) sv_debug("send: a datagram through the tunnel");
      return sv_reply(listener, n->id, e, got);
    }
    if (s >= 0) close(s);
  }
  sv_debug("send: a datagram to a denied destination refused");
  sv_reply(listener, n->id, ENETUNREACH, 0);
}

static void on_sendto(int listener, struct seccomp_notif *n) {
  struct iovec one = {.iov_base = (void *)(uintptr_t)n->data.args[1],
                      .iov_len = (size_t)n->data.args[2]};
  on_send_to(listener, n, n->data.args[4], n->data.args[5], n->data.args[3], &one, 1);
}

static void on_sendmsg(int listener, struct seccomp_notif *n) {
  struct msghdr m;
  if (sv_read_mem((pid_t)n->pid, n->data.args[1], &m, sizeof m) != 0) {
    if (errno == EFAULT) return sv_continue(listener, n->id);
    return sv_reply(listener, n->id, ENETUNREACH, 0);
  }
  if (m.msg_name == NULL || m.msg_namelen == 0) return sv_continue(listener, n->id);
  struct iovec iov[64];
  size_t niov = m.msg_iovlen < 64 ? m.msg_iovlen : 64;
  if (niov > 0 && sv_read_mem((pid_t)n->pid, (uint64_t)(uintptr_t)m.msg_iov, iov,
                              niov * sizeof iov[0]) != 0) {
    return sv_reply(listener, n->id, EFAULT, 0);
  }
  on_send_to(listener, n, (uint64_t)(uintptr_t)m.msg_name, m.msg_namelen, n->data.args[2], iov,
             niov);
}

/*
 * sendmmsg naming a tunnel destination on a UDP socket: the supervisor sends every message of the
 * call itself, in order (tunnel ones as frames, the others on its copy of the socket), writes
 * each msg_len back and answers with the count, as the kernel would (an error after the first
 * message ends the call with the count so far).
 */
static void sendmmsg_here(int listener, struct seccomp_notif *n, struct mmsghdr *v,
                          unsigned int vlen, int s, int domain) {
  pid_t tid = (pid_t)n->pid;
  int flags = (int)n->data.args[3];
  uint8_t *buf = malloc(WGP_MAX_DATAGRAM);
  unsigned int sent = 0;
  int e = buf ? 0 : ENOBUFS;
  for (; e == 0 && sent < vlen; sent++) {
    struct msghdr *m = &v[sent].msg_hdr;
    struct iovec iov[64];
    size_t niov = m->msg_iovlen < 64 ? m->msg_iovlen : 64;
    if (niov > 0 &&
        sv_read_mem(tid, (uint64_t)(uintptr_t)m->msg_iov, iov, niov * sizeof iov[0]) != 0) {
      e = EFAULT;
      break;
    }
    ssize_t len = gather(tid, iov, niov, buf);
    if (len < 0) {
      e = errno;
      break;
    }
    uint8_t family = 0, shown_family;
    struct wgp_endpoint ep, shown;
    enum verdict d = V_KERNEL;
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    if (m->msg_name != NULL && m->msg_namelen > 0) {
      d = decide(tid, (uint64_t)(uintptr_t)m->msg_name, m->msg_namelen, &family, &ep,
                 &shown_family, &shown);
      sl = m->msg_namelen < sizeof ss ? m->msg_namelen : sizeof ss;
      if (d == V_KERNEL && sv_read_mem(tid, (uint64_t)(uintptr_t)m->msg_name, &ss, sl) != 0) {
        d = V_FAULT;
      }
    }
    if (d == V_FAULT) {
      e = EFAULT;
    } else if (d == V_DENY) {
      e = ENETUNREACH;
    } else if (d == V_TUNNEL) {
      e = sv_dgram_send(s, domain, family, &ep, buf, (size_t)len);
    } else {
      ssize_t r = sendto(s, buf, (size_t)len, flags | MSG_NOSIGNAL, sl ? (struct sockaddr *)&ss : NULL,
                         sl);
      if (r < 0) e = errno;
    }
    if (e != 0) break;
    unsigned int done = (unsigned int)len;
    uint64_t at = n->data.args[1] + sent * sizeof *v + offsetof(struct mmsghdr, msg_len);
    if (sv_write_mem(tid, at, &done, sizeof done) != 0) e = EFAULT;
  }
  free(buf);
  if (sent > 0) return sv_reply(listener, n->id, 0, sent);
  sv_reply(listener, n->id, e ? e : EINVAL, 0);
}

static void on_sendmmsg(int listener, struct seccomp_notif *n) {
  unsigned int vlen = (unsigned int)n->data.args[2];
  if (vlen > 1024) vlen = 1024; /* UIO_MAXIOV: the kernel sends no more */
  if (vlen == 0) return sv_continue(listener, n->id);
  struct mmsghdr *v = malloc(vlen * sizeof *v);
  if (!v) return sv_reply(listener, n->id, ENOBUFS, 0);
  if (sv_read_mem((pid_t)n->pid, n->data.args[1], v, vlen * sizeof *v) != 0) {
    int e = errno;
    free(v);
    if (e == EFAULT) return sv_continue(listener, n->id);
    return sv_reply(listener, n->id, ENETUNREACH, 0);
  }
  int tunnel = 0;
  for (unsigned int i = 0; i < vlen; i++) {
    if (v[i].msg_hdr.msg_name == NULL || v[i].msg_hdr.msg_namelen == 0) continue;
    uint8_t family, shown_family;
    struct wgp_endpoint ep, shown;
    enum verdict d = decide((pid_t)n->pid, (uint64_t)(uintptr_t)v[i].msg_hdr.msg_name,
                            v[i].msg_hdr.msg_namelen, &family, &ep, &shown_family, &shown);
    if (d == V_DENY && i == 0) {
      free(v);
      return sv_reply(listener, n->id, ENETUNREACH, 0);
    }
    if (d == V_TUNNEL || d == V_DENY) tunnel = 1;
  }
  if (!tunnel) {
    free(v);
    return sv_continue(listener, n->id);
  }
  int domain, type, err = 0;
  int s = take_socket((pid_t)n->pid, (int)n->data.args[0], &domain, &type, &err);
  if (s >= 0 && type == SOCK_STREAM) {
    close(s);
    free(v);
    return sv_continue(listener, n->id);
  }
  if (s < 0 || type != SOCK_DGRAM || (domain != AF_INET && domain != AF_INET6)) {
    if (s >= 0) close(s);
    free(v);
    return sv_reply(listener, n->id, ENETUNREACH, 0);
  }
  sendmmsg_here(listener, n, v, vlen, s, domain);
  close(s);
  free(v);
}

/* getsockname/getpeername of a socket we put on the tunnel: what the kernel would say for it. */
static void on_name(int listener, struct seccomp_notif *n, int peer) {
  int domain, type, err = 0;
  int s = take_socket((pid_t)n->pid, (int)n->data.args[0], &domain, &type, &err);
  if (s < 0) return sv_continue(listener, n->id);
  struct sv_entry e;
  int ours = sv_table_get(sv_inode(s), &e);
  close(s);
  if (!ours || e.kind == SV_UDP_OPEN) return sv_continue(listener, n->id);
  if (peer && !e.has_remote) return sv_reply(listener, n->id, ENOTCONN, 0);
  struct sockaddr_storage ss;
  socklen_t full = peer ? wg_sockaddr_build(e.domain, e.remote_family, &e.remote, &ss)
                        : wg_sockaddr_build(e.domain, e.local_family, &e.local, &ss);
  pid_t tid = (pid_t)n->pid;
  socklen_t have;
  if (sv_read_mem(tid, n->data.args[2], &have, sizeof have) != 0) {
    return sv_reply(listener, n->id, EFAULT, 0);
  }
  socklen_t copy = have < full ? have : full;
  if ((copy > 0 && sv_write_mem(tid, n->data.args[1], &ss, copy) != 0) ||
      sv_write_mem(tid, n->data.args[2], &full, sizeof full) != 0) {
    return sv_reply(listener, n->id, EFAULT, 0);
  }
  sv_reply(listener, n->id, 0, 0);
}

/* recvfrom(fd, buf, len, flags, src_addr, addrlen) on a relayed UDP socket: a blocking one waits
 * on a worker, in slices, so that a thread killed meanwhile does not keep the socket alive. */
static void *recvfrom_worker(void *arg);

static void on_recvfrom(int listener, struct seccomp_notif *n) {
  int domain, type, err = 0;
  int s = take_socket((pid_t)n->pid, (int)n->data.args[0], &domain, &type, &err);
  if (s < 0) return sv_continue(listener, n->id);
  struct sv_entry e;
  uint64_t ino = sv_inode(s);
  if (type != SOCK_DGRAM || !sv_table_get(ino, &e) ||
      (e.kind != SV_UDP && e.kind != SV_UDP_OPEN && e.kind != SV_UDP_BOUND)) {
    close(s);
    return sv_continue(listener, n->id);
  }
  struct sv_call *c = calloc(1, sizeof *c);
  if (!c) {
    close(s);
    return sv_reply(listener, n->id, ENOBUFS, 0);
  }
  c->listener = listener;
  c->id = n->id;
  c->tid = (pid_t)n->pid;
  c->fd = (int)n->data.args[0];
  c->sock = s;
  c->domain = e.domain;
  c->shown_family = e.remote_family;
  c->shown = e.remote;
  c->type = e.kind; /* which kind of relay: the source shown depends on it */
  c->arg = n->data.args[3];
  memcpy(c->args, n->data.args, sizeof c->args);
  int fl = fcntl(s, F_GETFL);
  c->nonblock = fl >= 0 && (fl & O_NONBLOCK);
  if (c->nonblock || (c->arg & MSG_DONTWAIT)) {
    recvfrom_worker(c);
    return;
  }
  sv_spawn(recvfrom_worker, c);
}

static void *recvfrom_worker(void *arg) {
  struct sv_call *c = arg;
  size_t want = c->args[2] < WGP_MAX_DATAGRAM ? (size_t)c->args[2] : WGP_MAX_DATAGRAM;
  uint8_t *buf = malloc(want ? want : 1);
  int flags = (int)c->arg | MSG_DONTWAIT;
  ssize_t n = -1;
  int e = ENOBUFS;
  struct sockaddr_storage from;
  socklen_t fromlen = 0;
  while (buf) {
    fromlen = sizeof from;
    n = recvfrom(c->sock, buf, want, flags, (struct sockaddr *)&from, &fromlen);
    e = errno;
    if (n >= 0 || (e != EAGAIN && e != EWOULDBLOCK) || c->nonblock || (c->arg & MSG_DONTWAIT)) {
      break;
    }
    struct pollfd p = {.fd = c->sock, .events = POLLIN};
    poll(&p, 1, 500);
    if (!sv_valid(c->listener, c->id)) goto out;
  }
  if (n < 0) {
    sv_reply(c->listener, c->id, e, 0);
    goto out;
  }
  size_t copy = (size_t)n < want ? (size_t)n : want;
  struct sockaddr_storage ss;
  socklen_t full;
  uint8_t family;
  struct wgp_endpoint ep;
  int mapped;
  if (c->type == SV_UDP) {
    full = wg_sockaddr_build(c->domain, c->shown_family, &c->shown, &ss);
  } else if (wg_sockaddr_parse((struct sockaddr *)&from, fromlen, &family, &ep, &mapped) == 0 &&
             wg_is_loopback(family, ep.addr) &&
             sv_dgram_source(sv_inode(c->sock), ep.port, &family, &ep)) {
    full = wg_sockaddr_build(c->domain, family, &ep, &ss); /* a tunnel peer's datagram */
  } else {
    ss = from; /* from the host network: as it is */
    full = fromlen;
  }
  socklen_t have = 0;
  if ((copy > 0 && sv_write_mem(c->tid, c->args[1], buf, copy) != 0) ||
      (c->args[5] != 0 && sv_read_mem(c->tid, c->args[5], &have, sizeof have) != 0)) {
    sv_reply(c->listener, c->id, EFAULT, 0);
    goto out;
  }
  socklen_t part = have < full ? have : full;
  if (c->args[5] != 0 && ((part > 0 && sv_write_mem(c->tid, c->args[4], &ss, part) != 0) ||
                          sv_write_mem(c->tid, c->args[5], &full, sizeof full) != 0)) {
    sv_reply(c->listener, c->id, EFAULT, 0);
    goto out;
  }
  sv_reply(c->listener, c->id, 0, n);
out:
  free(buf);
  close(c->sock);
  free(c);
  return NULL;
}

static void on_bind(int listener, struct seccomp_notif *n) {
  struct sv_call c;
  memset(&c, 0, sizeof c);
  c.listener = listener;
  c.id = n->id;
  c.tid = (pid_t)n->pid;
  c.fd = (int)n->data.args[0];
  struct sockaddr_storage ss;
  uint64_t len = n->data.args[2];
  if (n->data.args[1] == 0 || len < sizeof(sa_family_t)) return sv_continue(listener, c.id);
  if (len > sizeof ss) len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  if (sv_read_mem(c.tid, n->data.args[1], &ss, (size_t)len) != 0) {
    return errno == EFAULT ? sv_reply(listener, c.id, EFAULT, 0) : sv_continue(listener, c.id);
  }
  int mapped;
  if ((ss.ss_family != AF_INET && ss.ss_family != AF_INET6) ||
      wg_sockaddr_parse((struct sockaddr *)&ss, (socklen_t)len, &c.family, &c.ep, &mapped) != 0) {
    return sv_continue(listener, c.id);
  }
  int tunnel = wg_is_tunnel_address(&wg_cfg, c.family, c.ep.addr);
  int wildcard = wg_is_unspecified(c.family, c.ep.addr) && c.ep.port != 0 && wg_cfg.active &&
                 !wg_cfg.broken;
  /* Binding another address cannot send anything; the kernel decides it. */
  if (!tunnel && !wildcard) return sv_continue(listener, c.id);
  int err = 0;
  c.sock = take_socket(c.tid, c.fd, &c.domain, &c.type, &err);
  if (c.sock < 0) return err ? sv_reply(listener, c.id, err, 0) : sv_continue(listener, c.id);
  if (wildcard) {
    /* A UDP server on a wildcard port hears the tunnel too (as with the interposer): the
     * kernel's bind, done here, then the association on that port. TCP: at listen. */
    if (c.type != SOCK_DGRAM || (c.domain != AF_INET && c.domain != AF_INET6)) {
      close(c.sock);
      return sv_continue(listener, c.id);
    }
    if (bind(c.sock, (struct sockaddr *)&ss, (socklen_t)len) != 0) {
      sv_reply(listener, c.id, errno, 0);
    } else {
      if (sv_dgram_start(c.sock, c.domain) != 0) {
        sv_log("UDP fd %d: port %u is local only: the tunnel refused it", c.fd, c.ep.port);
      }
      sv_reply(listener, c.id, 0, 0);
    }
    close(c.sock);
    return;
  }
  if (c.type == SOCK_DGRAM && (c.domain == AF_INET || c.domain == AF_INET6)) {
    int e = c.domain == AF_INET && c.family == WGP_FAMILY_V6
                ? EAFNOSUPPORT
                : sv_dgram_bind(c.sock, c.domain, c.family, &c.ep);
    if (e == 0) sv_debug("bind: UDP fd %d on the tunnel address, port %u", c.fd, c.ep.port);
    sv_reply(listener, c.id, e, 0);
  } else {
    sv_tcp_bind(&c);
  }
  close(c.sock);
}

static void on_listen(int listener, struct seccomp_notif *n) {
  struct sv_call c;
  memset(&c, 0, sizeof c);
  c.listener = listener;
  c.id = n->id;
  c.tid = (pid_t)n->pid;
  c.fd = (int)n->data.args[0];
  c.arg = n->data.args[1];
  int err = 0;
  c.sock = take_socket(c.tid, c.fd, &c.domain, &c.type, &err);
  if (c.sock < 0) return sv_continue(listener, c.id);
  if (c.type != SOCK_STREAM || (c.domain != AF_INET && c.domain != AF_INET6) ||
      !wg_cfg.active || wg_cfg.broken) {
    close(c.sock);
    return sv_continue(listener, c.id);
  }
  struct sv_call *w = malloc(sizeof *w);
  if (!w) {
    close(c.sock);
    return sv_continue(listener, c.id);
  }
  *w = c;
  sv_spawn(sv_tcp_listen, w);
}

static void on_accept(int listener, struct seccomp_notif *n, int four) {
  int domain, type, err = 0;
  int s = take_socket((pid_t)n->pid, (int)n->data.args[0], &domain, &type, &err);
  if (s < 0) return sv_continue(listener, n->id);
  struct sv_entry e;
  if (!sv_table_get(sv_inode(s), &e) || (e.kind != SV_LISTENING && e.kind != SV_RELAYED)) {
    close(s);
    return sv_continue(listener, n->id);
  }
  struct sv_call *c = calloc(1, sizeof *c);
  if (!c) {
    close(s);
    return sv_reply(listener, n->id, ENOBUFS, 0);
  }
  c->listener = listener;
  c->id = n->id;
  c->tid = (pid_t)n->pid;
  c->fd = (int)n->data.args[0];
  c->sock = s;
  c->domain = domain;
  c->ep = e.local;
  memcpy(c->args, n->data.args, sizeof c->args);
  c->args[0] = four ? 4 : 0; /* the fd is in c->fd; args[0] says which call */
  int fl = fcntl(s, F_GETFL);
  c->nonblock = fl >= 0 && (fl & O_NONBLOCK);
  if (c->nonblock) {
    sv_tcp_accept(c); /* answered at once: a connection, or EAGAIN */
    return;
  }
  sv_spawn(sv_tcp_accept, c);
}

static void handle(int listener, struct seccomp_notif *n) {
  long nr = n->data.nr;
  if (nr == SYS_connect) return on_connect(listener, n);
  if (nr == SYS_sendto) return on_sendto(listener, n);
  if (nr == SYS_sendmsg) return on_sendmsg(listener, n);
  if (nr == SYS_sendmmsg) return on_sendmmsg(listener, n);
  if (nr == SYS_getsockname) return on_name(listener, n, 0);
  if (nr == SYS_getpeername) return on_name(listener, n, 1);
  if (nr == SYS_recvfrom) return on_recvfrom(listener, n);
#ifdef SYS_accept
  if (nr == SYS_accept) return on_accept(listener, n, 0);
#endif
  if (nr == SYS_accept4) return on_accept(listener, n, 1);
  if (nr == SYS_bind) return on_bind(listener, n);
  if (nr == SYS_listen) return on_listen(listener, n);
  sv_continue(listener, n->id);
}

void sv_serve(int listener) {
  struct seccomp_notif_sizes sizes;
  memset(&sizes, 0, sizeof sizes);
  if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) != 0) {
    sizes.seccomp_notif = sizeof(struct seccomp_notif);
  }
  size_t size = sizes.seccomp_notif > sizeof(struct seccomp_notif) ? sizes.seccomp_notif
                                                                    : sizeof(struct seccomp_notif);
  struct seccomp_notif *n = malloc(size);
  if (!n) return;
  for (;;) {
    struct pollfd p = {.fd = listener, .events = POLLIN};
    if (poll(&p, 1, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p.revents & POLLIN) {
      memset(n, 0, size);
      if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, n) == 0) {
        handle(listener, n);
      } else if (errno != EINTR && errno != ENOENT) {
        sv_log("cannot receive calls: %s", strerror(errno));
        break;
      }
      continue;
    }
    if (p.revents & (POLLHUP | POLLERR)) break; /* no process uses the filter any more */
  }
  free(n);
}

void sv_relays_drain(int seconds) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += seconds;
  pthread_mutex_lock(&relay_lock);
  while (relays > 0) {
    if (pthread_cond_timedwait(&relay_done, &relay_lock, &until) != 0) break;
  }
  pthread_mutex_unlock(&relay_lock);
}
