/*
 * sqlite.c — the SQLite back end of the store (ch_store_ops_t "sqlite").
 *
 * One instance = one sqlite3 connection in multi-thread mode (NOMUTEX): the
 * store is used by one thread at a time (store.h). Settings per connection:
 *
 *   journal_mode=WAL      readers never block the writer, and another process
 *                         (the CLI) can read while the hub writes
 *   synchronous=FULL      the WAL is fsync'ed at every COMMIT, so a commit that
 *                         returned is on disk (NORMAL would only order writes:
 *                         a power cut could lose the last commits)
 *   busy_timeout=5000     a writer waits up to 5 s for another process's write
 *                         transaction instead of failing with SQLITE_BUSY
 *   foreign_keys=ON
 *   cache_size            32 MiB instead of 2: the indexes of a busy store
 *                         (random client ids) stop being re-read from disk
 *   journal_size_limit    64 MiB: a WAL that grew (a long reader held back
 *                         checkpoints) is truncated again afterwards
 *   WAL checkpoints       not inside COMMIT: a thread of their own (checkpoint.c)
 *   VFS "chorus-walbuf"   a commit's WAL frames in one write call (walbuf.c)
 *
 * Writes. Every write runs in a transaction: the caller's (begin ... commit,
 * the hub's batch) or, outside one, a BEGIN IMMEDIATE ... COMMIT of its own.
 * Inside the caller's transaction each multi-statement write is wrapped in a
 * SAVEPOINT, so a write that fails leaves nothing half done in the batch.
 *
 *     op_begin ── in caller tx? ── yes ── SAVEPOINT ch_op ─┐
 *                    │ no                                  │  statements
 *                    └──── BEGIN IMMEDIATE ────────────────┤
 *     op_end(rc) ── rc == 0: RELEASE / COMMIT ─────────────┘
 *                   rc != 0: ROLLBACK TO + RELEASE / ROLLBACK
 *
 * Appending. seq = conversations.last_seq + 1 under the write lock, so seqs
 * are gap-free per conversation whatever the number of processes. Per
 * conversation the instance remembers (in `convs`) its rid and last_seq,
 * which saves a SELECT per append, and inside the caller's batch also the
 * pending last_seq / updated_ms / message_count change, written once per
 * conversation per batch (ch__sq_flush) before COMMIT and before any read
 * of the conversations table. The cache is trusted only while nobody else
 * can have written: PRAGMA data_version is read at the start of every write
 * transaction and the cache is emptied when another connection committed in
 * between; it is also emptied whenever a transaction is rolled back (a
 * failed operation inside a batch rolls back to its savepoint and leaves the
 * cache alone: entries change only after an operation succeeded).
 * Idempotency: the INSERT hitting the (conv_rid, client_id) unique index
 * means a retry; the stored event is returned (duplicate = 1).
 * A CH_EV_DELETE marks its target message deleted (events.deleted), which
 * takes it out of message_count and of the search index. The search index is
 * brought up to date in bulk (schema.c says why not with triggers): before a
 * COMMIT once CH__SQ_FTS_ROWS events wait or CH__SQ_FTS_MS passed since the
 * last time (FTS5 writes a new segment per indexing transaction, which small
 * group commits would pay every few milliseconds), before every search (so a
 * search sees everything committed, whoever wrote it), and at close.
 *
 * Per append in a batch of 1000 this is about 9 us of CPU on the reference
 * VM: the event INSERT with its two indexes ~5 us, FTS ~2 us, the rest
 * (savepoint, id, cache) ~2 us.
 *
 * Statements are prepared once per instance (SQLITE_PREPARE_PERSISTENT) from
 * the CH__SQ_STMTS table; values are always bound, never spliced into SQL.
 * conv_list has eight fixed variants (user / project / search filters),
 * assembled at open from constant fragments.
 *
 * Errors. CH_EINVAL for bad input (NULL or empty ids, ids over 128 bytes, an
 * unknown kind, a ref_seq outside 1..last_seq, an FTS5 query syntax error);
 * CH_ENOTFOUND; CH_EBUSY when the lock wait timed out; CH_EIO for any other
 * database failure. Only append() and open have an err buffer; database
 * failures are also logged (warn) with sqlite3_errmsg so ops without one
 * still leave the reason somewhere. Bound values never reach the log.
 */
#include "store/sqlite/sqlite.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/map.h"
#include "store/sqlite/internal.h"

#define CH__SQ_ID_MAX 128         /* bytes in any id */
#define CH__SQ_BUSY_MS 5000       /* busy_timeout */
#define CH__SQ_WAL_LIMIT "67108864" /* bytes the WAL is truncated to after a checkpoint */
#define CH__SQ_CACHE_KIB "-32768"   /* page cache: 32 MiB (negative = KiB), allocated as used */
#define CH__SQ_CACHE_MAX 65536    /* conversations remembered before the cache is emptied */
#define CH__SQ_LIST_DEFAULT 100   /* conv_list limit 0 */
#define CH__SQ_FTS_ROWS 4096      /* events that make a COMMIT bring the search index up to date */
#define CH__SQ_FTS_MS 1000        /* ... or the time since it was last brought up to date */

/* events columns in ch__sq_row_event order; conv_rid is known to the caller */
#define CH__SQ_EV_COLS \
  "seq, kind, id, client_id, type, role, content, source, user_id, device_id, body, ts_ms, ref_seq"
/* conversations.rid of the conversation named ?1 */
#define CH__SQ_CONV_RID "(SELECT rid FROM conversations WHERE id = ?1)"
#define CH__SQ_CONV_COLS                                                                  \
  "id, project_id, title, owner, agent, metadata, created_ms, updated_ms, last_seq," \
  " message_count, epoch"
#define CH__SQ_PROJECT_COLS "id, name, owner, created_ms"
#define CH__SQ_APIKEY_COLS "id, hash, user_id, scopes, label, created_ms, revoked"

