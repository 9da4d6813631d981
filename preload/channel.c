/*
 * The inherited broker channel: how a process that dropped its privileges or chrooted still
 * reaches the broker (PROTOCOL.md "The channel").
 *
 * The broker's socket lives in a 0700 directory of the user who ran wrapguard, which is what keeps
 * other users out; but a server started by that user that then becomes `nobody` (nginx's
 * workers), or chroots (sshd's privilege separation, postfix), can no longer connect to that path
 * either. So the first wrapped process, still as it was started, forks a small helper that stays
 * so, and keeps one end of a SOCK_SEQPACKET socket pair to it on a well-known fd number without
 * close-on-exec: every descendant inherits it across fork, exec, setuid and chroot. A process that
 * cannot connect to the path sends the helper a message carrying a fresh reply socket
 * (SCM_RIGHTS); the helper connects to the broker and sends the connection back over that reply
 * socket. The broker sees an ordinary connection and still checks the per-run secret; another
 * user's process holds no such fd.
 *
 *   first process: socketpair ─► fork ─► fork ─► helper (own session, no fd but its end)
 *                  its end ─► fd WG_CHANNEL_FD, inheritable
 *   every process at load: is WG_CHANNEL_FD a SEQPACKET socket with the cookie the starter
 *                  recorded beside the broker's socket, or whose helper answers "H" for our
 *                  broker path? yes: adopt it; no, and the path is reachable: start a helper
 *   connect(path) ─► EACCES/ENOENT, or after chroot ─► channel:
 *                  socketpair(p, q) ─► send(channel, "C" path + q) ─► recv(p) ─► 0 + broker fd
 *
 * Nothing is carried in the environment (a shell does not pass on what a process setenv()s, and
 * programs clear theirs): a process finds the channel by its number and proves it by its cookie
 * (where it can read the record) or by asking.
 * The helper ends when every holder of the channel has closed it, when the broker's socket is
 * gone (the run ended), or on SIGTERM; it never outlives both the program and the run.
 *
 * The fd is kept out of the program's way where the C library lets us see it: close() of it
 * pretends to succeed, close_range/closefrom skip it, F_SETFD leaves it inheritable, and a dup2
 * onto its number moves it first.
 */
#include "wrapguard.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

typedef int (*chroot_fn)(const char *);
WG_EXPORT int chroot(const char *path);
WG_EXPORT int close_range(unsigned int first, unsigned int last, int flags);
WG_EXPORT void closefrom(int lowfd);
WG_DEFINE_REAL(chroot, chroot_fn)

/* Ops on the channel (first byte of a request; the rest is the broker path the asker expects). */
#define OP_HELLO 'H'
#define OP_CONNECT 'C'
/* How long an asker waits for the helper (a connect to a Unix socket is immediate unless the
 * broker is stuck). */
#define HELLO_WAIT_MS 2000
#define CONNECT_WAIT_MS 10000
/* How often an idle helper checks that the broker's socket still exists. */
#define IDLE_CHECK_MS 1000

static int channel = -1;
static int chrooted;

int wg_channel_fd(void) { return __atomic_load_n(&channel, __ATOMIC_ACQUIRE); }

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is readable (or hung up); 1, 0 on timeout, -1 on error. */
static int wait_readable(int fd, int timeout_ms) {
  long deadline = now_ms() + timeout_ms;
  for (;;) {
    long left = deadline - now_ms();
    if (left < 0) left = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    struct timespec ts = {.tv_sec = left / 1000, .tv_nsec = (left % 1000) * 1000000};
    long r = syscall(SYS_ppoll, &p, 1, &ts, NULL, 0);
    if (r > 0) return 1;
    if (r == 0) return 0;
    if (errno != EINTR) return -1;
  }
}

