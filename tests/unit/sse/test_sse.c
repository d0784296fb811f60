/*
 * test_sse.c — the SSE encoders byte for byte, their output read back by an
 * independent parser written from the WHATWG algorithm, and the strict
 * Last-Event-ID parser.
 *
 * ch_sse_last_event_id takes a whole header value (a C string from the HTTP
 * parser), so there is no partial input to split; the round trips instead
 * read the encoder's output back whole, byte by byte and in random splits
 * through the reference parser, which is incremental like a browser's.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "sse/sse.h"

/* ---------------------------------------------------------------- reference parser */

/*
 * "Interpreting an event stream", WHATWG HTML 9.2.6, fed in arbitrary chunks.
 * Records every dispatched event; lines are ended by CR LF, LF or CR.
 */
typedef struct ref_event_s {
  ch_buf_t type, data, id;
} ref_event_t;

typedef struct ref_s {
  ch_buf_t line;      /* current incomplete line */
  int after_cr;       /* the last byte fed was CR: a following LF belongs to it */
  ch_buf_t type, data, last_id;
  long retry;         /* last valid retry value, -1 if none */
  ref_event_t ev[8];
  int nev;
} ref_t;

static void ref_init(ref_t *r) {
  memset(r, 0, sizeof(*r));
  r->retry = -1;
}

static void ref_dispose(ref_t *r) {
  ch_buf_dispose(&r->line);
  ch_buf_dispose(&r->type);
  ch_buf_dispose(&r->data);
  ch_buf_dispose(&r->last_id);
  for (int i = 0; i < r->nev; i++) {
    ch_buf_dispose(&r->ev[i].type);
    ch_buf_dispose(&r->ev[i].data);
    ch_buf_dispose(&r->ev[i].id);
  }
}

static void ref_line(ref_t *r) {
  const char *l = r->line.base ? r->line.base : "";
  size_t n = r->line.len;
  if (n == 0) { /* dispatch */
    if (r->data.len == 0) {
      r->type.len = 0;
      return;
    }
    r->data.len--; /* the final LF */
    assert_true(r->nev < 8);
    ref_event_t *e = &r->ev[r->nev++];
    memset(e, 0, sizeof(*e));
    if (r->type.len) {
      ch_buf_append(&e->type, r->type.base, r->type.len);
    } else {
      ch_buf_append_str(&e->type, "message");
    }
    ch_buf_append(&e->data, r->data.base, r->data.len);
    ch_buf_append(&e->id, r->last_id.base, r->last_id.len);
    r->data.len = r->type.len = 0;
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
  } else if (fn == 2 && memcmp(l, "id", 2) == 0) {
    if (memchr(v, '\0', vn) == NULL) {
      r->last_id.len = 0;
      ch_buf_append(&r->last_id, v, vn);
    }
  } else if (fn == 5 && memcmp(l, "retry", 5) == 0) {
    int digits = vn > 0;
    for (size_t i = 0; i < vn; i++) digits &= v[i] >= '0' && v[i] <= '9';
    if (digits) r->retry = strtol(v, NULL, 10);
  }
}

static void ref_feed(ref_t *r, const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char ch = p[i];
    if (r->after_cr) {
      r->after_cr = 0;
      if (ch == '\n') continue;
    }
    if (ch == '\n' || ch == '\r') {
      ref_line(r);
      r->line.len = 0;
      r->after_cr = ch == '\r';
    } else {
      ch_buf_append_byte(&r->line, ch);
    }
  }
}

/* Feed out whole (mode 0), byte by byte (1) or in random splits (2). */
static void ref_parse(ref_t *r, const ch_buf_t *out, int mode) {
  ref_init(r);
  size_t i = 0;
  while (i < out->len) {
    size_t step = mode == 0 ? out->len - i : mode == 1 ? 1 : 1 + (size_t)rand() % 7;
    if (step > out->len - i) step = out->len - i;
    ref_feed(r, out->base + i, step);
    i += step;
  }
}

/* ---------------------------------------------------------------- helpers */

static void assert_bytes(const ch_buf_t *b, const char *want, size_t n) {
  if (b->len != n || memcmp(b->base, want, n) != 0) {
    fail_msg("got %zu bytes '%.*s', want %zu bytes '%.*s'", b->len, (int)b->len, b->base, n, (int)n, want);
  }
}
#define ASSERT_OUT(b, lit) assert_bytes((b), (lit), sizeof(lit) - 1)

