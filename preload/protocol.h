/*
 * The wire protocol between the interposer and the broker (see PROTOCOL.md for the prose).
 *
 * Pure byte encoding and decoding: no sockets, no errno, no allocation, so that it is unit-tested
 * without preloading (preload/test/protocol_test.c) and mirrored byte for byte by
 * core/host/broker/protocol.ts. Every integer is big-endian. Decoders read untrusted bytes only
 * after the length check and reject anything a v1 encoder would not produce.
 */
#ifndef WRAPGUARD_PROTOCOL_H
#define WRAPGUARD_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#define WGP_VERSION 1
#define WGP_SECRET_LEN 32
#define WGP_TAG_LEN 8

/* Sizes of the three fixed records. */
#define WGP_REQUEST_LEN 96
#define WGP_REPLY_LEN 48
#define WGP_FRAME_HEADER_LEN 24

/* Filler after a request (non-blocking connect, see PROTOCOL.md "Readiness"): at most this. */
#define WGP_MAX_PADDING (4u << 20)
/* Largest UDP payload a frame carries (IPv4/IPv6 UDP limit without jumbograms). */
#define WGP_MAX_DATAGRAM 65535u

/* Request field offsets. */
enum {
  WGP_REQ_MAGIC = 0,       /* 4: "WGB1" */
  WGP_REQ_SECRET = 4,      /* 32 */
  WGP_REQ_VERSION = 36,    /* 1 */
  WGP_REQ_OP = 37,         /* 1 */
  WGP_REQ_PROTO = 38,      /* 1 */
  WGP_REQ_FAMILY = 39,     /* 1 */
  WGP_REQ_FLAGS = 40,      /* 4 */
  WGP_REQ_PADDING = 44,    /* 4 */
  WGP_REQ_ARG = 48,        /* 4 */
  WGP_REQ_LOCAL_PORT = 52, /* 2 */
  WGP_REQ_REMOTE_PORT = 54,/* 2 */
  WGP_REQ_LOCAL_ADDR = 56, /* 16 */
  WGP_REQ_REMOTE_ADDR = 72,/* 16 */
  WGP_REQ_TAG = 88,        /* 8 */
};

/* Reply field offsets (also the layout of an accept notice). */
enum {
  WGP_REP_MAGIC = 0,        /* 4: "WGR1" */
  WGP_REP_VERSION = 4,      /* 1 */
  WGP_REP_STATUS = 5,       /* 1 */
  WGP_REP_FAMILY = 6,       /* 1 */
  WGP_REP_RESERVED = 7,     /* 1 */
  WGP_REP_ARG = 8,          /* 4 */
  WGP_REP_LOCAL_PORT = 12,  /* 2 */
  WGP_REP_REMOTE_PORT = 14, /* 2 */
  WGP_REP_LOCAL_ADDR = 16,  /* 16 */
  WGP_REP_REMOTE_ADDR = 32, /* 16 */
};

/* UDP frame header field offsets. */
enum {
  WGP_FRAME_LENGTH = 0,   /* 2: payload bytes that follow the header */
  WGP_FRAME_PORT = 2,     /* 2 */
  WGP_FRAME_FAMILY = 4,   /* 1 */
  WGP_FRAME_FLAGS = 5,    /* 1: WGP_FRAME_F_* */
  WGP_FRAME_ERROR = 6,    /* 1: a status, in an error frame */
  WGP_FRAME_RESERVED = 7, /* 1 */
  WGP_FRAME_ADDR = 8,     /* 16 */
};

/* What a request asks for. */
enum wgp_op {
  WGP_OP_CONNECT = 1, /* open a TCP connection */
  WGP_OP_BIND = 2,    /* reserve a tunnel address and port (EADDRINUSE is told here) */
  WGP_OP_LISTEN = 3,  /* turn this connection into a listener's notice channel */
  WGP_OP_ACCEPT = 4,  /* take the connection named by `arg` from a notice */
  WGP_OP_UDP = 5,     /* an unconnected UDP socket: frames carry each datagram's peer */
  WGP_OP_LOOKUP = 6,  /* on a RELAY listener's channel: which tunnel peer is this loopback peer? */
  /* Service ops: no socket behind them, proto 0, no endpoints, `arg` bytes of body follow. */
  WGP_OP_HELLO = 7,   /* a process loaded the library (arg: its pid); no body */
  WGP_OP_RESOLVE = 8, /* a host name (arg: its length) -> addresses, through the tunnel's DNS */
  WGP_OP_QUERY = 9,   /* a DNS message (arg: its length) -> the DNS server's response */
};
#define WGP_OP_MAX 9
/* True for the ops that ask the broker for a service rather than a socket. */
#define WGP_OP_IS_SERVICE(op) ((op) >= WGP_OP_HELLO && (op) <= WGP_OP_QUERY)
/* Longest name RESOLVE carries (RFC 1035 2.3.4: 255 octets on the wire, so 253 as text, plus a
 * final dot), and the shortest and longest DNS message QUERY carries. */
