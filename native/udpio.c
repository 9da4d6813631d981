/*
 * wrapguard's batched UDP socket, loaded by core/host/tunnel/udp_native.ts through Deno.dlopen.
 *
 * Why: node:dgram costs one op, one JavaScript callback and one Buffer per datagram each way, and
 * a third of the engine's CPU went there (docs/performance.md). Here a whole batch crosses into
 * JavaScript at once: wgio_recv waits on a Deno worker thread (a `nonblocking` symbol, so the
 * event loop never blocks) and fills up to `count` slots with recvmmsg; wgio_send hands a batch to
 * the kernel with one sendmmsg. The socket also gets the large buffers wireguard-go asks for,
 * which node:dgram cannot set.
 *
 * The layout shared with JavaScript, per datagram, in `meta` (WGIO_META bytes, little endian):
 *   0  u32 length        4  u16 port      6  u8 family (4 or 6)   7  u8 flags (1: truncated)
 *   8  16 address bytes (IPv4 in the first 4)
 * Datagram i's bytes are at buf + i * slot.
 *
 * Only libc. No state of its own: the caller keeps the two descriptors.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define WGIO_META 24
#define WGIO_MAX_BATCH 128
#define EXPORT __attribute__((visibility("default")))

EXPORT int32_t wgio_version(void) { return 4; }

static void set_buffer(int fd, int force, int plain, int bytes) {
  // FORCE passes net.core.[rw]mem_max with CAP_NET_ADMIN (as root); else the plain option,
  // which the kernel caps at that maximum.
  if (setsockopt(fd, SOL_SOCKET, force, &bytes, sizeof bytes) != 0)
    (void)setsockopt(fd, SOL_SOCKET, plain, &bytes, sizeof bytes);
}

/*
 * Opens a bound, non-blocking UDP socket. v6: an IPv6 socket that also takes IPv4 (mapped), as
 * node:dgram's udp6 with ipv6Only false. addr: 16 bytes for v6, 4 for v4. Returns the descriptor
 * or -errno.
 */
EXPORT int32_t wgio_open(int32_t v6, const uint8_t *addr, int32_t port, int32_t bufbytes) {
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int rc;
  if (v6) {
    int off = 0;
    (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
    memcpy(&sa.sin6_addr, addr, 16);
    rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
  } else {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    memcpy(&sa.sin_addr, addr, 4);
    rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
  }
  if (rc != 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  if (bufbytes > 0) {
    set_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, bufbytes);
    set_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, bufbytes);
  }
  return fd;
}

/* The bound port, or -errno. */
EXPORT int32_t wgio_port(int32_t fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return -errno;
  if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* The kernel's receive buffer size (what SO_RCVBUF reports, twice the request), or -errno. */
EXPORT int32_t wgio_rcvbuf(int32_t fd) {
  int v = 0;
  socklen_t len = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, &len) != 0) return -errno;
  return v;
}

/* An eventfd that wakes a waiting wgio_recv for close. */
EXPORT int32_t wgio_waker(void) {
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  return fd < 0 ? -errno : fd;
}

EXPORT void wgio_wake(int32_t waker) {
  uint64_t one = 1;
  (void)!write(waker, &one, sizeof one);
}

EXPORT void wgio_close(int32_t fd) { close(fd); }

static void put_addr(uint8_t *m, const struct sockaddr_storage *ss) {
  memset(m + 4, 0, WGIO_META - 4);
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
    uint16_t port = ntohs(s6->sin6_port);
    memcpy(m + 4, &port, 2);
    const uint8_t *a = s6->sin6_addr.s6_addr;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a, mapped, 12) == 0) {
      m[6] = 4;
      memcpy(m + 8, a + 12, 4);
    } else {
      m[6] = 6;
      memcpy(m + 8, a, 16);
    }
  } else {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
    uint16_t port = ntohs(s4->sin_port);
    memcpy(m + 4, &port, 2);
    m[6] = 4;
    memcpy(m + 8, &s4->sin_addr, 4);
  }
}

static int32_t take(int32_t fd, int32_t waker, uint8_t *buf, int32_t slot, int32_t count,
                    uint8_t *meta, int wait);

/*
 * Waits until datagrams arrive (or the waker fires) and takes up to `count` of them. Returns how
 * many, -1 once woken for close, or -errno. Runs on a Deno worker thread: it touches only its
 * arguments, which JavaScript leaves alone until the call resolves.
 */
EXPORT int32_t wgio_recv(int32_t fd, int32_t waker, uint8_t *buf, int32_t slot, int32_t count,
                         uint8_t *meta) {
  return take(fd, waker, buf, slot, count, meta, 1);
}

/*
 * As wgio_recv without waiting, on the calling thread: 0 when nothing is queued. While datagrams
 * keep coming this saves the hand-off to a worker thread and back for every batch.
 */