/* Sends one message (bytes, and fd if >= 0) without blocking on a full peer. 0 or -1. */
static int send_msg(int sock, const void *buf, size_t len, int fd, int flags) {
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
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
    long r = sys_sendmsg(sock, &m, MSG_NOSIGNAL | flags);
    if (r == (long)len) return 0;
    if (r < 0 && errno == EINTR) continue;
    if (r >= 0) errno = EMSGSIZE;
    return -1;
  }
}

/* Receives one message and the first descriptor sent with it (close-on-exec; any others are
 * closed), or *fd = -1. Returns the bytes read (0 at end of stream) or -1. */
static long recv_msg(int sock, void *buf, size_t cap, int *fd) {
  struct iovec iov = {.iov_base = buf, .iov_len = cap};
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int) * 4)];
  } u;
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                     .msg_controllen = sizeof u.buf};
  *fd = -1;
  long r;
  do {
    r = sys_recvmsg(sock, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return r;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; i++) {
      int got;
      memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof got);
      if (*fd < 0) *fd = got;
      else sys_close(got);
    }
  }
  if (m.msg_flags & MSG_TRUNC) return -2; /* not one of ours */
  return r;
}

/* Whether the broker's socket still exists (the run has not ended). */
static int broker_present(void) {
  struct stat st;
  return stat(wg_cfg.socket_path, &st) == 0 || (errno != ENOENT && errno != ENOTDIR);
}

/* The helper: answers requests until no process holds the channel any more, or the broker is
 * gone. Raw system calls only: it is a fork of a process that may have had threads. */
static __attribute__((noreturn)) void serve(int ch) {
  size_t pathlen = strnlen(wg_cfg.socket_path, sizeof wg_cfg.socket_path);
  for (;;) {
    int ready = wait_readable(ch, IDLE_CHECK_MS);
    if (ready < 0) syscall(SYS_exit_group, 0);
    if (ready == 0) {
      if (!broker_present()) syscall(SYS_exit_group, 0);
      continue;
    }
    char req[1 + sizeof wg_cfg.socket_path];
    int reply;
    long r = recv_msg(ch, req, sizeof req, &reply);
    if (r == 0) syscall(SYS_exit_group, 0); /* every holder has closed its end */
    if (r < 0 && errno == EAGAIN) continue;
    if (r == -1) syscall(SYS_exit_group, 0);
    if (reply < 0) continue;
    /* The asker names the broker it expects: a channel inherited from another run (a wrapguard
     * inside a wrapped program) says so instead of connecting to the wrong broker. */
    int ours = r == (long)(1 + pathlen) && memcmp(req + 1, wg_cfg.socket_path, pathlen) == 0;
    int fd = -1;
    char status = 0;
    int gone = 0;
    if (r < 1 || !ours || (req[0] != OP_HELLO && req[0] != OP_CONNECT)) {
      status = (char)ESTALE;
    } else if (req[0] == OP_CONNECT) {
      fd = wg_broker_connect_path();
      if (fd < 0) {
        status = (char)errno;
        gone = errno == ECONNREFUSED || errno == ENOENT || errno == ENOTDIR;
      }
    }
    send_msg(reply, &status, 1, fd, MSG_DONTWAIT);
    if (fd >= 0) sys_close(fd);
    sys_close(reply);
    if (gone) syscall(SYS_exit_group, 0); /* the broker has ended: so has the run */
  }
}

/* Puts fd onto WG_CHANNEL_FD, inheritable, raising the soft fd limit for the moment if it is
 * below the number (descriptors above the limit stay valid). 0 or -1. */
