/*
 * session.c — WebSocket session over a connection (see session.h).
 */
#include "ws/session.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"
#include "ws/utf8.h"

ch_ws_settings_t ch_ws_settings;

static int ch__ws_on_read(ch_conn_t *c, char *data, size_t len);
static void ch__ws_on_sweep(ch_conn_t *c, uint64_t now);
static ch_chunk_t *ch__ws_on_overflow(ch_conn_t *c);
static void ch__ws_on_shutdown(ch_conn_t *c);
static void ch__ws_on_close(ch_conn_t *c);

static const ch_conn_proto_t ch__ws_proto = {
    .name = "ws",
    .on_read = ch__ws_on_read,
    .on_sweep = ch__ws_on_sweep,
    .on_overflow = ch__ws_on_overflow,
    .on_shutdown = ch__ws_on_shutdown,
    .on_close = ch__ws_on_close,
};

static int ch__ws_message_cb(void *ud, int opcode, int compressed, const uint8_t *data, size_t len);
static int ch__ws_control_cb(void *ud, int opcode, const uint8_t *data, size_t len);
static const ch_ws_reader_cb_t ch__ws_reader_cb = {ch__ws_message_cb, ch__ws_control_cb};

int ch_ws_accept(ch_http_ctx_t *x, const ch_ws_handler_t *h, void *udata) {
  ch_http_req_t *req = x->req;
  ch_ws_handshake_req_t hr = {
      .method = req->method_name,
      .http_major = req->http_major,
      .http_minor = req->http_minor,
      .host = ch_http_req_header(req, "host"),
      .upgrade = ch_http_req_header_joined(req, "upgrade"),
      .connection = ch_http_req_header_joined(req, "connection"),
      .key = ch_http_req_header(req, "sec-websocket-key"),
      .version = ch_http_req_header(req, "sec-websocket-version"),
      .origin = ch_http_req_header(req, "origin"),
      .protocol = ch_http_req_header_joined(req, "sec-websocket-protocol"),
      .extensions = ch_http_req_header_joined(req, "sec-websocket-extensions"),
  };
  ch_ws_handshake_cfg_t cfg = ch_ws_settings.handshake;
  cfg.protocols = h->protocols;
  cfg.nprotocols = h->nprotocols;
  ch_ws_handshake_res_t res;
  ch_buf_t b = CH_BUF_INIT;
  if (ch_ws_handshake_check(&hr, &cfg, &res) != 0) {
    ch_ws_handshake_error_response(&res, &b);
    ch_conn_t *c = x->c;
    ch_conn_send(c, ch_buf_to_chunk(&b));
    ch_buf_dispose(&b);
    ch__http_detach(x);
    ch_conn_close_after_flush(c, 2000);
    if (h->on_close) {
      /* The handler never saw an open: let it release udata all the same. */
      ch_ws_t tmp = {.c = c, .h = h, .udata = udata};
      h->on_close(&tmp);
    }
    return CH_EPROTO;
  }
  ch_ws_handshake_response(&res, &b);
  ch_conn_t *c = x->c;
  /* ORDERED: a pong answering a ping pipelined behind the upgrade request
   * must not overtake the 101. */
  ch_conn_send_flags(c, ch_buf_to_chunk(&b), CH_CONN_SEND_ORDERED);
  ch_buf_dispose(&b);
  ch__http_detach(x);

  ch_ws_t *ws = ch_xcalloc(1, sizeof(*ws));
  ws->c = c;
  ws->h = h;
  ws->udata = udata;
  ws->protocol = res.protocol;
  ws->last_rx_ms = c->loop->now_ms;
  ch_ws_reader_cfg_t rc = ch_ws_settings.reader;
  rc.is_client = 0;
  rc.allow_rsv1 = res.deflate.enabled;
  ch_ws_reader_init(&ws->reader, &rc, &ch__ws_reader_cb, ws);
  if (res.deflate.enabled) {
    ws->deflate = ch_ws_deflate_new(&res.deflate, 1, ch_ws_settings.handshake.deflate.level,
                                    ch_ws_settings.handshake.deflate.mem_level);
  }
  ch_conn_set_proto(c, &ch__ws_proto, ws);
  CH_STAT_ADD(&c->loop->stats, ws_open, 1);
  if (h->on_open) h->on_open(ws);
  return 0;
}

