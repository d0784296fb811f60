/*
 * agents.c — the agent-facing surface as a whole: settings from the
 * configuration, usage accounting, rate limits, GET /api/admin/usage, the
 * agents' lines in /metrics, and the registration of the agent profiles'
 * routes (agent-ws in agentws.c, command in command.c).
 *
 * Usage table (process-wide, one mutex): "u:<user>" and "k:<API key id>" ->
 * requests (replies triggered), characters (bytes of reply text streamed),
 * tokens in/out (as the upstream reported them), and refusals by the rate
 * limit. The agent core reports a reply's usage through its usage hook (hub
 * thread; agent.h), for the prompt's author and API key, whatever entry
 * point sent the prompt — native /ws, REST, POST /api/chat, relay, agent-ws,
 * command — and whether or not anyone still watches the reply; the rate
 * limiter (loops) counts refusals. Entries live as long as the process (one
 * per user or key that ever prompted an agent); /api/admin/usage and
 * /metrics show them all.
 *
 * Rate limit: a token bucket per API key (credentials that are not API keys:
 * per user), `rate-burst` deep, refilled at `rate-limit` per minute,
 * continuously. Each accepted prompt takes one token; an empty bucket refuses
 * with the time until the next token. The table forgets full buckets when it
 * grows past CH__RATE_KEYS_SOFT (a full bucket is the same as no entry).
 *
 * Per-agent totals (requests, characters, tokens) are the agent core's counters
 * (ch_agent_t, hub thread): /metrics and /api/admin/usage read them inside a
 * hub request.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "agent/agent.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/err.h"
#include "core/log.h"
#include "core/map.h"
#include "hub/hub.h"
#include "proto/agentrun.h"
#include "proto/proto.h"

#define CH__RATE_KEYS_SOFT 65536 /* buckets kept before full ones are forgotten */

typedef struct {
  char id[130];        /* user id or API key id */
  char user[130];      /* the key's user (keys only) */
  int is_key;
  uint64_t requests, chars, tokens_in, tokens_out, limited;
} ch__usage_t;

typedef struct {
  double tokens;       /* requests available now (up to the burst) */
  uint64_t last_ms;    /* monotonic time of the last refill */
} ch__bucket_t;

static uv_mutex_t ch__mu;              /* guards everything below */
static uv_once_t ch__once = UV_ONCE_INIT;
static ch_map_t ch__usage;             /* "u:<user>" / "k:<key>" -> ch__usage_t (owned) */
static ch_map_t ch__buckets;           /* limiter key -> ch__bucket_t (owned) */
static uint64_t ch__limited_total;     /* refusals by the rate limit */

static void ch__init(void) {
  uv_mutex_init(&ch__mu);
  ch_map_init(&ch__usage);
  ch_map_init(&ch__buckets);
}

/* Caller holds ch__mu. */
static ch__usage_t *ch__usage_get(const char *prefix, const char *id, const char *user) {
  char key[140];
  int n = snprintf(key, sizeof(key), "%s%s", prefix, id);
  ch__usage_t *u = ch_map_get(&ch__usage, key, (size_t)n);
  if (u == NULL) {
    u = ch_xcalloc(1, sizeof(*u));
    snprintf(u->id, sizeof(u->id), "%s", id);
    snprintf(u->user, sizeof(u->user), "%s", user ? user : "");
    u->is_key = prefix[0] == 'k';
    ch_map_put(&ch__usage, key, (size_t)n, u);
  }
  return u;
}

static int ch__is_key(const ch_identity_t *who) { return who->kind == CH_AUTH_KIND_APIKEY && who->key_id[0]; }

/* The agent core's usage hook (hub thread): a reply's usage, for the
 * prompt's author and the API key it came with. */
static void ch__usage_hook(const ch_agent_usage_t *g) {
  uv_once(&ch__once, ch__init);
  uv_mutex_lock(&ch__mu);
  ch__usage_t *u = ch__usage_get("u:", g->user_id, NULL);
  ch__usage_t *k = g->key_id ? ch__usage_get("k:", g->key_id, g->user_id) : NULL;
  for (int i = 0; i < 2; i++) {
    ch__usage_t *e = i ? k : u;
    if (e == NULL) continue;
    e->requests += g->requests;
    e->chars += g->chars;
    e->tokens_in += g->tokens_in;
    e->tokens_out += g->tokens_out;
  }
  uv_mutex_unlock(&ch__mu);
}

