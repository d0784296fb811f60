/*
 * cred.c — presented credentials: where they come from in a request, what
 * kind they are, and the one-call authentication that dispatches on it.
 *
 *   Authorization: Bearer X  ──┐
 *   ?token=X                 ──┴─> X ──classify──> apikey | jwt | insecure | unknown
 *
 * Classification is by shape only, cheapest first: the "chk_" prefix, then
 * exactly three dot-separated base64url parts (the third may be empty, so an
 * unsigned "alg":"none" token is still recognised as a JWT and refused as
 * "wrong algorithm" rather than as noise), then "user:device". A JWT can
 * never contain ':' and an API key never contains '.', so the shapes are
 * disjoint. The insecure pair splits at the FIRST ':' (a user id containing
 * ':' cannot use this development shortcut).
 */
#include <string.h>
#include <strings.h>

#include "auth/auth.h"
#include "core/err.h"
#include "http/request.h"

static int ch__b64u_char(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

int ch_auth_cred_classify(const char *cred) {
  if (cred == NULL || cred[0] == '\0') return CH_AUTH_CRED_NONE;
  if (strncmp(cred, CH_AUTH_APIKEY_PREFIX, 4) == 0) return CH_AUTH_CRED_APIKEY;

  size_t part_len[3] = {0, 0, 0};
  int parts = 1, jwt = 1;
  for (const char *p = cred; *p; p++) {
    if (*p == '.') {
      if (++parts > 3) {
        jwt = 0;
        break;
      }
    } else if (ch__b64u_char((unsigned char)*p)) {
      part_len[parts - 1]++;
    } else {
      jwt = 0;
      break;
    }
  }
  if (jwt && parts == 3 && part_len[0] > 0 && part_len[1] > 0) return CH_AUTH_CRED_JWT;

  const char *colon = strchr(cred, ':');
  if (colon != NULL && ch_auth_id_valid_n(cred, (size_t)(colon - cred)) &&
      ch_auth_id_valid(colon + 1))
    return CH_AUTH_CRED_INSECURE;
  return CH_AUTH_CRED_UNKNOWN;
}

int ch_auth_cred_from_request(struct ch_http_req_s *req, const char **out) {
  *out = NULL;
  const char *h = ch_http_req_header(req, "Authorization");
  if (h != NULL && strncasecmp(h, "Bearer", 6) == 0 && (h[6] == ' ' || h[6] == '\t')) {
    const char *v = h + 6;
    while (*v == ' ' || *v == '\t') v++;
    if (*v != '\0') { /* header values come trimmed at the end */
      *out = v;
      return 0;
    }
  }
  const char *q = ch_http_req_query_param(req, "token");
  if (q != NULL && q[0] != '\0') {
    *out = q;
    return 0;
  }
  return CH_ENOTFOUND;
}

int ch_auth_authenticate(const ch_auth_secret_t *s, ch_store_t *st, const char *cred, int flags,
                         int64_t now_ms, ch_identity_t *id, const char **reason) {
  const char *why = NULL;
  int rc = 0;
  memset(id, 0, sizeof *id);
  switch (ch_auth_cred_classify(cred)) {
  case CH_AUTH_CRED_NONE:
    why = "missing credential";
    rc = CH_EAUTH;
    break;
  case CH_AUTH_CRED_JWT:
    rc = ch_auth_token_verify(s, cred, now_ms, id, &why);
    break;
  case CH_AUTH_CRED_APIKEY:
    if (st == NULL) {
      why = "api keys need the store";
      rc = CH_EUNSUPPORTED;
      break;
    }
    rc = ch_auth_apikey_resolve(st, cred, id);
    if (rc == CH_EAUTH) why = "invalid api key";
    else if (rc != 0) why = "credential store unavailable";
    break;
  case CH_AUTH_CRED_INSECURE: {
    if (!(flags & CH_AUTH_INSECURE_DEV)) {
      why = "insecure dev tokens are disabled";
      rc = CH_EAUTH;
      break;
    }
    const char *colon = strchr(cred, ':');
    size_t nu = (size_t)(colon - cred);
    memcpy(id->user_id, cred, nu);
    id->user_id[nu] = '\0';
    strcpy(id->device_id, colon + 1);
    id->scopes = CH_SCOPE_READ | CH_SCOPE_WRITE;
    id->kind = CH_AUTH_KIND_INSECURE;
    break;
  }
  default:
    why = "unrecognised credential";
    rc = CH_EAUTH;
    break;
  }
  if (rc != 0) memset(id, 0, sizeof *id);
  if (reason) *reason = rc == 0 ? NULL : why;
  return rc;
}
