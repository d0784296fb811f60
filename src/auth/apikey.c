/*
 * apikey.c — API keys: long random secrets for integrations and agents.
 *
 *   chk_AbCd1234_0123456789abcdefghijABCDEFGHIJ01
 *   └┬─┘└──┬───┘ └──────────────┬───────────────┘
 *  prefix  id (8 base62,        32 random base62 (~190 bits)
 *          public: listed,
 *          logged, revoked by)
 *
 * The store keeps the id and hex SHA-256 of the WHOLE key, never the key; a
 * presented key is hashed and looked up by hash. Because the key is long and
 * uniformly random, an unsalted fast hash is safe here (nothing to
 * brute-force), and the lookup needs no per-key salt. The prefix makes keys
 * recognisable to secret scanners and to ch_auth_cred_classify().
 */
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "auth/auth.h"
#include "auth/internal.h"
#include "core/err.h"

int ch_auth_apikey_generate(char *key_out, char *id_out, char *hash_out) {
  char id[CH_AUTH_APIKEY_ID_LEN], rnd[CH_AUTH_APIKEY_RAND_LEN];
  int rc = 0;
  if (ch__auth_random_base62(id, sizeof id) != 0 || ch__auth_random_base62(rnd, sizeof rnd) != 0) {
    rc = CH_EIO;
    goto Exit;
  }
  char *p = key_out;
  memcpy(p, CH_AUTH_APIKEY_PREFIX, 4);
  p += 4;
  memcpy(p, id, sizeof id);
  p += sizeof id;
  *p++ = '_';
  memcpy(p, rnd, sizeof rnd);
  p += sizeof rnd;
  *p = '\0';
  memcpy(id_out, id, sizeof id);
  id_out[sizeof id] = '\0';
  ch_auth_apikey_hash(key_out, hash_out);
Exit:
  OPENSSL_cleanse(rnd, sizeof rnd);
  return rc;
}

int ch_auth_apikey_valid(const char *key) {
  if (key == NULL || strncmp(key, CH_AUTH_APIKEY_PREFIX, 4) != 0) return 0;
  if (strnlen(key, CH_AUTH_APIKEY_LEN + 1) != CH_AUTH_APIKEY_LEN) return 0;
  for (size_t i = 4; i < CH_AUTH_APIKEY_LEN; i++) {
    if (i == 4 + CH_AUTH_APIKEY_ID_LEN) {
      if (key[i] != '_') return 0;
    } else if (!ch__auth_is_base62((unsigned char)key[i])) {
      return 0;
    }
  }
  return 1;
}

int ch_auth_apikey_parse_id(const char *key, char *id_out) {
  if (!ch_auth_apikey_valid(key)) return CH_EINVAL;
  memcpy(id_out, key + 4, CH_AUTH_APIKEY_ID_LEN);
  id_out[CH_AUTH_APIKEY_ID_LEN] = '\0';
  return 0;
}

void ch_auth_apikey_hash(const char *key, char *hash_out) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256((const unsigned char *)key, strlen(key), md);
  ch__auth_hex(md, sizeof md, hash_out);
}

int ch_auth_apikey_resolve(ch_store_t *st, const char *key, ch_identity_t *id) {
  char kid[CH_AUTH_APIKEY_ID_LEN + 1], hash[CH_AUTH_HASH_HEX_LEN + 1];
  ch_apikey_t rec;
  memset(&rec, 0, sizeof rec);
  memset(id, 0, sizeof *id);
  unsigned scopes = 0;
  if (ch_auth_apikey_parse_id(key, kid) != 0) return CH_EAUTH;
  ch_auth_apikey_hash(key, hash);
  int rc = st->ops->apikey_find(st, hash, &rec);
  if (rc == CH_ENOTFOUND) {
    rc = CH_EAUTH;
    goto Exit;
  }
  if (rc != 0) goto Exit;
  /* The store matched by hash; re-check everything it returned. */
  if (rec.revoked || !ch__auth_ct_streq(rec.hash, hash) || rec.id == NULL ||
      strcmp(rec.id, kid) != 0 || !ch_auth_id_valid(rec.user_id) || rec.scopes == NULL ||
      ch_auth_scopes_parse(rec.scopes, &scopes) != 0) {
    rc = CH_EAUTH;
    goto Exit;
  }
  strcpy(id->user_id, rec.user_id);
  memcpy(id->device_id, "apikey-", 7);
  memcpy(id->device_id + 7, kid, sizeof kid);
  memcpy(id->key_id, kid, sizeof kid);
  id->scopes = scopes;
  id->kind = CH_AUTH_KIND_APIKEY;
  id->expires_ms = 0;
Exit:
  ch_apikey_dispose(&rec);
  if (rc != 0) memset(id, 0, sizeof *id);
  return rc;
}
