/*
 * pool.c — region allocator with cleanup hooks (see pool.h).
 *
 * Each block starts with a ch_pool_block_s header padded to max_align_t, then
 * the usable bytes. The pool carves from the newest ordinary block; an
 * oversized request gets a dedicated block that is linked *behind* the
 * current one so the current block's free tail stays usable.
 */
#include "core/pool.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

struct ch_pool_block_s {
  struct ch_pool_block_s *_next; /* owned; older block */
};

struct ch_pool_cleanup_s {
  struct ch_pool_cleanup_s *_next; /* older hook */
  ch_pool_cleanup_cb cb;
  void *data;
};

#define CH__POOL_ALIGN (alignof(max_align_t))
#define CH__POOL_ROUND(n) (((n) + CH__POOL_ALIGN - 1) & ~(size_t)(CH__POOL_ALIGN - 1))
#define CH__POOL_HDR CH__POOL_ROUND(sizeof(struct ch_pool_block_s))

void ch_pool_init(ch_pool_t *pool, size_t block_size) {
  if (block_size == 0) block_size = CH_POOL_DEFAULT_BLOCK;
  if (block_size < CH__POOL_HDR + 4 * CH__POOL_ALIGN)
    block_size = CH__POOL_HDR + 4 * CH__POOL_ALIGN;
  pool->_blocks = NULL;
  pool->_p = pool->_end = NULL;
  pool->_block_size = block_size;
  pool->_cleanups = NULL;
}

void ch_pool_dispose(ch_pool_t *pool) {
  /* Hooks live inside the blocks: run them all before freeing any block. */
  for (struct ch_pool_cleanup_s *c = pool->_cleanups; c != NULL; c = c->_next) c->cb(c->data);
  struct ch_pool_block_s *b = pool->_blocks;
  while (b != NULL) {
    struct ch_pool_block_s *next = b->_next;
    free(b);
    b = next;
  }
  pool->_blocks = NULL;
  pool->_p = pool->_end = NULL;
  pool->_cleanups = NULL;
}

void *ch_pool_alloc(ch_pool_t *pool, size_t n) {
  size_t need = CH__POOL_ROUND(n ? n : 1);
  if (need < n) abort(); /* size_t overflow while rounding */
  if (pool->_p != NULL && (size_t)(pool->_end - pool->_p) >= need) {
    void *r = pool->_p;
    pool->_p += need;
    return r;
  }
  size_t usable = pool->_block_size - CH__POOL_HDR;
  if (need > usable / 4) {
    /* Dedicated block, linked behind the current one (or first if none). */
    if (need > SIZE_MAX - CH__POOL_HDR) abort();
    struct ch_pool_block_s *b = ch_xmalloc(CH__POOL_HDR + need);
    if (pool->_blocks != NULL) {
      b->_next = pool->_blocks->_next;
      pool->_blocks->_next = b;
    } else {
      b->_next = NULL;
      pool->_blocks = b; /* _p stays NULL: the next small alloc opens a block */
    }
    return (char *)b + CH__POOL_HDR;
  }
  struct ch_pool_block_s *b = ch_xmalloc(pool->_block_size);
  b->_next = pool->_blocks;
  pool->_blocks = b;
  pool->_p = (char *)b + CH__POOL_HDR + need;
  pool->_end = (char *)b + pool->_block_size;
  return (char *)b + CH__POOL_HDR;
}

void *ch_pool_calloc(ch_pool_t *pool, size_t n) {
  void *p = ch_pool_alloc(pool, n);
  memset(p, 0, n);
  return p;
}

char *ch_pool_strndup(ch_pool_t *pool, const char *s, size_t n) {
  if (n == SIZE_MAX) abort();
  char *d = ch_pool_alloc(pool, n + 1);
  if (n) memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

char *ch_pool_strdup(ch_pool_t *pool, const char *s) { return ch_pool_strndup(pool, s, strlen(s)); }

void ch_pool_cleanup_add(ch_pool_t *pool, ch_pool_cleanup_cb cb, void *data) {
  struct ch_pool_cleanup_s *c = ch_pool_alloc(pool, sizeof(*c));
  c->cb = cb;
  c->data = data;
  c->_next = pool->_cleanups;
  pool->_cleanups = c;
}
