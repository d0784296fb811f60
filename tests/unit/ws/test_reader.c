/*
 * test_reader.c — the RFC 6455 message reader (ws/reader.h).
 *
 * Every case is a byte stream plus the events and final result it must
 * produce. run_all() feeds the stream to fresh readers whole, byte by byte
 * and in many random splits; each piece is copied to the end of a buffer
 * followed by a PROT_NONE page, so a read past the bytes given faults.
 * Every mode must yield the same events, return code, close code and error
 * string. In whole mode an unfragmented message must arrive zero-copy (its
 * pointer lies inside the fed piece).
 *
 * Covered: each violation with its close code and message, control frames
 * between fragments, UTF-8 across fragments and fail-fast inside one,
 * limits checked from the header alone, lengths 7/16/64-bit, callbacks that
 * stop or dispose, state after close / after error, and a randomised
 * generator of valid conversations checked against its own expectations.
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

#include "core/buf.h"
#include "core/err.h"
#include "ws/frame.h"
#include "ws/reader.h"

static uint64_t rng_state = 0x853C49E6748FEA9Bull;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* ---- guard page -------------------------------------------------------- */

#define GUARD_DATA (4u << 20)
static uint8_t *guard_base;
static size_t page_size;

static int guard_setup(void **state) {
  (void)state;
  page_size = (size_t)sysconf(_SC_PAGESIZE);
  guard_base = mmap(NULL, GUARD_DATA + page_size, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(guard_base != MAP_FAILED);
  assert_int_equal(mprotect(guard_base + GUARD_DATA, page_size, PROT_NONE), 0);
  return 0;
}
static int guard_teardown(void **state) {
  (void)state;
  munmap(guard_base, GUARD_DATA + page_size);
  return 0;
}

/* ---- frame building ---------------------------------------------------- */

typedef struct {
  int server; /* 1: we build client frames (masked), for a server reader */
} side_t;

/* Append one frame. rsv: CH_WS_RSV1|2|3 bits. Masked with a random key when
 * `masked`. */
static void put(ch_buf_t *b, int fin, int rsv, int op, const void *pl, size_t len, int masked) {
  uint8_t h[CH_WS_MAX_HEADER], key[4];
  for (int i = 0; i < 4; i++) key[i] = (uint8_t)rng();
  size_t hn = ch_ws_frame_header(h, fin, 0, op, len, masked ? key : NULL);
  h[0] |= (uint8_t)(rsv << 4);
  ch_buf_append(b, h, hn);
  size_t at = b->len;
  ch_buf_append(b, pl, len);
  if (masked && len) ch_ws_mask((uint8_t *)b->base + at, len, key, 0);
}
/* Masked client frame (what a server reads). */
static void cf(ch_buf_t *b, int fin, int op, const char *s, size_t len) { put(b, fin, 0, op, s, len, 1); }
#define CF(b, fin, op, lit) cf(b, fin, op, lit, sizeof(lit) - 1)

/* ---- event recording --------------------------------------------------- */

typedef struct {
  int kind; /* 'M' message, 'C' control */
  int op, comp;
  size_t len;
  uint8_t *data;
  int zc; /* pointer was inside the fed piece */
} ev_t;

#define MAXEV 512
typedef struct {
  ev_t ev[MAXEV];
  int n;
  int stop_at;  /* return stop_rc from the callback delivering event #stop_at */
  int stop_rc;
  int dispose;  /* ...and dispose + free the (heap) reader first */
  ch_ws_reader_t *r;
  const uint8_t *lo, *hi; /* current piece */
} rec_t;

static int record(rec_t *rc, int kind, int op, int comp, const uint8_t *d, size_t len) {
  assert_true(rc->n < MAXEV);
  ev_t *e = &rc->ev[rc->n];
  e->kind = kind, e->op = op, e->comp = comp, e->len = len;
  e->data = malloc(len ? len : 1);
  if (len) memcpy(e->data, d, len);
  e->zc = len && d >= rc->lo && d + len <= rc->hi;
  if (rc->n++ == rc->stop_at) {
    if (rc->dispose) {
      ch_ws_reader_dispose(rc->r);
      memset(rc->r, 0xDD, sizeof(*rc->r));
      free(rc->r);
      rc->r = NULL;
    }
    return rc->stop_rc;
  }
  return 0;
}
static int on_message(void *ud, int opcode, int compressed, const uint8_t *data, size_t len) {
  return record(ud, 'M', opcode, compressed, data, len);
}
static int on_control(void *ud, int opcode, const uint8_t *data, size_t len) {
  return record(ud, 'C', opcode, 0, data, len);
}
static const ch_ws_reader_cb_t cbs = {on_message, on_control};

static void rec_free(rec_t *rc) {
  for (int i = 0; i < rc->n; i++) free(rc->ev[i].data);
  rc->n = 0;
}

/* ---- running ----------------------------------------------------------- */

typedef struct {
  int rc;
  uint16_t close;
  const char *err;
  int closed;
  size_t stopped_at; /* byte offset of the end of the piece that returned rc */
} result_t;

enum { MODE_WHOLE = 0, MODE_BYTES = 1, MODE_RANDOM = 2 };

static size_t piece_len(int mode, size_t left) {
  size_t k = left;
  if (mode == MODE_BYTES && k > 1) k = 1;
  if (mode >= MODE_RANDOM && k > 1) {
    size_t r = rng();
    size_t max = (r & 3) == 0 ? 4096 : (r & 3) == 1 ? 64 : 9;
    k = 1 + (size_t)(r >> 8) % (max < left ? max : left);
  }
  return k;
}

static void run(const ch_ws_reader_cfg_t *cfg, const uint8_t *in, size_t n, int mode, rec_t *rc,
                result_t *res) {
  ch_ws_reader_t *r = malloc(sizeof(*r));
  size_t off = 0;
  rc->r = r;
  ch_ws_reader_init(r, cfg, &cbs, rc);
  memset(res, 0, sizeof(*res));
  while (off < n) {
    size_t k = piece_len(mode, n - off);
    assert_true(k <= GUARD_DATA);
    uint8_t *g = guard_base + GUARD_DATA - k;
    memcpy(g, in + off, k);
    rc->lo = g, rc->hi = g + k;
    res->rc = ch_ws_reader_feed(rc->r, g, k);
    off += k;
    if (res->rc != 0) break;
  }
  res->stopped_at = off;
  if (rc->r) {
    res->close = ch_ws_reader_close_code(rc->r);
    res->err = ch_ws_reader_error(rc->r);
    res->closed = ch_ws_reader_closed(rc->r);
    if (res->rc < 0 && res->rc > -100) { /* dead: sticky, no heap */
      assert_null(rc->r->_msg);
      uint8_t ok[6] = {0x81, 0x80, 0, 0, 0, 0};
      int before = rc->n;
      assert_int_equal(ch_ws_reader_feed(rc->r, ok, sizeof ok), res->rc);
      assert_int_equal(rc->n, before);
    }
    ch_ws_reader_dispose(rc->r);
    free(rc->r);
    rc->r = NULL;
  }
}

typedef struct {
  int kind, op, comp;
  const char *data;
  size_t len;
} want_t;
#define WM(op, lit) {'M', op, 0, lit, sizeof(lit) - 1}
#define WMC(op, lit) {'M', op, 1, lit, sizeof(lit) - 1}
#define WC(op, lit) {'C', op, 0, lit, sizeof(lit) - 1}

static const ch_ws_reader_cfg_t server_cfg = {0, 0, 1 << 20, 4 << 20};

/* Feed `in` in every mode; check events, rc, close code, error string. */
static void run_all_ex(const ch_ws_reader_cfg_t *cfg, const ch_buf_t *in, const want_t *want,
                       int nwant, int exp_rc, uint16_t exp_close, const char *exp_err,
                       int exp_closed) {
  for (int mode = 0; mode < 2 + 40; mode++) {
    rec_t *rc = calloc(1, sizeof(*rc));
    result_t res;
    rc->stop_at = -1;
    run(cfg, (const uint8_t *)in->base, in->len, mode, rc, &res);
    if (res.rc != exp_rc || rc->n != nwant)
      fail_msg("mode %d: rc %d (want %d), %d events (want %d), err '%s'", mode, res.rc, exp_rc,
               rc->n, nwant, res.err);
    assert_int_equal(res.close, exp_close);
    if (exp_err) assert_string_equal(res.err, exp_err);
    else assert_string_equal(res.err, "no error");
    assert_int_equal(res.closed, exp_closed);
    for (int i = 0; i < nwant; i++) {
      ev_t *e = &rc->ev[i];
      assert_int_equal(e->kind, want[i].kind);
      assert_int_equal(e->op, want[i].op);
      assert_int_equal(e->comp, want[i].comp);
      assert_int_equal(e->len, want[i].len);
      if (want[i].len) assert_memory_equal(e->data, want[i].data, want[i].len);
    }
    rec_free(rc);
    free(rc);
  }
}
static void run_all(const ch_buf_t *in, const want_t *want, int nwant, int exp_rc,
                    uint16_t exp_close, const char *exp_err) {
  run_all_ex(&server_cfg, in, want, nwant, exp_rc, exp_close, exp_err, 0);
}
#define NW(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Expect the stream to fail with this error and nothing delivered. */
static void expect_fail(const ch_ws_reader_cfg_t *cfg, const ch_buf_t *in, int rc, uint16_t close,
                        const char *err) {
  run_all_ex(cfg, in, NULL, 0, rc, close, err, 0);
}

/* ---- valid traffic ----------------------------------------------------- */

static void test_single_messages(void **state) {
  (void)state;
  ch_buf_t b = CH_BUF_INIT;
  CF(&b, 1, CH_WS_OP_TEXT, "Hello");
  CF(&b, 1, CH_WS_OP_BINARY, "\x00\x01\xff");
  CF(&b, 1, CH_WS_OP_TEXT, "");
  CF(&b, 1, CH_WS_OP_BINARY, "");
  CF(&b, 1, CH_WS_OP_TEXT, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5");
  const want_t w[] = {WM(CH_WS_OP_TEXT, "Hello"), WM(CH_WS_OP_BINARY, "\x00\x01\xff"),
                      WM(CH_WS_OP_TEXT, ""), WM(CH_WS_OP_BINARY, ""),
                      WM(CH_WS_OP_TEXT, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5")};
  run_all(&b, w, NW(w), 0, 0, NULL);
  ch_buf_dispose(&b);
}

/* The RFC 6455 5.7 bytes, literally. */
static void test_rfc_examples(void **state) {
  (void)state;
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append(&b, "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 11); /* masked Hello */
  ch_buf_append(&b, "\x89\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 11); /* masked ping Hello */
  const want_t w[] = {WM(CH_WS_OP_TEXT, "Hello"), WC(CH_WS_OP_PING, "Hello")};
  run_all(&b, w, NW(w), 0, 0, NULL);
  ch_buf_dispose(&b);
  /* unmasked forms, read as a client */
  ch_buf_t c = CH_BUF_INIT;
  ch_buf_append(&c, "\x01\x03\x48\x65\x6c", 5); /* fragmented "Hel" */
  ch_buf_append(&c, "\x80\x02\x6c\x6f", 4);     /* "lo" */
  ch_buf_append(&c, "\x8a\x05Hello", 7);        /* pong */
  ch_ws_reader_cfg_t cc = {1, 0, 0, 0};
  const want_t wc[] = {WM(CH_WS_OP_TEXT, "Hello"), WC(CH_WS_OP_PONG, "Hello")};
  run_all_ex(&cc, &c, wc, NW(wc), 0, 0, NULL, 0);
  ch_buf_dispose(&c);
}

static void test_lengths_16_64(void **state) {
  (void)state;
  static const size_t lens[] = {125, 126, 127, 300, 65535, 65536, 70000, 200000};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    size_t n = lens[i];
    char *pl = malloc(n);
    for (size_t k = 0; k < n; k++) pl[k] = (char)('a' + k % 26);
    ch_buf_t b = CH_BUF_INIT;
    cf(&b, 1, CH_WS_OP_TEXT, pl, n);
    cf(&b, 1, CH_WS_OP_BINARY, pl, n);
    const want_t w[] = {{'M', CH_WS_OP_TEXT, 0, pl, n}, {'M', CH_WS_OP_BINARY, 0, pl, n}};
    if (n > 70000) { /* byte mode on the largest ones is slow: whole + a few splits */
      for (int mode = 0; mode < 6; mode += (mode == 0 ? 2 : 1)) {
        rec_t *rc = calloc(1, sizeof(*rc));
        result_t res;
        rc->stop_at = -1;
        run(&server_cfg, (const uint8_t *)b.base, b.len, mode, rc, &res);
        assert_int_equal(res.rc, 0);
        assert_int_equal(rc->n, 2);
        assert_int_equal(rc->ev[1].len, n);
        assert_memory_equal(rc->ev[1].data, pl, n);
        rec_free(rc);
        free(rc);
      }
    } else {
      run_all(&b, w, 2, 0, 0, NULL);
    }
    ch_buf_dispose(&b);
    free(pl);
  }
}

static void test_fragmented(void **state) {
  (void)state;
  ch_buf_t b = CH_BUF_INIT;
  /* "Hello, wörld" with ö (C3 B6) split across fragments */
  CF(&b, 0, CH_WS_OP_TEXT, "Hel");
  CF(&b, 0, CH_WS_OP_CONT, "lo, w\xc3");
  CF(&b, 1, CH_WS_OP_CONT, "\xb6rld");
  /* empty fragments */
  CF(&b, 0, CH_WS_OP_BINARY, "");
  CF(&b, 0, CH_WS_OP_CONT, "");
  CF(&b, 0, CH_WS_OP_CONT, "x");
  CF(&b, 1, CH_WS_OP_CONT, "");
  CF(&b, 0, CH_WS_OP_TEXT, "");
  CF(&b, 1, CH_WS_OP_CONT, "");
  /* a 4-byte character split 1+1+2 over three fragments */
  CF(&b, 0, CH_WS_OP_TEXT, "\xf0");
  CF(&b, 0, CH_WS_OP_CONT, "\x9f");
  CF(&b, 1, CH_WS_OP_CONT, "\x98\x80");
  const want_t w[] = {WM(CH_WS_OP_TEXT, "Hello, w\xc3\xb6rld"), WM(CH_WS_OP_BINARY, "x"),
                      WM(CH_WS_OP_TEXT, ""), WM(CH_WS_OP_TEXT, "\xf0\x9f\x98\x80")};
  run_all(&b, w, NW(w), 0, 0, NULL);
  ch_buf_dispose(&b);
}

static void test_control_interleaved(void **state) {
  (void)state;
  ch_buf_t b = CH_BUF_INIT;
  char big[125];
  memset(big, 'p', sizeof big);
  CF(&b, 0, CH_WS_OP_TEXT, "ab");
  CF(&b, 1, CH_WS_OP_PING, "p1");
  CF(&b, 0, CH_WS_OP_CONT, "cd");
  cf(&b, 1, CH_WS_OP_PONG, big, 125); /* the maximum control payload */
  CF(&b, 1, CH_WS_OP_PING, "");
  CF(&b, 1, CH_WS_OP_CONT, "ef");
  CF(&b, 1, CH_WS_OP_PING, "after");
  const want_t w[] = {WC(CH_WS_OP_PING, "p1"),
                      {'C', CH_WS_OP_PONG, 0, big, 125},
                      WC(CH_WS_OP_PING, ""),
                      WM(CH_WS_OP_TEXT, "abcdef"),
                      WC(CH_WS_OP_PING, "after")};
  run_all(&b, w, NW(w), 0, 0, NULL);
  ch_buf_dispose(&b);
}

static void test_close_then_ignore(void **state) {
  (void)state;
  /* empty close */
  ch_buf_t b = CH_BUF_INIT;
  CF(&b, 1, CH_WS_OP_TEXT, "x");
  CF(&b, 1, CH_WS_OP_CLOSE, "");
  ch_buf_append(&b, "\xff\xff garbage that would be a protocol error", 40);
  const want_t w[] = {WM(CH_WS_OP_TEXT, "x"), WC(CH_WS_OP_CLOSE, "")};
  run_all_ex(&server_cfg, &b, w, NW(w), 0, 0, NULL, 1);
  ch_buf_dispose(&b);

  /* code + reason, inside an unfinished fragmented message (dropped) */
  ch_buf_init(&b);
  CF(&b, 0, CH_WS_OP_TEXT, "part");
  CF(&b, 1, CH_WS_OP_CLOSE, "\x03\xe8" "bye \xe2\x82\xac");
  CF(&b, 1, CH_WS_OP_CONT, "more");
  const want_t w2[] = {WC(CH_WS_OP_CLOSE, "\x03\xe8" "bye \xe2\x82\xac")};
  run_all_ex(&server_cfg, &b, w2, NW(w2), 0, 0, NULL, 1);
  ch_buf_dispose(&b);
}

static void test_close_codes(void **state) {
  (void)state;
  static const uint16_t good[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                  1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999};
  static const uint16_t bad[] = {0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    ch_buf_t b = CH_BUF_INIT;
    char pl[2] = {(char)(good[i] >> 8), (char)good[i]};
    cf(&b, 1, CH_WS_OP_CLOSE, pl, 2);
    const want_t w[] = {{'C', CH_WS_OP_CLOSE, 0, pl, 2}};
    run_all_ex(&server_cfg, &b, w, 1, 0, 0, NULL, 1);
    ch_buf_dispose(&b);
  }
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ch_buf_t b = CH_BUF_INIT;
    char pl[4] = {(char)(bad[i] >> 8), (char)bad[i], 'o', 'k'};
    cf(&b, 1, CH_WS_OP_CLOSE, pl, 4);
    expect_fail(&server_cfg, &b, CH_EPROTO, 1002, "invalid close code");
    ch_buf_dispose(&b);
  }
}

static void test_close_payload_errors(void **state) {
  (void)state;
  ch_buf_t b = CH_BUF_INIT;
  CF(&b, 1, CH_WS_OP_CLOSE, "\x03");
  expect_fail(&server_cfg, &b, CH_EPROTO, 1002, "close payload of 1 byte");
  /* detected from the header alone (the payload byte never sent) */
  b.len = 6;
  expect_fail(&server_cfg, &b, CH_EPROTO, 1002, "close payload of 1 byte");
  ch_buf_dispose(&b);

  ch_buf_init(&b);
  CF(&b, 1, CH_WS_OP_CLOSE, "\x03\xe8\xed\xa0\x80"); /* surrogate reason */
  expect_fail(&server_cfg, &b, CH_EUTF8, 1007, "invalid UTF-8");
  ch_buf_dispose(&b);
  ch_buf_init(&b);
  CF(&b, 1, CH_WS_OP_CLOSE, "\x03\xe8ok\xe2\x82"); /* truncated reason */
  expect_fail(&server_cfg, &b, CH_EUTF8, 1007, "invalid UTF-8");
  ch_buf_dispose(&b);
}

/* ---- section 5 violations ---------------------------------------------- */

static void test_mask_rules(void **state) {
  (void)state;
  ch_buf_t b = CH_BUF_INIT;
  put(&b, 1, 0, CH_WS_OP_TEXT, "hi", 2, 0);
  expect_fail(&server_cfg, &b, CH_EPROTO, 1002, "unmasked client frame");
  ch_buf_dispose(&b);
  /* unmasked control frame too */
  ch_buf_init(&b);
  put(&b, 1, 0, CH_WS_OP_PING, "hi", 2, 0);
  expect_fail(&server_cfg, &b, CH_EPROTO, 1002, "unmasked client frame");
  ch_buf_dispose(&b);

  /* client side: masked frames are the error, unmasked ones are fine */
  ch_ws_reader_cfg_t cc = {1, 0, 0, 0};
  ch_buf_init(&b);
  put(&b, 1, 0, CH_WS_OP_TEXT, "hi", 2, 1);
  expect_fail(&cc, &b, CH_EPROTO, 1002, "masked server frame");
  ch_buf_dispose(&b);
  ch_buf_init(&b);
  put(&b, 1, 0, CH_WS_OP_TEXT, "hi", 2, 0);
  put(&b, 1, 0, CH_WS_OP_PING, "p", 1, 0);
  const want_t w[] = {WM(CH_WS_OP_TEXT, "hi"), WC(CH_WS_OP_PING, "p")};
  run_all_ex(&cc, &b, w, NW(w), 0, 0, NULL, 0);
  ch_buf_dispose(&b);
}

static void test_rsv_rules(void **state) {
  (void)state;
  ch_ws_reader_cfg_t deflate = server_cfg;
  deflate.allow_rsv1 = 1;
  ch_buf_t b;
  /* RSV1 without permessage-deflate */
  ch_buf_init(&b);
  put(&b, 1, CH_WS_RSV1, CH_WS_OP_TEXT, "x", 1, 1);
  expect_fail(&server_cfg, &b, CH_EPROTO, 1002, "reserved bits set");
  ch_buf_dispose(&b);
  /* RSV2, RSV3 never, even with deflate */
  for (int rsv = 1; rsv <= 3; rsv++) {
    ch_buf_init(&b);
    put(&b, 1, rsv, CH_WS_OP_BINARY, "x", 1, 1);
    expect_fail(&deflate, &b, CH_EPROTO, 1002, "reserved bits set");
    expect_fail(&server_cfg, &b, CH_EPROTO, 1002, "reserved bits set");
    ch_buf_dispose(&b);
  }
  /* RSV1 on a control frame */
  ch_buf_init(&b);
  put(&b, 1, CH_WS_RSV1, CH_WS_OP_PING, "x", 1, 1);
  expect_fail(&deflate, &b, CH_EPROTO, 1002, "reserved bits set");
  ch_buf_dispose(&b);
  /* RSV1 on a continuation frame */
  ch_buf_init(&b);
  put(&b, 0, CH_WS_RSV1, CH_WS_OP_TEXT, "a", 1, 1);
  put(&b, 1, CH_WS_RSV1, CH_WS_OP_CONT, "b", 1, 1);
  expect_fail(&deflate, &b, CH_EPROTO, 1002, "reserved bits set");
  ch_buf_dispose(&b);
  /* Allowed on a first frame: compressed, and text is NOT UTF-8-checked;
   * the flag covers all fragments; the next message starts uncompressed. */
  ch_buf_init(&b);
  put(&b, 1, CH_WS_RSV1, CH_WS_OP_TEXT, "\xff\xfe", 2, 1);
  put(&b, 0, CH_WS_RSV1, CH_WS_OP_BINARY, "\x01", 1, 1);
  put(&b, 1, 0, CH_WS_OP_PING, "", 0, 1);
  put(&b, 1, 0, CH_WS_OP_CONT, "\x02", 1, 1);
  put(&b, 1, 0, CH_WS_OP_TEXT, "plain", 5, 1);
  const want_t w[] = {WMC(CH_WS_OP_TEXT, "\xff\xfe"), WC(CH_WS_OP_PING, ""),
                      WMC(CH_WS_OP_BINARY, "\x01\x02"), WM(CH_WS_OP_TEXT, "plain")};
  run_all_ex(&deflate, &b, w, NW(w), 0, 0, NULL, 0);
  /* ...and an uncompressed text message after it is checked again */
  put(&b, 1, 0, CH_WS_OP_TEXT, "\xff", 1, 1);
  run_all_ex(&deflate, &b, w, NW(w), CH_EUTF8, 1007, "invalid UTF-8", 0);
  ch_buf_dispose(&b);
}

static void test_reserved_opcodes(void **state) {
  (void)state;
  static const int ops[] = {3, 4, 5, 6, 7, 11, 12, 13, 14, 15};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    ch_buf_t b = CH_BUF_INIT;
    put(&b, 1, 0, ops[i], "", 0, 1);
    expect_fail(&server_cfg, &b, CH_EPROTO, 1002, "reserved opcode");
    ch_buf_dispose(&b);
    /* also inside a fragmented message, after a good message */
    ch_buf_init(&b);
    CF(&b, 1, CH_WS_OP_TEXT, "ok");
    CF(&b, 0, CH_WS_OP_TEXT, "a");
    put(&b, 0, 0, ops[i], "zz", 2, 1);
    const want_t w[] = {WM(CH_WS_OP_TEXT, "ok")};
    run_all(&b, w, 1, CH_EPROTO, 1002, "reserved opcode");
    ch_buf_dispose(&b);
  }
}

static void test_control_rules(void **state) {
  (void)state;
  char big[126];
  memset(big, 'x', sizeof big);
  static const int ops[] = {CH_WS_OP_PING, CH_WS_OP_PONG, CH_WS_OP_CLOSE};
  for (int i = 0; i < 3; i++) {
    ch_buf_t b = CH_BUF_INIT;
    cf(&b, 1, ops[i], big, 126);
    expect_fail(&server_cfg, &b, CH_EPROTO, 1002, "control frame too long");
    b.len = 8; /* the header alone is enough */
    expect_fail(&server_cfg, &b, CH_EPROTO, 1002, "control frame too long");
    ch_buf_dispose(&b);
    ch_buf_init(&b);
    cf(&b, 0, ops[i], "\x03\xe8", 2);
    expect_fail(&server_cfg, &b, CH_EPROTO, 1002, "fragmented control frame");
    ch_buf_dispose(&b);
  }
}

static void test_fragment_rules(void **state) {
  (void)state;
  ch_buf_t b = CH_BUF_INIT;
  CF(&b, 1, CH_WS_OP_CONT, "x");
  expect_fail(&server_cfg, &b, CH_EPROTO, 1002, "continuation without start");
  ch_buf_dispose(&b);

  ch_buf_init(&b);
  CF(&b, 1, CH_WS_OP_TEXT, "done");
  CF(&b, 0, CH_WS_OP_CONT, "x");
  const want_t w[] = {WM(CH_WS_OP_TEXT, "done")};
  run_all(&b, w, 1, CH_EPROTO, 1002, "continuation without start");
  ch_buf_dispose(&b);

  static const int ops[] = {CH_WS_OP_TEXT, CH_WS_OP_BINARY};
  for (int i = 0; i < 2; i++)
    for (int fin = 0; fin < 2; fin++) {
      ch_buf_init(&b);
      CF(&b, 0, CH_WS_OP_BINARY, "a");
      CF(&b, 1, CH_WS_OP_PING, "");
      cf(&b, fin, ops[i], "b", 1);
      const want_t wp[] = {WC(CH_WS_OP_PING, "")};
      run_all(&b, wp, 1, CH_EPROTO, 1002, "new message during fragmented message");
      ch_buf_dispose(&b);
    }
}

static void test_utf8_rules(void **state) {
  (void)state;
  ch_buf_t b = CH_BUF_INIT;
  /* invalid in a single frame */
  static const char *bad[] = {"\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xff", "a\x80",
                              "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ch_buf_init(&b);
    cf(&b, 1, CH_WS_OP_TEXT, bad[i], strlen(bad[i]));
    expect_fail(&server_cfg, &b, CH_EUTF8, 1007, "invalid UTF-8");
    ch_buf_dispose(&b);
  }
  /* truncated at the end of a message */
  ch_buf_init(&b);
  CF(&b, 1, CH_WS_OP_TEXT, "ok\xe2\x82");
  expect_fail(&server_cfg, &b, CH_EUTF8, 1007, "invalid UTF-8");
  ch_buf_dispose(&b);
  ch_buf_init(&b);
  CF(&b, 0, CH_WS_OP_TEXT, "ok");
  CF(&b, 1, CH_WS_OP_CONT, "\xf0\x9f\x98");
  expect_fail(&server_cfg, &b, CH_EUTF8, 1007, "invalid UTF-8");
  ch_buf_dispose(&b);
  /* invalid across the fragment boundary: E0 | 80 */
  ch_buf_init(&b);
  CF(&b, 0, CH_WS_OP_TEXT, "ok\xe0");
  CF(&b, 1, CH_WS_OP_CONT, "\x80\x80");
  expect_fail(&server_cfg, &b, CH_EUTF8, 1007, "invalid UTF-8");
  ch_buf_dispose(&b);
  /* binary is never checked */
  ch_buf_init(&b);
  CF(&b, 1, CH_WS_OP_BINARY, "\xff\xed\xa0\x80");
  const want_t w[] = {WM(CH_WS_OP_BINARY, "\xff\xed\xa0\x80")};
  run_all(&b, w, 1, 0, 0, NULL);
  ch_buf_dispose(&b);
}

/* Fail-fast: the error comes from the feed carrying the bad byte, before the
 * frame (let alone the message) is complete. */
static void test_utf8_fail_fast(void **state) {
  (void)state;
  char pl[200];
  memset(pl, 'a', sizeof pl);
  pl[50] = (char)0xff;
  ch_buf_t b = CH_BUF_INIT;
  cf(&b, 0, CH_WS_OP_TEXT, pl, sizeof pl); /* non-final fragment, 200 bytes */
  size_t hdr = 2 + 2 + 4, bad_at = hdr + 50;
  for (int mode = 0; mode < 30; mode++) {
    rec_t *rc = calloc(1, sizeof(*rc));
    result_t res;
    rc->stop_at = -1;
    /* feed only up to and including the bad byte: the message never ends */
    run(&server_cfg, (const uint8_t *)b.base, bad_at + 1, mode, rc, &res);
    assert_int_equal(res.rc, CH_EUTF8);
    assert_int_equal(res.close, 1007);
    assert_int_equal(res.stopped_at, bad_at + 1);
    /* the piece that failed is the one with the bad byte */
    run(&server_cfg, (const uint8_t *)b.base, bad_at, mode, rc, &res);
    assert_int_equal(res.rc, 0);
    assert_int_equal(rc->n, 0);
    free(rc);
  }
  ch_buf_dispose(&b);
}

static void test_limits(void **state) {
  (void)state;
  ch_ws_reader_cfg_t cfg = {0, 0, 10, 16};
  ch_buf_t b = CH_BUF_INIT;
  char pl[100];
  memset(pl, 'z', sizeof pl);

  /* exactly at the frame limit: fine; one over: 1009 from the header alone */
  cf(&b, 1, CH_WS_OP_BINARY, pl, 10);
  const want_t w[] = {{'M', CH_WS_OP_BINARY, 0, pl, 10}};
  run_all_ex(&cfg, &b, w, 1, 0, 0, NULL, 0);
  ch_buf_dispose(&b);
  ch_buf_init(&b);
  cf(&b, 1, CH_WS_OP_BINARY, pl, 11);
  expect_fail(&cfg, &b, CH_ETOOBIG, 1009, "frame too large");
  b.len = 6;
  expect_fail(&cfg, &b, CH_ETOOBIG, 1009, "frame too large");
  ch_buf_dispose(&b);
  /* a huge 64-bit length is refused before any payload */
  ch_buf_init(&b);
  ch_buf_append(&b, "\x82\xff\x00\x00\x01\x00\x00\x00\x00\x00" "abcd", 14);
  expect_fail(&cfg, &b, CH_ETOOBIG, 1009, "frame too large");
  ch_buf_dispose(&b);

  /* message limit over fragments: 10 + 6 = 16 ok, 10 + 7 = 17 not */
  ch_buf_init(&b);
  cf(&b, 0, CH_WS_OP_TEXT, pl, 10);
  cf(&b, 1, CH_WS_OP_PING, pl, 100); /* control frames do not count */
  cf(&b, 1, CH_WS_OP_CONT, pl, 6);
  const want_t w2[] = {{'C', CH_WS_OP_PING, 0, pl, 100}, {'M', CH_WS_OP_TEXT, 0, pl, 16}};
  run_all_ex(&cfg, &b, w2, 2, 0, 0, NULL, 0);
  ch_buf_dispose(&b);
  ch_buf_init(&b);
  cf(&b, 0, CH_WS_OP_TEXT, pl, 10);
  cf(&b, 0, CH_WS_OP_CONT, pl, 7);
  size_t hdr_end = b.len - 7; /* the second header is enough */
  expect_fail(&cfg, &b, CH_ETOOBIG, 1009, "message too large");
  b.len = hdr_end;
  expect_fail(&cfg, &b, CH_ETOOBIG, 1009, "message too large");
  ch_buf_dispose(&b);
  /* unfragmented frame over the message limit but within the frame limit */
  ch_ws_reader_cfg_t cfg2 = {0, 0, 100, 5};
  ch_buf_init(&b);
  cf(&b, 1, CH_WS_OP_BINARY, pl, 6);
  expect_fail(&cfg2, &b, CH_ETOOBIG, 1009, "message too large");
  ch_buf_dispose(&b);
  /* 0 = no limit */
  ch_ws_reader_cfg_t unl = {0, 0, 0, 0};
  ch_buf_init(&b);
  cf(&b, 0, CH_WS_OP_BINARY, pl, 100);
  cf(&b, 1, CH_WS_OP_CONT, pl, 100);
  rec_t *rc = calloc(1, sizeof(*rc));
  result_t res;
  rc->stop_at = -1;
  run(&unl, (const uint8_t *)b.base, b.len, MODE_WHOLE, rc, &res);
  assert_int_equal(res.rc, 0);
  assert_int_equal(rc->n, 1);
  assert_int_equal(rc->ev[0].len, 200);
  rec_free(rc);
  free(rc);
  ch_buf_dispose(&b);
}

static void test_length_encoding_rules(void **state) {
  (void)state;
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append(&b, "\x82\xfe\x00\x05" "abcd" "01234", 13); /* 5 as 16-bit */
  expect_fail(&server_cfg, &b, CH_EPROTO, 1002, "non-minimal length encoding");
  ch_buf_dispose(&b);
  ch_buf_init(&b);
  ch_buf_append(&b, "\x82\xff\x00\x00\x00\x00\x00\x00\xff\xff" "abcd", 14); /* 65535 as 64-bit */
  expect_fail(&server_cfg, &b, CH_EPROTO, 1002, "non-minimal length encoding");
  ch_buf_dispose(&b);
  ch_buf_init(&b);
  ch_buf_append(&b, "\x82\xff\x80\x00\x00\x00\x00\x00\x00\x10" "abcd", 14);
  expect_fail(&server_cfg, &b, CH_EPROTO, 1002, "64-bit length with MSB set");
  ch_buf_dispose(&b);
}

/* ---- callbacks, lifetime, memory --------------------------------------- */

static void test_callback_stops(void **state) {
  (void)state;
  ch_buf_t b = CH_BUF_INIT;
  CF(&b, 1, CH_WS_OP_TEXT, "one");
  CF(&b, 1, CH_WS_OP_PING, "p");
  CF(&b, 1, CH_WS_OP_TEXT, "two");
  for (int stop = 0; stop < 3; stop++)
    for (int dispose = 0; dispose < 2; dispose++)
      for (int mode = 0; mode < 12; mode++) {
        rec_t *rc = calloc(1, sizeof(*rc));
        result_t res;
        rc->stop_at = stop;
        rc->stop_rc = 77 + stop;
        rc->dispose = dispose;
        run(&server_cfg, (const uint8_t *)b.base, b.len, mode, rc, &res);
        assert_int_equal(res.rc, 77 + stop);
        assert_int_equal(rc->n, stop + 1); /* nothing after the stop */
        rec_free(rc);
        free(rc);
      }
  ch_buf_dispose(&b);

  /* dispose from inside the callback while a buffered message is being
   * delivered (ASan checks the reader is not touched afterwards) */
  ch_buf_init(&b);
  CF(&b, 0, CH_WS_OP_TEXT, "frag");
  CF(&b, 1, CH_WS_OP_PING, "p");
  CF(&b, 1, CH_WS_OP_CONT, "mented");
  for (int stop = 0; stop < 2; stop++)
    for (int mode = 0; mode < 12; mode++) {
      rec_t *rc = calloc(1, sizeof(*rc));
      result_t res;
      rc->stop_at = stop;
      rc->stop_rc = -1000;
      rc->dispose = 1;
      run(&server_cfg, (const uint8_t *)b.base, b.len, mode, rc, &res);
      assert_int_equal(res.rc, -1000);
      assert_int_equal(rc->n, stop + 1);
      if (stop == 1) assert_memory_equal(rc->ev[1].data, "fragmented", 10);
      rec_free(rc);
      free(rc);
    }
  ch_buf_dispose(&b);
}

static void test_null_callbacks(void **state) {
  (void)state;
  ch_buf_t b = CH_BUF_INIT;
  CF(&b, 0, CH_WS_OP_TEXT, "a");
  CF(&b, 1, CH_WS_OP_PING, "p");
  CF(&b, 1, CH_WS_OP_CONT, "b");
  CF(&b, 1, CH_WS_OP_CLOSE, "\x03\xe8");
  ch_ws_reader_t r;
  ch_ws_reader_cb_t none = {NULL, NULL};
  ch_ws_reader_init(&r, &server_cfg, &none, NULL);
  assert_int_equal(ch_ws_reader_feed(&r, (uint8_t *)b.base, b.len), 0);
  assert_true(ch_ws_reader_closed(&r));
  ch_ws_reader_dispose(&r);
  ch_buf_dispose(&b);
}

static int zc_ok;
static const uint8_t *zc_lo, *zc_hi;
static int zc_msg(void *ud, int op, int comp, const uint8_t *d, size_t n) {
  (void)ud, (void)op, (void)comp;
  zc_ok = d >= zc_lo && d + n <= zc_hi && memcmp(d, "zero-copy", 9) == 0;
  return 0;
}

static void test_zero_copy_and_memory(void **state) {
  (void)state;
  /* size budget: fits the per-connection budget */
  assert_true(sizeof(ch_ws_reader_t) < 96);

  ch_buf_t b = CH_BUF_INIT;
  CF(&b, 1, CH_WS_OP_TEXT, "zero-copy");
  ch_ws_reader_t r;
  ch_ws_reader_cb_t cb = {zc_msg, NULL};
  ch_ws_reader_init(&r, &server_cfg, &cb, NULL);
  zc_lo = (const uint8_t *)b.base, zc_hi = zc_lo + b.len;
  zc_ok = 0;
  assert_int_equal(ch_ws_reader_feed(&r, (uint8_t *)b.base, b.len), 0);
  assert_true(zc_ok);
  /* unmasked in place in the caller's buffer */
  assert_memory_equal(b.base + 6, "zero-copy", 9);
  assert_null(r._msg);
  ch_buf_dispose(&b);

  /* a message split across feeds is buffered, then freed once delivered */
  ch_buf_init(&b);
  CF(&b, 1, CH_WS_OP_BINARY, "split across feeds");
  CF(&b, 1, CH_WS_OP_PING, "ping split");
  rec_t *rc = calloc(1, sizeof(*rc));
  rc->stop_at = -1;
  ch_ws_reader_init(&r, &server_cfg, &cbs, rc);
  assert_int_equal(ch_ws_reader_feed(&r, (uint8_t *)b.base, 10), 0);
  assert_non_null(r._msg);
  assert_int_equal(ch_ws_reader_feed(&r, (uint8_t *)b.base + 10, 20), 0);
  assert_null(r._msg); /* idle again: no heap */
  assert_int_equal(ch_ws_reader_feed(&r, (uint8_t *)b.base + 30, 5), 0);
  assert_non_null(r._msg); /* parked control bytes */
  assert_int_equal(ch_ws_reader_feed(&r, (uint8_t *)b.base + 35, b.len - 35), 0);
  assert_null(r._msg);
  assert_int_equal(rc->n, 2);
  assert_memory_equal(rc->ev[1].data, "ping split", 10);
  /* a header split across feeds holds no heap either */
  ch_buf_dispose(&b);
  CF(&b, 1, CH_WS_OP_TEXT, "x");
  assert_int_equal(ch_ws_reader_feed(&r, (uint8_t *)b.base, 3), 0);
  assert_null(r._msg);
  assert_int_equal(ch_ws_reader_feed(&r, NULL, 0), 0);
  assert_int_equal(ch_ws_reader_feed(&r, (uint8_t *)b.base + 3, b.len - 3), 0);
  assert_int_equal(rc->n, 3);
  assert_null(r._msg);
  /* a close frame inside an unfinished message frees the message at once */
  CF(&b, 0, CH_WS_OP_TEXT, "unfinished");
  CF(&b, 1, CH_WS_OP_CLOSE, "");
  assert_int_equal(ch_ws_reader_feed(&r, (uint8_t *)b.base + 7, 16), 0);
  assert_non_null(r._msg);
  assert_int_equal(ch_ws_reader_feed(&r, (uint8_t *)b.base + 23, b.len - 23), 0);
  assert_true(ch_ws_reader_closed(&r));
  assert_null(r._msg);
  assert_int_equal(rc->n, 4);
  ch_ws_reader_dispose(&r);
  ch_ws_reader_init(&r, &server_cfg, &cbs, rc);
  b.len = 7;
  /* dispose with a message in progress frees it */
  CF(&b, 0, CH_WS_OP_TEXT, "pending");
  assert_int_equal(ch_ws_reader_feed(&r, (uint8_t *)b.base + 7, b.len - 7), 0);
  assert_non_null(r._msg);
  ch_ws_reader_dispose(&r);
  assert_null(r._msg);
  rec_free(rc);
  free(rc);
  ch_buf_dispose(&b);
}

/* ---- randomised valid conversations ------------------------------------ */

static void test_random_conversations(void **state) {
  (void)state;
  for (int conv = 0; conv < 60; conv++) {
    ch_ws_reader_cfg_t cfg = {(int)(rng() & 1), (int)(rng() & 1), 0, 0};
    ch_buf_t b = CH_BUF_INIT;
    want_t *want = calloc(MAXEV, sizeof(*want));
    char **owned = calloc(MAXEV, sizeof(char *));
    int *single = calloc(MAXEV, sizeof(int)); /* event came from one frame */
    int nw = 0;
    while (nw < 40) {
      int binary = rng() & 1, comp = cfg.allow_rsv1 && (rng() & 1);
      size_t len = rng() % 3 == 0 ? rng() % 3000 : rng() % 40;
      char *pl = malloc(len + 4);
      for (size_t i = 0; i < len;) { /* valid UTF-8 or random bytes */
        if (!binary && i + 2 <= len && (rng() & 3) == 0) {
          memcpy(pl + i, "\xc3\xa9", 2), i += 2;
        } else {
          pl[i] = binary ? (char)rng() : (char)('a' + rng() % 26), i++;
        }
      }
      int nfrag = 1 + (int)(rng() % 4);
      size_t off = 0;
      for (int f = 0; f < nfrag; f++) {
        size_t k = f == nfrag - 1 ? len - off : (size_t)(rng() % (len - off + 1));
        int op = f ? CH_WS_OP_CONT : binary ? CH_WS_OP_BINARY : CH_WS_OP_TEXT;
        put(&b, f == nfrag - 1, (f == 0 && comp) ? CH_WS_RSV1 : 0, op, pl + off, k, !cfg.is_client);
        off += k;
        if (f == nfrag - 1) {
          want[nw] = (want_t){'M', binary ? CH_WS_OP_BINARY : CH_WS_OP_TEXT, comp, pl, len};
          single[nw] = nfrag == 1 || k == len; /* all bytes in the last fragment */
          owned[nw++] = pl;
        }
        if (rng() % 3 == 0) { /* interleave a control frame */
          size_t cl = rng() % 126;
          char *cp = malloc(cl + 1);
          for (size_t i = 0; i < cl; i++) cp[i] = (char)rng();
          int cop = (rng() & 1) ? CH_WS_OP_PING : CH_WS_OP_PONG;
          put(&b, 1, 0, cop, cp, cl, !cfg.is_client);
          want[nw] = (want_t){'C', cop, 0, cp, cl};
          single[nw] = 1;
          owned[nw++] = cp;
        }
      }
    }
    run_all_ex(&cfg, &b, want, nw, 0, 0, NULL, 0);

    /* whole mode: zero-copy exactly when all of a message's bytes came in
     * one frame; assembled ones point into the reader's buffer */
    rec_t *rc = calloc(1, sizeof(*rc));
    result_t res;
    rc->stop_at = -1;
    run(&cfg, (const uint8_t *)b.base, b.len, MODE_WHOLE, rc, &res);
    assert_int_equal(rc->n, nw);
    for (int i = 0; i < rc->n; i++)
      if (rc->ev[i].len) assert_int_equal(rc->ev[i].zc, single[i]);
    rec_free(rc);
    free(rc);
    for (int i = 0; i < nw; i++) free(owned[i]);
    free(owned);
    free(single);
    free(want);
    ch_buf_dispose(&b);
  }
}

/* In whole mode, unfragmented messages and all control frames are zero-copy. */
static void test_zero_copy_whole_mode(void **state) {
  (void)state;
  ch_buf_t b = CH_BUF_INIT;
  CF(&b, 1, CH_WS_OP_TEXT, "alpha");
  CF(&b, 1, CH_WS_OP_PING, "ping");
  CF(&b, 1, CH_WS_OP_BINARY, "beta");
  CF(&b, 0, CH_WS_OP_TEXT, "ga");
  CF(&b, 1, CH_WS_OP_CONT, "mma");
  CF(&b, 0, CH_WS_OP_TEXT, "");
  CF(&b, 1, CH_WS_OP_CONT, "delta"); /* earlier fragments empty: still zero-copy */
  rec_t *rc = calloc(1, sizeof(*rc));
  result_t res;
  rc->stop_at = -1;
  run(&server_cfg, (const uint8_t *)b.base, b.len, MODE_WHOLE, rc, &res);
  assert_int_equal(res.rc, 0);
  assert_int_equal(rc->n, 5);
  assert_true(rc->ev[0].zc);
  assert_true(rc->ev[1].zc);
  assert_true(rc->ev[2].zc);
  assert_false(rc->ev[3].zc); /* assembled from two fragments */
  assert_true(rc->ev[4].zc);
  assert_memory_equal(rc->ev[3].data, "gamma", 5);
  assert_memory_equal(rc->ev[4].data, "delta", 5);
  rec_free(rc);
  free(rc);
  ch_buf_dispose(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_single_messages),
      cmocka_unit_test(test_rfc_examples),
      cmocka_unit_test(test_lengths_16_64),
      cmocka_unit_test(test_fragmented),
      cmocka_unit_test(test_control_interleaved),
      cmocka_unit_test(test_close_then_ignore),
      cmocka_unit_test(test_close_codes),
      cmocka_unit_test(test_close_payload_errors),
      cmocka_unit_test(test_mask_rules),
      cmocka_unit_test(test_rsv_rules),
      cmocka_unit_test(test_reserved_opcodes),
      cmocka_unit_test(test_control_rules),
      cmocka_unit_test(test_fragment_rules),
      cmocka_unit_test(test_utf8_rules),
      cmocka_unit_test(test_utf8_fail_fast),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_length_encoding_rules),
      cmocka_unit_test(test_callback_stops),
      cmocka_unit_test(test_null_callbacks),
      cmocka_unit_test(test_zero_copy_and_memory),
      cmocka_unit_test(test_random_conversations),
      cmocka_unit_test(test_zero_copy_whole_mode),
  };
  return cmocka_run_group_tests(tests, guard_setup, guard_teardown);
}