/* Payload with CR LF and CR turned into LF: what a client reconstructs. */
static void normalise(const char *p, size_t n, ch_buf_t *out) {
  for (size_t i = 0; i < n; i++) {
    if (p[i] == '\r') {
      ch_buf_append_byte(out, '\n');
      if (i + 1 < n && p[i + 1] == '\n') i++;
    } else {
      ch_buf_append_byte(out, p[i]);
    }
  }
}

/* Encode, then read back in all three feeding modes; the one event must match. */
static void round_trip(const char *id, const char *event, const char *data, size_t len) {
  ch_buf_t out = CH_BUF_INIT, want = CH_BUF_INIT, want_id = CH_BUF_INIT, want_type = CH_BUF_INIT;
  ch_sse_event(&out, id, event, data, len);
  normalise(data, len, &want);
  for (const char *p = id ? id : ""; *p; p++) {
    if (*p != '\r' && *p != '\n') ch_buf_append_byte(&want_id, *p);
  }
  for (const char *p = event && event[0] ? event : "message"; *p; p++) {
    if (*p != '\r' && *p != '\n') ch_buf_append_byte(&want_type, *p);
  }
  if (want_type.len == 0) ch_buf_append_str(&want_type, "message");
  for (int mode = 0; mode < 3; mode++) {
    ref_t r;
    ref_parse(&r, &out, mode);
    assert_int_equal(r.nev, 1);
    assert_int_equal(r.line.len, 0); /* nothing left half-read */
    assert_int_equal(r.ev[0].data.len, want.len);
    if (want.len) assert_memory_equal(r.ev[0].data.base, want.base, want.len);
    assert_int_equal(r.ev[0].id.len, want_id.len);
    if (want_id.len) assert_memory_equal(r.ev[0].id.base, want_id.base, want_id.len);
    assert_int_equal(r.ev[0].type.len, want_type.len);
    assert_memory_equal(r.ev[0].type.base, want_type.base, want_type.len);
    ref_dispose(&r);
  }
  ch_buf_dispose(&out);
  ch_buf_dispose(&want);
  ch_buf_dispose(&want_id);
  ch_buf_dispose(&want_type);
}

/* ---------------------------------------------------------------- encoder, exact bytes */

static void test_event_basic(void **state) {
  (void)state;
  ch_buf_t b = CH_BUF_INIT;
  ch_sse_event(&b, "42", "message", "{\"a\":1}", 7);
  ASSERT_OUT(&b, "id: 42\nevent: message\ndata: {\"a\":1}\n\n");
  b.len = 0;
  ch_sse_event(&b, NULL, NULL, "x", 1);
  ASSERT_OUT(&b, "data: x\n\n");
  b.len = 0;
  ch_sse_event(&b, NULL, "", "x", 1); /* empty event type = default */
  ASSERT_OUT(&b, "data: x\n\n");
  b.len = 0;
  ch_sse_event(&b, "", NULL, "x", 1); /* empty id is sent: it resets the client's id */
  ASSERT_OUT(&b, "id: \ndata: x\n\n");
  b.len = 0;
  ch_sse_event(&b, "7", NULL, NULL, 0);
  ASSERT_OUT(&b, "id: 7\ndata: \n\n");
  /* Appends, never overwrites. */
  ch_sse_event(&b, NULL, "ping", "", 0);
  ASSERT_OUT(&b, "id: 7\ndata: \n\nevent: ping\ndata: \n\n");
  ch_buf_dispose(&b);
}

