/*
 * http.h — streaming HTTP requests for the agent back ends (openai,
 * anthropic): libcurl's multi interface driven by a libuv loop, with the
 * response's server-sent events parsed on the way (sse_parse.h).
 *
 *   ch_agent_http_start ──> curl easy handle added to the loop's multi
 *        uv_poll per socket (CURLMOPT_SOCKETFUNCTION) ─┐
 *        uv_timer for curl's timeouts (TIMERFUNCTION) ─┴─> curl_multi_socket_action
 *        │ 2xx text/event-stream: each event ──> on_event(ud, type, data)
 *        │ 2xx other type: body kept (cap)    ─┐
 *        │ non-2xx: error body kept (16 KiB)  ─┼─> on_done(ud, result)   (exactly once,
 *        ▼ connection failure / ended          ─┘   never after cancel)
 *
 * No thread per request and no blocking call: everything runs in callbacks of
 * the loop given to start, and all calls must be made on that loop's thread.
 * One multi handle (and its timer) exists per loop while it has transfers; it
 * is torn down — connections closed, handles closed — when the last transfer
 * ends, so an idle loop holds no handle of ours and can exit.
 * on_done and on_event never run inside ch_agent_http_start or
 * ch_agent_http_cancel.
 */
#ifndef CH_AGENT_HTTP_H
#define CH_AGENT_HTTP_H

#include <stddef.h>
#include <uv.h>

typedef struct ch_agent_http_s ch_agent_http_t;

typedef struct {
  long status;              /* HTTP status of the response, 0 when none arrived */
  int stopped;              /* on_event's non-zero return that ended the transfer (1: the reply is
                               complete; < 0: the callee's own error), else 0 */
  const char *error;        /* NULL, or why the transfer failed: "upstream HTTP 401 (invalid_request_error):
                               ...", "upstream connection failed: ...", "malformed upstream event stream: ..." */
  const char *body;         /* 2xx response that was not text/event-stream: its body (else NULL) */
  size_t body_len;
  const char *content_type; /* of the response, or "" */
} ch_agent_http_result_t;

typedef struct {
  /* One server-sent event of a 2xx text/event-stream response (see
   * ch_agent_sse_event_cb). Return 0 to go on, 1 when the reply is complete
   * (the transfer ends as a success at once), or a negative value to fail it
   * (the callee keeps its own error text). */
  int (*on_event)(void *ud, const char *type, size_t type_len, const char *data, size_t data_len);
  /* The end, exactly once unless cancelled. Everything in res is valid only
   * during the call; the transfer is freed when it returns. */
  void (*on_done)(void *ud, const ch_agent_http_result_t *res);
} ch_agent_http_cbs_t;

typedef struct {
  const char *url;                 /* http:// or https:// (other schemes are refused by curl) */
  const char *body;                /* POST body (copied) */
  size_t body_len;
  const char *const *headers;      /* "Name: value" each (copied) */
  size_t nheaders;
  size_t max_event;                /* bytes of one SSE event / line (0: 1 MiB) */
  size_t max_body;                 /* bytes of a non-stream 2xx body kept (0: 4 MiB) */
} ch_agent_http_req_t;

/* Take/release libcurl's global state (curl_global_init/cleanup), counted.
 * Call from the main thread before/after the loops run (back end init and
 * dispose). ref: 0 or CH_EIO. */
int ch_agent_http_global_ref(void);
void ch_agent_http_global_unref(void);

/* Start a POST on loop. cbs and ud must stay valid until on_done or cancel.
 * Returns 0 with *out set (the transfer, owned by this module until on_done
 * returned or cancel), CH_EINVAL (bad request parameters) or CH_EIO (curl
 * refused the handle). */
int ch_agent_http_start(uv_loop_t *loop, const ch_agent_http_req_t *req, const ch_agent_http_cbs_t *cbs, void *ud,
                        ch_agent_http_t **out);
/* Abort t and free it; no callback follows. Not valid after on_done began. */
void ch_agent_http_cancel(ch_agent_http_t *t);
/* Transfers in progress on all loops (for tests and stats). */
size_t ch_agent_http_active(void);
/* The server stops: tear down idle loop contexts (and curl's cached
 * connections) now, and every other one as soon as it is idle. */
void ch_agent_http_shutdown(void);

#endif
