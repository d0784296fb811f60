/*
 * topic.h — the broadcast primitive: one pre-encoded frame to every
 * subscriber of a named topic, on every loop.
 *
 *   publisher (any thread)
 *       │ ch_topic_publish(name, item)          one refcounted item (e.g. a frame)
 *       ├──post──> loop 0 inbox ──> loop 0's table[name] ──> sub, sub, sub  (deliver(sub, item))
 *       └──post──> loop 1 inbox ──> loop 1's table[name] ──> sub, sub
 *
 * Each loop keeps its own table of local subscribers (no shared mutable
 * state); the frame bytes are shared by reference, never copied per
 * subscriber. Messages posted from one thread reach each loop in order, so a
 * subscriber sees one publisher's messages in publish order.
 */
#ifndef CH_HUB_TOPIC_H
#define CH_HUB_TOPIC_H

#include <stdatomic.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/list.h"
#include "net/conn.h"
#include "net/loop.h"

typedef struct ch_topic_s ch_topic_t;
typedef struct ch_topic_sub_s ch_topic_sub_t;
typedef struct ch_topic_item_s ch_topic_item_t;

/* What is published: a refcounted object; embed it first in the real payload
 * (a plain frame: ch_topic_frame_t; a hub event with lazily encoded frames per
 * wire format: hub/bcast.h). free_cb runs when the last reference goes. */
struct ch_topic_item_s {
  atomic_int refs;
  void (*free_cb)(ch_topic_item_t *it);
};

static inline ch_topic_item_t *ch_topic_item_ref(ch_topic_item_t *it) {
  atomic_fetch_add_explicit(&it->refs, 1, memory_order_relaxed);
  return it;
}
void ch_topic_item_unref(ch_topic_item_t *it);

/* The simplest item: one pre-encoded frame. */
typedef struct {
  ch_topic_item_t base;
  ch_chunk_t *frame; /* one reference owned by the item */
} ch_topic_frame_t;
/* Wrap a frame (takes ownership of one reference); the item has one reference. */
ch_topic_item_t *ch_topic_frame_new(ch_chunk_t *frame);

struct ch_topic_sub_s {
  ch_list_t node;     /* in the topic's subscriber list */
  ch_topic_t *topic;  /* NULL when not subscribed; not owned */
  /* Deliver one item (borrowed: take a reference to keep it). Required. */
  void (*deliver)(ch_topic_sub_t *s, ch_topic_item_t *it);
};

/* The set of loops a publish reaches (set once at start-up). */
void ch_topic_setup(ch_loop_t **loops, int nloops);
/* Loop thread only. s must stay valid until unsubscribed. */
void ch_topic_subscribe(ch_loop_t *l, const char *name, size_t nlen, ch_topic_sub_t *s);
void ch_topic_unsubscribe(ch_loop_t *l, ch_topic_sub_t *s);
/* Any thread. Takes ownership of one reference to it. */
void ch_topic_publish(const char *name, size_t nlen, ch_topic_item_t *it);
/* Loop thread only: deliver to this loop's subscribers now (no post). */
size_t ch_topic_deliver_local(ch_loop_t *l, const char *name, size_t nlen, ch_topic_item_t *it);
/* Loop thread only: free the loop's table at shutdown. */
void ch_topic_loop_dispose(ch_loop_t *l);

#endif
