/*
 * response.c — response heads and small JSON responses (see response.h).
 *
 * Reason phrases come from http-parser's HTTP_STATUS_MAP so the table is
 * never typed twice. Error bodies are built in a local buffer first because
 * the Content-Length must be known before the head is written.
 */
#include "http/response.h"

#include <http_parser.h>
#include <string.h>

const char *ch_http_status_text(int status) {
  switch (status) {
#define CH__STATUS_CASE(num, name, string) \
  case num: return #string;
    HTTP_STATUS_MAP(CH__STATUS_CASE)
#undef CH__STATUS_CASE
  default: return "Unknown";
  }
}

/* 1xx, 204 and 304 responses never carry a body nor a Content-Length. */
static int ch__status_has_length(int status) {
  return !(status < 200 || status == 204 || status == 304);
}

void ch_http_response_head(ch_buf_t *out, int status, const char *content_type,
                           long long content_length, int keep_alive, const char *extra_headers) {
  ch_buf_printf(out, "HTTP/1.1 %d %s\r\nServer: chorus\r\n", status, ch_http_status_text(status));
  if (content_type != NULL) ch_buf_printf(out, "Content-Type: %s\r\n", content_type);
  if (content_length >= 0 && ch__status_has_length(status))
    ch_buf_printf(out, "Content-Length: %lld\r\n", content_length);
  if (status != 101)
    ch_buf_append_str(out, keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
  if (extra_headers != NULL) ch_buf_append_str(out, extra_headers);
  ch_buf_append(out, "\r\n", 2);
}

void ch_http_response_json(ch_buf_t *out, int status, const char *json, size_t len,
                           int keep_alive) {
  ch_http_response_head(out, status, "application/json", (long long)len, keep_alive, NULL);
  ch_buf_append(out, json, len);
}

void ch_http_response_error_ex(ch_buf_t *out, int status, const char *message, int keep_alive,
                               const char *extra_headers) {
  ch_buf_t body = CH_BUF_INIT;
  if (message == NULL) message = ch_http_status_text(status);
  ch_buf_append_str(&body, "{\"success\":false,\"error\":\"");
  ch_buf_append_json_str(&body, message, strlen(message));
  ch_buf_append(&body, "\"}", 2);
  ch_http_response_head(out, status, "application/json", (long long)body.len, keep_alive,
                        extra_headers);
  ch_buf_append(out, body.base, body.len);
  ch_buf_dispose(&body);
}

void ch_http_response_error(ch_buf_t *out, int status, const char *message, int keep_alive) {
  ch_http_response_error_ex(out, status, message, keep_alive, NULL);
}
