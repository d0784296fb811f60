/*
 * ws_frame.c — libFuzzer harness for the WebSocket codec (ws/frame.h,
 * ws/reader.h, ws/utf8.h).
 *
 * Input layout:
 *   byte 0   reader config: bit0 is_client, bit1 allow_rsv1,
 *            bits2-4 max_frame index, bits5-7 max_message index (kLimits)
 *   byte 1   seed for the feed split sizes, masking key and round-trip opcode
 *   rest     raw bytes from the "peer"
 *
 * Each run checks:
 *   1. The reader fed the bytes whole and fed them in seeded random pieces
 *      produces the same events (hashed), return code, close code and error.
 *   2. Every event obeys the contract: data opcodes only, compressed only
 *      when allowed, uncompressed text is valid UTF-8, limits hold, control
 *      payloads <= 125 bytes, close payloads validated, nothing after close
 *      or after an error; errors map to 1002/1007/1009 and leave no heap.
 *   3. Round trip: the body, encoded as one server frame (and as a masked
 *      client frame), reads back as exactly that message, or fails 1007
 *      for invalid uncompressed text.
 *   4. ch_ws_mask equals a byte-wise reference at the seeded offset.
 *   5. The header parser gives the same headers whole and byte by byte.
 *   6. A naive whole-buffer reference model of RFC 6455 section 5 produces
 *      the same events and the same fault as the streaming reader.
 * Every buffer is malloc'd at its exact size so ASan catches over-reads.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "ws/frame.h"
#include "ws/reader.h"
#include "ws/utf8.h"

#define CHECK(cond)          \
  do {                       \
    if (!(cond)) abort();    \
  } while (0)

static const uint64_t kLimits[8] = {0, 1, 10, 125, 126, 1000, 65536, 0};

typedef struct {
  ch_ws_reader_cfg_t cfg;
  uint64_t hash;  /* FNV-1a over every event */
  int events;
  int closed;     /* a close frame was delivered */
  int stop_after; /* return 1 from the callback for event #stop_after (-1: never) */
} state_t;

static void mix(state_t *s, const void *p, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++) s->hash = (s->hash ^ b[i]) * 0x100000001B3ull;
}

static int on_message(void *ud, int opcode, int compressed, const uint8_t *data, size_t len) {
  state_t *s = ud;
  CHECK(!s->closed);
  CHECK(opcode == CH_WS_OP_TEXT || opcode == CH_WS_OP_BINARY);
  CHECK(!compressed || s->cfg.allow_rsv1);
  CHECK(len == 0 || data != NULL);
  if (s->cfg.max_message) CHECK(len <= s->cfg.max_message);
  if (opcode == CH_WS_OP_TEXT && !compressed) CHECK(ch_utf8_valid(data, len));
  uint8_t tag[3] = {'M', (uint8_t)opcode, (uint8_t)compressed};
  mix(s, tag, 3);
  mix(s, &len, sizeof len);
  mix(s, data, len);
  return s->events++ == s->stop_after;
}

static int on_control(void *ud, int opcode, const uint8_t *data, size_t len) {
  state_t *s = ud;
  CHECK(!s->closed);
  CHECK(opcode == CH_WS_OP_PING || opcode == CH_WS_OP_PONG || opcode == CH_WS_OP_CLOSE);
  CHECK(len <= CH_WS_MAX_CONTROL);
  if (opcode == CH_WS_OP_CLOSE) {
    CHECK(len != 1);
    if (len >= 2) {
      CHECK(ch_ws_close_code_valid((uint16_t)(data[0] << 8 | data[1])));
      CHECK(ch_utf8_valid(data + 2, len - 2));
    }
    s->closed = 1;
  }
  uint8_t tag[2] = {'C', (uint8_t)opcode};
  mix(s, tag, 2);
  mix(s, &len, sizeof len);
  mix(s, data, len);
  return s->events++ == s->stop_after;
}

static const ch_ws_reader_cb_t kCb = {on_message, on_control};

typedef struct {
  int rc;
  uint16_t close;
  const char *err;
  uint64_t hash;
  int events;
} outcome_t;

