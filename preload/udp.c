/*
 * UDP over the broker stream. A UDP socket becomes ours when it first connects or sends to a
 * tunnel destination (or binds a tunnel address, bind.c): a WGP_OP_UDP request is answered with
 * the local endpoint, and from then on every datagram is one frame, a 24-byte header naming the
 * peer (destination going out, source coming in) and the payload (PROTOCOL.md "UDP frames").
 *
 * Frames are not atomic on a stream, so a reader takes one only when all of it has arrived
 * (FIONREAD), under the socket's read lock; a writer puts one whole under the write lock. A
 * connected socket's association is kept here: frames from other peers are dropped on receive, as
 * the kernel drops them.
 */
#include "wrapguard.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/* Largest payloads the kernel accepts: 65535 minus IP and UDP headers (IPv6 has no IP header
 * in its payload length). */
#define MAX_PAYLOAD_V4 65507u
#define MAX_PAYLOAD_V6 65527u

static int fail(int e) {
  errno = e;
  return -1;
}

static int wait_for(int fd, short events) {
  struct pollfd p = {.fd = fd, .events = events};
  long n = syscall(SYS_ppoll, &p, 1, NULL, NULL, (size_t)8);
  return n < 0 ? -1 : p.revents;
}

/* Opens the broker association for a UDP socket and installs it on fd. `local` is the endpoint
 * asked for (zero: any); `flags` adds request flags (HOST, REUSEADDR). Returns a reference to the
 * new entry, or NULL with errno (ENETUNREACH after a warning: the broker cannot be reached). */
static struct wg_sock *udp_attach(int fd, int domain, uint8_t family,
                                  const struct wgp_endpoint *local, uint32_t flags) {
  struct wg_sock *s = wg_sock_new(domain, SOCK_DGRAM, IPPROTO_UDP);
  if (!s) return NULL;
  if (domain == AF_INET6) {
    int v = 0;
    socklen_t l = sizeof v;
    if (sys_getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &l) == 0) s->v6only = v;
  }
  int u = wg_broker_open();
  if (u < 0) {
    wg_put(s);
    wg_broker_unreachable();
    return NULL;
  }
  struct wgp_request req;
  wg_request_init(&req, WGP_OP_UDP, WGP_PROTO_UDP, family);
  if (local) req.local = *local;
  if (s->v6only) req.flags |= WGP_FLAG_V6ONLY;
  req.flags |= flags;
  struct wgp_reply rep;
  /* The broker answers a UDP request at once (nothing crosses the tunnel): waiting is short
   * even for a non-blocking socket. */
  if (wg_broker_send(u, &req) != 0 || wg_broker_recv(u, &rep, 1) != 0) {
    sys_close(u);
    wg_put(s);
    wg_broker_unreachable();
    return NULL;
  }
  if (rep.status != WGP_OK) {
    if (rep.status == WGP_ST_AUTH) wg_warn("the broker refused our secret");
    sys_close(u);
    wg_put(s);
    errno = wgp_status_errno(rep.status);
    return NULL;
  }
  s->state = WG_S_UDP;
  s->family = rep.family;
  s->local = rep.local;
  s->host_too = (flags & WGP_FLAG_HOST) != 0;
  if (wg_install(u, fd) != 0) {
    wg_put(s);
    return NULL;
  }
  wg_note_identity(fd, s);
  if (wg_set(fd, s) != 0) {
    wg_put(s);
    return NULL;
  }
  wg_debug("fd %d: UDP through the tunnel, local port %u", fd, rep.local.port);
  return s;
}

