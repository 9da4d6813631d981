/*
 * The data calls: read, readv, recv, recvfrom, recvmsg, recvmmsg (and the _FORTIFY_SOURCE
 * __*_chk variants, which glibc does not route through the plain symbols), write, writev, send,
 * sendto, sendmsg, sendmmsg.
 *
 * Hot path: an fd whose lock-free kind byte is NONE or FAST (a connected tunnel TCP socket, a
 * plain byte relay) goes straight to libc (a read that returns 0 is then asked whether it met a
 * reset, reset.c); only recvfrom/recvmsg on a FAST fd hide the Unix peer
 * address, as TCP reports none. SLOW fds are a TCP connect whose reply has not been read yet (the
 * reply is taken first, or its error returned), or UDP (frames, udp.c). sendto/sendmsg with an
 * address on a socket that is not ours may make it ours (a UDP datagram to a tunnel destination).
 */
#include "wrapguard.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

typedef ssize_t (*read_fn)(int, void *, size_t);
typedef ssize_t (*readv_fn)(int, const struct iovec *, int);
typedef ssize_t (*recv_fn)(int, void *, size_t, int);
typedef ssize_t (*recvfrom_fn)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
typedef ssize_t (*recvmsg_fn)(int, struct msghdr *, int);
typedef int (*recvmmsg_fn)(int, struct mmsghdr *, unsigned int, int, struct timespec *);
typedef ssize_t (*read_chk_fn)(int, void *, size_t, size_t);
typedef ssize_t (*recv_chk_fn)(int, void *, size_t, size_t, int);
typedef ssize_t (*recvfrom_chk_fn)(int, void *, size_t, size_t, int, struct sockaddr *,
                                   socklen_t *);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef ssize_t (*send_fn)(int, const void *, size_t, int);
typedef ssize_t (*sendto_fn)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
typedef ssize_t (*sendmsg_fn)(int, const struct msghdr *, int);
typedef int (*sendmmsg_fn)(int, struct mmsghdr *, unsigned int, int);

WG_EXPORT ssize_t read(int fd, void *buf, size_t n);
WG_EXPORT ssize_t readv(int fd, const struct iovec *iov, int iovcnt);
WG_EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags);
WG_EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr,
                           socklen_t *alen);
WG_EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags);
WG_EXPORT int recvmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags,
                       struct timespec *timeout);
WG_EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen);
WG_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags);
WG_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
                                 struct sockaddr *addr, socklen_t *alen);
WG_EXPORT ssize_t write(int fd, const void *buf, size_t n);
WG_EXPORT ssize_t writev(int fd, const struct iovec *iov, int iovcnt);
WG_EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags);
WG_EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *addr,
                         socklen_t alen);
WG_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags);
WG_EXPORT int sendmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags);

WG_DEFINE_REAL(read, read_fn)
WG_DEFINE_REAL(readv, readv_fn)
WG_DEFINE_REAL(recv, recv_fn)
WG_DEFINE_REAL(recvfrom, recvfrom_fn)
WG_DEFINE_REAL(recvmsg, recvmsg_fn)
WG_DEFINE_REAL(recvmmsg, recvmmsg_fn)
WG_DEFINE_REAL(__read_chk, read_chk_fn)
WG_DEFINE_REAL(__recv_chk, recv_chk_fn)
WG_DEFINE_REAL(__recvfrom_chk, recvfrom_chk_fn)
WG_DEFINE_REAL(write, write_fn)
WG_DEFINE_REAL(writev, writev_fn)
WG_DEFINE_REAL(send, send_fn)
WG_DEFINE_REAL(sendto, sendto_fn)
WG_DEFINE_REAL(sendmsg, sendmsg_fn)
WG_DEFINE_REAL(sendmmsg, sendmmsg_fn)

static ssize_t fail(int e) {
  errno = e;
  return -1;
}

/* A read that returned 0 on a connected tunnel TCP fd may have met a reset (reset.c). `want`:
 * whether the caller asked for any bytes (a zero-length read says 0 on a live socket too). */
static ssize_t eof(int fd, ssize_t r, int want, int flags) {
  if (r != 0 || !want) return r;
  int e = wg_tcp_eof_error(fd, flags & MSG_PEEK);
  return e ? fail(e) : 0;
}

static int iov_wants(const struct iovec *iov, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (iov[i].iov_len > 0) return 1;
  }
  return 0;
}

