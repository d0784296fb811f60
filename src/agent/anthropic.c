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

#define CH__ANT_DEFAULT_BASE "https://api.anthropic.com"

typedef struct {
  char *url;           /* owned: {base-url}/v1/messages */
  char *key_header;    /* owned: "x-api-key: ..." or NULL */
  char *version_header; /* owned: "anthropic-version: ..." */
  uint64_t max_tokens;
  size_t max_reply;    /* bytes */
} ch__ant_cfg_t;

typedef struct {
  ch_agent_stream_t *st;  /* not owned */
  ch_agent_http_t *t;     /* the transfer (http.c's) */
  ch_agent_be_out_t out;
  uint64_t tin, tout;     /* usage reported */
  char *error;            /* owned: why on_event stopped the transfer */
} ch__ant_run_t;

static const char *const ch__ant_opts[] = {"base-url", "key-env", "max-tokens", "version", "max-reply", NULL};

static void ch__ant_dispose(ch_agent_t *a) {
  ch__ant_cfg_t *c = a->be_state;
  if (c == NULL) return;
  free(c->url);
  if (c->key_header) {
    memset(c->key_header, 0, strlen(c->key_header));
    free(c->key_header);
  }
  free(c->version_header);
  free(c);
  a->be_state = NULL;
  ch_agent_http_global_unref();
}

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
  if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0) {
    ch_buf_printf(err, "agent '%s': base-url '%s' must start with http:// or https://\n", a->name, base);
    return CH_ECONFIG;
  }
  for (const char *p = version; *p; p++)
    if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) {
      ch_buf_printf(err, "agent '%s': version '%s' is not a header value\n", a->name, version);
      return CH_ECONFIG;
    }
  const char *key = getenv(key_env);
  int has_key = key && key[0];
  if (!has_key && strcmp(base, CH__ANT_DEFAULT_BASE) == 0) {
    ch_buf_printf(err, "agent '%s': environment variable %s (the API key; key-env=) is not set\n", a->name, key_env);
    return CH_ECONFIG;
  }
  if (ch_agent_http_global_ref() != 0) {
    ch_buf_printf(err, "agent '%s': libcurl could not be initialised\n", a->name);
    return CH_ECONFIG;
  }
  ch__ant_cfg_t *c = ch_xcalloc(1, sizeof(*c));
  size_t n = strlen(base);
  while (n > 0 && base[n - 1] == '/') n--;
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append(&b, base, n);
  ch_buf_append_str(&b, "/v1/messages");
  c->url = ch_xstrndup(b.base, b.len);
  b.len = 0;
  ch_buf_printf(&b, "anthropic-version: %s", version);
  c->version_header = ch_xstrndup(b.base, b.len);
  b.len = 0;
  if (has_key) {
    ch_buf_printf(&b, "x-api-key: %s", key);
    c->key_header = ch_xstrndup(b.base, b.len);
    memset(b.base, 0, b.len);
  } else {
    ch_log_info("agent '%s': %s is not set: requests to %s go without x-api-key", a->name, key_env, base);
  }
  ch_buf_dispose(&b);
  c->max_tokens = max_tokens;
  c->max_reply = (size_t)max_reply;
  a->be_state = c;
  return 0;
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

