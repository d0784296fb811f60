/*
 * request.h — incremental HTTP/1.1 request reader over http-parser.
 *
 * The reader turns a byte stream into whole requests, ONE at a time, so that
 * pipelined requests and the bytes after an Upgrade are never swallowed:
 *
 *     bytes --feed--> [ http_parser + callbacks ] --0--> take() --> ch_http_req_t
 *                       |  url/field/value scratch |            (caller owns)
 *                       |  limits checked here     |--<0--> status() 4xx/5xx
 *
 * Flow: the caller feeds whatever the socket gave it. ch_http_reader_feed()
 * returns CH_AGAIN (all bytes used, need more), 0 (one request complete;
 * *consumed says how many bytes of this call belong to it; the rest belongs
 * to the next request, or after an upgrade to the new protocol), or a
 * negative error with an HTTP status to answer before closing.
 *
 * How one request is cut out: the http_parser is paused in its
 * on_message_complete callback, so http_parser_execute() returns right after
 * the last byte of the message; ch_http_reader_take() re-initialises the
 * parser for the next message. For an Upgrade (or a request whose body ends
 * the message) execution stops at the end of the message, never later.
 *
 * Limits (each checked where the input proves it, whatever the split):
 *   max_header_bytes  request line + headers (incl. leading CRLFs and the
 *                     blank line). While the head is incomplete the reader
 *                     never hands the parser more than the bytes left under
 *                     this cap, so a huge head is refused after exactly
 *                     max_header_bytes bytes                         -> 431
 *                     (chunked trailers get their own budget of the same size;
 *                     http-parser's built-in 80 KiB cap also answers 431)
 *   max_headers       header field count                             -> 431
 *   max_url           request target length                          -> 414
 *   max_body          Content-Length (refused at the end of the head,
 *                     before any body byte) or de-chunked body size   -> 413
 * Whatever the split, the same requests come out and a stream that fails
 * fails; only when a request is BOTH over a limit and malformed may the
 * status (e.g. 414 vs 400) depend on the split, because http-parser hands
 * over partial tokens at the end of each execute call.
 * Other refusals: malformed syntax, bad percent-encoding or a NUL in the
 * decoded path, Content-Length together with Transfer-Encoding, a
 * Transfer-Encoding not ending in chunked -> 400; an unknown method token or
 * CONNECT -> 501; an HTTP major version other than 1 -> 505.
 *
 * Memory: every string of a request (url, path, query, header names and
 * values, joined values, decoded query parameters) lives in the request's
 * arena and is freed at once by ch_http_req_free(). The headers array and the
 * body buffer are heap blocks owned by the request, freed by the same call.
 * The reader keeps small scratch buffers (bounded by the limits) between
 * feeds.
 *
 * Threading: a reader and its requests belong to one thread (one connection).
 */
#ifndef CH_HTTP_REQUEST_H
#define CH_HTTP_REQUEST_H

#include <http_parser.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/pool.h"

#define CH_HTTP_DEFAULT_MAX_HEADER_BYTES ((size_t)16 * 1024)
#define CH_HTTP_DEFAULT_MAX_HEADERS ((size_t)64)
#define CH_HTTP_DEFAULT_MAX_BODY ((size_t)1024 * 1024)
#define CH_HTTP_DEFAULT_MAX_URL ((size_t)8 * 1024)

typedef struct {
  size_t max_header_bytes; /* request line + headers, bytes; 0 = 16 KiB default -> 431 */
  size_t max_headers;      /* header fields, count; 0 = 64 default -> 431 */
  size_t max_body;         /* de-chunked body, bytes; 0 = 1 MiB default -> 413 */
  size_t max_url;          /* request target, bytes; 0 = 8 KiB default -> 414 */
} ch_http_limits_t;

/* Fill *l with the defaults above. */
void ch_http_limits_default(ch_http_limits_t *l);

typedef struct {
  char *name;  /* as sent (compare case-insensitively); NUL-terminated; in the request arena */
  char *value; /* leading/trailing blanks removed; NUL-terminated; in the request arena */
} ch_http_header_t;

typedef struct ch_http_req_s {
  int method;              /* enum http_method */
  const char *method_name; /* "GET", ...; static string from http-parser */
  char *url;               /* raw request target as sent; arena */
  char *path;              /* percent-decoded path without query/fragment (never contains NUL;
                              "%2F" decodes to '/'); "*" for "OPTIONS *"; arena */
  char *query;             /* raw (still encoded) query string after '?', or NULL; arena */
  int http_major, http_minor;
  int keep_alive;            /* http_should_keep_alive(): 1.1 unless "Connection: close",
                                1.0 only with "Connection: keep-alive" */
  int upgrade;               /* 1: Upgrade + Connection: upgrade request (WebSocket); the bytes
                                after it belong to the new protocol */
  int expect_continue;       /* 1: "Expect: 100-continue" was sent (not an error) */
  int chunked;               /* 1: the body came with Transfer-Encoding: chunked */
  ch_http_header_t *headers; /* owned heap array of nheaders entries, in order received;
                                repeated fields are kept as separate entries */
  size_t nheaders;
  ch_buf_t body;   /* de-chunked body (owned); body.len <= max_body; trailers are dropped */
  ch_pool_t _pool; /* arena of every string above; see ch_http_req_pool() */
  size_t _hcap;    /* capacity of headers, entries */
} ch_http_req_t;

