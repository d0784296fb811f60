/*
 * test_backend.c — the HTTP back ends' shared configuration and error texts
 * (agent/backend.h): the request URL from a base URL (trailing slashes
 * dropped, only http:// and https://), header lines, a refused base leaving
 * the config untouched, dispose wiping what it owned, and the
 * "upstream error (type): message" text from each shape an upstream uses,
 * and which token counts are believed.
 * The request cycle itself runs against fake upstreams in
 * tests/e2e/test_agents.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/backend.h"
#include "core/err.h"

static const ch_agent_be_http_ops_t g_ops = {.cut_short = "cut short"};

static void test_url_and_headers(void **state) {
  (void)state;
  ch_agent_t a = {.name = "t"};
  ch_agent_be_http_cfg_t c;
  memset(&c, 0, sizeof(c));
  ch_buf_t err = CH_BUF_INIT;
  assert_int_equal(ch_agent_be_http_cfg_init(&c, &a, &g_ops, "http://127.0.0.1:9/v1///", "/chat/completions", 77, &err),
                   0);
  assert_string_equal(c.url, "http://127.0.0.1:9/v1/chat/completions");
  assert_ptr_equal(c.ops, &g_ops);
  assert_int_equal(c.max_reply, 77);
  assert_int_equal(err.len, 0);
  ch_agent_be_http_cfg_header(&c, "anthropic-version", "2023-06-01");
  ch_agent_be_http_cfg_header(&c, "x-api-key", "secret");
  assert_int_equal(c.nheaders, 2);
  assert_string_equal(c.headers[0], "anthropic-version: 2023-06-01");
  assert_string_equal(c.headers[1], "x-api-key: secret");
  ch_agent_be_http_cfg_dispose(&c);
  assert_null(c.url);
  assert_int_equal(c.nheaders, 0);
  assert_null(c.headers[1]);
  ch_agent_be_http_cfg_dispose(&c); /* twice is harmless */
  assert_int_equal(ch_agent_be_http_cfg_init(&c, &a, &g_ops, "https://h", "/v1/messages", 1, &err), 0);
  assert_string_equal(c.url, "https://h/v1/messages");
  ch_agent_be_http_cfg_dispose(&c);
  ch_buf_dispose(&err);
}

static void test_refused_base(void **state) {
  (void)state;
  static const char *const bad[] = {"ftp://h/v1", "127.0.0.1:8000", "", "HTTP://h", "http:/h"};
  ch_agent_t a = {.name = "bad"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    ch_agent_be_http_cfg_t c;
    memset(&c, 0, sizeof(c));
    ch_buf_t err = CH_BUF_INIT;
    assert_int_equal(ch_agent_be_http_cfg_init(&c, &a, &g_ops, bad[i], "/x", 1, &err), CH_ECONFIG);
    assert_non_null(strstr(ch_buf_cstr(&err), "agent 'bad': base-url"));
    assert_non_null(strstr(ch_buf_cstr(&err), "must start with http:// or https://\n"));
    assert_null(c.url);
    assert_null(c.ops);
    ch_agent_be_http_cfg_dispose(&c); /* nothing taken: nothing released */
    ch_buf_dispose(&err);
  }
}

static void check_upstream(const char *json, const char *want) {
  ch_agent_be_run_t r;
  memset(&r, 0, sizeof(r));
  cJSON *e = json ? cJSON_Parse(json) : NULL;
  assert_int_equal(ch_agent_be_fail_upstream(&r, e), -1);
  assert_string_equal(r.error, want);
  cJSON_Delete(e);
  free(r.error);
}

static void test_upstream_error_texts(void **state) {
  (void)state;
  check_upstream("{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}",
                 "upstream error (overloaded_error): Overloaded");
  check_upstream("{\"message\":\"model overloaded\",\"type\":\"server_error\",\"code\":null}",
                 "upstream error (server_error): model overloaded");
  check_upstream("\"boom\"", "upstream error: boom");
  check_upstream("{\"type\":\"\",\"message\":\"no type\"}", "upstream error: no type");
  check_upstream("{\"code\":42}", "upstream error");
  check_upstream(NULL, "upstream error");
  /* type and message are cut (64 and 500 bytes) */
  char big[1200];
  memset(big, 'm', sizeof(big));
  big[0] = '"';
  big[1198] = '"';
  big[1199] = '\0';
  ch_agent_be_run_t r;
  memset(&r, 0, sizeof(r));
  cJSON *e = cJSON_Parse(big);
  ch_agent_be_fail_upstream(&r, e);
  assert_int_equal(strlen(r.error), strlen("upstream error: ") + 500);
  cJSON_Delete(e);
  free(r.error);
}

static void test_fail_replaces_the_reason(void **state) {
  (void)state;
  ch_agent_be_run_t r;
  memset(&r, 0, sizeof(r));
  assert_int_equal(ch_agent_be_fail(&r, "first %d", 1), -1);
  assert_string_equal(r.error, "first 1");
  assert_int_equal(ch_agent_be_fail(&r, "reply longer than %zu bytes", (size_t)4096), -1);
  assert_string_equal(r.error, "reply longer than 4096 bytes");
  free(r.error);
}

static void test_token_counts(void **state) {
  (void)state;
  static const struct {
    const char *json;
    int set;
    uint64_t want;
  } cases[] = {
      {"12", 1, 12},    {"0", 1, 0},          {"9007199254740991", 1, 9007199254740991ull},
      {"1e300", 0, 0},  {"-1", 0, 0},         {"9007199254740992", 0, 0},
      {"\"12\"", 0, 0}, {"null", 0, 0},       {"12.9", 1, 12},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    cJSON *v = cJSON_Parse(cases[i].json);
    uint64_t n = 777;
    assert_int_equal(ch_agent_be_count(v, &n), cases[i].set);
    assert_int_equal(n, cases[i].set ? cases[i].want : 777);
    cJSON_Delete(v);
  }
  uint64_t n = 5;
  assert_int_equal(ch_agent_be_count(NULL, &n), 0);
  assert_int_equal(n, 5);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_url_and_headers),
      cmocka_unit_test(test_refused_base),
      cmocka_unit_test(test_upstream_error_texts),
      cmocka_unit_test(test_fail_replaces_the_reason),
      cmocka_unit_test(test_token_counts),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
