/*
 * lg_conn.c — the client side of a WebSocket connection for chorus-loadgen.
 *
 * This is a deliberately strict, correct client, because a benchmark that
 * cuts protocol corners measures the wrong thing:
 *   - every frame it sends is masked with a fresh 4-byte mask (xorshift64*
 *     seeded from getrandom(2); good enough for masking, which only has to be
 *     unpredictable to intermediaries, and cheap enough for millions/s);
 *   - the handshake sends a random Sec-WebSocket-Key and checks the reply is
 *     101 with Upgrade: websocket, Connection: upgrade and the right
 *     Sec-WebSocket-Accept, and that no extension was imposed;
 *   - server frames are parsed with a resumable state machine (header bytes
 *     gathered across reads, 7/16/64-bit lengths, fragmentation, control
 *     frames interleaved in fragmented messages); masked server frames, RSV
 *     bits, unknown opcodes, oversized or fragmented control frames and 64-bit
 *     lengths with the top bit set are protocol errors;
 *   - pings are answered with pongs, a server close is answered with a close.
 *
 * Connection life cycle (the "attempt" box repeats up to max_attempts times):
 *
 *   NEW ─start─> WAIT ──pacer──> CONNECT ──> HANDSHAKE ──101 ok──> OPEN ──close──> CLOSING ─EOF─> DONE
 *                  ^                │ error/timeout │                 │ error, EOF,
 *                  └──(uv_close)────┴───────────────┘                 │ server close
 *                      attempts left                                  v
 *                                     no attempts left ──────────> FAILED (ops->on_fail)
 *
 * The pacer keeps at most eng->batch connections in CONNECT/HANDSHAKE, so a
 * 19,000-connection run never overflows the server's listen backlog.
 *
 * Memory: reads land in one static 256 KiB buffer shared by all connections
 * (single thread; the read callback consumes it before the next read); a
 * connection keeps only its parser state, 32 bytes of message prefix and at
 * most one control payload. Output goes into a per-connection ch_buf_t that
 * reaches its steady size and then never reallocates, so nothing is allocated
 * per message.
 *
 * Whole messages (ops->on_text, the conversation modes that read JSON): a
 * message that arrives unfragmented inside one read is handed over in place,
 * a pointer into the read buffer (no copy); any other is gathered in the
 * connection's `msg` buffer (which, like `out`, reaches its steady size).
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/err.h"
#include "lg.h"

/* Frame codec: the hub's own encoder when it exists (src/ws/frame.h), else a
 * local one with the same contract. */
#if defined(__has_include)
#if __has_include("ws/frame.h")
#include "ws/frame.h"
#define LG_HAVE_CH_FRAME 1
#endif
#endif

