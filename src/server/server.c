/*
 * server.c — start-up, signals and graceful shutdown (see server.h).
 */
#include "server/server.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "agent/agent.h"
#include "hub/client.h"
#include "hub/hub.h"
#include "hub/topic.h"
#include "proto/proto.h"
#include "http/server.h"
#include "net/conn.h"
#include "net/tls.h"
#include "sse/stream.h"
#include "ws/session.h"

static atomic_int ch__loops_running;

/* Jupyter-style first start: print an admin credential once, to stdout (not
 * to the log: logs are shipped; this is the operator's terminal). */
static void ch__server_first_start(const ch_config_t *cfg) {
  char *tok = NULL;
  if (ch_auth_token_mint(&ch_proto_settings.secret, "admin", "console", CH_SCOPE_ALL, 30 * 86400,
                         ch_clock_wall_ms(), &tok) != 0)
    return;
  int v6 = strchr(cfg->listen_host, ':') != NULL;
  char host[300];
  snprintf(host, sizeof(host), "%s%s%s:%u", v6 ? "[" : "", cfg->listen_host, v6 ? "]" : "", cfg->listen_port);
  const char *tls = cfg->tls_cert[0] ? "s" : "";
  printf("\nchorus: first start — created %s/secret.key\n"
         "  admin token (30 days; mint more with `chorus token`):\n    %s\n"
         "  status:    curl -H 'Authorization: Bearer %s' http%s://%s/api/status\n"
         "  websocket: ws%s://%s/ws?source=web&token=%s\n\n",
         cfg->data_dir, tok, tok, tls, host, tls, host, tok);
  fflush(stdout);
  free(tok);
}

uint64_t ch_server_stat_total(const ch_server_t *s, size_t offset) {
  uint64_t sum = 0;
  for (int i = 0; i < s->nloops; i++) {
    _Atomic uint64_t *p = (_Atomic uint64_t *)((char *)&s->loops[i]->stats + offset);
    sum += atomic_load_explicit(p, memory_order_relaxed);
  }
  return sum;
}

static void ch__server_on_accept(ch_loop_t *l, ch_conn_t *c) {
  ch_server_t *s = l->owner;
  if (l->stopping) {
    ch_conn_close(c);
    return;
  }
  /* max-connections: c is already counted in conns_open. The sum over loops
   * is read without locking, so the cap is approximate by a few. */
  if (CH_SERVER_STAT(s, conns_open) > (uint64_t)s->cfg->max_connections) {
    ch_log_debug("conn %llu (%s): max-connections (%d) reached, refusing", (unsigned long long)c->id,
                 c->peer, s->cfg->max_connections);
    ch_conn_close(c);
    return;
  }
  ch_http_conn_start(c);
}

/* ---- settings from the configuration ------------------------------------ */

