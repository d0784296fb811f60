/*
 * session.h — a WebSocket connection: the session layer over the pure codec.
 *
 *   socket bytes ─> ch_ws_reader (frame.c/reader.c: masks, fragments, UTF-8, limits)
 *                      ├─ data message ─> [inflate (deflate.c)] ─> [UTF-8 check] ─> handler.on_message
 *                      └─ control ─────> ping: pong │ pong: alive │ close: close handshake
 *   handler ─> ch_ws_send (encode once, [deflate]) ─> ch_conn_send ─> outq
 *   broadcast ─> ch_ws_send_frame(shared pre-encoded chunk) ─> outq (no copy)
 *
 * The close handshake follows RFC 6455 7: whoever sends the first close frame
 * waits for the peer's; the server closes TCP once both are exchanged (or
 * after a deadline). Protocol violations answer with the reader's close code
 * (1002, 1007, 1009) and a reason naming the problem. A slow consumer is
 * closed with 1013.
 *
 * Control frames bypass the data queue: pings we send and pongs we answer
 * with are queued urgent (ch_conn_send_urgent), ahead of any data not yet
 * started, so a peer with seconds of backlog still hears a ping at once and
 * its pong comes back in time. Behind a backlog, pongs coalesce: only the
 * latest ping is answered (RFC 6455 5.5.3). The 101 and close frames are
 * ORDERED: nothing overtakes them, and data queued before a close is
 * delivered before it.
 *
 * Keep-alive: a peer silent (no byte received) for ping_interval is pinged;
 * one silent for pong_timeout is dropped, counted in ws_pong_timeouts and
 * logged at info with its silence and queued bytes. While a pong is awaited
 * and reading is paused for backpressure, one read per sweep still happens
 * (ch_conn_read_once) so the pong can be heard.
 *
 * The handler's on_close runs exactly once, when the connection goes away,
 * and is where the application frees its per-connection state (udata).
 */
#ifndef CH_WS_SESSION_H
#define CH_WS_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "http/server.h"
#include "net/conn.h"
#include "ws/deflate.h"
#include "ws/frame.h"
#include "ws/handshake.h"
#include "ws/reader.h"

typedef struct ch_ws_s ch_ws_t;

typedef struct ch_ws_handler_s {
  const char *name;
  /* The 101 has been queued. May send, may close. */
  void (*on_open)(ch_ws_t *ws);
  /* A whole message; text is valid UTF-8. data is valid during the call only. */
  void (*on_message)(ch_ws_t *ws, int opcode, const char *data, size_t len);
  /* The connection is going away (any reason). Free udata here. */
  void (*on_close)(ch_ws_t *ws);
  /* Once a second while open (optional): the handler's own deadlines. */
  void (*on_sweep)(ch_ws_t *ws, uint64_t now_ms);
  const char *const *protocols; /* subprotocols offered by this endpoint, or NULL */
  size_t nprotocols;
} ch_ws_handler_t;

struct ch_ws_s {
  ch_conn_t *c;                 /* the connection; not owned */
  const ch_ws_handler_t *h;     /* static */
  void *udata;                  /* the handler's, freed in on_close */
  ch_ws_deflate_t *deflate;     /* owned; NULL unless permessage-deflate was negotiated */
  const char *protocol;         /* negotiated subprotocol (static string) or NULL */
  uint64_t last_rx_ms;          /* last byte received */
  uint64_t ping_sent_ms;        /* 0: no ping outstanding */
  uint16_t close_code;          /* code we sent or received */
  unsigned close_sent : 1;
  unsigned close_received : 1;
  ch_ws_reader_t reader;
};

typedef struct {
  ch_ws_handshake_cfg_t handshake; /* origins + deflate policy (protocols come per handler) */
  ch_ws_reader_cfg_t reader;       /* frame/message limits */
  size_t max_message;              /* limit after inflating */
  uint64_t ping_interval_ms;
  uint64_t pong_timeout_ms;
  uint64_t close_timeout_ms;       /* wait this long for the peer's close frame */
} ch_ws_settings_t;
extern ch_ws_settings_t ch_ws_settings;

/* Validate the upgrade request and switch the connection to WebSocket.
 * On a bad handshake, answers 400/403/426 with a JSON reason and returns
 * CH_EPROTO (the ctx is consumed either way). udata goes to the handler. */
int ch_ws_accept(ch_http_ctx_t *x, const ch_ws_handler_t *h, void *udata);

/* Encode and queue one message (compressed when negotiated and worth it). */
int ch_ws_send(ch_ws_t *ws, int opcode, const void *data, size_t len);
static inline int ch_ws_send_text(ch_ws_t *ws, const char *s, size_t len) {
  return ch_ws_send(ws, CH_WS_OP_TEXT, s, len);
}
/* Queue a pre-encoded frame shared with other connections (borrowed: a
 * reference is taken). */
int ch_ws_send_frame(ch_ws_t *ws, ch_chunk_t *frame);
/* Start the close handshake. */
void ch_ws_close(ch_ws_t *ws, uint16_t code, const char *reason);

#endif
