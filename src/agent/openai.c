/*
 * openai.c — the `openai` agent: any OpenAI-compatible chat-completions API
 * (OpenAI, vLLM, llama.cpp server, Ollama, LiteLLM, OpenRouter, ...),
 * streamed.
 *
 *   NAME=openai:MODEL[;base-url=URL][;key-env=VAR][;max-tokens=N][;usage=0|1][;max-reply=BYTES]
 *
 *   POST {base-url}/chat/completions          Authorization: Bearer $VAR (when VAR is set)
 *   {"model","stream":true,"messages":[{"role":"system",...},{"role":"user",...},...],
 *    "max_tokens"?, "stream_options":{"include_usage":true}?}
 *        │ SSE: data: {"choices":[{"delta":{"content":"..."},"finish_reason":null}]}
 *        │      data: {"choices":[],"usage":{"prompt_tokens","completion_tokens"}}
 *        ▼      data: [DONE]
 *   deltas ──> ch_agent_stream_delta; [DONE] ──> end (success)
 *
 * Errors end the stream with a reason: an HTTP status >= 300 with the
 * upstream's error message, a connection failure, a data line that is not
 * JSON, an {"error":...} object in the stream, a stream that closes before
 * [DONE] (unless a finish_reason was seen: some servers never send [DONE]).
 * A 2xx answer that is not an event stream is read as a non-streamed
 * completion (choices[0].message.content).
 *
 * The key is read from the environment once, at start-up; it is sent only
 * in the Authorization header and never logged.
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "agent/backend.h"
#include "agent/http.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"

typedef struct {
  char *url;          /* owned: {base-url}/chat/completions */
  char *auth;         /* owned: "Authorization: Bearer ..." or NULL (no key) */
  uint64_t max_tokens; /* 0: not sent */
  int usage;          /* ask for usage (stream_options.include_usage) */
  size_t max_reply;   /* bytes */
} ch__oai_cfg_t;

typedef struct {
  ch_agent_stream_t *st;  /* not owned */
  ch_agent_http_t *t;     /* the transfer (http.c's) */
  ch_agent_be_out_t out;
  int finished;           /* a finish_reason was seen */
  uint64_t tin, tout;     /* usage reported */
  char *error;            /* owned: why on_event stopped the transfer */
} ch__oai_run_t;

static const char *const ch__oai_opts[] = {"base-url", "key-env", "max-tokens", "usage", "max-reply", NULL};

static void ch__oai_dispose(ch_agent_t *a) {
  ch__oai_cfg_t *c = a->be_state;
  if (c == NULL) return;
  free(c->url);
  if (c->auth) {
    memset(c->auth, 0, strlen(c->auth)); /* the key */
    free(c->auth);
  }
  free(c);
  a->be_state = NULL;
  ch_agent_http_global_unref();
}

/* base (no trailing slashes) + path, or NULL with err when base is not http(s). */
static char *ch__oai_url(const ch_agent_t *a, const char *base, const char *path, ch_buf_t *err) {
  if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0) {
    ch_buf_printf(err, "agent '%s': base-url '%s' must start with http:// or https://\n", a->name, base);
    return NULL;
  }
  size_t n = strlen(base);
  while (n > 0 && base[n - 1] == '/') n--;
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append(&b, base, n);
  ch_buf_append_str(&b, path);
  char *s = ch_xstrndup(b.base, b.len);
  ch_buf_dispose(&b);
  return s;
}

static int ch__oai_init(ch_agent_t *a, ch_buf_t *err) {
  if (a->arg == NULL || a->arg[0] == '\0') {
    ch_buf_printf(err, "agent '%s': openai needs a model: %s=openai:MODEL[;base-url=URL]\n", a->name, a->name);
    return CH_ECONFIG;
  }
  if (ch_agent_be_opts_check(a, ch__oai_opts, err) != 0) return CH_ECONFIG;
  uint64_t max_tokens = 0, usage = 1, max_reply = CH_AGENT_BE_MAX_REPLY_DEFAULT;
  if (ch_agent_be_opt_u64(a, "max-tokens", 1, 10000000, &max_tokens, err) != 0 ||
      ch_agent_be_opt_u64(a, "usage", 0, 1, &usage, err) != 0 ||
      ch_agent_be_opt_u64(a, "max-reply", 1, (uint64_t)1 << 30, &max_reply, err) != 0)
    return CH_ECONFIG;
  const char *base = ch_agent_opt(a, "base-url");
  const char *key_env = ch_agent_opt(a, "key-env");
  if (key_env == NULL || key_env[0] == '\0') key_env = "OPENAI_API_KEY";
  char *url = ch__oai_url(a, base ? base : "https://api.openai.com/v1", "/chat/completions", err);
  if (url == NULL) return CH_ECONFIG;
  if (ch_agent_http_global_ref() != 0) {
    ch_buf_printf(err, "agent '%s': libcurl could not be initialised\n", a->name);
    free(url);
    return CH_ECONFIG;
  }
  ch__oai_cfg_t *c = ch_xcalloc(1, sizeof(*c));
  c->url = url;
  c->max_tokens = max_tokens;
  c->usage = (int)usage;
  c->max_reply = (size_t)max_reply;
  const char *key = getenv(key_env);
  if (key && key[0]) {
    ch_buf_t h = CH_BUF_INIT;
    ch_buf_printf(&h, "Authorization: Bearer %s", key);
    c->auth = ch_xstrndup(h.base, h.len);
    memset(h.base, 0, h.len);
    ch_buf_dispose(&h);
  } else {
    ch_log_info("agent '%s': %s is not set: requests go without an API key", a->name, key_env);
  }
  a->be_state = c;
  return 0;
}