static int place(int fd) {
  struct rlimit rl, raised;
  int restore = 0;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur <= (rlim_t)WG_CHANNEL_FD) {
    if (rl.rlim_max <= (rlim_t)WG_CHANNEL_FD) {
      errno = EMFILE;
      return -1;
    }
    raised = rl;
    raised.rlim_cur = (rlim_t)WG_CHANNEL_FD + 1;
    if (setrlimit(RLIMIT_NOFILE, &raised) != 0) return -1;
    restore = 1;
  }
  /* Not dup3: syscall(SYS_dup3) is one of the numbers our syscall hook takes (syscall.c), and
   * its hook would wait for the initialisation this runs in. The lowest free number from
   * WG_CHANNEL_FD up is WG_CHANNEL_FD once whatever was there (a stale channel) is closed. */
  sys_close(WG_CHANNEL_FD);
  long r = sys_fcntl(fd, F_DUPFD, WG_CHANNEL_FD);
  int e = errno;
  if (r >= 0 && r != WG_CHANNEL_FD) {
    sys_close((int)r);
    r = -1;
    e = EBUSY;
  }
  if (restore) setrlimit(RLIMIT_NOFILE, &rl);
  errno = e;
  return r < 0 ? -1 : 0;
}

static pid_t raw_fork(void) { return (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0); }

/*
 * The channel's record: the socket cookie (SO_COOKIE, unique per boot) of the holders' end,
 * written by the process that started the helper to `channel` beside the broker's socket. A
 * process whose fd WG_CHANNEL_FD has that cookie holds this run's very channel, and adopts it
 * without asking: "H" is two sends, a seccomp notification and two wake-ups, about 0.25 ms on
 * every exec of every program a shell script or launcher runs (docs/performance.md, "Cold
 * start"). Anything else (no record, an unreadable one after a privilege drop or chroot, another
 * cookie) falls back to asking, so the record can speed the check up but never change its answer.
 */
static int record_path(char *out, size_t cap) {
  const char *slash = strrchr(wg_cfg.socket_path, '/');
  if (!slash) return -1;
  size_t dir = (size_t)(slash - wg_cfg.socket_path);
  if (dir + sizeof "/channel.XXXXXXXXXXXX" > cap) return -1;
  memcpy(out, wg_cfg.socket_path, dir);
  memcpy(out + dir, "/channel", sizeof "/channel");
  return 0;
}

static int cookie_of(int fd, uint64_t *cookie) {
  socklen_t len = sizeof *cookie;
  return sys_getsockopt(fd, SOL_SOCKET, SO_COOKIE, cookie, &len) == 0 && len == sizeof *cookie
             ? 0
             : -1;
}

/* Writes the record under a temporary name and renames it into place: readers see all or none. */
static void write_record(void) {
  char path[sizeof wg_cfg.socket_path + 16], tmp[sizeof path + 16];
  uint64_t cookie;
  if (record_path(path, sizeof path) != 0 || cookie_of(WG_CHANNEL_FD, &cookie) != 0) return;
  int n = snprintf(tmp, sizeof tmp, "%s.%ld", path, (long)syscall(SYS_getpid));
  if (n < 0 || (size_t)n >= sizeof tmp) return;
  int fd = (int)syscall(SYS_openat, AT_FDCWD, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;
  long w = syscall(SYS_write, fd, &cookie, sizeof cookie);
  sys_close(fd);
  if (w != (long)sizeof cookie || syscall(SYS_renameat2, AT_FDCWD, tmp, AT_FDCWD, path, 0) != 0) {
    syscall(SYS_unlinkat, AT_FDCWD, tmp, 0);
  }
}

/* Whether fd WG_CHANNEL_FD is the socket the record names, and its helper's end is still open
 * (asking would have found a helper that was killed; so does the hang-up). */
static int matches_record(void) {
  char path[sizeof wg_cfg.socket_path + 16];
  uint64_t want = 0, have;
  if (chrooted || record_path(path, sizeof path) != 0) return 0;
  long ev = sys_poll_now(WG_CHANNEL_FD, POLLRDHUP);
  if (ev < 0 || (ev & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL))) return 0;
  int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  long r = syscall(SYS_read, fd, &want, sizeof want);
  sys_close(fd);
  return r == (long)sizeof want && cookie_of(WG_CHANNEL_FD, &have) == 0 && have == want;
}

