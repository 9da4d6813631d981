/*
 * Name resolution through the tunnel (DESIGN.md decision 4). When the launcher sets
 * WRAPGUARD_DNS (the config has `DNS =`), no lookup of the wrapped program may reach the host's
 * resolver:
 *
 *   getaddrinfo, gethostbyname[2][_r]
 *       numeric ─► libc (no lookup happens)
 *       /etc/hosts ─► answered here (read by us, so that no nscd or NSS module is asked)
 *       otherwise ─► RESOLVE to the broker ─► Resolver.forTunnel ─► the DNS = servers
 *   res_[n]query, res_[n]search, res_[n]querydomain, res_[n]send
 *       ─► the DNS message built here (or the program's) ─► QUERY to the broker ─► the servers
 *   programs with their own resolver (dig, c-ares, …) sending to a resolv.conf nameserver:53
 *       ─► redirected to the tunnel DNS server (connect.c, udp.c call wg_dns_redirect), and the
 *          answers shown as coming from the address the program asked
 *   gethostbyaddr[_r], getnameinfo (a name wanted)
 *       /etc/hosts ─► answered here
 *       otherwise ─► a PTR query (in-addr.arpa, ip6.arpa) as QUERY ─► the servers
 *   anything else in libc that would look a host up (rcmd, …)
 *       ─► NSS "hosts" limited to "files" at load (wg_dns_init): /etc/hosts or nothing
 *
 * glibc's own resolver calls socket/connect/sendto through internal aliases that no preloaded
 * library can hook; limiting NSS is what keeps those paths from sending queries.
 */
#include "wrapguard.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <resolv.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Exported by glibc since 2.0; not in its headers. */
extern int __nss_configure_lookup(const char *dbname, const char *service_line);

typedef int (*getaddrinfo_fn)(const char *, const char *, const struct addrinfo *,
                              struct addrinfo **);
typedef void (*freeaddrinfo_fn)(struct addrinfo *);
typedef int (*ghbn2r_fn)(const char *, int, struct hostent *, char *, size_t, struct hostent **,
                         int *);
typedef int (*ghbnr_fn)(const char *, struct hostent *, char *, size_t, struct hostent **, int *);
typedef struct hostent *(*ghbn2_fn)(const char *, int);
typedef struct hostent *(*ghbn_fn)(const char *);
typedef int (*resq_fn)(const char *, int, int, unsigned char *, int);
typedef int (*resnq_fn)(res_state, const char *, int, int, unsigned char *, int);
typedef int (*resqd_fn)(const char *, const char *, int, int, unsigned char *, int);
typedef int (*resnqd_fn)(res_state, const char *, const char *, int, int, unsigned char *, int);
typedef int (*ress_fn)(const unsigned char *, int, unsigned char *, int);
typedef int (*ghbar_fn)(const void *, socklen_t, int, struct hostent *, char *, size_t,
                        struct hostent **, int *);
typedef struct hostent *(*ghba_fn)(const void *, socklen_t, int);
typedef int (*gni_fn)(const struct sockaddr *, socklen_t, char *, socklen_t, char *, socklen_t,
                      int);
typedef int (*resns_fn)(res_state, const unsigned char *, int, unsigned char *, int);

WG_EXPORT int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                          struct addrinfo **res);
WG_EXPORT int gethostbyname2_r(const char *name, int af, struct hostent *ret, char *buf,
                               size_t buflen, struct hostent **result, int *h_errnop);
WG_EXPORT int gethostbyname_r(const char *name, struct hostent *ret, char *buf, size_t buflen,
                              struct hostent **result, int *h_errnop);
WG_EXPORT struct hostent *gethostbyname2(const char *name, int af);
WG_EXPORT struct hostent *gethostbyname(const char *name);
WG_EXPORT int gethostbyaddr_r(const void *addr, socklen_t len, int type, struct hostent *ret,
                              char *buf, size_t buflen, struct hostent **result, int *h_errnop);
WG_EXPORT struct hostent *gethostbyaddr(const void *addr, socklen_t len, int type);
WG_EXPORT int getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host,
                          socklen_t hostlen, char *serv, socklen_t servlen, int flags);
WG_EXPORT int res_query(const char *dname, int class, int type, unsigned char *answer, int anslen);
WG_EXPORT int res_search(const char *dname, int class, int type, unsigned char *answer,
                         int anslen);
WG_EXPORT int res_querydomain(const char *name, const char *domain, int class, int type,
                              unsigned char *answer, int anslen);
WG_EXPORT int res_send(const unsigned char *msg, int msglen, unsigned char *answer, int anslen);
WG_EXPORT int res_nquery(res_state st, const char *dname, int class, int type,
                         unsigned char *answer, int anslen);
WG_EXPORT int res_nsearch(res_state st, const char *dname, int class, int type,
                          unsigned char *answer, int anslen);
WG_EXPORT int res_nquerydomain(res_state st, const char *name, const char *domain, int class,
                               int type, unsigned char *answer, int anslen);
WG_EXPORT int res_nsend(res_state st, const unsigned char *msg, int msglen, unsigned char *answer,
                        int anslen);
/* The names programs linked against glibc before 2.34 (libresolv) refer to. */
WG_EXPORT int __res_query(const char *dname, int class, int type, unsigned char *answer,
                          int anslen);
WG_EXPORT int __res_search(const char *dname, int class, int type, unsigned char *answer,
                           int anslen);
WG_EXPORT int __res_querydomain(const char *name, const char *domain, int class, int type,
                                unsigned char *answer, int anslen);
WG_EXPORT int __res_send(const unsigned char *msg, int msglen, unsigned char *answer, int anslen);
WG_EXPORT int __res_nquery(res_state st, const char *dname, int class, int type,
                           unsigned char *answer, int anslen);
WG_EXPORT int __res_nsearch(res_state st, const char *dname, int class, int type,
                            unsigned char *answer, int anslen);
WG_EXPORT int __res_nquerydomain(res_state st, const char *name, const char *domain, int class,
                                 int type, unsigned char *answer, int anslen);
WG_EXPORT int __res_nsend(res_state st, const unsigned char *msg, int msglen,
                          unsigned char *answer, int anslen);

