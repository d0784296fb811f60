/*
 * backend.c — option checks, text delivery and the HTTP request cycle
 * shared by the back ends (see backend.h).
 */
#include "agent/backend.h"

#include <assert.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "agent/sse_parse.h"
#include "core/alloc.h"
#include "core/err.h"

const char *const ch_agent_be_core_opts[] = {"system",        "max-concurrent", "max-queue", "idle-timeout",
                                             "total-timeout", "history",        NULL};

static int ch__be_listed(const char *const *list, const char *k) {
  for (size_t i = 0; list && list[i]; i++)
    if (strcmp(list[i], k) == 0) return 1;
  return 0;
}

int ch_agent_be_opts_check(const ch_agent_t *a, const char *const *allowed, ch_buf_t *err) {
  for (size_t i = 0; i < a->nopts; i++) {
    const char *k = a->opt_keys[i];
    if (ch__be_listed(ch_agent_be_core_opts, k) || ch__be_listed(allowed, k)) continue;
    ch_buf_printf(err, "agent '%s': unknown option '%s' for kind %s (allowed:", a->name, k, a->be->kind);
    for (size_t j = 0; allowed && allowed[j]; j++) ch_buf_printf(err, " %s", allowed[j]);
    for (size_t j = 0; ch_agent_be_core_opts[j]; j++) ch_buf_printf(err, " %s", ch_agent_be_core_opts[j]);
    ch_buf_append_str(err, ")\n");
    return CH_ECONFIG;
  }
  return 0;
}

int ch_agent_be_opt_u64(const ch_agent_t *a, const char *key, uint64_t min, uint64_t max, uint64_t *val,
                        ch_buf_t *err) {
  const char *v = ch_agent_opt(a, key);
  if (v == NULL) return 0;
  char *end;
  unsigned long long n = strtoull(v, &end, 10);
  if (*v < '0' || *v > '9' || *end != '\0' || n < min || n > max) {
    ch_buf_printf(err, "agent '%s': option %s = '%s' must be a number in %llu..%llu\n", a->name, key, v,
                  (unsigned long long)min, (unsigned long long)max);
    return CH_ECONFIG;
  }
  *val = n;
  return 0;
}

void ch_agent_be_out_init(ch_agent_be_out_t *o, size_t max) {
  ch_buf_init(&o->scratch);
  o->produced = 0;
  o->max = max;
}

void ch_agent_be_out_dispose(ch_agent_be_out_t *o) { ch_buf_dispose(&o->scratch); }

int ch_agent_be_emit(ch_agent_stream_t *st, ch_agent_be_out_t *o, const char *text, size_t len, int final,
                     size_t *consumed) {
  o->scratch.len = 0;
  size_t used = ch_agent_utf8_clean(&o->scratch, text, len, final);
  if (consumed) *consumed = used;
  if (o->scratch.len == 0) return 0;
  if (o->produced + o->scratch.len > o->max) return CH_ETOOBIG;
  o->produced += o->scratch.len;
  ch_agent_stream_delta(st, o->scratch.base, o->scratch.len);
  return 0;
}

int ch_agent_be_count(const cJSON *v, uint64_t *out) {
  if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble < 9007199254740992.0)) return 0;
  *out = (uint64_t)v->valuedouble;
  return 1;
}

/* ---- HTTP back ends ---------------------------------------------------------------- */

int ch_agent_be_http_cfg_init(ch_agent_be_http_cfg_t *c, const ch_agent_t *a, const ch_agent_be_http_ops_t *ops,
                              const char *base, const char *path, size_t max_reply, ch_buf_t *err) {
  if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0) {
    ch_buf_printf(err, "agent '%s': base-url '%s' must start with http:// or https://\n", a->name, base);
    return CH_ECONFIG;
  }
  if (ch_agent_http_global_ref() != 0) {
    ch_buf_printf(err, "agent '%s': libcurl could not be initialised\n", a->name);
    return CH_ECONFIG;
  }
  size_t n = strlen(base);
  while (n > 0 && base[n - 1] == '/') n--;
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append(&b, base, n);
  ch_buf_append_str(&b, path);
  c->url = ch_xstrndup(b.base, b.len);
  ch_buf_dispose(&b);
  c->ops = ops;
  c->max_reply = max_reply;
  return 0;
}

void ch_agent_be_http_cfg_header(ch_agent_be_http_cfg_t *c, const char *name, const char *value) {
  assert(c->nheaders < CH_AGENT_BE_HTTP_HEADERS);
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_printf(&b, "%s: %s", name, value);
  c->headers[c->nheaders++] = ch_xstrndup(b.base, b.len);
  memset(b.base, 0, b.len); /* it may be a key */
  ch_buf_dispose(&b);
}

void ch_agent_be_http_cfg_dispose(ch_agent_be_http_cfg_t *c) {
  for (size_t i = 0; i < c->nheaders; i++) {
    memset(c->headers[i], 0, strlen(c->headers[i]));
    free(c->headers[i]);
    c->headers[i] = NULL;
  }
  c->nheaders = 0;
  if (c->url == NULL) return;
  free(c->url);
  c->url = NULL;
  ch_agent_http_global_unref();
}

