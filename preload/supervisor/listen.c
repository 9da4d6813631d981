/*
 * Servers without the interposer. A TCP socket bound to a tunnel address is bound to loopback
 * instead, on the same port; when it (or a socket bound to the wildcard) listens, the broker is
 * asked to listen on that port in the tunnel and relay each connection to the kernel listener
 * over loopback: the LISTEN request with the RELAY flag that the interposer sends for wildcard
 * listeners (PROTOCOL.md "Inbound"). The broker connection lives as long as the listener; a
 * thread checks every few seconds that the listening socket still exists (/proc/net/tcp{,6}
 * lists sockets by inode), since nothing tells the supervisor of the program's close.
 *
 * accept on such a listener is done by the supervisor on its copy of the socket: the broker is
 * asked (LOOKUP) which tunnel connection the loopback peer is, the new socket is recorded with
 * the tunnel endpoints (getsockname/getpeername), the accept address is written as the tunnel
 * peer, and the socket is installed in the program with SECCOMP_IOCTL_NOTIF_ADDFD (with
 * SECCOMP_ADDFD_FLAG_SEND, which also answers the call with its number; Linux 5.14). A local
 * client (LOOKUP says NOENT) is shown as it is.
 */
#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int int_opt(int s, int level, int name) {
  int v = 0;
  socklen_t l = sizeof v;
  if (getsockopt(s, level, name, &v, &l) != 0) return 0;
  return v;
}

void sv_tcp_bind(struct sv_call *c) {
  if (c->type != SOCK_STREAM || (c->domain != AF_INET && c->domain != AF_INET6)) {
    return sv_continue(c->listener, c->id); /* the kernel: EADDRNOTAVAIL, as before */
  }
  if (c->domain == AF_INET && c->family == WGP_FAMILY_V6) {
    return sv_reply(c->listener, c->id, EAFNOSUPPORT, 0);
  }
  /* An IPv6 tunnel address is [::1]; an IPv4 one on an AF_INET6 socket ::ffff:127.0.0.1. */
  struct sockaddr_storage lo;
  socklen_t len = sv_loopback(c->domain, c->family == WGP_FAMILY_V6, c->ep.port, &lo);
  if (bind(c->sock, (struct sockaddr *)&lo, len) != 0) {
    return sv_reply(c->listener, c->id, errno, 0);
  }
  struct sockaddr_storage got;
  socklen_t glen = sizeof got;
  getsockname(c->sock, (struct sockaddr *)&got, &glen);
  struct sv_entry e;
  memset(&e, 0, sizeof e);
  e.ino = sv_inode(c->sock);
  e.kind = SV_BOUND;
  e.domain = c->domain;
  e.local_family = c->family;
  e.local = c->ep;
  e.local.port = got.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&got)->sin6_port)
                                           : ntohs(((struct sockaddr_in *)&got)->sin_port);
  sv_table_put(&e);
  sv_debug("bind: fd %d bound to loopback port %u for the tunnel", c->fd, e.local.port);
  sv_reply(c->listener, c->id, 0, 0);
}

/* Whether the process has the interposer loaded (it relays its own wildcard listeners). */
static int has_interposer(pid_t tid) {
  char path[64], want[160];
  snprintf(path, sizeof path, "/proc/%d/maps", (int)tid);
  snprintf(want, sizeof want, "%.100s/libwrapguard.so", getenv("WRAPGUARD_SOCKET_DIR") ?: "");
  FILE *f = fopen(path, "re");
  if (!f) return 0;
  char line[512];
  int found = 0;
  while (!found && fgets(line, sizeof line, f)) found = strstr(line, want) != NULL;
  fclose(f);
  return found;
}

void *sv_tcp_listen(void *arg) {
  struct sv_call *c = arg;
  int backlog = (int)(int32_t)c->arg;
  struct sv_entry e;
  uint64_t ino = sv_inode(c->sock);
  int bound = sv_table_get(ino, &e) && e.kind == SV_BOUND;
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  memset(&ss, 0, sizeof ss);
  getsockname(c->sock, (struct sockaddr *)&ss, &sl);
  uint8_t family = 0;
  struct wgp_endpoint ep;
  int mapped;
  int wildcard = wg_sockaddr_parse((struct sockaddr *)&ss, sl, &family, &ep, &mapped) == 0 &&
                 wg_is_unspecified(family, ep.addr);
  if ((!bound && !wildcard) || (!bound && has_interposer(c->tid))) {
    sv_continue(c->listener, c->id);
    goto out;
  }
  if (listen(c->sock, backlog) != 0) {
    sv_reply(c->listener, c->id, errno, 0);
    goto out;
  }
  int v6only = c->domain == AF_INET6 ? int_opt(c->sock, IPPROTO_IPV6, IPV6_V6ONLY) : 0;
  int u = sv_broker_open();
  struct wgp_request req;
  memset(&req, 0, sizeof req);
  req.op = WGP_OP_LISTEN;
  req.proto = WGP_PROTO_TCP;
  if (bound) {
    req.family = e.local_family;
    req.local.port = e.local.port;
    req.flags = WGP_FLAG_RELAY | (e.local_family == WGP_FAMILY_V6 ? WGP_FLAG_V6ONLY : 0);
  } else {
    req.family = c->domain == AF_INET ? WGP_FAMILY_V4 : WGP_FAMILY_V6;
    req.local.port = ep.port;
    req.flags = WGP_FLAG_RELAY | (v6only ? WGP_FLAG_V6ONLY : 0);
  }
  req.arg = backlog > 0 ? (uint32_t)backlog : 1;
  struct wgp_reply rep;
  if (u < 0 || sv_broker_call(u, &req, &rep) != 0 || rep.status != WGP_OK) {
    sv_log("fd %d: port %u listens locally only: the tunnel refused it", c->fd, req.local.port);
    if (u >= 0) close(u);
    /* Bound to a tunnel address, a listener that the tunnel cannot reach fails as a kernel's
     * bind would have; a wildcard one still listens locally. */
    sv_reply(c->listener, c->id, bound ? EADDRINUSE : 0, 0);
    goto out;
  }
  if (!bound) {
    memset(&e, 0, sizeof e);
    e.ino = ino;
    e.domain = c->domain;
    e.local_family = family;
    e.local = ep;
  }
  e.kind = bound ? SV_LISTENING : SV_RELAYED;
  e.local.port = req.local.port;
  sv_table_put(&e);
  sv_debug("listen: fd %d, port %u, also in the tunnel", c->fd, req.local.port);
  sv_reply(c->listener, c->id, 0, 0);
  close(c->sock);
  c->sock = -1;
  /* Keep the broker's listener as long as the program's. */
  for (;;) {
    struct pollfd p = {.fd = u, .events = POLLIN};
    int r = poll(&p, 1, 3000);
    if (r < 0 && errno == EINTR) continue;
    if (r > 0) break; /* the broker ended it (or is gone) */
    if (!sv_socket_listed(ino, 1)) break;
  }
  close(u);
  sv_table_drop(ino);
out:
  if (c->sock >= 0) close(c->sock);
  free(c);
  return NULL;
}

