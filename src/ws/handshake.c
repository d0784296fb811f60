/*
 * handshake.c — RFC 6455 opening handshake, server side (see handshake.h).
 *
 * Everything works on the caller's NUL-terminated header values in place:
 * values are trimmed by pointer/length pairs, token lists are walked
 * element by element, nothing is copied except the 24-byte key (which needs
 * a NUL for SHA-1) and the extension response value (into res).
 *
 *     "keep-alive, Upgrade"        token list walk:
 *      ^---------^ ^-----^         [p, comma) trimmed of OWS, compared
 *      element 1   element 2       case-insensitively with the wanted token
 *
 * The reasons are static strings so res can be copied and kept freely.
 */
#include "ws/handshake.h"

#include <openssl/evp.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"

#define CH__WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static int is_ows(char c) { return c == ' ' || c == '\t'; }

/* Trim spaces/tabs around s; returns the start and sets *n to the length. */
static const char *trim(const char *s, size_t *n) {
  size_t len = strlen(s);
  while (len && is_ows(*s)) s++, len--;
  while (len && is_ows(s[len - 1])) len--;
  *n = len;
  return s;
}

/*
 * Does the comma-separated list contain tok? Elements are trimmed of OWS;
 * ci selects a case-insensitive comparison.
 */
static int list_has(const char *list, const char *tok, size_t tn, int ci) {
  const char *p = list;
  for (;;) {
    const char *e = strchr(p, ',');
    const char *end = e ? e : p + strlen(p);
    const char *a = p;
    while (a < end && is_ows(*a)) a++;
    const char *b = end;
    while (b > a && is_ows(b[-1])) b--;
    size_t n = (size_t)(b - a);
    if (n == tn && (ci ? strncasecmp(a, tok, n) == 0 : memcmp(a, tok, n) == 0)) return 1;
    if (e == NULL) return 0;
    p = e + 1;
  }
}

