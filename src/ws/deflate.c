/*
 * deflate.c — RFC 7692 permessage-deflate (see deflate.h for the contract).
 *
 * Negotiation is a small hand-written scanner over the header value, in the
 * grammar of RFC 6455 9.1 / RFC 7230 with optional whitespace (OWS):
 *
 *     list   = [offer] *( OWS "," OWS [offer] )
 *     offer  = token *( OWS ";" OWS param )
 *     param  = token [ OWS "=" OWS ( token / quoted-string ) ]
 *
 * Each offer is parsed into an offer_t; a syntax error inside one offer marks
 * it invalid and the scanner resynchronises at the next top-level comma
 * (commas inside quoted strings do not count), so garbage in one element
 * never hides a good fallback offer after it. The first valid
 * permessage-deflate offer that the policy accepts wins.
 *
 * The codec keeps two lazily created z_streams, one per direction:
 *
 *     ch_ws_deflate_t (~24 bytes)
 *       _def --> z_stream + zlib deflate state   (NULL until first compress)
 *       _inf --> z_stream + zlib inflate state   (NULL until first inflate)
 *
 * A direction with no_context_takeover ends and frees its stream after each
 * message, so it costs nothing between messages. Both streams are raw
 * DEFLATE (negative windowBits), as RFC 7692 requires.
 *
 * Inflate never trusts the input's ratio: output goes straight into the
 * caller's buffer in steps whose total is capped at max_out + 1 bytes, and
 * one byte beyond max_out proves the message too big. After the input and
 * the 00 00 ff ff tail are consumed, the inflater must sit on a block
 * boundary (zlib reports it in data_type bit 7); anything else means the
 * peer's payload ended inside a block, which would corrupt the next message.
 */
#define ZLIB_CONST
#include "ws/deflate.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "core/alloc.h"
#include "core/err.h"

#define CH__ZMAX (1u << 30) /* largest avail_in/avail_out handed to zlib at once */

static const unsigned char ch__ws_tail[4] = {0x00, 0x00, 0xff, 0xff};

/* ------------------------------------------------------------------------ */
/* negotiation                                                              */

enum { P_SNCT = 1, P_CNCT = 2, P_SMWB = 4, P_CMWB = 8 };

typedef struct {
  int is_pmd;      /* extension name is permessage-deflate */
  int valid;       /* syntax and parameters acceptable so far */
  unsigned seen;   /* P_* bits already present (duplicates are invalid) */
  int server_nct;  /* server_no_context_takeover present */
  int client_nct;  /* client_no_context_takeover present */
  int server_bits; /* 0 = absent, else 8..15 */
  int client_bits; /* 0 = absent, -1 = present without value, else 8..15 */
} offer_t;

static int is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return 1;
  return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static const char *skip_ows(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t')) p++;
  return p;
}

static const char *skip_token(const char *p, const char *end) {
  while (p < end && is_tchar((unsigned char)*p)) p++;
  return p;
}

/* Advance to the next top-level ',' (or end), stepping over quoted strings. */
static const char *skip_to_comma(const char *p, const char *end) {
  int inq = 0;
  for (; p < end; p++) {
    if (inq) {
      if (*p == '\\' && p + 1 < end)
        p++;
      else if (*p == '"')
        inq = 0;
    } else if (*p == '"') {
      inq = 1;
    } else if (*p == ',') {
      break;
    }
  }
  return p;
}

static int name_is(const char *p, size_t n, const char *lit) {
  return strlen(lit) == n && strncasecmp(p, lit, n) == 0;
}

/*
 * Quoted string at p (*p == '"'). Copies up to cap unescaped bytes into v and
 * sets *vl to the full unescaped length. Returns the position after the
 * closing quote, or NULL on a syntax error.
 */
static const char *parse_quoted(const char *p, const char *end, char *v, size_t cap, size_t *vl) {
  size_t n = 0;
  for (p++; p < end; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '"') {
      *vl = n;
      return p + 1;
    }
    if (c == '\\') {
      if (++p == end) return NULL;
      c = (unsigned char)*p;
      if (c < 0x20 && c != '\t') return NULL;
    } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
      return NULL;
    }
    if (n < cap) v[n] = (char)c;
    n++;
  }
  return NULL;
}

