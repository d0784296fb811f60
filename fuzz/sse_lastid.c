/*
 * sse_lastid.c — libFuzzer harness for the SSE codec.
 *
 * 1. ch_sse_last_event_id on the input (as a C string) must agree with an
 *    independent definition of "canonical decimal u64": accepted exactly when
 *    canonical, and then printing the value gives the input back.
 * 2. ch_sse_event on fields cut from the input must read back, through a
 *    minimal WHATWG event-stream parser, as exactly one event with the id and
 *    type minus CR/LF and the data with CR LF / CR turned into LF.
 *
 * Input layout for 2: byte 0 = flags (bit 0: id present, bit 1: event present),
 * then id NUL event NUL data (data may hold more NULs).
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"
#include "sse/sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "sse_lastid: %s\n", what);
    abort();
  }
}

/* ---------------------------------------------------------------- 1. Last-Event-ID */

static int canonical_u64(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 20) return 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return 0;
  }
  if (n > 1 && s[0] == '0') return 0;
  return n < 20 || strcmp(s, "18446744073709551615") <= 0;
}

static void fuzz_last_id(const uint8_t *d, size_t n) {
  char *s = malloc(n + 1);
  memcpy(s, d, n);
  s[n] = '\0';
  uint64_t v = 0xdeadbeef;
  int rc = ch_sse_last_event_id(s, &v);
  check(rc == 0 || rc == CH_EINVAL, "unexpected return code");
  check((rc == 0) == canonical_u64(s), "accepts a non-canonical id or refuses a canonical one");
  if (rc == 0) {
    char back[32];
    snprintf(back, sizeof(back), "%" PRIu64, v);
    check(strcmp(back, s) == 0, "value does not print back as the input");
  } else {
    check(v == 0xdeadbeef, "output written on failure");
  }
  free(s);
}

/* ---------------------------------------------------------------- 2. event round trip */

typedef struct {
  ch_buf_t line, type, data, id;
  int events;
  ch_buf_t ev_type, ev_data, ev_id; /* the last dispatched event */
} reader_t;

static void reader_line(reader_t *r) {
  const char *l = r->line.base ? r->line.base : "";
  size_t n = r->line.len;
  if (n == 0) {
    if (r->data.len == 0) {
      r->type.len = 0;
      return;
    }
    r->events++;
    r->ev_type.len = r->ev_data.len = r->ev_id.len = 0;
    ch_buf_append(&r->ev_type, r->type.len ? r->type.base : "message", r->type.len ? r->type.len : 7);
    ch_buf_append(&r->ev_data, r->data.base, r->data.len - 1);
    ch_buf_append(&r->ev_id, r->id.base, r->id.len);
    r->type.len = r->data.len = 0;
    return;
  }
  if (l[0] == ':') return;
  const char *colon = memchr(l, ':', n);
  size_t fn = colon ? (size_t)(colon - l) : n;
  const char *v = colon ? colon + 1 : l + n;
  if (colon && v < l + n && *v == ' ') v++;
  size_t vn = (size_t)(l + n - v);
  if (fn == 5 && memcmp(l, "event", 5) == 0) {
    r->type.len = 0;
    ch_buf_append(&r->type, v, vn);
  } else if (fn == 4 && memcmp(l, "data", 4) == 0) {
    ch_buf_append(&r->data, v, vn);
    ch_buf_append_byte(&r->data, '\n');
  } else if (fn == 2 && memcmp(l, "id", 2) == 0 && memchr(v, '\0', vn) == NULL) {
    r->id.len = 0;
    ch_buf_append(&r->id, v, vn);
  }
}

static void reader_run(reader_t *r, const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (p[i] == '\n' || p[i] == '\r') {
      reader_line(r);
      r->line.len = 0;
      if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') i++;
    } else {
      ch_buf_append_byte(&r->line, p[i]);
    }
  }
  check(r->line.len == 0, "output does not end with a line break");
}

static void strip_crlf(const char *s, ch_buf_t *out) {
  for (; *s; s++) {
    if (*s != '\r' && *s != '\n') ch_buf_append_byte(out, *s);
  }
}

static int same(const ch_buf_t *a, const ch_buf_t *b) {
  return a->len == b->len && (a->len == 0 || memcmp(a->base, b->base, a->len) == 0);
}

static void fuzz_event(const uint8_t *d, size_t n) {
  if (n == 0) return;
  unsigned flags = d[0];
  const char *p = (const char *)d + 1, *end = (const char *)d + n;
  /* id and event are NUL-terminated segments; missing terminators mean empty. */
  const char *z1 = memchr(p, '\0', (size_t)(end - p));
  char *id = z1 ? strndup(p, (size_t)(z1 - p)) : strdup("");
  p = z1 ? z1 + 1 : end;
  const char *z2 = memchr(p, '\0', (size_t)(end - p));
  char *ev = z2 ? strndup(p, (size_t)(z2 - p)) : strdup("");
  p = z2 ? z2 + 1 : p;
  const char *data = p;
  size_t len = (size_t)(end - p);

  ch_buf_t out = CH_BUF_INIT, want_id = CH_BUF_INIT, want_type = CH_BUF_INIT, want_data = CH_BUF_INIT;
  ch_sse_event(&out, (flags & 1) ? id : NULL, (flags & 2) ? ev : NULL, data, len);
  /* A heartbeat and a retry between events change nothing. */
  ch_sse_comment(&out, ev);
  ch_sse_retry(&out, flags);

  if (flags & 1) strip_crlf(id, &want_id);
  if (flags & 2) strip_crlf(ev, &want_type);
  if (want_type.len == 0) ch_buf_append_str(&want_type, "message");
  for (size_t i = 0; i < len; i++) {
    if (data[i] == '\r') {
      ch_buf_append_byte(&want_data, '\n');
      if (i + 1 < len && data[i + 1] == '\n') i++;
    } else {
      ch_buf_append_byte(&want_data, data[i]);
    }
  }

  reader_t r;
  memset(&r, 0, sizeof(r));
  reader_run(&r, out.base, out.len);
  check(r.events == 1, "not exactly one event");
  check(same(&r.ev_id, &want_id), "id changed");
  check(same(&r.ev_type, &want_type), "event type changed");
  check(same(&r.ev_data, &want_data), "data changed");

  ch_buf_dispose(&r.line);
  ch_buf_dispose(&r.type);
  ch_buf_dispose(&r.data);
  ch_buf_dispose(&r.id);
  ch_buf_dispose(&r.ev_type);
  ch_buf_dispose(&r.ev_data);
  ch_buf_dispose(&r.ev_id);
  ch_buf_dispose(&out);
  ch_buf_dispose(&want_id);
  ch_buf_dispose(&want_type);
  ch_buf_dispose(&want_data);
  free(id);
  free(ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  fuzz_last_id(d, n);
  fuzz_event(d, n);
  return 0;
}
