/*
 * test_request.c — the HTTP/1.1 request reader (src/http/request.c) and the
 * arena it keeps strings in (src/core/pool.c).
 *
 * Every input goes through run_all(): whole, byte by byte, every split into
 * two reads, and many random splits, each read copied so that its last byte
 * sits right before a PROT_NONE guard page (an over-read crashes). A "read"
 * is what a socket would deliver; when the reader stops inside a read
 * (request complete), the harness feeds the rest of that read again, as the
 * connection code will. The same checker then runs on each outcome, so every
 * assertion holds for every split.
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

#include "core/err.h"
#include "core/pool.h"
#include "http/request.h"

/* ---- guard-page feeding harness ------------------------------------------ */

#define MAX_REQS 16
#define GUARD_SPAN (1u << 20) /* largest single read the harness supports */

typedef struct {
  ch_http_req_t *reqs[MAX_REQS];
  size_t nreqs;
  int rc;            /* last feed result: CH_AGAIN if input ran out, or the error */
  int status;        /* reader status after an error */
  const char *error; /* reader error text */
  size_t upgrade_at; /* input offset where the new protocol starts, or SIZE_MAX */
  int need_continue; /* ch_http_reader_need_continue() returned 1 (how many times) */
} outcome_t;

static char *g_guard; /* first byte of the PROT_NONE page */

static void guard_setup(void) {
  if (g_guard != NULL) return;
  long page = sysconf(_SC_PAGESIZE);
  char *m = mmap(NULL, GUARD_SPAN + (size_t)page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(m != MAP_FAILED);
  assert_int_equal(mprotect(m + GUARD_SPAN, (size_t)page, PROT_NONE), 0);
  g_guard = m + GUARD_SPAN;
}

static void outcome_free(outcome_t *o) {
  for (size_t i = 0; i < o->nreqs; i++) ch_http_req_free(o->reqs[i]);
  o->nreqs = 0;
}

/* Feed in[0..len) as reads ending at cuts[0..ncuts) (ascending, last == len). */
static void feed_reads(const char *in, size_t len, const ch_http_limits_t *lim, const size_t *cuts,
                       size_t ncuts, outcome_t *o) {
  ch_http_reader_t r;
  memset(o, 0, sizeof(*o));
  o->rc = CH_AGAIN;
  o->upgrade_at = SIZE_MAX;
  ch_http_reader_init(&r, lim);
  size_t start = 0;
  for (size_t k = 0; k < ncuts; k++) {
    size_t end = cuts[k];
    assert_true(end - start <= GUARD_SPAN);
    char *buf = g_guard - (end - start);
    if (end > start) memcpy(buf, in + start, end - start);
    size_t p = 0, n = end - start;
    while (p < n || (n == 0 && p == 0)) {
      size_t consumed = 12345;
      int rc = ch_http_reader_feed(&r, buf + p, n - p, &consumed);
      assert_true(consumed <= n - p);
      if (ch_http_reader_need_continue(&r)) o->need_continue++;
      if (rc == 0) {
        ch_http_req_t *req = ch_http_reader_take(&r);
        assert_non_null(req);
        assert_null(ch_http_reader_take(&r));
        assert_true(o->nreqs < MAX_REQS);
        o->reqs[o->nreqs++] = req;
        p += consumed;
        if (req->upgrade) {
          o->upgrade_at = start + p;
          goto Done;
        }
        continue;
      }
      if (rc == CH_AGAIN) {
        assert_int_equal(consumed, n - p);
        break;
      }
      assert_true(rc < 0);
      o->rc = rc;
      o->status = ch_http_reader_status(&r);
      o->error = ch_http_reader_error(&r);
      assert_non_null(o->error);
      /* errors are sticky */
      size_t c2 = 99;
      assert_int_equal(ch_http_reader_feed(&r, "GET / HTTP/1.1\r\n\r\n", 18, &c2), rc);
      assert_int_equal(c2, 0);
      goto Done;
    }
    start = end;
  }
  assert_int_equal(ch_http_reader_status(&r), 0);
  assert_null(ch_http_reader_error(&r));
Done:
  ch_http_reader_dispose(&r);
}

typedef void (*checker_fn)(const outcome_t *o, const char *in, size_t len);

static unsigned long g_rng = 88172645463325252UL;
static unsigned long rng(void) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return g_rng;
}

static void run_one(const char *in, size_t len, const ch_http_limits_t *lim, const size_t *cuts,
                    size_t ncuts, checker_fn check) {
  outcome_t o;
  feed_reads(in, len, lim, cuts, ncuts, &o);
  check(&o, in, len);
  outcome_free(&o);
}

