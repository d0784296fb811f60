/*
 * test_export.c — unit tests of src/cli/export.c (chorus export / import).
 *
 * Includes export.c to reach its static helpers: the ISO 8601 reader, the
 * timestamp rules, file names for conversation ids, JSON error positions and
 * the per-conversation validation (plans). Then whole commands in-process on a
 * temporary data directory: a restore that must reproduce the store exactly,
 * and an import that fails half-way and must leave nothing behind.
 *
 * The readers here are whole-string functions over complete files (the files
 * are read whole before parsing), not resumable stream parsers, so there is
 * no byte-by-byte feeding to do.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cli/export.c"

/* ------------------------------------------------------------ helpers */

static int64_t iso(const char *s) {
  int64_t ms = -1;
  return ch__xa_iso_parse(s, &ms) == 0 ? ms : -1;
}

static cJSON *parse(const char *s) {
  cJSON *j = cJSON_Parse(s);
  assert_non_null(j);
  return j;
}

/* Validate one chorus conversation; returns rc, copies the reason into why_out. */
static int plan_chorus(const char *json, char *why_out, size_t n) {
  cJSON *c = parse(json);
  ch__xa_plan_t p;
  ch_buf_t why = CH_BUF_INIT;
  int rc = ch__xa_plan_chorus(c, &p, &why);
  snprintf(why_out, n, "%s", ch_buf_cstr(&why));
  ch__xa_plan_dispose(&p);
  ch_buf_dispose(&why);
  cJSON_Delete(c);
  return rc;
}

static int plan_unified(const char *json, char *why_out, size_t n) {
  cJSON *c = parse(json);
  ch__xa_plan_t p;
  ch_buf_t why = CH_BUF_INIT;
  int rc = ch__xa_plan_unified(c, "from-file", "alice", &p, &why);
  snprintf(why_out, n, "%s", ch_buf_cstr(&why));
  ch__xa_plan_dispose(&p);
  ch_buf_dispose(&why);
  cJSON_Delete(c);
  return rc;
}

/* ---------------------------------------------------------------- time */

static void test_iso_parse_accepts_the_usual_forms(void **state) {
  (void)state;
  assert_int_equal(iso("1970-01-01T00:00:00.001Z"), 1);
  assert_int_equal(iso("2025-11-18T12:08:00.000Z"), INT64_C(1763467680000));
  assert_int_equal(iso("2025-11-18T12:08:00Z"), INT64_C(1763467680000));
  assert_int_equal(iso("2025-11-18t12:08:00z"), INT64_C(1763467680000));
  assert_int_equal(iso("2025-11-18 12:08:00.5"), INT64_C(1763467680500));
  assert_int_equal(iso("2025-11-18T12:08"), INT64_C(1763467680000));
  assert_int_equal(iso("2025-11-18T12:08:00.123456789Z"), INT64_C(1763467680123));
  assert_int_equal(iso("2025-11-18T14:08:00.000+02:00"), INT64_C(1763467680000));
  assert_int_equal(iso("2025-11-18T07:38:00.000-0430"), INT64_C(1763467680000));
  assert_int_equal(iso("2024-02-29T00:00:00Z"), INT64_C(1709164800000));
  assert_int_equal(iso("2000-02-29T00:00:00Z"), INT64_C(951782400000));
  assert_int_equal(iso("9999-12-31T23:59:59.999Z"), INT64_C(253402300799999));
  /* Round trip with the hub's own formatter over a spread of instants. */
  for (int64_t ms = 1; ms < INT64_C(253402300799999); ms = ms * 7 + 12345) {
    char buf[CH_ISO8601_LEN + 1];
    ch_clock_iso8601(ms, buf);
    assert_int_equal(iso(buf), ms);
  }
}

