/*
 * convops.h — conversation and project operations as hub requests: the
 * store work and the access rules behind REST (proto/rest.c), the SSE stream
 * and the relay profile's project/chat resources.
 *
 *   loop: ch_hub_conv_create(l, user, scopes, body, cb, ud)
 *         │ parse + validate the body (cJSON) on the loop
 *         │   invalid ──post──> cb(ud, CH_EINVAL, "invalid", why, NULL, 0) on the next turn
 *         └─ ch_hub_submit ──> hub thread: ACL, store writes (batch transaction),
 *                              ch_hub_publish(...) of {"type":"conversation","op":...}
 *                         ──> after the commit, on l: cb(ud, 0, NULL, NULL, json, len)
 *
 * Every operation answers exactly once, through `cb` on the calling loop and
 * never before the call has returned (validation errors are posted to the
 * loop, so a caller is never re-entered). `json`/`error` are borrowed for the
 * duration of the callback.
 *
 * Outcome: status 0 and the JSON document named per operation below, or a
 * negative CH_E* status with a `code` (static string) and a human-readable
 * `error`:
 *   code          status         HTTP   when
 *   "invalid"     CH_EINVAL      400    malformed body or parameter, unknown projectId
 *   "forbidden"   CH_EPERM       403    scope missing, not owner/member/admin
 *   "not_found"   CH_ENOTFOUND   404    no such conversation / project
 *   "exists"      CH_EEXIST      409    the id is taken
 *   "store_error" other          500    the store failed (or the batch did not commit)
 *
 * Access: a conversation is readable and writable by its owner, its members
 * and admins (ch_hub_may_access); changing `members` and deleting need the
 * owner or an admin. A project is visible to its owner and admins. Reads need
 * the read scope, writes the write scope (admin implies both).
 *
 * JSON shapes (timestamps ISO 8601 UTC with milliseconds):
 *   conversation {"id","projectId","title","owner","agent","members":[...],"metadata":{...},
 *                 "createdAt","updatedAt","lastSeq","messageCount","epoch"}
 *                 (projectId/title/agent null when unset; metadata {} when unset)
 *   project      {"id","name","owner","createdAt"}
 *
 * Broadcasts (bcast type "conversation", seq 0, after the commit):
 *   {"type":"conversation","op":"created"|"updated"|"deleted","conversationId":ID,
 *    "conversation":{...},"timestamp":ISO}
 *   created -> "p:<projectId>" (when set) and "u:<member>" for every member (owner included);
 *   updated/deleted -> the same topics plus "c:<id>" (an update that moves the
 *   conversation or removes members also reaches the old project / old members).
 *   Relay rendering: resource "project" on p:, "chat" on c:, "user" on u:.
 */
#ifndef CH_HUB_CONVOPS_H
#define CH_HUB_CONVOPS_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "net/loop.h"
#include "store/store.h"

/* status 0: json/len is the answer; else code/error say why (json NULL). All borrowed. */
typedef void (*ch_hub_json_cb)(void *ud, int status, const char *code, const char *error, const char *json,
                               size_t len);

/* ---- conversations --------------------------------------------------------- */

/* body {id?, projectId?, title?, agent?, members?:[user ids], metadata?:{}} (len 0 = {}).
 * id: 1..128 bytes, a UUID when missing. projectId must name a project the user
 * owns (admin: any). Answer: the conversation. "exists" when the id is taken,
 * "forbidden" when another user holds a join claim on it. Needs write. */
void ch_hub_conv_create(ch_loop_t *l, const char *user, unsigned scopes, const char *body_json, size_t len,
                        ch_hub_json_cb cb, void *ud);
/* Answer: the conversation; with_messages adds "messages":[...] (the newest
 * events up to the hub's sync cap, oldest first, each with "seq"). Needs read. */
void ch_hub_conv_get(ch_loop_t *l, const char *user, unsigned scopes, const char *id, int with_messages,
                     ch_hub_json_cb cb, void *ud);
/* Answer: an array of conversations, newest activity first. The user's own and
 * member conversations (admin: all); project_id / search (FTS over message
 * content) filter when non-NULL and non-empty. limit 0 = 100, at most 1000.
 * A search the full-text engine rejects is "invalid". Needs read. */
