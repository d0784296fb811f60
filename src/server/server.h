/*
 * server.h — the hub process: loops, routes, start-up and graceful shutdown.
 *
 * ch_server_run() turns a loaded configuration into running loops and blocks
 * until SIGINT/SIGTERM. Shutdown is graceful: every loop stops accepting,
 * says goodbye on each connection (WebSocket close 1001, SSE end, idle HTTP
 * closed, in-flight HTTP answered), and exits when its connections are gone
 * or when shutdown-timeout has passed, whichever comes first.
 */
#ifndef CH_SERVER_SERVER_H
#define CH_SERVER_SERVER_H

#include <stdint.h>
#include <uv.h>

#include "core/config.h"
#include "http/router.h"
#include "net/loop.h"

typedef struct ch_server_s {
  const ch_config_t *cfg;     /* not owned; read-only while running */
  ch_loop_t **loops;          /* owned array of nloops owned loops */
  int nloops;
  ch_http_router_t *router;   /* owned */
  uint64_t started_mono_ms;
  int64_t started_wall_ms;
  uv_loop_t main_loop;        /* signals and the shutdown deadline */
  uv_signal_t sigint, sigterm;
  uv_timer_t deadline;
  uv_async_t all_stopped;     /* a loop finished: check whether all have */
  int stop_requested;
} ch_server_t;

/* Run until a stop signal. Returns the process exit code (0 after a clean shutdown). */
int ch_server_run(const ch_config_t *cfg);

/* Sum a per-loop counter over all loops. */
uint64_t ch_server_stat_total(const ch_server_t *s, size_t offset);
#define CH_SERVER_STAT(s, field) ch_server_stat_total((s), offsetof(ch_loop_stats_t, field))

/* Route tables, defined next to their handlers. */
void ch_server_routes_ops(ch_http_router_t *r);   /* health, status, metrics */
void ch_server_routes_test(ch_http_router_t *r);  /* --test-endpoints: echo, bench pub/sub */

#endif