/* The chat-completions request for the core's request document. */
static char *ch__oai_body(const ch__oai_cfg_t *c, const ch_agent_t *a, const char *request_json) {
  cJSON *req = cJSON_Parse(request_json);
  cJSON *out = cJSON_CreateObject();
  cJSON_AddStringToObject(out, "model", a->arg);
  cJSON_AddBoolToObject(out, "stream", 1);
  cJSON *msgs = cJSON_AddArrayToObject(out, "messages");
  cJSON *sys = cJSON_GetObjectItemCaseSensitive(req, "system");
  if (cJSON_IsString(sys) && sys->valuestring[0]) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "system");
    cJSON_AddStringToObject(m, "content", sys->valuestring);
    cJSON_AddItemToArray(msgs, m);
  }
  const cJSON *it;
  cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(req, "messages")) {
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(it, "role");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
    if (!cJSON_IsString(content)) continue;
    const char *r = cJSON_IsString(role) ? role->valuestring : "user";
    /* "tool" needs a tool_call_id upstream: a stored tool message reads as user text */
    if (strcmp(r, "assistant") != 0 && strcmp(r, "system") != 0) r = "user";
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", r);
    cJSON_AddStringToObject(m, "content", content->valuestring);
    cJSON_AddItemToArray(msgs, m);
  }
  if (c->max_tokens) cJSON_AddNumberToObject(out, "max_tokens", (double)c->max_tokens);
  if (c->usage) cJSON_AddBoolToObject(cJSON_AddObjectToObject(out, "stream_options"), "include_usage", 1);
  char *s = cJSON_PrintUnformatted(out);
  cJSON_Delete(out);
  cJSON_Delete(req);
  return s;
}

static void ch__oai_set_error(ch__oai_run_t *r, const char *text) {
  free(r->error);
  r->error = ch_xstrdup(text);
}

/* "upstream error (type): message" from an {"error":...} value. */
static void ch__oai_error_text(ch_buf_t *b, const cJSON *e) {
  ch_buf_append_str(b, "upstream error");
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(e, "type");
  const cJSON *msg = cJSON_IsString(e) ? e : cJSON_GetObjectItemCaseSensitive(e, "message");
  if (cJSON_IsString(type) && type->valuestring[0]) ch_buf_printf(b, " (%.64s)", type->valuestring);
  if (cJSON_IsString(msg)) ch_buf_printf(b, ": %.500s", msg->valuestring);
}

static void ch__oai_usage(ch__oai_run_t *r, const cJSON *u) {
  const cJSON *pi = cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens");
  const cJSON *co = cJSON_GetObjectItemCaseSensitive(u, "completion_tokens");
  if (cJSON_IsNumber(pi) && pi->valuedouble >= 0) r->tin = (uint64_t)pi->valuedouble;
  if (cJSON_IsNumber(co) && co->valuedouble >= 0) r->tout = (uint64_t)co->valuedouble;
}

/* One completion object (a stream chunk, or the whole non-streamed answer). */
static int ch__oai_object(ch__oai_run_t *r, const cJSON *j, int streamed) {
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
  if (e && !cJSON_IsNull(e)) {
    ch_buf_t b = CH_BUF_INIT;
    ch__oai_error_text(&b, e);
    ch__oai_set_error(r, ch_buf_cstr(&b));
    ch_buf_dispose(&b);
    return -1;
  }
  const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "usage");
  if (cJSON_IsObject(u)) ch__oai_usage(r, u);
  const cJSON *ch0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
  if (ch0 == NULL) return 0;
  const cJSON *fr = cJSON_GetObjectItemCaseSensitive(ch0, "finish_reason");
  if (cJSON_IsString(fr)) r->finished = 1;
  const cJSON *d = cJSON_GetObjectItemCaseSensitive(ch0, streamed ? "delta" : "message");
  const cJSON *content = cJSON_GetObjectItemCaseSensitive(d, "content");
  if (cJSON_IsString(content) && content->valuestring[0] &&
      ch_agent_be_emit(r->st, &r->out, content->valuestring, strlen(content->valuestring), 1, NULL) != 0) {
    ch_buf_t b = CH_BUF_INIT;
    ch_buf_printf(&b, "reply longer than %zu bytes", r->out.max);
    ch__oai_set_error(r, ch_buf_cstr(&b));
    ch_buf_dispose(&b);
    return -1;
  }
  return 0;
}

