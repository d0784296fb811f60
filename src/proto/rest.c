/*
 * rest.c — chorus over plain HTTP: the REST routes of conversations,
 * messages, projects and events, profile `unified`'s HTTP surface (/ws/stats,
 * /api/chat) and device-sync's publish route. docs/PROTOCOL.md ("REST and
 * SSE") documents every route with an example.
 *
 *   request ─> route handler ─> ch__rest_auth(need) ─> ch_proto_authenticate
 *                                 │ (tokens now; API keys via the hub thread)
 *                                 ├─ no/invalid credential ─> 401 {"success":false,"error","code"}
 *                                 ├─ scope missing ────────> 403
 *                                 └─ fn(q) ─> convops / ch_hub_send_message (hub thread)
 *                                              └─ callback on this loop ─> reply, free q
 *
 * Every answer is JSON: {"success":true,"data":...} (or the exact bodies the
 * `unified` profile defines), errors {"success":false,"error":"...","code":"..."}
 * with the status from the convops code (invalid 400, forbidden 403,
 * not_found 404, exists 409, else 500).
 *
 * Lifetime: a ch__rq_t is allocated per authenticated request and freed by
 * whichever reply consumes it (ch__rest_data / ch__rest_err / ...). The HTTP
 * ctx `x` stays valid until the reply; when the client left meanwhile
 * (x->c == NULL) the reply call just frees it.
 *
 * /ws/stats counts WebSocket clients per `?source=` by visiting every loop's
 * client registry on its own thread (ch_loop_post), merging under a mutex; the
 * last loop posts the answer back to the asking loop. During the final join
 * phase of a shutdown (loop threads gone, tasks run by the main thread), the
 * task notices it is not on its loop's thread and finishes in place.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/map.h"
#include "hub/client.h"
#include "hub/convops.h"
#include "hub/ops.h"
#include "proto/proto.h"
#include "server/server.h"
#include "sse/stream.h"

#include "proto/agentrun.h"
#include "proto/internal.h"

#define CH__EVENT_NAME_MAX 64 /* custom event names and user event types, bytes */

typedef struct ch__rq_s ch__rq_t;
typedef void (*ch__rest_fn)(ch__rq_t *q);

struct ch__rq_s {
  ch_http_ctx_t *x;  /* the request; handed back to HTTP by the reply */
  ch_loop_t *loop;   /* the request's loop */
  ch_identity_t id;  /* the authenticated caller */
  ch__rest_fn fn;    /* what to do once authenticated */
  unsigned need;     /* scopes fn needs (0: any valid credential) */
  int ok_status;     /* HTTP status of a success answer */
  int flat;          /* success body: {"success":true,<fields of the answer>} */
  int unified;       /* profile `unified` route: its exact error bodies */
  char *conv;        /* owned: conversation id (/api/chat) */
};

/* ---- replies (each consumes q) ------------------------------------------------- */

static void ch__rq_free(ch__rq_t *q) {
  free(q->conv);
  free(q);
}

static int ch__http_status(const char *code) {
  if (code == NULL) return 500;
  if (strcmp(code, "invalid") == 0) return 400;
  if (strcmp(code, "forbidden") == 0) return 403;
  if (strcmp(code, "not_found") == 0) return 404;
  if (strcmp(code, "exists") == 0) return 409;
  if (strcmp(code, "unauthenticated") == 0) return 401;
  return 500;
}

static void ch__reply_err_x(ch_http_ctx_t *x, int status, const char *code, const char *msg, int with_code) {
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "{\"success\":false,\"error\":");
  ch_buf_append_json_qstr(&b, msg ? msg : "error");
  if (with_code && code) {
    ch_buf_append_str(&b, ",\"code\":");
    ch_buf_append_json_qstr(&b, code);
  }
  ch_buf_append_byte(&b, '}');
  ch_http_reply(x, status, "application/json", b.base, b.len,
                status == 401 ? "WWW-Authenticate: Bearer realm=\"chorus\"\r\n" : NULL);
  ch_buf_dispose(&b);
}

static void ch__rest_err(ch__rq_t *q, int status, const char *code, const char *msg) {
  ch__reply_err_x(q->x, status, code, msg, !q->unified);
  ch__rq_free(q);
}

static void ch__rest_data(ch__rq_t *q, int status, const char *json, size_t len) {
  ch_buf_t b = CH_BUF_INIT;
  if (q->flat && len >= 2 && json[0] == '{') {
    ch_buf_append_str(&b, "{\"success\":true");
    if (len > 2) ch_buf_append_byte(&b, ',');
    ch_buf_append(&b, json + 1, len - 1);
  } else {
    ch_buf_append_str(&b, "{\"success\":true,\"data\":");
    ch_buf_append(&b, json, len);
    ch_buf_append_byte(&b, '}');
  }
  ch_http_reply_json(q->x, status, b.base, b.len);
  ch_buf_dispose(&b);
  ch__rq_free(q);
}

/* The convops answer -> the HTTP answer. */
static void ch__rest_json_cb(void *ud, int status, const char *code, const char *error, const char *json,
                             size_t len) {
  ch__rq_t *q = ud;
  if (status != 0) ch__rest_err(q, ch__http_status(code), code, error);
  else ch__rest_data(q, q->ok_status, json, len);
}

