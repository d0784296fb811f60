/*
 * test_handshake.c — RFC 6455 opening handshake, server side.
 *
 * The RFC 6455 accept-key vector; a valid request and its exact 101 bytes;
 * every refusal with its status and return code; token-list parsing of
 * Upgrade and Connection; Sec-WebSocket-Key shapes; subprotocol selection
 * in the server's order; the origin allow-list; the error responses
 * (status line, headers, Content-Length against the JSON body); and
 * permessage-deflate carried through to the response.
 *
 * Every header value is placed at the end of its own mapping, right before
 * a PROT_NONE guard page, so reading past a NUL faults.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/err.h"
#include "ws/handshake.h"

/* ---- guard pages: one mapping per string ---- */

typedef struct {
  void *map[16];
  size_t len[16];
  int n;
} guards_t;

static const char *gstr(guards_t *g, const char *s) {
  if (s == NULL) return NULL;
  size_t n = strlen(s) + 1, pg = (size_t)sysconf(_SC_PAGESIZE);
  size_t dp = (n + pg - 1) / pg;
  assert_true(g->n < 16);
  size_t len = (dp + 1) * pg;
  char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(m != MAP_FAILED);
  assert_int_equal(mprotect(m + dp * pg, pg, PROT_NONE), 0);
  g->map[g->n] = m;
  g->len[g->n++] = len;
  memcpy(m + dp * pg - n, s, n);
  return m + dp * pg - n;
}

static void gfree(guards_t *g) {
  for (int i = 0; i < g->n; i++) munmap(g->map[i], g->len[i]);
  g->n = 0;
}

/* ---- fixtures ---- */

static const char *const origins_list[] = {"https://app.example.com", "http://localhost:8080"};
static const char *const protos_list[] = {"chorus.v2", "chorus.v1"};

static ch_ws_handshake_req_t good_req(void) {
  ch_ws_handshake_req_t r;
  memset(&r, 0, sizeof(r));
  r.method = "GET";
  r.http_major = 1;
  r.http_minor = 1;
  r.host = "server.example.com";
  r.upgrade = "websocket";
  r.connection = "Upgrade";
  r.key = "dGhlIHNhbXBsZSBub25jZQ==";
  r.version = "13";
  return r;
}

static ch_ws_handshake_cfg_t plain_cfg(void) {
  ch_ws_handshake_cfg_t c;
  memset(&c, 0, sizeof(c));
  return c;
}

/* Run the check with every string of req copied behind a guard page. */
static int check(const ch_ws_handshake_req_t *req, const ch_ws_handshake_cfg_t *cfg,
                 ch_ws_handshake_res_t *res) {
  guards_t g = {0};
  ch_ws_handshake_req_t r = *req;
  r.method = gstr(&g, req->method);
  r.host = gstr(&g, req->host);
  r.upgrade = gstr(&g, req->upgrade);
  r.connection = gstr(&g, req->connection);
  r.key = gstr(&g, req->key);
  r.version = gstr(&g, req->version);
  r.origin = gstr(&g, req->origin);
  r.protocol = gstr(&g, req->protocol);
  r.extensions = gstr(&g, req->extensions);
  int rc = ch_ws_handshake_check(&r, cfg, res);
  gfree(&g);
  return rc;
}

static void expect_ok(const ch_ws_handshake_req_t *req, const ch_ws_handshake_cfg_t *cfg,
                      ch_ws_handshake_res_t *res) {
  int rc = check(req, cfg, res);
  if (rc != 0) fprintf(stderr, "refused: %d %s\n", res->status, res->reason);
  assert_int_equal(rc, 0);
  assert_int_equal(res->status, 101);
  assert_null(res->reason);
  assert_int_equal(strlen(res->accept), 28);
}

static void expect_refused(const ch_ws_handshake_req_t *req, const ch_ws_handshake_cfg_t *cfg,
                           int status, const char *reason) {
  ch_ws_handshake_res_t res;
  int rc = check(req, cfg, &res);
  assert_int_equal(res.status, status);
  assert_int_equal(rc, status == 403 ? CH_EPERM : CH_EPROTO);
  assert_non_null(res.reason);
  if (reason) assert_string_equal(res.reason, reason);
  assert_string_equal(res.accept, "");
  assert_null(res.protocol);
  assert_int_equal(res.deflate.enabled, 0);
}

/* ---- tests ---- */

