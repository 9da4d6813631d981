/*
 * Unit tests of the interposer's pure parts (protocol.c, config.c, sockaddr.c), linked without
 * any hook and run by tests/preload_protocol_test.ts.
 *
 *   protocol_test self     built-in assertions; prints "ok <count>" or the first failure, exit 1
 *   protocol_test batch    one command per stdin line, one answer per stdout line, so that the
 *                          TypeScript codec can be checked against this one byte for byte:
 *     dreq HEX | drep HEX | dfrm HEX          decode: "ok <fields…>" or "err <name>"
 *     ereq op proto family flags padding arg lport rport LADDR RADDR SECRET
 *     erep status family arg lport rport LADDR RADDR
 *     efrm length family port ADDR flags error  encode: "ok HEX" or "err <name>"
 *     route ROUTES ADDRESSES KILL IP          "pass" | "tunnel" | "deny" ("-" for an empty list)
 *     dres HEX                                a RESOLVE reply body: "ok CANON|- COUNT FAM:ADDR…"
 *   (addresses are 32 hex digits, the secret 64)
 */
#include "../protocol.h"
#include "../wrapguard.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int checks, failed;

#define CHECK(cond)                                                                            \
  do {                                                                                         \
    checks++;                                                                                  \
    if (!(cond)) {                                                                             \
      printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                                   \
      failed++;                                                                                \
    }                                                                                          \
  } while (0)

/* ---- hex helpers ---- */

static int unhex(const char *s, uint8_t *out, size_t max) {
  size_t n = strlen(s);
  if (n % 2 || n / 2 > max) return -1;
  for (size_t i = 0; i < n / 2; i++) {
    unsigned v;
    if (sscanf(s + 2 * i, "%2x", &v) != 1) return -1;
    out[i] = (uint8_t)v;
  }
  return (int)(n / 2);
}

static void hex(const uint8_t *p, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", p[i]);
  out[2 * n] = 0;
}

/* ---- built-in assertions ---- */

static struct wgp_request sample_request(void) {
  struct wgp_request r;
  memset(&r, 0, sizeof r);
  for (int i = 0; i < WGP_SECRET_LEN; i++) r.secret[i] = (uint8_t)(i * 7 + 1);
  r.op = WGP_OP_CONNECT;
  r.proto = WGP_PROTO_TCP;
  r.family = WGP_FAMILY_V4;
  r.padding = 106496;
  r.remote.addr[0] = 10, r.remote.addr[1] = 99, r.remote.addr[3] = 2;
  r.remote.port = 8080;
  r.local.addr[0] = 10, r.local.addr[1] = 99, r.local.addr[3] = 1;
  r.local.port = 0;
  return r;
}