/* whole, byte by byte, all two-read splits (inputs up to 4 KiB), 50 random splits */
static void run_all_n(const char *in, size_t len, const ch_http_limits_t *lim, checker_fn check) {
  guard_setup();
  size_t *cuts = malloc((len + 2) * sizeof(*cuts));
  cuts[0] = len;
  run_one(in, len, lim, cuts, 1, check);
  for (size_t i = 0; i < len; i++) cuts[i] = i + 1;
  run_one(in, len, lim, cuts, len ? len : 1, check);
  if (len <= 4096) {
    for (size_t k = 0; k <= len; k++) {
      cuts[0] = k;
      cuts[1] = len;
      run_one(in, len, lim, cuts, 2, check);
    }
  }
  for (int t = 0; t < 50; t++) {
    size_t nc = 0, pos = 0;
    while (pos < len) {
      size_t step = 1 + rng() % (t < 25 ? 8 : 64);
      pos = pos + step > len ? len : pos + step;
      cuts[nc++] = pos;
    }
    if (nc == 0) cuts[nc++] = 0;
    run_one(in, len, lim, cuts, nc, check);
  }
  free(cuts);
}

static void run_all(const char *in, const ch_http_limits_t *lim, checker_fn check) {
  run_all_n(in, strlen(in), lim, check);
}

/* Expect a failure with status st whatever the split. */
static int g_expect_status;
static int g_expect_rc;
static void check_fails(const outcome_t *o, const char *in, size_t len) {
  assert_int_equal(o->status, g_expect_status);
  assert_int_equal(o->rc, g_expect_rc);
}
static void expect_fail(const char *in, size_t len, const ch_http_limits_t *lim, int status,
                        int rc) {
  g_expect_status = status;
  g_expect_rc = rc;
  run_all_n(in, len, lim, check_fails);
}

/* ---- basic requests ---------------------------------------------------------- */

static const char SIMPLE_GET[] =
    "GET /rooms/abc?limit=10&x=y HTTP/1.1\r\n"
    "Host: example.com\r\n"
    "User-Agent: t\r\n"
    "\r\n";

static void check_simple_get(const outcome_t *o, const char *in, size_t len) {
  assert_int_equal(o->rc, CH_AGAIN);
  assert_int_equal(o->nreqs, 1);
  const ch_http_req_t *q = o->reqs[0];
  assert_int_equal(q->method, HTTP_GET);
  assert_string_equal(q->method_name, "GET");
  assert_string_equal(q->url, "/rooms/abc?limit=10&x=y");
  assert_string_equal(q->path, "/rooms/abc");
  assert_string_equal(q->query, "limit=10&x=y");
  assert_int_equal(q->http_major, 1);
  assert_int_equal(q->http_minor, 1);
  assert_int_equal(q->keep_alive, 1);
  assert_int_equal(q->upgrade, 0);
  assert_int_equal(q->expect_continue, 0);
  assert_int_equal(q->nheaders, 2);
  assert_string_equal(q->headers[0].name, "Host");
  assert_string_equal(q->headers[0].value, "example.com");
  assert_string_equal(q->headers[1].name, "User-Agent");
  assert_string_equal(q->headers[1].value, "t");
  assert_string_equal(ch_http_req_header(q, "host"), "example.com");
  assert_string_equal(ch_http_req_header(q, "USER-AGENT"), "t");
  assert_null(ch_http_req_header(q, "Accept"));
  assert_int_equal(q->body.len, 0);
}

static void test_simple_get(void **state) { run_all(SIMPLE_GET, NULL, check_simple_get); }

/* Exactly the bytes of one request are consumed in a single feed. */
static void test_consumed_exact(void **state) {
  static const char in[] =
      "POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n";
  ch_http_reader_t r;
  size_t c;
  ch_http_reader_init(&r, NULL);
  assert_int_equal(ch_http_reader_feed(&r, in, sizeof(in) - 1, &c), 0);
  assert_int_equal(c, strlen("POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"));
  /* feeding again before take: 0, nothing consumed */
  size_t c2 = 7;
  assert_int_equal(ch_http_reader_feed(&r, in + c, sizeof(in) - 1 - c, &c2), 0);
  assert_int_equal(c2, 0);
  ch_http_req_t *q = ch_http_reader_take(&r);
  assert_string_equal(q->path, "/a");
  assert_int_equal(q->body.len, 3);
  assert_memory_equal(q->body.base, "abc", 3);
  ch_http_req_free(q);
  assert_int_equal(ch_http_reader_feed(&r, in + c, sizeof(in) - 1 - c, &c2), 0);
  assert_int_equal(c + c2, sizeof(in) - 1);
  q = ch_http_reader_take(&r);
  assert_string_equal(q->path, "/b");
  ch_http_req_free(q);
  /* zero-length feed */
  assert_int_equal(ch_http_reader_feed(&r, "", 0, &c2), CH_AGAIN);
  assert_int_equal(c2, 0);
  assert_null(ch_http_reader_take(&r));
  ch_http_reader_dispose(&r);
}

/* ---- pipelining ------------------------------------------------------------------ */

static const char PIPELINE[] =
    "GET /one HTTP/1.1\r\nHost: h\r\n\r\n"
    "POST /two?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    "\r\n" /* stray CRLF between messages is tolerated */
    "PUT /three HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    "4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"
    "DELETE /four HTTP/1.1\r\nConnection: close\r\n\r\n";

