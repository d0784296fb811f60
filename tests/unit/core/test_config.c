/*
 * test_config.c — the configuration table, its parsers and its four sources.
 *
 * Type parsers are exercised through ch_config_set() on a real key of each
 * type (the table is the only way in). Layering is tested by writing a real
 * file, setting real CHORUS_* variables and passing an argv. The last tests
 * keep docs/CONFIG.md and chorus.conf.example in step with the table; run
 * with CHORUS_UPDATE_DOCS=1 to rewrite the generated block of docs/CONFIG.md.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/err.h"
#include "core/log.h"

/* ---------------------------------------------------------------- helpers */

/* Remove every CHORUS_<KEY> variable so the developer's environment cannot leak in. */
static void clear_env(void) {
  for (size_t i = 0; ch_config_key(i); i++) {
    char name[128] = "CHORUS_";
    size_t j = strlen(name);
    for (const char *p = ch_config_key(i); *p; p++) name[j++] = *p == '-' ? '_' : (char)(*p - 32 * (*p >= 'a' && *p <= 'z'));
    name[j] = '\0';
    unsetenv(name);
  }
  unsetenv("CHORUS_CONFIG");
}

static int setup(void **state) {
  (void)state;
  clear_env();
  return 0;
}

/* Write text to a fresh temporary file; returns its malloc'd path. */
static char *write_tmp(const char *text) {
  char *path = strdup("/tmp/chorus-test-config-XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  size_t n = strlen(text);
  assert_int_equal(write(fd, text, n), (ssize_t)n);
  close(fd);
  return path;
}

/* ch_config_set on a fresh config; returns rc and leaves the message in *err. */
static int set1(ch_config_t *c, const char *key, const char *value, ch_buf_t *err) {
  err->len = 0;
  int rc = ch_config_set(c, key, value, "test", err);
  ch_buf_cstr(err);
  return rc;
}

/* Expect key=value to be accepted, and the effective value to print as shown. */
static void ok(const char *key, const char *value, const char *shown) {
  ch_config_t c;
  ch_buf_t err = CH_BUF_INIT, out = CH_BUF_INIT;
  ch_config_init(&c);
  int rc = set1(&c, key, value, &err);
  if (rc != 0) fail_msg("%s = '%s' refused: %s", key, value, err.base);
  assert_int_equal(ch_config_get(&c, key, &out), 0);
  assert_string_equal(ch_buf_cstr(&out), shown);
  ch_buf_dispose(&err);
  ch_buf_dispose(&out);
  ch_config_dispose(&c);
}

/* Expect key=value to be refused with a message naming key and origin, leaving the value alone. */
static void bad(const char *key, const char *value) {
  ch_config_t c;
  ch_buf_t err = CH_BUF_INIT, before = CH_BUF_INIT, after = CH_BUF_INIT;
  ch_config_init(&c);
  ch_config_get(&c, key, &before);
  int rc = set1(&c, key, value, &err);
  if (rc != CH_ECONFIG) fail_msg("%s = '%s' accepted", key, value);
  char want[160];
  snprintf(want, sizeof(want), "config: %s = '", key);
  assert_non_null(strstr(err.base, want));
  assert_non_null(strstr(err.base, "(test): expected "));
  ch_config_get(&c, key, &after);
  assert_string_equal(ch_buf_cstr(&before), ch_buf_cstr(&after));
  ch_buf_dispose(&err);
  ch_buf_dispose(&before);
  ch_buf_dispose(&after);
  ch_config_dispose(&c);
}

/* Load with a file (text may be NULL) and an argv; err collects messages. */
static int load(ch_config_t *c, const char *file_text, int argc, char **argv, char ***rest, int *nrest,
                ch_buf_t *err) {
  char *path = NULL;
  if (file_text) {
    path = write_tmp(file_text);
    setenv("CHORUS_CONFIG", path, 1);
  }
  int rc = ch_config_load(c, argc, argv, rest, nrest, err);
  ch_buf_cstr(err);
  if (path) {
    unlink(path);
    free(path);
    unsetenv("CHORUS_CONFIG");
  }
  return rc;
}

/* ---------------------------------------------------------------- defaults */

static void test_defaults(void **state) {
  (void)state;
  ch_config_t c;
  ch_config_init(&c);
  assert_string_equal(c.listen_host, "127.0.0.1");
  assert_int_equal(c.listen_port, 4000);
  assert_string_equal(c.data_dir, "./data");
  assert_int_equal(c.threads, 0);
  assert_false(c.test_endpoints);
  assert_false(c.insecure_dev);
  assert_string_equal(c.tls_cert, "");
  assert_string_equal(c.tls_key, "");
  assert_int_equal(c.log_level, CH_LOG_INFO);
  assert_int_equal(c.log_format, CH_CONFIG_LOG_TEXT);
  assert_int_equal(c.max_frame, 1024 * 1024);
  assert_int_equal(c.max_message, 4 * 1024 * 1024);
  assert_int_equal(c.max_outbound, 8 * 1024 * 1024);
  assert_int_equal(c.max_header, 16 * 1024);
  assert_int_equal(c.max_body, 1024 * 1024);
  assert_int_equal(c.max_connections, 100000);
  assert_int_equal(c.header_timeout_ms, 10000);
  assert_int_equal(c.ping_interval_ms, 30000);
  assert_int_equal(c.pong_timeout_ms, 60000);
  assert_int_equal(c.shutdown_timeout_ms, 5000);
  assert_int_equal(c.sse_heartbeat_ms, 15000);
  assert_int_equal(c.origins.n, 0);
  assert_null(c.origins.v);
  assert_true(c.deflate);
  assert_int_equal(c.deflate_level, 1);
  assert_int_equal(c.deflate_min_size, 64);
  assert_string_equal(c.static_dir, "");
  ch_buf_t err = CH_BUF_INIT;
  assert_int_equal(ch_config_check(&c, &err), 0);
  assert_int_equal(err.len, 0);
  ch_config_dispose(&c);
}

/* ---------------------------------------------------------------- type parsers */

static void test_bool(void **state) {
  (void)state;
  const char *yes[] = {"true", "TRUE", "yes", "Yes", "on", "ON", "1", " true "};
  const char *no[] = {"false", "False", "no", "NO", "off", "Off", "0"};
  for (size_t i = 0; i < sizeof(yes) / sizeof(*yes); i++) ok("test-endpoints", yes[i], "true");
  for (size_t i = 0; i < sizeof(no) / sizeof(*no); i++) ok("deflate", no[i], "false");
  const char *bads[] = {"", "2", "tru", "yess", "enable", "-1", "truex", "o", "y"};
  for (size_t i = 0; i < sizeof(bads) / sizeof(*bads); i++) bad("deflate", bads[i]);
}

static void test_int(void **state) {
  (void)state;
  ok("threads", "1", "1");
  ok("threads", "256", "256");
  ok("threads", "0", "0"); /* the documented "one per CPU" */
  ok("threads", " 8 ", "8");
  ok("deflate-level", "9", "9");
  ok("max-connections", "10000000", "10000000");
  const char *bads[] = {"257", "-1", "abc", "4x", "", "1.5", "+4", "0x10", "1e3",
                        "99999999999999999999999", "18446744073709551617", "4 4"};
  for (size_t i = 0; i < sizeof(bads) / sizeof(*bads); i++) bad("threads", bads[i]);
  bad("deflate-level", "0"); /* no "0 means" for this key */
  bad("deflate-level", "10");
  bad("max-connections", "0");
}

static void test_int_message(void **state) {
  (void)state;
  ch_config_t c;
  ch_buf_t err = CH_BUF_INIT;
  ch_config_init(&c);
  assert_int_equal(ch_config_set(&c, "threads", "abc", "chorus.conf:3", &err), CH_ECONFIG);
  assert_string_equal(ch_buf_cstr(&err),
                      "config: threads = 'abc' (chorus.conf:3): expected an integer 1..256, or 0 for one per CPU\n");
  err.len = 0;
  assert_int_equal(ch_config_set(&c, "threads", "\x01\n", NULL, &err), CH_ECONFIG);
  assert_string_equal(ch_buf_cstr(&err), "config: threads = '\\x01\\x0a': expected an integer 1..256, or 0 for one per CPU\n");
  assert_int_equal(c.threads, 0);
  ch_buf_dispose(&err);
  ch_config_dispose(&c);
}

static void test_size(void **state) {
  (void)state;
  ok("max-frame", "16MiB", "16MiB");
  ok("max-frame", "16 MiB", "16MiB");
  ok("max-frame", "16mib", "16MiB");
  ok("max-frame", "2m", "2MiB");
  ok("max-frame", "2M", "2MiB");
  ok("max-frame", "2MB", "2MiB");
  ok("max-frame", "1k", "1KiB");
  ok("max-frame", "1KiB", "1KiB");
  ok("max-frame", "1025", "1025B");
  ok("max-frame", "1025B", "1025B");
  ok("max-frame", "2048", "2KiB");
  ok("max-frame", "1GiB", "1GiB");
  ok("max-frame", "1g", "1GiB");
  ok("deflate-min-size", "0", "0B");
  ok("deflate-min-size", "64", "64B");
  ok("max-header", "1MiB", "1MiB");
  {
    ch_config_t c;
    ch_buf_t err = CH_BUF_INIT;
    ch_config_init(&c);
    assert_int_equal(set1(&c, "max-outbound", "3MiB", &err), 0);
    assert_int_equal(c.max_outbound, 3u * 1024 * 1024);
    ch_buf_dispose(&err);
    ch_config_dispose(&c);
  }
  const char *bads[] = {"", "MiB", "1.5MiB", "1TiB", "2GiB", "1023", "1023B", "-1k", "16 M iB",
                        "18446744073709551615k", "99999999999999999999", "16MiBs", "k16"};
  for (size_t i = 0; i < sizeof(bads) / sizeof(*bads); i++) bad("max-frame", bads[i]);
  bad("max-header", "2MiB");
}

static void test_duration(void **state) {
  (void)state;
  ok("header-timeout", "10s", "10s");
  ok("header-timeout", "1500ms", "1500ms");
  ok("header-timeout", "2000ms", "2s");
  ok("header-timeout", "100ms", "100ms");
  ok("header-timeout", "2m", "2m");
  ok("header-timeout", "120s", "2m");
  ok("header-timeout", "1h", "1h");
  ok("header-timeout", " 5 S ", "5s");
  ok("shutdown-timeout", "0", "0s");
  ok("shutdown-timeout", "0ms", "0s");
  ok("shutdown-timeout", "10m", "10m");
  const char *bads[] = {"", "10", "s", "10x", "1.5s", "-1s", "99ms", "2h", "10 sec",
                        "99999999999999999999h", "18446744073709551615h"};
  for (size_t i = 0; i < sizeof(bads) / sizeof(*bads); i++) bad("header-timeout", bads[i]);
  bad("ping-interval", "0"); /* 0 only where the range includes it */
  bad("shutdown-timeout", "11m");
}

static void test_enum(void **state) {
  (void)state;
  ok("log-level", "debug", "debug");
  ok("log-level", "ERROR", "error");
  ok("log-format", "json", "json");
  ch_config_t c;
  ch_buf_t err = CH_BUF_INIT;
  ch_config_init(&c);
  assert_int_equal(set1(&c, "log-level", "warn", &err), 0);
  assert_int_equal(c.log_level, CH_LOG_WARN);
  assert_int_equal(set1(&c, "log-level", "debug", &err), 0);
  assert_int_equal(c.log_level, CH_LOG_DEBUG);
  assert_int_equal(set1(&c, "log-format", "json", &err), 0);
  assert_int_equal(c.log_format, CH_CONFIG_LOG_JSON);
  assert_int_equal(set1(&c, "log-level", "verbose", &err), CH_ECONFIG);
  assert_non_null(strstr(err.base, "expected one of error|warn|info|debug"));
  ch_buf_dispose(&err);
  ch_config_dispose(&c);
  bad("log-level", "");
  bad("log-level", "info|debug");
  bad("log-level", "inf");
  bad("log-format", "xml");
}

static void test_addr(void **state) {
  (void)state;
  struct {
    const char *in, *host;
    unsigned port;
    const char *shown;
  } good[] = {
      {"127.0.0.1:4000", "127.0.0.1", 4000, "127.0.0.1:4000"},
      {"0.0.0.0:1", "0.0.0.0", 1, "0.0.0.0:1"},
      {"[::1]:4000", "::1", 4000, "[::1]:4000"},
      {"[::]:65535", "::", 65535, "[::]:65535"},
      {"[2001:db8::1]:443", "2001:db8::1", 443, "[2001:db8::1]:443"},
      {"localhost:8080", "localhost", 8080, "localhost:8080"},
      {"hub.example.com:80", "hub.example.com", 80, "hub.example.com:80"},
  };
  for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++) {
    ch_config_t c;
    ch_buf_t err = CH_BUF_INIT;
    ch_config_init(&c);
    assert_int_equal(set1(&c, "listen", good[i].in, &err), 0);
    assert_string_equal(c.listen_host, good[i].host);
    assert_int_equal(c.listen_port, good[i].port);
    ch_buf_dispose(&err);
    ch_config_dispose(&c);
    ok("listen", good[i].in, good[i].shown);
  }
  const char *bads[] = {"", "4000", ":4000", "host", "host:", "host:0", "host:65536", "host:-1",
                        "host:+80", "host:80x", "host:999999", "::1:4000", "::1", "[::1]4000",
                        "[::1]:", "[::1", "[zz]:4000", "[]:4000", "[127.0.0.1]:80", "h o:1",
                        "h/x:1", "[::1]:4000:1", "a:b:c"};
  for (size_t i = 0; i < sizeof(bads) / sizeof(*bads); i++) bad("listen", bads[i]);
}