static void test_request(void) {
  struct wgp_request r = sample_request(), back;
  uint8_t buf[WGP_REQUEST_LEN];
  CHECK(wgp_encode_request(&r, buf) == 0);
  /* Layout: magic, secret, then the fixed fields, big-endian. */
  CHECK(memcmp(buf, "WGB1", 4) == 0);
  CHECK(buf[WGP_REQ_SECRET] == 1 && buf[WGP_REQ_SECRET + 31] == (uint8_t)(31 * 7 + 1));
  CHECK(buf[WGP_REQ_VERSION] == 1 && buf[WGP_REQ_OP] == 1 && buf[WGP_REQ_PROTO] == 6);
  CHECK(buf[WGP_REQ_FAMILY] == 4);
  CHECK(buf[WGP_REQ_PADDING] == 0x00 && buf[WGP_REQ_PADDING + 1] == 0x01 &&
        buf[WGP_REQ_PADDING + 2] == 0xa0 && buf[WGP_REQ_PADDING + 3] == 0x00);
  CHECK(buf[WGP_REQ_REMOTE_PORT] == 0x1f && buf[WGP_REQ_REMOTE_PORT + 1] == 0x90);
  CHECK(buf[WGP_REQ_REMOTE_ADDR] == 10 && buf[WGP_REQ_REMOTE_ADDR + 3] == 2);
  CHECK(wgp_decode_request(buf, sizeof buf, &back) == 0);
  CHECK(memcmp(&r, &back, sizeof r) == 0);

  /* IPv6, every op with its own rules. */
  struct wgp_request v6 = sample_request();
  v6.family = WGP_FAMILY_V6;
  memset(v6.remote.addr, 0, 16);
  v6.remote.addr[0] = 0xfd, v6.remote.addr[15] = 2;
  memset(v6.local.addr, 0, 16);
  v6.padding = 0;
  CHECK(wgp_encode_request(&v6, buf) == 0);
  CHECK(wgp_decode_request(buf, sizeof buf, &back) == 0 && memcmp(&v6, &back, sizeof v6) == 0);

  struct wgp_request listen = sample_request();
  listen.op = WGP_OP_LISTEN;
  listen.padding = 0;
  memset(&listen.remote, 0, sizeof listen.remote);
  listen.arg = 128;
  CHECK(wgp_encode_request(&listen, buf) == 0);
  CHECK(wgp_decode_request(buf, sizeof buf, &back) == 0 && back.arg == 128);

  struct wgp_request accept;
  memset(&accept, 0, sizeof accept);
  accept.op = WGP_OP_ACCEPT;
  accept.proto = WGP_PROTO_TCP;
  accept.family = WGP_FAMILY_NONE;
  accept.arg = 0xdeadbeef;
  CHECK(wgp_encode_request(&accept, buf) == 0);
  CHECK(wgp_decode_request(buf, sizeof buf, &back) == 0 && back.arg == 0xdeadbeef);

  struct wgp_request udp = sample_request();
  udp.op = WGP_OP_UDP;
  udp.proto = WGP_PROTO_UDP;
  udp.padding = 0;
  memset(&udp.remote, 0, sizeof udp.remote);
  udp.flags = WGP_FLAG_V6ONLY;
  CHECK(wgp_encode_request(&udp, buf) == 0);
  CHECK(wgp_decode_request(buf, sizeof buf, &back) == 0 && back.flags == WGP_FLAG_V6ONLY);

  /* Malformed: each rule names its failure; the encoder refuses the same things. */
  uint8_t good[WGP_REQUEST_LEN], bad[WGP_REQUEST_LEN];
  r = sample_request();
  CHECK(wgp_encode_request(&r, good) == 0);
#define BAD_REQ(mutation, expect)                                                              \
  do {                                                                                         \
    memcpy(bad, good, sizeof bad);                                                             \
    mutation;                                                                                  \
    CHECK(wgp_decode_request(bad, sizeof bad, &back) == (expect));                             \
  } while (0)
  CHECK(wgp_decode_request(good, WGP_REQUEST_LEN - 1, &back) == WGP_E_SHORT);
  CHECK(wgp_decode_request(good, 0, &back) == WGP_E_SHORT);
  BAD_REQ(bad[0] = 'X', WGP_E_MAGIC);
  BAD_REQ(bad[3] = '2', WGP_E_MAGIC);
  BAD_REQ(bad[WGP_REQ_VERSION] = 2, WGP_E_VERSION);
  BAD_REQ(bad[WGP_REQ_VERSION] = 0, WGP_E_VERSION);
  BAD_REQ(bad[WGP_REQ_OP] = 0, WGP_E_OP);
  BAD_REQ(bad[WGP_REQ_OP] = WGP_OP_MAX + 1, WGP_E_OP);
  BAD_REQ(bad[WGP_REQ_PROTO] = 1, WGP_E_PROTO);
  BAD_REQ(bad[WGP_REQ_PROTO] = WGP_PROTO_UDP, WGP_E_PROTO); /* CONNECT is TCP only */
  BAD_REQ(bad[WGP_REQ_FAMILY] = 0, WGP_E_FAMILY);
  BAD_REQ(bad[WGP_REQ_FAMILY] = 10, WGP_E_FAMILY);
  BAD_REQ(bad[WGP_REQ_FLAGS + 3] = 0x10, WGP_E_FLAGS);
  BAD_REQ(bad[WGP_REQ_FLAGS] = 0x80, WGP_E_FLAGS);
  BAD_REQ(bad[WGP_REQ_PADDING] = 0x01, WGP_E_PADDING); /* 16 MiB + … > 4 MiB */
  BAD_REQ(bad[WGP_REQ_REMOTE_ADDR + 4] = 1, WGP_E_ADDR); /* IPv4 with a tail */
  BAD_REQ(bad[WGP_REQ_LOCAL_ADDR + 15] = 1, WGP_E_ADDR);
  BAD_REQ(bad[WGP_REQ_TAG] = 1, WGP_E_RESERVED);
  BAD_REQ(bad[WGP_REQ_ARG + 3] = 1, WGP_E_RESERVED); /* CONNECT has no arg */
  BAD_REQ((bad[WGP_REQ_OP] = WGP_OP_BIND), WGP_E_PADDING); /* filler only with CONNECT */
  BAD_REQ((bad[WGP_REQ_OP] = WGP_OP_BIND, memset(bad + WGP_REQ_PADDING, 0, 4)),
          WGP_E_RESERVED); /* BIND names no remote */
  BAD_REQ((bad[WGP_REQ_OP] = WGP_OP_ACCEPT, bad[WGP_REQ_FAMILY] = 0, memset(bad + WGP_REQ_PADDING,
                                                                          0, 4)),
          WGP_E_ADDR); /* family None with addresses */
  struct wgp_request e = sample_request();
  e.proto = WGP_PROTO_UDP;
  CHECK(wgp_encode_request(&e, buf) == WGP_E_PROTO);
  e = sample_request();
  e.padding = WGP_MAX_PADDING + 1;
  CHECK(wgp_encode_request(&e, buf) == WGP_E_PADDING);
  e = sample_request();
  e.padding = WGP_MAX_PADDING;
  CHECK(wgp_encode_request(&e, buf) == 0);

  /* Service ops: proto 0, no endpoints, a body length in arg. */
  struct wgp_request svc;
  memset(&svc, 0, sizeof svc);
  svc.op = WGP_OP_HELLO;
  svc.arg = 4242; /* the pid */
  CHECK(wgp_encode_request(&svc, buf) == 0);
  CHECK(wgp_decode_request(buf, sizeof buf, &back) == 0 && back.op == WGP_OP_HELLO &&
        back.arg == 4242);
  svc.family = WGP_FAMILY_V4;
  CHECK(wgp_encode_request(&svc, buf) == WGP_E_FAMILY); /* HELLO names no family */
  svc.family = WGP_FAMILY_NONE;
  svc.proto = WGP_PROTO_TCP;
  CHECK(wgp_encode_request(&svc, buf) == WGP_E_PROTO);
  svc.proto = 0;
  svc.flags = WGP_FLAG_V6ONLY;
  CHECK(wgp_encode_request(&svc, buf) == WGP_E_FLAGS);
  svc.flags = 0;
  svc.op = WGP_OP_RESOLVE;
  for (uint8_t fam = 0; fam <= 6; fam = (uint8_t)(fam + (fam == 0 ? 4 : 2))) {
    svc.family = fam;
    svc.arg = 11;
    CHECK(wgp_encode_request(&svc, buf) == 0);
    CHECK(wgp_decode_request(buf, sizeof buf, &back) == 0 && back.family == fam);
  }
  svc.arg = 0;
  CHECK(wgp_encode_request(&svc, buf) == WGP_E_LENGTH);
  svc.arg = WGP_MAX_NAME + 1;
  CHECK(wgp_encode_request(&svc, buf) == WGP_E_LENGTH);
  svc.arg = WGP_MAX_NAME;
  CHECK(wgp_encode_request(&svc, buf) == 0);
  svc.local.port = 53;
  CHECK(wgp_encode_request(&svc, buf) == WGP_E_RESERVED); /* no endpoints */
  svc.local.port = 0;
  svc.op = WGP_OP_QUERY;
  svc.family = WGP_FAMILY_NONE;
  svc.arg = WGP_MIN_DNS_MESSAGE - 1;
  CHECK(wgp_encode_request(&svc, buf) == WGP_E_LENGTH);
  svc.arg = WGP_MAX_DNS_MESSAGE;
  CHECK(wgp_encode_request(&svc, buf) == 0);
  svc.arg = WGP_MAX_DNS_MESSAGE + 1;
  CHECK(wgp_encode_request(&svc, buf) == WGP_E_LENGTH);
  svc.arg = 40;
  svc.family = WGP_FAMILY_V6;
  CHECK(wgp_encode_request(&svc, buf) == WGP_E_FAMILY);
#undef BAD_REQ
}

