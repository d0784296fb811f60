/*
 * client.c — loop-side client sessions and their hub requests (see client.h).
 *
 * Presence policy lives here (hub/presence.c only keeps the sets): whether a
 * join or leave is announced to its room, the crossing notices, how much of
 * the list a sync carries, and the presence query. See client.h for the table.
 */
#include "hub/client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/map.h"
#include "hub/ops.h"
#include "hub/presence.h"
#include "hub/userchan.h"

ch_client_settings_t ch_client_settings = {10000, 1000, 6000, 1000, 100};

/* ---- registry ---------------------------------------------------------- */

static ch_map_t *ch__registry(ch_loop_t *l) {
  if (l->clients == NULL) {
    ch_map_t *m = ch_xmalloc(sizeof(*m));
    ch_map_init(m);
    l->clients = m;
  }
  return l->clients;
}

ch_client_t *ch_client_find(ch_loop_t *l, uint64_t id) {
  if (l->clients == NULL) return NULL;
  return ch_map_get(l->clients, (const char *)&id, sizeof(id));
}

void ch_client_init(ch_client_t *cl, ch_conn_t *c, const ch_client_ops_t *ops, void *transport) {
  memset(cl, 0, sizeof(*cl));
  cl->id = c->id;
  cl->loop = c->loop;
  cl->c = c;
  cl->ops = ops;
  cl->transport = transport;
  ch_list_init(&cl->subs);
  ch_map_put(ch__registry(c->loop), (const char *)&cl->id, sizeof(cl->id), cl);
}

/* ---- JSON helpers ------------------------------------------------------ */

void ch_client_error(ch_client_t *cl, const char *req_id, const char *code, const char *msg) {
  CH_STAT_ADD(&cl->loop->stats, client_errors, 1);
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "{\"type\":\"error\"");
  if (req_id) {
    ch_buf_append_str(&b, ",\"id\":");
    ch_buf_append_json_qstr(&b, req_id);
  }
  ch_buf_append_str(&b, ",\"code\":");
  ch_buf_append_json_qstr(&b, code);
  ch_buf_append_str(&b, ",\"error\":");
  ch_buf_append_json_qstr(&b, msg);
  ch_buf_append_byte(&b, '}');
  cl->ops->send_json(cl, b.base, b.len);
  ch_buf_dispose(&b);
}

/* ---- subscriptions ----------------------------------------------------- */

static void ch__csub_push(ch_csub_t *s, ch_bcast_t *b) {
  if (s->nbuf == s->capbuf) {
    s->capbuf = s->capbuf ? s->capbuf * 2 : 8;
    s->buf = ch_xrealloc(s->buf, s->capbuf * sizeof(*s->buf));
  }
  ch_topic_item_ref(&b->base);
  s->buf[s->nbuf++] = b;
}

/* A conversation deleted (and maybe re-created) starts over at seq 1. */
static int ch__bcast_is_delete(const ch_bcast_t *b) {
  static const char op[] = "\"op\":\"deleted\"";
  size_t n = b->json->len < 64 ? b->json->len : 64;
  return b->seq == 0 && strcmp(b->type, "conversation") == 0 && memmem(b->json->data, n, op, sizeof(op) - 1);
}

static void ch__csub_deliver_one(ch_csub_t *s, ch_bcast_t *b) {
  if (ch__bcast_is_delete(b)) s->last_seq = 0;
  if (b->exclude_client == s->client->id) return;
  if (b->stream_index) {
    for (size_t i = 0; i < s->nmarks; i++)
      if (strcmp(s->marks[i].id, b->stream_id) == 0 && b->stream_index <= s->marks[i].index) return;
  }
  if (b->seq) {
    if (b->seq <= s->last_seq) return; /* already delivered (catch-up and live overlap) */
    s->last_seq = b->seq;
  }
  s->client->ops->deliver(s->client, s, b);
}

static void ch__csub_deliver(ch_topic_sub_t *ts, ch_topic_item_t *it) {
  ch_csub_t *s = CH_LIST_DATA(ts, ch_csub_t, tsub);
  ch_bcast_t *b = (ch_bcast_t *)it;
  if (s->state == CH_CSUB_PENDING) ch__csub_push(s, b);
  else ch__csub_deliver_one(s, b);
}

static void ch__csub_free(ch_csub_t *s) {
  CH_STAT_SUB(&s->client->loop->stats, subscriptions, 1);
  if (s->tsub.topic) ch_topic_unsubscribe(s->client->loop, &s->tsub);
  ch_list_remove(&s->node);
  for (size_t i = 0; i < s->nbuf; i++) ch_bcast_unref(s->buf[i]);
  free(s->buf);
  free(s->conv_id);
  free(s);
}

