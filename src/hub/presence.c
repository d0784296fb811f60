/*
 * presence.c — presence sets in the hub's map (see presence.h).
 *
 * A set is a list of nodes in join order plus two indexes, so that joining
 * and leaving a room of N connections costs O(1), not O(N): `by_client`
 * finds a connection's node (duplicate joins, leaves), `users` counts each
 * user's connections (first/last connection of a user without a scan). All
 * three change together in add/remove; n is the list's length.
 *
 * Everything here runs on the hub thread; nothing is locked.
 */
#include "hub/presence.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/err.h"
#include "core/list.h"
#include "core/map.h"
#include "hub/hub.h"

typedef struct {
  ch_list_t node;        /* in set->conns */
  ch_presence_entry_t e; /* the connection */
} ch__pnode_t;

typedef struct {
  ch_list_t conns;    /* ch__pnode_t (owned), oldest first */
  ch_map_t by_client; /* 8 raw bytes of client_id -> ch__pnode_t * (borrowed from conns) */
  ch_map_t users;     /* user id -> (void *)(uintptr_t) connections of that user, never 0 */
  size_t n;           /* nodes in conns */
  char *claim;        /* owned user id holding a claim, or NULL */
} ch__pset_t;

static ch__pset_t *ch__pset(ch_hub_t *h, const char *key, int create) {
  ch__pset_t *s = ch_map_get(&h->presence, key, strlen(key));
  if (s == NULL && create) {
    s = ch_xcalloc(1, sizeof(*s));
    ch_list_init(&s->conns);
    ch_map_init(&s->by_client);
    ch_map_init(&s->users);
    ch_map_put(&h->presence, key, strlen(key), s);
  }
  return s;
}

static void ch__pset_free(ch__pset_t *s) {
  while (!ch_list_empty(&s->conns)) {
    ch__pnode_t *p = CH_LIST_DATA(s->conns.next, ch__pnode_t, node);
    ch_list_remove(&p->node);
    free(p);
  }
  ch_map_dispose(&s->by_client);
  ch_map_dispose(&s->users);
  free(s->claim);
  free(s);
}

static void ch__pset_maybe_free(ch_hub_t *h, const char *key, ch__pset_t *s) {
  if (s->n == 0) {
    ch_map_del(&h->presence, key, strlen(key));
    ch__pset_free(s);
  }
}

/* users[user] += d; returns the new count (the entry is removed at 0). */
static uintptr_t ch__user_adjust(ch__pset_t *s, const char *user, int d) {
  size_t ul = strlen(user);
  uintptr_t n = (uintptr_t)ch_map_get(&s->users, user, ul);
  n = d > 0 ? n + 1 : n - 1;
  if (n == 0) ch_map_del(&s->users, user, ul);
  else ch_map_put(&s->users, user, ul, (void *)n);
  return n;
}

int ch_presence_add(ch_hub_t *h, const char *key, const ch_presence_entry_t *e) {
  ch__pset_t *s = ch__pset(h, key, 1);
  const char *ck = (const char *)&e->client_id;
  if (ch_map_get(&s->by_client, ck, sizeof(e->client_id))) return CH_EEXIST;
  ch__pnode_t *p = ch_xmalloc(sizeof(*p));
  p->e = *e;
  ch_list_insert_tail(&s->conns, &p->node);
  ch_map_put(&s->by_client, ck, sizeof(e->client_id), p);
  s->n++;
  return ch__user_adjust(s, p->e.user_id, +1) == 1;
}

int ch_presence_remove(ch_hub_t *h, const char *key, uint64_t client_id, ch_presence_entry_t *out, int *found) {
  *found = 0;
  ch__pset_t *s = ch__pset(h, key, 0);
  if (s == NULL) return 0;
  ch__pnode_t *p = ch_map_del(&s->by_client, (const char *)&client_id, sizeof(client_id));
  if (p == NULL) return 0;
  *out = p->e;
  *found = 1;
  ch_list_remove(&p->node);
  free(p);
  s->n--;
  int last = ch__user_adjust(s, out->user_id, -1) == 0;
  ch__pset_maybe_free(h, key, s);
  return last;
}

size_t ch_presence_json_max(ch_hub_t *h, const char *key, size_t max, ch_buf_t *out) {
  ch__pset_t *s = ch__pset(h, key, 0);
  size_t i = 0;
  ch_buf_append_byte(out, '[');
  if (s) {
    ch_list_t *it;
    ch_list_foreach(it, &s->conns) {
      if (i == max) break;
      const ch_presence_entry_t *e = &CH_LIST_DATA(it, ch__pnode_t, node)->e;
      ch_buf_printf(out, "%s{\"clientId\":\"%llu\",\"userId\":\"", i ? "," : "", (unsigned long long)e->client_id);
      ch_buf_append_json_str(out, e->user_id, strlen(e->user_id));
      ch_buf_append_str(out, "\",\"deviceId\":\"");
      ch_buf_append_json_str(out, e->device_id, strlen(e->device_id));
      ch_buf_append_str(out, "\",\"source\":\"");
      ch_buf_append_json_str(out, e->source, strlen(e->source));
      ch_buf_append_str(out, "\"}");
      i++;
    }
  }
  ch_buf_append_byte(out, ']');
  return i;
}

void ch_presence_json(ch_hub_t *h, const char *key, ch_buf_t *out) { ch_presence_json_max(h, key, SIZE_MAX, out); }

size_t ch_presence_count(ch_hub_t *h, const char *key) {
  ch__pset_t *s = ch__pset(h, key, 0);
  return s ? s->n : 0;
}

size_t ch_presence_user_count(ch_hub_t *h, const char *key) {
  ch__pset_t *s = ch__pset(h, key, 0);
  return s ? s->users.count : 0;
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
  for (size_t i = 0; ch_map_next(&h->presence, &i, NULL, NULL, &v);) ch__pset_free(v);
}
