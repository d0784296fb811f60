/*
 * test_token.c — auth/token.c and the id/scope rules it relies on: mint and
 * verify round trip (claims as libjwt sees them too), expiry at the exact
 * boundary, tampering (payload swapped, signature bits, other key), algorithm
 * refusals (none, HS512 with the right key, a header that lies), malformed
 * shapes, claim types; scope parsing/formatting; id validation.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth/auth.h"
#include "core/err.h"

#define NOW ((int64_t)1700000000000) /* 2023-11-14T22:13:20Z */

static ch_auth_secret_t secret_a, secret_b;

static int setup(void **state) {
  (void)state;
  for (int i = 0; i < CH_AUTH_SECRET_LEN; i++) {
    secret_a.key[i] = (unsigned char)(i * 7 + 1);
    secret_b.key[i] = (unsigned char)(i * 7 + 2);
  }
  return 0;
}

/* ---- hand-made tokens, to reach paths libjwt would never produce ---- */

static void b64u(const unsigned char *p, size_t n, char *out) {
  static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  size_t o = 0, i = 0;
  for (; i + 2 < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
    out[o++] = a[v >> 18];
    out[o++] = a[(v >> 12) & 63];
    out[o++] = a[(v >> 6) & 63];
    out[o++] = a[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)p[i] << 16;
    out[o++] = a[v >> 18];
    out[o++] = a[(v >> 12) & 63];
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
    out[o++] = a[v >> 18];
    out[o++] = a[(v >> 12) & 63];
    out[o++] = a[(v >> 6) & 63];
  }
  out[o] = '\0';
}

/* header.claims.HMAC-SHA256(key) built by hand. */
static char *forge(const char *header, const char *claims, const ch_auth_secret_t *key) {
  static char tok[4096];
  char h[1024], c[2048], sig[64];
  b64u((const unsigned char *)header, strlen(header), h);
  b64u((const unsigned char *)claims, strlen(claims), c);
  snprintf(tok, sizeof tok, "%s.%s", h, c);
  unsigned char mac[32];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key->key, 32, (unsigned char *)tok, strlen(tok), mac, &n);
  b64u(mac, 32, sig);
  strcat(tok, ".");
  strcat(tok, sig);
  return tok;
}

static const char *verify_reason(const char *tok, int64_t now) {
  ch_identity_t id;
  const char *why = "unset";
  int rc = ch_auth_token_verify(&secret_a, tok, now, &id, &why);
  if (rc == 0) {
    assert_null(why);
    return NULL;
  }
  assert_int_equal(rc, CH_EAUTH);
  assert_non_null(why);
  assert_string_equal(id.user_id, ""); /* zeroed on failure */
  return why;
}

static const char *HDR = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

/* ------------------------------------------------------------------ */

static void test_round_trip(void **state) {
  (void)state;
  char *tok = NULL;
  assert_int_equal(ch_auth_token_mint(&secret_a, "alice@example.com", "dev-laptop_1",
                                      CH_SCOPE_READ | CH_SCOPE_WRITE, 3600, NOW, &tok),
                   0);
  assert_non_null(tok);
  assert_int_equal(ch_auth_cred_classify(tok), CH_AUTH_CRED_JWT);

  ch_identity_t id;
  const char *why = "x";
  assert_int_equal(ch_auth_token_verify(&secret_a, tok, NOW + 1000, &id, &why), 0);
  assert_null(why);
  assert_string_equal(id.user_id, "alice@example.com");
  assert_string_equal(id.device_id, "dev-laptop_1");
  assert_int_equal(id.scopes, CH_SCOPE_READ | CH_SCOPE_WRITE);
  assert_int_equal(id.kind, CH_AUTH_KIND_TOKEN);
  assert_true(id.expires_ms == NOW + 3600 * 1000);
  assert_string_equal(id.key_id, "");

  /* The claims as an independent decoder (libjwt) reads them. */
  jwt_t *j = NULL;
  assert_int_equal(jwt_decode(&j, tok, secret_a.key, 32), 0);
  assert_int_equal(jwt_get_alg(j), JWT_ALG_HS256);
  assert_string_equal(jwt_get_grant(j, "sub"), "alice@example.com");
  assert_string_equal(jwt_get_grant(j, "dev"), "dev-laptop_1");
  assert_string_equal(jwt_get_grant(j, "scope"), "read write");
  assert_string_equal(jwt_get_grant(j, "iss"), "chorus");
  assert_true(jwt_get_grant_int(j, "iat") == NOW / 1000);
  assert_true(jwt_get_grant_int(j, "exp") == NOW / 1000 + 3600);
  jwt_free(j);

  /* Another secret: bad signature. */
  assert_int_equal(ch_auth_token_verify(&secret_b, tok, NOW, &id, &why), CH_EAUTH);
  assert_string_equal(why, "bad signature");
  free(tok);
}