static void test_event_line_breaks(void **state) {
  (void)state;
  ch_buf_t b = CH_BUF_INIT;
  ch_sse_event(&b, NULL, NULL, "a\nb\r\nc\rd", 8);
  ASSERT_OUT(&b, "data: a\ndata: b\ndata: c\ndata: d\n\n");
  b.len = 0;
  ch_sse_event(&b, NULL, NULL, "a\n", 2);
  ASSERT_OUT(&b, "data: a\ndata: \n\n");
  b.len = 0;
  ch_sse_event(&b, NULL, NULL, "\n", 1);
  ASSERT_OUT(&b, "data: \ndata: \n\n");
  b.len = 0;
  ch_sse_event(&b, NULL, NULL, "\r\r\n\n\r", 5); /* CR, CRLF, LF, CR: four breaks */
  ASSERT_OUT(&b, "data: \ndata: \ndata: \ndata: \ndata: \n\n");
  b.len = 0;
  ch_sse_event(&b, NULL, NULL, "x\r", 2);
  ASSERT_OUT(&b, "data: x\ndata: \n\n");
  b.len = 0;
  ch_sse_event(&b, NULL, NULL, "a\0b", 3); /* NUL is data, not an end */
  ASSERT_OUT(&b, "data: a\0b\n\n");
  b.len = 0;
  ch_sse_event(&b, NULL, NULL, "abcdef", 3); /* len, not strlen */
  ASSERT_OUT(&b, "data: abc\n\n");
  ch_buf_dispose(&b);
}

static void test_event_field_injection(void **state) {
  (void)state;
  ch_buf_t b = CH_BUF_INIT;
  ch_sse_event(&b, "1\n\ndata: evil\r\n", "a\rb\nc", "ok", 2);
  ASSERT_OUT(&b, "id: 1data: evil\nevent: abc\ndata: ok\n\n");
  b.len = 0;
  ch_sse_event(&b, "\r\n", "\n", "x", 1); /* nothing left of them but the fields */
  ASSERT_OUT(&b, "id: \nevent: \ndata: x\n\n");
  b.len = 0;
  ch_sse_event(&b, NULL, NULL, "data: a\n\nid: 9\nevent: x", 23);
  ASSERT_OUT(&b, "data: data: a\ndata: \ndata: id: 9\ndata: event: x\n\n");
  ch_buf_dispose(&b);
  round_trip("1\n\ndata: evil\r\n", "a\rb\nc", "ok", 2);
  round_trip(NULL, NULL, "data: a\n\nid: 9\nevent: x", 23);
}

static void test_comment_and_retry(void **state) {
  (void)state;
  ch_buf_t b = CH_BUF_INIT;
  ch_sse_comment(&b, "hb");
  ASSERT_OUT(&b, ": hb\n\n");
  b.len = 0;
  ch_sse_comment(&b, NULL);
  ASSERT_OUT(&b, ":\n\n");
  b.len = 0;
  ch_sse_comment(&b, "");
  ASSERT_OUT(&b, ":\n\n");
  b.len = 0;
  ch_sse_comment(&b, "a\nb\r\ndata: x");
  ASSERT_OUT(&b, ": a\n: b\n: data: x\n\n");
  b.len = 0;
  ch_sse_retry(&b, 3000);
  ASSERT_OUT(&b, "retry: 3000\n\n");
  b.len = 0;
  ch_sse_retry(&b, 0);
  ASSERT_OUT(&b, "retry: 0\n\n");
  b.len = 0;
  ch_sse_retry(&b, 4294967295u);
  ASSERT_OUT(&b, "retry: 4294967295\n\n");
  /* Read back: comments and retry dispatch nothing; retry is seen. */
  b.len = 0;
  ch_sse_comment(&b, "a\nb\r\ndata: x");
  ch_sse_retry(&b, 2500);
  ch_sse_comment(&b, NULL);
  for (int mode = 0; mode < 3; mode++) {
    ref_t r;
    ref_parse(&r, &b, mode);
    assert_int_equal(r.nev, 0);
    assert_int_equal(r.retry, 2500);
    ref_dispose(&r);
  }
  ch_buf_dispose(&b);
}

static void test_stream_of_events(void **state) {
  (void)state;
  /* Several events back to back, read back in splits: each keeps its own fields. */
  ch_buf_t b = CH_BUF_INIT;
  ch_sse_retry(&b, 1000);
  ch_sse_event(&b, "1", "message", "{\"n\":1}", 7);
  ch_sse_comment(&b, "heartbeat");
  ch_sse_event(&b, NULL, "typing", "a\r\nb", 4);
  ch_sse_event(&b, "3", NULL, "", 0);
  for (int mode = 0; mode < 3; mode++) {
    ref_t r;
    ref_parse(&r, &b, mode);
    assert_int_equal(r.nev, 3);
    assert_int_equal(r.retry, 1000);
    assert_memory_equal(r.ev[0].data.base, "{\"n\":1}", 7);
    assert_memory_equal(r.ev[0].id.base, "1", 1);
    assert_int_equal(r.ev[1].type.len, 6);
    assert_memory_equal(r.ev[1].type.base, "typing", 6);
    assert_int_equal(r.ev[1].data.len, 3);
    assert_memory_equal(r.ev[1].data.base, "a\nb", 3);
    assert_memory_equal(r.ev[1].id.base, "1", 1); /* the last id persists */
    assert_int_equal(r.ev[2].data.len, 0);
    assert_memory_equal(r.ev[2].id.base, "3", 1);
    assert_memory_equal(r.ev[2].type.base, "message", 7);
    ref_dispose(&r);
  }
  ch_buf_dispose(&b);
}

