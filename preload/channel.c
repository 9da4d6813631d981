/*
 * The inherited broker channel: how a process that dropped its privileges or chrooted still
 * reaches the broker (PROTOCOL.md "The channel").
 *
 * The broker's socket lives in a 0700 directory of the user who ran wrapguard, which is what keeps
 * other users out; but a server started by that user that then becomes `nobody` (nginx's
 * workers), or chroots (sshd's privilege separation, postfix), can no longer connect to that path
 * either. So the first wrapped process, still as it was started, forks a small helper that stays
 * so, and keeps one end of a SOCK_SEQPACKET socket pair to it on a high fd without close-on-exec:
 * every descendant inherits it across fork, exec, setuid and chroot. A process that cannot
 * connect to the path sends the helper a message carrying a fresh reply socket (SCM_RIGHTS); the
 * helper connects to the broker and sends the connection back over that reply socket. The broker
 * sees an ordinary connection and still checks the per-run secret; another user's process holds
 * no such fd.
 *
 *   first process: socketpair ─► fork ─► fork ─► helper (its own session; no other fd)
 *                  channel end ─► fd ≥ 1000, inheritable; WRAPGUARD_CHANNEL=fd:dev:ino
 *   any descendant: connect(path) ─► EACCES/ENOENT, or after chroot ─► channel:
 *                  socketpair(p, q) ─► sendmsg(channel, "C" + q) ─► recvmsg(p) ─► "0" + broker fd
 *
 * The fd is kept out of the program's way where the C library lets us see it: close() of it
 * pretends to succeed, close_range/closefrom skip it, and a dup2 onto its number moves it first.
 */
#include "wrapguard.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

typedef int (*chroot_fn)(const char *);
WG_EXPORT int chroot(const char *path);
WG_EXPORT int close_range(unsigned int first, unsigned int last, int flags);
WG_EXPORT void closefrom(int lowfd);
WG_DEFINE_REAL(chroot, chroot_fn)

#define CHANNEL_ENV "WRAPGUARD_CHANNEL"
/* Where the channel goes: above what programs usually use, below small RLIMIT_NOFILEs. */
#define CHANNEL_FD_MIN 1000

static int channel = -1;
static int chrooted;

int wg_channel_fd(void) { return __atomic_load_n(&channel, __ATOMIC_ACQUIRE); }

/* Sends one byte and, if fd >= 0, the descriptor with it. */
static int send_fd(int sock, char byte, int fd) {
  struct iovec iov = {.iov_base = &byte, .iov_len = 1};
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int))];
  } u;
  memset(&u, 0, sizeof u);
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
  if (fd >= 0) {
    m.msg_control = u.buf;
    m.msg_controllen = sizeof u.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  for (;;) {
    long r = sys_sendmsg(sock, &m, MSG_NOSIGNAL);
    if (r == 1) return 0;
    if (r < 0 && errno == EINTR) continue;
    return -1;
  }
}

/* Receives one byte and the descriptor sent with it (close-on-exec), or *fd = -1. Returns the
 * bytes read (0 at end of stream) or -1. */
static long recv_fd(int sock, char *byte, int *fd) {
  struct iovec iov = {.iov_base = byte, .iov_len = 1};
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int))];
  } u;
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                     .msg_controllen = sizeof u.buf};
  *fd = -1;
  long r;
  do {
    r = sys_recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
  } while (r < 0 && errno == EINTR);
  if (r <= 0) return r;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len >= CMSG_LEN(sizeof(int))) {
      memcpy(fd, CMSG_DATA(c), sizeof *fd);
    }
  }
  return r;
}

static int connect_path(void) {
  int u = (int)sys_socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (u < 0) return -1;
  struct sockaddr_un sun;
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, wg_cfg.socket_path, sizeof sun.sun_path);
  for (;;) {
    if (syscall(SYS_connect, u, (struct sockaddr *)&sun, (socklen_t)sizeof sun) == 0) return u;
    if (errno == EINTR) continue;
    int e = errno;
    sys_close(u);
    errno = e;
    return -1;
  }
}

/* The helper: answers each request until every process holding the channel is gone. Raw system
 * calls only: it is a fork of a process that may have had threads. */
static __attribute__((noreturn)) void serve(int ch) {
  for (;;) {
    char op;
    int reply;
    long r = recv_fd(ch, &op, &reply);
    if (r <= 0) syscall(SYS_exit_group, 0);
    if (reply < 0) continue;
    int u = op == 'C' ? connect_path() : -1;
    char status = u >= 0 ? 0 : (char)(op == 'C' ? errno : EINVAL);
    send_fd(reply, status, u);
    if (u >= 0) sys_close(u);
    sys_close(reply);
  }
}

