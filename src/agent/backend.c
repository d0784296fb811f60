/*
 * backend.c — option checks and text delivery shared by the back ends (see
 * backend.h).
 */
#include "agent/backend.h"

#include <stdlib.h>
#include <string.h>

#include "agent/sse_parse.h"
#include "core/err.h"

const char *const ch_agent_be_core_opts[] = {"system", "max-concurrent", "idle-timeout", "total-timeout", "history",
                                             NULL};

static int ch__be_listed(const char *const *list, const char *k) {
  for (size_t i = 0; list && list[i]; i++)
    if (strcmp(list[i], k) == 0) return 1;
  return 0;
}

int ch_agent_be_opts_check(const ch_agent_t *a, const char *const *allowed, ch_buf_t *err) {
  for (size_t i = 0; i < a->nopts; i++) {
    const char *k = a->opt_keys[i];
    if (ch__be_listed(ch_agent_be_core_opts, k) || ch__be_listed(allowed, k)) continue;
    ch_buf_printf(err, "agent '%s': unknown option '%s' for kind %s (allowed:", a->name, k, a->be->kind);
    for (size_t j = 0; allowed && allowed[j]; j++) ch_buf_printf(err, " %s", allowed[j]);
    for (size_t j = 0; ch_agent_be_core_opts[j]; j++) ch_buf_printf(err, " %s", ch_agent_be_core_opts[j]);
    ch_buf_append_str(err, ")\n");
    return CH_ECONFIG;
  }
  return 0;
}

int ch_agent_be_opt_u64(const ch_agent_t *a, const char *key, uint64_t min, uint64_t max, uint64_t *val,
                        ch_buf_t *err) {
  const char *v = ch_agent_opt(a, key);
  if (v == NULL) return 0;
  char *end;
  unsigned long long n = strtoull(v, &end, 10);
  if (*v < '0' || *v > '9' || *end != '\0' || n < min || n > max) {
    ch_buf_printf(err, "agent '%s': option %s = '%s' must be a number in %llu..%llu\n", a->name, key, v,
                  (unsigned long long)min, (unsigned long long)max);
    return CH_ECONFIG;
  }
  *val = n;
  return 0;
}

void ch_agent_be_out_init(ch_agent_be_out_t *o, size_t max) {
  ch_buf_init(&o->scratch);
  o->produced = 0;
  o->max = max;
}

void ch_agent_be_out_dispose(ch_agent_be_out_t *o) { ch_buf_dispose(&o->scratch); }

int ch_agent_be_emit(ch_agent_stream_t *st, ch_agent_be_out_t *o, const char *text, size_t len, int final,
                     size_t *consumed) {
  o->scratch.len = 0;
  size_t used = ch_agent_utf8_clean(&o->scratch, text, len, final);
  if (consumed) *consumed = used;
  if (o->scratch.len == 0) return 0;
  if (o->produced + o->scratch.len > o->max) return CH_ETOOBIG;
  o->produced += o->scratch.len;
  ch_agent_stream_delta(st, o->scratch.base, o->scratch.len);
  return 0;
}
