/*
 * agentrun.c — the watcher (one prompt and its reply), agent resolution and
 * the chat session of profiles agent-ws and command (see agentrun.h).
 *
 * Watcher states:
 *
 *   new ─ subscribe "c:<conv>" ─ submit ─> SENDING: stream/message/event broadcasts held
 *        │ send answered: refused ──────────────────────────────> on_sent(error), freed
 *        └ stored (seq S) ─ replay held ─> FOLLOWING: match the stream replying to S
 *                                            │ chunk ─> on_chunk
 *                                            │ stored assistant message ─> kept for on_end
 *                                            └ end / error ─> on_end, freed
 *
 * Lifetime: a watcher lives while it serves an owner (ops set) or while its
 * send's answer is on the way (the hub request holds it: `sending`); the
 * first moment neither holds — the reply ended, the owner detached, the
 * send was refused — it is freed, on its loop. Inside one of its own
 * callbacks (`busy`: an owner may detach from there) the free waits for the
 * callback to return. Usage needs no watcher (the agent core accounts every
 * reply), so a watcher nobody owns has nothing left to do. At shutdown every
 * owner goes with its connection, and a send still in flight is answered
 * when the loop is joined (ch_loop_join runs the answers posted to a stopped
 * loop): nothing outlives the loops.
 */
#include "proto/agentrun.h"

#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"
#include "hub/bcast.h"
#include "hub/convops.h"
#include "hub/hub.h"
#include "hub/topic.h"

#define CH__WATCH_HOLD_MAX 4096 /* broadcasts held while the prompt's seq is unknown */

ch__proto_agent_settings_t ch__proto_agent_settings = {0, 10, ""};

/* ---- the watcher ------------------------------------------------------------------ */

struct ch__proto_watch_s {
  ch_topic_sub_t tsub;               /* "c:<conv>" on loop */
  ch_loop_t *loop;                   /* not owned */
  const ch__proto_watch_ops_t *ops;  /* static; NULL once detached, refused or ended */
  void *owner;                       /* the owner's; not owned */
  char topic[140];
  uint64_t seq;                      /* the prompt's seq; 0 until the send is answered */
  char stream_id[37];                /* the reply's stream; "" until matched */
  char *message;                     /* owned: the stored assistant message, once seen */
  size_t mlen;
  ch_bcast_t **held;                 /* owned references while SENDING */
  size_t nheld, capheld;
  int in_submit;                     /* inside ch_hub_send_message: an answer now is a refusal */
  int refused;                       /* refused inside ch_hub_send_message */
  ch_buf_t refusal;                  /* its reason */
  int sending;                       /* the send's answer is pending: its callback holds w */
  int busy;                          /* inside a callback of ours: free when it returns */
};

static atomic_size_t ch__watch_live; /* watchers allocated and not yet freed (all loops) */

size_t ch__proto_watch_count(void) { return atomic_load(&ch__watch_live); }

static void ch__watch_free(ch__proto_watch_t *w) {
  if (w->tsub.topic) ch_topic_unsubscribe(w->loop, &w->tsub);
  for (size_t i = 0; i < w->nheld; i++) ch_bcast_unref(w->held[i]);
  free(w->held);
  free(w->message);
  ch_buf_dispose(&w->refusal);
  free(w);
  atomic_fetch_sub(&ch__watch_live, 1);
}

/* Free w if nothing holds it any more. */
static void ch__watch_release(ch__proto_watch_t *w) {
  if (w->ops == NULL && !w->sending && w->busy == 0) ch__watch_free(w);
}

static uint64_t ch__num(cJSON *o, const char *k) {
  cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 9007199254740992.0 ? (uint64_t)v->valuedouble
                                                                                        : 0;
}

