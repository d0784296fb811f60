/*
 * hub.c — the hub thread: batches, group commit, deferred publishes (see hub.h).
 */
#include "hub/hub.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "agent/agent.h"
#include "hub/presence.h"

ch_hub_t *ch_hub;

typedef struct {
  ch_list_t node;
  ch_bcast_t *b;  /* one reference */
  size_t tlen;
  char topic[];
} ch__hub_pub_t;

static uint64_t ch__now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void ch_hub_publish(ch_hub_t *h, const char *topic, ch_bcast_t *b) {
  size_t tlen = strlen(topic);
  ch__hub_pub_t *p = ch_xmalloc(sizeof(*p) + tlen);
  p->b = b;
  p->tlen = tlen;
  memcpy(p->topic, topic, tlen);
  ch_list_insert_tail(&h->publishes, &p->node);
}

typedef struct {
  ch_list_t node;
  void (*fn)(ch_hub_t *h, void *arg, int ok);
  void *arg;
} ch__hub_action_t;

void ch_hub_after_commit(ch_hub_t *h, void (*fn)(ch_hub_t *h, void *arg, int ok), void *arg) {
  ch__hub_action_t *a = ch_xmalloc(sizeof(*a));
  a->fn = fn;
  a->arg = arg;
  ch_list_insert_tail(&h->after_commit, &a->node);
}

static void ch__hub_run_actions(ch_hub_t *h, int ok) {
  while (!ch_list_empty(&h->after_commit)) {
    ch_list_t *n = h->after_commit.next;
    ch_list_remove(n);
    ch__hub_action_t *a = CH_LIST_DATA(n, ch__hub_action_t, node);
    a->fn(h, a->arg, ok);
    free(a);
  }
}

static void ch__hub_req_free(ch_hub_req_t *r) {
  ch_buf_dispose(&r->err);
  if (r->free_cb) r->free_cb(r);
  else free(r);
}

static void ch__hub_done_task(ch_loop_t *l, void *arg) {
  ch_hub_req_t *r = arg;
  if (r->done) r->done(r); /* also while stopping: done releases what the request holds */
  ch__hub_req_free(r);
}

static void ch__hub_flush_publishes(ch_hub_t *h, int deliver) {
  while (!ch_list_empty(&h->publishes)) {
    ch_list_t *n = h->publishes.next;
    ch_list_remove(n);
    ch__hub_pub_t *p = CH_LIST_DATA(n, ch__hub_pub_t, node);
    if (deliver) ch_topic_publish(p->topic, p->tlen, &p->b->base);
    else ch_bcast_unref(p->b);
    free(p);
  }
}

static void ch__stat_max(_Atomic uint64_t *m, uint64_t v) {
  if (v > atomic_load_explicit(m, memory_order_relaxed)) atomic_store_explicit(m, v, memory_order_relaxed);
}

static void ch__hub_run_batch(ch_hub_t *h, ch_list_t *batch, size_t n) {
  ch_store_t *st = h->store;
  int tx = st->ops->begin(st) == 0;
  ch_list_t *it;
  ch_list_foreach(it, batch) {
    ch_hub_req_t *r = CH_LIST_DATA(it, ch_hub_req_t, node);
    r->run(h, r);
  }
  int ok = 1;
  if (tx) {
    uint64_t t0 = ch__now_us();
    if (st->ops->commit(st) != 0) {
      ok = 0;
      st->ops->rollback(st);
      atomic_fetch_add(&h->stat_commit_failures, 1);
      ch_log_error("hub: commit of a batch of %zu failed; its writes are refused", n);
    }
    uint64_t dt = ch__now_us() - t0;
    atomic_fetch_add_explicit(&h->stat_commit_us_total, dt, memory_order_relaxed);
    ch__stat_max(&h->stat_commit_us_max, dt);
  }
  atomic_fetch_add_explicit(&h->stat_batches, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->stat_requests, n, memory_order_relaxed);
  ch__stat_max(&h->stat_batch_max, n);
  ch__hub_flush_publishes(h, ok);
  /* Answers first: the after-commit actions (an agent's request upstream) must
   * not hold up the acks of the batch. */
  while (!ch_list_empty(batch)) {
    ch_list_t *node = batch->next;
    ch_list_remove(node);
    ch_hub_req_t *r = CH_LIST_DATA(node, ch_hub_req_t, node);
    if (!ok && r->status == 0) {
      r->status = CH_EIO;
      ch_buf_append_str(&r->err, "the store could not commit");
    }
    if (r->loop) {
      ch_loop_post(r->loop, ch__hub_done_task, r);
    } else {
      if (r->done) r->done(r);
      ch__hub_req_free(r);
    }
  }
  ch__hub_run_actions(h, ok);
}

