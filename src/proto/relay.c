/*
 * relay.c — profile `relay` (CLIENT-PROFILES.md): a web client driving the
 * desktop's chats through push subscriptions, on /ws/relay. A thin adapter:
 * chats are chorus conversations (ch_client_join / ch_hub_send_message),
 * projects and chat lists come from hub/convops.h, pushes are the hub's
 * broadcasts.
 *
 *   <- {"id":null,"type":"auth_required"}                               on connect
 *   -> {"id":1,"type":"auth","pin":"123456"} | {"id":1,"type":"auth","token":T}
 *   <- {"id":1,"type":"auth_success","data":{"projects":[...],"modelProfiles":[...]}}
 *      | {"id":1,"type":"auth_failed","error":"..."}
 *   -> {"id":2,"type":"subscribe","resource":"project"|"chat"|"modelProfiles","resourceId":X}
 *   <- {"id":2,"type":"subscribed","resource":R,"resourceId":X,"data":{"chats"|"messages"|"modelProfiles":[...]}}
 *   <- {"id":null,"type":"data","resource":R,"resourceId":X,"data":{...}}    pushes
 *   -> {"id":4,"type":"send","resourceId":C,"message":{"message":"hi"}}
 *   <- {"id":4,"type":"data","resource":"chat","resourceId":C,"data":{"sent":true}}
 *   -> {"id":5,"type":"unsubscribe","resource":R,"resourceId":X}
 *   <- {"id":5,"type":"data","data":{"unsubscribed":true}}
 *   errors: {"id":I,"type":"error"[,"resource","resourceId"],"error":"..."}
 *
 * Request ids are echoed exactly as sent (string, number, anything): each
 * request's "id" is kept as its JSON text.
 *
 * Authentication. A PIN (chorus pin, or the native {"type":"pin"} request) is
 * redeemed on the hub thread (ch_auth_pin_redeem: single use) and makes the
 * connection a NEW device of the PIN's user. Wrong PINs: 5 per connection
 * (ch_auth_conn_limit_t, then every attempt on it fails), 20 per source
 * address per 15 minutes (one process-wide ch_auth_limiter_t keyed by the
 * peer's IP, checked and charged on the hub thread, where all redemptions
 * are serialised, so concurrent connections cannot overshoot it). One attempt
 * at a time per connection. A connection that has not authenticated after
 * CH__RELAY_AUTH_TIMEOUT_MS is closed (1008): a person may be typing a PIN.
 *
 * Chat subscriptions. subscribe chat C: ch_hub_conv_get checks that C exists
 * and is the user's (missing/forbidden answer an error, nothing is joined),
 * then ch_client_join — subscribe, catch up, go live, gap-free — whose sync
 * becomes "subscribed" with data {"messages":[...]}. Pushes are the
 * conversation's broadcasts in the shared CH_FMT_RELAY frame (encoded once
 * for all relay subscribers): {"id":null,"type":"data","resource":"chat",
 * "resourceId":C,"data":<native event>}; presence and typing stay out.
 * A join travels under a ticket ("relay:<n>") as its request id, so its
 * answer (or error) finds the relay request it belongs to; unsubscribing
 * or re-subscribing voids older tickets.
 *
 * Agents. A send goes to the chat's agent (the conversation's, else the
 * first configured; ch__proto_agent_resolve), after the credential's rate
 * limit (refused: an error answer, nothing stored). A watcher (agentrun.h)
 * follows the reply for usage accounting only: the reply itself reaches
 * every subscriber of the chat as native stream events in CH_FMT_RELAY
 * frames, from the one upstream request. When a stream ends each subscriber
 * gets {"id":null,"type":"data","resource":"chat","resourceId":C,
 * "data":{"completed":true}} after the stored reply; a failed stream gets
 * {"id":null,"type":"error","resource":"chat","resourceId":C,"error":...}.
 * modelProfiles = the configured agents, {"id","name","agent","kind"} each.
 *
 * Project subscriptions. subscribe project P: topic "p:<P>" first (pushes
 * buffered), ch_hub_project_get (missing/forbidden -> error), then
 * ch_hub_conv_list(P) -> "subscribed" with data {"chats":[...]}, then the
 * buffered pushes. A push's data is the chat itself (the "conversation" of
 * the hub's {"type":"conversation","op",...} event, plus "deleted":true when
 * it was deleted). A chat created during the subscribe may arrive in both.
 */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "agent/agent.h"
#include "hub/client.h"
#include "hub/convops.h"
#include "hub/ops.h"
#include "proto/agentrun.h"
#include "proto/proto.h"
#include "ws/session.h"

#define CH__RELAY_AUTH_TIMEOUT_MS (5 * 60 * 1000)
#define CH__RELAY_MAX_PENDING 64   /* chat subscribes in flight per connection */
#define CH__RELAY_MAX_PROJECTS 256 /* project subscriptions per connection */
#define CH__RELAY_TICKET "relay:"

/* ---- state ------------------------------------------------------------------ */

typedef struct ch__relay_s ch__relay_t;

/* A chat subscribe between the request and its answer. */
typedef struct {
  ch_list_t node;  /* in relay->pending */
  uint64_t ticket;
  char *chat;      /* owned */
  char *rid;       /* owned: the request id as JSON text */
} ch__relay_pend_t;