static const char *ch__str(cJSON *o, const char *k) {
  cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The reply is over: tell the owner; the watcher is released by the caller. */
static void ch__watch_finish(ch__proto_watch_t *w, const char *err) {
  const ch__proto_watch_ops_t *ops = w->ops;
  w->ops = NULL;
  if (w->tsub.topic) ch_topic_unsubscribe(w->loop, &w->tsub);
  if (ops->on_end) ops->on_end(w->owner, w->stream_id, err ? NULL : w->message, err ? 0 : w->mlen, err);
}

/* One broadcast of the conversation, once the prompt's seq is known (ops set). */
static void ch__watch_feed(ch__proto_watch_t *w, ch_bcast_t *b) {
  cJSON *o = cJSON_ParseWithLength(b->json->data, b->json->len);
  if (!cJSON_IsObject(o)) goto Exit;
  if (strcmp(b->type, "stream") == 0) {
    const char *op = ch__str(o, "op"), *sid = ch__str(o, "streamId");
    if (op == NULL || sid == NULL) goto Exit;
    if (strcmp(op, "start") == 0) {
      if (w->stream_id[0] == '\0' && ch__num(o, "inReplyTo") == w->seq)
        snprintf(w->stream_id, sizeof(w->stream_id), "%s", sid);
      goto Exit;
    }
    if (w->stream_id[0] == '\0' || strcmp(sid, w->stream_id) != 0) goto Exit;
    if (strcmp(op, "chunk") == 0) {
      const char *d = ch__str(o, "delta");
      size_t n = d ? strlen(d) : 0;
      if (n > 0 && w->ops->on_chunk) w->ops->on_chunk(w->owner, w->stream_id, d, n);
    } else if (strcmp(op, "end") == 0) {
      ch__watch_finish(w, NULL);
    } else if (strcmp(op, "error") == 0) {
      const char *e = ch__str(o, "error");
      ch__watch_finish(w, e ? e : "the agent failed");
    }
  } else if (strcmp(b->type, "message") == 0) {
    cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "message");
    const char *sid = ch__str(m, "streamId"), *role = ch__str(m, "role");
    if (sid == NULL || role == NULL || strcmp(role, "assistant") != 0) goto Exit;
    if (w->stream_id[0] == '\0' && ch__num(m, "inReplyTo") == w->seq)
      snprintf(w->stream_id, sizeof(w->stream_id), "%s", sid);
    if (strcmp(sid, w->stream_id) != 0) goto Exit;
    char *text = cJSON_PrintUnformatted(m);
    free(w->message);
    w->message = ch_xstrdup(text ? text : "null");
    w->mlen = strlen(w->message);
    cJSON_free(text);
  } else if (strcmp(b->type, "event") == 0) {
    /* A queued stream that never started leaves only its stored error marker. */
    const char *ev = ch__str(o, "event"), *sid = ch__str(o, "streamId");
    if (ev && sid && strcmp(ev, "agent_error") == 0 && w->stream_id[0] == '\0' && ch__num(o, "inReplyTo") == w->seq)
      snprintf(w->stream_id, sizeof(w->stream_id), "%s", sid);
  }
Exit:
  cJSON_Delete(o);
}

static void ch__watch_deliver(ch_topic_sub_t *ts, ch_topic_item_t *it) {
  ch__proto_watch_t *w = CH_LIST_DATA(ts, ch__proto_watch_t, tsub);
  ch_bcast_t *b = (ch_bcast_t *)it;
  if (w->ops == NULL) return; /* nobody to tell: freed once its send is answered */
  if (strcmp(b->type, "stream") != 0 && strcmp(b->type, "message") != 0 && strcmp(b->type, "event") != 0) return;
  if (w->seq == 0) { /* SENDING: the reply may already be starting */
    if (w->nheld == CH__WATCH_HOLD_MAX) {
      ch_log_warn("agent watcher on %s: more than %d broadcasts before the prompt was stored; dropping",
                  w->topic, CH__WATCH_HOLD_MAX);
      return;
    }
    if (w->nheld == w->capheld) {
      w->capheld = w->capheld ? w->capheld * 2 : 8;
      w->held = ch_xrealloc(w->held, w->capheld * sizeof(*w->held));
    }
    ch_topic_item_ref(&b->base);
    w->held[w->nheld++] = b;
    return;
  }
  w->busy++;
  ch__watch_feed(w, b);
  w->busy--;
  ch__watch_release(w);
}