WG_DEFINE_REAL(getaddrinfo, getaddrinfo_fn)
WG_DEFINE_REAL(gethostbyname2_r, ghbn2r_fn)
WG_DEFINE_REAL(gethostbyname_r, ghbnr_fn)
WG_DEFINE_REAL(gethostbyname2, ghbn2_fn)
WG_DEFINE_REAL(gethostbyname, ghbn_fn)
WG_DEFINE_REAL(gethostbyaddr_r, ghbar_fn)
WG_DEFINE_REAL(gethostbyaddr, ghba_fn)
WG_DEFINE_REAL(getnameinfo, gni_fn)
WG_DEFINE_REAL(res_query, resq_fn)
WG_DEFINE_REAL(res_search, resq_fn)
WG_DEFINE_REAL(res_querydomain, resqd_fn)
WG_DEFINE_REAL(res_send, ress_fn)
WG_DEFINE_REAL(res_nquery, resnq_fn)
WG_DEFINE_REAL(res_nsearch, resnq_fn)
WG_DEFINE_REAL(res_nquerydomain, resnqd_fn)
WG_DEFINE_REAL(res_nsend, resns_fn)

static int dns_on(void) { return wg_cfg.active && wg_dns.active; }

void wg_dns_init(void) {
  if (__nss_configure_lookup("hosts", "files") != 0) {
    wg_warn("cannot limit the C library's host lookups to /etc/hosts");
  }
}

/* ---- redirect bookkeeping ---- */

void wg_dns_mark(struct wg_sock *s, uint8_t real_family, const struct wgp_endpoint *real,
                 uint8_t shown_family, const struct wgp_endpoint *shown) {
  pthread_mutex_lock(&s->lock);
  s->dns_redirected = 1;
  s->dns_real_family = real_family;
  s->dns_real = *real;
  s->dns_shown_family = shown_family;
  s->dns_shown = *shown;
  pthread_mutex_unlock(&s->lock);
}

void wg_dns_shown(const struct wg_sock *s, uint8_t *family, struct wgp_endpoint *ep) {
  if (!s->dns_redirected || *family != s->dns_real_family || ep->port != s->dns_real.port ||
      memcmp(ep->addr, s->dns_real.addr, 16) != 0) {
    return;
  }
  *family = s->dns_shown_family;
  *ep = s->dns_shown;
}

/* ---- lookups ---- */

struct found {
  char canon[WGP_MAX_NAME + 1];
  size_t count;
  uint8_t family[WGP_MAX_ADDRESSES];
  uint8_t addr[WGP_MAX_ADDRESSES][16];
};

static void add_addr(struct found *f, uint8_t family, const uint8_t *addr) {
  if (f->count >= WGP_MAX_ADDRESSES) return;
  for (size_t i = 0; i < f->count; i++) {
    if (f->family[i] == family && memcmp(f->addr[i], addr, family == WGP_FAMILY_V4 ? 4 : 16) == 0)
      return;
  }
  f->family[f->count] = family;
  memset(f->addr[f->count], 0, 16);
  memcpy(f->addr[f->count], addr, family == WGP_FAMILY_V4 ? 4 : 16);
  f->count++;
}

/* A name equal to `want`, ignoring case and one final dot on either. */
static int name_matches(const char *have, size_t hlen, const char *want) {
  size_t wlen = strlen(want);
  if (wlen > 0 && want[wlen - 1] == '.') wlen--;
  if (hlen > 0 && have[hlen - 1] == '.') hlen--;
  return hlen == wlen && hlen > 0 && strncasecmp(have, want, hlen) == 0;
}

/* Calls fn for each line of /etc/hosts split into tokens (address, names…), comments removed,
 * until fn returns non-zero. */
static void hosts_scan(int (*fn)(char **tok, size_t ntok, void *ctx), void *ctx) {
  size_t cap = 1 << 16;
  char *text = malloc(cap);
  if (!text) return;
  if (wg_read_file("/etc/hosts", text, cap) < 0) {
    free(text);
    return;
  }
  for (char *line = text; *line;) {
    char *eol = strchr(line, '\n');
    if (eol) *eol = 0;
    char *hash = strchr(line, '#');
    if (hash) *hash = 0;
    char *tok[64];
    size_t ntok = 0;
    for (char *p = line; *p && ntok < 64;) {
      while (*p == ' ' || *p == '\t' || *p == '\r') *p++ = 0;
      if (!*p) break;
      tok[ntok++] = p;
      while (*p && *p != ' ' && *p != '\t' && *p != '\r') p++;
    }
    if (ntok >= 2 && fn(tok, ntok, ctx)) break;
    if (!eol) break;
    line = eol + 1;
  }
  free(text);
}

/* The address of a hosts line, without a zone; 0 when it is not one of `af`. */
static int hosts_addr(const char *text, int af, uint8_t *out) {
  char addr[64];
  size_t al = strlen(text);
  if (al >= sizeof addr) return 0;
  memcpy(addr, text, al + 1);
  char *zone = strchr(addr, '%');
  if (zone) *zone = 0;
  return inet_pton(af, addr, out) == 1;
}

struct by_name {
  const char *name;
  int want4, want6;
  struct found *f;
};

static int hosts_by_name(char **tok, size_t ntok, void *ctx) {
  struct by_name *q = ctx;
  int hit = 0;
  for (size_t i = 1; i < ntok && !hit; i++) hit = name_matches(tok[i], strlen(tok[i]), q->name);
  if (!hit) return 0;
  uint8_t a[16];
  int added = 0;
  if (q->want4 && hosts_addr(tok[0], AF_INET, a)) {
    add_addr(q->f, WGP_FAMILY_V4, a);
    added = 1;
  } else if (q->want6 && hosts_addr(tok[0], AF_INET6, a)) {
    add_addr(q->f, WGP_FAMILY_V6, a);
    added = 1;
  }
  if (added && !q->f->canon[0] && strlen(tok[1]) <= WGP_MAX_NAME) {
    memcpy(q->f->canon, tok[1], strlen(tok[1]) + 1);
  }
  return 0;
}

/* /etc/hosts, as the "files" NSS module reads it: every line that lists the name contributes its
 * address; the canonical name is the first name of the first such line. */
static void hosts_lookup(const char *name, int want4, int want6, struct found *f) {
  struct by_name q = {.name = name, .want4 = want4, .want6 = want6, .f = f};
  hosts_scan(hosts_by_name, &q);
}