/*
 * The slow receive path. Returns 1 with *res set when it handled the call, 0 when the caller
 * should go on to libc (a TCP socket whose connect has now completed).
 */
static int slow_recv(int fd, struct msghdr *msg, int flags, ssize_t *res) {
  struct wg_sock *s = wg_get(fd);
  if (!s) return 0;
  int handled = 0;
  if (s->type == SOCK_DGRAM) {
    *res = wg_udp_recv(fd, s, msg, flags);
    handled = 1;
  } else if (s->state == WG_S_PENDING || s->state == WG_S_FAILED) {
    long fl = sys_fcntl(fd, F_GETFL, 0);
    int block = !(flags & MSG_DONTWAIT) && fl >= 0 && !(fl & O_NONBLOCK);
    if (wg_resolve(fd, s, block) != 0) {
      /* Still connecting: a kernel socket in SYN-SENT says EAGAIN too. */
      *res = -1;
      handled = 1;
    } else if (s->state == WG_S_FAILED) {
      int e = wg_take_error(s);
      if (e) {
        *res = fail(e);
        handled = 1;
      }
    } else {
      wg_set_kind(fd, WG_K_FAST);
    }
  } else if (s->state != WG_S_CONNECTED) {
    *res = fail(ENOTCONN); /* bound or listening */
    handled = 1;
  }
  int e = errno;
  wg_put(s);
  errno = e;
  return handled;
}

/* One-buffer form of slow_recv. */
static int slow_recv1(int fd, void *buf, size_t n, int flags, struct sockaddr *addr,
                      socklen_t *alen, ssize_t *res) {
  struct iovec iov = {.iov_base = buf, .iov_len = n};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
  if (addr && alen) {
    m.msg_name = addr;
    m.msg_namelen = *alen;
  }
  int handled = slow_recv(fd, &m, flags, res);
  if (handled && *res >= 0 && addr && alen) *alen = m.msg_namelen;
  return handled;
}

ssize_t read(int fd, void *buf, size_t n) {
  wg_init();
  ssize_t res;
  if (wg_kind(fd) == WG_K_SLOW && slow_recv1(fd, buf, n, 0, NULL, NULL, &res)) return res;
  return eof(fd, WG_CALL_REAL(read, fd, buf, n), n > 0, 0);
}

ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen) {
  wg_init();
  ssize_t res;
  /* n > buflen: let the C library report the overflow. */
  if (n <= buflen && wg_kind(fd) == WG_K_SLOW && slow_recv1(fd, buf, n, 0, NULL, NULL, &res)) {
    return res;
  }
  return eof(fd, WG_CALL_REAL(__read_chk, fd, buf, n, buflen), n > 0, 0);
}

ssize_t readv(int fd, const struct iovec *iov, int iovcnt) {
  wg_init();
  if (wg_kind(fd) == WG_K_SLOW && iovcnt >= 0) {
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    ssize_t res;
    if (slow_recv(fd, &m, 0, &res)) return res;
  }
  ssize_t r = WG_CALL_REAL(readv, fd, iov, iovcnt);
  return r == 0 && iovcnt > 0 ? eof(fd, r, iov_wants(iov, (size_t)iovcnt), 0) : r;
}

ssize_t recv(int fd, void *buf, size_t n, int flags) {
  wg_init();
  ssize_t res;
  if (wg_kind(fd) == WG_K_SLOW && slow_recv1(fd, buf, n, flags, NULL, NULL, &res)) return res;
  return eof(fd, WG_CALL_REAL(recv, fd, buf, n, flags), n > 0, flags);
}

ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags) {
  wg_init();
  ssize_t res;
  if (n <= buflen && wg_kind(fd) == WG_K_SLOW &&
      slow_recv1(fd, buf, n, flags, NULL, NULL, &res)) {
    return res;
  }
  return eof(fd, WG_CALL_REAL(__recv_chk, fd, buf, n, buflen, flags), n > 0, flags);
}

/* recvfrom on a tunnel TCP socket: the data, and no address (TCP gives none; the Unix
 * connection would give the broker's path). */