#ifndef LG_HAVE_CH_FRAME
/* Client frame header into out (>= 14 bytes); returns its length. */
static size_t lg__frame_header(uint8_t *out, int fin, int rsv1, int opcode, uint64_t len,
                               const uint8_t *mask4) {
  size_t n;
  out[0] = (uint8_t)((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (opcode & 0x0f));
  uint8_t mbit = mask4 ? 0x80 : 0;
  if (len < 126) {
    out[1] = (uint8_t)(mbit | len);
    n = 2;
  } else if (len <= 0xffff) {
    out[1] = mbit | 126;
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    n = 4;
  } else {
    out[1] = mbit | 127;
    for (int i = 0; i < 8; i++) out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    n = 10;
  }
  if (mask4) {
    memcpy(out + n, mask4, 4);
    n += 4;
  }
  return n;
}

/* XOR data with the mask, starting at mask position offset. */
static void lg__mask(uint8_t *data, size_t len, const uint8_t *mask, size_t offset) {
  size_t i = 0;
  uint8_t m[8];
  for (int k = 0; k < 8; k++) m[k] = mask[(offset + (size_t)k) & 3];
  uint64_t w;
  memcpy(&w, m, 8);
  for (; i + 8 <= len; i += 8) {
    uint64_t d;
    memcpy(&d, data + i, 8);
    d ^= w;
    memcpy(data + i, &d, 8);
  }
  for (; i < len; i++) data[i] ^= mask[(offset + i) & 3];
}
#define LG_FRAME_HEADER(out, fin, rsv1, op, len, mask) lg__frame_header(out, fin, rsv1, op, len, mask)
#define LG_MASK(data, len, mask, off) lg__mask(data, len, mask, off)
#else
#define LG_FRAME_HEADER(out, fin, rsv1, op, len, mask) \
  ((size_t)ch_ws_frame_header(out, fin, rsv1, op, len, mask))
#define LG_MASK(data, len, mask, off) ch_ws_mask(data, len, mask, off)
#endif

#define LG_RBUF_SIZE (256 * 1024)
#define LG_HS_MAX 8192                       /* handshake response cap */
#define LG_MSG_MAX ((uint64_t)64 << 20)      /* larger server messages are an error */
#define LG_RETRY_BACKOFF_NS 100000000ull     /* x attempts */

static uint8_t lg__rbuf[LG_RBUF_SIZE];

static void lg__on_close(uv_handle_t *h);
static void lg__flush(lg_conn_t *c);

static uint64_t lg__rand64(lg_engine_t *eng) {
  uint64_t x = eng->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  eng->rng = x;
  return x * 0x2545F4914F6CDD1Dull;
}

static void lg__mark_pending(lg_conn_t *c) {
  if (!ch_list_linked(&c->pnode)) ch_list_insert_tail(&c->eng->pending, &c->pnode);
}

static void lg__unlist(lg_conn_t *c) {
  if (ch_list_linked(&c->node)) {
    if (c->state == LG_C_CONNECT || c->state == LG_C_HANDSHAKE) c->eng->inflight--;
    ch_list_remove(&c->node);
  }
  if (ch_list_linked(&c->pnode)) ch_list_remove(&c->pnode);
}

static void lg__reset_io(lg_conn_t *c) {
  c->rstate = 0;
  c->hdr_len = 0;
  c->msg_opcode = 0;
  c->fr_left = 0;
  c->msg_len = 0;
  c->ctrl_len = 0;
  c->close_sent = 0;
  c->out.len = 0;
  c->msg.len = 0;
  ch_buf_dispose(&c->hs);
}

static void lg__close_handle(lg_conn_t *c) {
  lg__unlist(c);
  if (c->handle_live && !uv_is_closing((uv_handle_t *)&c->tcp)) {
    uv_close((uv_handle_t *)&c->tcp, lg__on_close);
  }
}

/* A connect attempt failed: retry from the close callback if allowed. */
static void lg__attempt_failed(lg_conn_t *c, const char *why) {
  c->fail_why = why;
  c->want_retry = 1;
  c->want_fail_cb = 0;
  lg__close_handle(c);
  c->state = LG_C_WAIT; /* not on the wait list until the close callback */
}

/* An open connection failed (error, EOF, server close): report and close. */
static void lg__fail_open(lg_conn_t *c, const char *why) {
  c->fail_why = why;
  c->want_retry = 0;
  c->want_fail_cb = 1;
  c->state = LG_C_FAILED;
  lg__close_handle(c);
}

static void lg__on_close(uv_handle_t *h) {
  lg_conn_t *c = h->data;
  lg_engine_t *eng = c->eng;
  c->handle_live = 0;
  eng->live_handles--;
  if (c->want_retry) {
    c->want_retry = 0;
    lg__reset_io(c);
    uint64_t now = uv_hrtime();
    int late = eng->connect_deadline && now >= eng->connect_deadline;
    if (c->attempts < eng->max_attempts && !eng->stopping && !late) {
      c->state = LG_C_WAIT;
      c->not_before = now + LG_RETRY_BACKOFF_NS * (uint64_t)c->attempts;
      ch_list_insert_tail(&eng->wait, &c->node);
      return;
    }
    c->state = LG_C_FAILED;
    eng->st.failed++;
    if (c->ops->on_fail) c->ops->on_fail(c, c->fail_why ? c->fail_why : "connect failed");
    return;
  }
  if (c->want_fail_cb) {
    c->want_fail_cb = 0;
    eng->st.failed++;
    if (c->ops->on_fail) c->ops->on_fail(c, c->fail_why ? c->fail_why : "failed");
  }
}

/* Any error on the socket: what it means depends on the state. */
static void lg__io_error(lg_conn_t *c, const char *why) {
  switch (c->state) {
  case LG_C_CONNECT:
  case LG_C_HANDSHAKE: lg__attempt_failed(c, why); break;
  case LG_C_OPEN:
    c->eng->st.closed_by_peer++;
    lg__fail_open(c, why);
    break;
  case LG_C_CLOSING:
    c->state = LG_C_DONE;
    lg__close_handle(c);
    break;
  default: lg__close_handle(c); break;
  }
}

/* ---- output ------------------------------------------------------------------------------- */

static uint8_t *lg__frame_begin(lg_conn_t *c, int opcode, size_t len) {
  uint64_t r = lg__rand64(c->eng);
  memcpy(c->fr_mask, &r, 4);
  uint8_t *w = (uint8_t *)ch_buf_reserve(&c->out, 14 + len);
  size_t n = LG_FRAME_HEADER(w, 1, 0, opcode, (uint64_t)len, c->fr_mask);
  c->fr_payload_off = c->out.len + n;
  c->fr_payload_len = len;
  c->out.len += n + len;
  return (uint8_t *)c->out.base + c->fr_payload_off;
}

uint8_t *lg_conn_frame_begin(lg_conn_t *c, int opcode, size_t len) {
  if (c->state != LG_C_OPEN) return NULL;
  return lg__frame_begin(c, opcode, len);
}

void lg_conn_frame_end(lg_conn_t *c) {
  LG_MASK((uint8_t *)c->out.base + c->fr_payload_off, c->fr_payload_len, c->fr_mask, 0);
  lg__mark_pending(c);
}

int lg_conn_send(lg_conn_t *c, int opcode, const void *payload, size_t len) {
  uint8_t *p = lg_conn_frame_begin(c, opcode, len);
  if (p == NULL) return CH_ECLOSED;
  if (len) memcpy(p, payload, len);
  lg_conn_frame_end(c);
  return 0;
}

static void lg__send_close(lg_conn_t *c, const uint8_t *code2) {
  if (c->close_sent) return;
  uint8_t *p = lg__frame_begin(c, 0x8, 2);
  memcpy(p, code2, 2);
  lg_conn_frame_end(c);
  c->close_sent = 1;
}

static void lg__on_write(uv_write_t *req, int status) {
  lg_conn_t *c = req->data;
  c->writing = 0;
  c->wbuf.len = 0;
  if (status < 0) {
    if (status != UV_ECANCELED && c->handle_live) lg__io_error(c, "write failed");
    return;
  }
  if (c->out.len) lg__flush(c);
}

static void lg__flush(lg_conn_t *c) {
  if (!c->handle_live || c->writing || c->out.len == 0) return;
  if (uv_is_closing((uv_handle_t *)&c->tcp)) return;
  if (c->state != LG_C_HANDSHAKE && c->state != LG_C_OPEN && c->state != LG_C_CLOSING) return;
  uv_buf_t b = uv_buf_init(c->out.base, (unsigned)c->out.len);
  int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  if (r == (int)c->out.len) {
    c->out.len = 0;
    return;
  }
  if (r < 0 && r != UV_EAGAIN) {
    lg__io_error(c, "write failed");
    return;
  }
  if (r > 0) ch_buf_consume(&c->out, (size_t)r);
  ch_buf_t t = c->wbuf; /* empty: no write in flight */
  c->wbuf = c->out;
  c->out = t;
  b = uv_buf_init(c->wbuf.base, (unsigned)c->wbuf.len);
  c->wreq.data = c;
  r = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, lg__on_write);
  if (r < 0) {
    c->wbuf.len = 0;
    lg__io_error(c, "write failed");
    return;
  }
  c->writing = 1;
}