/* RESOLVE through the broker. Returns a wgp status, or -1 when the broker cannot be reached. */
static int broker_resolve(const char *name, uint8_t family, struct found *f) {
  size_t len = strlen(name);
  if (len == 0 || len > WGP_MAX_NAME) return WGP_ST_NOTFOUND;
  uint8_t body[1 + WGP_MAX_NAME + WGP_MAX_ADDRESSES * WGP_RESOLVE_ENTRY_LEN];
  size_t n;
  int st = wg_broker_service(WGP_OP_RESOLVE, family, name, (uint32_t)len, body, sizeof body, &n);
  if (st != WGP_OK) {
    if (st < 0) wg_warn("cannot reach the tunnel broker for a name lookup: %s", strerror(errno));
    return st;
  }
  struct wgp_resolved r;
  int err = n > sizeof body ? WGP_E_LENGTH : wgp_decode_resolve_body(body, n, &r);
  if (err) {
    wg_warn("malformed name lookup reply from the broker (%s)", wgp_error_name(err));
    return WGP_ST_AGAIN;
  }
  for (size_t i = 0; i < r.count; i++) add_addr(f, r.family[i], r.addr[i]);
  if (!f->canon[0]) memcpy(f->canon, r.canon, sizeof r.canon);
  return f->count > 0 ? WGP_OK : WGP_ST_NODATA;
}

/* /etc/hosts, then the tunnel's DNS. A wgp status (-1: broker unreachable). */
static int lookup(const char *name, int want4, int want6, struct found *f) {
  memset(f, 0, sizeof *f);
  if (wg_dns.broken) return WGP_ST_NODNS;
  hosts_lookup(name, want4, want6, f);
  if (f->count > 0) return WGP_OK;
  uint8_t family = want4 && want6 ? WGP_FAMILY_NONE : want4 ? WGP_FAMILY_V4 : WGP_FAMILY_V6;
  wg_debug("resolve %s (family %u) through the tunnel", name, family);
  return broker_resolve(name, family, f);
}

static int has_address(uint8_t family) {
  for (int i = 0; i < wg_cfg.naddresses; i++) {
    if (wg_cfg.addresses[i].family == family) return 1;
  }
  return 0;
}

/* Numeric names never need a lookup; libc handles them (and their odd forms like "10.1"). */
static int is_numeric(const char *name) {
  uint8_t a[16];
  struct in_addr in;
  char buf[64];
  size_t n = strlen(name);
  if (n >= sizeof buf) return 0;
  memcpy(buf, name, n + 1);
  char *zone = strchr(buf, '%');
  if (zone) *zone = 0;
  return inet_aton(buf, &in) != 0 || inet_pton(AF_INET6, buf, a) == 1;
}

/* ---- getaddrinfo ---- */

static int gai_code(int status) {
  switch (status) {
  case WGP_ST_NOTFOUND: return EAI_NONAME;
  case WGP_ST_NODATA: return EAI_NODATA;
  case WGP_ST_NODNS: return EAI_FAIL;
  default: return EAI_AGAIN;
  }
}

static void format_addr(uint8_t family, const uint8_t *addr, int mapped, char *out, size_t cap) {
  if (family == WGP_FAMILY_V4 && mapped) {
    char v4[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, addr, v4, sizeof v4);
    snprintf(out, cap, "::ffff:%s", v4);
  } else {
    inet_ntop(family == WGP_FAMILY_V4 ? AF_INET : AF_INET6, addr, out, (socklen_t)cap);
  }
}

static int wg_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                          struct addrinfo **res) {
  if (!real_getaddrinfo()) return EAI_SYSTEM;
  if (!dns_on() || node == NULL) return real_getaddrinfo()(node, service, hints, res);
  /* glibc's defaults for hints == NULL. */
  struct addrinfo h = {.ai_flags = AI_V4MAPPED | AI_ADDRCONFIG, .ai_family = AF_UNSPEC};
  if (hints) h = *hints;
  /* Numeric hosts, and every check of the service and hints, are libc's: it looks nothing up
   * when told the host is numeric. */
  struct addrinfo hn = {.ai_flags = h.ai_flags | AI_NUMERICHOST,
                        .ai_family = h.ai_family,
                        .ai_socktype = h.ai_socktype,
                        .ai_protocol = h.ai_protocol};
  int r = real_getaddrinfo()(node, service, &hn, res);
  if (r != EAI_NONAME || (h.ai_flags & AI_NUMERICHOST) || is_numeric(node)) return r;

  int fam = h.ai_family;
  int want4 = fam == AF_UNSPEC || fam == AF_INET || (fam == AF_INET6 && (h.ai_flags & AI_V4MAPPED));
  int want6 = fam == AF_UNSPEC || fam == AF_INET6;
  if ((h.ai_flags & AI_ADDRCONFIG) && fam == AF_UNSPEC) {
    /* The addresses that count are the tunnel's: the program's traffic goes there. */
    int h4 = has_address(WGP_FAMILY_V4), h6 = has_address(WGP_FAMILY_V6);
    if (h4 || h6) {
      want4 = h4;
      want6 = h6;
    }
  }
  struct found f;
  int st = lookup(node, want4, want6, &f);
  if (st != WGP_OK) return gai_code(st);

  /* AF_INET6 with AI_V4MAPPED: IPv6 answers, or (none, or AI_ALL) the IPv4 ones mapped. */
  int any6 = 0;
  for (size_t i = 0; i < f.count; i++) any6 |= f.family[i] == WGP_FAMILY_V6;
  int map4 = fam == AF_INET6 && (h.ai_flags & AI_V4MAPPED) && (!any6 || (h.ai_flags & AI_ALL));

  /* Each address through libc's numeric path: the same socket types, protocols and ports, and
   * a list freeaddrinfo() frees as its own. */
  struct addrinfo *head = NULL, **tail = &head;
  int last_err = EAI_NODATA;
  struct addrinfo hx = {.ai_flags = (h.ai_flags & AI_PASSIVE) | AI_NUMERICHOST,
                        .ai_family = fam,
                        .ai_socktype = h.ai_socktype,
                        .ai_protocol = h.ai_protocol};
  /* The resolver's order is kept (IPv4 first when both were asked, as the broker answers). */
  for (size_t i = 0; i < f.count; i++) {
    int v4 = f.family[i] == WGP_FAMILY_V4;
    if (v4 && fam == AF_INET6 && !map4) continue;
    if (!v4 && fam == AF_INET) continue;
    char text[INET6_ADDRSTRLEN + 8];
    format_addr(f.family[i], f.addr[i], v4 && fam == AF_INET6, text, sizeof text);
    struct addrinfo *part = NULL;
    int e = real_getaddrinfo()(text, service, &hx, &part);
    if (e != 0) {
      last_err = e;
      continue;
    }
    *tail = part;
    while (*tail) tail = &(*tail)->ai_next;
  }
  if (!head) return last_err;
  if (h.ai_flags & AI_CANONNAME) {
    free(head->ai_canonname);
    head->ai_canonname = strdup(f.canon[0] ? f.canon : node);
  }
  *res = head;
  return 0;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res) {
  wg_init();
  int saved = errno;
  int r = wg_getaddrinfo(node, service, hints, res);
  if (r != EAI_SYSTEM) errno = saved;
  return r;
}