static void check_pipeline(const outcome_t *o, const char *in, size_t len) {
  assert_int_equal(o->rc, CH_AGAIN);
  assert_int_equal(o->nreqs, 4);
  assert_string_equal(o->reqs[0]->path, "/one");
  assert_int_equal(o->reqs[0]->body.len, 0);
  assert_int_equal(o->reqs[1]->method, HTTP_POST);
  assert_string_equal(o->reqs[1]->path, "/two");
  assert_string_equal(o->reqs[1]->query, "q=1");
  assert_int_equal(o->reqs[1]->body.len, 5);
  assert_memory_equal(o->reqs[1]->body.base, "hello", 5);
  assert_int_equal(o->reqs[2]->method, HTTP_PUT);
  assert_int_equal(o->reqs[2]->chunked, 1);
  assert_int_equal(o->reqs[2]->body.len, 9);
  assert_memory_equal(o->reqs[2]->body.base, "Wikipedia", 9);
  assert_int_equal(o->reqs[3]->method, HTTP_DELETE);
  assert_int_equal(o->reqs[3]->keep_alive, 0);
  for (size_t i = 0; i < 3; i++) assert_int_equal(o->reqs[i]->keep_alive, 1);
}

static void test_pipeline(void **state) { run_all(PIPELINE, NULL, check_pipeline); }

/* Every split into three reads of the pipeline. */
static void test_pipeline_three_reads(void **state) {
  size_t len = strlen(PIPELINE);
  size_t cuts[3];
  guard_setup();
  for (size_t a = 0; a <= len; a += 3) {
    for (size_t b = a; b <= len; b += 2) {
      cuts[0] = a;
      cuts[1] = b;
      cuts[2] = len;
      run_one(PIPELINE, len, NULL, cuts, 3, check_pipeline);
    }
  }
}

/* ---- chunked bodies ------------------------------------------------------------ */

static const char CHUNKED[] =
    "POST /c HTTP/1.1\r\n"
    "Host: h\r\n"
    "Transfer-Encoding: chunked\r\n"
    "\r\n"
    "3;name=value;other=\"quoted\"\r\nabc\r\n"
    "A\r\n0123456789\r\n"
    "1f\r\nthirty-one bytes of chunk data!\r\n"
    "0\r\n"
    "X-Trailer: t1\r\n"
    "X-Other: t2\r\n"
    "\r\n"
    "GET /after HTTP/1.1\r\n\r\n";

static void check_chunked(const outcome_t *o, const char *in, size_t len) {
  assert_int_equal(o->rc, CH_AGAIN);
  assert_int_equal(o->nreqs, 2);
  const ch_http_req_t *q = o->reqs[0];
  const char *want = "abc0123456789thirty-one bytes of chunk data!";
  assert_int_equal(q->body.len, strlen(want));
  assert_memory_equal(q->body.base, want, strlen(want));
  assert_int_equal(q->chunked, 1);
  /* trailers are not headers */
  assert_int_equal(q->nheaders, 2);
  assert_null(ch_http_req_header(q, "X-Trailer"));
  assert_string_equal(o->reqs[1]->path, "/after");
}

static void test_chunked(void **state) { run_all(CHUNKED, NULL, check_chunked); }

static void test_chunked_bad_size(void **state) {
  static const char in[] =
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n";
  expect_fail(in, strlen(in), NULL, 400, CH_EPROTO);
}

static void test_chunked_trailers_too_big(void **state) {
  ch_http_limits_t lim = {.max_header_bytes = 256};
  char in[2048];
  int n = snprintf(in, sizeof(in),
                   "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: ");
  memset(in + n, 'v', 400);
  strcpy(in + n + 400, "\r\n\r\n");
  expect_fail(in, strlen(in), &lim, 431, CH_ETOOBIG);
}

/* ---- headers ----------------------------------------------------------------------- */

static const char REPEATED[] =
    "GET / HTTP/1.1\r\n"
    "Accept: a/b\r\n"
    "X-Empty:\r\n"
    "X-Spaces:   padded value \t \r\n"
    "accept: c/d\r\n"
    "ACCEPT: e/f\r\n"
    "\r\n";

static void check_repeated(const outcome_t *o, const char *in, size_t len) {
  assert_int_equal(o->nreqs, 1);
  ch_http_req_t *q = o->reqs[0];
  assert_int_equal(q->nheaders, 5);
  assert_string_equal(q->headers[0].name, "Accept");
  assert_string_equal(q->headers[3].name, "accept");
  assert_string_equal(q->headers[4].name, "ACCEPT");
  assert_string_equal(ch_http_req_header(q, "accept"), "a/b");
  assert_string_equal(ch_http_req_header(q, "x-empty"), "");
  assert_string_equal(ch_http_req_header(q, "X-Spaces"), "padded value");
  assert_string_equal(ch_http_req_header_joined(q, "Accept"), "a/b, c/d, e/f");
  assert_string_equal(ch_http_req_header_joined(q, "X-Empty"), "");
  assert_null(ch_http_req_header_joined(q, "Nope"));
}

static void test_repeated_headers(void **state) { run_all(REPEATED, NULL, check_repeated); }

