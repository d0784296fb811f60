/*
 * http.c — libcurl's multi interface on a libuv loop (see http.h).
 *
 *   ch__hctx_t (one per loop with transfers)
 *     multi ── CURLMOPT_SOCKETFUNCTION ──> ch__hpoll_t (uv_poll_t per socket, curl_multi_assign'd)
 *           └─ CURLMOPT_TIMERFUNCTION  ──> timer (one-shot uv_timer_t)
 *     poll/timer callback: curl_multi_socket_action, then ch__hctx_check
 *       reads CURLMSG_DONE messages and finishes those transfers (on_done).
 *
 * Lifetime rules. A context lives while it has transfers (n > 0) or while a
 * callback of its own is on the stack (depth > 0), and then CH__HTTP_IDLE_MS
 * longer (an unreferenced timer), so that the next prompt reuses curl's cached
 * connection instead of paying a new connect (and TLS handshake) to the same
 * upstream. When the idle timer fires, or at once after
 * ch_agent_http_shutdown, it is torn down: curl_multi_cleanup (closes the
 * cached connections; their poll handles are closed too), then the timers are
 * closed and the context freed in the last of their close callbacks. Poll handles are freed in their own
 * close callbacks and never touch the context there. A back end may start a
 * new transfer from on_done (the core starts queued streams when one ends):
 * the context is still alive then because depth > 0.
 *
 * The write callback sorts the response on its first bytes: 2xx
 * text/event-stream goes through the SSE parser to on_event; another 2xx
 * body is collected (max_body) for on_done; a non-2xx body is collected (16
 * KiB) to name the upstream's error. Aborting from inside curl (on_event
 * asked to stop, a malformed stream) returns 0 from the write callback; the
 * reason is kept in the transfer and reported when curl reports it done.
 */
#include "agent/http.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agent/sse_parse.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/err.h"
#include "core/list.h"
#include "core/log.h"

#ifndef CH_VERSION
#define CH_VERSION "dev"
#endif
#define CH__HTTP_ERR_BODY_MAX 16384
#define CH__HTTP_CONNECT_TIMEOUT_MS 30000L
#define CH__HTTP_IDLE_MS 30000 /* an idle context (and curl's connection cache) lives this long */
#define CH__HTTP_DRAIN_MS 2000 /* a complete reply's response may take this long to end */

typedef struct ch__hctx_s ch__hctx_t;

typedef enum { CH__HM_UNKNOWN = 0, CH__HM_SSE, CH__HM_BODY, CH__HM_ERROR } ch__hmode_t;

struct ch_agent_http_s {
  ch_list_t node;                  /* in ctx->transfers */
  ch__hctx_t *ctx;                 /* not owned */
  CURL *easy;                      /* owned */
  struct curl_slist *headers;      /* owned */
  ch_agent_http_cbs_t cbs;         /* copy */
  void *ud;                        /* the caller's */
  int mode;                        /* ch__hmode_t */
  long status;
  char content_type[128];
  int stopped;                     /* on_event's non-zero return */
  int detached;                    /* reported complete; curl finishes the response (keep-alive) */
  uint64_t detached_ms;            /* when */
  char *error;                     /* owned: our own reason to abort (malformed stream), or NULL */
  ch_agent_sse_t sse;
  ch_buf_t body;                   /* non-stream or error body */
  size_t max_body;                 /* bytes */
  char errbuf[CURL_ERROR_SIZE];
};

typedef struct {
  uv_poll_t p;
  ch__hctx_t *ctx;                 /* not owned; never touched in the close callback */
  curl_socket_t fd;
  ch_list_t node;                  /* in ctx->polls while open */
} ch__hpoll_t;

struct ch__hctx_s {
  uv_loop_t *loop;                 /* not owned */
  CURLM *multi;                    /* owned */
  uv_timer_t timer;                /* curl's timeout */
  uv_timer_t idle;                 /* no transfers for CH__HTTP_IDLE_MS: tear down (unreferenced) */
  uv_timer_t drain;                /* ends detached transfers that outstay CH__HTTP_DRAIN_MS */
  ch_list_t transfers;             /* ch_agent_http_t in progress */
  size_t n;                        /* their count */
  ch_list_t polls;                 /* ch__hpoll_t, open */
  int depth;                       /* our callbacks on the stack: no teardown while > 0 */
  int closing;                     /* timers still closing; the last one frees the context */
  ch__hctx_t *next;                /* in ch__hctxs */
};

