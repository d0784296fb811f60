/*
 * client.h — a connected client as the hub sees it, on its loop: identity,
 * subscriptions, and the operations every client profile shares.
 *
 * Profiles (native/unified on /ws, relay, device-sync, ...) are thin
 * adapters: they parse their wire format and call these operations, and they
 * render what comes back through `ops`. There is one hub core.
 *
 * Gap-free join ("subscribe, then catch up, then go live"):
 *
 *   join(conv, since) ─ subscribe to topic "c:<conv>" NOW, state PENDING:
 *                       broadcasts arriving meanwhile are buffered
 *                     ─ hub: ACL, read events after `since` up to lastSeq L, presence add
 *   done ───────────── send the catch-up (seq ≤ L), then buffered broadcasts with seq > L,
 *                       state LIVE; from now on a broadcast with seq ≤ last delivered is dropped
 *
 * An event committed after the hub's read is broadcast after it, and the
 * topic subscription existed before the read, so nothing falls in between;
 * the seq filter removes what both paths carried. Nothing lost, nothing twice.
 *
 * Requests to the hub carry the client's id, never its pointer: when the
 * answer comes back the client is looked up in the loop's registry, and an
 * answer for a client that has gone is dropped.
 *
 * Presence in big rooms (after PubNub's announce/interval modes and
 * Centrifugo's presence/presence_stats): with L = presence_broadcast_limit,
 *
 *   room size N, counting    the room hears                the joiner's sync lists
 *   the one joining/leaving
 *   N <= L (or L = 0)        {"type":"presence",...}       every connection (as always)
 *                            per connection
 *   N >  L                   nothing per connection; one   the oldest min(presence_sync_limit, L),
 *                            "presence_count" notice when  with "presenceCount":N and
 *                            N crosses L (up: truncated    "presenceTruncated":true
 *                            true; back down: false)
 *
 * so a join storm of N clients costs O(min(N, L)^2) presence frames and
 * O(N * min(N, L)) sync bytes instead of O(N^2) of each, while the hub still
 * tracks every connection (count, users' first/last connections, user
 * channel devices). The full list, or just the counts, is there on request:
 * ch_client_presence / ch_client_presence_query.
 */
#ifndef CH_HUB_CLIENT_H
#define CH_HUB_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "agent/agent.h"
#include "auth/auth.h"
#include "core/buf.h"
#include "core/list.h"
#include "hub/bcast.h"
#include "hub/convops.h"
#include "hub/hub.h"
#include "net/conn.h"

typedef struct ch_client_s ch_client_t;
typedef struct ch_csub_s ch_csub_t;

typedef struct ch_client_ops_s {
  /* Send one native JSON document to the client (the profile may translate). */
  void (*send_json)(ch_client_t *cl, const char *json, size_t len);
  /* Deliver a broadcast for sub (already filtered by seq and exclusion). */
  void (*deliver)(ch_client_t *cl, ch_csub_t *sub, ch_bcast_t *b);
  /* The answer to a join: conversation JSON, events JSON array, presence array. */
  void (*joined)(ch_client_t *cl, ch_csub_t *sub, const char *req_id, const char *sync_json, size_t len);
} ch_client_ops_t;

typedef enum { CH_CSUB_PENDING = 0, CH_CSUB_LIVE = 1 } ch_csub_state_t;

struct ch_csub_s {
  ch_topic_sub_t tsub;     /* in the loop's topic table */
  ch_list_t node;          /* in client->subs */
  ch_client_t *client;     /* owner; not owned */
  char *conv_id;           /* owned */
  char topic[140];         /* "c:<conv>" */
  uint64_t last_seq;       /* newest seq delivered */
  int state;               /* ch_csub_state_t */
  ch_bcast_t **buf;        /* owned refs buffered while PENDING */
  size_t nbuf, capbuf;
  void *udata;             /* the profile's */
  ch_agent_stream_mark_t marks[4]; /* agent streams in flight at the join: chunks up to
                                      each index came in the sync and are dropped live */
  size_t nmarks;
};

struct ch_client_s {
  uint64_t id;                   /* = the connection id; unique in the process */
  ch_loop_t *loop;               /* not owned */
  ch_conn_t *c;                  /* not owned */
  const ch_client_ops_t *ops;    /* the profile's renderer */
  void *transport;               /* the profile's (ch_ws_t *, ch_sse_t *) */
  char user_id[129];
  char device_id[129];
  char source[33];
  unsigned scopes;               /* CH_SCOPE_* */
  int authed;
  ch_list_t subs;                /* ch_csub_t */
  uint64_t typing_tokens_ms;     /* typing rate limit: earliest time of the next accepted signal */
  char typing_conv[129];         /* conversation this client is typing in ("" = none) */
  uint64_t typing_at_ms;         /* last typing signal (refresh) for typing_conv */
  struct ch_userchan_s *userchan; /* owned by hub/userchan.c; NULL unless on the user channel */
};

