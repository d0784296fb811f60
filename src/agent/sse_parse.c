/*
 * sse_parse.c — the event-stream parser and UTF-8 cleaner of sse_parse.h.
 *
 * State between feeds: the unfinished line (_line), the event being built
 * (_type, _data, _has_data), whether the previous feed ended on a CR (so a
 * leading LF of the next one closes no second line), and how much of a
 * leading BOM was matched. A line that ends inside the caller's buffer and
 * has no carried prefix is interpreted in place, without a copy.
 */
#include "agent/sse_parse.h"

#include <string.h>

#include "core/err.h"

static const unsigned char ch__bom[3] = {0xEF, 0xBB, 0xBF};

void ch_agent_sse_init(ch_agent_sse_t *p, size_t max, ch_agent_sse_event_cb cb, void *ud) {
  memset(p, 0, sizeof(*p));
  p->on_event = cb;
  p->ud = ud;
  p->max = max ? max : 1;
  ch_buf_init(&p->_line);
  ch_buf_init(&p->_data);
  ch_buf_init(&p->_type);
}

void ch_agent_sse_dispose(ch_agent_sse_t *p) {
  ch_buf_dispose(&p->_line);
  ch_buf_dispose(&p->_data);
  ch_buf_dispose(&p->_type);
}

static int ch__sse_dispatch(ch_agent_sse_t *p) {
  int rc = 0;
  if (p->_has_data) {
    size_t n = p->_data.len ? p->_data.len - 1 : 0; /* without the last LF */
    rc = p->on_event(p->ud, p->_type.base ? p->_type.base : "", p->_type.len, p->_data.base ? p->_data.base : "", n);
  }
  p->_data.len = 0;
  p->_type.len = 0;
  p->_has_data = 0;
  return rc;
}

/* One complete line, without its terminator. */
static int ch__sse_line(ch_agent_sse_t *p, const char *line, size_t len) {
  if (len == 0) return ch__sse_dispatch(p);
  if (line[0] == ':') return 0; /* a comment (keep-alive) */
  const char *colon = memchr(line, ':', len);
  size_t flen = colon ? (size_t)(colon - line) : len;
  const char *v = colon ? colon + 1 : line + len;
  size_t vlen = (size_t)(line + len - v);
  if (vlen > 0 && v[0] == ' ') {
    v++;
    vlen--;
  }
  if (flen == 5 && memcmp(line, "event", 5) == 0) {
    p->_type.len = 0;
    ch_buf_append(&p->_type, v, vlen);
  } else if (flen == 4 && memcmp(line, "data", 4) == 0) {
    if (p->_data.len + vlen + 1 > p->max) return CH_ETOOBIG;
    ch_buf_append(&p->_data, v, vlen);
    ch_buf_append_byte(&p->_data, '\n');
    p->_has_data = 1;
  }
  /* id, retry and unknown fields: ignored */
  return 0;
}

/* Bytes that began like a BOM but were not one are content of the first line. */
static void ch__sse_unbom(ch_agent_sse_t *p) {
  if (p->_bom > 0 && p->_bom < 3) ch_buf_append(&p->_line, ch__bom, p->_bom);
  p->_bom = 3;
}

int ch_agent_sse_feed(ch_agent_sse_t *p, const char *buf, size_t n) {
  const char *s = buf, *end = buf + n;
  while (p->_bom < 3 && s < end) {
    if ((unsigned char)*s != ch__bom[p->_bom]) {
      ch__sse_unbom(p);
      break;
    }
    p->_bom++;
    s++;
  }
  while (s < end) {
    if (p->_after_cr) {
      p->_after_cr = 0;
      if (*s == '\n') {
        s++;
        continue;
      }
    }
    const char *e = s;
    while (e < end && *e != '\n' && *e != '\r') e++;
    size_t k = (size_t)(e - s);
    if (p->_line.len + k > p->max) return CH_ETOOBIG;
    if (e == end) { /* unfinished: keep it for the next feed */
      ch_buf_append(&p->_line, s, k);
      return 0;
    }
    const char *line = s;
    if (p->_line.len) {
      ch_buf_append(&p->_line, s, k);
      line = p->_line.base;
      k = p->_line.len;
    }
    p->_after_cr = *e == '\r';
    s = e + 1;
    int rc = ch__sse_line(p, line, k);
    p->_line.len = 0;
    if (rc != 0) return rc;
  }
  return 0;
}

int ch_agent_sse_finish(ch_agent_sse_t *p) {
  ch__sse_unbom(p);
  if (p->_line.len) {
    int rc = ch__sse_line(p, p->_line.base, p->_line.len);
    p->_line.len = 0;
    if (rc != 0) return rc;
  }
  return ch__sse_dispatch(p);
}

/* ---- UTF-8 ------------------------------------------------------------------- */

static void ch__utf8_bad(ch_buf_t *out) { ch_buf_append(out, "\xEF\xBF\xBD", 3); }

size_t ch_agent_utf8_clean(ch_buf_t *out, const char *s, size_t n, int final) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0, run = 0; /* p[run..i) is valid and not yet appended */
  while (i < n) {
    unsigned c = p[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t need;
    unsigned lo = 0x80, hi = 0xBF; /* range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) need = 2, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) need = 2;
    else if (c == 0xED) need = 2, hi = 0x9F;
    else if (c == 0xF0) need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) need = 3, hi = 0x8F;
    else need = 0;
    size_t k = 1; /* bytes of the sequence that are valid so far */
    int ok = need > 0;
    while (ok && k <= need) {
      if (i + k >= n) {
        if (!final) { /* maybe completed by the next call */
          ch_buf_append(out, p + run, i - run);
          return i;
        }
        ok = 0;
        break;
      }
      unsigned b = p[i + k];
      if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) {
        ok = 0;
        break;
      }
      k++;
    }
    if (ok) {
      i += need + 1;
      continue;
    }
    ch_buf_append(out, p + run, i - run);
    ch__utf8_bad(out); /* one replacement for the maximal invalid subpart p[i..i+k) */
    i += k;
    run = i;
  }
  ch_buf_append(out, p + run, n - run);
  return n;
}
