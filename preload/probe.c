/*
 * wrapguard-probe: the small program `wrapguard selftest` and `wrapguard doctor` run under the
 * interposer. It is not part of the interposer (preload/build.sh builds it apart and embeds it
 * beside the library). Each subcommand uses the plain libc calls an ordinary program would:
 *
 *   resolve NAME                getaddrinfo; prints one address per line
 *   tcp HOST PORT MESSAGE       getaddrinfo + connect; sends MESSAGE, half-closes, prints the reply
 *   listen ADDR PORT            bind + listen; prints "listening", accepts one connection and
 *                               answers "echo: " and what it read
 *   udp HOST PORT MESSAGE       sendto, then recvfrom; checks the echo is MESSAGE
 *
 * Exit status 0 on success, 1 with a "probe: " line on stderr otherwise, 2 for usage. Every
 * subcommand gives up after 10 s (SIGALRM).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int fail(const char *what, int err) {
  fprintf(stderr, "probe: %s: %s\n", what, strerror(err));
  return 1;
}

static int lookup(const char *host, const char *port, int socktype, struct addrinfo **out) {
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = socktype;
  int rc = getaddrinfo(host, port, &hints, out);
  if (rc != 0) {
    fprintf(stderr, "probe: cannot resolve %s: %s\n", host, gai_strerror(rc));
    return 1;
  }
  return 0;
}

static const char *show(const struct sockaddr *sa, char *buf, size_t len) {
  const void *a = sa->sa_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                                            : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
  if (!inet_ntop(sa->sa_family, a, buf, (socklen_t)len)) snprintf(buf, len, "?");
  return buf;
}

static int cmd_resolve(const char *name) {
  struct addrinfo *res;
  if (lookup(name, NULL, SOCK_STREAM, &res)) return 1;
  char buf[INET6_ADDRSTRLEN];
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    printf("%s\n", show(ai->ai_addr, buf, sizeof buf));
  }
  freeaddrinfo(res);
  return 0;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int cmd_tcp(const char *host, const char *port, const char *message) {
  struct addrinfo *res;
  if (lookup(host, port, SOCK_STREAM, &res)) return 1;
  int fd = -1, err = 0;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
    err = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) return fail("connect", err);
  if (write_all(fd, message, strlen(message)) < 0) return fail("write", errno);
  shutdown(fd, SHUT_WR);
  char buf[16384];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("read", errno);
    }
    if (n == 0) break;
    fwrite(buf, 1, (size_t)n, stdout);
  }
  close(fd);
  return 0;
}

static int cmd_listen(const char *addr, const char *port) {
  struct addrinfo hints, *res;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
  int rc = getaddrinfo(addr, port, &hints, &res);
  if (rc != 0) {
    fprintf(stderr, "probe: bad address %s %s: %s\n", addr, port, gai_strerror(rc));
    return 2;
  }
  int fd = socket(res->ai_family, SOCK_STREAM, 0);
  if (fd < 0) return fail("socket", errno);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, res->ai_addr, res->ai_addrlen) < 0) return fail("bind", errno);
  freeaddrinfo(res);
  if (listen(fd, 4) < 0) return fail("listen", errno);
  printf("listening\n");
  fflush(stdout);
  struct sockaddr_storage peer;
  socklen_t plen = sizeof peer;
  int c = accept(fd, (struct sockaddr *)&peer, &plen);
  if (c < 0) return fail("accept", errno);
  char from[INET6_ADDRSTRLEN];
  show((struct sockaddr *)&peer, from, sizeof from);
  char buf[4096];
  size_t got = 0;
  for (;;) {
    ssize_t n = read(c, buf + got, sizeof buf - 1 - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("read", errno);
    }
    if (n == 0) break;
    got += (size_t)n;
    if (memchr(buf, '\n', got) || got == sizeof buf - 1) break;
  }
  if (write_all(c, "echo: ", 6) < 0 || write_all(c, buf, got) < 0) return fail("write", errno);
  printf("accepted %s\n", from);
  close(c);
  close(fd);
  return 0;
}

static int cmd_udp(const char *host, const char *port, const char *message) {
  struct addrinfo *res;
  if (lookup(host, port, SOCK_DGRAM, &res)) return 1;
  int fd = socket(res->ai_family, SOCK_DGRAM, 0);
  if (fd < 0) return fail("socket", errno);
  struct timeval tv = {.tv_sec = 5, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  size_t len = strlen(message);
  if (sendto(fd, message, len, 0, res->ai_addr, res->ai_addrlen) < 0) return fail("sendto", errno);
  freeaddrinfo(res);
  char buf[65536];
  struct sockaddr_storage from;
  socklen_t flen = sizeof from;
  ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
  if (n < 0) return fail("recvfrom", errno);
  if ((size_t)n != len || memcmp(buf, message, len) != 0) {
    fprintf(stderr, "probe: the echo differs (%zd bytes back, %zu sent)\n", n, len);
    return 1;
  }
  char src[INET6_ADDRSTRLEN];
  printf("echo from %s, %zd bytes\n", show((struct sockaddr *)&from, src, sizeof src), n);
  close(fd);
  return 0;
}

int main(int argc, char **argv) {
  alarm(10);
  if (argc == 3 && strcmp(argv[1], "resolve") == 0) return cmd_resolve(argv[2]);
  if (argc == 5 && strcmp(argv[1], "tcp") == 0) return cmd_tcp(argv[2], argv[3], argv[4]);
  if (argc == 4 && strcmp(argv[1], "listen") == 0) return cmd_listen(argv[2], argv[3]);
  if (argc == 5 && strcmp(argv[1], "udp") == 0) return cmd_udp(argv[2], argv[3], argv[4]);
  fprintf(stderr,
          "usage: probe resolve NAME | tcp HOST PORT MESSAGE | listen ADDR PORT |"
          " udp HOST PORT MESSAGE\n");
  return 2;
}
