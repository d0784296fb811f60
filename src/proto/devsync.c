/*
 * devsync.c — profile `device-sync` (CLIENT-PROFILES.md): one user's devices
 * kept in step, on /ws/devices. A thin adapter over the user channel
 * (hub/userchan.h): the channel's envelope IS this profile's wire format, so
 * hub events reach a device as the shared pre-encoded frame, untranslated.
 *
 *   connect /ws/devices?token=T      T names user and device: a token from
 *                                    `chorus token --user U --device D`, an API
 *                                    key (device "apikey-<id>"), or with
 *                                    --insecure-dev a literal "U:D"
 *   <- {"type":"DEVICE_CONNECTED","payload":{"userId","deviceId","source"?,"at"},"timestamp"}
 *                                    one per device of U already connected, first
 *   -> {"type":"PING",...}          <- {"type":"PONG","payload":{},"timestamp":ISO}
 *   -> {"type":"UPDATE_PROGRESS","payload":P,...}
 *                                    U's OTHER devices <- {"type":"SHOOT_PROGRESS","payload":P,...}
 *   -> {"type":"<ANY>",...}          U's other devices get it as sent (unknown
 *                                    types pass through, never rejected)
 *   <- DEVICE_CONNECTED / DEVICE_DISCONNECTED as U's other devices come and go,
 *      and whatever the back end publishes for U (POST /api/users/:userId/events)
 *
 * A fan-out is one ch_userchan_publish: encoded once, excluded from the
 * sender, delivered on every loop. Nothing here is stored.
 *
 * Decisions the profile leaves open (docs/PROTOCOL.md): a forwarded message
 * without "timestamp" gets the server's; UPDATE_PROGRESS without "payload"
 * becomes SHOOT_PROGRESS with {}; a message that is not a JSON object with a
 * string "type" answers {"type":"ERROR","payload":{"error":"..."},"timestamp"}
 * to the sender only; forwarding needs the write scope (PING does not).
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "hub/client.h"
#include "hub/userchan.h"
#include "proto/proto.h"
#include "ws/session.h"
#include "ws/utf8.h"

typedef struct {
  ch_client_t cl; /* first: the registry hands back &cl */
  ch_ws_t *ws;    /* not owned; NULL before open */
} ch__ds_t;

/* ---- rendering ------------------------------------------------------------ */

static void ch__ds_send_json(ch_client_t *cl, const char *json, size_t len) {
  ch__ds_t *d = (ch__ds_t *)cl;
  if (d->ws) ch_ws_send_text(d->ws, json, len);
}

static void ch__ds_deliver(ch_client_t *cl, ch_csub_t *sub, ch_bcast_t *b) {
  (void)sub;
  ch__ds_t *d = (ch__ds_t *)cl;
  if (d->ws) ch_ws_send_frame(d->ws, ch_bcast_frame(b, CH_FMT_NATIVE));
}

static void ch__ds_joined(ch_client_t *cl, ch_csub_t *sub, const char *req_id, const char *json, size_t len) {
  (void)sub;
  (void)req_id;
  ch__ds_send_json(cl, json, len); /* device-sync joins no conversation; kept for completeness */
}

static const ch_client_ops_t ch__ds_ops = {ch__ds_send_json, ch__ds_deliver, ch__ds_joined};

/* The user channel's envelope is this profile's format: forward the shared
 * frame. Other hub events on the channel (conversation changes) are not
 * envelopes and stay away from device-sync clients. */
static void ch__ds_uc_event(ch_client_t *cl, ch_bcast_t *b) {
  if (strcmp(b->type, CH_USERCHAN_BCAST_TYPE) == 0) ch__ds_deliver(cl, NULL, b);
}

static void ch__ds_uc_ready(ch_client_t *cl, const char *req_id, const ch_userchan_device_t *devs, size_t n) {
  (void)req_id;
  int64_t now = ch_clock_wall_ms();
  ch_buf_t p = CH_BUF_INIT, b = CH_BUF_INIT;
  for (size_t i = 0; i < n; i++) {
    p.len = b.len = 0;
    ch_userchan_device_json(&p, &devs[i], devs[i].at_ms);
    ch_userchan_envelope(&b, CH_USERCHAN_CONNECTED, p.base, p.len, now);
    ch__ds_send_json(cl, b.base, b.len);
  }
  ch_buf_dispose(&p);
  ch_buf_dispose(&b);
}

static const ch_userchan_ops_t ch__ds_uc_ops = {ch__ds_uc_event, ch__ds_uc_ready};

static void ch__ds_error(ch__ds_t *d, const char *msg) {
  ch_buf_t p = CH_BUF_INIT, b = CH_BUF_INIT;
  ch_buf_append_str(&p, "{\"error\":");
  ch_buf_append_json_qstr(&p, msg);
  ch_buf_append_byte(&p, '}');
  ch_userchan_envelope(&b, "ERROR", p.base, p.len, ch_clock_wall_ms());
  ch__ds_send_json(&d->cl, b.base, b.len);
  ch_buf_dispose(&p);
  ch_buf_dispose(&b);
}

/* ---- messages --------------------------------------------------------------- */