/* Every statement an instance uses: name, SQL. */
#define CH__SQ_STMTS(X)                                                                        \
  X(BEGIN, "BEGIN IMMEDIATE")                                                                  \
  X(BEGIN_READ, "BEGIN")                                                                       \
  X(COMMIT, "COMMIT")                                                                          \
  X(ROLLBACK, "ROLLBACK")                                                                      \
  X(SAVEPOINT, "SAVEPOINT ch_op")                                                              \
  X(RELEASE, "RELEASE ch_op")                                                                  \
  X(ROLLBACK_TO, "ROLLBACK TO ch_op")                                                          \
  X(DATA_VERSION, "PRAGMA data_version")                                                       \
  X(CONV_SEQ, "SELECT rid, last_seq FROM conversations WHERE id = ?1")                         \
  X(EV_BY_CLIENT,                                                                              \
    "SELECT " CH__SQ_EV_COLS " FROM events WHERE conv_rid = ?1 AND client_id = ?2")            \
  X(EV_INSERT,                                                                                 \
    "INSERT INTO events (conv_rid, " CH__SQ_EV_COLS                                            \
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)")                  \
  X(EV_MARK_DELETED,                                                                           \
    "UPDATE events SET deleted = 1"                                                            \
    " WHERE conv_rid = ?1 AND seq = ?2 AND kind = 1 AND deleted = 0")                          \
  X(CONV_BUMP,                                                                                 \
    "UPDATE conversations SET last_seq = ?2, updated_ms = ?3,"                                 \
    " message_count = message_count + ?4 WHERE rid = ?1")                                      \
  X(CONV_INSERT,                                                                               \
    "INSERT INTO conversations (" CH__SQ_CONV_COLS                                             \
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, 0, ?9)")                                     \
  X(CONV_UPDATE,                                                                               \
    "UPDATE conversations SET project_id = coalesce(?2, project_id), title = coalesce(?3, title)," \
    " agent = coalesce(?4, agent), metadata = coalesce(?5, metadata) WHERE id = ?1")           \
  X(CONV_GET, "SELECT " CH__SQ_CONV_COLS " FROM conversations WHERE id = ?1")                  \
  X(CONV_DEL_EVENTS, "DELETE FROM events WHERE conv_rid = " CH__SQ_CONV_RID)                   \
  X(CONV_DEL_MEMBERS, "DELETE FROM members WHERE conversation_id = ?1")                        \
  X(CONV_DEL, "DELETE FROM conversations WHERE id = ?1")                                       \
  X(MEMBER_PUT,                                                                                \
    "INSERT INTO members (conversation_id, user_id, role) VALUES (?1, ?2, ?3)"                 \
    " ON CONFLICT (conversation_id, user_id) DO UPDATE SET role = excluded.role")              \
  X(MEMBER_DEL, "DELETE FROM members WHERE conversation_id = ?1 AND user_id = ?2")             \
  X(MEMBERS_OF,                                                                                \
    "SELECT user_id FROM members WHERE conversation_id = ?1 ORDER BY role <> 'owner', user_id") \
  X(EVENTS_HEAD,                                                                               \
    "SELECT " CH__SQ_EV_COLS " FROM events WHERE conv_rid = " CH__SQ_CONV_RID " AND seq > ?2"  \
    " ORDER BY seq LIMIT ?3")                                                                  \
  X(EVENTS_TAIL,                                                                               \
    "SELECT * FROM (SELECT " CH__SQ_EV_COLS " FROM events WHERE conv_rid = " CH__SQ_CONV_RID   \
    " AND seq > ?2 ORDER BY seq DESC LIMIT ?3) ORDER BY seq")                                  \
  X(EVENT_GET,                                                                                 \
    "SELECT " CH__SQ_EV_COLS " FROM events WHERE conv_rid = " CH__SQ_CONV_RID " AND seq = ?2") \
  X(PROJECT_INSERT,                                                                            \
    "INSERT INTO projects (" CH__SQ_PROJECT_COLS ") VALUES (?1, ?2, ?3, ?4)"                   \
    " ON CONFLICT (id) DO NOTHING")                                                            \
  X(PROJECT_UPDATE, "UPDATE projects SET name = coalesce(?2, name) WHERE id = ?1")             \
  X(PROJECT_GET, "SELECT " CH__SQ_PROJECT_COLS " FROM projects WHERE id = ?1")                 \
  X(PROJECT_LIST, "SELECT " CH__SQ_PROJECT_COLS " FROM projects ORDER BY created_ms, id")      \
  X(PROJECT_LIST_USER,                                                                         \
    "SELECT " CH__SQ_PROJECT_COLS " FROM projects WHERE owner = ?1 ORDER BY created_ms, id")   \
  X(APIKEY_INSERT,                                                                             \
    "INSERT INTO api_keys (" CH__SQ_APIKEY_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")       \
  X(APIKEY_FIND, "SELECT " CH__SQ_APIKEY_COLS " FROM api_keys WHERE hash = ?1 AND revoked = 0") \
  X(APIKEY_LIST, "SELECT " CH__SQ_APIKEY_COLS " FROM api_keys ORDER BY created_ms, id")        \
  X(APIKEY_REVOKE, "UPDATE api_keys SET revoked = 1 WHERE id = ?1")                            \
  X(PIN_PURGE, "DELETE FROM pins WHERE expires_ms <= ?1")                                      \
  X(PIN_PUT,                                                                                   \
    "INSERT INTO pins (pin_hash, user_id, expires_ms) VALUES (?1, ?2, ?3)"                     \
    " ON CONFLICT (pin_hash) DO NOTHING")                                                      \
  X(PIN_TAKE, "DELETE FROM pins WHERE pin_hash = ?1 RETURNING user_id, expires_ms")            \
  X(COUNTS, "SELECT count(*), coalesce(sum(message_count), 0) FROM conversations")             \
  X(META_EPOCH, "SELECT value FROM meta WHERE key = 'epoch'")                                  \
  X(FTS_CATCHUP,                                                                               \
    "INSERT INTO events_fts (rowid, content) SELECT rid, content FROM events"                  \
    " WHERE rid > (SELECT value FROM meta WHERE key = 'fts_rid')"                              \
    " AND content IS NOT NULL AND deleted = 0")                                                \
  X(FTS_PENDING,                                                                               \
    "SELECT (SELECT coalesce(max(rid), 0) FROM events)"                                        \
    " > (SELECT value FROM meta WHERE key = 'fts_rid')")                                       \
  X(FTS_MARK,                                                                                  \
    "UPDATE meta SET value = max(value, (SELECT coalesce(max(rid), 0) FROM events))"           \
    " WHERE key = 'fts_rid'")                                                                  \
  X(FTS_LOWER,                                                                                 \
    "UPDATE meta SET value = min(value, (SELECT coalesce(max(rid), 0) FROM events))"           \
    " WHERE key = 'fts_rid'")                                                                  \
  X(FTS_DEL_ONE,                                                                               \
    "INSERT INTO events_fts (events_fts, rowid, content) SELECT 'delete', rid, content"        \
    " FROM events WHERE conv_rid = ?1 AND seq = ?2 AND content IS NOT NULL"                    \
    " AND rid <= (SELECT value FROM meta WHERE key = 'fts_rid')")                              \
  X(FTS_DEL_CONV,                                                                              \
    "INSERT INTO events_fts (events_fts, rowid, content) SELECT 'delete', rid, content"        \
    " FROM events WHERE conv_rid = " CH__SQ_CONV_RID " AND content IS NOT NULL AND deleted = 0" \
    " AND rid <= (SELECT value FROM meta WHERE key = 'fts_rid')")

enum {
#define CH__SQ_ENUM(name, sql) CH__SQ_##name,
  CH__SQ_STMTS(CH__SQ_ENUM)
#undef CH__SQ_ENUM
  CH__SQ_NSTMTS
};

static const char *const ch__sq_sql[CH__SQ_NSTMTS] = {
#define CH__SQ_TEXT(name, sql) sql,
    CH__SQ_STMTS(CH__SQ_TEXT)
#undef CH__SQ_TEXT
};

/* conv_list variants: bit 0 user filter (?1), bit 1 project (?2), bit 2 search (?3). */
#define CH__SQ_LIST_USER 1
#define CH__SQ_LIST_PROJECT 2
#define CH__SQ_LIST_SEARCH 4
static const char *const ch__sq_list_filters[3] = {
    " AND (owner = ?1 OR id IN (SELECT conversation_id FROM members WHERE user_id = ?1))",
    " AND project_id = ?2",
    (" AND rid IN (SELECT e.conv_rid FROM events e WHERE e.rid IN"
     " (SELECT rowid FROM events_fts WHERE events_fts MATCH ?3))"),
};

/* What the instance remembers about a conversation it appended to. Inside the
 * caller's transaction the conversations row is not updated per append: the
 * new last_seq, updated_ms and message_count delta wait here (dirty) and are
 * written once per conversation by ch__sq_flush, before COMMIT and before
 * anything reads the row. Outside a transaction nothing is ever dirty. */
typedef struct {
  char *id;           /* owned copy of the conversation id */
  int64_t rid;        /* conversations.rid */
  uint64_t last_seq;  /* newest seq, written or pending */
  int64_t updated_ms; /* pending conversations.updated_ms (dirty only) */
  int64_t msg_delta;  /* pending change of message_count (dirty only) */
  int dirty;          /* on s->dirty, row not yet updated */
  int have_conv;      /* conv below is the row (members included), kept current by append */
  ch_conv_t conv;     /* owned: what conv_peek hands out; last_seq/updated/count follow appends */
} ch__sq_conv_t;

typedef struct {
  ch_store_t super;            /* first: ch_store_t * casts to this */
  sqlite3 *db;                 /* owned */
  sqlite3_stmt *st[CH__SQ_NSTMTS]; /* owned, prepared at open */
  sqlite3_stmt *list[8];       /* owned: conv_list variants */
  int in_tx;                   /* inside the caller's begin ... commit */
  int fts_dirty;               /* events appended since the search index was caught up */
  size_t fts_pending;          /* how many */
  int64_t fts_synced_ms;       /* when it was last caught up (wall ms) */
  int64_t data_version;        /* PRAGMA data_version when the cache was last known valid */
  ch_map_t convs;              /* conversation id -> owned ch__sq_conv_t (cache) */
  ch__sq_conv_t **dirty;       /* owned array of borrowed entries awaiting ch__sq_flush */
  size_t ndirty, capdirty;
  ch_conv_t peeked;            /* owned: conv_peek's answer when the cache cannot hold it */
  ch__sq_ckpt_t *ckpt;         /* owned: the WAL checkpointer (checkpoint.c), or NULL */
  int _no_cache;               /* tests and benchmarks: no cache, no deferred updates */
} ch__sq_t;

/* ------------------------------------------------------------- helpers */

static int ch__sq_id_ok(const char *s) { return s && *s && strnlen(s, CH__SQ_ID_MAX + 1) <= CH__SQ_ID_MAX; }
static int ch__sq_opt_id_ok(const char *s) { return !s || ch__sq_id_ok(s); }

/* Map an SQLite failure to a CH_E* code; the message goes to err (if any) and the log. */
static int ch__sq_fail(ch__sq_t *s, int rc, const char *what, ch_buf_t *err) {
  const char *msg = sqlite3_errmsg(s->db);
  if (err) ch_buf_printf(err, "store: %s: %s", what, msg);
  ch_log_warn("store(sqlite): %s: %s", what, msg);
  return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED ? CH_EBUSY : CH_EIO;
}

static void ch__sq_bind_text(sqlite3_stmt *st, int i, const char *v) {
  /* A NULL pointer binds SQL NULL. Values are borrowed for the statement's run. */
  sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
}

static void ch__sq_bind_u64(sqlite3_stmt *st, int i, uint64_t v) {
  sqlite3_bind_int64(st, i, v > (uint64_t)INT64_MAX ? INT64_MAX : (sqlite3_int64)v);
}

/* An owned copy of a text column, or NULL for SQL NULL. */
static char *ch__sq_col_str(sqlite3_stmt *st, int i) {
  if (sqlite3_column_type(st, i) == SQLITE_NULL) return NULL;
  const unsigned char *p = sqlite3_column_text(st, i);
  int n = sqlite3_column_bytes(st, i);
  if (!p) return ch_xstrdup(""); /* only on OOM inside SQLite; keep the field non-NULL */
  return ch_xmemdup(p, (size_t)n);
}

/* Step a statement without result rows; reset it. SQLite rc (SQLITE_DONE on success). */
static int ch__sq_run(ch__sq_t *s, int id) {
  sqlite3_stmt *st = s->st[id];
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) rc = SQLITE_DONE; /* statements run for effect only */
  sqlite3_reset(st);
  return rc;
}

/* Forget every remembered conversation, pending updates included: only when
 * the transaction that would have written them is gone (or none is open). */
