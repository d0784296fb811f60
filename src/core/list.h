/*
 * list.h — intrusive circular doubly-linked list (after libuv's uv__queue).
 *
 * The node lives inside the object, so queueing never allocates. An empty
 * list is a head pointing at itself. CH_LIST_DATA recovers the container.
 */
#ifndef CH_CORE_LIST_H
#define CH_CORE_LIST_H

#include <stddef.h>

typedef struct ch_list_s {
  struct ch_list_s *next;
  struct ch_list_s *prev;
} ch_list_t;

#define CH_LIST_DATA(ptr, type, field) ((type *)((char *)(ptr)-offsetof(type, field)))

static inline void ch_list_init(ch_list_t *h) { h->next = h->prev = h; }
static inline int ch_list_empty(const ch_list_t *h) { return h->next == h; }
/* A node that is not on any list is kept self-linked, so this tells membership. */
static inline int ch_list_linked(const ch_list_t *n) { return n->next != n && n->next != NULL; }
static inline void ch_list_insert_tail(ch_list_t *h, ch_list_t *n) {
  n->next = h;
  n->prev = h->prev;
  h->prev->next = n;
  h->prev = n;
}
static inline void ch_list_remove(ch_list_t *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->next = n->prev = n;
}
#define ch_list_foreach(it, h) for ((it) = (h)->next; (it) != (h); (it) = (it)->next)
#define ch_list_foreach_safe(it, tmp, h) \
  for ((it) = (h)->next, (tmp) = (it)->next; (it) != (h); (it) = (tmp), (tmp) = (it)->next)

#endif
