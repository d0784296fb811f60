/*
 * test_deflate.c — RFC 7692 permessage-deflate: negotiation and codec.
 *
 * Negotiation: a table of offer strings (the RFC 7692 examples, fallbacks,
 * every kind of invalid offer, syntax oddities) against several server
 * policies, each checked for the exact response value and parameters. Every
 * invalid offer is also retried with a valid fallback after it, proving the
 * scanner resynchronises at the next top-level comma.
 *
 * Codec: the RFC 7692 7.2.3 example bytes, round trips over every window
 * size with and without context takeover (cross-checked against plain zlib
 * so a symmetric bug cannot hide), messages deflated in random flush-point
 * splits, a zip bomb against the output limit (including how much memory
 * the output buffer reached), corrupt and truncated input.
 *
 * All inputs sit at the very end of a mapping followed by a PROT_NONE guard
 * page, so any read past the end faults.
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
#include <zlib.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/err.h"
#include "ws/deflate.h"

/* ---- guard page helper ---- */

typedef struct {
  void *map;
  size_t len;
} guard_t;

/* Copy p[0..n) so that its last byte is the last byte before a PROT_NONE page. */
static void *guard_copy(guard_t *g, const void *p, size_t n) {
  size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  size_t dp = n ? (n + pg - 1) / pg : 1;
  g->len = (dp + 1) * pg;
  g->map = mmap(NULL, g->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(g->map != MAP_FAILED);
  assert_int_equal(mprotect((char *)g->map + dp * pg, pg, PROT_NONE), 0);
  char *dst = (char *)g->map + dp * pg - n;
  if (n) memcpy(dst, p, n);
  return dst;
}

static const char *guard_str(guard_t *g, const char *s) {
  return s ? guard_copy(g, s, strlen(s) + 1) : NULL;
}

static void guard_free(guard_t *g) {
  if (g->map) munmap(g->map, g->len);
  g->map = NULL;
}

/* ---- negotiation ---- */

enum { CFG_DEF, CFG_OFF, CFG_C10, CFG_S10, CFG_NCT, CFG_S8, CFG_C8 };

static ch_ws_deflate_cfg_t make_cfg(int kind) {
  ch_ws_deflate_cfg_t c;
  memset(&c, 0, sizeof(c));
  c.enabled = kind != CFG_OFF;
  if (kind == CFG_C10) c.client_max_window_bits = 10;
  if (kind == CFG_S10) c.server_max_window_bits = 10;
  if (kind == CFG_NCT) c.server_no_context_takeover = c.client_no_context_takeover = 1;
  if (kind == CFG_S8) c.server_max_window_bits = 8;
  if (kind == CFG_C8) c.client_max_window_bits = 8;
  return c;
}

typedef struct {
  int cfg;
  const char *offer;
  const char *resp; /* NULL = declined */
  int snct, cnct, sbits, cbits;
} neg_case_t;

static const neg_case_t neg_cases[] = {
    /* plain and RFC 7692 section 5 / 7 examples */
    {CFG_DEF, "permessage-deflate", "permessage-deflate", 0, 0, 15, 15},
    {CFG_DEF, "permessage-deflate; client_max_window_bits", "permessage-deflate", 0, 0, 15, 15},
    {CFG_DEF,
     "permessage-deflate; client_max_window_bits; server_max_window_bits=10, "
     "permessage-deflate; client_max_window_bits",
     "permessage-deflate; server_max_window_bits=10", 0, 0, 10, 15},
    {CFG_DEF, "permessage-deflate; server_max_window_bits=10",
     "permessage-deflate; server_max_window_bits=10", 0, 0, 10, 15},
    {CFG_DEF, "permessage-deflate; server_max_window_bits=15",
     "permessage-deflate; server_max_window_bits=15", 0, 0, 15, 15},
    {CFG_DEF, "permessage-deflate; server_max_window_bits=9",
     "permessage-deflate; server_max_window_bits=9", 0, 0, 9, 15},
    {CFG_DEF, "permessage-deflate; client_max_window_bits=10",
     "permessage-deflate; client_max_window_bits=10", 0, 0, 15, 10},
    {CFG_DEF, "permessage-deflate; client_max_window_bits=8",
     "permessage-deflate; client_max_window_bits=8", 0, 0, 15, 8},
    {CFG_DEF, "permessage-deflate; server_no_context_takeover",
     "permessage-deflate; server_no_context_takeover", 1, 0, 15, 15},
    {CFG_DEF, "permessage-deflate; client_no_context_takeover",
     "permessage-deflate; client_no_context_takeover", 0, 1, 15, 15},
    {CFG_DEF,
     "permessage-deflate; client_no_context_takeover; server_no_context_takeover; "
     "client_max_window_bits=12; server_max_window_bits=11",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "server_max_window_bits=11; client_max_window_bits=12",
     1, 1, 11, 12},
    /* server_max_window_bits=8 is declined; the fallback is taken */
    {CFG_DEF, "permessage-deflate; server_max_window_bits=8", NULL, 0, 0, 0, 0},
    {CFG_DEF, "permessage-deflate; server_max_window_bits=8, permessage-deflate",
     "permessage-deflate", 0, 0, 15, 15},
    /* policy: client window limit */
    {CFG_C10, "permessage-deflate; client_max_window_bits",
     "permessage-deflate; client_max_window_bits=10", 0, 0, 15, 10},
    {CFG_C10, "permessage-deflate; client_max_window_bits=12",
     "permessage-deflate; client_max_window_bits=10", 0, 0, 15, 10},
    {CFG_C10, "permessage-deflate; client_max_window_bits=9",
     "permessage-deflate; client_max_window_bits=9", 0, 0, 15, 9},
    {CFG_C10, "permessage-deflate", NULL, 0, 0, 0, 0},
    {CFG_C10, "permessage-deflate, permessage-deflate; client_max_window_bits",
     "permessage-deflate; client_max_window_bits=10", 0, 0, 15, 10},
    {CFG_C8, "permessage-deflate; client_max_window_bits",
     "permessage-deflate; client_max_window_bits=9", 0, 0, 15, 9},
    /* policy: server window limit */
    {CFG_S10, "permessage-deflate", "permessage-deflate; server_max_window_bits=10", 0, 0, 10, 15},
    {CFG_S10, "permessage-deflate; server_max_window_bits=12",
     "permessage-deflate; server_max_window_bits=10", 0, 0, 10, 15},
    {CFG_S10, "permessage-deflate; server_max_window_bits=9",
     "permessage-deflate; server_max_window_bits=9", 0, 0, 9, 15},
    {CFG_S8, "permessage-deflate", "permessage-deflate; server_max_window_bits=9", 0, 0, 9, 15},
    /* policy: forced no_context_takeover */
    {CFG_NCT, "permessage-deflate",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover", 1, 1, 15, 15},
    /* policy: disabled */
    {CFG_OFF, "permessage-deflate", NULL, 0, 0, 0, 0},
    /* syntax variants */
    {CFG_DEF, "permessage-deflate; client_max_window_bits=\"10\"",
     "permessage-deflate; client_max_window_bits=10", 0, 0, 15, 10},
    {CFG_DEF, "permessage-deflate; server_max_window_bits=\"1\\2\"",
     "permessage-deflate; server_max_window_bits=12", 0, 0, 12, 15},
    {CFG_DEF, "  permessage-deflate ;  server_max_window_bits = 11 ;client_no_context_takeover\t ",
     "permessage-deflate; client_no_context_takeover; server_max_window_bits=11", 0, 1, 11, 15},
    {CFG_DEF, "PerMessage-Deflate; Server_Max_Window_Bits=11",
     "permessage-deflate; server_max_window_bits=11", 0, 0, 11, 15},
    {CFG_DEF, ", ,permessage-deflate,,", "permessage-deflate", 0, 0, 15, 15},
    {CFG_DEF, "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=11",
     "permessage-deflate; client_max_window_bits=11", 0, 0, 15, 11},
    /* a comma inside a quoted string is not an offer separator */
    {CFG_DEF, "foo; bar=\"x, permessage-deflate; server_max_window_bits=9, y\", permessage-deflate",
     "permessage-deflate", 0, 0, 15, 15},
    {CFG_DEF, "foo; bar=\"a\\\"b, permessage-deflate; server_max_window_bits=9\", permessage-deflate",
     "permessage-deflate", 0, 0, 15, 15},
    /* ...also while skipping a malformed element */
    {CFG_DEF, "foo bar=\"x, permessage-deflate; server_max_window_bits=9, y\", permessage-deflate",
     "permessage-deflate", 0, 0, 15, 15},
    /* nothing to accept */
    {CFG_DEF, "", NULL, 0, 0, 0, 0},
    {CFG_DEF, " , ,, ", NULL, 0, 0, 0, 0},
    {CFG_DEF, "deflate-frame", NULL, 0, 0, 0, 0},
    {CFG_DEF, "permessage-deflate-x", NULL, 0, 0, 0, 0},
};

/* Offers that must be skipped; each is also tried with ", permessage-deflate" after it. */
static const char *const bad_offers[] = {
    "permessage-deflate; foo",
    "permessage-deflate; foo=1",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
    "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
    "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; server_max_window_bits=",
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=010",
    "permessage-deflate; server_max_window_bits=08",
    "permessage-deflate; server_max_window_bits=1 0",
    "permessage-deflate; server_max_window_bits=-9",
    "permessage-deflate; server_max_window_bits=\"\"",
    "permessage-deflate; server_max_window_bits=\"10 \"",
    "permessage-deflate; client_max_window_bits=0x0f",
    "permessage-deflate; client_max_window_bits=\"\"",
    "permessage-deflate; client_max_window_bits=99999999999999999999",
    "permessage-deflate; client_max_window_bits=\"000000000000010\"",
    "permessage-deflate; server_no_context_takeover=true",
    "permessage-deflate; client_no_context_takeover=\"\"",
    "permessage-deflate;",
    "permessage-deflate; ",
    "permessage-deflate; =10",
    "permessage-deflate;; server_no_context_takeover",
    "permessage-deflate x",
    "permessage-deflate; server_max_window_bits=10; ",
    "permessage-deflate; server_max_window_bits=10 11",
    "permessage-deflate; server_max_window_bits==10",
    "permessage-deflate; \"server_no_context_takeover\"",
    "permessage-deflate; client_max_window_bits=\"1\x01\"",
    "; permessage-deflate",
    "\"permessage-deflate\"",
};

static void check_neg(const char *offer, int cfgkind, const char *resp, int snct, int cnct,
                      int sbits, int cbits) {
  guard_t g = {0};
  ch_ws_deflate_cfg_t cfg = make_cfg(cfgkind);
  ch_ws_deflate_params_t p;
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "X"); /* negotiate appends */
  int rc = ch_ws_deflate_negotiate(guard_str(&g, offer), &cfg, &p, &b);
  assert_int_equal(rc, 0);
  if (resp == NULL) {
    if (p.enabled) fprintf(stderr, "unexpectedly accepted: '%s' -> '%s'\n", offer, ch_buf_cstr(&b));
    assert_int_equal(p.enabled, 0);
    assert_int_equal(p.server_max_window_bits, 0);
    assert_int_equal(b.len, 1);
  } else {
    if (!p.enabled) fprintf(stderr, "unexpectedly declined: '%s'\n", offer);
    assert_int_equal(p.enabled, 1);
    assert_string_equal(ch_buf_cstr(&b) + 1, resp);
    assert_int_equal(p.server_no_context_takeover, snct);
    assert_int_equal(p.client_no_context_takeover, cnct);
    assert_int_equal(p.server_max_window_bits, sbits);
    assert_int_equal(p.client_max_window_bits, cbits);
    /* The same result without a response buffer. */
    ch_ws_deflate_params_t q;
    assert_int_equal(ch_ws_deflate_negotiate(offer, &cfg, &q, NULL), 0);
    assert_memory_equal(&p, &q, sizeof(p));
  }
  ch_buf_dispose(&b);
  guard_free(&g);
}

static void test_negotiate_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(neg_cases) / sizeof(neg_cases[0]); i++) {
    const neg_case_t *c = &neg_cases[i];
    check_neg(c->offer, c->cfg, c->resp, c->snct, c->cnct, c->sbits, c->cbits);
  }
}

