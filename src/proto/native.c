/*
 * native.c — the native protocol on /ws: JSON documents in text (or binary)
 * frames. Profile `unified` of CLIENT-PROFILES.md is a subset of it: a unified
 * client uses join/leave/message/typing without request ids and gets exactly
 * the frames it expects; native clients add request ids (acks, errors that
 * echo them), `since`/`epoch` resume, custom events and in-band auth.
 *
 *   connect ws://HOST/ws?source=S[&token=T]   (or Authorization: Bearer T,
 *                                              or a first {"type":"auth","token":T} within 10 s)
 *   <- {"type":"presence","clientId":"<id>","source":S,"connected":true}   welcome
 *   -> {"type":"join","conversationId":C[,"since":N,"epoch":E,"limit":L,"id":R]}
 *   <- {"type":"sync","conversationId":C,"data":[...],"lastSeq":M,"epoch":E,"presence":[...]}
 *   -> {"type":"message","conversationId":C,"message":{...}[,"id":R]}
 *   <- {"type":"ack","id":R,"seq":N,...}  (with an id)   and to the room: {"type":"message",...}
 *
 * docs/PROTOCOL.md documents every message.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "hub/client.h"
#include "hub/userchan.h"
#include "proto/agentrun.h"
#include "proto/proto.h"
#include "ws/session.h"

#define CH__AUTH_TIMEOUT_MS 10000

typedef struct {
  ch_client_t cl;
  ch_ws_t *ws;
  uint64_t opened_ms;
  int auth_pending; /* an in-band auth is being checked */
  int gone;         /* the connection closed; free when the pending auth returns */
  ch_identity_t who; /* the credential (for the agent rate limit: per API key, else per user) */
} ch__native_t;

/* ---- rendering ------------------------------------------------------------ */

static void ch__native_send_json(ch_client_t *cl, const char *json, size_t len) {
  ch__native_t *n = (ch__native_t *)cl;
  ch_ws_send_text(n->ws, json, len);
}

static void ch__native_deliver(ch_client_t *cl, ch_csub_t *sub, ch_bcast_t *b) {
  ch__native_t *n = (ch__native_t *)cl;
  ch_ws_send_frame(n->ws, ch_bcast_frame(b, CH_FMT_NATIVE));
}

static void ch__native_joined(ch_client_t *cl, ch_csub_t *sub, const char *req_id, const char *json, size_t len) {
  ch__native_send_json(cl, json, len);
}

static const ch_client_ops_t ch__native_ops = {ch__native_send_json, ch__native_deliver, ch__native_joined};

static void ch__native_welcome(ch__native_t *n) {
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_printf(&b, "{\"type\":\"presence\",\"clientId\":\"%llu\",\"source\":\"", (unsigned long long)n->cl.id);
  ch_buf_append_json_str(&b, n->cl.source, strlen(n->cl.source));
  ch_buf_append_str(&b, "\",\"userId\":\"");
  ch_buf_append_json_str(&b, n->cl.user_id, strlen(n->cl.user_id));
  ch_buf_append_str(&b, "\",\"deviceId\":\"");
  ch_buf_append_json_str(&b, n->cl.device_id, strlen(n->cl.device_id));
  ch_buf_append_str(&b, "\",\"connected\":true}");
  ch_ws_send_text(n->ws, b.base, b.len);
  ch_buf_dispose(&b);
}

static void ch__native_set_identity(ch__native_t *n, const ch_identity_t *id) {
  snprintf(n->cl.user_id, sizeof(n->cl.user_id), "%s", id->user_id);
  snprintf(n->cl.device_id, sizeof(n->cl.device_id), "%s", id->device_id[0] ? id->device_id : n->cl.source);
  n->cl.scopes = id->scopes;
  n->cl.authed = 1;
  n->who = *id;
}

/* ---- requests ------------------------------------------------------------- */

static const char *ch__str(cJSON *o, const char *k) {
  cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int ch__conv_id_ok(const char *c) {
  size_t n = c ? strlen(c) : 0;
  return n > 0 && n <= 128;
}

static void ch__inband_auth_cb(void *ud, int status, const ch_identity_t *id, const char *reason);

/* ---- pin: a pairing PIN for profile `relay` (a new device of this user) ------- */

typedef struct {
  ch_hub_req_t base;
  uint64_t client_id;
  char user_id[129];
  char *req_id;                  /* owned, or NULL */
  char pin[CH_AUTH_PIN_LEN + 1]; /* out */
  int64_t expires_ms;            /* out */
} ch__pin_req_t;

static void ch__pin_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__pin_req_t *q = (ch__pin_req_t *)r;
  int64_t now = ch_clock_wall_ms();
  q->expires_ms = now + CH_AUTH_PIN_TTL_MS;
  r->status = ch_auth_pin_issue(h->store, &ch_proto_settings.secret, q->user_id, CH_AUTH_PIN_TTL_MS, now, q->pin);
}