static void test_reply(void) {
  struct wgp_reply r, back;
  memset(&r, 0, sizeof r);
  r.family = WGP_FAMILY_V6;
  r.local.addr[0] = 0xfd, r.local.addr[15] = 1, r.local.port = 40000;
  r.remote.addr[0] = 0xfd, r.remote.addr[15] = 2, r.remote.port = 443;
  r.arg = 7;
  uint8_t buf[WGP_REPLY_LEN];
  CHECK(wgp_encode_reply(&r, buf) == 0);
  CHECK(memcmp(buf, "WGR1", 4) == 0 && buf[WGP_REP_FAMILY] == 6);
  CHECK(buf[WGP_REP_LOCAL_PORT] == 0x9c && buf[WGP_REP_LOCAL_PORT + 1] == 0x40);
  CHECK(wgp_decode_reply(buf, sizeof buf, &back) == 0 && memcmp(&r, &back, sizeof r) == 0);

  struct wgp_reply err;
  memset(&err, 0, sizeof err);
  err.status = WGP_ST_CONNREFUSED;
  CHECK(wgp_encode_reply(&err, buf) == 0);
  CHECK(wgp_decode_reply(buf, sizeof buf, &back) == 0 && back.status == WGP_ST_CONNREFUSED);
  err.family = WGP_FAMILY_V4; /* errors carry no addresses */
  CHECK(wgp_encode_reply(&err, buf) == WGP_E_FAMILY);

  uint8_t good[WGP_REPLY_LEN], bad[WGP_REPLY_LEN];
  CHECK(wgp_encode_reply(&r, good) == 0);
#define BAD_REP(mutation, expect)                                                              \
  do {                                                                                         \
    memcpy(bad, good, sizeof bad);                                                             \
    mutation;                                                                                  \
    CHECK(wgp_decode_reply(bad, sizeof bad, &back) == (expect));                               \
  } while (0)
  CHECK(wgp_decode_reply(good, WGP_REPLY_LEN - 1, &back) == WGP_E_SHORT);
  BAD_REP(bad[2] = 'B', WGP_E_MAGIC);
  BAD_REP(bad[WGP_REP_VERSION] = 9, WGP_E_VERSION);
  BAD_REP(bad[WGP_REP_RESERVED] = 1, WGP_E_RESERVED);
  BAD_REP(bad[WGP_REP_STATUS] = WGP_STATUS_MAX + 1, WGP_E_STATUS);
  BAD_REP(bad[WGP_REP_STATUS] = WGP_ST_TIMEDOUT, WGP_E_FAMILY);
  BAD_REP(bad[WGP_REP_FAMILY] = 5, WGP_E_FAMILY);
  BAD_REP(bad[WGP_REP_FAMILY] = 4, WGP_E_ADDR);
#undef BAD_REP
}

