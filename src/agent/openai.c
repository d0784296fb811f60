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
 *
 * The request cycle (start, cancel, the verdict at the end) is the shared
 * one of backend.h; this file has the body, the header and the events.
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "agent/backend.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"

typedef struct {
  ch_agent_be_http_cfg_t http; /* first: the shared request cycle's (backend.h) */
  uint64_t max_tokens;         /* 0: not sent */
  int usage;                   /* ask for usage (stream_options.include_usage) */
} ch__oai_cfg_t;

static const char *const ch__oai_opts[] = {"base-url", "key-env", "max-tokens", "usage", "max-reply", NULL};

static const ch_agent_be_http_ops_t ch__oai_http;

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
  ch__oai_cfg_t *c = ch_xcalloc(1, sizeof(*c));
  if (ch_agent_be_http_cfg_init(&c->http, a, &ch__oai_http, base ? base : "https://api.openai.com/v1",
                                "/chat/completions", (size_t)max_reply, err) != 0) {
    free(c);
    return CH_ECONFIG;
  }
  c->max_tokens = max_tokens;
  c->usage = (int)usage;
  const char *key = getenv(key_env);
  if (key && key[0]) {
    ch_buf_t v = CH_BUF_INIT;
    ch_buf_printf(&v, "Bearer %s", key);
    ch_agent_be_http_cfg_header(&c->http, "Authorization", ch_buf_cstr(&v));
    memset(v.base, 0, v.len);
    ch_buf_dispose(&v);
  } else {
    ch_log_info("agent '%s': %s is not set: requests go without an API key", a->name, key_env);
  }
  a->be_state = c;
  return 0;
}

/* The chat-completions request for the core's request document. */
static char *ch__oai_body(const ch_agent_stream_t *st) {
  const ch__oai_cfg_t *c = st->agent->be_state;
  cJSON *req = cJSON_Parse(st->request_json);
  cJSON *out = cJSON_CreateObject();
  cJSON_AddStringToObject(out, "model", st->agent->arg);
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

static void ch__oai_usage(ch_agent_stream_t *st, const cJSON *u) {
  const cJSON *pi = cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens");
  const cJSON *co = cJSON_GetObjectItemCaseSensitive(u, "completion_tokens");
  ch_agent_be_count(pi, &st->tokens_in);
  ch_agent_be_count(co, &st->tokens_out);
}

/* One completion object (a stream chunk, or the whole non-streamed answer). */
static int ch__oai_object(ch_agent_be_run_t *r, const cJSON *j, int streamed) {
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
  if (e && !cJSON_IsNull(e)) return ch_agent_be_fail_upstream(r, e);
  const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "usage");
  if (cJSON_IsObject(u)) ch__oai_usage(r->st, u);
  const cJSON *ch0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
  if (ch0 == NULL) return 0;
  const cJSON *fr = cJSON_GetObjectItemCaseSensitive(ch0, "finish_reason");
  if (cJSON_IsString(fr)) r->finished = 1;
  const cJSON *d = cJSON_GetObjectItemCaseSensitive(ch0, streamed ? "delta" : "message");
  const cJSON *content = cJSON_GetObjectItemCaseSensitive(d, "content");
  if (cJSON_IsString(content) && content->valuestring[0])
    return ch_agent_be_text(r, content->valuestring, strlen(content->valuestring));
  return 0;
}

static int ch__oai_event(ch_agent_be_run_t *r, const char *type, size_t tl, const char *data, size_t dl) {
  if (dl == 6 && memcmp(data, "[DONE]", 6) == 0) return 1;
  cJSON *j = cJSON_ParseWithLength(data, dl);
  int rc;
  if (tl == 5 && memcmp(type, "error", 5) == 0) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    rc = e ? ch_agent_be_fail_upstream(r, e)
           : ch_agent_be_fail(r, "upstream error: %.*s", (int)(dl > 500 ? 500 : dl), data);
  } else if (!cJSON_IsObject(j)) {
    rc = ch_agent_be_fail(r, "malformed upstream event: data is not a JSON object");
  } else {
    rc = ch__oai_object(r, j, 1);
  }
  cJSON_Delete(j);
  return rc;
}

/* Not streamed: a whole completion, complete when it says so or has text. */
static int ch__oai_whole(ch_agent_be_run_t *r, const char *body, size_t len) {
  cJSON *j = cJSON_ParseWithLength(body, len);
  int rc = cJSON_IsObject(j) && ch__oai_object(r, j, 0) == 0 && (r->finished || r->out.produced) ? 0 : -1;
  cJSON_Delete(j);
  return rc;
}

static const ch_agent_be_http_ops_t ch__oai_http = {
    .body = ch__oai_body,
    .on_event = ch__oai_event,
    .whole = ch__oai_whole,
    .cut_short = "upstream closed the stream before the end of the reply",
};

const ch_agent_backend_t ch_agent_backend_openai = {
    .kind = "openai",
    .init = ch__oai_init,
    .dispose = ch_agent_be_http_dispose,
    .start = ch_agent_be_http_start,
    .cancel = ch_agent_be_http_cancel,
};
