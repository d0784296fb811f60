/*
 * ws_handshake.c — libFuzzer harness for ch_ws_handshake_check and
 * ch_ws_deflate_negotiate.
 *
 * Input layout:
 *
 *     byte 0   policy: bit0 deflate on, bit1 force server_no_context_takeover,
 *              bit2 force client_no_context_takeover, bit3 origin allow-list,
 *              bit4 subprotocols, bits 5-7 HTTP minor version (major is 1)
 *     byte 1   bits 0-3 / 4-7: server / client window bits in the policy (0..15)
 *     rest     '\n'-separated fields: method, host, upgrade, connection, key,
 *              version, origin, protocol, extensions (missing = absent header)
 *
 * Invariants: rc == 0 exactly when status is 101; a 101 carries a 28-char
 * accept, a protocol from the server's list (or none) and sane deflate
 * parameters; a refusal has a reason and one of 400/403/426. Both response
 * renderers run. The whole remaining input is also negotiated directly, and
 * every accepted response value, offered back to a permissive server, must
 * negotiate to the very same parameters (the response is self-consistent).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"
#include "ws/handshake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const origins[] = {"https://app.example.com", "http://localhost:8080"};
static const char *const protos[] = {"chorus.v2", "chorus.v1", "json"};

static void check_params(const ch_ws_deflate_params_t *p, const char *value) {
  if (!p->enabled) return;
  if (p->server_max_window_bits < 9 || p->server_max_window_bits > 15) abort();
  if (p->client_max_window_bits < 8 || p->client_max_window_bits > 15) abort();
  /* Offer the response back to a server with no limits: same outcome. */
  ch_ws_deflate_cfg_t open;
  memset(&open, 0, sizeof(open));
  open.enabled = 1;
  ch_ws_deflate_params_t q;
  if (ch_ws_deflate_negotiate(value, &open, &q, NULL) != 0) abort();
  if (memcmp(p, &q, sizeof(q)) != 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  ch_ws_handshake_cfg_t cfg;
  memset(&cfg, 0, sizeof(cfg));
  cfg.deflate.enabled = data[0] & 1;
  cfg.deflate.server_no_context_takeover = (data[0] >> 1) & 1;
  cfg.deflate.client_no_context_takeover = (data[0] >> 2) & 1;
  if (data[0] & 8) cfg.origins = origins, cfg.norigins = 2;
  if (data[0] & 16) cfg.protocols = protos, cfg.nprotocols = 3;
  cfg.deflate.server_max_window_bits = data[1] & 15;
  cfg.deflate.client_max_window_bits = data[1] >> 4;

  /* Whole rest as one NUL-terminated string. */
  char *s = malloc(size - 2 + 1);
  memcpy(s, data + 2, size - 2);
  s[size - 2] = '\0';

  /* Direct negotiation over the whole input. */
  ch_ws_deflate_params_t p;
  ch_buf_t v = CH_BUF_INIT;
  if (ch_ws_deflate_negotiate(s, &cfg.deflate, &p, &v) != 0) abort();
  if (p.enabled != (v.len > 0)) abort();
  check_params(&p, ch_buf_cstr(&v));
  ch_buf_dispose(&v);

  /* Split into fields (in place). */
  const char *f[9] = {0};
  char *cur = s;
  for (int i = 0; i < 9 && cur != NULL; i++) {
    f[i] = cur;
    char *nl = strchr(cur, '\n');
    if (nl) *nl++ = '\0';
    cur = nl;
  }
  ch_ws_handshake_req_t req = {f[0], 1, (data[0] >> 5) & 7, f[1], f[2], f[3],
                               f[4], f[5], f[6], f[7], f[8]};
  ch_ws_handshake_res_t res;
  int rc = ch_ws_handshake_check(&req, &cfg, &res);
  ch_buf_t out = CH_BUF_INIT;
  if (rc == 0) {
    if (res.status != 101 || res.reason != NULL || strlen(res.accept) != 28) abort();
    if (res.protocol != NULL) {
      size_t i = 0;
      while (i < cfg.nprotocols && res.protocol != cfg.protocols[i]) i++;
      if (i == cfg.nprotocols) abort();
    }
    if (res.deflate.enabled && !cfg.deflate.enabled) abort();
    if (res.deflate.enabled != (res.extensions[0] != '\0')) abort();
    check_params(&res.deflate, res.extensions);
    ch_ws_handshake_response(&res, &out);
  } else {
    if (res.reason == NULL) abort();
    int want = res.status == 403 ? CH_EPERM : CH_EPROTO;
    if ((res.status != 400 && res.status != 403 && res.status != 426) || rc != want) abort();
    ch_ws_handshake_error_response(&res, &out);
  }
  /* 101 ends with the blank line, an error with the JSON body's '}' */
  const char *tail = rc == 0 ? "\r\n\r\n" : "\"}";
  size_t tl = strlen(tail);
  if (out.len < 20 || memcmp(out.base + out.len - tl, tail, tl) != 0) abort();
  ch_buf_dispose(&out);
  free(s);
  return 0;
}