static ch__hctx_t *ch__hctxs; /* live contexts, one per loop (each used on its loop's thread only) */
static size_t ch__hactive;    /* transfers in progress (hub thread) */
static int ch__hglobal;       /* curl_global_init references (main thread) */
static int ch__hclosing;      /* ch_agent_http_shutdown was called: idle contexts go at once */

int ch_agent_http_global_ref(void) {
  if (ch__hglobal++ == 0 && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    ch__hglobal = 0;
    return CH_EIO;
  }
  return 0;
}

void ch_agent_http_global_unref(void) {
  if (ch__hglobal > 0 && --ch__hglobal == 0) curl_global_cleanup();
}

size_t ch_agent_http_active(void) { return ch__hactive; }

/* ---- the error text of a refused request ----------------------------------------- */

static const char *ch__jstr(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : NULL;
}

/* Append s (at most max bytes, cut on a character boundary) as clean
 * one-line UTF-8. */
static void ch__append_clean(ch_buf_t *out, const char *s, size_t n, size_t max) {
  if (n > max) {
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
  }
  size_t at = out->len;
  ch_agent_utf8_clean(out, s, n, 1);
  for (size_t i = at; i < out->len; i++)
    if ((unsigned char)out->base[i] < 0x20) out->base[i] = ' ';
}

/* "upstream HTTP 401 (authentication_error): invalid x-api-key": the shapes
 * of OpenAI, Anthropic and most compatible servers ({"error":{"message",
 * "type"|"code"}}, {"error":"..."}, {"message"}, {"detail"}), else the start
 * of the body. */
static void ch__http_error_text(ch_buf_t *out, long status, const char *body, size_t len) {
  ch_buf_printf(out, "upstream HTTP %ld", status);
  cJSON *j = len ? cJSON_ParseWithLength(body, len) : NULL;
  const char *msg = NULL, *type = NULL;
  if (cJSON_IsObject(j)) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    if (cJSON_IsObject(e)) {
      msg = ch__jstr(e, "message");
      type = ch__jstr(e, "type");
      if (type == NULL) type = ch__jstr(e, "code");
    } else if (cJSON_IsString(e) && e->valuestring[0]) {
      msg = e->valuestring;
    }
    if (msg == NULL) msg = ch__jstr(j, "message");
    if (msg == NULL) msg = ch__jstr(j, "detail");
  }
  if (type) {
    ch_buf_append_str(out, " (");
    ch__append_clean(out, type, strlen(type), 64);
    ch_buf_append_byte(out, ')');
  }
  if (msg) {
    ch_buf_append_str(out, ": ");
    ch__append_clean(out, msg, strlen(msg), 500);
  } else if (len) {
    ch_buf_append_str(out, ": ");
    ch__append_clean(out, body, len, 200);
  }
  cJSON_Delete(j);
}

/* ---- transfers ------------------------------------------------------------------ */

static void ch__http_free(ch_agent_http_t *t) {
  curl_easy_cleanup(t->easy);
  curl_slist_free_all(t->headers);
  ch_agent_sse_dispose(&t->sse);
  ch_buf_dispose(&t->body);
  free(t->error);
  free(t);
}

static void ch__http_classify(ch_agent_http_t *t) {
  char *ct = NULL;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
  curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &ct);
  snprintf(t->content_type, sizeof(t->content_type), "%s", ct ? ct : "");
  if (t->status < 200 || t->status > 299) t->mode = CH__HM_ERROR;
  else if (strncasecmp(t->content_type, "text/event-stream", 17) == 0) t->mode = CH__HM_SSE;
  else t->mode = CH__HM_BODY;
}

static int ch__http_sse_event(void *ud, const char *type, size_t tl, const char *data, size_t dl) {
  ch_agent_http_t *t = ud;
  int r = t->cbs.on_event(t->ud, type, tl, data, dl);
  if (r != 0) t->stopped = r;
  return r;
}

/* Keep our own reason to abort the transfer (reported when curl ends it). */
static void ch__http_set_error(ch_agent_http_t *t, const char *what, size_t n) {
  ch_buf_t b = CH_BUF_INIT;
  ch_buf_printf(&b, "%s larger than %zu bytes", what, n);
  free(t->error);
  t->error = ch_xstrndup(b.base, b.len);
  ch_buf_dispose(&b);
}

