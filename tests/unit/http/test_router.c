/*
 * test_router.c — method + pattern routing (src/http/router.c): literal,
 * parameter and wildcard segments, precedence, 404/405 with Allow, HEAD on
 * GET routes, param copies, bad patterns.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/err.h"
#include "http/router.h"

/* Handlers are just distinct tags here. */
static int H_ROOMS, H_ROOM, H_ROOM_LIST, H_MSGS, H_POST_MSGS, H_STATIC, H_ROOT, H_ANY, H_HEAD,
    H_DEEP, H_EXACT_A, H_WILD_A;

static const char *param(const ch_http_match_t *m, const char *name) {
  for (size_t i = 0; i < m->nparams; i++)
    if (strcmp(m->params[i].name, name) == 0) return m->params[i].value;
  return NULL;
}

static ch_http_router_t *build(void) {
  ch_http_router_t *r = ch_http_router_new();
  assert_int_equal(ch_http_router_add(r, "GET", "/rooms", &H_ROOMS, (void *)(intptr_t)1), 0);
  assert_int_equal(ch_http_router_add(r, "GET", "/rooms/:id", &H_ROOM, NULL), 0);
  assert_int_equal(ch_http_router_add(r, "GET", "/rooms/list", &H_ROOM_LIST, NULL),
                   0); /* after :id */
  assert_int_equal(ch_http_router_add(r, "GET", "/rooms/:id/messages", &H_MSGS, NULL), 0);
  assert_int_equal(ch_http_router_add(r, "POST", "/rooms/:id/messages", &H_POST_MSGS, NULL), 0);
  assert_int_equal(ch_http_router_add(r, "GET", "/static/*path", &H_STATIC, NULL), 0);
  assert_int_equal(ch_http_router_add(r, "GET", "/", &H_ROOT, NULL), 0);
  assert_int_equal(ch_http_router_add(r, "*", "/any", &H_ANY, NULL), 0);
  assert_int_equal(ch_http_router_add(r, "HEAD", "/head-special", &H_HEAD, NULL), 0);
  assert_int_equal(ch_http_router_add(r, "GET", "/head-special", &H_ROOT, NULL), 0);
  assert_int_equal(ch_http_router_add(r, "GET", "/a/:b/:c/:d/*rest", &H_DEEP, NULL), 0);
  assert_int_equal(ch_http_router_add(r, "GET", "/x/*rest", &H_WILD_A, NULL), 0);
  assert_int_equal(ch_http_router_add(r, "GET", "/x", &H_EXACT_A, NULL), 0);
  return r;
}

static void test_literal_and_params(void **state) {
  ch_http_router_t *r = build();
  ch_http_match_t m;
  assert_int_equal(ch_http_router_match(r, "GET", "/rooms", &m), 0);
  assert_ptr_equal(m.handler, &H_ROOMS);
  assert_int_equal((intptr_t)m.udata, 1);
  assert_int_equal(m.nparams, 0);

  assert_int_equal(ch_http_router_match(r, "GET", "/rooms/r42", &m), 0);
  assert_ptr_equal(m.handler, &H_ROOM);
  assert_int_equal(m.nparams, 1);
  assert_string_equal(m.params[0].name, "id");
  assert_string_equal(m.params[0].value, "r42");
  assert_int_equal(m.params[0].len, 3);

  assert_int_equal(ch_http_router_match(r, "GET", "/rooms/a b%/messages", &m), 0);
  assert_ptr_equal(m.handler, &H_MSGS);
  assert_string_equal(param(&m, "id"), "a b%"); /* not decoded again */

  assert_int_equal(ch_http_router_match(r, "POST", "/rooms/7/messages", &m), 0);
  assert_ptr_equal(m.handler, &H_POST_MSGS);
  assert_string_equal(param(&m, "id"), "7");

  assert_int_equal(ch_http_router_match(r, "GET", "/", &m), 0);
  assert_ptr_equal(m.handler, &H_ROOT);
  ch_http_router_free(r);
}