/* ---- gethostbyname family ---- */

static int h_error(int status) {
  switch (status) {
  case WGP_ST_NOTFOUND: return HOST_NOT_FOUND;
  case WGP_ST_NODATA: return NO_DATA;
  case WGP_ST_NODNS: return NO_RECOVERY;
  default: return TRY_AGAIN;
  }
}

/* Lays a hostent out in buf: pointers first (aligned), then addresses, then the name. */
static int fill_hostent(const struct found *f, int af, const char *name, struct hostent *ret,
                        char *buf, size_t buflen) {
  uint8_t fam = af == AF_INET ? WGP_FAMILY_V4 : WGP_FAMILY_V6;
  size_t alen = af == AF_INET ? 4 : 16;
  size_t n = 0;
  for (size_t i = 0; i < f->count; i++) n += f->family[i] == fam;
  const char *canon = f->canon[0] ? f->canon : name;
  size_t pad = (sizeof(char *) - ((uintptr_t)buf % sizeof(char *))) % sizeof(char *);
  size_t need = pad + (n + 1 + 1) * sizeof(char *) + n * alen + strlen(canon) + 1;
  if (need > buflen) return ERANGE;
  char **ptrs = (char **)(void *)(buf + pad);
  char **aliases = ptrs + n + 1;
  char *data = (char *)(aliases + 1);
  size_t k = 0;
  for (size_t i = 0; i < f->count; i++) {
    if (f->family[i] != fam) continue;
    memcpy(data, f->addr[i], alen);
    ptrs[k++] = data;
    data += alen;
  }
  ptrs[k] = NULL;
  aliases[0] = NULL;
  memcpy(data, canon, strlen(canon) + 1);
  ret->h_name = data;
  ret->h_aliases = aliases;
  ret->h_addrtype = af;
  ret->h_length = (int)alen;
  ret->h_addr_list = ptrs;
  return 0;
}

static int wg_gethostbyname2_r(const char *name, int af, struct hostent *ret, char *buf,
                               size_t buflen, struct hostent **result, int *h_errnop) {
  *result = NULL;
  if (af != AF_INET && af != AF_INET6) {
    *h_errnop = NETDB_INTERNAL;
    errno = EAFNOSUPPORT;
    return EAFNOSUPPORT;
  }
  struct found f;
  int st = lookup(name, af == AF_INET, af == AF_INET6, &f);
  if (st != WGP_OK) {
    *h_errnop = h_error(st);
    return st == WGP_ST_AGAIN || st < 0 ? EAGAIN : 0;
  }
  int e = fill_hostent(&f, af, name, ret, buf, buflen);
  if (e) {
    *h_errnop = NETDB_INTERNAL;
    errno = e;
    return e;
  }
  *h_errnop = 0;
  *result = ret;
  return 0;
}

int gethostbyname2_r(const char *name, int af, struct hostent *ret, char *buf, size_t buflen,
                     struct hostent **result, int *h_errnop) {
  wg_init();
  if (!dns_on() || !name || is_numeric(name)) {
    if (!real_gethostbyname2_r()) return ENOSYS;
    return real_gethostbyname2_r()(name, af, ret, buf, buflen, result, h_errnop);
  }
  return wg_gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop);
}

int gethostbyname_r(const char *name, struct hostent *ret, char *buf, size_t buflen,
                    struct hostent **result, int *h_errnop) {
  wg_init();
  if (!dns_on() || !name || is_numeric(name)) {
    if (!real_gethostbyname_r()) return ENOSYS;
    return real_gethostbyname_r()(name, ret, buf, buflen, result, h_errnop);
  }
  return wg_gethostbyname2_r(name, AF_INET, ret, buf, buflen, result, h_errnop);
}

/* The non-reentrant forms keep their result per thread (glibc's is per process). */
static __thread struct hostent tls_host;
static __thread char tls_buf[2048];

struct hostent *gethostbyname2(const char *name, int af) {
  wg_init();
  if (!dns_on() || !name || is_numeric(name)) {
    return real_gethostbyname2() ? real_gethostbyname2()(name, af) : NULL;
  }
  struct hostent *out;
  int herr = 0;
  wg_gethostbyname2_r(name, af, &tls_host, tls_buf, sizeof tls_buf, &out, &herr);
  h_errno = herr;
  return out;
}

struct hostent *gethostbyname(const char *name) {
  wg_init();
  if (!dns_on() || !name || is_numeric(name)) {
    return real_gethostbyname() ? real_gethostbyname()(name) : NULL;
  }
  struct hostent *out;
  int herr = 0;
  wg_gethostbyname2_r(name, AF_INET, &tls_host, tls_buf, sizeof tls_buf, &out, &herr);
  h_errno = herr;
  return out;
}

/* ---- res_* ---- */

static void set_herr(res_state st, int herr) {
  h_errno = herr;
  if (st) st->res_h_errno = herr;
}

/* A standard query for (name, class, type), recursion desired (RFC 1035 4.1). Returns its
 * length, or -1 for a name that is not one. */
