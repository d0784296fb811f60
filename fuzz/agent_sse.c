/*
 * agent_sse.c — libFuzzer harness for the agent's upstream codecs
 * (agent/sse_parse.h).
 *
 * 1. The event-stream parser, fed the input whole and in pieces cut where
 *    the input's own bytes say, must produce the same events and result, and
 *    (with a cap larger than the input) the same events as an independent,
 *    deliberately naive reference written here from the WHATWG text (plus
 *    the documented lenient end). With a small cap (from byte 0) it may
 *    refuse with CH_ETOOBIG but must agree whole vs split.
 * 2. The UTF-8 cleaner on the input: its output is valid UTF-8, and cleaning
 *    in random pieces with carried tails gives the same bytes as one call.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/sse_parse.h"
#include "core/buf.h"
#include "core/err.h"
#include "ws/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "agent_sse: %s\n", what);
    abort();
  }
}

static int rec(void *ud, const char *type, size_t tl, const char *data, size_t dl) {
  ch_buf_t *b = ud;
  ch_buf_printf(b, "%zu:", tl);
  ch_buf_append(b, type, tl);
  ch_buf_printf(b, "%zu:", dl);
  ch_buf_append(b, data, dl);
  return 0;
}

static int parse(const char *p, size_t n, size_t max, const uint8_t *cuts, size_t ncuts, ch_buf_t *out) {
  ch_agent_sse_t s;
  ch_agent_sse_init(&s, max, rec, out);
  size_t at = 0;
  int rc = 0;
  for (size_t i = 0; i < ncuts && rc == 0 && at < n; i++) {
    size_t k = cuts[i] % 17;
    if (k > n - at) k = n - at;
    rc = ch_agent_sse_feed(&s, p + at, k);
    at += k;
  }
  if (rc == 0 && at < n) rc = ch_agent_sse_feed(&s, p + at, n - at);
  if (rc == 0) rc = ch_agent_sse_finish(&s);
  ch_agent_sse_dispose(&s);
  return rc;
}

/* The reference: whole input, straight from the spec's steps. */
static void reference(const char *p, size_t n, ch_buf_t *out) {
  ch_buf_t data = CH_BUF_INIT, type = CH_BUF_INIT;
  int has = 0;
  size_t i = 0;
  if (n >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) i = 3;
  while (i <= n) {
    size_t s = i;
    while (i < n && p[i] != '\r' && p[i] != '\n') i++;
    int last = i == n;
    size_t len = i - s;
    const char *line = p + s;
    if (!last) i += (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') ? 2 : 1;
    if (last && len == 0) break;
    if (len == 0) {
    Dispatch:
      if (has) rec(out, type.base ? type.base : "", type.len, data.base ? data.base : "", data.len ? data.len - 1 : 0);
      data.len = type.len = 0;
      has = 0;
      if (last) break;
      continue;
    }
    if (line[0] != ':') {
      const char *c = memchr(line, ':', len);
      size_t fl = c ? (size_t)(c - line) : len;
      const char *v = c ? c + 1 : line + len;
      size_t vl = (size_t)(line + len - v);
      if (vl && *v == ' ') v++, vl--;
      if (fl == 5 && !memcmp(line, "event", 5)) {
        type.len = 0;
        ch_buf_append(&type, v, vl);
      } else if (fl == 4 && !memcmp(line, "data", 4)) {
        ch_buf_append(&data, v, vl);
        ch_buf_append_byte(&data, '\n');
        has = 1;
      }
    }
    if (last) goto Dispatch;
  }
  if (has) rec(out, type.base ? type.base : "", type.len, data.base ? data.base : "", data.len ? data.len - 1 : 0);
  ch_buf_dispose(&data);
  ch_buf_dispose(&type);
}

static void fuzz_utf8(const uint8_t *d, size_t n) {
  ch_buf_t whole = CH_BUF_INIT, split = CH_BUF_INIT;
  check(ch_agent_utf8_clean(&whole, (const char *)d, n, 1) == n, "final clean consumes everything");
  check(ch_utf8_valid((const uint8_t *)(whole.base ? whole.base : ""), whole.len), "clean output is valid UTF-8");
  char tmp[24];
  size_t carry = 0, at = 0;
  for (;;) {
    size_t k = n - at;
    if (k > 1 + (size_t)(d[at % (n ? n : 1)] % 13)) k = 1 + (size_t)(d[at % (n ? n : 1)] % 13);
    if (n == 0) k = 0;
    memcpy(tmp + carry, d + at, k);
    at += k;
    size_t len = carry + k, used = ch_agent_utf8_clean(&split, tmp, len, at == n);
    check(len - used <= 3, "at most 3 bytes carried");
    if (at == n) {
      check(used == len, "the final call consumes everything");
      break;
    }
    memmove(tmp, tmp + used, len - used);
    carry = len - used;
  }
  check(whole.len == split.len && (whole.len == 0 || memcmp(whole.base, split.base, whole.len) == 0),
        "cleaning in pieces = cleaning at once");
  ch_buf_dispose(&whole);
  ch_buf_dispose(&split);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  if (n < 1) return 0;
  size_t small = 1 + (size_t)d[0];
  const char *p = (const char *)d + 1;
  size_t len = n - 1;
  ch_buf_t a = CH_BUF_INIT, b = CH_BUF_INIT, r = CH_BUF_INIT;
  /* big cap: whole = split = reference */
  int ra = parse(p, len, len + 16, NULL, 0, &a);
  int rb = parse(p, len, len + 16, d, n, &b);
  reference(p, len, &r);
  check(ra == 0 && rb == 0, "no refusal below the cap");
  check(a.len == b.len && (a.len == 0 || memcmp(a.base, b.base, a.len) == 0), "whole vs split");
  check(a.len == r.len && (a.len == 0 || memcmp(a.base, r.base, a.len) == 0), "parser vs reference");
  /* small cap: whole and split agree on the result (events up to a refusal may differ in count? no: same) */
  a.len = b.len = 0;
  ra = parse(p, len, small, NULL, 0, &a);
  rb = parse(p, len, small, d, n, &b);
  check(ra == 0 || ra == CH_ETOOBIG, "only CH_ETOOBIG");
  check(ra == rb, "small cap: same result whole vs split");
  check(a.len == b.len && (a.len == 0 || memcmp(a.base, b.base, a.len) == 0), "small cap: same events");
  ch_buf_dispose(&a);
  ch_buf_dispose(&b);
  ch_buf_dispose(&r);
  fuzz_utf8(d, n);
  return 0;
}