static void test_negotiate_invalid_offers_skipped(void **state) {
  (void)state;
  char buf[512];
  for (size_t i = 0; i < sizeof(bad_offers) / sizeof(bad_offers[0]); i++) {
    check_neg(bad_offers[i], CFG_DEF, NULL, 0, 0, 0, 0);
    snprintf(buf, sizeof(buf), "%s, permessage-deflate; client_no_context_takeover", bad_offers[i]);
    check_neg(buf, CFG_DEF, "permessage-deflate; client_no_context_takeover", 0, 1, 15, 15);
  }
}

static void test_negotiate_unterminated_quote(void **state) {
  (void)state;
  /* An unterminated quoted string swallows the rest of the header. */
  check_neg("permessage-deflate; client_max_window_bits=\"10, permessage-deflate", CFG_DEF, NULL,
            0, 0, 0, 0);
  check_neg("foo; a=\"b, permessage-deflate", CFG_DEF, NULL, 0, 0, 0, 0);
}

static void test_negotiate_args(void **state) {
  (void)state;
  ch_ws_deflate_cfg_t cfg = make_cfg(CFG_DEF);
  ch_ws_deflate_params_t p;
  memset(&p, 0x55, sizeof(p));
  assert_int_equal(ch_ws_deflate_negotiate(NULL, &cfg, &p, NULL), 0);
  assert_int_equal(p.enabled, 0);
  assert_int_equal(ch_ws_deflate_negotiate("permessage-deflate", NULL, &p, NULL), CH_EINVAL);
  assert_int_equal(ch_ws_deflate_negotiate("permessage-deflate", &cfg, NULL, NULL), CH_EINVAL);
}

