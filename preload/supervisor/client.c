/*
 * The supervisor's side of the broker protocol: the same records as the interposer's
 * (protocol.c), on a fresh connection per socket or service request, always blocking (the caller
 * is a worker thread of its own).
 */
#include "supervisor.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int sv_send_all(int fd, const void *buf, size_t n) {
  const uint8_t *p = buf;
  while (n > 0) {
    ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

int sv_recv_all(int fd, void *buf, size_t n) {
  uint8_t *p = buf;
  while (n > 0) {
    ssize_t r = recv(fd, p, n, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) {
      errno = EPROTO;
      return -1;
    }
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

int sv_broker_open(void) {
  int u = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (u < 0) return -1;
  struct sockaddr_un sun;
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, wg_cfg.socket_path, sizeof sun.sun_path);
  while (connect(u, (struct sockaddr *)&sun, sizeof sun) != 0) {
    if (errno == EINTR) continue;
    int e = errno;
    close(u);
    errno = e;
    return -1;
  }
  return u;
}

int sv_broker_call(int u, struct wgp_request *req, struct wgp_reply *rep) {
  memcpy(req->secret, wg_cfg.secret, WGP_SECRET_LEN);
  uint8_t head[WGP_REQUEST_LEN], reply[WGP_REPLY_LEN];
  if (wgp_encode_request(req, head) != 0) {
    errno = EINVAL;
    return -1;
  }
  if (sv_send_all(u, head, sizeof head) != 0) return -1;
  if (sv_recv_all(u, reply, sizeof reply) != 0) return -1;
  int err = wgp_decode_reply(reply, sizeof reply, rep);
  if (err != 0) {
    sv_log("malformed reply from the broker (%s)", wgp_error_name(err));
    errno = EPROTO;
    return -1;
  }
  if (rep->status == WGP_ST_AUTH) sv_log("the broker refused our secret");
  return 0;
}

int sv_broker_hello(pid_t pid) {
  int u = sv_broker_open();
  if (u < 0) return -1;
  struct wgp_request req;
  memset(&req, 0, sizeof req);
  req.op = WGP_OP_HELLO;
  req.arg = (uint32_t)pid;
  struct wgp_reply rep;
  int r = sv_broker_call(u, &req, &rep);
  close(u);
  if (r == 0 && rep.status != WGP_OK) {
    errno = EACCES;
    return -1;
  }
  return r;
}