static void test_literal_beats_param(void **state) {
  ch_http_router_t *r = build();
  ch_http_match_t m;
  /* /rooms/list was added after /rooms/:id and still wins */
  assert_int_equal(ch_http_router_match(r, "GET", "/rooms/list", &m), 0);
  assert_ptr_equal(m.handler, &H_ROOM_LIST);
  assert_int_equal(m.nparams, 0);
  /* exact beats a wildcard that would match nothing, regardless of order */
  assert_int_equal(ch_http_router_match(r, "GET", "/x", &m), 0);
  assert_ptr_equal(m.handler, &H_EXACT_A);
  assert_int_equal(ch_http_router_match(r, "GET", "/x/y", &m), 0);
  assert_ptr_equal(m.handler, &H_WILD_A);
  assert_string_equal(param(&m, "rest"), "y");
  ch_http_router_free(r);

  /* the leftmost differing segment decides: "/a/:b" beats "/:a/b" on "/a/b" */
  r = ch_http_router_new();
  static int P1, P2, P3;
  assert_int_equal(ch_http_router_add(r, "GET", "/:a/b", &P1, NULL), 0);
  assert_int_equal(ch_http_router_add(r, "GET", "/a/:b", &P2, NULL), 0);
  assert_int_equal(ch_http_router_add(r, "GET", "/*all", &P3, NULL), 0);
  assert_int_equal(ch_http_router_match(r, "GET", "/a/b", &m), 0);
  assert_ptr_equal(m.handler, &P2);
  assert_int_equal(ch_http_router_match(r, "GET", "/z/b", &m), 0);
  assert_ptr_equal(m.handler, &P1);
  assert_string_equal(param(&m, "a"), "z");
  assert_int_equal(ch_http_router_match(r, "GET", "/z/c", &m), 0);
  assert_ptr_equal(m.handler, &P3);
  assert_string_equal(param(&m, "all"), "z/c");
  assert_int_equal(ch_http_router_match(r, "GET", "/", &m), 0);
  assert_ptr_equal(m.handler, &P3);
  assert_string_equal(param(&m, "all"), "");
  ch_http_router_free(r);
}

static void test_wildcard(void **state) {
  ch_http_router_t *r = build();
  ch_http_match_t m;
  assert_int_equal(ch_http_router_match(r, "GET", "/static/js/app.js", &m), 0);
  assert_ptr_equal(m.handler, &H_STATIC);
  assert_string_equal(param(&m, "path"), "js/app.js");
  assert_int_equal(ch_http_router_match(r, "GET", "/static/", &m), 0);
  assert_string_equal(param(&m, "path"), "");
  assert_int_equal(ch_http_router_match(r, "GET", "/static", &m), 0);
  assert_string_equal(param(&m, "path"), "");
  assert_int_equal(ch_http_router_match(r, "GET", "/staticx", &m), CH_ENOTFOUND);

  assert_int_equal(ch_http_router_match(r, "GET", "/a/1/2/3/r/e/s/t", &m), 0);
  assert_ptr_equal(m.handler, &H_DEEP);
  assert_int_equal(m.nparams, 4);
  assert_string_equal(m.params[0].name, "b");
  assert_string_equal(m.params[0].value, "1");
  assert_string_equal(m.params[1].value, "2");
  assert_string_equal(m.params[2].value, "3");
  assert_string_equal(m.params[3].name, "rest");
  assert_string_equal(m.params[3].value, "r/e/s/t");
  assert_int_equal(ch_http_router_match(r, "GET", "/a/1/2", &m), CH_ENOTFOUND);
  ch_http_router_free(r);
}

static void test_not_found_and_strictness(void **state) {
  ch_http_router_t *r = build();
  ch_http_match_t m;
  assert_int_equal(ch_http_router_match(r, "GET", "/nope", &m), CH_ENOTFOUND);
  assert_int_equal(ch_http_router_match(r, "GET", "/rooms/", &m), CH_ENOTFOUND); /* empty :id */
  assert_int_equal(ch_http_router_match(r, "GET", "/rooms/1/", &m), CH_ENOTFOUND);
  assert_int_equal(ch_http_router_match(r, "GET", "/rooms//messages", &m), CH_ENOTFOUND);
  assert_int_equal(ch_http_router_match(r, "GET", "/rooms/1/messages/2", &m), CH_ENOTFOUND);
  assert_int_equal(ch_http_router_match(r, "GET", "/ROOMS", &m), CH_ENOTFOUND);
  assert_int_equal(ch_http_router_match(r, "GET", "", &m), CH_ENOTFOUND);
  assert_int_equal(ch_http_router_match(r, "GET", "*", &m), CH_ENOTFOUND);
  assert_int_equal(ch_http_router_match(r, "GET", "rooms", &m), CH_ENOTFOUND);
  ch_http_router_free(r);
}

