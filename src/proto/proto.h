/*
 * proto.h — what every client profile shares: authentication of a presented
 * credential (synchronously for tokens, through the hub thread for API keys,
 * which need the store) and the process-wide auth settings.
 */
#ifndef CH_PROTO_PROTO_H
#define CH_PROTO_PROTO_H

#include "auth/auth.h"
#include "http/server.h"
#include "net/loop.h"

typedef struct {
  ch_auth_secret_t secret; /* the data directory's signing secret */
  int auth_flags;          /* CH_AUTH_INSECURE_DEV when --insecure-dev */
} ch_proto_settings_t;
extern ch_proto_settings_t ch_proto_settings;

/* Called on the loop with the outcome: status 0 and id, or CH_EAUTH with a
 * reason safe to show, or another code. */
typedef void (*ch_proto_auth_cb)(void *ud, int status, const ch_identity_t *id, const char *reason);

/* Authenticate cred; cb runs now (tokens) or later on `loop` (API keys). */
void ch_proto_authenticate(ch_loop_t *loop, const char *cred, ch_proto_auth_cb cb, void *ud);

/* HTTP routes: authenticate the request's credential (Bearer or ?token=) and
 * check scopes (any of `need`; 0 = any valid credential). On success calls
 * ok(x, id) — possibly later, after an API-key lookup; on failure answers
 * 401/403 with a JSON body itself. */
typedef void (*ch_proto_http_ok_cb)(ch_http_ctx_t *x, const ch_identity_t *id);
void ch_proto_http_authenticate(ch_http_ctx_t *x, unsigned need, ch_proto_http_ok_cb ok);

/* Route tables of the profiles. */
void ch_proto_routes_native(ch_http_router_t *r);
void ch_proto_routes_rest(ch_http_router_t *r); /* REST, SSE, /ws/stats, /api/chat (rest.c) */
void ch_proto_routes_devsync(ch_http_router_t *r); /* profile device-sync: /ws/devices (devsync.c) */
void ch_proto_routes_relay(ch_http_router_t *r);   /* profile relay: /ws/relay (relay.c) */

/* The agent-facing routes (agents.c): profile agent-ws (/api/<agent>/ws),
 * profile command (/ws/command) and GET /api/admin/usage; takes the settings
 * command-agent, rate-limit and rate-burst from cfg (read once, here). */
struct ch_config_s;
void ch_proto_routes_agents(ch_http_router_t *r, const struct ch_config_s *cfg);
/* Append {"<agent>":N,...}: authenticated agent-ws connections per configured
 * agent (any thread; for GET /api/health). */
void ch_proto_agentws_connections_json(ch_buf_t *out);
/* Hub thread: append the agents' Prometheus lines (chorus_agent_requests_total{agent=...},
 * chorus_agent_chars_total{agent=...}, chorus_agent_active, chorus_agent_rate_limited_total). */
void ch_proto_agents_metrics(ch_buf_t *out);

#endif
