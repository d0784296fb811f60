/*
 * command.c — profile `command` (CLIENT-PROFILES.md): a mobile assistant
 * sending text or voice commands on /ws/command, answered by one agent.
 *
 *   connect /ws/command?token=T   (or Authorization: Bearer T; none or refused: 401, no write scope: 403)
 *   -> {"type":"command","payload":{"commandType":"text_command"|"voice_command","message":"...",
 *       "userId":"u1","userTimezone":"Europe/Paris"},"timestamp":1731900000000}
 *   <- {"type":"response","status":"processing","data":{"message":"Processing your command"},"timestamp":<ms>}
 *   <- {"type":"response","status":"success","data":{"message":"<the whole reply>","requiresAuth":false,
 *       "authUrl":null,"actions":[],"metadata":{}},"timestamp":<ms>}
 *      or {"type":"response","status":"error","data":{"message":"<why>"},"timestamp":<ms>}
 *   -> {"type":"ping"}   <- {"type":"pong"}
 *   <- {"type":"error","error":"<what was wrong>","timestamp":<ms>}   bad JSON, unknown type, foreign
 *      userId, bad payload, rate limit; the connection stays open
 *
 * Timestamps are epoch milliseconds in this profile. voice_command carries
 * the transcribed text and is handled like text_command.
 *
 * The connection is a chat session (agentrun.h) answered by the agent the
 * configuration names (`command-agent`), else the first configured agent;
 * with none, every command is answered by an error response. Its
 * conversation is created at the first command (a reconnecting phone opens
 * many connections; most send nothing), owned by the token's user. The
 * command is stored as a user message with the command's fields in
 * "context" ({"commandType","userTimezone","clientTimestamp"}); commands are
 * answered one at a time, in order.
 */
#include <cjson/cJSON.h>
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

typedef struct {
  ch__proto_session_t s; /* first: the registry hands back &s.cl */
  ch_ws_t *ws;           /* not owned; NULL before open and after close */
  int has_agent;         /* an agent serves this profile */
} ch__cmd_t;

/* ---- output ----------------------------------------------------------------------- */

static void ch__cmd_send(ch__cmd_t *c, ch_buf_t *b) {
  if (c->ws) ch_ws_send_text(c->ws, b->base, b->len);
}

static void ch__cmd_error(ch__cmd_t *c, const char *msg) {
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "{\"type\":\"error\",\"error\":");
  ch_buf_append_json_qstr(&b, msg);
  ch_buf_printf(&b, ",\"timestamp\":%lld}", (long long)ch_clock_wall_ms());
  ch__cmd_send(c, &b);
  ch_buf_dispose(&b);
}

/* {"type":"response","status":status,"data":{"message":text[,the four success fields]},"timestamp":ms} */
static void ch__cmd_response(ch__cmd_t *c, const char *status, const char *text, size_t len) {
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_printf(&b, "{\"type\":\"response\",\"status\":\"%s\",\"data\":{\"message\":\"", status);
  ch_buf_append_json_str(&b, text, len);
  ch_buf_append_byte(&b, '"');
  if (strcmp(status, "success") == 0)
    ch_buf_append_str(&b, ",\"requiresAuth\":false,\"authUrl\":null,\"actions\":[],\"metadata\":{}");
  ch_buf_printf(&b, "},\"timestamp\":%lld}", (long long)ch_clock_wall_ms());
  ch__cmd_send(c, &b);
  ch_buf_dispose(&b);
}

/* ---- the session's callbacks ----------------------------------------------------------- */

static void ch__cmd_on_chunk(ch__proto_session_t *s, const char *delta, size_t len) {
  (void)s;
  (void)delta;
  (void)len; /* the response carries the whole reply */
}

static void ch__cmd_on_end(ch__proto_session_t *s, const char *reply, size_t len, const char *err) {
  ch__cmd_t *c = (ch__cmd_t *)s;
  if (err) ch__cmd_response(c, "error", err, strlen(err));
  else ch__cmd_response(c, "success", reply, len);
}

static const ch__proto_session_ops_t ch__cmd_session_ops = {NULL, ch__cmd_on_chunk, ch__cmd_on_end};

/* ---- requests ---------------------------------------------------------------------------- */

