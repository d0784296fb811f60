/*
 * map.c — see map.h. FNV-1a hashing; linear probing; rehash on growth drops
 * tombstones.
 */
#include "core/map.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

static char ch__map_tomb;
#define CH__MAP_TOMB (&ch__map_tomb)

uint64_t ch_map_hash(const char *key, size_t klen) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < klen; i++) {
    h ^= (unsigned char)key[i];
    h *= 1099511628211ull;
  }
  return h;
}

void ch_map_init(ch_map_t *m) { memset(m, 0, sizeof(*m)); }

void ch_map_dispose(ch_map_t *m) {
  for (size_t i = 0; i < m->cap; i++) {
    if (m->slots[i].key && m->slots[i].key != CH__MAP_TOMB) free(m->slots[i].key);
  }
  free(m->slots);
  ch_map_init(m);
}

static ch_map_slot_t *ch__map_find(const ch_map_t *m, const char *key, size_t klen, uint64_t h) {
  if (m->cap == 0) return NULL;
  size_t mask = m->cap - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    ch_map_slot_t *s = &m->slots[i];
    if (s->key == NULL) return NULL;
    if (s->key != CH__MAP_TOMB && s->hash == h && s->klen == klen && memcmp(s->key, key, klen) == 0)
      return s;
  }
}

static void ch__map_grow(ch_map_t *m) {
  size_t ncap = m->cap ? m->cap * 2 : 8;
  if (m->count * 2 < m->cap) ncap = m->cap; /* mostly tombstones: rehash in place size */
  ch_map_slot_t *old = m->slots;
  size_t ocap = m->cap;
  m->slots = ch_xcalloc(ncap, sizeof(*m->slots));
  m->cap = ncap;
  m->used = m->count;
  for (size_t i = 0; i < ocap; i++) {
    ch_map_slot_t *s = &old[i];
    if (s->key == NULL || s->key == CH__MAP_TOMB) continue;
    size_t j = s->hash & (ncap - 1);
    while (m->slots[j].key) j = (j + 1) & (ncap - 1);
    m->slots[j] = *s;
  }
  free(old);
}

void *ch_map_get(const ch_map_t *m, const char *key, size_t klen) {
  ch_map_slot_t *s = ch__map_find(m, key, klen, ch_map_hash(key, klen));
  return s ? s->value : NULL;
}

void *ch_map_put(ch_map_t *m, const char *key, size_t klen, void *value) {
  uint64_t h = ch_map_hash(key, klen);
  ch_map_slot_t *s = ch__map_find(m, key, klen, h);
  if (s) {
    void *prev = s->value;
    s->value = value;
    return prev;
  }
  if ((m->used + 1) * 4 > m->cap * 3) ch__map_grow(m);
  size_t mask = m->cap - 1;
  size_t i = h & mask;
  while (m->slots[i].key && m->slots[i].key != CH__MAP_TOMB) i = (i + 1) & mask;
  s = &m->slots[i];
  if (s->key == NULL) m->used++;
  s->key = ch_xstrndup(key, klen);
  s->klen = klen;
  s->hash = h;
  s->value = value;
  m->count++;
  return NULL;
}

void *ch_map_del(ch_map_t *m, const char *key, size_t klen) {
  ch_map_slot_t *s = ch__map_find(m, key, klen, ch_map_hash(key, klen));
  if (s == NULL) return NULL;
  void *v = s->value;
  free(s->key);
  s->key = CH__MAP_TOMB;
  s->value = NULL;
  m->count--;
  return v;
}

int ch_map_next(const ch_map_t *m, size_t *iter, const char **key, size_t *klen, void **value) {
  for (; *iter < m->cap; (*iter)++) {
    ch_map_slot_t *s = &m->slots[*iter];
    if (s->key == NULL || s->key == CH__MAP_TOMB) continue;
    if (key) *key = s->key;
    if (klen) *klen = s->klen;
    if (value) *value = s->value;
    (*iter)++;
    return 1;
  }
  return 0;
}
