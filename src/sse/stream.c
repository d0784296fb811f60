/*
 * stream.c — SSE stream protocol on a connection (see stream.h).
 */
#include "sse/stream.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "http/response.h"
#include "sse/sse.h"

ch_sse_settings_t ch_sse_settings = {15000, 0};

static int ch__sse_on_read(ch_conn_t *c, char *data, size_t len) { return 0; }

static void ch__sse_on_sweep(ch_conn_t *c, uint64_t now) {
  ch_sse_t *s = c->proto_state;
  if (now - s->last_tx_ms >= ch_sse_settings.heartbeat_ms) {
    ch_buf_t b = CH_BUF_INIT;
    ch_sse_comment(&b, "heartbeat");
    ch_conn_send(c, ch_buf_to_chunk(&b));
    ch_buf_dispose(&b);
    s->last_tx_ms = now;
  }
}

static void ch__sse_on_shutdown(ch_conn_t *c) { ch_conn_close_after_flush(c, 2000); }

static void ch__sse_on_close(ch_conn_t *c) {
  ch_sse_t *s = c->proto_state;
  CH_STAT_SUB(&c->loop->stats, sse_open, 1);
  if (s->h->on_close) s->h->on_close(s);
  free(s);
}

static const ch_conn_proto_t ch__sse_proto = {
    .name = "sse",
    .on_read = ch__sse_on_read,
    .on_sweep = ch__sse_on_sweep,
    .on_shutdown = ch__sse_on_shutdown,
    .on_close = ch__sse_on_close,
};

ch_sse_t *ch_sse_start(ch_http_ctx_t *x, const ch_sse_handler_t *h, void *udata) {
  ch_conn_t *c = x->c;
  ch_sse_t *s = ch_xcalloc(1, sizeof(*s));
  s->c = c;
  s->h = h;
  s->udata = udata;
  s->last_tx_ms = c->loop->now_ms;
  const char *lei = ch_http_req_header(x->req, "last-event-id");
  if (lei && ch_sse_last_event_id(lei, &s->last_event_id) == 0) s->has_last_event_id = 1;

  ch_buf_t b = CH_BUF_INIT;
  ch_http_response_head(&b, 200, "text/event-stream", -1, 0,
                        "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
  if (ch_sse_settings.retry_ms) ch_sse_retry(&b, ch_sse_settings.retry_ms);
  ch_conn_send(c, ch_buf_to_chunk(&b));
  ch_buf_dispose(&b);
  ch__http_detach(x);
  ch_conn_set_proto(c, &ch__sse_proto, s);
  CH_STAT_ADD(&c->loop->stats, sse_open, 1);
  return s;
}

int ch_sse_send(ch_sse_t *s, const char *id, const char *event, const char *data, size_t len) {
  ch_buf_t b = CH_BUF_INIT;
  ch_sse_event(&b, id, event, data, len);
  s->last_tx_ms = s->c->loop->now_ms;
  int r = ch_conn_send(s->c, ch_buf_to_chunk(&b));
  ch_buf_dispose(&b);
  return r;
}

int ch_sse_send_chunk(ch_sse_t *s, ch_chunk_t *k) {
  s->last_tx_ms = s->c->loop->now_ms;
  return ch_conn_send(s->c, ch_chunk_ref(k));
}

void ch_sse_end(ch_sse_t *s) { ch_conn_close_after_flush(s->c, 2000); }