void ch_agent_be_http_dispose(ch_agent_t *a) {
  if (a->be_state == NULL) return;
  ch_agent_be_http_cfg_dispose(a->be_state);
  free(a->be_state);
  a->be_state = NULL;
}

int ch_agent_be_fail(ch_agent_be_run_t *r, const char *fmt, ...) {
  ch_buf_t b = CH_BUF_INIT;
  va_list ap;
  va_start(ap, fmt);
  ch_buf_vprintf(&b, fmt, ap);
  va_end(ap);
  free(r->error);
  r->error = ch_xstrdup(ch_buf_cstr(&b));
  ch_buf_dispose(&b);
  return -1;
}

int ch_agent_be_fail_upstream(ch_agent_be_run_t *r, const cJSON *e) {
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(e, "type");
  const cJSON *msg = cJSON_IsString(e) ? e : cJSON_GetObjectItemCaseSensitive(e, "message");
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "upstream error");
  if (cJSON_IsString(type) && type->valuestring[0]) ch_buf_printf(&b, " (%.64s)", type->valuestring);
  if (cJSON_IsString(msg)) ch_buf_printf(&b, ": %.500s", msg->valuestring);
  ch_agent_be_fail(r, "%s", ch_buf_cstr(&b));
  ch_buf_dispose(&b);
  return -1;
}

int ch_agent_be_text(ch_agent_be_run_t *r, const char *text, size_t len) {
  if (ch_agent_be_emit(r->st, &r->out, text, len, 1, NULL) == 0) return 0;
  return ch_agent_be_fail(r, "reply longer than %zu bytes", r->out.max);
}

/* Release the run; st no longer points at it. */
static void ch__be_run_free(ch_agent_be_run_t *r) {
  r->st->be_data = NULL;
  ch_agent_be_out_dispose(&r->out);
  free(r->error);
  free(r);
}

static int ch__be_http_event(void *ud, const char *type, size_t tl, const char *data, size_t dl) {
  ch_agent_be_run_t *r = ud;
  return r->ops->on_event(r, type, tl, data, dl);
}

static void ch__be_http_done(void *ud, const ch_agent_http_result_t *res) {
  ch_agent_be_run_t *r = ud;
  ch_agent_stream_t *st = r->st;
  ch_buf_t why = CH_BUF_INIT;
  int failed = 1;
  if (res->stopped == 1) {
    failed = 0;
  } else if (res->stopped < 0) {
    ch_buf_append_str(&why, r->error ? r->error : "upstream stream refused");
  } else if (res->error) {
    ch_buf_append_str(&why, res->error);
  } else if (res->body) { /* not streamed: a whole answer */
    if (r->ops->whole(r, res->body, res->body_len) == 0) failed = 0;
    else if (r->error) ch_buf_append_str(&why, r->error);
    else ch_buf_printf(&why, "upstream answered without an event stream (content-type '%.100s')", res->content_type);
  } else if (r->finished) {
    failed = 0; /* no end event, but the reply said it was finished */
  } else {
    ch_buf_append_str(&why, r->ops->cut_short);
  }
  ch__be_run_free(r); /* before the end: st is freed by it */
  ch_agent_stream_end(st, failed ? ch_buf_cstr(&why) : NULL);
  ch_buf_dispose(&why);
}

static const ch_agent_http_cbs_t ch__be_http_cbs = {.on_event = ch__be_http_event, .on_done = ch__be_http_done};

int ch_agent_be_http_start(ch_agent_stream_t *st, uv_loop_t *loop) {
  const ch_agent_be_http_cfg_t *c = st->agent->be_state;
  char *body = c->ops->body(st);
  if (body == NULL) return CH_EIO;
  const char *headers[2 + CH_AGENT_BE_HTTP_HEADERS];
  size_t nh = 0;
  headers[nh++] = "Content-Type: application/json";
  headers[nh++] = "Accept: text/event-stream";
  for (size_t i = 0; i < c->nheaders; i++) headers[nh++] = c->headers[i];
  ch_agent_be_run_t *r = ch_xcalloc(1, sizeof(*r));
  r->st = st;
  r->ops = c->ops;
  ch_agent_be_out_init(&r->out, c->max_reply);
  st->be_data = r;
  ch_agent_http_req_t req = {.url = c->url, .body = body, .body_len = strlen(body), .headers = headers,
                             .nheaders = nh};
  int rc = ch_agent_http_start(loop, &req, &ch__be_http_cbs, r, &r->t);
  cJSON_free(body);
  if (rc != 0) ch__be_run_free(r);
  return rc;
}

void ch_agent_be_http_cancel(ch_agent_stream_t *st) {
  ch_agent_be_run_t *r = st->be_data;
  if (r == NULL) return;
  ch_agent_http_cancel(r->t);
  ch__be_run_free(r);
}