/* A project subscription. */
typedef struct {
  ch_topic_sub_t tsub; /* "p:<project>" */
  ch_list_t node;      /* in relay->projects */
  ch__relay_t *r;      /* owner; not owned */
  char *project;       /* owned */
  char topic[140];
  uint64_t ticket;     /* this subscribe (answers for older ones are void) */
  int live;            /* answered: pushes go out as they come */
  char *rid;           /* owned until answered */
  ch_bcast_t **buf;    /* owned references held until live */
  size_t nbuf, capbuf;
} ch__relay_psub_t;

struct ch__relay_s {
  ch_client_t cl;             /* first: the registry hands back &cl */
  ch_ws_t *ws;                /* not owned; NULL before open */
  uint64_t opened_ms;
  int auth_busy;              /* an auth attempt is in progress */
  int token_pending;          /* ch_proto_authenticate holds a pointer to us */
  int gone;                   /* closed while token_pending: freed by its callback */
  char *auth_rid;             /* owned: the token auth's request id while token_pending */
  ch_auth_conn_limit_t pins;  /* wrong PINs on this connection */
  char addr[64];              /* peer IP (limiter key) */
  ch_identity_t who;          /* the credential, once authenticated (usage, rate limit) */
  ch_list_t pending;          /* ch__relay_pend_t */
  size_t npending;
  ch_list_t projects;         /* ch__relay_psub_t */
  size_t nprojects;
  uint64_t next_ticket;
};

/* Wrong PINs per source address, shared by every loop (and the hub thread). */
static ch_auth_limiter_t ch__relay_limiter;
static pthread_once_t ch__relay_limiter_once = PTHREAD_ONCE_INIT;

static void ch__relay_limiter_init(void) {
  if (ch_auth_limiter_init(&ch__relay_limiter, 4096, CH_AUTH_ADDR_MAX_FAILURES, CH_AUTH_ADDR_WINDOW_MS) != 0)
    abort(); /* constant arguments: cannot fail */
}

static ch_auth_limiter_t *ch__relay_lim(void) {
  pthread_once(&ch__relay_limiter_once, ch__relay_limiter_init);
  return &ch__relay_limiter;
}

/* Answers come back by client id: NULL when that connection has gone. */
static ch__relay_t *ch__relay_find(ch_loop_t *l, uint64_t id) {
  ch__relay_t *r = (ch__relay_t *)ch_client_find(l, id);
  return r && !r->gone ? r : NULL;
}

/* ---- output ------------------------------------------------------------------- */

static void ch__relay_send(ch__relay_t *r, ch_buf_t *b) {
  if (r->ws) ch_ws_send_text(r->ws, b->base, b->len);
}

/* {"id":rid,"type":type[,"resource":R][,"resourceId":X][,"data":D][,"error":E]} */
static void ch__relay_reply(ch__relay_t *r, const char *rid, const char *type, const char *resource,
                            const char *res_id, const char *data, size_t dlen, const char *error) {
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "{\"id\":");
  ch_buf_append_str(&b, rid ? rid : "null");
  ch_buf_append_str(&b, ",\"type\":");
  ch_buf_append_json_qstr(&b, type);
  if (resource) {
    ch_buf_append_str(&b, ",\"resource\":");
    ch_buf_append_json_qstr(&b, resource);
  }
  if (res_id) {
    ch_buf_append_str(&b, ",\"resourceId\":");
    ch_buf_append_json_qstr(&b, res_id);
  }
  if (data) {
    ch_buf_append_str(&b, ",\"data\":");
    ch_buf_append(&b, data, dlen);
  }
  if (error) {
    ch_buf_append_str(&b, ",\"error\":");
    ch_buf_append_json_qstr(&b, error);
  }
  ch_buf_append_byte(&b, '}');
  ch__relay_send(r, &b);
  ch_buf_dispose(&b);
}

static void ch__relay_error(ch__relay_t *r, const char *rid, const char *resource, const char *res_id,
                            const char *error) {
  ch__relay_reply(r, rid, "error", resource, res_id, NULL, 0, error);
}

static void ch__relay_data_str(ch__relay_t *r, const char *rid, const char *resource, const char *res_id,
                               const char *data) {
  ch__relay_reply(r, rid, "data", resource, res_id, data, strlen(data), NULL);
}

/* ---- pending chat subscribes ------------------------------------------------- */

static void ch__relay_pend_free(ch__relay_t *r, ch__relay_pend_t *p) {
  ch_list_remove(&p->node);
  r->npending--;
  free(p->chat);
  free(p->rid);
  free(p);
}

static ch__relay_pend_t *ch__relay_pend_by_ticket(ch__relay_t *r, uint64_t ticket) {
  ch_list_t *it;
  ch_list_foreach(it, &r->pending) {
    ch__relay_pend_t *p = CH_LIST_DATA(it, ch__relay_pend_t, node);
    if (p->ticket == ticket) return p;
  }
  return NULL;
}

static void ch__relay_pend_drop_chat(ch__relay_t *r, const char *chat) {
  ch_list_t *it, *tmp;
  ch_list_foreach_safe(it, tmp, &r->pending) {
    ch__relay_pend_t *p = CH_LIST_DATA(it, ch__relay_pend_t, node);
    if (strcmp(p->chat, chat) == 0) ch__relay_pend_free(r, p);
  }
}

/* "relay:<n>" -> n (0 when it is not one of ours). */
static uint64_t ch__relay_ticket_of(const char *req_id) {
  size_t k = sizeof(CH__RELAY_TICKET) - 1;
  if (req_id == NULL || strncmp(req_id, CH__RELAY_TICKET, k) != 0) return 0;
  return strtoull(req_id + k, NULL, 10);
}

