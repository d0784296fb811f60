/*
 * test_response.c — response heads and JSON responses (src/http/response.c).
 * Exact byte layouts are asserted, and each complete response is parsed back
 * with http-parser in response mode to prove it is well-formed HTTP/1.1.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <http_parser.h>

#include "core/buf.h"
#include "http/response.h"

typedef struct {
  int complete;
  ch_buf_t body;
} parsed_t;

static int on_body(http_parser *p, const char *at, size_t n) {
  ch_buf_append(&((parsed_t *)p->data)->body, at, n);
  return 0;
}
static int on_complete(http_parser *p) {
  ((parsed_t *)p->data)->complete = 1;
  return 0;
}

/* Parse b as one response; returns the status code. */
static int parse_back(ch_buf_t *b, parsed_t *out) {
  http_parser_settings s;
  http_parser_settings_init(&s);
  s.on_body = on_body;
  s.on_message_complete = on_complete;
  http_parser p;
  http_parser_init(&p, HTTP_RESPONSE);
  memset(out, 0, sizeof(*out));
  p.data = out;
  size_t n = http_parser_execute(&p, &s, b->base, b->len);
  assert_int_equal(HTTP_PARSER_ERRNO(&p), HPE_OK);
  assert_int_equal(n, b->len);
  return p.status_code;
}

static void test_status_text(void **state) {
  assert_string_equal(ch_http_status_text(200), "OK");
  assert_string_equal(ch_http_status_text(101), "Switching Protocols");
  assert_string_equal(ch_http_status_text(404), "Not Found");
  assert_string_equal(ch_http_status_text(405), "Method Not Allowed");
  assert_string_equal(ch_http_status_text(413), "Payload Too Large");
  assert_string_equal(ch_http_status_text(414), "URI Too Long");
  assert_string_equal(ch_http_status_text(431), "Request Header Fields Too Large");
  assert_string_equal(ch_http_status_text(501), "Not Implemented");
  assert_string_equal(ch_http_status_text(505), "HTTP Version Not Supported");
  assert_string_equal(ch_http_status_text(299), "Unknown");
  assert_string_equal(ch_http_status_text(-1), "Unknown");
}

static void test_head_layout(void **state) {
  ch_buf_t b = CH_BUF_INIT;
  ch_http_response_head(&b, 200, "text/plain", 5, 1, NULL);
  assert_string_equal(ch_buf_cstr(&b),
                      "HTTP/1.1 200 OK\r\n"
                      "Server: chorus\r\n"
                      "Content-Type: text/plain\r\n"
                      "Content-Length: 5\r\n"
                      "Connection: keep-alive\r\n"
                      "\r\n");
  b.len = 0;
  ch_http_response_head(&b, 200, "text/event-stream", -1, 0,
                        "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
  assert_string_equal(ch_buf_cstr(&b),
                      "HTTP/1.1 200 OK\r\n"
                      "Server: chorus\r\n"
                      "Content-Type: text/event-stream\r\n"
                      "Connection: close\r\n"
                      "Cache-Control: no-cache\r\n"
                      "X-Accel-Buffering: no\r\n"
                      "\r\n");
  b.len = 0;
  ch_http_response_head(&b, 204, NULL, 0, 1, NULL); /* no Content-Length on 204 */
  assert_string_equal(ch_buf_cstr(&b),
                      "HTTP/1.1 204 No Content\r\n"
                      "Server: chorus\r\n"
                      "Connection: keep-alive\r\n"
                      "\r\n");
  b.len = 0;
  ch_http_response_head(&b, 101, NULL, -1, 1,
                        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n");
  assert_string_equal(ch_buf_cstr(&b),
                      "HTTP/1.1 101 Switching Protocols\r\n"
                      "Server: chorus\r\n"
                      "Upgrade: websocket\r\n"
                      "Connection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: x\r\n"
                      "\r\n");
  b.len = 0;
  ch_http_response_head(&b, 304, "text/html", 100, 1, NULL);
  assert_null(strstr(ch_buf_cstr(&b), "Content-Length"));
  b.len = 0;
  ch_http_response_head(&b, 200, NULL, 12345678901LL, 0, NULL);
  assert_non_null(strstr(ch_buf_cstr(&b), "\r\nContent-Length: 12345678901\r\n"));
  assert_null(strstr(ch_buf_cstr(&b), "Content-Type"));
  ch_buf_dispose(&b);
}

static void test_json(void **state) {
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "PREFIX"); /* appends, never resets */
  const char *json = "{\"ok\":true}";
  ch_http_response_json(&b, 201, json, strlen(json), 1);
  assert_memory_equal(b.base, "PREFIX", 6);
  ch_buf_consume(&b, 6);
  assert_string_equal(ch_buf_cstr(&b),
                      "HTTP/1.1 201 Created\r\n"
                      "Server: chorus\r\n"
                      "Content-Type: application/json\r\n"
                      "Content-Length: 11\r\n"
                      "Connection: keep-alive\r\n"
                      "\r\n"
                      "{\"ok\":true}");
  parsed_t p;
  assert_int_equal(parse_back(&b, &p), 201);
  assert_true(p.complete);
  assert_int_equal(p.body.len, 11);
  assert_memory_equal(p.body.base, json, 11);
  ch_buf_dispose(&p.body);
  ch_buf_dispose(&b);
}

static void test_error(void **state) {
  ch_buf_t b = CH_BUF_INIT;
  ch_http_response_error(&b, 400, "bad \"thing\"\\\n\x01", 0);
  parsed_t p;
  assert_int_equal(parse_back(&b, &p), 400);
  assert_true(p.complete);
  const char *want = "{\"success\":false,\"error\":\"bad \\\"thing\\\"\\\\\\n\\u0001\"}";
  assert_int_equal(p.body.len, strlen(want));
  assert_memory_equal(p.body.base, want, strlen(want));
  assert_non_null(strstr(ch_buf_cstr(&b), "\r\nConnection: close\r\n"));
  assert_non_null(strstr(ch_buf_cstr(&b), "\r\nContent-Type: application/json\r\n"));
  ch_buf_dispose(&p.body);
  b.len = 0;

  ch_http_response_error(&b, 404, NULL, 1);
  assert_int_equal(parse_back(&b, &p), 404);
  want = "{\"success\":false,\"error\":\"Not Found\"}";
  assert_int_equal(p.body.len, strlen(want));
  assert_memory_equal(p.body.base, want, strlen(want));
  ch_buf_dispose(&p.body);
  b.len = 0;

  ch_http_response_error_ex(&b, 405, "method not allowed", 1, "Allow: GET, HEAD\r\n");
  assert_int_equal(parse_back(&b, &p), 405);
  assert_non_null(strstr(ch_buf_cstr(&b), "\r\nAllow: GET, HEAD\r\n\r\n{\"success\":false"));
  ch_buf_dispose(&p.body);
  ch_buf_dispose(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_status_text),
      cmocka_unit_test(test_head_layout),
      cmocka_unit_test(test_json),
      cmocka_unit_test(test_error),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
