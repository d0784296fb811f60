/*
 * agentws.c — profile `agent-ws` (CLIENT-PROFILES.md): a phone app chatting
 * with one named agent per endpoint, /api/<agent>/ws for every configured
 * agent (404 for others).
 *
 *   -> chk_...                                  first message: the API key, plain text
 *   <- authenticated                            (or error:invalid_api_key, then close 1008)
 *   <- {"type":"ready","timestamp":ISO,"conversationId":C,"agent":A}
 *   -> {"content":"Hello"}
 *   <- {"type":"message","content":"<chunk>","timestamp":ISO}        per chunk of the reply
 *   <- {"type":"complete","content":"Response complete","timestamp":ISO}
 *   <- {"type":"error","content":"<what went wrong>","timestamp":ISO}  instead, on failure
 *
 * States: KEY (waiting for the key; closed 1008 after 10 s) -> CHECKING (the
 * key travels to the hub thread; frames arriving meanwhile are kept, up to
 * the session's queue size, and handled once it is accepted) -> READY; a
 * refused key -> CLOSING (close 1008 sent; nothing more is answered).
 *
 * The connection is a chat session (agentrun.h): its user is the key's user,
 * its conversation a new one of its own (owner: that user, default agent:
 * the path's), created right after "authenticated"; "ready" carries its id.
 * Prompts are answered one at a time in order, so replies never interleave.
 *
 * Connection counts for GET /api/health: authenticated connections per
 * configured agent, one atomic counter per agent index.
 */
#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "proto/agentrun.h"
#include "proto/proto.h"
#include "ws/session.h"

#define CH__AWS_KEY_TIMEOUT_MS 10000
#define CH__AWS_KEY_MAX 4096 /* longer first messages are no key */
#define CH__AWS_AGENTS 64    /* agents counted for /api/health */

static atomic_uint ch__aws_counts[CH__AWS_AGENTS];

typedef enum { CH__AWS_KEY = 0, CH__AWS_CHECKING, CH__AWS_READY, CH__AWS_CLOSING } ch__aws_state_t;

typedef struct {
  ch__proto_session_t s;   /* first: the registry hands back &s.cl */
  ch_ws_t *ws;             /* not owned; NULL before open */
  size_t agent_index;      /* in the agent registry */
  int state;               /* ch__aws_state_t */
  uint64_t opened_ms;      /* monotonic */
  int counted;             /* in ch__aws_counts */
  int gone;                /* closed while CHECKING: the auth callback frees it */
  char *early[CH__PROTO_SESSION_QUEUE]; /* owned: frames sent while the key was checked */
  size_t nearly;
} ch__aws_t;

/* ---- output ------------------------------------------------------------------------- */

/* {"type":type,"content":text,"timestamp":ISO} */
static void ch__aws_frame(ch__aws_t *a, const char *type, const char *text, size_t len) {
  if (a->ws == NULL) return;
  char ts[CH_ISO8601_LEN + 1];
  ch_clock_iso8601(ch_clock_wall_ms(), ts);
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_printf(&b, "{\"type\":\"%s\",\"content\":\"", type);
  ch_buf_append_json_str(&b, text, len);
  ch_buf_printf(&b, "\",\"timestamp\":\"%s\"}", ts);
  ch_ws_send_text(a->ws, b.base, b.len);
  ch_buf_dispose(&b);
}

static void ch__aws_error(ch__aws_t *a, const char *text) { ch__aws_frame(a, "error", text, strlen(text)); }

/* ---- the session's callbacks ----------------------------------------------------------- */

static void ch__aws_on_ready(ch__proto_session_t *s, int status, const char *error) {
  ch__aws_t *a = (ch__aws_t *)s;
  if (a->ws == NULL) return;
  if (status != 0) {
    ch__aws_error(a, error);
    ch_ws_close(a->ws, CH_WS_CLOSE_INTERNAL, "no conversation");
    return;
  }
  char ts[CH_ISO8601_LEN + 1];
  ch_clock_iso8601(ch_clock_wall_ms(), ts);
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_printf(&b, "{\"type\":\"ready\",\"timestamp\":\"%s\",\"conversationId\":", ts);
  ch_buf_append_json_qstr(&b, s->conv);
  ch_buf_append_str(&b, ",\"agent\":");
  ch_buf_append_json_qstr(&b, s->agent);
  ch_buf_append_byte(&b, '}');
  ch_ws_send_text(a->ws, b.base, b.len);
  ch_buf_dispose(&b);
}

