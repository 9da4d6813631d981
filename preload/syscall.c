/*
 * syscall(3): some libraries issue socket calls through the C library's generic syscall()
 * instead of the named wrappers. libuv (dig's event loop, and node's) sends UDP with
 * syscall(SYS_sendmmsg, …), receives with syscall(SYS_recvmmsg, …) and duplicates descriptors with
 * syscall(SYS_dup3, …) on the glibc versions where those wrappers were missing. Those three
 * numbers are sent to our hooks; every other number goes to libc's syscall() untouched (the
 * library's own raw calls come through here too, and are never among the three).
 */
#include "wrapguard.h"

#include <errno.h>
#include <stdarg.h>
#include <sys/syscall.h>

typedef long (*syscall_fn)(long, ...);
WG_EXPORT long syscall(long number, ...);
WG_DEFINE_REAL(syscall, syscall_fn)

/* The hooks, exported from io.c and fd.c. */
int sendmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags);
int recvmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags, struct timespec *timeout);
int dup3(int from, int to, int flags);

long syscall(long number, ...) {
  va_list ap;
  va_start(ap, number);
  long a1 = va_arg(ap, long), a2 = va_arg(ap, long), a3 = va_arg(ap, long);
  long a4 = va_arg(ap, long), a5 = va_arg(ap, long), a6 = va_arg(ap, long);
  va_end(ap);
  switch (number) {
  case SYS_sendmmsg:
    return sendmmsg((int)a1, (struct mmsghdr *)a2, (unsigned int)a3, (int)a4);
  case SYS_recvmmsg:
    return recvmmsg((int)a1, (struct mmsghdr *)a2, (unsigned int)a3, (int)a4,
                    (struct timespec *)a5);
  case SYS_dup3:
    return dup3((int)a1, (int)a2, (int)a3);
  default:
    break;
  }
  syscall_fn real = real_syscall();
  if (!real) {
    errno = ENOSYS;
    return -1;
  }
  return real(number, a1, a2, a3, a4, a5, a6);
}
