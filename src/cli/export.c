/*
 * export.c — `chorus export` and `chorus import` (see export.h).
 *
 *   export:  store ──conv_list/conv_get──> conversations (sorted: created, id)
 *              │  per conversation, events paged 1,000 at a time up to the
 *              │  conversation's last_seq as read first (a consistent cut
 *              │  while a hub keeps writing)
 *              ├─ chorus:  one document, streamed conversation by conversation
 *              │           (memory ~ one conversation's page of events)
 *              └─ unified: one file per conversation; edits applied, deleted
 *                          messages left out (the unified shape has no events)
 *            every file is written to NAME.tmp-PID, fsync'ed, then renamed
 *
 *   import:  FILE|DIR|- ──read, cJSON──> per conversation a PLAN
 *              (ch__xa_plan_t: the conversation row, members, events — all
 *              validated before the store is touched)
 *            ──apply──> begin ── conv / members / events ── commit | rollback
 *
 * Idempotency.
 *   chorus   the file carries every event's seq (1..n, gap-free, as the store
 *            numbers them). An event whose seq the stored conversation already
 *            has must be the same event (same id, same kind) and is skipped;
 *            the others are appended and must land on their seq. Anything else
 *            is a conflict: the conversation is rolled back and reported.
 *   unified  messages are appended with their `id` as client id (a message
 *            without one gets "import:<index in the file>"), and the store's
 *            (conversation, client id) uniqueness makes a re-import a no-op.
 *
 * Bodies. Export embeds each stored body verbatim (cJSON raw) when it is
 * valid JSON, else as a string. Import re-prints parsed bodies with cJSON:
 * equal JSON, and byte-equal for bodies the hub wrote (also cJSON-printed).
 * Numbers beyond 2^53 lose precision in that re-print (cJSON holds doubles).
 *
 * Ownership: a plan owns every string in it (ch_conv_dispose /
 * ch_store_events_free); cJSON trees are owned by the function that parsed
 * them. Option values are borrowed from argv.
 *
 * Exit codes: 0 ok, 1 failure, 2 usage (export.h).
 */
#include "cli/args.h"
#include "cli/export.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/auth.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/err.h"
#include "store/store.h"


#define CH__XA_VERSION 1        /* "version" of the chorus export document */
#define CH__XA_ID_MAX 128       /* bytes in any id (the store's limit) */
#define CH__XA_PAGE 1000        /* events read per store call */
#define CH__XA_MAX_SEQ (UINT64_C(1) << 53) /* largest seq a JSON number carries exactly */

enum { CH__XA_FMT_NONE = 0, CH__XA_FMT_CHORUS = 1, CH__XA_FMT_UNIFIED = 2 };

static const char *const ch__xa_kinds[] = {NULL, "message", "edit", "delete", "reaction", "member", "custom"};


/* ============================================================== options */

static int ch__xa_format_parse(const char *cmd, const char *s, int *fmt) {
  *fmt = CH__XA_FMT_NONE;
  if (s == NULL) return 0;
  if (strcmp(s, "chorus") == 0) *fmt = CH__XA_FMT_CHORUS;
  else if (strcmp(s, "unified") == 0) *fmt = CH__XA_FMT_UNIFIED;
  else {
    fprintf(stderr, "chorus %s: --format takes chorus or unified, not '%s'\n", cmd, s);
    return CH_CLI_EXIT_USAGE;
  }
  return 0;
}


/* ================================================================ time */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t ch__xa_days_from_civil(int64_t y, int m, int d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

/* n decimal digits at *p into *v; advances *p. 0, or -1 when not n digits. */
static int ch__xa_digits(const char **p, int n, int *v) {
  int x = 0;
  for (int i = 0; i < n; i++) {
    char c = (*p)[i];
    if (c < '0' || c > '9') return -1;
    x = x * 10 + (c - '0');
  }
  *p += n;
  *v = x;
  return 0;
}

/* ISO 8601 "YYYY-MM-DDTHH:MM[:SS[.fff...]][Z|±HH:MM|±HHMM]" (no zone = UTC;
 * 'T' may be a space) into UTC ms. Years 1970..9999 only: the store keeps
 * positive ms. 0 or CH_EINVAL. */
static int ch__xa_iso_parse(const char *s, int64_t *out) {
  int y, mo, d, h, mi, sec = 0, ms = 0, zh = 0, zm = 0, sign = 0;
  static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const char *p = s;

  if (ch__xa_digits(&p, 4, &y) || *p++ != '-' || ch__xa_digits(&p, 2, &mo) || *p++ != '-' ||
      ch__xa_digits(&p, 2, &d))
    return CH_EINVAL;
  if (*p != 'T' && *p != 't' && *p != ' ') return CH_EINVAL;
  p++;
  if (ch__xa_digits(&p, 2, &h) || *p++ != ':' || ch__xa_digits(&p, 2, &mi)) return CH_EINVAL;
  if (*p == ':') {
    p++;
    if (ch__xa_digits(&p, 2, &sec)) return CH_EINVAL;
    if (*p == '.' || *p == ',') {
      p++;
      int nd = 0;
      while (*p >= '0' && *p <= '9') {
        if (nd < 3) ms = ms * 10 + (*p - '0');
        nd++;
        p++;
      }
      if (nd == 0) return CH_EINVAL;
      for (; nd < 3; nd++) ms *= 10;
    }
  }
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    sign = *p++ == '-' ? -1 : 1;
    if (ch__xa_digits(&p, 2, &zh)) return CH_EINVAL;
    if (*p == ':') p++;
    if (ch__xa_digits(&p, 2, &zm)) return CH_EINVAL;
    if (zh > 23 || zm > 59) return CH_EINVAL;
  }
  if (*p != '\0') return CH_EINVAL;
  if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 60)
    return CH_EINVAL;
  if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return CH_EINVAL;
  if (sec == 60) sec = 59; /* a leap second: the store's clock has none */
  int64_t t = ch__xa_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
  t -= (int64_t)sign * (zh * 3600 + zm * 60);
  t = t * 1000 + ms;
  if (t <= 0) return CH_EINVAL;
  *out = t;
  return 0;
}

/* A timestamp in a file: an ISO 8601 string, or a number — epoch ms, or
 * epoch seconds when below 1e11 (before 1973 as ms; after 5000 AD as s).
 * 0 with *out > 0, or CH_EINVAL. */
static int ch__xa_time_value(const cJSON *v, int64_t *out) {
  if (cJSON_IsString(v) && v->valuestring) return ch__xa_iso_parse(v->valuestring, out);
  if (cJSON_IsNumber(v)) {
    double x = v->valuedouble;
    if (!(x >= 1 && x < 253402300800000.0)) return CH_EINVAL; /* 1 ms .. year 9999 */
    if (x < 1e11) x *= 1000;
    *out = (int64_t)x;
    return *out > 0 ? 0 : CH_EINVAL;
  }
  return CH_EINVAL;
}

static void ch__xa_add_time(cJSON *o, const char *name, int64_t ms) {
  char iso[CH_ISO8601_LEN + 1];
  ch_clock_iso8601(ms, iso);
  cJSON_AddStringToObject(o, name, iso);
}

/* ================================================================ files */

/* Read a whole file ("-" = stdin) into b. 0, or CH_EIO with why filled. */
static int ch__xa_read_file(const char *path, ch_buf_t *b, ch_buf_t *why) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  int rc = 0;
  if (f == NULL) {
    ch_buf_printf(why, "cannot open: %s", strerror(errno));
    return CH_EIO;
  }
  for (;;) {
    char *p = ch_buf_reserve(b, 65536);
    size_t n = fread(p, 1, 65536, f);
    b->len += n;
    if (n < 65536) break;
  }
  if (ferror(f)) {
    ch_buf_printf(why, "cannot read: %s", strerror(errno));
    rc = CH_EIO;
  }
  if (f != stdin) fclose(f);
  return rc;
}