/* ---- codec ---- */

static ch_ws_deflate_params_t params(int snct, int cnct, int sbits, int cbits) {
  ch_ws_deflate_params_t p = {1, snct, cnct, sbits, cbits};
  return p;
}

static void test_new_rejects(void **state) {
  (void)state;
  ch_ws_deflate_params_t p = params(0, 0, 15, 15);
  assert_null(ch_ws_deflate_new(NULL, 1, 6, 8));
  p.enabled = 0;
  assert_null(ch_ws_deflate_new(&p, 1, 6, 8));
  p = params(0, 0, 7, 15);
  assert_null(ch_ws_deflate_new(&p, 1, 6, 8));
  p = params(0, 0, 15, 16);
  assert_null(ch_ws_deflate_new(&p, 1, 6, 8));
  /* Compressing with an 8-bit window is impossible with zlib... */
  p = params(0, 0, 8, 15);
  assert_null(ch_ws_deflate_new(&p, 1, 6, 8));
  p = params(0, 0, 15, 8);
  assert_null(ch_ws_deflate_new(&p, 0, 6, 8));
  /* ...but inflating the peer's 8-bit window is fine. */
  ch_ws_deflate_t *d = ch_ws_deflate_new(&p, 1, 6, 8);
  assert_non_null(d);
  ch_ws_deflate_free(d);
  ch_ws_deflate_free(NULL);
}