/* ---- authentication ---------------------------------------------------------------- */

static void ch__rest_auth_cb(void *ud, int status, const ch_identity_t *id, const char *reason) {
  ch__rq_t *q = ud;
  if (q->x->c == NULL) { /* the client left while the key was checked: just free */
    ch__rest_err(q, 401, "unauthenticated", reason);
    return;
  }
  if (status != 0) {
    ch__rest_err(q, status == CH_EAUTH ? 401 : 500, status == CH_EAUTH ? "unauthenticated" : "store_error",
                 reason);
    return;
  }
  q->id = *id;
  if (q->need && !ch_auth_scopes_allow(id->scopes, q->need)) {
    ch__rest_err(q, 403, "forbidden",
                 q->need & CH_SCOPE_ADMIN   ? "this credential is not an admin's"
                 : q->need & CH_SCOPE_WRITE ? "this credential may not write"
                                            : "this credential may not read");
    return;
  }
  q->fn(q);
}

/* Authenticate x, check `need`, then run fn (maybe later, on this loop). */
static void ch__rest_auth(ch_http_ctx_t *x, unsigned need, ch__rest_fn fn, int ok_status, int unified) {
  ch__rq_t *q = ch_xcalloc(1, sizeof(*q));
  q->x = x;
  q->loop = x->c->loop;
  q->fn = fn;
  q->need = need;
  q->ok_status = ok_status;
  q->unified = unified;
  const char *cred = NULL;
  if (ch_auth_cred_from_request(x->req, &cred) != 0) {
    ch__rest_err(q, 401, "unauthenticated",
                 "missing credential: send Authorization: Bearer <token or API key>, or ?token=");
    return;
  }
  ch_proto_authenticate(q->loop, cred, ch__rest_auth_cb, q);
}

/* ---- request helpers --------------------------------------------------------------- */

static const char *ch__param(ch_http_ctx_t *x, const char *name) {
  for (size_t i = 0; i < x->match.nparams; i++)
    if (strcmp(x->match.params[i].name, name) == 0) return x->match.params[i].value;
  return NULL;
}

/* ?k=<decimal> (at most max): 0 with *out (def when absent), or CH_EINVAL. */
static int ch__q_uint(ch_http_req_t *req, const char *k, uint64_t def, uint64_t max, uint64_t *out) {
  const char *v = ch_http_req_query_param(req, k);
  *out = def;
  if (v == NULL) return 0;
  if (*v == '\0' || strlen(v) > 20) return CH_EINVAL;
  uint64_t n = 0;
  for (const char *p = v; *p; p++) {
    if (*p < '0' || *p > '9') return CH_EINVAL;
    uint64_t d = (uint64_t)(*p - '0');
    if (n > (UINT64_MAX - d) / 10) return CH_EINVAL;
    n = n * 10 + d;
  }
  if (n > max) return CH_EINVAL;
  *out = n;
  return 0;
}

/* ?k=1|true|0|false ("" and "?k" mean true): 0 with *out, or CH_EINVAL. */
static int ch__q_bool(ch_http_req_t *req, const char *k, int *out) {
  const char *v = ch_http_req_query_param(req, k);
  *out = 0;
  if (v == NULL) return 0;
  if (!*v || !strcmp(v, "1") || !strcmp(v, "true")) *out = 1;
  else if (strcmp(v, "0") != 0 && strcmp(v, "false") != 0) return CH_EINVAL;
  return 0;
}

static const char *ch__source(ch_http_req_t *req, const char *def) {
  const char *s = ch_http_req_query_param(req, "source");
  return s && *s && strlen(s) < 33 ? s : def;
}

/* ---- conversations ----------------------------------------------------------------- */

static void ch__conv_list_fn(ch__rq_t *q) {
  ch_http_req_t *req = q->x->req;
  uint64_t limit, offset;
  if (ch__q_uint(req, "limit", 0, 1000, &limit) || ch__q_uint(req, "offset", 0, UINT32_MAX, &offset)) {
    ch__rest_err(q, 400, "invalid", "limit must be 0..1000 and offset a non-negative integer");
    return;
  }
  ch_hub_conv_list(q->loop, q->id.user_id, q->id.scopes, ch_http_req_query_param(req, "projectId"),
                   ch_http_req_query_param(req, "search"), (size_t)limit, (size_t)offset, ch__rest_json_cb, q);
}
static void ch__conv_list(ch_http_ctx_t *x) { ch__rest_auth(x, CH_SCOPE_READ, ch__conv_list_fn, 200, 0); }

static void ch__conv_create_fn(ch__rq_t *q) {
  ch_http_req_t *req = q->x->req;
  ch_hub_conv_create(q->loop, q->id.user_id, q->id.scopes, req->body.base, req->body.len, ch__rest_json_cb, q);
}
static void ch__conv_create(ch_http_ctx_t *x) { ch__rest_auth(x, CH_SCOPE_WRITE, ch__conv_create_fn, 201, 0); }

