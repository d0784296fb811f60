/*
 * reader.c — RFC 6455 message reader (see reader.h for the data flow).
 *
 * State machine, one step per loop turn in feed:
 *
 *   HDR ──header complete, rules pass──▶ PAYLOAD ──_left == 0──▶ HDR
 *    │                                     │  (deliver on fin / control)
 *    │ any violation                       │ close frame delivered
 *    ▼                                     ▼
 *   DEAD (sticky error)                 CLOSED (input ignored)
 *
 * Payload bytes are handled in the largest run the feed offers: unmask in
 * place, validate UTF-8 (uncompressed text), then either hand the run to
 * the callback directly (the whole message is this run) or append it to
 * _msg. A control frame split across feeds is gathered at the tail of _msg,
 * after any fragmented message bytes, and cut off again on delivery.
 *
 * Before every callback the reader is already in its next state and the
 * bytes handed out no longer belong to it (a buffered message is moved out,
 * a split control payload copied to the stack), so a callback may dispose
 * of the reader and return nonzero; feed then returns without touching r.
 */
#include "ws/reader.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/err.h"

enum { ST_HDR = 0, ST_PAYLOAD, ST_CLOSED, ST_DEAD };

enum {
  F_FIN = 1,      /* current frame has FIN */
  F_COMP = 2,     /* message in progress had RSV1 on its first frame */
  F_CLIENT = 4,   /* we are the client: frames must be unmasked */
  F_RSV1_OK = 8,  /* permessage-deflate negotiated */
};

void ch_ws_reader_init(ch_ws_reader_t *r, const ch_ws_reader_cfg_t *cfg,
                       const ch_ws_reader_cb_t *cb, void *ud) {
  memset(r, 0, sizeof(*r));
  ch_ws_frame_parser_init(&r->_fp);
  ch_utf8_init(&r->_utf8);
  r->_max_frame = cfg->max_frame ? cfg->max_frame : UINT64_MAX;
  r->_max_message = cfg->max_message ? cfg->max_message : UINT64_MAX;
  r->_cb = *cb;
  r->_ud = ud;
  r->_state = ST_HDR;
  r->_flags = (uint8_t)((cfg->is_client ? F_CLIENT : 0) | (cfg->allow_rsv1 ? F_RSV1_OK : 0));
}

static void ch__ws_reader_drop_msg(ch_ws_reader_t *r) {
  if (r->_msg) {
    ch_buf_dispose(r->_msg);
    free(r->_msg);
    r->_msg = NULL;
  }
}

void ch_ws_reader_dispose(ch_ws_reader_t *r) { ch__ws_reader_drop_msg(r); }

uint16_t ch_ws_reader_close_code(const ch_ws_reader_t *r) {
  return r->_state == ST_DEAD ? ch_ws_fault_close_code(r->_fault) : 0;
}

const char *ch_ws_reader_error(const ch_ws_reader_t *r) {
  return ch_ws_fault_str(r->_state == ST_DEAD ? r->_fault : CH_WS_FAULT_NONE);
}

int ch_ws_reader_closed(const ch_ws_reader_t *r) { return r->_state == ST_CLOSED; }

static int ch__ws_reader_fail(ch_ws_reader_t *r, int fault) {
  r->_state = ST_DEAD;
  r->_fault = (uint8_t)fault;
  ch__ws_reader_drop_msg(r);
  return ch_ws_fault_err(fault);
}

static size_t ch__ws_msg_len(const ch_ws_reader_t *r) {
  return r->_msg ? r->_msg->len - r->_ctl_have : 0;
}

static void ch__ws_msg_append(ch_ws_reader_t *r, const uint8_t *p, size_t n) {
  if (n == 0) return;
  if (r->_msg == NULL) {
    r->_msg = ch_xmalloc(sizeof(*r->_msg));
    ch_buf_init(r->_msg);
  }
  ch_buf_append(r->_msg, p, n);
}

/* Apply the per-frame rules of RFC 6455 section 5 to a complete header and
 * enter PAYLOAD. Returns 0 or a negative CH_E* code (reader dead). */