static void ch__watch_sent_cb(void *ud, const ch_msg_out_t *out) {
  ch__proto_watch_t *w = ud;
  if (w->in_submit) { /* refused before it was submitted: the caller reports it */
    w->refused = 1;
    ch_buf_append_str(&w->refusal, out->error ? out->error : "refused");
    return;
  }
  w->sending = 0;
  w->busy++;
  if (out->status != 0) { /* refused: the owner hears it, and the watcher is gone */
    const ch__proto_watch_ops_t *ops = w->ops;
    w->ops = NULL;
    if (ops && ops->on_sent) ops->on_sent(w->owner, out);
    goto Exit;
  }
  w->seq = out->seq ? out->seq : 1;
  if (w->ops && w->ops->on_sent) w->ops->on_sent(w->owner, out);
  if (w->ops && !w->ops->on_chunk && !w->ops->on_end) w->ops = NULL; /* only the answer was wanted */
  /* Replay what came before the answer (while someone listens). */
  ch_bcast_t **held = w->held;
  size_t n = w->nheld;
  w->held = NULL;
  w->nheld = w->capheld = 0;
  for (size_t i = 0; i < n; i++) {
    if (w->ops) ch__watch_feed(w, held[i]);
    ch_bcast_unref(held[i]);
  }
  free(held);
Exit:
  w->busy--;
  ch__watch_release(w);
}

int ch__proto_watch_send(ch_loop_t *l, const ch_msg_in_t *in, const ch_identity_t *who,
                         const ch__proto_watch_ops_t *ops, void *owner, ch__proto_watch_t **out, ch_buf_t *err) {
  (void)who; /* the agent core accounts the reply to the stored prompt's author and key */
  ch__proto_watch_t *w = ch_xcalloc(1, sizeof(*w));
  atomic_fetch_add(&ch__watch_live, 1);
  w->loop = l;
  w->ops = ops;
  w->owner = owner;
  snprintf(w->topic, sizeof(w->topic), "c:%s", in->conv);
  w->tsub.deliver = ch__watch_deliver;
  ch_list_init(&w->tsub.node);
  ch_topic_subscribe(l, w->topic, strlen(w->topic), &w->tsub);
  w->sending = 1;
  w->in_submit = 1;
  ch_hub_send_message(l, in, ch__watch_sent_cb, w);
  w->in_submit = 0;
  if (w->refused) {
    if (err) ch_buf_append(err, w->refusal.base, w->refusal.len);
    ch__watch_free(w);
    if (out) *out = NULL;
    return CH_EINVAL;
  }
  if (out) *out = w;
  return 0;
}

void ch__proto_watch_detach(ch__proto_watch_t *w) {
  if (w == NULL) return;
  w->ops = NULL;
  w->owner = NULL;
  ch__watch_release(w);
}

/* ---- the conversation's agent ------------------------------------------------------ */

typedef struct {
  ch_hub_req_t base;
  char *conv;           /* owned */
  char agent[65];       /* out */
  char missing[65];     /* out */
  ch__proto_resolve_cb cb;
  void *ud;
} ch__resolve_req_t;

static void ch__resolve_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__resolve_req_t *q = (ch__resolve_req_t *)r;
  ch_conv_t cv;
  memset(&cv, 0, sizeof(cv));
  int rc = h->store->ops->conv_get(h->store, q->conv, &cv);
  if (rc == 0 && cv.agent && cv.agent[0]) {
    if (ch_agent_find(cv.agent)) snprintf(q->agent, sizeof(q->agent), "%s", cv.agent);
    else snprintf(q->missing, sizeof(q->missing), "%s", cv.agent);
  } else if (ch_agents_count() > 0) {
    snprintf(q->agent, sizeof(q->agent), "%s", ch_agent_at(0)->name);
  }
  ch_conv_dispose(&cv);
}

static void ch__resolve_done(ch_hub_req_t *r) {
  ch__resolve_req_t *q = (ch__resolve_req_t *)r;
  q->cb(q->ud, q->agent[0] ? q->agent : NULL, q->missing[0] ? q->missing : NULL);
}

static void ch__resolve_free(ch_hub_req_t *r) {
  ch__resolve_req_t *q = (ch__resolve_req_t *)r;
  free(q->conv);
  free(q);
}

void ch__proto_agent_resolve(ch_loop_t *l, const char *conv, ch__proto_resolve_cb cb, void *ud) {
  ch__resolve_req_t *q = ch_xcalloc(1, sizeof(*q));
  q->base.run = ch__resolve_run;
  q->base.done = ch__resolve_done;
  q->base.free_cb = ch__resolve_free;
  q->base.loop = l;
  q->conv = ch_xstrdup(conv);
  q->cb = cb;
  q->ud = ud;
  ch_hub_submit(ch_hub, &q->base);
}

/* ---- the chat session -------------------------------------------------------------- */

typedef struct {
  ch_list_t node;  /* in session->queue */
  char *content;   /* owned */
  char *context;   /* owned JSON object text, or NULL */
} ch__prompt_t;

