/*
 * ops.h — hub operations shared by every entry point (WebSocket profiles,
 * REST, SSE): each validates on the calling loop, runs its store work on the
 * hub thread inside the batch transaction, publishes after the commit, and
 * answers through a callback on the calling loop.
 */
#ifndef CH_HUB_OPS_H
#define CH_HUB_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "net/loop.h"
#include "store/store.h"

/* 1 when user (with scopes) may read/write conversation cv: owner, member or admin. */
int ch_hub_may_access(const ch_conv_t *cv, const char *user, unsigned scopes);
/* Append the JSON object of a stored event: its body with "seq" first. */
void ch_hub_event_json(ch_buf_t *b, const ch_event_t *ev);

/* ---- send a message --------------------------------------------------------- */

struct cJSON;

typedef struct {
  const char *conv;          /* conversation id (1..128 bytes) */
  const char *message_json;  /* the message object as the client sent it (borrowed) */
  size_t len;
  struct cJSON *message;     /* or, already parsed: the message object, detached from any parent;
                                TAKEN by ch_hub_send_message (then message_json is not read) */
  const char *user_id;       /* author */
  const char *device_id;
  const char *source;        /* default message.source */
  unsigned scopes;           /* of the credential */
  const char *agent;         /* agent to answer this message, or NULL: the conversation's default */
} ch_msg_in_t;

typedef struct {
  int status;                /* 0, or CH_E*: then code/error say why */
  const char *code;          /* "invalid", "forbidden", "store_error" */
  const char *error;         /* human-readable */
  const char *conversation_id;
  uint64_t seq;
  const char *id;            /* server message id */
  const char *client_id;     /* the client's id (idempotency key), or NULL */
  int duplicate;             /* the client id was already stored: nothing new was written */
  const char *message_json;  /* the stored message object, "seq" included */
  size_t message_len;
} ch_msg_out_t;

/* cb runs on `loop` (immediately for validation errors); out is valid during the call. */
typedef void (*ch_msg_cb)(void *ud, const ch_msg_out_t *out);

/* Validate, fill the server's fields (id, conversationId, role, source,
 * timestamp, userId, deviceId), append durably, broadcast to "c:<conv>",
 * then call cb. Idempotent on message.id. */
void ch_hub_send_message(ch_loop_t *loop, const ch_msg_in_t *in, ch_msg_cb cb, void *ud);

/* Store a custom event durably (kind CH_EV_CUSTOM, type = event name) and
 * broadcast it to "c:<conv>" with its seq: the stored document is `doc` (the
 * native {"type":"event",...} JSON, borrowed) with "seq" put first. Same ACL
 * and callback as ch_hub_send_message (out->message_json is the stored document). */
void ch_hub_store_event(ch_loop_t *loop, const ch_msg_in_t *in, const char *event_name, ch_msg_cb cb,
                        void *ud);

#endif