static char *ch__ant_body(const ch__ant_cfg_t *c, const ch_agent_t *a, const char *request_json) {
  cJSON *req = cJSON_Parse(request_json);
  cJSON *out = cJSON_CreateObject();
  cJSON_AddStringToObject(out, "model", a->arg);
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

static void ch__ant_set_error(ch__ant_run_t *r, ch_buf_t *b) {
  free(r->error);
  r->error = ch_xstrdup(ch_buf_cstr(b));
  ch_buf_dispose(b);
}

static void ch__ant_usage(ch__ant_run_t *r, const cJSON *u) {
  const cJSON *in = cJSON_GetObjectItemCaseSensitive(u, "input_tokens");
  const cJSON *out = cJSON_GetObjectItemCaseSensitive(u, "output_tokens");
  if (cJSON_IsNumber(in) && in->valuedouble >= 0) r->tin = (uint64_t)in->valuedouble;
  if (cJSON_IsNumber(out) && out->valuedouble >= 0) r->tout = (uint64_t)out->valuedouble; /* cumulative */
}

static int ch__ant_text(ch__ant_run_t *r, const cJSON *text) {
  if (!cJSON_IsString(text) || text->valuestring[0] == '\0') return 0;
  if (ch_agent_be_emit(r->st, &r->out, text->valuestring, strlen(text->valuestring), 1, NULL) == 0) return 0;
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_printf(&b, "reply longer than %zu bytes", r->out.max);
  ch__ant_set_error(r, &b);
  return -1;
}

static int ch__ant_event(void *ud, const char *type, size_t tl, const char *data, size_t dl) {
  ch__ant_run_t *r = ud;
  cJSON *j = cJSON_ParseWithLength(data, dl);
  int rc = 0;
  if (!cJSON_IsObject(j)) {
    ch_buf_t b = CH_BUF_INIT;
    ch_buf_printf(&b, "malformed upstream event '%.*s': data is not a JSON object", (int)(tl > 64 ? 64 : tl), type);
    ch__ant_set_error(r, &b);
    rc = -1;
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
    if (cJSON_IsObject(u)) ch__ant_usage(r, u);
  } else if (strcmp(name, "message_delta") == 0) {
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "usage");
    if (cJSON_IsObject(u)) ch__ant_usage(r, u);
  } else if (strcmp(name, "message_stop") == 0) {
    rc = 1;
  } else if (strcmp(name, "error") == 0) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *et = cJSON_GetObjectItemCaseSensitive(e, "type");
    const cJSON *em = cJSON_GetObjectItemCaseSensitive(e, "message");
    ch_buf_t b = CH_BUF_INIT;
    ch_buf_append_str(&b, "upstream error");
    if (cJSON_IsString(et)) ch_buf_printf(&b, " (%.64s)", et->valuestring);
    if (cJSON_IsString(em)) ch_buf_printf(&b, ": %.500s", em->valuestring);
    ch__ant_set_error(r, &b);
    rc = -1;
  }
Exit:
  cJSON_Delete(j);
  return rc;
}

/* A 2xx answer that was not streamed: {"type":"message","content":[{"type":"text","text"}...],"usage"}. */
static int ch__ant_whole(ch__ant_run_t *r, const char *body, size_t len) {
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
    if (cJSON_IsObject(u)) ch__ant_usage(r, u);
  }
  cJSON_Delete(j);
  return rc;
}

static void ch__ant_done(void *ud, const ch_agent_http_result_t *res) {
  ch__ant_run_t *r = ud;
  ch_agent_stream_t *st = r->st;
  ch_buf_t why = CH_BUF_INIT;
  int failed = 1;
  if (res->stopped == 1) {
    failed = 0;
  } else if (res->stopped < 0) {
    ch_buf_append_str(&why, r->error ? r->error : "upstream stream refused");
  } else if (res->error) {
    ch_buf_append_str(&why, res->error);
  } else if (res->body) {
    if (ch__ant_whole(r, res->body, res->body_len) == 0) failed = 0;
    else if (r->error) ch_buf_append_str(&why, r->error);
    else ch_buf_printf(&why, "upstream answered without an event stream (content-type '%.100s')", res->content_type);
  } else {
    ch_buf_append_str(&why, "upstream closed the stream before message_stop");
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

static const ch_agent_http_cbs_t ch__ant_cbs = {.on_event = ch__ant_event, .on_done = ch__ant_done};

static int ch__ant_start(ch_agent_stream_t *st, uv_loop_t *loop) {
  const ch__ant_cfg_t *c = st->agent->be_state;
  char *body = ch__ant_body(c, st->agent, st->request_json);
  const char *headers[5];
  size_t nh = 0;
  headers[nh++] = "Content-Type: application/json";
  headers[nh++] = "Accept: text/event-stream";
  headers[nh++] = c->version_header;
  if (c->key_header) headers[nh++] = c->key_header;
  ch__ant_run_t *r = ch_xcalloc(1, sizeof(*r));
  r->st = st;
  ch_agent_be_out_init(&r->out, c->max_reply);
  ch_agent_http_req_t req = {.url = c->url, .body = body, .body_len = strlen(body), .headers = headers,
                             .nheaders = nh};
  int rc = ch_agent_http_start(loop, &req, &ch__ant_cbs, r, &r->t);
  cJSON_free(body);
  if (rc != 0) {
    ch_agent_be_out_dispose(&r->out);
    free(r);
    return rc;
  }
  st->be_data = r;
  return 0;
}

static void ch__ant_cancel(ch_agent_stream_t *st) {
  ch__ant_run_t *r = st->be_data;
  if (r == NULL) return;
  st->be_data = NULL;
  ch_agent_http_cancel(r->t);
  st->agent->tokens_in += r->tin;
  st->agent->tokens_out += r->tout;
  ch_agent_be_out_dispose(&r->out);
  free(r->error);
  free(r);
}

const ch_agent_backend_t ch_agent_backend_anthropic = {
    .kind = "anthropic",
    .init = ch__ant_init,
    .dispose = ch__ant_dispose,
    .start = ch__ant_start,
    .cancel = ch__ant_cancel,
};