#define WGP_MAX_NAME 254u
#define WGP_MIN_DNS_MESSAGE 12u
#define WGP_MAX_DNS_MESSAGE 65535u
/* Most addresses a RESOLVE reply lists. */
#define WGP_MAX_ADDRESSES 32u
/* One address in a RESOLVE reply body: family byte, then 16 address bytes. */
#define WGP_RESOLVE_ENTRY_LEN 17u

enum wgp_proto { WGP_PROTO_TCP = 6, WGP_PROTO_UDP = 17 };

/* Address family codes on the wire (not AF_*: those differ between systems). */
enum wgp_family { WGP_FAMILY_NONE = 0, WGP_FAMILY_V4 = 4, WGP_FAMILY_V6 = 6 };

/* Request flags. */
#define WGP_FLAG_V6ONLY 0x1u    /* BIND: an AF_INET6 socket with IPV6_V6ONLY set */
#define WGP_FLAG_REUSEADDR 0x2u /* BIND: SO_REUSEADDR was set */
#define WGP_FLAG_RELAY 0x4u     /* LISTEN: relay tunnel connections to a kernel listener */
#define WGP_FLAG_HOST 0x8u      /* UDP: bound to the wildcard, so on the host network as well */
#define WGP_FLAGS_KNOWN (WGP_FLAG_V6ONLY | WGP_FLAG_REUSEADDR | WGP_FLAG_RELAY | WGP_FLAG_HOST)

/*
 * Reply status codes. They are protocol numbers, not errno values: the interposer maps them with
 * wgp_status_errno() so that the meaning does not depend on the C library or architecture.
 */
enum wgp_status {
  WGP_OK = 0,
  WGP_ST_AUTH = 1,          /* the secret did not match                -> EACCES */
  WGP_ST_BADREQ = 2,        /* the request was malformed               -> EINVAL */
  WGP_ST_CONNREFUSED = 3,   /* RST in answer to SYN, ICMP port unreach -> ECONNREFUSED */
  WGP_ST_TIMEDOUT = 4,      /* no answer                               -> ETIMEDOUT */
  WGP_ST_NETUNREACH = 5,    /* no route / no peer for the destination  -> ENETUNREACH */
  WGP_ST_HOSTUNREACH = 6,   /* ICMP host unreachable                   -> EHOSTUNREACH */
  WGP_ST_ADDRINUSE = 7,     /* port taken                              -> EADDRINUSE */
  WGP_ST_ADDRNOTAVAIL = 8,  /* not one of our tunnel addresses         -> EADDRNOTAVAIL */
  WGP_ST_CONNRESET = 9,     /* reset before the request completed      -> ECONNRESET */
  WGP_ST_NOBUFS = 10,       /* the broker is out of resources          -> ENOBUFS */
  WGP_ST_AFNOSUPPORT = 11,  /* no tunnel address of that family        -> EAFNOSUPPORT */
  WGP_ST_NOENT = 12,        /* ACCEPT of an unknown or taken connection -> ECONNABORTED */
  WGP_ST_ACCES = 13,        /* forbidden by policy                     -> EACCES */
  WGP_ST_PROHIBITED = 14,   /* ICMP administratively prohibited        -> EHOSTUNREACH */
  /* Name resolution (RESOLVE, QUERY); dns.c turns them into EAI_* and h_errno values. */
  WGP_ST_NOTFOUND = 15, /* NXDOMAIN                               -> EAI_NONAME, HOST_NOT_FOUND */
  WGP_ST_NODATA = 16,   /* the name has no address of that family -> EAI_NODATA, NO_DATA */
  WGP_ST_AGAIN = 17,    /* no answer in time, or SERVFAIL           -> EAI_AGAIN, TRY_AGAIN */
  WGP_ST_NODNS = 18,    /* the tunnel has no DNS server (no `DNS =`) -> EAI_FAIL, NO_RECOVERY */
  /* UDP error frames (ICMP "fragmentation needed" / "packet too big"). */
  WGP_ST_MSGSIZE = 19, /* -> EMSGSIZE */
};
#define WGP_STATUS_MAX 19

/* One endpoint. `addr` holds 4 bytes (then 12 zero bytes) for IPv4, 16 for IPv6. */
struct wgp_endpoint {
  uint8_t addr[16];
  uint16_t port;
};