static void ch__sq_cache_clear(ch__sq_t *s) {
  const char *k;
  size_t kl;
  void *v;
  for (size_t i = 0; ch_map_next(&s->convs, &i, &k, &kl, &v);) {
    free(((ch__sq_conv_t *)v)->id);
    ch_conv_dispose(&((ch__sq_conv_t *)v)->conv);
    free(v);
  }
  ch_map_dispose(&s->convs);
  ch_map_init(&s->convs);
  s->ndirty = 0;
}

static ch__sq_conv_t *ch__sq_cache_get(ch__sq_t *s, const char *conv) {
  return s->_no_cache ? NULL : ch_map_get(&s->convs, conv, strlen(conv));
}

/* The entry for conv, created with last_seq when missing; NULL when the cache
 * is off or full (a full cache is emptied at the next transaction start). */
static ch__sq_conv_t *ch__sq_cache_put(ch__sq_t *s, const char *conv, int64_t rid, uint64_t last_seq) {
  if (s->_no_cache) return NULL;
  size_t kl = strlen(conv);
  ch__sq_conv_t *e = ch_map_get(&s->convs, conv, kl);
  if (!e) {
    if (s->convs.count >= CH__SQ_CACHE_MAX) return NULL;
    e = CH_NEW(ch__sq_conv_t);
    e->id = ch_xstrdup(conv);
    ch_map_put(&s->convs, conv, kl, e);
  }
  e->rid = rid;
  e->last_seq = last_seq;
  return e;
}

/* Drop conv's entry; its pending update must have been flushed or be moot. */
static void ch__sq_cache_del(ch__sq_t *s, const char *conv) {
  ch__sq_conv_t *e = ch_map_del(&s->convs, conv, strlen(conv));
  if (!e) return;
  for (size_t i = 0; e->dirty && i < s->ndirty; i++)
    if (s->dirty[i] == e) s->dirty[i] = s->dirty[--s->ndirty];
  free(e->id);
  ch_conv_dispose(&e->conv);
  free(e);
}

/* conv's row changed (title, agent, members...): its snapshot is stale. */
static void ch__sq_cache_forget_row(ch__sq_t *s, const char *conv) {
  ch__sq_conv_t *e = ch__sq_cache_get(s, conv);
  if (e && e->have_conv) {
    ch_conv_dispose(&e->conv);
    e->have_conv = 0;
  }
}

/* Write the pending conversation updates (inside the caller's transaction). */
static int ch__sq_flush(ch__sq_t *s, ch_buf_t *err) {
  sqlite3_stmt *st = s->st[CH__SQ_CONV_BUMP];
  while (s->ndirty) {
    ch__sq_conv_t *e = s->dirty[s->ndirty - 1];
    sqlite3_bind_int64(st, 1, e->rid);
    ch__sq_bind_u64(st, 2, e->last_seq);
    sqlite3_bind_int64(st, 3, e->updated_ms);
    sqlite3_bind_int64(st, 4, e->msg_delta);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return ch__sq_fail(s, rc, "updating conversations", err);
    e->dirty = 0;
    e->msg_delta = 0;
    s->ndirty--;
  }
  return 0;
}

/* Reads of the conversations table inside the caller's transaction see the pending updates. */
static int ch__sq_flush_for_read(ch__sq_t *s) { return s->ndirty ? ch__sq_flush(s, NULL) : 0; }

/* Under a fresh write lock: forget cached seqs if another connection committed since. */
static int ch__sq_check_version(ch__sq_t *s, ch_buf_t *err) {
  sqlite3_stmt *st = s->st[CH__SQ_DATA_VERSION];
  int rc = sqlite3_step(st);
  if (rc != SQLITE_ROW) {
    rc = ch__sq_fail(s, rc, "reading data_version", err);
    sqlite3_reset(st);
    return rc;
  }
  int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_reset(st);
  if (v != s->data_version || s->convs.count >= CH__SQ_CACHE_MAX) {
    ch__sq_cache_clear(s);
    s->data_version = v;
  }
  return 0;
}

/* The caller's transaction died under it (SQLite rolls back by itself on some errors). */
static int ch__sq_tx_lost(ch__sq_t *s) { return s->in_tx && sqlite3_get_autocommit(s->db); }

/* Before a COMMIT: index the events appended since meta.fts_rid (schema.c). */
static int ch__sq_fts_sync(ch__sq_t *s, ch_buf_t *err) {
  int rc = ch__sq_run(s, CH__SQ_FTS_CATCHUP);
  if (rc == SQLITE_DONE) rc = ch__sq_run(s, CH__SQ_FTS_MARK);
  if (rc != SQLITE_DONE) return ch__sq_fail(s, rc, "updating the search index", err);
  s->fts_dirty = 0;
  s->fts_pending = 0;
  s->fts_synced_ms = ch_clock_wall_ms();
  return 0;
}

static int ch__sq_op_begin(ch__sq_t *s, ch_buf_t *err);
static int ch__sq_op_end(ch__sq_t *s, int rc, ch_buf_t *err);

/* Index whatever is not yet indexed, also events other connections appended
 * (in the caller's transaction, else in one of its own). */
static int ch__sq_fts_catch_up(ch__sq_t *s) {
  int ret;
  if (!s->fts_dirty) { /* maybe another connection's events: a read tells, and costs no write */
    sqlite3_stmt *st = s->st[CH__SQ_FTS_PENDING];
    int rc = sqlite3_step(st), pending = rc == SQLITE_ROW && sqlite3_column_int(st, 0);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW) return ch__sq_fail(s, rc, "reading the search index mark", NULL);
    if (!pending) return 0;
  }
  if (s->in_tx) return ch__sq_fts_sync(s, NULL);
  if ((ret = ch__sq_op_begin(s, NULL)) != 0) return ret;
  return ch__sq_op_end(s, ch__sq_fts_sync(s, NULL), NULL);
}

/* Start one write operation (see the diagram above). */
static int ch__sq_op_begin(ch__sq_t *s, ch_buf_t *err) {
  int rc;
  if (s->in_tx) {
    if (ch__sq_tx_lost(s)) {
      if (err) ch_buf_printf(err, "store: the transaction was rolled back by an earlier error");
      return CH_EIO;
    }
    rc = ch__sq_run(s, CH__SQ_SAVEPOINT);
    return rc == SQLITE_DONE ? 0 : ch__sq_fail(s, rc, "savepoint", err);
  }
  rc = ch__sq_run(s, CH__SQ_BEGIN);
  if (rc != SQLITE_DONE) return ch__sq_fail(s, rc, "begin", err);
  rc = ch__sq_check_version(s, err);
  if (rc != 0) ch__sq_run(s, CH__SQ_ROLLBACK);
  return rc;
}

/* Finish the operation started by ch__sq_op_begin: keep it when rc == 0, undo it otherwise.
 * Returns rc, or the failure of the commit. */
static int ch__sq_op_end(ch__sq_t *s, int rc, ch_buf_t *err) {
  int r;
  if (rc == 0 && !s->in_tx && s->fts_dirty) rc = ch__sq_fts_sync(s, err);
  if (rc == 0) {
    r = ch__sq_run(s, s->in_tx ? CH__SQ_RELEASE : CH__SQ_COMMIT);
    if (r == SQLITE_DONE) return 0;
    rc = ch__sq_fail(s, r, s->in_tx ? "release" : "commit", err);
  }
  if (s->in_tx) {
    /* Undo this operation only; what the cache holds for the batch stays true
     * (entries change only after an operation succeeded) unless SQLite
     * dropped the whole transaction. */
    if (!sqlite3_get_autocommit(s->db)) {
      ch__sq_run(s, CH__SQ_ROLLBACK_TO);
      ch__sq_run(s, CH__SQ_RELEASE);
    }
    if (sqlite3_get_autocommit(s->db)) ch__sq_cache_clear(s);
  } else {
    if (!sqlite3_get_autocommit(s->db)) ch__sq_run(s, CH__SQ_ROLLBACK);
    ch__sq_cache_clear(s);
  }
  return rc;
}

/* Multi-statement reads see one snapshot: a read transaction unless inside the caller's. */
static int ch__sq_read_begin(ch__sq_t *s, int *own) {
  *own = 0;
  if (s->in_tx) return 0;
  int rc = ch__sq_run(s, CH__SQ_BEGIN_READ);
  if (rc != SQLITE_DONE) return ch__sq_fail(s, rc, "begin", NULL);
  *own = 1;
  return 0;
}

static void ch__sq_read_end(ch__sq_t *s, int own) {
  if (own && !sqlite3_get_autocommit(s->db)) ch__sq_run(s, CH__SQ_COMMIT);
}

/* ------------------------------------------------------ row -> struct */

/* A CH__SQ_EV_COLS row of conversation conv (borrowed; copied). */
static void ch__sq_row_event(sqlite3_stmt *st, const char *conv, ch_event_t *ev) {
  ev->conversation_id = ch_xstrdup(conv);
  ev->seq = (uint64_t)sqlite3_column_int64(st, 0);
  ev->kind = sqlite3_column_int(st, 1);
  ev->id = ch__sq_col_str(st, 2);
  ev->client_id = ch__sq_col_str(st, 3);
  ev->type = ch__sq_col_str(st, 4);
  ev->role = ch__sq_col_str(st, 5);
  ev->content = ch__sq_col_str(st, 6);
  ev->source = ch__sq_col_str(st, 7);
  ev->user_id = ch__sq_col_str(st, 8);
  ev->device_id = ch__sq_col_str(st, 9);
  ev->body = ch__sq_col_str(st, 10);
  ev->ts_ms = sqlite3_column_int64(st, 11);
  ev->ref_seq = (uint64_t)sqlite3_column_int64(st, 12);
  ev->duplicate = 0;
}

