/*
 * agent.h — AI agents: one upstream request per prompt, its reply streamed to
 * every subscriber of the conversation, stored when it ends.
 *
 *   user message committed ──> ch_agent_trigger (hub thread, after the commit)
 *        │ request = system prompt + recent messages within a budget
 *        ▼
 *   backend (exec | openai | anthropic | echo) on the HUB THREAD's loop
 *        │ ch_agent_stream_delta(st, text)         ──> publish "c:<conv>" {"type":"stream","op":"chunk",...}
 *        │ ch_agent_stream_end(st, NULL | error)   ──> store the assistant message (or an error
 *        ▼                                              marker), publish it, release the stream
 *
 * Streams live on the hub thread, next to the store and presence, so a join
 * (also run there) sees a consistent snapshot: the text produced so far and
 * the index of the last chunk, and only later chunks reach the joiner live —
 * no gap, no chunk twice, on every device. However many clients watch, one
 * prompt makes ONE upstream request.
 *
 * Wire events (native JSON, broadcast to "c:<conv>", seq 0 — the final
 * message gets a seq of its own):
 *   {"type":"stream","op":"start","conversationId","streamId","agent","inReplyTo":<seq>}
 *   {"type":"stream","op":"chunk","conversationId","streamId","index":<n from 1>,"delta":"..."}
 *   {"type":"stream","op":"end","conversationId","streamId","seq":<seq of the stored reply>}
 *   {"type":"stream","op":"error","conversationId","streamId","error":"..."}
 * The stored assistant message goes out as a normal {"type":"message",...}
 * event just before "end"; an error leaves a stored marker (a custom event
 * "agent_error" with its own seq) just before "error".
 *
 * Agents are declared as "NAME=KIND[:ARG][;key=value]..." (config key `agent`,
 * repeatable, or --agent): keys system, max-concurrent, max-queue,
 * idle-timeout (ms), total-timeout (ms), history (bytes); other keys are the back end's
 * (ch_agent_opt).
 *
 * Back ends are vtables (super-first embedding of their state in
 * ch_agent_stream_t::be_data is theirs to define). A back end must never
 * block: processes through uv_spawn, HTTP through libcurl's multi interface
 * driven by the hub loop.
 *
 * Usage. Every reply is accounted twice, on the hub thread: to its agent
 * (ch_agent_t counters) and to whoever sent the prompt — the prompt's author
 * and, when it came with an API key, that key — through the usage hook
 * (ch_agent_set_usage_cb): one request when the reply is triggered, then at
 * its end (success, error, cancel or shutdown) the characters streamed and
 * the tokens the upstream reported. The key is read from the stored prompt:
 * an API key's device is "apikey-<key id>" (auth.h), and it counts only when
 * the store has that key for the prompt's author, so no other credential can
 * charge a key that is not its user's.
 */
#ifndef CH_AGENT_AGENT_H
#define CH_AGENT_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"
#include "core/list.h"

typedef struct ch_agent_s ch_agent_t;
typedef struct ch_agent_stream_s ch_agent_stream_t;
typedef struct ch_hub_s ch_hub_t;

typedef struct ch_agent_backend_s {
  const char *kind; /* "exec", "openai", "anthropic", "echo" */
  /* Check and digest a->arg and a->opts (after parsing the config). 0 or CH_ECONFIG with err. */
  int (*init)(ch_agent_t *a, ch_buf_t *err);
  void (*dispose)(ch_agent_t *a);
  /* Start the upstream request for st (st->request_json is the request). Must
   * not block. Deltas and the end are reported with ch_agent_stream_delta /
   * ch_agent_stream_end, from callbacks of `loop`, never from inside start.
   * Returns 0, or a CH_E* code (the core then ends the stream with an error). */
  int (*start)(ch_agent_stream_t *st, uv_loop_t *loop);
  /* Stop producing (client cancel, timeout, shutdown): release the upstream.
   * After cancel the back end must not report anything more for st; the core
   * has ended the stream already. */
  void (*cancel)(ch_agent_stream_t *st);
} ch_agent_backend_t;

struct ch_agent_s {
  char *name;                    /* owned: "claude" */
  const ch_agent_backend_t *be;  /* static */
  char *arg;                     /* owned: what followed KIND: (command line, base URL, ...) or "" */
  char *system_prompt;           /* owned or NULL */
  void *be_state;                /* the back end's, freed by be->dispose */
  unsigned max_concurrent;       /* streams at once; more wait in `queue` */
  unsigned active;
  ch_list_t queue;               /* ch_agent_stream_t waiting for a slot */
  unsigned max_queue;            /* prompts that may wait; one more ends at once with "agent busy" */
  unsigned queued;               /* streams in `queue` */
  uint64_t idle_timeout_ms;      /* no chunk for this long: error "upstream idle timeout" */
  uint64_t total_timeout_ms;     /* whole reply longer than this: error "upstream timeout" */
  size_t history_budget;         /* bytes of recent messages sent as context */
  char **opt_keys, **opt_vals;   /* owned: the spec's key=value options */
  size_t nopts;
  uint64_t requests, chars;      /* usage counters (hub thread) */
  uint64_t tokens_in, tokens_out; /* tokens the upstreams reported (prompt, completion), added as each
                                     reply ends (hub thread) */
};

