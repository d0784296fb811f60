/*
 * presence.c — presence sets in the hub's map (see presence.h).
 */
#include "hub/presence.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "hub/hub.h"

typedef struct {
  ch_presence_entry_t *a; /* owned array */
  size_t n, cap;
  char *claim;            /* owned user id holding a claim, or NULL */
} ch__pset_t;

static ch__pset_t *ch__pset(ch_hub_t *h, const char *key, int create) {
  ch__pset_t *s = ch_map_get(&h->presence, key, strlen(key));
  if (s == NULL && create) {
    s = ch_xcalloc(1, sizeof(*s));
    ch_map_put(&h->presence, key, strlen(key), s);
  }
  return s;
}

static void ch__pset_maybe_free(ch_hub_t *h, const char *key, ch__pset_t *s) {
  if (s->n == 0) {
    ch_map_del(&h->presence, key, strlen(key));
    free(s->a);
    free(s->claim);
    free(s);
  }
}

static int ch__user_count(const ch__pset_t *s, const char *user) {
  int n = 0;
  for (size_t i = 0; i < s->n; i++) n += strcmp(s->a[i].user_id, user) == 0;
  return n;
}

int ch_presence_add(ch_hub_t *h, const char *key, const ch_presence_entry_t *e) {
  ch__pset_t *s = ch__pset(h, key, 1);
  for (size_t i = 0; i < s->n; i++)
    if (s->a[i].client_id == e->client_id) return 0; /* already here */
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 4;
    s->a = ch_xrealloc(s->a, s->cap * sizeof(*s->a));
  }
  int first = ch__user_count(s, e->user_id) == 0;
  s->a[s->n++] = *e;
  return first;
}

int ch_presence_remove(ch_hub_t *h, const char *key, uint64_t client_id, ch_presence_entry_t *out, int *found) {
  *found = 0;
  ch__pset_t *s = ch__pset(h, key, 0);
  if (s == NULL) return 0;
  for (size_t i = 0; i < s->n; i++) {
    if (s->a[i].client_id != client_id) continue;
    *out = s->a[i];
    s->a[i] = s->a[--s->n];
    *found = 1;
    int last = ch__user_count(s, out->user_id) == 0;
    ch__pset_maybe_free(h, key, s);
    return last;
  }
  return 0;
}

void ch_presence_json(ch_hub_t *h, const char *key, ch_buf_t *out) {
  ch__pset_t *s = ch__pset(h, key, 0);
  ch_buf_append_byte(out, '[');
  for (size_t i = 0; s && i < s->n; i++) {
    const ch_presence_entry_t *e = &s->a[i];
    ch_buf_printf(out, "%s{\"clientId\":\"%llu\",\"userId\":\"", i ? "," : "", (unsigned long long)e->client_id);
    ch_buf_append_json_str(out, e->user_id, strlen(e->user_id));
    ch_buf_append_str(out, "\",\"deviceId\":\"");
    ch_buf_append_json_str(out, e->device_id, strlen(e->device_id));
    ch_buf_append_str(out, "\",\"source\":\"");
    ch_buf_append_json_str(out, e->source, strlen(e->source));
    ch_buf_append_str(out, "\"}");
  }
  ch_buf_append_byte(out, ']');
}

size_t ch_presence_count(ch_hub_t *h, const char *key) {
  ch__pset_t *s = ch__pset(h, key, 0);
  return s ? s->n : 0;
}

const char *ch_presence_claim(ch_hub_t *h, const char *key) {
  ch__pset_t *s = ch__pset(h, key, 0);
  return s ? s->claim : NULL;
}

void ch_presence_set_claim(ch_hub_t *h, const char *key, const char *user_id) {
  ch__pset_t *s = ch__pset(h, key, 0);
  if (s == NULL) return; /* claims live only while someone is present */
  free(s->claim);
  s->claim = user_id ? ch_xstrdup(user_id) : NULL;
}

void ch_presence_dispose(ch_hub_t *h) {
  void *v;
  for (size_t i = 0; ch_map_next(&h->presence, &i, NULL, NULL, &v);) {
    ch__pset_t *s = v;
    free(s->a);
    free(s->claim);
    free(s);
  }
}