static int make_query(const char *name, int class, int type, uint8_t *out, size_t cap) {
  if (cap < 12 + 2 + 4) return -1;
  uint16_t id = 0;
  if (syscall(SYS_getrandom, &id, sizeof id, 0) != (long)sizeof id) {
    id = (uint16_t)(syscall(SYS_getpid) ^ (uintptr_t)&id);
  }
  memset(out, 0, 12);
  out[0] = (uint8_t)(id >> 8);
  out[1] = (uint8_t)id;
  out[2] = 0x01; /* RD */
  out[5] = 1;    /* QDCOUNT */
  size_t off = 12;
  const char *p = name;
  if (p[0] == '.' && p[1] == 0) p++; /* the root */
  while (*p) {
    const char *dot = strchr(p, '.');
    size_t n = dot ? (size_t)(dot - p) : strlen(p);
    if (n == 0 || n > 63 || off + 1 + n + 1 + 4 > cap || off + 1 + n > 12 + 254) return -1;
    if (memchr(p, '\\', n)) return -1; /* escapes are not worth their complexity here */
    out[off++] = (uint8_t)n;
    memcpy(out + off, p, n);
    off += n;
    p += n;
    if (*p == '.') p++;
  }
  out[off++] = 0;
  out[off++] = (uint8_t)(type >> 8);
  out[off++] = (uint8_t)type;
  out[off++] = (uint8_t)(class >> 8);
  out[off++] = (uint8_t)class;
  return (int)off;
}

/* QUERY through the broker: the response's full length (at most anslen bytes copied), or -1 with
 * the h_errno to report. */
static int send_query(const uint8_t *msg, int msglen, uint8_t *answer, int anslen, int *herr) {
  if (wg_dns.broken) {
    *herr = NO_RECOVERY;
    return -1;
  }
  if (msglen < (int)WGP_MIN_DNS_MESSAGE || msglen > (int)WGP_MAX_DNS_MESSAGE || anslen < 0) {
    *herr = NO_RECOVERY;
    errno = EINVAL;
    return -1;
  }
  size_t n;
  int st = wg_broker_service(WGP_OP_QUERY, WGP_FAMILY_NONE, msg, (uint32_t)msglen, answer,
                             (size_t)anslen, &n);
  if (st != WGP_OK) {
    if (st < 0) wg_warn("cannot reach the tunnel broker for a DNS query: %s", strerror(errno));
    *herr = st == WGP_ST_NODNS ? NO_RECOVERY : TRY_AGAIN;
    return -1;
  }
  return (int)n;
}

static int wg_res_nsend(res_state st, const unsigned char *msg, int msglen, unsigned char *answer,
                        int anslen) {
  int herr = 0;
  int n = send_query(msg, msglen, answer, anslen, &herr);
  if (n < 0) set_herr(st, herr);
  return n;
}

static int wg_res_nquery(res_state st, const char *dname, int class, int type,
                         unsigned char *answer, int anslen) {
  uint8_t q[12 + 256 + 4];
  int qlen = make_query(dname, class, type, q, sizeof q);
  if (qlen < 0) {
    set_herr(st, NO_RECOVERY);
    errno = EINVAL;
    return -1;
  }
  int herr = 0;
  int n = send_query(q, qlen, answer, anslen, &herr);
  if (n < 0) {
    set_herr(st, herr);
    return -1;
  }
  if (n < 12 || anslen < 12) {
    set_herr(st, NO_RECOVERY);
    return -1;
  }
  int rcode = answer[3] & 0x0f;
  int ancount = (answer[6] << 8) | answer[7];
  if (rcode != 0 || ancount == 0) {
    /* As glibc's res_nquery: the rcode decides h_errno, and the call fails. */
    set_herr(st, rcode == 3 ? HOST_NOT_FOUND : rcode == 2 ? TRY_AGAIN : rcode == 0 ? NO_DATA
                                                                              : NO_RECOVERY);
    return -1;
  }
  set_herr(st, 0);
  return n;
}

static int wg_res_nquerydomain(res_state st, const char *name, const char *domain, int class,
                               int type, unsigned char *answer, int anslen) {
  char full[WGP_MAX_NAME + 2];
  size_t nl = strlen(name);
  if (!domain) {
    if (nl > WGP_MAX_NAME) goto toolong;
    memcpy(full, name, nl + 1);
  } else {
    size_t dl = strlen(domain);
    if (nl + 1 + dl > WGP_MAX_NAME) goto toolong;
    memcpy(full, name, nl);
    full[nl] = '.';
    memcpy(full + nl + 1, domain, dl + 1);
  }
  return wg_res_nquery(st, full, class, type, answer, anslen);
toolong:
  set_herr(st, NO_RECOVERY);
  errno = EMSGSIZE;
  return -1;
}

/* res_search's rule (ndots 1): a name with a dot is tried as is first, one without after the
 * search domains; a final dot means only as is. NXDOMAIN and NODATA move on to the next name. */
static int wg_res_nsearch(res_state st, const char *dname, int class, int type,
                          unsigned char *answer, int anslen) {
  size_t len = strlen(dname);
  if (len > 0 && dname[len - 1] == '.') {
    return wg_res_nquery(st, dname, class, type, answer, anslen);
  }
  int dots = 0;
  for (const char *p = dname; *p; p++) dots += *p == '.';
  int tried = 0, r = -1;
  if (dots >= 1) {
    r = wg_res_nquery(st, dname, class, type, answer, anslen);
    if (r >= 0 || (h_errno != HOST_NOT_FOUND && h_errno != NO_DATA)) return r;
    tried = 1;
  }
  for (int i = 0; i < wg_dns.nsearch; i++) {
    r = wg_res_nquerydomain(st, dname, wg_dns.search[i], class, type, answer, anslen);
    if (r >= 0 || (h_errno != HOST_NOT_FOUND && h_errno != NO_DATA)) return r;
  }
  if (!tried) r = wg_res_nquery(st, dname, class, type, answer, anslen);
  return r;
}

#define RES_HOOK(call, realcall)                                                                \
  do {                                                                                          \
    wg_init();                                                                                  \
    if (!dns_on()) return realcall;                                                             \
    return call;                                                                                \
  } while (0)

#define REAL_OR(name, ...) (real_##name() ? real_##name()(__VA_ARGS__) : (errno = ENOSYS, -1))