static void test_frame(void) {
  struct wgp_frame f, back;
  memset(&f, 0, sizeof f);
  f.family = WGP_FAMILY_V4;
  f.length = 65535;
  f.peer.addr[0] = 10, f.peer.addr[1] = 99, f.peer.addr[3] = 2;
  f.peer.port = 53;
  uint8_t buf[WGP_FRAME_HEADER_LEN];
  CHECK(wgp_encode_frame(&f, buf) == 0);
  CHECK(buf[0] == 0xff && buf[1] == 0xff && buf[2] == 0 && buf[3] == 53 && buf[4] == 4);
  CHECK(wgp_decode_frame(buf, sizeof buf, &back) == 0 && memcmp(&f, &back, sizeof f) == 0);
  CHECK(wgp_decode_frame(buf, 23, &back) == WGP_E_SHORT);
  buf[WGP_FRAME_RESERVED] = 1;
  CHECK(wgp_decode_frame(buf, sizeof buf, &back) == WGP_E_RESERVED);
  buf[WGP_FRAME_RESERVED] = 0;
  buf[WGP_FRAME_FLAGS] = 0x4;
  CHECK(wgp_decode_frame(buf, sizeof buf, &back) == WGP_E_FLAGS);
  buf[WGP_FRAME_FLAGS] = 0;
  buf[WGP_FRAME_ERROR] = WGP_ST_CONNREFUSED; /* an error without the ERROR flag */
  CHECK(wgp_decode_frame(buf, sizeof buf, &back) == WGP_E_RESERVED);
  buf[WGP_FRAME_FLAGS] = WGP_FRAME_F_ERROR; /* an error frame carries no payload */
  CHECK(wgp_decode_frame(buf, sizeof buf, &back) == WGP_E_LENGTH);
  buf[0] = buf[1] = 0;
  CHECK(wgp_decode_frame(buf, sizeof buf, &back) == 0 && back.error == WGP_ST_CONNREFUSED);
  buf[WGP_FRAME_ERROR] = 0;
  CHECK(wgp_decode_frame(buf, sizeof buf, &back) == WGP_E_STATUS);
  buf[WGP_FRAME_FLAGS] = 0;
  buf[0] = buf[1] = 0xff;
  buf[WGP_FRAME_FAMILY] = 0;
  CHECK(wgp_decode_frame(buf, sizeof buf, &back) == WGP_E_FAMILY);
  buf[WGP_FRAME_FAMILY] = 4;
  buf[WGP_FRAME_ADDR + 8] = 1;
  CHECK(wgp_decode_frame(buf, sizeof buf, &back) == WGP_E_ADDR);
  f.family = 0;
  CHECK(wgp_encode_frame(&f, buf) == WGP_E_FAMILY);
}

static void test_status(void) {
  CHECK(wgp_status_errno(WGP_OK) == 0);
  CHECK(wgp_status_errno(WGP_ST_CONNREFUSED) == ECONNREFUSED);
  CHECK(wgp_status_errno(WGP_ST_TIMEDOUT) == ETIMEDOUT);
  CHECK(wgp_status_errno(WGP_ST_NETUNREACH) == ENETUNREACH);
  CHECK(wgp_status_errno(WGP_ST_HOSTUNREACH) == EHOSTUNREACH);
  CHECK(wgp_status_errno(WGP_ST_ADDRINUSE) == EADDRINUSE);
  CHECK(wgp_status_errno(WGP_ST_AUTH) == EACCES);
  CHECK(wgp_status_errno(200) == EPROTO);
  for (int s = 0; s <= WGP_STATUS_MAX; s++) CHECK(strcmp(wgp_status_name((uint8_t)s), "?") != 0);
  uint8_t a[32] = {1}, b[32] = {1};
  CHECK(wgp_secret_equal(a, b));
  b[31] = 1;
  CHECK(!wgp_secret_equal(a, b));
}