void lg_engine_flush(lg_engine_t *eng) {
  while (!ch_list_empty(&eng->pending)) {
    ch_list_t *n = eng->pending.next;
    ch_list_remove(n);
    lg__flush(CH_LIST_DATA(n, lg_conn_t, pnode));
  }
}

/* ---- input: frames ------------------------------------------------------------------------ */

/* A whole control frame has arrived (payload in c->ctrl). */
static void lg__on_control(lg_conn_t *c) {
  switch (c->fr_opcode) {
  case 0x9: /* ping */
    if (c->state == LG_C_OPEN) {
      uint8_t *p = lg__frame_begin(c, 0xA, c->ctrl_len);
      memcpy(p, c->ctrl, c->ctrl_len);
      lg_conn_frame_end(c);
    }
    break;
  case 0xA:
    if (c->state == LG_C_OPEN && c->ops->on_pong) c->ops->on_pong(c);
    break;
  case 0x8: {
    static const uint8_t normal[2] = {0x03, 0xE8};
    if (c->state == LG_C_OPEN) {
      /* The server closed on us: answer, report, wait for its EOF. */
      lg__send_close(c, c->ctrl_len >= 2 ? c->ctrl : normal);
      c->state = LG_C_CLOSING;
      c->eng->st.closed_by_peer++;
      c->eng->st.failed++;
      if (c->ops->on_fail) c->ops->on_fail(c, "server sent close");
    }
    /* CLOSING: this is the answer to ours; the server closes TCP next. */
    break;
  }
  }
}

