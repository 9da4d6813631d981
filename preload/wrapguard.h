/*
 * Shared internals of the interposer. Each hooked family lives in its own file (connect.c,
 * accept.c, io.c, sockopt.c, name.c, fd.c); the exported symbol only initialises once (wg_init)
 * and calls an internal wg_* function that holds the logic.
 *
 * Pipeline of a hooked call:
 *
 *   hook ─ wg_init() ─ decide (route.c: pass / tunnel / deny) ─┬─ pass:   real libc function
 *                                                             ├─ deny:   errno, -1
 *                                                             └─ tunnel: broker.c request,
 *                                                                        dup3 onto the fd,
 *                                                                        fdtable.c entry
 *
 * Locking: one global mutex guards the fd table (fdtable.c). Each wg_sock has a state lock, held
 * only for short updates, and a read and a write lock that order whole records on its stream (the
 * connect reply, accept notices, UDP frames) and may be held while blocking. Order: rlock/wlock,
 * then lock; the table lock is never held while taking a socket lock. Internal I/O uses raw syscall() (sys_* below) so that it can never re-enter
 * a hook or another interposer.
 */
#ifndef WRAPGUARD_H
#define WRAPGUARD_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "protocol.h"

#define WG_EXPORT __attribute__((visibility("default")))
#define WG_HIDDEN __attribute__((visibility("hidden")))

/* ---- configuration (config.c) ---- */

#define WG_MAX_ROUTES 128
#define WG_MAX_ADDRESSES 16

struct wg_prefix {
  uint8_t family; /* WGP_FAMILY_V4 / V6 */
  uint8_t bits;
  uint8_t exclude; /* "!cidr": goes to the host network even inside a tunnel route */
  uint8_t addr[16];
};

struct wg_config {
  int active;      /* the environment names a broker: tunnel handling is on */
  int broken;      /* the environment names a broker but is unusable: fail closed */
  int kill_switch; /* non-tunnel, non-loopback destinations get ENETUNREACH */
  int debug;
  char socket_path[108];
  uint8_t secret[WGP_SECRET_LEN];
  struct wg_prefix routes[WG_MAX_ROUTES];
  int nroutes;
  struct wg_prefix addresses[WG_MAX_ADDRESSES];
  int naddresses;
};

WG_HIDDEN extern struct wg_config wg_cfg;

/* Name resolution (dns.c hooks; parsing and the redirect decision are pure, in config.c). */
#define WG_MAX_DNS 8
#define WG_MAX_SEARCH 6
#define WG_MAX_SEARCH_LEN 254

struct wg_dns {
  int active; /* WRAPGUARD_DNS names servers: every lookup goes to the broker */
  int broken; /* WRAPGUARD_DNS is set but unusable: lookups fail (never the host's resolver) */
  struct wg_prefix servers[WG_MAX_DNS]; /* the tunnel's DNS = servers (bits unused) */
  int nservers;
  char search[WG_MAX_SEARCH][WG_MAX_SEARCH_LEN + 1];
  int nsearch;
  /* The nameservers of /etc/resolv.conf: what programs with their own resolver (dig, c-ares)
   * send to on port 53. Their queries are redirected to servers[]. */
  struct wg_prefix resolv[WG_MAX_DNS];
  int nresolv;
};

WG_HIDDEN extern struct wg_dns wg_dns;

/* Parses WRAPGUARD_DNS (comma-separated addresses), WRAPGUARD_DNS_SEARCH (comma-separated
 * domains) and the text of resolv.conf (may be NULL). Without `servers` the result is inactive. */
WG_HIDDEN void wg_dns_parse(struct wg_dns *d, const char *servers, const char *search,
                            const char *resolv_conf);
/* When (family, ep) is port 53 of a resolv.conf nameserver, rewrites it to the tunnel DNS server
 * (of the same family if there is one) and returns 1; otherwise 0 and leaves it alone. */
WG_HIDDEN int wg_dns_redirect(const struct wg_dns *d, uint8_t *family, struct wgp_endpoint *ep);

