/*
 * server.h — HTTP/1.1 on a connection: the first protocol of every socket.
 *
 * Bytes go to the request reader (request.h), which yields one request at a
 * time; the router (router.h) picks a handler; the handler answers, upgrades
 * to WebSocket (ws/session.h) or starts an SSE stream (sse/stream.h).
 *
 *   on_read ─> ch_http_reader_feed ─> request ─> router ─> handler(ctx)
 *                   ▲                                        │ ch_http_reply*()  ─> outq
 *                   └── rest of the bytes (pipelining) ◄─────┘ or upgrade: rest goes to the new protocol
 *
 * Pipelining: while a handler has not answered (an asynchronous handler),
 * unread bytes wait in the connection's `pending` buffer, so responses always
 * leave in request order. Limits: header bytes/count, URL and body size are
 * the reader's; the header-read deadline (slowloris) and the keep-alive idle
 * deadline are checked by the sweep.
 */
#ifndef CH_HTTP_SERVER_H
#define CH_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "http/request.h"
#include "http/router.h"
#include "net/conn.h"

typedef struct ch_http_ctx_s ch_http_ctx_t;
typedef void (*ch_http_handler_cb)(ch_http_ctx_t *x);

/* A route: registered with the router by address (the router stores object pointers). */
typedef struct ch_http_route_s {
  const char *method;  /* "GET", "POST", ... or "*" */
  const char *pattern; /* "/api/chat/:id" */
  ch_http_handler_cb handler;
  int needs_test_endpoints; /* only with --test-endpoints */
} ch_http_route_t;

struct ch_http_ctx_s {
  ch_conn_t *c;           /* NULL once the connection has gone (async handlers) */
  ch_http_req_t *req;     /* owned by the ctx */
  ch_http_match_t match;  /* route parameters */
  void *app;              /* the application (server); not owned */
  int replied;            /* a response (or an upgrade) has been produced */
};

/* Server-wide HTTP settings (set once at start-up). */
typedef struct {
  ch_http_limits_t limits;
  uint64_t header_timeout_ms;    /* request must be complete this long after its first byte */
  uint64_t keepalive_timeout_ms; /* idle keep-alive connections are closed after this */
  ch_http_router_t *router;      /* not owned */
  void *app;                     /* passed to handlers as ctx->app */
  int test_endpoints;
} ch_http_settings_t;
extern ch_http_settings_t ch_http_settings;

/* Install HTTP as the connection's protocol (called on accept). */
void ch_http_conn_start(ch_conn_t *c);

/* Answers. Each may be called once per ctx; for async handlers, at any later
 * time on the connection's loop (a no-op if the connection is gone). After
 * the call the ctx belongs to the HTTP layer again (do not touch it). */
void ch_http_reply(ch_http_ctx_t *x, int status, const char *content_type, const void *body,
                   size_t len, const char *extra_headers);
void ch_http_reply_json(ch_http_ctx_t *x, int status, const char *json, size_t len);
void ch_http_reply_error(ch_http_ctx_t *x, int status, const char *message);

/* For protocol switches (WebSocket, SSE): queue raw bytes and take the
 * connection away from HTTP. The new protocol is installed by the caller
 * with ch_conn_set_proto; bytes after the request are then fed to it. */
void ch__http_detach(ch_http_ctx_t *x);

#endif
