/*
 * Reaching into the program. Every call here needs ptrace rights over it (PTRACE_MODE_ATTACH):
 * the same user and a dumpable process, or CAP_SYS_PTRACE; under Yama's ptrace_scope 1 only an
 * ancestor or root has them (PROTOCOL.md "Supervisor (seccomp)", limits).
 */
#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif

int sv_pidfd(pid_t tid) {
  /* Linux 6.9 opens a thread's pidfd with PIDFD_THREAD; before, only a thread-group leader has
   * one, so a non-leader thread is reached through its process (same fd table). */
  long fd = syscall(SYS_pidfd_open, tid, PIDFD_THREAD);
  if (fd >= 0) return (int)fd;
  fd = syscall(SYS_pidfd_open, tid, 0);
  if (fd >= 0) return (int)fd;
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/status", (int)tid);
  int f = open(path, O_RDONLY | O_CLOEXEC);
  if (f < 0) return -1;
  ssize_t n = read(f, buf, sizeof buf - 1);
  close(f);
  if (n <= 0) return -1;
  buf[n] = 0;
  char *t = strstr(buf, "\nTgid:");
  if (!t) return -1;
  return (int)syscall(SYS_pidfd_open, (pid_t)atoi(t + 6), 0);
}

int sv_getfd(pid_t tid, int fd) {
  int p = sv_pidfd(tid);
  if (p < 0) return -1;
  long r = syscall(SYS_pidfd_getfd, p, fd, 0);
  int e = errno;
  close(p);
  errno = e;
  return (int)r;
}

int sv_read_mem(pid_t tid, uint64_t addr, void *buf, size_t n) {
  struct iovec local = {.iov_base = buf, .iov_len = n};
  struct iovec remote = {.iov_base = (void *)(uintptr_t)addr, .iov_len = n};
  ssize_t r = process_vm_readv(tid, &local, 1, &remote, 1, 0);
  if (r == (ssize_t)n) return 0;
  if (r >= 0) errno = EFAULT;
  return -1;
}

int sv_write_mem(pid_t tid, uint64_t addr, const void *buf, size_t n) {
  struct iovec local = {.iov_base = (void *)buf, .iov_len = n};
  struct iovec remote = {.iov_base = (void *)(uintptr_t)addr, .iov_len = n};
  ssize_t r = process_vm_writev(tid, &local, 1, &remote, 1, 0);
  if (r == (ssize_t)n) return 0;
  if (r >= 0) errno = EFAULT;
  return -1;
}

int sv_fd_cloexec(pid_t tid, int fd) {
  char path[64], buf[256];
  snprintf(path, sizeof path, "/proc/%d/fdinfo/%d", (int)tid, fd);
  int f = open(path, O_RDONLY | O_CLOEXEC);
  if (f < 0) return 0;
  ssize_t n = read(f, buf, sizeof buf - 1);
  close(f);
  if (n <= 0) return 0;
  buf[n] = 0;
  char *flags = strstr(buf, "flags:");
  if (!flags) return 0;
  return (strtoul(flags + 6, NULL, 8) & O_CLOEXEC) != 0;
}
