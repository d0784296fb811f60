/*
 * echo.c — the built-in `echo` agent, for demos and tests: it answers with
 * the last user message of the request, in chunks of `chunk` characters
 * (default 100) every `interval` ms (default 50). Options: chunk=N,
 * interval=MS. Chunks never split a UTF-8 sequence.
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "core/alloc.h"
#include "core/err.h"

typedef struct {
  size_t chunk;
  uint64_t interval;
} ch__echo_cfg_t;

typedef struct {
  uv_timer_t t;
  ch_agent_stream_t *st; /* NULL after cancel */
  char *text;            /* owned */
  size_t len, off;
} ch__echo_run_t;

static int ch__echo_init(ch_agent_t *a, ch_buf_t *err) {
  ch__echo_cfg_t *c = ch_xcalloc(1, sizeof(*c));
  c->chunk = 100;
  c->interval = 50;
  const char *v;
  if ((v = ch_agent_opt(a, "chunk")) != NULL) c->chunk = (size_t)strtoul(v, NULL, 10);
  if ((v = ch_agent_opt(a, "interval")) != NULL) c->interval = strtoull(v, NULL, 10);
  if (c->chunk < 1 || c->chunk > 65536 || c->interval > 60000) {
    ch_buf_printf(err, "agent '%s': echo needs chunk in 1..65536 and interval in 0..60000 ms\n", a->name);
    free(c);
    return CH_ECONFIG;
  }
  a->be_state = c;
  return 0;
}

static void ch__echo_dispose(ch_agent_t *a) {
  free(a->be_state);
  a->be_state = NULL;
}

static void ch__echo_free(uv_handle_t *h) {
  ch__echo_run_t *r = h->data;
  free(r->text);
  free(r);
}

static void ch__echo_tick(uv_timer_t *t) {
  ch__echo_run_t *r = t->data;
  ch_agent_stream_t *st = r->st;
  const ch__echo_cfg_t *c = st->agent->be_state;
  size_t n = r->len - r->off < c->chunk ? r->len - r->off : c->chunk;
  while (n > 0 && r->off + n < r->len && ((unsigned char)r->text[r->off + n] & 0xC0) == 0x80) n--;
  if (n == 0 && r->off < r->len) n = r->len - r->off; /* a lone long sequence: send it whole */
  ch_agent_stream_delta(st, r->text + r->off, n);
  r->off += n;
  if (r->off >= r->len) {
    st->be_data = NULL;
    r->st = NULL;
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, ch__echo_free);
    ch_agent_stream_end(st, NULL);
  }
}

static int ch__echo_start(ch_agent_stream_t *st, uv_loop_t *loop) {
  const ch__echo_cfg_t *c = st->agent->be_state;
  cJSON *req = cJSON_Parse(st->request_json);
  cJSON *msgs = cJSON_GetObjectItemCaseSensitive(req, "messages");
  const char *text = "";
  int n = cJSON_GetArraySize(msgs);
  for (int i = n - 1; i >= 0; i--) {
    cJSON *m = cJSON_GetArrayItem(msgs, i);
    cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
    cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (cJSON_IsString(role) && strcmp(role->valuestring, "user") == 0 && cJSON_IsString(content)) {
      text = content->valuestring;
      break;
    }
  }
  ch__echo_run_t *r = ch_xcalloc(1, sizeof(*r));
  r->st = st;
  r->text = ch_xstrdup(text);
  r->len = strlen(r->text);
  cJSON_Delete(req);
  st->be_data = r;
  uv_timer_init(loop, &r->t);
  r->t.data = r;
  uv_timer_start(&r->t, ch__echo_tick, c->interval, c->interval ? c->interval : 1);
  return 0;
}

static void ch__echo_cancel(ch_agent_stream_t *st) {
  ch__echo_run_t *r = st->be_data;
  if (r == NULL) return;
  st->be_data = NULL;
  r->st = NULL;
  uv_timer_stop(&r->t);
  uv_close((uv_handle_t *)&r->t, ch__echo_free);
}

const ch_agent_backend_t ch_agent_backend_echo = {
    .kind = "echo",
    .init = ch__echo_init,
    .dispose = ch__echo_dispose,
    .start = ch__echo_start,
    .cancel = ch__echo_cancel,
};
