/*
 * test_static.c — document-root resolution and MIME types (src/http/static.c).
 *
 * Builds a throw-away tree under $TMPDIR:
 *
 *   <tmp>/root/index.html  app.js  sub/index.html  sub/x.css  emptydir/
 *              .git/config  fifo  ok-link -> app.js
 *              link -> ../outside/secret.txt   linkdir -> ../outside
 *   <tmp>/outside/secret.txt
 *
 * and tries the usual traversal tricks, including ones that arrive
 * percent-encoded and are decoded by the request reader first.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/err.h"
#include "http/request.h"
#include "http/static.h"

static char g_tmp[256], g_root[300], g_real_root[4096];

static void put(const char *rel, const char *text) {
  char p[512];
  snprintf(p, sizeof(p), "%s/%s", g_tmp, rel);
  FILE *f = fopen(p, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static void dir(const char *rel) {
  char p[512];
  snprintf(p, sizeof(p), "%s/%s", g_tmp, rel);
  assert_int_equal(mkdir(p, 0755), 0);
}

static void lnk(const char *target, const char *rel) {
  char p[512];
  snprintf(p, sizeof(p), "%s/%s", g_tmp, rel);
  assert_int_equal(symlink(target, p), 0);
}

static int setup(void **state) {
  const char *t = getenv("TMPDIR");
  snprintf(g_tmp, sizeof(g_tmp), "%s/chorus-static-XXXXXX", t ? t : "/tmp");
  if (mkdtemp(g_tmp) == NULL) return -1;
  dir("root");
  dir("root/sub");
  dir("root/emptydir");
  dir("root/.git");
  dir("outside");
  put("root/index.html", "<h1>root</h1>");
  put("root/app.js", "1");
  put("root/sub/index.html", "sub");
  put("root/sub/x.css", "b{}");
  put("root/.git/config", "secret");
  put("outside/secret.txt", "secret");
  lnk("app.js", "root/ok-link");
  lnk("../outside/secret.txt", "root/link");
  lnk("../outside", "root/linkdir");
  char fifo[512];
  snprintf(fifo, sizeof(fifo), "%s/root/fifo", g_tmp);
  if (mkfifo(fifo, 0644) != 0) return -1;
  snprintf(g_root, sizeof(g_root), "%s/root", g_tmp);
  if (realpath(g_root, g_real_root) == NULL) return -1;
  return 0;
}

static int teardown(void **state) {
  char cmd[600];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_tmp);
  return system(cmd) == 0 ? 0 : -1;
}

static void expect_file(const char *url, const char *rel) {
  char out[4096], want[4400];
  int rc = ch_http_static_resolve(g_root, url, out, sizeof(out));
  if (rc != 0) fail_msg("%s: rc %d", url, rc);
  snprintf(want, sizeof(want), "%s/%s", g_real_root, rel);
  assert_string_equal(out, want);
}

static void expect_rc(const char *url, int want) {
  char out[4096];
  int rc = ch_http_static_resolve(g_root, url, out, sizeof(out));
  if (rc != want) fail_msg("%s: rc %d, want %d", url, rc, want);
}

static void test_resolve_ok(void **state) {
  expect_file("/", "index.html");
  expect_file("/index.html", "index.html");
  expect_file("/app.js", "app.js");
  expect_file("/sub", "sub/index.html");
  expect_file("/sub/", "sub/index.html");
  expect_file("/sub/x.css", "sub/x.css");
  expect_file("//sub//x.css", "sub/x.css");
  expect_file("/ok-link", "app.js"); /* a symlink inside the root is fine */
  /* a root given with a trailing slash works the same */
  char root2[320], out[4096];
  snprintf(root2, sizeof(root2), "%s/", g_root);
  assert_int_equal(ch_http_static_resolve(root2, "/app.js", out, sizeof(out)), 0);
}

static void test_resolve_missing(void **state) {
  expect_rc("/missing.js", CH_ENOTFOUND);
  expect_rc("/emptydir", CH_ENOTFOUND);
  expect_rc("/emptydir/", CH_ENOTFOUND);
  expect_rc("/app.js/", CH_ENOTFOUND);
  expect_rc("/app.js/x", CH_ENOTFOUND);
  expect_rc("/fifo", CH_ENOTFOUND); /* not a regular file */
  char out[4096];
  assert_int_equal(ch_http_static_resolve("/nonexistent-root-xyz", "/a", out, sizeof(out)),
                   CH_ENOTFOUND);
}

