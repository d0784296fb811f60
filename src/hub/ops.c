/*
 * ops.c — shared hub operations (see ops.h).
 */
#include "hub/ops.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "auth/auth.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "hub/hub.h"
#include "hub/presence.h"

int ch_hub_may_access(const ch_conv_t *cv, const char *user, unsigned scopes) {
  if (scopes & CH_SCOPE_ADMIN) return 1;
  if (cv->owner && strcmp(cv->owner, user) == 0) return 1;
  for (size_t i = 0; i < cv->nmembers; i++)
    if (strcmp(cv->members[i], user) == 0) return 1;
  return 0;
}

void ch_hub_event_json(ch_buf_t *b, const ch_event_t *ev) {
  const char *body = ev->body && ev->body[0] == '{' ? ev->body : "{}";
  ch_buf_printf(b, "{\"seq\":%llu", (unsigned long long)ev->seq);
  const char *rest = body + 1;
  while (*rest == ' ') rest++;
  if (*rest != '}') ch_buf_append_byte(b, ',');
  ch_buf_append_str(b, rest);
}

/* ---- send a message --------------------------------------------------------- */

typedef struct {
  ch_hub_req_t base;
  unsigned scopes;
  char *agent;         /* owned: explicit agent, or NULL */
  ch_event_t ev;       /* owned strings */
  const char *code;
  ch_buf_t stored;     /* the stored message object (with seq) */
  ch_msg_cb cb;
  void *ud;
} ch__send_req_t;

static void ch__send_free(ch_hub_req_t *r) {
  ch__send_req_t *q = (ch__send_req_t *)r;
  free(q->agent);
  ch_event_dispose(&q->ev);
  ch_buf_dispose(&q->stored);
  free(q);
}

typedef struct {
  char *agent, *conv, *source;
  uint64_t seq;
} ch__trigger_t;

static void ch__trigger_after_commit(ch_hub_t *h, void *arg, int ok) {
  ch__trigger_t *t = arg;
  if (ok && ch_agent_trigger(h, t->agent, t->conv, t->seq, t->source) != 0)
    ch_log_warn("agent '%s' named by conversation %s is not configured", t->agent, t->conv);
  free(t->agent);
  free(t->conv);
  free(t->source);
  free(t);
}

static void ch__send_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__send_req_t *q = (ch__send_req_t *)r;
  ch_store_t *st = h->store;
  const ch_conv_t *cv = NULL; /* borrowed from the store until its next call */
  char *conv_agent = NULL;    /* owned: the conversation's default agent, when it answers */
  char key[140];
  snprintf(key, sizeof(key), "c:%s", q->ev.conversation_id);
  int rc = st->ops->conv_peek(st, q->ev.conversation_id, &cv);
  if (rc == 0 && !ch_hub_may_access(cv, q->ev.user_id, q->scopes)) {
    r->status = CH_EPERM;
    q->code = "forbidden";
    ch_buf_append_str(&r->err, "not a member of this conversation");
    goto Exit;
  }
  if (rc == CH_ENOTFOUND) {
    const char *claim = ch_presence_claim(h, key);
    if (claim && strcmp(claim, q->ev.user_id) != 0 && !(q->scopes & CH_SCOPE_ADMIN)) {
      r->status = CH_EPERM;
      q->code = "forbidden";
      ch_buf_append_str(&r->err, "conversation id in use by another user");
      goto Exit;
    }
  } else if (rc != 0) {
    r->status = rc;
    q->code = "store_error";
    ch_buf_append_str(&r->err, "could not read the conversation");
    goto Exit;
  }
  if (rc == 0 && !q->agent && cv->agent && cv->agent[0]) conv_agent = ch_xstrdup(cv->agent);
  rc = st->ops->append(st, &q->ev, &r->err);
  if (rc != 0) {
    r->status = rc;
    q->code = rc == CH_EINVAL ? "invalid" : "store_error";
    goto Exit;
  }
  if (ch_presence_claim(h, key)) ch_presence_set_claim(h, key, NULL); /* it exists now */
  ch_hub_event_json(&q->stored, &q->ev);
  const char *agent = q->agent ? q->agent : conv_agent;
  if (!q->ev.duplicate && q->ev.kind == CH_EV_MESSAGE && agent && q->ev.role && strcmp(q->ev.role, "user") == 0) {
    /* The reply starts once the prompt is durable. */
    ch__trigger_t *t = ch_xmalloc(sizeof(*t));
    t->agent = ch_xstrdup(agent);
    t->conv = ch_xstrdup(q->ev.conversation_id);
    t->source = q->ev.source ? ch_xstrdup(q->ev.source) : NULL;
    t->seq = q->ev.seq;
    ch_hub_after_commit(h, ch__trigger_after_commit, t);
  }
  if (!q->ev.duplicate && q->ev.kind == CH_EV_CUSTOM) {
    /* The stored document is the broadcast itself. */
    ch_bcast_t *bc = ch_bcast_new("event", "chat", q->ev.conversation_id, q->ev.seq,
                                  ch_chunk_from(q->stored.base, q->stored.len));
    ch_hub_publish(h, key, bc);
  } else if (!q->ev.duplicate) {
    ch_buf_t b = CH_BUF_INIT;
    ch_buf_append_str(&b, "{\"type\":\"message\",\"conversationId\":");
    ch_buf_append_json_qstr(&b, q->ev.conversation_id);
    ch_buf_printf(&b, ",\"seq\":%llu,\"message\":", (unsigned long long)q->ev.seq);
    ch_buf_append(&b, q->stored.base, q->stored.len);
    ch_buf_append_byte(&b, '}');
    ch_bcast_t *bc = ch_bcast_new("message", "chat", q->ev.conversation_id, q->ev.seq, ch_buf_to_chunk(&b));
    ch_buf_dispose(&b);
    ch_hub_publish(h, key, bc);
  }
