/*
 * Encoding and decoding of the interposer <-> broker records (layouts in protocol.h and
 * PROTOCOL.md). Deliberately libc-free apart from memcpy/memset, and free of hooks, so that it can
 * be linked into the unit-test binary unchanged.
 */
#include "protocol.h"

#include <errno.h>
#include <string.h>

static const uint8_t request_magic[4] = {'W', 'G', 'B', '1'};
static const uint8_t reply_magic[4] = {'W', 'G', 'R', '1'};

static void put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

static uint32_t get32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int all_zero(const uint8_t *p, size_t n) {
  uint8_t acc = 0;
  for (size_t i = 0; i < n; i++) acc |= p[i];
  return acc == 0;
}

/* An address is well-formed for its family: IPv4 uses 4 bytes, the rest are zero; NONE is all
 * zero (and so is its port). */
static int check_endpoint(uint8_t family, const uint8_t addr[16], uint16_t port) {
  switch (family) {
  case WGP_FAMILY_V4:
    return all_zero(addr + 4, 12) ? 0 : WGP_E_ADDR;
  case WGP_FAMILY_V6:
    return 0;
  case WGP_FAMILY_NONE:
    return all_zero(addr, 16) && port == 0 ? 0 : WGP_E_ADDR;
  default:
    return WGP_E_FAMILY;
  }
}

static int endpoint_is_zero(const struct wgp_endpoint *e) {
  return e->port == 0 && all_zero(e->addr, 16);
}

/* The rules a request must satisfy, shared by the encoder (so that we never send what the broker
 * refuses) and the decoder. */
static int check_request(const struct wgp_request *r) {
  if (r->op < 1 || r->op > WGP_OP_MAX) return WGP_E_OP;
  int service = WGP_OP_IS_SERVICE(r->op);
  if (service) {
    /* No socket behind a service op: no protocol. */
    if (r->proto != 0) return WGP_E_PROTO;
  } else {
    if (r->proto != WGP_PROTO_TCP && r->proto != WGP_PROTO_UDP) return WGP_E_PROTO;
    /* UDP sockets only ever use WGP_OP_UDP (binding and connecting one are the interposer's
     * business); every other socket op is TCP. */
    if ((r->op == WGP_OP_UDP) != (r->proto == WGP_PROTO_UDP)) return WGP_E_PROTO;
  }
  if (r->family != WGP_FAMILY_V4 && r->family != WGP_FAMILY_V6) {
    /* Family none: ACCEPT names nothing but a connection id; HELLO and QUERY name no address;
     * RESOLVE asks for both families. */
    int none_ok = r->op == WGP_OP_ACCEPT || service;
    if (!(none_ok && r->family == WGP_FAMILY_NONE)) return WGP_E_FAMILY;
  } else if (r->op == WGP_OP_HELLO || r->op == WGP_OP_QUERY) {
    return WGP_E_FAMILY;
  }
  if (r->flags & ~WGP_FLAGS_KNOWN) return WGP_E_FLAGS;
  if (service && r->flags != 0) return WGP_E_FLAGS;
  if (r->padding > WGP_MAX_PADDING) return WGP_E_PADDING;
  if (r->padding != 0 && !(r->op == WGP_OP_CONNECT && r->proto == WGP_PROTO_TCP)) {
    return WGP_E_PADDING;
  }
  int err = check_endpoint(r->family, r->local.addr, r->local.port);
  if (err) return err;
  err = check_endpoint(r->family, r->remote.addr, r->remote.port);
  if (err) return err;
  /* Only CONNECT and LOOKUP name a remote endpoint; service ops name none at all. */
  if (r->op != WGP_OP_CONNECT && r->op != WGP_OP_LOOKUP && !endpoint_is_zero(&r->remote)) {
    return WGP_E_RESERVED;
  }
  if (service && !endpoint_is_zero(&r->local)) return WGP_E_RESERVED;
  if (!all_zero(r->tag, WGP_TAG_LEN)) return WGP_E_RESERVED;
  if (r->op != WGP_OP_LISTEN && r->op != WGP_OP_ACCEPT && !service && r->arg != 0) {
    return WGP_E_RESERVED;
  }
  if (r->op == WGP_OP_RESOLVE && (r->arg < 1 || r->arg > WGP_MAX_NAME)) return WGP_E_LENGTH;
  if (r->op == WGP_OP_QUERY && (r->arg < WGP_MIN_DNS_MESSAGE || r->arg > WGP_MAX_DNS_MESSAGE)) {
    return WGP_E_LENGTH;
  }
  return 0;
}