/* Feed n bytes of frames. Returns 0 or a negative code with *why set. */
static int lg__parse(lg_conn_t *c, const uint8_t *p, size_t n, uint64_t now, const char **why) {
  const uint8_t *end = p + n;
  while (p < end) {
    if (c->state != LG_C_OPEN && c->state != LG_C_CLOSING) return 0;
    if (c->rstate == 0) {
      /* Gather the 2-byte base header, then the extended length. */
      size_t need = 2;
      if (c->hdr_len >= 2) {
        uint8_t l7 = c->hdr[1] & 0x7f;
        need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0);
      }
      while (c->hdr_len < need && p < end) {
        c->hdr[c->hdr_len++] = *p++;
        if (c->hdr_len == 2) {
          if (c->hdr[1] & 0x80) {
            *why = "server frame is masked";
            return CH_EPROTO;
          }
          uint8_t l7 = c->hdr[1] & 0x7f;
          need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0);
        }
      }
      if (c->hdr_len < need) return 0; /* CH_AGAIN: rest of the header in a later read */
      uint8_t b0 = c->hdr[0], l7 = c->hdr[1] & 0x7f;
      uint64_t len = l7;
      if (l7 == 126) {
        len = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
        if (len < 126) {
          *why = "non-minimal 16-bit length";
          return CH_EPROTO;
        }
      } else if (l7 == 127) {
        len = 0;
        for (int i = 0; i < 8; i++) len = len << 8 | c->hdr[2 + i];
        if (len >> 63) {
          *why = "64-bit length with the top bit set";
          return CH_EPROTO;
        }
        if (len <= 0xffff) {
          *why = "non-minimal 64-bit length";
          return CH_EPROTO;
        }
      }
      c->hdr_len = 0;
      if (b0 & 0x70) {
        *why = "RSV bit set without an extension";
        return CH_EPROTO;
      }
      c->fr_fin = (b0 & 0x80) != 0;
      c->fr_opcode = b0 & 0x0f;
      c->fr_left = len;
      switch (c->fr_opcode) {
      case 0x0:
        if (c->msg_opcode == 0) {
          *why = "continuation without a message";
          return CH_EPROTO;
        }
        break;
      case 0x1:
      case 0x2:
        if (c->msg_opcode != 0) {
          *why = "new message inside a fragmented one";
          return CH_EPROTO;
        }
        c->msg_opcode = c->fr_opcode;
        c->msg_len = 0;
        c->tail_ok = 1;
        break;
      case 0x8:
      case 0x9:
      case 0xA:
        if (!c->fr_fin || len > 125) {
          *why = "fragmented or oversized control frame";
          return CH_EPROTO;
        }
        c->ctrl_len = 0;
        break;
      default: *why = "unknown opcode"; return CH_EPROTO;
      }
      if (c->fr_opcode < 8 && c->msg_len + len > LG_MSG_MAX) {
        *why = "server message too large";
        return CH_ETOOBIG;
      }
      c->rstate = 1;
    }
    /* Payload (possibly empty). */
    size_t take = (size_t)((uint64_t)(end - p) < c->fr_left ? (uint64_t)(end - p) : c->fr_left);
    if (c->fr_opcode >= 8) {
      memcpy(c->ctrl + c->ctrl_len, p, take);
      c->ctrl_len = (uint8_t)(c->ctrl_len + take);
    } else if (c->ops->on_text) {
      if (c->msg_len == 0 && c->fr_fin && take == c->fr_left) {
        /* The whole message is here: hand it over in place. */
        int op = c->msg_opcode;
        c->msg_opcode = 0;
        c->rstate = 0;
        c->fr_left = 0;
        p += take;
        if (c->state == LG_C_OPEN) c->ops->on_text(c, op, p - take, take, now);
        continue;
      }
      if (c->msg_len == 0) c->msg.len = 0;
      ch_buf_append(&c->msg, p, take);
      c->msg_len += take;
    } else {
      size_t i = 0;
      if (c->msg_len < LG_PFX) {
        i = LG_PFX - (size_t)c->msg_len < take ? LG_PFX - (size_t)c->msg_len : take;
        memcpy(c->pfx + c->msg_len, p, i);
      }
      if (c->tail_ok && i < take) {
        uint64_t off = c->msg_len + i;
        size_t rest = take - i;
        if (off + rest > LG_MAX_PAYLOAD || memcmp(p + i, c->eng->filler + off, rest) != 0) c->tail_ok = 0;
      }
      c->msg_len += take;
    }
    p += take;
    c->fr_left -= take;
    if (c->fr_left > 0) return 0;
    c->rstate = 0;
    if (c->fr_opcode >= 8) {
      lg__on_control(c);
    } else if (c->fr_fin) {
      int op = c->msg_opcode;
      c->msg_opcode = 0;
      if (c->ops->on_text) {
        size_t mlen = c->msg.len;
        c->msg.len = 0;
        if (c->state == LG_C_OPEN) c->ops->on_text(c, op, (const uint8_t *)c->msg.base, mlen, now);
      } else if (c->state == LG_C_OPEN) {
        c->ops->on_message(c, op, c->pfx, c->msg_len, c->tail_ok, now);
      }
    }
  }
  return 0;
}