static void ch__sq_row_conv(sqlite3_stmt *st, ch_conv_t *c) {
  memset(c, 0, sizeof(*c));
  c->id = ch__sq_col_str(st, 0);
  c->project_id = ch__sq_col_str(st, 1);
  c->title = ch__sq_col_str(st, 2);
  c->owner = ch__sq_col_str(st, 3);
  c->agent = ch__sq_col_str(st, 4);
  c->metadata = ch__sq_col_str(st, 5);
  c->created_ms = sqlite3_column_int64(st, 6);
  c->updated_ms = sqlite3_column_int64(st, 7);
  c->last_seq = (uint64_t)sqlite3_column_int64(st, 8);
  c->message_count = (uint64_t)sqlite3_column_int64(st, 9);
  c->epoch = ch__sq_col_str(st, 10);
}

static void ch__sq_row_project(sqlite3_stmt *st, ch_project_t *p) {
  p->id = ch__sq_col_str(st, 0);
  p->name = ch__sq_col_str(st, 1);
  p->owner = ch__sq_col_str(st, 2);
  p->created_ms = sqlite3_column_int64(st, 3);
}

static void ch__sq_row_apikey(sqlite3_stmt *st, ch_apikey_t *k) {
  k->id = ch__sq_col_str(st, 0);
  k->hash = ch__sq_col_str(st, 1);
  k->user_id = ch__sq_col_str(st, 2);
  k->scopes = ch__sq_col_str(st, 3);
  k->label = ch__sq_col_str(st, 4);
  k->created_ms = sqlite3_column_int64(st, 5);
  k->revoked = sqlite3_column_int(st, 6) != 0;
}

/* c->members from the members table. 0 or CH_E*. */
static int ch__sq_fill_members(ch__sq_t *s, ch_conv_t *c) {
  sqlite3_stmt *st = s->st[CH__SQ_MEMBERS_OF];
  size_t cap = 0;
  int rc;
  ch__sq_bind_text(st, 1, c->id);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (c->nmembers == cap) {
      cap = cap ? cap * 2 : 4;
      c->members = ch_xrealloc(c->members, cap * sizeof(*c->members));
    }
    c->members[c->nmembers++] = ch__sq_col_str(st, 0);
  }
  int ret = rc == SQLITE_DONE ? 0 : ch__sq_fail(s, rc, "reading members", NULL);
  sqlite3_reset(st);
  return ret;
}

/* ------------------------------------------------------- transactions */

static int ch__sq_begin(ch_store_t *store) {
  ch__sq_t *s = (ch__sq_t *)store;
  if (s->in_tx) return CH_EINVAL;
  int rc = ch__sq_run(s, CH__SQ_BEGIN);
  if (rc != SQLITE_DONE) return ch__sq_fail(s, rc, "begin", NULL);
  rc = ch__sq_check_version(s, NULL);
  if (rc != 0) {
    ch__sq_run(s, CH__SQ_ROLLBACK);
    return rc;
  }
  s->in_tx = 1;
  return 0;
}

static int ch__sq_commit(ch_store_t *store) {
  ch__sq_t *s = (ch__sq_t *)store;
  int ret = 0;
  if (!s->in_tx) return CH_EINVAL;
  s->in_tx = 0;
  if (sqlite3_get_autocommit(s->db)) {
    ch_log_warn("store(sqlite): commit: the transaction was rolled back by an earlier error");
    ch__sq_cache_clear(s);
    return CH_EIO;
  }
  int fts = s->fts_dirty && (s->fts_pending >= CH__SQ_FTS_ROWS ||
                             ch_clock_wall_ms() - s->fts_synced_ms >= CH__SQ_FTS_MS);
  if ((ret = ch__sq_flush(s, NULL)) != 0 || (fts && (ret = ch__sq_fts_sync(s, NULL)) != 0)) {
    ch__sq_run(s, CH__SQ_ROLLBACK);
    ch__sq_cache_clear(s);
    return ret;
  }
  int rc = ch__sq_run(s, CH__SQ_COMMIT);
  if (rc != SQLITE_DONE) {
    ret = ch__sq_fail(s, rc, "commit", NULL);
    if (!sqlite3_get_autocommit(s->db)) ch__sq_run(s, CH__SQ_ROLLBACK);
    ch__sq_cache_clear(s);
  }
  return ret;
}

static int ch__sq_rollback(ch_store_t *store) {
  ch__sq_t *s = (ch__sq_t *)store;
  if (!s->in_tx) return CH_EINVAL;
  s->in_tx = 0;
  s->fts_dirty = 0; /* what is left pending is caught up by the next sync (rid > fts_rid) */
  s->fts_pending = 0;
  ch__sq_cache_clear(s);
  if (sqlite3_get_autocommit(s->db)) return 0; /* already rolled back by SQLite */
  int rc = ch__sq_run(s, CH__SQ_ROLLBACK);
  return rc == SQLITE_DONE ? 0 : ch__sq_fail(s, rc, "rollback", NULL);
}

/* ------------------------------------------------------------- events */

/* Inside the operation's transaction: the conversation's rid and last_seq;
 * *rid = 0 when it does not exist. */
static int ch__sq_last_seq(ch__sq_t *s, const char *conv, int64_t *rid, uint64_t *last_seq,
                           ch_buf_t *err) {
  ch__sq_conv_t *e = ch__sq_cache_get(s, conv);
  if (e) {
    *rid = e->rid;
    *last_seq = e->last_seq;
    return 0;
  }
  sqlite3_stmt *st = s->st[CH__SQ_CONV_SEQ];
  int ret = 0;
  ch__sq_bind_text(st, 1, conv);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *rid = sqlite3_column_int64(st, 0);
    *last_seq = (uint64_t)sqlite3_column_int64(st, 1);
  } else if (rc == SQLITE_DONE) {
    *rid = 0;
    *last_seq = 0;
  } else {
    ret = ch__sq_fail(s, rc, "reading the conversation", err);
  }
  sqlite3_reset(st);
  return ret;
}

/* Inside the operation's transaction: a new conversation row (*rid), its owner as member. */
static int ch__sq_conv_create(ch__sq_t *s, const ch_conv_t *c, int64_t now, int64_t *rid,
                              ch_buf_t *err) {
  sqlite3_stmt *st = s->st[CH__SQ_CONV_INSERT];
  char epoch[37];
  int64_t created = c->created_ms ? c->created_ms : now;
  int rc;

  ch_uuid4(epoch);
  ch__sq_bind_text(st, 1, c->id);
  ch__sq_bind_text(st, 2, c->project_id);
  ch__sq_bind_text(st, 3, c->title);
  ch__sq_bind_text(st, 4, c->owner);
  ch__sq_bind_text(st, 5, c->agent);
  ch__sq_bind_text(st, 6, c->metadata);
  sqlite3_bind_int64(st, 7, created);
  sqlite3_bind_int64(st, 8, c->updated_ms ? c->updated_ms : created);
  ch__sq_bind_text(st, 9, epoch);
  rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return ch__sq_fail(s, rc, "creating the conversation", err);
  *rid = sqlite3_last_insert_rowid(s->db);
  st = s->st[CH__SQ_MEMBER_PUT];
  ch__sq_bind_text(st, 1, c->id);
  ch__sq_bind_text(st, 2, c->owner);
  ch__sq_bind_text(st, 3, "owner");
  rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return ch__sq_fail(s, rc, "adding the owner", err);
  return 0;
}

/* Replace a struct-owned string (see ch_event_t.id/body in store.h). */
static void ch__sq_replace(char **field, char *value) {
  free(*field);
  *field = value;
}

/* The INSERT of ev hit a UNIQUE constraint: fill ev from the stored event with
 * its client_id (duplicate = 1). CH_EIO when there is none (then the clash was
 * on seq, which means the conversation changed under us). */
static int ch__sq_duplicate(ch__sq_t *s, int64_t rid, ch_event_t *ev, ch_buf_t *err) {
  sqlite3_stmt *st = s->st[CH__SQ_EV_BY_CLIENT];
  int ret = 0;
  sqlite3_bind_int64(st, 1, rid);
  ch__sq_bind_text(st, 2, ev->client_id);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    ev->seq = (uint64_t)sqlite3_column_int64(st, 0);
    ch__sq_replace(&ev->id, ch__sq_col_str(st, 2));
    ch__sq_replace(&ev->body, ch__sq_col_str(st, 10));
    ev->ts_ms = sqlite3_column_int64(st, 11);
    ev->duplicate = 1;
  } else if (rc == SQLITE_DONE) {
    if (err) ch_buf_printf(err, "store: append: seq clash in conversation (concurrent writer?)");
    ch_log_warn("store(sqlite): append: seq clash in a conversation");
    ret = CH_EIO;
  } else {
    ret = ch__sq_fail(s, rc, "looking up client_id", err);
  }
  sqlite3_reset(st);
  return ret;
}