static void ch__conv_get_fn(ch__rq_t *q) {
  int with = 0;
  if (ch__q_bool(q->x->req, "messages", &with)) {
    ch__rest_err(q, 400, "invalid", "messages must be true or false");
    return;
  }
  ch_hub_conv_get(q->loop, q->id.user_id, q->id.scopes, ch__param(q->x, "id"), with, ch__rest_json_cb, q);
}
static void ch__conv_get(ch_http_ctx_t *x) { ch__rest_auth(x, CH_SCOPE_READ, ch__conv_get_fn, 200, 0); }

/* GET /api/conversations/:id/presence[?limit=N]: who is here (N 0..10000: 0 = counts only). */
static void ch__conv_presence_fn(ch__rq_t *q) {
  uint64_t limit;
  if (ch__q_uint(q->x->req, "limit", 10000, 10000, &limit)) {
    ch__rest_err(q, 400, "invalid", "limit must be 0..10000");
    return;
  }
  ch_client_presence_query(q->loop, q->id.user_id, q->id.scopes, ch__param(q->x, "id"), (size_t)limit,
                           ch__rest_json_cb, q);
}
static void ch__conv_presence(ch_http_ctx_t *x) { ch__rest_auth(x, CH_SCOPE_READ, ch__conv_presence_fn, 200, 0); }

static void ch__conv_patch_fn(ch__rq_t *q) {
  ch_http_req_t *req = q->x->req;
  ch_hub_conv_update(q->loop, q->id.user_id, q->id.scopes, ch__param(q->x, "id"), req->body.base, req->body.len,
                     ch__rest_json_cb, q);
}
static void ch__conv_patch(ch_http_ctx_t *x) { ch__rest_auth(x, CH_SCOPE_WRITE, ch__conv_patch_fn, 200, 0); }

static void ch__conv_delete_fn(ch__rq_t *q) {
  ch_hub_conv_delete(q->loop, q->id.user_id, q->id.scopes, ch__param(q->x, "id"), ch__rest_json_cb, q);
}
static void ch__conv_delete(ch_http_ctx_t *x) { ch__rest_auth(x, CH_SCOPE_WRITE, ch__conv_delete_fn, 200, 0); }

static void ch__messages_get_fn(ch__rq_t *q) {
  ch_http_req_t *req = q->x->req;
  uint64_t after, limit;
  int tail;
  if (ch__q_uint(req, "after", 0, UINT64_MAX, &after) || ch__q_uint(req, "limit", 0, 1000, &limit) ||
      ch__q_bool(req, "tail", &tail)) {
    ch__rest_err(q, 400, "invalid", "after must be a seq, limit 0..1000, tail true or false");
    return;
  }
  ch_hub_events_page(q->loop, q->id.user_id, q->id.scopes, ch__param(q->x, "id"), after, (size_t)limit, tail,
                     ch__rest_json_cb, q);
}
static void ch__messages_get(ch_http_ctx_t *x) { ch__rest_auth(x, CH_SCOPE_READ, ch__messages_get_fn, 200, 0); }

static void ch__messages_post_cb(void *ud, const ch_msg_out_t *out) {
  ch__rq_t *q = ud;
  if (out->status != 0) {
    ch__rest_err(q, ch__http_status(out->code), out->code, out->error);
    return;
  }
  ch__rest_data(q, out->duplicate ? 200 : 201, out->message_json, out->message_len);
}

static void ch__messages_post_fn(ch__rq_t *q) {
  ch_http_req_t *req = q->x->req;
  ch_msg_in_t in = {.conv = ch__param(q->x, "id"), .message_json = req->body.base ? req->body.base : "",
                    .len = req->body.len, .user_id = q->id.user_id, .device_id = q->id.device_id,
                    .source = ch__source(req, "api"), .scopes = q->id.scopes};
  ch_hub_send_message(q->loop, &in, ch__messages_post_cb, q);
}
static void ch__messages_post(ch_http_ctx_t *x) { ch__rest_auth(x, CH_SCOPE_WRITE, ch__messages_post_fn, 201, 0); }

/* {"event","payload"} -> the native event document, or the error text. */
static const char *ch__event_doc(ch__rq_t *q, ch_buf_t *doc) {
  ch_http_req_t *req = q->x->req;
  cJSON *o = cJSON_ParseWithLength(req->body.base ? req->body.base : "", req->body.len);
  const char *bad = NULL;
  if (!cJSON_IsObject(o)) {
    bad = "the body must be a JSON object {\"event\",\"payload\"}";
    goto Exit;
  }
  cJSON *ev = cJSON_GetObjectItemCaseSensitive(o, "event");
  if (!cJSON_IsString(ev) || !*ev->valuestring || strlen(ev->valuestring) > CH__EVENT_NAME_MAX) {
    bad = "\"event\" must be a string of 1..64 bytes";
    goto Exit;
  }
  const char *conv = ch__param(q->x, "id");
  char ts[CH_ISO8601_LEN + 1];
  ch_clock_iso8601(ch_clock_wall_ms(), ts);
  ch_buf_append_str(doc, "{\"type\":\"event\",\"conversationId\":");
  ch_buf_append_json_qstr(doc, conv);
  ch_buf_append_str(doc, ",\"clientId\":null,\"source\":");
  ch_buf_append_json_qstr(doc, ch__source(req, "api"));
  ch_buf_append_str(doc, ",\"userId\":");
  ch_buf_append_json_qstr(doc, q->id.user_id);
  ch_buf_append_str(doc, ",\"event\":");
  ch_buf_append_json_qstr(doc, ev->valuestring);
  ch_buf_append_str(doc, ",\"payload\":");
  cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "payload");
  char *pt = p ? cJSON_PrintUnformatted(p) : NULL;
  ch_buf_append_str(doc, pt ? pt : "null");
  cJSON_free(pt);
  ch_buf_printf(doc, ",\"timestamp\":\"%s\"}", ts);
