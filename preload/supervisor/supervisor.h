/*
 * wrapguard-supervisor: the seccomp half of `wrapguard run` (issue 12). See PROTOCOL.md
 * "Supervisor (seccomp)" for the contract; this header is the map of the files:
 *
 *   main.c     arguments, the kernel check, fork: filter + exec in the child (the program),
 *              serve, pass signals on and wait in the parent
 *   filter.c   the BPF program (which calls trap, which are answered by the filter alone)
 *   target.c   reaching into the program: pidfd_getfd, process_vm_readv/writev, fdinfo
 *   client.c   broker connections (protocol.c encodes the records)
 *   serve.c    the notification loop and the decision per call
 *   tcp.c      TCP connect through the broker, relayed over loopback to the program's socket
 *   udp.c      connected UDP (and DNS redirected to the tunnel) through the broker's frames
 *   dgram.c    unconnected UDP and UDP servers on a tunnel address: sendto answered as frames
 *   listen.c   a server's listener on a tunnel or wildcard address, reached from the tunnel
 *   table.c    what the supervisor knows about the program's sockets, by inode
 *
 * It links the interposer's pure parts: protocol.c (records), config.c (the WRAPGUARD_*
 * variables, routing, the DNS redirect decision) and sockaddr.c (sockaddr <-> wire endpoints).
 */
#ifndef WRAPGUARD_SUPERVISOR_H
#define WRAPGUARD_SUPERVISOR_H

#include "../wrapguard.h"

#include <linux/seccomp.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- main.c ---- */

/* Whether the run asked for tracing (WRAPGUARD_DEBUG=1), and the log functions. */
extern int sv_debug_on;
void sv_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void sv_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- filter.c ---- */

/* Installs the filter in the calling process (no_new_privs first) and returns the listener fd,
 * or -1 with errno. Sets *killable when the kernel took SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV. */
int sv_install_filter(int *killable);

/* ---- target.c ---- */

/* A pidfd for the thread `tid` (PIDFD_THREAD, or the process when the kernel lacks it). */
int sv_pidfd(pid_t tid);
/* A copy of the program's fd `fd` (close-on-exec), or -1 with errno. */
int sv_getfd(pid_t tid, int fd);
/* Reads/writes `n` bytes of the program's memory at `addr`; 0 or -1 with errno (EFAULT for a
 * short transfer). */
int sv_read_mem(pid_t tid, uint64_t addr, void *buf, size_t n);
int sv_write_mem(pid_t tid, uint64_t addr, const void *buf, size_t n);
/* Whether the program's fd `fd` is close-on-exec (from /proc/<tid>/fdinfo). */
int sv_fd_cloexec(pid_t tid, int fd);

/* ---- client.c ---- */

/* A new connection to the broker (its path from WRAPGUARD_SOCKET_DIR), or -1 with errno. */
int sv_broker_open(void);
/* Sends `req` (the secret filled in here) and reads the reply. 0, or -1 with errno. */
int sv_broker_call(int u, struct wgp_request *req, struct wgp_reply *rep);
/* HELLO with `pid`: proves to `wrapguard run` that the program is supervised. */
int sv_broker_hello(pid_t pid);
int sv_send_all(int fd, const void *buf, size_t n);
int sv_recv_all(int fd, void *buf, size_t n);

/* ---- serve.c ---- */

/* Serves notifications on `listener` until no process uses the filter any more. */
void sv_serve(int listener);
/* Waits (at most `seconds`) for the relays still moving what the program wrote. */
void sv_relays_drain(int seconds);

/* One trapped call, as the workers see it. */
struct sv_call {
  int listener;
  uint64_t id;  /* the notification's id */
  pid_t tid;    /* the calling thread */
  int fd;       /* the program's fd number (the call's first argument) */
  int sock;     /* our copy of that socket */
  int domain;   /* AF_INET / AF_INET6 */
  int type;     /* SOCK_STREAM / SOCK_DGRAM */
  int nonblock; /* the socket is O_NONBLOCK */
  uint8_t family; /* the destination (or local address), wire form */
  struct wgp_endpoint ep;
  uint8_t shown_family; /* what the program named (differs after the DNS redirect) */
  struct wgp_endpoint shown;
  uint64_t arg; /* listen: the backlog; recvfrom: the flags */
  uint64_t args[6]; /* recvfrom: the call's arguments */
};