/* After a successful deferred append: remember what the row must get at flush. */
static void ch__sq_pend(ch__sq_t *s, ch__sq_conv_t *e, int64_t ts, int64_t delta) {
  e->updated_ms = ts;
  e->msg_delta += delta;
  if (e->dirty) return;
  if (s->ndirty == s->capdirty) {
    s->capdirty = s->capdirty ? s->capdirty * 2 : 64;
    s->dirty = ch_xrealloc(s->dirty, s->capdirty * sizeof(*s->dirty));
  }
  s->dirty[s->ndirty++] = e;
  e->dirty = 1;
}

static int ch__sq_append(ch_store_t *store, ch_event_t *ev, ch_buf_t *err) {
  ch__sq_t *s = (ch__sq_t *)store;
  sqlite3_stmt *st;
  uint64_t last_seq = 0, seq = 0;
  int64_t rid = 0, ts, delta = 0;
  int rc, ret = 0, dup = 0, defer = 0, existed, light = 0;
  char idbuf[37];
  const char *id;

  if (!ev || !ch__sq_id_ok(ev->conversation_id) || !ch__sq_id_ok(ev->user_id) ||
      !ch__sq_opt_id_ok(ev->client_id) || !ch__sq_opt_id_ok(ev->id) ||
      !ch__sq_opt_id_ok(ev->device_id) || ev->kind < CH_EV_MESSAGE || ev->kind > CH_EV_CUSTOM) {
    if (err) ch_buf_printf(err, "store: append: missing or invalid conversation_id, user_id, id or kind");
    return CH_EINVAL;
  }
  ts = ev->ts_ms ? ev->ts_ms : ch_clock_wall_ms();
  if (s->in_tx && !ch__sq_tx_lost(s)) {
    /* In the caller's batch the common append — one INSERT into a conversation
     * that exists, its row update deferred — needs no savepoint: a statement
     * that fails undoes itself. Anything more takes one. */
    if ((ret = ch__sq_last_seq(s, ev->conversation_id, &rid, &last_seq, err)) != 0) return ret;
    light = rid != 0 && ev->kind != CH_EV_DELETE && !s->_no_cache &&
            (ch__sq_cache_get(s, ev->conversation_id) || s->convs.count < CH__SQ_CACHE_MAX);
    if (!light && (ret = ch__sq_op_begin(s, err)) != 0) return ret;
  } else {
    if ((ret = ch__sq_op_begin(s, err)) != 0) return ret;
    if ((ret = ch__sq_last_seq(s, ev->conversation_id, &rid, &last_seq, err)) != 0) goto Exit;
  }
  existed = rid != 0;

  if (ev->kind == CH_EV_EDIT || ev->kind == CH_EV_DELETE || ev->kind == CH_EV_REACTION) {
    if (ev->ref_seq == 0 || ev->ref_seq > last_seq) {
      if (err) ch_buf_printf(err, "store: append: ref_seq %llu is not an event of the conversation",
                             (unsigned long long)ev->ref_seq);
      ret = CH_EINVAL;
      goto Exit;
    }
  }

  if (!existed) {
    ch_conv_t c = {0};
    c.id = ev->conversation_id;
    c.owner = ev->user_id;
    c.created_ms = ts;
    if ((ret = ch__sq_conv_create(s, &c, ts, &rid, err)) != 0) goto Exit;
  }

  seq = last_seq + 1;
  id = ev->id;
  if (!id) {
    ch_uuid4(idbuf);
    id = idbuf;
  }
  st = s->st[CH__SQ_EV_INSERT];
  sqlite3_bind_int64(st, 1, rid);
  ch__sq_bind_u64(st, 2, seq);
  sqlite3_bind_int(st, 3, ev->kind);
  ch__sq_bind_text(st, 4, id);
  ch__sq_bind_text(st, 5, ev->client_id);
  ch__sq_bind_text(st, 6, ev->type);
  ch__sq_bind_text(st, 7, ev->role);
  ch__sq_bind_text(st, 8, ev->content);
  ch__sq_bind_text(st, 9, ev->source);
  ch__sq_bind_text(st, 10, ev->user_id);
  ch__sq_bind_text(st, 11, ev->device_id);
  ch__sq_bind_text(st, 12, ev->body);
  sqlite3_bind_int64(st, 13, ts);
  ch__sq_bind_u64(st, 14, ev->ref_seq);
  rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc == SQLITE_CONSTRAINT_UNIQUE && existed && ev->client_id) {
    /* Most likely the client_id is taken: a retry. (Checking first would cost a
     * lookup on every append; the failed INSERT has written nothing.) */
    ret = ch__sq_duplicate(s, rid, ev, err);
    dup = ret == 0;
    goto Exit;
  }
  if (rc != SQLITE_DONE) {
    ret = ch__sq_fail(s, rc, "inserting the event", err);
    goto Exit;
  }
  s->fts_dirty = 1;
  s->fts_pending++;

  if (ev->kind == CH_EV_MESSAGE) delta = 1;
  if (ev->kind == CH_EV_DELETE) {
    st = s->st[CH__SQ_EV_MARK_DELETED];
    sqlite3_bind_int64(st, 1, rid);
    ch__sq_bind_u64(st, 2, ev->ref_seq);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
      ret = ch__sq_fail(s, rc, "marking the message deleted", err);
      goto Exit;
    }
    if (sqlite3_changes(s->db) == 1) {
      delta = -1; /* it was a live message: it leaves the count and, if indexed, the index */
      st = s->st[CH__SQ_FTS_DEL_ONE];
      sqlite3_bind_int64(st, 1, rid);
      ch__sq_bind_u64(st, 2, ev->ref_seq);
      rc = sqlite3_step(st);
      sqlite3_reset(st);
      if (rc != SQLITE_DONE) {
        ret = ch__sq_fail(s, rc, "unindexing the message", err);
        goto Exit;
      }
    }
  }

  /* In the caller's batch the conversations row is updated once, at flush;
   * otherwise (or when the cache cannot take the conversation) right now. */
  defer = s->in_tx && !s->_no_cache &&
          (ch__sq_cache_get(s, ev->conversation_id) || s->convs.count < CH__SQ_CACHE_MAX);
  if (!defer) {
    st = s->st[CH__SQ_CONV_BUMP];
    sqlite3_bind_int64(st, 1, rid);
    ch__sq_bind_u64(st, 2, seq);
    sqlite3_bind_int64(st, 3, ts);
    sqlite3_bind_int64(st, 4, delta);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
      ret = ch__sq_fail(s, rc, "updating the conversation", err);
      goto Exit;
    }
  }

Exit:
  if (!light) ret = ch__sq_op_end(s, ret, err);
  else if (ret != 0 && sqlite3_get_autocommit(s->db)) ch__sq_cache_clear(s); /* SQLite dropped the batch */
  if (ret == 0 && !dup) {
    ev->seq = seq;
    ev->ts_ms = ts;
    ev->duplicate = 0;
    if (!ev->id) ev->id = ch_xstrdup(idbuf);
    ch__sq_conv_t *e = ch__sq_cache_put(s, ev->conversation_id, rid, seq);
    if (defer && e) ch__sq_pend(s, e, ts, delta);
    if (e && e->have_conv) {
      e->conv.last_seq = seq;
      e->conv.updated_ms = ts;
      e->conv.message_count = (uint64_t)((int64_t)e->conv.message_count + delta);
    }
  } else if (ret == 0 && dup) {
    ch__sq_cache_put(s, ev->conversation_id, rid, last_seq);
  }
  return ret;
}

static int ch__sq_events(ch_store_t *store, const char *conv_id, uint64_t after, size_t limit,
                         int tail, ch_event_t **out, size_t *n) {
  ch__sq_t *s = (ch__sq_t *)store;
  sqlite3_stmt *st;
  ch_event_t *a = NULL;
  size_t na = 0, cap = 0;
  int rc, ret = 0;

  if (!out || !n) return CH_EINVAL;
  *out = NULL;
  *n = 0;
  if (!ch__sq_id_ok(conv_id)) return CH_EINVAL;
  st = s->st[tail ? CH__SQ_EVENTS_TAIL : CH__SQ_EVENTS_HEAD];
  ch__sq_bind_text(st, 1, conv_id);
  ch__sq_bind_u64(st, 2, after);
  sqlite3_bind_int64(st, 3, limit == 0 || limit > (size_t)INT64_MAX ? -1 : (sqlite3_int64)limit);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (na == cap) {
      cap = cap ? cap * 2 : 16;
      a = ch_xrealloc(a, cap * sizeof(*a));
    }
    ch__sq_row_event(st, conv_id, &a[na++]);
  }
  if (rc != SQLITE_DONE) {
    ret = ch__sq_fail(s, rc, "reading events", NULL);
    ch_store_events_free(a, na);
    a = NULL;
    na = 0;
  }
  sqlite3_reset(st);
  *out = a;
  *n = na;
  return ret;
}

static int ch__sq_event_get(ch_store_t *store, const char *conv_id, uint64_t seq, ch_event_t *out) {
  ch__sq_t *s = (ch__sq_t *)store;
  if (!out || !ch__sq_id_ok(conv_id)) return CH_EINVAL;
  sqlite3_stmt *st = s->st[CH__SQ_EVENT_GET];
  int ret = 0;
  ch__sq_bind_text(st, 1, conv_id);
  ch__sq_bind_u64(st, 2, seq);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    memset(out, 0, sizeof(*out));
    ch__sq_row_event(st, conv_id, out);
  } else if (rc == SQLITE_DONE) {
    ret = CH_ENOTFOUND;
  } else {
    ret = ch__sq_fail(s, rc, "reading an event", NULL);
  }
  sqlite3_reset(st);
  return ret;
}

