/*
 * agentrun.h — what the agent-facing entry points share (src/proto/ only):
 * following one prompt's reply, a per-connection chat session, choosing a
 * conversation's agent, usage accounting and rate limits.
 *
 * Entry points and what they use:
 *
 *   agent-ws (/api/<agent>/ws) ─┐ session: own conversation, a queue of
 *   command  (/ws/command)     ─┘ prompts, one reply at a time  ──┐
 *   POST /api/chat (rest.c) ── resolve agent ── rate check ───────┤ watcher: ONE prompt
 *   relay send (relay.c)    ── resolve agent ── rate check ───────┘   (send + follow the reply)
 *
 * The watcher. The agent core (agent/agent.h) publishes a reply on the
 * conversation's topic "c:<conv>":
 *   user message (seq S) ─> stream start {"inReplyTo":S,"streamId":X}
 *                        ─> chunk {"streamId":X,"delta"}...
 *                        ─> stored assistant message {"streamId":X,"inReplyTo":S,...}
 *                        ─> stream end {"streamId":X}        (or: stored agent_error event, stream error)
 * A watcher subscribes to that topic on its loop BEFORE it submits the
 * prompt, so nothing of the reply can pass it by. The hub publishes the
 * stream's start before the send's answer reaches the loop, so until the
 * prompt's seq is known every stream/message/event broadcast is held (a
 * reference each) and replayed once it is. Then the reply is the stream
 * whose start (or stored message, or stored agent_error marker — a queued
 * stream that was cancelled never starts) names S in "inReplyTo". Matching
 * by seq, never by position, keeps two prompts in one conversation apart.
 *
 * A watcher serves its owner through ops until the reply ends or the owner
 * detaches (the client went away); then it is freed (once its send has been
 * answered). The reply itself goes on either way, stored and accounted by
 * the agent core.
 *
 * Usage and limits. Usage — requests, characters streamed, tokens — is
 * accounted by the agent core for every reply, whatever sent the prompt
 * (agent.h's usage hook, installed by agents.c: per user and per API key,
 * process-wide under a mutex). Rate limits (here, before a prompt is sent):
 * one token bucket per API key (other credentials: per user), rate-limit
 * requests per minute refilled continuously, rate-burst deep.
 *
 * Threading: everything here runs on the loop that owns the object, except
 * the usage/limit tables (mutex; usage written on the hub thread) and the
 * resolve request's run (hub thread).
 */
#ifndef CH_PROTO_AGENTRUN_H
#define CH_PROTO_AGENTRUN_H

#include <stddef.h>
#include <stdint.h>

#include "auth/auth.h"
#include "core/buf.h"
#include "core/list.h"
#include "hub/client.h"
#include "hub/ops.h"
#include "http/router.h"
#include "net/loop.h"

/* ---- settings (from the configuration, set once at start-up) ------------------- */

typedef struct {
  int rate_limit;          /* agent requests per minute per API key; 0 = no limit */
  int rate_burst;          /* bucket depth: requests allowed at once */
  char command_agent[65];  /* agent of profile command; "" = the first configured */
} ch__proto_agent_settings_t;
extern ch__proto_agent_settings_t ch__proto_agent_settings;

/* ---- the watcher -------------------------------------------------------------- */

typedef struct ch__proto_watch_s ch__proto_watch_t;

typedef struct {
  /* The prompt is stored (out->status 0) or refused (then the watcher is gone
   * when this returns). out is borrowed for the call. Optional. */
  void (*on_sent)(void *owner, const ch_msg_out_t *out);
  /* A piece of the reply. */
  void (*on_chunk)(void *owner, const char *stream_id, const char *delta, size_t len);
  /* The reply ended: err NULL and message = the stored assistant message object
   * (JSON, borrowed; NULL if it could not be seen), or err = the agent's error.
   * The watcher is gone when this returns. */
  void (*on_end)(void *owner, const char *stream_id, const char *message, size_t mlen, const char *err);
} ch__proto_watch_ops_t;

/* Subscribe to in->conv on loop l, then store the prompt with
 * ch_hub_send_message(in) — in->agent must name a configured agent — and
 * follow the reply. who: the credential (unused: the agent core accounts the
 * reply to the stored prompt's author and API key). ops/owner: the owner's
 * callbacks (ops may be NULL: the prompt is only sent). *out (may be NULL)
 * gets the watcher, valid until on_sent reports a refusal, on_end returns
 * or the owner detaches.
 *   0          submitted: callbacks follow, on l, never before this returns
 *   CH_EINVAL  refused at once (err gets why; nothing was sent, no callbacks) */