EXPORT int32_t wgio_try_recv(int32_t fd, uint8_t *buf, int32_t slot, int32_t count,
                             uint8_t *meta) {
  return take(fd, -1, buf, slot, count, meta, 0);
}

static int32_t take(int32_t fd, int32_t waker, uint8_t *buf, int32_t slot, int32_t count,
                    uint8_t *meta, int wait) {
  if (count > WGIO_MAX_BATCH) count = WGIO_MAX_BATCH;
  struct mmsghdr msgs[WGIO_MAX_BATCH];
  struct iovec iov[WGIO_MAX_BATCH];
  struct sockaddr_storage from[WGIO_MAX_BATCH];
  for (;;) {
    memset(msgs, 0, sizeof(struct mmsghdr) * (size_t)count);
    for (int i = 0; i < count; i++) {
      iov[i].iov_base = buf + (size_t)i * (size_t)slot;
      iov[i].iov_len = (size_t)slot;
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_name = &from[i];
      msgs[i].msg_hdr.msg_namelen = sizeof from[i];
    }
    int n = recvmmsg(fd, msgs, (unsigned)count, MSG_DONTWAIT, NULL);
    if (n > 0) {
      for (int i = 0; i < n; i++) {
        uint8_t *m = meta + (size_t)i * WGIO_META;
        put_addr(m, &from[i]);
        uint32_t len = msgs[i].msg_len;
        memcpy(m, &len, 4);
        m[7] = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) ? 1 : 0;
      }
      return n;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      // An ICMP error queued on the socket (ECONNREFUSED from an earlier send): taken, not fatal.
      if (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH) continue;
      return -errno;
    }
    if (!wait) return 0;
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = waker, .events = POLLIN}};
    if (poll(p, 2, -1) < 0 && errno != EINTR) return -errno;
    if (p[1].revents) return -1;
  }
}

static socklen_t get_addr(const uint8_t *m, int v6sock, struct sockaddr_storage *ss) {
  uint16_t port;
  memcpy(&port, m + 4, 2);
  memset(ss, 0, sizeof *ss);
  if (v6sock) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    if (m[6] == 4) {
      s6->sin6_addr.s6_addr[10] = 0xff;
      s6->sin6_addr.s6_addr[11] = 0xff;
      memcpy(&s6->sin6_addr.s6_addr[12], m + 8, 4);
    } else {
      memcpy(&s6->sin6_addr, m + 8, 16);
    }
    return sizeof *s6;
  }
  struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
  s4->sin_family = AF_INET;
  s4->sin_port = htons(port);
  memcpy(&s4->sin_addr, m + 8, 4);
  return sizeof *s4;
}

/*
 * Sends `count` datagrams in order: datagram i is meta[i]'s length of bytes at buf + i * slot.
 * Synchronous: the socket is non-blocking, so the event loop waits only while the kernel takes
 * the batch; when its buffer is full, up to 5 ms for room, then the rest is dropped as a full
 * socket buffer drops (TCP above recovers). A datagram the kernel refuses (unreachable, too big,
 * an address of the other family) is skipped. Returns how many were sent; counts[0] gets how many
 * were refused, counts[1] how many were dropped for want of room.
 */
EXPORT int32_t wgio_send(int32_t fd, int32_t v6sock, const uint8_t *buf, int32_t slot,
                         int32_t count, const uint8_t *meta, int32_t *counts) {
  if (count > WGIO_MAX_BATCH) count = WGIO_MAX_BATCH;
  struct mmsghdr msgs[WGIO_MAX_BATCH];
  struct iovec iov[WGIO_MAX_BATCH];
  struct sockaddr_storage to[WGIO_MAX_BATCH];
  memset(msgs, 0, sizeof(struct mmsghdr) * (size_t)count);
  for (int i = 0; i < count; i++) {
    const uint8_t *m = meta + (size_t)i * WGIO_META;
    uint32_t len;
    memcpy(&len, m, 4);
    iov[i].iov_base = (void *)(buf + (size_t)i * (size_t)slot);
    iov[i].iov_len = len;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_name = &to[i];
    msgs[i].msg_hdr.msg_namelen = get_addr(m, v6sock, &to[i]);
  }
  int sent = 0, failed = 0, dropped = 0, waited = 0;
  while (sent + failed + dropped < count) {
    int at = sent + failed;
    int n = sendmmsg(fd, msgs + at, (unsigned)(count - at), MSG_DONTWAIT);
    if (n > 0) {
      sent += n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
      if (waited) {
        dropped = count - sent - failed;
        break;
      }
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      (void)poll(&p, 1, 5);
      waited = 1;
      continue;
    }
    failed++; // this one datagram was refused; go on with the next
  }
  if (counts) {
    counts[0] = failed;
    counts[1] = dropped;
  }
  return sent;
}
