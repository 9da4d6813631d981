/*
 * How a peer's TCP reset reaches the program: as ECONNRESET from the read that meets it, as from
 * a kernel socket, instead of a plain end of stream.
 *
 * A connected tunnel TCP fd is a Unix stream to the broker, which cannot carry a reset. But it
 * can carry one bit at its end, in how the broker ends it: for the peer's FIN the broker shuts
 * only its sending side (the program's socket gets RCV_SHUTDOWN: reads say 0, poll says
 * POLLIN|POLLRDHUP, writes still work, as after a FIN); for a reset it closes the whole
 * connection, and the kernel then marks the program's socket shut both ways, which poll reports
 * as POLLHUP. POLLHUP also appears when the program shut its own sending side, so shutdown() is
 * hooked to tell the two apart.
 *
 * Nothing is added to the hot path: the check runs only when a read on a tunnel fd has returned 0.
 * A kernel reports a reset once and then end of stream; so does this. The broker also closes
 * the whole connection when it gives up on it for other reasons (retransmissions or keepalives
 * exhausted: a kernel would say ETIMEDOUT), which shows as ECONNRESET here.
 *
 * Writes: a tunnel TCP fd is written with MSG_NOSIGNAL, because a Unix socket whose peer has
 * closed says EPIPE and raises SIGPIPE where a kernel TCP socket that met a reset says
 * ECONNRESET, once, without a signal. EPIPE without our own shutdown is therefore the reset;
 * any other EPIPE raises the SIGPIPE the program would have had, unless it asked for none.
 *
 * The check polls with no events: POLLHUP and POLLERR are reported whatever is asked, and a
 * readable socket (it is at end of stream) would otherwise answer POLLIN and nothing else.
 */
#include "wrapguard.h"

#include <time.h>

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef int (*shutdown_fn)(int, int);
WG_EXPORT int shutdown(int fd, int how);
WG_DEFINE_REAL(shutdown, shutdown_fn)

int shutdown(int fd, int how) {
  wg_init();
  struct wg_sock *s =
      (how == SHUT_WR || how == SHUT_RDWR) && wg_kind(fd) != WG_K_NONE ? wg_get(fd) : NULL;
  int was = 0;
  /* Marked before the call, not after: the end of stream our shutdown causes can come back (the
   * broker's FIN, the peer's answer) and wake another thread's read before this thread, preempted
   * on a loaded machine, has returned from the call; that read must see our own shutdown, not a
   * reset. A shutdown that fails takes the mark back. */
  if (s) {
    pthread_mutex_lock(&s->lock);
    was = s->shut_wr;
    s->shut_wr = 1;
    pthread_mutex_unlock(&s->lock);
  }
  int r = WG_CALL_REAL(shutdown, fd, how);
  if (s) {
    int e = errno;
    if (r != 0) {
      pthread_mutex_lock(&s->lock);
      s->shut_wr = was;
      pthread_mutex_unlock(&s->lock);
    }
    wg_put(s);
    errno = e;
  }
  return r;
}

int wg_tcp_eof_error(int fd, int peek) {
  if (wg_kind(fd) == WG_K_NONE) return 0;
  int e = errno;
  struct wg_sock *s = wg_get(fd);
  if (!s) {
    errno = e;
    return 0;
  }
  int err = 0;
  pthread_mutex_lock(&s->lock);
  if (s->type == SOCK_STREAM && s->state == WG_S_CONNECTED && !s->is_kernel && !s->shut_wr &&
      !s->reset_reported) {
    long ev = sys_poll_now(fd, 0);
    /* The broker's runtime shuts the sending side a moment before it closes (its stream is
     * split in halves, and the sending half shuts down as it is dropped): a reader woken by
     * that shutdown can get here first, and on a loaded machine the broker may be preempted
     * between the two. Yielding for up to 2 ms gives the close its moment; a FIN pays that
     * once per connection, at its end of stream. */
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (ev == 0) {
      sched_yield();
      ev = sys_poll_now(fd, 0);
      clock_gettime(CLOCK_MONOTONIC, &now);
      long us = (now.tv_sec - t0.tv_sec) * 1000000L + (now.tv_nsec - t0.tv_nsec) / 1000;
      if (us >= 2000) break;
    }
    if (ev > 0 && (ev & POLLHUP)) {
      err = ECONNRESET;
      if (!peek) s->reset_reported = 1;
    }
  }
  pthread_mutex_unlock(&s->lock);
  wg_put(s);
  errno = e;
  return err;
}

int wg_tcp_pipe_error(int fd, int flags) {
  int err = EPIPE;
  struct wg_sock *s = wg_get(fd);
  if (s) {
    pthread_mutex_lock(&s->lock);
    if (s->type == SOCK_STREAM && s->state == WG_S_CONNECTED && !s->is_kernel && !s->shut_wr &&
        !s->reset_reported) {
      s->reset_reported = 1;
      err = ECONNRESET;
    }
    pthread_mutex_unlock(&s->lock);
    wg_put(s);
  }
  /* As the kernel does: the signal goes to the thread that wrote. */
  if (err == EPIPE && !(flags & MSG_NOSIGNAL)) {
    syscall(SYS_tgkill, (long)getpid(), (long)syscall(SYS_gettid), (long)SIGPIPE);
  }
  return err;
}
