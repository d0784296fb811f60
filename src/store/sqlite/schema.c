/*
 * schema.c — the SQLite schema and its migrations.
 *
 * The schema is an ordered array of SQL scripts; ch__sq_steps[i] takes a
 * database from version i to i + 1. Each step runs in its own BEGIN
 * IMMEDIATE transaction together with the meta.schema_version bump, so a
 * crash leaves the database at a whole version. The version is read again
 * under the write lock, so two processes opening a fresh file at once
 * migrate it once. A database whose version is newer than the array is
 * refused: old code must not write a schema it does not understand.
 *
 * Tables (version 2):
 *
 *   meta(key, value)                 schema_version (integer), epoch (UUID),
 *                                    fts_rid (integer, see below)
 *   projects(id, name, owner, created_ms)
 *   conversations(rid, id UNIQUE, project_id, title, owner, agent, metadata,
 *                 created_ms, updated_ms, last_seq, message_count, epoch)
 *   members(conversation_id, user_id, role)        PK both
 *   events(rid, conv_rid, seq, kind, id, client_id, type, role,
 *          content, source, user_id, device_id, body, ts_ms, ref_seq, deleted)
 *        UNIQUE (conv_rid, seq)                     the log order
 *        UNIQUE (conv_rid, client_id) WHERE client_id IS NOT NULL
 *   events_fts(content)              FTS5, contentless (content='')
 *   api_keys(id, hash UNIQUE, user_id, scopes, label, created_ms, revoked)
 *   pins(pin_hash, user_id, expires_ms)
 *
 * Events name their conversation by conversations.rid (conv_rid), not by the
 * text id: conversation ids are client-chosen strings up to 128 bytes
 * (typically a 36-byte UUID) and would otherwise be stored in every event row
 * and in both of its indexes, and compared on every insert (measured: about
 * 1 us of the ~6 us an event insert costs here). The text id lives once, in
 * conversations. A deleted and re-created conversation may get the same rid
 * again; its events were deleted with it, so nothing old can attach to it.
 *
 * Why events has an explicit `rid INTEGER PRIMARY KEY` rather than
 * PRIMARY KEY (conv_rid, seq): the FTS index refers to rows by an integer
 * rowid, and only a rowid aliased by INTEGER PRIMARY KEY survives VACUUM
 * unchanged. (conv_rid, seq) is a UNIQUE constraint instead, which is the
 * same B-tree index a composite primary key would be.
 *
 * The search index. events_fts is a contentless FTS5 table (content='')
 * holding, for each indexed event, its rid and the words of its content.
 * It is kept by sqlite.c, not by triggers: a trigger writing to an FTS5
 * table makes every INSERT INTO events open a statement savepoint, and FTS5
 * flushes its pending terms to a new on-disk segment at every savepoint, so
 * each event would cost a segment write plus merges (measured: 9k events/s
 * in batches of 1000 with triggers, against 60k+ without). Instead:
 *
 *   meta.fts_rid   every event with rid <= fts_rid has been indexed (if it
 *                  had content and was not deleted at that moment)
 *   catch up       one INSERT INTO events_fts SELECT ... WHERE rid > fts_rid,
 *                  then fts_rid = max(rid), inside a write transaction: in bulk
 *                  before a COMMIT, before every search, at close (sqlite.c)
 *   message delete / conversation delete
 *                  the 'delete' command with the row's exact content, only
 *                  for rows that were indexed (rid <= fts_rid, not deleted)
 *
 * rids are max(rid) + 1, so deleting the newest rows would let a new row
 * reuse a rid <= fts_rid that would then never be indexed: after a delete,
 * fts_rid is lowered to max(rid) when that is smaller (all rows up to it are
 * indexed already), which keeps "rid > fts_rid = not yet indexed" true
 * without the cost of AUTOINCREMENT. Contentless
 * rather than external content: deleted messages stay in the log but must
 * leave the index, so the index is deliberately not a copy of the table.
 * Content is never updated in place (an edit is a new event), which is what
 * the contentless 'delete' command needs.
 *
 * conversations.project_id deliberately has no foreign key: projects are
 * optional and a conversation may name one before it is registered.
 */
#include "store/sqlite/internal.h"