/* ---- limits ------------------------------------------------------------------------ */

/* A request whose head is exactly `head` bytes long (padding in one header). */
static char *make_head(size_t head, size_t *len) {
  static const char pre[] = "GET / HTTP/1.1\r\nX-Pad: ";
  static const char post[] = "\r\n\r\n";
  size_t fixed = strlen(pre) + strlen(post);
  assert_true(head > fixed);
  char *s = malloc(head + 1);
  memcpy(s, pre, strlen(pre));
  memset(s + strlen(pre), 'p', head - fixed);
  memcpy(s + head - strlen(post), post, strlen(post) + 1);
  *len = head;
  return s;
}

static void check_one_ok(const outcome_t *o, const char *in, size_t len) {
  assert_int_equal(o->rc, CH_AGAIN);
  assert_int_equal(o->nreqs, 1);
}

static void test_limit_header_bytes(void **state) {
  ch_http_limits_t lim = {.max_header_bytes = 300};
  size_t len;
  char *s = make_head(300, &len); /* exactly at the limit: fine */
  run_all_n(s, len, &lim, check_one_ok);
  free(s);
  s = make_head(301, &len); /* one byte over */
  expect_fail(s, len, &lim, 431, CH_ETOOBIG);
  free(s);
  /* the default is 16 KiB */
  s = make_head(16 * 1024 + 1, &len);
  expect_fail(s, len, NULL, 431, CH_ETOOBIG);
  free(s);
  s = make_head(16 * 1024, &len);
  run_all_n(s, len, NULL, check_one_ok);
  free(s);
}

/* An endless head is refused after max_header_bytes, without waiting for its end. */
static void test_limit_header_bytes_early(void **state) {
  ch_http_limits_t lim = {.max_header_bytes = 1000};
  ch_http_reader_t r;
  ch_http_reader_init(&r, &lim);
  char chunk[100];
  memset(chunk, 'a', sizeof(chunk));
  size_t c;
  assert_int_equal(ch_http_reader_feed(&r, "GET / HTTP/1.1\r\nX: ", 19, &c), CH_AGAIN);
  int rc = CH_AGAIN;
  size_t fed = 19;
  while (rc == CH_AGAIN && fed < 5000) {
    rc = ch_http_reader_feed(&r, chunk, sizeof(chunk), &c);
    fed += c;
  }
  assert_int_equal(rc, CH_ETOOBIG);
  assert_int_equal(ch_http_reader_status(&r), 431);
  assert_int_equal(fed, 1000);
  ch_http_reader_dispose(&r);
}

static char *make_nheaders(size_t n) {
  char *s = malloc(64 + n * 16);
  strcpy(s, "GET / HTTP/1.1\r\n");
  for (size_t i = 0; i < n; i++) sprintf(s + strlen(s), "H%zu: v\r\n", i);
  strcat(s, "\r\n");
  return s;
}

static size_t g_expect_nheaders;
static void check_nheaders(const outcome_t *o, const char *in, size_t len) {
  assert_int_equal(o->rc, CH_AGAIN);
  assert_int_equal(o->nreqs, 1);
  assert_int_equal(o->reqs[0]->nheaders, g_expect_nheaders);
}

static void test_limit_header_count(void **state) {
  ch_http_limits_t lim = {.max_headers = 4};
  char *s = make_nheaders(4);
  g_expect_nheaders = 4;
  run_all(s, &lim, check_nheaders);
  free(s);
  s = make_nheaders(5);
  expect_fail(s, strlen(s), &lim, 431, CH_ETOOBIG);
  free(s);
  s = make_nheaders(64); /* default 64 */
  g_expect_nheaders = 64;
  run_all(s, NULL, check_nheaders);
  free(s);
  s = make_nheaders(65);
  expect_fail(s, strlen(s), NULL, 431, CH_ETOOBIG);
  free(s);
}

static void test_limit_url(void **state) {
  ch_http_limits_t lim = {.max_url = 50};
  char in[256];
  char url[80];
  memset(url, 'u', sizeof(url));
  url[0] = '/';
  snprintf(in, sizeof(in), "GET %.*s HTTP/1.1\r\n\r\n", 50, url);
  run_all(in, &lim, check_one_ok);
  snprintf(in, sizeof(in), "GET %.*s HTTP/1.1\r\n\r\n", 51, url);
  expect_fail(in, strlen(in), &lim, 414, CH_ETOOBIG);
  /* default 8 KiB */
  char *big = malloc(9000 + 64);
  memset(big, 'u', 9000);
  memcpy(big, "GET /", 5);
  strcpy(big + 5 + 8 * 1024 - 1 + 1, " HTTP/1.1\r\n\r\n"); /* url of 8193 bytes */
  expect_fail(big, strlen(big), NULL, 414, CH_ETOOBIG);
  strcpy(big + 5 + 8 * 1024 - 1, " HTTP/1.1\r\n\r\n"); /* exactly 8192 */
  run_all(big, NULL, check_one_ok);
  free(big);
}

