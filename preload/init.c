/*
 * Initialisation (once, from the constructor or from whichever hook runs first), symbol
 * resolution, logging and the raw system calls the rest of the interposer uses internally.
 */
#include "wrapguard.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

volatile int wg_inited;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init_body(void) {
  wg_config_parse(&wg_cfg, getenv("WRAPGUARD_SOCKET_DIR"), getenv("WRAPGUARD_SECRET"),
                  getenv("WRAPGUARD_ROUTES"), getenv("WRAPGUARD_ADDRESSES"),
                  getenv("WRAPGUARD_KILL_SWITCH"), getenv("WRAPGUARD_DEBUG"));
  if (wg_cfg.broken) {
    wg_warn("the WRAPGUARD_* environment is incomplete or malformed; denying all non-local "
            "network access");
  }
  if (wg_cfg.active) {
    static char resolv[8192];
    const char *text = wg_read_file("/etc/resolv.conf", resolv, sizeof resolv) >= 0 ? resolv : "";
    wg_dns_parse(&wg_dns, getenv("WRAPGUARD_DNS"), getenv("WRAPGUARD_DNS_SEARCH"), text);
    if (wg_cfg.broken && wg_dns.active) wg_dns.broken = 1;
    if (wg_dns.broken) {
      wg_warn("WRAPGUARD_DNS is malformed; name lookups will fail");
    }
    if (wg_dns.active) wg_dns_init();
  }
  wg_debug("init: active=%d kill_switch=%d routes=%d addresses=%d dns=%d resolv=%d",
           wg_cfg.active, wg_cfg.kill_switch, wg_cfg.nroutes, wg_cfg.naddresses,
           wg_dns.nservers, wg_dns.nresolv);
  /* Before anything can drop privileges: the first process starts the channel's helper. */
  if (wg_cfg.active && !wg_cfg.broken) wg_channel_init();
  __atomic_store_n(&wg_inited, 1, __ATOMIC_RELEASE);
  /* After the table is usable: HELLO is the launcher's proof that we are loaded (asked for by
   * `wrapguard run`, not by every user of the broker). */
  const char *hello = getenv("WRAPGUARD_HELLO");
  if (hello && strcmp(hello, "1") == 0) wg_broker_hello();
}

void wg_init_slow(void) {
  int saved = errno;
  pthread_once(&init_once, init_body);
  errno = saved;
}

__attribute__((constructor)) static void wg_constructor(void) { wg_init(); }

void *wg_real(const char *name, void *self) {
  void *p = dlsym(RTLD_NEXT, name);
  if (p == self) {
    /* Would call ourselves forever: treat as missing. */
    wg_warn("dlsym(RTLD_NEXT, \"%s\") returned the hook itself", name);
    return NULL;
  }
  return p;
}

static void vlog(const char *fmt, va_list ap) {
  char buf[512];
  int n = snprintf(buf, sizeof buf, "wrapguard[%d]: ", (int)syscall(SYS_getpid));
  if (n < 0) return;
  int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
  if (m < 0) return;
  size_t len = (size_t)n + (size_t)m;
  if (len > sizeof buf - 2) len = sizeof buf - 2;
  buf[len++] = '\n';
  syscall(SYS_write, 2, buf, len);
}

void wg_debug(const char *fmt, ...) {
  if (!wg_cfg.debug) return;
  int saved = errno;
  va_list ap;
  va_start(ap, fmt);
  vlog(fmt, ap);
  va_end(ap);
  errno = saved;
}

void wg_warn(const char *fmt, ...) {
  int saved = errno;
  va_list ap;
  va_start(ap, fmt);
  vlog(fmt, ap);
  va_end(ap);
  errno = saved;
}

/* Raw system calls: never re-enter a hook (ours or another preloaded library's). syscall(2)
 * returns -1 and sets errno on failure. */
long sys_read(int fd, void *buf, size_t n) { return syscall(SYS_read, fd, buf, n); }
long sys_close(int fd) { return syscall(SYS_close, fd); }
long sys_poll_now(int fd, short events) {
  struct pollfd p = {.fd = fd, .events = events};
  struct timespec zero = {0, 0};
  long r = syscall(SYS_ppoll, &p, 1, &zero, NULL, 0);
  return r < 0 ? r : p.revents;
}
long sys_fcntl(int fd, int cmd, long arg) { return syscall(SYS_fcntl, fd, cmd, arg); }
long sys_getsockopt(int fd, int level, int name, void *val, socklen_t *len) {
  return syscall(SYS_getsockopt, fd, level, name, val, len);
}
long sys_setsockopt(int fd, int level, int name, const void *val, socklen_t len) {
  return syscall(SYS_setsockopt, fd, level, name, val, len);
}
long sys_socket(int domain, int type, int protocol) {
  return syscall(SYS_socket, domain, type, protocol);
}
long sys_dup3(int from, int to, int flags) { return syscall(SYS_dup3, from, to, flags); }
long sys_recvfrom(int fd, void *buf, size_t n, int flags) {
  return syscall(SYS_recvfrom, fd, buf, n, flags, NULL, NULL);
}
long sys_sendmsg(int fd, const struct msghdr *msg, int flags) {
  return syscall(SYS_sendmsg, fd, msg, flags);
}
long sys_recvmsg(int fd, struct msghdr *msg, int flags) {
  return syscall(SYS_recvmsg, fd, msg, flags);
}
long wg_read_file(const char *path, char *buf, size_t cap) {
  if (cap == 0) return -1;
  int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t have = 0;
  while (have < cap - 1) {
    long r = syscall(SYS_read, fd, buf + have, cap - 1 - have);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    have += (size_t)r;
  }
  syscall(SYS_close, fd);
  buf[have] = 0;
  return (long)have;
}

long sys_getpeername(int fd, struct sockaddr *addr, socklen_t *len) {
  return syscall(SYS_getpeername, fd, addr, len);
}

int wg_send_all(int fd, const void *buf, size_t n) {
  const uint8_t *p = buf;
  while (n > 0) {
    long r = syscall(SYS_sendto, fd, p, n, MSG_NOSIGNAL, NULL, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

int wg_recv_all(int fd, void *buf, size_t n) {
  uint8_t *p = buf;
  while (n > 0) {
    long r = sys_recvfrom(fd, p, n, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) {
      errno = EPROTO;
      return -1;
    }
    p += r;
    n -= (size_t)r;
  }
  return 0;
}