static void test_strings_and_paths(void **state) {
  (void)state;
  ok("data-dir", "/var/lib/chorus", "/var/lib/chorus");
  ok("static-dir", "", "");
  ok("static-dir", "web", "web");
  ok("tls-cert", "/etc/x y/cert.pem", "/etc/x y/cert.pem");
  bad("data-dir", "");
}

static void test_origins(void **state) {
  (void)state;
  const char *good[] = {"https://app.example.com", "http://localhost:3000", "http://[::1]:8080",
                        "chrome-extension://abcdef", "http://127.0.0.1"};
  for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++) ok("origins", good[i], good[i]);
  const char *bads[] = {"example.com", "https://a.com/", "https://a.com/path", "https://",
                        "https://a.com:99999", "https://a.com:", "://a.com", "*", "https://a b",
                        "https://[]", "1http://a"};
  for (size_t i = 0; i < sizeof(bads) / sizeof(*bads); i++) bad("origins", bads[i]);
}

/* ---------------------------------------------------------------- lists */

static void test_list_set_appends_and_clears(void **state) {
  (void)state;
  ch_config_t c;
  ch_buf_t err = CH_BUF_INIT, out = CH_BUF_INIT;
  ch_config_init(&c);
  assert_int_equal(set1(&c, "origins", "https://a.example", &err), 0);
  assert_int_equal(set1(&c, "origins", "https://b.example", &err), 0);
  assert_int_equal(c.origins.n, 2);
  assert_string_equal(c.origins.v[0], "https://a.example");
  assert_string_equal(c.origins.v[1], "https://b.example");
  ch_config_get(&c, "origins", &out);
  assert_string_equal(ch_buf_cstr(&out), "https://a.example,https://b.example");
  assert_int_equal(set1(&c, "origins", "bad", &err), CH_ECONFIG);
  assert_int_equal(c.origins.n, 2); /* a refused item leaves the list alone */
  assert_int_equal(set1(&c, "origins", "", &err), 0);
  assert_int_equal(c.origins.n, 0);
  ch_buf_dispose(&err);
  ch_buf_dispose(&out);
  ch_config_dispose(&c);
}