int wgp_encode_request(const struct wgp_request *r, uint8_t out[WGP_REQUEST_LEN]) {
  int err = check_request(r);
  if (err) return err;
  memset(out, 0, WGP_REQUEST_LEN);
  memcpy(out + WGP_REQ_MAGIC, request_magic, 4);
  memcpy(out + WGP_REQ_SECRET, r->secret, WGP_SECRET_LEN);
  out[WGP_REQ_VERSION] = WGP_VERSION;
  out[WGP_REQ_OP] = r->op;
  out[WGP_REQ_PROTO] = r->proto;
  out[WGP_REQ_FAMILY] = r->family;
  put32(out + WGP_REQ_FLAGS, r->flags);
  put32(out + WGP_REQ_PADDING, r->padding);
  put32(out + WGP_REQ_ARG, r->arg);
  put16(out + WGP_REQ_LOCAL_PORT, r->local.port);
  put16(out + WGP_REQ_REMOTE_PORT, r->remote.port);
  memcpy(out + WGP_REQ_LOCAL_ADDR, r->local.addr, 16);
  memcpy(out + WGP_REQ_REMOTE_ADDR, r->remote.addr, 16);
  memcpy(out + WGP_REQ_TAG, r->tag, WGP_TAG_LEN);
  return 0;
}

int wgp_decode_request(const uint8_t *in, size_t len, struct wgp_request *r) {
  if (len < WGP_REQUEST_LEN) return WGP_E_SHORT;
  if (memcmp(in + WGP_REQ_MAGIC, request_magic, 4) != 0) return WGP_E_MAGIC;
  if (in[WGP_REQ_VERSION] != WGP_VERSION) return WGP_E_VERSION;
  memset(r, 0, sizeof *r);
  memcpy(r->secret, in + WGP_REQ_SECRET, WGP_SECRET_LEN);
  r->op = in[WGP_REQ_OP];
  r->proto = in[WGP_REQ_PROTO];
  r->family = in[WGP_REQ_FAMILY];
  r->flags = get32(in + WGP_REQ_FLAGS);
  r->padding = get32(in + WGP_REQ_PADDING);
  r->arg = get32(in + WGP_REQ_ARG);
  r->local.port = get16(in + WGP_REQ_LOCAL_PORT);
  r->remote.port = get16(in + WGP_REQ_REMOTE_PORT);
  memcpy(r->local.addr, in + WGP_REQ_LOCAL_ADDR, 16);
  memcpy(r->remote.addr, in + WGP_REQ_REMOTE_ADDR, 16);
  memcpy(r->tag, in + WGP_REQ_TAG, WGP_TAG_LEN);
  return check_request(r);
}

static int check_reply(const struct wgp_reply *r) {
  if (r->status > WGP_STATUS_MAX) return WGP_E_STATUS;
  if (r->status != WGP_OK && r->family != WGP_FAMILY_NONE) return WGP_E_FAMILY;
  int err = check_endpoint(r->family, r->local.addr, r->local.port);
  if (err) return err;
  return check_endpoint(r->family, r->remote.addr, r->remote.port);
}

int wgp_encode_reply(const struct wgp_reply *r, uint8_t out[WGP_REPLY_LEN]) {
  int err = check_reply(r);
  if (err) return err;
  memset(out, 0, WGP_REPLY_LEN);
  memcpy(out + WGP_REP_MAGIC, reply_magic, 4);
  out[WGP_REP_VERSION] = WGP_VERSION;
  out[WGP_REP_STATUS] = r->status;
  out[WGP_REP_FAMILY] = r->family;
  put32(out + WGP_REP_ARG, r->arg);
  put16(out + WGP_REP_LOCAL_PORT, r->local.port);
  put16(out + WGP_REP_REMOTE_PORT, r->remote.port);
  memcpy(out + WGP_REP_LOCAL_ADDR, r->local.addr, 16);
  memcpy(out + WGP_REP_REMOTE_ADDR, r->remote.addr, 16);
  return 0;
}