ch_csub_t *ch_client_sub(ch_client_t *cl, const char *conv) {
  ch_list_t *it;
  ch_list_foreach(it, &cl->subs) {
    ch_csub_t *s = CH_LIST_DATA(it, ch_csub_t, node);
    if (strcmp(s->conv_id, conv) == 0) return s;
  }
  return NULL;
}

/* ---- join ---------------------------------------------------------------- */

typedef struct {
  ch_hub_req_t base;
  uint64_t client_id;
  char *conv, *epoch_in, *req_id;
  int has_since;
  uint64_t since;
  size_t limit;
  ch_presence_entry_t me;
  unsigned scopes;
  /* out */
  uint64_t last_seq;
  ch_agent_stream_mark_t marks[4];
  size_t nmarks;
  ch_buf_t sync;   /* the sync JSON document */
  const char *code;
} ch__join_req_t;

static void ch__join_free(ch_hub_req_t *r) {
  ch__join_req_t *j = (ch__join_req_t *)r;
  free(j->conv);
  free(j->epoch_in);
  free(j->req_id);
  ch_buf_dispose(&j->sync);
  free(j);
}

/* Publish b (a presence document; disposed here) to conv's room, but not to
 * connection `exclude`. The broadcast type is "presence" for both documents:
 * SSE names the event so, and profile relay keeps presence out. */
static void ch__publish_presence_doc(ch_hub_t *h, const char *conv, ch_buf_t *b, uint64_t exclude) {
  ch_bcast_t *bc = ch_bcast_new("presence", "chat", conv, 0, ch_buf_to_chunk(b));
  bc->exclude_client = exclude;
  ch_buf_dispose(b);
  char topic[140];
  snprintf(topic, sizeof(topic), "c:%s", conv);
  ch_hub_publish(h, topic, bc);
}

static void ch__publish_presence(ch_hub_t *h, const char *conv, const ch_presence_entry_t *e, int connected,
                                 uint64_t exclude) {
  ch_buf_t b = CH_BUF_INIT;
  char ts[CH_ISO8601_LEN + 1];
  ch_clock_iso8601(ch_clock_wall_ms(), ts);
  ch_buf_append_str(&b, "{\"type\":\"presence\",\"conversationId\":");
  ch_buf_append_json_qstr(&b, conv);
  ch_buf_printf(&b, ",\"clientId\":\"%llu\",\"userId\":", (unsigned long long)e->client_id);
  ch_buf_append_json_qstr(&b, e->user_id);
  ch_buf_append_str(&b, ",\"deviceId\":");
  ch_buf_append_json_qstr(&b, e->device_id);
  ch_buf_append_str(&b, ",\"source\":");
  ch_buf_append_json_qstr(&b, e->source);
  ch_buf_printf(&b, ",\"connected\":%s,\"timestamp\":\"%s\"}", connected ? "true" : "false", ts);
  ch__publish_presence_doc(h, conv, &b, exclude);
}

/* Big rooms (client.h): a join or leave is announced while the room, counting
 * the connection that joins or leaves, holds at most the broadcast limit. */
static int ch__presence_announced(size_t count_with) {
  size_t lim = ch_client_settings.presence_broadcast_limit;
  return lim == 0 || count_with <= lim;
}

/* The room crossed the limit (truncated = 1: it is over it now, per-connection
 * events stop; 0: back at it, they resume). O(1) bytes, once per crossing. */
static void ch__publish_presence_count(ch_hub_t *h, const char *conv, size_t count, int truncated,
                                       uint64_t exclude) {
  ch_buf_t b = CH_BUF_INIT;
  char ts[CH_ISO8601_LEN + 1];
  ch_clock_iso8601(ch_clock_wall_ms(), ts);
  ch_buf_append_str(&b, "{\"type\":\"presence_count\",\"conversationId\":");
  ch_buf_append_json_qstr(&b, conv);
  ch_buf_printf(&b, ",\"presenceCount\":%zu,\"presenceTruncated\":%s,\"timestamp\":\"%s\"}", count,
                truncated ? "true" : "false", ts);
  ch__publish_presence_doc(h, conv, &b, exclude);
}

/* The sync's "presence" member: the whole list while the room is within the
 * limit, else the oldest min(sync limit, limit) with the count and the flag. */