static void test_list_layers_replace(void **state) {
  (void)state;
  const char *file = "origins = https://f1.example\norigins = https://f2.example\n";
  /* File alone: both entries, in order. */
  {
    ch_config_t c;
    ch_buf_t err = CH_BUF_INIT;
    char *argv[] = {"chorus"};
    ch_config_init(&c);
    assert_int_equal(load(&c, file, 1, argv, NULL, NULL, &err), 0);
    assert_int_equal(c.origins.n, 2);
    assert_string_equal(c.origins.v[1], "https://f2.example");
    ch_buf_dispose(&err);
    ch_config_dispose(&c);
  }
  /* Env replaces the file's list; commas split, blanks trimmed. */
  {
    ch_config_t c;
    ch_buf_t err = CH_BUF_INIT;
    char *argv[] = {"chorus"};
    setenv("CHORUS_ORIGINS", " https://e1.example , https://e2.example,", 1);
    ch_config_init(&c);
    assert_int_equal(load(&c, file, 1, argv, NULL, NULL, &err), 0);
    assert_int_equal(c.origins.n, 2);
    assert_string_equal(c.origins.v[0], "https://e1.example");
    assert_string_equal(c.origins.v[1], "https://e2.example");
    ch_buf_dispose(&err);
    ch_config_dispose(&c);
  }
  /* Flags replace env's list and append among themselves. */
  {
    ch_config_t c;
    ch_buf_t err = CH_BUF_INIT;
    char *argv[] = {"chorus", "--origins", "https://g1.example", "--origins=https://g2.example"};
    ch_config_init(&c);
    assert_int_equal(load(&c, file, 4, argv, NULL, NULL, &err), 0);
    assert_int_equal(c.origins.n, 2);
    assert_string_equal(c.origins.v[0], "https://g1.example");
    assert_string_equal(c.origins.v[1], "https://g2.example");
    ch_buf_dispose(&err);
    ch_config_dispose(&c);
  }
  /* An empty value on a higher layer clears to "any origin". */
  {
    ch_config_t c;
    ch_buf_t err = CH_BUF_INIT;
    char *argv[] = {"chorus", "--origins="};
    ch_config_init(&c);
    assert_int_equal(load(&c, file, 2, argv, NULL, NULL, &err), 0);
    assert_int_equal(c.origins.n, 0);
    ch_buf_dispose(&err);
    ch_config_dispose(&c);
  }
  unsetenv("CHORUS_ORIGINS");
  {
    ch_config_t c;
    ch_buf_t err = CH_BUF_INIT;
    char *argv[] = {"chorus"};
    setenv("CHORUS_ORIGINS", "https://ok.example,nope", 1);
    ch_config_init(&c);
    assert_int_equal(load(&c, NULL, 1, argv, NULL, NULL, &err), CH_ECONFIG);
    assert_non_null(strstr(err.base, "config: origins = 'nope' (env CHORUS_ORIGINS): expected an origin"));
    unsetenv("CHORUS_ORIGINS");
    ch_buf_dispose(&err);
    ch_config_dispose(&c);
  }
}