Exit:
  cJSON_Delete(o);
  return bad;
}

static void ch__conv_event_fn(ch__rq_t *q) {
  ch_buf_t doc = CH_BUF_INIT;
  const char *bad = ch__event_doc(q, &doc);
  q->flat = 1; /* {"success":true,"delivered":N} like the user channel's publish */
  if (bad) ch__rest_err(q, 400, "invalid", bad);
  else ch_hub_conv_publish_event(q->loop, q->id.user_id, q->id.scopes, ch__param(q->x, "id"), doc.base, doc.len,
                                 ch__rest_json_cb, q);
  ch_buf_dispose(&doc);
}
static void ch__conv_event(ch_http_ctx_t *x) {
  ch__rest_auth(x, CH_SCOPE_WRITE, ch__conv_event_fn, 202, 0);
}

static void ch__sse_fn(ch__rq_t *q) {
  ch_http_ctx_t *x = q->x;
  ch_identity_t id = q->id;
  ch__rq_free(q);
  ch__proto_sse_events(x, &id);
}
static void ch__sse(ch_http_ctx_t *x) { ch__rest_auth(x, CH_SCOPE_READ, ch__sse_fn, 200, 0); }

/* ---- projects ------------------------------------------------------------------------ */

static void ch__project_list_fn(ch__rq_t *q) {
  ch_hub_project_list(q->loop, q->id.user_id, q->id.scopes, ch__rest_json_cb, q);
}
static void ch__project_list(ch_http_ctx_t *x) { ch__rest_auth(x, CH_SCOPE_READ, ch__project_list_fn, 200, 0); }

static void ch__project_create_fn(ch__rq_t *q) {
  ch_http_req_t *req = q->x->req;
  ch_hub_project_create(q->loop, q->id.user_id, q->id.scopes, req->body.base, req->body.len, ch__rest_json_cb, q);
}
static void ch__project_create(ch_http_ctx_t *x) {
  ch__rest_auth(x, CH_SCOPE_WRITE, ch__project_create_fn, 201, 0);
}

static void ch__project_get_fn(ch__rq_t *q) {
  ch_hub_project_get(q->loop, q->id.user_id, q->id.scopes, ch__param(q->x, "id"), ch__rest_json_cb, q);
}
static void ch__project_get(ch_http_ctx_t *x) { ch__rest_auth(x, CH_SCOPE_READ, ch__project_get_fn, 200, 0); }

/* ---- user events (profile device-sync's back end) ---------------------------------- */

static void ch__user_event_fn(ch__rq_t *q) {
  ch_http_req_t *req = q->x->req;
  /* The application's back end: an admin credential, or an API key that may write. */
  if (!(q->id.scopes & CH_SCOPE_ADMIN) &&
      !(q->id.kind == CH_AUTH_KIND_APIKEY && ch_auth_scopes_allow(q->id.scopes, CH_SCOPE_WRITE))) {
    ch__rest_err(q, 403, "forbidden", "publishing to a user needs an admin credential or an API key");
    return;
  }
  const char *target = ch__param(q->x, "userId");
  if (!ch_auth_id_valid(target)) {
    ch__rest_err(q, 400, "invalid", "not a valid user id");
    return;
  }
  cJSON *o = cJSON_ParseWithLength(req->body.base ? req->body.base : "", req->body.len);
  cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
  if (!cJSON_IsObject(o) || !cJSON_IsString(type) || !*type->valuestring ||
      strlen(type->valuestring) > CH__EVENT_NAME_MAX) {
    cJSON_Delete(o);
    ch__rest_err(q, 400, "invalid", "the body must be {\"type\":\"<1..64 bytes>\",\"payload\":...}");
    return;
  }
  ch_buf_t doc = CH_BUF_INIT;
  char ts[CH_ISO8601_LEN + 1];
  ch_clock_iso8601(ch_clock_wall_ms(), ts);
  ch_buf_append_str(&doc, "{\"type\":");
  ch_buf_append_json_qstr(&doc, type->valuestring);
  ch_buf_append_str(&doc, ",\"payload\":");
  cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "payload");
  char *pt = p ? cJSON_PrintUnformatted(p) : NULL;
  ch_buf_append_str(&doc, pt ? pt : "{}");
  cJSON_free(pt);
  ch_buf_printf(&doc, ",\"timestamp\":\"%s\"}", ts);
  cJSON_Delete(o);
  q->flat = 1;
  ch_hub_user_publish(q->loop, target, doc.base, doc.len, ch__rest_json_cb, q);
  ch_buf_dispose(&doc);
}
static void ch__user_event(ch_http_ctx_t *x) { ch__rest_auth(x, 0, ch__user_event_fn, 202, 0); }