/* ---- project subscriptions --------------------------------------------------- */

static void ch__relay_psub_free(ch__relay_t *r, ch__relay_psub_t *s) {
  if (s->tsub.topic) ch_topic_unsubscribe(r->cl.loop, &s->tsub);
  ch_list_remove(&s->node);
  r->nprojects--;
  for (size_t i = 0; i < s->nbuf; i++) ch_bcast_unref(s->buf[i]);
  free(s->buf);
  free(s->project);
  free(s->rid);
  free(s);
}

static ch__relay_psub_t *ch__relay_psub(ch__relay_t *r, const char *project) {
  ch_list_t *it;
  ch_list_foreach(it, &r->projects) {
    ch__relay_psub_t *s = CH_LIST_DATA(it, ch__relay_psub_t, node);
    if (strcmp(s->project, project) == 0) return s;
  }
  return NULL;
}

/* A project push: data = the chat of a conversation event ("deleted":true when
 * it went); any other event on the topic goes out in the generic relay frame. */
static void ch__relay_project_push(ch__relay_psub_t *s, ch_bcast_t *b) {
  ch__relay_t *r = s->r;
  if (r->ws == NULL) return;
  cJSON *ev = strcmp(b->type, "conversation") == 0 ? cJSON_ParseWithLength(b->json->data, b->json->len) : NULL;
  cJSON *conv = cJSON_GetObjectItemCaseSensitive(ev, "conversation");
  if (!cJSON_IsObject(conv)) {
    ch_ws_send_frame(r->ws, ch_bcast_frame(b, CH_FMT_RELAY));
    goto Exit;
  }
  cJSON *op = cJSON_GetObjectItemCaseSensitive(ev, "op");
  if (cJSON_IsString(op) && strcmp(op->valuestring, "deleted") == 0) cJSON_AddTrueToObject(conv, "deleted");
  char *data = cJSON_PrintUnformatted(conv);
  if (data) {
    ch__relay_reply(r, NULL, "data", "project", s->project, data, strlen(data), NULL);
    cJSON_free(data);
  }
Exit:
  cJSON_Delete(ev);
}

static void ch__relay_psub_deliver(ch_topic_sub_t *ts, ch_topic_item_t *it) {
  ch__relay_psub_t *s = CH_LIST_DATA(ts, ch__relay_psub_t, tsub);
  ch_bcast_t *b = (ch_bcast_t *)it;
  if (s->live) {
    ch__relay_project_push(s, b);
    return;
  }
  if (s->nbuf == s->capbuf) {
    s->capbuf = s->capbuf ? s->capbuf * 2 : 4;
    s->buf = ch_xrealloc(s->buf, s->capbuf * sizeof(*s->buf));
  }
  ch_topic_item_ref(&b->base);
  s->buf[s->nbuf++] = b;
}

/* ---- answers from the hub ------------------------------------------------------ */

/* The context of a convops / send call: where the answer goes. */
typedef struct {
  ch_loop_t *loop;
  uint64_t client_id;
  uint64_t ticket;
  char *rid;    /* owned: request id JSON text */
  char *res_id; /* owned: resource id, or NULL */
  char *json;   /* owned: a send's message object until it is sent, or NULL */
  char missing[65]; /* a send: the chat's agent when it is not configured */
} ch__relay_ctx_t;

static ch__relay_ctx_t *ch__relay_ctx_new(ch__relay_t *r, uint64_t ticket, const char *rid, const char *res_id) {
  ch__relay_ctx_t *x = ch_xcalloc(1, sizeof(*x));
  x->loop = r->cl.loop;
  x->client_id = r->cl.id;
  x->ticket = ticket;
  x->rid = ch_xstrdup(rid);
  x->res_id = res_id ? ch_xstrdup(res_id) : NULL;
  return x;
}

static void ch__relay_ctx_free(ch__relay_ctx_t *x) {
  free(x->json);
  free(x->rid);
  free(x->res_id);
  free(x);
}

/* [{"id","name","agent","kind"},...]: the configured agents. */
static void ch__relay_model_profiles(ch_buf_t *b) {
  ch_buf_append_byte(b, '[');
  for (size_t i = 0; i < ch_agents_count(); i++) {
    const ch_agent_t *a = ch_agent_at(i);
    ch_buf_append_str(b, i ? ",{\"id\":" : "{\"id\":");
    ch_buf_append_json_qstr(b, a->name);
    ch_buf_append_str(b, ",\"name\":");
    ch_buf_append_json_qstr(b, a->name);
    ch_buf_append_str(b, ",\"agent\":");
    ch_buf_append_json_qstr(b, a->name);
    ch_buf_append_str(b, ",\"kind\":");
    ch_buf_append_json_qstr(b, a->be->kind);
    ch_buf_append_byte(b, '}');
  }
  ch_buf_append_byte(b, ']');
}

/* auth: the user's projects -> auth_success */
static void ch__relay_projects_cb(void *ud, int status, const char *code, const char *error, const char *json,
                                  size_t len) {
  (void)code;
  ch__relay_ctx_t *x = ud;
  ch__relay_t *r = ch__relay_find(x->loop, x->client_id);
  if (r == NULL) goto Exit;
  r->auth_busy = 0;
  r->cl.authed = 1;
  if (status != 0) { /* authenticated all the same: the PIN is spent */
    ch_log_warn("relay conn %llu: listing projects failed: %s", (unsigned long long)r->cl.id, error);
    json = "[]";
    len = 2;
  }
  ch_buf_t d = CH_BUF_INIT;
  ch_buf_append_str(&d, "{\"projects\":");
  ch_buf_append(&d, json, len);
  ch_buf_append_str(&d, ",\"modelProfiles\":");
  ch__relay_model_profiles(&d);
  ch_buf_append_byte(&d, '}');
  ch__relay_reply(r, x->rid, "auth_success", NULL, NULL, d.base, d.len, NULL);
  ch_buf_dispose(&d);
Exit:
  ch__relay_ctx_free(x);
}