static enum wg_decision route_of(const struct wg_config *c, const char *ip) {
  struct wg_prefix p;
  if (wg_prefix_parse(ip, 0, &p) != 0) return (enum wg_decision)-1;
  return wg_route(c, p.family, p.addr);
}

static const char *secret_hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

static void test_config(void) {
  struct wg_config c;
  wg_config_parse(&c, NULL, NULL, NULL, NULL, NULL, NULL);
  CHECK(!c.active && !c.broken);
  CHECK(route_of(&c, "10.99.0.2") == WG_PASS);

  wg_config_parse(&c, "/tmp/wg", secret_hex, "10.99.0.0/24, fd00::/64,!10.99.0.128/25",
                  "10.99.0.1/24,fd00::1", NULL, NULL);
  CHECK(c.active && !c.broken && c.nroutes == 3 && c.naddresses == 2);
  CHECK(strcmp(c.socket_path, "/tmp/wg/broker.sock") == 0);
  CHECK(c.secret[0] == 0 && c.secret[31] == 0x1f);
  CHECK(route_of(&c, "10.99.0.2") == WG_TUNNEL);
  CHECK(route_of(&c, "10.99.0.200") == WG_PASS); /* excluded, more specific */
  CHECK(route_of(&c, "10.98.0.2") == WG_PASS);
  CHECK(route_of(&c, "fd00::5") == WG_TUNNEL);
  CHECK(route_of(&c, "fd01::5") == WG_PASS);
  CHECK(route_of(&c, "127.0.0.1") == WG_PASS);
  CHECK(route_of(&c, "::1") == WG_PASS);
  struct wg_prefix p;
  CHECK(wg_prefix_parse("10.99.0.1", 0, &p) == 0);
  CHECK(wg_is_tunnel_address(&c, p.family, p.addr));
  CHECK(wg_prefix_parse("10.99.0.3", 0, &p) == 0);
  CHECK(!wg_is_tunnel_address(&c, p.family, p.addr));

  /* Kill switch: what is not tunnel is denied, except loopback and explicit exclusions. */
  wg_config_parse(&c, "/tmp/wg", secret_hex, "10.99.0.0/24,!192.168.1.0/24", "", "1", NULL);
  CHECK(c.kill_switch);
  CHECK(route_of(&c, "10.99.0.2") == WG_TUNNEL);
  CHECK(route_of(&c, "192.0.2.1") == WG_DENY);
  CHECK(route_of(&c, "2001:db8::1") == WG_DENY);
  CHECK(route_of(&c, "192.168.1.20") == WG_PASS);
  CHECK(route_of(&c, "127.0.0.53") == WG_PASS);

  /* Everything routed (an exit node): 0.0.0.0/0 covers all but loopback. */
  wg_config_parse(&c, "/tmp/wg", secret_hex, "0.0.0.0/0,::/0", "", NULL, NULL);
  CHECK(route_of(&c, "192.0.2.1") == WG_TUNNEL);
  CHECK(route_of(&c, "127.0.0.1") == WG_PASS);

  /* A broken environment fails closed. */
  wg_config_parse(&c, "/tmp/wg", "short", "10.99.0.0/24", "", NULL, NULL);
  CHECK(c.broken && route_of(&c, "10.99.0.2") == WG_DENY && route_of(&c, "8.8.8.8") == WG_DENY);
  CHECK(route_of(&c, "127.0.0.1") == WG_PASS);
  wg_config_parse(&c, "/tmp/wg", secret_hex, "10.99.0.0/33", "", NULL, NULL);
  CHECK(c.broken);
  wg_config_parse(&c, "/tmp/wg", secret_hex, "10.99.0/24", "", NULL, NULL);
  CHECK(c.broken);
  wg_config_parse(&c, "/tmp/wg", secret_hex, "10.99.0.0/24", "!10.99.0.1", NULL, NULL);
  CHECK(c.broken); /* no exclusions among addresses */
  char longdir[200];
  memset(longdir, 'a', sizeof longdir - 1);
  longdir[sizeof longdir - 1] = 0;
  wg_config_parse(&c, longdir, secret_hex, "", "", NULL, NULL);
  CHECK(c.broken);
}