static void test_iso_parse_refuses_the_rest(void **state) {
  (void)state;
  const char *bad[] = {"", "2025", "2025-11-18", "2025-11-18T", "2025-11-18T12", "2025-13-01T00:00Z",
                       "2025-00-01T00:00Z", "2025-02-29T00:00Z", "1900-02-29T00:00Z", "2025-04-31T00:00Z",
                       "2025-11-18T24:00Z", "2025-11-18T12:60Z", "2025-11-18T12:00:61Z", "2025-11-18T12:00:00.Z",
                       "2025-11-18T12:00:00Zjunk", "2025-11-18T12:00:00+2", "2025-11-18T12:00:00+24:00",
                       "1969-12-31T23:59:59Z", "1970-01-01T00:00:00Z", /* 0 ms: the store's "now" */
                       "10000-01-01T00:00Z", "2025/11/18T12:00Z", " 2025-11-18T12:00Z", "yesterday"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int64_t ms = 42;
    if (ch__xa_iso_parse(bad[i], &ms) != CH_EINVAL) fail_msg("accepted \"%s\"", bad[i]);
    assert_int_equal(ms, 42);
  }
}

static void test_time_values_strings_and_numbers(void **state) {
  (void)state;
  int64_t ms = 0;
  cJSON *v = cJSON_CreateNumber(1731900000000.0); /* ms */
  assert_int_equal(ch__xa_time_value(v, &ms), 0);
  assert_int_equal(ms, INT64_C(1731900000000));
  cJSON_SetNumberValue(v, 1731900000.0); /* seconds */
  assert_int_equal(ch__xa_time_value(v, &ms), 0);
  assert_int_equal(ms, INT64_C(1731900000000));
  cJSON_SetNumberValue(v, 0);
  assert_int_equal(ch__xa_time_value(v, &ms), CH_EINVAL);
  cJSON_SetNumberValue(v, -5);
  assert_int_equal(ch__xa_time_value(v, &ms), CH_EINVAL);
  cJSON_SetNumberValue(v, 1e300);
  assert_int_equal(ch__xa_time_value(v, &ms), CH_EINVAL);
  cJSON_Delete(v);
  v = cJSON_CreateString("2025-11-18T12:08:00.000Z");
  assert_int_equal(ch__xa_time_value(v, &ms), 0);
  assert_int_equal(ms, INT64_C(1763467680000));
  cJSON_Delete(v);
  v = cJSON_CreateTrue();
  assert_int_equal(ch__xa_time_value(v, &ms), CH_EINVAL);
  cJSON_Delete(v);
  assert_int_equal(ch__xa_time_value(NULL, &ms), CH_EINVAL);
}

/* ----------------------------------------------------- names and JSON */