static void ch__buckets_trim(uint64_t now, double burst, double per_ms) {
  const char *k;
  size_t kl;
  void *v;
  for (size_t it = 0; ch_map_next(&ch__buckets, &it, &k, &kl, &v);) {
    ch__bucket_t *b = v;
    if (b->tokens + (double)(now - b->last_ms) * per_ms >= burst) {
      char key[160];
      snprintf(key, sizeof(key), "%.*s", (int)kl, k);
      free(ch_map_del(&ch__buckets, key, kl));
    }
  }
}

int ch__proto_rate_take(const ch_identity_t *who, int64_t *retry_ms) {
  const ch__proto_agent_settings_t *cfg = &ch__proto_agent_settings;
  if (retry_ms) *retry_ms = 0;
  if (cfg->rate_limit <= 0) return 0;
  uv_once(&ch__once, ch__init);
  char key[160];
  int n = ch__is_key(who) ? snprintf(key, sizeof(key), "k:%s", who->key_id)
                          : snprintf(key, sizeof(key), "u:%s", who->user_id);
  double burst = cfg->rate_burst > 0 ? cfg->rate_burst : 1;
  double per_ms = cfg->rate_limit / 60000.0;
  uint64_t now = ch_clock_mono_ms();
  int rc = 0;
  uv_mutex_lock(&ch__mu);
  ch__bucket_t *b = ch_map_get(&ch__buckets, key, (size_t)n);
  if (b == NULL) {
    if (ch__buckets.count >= CH__RATE_KEYS_SOFT) ch__buckets_trim(now, burst, per_ms);
    b = ch_xmalloc(sizeof(*b));
    b->tokens = burst;
    b->last_ms = now;
    ch_map_put(&ch__buckets, key, (size_t)n, b);
  }
  b->tokens += (double)(now - b->last_ms) * per_ms;
  if (b->tokens > burst) b->tokens = burst;
  b->last_ms = now;
  if (b->tokens >= 1.0) {
    b->tokens -= 1.0;
  } else {
    rc = CH_ELIMIT;
    if (retry_ms) *retry_ms = (int64_t)((1.0 - b->tokens) / per_ms) + 1;
    ch__limited_total++;
    ch__usage_get("u:", who->user_id, NULL)->limited++;
    if (ch__is_key(who)) ch__usage_get("k:", who->key_id, who->user_id)->limited++;
  }
  uv_mutex_unlock(&ch__mu);
  return rc;
}

void ch__proto_rate_message(char *out, size_t n, int64_t retry_ms) {
  long s = (long)((retry_ms + 999) / 1000);
  snprintf(out, n, "rate limit exceeded: try again in %ld s", s < 1 ? 1 : s);
}

/* ---- reports ----------------------------------------------------------------------- */

static uint64_t ch__limited(void) {
  uv_once(&ch__once, ch__init);
  uv_mutex_lock(&ch__mu);
  uint64_t n = ch__limited_total;
  uv_mutex_unlock(&ch__mu);
  return n;
}

/* A label value, escaped as the exposition format wants (ids are
 * [A-Za-z0-9._@:-] and need none, but the format is kept whatever). */
static void ch__label(ch_buf_t *b, const char *v) {
  for (; *v; v++) {
    if (*v == '\\' || *v == '"') ch_buf_append_byte(b, '\\');
    if (*v == '\n') ch_buf_append_str(b, "\\n");
    else ch_buf_append_byte(b, (unsigned char)*v);
  }
}

/* Per user and per API key: chorus_agent_user_*_total{user="alice"} and
 * chorus_agent_key_*_total{key="Ab3dEf9h",user="alice"}. */
