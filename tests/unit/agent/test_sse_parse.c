/*
 * test_sse_parse.c — the upstream event-stream parser and the UTF-8 cleaner
 * (agent/sse_parse.h).
 *
 * Every SSE vector is fed whole, byte by byte and in 200 random splits, each
 * piece copied right before a PROT_NONE guard page (an over-read faults),
 * and must give the same events (rendered "[type]data|" each) and the same
 * result code. Vectors cover LF / CR / CRLF line ends (a CRLF split between
 * two feeds included), comments, multi-line data, field parsing (one space
 * stripped, no colon, unknown fields), the type's reset, events without
 * data, the BOM, the end without a blank line, the size cap, a callback that
 * stops the feed, and captured-style OpenAI and Anthropic streams.
 *
 * The UTF-8 cleaner: fixed vectors of Unicode's "maximal subpart" practice,
 * the carry of an incomplete tail across calls, and two properties over
 * random input: valid text split anywhere comes back byte for byte, and any
 * bytes come out as valid UTF-8 identical to a one-shot clean.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/sse_parse.h"
#include "core/buf.h"
#include "core/err.h"
#include "ws/utf8.h"

/* ---- guard page --------------------------------------------------------------- */

#define GUARD_SPAN (1u << 20)
static char *g_guard; /* first byte of the PROT_NONE page */

