/*
 * agent.c — agent registry, stream life cycle, timeouts, publishing and
 * usage accounting (see agent.h). Everything here runs on the hub thread
 * except ch_agents_setup and ch_agent_set_usage_cb (start-up) and the
 * read-only lookups.
 *
 *   trigger ─ request + the prompt's author/key (store) ─ usage: 1 request
 *      │ queued (max-concurrent) or started
 *      ▼
 *   deltas ─ agent chars; back end keeps st->tokens_in/out current
 *      ▼
 *   end (success | error | cancel | shutdown) ─ agent tokens; usage: chars,
 *      tokens ─ final request (store + publish) ─ stream freed
 */
#include "agent/agent.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/http.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "hub/bcast.h"
#include "hub/hub.h"
#include "hub/ops.h"
#include "store/store.h"

#define CH__AGENTS_MAX 64

static ch_agent_t *ch__agents[CH__AGENTS_MAX];
static size_t ch__nagents;
static ch_list_t ch__running = {&ch__running, &ch__running}; /* ch_agent_stream_t, queued or running */
static ch_agent_usage_cb ch__usage_cb;                        /* set at start-up; called on the hub thread */

static const ch_agent_backend_t *const ch__backends[] = {
    &ch_agent_backend_echo,
    &ch_agent_backend_exec,
    &ch_agent_backend_openai,
    &ch_agent_backend_anthropic,
};

/* Per-stream timer, kept apart from the stream so that closing it (async)
 * never races the stream's release. */
typedef struct {
  uv_timer_t t;
  ch_agent_stream_t *st; /* NULL once the stream ended */
  ch_hub_t *h;
} ch__stimer_t;

typedef struct {
  ch_agent_stream_t pub;
  ch_hub_t *h;
  ch__stimer_t *timer;
} ch__stream_t;

/* ---- specs and registry ---------------------------------------------------- */

const char *ch_agent_opt(const ch_agent_t *a, const char *key) {
  for (size_t i = 0; i < a->nopts; i++)
    if (strcmp(a->opt_keys[i], key) == 0) return a->opt_vals[i];
  return NULL;
}

static int ch__name_ok(const char *s, size_t n) {
  if (n == 0 || n > 64) return 0;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_') return 0;
  return 1;
}

static void ch__agent_free(ch_agent_t *a) {
  if (a == NULL) return;
  if (a->be && a->be->dispose && a->be_state) a->be->dispose(a);
  for (size_t i = 0; i < a->nopts; i++) {
    free(a->opt_keys[i]);
    free(a->opt_vals[i]);
  }
  free(a->opt_keys);
  free(a->opt_vals);
  free(a->name);
  free(a->arg);
  free(a->system_prompt);
  free(a);
}

static int ch__u64(const char *v, uint64_t *out) {
  char *end;
  unsigned long long n = strtoull(v, &end, 10);
  if (*v == '\0' || *end != '\0' || *v == '-') return -1;
  *out = n;
  return 0;
}