/* Parses the WRAPGUARD_* variables (given explicitly so that tests need no environment). */
WG_HIDDEN void wg_config_parse(struct wg_config *cfg, const char *dir, const char *secret,
                               const char *routes, const char *addresses, const char *kill,
                               const char *debug);
/* "10.0.0.0/8" (or "!10.1.0.0/16" when allow_exclude) -> prefix; 0 or -1. */
WG_HIDDEN int wg_prefix_parse(const char *text, int allow_exclude, struct wg_prefix *out);

/* ---- init and the real functions (init.c) ---- */

WG_HIDDEN void wg_init_slow(void);
WG_HIDDEN extern volatile int wg_inited;
static inline void wg_init(void) {
  if (__builtin_expect(!__atomic_load_n(&wg_inited, __ATOMIC_ACQUIRE), 0)) wg_init_slow();
}
/* Resolves `name` with dlsym(RTLD_NEXT), refusing our own hook `self`. NULL when missing. */
WG_HIDDEN void *wg_real(const char *name, void *self);

/* Defines `static type real_<name>(void)`: the next definition of the hooked function, looked up
 * once (a racing first lookup stores the same pointer twice, which is harmless). */
#define WG_DEFINE_REAL(name, type)                                                              \
  static type real_##name(void) {                                                               \
    static type fn;                                                                             \
    type f = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);                                            \
    if (!f) {                                                                                   \
      f = (type)wg_real(#name, (void *)&name);                                                  \
      __atomic_store_n(&fn, f, __ATOMIC_RELEASE);                                               \
    }                                                                                           \
    return f;                                                                                   \
  }

/* Calls the real function, or fails with ENOSYS when there is none. */
#define WG_CALL_REAL(name, ...) (real_##name() ? real_##name()(__VA_ARGS__) : (errno = ENOSYS, -1))

/* Logging to stderr with raw write(2): `wg_debug` only with WRAPGUARD_DEBUG, `wg_warn` always. */
WG_HIDDEN void wg_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
WG_HIDDEN void wg_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- routing decisions (config.c) ---- */

enum wg_decision { WG_PASS = 0, WG_TUNNEL = 1, WG_DENY = 2 };
/* Decides what to do with a destination given in wire form (IPv4-mapped already unmapped). */
WG_HIDDEN enum wg_decision wg_route(const struct wg_config *cfg, uint8_t family,
                                    const uint8_t addr[16]);
/* True when addr is one of the configured tunnel addresses. */
WG_HIDDEN int wg_is_tunnel_address(const struct wg_config *cfg, uint8_t family,
                                   const uint8_t addr[16]);
WG_HIDDEN int wg_is_loopback(uint8_t family, const uint8_t addr[16]);
WG_HIDDEN int wg_is_unspecified(uint8_t family, const uint8_t addr[16]);

/* ---- socket addresses (sockaddr.c) ---- */

/* A program's AF_INET/AF_INET6 sockaddr -> wire family and endpoint; IPv4-mapped IPv6 becomes
 * IPv4 and *mapped is set. Returns 0, or -1 with errno (EINVAL short, EAFNOSUPPORT family). */
WG_HIDDEN int wg_sockaddr_parse(const struct sockaddr *sa, socklen_t len, uint8_t *family,
                                struct wgp_endpoint *ep, int *mapped);
/* Wire endpoint -> sockaddr of the socket's `domain` (IPv4 in an AF_INET6 socket is mapped).
 * Returns the address length. */
WG_HIDDEN socklen_t wg_sockaddr_build(int domain, uint8_t family, const struct wgp_endpoint *ep,
                                      struct sockaddr_storage *out);
/* Copies as getsockname(2) does: truncates to *len, then sets *len to the full length. */
WG_HIDDEN void wg_sockaddr_copy_out(const struct sockaddr_storage *ss, socklen_t full,
                                    struct sockaddr *addr, socklen_t *len);

/* ---- the fd table (fdtable.c) ---- */