/* ---------------------------------------------------------------- layering */

static void test_precedence(void **state) {
  (void)state;
  const char *file = "threads = 2\nlog-level = warn\ndata-dir = /from/file\nmax-body = 2MiB\n";
  char *argv[] = {"chorus", "--threads", "4"};
  ch_config_t c;
  ch_buf_t err = CH_BUF_INIT, dump = CH_BUF_INIT;
  setenv("CHORUS_THREADS", "3", 1);
  setenv("CHORUS_LOG_LEVEL", "debug", 1);
  ch_config_init(&c);
  assert_int_equal(load(&c, file, 3, argv, NULL, NULL, &err), 0);
  assert_int_equal(c.threads, 4);                    /* flag > env > file */
  assert_int_equal(c.log_level, CH_LOG_DEBUG);       /* env > file */
  assert_string_equal(c.data_dir, "/from/file");     /* file > default */
  assert_int_equal(c.max_body, 2 * 1024 * 1024);
  assert_int_equal(c.max_header, 16 * 1024);         /* default */
  ch_config_dump(&c, &dump);
  ch_buf_cstr(&dump);
  assert_non_null(strstr(dump.base, "Set by flag --threads.\nthreads = 4\n"));
  assert_non_null(strstr(dump.base, "Set by env CHORUS_LOG_LEVEL.\nlog-level = debug\n"));
  assert_non_null(strstr(dump.base, ":3.\ndata-dir = /from/file\n"));
  assert_non_null(strstr(dump.base, "CHORUS_MAX_HEADER, flag --max-header.\nmax-header = 16KiB\n"));
  unsetenv("CHORUS_THREADS");
  unsetenv("CHORUS_LOG_LEVEL");
  ch_buf_dispose(&err);
  ch_buf_dispose(&dump);
  ch_config_dispose(&c);
}

static void test_config_path_sources(void **state) {
  (void)state;
  char *f1 = write_tmp("threads = 5\n");
  char *f2 = write_tmp("threads = 6\n");
  /* --config PATH beats CHORUS_CONFIG; --config=PATH works too. */
  {
    ch_config_t c;
    ch_buf_t err = CH_BUF_INIT;
    char *argv[] = {"chorus", "--config", f2};
    setenv("CHORUS_CONFIG", f1, 1);
    ch_config_init(&c);
    assert_int_equal(ch_config_load(&c, 3, argv, NULL, NULL, &err), 0);
    assert_int_equal(c.threads, 6);
    ch_config_dispose(&c);
    char arg[300];
    snprintf(arg, sizeof(arg), "--config=%s", f2);
    char *argv2[] = {"chorus", arg};
    ch_config_init(&c);
    assert_int_equal(ch_config_load(&c, 2, argv2, NULL, NULL, &err), 0);
    assert_int_equal(c.threads, 6);
    ch_config_dispose(&c);
    /* CHORUS_CONFIG alone. */
    char *argv3[] = {"chorus"};
    ch_config_init(&c);
    assert_int_equal(ch_config_load(&c, 1, argv3, NULL, NULL, &err), 0);
    assert_int_equal(c.threads, 5);
    ch_config_dispose(&c);
    /* --config= (empty) means no file even if CHORUS_CONFIG names one. */
    char *argv4[] = {"chorus", "--config="};
    ch_config_init(&c);
    assert_int_equal(ch_config_load(&c, 2, argv4, NULL, NULL, &err), 0);
    assert_int_equal(c.threads, 0);
    ch_config_dispose(&c);
    unsetenv("CHORUS_CONFIG");
    assert_int_equal(err.len, 0);
    ch_buf_dispose(&err);
  }
  /* A named file that does not exist is an error naming it. */
  {
    ch_config_t c;
    ch_buf_t err = CH_BUF_INIT;
    char *argv[] = {"chorus", "--config", "/nonexistent/chorus.conf"};
    ch_config_init(&c);
    assert_int_equal(ch_config_load(&c, 3, argv, NULL, NULL, &err), CH_ECONFIG);
    assert_non_null(strstr(ch_buf_cstr(&err), "cannot read config file /nonexistent/chorus.conf: No such file"));
    ch_buf_dispose(&err);
    ch_config_dispose(&c);
  }
  /* --config without a value. */
  {
    ch_config_t c;
    ch_buf_t err = CH_BUF_INIT;
    char *argv[] = {"chorus", "--config"};
    ch_config_init(&c);
    assert_int_equal(ch_config_load(&c, 2, argv, NULL, NULL, &err), CH_ECONFIG);
    assert_non_null(strstr(ch_buf_cstr(&err), "flag --config needs a value"));
    ch_buf_dispose(&err);
    ch_config_dispose(&c);
  }
  unlink(f1);
  unlink(f2);
  free(f1);
  free(f2);
}