static void ch__relay_authenticated(ch__relay_t *r, const ch_identity_t *id, const char *rid) {
  r->who = *id;
  snprintf(r->cl.user_id, sizeof(r->cl.user_id), "%s", id->user_id);
  snprintf(r->cl.device_id, sizeof(r->cl.device_id), "%s", id->device_id[0] ? id->device_id : "relay");
  r->cl.scopes = id->scopes;
  ch_log_info("relay conn %llu (%s): authenticated as %s on %s", (unsigned long long)r->cl.id, r->addr,
              r->cl.user_id, r->cl.device_id);
  ch_hub_project_list(r->cl.loop, r->cl.user_id, r->cl.scopes, ch__relay_projects_cb,
                      ch__relay_ctx_new(r, 0, rid, NULL));
}

/* subscribe project: project_get, then conv_list */
static void ch__relay_chats_cb(void *ud, int status, const char *code, const char *error, const char *json,
                               size_t len) {
  (void)code;
  ch__relay_ctx_t *x = ud;
  ch__relay_t *r = ch__relay_find(x->loop, x->client_id);
  ch__relay_psub_t *s = r ? ch__relay_psub(r, x->res_id) : NULL;
  if (s == NULL || s->ticket != x->ticket) goto Exit; /* unsubscribed or re-subscribed meanwhile */
  if (status != 0) {
    ch__relay_error(r, s->rid, "project", s->project, error);
    ch__relay_psub_free(r, s);
    goto Exit;
  }
  ch_buf_t d = CH_BUF_INIT;
  ch_buf_append_str(&d, "{\"chats\":");
  ch_buf_append(&d, json, len);
  ch_buf_append_byte(&d, '}');
  ch__relay_reply(r, s->rid, "subscribed", "project", s->project, d.base, d.len, NULL);
  ch_buf_dispose(&d);
  free(s->rid);
  s->rid = NULL;
  s->live = 1;
  ch_bcast_t **buf = s->buf;
  size_t n = s->nbuf;
  s->buf = NULL;
  s->nbuf = s->capbuf = 0;
  for (size_t i = 0; i < n; i++) {
    ch__relay_project_push(s, buf[i]);
    ch_bcast_unref(buf[i]);
  }
  free(buf);
Exit:
  ch__relay_ctx_free(x);
}

static void ch__relay_project_cb(void *ud, int status, const char *code, const char *error, const char *json,
                                 size_t len) {
  (void)code;
  (void)json;
  (void)len;
  ch__relay_ctx_t *x = ud;
  ch__relay_t *r = ch__relay_find(x->loop, x->client_id);
  ch__relay_psub_t *s = r ? ch__relay_psub(r, x->res_id) : NULL;
  if (s == NULL || s->ticket != x->ticket) {
    ch__relay_ctx_free(x);
    return;
  }
  if (status != 0) {
    ch__relay_error(r, s->rid, "project", s->project, status == CH_ENOTFOUND ? "project not found" : error);
    ch__relay_psub_free(r, s);
    ch__relay_ctx_free(x);
    return;
  }
  ch_hub_conv_list(x->loop, r->cl.user_id, r->cl.scopes, s->project, NULL, 1000, 0, ch__relay_chats_cb, x);
}

/* subscribe chat: conv_get, then join */
static void ch__relay_chat_check_cb(void *ud, int status, const char *code, const char *error, const char *json,
                                    size_t len) {
  (void)code;
  (void)json;
  (void)len;
  ch__relay_ctx_t *x = ud;
  ch__relay_t *r = ch__relay_find(x->loop, x->client_id);
  ch__relay_pend_t *p = r ? ch__relay_pend_by_ticket(r, x->ticket) : NULL;
  if (p == NULL) goto Exit;
  if (status != 0) {
    ch__relay_error(r, p->rid, "chat", p->chat, status == CH_ENOTFOUND ? "chat not found" : error);
    ch__relay_pend_free(r, p);
    goto Exit;
  }
  char ticket[40];
  snprintf(ticket, sizeof(ticket), CH__RELAY_TICKET "%llu", (unsigned long long)p->ticket);
  ch_client_join(&r->cl, p->chat, 0, 0, 0, NULL, ticket);
Exit:
  ch__relay_ctx_free(x);
}

/* send: stored (or refused) */
static void ch__relay_sent_cb(void *ud, const ch_msg_out_t *out) {
  ch__relay_ctx_t *x = ud;
  ch__relay_t *r = ch__relay_find(x->loop, x->client_id);
  if (r == NULL) goto Exit;
  if (out->status != 0) {
    ch__relay_error(r, x->rid, "chat", x->res_id, out->error);
  } else {
    ch__relay_data_str(r, x->rid, "chat", x->res_id, "{\"sent\":true}");
    if (x->missing[0]) {
      char msg[128];
      snprintf(msg, sizeof(msg), "agent '%s' is not configured", x->missing);
      ch__relay_error(r, NULL, "chat", x->res_id, msg);
    }
  }
Exit:
  ch__relay_ctx_free(x);
}