static size_t ch__http_write(char *ptr, size_t size, size_t nmemb, void *ud) {
  ch_agent_http_t *t = ud;
  size_t n = size * nmemb;
  if (t->stopped == 1 && !t->error) return n; /* the reply is complete: let the response end (keep-alive) */
  if (t->stopped || t->error) return 0;
  if (t->mode == CH__HM_UNKNOWN) ch__http_classify(t);
  switch (t->mode) {
  case CH__HM_SSE: {
    int r = ch_agent_sse_feed(&t->sse, ptr, n);
    if (r == 0 || t->stopped == 1) return n;
    if (r == CH_ETOOBIG)
      ch__http_set_error(t, "malformed upstream event stream: a line or event", t->sse.max);
    return 0;
  }
  case CH__HM_BODY:
    if (t->body.len + n > t->max_body) {
      ch__http_set_error(t, "upstream reply", t->max_body);
      return 0;
    }
    ch_buf_append(&t->body, ptr, n);
    return n;
  default: /* an error document: enough of it to name the error, then stop */
    if (t->body.len + n > CH__HTTP_ERR_BODY_MAX) {
      ch_buf_append(&t->body, ptr, CH__HTTP_ERR_BODY_MAX - t->body.len);
      return 0;
    }
    ch_buf_append(&t->body, ptr, n);
    return n;
  }
}

/* curl reported t done (rc): report it and free it. */
static void ch__http_finish(ch_agent_http_t *t, CURLcode rc) {
  ch__hctx_t *c = t->ctx;
  curl_multi_remove_handle(c->multi, t->easy);
  ch_list_remove(&t->node);
  c->n--;
  if (t->detached) { /* already reported; an incomplete response closes its connection */
    ch__http_free(t);
    return;
  }
  ch__hactive--;
  if (t->mode == CH__HM_UNKNOWN) ch__http_classify(t); /* no body at all */
  ch_buf_t err = CH_BUF_INIT;
  ch_agent_http_result_t res = {.status = t->status, .content_type = t->content_type};
  if (t->stopped) {
    res.stopped = t->stopped;
  } else if (t->error) {
    res.error = t->error;
  } else if (t->status == 0) {
    ch_buf_printf(&err, "upstream connection failed: %s", t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc));
    res.error = ch_buf_cstr(&err);
  } else if (t->mode == CH__HM_ERROR) {
    ch__http_error_text(&err, t->status, t->body.base, t->body.len);
    res.error = ch_buf_cstr(&err);
  } else if (rc != CURLE_OK) {
    ch_buf_printf(&err, "upstream connection lost: %s", t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc));
    res.error = ch_buf_cstr(&err);
  } else if (t->mode == CH__HM_SSE) {
    int r = ch_agent_sse_finish(&t->sse);
    if (r == CH_ETOOBIG) {
      ch_buf_printf(&err, "malformed upstream event stream: a line or event larger than %zu bytes", t->sse.max);
      res.error = ch_buf_cstr(&err);
    } else if (r != 0) {
      res.stopped = r;
    }
  } else {
    res.body = t->body.base ? t->body.base : "";
    res.body_len = t->body.len;
  }
  t->cbs.on_done(t->ud, &res);
  ch_buf_dispose(&err);
  ch__http_free(t);
}

/* ---- the context: curl's sockets and timer on the loop ------------------------------ */

static void ch__hpoll_free(uv_handle_t *h) { free(h->data); }

static void ch__hpoll_close(ch__hpoll_t *hp) {
  ch_list_remove(&hp->node);
  uv_poll_stop(&hp->p);
  uv_close((uv_handle_t *)&hp->p, ch__hpoll_free);
}

/* The context's three timers close in an order libuv does not promise: the
 * last close callback frees it. */
static void ch__hctx_closed(uv_handle_t *h) {
  ch__hctx_t *c = h->data;
  if (--c->closing == 0) free(c);
}

static void ch__hctx_destroy(ch__hctx_t *c);
static void ch__hctx_drain_cb(uv_timer_t *tm);
static void ch__hctx_end_detached(ch__hctx_t *c, int force);

static void ch__hctx_idle_cb(uv_timer_t *t) { ch__hctx_destroy(t->data); }

static void ch__hctx_maybe_destroy(ch__hctx_t *c) {
  if (c->depth > 0 || c->n > 0) return;
  if (!ch__hclosing) {
    uv_timer_start(&c->idle, ch__hctx_idle_cb, CH__HTTP_IDLE_MS, 0);
    return;
  }
  ch__hctx_destroy(c);
}