/* The client core renders nothing for a session (it joins no room); what it
 * might say goes to the log. */
static void ch__session_send_json(ch_client_t *cl, const char *json, size_t len) {
  ch_log_debug("session %llu: dropped a native frame: %.*s", (unsigned long long)cl->id, (int)len, json);
}
static void ch__session_deliver(ch_client_t *cl, ch_csub_t *sub, ch_bcast_t *b) {
  (void)cl;
  (void)sub;
  (void)b;
}
static void ch__session_joined(ch_client_t *cl, ch_csub_t *sub, const char *req_id, const char *json, size_t len) {
  (void)cl;
  (void)sub;
  (void)req_id;
  (void)json;
  (void)len;
}
static const ch_client_ops_t ch__session_client_ops = {ch__session_send_json, ch__session_deliver,
                                                       ch__session_joined};

static ch__proto_session_t *ch__session_find(ch_loop_t *l, uint64_t id) {
  ch_client_t *cl = ch_client_find(l, id);
  return cl && cl->ops == &ch__session_client_ops ? (ch__proto_session_t *)cl : NULL;
}

static void ch__prompt_free(ch__prompt_t *p) {
  free(p->content);
  free(p->context);
  free(p);
}

static void ch__session_pump(ch__proto_session_t *s);

static void ch__session_end(ch__proto_session_t *s, const char *err) {
  s->w = NULL;
  s->sending = 0;
  s->sops->on_end(s, s->reply.base ? s->reply.base : "", s->reply.len, err);
  s->reply.len = 0;
  ch__session_pump(s);
}

static void ch__session_on_sent(void *owner, const ch_msg_out_t *out) {
  if (out->status != 0) ch__session_end(owner, out->error ? out->error : "the message could not be stored");
}

static void ch__session_on_chunk(void *owner, const char *stream_id, const char *delta, size_t len) {
  (void)stream_id;
  ch__proto_session_t *s = owner;
  ch_buf_append(&s->reply, delta, len);
  s->sops->on_chunk(s, delta, len);
}

static void ch__session_on_end(void *owner, const char *stream_id, const char *message, size_t mlen,
                               const char *err) {
  (void)stream_id;
  (void)message;
  (void)mlen;
  ch__session_end(owner, err);
}

static const ch__proto_watch_ops_t ch__session_watch_ops = {ch__session_on_sent, ch__session_on_chunk,
                                                            ch__session_on_end};

typedef struct {
  ch_loop_t *loop;
  uint64_t client_id;
  char conv[37];
} ch__create_ctx_t;

static void ch__session_created(void *ud, int status, const char *code, const char *error, const char *json,
                                size_t len) {
  (void)code;
  (void)json;
  (void)len;
  ch__create_ctx_t *x = ud;
  ch__proto_session_t *s = ch__session_find(x->loop, x->client_id);
  if (s == NULL) goto Exit;
  s->creating = 0;
  if (status == 0) {
    memcpy(s->conv, x->conv, sizeof(s->conv));
    if (s->sops->on_ready) s->sops->on_ready(s, 0, NULL);
    ch__session_pump(s);
    goto Exit;
  }
  ch_log_warn("%s conn %llu: cannot create its conversation: %s", s->profile, (unsigned long long)s->cl.id,
              error ? error : "?");
  if (s->sops->on_ready) s->sops->on_ready(s, status, error ? error : "the conversation could not be created");
  while (!ch_list_empty(&s->queue)) {
    ch__prompt_t *p = CH_LIST_DATA(s->queue.next, ch__prompt_t, node);
    ch_list_remove(&p->node);
    s->nqueue--;
    ch__prompt_free(p);
    s->sops->on_end(s, "", 0, "the conversation could not be created");
  }
Exit:
  free(x);
}

static void ch__session_create(ch__proto_session_t *s) {
  ch__create_ctx_t *x = ch_xcalloc(1, sizeof(*x));
  x->loop = s->cl.loop;
  x->client_id = s->cl.id;
  ch_uuid4(x->conv);
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "{\"id\":");
  ch_buf_append_json_qstr(&b, x->conv);
  ch_buf_append_str(&b, ",\"agent\":");
  ch_buf_append_json_qstr(&b, s->agent);
  ch_buf_printf(&b, ",\"title\":\"%s: ", s->profile);
  ch_buf_append_json_str(&b, s->agent, strlen(s->agent));
  ch_buf_printf(&b, "\",\"metadata\":{\"profile\":\"%s\"}}", s->profile);
  s->creating = 1;
  ch_hub_conv_create(s->cl.loop, s->cl.user_id, s->cl.scopes, b.base, b.len, ch__session_created, x);
  ch_buf_dispose(&b);
}