/* Parse a whole JSON document; on failure, why says what and where (line, column). */
static cJSON *ch__xa_parse_json(const char *text, size_t len, ch_buf_t *why) {
  const char *end = NULL;
  const char *what = "invalid JSON";
  cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
  if (j != NULL) {
    while (end && end < text + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')) end++;
    if (end == NULL || end >= text + len) return j;
    cJSON_Delete(j);
    what = "trailing data after the JSON document";
  }
  if (len == 0) {
    ch_buf_printf(why, "empty file (not JSON)");
    return NULL;
  }
  size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
  size_t line = 1, col = 1;
  for (size_t i = 0; i < off; i++) {
    if (text[i] == '\n') line++, col = 1;
    else col++;
  }
  ch_buf_printf(why, "%s at line %zu, column %zu", what, line, col);
  return NULL;
}

/* The file writer: path.tmp-PID, then fsync + rename on success. */
typedef struct {
  FILE *f;
  char *path; /* owned; NULL for stdout */
  char *tmp;  /* owned */
} ch__xa_out_t;

static int ch__xa_out_open(ch__xa_out_t *o, const char *path) {
  memset(o, 0, sizeof(*o));
  if (path == NULL || strcmp(path, "-") == 0) {
    o->f = stdout;
    return 0;
  }
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_printf(&b, "%s.tmp-%ld", path, (long)getpid());
  o->tmp = ch_buf_cstr(&b);
  o->path = ch_xstrdup(path);
  o->f = fopen(o->tmp, "wb");
  if (o->f == NULL) {
    fprintf(stderr, "chorus export: cannot create %s: %s\n", o->tmp, strerror(errno));
    free(o->tmp);
    free(o->path);
    memset(o, 0, sizeof(*o));
    return CH_EIO;
  }
  return 0;
}

/* Finish: keep (ok = 1: flush, fsync, rename) or discard. 0 or CH_EIO (said why). */
static int ch__xa_out_close(ch__xa_out_t *o, int ok) {
  int rc = 0;
  if (o->f == NULL) return 0;
  if (o->f == stdout) {
    if (fflush(stdout) != 0 || ferror(stdout)) {
      if (ok) fprintf(stderr, "chorus export: writing to stdout failed: %s\n", strerror(errno));
      rc = CH_EIO;
    }
    o->f = NULL;
    return rc;
  }
  if (ok && (fflush(o->f) != 0 || ferror(o->f) || fsync(fileno(o->f)) != 0)) {
    fprintf(stderr, "chorus export: writing %s failed: %s\n", o->tmp, strerror(errno));
    ok = 0;
    rc = CH_EIO;
  }
  if (fclose(o->f) != 0 && ok) {
    fprintf(stderr, "chorus export: writing %s failed: %s\n", o->tmp, strerror(errno));
    ok = 0;
    rc = CH_EIO;
  }
  if (ok && rename(o->tmp, o->path) != 0) {
    fprintf(stderr, "chorus export: cannot rename %s to %s: %s\n", o->tmp, o->path, strerror(errno));
    rc = CH_EIO;
    ok = 0;
  }
  if (!ok) unlink(o->tmp);
  free(o->tmp);
  free(o->path);
  memset(o, 0, sizeof(*o));
  return rc;
}

/* mkdir -p (mode 0755 for what it creates). 0 or CH_EIO (said why). */
static int ch__xa_mkdirs(const char *dir) {
  char *p = ch_xstrdup(dir);
  int rc = 0;
  struct stat st;
  for (char *q = p + 1;; q++) {
    if (*q == '/' || *q == '\0') {
      char c = *q;
      *q = '\0';
      if (mkdir(p, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "chorus export: cannot create %s: %s\n", p, strerror(errno));
        rc = CH_EIO;
        break;
      }
      *q = c;
      if (c == '\0') break;
    }
  }
  if (rc == 0 && (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))) {
    fprintf(stderr, "chorus export: %s is not a directory\n", dir);
    rc = CH_EIO;
  }
  free(p);
  return rc;
}

/* ============================================================== export */

static int ch__xa_conv_cmp(const void *a, const void *b) {
  const ch_conv_t *x = a, *y = b;
  if (x->created_ms != y->created_ms) return x->created_ms < y->created_ms ? -1 : 1;
  return strcmp(x->id, y->id);
}

/* 1 when text is one complete JSON value (so it can be embedded raw). */
static int ch__xa_json_ok(const char *text) {
  const char *end = NULL;
  cJSON *j = cJSON_ParseWithOpts(text, &end, 1);
  cJSON_Delete(j);
  return j != NULL;
}

/* Stored JSON text as a member: raw when valid JSON, else a string. */
static void ch__xa_add_json_text(cJSON *o, const char *name, const char *text) {
  if (text == NULL) return;
  if (ch__xa_json_ok(text)) cJSON_AddRawToObject(o, name, text);
  else cJSON_AddStringToObject(o, name, text);
}

static void ch__xa_add_opt_str(cJSON *o, const char *name, const char *v) {
  if (v) cJSON_AddStringToObject(o, name, v);
}

static cJSON *ch__xa_event_json(const ch_event_t *ev) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "seq", (double)ev->seq);
  if (ev->kind >= CH_EV_MESSAGE && ev->kind <= CH_EV_CUSTOM)
    cJSON_AddStringToObject(o, "kind", ch__xa_kinds[ev->kind]);
  else cJSON_AddNumberToObject(o, "kind", ev->kind);
  ch__xa_add_opt_str(o, "id", ev->id);
  ch__xa_add_opt_str(o, "clientId", ev->client_id);
  ch__xa_add_opt_str(o, "type", ev->type);
  ch__xa_add_opt_str(o, "role", ev->role);
  ch__xa_add_opt_str(o, "content", ev->content);
  ch__xa_add_opt_str(o, "source", ev->source);
  ch__xa_add_opt_str(o, "userId", ev->user_id);
  ch__xa_add_opt_str(o, "deviceId", ev->device_id);
  ch__xa_add_json_text(o, "body", ev->body);
  ch__xa_add_time(o, "ts", ev->ts_ms);
  if (ev->ref_seq) cJSON_AddNumberToObject(o, "refSeq", (double)ev->ref_seq);
  return o;
}

/* The conversation's fields (no events). */
static cJSON *ch__xa_conv_json(const ch_conv_t *c) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "id", c->id);
  ch__xa_add_opt_str(o, "projectId", c->project_id);
  ch__xa_add_opt_str(o, "title", c->title);
  ch__xa_add_opt_str(o, "owner", c->owner);
  ch__xa_add_opt_str(o, "agent", c->agent);
  ch__xa_add_json_text(o, "metadata", c->metadata);
  ch__xa_add_time(o, "createdAt", c->created_ms);
  ch__xa_add_time(o, "updatedAt", c->updated_ms);
  cJSON_AddNumberToObject(o, "lastSeq", (double)c->last_seq);
  cJSON_AddNumberToObject(o, "messageCount", (double)c->message_count);
  cJSON *m = cJSON_AddArrayToObject(o, "members");
  for (size_t i = 0; i < c->nmembers; i++) cJSON_AddItemToArray(m, cJSON_CreateString(c->members[i]));
  return o;
}

/* Visit the events 1..c->last_seq in order, CH__XA_PAGE at a time.
 * visit returns 0 to go on. 0, a store code, or CH_EBUSY when the
 * conversation changed under us (deleted / re-created). */
typedef int (*ch__xa_visit_cb)(void *ud, const ch_event_t *ev);

static int ch__xa_walk_events(ch_store_t *st, const ch_conv_t *c, ch__xa_visit_cb visit, void *ud) {
  uint64_t next = 1;
  int rc = 0;
  while (next <= c->last_seq) {
    ch_event_t *evs = NULL;
    size_t n = 0;
    rc = st->ops->events(st, c->id, next - 1, CH__XA_PAGE, 0, &evs, &n);
    if (rc != 0) return rc;
    if (n == 0) rc = CH_EBUSY;
    for (size_t i = 0; rc == 0 && i < n && next <= c->last_seq; i++, next++) {
      if (evs[i].seq != next) rc = CH_EBUSY;
      else rc = visit(ud, &evs[i]);
    }
    ch_store_events_free(evs, n);
    if (rc != 0) return rc;
  }
  return 0;
}