static void ch__pin_done(ch_hub_req_t *r) {
  ch__pin_req_t *q = (ch__pin_req_t *)r;
  ch_client_t *cl = ch_client_find(r->loop, q->client_id);
  if (cl == NULL) return;
  if (r->status != 0) {
    ch_client_error(cl, q->req_id, "store_error", "could not issue a PIN");
    return;
  }
  char exp[CH_ISO8601_LEN + 1];
  ch_clock_iso8601(q->expires_ms, exp);
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "{\"type\":\"pin\"");
  if (q->req_id) {
    ch_buf_append_str(&b, ",\"id\":");
    ch_buf_append_json_qstr(&b, q->req_id);
  }
  ch_buf_printf(&b, ",\"pin\":\"%s\",\"expiresAt\":\"%s\"}", q->pin, exp);
  cl->ops->send_json(cl, b.base, b.len);
  ch_buf_dispose(&b);
}

static void ch__pin_free(ch_hub_req_t *r) {
  ch__pin_req_t *q = (ch__pin_req_t *)r;
  free(q->req_id);
  free(q);
}

static void ch__native_pin(ch_client_t *cl, const char *rid) {
  if (!(cl->scopes & (CH_SCOPE_WRITE | CH_SCOPE_ADMIN))) {
    ch_client_error(cl, rid, "forbidden", "a PIN pairs a device that may write: this credential may not");
    return;
  }
  ch__pin_req_t *q = ch_xcalloc(1, sizeof(*q));
  q->base.run = ch__pin_run;
  q->base.done = ch__pin_done;
  q->base.free_cb = ch__pin_free;
  q->base.loop = cl->loop;
  q->client_id = cl->id;
  snprintf(q->user_id, sizeof(q->user_id), "%s", cl->user_id);
  q->req_id = rid ? ch_xstrdup(rid) : NULL;
  ch_hub_submit(ch_hub, &q->base);
}

