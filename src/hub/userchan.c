/*
 * userchan.c — the user channel (see userchan.h).
 *
 * Two halves:
 *
 *   loop side (one ch_userchan_t per client on the channel, cl->userchan):
 *     topic subscription "u:<user>", PENDING buffer, snapshot seq, renderer
 *   hub side (hub thread only, module statics):
 *     ch__uc_users: user -> devices (client id, device, source, connected-at)
 *     ch__uc_seq:   seq of the newest device event (hub-wide, increasing)
 *
 * The hub keeps its own device table next to the presence set "u:<user>"
 * (which it updates too, for whoever counts a user's devices) because a
 * device's connected-at time and an in-order listing are the channel's, not
 * presence's. Both are changed in the same hub request, so they agree.
 * There is one hub per process (ch_hub), hence module statics.
 *
 * Answers find their client by id (ch_client_find) and check the channel's
 * serial: a client that stopped and restarted meanwhile ignores the old one.
 */
#include "hub/userchan.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/map.h"
#include "hub/hub.h"
#include "hub/presence.h"
#include "hub/topic.h"

enum { CH__UC_PENDING = 0, CH__UC_LIVE = 1 };

struct ch_userchan_s {
  ch_topic_sub_t tsub;              /* in the loop's topic table */
  ch_client_t *client;              /* owner; not owned */
  const ch_userchan_ops_t *ops;     /* static */
  char topic[CH_USERCHAN_TOPIC_MAX]; /* "u:<user>" */
  uint64_t serial;                  /* this start, process-unique */
  uint64_t snap_seq;                /* device events with seq <= this are in the snapshot */
  int state;                        /* CH__UC_* */
  ch_bcast_t **buf;                 /* owned references held while PENDING */
  size_t nbuf, capbuf;
};

static _Atomic uint64_t ch__uc_serial;

/* ---- JSON ------------------------------------------------------------------ */

void ch_userchan_topic(char *out, const char *user) {
  snprintf(out, CH_USERCHAN_TOPIC_MAX, "u:%s", user);
}

void ch_userchan_device_json(ch_buf_t *b, const ch_userchan_device_t *d, int64_t at_ms) {
  char at[CH_ISO8601_LEN + 1];
  ch_clock_iso8601(at_ms, at);
  ch_buf_append_str(b, "{\"userId\":");
  ch_buf_append_json_qstr(b, d->user_id);
  ch_buf_append_str(b, ",\"deviceId\":");
  ch_buf_append_json_qstr(b, d->device_id);
  if (d->source[0]) {
    ch_buf_append_str(b, ",\"source\":");
    ch_buf_append_json_qstr(b, d->source);
  }
  ch_buf_printf(b, ",\"at\":\"%s\"}", at);
}

void ch_userchan_envelope(ch_buf_t *b, const char *type, const char *payload, size_t len, int64_t ts_ms) {
  char ts[CH_ISO8601_LEN + 1];
  ch_clock_iso8601(ts_ms, ts);
  ch_buf_append_str(b, "{\"type\":");
  ch_buf_append_json_qstr(b, type);
  ch_buf_append_str(b, ",\"payload\":");
  if (payload) ch_buf_append(b, payload, len);
  else ch_buf_append_str(b, "{}");
  ch_buf_printf(b, ",\"timestamp\":\"%s\"}", ts);
}

/* ---- hub side (hub thread only) ------------------------------------------- */

typedef struct {
  ch_userchan_device_t *a; /* owned array, oldest first */
  size_t n, cap;
} ch__uc_set_t;

static ch_map_t ch__uc_users; /* user id -> ch__uc_set_t (owned) */
static uint64_t ch__uc_seq;

static void ch__uc_presence_entry(const ch_userchan_device_t *d, ch_presence_entry_t *e) {
  memset(e, 0, sizeof(*e));
  e->client_id = d->client_id;
  memcpy(e->user_id, d->user_id, sizeof(e->user_id));
  memcpy(e->device_id, d->device_id, sizeof(e->device_id));
  memcpy(e->source, d->source, sizeof(e->source));
}

/* Publish a device event to "u:<user>" after the commit; returns its seq. */
static uint64_t ch__uc_publish_device(ch_hub_t *h, const char *type, const ch_userchan_device_t *d, int64_t at_ms) {
  ch_buf_t p = CH_BUF_INIT, b = CH_BUF_INIT;
  ch_userchan_device_json(&p, d, at_ms);
  ch_userchan_envelope(&b, type, p.base, p.len, at_ms);
  uint64_t seq = ++ch__uc_seq;
  ch_bcast_t *bc = ch_bcast_new(CH_USERCHAN_BCAST_TYPE, "user", d->user_id, seq, ch_buf_to_chunk(&b));
  bc->exclude_client = d->client_id;
  char topic[CH_USERCHAN_TOPIC_MAX];
  ch_userchan_topic(topic, d->user_id);
  ch_hub_publish(h, topic, bc);
  ch_buf_dispose(&p);
  ch_buf_dispose(&b);
  return seq;
}