/* ---- /ws/stats (profile unified) ------------------------------------------------------ */

typedef struct {
  char source[33];
  uint64_t n;
} ch__src_count_t;

typedef struct {
  ch__rq_t *q;              /* owned until the answer */
  ch_server_t *srv;         /* not owned */
  char *hub_json;           /* owned: the hub's counts */
  uv_mutex_t mu;            /* guards a / na / pending */
  ch__src_count_t *a;       /* owned */
  size_t na;
  int pending;              /* loops still to visit */
} ch__stats_t;

static void ch__stats_add(ch__stats_t *g, const char *src, uint64_t n) {
  for (size_t i = 0; i < g->na; i++)
    if (strcmp(g->a[i].source, src) == 0) {
      g->a[i].n += n;
      return;
    }
  g->a = ch_xrealloc(g->a, (g->na + 1) * sizeof(*g->a));
  snprintf(g->a[g->na].source, sizeof(g->a[g->na].source), "%s", src);
  g->a[g->na++].n = n;
}

static void ch__stats_finish(ch__stats_t *g) {
  ch__rq_t *q = g->q;
  ch_server_t *s = g->srv;
  cJSON *h = cJSON_Parse(g->hub_json);
  double rooms = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(h, "activeRooms"));
  double convs = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(h, "totalConversations"));
  double msgs = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(h, "totalMessages"));
  cJSON_Delete(h);
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_printf(&b, "{\"success\":true,\"data\":{\"websocket\":{\"connectedClients\":%llu,\"activeRooms\":%.0f,"
                    "\"clientsBySource\":{",
                (unsigned long long)CH_SERVER_STAT(s, ws_open), rooms == rooms ? rooms : 0);
  for (size_t i = 0; i < g->na; i++) {
    if (i) ch_buf_append_byte(&b, ',');
    ch_buf_append_json_qstr(&b, g->a[i].source);
    ch_buf_printf(&b, ":%llu", (unsigned long long)g->a[i].n);
  }
  ch_buf_printf(&b, "}},\"conversations\":{\"totalConversations\":%.0f,\"totalMessages\":%.0f}}}",
                convs == convs ? convs : 0, msgs == msgs ? msgs : 0);
  ch_http_reply_json(q->x, 200, b.base, b.len);
  ch_buf_dispose(&b);
  ch__rq_free(q);
  uv_mutex_destroy(&g->mu);
  free(g->a);
  free(g->hub_json);
  free(g);
}

static void ch__stats_finish_task(ch_loop_t *l, void *arg) { ch__stats_finish(arg); }

/* On each loop: count its WebSocket clients by source. */
static void ch__stats_loop_task(ch_loop_t *l, void *arg) {
  ch__stats_t *g = arg;
  uv_thread_t self = uv_thread_self();
  int on_loop = uv_thread_equal(&self, &l->thread);
  uv_mutex_lock(&g->mu);
  if (l->clients) {
    const char *k;
    size_t kl;
    void *v;
    for (size_t it = 0; ch_map_next(l->clients, &it, &k, &kl, &v);) {
      ch_client_t *cl = v;
      if (cl->c && cl->c->proto && cl->c->proto->name && strcmp(cl->c->proto->name, "ws") == 0)
        ch__stats_add(g, cl->source[0] ? cl->source : "unknown", 1);
    }
  }
  int last = --g->pending == 0;
  uv_mutex_unlock(&g->mu);
  if (!last) return;
  /* Not on the loop's thread: the process is joining its stopped loops (all
   * loop threads are gone), so finishing here is safe; posting is not. */
  if (!on_loop || l == g->q->loop) ch__stats_finish(g);
  else ch_loop_post(g->q->loop, ch__stats_finish_task, g);
}

static void ch__stats_counts_cb(void *ud, int status, const char *code, const char *error, const char *json,
                                size_t len) {
  ch__rq_t *q = ud;
  if (status != 0) {
    ch__rest_err(q, 500, code, error);
    return;
  }
  ch__stats_t *g = ch_xcalloc(1, sizeof(*g));
  g->q = q;
  g->srv = q->x->app;
  g->hub_json = ch_xstrndup(json, len);
  uv_mutex_init(&g->mu);
  g->pending = g->srv->nloops;
  for (int i = 0; i < g->srv->nloops; i++) ch_loop_post(g->srv->loops[i], ch__stats_loop_task, g);
}

static void ch__stats_fn(ch__rq_t *q) { ch_hub_stats_counts(q->loop, ch__stats_counts_cb, q); }
static void ch__stats(ch_http_ctx_t *x) { ch__rest_auth(x, 0, ch__stats_fn, 200, 0); }

/* ---- /api/chat (profile unified) ------------------------------------------------------- */

static const char ch__not_found[] = "Conversation not found";

