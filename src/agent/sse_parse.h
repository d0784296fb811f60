/*
 * sse_parse.h — pure codecs for upstream agent streams: a resumable
 * server-sent-events parser (WHATWG "event stream interpretation") and a
 * UTF-8 cleaner. No libuv, no libcurl: bytes in, events out.
 *
 *   bytes (any split) ──> ch_agent_sse_feed ──> lines (LF | CR | CRLF, even
 *                                               when CR and LF arrive in two feeds)
 *                                                 │ "event:" / "data:" / ":comment" / other fields
 *                                                 ▼
 *                                    blank line ──> on_event(type, data) (data lines joined by LF)
 *
 * The parser copies only what a feed leaves unfinished: a line complete in
 * the caller's buffer is interpreted in place. Caps: a line, and the data of
 * one event, may hold at most `max` bytes (CH_ETOOBIG beyond; checked as soon
 * as the input proves it), so a peer cannot make it grow without bound.
 * A leading UTF-8 byte order mark is skipped. `id` and `retry` fields are
 * ignored (an upstream reply is never resumed).
 *
 * Deviation from the WHATWG text, on purpose: ch_agent_sse_finish dispatches
 * an event whose blank line never came (some servers close the connection
 * right after their last data line); the browser algorithm drops it.
 */
#ifndef CH_AGENT_SSE_PARSE_H
#define CH_AGENT_SSE_PARSE_H

#include <stddef.h>

#include "core/buf.h"

/* An event: type (the last "event:" value, or "" when none: the default
 * "message") and data (the "data:" values joined by LF, no trailing LF).
 * Both are valid only during the call and are not NUL-terminated.
 * Return 0 to go on; anything else stops the feed, which returns it. */
typedef int (*ch_agent_sse_event_cb)(void *ud, const char *type, size_t type_len, const char *data,
                                     size_t data_len);

typedef struct {
  ch_agent_sse_event_cb on_event; /* not owned */
  void *ud;                       /* the callback's, not owned */
  size_t max;                     /* bytes: cap of a line and of one event's data */
  ch_buf_t _line;                 /* owned: the unfinished line carried between feeds */
  ch_buf_t _data;                 /* owned: data of the event being built (each value + LF) */
  ch_buf_t _type;                 /* owned: its type */
  unsigned _bom;                  /* bytes of a leading BOM matched so far; 3 = past the start */
  int _after_cr;                  /* the last line ended with CR: a following LF belongs to it */
  int _has_data;                  /* a data field was seen for the current event */
} ch_agent_sse_t;

/* Prepare p (no allocation until input needs it). max: bytes, at least 1. */
void ch_agent_sse_init(ch_agent_sse_t *p, size_t max, ch_agent_sse_event_cb cb, void *ud);
/* Release p's buffers; p may be initialised again. */
void ch_agent_sse_dispose(ch_agent_sse_t *p);
/* Parse n more bytes. Returns 0 (all consumed, complete events dispatched),
 * CH_ETOOBIG (a line or an event's data exceeds max: the stream is unusable),
 * or the non-zero value a callback returned (the rest of buf is not
 * interpreted). After a non-zero return, only dispose is meaningful. */
int ch_agent_sse_feed(ch_agent_sse_t *p, const char *buf, size_t n);
/* End of input: interprets an unfinished last line and dispatches an event
 * that lacks its blank line. Returns 0, CH_ETOOBIG, or a callback's value. */
int ch_agent_sse_finish(ch_agent_sse_t *p);

/* Append the UTF-8 of p[0..n) to out, each maximal invalid subsequence
 * replaced by U+FFFD (RFC 3629: no overlongs, surrogates or code points above
 * U+10FFFF; Unicode's "maximal subpart" practice). Unless `final`, a valid
 * but incomplete sequence at the very end is left unconsumed, for the next
 * call. Returns the number of bytes consumed (n, or n minus 1..3). */
size_t ch_agent_utf8_clean(ch_buf_t *out, const char *p, size_t n, int final);

#endif