static void test_no_expiry_no_device_admin(void **state) {
  (void)state;
  char *tok = NULL;
  assert_int_equal(ch_auth_token_mint(&secret_a, "ops", NULL, CH_SCOPE_ADMIN, 0, NOW, &tok), 0);
  jwt_t *j = NULL;
  assert_int_equal(jwt_decode(&j, tok, secret_a.key, 32), 0);
  errno = 0;
  (void)jwt_get_grant_int(j, "exp");
  assert_int_equal(errno, ENOENT); /* ttl 0: no exp claim at all */
  assert_null(jwt_get_grant(j, "dev"));
  assert_string_equal(jwt_get_grant(j, "scope"), "read write admin");
  jwt_free(j);
  ch_identity_t id;
  /* Valid a century later. */
  assert_int_equal(ch_auth_token_verify(&secret_a, tok, NOW + (int64_t)100 * 365 * 86400000, &id, NULL), 0);
  assert_string_equal(id.user_id, "ops");
  assert_string_equal(id.device_id, "");
  assert_int_equal(id.scopes, CH_SCOPE_ALL);
  assert_true(id.expires_ms == 0);
  free(tok);
}

static void test_expiry_boundary(void **state) {
  (void)state;
  char *tok = NULL;
  assert_int_equal(ch_auth_token_mint(&secret_a, "u1", "d1", CH_SCOPE_READ, 60, NOW, &tok), 0);
  int64_t exp_ms = NOW + 60000;
  assert_null(verify_reason(tok, exp_ms - 1));
  assert_string_equal(verify_reason(tok, exp_ms), "token expired");
  assert_string_equal(verify_reason(tok, exp_ms + 86400000), "token expired");
  free(tok);
}

static void test_tampered(void **state) {
  (void)state;
  char *tok = NULL;
  assert_int_equal(ch_auth_token_mint(&secret_a, "bob", "phone", CH_SCOPE_READ, 3600, NOW, &tok), 0);
  assert_null(verify_reason(tok, NOW));

  /* Payload swapped for one claiming admin; signature kept. */
  char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
  char claims[512], forged[2048];
  const char *evil = "{\"iss\":\"chorus\",\"sub\":\"bob\",\"scope\":\"admin\"}";
  b64u((const unsigned char *)evil, strlen(evil), claims);
  snprintf(forged, sizeof forged, "%.*s.%s%s", (int)(d1 - tok), tok, claims, d2);
  assert_string_equal(verify_reason(forged, NOW), "bad signature");

  /* Each signature character changed in turn. */
  size_t sig0 = (size_t)(d2 + 1 - tok), n = strlen(tok);
  for (size_t i = sig0; i < n; i++) {
    char t[2048];
    strcpy(t, tok);
    t[i] = t[i] == 'A' ? 'B' : 'A';
    assert_string_equal(verify_reason(t, NOW), "bad signature");
  }
  /* Truncated / extended / empty signature. */
  char t[2048];
  snprintf(t, sizeof t, "%.*s", (int)(n - 1), tok);
  assert_string_equal(verify_reason(t, NOW), "bad signature");
  snprintf(t, sizeof t, "%sAAAA", tok);
  assert_string_equal(verify_reason(t, NOW), "bad signature");
  snprintf(t, sizeof t, "%.*s", (int)sig0, tok);
  assert_string_equal(verify_reason(t, NOW), "bad signature");
  /* Any payload byte flipped. */
  for (char *p = d1 + 1; p < d2; p++) {
    strcpy(t, tok);
    t[p - tok] = *p == 'x' ? 'y' : 'x';
    const char *why = verify_reason(t, NOW);
    assert_non_null(why);
    assert_string_equal(why, "bad signature");
  }
  free(tok);
}