static void ch__session_pump(ch__proto_session_t *s) {
  while (!s->sending && !ch_list_empty(&s->queue)) {
    if (s->conv[0] == '\0') {
      if (!s->creating) ch__session_create(s);
      return;
    }
    ch__prompt_t *p = CH_LIST_DATA(s->queue.next, ch__prompt_t, node);
    ch_list_remove(&p->node);
    s->nqueue--;
    ch_buf_t m = CH_BUF_INIT, err = CH_BUF_INIT;
    ch_buf_append_str(&m, "{\"role\":\"user\",\"content\":");
    ch_buf_append_json_qstr(&m, p->content);
    ch_buf_append_str(&m, ",\"source\":");
    ch_buf_append_json_qstr(&m, s->cl.source);
    if (p->context) {
      ch_buf_append_str(&m, ",\"context\":");
      ch_buf_append_str(&m, p->context);
    }
    ch_buf_append_byte(&m, '}');
    ch_msg_in_t in = {.conv = s->conv, .message_json = m.base, .len = m.len, .user_id = s->cl.user_id,
                      .device_id = s->cl.device_id, .source = s->cl.source, .scopes = s->cl.scopes,
                      .agent = s->agent};
    s->sending = 1;
    s->reply.len = 0;
    if (ch__proto_watch_send(s->cl.loop, &in, &s->who, &ch__session_watch_ops, s, &s->w, &err) != 0) {
      s->sending = 0;
      s->w = NULL;
      s->sops->on_end(s, "", 0, ch_buf_cstr(&err));
    }
    ch_buf_dispose(&m);
    ch_buf_dispose(&err);
    ch__prompt_free(p);
  }
}

void ch__proto_session_init(ch__proto_session_t *s, ch_conn_t *c, const ch__proto_session_ops_t *ops,
                            const char *profile, const char *source) {
  ch_client_init(&s->cl, c, &ch__session_client_ops, NULL);
  s->sops = ops;
  snprintf(s->profile, sizeof(s->profile), "%s", profile);
  snprintf(s->cl.source, sizeof(s->cl.source), "%s", source && *source ? source : profile);
  ch_list_init(&s->queue);
  ch_buf_init(&s->reply);
}

void ch__proto_session_auth(ch__proto_session_t *s, const ch_identity_t *id, const char *agent) {
  s->who = *id;
  snprintf(s->cl.user_id, sizeof(s->cl.user_id), "%s", id->user_id);
  snprintf(s->cl.device_id, sizeof(s->cl.device_id), "%s", id->device_id[0] ? id->device_id : s->profile);
  s->cl.scopes = id->scopes;
  s->cl.authed = 1;
  snprintf(s->agent, sizeof(s->agent), "%s", agent);
}

void ch__proto_session_open(ch__proto_session_t *s) {
  if (s->conv[0] == '\0' && !s->creating) ch__session_create(s);
}

int ch__proto_session_prompt(ch__proto_session_t *s, const char *content, const char *context_json,
                             int64_t *retry_ms) {
  if (s->nqueue >= CH__PROTO_SESSION_QUEUE) return CH_EBUSY;
  int rc = ch__proto_rate_take(&s->who, retry_ms);
  if (rc != 0) return rc;
  ch__prompt_t *p = ch_xcalloc(1, sizeof(*p));
  p->content = ch_xstrdup(content);
  p->context = context_json ? ch_xstrdup(context_json) : NULL;
  ch_list_insert_tail(&s->queue, &p->node);
  s->nqueue++;
  ch__session_pump(s);
  return 0;
}

void ch__proto_session_dispose(ch__proto_session_t *s) {
  ch__proto_watch_detach(s->w);
  s->w = NULL;
  while (!ch_list_empty(&s->queue)) {
    ch__prompt_t *p = CH_LIST_DATA(s->queue.next, ch__prompt_t, node);
    ch_list_remove(&p->node);
    ch__prompt_free(p);
  }
  s->nqueue = 0;
  ch_buf_dispose(&s->reply);
  ch_client_dispose(&s->cl);
}