/* Inflate one message (input behind a guard page). */
static int inflate_msg(ch_ws_deflate_t *d, const void *in, size_t n, size_t max, ch_buf_t *out) {
  guard_t g = {0};
  const void *gin = guard_copy(&g, in, n);
  int rc = ch_ws_deflate_inflate(d, gin, n, max, out);
  guard_free(&g);
  return rc;
}

static int compress_msg(ch_ws_deflate_t *d, const void *in, size_t n, ch_buf_t *out) {
  guard_t g = {0};
  const void *gin = guard_copy(&g, in, n);
  int rc = ch_ws_deflate_compress(d, gin, n, out);
  guard_free(&g);
  return rc;
}

static const unsigned char hello_c[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
static const unsigned char hello_c2[] = {0xf2, 0x00, 0x11, 0x00, 0x00};

static void expect_inflate(ch_ws_deflate_t *d, const unsigned char *in, size_t n, const char *want) {
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "pre:");
  assert_int_equal(inflate_msg(d, in, n, 1 << 20, &b), 0);
  assert_int_equal(b.len, 4 + strlen(want));
  assert_memory_equal(b.base, "pre:", 4);
  assert_memory_equal(b.base + 4, want, strlen(want));
  ch_buf_dispose(&b);
}

static void test_rfc7692_hello_compress(void **state) {
  (void)state;
  ch_ws_deflate_params_t p = params(0, 0, 15, 15);
  ch_ws_deflate_t *d = ch_ws_deflate_new(&p, 1, 6, 8);
  ch_buf_t b = CH_BUF_INIT;
  /* 7.2.3.1: a message compressed. */
  assert_int_equal(compress_msg(d, "Hello", 5, &b), 0);
  assert_int_equal(b.len, sizeof(hello_c));
  assert_memory_equal(b.base, hello_c, sizeof(hello_c));
  /* 7.2.3.2: the second "Hello" refers back into the shared window. */
  b.len = 0;
  assert_int_equal(compress_msg(d, "Hello", 5, &b), 0);
  assert_int_equal(b.len, sizeof(hello_c2));
  assert_memory_equal(b.base, hello_c2, sizeof(hello_c2));
  /* 7.2.3.6: an empty message is the single byte 00. */
  b.len = 0;
  assert_int_equal(compress_msg(d, "", 0, &b), 0);
  assert_int_equal(b.len, 1);
  assert_int_equal((unsigned char)b.base[0], 0x00);
  /* ...and the stream goes on working after it: a receiver follows all four. */
  ch_buf_t third = CH_BUF_INIT;
  assert_int_equal(compress_msg(d, "Hello", 5, &third), 0);
  assert_true(third.len < sizeof(hello_c));
  ch_ws_deflate_free(d);
  ch_ws_deflate_t *c = ch_ws_deflate_new(&p, 0, 6, 8);
  expect_inflate(c, hello_c, sizeof(hello_c), "Hello");
  expect_inflate(c, hello_c2, sizeof(hello_c2), "Hello");
  expect_inflate(c, (const unsigned char *)"", 1, "");
  expect_inflate(c, (const unsigned char *)third.base, third.len, "Hello");
  ch_ws_deflate_free(c);
  ch_buf_dispose(&third);

  /* Without context takeover both messages are the full encoding. */
  p = params(1, 0, 15, 15);
  d = ch_ws_deflate_new(&p, 1, 6, 8);
  for (int i = 0; i < 3; i++) {
    b.len = 0;
    assert_int_equal(compress_msg(d, "Hello", 5, &b), 0);
    assert_int_equal(b.len, sizeof(hello_c));
    assert_memory_equal(b.base, hello_c, sizeof(hello_c));
  }
  ch_ws_deflate_free(d);
  ch_buf_dispose(&b);
}