typedef struct {
  FILE *f;
  uint64_t nevents;
  int first;
} ch__xa_chorus_w_t;

static int ch__xa_write_event(void *ud, const ch_event_t *ev) {
  ch__xa_chorus_w_t *w = ud;
  cJSON *o = ch__xa_event_json(ev);
  char *s = cJSON_PrintUnformatted(o);
  fputs(w->first ? "\n" : ",\n", w->f);
  fputs(s, w->f);
  w->first = 0;
  w->nevents++;
  cJSON_free(s);
  cJSON_Delete(o);
  return ferror(w->f) ? CH_EIO : 0;
}

static void ch__xa_conv_changed(const char *id, int rc) {
  if (rc == CH_EBUSY)
    fprintf(stderr,
            "chorus export: conversation \"%s\" was deleted or re-created during the export; run it again\n",
            id);
  else
    fprintf(stderr, "chorus export: reading conversation \"%s\" failed: %s\n", id, ch_strerror(rc));
}

/* The whole chorus document to f. 0 or CH_E* (said why). */
static int ch__xa_export_chorus(ch_store_t *st, ch_conv_t *cs, size_t n, int all_projects, FILE *f,
                                uint64_t *nevents) {
  ch_project_t *ps = NULL;
  size_t np = 0;
  char iso[CH_ISO8601_LEN + 1];
  int rc = st->ops->project_list(st, NULL, &ps, &np);
  if (rc != 0) {
    fprintf(stderr, "chorus export: listing projects failed: %s\n", ch_strerror(rc));
    return rc;
  }
  ch_clock_iso8601(ch_clock_wall_ms(), iso);
  fprintf(f, "{\"version\":%d,\"exportedAt\":\"%s\",\"projects\":[", CH__XA_VERSION, iso);
  int first = 1;
  for (size_t i = 0; i < np; i++) {
    int used = all_projects;
    for (size_t k = 0; !used && k < n; k++) used = cs[k].project_id && strcmp(cs[k].project_id, ps[i].id) == 0;
    if (!used) continue;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", ps[i].id);
    ch__xa_add_opt_str(o, "name", ps[i].name);
    ch__xa_add_opt_str(o, "owner", ps[i].owner);
    ch__xa_add_time(o, "createdAt", ps[i].created_ms);
    char *s = cJSON_PrintUnformatted(o);
    fprintf(f, "%s\n%s", first ? "" : ",", s);
    first = 0;
    cJSON_free(s);
    cJSON_Delete(o);
  }
  for (size_t i = 0; i < np; i++) ch_project_dispose(&ps[i]);
  free(ps);
  fputs("],\"conversations\":[", f);
  for (size_t i = 0; i < n; i++) {
    cJSON *o = ch__xa_conv_json(&cs[i]);
    char *s = cJSON_PrintUnformatted(o);
    size_t len = strlen(s);
    /* The conversation's members, then its events streamed in before the closing brace. */
    fprintf(f, "%s\n%.*s,\"events\":[", i ? "," : "", (int)(len - 1), s);
    cJSON_free(s);
    cJSON_Delete(o);
    ch__xa_chorus_w_t w = {f, 0, 1};
    rc = ch__xa_walk_events(st, &cs[i], ch__xa_write_event, &w);
    if (rc != 0) {
      if (rc != CH_EIO || !ferror(f)) ch__xa_conv_changed(cs[i].id, rc);
      return rc;
    }
    *nevents += w.nevents;
    fputs("]}", f);
  }
  fputs("]}\n", f);
  return ferror(f) ? CH_EIO : 0;
}

/* ---- unified */

typedef struct {
  cJSON *msgs;    /* array of message objects, in order */
  uint64_t *seqs; /* seqs[i] = seq of msgs[i] (owned) */
  size_t n, cap;
  uint64_t nevents;
} ch__xa_unified_w_t;

static long ch__xa_find_seq(const ch__xa_unified_w_t *w, uint64_t seq) {
  size_t lo = 0, hi = w->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (w->seqs[mid] == seq) return (long)mid;
    if (w->seqs[mid] < seq) lo = mid + 1;
    else hi = mid;
  }
  return -1;
}

/* The message object of a stored event: its body, or one made of its fields. */
static cJSON *ch__xa_message_of(const ch_event_t *ev) {
  cJSON *m = ev->body ? cJSON_Parse(ev->body) : NULL;
  if (cJSON_IsObject(m)) return m;
  cJSON_Delete(m);
  m = cJSON_CreateObject();
  ch__xa_add_opt_str(m, "id", ev->client_id ? ev->client_id : ev->id);
  ch__xa_add_opt_str(m, "conversationId", ev->conversation_id);
  ch__xa_add_opt_str(m, "role", ev->role);
  ch__xa_add_opt_str(m, "content", ev->content);
  ch__xa_add_opt_str(m, "source", ev->source);
  ch__xa_add_time(m, "timestamp", ev->ts_ms);
  return m;
}

static int ch__xa_collect_message(void *ud, const ch_event_t *ev) {
  ch__xa_unified_w_t *w = ud;
  long at;
  w->nevents++;
  switch (ev->kind) {
  case CH_EV_MESSAGE:
    if (w->n == w->cap) {
      w->cap = w->cap ? w->cap * 2 : 64;
      w->seqs = ch_xrealloc(w->seqs, w->cap * sizeof(*w->seqs));
    }
    w->seqs[w->n++] = ev->seq;
    cJSON_AddItemToArray(w->msgs, ch__xa_message_of(ev));
    break;
  case CH_EV_EDIT:
    if ((at = ch__xa_find_seq(w, ev->ref_seq)) < 0) break;
    cJSON *nb = ev->body ? cJSON_Parse(ev->body) : NULL;
    if (cJSON_IsObject(nb)) {
      cJSON_ReplaceItemInArray(w->msgs, (int)at, nb); /* the body is the new message object */
    } else {
      cJSON_Delete(nb); /* no new object: the old one with the new content */
      cJSON *old = cJSON_GetArrayItem(w->msgs, (int)at);
      if (ev->content) {
        cJSON_DeleteItemFromObjectCaseSensitive(old, "content");
        cJSON_AddStringToObject(old, "content", ev->content);
      }
    }
    break;
  case CH_EV_DELETE:
    if ((at = ch__xa_find_seq(w, ev->ref_seq)) >= 0) {
      cJSON_DeleteItemFromArray(w->msgs, (int)at);
      memmove(&w->seqs[at], &w->seqs[at + 1], (w->n - (size_t)at - 1) * sizeof(*w->seqs));
      w->n--;
    }
    break;
  default: /* reactions, members, custom events: not part of the unified shape */
    break;
  }
  return 0;
}

/* A file name for a conversation id: [A-Za-z0-9._@:-] kept, the rest (and a leading '.') as %XX. */
static void ch__xa_file_name(ch_buf_t *b, const char *id) {
  for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
    int ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
             *p == '-' || *p == '@' || *p == ':' || (*p == '.' && p != (const unsigned char *)id);
    if (ok) ch_buf_append_byte(b, (char)*p);
    else ch_buf_printf(b, "%%%02X", *p);
  }
  ch_buf_append_str(b, ".json");
}

static int ch__xa_export_unified(ch_store_t *st, ch_conv_t *cs, size_t n, const char *dir, uint64_t *nevents) {
  int rc = ch__xa_mkdirs(dir);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    ch__xa_unified_w_t w;
    memset(&w, 0, sizeof(w));
    w.msgs = cJSON_CreateArray();
    rc = ch__xa_walk_events(st, &cs[i], ch__xa_collect_message, &w);
    if (rc != 0) ch__xa_conv_changed(cs[i].id, rc);
    if (rc == 0) {
      cJSON *o = cJSON_CreateObject();
      cJSON_AddStringToObject(o, "id", cs[i].id);
      ch__xa_add_opt_str(o, "title", cs[i].title);
      ch__xa_add_time(o, "createdAt", cs[i].created_ms);
      ch__xa_add_time(o, "updatedAt", cs[i].updated_ms);
      cJSON_AddItemToObject(o, "messages", w.msgs);
      w.msgs = NULL;
      ch_buf_t path = CH_BUF_INIT;
      ch_buf_printf(&path, "%s/", dir);
      ch__xa_file_name(&path, cs[i].id);
      ch__xa_out_t out;
      rc = ch__xa_out_open(&out, ch_buf_cstr(&path));
      if (rc == 0) {
        char *s = cJSON_Print(o);
        fputs(s, out.f);
        fputc('\n', out.f);
        cJSON_free(s);
        rc = ch__xa_out_close(&out, 1);
      }
      ch_buf_dispose(&path);
      cJSON_Delete(o);
      *nevents += w.nevents;
    }
    cJSON_Delete(w.msgs);
    free(w.seqs);
  }
  return rc;
}

