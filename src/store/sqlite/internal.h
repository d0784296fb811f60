/*
 * internal.h — private to src/store/sqlite/: the schema version and the
 * migration runner (schema.c), shared with sqlite.c and the unit tests.
 *
 * Schema history (each step is one transaction; meta.schema_version records
 * the last step applied, meta.epoch is the store epoch created with step 1):
 *
 *   1  meta, projects, conversations, members, events, api_keys, pins
 *   2  events_fts: contentless FTS5 index over events.content, filled from
 *      the existing rows; meta.fts_rid (see schema.c)
 *
 * A step is appended, never edited, once it has shipped.
 */
#ifndef CH_STORE_SQLITE_INTERNAL_H
#define CH_STORE_SQLITE_INTERNAL_H

#include <sqlite3.h>

#include "core/buf.h"
#include "store/store.h"

/* The newest schema this build knows. */
#define CH__STORE_SQLITE_SCHEMA_VERSION 2

/* The database's schema version into *version (0: an empty database).
 * 0, CH_ECONFIG (an SQLite file that is not a chorus database) or CH_EIO. */
int ch__store_sqlite_schema_version(sqlite3 *db, int *version, ch_buf_t *err);

/* Bring db (borrowed, open, no transaction active) up to schema version
 * target (<= CH__STORE_SQLITE_SCHEMA_VERSION), one transaction per step;
 * concurrent openers are safe (the version is re-read under the write lock).
 * 0; CH_EUNSUPPORTED when the database is NEWER than this build;
 * CH_ECONFIG not a chorus database; CH_EBUSY, CH_EIO. err gets the reason. */
int ch__store_sqlite_migrate(sqlite3 *db, int target, ch_buf_t *err);

/* checkpoint.c: WAL checkpoints on a thread of their own for the writer
 * connection `writer` (borrowed; it must outlive the checkpointer) of the
 * database file `path`. 0, or -1 when no thread could be started (SQLite's
 * automatic checkpoint stays in place). Stop before closing `writer`. */
typedef struct ch__sq_ckpt_s ch__sq_ckpt_t;

/* walbuf.c: the name of the VFS that writes each commit's WAL frames in one
 * call (registered on first use), or NULL when it could not be (then the
 * default VFS is used). */
#define CH__SQ_VFS "chorus-walbuf"
const char *ch__sq_vfs(void);
/* Tests only: WAL files opened straight through the VFS (not by a pager) have
 * no database file to pair with. */
void ch__sq_vfs_unpaired(int on);
int ch__sq_ckpt_start(sqlite3 *writer, const char *path, ch__sq_ckpt_t **out);
void ch__sq_ckpt_stop(ch__sq_ckpt_t *k);

/* Tests and benchmarks only: the instance's connection (borrowed), and
 * switching the per-conversation seq cache off (0) or on (1, the default). */
sqlite3 *ch__store_sqlite_db(ch_store_t *s);
void ch__store_sqlite_set_cache(ch_store_t *s, int on);

#endif
