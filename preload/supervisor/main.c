/*
 * wrapguard-supervisor [--hello] [--check] -- PROGRAM [ARGS…]
 *
 * Started by `wrapguard run` in place of the program, with the run's WRAPGUARD_* variables and
 * the program's LD_PRELOAD in WRAPGUARD_PRELOAD (so that the interposer is not loaded into the
 * supervisor itself). The process keeps its pid and becomes the program, so that signals, the
 * exit status and the interposer's HELLO are the program's own:
 *
 * ```text
 * P (pid the host knows) ─ fork ─► S1 ─ fork ─► S (own session; S1 exits, so S is nobody's
 *   │                                            child and the program's waitpid never sees it)
 *   ├ no_new_privs, seccomp filter with NEW_LISTENER ─► listener fd number ─► pipe ─► S
 *   │                                            S: pidfd_getfd(P, listener); [--hello: HELLO
 *   │                                               with P's pid]; "ready" ─► pipe ─► P
 *   └ execve(PROGRAM) with LD_PRELOAD restored   S: serves the calls until no process uses
 *                                                   the filter (the listener polls POLLHUP)
 * ```
 *
 * The listener travels by pidfd_getfd because the filter, once installed, would trap the
 * sendmsg that SCM_RIGHTS needs, and nobody would be there to answer it yet.
 *
 * --check: only whether this kernel can do all of it (a filter in a child, pidfd_getfd of its
 * listener, ADDFD). Exit 0, or 1 with the reason.
 *
 * Exit status: the program's (it replaces this process); 126 when the program cannot be
 * supervised (the kernel lacks a feature, the broker refused), 127 when it cannot be executed.
 */
#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int sv_debug_on;

static void vlog(const char *fmt, va_list ap) {
  char buf[512];
  int n = snprintf(buf, sizeof buf, "wrapguard-supervisor: ");
  n += vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
  if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
  buf[n++] = '\n';
  ssize_t w = write(2, buf, (size_t)n);
  (void)w;
}

void sv_log(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(fmt, ap);
  va_end(ap);
}

void sv_debug(const char *fmt, ...) {
  if (!sv_debug_on) return;
  va_list ap;
  va_start(ap, fmt);
  vlog(fmt, ap);
  va_end(ap);
}

static const char *const lacks =
    "this kernel cannot supervise programs (seccomp user notification with pidfd_getfd, "
    "Linux 5.8 or later, is needed)";

/* S: takes the listener from P, says HELLO for it if asked, tells P, then serves. */
static void supervise(pid_t p, int from_p, int to_p, int hello) {
  int num = -1;
  char status = 1;
  if (read(from_p, &num, sizeof num) != (ssize_t)sizeof num) _exit(0);
  int pidfd = (int)syscall(SYS_pidfd_open, p, 0);
  int listener = pidfd < 0 ? -1 : (int)syscall(SYS_pidfd_getfd, pidfd, num, 0);
  if (listener < 0) {
    sv_log("%s: pidfd_getfd: %s", lacks, strerror(errno));
  } else if (hello && sv_broker_hello(p) != 0) {
    sv_log("cannot reach the broker: %s", strerror(errno));
  } else {
    status = 0;
  }
  ssize_t w = write(to_p, &status, 1);
  (void)w;
  close(to_p);
  close(from_p);
  if (status != 0) _exit(1);
  /* stdin and stdout are the program's, not ours; stderr is kept for warnings while the program
   * runs (sv_serve lets it go when the program exits). */
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    close(null);
  }
  signal(SIGPIPE, SIG_IGN);
  sv_serve(listener, pidfd);
  _exit(0);
}