/* ---------------------------------------------------------------- file syntax */

static void test_file_syntax(void **state) {
  (void)state;
  const char *file =
      "\xEF\xBB\xBF# a comment\r\n"
      "\r\n"
      "   # indented comment\n"
      "\tthreads\t=\t7   # trailing comment\r\n"
      "static-dir = \"web # not a comment\"  # but this is\n"
      "data-dir = \"a \\\"q\\\" \\\\ b\\tc\"\n"
      "tls-cert=x#y\n"
      "tls-key =   \n"
      "tls-key = \"\"\n"
      "log-level = \"debug\"\n"
      "deflate = off";  /* no final newline */
  ch_config_t c;
  ch_buf_t err = CH_BUF_INIT;
  char *argv[] = {"chorus"};
  ch_config_init(&c);
  int rc = load(&c, file, 1, argv, NULL, NULL, &err);
  /* tls-cert without tls-key is the one (cross-key) complaint. */
  assert_int_equal(rc, CH_ECONFIG);
  assert_int_equal(c.threads, 7);
  assert_string_equal(c.static_dir, "web # not a comment");
  assert_string_equal(c.data_dir, "a \"q\" \\ b\tc");
  assert_string_equal(c.tls_cert, "x#y");
  assert_string_equal(c.tls_key, "");
  assert_int_equal(c.log_level, CH_LOG_DEBUG);
  assert_false(c.deflate);
  assert_non_null(strstr(err.base, "config: tls-cert is set ("));
  assert_non_null(strstr(err.base, ":7) but tls-key is not: give both or neither\n"));
  assert_non_null(strchr(err.base, '\n'));
  assert_int_equal(strchr(err.base, '\n')[1], '\0'); /* nothing else complained about */
  ch_buf_dispose(&err);
  ch_config_dispose(&c);
}

static void test_file_errors(void **state) {
  (void)state;
  const char *file =
      "threads = abc\n"                 /* 1: bad value */
      "thread = 4\n"                    /* 2: unknown key, close */
      "zzzzzzzz = 1\n"                  /* 3: unknown key, nothing close */
      "just some words\n"               /* 4: no '=' */
      "data-dir = \"unterminated\n"     /* 5 */
      "data-dir = \"x\" y\n"            /* 6: text after quote */
      "data-dir = \"\\q\"\n"            /* 7: bad escape */
      "max-frame = 10\n"                /* 8: below range */
      "deflate-level = 5\n";            /* 9: fine, and still applied */
  ch_config_t c;
  ch_buf_t err = CH_BUF_INIT;
  char *argv[] = {"chorus"};
  char *path = write_tmp(file);
  setenv("CHORUS_CONFIG", path, 1);
  ch_config_init(&c);
  assert_int_equal(ch_config_load(&c, 1, argv, NULL, NULL, &err), CH_ECONFIG);
  unsetenv("CHORUS_CONFIG");
  ch_buf_cstr(&err);
  char want[512];
  snprintf(want, sizeof(want), "config: threads = 'abc' (%s:1): expected an integer 1..256, or 0 for one per CPU\n", path);
  assert_non_null(strstr(err.base, want));
  snprintf(want, sizeof(want), "config: unknown key 'thread' (%s:2); did you mean 'threads'?\n", path);
  assert_non_null(strstr(err.base, want));
  snprintf(want, sizeof(want), "config: unknown key 'zzzzzzzz' (%s:3)\n", path);
  assert_non_null(strstr(err.base, want));
  snprintf(want, sizeof(want), "config: %s:4: expected 'key = value'\n", path);
  assert_non_null(strstr(err.base, want));
  snprintf(want, sizeof(want), "config: data-dir (%s:5): unterminated quoted value\n", path);
  assert_non_null(strstr(err.base, want));
  snprintf(want, sizeof(want), "config: data-dir (%s:6): text after the closing quote\n", path);
  assert_non_null(strstr(err.base, want));
  snprintf(want, sizeof(want), "config: data-dir (%s:7): unknown escape", path);
  assert_non_null(strstr(err.base, want));
  snprintf(want, sizeof(want), "config: max-frame = '10' (%s:8): expected a size 1KiB..1GiB", path);
  assert_non_null(strstr(err.base, want));
  assert_int_equal(c.deflate_level, 5);
  assert_int_equal(c.threads, 0);
  assert_string_equal(c.data_dir, "./data");
  unlink(path);
  free(path);
  ch_buf_dispose(&err);
  ch_config_dispose(&c);
}

static void test_file_nul_byte(void **state) {
  (void)state;
  char path[] = "/tmp/chorus-test-config-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "threads = 4\0\n", 13), 13);
  close(fd);
  ch_config_t c;
  ch_buf_t err = CH_BUF_INIT;
  char *argv[] = {"chorus", "--config", path};
  ch_config_init(&c);
  assert_int_equal(ch_config_load(&c, 3, argv, NULL, NULL, &err), CH_ECONFIG);
  assert_non_null(strstr(ch_buf_cstr(&err), "contains a NUL byte"));
  assert_int_equal(c.threads, 0);
  unlink(path);
  ch_buf_dispose(&err);
  ch_config_dispose(&c);
}

/* ---------------------------------------------------------------- env and flags */