/* The reply is followed for usage only; the subscribers get it from the room. */
static void ch__relay_watch_sent(void *owner, const ch_msg_out_t *out) { ch__relay_sent_cb(owner, out); }
static const ch__proto_watch_ops_t ch__relay_watch_ops = {ch__relay_watch_sent, NULL, NULL};

/* send: the chat's agent is known -> rate limit -> store (and follow the reply) */
static void ch__relay_send_resolved(void *ud, const char *agent, const char *missing) {
  ch__relay_ctx_t *x = ud;
  ch__relay_t *r = ch__relay_find(x->loop, x->client_id);
  if (r == NULL) {
    ch__relay_ctx_free(x);
    return;
  }
  int64_t retry = 0;
  if (agent && ch__proto_rate_take(&r->who, &retry) != 0) {
    char msg[96];
    ch__proto_rate_message(msg, sizeof(msg), retry);
    ch__relay_error(r, x->rid, "chat", x->res_id, msg);
    ch__relay_ctx_free(x);
    return;
  }
  snprintf(x->missing, sizeof(x->missing), "%s", missing ? missing : "");
  ch_msg_in_t in = {.conv = x->res_id, .message_json = x->json, .len = strlen(x->json),
                    .user_id = r->cl.user_id, .device_id = r->cl.device_id, .source = r->cl.source,
                    .scopes = r->cl.scopes, .agent = agent};
  if (agent == NULL) {
    ch_hub_send_message(r->cl.loop, &in, ch__relay_sent_cb, x);
    return;
  }
  ch_buf_t err = CH_BUF_INIT;
  if (ch__proto_watch_send(r->cl.loop, &in, &r->who, &ch__relay_watch_ops, x, NULL, &err) != 0) {
    ch__relay_error(r, x->rid, "chat", x->res_id, ch_buf_cstr(&err));
    ch__relay_ctx_free(x);
  }
  ch_buf_dispose(&err);
}

/* ---- the client core's renderer ------------------------------------------------- */

/* Native documents the core sends this client: only a join's error here. */
static void ch__relay_send_json(ch_client_t *cl, const char *json, size_t len) {
  ch__relay_t *r = (ch__relay_t *)cl;
  cJSON *m = cJSON_ParseWithLength(json, len);
  cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id");
  cJSON *err = cJSON_GetObjectItemCaseSensitive(m, "error");
  uint64_t t = cJSON_IsString(id) ? ch__relay_ticket_of(id->valuestring) : 0;
  ch__relay_pend_t *p = t ? ch__relay_pend_by_ticket(r, t) : NULL;
  if (p) {
    ch__relay_error(r, p->rid, "chat", p->chat, cJSON_IsString(err) ? err->valuestring : "error");
    ch__relay_pend_free(r, p);
  } else {
    ch_log_debug("relay conn %llu: dropped a native frame: %.*s", (unsigned long long)cl->id, (int)len, json);
  }
  cJSON_Delete(m);
}

/* After a stream's last event: "completed" (it ended) or a subscription error (it failed). */
static void ch__relay_stream_over(ch__relay_t *r, ch_csub_t *sub, ch_bcast_t *b) {
  static const char end[] = "\"op\":\"end\"", err[] = "\"op\":\"error\"";
  size_t n = b->json->len < 64 ? b->json->len : 64; /* "op" leads the agent core's stream events */
  if (memmem(b->json->data, n, end, sizeof(end) - 1)) {
    ch__relay_data_str(r, NULL, "chat", sub->conv_id, "{\"completed\":true}");
  } else if (memmem(b->json->data, n, err, sizeof(err) - 1)) {
    cJSON *o = cJSON_ParseWithLength(b->json->data, b->json->len);
    const char *e = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "error"));
    ch__relay_error(r, NULL, "chat", sub->conv_id, e ? e : "the agent failed");
    cJSON_Delete(o);
  }
}

static void ch__relay_deliver(ch_client_t *cl, ch_csub_t *sub, ch_bcast_t *b) {
  ch__relay_t *r = (ch__relay_t *)cl;
  if (r->ws == NULL || strcmp(b->type, "presence") == 0 || strcmp(b->type, "typing") == 0) return;
  ch_ws_send_frame(r->ws, ch_bcast_frame(b, CH_FMT_RELAY));
  if (strcmp(b->type, "stream") == 0 && b->stream_index == 0) ch__relay_stream_over(r, sub, b);
}

static void ch__relay_joined(ch_client_t *cl, ch_csub_t *sub, const char *req_id, const char *json, size_t len) {
  ch__relay_t *r = (ch__relay_t *)cl;
  uint64_t t = ch__relay_ticket_of(req_id);
  ch__relay_pend_t *p = t ? ch__relay_pend_by_ticket(r, t) : NULL;
  if (p == NULL) return; /* an older subscribe's answer: the newer one answers */
  cJSON *m = cJSON_ParseWithLength(json, len);
  cJSON *data = cJSON_GetObjectItemCaseSensitive(m, "data");
  char *msgs = cJSON_IsArray(data) ? cJSON_PrintUnformatted(data) : NULL;
  ch_buf_t d = CH_BUF_INIT;
  ch_buf_append_str(&d, "{\"messages\":");
  ch_buf_append_str(&d, msgs ? msgs : "[]");
  ch_buf_append_byte(&d, '}');
  ch__relay_reply(r, p->rid, "subscribed", "chat", sub->conv_id, d.base, d.len, NULL);
  ch_buf_dispose(&d);
  cJSON_free(msgs);
  cJSON_Delete(m);
  ch__relay_pend_free(r, p);
}