static void test_rfc7692_inflate_examples(void **state) {
  (void)state;
  ch_ws_deflate_params_t p = params(0, 0, 15, 15);
  ch_ws_deflate_t *c = ch_ws_deflate_new(&p, 0, 6, 8); /* client inflates server data */
  /* 7.2.3.1 and 7.2.3.2 (shared window) */
  expect_inflate(c, hello_c, sizeof(hello_c), "Hello");
  expect_inflate(c, hello_c2, sizeof(hello_c2), "Hello");
  /* 7.2.3.3: no compression (stored block), then 7.2.3.6: empty */
  static const unsigned char stored[] = {0x00, 0x05, 0x00, 0xfa, 0xff, 0x48,
                                         0x65, 0x6c, 0x6c, 0x6f, 0x00};
  expect_inflate(c, stored, sizeof(stored), "Hello");
  static const unsigned char empty[] = {0x00};
  expect_inflate(c, empty, 1, "");
  /* 7.2.3.5: two DEFLATE blocks in one message */
  static const unsigned char two[] = {0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff,
                                      0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00};
  expect_inflate(c, two, sizeof(two), "Hello");
  /* 7.2.3.4: BFINAL=1, with and without a trailing padding byte; the window
   * survives the end of the zlib stream, so 7.2.3.2's back-reference works. */
  static const unsigned char fin[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
  static const unsigned char fin0[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00};
  expect_inflate(c, fin, sizeof(fin), "Hello");
  expect_inflate(c, hello_c2, sizeof(hello_c2), "Hello");
  expect_inflate(c, fin0, sizeof(fin0), "Hello");
  expect_inflate(c, hello_c2, sizeof(hello_c2), "Hello");
  /* n == 0 appends nothing and does not disturb the stream */
  ch_buf_t b = CH_BUF_INIT;
  assert_int_equal(ch_ws_deflate_inflate(c, "", 0, 100, &b), 0);
  assert_int_equal(b.len, 0);
  expect_inflate(c, hello_c2, sizeof(hello_c2), "Hello");
  ch_ws_deflate_free(c);

  /* With server_no_context_takeover the back-reference has nothing to refer to. */
  p = params(1, 0, 15, 15);
  c = ch_ws_deflate_new(&p, 0, 6, 8);
  expect_inflate(c, hello_c, sizeof(hello_c), "Hello");
  assert_int_equal(inflate_msg(c, hello_c2, sizeof(hello_c2), 100, &b), CH_EPROTO);
  assert_int_equal(b.len, 0);
  expect_inflate(c, hello_c, sizeof(hello_c), "Hello");
  ch_ws_deflate_free(c);
  ch_buf_dispose(&b);
}

/* Independent check: raw zlib inflate of payload + 00 00 ff ff. */
static void zlib_inflate_check(z_stream *zs, const ch_buf_t *payload, const void *want, size_t n) {
  ch_buf_t in = CH_BUF_INIT;
  ch_buf_append(&in, payload->base, payload->len);
  ch_buf_append(&in, "\x00\x00\xff\xff", 4);
  unsigned char *out = malloc(n + 16);
  zs->next_in = (unsigned char *)in.base;
  zs->avail_in = (uInt)in.len;
  zs->next_out = out;
  zs->avail_out = (uInt)(n + 16);
  int zrc = inflate(zs, Z_SYNC_FLUSH);
  assert_true(zrc == Z_OK || zrc == Z_BUF_ERROR);
  assert_int_equal(zs->avail_in, 0);
  assert_int_equal((size_t)(n + 16 - zs->avail_out), n);
  if (n) assert_memory_equal(out, want, n);
  free(out);
  ch_buf_dispose(&in);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 11);
}

