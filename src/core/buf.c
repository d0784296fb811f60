/*
 * buf.c — refcounted chunks and growable buffers (see buf.h).
 */
#include "core/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

ch_chunk_t *ch_chunk_new(size_t len) {
  ch_chunk_t *k = ch_xmalloc(sizeof(*k) + len);
  atomic_init(&k->_refs, 1);
  k->len = len;
  return k;
}

ch_chunk_t *ch_chunk_from(const void *p, size_t len) {
  ch_chunk_t *k = ch_chunk_new(len);
  if (len) memcpy(k->data, p, len);
  return k;
}

void ch_chunk_unref(ch_chunk_t *k) {
  if (k == NULL) return;
  if (atomic_fetch_sub_explicit(&k->_refs, 1, memory_order_acq_rel) == 1) free(k);
}

void ch_buf_dispose(ch_buf_t *b) {
  free(b->base);
  ch_buf_init(b);
}

char *ch_buf_reserve(ch_buf_t *b, size_t n) {
  if (b->cap - b->len < n + 1) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len < n + 1) cap *= 2;
    b->base = ch_xrealloc(b->base, cap);
    b->cap = cap;
  }
  return b->base + b->len;
}

void ch_buf_append(ch_buf_t *b, const void *p, size_t n) {
  if (n == 0) return;
  memcpy(ch_buf_reserve(b, n), p, n);
  b->len += n;
}

void ch_buf_append_str(ch_buf_t *b, const char *s) { ch_buf_append(b, s, strlen(s)); }

void ch_buf_append_byte(ch_buf_t *b, char c) {
  *ch_buf_reserve(b, 1) = c;
  b->len++;
}

void ch_buf_vprintf(ch_buf_t *b, const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  /* Reserve before reading cap: argument evaluation order is unspecified. */
  char *p = ch_buf_reserve(b, 64);
  int n = vsnprintf(p, b->cap - b->len, fmt, ap);
  if (n >= 0 && (size_t)n >= b->cap - b->len) {
    p = ch_buf_reserve(b, (size_t)n);
    vsnprintf(p, b->cap - b->len, fmt, ap2);
  }
  va_end(ap2);
  if (n > 0) b->len += (size_t)n;
}

void ch_buf_printf(ch_buf_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  ch_buf_vprintf(b, fmt, ap);
  va_end(ap);
}

void ch_buf_append_json_str(ch_buf_t *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch >= 0x20 && ch != '"' && ch != '\\') continue;
    ch_buf_append(b, s + run, i - run);
    run = i + 1;
    switch (ch) {
    case '"': ch_buf_append(b, "\\\"", 2); break;
    case '\\': ch_buf_append(b, "\\\\", 2); break;
    case '\n': ch_buf_append(b, "\\n", 2); break;
    case '\r': ch_buf_append(b, "\\r", 2); break;
    case '\t': ch_buf_append(b, "\\t", 2); break;
    default: {
      char e[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
      ch_buf_append(b, e, 6);
    }
    }
  }
  ch_buf_append(b, s + run, n - run);
}

void ch_buf_append_json_qstr(ch_buf_t *b, const char *s) {
  ch_buf_append_byte(b, '"');
  ch_buf_append_json_str(b, s, strlen(s));
  ch_buf_append_byte(b, '"');
}

void ch_buf_consume(ch_buf_t *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->base, b->base + n, b->len - n);
  b->len -= n;
}

ch_chunk_t *ch_buf_to_chunk(const ch_buf_t *b) { return ch_chunk_from(b->base, b->len); }

char *ch_buf_cstr(ch_buf_t *b) {
  ch_buf_reserve(b, 1);
  b->base[b->len] = '\0';
  return b->base;
}