static void ch__sync_presence(ch_hub_t *h, const char *key, ch_buf_t *b) {
  size_t n = ch_presence_count(h, key);
  ch_buf_append_str(b, ",\"presence\":");
  if (ch__presence_announced(n)) {
    ch_presence_json(h, key, b);
    return;
  }
  size_t cap = ch_client_settings.presence_sync_limit;
  if (cap > ch_client_settings.presence_broadcast_limit) cap = ch_client_settings.presence_broadcast_limit;
  ch_presence_json_max(h, key, cap, b);
  ch_buf_printf(b, ",\"presenceCount\":%zu,\"presenceTruncated\":true", n);
}

static void ch__join_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__join_req_t *j = (ch__join_req_t *)r;
  ch_store_t *st = h->store;
  char key[140];
  snprintf(key, sizeof(key), "c:%s", j->conv);
  ch_conv_t cv;
  memset(&cv, 0, sizeof(cv));
  int rc = st->ops->conv_get(st, j->conv, &cv);
  int exists = rc == 0;
  if (rc != 0 && rc != CH_ENOTFOUND) {
    r->status = rc;
    j->code = "store_error";
    ch_buf_append_str(&r->err, "could not read the conversation");
    return;
  }
  if (exists && !ch_hub_may_access(&cv, j->me.user_id, j->scopes)) {
    r->status = CH_EPERM;
    j->code = "forbidden";
    ch_buf_append_str(&r->err, "not a member of this conversation");
    goto Exit;
  }
  if (!exists) {
    const char *claim = ch_presence_claim(h, key);
    if (claim && strcmp(claim, j->me.user_id) != 0 && !(j->scopes & CH_SCOPE_ADMIN)) {
      r->status = CH_EPERM;
      j->code = "forbidden";
      ch_buf_append_str(&r->err, "conversation id in use by another user");
      goto Exit;
    }
  }
  int reset = 0;
  ch_event_t *evs = NULL;
  size_t n = 0;
  if (exists) {
    uint64_t after = 0;
    int tail = 0;
    size_t limit = j->limit ? j->limit : ch_client_settings.sync_cap;
    if (limit > ch_client_settings.sync_cap) limit = ch_client_settings.sync_cap;
    if (j->has_since && (j->epoch_in == NULL || (cv.epoch && strcmp(cv.epoch, j->epoch_in) == 0))) {
      after = j->since;
      if (after > cv.last_seq) reset = 1; /* the client is ahead of us: history was lost */
      else if (cv.last_seq - after > limit) tail = 1; /* more missed than one sync: the newest, truncated */
    } else {
      reset = j->has_since; /* a seq from another epoch means nothing here */
      tail = 1;
    }
    if (reset) {
      after = 0;
      tail = 1;
    }
    rc = st->ops->events(st, j->conv, after, limit, tail, &evs, &n);
    if (rc != 0) {
      r->status = rc;
      j->code = "store_error";
      ch_buf_append_str(&r->err, "could not read the history");
      goto Exit;
    }
    j->last_seq = cv.last_seq;
  } else if (j->has_since && j->since > 0) {
    reset = 1; /* the client has history we do not: deleted, or the store was reset */
  }
  int added = ch_presence_add(h, key, &j->me); /* CH_EEXIST: a re-join of this connection */
  if (!exists && ch_presence_claim(h, key) == NULL) ch_presence_set_claim(h, key, j->me.user_id);
  size_t count = ch_presence_count(h, key);
  if (ch__presence_announced(count)) ch__publish_presence(h, j->conv, &j->me, 1, j->me.client_id);
  else if (added != CH_EEXIST && count == ch_client_settings.presence_broadcast_limit + 1)
    ch__publish_presence_count(h, j->conv, count, 1, j->me.client_id);

  ch_buf_t *b = &j->sync;
  ch_buf_append_str(b, "{\"type\":\"sync\"");
  if (j->req_id) {
    ch_buf_append_str(b, ",\"id\":");
    ch_buf_append_json_qstr(b, j->req_id);
  }
  ch_buf_append_str(b, ",\"conversationId\":");
  ch_buf_append_json_qstr(b, j->conv);
  /* "data" holds the messages (what profile `unified` renders); other stored
   * events (custom events, ...) follow in "events", each with its seq. */
  ch_buf_append_str(b, ",\"data\":[");
  size_t nother = 0, k = 0;
  for (size_t i = 0; i < n; i++) {
    if (evs[i].kind != CH_EV_MESSAGE) {
      nother++;
      continue;
    }
    if (k++) ch_buf_append_byte(b, ',');
    ch_hub_event_json(b, &evs[i]);
  }
  ch_buf_append_byte(b, ']');
  if (nother) {
    ch_buf_append_str(b, ",\"events\":[");
    k = 0;
    for (size_t i = 0; i < n; i++) {
      if (evs[i].kind == CH_EV_MESSAGE) continue;
      if (k++) ch_buf_append_byte(b, ',');
      ch_hub_event_json(b, &evs[i]);
    }
    ch_buf_append_byte(b, ']');
  }
  ch_buf_printf(b, ",\"lastSeq\":%llu", (unsigned long long)j->last_seq);
  if (exists && cv.epoch) {
    ch_buf_append_str(b, ",\"epoch\":");
    ch_buf_append_json_qstr(b, cv.epoch);
  }
  if (j->has_since && !reset) ch_buf_printf(b, ",\"since\":%llu", (unsigned long long)j->since);
  if (reset) ch_buf_append_str(b, ",\"reset\":true");
  if (n > 0 && evs[0].seq > (j->has_since && !reset ? j->since : 0) + 1) ch_buf_append_str(b, ",\"truncated\":true");
  j->nmarks = ch_agent_streams_snapshot(j->conv, j->marks, CH_ARRAY_SIZE(j->marks));
  if (j->nmarks) {
    ch_buf_append_str(b, ",\"streams\":");
    ch_agent_streams_json(j->conv, b);
  }
  ch__sync_presence(h, key, b);
  ch_buf_append_byte(b, '}');
  ch_store_events_free(evs, n);