static void ch__hctx_destroy(ch__hctx_t *c) {
  for (ch__hctx_t **pp = &ch__hctxs; *pp; pp = &(*pp)->next)
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  c->depth++; /* curl calls our socket and timer functions while it cleans up: never recurse here */
  curl_multi_cleanup(c->multi);
  c->multi = NULL;
  while (!ch_list_empty(&c->polls)) ch__hpoll_close(CH_LIST_DATA(c->polls.next, ch__hpoll_t, node));
  uv_timer_stop(&c->timer);
  c->closing = 3;
  uv_close((uv_handle_t *)&c->drain, ch__hctx_closed);
  uv_close((uv_handle_t *)&c->idle, ch__hctx_closed);
  uv_close((uv_handle_t *)&c->timer, ch__hctx_closed);
}

void ch_agent_http_shutdown(void) {
  ch__hclosing = 1;
  ch__hctx_t *c = ch__hctxs, *next;
  for (; c; c = next) {
    next = c->next;
    if (c->depth > 0) continue;
    c->depth++;
    ch__hctx_end_detached(c, 1);
    c->depth--;
    if (c->n == 0) ch__hctx_destroy(c);
  }
}

/* End the detached transfers that outstayed CH__HTTP_DRAIN_MS (all of them: force). */
static void ch__hctx_end_detached(ch__hctx_t *c, int force) {
  uint64_t now = uv_now(c->loop), next = 0;
  for (ch_list_t *it = c->transfers.next; it != &c->transfers;) {
    ch_agent_http_t *t = CH_LIST_DATA(it, ch_agent_http_t, node);
    it = it->next;
    if (!t->detached) continue;
    if (force || now - t->detached_ms >= CH__HTTP_DRAIN_MS) ch__http_finish(t, CURLE_OK);
    else if (next == 0 || t->detached_ms + CH__HTTP_DRAIN_MS - now < next) next = t->detached_ms + CH__HTTP_DRAIN_MS - now;
  }
  if (next) uv_timer_start(&c->drain, ch__hctx_drain_cb, next, 0);
}

static void ch__hctx_drain_cb(uv_timer_t *tm) {
  ch__hctx_t *c = tm->data;
  c->depth++;
  ch__hctx_end_detached(c, 0);
  c->depth--;
  ch__hctx_maybe_destroy(c);
}

static void ch__hctx_check(ch__hctx_t *c) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
    if (m->msg != CURLMSG_DONE) continue;
    CURL *easy = m->easy_handle;
    CURLcode rc = m->data.result; /* m is invalid once the handle is removed */
    char *priv = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
    ch__http_finish((ch_agent_http_t *)(void *)priv, rc);
  }
  /* A reply that said it was complete ([DONE], message_stop) and whose HTTP
   * response has not ended yet is reported now, then left to curl, detached,
   * for up to CH__HTTP_DRAIN_MS: a response that ends in that time leaves
   * its connection in curl's cache for the next prompt. */
  for (ch_list_t *it = c->transfers.next; it != &c->transfers;) {
    ch_agent_http_t *t = CH_LIST_DATA(it, ch_agent_http_t, node);
    if (t->stopped != 1 || t->detached) {
      it = it->next;
      continue;
    }
    t->detached = 1;
    t->detached_ms = uv_now(c->loop);
    ch__hactive--;
    if (!uv_is_active((uv_handle_t *)&c->drain)) uv_timer_start(&c->drain, ch__hctx_drain_cb, CH__HTTP_DRAIN_MS, 0);
    ch_agent_http_result_t res = {.status = t->status, .content_type = t->content_type, .stopped = 1};
    t->cbs.on_done(t->ud, &res); /* may start transfers: scan again */
    it = c->transfers.next;
  }
}

static void ch__hctx_act(ch__hctx_t *c, curl_socket_t fd, int flags) {
  int running = 0;
  c->depth++;
  curl_multi_socket_action(c->multi, fd, flags, &running);
  ch__hctx_check(c);
  c->depth--;
  ch__hctx_maybe_destroy(c);
}

static void ch__hpoll_cb(uv_poll_t *p, int status, int events) {
  ch__hpoll_t *hp = p->data;
  int flags = 0;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  ch__hctx_act(hp->ctx, hp->fd, flags);
}

static void ch__hctx_timer_cb(uv_timer_t *tm) { ch__hctx_act(tm->data, CURL_SOCKET_TIMEOUT, 0); }

static int ch__hctx_timer_fn(CURLM *m, long timeout_ms, void *userp) {
  ch__hctx_t *c = userp;
  (void)m;
  if (timeout_ms < 0) uv_timer_stop(&c->timer);
  else uv_timer_start(&c->timer, ch__hctx_timer_cb, (uint64_t)timeout_ms, 0);
  return 0;
}

