/*
 * request.c — incremental HTTP/1.1 request reader (see request.h).
 *
 * http-parser does the syntax; this file adds the limits, the request
 * object, and the one-request-at-a-time cut:
 *
 *   feed(data) ── loop ──> http_parser_execute(piece)
 *                            on_message_begin    new request + arena
 *                            on_url              append to _url       (414)
 *                            on_header_field     commit prev header, count (431)
 *                            on_header_value     append to _value
 *                            on_headers_complete version (505), CONNECT (501),
 *                                                Content-Length (413), url split
 *                                                + path decode (400), Expect
 *                            on_body             append to req->body  (413)
 *                            on_message_complete pause  ==> execute returns
 *
 * While the head is incomplete a piece is at most (max_header_bytes - bytes
 * already fed for this head), so if the head is still incomplete after the
 * cap is reached it is too big (431) — whatever the split of the input. Once
 * the head is complete the rest of the input goes to the parser whole.
 *
 * Data callbacks may deliver a token in several pieces (at the end of each
 * execute call http-parser flushes what it has), so url, names and values are
 * accumulated in scratch buffers; a header is committed into the request when
 * the next field starts or the head ends. Callback failures record their own
 * status before returning non-zero; any other http-parser error maps to 400,
 * except an unknown method token (501).
 *
 * Debian's libhttp_parser is built non-strict (HTTP_PARSER_STRICT=0): it
 * accepts e.g. "HTTX/1.1", a lone CR for CRLF, and spaces in field names.
 * The last one matters for request smuggling and is refused here.
 *
 * Invariants: _state == CH__HTTP_DONE  <=> _req is a complete request;
 *             _state == CH__HTTP_FAILED <=> _status != 0 && _rc < 0.
 */
#include "http/request.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/err.h"

enum { CH__HTTP_READING = 0, CH__HTTP_DONE, CH__HTTP_FAILED };
enum { CH__HS_NONE = 0, CH__HS_FIELD, CH__HS_VALUE };

#define CH__SCRATCH_KEEP 4096 /* scratch buffers larger than this are freed between requests */

void ch_http_limits_default(ch_http_limits_t *l) {
  l->max_header_bytes = CH_HTTP_DEFAULT_MAX_HEADER_BYTES;
  l->max_headers = CH_HTTP_DEFAULT_MAX_HEADERS;
  l->max_body = CH_HTTP_DEFAULT_MAX_BODY;
  l->max_url = CH_HTTP_DEFAULT_MAX_URL;
}

/* ---- request object ----------------------------------------------------- */

static ch_http_req_t *ch__req_new(void) {
  ch_http_req_t *req = CH_NEW(ch_http_req_t);
  ch_pool_init(&req->_pool, 0);
  ch_buf_init(&req->body);
  return req;
}

void ch_http_req_free(ch_http_req_t *req) {
  if (req == NULL) return;
  ch_pool_dispose(&req->_pool);
  free(req->headers);
  ch_buf_dispose(&req->body);
  free(req);
}

ch_pool_t *ch_http_req_pool(ch_http_req_t *req) { return &req->_pool; }

const char *ch_http_req_header(const ch_http_req_t *req, const char *name) {
  for (size_t i = 0; i < req->nheaders; i++)
    if (strcasecmp(req->headers[i].name, name) == 0) return req->headers[i].value;
  return NULL;
}

char *ch_http_req_header_joined(ch_http_req_t *req, const char *name) {
  size_t total = 0, count = 0;
  for (size_t i = 0; i < req->nheaders; i++) {
    if (strcasecmp(req->headers[i].name, name) != 0) continue;
    total += strlen(req->headers[i].value);
    count++;
  }
  if (count == 0) return NULL;
  char *out = ch_pool_alloc(&req->_pool, total + 2 * (count - 1) + 1);
  char *w = out;
  for (size_t i = 0; i < req->nheaders; i++) {
    if (strcasecmp(req->headers[i].name, name) != 0) continue;
    if (w != out) {
      *w++ = ',';
      *w++ = ' ';
    }
    size_t n = strlen(req->headers[i].value);
    memcpy(w, req->headers[i].value, n);
    w += n;
  }
  *w = '\0';
  return out;
}