int wgp_decode_reply(const uint8_t *in, size_t len, struct wgp_reply *r) {
  if (len < WGP_REPLY_LEN) return WGP_E_SHORT;
  if (memcmp(in + WGP_REP_MAGIC, reply_magic, 4) != 0) return WGP_E_MAGIC;
  if (in[WGP_REP_VERSION] != WGP_VERSION) return WGP_E_VERSION;
  if (in[WGP_REP_RESERVED] != 0) return WGP_E_RESERVED;
  memset(r, 0, sizeof *r);
  r->status = in[WGP_REP_STATUS];
  r->family = in[WGP_REP_FAMILY];
  r->arg = get32(in + WGP_REP_ARG);
  r->local.port = get16(in + WGP_REP_LOCAL_PORT);
  r->remote.port = get16(in + WGP_REP_REMOTE_PORT);
  memcpy(r->local.addr, in + WGP_REP_LOCAL_ADDR, 16);
  memcpy(r->remote.addr, in + WGP_REP_REMOTE_ADDR, 16);
  return check_reply(r);
}

static int check_frame(const struct wgp_frame *f) {
  if (f->flags & ~(WGP_FRAME_F_HOST | WGP_FRAME_F_ERROR)) return WGP_E_FLAGS;
  if (f->family != WGP_FAMILY_V4 && f->family != WGP_FAMILY_V6) return WGP_E_FAMILY;
  int err = check_endpoint(f->family, f->peer.addr, f->peer.port);
  if (err) return err;
  if (!(f->flags & WGP_FRAME_F_ERROR)) return f->error ? WGP_E_RESERVED : 0;
  if (f->error == WGP_OK || f->error > WGP_STATUS_MAX) return WGP_E_STATUS;
  return f->length ? WGP_E_LENGTH : 0;
}

int wgp_encode_frame(const struct wgp_frame *f, uint8_t out[WGP_FRAME_HEADER_LEN]) {
  int err = check_frame(f);
  if (err) return err;
  memset(out, 0, WGP_FRAME_HEADER_LEN);
  put16(out + WGP_FRAME_LENGTH, f->length);
  put16(out + WGP_FRAME_PORT, f->peer.port);
  out[WGP_FRAME_FAMILY] = f->family;
  out[WGP_FRAME_FLAGS] = f->flags;
  out[WGP_FRAME_ERROR] = f->error;
  memcpy(out + WGP_FRAME_ADDR, f->peer.addr, 16);
  return 0;
}

int wgp_decode_frame(const uint8_t *in, size_t len, struct wgp_frame *f) {
  if (len < WGP_FRAME_HEADER_LEN) return WGP_E_SHORT;
  if (in[WGP_FRAME_RESERVED] != 0) return WGP_E_RESERVED;
  memset(f, 0, sizeof *f);
  f->length = get16(in + WGP_FRAME_LENGTH);
  f->peer.port = get16(in + WGP_FRAME_PORT);
  f->family = in[WGP_FRAME_FAMILY];
  f->flags = in[WGP_FRAME_FLAGS];
  f->error = in[WGP_FRAME_ERROR];
  memcpy(f->peer.addr, in + WGP_FRAME_ADDR, 16);
  return check_frame(f);
}