/* Parse "NAME=KIND[:ARG][;key=value]...". */
static int ch__agent_parse(const char *spec, ch_agent_t **out, ch_buf_t *err) {
  *out = NULL;
  const char *eq = strchr(spec, '=');
  if (eq == NULL || !ch__name_ok(spec, (size_t)(eq - spec))) {
    ch_buf_printf(err, "agent '%s': expected NAME=KIND[:ARG] with NAME of 1..64 letters, digits, - or _\n", spec);
    return CH_ECONFIG;
  }
  ch_agent_t *a = ch_xcalloc(1, sizeof(*a));
  ch_list_init(&a->queue);
  a->name = ch_xstrndup(spec, (size_t)(eq - spec));
  a->max_concurrent = 4;
  a->max_queue = 1000;
  a->idle_timeout_ms = 60000;
  a->total_timeout_ms = 300000;
  a->history_budget = 16384;
  const char *kind = eq + 1;
  const char *semi = strchr(kind, ';');
  const char *end = semi ? semi : kind + strlen(kind);
  const char *colon = memchr(kind, ':', (size_t)(end - kind));
  size_t klen = (size_t)((colon ? colon : end) - kind);
  for (size_t i = 0; i < CH_ARRAY_SIZE(ch__backends); i++)
    if (strlen(ch__backends[i]->kind) == klen && memcmp(ch__backends[i]->kind, kind, klen) == 0) a->be = ch__backends[i];
  if (a->be == NULL) {
    ch_buf_t kinds = CH_BUF_INIT;
    for (size_t i = 0; i < CH_ARRAY_SIZE(ch__backends); i++)
      ch_buf_printf(&kinds, "%s%s", i ? ", " : "", ch__backends[i]->kind);
    ch_buf_printf(err, "agent '%s': unknown kind '%.*s' (allowed: %s)\n", a->name, (int)klen, kind,
                  ch_buf_cstr(&kinds));
    ch_buf_dispose(&kinds);
    goto Fail;
  }
  a->arg = colon ? ch_xstrndup(colon + 1, (size_t)(end - colon - 1)) : ch_xstrdup("");
  while (semi) {
    const char *p = semi + 1;
    semi = strchr(p, ';');
    const char *e = semi ? semi : p + strlen(p);
    const char *q = memchr(p, '=', (size_t)(e - p));
    if (q == NULL || q == p) {
      ch_buf_printf(err, "agent '%s': option '%.*s' is not key=value\n", a->name, (int)(e - p), p);
      goto Fail;
    }
    char *k = ch_xstrndup(p, (size_t)(q - p)), *v = ch_xstrndup(q + 1, (size_t)(e - q - 1));
    uint64_t n = 0;
    int bad = 0;
    if (strcmp(k, "system") == 0) {
      free(a->system_prompt);
      a->system_prompt = ch_xstrdup(v);
    } else if (strcmp(k, "max-concurrent") == 0) {
      bad = ch__u64(v, &n) || n < 1 || n > 1000;
      a->max_concurrent = (unsigned)n;
    } else if (strcmp(k, "max-queue") == 0) {
      bad = ch__u64(v, &n) || n > 100000;
      a->max_queue = (unsigned)n;
    } else if (strcmp(k, "idle-timeout") == 0) {
      bad = ch__u64(v, &n) || n < 10;
      a->idle_timeout_ms = n;
    } else if (strcmp(k, "total-timeout") == 0) {
      bad = ch__u64(v, &n) || n < 10;
      a->total_timeout_ms = n;
    } else if (strcmp(k, "history") == 0) {
      bad = ch__u64(v, &n) || n > (64u << 20);
      a->history_budget = (size_t)n;
    }
    if (bad) {
      ch_buf_printf(err, "agent '%s': option %s = '%s' is out of range\n", a->name, k, v);
      free(k);
      free(v);
      goto Fail;
    }
    a->opt_keys = ch_xrealloc(a->opt_keys, (a->nopts + 1) * sizeof(char *));
    a->opt_vals = ch_xrealloc(a->opt_vals, (a->nopts + 1) * sizeof(char *));
    a->opt_keys[a->nopts] = k;
    a->opt_vals[a->nopts] = v;
    a->nopts++;
  }
  if (a->be->init && a->be->init(a, err) != 0) goto Fail;
  *out = a;
  return 0;
Fail:
  ch__agent_free(a);
  return CH_ECONFIG;
}

int ch_agent_spec_check(const char *spec, ch_buf_t *err) {
  ch_agent_t *a;
  int rc = ch__agent_parse(spec, &a, err);
  ch__agent_free(a);
  return rc;
}

int ch_agents_setup(char **specs, size_t n, ch_buf_t *err) {
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    ch_agent_t *a;
    if (ch__agent_parse(specs[i], &a, err) != 0) {
      rc = CH_ECONFIG;
      continue;
    }
    if (ch_agent_find(a->name) || ch__nagents == CH__AGENTS_MAX) {
      ch_buf_printf(err, "agent '%s': %s\n", a->name, ch__nagents == CH__AGENTS_MAX ? "too many agents" : "declared twice");
      ch__agent_free(a);
      rc = CH_ECONFIG;
      continue;
    }
    ch__agents[ch__nagents++] = a;
  }
  return rc;
}

void ch_agents_dispose(void) {
  for (size_t i = 0; i < ch__nagents; i++) ch__agent_free(ch__agents[i]);
  ch__nagents = 0;
}