static void ch__usage_metrics(ch_buf_t *b) {
  static const struct {
    const char *name, *help;
  } m[] = {
      {"requests", "Agent replies triggered"},
      {"chars", "Bytes of agent reply text streamed"},
      {"input_tokens", "Prompt tokens the upstreams reported"},
      {"output_tokens", "Completion tokens the upstreams reported"},
  };
  uv_once(&ch__once, ch__init);
  uv_mutex_lock(&ch__mu);
  for (int keys = 0; keys < 2; keys++) {
    const char *who = keys ? "key" : "user";
    for (size_t k = 0; k < CH_ARRAY_SIZE(m); k++) {
      ch_buf_printf(b, "# HELP chorus_agent_%s_%s_total %s per %s.\n# TYPE chorus_agent_%s_%s_total counter\n", who,
                    m[k].name, m[k].help, keys ? "API key" : "user", who, m[k].name);
      const char *kk;
      size_t kl;
      void *v;
      for (size_t it = 0; ch_map_next(&ch__usage, &it, &kk, &kl, &v);) {
        const ch__usage_t *u = v;
        if (u->is_key != keys) continue;
        uint64_t n = k == 0 ? u->requests : k == 1 ? u->chars : k == 2 ? u->tokens_in : u->tokens_out;
        ch_buf_printf(b, "chorus_agent_%s_%s_total{", who, m[k].name);
        if (keys) {
          ch_buf_append_str(b, "key=\"");
          ch__label(b, u->id);
          ch_buf_append_str(b, "\",");
        }
        ch_buf_append_str(b, "user=\"");
        ch__label(b, keys ? u->user : u->id);
        ch_buf_printf(b, "\"} %llu\n", (unsigned long long)n);
      }
    }
  }
  uv_mutex_unlock(&ch__mu);
}

void ch_proto_agents_metrics(ch_buf_t *b) {
  size_t n = ch_agents_count();
  static const struct {
    const char *name, *type, *help;
  } m[] = {
      {"chorus_agent_requests_total", "counter", "Upstream requests started per agent"},
      {"chorus_agent_chars_total", "counter", "Bytes of reply text streamed per agent"},
      {"chorus_agent_active", "gauge", "Replies in progress per agent"},
      {"chorus_agent_input_tokens_total", "counter", "Prompt tokens the upstream reported per agent"},
      {"chorus_agent_output_tokens_total", "counter", "Completion tokens the upstream reported per agent"},
      {"chorus_agent_queued", "gauge", "Prompts waiting for a free slot per agent (max-concurrent)"},
  };
  for (size_t k = 0; k < CH_ARRAY_SIZE(m); k++) {
    ch_buf_printf(b, "# HELP %s %s.\n# TYPE %s %s\n", m[k].name, m[k].help, m[k].name, m[k].type);
    for (size_t i = 0; i < n; i++) {
      const ch_agent_t *a = ch_agent_at(i);
      uint64_t v = k == 0   ? a->requests
                   : k == 1 ? a->chars
                   : k == 2 ? a->active
                   : k == 3 ? a->tokens_in
                   : k == 4 ? a->tokens_out
                            : a->queued;
      ch_buf_printf(b, "%s{agent=\"%s\"} %llu\n", m[k].name, a->name, (unsigned long long)v); /* names: [A-Za-z0-9_-] */
    }
  }
  ch_buf_printf(b, "# HELP chorus_agent_rate_limited_total Prompts refused by the rate limit.\n"
                   "# TYPE chorus_agent_rate_limited_total counter\nchorus_agent_rate_limited_total %llu\n",
                (unsigned long long)ch__limited());
  ch_buf_printf(b, "# HELP chorus_agent_watchers Agent replies followed for a client right now (agent-ws, command, "
                   "POST /api/chat).\n# TYPE chorus_agent_watchers gauge\nchorus_agent_watchers %zu\n",
                ch__proto_watch_count());
  ch__usage_metrics(b);
}

/* GET /api/admin/usage: the agents' counters are read on the hub thread. */
typedef struct {
  ch_hub_req_t base;
  ch_http_ctx_t *x;
  ch_buf_t agents; /* the "agents" array */
} ch__usage_req_t;

static void ch__usage_run(ch_hub_t *h, ch_hub_req_t *r) {
  (void)h;
  ch__usage_req_t *q = (ch__usage_req_t *)r;
  ch_buf_append_byte(&q->agents, '[');
  for (size_t i = 0; i < ch_agents_count(); i++) {
    const ch_agent_t *a = ch_agent_at(i);
    ch_buf_append_str(&q->agents, i ? ",{\"agent\":" : "{\"agent\":");
    ch_buf_append_json_qstr(&q->agents, a->name);
    ch_buf_append_str(&q->agents, ",\"kind\":");
    ch_buf_append_json_qstr(&q->agents, a->be->kind);
    ch_buf_printf(&q->agents, ",\"requests\":%llu,\"chars\":%llu,\"inputTokens\":%llu,\"outputTokens\":%llu,\"active\":%u}",
                  (unsigned long long)a->requests, (unsigned long long)a->chars, (unsigned long long)a->tokens_in,
                  (unsigned long long)a->tokens_out, a->active);
  }
  ch_buf_append_byte(&q->agents, ']');
}

