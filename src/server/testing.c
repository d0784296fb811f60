/*
 * testing.c — endpoints for conformance suites and benchmarks, only with
 * --test-endpoints (off by default; they answer 404 otherwise).
 *
 *   /echo                WebSocket: every message back unchanged (same opcode).
 *                        Plain GET: an SSE stream of numbered ticks
 *                        (?count=N, ?interval_ms=M), resuming after Last-Event-ID.
 *   /bench/sub?channel=C WebSocket receiving, verbatim, every payload published to C.
 *   /bench/pub?channel=C WebSocket whose every message — or POST whose body — is
 *                        broadcast verbatim to C through the topic primitive:
 *                        encoded once into one frame, shared by every subscriber.
 *                        A POST body goes out as text, or as binary if it is
 *                        not valid UTF-8. A plain GET on either answers 426.
 */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "hub/topic.h"
#include "http/server.h"
#include "server/server.h"
#include "sse/stream.h"
#include "ws/session.h"
#include "ws/utf8.h"

#define CH__TOPIC_PREFIX "bench:"

/* A WebSocket opening handshake was attempted: a complete one (Upgrade plus
 * Connection: upgrade) or a broken one that still names WebSocket. The broken
 * ones go to ch_ws_accept too, which refuses them with 400 (RFC 6455 4.2.1)
 * instead of serving them as plain GETs. */
static int ch__wants_ws(ch_http_ctx_t *x) {
  return x->req->upgrade || ch_http_req_header(x->req, "upgrade") != NULL ||
         ch_http_req_header(x->req, "sec-websocket-key") != NULL;
}

/* ---- /echo ---------------------------------------------------------------- */

static void ch__echo_message(ch_ws_t *ws, int opcode, const char *data, size_t len) {
  ch_ws_send(ws, opcode, data, len);
}

static const ch_ws_handler_t ch__echo_ws = {.name = "echo", .on_message = ch__echo_message};

typedef struct {
  uint64_t next;      /* next tick number */
  uint64_t remaining; /* ticks left to send */
  uv_timer_t timer;
  ch_sse_t *sse;
} ch__ticks_t;

static void ch__ticks_free(uv_handle_t *h) { free(h->data); }

static void ch__ticks_cb(uv_timer_t *t) {
  ch__ticks_t *k = t->data;
  char id[24], data[64];
  snprintf(id, sizeof(id), "%llu", (unsigned long long)k->next);
  int n = snprintf(data, sizeof(data), "{\"tick\":%llu}", (unsigned long long)k->next);
  ch_sse_send(k->sse, id, "tick", data, (size_t)n);
  k->next++;
  if (--k->remaining == 0) {
    uv_timer_stop(t);
    ch_sse_end(k->sse);
  }
}

static void ch__ticks_close(ch_sse_t *s) {
  ch__ticks_t *k = s->udata;
  uv_timer_stop(&k->timer);
  uv_close((uv_handle_t *)&k->timer, ch__ticks_free);
}

static const ch_sse_handler_t ch__ticks_sse = {.name = "ticks", .on_close = ch__ticks_close};

static uint64_t ch__query_u64(ch_http_req_t *req, const char *key, uint64_t def, uint64_t max) {
  char *v = ch_http_req_query_param(req, key);
  if (v == NULL || *v == '\0') return def;
  char *end;
  unsigned long long n = strtoull(v, &end, 10);
  if (*end != '\0') return def;
  return n > max ? max : n;
}

static void ch__echo(ch_http_ctx_t *x) {
  if (ch__wants_ws(x)) {
    ch_ws_accept(x, &ch__echo_ws, NULL);
    return;
  }
  uint64_t count = ch__query_u64(x->req, "count", 10, 1000000);
  uint64_t interval = ch__query_u64(x->req, "interval_ms", 100, 60000);
  if (count == 0) {
    ch_http_reply_error(x, 400, "count must be at least 1");
    return;
  }
  ch__ticks_t *k = ch_xcalloc(1, sizeof(*k));
  ch_loop_t *l = x->c->loop;
  k->sse = ch_sse_start(x, &ch__ticks_sse, k);
  k->next = k->sse->has_last_event_id ? k->sse->last_event_id + 1 : 1;
  k->remaining = count;
  uv_timer_init(&l->uv, &k->timer);
  k->timer.data = k;
  uv_timer_start(&k->timer, ch__ticks_cb, interval, interval ? interval : 1);
}

/* ---- /bench/sub, /bench/pub ---------------------------------------------- */

typedef struct {
  ch_topic_sub_t sub;
  ch_ws_t *ws;
  ch_buf_t topic; /* "bench:<channel>" */
} ch__bench_conn_t;

static void ch__bench_deliver(ch_topic_sub_t *s, ch_topic_item_t *it) {
  ch__bench_conn_t *b = CH_LIST_DATA(s, ch__bench_conn_t, sub);
  ch_ws_send_frame(b->ws, ((ch_topic_frame_t *)it)->frame);
}