Exit:
  free(conv_agent);
}

static void ch__send_answer(ch__send_req_t *q, int status, const char *code, const char *error) {
  ch_msg_out_t out = {
      .status = status,
      .code = code ? code : "error",
      .error = error,
      .conversation_id = q->ev.conversation_id,
      .seq = q->ev.seq,
      .id = q->ev.id ? q->ev.id : "",
      .client_id = q->ev.client_id,
      .duplicate = q->ev.duplicate,
      .message_json = q->stored.base ? q->stored.base : "null",
      .message_len = q->stored.base ? q->stored.len : 4,
  };
  q->cb(q->ud, &out);
}

static void ch__send_done(ch_hub_req_t *r) {
  ch__send_req_t *q = (ch__send_req_t *)r;
  ch__send_answer(q, r->status, q->code, r->status ? ch_buf_cstr(&r->err) : NULL);
}

static char *ch__dup_str_item(cJSON *o, const char *name) {
  cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  return cJSON_IsString(v) && v->valuestring ? ch_xstrdup(v->valuestring) : NULL;
}

static void ch__set_str(cJSON *m, const char *k, const char *v) {
  cJSON_DeleteItemFromObjectCaseSensitive(m, k);
  cJSON_AddStringToObject(m, k, v);
}

void ch_hub_send_message(ch_loop_t *loop, const ch_msg_in_t *in, ch_msg_cb cb, void *ud) {
  ch__send_req_t *q = ch_xcalloc(1, sizeof(*q));
  q->cb = cb;
  q->ud = ud;
  q->ev.conversation_id = ch_xstrdup(in->conv);
  const char *bad = NULL, *code = "invalid";
  cJSON *m = in->message;
  size_t clen = strlen(in->conv);
  if (clen == 0 || clen > 128) bad = "conversationId must be 1..128 bytes";
  else if (!(in->scopes & (CH_SCOPE_WRITE | CH_SCOPE_ADMIN))) bad = "this credential may not write", code = "forbidden";
  if (bad == NULL && m == NULL) m = cJSON_ParseWithLength(in->message_json, in->len);
  if (bad == NULL && !cJSON_IsObject(m)) bad = "message must be a JSON object";
  cJSON *content = bad ? NULL : cJSON_GetObjectItemCaseSensitive(m, "content");
  cJSON *role = bad ? NULL : cJSON_GetObjectItemCaseSensitive(m, "role");
  cJSON *id = bad ? NULL : cJSON_GetObjectItemCaseSensitive(m, "id");
  if (bad == NULL && content && !cJSON_IsString(content)) bad = "message.content must be a string";
  if (bad == NULL && role &&
      !(cJSON_IsString(role) && (!strcmp(role->valuestring, "user") || !strcmp(role->valuestring, "assistant") ||
                                 !strcmp(role->valuestring, "system") || !strcmp(role->valuestring, "tool"))))
    bad = "message.role must be user, assistant, system or tool";
  if (bad == NULL && in->agent && in->agent[0] && ch_agent_find(in->agent) == NULL) bad = "unknown agent";
  if (bad == NULL && id && !(cJSON_IsString(id) && strlen(id->valuestring) > 0 && strlen(id->valuestring) <= 128))
    bad = "message.id must be a string of 1..128 bytes";
  if (bad) {
    cJSON_Delete(m);
    ch__send_answer(q, CH_EINVAL, code, bad);
    ch__send_free(&q->base);
    return;
  }
  char uuid[37];
  ch_uuid4(uuid);
  /* Fill what the client left out; keep what it sent as sent. */
  q->ev.client_id = ch__dup_str_item(m, "id");
  if (!id) cJSON_AddStringToObject(m, "id", uuid);
  ch__set_str(m, "conversationId", in->conv);
  if (!role) cJSON_AddStringToObject(m, "role", "user");
  if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(m, "source")))
    ch__set_str(m, "source", in->source && in->source[0] ? in->source : "unknown");
  if (!cJSON_GetObjectItemCaseSensitive(m, "timestamp")) {
    char ts[CH_ISO8601_LEN + 1];
    ch_clock_iso8601(ch_clock_wall_ms(), ts);
    cJSON_AddStringToObject(m, "timestamp", ts);
  }
  cJSON_DeleteItemFromObjectCaseSensitive(m, "seq");
  ch__set_str(m, "userId", in->user_id);
  if (in->device_id && in->device_id[0]) ch__set_str(m, "deviceId", in->device_id);

  q->base.run = ch__send_run;
  q->base.done = ch__send_done;
  q->base.free_cb = ch__send_free;
  q->base.loop = loop;
  q->scopes = in->scopes;
  q->agent = in->agent && in->agent[0] ? ch_xstrdup(in->agent) : NULL;
  q->ev.kind = CH_EV_MESSAGE;
  q->ev.id = ch_xstrdup(uuid);
  q->ev.role = ch__dup_str_item(m, "role");
  q->ev.content = ch__dup_str_item(m, "content");
  q->ev.source = ch__dup_str_item(m, "source");
  q->ev.user_id = ch_xstrdup(in->user_id);
  q->ev.device_id = in->device_id ? ch_xstrdup(in->device_id) : NULL;
  char *body = cJSON_PrintUnformatted(m);
  q->ev.body = ch_xstrdup(body);
  cJSON_free(body);
  cJSON_Delete(m);
  ch_hub_submit(ch_hub, &q->base);
}

