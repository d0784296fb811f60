/*
 * test_creds.c — API keys (format, hash, id, resolve through a store), PINs
 * (format, uniformity sanity, keyed hash, issue/redeem single use and expiry,
 * new device ids, collisions), credential classification, extraction from
 * HTTP requests, and the one-call ch_auth_authenticate() dispatch.
 *
 * The store is an in-memory fake implementing only the credential ops of
 * store/store.h with the documented semantics (apikey_find: CH_ENOTFOUND also
 * when revoked; pin_take: verify-and-consume, CH_ENOTFOUND when absent, used
 * or expired; pin_put: CH_EEXIST when that hash is live).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "auth/auth.h"
#include "core/err.h"
#include "http/request.h"

#define NOW ((int64_t)1700000000000)

/* ------------------------------------------------------------ fake store */

typedef struct {
  char hash[65], user[129];
  int64_t expires_ms;
  int live;
} fake_pin_t;

typedef struct {
  ch_store_t base;
  ch_apikey_t keys[16];
  size_t nkeys;
  fake_pin_t pins[64];
  size_t npins;
  int io_error;        /* every op fails with CH_EIO */
  int sloppy;          /* apikey_find also returns revoked records (against the contract) */
  int pin_put_eexist;  /* the next N pin_put calls report a collision */
  size_t pin_put_calls;
} fake_store_t;

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static int fake_apikey_put(ch_store_t *s, const ch_apikey_t *k) {
  fake_store_t *f = (fake_store_t *)s;
  if (f->io_error) return CH_EIO;
  ch_apikey_t *d = &f->keys[f->nkeys++];
  d->id = dup_or_null(k->id);
  d->hash = dup_or_null(k->hash);
  d->user_id = dup_or_null(k->user_id);
  d->scopes = dup_or_null(k->scopes);
  d->label = dup_or_null(k->label);
  d->created_ms = k->created_ms;
  d->revoked = 0;
  return 0;
}

static int fake_apikey_find(ch_store_t *s, const char *hash, ch_apikey_t *out) {
  fake_store_t *f = (fake_store_t *)s;
  if (f->io_error) return CH_EIO;
  for (size_t i = 0; i < f->nkeys; i++) {
    ch_apikey_t *k = &f->keys[i];
    if (strcmp(k->hash, hash) == 0 && (!k->revoked || f->sloppy)) {
      out->id = dup_or_null(k->id);
      out->hash = dup_or_null(k->hash);
      out->user_id = dup_or_null(k->user_id);
      out->scopes = dup_or_null(k->scopes);
      out->label = dup_or_null(k->label);
      out->created_ms = k->created_ms;
      out->revoked = k->revoked;
      return 0;
    }
  }
  return CH_ENOTFOUND;
}

static int fake_apikey_revoke(ch_store_t *s, const char *id) {
  fake_store_t *f = (fake_store_t *)s;
  for (size_t i = 0; i < f->nkeys; i++)
    if (strcmp(f->keys[i].id, id) == 0) {
      f->keys[i].revoked = 1;
      return 0;
    }
  return CH_ENOTFOUND;
}

static int fake_pin_put(ch_store_t *s, const char *hash, const char *user, int64_t exp) {
  fake_store_t *f = (fake_store_t *)s;
  f->pin_put_calls++;
  if (f->io_error) return CH_EIO;
  if (f->pin_put_eexist > 0) {
    f->pin_put_eexist--;
    return CH_EEXIST;
  }
  for (size_t i = 0; i < f->npins; i++)
    if (f->pins[i].live && strcmp(f->pins[i].hash, hash) == 0) return CH_EEXIST;
  fake_pin_t *p = &f->pins[f->npins++];
  snprintf(p->hash, sizeof p->hash, "%s", hash);
  snprintf(p->user, sizeof p->user, "%s", user);
  p->expires_ms = exp;
  p->live = 1;
  return 0;
}