static void test_accept_key_rfc_vector(void **state) {
  (void)state;
  char out[29];
  ch_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out);
  assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  /* a second, independently computed vector (Python: base64(sha1(key+GUID))) */
  ch_ws_accept_key("x3JJHMbDL1EzLkh9GBhXDw==", out);
  assert_string_equal(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}

static void test_valid_request_response_bytes(void **state) {
  (void)state;
  ch_ws_handshake_req_t req = good_req();
  ch_ws_handshake_cfg_t cfg = plain_cfg();
  ch_ws_handshake_res_t res;
  expect_ok(&req, &cfg, &res);
  assert_string_equal(res.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  assert_null(res.protocol);
  assert_int_equal(res.deflate.enabled, 0);
  assert_string_equal(res.extensions, "");
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "X");
  ch_ws_handshake_response(&res, &b);
  assert_string_equal(ch_buf_cstr(&b),
                      "XHTTP/1.1 101 Switching Protocols\r\n"
                      "Upgrade: websocket\r\n"
                      "Connection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                      "\r\n");
  ch_buf_dispose(&b);
  /* HTTP/2-style higher versions are fine too */
  req.http_major = 2;
  req.http_minor = 0;
  expect_ok(&req, &cfg, &res);
  req.http_major = 1;
  req.http_minor = 2;
  expect_ok(&req, &cfg, &res);
}

static void test_refusals(void **state) {
  (void)state;
  ch_ws_handshake_cfg_t cfg = plain_cfg();
  ch_ws_handshake_req_t r;

  r = good_req(), r.method = "POST";
  expect_refused(&r, &cfg, 400, "method must be GET");
  r = good_req(), r.method = "get";
  expect_refused(&r, &cfg, 400, "method must be GET");
  r = good_req(), r.method = NULL;
  expect_refused(&r, &cfg, 400, "method must be GET");
  r = good_req(), r.http_minor = 0;
  expect_refused(&r, &cfg, 400, "HTTP/1.1 or later required");
  r = good_req(), r.http_major = 0, r.http_minor = 9;
  expect_refused(&r, &cfg, 400, "HTTP/1.1 or later required");
  r = good_req(), r.host = NULL;
  expect_refused(&r, &cfg, 400, "missing Host");
  r = good_req(), r.host = " ";
  expect_refused(&r, &cfg, 400, "missing Host");
  r = good_req(), r.upgrade = NULL;
  expect_refused(&r, &cfg, 400, "Upgrade must be websocket");
  r = good_req(), r.upgrade = "h2c";
  expect_refused(&r, &cfg, 400, "Upgrade must be websocket");
  r = good_req(), r.connection = NULL;
  expect_refused(&r, &cfg, 400, "Connection must include Upgrade");
  r = good_req(), r.connection = "keep-alive";
  expect_refused(&r, &cfg, 400, "Connection must include Upgrade");
  r = good_req(), r.version = NULL;
  expect_refused(&r, &cfg, 426, "missing Sec-WebSocket-Version");
  r = good_req(), r.version = "8";
  expect_refused(&r, &cfg, 426, "unsupported Sec-WebSocket-Version");
  r = good_req(), r.version = "13, 8";
  expect_refused(&r, &cfg, 426, "unsupported Sec-WebSocket-Version");
  r = good_req(), r.version = "130";
  expect_refused(&r, &cfg, 426, "unsupported Sec-WebSocket-Version");
  r = good_req(), r.key = NULL;
  expect_refused(&r, &cfg, 400, "missing Sec-WebSocket-Key");
  r = good_req(), r.key = "";
  expect_refused(&r, &cfg, 400, "invalid Sec-WebSocket-Key");
  /* the version is checked before the key (an old client learns about 13) */
  r = good_req(), r.key = NULL, r.version = "8";
  expect_refused(&r, &cfg, 426, NULL);
  /* the first failing rule decides */
  r = good_req(), r.method = "PUT", r.version = "8";
  expect_refused(&r, &cfg, 400, "method must be GET");
  ch_ws_handshake_res_t res;
  assert_int_equal(ch_ws_handshake_check(NULL, &cfg, &res), CH_EINVAL);
  r = good_req();
  assert_int_equal(ch_ws_handshake_check(&r, NULL, &res), CH_EINVAL);
  assert_int_equal(ch_ws_handshake_check(&r, &cfg, NULL), CH_EINVAL);
}

static void test_key_shapes(void **state) {
  (void)state;
  ch_ws_handshake_cfg_t cfg = plain_cfg();
  ch_ws_handshake_res_t res;
  ch_ws_handshake_req_t r = good_req();
  static const char *const bad[] = {
      "dGhlIHNhbXBsZSBub25jZQ",     /* no padding */
      "dGhlIHNhbXBsZSBub25jZQ=",    /* short padding */
      "dGhlIHNhbXBsZSBub25jZQ===",  /* 25 chars */
      "dGhlIHNhbXBsZSBub25jZ===",   /* 15 bytes */
      "dGhlIHNhbXBsZSBub25jZQab",   /* 18 bytes, no padding */
      "dGhlIHNhbXBsZSBub25jZQ=a",   /* junk after padding */
      "dGhlIHNhbXBsZSBub2 jZQ==",   /* inner space */
      "dGhlIHNhbXBsZSBub2-jZQ==",   /* base64url alphabet */
      "dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ==", /* repeated header */
      "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    r.key = bad[i];
    expect_refused(&r, &cfg, 400, "invalid Sec-WebSocket-Key");
  }
  /* surrounding whitespace is not part of the key (and not hashed) */
  r.key = " \tdGhlIHNhbXBsZSBub25jZQ== ";
  expect_ok(&r, &cfg, &res);
  assert_string_equal(res.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  r.key = "AAAAAAAAAAAAAAAAAAAAAA==";
  expect_ok(&r, &cfg, &res);
  r.key = "/+/+/+/+/+/+/+/+/+/+/w==";
  expect_ok(&r, &cfg, &res);
  r.version = " 13 ";
  expect_ok(&r, &cfg, &res);
}

static void test_token_lists(void **state) {
  (void)state;
  ch_ws_handshake_cfg_t cfg = plain_cfg();
  ch_ws_handshake_res_t res;
  ch_ws_handshake_req_t r = good_req();
  static const char *const conn_ok[] = {"Upgrade",      "upgrade",          "UPGRADE",
                                        "keep-alive, Upgrade", "Upgrade,keep-alive", " upgrade ",
                                        ",,upgrade,,",  "keep-alive,\tUpgrade\t, close",
                                        "a, b, c, upgrade"};
  static const char *const conn_bad[] = {"upgrades", "x-upgrade", "up grade", "keep-alive upgrade",
                                         "", ",", "upgrade;q=1", "\"upgrade\""};
  for (size_t i = 0; i < sizeof(conn_ok) / sizeof(conn_ok[0]); i++) {
    r.connection = conn_ok[i];
    expect_ok(&r, &cfg, &res);
  }
  for (size_t i = 0; i < sizeof(conn_bad) / sizeof(conn_bad[0]); i++) {
    r.connection = conn_bad[i];
    expect_refused(&r, &cfg, 400, "Connection must include Upgrade");
  }
  r = good_req();
  static const char *const up_ok[] = {"websocket", "WebSocket", "WEBSOCKET", "h2c, websocket",
                                      " websocket ", "websocket,"};
  static const char *const up_bad[] = {"websockets", "web socket", "websocket/13", "", "h2c",
                                       "xwebsocket"};
  for (size_t i = 0; i < sizeof(up_ok) / sizeof(up_ok[0]); i++) {
    r.upgrade = up_ok[i];
    expect_ok(&r, &cfg, &res);
  }
  for (size_t i = 0; i < sizeof(up_bad) / sizeof(up_bad[0]); i++) {
    r.upgrade = up_bad[i];
    expect_refused(&r, &cfg, 400, "Upgrade must be websocket");
  }
}

static void test_subprotocol_selection(void **state) {
  (void)state;
  ch_ws_handshake_cfg_t cfg = plain_cfg();
  cfg.protocols = protos_list;
  cfg.nprotocols = 2;
  ch_ws_handshake_res_t res;
  ch_ws_handshake_req_t r = good_req();
  static const struct {
    const char *offer;
    const char *want;
  } cases[] = {
      {"chorus.v1, chorus.v2", "chorus.v2"}, /* server preference wins over client order */
      {"chorus.v2, chorus.v1", "chorus.v2"},
      {"chorus.v1", "chorus.v1"},
      {"foo, chorus.v1 ,bar", "chorus.v1"},
      {"foo", NULL},
      {"", NULL},
      {"chorus.v1x, chorus", NULL}, /* no prefix matches */
      {"CHORUS.V2", NULL},          /* case-sensitive */
      {"chorus.v2;q=1", NULL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    r.protocol = cases[i].offer;
    expect_ok(&r, &cfg, &res);
    if (cases[i].want == NULL) {
      assert_null(res.protocol);
    } else {
      assert_non_null(res.protocol);
      assert_string_equal(res.protocol, cases[i].want);
      /* points into cfg->protocols, not into the (already unmapped) request */
      assert_true(res.protocol == protos_list[0] || res.protocol == protos_list[1]);
    }
  }
  r.protocol = NULL;
  expect_ok(&r, &cfg, &res);
  assert_null(res.protocol);
  /* server supports none: never a header */
  cfg.nprotocols = 0;
  r.protocol = "chorus.v2";
  expect_ok(&r, &cfg, &res);
  assert_null(res.protocol);
  /* header in the response */
  cfg.nprotocols = 2;
  r.protocol = "chorus.v1";
  expect_ok(&r, &cfg, &res);
  ch_buf_t b = CH_BUF_INIT;
  ch_ws_handshake_response(&res, &b);
  assert_non_null(strstr(ch_buf_cstr(&b), "\r\nSec-WebSocket-Protocol: chorus.v1\r\n"));
  ch_buf_dispose(&b);
}

static void test_origin_allow_list(void **state) {
  (void)state;
  ch_ws_handshake_cfg_t cfg = plain_cfg();
  ch_ws_handshake_res_t res;
  ch_ws_handshake_req_t r = good_req();
  /* empty list: anything goes */
  r.origin = "https://evil.example";
  expect_ok(&r, &cfg, &res);
  cfg.origins = origins_list;
  cfg.norigins = 2;
  static const char *const ok[] = {"https://app.example.com", "HTTPS://APP.EXAMPLE.COM",
                                   "http://localhost:8080", " https://app.example.com "};
  static const char *const bad[] = {"https://evil.example",    "https://app.example.com/",
                                    "https://app.example.co",  "https://app.example.com.evil",
                                    "http://app.example.com",  "http://localhost",
                                    "null",                    "",
                                    "https://app.example.com, https://evil.example"};
  for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
    r.origin = ok[i];
    expect_ok(&r, &cfg, &res);
  }
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    r.origin = bad[i];
    expect_refused(&r, &cfg, 403, "origin not allowed");
  }
  /* no Origin header (non-browser client): allowed */
  r.origin = NULL;
  expect_ok(&r, &cfg, &res);
  /* "*" allows everything */
  static const char *const star[] = {"https://app.example.com", "*"};
  cfg.origins = star;
  r.origin = "https://anything.example";
  expect_ok(&r, &cfg, &res);
  /* 403 comes after the 400 checks */
  cfg.origins = origins_list;
  r.key = "short";
  expect_refused(&r, &cfg, 400, "invalid Sec-WebSocket-Key");
}

/* Split an HTTP response: status code, header block, body; checks Content-Length. */
static void parse_error_response(const char *s, int *status, const char **hdrs, const char **body) {
  assert_int_equal(strncmp(s, "HTTP/1.1 ", 9), 0);
  *status = atoi(s + 9);
  const char *sep = strstr(s, "\r\n\r\n");
  assert_non_null(sep);
  *hdrs = s;
  *body = sep + 4;
  const char *cl = strstr(s, "\r\nContent-Length: ");
  assert_non_null(cl);
  assert_true(cl < sep);
  assert_int_equal((size_t)atoi(cl + 18), strlen(*body));
}

static void test_error_responses(void **state) {
  (void)state;
  ch_ws_handshake_cfg_t cfg = plain_cfg();
  cfg.origins = origins_list;
  cfg.norigins = 2;
  ch_ws_handshake_res_t res;
  ch_ws_handshake_req_t r;
  ch_buf_t b = CH_BUF_INIT;
  int status;
  const char *h, *body;

  r = good_req(), r.key = NULL;
  check(&r, &cfg, &res);
  ch_ws_handshake_error_response(&res, &b);
  parse_error_response(ch_buf_cstr(&b), &status, &h, &body);
  assert_int_equal(status, 400);
  assert_int_equal(strncmp(h, "HTTP/1.1 400 Bad Request\r\n", 26), 0);
  assert_non_null(strstr(h, "\r\nConnection: close\r\n"));
  assert_non_null(strstr(h, "\r\nContent-Type: application/json\r\n"));
  assert_null(strstr(h, "Sec-WebSocket-Version"));
  assert_string_equal(body, "{\"success\":false,\"error\":\"missing Sec-WebSocket-Key\"}");

  b.len = 0;
  r = good_req(), r.version = "7";
  check(&r, &cfg, &res);
  ch_ws_handshake_error_response(&res, &b);
  parse_error_response(ch_buf_cstr(&b), &status, &h, &body);
  assert_int_equal(status, 426);
  assert_int_equal(strncmp(h, "HTTP/1.1 426 Upgrade Required\r\n", 31), 0);
  assert_non_null(strstr(h, "\r\nSec-WebSocket-Version: 13\r\n"));
  assert_non_null(strstr(h, "\r\nUpgrade: websocket\r\n"));
  assert_non_null(strstr(h, "\r\nConnection: close\r\n"));
  assert_string_equal(body,
                      "{\"success\":false,\"error\":\"unsupported Sec-WebSocket-Version\"}");

  b.len = 0;
  r = good_req(), r.origin = "https://evil.example";
  check(&r, &cfg, &res);
  ch_ws_handshake_error_response(&res, &b);
  parse_error_response(ch_buf_cstr(&b), &status, &h, &body);
  assert_int_equal(status, 403);
  assert_int_equal(strncmp(h, "HTTP/1.1 403 Forbidden\r\n", 24), 0);
  assert_string_equal(body, "{\"success\":false,\"error\":\"origin not allowed\"}");

  /* a hand-made reason is JSON-escaped */
  b.len = 0;
  memset(&res, 0, sizeof(res));
  res.status = 400;
  res.reason = "bad \"thing\"\n";
  ch_ws_handshake_error_response(&res, &b);
  parse_error_response(ch_buf_cstr(&b), &status, &h, &body);
  assert_string_equal(body, "{\"success\":false,\"error\":\"bad \\\"thing\\\"\\n\"}");
  ch_buf_dispose(&b);
}

static void test_deflate_in_handshake(void **state) {
  (void)state;
  ch_ws_handshake_cfg_t cfg = plain_cfg();
  cfg.protocols = protos_list;
  cfg.nprotocols = 2;
  ch_ws_handshake_res_t res;
  ch_ws_handshake_req_t r = good_req();
  r.extensions = "permessage-deflate; client_max_window_bits";
  r.protocol = "chorus.v1";
  /* policy off: offer ignored, no header */
  expect_ok(&r, &cfg, &res);
  assert_int_equal(res.deflate.enabled, 0);
  assert_string_equal(res.extensions, "");
  cfg.deflate.enabled = 1;
  cfg.deflate.server_no_context_takeover = 1;
  cfg.deflate.client_max_window_bits = 12;
  expect_ok(&r, &cfg, &res);
  assert_int_equal(res.deflate.enabled, 1);
  assert_int_equal(res.deflate.server_no_context_takeover, 1);
  assert_int_equal(res.deflate.client_max_window_bits, 12);
  assert_int_equal(res.deflate.server_max_window_bits, 15);
  ch_buf_t b = CH_BUF_INIT;
  ch_ws_handshake_response(&res, &b);
  assert_string_equal(ch_buf_cstr(&b),
                      "HTTP/1.1 101 Switching Protocols\r\n"
                      "Upgrade: websocket\r\n"
                      "Connection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                      "Sec-WebSocket-Protocol: chorus.v1\r\n"
                      "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
                      "client_max_window_bits=12\r\n"
                      "\r\n");
  /* the longest possible response value fits in res.extensions */
  cfg.deflate.client_no_context_takeover = 1;
  cfg.deflate.server_max_window_bits = 10;
  r.extensions = "permessage-deflate; client_max_window_bits=11; server_max_window_bits=12";
  expect_ok(&r, &cfg, &res);
  assert_string_equal(res.extensions,
                      "permessage-deflate; server_no_context_takeover; "
                      "client_no_context_takeover; server_max_window_bits=10; "
                      "client_max_window_bits=11");
  /* an unusable offer is not an error: 101 without the extension */
  r.extensions = "permessage-deflate; bogus, x-foo";
  expect_ok(&r, &cfg, &res);
  assert_int_equal(res.deflate.enabled, 0);
  b.len = 0;
  ch_ws_handshake_response(&res, &b);
  assert_null(strstr(ch_buf_cstr(&b), "Sec-WebSocket-Extensions"));
  ch_buf_dispose(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_accept_key_rfc_vector),
      cmocka_unit_test(test_valid_request_response_bytes),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_key_shapes),
      cmocka_unit_test(test_token_lists),
      cmocka_unit_test(test_subprotocol_selection),
      cmocka_unit_test(test_origin_allow_list),
      cmocka_unit_test(test_error_responses),
      cmocka_unit_test(test_deflate_in_handshake),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