Exit:
  ch_conv_dispose(&cv);
}

static void ch__join_done(ch_hub_req_t *r) {
  ch__join_req_t *j = (ch__join_req_t *)r;
  ch_client_t *cl = ch_client_find(r->loop, j->client_id);
  if (cl == NULL) return;
  ch_csub_t *s = ch_client_sub(cl, j->conv);
  if (s == NULL) return; /* left meanwhile */
  if (r->status != 0) {
    ch_client_error(cl, j->req_id, j->code ? j->code : "error", ch_buf_cstr(&r->err));
    ch__csub_free(s);
    return;
  }
  s->last_seq = j->last_seq;
  memcpy(s->marks, j->marks, sizeof(s->marks));
  s->nmarks = j->nmarks;
  cl->ops->joined(cl, s, j->req_id, j->sync.base, j->sync.len);
  s->state = CH_CSUB_LIVE;
  for (size_t i = 0; i < s->nbuf; i++) {
    ch__csub_deliver_one(s, s->buf[i]);
    ch_bcast_unref(s->buf[i]);
  }
  free(s->buf);
  s->buf = NULL;
  s->nbuf = s->capbuf = 0;
}

static void ch__fill_entry(ch_client_t *cl, ch_presence_entry_t *e) {
  memset(e, 0, sizeof(*e));
  e->client_id = cl->id;
  snprintf(e->user_id, sizeof(e->user_id), "%s", cl->user_id);
  snprintf(e->device_id, sizeof(e->device_id), "%s", cl->device_id);
  snprintf(e->source, sizeof(e->source), "%s", cl->source);
}

void ch_client_join(ch_client_t *cl, const char *conv, int has_since, uint64_t since, size_t limit,
                    const char *epoch, const char *req_id) {
  ch_csub_t *s = ch_client_sub(cl, conv);
  if (s) ch__csub_free(s); /* a re-join restarts the catch-up from the new point */
  s = ch_xcalloc(1, sizeof(*s));
  s->client = cl;
  s->conv_id = ch_xstrdup(conv);
  snprintf(s->topic, sizeof(s->topic), "c:%s", conv);
  s->tsub.deliver = ch__csub_deliver;
  ch_list_init(&s->tsub.node);
  ch_list_insert_tail(&cl->subs, &s->node);
  ch_topic_subscribe(cl->loop, s->topic, strlen(s->topic), &s->tsub);
  CH_STAT_ADD(&cl->loop->stats, subscriptions, 1);

  ch__join_req_t *j = ch_xcalloc(1, sizeof(*j));
  j->base.run = ch__join_run;
  j->base.done = ch__join_done;
  j->base.free_cb = ch__join_free;
  j->base.loop = cl->loop;
  j->client_id = cl->id;
  j->conv = ch_xstrdup(conv);
  j->epoch_in = epoch ? ch_xstrdup(epoch) : NULL;
  j->req_id = req_id ? ch_xstrdup(req_id) : NULL;
  j->has_since = has_since;
  j->since = since;
  j->limit = limit;
  j->scopes = cl->scopes;
  ch__fill_entry(cl, &j->me);
  ch_hub_submit(ch_hub, &j->base);
}