static void test_method_not_allowed(void **state) {
  ch_http_router_t *r = build();
  ch_http_match_t m;
  ch_buf_t allow = CH_BUF_INIT;
  assert_int_equal(ch_http_router_match(r, "DELETE", "/rooms/7/messages", &m), CH_EUNSUPPORTED);
  assert_int_equal(ch_http_router_allow(r, "/rooms/7/messages", &allow), 0);
  assert_string_equal(ch_buf_cstr(&allow), "GET, HEAD, POST");
  allow.len = 0;
  assert_int_equal(ch_http_router_match(r, "POST", "/rooms", &m), CH_EUNSUPPORTED);
  assert_int_equal(ch_http_router_allow(r, "/rooms", &allow), 0);
  assert_string_equal(ch_buf_cstr(&allow), "GET, HEAD");
  allow.len = 0;
  /* /rooms/list: the literal route and the :id route both allow GET: listed once */
  assert_int_equal(ch_http_router_allow(r, "/rooms/list", &allow), 0);
  assert_string_equal(ch_buf_cstr(&allow), "GET, HEAD");
  allow.len = 0;
  /* nothing matches: untouched */
  assert_int_equal(ch_http_router_allow(r, "/nope", &allow), CH_ENOTFOUND);
  assert_int_equal(allow.len, 0);
  /* "*" route: any method matches, never 405 */
  assert_int_equal(ch_http_router_match(r, "PATCH", "/any", &m), 0);
  assert_ptr_equal(m.handler, &H_ANY);
  assert_int_equal(ch_http_router_match(r, "GET", "/any", &m), 0);
  assert_int_equal(ch_http_router_allow(r, "/any", &allow), CH_ENOTFOUND);
  ch_buf_dispose(&allow);
  ch_http_router_free(r);
}

static void test_head(void **state) {
  ch_http_router_t *r = build();
  ch_http_match_t m;
  assert_int_equal(ch_http_router_match(r, "HEAD", "/rooms/9", &m), 0);
  assert_ptr_equal(m.handler, &H_ROOM);
  assert_string_equal(param(&m, "id"), "9");
  /* an explicit HEAD route beats the GET route of the same pattern */
  assert_int_equal(ch_http_router_match(r, "HEAD", "/head-special", &m), 0);
  assert_ptr_equal(m.handler, &H_HEAD);
  assert_int_equal(ch_http_router_match(r, "GET", "/head-special", &m), 0);
  assert_ptr_equal(m.handler, &H_ROOT);
  /* HEAD does not match POST routes */
  assert_int_equal(ch_http_router_match(r, "HEAD", "/rooms/1/messages", &m), 0);
  assert_ptr_equal(m.handler, &H_MSGS);
  ch_http_router_free(r);

  r = ch_http_router_new();
  static int PO;
  assert_int_equal(ch_http_router_add(r, "POST", "/p", &PO, NULL), 0);
  assert_int_equal(ch_http_router_match(r, "HEAD", "/p", &m), CH_EUNSUPPORTED);
  assert_int_equal(ch_http_router_match(r, "GET", "/p", &m), CH_EUNSUPPORTED);
  ch_http_router_free(r);
}

static void test_method_precedence(void **state) {
  ch_http_router_t *r = ch_http_router_new();
  static int ANY, GET1, GET2;
  ch_http_match_t m;
  assert_int_equal(ch_http_router_add(r, "*", "/m", &ANY, NULL), 0);
  assert_int_equal(ch_http_router_add(r, "GET", "/m", &GET1, NULL), 0);
  assert_int_equal(ch_http_router_add(r, "GET", "/m", &GET2, NULL), 0);
  assert_int_equal(ch_http_router_match(r, "GET", "/m", &m), 0);
  assert_ptr_equal(m.handler, &GET1); /* exact beats "*"; first added among equals */
  assert_int_equal(ch_http_router_match(r, "HEAD", "/m", &m), 0);
  assert_ptr_equal(m.handler, &GET1); /* HEAD->GET beats "*" */
  assert_int_equal(ch_http_router_match(r, "PUT", "/m", &m), 0);
  assert_ptr_equal(m.handler, &ANY);
  /* path specificity comes before method exactness */
  static int ANY_LIT, GET_PARAM;
  assert_int_equal(ch_http_router_add(r, "GET", "/n/:x", &GET_PARAM, NULL), 0);
  assert_int_equal(ch_http_router_add(r, "*", "/n/lit", &ANY_LIT, NULL), 0);
  assert_int_equal(ch_http_router_match(r, "GET", "/n/lit", &m), 0);
  assert_ptr_equal(m.handler, &ANY_LIT);
  ch_http_router_free(r);
}

