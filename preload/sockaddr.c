/*
 * Conversions between a program's struct sockaddr and the wire endpoints of protocol.h. An
 * AF_INET6 socket may name an IPv4 peer as ::ffff:a.b.c.d (dual stack); the tunnel sees IPv4, the
 * program keeps seeing the mapped form, as the kernel shows it.
 */
#include "wrapguard.h"

#include <errno.h>
#include <string.h>

static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int wg_sockaddr_parse(const struct sockaddr *sa, socklen_t len, uint8_t *family,
                      struct wgp_endpoint *ep, int *mapped) {
  memset(ep, 0, sizeof *ep);
  *mapped = 0;
  if (!sa || len < (socklen_t)sizeof(sa_family_t)) {
    errno = EINVAL;
    return -1;
  }
  if (sa->sa_family == AF_INET) {
    if (len < (socklen_t)sizeof(struct sockaddr_in)) {
      errno = EINVAL;
      return -1;
    }
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    memcpy(ep->addr, &in->sin_addr, 4);
    ep->port = ntohs(in->sin_port);
    *family = WGP_FAMILY_V4;
    return 0;
  }
  if (sa->sa_family == AF_INET6) {
    /* The kernel accepts the 24-byte RFC 2133 form without sin6_scope_id (SIN6_LEN_RFC2133). */
    if (len < 24) {
      errno = EINVAL;
      return -1;
    }
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    const uint8_t *a = (const uint8_t *)&in6->sin6_addr;
    ep->port = ntohs(in6->sin6_port);
    if (memcmp(a, v4mapped_prefix, 12) == 0) {
      memcpy(ep->addr, a + 12, 4);
      *family = WGP_FAMILY_V4;
      *mapped = 1;
    } else {
      memcpy(ep->addr, a, 16);
      *family = WGP_FAMILY_V6;
    }
    return 0;
  }
  errno = EAFNOSUPPORT;
  return -1;
}

socklen_t wg_sockaddr_build(int domain, uint8_t family, const struct wgp_endpoint *ep,
                            struct sockaddr_storage *out) {
  memset(out, 0, sizeof *out);
  if (domain == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)out;
    in->sin_family = AF_INET;
    in->sin_port = htons(ep->port);
    if (family == WGP_FAMILY_V4) memcpy(&in->sin_addr, ep->addr, 4);
    return sizeof *in;
  }
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons(ep->port);
  uint8_t *a = (uint8_t *)&in6->sin6_addr;
  if (family == WGP_FAMILY_V4) {
    memcpy(a, v4mapped_prefix, 12);
    memcpy(a + 12, ep->addr, 4);
  } else if (family == WGP_FAMILY_V6) {
    memcpy(a, ep->addr, 16);
  }
  return sizeof *in6;
}

void wg_sockaddr_copy_out(const struct sockaddr_storage *ss, socklen_t full, struct sockaddr *addr,
                          socklen_t *len) {
  if (!addr || !len) return;
  socklen_t n = *len < full ? *len : full;
  memcpy(addr, ss, n);
  *len = full;
}