static const ch_client_ops_t ch__relay_ops = {ch__relay_send_json, ch__relay_deliver, ch__relay_joined};

/* ---- requests ------------------------------------------------------------------- */

/* The PIN's redemption on the hub thread: address limiter, then the store. */
typedef struct {
  ch_hub_req_t base;
  uint64_t client_id;
  char pin[16];
  char addr[64];
  char *rid;            /* owned */
  ch_identity_t id;     /* out */
  int64_t retry_ms;     /* out: CH_ELIMIT */
} ch__relay_pin_req_t;

static void ch__relay_pin_run(ch_hub_t *h, ch_hub_req_t *req) {
  ch__relay_pin_req_t *q = (ch__relay_pin_req_t *)req;
  int64_t now = (int64_t)ch_clock_mono_ms();
  if (ch_auth_limiter_check(ch__relay_lim(), q->addr, now, &q->retry_ms) != 0) {
    req->status = CH_ELIMIT;
    return;
  }
  req->status = ch_auth_pin_redeem(h->store, &ch_proto_settings.secret, q->pin, ch_clock_wall_ms(), &q->id);
  if (req->status == CH_EAUTH) ch_auth_limiter_fail(ch__relay_lim(), q->addr, now);
}

static void ch__relay_pin_free(ch_hub_req_t *req) {
  ch__relay_pin_req_t *q = (ch__relay_pin_req_t *)req;
  free(q->rid);
  free(q);
}

static void ch__relay_lockout_msg(char *out, size_t n, int64_t retry_ms) {
  long s = (long)((retry_ms + 999) / 1000);
  if (s < 1) s = 1;
  snprintf(out, n, "Too many wrong PINs from this address; try again in %ld s", s);
}

static void ch__relay_pin_done(ch_hub_req_t *req) {
  ch__relay_pin_req_t *q = (ch__relay_pin_req_t *)req;
  ch__relay_t *r = ch__relay_find(req->loop, q->client_id);
  if (r == NULL) return;
  if (req->status == 0) {
    ch__relay_authenticated(r, &q->id, q->rid); /* auth_busy until the projects come */
    return;
  }
  r->auth_busy = 0;
  char msg[120];
  if (req->status == CH_ELIMIT) {
    ch__relay_lockout_msg(msg, sizeof(msg), q->retry_ms);
  } else if (req->status == CH_EAUTH) {
    ch_auth_conn_limit_fail(&r->pins);
    snprintf(msg, sizeof(msg), "Invalid or expired PIN");
    ch_log_info("relay conn %llu (%s): wrong PIN (%u on this connection)", (unsigned long long)r->cl.id, r->addr,
                r->pins.failures);
  } else {
    snprintf(msg, sizeof(msg), "Cannot check the PIN right now");
  }
  ch__relay_reply(r, q->rid, "auth_failed", NULL, NULL, NULL, 0, msg);
}

static void ch__relay_free(ch__relay_t *r);

static void ch__relay_token_cb(void *ud, int status, const ch_identity_t *id, const char *reason) {
  ch__relay_t *r = ud;
  r->token_pending = 0;
  char *rid = r->auth_rid;
  r->auth_rid = NULL;
  if (r->gone) {
    free(rid);
    ch__relay_free(r);
    return;
  }
  if (status != 0) {
    r->auth_busy = 0;
    ch__relay_reply(r, rid, "auth_failed", NULL, NULL, NULL, 0, reason);
  } else {
    ch__relay_authenticated(r, id, rid);
  }
  free(rid);
}

static void ch__relay_auth(ch__relay_t *r, cJSON *m, const char *rid) {
  const char *pin = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "pin"));
  const char *tok = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "token"));
  if (r->auth_busy) {
    ch__relay_reply(r, rid, "auth_failed", NULL, NULL, NULL, 0, "Authentication already in progress");
    return;
  }
  if (tok) {
    r->auth_busy = r->token_pending = 1;
    r->auth_rid = ch_xstrdup(rid);
    ch_proto_authenticate(r->cl.loop, tok, ch__relay_token_cb, r);
    return;
  }
  if (pin == NULL) {
    ch__relay_reply(r, rid, "auth_failed", NULL, NULL, NULL, 0, "auth needs a \"pin\" or a \"token\"");
    return;
  }
  if (ch_auth_conn_limit_check(&r->pins) != 0) {
    ch__relay_reply(r, rid, "auth_failed", NULL, NULL, NULL, 0,
                    "Too many wrong PINs on this connection; reconnect to try again");
    return;
  }
  int64_t retry = 0;
  if (ch_auth_limiter_check(ch__relay_lim(), r->addr, (int64_t)ch_clock_mono_ms(), &retry) != 0) {
    char msg[120];
    ch__relay_lockout_msg(msg, sizeof(msg), retry);
    ch__relay_reply(r, rid, "auth_failed", NULL, NULL, NULL, 0, msg);
    return;
  }
  ch__relay_pin_req_t *q = ch_xcalloc(1, sizeof(*q));
  q->base.run = ch__relay_pin_run;
  q->base.done = ch__relay_pin_done;
  q->base.free_cb = ch__relay_pin_free;
  q->base.loop = r->cl.loop;
  q->client_id = r->cl.id;
  snprintf(q->pin, sizeof(q->pin), "%s", pin); /* longer than 15 bytes is wrong anyway */
  snprintf(q->addr, sizeof(q->addr), "%s", r->addr);
  q->rid = ch_xstrdup(rid);
  r->auth_busy = 1;
  ch_hub_submit(ch_hub, &q->base);
}

