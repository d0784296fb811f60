/*
 * internal.h — declarations shared between the files of src/proto/ only.
 */
#ifndef CH_PROTO_INTERNAL_H
#define CH_PROTO_INTERNAL_H

#include "auth/auth.h"
#include "http/server.h"

/* GET /api/conversations/:id/events for an authenticated identity (sse_events.c). */
void ch__proto_sse_events(ch_http_ctx_t *x, const ch_identity_t *id);

#endif