ch_agent_t *ch_agent_find(const char *name) {
  for (size_t i = 0; i < ch__nagents; i++)
    if (strcmp(ch__agents[i]->name, name) == 0) return ch__agents[i];
  return NULL;
}

size_t ch_agents_count(void) { return ch__nagents; }
ch_agent_t *ch_agent_at(size_t i) { return i < ch__nagents ? ch__agents[i] : NULL; }

/* ---- usage per identity -------------------------------------------------------- */

void ch_agent_set_usage_cb(ch_agent_usage_cb cb) { ch__usage_cb = cb; }

static void ch__usage(const ch_agent_stream_t *st, uint64_t requests, uint64_t chars, uint64_t tokens_in,
                      uint64_t tokens_out) {
  if (ch__usage_cb == NULL || st->user_id[0] == '\0') return;
  if (requests == 0 && chars == 0 && tokens_in == 0 && tokens_out == 0) return;
  ch_agent_usage_t u = {.user_id = st->user_id, .key_id = st->key_id[0] ? st->key_id : NULL, .requests = requests,
                        .chars = chars, .tokens_in = tokens_in, .tokens_out = tokens_out};
  ch__usage_cb(&u);
}

/* Who sent the prompt: its author, and the API key when its device is
 * "apikey-<id>" and the store has that key, unrevoked, for that author (a
 * device name is the credential's choice for other kinds, so it alone
 * proves nothing). */
static void ch__stream_who(ch_hub_t *h, ch_agent_stream_t *st, const ch_event_t *prompt) {
  static const char pfx[] = "apikey-";
  if (prompt->user_id == NULL || strlen(prompt->user_id) >= sizeof(st->user_id)) return;
  memcpy(st->user_id, prompt->user_id, strlen(prompt->user_id) + 1);
  const char *dev = prompt->device_id;
  if (dev == NULL || strncmp(dev, pfx, sizeof(pfx) - 1) != 0) return;
  const char *kid = dev + sizeof(pfx) - 1;
  if (kid[0] == '\0' || strlen(kid) >= sizeof(st->key_id)) return;
  ch_apikey_t *keys = NULL;
  size_t n = 0;
  if (h->store->ops->apikey_list(h->store, &keys, &n) != 0) return;
  for (size_t i = 0; i < n; i++)
    if (!keys[i].revoked && keys[i].id && strcmp(keys[i].id, kid) == 0 && keys[i].user_id &&
        strcmp(keys[i].user_id, st->user_id) == 0)
      memcpy(st->key_id, kid, strlen(kid) + 1);
  for (size_t i = 0; i < n; i++) ch_apikey_dispose(&keys[i]);
  free(keys);
}

/* ---- publishing -------------------------------------------------------------- */

static void ch__publish(ch_agent_stream_t *st, ch_buf_t *json, uint32_t index) {
  char topic[140];
  snprintf(topic, sizeof(topic), "c:%s", st->conv);
  ch_bcast_t *b = ch_bcast_new("stream", "chat", st->conv, 0, ch_buf_to_chunk(json));
  if (index) {
    memcpy(b->stream_id, st->id, sizeof(b->stream_id));
    b->stream_index = index;
  }
  ch_topic_publish(topic, strlen(topic), &b->base);
}

static void ch__head(ch_buf_t *b, ch_agent_stream_t *st, const char *op) {
  ch_buf_printf(b, "{\"type\":\"stream\",\"op\":\"%s\",\"conversationId\":", op);
  ch_buf_append_json_qstr(b, st->conv);
  ch_buf_append_str(b, ",\"streamId\":");
  ch_buf_append_json_qstr(b, st->id);
}

void ch_agent_stream_delta(ch_agent_stream_t *st, const char *text, size_t len) {
  if (st->state != CH_AGENT_RUNNING || len == 0) return;
  ch_buf_append(&st->text, text, len);
  st->chunks++;
  st->last_chunk_ms = ch_clock_mono_ms();
  st->agent->chars += len;
  ch_buf_t b = CH_BUF_INIT;
  ch__head(&b, st, "chunk");
  ch_buf_printf(&b, ",\"index\":%u,\"delta\":\"", st->chunks);
  ch_buf_append_json_str(&b, text, len);
  ch_buf_append_str(&b, "\"}");
  ch__publish(st, &b, st->chunks);
  ch_buf_dispose(&b);
}