static void ch__bench_sub_open(ch_ws_t *ws) {
  ch__bench_conn_t *b = ws->udata;
  b->ws = ws;
  b->sub.deliver = ch__bench_deliver;
  ch_topic_subscribe(ws->c->loop, b->topic.base, b->topic.len, &b->sub);
}

static void ch__bench_close(ch_ws_t *ws) {
  ch__bench_conn_t *b = ws->udata;
  if (b == NULL) return;
  if (b->sub.topic) ch_topic_unsubscribe(ws->c->loop, &b->sub);
  ch_buf_dispose(&b->topic);
  free(b);
}

static void ch__bench_publish(const ch_buf_t *topic, int opcode, const char *data, size_t len) {
  uint8_t hdr[14];
  size_t hl = ch_ws_frame_header(hdr, 1, 0, opcode, len, NULL);
  ch_chunk_t *frame = ch_chunk_new(hl + len);
  memcpy(frame->data, hdr, hl);
  if (len) memcpy(frame->data + hl, data, len);
  ch_topic_publish(topic->base, topic->len, ch_topic_frame_new(frame));
}

static void ch__bench_pub_message(ch_ws_t *ws, int opcode, const char *data, size_t len) {
  ch__bench_conn_t *b = ws->udata;
  ch__bench_publish(&b->topic, opcode, data, len);
}

static const ch_ws_handler_t ch__bench_sub_ws = {
    .name = "bench-sub", .on_open = ch__bench_sub_open, .on_close = ch__bench_close};
static const ch_ws_handler_t ch__bench_pub_ws = {
    .name = "bench-pub", .on_message = ch__bench_pub_message, .on_close = ch__bench_close};

static int ch__bench_topic(ch_http_ctx_t *x, ch_buf_t *topic) {
  char *ch = ch_http_req_query_param(x->req, "channel");
  if (ch == NULL || *ch == '\0') {
    ch_http_reply_error(x, 400, "query parameter 'channel' is required");
    return -1;
  }
  if (strlen(ch) > 256) {
    ch_http_reply_error(x, 400, "channel name longer than 256 bytes");
    return -1;
  }
  ch_buf_init(topic);
  ch_buf_append_str(topic, CH__TOPIC_PREFIX);
  ch_buf_append_str(topic, ch);
  return 0;
}

static void ch__bench_ws(ch_http_ctx_t *x, const ch_ws_handler_t *h) {
  ch_buf_t topic;
  if (ch__bench_topic(x, &topic) != 0) return;
  if (!ch__wants_ws(x)) {
    ch_buf_dispose(&topic);
    /* RFC 7231 6.5.15: a 426 names the protocol to upgrade to. */
    static const char body[] = "{\"success\":false,\"error\":\"WebSocket upgrade required\"}";
    ch_http_reply(x, 426, "application/json", body, sizeof(body) - 1,
                  "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    return;
  }
  ch__bench_conn_t *b = ch_xcalloc(1, sizeof(*b));
  ch_list_init(&b->sub.node);
  b->topic = topic;
  ch_ws_accept(x, h, b);
}

static void ch__bench_sub(ch_http_ctx_t *x) { ch__bench_ws(x, &ch__bench_sub_ws); }

static void ch__bench_pub(ch_http_ctx_t *x) {
  if (strcmp(x->req->method_name, "POST") != 0) {
    ch__bench_ws(x, &ch__bench_pub_ws);
    return;
  }
  ch_buf_t topic;
  if (ch__bench_topic(x, &topic) != 0) return;
  const char *data = x->req->body.base ? x->req->body.base : "";
  /* A body that is not UTF-8 cannot be a text frame (RFC 6455 5.6): send it as binary. */
  int opcode = ch_utf8_valid((const uint8_t *)data, x->req->body.len) ? CH_WS_OP_TEXT : CH_WS_OP_BINARY;
  ch__bench_publish(&topic, opcode, data, x->req->body.len);
  ch_buf_dispose(&topic);
  static const char body[] = "{\"success\":true}";
  ch_http_reply_json(x, 202, body, sizeof(body) - 1);
}

static const ch_http_route_t ch__test_routes[] = {
    {"GET", "/echo", ch__echo, 1},
    {"GET", "/bench/sub", ch__bench_sub, 1},
    {"GET", "/bench/pub", ch__bench_pub, 1},
    {"POST", "/bench/pub", ch__bench_pub, 1},
};

void ch_server_routes_test(ch_http_router_t *r) {
  for (size_t i = 0; i < sizeof(ch__test_routes) / sizeof(ch__test_routes[0]); i++) {
    const ch_http_route_t *rt = &ch__test_routes[i];
    ch_http_router_add(r, rt->method, rt->pattern, (void *)rt, NULL);
  }
}