static void ch__ws_on_close(ch_conn_t *c) {
  ch_ws_t *ws = c->proto_state;
  CH_STAT_SUB(&c->loop->stats, ws_open, 1);
  if (ws->h->on_close) ws->h->on_close(ws);
  ch_ws_reader_dispose(&ws->reader);
  ch_ws_deflate_free(ws->deflate);
  free(ws);
}

static ch_chunk_t *ch__ws_encode(ch_ws_t *ws, int opcode, const void *data, size_t len) {
  uint8_t hdr[14];
  if (ws->deflate && (opcode == CH_WS_OP_TEXT || opcode == CH_WS_OP_BINARY) &&
      len >= ch_ws_settings.handshake.deflate.min_size) {
    ch_buf_t z = CH_BUF_INIT;
    if (ch_ws_deflate_compress(ws->deflate, data, len, &z) == 0) {
      size_t hl = ch_ws_frame_header(hdr, 1, 1, opcode, z.len, NULL);
      ch_chunk_t *k = ch_chunk_new(hl + z.len);
      memcpy(k->data, hdr, hl);
      if (z.len) memcpy(k->data + hl, z.base, z.len);
      ch_buf_dispose(&z);
      return k;
    }
    ch_buf_dispose(&z);
  }
  size_t hl = ch_ws_frame_header(hdr, 1, 0, opcode, len, NULL);
  ch_chunk_t *k = ch_chunk_new(hl + len);
  memcpy(k->data, hdr, hl);
  if (len) memcpy(k->data + hl, data, len);
  return k;
}

int ch_ws_send(ch_ws_t *ws, int opcode, const void *data, size_t len) {
  if (ws->close_sent) return CH_ECLOSED;
  CH_STAT_ADD(&ws->c->loop->stats, frames_out, 1);
  return ch_conn_send(ws->c, ch__ws_encode(ws, opcode, data, len));
}

int ch_ws_send_frame(ch_ws_t *ws, ch_chunk_t *frame) {
  if (ws->close_sent) return CH_ECLOSED;
  CH_STAT_ADD(&ws->c->loop->stats, frames_out, 1);
  return ch_conn_send(ws->c, ch_chunk_ref(frame));
}

void ch_ws_close(ch_ws_t *ws, uint16_t code, const char *reason) {
  if (ws->close_sent) return;
  ws->close_sent = 1;
  ws->close_code = code;
  /* A close frame stays behind the data queued before it (and no urgent
   * frame follows it: pings and pongs stop once close_sent is set). */
  ch_conn_send_flags(ws->c, ch_ws_close_frame(code, reason), CH_CONN_SEND_ORDERED);
  if (ws->close_received) {
    ch_conn_close_after_flush(ws->c, ch_ws_settings.close_timeout_ms);
  } else {
    /* Wait for the peer's close frame, but not for ever. */
    ws->c->close_deadline_ms = ws->c->loop->now_ms + ch_ws_settings.close_timeout_ms;
  }
}

static void ch__ws_fail(ch_ws_t *ws, uint16_t code, const char *reason) {
  CH_STAT_ADD(&ws->c->loop->stats, protocol_errors, 1);
  ch_log_debug("ws conn %llu (%s): closing %u: %s", (unsigned long long)ws->c->id, ws->c->peer,
               code, reason);
  ws->close_received = 1; /* do not wait for the peer: the stream is unusable */
  ch_ws_close(ws, code, reason);
  ch_conn_close_after_flush(ws->c, 1000);
}