static int ch__hctx_socket_fn(CURL *e, curl_socket_t s, int what, void *userp, void *socketp) {
  ch__hctx_t *c = userp;
  ch__hpoll_t *hp = socketp;
  (void)e;
  if (what == CURL_POLL_REMOVE) {
    if (hp) ch__hpoll_close(hp); /* curl forgets socketp itself */
    return 0;
  }
  if (hp == NULL) {
    hp = ch_xcalloc(1, sizeof(*hp));
    hp->ctx = c;
    hp->fd = s;
    int r = uv_poll_init_socket(c->loop, &hp->p, s);
    if (r != 0) {
      ch_log_warn("agent http: cannot watch socket %d: %s", (int)s, uv_strerror(r));
      free(hp);
      return -1;
    }
    hp->p.data = hp;
    ch_list_insert_tail(&c->polls, &hp->node);
    curl_multi_assign(c->multi, s, hp);
  }
  int ev = 0;
  if (what & CURL_POLL_IN) ev |= UV_READABLE;
  if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
  uv_poll_start(&hp->p, ev, ch__hpoll_cb);
  return 0;
}

static ch__hctx_t *ch__hctx_get(uv_loop_t *loop) {
  for (ch__hctx_t *c = ch__hctxs; c; c = c->next)
    if (c->loop == loop) {
      uv_timer_stop(&c->idle);
      return c;
    }
  CURLM *multi = curl_multi_init();
  if (multi == NULL) return NULL;
  ch__hctx_t *c = ch_xcalloc(1, sizeof(*c));
  c->loop = loop;
  c->multi = multi;
  ch_list_init(&c->transfers);
  ch_list_init(&c->polls);
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  uv_timer_init(loop, &c->idle);
  uv_unref((uv_handle_t *)&c->idle);
  c->idle.data = c;
  uv_timer_init(loop, &c->drain);
  c->drain.data = c;
  curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, ch__hctx_socket_fn);
  curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, ch__hctx_timer_fn);
  curl_multi_setopt(multi, CURLMOPT_TIMERDATA, c);
  c->next = ch__hctxs;
  ch__hctxs = c;
  return c;
}

int ch_agent_http_start(uv_loop_t *loop, const ch_agent_http_req_t *req, const ch_agent_http_cbs_t *cbs, void *ud,
                        ch_agent_http_t **out) {
  *out = NULL;
  if (req->url == NULL || cbs->on_event == NULL || cbs->on_done == NULL) return CH_EINVAL;
  ch__hctx_t *c = ch__hctx_get(loop);
  if (c == NULL) return CH_EIO;
  ch_agent_http_t *t = ch_xcalloc(1, sizeof(*t));
  int rc = CH_EIO;
  t->ctx = c;
  t->cbs = *cbs;
  t->ud = ud;
  t->max_body = req->max_body ? req->max_body : (4u << 20);
  ch_agent_sse_init(&t->sse, req->max_event ? req->max_event : (1u << 20), ch__http_sse_event, t);
  ch_buf_init(&t->body);
  t->easy = curl_easy_init();
  if (t->easy == NULL) goto Fail;
  for (size_t i = 0; i < req->nheaders; i++) {
    struct curl_slist *h = curl_slist_append(t->headers, req->headers[i]);
    if (h == NULL) goto Fail;
    t->headers = h;
  }
  struct curl_slist *h = curl_slist_append(t->headers, "Expect:"); /* no 100-continue round trip */
  if (h == NULL) goto Fail;
  t->headers = h;
  CURL *e = t->easy;
  if (curl_easy_setopt(e, CURLOPT_URL, req->url) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK) {
    rc = CH_EINVAL;
    goto Fail;
  }
  curl_easy_setopt(e, CURLOPT_POST, 1L);
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
  curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req->body ? req->body : "");
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, ch__http_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
  curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)(void *)t);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, CH__HTTP_CONNECT_TIMEOUT_MS);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_USERAGENT, "chorus/" CH_VERSION);
  if (curl_multi_add_handle(c->multi, e) != CURLM_OK) goto Fail;
  ch_list_insert_tail(&c->transfers, &t->node);
  c->n++;
  ch__hactive++;
  *out = t;
  return 0;
Fail:
  ch__http_free(t);
  ch__hctx_maybe_destroy(c);
  return rc;
}

void ch_agent_http_cancel(ch_agent_http_t *t) {
  ch__hctx_t *c = t->ctx;
  c->depth++;
  curl_multi_remove_handle(c->multi, t->easy);
  ch_list_remove(&t->node);
  c->n--;
  ch__hactive--;
  ch__http_free(t);
  c->depth--;
  ch__hctx_maybe_destroy(c);
}
