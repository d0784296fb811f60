/*
 * test_utf8.c — the fail-fast UTF-8 DFA (ws/utf8.h).
 *
 * Three kinds of evidence:
 *   1. Autobahn-style vectors (its case 6 families: valid boundaries,
 *      overlongs, surrogates, > U+10FFFF, truncated, stray continuations,
 *      impossible bytes) each with the index of the first byte that must
 *      fail, fed whole, byte by byte and in random splits.
 *   2. An independent reference (range arithmetic over the code points a
 *      prefix can still reach) compared exhaustively with the DFA on every
 *      1-, 2- and 3-byte input and on a large slice of 4-byte inputs, both
 *      on the verdict and on the exact failing byte.
 *   3. The 8-byte ASCII fast path: an invalid byte planted at every
 *      position and alignment of long ASCII runs is still caught.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "ws/utf8.h"

/* ---- reference -------------------------------------------------------- */

/* Does [lo, hi] contain a scalar value that needs exactly L bytes? */
static int ref_range_ok(uint32_t lo, uint32_t hi, int L) {
  uint32_t min = L == 2 ? 0x80 : L == 3 ? 0x800 : 0x10000;
  uint32_t max = L == 2 ? 0x7FF : L == 3 ? 0xFFFF : 0x10FFFF;
  if (lo < min) lo = min;
  if (hi > max) hi = max;
  if (lo > hi) return 0;
  /* Anything left outside the surrogate block? */
  return lo < 0xD800 || hi > 0xDFFF;
}

/* Index of the first byte after which p can no longer be completed into
 * valid UTF-8, or n if p is a valid prefix. *complete: on a boundary. */
static size_t ref_first_bad(const uint8_t *p, size_t n, int *complete) {
  size_t i = 0;
  *complete = 1;
  while (i < n) {
    uint8_t b = p[i];
    int L;
    uint32_t cp;
    if (b < 0x80) {
      i++;
      continue;
    }
    if ((b & 0xE0) == 0xC0) L = 2, cp = b & 0x1F;
    else if ((b & 0xF0) == 0xE0) L = 3, cp = b & 0x0F;
    else if ((b & 0xF8) == 0xF0) L = 4, cp = b & 0x07;
    else return i;
    for (int k = 1; k <= L; k++) {
      uint32_t shift, lo, hi;
      if (k > 1) {
        if (i >= n) {
          *complete = 0;
          return n;
        }
        b = p[i];
        if ((b & 0xC0) != 0x80) return i;
        cp = (cp << 6) | (b & 0x3F);
      }
      shift = 6u * (uint32_t)(L - k);
      lo = cp << shift;
      hi = lo | ((1u << shift) - 1);
      if (!ref_range_ok(lo, hi, L)) return i;
      i++;
    }
  }
  return n;
}