static void test_sockaddr(void) {
  struct sockaddr_in6 in6;
  memset(&in6, 0, sizeof in6);
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(80);
  inet_pton(AF_INET6, "::ffff:10.99.0.2", &in6.sin6_addr);
  uint8_t family;
  struct wgp_endpoint ep;
  int mapped;
  CHECK(wg_sockaddr_parse((struct sockaddr *)&in6, sizeof in6, &family, &ep, &mapped) == 0);
  CHECK(family == WGP_FAMILY_V4 && mapped && ep.port == 80 && ep.addr[0] == 10 &&
        ep.addr[3] == 2 && ep.addr[4] == 0);
  /* Back into an AF_INET6 socket's view: mapped again. */
  struct sockaddr_storage ss;
  socklen_t n = wg_sockaddr_build(AF_INET6, family, &ep, &ss);
  CHECK(n == sizeof(struct sockaddr_in6) && memcmp(&ss, &in6, sizeof in6) == 0);
  n = wg_sockaddr_build(AF_INET, family, &ep, &ss);
  CHECK(n == sizeof(struct sockaddr_in));
  CHECK(((struct sockaddr_in *)&ss)->sin_addr.s_addr == htonl(0x0a630002));

  inet_pton(AF_INET6, "fd00::2", &in6.sin6_addr);
  CHECK(wg_sockaddr_parse((struct sockaddr *)&in6, 24, &family, &ep, &mapped) == 0);
  CHECK(family == WGP_FAMILY_V6 && !mapped && ep.addr[0] == 0xfd && ep.addr[15] == 2);
  errno = 0;
  CHECK(wg_sockaddr_parse((struct sockaddr *)&in6, 23, &family, &ep, &mapped) == -1 &&
        errno == EINVAL);
  struct sockaddr_in in;
  memset(&in, 0, sizeof in);
  in.sin_family = AF_INET;
  CHECK(wg_sockaddr_parse((struct sockaddr *)&in, sizeof in - 1, &family, &ep, &mapped) == -1 &&
        errno == EINVAL);
  struct sockaddr sa = {.sa_family = AF_UNIX};
  CHECK(wg_sockaddr_parse(&sa, sizeof sa, &family, &ep, &mapped) == -1 && errno == EAFNOSUPPORT);

  /* getsockname truncation: copies what fits, reports the full length. */
  n = wg_sockaddr_build(AF_INET6, WGP_FAMILY_V6, &ep, &ss);
  uint8_t small[8];
  socklen_t len = sizeof small;
  wg_sockaddr_copy_out(&ss, n, (struct sockaddr *)small, &len);
  CHECK(len == sizeof(struct sockaddr_in6) && memcmp(small, &ss, sizeof small) == 0);
}

static int redirect_of(const struct wg_dns *d, const char *ip, uint16_t port, char *out) {
  struct wg_prefix p;
  if (wg_prefix_parse(ip, 0, &p) != 0) return -1;
  struct wgp_endpoint ep;
  memset(&ep, 0, sizeof ep);
  memcpy(ep.addr, p.addr, 16);
  ep.port = port;
  uint8_t family = p.family;
  int r = wg_dns_redirect(d, &family, &ep);
  inet_ntop(family == WGP_FAMILY_V4 ? AF_INET : AF_INET6, ep.addr, out, 64);
  return r;
}