/* ---- leave / gone -------------------------------------------------------- */

typedef struct {
  ch_hub_req_t base;
  ch_presence_entry_t me;
  size_t nconvs;
  char **convs; /* owned */
} ch__leave_req_t;

static void ch__leave_free(ch_hub_req_t *r) {
  ch__leave_req_t *q = (ch__leave_req_t *)r;
  for (size_t i = 0; i < q->nconvs; i++) free(q->convs[i]);
  free(q->convs);
  free(q);
}

static void ch__leave_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__leave_req_t *q = (ch__leave_req_t *)r;
  for (size_t i = 0; i < q->nconvs; i++) {
    char key[140];
    snprintf(key, sizeof(key), "c:%s", q->convs[i]);
    ch_presence_entry_t e;
    int found;
    size_t before = ch_presence_count(h, key);
    ch_presence_remove(h, key, q->me.client_id, &e, &found);
    if (!found) continue;
    if (ch__presence_announced(before)) ch__publish_presence(h, q->convs[i], &e, 0, q->me.client_id);
    else if (before == ch_client_settings.presence_broadcast_limit + 1)
      ch__publish_presence_count(h, q->convs[i], before - 1, 0, q->me.client_id);
  }
}

static void ch__submit_leave(ch_client_t *cl, char **convs, size_t n) {
  ch__leave_req_t *q = ch_xcalloc(1, sizeof(*q));
  q->base.run = ch__leave_run;
  q->base.free_cb = ch__leave_free;
  q->base.loop = NULL; /* nothing to answer */
  ch__fill_entry(cl, &q->me);
  q->convs = convs;
  q->nconvs = n;
  ch_hub_submit(ch_hub, &q->base);
}

void ch_client_leave(ch_client_t *cl, const char *conv) {
  ch_csub_t *s = ch_client_sub(cl, conv);
  if (s == NULL) return;
  ch__csub_free(s);
  char **convs = ch_xmalloc(sizeof(*convs));
  convs[0] = ch_xstrdup(conv);
  ch__submit_leave(cl, convs, 1);
}

void ch_client_dispose(ch_client_t *cl) {
  ch_userchan_stop(cl); /* the user's other devices hear it went (hub/userchan.h) */
  size_t n = 0;
  ch_list_t *it;
  ch_list_foreach(it, &cl->subs) n++;
  char **convs = n ? ch_xmalloc(n * sizeof(*convs)) : NULL;
  size_t i = 0;
  while (!ch_list_empty(&cl->subs)) {
    ch_csub_t *s = CH_LIST_DATA(cl->subs.next, ch_csub_t, node);
    convs[i++] = ch_xstrdup(s->conv_id);
    ch__csub_free(s);
  }
  if (n && ch_hub) ch__submit_leave(cl, convs, n);
  else free(convs);
  if (cl->loop->clients) ch_map_del(cl->loop->clients, (const char *)&cl->id, sizeof(cl->id));
}

/* ---- send ---------------------------------------------------------------- */

typedef struct {
  uint64_t client_id;
  ch_loop_t *loop;
  char *req_id;
} ch__send_ctx_t;

static void ch__send_cb(void *ud, const ch_msg_out_t *out) {
  ch__send_ctx_t *sc = ud;
  ch_client_t *cl = ch_client_find(sc->loop, sc->client_id);
  if (cl == NULL) goto Exit;
  if (out->status != 0) {
    ch_client_error(cl, sc->req_id, out->code, out->error);
    goto Exit;
  }
  if (sc->req_id == NULL) goto Exit; /* profile `unified` sends no request ids and expects no acks */
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "{\"type\":\"ack\",\"id\":");
  ch_buf_append_json_qstr(&b, sc->req_id);
  ch_buf_append_str(&b, ",\"conversationId\":");
  ch_buf_append_json_qstr(&b, out->conversation_id);
  ch_buf_printf(&b, ",\"seq\":%llu,\"messageId\":", (unsigned long long)out->seq);
  ch_buf_append_json_qstr(&b, out->id);
  if (out->client_id) {
    ch_buf_append_str(&b, ",\"clientId\":");
    ch_buf_append_json_qstr(&b, out->client_id);
  }
  ch_buf_printf(&b, ",\"duplicate\":%s}", out->duplicate ? "true" : "false");
  cl->ops->send_json(cl, b.base, b.len);
  CH_STAT_ADD(&cl->loop->stats, acks, 1);
  ch_buf_dispose(&b);
Exit:
  free(sc->req_id);
  free(sc);
}