typedef struct {
  ch_hub_req_t base;
  ch_userchan_device_t me;
  uint64_t serial;
  char *req_id;                /* owned, or NULL */
  ch_userchan_device_t *devs;  /* owned: the snapshot */
  size_t ndevs;
  uint64_t snap_seq;
} ch__uc_start_req_t;

static void ch__uc_start_free(ch_hub_req_t *r) {
  ch__uc_start_req_t *q = (ch__uc_start_req_t *)r;
  free(q->req_id);
  free(q->devs);
  free(q);
}

static void ch__uc_start_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__uc_start_req_t *q = (ch__uc_start_req_t *)r;
  const char *user = q->me.user_id;
  ch__uc_set_t *s = ch_map_get(&ch__uc_users, user, strlen(user));
  if (s == NULL) {
    s = ch_xcalloc(1, sizeof(*s));
    ch_map_put(&ch__uc_users, user, strlen(user), s);
  }
  if (s->n) {
    q->devs = ch_xmalloc(s->n * sizeof(*q->devs));
    memcpy(q->devs, s->a, s->n * sizeof(*q->devs));
    q->ndevs = s->n;
  }
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 4;
    s->a = ch_xrealloc(s->a, s->cap * sizeof(*s->a));
  }
  q->me.at_ms = ch_clock_wall_ms();
  s->a[s->n++] = q->me;
  char key[CH_USERCHAN_TOPIC_MAX];
  ch_userchan_topic(key, user);
  ch_presence_entry_t e;
  ch__uc_presence_entry(&q->me, &e);
  ch_presence_add(h, key, &e);
  ch__uc_publish_device(h, CH_USERCHAN_CONNECTED, &q->me, q->me.at_ms);
  q->snap_seq = ch__uc_seq;
}

static void ch__uc_deliver_one(ch_userchan_t *uc, ch_bcast_t *b) {
  if (b->exclude_client == uc->client->id) return;
  if (b->seq && b->seq <= uc->snap_seq) return; /* already in the snapshot */
  uc->ops->event(uc->client, b);
}

static void ch__uc_drop_buffer(ch_userchan_t *uc) {
  for (size_t i = 0; i < uc->nbuf; i++) ch_bcast_unref(uc->buf[i]);
  free(uc->buf);
  uc->buf = NULL;
  uc->nbuf = uc->capbuf = 0;
}

static void ch__uc_start_done(ch_hub_req_t *r) {
  ch__uc_start_req_t *q = (ch__uc_start_req_t *)r;
  ch_client_t *cl = ch_client_find(r->loop, q->me.client_id);
  if (cl == NULL || cl->userchan == NULL || cl->userchan->serial != q->serial) return;
  ch_userchan_t *uc = cl->userchan;
  uc->snap_seq = q->snap_seq;
  uc->ops->ready(cl, q->req_id, q->devs, q->ndevs);
  if (cl->userchan != uc) return; /* the renderer stopped the channel */
  uc->state = CH__UC_LIVE;
  /* Delivering may stop the channel (a renderer closing on a full queue does
   * not free synchronously, but be safe): detach the buffer first. */
  ch_bcast_t **buf = uc->buf;
  size_t n = uc->nbuf;
  uc->buf = NULL;
  uc->nbuf = uc->capbuf = 0;
  for (size_t i = 0; i < n; i++) {
    if (cl->userchan == uc) ch__uc_deliver_one(uc, buf[i]);
    ch_bcast_unref(buf[i]);
  }
  free(buf);
}

typedef struct {
  ch_hub_req_t base;
  uint64_t client_id;
  char user_id[129];
} ch__uc_stop_req_t;

static void ch__uc_stop_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__uc_stop_req_t *q = (ch__uc_stop_req_t *)r;
  ch__uc_set_t *s = ch_map_get(&ch__uc_users, q->user_id, strlen(q->user_id));
  char key[CH_USERCHAN_TOPIC_MAX];
  ch_userchan_topic(key, q->user_id);
  ch_presence_entry_t e;
  int found = 0;
  ch_presence_remove(h, key, q->client_id, &e, &found);
  if (s == NULL) return;
  for (size_t i = 0; i < s->n; i++) {
    if (s->a[i].client_id != q->client_id) continue;
    ch_userchan_device_t d = s->a[i];
    memmove(&s->a[i], &s->a[i + 1], (s->n - i - 1) * sizeof(*s->a));
    s->n--;
    ch__uc_publish_device(h, CH_USERCHAN_DISCONNECTED, &d, ch_clock_wall_ms());
    break;
  }
  if (s->n == 0) {
    ch_map_del(&ch__uc_users, q->user_id, strlen(q->user_id));
    free(s->a);
    free(s);
    if (ch__uc_users.count == 0) ch_map_dispose(&ch__uc_users); /* nobody left: no table */
  }
}

/* ---- loop side ------------------------------------------------------------- */