/* Starts the helper and keeps our end of the channel; 0 or -1. */
static int start_helper(void) {
  int sv[2];
  if (syscall(SYS_socketpair, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return -1;
  pid_t mid = fork();
  if (mid < 0) {
    sys_close(sv[0]);
    sys_close(sv[1]);
    return -1;
  }
  if (mid == 0) {
    /* Twice, so that the helper is nobody's child here: the program's waitpid(-1) never sees
     * it, and it is reaped by init when it ends. */
    syscall(SYS_setsid);
    if (fork() != 0) syscall(SYS_exit_group, 0);
    /* Nothing of the program's but the channel: no terminal, no pipe kept open. */
    int ch = (int)sys_fcntl(sv[1], F_DUPFD_CLOEXEC, 3);
    if (ch < 0) syscall(SYS_exit_group, 1);
    int null = (int)syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDWR);
    for (int i = 0; i < 3; i++) {
      if (null >= 0) sys_dup3(null, i, 0);
      else sys_close(i);
    }
    if (syscall(SYS_close_range, (unsigned)ch + 1, ~0u, 0) != 0) {
      for (int i = ch + 1; i < 4096; i++) sys_close(i);
    }
    for (int i = 3; i < ch; i++) sys_close(i);
    if (syscall(SYS_chdir, "/") != 0) {
      /* Only keeps a directory busy. */
    }
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    for (int s = 1; s < 32; s++) {
      if (s != SIGKILL && s != SIGSTOP) sigaction(s, &ign, NULL);
    }
    serve(ch);
  }
  sys_close(sv[1]);
  int status;
  while (waitpid(mid, &status, 0) < 0 && errno == EINTR) {
  }
  struct rlimit rl;
  int min = CHANNEL_FD_MIN;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)CHANNEL_FD_MIN * 2) {
    min = (int)(rl.rlim_cur / 2);
  }
  int fd = (int)sys_fcntl(sv[0], F_DUPFD, min); /* inheritable: no close-on-exec */
  sys_close(sv[0]);
  if (fd < 0) return -1;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    sys_close(fd);
    return -1;
  }
  char text[64];
  snprintf(text, sizeof text, "%d:%lu:%lu", fd, (unsigned long)st.st_dev,
           (unsigned long)st.st_ino);
  setenv(CHANNEL_ENV, text, 1);
  __atomic_store_n(&channel, fd, __ATOMIC_RELEASE);
  wg_debug("channel: helper started, fd %d", fd);
  return 0;
}

void wg_channel_init(void) {
  const char *env = getenv(CHANNEL_ENV);
  if (!env) {
    if (start_helper() != 0) wg_debug("channel: cannot start the helper: %s", strerror(errno));
    return;
  }
  /* Inherited: the fd must still be the socket it was (a process may have closed it behind our
   * back, or be an unrelated one handed our environment). */
  int fd;
  unsigned long dev, ino;
  struct stat st;
  if (sscanf(env, "%d:%lu:%lu", &fd, &dev, &ino) == 3 && fd >= 0 && fstat(fd, &st) == 0 &&
      S_ISSOCK(st.st_mode) && (unsigned long)st.st_dev == dev &&
      (unsigned long)st.st_ino == ino) {
    __atomic_store_n(&channel, fd, __ATOMIC_RELEASE);
  }
}

int wg_channel_open(void) {
  int ch = wg_channel_fd();
  if (ch < 0) {
    errno = EACCES;
    return -1;
  }
  int p[2];
  if (syscall(SYS_socketpair, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p) != 0) return -1;
  int r = send_fd(ch, 'C', p[1]);
  sys_close(p[1]);
  if (r != 0) {
    int e = errno;
    sys_close(p[0]);
    errno = e == EPIPE || e == ECONNRESET ? EACCES : e;
    return -1;
  }
  char status = 0;
  int fd;
  long n = recv_fd(p[0], &status, &fd);
  sys_close(p[0]);
  if (n != 1 || status != 0 || fd < 0) {
    if (fd >= 0) sys_close(fd);
    errno = n == 1 && status != 0 ? status : EPROTO;
    return -1;
  }
  return fd;
}

int wg_channel_preferred(void) { return __atomic_load_n(&chrooted, __ATOMIC_RELAXED); }

/* A dup2/dup3 onto the channel's number: the channel moves out of the way first. */
void wg_channel_evict(int fd) {
  int ch = wg_channel_fd();
  if (ch < 0 || fd != ch) return;
  int moved = (int)sys_fcntl(ch, F_DUPFD, ch + 1);
  if (moved < 0) {
    __atomic_store_n(&channel, -1, __ATOMIC_RELEASE);
    return;
  }
  struct stat st;
  if (fstat(moved, &st) == 0) {
    char text[64];
    snprintf(text, sizeof text, "%d:%lu:%lu", moved, (unsigned long)st.st_dev,
             (unsigned long)st.st_ino);
    setenv(CHANNEL_ENV, text, 1);
  }
  __atomic_store_n(&channel, moved, __ATOMIC_RELEASE);
  /* The old number is the program's to reuse now (dup2 replaces it). */
}

int chroot(const char *path) {
  wg_init();
  int r = WG_CALL_REAL(chroot, path);
  /* The broker's path now names something inside the new root, which may be anyone's: from now
   * on connections come only through the channel. */
  if (r == 0) __atomic_store_n(&chrooted, 1, __ATOMIC_RELAXED);
  return r;
}

int close_range(unsigned int first, unsigned int last, int flags) {
  wg_init();
  int ch = wg_channel_fd();
  if (ch < 0 || (unsigned)ch < first || (unsigned)ch > last) {
    return (int)syscall(SYS_close_range, first, last, flags);
  }
  /* Around the channel, whether closing or marking close-on-exec: it stays open, inheritable. */
  long r = 0;
  if ((unsigned)ch > first) r = syscall(SYS_close_range, first, (unsigned)ch - 1, flags);
  if (r == 0 && (unsigned)ch < last) r = syscall(SYS_close_range, (unsigned)ch + 1, last, flags);
  return (int)r;
}

void closefrom(int lowfd) {
  wg_init();
  if (lowfd < 0) lowfd = 0;
  if (close_range((unsigned)lowfd, ~0u, 0) == 0) return;
  /* Without close_range (old kernels): what glibc's closefrom falls back to, one by one. */
  struct rlimit rl;
  int max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536 ? (int)rl.rlim_cur : 65536;
  for (int i = lowfd; i < max; i++) {
    if (i != wg_channel_fd()) sys_close(i);
  }
}
