/*
 * buf.h — the two byte containers of chorus.
 *
 * ch_chunk_t is an immutable, reference-counted run of bytes. A broadcast is
 * encoded once into one chunk; every subscriber's output queue holds a
 * reference, released when the kernel has taken the bytes. The count is
 * atomic because one chunk is shared by connections on several loops.
 *
 *     +-------+-----+-----------------------+
 *     | _refs | len | data[len] ... (flex)  |
 *     +-------+-----+-----------------------+
 *
 * ch_buf_t is a plain growable buffer owned by exactly one party (a parser
 * accumulating a fragmented message, a response being built). It is never
 * shared; ch_buf_to_chunk() hands its bytes over as a new chunk.
 */
#ifndef CH_CORE_BUF_H
#define CH_CORE_BUF_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>

typedef struct ch_chunk_s {
  atomic_int _refs; /* owners; the chunk is freed when it reaches 0 */
  size_t len;       /* bytes in data */
  char data[];
} ch_chunk_t;

/* New chunk of len bytes (uninitialised), with one reference owned by the caller. */
ch_chunk_t *ch_chunk_new(size_t len);
/* New chunk holding a copy of p[0..len). */
ch_chunk_t *ch_chunk_from(const void *p, size_t len);
static inline ch_chunk_t *ch_chunk_ref(ch_chunk_t *k) {
  atomic_fetch_add_explicit(&k->_refs, 1, memory_order_relaxed);
  return k;
}
void ch_chunk_unref(ch_chunk_t *k);

typedef struct ch_buf_s {
  char *base; /* owned; NULL when cap == 0 */
  size_t len; /* bytes in use */
  size_t cap; /* bytes allocated */
} ch_buf_t;

#define CH_BUF_INIT {NULL, 0, 0}

static inline void ch_buf_init(ch_buf_t *b) {
  b->base = NULL;
  b->len = b->cap = 0;
}
void ch_buf_dispose(ch_buf_t *b);
/* Make room for n more bytes; returns the write position. */
char *ch_buf_reserve(ch_buf_t *b, size_t n);
void ch_buf_append(ch_buf_t *b, const void *p, size_t n);
void ch_buf_append_str(ch_buf_t *b, const char *s);
void ch_buf_append_byte(ch_buf_t *b, char c);
void ch_buf_printf(ch_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ch_buf_vprintf(ch_buf_t *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Append s as the inside of a JSON string (no quotes added). */
void ch_buf_append_json_str(ch_buf_t *b, const char *s, size_t n);
/* Append s as a quoted JSON string ("..."). */
void ch_buf_append_json_qstr(ch_buf_t *b, const char *s);
/* Drop the first n bytes. */
void ch_buf_consume(ch_buf_t *b, size_t n);
/* Move the bytes into a new chunk (one reference, the caller's); b is emptied. */
ch_chunk_t *ch_buf_to_chunk(const ch_buf_t *b);
/* NUL-terminate (not counted in len) and return base. */
char *ch_buf_cstr(ch_buf_t *b);

#endif