static void ch__native_handle(ch__native_t *n, cJSON *m) {
  ch_client_t *cl = &n->cl;
  const char *type = ch__str(m, "type");
  const char *rid = ch__str(m, "id");
  if (type == NULL) {
    ch_client_error(cl, rid, "invalid", "missing \"type\"");
    return;
  }
  if (!cl->authed) {
    if (strcmp(type, "auth") != 0) {
      ch_client_error(cl, rid, "unauthenticated", "authenticate first: {\"type\":\"auth\",\"token\":...}");
      return;
    }
    const char *tok = ch__str(m, "token");
    if (tok == NULL || n->auth_pending) {
      ch_client_error(cl, rid, "invalid", tok ? "authentication already in progress" : "auth needs a \"token\"");
      return;
    }
    n->auth_pending = 1;
    ch_proto_authenticate(cl->loop, tok, ch__inband_auth_cb, n);
    return;
  }
  const char *conv = ch__str(m, "conversationId");
  if (strcmp(type, "ping") == 0) {
    ch_buf_t b = CH_BUF_INIT;
    ch_buf_append_str(&b, "{\"type\":\"pong\"");
    if (rid) {
      ch_buf_append_str(&b, ",\"id\":\"");
      ch_buf_append_json_str(&b, rid, strlen(rid));
      ch_buf_append_byte(&b, '"');
    }
    ch_buf_append_byte(&b, '}');
    ch__native_send_json(cl, b.base, b.len);
    ch_buf_dispose(&b);
    return;
  }
  if (strcmp(type, "auth") == 0) {
    ch_client_error(cl, rid, "invalid", "already authenticated");
    return;
  }
  if (strcmp(type, "pin") == 0) {
    ch__native_pin(cl, rid);
    return;
  }
  if (strcmp(type, "subscribe") == 0) {
    const char *channel = ch__str(m, "channel");
    if (channel == NULL || strcmp(channel, "user") != 0) {
      ch_client_error(cl, rid, "invalid", "subscribe needs \"channel\":\"user\"");
      return;
    }
    int r = ch_userchan_start(cl, &ch_userchan_native_ops, rid);
    if (r == CH_EEXIST) ch_client_error(cl, rid, "invalid", "already subscribed to the user channel");
    else if (r != 0) ch_client_error(cl, rid, "invalid", "this credential names no user");
    return;
  }
  if (!ch__conv_id_ok(conv)) {
    ch_client_error(cl, rid, "invalid", "\"conversationId\" must be a string of 1..128 bytes");
    return;
  }
  if (strcmp(type, "join") == 0) {
    if (!(cl->scopes & (CH_SCOPE_READ | CH_SCOPE_ADMIN))) {
      ch_client_error(cl, rid, "forbidden", "this credential may not read");
      return;
    }
    cJSON *since = cJSON_GetObjectItemCaseSensitive(m, "since");
    cJSON *limit = cJSON_GetObjectItemCaseSensitive(m, "limit");
    /* 2^53: beyond it a double is no exact integer, and the casts below would be undefined. */
    if ((since && !(cJSON_IsNumber(since) && since->valuedouble >= 0 && since->valuedouble <= 9007199254740992.0)) ||
        (limit && !(cJSON_IsNumber(limit) && limit->valuedouble >= 0 && limit->valuedouble <= 9007199254740992.0))) {
      ch_client_error(cl, rid, "invalid", "\"since\" and \"limit\" must be numbers in 0..2^53");
      return;
    }
    ch_client_join(cl, conv, since != NULL, since ? (uint64_t)since->valuedouble : 0,
                   limit ? (size_t)limit->valuedouble : 0, ch__str(m, "epoch"), rid);
  } else if (strcmp(type, "leave") == 0) {
    ch_client_leave(cl, conv);
  } else if (strcmp(type, "presence") == 0) {
    ch_client_presence(cl, conv, cJSON_GetObjectItemCaseSensitive(m, "limit"), rid);
  } else if (strcmp(type, "message") == 0) {
    cJSON *msg = cJSON_GetObjectItemCaseSensitive(m, "message");
    if (!cJSON_IsObject(msg)) {
      ch_client_error(cl, rid, "invalid", "\"message\" must be an object");
      return;
    }
    const char *agent = ch__str(m, "agent");
    int64_t retry = 0;
    if (agent && ch_agent_find(agent) && ch__proto_rate_take(&n->who, &retry) != 0) {
      char why[96];
      ch__proto_rate_message(why, sizeof(why), retry);
      ch_client_error(cl, rid, "rate_limited", why);
      return;
    }
    ch_client_send_message(cl, conv, cJSON_DetachItemViaPointer(m, msg), rid, agent);
  } else if (strcmp(type, "cancel") == 0) {
    const char *sid = ch__str(m, "streamId");
    if (sid == NULL) {
      ch_client_error(cl, rid, "invalid", "cancel needs a \"streamId\"");
      return;
    }
    ch_client_cancel_stream(cl, conv, sid, rid);
  } else if (strcmp(type, "typing") == 0) {
    cJSON *t = cJSON_GetObjectItemCaseSensitive(m, "typing");
    if (ch_client_typing(cl, conv, !cJSON_IsFalse(t)) != 0)
      ch_client_error(cl, rid, "not_joined", "join the conversation first");
  } else if (strcmp(type, "event") == 0) {
    const char *ev = ch__str(m, "event");
    if (ev == NULL) {
      ch_client_error(cl, rid, "invalid", "an event needs an \"event\" name");
      return;
    }
    ch_buf_t b = CH_BUF_INIT;
    char ts[CH_ISO8601_LEN + 1];
    ch_clock_iso8601(ch_clock_wall_ms(), ts);
    ch_buf_append_str(&b, "{\"type\":\"event\",\"conversationId\":");
    ch_buf_append_json_qstr(&b, conv);
    ch_buf_printf(&b, ",\"clientId\":\"%llu\",\"source\":", (unsigned long long)cl->id);
    ch_buf_append_json_qstr(&b, cl->source);
    ch_buf_append_str(&b, ",\"userId\":");
    ch_buf_append_json_qstr(&b, cl->user_id);
    ch_buf_append_str(&b, ",\"event\":");
    ch_buf_append_json_qstr(&b, ev);
    ch_buf_append_str(&b, ",\"payload\":");
    cJSON *p = cJSON_GetObjectItemCaseSensitive(m, "payload");
    char *pt = p ? cJSON_PrintUnformatted(p) : NULL;
    ch_buf_append_str(&b, pt ? pt : "null");
    cJSON_free(pt);
    ch_buf_printf(&b, ",\"timestamp\":\"%s\"}", ts);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "store"))) {
      /* Stored: it becomes a conversation event with the next seq, acked like a message. */
      ch_client_store_event(cl, conv, ev, b.base, b.len, rid);
    } else if (ch_client_publish_ephemeral(cl, conv, "event", b.base, b.len) != 0) {
      ch_client_error(cl, rid, "not_joined", "join the conversation first");
    }
    ch_buf_dispose(&b);
  } else {
    char msg[96];
    snprintf(msg, sizeof(msg), "unknown message type '%.40s'", type);
    ch_client_error(cl, rid, "unknown_type", msg);
  }
}