/* The port a kernel UDP socket is already bound to (kept when it moves to the tunnel). */
static uint16_t bound_port(int fd) {
  struct sockaddr_storage ss;
  socklen_t l = sizeof ss;
  if (syscall(SYS_getsockname, fd, &ss, &l) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return 0;
}

int wg_udp_bind(int fd, int domain, uint8_t family, const struct wgp_endpoint *local) {
  struct wg_sock *s = udp_attach(fd, domain, family, local, 0);
  if (!s) return -1;
  wg_put(s);
  return 0;
}

int wg_udp_bind_wildcard(int fd, int domain, uint8_t family, const struct wgp_endpoint *local,
                         int *result) {
  if (wg_cfg.broken) return 0;
  int reuse = 0;
  socklen_t l = sizeof reuse;
  uint32_t flags = WGP_FLAG_HOST;
  if (sys_getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, &l) == 0 && reuse) {
    flags |= WGP_FLAG_REUSEADDR;
  }
  struct wg_sock *s = udp_attach(fd, domain, family, local, flags);
  if (!s) {
    if (errno == ENETUNREACH) return 0; /* warned already; the port stays local only */
    *result = -1;
    return 1;
  }
  wg_debug("fd %d: UDP port %u on the host network and in the tunnel", fd, s->local.port);
  wg_put(s);
  *result = 0;
  return 1;
}

static int socket_domain(int fd) {
  int d = -1;
  socklen_t l = sizeof d;
  if (sys_getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &d, &l) != 0) return -1;
  return d;
}

/* A destination on an IPv6-only socket must be IPv6; on an IPv4 socket, IPv4. */
static int family_allowed(const struct wg_sock *s, int sa_family, uint8_t family) {
  if (s->domain == AF_INET) return sa_family == AF_INET;
  if (family == WGP_FAMILY_V4 && s->v6only) return 0;
  return 1;
}

int wg_udp_connect(int fd, struct wg_sock *s, const struct sockaddr *addr, socklen_t len) {
  if (addr->sa_family == AF_UNSPEC) {
    /* Dissolve the association (s is ours here: connect_fresh passes AF_UNSPEC to libc). */
    pthread_mutex_lock(&s->lock);
    s->has_remote = 0;
    memset(&s->remote, 0, sizeof s->remote);
    pthread_mutex_unlock(&s->lock);
    return 0;
  }
  uint8_t family;
  struct wgp_endpoint ep;
  int mapped;
  if (wg_sockaddr_parse(addr, len, &family, &ep, &mapped) != 0) return -1;
  uint8_t shown_family = family;
  struct wgp_endpoint shown = ep;
  int redirected = wg_dns_redirect(&wg_dns, &family, &ep);
  enum wg_decision d = wg_route(&wg_cfg, family, ep.addr);
  if (redirected && d != WG_TUNNEL) d = WG_DENY; /* never to the host's nameserver */
  /* An associated socket has no kernel socket any more: it reaches the tunnel, and the host
   * network only through the broker's half of a wildcard-bound one. */
  int to_host = d == WG_PASS && s && s->host_too;
  if (d != WG_TUNNEL && !to_host) return fail(ENETUNREACH);
  struct wg_sock *fresh = NULL;
  if (!s) {
    int domain = socket_domain(fd);
    if (domain < 0) return -1;
    struct wgp_endpoint local = {.port = bound_port(fd)};
    fresh = udp_attach(fd, domain, family, &local, 0);
    if (!fresh) return -1;
    s = fresh;
  }
  int r = 0;
  if (!family_allowed(s, addr->sa_family, family)) {
    r = fail(s->domain == AF_INET ? EAFNOSUPPORT : ENETUNREACH);
  } else {
    pthread_mutex_lock(&s->lock);
    s->remote = ep;
    s->has_remote = 1;
    s->remote_family = family;
    s->remote_host = to_host;
    pthread_mutex_unlock(&s->lock);
    if (redirected) wg_dns_mark(s, family, &ep, shown_family, &shown);
  }
  if (fresh) wg_put(fresh);
  return r;
}

static size_t iov_total(const struct iovec *iov, size_t n) {
  size_t t = 0;
  for (size_t i = 0; i < n; i++) t += iov[i].iov_len;
  return t;
}

/* Reads and throws away n bytes that are known to be queued. */
static int discard(int fd, size_t n) {
  uint8_t scratch[4096];
  while (n > 0) {
    long r = sys_recvfrom(fd, scratch, n < sizeof scratch ? n : sizeof scratch, MSG_DONTWAIT);
    if (r <= 0) return -1;
    n -= (size_t)r;
  }
  return 0;
}

