/*
 * response.h — HTTP/1.1 response heads and small complete responses.
 *
 * Pure formatting into a caller-owned ch_buf_t (appended, never reset), no
 * I/O. A head is laid out as
 *
 *     HTTP/1.1 <status> <reason>\r\n
 *     Server: chorus\r\n
 *     Content-Type: <type>\r\n          (if content_type != NULL)
 *     Content-Length: <n>\r\n           (if content_length >= 0 and the status may
 *                                        carry one: not 1xx, 204 or 304)
 *     Connection: keep-alive|close\r\n  (not for 101: the caller's extras say Upgrade)
 *     <extra_headers>                   (verbatim)
 *     \r\n
 *
 * No Date header is written. Every string argument is trusted caller text:
 * never pass peer input as content_type or extra_headers (header injection).
 * For a HEAD request the caller writes the head with the real length and
 * drops the body.
 */
#ifndef CH_HTTP_RESPONSE_H
#define CH_HTTP_RESPONSE_H

#include <stddef.h>

#include "core/buf.h"

/* Reason phrase for status ("Not Found"), "Unknown" for codes without one. Static. */
const char *ch_http_status_text(int status);

/* Append a response head to out. content_type may be NULL (no header).
 * content_length -1: no Content-Length (the body is streamed until close, or
 * chunked if extra_headers says "Transfer-Encoding: chunked"). keep_alive
 * selects "Connection: keep-alive" or "Connection: close". extra_headers: zero
 * or more complete "Name: value\r\n" lines, or NULL. */
void ch_http_response_head(ch_buf_t *out, int status, const char *content_type,
                           long long content_length, int keep_alive, const char *extra_headers);

/* Append head + body, Content-Type: application/json. json[0..len) is borrowed. */
void ch_http_response_json(ch_buf_t *out, int status, const char *json, size_t len, int keep_alive);

/* Append a JSON error response: {"success":false,"error":"<message>"} with the
 * message JSON-escaped. message NULL means ch_http_status_text(status). */
void ch_http_response_error(ch_buf_t *out, int status, const char *message, int keep_alive);
/* Same with extra header lines (e.g. "Allow: GET, HEAD\r\n" for 405), may be NULL. */
void ch_http_response_error_ex(ch_buf_t *out, int status, const char *message, int keep_alive,
                               const char *extra_headers);

#endif