void ch_client_send_message(ch_client_t *cl, const char *conv, struct cJSON *message, const char *req_id,
                            const char *agent) {
  ch__send_ctx_t *sc = ch_xcalloc(1, sizeof(*sc));
  sc->client_id = cl->id;
  sc->loop = cl->loop;
  sc->req_id = req_id ? ch_xstrdup(req_id) : NULL;
  ch_msg_in_t in = {.conv = conv, .message = message, .user_id = cl->user_id, .device_id = cl->device_id,
                    .source = cl->source, .scopes = cl->scopes, .agent = agent};
  ch_hub_send_message(cl->loop, &in, ch__send_cb, sc);
}

void ch_client_store_event(ch_client_t *cl, const char *conv, const char *event_name, const char *doc,
                           size_t len, const char *req_id) {
  ch__send_ctx_t *sc = ch_xcalloc(1, sizeof(*sc));
  sc->client_id = cl->id;
  sc->loop = cl->loop;
  sc->req_id = req_id ? ch_xstrdup(req_id) : NULL;
  ch_msg_in_t in = {.conv = conv, .message_json = doc, .len = len, .user_id = cl->user_id,
                    .device_id = cl->device_id, .source = cl->source, .scopes = cl->scopes};
  ch_hub_store_event(cl->loop, &in, event_name, ch__send_cb, sc);
}

int ch_client_publish_ephemeral(ch_client_t *cl, const char *conv, const char *type, const char *json,
                                size_t len) {
  ch_csub_t *s = ch_client_sub(cl, conv);
  if (s == NULL || s->state != CH_CSUB_LIVE) return CH_EPERM;
  ch_bcast_t *b = ch_bcast_new(type, "chat", conv, 0, ch_chunk_from(json, len));
  b->exclude_client = cl->id;
  ch_topic_publish(s->topic, strlen(s->topic), &b->base);
  return 0;
}

/* ---- typing ---------------------------------------------------------------- */

static int ch__typing_publish(ch_client_t *cl, const char *conv, int typing) {
  ch_buf_t b = CH_BUF_INIT;
  char ts[CH_ISO8601_LEN + 1];
  ch_clock_iso8601(ch_clock_wall_ms(), ts);
  ch_buf_append_str(&b, "{\"type\":\"typing\",\"conversationId\":");
  ch_buf_append_json_qstr(&b, conv);
  ch_buf_printf(&b, ",\"clientId\":\"%llu\",\"source\":", (unsigned long long)cl->id);
  ch_buf_append_json_qstr(&b, cl->source);
  ch_buf_append_str(&b, ",\"userId\":");
  ch_buf_append_json_qstr(&b, cl->user_id);
  ch_buf_printf(&b, ",\"typing\":%s,\"timestamp\":\"%s\"}", typing ? "true" : "false", ts);
  int r = ch_client_publish_ephemeral(cl, conv, "typing", b.base, b.len);
  ch_buf_dispose(&b);
  return r;
}

int ch_client_typing(ch_client_t *cl, const char *conv, int typing) {
  ch_csub_t *s = ch_client_sub(cl, conv);
  if (s == NULL || s->state != CH_CSUB_LIVE) return CH_EPERM;
  uint64_t now = cl->loop->now_ms;
  int was = cl->typing_conv[0] && strcmp(cl->typing_conv, conv) == 0; /* others see us typing here */
  if (!typing) {
    if (!was) return 0; /* nothing to stop: relay nothing (start/stop pairs cannot beat the limit) */
    cl->typing_conv[0] = '\0';
    return ch__typing_publish(cl, conv, 0);
  }
  if (cl->typing_conv[0] && !was) { /* moved rooms: the stop is relayed at once */
    ch__typing_publish(cl, cl->typing_conv, 0);
    cl->typing_conv[0] = '\0';
  }
  if (now < cl->typing_tokens_ms) { /* inside the gap: relay nothing */
    if (was) cl->typing_at_ms = now; /* a refresh keeps the relayed start alive */
    return 0;
  }
  snprintf(cl->typing_conv, sizeof(cl->typing_conv), "%s", conv);
  cl->typing_at_ms = now;
  cl->typing_tokens_ms = now + ch_client_settings.typing_gap_ms;
  return ch__typing_publish(cl, conv, 1);
}

void ch_client_sweep(ch_client_t *cl, uint64_t now_ms) {
  if (cl->typing_conv[0] && now_ms - cl->typing_at_ms >= ch_client_settings.typing_expire_ms) {
    ch__typing_publish(cl, cl->typing_conv, 0);
    cl->typing_conv[0] = '\0';
  }
}

