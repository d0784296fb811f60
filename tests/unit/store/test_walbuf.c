/*
 * test_walbuf.c — the WAL write-coalescing VFS (src/store/sqlite/walbuf.c):
 * whatever mix of writes, reads, syncs, truncates and size queries SQLite
 * makes, the file reads back exactly as if every write had gone straight to
 * disk, and after a sync the bytes are on disk (seen through another handle).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store/sqlite/internal.h"

#define SZ (512 * 1024)

/* A database file name as SQLite hands it to a VFS, and its -wal file. */
typedef struct {
  char db[64], wal[80];
  sqlite3_filename fn;
} names_t;

static void names_init(names_t *n) {
  strcpy(n->db, "/tmp/chorus-walbuf-XXXXXX");
  int fd = mkstemp(n->db);
  assert_true(fd >= 0);
  close(fd);
  char jr[80];
  snprintf(jr, sizeof(jr), "%s-journal", n->db);
  snprintf(n->wal, sizeof(n->wal), "%s-wal", n->db);
  n->fn = sqlite3_create_filename(n->db, jr, n->wal, 0, NULL);
  assert_non_null(n->fn);
}

static void names_dispose(names_t *n) {
  unlink(n->wal);
  unlink(n->db);
  sqlite3_free_filename(n->fn);
}

static sqlite3_file *open_file(sqlite3_vfs *v, names_t *n, int wal) {
  sqlite3_file *f = calloc(1, (size_t)v->szOsFile);
  int out = 0;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | (wal ? SQLITE_OPEN_WAL : SQLITE_OPEN_MAIN_DB);
  assert_int_equal(v->xOpen(v, wal ? sqlite3_filename_wal(n->fn) : n->fn, f, flags, &out), SQLITE_OK);
  assert_non_null(f->pMethods);
  return f;
}

/* The file's bytes as another (plain) handle sees them. */
static size_t disk(const char *path, unsigned char *out) {
  FILE *fp = fopen(path, "rb");
  assert_non_null(fp);
  size_t n = fread(out, 1, SZ, fp);
  fclose(fp);
  return n;
}

static void test_random_operations_match_a_plain_file(void **state) {
  (void)state;
  const char *name = ch__sq_vfs();
  assert_non_null(name);
  sqlite3_vfs *v = sqlite3_vfs_find(name);
  assert_non_null(v);
  names_t nm;
  names_init(&nm);
  const char *path = nm.wal;
  static unsigned char model[SZ], buf[SZ], got[SZ];
  sqlite3_int64 size = 0;
  memset(model, 0, sizeof(model));
  sqlite3_file *f = open_file(v, &nm, 1);
  srand(7);
  for (int step = 0; step < 20000; step++) {
    int op = rand() % 100;
    if (op < 60) { /* mostly appends, as SQLite does: header + page, frame after frame */
      int n = rand() % 3 == 0 ? 24 : (rand() % 2 ? 4096 : 1 + rand() % 9000);
      sqlite3_int64 at = rand() % 4 ? size : rand() % (size + 1);
      if (at + n > SZ) at = 0, n = n > SZ ? SZ : n;
      for (int i = 0; i < n; i++) buf[i] = (unsigned char)rand();
      assert_int_equal(f->pMethods->xWrite(f, buf, n, at), SQLITE_OK);
      memcpy(model + at, buf, (size_t)n);
      if (at + n > size) size = at + n;
    } else if (op < 80) { /* reads anywhere inside the file, also across the pending run */
      if (size == 0) continue;
      sqlite3_int64 at = rand() % size;
      int n = 1 + rand() % (int)(size - at > 20000 ? 20000 : size - at);
      assert_int_equal(f->pMethods->xRead(f, got, n, at), SQLITE_OK);
      assert_memory_equal(got, model + at, (size_t)n);
    } else if (op < 90) { /* a sync: everything is on disk */
      assert_int_equal(f->pMethods->xSync(f, SQLITE_SYNC_NORMAL), SQLITE_OK);
      assert_int_equal(disk(path, got), (size_t)size);
      assert_memory_equal(got, model, (size_t)size);
    } else if (op < 95) {
      sqlite3_int64 s = -1;
      assert_int_equal(f->pMethods->xFileSize(f, &s), SQLITE_OK);
      assert_int_equal(s, size);
    } else { /* a truncate (WAL reset / journal_size_limit) */
      sqlite3_int64 to = size ? rand() % size : 0;
      assert_int_equal(f->pMethods->xTruncate(f, to), SQLITE_OK);
      memset(model + to, 0, (size_t)(SZ - to));
      size = to;
    }
  }
  assert_int_equal(f->pMethods->xClose(f), SQLITE_OK); /* flushes */
  free(f);
  assert_int_equal(disk(path, got), (size_t)size);
  assert_memory_equal(got, model, (size_t)size);
  names_dispose(&nm);
}