/* ---- percent-decoding ------------------------------------------------------ */

static int ch__hexval(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int ch_http_pct_decode(char *dst, const char *src, size_t n, int plus, int strict, size_t *outlen) {
  size_t w = 0;
  for (size_t i = 0; i < n; i++) {
    char c = src[i];
    if (c == '%') {
      int a = i + 1 < n ? ch__hexval((unsigned char)src[i + 1]) : -1;
      int b = i + 2 < n ? ch__hexval((unsigned char)src[i + 2]) : -1;
      if (a < 0 || b < 0) {
        if (strict) return CH_EPROTO;
        dst[w++] = c;
        continue;
      }
      dst[w++] = (char)(a * 16 + b);
      i += 2;
    } else if (c == '+' && plus) {
      dst[w++] = ' ';
    } else {
      dst[w++] = c;
    }
  }
  dst[w] = '\0';
  if (outlen != NULL) *outlen = w;
  return 0;
}

/* Does the encoded query component enc[0..n) decode ('+' and %XX) to key? */
static int ch__query_key_eq(const char *enc, size_t n, const char *key) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    char c = enc[i];
    if (c == '+') {
      c = ' ';
    } else if (c == '%') {
      int a = i + 1 < n ? ch__hexval((unsigned char)enc[i + 1]) : -1;
      int b = i + 2 < n ? ch__hexval((unsigned char)enc[i + 2]) : -1;
      if (a >= 0 && b >= 0) {
        c = (char)(a * 16 + b);
        i += 2;
      }
    }
    if (key[k] == '\0' || key[k] != c) return 0;
    k++;
  }
  return key[k] == '\0';
}

char *ch_http_req_query_param(ch_http_req_t *req, const char *key) {
  const char *q = req->query;
  if (q == NULL) return NULL;
  while (*q != '\0') {
    size_t plen = strcspn(q, "&");
    size_t klen = 0;
    while (klen < plen && q[klen] != '=') klen++;
    if (ch__query_key_eq(q, klen, key)) {
      const char *v = klen < plen ? q + klen + 1 : q + plen;
      size_t vlen = klen < plen ? plen - klen - 1 : 0;
      char *out = ch_pool_alloc(&req->_pool, vlen + 1);
      ch_http_pct_decode(out, v, vlen, 1, 0, NULL);
      return out;
    }
    q += plen;
    if (*q == '&') q++;
  }
  return NULL;
}

/* ---- reader ------------------------------------------------------------------ */

static int ch__fail(ch_http_reader_t *r, int status, int rc, const char *msg) {
  if (r->_status == 0) {
    r->_status = status;
    r->_rc = rc;
    r->_error = msg;
  }
  return -1; /* makes http-parser stop with HPE_CB_* */
}

static void ch__reset(ch_http_reader_t *r) {
  http_parser_init(&r->_parser, HTTP_REQUEST);
  r->_parser.data = r;
  ch_buf_t *scratch[3] = {&r->_url, &r->_field, &r->_value};
  for (size_t i = 0; i < 3; i++) {
    if (scratch[i]->cap > CH__SCRATCH_KEEP) ch_buf_dispose(scratch[i]);
    scratch[i]->len = 0;
  }
  r->_head_bytes = 0;
  r->_trailer_bytes = 0;
  r->_state = CH__HTTP_READING;
  r->_hstate = CH__HS_NONE;
  r->_headers_done = 0;
  r->_need_continue = 0;
}