static int fake_pin_take(ch_store_t *s, const char *hash, int64_t now, char **user) {
  fake_store_t *f = (fake_store_t *)s;
  if (f->io_error) return CH_EIO;
  for (size_t i = 0; i < f->npins; i++) {
    fake_pin_t *p = &f->pins[i];
    if (p->live && strcmp(p->hash, hash) == 0) {
      p->live = 0; /* consumed even when expired */
      if (now >= p->expires_ms) return CH_ENOTFOUND;
      *user = strdup(p->user);
      return 0;
    }
  }
  return CH_ENOTFOUND;
}

static const ch_store_ops_t fake_ops = {
    .name = "fake",
    .apikey_put = fake_apikey_put,
    .apikey_find = fake_apikey_find,
    .apikey_revoke = fake_apikey_revoke,
    .pin_put = fake_pin_put,
    .pin_take = fake_pin_take,
};

static fake_store_t *fake_new(void) {
  fake_store_t *f = calloc(1, sizeof *f);
  f->base.ops = &fake_ops;
  return f;
}

static void fake_free(fake_store_t *f) {
  for (size_t i = 0; i < f->nkeys; i++) ch_apikey_dispose(&f->keys[i]);
  free(f);
}

static ch_auth_secret_t secret;

static int setup(void **state) {
  (void)state;
  for (int i = 0; i < CH_AUTH_SECRET_LEN; i++) secret.key[i] = (unsigned char)(0xA5 ^ i);
  return 0;
}

/* ---------------------------------------------------------------- keys */

static void sha256_hex(const char *s, char out[65]) {
  unsigned char md[32];
  SHA256((const unsigned char *)s, strlen(s), md);
  for (int i = 0; i < 32; i++) sprintf(out + 2 * i, "%02x", md[i]);
}

static int is_b62(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static void test_apikey_format(void **state) {
  (void)state;
  char key[CH_AUTH_APIKEY_LEN + 1], id[CH_AUTH_APIKEY_ID_LEN + 1], hash[65], want[65];
  static char seen[200][CH_AUTH_APIKEY_LEN + 1];
  int charset[128] = {0};
  for (int n = 0; n < 200; n++) {
    assert_int_equal(ch_auth_apikey_generate(key, id, hash), 0);
    assert_int_equal(strlen(key), 45);
    assert_memory_equal(key, "chk_", 4);
    assert_int_equal(key[12], '_');
    for (int i = 4; i < 45; i++) {
      if (i == 12) continue;
      assert_true(is_b62(key[i]));
      charset[(int)key[i]]++;
    }
    assert_int_equal(strlen(id), 8);
    assert_memory_equal(id, key + 4, 8);
    sha256_hex(key, want);
    assert_string_equal(hash, want);
    char h2[65];
    ch_auth_apikey_hash(key, h2);
    assert_string_equal(h2, want);
    char pid[9];
    assert_int_equal(ch_auth_apikey_parse_id(key, pid), 0);
    assert_string_equal(pid, id);
    assert_true(ch_auth_apikey_valid(key));
    assert_int_equal(ch_auth_cred_classify(key), CH_AUTH_CRED_APIKEY);
    for (int j = 0; j < n; j++) assert_string_not_equal(seen[j], key);
    strcpy(seen[n], key);
  }
  /* 200 * 40 = 8000 draws over 62 chars: every char appears. */
  int distinct = 0;
  for (int c = 0; c < 128; c++) distinct += charset[c] > 0;
  assert_int_equal(distinct, 62);

  const char *good = "chk_AbCd1234_0123456789abcdefghijABCDEFGHIJ";
  assert_int_equal(strlen(good), 43); /* two short: invalid */
  const char *bad[] = {
      "chk_AbCd1234_0123456789abcdefghijABCDEFGHIJ",
      "chk_AbCd1234_0123456789abcdefghijABCDEFGHIJ012",
      "chk_AbCd123_0123456789abcdefghijABCDEFGHIJ0123",
      "chk-AbCd1234_0123456789abcdefghijABCDEFGHIJ01",
      "CHK_AbCd1234_0123456789abcdefghijABCDEFGHIJ01",
      "chk_AbCd1234-0123456789abcdefghijABCDEFGHIJ01",
      "chk_AbCd12-4_0123456789abcdefghijABCDEFGHIJ01",
      "chk_AbCd1234_0123456789abcdefghij_BCDEFGHIJ01",
      "chk_",
      "",
  };
  char pid[9] = "untouch";
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_false(ch_auth_apikey_valid(bad[i]));
    assert_int_equal(ch_auth_apikey_parse_id(bad[i], pid), CH_EINVAL);
  }
  assert_false(ch_auth_apikey_valid(NULL));
  assert_true(ch_auth_apikey_valid("chk_AbCd1234_0123456789abcdefghijABCDEFGHIJ01"));
  assert_int_equal(ch_auth_apikey_parse_id("chk_AbCd1234_0123456789abcdefghijABCDEFGHIJ01", pid), 0);
  assert_string_equal(pid, "AbCd1234");
}