/* Starts the helper and puts our end of the channel at WG_CHANNEL_FD; 0 or -1. */
static int start_helper(void) {
  int sv[2];
  if (syscall(SYS_socketpair, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return -1;
  /* Raw forks: the program's fork handlers (and ours) are not for this. */
  pid_t mid = raw_fork();
  if (mid < 0) {
    int e = errno;
    sys_close(sv[0]);
    sys_close(sv[1]);
    errno = e;
    return -1;
  }
  if (mid == 0) {
    /* Twice, so that the helper is nobody's child here: the program's waitpid(-1) never sees
     * it, and it is reaped by init when it ends. */
    syscall(SYS_setsid);
    if (raw_fork() != 0) syscall(SYS_exit_group, 0);
    /* Nothing of the program's but the channel: no terminal, no pipe kept open. */
    int ch = (int)sys_fcntl(sv[1], F_DUPFD_CLOEXEC, 3);
    if (ch < 0) syscall(SYS_exit_group, 1);
    int null = (int)syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDWR | O_CLOEXEC);
    for (int i = 0; i < 3; i++) {
      sys_close(i);
      if (null >= 0) sys_fcntl(null, F_DUPFD, i);
    }
    if (syscall(SYS_close_range, (unsigned)ch + 1, ~0u, 0) != 0) {
      for (int i = ch + 1; i < 65536; i++) sys_close(i);
    }
    for (int i = 3; i < ch; i++) sys_close(i);
    if (syscall(SYS_chdir, "/") != 0) {
      /* Only keeps a directory busy. */
    }
    syscall(SYS_prctl, PR_SET_NAME, "wrapguard-chan", 0, 0, 0);
    /* No terminal: only an explicit SIGTERM/SIGKILL or the end of the run ends it early. */
    struct sigaction ign, dfl;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < 32; s++) {
      if (s == SIGKILL || s == SIGSTOP) continue;
      int ignore = s == SIGHUP || s == SIGINT || s == SIGQUIT || s == SIGPIPE || s == SIGTSTP ||
                   s == SIGTTIN || s == SIGTTOU || s == SIGUSR1 || s == SIGUSR2;
      sigaction(s, ignore ? &ign : &dfl, NULL);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    serve(ch);
  }
  sys_close(sv[1]);
  int status;
  /* (If the program's parent left SIGCHLD ignored, this returns ECHILD once mid has gone.) */
  while (syscall(SYS_wait4, mid, &status, 0, NULL) < 0 && errno == EINTR) {
  }
  int r = place(sv[0]);
  int e = errno;
  sys_close(sv[0]); /* the helper sees end of stream if placing failed */
  if (r != 0) {
    errno = e;
    return -1;
  }
  __atomic_store_n(&channel, WG_CHANNEL_FD, __ATOMIC_RELEASE);
  write_record();
  wg_debug("channel: helper started on fd %d", WG_CHANNEL_FD);
  return 0;
}

/* One request on channel fd ch: 0 and *fd (for CONNECT) or -1 with errno. */
static int ask(int ch, char op, int timeout_ms, int *fd) {
  char req[1 + sizeof wg_cfg.socket_path];
  size_t pathlen = strnlen(wg_cfg.socket_path, sizeof wg_cfg.socket_path);
  req[0] = op;
  memcpy(req + 1, wg_cfg.socket_path, pathlen);
  int p[2];
  if (syscall(SYS_socketpair, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p) != 0) return -1;
  /* Blocking: the helper reads requests one at a time, and a request is small. */
  int r = send_msg(ch, req, 1 + pathlen, p[1], 0);
  int e = errno;
  sys_close(p[1]); /* the helper holds the other copy: its end closes with it */
  if (r != 0) {
    sys_close(p[0]);
    errno = e == EPIPE || e == ECONNRESET || e == ENOTCONN ? ECONNREFUSED : e;
    return -1;
  }
  int ready = wait_readable(p[0], timeout_ms);
  if (ready <= 0) {
    sys_close(p[0]);
    errno = ready == 0 ? ETIMEDOUT : errno;
    return -1;
  }
  char status = 0;
  int got = -1;
  long n = recv_msg(p[0], &status, 1, &got);
  e = errno;
  sys_close(p[0]);
  if (n != 1 || status != 0 || (op == OP_CONNECT && got < 0)) {
    if (got >= 0) sys_close(got);
    errno = n == 1 && status != 0 ? (unsigned char)status : n < 0 && n != -2 ? e : EPROTO;
    return -1;
  }
  if (fd) *fd = got;
  else if (got >= 0) sys_close(got);
  return 0;
}

/* Whether fd is a Unix SOCK_SEQPACKET socket (what a channel is). */
static int looks_like_channel(int fd) {
  int type = 0, domain = 0;
  socklen_t len = sizeof type;
  if (sys_getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_SEQPACKET) {
    return 0;
  }
  len = sizeof domain;
  return sys_getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_UNIX;
}

void wg_channel_init(void) {
  int inherited = looks_like_channel(WG_CHANNEL_FD);
  if (inherited) {
    int e = 0;
    int recorded = matches_record();
    if (recorded || ask(WG_CHANNEL_FD, OP_HELLO, HELLO_WAIT_MS, NULL) == 0) {
      __atomic_store_n(&channel, WG_CHANNEL_FD, __ATOMIC_RELEASE);
      wg_debug("channel: fd %d adopted (%s)", WG_CHANNEL_FD,
               recorded ? "its cookie is the one recorded" : "its helper answered");
      return;
    }
    e = errno;
    wg_debug("channel: the inherited fd %d does not answer for this run: %s", WG_CHANNEL_FD,
             strerror(e));
  } else if (sys_fcntl(WG_CHANNEL_FD, F_GETFD, 0) >= 0) {
    /* The number holds something of the program's (or of whoever started it): leave it be. */
    wg_debug("channel: fd %d is in use, no channel", WG_CHANNEL_FD);
    return;
  }
  /* No channel of this run. Only a process that can itself reach the broker gains anything from a
   * helper (one that already dropped its privileges could not connect for it either). */
  if (!broker_present() || access(wg_cfg.socket_path, W_OK) != 0) {
    wg_debug("channel: the broker is out of reach, no channel");
    return;
  }
  if (start_helper() != 0) {
    wg_debug("channel: cannot start the helper: %s", strerror(errno));
  }
}

int wg_channel_open(void) {
  int ch = wg_channel_fd();
  if (ch < 0) {
    errno = EACCES;
    return -1;
  }
  int fd = -1;
  if (ask(ch, OP_CONNECT, CONNECT_WAIT_MS, &fd) == 0) return fd;
  if (errno == EBADF || errno == ENOTSOCK) {
    /* Closed (or replaced) behind our back, by a raw system call: there is no channel. */
    __atomic_store_n(&channel, -1, __ATOMIC_RELEASE);
    errno = EACCES;
  }
  return -1;
}

int wg_channel_preferred(void) { return __atomic_load_n(&chrooted, __ATOMIC_RELAXED); }

/* A dup2/dup3 onto the channel's number: the channel moves out of the way first (this process
 * keeps it; what it execs will not find it at the well-known number). */
void wg_channel_evict(int fd) {
  int ch = wg_channel_fd();
  if (ch < 0 || fd != ch) return;
  int moved = (int)sys_fcntl(ch, F_DUPFD_CLOEXEC, ch + 1);
  if (moved < 0) moved = (int)sys_fcntl(ch, F_DUPFD_CLOEXEC, 3);
  __atomic_store_n(&channel, moved < 0 ? -1 : moved, __ATOMIC_RELEASE);
  wg_debug("channel: the program takes fd %d, the channel moves to %d", fd, moved);
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