static void ch__xa_export_help(void) {
  printf("usage: chorus export [--conversation ID]... [--format chorus|unified] [--out FILE|-|DIR]\n\n"
         "Write the store's conversations as JSON. Works while the hub runs.\n\n"
         "  --conversation ID   only this conversation (repeatable; default: all)\n"
         "  --format chorus     (default) one document with every conversation, its members and\n"
         "                      all its events with their seqs and ids; `chorus import` restores it\n"
         "  --format unified    one file per conversation in DIR, in profile unified's shape:\n"
         "                      {\"id\",\"title\",\"createdAt\",\"updatedAt\",\"messages\":[...]}\n"
         "                      (edits applied, deleted messages left out)\n"
         "  --out FILE|-|DIR    where to write (chorus: default stdout; unified: a directory, required)\n\n%s",
         ch_cli_common_help);
}

int ch_cli_export(int argc, char **argv) {
  const char *out = NULL, *fmt_s = NULL;
  const char **ids = NULL;
  size_t nids = 0;
  const ch_cli_opt_t opts[] = {
      {.name = "--out", .val = &out},
      {.name = "--format", .val = &fmt_s},
      {.name = "--conversation", .list = &ids, .nlist = &nids},
  };
  ch_cli_args_t a;
  ch_store_t *st = NULL;
  ch_conv_t *cs = NULL;
  size_t n = 0;
  uint64_t nevents = 0;
  int fmt = 0;
  struct stat sb;
  int rc = ch_cli_args_parse("export", argc, argv, opts, CH_ARRAY_SIZE(opts), 0, &a);

  if (rc != 0) goto Exit;
  if (a.help) {
    ch__xa_export_help();
    goto Exit;
  }
  if ((rc = ch__xa_format_parse("export", fmt_s, &fmt)) != 0) goto Exit;
  if (fmt == CH__XA_FMT_NONE) fmt = CH__XA_FMT_CHORUS;
  if (fmt == CH__XA_FMT_UNIFIED && (out == NULL || strcmp(out, "-") == 0)) {
    fprintf(stderr, "chorus export: --format unified needs --out DIR (one file per conversation)\n");
    rc = CH_CLI_EXIT_USAGE;
    goto Exit;
  }
  for (size_t i = 0; i < nids; i++) {
    if (ids[i][0] == '\0' || strlen(ids[i]) > CH__XA_ID_MAX) {
      fprintf(stderr, "chorus export: --conversation takes an id of 1..%d bytes\n", CH__XA_ID_MAX);
      rc = CH_CLI_EXIT_USAGE;
      goto Exit;
    }
  }
  if (stat(a.cfg.data_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
    fprintf(stderr, "chorus export: no data directory %s\n", a.cfg.data_dir);
    rc = CH_CLI_EXIT_FAIL;
    goto Exit;
  }
  if ((rc = ch_cli_open_store("export", a.cfg.data_dir, &st)) != 0) goto Exit;

  if (nids > 0) {
    cs = ch_xcalloc(nids, sizeof(*cs));
    for (size_t i = 0; i < nids; i++) {
      int r = 0;
      for (size_t k = 0; k < n; k++)
        if (strcmp(cs[k].id, ids[i]) == 0) r = 1; /* named twice */
      if (r) continue;
      r = st->ops->conv_get(st, ids[i], &cs[n]);
      if (r != 0) {
        fprintf(stderr, "chorus export: conversation \"%s\": %s\n", ids[i],
                r == CH_ENOTFOUND ? "no such conversation" : ch_strerror(r));
        rc = CH_CLI_EXIT_FAIL;
        goto Exit;
      }
      n++;
    }
  } else {
    ch_conv_query_t q = {.limit = SIZE_MAX};
    int r = st->ops->conv_list(st, &q, &cs, &n);
    if (r != 0) {
      fprintf(stderr, "chorus export: listing conversations failed: %s\n", ch_strerror(r));
      rc = CH_CLI_EXIT_FAIL;
      goto Exit;
    }
  }
  if (n > 1) qsort(cs, n, sizeof(*cs), ch__xa_conv_cmp);

  if (fmt == CH__XA_FMT_UNIFIED) {
    if (ch__xa_export_unified(st, cs, n, out, &nevents) != 0) rc = CH_CLI_EXIT_FAIL;
  } else {
    ch__xa_out_t o;
    if (ch__xa_out_open(&o, out) != 0) {
      rc = CH_CLI_EXIT_FAIL;
      goto Exit;
    }
    int r = ch__xa_export_chorus(st, cs, n, nids == 0, o.f, &nevents);
    if (ch__xa_out_close(&o, r == 0) != 0 || r != 0) rc = CH_CLI_EXIT_FAIL;
  }
  if (rc == 0)
    fprintf(stderr, "chorus export: %zu conversation%s, %llu event%s -> %s\n", n, n == 1 ? "" : "s",
            (unsigned long long)nevents, nevents == 1 ? "" : "s", out && strcmp(out, "-") ? out : "stdout");
Exit:
  if (st) ch_store_close(st);
  ch_store_convs_free(cs, n);
  free((void *)ids);
  ch_config_dispose(&a.cfg);
  return rc;
}

/* ============================================================== import */

/* One conversation to import, validated: everything owned. */
typedef struct {
  ch_conv_t conv;     /* id, owner (required), title, project_id, agent, metadata, created/updated ms;
                         members: extra members (owner may be among them) */
  ch_event_t *evs;    /* owned array of owned events; restore: evs[i].seq == i + 1 */
  size_t nevs, cap;
  int restore;        /* 1: a chorus export (seqs and ids kept); 0: unified (appended) */
} ch__xa_plan_t;

static void ch__xa_plan_dispose(ch__xa_plan_t *p) {
  ch_conv_dispose(&p->conv);
  ch_store_events_free(p->evs, p->nevs);
  memset(p, 0, sizeof(*p));
}

static ch_event_t *ch__xa_plan_event(ch__xa_plan_t *p) {
  if (p->nevs == p->cap) {
    p->cap = p->cap ? p->cap * 2 : 64;
    p->evs = ch_xrealloc(p->evs, p->cap * sizeof(*p->evs));
  }
  ch_event_t *ev = &p->evs[p->nevs++];
  memset(ev, 0, sizeof(*ev));
  return ev;
}

static void ch__xa_plan_member(ch__xa_plan_t *p, const char *user) {
  for (size_t i = 0; i < p->conv.nmembers; i++)
    if (strcmp(p->conv.members[i], user) == 0) return;
  p->conv.members = ch_xrealloc(p->conv.members, (p->conv.nmembers + 1) * sizeof(*p->conv.members));
  p->conv.members[p->conv.nmembers++] = ch_xstrdup(user);
}

static int ch__xa_id_ok(const char *s) { return s && s[0] && strlen(s) <= CH__XA_ID_MAX; }

/* Field readers: 0, or CH_EINVAL with why = "<what>: <problem>". A missing or
 * null optional field leaves *out NULL. */
static int ch__xa_get_str(const cJSON *o, const char *name, int required, int is_id, char **out, ch_buf_t *why) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  *out = NULL;
  if (v == NULL || cJSON_IsNull(v)) {
    if (!required) return 0;
    ch_buf_printf(why, "\"%s\" is missing", name);
    return CH_EINVAL;
  }
  if (!cJSON_IsString(v) || v->valuestring == NULL) {
    ch_buf_printf(why, "\"%s\" must be a string", name);
    return CH_EINVAL;
  }
  if (is_id && !ch__xa_id_ok(v->valuestring)) {
    ch_buf_printf(why, "\"%s\" must be 1..%d bytes", name, CH__XA_ID_MAX);
    return CH_EINVAL;
  }
  *out = ch_xstrdup(v->valuestring);
  return 0;
}

