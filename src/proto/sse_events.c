/*
 * sse_events.c — GET /api/conversations/:id/events: a conversation's events
 * as a Server-Sent Events stream, resumable with Last-Event-ID.
 *
 *   authenticated request (rest.c) ─> parse ?since= ?limit= ?epoch= ?source=
 *     ─> hub: ch_hub_conv_get (exists? may this user read it?)
 *          forbidden ─> 403 JSON            (an unknown id is allowed, as a /ws join)
 *     ─> ch_sse_start (200 text/event-stream) ─> ch_client_init + ch_client_join
 *          subscribe "c:<id>" NOW, buffer ─> hub: catch-up after `since` ─> joined():
 *          one SSE event per caught-up message ─> buffered live events (seq filter) ─> live
 *
 * It is the WebSocket join's gap-free guarantee (hub/client.h) with an SSE
 * renderer: the stream is a ch_client_t like any profile's connection.
 *
 * Wire format (one event per block):
 *   id: <seq>              only on stored events (messages): the client's resume point
 *   event: message | presence | typing | event | conversation | reset | sync | error
 *   data: <the native JSON document, exactly as a /ws client gets it>
 * Catch-up messages are rendered {"type":"message","conversationId","seq","message"}
 * like live ones. After the catch-up comes one `sync` event without an id
 * ({"type":"sync","conversationId","lastSeq","epoch","count","presence"[,"truncated"]});
 * when the resume point is of another epoch or beyond lastSeq, a `reset` event
 * precedes the catch-up (the newest events follow: the client reloads). An
 * error (e.g. the join was refused) is an `error` event, then the stream ends.
 * Heartbeat comments keep proxies and dead-peer detection busy (sse/stream.c).
 *
 * Resume point: the Last-Event-ID header (an EventSource reconnecting) wins
 * over ?since=; an unparseable header is ignored, an unparseable ?since= is 400.
 *
 * Lifetime: ch__ssec_t is allocated per request; before the stream starts it
 * is freed by the answer, afterwards by the stream's on_close (which also
 * disposes the client: unsubscribe, presence cleanup).
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/err.h"
#include "hub/client.h"
#include "hub/convops.h"
#include "proto/proto.h"
#include "sse/sse.h"
#include "sse/stream.h"

#include "proto/internal.h"

typedef struct {
  ch_client_t cl;                   /* first: ops get &cl */
  ch_http_ctx_t *x;                 /* until the stream starts (then NULL) */
  ch_sse_t *sse;                    /* the stream (owned by the connection), once started */
  ch_identity_t id;                 /* the caller */
  char conv[CH_AUTH_ID_MAX + 1];
  char source[33];
  char epoch[64];                   /* "" = none */
  int has_since;
  uint64_t since;
  size_t limit;
  int ended;                        /* ch_sse_end was called */
} ch__ssec_t;

static void ch__reply_err(ch_http_ctx_t *x, int status, const char *code, const char *msg) {
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "{\"success\":false,\"error\":");
  ch_buf_append_json_qstr(&b, msg);
  ch_buf_append_str(&b, ",\"code\":");
  ch_buf_append_json_qstr(&b, code);
  ch_buf_append_byte(&b, '}');
  ch_http_reply_json(x, status, b.base, b.len);
  ch_buf_dispose(&b);
}

/* ---- rendering (ch_client_ops_t) ------------------------------------------------------ */

static void ch__sse_send_json(ch_client_t *cl, const char *json, size_t len) {
  ch__ssec_t *e = (ch__ssec_t *)cl;
  if (e->ended) return;
  int is_error = len >= 15 && memcmp(json, "{\"type\":\"error\"", 15) == 0;
  ch_sse_send(e->sse, NULL, is_error ? "error" : NULL, json, len);
  if (is_error) { /* for this stream an error is final: the join was refused */
    e->ended = 1;
    ch_sse_end(e->sse);
  }
}