/* ------------------------------------------------------- conversations */

/* The conversations row and members of id, read from the database. */
static int ch__sq_conv_read(ch__sq_t *s, const char *id, ch_conv_t *out) {
  sqlite3_stmt *st;
  int own = 0, rc, ret;

  if ((ret = ch__sq_flush_for_read(s)) != 0) return ret;
  if ((ret = ch__sq_read_begin(s, &own)) != 0) return ret;
  st = s->st[CH__SQ_CONV_GET];
  ch__sq_bind_text(st, 1, id);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    ch__sq_row_conv(st, out);
  } else {
    ret = rc == SQLITE_DONE ? CH_ENOTFOUND : ch__sq_fail(s, rc, "reading the conversation", NULL);
  }
  sqlite3_reset(st);
  if (ret == 0 && (ret = ch__sq_fill_members(s, out)) != 0) ch_conv_dispose(out);
  ch__sq_read_end(s, own);
  return ret;
}

/* Served from the cache entry's snapshot when there is one (appends keep its
 * seq, time and count current; conv_put, member_set and conv_delete drop it;
 * another connection's commit empties the whole cache). Inside the caller's
 * transaction the cache was validated at its start; outside one, now. */
static int ch__sq_conv_peek(ch_store_t *store, const char *id, const ch_conv_t **out) {
  ch__sq_t *s = (ch__sq_t *)store;
  int ret;

  if (!out || !ch__sq_id_ok(id)) return CH_EINVAL;
  *out = NULL;
  if (!s->in_tx && (ret = ch__sq_check_version(s, NULL)) != 0) return ret;
  ch__sq_conv_t *e = ch__sq_cache_get(s, id);
  if (e && e->have_conv) {
    *out = &e->conv;
    return 0;
  }
  ch_conv_t *dst = e ? &e->conv : &s->peeked;
  ch_conv_dispose(dst);
  if ((ret = ch__sq_conv_read(s, id, dst)) != 0) return ret;
  if (e) e->have_conv = 1;
  *out = dst;
  return 0;
}

static int ch__sq_conv_get(ch_store_t *store, const char *id, ch_conv_t *out) {
  const ch_conv_t *cv;
  if (!out) return CH_EINVAL;
  int ret = ch__sq_conv_peek(store, id, &cv);
  if (ret == 0) ch_conv_copy(out, cv);
  return ret;
}

static int ch__sq_conv_put(ch_store_t *store, const ch_conv_t *c, int *created) {
  ch__sq_t *s = (ch__sq_t *)store;
  uint64_t last_seq;
  int64_t rid = 0;
  int rc, ret;

  if (created) *created = 0;
  if (!c || !ch__sq_id_ok(c->id) || !ch__sq_opt_id_ok(c->project_id) || !ch__sq_opt_id_ok(c->owner))
    return CH_EINVAL;
  if ((ret = ch__sq_op_begin(s, NULL)) != 0) return ret;
  if ((ret = ch__sq_last_seq(s, c->id, &rid, &last_seq, NULL)) != 0) goto Exit;
  if (!rid) {
    if (!c->owner) {
      ret = CH_EINVAL; /* a new conversation needs its owner */
      goto Exit;
    }
    if ((ret = ch__sq_conv_create(s, c, ch_clock_wall_ms(), &rid, NULL)) != 0) goto Exit;
    if (created) *created = 1;
  } else {
    sqlite3_stmt *st = s->st[CH__SQ_CONV_UPDATE];
    ch__sq_bind_text(st, 1, c->id);
    ch__sq_bind_text(st, 2, c->project_id);
    ch__sq_bind_text(st, 3, c->title);
    ch__sq_bind_text(st, 4, c->agent);
    ch__sq_bind_text(st, 5, c->metadata);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) ret = ch__sq_fail(s, rc, "updating the conversation", NULL);
  }
Exit:
  ret = ch__sq_op_end(s, ret, NULL);
  if (ret != 0 && created) *created = 0;
  if (ret == 0) ch__sq_cache_forget_row(s, c->id);
  return ret;
}

static int ch__sq_conv_delete(ch_store_t *store, const char *id) {
  ch__sq_t *s = (ch__sq_t *)store;
  static const int steps[] = {CH__SQ_FTS_DEL_CONV, CH__SQ_CONV_DEL_EVENTS, CH__SQ_FTS_LOWER,
                              CH__SQ_CONV_DEL_MEMBERS, CH__SQ_CONV_DEL};
  int rc, ret;

  if (!ch__sq_id_ok(id)) return CH_EINVAL;
  if ((ret = ch__sq_op_begin(s, NULL)) != 0) return ret;
  for (size_t i = 0; i < CH_ARRAY_SIZE(steps); i++) {
    sqlite3_stmt *st = s->st[steps[i]];
    if (sqlite3_bind_parameter_count(st) > 0) ch__sq_bind_text(st, 1, id);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
      ret = ch__sq_fail(s, rc, "deleting the conversation", NULL);
      break;
    }
  }
  if (ret == 0 && sqlite3_changes(s->db) == 0) ret = CH_ENOTFOUND;
  ret = ch__sq_op_end(s, ret, NULL);
  if (ret == 0) ch__sq_cache_del(s, id);
  return ret;
}

static int ch__sq_conv_list(ch_store_t *store, const ch_conv_query_t *q, ch_conv_t **out, size_t *n) {
  ch__sq_t *s = (ch__sq_t *)store;
  ch_conv_t *a = NULL;
  size_t na = 0, cap = 0;
  int variant = 0, own = 0, rc, ret;
  const char *search;

  if (!q || !out || !n) return CH_EINVAL;
  *out = NULL;
  *n = 0;
  search = q->search && *q->search ? q->search : NULL;
  if (q->user_id) {
    if (!ch__sq_id_ok(q->user_id)) return CH_EINVAL;
    variant |= CH__SQ_LIST_USER;
  }
  if (q->project_id) {
    if (!ch__sq_id_ok(q->project_id)) return CH_EINVAL;
    variant |= CH__SQ_LIST_PROJECT;
  }
  if (search) variant |= CH__SQ_LIST_SEARCH;
  if (search && (ret = ch__sq_fts_catch_up(s)) != 0) return ret;
  if ((ret = ch__sq_flush_for_read(s)) != 0) return ret;
  if ((ret = ch__sq_read_begin(s, &own)) != 0) return ret;

  sqlite3_stmt *st = s->list[variant];
  ch__sq_bind_text(st, 1, q->user_id);
  ch__sq_bind_text(st, 2, q->project_id);
  ch__sq_bind_text(st, 3, search);
  sqlite3_bind_int64(st, 4, q->limit == 0 ? CH__SQ_LIST_DEFAULT
                            : q->limit > (size_t)INT64_MAX ? INT64_MAX : (sqlite3_int64)q->limit);
  sqlite3_bind_int64(st, 5, q->offset > (size_t)INT64_MAX ? INT64_MAX : (sqlite3_int64)q->offset);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (na == cap) {
      cap = cap ? cap * 2 : 16;
      a = ch_xrealloc(a, cap * sizeof(*a));
    }
    ch__sq_row_conv(st, &a[na++]);
  }
  if (rc != SQLITE_DONE) {
    /* With a search, SQLITE_ERROR is FTS5 rejecting the query text: the caller's input. */
    if (search && rc == SQLITE_ERROR) {
      ch_log_debug("store(sqlite): search rejected: %s", sqlite3_errmsg(s->db));
      ret = CH_EINVAL;
    } else {
      ret = ch__sq_fail(s, rc, "listing conversations", NULL);
    }
  }
  sqlite3_reset(st);
  for (size_t i = 0; ret == 0 && i < na; i++) ret = ch__sq_fill_members(s, &a[i]);
  ch__sq_read_end(s, own);
  if (ret != 0) {
    ch_store_convs_free(a, na);
    return ret;
  }
  *out = a;
  *n = na;
  return 0;
}

static int ch__sq_member_set(ch_store_t *store, const char *conv_id, const char *user_id,
                             const char *role) {
  ch__sq_t *s = (ch__sq_t *)store;
  uint64_t last_seq;
  int64_t rid = 0;
  int rc, ret;

  if (!ch__sq_id_ok(conv_id) || !ch__sq_id_ok(user_id) || (role && !ch__sq_id_ok(role)))
    return CH_EINVAL;
  if ((ret = ch__sq_op_begin(s, NULL)) != 0) return ret;
  if ((ret = ch__sq_last_seq(s, conv_id, &rid, &last_seq, NULL)) != 0) goto Exit;
  if (!rid) {
    ret = CH_ENOTFOUND;
    goto Exit;
  }
  sqlite3_stmt *st = s->st[role ? CH__SQ_MEMBER_PUT : CH__SQ_MEMBER_DEL];
  ch__sq_bind_text(st, 1, conv_id);
  ch__sq_bind_text(st, 2, user_id);
  if (role) ch__sq_bind_text(st, 3, role);
  rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) ret = ch__sq_fail(s, rc, "setting a member", NULL);
Exit:
  ret = ch__sq_op_end(s, ret, NULL);
  if (ret == 0) ch__sq_cache_forget_row(s, conv_id);
  return ret;
}

/* ------------------------------------------------------------ projects */