static void put_key(fake_store_t *f, const char *key, const char *user, const char *scopes) {
  char id[9], hash[65];
  assert_int_equal(ch_auth_apikey_parse_id(key, id), 0);
  ch_auth_apikey_hash(key, hash);
  ch_apikey_t k = {.id = id, .hash = hash, .user_id = (char *)user, .scopes = (char *)scopes,
                   .label = "ci", .created_ms = NOW};
  assert_int_equal(f->base.ops->apikey_put(&f->base, &k), 0);
}

static void test_apikey_resolve(void **state) {
  (void)state;
  fake_store_t *f = fake_new();
  char key[46], id[9], hash[65], other[46];
  assert_int_equal(ch_auth_apikey_generate(key, id, hash), 0);
  assert_int_equal(ch_auth_apikey_generate(other, id, hash), 0);
  assert_int_equal(ch_auth_apikey_generate(key, id, hash), 0);
  put_key(f, key, "svc-bot", "read write");

  ch_identity_t ident;
  assert_int_equal(ch_auth_apikey_resolve(&f->base, key, &ident), 0);
  assert_string_equal(ident.user_id, "svc-bot");
  assert_int_equal(ident.kind, CH_AUTH_KIND_APIKEY);
  assert_int_equal(ident.scopes, CH_SCOPE_READ | CH_SCOPE_WRITE);
  assert_string_equal(ident.key_id, id);
  char dev[32];
  snprintf(dev, sizeof dev, "apikey-%s", id);
  assert_string_equal(ident.device_id, dev);
  assert_true(ident.expires_ms == 0);

  /* Well-formed but unknown; one character changed; malformed. */
  assert_int_equal(ch_auth_apikey_resolve(&f->base, other, &ident), CH_EAUTH);
  assert_string_equal(ident.user_id, "");
  char k2[46];
  strcpy(k2, key);
  k2[44] = k2[44] == 'a' ? 'b' : 'a';
  assert_int_equal(ch_auth_apikey_resolve(&f->base, k2, &ident), CH_EAUTH);
  assert_int_equal(ch_auth_apikey_resolve(&f->base, "chk_short", &ident), CH_EAUTH);

  /* Store failure is not the client's fault. */
  f->io_error = 1;
  assert_int_equal(ch_auth_apikey_resolve(&f->base, key, &ident), CH_EIO);
  f->io_error = 0;

  /* Revoked. */
  assert_int_equal(f->base.ops->apikey_revoke(&f->base, id), 0);
  assert_int_equal(ch_auth_apikey_resolve(&f->base, key, &ident), CH_EAUTH);
  /* Even from a store that hands out the revoked record. */
  f->sloppy = 1;
  assert_int_equal(ch_auth_apikey_resolve(&f->base, key, &ident), CH_EAUTH);
  f->sloppy = 0;

  /* A record the store holds but that is unusable (bad scopes, bad user). */
  char k3[46], k4[46];
  assert_int_equal(ch_auth_apikey_generate(k3, id, hash), 0);
  assert_int_equal(ch_auth_apikey_generate(k4, id, hash), 0);
  put_key(f, k3, "u", "superuser");
  put_key(f, k4, "bad user", "read");
  assert_int_equal(ch_auth_apikey_resolve(&f->base, k3, &ident), CH_EAUTH);
  assert_int_equal(ch_auth_apikey_resolve(&f->base, k4, &ident), CH_EAUTH);

  /* Admin key. */
  char k5[46];
  assert_int_equal(ch_auth_apikey_generate(k5, id, hash), 0);
  put_key(f, k5, "root", "admin");
  assert_int_equal(ch_auth_apikey_resolve(&f->base, k5, &ident), 0);
  assert_int_equal(ident.scopes, CH_SCOPE_ALL);
  fake_free(f);
}