static void ch__sse_deliver(ch_client_t *cl, ch_csub_t *sub, ch_bcast_t *b) {
  static const char deleted[] = "{\"type\":\"conversation\",\"op\":\"deleted\"";
  ch__ssec_t *e = (ch__ssec_t *)cl;
  if (e->ended) return;
  ch_sse_send_chunk(e->sse, ch_bcast_frame(b, CH_FMT_SSE));
  /* The conversation was deleted: a re-created one counts seqs from 1 again,
   * which the seq filter must let through (hub/convops.h publishes this prefix). */
  if (sub && b->seq == 0 && b->json->len >= sizeof(deleted) - 1 &&
      memcmp(b->json->data, deleted, sizeof(deleted) - 1) == 0)
    sub->last_seq = 0;
}

static void ch__sse_event_doc(ch__ssec_t *e, const char *event, cJSON *extra_from, const char *type) {
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_printf(&b, "{\"type\":\"%s\",\"conversationId\":", type);
  ch_buf_append_json_qstr(&b, e->conv);
  static const char *const keys[] = {"lastSeq", "epoch", "truncated"};
  for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(extra_from, keys[i]);
    if (v == NULL) continue;
    char *t = cJSON_PrintUnformatted(v);
    ch_buf_printf(&b, ",\"%s\":%s", keys[i], t);
    cJSON_free(t);
  }
  if (strcmp(type, "sync") == 0) {
    ch_buf_printf(&b, ",\"count\":%d,\"presence\":",
                  cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(extra_from, "data")));
    cJSON *p = cJSON_GetObjectItemCaseSensitive(extra_from, "presence");
    char *t = p ? cJSON_PrintUnformatted(p) : NULL;
    ch_buf_append_str(&b, t ? t : "[]");
    cJSON_free(t);
    /* a big room's capped list says so (docs/PROTOCOL.md "Presence in big rooms") */
    static const char *const cut[] = {"presenceCount", "presenceTruncated"};
    for (size_t i = 0; i < 2; i++) {
      cJSON *v = cJSON_GetObjectItemCaseSensitive(extra_from, cut[i]);
      if (cJSON_IsNumber(v)) ch_buf_printf(&b, ",\"%s\":%.0f", cut[i], v->valuedouble);
      else if (cJSON_IsBool(v)) ch_buf_printf(&b, ",\"%s\":%s", cut[i], cJSON_IsTrue(v) ? "true" : "false");
    }
  }
  ch_buf_append_byte(&b, '}');
  ch_sse_send(e->sse, NULL, event, b.base, b.len);
  ch_buf_dispose(&b);
}

/* The join's sync document -> [reset], one `message` event per caught-up event, `sync`. */
static void ch__sse_joined(ch_client_t *cl, ch_csub_t *sub, const char *req_id, const char *json, size_t len) {
  ch__ssec_t *e = (ch__ssec_t *)cl;
  if (e->ended) return;
  cJSON *doc = cJSON_ParseWithLength(json, len);
  if (!cJSON_IsObject(doc)) { /* cannot happen: the hub wrote it */
    cJSON_Delete(doc);
    return;
  }
  if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "reset"))) ch__sse_event_doc(e, "reset", doc, "reset");
  ch_buf_t b = CH_BUF_INIT;
  cJSON *ev;
  cJSON_ArrayForEach(ev, cJSON_GetObjectItemCaseSensitive(doc, "data")) {
    double seq = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(ev, "seq"));
    if (!(seq >= 1)) continue;
    char id[24];
    snprintf(id, sizeof(id), "%.0f", seq);
    char *body = cJSON_PrintUnformatted(ev);
    b.len = 0;
    ch_buf_append_str(&b, "{\"type\":\"message\",\"conversationId\":");
    ch_buf_append_json_qstr(&b, e->conv);
    ch_buf_printf(&b, ",\"seq\":%s,\"message\":%s}", id, body);
    cJSON_free(body);
    ch_sse_send(e->sse, id, "message", b.base, b.len);
  }
  ch_buf_dispose(&b);
  ch__sse_event_doc(e, "sync", doc, "sync");
  cJSON_Delete(doc);
}

static const ch_client_ops_t ch__sse_ops = {ch__sse_send_json, ch__sse_deliver, ch__sse_joined};

/* ---- the stream ---------------------------------------------------------------------- */