/* A non-negative integer field (a JSON number that is a whole number up to 2^53). */
static int ch__xa_get_uint(const cJSON *o, const char *name, int required, uint64_t *out, ch_buf_t *why) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  *out = 0;
  if (v == NULL || cJSON_IsNull(v)) {
    if (!required) return 0;
    ch_buf_printf(why, "\"%s\" is missing", name);
    return CH_EINVAL;
  }
  double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
  if (!(d >= 0 && d <= (double)CH__XA_MAX_SEQ) || d != (double)(uint64_t)d) {
    ch_buf_printf(why, "\"%s\" must be a non-negative integer", name);
    return CH_EINVAL;
  }
  *out = (uint64_t)d;
  return 0;
}

static int ch__xa_get_time(const cJSON *o, const char *name, int64_t *out, ch_buf_t *why) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  *out = 0;
  if (v == NULL || cJSON_IsNull(v)) return 0;
  if (ch__xa_time_value(v, out) != 0) {
    ch_buf_printf(why, "\"%s\" must be an ISO 8601 time (1970..9999) or epoch milliseconds", name);
    return CH_EINVAL;
  }
  return 0;
}

/* A JSON-text field: an object/array/... is printed, a string kept as is. */
static int ch__xa_get_json_text(const cJSON *o, const char *name, char **out, ch_buf_t *why) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  *out = NULL;
  if (v == NULL || cJSON_IsNull(v)) return 0;
  if (cJSON_IsString(v)) {
    *out = ch_xstrdup(v->valuestring);
    return 0;
  }
  if (!cJSON_IsObject(v) && !cJSON_IsArray(v)) {
    ch_buf_printf(why, "\"%s\" must be a JSON object", name);
    return CH_EINVAL;
  }
  char *s = cJSON_PrintUnformatted(v);
  *out = ch_xstrdup(s);
  cJSON_free(s);
  return 0;
}

static int ch__xa_kind_parse(const cJSON *v, int *kind) {
  if (cJSON_IsString(v) && v->valuestring) {
    for (int k = CH_EV_MESSAGE; k <= CH_EV_CUSTOM; k++)
      if (strcmp(v->valuestring, ch__xa_kinds[k]) == 0) return *kind = k, 0;
  } else if (cJSON_IsNumber(v)) {
    for (int k = CH_EV_MESSAGE; k <= CH_EV_CUSTOM; k++)
      if (v->valuedouble == (double)k) return *kind = k, 0;
  }
  return CH_EINVAL;
}

/* One event of a chorus export into ev (conversation_id is set by the caller). */
static int ch__xa_plan_chorus_event(const cJSON *e, uint64_t want_seq, ch_event_t *ev, ch_buf_t *why) {
  uint64_t seq;
  int rc;
  if (!cJSON_IsObject(e)) {
    ch_buf_printf(why, "not an object");
    return CH_EINVAL;
  }
  if ((rc = ch__xa_get_uint(e, "seq", 1, &seq, why)) != 0) return rc;
  if (seq != want_seq) {
    ch_buf_printf(why, "\"seq\" is %llu where %llu was expected (events must be numbered 1, 2, 3, ... in order)",
                  (unsigned long long)seq, (unsigned long long)want_seq);
    return CH_EINVAL;
  }
  ev->seq = seq;
  if (ch__xa_kind_parse(cJSON_GetObjectItemCaseSensitive(e, "kind"), &ev->kind) != 0) {
    ch_buf_printf(why, "\"kind\" must be one of message, edit, delete, reaction, member, custom");
    return CH_EINVAL;
  }
  if ((rc = ch__xa_get_str(e, "id", 1, 1, &ev->id, why)) != 0 ||
      (rc = ch__xa_get_str(e, "clientId", 0, 1, &ev->client_id, why)) != 0 ||
      (rc = ch__xa_get_str(e, "type", 0, 0, &ev->type, why)) != 0 ||
      (rc = ch__xa_get_str(e, "role", 0, 0, &ev->role, why)) != 0 ||
      (rc = ch__xa_get_str(e, "content", 0, 0, &ev->content, why)) != 0 ||
      (rc = ch__xa_get_str(e, "source", 0, 0, &ev->source, why)) != 0 ||
      (rc = ch__xa_get_str(e, "userId", 1, 1, &ev->user_id, why)) != 0 ||
      (rc = ch__xa_get_str(e, "deviceId", 0, 1, &ev->device_id, why)) != 0 ||
      (rc = ch__xa_get_json_text(e, "body", &ev->body, why)) != 0 ||
      (rc = ch__xa_get_time(e, "ts", &ev->ts_ms, why)) != 0 ||
      (rc = ch__xa_get_uint(e, "refSeq", 0, &ev->ref_seq, why)) != 0)
    return rc;
  if ((ev->kind == CH_EV_EDIT || ev->kind == CH_EV_DELETE || ev->kind == CH_EV_REACTION) &&
      (ev->ref_seq == 0 || ev->ref_seq >= seq)) {
    ch_buf_printf(why, "%s %s needs \"refSeq\" naming an earlier event", ev->kind == CH_EV_EDIT ? "an" : "a",
                  ch__xa_kinds[ev->kind]);
    return CH_EINVAL;
  }
  return 0;
}

/* A conversation of a chorus export into p. why gets the reason, without the location. */
static int ch__xa_plan_chorus(const cJSON *c, ch__xa_plan_t *p, ch_buf_t *why) {
  int rc;
  memset(p, 0, sizeof(*p));
  p->restore = 1;
  if (!cJSON_IsObject(c)) {
    ch_buf_printf(why, "not an object");
    return CH_EINVAL;
  }
  if ((rc = ch__xa_get_str(c, "id", 1, 1, &p->conv.id, why)) != 0 ||
      (rc = ch__xa_get_str(c, "owner", 1, 1, &p->conv.owner, why)) != 0 ||
      (rc = ch__xa_get_str(c, "projectId", 0, 1, &p->conv.project_id, why)) != 0 ||
      (rc = ch__xa_get_str(c, "title", 0, 0, &p->conv.title, why)) != 0 ||
      (rc = ch__xa_get_str(c, "agent", 0, 0, &p->conv.agent, why)) != 0 ||
      (rc = ch__xa_get_json_text(c, "metadata", &p->conv.metadata, why)) != 0 ||
      (rc = ch__xa_get_time(c, "createdAt", &p->conv.created_ms, why)) != 0 ||
      (rc = ch__xa_get_time(c, "updatedAt", &p->conv.updated_ms, why)) != 0)
    return rc;
  const cJSON *ms = cJSON_GetObjectItemCaseSensitive(c, "members");
  if (ms && !cJSON_IsNull(ms)) {
    const cJSON *m;
    size_t i = 0;
    if (!cJSON_IsArray(ms)) {
      ch_buf_printf(why, "\"members\" must be an array of user ids");
      return CH_EINVAL;
    }
    cJSON_ArrayForEach(m, ms) {
      if (!cJSON_IsString(m) || !ch__xa_id_ok(m->valuestring)) {
        ch_buf_printf(why, "members[%zu] must be a user id of 1..%d bytes", i, CH__XA_ID_MAX);
        return CH_EINVAL;
      }
      ch__xa_plan_member(p, m->valuestring);
      i++;
    }
  }
  const cJSON *es = cJSON_GetObjectItemCaseSensitive(c, "events");
  if (es && !cJSON_IsNull(es)) {
    const cJSON *e;
    if (!cJSON_IsArray(es)) {
      ch_buf_printf(why, "\"events\" must be an array");
      return CH_EINVAL;
    }
    cJSON_ArrayForEach(e, es) {
      ch_event_t *ev = ch__xa_plan_event(p);
      ev->conversation_id = ch_xstrdup(p->conv.id);
      ch_buf_t w = CH_BUF_INIT;
      rc = ch__xa_plan_chorus_event(e, p->nevs, ev, &w);
      if (rc != 0) ch_buf_printf(why, "events[%zu]: %s", p->nevs - 1, ch_buf_cstr(&w));
      ch_buf_dispose(&w);
      if (rc != 0) return rc;
    }
  }
  return 0;
}