static void test_env_errors_and_unknown(void **state) {
  (void)state;
  ch_config_t c;
  ch_buf_t err = CH_BUF_INIT;
  char *argv[] = {"chorus"};
  setenv("CHORUS_PING_INTERVAL", "30", 1);
  setenv("CHORUS_NOT_A_KEY", "whatever", 1); /* ignored: the environment is shared */
  setenv("CHORUS_MAX_OUTBOUND", "16MiB", 1);
  ch_config_init(&c);
  assert_int_equal(ch_config_load(&c, 1, argv, NULL, NULL, &err), CH_ECONFIG);
  assert_string_equal(ch_buf_cstr(&err),
                      "config: ping-interval = '30' (env CHORUS_PING_INTERVAL): expected a duration 1s..1h such as 10s (ms, s, m, h)\n");
  assert_int_equal(c.max_outbound, 16u * 1024 * 1024);
  unsetenv("CHORUS_PING_INTERVAL");
  unsetenv("CHORUS_NOT_A_KEY");
  unsetenv("CHORUS_MAX_OUTBOUND");
  ch_buf_dispose(&err);
  ch_config_dispose(&c);
}

static void test_flags(void **state) {
  (void)state;
  ch_config_t c;
  ch_buf_t err = CH_BUF_INIT;
  char **rest = NULL;
  int nrest = -1;
  char *argv[] = {"chorus", "serve", "--test-endpoints", "--no-deflate", "--insecure-dev=yes",
                  "-h", "--listen", "[::1]:5000", "--user", "alice", "--data-dir=/d", "extra",
                  "--", "--threads", "9"};
  int argc = (int)(sizeof(argv) / sizeof(*argv));
  ch_config_init(&c);
  assert_int_equal(ch_config_load(&c, argc, argv, &rest, &nrest, &err), 0);
  assert_true(c.test_endpoints);
  assert_false(c.deflate);
  assert_true(c.insecure_dev);
  assert_string_equal(c.listen_host, "::1");
  assert_int_equal(c.listen_port, 5000);
  assert_string_equal(c.data_dir, "/d");
  assert_int_equal(c.threads, 0); /* after "--": not a flag */
  const char *want[] = {"serve", "-h", "--user", "alice", "extra", "--threads", "9"};
  assert_int_equal(nrest, 7);
  for (int i = 0; i < nrest; i++) assert_string_equal(rest[i], want[i]);
  assert_null(rest[nrest]);
  assert_ptr_equal(rest[0], argv[1]); /* argv's own strings */
  ch_buf_dispose(&err);
  ch_config_dispose(&c);
}

