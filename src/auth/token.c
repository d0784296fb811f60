/*
 * token.c — JWT (HS256) access tokens: mint with libjwt, verify strictly.
 *
 *   base64url(header) "." base64url(claims) "." base64url(HMAC-SHA256(secret, first two parts))
 *   header  {"alg":"HS256","typ":"JWT"}
 *   claims  {"sub":user,"dev":device,"scope":"read write","iat":s,"exp":s,"iss":"chorus"}
 *
 * Verification does not trust the token to choose how it is checked (the
 * classic "alg":"none" and algorithm-confusion attacks): the header must say
 * exactly HS256, the 32-byte signature is recomputed here with OpenSSL and
 * compared in constant time, and only then are the claims parsed and the
 * token handed to libjwt's jwt_decode() with the key (an independent second
 * check, which must agree and must report HS256 too). Claims are read from the payload JSON with exact
 * types (cJSON), so a claim of the wrong type is refused rather than read as
 * absent. Order of checks: syntax, algorithm, signature, claims, expiry — a
 * token's content is only interpreted once it is known to be ours.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth/auth.h"
#include "auth/internal.h"
#include "core/clock.h"
#include "core/err.h"

#define CH__JWT_PART_MAX 2048 /* decoded bytes of a header or payload */

static int ch__b64u_val(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

/* Decode unpadded base64url s[0..n) into out (room for cap bytes). Returns the
 * decoded length, or -1 when malformed (bad char, n % 4 == 1, non-zero
 * trailing bits) or too long. */
static long ch__b64u_decode(const char *s, size_t n, unsigned char *out, size_t cap) {
  if (n % 4 == 1) return -1;
  size_t olen = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
  if (olen > cap) return -1;
  uint32_t acc = 0;
  int bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    int v = ch__b64u_val((unsigned char)s[i]);
    if (v < 0) return -1;
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (unsigned char)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  if (acc != 0) return -1; /* canonical encoding only */
  return (long)o;
}

int ch_auth_token_mint(const ch_auth_secret_t *s, const char *user, const char *device,
                       unsigned scopes, int64_t ttl_s, int64_t now_ms, char **out) {
  jwt_t *jwt = NULL;
  int rc = 0;
  char scope[CH_AUTH_SCOPES_MAX];
  *out = NULL;
  if (!ch_auth_id_valid(user) || (device != NULL && !ch_auth_id_valid(device)) || scopes == 0 ||
      (scopes & ~CH_SCOPE_ALL) != 0 || ttl_s < 0 || ttl_s > (int64_t)100 * 365 * 86400)
    return CH_EINVAL;
  if (now_ms == 0) now_ms = ch_clock_wall_ms();
  ch_auth_scopes_format(scopes, scope);
  long iat = (long)(now_ms / 1000);
  if (jwt_new(&jwt) != 0) {
    rc = CH_EIO;
    goto Exit;
  }
  if (jwt_add_grant(jwt, "iss", CH_AUTH_ISSUER) != 0 || jwt_add_grant(jwt, "sub", user) != 0 ||
      (device != NULL && jwt_add_grant(jwt, "dev", device) != 0) ||
      jwt_add_grant(jwt, "scope", scope) != 0 || jwt_add_grant_int(jwt, "iat", iat) != 0 ||
      (ttl_s > 0 && jwt_add_grant_int(jwt, "exp", iat + (long)ttl_s) != 0) ||
      jwt_set_alg(jwt, JWT_ALG_HS256, s->key, (int)sizeof s->key) != 0) {
    rc = CH_EIO;
    goto Exit;
  }
  *out = jwt_encode_str(jwt);
  if (*out == NULL) rc = CH_EIO;
Exit:
  if (jwt) jwt_free(jwt); /* libjwt wipes nothing; the key copy it held is freed here */
  return rc;
}

/* Decode one part to a JSON object. NULL when not an object. */
static cJSON *ch__part_json(const char *p, size_t n) {
  unsigned char buf[CH__JWT_PART_MAX];
  long len = ch__b64u_decode(p, n, buf, sizeof buf);
  if (len <= 0) return NULL;
  cJSON *j = cJSON_ParseWithLength((const char *)buf, (size_t)len);
  if (j != NULL && !cJSON_IsObject(j)) {
    cJSON_Delete(j);
    j = NULL;
  }
  return j;
}

/* Integer-valued JSON number in [0, 2^53]; else -1. */
static int64_t ch__json_int(const cJSON *v) {
  if (!cJSON_IsNumber(v)) return -1;
  double d = v->valuedouble;
  if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(int64_t)d) return -1;
  return (int64_t)d;
}