static void test_limit_body_content_length(void **state) {
  ch_http_limits_t lim = {.max_body = 10};
  /* refused at the end of the head, before any body byte arrives */
  static const char head[] = "POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n";
  expect_fail(head, strlen(head), &lim, 413, CH_ETOOBIG);
  static const char ok[] = "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789";
  run_all(ok, &lim, check_one_ok);
  /* default 1 MiB */
  static const char big[] = "POST / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n";
  expect_fail(big, strlen(big), NULL, 413, CH_ETOOBIG);
  static const char huge[] = "POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n";
  expect_fail(huge, strlen(huge), NULL, 400, CH_EPROTO); /* overflow is malformed */
}

static void test_limit_body_chunked(void **state) {
  ch_http_limits_t lim = {.max_body = 10};
  static const char ok[] =
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n";
  run_all(ok, &lim, check_one_ok);
  static const char over[] =
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n6\r\n567890\r\n0\r\n\r\n";
  expect_fail(over, strlen(over), &lim, 413, CH_ETOOBIG);
  /* one huge chunk size is refused as soon as its bytes exceed the limit */
  static const char huge[] =
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffff\r\n0123456789A";
  expect_fail(huge, strlen(huge), &lim, 413, CH_ETOOBIG);
}

static void test_limit_body_default(void **state) {
  size_t n = 1024 * 1024;
  char head[128];
  int hl = snprintf(head, sizeof(head), "POST / HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", n);
  char *in = malloc((size_t)hl + n);
  memcpy(in, head, (size_t)hl);
  memset(in + hl, 'b', n);
  ch_http_reader_t r;
  size_t c;
  ch_http_reader_init(&r, NULL);
  assert_int_equal(ch_http_reader_feed(&r, in, (size_t)hl + n, &c), 0);
  assert_int_equal(c, (size_t)hl + n);
  ch_http_req_t *q = ch_http_reader_take(&r);
  assert_int_equal(q->body.len, n);
  ch_http_req_free(q);
  ch_http_reader_dispose(&r);
  free(in);
}

/* ---- malformed requests ------------------------------------------------------------ */

