/*
 * bench.c — cJSON vs jansson vs json-c on chorus's own messages.
 *
 * Built three times by run.sh, once per library (-DBENCH_CJSON, -DBENCH_JANSSON,
 * -DBENCH_JSONC): one program per library keeps their symbols apart (jansson
 * and json-c both export json_object_get & co.).
 *
 * Workloads (generated here, byte-identical for every library):
 *   small   the native frame {"type":"message","conversationId":"test-123","message":{...}}
 *   full    a unified-profile message object with context and metadata
 *   sync    {"type":"sync","conversationId":..,"data":[200 message objects]}
 * Operations:
 *   parse      text -> tree, tree freed
 *   serialize  tree (parsed once) -> compact text, text freed
 *   serialize-buf  the same into a reused caller buffer (cJSON_PrintPreallocated,
 *              jansson json_dump_callback; json-c has no such API: print + copy)
 *   roundtrip  parse + serialize-buf + free: each message handled once, as the hub does
 * Time is this thread's CPU time (kernel time included), best of 5 runs.
 *
 * Allocations are counted by interposing malloc/calloc/realloc/free in this
 * program: the shared libraries' calls resolve to these, so all three are
 * counted the same way, including allocations a library makes outside its
 * own hooks (json-c has none). realloc counts its new size.
 *
 * Output: one tab-separated line per measurement, then "feature" lines from
 * a few conformance probes; run.sh turns them into the tables of
 * docs/JSON-CHOICE.md.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- malloc counting */

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t a, size_t n);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);

static int g_counting;
static unsigned long long g_allocs, g_bytes;

void *malloc(size_t n) {
  if (g_counting) g_allocs++, g_bytes += n;
  return __libc_malloc(n);
}
void *calloc(size_t a, size_t n) {
  if (g_counting) g_allocs++, g_bytes += a * n;
  return __libc_calloc(a, n);
}
void *realloc(void *p, size_t n) {
  if (g_counting) g_allocs++, g_bytes += n;
  return __libc_realloc(p, n);
}
void free(void *p) { __libc_free(p); }

/* ---------------------------------------------------------------- a growable buffer */

typedef struct {
  char *p;
  size_t len, cap;
} sbuf_t;

static void sb_put(sbuf_t *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    b->cap = (b->len + n + 1) * 2;
    b->p = realloc(b->p, b->cap);
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}
static void sb_str(sbuf_t *b, const char *s) { sb_put(b, s, strlen(s)); }

/* ---------------------------------------------------------------- the three adapters */

