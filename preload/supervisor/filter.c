/*
 * The seccomp filter. It runs for every system call of the program and all its descendants, so
 * it decides alone whatever needs no memory of the program:
 *
 *   another architecture's calls (i386 int 0x80, x32)       -> ENOSYS (they would bypass the rest)
 *   io_uring_setup                                          -> ENOSYS (its sockets no filter sees;
 *                                                              programs fall back to plain calls)
 *   sendto with no address (connected sockets, the common case) -> allowed
 *   recvfrom that asks for no source address                -> allowed
 *   connect, bind, listen, accept, accept4, sendto with an address, sendmsg, sendmmsg,
 *   getsockname, getpeername, recvfrom asking for the source -> the supervisor (USER_NOTIF)
 *   everything else                                         -> allowed
 *
 * sendmsg's address lies behind a pointer, which BPF cannot follow, so every sendmsg traps.
 */
#include "supervisor.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define SV_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SV_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "wrapguard-supervisor is built for x86_64 and aarch64"
#endif

#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5)
#endif

/* The calls the supervisor answers. */
static const int trapped[] = {
    SYS_connect,     SYS_bind,        SYS_listen,  SYS_sendmsg, SYS_sendmmsg,
    SYS_getsockname, SYS_getpeername, SYS_accept4,
#ifdef SYS_accept
    SYS_accept,
#endif
};

/* Jump targets, resolved once the program is laid out. */
enum label { L_NONE, L_ALLOW, L_NOTIFY, L_ENOSYS, L_ARG4 };

struct prog {
  struct sock_filter ins[64];
  enum label jt[64], jf[64];
  int n;
  int at[5]; /* instruction index of each label */
};

static void emit(struct prog *p, uint16_t code, uint32_t k, enum label jt, enum label jf) {
  p->ins[p->n] = (struct sock_filter)BPF_STMT(code, k);
  p->jt[p->n] = jt;
  p->jf[p->n] = jf;
  p->n++;
}

static void mark(struct prog *p, enum label l) { p->at[l] = p->n; }

static void build(struct prog *p) {
  p->n = 0;
  emit(p, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch), L_NONE, L_NONE);
  emit(p, BPF_JMP | BPF_JEQ | BPF_K, SV_AUDIT_ARCH, L_NONE, L_ENOSYS);
  emit(p, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr), L_NONE, L_NONE);
#if defined(__x86_64__)
  emit(p, BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, L_ENOSYS, L_NONE); /* __X32_SYSCALL_BIT */
#endif
  for (size_t i = 0; i < sizeof trapped / sizeof trapped[0]; i++) {
    emit(p, BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)trapped[i], L_NOTIFY, L_NONE);
  }
  emit(p, BPF_JMP | BPF_JEQ | BPF_K, SYS_sendto, L_ARG4, L_NONE);
  emit(p, BPF_JMP | BPF_JEQ | BPF_K, SYS_recvfrom, L_ARG4, L_NONE);
  emit(p, BPF_JMP | BPF_JEQ | BPF_K, SYS_io_uring_setup, L_ENOSYS, L_ALLOW);
  /* sendto(fd, buf, len, flags, dest_addr, addrlen) and recvfrom(…, src_addr, addrlen): a NULL
   * address (both halves) passes. */
  mark(p, L_ARG4);
  emit(p, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[4]), L_NONE, L_NONE);
  emit(p, BPF_JMP | BPF_JEQ | BPF_K, 0, L_NONE, L_NOTIFY);
  emit(p, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[4]) + 4, L_NONE, L_NONE);
  emit(p, BPF_JMP | BPF_JEQ | BPF_K, 0, L_ALLOW, L_NOTIFY);
  mark(p, L_ALLOW);
  emit(p, BPF_RET | BPF_K, SECCOMP_RET_ALLOW, L_NONE, L_NONE);
  mark(p, L_NOTIFY);
  emit(p, BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF, L_NONE, L_NONE);
  mark(p, L_ENOSYS);
  emit(p, BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA), L_NONE, L_NONE);
  for (int i = 0; i < p->n; i++) {
    if (p->jt[i] != L_NONE) p->ins[i].jt = (uint8_t)(p->at[p->jt[i]] - i - 1);
    if (p->jf[i] != L_NONE) p->ins[i].jf = (uint8_t)(p->at[p->jf[i]] - i - 1);
  }
}

int sv_install_filter(int *killable) {
  struct prog p;
  build(&p);
  struct sock_fprog fprog = {.len = (unsigned short)p.n, .filter = p.ins};
  /* Without privileges a filter needs no_new_privs (setuid bits then no longer raise them). */
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
  unsigned long flags = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
  long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &fprog);
  *killable = fd >= 0;
  if (fd < 0 && errno == EINVAL) {
    /* Before Linux 5.19: signals may interrupt a call the supervisor is answering. */
    fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &fprog);
  }
  return (int)fd;
}