void ch_http_reader_init(ch_http_reader_t *r, const ch_http_limits_t *limits) {
  memset(r, 0, sizeof(*r));
  ch_http_limits_default(&r->_limits);
  if (limits != NULL) {
    if (limits->max_header_bytes) r->_limits.max_header_bytes = limits->max_header_bytes;
    if (limits->max_headers) r->_limits.max_headers = limits->max_headers;
    if (limits->max_body) r->_limits.max_body = limits->max_body;
    if (limits->max_url) r->_limits.max_url = limits->max_url;
  }
  ch_buf_init(&r->_url);
  ch_buf_init(&r->_field);
  ch_buf_init(&r->_value);
  r->_req = NULL;
  r->_rc = 0;
  r->_status = 0;
  r->_error = NULL;
  ch__reset(r);
}

void ch_http_reader_dispose(ch_http_reader_t *r) {
  ch_http_req_free(r->_req);
  r->_req = NULL;
  ch_buf_dispose(&r->_url);
  ch_buf_dispose(&r->_field);
  ch_buf_dispose(&r->_value);
}

int ch_http_reader_status(const ch_http_reader_t *r) { return r->_status; }
const char *ch_http_reader_error(const ch_http_reader_t *r) { return r->_error; }

int ch_http_reader_need_continue(ch_http_reader_t *r) {
  int v = r->_need_continue;
  r->_need_continue = 0;
  return v;
}

static void ch__commit_header(ch_http_reader_t *r) {
  ch_http_req_t *req = r->_req;
  const char *v = r->_value.base;
  size_t vlen = r->_value.len;
  while (vlen > 0 && (v[0] == ' ' || v[0] == '\t')) v++, vlen--;
  while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) vlen--;
  if (req->nheaders == req->_hcap) {
    req->_hcap = req->_hcap ? req->_hcap * 2 : 8;
    req->headers = ch_xrealloc(req->headers, req->_hcap * sizeof(*req->headers));
  }
  ch_http_header_t *h = &req->headers[req->nheaders++];
  h->name = ch_pool_strndup(&req->_pool, r->_field.base, r->_field.len);
  h->value = ch_pool_strndup(&req->_pool, v, vlen);
  r->_field.len = 0;
  r->_value.len = 0;
  r->_hstate = CH__HS_NONE;
}

static int ch__on_message_begin(http_parser *p) {
  ch_http_reader_t *r = p->data;
  if (r->_req == NULL) r->_req = ch__req_new();
  return 0;
}

static int ch__on_url(http_parser *p, const char *at, size_t n) {
  ch_http_reader_t *r = p->data;
  if (n > r->_limits.max_url - r->_url.len)
    return ch__fail(r, 414, CH_ETOOBIG, "request target too long");
  ch_buf_append(&r->_url, at, n);
  return 0;
}

static int ch__trailer_bytes(ch_http_reader_t *r, size_t n) {
  if (n > r->_limits.max_header_bytes - r->_trailer_bytes)
    return ch__fail(r, 431, CH_ETOOBIG, "trailer fields too large");
  r->_trailer_bytes += n;
  return 0;
}

/* RFC 9110 tchar. Debian builds http-parser with HTTP_PARSER_STRICT=0, which
 * lets a space through in field names ("Content-Length : 5"): a name a proxy
 * in front may read differently, so names are checked here. */
static int ch__is_token(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) continue;
    if (c == 0 || strchr("!#$%&'*+-.^_`|~", c) == NULL) return 0;
  }
  return 1;
}

static int ch__on_header_field(http_parser *p, const char *at, size_t n) {
  ch_http_reader_t *r = p->data;
  if (!ch__is_token(at, n)) return ch__fail(r, 400, CH_EPROTO, "invalid character in header name");
  if (r->_headers_done) return ch__trailer_bytes(r, n); /* trailers are counted, then dropped */
  if (r->_hstate == CH__HS_VALUE) ch__commit_header(r);
  if (r->_hstate == CH__HS_NONE) {
    if (r->_req->nheaders >= r->_limits.max_headers)
      return ch__fail(r, 431, CH_ETOOBIG, "too many header fields");
    r->_hstate = CH__HS_FIELD;
  }
  ch_buf_append(&r->_field, at, n);
  return 0;
}