static void ch__cmd_command(ch__cmd_t *c, cJSON *m) {
  cJSON *p = cJSON_GetObjectItemCaseSensitive(m, "payload");
  if (!cJSON_IsObject(p)) {
    ch__cmd_error(c, "a command needs a \"payload\" object");
    return;
  }
  const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(p, "commandType"));
  const char *text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(p, "message"));
  cJSON *user = cJSON_GetObjectItemCaseSensitive(p, "userId");
  cJSON *tz = cJSON_GetObjectItemCaseSensitive(p, "userTimezone");
  if (type == NULL || (strcmp(type, "text_command") != 0 && strcmp(type, "voice_command") != 0)) {
    ch__cmd_error(c, "payload.commandType must be text_command or voice_command");
    return;
  }
  if (text == NULL || text[0] == '\0') {
    ch__cmd_error(c, "payload.message must be a non-empty string");
    return;
  }
  if (user && !cJSON_IsNull(user) && !(cJSON_IsString(user) && strcmp(user->valuestring, c->s.cl.user_id) == 0)) {
    ch__cmd_error(c, "payload.userId is not the authenticated user");
    return;
  }
  if (tz && !cJSON_IsNull(tz) && !cJSON_IsString(tz)) {
    ch__cmd_error(c, "payload.userTimezone must be a string");
    return;
  }
  if (!c->has_agent) {
    static const char none[] = "no agent is configured for commands";
    ch__cmd_response(c, "error", none, sizeof(none) - 1);
    return;
  }
  cJSON *ctx = cJSON_CreateObject();
  cJSON_AddStringToObject(ctx, "commandType", type);
  if (cJSON_IsString(tz)) cJSON_AddStringToObject(ctx, "userTimezone", tz->valuestring);
  cJSON *ts = cJSON_GetObjectItemCaseSensitive(m, "timestamp");
  if (cJSON_IsNumber(ts)) cJSON_AddNumberToObject(ctx, "clientTimestamp", ts->valuedouble);
  char *ctx_json = cJSON_PrintUnformatted(ctx);
  cJSON_Delete(ctx);
  int64_t retry = 0;
  int rc = ch__proto_session_prompt(&c->s, text, ctx_json, &retry);
  cJSON_free(ctx_json);
  if (rc == CH_ELIMIT) {
    char msg[96];
    ch__proto_rate_message(msg, sizeof(msg), retry);
    ch__cmd_error(c, msg);
  } else if (rc != 0) {
    ch__cmd_error(c, "too many commands waiting: wait for the responses");
  } else {
    static const char busy[] = "Processing your command";
    ch__cmd_response(c, "processing", busy, sizeof(busy) - 1);
  }
}

static void ch__cmd_message(ch_ws_t *ws, int opcode, const char *data, size_t len) {
  (void)opcode;
  ch__cmd_t *c = ws->udata;
  cJSON *m = cJSON_ParseWithLength(data, len);
  const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "type"));
  if (!cJSON_IsObject(m)) {
    ch__cmd_error(c, "Invalid JSON: expected an object");
  } else if (type == NULL) {
    ch__cmd_error(c, "a message needs a string \"type\"");
  } else if (strcmp(type, "ping") == 0) {
    ch_ws_send_text(ws, "{\"type\":\"pong\"}", 15);
  } else if (strcmp(type, "command") == 0) {
    ch__cmd_command(c, m);
  } else {
    char msg[96];
    snprintf(msg, sizeof(msg), "Unknown message type '%.40s'", type);
    ch__cmd_error(c, msg);
  }
  cJSON_Delete(m);
}

/* ---- life cycle ------------------------------------------------------------------------------ */

static void ch__cmd_open(ch_ws_t *ws) {
  ch__cmd_t *c = ws->udata;
  c->ws = ws;
  c->s.cl.transport = ws;
}

static void ch__cmd_close(ch_ws_t *ws) {
  ch__cmd_t *c = ws->udata;
  if (c == NULL) return;
  c->ws = NULL;
  ch__proto_session_dispose(&c->s);
  free(c);
}

static const ch_ws_handler_t ch__cmd_ws = {
    .name = "command",
    .on_open = ch__cmd_open,
    .on_message = ch__cmd_message,
    .on_close = ch__cmd_close,
};

/* The agent of this profile: command-agent, else the first configured; NULL: none. */
static const char *ch__cmd_agent(void) {
  const char *want = ch__proto_agent_settings.command_agent;
  if (want[0]) return ch_agent_find(want) ? want : NULL;
  return ch_agents_count() ? ch_agent_at(0)->name : NULL;
}

static void ch__cmd_auth_cb(void *ud, int status, const ch_identity_t *id, const char *reason) {
  ch_http_ctx_t *x = ud;
  if (x->c == NULL) {
    ch_http_reply_error(x, 401, reason); /* the client went away: frees x */
    return;
  }
  if (status != 0) {
    ch_http_reply_error(x, status == CH_EAUTH ? 401 : 500, reason);
    return;
  }
  if (!(id->scopes & (CH_SCOPE_WRITE | CH_SCOPE_ADMIN))) {
    ch_http_reply_error(x, 403, "this credential may not write");
    return;
  }
  const char *agent = ch__cmd_agent();
  ch__cmd_t *c = ch_xcalloc(1, sizeof(*c));
  ch__proto_session_init(&c->s, x->c, &ch__cmd_session_ops, "command", ch_http_req_query_param(x->req, "source"));
  ch__proto_session_auth(&c->s, id, agent ? agent : "");
  c->has_agent = agent != NULL;
  ch_ws_accept(x, &ch__cmd_ws, c); /* on a bad handshake on_close frees c */
}

static void ch__cmd_upgrade(ch_http_ctx_t *x) {
  if (!x->req->upgrade) {
    ch_http_reply_error(x, 426, "WebSocket upgrade required");
    return;
  }
  const char *cred = NULL;
  if (ch_auth_cred_from_request(x->req, &cred) != 0) {
    ch_http_reply_error(x, 401, "missing credential: use ?token= or Authorization: Bearer");
    return;
  }
  ch_proto_authenticate(x->c->loop, cred, ch__cmd_auth_cb, x);
}

static const ch_http_route_t ch__cmd_route = {"GET", "/ws/command", ch__cmd_upgrade, 0};

void ch__proto_routes_command(ch_http_router_t *r) {
  ch_http_router_add(r, ch__cmd_route.method, ch__cmd_route.pattern, (void *)&ch__cmd_route, NULL);
}