static void test_round_trip_random(void **state) {
  (void)state;
  static const char alphabet[] = {'a', 'b', ' ', ':', '\n', '\r', '\0', '\x7f', '\xc3', '\xa9', 'd', 'i'};
  srand(12345);
  for (int iter = 0; iter < 3000; iter++) {
    char data[64], id[16], ev[16];
    size_t n = (size_t)rand() % sizeof(data);
    for (size_t i = 0; i < n; i++) data[i] = alphabet[rand() % (int)sizeof(alphabet)];
    size_t ni = (size_t)rand() % sizeof(id), ne = (size_t)rand() % sizeof(ev);
    for (size_t i = 0; i < ni; i++) id[i] = alphabet[rand() % (int)(sizeof(alphabet) - 4)];
    for (size_t i = 0; i < ne; i++) ev[i] = alphabet[rand() % (int)(sizeof(alphabet) - 4)];
    id[ni] = ev[ne] = '\0'; /* the alphabet's NUL may cut them shorter: fine, they are C strings */
    round_trip(iter % 3 ? id : NULL, iter % 5 ? ev : NULL, data, n);
  }
}

/* ---------------------------------------------------------------- Last-Event-ID */

static void test_last_event_id_good(void **state) {
  (void)state;
  struct {
    const char *in;
    uint64_t v;
  } good[] = {
      {"0", 0},
      {"1", 1},
      {"42", 42},
      {"9007199254740993", 9007199254740993ULL},
      {"18446744073709551614", 18446744073709551614ULL},
      {"18446744073709551615", UINT64_MAX},
      {"10000000000000000000", 10000000000000000000ULL},
  };
  for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++) {
    uint64_t v = 7;
    assert_int_equal(ch_sse_last_event_id(good[i].in, &v), 0);
    assert_true(v == good[i].v);
  }
  /* Every u64 formatted canonically parses back to itself. */
  srand(99);
  for (int i = 0; i < 10000; i++) {
    uint64_t x = ((uint64_t)rand() << 62) ^ ((uint64_t)rand() << 31) ^ (uint64_t)rand();
    x >>= rand() % 64;
    char s[32];
    snprintf(s, sizeof(s), "%" PRIu64, x);
    uint64_t v;
    assert_int_equal(ch_sse_last_event_id(s, &v), 0);
    assert_true(v == x);
  }
}

static void test_last_event_id_bad(void **state) {
  (void)state;
  const char *bad[] = {"", " ", "-1", "+1", " 1", "1 ", "1\n", "01", "00", "007", "1a", "a1", "0x10",
                       "1.0", "1e3", "18446744073709551616", "18446744073709551620",
                       "99999999999999999999", "100000000000000000000", "000000000000000000001",
                       "123456789012345678901234567890", "１", "\t1"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
    uint64_t v = 12345;
    if (ch_sse_last_event_id(bad[i], &v) != CH_EINVAL) fail_msg("accepted '%s'", bad[i]);
    assert_true(v == 12345); /* untouched */
  }
  uint64_t v = 5;
  assert_int_equal(ch_sse_last_event_id(NULL, &v), CH_EINVAL);
  assert_true(v == 5);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_event_basic),
      cmocka_unit_test(test_event_line_breaks),
      cmocka_unit_test(test_event_field_injection),
      cmocka_unit_test(test_comment_and_retry),
      cmocka_unit_test(test_stream_of_events),
      cmocka_unit_test(test_round_trip_random),
      cmocka_unit_test(test_last_event_id_good),
      cmocka_unit_test(test_last_event_id_bad),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
