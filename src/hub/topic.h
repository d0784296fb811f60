/*
 * topic.h — the broadcast primitive: one pre-encoded frame to every
 * subscriber of a named topic, on every loop.
 *
 *   publisher (any thread)
 *       │ ch_topic_publish(name, frame)         one ch_topic_msg_t, refcounted
 *       ├──post──> loop 0 inbox ──> loop 0's table[name] ──> sub, sub, sub  (ch_conn_send(ref))
 *       └──post──> loop 1 inbox ──> loop 1's table[name] ──> sub, sub
 *
 * Each loop keeps its own table of local subscribers (no shared mutable
 * state); the frame bytes are shared by reference, never copied per
 * subscriber. Messages posted from one thread reach each loop in order, so a
 * subscriber sees one publisher's messages in publish order.
 */
#ifndef CH_HUB_TOPIC_H
#define CH_HUB_TOPIC_H

#include <stddef.h>

#include "core/buf.h"
#include "core/list.h"
#include "net/conn.h"
#include "net/loop.h"

typedef struct ch_topic_s ch_topic_t;
typedef struct ch_topic_sub_s ch_topic_sub_t;

struct ch_topic_sub_s {
  ch_list_t node;     /* in the topic's subscriber list */
  ch_topic_t *topic;  /* NULL when not subscribed; not owned */
  ch_conn_t *c;       /* receiver; not owned */
  /* Deliver one frame (borrowed: take a reference to keep it). NULL means
   * ch_conn_send(c, ch_chunk_ref(frame)). */
  void (*deliver)(ch_topic_sub_t *s, ch_chunk_t *frame);
};

/* The set of loops a publish reaches (set once at start-up). */
void ch_topic_setup(ch_loop_t **loops, int nloops);
/* Loop thread only. s must stay valid until unsubscribed. */
void ch_topic_subscribe(ch_loop_t *l, const char *name, size_t nlen, ch_topic_sub_t *s);
void ch_topic_unsubscribe(ch_loop_t *l, ch_topic_sub_t *s);
/* Any thread. Takes ownership of one reference to frame. */
void ch_topic_publish(const char *name, size_t nlen, ch_chunk_t *frame);
/* Loop thread only: deliver to this loop's subscribers now (no post). */
size_t ch_topic_deliver_local(ch_loop_t *l, const char *name, size_t nlen, ch_chunk_t *frame);
/* Loop thread only: free the loop's table at shutdown. */
void ch_topic_loop_dispose(ch_loop_t *l);

#endif