/* ---- cancel an agent stream -------------------------------------------------- */

typedef struct {
  ch_hub_req_t base;
  uint64_t client_id;
  unsigned scopes;
  char user[129];
  char *conv, *stream_id, *req_id;
  const char *code;
} ch__cancel_req_t;

static void ch__cancel_free(ch_hub_req_t *r) {
  ch__cancel_req_t *q = (ch__cancel_req_t *)r;
  free(q->conv);
  free(q->stream_id);
  free(q->req_id);
  free(q);
}

static void ch__cancel_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__cancel_req_t *q = (ch__cancel_req_t *)r;
  ch_conv_t cv;
  memset(&cv, 0, sizeof(cv));
  int rc = h->store->ops->conv_get(h->store, q->conv, &cv);
  if (rc != 0 || !ch_hub_may_access(&cv, q->user, q->scopes)) {
    r->status = CH_EPERM;
    q->code = "forbidden";
    ch_buf_append_str(&r->err, "not a member of this conversation");
  } else if (ch_agent_cancel(h, q->stream_id, q->conv) != 0) {
    r->status = CH_ENOTFOUND;
    q->code = "not_found";
    ch_buf_append_str(&r->err, "no such stream in progress");
  }
  ch_conv_dispose(&cv);
}

static void ch__cancel_done(ch_hub_req_t *r) {
  ch__cancel_req_t *q = (ch__cancel_req_t *)r;
  ch_client_t *cl = ch_client_find(r->loop, q->client_id);
  if (cl == NULL) return;
  if (r->status != 0) {
    ch_client_error(cl, q->req_id, q->code, ch_buf_cstr(&r->err));
    return;
  }
  if (q->req_id == NULL) return;
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "{\"type\":\"cancelled\",\"id\":");
  ch_buf_append_json_qstr(&b, q->req_id);
  ch_buf_append_str(&b, ",\"streamId\":");
  ch_buf_append_json_qstr(&b, q->stream_id);
  ch_buf_append_byte(&b, '}');
  cl->ops->send_json(cl, b.base, b.len);
  ch_buf_dispose(&b);
}

void ch_client_cancel_stream(ch_client_t *cl, const char *conv, const char *stream_id, const char *req_id) {
  if (!(cl->scopes & (CH_SCOPE_WRITE | CH_SCOPE_ADMIN))) {
    ch_client_error(cl, req_id, "forbidden", "this credential may not write");
    return;
  }
  ch__cancel_req_t *q = ch_xcalloc(1, sizeof(*q));
  q->base.run = ch__cancel_run;
  q->base.done = ch__cancel_done;
  q->base.free_cb = ch__cancel_free;
  q->base.loop = cl->loop;
  q->client_id = cl->id;
  q->scopes = cl->scopes;
  snprintf(q->user, sizeof(q->user), "%s", cl->user_id);
  q->conv = ch_xstrdup(conv);
  q->stream_id = ch_xstrdup(stream_id);
  q->req_id = req_id ? ch_xstrdup(req_id) : NULL;
  ch_hub_submit(ch_hub, &q->base);
}

/* ---- presence on request ------------------------------------------------------ */

typedef struct {
  ch_hub_req_t base;
  char user[129];
  unsigned scopes;
  char *conv;           /* owned */
  size_t limit;         /* most entries listed */
  const char *code;     /* static, with status != 0 */
  ch_buf_t out;         /* the answer document */
  ch_hub_json_cb cb;
  void *ud;             /* the caller's; not owned */
} ch__pq_req_t;

static void ch__pq_free(ch_hub_req_t *r) {
  ch__pq_req_t *q = (ch__pq_req_t *)r;
  free(q->conv);
  ch_buf_dispose(&q->out);
  free(q);
}

static void ch__pq_fail(ch__pq_req_t *q, int status, const char *code, const char *msg) {
  q->base.status = status;
  q->code = code;
  ch_buf_append_str(&q->base.err, msg);
}