enum wg_state {
  WG_S_PENDING = 1,   /* TCP connect sent, reply not read yet */
  WG_S_CONNECTED = 2, /* TCP connected: the fd is a plain byte relay */
  WG_S_FAILED = 3,    /* TCP connect failed; so_error holds why (until read once) */
  WG_S_BOUND = 4,     /* bound to a tunnel address (the fd is the broker's BIND connection) */
  WG_S_LISTENING = 5, /* listening on a tunnel address: the fd carries accept notices */
  WG_S_UDP = 6,       /* UDP: the fd carries frames */
  WG_S_RELAY = 7,     /* a kernel listener on a wildcard address that the tunnel also reaches */
};

/* How hot paths treat an fd, readable without a lock. */
enum wg_kind { WG_K_NONE = 0, WG_K_FAST = 1, WG_K_SLOW = 2 };

struct wg_sock {
  int refs; /* under the table lock */
  pthread_mutex_t lock;  /* state below; never held while blocking */
  pthread_mutex_t rlock; /* one reader takes a whole record (reply, notice, frame) at a time */
  pthread_mutex_t wlock; /* UDP: one writer puts a whole frame at a time */
  int domain;   /* AF_INET / AF_INET6, as the program created it */
  int type;     /* SOCK_STREAM / SOCK_DGRAM */
  int protocol; /* IPPROTO_TCP / IPPROTO_UDP */
  int state;    /* enum wg_state */
  int so_error; /* pending error, reported once */
  int v6only;
  int nodelay;
  uint8_t family;        /* wire family of `local` */
  uint8_t remote_family; /* wire family of `remote` (differs on a dual-stack UDP socket) */
  struct wgp_endpoint local, remote;
  int has_remote;
  int connect_reported; /* a connect() call has returned the outcome */
  int is_kernel;       /* the fd is a kernel TCP socket (relayed listener or its connection) */
  int shut_wr;         /* the program shut its sending side (shutdown SHUT_WR/SHUT_RDWR) */
  int reset_reported;  /* a peer's reset has been returned once as ECONNRESET (reset.c) */
  int host_too;        /* UDP bound to the wildcard: the broker holds its host-network half too */
  int remote_host;     /* UDP: the association is with a host destination (frames flag HOST) */
  int aux_fd;          /* WG_S_RELAY: the broker connection that keeps the tunnel listener */
  uint16_t relay_port; /* WG_S_RELAY: the port it listens on */
  dev_t dev; /* identity of the Unix socket behind the fd, to notice fd reuse we did not see */
  ino_t ino;
  /* A DNS query to a resolv.conf nameserver sent to the tunnel's server instead (dns.c): the
   * program keeps seeing the address it asked for as the peer. */
  int dns_redirected;
  uint8_t dns_real_family, dns_shown_family;
  struct wgp_endpoint dns_real, dns_shown;
};

WG_HIDDEN struct wg_sock *wg_sock_new(int domain, int type, int protocol);
/* A counted reference to fd's entry, or NULL. The entry is dropped first when the fd no longer
 * refers to the socket it was made for (closed behind our back, e.g. by fclose). */
WG_HIDDEN struct wg_sock *wg_get(int fd);
WG_HIDDEN void wg_put(struct wg_sock *s);
/* Installs s (taking a reference) for fd, replacing what was there. */
WG_HIDDEN int wg_set(int fd, struct wg_sock *s);
WG_HIDDEN void wg_clear(int fd);
/* fd `to` now shares the entry of `from` (or has none). */
WG_HIDDEN void wg_dup(int from, int to);
WG_HIDDEN int wg_kind(int fd);
WG_HIDDEN void wg_set_kind(int fd, int kind);
/* Records the identity of the socket now at fd in s. */
WG_HIDDEN void wg_note_identity(int fd, struct wg_sock *s);

/* ---- the inherited broker channel (channel.c) ---- */

/* The channel's well-known fd number: high, so that the lowest-free allocation of the program's
 * own fds never meets it, and below the common soft limit of 1024 (and select's FD_SETSIZE). */