static int ch__sq_project_put(ch_store_t *store, const ch_project_t *p, int *created) {
  ch__sq_t *s = (ch__sq_t *)store;
  sqlite3_stmt *st;
  int rc, ret;

  if (created) *created = 0;
  if (!p || !ch__sq_id_ok(p->id) || !ch__sq_opt_id_ok(p->owner)) return CH_EINVAL;
  if ((ret = ch__sq_op_begin(s, NULL)) != 0) return ret;
  if (p->owner) {
    st = s->st[CH__SQ_PROJECT_INSERT];
    ch__sq_bind_text(st, 1, p->id);
    ch__sq_bind_text(st, 2, p->name);
    ch__sq_bind_text(st, 3, p->owner);
    sqlite3_bind_int64(st, 4, p->created_ms ? p->created_ms : ch_clock_wall_ms());
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
      ret = ch__sq_fail(s, rc, "creating the project", NULL);
      goto Exit;
    }
    if (sqlite3_changes(s->db) == 1) {
      if (created) *created = 1;
      goto Exit;
    }
  }
  st = s->st[CH__SQ_PROJECT_UPDATE];
  ch__sq_bind_text(st, 1, p->id);
  ch__sq_bind_text(st, 2, p->name);
  rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE)
    ret = ch__sq_fail(s, rc, "updating the project", NULL);
  else if (sqlite3_changes(s->db) == 0)
    ret = CH_EINVAL; /* missing, and no owner to create it with */
Exit:
  ret = ch__sq_op_end(s, ret, NULL);
  if (ret != 0 && created) *created = 0;
  return ret;
}

static int ch__sq_project_get(ch_store_t *store, const char *id, ch_project_t *out) {
  ch__sq_t *s = (ch__sq_t *)store;
  if (!out || !ch__sq_id_ok(id)) return CH_EINVAL;
  sqlite3_stmt *st = s->st[CH__SQ_PROJECT_GET];
  int ret = 0;
  ch__sq_bind_text(st, 1, id);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    memset(out, 0, sizeof(*out));
    ch__sq_row_project(st, out);
  } else {
    ret = rc == SQLITE_DONE ? CH_ENOTFOUND : ch__sq_fail(s, rc, "reading the project", NULL);
  }
  sqlite3_reset(st);
  return ret;
}

static int ch__sq_project_list(ch_store_t *store, const char *user_id, ch_project_t **out, size_t *n) {
  ch__sq_t *s = (ch__sq_t *)store;
  ch_project_t *a = NULL;
  size_t na = 0, cap = 0;
  int rc, ret = 0;

  if (!out || !n) return CH_EINVAL;
  *out = NULL;
  *n = 0;
  if (user_id && !ch__sq_id_ok(user_id)) return CH_EINVAL;
  sqlite3_stmt *st = s->st[user_id ? CH__SQ_PROJECT_LIST_USER : CH__SQ_PROJECT_LIST];
  if (user_id) ch__sq_bind_text(st, 1, user_id);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (na == cap) {
      cap = cap ? cap * 2 : 8;
      a = ch_xrealloc(a, cap * sizeof(*a));
    }
    memset(&a[na], 0, sizeof(a[na]));
    ch__sq_row_project(st, &a[na++]);
  }
  if (rc != SQLITE_DONE) ret = ch__sq_fail(s, rc, "listing projects", NULL);
  sqlite3_reset(st);
  if (ret != 0) {
    for (size_t i = 0; i < na; i++) ch_project_dispose(&a[i]);
    free(a);
    return ret;
  }
  *out = a;
  *n = na;
  return 0;
}

/* ------------------------------------------------------------ api keys */

static int ch__sq_apikey_put(ch_store_t *store, const ch_apikey_t *k) {
  ch__sq_t *s = (ch__sq_t *)store;
  int rc, ret;

  if (!k || !ch__sq_id_ok(k->id) || !k->hash || !*k->hash || !ch__sq_id_ok(k->user_id) || !k->scopes)
    return CH_EINVAL;
  if ((ret = ch__sq_op_begin(s, NULL)) != 0) return ret;
  sqlite3_stmt *st = s->st[CH__SQ_APIKEY_INSERT];
  ch__sq_bind_text(st, 1, k->id);
  ch__sq_bind_text(st, 2, k->hash);
  ch__sq_bind_text(st, 3, k->user_id);
  ch__sq_bind_text(st, 4, k->scopes);
  ch__sq_bind_text(st, 5, k->label);
  sqlite3_bind_int64(st, 6, k->created_ms ? k->created_ms : ch_clock_wall_ms());
  sqlite3_bind_int(st, 7, k->revoked != 0);
  rc = sqlite3_step(st);
  if ((rc & 0xff) == SQLITE_CONSTRAINT)
    ret = CH_EEXIST; /* the id or the hash is already there */
  else if (rc != SQLITE_DONE)
    ret = ch__sq_fail(s, rc, "storing the api key", NULL);
  sqlite3_reset(st);
  return ch__sq_op_end(s, ret, NULL);
}

static int ch__sq_apikey_find(ch_store_t *store, const char *hash, ch_apikey_t *out) {
  ch__sq_t *s = (ch__sq_t *)store;
  if (!out || !hash || !*hash) return CH_EINVAL;
  sqlite3_stmt *st = s->st[CH__SQ_APIKEY_FIND];
  int ret = 0;
  ch__sq_bind_text(st, 1, hash);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    memset(out, 0, sizeof(*out));
    ch__sq_row_apikey(st, out);
  } else {
    ret = rc == SQLITE_DONE ? CH_ENOTFOUND : ch__sq_fail(s, rc, "finding the api key", NULL);
  }
  sqlite3_reset(st);
  return ret;
}

static int ch__sq_apikey_list(ch_store_t *store, ch_apikey_t **out, size_t *n) {
  ch__sq_t *s = (ch__sq_t *)store;
  ch_apikey_t *a = NULL;
  size_t na = 0, cap = 0;
  int rc, ret = 0;

  if (!out || !n) return CH_EINVAL;
  sqlite3_stmt *st = s->st[CH__SQ_APIKEY_LIST];
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (na == cap) {
      cap = cap ? cap * 2 : 8;
      a = ch_xrealloc(a, cap * sizeof(*a));
    }
    memset(&a[na], 0, sizeof(a[na]));
    ch__sq_row_apikey(st, &a[na++]);
  }
  if (rc != SQLITE_DONE) ret = ch__sq_fail(s, rc, "listing api keys", NULL);
  sqlite3_reset(st);
  if (ret != 0) {
    for (size_t i = 0; i < na; i++) ch_apikey_dispose(&a[i]);
    free(a);
    a = NULL;
    na = 0;
  }
  *out = a;
  *n = na;
  return ret;
}

static int ch__sq_apikey_revoke(ch_store_t *store, const char *id) {
  ch__sq_t *s = (ch__sq_t *)store;
  int rc, ret;

  if (!ch__sq_id_ok(id)) return CH_EINVAL;
  if ((ret = ch__sq_op_begin(s, NULL)) != 0) return ret;
  sqlite3_stmt *st = s->st[CH__SQ_APIKEY_REVOKE];
  ch__sq_bind_text(st, 1, id);
  rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE)
    ret = ch__sq_fail(s, rc, "revoking the api key", NULL);
  else if (sqlite3_changes(s->db) == 0)
    ret = CH_ENOTFOUND;
  return ch__sq_op_end(s, ret, NULL);
}

/* ---------------------------------------------------------------- pins */

static int ch__sq_pin_put(ch_store_t *store, const char *pin_hash, const char *user_id,
                          int64_t expires_ms) {
  ch__sq_t *s = (ch__sq_t *)store;
  sqlite3_stmt *st;
  int rc, ret;

  if (!pin_hash || !*pin_hash || !ch__sq_id_ok(user_id)) return CH_EINVAL;
  if ((ret = ch__sq_op_begin(s, NULL)) != 0) return ret;
  st = s->st[CH__SQ_PIN_PURGE]; /* expired PINs are dead weight: drop them on the way */
  sqlite3_bind_int64(st, 1, ch_clock_wall_ms());
  rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) {
    ret = ch__sq_fail(s, rc, "purging expired pins", NULL);
    goto Exit;
  }
  st = s->st[CH__SQ_PIN_PUT];
  ch__sq_bind_text(st, 1, pin_hash);
  ch__sq_bind_text(st, 2, user_id);
  sqlite3_bind_int64(st, 3, expires_ms);
  rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) ret = ch__sq_fail(s, rc, "storing the pin", NULL);
  /* Expired PINs were purged above, so a conflict is a live PIN of someone:
   * never reassign it (its holder would pair into the wrong account). */
  else if (sqlite3_changes(s->db) == 0) ret = CH_EEXIST;
Exit:
  return ch__sq_op_end(s, ret, NULL);
}

