/*
 * bcast.c — lazily encoded broadcast events (see bcast.h).
 */
#include "hub/bcast.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "sse/sse.h"
#include "ws/frame.h"

static void ch__bcast_free(ch_topic_item_t *it) {
  ch_bcast_t *b = (ch_bcast_t *)it;
  for (int i = 0; i < CH_FMT_COUNT; i++) ch_chunk_unref(atomic_load(&b->frames[i]));
  ch_chunk_unref(b->json);
  free(b->resource);
  free(b->resource_id);
  free(b);
}

ch_bcast_t *ch_bcast_new(const char *type, const char *resource, const char *resource_id,
                         uint64_t seq, ch_chunk_t *json) {
  ch_bcast_t *b = ch_xcalloc(1, sizeof(*b));
  atomic_init(&b->base.refs, 1);
  b->base.free_cb = ch__bcast_free;
  snprintf(b->type, sizeof(b->type), "%s", type);
  b->resource = resource ? ch_xstrdup(resource) : NULL;
  b->resource_id = resource_id ? ch_xstrdup(resource_id) : NULL;
  b->seq = seq;
  b->json = json;
  for (int i = 0; i < CH_FMT_COUNT; i++) atomic_init(&b->frames[i], NULL);
  return b;
}

static ch_chunk_t *ch__ws_text_frame(const char *p, size_t n) {
  uint8_t hdr[14];
  size_t hl = ch_ws_frame_header(hdr, 1, 0, CH_WS_OP_TEXT, n, NULL);
  ch_chunk_t *k = ch_chunk_new(hl + n);
  memcpy(k->data, hdr, hl);
  memcpy(k->data + hl, p, n);
  return k;
}

static ch_chunk_t *ch__bcast_encode(ch_bcast_t *b, ch_fmt_t fmt) {
  ch_buf_t out = CH_BUF_INIT;
  ch_chunk_t *k;
  switch (fmt) {
  case CH_FMT_RELAY:
    ch_buf_append_str(&out, "{\"id\":null,\"type\":\"data\",\"resource\":\"");
    ch_buf_append_json_str(&out, b->resource ? b->resource : "chat", strlen(b->resource ? b->resource : "chat"));
    ch_buf_append_str(&out, "\",\"resourceId\":\"");
    if (b->resource_id) ch_buf_append_json_str(&out, b->resource_id, strlen(b->resource_id));
    ch_buf_append_str(&out, "\",\"data\":");
    ch_buf_append(&out, b->json->data, b->json->len);
    ch_buf_append_byte(&out, '}');
    k = ch__ws_text_frame(out.base, out.len);
    break;
  case CH_FMT_SSE: {
    char id[24];
    if (b->seq) snprintf(id, sizeof(id), "%llu", (unsigned long long)b->seq);
    ch_sse_event(&out, b->seq ? id : NULL, b->type, b->json->data, b->json->len);
    k = ch_buf_to_chunk(&out);
    break;
  }
  default:
    k = ch__ws_text_frame(b->json->data, b->json->len);
  }
  ch_buf_dispose(&out);
  return k;
}

ch_chunk_t *ch_bcast_frame(ch_bcast_t *b, ch_fmt_t fmt) {
  ch_chunk_t *k = atomic_load_explicit(&b->frames[fmt], memory_order_acquire);
  if (k) return k;
  ch_chunk_t *mine = ch__bcast_encode(b, fmt);
  ch_chunk_t *expected = NULL;
  if (atomic_compare_exchange_strong_explicit(&b->frames[fmt], &expected, mine, memory_order_acq_rel,
                                              memory_order_acquire))
    return mine;
  ch_chunk_unref(mine); /* another loop was first */
  return expected;
}