static void test_file_names_are_safe_and_distinct(void **state) {
  (void)state;
  struct {
    const char *id, *name;
  } cases[] = {
      {"test-123", "test-123.json"},
      {"a.b_c@d:e", "a.b_c@d:e.json"},
      {"../etc/passwd", "%2E.%2Fetc%2Fpasswd.json"},
      {".hidden", "%2Ehidden.json"},
      {"a b/ü", "a%20b%2F%C3%BC.json"},
      {"100%", "100%25.json"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    ch_buf_t b = CH_BUF_INIT;
    ch__xa_file_name(&b, cases[i].id);
    assert_string_equal(ch_buf_cstr(&b), cases[i].name);
    ch_buf_dispose(&b);
  }
}

static void test_json_errors_say_where(void **state) {
  (void)state;
  ch_buf_t why = CH_BUF_INIT;
  const char *ok = " {\"a\": [1, 2]}\n\n";
  cJSON *j = ch__xa_parse_json(ok, strlen(ok), &why);
  assert_non_null(j);
  assert_int_equal(why.len, 0);
  cJSON_Delete(j);

  const char *bad = "{\"a\": 1,\n \"b\": }";
  assert_null(ch__xa_parse_json(bad, strlen(bad), &why));
  assert_string_equal(ch_buf_cstr(&why), "invalid JSON at line 2, column 7");
  why.len = 0;

  const char *trail = "{}\n{}";
  assert_null(ch__xa_parse_json(trail, strlen(trail), &why));
  assert_string_equal(ch_buf_cstr(&why), "trailing data after the JSON document at line 2, column 1");
  why.len = 0;

  assert_null(ch__xa_parse_json("", 0, &why));
  assert_string_equal(ch_buf_cstr(&why), "empty file (not JSON)");
  why.len = 0;

  /* Not NUL-terminated: the length bounds the parse. */
  const char buf[] = {'{', '}', '{'};
  assert_null(ch__xa_parse_json(buf, sizeof(buf), &why));
  ch_buf_dispose(&why);
}

/* ----------------------------------------------------------- plans */

static void test_chorus_plan_validates_every_field(void **state) {
  (void)state;
  char why[512];
  const char *good = "{\"id\":\"c\",\"owner\":\"u\",\"members\":[\"u\",\"v\"],\"metadata\":{\"k\":1},"
                     "\"events\":[{\"seq\":1,\"kind\":\"message\",\"id\":\"e1\",\"userId\":\"u\",\"body\":{\"x\":1},"
                     "\"ts\":\"2025-01-01T00:00:00.000Z\"},{\"seq\":2,\"kind\":2,\"id\":\"e2\",\"userId\":\"u\","
                     "\"refSeq\":1}]}";
  assert_int_equal(plan_chorus(good, why, sizeof why), 0);

  struct {
    const char *json, *why;
  } bad[] = {
      {"[]", "not an object"},
      {"{\"owner\":\"u\"}", "\"id\" is missing"},
      {"{\"id\":\"\",\"owner\":\"u\"}", "\"id\" must be 1..128 bytes"},
      {"{\"id\":\"c\"}", "\"owner\" is missing"},
      {"{\"id\":\"c\",\"owner\":7}", "\"owner\" must be a string"},
      {"{\"id\":\"c\",\"owner\":\"u\",\"createdAt\":\"soon\"}", "\"createdAt\" must be an ISO 8601 time"},
      {"{\"id\":\"c\",\"owner\":\"u\",\"metadata\":5}", "\"metadata\" must be a JSON object"},
      {"{\"id\":\"c\",\"owner\":\"u\",\"members\":[\"u\",3]}", "members[1] must be a user id"},
      {"{\"id\":\"c\",\"owner\":\"u\",\"events\":{}}", "\"events\" must be an array"},
      {"{\"id\":\"c\",\"owner\":\"u\",\"events\":[{\"seq\":2,\"kind\":\"message\",\"id\":\"e\",\"userId\":\"u\"}]}",
       "events[0]: \"seq\" is 2 where 1 was expected"},
      {"{\"id\":\"c\",\"owner\":\"u\",\"events\":[{\"seq\":1.5,\"kind\":\"message\",\"id\":\"e\",\"userId\":\"u\"}]}",
       "events[0]: \"seq\" must be a non-negative integer"},
      {"{\"id\":\"c\",\"owner\":\"u\",\"events\":[{\"seq\":1,\"kind\":\"shout\",\"id\":\"e\",\"userId\":\"u\"}]}",
       "events[0]: \"kind\" must be one of"},
      {"{\"id\":\"c\",\"owner\":\"u\",\"events\":[{\"seq\":1,\"kind\":9,\"id\":\"e\",\"userId\":\"u\"}]}",
       "events[0]: \"kind\" must be one of"},
      {"{\"id\":\"c\",\"owner\":\"u\",\"events\":[{\"seq\":1,\"kind\":\"message\",\"userId\":\"u\"}]}",
       "events[0]: \"id\" is missing"},
      {"{\"id\":\"c\",\"owner\":\"u\",\"events\":[{\"seq\":1,\"kind\":\"message\",\"id\":\"e\"}]}",
       "events[0]: \"userId\" is missing"},
      {"{\"id\":\"c\",\"owner\":\"u\",\"events\":[{\"seq\":1,\"kind\":\"message\",\"id\":\"e\",\"userId\":\"u\","
       "\"body\":true}]}",
       "events[0]: \"body\" must be a JSON object"},
      {"{\"id\":\"c\",\"owner\":\"u\",\"events\":[{\"seq\":1,\"kind\":\"edit\",\"id\":\"e\",\"userId\":\"u\","
       "\"refSeq\":1}]}",
       "events[0]: an edit needs \"refSeq\" naming an earlier event"},
      {"{\"id\":\"c\",\"owner\":\"u\",\"events\":[{\"seq\":1,\"kind\":\"message\",\"id\":\"e\",\"userId\":\"u\","
       "\"ts\":\"2025-02-30T00:00Z\"}]}",
       "events[0]: \"ts\" must be an ISO 8601 time"},
      {"{\"id\":\"c\",\"owner\":\"u\",\"events\":[{\"seq\":1,\"kind\":\"message\",\"id\":\"e\",\"userId\":\"u\"},5]}",
       "events[1]: not an object"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    assert_int_equal(plan_chorus(bad[i].json, why, sizeof why), CH_EINVAL);
    if (strncmp(why, bad[i].why, strlen(bad[i].why)) != 0)
      fail_msg("case %zu: got \"%s\", want \"%s...\"", i, why, bad[i].why);
  }
}

static void test_unified_plan_keeps_fields_and_fills_the_hubs(void **state) {
  (void)state;
  cJSON *c = parse("{\"title\":\"T\",\"createdAt\":\"2025-01-01T00:00:00Z\",\"messages\":["
                   "{\"id\":\"m1\",\"role\":\"assistant\",\"content\":\"hi\",\"source\":\"desktop\","
                   "\"context\":{\"hasScreen\":true},\"timestamp\":\"2025-01-01T00:00:01.000Z\",\"userId\":\"bob\"},"
                   "{\"content\":\"no id\",\"seq\":7}]}");
  ch__xa_plan_t p;
  ch_buf_t why = CH_BUF_INIT;
  assert_int_equal(ch__xa_plan_unified(c, "from-file", "alice", &p, &why), 0);
  assert_string_equal(p.conv.id, "from-file"); /* no "id": the file name */
  assert_string_equal(p.conv.owner, "alice");
  assert_string_equal(p.conv.title, "T");
  assert_int_equal(p.conv.created_ms, INT64_C(1735689600000));
  assert_int_equal(p.nevs, 2);

  ch_event_t *a = &p.evs[0], *b = &p.evs[1];
  assert_string_equal(a->client_id, "m1");
  assert_null(a->id); /* the store makes the server id */
  assert_string_equal(a->user_id, "bob"); /* the message's own author is kept */
  assert_string_equal(a->role, "assistant");
  assert_string_equal(a->source, "desktop");
  assert_int_equal(a->ts_ms, INT64_C(1735689601000));
  cJSON *body = parse(a->body);
  assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(body, "context"), "hasScreen")));
  assert_string_equal(cJSON_GetObjectItem(body, "conversationId")->valuestring, "from-file");
  assert_string_equal(cJSON_GetObjectItem(body, "userId")->valuestring, "bob");
  assert_string_equal(cJSON_GetObjectItem(body, "timestamp")->valuestring, "2025-01-01T00:00:01.000Z");
  cJSON_Delete(body);

  assert_string_equal(b->client_id, "import:1");
  assert_non_null(b->id);
  assert_string_equal(b->user_id, "alice");
  assert_string_equal(b->role, "user");
  assert_null(b->source);
  assert_int_equal(b->ts_ms, a->ts_ms); /* no timestamp: the one before it */
  body = parse(b->body);
  assert_string_equal(cJSON_GetObjectItem(body, "id")->valuestring, b->id);
  assert_string_equal(cJSON_GetObjectItem(body, "role")->valuestring, "user");
  assert_string_equal(cJSON_GetObjectItem(body, "userId")->valuestring, "alice");
  assert_string_equal(cJSON_GetObjectItem(body, "timestamp")->valuestring, "2025-01-01T00:00:01.000Z");
  assert_null(cJSON_GetObjectItem(body, "seq")); /* the hub's field: dropped */
  cJSON_Delete(body);
  ch__xa_plan_dispose(&p);
  ch_buf_dispose(&why);
  cJSON_Delete(c);
}