#if defined(BENCH_CJSON)
#include <cjson/cJSON.h>
static const char *lib_name(void) { return "cJSON"; }
static const char *lib_version(void) { return cJSON_Version(); }
static void *lib_parse(const char *s, size_t n) { return cJSON_ParseWithLength(s, n); }
static char *lib_dump(void *doc, size_t *len) {
  char *s = cJSON_PrintUnformatted(doc);
  *len = s ? strlen(s) : 0;
  return s;
}
static void lib_dump_free(char *s) { cJSON_free(s); }
static void lib_free(void *doc) { cJSON_Delete(doc); }
/* Into the caller's reused buffer; grown and retried when too small. */
static size_t lib_dump_buf(void *doc, sbuf_t *b) {
  if (b->cap < 4096) {
    b->cap = 4096;
    b->p = realloc(b->p, b->cap);
  }
  while (!cJSON_PrintPreallocated(doc, b->p, (int)b->cap, 0)) {
    b->cap *= 2;
    b->p = realloc(b->p, b->cap);
  }
  return b->len = strlen(b->p);
}
#elif defined(BENCH_JANSSON)
#include <jansson.h>
static const char *lib_name(void) { return "jansson"; }
static const char *lib_version(void) { return JANSSON_VERSION; }
static void *lib_parse(const char *s, size_t n) {
  json_error_t e;
  return json_loadb(s, n, 0, &e);
}
static char *lib_dump(void *doc, size_t *len) {
  char *s = json_dumps(doc, JSON_COMPACT);
  *len = s ? strlen(s) : 0;
  return s;
}
static void lib_dump_free(char *s) { free(s); }
static void lib_free(void *doc) { json_decref(doc); }
static int dump_cb(const char *buf, size_t n, void *data) {
  sb_put(data, buf, n);
  return 0;
}
/* Into the caller's reused buffer, through the streaming dumper. */
static size_t lib_dump_buf(void *doc, sbuf_t *b) {
  b->len = 0;
  json_dump_callback(doc, dump_cb, b, JSON_COMPACT);
  return b->len;
}
#elif defined(BENCH_JSONC)
#include <json-c/json.h>
static const char *lib_name(void) { return "json-c"; }
static const char *lib_version(void) { return json_c_version(); }
static void *lib_parse(const char *s, size_t n) {
  json_tokener *tok = json_tokener_new();
  json_object *o = json_tokener_parse_ex(tok, s, (int)n);
  if (o && json_tokener_get_parse_end(tok) != n) { /* trailing bytes */
    json_object_put(o);
    o = NULL;
  }
  json_tokener_free(tok);
  return o;
}
/* The text lives in a print buffer cached inside the object: nothing to free. */
static char *lib_dump(void *doc, size_t *len) {
  return (char *)json_object_to_json_string_length(doc, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, len);
}
static void lib_dump_free(char *s) { (void)s; }
static void lib_free(void *doc) { json_object_put(doc); }
/* No API writes into a caller's buffer: print (into the cached print buffer) and copy. */
static size_t lib_dump_buf(void *doc, sbuf_t *b) {
  size_t n;
  const char *s = json_object_to_json_string_length(doc, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
  b->len = 0;
  sb_put(b, s, n);
  return n;
}
#else
#error "define BENCH_CJSON, BENCH_JANSSON or BENCH_JSONC"
#endif

/* ---------------------------------------------------------------- workloads */

static unsigned long long g_rng = 0x9e3779b97f4a7c15ULL;
static unsigned rnd(unsigned n) {
  g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
  return (unsigned)(g_rng >> 33) % n;
}

/* Chat-like text of about n bytes, JSON-escaped: words, punctuation, some
 * quotes, newlines, accented letters and emoji (UTF-8). */
static void text(sbuf_t *b, size_t n) {
  static const char *const words[] = {
      "the", "build", "fails", "with", "an", "undefined", "reference", "to", "uv_loop_init",
      "could", "you", "check", "CMakeLists.txt", "and", "tell", "me", "why", "café", "naïve",
      "résumé", "😀", "deploy", "staging", "tomorrow", "\\\"quoted\\\"", "config", "it", "works",
      "on", "my", "machine", "Here's", "a", "patch:", "42", "línea", "日本語", "ok"};
  size_t start = b->len;
  while (b->len - start < n) {
    sb_str(b, words[rnd(sizeof(words) / sizeof(*words))]);
    unsigned r = rnd(20);
    sb_str(b, r == 0 ? "\\n" : r == 1 ? ". " : r == 2 ? ", " : " ");
  }
  sb_str(b, "end.");
}

static void message(sbuf_t *b, unsigned i, size_t content, int with_context) {
  static const char *const sources[] = {"desktop", "web", "iphone", "chatgpt"};
  char head[256];
  snprintf(head, sizeof(head),
           "{\"id\":\"6f1c1d2e-8a4b-4c3d-9e2f-%012u\",\"conversationId\":\"test-123\","
           "\"role\":\"%s\",\"content\":\"",
           i, i % 2 ? "assistant" : "user");
  sb_str(b, head);
  text(b, content);
  snprintf(head, sizeof(head), "\",\"source\":\"%s\"", sources[i % 4]);
  sb_str(b, head);
  if (with_context) {
    sb_str(b, ",\"context\":{\"hasScreen\":true,\"hasVoice\":false,\"appName\":\"Xcode\","
              "\"metadata\":{\"k\":\"v\",\"windowTitle\":\"chorus — main.c\",\"selection\":{\"line\":42,"
              "\"column\":7},\"tags\":[\"build\",\"c\"],\"confidence\":0.87}}");
  }
  snprintf(head, sizeof(head), ",\"timestamp\":\"2025-11-18T12:%02u:%02u.%03uZ\"}", (i / 60) % 60, i % 60,
           (i * 37) % 1000);
  sb_str(b, head);
}

static char *make_small(void) {
  sbuf_t b = {0};
  sb_str(&b, "{\"type\":\"message\",\"conversationId\":\"test-123\",\"message\":{\"role\":\"user\",\"content\":\"Hello\"}}");
  return b.p;
}

static char *make_full(void) {
  sbuf_t b = {0};
  message(&b, 1, 240, 1);
  return b.p;
}

static char *make_sync(void) {
  sbuf_t b = {0};
  sb_str(&b, "{\"type\":\"sync\",\"conversationId\":\"test-123\",\"data\":[");
  for (unsigned i = 0; i < 200; i++) {
    if (i) sb_str(&b, ",");
    message(&b, i, 40 + rnd(560), i % 2 == 0);
  }
  sb_str(&b, "]}");
  return b.p;
}

/* ---------------------------------------------------------------- timing */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); /* CPU time: other processes do not count */
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static volatile size_t g_sink;

