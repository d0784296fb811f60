/*
 * walbuf.c — an SQLite VFS shim that writes a commit's WAL frames with one
 * system call instead of two per page.
 *
 * SQLite appends each WAL frame as two writes (the 24-byte frame header,
 * then the page), so a group commit that dirties 200 pages (a batch spread
 * over 100 conversations touches a leaf of each index per conversation) is
 * 400 pwrite calls before its fsync. On the virtual machines chorus runs on a
 * system call costs several microseconds, which made the commit, not the
 * messages, the hub thread's main cost at moderate rates.
 *
 * The shim wraps the default VFS ("unix") and, for WAL files only, keeps one
 * pending run of contiguous writes (up to 124 KiB) in memory:
 *
 *   xWrite(ofst == run end, run + n <= CH__WB_MAX) ── append to the run
 *   xWrite(elsewhere, or too big)                  ── flush the run, then start a new one
 *                                                     (or write through when n is that big)
 *   xSync / xTruncate / xFileSize / xClose         ── flush first, then the real call
 *   xRead overlapping the run                      ── flush first
 *   the database's WAL write lock released         ── flush first (xShmLock on the db file)
 *
 * Durability is unchanged: with synchronous=FULL SQLite syncs the WAL before
 * it publishes a commit in the WAL index, and the sync flushes the run first,
 * so no reader (in this process or another) and no acknowledgement ever
 * depends on bytes still in the buffer. A failed flush is reported by the
 * call that caused it (the sync: the commit fails and is not acknowledged).
 * Frames of a transaction that spilled pages and then rolled back are never
 * synced: they are flushed while this connection still holds the WAL write
 * lock, exactly where the default VFS would have written them, so they can
 * never land on frames another writer commits after it.
 * Everything else, database files and the shared-memory index included,
 * goes straight to the real VFS.
 *
 * Threading: a file handle is used by one connection at a time (SQLite's
 * rule), so the run needs no lock.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "store/sqlite/internal.h"

/* Bytes kept back at most: 30 frames of 4 KiB pages. The unix VFS writes at
 * most 128 KiB - 1 per call (its seekAndWrite masks the count with 0x1ffff),
 * so a run must stay under that. */
#define CH__WB_MAX (124u * 1024)

typedef struct {
  sqlite3_file base;      /* first: SQLite's handle; pMethods = ch__wb_io (or NULL) */
  sqlite3_file *real;     /* the real VFS's handle, in the same allocation (after this struct) */
  int wal;                /* a WAL file: writes are coalesced */
  void *peer;             /* WAL file: its database file's handle; database file: its WAL's (or NULL) */
  char *run;              /* owned: pending bytes, or NULL */
  size_t len;             /* pending bytes in run */
  sqlite3_int64 off;      /* file offset of run[0] */
} ch__wb_file_t;

static sqlite3_vfs ch__wb_vfs;
static int ch__wb_unpaired; /* tests: WAL files opened by name, not by a pager */
static sqlite3_vfs *ch__wb_real;
static sqlite3_io_methods ch__wb_io;

static int ch__wb_flush(ch__wb_file_t *f) {
  if (f->len == 0) return SQLITE_OK;
  int rc = f->real->pMethods->xWrite(f->real, f->run, (int)f->len, f->off);
  f->len = 0;
  return rc;
}

static int ch__wb_write(sqlite3_file *pf, const void *p, int n, sqlite3_int64 ofst) {
  ch__wb_file_t *f = (ch__wb_file_t *)pf;
  if (!f->wal) return f->real->pMethods->xWrite(f->real, p, n, ofst);
  if (f->len > 0 && ofst == f->off + (sqlite3_int64)f->len && f->len + (size_t)n <= CH__WB_MAX) {
    memcpy(f->run + f->len, p, (size_t)n);
    f->len += (size_t)n;
    return SQLITE_OK;
  }
  int rc = ch__wb_flush(f);
  if (rc != SQLITE_OK) return rc;
  if ((size_t)n > CH__WB_MAX / 2) return f->real->pMethods->xWrite(f->real, p, n, ofst);
  if (f->run == NULL && (f->run = sqlite3_malloc(CH__WB_MAX)) == NULL)
    return f->real->pMethods->xWrite(f->real, p, n, ofst);
  memcpy(f->run, p, (size_t)n);
  f->len = (size_t)n;
  f->off = ofst;
  return SQLITE_OK;
}

static int ch__wb_read(sqlite3_file *pf, void *p, int n, sqlite3_int64 ofst) {
  ch__wb_file_t *f = (ch__wb_file_t *)pf;
  if (f->len > 0 && ofst < f->off + (sqlite3_int64)f->len && ofst + n > f->off) {
    int rc = ch__wb_flush(f);
    if (rc != SQLITE_OK) return rc;
  }
  return f->real->pMethods->xRead(f->real, p, n, ofst);
}