/* Text-like message: words from a small vocabulary, or random bytes. */
static void make_msg(ch_buf_t *b, size_t n, int random_bytes) {
  static const char *const words[] = {"{\"type\":\"message\",", "\"room\":\"general\",",
                                      "\"text\":\"hello there\",", "\"seq\":12345,", " ",
                                      "\"user\":\"alice\"}", "lorem ipsum dolor "};
  b->len = 0;
  while (b->len < n) {
    if (random_bytes) {
      ch_buf_append_byte(b, (char)rnd());
    } else {
      const char *w = words[rnd() % 7];
      size_t k = strlen(w);
      if (k > n - b->len) k = n - b->len;
      ch_buf_append(b, w, k);
    }
  }
}

static void roundtrip(int snct, int cnct, int sbits, int cbits, int level, int mem) {
  ch_ws_deflate_params_t p = params(snct, cnct, sbits, cbits);
  ch_ws_deflate_t *srv = ch_ws_deflate_new(&p, 1, level, mem);
  ch_ws_deflate_t *cli = ch_ws_deflate_new(&p, 0, level, mem);
  assert_non_null(srv);
  assert_non_null(cli);
  /* Plain-zlib mirrors of each receiver, to catch symmetric bugs. */
  z_stream zc, zs;
  memset(&zc, 0, sizeof(zc));
  memset(&zs, 0, sizeof(zs));
  assert_int_equal(inflateInit2(&zc, -(sbits < 9 ? 9 : sbits)), Z_OK);
  assert_int_equal(inflateInit2(&zs, -(cbits < 9 ? 9 : cbits)), Z_OK);
  static const size_t sizes[] = {0, 1, 5, 100, 1000, 4095, 4096, 70000, 300000};
  ch_buf_t msg = CH_BUF_INIT, wire = CH_BUF_INIT, back = CH_BUF_INIT;
  for (size_t round = 0; round < 2; round++) {
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
      make_msg(&msg, sizes[i], (int)(i + round) % 3 == 0);
      /* server -> client */
      wire.len = back.len = 0;
      assert_int_equal(compress_msg(srv, msg.base, msg.len, &wire), 0);
      if (snct) inflateReset(&zc);
      zlib_inflate_check(&zc, &wire, msg.base, msg.len);
      assert_int_equal(inflate_msg(cli, wire.base, wire.len, msg.len, &back), 0);
      assert_int_equal(back.len, msg.len);
      if (msg.len) assert_memory_equal(back.base, msg.base, msg.len);
      /* client -> server */
      wire.len = back.len = 0;
      assert_int_equal(compress_msg(cli, msg.base, msg.len, &wire), 0);
      if (cnct) inflateReset(&zs);
      zlib_inflate_check(&zs, &wire, msg.base, msg.len);
      assert_int_equal(inflate_msg(srv, wire.base, wire.len, msg.len, &back), 0);
      assert_int_equal(back.len, msg.len);
      if (msg.len) assert_memory_equal(back.base, msg.base, msg.len);
    }
  }
  inflateEnd(&zc);
  inflateEnd(&zs);
  ch_buf_dispose(&msg);
  ch_buf_dispose(&wire);
  ch_buf_dispose(&back);
  ch_ws_deflate_free(srv);
  ch_ws_deflate_free(cli);
}

static void test_roundtrip_all_windows(void **state) {
  (void)state;
  for (int bits = 9; bits <= 15; bits++) {
    roundtrip(0, 0, bits, bits, 6, 8);
    roundtrip(1, 1, bits, 24 - bits, 1, 1);
  }
  roundtrip(1, 0, 15, 9, 9, 9);
  roundtrip(0, 1, 10, 15, 0 /* -> default */, 0 /* -> default */);
}

static void test_context_takeover_effect(void **state) {
  (void)state;
  ch_buf_t msg = CH_BUF_INIT, w1 = CH_BUF_INIT, w2 = CH_BUF_INIT;
  rng = 42;
  make_msg(&msg, 2000, 1); /* incompressible on its own */
  for (int nct = 0; nct <= 1; nct++) {
    ch_ws_deflate_params_t p = params(nct, 0, 15, 15);
    ch_ws_deflate_t *d = ch_ws_deflate_new(&p, 1, 6, 8);
    w1.len = w2.len = 0;
    assert_int_equal(compress_msg(d, msg.base, msg.len, &w1), 0);
    assert_int_equal(compress_msg(d, msg.base, msg.len, &w2), 0);
    assert_true(w1.len > 1900);
    if (nct) {
      assert_int_equal(w1.len, w2.len); /* fresh window each time */
      assert_memory_equal(w1.base, w2.base, w1.len);
    } else {
      assert_true(w2.len < 50); /* one back-reference into the previous message */
    }
    ch_ws_deflate_free(d);
  }
  ch_buf_dispose(&msg);
  ch_buf_dispose(&w1);
  ch_buf_dispose(&w2);
}

