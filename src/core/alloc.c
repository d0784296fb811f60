/*
 * alloc.c — ch_x* allocators: abort on out-of-memory with a clear message.
 */
#include "core/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void ch__oom(size_t n) {
  fprintf(stderr, "chorus: out of memory allocating %zu bytes\n", n);
  abort();
}

void *ch_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (p == NULL) ch__oom(n);
  return p;
}

void *ch_xcalloc(size_t count, size_t n) {
  void *p = calloc(count ? count : 1, n ? n : 1);
  if (p == NULL) ch__oom(count * n);
  return p;
}

void *ch_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (q == NULL) ch__oom(n);
  return q;
}

char *ch_xstrndup(const char *s, size_t n) {
  char *d = ch_xmalloc(n + 1);
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

char *ch_xstrdup(const char *s) { return ch_xstrndup(s, strlen(s)); }

void *ch_xmemdup(const void *p, size_t n) { return ch_xstrndup(p, n); }
