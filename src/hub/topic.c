/*
 * topic.c — per-loop subscriber tables and cross-loop publish (see topic.h).
 */
#include "hub/topic.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/map.h"

struct ch_topic_s {
  ch_list_t subs; /* ch_topic_sub_t */
  size_t count;
  int delivering; /* inside ch_topic_deliver_local: freeing is deferred */
  char *name; /* owned copy (the map owns its own key copy too) */
  size_t nlen;
};

typedef struct {
  atomic_int refs;     /* one per loop it was posted to */
  ch_topic_item_t *it; /* one reference owned by this message */
  size_t nlen;
  char name[];
} ch_topic_msg_t;

void ch_topic_item_unref(ch_topic_item_t *it) {
  if (it && atomic_fetch_sub_explicit(&it->refs, 1, memory_order_acq_rel) == 1) it->free_cb(it);
}

static void ch__topic_frame_free(ch_topic_item_t *it) {
  ch_chunk_unref(((ch_topic_frame_t *)it)->frame);
  free(it);
}

ch_topic_item_t *ch_topic_frame_new(ch_chunk_t *frame) {
  ch_topic_frame_t *f = ch_xmalloc(sizeof(*f));
  atomic_init(&f->base.refs, 1);
  f->base.free_cb = ch__topic_frame_free;
  f->frame = frame;
  return &f->base;
}

static ch_loop_t **ch__topic_loops;
static int ch__topic_nloops;

void ch_topic_setup(ch_loop_t **loops, int nloops) {
  ch__topic_loops = loops;
  ch__topic_nloops = nloops;
}

static ch_map_t *ch__topic_table(ch_loop_t *l) {
  if (l->topics == NULL) {
    ch_map_t *m = ch_xmalloc(sizeof(*m));
    ch_map_init(m);
    l->topics = m;
  }
  return l->topics;
}

void ch_topic_subscribe(ch_loop_t *l, const char *name, size_t nlen, ch_topic_sub_t *s) {
  ch_map_t *m = ch__topic_table(l);
  ch_topic_t *t = ch_map_get(m, name, nlen);
  if (t == NULL) {
    t = ch_xcalloc(1, sizeof(*t));
    ch_list_init(&t->subs);
    t->name = ch_xstrndup(name, nlen);
    t->nlen = nlen;
    ch_map_put(m, name, nlen, t);
  }
  ch_list_insert_tail(&t->subs, &s->node);
  s->topic = t;
  t->count++;
}

static void ch__topic_free(ch_loop_t *l, ch_topic_t *t) {
  ch_map_del(l->topics, t->name, t->nlen);
  free(t->name);
  free(t);
}

void ch_topic_unsubscribe(ch_loop_t *l, ch_topic_sub_t *s) {
  ch_topic_t *t = s->topic;
  if (t == NULL) return;
  ch_list_remove(&s->node);
  s->topic = NULL;
  if (--t->count == 0 && !t->delivering) ch__topic_free(l, t);
}

size_t ch_topic_deliver_local(ch_loop_t *l, const char *name, size_t nlen, ch_topic_item_t *item) {
  if (l->topics == NULL) return 0;
  ch_topic_t *t = ch_map_get(l->topics, name, nlen);
  if (t == NULL) return 0;
  size_t n = 0;
  ch_list_t *it, *tmp;
  /* Safe iteration: a delivery may close (and unsubscribe) its own connection. */
  t->delivering = 1;
  ch_list_foreach_safe(it, tmp, &t->subs) {
    ch_topic_sub_t *s = CH_LIST_DATA(it, ch_topic_sub_t, node);
    s->deliver(s, item);
    n++;
  }
  t->delivering = 0;
  if (t->count == 0) ch__topic_free(l, t);
  CH_STAT_ADD(&l->stats, broadcasts, 1);
  CH_STAT_ADD(&l->stats, deliveries, n);
  return n;
}

static void ch__topic_msg_unref(ch_topic_msg_t *msg) {
  if (atomic_fetch_sub_explicit(&msg->refs, 1, memory_order_acq_rel) == 1) {
    ch_topic_item_unref(msg->it);
    free(msg);
  }
}

static void ch__topic_task(ch_loop_t *l, void *arg) {
  ch_topic_msg_t *msg = arg;
  if (!l->stopping) ch_topic_deliver_local(l, msg->name, msg->nlen, msg->it);
  ch__topic_msg_unref(msg);
}

void ch_topic_publish(const char *name, size_t nlen, ch_topic_item_t *it) {
  if (ch__topic_nloops == 0) {
    ch_topic_item_unref(it);
    return;
  }
  ch_topic_msg_t *msg = ch_xmalloc(sizeof(*msg) + nlen);
  atomic_init(&msg->refs, ch__topic_nloops);
  msg->it = it;
  msg->nlen = nlen;
  memcpy(msg->name, name, nlen);
  for (int i = 0; i < ch__topic_nloops; i++) ch_loop_post(ch__topic_loops[i], ch__topic_task, msg);
}

void ch_topic_loop_dispose(ch_loop_t *l) {
  ch_map_t *m = l->topics;
  if (m == NULL) return;
  void *v;
  for (size_t i = 0; ch_map_next(m, &i, NULL, NULL, &v);) {
    ch_topic_t *t = v;
    ch_list_t *it, *tmp;
    ch_list_foreach_safe(it, tmp, &t->subs) {
      ch_topic_sub_t *s = CH_LIST_DATA(it, ch_topic_sub_t, node);
      ch_list_remove(it);
      s->topic = NULL;
    }
    free(t->name);
    free(t);
  }
  ch_map_dispose(m);
  free(m);
  l->topics = NULL;
}
