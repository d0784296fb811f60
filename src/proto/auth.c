/*
 * auth.c — credential checks for the profiles (see proto.h).
 *
 * Tokens (JWT, insecure dev pairs) are verified on the loop: pure CPU. An API
 * key must be looked up in the store, so it travels to the hub thread and the
 * answer comes back to the loop as a hub request's done callback.
 */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "hub/hub.h"
#include "proto/proto.h"

ch_proto_settings_t ch_proto_settings;

typedef struct {
  ch_hub_req_t base;
  char *cred;
  ch_identity_t id;
  const char *reason;
  ch_proto_auth_cb cb;
  void *ud;
} ch__auth_req_t;

static void ch__auth_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__auth_req_t *a = (ch__auth_req_t *)r;
  r->status = ch_auth_authenticate(&ch_proto_settings.secret, h->store, a->cred, ch_proto_settings.auth_flags,
                                   ch_clock_wall_ms(), &a->id, &a->reason);
}

static void ch__auth_done(ch_hub_req_t *r) {
  ch__auth_req_t *a = (ch__auth_req_t *)r;
  a->cb(a->ud, r->status, r->status == 0 ? &a->id : NULL, a->reason ? a->reason : "authentication failed");
}

static void ch__auth_free(ch_hub_req_t *r) {
  ch__auth_req_t *a = (ch__auth_req_t *)r;
  free(a->cred);
  free(a);
}

void ch_proto_authenticate(ch_loop_t *loop, const char *cred, ch_proto_auth_cb cb, void *ud) {
  int kind = ch_auth_cred_classify(cred);
  if (kind != CH_AUTH_CRED_APIKEY) {
    ch_identity_t id;
    const char *reason = NULL;
    int rc = ch_auth_authenticate(&ch_proto_settings.secret, NULL, cred, ch_proto_settings.auth_flags,
                                  ch_clock_wall_ms(), &id, &reason);
    cb(ud, rc, rc == 0 ? &id : NULL, reason ? reason : "authentication failed");
    return;
  }
  ch__auth_req_t *a = ch_xcalloc(1, sizeof(*a));
  a->base.run = ch__auth_run;
  a->base.done = ch__auth_done;
  a->base.free_cb = ch__auth_free;
  a->base.loop = loop;
  a->cred = ch_xstrdup(cred);
  a->cb = cb;
  a->ud = ud;
  ch_hub_submit(ch_hub, &a->base);
}

/* ---- HTTP routes ---------------------------------------------------------- */

typedef struct {
  ch_http_ctx_t *x;
  unsigned need;
  ch_proto_http_ok_cb ok;
} ch__http_auth_t;

static void ch__http_auth_cb(void *ud, int status, const ch_identity_t *id, const char *reason) {
  ch__http_auth_t *a = ud;
  ch_http_ctx_t *x = a->x;
  if (x->c == NULL) {
    ch_http_reply_error(x, 401, "connection gone"); /* frees the ctx */
  } else if (status != 0) {
    ch_http_reply_error(x, status == CH_EAUTH ? 401 : 500, reason);
  } else if (a->need && !(id->scopes & (a->need | CH_SCOPE_ADMIN))) {
    ch_http_reply_error(x, 403, "this credential lacks the scope for this route");
  } else {
    a->ok(x, id);
  }
  free(a);
}

void ch_proto_http_authenticate(ch_http_ctx_t *x, unsigned need, ch_proto_http_ok_cb ok) {
  const char *cred = NULL;
  if (ch_auth_cred_from_request(x->req, &cred) != 0) {
    ch_http_reply_error(x, 401, "missing credential: use Authorization: Bearer <token> or ?token=");
    return;
  }
  ch__http_auth_t *a = ch_xmalloc(sizeof(*a));
  a->x = x;
  a->need = need;
  a->ok = ok;
  ch_proto_authenticate(x->c->loop, cred, ch__http_auth_cb, a);
}