/* GET /api/chat/:id — the conversation with its messages and "participants"
 * (the distinct message sources, in order of first appearance). */
static void ch__chat_get_cb(void *ud, int status, const char *code, const char *error, const char *json,
                            size_t len) {
  ch__rq_t *q = ud;
  if (status != 0) {
    int hs = ch__http_status(code);
    ch__rest_err(q, hs, code, hs == 404 ? ch__not_found : error);
    return;
  }
  cJSON *o = cJSON_ParseWithLength(json, len);
  cJSON *parts = cJSON_CreateArray();
  cJSON *m;
  cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(o, "messages")) {
    cJSON *src = cJSON_GetObjectItemCaseSensitive(m, "source");
    if (!cJSON_IsString(src)) continue;
    int seen = 0;
    cJSON *p;
    cJSON_ArrayForEach(p, parts) seen |= strcmp(p->valuestring, src->valuestring) == 0;
    if (!seen) cJSON_AddItemToArray(parts, cJSON_CreateString(src->valuestring));
  }
  char *pt = cJSON_PrintUnformatted(parts);
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append(&b, json, len - 1); /* without the closing brace */
  ch_buf_append_str(&b, ",\"participants\":");
  ch_buf_append_str(&b, pt);
  ch_buf_append_byte(&b, '}');
  cJSON_free(pt);
  cJSON_Delete(parts);
  cJSON_Delete(o);
  ch__rest_data(q, 200, b.base, b.len);
  ch_buf_dispose(&b);
}

static void ch__chat_get_fn(ch__rq_t *q) {
  ch_hub_conv_get(q->loop, q->id.user_id, q->id.scopes, ch__param(q->x, "id"), 1, ch__chat_get_cb, q);
}
static void ch__chat_get(ch_http_ctx_t *x) { ch__rest_auth(x, CH_SCOPE_READ, ch__chat_get_fn, 200, 1); }

static void ch__chat_delete_cb(void *ud, int status, const char *code, const char *error, const char *json,
                               size_t len) {
  ch__rq_t *q = ud;
  if (status != 0) {
    int hs = ch__http_status(code);
    ch__rest_err(q, hs, code, hs == 404 ? ch__not_found : error);
    return;
  }
  static const char body[] = "{\"success\":true,\"message\":\"Conversation cleared\"}";
  ch_http_reply_json(q->x, 200, body, sizeof(body) - 1);
  ch__rq_free(q);
}

static void ch__chat_delete_fn(ch__rq_t *q) {
  ch_hub_conv_delete(q->loop, q->id.user_id, q->id.scopes, ch__param(q->x, "id"), ch__chat_delete_cb, q);
}
static void ch__chat_delete(ch_http_ctx_t *x) { ch__rest_auth(x, CH_SCOPE_WRITE, ch__chat_delete_fn, 200, 1); }

/* POST /api/chat once the body is valid:
 *
 *   resolve the agent (the conversation's, else the first configured; hub thread)
 *     ├─ an agent: rate limit (429) ─> watcher: subscribe "c:<conv>", store the prompt
 *     │    stored ─> SSE start ─> chunk per delta ─> done (the stored assistant message) | error
 *     └─ none: store the prompt ─> SSE start ─> done with "message":null
 *                                  (or error, when the conversation names an agent not configured)
 *
 * A chunk's "messageId" is the reply's stream id: the assistant message gets
 * its id only when it is stored at the end; the stored message carries the
 * same value as "streamId", and done's "messageId" is its id. The state below
 * lives until the SSE stream closes (or until an answer before it); a client
 * that leaves mid-reply only detaches the watcher (the reply goes on, stored
 * and accounted). */
typedef struct {
  ch__rq_t *q;            /* the request until the stream starts (then NULL) */
  ch_sse_t *sse;          /* the stream once started; NULL after it closed */
  ch__proto_watch_t *w;   /* the reply being followed, or NULL */
  char *text;             /* owned: the user message object (JSON) */
  char *conv;             /* owned: the conversation (the request's is gone with q) */
  char agent[65];         /* the answering agent ("" = none) */
  char missing[65];       /* the conversation's agent when it is not configured */
} ch__chat_t;

static void ch__chat_free(ch__chat_t *c) {
  ch__proto_watch_detach(c->w);
  free(c->text);
  free(c->conv);
  free(c);
}

static void ch__chat_sse_close(ch_sse_t *s) {
  ch__chat_t *c = s->udata;
  if (c) ch__chat_free(c);
}

static const ch_sse_handler_t ch__chat_sse = {.name = "chat", .on_close = ch__chat_sse_close};

/* data: {"type":type,"conversationId":conv<rest_json>} */
static void ch__chat_send(ch_sse_t *s, const char *type, const char *conv, const char *rest_json) {
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_printf(&b, "{\"type\":\"%s\",\"conversationId\":", type);
  ch_buf_append_json_qstr(&b, conv);
  ch_buf_append_str(&b, rest_json);
  ch_buf_append_byte(&b, '}');
  ch_sse_send(s, NULL, NULL, b.base, b.len);
  ch_buf_dispose(&b);
}

