/*
 * server.c — HTTP/1.1 connection protocol (see server.h).
 */
#include "http/server.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"
#include "http/response.h"

ch_http_settings_t ch_http_settings;

typedef struct {
  ch_conn_t *c;
  ch_http_reader_t reader;
  ch_buf_t pending;       /* bytes received while a request was in flight */
  ch_http_ctx_t *inflight;/* request awaiting an async answer, or NULL */
  uint64_t req_start_ms;  /* first byte of the request being read (0: idle) */
  uint64_t idle_since_ms; /* last response finished */
  int keep_alive;         /* of the request in flight */
} ch_http_conn_t;

static int ch__http_on_read(ch_conn_t *c, char *data, size_t len);
static void ch__http_on_sweep(ch_conn_t *c, uint64_t now);
static void ch__http_on_close(ch_conn_t *c);
static void ch__http_on_shutdown(ch_conn_t *c);

static const ch_conn_proto_t ch__http_proto = {
    .name = "http",
    .on_read = ch__http_on_read,
    .on_sweep = ch__http_on_sweep,
    .on_close = ch__http_on_close,
    .on_shutdown = ch__http_on_shutdown,
};

void ch_http_conn_start(ch_conn_t *c) {
  ch_http_conn_t *h = ch_xcalloc(1, sizeof(*h));
  h->c = c;
  ch_http_reader_init(&h->reader, &ch_http_settings.limits);
  h->idle_since_ms = c->loop->now_ms;
  ch_conn_set_proto(c, &ch__http_proto, h);
}

static void ch__http_free(ch_http_conn_t *h) {
  ch_http_reader_dispose(&h->reader);
  ch_buf_dispose(&h->pending);
  free(h);
}

static void ch__http_on_close(ch_conn_t *c) {
  ch_http_conn_t *h = c->proto_state;
  if (h->inflight) h->inflight->c = NULL; /* the async handler answers into the void */
  ch__http_free(h);
}

static void ch__http_on_shutdown(ch_conn_t *c) {
  ch_http_conn_t *h = c->proto_state;
  if (h->inflight == NULL) ch_conn_close(c);
  else h->keep_alive = 0; /* close after the answer */
}

static void ch__http_on_sweep(ch_conn_t *c, uint64_t now) {
  ch_http_conn_t *h = c->proto_state;
  if (h->inflight) return;
  if (h->req_start_ms && now - h->req_start_ms > ch_http_settings.header_timeout_ms) {
    /* Slowloris: the request did not arrive in time. */
    ch_buf_t b = CH_BUF_INIT;
    ch_http_response_error(&b, 408, "request not received in time", 0);
    ch_conn_send(c, ch_buf_to_chunk(&b));
    ch_buf_dispose(&b);
    ch_conn_close_after_flush(c, 1000);
  } else if (!h->req_start_ms && now - h->idle_since_ms > ch_http_settings.keepalive_timeout_ms) {
    ch_conn_close(c);
  }
}

static void ch__http_ctx_free(ch_http_ctx_t *x) {
  ch_http_req_free(x->req);
  free(x);
}

static void ch__http_send_error(ch_conn_t *c, int status, const char *msg) {
  ch_buf_t b = CH_BUF_INIT;
  ch_http_response_error(&b, status, msg, 0);
  ch_conn_send(c, ch_buf_to_chunk(&b));
  ch_buf_dispose(&b);
  ch_conn_close_after_flush(c, 2000);
}

/* RFC 9112 3.2: an HTTP/1.1 request carries exactly one Host, any request at most one. */
static int ch__http_host_ok(const ch_http_req_t *req) {
  size_t n = 0;
  for (size_t i = 0; i < req->nheaders; i++)
    if (strcasecmp(req->headers[i].name, "host") == 0) n++;
  return n == 1 || (n == 0 && req->http_major == 1 && req->http_minor == 0);
}

/* Handle the bytes in data[0..len): as many whole requests as are there. Once
 * an answer has decided to close the connection (Connection: close, HTTP/1.0,
 * an error), the requests behind it are not processed (RFC 9112 9.6). */
