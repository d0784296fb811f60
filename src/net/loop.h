/*
 * loop.h — one event loop per thread, each owning its connections outright.
 *
 *   main thread ──signals──> ch_server_stop()
 *        │
 *        ├── loop 0 thread:  listener(SO_REUSEPORT) ─accept─> conns ─┐
 *        ├── loop 1 thread:  listener(SO_REUSEPORT) ─accept─> conns ─┤ uv_prepare "flush":
 *        └── ...                                                     ┘ one writev per pending conn
 *
 * The kernel spreads new connections over the loops' listeners
 * (SO_REUSEPORT). Nothing mutable is shared between loops: whatever crosses
 * loops is a task posted to the target loop's inbox (mutex-guarded list +
 * uv_async), so each loop touches only its own connections.
 *
 * Per turn a loop: reads (into one read buffer shared by all its connections,
 * so an idle connection holds no read buffer), lets protocols queue output,
 * and in its uv_prepare callback (libuv's "before sleep") flushes every
 * connection that has pending output with a single writev.
 *
 * A one-second sweep timer drives every time-based rule: header-read
 * timeouts, pings, dead peers, close deadlines, SSE heartbeats.
 */
#ifndef CH_NET_LOOP_H
#define CH_NET_LOOP_H

#include <uv.h>

#include "core/list.h"
#include "net/stats.h"

typedef struct ch_loop_s ch_loop_t;
typedef struct ch_conn_s ch_conn_t;
typedef void (*ch_loop_task_cb)(ch_loop_t *loop, void *arg);
/* Called for every accepted connection; the owner (server) installs its first protocol. */
typedef void (*ch_loop_accept_cb)(ch_loop_t *loop, ch_conn_t *c);

#define CH_LOOP_RBUF_SIZE (64 * 1024)

struct ch_loop_s {
  uv_loop_t uv;
  int id;                  /* 0..nloops-1 */
  uv_thread_t thread;
  uv_tcp_t listener;
  int listening;           /* listener is open */
  uv_prepare_t flush;      /* before-sleep: flush pending output */
  uv_async_t inbox_async;  /* wakes the loop for posted tasks */
  uv_mutex_t inbox_lock;
  ch_list_t inbox;         /* ch_loop_task_t, guarded by inbox_lock */
  uv_timer_t sweep;        /* 1 s: timeouts and heartbeats */
  ch_list_t conns;         /* every open ch_conn_t of this loop */
  ch_list_t pending;       /* conns with output to flush this turn */
  char *rbuf;              /* owned; CH_LOOP_RBUF_SIZE bytes shared by all reads on this loop */
  int stopping;            /* graceful shutdown in progress */
  uint64_t now_ms;         /* monotonic time of this turn's sweep */
  ch_loop_accept_cb on_accept;
  void *owner;             /* the server; not owned */
  void *topics;            /* per-loop topic table (hub/topic.c); owned by it */
  void *clients;           /* per-loop client registry (hub/client.c); owned by it */
  ch_loop_stats_t stats;
};

/* Set up a loop (not yet running). Returns 0 or a CH_E* code. */
int ch_loop_init(ch_loop_t *l, int id, void *owner, ch_loop_accept_cb on_accept);
/* Check that host:port is free (nothing, not even another chorus, listens
 * there): SO_REUSEPORT would otherwise let a second hub silently share it.
 * 0, CH_EBUSY or CH_EINVAL (logged). */
int ch_loop_probe(const char *host, int port);
/* Bind a SO_REUSEPORT listener on host:port. Returns 0, CH_EIO (errno logged). */
int ch_loop_listen(ch_loop_t *l, const char *host, int port, int backlog);
/* The owner runs uv_run(&l->uv) on l->thread. Wait for that thread to end,
 * then free everything. */
void ch_loop_join(ch_loop_t *l);
/* Thread-safe: run cb(loop, arg) on the loop's thread soon. */
void ch_loop_post(ch_loop_t *l, ch_loop_task_cb cb, void *arg);
/* Loop thread only: stop accepting (close the listener). */
void ch_loop_stop_accepting(ch_loop_t *l);
/* Loop thread only: close the remaining handles so uv_run returns. */
void ch_loop_stop(ch_loop_t *l);

#endif
