/*
 * identity.c — scope sets, user/device id syntax, and the small shared helpers
 * of the module (random base62, hex, constant-time string equality).
 *
 * Scopes are three bits; "admin" parses to all of them and also passes every
 * ch_auth_scopes_allow() check on its own, so a set stored as "admin" alone
 * (by an older writer) still means everything.
 *
 * Ids are plain ASCII so that they are safe in URLs, logs, file names and
 * JSON without escaping: 1..128 bytes of [A-Za-z0-9._@:-].
 */
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "auth/auth.h"
#include "auth/internal.h"
#include "core/err.h"

static const struct {
  const char *name;
  unsigned bits;
} ch__scope_words[] = {
    {"read", CH_SCOPE_READ},
    {"write", CH_SCOPE_WRITE},
    {"admin", CH_SCOPE_ALL},
};

int ch_auth_scopes_parse(const char *s, unsigned *out) {
  if (s == NULL) return CH_EINVAL;
  unsigned set = 0;
  int words = 0;
  const char *p = s;
  for (;;) {
    while (*p == ' ' || *p == '\t' || *p == ',') p++;
    if (*p == '\0') break;
    const char *w = p;
    while (*p != '\0' && *p != ' ' && *p != '\t' && *p != ',') p++;
    size_t n = (size_t)(p - w);
    unsigned bits = 0;
    for (size_t i = 0; i < sizeof ch__scope_words / sizeof ch__scope_words[0]; i++) {
      if (strlen(ch__scope_words[i].name) == n && memcmp(ch__scope_words[i].name, w, n) == 0) {
        bits = ch__scope_words[i].bits;
        break;
      }
    }
    if (bits == 0) return CH_EINVAL;
    set |= bits;
    words++;
  }
  if (words == 0) return CH_EINVAL;
  *out = set;
  return 0;
}

void ch_auth_scopes_format(unsigned scopes, char out[CH_AUTH_SCOPES_MAX]) {
  out[0] = '\0';
  if (scopes & CH_SCOPE_ADMIN) scopes = CH_SCOPE_ALL;
  static const char *const names[] = {"read", "write", "admin"};
  static const unsigned bits[] = {CH_SCOPE_READ, CH_SCOPE_WRITE, CH_SCOPE_ADMIN};
  size_t len = 0;
  for (size_t i = 0; i < 3; i++) {
    if (!(scopes & bits[i])) continue;
    size_t n = strlen(names[i]);
    if (len > 0) out[len++] = ' ';
    memcpy(out + len, names[i], n);
    len += n;
  }
  out[len] = '\0';
}

int ch_auth_scopes_allow(unsigned have, unsigned need) {
  if (have & CH_SCOPE_ADMIN) return 1;
  return (have & need) == need;
}

static int ch__id_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '@' || c == ':' || c == '-';
}

int ch_auth_id_valid_n(const char *s, size_t n) {
  if (s == NULL || n == 0 || n > CH_AUTH_ID_MAX) return 0;
  for (size_t i = 0; i < n; i++)
    if (!ch__id_char((unsigned char)s[i])) return 0;
  return 1;
}

int ch_auth_id_valid(const char *s) {
  if (s == NULL) return 0;
  size_t n = strnlen(s, CH_AUTH_ID_MAX + 1);
  return ch_auth_id_valid_n(s, n);
}

/* ------------------------------------------------------------ helpers */

static const char ch__b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

int ch__auth_random_base62(char *out, size_t n) {
  unsigned char pool[64];
  size_t have = 0, used = 0;
  for (size_t i = 0; i < n;) {
    if (used == have) {
      if (RAND_bytes(pool, (int)sizeof pool) != 1) {
        OPENSSL_cleanse(pool, sizeof pool);
        return CH_EIO;
      }
      have = sizeof pool;
      used = 0;
    }
    unsigned char b = pool[used++];
    if (b >= 248) continue; /* 248 = 4 * 62: keep the draw uniform */
    out[i++] = ch__b62[b % 62];
  }
  OPENSSL_cleanse(pool, sizeof pool);
  return 0;
}

void ch__auth_hex(const unsigned char *p, size_t n, char *out) {
  static const char hx[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hx[p[i] >> 4];
    out[2 * i + 1] = hx[p[i] & 15];
  }
  out[2 * n] = '\0';
}

int ch__auth_ct_streq(const char *a, const char *b) {
  if (a == NULL || b == NULL) return 0;
  size_t na = strlen(a), nb = strlen(b);
  if (na != nb) return 0;
  return CRYPTO_memcmp(a, b, na) == 0;
}

int ch__auth_is_base62(int c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}
