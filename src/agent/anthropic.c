/*
 * anthropic.c — the `anthropic` agent: the Anthropic Messages API, streamed.
 *
 *   NAME=anthropic:MODEL[;base-url=URL][;key-env=VAR][;max-tokens=N][;version=V][;max-reply=BYTES]
 *
 *   POST {base-url}/v1/messages     x-api-key: $VAR, anthropic-version: V (2023-06-01)
 *   {"model","max_tokens":N,"stream":true,"system"?,"messages":[{"role":"user"|"assistant","content"}...]}
 *        │ event: message_start        {"message":{"usage":{"input_tokens",...}}}
 *        │ event: content_block_delta  {"delta":{"type":"text_delta","text":"..."}}  ──> delta
 *        │ event: message_delta        {"usage":{"output_tokens"}}  (cumulative)
 *        │ event: error                {"error":{"type","message"}}                 ──> end (error)
 *        ▼ event: message_stop                                                      ──> end (success)
 *   ping, content_block_start/stop and event types this file does not know are
 *   skipped (the API may add new ones).
 *
 * The conversation is fitted to the API's rules: "system" messages of the
 * history join the system prompt, other non-assistant roles read as user,
 * empty messages are dropped, consecutive messages of one role are merged,
 * and the list starts with a user turn.
 *
 * The key (x-api-key) is read from the environment once, at start-up; it is
 * required with the default base-url (a gateway at another URL may add it
 * itself) and is never logged.
 *
 * The request cycle (start, cancel, the verdict at the end) is the shared
 * one of backend.h; this file has the body, the headers and the events.
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

#define CH__ANT_DEFAULT_BASE "https://api.anthropic.com"

typedef struct {
  ch_agent_be_http_cfg_t http; /* first: the shared request cycle's (backend.h) */
  uint64_t max_tokens;
} ch__ant_cfg_t;

static const char *const ch__ant_opts[] = {"base-url", "key-env", "max-tokens", "version", "max-reply", NULL};

static const ch_agent_be_http_ops_t ch__ant_http;

static int ch__ant_init(ch_agent_t *a, ch_buf_t *err) {
  if (a->arg == NULL || a->arg[0] == '\0') {
    ch_buf_printf(err, "agent '%s': anthropic needs a model: %s=anthropic:MODEL\n", a->name, a->name);
    return CH_ECONFIG;
  }
  if (ch_agent_be_opts_check(a, ch__ant_opts, err) != 0) return CH_ECONFIG;
  uint64_t max_tokens = 1024, max_reply = CH_AGENT_BE_MAX_REPLY_DEFAULT;
  if (ch_agent_be_opt_u64(a, "max-tokens", 1, 10000000, &max_tokens, err) != 0 ||
      ch_agent_be_opt_u64(a, "max-reply", 1, (uint64_t)1 << 30, &max_reply, err) != 0)
    return CH_ECONFIG;
  const char *base = ch_agent_opt(a, "base-url");
  const char *key_env = ch_agent_opt(a, "key-env");
  const char *version = ch_agent_opt(a, "version");
  if (key_env == NULL || key_env[0] == '\0') key_env = "ANTHROPIC_API_KEY";
  if (version == NULL || version[0] == '\0') version = "2023-06-01";
  if (base == NULL || base[0] == '\0') base = CH__ANT_DEFAULT_BASE;
  ch__ant_cfg_t *c = ch_xcalloc(1, sizeof(*c));
  if (ch_agent_be_http_cfg_init(&c->http, a, &ch__ant_http, base, "/v1/messages", (size_t)max_reply, err) != 0)
    goto Fail;
  for (const char *p = version; *p; p++)
    if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) {
      ch_buf_printf(err, "agent '%s': version '%s' is not a header value\n", a->name, version);
      goto Fail;
    }
  const char *key = getenv(key_env);
  int has_key = key && key[0];
  if (!has_key && strcmp(base, CH__ANT_DEFAULT_BASE) == 0) {
    ch_buf_printf(err, "agent '%s': environment variable %s (the API key; key-env=) is not set\n", a->name, key_env);
    goto Fail;
  }
  ch_agent_be_http_cfg_header(&c->http, "anthropic-version", version);
  if (has_key) ch_agent_be_http_cfg_header(&c->http, "x-api-key", key);
  else ch_log_info("agent '%s': %s is not set: requests to %s go without x-api-key", a->name, key_env, base);
  c->max_tokens = max_tokens;
  a->be_state = c;
  return 0;