static void ch__pq_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__pq_req_t *q = (ch__pq_req_t *)r;
  ch_conv_t cv;
  memset(&cv, 0, sizeof(cv));
  char key[140];
  snprintf(key, sizeof(key), "c:%s", q->conv);
  if (!ch_auth_scopes_allow(q->scopes, CH_SCOPE_READ)) {
    ch__pq_fail(q, CH_EPERM, "forbidden", "this credential may not read");
    goto Exit;
  }
  int rc = h->store->ops->conv_get(h->store, q->conv, &cv);
  if (rc == 0 && !ch_hub_may_access(&cv, q->user, q->scopes)) {
    ch__pq_fail(q, CH_EPERM, "forbidden", "not a member of this conversation");
    goto Exit;
  }
  if (rc == CH_ENOTFOUND) { /* not created yet: only its claim holder (or an admin) may look */
    const char *claim = ch_presence_claim(h, key);
    if (claim == NULL || (strcmp(claim, q->user) != 0 && !(q->scopes & CH_SCOPE_ADMIN))) {
      ch__pq_fail(q, CH_ENOTFOUND, "not_found", "conversation not found");
      goto Exit;
    }
  } else if (rc != 0) {
    ch__pq_fail(q, rc, "store_error", "could not read the conversation");
    goto Exit;
  }
  size_t n = ch_presence_count(h, key);
  ch_buf_append_str(&q->out, "{\"conversationId\":");
  ch_buf_append_json_qstr(&q->out, q->conv);
  ch_buf_printf(&q->out, ",\"presenceCount\":%zu,\"userCount\":%zu,\"presence\":", n,
                ch_presence_user_count(h, key));
  size_t listed = ch_presence_json_max(h, key, q->limit, &q->out);
  if (q->limit > 0 && listed < n) ch_buf_append_str(&q->out, ",\"presenceTruncated\":true");
  ch_buf_append_byte(&q->out, '}');
Exit:
  ch_conv_dispose(&cv);
}

static void ch__pq_done(ch_hub_req_t *r) {
  ch__pq_req_t *q = (ch__pq_req_t *)r;
  if (r->status != 0) q->cb(q->ud, r->status, q->code ? q->code : "store_error", ch_buf_cstr(&r->err), NULL, 0);
  else q->cb(q->ud, 0, NULL, NULL, q->out.base, q->out.len);
}

void ch_client_presence_query(ch_loop_t *l, const char *user, unsigned scopes, const char *conv, size_t limit,
                              ch_hub_json_cb cb, void *ud) {
  ch__pq_req_t *q = ch_xcalloc(1, sizeof(*q));
  q->base.run = ch__pq_run;
  q->base.done = ch__pq_done;
  q->base.free_cb = ch__pq_free;
  q->base.loop = l;
  snprintf(q->user, sizeof(q->user), "%s", user ? user : "");
  q->scopes = scopes;
  q->conv = ch_xstrdup(conv);
  q->limit = limit < ch_client_settings.sync_cap ? limit : ch_client_settings.sync_cap;
  q->cb = cb;
  q->ud = ud;
  ch_hub_submit(ch_hub, &q->base); /* every answer, refusals included, comes from the hub: never re-entrant */
}

typedef struct {
  ch_loop_t *loop;
  uint64_t client_id;
  char *req_id; /* owned, or NULL */
} ch__presence_ctx_t;

static void ch__presence_cb(void *ud, int status, const char *code, const char *error, const char *json,
                            size_t len) {
  ch__presence_ctx_t *pc = ud;
  ch_client_t *cl = ch_client_find(pc->loop, pc->client_id);
  if (cl == NULL) goto Exit; /* gone meanwhile */
  if (status != 0) {
    ch_client_error(cl, pc->req_id, code, error);
    goto Exit;
  }
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "{\"type\":\"presence_list\"");
  if (pc->req_id) {
    ch_buf_append_str(&b, ",\"id\":");
    ch_buf_append_json_qstr(&b, pc->req_id);
  }
  ch_buf_append_byte(&b, ',');
  ch_buf_append(&b, json + 1, len - 1); /* the query's object, without its '{' */
  cl->ops->send_json(cl, b.base, b.len);
  ch_buf_dispose(&b);
Exit:
  free(pc->req_id);
  free(pc);
}

void ch_client_presence(ch_client_t *cl, const char *conv, const struct cJSON *limit, const char *req_id) {
  /* 2^53: beyond it a double is no exact integer (as join's "limit") */
  if (limit && !(cJSON_IsNumber(limit) && limit->valuedouble >= 0 && limit->valuedouble <= 9007199254740992.0)) {
    ch_client_error(cl, req_id, "invalid", "\"limit\" must be a number in 0..2^53");
    return;
  }
  ch__presence_ctx_t *pc = ch_xcalloc(1, sizeof(*pc));
  pc->loop = cl->loop;
  pc->client_id = cl->id;
  pc->req_id = req_id ? ch_xstrdup(req_id) : NULL;
  size_t n = limit ? (size_t)limit->valuedouble : ch_client_settings.sync_cap;
  ch_client_presence_query(cl->loop, cl->user_id, cl->scopes, conv, n, ch__presence_cb, pc);
}
