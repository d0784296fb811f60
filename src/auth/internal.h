/*
 * internal.h — helpers shared by the files of src/auth/ only (no other module
 * may include this): randomness without bias, hex, constant-time equality.
 */
#ifndef CH_AUTH_INTERNAL_H
#define CH_AUTH_INTERNAL_H

#include <stddef.h>

/* n random chars of [0-9A-Za-z] written to out (no NUL added), each uniform:
 * bytes >= 248 (= 4 * 62) are rejected and redrawn. 0 or CH_EIO. */
int ch__auth_random_base62(char *out, size_t n);
/* 2n lower-case hex chars plus NUL into out. */
void ch__auth_hex(const unsigned char *p, size_t n, char *out);
/* 1 when a and b are equal strings. Time depends only on the lengths, never
 * on where the bytes differ (CRYPTO_memcmp). NULL is unequal to everything. */
int ch__auth_ct_streq(const char *a, const char *b);
/* 1 when c is in [0-9A-Za-z]. */
int ch__auth_is_base62(int c);

#endif