/* ---- storing the end --------------------------------------------------------- */

typedef struct {
  ch_hub_req_t base;
  ch_event_t ev;
  char stream_id[37];
  char *error;   /* NULL: a reply */
} ch__final_req_t;

static void ch__final_free(ch_hub_req_t *r) {
  ch__final_req_t *q = (ch__final_req_t *)r;
  ch_event_dispose(&q->ev);
  free(q->error);
  free(q);
}

static void ch__final_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__final_req_t *q = (ch__final_req_t *)r;
  ch_store_t *st = h->store;
  int rc = st->ops->append(st, &q->ev, &r->err);
  char topic[140];
  snprintf(topic, sizeof(topic), "c:%s", q->ev.conversation_id);
  ch_buf_t b = CH_BUF_INIT;
  if (rc == 0) {
    ch_buf_t obj = CH_BUF_INIT;
    ch_hub_event_json(&obj, &q->ev);
    if (q->ev.kind == CH_EV_MESSAGE) {
      ch_buf_append_str(&b, "{\"type\":\"message\",\"conversationId\":");
      ch_buf_append_json_qstr(&b, q->ev.conversation_id);
      ch_buf_printf(&b, ",\"seq\":%llu,\"message\":", (unsigned long long)q->ev.seq);
      ch_buf_append(&b, obj.base, obj.len);
      ch_buf_append_byte(&b, '}');
      ch_hub_publish(h, topic, ch_bcast_new("message", "chat", q->ev.conversation_id, q->ev.seq, ch_buf_to_chunk(&b)));
    } else {
      ch_hub_publish(h, topic, ch_bcast_new("event", "chat", q->ev.conversation_id, q->ev.seq, ch_buf_to_chunk(&obj)));
    }
    ch_buf_dispose(&obj);
  } else {
    ch_log_warn("agent: storing the end of stream %s failed: %s", q->stream_id, ch_buf_cstr(&r->err));
  }
  ch_buf_dispose(&b);
  /* The closing stream event follows the stored event (or reports the failure). */
  ch_buf_printf(&b, "{\"type\":\"stream\",\"op\":\"%s\",\"conversationId\":", q->error || rc ? "error" : "end");
  ch_buf_append_json_qstr(&b, q->ev.conversation_id);
  ch_buf_append_str(&b, ",\"streamId\":");
  ch_buf_append_json_qstr(&b, q->stream_id);
  if (q->error || rc) {
    ch_buf_append_str(&b, ",\"error\":");
    ch_buf_append_json_qstr(&b, q->error ? q->error : "the reply could not be stored");
  }
  if (rc == 0) ch_buf_printf(&b, ",\"seq\":%llu", (unsigned long long)q->ev.seq);
  ch_buf_append_byte(&b, '}');
  ch_hub_publish(h, topic, ch_bcast_new("stream", "chat", q->ev.conversation_id, 0, ch_buf_to_chunk(&b)));
  ch_buf_dispose(&b);
}

