/*
 * lg_json.c — the JSON scanner of chorus-loadgen's conversation modes.
 *
 * The native protocol's documents are small objects whose members the
 * generator needs a few of ("type", "id", "seq", "message" -> "content"),
 * at up to hundreds of thousands of documents a second, and once in a while
 * one large one (a `sync` carrying 10,000 events). A tree parser would
 * allocate per document; this scanner walks the text once and returns spans
 * into it:
 *
 *   {"type":"ack","id":"00000000000000a1","seq":42,"message":{...}}
 *            ^^^       ^^^^^^^^^^^^^^^^       ^^           ^^^^^
 *            's'       's'                    'n'          'o' (brackets included)
 *
 * Nested objects and arrays are skipped by bracket counting that knows
 * strings and escapes; their contents are examined only when a caller asks
 * (lg_json_object on the 'o' span, lg_json_array_next on an 'a' span).
 * It is a scanner, not a validator: it finds members of well-formed text and
 * reports text it cannot walk (cut short, not an object) as CH_EPROTO. The
 * generator checks what matters to it (content bytes, sequence numbers)
 * itself. Strings are compared raw (escapes are not decoded): every string
 * the generator compares is ASCII that needs no escaping.
 */
#include <stdint.h>
#include <string.h>

#include "core/err.h"
#include "lg.h"

static const char *lg__jws(const char *p, const char *e) {
  while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  return p;
}

/* Bytes of w equal to c, as the high bit of each byte; the lowest one is exact (higher ones
 * may be false after a true one, and are never looked at). */
static inline uint64_t lg__bytes_eq(uint64_t w, uint8_t c) {
  uint64_t x = w ^ (0x0101010101010101ull * c);
  return (x - 0x0101010101010101ull) & ~x & 0x8080808080808080ull;
}

/* p is just past an opening quote: the closing quote, or NULL. Eight bytes at a time, looking
 * for a quote or a backslash (an escape: the byte after it is never the end). */
static const char *lg__jstr_end(const char *p, const char *e) {
  while (p < e) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (e - p >= 8) {
      uint64_t w;
      memcpy(&w, p, 8);
      uint64_t m = lg__bytes_eq(w, '"') | lg__bytes_eq(w, '\\');
      if (m == 0) {
        p += 8;
        continue;
      }
      p += __builtin_ctzll(m) >> 3; /* little-endian: the lowest set byte is the first */
    }
#endif
    char c = *p;
    if (c == '"') return p;
    p += c == '\\' ? 2 : 1;
  }
  return NULL;
}

/* One value at p (no leading blanks); sets v and returns the end, or NULL. */
static const char *lg__jvalue(const char *p, const char *e, lg_jv_t *v) {
  if (p >= e) return NULL;
  char ch = *p;
  if (ch == '"') {
    const char *q = lg__jstr_end(p + 1, e);
    if (q == NULL) return NULL;
    v->p = p + 1;
    v->n = (size_t)(q - p - 1);
    v->kind = 's';
    return q + 1;
  }
  if (ch == '{' || ch == '[') {
    int depth = 0;
    const char *q = p;
    while (q < e) {
      char c = *q;
      if (c == '"') {
        q = lg__jstr_end(q + 1, e);
        if (q == NULL) return NULL;
      } else if (c == '{' || c == '[') {
        depth++;
      } else if (c == '}' || c == ']') {
        if (--depth == 0) {
          v->p = p;
          v->n = (size_t)(q + 1 - p);
          v->kind = ch == '{' ? 'o' : 'a';
          return q + 1;
        }
      }
      q++;
    }
    return NULL;
  }
  if (ch == '-' || (ch >= '0' && ch <= '9') || ch == 't' || ch == 'f' || ch == 'n') {
    const char *q = p;
    while (q < e && *q != ',' && *q != '}' && *q != ']' && *q != ' ' && *q != '\n' && *q != '\r' &&
           *q != '\t')
      q++;
    v->p = p;
    v->n = (size_t)(q - p);
    v->kind = (ch == 't' || ch == 'f' || ch == 'n') ? 'l' : 'n';
    return q;
  }
  return NULL;
}

int lg_json_object(const char *p, size_t n, const char *const *keys, size_t nkeys, lg_jv_t *out) {
  const char *e = p + n;
  size_t klen[LG_JSON_MAX_KEYS], missing = nkeys;
  if (nkeys > LG_JSON_MAX_KEYS) return CH_EINVAL;
  for (size_t i = 0; i < nkeys; i++) {
    out[i].kind = 0;
    klen[i] = strlen(keys[i]);
  }
  p = lg__jws(p, e);
  if (p >= e || *p != '{') return CH_EPROTO;
  p = lg__jws(p + 1, e);
  if (p < e && *p == '}') return 0;
  for (;;) {
    if (p >= e || *p != '"') return CH_EPROTO;
    const char *kq = lg__jstr_end(p + 1, e);
    if (kq == NULL) return CH_EPROTO;
    const char *k = p + 1;
    p = lg__jws(kq + 1, e);
    if (p >= e || *p != ':') return CH_EPROTO;
    p = lg__jws(p + 1, e);
    size_t want = nkeys;
    for (size_t i = 0; i < nkeys; i++) {
      if (out[i].kind == 0 && klen[i] == (size_t)(kq - k) && memcmp(keys[i], k, klen[i]) == 0) {
        want = i;
        break;
      }
    }
    if (want < nkeys && missing == 1 && *p == '{') {
      /* The last key wanted, an object: hand it over open-ended, without skipping it. */
      out[want].p = p;
      out[want].n = (size_t)(e - p);
      out[want].kind = 'o';
      return 0;
    }
    lg_jv_t v;
    p = lg__jvalue(p, e, &v);
    if (p == NULL) return CH_EPROTO;
    if (want < nkeys) {
      out[want] = v;
      if (--missing == 0) return 0; /* every key found: the rest is not walked */
    }
    p = lg__jws(p, e);
    if (p >= e) return CH_EPROTO;
    if (*p == '}') return 0;
    if (*p != ',') return CH_EPROTO;
    p = lg__jws(p + 1, e);
  }
}

int lg_json_array_next(const lg_jv_t *arr, const char **cur, lg_jv_t *v) {
  if (arr->kind != 'a' || arr->n < 2) return CH_EPROTO;
  const char *e = arr->p + arr->n - 1; /* the closing ']' */
  const char *p = *cur ? *cur : arr->p + 1;
  p = lg__jws(p, e);
  if (*cur) { /* after an element: ',' or the end */
    if (p >= e) return 0;
    if (*p != ',') return CH_EPROTO;
    p = lg__jws(p + 1, e);
  } else if (p >= e) {
    return 0; /* [] */
  }
  p = lg__jvalue(p, e, v);
  if (p == NULL) return CH_EPROTO;
  *cur = p;
  return 1;
}

int lg_json_u64(const lg_jv_t *v, uint64_t *out) {
  if (v->kind != 'n' || v->n == 0 || v->n > 19) return CH_EPROTO;
  uint64_t x = 0;
  for (size_t i = 0; i < v->n; i++) {
    char c = v->p[i];
    if (c < '0' || c > '9') return CH_EPROTO;
    x = x * 10 + (uint64_t)(c - '0');
  }
  *out = x;
  return 0;
}

int lg_json_is(const lg_jv_t *v, const char *s) {
  size_t n = strlen(s);
  return v->kind == 's' && v->n == n && memcmp(v->p, s, n) == 0;
}
