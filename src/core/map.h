/*
 * map.h — string-keyed hash map (open addressing, linear probing, tombstones).
 *
 * Used for per-loop topic tables and similar registries that belong to ONE
 * thread: no locking here. Keys are copied into the map (owned by it); values
 * are opaque pointers owned by the caller. Capacity is a power of two and the
 * table grows at 3/4 load (tombstones included), so lookups stay short.
 */
#ifndef CH_CORE_MAP_H
#define CH_CORE_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  char *key;   /* owned; NULL = empty slot; CH__MAP_TOMB = deleted */
  size_t klen; /* bytes in key */
  uint64_t hash;
  void *value; /* caller-owned */
} ch_map_slot_t;

typedef struct ch_map_s {
  ch_map_slot_t *slots; /* owned array of cap slots */
  size_t cap;           /* power of two, 0 when empty */
  size_t count;         /* live entries */
  size_t used;          /* live + tombstones */
} ch_map_t;

void ch_map_init(ch_map_t *m);
/* Frees keys and slots; values are the caller's to free beforehand. */
void ch_map_dispose(ch_map_t *m);
void *ch_map_get(const ch_map_t *m, const char *key, size_t klen);
/* Insert or replace; returns the previous value or NULL. */
void *ch_map_put(ch_map_t *m, const char *key, size_t klen, void *value);
/* Remove; returns the removed value or NULL. */
void *ch_map_del(ch_map_t *m, const char *key, size_t klen);
uint64_t ch_map_hash(const char *key, size_t klen);

/* Iterate: for (size_t i = 0; ch_map_next(m, &i, &k, &kl, &v);) ... */
int ch_map_next(const ch_map_t *m, size_t *iter, const char **key, size_t *klen, void **value);

#endif
