/*
 * The client side of the broker protocol: open a connection to the broker's Unix socket, send a
 * request (and filler), read a reply, and put the connection onto the program's fd number.
 */
#include "wrapguard.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* The broker's socket by its path: what every process that still can uses (no extra hop). */
int wg_broker_connect_path(void) {
  int u = (int)sys_socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (u < 0) return -1;
  struct sockaddr_un sun;
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, wg_cfg.socket_path, sizeof sun.sun_path);
  for (;;) {
    long r = syscall(SYS_connect, u, (struct sockaddr *)&sun, (socklen_t)sizeof sun);
    if (r == 0) return u;
    if (errno == EINTR) continue;
    int e = errno;
    sys_close(u);
    errno = e;
    return -1;
  }
}

int wg_broker_open(void) {
  int e = EACCES;
  if (!wg_channel_preferred()) {
    int u = wg_broker_connect_path();
    if (u >= 0) return u;
    /* A process that dropped its privileges (EACCES on the 0700 directory), or whose root or
     * mount namespace no longer shows the path, asks through the inherited channel. */
    e = errno;
    if (e != EACCES && e != EPERM && e != ENOENT && e != ENOTDIR) return -1;
    if (wg_channel_fd() < 0) {
      errno = e;
      return -1;
    }
  }
  int u = wg_channel_open();
  /* No channel after all (closed behind our back, its helper gone): the path's own error. */
  if (u < 0 && (errno == EACCES || errno == ECONNREFUSED)) errno = e;
  return u;
}

void wg_request_init(struct wgp_request *req, uint8_t op, uint8_t proto, uint8_t family) {
  memset(req, 0, sizeof *req);
  memcpy(req->secret, wg_cfg.secret, WGP_SECRET_LEN);
  req->op = op;
  req->proto = proto;
  req->family = family;
}

int wg_broker_send(int u, const struct wgp_request *req) {
  uint8_t head[WGP_REQUEST_LEN];
  if (wgp_encode_request(req, head) != 0) {
    errno = EINVAL;
    return -1;
  }
  if (wg_send_all(u, head, sizeof head) != 0) return -1;
  /* The filler: zero bytes the broker discards once the connection is established (see
   * PROTOCOL.md "Readiness"). wg_padding_for keeps it below the send buffer: never blocks. */
  static const uint8_t zeros[4096];
  /* One sendmsg over an iovec that repeats a page of zeros: few, large socket buffers. */
  struct iovec iov[64];
  uint32_t left = req->padding;
  while (left > 0) {
    size_t n = 0, total = 0;
    while (n < sizeof iov / sizeof iov[0] && total < left) {
      size_t piece = left - total < sizeof zeros ? left - total : sizeof zeros;
      iov[n].iov_base = (void *)zeros;
      iov[n].iov_len = piece;
      total += piece;
      n++;
    }
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = n};
    long r = sys_sendmsg(u, &m, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      /* A broker that refuses (bad secret, connection refused) may answer and close before
       * the filler is all written: the reply, already queued for us, tells the outcome. */
      if (errno == EPIPE || errno == ECONNRESET) return 0;
      return -1;
    }
    left -= (uint32_t)r;
  }
  return 0;
}

int wg_broker_recv(int u, struct wgp_reply *rep, int block) {
  uint8_t buf[WGP_REPLY_LEN];
  for (;;) {
    /* Peek first so that a reply is consumed whole or not at all. */
    long r = sys_recvfrom(u, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
    if (r == (long)sizeof buf) break;
    if (r == 0) {
      errno = EPROTO; /* end of stream before a reply */
      return -1;
    }
    if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
    if (!block) {
      errno = EAGAIN;
      return -1;
    }
    if (r > 0) {
      /* Part of a reply: poll would say readable at once; give the rest a moment to come. */
      struct timespec ms = {0, 1000000};
      if (syscall(SYS_nanosleep, &ms, NULL) != 0 && errno == EINTR) return -1;
    }
    struct pollfd p = {.fd = u, .events = POLLIN | POLLRDHUP};
    long n = syscall(SYS_ppoll, &p, 1, NULL, NULL, (size_t)8);
    if (n < 0) return -1; /* EINTR: the caller decides what an interrupted wait means */
    if (r > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR))) {
      errno = EPROTO; /* a partial reply and then nothing more */
      return -1;
    }
  }
  long r = sys_recvfrom(u, buf, sizeof buf, MSG_DONTWAIT);
  if (r != (long)sizeof buf) {
    if (r >= 0) errno = EPROTO;
    return -1;
  }
  int err = wgp_decode_reply(buf, sizeof buf, rep);
  if (err != 0) {
    wg_warn("malformed reply from the broker (%s)", wgp_error_name(err));
    errno = EPROTO;
    return -1;
  }
  return 0;
}