/* ---------------------------------------------------------------- PINs */

static void test_pin_format_uniform(void **state) {
  (void)state;
  enum { N = 200000 };
  long first[10] = {0}, last[10] = {0};
  long below_100000 = 0;
  char pin[7];
  for (int i = 0; i < N; i++) {
    assert_int_equal(ch_auth_pin_generate(pin), 0);
    assert_int_equal(strlen(pin), 6);
    assert_true(ch_auth_pin_valid(pin));
    first[pin[0] - '0']++;
    last[pin[5] - '0']++;
    if (pin[0] == '0') below_100000++;
  }
  /* Chi-square, 9 degrees of freedom: 40 is far beyond p = 0.0001 (33.7). */
  double e = N / 10.0, c1 = 0, c2 = 0;
  for (int d = 0; d < 10; d++) {
    c1 += (first[d] - e) * (first[d] - e) / e;
    c2 += (last[d] - e) * (last[d] - e) / e;
  }
  if (c1 > 40 || c2 > 40) fail_msg("digit distribution skewed: chi2 first %.1f last %.1f", c1, c2);
  assert_true(below_100000 > 0); /* leading zeros are kept, not dropped */

  assert_false(ch_auth_pin_valid("12345"));
  assert_false(ch_auth_pin_valid("1234567"));
  assert_false(ch_auth_pin_valid("12345a"));
  assert_false(ch_auth_pin_valid(" 12345"));
  assert_false(ch_auth_pin_valid("-12345"));
  assert_false(ch_auth_pin_valid(""));
  assert_false(ch_auth_pin_valid(NULL));
  assert_true(ch_auth_pin_valid("000000"));
}

static void test_pin_hash(void **state) {
  (void)state;
  char h[65], want[65], plain[65];
  unsigned char mac[32];
  unsigned int n = 0;
  HMAC(EVP_sha256(), secret.key, 32, (const unsigned char *)"042917", 6, mac, &n);
  for (int i = 0; i < 32; i++) sprintf(want + 2 * i, "%02x", mac[i]);
  ch_auth_pin_hash(&secret, "042917", h);
  assert_string_equal(h, want);
  sha256_hex("042917", plain);
  assert_string_not_equal(h, plain); /* not a plain hash */
  ch_auth_secret_t other = secret;
  other.key[0] ^= 1;
  char h2[65];
  ch_auth_pin_hash(&other, "042917", h2);
  assert_string_not_equal(h, h2); /* keyed by the secret */
  ch_auth_pin_hash(&secret, "042918", h2);
  assert_string_not_equal(h, h2);
}