/* The prompt is stored (or refused): answer, or start the event stream. */
static void ch__chat_stored(ch__chat_t *c, const ch_msg_out_t *out) {
  ch__rq_t *q = c->q;
  ch_http_ctx_t *x = q->x;
  c->q = NULL;
  if (out->status != 0 || x->c == NULL) {
    if (out->status != 0) c->w = NULL; /* a refused prompt's watcher is gone; a stored one goes on, detached */
    ch__rest_err(q, out->status ? ch__http_status(out->code) : 500, out->code, out->error);
    ch__chat_free(c);
    return;
  }
  c->sse = ch_sse_start(x, &ch__chat_sse, c);
  ch_buf_t rest = CH_BUF_INIT;
  ch_buf_append_str(&rest, ",\"messageId\":");
  ch_buf_append_json_qstr(&rest, out->id);
  ch__chat_send(c->sse, "start", q->conv, ch_buf_cstr(&rest));
  ch_buf_dispose(&rest);
  if (c->agent[0] == '\0') { /* nobody answers */
    if (c->missing[0]) {
      rest.len = 0;
      ch_buf_printf(&rest, ",\"error\":\"agent '%s' is not configured\"", c->missing); /* [A-Za-z0-9_-] */
      ch__chat_send(c->sse, "error", q->conv, ch_buf_cstr(&rest));
      ch_buf_dispose(&rest);
    } else {
      ch__chat_send(c->sse, "done", q->conv, ",\"messageId\":null,\"message\":null");
    }
    ch_sse_end(c->sse);
  }
  ch__rq_free(q);
}

static void ch__chat_on_sent(void *owner, const ch_msg_out_t *out) { ch__chat_stored(owner, out); }

static void ch__chat_sent_cb(void *ud, const ch_msg_out_t *out) { ch__chat_stored(ud, out); }

static void ch__chat_on_chunk(void *owner, const char *stream_id, const char *delta, size_t len) {
  ch__chat_t *c = owner;
  if (c->sse == NULL) return;
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "{\"type\":\"chunk\",\"conversationId\":");
  ch_buf_append_json_qstr(&b, c->conv);
  ch_buf_append_str(&b, ",\"messageId\":");
  ch_buf_append_json_qstr(&b, stream_id);
  ch_buf_append_str(&b, ",\"content\":\"");
  ch_buf_append_json_str(&b, delta, len);
  ch_buf_append_str(&b, "\"}");
  ch_sse_send(c->sse, NULL, NULL, b.base, b.len);
  ch_buf_dispose(&b);
}

static void ch__chat_on_end(void *owner, const char *stream_id, const char *message, size_t mlen, const char *err) {
  (void)stream_id;
  ch__chat_t *c = owner;
  c->w = NULL;
  if (c->sse == NULL) return;
  const char *conv = c->conv;
  ch_buf_t rest = CH_BUF_INIT;
  if (err) {
    ch_buf_append_str(&rest, ",\"error\":");
    ch_buf_append_json_qstr(&rest, err);
    ch__chat_send(c->sse, "error", conv, ch_buf_cstr(&rest));
  } else {
    cJSON *m = message ? cJSON_ParseWithLength(message, mlen) : NULL;
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "id"));
    ch_buf_append_str(&rest, ",\"messageId\":");
    if (id) ch_buf_append_json_qstr(&rest, id);
    else ch_buf_append_str(&rest, "null");
    ch_buf_append_str(&rest, ",\"message\":");
    if (message) ch_buf_append(&rest, message, mlen);
    else ch_buf_append_str(&rest, "null");
    cJSON_Delete(m);
    ch__chat_send(c->sse, "done", conv, ch_buf_cstr(&rest));
  }
  ch_buf_dispose(&rest);
  ch_sse_end(c->sse);
}

static const ch__proto_watch_ops_t ch__chat_watch_ops = {ch__chat_on_sent, ch__chat_on_chunk, ch__chat_on_end};

static void ch__chat_resolved(void *ud, const char *agent, const char *missing) {
  ch__chat_t *c = ud;
  ch__rq_t *q = c->q;
  if (q->x->c == NULL) { /* the client left: nothing stored, nothing to answer */
    c->q = NULL;
    ch__rest_err(q, 500, "gone", "gone");
    ch__chat_free(c);
    return;
  }
  snprintf(c->agent, sizeof(c->agent), "%s", agent ? agent : "");
  snprintf(c->missing, sizeof(c->missing), "%s", missing ? missing : "");
  int64_t retry = 0;
  if (agent && ch__proto_rate_take(&q->id, &retry) != 0) {
    char msg[96], hdr[64];
    ch__proto_rate_message(msg, sizeof(msg), retry);
    long secs = (long)((retry + 999) / 1000);
    snprintf(hdr, sizeof(hdr), "Retry-After: %ld\r\n", secs < 1 ? 1 : secs);
    ch_buf_t b = CH_BUF_INIT;
    ch_buf_append_str(&b, "{\"success\":false,\"error\":");
    ch_buf_append_json_qstr(&b, msg);
    ch_buf_printf(&b, ",\"code\":\"rate_limited\",\"retryAfter\":%ld}", secs < 1 ? 1 : secs);
    ch_http_reply(q->x, 429, "application/json", b.base, b.len, hdr);
    ch_buf_dispose(&b);
    c->q = NULL;
    ch__rq_free(q);
    ch__chat_free(c);
    return;
  }
  ch_msg_in_t in = {.conv = q->conv, .message_json = c->text, .len = strlen(c->text), .user_id = q->id.user_id,
                    .device_id = q->id.device_id, .source = "web", .scopes = q->id.scopes,
                    .agent = agent};
  if (agent == NULL) {
    ch_hub_send_message(q->loop, &in, ch__chat_sent_cb, c);
    return;
  }
  ch_buf_t err = CH_BUF_INIT;
  if (ch__proto_watch_send(q->loop, &in, &q->id, &ch__chat_watch_ops, c, &c->w, &err) != 0) {
    c->q = NULL;
    ch__rest_err(q, 400, "invalid", ch_buf_cstr(&err));
    ch__chat_free(c);
  }
  ch_buf_dispose(&err);
}

