/*
 * presence.h — who is here: per conversation and per user (hub thread only).
 *
 * A presence set is keyed "c:<conversation>" or "u:<user>" and lists the
 * connections (client id, user, device, source) present there. A user is
 * present while at least one of their connections is; many tabs and devices
 * of one user are many entries. Connections that die are removed by the
 * loop's client-gone request, so a crashed tab never lingers.
 *
 * A conversation that does not exist yet may be joined; the first joiner's
 * user then holds a CLAIM on the id until the conversation is created or the
 * last joiner leaves, so another user can neither listen in on it nor create
 * it under someone else's feet.
 *
 * Layout of one set (rooms of 10,000 connections and more must stay cheap:
 * every operation below is O(1) but the listings, which are O(entries listed)):
 *
 *   h->presence["c:room"] ──> set { conns: node <-> node <-> node   (join order, oldest first)
 *                                   by_client: client id (8 raw bytes) -> node
 *                                   users:     user id -> connections of that user (count)
 *                                   n: connections, claim }
 *
 * Policy (which joins and leaves are announced to a room, how much of the
 * list a sync carries) is not decided here: see hub/client.c.
 */
#ifndef CH_HUB_PRESENCE_H
#define CH_HUB_PRESENCE_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

typedef struct ch_hub_s ch_hub_t;

typedef struct {
  uint64_t client_id;
  char user_id[129];
  char device_id[129];
  char source[33];
} ch_presence_entry_t;

/* Add e (copied) at the end of the set `key` (created when missing).
 *   1          added; it is the user's first connection in the set
 *   0          added; the user had other connections there already
 *   CH_EEXIST  this client id is in the set already (nothing changed) */
int ch_presence_add(ch_hub_t *h, const char *key, const ch_presence_entry_t *e);
/* Remove client_id from the set: *found = 1 and *out = its entry when it was
 * there (the set is freed, claim included, when it becomes empty). Returns 1
 * when it was the user's last connection in the set, else 0. */
int ch_presence_remove(ch_hub_t *h, const char *key, uint64_t client_id, ch_presence_entry_t *out, int *found);
/* Append the whole set as a JSON array of {"clientId","userId","deviceId","source"}, oldest first. */
void ch_presence_json(ch_hub_t *h, const char *key, ch_buf_t *out);
/* The same, at most max entries (the oldest); returns how many were listed. */
size_t ch_presence_json_max(ch_hub_t *h, const char *key, size_t max, ch_buf_t *out);
/* Connections present (0 when the set does not exist). */
size_t ch_presence_count(ch_hub_t *h, const char *key);
/* Distinct users among them. */
size_t ch_presence_user_count(ch_hub_t *h, const char *key);
/* Claims on not-yet-existing conversations: NULL when unclaimed. */
const char *ch_presence_claim(ch_hub_t *h, const char *key);
void ch_presence_set_claim(ch_hub_t *h, const char *key, const char *user_id);
void ch_presence_dispose(ch_hub_t *h);

#endif