/* Answers the call: `error` 0 for success (return value `val`), else -error. */
void sv_reply(int listener, uint64_t id, int error, int64_t val);
/* Lets the call run in the kernel as the program made it. */
void sv_continue(int listener, uint64_t id);
/* Whether the call is still waiting (the thread was not killed meanwhile). */
int sv_valid(int listener, uint64_t id);
/* Runs fn(call) on a detached thread that owns `call` (malloc'd) and must answer it. */
void sv_spawn(void *(*fn)(void *), struct sv_call *call);
/* Counts relays still moving the program's bytes, so that the exit waits for them. */
void sv_relay_begin(void);
void sv_relay_end(void);

/* ---- tcp.c, udp.c, listen.c ---- */

void *sv_tcp_connect(void *call);
/* Relays between the loopback connection `a` and the broker connection `u` (owns both). */
void sv_relay_start(int a, int u);
void *sv_udp_connect(void *call);
/* bind of a tunnel address: the socket is bound to loopback instead (synchronously). */
void sv_tcp_bind(struct sv_call *call);
void *sv_tcp_listen(void *call);
/* accept/accept4 on a listener the supervisor put on the tunnel (args: the call's). */
void *sv_tcp_accept(void *call);
/* A loopback address of `domain` for a socket (`v6only` AF_INET6 sockets need ::1), and port. */
socklen_t sv_loopback(int domain, int v6only, uint16_t port, struct sockaddr_storage *out);

/* ---- dgram.c ---- */

/* A datagram from the program's UDP socket `sock` (our copy) to a tunnel destination, sent as a
 * frame (the association is started on first use). 0 or an errno. */
int sv_dgram_send(int sock, int domain, uint8_t family, const struct wgp_endpoint *to,
                  const uint8_t *payload, size_t len);
/* A UDP socket already bound to a wildcard port: its association, so the tunnel reaches it. */
int sv_dgram_start(int sock, int domain);
/* bind of a UDP socket to a tunnel address: bound to loopback, the association started. */
int sv_dgram_bind(int sock, int domain, uint8_t family, const struct wgp_endpoint *local);
/* The tunnel peer behind loopback source `port` of a datagram to socket `ino`; 1 when known. */
int sv_dgram_source(uint64_t ino, uint16_t port, uint8_t *family, struct wgp_endpoint *ep);

/* ---- table.c ---- */

/* SV_LISTENING: bound to a tunnel address; SV_RELAYED: a wildcard listener the broker relays to. */
/* SV_UDP: connected UDP (udp.c); SV_UDP_OPEN: an unconnected one that sent to the tunnel,
 * SV_UDP_BOUND: one bound to a tunnel address (dgram.c). */
enum sv_kind {
  SV_TCP = 1,
  SV_UDP = 2,
  SV_BOUND = 3,
  SV_LISTENING = 4,
  SV_RELAYED = 5,
  SV_UDP_OPEN = 6,
  SV_UDP_BOUND = 7,
};

struct sv_entry {
  uint64_t ino;
  int kind;
  int domain;
  uint8_t local_family, remote_family;
  struct wgp_endpoint local, remote;
  int has_remote;
};

/* Records (or replaces) what the socket with inode `e->ino` reports. */
void sv_table_put(const struct sv_entry *e);
/* Copies the entry for `ino`; 1 when there is one. */
int sv_table_get(uint64_t ino, struct sv_entry *out);
void sv_table_drop(uint64_t ino);
/* The inode of a socket fd (0 on error). */
uint64_t sv_inode(int fd);
/* Whether a socket with inode `ino` still exists: listed in /proc/net/tcp{,6} (`tcp`) or
 * /proc/net/udp{,6}. Nothing else tells the supervisor that the program closed a socket. */
int sv_socket_listed(uint64_t ino, int tcp);

#endif