#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "store/store.h"

static const char *const ch__sq_steps[CH__STORE_SQLITE_SCHEMA_VERSION] = {
    /* 0 -> 1: the tables */
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
    "CREATE TABLE projects ("
    "  id TEXT PRIMARY KEY, name TEXT, owner TEXT NOT NULL, created_ms INTEGER NOT NULL);"
    "CREATE INDEX projects_owner ON projects (owner);"
    "CREATE TABLE conversations ("
    "  rid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, project_id TEXT, title TEXT, owner TEXT NOT NULL, agent TEXT,"
    "  metadata TEXT, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,"
    "  last_seq INTEGER NOT NULL DEFAULT 0, message_count INTEGER NOT NULL DEFAULT 0,"
    "  epoch TEXT NOT NULL);"
    "CREATE INDEX conversations_updated ON conversations (updated_ms, id);"
    "CREATE INDEX conversations_owner ON conversations (owner);"
    "CREATE INDEX conversations_project ON conversations (project_id) WHERE project_id IS NOT NULL;"
    "CREATE TABLE members ("
    "  conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,"
    "  user_id TEXT NOT NULL, role TEXT NOT NULL,"
    "  PRIMARY KEY (conversation_id, user_id)) WITHOUT ROWID;"
    "CREATE INDEX members_user ON members (user_id);"
    "CREATE TABLE events ("
    "  rid INTEGER PRIMARY KEY,"
    "  conv_rid INTEGER NOT NULL REFERENCES conversations (rid) ON DELETE CASCADE,"
    "  seq INTEGER NOT NULL, kind INTEGER NOT NULL, id TEXT NOT NULL, client_id TEXT,"
    "  type TEXT, role TEXT, content TEXT, source TEXT, user_id TEXT, device_id TEXT,"
    "  body TEXT, ts_ms INTEGER NOT NULL, ref_seq INTEGER NOT NULL DEFAULT 0,"
    "  deleted INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE (conv_rid, seq));"
    "CREATE UNIQUE INDEX events_client ON events (conv_rid, client_id)"
    "  WHERE client_id IS NOT NULL;"
    "CREATE TABLE api_keys ("
    "  id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, user_id TEXT NOT NULL,"
    "  scopes TEXT NOT NULL, label TEXT, created_ms INTEGER NOT NULL,"
    "  revoked INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE pins ("
    "  pin_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL, expires_ms INTEGER NOT NULL)"
    "  WITHOUT ROWID;"
    "CREATE INDEX pins_expires ON pins (expires_ms);",

    /* 1 -> 2: full-text search over message content, indexed up to meta.fts_rid */
    "CREATE VIRTUAL TABLE events_fts USING fts5 ("
    "  content, content = '', columnsize = 0, tokenize = 'unicode61 remove_diacritics 2');"
    "INSERT INTO events_fts (rowid, content)"
    "  SELECT rid, content FROM events WHERE content IS NOT NULL AND deleted = 0;"
    "INSERT INTO meta (key, value) VALUES ('fts_rid', (SELECT coalesce(max(rid), 0) FROM events));",
};

static int ch__sq_schema_fail(sqlite3 *db, int rc, const char *what, ch_buf_t *err) {
  if (err) ch_buf_printf(err, "store: %s: %s", what, sqlite3_errmsg(db));
  return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED ? CH_EBUSY : CH_EIO;
}