/* First failing index by feeding one byte at a time (n if none). */
static size_t dfa_first_bad(const uint8_t *p, size_t n, int *complete) {
  ch_utf8_t u;
  ch_utf8_init(&u);
  for (size_t i = 0; i < n; i++) {
    if (ch_utf8_feed(&u, p + i, 1) != 0) {
      *complete = 0;
      return i;
    }
  }
  *complete = ch_utf8_complete(&u);
  return n;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* Feed in random splits; returns 1 if accepted & complete. Checks that the
 * failure (if any) is reported by the piece holding byte `bad`. */
static int feed_split(const uint8_t *p, size_t n, size_t bad) {
  ch_utf8_t u;
  size_t i = 0;
  ch_utf8_init(&u);
  while (i < n) {
    size_t k = 1 + rng() % 11;
    if (k > n - i) k = n - i;
    int rc = ch_utf8_feed(&u, p + i, k);
    if (rc != 0) {
      assert_int_equal(rc, CH_EUTF8);
      assert_true(bad >= i && bad < i + k);
      assert_int_equal(ch_utf8_feed(&u, (const uint8_t *)"a", 1), CH_EUTF8); /* sticky */
      assert_false(ch_utf8_complete(&u));
      return 0;
    }
    i += k;
  }
  assert_int_equal(bad, n);
  return ch_utf8_complete(&u);
}

/* ---- 1. vectors -------------------------------------------------------- */

typedef struct {
  const char *name;
  const char *s;
  size_t n;
  int valid;   /* whole buffer valid */
  long fail;   /* first failing byte, or -1 (valid or merely truncated) */
} vec_t;

#define V(name, lit, valid, fail) {name, lit, sizeof(lit) - 1, valid, fail}

static const vec_t vectors[] = {
    V("empty", "", 1, -1),
    V("ascii", "Hello-7bit", 1, -1),
    V("kosme", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 1, -1),
    V("nul", "\x00", 1, -1),
    /* boundaries: first and last of each length */
    V("U+0080", "\xc2\x80", 1, -1),
    V("U+07FF", "\xdf\xbf", 1, -1),
    V("U+0800", "\xe0\xa0\x80", 1, -1),
    V("U+FFFF", "\xef\xbf\xbf", 1, -1),
    V("U+10000", "\xf0\x90\x80\x80", 1, -1),
    V("U+10FFFF (4-byte max)", "\xf4\x8f\xbf\xbf", 1, -1),
    V("U+D7FF", "\xed\x9f\xbf", 1, -1),
    V("U+E000", "\xee\x80\x80", 1, -1),
    V("U+FFFD", "\xef\xbf\xbd", 1, -1),
    V("U+FFFE noncharacter", "\xef\xbf\xbe", 1, -1),
    V("U+FDD0 noncharacter", "\xef\xb7\x90", 1, -1),
    V("U+10FFFE noncharacter", "\xf4\x8f\xbf\xbe", 1, -1),
    /* beyond U+10FFFF */
    V("U+110000", "\xf4\x90\x80\x80", 0, 1),
    V("U+13FFFF", "\xf4\xbf\xbf\xbf", 0, 1),
    V("F5 lead", "\xf5\x80\x80\x80", 0, 0),
    V("5-byte U+200000", "\xf8\x88\x80\x80\x80", 0, 0),
    V("6-byte", "\xfc\x84\x80\x80\x80\x80", 0, 0),
    V("FE", "\xfe", 0, 0),
    V("FF", "\xff", 0, 0),
    V("FE FE FF FF", "\xfe\xfe\xff\xff", 0, 0),
    /* stray continuation bytes */
    V("lone 80", "\x80", 0, 0),
    V("lone BF", "\xbf", 0, 0),
    V("ascii then 80", "ab\x80", 0, 2),
    V("2-byte + extra cont", "\xc2\x80\x80", 0, 2),
    /* lonely start characters followed by space */
    V("C2 space", "\xc2 ", 0, 1),
    V("E1 space", "\xe1 ", 0, 1),
    V("F1 space", "\xf1 ", 0, 1),
    V("E1 80 space", "\xe1\x80 ", 0, 2),
    /* truncated sequences (valid prefixes, incomplete) */
    V("truncated 2", "\xc2", 0, -1),
    V("truncated 3/1", "\xe2", 0, -1),
    V("truncated 3/2", "\xe2\x82", 0, -1),
    V("truncated 4/3", "\xf0\x9f\x98", 0, -1),
    V("kosme + truncated", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\x9f", 0, -1),
    V("two truncated in a row", "\xe2\x82\xe2\x82", 0, 2),
    /* overlongs */
    V("overlong / 2", "\xc0\xaf", 0, 0),
    V("overlong / 3", "\xe0\x80\xaf", 0, 1),
    V("overlong / 4", "\xf0\x80\x80\xaf", 0, 1),
    V("overlong / 5", "\xf8\x80\x80\x80\xaf", 0, 0),
    V("max overlong 2 (C1 BF)", "\xc1\xbf", 0, 0),
    V("max overlong 3 (E0 9F BF)", "\xe0\x9f\xbf", 0, 1),
    V("max overlong 4 (F0 8F BF BF)", "\xf0\x8f\xbf\xbf", 0, 1),
    V("overlong NUL 2", "\xc0\x80", 0, 0),
    V("overlong NUL 3", "\xe0\x80\x80", 0, 1),
    V("overlong NUL 4", "\xf0\x80\x80\x80", 0, 1),
    /* surrogates */
    V("U+D800", "\xed\xa0\x80", 0, 1),
    V("U+DB7F", "\xed\xad\xbf", 0, 1),
    V("U+DC00", "\xed\xb0\x80", 0, 1),
    V("U+DFFF", "\xed\xbf\xbf", 0, 1),
    V("pair D800 DC00", "\xed\xa0\x80\xed\xb0\x80", 0, 1),
    V("pair DBFF DFFF", "\xed\xaf\xbf\xed\xbf\xbf", 0, 1),
    V("valid then surrogate", "ab\xc2\x80\xed\xa0\x80", 0, 5),
    /* Autobahn 6.4: fail-fast in the middle of a long text */
    V("6.4.1", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64", 0,
      12),
    V("6.4.3", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80", 0, 12),
};

static void test_vectors(void **state) {
  (void)state;
  for (size_t v = 0; v < sizeof(vectors) / sizeof(vectors[0]); v++) {
    const vec_t *t = &vectors[v];
    const uint8_t *p = (const uint8_t *)t->s;
    size_t bad = t->fail < 0 ? t->n : (size_t)t->fail;
    int complete, ref_complete;
    ch_utf8_t u;

    /* whole buffer */
    if (ch_utf8_valid(p, t->n) != t->valid) fail_msg("vector '%s': valid != %d", t->name, t->valid);
    ch_utf8_init(&u);
    assert_int_equal(ch_utf8_feed(&u, p, t->n), t->fail < 0 ? 0 : CH_EUTF8);
    assert_int_equal(ch_utf8_complete(&u), t->valid);
    /* byte by byte: fails at exactly the named byte */
    if (dfa_first_bad(p, t->n, &complete) != bad) fail_msg("vector '%s': wrong fail index", t->name);
    assert_int_equal(complete, t->valid);
    /* the reference agrees with the table (guards the table itself) */
    if (ref_first_bad(p, t->n, &ref_complete) != bad) fail_msg("vector '%s': ref disagrees", t->name);
    assert_int_equal(t->fail < 0 && ref_complete, t->valid);
    /* random splits */
    for (int s = 0; s < 20; s++) assert_int_equal(feed_split(p, t->n, bad), t->valid);
  }
}

/* ---- 2. exhaustive / reference comparison ------------------------------ */

static void check_one(const uint8_t *p, size_t n) {
  int c1, c2;
  size_t a = dfa_first_bad(p, n, &c1);
  size_t b = ref_first_bad(p, n, &c2);
  if (a != b || (a == n && c1 != c2))
    fail_msg("mismatch on %zu bytes %02x %02x %02x %02x: dfa %zu/%d ref %zu/%d", n, p[0],
             n > 1 ? p[1] : 0, n > 2 ? p[2] : 0, n > 3 ? p[3] : 0, a, c1, b, c2);
  assert_int_equal(ch_utf8_valid(p, n), a == n && c1);
}

static void test_exhaustive_1_2_3(void **state) {
  (void)state;
  uint8_t b[3];
  for (int x = 0; x < 256; x++) {
    b[0] = (uint8_t)x;
    check_one(b, 1);
    for (int y = 0; y < 256; y++) {
      b[1] = (uint8_t)y;
      check_one(b, 2);
      for (int z = 0; z < 256; z++) {
        b[2] = (uint8_t)z;
        /* whole-buffer verdict only here (16M inputs); index checked below */
        int c;
        size_t r = ref_first_bad(b, 3, &c);
        assert_int_equal(ch_utf8_valid(b, 3), r == 3 && c);
      }
    }
  }
  /* exact fail index on all 3-byte inputs whose first byte is a lead */
  for (int x = 0xC0; x < 256; x++)
    for (int y = 0; y < 256; y++)
      for (int z = 0x70; z < 0xC8; z++) {
        b[0] = (uint8_t)x, b[1] = (uint8_t)y, b[2] = (uint8_t)z;
        check_one(b, 3);
      }
}

static void test_four_byte(void **state) {
  (void)state;
  /* every lead F0..F7 x every 2nd byte x interesting 3rd/4th bytes */
  static const uint8_t edge[] = {0x00, 0x41, 0x7F, 0x80, 0x81, 0x8F, 0x90, 0x9F,
                                 0xA0, 0xBF, 0xC0, 0xC2, 0xE0, 0xED, 0xF4, 0xFF};
  uint8_t b[4];
  for (int x = 0xE0; x < 0xF8; x++)
    for (int y = 0; y < 256; y++)
      for (size_t z = 0; z < sizeof edge; z++)
        for (size_t w = 0; w < sizeof edge; w++) {
          b[0] = (uint8_t)x, b[1] = (uint8_t)y, b[2] = edge[z], b[3] = edge[w];
          check_one(b, 4);
        }
  /* random 1..12-byte strings biased towards high bytes */
  for (int i = 0; i < 300000; i++) {
    uint8_t s[12];
    size_t n = 1 + rng() % 12;
    for (size_t k = 0; k < n; k++) {
      uint64_t r = rng();
      s[k] = (r & 3) == 0 ? (uint8_t)(r >> 8) % 0x80 : (uint8_t)(0x80 + (r >> 8) % 0x80);
    }
    check_one(s, n);
  }
}

/* Every scalar value, encoded by hand, is accepted; every surrogate rejected. */
static size_t encode(uint32_t cp, uint8_t *o) {
  if (cp < 0x80) return o[0] = (uint8_t)cp, 1;
  if (cp < 0x800) return o[0] = (uint8_t)(0xC0 | cp >> 6), o[1] = (uint8_t)(0x80 | (cp & 0x3F)), 2;
  if (cp < 0x10000) {
    o[0] = (uint8_t)(0xE0 | cp >> 12), o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (uint8_t)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (uint8_t)(0xF0 | cp >> 18), o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F)), o[3] = (uint8_t)(0x80 | (cp & 0x3F));
  return 4;
}

static void test_all_code_points(void **state) {
  (void)state;
  uint8_t o[4];
  for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
    size_t n = encode(cp, o);
    int surrogate = cp >= 0xD800 && cp <= 0xDFFF;
    if (ch_utf8_valid(o, n) != !surrogate) fail_msg("U+%04X wrong verdict", cp);
  }
}

/* ---- 3. the ASCII fast path -------------------------------------------- */

static void test_ascii_fast_path(void **state) {
  (void)state;
  uint8_t buf[256];
  static const uint8_t bad_bytes[] = {0x80, 0xBF, 0xC0, 0xFF, 0xF5};
  for (size_t align = 0; align < 8; align++)
    for (size_t len = 1; len <= 80; len++)
      for (size_t pos = 0; pos < len; pos++)
        for (size_t k = 0; k < sizeof bad_bytes; k++) {
          uint8_t *p = buf + align;
          memset(p, 'a' + (int)(pos % 26), len);
          p[pos] = bad_bytes[k];
          int complete;
          assert_int_equal(dfa_first_bad(p, len, &complete), pos);
          assert_false(ch_utf8_valid(p, len));
          ch_utf8_t u;
          ch_utf8_init(&u);
          assert_int_equal(ch_utf8_feed(&u, p, len), CH_EUTF8);
        }
  /* pure ASCII of every length and alignment is valid */
  for (size_t align = 0; align < 8; align++)
    for (size_t len = 0; len <= 100; len++) {
      memset(buf + align, 0x7F, len);
      assert_true(ch_utf8_valid(buf + align, len));
    }
  /* a multi-byte character straddling every 8-byte boundary */
  for (size_t pos = 0; pos < 40; pos++) {
    memset(buf, 'x', 64);
    memcpy(buf + pos, "\xf0\x9f\x98\x80", 4);
    assert_true(ch_utf8_valid(buf, 64));
    memset(buf, 'x', 64);
    memcpy(buf + pos, "\xf0\x9f\x98", 3);
    int complete;
    assert_int_equal(dfa_first_bad(buf, 64, &complete), pos + 3); /* 'x' ends it */
  }
}

static void test_incremental_state(void **state) {
  (void)state;
  ch_utf8_t u;
  ch_utf8_init(&u);
  assert_true(ch_utf8_complete(&u));
  assert_int_equal(ch_utf8_feed(&u, NULL, 0), 0);
  assert_int_equal(ch_utf8_feed(&u, (const uint8_t *)"\xf0", 1), 0);
  assert_false(ch_utf8_complete(&u));
  assert_int_equal(ch_utf8_feed(&u, (const uint8_t *)"\x9f\x98", 2), 0);
  assert_false(ch_utf8_complete(&u));
  assert_int_equal(ch_utf8_feed(&u, (const uint8_t *)"\x80", 1), 0);
  assert_true(ch_utf8_complete(&u));
  assert_int_equal(ch_utf8_feed(&u, (const uint8_t *)"\xed\xa0", 2), CH_EUTF8);
  assert_false(ch_utf8_complete(&u));
  assert_int_equal(ch_utf8_feed(&u, (const uint8_t *)"ok", 2), CH_EUTF8);
  ch_utf8_init(&u);
  assert_true(ch_utf8_complete(&u));
  assert_int_equal(ch_utf8_feed(&u, (const uint8_t *)"ok", 2), 0);
  assert_true(ch_utf8_valid(NULL, 0));
}

/* Random valid text split randomly stays valid. */
static void test_random_valid_text(void **state) {
  (void)state;
  uint8_t buf[4096];
  for (int it = 0; it < 500; it++) {
    size_t n = 0;
    while (n < sizeof(buf) - 4) {
      uint32_t cp;
      switch (rng() % 4) {
      case 0: cp = (uint32_t)(rng() % 0x80); break;
      case 1: cp = 0x80 + (uint32_t)(rng() % (0x800 - 0x80)); break;
      case 2: cp = 0x800 + (uint32_t)(rng() % (0x10000 - 0x800)); break;
      default: cp = 0x10000 + (uint32_t)(rng() % 0x100000); break;
      }
      if (cp >= 0xD800 && cp <= 0xDFFF) continue;
      n += encode(cp, buf + n);
      if (rng() % 64 == 0) break;
    }
    assert_true(ch_utf8_valid(buf, n));
    assert_int_equal(feed_split(buf, n, n), 1);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_vectors),          cmocka_unit_test(test_exhaustive_1_2_3),
      cmocka_unit_test(test_four_byte),        cmocka_unit_test(test_all_code_points),
      cmocka_unit_test(test_ascii_fast_path),  cmocka_unit_test(test_incremental_state),
      cmocka_unit_test(test_random_valid_text),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