/* ---- input: handshake --------------------------------------------------------------------- */

static int lg__hdr_has_token(const char *v, size_t vlen, const char *tok) {
  size_t tl = strlen(tok);
  for (size_t i = 0; i + tl <= vlen; i++) {
    if (strncasecmp(v + i, tok, tl) == 0) return 1;
  }
  return 0;
}

/* Returns 1 when the response is complete and good (consumed = header bytes),
 * 0 when more is needed, -1 to retry (why set), -2 fatal (why set). */
static int lg__handshake(lg_conn_t *c, size_t *consumed, const char **why) {
  char *base = c->hs.base;
  size_t len = c->hs.len;
  char *eoh = memmem(base, len, "\r\n\r\n", 4);
  if (eoh == NULL) {
    if (len > LG_HS_MAX) {
      *why = "handshake response too large";
      return -2;
    }
    return 0;
  }
  size_t hlen = (size_t)(eoh - base) + 4;
  *consumed = hlen;
  if (hlen < 12 || strncmp(base, "HTTP/1.1 ", 9) != 0) {
    *why = "handshake: not an HTTP/1.1 response";
    return -2;
  }
  if (strncmp(base + 9, "101", 3) != 0) {
    *why = strncmp(base + 9, "5", 1) == 0 ? "handshake: server error status (5xx)"
                                          : "handshake: status is not 101";
    return -1;
  }
  int up = 0, conn = 0, acc = 0;
  char *line = (char *)memchr(base, '\n', hlen) + 1;
  while (line < eoh) {
    char *nl = memchr(line, '\n', (size_t)(eoh + 2 - line));
    if (nl == NULL) break;
    size_t ll = (size_t)(nl - line);
    if (ll && line[ll - 1] == '\r') ll--;
    char *colon = memchr(line, ':', ll);
    if (colon) {
      size_t nlen = (size_t)(colon - line);
      char *v = colon + 1;
      size_t vlen = ll - nlen - 1;
      while (vlen && (*v == ' ' || *v == '\t')) v++, vlen--;
      while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) vlen--;
      if (nlen == 7 && strncasecmp(line, "upgrade", 7) == 0) {
        up = lg__hdr_has_token(v, vlen, "websocket");
      } else if (nlen == 10 && strncasecmp(line, "connection", 10) == 0) {
        conn = lg__hdr_has_token(v, vlen, "upgrade");
      } else if (nlen == 20 && strncasecmp(line, "sec-websocket-accept", 20) == 0) {
        acc = vlen == strlen(c->accept) && memcmp(v, c->accept, vlen) == 0 ? 1 : -1;
      } else if (nlen == 24 && strncasecmp(line, "sec-websocket-extensions", 24) == 0 && vlen) {
        *why = "handshake: server imposed an extension we did not offer";
        return -2;
      }
    }
    line = nl + 1;
  }
  if (acc != 1) {
    *why = acc == 0 ? "handshake: no Sec-WebSocket-Accept" : "handshake: wrong Sec-WebSocket-Accept";
    return -2;
  }
  if (!up || !conn) {
    *why = "handshake: missing Upgrade/Connection headers";
    return -2;
  }
  return 1;
}