static ssize_t recvfrom_ours(int fd, void *buf, size_t n, int flags, struct sockaddr *addr,
                             socklen_t *alen, ssize_t res, int handled) {
  if (handled) return res;
  (void)addr;
  ssize_t r = WG_CALL_REAL(recvfrom, fd, buf, n, flags, NULL, NULL);
  if (r >= 0 && alen) *alen = 0;
  return eof(fd, r, n > 0, flags);
}

ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr,
                 socklen_t *alen) {
  wg_init();
  int kind = wg_kind(fd);
  if (kind == WG_K_NONE) return WG_CALL_REAL(recvfrom, fd, buf, n, flags, addr, alen);
  ssize_t res = -1;
  int handled = kind == WG_K_SLOW && slow_recv1(fd, buf, n, flags, addr, alen, &res);
  return recvfrom_ours(fd, buf, n, flags, addr, alen, res, handled);
}

ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
                       struct sockaddr *addr, socklen_t *alen) {
  wg_init();
  int kind = wg_kind(fd);
  if (kind == WG_K_NONE || n > buflen) {
    return WG_CALL_REAL(__recvfrom_chk, fd, buf, n, buflen, flags, addr, alen);
  }
  ssize_t res = -1;
  int handled = kind == WG_K_SLOW && slow_recv1(fd, buf, n, flags, addr, alen, &res);
  return recvfrom_ours(fd, buf, n, flags, addr, alen, res, handled);
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags) {
  wg_init();
  int kind = wg_kind(fd);
  if (kind == WG_K_NONE || !msg) return WG_CALL_REAL(recvmsg, fd, msg, flags);
  ssize_t res;
  if (kind == WG_K_SLOW && slow_recv(fd, msg, flags, &res)) return res;
  void *name = msg->msg_name;
  msg->msg_name = NULL;
  ssize_t r = WG_CALL_REAL(recvmsg, fd, msg, flags);
  msg->msg_name = name;
  if (r >= 0) msg->msg_namelen = 0;
  return r == 0 ? eof(fd, r, msg->msg_iov && iov_wants(msg->msg_iov, msg->msg_iovlen), flags) : r;
}

int recvmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags,
             struct timespec *timeout) {
  wg_init();
  if (wg_kind(fd) != WG_K_SLOW || !vec) return WG_CALL_REAL(recvmmsg, fd, vec, vlen, flags, timeout);
  struct wg_sock *s = wg_get(fd);
  if (!s) return WG_CALL_REAL(recvmmsg, fd, vec, vlen, flags, timeout);
  if (s->type != SOCK_DGRAM) {
    wg_put(s);
    return WG_CALL_REAL(recvmmsg, fd, vec, vlen, flags, timeout);
  }
  /* One datagram as the flags say, then whatever is already queued (MSG_WAITFORONE is the
   * only kind of waiting we do; the timeout is not applied). */
  unsigned int i = 0;
  int inner = flags & ~(MSG_WAITFORONE);
  for (; i < vlen; i++) {
    ssize_t r = wg_udp_recv(fd, s, &vec[i].msg_hdr, i == 0 ? inner : inner | MSG_DONTWAIT);
    if (r < 0) break;
    vec[i].msg_len = (unsigned int)r;
  }
  int e = errno;
  wg_put(s);
  if (i == 0) {
    errno = e;
    return -1;
  }
  return (int)i;
}

/* ---- sending ---- */

/* Sends on a SLOW fd that is ours. Returns 1 and *res when handled; 0 to go to libc. */
static int slow_send(int fd, const struct msghdr *msg, int flags, ssize_t *res) {
  struct wg_sock *s = wg_get(fd);
  if (!s) return 0;
  int handled = 0;
  if (s->type == SOCK_DGRAM) {
    *res = wg_udp_send(fd, s, msg, flags);
    handled = 1;
  } else if (s->state == WG_S_FAILED) {
    int e = wg_take_error(s);
    if (e) {
      *res = fail(e);
      handled = 1;
    }
  } else if (s->state == WG_S_LISTENING || s->state == WG_S_BOUND) {
    *res = fail(ENOTCONN);
    handled = 1;
  }
  /* A pending TCP connect takes the data: it queues behind the filler and goes out once the
   * connection is established. */
  int e = errno;
  wg_put(s);
  errno = e;
  return handled;
}

/* A send on a tunnel TCP fd (reset.c): MSG_NOSIGNAL, so that a reset is ECONNRESET. */
static ssize_t fast_send(int fd, const struct msghdr *msg, int flags) {
  ssize_t r = WG_CALL_REAL(sendmsg, fd, msg, flags | MSG_NOSIGNAL);
  if (r < 0 && errno == EPIPE) return fail(wg_tcp_pipe_error(fd, flags));
  return r;
}