static void test_wrong_algorithms(void **state) {
  (void)state;
  /* alg none, as libjwt makes it: "h.c." with an empty signature. */
  jwt_t *j = NULL;
  assert_int_equal(jwt_new(&j), 0);
  jwt_add_grant(j, "iss", "chorus");
  jwt_add_grant(j, "sub", "root");
  jwt_add_grant(j, "scope", "admin");
  assert_int_equal(jwt_set_alg(j, JWT_ALG_NONE, NULL, 0), 0);
  char *none = jwt_encode_str(j);
  assert_non_null(none);
  assert_int_equal(none[strlen(none) - 1], '.');
  assert_int_equal(ch_auth_cred_classify(none), CH_AUTH_CRED_JWT);
  assert_string_equal(verify_reason(none, NOW), "wrong algorithm");
  free(none);

  /* HS512 with the RIGHT key: validly signed, still refused. */
  assert_int_equal(jwt_set_alg(j, JWT_ALG_HS512, secret_a.key, 32), 0);
  char *hs512 = jwt_encode_str(j);
  assert_non_null(hs512);
  assert_string_equal(verify_reason(hs512, NOW), "wrong algorithm");
  free(hs512);
  /* HS384 likewise. */
  assert_int_equal(jwt_set_alg(j, JWT_ALG_HS384, secret_a.key, 32), 0);
  char *hs384 = jwt_encode_str(j);
  assert_string_equal(verify_reason(hs384, NOW), "wrong algorithm");
  free(hs384);
  jwt_free(j);

  /* Hand-made headers: alg spelled differently, missing, not a string; all
   * correctly HMAC'd with our key. */
  const char *claims = "{\"iss\":\"chorus\",\"sub\":\"root\",\"scope\":\"admin\"}";
  assert_string_equal(verify_reason(forge("{\"alg\":\"none\"}", claims, &secret_a), NOW),
                      "wrong algorithm");
  assert_string_equal(verify_reason(forge("{\"alg\":\"hs256\"}", claims, &secret_a), NOW),
                      "wrong algorithm");
  assert_string_equal(verify_reason(forge("{\"alg\":\"RS256\"}", claims, &secret_a), NOW),
                      "wrong algorithm");
  assert_string_equal(verify_reason(forge("{\"typ\":\"JWT\"}", claims, &secret_a), NOW),
                      "malformed token");
  assert_string_equal(verify_reason(forge("{\"alg\":256}", claims, &secret_a), NOW),
                      "malformed token");
  /* Duplicate "alg" (JSON parsers disagree on which wins): never accepted. */
  assert_non_null(verify_reason(forge("{\"alg\":\"HS256\",\"alg\":\"none\"}", claims, &secret_a), NOW));
  assert_non_null(verify_reason(forge("{\"alg\":\"HS256\",\"alg\":\"HS512\"}", claims, &secret_a), NOW));
  assert_non_null(verify_reason(forge("{\"alg\":\"none\",\"alg\":\"HS256\"}", claims, &secret_a), NOW));
  /* And the forge helper itself yields an accepted token when all is right. */
  assert_null(verify_reason(forge(HDR, claims, &secret_a), NOW));
}

