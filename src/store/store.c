/*
 * store.c — the generic half of the durable store: picking the back end from
 * the dsn, random ids, and releasing the structs the store hands out.
 *
 *   dsn "sqlite:PATH"     PATH is the database file (":memory:" works for
 *                         tests); an existing directory means PATH/chorus.db
 *   dsn "DIR"             the data directory: DIR/chorus.db (DIR is created
 *                         with mode 0700 when missing, one level only)
 *   "pg:..." "postgres://..." and any other "scheme://" are CH_EUNSUPPORTED
 *                         until their back end exists
 *
 * Everything a back end hands out is a tree of heap strings owned by the
 * struct; the *_dispose() functions free them and zero the struct so a
 * second dispose is harmless.
 */
#include "store/store.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/rand.h>

#include "core/alloc.h"
#include "core/err.h"
#include "store/sqlite/sqlite.h"

/* ------------------------------------------------------------ back ends */

static int ch__store_has_prefix(const char *s, const char *prefix) {
  return strncmp(s, prefix, strlen(prefix)) == 0;
}

int ch_store_open(const char *dsn, ch_store_t **out, ch_buf_t *err) {
  char *path = NULL;
  int rc = 0;
  struct stat st;

  if (out) *out = NULL;
  if (!dsn || !*dsn || !out) {
    if (err) ch_buf_printf(err, "store: empty data source name");
    return CH_EINVAL;
  }
  if (ch__store_has_prefix(dsn, "sqlite:")) {
    const char *p = dsn + strlen("sqlite:");
    if (!*p) {
      if (err) ch_buf_printf(err, "store: \"sqlite:\" needs a path");
      return CH_EINVAL;
    }
    if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
      ch_buf_t b = CH_BUF_INIT;
      ch_buf_printf(&b, "%s/chorus.db", p);
      path = ch_buf_cstr(&b);
    } else {
      path = ch_xstrdup(p);
    }
  } else if (ch__store_has_prefix(dsn, "pg:") || ch__store_has_prefix(dsn, "postgres") ||
             strstr(dsn, "://")) {
    if (err) ch_buf_printf(err, "store: no back end for \"%.*s\" (only sqlite: in this build)",
                           (int)strcspn(dsn, ":"), dsn);
    return CH_EUNSUPPORTED;
  } else {
    if (mkdir(dsn, 0700) != 0 && errno != EEXIST) {
      if (err) ch_buf_printf(err, "store: cannot create data directory %s: %s", dsn, strerror(errno));
      return CH_EIO;
    }
    if (stat(dsn, &st) != 0 || !S_ISDIR(st.st_mode)) {
      if (err) ch_buf_printf(err, "store: data directory %s is not a directory", dsn);
      return CH_EINVAL;
    }
    ch_buf_t b = CH_BUF_INIT;
    ch_buf_printf(&b, "%s/chorus.db", dsn);
    path = ch_buf_cstr(&b);
  }
  rc = ch_store_sqlite_open(path, out, err);
  free(path);
  return rc;
}

/* ------------------------------------------------------------------ ids */

/* One RAND_bytes call costs about as much as the rest of an append (OpenSSL 3
 * locks its DRBG and checks for fork on every call), and every appended event
 * gets an id. So each thread draws ids from its own pool of random bytes,
 * refilled 32 ids at a time. A fork empties the pool in the child (the
 * atfork handler bumps a generation), so parent and child never hand out the
 * same bytes. The ids are unique, not secret. */
#define CH__UUID_POOL 512
static _Thread_local unsigned char ch__uuid_pool[CH__UUID_POOL];
static _Thread_local size_t ch__uuid_used = CH__UUID_POOL; /* bytes already handed out */
static _Thread_local unsigned ch__uuid_gen;                 /* ch__uuid_forks at the last fill */
static atomic_uint ch__uuid_forks;
static pthread_once_t ch__uuid_once = PTHREAD_ONCE_INIT;