static void lg__pump(lg_engine_t *eng, uint64_t now);

static void lg__on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  *buf = uv_buf_init((char *)lg__rbuf, LG_RBUF_SIZE);
}

static void lg__on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  lg_conn_t *c = s->data;
  (void)buf;
  if (nread == 0) return;
  if (nread < 0) {
    const char *why = nread == UV_EOF ? "connection closed by server" : "connection reset";
    if (c->state == LG_C_CLOSING) {
      c->state = LG_C_DONE;
      lg__close_handle(c);
    } else {
      lg__io_error(c, why);
    }
    return;
  }
  uint64_t now = uv_hrtime();
  const uint8_t *p = lg__rbuf;
  size_t n = (size_t)nread;
  const char *why = NULL;
  if (c->state == LG_C_HANDSHAKE) {
    size_t consumed = 0;
    ch_buf_append(&c->hs, p, n);
    int r = lg__handshake(c, &consumed, &why);
    if (r == 0) return;
    if (r == -1) {
      lg__attempt_failed(c, why);
      return;
    }
    if (r == -2) {
      c->attempts = c->eng->max_attempts; /* a wrong answer does not get better */
      lg__attempt_failed(c, why);
      return;
    }
    /* Open. Leftover bytes are frames: move them to the read buffer (they
     * came from it, so they fit) and parse them below. */
    size_t left = c->hs.len - consumed;
    memmove(lg__rbuf, c->hs.base + consumed, left);
    ch_buf_dispose(&c->hs);
    lg__unlist(c);
    c->state = LG_C_OPEN;
    c->eng->st.opened++;
    lg__pump(c->eng, now);
    c->ops->on_open(c);
    n = left;
  }
  if (n == 0) return;
  if (lg__parse(c, p, n, now, &why) < 0) {
    if (c->state == LG_C_OPEN) {
      lg__fail_open(c, why);
    } else {
      c->state = LG_C_DONE;
      lg__close_handle(c);
    }
  }
}