static void test_bad_requests(void **state) {
  static const struct {
    const char *in;
    int status;
    int rc;
  } cases[] = {
      {"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, CH_EPROTO}, /* TLS hello */
      {"get / HTTP/1.1\r\n\r\n", 400, CH_EPROTO},                       /* lowercase */
      {"GET /a b HTTP/1.1\r\n\r\n", 400, CH_EPROTO},                    /* space in target */
      {"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400, CH_EPROTO},
      {"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n", 400, CH_EPROTO},
      {"GET / HTTP/1.1\r\nX: a\x01"
       "b\r\n\r\n",
       400, CH_EPROTO}, /* control char in value */
      {"POST / HTTP/1.1\r\nContent-Length : 5\r\n\r\nhello", 400, CH_EPROTO},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nBad Trailer: x\r\n\r\n", 400,
       CH_EPROTO},
      {"GET / HTTP/1.12\r\n\r\n", 400, CH_EPROTO},
      {"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400, CH_EPROTO},
      {"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400, CH_EPROTO},
      {"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
       CH_EPROTO}, /* smuggling */
      {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400, CH_EPROTO},
      {"GET /%zz HTTP/1.1\r\n\r\n", 400, CH_EPROTO},
      {"GET /a%2 HTTP/1.1\r\n\r\n", 400, CH_EPROTO},
      {"GET /a%00b HTTP/1.1\r\n\r\n", 400, CH_EPROTO},
      {"GET nohost HTTP/1.1\r\n\r\n", 400, CH_EPROTO},
      {"GET / HTTP/1.1\nHost: x\r\n\r\n", 0, 0}, /* bare LF is accepted by http-parser */
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    if (cases[i].status == 0) {
      run_all(cases[i].in, NULL, check_one_ok);
      continue;
    }
    expect_fail(cases[i].in, strlen(cases[i].in), NULL, cases[i].status, cases[i].rc);
  }
}

static void test_not_implemented(void **state) {
  static const char *in[] = {
      "BREW /pot HTTP/1.1\r\n\r\n",
      "GE / HTTP/1.1\r\n\r\n",
      "XYZ / HTTP/1.1\r\n\r\n",
      "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
      "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++)
    expect_fail(in[i], strlen(in[i]), NULL, 501, CH_EUNSUPPORTED);
}

static void test_version_not_supported(void **state) {
  static const char *in[] = {
      "GET / HTTP/2.0\r\nHost: h\r\n\r\n",
      "GET / HTTP/3.0\r\n\r\n",
      "GET / HTTP/0.9\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++)
    expect_fail(in[i], strlen(in[i]), NULL, 505, CH_EUNSUPPORTED);
}

/* ---- upgrade ----------------------------------------------------------------------- */

static const char UPGRADE[] =
    "GET /ws?room=r1 HTTP/1.1\r\n"
    "Host: h\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "\r\n"
    "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
    "GET / HTTP/1.1\r\n\r\n"; /* must NOT be parsed as HTTP */

static void check_upgrade(const outcome_t *o, const char *in, size_t len) {
  assert_int_equal(o->nreqs, 1);
  assert_int_equal(o->reqs[0]->upgrade, 1);
  assert_string_equal(o->reqs[0]->path, "/ws");
  assert_string_equal(ch_http_req_query_param(o->reqs[0], "room"), "r1");
  assert_int_equal(o->upgrade_at, (size_t)(strstr(in, "\r\n\r\n") - in) + 4);
}

static void test_upgrade_leftover(void **state) { run_all(UPGRADE, NULL, check_upgrade); }

static void check_no_upgrade(const outcome_t *o, const char *in, size_t len) {
  assert_int_equal(o->nreqs, 2);
  assert_int_equal(o->reqs[0]->upgrade, 0); /* Upgrade without Connection: upgrade */
  assert_int_equal(o->upgrade_at, SIZE_MAX);
}

static void test_upgrade_needs_connection(void **state) {
  run_all("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\nGET / HTTP/1.1\r\n\r\n", NULL,
          check_no_upgrade);
}

/* ---- keep-alive ---------------------------------------------------------------------- */

static int g_expect_ka;
static void check_ka(const outcome_t *o, const char *in, size_t len) {
  assert_int_equal(o->nreqs, 1);
  assert_int_equal(o->reqs[0]->keep_alive, g_expect_ka);
}

static void test_keep_alive_rules(void **state) {
  static const struct {
    const char *in;
    int ka;
  } cases[] = {
      {"GET / HTTP/1.1\r\n\r\n", 1},
      {"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 0},
      {"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", 1},
      {"GET / HTTP/1.0\r\n\r\n", 0},
      {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1},
      {"GET / HTTP/1.0\r\nConnection: close\r\n\r\n", 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    g_expect_ka = cases[i].ka;
    run_all(cases[i].in, NULL, check_ka);
  }
}

/* ---- targets, percent-decoding, query parameters ----------------------------------- */

static const char *g_expect_path, *g_expect_query;
static void check_target(const outcome_t *o, const char *in, size_t len) {
  assert_int_equal(o->rc, CH_AGAIN);
  assert_int_equal(o->nreqs, 1);
  assert_string_equal(o->reqs[0]->path, g_expect_path);
  if (g_expect_query == NULL)
    assert_null(o->reqs[0]->query);
  else
    assert_string_equal(o->reqs[0]->query, g_expect_query);
}

static void test_targets(void **state) {
  static const struct {
    const char *in, *path, *query;
  } cases[] = {
      {"GET /a%20b/%E2%82%AC HTTP/1.1\r\n\r\n", "/a b/\xe2\x82\xac", NULL},
      {"GET /a+b%2Bc HTTP/1.1\r\n\r\n", "/a+b+c", NULL},
      {"GET /x%2Fy HTTP/1.1\r\n\r\n", "/x/y", NULL},
      {"GET /p?q=%20x+y HTTP/1.1\r\n\r\n", "/p", "q=%20x+y"},
      {"GET /p? HTTP/1.1\r\n\r\n", "/p", ""},
      {"GET /p#frag HTTP/1.1\r\n\r\n", "/p", NULL},
      {"GET /p?a=1#frag HTTP/1.1\r\n\r\n", "/p", "a=1"},
      {"GET http://example.com/abs/p?z=9 HTTP/1.1\r\n\r\n", "/abs/p", "z=9"},
      {"GET http://example.com HTTP/1.1\r\n\r\n", "/", NULL},
      {"GET http://example.com:8080?k=v HTTP/1.1\r\n\r\n", "/", "k=v"},
      {"OPTIONS * HTTP/1.1\r\n\r\n", "*", NULL},
      {"GET / HTTP/1.1\r\n\r\n", "/", NULL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    g_expect_path = cases[i].path;
    g_expect_query = cases[i].query;
    run_all(cases[i].in, NULL, check_target);
  }
}

static void check_query(const outcome_t *o, const char *in, size_t len) {
  assert_int_equal(o->nreqs, 1);
  ch_http_req_t *q = o->reqs[0];
  assert_string_equal(ch_http_req_query_param(q, "a"), "1"); /* first of two */
  assert_string_equal(ch_http_req_query_param(q, "b"), "hello world");
  assert_string_equal(ch_http_req_query_param(q, "c"), "AB/");
  assert_string_equal(ch_http_req_query_param(q, "d"), "");
  assert_string_equal(ch_http_req_query_param(q, "e"), "");
  assert_string_equal(ch_http_req_query_param(q, "x y"), "z=w");
  assert_string_equal(ch_http_req_query_param(q, "bad"), "%zz%4");
  assert_string_equal(ch_http_req_query_param(q, "u"), "\xe2\x82\xac");
  assert_null(ch_http_req_query_param(q, "missing"));
  assert_null(ch_http_req_query_param(q, "A"));
  assert_null(ch_http_req_query_param(q, "x"));
}

static void test_query_params(void **state) {
  run_all(
      "GET /p?a=1&b=hello+world&c=%41%42%2f&d&e=&&a=2&x%20y=z=w&bad=%zz%4&u=%E2%82%AC "
      "HTTP/1.1\r\n\r\n",
      NULL, check_query);
  /* no query at all */
  ch_http_reader_t r;
  size_t c;
  ch_http_reader_init(&r, NULL);
  assert_int_equal(ch_http_reader_feed(&r, "GET /p HTTP/1.1\r\n\r\n", 19, &c), 0);
  ch_http_req_t *q = ch_http_reader_take(&r);
  assert_null(ch_http_req_query_param(q, "a"));
  ch_http_req_free(q);
  ch_http_reader_dispose(&r);
}

static void test_pct_decode(void **state) {
  char out[64];
  size_t n;
  assert_int_equal(ch_http_pct_decode(out, "a%41+%2b", 8, 1, 1, &n), 0);
  assert_string_equal(out, "aA +");
  assert_int_equal(n, 4);
  assert_int_equal(ch_http_pct_decode(out, "a%41+", 5, 0, 1, &n), 0);
  assert_string_equal(out, "aA+");
  assert_int_equal(ch_http_pct_decode(out, "%4", 2, 0, 1, &n), CH_EPROTO);
  assert_int_equal(ch_http_pct_decode(out, "%g1", 3, 0, 1, &n), CH_EPROTO);
  assert_int_equal(ch_http_pct_decode(out, "%4", 2, 0, 0, &n), 0);
  assert_string_equal(out, "%4");
  assert_int_equal(ch_http_pct_decode(out, "x%00y", 5, 0, 1, &n), 0);
  assert_int_equal(n, 3);
  assert_memory_equal(out, "x\0y", 3);
  char inplace[] = "%7e%7E";
  assert_int_equal(ch_http_pct_decode(inplace, inplace, 6, 0, 1, NULL), 0);
  assert_string_equal(inplace, "~~");
}

/* ---- Expect: 100-continue ---------------------------------------------------------------- */

static void test_expect_continue(void **state) {
  static const char head[] =
      "POST /up HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 4\r\n\r\n";
  ch_http_reader_t r;
  size_t c;
  ch_http_reader_init(&r, NULL);
  assert_int_equal(ch_http_reader_need_continue(&r), 0);
  assert_int_equal(ch_http_reader_feed(&r, head, strlen(head), &c), CH_AGAIN);
  assert_int_equal(ch_http_reader_need_continue(&r), 1);
  assert_int_equal(ch_http_reader_need_continue(&r), 0); /* once */
  assert_int_equal(ch_http_reader_feed(&r, "data", 4, &c), 0);
  ch_http_req_t *q = ch_http_reader_take(&r);
  assert_int_equal(q->expect_continue, 1);
  assert_memory_equal(q->body.base, "data", 4);
  ch_http_req_free(q);
  /* whole request at once: no 100 needed any more */
  assert_int_equal(ch_http_reader_feed(&r, head, strlen(head), &c), CH_AGAIN);
  assert_int_equal(ch_http_reader_feed(&r, "data", 4, &c), 0);
  ch_http_req_free(ch_http_reader_take(&r));
  char both[256];
  snprintf(both, sizeof(both), "%sdata", head);
  assert_int_equal(ch_http_reader_feed(&r, both, strlen(both), &c), 0);
  assert_int_equal(ch_http_reader_need_continue(&r), 0);
  q = ch_http_reader_take(&r);
  assert_int_equal(q->expect_continue, 1);
  ch_http_req_free(q);
  /* no body announced: nothing to continue */
  static const char nobody[] = "GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n";
  assert_int_equal(ch_http_reader_feed(&r, nobody, strlen(nobody), &c), 0);
  assert_int_equal(ch_http_reader_need_continue(&r), 0);
  ch_http_req_free(ch_http_reader_take(&r));
  ch_http_reader_dispose(&r);
  /* too big: the final 413 comes instead of a 100 */
  ch_http_limits_t lim = {.max_body = 2};
  ch_http_reader_init(&r, &lim);
  assert_int_equal(ch_http_reader_feed(&r, head, strlen(head), &c), CH_ETOOBIG);
  assert_int_equal(ch_http_reader_status(&r), 413);
  assert_int_equal(ch_http_reader_need_continue(&r), 0);
  ch_http_reader_dispose(&r);
}

static void check_expect_split(const outcome_t *o, const char *in, size_t len) {
  assert_int_equal(o->nreqs, 1);
  assert_int_equal(o->reqs[0]->expect_continue, 1);
  assert_true(o->need_continue <= 1);
}

static void test_expect_continue_splits(void **state) {
  run_all(
      "PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: "
      "chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
      NULL, check_expect_split);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static void test_dispose_mid_request(void **state) {
  ch_http_reader_t r;
  size_t c;
  ch_http_reader_init(&r, NULL);
  assert_int_equal(
      ch_http_reader_feed(&r, "POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc", 42, &c), CH_AGAIN);
  ch_http_reader_dispose(&r); /* ASan: nothing leaks */
  ch_http_reader_init(&r, NULL);
  assert_int_equal(ch_http_reader_feed(&r, "GET / HTTP/1.1\r\n\r\n", 18, &c), 0);
  ch_http_reader_dispose(&r); /* untaken request freed too */
  ch_http_req_free(NULL);
}

static void test_many_requests_reuse(void **state) {
  ch_http_reader_t r;
  ch_http_reader_init(&r, NULL);
  char in[128];
  for (int i = 0; i < 1000; i++) {
    int n = snprintf(in, sizeof(in), "GET /n/%d HTTP/1.1\r\nX-I: %d\r\n\r\n", i, i);
    size_t c;
    assert_int_equal(ch_http_reader_feed(&r, in, (size_t)n, &c), 0);
    assert_int_equal(c, (size_t)n);
    ch_http_req_t *q = ch_http_reader_take(&r);
    char want[32];
    snprintf(want, sizeof(want), "/n/%d", i);
    assert_string_equal(q->path, want);
    assert_int_equal(atoi(ch_http_req_header(q, "x-i")), i);
    ch_http_req_free(q);
  }
  ch_http_reader_dispose(&r);
}

/* ---- pool ------------------------------------------------------------------------------ */

static int g_cleanup_order[4];
static int g_cleanup_n;
static void cleanup_cb(void *data) { g_cleanup_order[g_cleanup_n++] = (int)(intptr_t)data; }

static void test_pool(void **state) {
  ch_pool_t p;
  ch_pool_init(&p, 256);
  char *prev_small = NULL;
  for (size_t i = 0; i < 200; i++) {
    size_t n = 1 + (i * 7) % 50;
    unsigned char *a = ch_pool_alloc(&p, n);
    assert_int_equal((uintptr_t)a % _Alignof(max_align_t), 0);
    memset(a, (int)i, n);
    if (prev_small != NULL) assert_true(prev_small != (char *)a);
    prev_small = (char *)a;
  }
  char *big = ch_pool_alloc(&p, 10000); /* dedicated block */
  memset(big, 1, 10000);
  char *after = ch_pool_alloc(&p, 8);
  assert_non_null(after);
  assert_string_equal(ch_pool_strndup(&p, "hello world", 5), "hello");
  assert_string_equal(ch_pool_strdup(&p, "xyz"), "xyz");
  assert_string_equal(ch_pool_strndup(&p, NULL, 0), "");
  char *z = ch_pool_calloc(&p, 100);
  for (int i = 0; i < 100; i++) assert_int_equal(z[i], 0);
  g_cleanup_n = 0;
  ch_pool_cleanup_add(&p, cleanup_cb, (void *)(intptr_t)1);
  ch_pool_cleanup_add(&p, cleanup_cb, (void *)(intptr_t)2);
  ch_pool_cleanup_add(&p, cleanup_cb, (void *)(intptr_t)3);
  ch_pool_dispose(&p);
  assert_int_equal(g_cleanup_n, 3);
  assert_int_equal(g_cleanup_order[0], 3);
  assert_int_equal(g_cleanup_order[1], 2);
  assert_int_equal(g_cleanup_order[2], 1);
  /* reusable after dispose; a first allocation that is oversized works too */
  char *b2 = ch_pool_alloc(&p, 5000);
  memset(b2, 2, 5000);
  char *s2 = ch_pool_alloc(&p, 16);
  memset(s2, 3, 16);
  ch_pool_dispose(&p);
  ch_pool_dispose(&p); /* twice is harmless */
  ch_pool_init(&p, 0);
  assert_non_null(ch_pool_alloc(&p, 0));
  ch_pool_dispose(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_simple_get),
      cmocka_unit_test(test_consumed_exact),
      cmocka_unit_test(test_pipeline),
      cmocka_unit_test(test_pipeline_three_reads),
      cmocka_unit_test(test_chunked),
      cmocka_unit_test(test_chunked_bad_size),
      cmocka_unit_test(test_chunked_trailers_too_big),
      cmocka_unit_test(test_repeated_headers),
      cmocka_unit_test(test_limit_header_bytes),
      cmocka_unit_test(test_limit_header_bytes_early),
      cmocka_unit_test(test_limit_header_count),
      cmocka_unit_test(test_limit_url),
      cmocka_unit_test(test_limit_body_content_length),
      cmocka_unit_test(test_limit_body_chunked),
      cmocka_unit_test(test_limit_body_default),
      cmocka_unit_test(test_bad_requests),
      cmocka_unit_test(test_not_implemented),
      cmocka_unit_test(test_version_not_supported),
      cmocka_unit_test(test_upgrade_leftover),
      cmocka_unit_test(test_upgrade_needs_connection),
      cmocka_unit_test(test_keep_alive_rules),
      cmocka_unit_test(test_targets),
      cmocka_unit_test(test_query_params),
      cmocka_unit_test(test_pct_decode),
      cmocka_unit_test(test_expect_continue),
      cmocka_unit_test(test_expect_continue_splits),
      cmocka_unit_test(test_dispose_mid_request),
      cmocka_unit_test(test_many_requests_reuse),
      cmocka_unit_test(test_pool),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