static void ch__uuid_atfork_child(void) { atomic_fetch_add(&ch__uuid_forks, 1); }
static void ch__uuid_init(void) { pthread_atfork(NULL, NULL, ch__uuid_atfork_child); }

void ch_uuid4(char out[37]) {
  static const char hex[] = "0123456789abcdef";
  unsigned char r[16];
  pthread_once(&ch__uuid_once, ch__uuid_init);
  unsigned gen = atomic_load_explicit(&ch__uuid_forks, memory_order_relaxed);
  if (ch__uuid_used + sizeof(r) > CH__UUID_POOL || gen != ch__uuid_gen) {
    if (RAND_bytes(ch__uuid_pool, CH__UUID_POOL) != 1) {
      /* No entropy means no safe ids (epochs, event ids): nothing sane to continue with. */
      fprintf(stderr, "chorus: RAND_bytes failed; cannot generate ids\n");
      abort();
    }
    ch__uuid_used = 0;
    ch__uuid_gen = gen;
  }
  memcpy(r, ch__uuid_pool + ch__uuid_used, sizeof(r));
  memset(ch__uuid_pool + ch__uuid_used, 0, sizeof(r));
  ch__uuid_used += sizeof(r);
  r[6] = (unsigned char)((r[6] & 0x0f) | 0x40); /* version 4 */
  r[8] = (unsigned char)((r[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  size_t j = 0;
  for (size_t i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out[j++] = '-';
    out[j++] = hex[r[i] >> 4];
    out[j++] = hex[r[i] & 15];
  }
  out[j] = '\0';
}

/* -------------------------------------------------------------- release */

void ch_event_dispose(ch_event_t *ev) {
  if (!ev) return;
  free(ev->conversation_id);
  free(ev->id);
  free(ev->client_id);
  free(ev->type);
  free(ev->role);
  free(ev->content);
  free(ev->source);
  free(ev->user_id);
  free(ev->device_id);
  free(ev->body);
  memset(ev, 0, sizeof(*ev));
}

void ch_store_events_free(ch_event_t *evs, size_t n) {
  if (!evs) return;
  for (size_t i = 0; i < n; i++) ch_event_dispose(&evs[i]);
  free(evs);
}

void ch_conv_dispose(ch_conv_t *c) {
  if (!c) return;
  free(c->id);
  free(c->project_id);
  free(c->title);
  free(c->owner);
  free(c->agent);
  free(c->metadata);
  free(c->epoch);
  for (size_t i = 0; i < c->nmembers; i++) free(c->members[i]);
  free(c->members);
  memset(c, 0, sizeof(*c));
}

static char *ch__dup_or_null(const char *s) { return s ? ch_xstrdup(s) : NULL; }

void ch_conv_copy(ch_conv_t *dst, const ch_conv_t *src) {
  *dst = *src;
  dst->id = ch__dup_or_null(src->id);
  dst->project_id = ch__dup_or_null(src->project_id);
  dst->title = ch__dup_or_null(src->title);
  dst->owner = ch__dup_or_null(src->owner);
  dst->agent = ch__dup_or_null(src->agent);
  dst->metadata = ch__dup_or_null(src->metadata);
  dst->epoch = ch__dup_or_null(src->epoch);
  dst->members = src->nmembers ? ch_xmalloc(src->nmembers * sizeof(*dst->members)) : NULL;
  for (size_t i = 0; i < src->nmembers; i++) dst->members[i] = ch_xstrdup(src->members[i]);
}

void ch_store_convs_free(ch_conv_t *cs, size_t n) {
  if (!cs) return;
  for (size_t i = 0; i < n; i++) ch_conv_dispose(&cs[i]);
  free(cs);
}

void ch_project_dispose(ch_project_t *p) {
  if (!p) return;
  free(p->id);
  free(p->name);
  free(p->owner);
  memset(p, 0, sizeof(*p));
}

void ch_apikey_dispose(ch_apikey_t *k) {
  if (!k) return;
  free(k->id);
  free(k->hash);
  free(k->user_id);
  free(k->scopes);
  free(k->label);
  memset(k, 0, sizeof(*k));
}