typedef enum { CH_AGENT_QUEUED = 0, CH_AGENT_RUNNING, CH_AGENT_DONE } ch_agent_state_t;

struct ch_agent_stream_s {
  char id[37];               /* stream id (UUID) */
  ch_agent_t *agent;         /* not owned */
  char *conv;                /* owned conversation id */
  uint64_t in_reply_to;      /* seq of the message answered */
  char *reply_source;        /* owned: source of the stored reply (the prompt's source) */
  char *request_json;        /* owned: {"agent","conversationId","system","messages":[{"role","content"}...]} */
  char user_id[129];         /* the prompt's author ("" if the prompt could not be read) */
  char key_id[32];           /* the API key the prompt came with, or "" */
  ch_buf_t text;             /* everything produced so far */
  uint64_t tokens_in;        /* prompt tokens the upstream reported (the back end keeps it current) */
  uint64_t tokens_out;       /* completion tokens reported so far (idem; cumulative, not a delta) */
  uint32_t chunks;           /* index of the last chunk published */
  int state;                 /* ch_agent_state_t */
  uint64_t started_ms, last_chunk_ms;
  ch_list_t node;            /* in the agent's queue or the registry's running list */
  void *be_data;             /* the back end's per-stream state */
};

/* An option of the agent's spec, or NULL. */
const char *ch_agent_opt(const ch_agent_t *a, const char *key);

/* The agents configured for this process (set up at start, used on the hub thread). */
int ch_agents_setup(char **specs, size_t n, ch_buf_t *err); /* "NAME=KIND[:ARG]" each */
void ch_agents_dispose(void);
ch_agent_t *ch_agent_find(const char *name);
size_t ch_agents_count(void);
ch_agent_t *ch_agent_at(size_t i);
/* Parse one "NAME=KIND[:ARG]" spec (for config checks). 0 or CH_ECONFIG with err. */
int ch_agent_spec_check(const char *spec, ch_buf_t *err);

/* Hub thread. Start (or queue) a reply by `agent` to message `seq` of conv. */
int ch_agent_trigger(ch_hub_t *h, const char *agent, const char *conv, uint64_t seq, const char *source);
/* Hub thread. Cancel a running or queued stream. CH_ENOTFOUND. */
int ch_agent_cancel(ch_hub_t *h, const char *stream_id, const char *conv);
/* Hub thread: append a JSON array of the conversation's in-flight streams
 * [{"streamId","agent","inReplyTo","text","index"}] (for a join's sync). */
void ch_agent_streams_json(const char *conv, ch_buf_t *out);
/* Hub thread: the in-flight streams of conv as (id, last chunk index) marks,
 * so a joiner drops the chunks its sync already contains. Returns the count. */
typedef struct {
  char id[37];
  uint32_t index;
} ch_agent_stream_mark_t;
size_t ch_agent_streams_snapshot(const char *conv, ch_agent_stream_mark_t *marks, size_t max);
/* Hub thread: cancel everything (shutdown). */
void ch_agent_stop_all(ch_hub_t *h);

/* Usage of one identity, reported by the core (hub thread). Strings are
 * borrowed for the call. */
typedef struct {
  const char *user_id;   /* the prompt's author */
  const char *key_id;    /* the API key it came with, or NULL */
  uint64_t requests;     /* replies triggered */
  uint64_t chars;        /* bytes of reply text streamed */
  uint64_t tokens_in;    /* prompt tokens the upstream reported */
  uint64_t tokens_out;   /* completion tokens the upstream reported */
} ch_agent_usage_t;
typedef void (*ch_agent_usage_cb)(const ch_agent_usage_t *u);
/* Install the usage hook (NULL: none). Call at start-up, before any prompt;
 * cb runs on the hub thread. */
void ch_agent_set_usage_cb(ch_agent_usage_cb cb);

/* Back ends report (hub thread). */
void ch_agent_stream_delta(ch_agent_stream_t *st, const char *text, size_t len);
/* err NULL: success; else the error text (the stream ends with an error event
 * and a stored marker). The back end releases its per-stream state before
 * calling this; st is freed when it returns. */
void ch_agent_stream_end(ch_agent_stream_t *st, const char *err);

extern const ch_agent_backend_t ch_agent_backend_echo;
extern const ch_agent_backend_t ch_agent_backend_exec;
extern const ch_agent_backend_t ch_agent_backend_openai;
extern const ch_agent_backend_t ch_agent_backend_anthropic;

#endif