static void test_unified_plan_refusals(void **state) {
  (void)state;
  char why[512];
  struct {
    const char *json, *why;
  } bad[] = {
      {"[1]", "not a conversation object"},
      {"{\"id\":\"c\"}", "\"messages\" is missing"},
      {"{\"id\":\"c\",\"messages\":{}}", "\"messages\" must be an array"},
      {"{\"id\":5,\"messages\":[]}", "\"id\" must be a string"},
      {"{\"id\":\"c\",\"messages\":[7]}", "messages[0] is not an object"},
      {"{\"id\":\"c\",\"messages\":[{},{\"id\":\"\"}]}", "messages[1].id must be a string of 1..128 bytes"},
      {"{\"id\":\"c\",\"messages\":[{\"role\":\"boss\"}]}", "messages[0].role must be user, assistant"},
      {"{\"id\":\"c\",\"messages\":[{\"content\":[\"x\"]}]}", "messages[0].content must be a string"},
      {"{\"id\":\"c\",\"createdAt\":{},\"messages\":[]}", "\"createdAt\" must be an ISO 8601 time"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    assert_int_equal(plan_unified(bad[i].json, why, sizeof why), CH_EINVAL);
    if (strncmp(why, bad[i].why, strlen(bad[i].why)) != 0)
      fail_msg("case %zu: got \"%s\", want \"%s...\"", i, why, bad[i].why);
  }
  assert_int_equal(plan_unified("{\"id\":\"c\",\"messages\":[]}", why, sizeof why), 0);
}

/* ---------------------------------------------------- whole commands */

static char g_dir[64];

static int setup_dir(void **state) {
  (void)state;
  snprintf(g_dir, sizeof g_dir, "/tmp/chorus-test-export-XXXXXX");
  return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown_dir(void **state) {
  (void)state;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  return system(cmd) == 0 ? 0 : -1;
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  assert_int_equal(fclose(f), 0);
}

static char *read_text(const char *path) {
  ch_buf_t b = CH_BUF_INIT, why = CH_BUF_INIT;
  assert_int_equal(ch__xa_read_file(path, &b, &why), 0);
  ch_buf_dispose(&why);
  return ch_buf_cstr(&b);
}

static int run_cmd(int (*fn)(int, char **), ...) {
  char *argv[16];
  int argc = 0;
  va_list ap;
  va_start(ap, fn);
  for (char *a; argc < 15 && (a = va_arg(ap, char *)) != NULL;) argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;
  return fn(argc, argv);
}

/* The export without its first line's exportedAt. */
static char *export_body(const char *path) {
  char *t = read_text(path);
  char *p = strstr(t, "\"projects\"");
  assert_non_null(p);
  char *r = ch_xstrdup(p);
  free(t);
  return r;
}

static void test_restore_reproduces_the_export_and_is_idempotent(void **state) {
  (void)state;
  char src[128], a[128], b[128], out1[128], out2[128];
  snprintf(src, sizeof src, "%s/in.json", g_dir);
  snprintf(a, sizeof a, "%s/a", g_dir);
  snprintf(b, sizeof b, "%s/b", g_dir);
  snprintf(out1, sizeof out1, "%s/out1.json", g_dir);
  snprintf(out2, sizeof out2, "%s/out2.json", g_dir);
  write_text(src,
             "{\"version\":1,\"projects\":[{\"id\":\"p\",\"name\":\"P\",\"owner\":\"u\",\"createdAt\":1700000000000}],"
             "\"conversations\":[{\"id\":\"c1\",\"owner\":\"u\",\"projectId\":\"p\",\"title\":\"T\",\"members\":[\"v\"],"
             "\"createdAt\":\"2025-01-01T00:00:00Z\",\"events\":["
             "{\"seq\":1,\"kind\":\"message\",\"id\":\"e1\",\"clientId\":\"k1\",\"userId\":\"u\",\"content\":\"one\","
             "\"body\":{\"n\":1e300,\"s\":\"\\u00e9\"},\"ts\":\"2025-01-01T00:00:01Z\"},"
             "{\"seq\":2,\"kind\":\"delete\",\"id\":\"e2\",\"userId\":\"v\",\"refSeq\":1,\"ts\":1735689602000}]}]}");
  assert_int_equal(run_cmd(ch_cli_import, "import", "--data-dir", a, src, NULL), 0);
  assert_int_equal(run_cmd(ch_cli_export, "export", "--data-dir", a, "--out", out1, NULL), 0);
  assert_int_equal(run_cmd(ch_cli_import, "import", "--data-dir", b, out1, NULL), 0);
  assert_int_equal(run_cmd(ch_cli_import, "import", "--data-dir", b, out1, NULL), 0);
  assert_int_equal(run_cmd(ch_cli_export, "export", "--data-dir", b, "--out", out2, NULL), 0);
  char *x = export_body(out1), *y = export_body(out2);
  assert_string_equal(x, y);
  assert_non_null(strstr(x, "\"members\":[\"u\",\"v\"]"));
  assert_non_null(strstr(x, "\"messageCount\":0")); /* the delete took the message out */
  assert_non_null(strstr(x, "\"ts\":\"2025-01-01T00:00:02.000Z\""));
  free(x);
  free(y);

  ch_store_t *st = NULL;
  ch_conv_t cv;
  assert_int_equal(ch_store_open(b, &st, NULL), 0);
  assert_int_equal(st->ops->conv_get(st, "c1", &cv), 0);
  assert_int_equal(cv.last_seq, 2);
  assert_string_equal(cv.project_id, "p");
  ch_conv_dispose(&cv);
  ch_project_t pj;
  memset(&pj, 0, sizeof pj);
  assert_int_equal(st->ops->project_get(st, "p", &pj), 0);
  assert_int_equal(pj.created_ms, INT64_C(1700000000000));
  ch_project_dispose(&pj);
  ch_store_close(st);
}

static void test_a_failing_conversation_leaves_nothing(void **state) {
  (void)state;
  char src[128], d[128];
  snprintf(src, sizeof src, "%s/dup.json", g_dir);
  snprintf(d, sizeof d, "%s/d", g_dir);
  /* Valid as a plan; the store finds client id k1 twice on the third event. */
  write_text(src, "{\"version\":1,\"conversations\":[{\"id\":\"c2\",\"owner\":\"u\",\"events\":["
                  "{\"seq\":1,\"kind\":\"message\",\"id\":\"e1\",\"clientId\":\"k1\",\"userId\":\"u\"},"
                  "{\"seq\":2,\"kind\":\"message\",\"id\":\"e2\",\"userId\":\"u\"},"
                  "{\"seq\":3,\"kind\":\"message\",\"id\":\"e3\",\"clientId\":\"k1\",\"userId\":\"u\"}]},"
                  "{\"id\":\"c3\",\"owner\":\"u\",\"events\":[]}]}");
  assert_int_equal(run_cmd(ch_cli_import, "import", "--data-dir", d, src, NULL), 1);
  ch_store_t *st = NULL;
  ch_conv_t cv;
  assert_int_equal(ch_store_open(d, &st, NULL), 0);
  assert_int_equal(st->ops->conv_get(st, "c2", &cv), CH_ENOTFOUND);
  assert_int_equal(st->ops->conv_get(st, "c3", &cv), 0); /* the next one still came in */
  ch_conv_dispose(&cv);
  ch_store_close(st);
}

static void test_unified_export_applies_edits_and_deletes(void **state) {
  (void)state;
  char src[128], d[128], out[128], file[160];
  snprintf(src, sizeof src, "%s/edits.json", g_dir);
  snprintf(d, sizeof d, "%s/e", g_dir);
  snprintf(out, sizeof out, "%s/e-out", g_dir);
  snprintf(file, sizeof file, "%s/e-out/a%%2Fb.json", g_dir);
  write_text(src, "{\"version\":1,\"conversations\":[{\"id\":\"a/b\",\"owner\":\"u\",\"events\":["
                  "{\"seq\":1,\"kind\":\"message\",\"id\":\"e1\",\"userId\":\"u\",\"body\":{\"id\":\"m1\",\"content\":\"one\",\"x\":1}},"
                  "{\"seq\":2,\"kind\":\"message\",\"id\":\"e2\",\"userId\":\"u\",\"body\":{\"id\":\"m2\",\"content\":\"two\"}},"
                  "{\"seq\":3,\"kind\":\"message\",\"id\":\"e3\",\"userId\":\"u\",\"role\":\"user\",\"content\":\"three\"},"
                  "{\"seq\":4,\"kind\":\"edit\",\"id\":\"e4\",\"userId\":\"u\",\"refSeq\":1,\"content\":\"one!\"},"
                  "{\"seq\":5,\"kind\":\"edit\",\"id\":\"e5\",\"userId\":\"u\",\"refSeq\":2,\"body\":{\"id\":\"m2\",\"content\":\"2\"}},"
                  "{\"seq\":6,\"kind\":\"reaction\",\"id\":\"e6\",\"userId\":\"u\",\"refSeq\":2,\"body\":{\"emoji\":\"x\"}},"
                  "{\"seq\":7,\"kind\":\"delete\",\"id\":\"e7\",\"userId\":\"u\",\"refSeq\":2}]}]}");
  assert_int_equal(run_cmd(ch_cli_import, "import", "--data-dir", d, src, NULL), 0);
  assert_int_equal(run_cmd(ch_cli_export, "export", "--data-dir", d, "--format", "unified", "--out", out, NULL), 0);
  char *t = read_text(file);
  cJSON *doc = parse(t);
  free(t);
  assert_string_equal(cJSON_GetObjectItem(doc, "id")->valuestring, "a/b");
  cJSON *ms = cJSON_GetObjectItem(doc, "messages");
  assert_int_equal(cJSON_GetArraySize(ms), 2);
  cJSON *m0 = cJSON_GetArrayItem(ms, 0), *m1 = cJSON_GetArrayItem(ms, 1);
  assert_string_equal(cJSON_GetObjectItem(m0, "content")->valuestring, "one!"); /* content-only edit */
  assert_int_equal(cJSON_GetObjectItem(m0, "x")->valueint, 1);                  /* the rest kept */
  assert_string_equal(cJSON_GetObjectItem(m1, "content")->valuestring, "three"); /* made of the fields */
  assert_string_equal(cJSON_GetObjectItem(m1, "id")->valuestring, "e3");
  cJSON_Delete(doc);
}

static void test_usage_exit_codes(void **state) {
  (void)state;
  char d[128];
  snprintf(d, sizeof d, "%s/u", g_dir);
  assert_int_equal(run_cmd(ch_cli_import, "import", "--data-dir", d, NULL), 2);
  assert_int_equal(run_cmd(ch_cli_import, "import", "--data-dir", d, "--nope", "x", NULL), 2);
  assert_int_equal(run_cmd(ch_cli_import, "import", "--data-dir", d, "--user", NULL), 2);
  assert_int_equal(run_cmd(ch_cli_import, "import", "--data-dir", d, "--user", "a", g_dir, "--format", "chorus", NULL),
                   2);
  assert_int_equal(run_cmd(ch_cli_import, "import", "--data-dir", d, g_dir, NULL), 2); /* a dir needs --user */
  assert_int_equal(run_cmd(ch_cli_export, "export", "--data-dir", d, "--format", "unified", NULL), 2);
  assert_int_equal(run_cmd(ch_cli_export, "export", "--data-dir", d, "--format", "xml", NULL), 2);
  assert_int_equal(run_cmd(ch_cli_export, "export", "--data-dir", d, "--conversation", "", NULL), 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_iso_parse_accepts_the_usual_forms),
      cmocka_unit_test(test_iso_parse_refuses_the_rest),
      cmocka_unit_test(test_time_values_strings_and_numbers),
      cmocka_unit_test(test_file_names_are_safe_and_distinct),
      cmocka_unit_test(test_json_errors_say_where),
      cmocka_unit_test(test_chorus_plan_validates_every_field),
      cmocka_unit_test(test_unified_plan_keeps_fields_and_fills_the_hubs),
      cmocka_unit_test(test_unified_plan_refusals),
      cmocka_unit_test(test_restore_reproduces_the_export_and_is_idempotent),
      cmocka_unit_test(test_a_failing_conversation_leaves_nothing),
      cmocka_unit_test(test_unified_export_applies_edits_and_deletes),
      cmocka_unit_test(test_usage_exit_codes),
  };
  return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