static void ch__server_apply_settings(ch_server_t *s, const ch_config_t *cfg) {
  ch_conn_limits.max_outbound = cfg->max_outbound;
  ch_conn_limits.pause_reading = cfg->max_outbound / 4 < (1u << 20) ? cfg->max_outbound / 4 : (1u << 20);

  ch_http_settings.limits.max_header_bytes = cfg->max_header;
  ch_http_settings.limits.max_headers = 100;
  ch_http_settings.limits.max_body = cfg->max_body;
  ch_http_settings.limits.max_url = cfg->max_header / 2 > 8192 ? 8192 : cfg->max_header / 2;
  ch_http_settings.header_timeout_ms = cfg->header_timeout_ms;
  ch_http_settings.keepalive_timeout_ms = 75000;
  ch_http_settings.router = s->router;
  ch_http_settings.app = s;
  ch_http_settings.test_endpoints = cfg->test_endpoints;

  ch_ws_settings.handshake.origins = (const char *const *)cfg->origins.v;
  ch_ws_settings.handshake.norigins = cfg->origins.n;
  ch_ws_settings.handshake.deflate.enabled = cfg->deflate;
  /* Server-side context takeover would pin ~256 KiB of zlib state per connection:
   * compress each message on its own so memory stays flat with many peers. */
  ch_ws_settings.handshake.deflate.server_no_context_takeover = 1;
  ch_ws_settings.handshake.deflate.server_max_window_bits = 15;
  ch_ws_settings.handshake.deflate.client_max_window_bits = 15;
  ch_ws_settings.handshake.deflate.level = cfg->deflate_level;
  ch_ws_settings.handshake.deflate.mem_level = 8;
  ch_ws_settings.handshake.deflate.min_size = cfg->deflate_min_size;
  ch_ws_settings.reader.max_frame = cfg->max_frame;
  ch_ws_settings.reader.max_message = cfg->max_message;
  ch_ws_settings.max_message = cfg->max_message;
  ch_ws_settings.ping_interval_ms = cfg->ping_interval_ms;
  ch_ws_settings.pong_timeout_ms = cfg->pong_timeout_ms;
  ch_ws_settings.close_timeout_ms = 5000;

  ch_sse_settings.heartbeat_ms = cfg->sse_heartbeat_ms;
  ch_sse_settings.retry_ms = 2000;

  ch_client_settings.presence_broadcast_limit = (size_t)cfg->presence_broadcast_limit;
  ch_client_settings.presence_sync_limit = (size_t)cfg->presence_sync_limit;
}

/* ---- shutdown ------------------------------------------------------------ */

static void ch__loop_shutdown_task(ch_loop_t *l, void *arg) {
  if (l->stopping) return;
  l->stopping = 1;
  ch_loop_stop_accepting(l);
  ch_list_t *it, *tmp;
  ch_list_foreach_safe(it, tmp, &l->conns) {
    ch_conn_t *c = CH_LIST_DATA(it, ch_conn_t, node);
    if (c->proto && c->proto->on_shutdown) c->proto->on_shutdown(c);
    else ch_conn_close(c);
  }
}

static void ch__loop_force_stop_task(ch_loop_t *l, void *arg) {
  if (l->stopping == 2) return;
  l->stopping = 2;
  ch_loop_stop(l);
}

static void ch__server_request_stop(ch_server_t *s, const char *why) {
  if (s->stop_requested) {
    ch_log_warn("second %s: stopping now", why);
    for (int i = 0; i < s->nloops; i++) ch_loop_post(s->loops[i], ch__loop_force_stop_task, NULL);
    return;
  }
  s->stop_requested = 1;
  ch_log_info("%s: shutting down (draining for up to %llu ms)", why,
              (unsigned long long)s->cfg->shutdown_timeout_ms);
  for (int i = 0; i < s->nloops; i++) ch_loop_post(s->loops[i], ch__loop_shutdown_task, NULL);
}

static void ch__server_deadline_cb(uv_timer_t *t) {
  ch_server_t *s = t->data;
  for (int i = 0; i < s->nloops; i++) ch_loop_post(s->loops[i], ch__loop_force_stop_task, NULL);
}

static void ch__server_signal_cb(uv_signal_t *h, int signum) {
  ch_server_t *s = h->data;
  ch__server_request_stop(s, signum == SIGINT ? "SIGINT" : "SIGTERM");
  uv_timer_start(&s->deadline, ch__server_deadline_cb, s->cfg->shutdown_timeout_ms, 0);
}

static void ch__server_all_stopped_cb(uv_async_t *h) {
  ch_server_t *s = h->data;
  if (atomic_load(&ch__loops_running) == 0) uv_stop(&s->main_loop);
}

/* Runs on each loop thread after its uv_run returned. */
static void ch__server_loop_thread_done(ch_server_t *s) {
  if (atomic_fetch_sub(&ch__loops_running, 1) == 1) uv_async_send(&s->all_stopped);
}

typedef struct {
  ch_server_t *s;
  ch_loop_t *l;
} ch__thread_arg_t;

