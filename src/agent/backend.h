/*
 * backend.h — helpers shared by the exec, openai and anthropic back ends
 * (private to src/agent/): option checks at init, the one way a back end
 * hands text to the core, and the whole request cycle of an HTTP back end.
 *
 *   upstream text ──> ch_agent_be_emit ──> clean UTF-8 (U+FFFD for invalid
 *                       │                  bytes; an incomplete tail kept for
 *                       │                  the next call unless final)
 *                       ├─ reply cap (`max-reply`) ──> CH_ETOOBIG
 *                       ▼
 *                     ch_agent_stream_delta(st, ...)
 *
 * Every chunk reaching subscribers is valid UTF-8, so it encodes into JSON
 * text frames that clients accept, whatever bytes the upstream produced.
 *
 * HTTP back ends (openai, anthropic) differ only in their request body, a
 * few header lines and how they read the events; the rest is here:
 *
 *   start ─ ops->body(st) + Content-Type/Accept + the config's header lines
 *     └─> ch_agent_http_start ─ SSE event ──> ops->on_event(run, ...)   0 more, 1 complete, < 0 failed
 *                             └ the end ────> verdict ──> ch_agent_stream_end(st, NULL | why)
 *   cancel ─ abort the transfer, free the run
 *
 * The verdict: on_event said complete -> success; on_event failed -> the
 * run's error; a transport or HTTP error -> its text; a 2xx answer that was
 * not an event stream -> ops->whole decides (its error, else "upstream
 * answered without an event stream"); a stream that ended without its end
 * event -> success when the run is `finished`, else ops->cut_short.
 * Token counts go straight to st->tokens_in / tokens_out (the core accounts
 * them when the stream ends, cancel included).
 */
#ifndef CH_AGENT_BACKEND_H
#define CH_AGENT_BACKEND_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/agent.h"
#include "agent/http.h"
#include "core/buf.h"

#define CH_AGENT_BE_MAX_REPLY_DEFAULT ((size_t)4 << 20) /* bytes */

/* Options every agent takes (parsed by the core). */
extern const char *const ch_agent_be_core_opts[];

/* CH_ECONFIG (with a line in err) when a has an option that is neither a
 * core option nor one of `allowed` (NULL-terminated); else 0. */
int ch_agent_be_opts_check(const ch_agent_t *a, const char *const *allowed, ch_buf_t *err);
/* Option `key` as a decimal in [min, max] into *val (left alone when the
 * option is absent). 0 or CH_ECONFIG with a line in err. */
int ch_agent_be_opt_u64(const ch_agent_t *a, const char *key, uint64_t min, uint64_t max, uint64_t *val,
                        ch_buf_t *err);

typedef struct {
  ch_buf_t scratch;  /* owned: the cleaned text of one emit */
  size_t produced;   /* bytes of reply emitted so far */
  size_t max;        /* cap of the reply, bytes */
} ch_agent_be_out_t;

void ch_agent_be_out_init(ch_agent_be_out_t *o, size_t max);
void ch_agent_be_out_dispose(ch_agent_be_out_t *o);
/* Emit text[0..len) to st as a delta (cleaned). Unless final, an incomplete
 * UTF-8 sequence at the end is not consumed: *consumed (may be NULL when
 * final) says how much was. Returns 0, or CH_ETOOBIG when the reply would
 * exceed o->max (nothing emitted then). */
int ch_agent_be_emit(ch_agent_stream_t *st, ch_agent_be_out_t *o, const char *text, size_t len, int final,
                     size_t *consumed);

/* A token count an upstream reported: v when it is a number in 0..2^53
 * (anything else is left out: a peer's 1e300 must not reach a cast), into
 * *out. 1 when set, else 0. */
int ch_agent_be_count(const cJSON *v, uint64_t *out);

/* ---- HTTP back ends ------------------------------------------------------------- */

typedef struct ch_agent_be_run_s ch_agent_be_run_t;

typedef struct {
  /* The request body for st: text from cJSON_Print* (cJSON_free'd by the
   * caller), or NULL (the stream then fails to start with CH_EIO). */
  char *(*body)(const ch_agent_stream_t *st);
  /* One event of the response's stream (ch_agent_http_cbs_t::on_event):
   * 0 go on, 1 the reply is complete, < 0 failed (after ch_agent_be_fail). */
  int (*on_event)(ch_agent_be_run_t *r, const char *type, size_t type_len, const char *data, size_t data_len);
  /* A 2xx answer that was not an event stream: 0 when it held a whole
   * reply (emitted), else -1 (with or without ch_agent_be_fail). */
  int (*whole)(ch_agent_be_run_t *r, const char *body, size_t len);
  const char *cut_short; /* the error of a stream that ended before its end event */
} ch_agent_be_http_ops_t;

#define CH_AGENT_BE_HTTP_HEADERS 4 /* header lines a config may add */

/* The agent's be_state of an HTTP back end starts with this (super-first). */
typedef struct {
  const ch_agent_be_http_ops_t *ops;              /* static */
  char *url;                                      /* owned: NULL until initialised */
  char *headers[CH_AGENT_BE_HTTP_HEADERS];        /* owned "Name: value" lines; may hold a key: wiped at dispose */
  size_t nheaders;
  size_t max_reply;                               /* bytes */
} ch_agent_be_http_cfg_t;

/* A reply in progress (st->be_data). */
struct ch_agent_be_run_s {
  ch_agent_stream_t *st;             /* not owned */
  const ch_agent_be_http_ops_t *ops; /* static */
  ch_agent_http_t *t;                /* the transfer (http.c's) */
  ch_agent_be_out_t out;             /* text delivery and the reply cap */
  int finished;                      /* the back end saw the reply's end (a stream that closes later is complete) */
  char *error;                       /* owned: why on_event or whole failed, or NULL */
};

/* Set up c (inside the back end's zeroed be_state) for requests to
 * {base}{path} (trailing slashes of base dropped), taking libcurl's global
 * state. 0, or CH_ECONFIG with a line in err (base is not http:// or
 * https://, libcurl could not start); c is then left as it was. */
int ch_agent_be_http_cfg_init(ch_agent_be_http_cfg_t *c, const ch_agent_t *a, const ch_agent_be_http_ops_t *ops,
                              const char *base, const char *path, size_t max_reply, ch_buf_t *err);
/* Add the header line "<name>: <value>" (at most CH_AGENT_BE_HTTP_HEADERS). */
void ch_agent_be_http_cfg_header(ch_agent_be_http_cfg_t *c, const char *name, const char *value);
/* Wipe and free what c owns, and release libcurl (when initialised). */
void ch_agent_be_http_cfg_dispose(ch_agent_be_http_cfg_t *c);

/* The vtable entries of an HTTP back end whose be_state starts with a
 * ch_agent_be_http_cfg_t and owns nothing else. */
int ch_agent_be_http_start(ch_agent_stream_t *st, uv_loop_t *loop);
void ch_agent_be_http_cancel(ch_agent_stream_t *st);
void ch_agent_be_http_dispose(ch_agent_t *a);

/* For ops: fail r with a reason (printf format; replaces an earlier one).
 * Returns -1. */
int ch_agent_be_fail(ch_agent_be_run_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* For ops: fail r with "upstream error (type): message" from an error value
 * (an object {"type","message"}, or a string). Returns -1. */
int ch_agent_be_fail_upstream(ch_agent_be_run_t *r, const cJSON *e);
/* For ops: emit text[0..len) as reply (final). 0, or -1 with the error
 * "reply longer than N bytes" at the cap. */
int ch_agent_be_text(ch_agent_be_run_t *r, const char *text, size_t len);

#endif