static int is_b64(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

/* base64 of exactly 16 bytes: 22 alphabet characters and "==". */
static int key_ok(const char *k, size_t n) {
  if (n != 24 || k[22] != '=' || k[23] != '=') return 0;
  for (size_t i = 0; i < 22; i++)
    if (!is_b64(k[i])) return 0;
  return 1;
}

static int origin_ok(const char *origin, const ch_ws_handshake_cfg_t *cfg) {
  if (cfg->norigins == 0 || origin == NULL) return 1;
  size_t n;
  const char *o = trim(origin, &n);
  for (size_t i = 0; i < cfg->norigins; i++) {
    const char *a = cfg->origins[i];
    if (a == NULL) continue;
    if (strcmp(a, "*") == 0) return 1;
    if (strlen(a) == n && strncasecmp(a, o, n) == 0) return 1;
  }
  return 0;
}

static int refuse(ch_ws_handshake_res_t *res, int status, const char *reason) {
  res->status = status;
  res->reason = reason;
  return status == 403 ? CH_EPERM : status == 500 ? CH_EIO : CH_EPROTO;
}

void ch_ws_accept_key(const char *key, char out[29]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  out[0] = '\0';
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (ctx == NULL) return;
  if (EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1 &&
      EVP_DigestUpdate(ctx, key, strlen(key)) == 1 &&
      EVP_DigestUpdate(ctx, CH__WS_GUID, sizeof(CH__WS_GUID) - 1) == 1 &&
      EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 20)
    EVP_EncodeBlock((unsigned char *)out, md, 20); /* 28 chars + NUL */
  EVP_MD_CTX_free(ctx);
}

int ch_ws_handshake_check(const ch_ws_handshake_req_t *req, const ch_ws_handshake_cfg_t *cfg,
                          ch_ws_handshake_res_t *res) {
  if (res == NULL) return CH_EINVAL;
  memset(res, 0, sizeof(*res));
  if (req == NULL || cfg == NULL) {
    refuse(res, 500, "internal error");
    return CH_EINVAL;
  }
  size_t n;
  const char *v;

  if (req->method == NULL || strcmp(req->method, "GET") != 0)
    return refuse(res, 400, "method must be GET");
  if (req->http_major < 1 || (req->http_major == 1 && req->http_minor < 1))
    return refuse(res, 400, "HTTP/1.1 or later required");
  if (req->host == NULL || (trim(req->host, &n), n == 0)) return refuse(res, 400, "missing Host");
  if (req->upgrade == NULL || !list_has(req->upgrade, "websocket", 9, 1))
    return refuse(res, 400, "Upgrade must be websocket");
  if (req->connection == NULL || !list_has(req->connection, "upgrade", 7, 1))
    return refuse(res, 400, "Connection must include Upgrade");
  if (req->version == NULL) return refuse(res, 426, "missing Sec-WebSocket-Version");
  v = trim(req->version, &n);
  if (n != 2 || memcmp(v, "13", 2) != 0) return refuse(res, 426, "unsupported Sec-WebSocket-Version");
  if (req->key == NULL) return refuse(res, 400, "missing Sec-WebSocket-Key");
  v = trim(req->key, &n);
  if (!key_ok(v, n)) return refuse(res, 400, "invalid Sec-WebSocket-Key");
  if (!origin_ok(req->origin, cfg)) return refuse(res, 403, "origin not allowed");

  char key[25];
  memcpy(key, v, 24);
  key[24] = '\0';
  ch_ws_accept_key(key, res->accept);
  if (res->accept[0] == '\0') return refuse(res, 500, "internal error");

  if (req->protocol != NULL) {
    for (size_t i = 0; i < cfg->nprotocols && res->protocol == NULL; i++) {
      const char *s = cfg->protocols[i];
      if (s != NULL && *s && list_has(req->protocol, s, strlen(s), 0)) res->protocol = s;
    }
  }

  if (cfg->deflate.enabled && req->extensions != NULL) {
    ch_buf_t b = CH_BUF_INIT;
    ch_ws_deflate_negotiate(req->extensions, &cfg->deflate, &res->deflate, &b);
    if (res->deflate.enabled) {
      if (b.len < sizeof(res->extensions)) {
        memcpy(res->extensions, b.base, b.len);
        res->extensions[b.len] = '\0';
      } else {
        memset(&res->deflate, 0, sizeof(res->deflate)); /* cannot happen: max is 128 bytes */
      }
    }
    ch_buf_dispose(&b);
  }
  res->status = 101;
  return 0;
}

void ch_ws_handshake_response(const ch_ws_handshake_res_t *res, ch_buf_t *out) {
  ch_buf_printf(out,
                "HTTP/1.1 101 Switching Protocols\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                "Sec-WebSocket-Accept: %s\r\n",
                res->accept);
  if (res->protocol) ch_buf_printf(out, "Sec-WebSocket-Protocol: %s\r\n", res->protocol);
  if (res->deflate.enabled && res->extensions[0])
    ch_buf_printf(out, "Sec-WebSocket-Extensions: %s\r\n", res->extensions);
  ch_buf_append(out, "\r\n", 2);
}

static const char *status_text(int status) {
  switch (status) {
  case 400: return "Bad Request";
  case 403: return "Forbidden";
  case 426: return "Upgrade Required";
  case 500: return "Internal Server Error";
  default: return "Error";
  }
}

void ch_ws_handshake_error_response(const ch_ws_handshake_res_t *res, ch_buf_t *out) {
  const char *reason = res->reason ? res->reason : "bad request";
  ch_buf_t body = CH_BUF_INIT;
  ch_buf_append_str(&body, "{\"success\":false,\"error\":\"");
  ch_buf_append_json_str(&body, reason, strlen(reason));
  ch_buf_append_str(&body, "\"}");
  ch_buf_printf(out,
                "HTTP/1.1 %d %s\r\n"
                "Content-Type: application/json\r\n"
                "Content-Length: %zu\r\n"
                "Connection: close\r\n",
                res->status, status_text(res->status), body.len);
  if (res->status == 426)
    ch_buf_append_str(out, "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
  ch_buf_append(out, "\r\n", 2);
  ch_buf_append(out, body.base, body.len);
  ch_buf_dispose(&body);
}