static void ch__submit_final(ch__stream_t *s, const char *err) {
  ch_agent_stream_t *st = &s->pub;
  ch__final_req_t *q = ch_xcalloc(1, sizeof(*q));
  q->base.run = ch__final_run;
  q->base.free_cb = ch__final_free;
  memcpy(q->stream_id, st->id, sizeof(q->stream_id));
  char uuid[37], ts[CH_ISO8601_LEN + 1];
  ch_uuid4(uuid);
  ch_clock_iso8601(ch_clock_wall_ms(), ts);
  ch_buf_t body = CH_BUF_INIT;
  q->ev.conversation_id = ch_xstrdup(st->conv);
  q->ev.id = ch_xstrdup(uuid);
  q->ev.user_id = ch_xstrdup(st->agent->name);
  q->ev.device_id = ch_xstrdup("agent");
  q->ev.source = ch_xstrdup(st->reply_source ? st->reply_source : "agent");
  if (err == NULL) {
    q->ev.kind = CH_EV_MESSAGE;
    q->ev.role = ch_xstrdup("assistant");
    q->ev.content = ch_xstrndup(st->text.base ? st->text.base : "", st->text.len);
    ch_buf_append_str(&body, "{\"id\":");
    ch_buf_append_json_qstr(&body, uuid);
    ch_buf_append_str(&body, ",\"conversationId\":");
    ch_buf_append_json_qstr(&body, st->conv);
    ch_buf_append_str(&body, ",\"role\":\"assistant\",\"content\":\"");
    ch_buf_append_json_str(&body, st->text.base ? st->text.base : "", st->text.len);
    ch_buf_append_str(&body, "\",\"source\":");
    ch_buf_append_json_qstr(&body, q->ev.source);
  } else {
    q->error = ch_xstrdup(err);
    q->ev.kind = CH_EV_CUSTOM;
    q->ev.type = ch_xstrdup("agent_error");
    ch_buf_append_str(&body, "{\"type\":\"event\",\"event\":\"agent_error\",\"conversationId\":");
    ch_buf_append_json_qstr(&body, st->conv);
    ch_buf_append_str(&body, ",\"payload\":{\"error\":");
    ch_buf_append_json_qstr(&body, err);
    ch_buf_append_str(&body, ",\"partial\":\"");
    ch_buf_append_json_str(&body, st->text.base ? st->text.base : "", st->text.len);
    ch_buf_append_str(&body, "\"}");
  }
  ch_buf_append_str(&body, ",\"agent\":");
  ch_buf_append_json_qstr(&body, st->agent->name);
  ch_buf_append_str(&body, ",\"streamId\":");
  ch_buf_append_json_qstr(&body, st->id);
  ch_buf_printf(&body, ",\"inReplyTo\":%llu,\"userId\":", (unsigned long long)st->in_reply_to);
  ch_buf_append_json_qstr(&body, st->agent->name);
  ch_buf_printf(&body, ",\"timestamp\":\"%s\"}", ts);
  q->ev.body = ch_xstrndup(body.base, body.len);
  ch_buf_dispose(&body);
  ch_hub_submit(s->h, &q->base);
}

/* ---- life cycle ---------------------------------------------------------------- */

static void ch__timer_free(uv_handle_t *h) { free(h->data); }

static void ch__stream_start(ch__stream_t *s);

static void ch__stream_release(ch__stream_t *s) {
  ch_agent_stream_t *st = &s->pub;
  if (s->timer) {
    s->timer->st = NULL;
    uv_timer_stop(&s->timer->t);
    uv_close((uv_handle_t *)&s->timer->t, ch__timer_free);
  }
  ch_list_remove(&st->node);
  ch_buf_dispose(&st->text);
  free(st->conv);
  free(st->reply_source);
  free(st->request_json);
  free(s);
}

static void ch__next_queued(ch_agent_t *a) {
  while (a->active < a->max_concurrent && !ch_list_empty(&a->queue)) {
    ch_list_t *n = a->queue.next;
    ch_list_remove(n);
    a->queued--;
    ch_list_insert_tail(&ch__running, n);
    ch__stream_start((ch__stream_t *)CH_LIST_DATA(n, ch_agent_stream_t, node));
  }
}

void ch_agent_stream_end(ch_agent_stream_t *st, const char *err) {
  ch__stream_t *s = (ch__stream_t *)st;
  if (st->state == CH_AGENT_DONE) return;
  int was_running = st->state == CH_AGENT_RUNNING;
  ch_agent_t *a = st->agent;
  if (was_running) a->active--;
  else a->queued--;
  st->state = CH_AGENT_DONE;
  a->tokens_in += st->tokens_in;
  a->tokens_out += st->tokens_out;
  ch__usage(st, 0, st->text.len, st->tokens_in, st->tokens_out);
  ch__submit_final(s, err);
  ch__stream_release(s);
  ch__next_queued(a);
}

static void ch__abort(ch__stream_t *s, const char *why) {
  ch_agent_stream_t *st = &s->pub;
  if (st->state == CH_AGENT_RUNNING && st->agent->be->cancel) st->agent->be->cancel(st);
  ch_agent_stream_end(st, why);
}