static void test_bad_patterns(void **state) {
  ch_http_router_t *r = ch_http_router_new();
  static int H;
  assert_int_equal(ch_http_router_add(r, "GET", "nope", &H, NULL), CH_EINVAL);
  assert_int_equal(ch_http_router_add(r, "GET", "", &H, NULL), CH_EINVAL);
  assert_int_equal(ch_http_router_add(r, "GET", NULL, &H, NULL), CH_EINVAL);
  assert_int_equal(ch_http_router_add(r, "GET", "/a/:", &H, NULL), CH_EINVAL);
  assert_int_equal(ch_http_router_add(r, "GET", "/a/*", &H, NULL), CH_EINVAL);
  assert_int_equal(ch_http_router_add(r, "GET", "/*rest/more", &H, NULL), CH_EINVAL);
  assert_int_equal(ch_http_router_add(r, "get", "/a", &H, NULL), CH_EINVAL);
  assert_int_equal(ch_http_router_add(r, "", "/a", &H, NULL), CH_EINVAL);
  assert_int_equal(ch_http_router_add(r, NULL, "/a", &H, NULL), CH_EINVAL);
  assert_int_equal(ch_http_router_add(r, "GET", "/:a/:b/:c/:d/:e/:f/:g/:h/:i", &H, NULL),
                   CH_EINVAL);
  assert_int_equal(ch_http_router_add(r, "GET", "/:a/:b/:c/:d/:e/:f/:g/*h", &H, NULL), 0);
  ch_http_match_t m;
  assert_int_equal(ch_http_router_match(r, "GET", "/1/2/3/4/5/6/7/8/9", &m), 0);
  assert_int_equal(m.nparams, 8);
  assert_string_equal(m.params[7].name, "h");
  assert_string_equal(m.params[7].value, "8/9");
  /* nothing else was added by the failed calls */
  assert_int_equal(ch_http_router_match(r, "GET", "/a", &m), CH_ENOTFOUND);
  ch_http_router_free(r);
  ch_http_router_free(NULL);
}

static void test_param_buffer_limit(void **state) {
  ch_http_router_t *r = ch_http_router_new();
  static int H;
  assert_int_equal(ch_http_router_add(r, "GET", "/f/*rest", &H, NULL), 0);
  size_t n = CH_HTTP_MATCH_BUF + 10;
  char *path = malloc(n + 1);
  memset(path, 'p', n);
  memcpy(path, "/f/", 3);
  path[CH_HTTP_MATCH_BUF - 1 + 3] = '\0'; /* value of MATCH_BUF - 1 bytes: fits with its NUL */
  ch_http_match_t m;
  assert_int_equal(ch_http_router_match(r, "GET", path, &m), 0);
  assert_int_equal(m.params[0].len, CH_HTTP_MATCH_BUF - 1);
  path[CH_HTTP_MATCH_BUF - 1 + 3] = 'p';
  path[CH_HTTP_MATCH_BUF + 3] = '\0'; /* one more byte: does not fit */
  assert_int_equal(ch_http_router_match(r, "GET", path, &m), CH_ETOOBIG);
  free(path);
  ch_http_router_free(r);
}

static void test_many_routes(void **state) {
  ch_http_router_t *r = ch_http_router_new();
  static int tags[100];
  char pat[64];
  for (int i = 0; i < 100; i++) {
    snprintf(pat, sizeof(pat), "/r%d/:x", i);
    assert_int_equal(ch_http_router_add(r, i % 2 ? "POST" : "GET", pat, &tags[i], NULL), 0);
  }
  ch_http_match_t m;
  for (int i = 0; i < 100; i++) {
    snprintf(pat, sizeof(pat), "/r%d/v%d", i, i);
    assert_int_equal(ch_http_router_match(r, i % 2 ? "POST" : "GET", pat, &m), 0);
    assert_ptr_equal(m.handler, &tags[i]);
    char want[16];
    snprintf(want, sizeof(want), "v%d", i);
    assert_string_equal(m.params[0].value, want);
    assert_int_equal(ch_http_router_match(r, i % 2 ? "GET" : "POST", pat, &m), CH_EUNSUPPORTED);
  }
  ch_http_router_free(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_literal_and_params), cmocka_unit_test(test_literal_beats_param),
      cmocka_unit_test(test_wildcard),           cmocka_unit_test(test_not_found_and_strictness),
      cmocka_unit_test(test_method_not_allowed), cmocka_unit_test(test_head),
      cmocka_unit_test(test_method_precedence),  cmocka_unit_test(test_bad_patterns),
      cmocka_unit_test(test_param_buffer_limit), cmocka_unit_test(test_many_routes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