static void test_malformed(void **state) {
  (void)state;
  const char *bad[] = {
      "", "abc", "a.b", "a.b.c.d", ".b.c", "a..c", "a.b.c ", "a b.c.d", "a.b.c\n",
      "e30.e30.e30", /* {} {} — header without alg */
      "W10.e30.",    /* [] as header */
      "eyJ.e30.",    /* header not valid base64url length / JSON */
      "A.e30.",      /* 1 char: impossible base64 length */
      "e31.e30.",    /* non-canonical trailing bits */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *why = verify_reason(bad[i], NOW);
    assert_non_null(why);
    assert_string_equal(why, "malformed token");
  }
  ch_identity_t id;
  const char *why = NULL;
  assert_int_equal(ch_auth_token_verify(&secret_a, NULL, NOW, &id, &why), CH_EAUTH);
  assert_string_equal(why, "malformed token");

  /* Too long. */
  char *big = malloc(CH_AUTH_TOKEN_MAX + 64);
  memset(big, 'A', CH_AUTH_TOKEN_MAX + 10);
  big[10] = '.';
  big[20] = '.';
  big[CH_AUTH_TOKEN_MAX + 10] = '\0';
  assert_string_equal(verify_reason(big, NOW), "malformed token");
  free(big);

  /* Well signed, claims not an object. */
  assert_string_equal(verify_reason(forge(HDR, "[1,2]", &secret_a), NOW), "malformed token");
  assert_string_equal(verify_reason(forge(HDR, "{\"sub\":", &secret_a), NOW), "malformed token");
}

