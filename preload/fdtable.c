/*
 * The fd table: which of the program's fds are tunnel sockets, and their state.
 *
 * Two levels (chunks of 1024 fds, allocated on first use and never freed) so that fds up to
 * WG_MAX_FD cost memory only where used. Each slot has a `kind` byte that hot paths (read, close)
 * read without the lock, and an entry pointer that is only touched under `table_lock`. Entries are
 * reference counted: dup'd fds share one entry, and a hook holds a reference while it works, so an
 * entry outlives a concurrent close.
 */
#include "wrapguard.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define CHUNK_BITS 10
#define CHUNK_SIZE (1 << CHUNK_BITS)
#define NCHUNKS 1024
#define WG_MAX_FD (CHUNK_SIZE * NCHUNKS)

struct chunk {
  uint8_t kind[CHUNK_SIZE];
  struct wg_sock *sock[CHUNK_SIZE];
};

static struct chunk *chunks[NCHUNKS];
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

/* fork(2) must not copy a held lock into the child: take it around fork. */
static void before_fork(void) { pthread_mutex_lock(&table_lock); }
static void after_fork_parent(void) { pthread_mutex_unlock(&table_lock); }
static void after_fork_child(void) {
  pthread_mutex_init(&table_lock, NULL);
  /* A socket lock held by another thread of the parent (waiting for a reply) would stay held
   * forever in the child, where that thread does not exist. Nothing else runs yet: re-init. */
  for (int c = 0; c < NCHUNKS; c++) {
    struct chunk *ch = chunks[c];
    if (!ch) continue;
    for (int i = 0; i < CHUNK_SIZE; i++) {
      struct wg_sock *s = ch->sock[i];
      if (!s) continue;
      pthread_mutex_init(&s->lock, NULL);
      pthread_mutex_init(&s->rlock, NULL);
      pthread_mutex_init(&s->wlock, NULL);
    }
  }
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void register_atfork(void) {
  pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

static struct chunk *chunk_of(int fd) {
  if (fd < 0 || fd >= WG_MAX_FD) return NULL;
  return __atomic_load_n(&chunks[fd >> CHUNK_BITS], __ATOMIC_ACQUIRE);
}

/* Under table_lock. */
static struct chunk *chunk_make(int fd) {
  struct chunk *c = chunk_of(fd);
  if (c || fd < 0 || fd >= WG_MAX_FD) return c;
  c = calloc(1, sizeof *c);
  if (c) __atomic_store_n(&chunks[fd >> CHUNK_BITS], c, __ATOMIC_RELEASE);
  return c;
}

int wg_kind(int fd) {
  struct chunk *c = chunk_of(fd);
  if (!c) return WG_K_NONE;
  return __atomic_load_n(&c->kind[fd & (CHUNK_SIZE - 1)], __ATOMIC_ACQUIRE);
}

void wg_set_kind(int fd, int kind) {
  struct chunk *c = chunk_of(fd);
  if (!c) return;
  pthread_mutex_lock(&table_lock);
  if (c->sock[fd & (CHUNK_SIZE - 1)]) {
    __atomic_store_n(&c->kind[fd & (CHUNK_SIZE - 1)], (uint8_t)kind, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&table_lock);
}

static int kind_of(const struct wg_sock *s) {
  return s->state == WG_S_CONNECTED && s->type == SOCK_STREAM ? WG_K_FAST : WG_K_SLOW;
}

struct wg_sock *wg_sock_new(int domain, int type, int protocol) {
  pthread_once(&atfork_once, register_atfork);
  struct wg_sock *s = calloc(1, sizeof *s);
  if (!s) {
    errno = ENOBUFS;
    return NULL;
  }
  pthread_mutex_init(&s->lock, NULL);
  pthread_mutex_init(&s->rlock, NULL);
  pthread_mutex_init(&s->wlock, NULL);
  s->refs = 1;
  s->aux_fd = -1;
  s->domain = domain;
  s->type = type;
  s->protocol = protocol;
  return s;
}

static void sock_free(struct wg_sock *s) {
  /* The last fd of a relayed listener is gone: closing its channel ends the tunnel listener. */
  if (s->aux_fd >= 0) sys_close(s->aux_fd);
  pthread_mutex_destroy(&s->lock);
  pthread_mutex_destroy(&s->rlock);
  pthread_mutex_destroy(&s->wlock);
  free(s);
}

void wg_put(struct wg_sock *s) {
  if (!s) return;
  pthread_mutex_lock(&table_lock);
  int last = --s->refs == 0;
  pthread_mutex_unlock(&table_lock);
  if (last) sock_free(s);
}

/* Replaces slot fd with s (which may be NULL); returns the old entry, whose reference the caller
 * drops. Under table_lock. */
static struct wg_sock *slot_swap(struct chunk *c, int fd, struct wg_sock *s, int kind) {
  int i = fd & (CHUNK_SIZE - 1);
  struct wg_sock *old = c->sock[i];
  if (s) s->refs++;
  c->sock[i] = s;
  __atomic_store_n(&c->kind[i], (uint8_t)(s ? kind : WG_K_NONE), __ATOMIC_RELEASE);
  if (old && --old->refs > 0) old = NULL;
  return old;
}

int wg_set(int fd, struct wg_sock *s) {
  pthread_mutex_lock(&table_lock);
  struct chunk *c = chunk_make(fd);
  if (!c) {
    pthread_mutex_unlock(&table_lock);
    errno = EMFILE;
    return -1;
  }
  struct wg_sock *dead = slot_swap(c, fd, s, kind_of(s));
  pthread_mutex_unlock(&table_lock);
  if (dead) sock_free(dead);
  return 0;
}

void wg_clear(int fd) {
  struct chunk *c = chunk_of(fd);
  if (!c) return;
  pthread_mutex_lock(&table_lock);
  struct wg_sock *dead = slot_swap(c, fd, NULL, WG_K_NONE);
  pthread_mutex_unlock(&table_lock);
  if (dead) sock_free(dead);
}

void wg_dup(int from, int to) {
  if (from == to) return;
  struct chunk *cf = chunk_of(from);
  if (!cf && !chunk_of(to)) return;
  pthread_mutex_lock(&table_lock);
  struct wg_sock *s = cf ? cf->sock[from & (CHUNK_SIZE - 1)] : NULL;
  struct chunk *ct = s ? chunk_make(to) : chunk_of(to);
  struct wg_sock *dead = NULL;
  if (ct) dead = slot_swap(ct, to, s, s ? cf->kind[from & (CHUNK_SIZE - 1)] : WG_K_NONE);
  pthread_mutex_unlock(&table_lock);
  if (dead) sock_free(dead);
}

void wg_note_identity(int fd, struct wg_sock *s) {
  struct stat st;
  if (syscall(SYS_fstat, fd, &st) == 0) {
    s->dev = st.st_dev;
    s->ino = st.st_ino;
  }
}

struct wg_sock *wg_get(int fd) {
  struct chunk *c = chunk_of(fd);
  if (!c) return NULL;
  int i = fd & (CHUNK_SIZE - 1);
  if (__atomic_load_n(&c->kind[i], __ATOMIC_ACQUIRE) == WG_K_NONE) return NULL;
  pthread_mutex_lock(&table_lock);
  struct wg_sock *s = c->sock[i];
  if (s) s->refs++;
  pthread_mutex_unlock(&table_lock);
  if (!s) return NULL;
  /* The fd may have been closed without our close() seeing it (fclose, close_range, a raw
   * syscall) and reused for something else: then the entry is stale. */
  struct stat st;
  int saved = errno;
  if (syscall(SYS_fstat, fd, &st) != 0 || st.st_dev != s->dev || st.st_ino != s->ino) {
    errno = saved;
    pthread_mutex_lock(&table_lock);
    struct wg_sock *dead = c->sock[i] == s ? slot_swap(c, fd, NULL, WG_K_NONE) : NULL;
    pthread_mutex_unlock(&table_lock);
    if (dead) sock_free(dead);
    wg_put(s);
    return NULL;
  }
  errno = saved;
  return s;
}