static void ch__ds_fan_out(ch__ds_t *d, cJSON *m, int progress, const char *raw, size_t len) {
  int has_ts = cJSON_GetObjectItemCaseSensitive(m, "timestamp") != NULL;
  if (!progress && has_ts) { /* exactly as sent */
    ch_userchan_publish(&d->cl, raw, len);
    return;
  }
  if (progress) {
    cJSON_ReplaceItemInObjectCaseSensitive(m, "type", cJSON_CreateString("SHOOT_PROGRESS"));
    if (!cJSON_GetObjectItemCaseSensitive(m, "payload")) cJSON_AddObjectToObject(m, "payload");
  }
  if (!has_ts) {
    char ts[CH_ISO8601_LEN + 1];
    ch_clock_iso8601(ch_clock_wall_ms(), ts);
    cJSON_AddStringToObject(m, "timestamp", ts);
  }
  char *text = cJSON_PrintUnformatted(m);
  if (text) ch_userchan_publish(&d->cl, text, strlen(text));
  cJSON_free(text);
}

static void ch__ds_message(ch_ws_t *ws, int opcode, const char *data, size_t len) {
  ch__ds_t *d = ws->udata;
  /* A binary frame is forwarded in a text frame: it must be UTF-8 too. */
  if (opcode == CH_WS_OP_BINARY && !ch_utf8_valid((const uint8_t *)data, len)) {
    ch__ds_error(d, "expected a JSON object in UTF-8");
    return;
  }
  cJSON *m = cJSON_ParseWithLength(data, len);
  cJSON *t = cJSON_IsObject(m) ? cJSON_GetObjectItemCaseSensitive(m, "type") : NULL;
  if (!cJSON_IsString(t) || t->valuestring[0] == '\0') {
    ch__ds_error(d, m ? "a message needs a string \"type\"" : "expected a JSON object");
    goto Exit;
  }
  if (strcmp(t->valuestring, "PING") == 0) {
    ch_buf_t b = CH_BUF_INIT;
    ch_userchan_envelope(&b, "PONG", NULL, 0, ch_clock_wall_ms());
    ch__ds_send_json(&d->cl, b.base, b.len);
    ch_buf_dispose(&b);
    goto Exit;
  }
  if (!(d->cl.scopes & (CH_SCOPE_WRITE | CH_SCOPE_ADMIN))) {
    ch__ds_error(d, "this credential may not send to other devices");
    goto Exit;
  }
  ch__ds_fan_out(d, m, strcmp(t->valuestring, "UPDATE_PROGRESS") == 0, data, len);
Exit:
  cJSON_Delete(m);
}

/* ---- life cycle ------------------------------------------------------------- */

static void ch__ds_open(ch_ws_t *ws) {
  ch__ds_t *d = ws->udata;
  d->ws = ws;
  d->cl.transport = ws;
  if (ch_userchan_start(&d->cl, &ch__ds_uc_ops, NULL) != 0)
    ch_ws_close(ws, CH_WS_CLOSE_INTERNAL, "cannot join the user channel");
}

static void ch__ds_close(ch_ws_t *ws) {
  ch__ds_t *d = ws->udata;
  if (d == NULL) return;
  ch_client_dispose(&d->cl); /* leaves the user channel: DEVICE_DISCONNECTED */
  free(d);
}

static const ch_ws_handler_t ch__ds_ws = {
    .name = "device-sync",
    .on_open = ch__ds_open,
    .on_message = ch__ds_message,
    .on_close = ch__ds_close,
};

/* ---- the upgrade ------------------------------------------------------------ */

static void ch__ds_auth_cb(void *ud, int status, const ch_identity_t *id, const char *reason) {
  ch_http_ctx_t *x = ud;
  if (x->c == NULL) { /* the client went away while we checked */
    ch_http_reply_error(x, 401, reason);
    return;
  }
  if (status != 0) {
    ch_http_reply_error(x, status == CH_EAUTH ? 401 : 500, reason);
    return;
  }
  if (id->device_id[0] == '\0') {
    ch_http_reply_error(x, 401, "this credential names no device (mint one with chorus token --device)");
    return;
  }
  if (!(id->scopes & (CH_SCOPE_READ | CH_SCOPE_ADMIN))) {
    ch_http_reply_error(x, 403, "this credential may not read");
    return;
  }
  ch__ds_t *d = ch_xcalloc(1, sizeof(*d));
  ch_client_init(&d->cl, x->c, &ch__ds_ops, NULL);
  snprintf(d->cl.user_id, sizeof(d->cl.user_id), "%s", id->user_id);
  snprintf(d->cl.device_id, sizeof(d->cl.device_id), "%s", id->device_id);
  const char *src = ch_http_req_query_param(x->req, "source");
  if (src) snprintf(d->cl.source, sizeof(d->cl.source), "%s", src);
  d->cl.scopes = id->scopes;
  d->cl.authed = 1;
  ch_ws_accept(x, &ch__ds_ws, d);
}

static void ch__ds_upgrade(ch_http_ctx_t *x) {
  if (!x->req->upgrade) {
    ch_http_reply_error(x, 426, "WebSocket upgrade required");
    return;
  }
  const char *cred = NULL;
  if (ch_auth_cred_from_request(x->req, &cred) != 0) {
    ch_http_reply_error(x, 401, "missing credential: connect with ?token=<token> or Authorization: Bearer");
    return;
  }
  ch_proto_authenticate(x->c->loop, cred, ch__ds_auth_cb, x);
}

static const ch_http_route_t ch__ds_route = {"GET", "/ws/devices", ch__ds_upgrade, 0};

void ch_proto_routes_devsync(ch_http_router_t *r) {
  ch_http_router_add(r, ch__ds_route.method, ch__ds_route.pattern, (void *)&ch__ds_route, NULL);
}