/* Only WAL files are held back: a database file's write is on disk at once. */
static void test_other_files_write_through(void **state) {
  (void)state;
  sqlite3_vfs *v = sqlite3_vfs_find(ch__sq_vfs());
  names_t nm;
  names_init(&nm);
  static unsigned char got[SZ];
  sqlite3_file *f = open_file(v, &nm, 0);
  assert_int_equal(f->pMethods->xWrite(f, "abcd", 4, 0), SQLITE_OK);
  assert_int_equal(disk(nm.db, got), 4);
  assert_memory_equal(got, "abcd", 4);
  assert_int_equal(f->pMethods->xClose(f), SQLITE_OK);
  free(f);
  /* and a WAL file's pending bytes are not on disk before a sync */
  f = open_file(v, &nm, 1);
  assert_int_equal(f->pMethods->xWrite(f, "abcd", 4, 0), SQLITE_OK);
  assert_int_equal(f->pMethods->xWrite(f, "wxyz", 4, 4), SQLITE_OK);
  assert_int_equal(disk(nm.wal, got), 0);
  assert_int_equal(f->pMethods->xSync(f, SQLITE_SYNC_NORMAL), SQLITE_OK);
  assert_int_equal(disk(nm.wal, got), 8);
  assert_memory_equal(got, "abcdwxyz", 8);
  assert_int_equal(f->pMethods->xClose(f), SQLITE_OK);
  free(f);
  names_dispose(&nm);
}

static void exec_ok(sqlite3 *db, const char *sql) {
  char *err = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
  if (rc != SQLITE_OK) fprintf(stderr, "%s: %s\n", sql, err ? err : "?");
  sqlite3_free(err);
  assert_int_equal(rc, SQLITE_OK);
}

static int count_of(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  int n = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return n;
}

/* A transaction that spilled pages into the WAL and rolled back leaves frames
 * past the WAL's end; they must reach the file before the write lock goes, or
 * they would land later on frames another connection has committed there. */
static void test_rolled_back_frames_never_overwrite_a_later_commit(void **state) {
  (void)state;
  ch__sq_vfs_unpaired(0);
  char dir[] = "/tmp/chorus-walbuf-XXXXXX", path[64];
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/db", dir);
  sqlite3 *a, *b;
  int fl = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  assert_int_equal(sqlite3_open_v2(path, &a, fl, ch__sq_vfs()), SQLITE_OK);
  exec_ok(a, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA cache_size=5;"
             "CREATE TABLE t(x); INSERT INTO t VALUES ('first')");
  /* a: a big transaction spills ~50 frames into the WAL, then rolls back */
  exec_ok(a, "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50)"
             " INSERT INTO t SELECT randomblob(3000) FROM n; ROLLBACK");
  /* b (another connection, the default VFS) commits where those frames were */
  assert_int_equal(sqlite3_open_v2(path, &b, fl, NULL), SQLITE_OK);
  exec_ok(b, "PRAGMA synchronous=FULL");
  exec_ok(b, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 45)"
             " INSERT INTO t SELECT printf('committed %03000d', i) FROM n"); /* ~45 frames, one commit */
  /* a closes: nothing of its rolled-back transaction may reach the file now */
  assert_int_equal(sqlite3_close(a), SQLITE_OK);
  exec_ok(b, "PRAGMA wal_checkpoint(TRUNCATE)"); /* b's newest frames, from the file, into the database */
  assert_int_equal(sqlite3_close(b), SQLITE_OK);
  assert_int_equal(sqlite3_open_v2(path, &b, fl, NULL), SQLITE_OK);
  assert_int_equal(count_of(b, "SELECT count(*) FROM t WHERE x = printf('committed %03000d', rowid - 1)"), 45);
  assert_int_equal(count_of(b, "SELECT count(*) FROM t"), 46);
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(b, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
  sqlite3_finalize(st);
  assert_int_equal(sqlite3_close(b), SQLITE_OK);
  char p2[80];
  snprintf(p2, sizeof(p2), "%s-wal", path);
  unlink(p2);
  snprintf(p2, sizeof(p2), "%s-shm", path);
  unlink(p2);
  unlink(path);
  rmdir(dir);
}

int main(void) {
  ch__sq_vfs_unpaired(1);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_random_operations_match_a_plain_file),
      cmocka_unit_test(test_other_files_write_through),
      cmocka_unit_test(test_rolled_back_frames_never_overwrite_a_later_commit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