static int queued(int fd) {
  int n = 0;
  if (syscall(SYS_ioctl, fd, FIONREAD, &n) != 0) return -1;
  return n;
}

ssize_t wg_udp_recv(int fd, struct wg_sock *s, struct msghdr *msg, int flags) {
  long fl = sys_fcntl(fd, F_GETFL, 0);
  int nonblock = (flags & MSG_DONTWAIT) || (fl >= 0 && (fl & O_NONBLOCK));
  pthread_mutex_lock(&s->rlock);
  ssize_t result;
  for (;;) {
    uint8_t head[WGP_FRAME_HEADER_LEN];
    struct wgp_frame f;
    memset(&f, 0, sizeof f);
    int avail = queued(fd);
    if (avail < 0) {
      result = -1;
      break;
    }
    long r = -1;
    if (avail >= WGP_FRAME_HEADER_LEN) {
      r = sys_recvfrom(fd, head, sizeof head, MSG_PEEK | MSG_DONTWAIT);
      if (r == WGP_FRAME_HEADER_LEN && wgp_decode_frame(head, sizeof head, &f) != 0) {
        wg_warn("fd %d: malformed UDP frame from the broker", fd);
        result = fail(EPROTO);
        break;
      }
    }
    if (r != WGP_FRAME_HEADER_LEN || avail < WGP_FRAME_HEADER_LEN + (int)f.length) {
      /* Not a whole frame yet. */
      if (nonblock) {
        result = fail(EAGAIN);
        break;
      }
      int ev = wait_for(fd, POLLIN | POLLRDHUP);
      if (ev < 0) {
        result = -1; /* EINTR */
        break;
      }
      if (ev & (POLLHUP | POLLRDHUP | POLLERR)) {
        /* The broker closed our association: the tunnel is gone. Any partial frame is lost. */
        if (queued(fd) < WGP_FRAME_HEADER_LEN + (r == WGP_FRAME_HEADER_LEN ? (int)f.length : 0)) {
          result = fail(ENETDOWN);
          break;
        }
      }
      continue;
    }
    /* A whole frame is queued. From a peer other than the connected one: drop it. An ICMP error
     * is reported on a connected socket whose peer it concerns (then consumed, as the kernel's
     * sk_err is), and dropped on any other, as without IP_RECVERR. */
    pthread_mutex_lock(&s->lock);
    int from_host = (f.flags & WGP_FRAME_F_HOST) != 0;
    int other = !s->has_remote || f.family != s->remote_family ||
                f.peer.port != s->remote.port || memcmp(f.peer.addr, s->remote.addr, 16) != 0 ||
                from_host != s->remote_host;
    int drop = s->has_remote && other;
    pthread_mutex_unlock(&s->lock);
    if (f.flags & WGP_FRAME_F_ERROR) {
      if (discard(fd, WGP_FRAME_HEADER_LEN) != 0) {
        result = fail(EPROTO);
        break;
      }
      if (other) continue;
      result = fail(wgp_status_errno(f.error));
      break;
    }
    if (drop) {
      if (discard(fd, WGP_FRAME_HEADER_LEN + (size_t)f.length) != 0) {
        result = fail(EPROTO);
        break;
      }
      continue;
    }
    /* Header into our buffer, payload straight into the caller's, in one read. */
    struct iovec iov[1 + 64];
    size_t n = msg->msg_iovlen;
    if (n > 64) n = 64;
    iov[0].iov_base = head;
    iov[0].iov_len = sizeof head;
    size_t room = 0;
    for (size_t i = 0; i < n; i++) {
      size_t want = f.length - room;
      if (want == 0) {
        n = i;
        break;
      }
      iov[1 + i] = msg->msg_iov[i];
      if (iov[1 + i].iov_len > want) iov[1 + i].iov_len = want;
      room += iov[1 + i].iov_len;
    }
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = 1 + n};
    r = sys_recvmsg(fd, &m, MSG_DONTWAIT | (flags & MSG_PEEK));
    if (r != (long)(WGP_FRAME_HEADER_LEN + room)) {
      result = fail(EPROTO);
      break;
    }
    if (!(flags & MSG_PEEK) && room < f.length && discard(fd, f.length - room) != 0) {
      result = fail(EPROTO);
      break;
    }
    if (msg->msg_name) {
      struct sockaddr_storage ss;
      pthread_mutex_lock(&s->lock);
      wg_dns_shown(s, &f.family, &f.peer);
      pthread_mutex_unlock(&s->lock);
      socklen_t full = wg_sockaddr_build(s->domain, f.family, &f.peer, &ss);
      wg_sockaddr_copy_out(&ss, full, msg->msg_name, &msg->msg_namelen);
    }
    msg->msg_controllen = 0;
    msg->msg_flags = room < f.length ? MSG_TRUNC : 0;
    /* MSG_TRUNC asks for the datagram's real length, as the kernel gives it. */
    result = (flags & MSG_TRUNC) ? (ssize_t)f.length : (ssize_t)room;
    break;
  }
  pthread_mutex_unlock(&s->rlock);
  return result;
}