static int ch__wb_sync(sqlite3_file *pf, int flags) {
  ch__wb_file_t *f = (ch__wb_file_t *)pf;
  int rc = ch__wb_flush(f);
  return rc != SQLITE_OK ? rc : f->real->pMethods->xSync(f->real, flags);
}

static int ch__wb_truncate(sqlite3_file *pf, sqlite3_int64 size) {
  ch__wb_file_t *f = (ch__wb_file_t *)pf;
  int rc = ch__wb_flush(f);
  return rc != SQLITE_OK ? rc : f->real->pMethods->xTruncate(f->real, size);
}

static int ch__wb_file_size(sqlite3_file *pf, sqlite3_int64 *size) {
  ch__wb_file_t *f = (ch__wb_file_t *)pf;
  int rc = ch__wb_flush(f);
  return rc != SQLITE_OK ? rc : f->real->pMethods->xFileSize(f->real, size);
}

static int ch__wb_close(sqlite3_file *pf) {
  ch__wb_file_t *f = (ch__wb_file_t *)pf;
  if (f->peer) ((ch__wb_file_t *)f->peer)->peer = NULL;
  int rc = ch__wb_flush(f);
  int rc2 = f->real->pMethods->xClose(f->real);
  sqlite3_free(f->run);
  f->run = NULL;
  return rc != SQLITE_OK ? rc : rc2;
}

/* The rest pass straight through. */
#define CH__WB_REAL(pf) (((ch__wb_file_t *)(pf))->real)
static int ch__wb_lock(sqlite3_file *pf, int l) { return CH__WB_REAL(pf)->pMethods->xLock(CH__WB_REAL(pf), l); }
static int ch__wb_unlock(sqlite3_file *pf, int l) { return CH__WB_REAL(pf)->pMethods->xUnlock(CH__WB_REAL(pf), l); }
static int ch__wb_check_lock(sqlite3_file *pf, int *out) {
  return CH__WB_REAL(pf)->pMethods->xCheckReservedLock(CH__WB_REAL(pf), out);
}
static int ch__wb_fcntl(sqlite3_file *pf, int op, void *arg) {
  return CH__WB_REAL(pf)->pMethods->xFileControl(CH__WB_REAL(pf), op, arg);
}
static int ch__wb_sector(sqlite3_file *pf) { return CH__WB_REAL(pf)->pMethods->xSectorSize(CH__WB_REAL(pf)); }
static int ch__wb_caps(sqlite3_file *pf) {
  return CH__WB_REAL(pf)->pMethods->xDeviceCharacteristics(CH__WB_REAL(pf));
}
static int ch__wb_shm_map(sqlite3_file *pf, int pg, int sz, int extend, void volatile **pp) {
  return CH__WB_REAL(pf)->pMethods->xShmMap(CH__WB_REAL(pf), pg, sz, extend, pp);
}
static int ch__wb_shm_lock(sqlite3_file *pf, int off, int n, int flags) {
  ch__wb_file_t *f = (ch__wb_file_t *)pf, *wal = f->wal ? NULL : f->peer;
  if (wal && (flags & SQLITE_SHM_UNLOCK) && off == 0 && n > 0) { /* slot 0: the WAL write lock */
    int rc = ch__wb_flush(wal);
    if (rc != SQLITE_OK) return rc;
  }
  return f->real->pMethods->xShmLock(f->real, off, n, flags);
}
static void ch__wb_shm_barrier(sqlite3_file *pf) { CH__WB_REAL(pf)->pMethods->xShmBarrier(CH__WB_REAL(pf)); }
static int ch__wb_shm_unmap(sqlite3_file *pf, int del) {
  return CH__WB_REAL(pf)->pMethods->xShmUnmap(CH__WB_REAL(pf), del);
}
static int ch__wb_fetch(sqlite3_file *pf, sqlite3_int64 ofst, int n, void **pp) {
  ch__wb_file_t *f = (ch__wb_file_t *)pf;
  int rc = ch__wb_flush(f);
  return rc != SQLITE_OK ? rc : f->real->pMethods->xFetch(f->real, ofst, n, pp);
}
static int ch__wb_unfetch(sqlite3_file *pf, sqlite3_int64 ofst, void *p) {
  return CH__WB_REAL(pf)->pMethods->xUnfetch(CH__WB_REAL(pf), ofst, p);
}

static int ch__wb_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *pf, int flags, int *out_flags) {
  ch__wb_file_t *f = (ch__wb_file_t *)pf;
  (void)vfs;
  memset(f, 0, sizeof(*f));
  f->real = (sqlite3_file *)(f + 1);
  int rc = ch__wb_real->xOpen(ch__wb_real, name, f->real, flags, out_flags);
  if (rc != SQLITE_OK || f->real->pMethods == NULL || f->real->pMethods->iVersion < 3) {
    if (rc == SQLITE_OK && f->real->pMethods) f->real->pMethods->xClose(f->real);
    if (rc == SQLITE_OK) rc = SQLITE_CANTOPEN;
    f->base.pMethods = NULL; /* SQLite closes nothing then */
    return rc;
  }
  f->wal = (flags & SQLITE_OPEN_WAL) != 0;
  f->base.pMethods = &ch__wb_io;
  if (f->wal && !ch__wb_unpaired) {
    sqlite3_file *db = sqlite3_database_file_object(name); /* name came from the pager */
    if (db && db->pMethods == &ch__wb_io) {
      f->peer = db;
      ((ch__wb_file_t *)db)->peer = f;
    }
  }
  return SQLITE_OK;
}