int ch_auth_token_verify(const ch_auth_secret_t *s, const char *token, int64_t now_ms,
                         ch_identity_t *id, const char **reason) {
  const char *why = NULL;
  cJSON *hdr = NULL, *claims = NULL;
  jwt_t *jwt = NULL;
  memset(id, 0, sizeof *id);

  if (token == NULL) {
    why = "malformed token";
    goto Exit;
  }
  size_t n = strnlen(token, CH_AUTH_TOKEN_MAX + 1);
  const char *d1 = memchr(token, '.', n);
  const char *d2 = d1 ? memchr(d1 + 1, '.', n - (size_t)(d1 + 1 - token)) : NULL;
  if (n > CH_AUTH_TOKEN_MAX || d1 == NULL || d2 == NULL || d1 == token || d2 == d1 + 1 ||
      memchr(d2 + 1, '.', n - (size_t)(d2 + 1 - token)) != NULL) {
    why = "malformed token";
    goto Exit;
  }
  const char *sig = d2 + 1;
  size_t nsig = n - (size_t)(sig - token);

  hdr = ch__part_json(token, (size_t)(d1 - token));
  if (hdr == NULL) {
    why = "malformed token";
    goto Exit;
  }
  const cJSON *alg = cJSON_GetObjectItemCaseSensitive(hdr, "alg");
  if (!cJSON_IsString(alg)) {
    why = "malformed token";
    goto Exit;
  }
  if (strcmp(alg->valuestring, "HS256") != 0) {
    why = "wrong algorithm";
    goto Exit;
  }

  /* Signature: recompute over "header.payload" and compare in constant time. */
  unsigned char given[64], mac[EVP_MAX_MD_SIZE];
  unsigned int maclen = 0;
  long ngiven = ch__b64u_decode(sig, nsig, given, sizeof given);
  if (HMAC(EVP_sha256(), s->key, (int)sizeof s->key, (const unsigned char *)token,
           (size_t)(d2 - token), mac, &maclen) == NULL ||
      ngiven != 32 || maclen != 32 || CRYPTO_memcmp(given, mac, 32) != 0) {
    why = "bad signature";
    goto Exit;
  }

  claims = ch__part_json(d1 + 1, (size_t)(d2 - d1 - 1));
  if (claims == NULL) {
    why = "malformed token";
    goto Exit;
  }

  /* Second, independent check by libjwt with the same key. */
  if (jwt_decode(&jwt, token, s->key, (int)sizeof s->key) != 0 || jwt == NULL) {
    why = "malformed token";
    goto Exit;
  }
  if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
    why = "wrong algorithm";
    goto Exit;
  }

  const cJSON *iss = cJSON_GetObjectItemCaseSensitive(claims, "iss");
  const cJSON *sub = cJSON_GetObjectItemCaseSensitive(claims, "sub");
  const cJSON *dev = cJSON_GetObjectItemCaseSensitive(claims, "dev");
  const cJSON *scope = cJSON_GetObjectItemCaseSensitive(claims, "scope");
  const cJSON *exp = cJSON_GetObjectItemCaseSensitive(claims, "exp");
  unsigned scopes = 0;
  int64_t exp_s = 0;
  if (!cJSON_IsString(iss) || strcmp(iss->valuestring, CH_AUTH_ISSUER) != 0 ||
      !cJSON_IsString(sub) || !ch_auth_id_valid(sub->valuestring) ||
      (dev != NULL && (!cJSON_IsString(dev) || !ch_auth_id_valid(dev->valuestring))) ||
      !cJSON_IsString(scope) || ch_auth_scopes_parse(scope->valuestring, &scopes) != 0 ||
      (exp != NULL && (exp_s = ch__json_int(exp)) <= 0)) {
    why = "invalid claims";
    goto Exit;
  }
  if (exp != NULL && now_ms >= exp_s * 1000) {
    why = "token expired";
    goto Exit;
  }

  strcpy(id->user_id, sub->valuestring);
  if (dev != NULL) strcpy(id->device_id, dev->valuestring);
  id->scopes = scopes;
  id->kind = CH_AUTH_KIND_TOKEN;
  id->expires_ms = exp != NULL ? exp_s * 1000 : 0;

Exit:
  if (jwt) jwt_free(jwt);
  cJSON_Delete(hdr);
  cJSON_Delete(claims);
  if (why != NULL) memset(id, 0, sizeof *id);
  if (reason) *reason = why;
  return why == NULL ? 0 : CH_EAUTH;
}
