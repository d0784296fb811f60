/*
 * frame.c — RFC 6455 frame codec (see frame.h for the wire layout).
 *
 * The header parser has a fast path and a slow path. When the whole header
 * lies in the caller's bytes (the common case) it is decoded in place. Only
 * a header split across reads is copied, byte run by byte run, into the
 * parser's 14-byte array until complete; nothing is ever allocated.
 *
 * Masking XORs a 64-bit word built from the key rotated to the current
 * payload offset. Words are loaded and stored with memcpy, so the code has no
 * alignment or aliasing hazards and compilers turn it into plain (or vector)
 * loads; a byte loop handles the unaligned head and the tail.
 */
#include "ws/frame.h"

#include <string.h>

#include "core/err.h"

/* ---- encoding ----------------------------------------------------------- */

size_t ch_ws_frame_header(uint8_t out[CH_WS_MAX_HEADER], int fin, int rsv1, int opcode,
                          uint64_t payload_len, const uint8_t *mask4) {
  size_t n = 2;
  out[0] = (uint8_t)((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (opcode & 0x0F));
  out[1] = mask4 ? 0x80 : 0;
  if (payload_len < 126) {
    out[1] |= (uint8_t)payload_len;
  } else if (payload_len <= 0xFFFF) {
    out[1] |= 126;
    out[2] = (uint8_t)(payload_len >> 8);
    out[3] = (uint8_t)payload_len;
    n = 4;
  } else {
    out[1] |= 127;
    for (int i = 0; i < 8; i++) out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
    out[2] &= 0x7F; /* MSB must be 0 (payload_len < 2^63 by contract) */
    n = 10;
  }
  if (mask4) {
    memcpy(out + n, mask4, 4);
    n += 4;
  }
  return n;
}

void ch_ws_mask(uint8_t *data, size_t len, const uint8_t mask[4], size_t offset) {
  size_t i = 0;
  size_t o = offset & 3;

  /* Head: bytes until data + i is 8-aligned. */
  while (i < len && ((uintptr_t)(data + i) & 7) != 0) {
    data[i] ^= mask[(o + i) & 3];
    i++;
  }
  if (len - i >= 8) {
    uint8_t m8[8];
    uint64_t m;
    for (size_t k = 0; k < 8; k++) m8[k] = mask[(o + i + k) & 3];
    memcpy(&m, m8, 8);
    /* 8 is a multiple of 4: the same rotated key fits every later word. */
    for (; len - i >= 32; i += 32) {
      uint64_t w[4];
      memcpy(w, data + i, 32);
      w[0] ^= m;
      w[1] ^= m;
      w[2] ^= m;
      w[3] ^= m;
      memcpy(data + i, w, 32);
    }
    for (; len - i >= 8; i += 8) {
      uint64_t w;
      memcpy(&w, data + i, 8);
      w ^= m;
      memcpy(data + i, &w, 8);
    }
  }
  for (; i < len; i++) data[i] ^= mask[(o + i) & 3];
}

ch_chunk_t *ch_ws_frame_encode(int opcode, int rsv1, const void *payload, size_t len) {
  uint8_t h[CH_WS_MAX_HEADER];
  size_t hn = ch_ws_frame_header(h, 1, rsv1, opcode, len, NULL);
  ch_chunk_t *k = ch_chunk_new(hn + len);
  memcpy(k->data, h, hn);
  if (len) memcpy(k->data + hn, payload, len);
  return k;
}

ch_chunk_t *ch_ws_close_frame(uint16_t code, const char *reason) {
  uint8_t pl[CH_WS_MAX_CONTROL];
  size_t n = 0;
  if (code != 0) {
    size_t rn = reason ? strlen(reason) : 0;
    if (rn > CH_WS_MAX_CONTROL - 2) {
      rn = CH_WS_MAX_CONTROL - 2;
      /* Back up to the start of the code point that straddles the cut. */
      while (rn > 0 && ((uint8_t)reason[rn] & 0xC0) == 0x80) rn--;
    }
    pl[0] = (uint8_t)(code >> 8);
    pl[1] = (uint8_t)code;
    if (rn) memcpy(pl + 2, reason, rn);
    n = 2 + rn;
  }
  return ch_ws_frame_encode(CH_WS_OP_CLOSE, 0, pl, n);
}

int ch_ws_close_code_valid(uint16_t code) {
  if (code >= 1000 && code <= 1003) return 1;
  if (code >= 1007 && code <= 1014) return 1;
  return code >= 3000 && code <= 4999;
}

/* ---- faults ------------------------------------------------------------- */

static const struct {
  const char *str;
  uint16_t close;
  int err;
} ch__ws_faults[CH_WS_FAULT__COUNT] = {
    [CH_WS_FAULT_NONE] = {"no error", 0, 0},
    [CH_WS_FAULT_LEN_NONMINIMAL] = {"non-minimal length encoding", 1002, CH_EPROTO},
    [CH_WS_FAULT_LEN_MSB] = {"64-bit length with MSB set", 1002, CH_EPROTO},
    [CH_WS_FAULT_UNMASKED] = {"unmasked client frame", 1002, CH_EPROTO},
    [CH_WS_FAULT_MASKED] = {"masked server frame", 1002, CH_EPROTO},
    [CH_WS_FAULT_RSV] = {"reserved bits set", 1002, CH_EPROTO},
    [CH_WS_FAULT_OPCODE] = {"reserved opcode", 1002, CH_EPROTO},
    [CH_WS_FAULT_CTL_LONG] = {"control frame too long", 1002, CH_EPROTO},
    [CH_WS_FAULT_CTL_FRAG] = {"fragmented control frame", 1002, CH_EPROTO},
    [CH_WS_FAULT_CONT] = {"continuation without start", 1002, CH_EPROTO},
    [CH_WS_FAULT_NEW_IN_FRAG] = {"new message during fragmented message", 1002, CH_EPROTO},
    [CH_WS_FAULT_UTF8] = {"invalid UTF-8", 1007, CH_EUTF8},
    [CH_WS_FAULT_FRAME_BIG] = {"frame too large", 1009, CH_ETOOBIG},
    [CH_WS_FAULT_MSG_BIG] = {"message too large", 1009, CH_ETOOBIG},
    [CH_WS_FAULT_CLOSE_CODE] = {"invalid close code", 1002, CH_EPROTO},
    [CH_WS_FAULT_CLOSE_1BYTE] = {"close payload of 1 byte", 1002, CH_EPROTO},
};

const char *ch_ws_fault_str(int fault) {
  if (fault < 0 || fault >= CH_WS_FAULT__COUNT) return "unknown";
  return ch__ws_faults[fault].str;
}

uint16_t ch_ws_fault_close_code(int fault) {
  if (fault <= 0 || fault >= CH_WS_FAULT__COUNT) return 0;
  return ch__ws_faults[fault].close;
}

int ch_ws_fault_err(int fault) {
  if (fault <= 0 || fault >= CH_WS_FAULT__COUNT) return 0;
  return ch__ws_faults[fault].err;
}

/* ---- header parser ------------------------------------------------------ */

void ch_ws_frame_parser_init(ch_ws_frame_parser_t *fp) {
  fp->_have = 0;
  fp->_fault = CH_WS_FAULT_NONE;
}

/* Header length implied by the first two bytes. */
static size_t ch__ws_hdr_len(const uint8_t *b) {
  size_t n = 2;
  uint8_t l7 = b[1] & 0x7F;
  if (l7 == 126) n += 2;
  else if (l7 == 127) n += 8;
  if (b[1] & 0x80) n += 4;
  return n;
}

/* Decode a complete header in b (ch__ws_hdr_len(b) bytes). */
static int ch__ws_hdr_decode(ch_ws_frame_parser_t *fp, const uint8_t *b, ch_ws_frame_hdr_t *h) {
  size_t n = 2;
  uint8_t l7 = b[1] & 0x7F;
  uint64_t len = l7;

  if (l7 == 126) {
    len = ((uint64_t)b[2] << 8) | b[3];
    n = 4;
    if (len < 126) goto Nonminimal;
  } else if (l7 == 127) {
    if (b[2] & 0x80) {
      fp->_fault = CH_WS_FAULT_LEN_MSB;
      return CH_EPROTO;
    }
    len = 0;
    for (int i = 0; i < 8; i++) len = (len << 8) | b[2 + i];
    n = 10;
    if (len <= 0xFFFF) goto Nonminimal;
  }
  h->len = len;
  h->fin = b[0] >> 7;
  h->rsv = (b[0] >> 4) & 7;
  h->opcode = b[0] & 0x0F;
  h->masked = b[1] >> 7;
  if (h->masked) memcpy(h->mask, b + n, 4);
  else memset(h->mask, 0, 4);
  return 0;

Nonminimal:
  fp->_fault = CH_WS_FAULT_LEN_NONMINIMAL;
  return CH_EPROTO;
}

int ch_ws_frame_parse(ch_ws_frame_parser_t *fp, const uint8_t *p, size_t n, size_t *used,
                      ch_ws_frame_hdr_t *h) {
  size_t i = 0, need, take;

  *used = 0;
  if (fp->_fault != CH_WS_FAULT_NONE) return CH_EPROTO;

  /* Fast path: the whole header is in p; decode it where it lies. */
  if (fp->_have == 0 && n >= 2) {
    need = ch__ws_hdr_len(p);
    if (n >= need) {
      *used = need;
      return ch__ws_hdr_decode(fp, p, h);
    }
  }

  /* Slow path: gather the header into _buf. */
  while (fp->_have < 2 && i < n) fp->_buf[fp->_have++] = p[i++];
  if (fp->_have < 2) {
    *used = i;
    return CH_AGAIN;
  }
  need = ch__ws_hdr_len(fp->_buf);
  take = need - fp->_have;
  if (take > n - i) take = n - i;
  if (take) memcpy(fp->_buf + fp->_have, p + i, take);
  fp->_have = (uint8_t)(fp->_have + take);
  i += take;
  *used = i;
  if (fp->_have < need) return CH_AGAIN;
  fp->_have = 0;
  return ch__ws_hdr_decode(fp, fp->_buf, h);
}

int ch_ws_frame_parser_fault(const ch_ws_frame_parser_t *fp) { return fp->_fault; }