static void ch__aws_on_chunk(ch__proto_session_t *s, const char *delta, size_t len) {
  ch__aws_frame((ch__aws_t *)s, "message", delta, len);
}

static void ch__aws_on_end(ch__proto_session_t *s, const char *reply, size_t len, const char *err) {
  (void)reply;
  (void)len;
  if (err) ch__aws_error((ch__aws_t *)s, err);
  else ch__aws_frame((ch__aws_t *)s, "complete", "Response complete", 17);
}

static const ch__proto_session_ops_t ch__aws_session_ops = {ch__aws_on_ready, ch__aws_on_chunk, ch__aws_on_end};

/* ---- requests ---------------------------------------------------------------------------- */

/* {"content":"..."} once authenticated. */
static void ch__aws_prompt(ch__aws_t *a, const char *data, size_t len) {
  cJSON *m = cJSON_ParseWithLength(data, len);
  cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
  if (!cJSON_IsObject(m) || !cJSON_IsString(content)) {
    ch__aws_error(a, "expected a JSON object {\"content\":\"<your message>\"}");
  } else if (content->valuestring[0] == '\0') {
    ch__aws_error(a, "\"content\" is empty");
  } else {
    int64_t retry = 0;
    int rc = ch__proto_session_prompt(&a->s, content->valuestring, NULL, &retry);
    if (rc == CH_ELIMIT) {
      char msg[96];
      ch__proto_rate_message(msg, sizeof(msg), retry);
      ch__aws_error(a, msg);
    } else if (rc != 0) {
      ch__aws_error(a, "too many messages waiting: wait for the replies");
    }
  }
  cJSON_Delete(m);
}

static void ch__aws_free(ch__aws_t *a) {
  for (size_t i = 0; i < a->nearly; i++) free(a->early[i]);
  free(a);
}

static void ch__aws_auth_cb(void *ud, int status, const ch_identity_t *id, const char *reason) {
  ch__aws_t *a = ud;
  if (a->gone) {
    ch__aws_free(a);
    return;
  }
  if (status == 0 && !(id->scopes & (CH_SCOPE_WRITE | CH_SCOPE_ADMIN))) {
    status = CH_EAUTH;
    reason = "this key may not write";
  }
  if (status != 0) {
    ch_log_info("agent-ws conn %llu: refused: %s", (unsigned long long)a->s.cl.id, reason);
    a->state = CH__AWS_CLOSING;
    ch_ws_send_text(a->ws, "error:invalid_api_key", 21);
    ch_ws_close(a->ws, CH_WS_CLOSE_POLICY, "invalid api key");
    return;
  }
  const ch_agent_t *ag = ch_agent_at(a->agent_index);
  a->state = CH__AWS_READY;
  ch__proto_session_auth(&a->s, id, ag->name);
  if (a->agent_index < CH__AWS_AGENTS) {
    atomic_fetch_add(&ch__aws_counts[a->agent_index], 1);
    a->counted = 1;
  }
  ch_log_info("agent-ws conn %llu: %s chats with %s", (unsigned long long)a->s.cl.id, a->s.cl.user_id, ag->name);
  ch_ws_send_text(a->ws, "authenticated", 13);
  ch__proto_session_open(&a->s);
  for (size_t i = 0; i < a->nearly; i++) {
    ch__aws_prompt(a, a->early[i], strlen(a->early[i]));
    free(a->early[i]);
  }
  a->nearly = 0;
}