typedef enum { OP_PARSE, OP_SERIALIZE, OP_SERIALIZE_BUF, OP_ROUNDTRIP, OP_COUNT } op_t;
static const char *const op_names[] = {"parse", "serialize", "serialize-buf", "roundtrip"};
static sbuf_t g_out; /* the reused output buffer of serialize-buf and roundtrip */

static void run_op(op_t op, const char *in, size_t n, void *tree) {
  size_t len = 0;
  switch (op) {
  case OP_PARSE: {
    void *d = lib_parse(in, n);
    if (d == NULL) abort();
    lib_free(d);
    break;
  }
  case OP_SERIALIZE: {
    char *s = lib_dump(tree, &len);
    if (s == NULL) abort();
    g_sink += len;
    lib_dump_free(s);
    break;
  }
  case OP_SERIALIZE_BUF:
    g_sink += lib_dump_buf(tree, &g_out);
    break;
  case OP_ROUNDTRIP: {
    void *d = lib_parse(in, n);
    if (d == NULL) abort();
    g_sink += lib_dump_buf(d, &g_out);
    lib_free(d);
    break;
  }
  case OP_COUNT:
    break;
  }
}

/* Best of several timed runs, each at least min_s seconds; allocations from one op. */
static void measure(const char *workload, op_t op, const char *in, double min_s) {
  size_t n = strlen(in);
  void *tree = lib_parse(in, n);
  if (tree == NULL) {
    fprintf(stderr, "%s cannot parse the %s workload\n", lib_name(), workload);
    exit(1);
  }
  size_t outlen = 0;
  char *out = lib_dump(tree, &outlen);
  if (out == NULL || lib_dump_buf(tree, &g_out) != outlen || memcmp(out, g_out.p, outlen) != 0) {
    fprintf(stderr, "%s: serialize and serialize-buf disagree on %s\n", lib_name(), workload);
    exit(1);
  }
  int same = outlen == n && memcmp(out, in, n) == 0; /* compact output == our compact input */
  lib_dump_free(out);

  for (int i = 0; i < 3; i++) run_op(op, in, n, tree); /* warm up (and json-c's cached print buffer) */
  g_allocs = g_bytes = 0;
  g_counting = 1;
  run_op(op, in, n, tree);
  g_counting = 0;
  unsigned long long allocs = g_allocs, bytes = g_bytes;

  long iters = 1;
  double best = 0;
  for (;;) { /* calibrate */
    double t0 = now();
    for (long i = 0; i < iters; i++) run_op(op, in, n, tree);
    double dt = now() - t0;
    if (dt >= min_s / 4) {
      iters = (long)((double)iters * (min_s / dt)) + 1;
      break;
    }
    iters *= 4;
  }
  for (int rep = 0; rep < 5; rep++) {
    double t0 = now();
    for (long i = 0; i < iters; i++) run_op(op, in, n, tree);
    double rate = (double)iters / (now() - t0);
    if (rate > best) best = rate;
  }
  lib_free(tree);
  printf("row\t%s\t%s\t%s\t%s\t%zu\t%zu\t%.0f\t%.1f\t%llu\t%llu\t%s\n", lib_name(), lib_version(), workload,
         op_names[op], n, outlen, best, best * (double)n / 1e6, allocs, bytes, same ? "yes" : "no");
  fflush(stdout);
}