int res_nquery(res_state st, const char *dname, int class, int type, unsigned char *answer,
               int anslen) {
  RES_HOOK(wg_res_nquery(st, dname, class, type, answer, anslen),
           REAL_OR(res_nquery, st, dname, class, type, answer, anslen));
}
int res_nsearch(res_state st, const char *dname, int class, int type, unsigned char *answer,
                int anslen) {
  RES_HOOK(wg_res_nsearch(st, dname, class, type, answer, anslen),
           REAL_OR(res_nsearch, st, dname, class, type, answer, anslen));
}
int res_nquerydomain(res_state st, const char *name, const char *domain, int class, int type,
                     unsigned char *answer, int anslen) {
  RES_HOOK(wg_res_nquerydomain(st, name, domain, class, type, answer, anslen),
           REAL_OR(res_nquerydomain, st, name, domain, class, type, answer, anslen));
}
int res_nsend(res_state st, const unsigned char *msg, int msglen, unsigned char *answer,
              int anslen) {
  RES_HOOK(wg_res_nsend(st, msg, msglen, answer, anslen),
           REAL_OR(res_nsend, st, msg, msglen, answer, anslen));
}
int res_query(const char *dname, int class, int type, unsigned char *answer, int anslen) {
  RES_HOOK(wg_res_nquery(NULL, dname, class, type, answer, anslen),
           REAL_OR(res_query, dname, class, type, answer, anslen));
}
int res_search(const char *dname, int class, int type, unsigned char *answer, int anslen) {
  RES_HOOK(wg_res_nsearch(NULL, dname, class, type, answer, anslen),
           REAL_OR(res_search, dname, class, type, answer, anslen));
}
int res_querydomain(const char *name, const char *domain, int class, int type,
                    unsigned char *answer, int anslen) {
  RES_HOOK(wg_res_nquerydomain(NULL, name, domain, class, type, answer, anslen),
           REAL_OR(res_querydomain, name, domain, class, type, answer, anslen));
}
int res_send(const unsigned char *msg, int msglen, unsigned char *answer, int anslen) {
  RES_HOOK(wg_res_nsend(NULL, msg, msglen, answer, anslen),
           REAL_OR(res_send, msg, msglen, answer, anslen));
}

int __res_nquery(res_state st, const char *dname, int class, int type, unsigned char *answer,
                 int anslen) {
  return res_nquery(st, dname, class, type, answer, anslen);
}
int __res_nsearch(res_state st, const char *dname, int class, int type, unsigned char *answer,
                  int anslen) {
  return res_nsearch(st, dname, class, type, answer, anslen);
}
int __res_nquerydomain(res_state st, const char *name, const char *domain, int class, int type,
                       unsigned char *answer, int anslen) {
  return res_nquerydomain(st, name, domain, class, type, answer, anslen);
}
int __res_nsend(res_state st, const unsigned char *msg, int msglen, unsigned char *answer,
                int anslen) {
  return res_nsend(st, msg, msglen, answer, anslen);
}
int __res_query(const char *dname, int class, int type, unsigned char *answer, int anslen) {
  return res_query(dname, class, type, answer, anslen);
}
int __res_search(const char *dname, int class, int type, unsigned char *answer, int anslen) {
  return res_search(dname, class, type, answer, anslen);
}
int __res_querydomain(const char *name, const char *domain, int class, int type,
                      unsigned char *answer, int anslen) {
  return res_querydomain(name, domain, class, type, answer, anslen);
}
int __res_send(const unsigned char *msg, int msglen, unsigned char *answer, int anslen) {
  return res_send(msg, msglen, answer, anslen);
}

/* ---- reverse lookups: gethostbyaddr[_r], getnameinfo ---- */

/* Names kept per address: the first is the host name, the others its aliases. */
#define WG_MAX_PTR_NAMES 8
/* RFC 1035 3.2.2: TYPE PTR, TYPE CNAME, CLASS IN. */
#define DNS_T_PTR 12
#define DNS_T_CNAME 5
#define DNS_C_IN 1
/* Answer records looked at per response. */
#define WG_MAX_ANSWERS 64

struct names {
  size_t count;
  char name[WG_MAX_PTR_NAMES][WGP_MAX_NAME + 1];
};

static void add_name(struct names *n, const char *name) {
  size_t len = strlen(name);
  if (n->count >= WG_MAX_PTR_NAMES || len == 0 || len > WGP_MAX_NAME) return;
  for (size_t i = 0; i < n->count; i++) {
    if (name_matches(name, len, n->name[i])) return;
  }
  memcpy(n->name[n->count++], name, len + 1);
}

/* RFC 1035 3.5 (IPv4), RFC 3596 2.5 (IPv6): the name an address's PTR record is kept under.
 * `out` holds at least 73 bytes. */
static void ptr_name(int af, const uint8_t *a, char *out) {
  if (af == AF_INET) {
    sprintf(out, "%u.%u.%u.%u.in-addr.arpa", a[3], a[2], a[1], a[0]);
    return;
  }
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  for (int i = 15; i >= 0; i--) {
    out[o++] = hex[a[i] & 0x0f];
    out[o++] = '.';
    out[o++] = hex[a[i] >> 4];
    out[o++] = '.';
  }
  memcpy(out + o, "ip6.arpa", sizeof "ip6.arpa");
}

/* Reads the name at *off of m[0..len) (RFC 1035 4.1.4: pointers followed) as dotted text into
 * out (WGP_MAX_NAME + 1 bytes; the root is ""), and moves *off past it. *bad is set when a label
 * holds a byte no host name has (space, control, '.', '\\'). -1 when malformed. */
static int read_name(const uint8_t *m, size_t len, size_t *off, char *out, int *bad) {
  size_t p = *off, o = 0;
  int jumped = 0, hops = 0;
  *bad = 0;
  for (;;) {
    if (p >= len) return -1;
    uint8_t l = m[p];
    if ((l & 0xc0) == 0xc0) {
      if (p + 1 >= len || ++hops > 64) return -1;
      if (!jumped) *off = p + 2;
      jumped = 1;
      p = ((size_t)(l & 0x3f) << 8) | m[p + 1];
      continue;
    }
    if (l & 0xc0) return -1;
    if (l == 0) {
      if (!jumped) *off = p + 1;
      break;
    }
    if (p + 1 + l > len || o + (o ? 1 : 0) + l > WGP_MAX_NAME) return -1;
    if (o) out[o++] = '.';
    for (size_t i = 0; i < l; i++) {
      uint8_t c = m[p + 1 + i];
      if (c <= 0x20 || c >= 0x7f || c == '.' || c == '\\') *bad = 1;
      out[o++] = (char)c;
    }
    p += 1 + (size_t)l;
  }
  out[o] = 0;
  return 0;
}