static int setup_guard(void **state) {
  (void)state;
  long page = sysconf(_SC_PAGESIZE);
  char *m = mmap(NULL, GUARD_SPAN + (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(m != MAP_FAILED);
  assert_int_equal(mprotect(m + GUARD_SPAN, (size_t)page, PROT_NONE), 0);
  g_guard = m + GUARD_SPAN;
  return 0;
}

/* p[0..n) copied so that its last byte sits right before the guard page. */
static const char *guarded(const char *p, size_t n) {
  assert_true(n <= GUARD_SPAN);
  memcpy(g_guard - n, p, n);
  return g_guard - n;
}

/* ---- SSE: recording events ---------------------------------------------------- */

typedef struct {
  ch_buf_t out;
  int stop_at; /* return 7 from this event (1-based); 0: never */
  int n;
} rec_t;

static int rec_event(void *ud, const char *type, size_t tl, const char *data, size_t dl) {
  rec_t *r = ud;
  r->n++;
  ch_buf_append_byte(&r->out, '[');
  ch_buf_append(&r->out, type, tl);
  ch_buf_append_byte(&r->out, ']');
  ch_buf_append(&r->out, data, dl);
  ch_buf_append_byte(&r->out, '|');
  return r->stop_at && r->n == r->stop_at ? 7 : 0;
}

typedef struct {
  const char *in;
  size_t len;      /* 0: strlen(in) */
  size_t max;      /* 0: 1 MiB */
  int stop_at;
  int finish;      /* call finish at the end */
  const char *out; /* expected events */
  int rc;          /* expected result (of the feeds, then of finish) */
} sse_vec_t;

/* Feed v in pieces cut at the given offsets (cuts[0..ncuts) increasing). */
static void run_split(const sse_vec_t *v, const size_t *cuts, size_t ncuts) {
  size_t len = v->len ? v->len : strlen(v->in);
  rec_t r = {.out = CH_BUF_INIT, .stop_at = v->stop_at};
  ch_agent_sse_t p;
  ch_agent_sse_init(&p, v->max ? v->max : (1u << 20), rec_event, &r);
  size_t at = 0;
  int rc = 0;
  for (size_t i = 0; i <= ncuts && rc == 0; i++) {
    size_t to = i < ncuts ? cuts[i] : len;
    rc = ch_agent_sse_feed(&p, guarded(v->in + at, to - at), to - at);
    at = to;
  }
  if (rc == 0 && v->finish) rc = ch_agent_sse_finish(&p);
  if (strcmp(ch_buf_cstr(&r.out), v->out) != 0 || rc != v->rc) {
    fprintf(stderr, "input %.*s\nexpected %s (rc %d)\ngot      %s (rc %d)\ncuts:", (int)len, v->in, v->out, v->rc,
            ch_buf_cstr(&r.out), rc);
    for (size_t i = 0; i < ncuts; i++) fprintf(stderr, " %zu", cuts[i]);
    fprintf(stderr, "\n");
    fail();
  }
  ch_agent_sse_dispose(&p);
  ch_buf_dispose(&r.out);
}

static void run_vec(const sse_vec_t *v) {
  size_t len = v->len ? v->len : strlen(v->in);
  run_split(v, NULL, 0); /* whole */
  size_t *cuts = malloc((len + 1) * sizeof(size_t));
  for (size_t i = 1; i < len; i++) cuts[i - 1] = i;
  run_split(v, cuts, len > 0 ? len - 1 : 0); /* byte by byte */
  for (int k = 0; k < 200; k++) {          /* random splits */
    size_t n = 0;
    for (size_t i = 1; i < len; i++)
      if (rand() % 4 == 0) cuts[n++] = i;
    run_split(v, cuts, n);
  }
  free(cuts);
}

static const char OPENAI[] =
    ": OPENROUTER PROCESSING\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo \xc3\xa9\"},\"finish_reason\":\"stop\"}]}\n\n"
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n"
    "data: [DONE]\n\n";
static const char OPENAI_OUT[] =
    "[]{\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}|"
    "[]{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}|"
    "[]{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo \xc3\xa9\"},\"finish_reason\":\"stop\"}]}|"
    "[]{\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}|"
    "[][DONE]|";

static const char ANTHROPIC[] =
    "event: message_start\r\n"
    "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\r\n\r\n"
    "event: ping\r\ndata: {\"type\": \"ping\"}\r\n\r\n"
    "event: content_block_delta\r\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\r\n\r\n"
    "event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n";
static const char ANTHROPIC_OUT[] =
    "[message_start]{\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}|"
    "[ping]{\"type\": \"ping\"}|"
    "[content_block_delta]{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":"
    "\"Hi\"}}|"
    "[message_stop]{\"type\":\"message_stop\"}|";

static const sse_vec_t g_vecs[] = {
    {.in = "data: hello\n\n", .out = "[]hello|"},
    {.in = "data: a\ndata: b\n\n", .out = "[]a\nb|"},
    {.in = "event: delta\ndata: {}\n\n", .out = "[delta]{}|"},
    {.in = "event: x\r\ndata: 1\r\n\r\n", .out = "[x]1|"},
    {.in = "data: 1\r\rdata: 2\r\r", .out = "[]1|[]2|"},
    {.in = "data: 1\r\n\ndata: 2\n\r\n", .out = "[]1|[]2|"},
    {.in = ": keep-alive\n\ndata: z\n\n", .out = "[]z|"},
    {.in = "data:x\n\ndata:  y\n\n", .out = "[]x|[] y|"},
    {.in = "data\n\n", .out = "[]|"},
    {.in = "data:\ndata:\n\n", .out = "[]\n|"},
    {.in = "id: 5\nretry: 10\nfoo: bar\nDATA: no\ndata: q\n\n", .out = "[]q|"},
    {.in = "event: a\ndata: 1\n\ndata: 2\n\n", .out = "[a]1|[]2|"},
    {.in = "event: a\n\ndata: 2\n\n", .out = "[]2|"},
    {.in = "event: a\nevent: b\ndata: 3\n\n", .out = "[b]3|"},
    {.in = "event\ndata: 3\n\n", .out = "[]3|"},
    {.in = "\xEF\xBB\xBF" "data: b\n\n", .out = "[]b|"},
    {.in = "data: \xEF\xBB\xBFx\n\n", .out = "[]\xEF\xBB\xBFx|"},
    {.in = "\xEF\xBB" "data: x\n\n", .out = ""},
    {.in = "\xEF\xBB\xBF\xEF\xBB\xBF" "data: x\n\n", .out = ""},
    {.in = "data: a: b\n\n", .out = "[]a: b|"},
    {.in = "data: x\n", .out = ""},
    {.in = "data: x\n", .finish = 1, .out = "[]x|"},
    {.in = "data: tail", .finish = 1, .out = "[]tail|"},
    {.in = "event: e\ndata: t\r", .finish = 1, .out = "[e]t|"},
    {.in = "\xEF", .finish = 1, .out = ""},
    {.in = "", .finish = 1, .out = ""},
    {.in = "data: a\0b\n\n", .len = 11, .out = "[]a\0b|"},
    {.in = "data: 0123456789\n\n", .max = 16, .out = "[]0123456789|"},
    {.in = "data: 0123456789a\n\n", .max = 16, .out = "", .rc = CH_ETOOBIG},
    {.in = "data: 0123456789abcdef", .max = 16, .out = "", .rc = CH_ETOOBIG},
    {.in = "data: 0123456789\ndata: 0123456789\n\n", .max = 16, .out = "", .rc = CH_ETOOBIG},
    {.in = ": 0123456789abcdef\n\n", .max = 16, .out = "", .rc = CH_ETOOBIG},
    {.in = "data: 1\n\ndata: 2\n\ndata: 3\n\n", .stop_at = 2, .out = "[]1|[]2|", .rc = 7},
    {.in = "data: 1\n\ndata: 2", .stop_at = 2, .finish = 1, .out = "[]1|[]2|", .rc = 7},
    {.in = OPENAI, .out = OPENAI_OUT},
    {.in = ANTHROPIC, .out = ANTHROPIC_OUT},
};

static void test_sse_vectors(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(g_vecs) / sizeof(g_vecs[0]); i++) run_vec(&g_vecs[i]);
}

/* The parser is reusable after dispose + init, and a big event passes in many feeds. */
static void test_sse_big_event(void **state) {
  (void)state;
  ch_buf_t in = CH_BUF_INIT, want = CH_BUF_INIT;
  for (int i = 0; i < 2000; i++) {
    ch_buf_printf(&in, "data: line %d with some text\n", i);
    ch_buf_printf(&want, "%sline %d with some text", i ? "\n" : "[]", i);
  }
  ch_buf_append_str(&in, "\n");
  ch_buf_append_str(&want, "|");
  sse_vec_t v = {.in = ch_buf_cstr(&in), .len = in.len, .out = ch_buf_cstr(&want)};
  run_split(&v, NULL, 0);
  size_t cuts[64];
  for (int k = 0; k < 20; k++) {
    size_t n = 0, at = 0;
    while (n < 64) {
      at += 1 + (size_t)rand() % 4000;
      if (at >= in.len) break;
      cuts[n++] = at;
    }
    run_split(&v, cuts, n);
  }
  ch_buf_dispose(&in);
  ch_buf_dispose(&want);
}

/* ---- UTF-8 ---------------------------------------------------------------------- */

static void check_clean_n(const char *in, size_t n, int final, const char *want, size_t wlen, size_t want_used) {
  ch_buf_t out = CH_BUF_INIT;
  size_t used = ch_agent_utf8_clean(&out, guarded(in, n), n, final);
  if (used != want_used || out.len != wlen || memcmp(out.base ? out.base : "", want, out.len) != 0) {
    fprintf(stderr, "clean of %zu bytes (final %d): used %zu (want %zu), got '%s' want '%s'\n", n, final, used,
            want_used, ch_buf_cstr(&out), want);
    fail();
  }
  ch_buf_dispose(&out);
}

static void check_clean(const char *in, size_t n, int final, const char *want, size_t want_used) {
  check_clean_n(in, n, final, want, strlen(want), want_used);
}

#define R "\xEF\xBF\xBD"
static void test_utf8_vectors(void **state) {
  (void)state;
  check_clean("plain ascii", 11, 1, "plain ascii", 11);
  check_clean("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, 1, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14);
  check_clean("a\xff" "b", 3, 1, "a" R "b", 3);
  check_clean("a\xc3(b", 4, 1, "a" R "(b", 4);
  check_clean("\xc0\xaf", 2, 1, R R, 2);                   /* overlong: invalid lead, stray continuation */
  check_clean("\xe0\x80\xaf", 3, 1, R R R, 3);             /* overlong 3-byte */
  check_clean("\xed\xa0\x80", 3, 1, R R R, 3);             /* surrogate */
  check_clean("\xf4\x90\x80\x80", 4, 1, R R R R, 4);       /* > U+10FFFF */
  check_clean("\xf5\x80", 2, 1, R R, 2);
  check_clean("\xe2\x82" "x", 3, 1, R "x", 3);             /* truncated inside: one replacement */
  check_clean("\xf0\x9f\x98", 3, 1, R, 3);                 /* truncated at the end, final */
  check_clean("ok\xf0\x9f\x98", 5, 0, "ok", 2);             /* ... not final: kept for later */
  check_clean("ok\xf0\x9f", 4, 0, "ok", 2);
  check_clean("ok\xc3", 3, 0, "ok", 2);
  check_clean("ok\xf0\x8f", 4, 0, "ok" R R, 4);            /* not a valid prefix: replaced now */
  check_clean("\x80\x80", 2, 0, R R, 2);
  check_clean("", 0, 0, "", 0);
  check_clean_n("a\0b", 3, 1, "a\0b", 3, 3);
}

/* Append cleaned pieces, carrying an unconsumed tail into the next call. */
static void clean_in_pieces(ch_buf_t *out, const unsigned char *p, size_t n) {
  unsigned char tmp[16];
  size_t carry = 0, at = 0;
  while (at < n || carry) {
    size_t k = at < n ? 1 + (size_t)rand() % 7 : 0;
    if (k > n - at) k = n - at;
    if (k > sizeof(tmp) - carry) k = sizeof(tmp) - carry;
    memcpy(tmp + carry, p + at, k);
    at += k;
    size_t len = carry + k;
    int final = at == n;
    size_t used = ch_agent_utf8_clean(out, guarded((const char *)tmp, len), len, final);
    assert_true(used <= len && len - used <= 3);
    assert_true(!final || used == len);
    memmove(tmp, tmp + used, len - used);
    carry = len - used;
    if (final) break;
  }
}

static void test_utf8_properties(void **state) {
  (void)state;
  static const char *const pieces[] = {"a", "Z", " ", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf",
                                       "\xed\x9f\xbf", "\xee\x80\x80", "\xc2\x80", "\xef\xbf\xbd"};
  for (int iter = 0; iter < 2000; iter++) {
    /* valid text, split anywhere, comes back unchanged */
    ch_buf_t in = CH_BUF_INIT, out = CH_BUF_INIT;
    int n = rand() % 40;
    for (int i = 0; i < n; i++) ch_buf_append_str(&in, pieces[rand() % (int)(sizeof(pieces) / sizeof(pieces[0]))]);
    clean_in_pieces(&out, (const unsigned char *)in.base, in.len);
    assert_int_equal(out.len, in.len);
    assert_memory_equal(out.base ? out.base : "", in.base ? in.base : "", in.len);
    /* random bytes: valid output, the same whatever the split */
    unsigned char raw[64];
    size_t m = (size_t)rand() % sizeof(raw);
    for (size_t i = 0; i < m; i++) raw[i] = (unsigned char)(rand() % 3 ? 0x80 + rand() % 0x80 : rand() % 0x100);
    ch_buf_t whole = CH_BUF_INIT, split = CH_BUF_INIT;
    assert_int_equal(ch_agent_utf8_clean(&whole, (const char *)raw, m, 1), m);
    clean_in_pieces(&split, raw, m);
    assert_int_equal(ch_utf8_valid((const uint8_t *)(whole.base ? whole.base : ""), whole.len), 1);
    assert_int_equal(whole.len, split.len);
    assert_memory_equal(whole.base ? whole.base : "", split.base ? split.base : "", whole.len);
    ch_buf_dispose(&in);
    ch_buf_dispose(&out);
    ch_buf_dispose(&whole);
    ch_buf_dispose(&split);
  }
}

int main(void) {
  srand(12345);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sse_vectors),
      cmocka_unit_test(test_sse_big_event),
      cmocka_unit_test(test_utf8_vectors),
      cmocka_unit_test(test_utf8_properties),
  };
  return cmocka_run_group_tests(tests, setup_guard, NULL);
}