static int ch__ws_reader_header(ch_ws_reader_t *r, const ch_ws_frame_hdr_t *h) {
  int op = h->opcode;
  int control = (op & 8) != 0;

  if (h->rsv & (CH_WS_RSV2 | CH_WS_RSV3)) return ch__ws_reader_fail(r, CH_WS_FAULT_RSV);
  if (op > CH_WS_OP_BINARY && op != CH_WS_OP_CLOSE && op != CH_WS_OP_PING && op != CH_WS_OP_PONG)
    return ch__ws_reader_fail(r, CH_WS_FAULT_OPCODE);
  if ((h->rsv & CH_WS_RSV1) && (!(r->_flags & F_RSV1_OK) || control || op == CH_WS_OP_CONT))
    return ch__ws_reader_fail(r, CH_WS_FAULT_RSV);
  if (r->_flags & F_CLIENT) {
    if (h->masked) return ch__ws_reader_fail(r, CH_WS_FAULT_MASKED);
  } else {
    if (!h->masked) return ch__ws_reader_fail(r, CH_WS_FAULT_UNMASKED);
  }

  if (control) {
    if (h->len > CH_WS_MAX_CONTROL) return ch__ws_reader_fail(r, CH_WS_FAULT_CTL_LONG);
    if (!h->fin) return ch__ws_reader_fail(r, CH_WS_FAULT_CTL_FRAG);
    if (op == CH_WS_OP_CLOSE && h->len == 1) return ch__ws_reader_fail(r, CH_WS_FAULT_CLOSE_1BYTE);
  } else {
    uint64_t total;
    if (op == CH_WS_OP_CONT && r->_msg_op == 0) return ch__ws_reader_fail(r, CH_WS_FAULT_CONT);
    if (op != CH_WS_OP_CONT && r->_msg_op != 0)
      return ch__ws_reader_fail(r, CH_WS_FAULT_NEW_IN_FRAG);
    if (h->len > r->_max_frame) return ch__ws_reader_fail(r, CH_WS_FAULT_FRAME_BIG);
    /* No overflow: buffered <= max_message and h->len < 2^63. */
    total = (uint64_t)ch__ws_msg_len(r) + h->len;
    if (total > r->_max_message || total > SIZE_MAX)
      return ch__ws_reader_fail(r, CH_WS_FAULT_MSG_BIG);
    if (op != CH_WS_OP_CONT) {
      r->_msg_op = (uint8_t)op;
      r->_flags = (uint8_t)((r->_flags & ~F_COMP) | ((h->rsv & CH_WS_RSV1) ? F_COMP : 0));
      if (op == CH_WS_OP_TEXT) ch_utf8_init(&r->_utf8);
    }
  }

  r->_op = (uint8_t)op;
  r->_flags = (uint8_t)((r->_flags & ~F_FIN) | (h->fin ? F_FIN : 0));
  memcpy(r->_mask, h->mask, 4);
  r->_mpos = 0;
  r->_left = h->len;
  r->_state = ST_PAYLOAD;
  return 0;
}

/* A control frame's payload run p[0..n); the frame completes when _left
 * reaches 0. */
static int ch__ws_reader_control(ch_ws_reader_t *r, const uint8_t *p, size_t n) {
  uint8_t tmp[CH_WS_MAX_CONTROL];
  int op = r->_op;

  if (r->_left != 0) { /* split across feeds: park at the tail of _msg */
    ch__ws_msg_append(r, p, n);
    r->_ctl_have = (uint8_t)(r->_ctl_have + n);
    return 0;
  }
  if (r->_ctl_have) { /* gather the parked head and this tail on the stack */
    size_t head = r->_ctl_have, start = r->_msg->len - head;
    memcpy(tmp, r->_msg->base + start, head);
    if (n) memcpy(tmp + head, p, n);
    r->_msg->len = start;
    r->_ctl_have = 0;
    if (start == 0) ch__ws_reader_drop_msg(r);
    p = tmp;
    n += head;
  }
  r->_state = ST_HDR;

  if (op == CH_WS_OP_CLOSE) {
    if (n >= 2 && !ch_ws_close_code_valid((uint16_t)((p[0] << 8) | p[1])))
      return ch__ws_reader_fail(r, CH_WS_FAULT_CLOSE_CODE);
    if (n > 2 && !ch_utf8_valid(p + 2, n - 2)) return ch__ws_reader_fail(r, CH_WS_FAULT_UTF8);
    r->_state = ST_CLOSED;
    ch__ws_reader_drop_msg(r); /* an unfinished message will never finish */
  }
  return r->_cb.on_control ? r->_cb.on_control(r->_ud, op, p, n) : 0;
}