static int ch__on_header_value(http_parser *p, const char *at, size_t n) {
  ch_http_reader_t *r = p->data;
  if (r->_headers_done) return ch__trailer_bytes(r, n);
  ch_buf_append(&r->_value, at, n);
  r->_hstate = CH__HS_VALUE;
  return 0;
}

/* Split req->url into path (decoded) and query (raw). Returns 0 or -1 after ch__fail. */
static int ch__split_url(ch_http_reader_t *r, ch_http_req_t *req) {
  const char *u = req->url;
  const char *path = u;
  if (u[0] == '*' && u[1] == '\0') {
    req->path = ch_pool_strdup(&req->_pool, "*");
    return 0;
  }
  if (u[0] != '/') {
    /* absolute-form: scheme "://" authority [path-abempty] ["?" query] */
    const char *s = strstr(u, "://");
    if (s == NULL || s == u) return ch__fail(r, 400, CH_EPROTO, "malformed request target");
    path = s + 3 + strcspn(s + 3, "/?#");
  }
  size_t plen = strcspn(path, "?#");
  if (path[plen] == '?') {
    const char *q = path + plen + 1;
    req->query = ch_pool_strndup(&req->_pool, q, strcspn(q, "#"));
  }
  if (plen == 0) { /* absolute-form without a path */
    req->path = ch_pool_strdup(&req->_pool, "/");
    return 0;
  }
  char *d = ch_pool_alloc(&req->_pool, plen + 1);
  size_t dlen;
  if (ch_http_pct_decode(d, path, plen, 0, 1, &dlen) != 0)
    return ch__fail(r, 400, CH_EPROTO, "malformed percent-encoding in path");
  if (memchr(d, '\0', dlen) != NULL) return ch__fail(r, 400, CH_EPROTO, "NUL byte in path");
  req->path = d;
  return 0;
}

static int ch__on_headers_complete(http_parser *p) {
  ch_http_reader_t *r = p->data;
  ch_http_req_t *req = r->_req;
  if (r->_hstate != CH__HS_NONE) ch__commit_header(r);
  r->_headers_done = 1;
  req->method = (int)p->method;
  req->method_name = http_method_str((enum http_method)p->method);
  req->http_major = p->http_major;
  req->http_minor = p->http_minor;
  req->keep_alive = http_should_keep_alive(p);
  req->upgrade = p->upgrade;
  req->chunked = (p->flags & F_CHUNKED) != 0;
  req->url = ch_pool_strndup(&req->_pool, r->_url.base, r->_url.len);
  if (p->http_major != 1) return ch__fail(r, 505, CH_EUNSUPPORTED, "HTTP version not supported");
  if (p->method == HTTP_CONNECT) return ch__fail(r, 501, CH_EUNSUPPORTED, "CONNECT not supported");
  int has_len = (p->flags & F_CONTENTLENGTH) && p->content_length != ULLONG_MAX;
  if (has_len && p->content_length > (uint64_t)r->_limits.max_body)
    return ch__fail(r, 413, CH_ETOOBIG, "request body too large");
  if (ch__split_url(r, req) != 0) return -1;
  for (size_t i = 0; i < req->nheaders; i++) {
    if (strcasecmp(req->headers[i].name, "Expect") == 0 &&
        strcasecmp(req->headers[i].value, "100-continue") == 0)
      req->expect_continue = 1;
  }
  r->_need_continue = req->expect_continue && p->http_minor >= 1 &&
                      (req->chunked || (has_len && p->content_length > 0));
  return 0;
}