/* VFS methods other than xOpen: the real VFS's. */
static int ch__wb_delete(sqlite3_vfs *v, const char *n, int sync) {
  (void)v;
  return ch__wb_real->xDelete(ch__wb_real, n, sync);
}
static int ch__wb_access(sqlite3_vfs *v, const char *n, int flags, int *out) {
  (void)v;
  return ch__wb_real->xAccess(ch__wb_real, n, flags, out);
}
static int ch__wb_full_path(sqlite3_vfs *v, const char *n, int len, char *out) {
  (void)v;
  return ch__wb_real->xFullPathname(ch__wb_real, n, len, out);
}
static int ch__wb_random(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  return ch__wb_real->xRandomness(ch__wb_real, n, out);
}
static int ch__wb_sleep(sqlite3_vfs *v, int us) {
  (void)v;
  return ch__wb_real->xSleep(ch__wb_real, us);
}
static int ch__wb_time(sqlite3_vfs *v, double *out) {
  (void)v;
  return ch__wb_real->xCurrentTime(ch__wb_real, out);
}
static int ch__wb_last_error(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  return ch__wb_real->xGetLastError(ch__wb_real, n, out);
}
static int ch__wb_time64(sqlite3_vfs *v, sqlite3_int64 *out) {
  (void)v;
  return ch__wb_real->xCurrentTimeInt64(ch__wb_real, out);
}
static void *ch__wb_dl_open(sqlite3_vfs *v, const char *n) {
  (void)v;
  return ch__wb_real->xDlOpen(ch__wb_real, n);
}
static void ch__wb_dl_error(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  ch__wb_real->xDlError(ch__wb_real, n, out);
}
static void (*ch__wb_dl_sym(sqlite3_vfs *v, void *h, const char *n))(void) {
  (void)v;
  return ch__wb_real->xDlSym(ch__wb_real, h, n);
}
static void ch__wb_dl_close(sqlite3_vfs *v, void *h) {
  (void)v;
  ch__wb_real->xDlClose(ch__wb_real, h);
}

static int ch__wb_ok;
static void ch__wb_register(void) {
  ch__wb_real = sqlite3_vfs_find(NULL);
  if (ch__wb_real == NULL || ch__wb_real->iVersion < 2) return;
  ch__wb_io = (sqlite3_io_methods){
      .iVersion = 3,
      .xClose = ch__wb_close,
      .xRead = ch__wb_read,
      .xWrite = ch__wb_write,
      .xTruncate = ch__wb_truncate,
      .xSync = ch__wb_sync,
      .xFileSize = ch__wb_file_size,
      .xLock = ch__wb_lock,
      .xUnlock = ch__wb_unlock,
      .xCheckReservedLock = ch__wb_check_lock,
      .xFileControl = ch__wb_fcntl,
      .xSectorSize = ch__wb_sector,
      .xDeviceCharacteristics = ch__wb_caps,
      .xShmMap = ch__wb_shm_map,
      .xShmLock = ch__wb_shm_lock,
      .xShmBarrier = ch__wb_shm_barrier,
      .xShmUnmap = ch__wb_shm_unmap,
      .xFetch = ch__wb_fetch,
      .xUnfetch = ch__wb_unfetch,
  };
  ch__wb_vfs = (sqlite3_vfs){
      .iVersion = 2,
      .szOsFile = (int)sizeof(ch__wb_file_t) + ch__wb_real->szOsFile,
      .mxPathname = ch__wb_real->mxPathname,
      .zName = CH__SQ_VFS,
      .xOpen = ch__wb_open,
      .xDelete = ch__wb_delete,
      .xAccess = ch__wb_access,
      .xFullPathname = ch__wb_full_path,
      .xDlOpen = ch__wb_dl_open,
      .xDlError = ch__wb_dl_error,
      .xDlSym = ch__wb_dl_sym,
      .xDlClose = ch__wb_dl_close,
      .xRandomness = ch__wb_random,
      .xSleep = ch__wb_sleep,
      .xCurrentTime = ch__wb_time,
      .xGetLastError = ch__wb_last_error,
      .xCurrentTimeInt64 = ch__wb_time64,
  };
  ch__wb_ok = sqlite3_vfs_register(&ch__wb_vfs, 0) == SQLITE_OK;
}

void ch__sq_vfs_unpaired(int on) { ch__wb_unpaired = on; }

const char *ch__sq_vfs(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, ch__wb_register);
  return ch__wb_ok ? CH__SQ_VFS : NULL;
}