/* Feed body in pieces: whole when seed == 0, else sizes from an LCG. */
static void run_reader(const ch_ws_reader_cfg_t *cfg, const uint8_t *body, size_t n,
                       uint32_t seed, int stop_after, outcome_t *out) {
  state_t s = {*cfg, 0xcbf29ce484222325ull, 0, 0, stop_after};
  ch_ws_reader_t r;
  size_t off = 0;
  uint32_t x = seed * 2654435761u + 1;
  ch_ws_reader_init(&r, cfg, &kCb, &s);
  out->rc = 0;
  do {
    size_t k = n - off;
    if (seed) {
      x = x * 1103515245u + 12345u;
      size_t lim = (x >> 16) % 3 == 0 ? 1 : (x >> 16) % 3 == 1 ? 7 : 300;
      k = 1 + (x >> 8) % lim;
      if (k > n - off) k = n - off;
    }
    uint8_t *piece = malloc(k ? k : 1); /* exact size: over-reads fault under ASan */
    if (k) memcpy(piece, body + off, k);
    out->rc = ch_ws_reader_feed(&r, k ? piece : NULL, k);
    free(piece);
    off += k;
  } while (out->rc == 0 && off < n);
  out->close = ch_ws_reader_close_code(&r);
  out->err = ch_ws_reader_error(&r);
  out->hash = s.hash;
  out->events = s.events;
  if (out->rc < 0) {
    CHECK(out->rc == CH_EPROTO || out->rc == CH_EUTF8 || out->rc == CH_ETOOBIG);
    CHECK(out->close == (out->rc == CH_EPROTO ? 1002 : out->rc == CH_EUTF8 ? 1007 : 1009));
    CHECK(strcmp(out->err, "no error") != 0);
    CHECK(r._msg == NULL);
    CHECK(ch_ws_reader_feed(&r, NULL, 0) == out->rc); /* sticky */
  } else if (out->rc == 0) {
    CHECK(out->close == 0);
    CHECK(ch_ws_reader_closed(&r) == s.closed);
    /* idle or mid-message; never holds heap between messages */
    if (r._state == 0 /* ST_HDR */ && r._msg_op == 0) CHECK(r._msg == NULL);
  } else {
    CHECK(out->rc == 1 && out->events == stop_after + 1);
  }
  ch_ws_reader_dispose(&r);
}

/* ---- reference model --------------------------------------------------
 * A deliberately naive, non-streaming reading of RFC 6455 section 5 over the
 * whole input: parse frame after frame from one buffer, copy everything.
 * It reports events through the same hash as the reader, and the fault the
 * reader must report (checks in the reader's documented order). */
typedef struct {
  int rc, fault;
  uint64_t hash;
  int events;
} ref_t;

static void ref_fail(ref_t *o, int fault) {
  o->fault = fault;
  o->rc = ch_ws_fault_err(fault);
}