static void test_claims(void **state) {
  (void)state;
  struct {
    const char *claims;
    const char *why; /* NULL = accepted */
  } cases[] = {
      {"{\"iss\":\"chorus\",\"sub\":\"u\",\"scope\":\"read\"}", NULL},
      {"{\"iss\":\"chorus\",\"sub\":\"u\",\"dev\":\"d\",\"scope\":\"read,write\",\"exp\":1700000001}", NULL},
      {"{\"iss\":\"other\",\"sub\":\"u\",\"scope\":\"read\"}", "invalid claims"},
      {"{\"sub\":\"u\",\"scope\":\"read\"}", "invalid claims"},
      {"{\"iss\":\"chorus\",\"scope\":\"read\"}", "invalid claims"},
      {"{\"iss\":\"chorus\",\"sub\":\"\",\"scope\":\"read\"}", "invalid claims"},
      {"{\"iss\":\"chorus\",\"sub\":\"a b\",\"scope\":\"read\"}", "invalid claims"},
      {"{\"iss\":\"chorus\",\"sub\":42,\"scope\":\"read\"}", "invalid claims"},
      {"{\"iss\":\"chorus\",\"sub\":\"u\",\"dev\":7,\"scope\":\"read\"}", "invalid claims"},
      {"{\"iss\":\"chorus\",\"sub\":\"u\",\"dev\":\"x/y\",\"scope\":\"read\"}", "invalid claims"},
      {"{\"iss\":\"chorus\",\"sub\":\"u\"}", "invalid claims"},
      {"{\"iss\":\"chorus\",\"sub\":\"u\",\"scope\":\"root\"}", "invalid claims"},
      {"{\"iss\":\"chorus\",\"sub\":\"u\",\"scope\":\"\"}", "invalid claims"},
      {"{\"iss\":\"chorus\",\"sub\":\"u\",\"scope\":\"read\",\"exp\":\"9999999999\"}", "invalid claims"},
      {"{\"iss\":\"chorus\",\"sub\":\"u\",\"scope\":\"read\",\"exp\":1700000001.5}", "invalid claims"},
      {"{\"iss\":\"chorus\",\"sub\":\"u\",\"scope\":\"read\",\"exp\":-5}", "invalid claims"},
      {"{\"iss\":\"chorus\",\"sub\":\"u\",\"scope\":\"read\",\"exp\":1700000000}", "token expired"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *why = verify_reason(forge(HDR, cases[i].claims, &secret_a), NOW);
    if (cases[i].why == NULL) {
      if (why != NULL) fail_msg("case %zu refused: %s", i, why);
    } else {
      if (why == NULL) fail_msg("case %zu accepted", i);
      assert_string_equal(why, cases[i].why);
    }
  }
}

/* Tokens made by another implementation (PyJWT 2.6, HS256) with the test key. */
static void test_foreign_token(void **state) {
  (void)state;
  const char *good =
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJib2IiLCJpc3MiOiJjaG9ydXMiLCJzY29wZSI6InJlYW"
      "QiLCJkZXYiOiJ4IiwiZXhwIjo0MDAwMDAwMDAwfQ.kzNFvXP2CLWtcYU2yipi6oq-GQuJ_-k7MbLCBVxG5YA";
  const char *expired =
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJib2IiLCJpc3MiOiJjaG9ydXMiLCJzY29wZSI6InJlYW"
      "QiLCJleHAiOjE3MDAwMDAwMDB9.JrwyKOIy2azMzGbe39nQ5-FSgSVOFdG_5t82BA5wayk";
  ch_identity_t id;
  assert_int_equal(ch_auth_token_verify(&secret_a, good, NOW, &id, NULL), 0);
  assert_string_equal(id.user_id, "bob");
  assert_string_equal(id.device_id, "x");
  assert_int_equal(id.scopes, CH_SCOPE_READ);
  assert_true(id.expires_ms == (int64_t)4000000000 * 1000);
  assert_string_equal(verify_reason(expired, NOW), "token expired");
  assert_null(verify_reason(expired, NOW - 1));
}

static void test_mint_refuses(void **state) {
  (void)state;
  char *tok = (char *)"sentinel";
  char long_id[CH_AUTH_ID_MAX + 2];
  memset(long_id, 'a', sizeof long_id - 1);
  long_id[sizeof long_id - 1] = '\0';
  assert_int_equal(ch_auth_token_mint(&secret_a, "", "d", CH_SCOPE_READ, 1, NOW, &tok), CH_EINVAL);
  assert_null(tok);
  assert_int_equal(ch_auth_token_mint(&secret_a, NULL, "d", CH_SCOPE_READ, 1, NOW, &tok), CH_EINVAL);
  assert_int_equal(ch_auth_token_mint(&secret_a, long_id, "d", CH_SCOPE_READ, 1, NOW, &tok), CH_EINVAL);
  assert_int_equal(ch_auth_token_mint(&secret_a, "u", "bad dev", CH_SCOPE_READ, 1, NOW, &tok), CH_EINVAL);
  assert_int_equal(ch_auth_token_mint(&secret_a, "u", "d", 0, 1, NOW, &tok), CH_EINVAL);
  assert_int_equal(ch_auth_token_mint(&secret_a, "u", "d", 8, 1, NOW, &tok), CH_EINVAL);
  assert_int_equal(ch_auth_token_mint(&secret_a, "u", "d", CH_SCOPE_READ, -1, NOW, &tok), CH_EINVAL);
  long_id[CH_AUTH_ID_MAX] = '\0'; /* exactly 128: fine */
  assert_int_equal(ch_auth_token_mint(&secret_a, long_id, long_id, CH_SCOPE_READ, 1, NOW, &tok), 0);
  ch_identity_t id;
  assert_int_equal(ch_auth_token_verify(&secret_a, tok, NOW, &id, NULL), 0);
  assert_string_equal(id.user_id, long_id);
  free(tok);
}

static void test_scopes(void **state) {
  (void)state;
  unsigned s = 99;
  assert_int_equal(ch_auth_scopes_parse("read write", &s), 0);
  assert_int_equal(s, CH_SCOPE_READ | CH_SCOPE_WRITE);
  assert_int_equal(ch_auth_scopes_parse("read,write", &s), 0);
  assert_int_equal(s, CH_SCOPE_READ | CH_SCOPE_WRITE);
  assert_int_equal(ch_auth_scopes_parse(" write ,, read\t", &s), 0);
  assert_int_equal(s, CH_SCOPE_READ | CH_SCOPE_WRITE);
  assert_int_equal(ch_auth_scopes_parse("read", &s), 0);
  assert_int_equal(s, CH_SCOPE_READ);
  assert_int_equal(ch_auth_scopes_parse("read read", &s), 0);
  assert_int_equal(s, CH_SCOPE_READ);
  assert_int_equal(ch_auth_scopes_parse("admin", &s), 0);
  assert_int_equal(s, CH_SCOPE_ALL);
  s = 99;
  assert_int_equal(ch_auth_scopes_parse("", &s), CH_EINVAL);
  assert_int_equal(ch_auth_scopes_parse(" , ", &s), CH_EINVAL);
  assert_int_equal(ch_auth_scopes_parse("read writes", &s), CH_EINVAL);
  assert_int_equal(ch_auth_scopes_parse("READ", &s), CH_EINVAL);
  assert_int_equal(ch_auth_scopes_parse("read;write", &s), CH_EINVAL);
  assert_int_equal(ch_auth_scopes_parse(NULL, &s), CH_EINVAL);
  assert_int_equal(s, 99); /* untouched on failure */

  char out[CH_AUTH_SCOPES_MAX];
  ch_auth_scopes_format(CH_SCOPE_READ, out);
  assert_string_equal(out, "read");
  ch_auth_scopes_format(CH_SCOPE_WRITE | CH_SCOPE_READ, out);
  assert_string_equal(out, "read write");
  ch_auth_scopes_format(CH_SCOPE_WRITE, out);
  assert_string_equal(out, "write");
  ch_auth_scopes_format(CH_SCOPE_ADMIN, out);
  assert_string_equal(out, "read write admin");
  ch_auth_scopes_format(0, out);
  assert_string_equal(out, "");
  /* Format/parse round trip for every set. */
  for (unsigned v = 1; v <= CH_SCOPE_ALL; v++) {
    ch_auth_scopes_format(v, out);
    assert_int_equal(ch_auth_scopes_parse(out, &s), 0);
    assert_int_equal(s, (v & CH_SCOPE_ADMIN) ? CH_SCOPE_ALL : v);
  }

  assert_true(ch_auth_scopes_allow(CH_SCOPE_READ, CH_SCOPE_READ));
  assert_false(ch_auth_scopes_allow(CH_SCOPE_READ, CH_SCOPE_WRITE));
  assert_false(ch_auth_scopes_allow(CH_SCOPE_READ, CH_SCOPE_READ | CH_SCOPE_WRITE));
  assert_true(ch_auth_scopes_allow(CH_SCOPE_READ | CH_SCOPE_WRITE, CH_SCOPE_WRITE));
  assert_false(ch_auth_scopes_allow(CH_SCOPE_READ | CH_SCOPE_WRITE, CH_SCOPE_ADMIN));
  assert_true(ch_auth_scopes_allow(CH_SCOPE_ADMIN, CH_SCOPE_READ | CH_SCOPE_WRITE)); /* bare bit */
  assert_true(ch_auth_scopes_allow(CH_SCOPE_ADMIN, CH_SCOPE_ADMIN));
}

static void test_ids(void **state) {
  (void)state;
  assert_true(ch_auth_id_valid("a"));
  assert_true(ch_auth_id_valid("alice@example.com"));
  assert_true(ch_auth_id_valid("A-Z_a.z:0-9@x"));
  assert_false(ch_auth_id_valid(""));
  assert_false(ch_auth_id_valid(NULL));
  const char *bad[] = {"a b", "a/b", "a\\b", "a\"b", "é", "a\tb", "a\nb", "a%20", "a+b", "<x>", "a,b"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_false(ch_auth_id_valid(bad[i]));
  char s[CH_AUTH_ID_MAX + 2];
  memset(s, 'x', sizeof s);
  s[CH_AUTH_ID_MAX] = '\0';
  assert_true(ch_auth_id_valid(s));
  s[CH_AUTH_ID_MAX] = 'x';
  s[CH_AUTH_ID_MAX + 1] = '\0';
  assert_false(ch_auth_id_valid(s));
  /* Every byte value: exactly the documented set is allowed. */
  for (int c = 1; c < 256; c++) {
    char one[2] = {(char)c, 0};
    int want = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '.' || c == '_' || c == '@' || c == ':' || c == '-';
    assert_int_equal(ch_auth_id_valid(one), want);
  }
  assert_true(ch_auth_id_valid_n("ab\0", 2));
  assert_false(ch_auth_id_valid_n("ab\0", 3));
  assert_false(ch_auth_id_valid_n("ab", 0));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),     cmocka_unit_test(test_no_expiry_no_device_admin),
      cmocka_unit_test(test_expiry_boundary), cmocka_unit_test(test_tampered),
      cmocka_unit_test(test_wrong_algorithms), cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_claims),          cmocka_unit_test(test_mint_refuses),
      cmocka_unit_test(test_foreign_token),
      cmocka_unit_test(test_scopes),          cmocka_unit_test(test_ids),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