struct wgp_request {
  uint8_t secret[WGP_SECRET_LEN];
  uint8_t op;     /* enum wgp_op */
  uint8_t proto;  /* enum wgp_proto */
  uint8_t family; /* enum wgp_family, of both endpoints */
  uint32_t flags;
  uint32_t padding; /* filler bytes that follow the request on the stream */
  uint32_t arg;     /* LISTEN: backlog; ACCEPT: connection id */
  struct wgp_endpoint local;
  struct wgp_endpoint remote;
  uint8_t tag[WGP_TAG_LEN]; /* reserved in v1: zero */
};

struct wgp_reply {
  uint8_t status; /* enum wgp_status */
  uint8_t family; /* of both endpoints; NONE on errors */
  uint32_t arg;   /* notices: connection id */
  struct wgp_endpoint local;
  struct wgp_endpoint remote;
};

/* Frame flags. HOST: the datagram goes out on (or came in from) the host network, for a socket
 * bound to a wildcard address (it lives in both). ERROR: no datagram but an ICMP error about one
 * the socket sent to `peer`; `error` is the status (CONNREFUSED, HOSTUNREACH, NETUNREACH,
 * PROHIBITED, MSGSIZE) and the length is 0. */
#define WGP_FRAME_F_HOST 0x1
#define WGP_FRAME_F_ERROR 0x2

struct wgp_frame {
  uint16_t length; /* payload bytes after the header */
  uint8_t family;
  uint8_t flags; /* WGP_FRAME_F_* */
  uint8_t error; /* with WGP_FRAME_F_ERROR: a status; else 0 */
  struct wgp_endpoint peer; /* to send: destination; received: source */
};

/* Why a decoder refused its input. */
enum wgp_error {
  WGP_E_SHORT = -1,    /* fewer bytes than the record */
  WGP_E_MAGIC = -2,    /* not "WGB1"/"WGR1" */
  WGP_E_VERSION = -3,  /* a version we do not speak */
  WGP_E_OP = -4,       /* unknown op */
  WGP_E_PROTO = -5,    /* neither TCP nor UDP, or not allowed with this op */
  WGP_E_FAMILY = -6,   /* unknown family, or not allowed with this op */
  WGP_E_ADDR = -7,     /* an IPv4 address with non-zero bytes past the fourth */
  WGP_E_FLAGS = -8,    /* unknown flag bits */
  WGP_E_PADDING = -9,  /* more filler than WGP_MAX_PADDING, or filler where none is allowed */
  WGP_E_RESERVED = -10,/* a reserved field is not zero */
  WGP_E_STATUS = -11,  /* unknown status */
  WGP_E_LENGTH = -12,  /* a service op's body length out of range */
};

/* A RESOLVE reply's body: the canonical name's length (1 byte) and text, then for each address a
 * family byte (4 or 6) and a 16-byte address field. */
struct wgp_resolved {
  char canon[WGP_MAX_NAME + 1]; /* NUL-terminated; empty when the broker named none */
  size_t count;
  uint8_t family[WGP_MAX_ADDRESSES];
  uint8_t addr[WGP_MAX_ADDRESSES][16];
};
/* Returns 0 and fills `out`, or a negative wgp_error (short, length, family, addr, reserved). */
int wgp_decode_resolve_body(const uint8_t *in, size_t len, struct wgp_resolved *out);

/* Writes exactly WGP_REQUEST_LEN bytes; returns 0, or a wgp_error for a request no decoder
 * would accept (nothing useful is written then). */
int wgp_encode_request(const struct wgp_request *req, uint8_t out[WGP_REQUEST_LEN]);
/* Returns 0 and fills `req`, or a negative wgp_error. Reads at most WGP_REQUEST_LEN bytes. */
int wgp_decode_request(const uint8_t *in, size_t len, struct wgp_request *req);

int wgp_encode_reply(const struct wgp_reply *rep, uint8_t out[WGP_REPLY_LEN]);
int wgp_decode_reply(const uint8_t *in, size_t len, struct wgp_reply *rep);

int wgp_encode_frame(const struct wgp_frame *f, uint8_t out[WGP_FRAME_HEADER_LEN]);
int wgp_decode_frame(const uint8_t *in, size_t len, struct wgp_frame *f);

/* The errno a status stands for (0 for WGP_OK). */
int wgp_status_errno(uint8_t status);
/* A short name for logs and tests ("ok", "connrefused", …); "?" when unknown. */
const char *wgp_status_name(uint8_t status);
/* A name for a decoder error ("short", "magic", …). */
const char *wgp_error_name(int err);

/* Constant-time comparison of two secrets: 1 when equal. */
int wgp_secret_equal(const uint8_t a[WGP_SECRET_LEN], const uint8_t b[WGP_SECRET_LEN]);

#endif