static void test_pin_issue_redeem(void **state) {
  (void)state;
  fake_store_t *f = fake_new();
  char pin[7];
  assert_int_equal(ch_auth_pin_issue(&f->base, &secret, "carol", 0, NOW, pin), 0);
  assert_true(ch_auth_pin_valid(pin));
  /* Only the keyed hash reached the store, with a 5-minute expiry. */
  char h[65];
  ch_auth_pin_hash(&secret, pin, h);
  assert_int_equal(f->npins, 1);
  assert_string_equal(f->pins[0].hash, h);
  assert_string_equal(f->pins[0].user, "carol");
  assert_true(f->pins[0].expires_ms == NOW + 5 * 60 * 1000);
  assert_null(strstr(f->pins[0].hash, pin));

  ch_identity_t a, b;
  assert_int_equal(ch_auth_pin_redeem(&f->base, &secret, pin, NOW + 1000, &a), 0);
  assert_string_equal(a.user_id, "carol");
  assert_int_equal(a.kind, CH_AUTH_KIND_PIN);
  assert_int_equal(a.scopes, CH_SCOPE_READ | CH_SCOPE_WRITE);
  assert_int_equal(strlen(a.device_id), 16);
  assert_memory_equal(a.device_id, "dev-", 4);
  for (int i = 4; i < 16; i++) assert_true(is_b62(a.device_id[i]));
  assert_true(ch_auth_id_valid(a.device_id));
  /* Single use. */
  assert_int_equal(ch_auth_pin_redeem(&f->base, &secret, pin, NOW + 2000, &b), CH_EAUTH);
  assert_string_equal(b.user_id, "");

  /* Each redemption makes a new device. */
  char pin2[7];
  assert_int_equal(ch_auth_pin_issue(&f->base, &secret, "carol", 0, NOW, pin2), 0);
  assert_int_equal(ch_auth_pin_redeem(&f->base, &secret, pin2, NOW, &b), 0);
  assert_string_equal(b.user_id, "carol");
  assert_string_not_equal(a.device_id, b.device_id);

  /* Expiry: custom ttl, redeemed exactly at expiry fails. */
  assert_int_equal(ch_auth_pin_issue(&f->base, &secret, "dave", 1000, NOW, pin), 0);
  assert_int_equal(ch_auth_pin_redeem(&f->base, &secret, pin, NOW + 1000, &a), CH_EAUTH);

  /* Wrong PIN / malformed never reach a user. */
  assert_int_equal(ch_auth_pin_issue(&f->base, &secret, "erin", 0, NOW, pin), 0);
  char wrong[7];
  strcpy(wrong, pin);
  wrong[5] = (char)(wrong[5] == '9' ? '0' : wrong[5] + 1);
  assert_int_equal(ch_auth_pin_redeem(&f->base, &secret, wrong, NOW, &a), CH_EAUTH);
  assert_int_equal(ch_auth_pin_redeem(&f->base, &secret, "12a456", NOW, &a), CH_EAUTH);
  assert_int_equal(ch_auth_pin_redeem(&f->base, &secret, NULL, NOW, &a), CH_EAUTH);
  /* Another secret (e.g. rotated) cannot redeem it; the right one still can. */
  ch_auth_secret_t other = secret;
  other.key[31] ^= 0x80;
  assert_int_equal(ch_auth_pin_redeem(&f->base, &other, pin, NOW, &a), CH_EAUTH);
  assert_int_equal(ch_auth_pin_redeem(&f->base, &secret, pin, NOW, &a), 0);
  assert_string_equal(a.user_id, "erin");

  /* Bad input to issue. */
  assert_int_equal(ch_auth_pin_issue(&f->base, &secret, "bad user", 0, NOW, pin), CH_EINVAL);
  assert_int_equal(ch_auth_pin_issue(&f->base, &secret, "u", -1, NOW, pin), CH_EINVAL);

  /* Store failure passes through. */
  f->io_error = 1;
  assert_int_equal(ch_auth_pin_issue(&f->base, &secret, "u", 0, NOW, pin), CH_EIO);
  assert_int_equal(ch_auth_pin_redeem(&f->base, &secret, "123456", NOW, &a), CH_EIO);
  fake_free(f);
}

static void test_pin_collision_retry(void **state) {
  (void)state;
  fake_store_t *f = fake_new();
  char pin[7];
  f->pin_put_eexist = 3;
  assert_int_equal(ch_auth_pin_issue(&f->base, &secret, "u", 0, NOW, pin), 0);
  assert_int_equal(f->pin_put_calls, 4);
  assert_int_equal(f->npins, 1);
  f->pin_put_eexist = 1000;
  f->pin_put_calls = 0;
  assert_int_equal(ch_auth_pin_issue(&f->base, &secret, "u", 0, NOW, pin), CH_EEXIST);
  assert_int_equal(f->pin_put_calls, 8); /* bounded */
  fake_free(f);
}

/* ----------------------------------------------------- classification */