static void ch__chat_post_fn(ch__rq_t *q) {
  ch_http_req_t *req = q->x->req;
  cJSON *o = cJSON_ParseWithLength(req->body.base ? req->body.base : "", req->body.len);
  cJSON *msg = cJSON_GetObjectItemCaseSensitive(o, "message");
  cJSON *cid = cJSON_GetObjectItemCaseSensitive(o, "conversationId");
  cJSON *ctx = cJSON_GetObjectItemCaseSensitive(o, "context");
  cJSON *m = NULL;
  const char *bad = NULL;
  if (!cJSON_IsObject(o) || !cJSON_IsString(msg) || !*msg->valuestring) bad = "Message is required";
  else if (cid && !cJSON_IsNull(cid) &&
           !(cJSON_IsString(cid) && *cid->valuestring && strlen(cid->valuestring) <= 128))
    bad = "conversationId must be a string of 1..128 bytes";
  else if (ctx && !cJSON_IsNull(ctx) && !cJSON_IsObject(ctx))
    bad = "context must be an object";
  if (bad) {
    ch__rest_err(q, 400, "invalid", bad);
    goto Exit;
  }
  char uuid[37];
  ch_uuid4(uuid);
  q->conv = ch_xstrdup(cJSON_IsString(cid) ? cid->valuestring : uuid);
  m = cJSON_CreateObject();
  cJSON_AddStringToObject(m, "role", "user");
  cJSON_AddStringToObject(m, "content", msg->valuestring);
  cJSON_AddStringToObject(m, "source", "web");
  if (cJSON_IsObject(ctx)) cJSON_AddItemToObject(m, "context", cJSON_Duplicate(ctx, 1));
  char *text = cJSON_PrintUnformatted(m);
  ch__chat_t *c = ch_xcalloc(1, sizeof(*c));
  c->text = ch_xstrdup(text);
  c->conv = ch_xstrdup(q->conv);
  c->q = q;
  cJSON_free(text);
  ch__proto_agent_resolve(q->loop, q->conv, ch__chat_resolved, c);
Exit:
  cJSON_Delete(m);
  cJSON_Delete(o);
}
static void ch__chat_post(ch_http_ctx_t *x) { ch__rest_auth(x, CH_SCOPE_WRITE, ch__chat_post_fn, 200, 1); }

/* ---- routes ---------------------------------------------------------------------------- */

static const ch_http_route_t ch__rest_routes[] = {
    {"GET", "/api/conversations", ch__conv_list, 0},
    {"POST", "/api/conversations", ch__conv_create, 0},
    {"GET", "/api/conversations/:id", ch__conv_get, 0},
    {"GET", "/api/conversations/:id/presence", ch__conv_presence, 0},
    {"PATCH", "/api/conversations/:id", ch__conv_patch, 0},
    {"DELETE", "/api/conversations/:id", ch__conv_delete, 0},
    {"GET", "/api/conversations/:id/messages", ch__messages_get, 0},
    {"POST", "/api/conversations/:id/messages", ch__messages_post, 0},
    {"GET", "/api/conversations/:id/events", ch__sse, 0},
    {"POST", "/api/conversations/:id/events", ch__conv_event, 0},
    {"GET", "/api/projects", ch__project_list, 0},
    {"POST", "/api/projects", ch__project_create, 0},
    {"GET", "/api/projects/:id", ch__project_get, 0},
    {"POST", "/api/users/:userId/events", ch__user_event, 0},
    {"GET", "/ws/stats", ch__stats, 0},
    {"GET", "/api/chat/:id", ch__chat_get, 0},
    {"DELETE", "/api/chat/:id", ch__chat_delete, 0},
    {"POST", "/api/chat", ch__chat_post, 0},
};

void ch_proto_routes_rest(ch_http_router_t *r) {
  for (size_t i = 0; i < sizeof(ch__rest_routes) / sizeof(ch__rest_routes[0]); i++)
    ch_http_router_add(r, ch__rest_routes[i].method, ch__rest_routes[i].pattern, (void *)&ch__rest_routes[i], NULL);
}
