/*
 * test_frame.c — frame codec (ws/frame.h): header encoding byte for byte,
 * the resumable header parser (whole / byte by byte / random splits, behind
 * a guard page), its length-encoding rules, masking against a byte-wise
 * reference on every offset/length/alignment, whole-frame and close-frame
 * encoders, close-code validity and the fault table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/err.h"
#include "ws/frame.h"
#include "ws/utf8.h"

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* A region whose last byte is followed by a PROT_NONE page: any read past
 * the bytes handed to the parser faults. */
static uint8_t *guard_base;
static size_t guard_size;
static int guard_setup(void **state) {
  (void)state;
  long pg = sysconf(_SC_PAGESIZE);
  guard_size = 4 * (size_t)pg;
  guard_base = mmap(NULL, guard_size + (size_t)pg, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(guard_base != MAP_FAILED);
  assert_int_equal(mprotect(guard_base + guard_size, (size_t)pg, PROT_NONE), 0);
  return 0;
}
static int guard_teardown(void **state) {
  (void)state;
  munmap(guard_base, guard_size + (size_t)sysconf(_SC_PAGESIZE));
  return 0;
}
static const uint8_t *guarded(const uint8_t *p, size_t n) {
  uint8_t *d = guard_base + guard_size - n;
  if (n) memcpy(d, p, n);
  return d;
}

/* ---- header encoding --------------------------------------------------- */

static void expect_bytes(const uint8_t *got, size_t gn, const char *want, size_t wn) {
  assert_int_equal(gn, wn);
  assert_memory_equal(got, want, wn);
}

static void test_header_encoding(void **state) {
  (void)state;
  uint8_t h[CH_WS_MAX_HEADER];
  static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
  size_t n;

  n = ch_ws_frame_header(h, 1, 0, CH_WS_OP_TEXT, 0, NULL);
  expect_bytes(h, n, "\x81\x00", 2);
  n = ch_ws_frame_header(h, 1, 0, CH_WS_OP_TEXT, 5, NULL);
  expect_bytes(h, n, "\x81\x05", 2);
  n = ch_ws_frame_header(h, 0, 0, CH_WS_OP_BINARY, 125, NULL);
  expect_bytes(h, n, "\x02\x7d", 2);
  n = ch_ws_frame_header(h, 1, 1, CH_WS_OP_TEXT, 126, NULL);
  expect_bytes(h, n, "\xc1\x7e\x00\x7e", 4);
  n = ch_ws_frame_header(h, 1, 0, CH_WS_OP_BINARY, 65535, NULL);
  expect_bytes(h, n, "\x82\x7e\xff\xff", 4);
  n = ch_ws_frame_header(h, 1, 0, CH_WS_OP_BINARY, 65536, NULL);
  expect_bytes(h, n, "\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10);
  n = ch_ws_frame_header(h, 1, 0, CH_WS_OP_BINARY, 0x0102030405060708ull, NULL);
  expect_bytes(h, n, "\x82\x7f\x01\x02\x03\x04\x05\x06\x07\x08", 10);
  n = ch_ws_frame_header(h, 1, 0, CH_WS_OP_BINARY, 0x7FFFFFFFFFFFFFFFull, NULL);
  expect_bytes(h, n, "\x82\x7f\x7f\xff\xff\xff\xff\xff\xff\xff", 10);
  n = ch_ws_frame_header(h, 0, 0, CH_WS_OP_CONT, 3, NULL);
  expect_bytes(h, n, "\x00\x03", 2);
  /* RFC 6455 5.7 examples: masked "Hello" header, ping */
  n = ch_ws_frame_header(h, 1, 0, CH_WS_OP_TEXT, 5, key);
  expect_bytes(h, n, "\x81\x85\x37\xfa\x21\x3d", 6);
  n = ch_ws_frame_header(h, 1, 0, CH_WS_OP_PING, 5, NULL);
  expect_bytes(h, n, "\x89\x05", 2);
  n = ch_ws_frame_header(h, 1, 0, CH_WS_OP_BINARY, 256, key);
  expect_bytes(h, n, "\x82\xfe\x01\x00\x37\xfa\x21\x3d", 8);
  n = ch_ws_frame_header(h, 1, 0, CH_WS_OP_BINARY, 65536, key);
  expect_bytes(h, n, "\x82\xff\x00\x00\x00\x00\x00\x01\x00\x00\x37\xfa\x21\x3d", 14);
}

/* The RFC 6455 5.7 masked "Hello" frame, end to end. */
static void test_rfc_example(void **state) {
  (void)state;
  uint8_t f[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
  ch_ws_frame_parser_t fp;
  ch_ws_frame_hdr_t h;
  size_t used;
  ch_ws_frame_parser_init(&fp);
  assert_int_equal(ch_ws_frame_parse(&fp, f, sizeof f, &used, &h), 0);
  assert_int_equal(used, 6);
  assert_int_equal(h.fin, 1);
  assert_int_equal(h.opcode, CH_WS_OP_TEXT);
  assert_int_equal(h.masked, 1);
  assert_int_equal(h.len, 5);
  ch_ws_mask(f + used, 5, h.mask, 0);
  assert_memory_equal(f + used, "Hello", 5);
}

/* ---- header parser ----------------------------------------------------- */

/* Parse p[0..n) in pieces of the given mode (0 whole, 1 bytes, 2 random).
 * Returns the rc of the final call; *used_total counts consumed bytes. */
static int parse_split(const uint8_t *p, size_t n, int mode, ch_ws_frame_hdr_t *h,
                       size_t *used_total) {
  ch_ws_frame_parser_t fp;
  size_t off = 0;
  ch_ws_frame_parser_init(&fp);
  for (;;) {
    size_t k = n - off, used;
    if (mode == 1 && k > 1) k = 1;
    if (mode == 2 && k > 1) k = 1 + rng() % k;
    const uint8_t *g = guarded(p + off, k);
    int rc = ch_ws_frame_parse(&fp, g, k, &used, h);
    assert_true(used <= k);
    off += used;
    *used_total = off;
    if (rc != CH_AGAIN) {
      if (rc == CH_EPROTO) {
        assert_int_not_equal(ch_ws_frame_parser_fault(&fp), CH_WS_FAULT_NONE);
        /* sticky */
        assert_int_equal(ch_ws_frame_parse(&fp, g, k, &used, h), CH_EPROTO);
        return rc | (ch_ws_frame_parser_fault(&fp) << 8);
      }
      return rc;
    }
    assert_int_equal(used, k); /* AGAIN consumes everything */
    if (off == n) return CH_AGAIN;
  }
}

static void test_parse_round_trip(void **state) {
  (void)state;
  static const uint64_t lens[] = {0,     1,     125,   126,        127,           65535,
                                  65536, 70000, 1ull << 32, 0x7FFFFFFFFFFFFFFFull};
  static const uint8_t key[4] = {1, 2, 0xfe, 0xff};
  for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
    for (int masked = 0; masked < 2; masked++)
      for (int op = 0; op < 16; op++)
        for (int bits = 0; bits < 4; bits++)
          for (int mode = 0; mode < 3; mode++) {
            uint8_t buf[CH_WS_MAX_HEADER + 3];
            size_t hn = ch_ws_frame_header(buf, bits & 1, bits >> 1, op, lens[li], masked ? key : NULL);
            /* trailing payload bytes must not be consumed */
            memcpy(buf + hn, "xyz", 3);
            ch_ws_frame_hdr_t h;
            size_t used;
            memset(&h, 0xAA, sizeof h);
            assert_int_equal(parse_split(buf, hn + 3, mode, &h, &used), 0);
            assert_int_equal(used, hn);
            assert_int_equal(h.len, lens[li]);
            assert_int_equal(h.fin, bits & 1);
            assert_int_equal(h.rsv, (bits >> 1) ? CH_WS_RSV1 : 0);
            assert_int_equal(h.opcode, op);
            assert_int_equal(h.masked, masked);
            if (masked) assert_memory_equal(h.mask, key, 4);
            /* a header cut short at any point is AGAIN, never a result */
            for (size_t cut = 0; cut < hn; cut++)
              assert_int_equal(parse_split(buf, cut, mode, &h, &used), CH_AGAIN);
          }
}

static void test_parse_rsv_bits_raw(void **state) {
  (void)state;
  for (int b0 = 0; b0 < 256; b0++) {
    uint8_t f[2] = {(uint8_t)b0, 0x00};
    ch_ws_frame_parser_t fp;
    ch_ws_frame_hdr_t h;
    size_t used;
    ch_ws_frame_parser_init(&fp);
    assert_int_equal(ch_ws_frame_parse(&fp, f, 2, &used, &h), 0);
    assert_int_equal(h.fin, b0 >> 7);
    assert_int_equal(h.rsv, (b0 >> 4) & 7);
    assert_int_equal(h.opcode, b0 & 15);
  }
}

static void test_parse_length_rules(void **state) {
  (void)state;
  /* Non-minimal 16-bit lengths: 0..125 encoded with 126. */
  for (int len = 0; len < 126; len++) {
    uint8_t f[4] = {0x82, 0x7e, 0, (uint8_t)len};
    for (int mode = 0; mode < 3; mode++) {
      ch_ws_frame_hdr_t h;
      size_t used;
      assert_int_equal(parse_split(f, 4, mode, &h, &used),
                       CH_EPROTO | (CH_WS_FAULT_LEN_NONMINIMAL << 8));
    }
  }
  /* Non-minimal 64-bit lengths: 0, 125, 126, 65535. */
  static const uint64_t bad64[] = {0, 1, 125, 126, 65535};
  for (size_t i = 0; i < 5; i++)
    for (int masked = 0; masked < 2; masked++)
      for (int mode = 0; mode < 3; mode++) {
        uint8_t f[14] = {0x82, 0x7f};
        if (masked) f[1] |= 0x80;
        for (int k = 0; k < 8; k++) f[2 + k] = (uint8_t)(bad64[i] >> (56 - 8 * k));
        ch_ws_frame_hdr_t h;
        size_t used;
        assert_int_equal(parse_split(f, masked ? 14 : 10, mode, &h, &used),
                         CH_EPROTO | (CH_WS_FAULT_LEN_NONMINIMAL << 8));
      }
  /* 64-bit length with the most significant bit set. */
  for (int mode = 0; mode < 3; mode++) {
    uint8_t f[10] = {0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0};
    ch_ws_frame_hdr_t h;
    size_t used;
    assert_int_equal(parse_split(f, 10, mode, &h, &used), CH_EPROTO | (CH_WS_FAULT_LEN_MSB << 8));
    f[2] = 0xff;
    assert_int_equal(parse_split(f, 10, mode, &h, &used), CH_EPROTO | (CH_WS_FAULT_LEN_MSB << 8));
  }
  /* Minimal boundaries accepted: 126 via 16-bit, 65536 via 64-bit. */
  {
    uint8_t f16[4] = {0x82, 0x7e, 0x00, 0x7e};
    uint8_t f64[10] = {0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0};
    ch_ws_frame_hdr_t h;
    size_t used;
    assert_int_equal(parse_split(f16, 4, 0, &h, &used), 0);
    assert_int_equal(h.len, 126);
    assert_int_equal(parse_split(f64, 10, 0, &h, &used), 0);
    assert_int_equal(h.len, 65536);
  }
}

/* Many headers back to back, parsed through one parser in random pieces. */
static void test_parse_stream(void **state) {
  (void)state;
  uint8_t stream[4096];
  uint64_t want[300];
  size_t n = 0, count = 0;
  while (count < 300) {
    uint64_t len = rng() % 4 == 0 ? rng() % 200000 : rng() % 130;
    uint8_t key[4] = {(uint8_t)rng(), (uint8_t)rng(), (uint8_t)rng(), (uint8_t)rng()};
    n += ch_ws_frame_header(stream + n, 1, 0, CH_WS_OP_BINARY, len, (rng() & 1) ? key : NULL);
    want[count++] = len;
  }
  for (int round = 0; round < 20; round++) {
    ch_ws_frame_parser_t fp;
    size_t off = 0, got = 0;
    ch_ws_frame_parser_init(&fp);
    while (off < n) {
      size_t k = 1 + rng() % 20, used;
      if (k > n - off) k = n - off;
      const uint8_t *g = guarded(stream + off, k);
      size_t pos = 0;
      while (pos < k) {
        ch_ws_frame_hdr_t h;
        int rc = ch_ws_frame_parse(&fp, g + pos, k - pos, &used, &h);
        pos += used;
        if (rc == CH_AGAIN) break;
        assert_int_equal(rc, 0);
        assert_int_equal(h.len, want[got]);
        got++;
      }
      off += k;
    }
    assert_int_equal(got, count);
  }
}

/* ---- masking ----------------------------------------------------------- */

static void ref_mask(uint8_t *d, size_t n, const uint8_t m[4], size_t off) {
  for (size_t i = 0; i < n; i++) d[i] ^= m[(off + i) % 4];
}

static void test_mask_vs_reference(void **state) {
  (void)state;
  static const uint8_t key[4] = {0xde, 0xad, 0xbe, 0xef};
  uint8_t src[600], a[640], b[640];
  for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)rng();
  static const size_t big[] = {255, 256, 257, 511, 512, 513, 600};
  for (size_t align = 0; align < 16; align++)
    for (size_t off = 0; off < 9; off++)
      for (size_t li = 0; li < 107 + 7; li++) {
        size_t len = li < 107 ? li : big[li - 107];
        memset(a, 0x55, sizeof a);
        memcpy(a + align, src, len);
        memcpy(b, a, sizeof b);
        ch_ws_mask(a + align, len, key, off);
        ref_mask(b + align, len, key, off);
        /* equal inside, untouched outside */
        assert_memory_equal(a, b, sizeof a);
      }
}

static void test_mask_pieces(void **state) {
  (void)state;
  uint8_t key[4], src[1000], whole[1000], piece[1000];
  for (int it = 0; it < 200; it++) {
    for (int k = 0; k < 4; k++) key[k] = (uint8_t)rng();
    size_t n = rng() % sizeof src;
    for (size_t i = 0; i < n; i++) src[i] = (uint8_t)rng();
    memcpy(whole, src, n);
    memcpy(piece, src, n);
    ch_ws_mask(whole, n, key, 0);
    for (size_t off = 0; off < n;) {
      size_t k = 1 + rng() % 37;
      if (k > n - off) k = n - off;
      ch_ws_mask(piece + off, k, key, off);
      off += k;
    }
    assert_memory_equal(whole, piece, n);
    ch_ws_mask(whole, n, key, 0); /* involution */
    assert_memory_equal(whole, src, n);
  }
  ch_ws_mask(NULL, 0, key, 3); /* empty is a no-op */
}

/* ---- encoders ---------------------------------------------------------- */

static void test_frame_encode(void **state) {
  (void)state;
  static const size_t lens[] = {0, 1, 125, 126, 65535, 65536, 70000};
  for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
    for (int rsv1 = 0; rsv1 < 2; rsv1++) {
      size_t len = lens[li];
      uint8_t *pl = malloc(len ? len : 1);
      for (size_t i = 0; i < len; i++) pl[i] = (uint8_t)(i * 7);
      ch_chunk_t *k = ch_ws_frame_encode(CH_WS_OP_BINARY, rsv1, len ? pl : NULL, len);
      assert_int_equal(atomic_load(&k->_refs), 1);
      ch_ws_frame_parser_t fp;
      ch_ws_frame_hdr_t h;
      size_t used;
      ch_ws_frame_parser_init(&fp);
      assert_int_equal(ch_ws_frame_parse(&fp, (const uint8_t *)k->data, k->len, &used, &h), 0);
      assert_int_equal(h.fin, 1);
      assert_int_equal(h.rsv, rsv1 ? CH_WS_RSV1 : 0);
      assert_int_equal(h.opcode, CH_WS_OP_BINARY);
      assert_int_equal(h.masked, 0);
      assert_int_equal(h.len, len);
      assert_int_equal(k->len, used + len);
      assert_int_equal(used, len < 126 ? 2 : len < 65536 ? 4 : 10);
      if (len) assert_memory_equal(k->data + used, pl, len);
      ch_chunk_unref(k);
      free(pl);
    }
  ch_chunk_t *k = ch_ws_frame_encode(CH_WS_OP_TEXT, 0, "Hello", 5);
  expect_bytes((const uint8_t *)k->data, k->len, "\x81\x05Hello", 7);
  ch_chunk_unref(k);
}

static void test_close_frame(void **state) {
  (void)state;
  ch_chunk_t *k = ch_ws_close_frame(1000, "bye");
  expect_bytes((const uint8_t *)k->data, k->len, "\x88\x05\x03\xe8" "bye", 7);
  ch_chunk_unref(k);
  k = ch_ws_close_frame(0, "ignored");
  expect_bytes((const uint8_t *)k->data, k->len, "\x88\x00", 2);
  ch_chunk_unref(k);
  k = ch_ws_close_frame(CH_WS_CLOSE_TOO_BIG, NULL);
  expect_bytes((const uint8_t *)k->data, k->len, "\x88\x02\x03\xf1", 4);
  ch_chunk_unref(k);

  /* ASCII reason: cut at exactly 123 bytes (payload 125). */
  char longr[400];
  memset(longr, 'r', 300);
  longr[300] = 0;
  k = ch_ws_close_frame(1001, longr);
  assert_int_equal(k->len, 2 + 125);
  assert_int_equal((uint8_t)k->data[1], 125);
  ch_chunk_unref(k);

  /* Multi-byte reasons: every prefix length and char width is cut on a
   * code point boundary, never exceeding 125, and losing < 1 char. */
  static const char *chars[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
  for (int c = 0; c < 3; c++)
    for (size_t pre = 0; pre < 8; pre++) {
      size_t w = strlen(chars[c]), n = pre;
      memset(longr, 'a', pre);
      while (n + w < sizeof longr - 1) memcpy(longr + n, chars[c], w), n += w;
      longr[n] = 0;
      k = ch_ws_close_frame(4000, longr);
      size_t pl = k->len - 2;
      assert_true(pl <= 125);
      assert_true(pl > 125 - w); /* dropped less than one character */
      assert_true(ch_utf8_valid((const uint8_t *)k->data + 4, pl - 2));
      assert_memory_equal(k->data + 4, longr, pl - 2);
      assert_int_equal((uint8_t)k->data[2], 4000 >> 8);
      assert_int_equal((uint8_t)k->data[3], 4000 & 0xff);
      ch_chunk_unref(k);
    }
  /* A short reason is kept whole. */
  k = ch_ws_close_frame(1000, "\xe2\x82\xac");
  expect_bytes((const uint8_t *)k->data, k->len, "\x88\x05\x03\xe8\xe2\x82\xac", 7);
  ch_chunk_unref(k);
}

static void test_close_code_valid(void **state) {
  (void)state;
  for (uint32_t c = 0; c <= 0xFFFF; c++) {
    int want = (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
    if (ch_ws_close_code_valid((uint16_t)c) != want) fail_msg("close code %u", c);
  }
  assert_false(ch_ws_close_code_valid(CH_WS_CLOSE_NO_STATUS));
  assert_false(ch_ws_close_code_valid(CH_WS_CLOSE_ABNORMAL));
  assert_false(ch_ws_close_code_valid(1004));
  assert_false(ch_ws_close_code_valid(1015));
  assert_true(ch_ws_close_code_valid(CH_WS_CLOSE_TRY_AGAIN));
  assert_true(ch_ws_close_code_valid(CH_WS_CLOSE_MANDATORY_EXT));
}

static void test_fault_table(void **state) {
  (void)state;
  for (int f = 1; f < CH_WS_FAULT__COUNT; f++) {
    uint16_t c = ch_ws_fault_close_code(f);
    int e = ch_ws_fault_err(f);
    assert_true(c == 1002 || c == 1007 || c == 1009);
    assert_int_equal(e, c == 1002 ? CH_EPROTO : c == 1007 ? CH_EUTF8 : CH_ETOOBIG);
    assert_true(strlen(ch_ws_fault_str(f)) > 5);
  }
  assert_string_equal(ch_ws_fault_str(CH_WS_FAULT_UNMASKED), "unmasked client frame");
  assert_int_equal(ch_ws_fault_close_code(CH_WS_FAULT_UTF8), 1007);
  assert_int_equal(ch_ws_fault_close_code(CH_WS_FAULT_MSG_BIG), 1009);
  assert_int_equal(ch_ws_fault_close_code(CH_WS_FAULT_NONE), 0);
  assert_int_equal(ch_ws_fault_err(CH_WS_FAULT_NONE), 0);
  assert_string_equal(ch_ws_fault_str(-1), "unknown");
  assert_string_equal(ch_ws_fault_str(CH_WS_FAULT__COUNT), "unknown");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_header_encoding),   cmocka_unit_test(test_rfc_example),
      cmocka_unit_test(test_parse_round_trip),  cmocka_unit_test(test_parse_rsv_bits_raw),
      cmocka_unit_test(test_parse_length_rules), cmocka_unit_test(test_parse_stream),
      cmocka_unit_test(test_mask_vs_reference), cmocka_unit_test(test_mask_pieces),
      cmocka_unit_test(test_frame_encode),      cmocka_unit_test(test_close_frame),
      cmocka_unit_test(test_close_code_valid),  cmocka_unit_test(test_fault_table),
  };
  return cmocka_run_group_tests(tests, guard_setup, guard_teardown);
}
