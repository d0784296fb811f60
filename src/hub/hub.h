/*
 * hub.h — the hub thread: the one place where conversation state changes.
 *
 *   loop threads ── ch_hub_submit(req) ──> hub inbox (mutex list + uv_async)
 *                                             │ one batch per wake-up (≤ CH_HUB_BATCH requests):
 *                                             │   BEGIN; req->run(hub, req) for each; COMMIT
 *                                             │   then, only after the commit is durable:
 *                                             ├──> broadcasts queued by run() ─> ch_topic_publish
 *                                             ├──> ch_loop_post(req->loop, done) ─> req->done(req)
 *                                             └──> after-commit actions (e.g. start an agent)
 *
 * The store is synchronous and used by this thread only; the hub turns it
 * into asynchronous operations for the loops, so no loop ever waits on
 * SQLite. Writes of a whole batch share one transaction (group commit): a
 * send is acknowledged, and broadcast, only after its commit returned.
 *
 * Requests are generic: `run` is any function executed on the hub thread
 * with the store and the hub's in-memory state (presence) at hand, `done` is
 * executed afterwards on the loop that submitted the request. A request is
 * owned by the hub from submit until done returns; `free_cb` then frees it.
 */
#ifndef CH_HUB_HUB_H
#define CH_HUB_HUB_H

#include <stdint.h>
#include <uv.h>

#include "core/buf.h"
#include "core/list.h"
#include "core/map.h"
#include "hub/bcast.h"
#include "net/loop.h"
#include "store/store.h"

#define CH_HUB_BATCH 1024

typedef struct ch_hub_s ch_hub_t;
typedef struct ch_hub_req_s ch_hub_req_t;

struct ch_hub_req_s {
  ch_list_t node;                            /* in the inbox / the batch */
  void (*run)(ch_hub_t *h, ch_hub_req_t *r); /* hub thread; may write (inside the batch transaction) */
  void (*done)(ch_hub_req_t *r);             /* origin loop thread, after the commit; may be NULL */
  void (*free_cb)(ch_hub_req_t *r);          /* frees the request; NULL = free() */
  ch_loop_t *loop;                           /* origin loop (NULL: done runs on the hub thread) */
  int status;                                /* 0 or CH_E*; set by run, or CH_EIO when the commit failed */
  ch_buf_t err;                              /* message for status != 0 */
};

typedef struct {
  uint64_t batches;         /* transactions committed */
  uint64_t requests;        /* requests run */
  uint64_t commit_us_total; /* sum of commit durations */
  uint64_t commit_us_max;
  uint64_t batch_max;       /* largest batch */
  uint64_t commit_failures;
} ch_hub_stats_t;

struct ch_hub_s {
  ch_store_t *store;        /* owned */
  uv_loop_t uv;
  uv_thread_t thread;
  uv_async_t wake;
  uv_mutex_t lock;
  ch_list_t inbox;          /* guarded by lock */
  int stopping;             /* guarded by lock */
  int agents_stopped;       /* hub thread: streams ended for shutdown */
  ch_list_t publishes;      /* hub thread: broadcasts waiting for the commit */
  ch_list_t after_commit;   /* hub thread: actions waiting for the commit */
  ch_map_t presence;        /* hub thread: "c:<conv>" / "u:<user>" -> ch_presence_set_t */
  _Atomic uint64_t stat_batches, stat_requests, stat_commit_us_total, stat_commit_us_max,
      stat_batch_max, stat_commit_failures;
};

/* Start the hub thread over an open store (the hub takes ownership). */
int ch_hub_start(ch_hub_t *h, ch_store_t *store);
/* Drain the inbox, stop the thread, close the store. */
void ch_hub_stop(ch_hub_t *h);
/* Any thread. The hub owns req until its done callback has returned. */
void ch_hub_submit(ch_hub_t *h, ch_hub_req_t *req);
/* Hub thread only (inside run): publish b to topic once the batch is committed.
 * Takes ownership of one reference to b. */
void ch_hub_publish(ch_hub_t *h, const char *topic, ch_bcast_t *b);
/* Hub thread only (inside run): call fn(h, arg) on the hub thread once the
 * batch is committed and its answers posted — with ok = 0 if the commit
 * failed (then only release arg). */
void ch_hub_after_commit(ch_hub_t *h, void (*fn)(ch_hub_t *h, void *arg, int ok), void *arg);
void ch_hub_stats(ch_hub_t *h, ch_hub_stats_t *out);

/* The process's hub (set by the server at start-up). */
extern ch_hub_t *ch_hub;

#endif
