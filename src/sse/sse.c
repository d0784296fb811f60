/*
 * sse.c — text/event-stream encoding and Last-Event-ID parsing (see sse.h).
 *
 * The encoders copy runs of safe bytes with one append each and handle line
 * breaks between runs, so the cost is linear in the payload with no per-byte
 * appends in the common case (a JSON payload without newlines is one run).
 */
#include "sse/sse.h"

#include <string.h>

#include "core/err.h"

/* Append the NUL-terminated field value s with CR and LF removed. */
static void ch__sse_field(ch_buf_t *out, const char *name, const char *s) {
  ch_buf_append_str(out, name);
  const char *run = s;
  for (; *s; s++) {
    if (*s == '\r' || *s == '\n') {
      ch_buf_append(out, run, (size_t)(s - run));
      run = s + 1;
    }
  }
  ch_buf_append(out, run, (size_t)(s - run));
  ch_buf_append_byte(out, '\n');
}

/*
 * Append p[0..len) as lines, each prefixed by prefix and ended by LF. LF, CR LF
 * and CR each end a line; a break at the very end gives a final empty line,
 * and len 0 gives one empty line, so the client's join restores the text.
 */
static void ch__sse_lines(ch_buf_t *out, const char *prefix, const char *p, size_t len) {
  const char *end = p + len;
  for (;;) {
    const char *q = p;
    while (q < end && *q != '\n' && *q != '\r') q++;
    ch_buf_append_str(out, prefix);
    ch_buf_append(out, p, (size_t)(q - p));
    ch_buf_append_byte(out, '\n');
    if (q == end) return;
    p = q + 1;
    if (*q == '\r' && p < end && *p == '\n') p++;
  }
}

void ch_sse_event(ch_buf_t *out, const char *id, const char *event, const char *data, size_t len) {
  if (id) ch__sse_field(out, "id: ", id);
  if (event && event[0]) ch__sse_field(out, "event: ", event);
  ch__sse_lines(out, "data: ", len ? data : "", len);
  ch_buf_append_byte(out, '\n');
}

void ch_sse_comment(ch_buf_t *out, const char *text) {
  if (text == NULL || text[0] == '\0') {
    ch_buf_append_str(out, ":\n\n");
    return;
  }
  ch__sse_lines(out, ": ", text, strlen(text));
  ch_buf_append_byte(out, '\n');
}

void ch_sse_retry(ch_buf_t *out, unsigned ms) { ch_buf_printf(out, "retry: %u\n\n", ms); }

int ch_sse_last_event_id(const char *header, uint64_t *seq) {
  static const char max[] = "18446744073709551615"; /* UINT64_MAX, 20 digits */
  if (header == NULL) return CH_EINVAL;
  size_t n = 0;
  while (header[n] >= '0' && header[n] <= '9') {
    if (++n > 20) return CH_EINVAL;
  }
  if (n == 0 || header[n] != '\0') return CH_EINVAL;
  if (n > 1 && header[0] == '0') return CH_EINVAL;
  if (n == 20 && memcmp(header, max, 20) > 0) return CH_EINVAL;
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) v = v * 10 + (uint64_t)(header[i] - '0');
  *seq = v;
  return 0;
}