static void ch__native_message(ch_ws_t *ws, int opcode, const char *data, size_t len) {
  ch__native_t *n = ws->udata;
  cJSON *m = cJSON_ParseWithLength(data, len);
  if (!cJSON_IsObject(m)) {
    ch_client_error(&n->cl, NULL, "invalid_json", "expected a JSON object");
  } else {
    ch__native_handle(n, m);
  }
  cJSON_Delete(m);
}

/* ---- life cycle ----------------------------------------------------------- */

static void ch__native_free(ch__native_t *n) {
  ch_client_dispose(&n->cl);
  free(n);
}

static void ch__inband_auth_cb(void *ud, int status, const ch_identity_t *id, const char *reason) {
  ch__native_t *n = ud;
  n->auth_pending = 0;
  if (n->gone) {
    ch__native_free(n);
    return;
  }
  if (status != 0) {
    ch_client_error(&n->cl, NULL, "unauthenticated", reason);
    ch_ws_close(n->ws, CH_WS_CLOSE_POLICY, "authentication failed");
    return;
  }
  ch__native_set_identity(n, id);
  ch__native_welcome(n);
}

static void ch__native_open(ch_ws_t *ws) {
  ch__native_t *n = ws->udata;
  n->ws = ws;
  n->cl.transport = ws;
  n->opened_ms = ws->c->loop->now_ms;
  if (n->cl.authed) ch__native_welcome(n);
}

static void ch__native_close(ch_ws_t *ws) {
  ch__native_t *n = ws->udata;
  if (n == NULL) return;
  if (n->auth_pending) {
    n->gone = 1; /* the auth callback frees it */
    ch_client_dispose(&n->cl);
    return;
  }
  ch__native_free(n);
}

static void ch__native_sweep(ch_ws_t *ws, uint64_t now) {
  ch__native_t *n = ws->udata;
  ch_client_sweep(&n->cl, now);
  if (!n->cl.authed && !n->auth_pending && now - n->opened_ms >= CH__AUTH_TIMEOUT_MS)
    ch_ws_close(ws, CH_WS_CLOSE_POLICY, "authentication timeout");
}

static const ch_ws_handler_t ch__native_ws = {
    .name = "native",
    .on_open = ch__native_open,
    .on_message = ch__native_message,
    .on_close = ch__native_close,
    .on_sweep = ch__native_sweep,
};

/* ---- the upgrade ----------------------------------------------------------- */

static ch__native_t *ch__native_new(ch_http_ctx_t *x) {
  ch__native_t *n = ch_xcalloc(1, sizeof(*n));
  ch_client_init(&n->cl, x->c, &ch__native_ops, NULL);
  const char *src = ch_http_req_query_param(x->req, "source");
  snprintf(n->cl.source, sizeof(n->cl.source), "%s", src && *src ? src : "unknown");
  return n;
}

static void ch__upgrade_auth_cb(void *ud, int status, const ch_identity_t *id, const char *reason) {
  ch_http_ctx_t *x = ud;
  if (x->c == NULL) { /* the client went away while we checked */
    ch_http_reply_error(x, 401, reason);
    return;
  }
  if (status != 0) {
    ch_http_reply_error(x, status == CH_EAUTH ? 401 : 500, reason);
    return;
  }
  ch__native_t *n = ch__native_new(x);
  ch__native_set_identity(n, id);
  ch_ws_accept(x, &ch__native_ws, n);
}

static void ch__native_upgrade(ch_http_ctx_t *x) {
  if (!x->req->upgrade) {
    ch_http_reply_error(x, 426, "WebSocket upgrade required");
    return;
  }
  const char *cred = NULL;
  if (ch_auth_cred_from_request(x->req, &cred) == 0) {
    ch_proto_authenticate(x->c->loop, cred, ch__upgrade_auth_cb, x);
    return;
  }
  /* No credential yet: it must come in-band within 10 s. */
  ch_ws_accept(x, &ch__native_ws, ch__native_new(x));
}

static const ch_http_route_t ch__native_routes[] = {
    {"GET", "/ws", ch__native_upgrade, 0},
};

void ch_proto_routes_native(ch_http_router_t *r) {
  for (size_t i = 0; i < sizeof(ch__native_routes) / sizeof(ch__native_routes[0]); i++)
    ch_http_router_add(r, ch__native_routes[i].method, ch__native_routes[i].pattern, (void *)&ch__native_routes[i], NULL);
}