/* "8".."15", decimal, no leading zero; -1 otherwise. */
static int parse_bits(const char *v, size_t vl) {
  if (vl == 1 && v[0] >= '8' && v[0] <= '9') return v[0] - '0';
  if (vl == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5') return 10 + (v[1] - '0');
  return -1;
}

static void apply_param(offer_t *o, const char *pn, size_t pnl, int has_val, const char *v,
                        size_t vl) {
  unsigned bit;
  if (name_is(pn, pnl, "server_no_context_takeover"))
    bit = P_SNCT;
  else if (name_is(pn, pnl, "client_no_context_takeover"))
    bit = P_CNCT;
  else if (name_is(pn, pnl, "server_max_window_bits"))
    bit = P_SMWB;
  else if (name_is(pn, pnl, "client_max_window_bits"))
    bit = P_CMWB;
  else {
    o->valid = 0; /* unknown parameter */
    return;
  }
  if (o->seen & bit) {
    o->valid = 0; /* duplicate */
    return;
  }
  o->seen |= bit;
  switch (bit) {
  case P_SNCT:
    if (has_val) o->valid = 0;
    o->server_nct = 1;
    break;
  case P_CNCT:
    if (has_val) o->valid = 0;
    o->client_nct = 1;
    break;
  case P_SMWB:
    o->server_bits = has_val ? parse_bits(v, vl) : -1;
    if (o->server_bits < 0) o->valid = 0;
    break;
  default: /* P_CMWB */
    if (!has_val) {
      o->client_bits = -1;
    } else {
      o->client_bits = parse_bits(v, vl);
      if (o->client_bits < 0) o->valid = 0;
    }
    break;
  }
}

/* Parse one offer starting at a token; returns the position of the next ',' or end. */
static const char *parse_offer(const char *p, const char *end, offer_t *o) {
  memset(o, 0, sizeof(*o));
  const char *name = p;
  p = skip_token(p, end);
  if (p == name) goto Bad;
  o->is_pmd = name_is(name, (size_t)(p - name), "permessage-deflate");
  o->valid = 1;
  for (;;) {
    p = skip_ows(p, end);
    if (p == end || *p == ',') return p;
    if (*p != ';') goto Bad;
    p = skip_ows(p + 1, end);
    const char *pn = p;
    p = skip_token(p, end);
    size_t pnl = (size_t)(p - pn);
    if (pnl == 0) goto Bad;
    p = skip_ows(p, end);
    int has_val = 0;
    char v[4] = {0};
    size_t vl = 0;
    if (p < end && *p == '=') {
      has_val = 1;
      p = skip_ows(p + 1, end);
      if (p < end && *p == '"') {
        const char *q = parse_quoted(p, end, v, sizeof(v), &vl);
        if (q == NULL) goto Bad; /* resync from the quote: skip_to_comma knows quoting */
        p = q;
      } else {
        const char *vs = p;
        p = skip_token(p, end);
        vl = (size_t)(p - vs);
        if (vl == 0) goto Bad;
        memcpy(v, vs, vl < sizeof(v) ? vl : sizeof(v));
      }
    }
    if (o->is_pmd) apply_param(o, pn, pnl, has_val, v, vl);
  }
Bad:
  o->valid = 0;
  return skip_to_comma(p, end);
}

/* Policy window: 0 or out of range -> 15, 8 (or less) -> 9. */
static int norm_bits(int b) {
  if (b <= 0 || b > 15) return 15;
  return b < 9 ? 9 : b;
}

int ch_ws_deflate_negotiate(const char *header, const ch_ws_deflate_cfg_t *cfg,
                            ch_ws_deflate_params_t *out, ch_buf_t *response_value) {
  if (cfg == NULL || out == NULL) return CH_EINVAL;
  memset(out, 0, sizeof(*out));
  if (!cfg->enabled || header == NULL) return 0;

  int sbits = norm_bits(cfg->server_max_window_bits);
  int cbits = norm_bits(cfg->client_max_window_bits);
  const char *p = header, *end = header + strlen(header);
  offer_t o;
  for (;;) {
    p = skip_ows(p, end);
    if (p == end) return 0;
    if (*p == ',') {
      p++;
      continue;
    }
    p = parse_offer(p, end, &o);
    if (!o.is_pmd || !o.valid) continue;
    if (o.server_bits == 8) continue;              /* zlib cannot deflate raw with 8 */
    if (cbits < 15 && o.client_bits == 0) continue; /* cannot limit this client */
    break;
  }

  out->enabled = 1;
  out->server_no_context_takeover = o.server_nct || cfg->server_no_context_takeover;
  out->client_no_context_takeover = o.client_nct || cfg->client_no_context_takeover;
  out->server_max_window_bits = o.server_bits > 0 && o.server_bits < sbits ? o.server_bits : sbits;
  if (o.client_bits > 0)
    out->client_max_window_bits = o.client_bits < cbits ? o.client_bits : cbits;
  else if (o.client_bits < 0)
    out->client_max_window_bits = cbits;
  else
    out->client_max_window_bits = 15;

  if (response_value) {
    ch_buf_append_str(response_value, "permessage-deflate");
    if (out->server_no_context_takeover)
      ch_buf_append_str(response_value, "; server_no_context_takeover");
    if (out->client_no_context_takeover)
      ch_buf_append_str(response_value, "; client_no_context_takeover");
    /* Must be echoed when offered (clients such as Python websockets fail otherwise). */
    if (o.server_bits > 0 || out->server_max_window_bits < 15)
      ch_buf_printf(response_value, "; server_max_window_bits=%d", out->server_max_window_bits);
    /* Only possible below 15 if the client offered the parameter. */
    if (out->client_max_window_bits < 15)
      ch_buf_printf(response_value, "; client_max_window_bits=%d", out->client_max_window_bits);
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* codec                                                                    */

struct ch_ws_deflate_s {
  z_stream *_def;         /* owned; NULL until the first compress (and after each one if _def_reset) */
  z_stream *_inf;         /* owned; NULL until the first inflate (and after each one if _inf_reset) */
  signed char _def_bits;  /* 9..15: our compression window */
  signed char _inf_bits;  /* 9..15: the peer's window (8 is inflated with 9) */
  unsigned char _def_reset; /* 1 = our side has no_context_takeover */
  unsigned char _inf_reset; /* 1 = the peer has no_context_takeover */
  signed char _level;     /* zlib level */
  signed char _mem_level; /* zlib memLevel */
};

ch_ws_deflate_t *ch_ws_deflate_new(const ch_ws_deflate_params_t *p, int is_server, int level,
                                   int mem_level) {
  if (p == NULL || !p->enabled) return NULL;
  int sb = p->server_max_window_bits, cb = p->client_max_window_bits;
  if (sb < 8 || sb > 15 || cb < 8 || cb > 15) return NULL;
  int def_bits = is_server ? sb : cb, inf_bits = is_server ? cb : sb;
  if (def_bits == 8) return NULL;
  ch_ws_deflate_t *d = CH_NEW(ch_ws_deflate_t);
  d->_def_bits = (signed char)def_bits;
  d->_inf_bits = (signed char)(inf_bits < 9 ? 9 : inf_bits);
  d->_def_reset = (unsigned char)(is_server ? !!p->server_no_context_takeover
                                            : !!p->client_no_context_takeover);
  d->_inf_reset = (unsigned char)(is_server ? !!p->client_no_context_takeover
                                            : !!p->server_no_context_takeover);
  d->_level = (signed char)(level >= 1 && level <= 9 ? level : 6);
  d->_mem_level = (signed char)(mem_level >= 1 && mem_level <= 9 ? mem_level : 8);
  return d;
}

static void drop_def(ch_ws_deflate_t *d) {
  if (d->_def == NULL) return;
  deflateEnd(d->_def);
  free(d->_def);
  d->_def = NULL;
}

static void drop_inf(ch_ws_deflate_t *d) {
  if (d->_inf == NULL) return;
  inflateEnd(d->_inf);
  free(d->_inf);
  d->_inf = NULL;
}

void ch_ws_deflate_free(ch_ws_deflate_t *d) {
  if (d == NULL) return;
  drop_def(d);
  drop_inf(d);
  free(d);
}

int ch_ws_deflate_compress(ch_ws_deflate_t *d, const void *in, size_t n, ch_buf_t *out) {
  size_t base = out->len;
  int rc = 0;
  if (n == 0) {
    /* An empty stored block, BFINAL=0: "00" + the implied 00 00 ff ff.
     * Our stream is byte-aligned after every sync flush, so this needs no
     * zlib call (which would report Z_BUF_ERROR for a repeated flush). */
    ch_buf_append_byte(out, 0x00);
    return 0;
  }
  if (d->_def == NULL) {
    d->_def = CH_NEW(z_stream);
    if (deflateInit2(d->_def, d->_level, Z_DEFLATED, -d->_def_bits, d->_mem_level,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
      free(d->_def);
      d->_def = NULL;
      return CH_ENOMEM;
    }
  }
  z_stream *zs = d->_def;
  const unsigned char *src = in;
  size_t rem = n;
  size_t want = (size_t)deflateBound(zs, (uLong)(n < CH__ZMAX ? n : CH__ZMAX)) + 8;
  for (;;) {
    uInt piece = (uInt)(rem < CH__ZMAX ? rem : CH__ZMAX);
    zs->next_in = src;
    zs->avail_in = piece;
    src += piece;
    rem -= piece;
    int flush = rem ? Z_NO_FLUSH : Z_SYNC_FLUSH;
    do {
      ch_buf_reserve(out, want);
      size_t room = out->cap - out->len - 1; /* reserve keeps one byte for a NUL */
      zs->next_out = (unsigned char *)out->base + out->len;
      zs->avail_out = (uInt)(room < CH__ZMAX ? room : CH__ZMAX);
      uInt before = zs->avail_out;
      int zrc = deflate(zs, flush);
      out->len += before - zs->avail_out;
      if (zrc == Z_STREAM_ERROR) {
        rc = CH_EIO;
        goto Exit;
      }
      want = 4096;
    } while (zs->avail_out == 0);
    if (rem == 0) break;
  }
  if (out->len - base < 4 || memcmp(out->base + out->len - 4, ch__ws_tail, 4) != 0) {
    rc = CH_EIO; /* cannot happen with a sync flush; never send a broken stream */
    goto Exit;
  }
  out->len -= 4;
Exit:
  if (rc != 0) {
    out->len = base;
    drop_def(d);
  } else if (d->_def_reset) {
    drop_def(d);
  }
  return rc;
}

/*
 * After a final block (BFINAL=1) zlib's stream is over. With context
 * takeover the next message may still refer back into the window, so carry
 * the window over into a reset stream.
 */
static int restart_keep_window(ch_ws_deflate_t *d) {
  z_stream *zs = d->_inf;
  unsigned char *dict = ch_xmalloc((size_t)1 << d->_inf_bits);
  uInt dl = 0;
  int rc = 0;
  if (inflateGetDictionary(zs, dict, &dl) != Z_OK || inflateReset(zs) != Z_OK ||
      (dl && inflateSetDictionary(zs, dict, dl) != Z_OK))
    rc = CH_EIO;
  free(dict);
  return rc;
}

int ch_ws_deflate_inflate(ch_ws_deflate_t *d, const void *in, size_t n, size_t max_out,
                          ch_buf_t *out) {
  size_t base = out->len;
  int rc = 0;
  if (n == 0) return 0;
  if (d->_inf == NULL) {
    d->_inf = CH_NEW(z_stream);
    if (inflateInit2(d->_inf, -d->_inf_bits) != Z_OK) {
      free(d->_inf);
      d->_inf = NULL;
      return CH_ENOMEM;
    }
  }
  z_stream *zs = d->_inf;
  const unsigned char *src = in;
  size_t rem = n;
  int tail_fed = 0, flushed = 0, ended = 0;
  size_t step = n < 256 ? 1024 : n < 16384 ? n * 4 : 65536; /* first guess; then doubles */
  zs->avail_in = 0;
  for (;;) {
    if (zs->avail_in == 0) {
      if (rem) {
        uInt piece = (uInt)(rem < CH__ZMAX ? rem : CH__ZMAX);
        zs->next_in = src;
        zs->avail_in = piece;
        src += piece;
        rem -= piece;
      } else if (!tail_fed) {
        zs->next_in = ch__ws_tail;
        zs->avail_in = sizeof(ch__ws_tail);
        tail_fed = 1;
      } else if (flushed) {
        break;
      }
    }
    /* Allowance: at most max_out + 1 bytes in total, the +1 proving excess. */
    size_t produced = out->len - base;
    size_t room = max_out - produced;
    if (room < SIZE_MAX) room++;
    size_t ask = step < room ? step : room;
    ch_buf_reserve(out, ask);
    size_t avail = out->cap - out->len - 1;
    if (avail > room) avail = room;
    zs->next_out = (unsigned char *)out->base + out->len;
    zs->avail_out = (uInt)(avail < CH__ZMAX ? avail : CH__ZMAX);
    uInt before = zs->avail_out;
    int zrc = inflate(zs, Z_SYNC_FLUSH);
    out->len += before - zs->avail_out;
    if (out->len - base > max_out) {
      rc = CH_ETOOBIG;
      goto Exit;
    }
    if (zrc == Z_STREAM_END) {
      ended = 1;
      break;
    }
    if (zrc == Z_MEM_ERROR) {
      rc = CH_ENOMEM;
      goto Exit;
    }
    if (zrc != Z_OK && zrc != Z_BUF_ERROR) {
      rc = CH_EPROTO;
      goto Exit;
    }
    flushed = zs->avail_out != 0;
    if (zs->avail_in != 0 && flushed) {
      rc = CH_EPROTO; /* zlib stopped with input and room left: no progress possible */
      goto Exit;
    }
    size_t got = out->len - base;
    step = got > 4096 ? got : 4096;
  }
  if (ended) {
    if (!d->_inf_reset) rc = restart_keep_window(d);
  } else if (!(zs->data_type & 128)) {
    rc = CH_EPROTO; /* payload ended inside a block */
  }
Exit:
  if (rc != 0) {
    out->len = base;
    drop_inf(d);
  } else if (d->_inf_reset) {
    drop_inf(d);
  }
  return rc;
}