static uint16_t be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

/* The PTR targets for qname in a response, following a CNAME chain first (RFC 2317 delegates
 * classless reverse zones with CNAMEs). A wgp status. */
static int parse_ptr(const uint8_t *m, size_t len, const char *qname, struct names *out) {
  if (len < 12) return WGP_ST_AGAIN;
  int rcode = m[3] & 0x0f;
  if (rcode == 3) return WGP_ST_NOTFOUND;
  if (rcode != 0) return WGP_ST_AGAIN;
  size_t qd = be16(m + 4), an = be16(m + 6), off = 12;
  char name[WGP_MAX_NAME + 1];
  int bad;
  for (size_t i = 0; i < qd; i++) {
    if (read_name(m, len, &off, name, &bad) != 0 || off + 4 > len) return WGP_ST_AGAIN;
    off += 4;
  }
  struct {
    uint16_t type;
    size_t owner, rdata;
  } rr[WG_MAX_ANSWERS];
  size_t nrr = 0;
  for (size_t i = 0; i < an && nrr < WG_MAX_ANSWERS; i++) {
    size_t owner = off;
    if (read_name(m, len, &off, name, &bad) != 0 || off + 10 > len) return WGP_ST_AGAIN;
    uint16_t type = be16(m + off), class = be16(m + off + 2), rdlen = be16(m + off + 8);
    size_t rdata = off + 10;
    if (rdata + rdlen > len) return WGP_ST_AGAIN;
    off = rdata + rdlen;
    if (class != DNS_C_IN || (type != DNS_T_PTR && type != DNS_T_CNAME)) continue;
    rr[nrr].type = type;
    rr[nrr].owner = owner;
    rr[nrr].rdata = rdata;
    nrr++;
  }
  char cur[WGP_MAX_NAME + 1], target[WGP_MAX_NAME + 1];
  snprintf(cur, sizeof cur, "%s", qname);
  for (int hops = 0; hops < 8; hops++) {
    int moved = 0;
    for (size_t i = 0; i < nrr && !moved; i++) {
      size_t o = rr[i].owner, t = rr[i].rdata;
      if (rr[i].type != DNS_T_CNAME || read_name(m, len, &o, name, &bad) != 0 ||
          !name_matches(name, strlen(name), cur) || read_name(m, len, &t, target, &bad) != 0) {
        continue;
      }
      memcpy(cur, target, sizeof cur);
      moved = 1;
    }
    if (!moved) break;
  }
  for (size_t i = 0; i < nrr; i++) {
    size_t o = rr[i].owner, t = rr[i].rdata;
    if (rr[i].type != DNS_T_PTR || read_name(m, len, &o, name, &bad) != 0 ||
        !name_matches(name, strlen(name), cur) || read_name(m, len, &t, target, &bad) != 0 ||
        bad) {
      continue;
    }
    add_name(out, target);
  }
  return out->count > 0 ? WGP_OK : WGP_ST_NODATA;
}

struct by_addr {
  int af;
  const uint8_t *addr;
  struct names *out;
};

/* As the "files" module: the first line with the address gives its names. */
static int hosts_by_addr(char **tok, size_t ntok, void *ctx) {
  struct by_addr *q = ctx;
  uint8_t a[16];
  if (!hosts_addr(tok[0], q->af, a) || memcmp(a, q->addr, q->af == AF_INET ? 4 : 16) != 0) {
    return 0;
  }
  for (size_t i = 1; i < ntok; i++) add_name(q->out, tok[i]);
  return 1;
}

/* The names of an address: /etc/hosts, else a PTR query through the tunnel. A wgp status
 * (-1: broker unreachable). `af` is AF_INET or AF_INET6 (IPv4-mapped already unmapped). */
static int reverse_lookup(int af, const uint8_t *addr, struct names *out) {
  memset(out, 0, sizeof *out);
  if (wg_dns.broken) return WGP_ST_NODNS;
  struct by_addr q = {.af = af, .addr = addr, .out = out};
  hosts_scan(hosts_by_addr, &q);
  if (out->count > 0) return WGP_OK;
  char qname[80];
  ptr_name(af, addr, qname);
  uint8_t query[12 + 80 + 4];
  int qlen = make_query(qname, DNS_C_IN, DNS_T_PTR, query, sizeof query);
  if (qlen < 0) return WGP_ST_NOTFOUND;
  uint8_t *answer = malloc(WGP_MAX_DNS_MESSAGE);
  if (!answer) return WGP_ST_AGAIN;
  wg_debug("reverse lookup %s through the tunnel", qname);
  int herr = 0;
  int n = send_query(query, qlen, answer, (int)WGP_MAX_DNS_MESSAGE, &herr);
  int st;
  if (n < 0) {
    st = herr == NO_RECOVERY ? WGP_ST_NODNS : WGP_ST_AGAIN;
  } else if (n < 12 || answer[0] != query[0] || answer[1] != query[1]) {
    st = WGP_ST_AGAIN;
  } else {
    st = parse_ptr(answer, (size_t)n < WGP_MAX_DNS_MESSAGE ? (size_t)n : WGP_MAX_DNS_MESSAGE,
                   qname, out);
  }
  free(answer);
  return st;
}

/* The address to look up: IPv4-mapped IPv6 as its IPv4 address (as glibc's DNS module). */
static void lookup_form(int type, const uint8_t *a, int *af, const uint8_t **la) {
  *af = type;
  *la = a;
  if (type == AF_INET6 && IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)(const void *)a)) {
    *af = AF_INET;
    *la = a + 12;
  }
}

