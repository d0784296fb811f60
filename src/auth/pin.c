/*
 * pin.c — one-time pairing PINs (the relay profile's in-band login).
 *
 * A trusted client (CLI, dashboard, native protocol) asks for a PIN for its
 * user; the person types it into a new client within 5 minutes; the hub
 * redeems it once and the new client becomes a NEW device of that user.
 *
 *   issue:  pin = uniform 6 digits; store HMAC-SHA256(secret, pin) hex,
 *           user, expires = now + ttl
 *   redeem: store.pin_take(HMAC(secret, presented), now) — one atomic
 *           verify-and-delete in the store, so two racing redemptions of one
 *           PIN cannot both win; then a fresh device id "dev-" + 12 base62.
 *
 * Why HMAC and not a hash: 10^6 PINs are enumerated in milliseconds, so a
 * plain hash in a stolen database would reveal the live PINs; keyed with
 * secret.key (kept out of the database) it reveals nothing. Brute force over
 * the network is the limiter's job (5 per connection, 20 per address per 15
 * minutes): with a handful of live PINs, that caps an attacker's odds at
 * about 20 * live / 10^6 per address per window.
 *
 * Uniformity: a 32-bit draw is rejected when >= 4294000000 (the largest
 * multiple of 10^6 below 2^32), so every PIN has exactly the same chance.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "auth/auth.h"
#include "auth/internal.h"
#include "core/err.h"

#define CH__PIN_SPACE 1000000u
#define CH__PIN_LIMIT 4294000000u /* floor(2^32 / 10^6) * 10^6 */

int ch_auth_pin_generate(char *pin_out) {
  unsigned char b[4];
  uint32_t v;
  for (;;) {
    if (RAND_bytes(b, (int)sizeof b) != 1) return CH_EIO;
    v = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    if (v < CH__PIN_LIMIT) break;
  }
  snprintf(pin_out, CH_AUTH_PIN_LEN + 1, "%06u", (unsigned)(v % CH__PIN_SPACE));
  OPENSSL_cleanse(b, sizeof b);
  v = 0;
  return 0;
}

int ch_auth_pin_valid(const char *pin) {
  if (pin == NULL) return 0;
  for (int i = 0; i < CH_AUTH_PIN_LEN; i++)
    if (pin[i] < '0' || pin[i] > '9') return 0;
  return pin[CH_AUTH_PIN_LEN] == '\0';
}

void ch_auth_pin_hash(const ch_auth_secret_t *s, const char *pin, char *hash_out) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (HMAC(EVP_sha256(), s->key, (int)sizeof s->key, (const unsigned char *)pin, strlen(pin), mac,
           &n) == NULL || n != 32) {
    /* Cannot happen with a working libcrypto; never produce a guessable hash. */
    abort();
  }
  ch__auth_hex(mac, 32, hash_out);
  OPENSSL_cleanse(mac, sizeof mac);
}

int ch_auth_pin_issue(ch_store_t *st, const ch_auth_secret_t *s, const char *user, int64_t ttl_ms,
                      int64_t now_ms, char *pin_out) {
  char hash[CH_AUTH_HASH_HEX_LEN + 1];
  if (!ch_auth_id_valid(user) || ttl_ms < 0) return CH_EINVAL;
  if (ttl_ms == 0) ttl_ms = CH_AUTH_PIN_TTL_MS;
  int rc = CH_EEXIST;
  /* A live PIN with the same digits may exist (another user's): draw again. */
  for (int tries = 0; tries < 8 && rc == CH_EEXIST; tries++) {
    rc = ch_auth_pin_generate(pin_out);
    if (rc != 0) break;
    ch_auth_pin_hash(s, pin_out, hash);
    rc = st->ops->pin_put(st, hash, user, now_ms + ttl_ms);
  }
  if (rc != 0) OPENSSL_cleanse(pin_out, CH_AUTH_PIN_LEN + 1);
  return rc;
}

int ch_auth_pin_redeem(ch_store_t *st, const ch_auth_secret_t *s, const char *pin, int64_t now_ms,
                       ch_identity_t *id) {
  char hash[CH_AUTH_HASH_HEX_LEN + 1];
  char *user = NULL;
  int rc;
  memset(id, 0, sizeof *id);
  if (!ch_auth_pin_valid(pin)) return CH_EAUTH;
  ch_auth_pin_hash(s, pin, hash);
  rc = st->ops->pin_take(st, hash, now_ms, &user);
  if (rc == CH_ENOTFOUND) {
    rc = CH_EAUTH;
    goto Exit;
  }
  if (rc != 0) goto Exit;
  if (!ch_auth_id_valid(user)) {
    rc = CH_EAUTH;
    goto Exit;
  }
  strcpy(id->user_id, user);
  memcpy(id->device_id, "dev-", 4);
  rc = ch__auth_random_base62(id->device_id + 4, CH_AUTH_DEVICE_RAND_LEN);
  if (rc != 0) goto Exit;
  id->device_id[4 + CH_AUTH_DEVICE_RAND_LEN] = '\0';
  id->scopes = CH_SCOPE_READ | CH_SCOPE_WRITE;
  id->kind = CH_AUTH_KIND_PIN;
  id->expires_ms = 0;
Exit:
  free(user);
  if (rc != 0) memset(id, 0, sizeof *id);
  return rc;
}