#define WG_CHANNEL_FD 1021

/* At load: adopt the inherited channel if it answers for this run, else start a helper. */
WG_HIDDEN void wg_channel_init(void);
/* The channel's fd, or -1. */
WG_HIDDEN int wg_channel_fd(void);
/* A new broker connection through the channel (close-on-exec), or -1 with errno. */
WG_HIDDEN int wg_channel_open(void);
/* After chroot the path is not to be trusted: connections come only through the channel. */
WG_HIDDEN int wg_channel_preferred(void);
/* Before a dup2/dup3 onto `fd`: if it is the channel, the channel moves to another number. */
WG_HIDDEN void wg_channel_evict(int fd);

/* ---- talking to the broker (broker.c) ---- */

/* A connection to the broker's socket by its path (close-on-exec), or -1 with errno: what every
 * process that can still reach the path uses, and what the channel helper connects with. */
WG_HIDDEN int wg_broker_connect_path(void);

/* A new connection to the broker (blocking, close-on-exec), or -1 with errno. */
WG_HIDDEN int wg_broker_open(void);
/* Fills secret/op/proto; the caller sets the rest. */
WG_HIDDEN void wg_request_init(struct wgp_request *req, uint8_t op, uint8_t proto, uint8_t family);
/* Sends the request and `req->padding` filler bytes. 0 or -1 with errno. */
WG_HIDDEN int wg_broker_send(int u, const struct wgp_request *req);
/* Reads one reply. `block`: wait for it; otherwise -1/EAGAIN when it has not fully arrived.
 * -1/EPROTO on a malformed reply or end of stream. */
WG_HIDDEN int wg_broker_recv(int u, struct wgp_reply *rep, int block);
/* Puts u on fd with the O_NONBLOCK and FD_CLOEXEC of the socket it replaces; closes u. */
WG_HIDDEN int wg_install(int u, int fd);
/* Filler length that keeps a fresh broker connection unwritable until the broker drains it. */
WG_HIDDEN uint32_t wg_padding_for(int u);
/* Reads a pending connect's reply, if any, and moves the socket on (locks taken inside).
 * Returns 0 when the socket is no longer pending, -1/EAGAIN (or EINTR) otherwise. */
WG_HIDDEN int wg_resolve(int fd, struct wg_sock *s, int block);
/* Takes the pending error (0 if none), as SO_ERROR reading does. */
WG_HIDDEN int wg_take_error(struct wg_sock *s);

/* ENETUNREACH, with a warning the first time: the broker cannot be reached. */
WG_HIDDEN int wg_broker_unreachable(void);
/* Tells the broker this process loaded the library (HELLO with our pid), and waits for the
 * answer, so that the launcher knows the interposer is active before the program runs. */
WG_HIDDEN void wg_broker_hello(void);
/* A service request (RESOLVE, QUERY) with its body; on OK reads the reply's body into `body`
 * (at most `cap` bytes, the rest discarded) and sets *body_len to its full length. Returns the
 * status, or -1 with errno when the broker cannot be reached or misbehaves. */
WG_HIDDEN int wg_broker_service(uint8_t op, uint8_t family, const void *req_body, uint32_t len,
                                uint8_t *body, size_t cap, size_t *body_len);

/* ---- DNS (dns.c) ---- */

/* Once, when WRAPGUARD_DNS is set: the C library's own lookups (NSS "hosts") are limited to
 * /etc/hosts, so that nothing this library does not hook can ask the host's DNS. */
WG_HIDDEN void wg_dns_init(void);

/* Records on the socket at fd that its peer is shown as `shown` while it really is `real`. */
WG_HIDDEN void wg_dns_mark(struct wg_sock *s, uint8_t real_family, const struct wgp_endpoint *real,
                           uint8_t shown_family, const struct wgp_endpoint *shown);
/* The peer to show for a datagram or connection from (family, ep): the resolv.conf address the
 * program asked for when this is the tunnel DNS server it was redirected to. Under s->lock. */
