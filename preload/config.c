/*
 * The interposer's configuration, read once from the environment the launcher sets
 * (PROTOCOL.md "Environment"), and the routing decision made from it before any hook acts.
 *
 * Pure: no hooks, no I/O, so preload/test/protocol_test.c exercises it directly.
 */
#include "wrapguard.h"

#include <arpa/inet.h>
#include <string.h>

struct wg_config wg_cfg;

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int wg_prefix_parse(const char *text, int allow_exclude, struct wg_prefix *out) {
  memset(out, 0, sizeof *out);
  if (allow_exclude && *text == '!') {
    out->exclude = 1;
    text++;
  }
  char buf[64];
  size_t n = strlen(text);
  if (n == 0 || n >= sizeof buf) return -1;
  memcpy(buf, text, n + 1);
  char *slash = strchr(buf, '/');
  long bits = -1;
  if (slash) {
    *slash = 0;
    const char *b = slash + 1;
    if (*b == 0 || strlen(b) > 3) return -1;
    bits = 0;
    for (; *b; b++) {
      if (*b < '0' || *b > '9') return -1;
      bits = bits * 10 + (*b - '0');
    }
  }
  if (inet_pton(AF_INET, buf, out->addr) == 1) {
    out->family = WGP_FAMILY_V4;
    if (bits > 32) return -1;
    out->bits = (uint8_t)(bits < 0 ? 32 : bits);
  } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
    out->family = WGP_FAMILY_V6;
    if (bits > 128) return -1;
    out->bits = (uint8_t)(bits < 0 ? 128 : bits);
  } else {
    return -1;
  }
  return 0;
}

/* Parses a comma-separated list into `out`; -1 on any bad element or overflow. */
static int parse_list(const char *text, int allow_exclude, struct wg_prefix *out, int max,
                      int *count) {
  *count = 0;
  while (*text) {
    const char *comma = strchr(text, ',');
    size_t n = comma ? (size_t)(comma - text) : strlen(text);
    char item[72];
    if (n >= sizeof item) return -1;
    memcpy(item, text, n);
    item[n] = 0;
    /* Tolerate spaces around items, as wg-quick's AllowedIPs lists have them. */
    char *s = item;
    while (*s == ' ') s++;
    char *e = s + strlen(s);
    while (e > s && e[-1] == ' ') *--e = 0;
    if (*s) {
      if (*count >= max) return -1;
      if (wg_prefix_parse(s, allow_exclude, &out[*count]) != 0) return -1;
      (*count)++;
    }
    text += n;
    if (*text == ',') text++;
  }
  return 0;
}

void wg_config_parse(struct wg_config *cfg, const char *dir, const char *secret,
                     const char *routes, const char *addresses, const char *kill,
                     const char *debug) {
  memset(cfg, 0, sizeof *cfg);
  cfg->debug = debug && *debug && strcmp(debug, "0") != 0;
  cfg->kill_switch = kill && *kill && strcmp(kill, "0") != 0;
  if (!dir || !*dir) return; /* not under wrapguard: every call passes through */
  cfg->active = 1;
  /* From here on a mistake fails closed: `broken` denies everything but local traffic. */
  size_t n = strlen(dir);
  if (n + sizeof "/broker.sock" > sizeof cfg->socket_path) goto broken;
  memcpy(cfg->socket_path, dir, n);
  memcpy(cfg->socket_path + n, "/broker.sock", sizeof "/broker.sock");
  if (!secret || strlen(secret) != 2 * WGP_SECRET_LEN) goto broken;
  for (int i = 0; i < WGP_SECRET_LEN; i++) {
    int hi = hexval(secret[2 * i]), lo = hexval(secret[2 * i + 1]);
    if (hi < 0 || lo < 0) goto broken;
    cfg->secret[i] = (uint8_t)(hi << 4 | lo);
  }
  if (parse_list(routes ? routes : "", 1, cfg->routes, WG_MAX_ROUTES, &cfg->nroutes) != 0) {
    goto broken;
  }
  if (parse_list(addresses ? addresses : "", 0, cfg->addresses, WG_MAX_ADDRESSES,
                 &cfg->naddresses) != 0) {
    goto broken;
  }
  return;
broken:
  cfg->broken = 1;
  cfg->kill_switch = 1;
}

static size_t addr_len(uint8_t family) { return family == WGP_FAMILY_V4 ? 4 : 16; }

static int prefix_contains(const struct wg_prefix *p, uint8_t family, const uint8_t addr[16]) {
  if (p->family != family) return 0;
  int bits = p->bits;
  for (size_t i = 0; bits > 0 && i < addr_len(family); i++, bits -= 8) {
    uint8_t mask = bits >= 8 ? 0xff : (uint8_t)(0xff << (8 - bits));
    if ((p->addr[i] & mask) != (addr[i] & mask)) return 0;
  }
  return 1;
}

int wg_is_loopback(uint8_t family, const uint8_t addr[16]) {
  if (family == WGP_FAMILY_V4) return addr[0] == 127;
  static const uint8_t one[16] = {[15] = 1};
  return memcmp(addr, one, 16) == 0;
}