Fail:
  ch_agent_be_http_cfg_dispose(&c->http);
  free(c);
  return CH_ECONFIG;
}

/* Append a turn, merged into the previous one when it has the same role. */
static void ch__ant_turn(cJSON *msgs, const char *role, const char *text) {
  cJSON *last = cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1);
  const cJSON *lr = cJSON_GetObjectItemCaseSensitive(last, "role");
  if (last && cJSON_IsString(lr) && strcmp(lr->valuestring, role) == 0) {
    const cJSON *lc = cJSON_GetObjectItemCaseSensitive(last, "content");
    ch_buf_t b = CH_BUF_INIT;
    ch_buf_append_str(&b, lc->valuestring);
    ch_buf_append_str(&b, "\n\n");
    ch_buf_append_str(&b, text);
    cJSON_ReplaceItemInObjectCaseSensitive(last, "content", cJSON_CreateString(ch_buf_cstr(&b)));
    ch_buf_dispose(&b);
    return;
  }
  cJSON *m = cJSON_CreateObject();
  cJSON_AddStringToObject(m, "role", role);
  cJSON_AddStringToObject(m, "content", text);
  cJSON_AddItemToArray(msgs, m);
}

static char *ch__ant_body(const ch_agent_stream_t *st) {
  const ch__ant_cfg_t *c = st->agent->be_state;
  cJSON *req = cJSON_Parse(st->request_json);
  cJSON *out = cJSON_CreateObject();
  cJSON_AddStringToObject(out, "model", st->agent->arg);
  cJSON_AddNumberToObject(out, "max_tokens", (double)c->max_tokens);
  cJSON_AddBoolToObject(out, "stream", 1);
  ch_buf_t sys = CH_BUF_INIT;
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(req, "system");
  if (cJSON_IsString(s) && s->valuestring[0]) ch_buf_append_str(&sys, s->valuestring);
  cJSON *msgs = cJSON_CreateArray();
  const cJSON *it;
  cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(req, "messages")) {
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(it, "role");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
    if (!cJSON_IsString(content) || content->valuestring[0] == '\0') continue;
    const char *r = cJSON_IsString(role) ? role->valuestring : "user";
    if (strcmp(r, "system") == 0) {
      if (sys.len) ch_buf_append_str(&sys, "\n\n");
      ch_buf_append_str(&sys, content->valuestring);
      continue;
    }
    if (strcmp(r, "assistant") != 0) r = "user";
    if (cJSON_GetArraySize(msgs) == 0 && strcmp(r, "assistant") == 0) continue; /* a user turn first */
    ch__ant_turn(msgs, r, content->valuestring);
  }
  if (sys.len) cJSON_AddStringToObject(out, "system", ch_buf_cstr(&sys));
  cJSON_AddItemToObject(out, "messages", msgs);
  char *body = cJSON_PrintUnformatted(out);
  ch_buf_dispose(&sys);
  cJSON_Delete(out);
  cJSON_Delete(req);
  return body;
}

static void ch__ant_usage(ch_agent_stream_t *st, const cJSON *u) {
  const cJSON *in = cJSON_GetObjectItemCaseSensitive(u, "input_tokens");
  const cJSON *out = cJSON_GetObjectItemCaseSensitive(u, "output_tokens");
  ch_agent_be_count(in, &st->tokens_in);
  ch_agent_be_count(out, &st->tokens_out); /* cumulative */
}

