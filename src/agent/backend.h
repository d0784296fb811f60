/*
 * backend.h — helpers shared by the exec, openai and anthropic back ends
 * (private to src/agent/): option checks at init, and the one way a back end
 * hands text to the core.
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
 */
#ifndef CH_AGENT_BACKEND_H
#define CH_AGENT_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "agent/agent.h"
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

#endif
