/*
 * handshake.h — the WebSocket opening handshake (RFC 6455 4.2), server side.
 *
 * Pure code: the HTTP layer parses the request and hands over the relevant
 * header values; this module decides 101 or an error status and renders
 * the response bytes. No sockets, no loop, no allocation except into the
 * caller's ch_buf_t.
 *
 *     http request ──> ch_ws_handshake_req_t ──ch_ws_handshake_check──> ch_ws_handshake_res_t
 *                                                                            │
 *                      101: ch_ws_handshake_response()  <────────────────────┤
 *                      4xx: ch_ws_handshake_error_response() <───────────────┘
 *
 * Checks, in this order (the first failure decides the status):
 *   400  method is not GET; HTTP version below 1.1; Host absent or empty;
 *        Upgrade lacks the token "websocket"; Connection lacks the token
 *        "upgrade" (both comma-separated token lists, case-insensitive)
 *   426  Sec-WebSocket-Version absent or not exactly 13 (the error
 *        response carries "Sec-WebSocket-Version: 13")
 *   400  Sec-WebSocket-Key absent, or not the base64 of exactly 16 bytes
 *        (22 base64 characters + "==")
 *   403  Origin present and not in the allow-list. A request WITHOUT an
 *        Origin header is allowed: only browsers send it, and a non-browser
 *        client could forge any value anyway. Entries compare
 *        case-insensitively and exactly (no trailing slash or default-port
 *        normalisation); "*" allows every origin.
 * Then the subprotocol (first of the SERVER's list that the client offers;
 * exact, case-sensitive match; none = no header) and permessage-deflate
 * (see deflate.h; a bad extensions header never fails the handshake).
 * Surrounding spaces/tabs in header values are ignored.
 */
#ifndef CH_WS_HANDSHAKE_H
#define CH_WS_HANDSHAKE_H

#include <stddef.h>

#include "core/buf.h"
#include "ws/deflate.h"

/* The request as the HTTP layer saw it. All strings are borrowed for the
 * duration of ch_ws_handshake_check() only. */
typedef struct {
  const char *method;         /* "GET" (compared exactly) */
  int http_major, http_minor; /* must be >= 1.1 */
  const char *host, *upgrade, *connection, *key, *version, *origin, *protocol, *extensions;
  /* NUL-terminated header values or NULL if absent; repeated headers already joined with ", " */
} ch_ws_handshake_req_t;

typedef struct {
  const char *const *origins; /* allow-list, borrowed; entries exact, case-insensitive, "*" = all */
  size_t norigins;            /* 0 = allow any origin */
  const char *const *protocols; /* supported subprotocols in preference order; borrowed, must
                                   outlive every res that points into it */
  size_t nprotocols;
  ch_ws_deflate_cfg_t deflate; /* permessage-deflate policy (deflate.enabled = 0: never) */
} ch_ws_handshake_cfg_t;

typedef struct {
  int status;          /* 101, or 400 / 403 / 426 (500 only if SHA-1 itself fails) */
  const char *reason;  /* static text naming the problem when status != 101, else NULL */
  char accept[29];     /* Sec-WebSocket-Accept value (NUL-terminated), "" unless 101 */
  const char *protocol; /* selected subprotocol: points into cfg->protocols, or NULL */
  ch_ws_deflate_params_t deflate; /* .enabled when negotiated */
  char extensions[160]; /* Sec-WebSocket-Extensions response value, "" when none */
} ch_ws_handshake_res_t;

/*
 * Validate the request against cfg and fill res (every field is set).
 * Returns 0 when res->status is 101; CH_EPROTO for 400/426; CH_EPERM for
 * 403; CH_EIO for 500; CH_EINVAL if an argument is NULL (res->status is
 * then 500 if res is non-NULL).
 */
int ch_ws_handshake_check(const ch_ws_handshake_req_t *req, const ch_ws_handshake_cfg_t *cfg,
                          ch_ws_handshake_res_t *res);

/* Append the full "HTTP/1.1 101 Switching Protocols" response: Upgrade,
 * Connection, Sec-WebSocket-Accept, and Sec-WebSocket-Protocol /
 * Sec-WebSocket-Extensions when negotiated, then the blank line. */
void ch_ws_handshake_response(const ch_ws_handshake_res_t *res, ch_buf_t *out);

/* Append a full HTTP error response for res->status with
 * Content-Type: application/json, Content-Length, Connection: close, and the
 * body {"success":false,"error":"<reason>"}. A 426 also carries
 * "Upgrade: websocket" and "Sec-WebSocket-Version: 13". */
void ch_ws_handshake_error_response(const ch_ws_handshake_res_t *res, ch_buf_t *out);

/* Sec-WebSocket-Accept for key: base64(SHA-1(key + the RFC 6455 GUID)),
 * 28 characters + NUL. key is used as given (no trimming). On an OpenSSL
 * failure out is "". */
void ch_ws_accept_key(const char *key, char out[29]);

#endif