static int ch__oai_event(void *ud, const char *type, size_t tl, const char *data, size_t dl) {
  ch__oai_run_t *r = ud;
  if (dl == 6 && memcmp(data, "[DONE]", 6) == 0) return 1;
  if (tl == 5 && memcmp(type, "error", 5) == 0) {
    ch_buf_t b = CH_BUF_INIT;
    cJSON *j = cJSON_ParseWithLength(data, dl);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    if (e) ch__oai_error_text(&b, e);
    else ch_buf_printf(&b, "upstream error: %.*s", (int)(dl > 500 ? 500 : dl), data);
    cJSON_Delete(j);
    ch__oai_set_error(r, ch_buf_cstr(&b));
    ch_buf_dispose(&b);
    return -1;
  }
  cJSON *j = cJSON_ParseWithLength(data, dl);
  if (!cJSON_IsObject(j)) {
    cJSON_Delete(j);
    ch__oai_set_error(r, "malformed upstream event: data is not a JSON object");
    return -1;
  }
  int rc = ch__oai_object(r, j, 1);
  cJSON_Delete(j);
  return rc;
}

static void ch__oai_done(void *ud, const ch_agent_http_result_t *res) {
  ch__oai_run_t *r = ud;
  ch_agent_stream_t *st = r->st;
  ch_buf_t why = CH_BUF_INIT;
  int failed = 1;
  if (res->stopped == 1) {
    failed = 0;
  } else if (res->stopped < 0) {
    ch_buf_append_str(&why, r->error ? r->error : "upstream stream refused");
  } else if (res->error) {
    ch_buf_append_str(&why, res->error);
  } else if (res->body) { /* not streamed: a whole completion */
    cJSON *j = cJSON_ParseWithLength(res->body, res->body_len);
    if (cJSON_IsObject(j) && ch__oai_object(r, j, 0) == 0 && (r->finished || r->out.produced)) failed = 0;
    else if (r->error) ch_buf_append_str(&why, r->error);
    else ch_buf_printf(&why, "upstream answered without an event stream (content-type '%.100s')", res->content_type);
    cJSON_Delete(j);
  } else if (r->finished) {
    failed = 0; /* no [DONE], but the reply said it was finished */
  } else {
    ch_buf_append_str(&why, "upstream closed the stream before the end of the reply");
  }
  /* Release our state before the end: st is freed by it. */
  st->agent->tokens_in += r->tin;
  st->agent->tokens_out += r->tout;
  st->be_data = NULL;
  ch_agent_be_out_dispose(&r->out);
  free(r->error);
  free(r);
  ch_agent_stream_end(st, failed ? ch_buf_cstr(&why) : NULL);
  ch_buf_dispose(&why);
}

static const ch_agent_http_cbs_t ch__oai_cbs = {.on_event = ch__oai_event, .on_done = ch__oai_done};

static int ch__oai_start(ch_agent_stream_t *st, uv_loop_t *loop) {
  const ch__oai_cfg_t *c = st->agent->be_state;
  char *body = ch__oai_body(c, st->agent, st->request_json);
  const char *headers[4];
  size_t nh = 0;
  headers[nh++] = "Content-Type: application/json";
  headers[nh++] = "Accept: text/event-stream";
  if (c->auth) headers[nh++] = c->auth;
  ch__oai_run_t *r = ch_xcalloc(1, sizeof(*r));
  r->st = st;
  ch_agent_be_out_init(&r->out, c->max_reply);
  ch_agent_http_req_t req = {.url = c->url, .body = body, .body_len = strlen(body), .headers = headers,
                             .nheaders = nh};
  int rc = ch_agent_http_start(loop, &req, &ch__oai_cbs, r, &r->t);
  cJSON_free(body);
  if (rc != 0) {
    ch_agent_be_out_dispose(&r->out);
    free(r);
    return rc;
  }
  st->be_data = r;
  return 0;
}

static void ch__oai_cancel(ch_agent_stream_t *st) {
  ch__oai_run_t *r = st->be_data;
  if (r == NULL) return;
  st->be_data = NULL;
  ch_agent_http_cancel(r->t);
  st->agent->tokens_in += r->tin;
  st->agent->tokens_out += r->tout;
  ch_agent_be_out_dispose(&r->out);
  free(r->error);
  free(r);
}

const ch_agent_backend_t ch_agent_backend_openai = {
    .kind = "openai",
    .init = ch__oai_init,
    .dispose = ch__oai_dispose,
    .start = ch__oai_start,
    .cancel = ch__oai_cancel,
};