static ssize_t fast_send1(int fd, const void *buf, size_t n, int flags) {
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = n};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
  return fast_send(fd, &m, flags);
}

static int slow_send1(int fd, const void *buf, size_t n, int flags, ssize_t *res) {
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = n};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
  return slow_send(fd, &m, flags, res);
}

ssize_t write(int fd, const void *buf, size_t n) {
  wg_init();
  ssize_t res;
  int kind = wg_kind(fd);
  if (kind == WG_K_NONE) return WG_CALL_REAL(write, fd, buf, n);
  if (kind == WG_K_SLOW && slow_send1(fd, buf, n, 0, &res)) return res;
  return fast_send1(fd, buf, n, 0);
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt) {
  wg_init();
  if (wg_kind(fd) == WG_K_SLOW && iovcnt >= 0) {
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    ssize_t res;
    if (slow_send(fd, &m, 0, &res)) return res;
  }
  if (wg_kind(fd) == WG_K_NONE || iovcnt < 0) return WG_CALL_REAL(writev, fd, iov, iovcnt);
  struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
  return fast_send(fd, &m, 0);
}

ssize_t send(int fd, const void *buf, size_t n, int flags) {
  wg_init();
  ssize_t res;
  int kind = wg_kind(fd);
  if (kind == WG_K_NONE) return WG_CALL_REAL(send, fd, buf, n, flags);
  if (kind == WG_K_SLOW && slow_send1(fd, buf, n, flags, &res)) return res;
  return fast_send1(fd, buf, n, flags);
}

ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *addr,
               socklen_t alen) {
  wg_init();
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = n};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_name = (void *)addr,
                     .msg_namelen = addr ? alen : 0};
  ssize_t res;
  int kind = wg_kind(fd);
  if (kind == WG_K_NONE) {
    if (addr && wg_udp_send_fresh(fd, &m, flags, &res)) return res;
    return WG_CALL_REAL(sendto, fd, buf, n, flags, addr, alen);
  }
  if (kind == WG_K_SLOW && slow_send(fd, &m, flags, &res)) return res;
  /* A tunnel TCP socket: the Unix connection would refuse an address (EISCONN); TCP ignores it. */
  return fast_send1(fd, buf, n, flags);
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) {
  wg_init();
  int kind = wg_kind(fd);
  ssize_t res;
  if (!msg) return WG_CALL_REAL(sendmsg, fd, msg, flags);
  if (kind == WG_K_NONE) {
    if (msg->msg_name && wg_udp_send_fresh(fd, msg, flags, &res)) return res;
    return WG_CALL_REAL(sendmsg, fd, msg, flags);
  }
  if (kind == WG_K_SLOW && slow_send(fd, msg, flags, &res)) return res;
  struct msghdr m = *msg;
  m.msg_name = NULL;
  m.msg_namelen = 0;
  return fast_send(fd, &m, flags);
}

int sendmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags) {
  wg_init();
  if (!vec || vlen == 0) return WG_CALL_REAL(sendmmsg, fd, vec, vlen, flags);
  int kind = wg_kind(fd);
  if (kind == WG_K_NONE) {
    /* The first datagram decides whether the socket moves to the tunnel. */
    ssize_t res;
    if (!vec[0].msg_hdr.msg_name || !wg_udp_send_fresh(fd, &vec[0].msg_hdr, flags, &res)) {
      return WG_CALL_REAL(sendmmsg, fd, vec, vlen, flags);
    }
    if (res < 0) return -1;
    vec[0].msg_len = (unsigned int)res;
    if (vlen == 1) return 1;
    int more = sendmmsg(fd, vec + 1, vlen - 1, flags);
    return more < 0 ? 1 : 1 + more;
  }
  struct wg_sock *s = kind == WG_K_SLOW ? wg_get(fd) : NULL;
  if (!s || s->type != SOCK_DGRAM) {
    if (s) wg_put(s);
    return WG_CALL_REAL(sendmmsg, fd, vec, vlen, flags);
  }
  unsigned int i = 0;
  for (; i < vlen; i++) {
    ssize_t r = wg_udp_send(fd, s, &vec[i].msg_hdr, flags);
    if (r < 0) break;
    vec[i].msg_len = (unsigned int)r;
  }
  int e = errno;
  wg_put(s);
  if (i == 0) {
    errno = e;
    return -1;
  }
  return (int)i;
}