int ch__store_sqlite_schema_version(sqlite3 *db, int *version, ch_buf_t *err) {
  sqlite3_stmt *st = NULL;
  int rc, ret = 0;
  sqlite3_int64 nmeta = 0, nall = 0;

  *version = 0;
  rc = sqlite3_prepare_v2(db,
                          "SELECT (SELECT count(*) FROM sqlite_schema WHERE name = 'meta'),"
                          " (SELECT count(*) FROM sqlite_schema)",
                          -1, &st, NULL);
  if (rc != SQLITE_OK) {
    ret = ch__sq_schema_fail(db, rc, "reading the schema", err);
    goto Exit;
  }
  rc = sqlite3_step(st);
  if (rc != SQLITE_ROW) {
    ret = ch__sq_schema_fail(db, rc, "reading the schema", err);
    goto Exit;
  }
  nmeta = sqlite3_column_int64(st, 0);
  nall = sqlite3_column_int64(st, 1);
  sqlite3_finalize(st);
  st = NULL;
  if (nmeta == 0) {
    if (nall != 0) {
      if (err) ch_buf_printf(err, "store: the database file holds other tables but no chorus meta table: not a chorus database");
      ret = CH_ECONFIG;
    }
    goto Exit; /* empty: version 0 */
  }
  rc = sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'schema_version'", -1, &st, NULL);
  if (rc != SQLITE_OK) {
    ret = ch__sq_schema_fail(db, rc, "reading the schema version", err);
    goto Exit;
  }
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_INTEGER &&
      sqlite3_column_int64(st, 0) > 0 && sqlite3_column_int64(st, 0) < 1000000) {
    *version = (int)sqlite3_column_int64(st, 0);
  } else if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
    if (err) ch_buf_printf(err, "store: meta.schema_version is missing or not a positive integer");
    ret = CH_ECONFIG;
  } else {
    ret = ch__sq_schema_fail(db, rc, "reading the schema version", err);
  }
Exit:
  sqlite3_finalize(st);
  return ret;
}

/* Inside the step's transaction: record the version, create the epoch once. */
static int ch__sq_schema_stamp(sqlite3 *db, int version, ch_buf_t *err) {
  sqlite3_stmt *st = NULL;
  int rc, ret = 0;
  char epoch[37];

  rc = sqlite3_prepare_v2(db,
                          "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)"
                          " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                          -1, &st, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int(st, 1, version);
    rc = sqlite3_step(st);
  }
  if (rc != SQLITE_DONE) {
    ret = ch__sq_schema_fail(db, rc, "recording the schema version", err);
    goto Exit;
  }
  sqlite3_finalize(st);
  st = NULL;
  ch_uuid4(epoch);
  rc = sqlite3_prepare_v2(db,
                          "INSERT INTO meta (key, value) VALUES ('epoch', ?1) ON CONFLICT (key) DO NOTHING",
                          -1, &st, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(st, 1, epoch, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
  }
  if (rc != SQLITE_DONE) ret = ch__sq_schema_fail(db, rc, "creating the store epoch", err);
Exit:
  sqlite3_finalize(st);
  return ret;
}

int ch__store_sqlite_migrate(sqlite3 *db, int target, ch_buf_t *err) {
  int ret = 0, version = 0, rc;
  char what[64];

  if (target < 0 || target > CH__STORE_SQLITE_SCHEMA_VERSION) return CH_EINVAL;
  /* The common case, an up-to-date database, needs no write lock: another
   * process (the hub in the middle of a batch) does not delay this open. */
  ret = ch__store_sqlite_schema_version(db, &version, err);
  if (ret != 0) return ret;
  if (version >= target && version <= CH__STORE_SQLITE_SCHEMA_VERSION) return 0;
  for (;;) {
    rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK) return ch__sq_schema_fail(db, rc, "locking the database for migration", err);
    ret = ch__store_sqlite_schema_version(db, &version, err);
    if (ret != 0) goto Exit;
    if (version > CH__STORE_SQLITE_SCHEMA_VERSION) {
      if (err)
        ch_buf_printf(err,
                      "store: the database has schema version %d, newer than this chorus knows (%d); "
                      "refusing to open it: upgrade chorus",
                      version, CH__STORE_SQLITE_SCHEMA_VERSION);
      ret = CH_EUNSUPPORTED;
      goto Exit;
    }
    if (version >= target) break;
    snprintf(what, sizeof(what), "migrating the schema to version %d", version + 1);
    rc = sqlite3_exec(db, ch__sq_steps[version], NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
      ret = ch__sq_schema_fail(db, rc, what, err);
      goto Exit;
    }
    ret = ch__sq_schema_stamp(db, version + 1, err);
    if (ret != 0) goto Exit;
    rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
      ret = ch__sq_schema_fail(db, rc, what, err);
      goto Exit;
    }
  }
  rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK) ret = ch__sq_schema_fail(db, rc, "finishing the migration", err);
Exit:
  if (!sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  return ret;
}
