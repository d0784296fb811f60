/*
 * ops.c — operator endpoints: /health, /api/status, /metrics.
 *
 * /health is the only route open without a credential (load balancers poll
 * it). /api/status answers in the shape the `agent-ws` client profile expects
 * ({"status":"running","version","uptime","health":"ok","timestamp"}) plus
 * connection counts. /metrics is Prometheus text exposition format 0.0.4:
 * totals, then the same counters per loop with a `loop` label.
 */
#include <stddef.h>
#include <string.h>

#include "core/buf.h"
#include "core/clock.h"
#include "http/server.h"
#include "server/server.h"

static void ch__ops_health(ch_http_ctx_t *x) {
  static const char body[] = "{\"status\":\"ok\"}";
  ch_http_reply_json(x, 200, body, sizeof(body) - 1);
}

static void ch__ops_status(ch_http_ctx_t *x) {
  ch_server_t *s = x->app;
  char ts[CH_ISO8601_LEN + 1];
  ch_clock_iso8601(ch_clock_wall_ms(), ts);
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_printf(&b,
                "{\"status\":\"running\",\"version\":\"%s\",\"uptime\":%llu,\"health\":\"ok\","
                "\"timestamp\":\"%s\",\"loops\":%d,\"connections\":{\"total\":%llu,"
                "\"websocket\":%llu,\"sse\":%llu}}",
                CH_VERSION, (unsigned long long)((ch_clock_mono_ms() - s->started_mono_ms) / 1000), ts,
                s->nloops, (unsigned long long)CH_SERVER_STAT(s, conns_open),
                (unsigned long long)CH_SERVER_STAT(s, ws_open),
                (unsigned long long)CH_SERVER_STAT(s, sse_open));
  ch_http_reply_json(x, 200, b.base, b.len);
  ch_buf_dispose(&b);
}

static void ch__ops_metrics(ch_http_ctx_t *x) {
  ch_server_t *s = x->app;
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_printf(&b, "# HELP chorus_uptime_seconds Seconds since the hub started.\n"
                    "# TYPE chorus_uptime_seconds gauge\nchorus_uptime_seconds %llu\n",
                (unsigned long long)((ch_clock_mono_ms() - s->started_mono_ms) / 1000));
  ch_buf_printf(&b, "# HELP chorus_loops Event loops (threads).\n# TYPE chorus_loops gauge\n"
                    "chorus_loops %d\n",
                s->nloops);
#define CH__METRIC(name, type, help)                                                             \
  ch_buf_printf(&b, "# HELP chorus_" #name " " help ".\n# TYPE chorus_" #name " %s\n",           \
                strcmp(#type, "counter") == 0 ? "counter" : "gauge");                             \
  ch_buf_printf(&b, "chorus_" #name " %llu\n", (unsigned long long)CH_SERVER_STAT(s, name));      \
  for (int i = 0; i < s->nloops; i++)                                                            \
    ch_buf_printf(&b, "chorus_" #name "{loop=\"%d\"} %llu\n", i,                                 \
                  (unsigned long long)CH_STAT_GET(&s->loops[i]->stats, name));
  CH_LOOP_STATS(CH__METRIC)
#undef CH__METRIC
  ch_http_reply(x, 200, "text/plain; version=0.0.4; charset=utf-8", b.base, b.len, NULL);
  ch_buf_dispose(&b);
}

static const ch_http_route_t ch__ops_routes[] = {
    {"GET", "/health", ch__ops_health, 0},
    {"GET", "/api/status", ch__ops_status, 0},
    {"GET", "/metrics", ch__ops_metrics, 0},
};

void ch_server_routes_ops(ch_http_router_t *r) {
  for (size_t i = 0; i < sizeof(ch__ops_routes) / sizeof(ch__ops_routes[0]); i++) {
    const ch_http_route_t *rt = &ch__ops_routes[i];
    ch_http_router_add(r, rt->method, rt->pattern, (void *)rt, NULL);
  }
}