static int ch__ws_message_cb(void *ud, int opcode, int compressed, const uint8_t *data, size_t len) {
  ch_ws_t *ws = ud;
  if (ws->close_sent || ws->c->closing) return CH_ECLOSED;
  CH_STAT_ADD(&ws->c->loop->stats, frames_in, 1);
  ch_buf_t plain = CH_BUF_INIT;
  if (compressed) {
    int r = ws->deflate ? ch_ws_deflate_inflate(ws->deflate, data, len, ch_ws_settings.max_message, &plain)
                        : CH_EPROTO;
    if (r == CH_ETOOBIG) {
      ch_buf_dispose(&plain);
      ch__ws_fail(ws, CH_WS_CLOSE_TOO_BIG, "message too large");
      return CH_ECLOSED;
    }
    if (r < 0) {
      ch_buf_dispose(&plain);
      ch__ws_fail(ws, CH_WS_CLOSE_PROTOCOL, "invalid compressed data");
      return CH_ECLOSED;
    }
    data = (const uint8_t *)plain.base;
    len = plain.len;
    if (opcode == CH_WS_OP_TEXT && !ch_utf8_valid(data, len)) {
      ch_buf_dispose(&plain);
      ch__ws_fail(ws, CH_WS_CLOSE_INVALID_DATA, "invalid UTF-8");
      return CH_ECLOSED;
    }
  }
  if (ws->h->on_message) ws->h->on_message(ws, opcode, (const char *)(data ? data : (const uint8_t *)""), len);
  ch_buf_dispose(&plain);
  return ws->c->closing || ws->close_sent ? CH_ECLOSED : 0;
}

static int ch__ws_control_cb(void *ud, int opcode, const uint8_t *data, size_t len) {
  ch_ws_t *ws = ud;
  switch (opcode) {
  case CH_WS_OP_PING:
    if (!ws->close_sent) {
      uint8_t hdr[14];
      size_t hl = ch_ws_frame_header(hdr, 1, 0, CH_WS_OP_PONG, len, NULL);
      ch_chunk_t *k = ch_chunk_new(hl + len);
      memcpy(k->data, hdr, hl);
      if (len) memcpy(k->data + hl, data, len);
      /* Ahead of queued data; behind a backlog only the latest ping may get its pong. */
      ch_conn_send_flags(ws->c, k, CH_CONN_SEND_URGENT | CH_CONN_SEND_COALESCE);
    }
    break;
  case CH_WS_OP_PONG:
    ws->ping_sent_ms = 0;
    break;
  case CH_WS_OP_CLOSE: {
    ws->close_received = 1;
    uint16_t code = len >= 2 ? (uint16_t)(data[0] << 8 | data[1]) : CH_WS_CLOSE_NO_STATUS;
    if (ws->close_sent) {
      /* Our close was answered: the handshake is complete. */
      ch_conn_close(ws->c);
    } else {
      /* Echo the peer's code and reason (RFC 6455 5.5.1); 1005 is never sent on the wire. */
      char reason[CH_WS_MAX_CONTROL];
      size_t rlen = len > 2 ? len - 2 : 0;
      if (rlen) memcpy(reason, data + 2, rlen);
      reason[rlen] = '\0';
      ch_ws_close(ws, code == CH_WS_CLOSE_NO_STATUS ? 0 : code, rlen ? reason : NULL);
      ch_conn_close_after_flush(ws->c, ch_ws_settings.close_timeout_ms);
    }
    return CH_ECLOSED;
  }
  }
  return 0;
}

static int ch__ws_on_read(ch_conn_t *c, char *data, size_t len) {
  ch_ws_t *ws = c->proto_state;
  ws->last_rx_ms = c->loop->now_ms;
  if (ws->close_received) return 0;
  int r = ch_ws_reader_feed(&ws->reader, (uint8_t *)data, len);
  if (r < 0 && r != CH_ECLOSED && !ws->close_sent) {
    ch__ws_fail(ws, ch_ws_reader_close_code(&ws->reader), ch_ws_reader_error(&ws->reader));
  }
  return 0;
}