/* Frames up to this size are gathered and written with sendto and no address, which the
 * supervisor's seccomp filter lets through without a round trip (it must trap every sendmsg). */
#define WG_FRAME_GATHER 2048

/* Writes all of a frame; after a partial write the rest is written even if that means waiting,
 * since half a frame would desynchronise the stream. */
static ssize_t send_frame(int fd, struct iovec *iov, size_t n, size_t total, int nonblock) {
  uint8_t gathered[WG_FRAME_GATHER];
  struct iovec one;
  if (total <= sizeof gathered) {
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
      memcpy(gathered + at, iov[i].iov_base, iov[i].iov_len);
      at += iov[i].iov_len;
    }
    one.iov_base = gathered;
    one.iov_len = total;
    iov = &one;
    n = 1;
  }
  struct msghdr m = {.msg_iov = iov, .msg_iovlen = n};
  size_t sent = 0;
  while (sent < total) {
    int fl = MSG_NOSIGNAL | (nonblock && sent == 0 ? MSG_DONTWAIT : 0);
    long r = m.msg_iovlen == 1
                 ? syscall(SYS_sendto, fd, m.msg_iov[0].iov_base, m.msg_iov[0].iov_len, fl, NULL, 0)
                 : sys_sendmsg(fd, &m, fl);
    if (r < 0) {
      if (errno == EINTR && sent > 0) continue;
      if ((errno == EAGAIN || errno == EWOULDBLOCK) && sent > 0) {
        if (wait_for(fd, POLLOUT) < 0 && errno != EINTR) return -1;
        continue;
      }
      if (errno == EPIPE || errno == ECONNRESET) errno = ENETDOWN; /* the broker is gone */
      return -1;
    }
    sent += (size_t)r;
    /* Advance the iovecs past what was written. */
    size_t skip = (size_t)r;
    while (m.msg_iovlen > 0 && skip >= m.msg_iov[0].iov_len) {
      skip -= m.msg_iov[0].iov_len;
      m.msg_iov++;
      m.msg_iovlen--;
    }
    if (m.msg_iovlen > 0) {
      m.msg_iov[0].iov_base = (uint8_t *)m.msg_iov[0].iov_base + skip;
      m.msg_iov[0].iov_len -= skip;
    }
  }
  return 0;
}

