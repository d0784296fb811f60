/*
 * http_req.c — libFuzzer harness for the HTTP/1.1 request reader.
 *
 * Input layout: byte 0 picks the limits (small, so every limit trips often),
 * byte 1 seeds the split pattern, the rest is the byte stream of a
 * connection. The stream is fed twice: once whole and once in pseudo-random
 * reads (1..64 bytes, each copied into its own exact-size heap block so ASan
 * sees any over-read). Every request is taken, queried (headers, joined
 * values, query parameters, router match) and freed.
 *
 * Checked invariants (abort on violation):
 *   - consumed <= len; CH_AGAIN consumes everything;
 *   - 0 yields a request whose strings respect the limits;
 *   - an error has a status in {400,413,414,431,501,505}, a text, and the
 *     code that goes with the status, and it is sticky;
 *   - the sequence of requests and the kind of final outcome (need more,
 *     error, upgrade at offset N) do not depend on the split: a digest of
 *     both runs must be identical.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"
#include "http/request.h"
#include "http/router.h"

#define CHECK(x)       \
  do {                 \
    if (!(x)) abort(); \
  } while (0)

static ch_http_router_t *g_router;
static int g_tag;

static void router_setup(void) {
  if (g_router != NULL) return;
  g_router = ch_http_router_new();
  ch_http_router_add(g_router, "GET", "/", &g_tag, NULL);
  ch_http_router_add(g_router, "GET", "/rooms/:id", &g_tag, NULL);
  ch_http_router_add(g_router, "POST", "/rooms/:id/messages", &g_tag, NULL);
  ch_http_router_add(g_router, "*", "/any/:a/:b", &g_tag, NULL);
  ch_http_router_add(g_router, "GET", "/static/*path", &g_tag, NULL);
}

static void digest_str(ch_buf_t *d, const char *s) {
  if (s == NULL) {
    ch_buf_append(d, "\xff", 1);
    return;
  }
  ch_buf_append(d, s, strlen(s) + 1);
}

static void use_request(ch_http_req_t *q, const ch_http_limits_t *lim, ch_buf_t *d) {
  CHECK(q != NULL && q->url != NULL && q->path != NULL && q->method_name != NULL);
  CHECK(strlen(q->url) <= lim->max_url);
  CHECK(q->nheaders <= lim->max_headers);
  CHECK(q->body.len <= lim->max_body);
  CHECK(q->http_major == 1);
  ch_buf_printf(d, "R%d.%d.%d.%d%d%d%d|", q->method, q->http_major, q->http_minor, q->keep_alive,
                q->upgrade, q->expect_continue, q->chunked);
  digest_str(d, q->url);
  digest_str(d, q->path);
  digest_str(d, q->query);
  for (size_t i = 0; i < q->nheaders; i++) {
    digest_str(d, q->headers[i].name);
    digest_str(d, q->headers[i].value);
    CHECK(ch_http_req_header(q, q->headers[i].name) != NULL);
    CHECK(ch_http_req_header_joined(q, q->headers[i].name) != NULL);
    ch_http_req_query_param(q, q->headers[i].name);
  }
  ch_buf_printf(d, "B%zu|", q->body.len);
  ch_buf_append(d, q->body.base, q->body.len);
  ch_http_req_query_param(q, "a");
  ch_http_req_query_param(q, "");
  ch_http_match_t m;
  int rc = ch_http_router_match(g_router, q->method_name, q->path, &m);
  CHECK(rc == 0 || rc == CH_ENOTFOUND || rc == CH_EUNSUPPORTED || rc == CH_ETOOBIG);
  if (rc == 0) {
    for (size_t i = 0; i < m.nparams; i++) CHECK(strlen(m.params[i].value) == m.params[i].len);
  } else if (rc == CH_EUNSUPPORTED) {
    ch_buf_t allow = CH_BUF_INIT;
    CHECK(ch_http_router_allow(g_router, q->path, &allow) == 0 && allow.len > 0);
    ch_buf_dispose(&allow);
  }
}

static unsigned g_seed;
static size_t next_read(size_t left) {
  g_seed = g_seed * 1103515245u + 12345u;
  size_t n = 1 + (g_seed >> 16) % 64;
  return n < left ? n : left;
}

/* Feed the stream (whole when split == 0) and write a digest of the outcome. */
static void run(const char *s, size_t len, const ch_http_limits_t *lim, int split, ch_buf_t *d) {
  ch_http_reader_t r;
  ch_http_reader_init(&r, lim);
  size_t start = 0;
  int rc = CH_AGAIN;
  while (start < len) {
    size_t n = split ? next_read(len - start) : len - start;
    char *piece = malloc(n);
    memcpy(piece, s + start, n);
    size_t p = 0;
    while (p < n) {
      size_t consumed = (size_t)-1;
      rc = ch_http_reader_feed(&r, piece + p, n - p, &consumed);
      CHECK(consumed <= n - p);
      ch_http_reader_need_continue(&r);
      if (rc == 0) {
        ch_http_req_t *q = ch_http_reader_take(&r);
        CHECK(ch_http_reader_take(&r) == NULL);
        p += consumed;
        use_request(q, lim, d);
        int up = q->upgrade;
        ch_http_req_free(q);
        if (up) {
          ch_buf_printf(d, "U%zu|", start + p);
          free(piece);
          goto Done;
        }
        continue;
      }
      if (rc == CH_AGAIN) {
        CHECK(consumed == n - p);
        break;
      }
      int st = ch_http_reader_status(&r);
      CHECK(ch_http_reader_error(&r) != NULL);
      switch (st) {
      case 400: CHECK(rc == CH_EPROTO); break;
      case 413:
      case 414:
      case 431: CHECK(rc == CH_ETOOBIG); break;
      case 501:
      case 505: CHECK(rc == CH_EUNSUPPORTED); break;
      default: abort();
      }
      size_t c2 = 1;
      CHECK(ch_http_reader_feed(&r, "x", 1, &c2) == rc && c2 == 0);
      /* Not the status: a request that is both malformed and over a limit
       * may get either answer depending on the split (see request.h). */
      ch_buf_printf(d, "E|");
      free(piece);
      goto Done;
    }
    free(piece);
    start += n;
  }
  CHECK(ch_http_reader_status(&r) == 0);
  ch_buf_printf(d, "A|");
Done:
  ch_http_reader_dispose(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  router_setup();
  ch_http_limits_t lim;
  switch (data[0] & 3) {
  case 0: lim = (ch_http_limits_t){256, 8, 64, 64}; break;
  case 1: lim = (ch_http_limits_t){64, 2, 16, 16}; break;
  case 2: lim = (ch_http_limits_t){1024, 32, 1024, 512}; break;
  default: ch_http_limits_default(&lim); break;
  }
  const char *s = (const char *)data + 2;
  size_t len = size - 2;
  ch_buf_t whole = CH_BUF_INIT, split = CH_BUF_INIT;
  run(s, len, &lim, 0, &whole);
  g_seed = data[1];
  run(s, len, &lim, 1, &split);
  CHECK(whole.len == split.len &&
        (whole.len == 0 || memcmp(whole.base, split.base, whole.len) == 0));
  ch_buf_dispose(&whole);
  ch_buf_dispose(&split);
  return 0;
}
