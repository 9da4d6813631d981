/*
 * wrapguard-supervisor [--hello] [--check] -- PROGRAM [ARGS…]
 *
 * Started by `wrapguard run` in place of the program, with the run's WRAPGUARD_* variables and
 * the program's LD_PRELOAD in WRAPGUARD_PRELOAD (so that the interposer is not loaded into the
 * supervisor itself). The supervisor is the program's parent, so that it may read the memory and
 * fds of the program and all its descendants under Yama's ptrace_scope 1 (only ancestors may,
 * without privileges):
 *
 * ```text
 * S (the pid run knows) ─ fork ─► P: PR_SET_PDEATHSIG(SIGKILL) (S killed ─► P killed)
 *   │                               no_new_privs, seccomp filter with NEW_LISTENER
 *   │   ◄─ pipe ─ the listener's fd number
 *   ├ pidfd_getfd(P, n); [--hello: HELLO with S's pid]; "ready" ─ pipe ─►
 *   │                               execve(PROGRAM): LD_PRELOAD restored, and
 *   │                               WRAPGUARD_HELLO_AS=S, so that the interposer's HELLO names
 *   │                               the pid run knows
 *   ├ a thread serves the calls (serve.c)
 *   ├ a thread passes on every signal sent to S (kill, not the terminal's: the program, in the
 *   │ same process group, gets those itself)
 *   └ waitpid(P) ─► drains the relays (≤ 10 s) ─► exits with P's status (the same signal if a
 *     signal ended it). Descendants that outlive P lose the supervisor: their supervised calls
 *     then fail (ENOSYS), never reaching the host network.
 * ```
 *
 * The listener travels by pidfd_getfd because the filter, once installed, would trap the
 * sendmsg that SCM_RIGHTS needs, and nobody would be there to answer it yet.
 *
 * --check: only whether this kernel can do all of it (a filter in a child, pidfd_getfd of its
 * listener). Exit 0, or 1 with the reason.
 *
 * Exit status: the program's; 126 when the program cannot be supervised (the kernel lacks a
 * feature, the broker refused), 127 when it cannot be executed.
 */
#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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

/* Signals a supervisor passes on to the program. */
static const int forwarded[] = {SIGHUP,  SIGINT,  SIGQUIT, SIGUSR1, SIGUSR2, SIGTERM,
                                SIGALRM, SIGWINCH, SIGCONT, SIGTSTP, SIGTTIN, SIGTTOU};

static pid_t program;

static void *serve_thread(void *arg) {
  sv_serve(*(int *)arg);
  return NULL;
}

/* Passes on what was sent to us (si_code <= 0: kill, sigqueue, tgkill); what the kernel sent
 * (the terminal's ^C to the foreground group, SIGWINCH) the program has had itself. */
static void *signal_thread(void *arg) {
  sigset_t *set = arg;
  for (;;) {
    siginfo_t info;
    int sig = sigwaitinfo(set, &info);
    if (sig < 0) continue;
    if (info.si_code <= 0) kill(program, sig);
  }
  return NULL;
}

static void start_thread(void *(*fn)(void *), void *arg) {
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_create(&t, &attr, fn, arg);
  pthread_attr_destroy(&attr);
}

/* P: the filter, then the program. Never returns. */
static void become_program(pid_t s, char **prog, int to_s, int from_s) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != s) _exit(126); /* the supervisor is gone already */
  int killable = 0;
  int listener = sv_install_filter(&killable);
  if (listener < 0) {
    sv_log("%s: seccomp: %s", lacks, strerror(errno));
    _exit(126);
  }
  char ready = 1;
  if (write(to_s, &listener, sizeof listener) != (ssize_t)sizeof listener ||
      read(from_s, &ready, 1) != 1 || ready != 0) {
    _exit(126); /* the supervisor said why */
  }
  close(listener);
  close(to_s);
  close(from_s);
  /* The program's own LD_PRELOAD (the interposer appended), held apart for the supervisor. */
  const char *preload = getenv("WRAPGUARD_PRELOAD");
  if (preload && *preload) setenv("LD_PRELOAD", preload, 1);
  unsetenv("WRAPGUARD_PRELOAD");
  char as[16];
  snprintf(as, sizeof as, "%d", (int)s);
  setenv("WRAPGUARD_HELLO_AS", as, 1);
  execv(prog[0], prog);
  int e = errno;
  sv_log("cannot execute %s: %s", prog[0], strerror(e));
  _exit(e == ENOENT ? 127 : 126);
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
  pid_t s = getpid();
  program = fork();
  if (program < 0) {
    sv_log("fork: %s", strerror(errno));
    return 126;
  }
  if (program == 0) {
    close(to_s[0]);
    close(to_p[1]);
    become_program(s, prog, to_s[1], to_p[0]);
  }
  close(to_s[1]);
  close(to_p[0]);
  /* From here on, signals sent to us are the program's (signal_thread). */
  static sigset_t set;
  sigemptyset(&set);
  for (size_t k = 0; k < sizeof forwarded / sizeof forwarded[0]; k++) sigaddset(&set, forwarded[k]);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  start_thread(signal_thread, &set);

  int num = -1;
  char ready = 1;
  static int listener = -1;
  if (read(to_s[0], &num, sizeof num) == (ssize_t)sizeof num) {
    int pidfd = (int)syscall(SYS_pidfd_open, program, 0);
    listener = pidfd < 0 ? -1 : (int)syscall(SYS_pidfd_getfd, pidfd, num, 0);
    if (listener < 0) {
      sv_log("%s: pidfd_getfd: %s", lacks, strerror(errno));
    } else if (hello && sv_broker_hello(s) != 0) {
      sv_log("cannot reach the broker: %s", strerror(errno));
    } else {
      ready = 0;
    }
    if (pidfd >= 0) close(pidfd);
  }
  ssize_t w = write(to_p[1], &ready, 1);
  (void)w;
  close(to_s[0]);
  close(to_p[1]);
  if (ready == 0) start_thread(serve_thread, &listener);

  int st = 0;
  while (waitpid(program, &st, 0) < 0 && errno == EINTR) {
  }
  if (ready != 0) return 126;
  sv_relays_drain(10);
  if (WIFSIGNALED(st)) {
    int sig = WTERMSIG(st);
    prctl(PR_SET_DUMPABLE, 0); /* the program dumped its core already, if it did */
    signal(sig, SIG_DFL);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    kill(getpid(), sig);
    return 128 + sig;
  }
  return WEXITSTATUS(st);
}
