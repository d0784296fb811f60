/*
 * alloc.h — allocation helpers that never return NULL.
 *
 * Small internal allocations go through ch_x*, which abort the process with a
 * message on out-of-memory (as h2o and Redis do): a hub that cannot allocate a
 * few hundred bytes cannot keep any promise anyway. Any allocation whose size
 * a peer chooses must be checked against a configured limit BEFORE calling
 * these; that check is the real defence.
 */
#ifndef CH_CORE_ALLOC_H
#define CH_CORE_ALLOC_H

#include <stddef.h>

void *ch_xmalloc(size_t n);
void *ch_xcalloc(size_t count, size_t n);
void *ch_xrealloc(void *p, size_t n);
char *ch_xstrdup(const char *s);
char *ch_xstrndup(const char *s, size_t n);
/* Copy of n bytes of p (need not be NUL-terminated); result is NUL-terminated. */
void *ch_xmemdup(const void *p, size_t n);

#define CH_NEW(type) ((type *)ch_xcalloc(1, sizeof(type)))
#define CH_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
