/*
 * The program's sockets the supervisor put on the tunnel, by the inode of the socket itself: fd
 * numbers move (dup, fork, exec) but the socket stays the same object. An entry outlives the
 * socket (nothing tells the supervisor of a close); inodes of sockets are handed out in
 * sequence, so a stale entry is overwritten long before its number comes back, and the table is
 * a ring of the most recent ones.
 */
#include "supervisor.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define SV_TABLE_SIZE 4096

static struct sv_entry table[SV_TABLE_SIZE];
static int next_slot;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

uint64_t sv_inode(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return 0;
  return (uint64_t)st.st_ino;
}

static int find(uint64_t ino) {
  for (int i = 0; i < SV_TABLE_SIZE; i++) {
    if (table[i].ino == ino) return i;
  }
  return -1;
}

void sv_table_put(const struct sv_entry *e) {
  if (e->ino == 0) return;
  pthread_mutex_lock(&lock);
  int i = find(e->ino);
  if (i < 0) {
    i = next_slot;
    next_slot = (next_slot + 1) % SV_TABLE_SIZE;
  }
  table[i] = *e;
  pthread_mutex_unlock(&lock);
}

int sv_table_get(uint64_t ino, struct sv_entry *out) {
  if (ino == 0) return 0;
  pthread_mutex_lock(&lock);
  int i = find(ino);
  if (i >= 0) *out = table[i];
  pthread_mutex_unlock(&lock);
  return i >= 0;
}

void sv_table_drop(uint64_t ino) {
  if (ino == 0) return;
  pthread_mutex_lock(&lock);
  int i = find(ino);
  if (i >= 0) memset(&table[i], 0, sizeof table[i]);
  pthread_mutex_unlock(&lock);
}

int sv_socket_listed(uint64_t ino, int tcp) {
  static const char *const tcps[] = {"/proc/net/tcp", "/proc/net/tcp6"};
  static const char *const udps[] = {"/proc/net/udp", "/proc/net/udp6"};
  const char *const *tables = tcp ? tcps : udps;
  char want[32];
  snprintf(want, sizeof want, " %llu ", (unsigned long long)ino);
  for (int i = 0; i < 2; i++) {
    FILE *f = fopen(tables[i], "re");
    if (!f) continue;
    char line[512];
    while (fgets(line, sizeof line, f)) {
      if (strstr(line, want)) {
        fclose(f);
        return 1;
      }
    }
    fclose(f);
  }
  return 0;
}