static void test_classify(void **state) {
  (void)state;
  struct {
    const char *s;
    int kind;
  } cases[] = {
      {NULL, CH_AUTH_CRED_NONE},
      {"", CH_AUTH_CRED_NONE},
      {"chk_anything", CH_AUTH_CRED_APIKEY},
      {"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln", CH_AUTH_CRED_JWT},
      {"a.b.", CH_AUTH_CRED_JWT},
      {"a.b.c-_", CH_AUTH_CRED_JWT},
      {"a.b", CH_AUTH_CRED_UNKNOWN},
      {"a..c", CH_AUTH_CRED_UNKNOWN},
      {".b.c", CH_AUTH_CRED_UNKNOWN},
      {"a.b.c.d", CH_AUTH_CRED_UNKNOWN},
      {"a.b.c=", CH_AUTH_CRED_UNKNOWN},
      {"alice:laptop", CH_AUTH_CRED_INSECURE},
      {"alice@x.com:dev-1", CH_AUTH_CRED_INSECURE},
      {"a:b:c", CH_AUTH_CRED_INSECURE}, /* user "a", device "b:c" */
      {":laptop", CH_AUTH_CRED_UNKNOWN},
      {"alice:", CH_AUTH_CRED_UNKNOWN},
      {"al ice:laptop", CH_AUTH_CRED_UNKNOWN},
      {"alice", CH_AUTH_CRED_UNKNOWN},
      {"123456", CH_AUTH_CRED_UNKNOWN},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int k = ch_auth_cred_classify(cases[i].s);
    if (k != cases[i].kind) fail_msg("case %zu (%s): %d, want %d", i, cases[i].s ? cases[i].s : "NULL", k, cases[i].kind);
  }
}

static void test_authenticate(void **state) {
  (void)state;
  fake_store_t *f = fake_new();
  ch_identity_t id;
  const char *why = NULL;

  char *tok = NULL;
  assert_int_equal(ch_auth_token_mint(&secret, "u1", "d1", CH_SCOPE_READ, 60, NOW, &tok), 0);
  assert_int_equal(ch_auth_authenticate(&secret, NULL, tok, 0, NOW, &id, &why), 0);
  assert_null(why);
  assert_int_equal(id.kind, CH_AUTH_KIND_TOKEN);
  assert_string_equal(id.device_id, "d1");
  assert_int_equal(ch_auth_authenticate(&secret, NULL, tok, 0, NOW + 60000, &id, &why), CH_EAUTH);
  assert_string_equal(why, "token expired");
  free(tok);

  char key[46], kid[9], hash[65];
  assert_int_equal(ch_auth_apikey_generate(key, kid, hash), 0);
  put_key(f, key, "bot", "write");
  assert_int_equal(ch_auth_authenticate(&secret, NULL, key, 0, NOW, &id, &why), CH_EUNSUPPORTED);
  assert_string_equal(why, "api keys need the store");
  assert_int_equal(ch_auth_authenticate(&secret, &f->base, key, 0, NOW, &id, &why), 0);
  assert_string_equal(id.user_id, "bot");
  assert_int_equal(id.scopes, CH_SCOPE_WRITE);
  key[20] = key[20] == 'Z' ? 'Y' : 'Z';
  assert_int_equal(ch_auth_authenticate(&secret, &f->base, key, 0, NOW, &id, &why), CH_EAUTH);
  assert_string_equal(why, "invalid api key");
  f->io_error = 1;
  assert_int_equal(ch_auth_authenticate(&secret, &f->base, key, 0, NOW, &id, &why), CH_EIO);
  assert_string_equal(why, "credential store unavailable");
  f->io_error = 0;

  assert_int_equal(ch_auth_authenticate(&secret, NULL, "alice:phone", 0, NOW, &id, &why), CH_EAUTH);
  assert_string_equal(why, "insecure dev tokens are disabled");
  assert_string_equal(id.user_id, "");
  assert_int_equal(
      ch_auth_authenticate(&secret, NULL, "alice:phone", CH_AUTH_INSECURE_DEV, NOW, &id, &why), 0);
  assert_string_equal(id.user_id, "alice");
  assert_string_equal(id.device_id, "phone");
  assert_int_equal(id.kind, CH_AUTH_KIND_INSECURE);
  assert_int_equal(id.scopes, CH_SCOPE_READ | CH_SCOPE_WRITE);

  assert_int_equal(ch_auth_authenticate(&secret, NULL, "", 0, NOW, &id, &why), CH_EAUTH);
  assert_string_equal(why, "missing credential");
  assert_int_equal(ch_auth_authenticate(&secret, NULL, NULL, 0, NOW, &id, &why), CH_EAUTH);
  assert_string_equal(why, "missing credential");
  assert_int_equal(ch_auth_authenticate(&secret, NULL, "hello world", CH_AUTH_INSECURE_DEV, NOW, &id, &why), CH_EAUTH);
  assert_string_equal(why, "unrecognised credential");
  assert_int_equal(ch_auth_authenticate(&secret, NULL, "a.b.c", 0, NOW, &id, &why), CH_EAUTH);
  assert_string_equal(why, "malformed token");
  fake_free(f);
}