static void ref_read(const ch_ws_reader_cfg_t *cfg, const uint8_t *p, size_t n, ref_t *o) {
  state_t s = {*cfg, 0xcbf29ce484222325ull, 0, 0, -1};
  uint8_t *msg = malloc(n + 1);
  size_t msg_len = 0, pos = 0;
  int msg_op = 0, msg_comp = 0;
  o->rc = 0, o->fault = 0;
  for (;;) {
    size_t hl = 2, i;
    uint64_t len;
    if (n - pos < 2) break;
    uint8_t b0 = p[pos], b1 = p[pos + 1];
    int fin = b0 >> 7, rsv1 = (b0 >> 6) & 1, rsv23 = (b0 >> 4) & 3, op = b0 & 15;
    int masked = b1 >> 7, l7 = b1 & 127;
    hl += l7 == 126 ? 2 : l7 == 127 ? 8 : 0;
    hl += masked ? 4 : 0;
    if (n - pos < hl) break;
    len = l7;
    if (l7 == 126) {
      len = (uint64_t)p[pos + 2] << 8 | p[pos + 3];
      if (len < 126) { ref_fail(o, CH_WS_FAULT_LEN_NONMINIMAL); break; }
    } else if (l7 == 127) {
      if (p[pos + 2] & 0x80) { ref_fail(o, CH_WS_FAULT_LEN_MSB); break; }
      len = 0;
      for (i = 0; i < 8; i++) len = len << 8 | p[pos + 2 + i];
      if (len < 65536) { ref_fail(o, CH_WS_FAULT_LEN_NONMINIMAL); break; }
    }
    int control = op >= 8;
    if (rsv23) { ref_fail(o, CH_WS_FAULT_RSV); break; }
    if (!(op <= 2 || (op >= 8 && op <= 10))) { ref_fail(o, CH_WS_FAULT_OPCODE); break; }
    if (rsv1 && (!cfg->allow_rsv1 || control || op == 0)) { ref_fail(o, CH_WS_FAULT_RSV); break; }
    if (cfg->is_client && masked) { ref_fail(o, CH_WS_FAULT_MASKED); break; }
    if (!cfg->is_client && !masked) { ref_fail(o, CH_WS_FAULT_UNMASKED); break; }
    if (control) {
      if (len > 125) { ref_fail(o, CH_WS_FAULT_CTL_LONG); break; }
      if (!fin) { ref_fail(o, CH_WS_FAULT_CTL_FRAG); break; }
      if (op == 8 && len == 1) { ref_fail(o, CH_WS_FAULT_CLOSE_1BYTE); break; }
    } else {
      if (op == 0 && !msg_op) { ref_fail(o, CH_WS_FAULT_CONT); break; }
      if (op != 0 && msg_op) { ref_fail(o, CH_WS_FAULT_NEW_IN_FRAG); break; }
      if (cfg->max_frame && len > cfg->max_frame) { ref_fail(o, CH_WS_FAULT_FRAME_BIG); break; }
      if (cfg->max_message && msg_len + len > cfg->max_message) {
        ref_fail(o, CH_WS_FAULT_MSG_BIG);
        break;
      }
      if (op != 0) msg_op = op, msg_comp = rsv1;
    }
    /* payload: whatever part of it is present */
    size_t avail = n - pos - hl < len ? n - pos - hl : (size_t)len;
    uint8_t *pl = malloc(avail + 1);
    for (i = 0; i < avail; i++)
      pl[i] = p[pos + hl + i] ^ (masked ? p[pos + hl - 4 + (i & 3)] : 0);
    if (!control) {
      memcpy(msg + msg_len, pl, avail);
      if (msg_op == 1 && !msg_comp) {
        ch_utf8_t u;
        ch_utf8_init(&u);
        if (ch_utf8_feed(&u, msg, msg_len + avail) != 0 ||
            (avail == len && fin && !ch_utf8_complete(&u))) {
          free(pl);
          ref_fail(o, CH_WS_FAULT_UTF8);
          break;
        }
      }
    }
    if (avail < len) { free(pl); break; }
    pos += hl + avail;
    if (control) {
      if (op == 8 && avail >= 2) {
        if (!ch_ws_close_code_valid((uint16_t)(pl[0] << 8 | pl[1]))) {
          free(pl);
          ref_fail(o, CH_WS_FAULT_CLOSE_CODE);
          break;
        }
        if (!ch_utf8_valid(pl + 2, avail - 2)) { free(pl); ref_fail(o, CH_WS_FAULT_UTF8); break; }
      }
      on_control(&s, op, pl, avail);
      free(pl);
      if (op == 8) break; /* the rest is ignored */
      continue;
    }
    free(pl);
    msg_len += avail;
    if (fin) {
      on_message(&s, msg_op, msg_comp, msg, msg_len);
      msg_len = 0, msg_op = 0, msg_comp = 0;
    }
  }
  free(msg);
  o->hash = s.hash;
  o->events = s.events;
}

static void round_trip(const uint8_t *body, size_t n, uint8_t seed) {
  int op = (seed & 1) ? CH_WS_OP_TEXT : CH_WS_OP_BINARY;
  int rsv1 = (seed >> 1) & 1;
  int expect_bad = op == CH_WS_OP_TEXT && !rsv1 && !ch_utf8_valid(body, n);
  outcome_t o;

  /* server frame -> client reader */
  ch_chunk_t *k = ch_ws_frame_encode(op, rsv1, body, n);
  ch_ws_reader_cfg_t cc = {1, 1, 0, 0};
  uint8_t *wire = malloc(k->len);
  memcpy(wire, k->data, k->len);
  {
    state_t s = {cc, 0, 0, 0, -1};
    ch_ws_reader_t r;
    ch_ws_reader_init(&r, &cc, &kCb, &s);
    int rc = ch_ws_reader_feed(&r, wire, k->len);
    if (expect_bad) {
      CHECK(rc == CH_EUTF8 && s.events == 0);
    } else {
      CHECK(rc == 0 && s.events == 1);
    }
    ch_ws_reader_dispose(&r);
  }
  /* same, split: compare against hash of the expected single message */
  run_reader(&cc, (const uint8_t *)k->data, k->len, seed | 1u, -1, &o);
  if (!expect_bad) {
    state_t e = {cc, 0xcbf29ce484222325ull, 0, 0, -1};
    on_message(&e, op, rsv1, body, n);
    CHECK(o.rc == 0 && o.events == 1 && o.hash == e.hash);
  } else {
    CHECK(o.rc == CH_EUTF8);
  }
  free(wire);
  ch_chunk_unref(k);

  /* masked client frame -> server reader */
  uint8_t key[4] = {seed, (uint8_t)(seed * 7), (uint8_t)(seed ^ 0x5a), (uint8_t)~seed};
  uint8_t hdr[CH_WS_MAX_HEADER];
  size_t hn = ch_ws_frame_header(hdr, 1, rsv1, op, n, key);
  uint8_t *f = malloc(hn + n + 1);
  memcpy(f, hdr, hn);
  if (n) memcpy(f + hn, body, n);
  ch_ws_mask(f + hn, n, key, 0);
  ch_ws_reader_cfg_t sc = {0, 1, 0, 0};
  run_reader(&sc, f, hn + n, 0, -1, &o);
  if (expect_bad) CHECK(o.rc == CH_EUTF8);
  else CHECK(o.rc == 0 && o.events == 1);
  free(f);
}