/* Lays out a hostent for one address and its names: pointers, the address, then the names. */
static int fill_addr_hostent(const struct names *n, int type, const uint8_t *addr, size_t alen,
                             struct hostent *ret, char *buf, size_t buflen) {
  size_t pad = (sizeof(char *) - ((uintptr_t)buf % sizeof(char *))) % sizeof(char *);
  size_t need = pad + (2 + n->count) * sizeof(char *) + alen;
  for (size_t i = 0; i < n->count; i++) need += strlen(n->name[i]) + 1;
  if (need > buflen) return ERANGE;
  char **ptrs = (char **)(void *)(buf + pad);
  char **aliases = ptrs + 2;
  char *data = (char *)(aliases + n->count);
  memcpy(data, addr, alen);
  ptrs[0] = data;
  ptrs[1] = NULL;
  data += alen;
  for (size_t i = 0; i < n->count; i++) {
    size_t l = strlen(n->name[i]) + 1;
    memcpy(data, n->name[i], l);
    if (i == 0) ret->h_name = data;
    else aliases[i - 1] = data;
    data += l;
  }
  aliases[n->count - 1] = NULL;
  ret->h_aliases = aliases;
  ret->h_addrtype = type;
  ret->h_length = (int)alen;
  ret->h_addr_list = ptrs;
  return 0;
}

static int wg_gethostbyaddr_r(const void *addr, socklen_t len, int type, struct hostent *ret,
                              char *buf, size_t buflen, struct hostent **result, int *h_errnop) {
  *result = NULL;
  size_t alen = type == AF_INET ? 4 : type == AF_INET6 ? 16 : 0;
  if (alen == 0) {
    *h_errnop = NETDB_INTERNAL;
    errno = EAFNOSUPPORT;
    return EAFNOSUPPORT;
  }
  if (!addr || len != alen) {
    *h_errnop = NETDB_INTERNAL;
    errno = EINVAL;
    return EINVAL;
  }
  /* As glibc: the unspecified IPv6 address has no name, and nobody is asked. */
  if (type == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED((const struct in6_addr *)addr)) {
    *h_errnop = HOST_NOT_FOUND;
    return ENOENT;
  }
  int af;
  const uint8_t *la;
  lookup_form(type, addr, &af, &la);
  struct names n;
  int st = reverse_lookup(af, la, &n);
  if (st != WGP_OK) {
    *h_errnop = h_error(st);
    return st == WGP_ST_AGAIN || st < 0 ? EAGAIN : 0;
  }
  int e = fill_addr_hostent(&n, type, addr, alen, ret, buf, buflen);
  if (e) {
    *h_errnop = NETDB_INTERNAL;
    errno = e;
    return e;
  }
  *h_errnop = 0;
  *result = ret;
  return 0;
}

int gethostbyaddr_r(const void *addr, socklen_t len, int type, struct hostent *ret, char *buf,
                    size_t buflen, struct hostent **result, int *h_errnop) {
  wg_init();
  if (!dns_on()) {
    if (!real_gethostbyaddr_r()) return ENOSYS;
    return real_gethostbyaddr_r()(addr, len, type, ret, buf, buflen, result, h_errnop);
  }
  /* glibc sets h_errno as well as *h_errnop, and callers (python) read h_errno. */
  int r = wg_gethostbyaddr_r(addr, len, type, ret, buf, buflen, result, h_errnop);
  h_errno = *h_errnop;
  return r;
}

static __thread struct hostent tls_addr_host;
static __thread char tls_addr_buf[4096];

struct hostent *gethostbyaddr(const void *addr, socklen_t len, int type) {
  wg_init();
  if (!dns_on()) return real_gethostbyaddr() ? real_gethostbyaddr()(addr, len, type) : NULL;
  struct hostent *out;
  int herr = 0;
  wg_gethostbyaddr_r(addr, len, type, &tls_addr_host, tls_addr_buf, sizeof tls_addr_buf, &out,
                     &herr);
  h_errno = herr;
  return out;
}

/* NI_NOFQDN: the first label only, for a name below a search domain (the tunnel's "local"
 * domain; glibc takes the host's own, which would need a lookup). */
static void strip_local_domain(char *name) {
  size_t n = strlen(name);
  for (int i = 0; i < wg_dns.nsearch; i++) {
    const char *d = wg_dns.search[i];
    size_t dl = strlen(d);
    if (dl > 0 && d[dl - 1] == '.') dl--;
    if (dl == 0 || n <= dl + 1) continue;
    if (name[n - dl - 1] == '.' && strncasecmp(name + n - dl, d, dl) == 0) {
      char *dot = strchr(name, '.');
      if (dot) *dot = 0;
      return;
    }
  }
}

static int wg_getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host,
                          socklen_t hostlen, char *serv, socklen_t servlen, int flags) {
  gni_fn real = real_getnameinfo();
  if (!real) return EAI_SYSTEM;
  if (!dns_on() || !host || hostlen == 0 || (flags & NI_NUMERICHOST) || !sa ||
      (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)) {
    return real(sa, salen, host, hostlen, serv, servlen, flags);
  }
  /* libc checks the address, length and flags, and writes the service and the numeric host:
   * with NI_NUMERICHOST it looks no host up. */
  char numeric[NI_MAXHOST];
  int r = real(sa, salen, numeric, sizeof numeric, serv, servlen,
               (flags & ~NI_NAMEREQD) | NI_NUMERICHOST);
  if (r != 0) return r;
  int af;
  const uint8_t *la;
  int st = WGP_ST_NOTFOUND;
  struct names n;
  if (sa->sa_family == AF_INET) {
    lookup_form(AF_INET, (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr,
                &af, &la);
    st = reverse_lookup(af, la, &n);
  } else {
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
    if (!IN6_IS_ADDR_UNSPECIFIED(a6)) {
      lookup_form(AF_INET6, (const uint8_t *)a6, &af, &la);
      st = reverse_lookup(af, la, &n);
    }
  }
  const char *out = numeric;
  if (st == WGP_OK) {
    if (flags & NI_NOFQDN) strip_local_domain(n.name[0]);
    out = n.name[0];
  } else if (flags & NI_NAMEREQD) {
    return st == WGP_ST_AGAIN || st < 0 ? EAI_AGAIN : st == WGP_ST_NODNS ? EAI_FAIL : EAI_NONAME;
  }
  size_t len = strlen(out);
  if (len >= hostlen) return EAI_OVERFLOW;
  memcpy(host, out, len + 1);
  return 0;
}

int getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen,
                char *serv, socklen_t servlen, int flags) {
  wg_init();
  int saved = errno;
  int r = wg_getnameinfo(sa, salen, host, hostlen, serv, servlen, flags);
  if (r != EAI_SYSTEM) errno = saved;
  return r;
}
