/*
 * sse.h — Server-Sent Events codec: events out, Last-Event-ID in. Pure: no I/O.
 *
 * The text/event-stream format (WHATWG HTML, "Server-sent events") is a
 * sequence of field lines ended by a blank line:
 *
 *     id: 42\n                 <- optional; the client echoes it as Last-Event-ID
 *     event: message\n         <- optional; absent = "message"
 *     data: first line\n       <- one "data:" line per line of the payload
 *     data: second line\n
 *     \n                       <- dispatches the event
 *
 * A client joins the data lines with "\n", so any payload survives, with one
 * normalisation: CR LF and lone CR in the payload become LF (the format has
 * no way to carry a CR). id and event are single-line fields: CR and LF are
 * removed from them, so that no input can inject a field or end the event
 * early (they are C strings, so they cannot hold the NUL that would make a
 * client ignore the id).
 *
 * Every encoder appends to a caller-owned ch_buf_t and never fails (the
 * buffer grows or the process aborts on out-of-memory; size limits are the
 * caller's business, applied to the payload before it gets here).
 */
#ifndef CH_SSE_SSE_H
#define CH_SSE_SSE_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/*
 * Append one event to out.
 *   id     NUL-terminated; NULL = no id line. "" is sent ("id: \n") and resets
 *          the client's last event id.
 *   event  NUL-terminated; NULL or "" = no event line (the client uses "message").
 *   data   len bytes (may hold NUL bytes; need not be NUL-terminated); NULL only
 *          when len is 0. Split on LF, CR LF and CR into "data: " lines; len 0
 *          gives one empty data line, an event with empty data.
 * None of the pointers is kept after the call.
 */
void ch_sse_event(ch_buf_t *out, const char *id, const char *event, const char *data, size_t len);

/* Append a comment block ": text\n\n" (a heartbeat; clients ignore it). A multi-line
 * text becomes one ": " line per line; NULL or "" gives ":\n\n". */
void ch_sse_comment(ch_buf_t *out, const char *text);

/* Append "retry: <ms>\n\n": the client's reconnection delay, in milliseconds. */
void ch_sse_retry(ch_buf_t *out, unsigned ms);

/*
 * Parse a Last-Event-ID header value (or ?lastEventId=) as a sequence number:
 * strict canonical decimal — 1 to 20 digits, no sign, blanks or leading zeros
 * (except "0" itself), at most 18446744073709551615.
 *   0          *seq set
 *   CH_EINVAL  anything else (header NULL included); *seq untouched
 */
int ch_sse_last_event_id(const char *header, uint64_t *seq);

#endif
