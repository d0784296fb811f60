/*
 * store.h — the durable store: one interface, one back end per folder
 * (store/sqlite/ now; store/pg/ later).
 *
 * Data model
 *
 *   project 1──n conversation 1──n event (seq 1, 2, 3, ... gap-free per conversation)
 *                             1──n member (user, role)
 *
 * Every change to a conversation — a message, an edit, a delete, a
 * reaction, a membership change, a stored custom event — is an EVENT with the
 * conversation's next `seq`. Clients resume from a seq; the conversation's
 * `epoch` changes when its history can no longer be served from an old seq
 * (the conversation was deleted and re-created, the store was reset), so a
 * client holding a seq of another epoch knows to reload.
 *
 * Threading: the interface is SYNCHRONOUS and an instance is used by one
 * thread at a time — in the hub, the hub thread, which turns it into
 * asynchronous operations for the event loops and groups writes into one
 * transaction per batch (begin, many appends, commit). The CLI opens its own
 * instance on the same data directory (SQLite WAL lets both work at once).
 *
 * Ownership: every string in a struct handed OUT by the store is owned by
 * that struct and released with the matching *_dispose() / *_free(). Structs
 * handed IN are borrowed for the call, except where a field says otherwise.
 * Results that the store fills in (seq, id, ...) are written into the
 * caller's struct as owned strings.
 */
#ifndef CH_STORE_STORE_H
#define CH_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

typedef enum {
  CH_EV_MESSAGE = 1,  /* a chat message (role, content, body) */
  CH_EV_EDIT = 2,     /* ref_seq's message content replaced (body: the new message object) */
  CH_EV_DELETE = 3,   /* ref_seq's message deleted */
  CH_EV_REACTION = 4, /* body: {"emoji":..,"op":"add"|"remove"} on ref_seq */
  CH_EV_MEMBER = 5,   /* body: {"userId":..,"op":"add"|"remove","role":..} */
  CH_EV_CUSTOM = 6,   /* a stored custom event: type + body (payload) */
} ch_event_kind_t;

typedef struct ch_event_s {
  char *conversation_id; /* required */
  uint64_t seq;          /* OUT: assigned on append */
  int kind;              /* ch_event_kind_t */
  char *id;              /* server id; IN/OUT: generated (UUID v4) when NULL on append.
                            append() may free() and replace id and body (a generated id,
                            or the stored event's on a duplicate): on append they must be
                            NULL or heap strings owned by the struct */
  char *client_id;       /* idempotency key within the conversation, or NULL */
  char *type;            /* custom event type (CH_EV_CUSTOM), else NULL */
  char *role;            /* message role: user|assistant|system|tool, else NULL */
  char *content;         /* message text (indexed for search), or NULL */
  char *source;          /* desktop|web|iphone|chatgpt|... or NULL */
  char *user_id;         /* author */
  char *device_id;       /* author's device, or NULL */
  char *body;            /* JSON object text sent to clients (the message object as
                            the client sent it, with server-filled fields), or NULL */
  int64_t ts_ms;         /* server time of the append (UTC ms); IN: 0 = now */
  uint64_t ref_seq;      /* target of an edit/delete/reaction, else 0 */
  int duplicate;         /* OUT: 1 when client_id was already there: seq/id/body/ts
                            are the stored event's, nothing was written */
} ch_event_t;

typedef struct ch_conv_s {
  char *id;              /* client-chosen strings allowed ("test-123"); 1..128 bytes */
  char *project_id;      /* or NULL */
  char *title;           /* or NULL */
  char *owner;           /* user id of the creator */
  char *agent;           /* default agent name, or NULL */
  char *metadata;        /* JSON object text, or NULL */
  int64_t created_ms, updated_ms;
  uint64_t last_seq;     /* seq of the newest event (0: none) */
  uint64_t message_count;/* CH_EV_MESSAGE events not deleted */
  char *epoch;           /* changes when old seqs stop being valid */
  char **members;        /* owned array of owned user ids (owner included) */
  size_t nmembers;
} ch_conv_t;

typedef struct ch_project_s {
  char *id, *name, *owner;
  int64_t created_ms;
} ch_project_t;

typedef struct ch_apikey_s {
  char *id;       /* public key id (prefix of the key, safe to log/list) */
  char *hash;     /* hex SHA-256 of the whole key; the key itself is never stored */
  char *user_id;
  char *scopes;   /* "read write admin" subset, space-separated */
  char *label;    /* or NULL */
  int64_t created_ms;
  int revoked;
} ch_apikey_t;

typedef struct ch_conv_query_s {
  const char *user_id;    /* only conversations this user owns or is a member of; NULL = all (admin) */
  const char *project_id; /* only this project; NULL = any */
  const char *search;     /* FTS5 query over message content (matching conversations); NULL or "" =
                             none; a query FTS5 rejects is CH_EINVAL */
  size_t limit;           /* 0 = 100 */
  size_t offset;
} ch_conv_query_t;

typedef struct ch_store_s ch_store_t;