int wg_is_unspecified(uint8_t family, const uint8_t addr[16]) {
  for (size_t i = 0; i < addr_len(family); i++) {
    if (addr[i]) return 0;
  }
  return 1;
}

int wg_is_tunnel_address(const struct wg_config *cfg, uint8_t family, const uint8_t addr[16]) {
  for (int i = 0; i < cfg->naddresses; i++) {
    const struct wg_prefix *a = &cfg->addresses[i];
    if (a->family == family && memcmp(a->addr, addr, addr_len(family)) == 0) return 1;
  }
  return 0;
}

enum wg_decision wg_route(const struct wg_config *cfg, uint8_t family, const uint8_t addr[16]) {
  /* Loopback and "this host" never leave the machine: never ours, never denied. */
  if (wg_is_loopback(family, addr) || wg_is_unspecified(family, addr)) return WG_PASS;
  if (!cfg->active) return WG_PASS;
  if (cfg->broken) return WG_DENY;
  /* Longest prefix wins, as in a routing table; on a tie an exclusion wins. */
  int best = -1, excluded = 0;
  for (int i = 0; i < cfg->nroutes; i++) {
    const struct wg_prefix *p = &cfg->routes[i];
    if (!prefix_contains(p, family, addr)) continue;
    if (p->bits > best || (p->bits == best && p->exclude)) {
      best = p->bits;
      excluded = p->exclude;
    }
  }
  if (best >= 0) return excluded ? WG_PASS : WG_TUNNEL; /* an exclusion is a host route */
  return cfg->kill_switch ? WG_DENY : WG_PASS;
}

/* ---- name resolution ---- */

struct wg_dns wg_dns;

/* resolv.conf: "nameserver ADDR" lines (an IPv6 zone "%eth0" is dropped); the rest is ignored. */
static void parse_resolv_conf(struct wg_dns *d, const char *text) {
  while (text && *text) {
    const char *eol = strchr(text, '\n');
    size_t n = eol ? (size_t)(eol - text) : strlen(text);
    char line[256];
    if (n < sizeof line) {
      memcpy(line, text, n);
      line[n] = 0;
      char *p = line;
      while (*p == ' ' || *p == '\t') p++;
      if (strncmp(p, "nameserver", 10) == 0 && (p[10] == ' ' || p[10] == '\t')) {
        p += 10;
        while (*p == ' ' || *p == '\t') p++;
        char *end = p;
        while (*end && *end != ' ' && *end != '\t' && *end != '\r' && *end != '%' &&
               *end != '#' && *end != ';') {
          end++;
        }
        *end = 0;
        if (d->nresolv < WG_MAX_DNS && strchr(p, '/') == NULL &&
            wg_prefix_parse(p, 0, &d->resolv[d->nresolv]) == 0) {
          d->nresolv++;
        }
      }
    }
    text += n;
    if (*text == '\n') text++;
  }
}

void wg_dns_parse(struct wg_dns *d, const char *servers, const char *search,
                  const char *resolv_conf) {
  memset(d, 0, sizeof *d);
  if (!servers || !*servers) return;
  d->active = 1;
  if (parse_list(servers, 0, d->servers, WG_MAX_DNS, &d->nservers) != 0 || d->nservers == 0) {
    d->broken = 1;
    return;
  }
  for (int i = 0; i < d->nservers; i++) {
    /* Addresses, not prefixes. */
    if (d->servers[i].bits != (d->servers[i].family == WGP_FAMILY_V4 ? 32 : 128)) {
      d->broken = 1;
      return;
    }
  }
  while (search && *search) {
    const char *comma = strchr(search, ',');
    size_t n = comma ? (size_t)(comma - search) : strlen(search);
    if (n > 0 && n <= WG_MAX_SEARCH_LEN && d->nsearch < WG_MAX_SEARCH) {
      memcpy(d->search[d->nsearch], search, n);
      d->search[d->nsearch][n] = 0;
      d->nsearch++;
    }
    search += n;
    if (*search == ',') search++;
  }
  parse_resolv_conf(d, resolv_conf);
}

static int same_addr(const struct wg_prefix *p, uint8_t family, const uint8_t addr[16]) {
  return p->family == family && memcmp(p->addr, addr, addr_len(family)) == 0;
}

int wg_dns_redirect(const struct wg_dns *d, uint8_t *family, struct wgp_endpoint *ep) {
  if (!d->active || d->broken || d->nservers == 0 || ep->port != 53) return 0;
  for (int i = 0; i < d->nservers; i++) {
    if (same_addr(&d->servers[i], *family, ep->addr)) return 0; /* already the tunnel's */
  }
  int hit = 0;
  for (int i = 0; i < d->nresolv && !hit; i++) hit = same_addr(&d->resolv[i], *family, ep->addr);
  if (!hit) return 0;
  const struct wg_prefix *to = &d->servers[0];
  for (int i = 0; i < d->nservers; i++) {
    if (d->servers[i].family == *family) {
      to = &d->servers[i];
      break;
    }
  }
  *family = to->family;
  memset(ep->addr, 0, sizeof ep->addr);
  memcpy(ep->addr, to->addr, addr_len(to->family));
  return 1;
}