static void test_flag_errors(void **state) {
  (void)state;
  struct {
    int argc;
    char *argv[4];
    const char *msg;
  } cases[] = {
      {2, {"chorus", "--threads"}, "config: flag --threads needs a value: an integer 1..256, or 0 for one per CPU\n"},
      {3, {"chorus", "--threads", "--deflate"}, "config: flag --threads needs a value"},
      {2, {"chorus", "--no-deflate=1"}, "config: flag --no-deflate takes no value\n"},
      {2, {"chorus", "--deflate=maybe"}, "config: deflate = 'maybe' (flag --deflate): expected a boolean"},
      {3, {"chorus", "--threads", "x"}, "config: threads = 'x' (flag --threads): expected an integer 1..256"},
      {2, {"chorus", "--listen=[::1]:99999"}, "config: listen = '[::1]:99999' (flag --listen): expected host:port"},
      {2, {"chorus", "--thred=3"}, "config: unknown flag '--thred'; did you mean '--threads'?\n"},
      {2, {"chorus", "stray"}, "config: unexpected argument 'stray'\n"},
      {3, {"chorus", "--ping-interval", "2m"}, "config: pong-timeout (1m, default) must be longer than ping-interval (2m, flag --ping-interval)\n"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
    ch_config_t c;
    ch_buf_t err = CH_BUF_INIT;
    ch_config_init(&c);
    /* rest == NULL: leftovers are errors too */
    assert_int_equal(ch_config_load(&c, cases[i].argc, cases[i].argv, NULL, NULL, &err), CH_ECONFIG);
    if (strstr(ch_buf_cstr(&err), cases[i].msg) == NULL) fail_msg("case %zu: got '%s'", i, err.base);
    ch_buf_dispose(&err);
    ch_config_dispose(&c);
  }
  /* --no- applies only to booleans: --no-threads is not ours and is handed back. */
  {
    ch_config_t c;
    ch_buf_t err = CH_BUF_INIT;
    char **rest;
    int nrest;
    char *argv[] = {"chorus", "--no-threads"};
    ch_config_init(&c);
    assert_int_equal(ch_config_load(&c, 2, argv, &rest, &nrest, &err), 0);
    assert_int_equal(nrest, 1);
    assert_string_equal(rest[0], "--no-threads");
    ch_buf_dispose(&err);
    ch_config_dispose(&c);
  }
}

static void test_unknown_flag_helper(void **state) {
  (void)state;
  ch_buf_t err = CH_BUF_INIT;
  ch_config_unknown_flag("--max_frame=3", &err);
  assert_string_equal(ch_buf_cstr(&err), "config: unknown flag '--max_frame'; did you mean '--max-frame'?\n");
  err.len = 0;
  ch_config_unknown_flag("--frobnicate", &err);
  assert_string_equal(ch_buf_cstr(&err), "config: unknown flag '--frobnicate'\n");
  err.len = 0;
  ch_config_t c;
  ch_config_init(&c);
  assert_int_equal(ch_config_set(&c, "data_dir", "x", "here", &err), CH_ENOTFOUND);
  assert_string_equal(ch_buf_cstr(&err), "config: unknown key 'data_dir' (here); did you mean 'data-dir'?\n");
  ch_config_dispose(&c);
  ch_buf_dispose(&err);
}

/* ---------------------------------------------------------------- cross-key checks */

static void test_check(void **state) {
  (void)state;
  ch_config_t c;
  ch_buf_t err = CH_BUF_INIT;
  ch_config_init(&c);
  assert_int_equal(ch_config_set(&c, "tls-key", "k.pem", "env CHORUS_TLS_KEY", &err), 0);
  assert_int_equal(ch_config_check(&c, &err), CH_ECONFIG);
  assert_string_equal(ch_buf_cstr(&err), "config: tls-key is set (env CHORUS_TLS_KEY) but tls-cert is not: give both or neither\n");
  assert_int_equal(ch_config_set(&c, "tls-cert", "c.pem", NULL, &err), 0);
  err.len = 0;
  assert_int_equal(ch_config_check(&c, &err), 0);
  assert_int_equal(ch_config_set(&c, "pong-timeout", "30s", "f:1", &err), 0);
  assert_int_equal(ch_config_check(&c, &err), CH_ECONFIG);
  assert_string_equal(ch_buf_cstr(&err), "config: pong-timeout (30s, f:1) must be longer than ping-interval (30s, default)\n");
  assert_int_equal(ch_config_set(&c, "pong-timeout", "31s", "f:1", &err), 0);
  assert_int_equal(ch_config_check(&c, NULL), 0);
  ch_buf_dispose(&err);
  ch_config_dispose(&c);
}

/* ---------------------------------------------------------------- output */

static void test_dump_round_trip(void **state) {
  (void)state;
  ch_config_t a, b;
  ch_buf_t err = CH_BUF_INIT, dump = CH_BUF_INIT;
  ch_config_init(&a);
  assert_int_equal(ch_config_set(&a, "data-dir", " odd # \"dir\" \\ \t\n", NULL, &err), 0);
  assert_int_equal(ch_config_set(&a, "static-dir", "\"quoted\"", NULL, &err), 0);
  assert_int_equal(ch_config_set(&a, "origins", "https://one.example", NULL, &err), 0);
  assert_int_equal(ch_config_set(&a, "origins", "https://two.example:8443", NULL, &err), 0);
  assert_int_equal(ch_config_set(&a, "listen", "[::1]:4001", NULL, &err), 0);
  assert_int_equal(ch_config_set(&a, "threads", "12", NULL, &err), 0);
  assert_int_equal(ch_config_set(&a, "header-timeout", "1500ms", NULL, &err), 0);
  assert_int_equal(ch_config_set(&a, "max-body", "1025", NULL, &err), 0);
  assert_int_equal(ch_config_set(&a, "log-format", "json", NULL, &err), 0);
  assert_int_equal(ch_config_set(&a, "test-endpoints", "on", NULL, &err), 0);
  ch_config_dump(&a, &dump);
  char *path = write_tmp(ch_buf_cstr(&dump));
  /* Load onto a config whose list already holds something: the file's list replaces it. */
  ch_config_init(&b);
  assert_int_equal(ch_config_set(&b, "origins", "https://stale.example", NULL, &err), 0);
  char *argv[] = {"chorus", "--config", path};
  assert_int_equal(ch_config_load(&b, 3, argv, NULL, NULL, &err), 0);
  for (size_t i = 0; ch_config_key(i); i++) {
    ch_buf_t va = CH_BUF_INIT, vb = CH_BUF_INIT;
    ch_config_get(&a, ch_config_key(i), &va);
    ch_config_get(&b, ch_config_key(i), &vb);
    assert_string_equal(ch_buf_cstr(&va), ch_buf_cstr(&vb));
    ch_buf_dispose(&va);
    ch_buf_dispose(&vb);
  }
  assert_string_equal(b.data_dir, " odd # \"dir\" \\ \t\n");
  assert_int_equal(b.origins.n, 2);
  unlink(path);
  free(path);
  ch_buf_dispose(&err);
  ch_buf_dispose(&dump);
  ch_config_dispose(&a);
  ch_config_dispose(&b);
}

static void test_usage_lists_every_key(void **state) {
  (void)state;
  ch_buf_t out = CH_BUF_INIT;
  ch_config_usage(&out);
  ch_buf_cstr(&out);
  assert_non_null(strstr(out.base, "--config PATH"));
  assert_non_null(strstr(out.base, "--[no-]deflate "));
  assert_non_null(strstr(out.base, "(default 0 = one per CPU)"));
  assert_non_null(strstr(out.base, "--max-frame SIZE"));
  for (size_t i = 0; ch_config_key(i); i++) {
    char flag[128], boolflag[128];
    snprintf(flag, sizeof(flag), "  --%s ", ch_config_key(i));
    snprintf(boolflag, sizeof(boolflag), "  --[no-]%s ", ch_config_key(i));
    if (strstr(out.base, flag) == NULL && strstr(out.base, boolflag) == NULL) {
      fail_msg("usage lacks %s", ch_config_key(i));
    }
  }
  ch_buf_dispose(&out);
}

/* ---------------------------------------------------------------- docs in step with the table */

/* Repository root, from CHORUS_SOURCE_DIR or this file's path. */
static void source_path(char *out, size_t cap, const char *rel) {
  const char *root = getenv("CHORUS_SOURCE_DIR");
  if (root) {
    snprintf(out, cap, "%s/%s", root, rel);
    return;
  }
  const char *self = __FILE__;
  const char *tail = strstr(self, "tests/unit/core/test_config.c");
  snprintf(out, cap, "%.*s%s", tail ? (int)(tail - self) : 0, self, rel);
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) fail_msg("cannot open %s (set CHORUS_SOURCE_DIR to the repository root)", path);
  ch_buf_t b = CH_BUF_INIT;
  char tmp[4096];
  size_t n;
  while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0) ch_buf_append(&b, tmp, n);
  fclose(f);
  return ch_buf_cstr(&b); /* caller frees */
}

#define DOC_BEGIN "<!-- BEGIN KEYS: generated by ch_config_reference(); tests/unit/core/test_config.c checks it -->\n"
#define DOC_END "<!-- END KEYS -->"