static int ch__ant_text(ch_agent_be_run_t *r, const cJSON *text) {
  if (!cJSON_IsString(text) || text->valuestring[0] == '\0') return 0;
  return ch_agent_be_text(r, text->valuestring, strlen(text->valuestring));
}

static int ch__ant_event(ch_agent_be_run_t *r, const char *type, size_t tl, const char *data, size_t dl) {
  cJSON *j = cJSON_ParseWithLength(data, dl);
  int rc = 0;
  if (!cJSON_IsObject(j)) {
    rc = ch_agent_be_fail(r, "malformed upstream event '%.*s': data is not a JSON object", (int)(tl > 64 ? 64 : tl),
                          type);
    goto Exit;
  }
  const cJSON *jt = cJSON_GetObjectItemCaseSensitive(j, "type");
  char name[64];
  if (cJSON_IsString(jt)) snprintf(name, sizeof(name), "%s", jt->valuestring);
  else snprintf(name, sizeof(name), "%.*s", (int)(tl > 63 ? 63 : tl), type);
  if (strcmp(name, "content_block_delta") == 0) {
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "delta");
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(d, "type");
    if (cJSON_IsString(dt) && strcmp(dt->valuestring, "text_delta") == 0)
      rc = ch__ant_text(r, cJSON_GetObjectItemCaseSensitive(d, "text"));
  } else if (strcmp(name, "content_block_start") == 0) {
    const cJSON *cb = cJSON_GetObjectItemCaseSensitive(j, "content_block");
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cb, "type");
    if (cJSON_IsString(ct) && strcmp(ct->valuestring, "text") == 0)
      rc = ch__ant_text(r, cJSON_GetObjectItemCaseSensitive(cb, "text"));
  } else if (strcmp(name, "message_start") == 0) {
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "message"), "usage");
    if (cJSON_IsObject(u)) ch__ant_usage(r->st, u);
  } else if (strcmp(name, "message_delta") == 0) {
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "usage");
    if (cJSON_IsObject(u)) ch__ant_usage(r->st, u);
  } else if (strcmp(name, "message_stop") == 0) {
    rc = 1;
  } else if (strcmp(name, "error") == 0) {
    rc = ch_agent_be_fail_upstream(r, cJSON_GetObjectItemCaseSensitive(j, "error"));
  }
Exit:
  cJSON_Delete(j);
  return rc;
}

/* A 2xx answer that was not streamed: {"type":"message","content":[{"type":"text","text"}...],"usage"}. */
static int ch__ant_whole(ch_agent_be_run_t *r, const char *body, size_t len) {
  cJSON *j = cJSON_ParseWithLength(body, len);
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
  int rc = -1;
  if (cJSON_IsString(t) && strcmp(t->valuestring, "message") == 0) {
    rc = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, "content")) {
      const cJSON *bt = cJSON_GetObjectItemCaseSensitive(it, "type");
      if (rc == 0 && cJSON_IsString(bt) && strcmp(bt->valuestring, "text") == 0)
        rc = ch__ant_text(r, cJSON_GetObjectItemCaseSensitive(it, "text"));
    }
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "usage");
    if (cJSON_IsObject(u)) ch__ant_usage(r->st, u);
  }
  cJSON_Delete(j);
  return rc;
}

static const ch_agent_be_http_ops_t ch__ant_http = {
    .body = ch__ant_body,
    .on_event = ch__ant_event,
    .whole = ch__ant_whole,
    .cut_short = "upstream closed the stream before message_stop",
};

const ch_agent_backend_t ch_agent_backend_anthropic = {
    .kind = "anthropic",
    .init = ch__ant_init,
    .dispose = ch_agent_be_http_dispose,
    .start = ch_agent_be_http_start,
    .cancel = ch_agent_be_http_cancel,
};