static void mask_check(const uint8_t *body, size_t n, uint8_t seed) {
  uint8_t key[4] = {(uint8_t)(seed + 1), (uint8_t)(seed * 3), 0xA5, (uint8_t)(seed >> 1)};
  size_t off = seed & 7, skew = (seed >> 3) & 7;
  uint8_t *a = malloc(n + skew + 1), *b = malloc(n + 1);
  memcpy(a + skew, body, n);
  memcpy(b, body, n);
  ch_ws_mask(a + skew, n, key, off);
  for (size_t i = 0; i < n; i++) b[i] ^= key[(off + i) & 3];
  CHECK(memcmp(a + skew, b, n) == 0);
  free(a);
  free(b);
}

static void parser_check(const uint8_t *body, size_t n) {
  ch_ws_frame_parser_t whole, bytes;
  size_t off = 0, boff = 0;
  ch_ws_frame_parser_init(&whole);
  ch_ws_frame_parser_init(&bytes);
  /* Headers only, back to back (payloads skipped when they fit). */
  for (int guard = 0; guard < 64 && off < n; guard++) {
    ch_ws_frame_hdr_t h1, h2;
    size_t used;
    int rc1 = ch_ws_frame_parse(&whole, body + off, n - off, &used, &h1);
    if (rc1 == CH_AGAIN) break;
    size_t end = off + used;
    int rc2 = CH_AGAIN;
    while (rc2 == CH_AGAIN && boff < end) {
      size_t u;
      rc2 = ch_ws_frame_parse(&bytes, body + boff, 1, &u, &h2);
      CHECK(u == 1);
      boff++;
    }
    CHECK(rc1 == rc2 && boff == end);
    if (rc1 != 0) {
      CHECK(rc1 == CH_EPROTO);
      CHECK(ch_ws_frame_parser_fault(&whole) == ch_ws_frame_parser_fault(&bytes));
      break;
    }
    CHECK(h1.len == h2.len && h1.fin == h2.fin && h1.rsv == h2.rsv && h1.opcode == h2.opcode &&
          h1.masked == h2.masked && memcmp(h1.mask, h2.mask, 4) == 0);
    CHECK(h1.len < (1ull << 63));
    /* re-encode: same bytes when the flags fit the encoder (RSV2/3 clear) */
    if ((h1.rsv & 3) == 0) {
      uint8_t re[CH_WS_MAX_HEADER];
      size_t rn = ch_ws_frame_header(re, h1.fin, h1.rsv >> 2, h1.opcode, h1.len,
                                     h1.masked ? h1.mask : NULL);
      CHECK(rn == used && memcmp(re, body + off, rn) == 0);
    }
    off = end;
    if (h1.len > n - off) break;
    off += (size_t)h1.len;
    boff = off;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  ch_ws_reader_cfg_t cfg = {data[0] & 1, (data[0] >> 1) & 1, kLimits[(data[0] >> 2) & 7],
                            kLimits[(data[0] >> 5) & 7]};
  uint8_t seed = data[1];
  const uint8_t *body = data + 2;
  size_t n = size - 2;
  outcome_t whole, split, stopped;

  run_reader(&cfg, body, n, 0, -1, &whole);
  run_reader(&cfg, body, n, (uint32_t)seed + 1, -1, &split);
  CHECK(whole.rc == split.rc && whole.close == split.close && whole.hash == split.hash &&
        whole.events == split.events && strcmp(whole.err, split.err) == 0);
  /* the naive reference model agrees on events and verdict */
  {
    ref_t ref;
    ref_read(&cfg, body, n, &ref);
    CHECK(ref.rc == whole.rc && ref.hash == whole.hash && ref.events == whole.events);
    CHECK(strcmp(ch_ws_fault_str(ref.fault), whole.err) == 0);
  }
  /* a callback stopping early yields a prefix of the same events */
  if (whole.events > 0) {
    run_reader(&cfg, body, n, (uint32_t)seed + 7, seed % whole.events, &stopped);
    CHECK(stopped.rc == 1 && stopped.events == seed % whole.events + 1);
  }
  round_trip(body, n, seed);
  mask_check(body, n, seed);
  parser_check(body, n);
  return 0;
}