static void test_docs_config_md_in_sync(void **state) {
  (void)state;
  char path[1024];
  source_path(path, sizeof(path), "docs/CONFIG.md");
  char *doc = slurp(path);
  char *b = strstr(doc, DOC_BEGIN), *e = b ? strstr(b, DOC_END) : NULL;
  if (b == NULL || e == NULL) fail_msg("%s lacks the generated-keys markers", path);
  b += strlen(DOC_BEGIN);
  ch_buf_t ref = CH_BUF_INIT;
  ch_config_reference(&ref);
  ch_buf_cstr(&ref);
  size_t have = (size_t)(e - b);
  int stale = have != ref.len || memcmp(b, ref.base, have) != 0;
  if (stale && getenv("CHORUS_UPDATE_DOCS")) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(doc, 1, (size_t)(b - doc), f);
    fwrite(ref.base, 1, ref.len, f);
    fputs(e, f);
    fclose(f);
    fprintf(stderr, "rewrote the generated block of %s\n", path);
    ch_buf_dispose(&ref);
    free(doc);
    return;
  }
  /* Key by key first, for a readable failure. */
  for (size_t i = 0; ch_config_key(i); i++) {
    char row[128];
    snprintf(row, sizeof(row), "\n| `%s` |", ch_config_key(i));
    if (strstr(b - 1, row) == NULL || strstr(b - 1, row) > e) fail_msg("docs/CONFIG.md lacks key %s", ch_config_key(i));
  }
  for (const char *p = b; p && p < e; p = strchr(p + 1, '\n')) {
    const char *q = *p == '\n' ? p + 1 : p;
    if (strncmp(q, "| `", 3) != 0) continue;
    const char *end = strchr(q + 3, '`');
    char key[128];
    snprintf(key, sizeof(key), "%.*s", (int)(end - q - 3), q + 3);
    ch_config_t c;
    ch_buf_t tmp = CH_BUF_INIT;
    ch_config_init(&c);
    int known = ch_config_get(&c, key, &tmp) == 0;
    ch_config_dispose(&c);
    ch_buf_dispose(&tmp);
    if (!known && strcmp(key, "Key (file, ") != 0) fail_msg("docs/CONFIG.md documents unknown key %s", key);
  }
  if (stale) fail_msg("the key table of docs/CONFIG.md is stale; rerun this test with CHORUS_UPDATE_DOCS=1");
  ch_buf_dispose(&ref);
  free(doc);
}

static void test_example_conf_documents_every_key(void **state) {
  (void)state;
  char path[1024];
  source_path(path, sizeof(path), "chorus.conf.example");
  char *text = slurp(path);
  /* Every key appears as a commented-out setting "#key = value". */
  for (size_t i = 0; ch_config_key(i); i++) {
    char line[128];
    snprintf(line, sizeof(line), "\n#%s = ", ch_config_key(i));
    if (strstr(text, line) == NULL) fail_msg("chorus.conf.example lacks '#%s = ...'", ch_config_key(i));
  }
  /* Uncommented, those settings load cleanly and equal the defaults. */
  ch_buf_t on = CH_BUF_INIT;
  for (char *p = text; *p;) {
    char *nl = strchr(p, '\n');
    size_t n = nl ? (size_t)(nl - p + 1) : strlen(p);
    if (p[0] == '#' && p[1] >= 'a' && p[1] <= 'z') {
      ch_buf_append(&on, p + 1, n - 1);
    } else {
      ch_buf_append(&on, p, n);
    }
    p += n;
  }
  char *tmp = write_tmp(ch_buf_cstr(&on));
  ch_config_t c, d;
  ch_buf_t err = CH_BUF_INIT;
  char *argv[] = {"chorus", "--config", tmp};
  ch_config_init(&c);
  ch_config_init(&d);
  if (ch_config_load(&c, 3, argv, NULL, NULL, &err) != 0) fail_msg("example does not load: %s", ch_buf_cstr(&err));
  for (size_t i = 0; ch_config_key(i); i++) {
    ch_buf_t va = CH_BUF_INIT, vb = CH_BUF_INIT;
    ch_config_get(&c, ch_config_key(i), &va);
    ch_config_get(&d, ch_config_key(i), &vb);
    if (strcmp(ch_buf_cstr(&va), ch_buf_cstr(&vb)) != 0) {
      fail_msg("chorus.conf.example shows %s = %s but the default is %s", ch_config_key(i), va.base, vb.base);
    }
    ch_buf_dispose(&va);
    ch_buf_dispose(&vb);
  }
  unlink(tmp);
  free(tmp);
  free(text);
  ch_buf_dispose(&on);
  ch_buf_dispose(&err);
  ch_config_dispose(&c);
  ch_config_dispose(&d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_defaults, setup),
      cmocka_unit_test_setup(test_bool, setup),
      cmocka_unit_test_setup(test_int, setup),
      cmocka_unit_test_setup(test_int_message, setup),
      cmocka_unit_test_setup(test_size, setup),
      cmocka_unit_test_setup(test_duration, setup),
      cmocka_unit_test_setup(test_enum, setup),
      cmocka_unit_test_setup(test_addr, setup),
      cmocka_unit_test_setup(test_strings_and_paths, setup),
      cmocka_unit_test_setup(test_origins, setup),
      cmocka_unit_test_setup(test_list_set_appends_and_clears, setup),
      cmocka_unit_test_setup(test_list_layers_replace, setup),
      cmocka_unit_test_setup(test_precedence, setup),
      cmocka_unit_test_setup(test_config_path_sources, setup),
      cmocka_unit_test_setup(test_file_syntax, setup),
      cmocka_unit_test_setup(test_file_errors, setup),
      cmocka_unit_test_setup(test_file_nul_byte, setup),
      cmocka_unit_test_setup(test_env_errors_and_unknown, setup),
      cmocka_unit_test_setup(test_flags, setup),
      cmocka_unit_test_setup(test_flag_errors, setup),
      cmocka_unit_test_setup(test_unknown_flag_helper, setup),
      cmocka_unit_test_setup(test_check, setup),
      cmocka_unit_test_setup(test_dump_round_trip, setup),
      cmocka_unit_test_setup(test_usage_lists_every_key, setup),
      cmocka_unit_test_setup(test_docs_config_md_in_sync, setup),
      cmocka_unit_test_setup(test_example_conf_documents_every_key, setup),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
