/*
 * ops.c — operator endpoints: /health, /api/status, /metrics.
 *
 * /health is the only route open without a credential (load balancers poll
 * it). /api/status answers in the shape the `agent-ws` client profile expects
 * ({"status":"running","version","uptime","health":"ok","timestamp"}) plus
 * connection counts; so does /api/health
 * ({"status":"ok","version","timestamp","connections":{"<agent>":N,...}},
 * counting authenticated agent-ws connections per configured agent); both
 * are open too, as that profile's clients poll them without a key. /metrics
 * is Prometheus text exposition format 0.0.4: totals, then the same counters
 * per loop with a `loop` label, then the agents' usage (read on the hub thread).
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/clock.h"
#include "http/server.h"
#include "core/alloc.h"
#include "hub/hub.h"
#include "proto/proto.h"
#include "server/server.h"

static void ch__ops_health(ch_http_ctx_t *x) {
  static const char body[] = "{\"status\":\"ok\"}";
  ch_http_reply_json(x, 200, body, sizeof(body) - 1);
}

static void ch__ops_api_health(ch_http_ctx_t *x) {
  char ts[CH_ISO8601_LEN + 1];
  ch_clock_iso8601(ch_clock_wall_ms(), ts);
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_printf(&b, "{\"status\":\"ok\",\"version\":\"%s\",\"timestamp\":\"%s\",\"connections\":", CH_VERSION, ts);
  ch_proto_agentws_connections_json(&b);
  ch_buf_append_byte(&b, '}');
  ch_http_reply_json(x, 200, b.base, b.len);
  ch_buf_dispose(&b);
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

typedef struct {
  ch_hub_req_t base;
  ch_http_ctx_t *x;
  uint64_t conversations, messages;
  size_t presence_sets;
  ch_buf_t agents; /* the agents' lines, read on the hub thread */
} ch__metrics_req_t;

static void ch__metrics_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__metrics_req_t *q = (ch__metrics_req_t *)r;
  r->status = h->store->ops->counts(h->store, &q->conversations, &q->messages);
  q->presence_sets = h->presence.count;
  ch_proto_agents_metrics(&q->agents);
}

static void ch__metrics_free(ch_hub_req_t *r) {
  ch__metrics_req_t *q = (ch__metrics_req_t *)r;
  ch_buf_dispose(&q->agents);
  free(q);
}

static void ch__metrics_done(ch_hub_req_t *r);

static void ch__ops_metrics_authed(ch_http_ctx_t *x, const ch_identity_t *id) {
  ch__metrics_req_t *q = ch_xcalloc(1, sizeof(*q));
  q->base.run = ch__metrics_run;
  q->base.done = ch__metrics_done;
  q->base.free_cb = ch__metrics_free;
  q->base.loop = x->c->loop;
  q->x = x;
  ch_hub_submit(ch_hub, &q->base);
}

static void ch__ops_metrics(ch_http_ctx_t *x) { ch_proto_http_authenticate(x, CH_SCOPE_ADMIN, ch__ops_metrics_authed); }

static void ch__metrics_done(ch_hub_req_t *r) {
  ch__metrics_req_t *q = (ch__metrics_req_t *)r;
  ch_http_ctx_t *x = q->x;
  if (x->c == NULL) {
    ch_http_reply_error(x, 500, "gone");
    return;
  }
  ch_server_t *s = x->app;
  ch_buf_t b = CH_BUF_INIT;
  ch_hub_stats_t hs;
  ch_hub_stats(ch_hub, &hs);
  ch_buf_printf(&b,
                "# HELP chorus_conversations Conversations in the store.\n# TYPE chorus_conversations gauge\n"
                "chorus_conversations %llu\n"
                "# HELP chorus_messages Messages in the store.\n# TYPE chorus_messages gauge\nchorus_messages %llu\n"
                "# HELP chorus_presence_sets Conversations and users with someone present.\n"
                "# TYPE chorus_presence_sets gauge\nchorus_presence_sets %zu\n"
                "# HELP chorus_store_batches_total Hub batches committed (one transaction each).\n"
                "# TYPE chorus_store_batches_total counter\nchorus_store_batches_total %llu\n"
                "# HELP chorus_hub_requests_total Requests run by the hub thread.\n"
                "# TYPE chorus_hub_requests_total counter\nchorus_hub_requests_total %llu\n"
                "# HELP chorus_store_batch_size_max Largest batch (requests per transaction).\n"
                "# TYPE chorus_store_batch_size_max gauge\nchorus_store_batch_size_max %llu\n"
                "# HELP chorus_store_commit_seconds Time spent committing batches.\n"
                "# TYPE chorus_store_commit_seconds summary\nchorus_store_commit_seconds_sum %.6f\n"
                "chorus_store_commit_seconds_count %llu\n"
                "# HELP chorus_store_commit_seconds_max Slowest commit.\n"
                "# TYPE chorus_store_commit_seconds_max gauge\nchorus_store_commit_seconds_max %.6f\n"
                "# HELP chorus_store_commit_failures_total Batches whose commit failed.\n"
                "# TYPE chorus_store_commit_failures_total counter\nchorus_store_commit_failures_total %llu\n",
                (unsigned long long)q->conversations, (unsigned long long)q->messages, q->presence_sets,
                (unsigned long long)hs.batches, (unsigned long long)hs.requests, (unsigned long long)hs.batch_max,
                hs.commit_us_total / 1e6, (unsigned long long)hs.batches, hs.commit_us_max / 1e6,
                (unsigned long long)hs.commit_failures);
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
  ch_buf_append(&b, q->agents.base, q->agents.len);
  ch_http_reply(x, 200, "text/plain; version=0.0.4; charset=utf-8", b.base, b.len, NULL);
  ch_buf_dispose(&b);
}

static const ch_http_route_t ch__ops_routes[] = {
    {"GET", "/health", ch__ops_health, 0},
    {"GET", "/api/status", ch__ops_status, 0},
    {"GET", "/api/health", ch__ops_api_health, 0},
    {"GET", "/metrics", ch__ops_metrics, 0},
};

void ch_server_routes_ops(ch_http_router_t *r) {
  for (size_t i = 0; i < sizeof(ch__ops_routes) / sizeof(ch__ops_routes[0]); i++) {
    const ch_http_route_t *rt = &ch__ops_routes[i];
    ch_http_router_add(r, rt->method, rt->pattern, (void *)rt, NULL);
  }
}