/* A data frame's payload run p[0..n), already unmasked. */
static int ch__ws_reader_data(ch_ws_reader_t *r, const uint8_t *p, size_t n) {
  int op, comp, rc;
  ch_buf_t *m;

  if (r->_msg_op == CH_WS_OP_TEXT && !(r->_flags & F_COMP) && ch_utf8_feed(&r->_utf8, p, n) != 0)
    return ch__ws_reader_fail(r, CH_WS_FAULT_UTF8);

  if (r->_left != 0 || !(r->_flags & F_FIN)) { /* message continues */
    ch__ws_msg_append(r, p, n);
    if (r->_left == 0) r->_state = ST_HDR;
    return 0;
  }

  /* Last byte of the last frame: the message is complete. */
  if (r->_msg_op == CH_WS_OP_TEXT && !(r->_flags & F_COMP) && !ch_utf8_complete(&r->_utf8))
    return ch__ws_reader_fail(r, CH_WS_FAULT_UTF8);
  op = r->_msg_op;
  comp = (r->_flags & F_COMP) != 0;
  r->_msg_op = 0;
  r->_flags &= (uint8_t)~F_COMP;
  r->_state = ST_HDR;

  if (r->_msg == NULL) /* zero-copy: the whole message is p[0..n) */
    return r->_cb.on_message ? r->_cb.on_message(r->_ud, op, comp, p, n) : 0;

  ch__ws_msg_append(r, p, n);
  m = r->_msg; /* move out, so the callback may dispose of r */
  r->_msg = NULL;
  rc = r->_cb.on_message ? r->_cb.on_message(r->_ud, op, comp, (const uint8_t *)m->base, m->len) : 0;
  ch_buf_dispose(m);
  free(m);
  return rc;
}

int ch_ws_reader_feed(ch_ws_reader_t *r, uint8_t *data, size_t len) {
  size_t off = 0;
  int rc;

  for (;;) {
    switch (r->_state) {
    case ST_DEAD:
      return ch_ws_fault_err(r->_fault);
    case ST_CLOSED:
      return 0;
    case ST_HDR: {
      ch_ws_frame_hdr_t h;
      size_t used;
      if (off == len) return 0;
      rc = ch_ws_frame_parse(&r->_fp, data + off, len - off, &used, &h);
      off += used;
      if (rc == CH_AGAIN) return 0;
      if (rc < 0) return ch__ws_reader_fail(r, ch_ws_frame_parser_fault(&r->_fp));
      rc = ch__ws_reader_header(r, &h);
      if (rc != 0) return rc;
      break;
    }
    case ST_PAYLOAD: {
      size_t n = len - off;
      uint8_t *p;
      if (n > r->_left) n = (size_t)r->_left;
      if (n == 0 && r->_left != 0) return 0; /* need more bytes */
      p = data + off;                        /* data != NULL: a header came from it */
      if (n && !(r->_flags & F_CLIENT)) ch_ws_mask(p, n, r->_mask, r->_mpos);
      r->_mpos = (uint8_t)((r->_mpos + n) & 3);
      r->_left -= n;
      off += n;
      rc = (r->_op & 8) ? ch__ws_reader_control(r, p, n) : ch__ws_reader_data(r, p, n);
      if (rc != 0) return rc;
      break;
    }
    }
  }
}