ssize_t wg_udp_send(int fd, struct wg_sock *s, const struct msghdr *msg, int flags) {
  struct wgp_frame f;
  memset(&f, 0, sizeof f);
  if (msg->msg_name && msg->msg_namelen > 0) {
    const struct sockaddr *sa = msg->msg_name;
    int mapped;
    if (sa->sa_family == AF_UNSPEC) goto connected;
    if (wg_sockaddr_parse(sa, msg->msg_namelen, &f.family, &f.peer, &mapped) != 0) return -1;
    uint8_t shown_family = f.family;
    struct wgp_endpoint shown = f.peer;
    int redirected = wg_dns_redirect(&wg_dns, &f.family, &f.peer);
    if (!family_allowed(s, sa->sa_family, f.family)) {
      return fail(s->domain == AF_INET ? EAFNOSUPPORT : ENETUNREACH);
    }
    enum wg_decision d = wg_route(&wg_cfg, f.family, f.peer.addr);
    if (redirected && d != WG_TUNNEL) d = WG_DENY; /* never to the host's nameserver */
    if (d == WG_PASS && s->host_too) {
      f.flags = WGP_FRAME_F_HOST;
    } else if (d != WG_TUNNEL) {
      return fail(ENETUNREACH);
    }
    if (redirected) wg_dns_mark(s, f.family, &f.peer, shown_family, &shown);
  } else {
  connected:
    pthread_mutex_lock(&s->lock);
    int has = s->has_remote;
    f.peer = s->remote;
    f.family = s->remote_family;
    f.flags = s->remote_host ? WGP_FRAME_F_HOST : 0;
    pthread_mutex_unlock(&s->lock);
    if (!has) return fail(EDESTADDRREQ);
  }
  size_t total = iov_total(msg->msg_iov, msg->msg_iovlen);
  if (total > (f.family == WGP_FAMILY_V4 ? MAX_PAYLOAD_V4 : MAX_PAYLOAD_V6)) {
    return fail(EMSGSIZE);
  }
  if (msg->msg_iovlen > 64) return fail(EMSGSIZE);
  f.length = (uint16_t)total;
  uint8_t head[WGP_FRAME_HEADER_LEN];
  if (wgp_encode_frame(&f, head) != 0) return fail(EINVAL);
  struct iovec iov[1 + 64];
  iov[0].iov_base = head;
  iov[0].iov_len = sizeof head;
  for (size_t i = 0; i < msg->msg_iovlen; i++) iov[1 + i] = msg->msg_iov[i];
  long fl = sys_fcntl(fd, F_GETFL, 0);
  int nonblock = (flags & MSG_DONTWAIT) || (fl >= 0 && (fl & O_NONBLOCK));
  pthread_mutex_lock(&s->wlock);
  ssize_t r = send_frame(fd, iov, 1 + msg->msg_iovlen, sizeof head + total, nonblock);
  pthread_mutex_unlock(&s->wlock);
  return r < 0 ? -1 : (ssize_t)total;
}

int wg_udp_send_fresh(int fd, const struct msghdr *msg, int flags, ssize_t *result) {
  if (!wg_cfg.active || !msg->msg_name || msg->msg_namelen < (socklen_t)sizeof(sa_family_t)) {
    return 0;
  }
  const struct sockaddr *sa = msg->msg_name;
  if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6) return 0;
  uint8_t family;
  struct wgp_endpoint ep;
  int mapped;
  if (wg_sockaddr_parse(sa, msg->msg_namelen, &family, &ep, &mapped) != 0) return 0;
  int redirected = wg_dns_redirect(&wg_dns, &family, &ep);
  enum wg_decision d = wg_route(&wg_cfg, family, ep.addr);
  if (redirected && d != WG_TUNNEL) d = WG_DENY; /* never to the host's nameserver */
  if (d == WG_PASS) return 0;
  int type = 0, domain = socket_domain(fd);
  socklen_t l = sizeof type;
  if (domain < 0 || sys_getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) != 0) return 0;
  if (domain != AF_INET && domain != AF_INET6) return 0;
  /* TCP ignores the address of a connected socket; its connect() decided already. */
  if (type == SOCK_STREAM) return 0;
  if (d == WG_DENY || type != SOCK_DGRAM) {
    *result = fail(ENETUNREACH);
    return 1;
  }
  struct wgp_endpoint local = {.port = bound_port(fd)};
  struct wg_sock *s = udp_attach(fd, domain, family, &local, 0);
  if (!s) {
    *result = -1;
    return 1;
  }
  *result = wg_udp_send(fd, s, msg, flags);
  int e = errno;
  wg_put(s);
  errno = e;
  return 1;
}
