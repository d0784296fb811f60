/*
 * userchan.h — the user channel: everything addressed to one user's
 * connected devices, on topic "u:<user>".
 *
 * A client that starts the channel is one of its user's DEVICES. The hub
 * keeps the devices of each user in the presence set "u:<user>" (so REST can
 * count who a publish reaches) and tells every device when another connects
 * or goes:
 *
 *   start(cl) ─ subscribe to "u:<user>" NOW on cl's loop, state PENDING
 *               (events arriving meanwhile are buffered)
 *             ─ hub thread: snapshot = the user's devices already there,
 *               presence add, publish DEVICE_CONNECTED (excluding cl), seq S
 *   ready ───── ops->ready(devices) first, then the buffered events not
 *               already reflected in the snapshot (seq ≤ S dropped), LIVE
 *   stop(cl) ── unsubscribe; hub: presence remove, publish DEVICE_DISCONNECTED
 *               (ch_client_dispose calls stop, so a dropped socket counts)
 *
 * Device events carry a hub-wide increasing seq (assigned on the hub thread,
 * published in that order), so a device connecting at the same time as
 * another hears of it exactly once: in its snapshot or as an event.
 *
 * Every event on the channel is one JSON document, the envelope
 *   {"type":"<TYPE>","payload":{...},"timestamp":"<ISO 8601>"}
 * — the device events below, anything REST publishes for the user
 * (POST /api/users/:userId/events), and what a device fans out to its
 * siblings (ch_userchan_publish). It is encoded once per publish; a profile
 * forwards the shared frame (ch_bcast_frame(b, CH_FMT_NATIVE)) or
 * translates. Device event payload:
 *   {"userId":"u1","deviceId":"d1","source":"ipad","at":"<ISO 8601>"}
 * ("source" only when the connection named one; "at": when it connected,
 * resp. disconnected).
 *
 * Threads: start/stop/publish on the client's loop; the device table lives
 * on the hub thread.
 */
#ifndef CH_HUB_USERCHAN_H
#define CH_HUB_USERCHAN_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "hub/bcast.h"
#include "hub/client.h"

#define CH_USERCHAN_CONNECTED "DEVICE_CONNECTED"
#define CH_USERCHAN_DISCONNECTED "DEVICE_DISCONNECTED"
/* The bcast type of every envelope on the channel (device events, fan-outs,
 * REST's ch_hub_user_publish). Other hub events reach "u:<user>" too — e.g.
 * {"type":"conversation","op":...} (bcast type "conversation", hub/convops.h);
 * a profile that speaks only envelopes filters on this type. */
#define CH_USERCHAN_BCAST_TYPE "user"

typedef struct ch_userchan_s ch_userchan_t; /* per client on the channel (cl->userchan); private */

/* One connected device of a user (a connection, really: two tabs of one
 * device are two entries). */
typedef struct {
  uint64_t client_id;
  char user_id[129];
  char device_id[129];
  char source[33];     /* "" when the connection named none */
  int64_t at_ms;       /* when it connected, wall clock UTC ms */
} ch_userchan_device_t;

/* How a profile renders the channel. */
typedef struct ch_userchan_ops_s {
  /* One event for this client (not its own: exclusions are applied). b is
   * borrowed; take a reference to keep it. Required. */
  void (*event)(ch_client_t *cl, ch_bcast_t *b);
  /* The answer to start: the user's devices that were connected before this
   * one (this one excluded), oldest first. devs valid during the call only.
   * req_id is start's (NULL if none). Required. */
  void (*ready)(ch_client_t *cl, const char *req_id, const ch_userchan_device_t *devs, size_t n);
} ch_userchan_ops_t;

/* A renderer for profiles whose ch_client_ops_t speak native JSON (/ws):
 * events through cl->ops->deliver(cl, NULL, b) — that deliver must accept
 * sub == NULL and send the CH_FMT_NATIVE frame — and the answer through
 * cl->ops->send_json as
 *   {"type":"subscribed","channel":"user","id":R,"userId":U,"devices":[<payload>,...]}
 * ("id" only when req_id is set). */
extern const ch_userchan_ops_t ch_userchan_native_ops;

/*
 * Make cl (authenticated: user_id set) a device on its user's channel. ops is
 * static (borrowed for the life of the channel); req_id (may be NULL) is
 * copied and handed back to ops->ready. Loop thread of cl.
 *   0          started; ops->ready follows (unless cl goes first)
 *   CH_EEXIST  cl is already on the channel (nothing changes)
 *   CH_EINVAL  cl has no valid user id
 */
int ch_userchan_start(ch_client_t *cl, const ch_userchan_ops_t *ops, const char *req_id);
/* Leave the channel (no-op when not on it): buffered events are dropped and
 * the other devices get DEVICE_DISCONNECTED. Called by ch_client_dispose. */
void ch_userchan_stop(ch_client_t *cl);
/* 1 when cl is on the channel (started, answered or not). */
int ch_userchan_active(const ch_client_t *cl);

/*
 * Fan one envelope (json, borrowed, copied once) out to every device of cl's
 * user but cl itself — on every loop, one shared encoding (bcast type
 * CH_USERCHAN_BCAST_TYPE). Ephemeral: nothing is stored. Loop thread of cl.
 *   0 or CH_EINVAL (cl has no user id)
 */
int ch_userchan_publish(ch_client_t *cl, const char *json, size_t len);

/* "u:<user>" into out (CH_USERCHAN_TOPIC_MAX bytes). */
#define CH_USERCHAN_TOPIC_MAX 140
void ch_userchan_topic(char *out, const char *user);
/* Append a device payload {"userId","deviceId","source"?,"at"} (at = at_ms). */
void ch_userchan_device_json(ch_buf_t *b, const ch_userchan_device_t *d, int64_t at_ms);
/* Append an envelope {"type":T,"payload":P,"timestamp":ISO(ts_ms)}; payload
 * is JSON text (NULL: {}). */
void ch_userchan_envelope(ch_buf_t *b, const char *type, const char *payload, size_t len, int64_t ts_ms);

#endif