static void ch__timer_cb(uv_timer_t *t) {
  ch__stimer_t *tm = t->data;
  ch__stream_t *s = (ch__stream_t *)tm->st;
  if (s == NULL) return;
  ch_agent_stream_t *st = &s->pub;
  uint64_t now = ch_clock_mono_ms();
  if (now - st->started_ms >= st->agent->total_timeout_ms) ch__abort(s, "upstream timeout");
  else if (now - st->last_chunk_ms >= st->agent->idle_timeout_ms) ch__abort(s, "upstream idle timeout");
}

static void ch__stream_start(ch__stream_t *s) {
  ch_agent_stream_t *st = &s->pub;
  ch_agent_t *a = st->agent;
  st->state = CH_AGENT_RUNNING;
  a->active++;
  a->requests++;
  st->started_ms = st->last_chunk_ms = ch_clock_mono_ms();
  ch_buf_t b = CH_BUF_INIT;
  ch__head(&b, st, "start");
  ch_buf_append_str(&b, ",\"agent\":");
  ch_buf_append_json_qstr(&b, a->name);
  ch_buf_printf(&b, ",\"inReplyTo\":%llu}", (unsigned long long)st->in_reply_to);
  ch__publish(st, &b, 0);
  ch_buf_dispose(&b);
  s->timer = ch_xcalloc(1, sizeof(*s->timer));
  s->timer->st = st;
  s->timer->h = s->h;
  uv_timer_init(&s->h->uv, &s->timer->t);
  s->timer->t.data = s->timer;
  uv_timer_start(&s->timer->t, ch__timer_cb, 100, 100);
  int rc = a->be->start(st, &s->h->uv);
  if (rc != 0) {
    char why[96];
    snprintf(why, sizeof(why), "agent could not start: %s", ch_strerror(rc));
    ch_agent_stream_end(st, why);
  }
}

/* The request: system prompt + the newest messages that fit the budget,
 * oldest first; and who sent the prompt (message `upto`). */
static char *ch__build_request(ch_hub_t *h, ch_agent_stream_t *st, ch_agent_t *a, const char *conv, uint64_t upto) {
  /* History up to the prompt itself: a later prompt committed in the same
   * batch belongs to its own reply, not to this one. */
  ch_event_t *evs = NULL;
  size_t n = 0;
  uint64_t after = upto > 200 ? upto - 200 : 0;
  h->store->ops->events(h->store, conv, after, (size_t)(upto - after), 0, &evs, &n);
  if (n > 0 && evs[n - 1].seq == upto) ch__stream_who(h, st, &evs[n - 1]);
  size_t first = n, used = 0;
  while (first > 0) {
    ch_event_t *e = &evs[first - 1];
    size_t sz = e->content ? strlen(e->content) : 0;
    if (e->kind == CH_EV_MESSAGE && used + sz > a->history_budget && first != n) break;
    if (e->kind == CH_EV_MESSAGE) used += sz;
    first--;
  }
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "{\"agent\":");
  ch_buf_append_json_qstr(&b, a->name);
  ch_buf_append_str(&b, ",\"conversationId\":");
  ch_buf_append_json_qstr(&b, conv);
  if (a->system_prompt) {
    ch_buf_append_str(&b, ",\"system\":");
    ch_buf_append_json_qstr(&b, a->system_prompt);
  }
  ch_buf_append_str(&b, ",\"messages\":[");
  int k = 0;
  for (size_t i = first; i < n; i++) {
    if (evs[i].kind != CH_EV_MESSAGE || evs[i].content == NULL) continue;
    ch_buf_append_str(&b, k++ ? ",{\"role\":" : "{\"role\":");
    ch_buf_append_json_qstr(&b, evs[i].role ? evs[i].role : "user");
    ch_buf_append_str(&b, ",\"content\":");
    ch_buf_append_json_qstr(&b, evs[i].content);
    ch_buf_append_byte(&b, '}');
  }
  ch_buf_append_str(&b, "]}");
  ch_store_events_free(evs, n);
  char *s = ch_xstrndup(b.base, b.len);
  ch_buf_dispose(&b);
  return s;
}