int wg_install(int u, int fd) {
  long fl = sys_fcntl(fd, F_GETFL, 0);
  long fdfl = sys_fcntl(fd, F_GETFD, 0);
  if (fl < 0 || fdfl < 0) goto fail;
  if (sys_fcntl(u, F_SETFL, fl & O_NONBLOCK) < 0) goto fail;
  if (sys_dup3(u, fd, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) goto fail;
  sys_close(u);
  return 0;
fail:;
  int e = errno;
  sys_close(u);
  errno = e;
  return -1;
}

uint32_t wg_padding_for(int u) {
  int sndbuf = 0;
  socklen_t len = sizeof sndbuf;
  if (sys_getsockopt(u, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) != 0 || sndbuf <= 0) {
    sndbuf = 212992; /* Linux's default net.core.wmem_default */
  }
  /* AF_UNIX stream sockets poll writable while queued-but-unread bytes are at most a quarter of
   * SO_SNDBUF, and block a sender at SO_SNDBUF: half is unwritable, yet never blocks. */
  uint32_t p = (uint32_t)sndbuf / 2;
  if (p > WGP_MAX_PADDING) p = WGP_MAX_PADDING;
  return p;
}

int wg_take_error(struct wg_sock *s) {
  pthread_mutex_lock(&s->lock);
  int e = s->so_error;
  s->so_error = 0;
  pthread_mutex_unlock(&s->lock);
  return e;
}

int wg_resolve(int fd, struct wg_sock *s, int block) {
  /* The read lock orders readers of the reply; the state lock is only held for the update, so
   * getsockname and friends never wait behind a blocking reader. */
  pthread_mutex_lock(&s->rlock);
  pthread_mutex_lock(&s->lock);
  int pending = s->state == WG_S_PENDING;
  pthread_mutex_unlock(&s->lock);
  if (!pending) {
    pthread_mutex_unlock(&s->rlock);
    return 0;
  }
  struct wgp_reply rep;
  if (wg_broker_recv(fd, &rep, block) != 0) {
    int e = errno;
    if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR) {
      pthread_mutex_unlock(&s->rlock);
      errno = e;
      return -1;
    }
    /* The broker went away or spoke nonsense: the connection is lost. */
    wg_debug("fd %d: no reply from the broker (%s)", fd, strerror(e));
    pthread_mutex_lock(&s->lock);
    s->state = WG_S_FAILED;
    s->so_error = ECONNRESET;
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_unlock(&s->rlock);
    return 0;
  }
  pthread_mutex_lock(&s->lock);
  if (rep.status == WGP_OK) {
    s->state = WG_S_CONNECTED;
    s->family = rep.family;
    s->remote_family = rep.family;
    s->local = rep.local;
    s->remote = rep.remote;
    s->has_remote = 1;
  } else {
    s->state = WG_S_FAILED;
    s->so_error = wgp_status_errno(rep.status);
  }
  pthread_mutex_unlock(&s->lock);
  pthread_mutex_unlock(&s->rlock);
  if (rep.status == WGP_OK) {
    wg_set_kind(fd, WG_K_FAST);
    wg_debug("fd %d: connected", fd);
  } else {
    if (rep.status == WGP_ST_AUTH) wg_warn("the broker refused our secret");
    wg_debug("fd %d: connect failed: %s", fd, wgp_status_name(rep.status));
  }
  return 0;
}

/* Waits for a reply, retrying a wait a signal interrupted (these requests are answered at once,
 * or, for RESOLVE/QUERY, within the broker's own DNS timeouts). */
static int recv_reply(int u, struct wgp_reply *rep) {
  for (;;) {
    if (wg_broker_recv(u, rep, 1) == 0) return 0;
    if (errno != EINTR) return -1;
  }
}

void wg_broker_hello(void) {
  if (!wg_cfg.active || wg_cfg.broken) return;
  /* Under wrapguard-supervisor the program is the supervisor's child, and `run` knows the
   * supervisor's pid and waits for that HELLO only: the run's own program (whose parent it is)
   * names that one, and its descendants say nothing. A shell script or a launcher such as the pyenv
   * shim execs a dozen programs or more before the real one; a HELLO each was a broker round trip
   * on every exec. */
  long me = syscall(SYS_getpid);
  const char *as = getenv("WRAPGUARD_HELLO_AS");
  if (as && *as) {
    if (atol(as) != syscall(SYS_getppid)) return;
    me = atol(as);
  }
  int u = wg_broker_open();
  if (u < 0) {
    wg_debug("hello: cannot reach the broker: %s", strerror(errno));
    return;
  }
  struct wgp_request req;
  wg_request_init(&req, WGP_OP_HELLO, 0, WGP_FAMILY_NONE);
  req.arg = (uint32_t)me;
  struct wgp_reply rep;
  if (wg_broker_send(u, &req) != 0 || recv_reply(u, &rep) != 0) {
    wg_debug("hello: no answer from the broker: %s", strerror(errno));
  } else if (rep.status == WGP_ST_AUTH) {
    wg_warn("the broker refused our secret");
  }
  sys_close(u);
}

int wg_broker_service(uint8_t op, uint8_t family, const void *req_body, uint32_t len,
                      uint8_t *body, size_t cap, size_t *body_len) {
  *body_len = 0;
  int u = wg_broker_open();
  if (u < 0) return -1;
  struct wgp_request req;
  wg_request_init(&req, op, 0, family);
  req.arg = len;
  struct wgp_reply rep;
  if (wg_broker_send(u, &req) != 0 || wg_send_all(u, req_body, len) != 0 ||
      recv_reply(u, &rep) != 0) {
    int e = errno;
    sys_close(u);
    errno = e;
    return -1;
  }
  if (rep.status != WGP_OK) {
    if (rep.status == WGP_ST_AUTH) wg_warn("the broker refused our secret");
    sys_close(u);
    return rep.status;
  }
  size_t n = rep.arg;
  size_t take = n < cap ? n : cap;
  if (wg_recv_all(u, body, take) != 0) {
    sys_close(u);
    errno = EPROTO;
    return -1;
  }
  /* What does not fit is read and dropped, so the broker's write never fails. */
  for (size_t left = n - take; left > 0;) {
    uint8_t scratch[512];
    size_t piece = left < sizeof scratch ? left : sizeof scratch;
    if (wg_recv_all(u, scratch, piece) != 0) break;
    left -= piece;
  }
  sys_close(u);
  *body_len = n;
  return WGP_OK;
}