typedef struct ch_store_ops_s {
  const char *name; /* "sqlite" */
  void (*close)(ch_store_t *s);

  /* Transactions group writes: the hub does begin, N writes, commit per batch.
   * Writes outside begin/commit are committed one by one. */
  int (*begin)(ch_store_t *s);
  int (*commit)(ch_store_t *s);    /* durable when it returns 0 */
  int (*rollback)(ch_store_t *s);

  /* Append events (each gets the conversation's next seq). The conversation
   * is created when missing, owned by the first event's user_id. Idempotent
   * on (conversation_id, client_id): see ch_event_t.duplicate.
   * 0 or a CH_E* code (err filled). */
  int (*append)(ch_store_t *s, ch_event_t *ev, ch_buf_t *err);
  /* Events with seq > after, oldest first, at most limit (0 = no limit); with
   * tail = 1 the NEWEST `limit` events after `after`, still oldest first.
   * *out is an owned array of owned events (ch_store_events_free); an unknown
   * conversation has no events (0, *n = 0). */
  int (*events)(ch_store_t *s, const char *conv_id, uint64_t after, size_t limit, int tail,
                ch_event_t **out, size_t *n);
  /* One event by seq. CH_ENOTFOUND. */
  int (*event_get)(ch_store_t *s, const char *conv_id, uint64_t seq, ch_event_t *out);

  int (*conv_get)(ch_store_t *s, const char *id, ch_conv_t *out);            /* CH_ENOTFOUND */
  /* The same conversation as conv_get, BORROWED: *out stays valid until the
   * next call on this store, and must not be changed. The hot path's access
   * check (one per send) uses it: a back end may answer from memory. */
  int (*conv_peek)(ch_store_t *s, const char *id, const ch_conv_t **out);   /* CH_ENOTFOUND */
  /* Create (when missing) or update title/project/agent/metadata (non-NULL fields). */
  int (*conv_put)(ch_store_t *s, const ch_conv_t *c, int *created);
  /* Delete a conversation and all its events; a later one with the same id gets a new epoch. */
  int (*conv_delete)(ch_store_t *s, const char *id);                        /* CH_ENOTFOUND */
  int (*conv_list)(ch_store_t *s, const ch_conv_query_t *q, ch_conv_t **out, size_t *n);
  int (*member_set)(ch_store_t *s, const char *conv_id, const char *user_id, const char *role /* NULL = remove */); /* CH_ENOTFOUND (conversation) */

  int (*project_put)(ch_store_t *s, const ch_project_t *p, int *created);
  int (*project_get)(ch_store_t *s, const char *id, ch_project_t *out);     /* CH_ENOTFOUND */
  int (*project_list)(ch_store_t *s, const char *user_id /* owner; NULL = all */, ch_project_t **out, size_t *n);

  int (*apikey_put)(ch_store_t *s, const ch_apikey_t *k);                   /* CH_EEXIST (id or hash taken) */
  int (*apikey_find)(ch_store_t *s, const char *hash, ch_apikey_t *out);    /* CH_ENOTFOUND (also when revoked) */
  int (*apikey_list)(ch_store_t *s, ch_apikey_t **out, size_t *n);
  int (*apikey_revoke)(ch_store_t *s, const char *id);                      /* CH_ENOTFOUND */

  /* PINs are stored hashed; take = verify and consume (single use). */
  /* CH_EEXIST when a live PIN has the same hash (the caller draws another). */
  int (*pin_put)(ch_store_t *s, const char *pin_hash, const char *user_id, int64_t expires_ms);
  int (*pin_take)(ch_store_t *s, const char *pin_hash, int64_t now_ms, char **user_id); /* CH_ENOTFOUND (absent, used or expired) */

  /* Totals for stats: conversations and messages. */
  int (*counts)(ch_store_t *s, uint64_t *conversations, uint64_t *messages);
} ch_store_ops_t;

struct ch_store_s {
  const ch_store_ops_t *ops;
  char *epoch; /* store-wide epoch (changes when the store is reset); owned */
};

/* Open the back end named by dsn: "sqlite:PATH" or a plain directory (the
 * data directory: PATH/chorus.db). Creates and migrates the schema. */
int ch_store_open(const char *dsn, ch_store_t **out, ch_buf_t *err);
static inline void ch_store_close(ch_store_t *s) {
  if (s) s->ops->close(s);
}

void ch_event_dispose(ch_event_t *ev);
void ch_store_events_free(ch_event_t *evs, size_t n);
void ch_conv_dispose(ch_conv_t *c);
/* A deep copy of src into dst (owned; ch_conv_dispose). */
void ch_conv_copy(ch_conv_t *dst, const ch_conv_t *src);
void ch_store_convs_free(ch_conv_t *cs, size_t n);
void ch_project_dispose(ch_project_t *p);
void ch_apikey_dispose(ch_apikey_t *k);

/* A new random UUID v4 string (37 bytes with NUL) — for ids. */
void ch_uuid4(char out[37]);

#endif