static int ch__relay_id_ok(const char *s) { return s && s[0] && strlen(s) <= 128; }

static void ch__relay_subscribe(ch__relay_t *r, const char *rid, const char *res, const char *res_id) {
  if (strcmp(res, "modelProfiles") == 0) { /* the configured agents */
    ch_buf_t d = CH_BUF_INIT;
    ch_buf_append_str(&d, "{\"modelProfiles\":");
    ch__relay_model_profiles(&d);
    ch_buf_append_byte(&d, '}');
    ch__relay_reply(r, rid, "subscribed", res, res_id, d.base, d.len, NULL);
    ch_buf_dispose(&d);
    return;
  }
  int chat = strcmp(res, "chat") == 0;
  if (!chat && strcmp(res, "project") != 0) {
    ch__relay_error(r, rid, res, res_id, "unknown resource (project, chat or modelProfiles)");
    return;
  }
  if (!ch__relay_id_ok(res_id)) {
    ch__relay_error(r, rid, res, res_id, "\"resourceId\" must be a string of 1..128 bytes");
    return;
  }
  uint64_t ticket = ++r->next_ticket;
  if (chat) {
    if (r->npending >= CH__RELAY_MAX_PENDING) {
      ch__relay_error(r, rid, res, res_id, "too many subscriptions in progress");
      return;
    }
    ch__relay_pend_drop_chat(r, res_id); /* a newer subscribe answers for the chat */
    ch__relay_pend_t *p = ch_xcalloc(1, sizeof(*p));
    p->ticket = ticket;
    p->chat = ch_xstrdup(res_id);
    p->rid = ch_xstrdup(rid);
    ch_list_insert_tail(&r->pending, &p->node);
    r->npending++;
    ch_hub_conv_get(r->cl.loop, r->cl.user_id, r->cl.scopes, res_id, 0, ch__relay_chat_check_cb,
                    ch__relay_ctx_new(r, ticket, rid, res_id));
    return;
  }
  ch__relay_psub_t *s = ch__relay_psub(r, res_id);
  if (s) ch__relay_psub_free(r, s); /* re-subscribe: start over */
  if (r->nprojects >= CH__RELAY_MAX_PROJECTS) {
    ch__relay_error(r, rid, res, res_id, "too many project subscriptions");
    return;
  }
  s = ch_xcalloc(1, sizeof(*s));
  s->r = r;
  s->project = ch_xstrdup(res_id);
  s->rid = ch_xstrdup(rid);
  s->ticket = ticket;
  snprintf(s->topic, sizeof(s->topic), "p:%s", res_id);
  s->tsub.deliver = ch__relay_psub_deliver;
  ch_list_init(&s->tsub.node);
  ch_list_insert_tail(&r->projects, &s->node);
  r->nprojects++;
  ch_topic_subscribe(r->cl.loop, s->topic, strlen(s->topic), &s->tsub);
  ch_hub_project_get(r->cl.loop, r->cl.user_id, r->cl.scopes, res_id, ch__relay_project_cb,
                     ch__relay_ctx_new(r, ticket, rid, res_id));
}

static void ch__relay_unsubscribe(ch__relay_t *r, const char *rid, const char *res, const char *res_id) {
  if (res_id && strcmp(res, "chat") == 0) {
    ch__relay_pend_drop_chat(r, res_id);
    ch_client_leave(&r->cl, res_id);
  } else if (res_id && strcmp(res, "project") == 0) {
    ch__relay_psub_t *s = ch__relay_psub(r, res_id);
    if (s) ch__relay_psub_free(r, s);
  }
  ch__relay_data_str(r, rid, NULL, NULL, "{\"unsubscribed\":true}");
}

static void ch__relay_send_msg(ch__relay_t *r, cJSON *m, const char *rid) {
  const char *chat = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "resourceId"));
  cJSON *msg = cJSON_GetObjectItemCaseSensitive(m, "message");
  const char *text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(msg, "message"));
  if (!ch__relay_id_ok(chat)) {
    ch__relay_error(r, rid, "chat", chat, "\"resourceId\" must be a string of 1..128 bytes");
    return;
  }
  if (!cJSON_IsObject(msg) || text == NULL) {
    ch__relay_error(r, rid, "chat", chat, "\"message\" must be an object with a string \"message\"");
    return;
  }
  /* The stored message: the client's object with its text as "content". */
  cJSON *body = cJSON_Duplicate(msg, 1);
  cJSON_DeleteItemFromObjectCaseSensitive(body, "message");
  cJSON_DeleteItemFromObjectCaseSensitive(body, "role");
  cJSON_DeleteItemFromObjectCaseSensitive(body, "content");
  cJSON_AddStringToObject(body, "role", "user");
  cJSON_AddStringToObject(body, "content", text);
  char *json = cJSON_PrintUnformatted(body);
  cJSON_Delete(body);
  if (!(r->cl.scopes & (CH_SCOPE_WRITE | CH_SCOPE_ADMIN))) {
    ch__relay_error(r, rid, "chat", chat, "this credential may not write");
    cJSON_free(json);
    return;
  }
  ch__relay_ctx_t *x = ch__relay_ctx_new(r, 0, rid, chat);
  x->json = ch_xstrdup(json ? json : "{}");
  cJSON_free(json);
  ch__proto_agent_resolve(r->cl.loop, chat, ch__relay_send_resolved, x);
}