/* ---------------------------------------------------------------- conformance probes */

static void probe(const char *name, const char *in, size_t n, const char *want_in_output) {
  void *d = lib_parse(in, n);
  const char *verdict;
  char detail[160] = "";
  if (d == NULL) {
    verdict = "rejected";
  } else {
    size_t len;
    char *s = lib_dump(d, &len);
    verdict = want_in_output == NULL ? "accepted" : (s && strstr(s, want_in_output) ? "kept" : "changed");
    if (s) snprintf(detail, sizeof(detail), "%.60s", s);
    lib_dump_free(s);
    lib_free(d);
  }
  printf("feature\t%s\t%s\t%s\t%s\n", lib_name(), name, verdict, detail);
}

static void probes(void) {
  char deep[2 * 1000 + 1];
  probe("u64 max 18446744073709551615", "{\"seq\":18446744073709551615}", 28, "18446744073709551615");
  probe("2^53+1 = 9007199254740993", "{\"seq\":9007199254740993}", 24, "9007199254740993");
  probe("epoch ms 1731900000000", "{\"t\":1731900000000}", 19, "1731900000000");
  probe("invalid UTF-8 in a string", "{\"a\":\"\xff\xfe\"}", 10, NULL);
  probe("\\u0000 inside a string", "{\"a\":\"x\\u0000y\"}", 16, "\\u0000y");
  probe("trailing garbage after the value", "{\"a\":1} x", 9, NULL);
  probe("duplicate keys {\"a\":1,\"a\":2}", "{\"a\":1,\"a\":2}", 13, NULL);
  probe("key order kept {\"z\":1,\"a\":2}", "{\"z\":1,\"a\":2}", 13, "{\"z\":1,\"a\":2}");
  static const int depths[] = {32, 33, 100, 1000};
  for (size_t k = 0; k < sizeof(depths) / sizeof(*depths); k++) {
    int depth = depths[k];
    for (int i = 0; i < depth; i++) deep[i] = '[', deep[2 * depth - 1 - i] = ']';
    deep[2 * depth] = '\0';
    char name[48];
    snprintf(name, sizeof(name), "nesting depth %d", depth);
    probe(name, deep, (size_t)(2 * depth), NULL);
  }
}

int main(int argc, char **argv) {
  double min_s = argc > 1 ? atof(argv[1]) : 0.3;
  char *small = make_small(), *full = make_full(), *sync = make_sync();
  if (argc > 2) { /* print a workload, for the record */
    puts(strcmp(argv[2], "small") == 0 ? small : strcmp(argv[2], "full") == 0 ? full : sync);
    return 0;
  }
  struct {
    const char *name;
    const char *text;
  } w[] = {{"small", small}, {"full", full}, {"sync200", sync}};
  for (size_t i = 0; i < 3; i++) {
    for (int op = 0; op < OP_COUNT; op++) measure(w[i].name, (op_t)op, w[i].text, min_s);
  }
  probes();
  free(small);
  free(full);
  free(sync);
  return (int)(g_sink & 0);
}