int ch_agent_trigger(ch_hub_t *h, const char *agent, const char *conv, uint64_t seq, const char *source) {
  ch_agent_t *a = ch_agent_find(agent);
  if (a == NULL) return CH_ENOTFOUND;
  ch__stream_t *s = ch_xcalloc(1, sizeof(*s));
  ch_agent_stream_t *st = &s->pub;
  s->h = h;
  ch_uuid4(st->id);
  st->agent = a;
  st->conv = ch_xstrdup(conv);
  st->in_reply_to = seq;
  st->reply_source = source ? ch_xstrdup(source) : NULL;
  st->request_json = ch__build_request(h, st, a, conv, seq);
  ch__usage(st, 1, 0, 0, 0);
  if (a->active < a->max_concurrent) {
    ch_list_insert_tail(&ch__running, &st->node);
    ch__stream_start(s);
    return 0;
  }
  ch_list_insert_tail(&a->queue, &st->node);
  a->queued++;
  if (a->queued > a->max_queue) { /* a bounded backlog: this prompt is answered with an error at once */
    char why[96];
    snprintf(why, sizeof(why), "agent busy: too many prompts waiting (max-queue %u)", a->max_queue);
    ch_agent_stream_end(st, why);
  }
  return 0;
}

static ch__stream_t *ch__find(const char *id) {
  ch_list_t *it;
  ch_list_foreach(it, &ch__running) {
    ch_agent_stream_t *st = CH_LIST_DATA(it, ch_agent_stream_t, node);
    if (strcmp(st->id, id) == 0) return (ch__stream_t *)st;
  }
  for (size_t i = 0; i < ch__nagents; i++) {
    ch_list_foreach(it, &ch__agents[i]->queue) {
      ch_agent_stream_t *st = CH_LIST_DATA(it, ch_agent_stream_t, node);
      if (strcmp(st->id, id) == 0) return (ch__stream_t *)st;
    }
  }
  return NULL;
}

int ch_agent_cancel(ch_hub_t *h, const char *stream_id, const char *conv) {
  ch__stream_t *s = ch__find(stream_id);
  if (s == NULL || (conv && strcmp(s->pub.conv, conv) != 0)) return CH_ENOTFOUND;
  ch__abort(s, "cancelled");
  return 0;
}

void ch_agent_streams_json(const char *conv, ch_buf_t *out) {
  ch_buf_append_byte(out, '[');
  int k = 0;
  ch_list_t *it;
  ch_list_foreach(it, &ch__running) {
    ch_agent_stream_t *st = CH_LIST_DATA(it, ch_agent_stream_t, node);
    if (st->state != CH_AGENT_RUNNING || strcmp(st->conv, conv) != 0) continue;
    ch_buf_append_str(out, k++ ? ",{\"streamId\":" : "{\"streamId\":");
    ch_buf_append_json_qstr(out, st->id);
    ch_buf_append_str(out, ",\"agent\":");
    ch_buf_append_json_qstr(out, st->agent->name);
    ch_buf_printf(out, ",\"inReplyTo\":%llu,\"index\":%u,\"text\":\"", (unsigned long long)st->in_reply_to, st->chunks);
    ch_buf_append_json_str(out, st->text.base ? st->text.base : "", st->text.len);
    ch_buf_append_str(out, "\"}");
  }
  ch_buf_append_byte(out, ']');
}

size_t ch_agent_streams_snapshot(const char *conv, ch_agent_stream_mark_t *marks, size_t max) {
  size_t n = 0;
  ch_list_t *it;
  ch_list_foreach(it, &ch__running) {
    ch_agent_stream_t *st = CH_LIST_DATA(it, ch_agent_stream_t, node);
    if (st->state != CH_AGENT_RUNNING || strcmp(st->conv, conv) != 0 || n == max) continue;
    memcpy(marks[n].id, st->id, sizeof(marks[n].id));
    marks[n].index = st->chunks;
    n++;
  }
  return n;
}

void ch_agent_stop_all(ch_hub_t *h) {
  ch_agent_http_shutdown();
  while (!ch_list_empty(&ch__running)) {
    ch__stream_t *s = (ch__stream_t *)CH_LIST_DATA(ch__running.next, ch_agent_stream_t, node);
    ch__abort(s, "server shutting down");
  }
  for (size_t i = 0; i < ch__nagents; i++) {
    while (!ch_list_empty(&ch__agents[i]->queue)) {
      ch__stream_t *s = (ch__stream_t *)CH_LIST_DATA(ch__agents[i]->queue.next, ch_agent_stream_t, node);
      ch__abort(s, "server shutting down");
    }
  }
}