static int ch__sq_pin_take(ch_store_t *store, const char *pin_hash, int64_t now_ms, char **user_id) {
  ch__sq_t *s = (ch__sq_t *)store;
  char *who = NULL;
  int rc, ret;

  if (!user_id) return CH_EINVAL;
  *user_id = NULL;
  if (!pin_hash || !*pin_hash) return CH_EINVAL;
  if ((ret = ch__sq_op_begin(s, NULL)) != 0) return ret;
  sqlite3_stmt *st = s->st[CH__SQ_PIN_TAKE]; /* single use: the row goes, valid or not */
  ch__sq_bind_text(st, 1, pin_hash);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    if (sqlite3_column_int64(st, 1) > now_ms) who = ch__sq_col_str(st, 0);
    rc = sqlite3_step(st);
  }
  if (rc != SQLITE_DONE) ret = ch__sq_fail(s, rc, "taking the pin", NULL);
  sqlite3_reset(st);
  /* An expired PIN is consumed all the same: commit the delete, then report not found. */
  ret = ch__sq_op_end(s, ret, NULL);
  if (ret == 0 && !who) ret = CH_ENOTFOUND;
  if (ret == 0)
    *user_id = who;
  else
    free(who);
  return ret;
}

/* --------------------------------------------------------------- stats */

static int ch__sq_counts(ch_store_t *store, uint64_t *conversations, uint64_t *messages) {
  ch__sq_t *s = (ch__sq_t *)store;
  sqlite3_stmt *st = s->st[CH__SQ_COUNTS];
  int ret = ch__sq_flush_for_read(s);
  if (ret != 0) return ret;
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    if (conversations) *conversations = (uint64_t)sqlite3_column_int64(st, 0);
    if (messages) *messages = (uint64_t)sqlite3_column_int64(st, 1);
  } else {
    ret = ch__sq_fail(s, rc, "counting", NULL);
  }
  sqlite3_reset(st);
  return ret;
}

/* ----------------------------------------------------------- lifecycle */

static void ch__sq_close(ch_store_t *store) {
  ch__sq_t *s = (ch__sq_t *)store;
  if (!s) return;
  ch__sq_ckpt_stop(s->ckpt);
  if (s->db && !sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  s->in_tx = 0; /* what the caller left open is gone: the catch-up below has a transaction of its own */
  if (s->db && s->fts_dirty && s->st[CH__SQ_FTS_MARK]) ch__sq_fts_catch_up(s);
  for (size_t i = 0; i < CH__SQ_NSTMTS; i++) sqlite3_finalize(s->st[i]);
  for (size_t i = 0; i < CH_ARRAY_SIZE(s->list); i++) sqlite3_finalize(s->list[i]);
  if (s->db) {
    sqlite3_busy_timeout(s->db, 0); /* optimizing is optional: never wait for another writer */
    sqlite3_exec(s->db, "PRAGMA optimize", NULL, NULL, NULL);
    sqlite3_close_v2(s->db);
  }
  ch__sq_cache_clear(s);
  ch_map_dispose(&s->convs);
  ch_conv_dispose(&s->peeked);
  free(s->dirty);
  free(s->super.epoch);
  free(s);
}

sqlite3 *ch__store_sqlite_db(ch_store_t *store) { return ((ch__sq_t *)store)->db; }

void ch__store_sqlite_set_cache(ch_store_t *store, int on) {
  ch__sq_t *s = (ch__sq_t *)store;
  ch__sq_cache_clear(s);
  s->_no_cache = !on;
}

static const ch_store_ops_t ch__sq_ops = {
    .name = "sqlite",
    .close = ch__sq_close,
    .begin = ch__sq_begin,
    .commit = ch__sq_commit,
    .rollback = ch__sq_rollback,
    .append = ch__sq_append,
    .events = ch__sq_events,
    .event_get = ch__sq_event_get,
    .conv_get = ch__sq_conv_get,
    .conv_peek = ch__sq_conv_peek,
    .conv_put = ch__sq_conv_put,
    .conv_delete = ch__sq_conv_delete,
    .conv_list = ch__sq_conv_list,
    .member_set = ch__sq_member_set,
    .project_put = ch__sq_project_put,
    .project_get = ch__sq_project_get,
    .project_list = ch__sq_project_list,
    .apikey_put = ch__sq_apikey_put,
    .apikey_find = ch__sq_apikey_find,
    .apikey_list = ch__sq_apikey_list,
    .apikey_revoke = ch__sq_apikey_revoke,
    .pin_put = ch__sq_pin_put,
    .pin_take = ch__sq_pin_take,
    .counts = ch__sq_counts,
};

/* Run a pragma and return its first result column as text in buf (may be empty). */
static int ch__sq_pragma(sqlite3 *db, const char *sql, char *buf, size_t len) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc != SQLITE_OK) return rc;
  if (buf && len) buf[0] = '\0';
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const unsigned char *t = sqlite3_column_text(st, 0);
    if (buf && len && t && !buf[0]) {
      strncpy(buf, (const char *)t, len - 1);
      buf[len - 1] = '\0';
    }
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int ch__sq_prepare(ch__sq_t *s, const char *sql, sqlite3_stmt **out, ch_buf_t *err) {
  int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL);
  return rc == SQLITE_OK ? 0 : ch__sq_fail(s, rc, "preparing a statement", err);
}

/* SQLite's memory statistics take a global mutex on every allocation; chorus
 * does not read them. Must run before SQLite initializes (first open). */
static pthread_once_t ch__sq_once = PTHREAD_ONCE_INIT;
static void ch__sq_global_init(void) { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); }

int ch_store_sqlite_open(const char *path, ch_store_t **out, ch_buf_t *err) {
  ch__sq_t *s = NULL;
  char mode[32];
  int rc, ret = 0;
  int fd;

  if (!out) return CH_EINVAL;
  *out = NULL;
  pthread_once(&ch__sq_once, ch__sq_global_init);
  if (!path || !*path) {
    if (err) ch_buf_printf(err, "store: empty database path");
    return CH_EINVAL;
  }
  /* Create the file ourselves so it (and so its -wal/-shm) is private: it holds key and PIN hashes. */
  if (strcmp(path, ":memory:") != 0) {
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
      if (err) ch_buf_printf(err, "store: cannot open %s: %s", path, strerror(errno));
      return CH_EIO;
    }
    close(fd);
  }

  s = CH_NEW(ch__sq_t);
  s->super.ops = &ch__sq_ops;
  ch_map_init(&s->convs);
  s->data_version = -1;
  rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                       ch__sq_vfs());
  if (rc != SQLITE_OK) {
    if (!s->db) {
      if (err) ch_buf_printf(err, "store: cannot open %s: out of memory", path);
      ret = CH_EIO;
    } else {
      ret = ch__sq_fail(s, rc, "opening the database", err);
    }
    goto Exit;
  }
  sqlite3_extended_result_codes(s->db, 1);
  sqlite3_busy_timeout(s->db, CH__SQ_BUSY_MS);
  if ((rc = ch__sq_pragma(s->db, "PRAGMA journal_mode = WAL", mode, sizeof(mode))) != SQLITE_OK) {
    ret = ch__sq_fail(s, rc, "enabling WAL (is this an SQLite database?)", err);
    goto Exit;
  }
  if (strcmp(mode, "wal") != 0 && strcmp(mode, "memory") != 0) {
    if (err) ch_buf_printf(err, "store: %s: journal_mode is %s, WAL is required", path, mode);
    ret = CH_EIO;
    goto Exit;
  }
  if ((rc = ch__sq_pragma(s->db, "PRAGMA synchronous = FULL", NULL, 0)) != SQLITE_OK ||
      (rc = ch__sq_pragma(s->db, "PRAGMA foreign_keys = ON", NULL, 0)) != SQLITE_OK ||
      (rc = ch__sq_pragma(s->db, "PRAGMA journal_size_limit = " CH__SQ_WAL_LIMIT, NULL, 0)) != SQLITE_OK ||
      (rc = ch__sq_pragma(s->db, "PRAGMA cache_size = " CH__SQ_CACHE_KIB, NULL, 0)) != SQLITE_OK) {
    ret = ch__sq_fail(s, rc, "setting pragmas", err);
    goto Exit;
  }
  if ((ret = ch__store_sqlite_migrate(s->db, CH__STORE_SQLITE_SCHEMA_VERSION, err)) != 0) goto Exit;

  for (size_t i = 0; i < CH__SQ_NSTMTS; i++)
    if ((ret = ch__sq_prepare(s, ch__sq_sql[i], &s->st[i], err)) != 0) goto Exit;
  for (int v = 0; v < 8; v++) {
    ch_buf_t b = CH_BUF_INIT;
    ch_buf_append_str(&b, "SELECT " CH__SQ_CONV_COLS " FROM conversations WHERE 1");
    for (int f = 0; f < 3; f++)
      if (v & (1 << f)) ch_buf_append_str(&b, ch__sq_list_filters[f]);
    ch_buf_append_str(&b, " ORDER BY updated_ms DESC, id LIMIT ?4 OFFSET ?5");
    ret = ch__sq_prepare(s, ch_buf_cstr(&b), &s->list[v], err);
    ch_buf_dispose(&b);
    if (ret != 0) goto Exit;
  }

  sqlite3_stmt *st = s->st[CH__SQ_META_EPOCH];
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_TEXT) {
    s->super.epoch = ch__sq_col_str(st, 0);
  } else {
    if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
      if (err) ch_buf_printf(err, "store: %s: meta.epoch is missing", path);
      ret = CH_ECONFIG;
    } else {
      ret = ch__sq_fail(s, rc, "reading the store epoch", err);
    }
  }
  sqlite3_reset(st);
  if (ret != 0) goto Exit;
  if (strcmp(mode, "wal") == 0) ch__sq_ckpt_start(s->db, path, &s->ckpt);
  *out = &s->super;
  s = NULL;
Exit:
  if (s) ch__sq_close(&s->super);
  return ret;
}