/* Pong-timeout drops are logged at info, at most CH__WS_DROP_LOGS per loop
 * per sweep: a network outage may drop thousands of peers at once, and the
 * counter (ws_pong_timeouts) has the full number. */
#define CH__WS_DROP_LOGS 10
static _Thread_local uint64_t ch__ws_drop_sweep_ms; /* sweep (loop time) of the drops being counted */
static _Thread_local unsigned ch__ws_drop_logged;     /* lines logged in that sweep */
static _Thread_local uint64_t ch__ws_drop_unlogged;   /* drops not logged since the last line */

static void ch__ws_log_pong_timeout(ch_conn_t *c, uint64_t now, uint64_t silent) {
  if (now != ch__ws_drop_sweep_ms) {
    ch__ws_drop_sweep_ms = now;
    ch__ws_drop_logged = 0;
  }
  if (ch__ws_drop_logged >= CH__WS_DROP_LOGS) {
    ch__ws_drop_unlogged++;
    return;
  }
  ch__ws_drop_logged++;
  if (ch__ws_drop_unlogged) {
    ch_log_info("ws conn %llu (%s): no pong for %llu ms, %zu bytes queued; dropping "
                "(and %llu earlier drops not logged)",
                (unsigned long long)c->id, c->peer, (unsigned long long)silent, c->qbytes,
                (unsigned long long)ch__ws_drop_unlogged);
    ch__ws_drop_unlogged = 0;
  } else {
    ch_log_info("ws conn %llu (%s): no pong for %llu ms, %zu bytes queued; dropping",
                (unsigned long long)c->id, c->peer, (unsigned long long)silent, c->qbytes);
  }
}

static void ch__ws_on_sweep(ch_conn_t *c, uint64_t now) {
  ch_ws_t *ws = c->proto_state;
  if (ws->close_sent) return;
  if (ws->h->on_sweep) {
    ws->h->on_sweep(ws, now);
    if (ws->close_sent || c->closing) return;
  }
  /* Silence counts from the last byte received (a pong, or anything else):
   * output draining to the peer proves TCP is alive, not that the peer's
   * WebSocket is. The ping below goes ahead of queued data, so a live peer
   * can answer in time however long its backlog. */
  uint64_t silent = now - ws->last_rx_ms;
  if (silent >= ch_ws_settings.pong_timeout_ms) {
    CH_STAT_ADD(&c->loop->stats, ws_pong_timeouts, 1);
    ch__ws_log_pong_timeout(c, now, silent);
    ch_conn_close(c);
    return;
  }
  if (silent >= ch_ws_settings.ping_interval_ms &&
      (ws->ping_sent_ms == 0 || now - ws->ping_sent_ms >= ch_ws_settings.ping_interval_ms)) {
    ws->ping_sent_ms = now;
    uint8_t hdr[14];
    size_t hl = ch_ws_frame_header(hdr, 1, 0, CH_WS_OP_PING, 0, NULL);
    ch_conn_send_urgent(c, ch_chunk_from(hdr, hl));
  }
  /* A backlog above the pause mark stops reading, and with it the pong:
   * while one is awaited, read a buffer's worth per sweep. */
  if (ws->ping_sent_ms) ch_conn_read_once(c);
}

static ch_chunk_t *ch__ws_on_overflow(ch_conn_t *c) {
  ch_ws_t *ws = c->proto_state;
  if (ws->close_sent) return NULL;
  ws->close_sent = 1;
  ws->close_code = CH_WS_CLOSE_TRY_AGAIN;
  return ch_ws_close_frame(CH_WS_CLOSE_TRY_AGAIN, "slow consumer: too much queued output");
}

static void ch__ws_on_shutdown(ch_conn_t *c) {
  ch_ws_t *ws = c->proto_state;
  ws->close_received = 1; /* no need to wait for the peer while shutting down */
  ch_ws_close(ws, CH_WS_CLOSE_GOING_AWAY, "server shutting down");
  ch_conn_close_after_flush(c, 2000);
}