/* Drained: each turn, a stopping loop with no connections left stops itself. */
static void ch__server_drain_check(uv_check_t *h) {
  ch_loop_t *l = h->data;
  if (l->stopping == 1 && ch_list_empty(&l->conns)) {
    l->stopping = 2;
    ch_loop_stop(l);
  }
  if (l->stopping == 2) uv_close((uv_handle_t *)h, (uv_close_cb)free);
}

static void ch__server_loop_main(void *arg) {
  ch__thread_arg_t *ta = arg;
  uv_check_t *chk = ch_xmalloc(sizeof(*chk));
  uv_check_init(&ta->l->uv, chk);
  chk->data = ta->l;
  uv_check_start(chk, ch__server_drain_check);
  uv_run(&ta->l->uv, UV_RUN_DEFAULT);
  ch_topic_loop_dispose(ta->l);
  ch__server_loop_thread_done(ta->s);
  free(ta);
}

int ch_server_run(const ch_config_t *cfg) {
  ch_server_t srv;
  ch_server_t *s = &srv;
  memset(s, 0, sizeof(*s));
  s->cfg = cfg;
  s->started_mono_ms = ch_clock_mono_ms();
  s->started_wall_ms = ch_clock_wall_ms();
  int rc = 1;

  signal(SIGPIPE, SIG_IGN);
  if (ch_loop_probe(cfg->listen_host, cfg->listen_port) != 0) {
    ch_log_error("cannot listen on %s:%u (is another hub running there?)", cfg->listen_host, cfg->listen_port);
    return 1;
  }
  if (cfg->tls_cert[0]) {
    ch_buf_t err = CH_BUF_INIT;
    if (ch_tls_setup(cfg->tls_cert, cfg->tls_key, &err) != 0) {
      ch_log_error("TLS: %s", ch_buf_cstr(&err));
      ch_buf_dispose(&err);
      return 1;
    }
  }

  /* Credentials: the signing secret lives in the data directory. */
  ch_buf_t err = CH_BUF_INIT;
  int created = 0;
  if (ch_auth_secret_load(cfg->data_dir, 1, &ch_proto_settings.secret, &created, &err) != 0) {
    ch_log_error("%s", ch_buf_cstr(&err));
    ch_buf_dispose(&err);
    return 1;
  }
  ch_proto_settings.auth_flags = cfg->insecure_dev ? CH_AUTH_INSECURE_DEV : 0;
  if (cfg->insecure_dev)
    ch_log_warn("INSECURE DEV MODE: literal userId:deviceId tokens are accepted as credentials; "
                "never expose this hub beyond your machine");
  if (ch_agents_setup(cfg->agents.v, cfg->agents.n, &err) != 0) {
    fputs(ch_buf_cstr(&err), stderr);
    ch_buf_dispose(&err);
    ch_agents_dispose();
    return 2;
  }
  ch_store_t *store = NULL;
  if (ch_store_open(cfg->data_dir, &store, &err) != 0) {
    ch_log_error("store: %s", ch_buf_cstr(&err));
    ch_buf_dispose(&err);
    ch_agents_dispose();
    return 1;
  }
  ch_buf_dispose(&err);
  static ch_hub_t hub;
  if (ch_hub_start(&hub, store) != 0) {
    ch_log_error("cannot start the hub thread");
    ch_store_close(store);
    ch_agents_dispose();
    return 1;
  }
  ch_hub = &hub;
  if (created) ch__server_first_start(cfg);

  s->router = ch_http_router_new();
  ch_server_routes_ops(s->router);
  ch_server_routes_test(s->router);
  ch_proto_routes_native(s->router);
  ch_proto_routes_rest(s->router);
  ch_proto_routes_devsync(s->router);
  ch_proto_routes_relay(s->router);
  ch_proto_routes_agents(s->router, cfg);
  ch__server_apply_settings(s, cfg);

  int n = cfg->threads > 0 ? cfg->threads : (int)uv_available_parallelism();
  if (n < 1) n = 1;
  s->nloops = n;
  s->loops = ch_xcalloc((size_t)n, sizeof(*s->loops));
  for (int i = 0; i < n; i++) {
    s->loops[i] = ch_xcalloc(1, sizeof(ch_loop_t));
    ch_loop_init(s->loops[i], i, s, ch__server_on_accept);
    if (ch_loop_listen(s->loops[i], cfg->listen_host, cfg->listen_port, 1024) != 0) {
      ch_log_error("cannot listen on %s:%u", cfg->listen_host, cfg->listen_port);
      n = i + 1;
      s->nloops = n;
      goto Exit;
    }
  }
  ch_topic_setup(s->loops, n);

  uv_loop_init(&s->main_loop);
  uv_signal_init(&s->main_loop, &s->sigint);
  uv_signal_init(&s->main_loop, &s->sigterm);
  s->sigint.data = s->sigterm.data = s;
  uv_signal_start(&s->sigint, ch__server_signal_cb, SIGINT);
  uv_signal_start(&s->sigterm, ch__server_signal_cb, SIGTERM);
  uv_timer_init(&s->main_loop, &s->deadline);
  s->deadline.data = s;
  uv_async_init(&s->main_loop, &s->all_stopped, ch__server_all_stopped_cb);
  s->all_stopped.data = s;

  atomic_store(&ch__loops_running, n);
  for (int i = 0; i < n; i++) {
    ch__thread_arg_t *ta = ch_xmalloc(sizeof(*ta));
    ta->s = s;
    ta->l = s->loops[i];
    uv_thread_create(&s->loops[i]->thread, ch__server_loop_main, ta);
  }
  const char *scheme = cfg->tls_cert[0] ? "https" : "http";
  int v6 = strchr(cfg->listen_host, ':') != NULL;
  ch_log_info("chorus %s listening on %s://%s%s%s:%u (%d loop%s)%s", CH_VERSION, scheme,
              v6 ? "[" : "", cfg->listen_host, v6 ? "]" : "", cfg->listen_port, n, n == 1 ? "" : "s",
              cfg->test_endpoints ? " with test endpoints" : "");

  uv_run(&s->main_loop, UV_RUN_DEFAULT);
  /* Every loop has drained. The hub finishes what was submitted (its answers
   * wait in the loops' inboxes), then the loops release those answers. */
  ch_hub_stop(ch_hub);
  for (int i = 0; i < n; i++) ch_loop_join(s->loops[i]);
  ch_log_info("shutdown complete");
  rc = 0;

  uv_close((uv_handle_t *)&s->sigint, NULL);
  uv_close((uv_handle_t *)&s->sigterm, NULL);
  uv_close((uv_handle_t *)&s->deadline, NULL);
  uv_close((uv_handle_t *)&s->all_stopped, NULL);
  uv_run(&s->main_loop, UV_RUN_DEFAULT);
  uv_loop_close(&s->main_loop);
  n = s->nloops;
  goto Free;

Exit:
  for (int i = 0; i < n; i++) {
    ch_loop_stop(s->loops[i]);
    uv_run(&s->loops[i]->uv, UV_RUN_DEFAULT);
    uv_loop_close(&s->loops[i]->uv);
    free(s->loops[i]->rbuf);
  }
Free:
  if (ch_hub && ch_hub->store) ch_hub_stop(ch_hub);
  ch_hub = NULL;
  for (int i = 0; i < n; i++) {
    ch_map_t *reg = s->loops[i]->clients;
    if (reg) {
      ch_map_dispose(reg);
      free(reg);
    }
    free(s->loops[i]);
  }
  free(s->loops);
  ch_http_router_free(s->router);
  ch_tls_teardown();
  ch_agents_dispose();
  ch_auth_secret_dispose(&ch_proto_settings.secret);
  return rc;
}