#ifndef SECCOMP_ADDFD_FLAG_SEND
#define SECCOMP_ADDFD_FLAG_SEND (1UL << 1)
#endif

/* Installs `a` in the program as the answer to the accept call `c`; -1 when it could not. */
static int install(struct sv_call *c, int a, int cloexec) {
  struct seccomp_notif_addfd add;
  memset(&add, 0, sizeof add);
  add.id = c->id;
  add.flags = SECCOMP_ADDFD_FLAG_SEND;
  add.srcfd = (uint32_t)a;
  add.newfd_flags = cloexec ? O_CLOEXEC : 0;
  if (ioctl(c->listener, SECCOMP_IOCTL_NOTIF_ADDFD, &add) >= 0) return 0;
  if (errno != EINVAL) return -1;
  /* Before Linux 5.14: install, then answer with the number. */
  add.flags = 0;
  int fd = ioctl(c->listener, SECCOMP_IOCTL_NOTIF_ADDFD, &add);
  if (fd < 0) return -1;
  sv_reply(c->listener, c->id, 0, fd);
  return 0;
}

void *sv_tcp_accept(void *arg) {
  struct sv_call *c = arg;
  int flags = c->args[0] == 4 ? (int)c->args[4] : 0; /* accept4's flags */
  int a = -1;
  for (;;) {
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    if (!c->nonblock) {
      struct pollfd p = {.fd = c->sock, .events = POLLIN};
      int r = poll(&p, 1, 500);
      if (r == 0 || (r < 0 && errno == EINTR)) {
        if (!sv_valid(c->listener, c->id)) goto out;
        continue;
      }
    }
    a = accept4(c->sock, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
    if (a < 0) {
      if ((errno == EAGAIN || errno == EWOULDBLOCK) && !c->nonblock) continue;
      sv_reply(c->listener, c->id, errno, 0);
      goto out;
    }
    struct sv_entry e;
    memset(&e, 0, sizeof e);
    e.ino = sv_inode(a);
    e.kind = SV_TCP;
    e.domain = c->domain;
    int mapped;
    uint8_t family;
    struct wgp_endpoint ep;
    int tunnel = 0;
    if (wg_sockaddr_parse((struct sockaddr *)&peer, plen, &family, &ep, &mapped) == 0 &&
        wg_is_loopback(family, ep.addr)) {
      int u = sv_broker_open();
      struct wgp_request req;
      memset(&req, 0, sizeof req);
      req.op = WGP_OP_LOOKUP;
      req.proto = WGP_PROTO_TCP;
      req.family = family;
      req.local.port = c->ep.port;
      req.remote = ep;
      struct wgp_reply rep;
      if (u >= 0 && sv_broker_call(u, &req, &rep) == 0 && rep.status == WGP_OK) {
        tunnel = 1;
        e.local_family = e.remote_family = rep.family;
        e.local = rep.local;
        e.remote = rep.remote;
        e.has_remote = 1;
        sv_table_put(&e);
      }
      if (u >= 0) close(u);
    }
    if (flags & SOCK_NONBLOCK) fcntl(a, F_SETFL, O_NONBLOCK);
    if (c->args[1] != 0 && c->args[2] != 0) {
      struct sockaddr_storage shown;
      socklen_t full = tunnel ? wg_sockaddr_build(c->domain, e.remote_family, &e.remote, &shown)
                              : plen;
      if (!tunnel) shown = peer;
      socklen_t have = 0;
      if (sv_read_mem(c->tid, c->args[2], &have, sizeof have) == 0) {
        socklen_t part = have < full ? have : full;
        if (part > 0) sv_write_mem(c->tid, c->args[1], &shown, part);
        sv_write_mem(c->tid, c->args[2], &full, sizeof full);
      }
    }
    if (install(c, a, (flags & SOCK_CLOEXEC) != 0) != 0) {
      /* The thread is gone (killed): the connection goes with our copy. */
      sv_table_drop(e.ino);
    } else {
      sv_debug("accept: fd %d: a %s connection", c->fd, tunnel ? "tunnel" : "local");
    }
    break;
  }
out:
  if (a >= 0) close(a);
  close(c->sock);
  free(c);
  return NULL;
}