/* A sender that flushes at arbitrary points (as one producing fragments would). */
static void test_inflate_random_flush_points(void **state) {
  (void)state;
  ch_buf_t msg = CH_BUF_INIT, wire = CH_BUF_INIT, back = CH_BUF_INIT;
  z_stream z;
  memset(&z, 0, sizeof(z));
  assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
  ch_ws_deflate_params_t p = params(0, 0, 15, 15);
  ch_ws_deflate_t *c = ch_ws_deflate_new(&p, 0, 6, 8);
  for (int iter = 0; iter < 200; iter++) {
    size_t n = rnd() % 5000;
    make_msg(&msg, n, iter % 4 == 0);
    wire.len = 0;
    /* whole message as 1..n pieces, each closed by a sync flush (byte by byte for iter 0) */
    size_t off = 0;
    do {
      size_t k = iter == 0 ? 1 : 1 + rnd() % (n + 1);
      if (k > n - off) k = n - off;
      z.next_in = (unsigned char *)msg.base + off;
      z.avail_in = (uInt)k;
      off += k;
      do {
        char *o = ch_buf_reserve(&wire, 4096);
        z.next_out = (unsigned char *)o;
        z.avail_out = 4096;
        assert_true(deflate(&z, Z_SYNC_FLUSH) != Z_STREAM_ERROR);
        wire.len += 4096 - z.avail_out;
      } while (z.avail_out == 0);
    } while (off < n);
    assert_true(wire.len >= 4);
    assert_memory_equal(wire.base + wire.len - 4, "\x00\x00\xff\xff", 4);
    wire.len -= 4;
    back.len = 0;
    assert_int_equal(inflate_msg(c, wire.base, wire.len, n, &back), 0);
    assert_int_equal(back.len, n);
    if (n) assert_memory_equal(back.base, msg.base, n);
  }
  deflateEnd(&z);
  ch_ws_deflate_free(c);
  ch_buf_dispose(&msg);
  ch_buf_dispose(&wire);
  ch_buf_dispose(&back);
}

static void test_inflate_limit_bomb(void **state) {
  (void)state;
  /* 64 MiB of zeros deflates to ~64 KiB. */
  const size_t big = (size_t)64 << 20;
  unsigned char *zeros = calloc(1, big);
  ch_buf_t wire = CH_BUF_INIT, back = CH_BUF_INIT;
  ch_ws_deflate_params_t p = params(0, 0, 15, 15);
  ch_ws_deflate_t *srv = ch_ws_deflate_new(&p, 1, 9, 9);
  ch_ws_deflate_t *cli = ch_ws_deflate_new(&p, 0, 9, 9);
  assert_int_equal(ch_ws_deflate_compress(srv, zeros, big, &wire), 0);
  assert_true(wire.len < big / 500);
  /* Limit 1 MiB: refused, and the output buffer never grew past ~2x the limit. */
  ch_buf_append_str(&back, "keep");
  assert_int_equal(inflate_msg(cli, wire.base, wire.len, (size_t)1 << 20, &back), CH_ETOOBIG);
  assert_int_equal(back.len, 4);
  assert_memory_equal(back.base, "keep", 4);
  assert_true(back.cap <= ((size_t)2 << 20) + 64);
  ch_ws_deflate_free(cli);
  /* The limit is exact: big passes, big - 1 does not. */
  cli = ch_ws_deflate_new(&p, 0, 6, 8);
  back.len = 0;
  assert_int_equal(inflate_msg(cli, wire.base, wire.len, big - 1, &back), CH_ETOOBIG);
  assert_int_equal(back.len, 0);
  ch_ws_deflate_free(cli);
  cli = ch_ws_deflate_new(&p, 0, 6, 8);
  assert_int_equal(inflate_msg(cli, wire.base, wire.len, big, &back), 0);
  assert_int_equal(back.len, big);
  assert_memory_equal(back.base, zeros, big);
  /* small messages at the boundary */
  ch_ws_deflate_t *s2 = ch_ws_deflate_new(&p, 1, 6, 8);
  wire.len = 0;
  assert_int_equal(ch_ws_deflate_compress(s2, "Hello", 5, &wire), 0);
  back.len = 0;
  assert_int_equal(inflate_msg(cli, wire.base, wire.len, 4, &back), CH_ETOOBIG);
  assert_int_equal(back.len, 0);
  ch_ws_deflate_free(cli);
  cli = ch_ws_deflate_new(&p, 0, 6, 8);
  ch_ws_deflate_free(s2);
  s2 = ch_ws_deflate_new(&p, 1, 6, 8);
  wire.len = 0;
  assert_int_equal(ch_ws_deflate_compress(s2, "Hello", 5, &wire), 0);
  assert_int_equal(inflate_msg(cli, wire.base, wire.len, 5, &back), 0);
  assert_int_equal(back.len, 5);
  /* max_out 0: only empty messages pass */
  back.len = 0;
  assert_int_equal(inflate_msg(cli, "\x00", 1, 0, &back), 0);
  assert_int_equal(back.len, 0);
  ch_ws_deflate_free(s2);
  ch_ws_deflate_free(srv);
  ch_ws_deflate_free(cli);
  ch_buf_dispose(&wire);
  ch_buf_dispose(&back);
  free(zeros);
}