/* ---- connecting --------------------------------------------------------------------------- */

static void lg__b64(const uint8_t *in, size_t n, char *out) {
  static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16;
    if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
    if (i + 2 < n) v |= in[i + 2];
    out[o++] = t[v >> 18 & 63];
    out[o++] = t[v >> 12 & 63];
    out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
    out[o++] = i + 2 < n ? t[v & 63] : '=';
  }
  out[o] = '\0';
}

static void lg__on_connect(uv_connect_t *req, int status) {
  lg_conn_t *c = req->data;
  if (c->state != LG_C_CONNECT) return; /* aborted meanwhile */
  if (status < 0) {
    lg__attempt_failed(c, status == UV_ECONNREFUSED ? "connection refused" : "connect failed");
    return;
  }
  uint8_t raw[16];
  if (lg_random(raw, sizeof(raw)) < 0) {
    lg__attempt_failed(c, "getrandom failed");
    return;
  }
  lg__b64(raw, sizeof(raw), c->key);
  if (lg_ws_accept(c->key, c->accept, sizeof(c->accept)) < 0) {
    lg__attempt_failed(c, "sha1 failed");
    return;
  }
  /* The path's first "{i}" becomes this connection's index (per-connection credentials). */
  const char *path = c->url->path, *mark = strstr(path, "{i}");
  int before = mark ? (int)(mark - path) : (int)strlen(path);
  char idx[16] = "";
  if (mark) snprintf(idx, sizeof(idx), "%u", (unsigned)c->u_index);
  ch_buf_printf(&c->out,
                "GET %.*s%s%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                before, path, idx, mark ? mark + 3 : "", c->url->host, c->key);
  if (uv_read_start((uv_stream_t *)&c->tcp, lg__on_alloc, lg__on_read) < 0) {
    lg__attempt_failed(c, "read_start failed");
    return;
  }
  c->state = LG_C_HANDSHAKE;
  lg__mark_pending(c);
}

static void lg__start_attempt(lg_conn_t *c, uint64_t now) {
  lg_engine_t *eng = c->eng;
  c->attempts++;
  if (c->attempts > 1) eng->st.retries++;
  c->t_attempt = now;
  lg__reset_io(c);
  uv_tcp_init(eng->loop, &c->tcp);
  c->tcp.data = c;
  c->handle_live = 1;
  eng->live_handles++;
  c->state = LG_C_CONNECT;
  ch_list_insert_tail(&eng->connecting, &c->node);
  eng->inflight++;
  uv_tcp_nodelay(&c->tcp, 1);
  c->creq.data = c;
  int r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&c->url->addr, lg__on_connect);
  if (r < 0) lg__attempt_failed(c, r == UV_EMFILE ? "out of file descriptors" : "connect failed");
}

static void lg__pump(lg_engine_t *eng, uint64_t now) {
  if (eng->connect_deadline && now >= eng->connect_deadline) {
    /* Out of time: everything still waiting has failed. */
    while (!ch_list_empty(&eng->wait)) {
      lg_conn_t *c = CH_LIST_DATA(eng->wait.next, lg_conn_t, node);
      ch_list_remove(&c->node);
      c->state = LG_C_FAILED;
      eng->st.failed++;
      if (c->ops->on_fail) c->ops->on_fail(c, "connect phase timed out");
    }
    return;
  }
  while (!eng->stopping && eng->inflight < eng->batch && !ch_list_empty(&eng->wait)) {
    lg_conn_t *c = CH_LIST_DATA(eng->wait.next, lg_conn_t, node);
    if (c->not_before > now) break;
    ch_list_remove(&c->node);
    lg__start_attempt(c, now);
  }
}