/* A unified conversation object into p, owned by user. fallback_id (or NULL):
 * the id when the object has none (the file name). */
static int ch__xa_plan_unified(cJSON *c, const char *fallback_id, const char *user, ch__xa_plan_t *p,
                               ch_buf_t *why) {
  int rc;
  memset(p, 0, sizeof(*p));
  if (!cJSON_IsObject(c)) {
    ch_buf_printf(why, "not a conversation object (expected {\"id\",...,\"messages\":[...]})");
    return CH_EINVAL;
  }
  if ((rc = ch__xa_get_str(c, "id", 0, 1, &p->conv.id, why)) != 0) return rc;
  if (p->conv.id == NULL) {
    if (!ch__xa_id_ok(fallback_id)) {
      ch_buf_printf(why, "\"id\" is missing");
      return CH_EINVAL;
    }
    p->conv.id = ch_xstrdup(fallback_id);
  }
  if ((rc = ch__xa_get_str(c, "title", 0, 0, &p->conv.title, why)) != 0 ||
      (rc = ch__xa_get_json_text(c, "metadata", &p->conv.metadata, why)) != 0 ||
      (rc = ch__xa_get_time(c, "createdAt", &p->conv.created_ms, why)) != 0 ||
      (rc = ch__xa_get_time(c, "updatedAt", &p->conv.updated_ms, why)) != 0)
    return rc;
  p->conv.owner = ch_xstrdup(user);
  cJSON *ms = cJSON_GetObjectItemCaseSensitive(c, "messages");
  if (!cJSON_IsArray(ms)) {
    ch_buf_printf(why, ms ? "\"messages\" must be an array of message objects" : "\"messages\" is missing");
    return CH_EINVAL;
  }
  int64_t last_ts = p->conv.created_ms;
  size_t i = 0;
  cJSON *m;
  cJSON_ArrayForEach(m, ms) {
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id");
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
    const cJSON *uid = cJSON_GetObjectItemCaseSensitive(m, "userId");
    const cJSON *did = cJSON_GetObjectItemCaseSensitive(m, "deviceId");
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(m, "source");
    const char *bad = NULL;
    if (!cJSON_IsObject(m)) bad = "is not an object";
    else if (id && !(cJSON_IsString(id) && ch__xa_id_ok(id->valuestring)))
      bad = ".id must be a string of 1..128 bytes";
    else if (role && !(cJSON_IsString(role) &&
                       (!strcmp(role->valuestring, "user") || !strcmp(role->valuestring, "assistant") ||
                        !strcmp(role->valuestring, "system") || !strcmp(role->valuestring, "tool"))))
      bad = ".role must be user, assistant, system or tool";
    else if (content && !cJSON_IsString(content) && !cJSON_IsNull(content)) bad = ".content must be a string";
    if (bad) {
      ch_buf_printf(why, "messages[%zu]%s%s", i, bad[0] == '.' ? "" : " ", bad);
      return CH_EINVAL;
    }
    ch_event_t *ev = ch__xa_plan_event(p);
    int64_t ts = 0;
    ev->conversation_id = ch_xstrdup(p->conv.id);
    ev->kind = CH_EV_MESSAGE;
    if (ch__xa_time_value(cJSON_GetObjectItemCaseSensitive(m, "timestamp"), &ts) != 0) ts = last_ts;
    if (ts <= 0) ts = ch_clock_wall_ms();
    last_ts = ev->ts_ms = ts;
    /* Fill what the hub would have filled; keep every field the file has. */
    char uuid[37];
    ch_uuid4(uuid);
    if (id) {
      ev->client_id = ch_xstrdup(id->valuestring);
    } else {
      ch_buf_t b = CH_BUF_INIT;
      ch_buf_printf(&b, "import:%zu", i);
      ev->client_id = ch_buf_cstr(&b);
      ev->id = ch_xstrdup(uuid); /* the server id and the message's id are one, as the hub makes them */
      cJSON_AddStringToObject(m, "id", uuid);
    }
    if (!cJSON_GetObjectItemCaseSensitive(m, "conversationId"))
      cJSON_AddStringToObject(m, "conversationId", p->conv.id);
    /* "seq" is the hub's: it puts the stored one in front of the body (as the hub drops a client's). */
    cJSON_DeleteItemFromObjectCaseSensitive(m, "seq");
    if (!role) cJSON_AddStringToObject(m, "role", "user");
    if (!cJSON_GetObjectItemCaseSensitive(m, "timestamp")) ch__xa_add_time(m, "timestamp", ts);
    ev->user_id = ch_xstrdup(cJSON_IsString(uid) && ch__xa_id_ok(uid->valuestring) ? uid->valuestring : user);
    if (!uid) cJSON_AddStringToObject(m, "userId", user);
    if (cJSON_IsString(did) && ch__xa_id_ok(did->valuestring)) ev->device_id = ch_xstrdup(did->valuestring);
    ev->role = ch_xstrdup(role ? role->valuestring : "user");
    if (cJSON_IsString(content)) ev->content = ch_xstrdup(content->valuestring);
    if (cJSON_IsString(src)) ev->source = ch_xstrdup(src->valuestring);
    char *body = cJSON_PrintUnformatted(m);
    ev->body = ch_xstrdup(body);
    cJSON_free(body);
    i++;
  }
  if (p->conv.created_ms == 0) p->conv.created_ms = p->nevs ? p->evs[0].ts_ms : ch_clock_wall_ms();
  return 0;
}

/* ---- apply */

typedef struct {
  ch_store_t *st;
  const char *user;            /* --user (unified), borrowed */
  uint64_t conv_new, conv_updated, conv_unchanged, ev_added, ev_present, failed;
} ch__xa_imp_t;

static int ch__xa_is_member(const ch_conv_t *c, const char *user) {
  if (c->owner && strcmp(c->owner, user) == 0) return 1;
  for (size_t i = 0; i < c->nmembers; i++)
    if (strcmp(c->members[i], user) == 0) return 1;
  return 0;
}