static void ch__relay_handle(ch__relay_t *r, cJSON *m) {
  cJSON *idv = cJSON_GetObjectItemCaseSensitive(m, "id");
  char *rid = idv ? cJSON_PrintUnformatted(idv) : NULL;
  const char *rids = rid ? rid : "null";
  const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "type"));
  if (type == NULL) {
    ch__relay_error(r, rids, NULL, NULL, "a request needs a string \"type\"");
    goto Exit;
  }
  if (strcmp(type, "auth") == 0) {
    if (r->cl.authed) ch__relay_error(r, rids, NULL, NULL, "Already authenticated");
    else ch__relay_auth(r, m, rids);
    goto Exit;
  }
  if (!r->cl.authed) {
    ch__relay_error(r, rids, NULL, NULL, "Not authenticated");
    goto Exit;
  }
  const char *res = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "resource"));
  const char *res_id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "resourceId"));
  if (strcmp(type, "subscribe") == 0 || strcmp(type, "unsubscribe") == 0) {
    if (res == NULL) {
      ch__relay_error(r, rids, NULL, res_id, "\"resource\" must be project, chat or modelProfiles");
    } else if (type[0] == 's') {
      ch__relay_subscribe(r, rids, res, res_id);
    } else {
      ch__relay_unsubscribe(r, rids, res, res_id);
    }
  } else if (strcmp(type, "send") == 0) {
    ch__relay_send_msg(r, m, rids);
  } else {
    char msg[96];
    snprintf(msg, sizeof(msg), "Unknown request type '%.40s'", type);
    ch__relay_error(r, rids, NULL, NULL, msg);
  }
Exit:
  cJSON_free(rid);
}

static void ch__relay_message(ch_ws_t *ws, int opcode, const char *data, size_t len) {
  (void)opcode;
  ch__relay_t *r = ws->udata;
  cJSON *m = cJSON_ParseWithLength(data, len);
  if (!cJSON_IsObject(m)) ch__relay_error(r, NULL, NULL, NULL, "Invalid JSON: expected an object");
  else ch__relay_handle(r, m);
  cJSON_Delete(m);
}

/* ---- life cycle ------------------------------------------------------------------ */

/* Leave everything (chats, projects, pending answers); the struct stays. */
static void ch__relay_release(ch__relay_t *r) {
  while (!ch_list_empty(&r->pending))
    ch__relay_pend_free(r, CH_LIST_DATA(r->pending.next, ch__relay_pend_t, node));
  while (!ch_list_empty(&r->projects))
    ch__relay_psub_free(r, CH_LIST_DATA(r->projects.next, ch__relay_psub_t, node));
  ch_client_dispose(&r->cl);
}

static void ch__relay_free(ch__relay_t *r) { free(r); }

static void ch__relay_open(ch_ws_t *ws) {
  ch__relay_t *r = ws->udata;
  r->ws = ws;
  r->cl.transport = ws;
  r->opened_ms = ws->c->loop->now_ms;
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "{\"id\":null,\"type\":\"auth_required\"}");
  ch__relay_send(r, &b);
  ch_buf_dispose(&b);
}

static void ch__relay_close(ch_ws_t *ws) {
  ch__relay_t *r = ws->udata;
  if (r == NULL) return;
  r->ws = NULL;
  ch__relay_release(r);
  if (r->token_pending) {
    r->gone = 1; /* the token callback frees it */
    return;
  }
  ch__relay_free(r);
}

static void ch__relay_sweep(ch_ws_t *ws, uint64_t now) {
  ch__relay_t *r = ws->udata;
  if (!r->cl.authed && !r->auth_busy && now - r->opened_ms >= CH__RELAY_AUTH_TIMEOUT_MS)
    ch_ws_close(ws, CH_WS_CLOSE_POLICY, "authentication timeout");
}

static const ch_ws_handler_t ch__relay_ws = {
    .name = "relay",
    .on_open = ch__relay_open,
    .on_message = ch__relay_message,
    .on_close = ch__relay_close,
    .on_sweep = ch__relay_sweep,
};

static void ch__relay_upgrade(ch_http_ctx_t *x) {
  if (!x->req->upgrade) {
    ch_http_reply_error(x, 426, "WebSocket upgrade required");
    return;
  }
  ch__relay_t *r = ch_xcalloc(1, sizeof(*r));
  ch_client_init(&r->cl, x->c, &ch__relay_ops, NULL);
  const char *src = ch_http_req_query_param(x->req, "source");
  snprintf(r->cl.source, sizeof(r->cl.source), "%s", src && *src ? src : "web");
  /* The limiter key: the peer's address without the port ("ip:port", IPv6 unbracketed). */
  snprintf(r->addr, sizeof(r->addr), "%s", x->c->peer);
  char *colon = strrchr(r->addr, ':');
  if (colon) *colon = '\0';
  ch_auth_conn_limit_init(&r->pins, CH_AUTH_CONN_MAX_FAILURES);
  ch_list_init(&r->pending);
  ch_list_init(&r->projects);
  ch_ws_accept(x, &ch__relay_ws, r);
}

static const ch_http_route_t ch__relay_route = {"GET", "/ws/relay", ch__relay_upgrade, 0};

void ch_proto_routes_relay(ch_http_router_t *r) {
  ch_http_router_add(r, ch__relay_route.method, ch__relay_route.pattern, (void *)&ch__relay_route, NULL);
}