static void lg__on_pacer(uv_timer_t *t) {
  lg_engine_t *eng = t->data;
  uint64_t now = uv_hrtime();
  ch_list_t *it, *tmp;
  ch_list_foreach_safe(it, tmp, &eng->connecting) {
    lg_conn_t *c = CH_LIST_DATA(it, lg_conn_t, node);
    if (now - c->t_attempt > eng->hs_timeout) lg__attempt_failed(c, "connect/handshake timed out");
  }
  lg__pump(eng, now);
}

static void lg__on_prepare(uv_prepare_t *h) {
  lg_engine_t *eng = h->data;
  if (!ch_list_empty(&eng->wait)) lg__pump(eng, uv_hrtime());
  lg_engine_flush(eng);
}

static void lg__on_check(uv_check_t *h) { lg_engine_flush(h->data); }

/* ---- public ------------------------------------------------------------------------------- */

int lg_engine_init(lg_engine_t *eng, uv_loop_t *loop, unsigned batch, int attempts,
                   unsigned hs_timeout_ms) {
  memset(eng, 0, sizeof(*eng));
  eng->loop = loop;
  eng->batch = batch ? batch : 1;
  eng->max_attempts = attempts > 0 ? attempts : 1;
  eng->hs_timeout = (uint64_t)hs_timeout_ms * 1000000u;
  ch_list_init(&eng->wait);
  ch_list_init(&eng->connecting);
  ch_list_init(&eng->pending);
  eng->filler = lg_filler_table();
  if (lg_random(&eng->rng, sizeof(eng->rng)) < 0) return CH_EIO;
  eng->rng |= 1;
  uv_timer_init(loop, &eng->pacer);
  eng->pacer.data = eng;
  uv_timer_start(&eng->pacer, lg__on_pacer, 10, 10);
  uv_prepare_init(loop, &eng->prep);
  eng->prep.data = eng;
  uv_prepare_start(&eng->prep, lg__on_prepare);
  uv_check_init(loop, &eng->check);
  eng->check.data = eng;
  uv_check_start(&eng->check, lg__on_check);
  return 0;
}

void lg_engine_dispose(lg_engine_t *eng) {
  uv_close((uv_handle_t *)&eng->pacer, NULL);
  uv_close((uv_handle_t *)&eng->prep, NULL);
  uv_close((uv_handle_t *)&eng->check, NULL);
}

void lg_conn_init(lg_conn_t *c, lg_engine_t *eng, const lg_url_t *url, const lg_ops_t *ops,
                  void *ud) {
  memset(c, 0, sizeof(*c));
  c->eng = eng;
  c->url = url;
  c->ops = ops;
  c->ud = ud;
  ch_list_init(&c->node);
  ch_list_init(&c->pnode);
  ch_buf_init(&c->out);
  ch_buf_init(&c->wbuf);
  ch_buf_init(&c->hs);
  ch_buf_init(&c->msg);
  c->state = LG_C_NEW;
}

void lg_conn_start(lg_conn_t *c) {
  if (c->state != LG_C_NEW) return;
  c->state = LG_C_WAIT;
  ch_list_insert_tail(&c->eng->wait, &c->node);
}

void lg_conn_close(lg_conn_t *c) {
  static const uint8_t normal[2] = {0x03, 0xE8};
  c->want_fail_cb = 0;
  c->want_retry = 0;
  switch (c->state) {
  case LG_C_OPEN:
    lg__send_close(c, normal);
    c->state = LG_C_CLOSING;
    break;
  case LG_C_CLOSING: break;
  default: lg_conn_abort(c); break;
  }
}

void lg_conn_abort(lg_conn_t *c) {
  c->want_fail_cb = 0;
  c->want_retry = 0;
  if (c->state == LG_C_WAIT && !c->handle_live) {
    lg__unlist(c);
    c->state = LG_C_FAILED;
    return;
  }
  if (c->state != LG_C_FAILED) c->state = LG_C_DONE;
  lg__close_handle(c);
}

void lg_conn_dispose(lg_conn_t *c) {
  ch_buf_dispose(&c->out);
  ch_buf_dispose(&c->wbuf);
  ch_buf_dispose(&c->hs);
  ch_buf_dispose(&c->msg);
}