static void ch__hub_wake_cb(uv_async_t *a) {
  ch_hub_t *h = a->data;
  for (;;) {
    ch_list_t batch;
    ch_list_init(&batch);
    size_t n = 0;
    int stopping;
    uv_mutex_lock(&h->lock);
    while (!ch_list_empty(&h->inbox) && n < CH_HUB_BATCH) {
      ch_list_t *node = h->inbox.next;
      ch_list_remove(node);
      ch_list_insert_tail(&batch, node);
      n++;
    }
    stopping = h->stopping;
    uv_mutex_unlock(&h->lock);
    if (n == 0) {
      if (stopping && !h->agents_stopped) {
        /* End every agent stream (their error markers are stored by the next batch). */
        h->agents_stopped = 1;
        ch_agent_stop_all(h);
        continue;
      }
      if (stopping) uv_close((uv_handle_t *)&h->wake, NULL);
      return;
    }
    ch__hub_run_batch(h, &batch, n);
  }
}

static void ch__hub_thread(void *arg) {
  ch_hub_t *h = arg;
  uv_run(&h->uv, UV_RUN_DEFAULT);
}

int ch_hub_start(ch_hub_t *h, ch_store_t *store) {
  memset(h, 0, sizeof(*h));
  h->store = store;
  ch_list_init(&h->inbox);
  ch_list_init(&h->publishes);
  ch_list_init(&h->after_commit);
  ch_map_init(&h->presence);
  uv_mutex_init(&h->lock);
  uv_loop_init(&h->uv);
  uv_async_init(&h->uv, &h->wake, ch__hub_wake_cb);
  h->wake.data = h;
  if (uv_thread_create(&h->thread, ch__hub_thread, h) != 0) return CH_EIO;
  return 0;
}

void ch_hub_submit(ch_hub_t *h, ch_hub_req_t *req) {
  uv_mutex_lock(&h->lock);
  ch_list_insert_tail(&h->inbox, &req->node);
  uv_mutex_unlock(&h->lock);
  uv_async_send(&h->wake);
}

void ch_hub_stop(ch_hub_t *h) {
  uv_mutex_lock(&h->lock);
  h->stopping = 1;
  uv_mutex_unlock(&h->lock);
  uv_async_send(&h->wake);
  uv_thread_join(&h->thread);
  uv_loop_close(&h->uv);
  uv_mutex_destroy(&h->lock);
  ch_presence_dispose(h);
  ch_map_dispose(&h->presence);
  ch_store_close(h->store);
  h->store = NULL;
}

void ch_hub_stats(ch_hub_t *h, ch_hub_stats_t *out) {
  out->batches = atomic_load(&h->stat_batches);
  out->requests = atomic_load(&h->stat_requests);
  out->commit_us_total = atomic_load(&h->stat_commit_us_total);
  out->commit_us_max = atomic_load(&h->stat_commit_us_max);
  out->batch_max = atomic_load(&h->stat_batch_max);
  out->commit_failures = atomic_load(&h->stat_commit_failures);
}