static void test_dns(void) {
  struct wg_dns d;
  char to[64];
  wg_dns_parse(&d, NULL, "wg.test", "nameserver 10.255.255.53\n");
  CHECK(!d.active && redirect_of(&d, "10.255.255.53", 53, to) == 0);

  wg_dns_parse(&d, "10.77.0.1,fd77::1", "wg.test,corp.example",
               "# comment\nsearch lan\nnameserver 10.255.255.53\n nameserver\tfe80::1%eth0\n"
               "nameserver 127.0.0.53 # local\nnameserver bogus\noptions ndots:2\n");
  CHECK(d.active && !d.broken && d.nservers == 2 && d.nsearch == 2 && d.nresolv == 3);
  CHECK(strcmp(d.search[1], "corp.example") == 0);
  /* The host's nameservers on port 53 go to the tunnel's server of the same family. */
  CHECK(redirect_of(&d, "10.255.255.53", 53, to) == 1 && strcmp(to, "10.77.0.1") == 0);
  CHECK(redirect_of(&d, "127.0.0.53", 53, to) == 1 && strcmp(to, "10.77.0.1") == 0);
  CHECK(redirect_of(&d, "fe80::1", 53, to) == 1 && strcmp(to, "fd77::1") == 0);
  /* Other ports, other hosts, and the tunnel's own server are left alone. */
  CHECK(redirect_of(&d, "10.255.255.53", 5353, to) == 0 && strcmp(to, "10.255.255.53") == 0);
  CHECK(redirect_of(&d, "10.255.255.54", 53, to) == 0);
  CHECK(redirect_of(&d, "10.77.0.1", 53, to) == 0);
  /* Only an IPv6 server: an IPv4 nameserver goes to it anyway. */
  wg_dns_parse(&d, "fd77::1", NULL, "nameserver 10.255.255.53");
  CHECK(redirect_of(&d, "10.255.255.53", 53, to) == 1 && strcmp(to, "fd77::1") == 0);
  /* Malformed server lists fail (lookups then fail; they never go to the host). */
  wg_dns_parse(&d, "10.77.0.0/24", NULL, NULL);
  CHECK(d.active && d.broken && redirect_of(&d, "10.255.255.53", 53, to) == 0);
  wg_dns_parse(&d, "not-an-address", NULL, NULL);
  CHECK(d.active && d.broken);

  /* RESOLVE reply bodies. */
  struct wgp_resolved r;
  uint8_t body[1 + 7 + 2 * 17];
  memset(body, 0, sizeof body);
  body[0] = 7;
  memcpy(body + 1, "a.wg.tt", 7);
  body[8] = WGP_FAMILY_V4;
  body[9] = 10, body[10] = 77, body[12] = 9;
  body[25] = WGP_FAMILY_V6;
  body[26] = 0xfd, body[41] = 9;
  CHECK(wgp_decode_resolve_body(body, sizeof body, &r) == 0);
  CHECK(r.count == 2 && strcmp(r.canon, "a.wg.tt") == 0 && r.family[0] == 4 &&
        r.addr[0][0] == 10 && r.family[1] == 6 && r.addr[1][15] == 9);
  CHECK(wgp_decode_resolve_body(body, 0, &r) == WGP_E_SHORT);
  CHECK(wgp_decode_resolve_body(body, 5, &r) == WGP_E_SHORT);
  CHECK(wgp_decode_resolve_body(body, sizeof body - 1, &r) == WGP_E_LENGTH);
  body[13] = 1; /* IPv4 with a tail */
  CHECK(wgp_decode_resolve_body(body, sizeof body, &r) == WGP_E_ADDR);
  body[13] = 0;
  body[25] = 5;
  CHECK(wgp_decode_resolve_body(body, sizeof body, &r) == WGP_E_FAMILY);
  body[25] = WGP_FAMILY_V6;
  body[3] = ' ';
  CHECK(wgp_decode_resolve_body(body, sizeof body, &r) == WGP_E_RESERVED);
  uint8_t empty[1] = {0};
  CHECK(wgp_decode_resolve_body(empty, 1, &r) == 0 && r.count == 0 && r.canon[0] == 0);
}

/* ---- batch mode ---- */

static void print_endpoint(const struct wgp_endpoint *e) {
  char h[33];
  hex(e->addr, 16, h);
  printf(" %u %s", e->port, h);
}