/* Write one plan in one transaction. 0 (counted in im), or CH_E* with why. */
static int ch__xa_apply(ch__xa_imp_t *im, ch__xa_plan_t *p, ch_buf_t *why) {
  ch_store_t *st = im->st;
  ch_conv_t cur;
  int rc, exists = 0, changed = 0;
  uint64_t added = 0, present = 0;

  memset(&cur, 0, sizeof(cur));
  if ((rc = st->ops->begin(st)) != 0) {
    ch_buf_printf(why, "cannot start a transaction: %s", ch_strerror(rc));
    return rc;
  }
  rc = st->ops->conv_get(st, p->conv.id, &cur);
  if (rc == 0) {
    exists = 1;
  } else if (rc != CH_ENOTFOUND) {
    ch_buf_printf(why, "reading the stored conversation failed: %s", ch_strerror(rc));
    goto Exit;
  }
  rc = 0;
  if (exists && p->restore && strcmp(cur.owner ? cur.owner : "", p->conv.owner) != 0) {
    ch_buf_printf(why, "conflict: the store already has this conversation, owned by \"%s\", not \"%s\"",
                  cur.owner ? cur.owner : "", p->conv.owner);
    rc = CH_EEXIST;
    goto Exit;
  }
  if (exists && !p->restore && !ch__xa_is_member(&cur, p->conv.owner)) {
    ch_buf_printf(why, "the store already has this conversation, owned by \"%s\" (not a conversation of \"%s\")",
                  cur.owner ? cur.owner : "", p->conv.owner);
    rc = CH_EPERM;
    goto Exit;
  }
  if (!exists) {
    if ((rc = st->ops->conv_put(st, &p->conv, NULL)) != 0) {
      ch_buf_printf(why, "creating the conversation failed: %s", ch_strerror(rc));
      goto Exit;
    }
    changed = 1;
  } else if (!p->restore && cur.title == NULL && p->conv.title) {
    ch_conv_t up = {.id = p->conv.id, .title = p->conv.title};
    if ((rc = st->ops->conv_put(st, &up, NULL)) != 0) {
      ch_buf_printf(why, "setting the title failed: %s", ch_strerror(rc));
      goto Exit;
    }
    changed = 1;
  }
  for (size_t i = 0; i < p->conv.nmembers; i++) {
    const char *u = p->conv.members[i];
    if (strcmp(u, p->conv.owner) == 0 || (exists && ch__xa_is_member(&cur, u))) continue;
    if ((rc = st->ops->member_set(st, p->conv.id, u, "member")) != 0) {
      ch_buf_printf(why, "adding member \"%s\" failed: %s", u, ch_strerror(rc));
      goto Exit;
    }
    changed = 1;
  }
  for (size_t i = 0; i < p->nevs; i++) {
    ch_event_t *ev = &p->evs[i];
    uint64_t want = ev->seq;
    if (p->restore && exists && want <= cur.last_seq) {
      ch_event_t have;
      memset(&have, 0, sizeof(have));
      rc = st->ops->event_get(st, p->conv.id, want, &have);
      if (rc == 0 && (have.kind != ev->kind || strcmp(have.id ? have.id : "", ev->id) != 0)) {
        ch_buf_printf(why, "conflict: the stored event at seq %llu is another event (id \"%s\", file: \"%s\")",
                      (unsigned long long)want, have.id ? have.id : "", ev->id);
        rc = CH_EEXIST;
      } else if (rc != 0) {
        ch_buf_printf(why, "reading the stored event at seq %llu failed: %s", (unsigned long long)want,
                      ch_strerror(rc));
      }
      ch_event_dispose(&have);
      if (rc != 0) goto Exit;
      present++;
      continue;
    }
    ch_buf_t err = CH_BUF_INIT;
    rc = st->ops->append(st, ev, &err);
    if (rc != 0) {
      ch_buf_printf(why, "%s %zu: %s", p->restore ? "event" : "message", p->restore ? (size_t)want : i,
                    err.len ? ch_buf_cstr(&err) : ch_strerror(rc));
    } else if (p->restore && (ev->duplicate || ev->seq != want)) {
      if (ev->duplicate)
        ch_buf_printf(why, "conflict: event %llu's client id \"%s\" is already stored at seq %llu",
                      (unsigned long long)want, ev->client_id, (unsigned long long)ev->seq);
      else
        ch_buf_printf(why, "conflict: event %llu landed on seq %llu (the stored history differs)",
                      (unsigned long long)want, (unsigned long long)ev->seq);
      rc = CH_EEXIST;
    }
    ch_buf_dispose(&err);
    if (rc != 0) goto Exit;
    if (ev->duplicate) present++;
    else added++;
  }
Exit:
  if (rc == 0) {
    rc = st->ops->commit(st);
    if (rc != 0) ch_buf_printf(why, "commit failed: %s", ch_strerror(rc));
  } else {
    st->ops->rollback(st);
  }
  if (rc == 0) {
    if (!exists) im->conv_new++;
    else if (changed || added) im->conv_updated++;
    else im->conv_unchanged++;
    im->ev_added += added;
    im->ev_present += present;
  }
  ch_conv_dispose(&cur);
  return rc;
}

/* ---- sources */

/* A parsed unified conversation from `where` (a file name, for the id fallback and messages). */
static void ch__xa_import_unified_doc(ch__xa_imp_t *im, cJSON *doc, const char *where) {
  ch__xa_plan_t p;
  ch_buf_t why = CH_BUF_INIT;
  /* The file name without directory and ".json": the id when the object has none. */
  const char *base = strrchr(where, '/');
  base = base ? base + 1 : where;
  size_t bl = strlen(base);
  char *stem = ch_xstrndup(base, bl > 5 && strcmp(base + bl - 5, ".json") == 0 ? bl - 5 : bl);
  int rc = ch__xa_plan_unified(doc, strcmp(where, "-") == 0 ? NULL : stem, im->user, &p, &why);
  if (rc == 0) rc = ch__xa_apply(im, &p, &why);
  if (rc != 0) {
    fprintf(stderr, "chorus import: %s%s%s%s: %s; nothing imported from it\n", where,
            p.conv.id ? " (conversation \"" : "", p.conv.id ? p.conv.id : "", p.conv.id ? "\")" : "",
            ch_buf_cstr(&why));
    im->failed++;
  }
  ch__xa_plan_dispose(&p);
  ch_buf_dispose(&why);
  free(stem);
}

static int ch__xa_name_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every *.json file of dir (sorted by name; hidden files skipped). */
static int ch__xa_import_dir(ch__xa_imp_t *im, const char *dir) {
  DIR *d = opendir(dir);
  char **names = NULL;
  size_t n = 0;
  struct dirent *de;
  if (d == NULL) {
    fprintf(stderr, "chorus import: cannot open directory %s: %s\n", dir, strerror(errno));
    return CH_EIO;
  }
  while ((de = readdir(d)) != NULL) {
    size_t l = strlen(de->d_name);
    if (de->d_name[0] == '.' || l <= 5 || strcmp(de->d_name + l - 5, ".json") != 0) continue;
    names = ch_xrealloc(names, (n + 1) * sizeof(*names));
    names[n++] = ch_xstrdup(de->d_name);
  }
  closedir(d);
  if (n == 0) {
    fprintf(stderr, "chorus import: no *.json files in %s\n", dir);
    im->failed++;
  }
  qsort(names, n, sizeof(*names), ch__xa_name_cmp);
  for (size_t i = 0; i < n; i++) {
    ch_buf_t path = CH_BUF_INIT, text = CH_BUF_INIT, why = CH_BUF_INIT;
    struct stat sb;
    ch_buf_printf(&path, "%s/%s", dir, names[i]);
    const char *where = ch_buf_cstr(&path);
    if (stat(where, &sb) != 0 || !S_ISREG(sb.st_mode)) {
      /* not a regular file: skipped */
    } else if (ch__xa_read_file(where, &text, &why) != 0) {
      fprintf(stderr, "chorus import: %s: %s\n", where, ch_buf_cstr(&why));
      im->failed++;
    } else {
      cJSON *doc = ch__xa_parse_json(text.base ? text.base : "", text.len, &why);
      if (doc == NULL) {
        fprintf(stderr, "chorus import: %s: %s; nothing imported from it\n", where, ch_buf_cstr(&why));
        im->failed++;
      } else {
        ch__xa_import_unified_doc(im, doc, where);
      }
      cJSON_Delete(doc);
    }
    ch_buf_dispose(&path);
    ch_buf_dispose(&text);
    ch_buf_dispose(&why);
    free(names[i]);
  }
  free(names);
  return 0;
}