static void ch__sse_on_close(ch_sse_t *s) {
  ch__ssec_t *e = s->udata;
  ch_client_dispose(&e->cl);
  free(e);
}

static const ch_sse_handler_t ch__sse_handler = {.name = "conversation-events", .on_close = ch__sse_on_close};

/* The access check came back: refuse with JSON, or start the stream and join. */
static void ch__sse_checked(void *ud, int status, const char *code, const char *error, const char *json,
                            size_t len) {
  ch__ssec_t *e = ud;
  ch_http_ctx_t *x = e->x;
  if (x->c == NULL) { /* the client left: free the ctx */
    ch_http_reply_error(x, 500, "client closed the request"); /* x->c is NULL: only frees x */
    free(e);
    return;
  }
  if (status != 0 && strcmp(code, "not_found") != 0) {
    int hs = strcmp(code, "forbidden") == 0 ? 403 : strcmp(code, "invalid") == 0 ? 400 : 500;
    ch__reply_err(x, hs, code, error);
    free(e);
    return;
  }
  ch_conn_t *c = x->c;
  e->x = NULL;
  e->sse = ch_sse_start(x, &ch__sse_handler, e); /* consumes x */
  ch_client_init(&e->cl, c, &ch__sse_ops, e->sse);
  snprintf(e->cl.user_id, sizeof(e->cl.user_id), "%s", e->id.user_id);
  snprintf(e->cl.device_id, sizeof(e->cl.device_id), "%s", e->id.device_id[0] ? e->id.device_id : e->source);
  snprintf(e->cl.source, sizeof(e->cl.source), "%s", e->source);
  e->cl.scopes = e->id.scopes;
  e->cl.authed = 1;
  if (e->sse->has_last_event_id) { /* an EventSource reconnecting: its resume point wins */
    e->has_since = 1;
    e->since = e->sse->last_event_id;
  }
  ch_client_join(&e->cl, e->conv, e->has_since, e->since, e->limit, e->epoch[0] ? e->epoch : NULL, NULL);
}

void ch__proto_sse_events(ch_http_ctx_t *x, const ch_identity_t *id) {
  const char *conv = NULL;
  for (size_t i = 0; i < x->match.nparams; i++)
    if (strcmp(x->match.params[i].name, "id") == 0) conv = x->match.params[i].value;
  if (conv == NULL || strlen(conv) == 0 || strlen(conv) > 128) {
    ch__reply_err(x, 400, "invalid", "a conversation id has 1..128 bytes");
    return;
  }
  ch__ssec_t *e = ch_xcalloc(1, sizeof(*e));
  e->x = x;
  e->id = *id;
  snprintf(e->conv, sizeof(e->conv), "%s", conv);
  const char *src = ch_http_req_query_param(x->req, "source");
  snprintf(e->source, sizeof(e->source), "%s", src && *src ? src : "sse");
  const char *since = ch_http_req_query_param(x->req, "since");
  if (since == NULL) since = ch_http_req_query_param(x->req, "lastEventId");
  if (since) {
    if (ch_sse_last_event_id(since, &e->since) != 0) {
      ch__reply_err(x, 400, "invalid", "since must be a seq (a non-negative integer)");
      free(e);
      return;
    }
    e->has_since = 1;
  }
  const char *limit = ch_http_req_query_param(x->req, "limit");
  uint64_t lim = 0;
  if (limit && (ch_sse_last_event_id(limit, &lim) != 0 || lim > 100000)) {
    ch__reply_err(x, 400, "invalid", "limit must be 0..100000");
    free(e);
    return;
  }
  e->limit = (size_t)lim;
  const char *epoch = ch_http_req_query_param(x->req, "epoch");
  if (epoch && strlen(epoch) >= sizeof(e->epoch)) {
    ch__reply_err(x, 400, "invalid", "epoch is too long");
    free(e);
    return;
  }
  snprintf(e->epoch, sizeof(e->epoch), "%s", epoch ? epoch : "");
  ch_hub_conv_get(x->c->loop, id->user_id, id->scopes, e->conv, 0, ch__sse_checked, e);
}