static void ch__usage_entries(ch_buf_t *b, int keys) {
  const char *k;
  size_t kl;
  void *v;
  int first = 1;
  ch_buf_append_byte(b, '[');
  for (size_t it = 0; ch_map_next(&ch__usage, &it, &k, &kl, &v);) {
    const ch__usage_t *u = v;
    if (u->is_key != keys) continue;
    ch_buf_append_str(b, first ? "{" : ",{");
    first = 0;
    if (keys) {
      ch_buf_append_str(b, "\"keyId\":");
      ch_buf_append_json_qstr(b, u->id);
      ch_buf_append_str(b, ",\"userId\":");
      ch_buf_append_json_qstr(b, u->user);
    } else {
      ch_buf_append_str(b, "\"userId\":");
      ch_buf_append_json_qstr(b, u->id);
    }
    ch_buf_printf(b, ",\"requests\":%llu,\"chars\":%llu,\"inputTokens\":%llu,\"outputTokens\":%llu,\"rateLimited\":%llu}",
                  (unsigned long long)u->requests, (unsigned long long)u->chars, (unsigned long long)u->tokens_in,
                  (unsigned long long)u->tokens_out, (unsigned long long)u->limited);
  }
  ch_buf_append_byte(b, ']');
}

static void ch__usage_done(ch_hub_req_t *r) {
  ch__usage_req_t *q = (ch__usage_req_t *)r;
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_append_str(&b, "{\"success\":true,\"data\":{\"agents\":");
  ch_buf_append(&b, q->agents.base, q->agents.len);
  uv_once(&ch__once, ch__init);
  uv_mutex_lock(&ch__mu);
  ch_buf_append_str(&b, ",\"users\":");
  ch__usage_entries(&b, 0);
  ch_buf_append_str(&b, ",\"apiKeys\":");
  ch__usage_entries(&b, 1);
  ch_buf_printf(&b, ",\"rateLimited\":%llu", (unsigned long long)ch__limited_total);
  uv_mutex_unlock(&ch__mu);
  ch_buf_printf(&b, ",\"rateLimit\":{\"perMinute\":%d,\"burst\":%d}}}", ch__proto_agent_settings.rate_limit,
                ch__proto_agent_settings.rate_burst);
  ch_http_reply_json(q->x, 200, b.base, b.len); /* just frees x when the client has gone */
  ch_buf_dispose(&b);
}

static void ch__usage_free(ch_hub_req_t *r) {
  ch__usage_req_t *q = (ch__usage_req_t *)r;
  ch_buf_dispose(&q->agents);
  free(q);
}

static void ch__usage_authed(ch_http_ctx_t *x, const ch_identity_t *id) {
  (void)id;
  ch__usage_req_t *q = ch_xcalloc(1, sizeof(*q));
  q->base.run = ch__usage_run;
  q->base.done = ch__usage_done;
  q->base.free_cb = ch__usage_free;
  q->base.loop = x->c->loop;
  q->x = x;
  ch_hub_submit(ch_hub, &q->base);
}

static void ch__usage_route(ch_http_ctx_t *x) { ch_proto_http_authenticate(x, CH_SCOPE_ADMIN, ch__usage_authed); }

static const ch_http_route_t ch__usage_rt = {"GET", "/api/admin/usage", ch__usage_route, 0};

/* ---- registration ------------------------------------------------------------------ */

void ch_proto_routes_agents(ch_http_router_t *r, const ch_config_t *cfg) {
  ch__proto_agent_settings_t *s = &ch__proto_agent_settings;
  ch_agent_set_usage_cb(ch__usage_hook); /* before any prompt: the loops do not run yet */
  s->rate_limit = cfg->rate_limit;
  s->rate_burst = cfg->rate_burst;
  snprintf(s->command_agent, sizeof(s->command_agent), "%s", cfg->command_agent ? cfg->command_agent : "");
  if (s->command_agent[0] && ch_agent_find(s->command_agent) == NULL)
    ch_log_error("command-agent '%s' is not a configured agent: profile command will answer with errors",
                 s->command_agent);
  ch__proto_routes_agentws(r);
  ch__proto_routes_command(r);
  ch_http_router_add(r, ch__usage_rt.method, ch__usage_rt.pattern, (void *)&ch__usage_rt, NULL);
}