static int ch__on_body(http_parser *p, const char *at, size_t n) {
  ch_http_reader_t *r = p->data;
  ch_http_req_t *req = r->_req;
  if (n > r->_limits.max_body - req->body.len)
    return ch__fail(r, 413, CH_ETOOBIG, "request body too large");
  ch_buf_append(&req->body, at, n);
  return 0;
}

static int ch__on_message_complete(http_parser *p) {
  ch_http_reader_t *r = p->data;
  r->_need_continue = 0;
  r->_state = CH__HTTP_DONE;
  http_parser_pause(p, 1); /* execute returns right after this message */
  return 0;
}

static const http_parser_settings ch__settings = {
    .on_message_begin = ch__on_message_begin,
    .on_url = ch__on_url,
    .on_header_field = ch__on_header_field,
    .on_header_value = ch__on_header_value,
    .on_headers_complete = ch__on_headers_complete,
    .on_body = ch__on_body,
    .on_message_complete = ch__on_message_complete,
};

/* Status for an http-parser error not raised by our callbacks. bad is the
 * byte the parser stopped at, or -1 if unknown. */
static void ch__map_parser_error(ch_http_reader_t *r, enum http_errno e, int bad) {
  if (e == HPE_INVALID_METHOD) {
    /* A method-like token the parser does not know is "not implemented";
     * anything else (binary, TLS, lowercase) is just a bad request. The
     * decision uses only bytes up to the failing one, so it does not depend
     * on how the input was split. */
    int tok = (bad >= 'A' && bad <= 'Z') || (bad >= '0' && bad <= '9') || bad == '-' || bad == '_';
    if (tok || (bad == ' ' && r->_req != NULL)) {
      ch__fail(r, 501, CH_EUNSUPPORTED, "method not implemented");
      return;
    }
  }
  if (e == HPE_HEADER_OVERFLOW && !r->_headers_done) {
    ch__fail(r, 431, CH_ETOOBIG, "request header too large");
    return;
  }
  ch__fail(r, 400, CH_EPROTO, http_errno_description(e));
}

int ch_http_reader_feed(ch_http_reader_t *r, const char *data, size_t len, size_t *consumed) {
  size_t off = 0;
  int rc = CH_AGAIN;
  *consumed = 0;
  if (r->_state == CH__HTTP_FAILED) return r->_rc;
  if (r->_state == CH__HTTP_DONE) return 0;
  while (off < len) {
    size_t n = len - off;
    int head_done = r->_headers_done;
    if (!head_done) {
      size_t room = r->_limits.max_header_bytes - r->_head_bytes; /* > 0 here */
      if (n > room) n = room;
    }
    size_t got = http_parser_execute(&r->_parser, &ch__settings, data + off, n);
    if (got > n) got = n; /* defensive: never report more than we gave */
    if (!head_done) r->_head_bytes += got;
    off += got;
    enum http_errno e = HTTP_PARSER_ERRNO(&r->_parser);
    if (e == HPE_PAUSED && r->_state == CH__HTTP_DONE) {
      rc = 0;
      goto Exit;
    }
    if (e != HPE_OK || got < n) {
      if (r->_status == 0)
        ch__map_parser_error(r, e == HPE_OK ? HPE_UNKNOWN : e,
                             off < len ? (unsigned char)data[off] : -1);
      r->_state = CH__HTTP_FAILED;
      rc = r->_rc;
      goto Exit;
    }
    if (!r->_headers_done && r->_head_bytes >= r->_limits.max_header_bytes) {
      ch__fail(r, 431, CH_ETOOBIG, "request header too large");
      r->_state = CH__HTTP_FAILED;
      rc = r->_rc;
      goto Exit;
    }
  }
Exit:
  *consumed = off;
  return rc;
}

ch_http_req_t *ch_http_reader_take(ch_http_reader_t *r) {
  if (r->_state != CH__HTTP_DONE) return NULL;
  ch_http_req_t *req = r->_req;
  r->_req = NULL;
  ch__reset(r);
  return req;
}