/* Register a client on its loop (id = c->id). */
void ch_client_init(ch_client_t *cl, ch_conn_t *c, const ch_client_ops_t *ops, void *transport);
/* Leave everything (presence cleanup goes to the hub) and unregister. */
void ch_client_dispose(ch_client_t *cl);
ch_client_t *ch_client_find(ch_loop_t *l, uint64_t id);

/* Join a conversation. since: resume point (has_since = 0: none). limit: catch-up
 * size (0 = the whole history up to the hub's cap). epoch: the epoch the client's
 * seq belongs to, or NULL. The answer comes through ops->joined (or an error frame). */
void ch_client_join(ch_client_t *cl, const char *conv, int has_since, uint64_t since, size_t limit,
                    const char *epoch, const char *req_id);
void ch_client_leave(ch_client_t *cl, const char *conv);
ch_csub_t *ch_client_sub(ch_client_t *cl, const char *conv);

/* Send a message: `message` is the message object as the client sent it,
 * parsed and detached from its frame (TAKEN); the hub fills id,
 * conversationId, role, source, timestamp.
 * The ack (native: when req_id is set) or error comes back as a JSON frame. */
struct cJSON;
void ch_client_send_message(ch_client_t *cl, const char *conv, struct cJSON *message,
                            const char *req_id, const char *agent);
/* Cancel an agent stream of a conversation this client may write to. */
void ch_client_cancel_stream(ch_client_t *cl, const char *conv, const char *stream_id, const char *req_id);
/* Store a custom event document (native JSON, borrowed) with the next seq;
 * acked (with req_id) like a message. */
void ch_client_store_event(ch_client_t *cl, const char *conv, const char *event_name, const char *doc,
                           size_t len, const char *req_id);
/* Ephemeral broadcast to a joined conversation (typing, custom events): not stored. */
int ch_client_publish_ephemeral(ch_client_t *cl, const char *conv, const char *type, const char *json,
                                size_t len);

/* Typing: a signal (typing = 1 start/refresh, 0 stop). Relays to the room at
 * most once per typing_gap_ms; a client that stops refreshing is announced as
 * stopped after typing_expire_ms by ch_client_sweep. Returns 0 or CH_EPERM (not joined). */
int ch_client_typing(ch_client_t *cl, const char *conv, int typing);
/* Once a second from the profile's sweep: typing expiry. */
void ch_client_sweep(ch_client_t *cl, uint64_t now_ms);

/* Error frame {"type":"error","id":...,"code":...,"error":"..."} to this client. */
void ch_client_error(ch_client_t *cl, const char *req_id, const char *code, const char *msg);

/* Presence of a conversation on request, from any loop (REST, native): needs
 * the read scope and read access to the conversation (as a join; a conversation
 * that does not exist yet: its claim holder or an admin). Answers once through
 * cb on l, never before returning (hub/convops.h conventions), with
 *   {"conversationId":C,"presenceCount":N,"userCount":U,"presence":[{"clientId",
 *    "userId","deviceId","source"},...][,"presenceTruncated":true]}
 * listing the oldest min(limit, sync_cap) connections (limit 0: counts only,
 * "presence":[] and no presenceTruncated). Errors: "forbidden" (scope, not a
 * member), "not_found" (no such conversation), "store_error". */
void ch_client_presence_query(ch_loop_t *l, const char *user, unsigned scopes, const char *conv, size_t limit,
                              ch_hub_json_cb cb, void *ud);
/* The native request {"type":"presence","conversationId":C[,"limit":N][,"id":R]}:
 * limit (borrowed, may be NULL = the sync cap) must be a number 0..2^53. Answers
 * {"type":"presence_list"[,"id":R],<the query's fields>} or an error frame. */
void ch_client_presence(ch_client_t *cl, const char *conv, const struct cJSON *limit, const char *req_id);

/* Process-wide limits of the hub protocol. */
typedef struct {
  size_t sync_cap;         /* most events a join returns (whole-history joins included) */
  uint64_t typing_gap_ms;  /* minimum interval between relayed typing signals per client */
  uint64_t typing_expire_ms; /* typing without a refresh this long is announced as stopped */
  size_t presence_broadcast_limit; /* rooms with more connections present announce no single
                                      joins/leaves (0: no limit); config presence-broadcast-limit */
  size_t presence_sync_limit;      /* most presence entries a sync lists while its room is over
                                      the broadcast limit; config presence-sync-limit */
} ch_client_settings_t;
extern ch_client_settings_t ch_client_settings;

#endif