WG_HIDDEN void wg_dns_shown(const struct wg_sock *s, uint8_t *family, struct wgp_endpoint *ep);

/* ---- UDP (udp.c) ---- */

/* connect() of a UDP socket to a tunnel destination; `s` when the fd is already ours. */
WG_HIDDEN int wg_udp_connect(int fd, struct wg_sock *s, const struct sockaddr *addr,
                             socklen_t len);
/* bind() of a UDP socket to a tunnel address. */
WG_HIDDEN int wg_udp_bind(int fd, int domain, uint8_t family, const struct wgp_endpoint *local);
/* bind() to the wildcard with a port: the broker binds it on the host network and in the tunnel
 * (one fd, both reachable). 1: handled, with *result; 0: the broker cannot be reached, so the
 * kernel should bind it (local only). */
WG_HIDDEN int wg_udp_bind_wildcard(int fd, int domain, uint8_t family,
                                   const struct wgp_endpoint *local, int *result);
/* Receives one datagram on a tunnel UDP socket, as recvmsg(2) would. */
WG_HIDDEN ssize_t wg_udp_recv(int fd, struct wg_sock *s, struct msghdr *msg, int flags);
/* Sends one datagram on a tunnel UDP socket (msg_name NULL: to the connected peer). */
WG_HIDDEN ssize_t wg_udp_send(int fd, struct wg_sock *s, const struct msghdr *msg, int flags);
/* sendto/sendmsg with an address on a socket that is not ours: returns 1 and sets *result when
 * it handled (tunnel or deny), 0 when the call should go to libc. */
WG_HIDDEN int wg_udp_send_fresh(int fd, const struct msghdr *msg, int flags, ssize_t *result);

/* ---- resets (reset.c) ---- */

/* A read call on a tunnel TCP fd returned end of stream: ECONNRESET when the broker
 * closed the whole connection (a reset from the peer) rather than only its sending side (a FIN),
 * once, as a kernel reports a reset; else 0. `peek`: report without consuming. */
WG_HIDDEN int wg_tcp_eof_error(int fd, int peek);
/* A send with MSG_NOSIGNAL on a tunnel TCP fd said EPIPE: the errno to return (ECONNRESET for a
 * reset not yet reported); raises SIGPIPE for a plain EPIPE unless `flags` has MSG_NOSIGNAL. */
WG_HIDDEN int wg_tcp_pipe_error(int fd, int flags);

/* ---- raw system calls ---- */

WG_HIDDEN long sys_read(int fd, void *buf, size_t n);
WG_HIDDEN long sys_close(int fd);
WG_HIDDEN long sys_fcntl(int fd, int cmd, long arg);
WG_HIDDEN long sys_getsockopt(int fd, int level, int name, void *val, socklen_t *len);
WG_HIDDEN long sys_setsockopt(int fd, int level, int name, const void *val, socklen_t len);
WG_HIDDEN long sys_socket(int domain, int type, int protocol);
WG_HIDDEN long sys_dup3(int from, int to, int flags);
WG_HIDDEN long sys_recvfrom(int fd, void *buf, size_t n, int flags);
WG_HIDDEN long sys_sendmsg(int fd, const struct msghdr *msg, int flags);
WG_HIDDEN long sys_recvmsg(int fd, struct msghdr *msg, int flags);
WG_HIDDEN long sys_getpeername(int fd, struct sockaddr *addr, socklen_t *len);
WG_HIDDEN long sys_poll_now(int fd, short events); /* revents of fd, without waiting */
/* Reads up to cap-1 bytes of a small file into buf and NUL-terminates it; -1 when unreadable. */
WG_HIDDEN long wg_read_file(const char *path, char *buf, size_t cap);

/* Writes/reads exactly n bytes on a blocking socket (EINTR retried). 0 or -1 with errno. */
WG_HIDDEN int wg_send_all(int fd, const void *buf, size_t n);
WG_HIDDEN int wg_recv_all(int fd, void *buf, size_t n);

#endif
