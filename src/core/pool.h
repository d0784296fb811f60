/*
 * pool.h — a region allocator (arena) with cleanup hooks.
 *
 * One pool holds every small allocation that lives exactly as long as one
 * object (an HTTP request and all its strings): allocations are bump-pointer
 * carves out of blocks, never freed one by one, and ch_pool_dispose() frees
 * them all at once after running the cleanup hooks in reverse order of
 * registration (nginx's ngx_pool_t, h2o's h2o_mem_pool_t).
 *
 *     ch_pool_t ---> block (newest) ---> block ---> ... ---> NULL
 *                    | _next | _end | bytes ... [_p .. _end) free |
 *
 * A request larger than a quarter of the block size gets a block of its own,
 * linked behind the current one, so a big string never wastes the free tail
 * of the current block. Every pointer returned is aligned for any type
 * (max_align_t). Allocation never fails: like ch_xmalloc it aborts on OOM, so
 * any size chosen by a peer must be checked against a limit BEFORE it reaches
 * the pool.
 *
 * A pool is owned by exactly one party and is not thread-safe.
 */
#ifndef CH_CORE_POOL_H
#define CH_CORE_POOL_H

#include <stddef.h>

#define CH_POOL_DEFAULT_BLOCK 4096 /* bytes per block (incl. its header) */

struct ch_pool_block_s;
struct ch_pool_cleanup_s;

typedef void (*ch_pool_cleanup_cb)(void *data);

typedef struct ch_pool_s {
  struct ch_pool_block_s *_blocks;     /* owned; newest first; NULL when empty */
  char *_p;                            /* next free byte in _blocks (or NULL) */
  char *_end;                          /* end of _blocks' usable bytes (or NULL) */
  size_t _block_size;                  /* bytes per ordinary block */
  struct ch_pool_cleanup_s *_cleanups; /* owned (they live in the pool); newest first */
} ch_pool_t;

/* Prepare an empty pool. block_size 0 means CH_POOL_DEFAULT_BLOCK. No memory
 * is allocated until the first ch_pool_alloc(). */
void ch_pool_init(ch_pool_t *pool, size_t block_size);
/* Run the cleanup hooks (newest first), then free every block. Every pointer
 * the pool returned becomes invalid. The pool is left empty and may be used
 * again as if freshly initialised with the same block size. */
void ch_pool_dispose(ch_pool_t *pool);
/* n bytes (uninitialised, max_align_t-aligned), valid until dispose. n == 0
 * returns a valid unique pointer. Never returns NULL (aborts on OOM). */
void *ch_pool_alloc(ch_pool_t *pool, size_t n);
/* Like ch_pool_alloc, zero-filled. */
void *ch_pool_calloc(ch_pool_t *pool, size_t n);
/* Copy of s[0..n) followed by a NUL; s need not be NUL-terminated (it may
 * contain NULs, which are copied). s may be NULL only when n == 0. */
char *ch_pool_strndup(ch_pool_t *pool, const char *s, size_t n);
/* Copy of the NUL-terminated string s. */
char *ch_pool_strdup(ch_pool_t *pool, const char *s);
/* Register cb(data) to run at dispose time, before the memory is freed. The
 * hook record itself lives in the pool. */
void ch_pool_cleanup_add(ch_pool_t *pool, ch_pool_cleanup_cb cb, void *data);

#endif
