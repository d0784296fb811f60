/*
 * sqlite.h — the SQLite back end of the store, as seen by store.c (the dsn
 * dispatcher). Everything else talks to it through ch_store_ops_t.
 */
#ifndef CH_STORE_SQLITE_SQLITE_H
#define CH_STORE_SQLITE_SQLITE_H

#include "core/buf.h"
#include "store/store.h"

/* Open (creating when missing, mode 0600) and migrate the database file at
 * path (borrowed; ":memory:" for a private in-memory database).
 * 0 with *out set (free with ch_store_close), or:
 *   CH_EIO          the file cannot be opened / is not a database / disk error
 *   CH_EBUSY        another process held the write lock past the busy timeout
 *   CH_EUNSUPPORTED the file's schema is newer than this build knows
 *   CH_ECONFIG      the file is an SQLite database but not a chorus one
 * with a one-line reason appended to err (may be NULL). */
int ch_store_sqlite_open(const char *path, ch_store_t **out, ch_buf_t *err);

#endif