static int ch__http_process(ch_http_conn_t *h, char *data, size_t len) {
  ch_conn_t *c = h->c;
  while (len > 0 && !c->closing && !c->close_after_flush) {
    if (h->inflight) {
      ch_buf_append(&h->pending, data, len);
      return 0;
    }
    if (h->req_start_ms == 0) h->req_start_ms = c->loop->now_ms ? c->loop->now_ms : 1;
    size_t used = 0;
    int r = ch_http_reader_feed(&h->reader, data, len, &used);
    if (r == CH_AGAIN) {
      /* Headers done, body awaited: tell an Expect: 100-continue client to go on. */
      if (ch_http_reader_need_continue(&h->reader))
        ch_conn_send_copy(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
      return 0;
    }
    if (r < 0) {
      CH_STAT_ADD(&c->loop->stats, protocol_errors, 1);
      ch__http_send_error(c, ch_http_reader_status(&h->reader), ch_http_reader_error(&h->reader));
      return 0;
    }
    data += used;
    len -= used;
    h->req_start_ms = 0;
    CH_STAT_ADD(&c->loop->stats, http_requests, 1);

    ch_http_ctx_t *x = ch_xcalloc(1, sizeof(*x));
    x->c = c;
    x->req = ch_http_reader_take(&h->reader);
    x->app = ch_http_settings.app;
    h->keep_alive = x->req->keep_alive && !c->loop->stopping;
    h->inflight = x;
    if (!ch__http_host_ok(x->req)) {
      CH_STAT_ADD(&c->loop->stats, protocol_errors, 1);
      h->keep_alive = 0;
      ch_http_reply_error(x, 400, "exactly one Host header field is required");
      continue;
    }

    int m = ch_http_router_match(ch_http_settings.router, x->req->method_name, x->req->path, &x->match);
    const ch_http_route_t *route = m == 0 ? x->match.handler : NULL;
    if (route && route->needs_test_endpoints && !ch_http_settings.test_endpoints) m = CH_ENOTFOUND;
    if (m == 0) {
      route->handler(x);
    } else if (m == CH_EUNSUPPORTED) {
      ch_buf_t allow = CH_BUF_INIT, hdr = CH_BUF_INIT;
      ch_http_router_allow(ch_http_settings.router, x->req->path, &allow);
      ch_buf_printf(&hdr, "Allow: %.*s\r\n", (int)allow.len, allow.base ? allow.base : "");
      ch_buf_t b = CH_BUF_INIT;
      ch_buf_append_str(&b, "{\"success\":false,\"error\":\"method not allowed\"}");
      ch_http_reply(x, 405, "application/json", b.base, b.len, ch_buf_cstr(&hdr));
      ch_buf_dispose(&b);
      ch_buf_dispose(&allow);
      ch_buf_dispose(&hdr);
    } else if (m == CH_ETOOBIG) {
      ch_http_reply_error(x, 414, "path has too many or too long parameters");
    } else {
      ch_http_reply_error(x, 404, "not found");
    }
    if (c->proto != &ch__http_proto) {
      /* Upgraded: the rest of the bytes belong to the new protocol. A refused
       * upgrade left no protocol (proto NULL): its bytes are dropped. */
      return len > 0 && !c->closing && c->proto ? c->proto->on_read(c, data, len) : 0;
    }
  }
  return 0;
}

static int ch__http_on_read(ch_conn_t *c, char *data, size_t len) {
  return ch__http_process(c->proto_state, data, len);
}

static void ch__http_finish(ch_http_ctx_t *x) {
  ch_conn_t *c = x->c;
  ch__http_ctx_free(x);
  if (c == NULL) return;
  ch_http_conn_t *h = c->proto_state;
  h->inflight = NULL;
  h->idle_since_ms = c->loop->now_ms;
  if (!h->keep_alive) {
    ch_conn_close_after_flush(c, 2000);
    return;
  }
  if (h->pending.len && !c->in_read) {
    /* An async answer released the pipeline: process what waited. */
    ch_buf_t rest = h->pending;
    ch_buf_init(&h->pending);
    c->in_read = 1;
    int r = ch__http_process(h, rest.base, rest.len);
    c->in_read = 0;
    ch_buf_dispose(&rest);
    if (r < 0 || c->close_pending) ch_conn_close(c);
  } else if (h->pending.len) {
    ch_buf_t rest = h->pending;
    ch_buf_init(&h->pending);
    ch__http_process(h, rest.base, rest.len);
    ch_buf_dispose(&rest);
  }
}

void ch_http_reply(ch_http_ctx_t *x, int status, const char *content_type, const void *body,
                   size_t len, const char *extra_headers) {
  if (x->c) {
    ch_http_conn_t *h = x->c->proto_state;
    ch_buf_t b = CH_BUF_INIT;
    int head_only = x->req->method_name && strcmp(x->req->method_name, "HEAD") == 0;
    ch_http_response_head(&b, status, content_type, (long long)len, h->keep_alive, extra_headers);
    if (!head_only) ch_buf_append(&b, body, len);
    ch_conn_send(x->c, ch_buf_to_chunk(&b));
    ch_buf_dispose(&b);
  }
  x->replied = 1;
  ch__http_finish(x);
}

void ch_http_reply_json(ch_http_ctx_t *x, int status, const char *json, size_t len) {
  ch_http_reply(x, status, "application/json", json, len, NULL);
}

void ch_http_reply_error(ch_http_ctx_t *x, int status, const char *message) {
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "{\"success\":false,\"error\":\"");
  ch_buf_append_json_str(&b, message, strlen(message));
  ch_buf_append_str(&b, "\"}");
  ch_http_reply_json(x, status, b.base, b.len);
  ch_buf_dispose(&b);
}

void ch__http_detach(ch_http_ctx_t *x) {
  ch_conn_t *c = x->c;
  ch_http_conn_t *h = c->proto_state;
  h->inflight = NULL;
  x->replied = 1;
  ch__http_ctx_free(x);
  /* Bytes that arrived after the request (pending) are handed over by the
   * caller of ch__http_process; the pending buffer is empty here because a
   * protocol switch happens synchronously inside the handler. */
  ch__http_free(h);
  c->proto_state = NULL;
  c->proto = NULL;
}