void ch_hub_conv_list(ch_loop_t *l, const char *user, unsigned scopes, const char *project_id,
                      const char *search, size_t limit, size_t offset, ch_hub_json_cb cb, void *ud);
/* body {title?, agent?, projectId?, metadata?, members?}: absent or null fields
 * are left as they are; members REPLACES the member list (the owner always
 * stays) and needs owner/admin. Answer: the updated conversation. Needs write. */
void ch_hub_conv_update(ch_loop_t *l, const char *user, unsigned scopes, const char *id, const char *body_json,
                        size_t len, ch_hub_json_cb cb, void *ud);
/* Delete the conversation and its events (owner/admin). Answer: the
 * conversation as it was. Needs write. */
void ch_hub_conv_delete(ch_loop_t *l, const char *user, unsigned scopes, const char *id, ch_hub_json_cb cb,
                        void *ud);
/* A page of a conversation's events by seq. Events with seq > after, oldest
 * first, at most limit (0 = 100, at most 1000); tail = 1: the NEWEST `limit`
 * events after `after`. Answer:
 *   {"conversationId","lastSeq","epoch","messages":[{"seq",...}],"hasMore":bool}
 * hasMore: events beyond the page exist in the direction of the page (newer
 * ones for a forward page, older ones after `after` for a tail page). Needs read. */
void ch_hub_events_page(ch_loop_t *l, const char *user, unsigned scopes, const char *conv, uint64_t after,
                        size_t limit, int tail, ch_hub_json_cb cb, void *ud);

/* ---- projects -------------------------------------------------------------- */

/* body {id?, name?} (len 0 = {}): id 1..128 bytes (UUID when missing), name
 * up to 256 bytes (default: the id). Answer: the project. "exists". Needs write. */
void ch_hub_project_create(ch_loop_t *l, const char *user, unsigned scopes, const char *body_json, size_t len,
                           ch_hub_json_cb cb, void *ud);
/* Answer: an array of the user's projects (admin: all), oldest first. Needs read. */
void ch_hub_project_list(ch_loop_t *l, const char *user, unsigned scopes, ch_hub_json_cb cb, void *ud);
/* Answer: the project (owner/admin). Needs read. */
void ch_hub_project_get(ch_loop_t *l, const char *user, unsigned scopes, const char *id, ch_hub_json_cb cb,
                        void *ud);

/* ---- ephemeral events and stats (additions) ------------------------------------- */

/* Broadcast doc (a complete native JSON object, borrowed) to "c:<conv>" as
 * bcast type "event", seq 0, not stored. The conversation must exist and be
 * accessible; needs write. Answer: {"delivered":N}, N = connections joined to
 * the conversation (presence "c:<conv>") when it was published. */
void ch_hub_conv_publish_event(ch_loop_t *l, const char *user, unsigned scopes, const char *conv,
                               const char *doc, size_t len, ch_hub_json_cb cb, void *ud);
/* Broadcast doc (borrowed) to "u:<target>" as bcast type "user" (resource
 * "user", resource id target), seq 0. NO access check: the caller decides who
 * may publish to a user. Answer: {"delivered":N}, N = the user's connections on
 * the user channel (presence "u:<target>"). target must be a valid user id. */
void ch_hub_user_publish(ch_loop_t *l, const char *target, const char *doc, size_t len, ch_hub_json_cb cb,
                         void *ud);
/* Answer: {"activeRooms":N,"totalConversations":N,"totalMessages":N}:
 * activeRooms = conversations with at least one joined connection (presence
 * sets "c:*"), the totals from the store. No access check. */
void ch_hub_stats_counts(ch_loop_t *l, ch_hub_json_cb cb, void *ud);

/* Hub thread (inside a request's run): append the conversation JSON above. */
void ch_hub_conv_json(ch_buf_t *b, const ch_conv_t *cv);
/* Hub thread: append the project JSON above. */
void ch_hub_project_json(ch_buf_t *b, const ch_project_t *p);

#endif