int wgp_decode_resolve_body(const uint8_t *in, size_t len, struct wgp_resolved *out) {
  memset(out, 0, sizeof *out);
  if (len < 1) return WGP_E_SHORT;
  size_t n = in[0];
  if (n > WGP_MAX_NAME) return WGP_E_LENGTH;
  if (1 + n > len) return WGP_E_SHORT;
  for (size_t i = 0; i < n; i++) {
    /* A host name as text: printable ASCII without spaces. */
    if (in[1 + i] <= 0x20 || in[1 + i] >= 0x7f) return WGP_E_RESERVED;
  }
  size_t rest = len - 1 - n;
  if (rest % WGP_RESOLVE_ENTRY_LEN != 0) return WGP_E_LENGTH;
  size_t count = rest / WGP_RESOLVE_ENTRY_LEN;
  if (count > WGP_MAX_ADDRESSES) return WGP_E_LENGTH;
  memcpy(out->canon, in + 1, n);
  out->canon[n] = 0;
  const uint8_t *e = in + 1 + n;
  for (size_t i = 0; i < count; i++, e += WGP_RESOLVE_ENTRY_LEN) {
    if (e[0] != WGP_FAMILY_V4 && e[0] != WGP_FAMILY_V6) return WGP_E_FAMILY;
    int err = check_endpoint(e[0], e + 1, 0);
    if (err) return err;
    out->family[i] = e[0];
    memcpy(out->addr[i], e + 1, 16);
  }
  out->count = count;
  return 0;
}

int wgp_status_errno(uint8_t status) {
  switch (status) {
  case WGP_OK: return 0;
  case WGP_ST_AUTH: return EACCES;
  case WGP_ST_BADREQ: return EINVAL;
  case WGP_ST_CONNREFUSED: return ECONNREFUSED;
  case WGP_ST_TIMEDOUT: return ETIMEDOUT;
  case WGP_ST_NETUNREACH: return ENETUNREACH;
  case WGP_ST_HOSTUNREACH: return EHOSTUNREACH;
  case WGP_ST_ADDRINUSE: return EADDRINUSE;
  case WGP_ST_ADDRNOTAVAIL: return EADDRNOTAVAIL;
  case WGP_ST_CONNRESET: return ECONNRESET;
  case WGP_ST_NOBUFS: return ENOBUFS;
  case WGP_ST_AFNOSUPPORT: return EAFNOSUPPORT;
  case WGP_ST_NOENT: return ECONNABORTED;
  case WGP_ST_ACCES: return EACCES;
  case WGP_ST_PROHIBITED: return EHOSTUNREACH;
  case WGP_ST_NOTFOUND: return ENOENT;
  case WGP_ST_NODATA: return ENODATA;
  case WGP_ST_AGAIN: return EAGAIN;
  case WGP_ST_NODNS: return ENOSYS;
  case WGP_ST_MSGSIZE: return EMSGSIZE;
  default: return EPROTO;
  }
}

const char *wgp_status_name(uint8_t status) {
  static const char *const names[] = {
      "ok", "auth", "badreq", "connrefused", "timedout", "netunreach", "hostunreach",
      "addrinuse", "addrnotavail", "connreset", "nobufs", "afnosupport", "noent", "acces",
      "prohibited", "notfound", "nodata", "again", "nodns", "msgsize",
  };
  return status <= WGP_STATUS_MAX ? names[status] : "?";
}

const char *wgp_error_name(int err) {
  switch (err) {
  case 0: return "ok";
  case WGP_E_SHORT: return "short";
  case WGP_E_MAGIC: return "magic";
  case WGP_E_VERSION: return "version";
  case WGP_E_OP: return "op";
  case WGP_E_PROTO: return "proto";
  case WGP_E_FAMILY: return "family";
  case WGP_E_ADDR: return "addr";
  case WGP_E_FLAGS: return "flags";
  case WGP_E_PADDING: return "padding";
  case WGP_E_RESERVED: return "reserved";
  case WGP_E_STATUS: return "status";
  case WGP_E_LENGTH: return "length";
  default: return "?";
  }
}

int wgp_secret_equal(const uint8_t a[WGP_SECRET_LEN], const uint8_t b[WGP_SECRET_LEN]) {
  uint8_t diff = 0;
  for (size_t i = 0; i < WGP_SECRET_LEN; i++) diff |= (uint8_t)(a[i] ^ b[i]);
  /* No early exit and no branch on the data until here. */
  return diff == 0;
}