/* A chorus export document. */
static void ch__xa_import_chorus_doc(ch__xa_imp_t *im, const cJSON *doc, const char *where) {
  const cJSON *ver = cJSON_GetObjectItemCaseSensitive(doc, "version");
  const cJSON *cs = cJSON_GetObjectItemCaseSensitive(doc, "conversations");
  const cJSON *ps = cJSON_GetObjectItemCaseSensitive(doc, "projects");
  const cJSON *c;
  size_t i = 0;
  if (!cJSON_IsNumber(ver) || ver->valuedouble != CH__XA_VERSION) {
    fprintf(stderr, "chorus import: %s: unsupported export \"version\" (this chorus reads version %d)\n", where,
            CH__XA_VERSION);
    im->failed++;
    return;
  }
  if (!cJSON_IsArray(cs) || (ps && !cJSON_IsNull(ps) && !cJSON_IsArray(ps))) {
    fprintf(stderr, "chorus import: %s: \"conversations\" (and \"projects\", when present) must be arrays\n", where);
    im->failed++;
    return;
  }
  cJSON_ArrayForEach(c, ps) {
    ch_project_t pj, have;
    ch_buf_t why = CH_BUF_INIT;
    memset(&pj, 0, sizeof(pj));
    memset(&have, 0, sizeof(have));
    int rc = !cJSON_IsObject(c) ? (ch_buf_printf(&why, "not an object"), CH_EINVAL) : 0;
    if (rc == 0 && (rc = ch__xa_get_str(c, "id", 1, 1, &pj.id, &why)) == 0 &&
        (rc = ch__xa_get_str(c, "name", 0, 0, &pj.name, &why)) == 0 &&
        (rc = ch__xa_get_str(c, "owner", 1, 1, &pj.owner, &why)) == 0 &&
        (rc = ch__xa_get_time(c, "createdAt", &pj.created_ms, &why)) == 0) {
      rc = im->st->ops->project_get(im->st, pj.id, &have);
      if (rc == CH_ENOTFOUND) rc = im->st->ops->project_put(im->st, &pj, NULL);
      if (rc != 0) ch_buf_printf(&why, "storing the project failed: %s", ch_strerror(rc));
    }
    if (rc != 0) {
      fprintf(stderr, "chorus import: %s: projects[%zu]: %s\n", where, i, ch_buf_cstr(&why));
      im->failed++;
    }
    ch_project_dispose(&pj);
    ch_project_dispose(&have);
    ch_buf_dispose(&why);
    i++;
  }
  i = 0;
  cJSON_ArrayForEach(c, cs) {
    ch__xa_plan_t p;
    ch_buf_t why = CH_BUF_INIT;
    int rc = ch__xa_plan_chorus(c, &p, &why);
    if (rc == 0) rc = ch__xa_apply(im, &p, &why);
    if (rc != 0) {
      fprintf(stderr, "chorus import: %s: conversations[%zu]%s%s%s: %s; nothing imported for it\n", where, i,
              p.conv.id ? " (\"" : "", p.conv.id ? p.conv.id : "", p.conv.id ? "\")" : "", ch_buf_cstr(&why));
      im->failed++;
    }
    ch__xa_plan_dispose(&p);
    ch_buf_dispose(&why);
    i++;
  }
}

static void ch__xa_import_help(void) {
  printf("usage: chorus import [--user U] [--format chorus|unified] FILE|DIR|-\n\n"
         "Load conversations into the store. Works while the hub runs; each conversation is one\n"
         "transaction (a bad one leaves nothing behind), and importing the same data twice changes\n"
         "nothing.\n\n"
         "  FILE            a `chorus export` document: conversations restored with their seqs,\n"
         "                  event ids, timestamps and members\n"
         "  DIR             profile unified's data: one JSON file per conversation (*.json),\n"
         "                  {\"id\",\"title\"?,\"createdAt\"?,\"updatedAt\"?,\"messages\":[message objects]};\n"
         "                  a single such FILE works too\n"
         "  -               read the document from stdin\n"
         "  --user U        owner of the unified conversations (required for them)\n"
         "  --format F      chorus or unified: skip the detection by content\n\n"
         "Prints one line of counts on stdout:\n"
         "  conversations: N (new N, updated N, unchanged N), events added: N, already present: N, failed: N\n\n%s",
         ch_cli_common_help);
}

int ch_cli_import(int argc, char **argv) {
  const char *user = NULL, *fmt_s = NULL;
  const ch_cli_opt_t opts[] = {
      {.name = "--user", .val = &user},
      {.name = "--format", .val = &fmt_s},
  };
  ch_cli_args_t a;
  ch__xa_imp_t im;
  ch_buf_t text = CH_BUF_INIT, why = CH_BUF_INIT;
  cJSON *doc = NULL;
  struct stat sb;
  int fmt = 0, is_dir = 0;
  int rc = ch_cli_args_parse("import", argc, argv, opts, CH_ARRAY_SIZE(opts), 1, &a);

  memset(&im, 0, sizeof(im));
  if (rc != 0) goto Exit;
  if (a.help) {
    ch__xa_import_help();
    goto Exit;
  }
  if ((rc = ch__xa_format_parse("import", fmt_s, &fmt)) != 0) goto Exit;
  if (a.npos != 1) {
    fprintf(stderr, "chorus import: name the FILE or DIR to import (see `chorus import --help`)\n");
    rc = CH_CLI_EXIT_USAGE;
    goto Exit;
  }
  if (user && !ch_auth_id_valid(user)) {
    fprintf(stderr, "chorus import: --user must be 1..128 characters of A-Z a-z 0-9 . _ @ : -\n");
    rc = CH_CLI_EXIT_USAGE;
    goto Exit;
  }
  const char *src = a.pos[0];
  if (strcmp(src, "-") != 0) {
    if (stat(src, &sb) != 0) {
      fprintf(stderr, "chorus import: %s: %s\n", src, strerror(errno));
      rc = CH_CLI_EXIT_FAIL;
      goto Exit;
    }
    is_dir = S_ISDIR(sb.st_mode);
  }
  if (is_dir && fmt == CH__XA_FMT_CHORUS) {
    fprintf(stderr, "chorus import: %s is a directory: a chorus export is one file\n", src);
    rc = CH_CLI_EXIT_USAGE;
    goto Exit;
  }
  if ((is_dir || fmt == CH__XA_FMT_UNIFIED) && user == NULL) {
    fprintf(stderr, "chorus import: unified conversations need --user U (their owner)\n");
    rc = CH_CLI_EXIT_USAGE;
    goto Exit;
  }
  if (!is_dir) {
    /* Read and parse before opening the store: a bad file touches nothing. */
    if (ch__xa_read_file(src, &text, &why) != 0) {
      fprintf(stderr, "chorus import: %s: %s\n", src, ch_buf_cstr(&why));
      rc = CH_CLI_EXIT_FAIL;
      goto Exit;
    }
    doc = ch__xa_parse_json(text.base ? text.base : "", text.len, &why);
    if (doc == NULL) {
      fprintf(stderr, "chorus import: %s: %s; nothing imported\n", src, ch_buf_cstr(&why));
      rc = CH_CLI_EXIT_FAIL;
      goto Exit;
    }
    if (fmt == CH__XA_FMT_NONE) {
      if (cJSON_IsObject(doc) && cJSON_GetObjectItemCaseSensitive(doc, "conversations")) fmt = CH__XA_FMT_CHORUS;
      else if (cJSON_IsObject(doc) && cJSON_GetObjectItemCaseSensitive(doc, "messages")) fmt = CH__XA_FMT_UNIFIED;
      else {
        fprintf(stderr, "chorus import: %s: neither a chorus export ({\"version\",\"conversations\"}) nor a "
                        "unified conversation ({\"id\",\"messages\"}); nothing imported\n", src);
        rc = CH_CLI_EXIT_FAIL;
        goto Exit;
      }
    }
    if (fmt == CH__XA_FMT_UNIFIED && user == NULL) {
      fprintf(stderr, "chorus import: %s is a unified conversation: it needs --user U (its owner)\n", src);
      rc = CH_CLI_EXIT_USAGE;
      goto Exit;
    }
  }
  if ((rc = ch_cli_open_store("import", a.cfg.data_dir, &im.st)) != 0) goto Exit;
  im.user = user;
  if (is_dir) {
    if (ch__xa_import_dir(&im, src) != 0) im.failed++;
  } else if (fmt == CH__XA_FMT_UNIFIED) {
    ch__xa_import_unified_doc(&im, doc, src);
  } else {
    ch__xa_import_chorus_doc(&im, doc, src);
  }
  printf("conversations: %llu (new %llu, updated %llu, unchanged %llu), events added: %llu, "
         "already present: %llu, failed: %llu\n",
         (unsigned long long)(im.conv_new + im.conv_updated + im.conv_unchanged), (unsigned long long)im.conv_new,
         (unsigned long long)im.conv_updated, (unsigned long long)im.conv_unchanged, (unsigned long long)im.ev_added,
         (unsigned long long)im.ev_present, (unsigned long long)im.failed);
  if (fflush(stdout) != 0) im.failed++;
  rc = im.failed ? CH_CLI_EXIT_FAIL : CH_CLI_EXIT_OK;
Exit:
  if (im.st) ch_store_close(im.st);
  cJSON_Delete(doc);
  ch_buf_dispose(&text);
  ch_buf_dispose(&why);
  ch_config_dispose(&a.cfg);
  return rc;
}