static void test_traversal(void **state) {
  expect_rc("/../outside/secret.txt", CH_EPERM);
  expect_rc("/sub/../../outside/secret.txt", CH_EPERM);
  expect_rc("/sub/../app.js", CH_EPERM); /* even when it would stay inside */
  expect_rc("/..", CH_EPERM);
  expect_rc("/../", CH_EPERM);
  expect_rc("/./app.js", CH_EPERM);
  expect_rc("/.", CH_EPERM);
  expect_rc("/.git/config", CH_EPERM);
  expect_rc("/link", CH_EPERM);               /* symlink to a file outside */
  expect_rc("/linkdir/secret.txt", CH_EPERM); /* symlink to a dir outside */
  expect_rc("/sub\\..\\..\\outside", CH_EPERM);
  expect_rc("app.js", CH_EPERM);
  expect_rc("", CH_EPERM);
  expect_rc(NULL, CH_EPERM);
}

static void test_too_small(void **state) {
  char out[8];
  assert_int_equal(ch_http_static_resolve(g_root, "/app.js", out, sizeof(out)), CH_ETOOBIG);
  char big[5000];
  memset(big, 'a', sizeof(big) - 1);
  big[0] = '/';
  big[sizeof(big) - 1] = '\0';
  char out2[4096];
  assert_int_equal(ch_http_static_resolve(g_root, big, out2, sizeof(out2)), CH_ETOOBIG);
}

/* Encoded traversal: the reader decodes, static refuses. */
static void test_encoded_traversal_end_to_end(void **state) {
  static const char *reqs[] = {
      "GET /%2e%2e/outside/secret.txt HTTP/1.1\r\n\r\n",
      "GET /sub/%2E%2E/%2e%2e/outside/secret.txt HTTP/1.1\r\n\r\n",
      "GET /%2e%2e%2foutside%2fsecret.txt HTTP/1.1\r\n\r\n",
      "GET /%2egit/config HTTP/1.1\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
    ch_http_reader_t r;
    size_t c;
    ch_http_reader_init(&r, NULL);
    assert_int_equal(ch_http_reader_feed(&r, reqs[i], strlen(reqs[i]), &c), 0);
    ch_http_req_t *q = ch_http_reader_take(&r);
    char out[4096];
    assert_int_equal(ch_http_static_resolve(g_root, q->path, out, sizeof(out)), CH_EPERM);
    ch_http_req_free(q);
    ch_http_reader_dispose(&r);
  }
}

static void test_mime(void **state) {
  assert_string_equal(ch_http_mime_type("/a/index.html"), "text/html; charset=utf-8");
  assert_string_equal(ch_http_mime_type("x.HTM"), "text/html; charset=utf-8");
  assert_string_equal(ch_http_mime_type("app.js"), "text/javascript; charset=utf-8");
  assert_string_equal(ch_http_mime_type("m.mjs"), "text/javascript; charset=utf-8");
  assert_string_equal(ch_http_mime_type("s.css"), "text/css; charset=utf-8");
  assert_string_equal(ch_http_mime_type("d.json"), "application/json");
  assert_string_equal(ch_http_mime_type("i.svg"), "image/svg+xml");
  assert_string_equal(ch_http_mime_type("i.png"), "image/png");
  assert_string_equal(ch_http_mime_type("i.jpg"), "image/jpeg");
  assert_string_equal(ch_http_mime_type("i.JPEG"), "image/jpeg");
  assert_string_equal(ch_http_mime_type("favicon.ico"), "image/x-icon");
  assert_string_equal(ch_http_mime_type("m.wasm"), "application/wasm");
  assert_string_equal(ch_http_mime_type("r.txt"), "text/plain; charset=utf-8");
  assert_string_equal(ch_http_mime_type("noext"), "application/octet-stream");
  assert_string_equal(ch_http_mime_type("/dir.js/noext"), "application/octet-stream");
  assert_string_equal(ch_http_mime_type(".html"), "application/octet-stream");
  assert_string_equal(ch_http_mime_type("a.tar.gz"), "application/octet-stream");
  assert_string_equal(ch_http_mime_type("a.html.bak"), "application/octet-stream");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_resolve_ok),
      cmocka_unit_test(test_resolve_missing),
      cmocka_unit_test(test_traversal),
      cmocka_unit_test(test_too_small),
      cmocka_unit_test(test_encoded_traversal_end_to_end),
      cmocka_unit_test(test_mime),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