static void batch_line(char *line) {
  char *argv[16];
  int argc = 0;
  for (char *t = strtok(line, " \n"); t && argc < 16; t = strtok(NULL, " \n")) argv[argc++] = t;
  if (argc == 0) return;
  uint8_t buf[4096];
  char out[2 * 4096 + 1];
  if (!strcmp(argv[0], "dreq") || !strcmp(argv[0], "drep") || !strcmp(argv[0], "dfrm")) {
    int n = argc > 1 ? unhex(argv[1], buf, sizeof buf) : 0;
    if (n < 0) {
      printf("bad input\n");
      return;
    }
    if (argv[0][1] == 'r' && argv[0][2] == 'e' && argv[0][3] == 'q') {
      struct wgp_request r;
      int err = wgp_decode_request(buf, (size_t)n, &r);
      if (err) {
        printf("err %s\n", wgp_error_name(err));
        return;
      }
      hex(r.secret, 32, out);
      printf("ok %u %u %u %u %u %u %s", r.op, r.proto, r.family, r.flags, r.padding, r.arg, out);
      print_endpoint(&r.local);
      print_endpoint(&r.remote);
      printf("\n");
    } else if (argv[0][2] == 'e') {
      struct wgp_reply r;
      int err = wgp_decode_reply(buf, (size_t)n, &r);
      if (err) {
        printf("err %s\n", wgp_error_name(err));
        return;
      }
      printf("ok %u %u %u", r.status, r.family, r.arg);
      print_endpoint(&r.local);
      print_endpoint(&r.remote);
      printf("\n");
    } else {
      struct wgp_frame f;
      int err = wgp_decode_frame(buf, (size_t)n, &f);
      if (err) {
        printf("err %s\n", wgp_error_name(err));
        return;
      }
      printf("ok %u %u", f.length, f.family);
      print_endpoint(&f.peer);
      printf(" %u %u\n", f.flags, f.error);
    }
    return;
  }
  if (!strcmp(argv[0], "ereq") && argc == 12) {
    struct wgp_request r;
    memset(&r, 0, sizeof r);
    r.op = (uint8_t)atoi(argv[1]);
    r.proto = (uint8_t)atoi(argv[2]);
    r.family = (uint8_t)atoi(argv[3]);
    r.flags = (uint32_t)strtoul(argv[4], NULL, 10);
    r.padding = (uint32_t)strtoul(argv[5], NULL, 10);
    r.arg = (uint32_t)strtoul(argv[6], NULL, 10);
    r.local.port = (uint16_t)atoi(argv[7]);
    r.remote.port = (uint16_t)atoi(argv[8]);
    if (unhex(argv[9], r.local.addr, 16) != 16 || unhex(argv[10], r.remote.addr, 16) != 16 ||
        unhex(argv[11], r.secret, 32) != 32) {
      printf("bad input\n");
      return;
    }
    int err = wgp_encode_request(&r, buf);
    if (err) {
      printf("err %s\n", wgp_error_name(err));
      return;
    }
    hex(buf, WGP_REQUEST_LEN, out);
    printf("ok %s\n", out);
    return;
  }
  if (!strcmp(argv[0], "erep") && argc == 8) {
    struct wgp_reply r;
    memset(&r, 0, sizeof r);
    r.status = (uint8_t)atoi(argv[1]);
    r.family = (uint8_t)atoi(argv[2]);
    r.arg = (uint32_t)strtoul(argv[3], NULL, 10);
    r.local.port = (uint16_t)atoi(argv[4]);
    r.remote.port = (uint16_t)atoi(argv[5]);
    if (unhex(argv[6], r.local.addr, 16) != 16 || unhex(argv[7], r.remote.addr, 16) != 16) {
      printf("bad input\n");
      return;
    }
    int err = wgp_encode_reply(&r, buf);
    if (err) {
      printf("err %s\n", wgp_error_name(err));
      return;
    }
    hex(buf, WGP_REPLY_LEN, out);
    printf("ok %s\n", out);
    return;
  }
  if (!strcmp(argv[0], "efrm") && argc == 7) {
    struct wgp_frame f;
    memset(&f, 0, sizeof f);
    f.length = (uint16_t)atoi(argv[1]);
    f.family = (uint8_t)atoi(argv[2]);
    f.peer.port = (uint16_t)atoi(argv[3]);
    f.flags = (uint8_t)atoi(argv[5]);
    f.error = (uint8_t)atoi(argv[6]);
    if (unhex(argv[4], f.peer.addr, 16) != 16) {
      printf("bad input\n");
      return;
    }
    int err = wgp_encode_frame(&f, buf);
    if (err) {
      printf("err %s\n", wgp_error_name(err));
      return;
    }
    hex(buf, WGP_FRAME_HEADER_LEN, out);
    printf("ok %s\n", out);
    return;
  }
  if (!strcmp(argv[0], "dres")) {
    int n = argc > 1 ? unhex(argv[1], buf, sizeof buf) : 0;
    if (n < 0) {
      printf("bad input\n");
      return;
    }
    struct wgp_resolved r;
    int err = wgp_decode_resolve_body(buf, (size_t)n, &r);
    if (err) {
      printf("err %s\n", wgp_error_name(err));
      return;
    }
    printf("ok %s %zu", r.canon[0] ? r.canon : "-", r.count);
    for (size_t i = 0; i < r.count; i++) {
      hex(r.addr[i], 16, out);
      printf(" %u:%s", r.family[i], out);
    }
    printf("\n");
    return;
  }
  if (!strcmp(argv[0], "route") && argc == 5) {
    struct wg_config c;
    wg_config_parse(&c, "/tmp/wg", secret_hex, strcmp(argv[1], "-") ? argv[1] : "",
                    strcmp(argv[2], "-") ? argv[2] : "", argv[3], NULL);
    const char *names[] = {"pass", "tunnel", "deny"};
    int d = route_of(&c, argv[4]);
    printf("%s\n", d >= 0 && d <= 2 ? names[d] : "bad input");
    return;
  }
  printf("bad input\n");
}

int main(int argc, char **argv) {
  if (argc == 2 && !strcmp(argv[1], "self")) {
    test_request();
    test_reply();
    test_frame();
    test_status();
    test_config();
    test_sockaddr();
    test_dns();
    if (failed) {
      printf("failed %d of %d\n", failed, checks);
      return 1;
    }
    printf("ok %d\n", checks);
    return 0;
  }
  if (argc == 2 && !strcmp(argv[1], "batch")) {
    static char line[65536];
    while (fgets(line, sizeof line, stdin)) {
      batch_line(line);
      fflush(stdout);
    }
    return 0;
  }
  fprintf(stderr, "usage: protocol_test self|batch\n");
  return 2;
}
