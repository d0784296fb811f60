/*
 * bcast.h — one conversation event on its way to every subscriber.
 *
 * The hub builds the event's native JSON once. Each wire format a subscriber
 * may need (a native/unified WebSocket frame, a relay-wrapped frame, an SSE
 * event) is encoded from it at most once, lazily, by whichever loop needs it
 * first; other loops reuse the same bytes (an atomic compare-and-swap
 * publishes the encoding; a loser frees its copy).
 *
 *   hub thread: ch_bcast_new(json, seq) ─> ch_topic_publish("c:<id>", b)
 *   loop: deliver(sub, b) ─> seq filter ─> ch_bcast_frame(b, fmt) ─> ch_conn_send(ref)
 */
#ifndef CH_HUB_BCAST_H
#define CH_HUB_BCAST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "hub/topic.h"

typedef enum {
  CH_FMT_NATIVE = 0, /* WebSocket text frame of the JSON */
  CH_FMT_RELAY,      /* {"id":null,"type":"data","resource":R,"resourceId":ID,"data":JSON} frame */
  CH_FMT_SSE,        /* "id: <seq>\nevent: <type>\ndata: JSON\n\n" */
  CH_FMT_COUNT
} ch_fmt_t;

typedef struct ch_bcast_s {
  ch_topic_item_t base;
  uint64_t seq;            /* conversation seq; 0 for ephemeral events (presence, typing) */
  uint64_t exclude_client; /* client id that must not get it (0: none) */
  char type[24];           /* "message", "presence", "typing", "event", ... (SSE event name) */
  char stream_id[37];      /* agent stream chunks: the stream ("" otherwise) */
  uint32_t stream_index;   /* agent stream chunks: the chunk index (0 otherwise) */
  char *resource;          /* owned: relay resource ("chat", "project") */
  char *resource_id;       /* owned: conversation or project id */
  ch_chunk_t *json;        /* owned reference: the native JSON text */
  _Atomic(ch_chunk_t *) frames[CH_FMT_COUNT]; /* owned references, lazily filled */
} ch_bcast_t;

/* New broadcast with one reference; takes ownership of json's reference. */
ch_bcast_t *ch_bcast_new(const char *type, const char *resource, const char *resource_id,
                         uint64_t seq, ch_chunk_t *json);
/* The encoding for fmt (borrowed: valid while the caller holds b). */
ch_chunk_t *ch_bcast_frame(ch_bcast_t *b, ch_fmt_t fmt);
static inline void ch_bcast_unref(ch_bcast_t *b) { ch_topic_item_unref(&b->base); }

#endif