int ch__proto_watch_send(ch_loop_t *l, const ch_msg_in_t *in, const ch_identity_t *who,
                         const ch__proto_watch_ops_t *ops, void *owner, ch__proto_watch_t **out, ch_buf_t *err);
/* The owner goes away: no more callbacks; w is freed (now, or when its send
 * is answered). Loop thread of the watcher; also from inside a callback. */
void ch__proto_watch_detach(ch__proto_watch_t *w);
/* Watchers alive, all loops (any thread; /metrics). */
size_t ch__proto_watch_count(void);

/* ---- the conversation's agent --------------------------------------------------- */

/* agent: the conversation's agent if it names a configured one, else (no
 * agent set, or the conversation does not exist yet) the first configured
 * agent, else NULL. missing: the conversation's agent when it names one that
 * is not configured (then agent is NULL), else NULL. Both borrowed. */
typedef void (*ch__proto_resolve_cb)(void *ud, const char *agent, const char *missing);
/* Look the conversation up on the hub thread; cb runs later on l. */
void ch__proto_agent_resolve(ch_loop_t *l, const char *conv, ch__proto_resolve_cb cb, void *ud);

/* ---- a chat session (agent-ws, command) ------------------------------------------ */

typedef struct ch__proto_session_s ch__proto_session_t;

typedef struct {
  /* The session's conversation exists (status 0) or could not be created
   * (then every queued prompt also ends with on_end(err)). */
  void (*on_ready)(ch__proto_session_t *s, int status, const char *error);
  /* A piece of the reply to the current prompt. */
  void (*on_chunk)(ch__proto_session_t *s, const char *delta, size_t len);
  /* The reply ended: err NULL and reply = the whole text, or err (the prompt
   * could not be stored, or the agent failed). The next prompt starts after. */
  void (*on_end)(ch__proto_session_t *s, const char *reply, size_t len, const char *err);
} ch__proto_session_ops_t;

#define CH__PROTO_SESSION_QUEUE 16 /* prompts waiting per connection */

struct ch__proto_session_s {
  ch_client_t cl;                      /* first: the loop's registry hands back &cl */
  const ch__proto_session_ops_t *sops; /* static */
  ch_identity_t who;                   /* the credential (valid once authed) */
  char agent[65];                      /* the agent answering */
  char profile[16];                    /* "agent-ws", "command": the conversation's metadata */
  char conv[37];                       /* the session's conversation; "" until created */
  int creating;                        /* the conversation is being created */
  ch_list_t queue;                     /* ch__proto_prompt_t waiting */
  size_t nqueue;
  ch__proto_watch_t *w;                /* the prompt in flight, or NULL */
  int sending;                         /* w exists: its prompt is being stored or answered */
  ch_buf_t reply;                      /* the reply so far */
};

/* Register the session's client on c's loop (like ch_client_init). */
void ch__proto_session_init(ch__proto_session_t *s, ch_conn_t *c, const ch__proto_session_ops_t *ops,
                            const char *profile, const char *source);
/* Authenticated as id, answered by agent (configured). */
void ch__proto_session_auth(ch__proto_session_t *s, const ch_identity_t *id, const char *agent);
/* Create the conversation now (else at the first prompt); on_ready reports it. */
void ch__proto_session_open(ch__proto_session_t *s);
/* Queue a prompt (content: UTF-8 text; context_json: a JSON object stored as
 * the message's "context", or NULL).
 *   0          queued (the reply comes through on_chunk/on_end)
 *   CH_ELIMIT  the credential's rate limit: *retry_ms (may be NULL) until the next is allowed
 *   CH_EBUSY   CH__PROTO_SESSION_QUEUE prompts already wait */
int ch__proto_session_prompt(ch__proto_session_t *s, const char *content, const char *context_json,
                             int64_t *retry_ms);
/* Leave: detach the reply in flight (it is still accounted), drop the queue,
 * unregister the client. The struct may be freed after. */
void ch__proto_session_dispose(ch__proto_session_t *s);

/* ---- usage and limits (any thread) ---------------------------------------------- */

/* Take one request from who's bucket. 0, or CH_ELIMIT with *retry_ms (may be NULL). */
int ch__proto_rate_take(const ch_identity_t *who, int64_t *retry_ms);
/* "rate limit exceeded: try again in N s" into out (n bytes). */
void ch__proto_rate_message(char *out, size_t n, int64_t retry_ms);

/* ---- routes of the profiles (registered by ch_proto_routes_agents) ---------------- */

void ch__proto_routes_agentws(ch_http_router_t *r); /* agentws.c: GET /api/:agent/ws */
void ch__proto_routes_command(ch_http_router_t *r); /* command.c: GET /ws/command */

#endif
