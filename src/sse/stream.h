/*
 * stream.h — a Server-Sent Events stream on an HTTP connection.
 *
 * ch_sse_start() answers the request with `200 text/event-stream` (no
 * Content-Length; the stream ends when either side closes) and takes the
 * connection away from HTTP. Events are encoded by sse.c; a broadcast event
 * can be encoded once and queued on many streams with ch_sse_send_chunk().
 * The sweep sends a comment line as a heartbeat when the stream has been
 * quiet for `heartbeat_ms`, which also detects vanished clients. Anything the
 * client sends after the request is ignored; its EOF closes the stream.
 */
#ifndef CH_SSE_STREAM_H
#define CH_SSE_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "http/server.h"

typedef struct ch_sse_s ch_sse_t;

typedef struct ch_sse_handler_s {
  const char *name;
  /* The stream is going away (client left, shutdown). Free udata here. */
  void (*on_close)(ch_sse_t *s);
} ch_sse_handler_t;

struct ch_sse_s {
  ch_conn_t *c;               /* not owned */
  const ch_sse_handler_t *h;  /* static */
  void *udata;                /* the handler's */
  uint64_t last_tx_ms;        /* last bytes queued (heartbeat clock) */
  uint64_t last_event_id;     /* from the Last-Event-ID header */
  int has_last_event_id;      /* the header was present and a valid number */
};

typedef struct {
  uint64_t heartbeat_ms;
  unsigned retry_ms; /* "retry:" advertised at start (0: none) */
} ch_sse_settings_t;
extern ch_sse_settings_t ch_sse_settings;

/* Answer with the event-stream head and switch protocol. The ctx is consumed.
 * Returns the stream (owned by the connection; valid until on_close). */
ch_sse_t *ch_sse_start(ch_http_ctx_t *x, const ch_sse_handler_t *h, void *udata);
int ch_sse_send(ch_sse_t *s, const char *id, const char *event, const char *data, size_t len);
/* Queue a pre-encoded event (borrowed: a reference is taken). */
int ch_sse_send_chunk(ch_sse_t *s, ch_chunk_t *k);
/* End the stream after what is queued. */
void ch_sse_end(ch_sse_t *s);

#endif