static void test_inflate_corrupt(void **state) {
  (void)state;
  ch_ws_deflate_params_t p = params(0, 0, 15, 15);
  ch_ws_deflate_t *c = ch_ws_deflate_new(&p, 0, 6, 8);
  ch_buf_t b = CH_BUF_INIT;
  static const struct {
    const char *bytes;
    size_t n;
  } bad[] = {
      {"\x07", 1},                         /* BFINAL=1 with reserved block type 11 */
      {"\x06", 1},                         /* reserved block type, not final */
      {"\x00\x05\x00\x00\x00Hello", 10},   /* stored block with NLEN != ~LEN */
      {"\x00\x0a\x00\xf5\xffHe", 7},       /* stored block of 10 cut after 2 (ends inside) */
      {"\xf2\x00\x11\x00\x00", 5},         /* back-reference with an empty window */
      {"\xff\xff\xff\xff\xff\xff\xff", 7}, /* garbage */
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    ch_buf_append_str(&b, "ok");
    assert_int_equal(inflate_msg(c, bad[i].bytes, bad[i].n, 1000, &b), CH_EPROTO);
    assert_int_equal(b.len, 2);
    b.len = 0;
    /* the inflater was discarded; a fresh one follows the next good message */
    expect_inflate(c, hello_c, sizeof(hello_c), "Hello");
    ch_ws_deflate_free(c);
    c = ch_ws_deflate_new(&p, 0, 6, 8);
  }
  /* Every truncation of a longer message: most are refused (ending inside a
   * block), none may crash, over-read, exceed the limit or leave partial output. */
  ch_ws_deflate_t *s = ch_ws_deflate_new(&p, 1, 6, 8);
  ch_buf_t msg = CH_BUF_INIT, wire = CH_BUF_INIT;
  make_msg(&msg, 3000, 0);
  assert_int_equal(ch_ws_deflate_compress(s, msg.base, msg.len, &wire), 0);
  size_t refused = 0;
  for (size_t k = 1; k < wire.len; k++) {
    ch_ws_deflate_t *c2 = ch_ws_deflate_new(&p, 0, 6, 8);
    b.len = 0;
    int rc = inflate_msg(c2, wire.base, k, msg.len, &b);
    if (rc == 0) {
      assert_true(b.len <= msg.len);
    } else {
      /* the tail decoded as codes of a cut block may also expand past the limit */
      assert_true(rc == CH_EPROTO || rc == CH_ETOOBIG);
      assert_int_equal(b.len, 0);
      refused++;
    }
    ch_ws_deflate_free(c2);
  }
  assert_true(refused > wire.len / 2);
  ch_ws_deflate_free(s);
  ch_ws_deflate_free(c);
  ch_buf_dispose(&msg);
  ch_buf_dispose(&wire);
  ch_buf_dispose(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_negotiate_table),
      cmocka_unit_test(test_negotiate_invalid_offers_skipped),
      cmocka_unit_test(test_negotiate_unterminated_quote),
      cmocka_unit_test(test_negotiate_args),
      cmocka_unit_test(test_new_rejects),
      cmocka_unit_test(test_rfc7692_hello_compress),
      cmocka_unit_test(test_rfc7692_inflate_examples),
      cmocka_unit_test(test_roundtrip_all_windows),
      cmocka_unit_test(test_context_takeover_effect),
      cmocka_unit_test(test_inflate_random_flush_points),
      cmocka_unit_test(test_inflate_limit_bomb),
      cmocka_unit_test(test_inflate_corrupt),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