static void ch__uc_topic_deliver(ch_topic_sub_t *ts, ch_topic_item_t *it) {
  ch_userchan_t *uc = CH_LIST_DATA(ts, ch_userchan_t, tsub);
  ch_bcast_t *b = (ch_bcast_t *)it;
  if (uc->state == CH__UC_LIVE) {
    ch__uc_deliver_one(uc, b);
    return;
  }
  if (uc->nbuf == uc->capbuf) {
    uc->capbuf = uc->capbuf ? uc->capbuf * 2 : 8;
    uc->buf = ch_xrealloc(uc->buf, uc->capbuf * sizeof(*uc->buf));
  }
  ch_topic_item_ref(&b->base);
  uc->buf[uc->nbuf++] = b;
}

int ch_userchan_start(ch_client_t *cl, const ch_userchan_ops_t *ops, const char *req_id) {
  if (cl->userchan) return CH_EEXIST;
  if (!ch_auth_id_valid(cl->user_id)) return CH_EINVAL;
  ch_userchan_t *uc = ch_xcalloc(1, sizeof(*uc));
  uc->client = cl;
  uc->ops = ops;
  uc->serial = atomic_fetch_add(&ch__uc_serial, 1) + 1;
  ch_userchan_topic(uc->topic, cl->user_id);
  uc->tsub.deliver = ch__uc_topic_deliver;
  ch_list_init(&uc->tsub.node);
  cl->userchan = uc;
  ch_topic_subscribe(cl->loop, uc->topic, strlen(uc->topic), &uc->tsub);

  ch__uc_start_req_t *q = ch_xcalloc(1, sizeof(*q));
  q->base.run = ch__uc_start_run;
  q->base.done = ch__uc_start_done;
  q->base.free_cb = ch__uc_start_free;
  q->base.loop = cl->loop;
  q->serial = uc->serial;
  q->req_id = req_id ? ch_xstrdup(req_id) : NULL;
  q->me.client_id = cl->id;
  snprintf(q->me.user_id, sizeof(q->me.user_id), "%s", cl->user_id);
  snprintf(q->me.device_id, sizeof(q->me.device_id), "%s", cl->device_id);
  snprintf(q->me.source, sizeof(q->me.source), "%s", cl->source);
  ch_hub_submit(ch_hub, &q->base);
  return 0;
}

void ch_userchan_stop(ch_client_t *cl) {
  ch_userchan_t *uc = cl->userchan;
  if (uc == NULL) return;
  cl->userchan = NULL;
  if (uc->tsub.topic) ch_topic_unsubscribe(cl->loop, &uc->tsub);
  ch__uc_drop_buffer(uc);
  free(uc);
  if (ch_hub == NULL) return; /* shutting down without a hub: nobody to tell */
  ch__uc_stop_req_t *q = ch_xcalloc(1, sizeof(*q));
  q->base.run = ch__uc_stop_run;
  q->base.loop = NULL; /* nothing to answer */
  q->client_id = cl->id;
  snprintf(q->user_id, sizeof(q->user_id), "%s", cl->user_id);
  ch_hub_submit(ch_hub, &q->base);
}

int ch_userchan_active(const ch_client_t *cl) { return cl->userchan != NULL; }

int ch_userchan_publish(ch_client_t *cl, const char *json, size_t len) {
  if (!ch_auth_id_valid(cl->user_id)) return CH_EINVAL;
  char topic[CH_USERCHAN_TOPIC_MAX];
  ch_userchan_topic(topic, cl->user_id);
  ch_bcast_t *b = ch_bcast_new(CH_USERCHAN_BCAST_TYPE, "user", cl->user_id, 0, ch_chunk_from(json, len));
  b->exclude_client = cl->id;
  ch_topic_publish(topic, strlen(topic), &b->base);
  return 0;
}

/* ---- the native renderer ---------------------------------------------------- */

static void ch__uc_native_event(ch_client_t *cl, ch_bcast_t *b) { cl->ops->deliver(cl, NULL, b); }

static void ch__uc_native_ready(ch_client_t *cl, const char *req_id, const ch_userchan_device_t *devs, size_t n) {
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "{\"type\":\"subscribed\",\"channel\":\"user\"");
  if (req_id) {
    ch_buf_append_str(&b, ",\"id\":");
    ch_buf_append_json_qstr(&b, req_id);
  }
  ch_buf_append_str(&b, ",\"userId\":");
  ch_buf_append_json_qstr(&b, cl->user_id);
  ch_buf_append_str(&b, ",\"devices\":[");
  for (size_t i = 0; i < n; i++) {
    if (i) ch_buf_append_byte(&b, ',');
    ch_userchan_device_json(&b, &devs[i], devs[i].at_ms);
  }
  ch_buf_append_str(&b, "]}");
  cl->ops->send_json(cl, b.base, b.len);
  ch_buf_dispose(&b);
}

const ch_userchan_ops_t ch_userchan_native_ops = {ch__uc_native_event, ch__uc_native_ready};