/* -------------------------------------------------- from HTTP requests */

static ch_http_req_t *parse_req(const char *text) {
  ch_http_reader_t r;
  ch_http_reader_init(&r, NULL);
  size_t used = 0;
  int rc = ch_http_reader_feed(&r, text, strlen(text), &used);
  assert_int_equal(rc, 0);
  ch_http_req_t *req = ch_http_reader_take(&r);
  assert_non_null(req);
  ch_http_reader_dispose(&r);
  return req;
}

static void expect_cred(const char *text, const char *want) {
  ch_http_req_t *req = parse_req(text);
  const char *got = (const char *)1;
  int rc = ch_auth_cred_from_request(req, &got);
  if (want == NULL) {
    assert_int_equal(rc, CH_ENOTFOUND);
    assert_null(got);
  } else {
    assert_int_equal(rc, 0);
    assert_string_equal(got, want);
  }
  ch_http_req_free(req);
}

static void test_from_request(void **state) {
  (void)state;
  expect_cred("GET /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc.def.ghi\r\n\r\n", "abc.def.ghi");
  expect_cred("GET /ws HTTP/1.1\r\nHost: x\r\nauthorization: bearer   chk_k  \r\n\r\n", "chk_k");
  expect_cred("GET /ws?token=a.b.c HTTP/1.1\r\nHost: x\r\n\r\n", "a.b.c");
  expect_cred("GET /ws?x=1&token=alice%3Aphone&y=2 HTTP/1.1\r\nHost: x\r\n\r\n", "alice:phone");
  /* Both: the header wins. */
  expect_cred("GET /ws?token=fromquery HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fromheader\r\n\r\n",
              "fromheader");
  /* Another scheme is not a bearer credential: the query is used. */
  expect_cred("GET /ws?token=q HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dTpw\r\n\r\n", "q");
  expect_cred("GET /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dTpw\r\n\r\n", NULL);
  expect_cred("GET /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearerabc\r\n\r\n", NULL);
  expect_cred("GET /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\r\n\r\n", NULL);
  expect_cred("GET /ws?token= HTTP/1.1\r\nHost: x\r\n\r\n", NULL);
  expect_cred("GET /ws?tokens=x HTTP/1.1\r\nHost: x\r\n\r\n", NULL);
  expect_cred("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", NULL);
}

static void test_conn_limit(void **state) {
  (void)state;
  ch_auth_conn_limit_t c;
  ch_auth_conn_limit_init(&c, 0);
  assert_int_equal(c.max, CH_AUTH_CONN_MAX_FAILURES);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(ch_auth_conn_limit_check(&c), 0);
    assert_int_equal(ch_auth_conn_limit_fail(&c), 0);
  }
  assert_int_equal(ch_auth_conn_limit_check(&c), 0); /* 4 failures: a 5th attempt allowed */
  assert_int_equal(ch_auth_conn_limit_fail(&c), CH_ELIMIT);
  assert_int_equal(ch_auth_conn_limit_check(&c), CH_ELIMIT);
  assert_int_equal(ch_auth_conn_limit_fail(&c), CH_ELIMIT);
  assert_int_equal(c.failures, 5);
  ch_auth_conn_limit_init(&c, 1);
  assert_int_equal(ch_auth_conn_limit_fail(&c), CH_ELIMIT);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_apikey_format),   cmocka_unit_test(test_apikey_resolve),
      cmocka_unit_test(test_pin_format_uniform), cmocka_unit_test(test_pin_hash),
      cmocka_unit_test(test_pin_issue_redeem), cmocka_unit_test(test_pin_collision_retry),
      cmocka_unit_test(test_classify),        cmocka_unit_test(test_authenticate),
      cmocka_unit_test(test_from_request),    cmocka_unit_test(test_conn_limit),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