static int check(void) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) return 1;
  pid_t c = fork();
  if (c < 0) return 1;
  if (c == 0) {
    int killable;
    int fd = sv_install_filter(&killable);
    int msg[2] = {fd, fd < 0 ? errno : killable};
    ssize_t w = write(pipefd[1], msg, sizeof msg);
    (void)w;
    pause();
    _exit(0);
  }
  int msg[2] = {-1, 0};
  ssize_t r = read(pipefd[0], msg, sizeof msg);
  int ok = 0;
  if (r != (ssize_t)sizeof msg || msg[0] < 0) {
    printf("no: seccomp user notification: %s\n", strerror(r == (ssize_t)sizeof msg ? msg[1] : EIO));
  } else {
    int pidfd = (int)syscall(SYS_pidfd_open, c, 0);
    int l = pidfd < 0 ? -1 : (int)syscall(SYS_pidfd_getfd, pidfd, msg[0], 0);
    if (l < 0) {
      printf("no: pidfd_getfd: %s\n", strerror(errno));
    } else {
      printf("yes: seccomp user notification, pidfd_getfd%s\n",
             msg[1] ? ", killable waits" : " (signals may interrupt supervised calls: Linux < 5.19)");
      ok = 1;
      close(l);
    }
    if (pidfd >= 0) close(pidfd);
  }
  kill(c, SIGKILL);
  waitpid(c, NULL, 0);
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  int hello = 0, i = 1;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--hello") == 0) {
      hello = 1;
    } else if (strcmp(argv[i], "--check") == 0) {
      return check();
    } else if (strcmp(argv[i], "--") == 0) {
      i++;
      break;
    } else {
      break;
    }
  }
  if (i >= argc) {
    fprintf(stderr, "usage: wrapguard-supervisor [--hello] [--check] -- PROGRAM [ARGS...]\n");
    return 2;
  }
  char **prog = argv + i;
  const char *dir = getenv("WRAPGUARD_SOCKET_DIR");
  wg_config_parse(&wg_cfg, dir, getenv("WRAPGUARD_SECRET"), getenv("WRAPGUARD_ROUTES"),
                  getenv("WRAPGUARD_ADDRESSES"), getenv("WRAPGUARD_KILL_SWITCH"),
                  getenv("WRAPGUARD_DEBUG"));
  sv_debug_on = wg_cfg.debug;
  if (!wg_cfg.active) {
    sv_log("not started by wrapguard run (no WRAPGUARD_SOCKET_DIR)");
    return 126;
  }
  if (wg_cfg.broken) sv_log("the run's variables are malformed: every tunnel destination fails");
  static char resolv[8192];
  int rf = open("/etc/resolv.conf", O_RDONLY | O_CLOEXEC);
  ssize_t rn = rf < 0 ? 0 : read(rf, resolv, sizeof resolv - 1);
  if (rf >= 0) close(rf);
  resolv[rn > 0 ? rn : 0] = 0;
  wg_dns_parse(&wg_dns, getenv("WRAPGUARD_DNS"), getenv("WRAPGUARD_DNS_SEARCH"), resolv);

  int to_s[2], to_p[2];
  if (pipe2(to_s, O_CLOEXEC) != 0 || pipe2(to_p, O_CLOEXEC) != 0) {
    sv_log("pipe: %s", strerror(errno));
    return 126;
  }
  pid_t p = getpid();
  pid_t s1 = fork();
  if (s1 < 0) {
    sv_log("fork: %s", strerror(errno));
    return 126;
  }
  if (s1 == 0) {
    setsid();
    pid_t s = fork();
    if (s != 0) _exit(s < 0);
    close(to_s[1]);
    close(to_p[0]);
    supervise(p, to_s[0], to_p[1], hello);
  }
  close(to_s[0]);
  close(to_p[1]);
  int st = 0;
  waitpid(s1, &st, 0);
  int killable = 0;
  int listener = sv_install_filter(&killable);
  if (listener < 0) {
    sv_log("%s: seccomp: %s", lacks, strerror(errno));
    return 126;
  }
  char ready = 1;
  if (write(to_s[1], &listener, sizeof listener) != (ssize_t)sizeof listener ||
      read(to_p[0], &ready, 1) != 1 || ready != 0) {
    sv_log("the supervisor did not start; %s is not run", prog[0]);
    return 126;
  }
  close(listener);
  close(to_s[1]);
  close(to_p[0]);
  /* The program's own LD_PRELOAD (the interposer appended), held apart for the supervisor. */
  const char *preload = getenv("WRAPGUARD_PRELOAD");
  if (preload && *preload) setenv("LD_PRELOAD", preload, 1);
  unsetenv("WRAPGUARD_PRELOAD");
  execv(prog[0], prog);
  int e = errno;
  sv_log("cannot execute %s: %s", prog[0], strerror(e));
  return e == ENOENT ? 127 : 126;
}
