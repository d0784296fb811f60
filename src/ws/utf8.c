/*
 * utf8.c — fail-fast UTF-8 DFA (see utf8.h).
 *
 * Each byte maps to one of 12 classes; the state times 12 plus the class
 * indexes the transition table, so states are stored pre-multiplied.
 *
 *   class  bytes          class  bytes
 *     0    00..7F           6    E0
 *     1    80..8F           7    E1..EC, EE..EF
 *     2    90..9F           8    ED
 *     3    A0..BF           9    F0
 *     4    C0 C1 F5..FF    10    F1..F3
 *     5    C2..DF          11    F4
 *
 *   state  meaning                            accepts next
 *   ACC    on a boundary                      any valid lead / ASCII
 *   REJ    dead (sticky)                      nothing
 *   T1/2/3 1/2/3 continuation bytes left      80..BF
 *   E0     after E0 (no overlong)             A0..BF then 1 more
 *   ED     after ED (no surrogates)           80..9F then 1 more
 *   F0     after F0 (no overlong)             90..BF then 2 more
 *   F4     after F4 (<= U+10FFFF)             80..8F then 2 more
 *
 * Every rejection is a transition to REJ on the very byte that rules the
 * input out, which is what makes the validator fail-fast.
 */
#include "ws/utf8.h"

#include <string.h>

#include "core/err.h"

enum { NCLS = 12 };
enum {
  ACC = 0 * NCLS,
  REJ = 1 * NCLS,
  T1 = 2 * NCLS,
  T2 = 3 * NCLS,
  T3 = 4 * NCLS,
  SE0 = 5 * NCLS,
  SED = 6 * NCLS,
  SF0 = 7 * NCLS,
  SF4 = 8 * NCLS,
};

static const uint8_t ch__utf8_class[256] = {
    /* 00..7F: ASCII */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 80..8F, 90..9F */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    /* A0..BF */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    /* C0..C1 invalid, C2..DF */
    4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
    /* E0, E1..EC, ED, EE..EF, F0, F1..F3, F4, F5..FF invalid */
    6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 7, 9, 10, 10, 10, 11, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
};

/* clang-format off */
static const uint8_t ch__utf8_next[9 * NCLS] = {
  /*         00-7F 80-8F 90-9F A0-BF  bad  C2-DF   E0   E1.. ED    F0  F1-F3  F4 */
  /* ACC */  ACC,  REJ,  REJ,  REJ,  REJ,  T1,   SE0,  T2,  SED,  SF0, T3,   SF4,
  /* REJ */  REJ,  REJ,  REJ,  REJ,  REJ,  REJ,  REJ,  REJ, REJ,  REJ, REJ,  REJ,
  /* T1  */  REJ,  ACC,  ACC,  ACC,  REJ,  REJ,  REJ,  REJ, REJ,  REJ, REJ,  REJ,
  /* T2  */  REJ,  T1,   T1,   T1,   REJ,  REJ,  REJ,  REJ, REJ,  REJ, REJ,  REJ,
  /* T3  */  REJ,  T2,   T2,   T2,   REJ,  REJ,  REJ,  REJ, REJ,  REJ, REJ,  REJ,
  /* E0  */  REJ,  REJ,  REJ,  T1,   REJ,  REJ,  REJ,  REJ, REJ,  REJ, REJ,  REJ,
  /* ED  */  REJ,  T1,   T1,   REJ,  REJ,  REJ,  REJ,  REJ, REJ,  REJ, REJ,  REJ,
  /* F0  */  REJ,  REJ,  T2,   T2,   REJ,  REJ,  REJ,  REJ, REJ,  REJ, REJ,  REJ,
  /* F4  */  REJ,  T2,   REJ,  REJ,  REJ,  REJ,  REJ,  REJ, REJ,  REJ, REJ,  REJ,
};
/* clang-format on */

#define CH__HIGH_BITS 0x8080808080808080ull

void ch_utf8_init(ch_utf8_t *u) { u->_state = ACC; }

int ch_utf8_feed(ch_utf8_t *u, const uint8_t *p, size_t n) {
  uint32_t s = u->_state;
  size_t i = 0;

  if (s == REJ) return CH_EUTF8;
  while (i < n) {
    if (s == ACC && p[i] < 0x80) {
      /* Fast path: skip ASCII, whole words at a time, between code points. */
      i++;
      while (n - i >= 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w & CH__HIGH_BITS) break;
        i += 8;
      }
      while (i < n && p[i] < 0x80) i++;
      continue;
    }
    s = ch__utf8_next[s + ch__utf8_class[p[i]]];
    if (s == REJ) {
      u->_state = REJ;
      return CH_EUTF8;
    }
    i++;
  }
  u->_state = s;
  return 0;
}

int ch_utf8_complete(const ch_utf8_t *u) { return u->_state == ACC; }

int ch_utf8_valid(const uint8_t *p, size_t n) {
  ch_utf8_t u;
  ch_utf8_init(&u);
  return ch_utf8_feed(&u, p, n) == 0 && ch_utf8_complete(&u);
}