void ch_hub_store_event(ch_loop_t *loop, const ch_msg_in_t *in, const char *event_name, ch_msg_cb cb,
                        void *ud) {
  ch__send_req_t *q = ch_xcalloc(1, sizeof(*q));
  q->cb = cb;
  q->ud = ud;
  q->ev.conversation_id = ch_xstrdup(in->conv);
  if (!(in->scopes & (CH_SCOPE_WRITE | CH_SCOPE_ADMIN))) {
    ch__send_answer(q, CH_EPERM, "forbidden", "this credential may not write");
    ch__send_free(&q->base);
    return;
  }
  char uuid[37];
  ch_uuid4(uuid);
  q->base.run = ch__send_run;
  q->base.done = ch__send_done;
  q->base.free_cb = ch__send_free;
  q->base.loop = loop;
  q->scopes = in->scopes;
  q->ev.kind = CH_EV_CUSTOM;
  q->ev.id = ch_xstrdup(uuid);
  q->ev.type = ch_xstrdup(event_name);
  q->ev.source = in->source ? ch_xstrdup(in->source) : NULL;
  q->ev.user_id = ch_xstrdup(in->user_id);
  q->ev.device_id = in->device_id ? ch_xstrdup(in->device_id) : NULL;
  q->ev.body = ch_xstrndup(in->message_json, in->len);
  ch_hub_submit(ch_hub, &q->base);
}