static void ch__aws_message(ch_ws_t *ws, int opcode, const char *data, size_t len) {
  (void)opcode;
  ch__aws_t *a = ws->udata;
  switch (a->state) {
  case CH__AWS_KEY: {
    /* The key, as plain text; blanks around it (a trailing newline) are no part of it. */
    while (len > 0 && (data[0] == ' ' || data[0] == '\t' || data[0] == '\r' || data[0] == '\n')) data++, len--;
    while (len > 0 && (data[len - 1] == ' ' || data[len - 1] == '\t' || data[len - 1] == '\r' || data[len - 1] == '\n'))
      len--;
    if (len == 0 || len > CH__AWS_KEY_MAX || memchr(data, '\0', len)) {
      a->state = CH__AWS_CLOSING;
      ch_ws_send_text(ws, "error:invalid_api_key", 21);
      ch_ws_close(ws, CH_WS_CLOSE_POLICY, "invalid api key");
      return;
    }
    char *key = ch_xstrndup(data, len);
    a->state = CH__AWS_CHECKING;
    ch_proto_authenticate(a->s.cl.loop, key, ch__aws_auth_cb, a);
    free(key);
    return;
  }
  case CH__AWS_CHECKING:
    if (a->nearly == CH__PROTO_SESSION_QUEUE) {
      ch__aws_error(a, "too many messages before authentication");
      return;
    }
    a->early[a->nearly++] = ch_xstrndup(data, len);
    return;
  case CH__AWS_READY:
    ch__aws_prompt(a, data, len);
    return;
  default: /* closing: nothing more is answered */
    return;
  }
}

/* ---- life cycle ---------------------------------------------------------------------------- */

static void ch__aws_open(ch_ws_t *ws) {
  ch__aws_t *a = ws->udata;
  a->ws = ws;
  a->s.cl.transport = ws;
  a->opened_ms = ch_clock_mono_ms();
}

static void ch__aws_close(ch_ws_t *ws) {
  ch__aws_t *a = ws->udata;
  if (a == NULL) return;
  a->ws = NULL;
  if (a->counted) atomic_fetch_sub(&ch__aws_counts[a->agent_index], 1);
  a->counted = 0;
  ch__proto_session_dispose(&a->s);
  if (a->state == CH__AWS_CHECKING) {
    a->gone = 1; /* the key check holds a pointer: its callback frees */
    return;
  }
  ch__aws_free(a);
}

static void ch__aws_sweep(ch_ws_t *ws, uint64_t now) {
  ch__aws_t *a = ws->udata;
  if (a->state == CH__AWS_KEY && now - a->opened_ms >= CH__AWS_KEY_TIMEOUT_MS)
    ch_ws_close(ws, CH_WS_CLOSE_POLICY, "no API key within 10 s");
}

static const ch_ws_handler_t ch__aws_ws = {
    .name = "agent-ws",
    .on_open = ch__aws_open,
    .on_message = ch__aws_message,
    .on_close = ch__aws_close,
    .on_sweep = ch__aws_sweep,
};

static void ch__aws_upgrade(ch_http_ctx_t *x) {
  const char *name = NULL;
  for (size_t i = 0; i < x->match.nparams; i++)
    if (strcmp(x->match.params[i].name, "agent") == 0) name = x->match.params[i].value;
  size_t idx = 0, n = ch_agents_count();
  while (idx < n && (name == NULL || strcmp(ch_agent_at(idx)->name, name) != 0)) idx++;
  if (idx == n) {
    ch_http_reply_error(x, 404, "no such agent");
    return;
  }
  if (!x->req->upgrade) {
    ch_http_reply_error(x, 426, "WebSocket upgrade required");
    return;
  }
  ch__aws_t *a = ch_xcalloc(1, sizeof(*a));
  a->agent_index = idx;
  ch__proto_session_init(&a->s, x->c, &ch__aws_session_ops, "agent-ws", ch_http_req_query_param(x->req, "source"));
  ch_ws_accept(x, &ch__aws_ws, a); /* on a bad handshake on_close frees a */
}

static const ch_http_route_t ch__aws_route = {"GET", "/api/:agent/ws", ch__aws_upgrade, 0};

void ch__proto_routes_agentws(ch_http_router_t *r) {
  ch_http_router_add(r, ch__aws_route.method, ch__aws_route.pattern, (void *)&ch__aws_route, NULL);
}

void ch_proto_agentws_connections_json(ch_buf_t *out) {
  ch_buf_append_byte(out, '{');
  for (size_t i = 0; i < ch_agents_count(); i++) {
    if (i) ch_buf_append_byte(out, ',');
    ch_buf_append_json_qstr(out, ch_agent_at(i)->name);
    ch_buf_printf(out, ":%u", i < CH__AWS_AGENTS ? atomic_load(&ch__aws_counts[i]) : 0u);
  }
  ch_buf_append_byte(out, '}');
}
