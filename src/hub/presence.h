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

/* Add; returns 1 when this is the user's first connection in the set. */
int ch_presence_add(ch_hub_t *h, const char *key, const ch_presence_entry_t *e);
/* Remove; returns 1 when it was the user's last connection (and fills *out). 0 if absent. */
int ch_presence_remove(ch_hub_t *h, const char *key, uint64_t client_id, ch_presence_entry_t *out, int *found);
/* Append the set as a JSON array of {"clientId","userId","deviceId","source"}. */
void ch_presence_json(ch_hub_t *h, const char *key, ch_buf_t *out);
size_t ch_presence_count(ch_hub_t *h, const char *key);
/* Claims on not-yet-existing conversations: NULL when unclaimed. */
const char *ch_presence_claim(ch_hub_t *h, const char *key);
void ch_presence_set_claim(ch_hub_t *h, const char *key, const char *user_id);
void ch_presence_dispose(ch_hub_t *h);

#endif