typedef struct ch_http_reader_s {
  http_parser _parser;      /* paused in on_message_complete; re-inited by take */
  ch_http_limits_t _limits; /* effective limits (no zeros) */
  ch_http_req_t *_req;      /* owned; the request being read or awaiting take, or NULL */
  ch_buf_t _url;            /* scratch: request target so far (<= max_url) */
  ch_buf_t _field;          /* scratch: current header name so far */
  ch_buf_t _value;          /* scratch: current header value so far */
  size_t _head_bytes;       /* bytes handed to the parser while the head was incomplete */
  size_t _trailer_bytes;    /* bytes of trailer fields seen (chunked), <= max_header_bytes */
  int _state;               /* CH__HTTP_READING / _DONE / _FAILED (request.c) */
  int _hstate;              /* 0 between headers, 1 in a field name, 2 in a value */
  int _headers_done;        /* on_headers_complete has run for the current request */
  int _need_continue;       /* a 100 Continue is due (see ch_http_reader_need_continue) */
  int _rc;                  /* error code returned again after a failure */
  int _status;              /* HTTP status to answer after a failure, else 0 */
  const char *_error;       /* static text naming the failure, else NULL */
} ch_http_reader_t;

/* Prepare r. limits may be NULL (all defaults); zero fields mean the default.
 * The limits are copied. */
void ch_http_reader_init(ch_http_reader_t *r, const ch_http_limits_t *limits);
/* Free everything r owns, including a request not yet taken. */
void ch_http_reader_dispose(ch_http_reader_t *r);

/* Feed data[0..len) (borrowed for the call only; the reader copies what it keeps).
 * Returns
 *   0        a whole request is ready: *consumed = bytes of data that belong to it
 *            (<= len); the rest is the next request or, if req->upgrade, the new
 *            protocol's. Call ch_http_reader_take() before feeding again; feeding
 *            before that returns 0 with *consumed = 0.
 *   CH_AGAIN all of data was consumed (*consumed = len) and the request is incomplete.
 *   <0       CH_EPROTO (400), CH_ETOOBIG (413, 414, 431) or CH_EUNSUPPORTED (501, 505):
 *            ch_http_reader_status() is the status to answer, ch_http_reader_error()
 *            names the problem; answer with "Connection: close" and close. Every
 *            later feed returns the same error with *consumed = 0.
 * len == 0 is allowed (returns CH_AGAIN, or 0/the error as above). */
int ch_http_reader_feed(ch_http_reader_t *r, const char *data, size_t len, size_t *consumed);

/* After feed returned 0: the request (caller owns it; free with ch_http_req_free).
 * The reader is then ready for the next request. NULL when no request is ready. */
ch_http_req_t *ch_http_reader_take(ch_http_reader_t *r);

/* HTTP status to answer after feed failed (400, 413, 414, 431, 501, 505), else 0. */
int ch_http_reader_status(const ch_http_reader_t *r);
/* Static text naming the failure (e.g. "too many header fields"), else NULL. */
const char *ch_http_reader_error(const ch_http_reader_t *r);

/* 1 exactly once per request: the head of a request with "Expect: 100-continue"
 * (HTTP/1.1, non-empty body announced, limits passed) is complete and its body
 * has not fully arrived. The caller then writes "HTTP/1.1 100 Continue\r\n\r\n"
 * (or a final error status). 0 otherwise. Typically checked after CH_AGAIN. */
int ch_http_reader_need_continue(ch_http_reader_t *r);

/* Free req and everything in it (arena, headers, body). NULL is a no-op. */
void ch_http_req_free(ch_http_req_t *req);
/* The request's arena, for allocations that live exactly as long as req. */
ch_pool_t *ch_http_req_pool(ch_http_req_t *req);

/* Value of the first header named name (case-insensitive), or NULL. Borrowed from req. */
const char *ch_http_req_header(const ch_http_req_t *req, const char *name);
/* All values of name joined with ", " in order (arena), or NULL if absent. */
char *ch_http_req_header_joined(ch_http_req_t *req, const char *name);
/* Value of the first query parameter whose decoded name equals key, decoded
 * ('+' -> ' ', %XX; malformed escapes kept literally) into the arena; "" for
 * "?key" or "?key="; NULL if absent or no query. A decoded %00 ends the C string. */
char *ch_http_req_query_param(ch_http_req_t *req, const char *key);

/* Percent-decode src[0..n) into dst (room for n + 1 bytes; NUL-terminated).
 * plus: '+' means ' '. strict: a malformed escape is CH_EPROTO, otherwise it is
 * copied literally. *outlen (may be NULL) gets the decoded length (may include NULs).
 * Returns 0 or CH_EPROTO. dst may equal src (in-place). */
int ch_http_pct_decode(char *dst, const char *src, size_t n, int plus, int strict, size_t *outlen);

#endif
