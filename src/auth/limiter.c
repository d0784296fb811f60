/*
 * limiter.c — failed-attempt limiting: per key (source address) in a sliding
 * window, and a plain per-connection counter.
 *
 * Table: a fixed array of entries, allocated once at init. Each entry holds
 * its key (first 63 bytes + a 64-bit FNV-1a hash of the whole key) and a ring
 * of the times of its last max_failures failures, oldest first:
 *
 *   entries[i] { key, hash, head, count, newest }
 *   stamps[i * max_failures + (head + k) % max_failures], k < count
 *
 * A failure counts while now - t < window. A key is locked while it has
 * max_failures failures in the window, i.e. until its oldest one leaves the
 * window (retry-after = oldest + window - now). So at most max_failures
 * attempts fail per window, whatever the attacker's timing.
 *
 * Lookup is a linear scan comparing the 64-bit hash first; with the table
 * sizes used (hundreds to a few thousand addresses) that is a few
 * microseconds, paid only on authentication attempts. A new key when the table
 * is full takes a free or fully-expired slot, else evicts the entry whose
 * newest failure is oldest. Evicting forgets a key's failures, which favours
 * the attacker only when more than max_keys addresses fail at once; the
 * per-connection counter still applies then.
 *
 * Time is injected (any monotonic ms); nothing here reads a clock.
 */
#include <string.h>

#include "auth/auth.h"
#include "core/alloc.h"
#include "core/err.h"

#include <stdlib.h>

struct ch_auth_limiter_entry_s {
  char key[CH_AUTH_LIMITER_KEY_MAX]; /* first bytes of the key, NUL-terminated */
  uint64_t hash;                     /* FNV-1a 64 of the whole key */
  unsigned head;                     /* ring index of the oldest failure */
  unsigned count;                    /* failures held, <= max_failures; 0 = slot free */
  int64_t newest_ms;                 /* time of the newest failure */
};

static uint64_t ch__fnv1a(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++) {
    h ^= (unsigned char)*s;
    h *= 0x100000001b3ull;
  }
  return h;
}

int ch_auth_limiter_init(ch_auth_limiter_t *l, size_t max_keys, unsigned max_failures,
                         int64_t window_ms) {
  if (max_keys == 0 || max_keys > ((size_t)1 << 20) || max_failures == 0 || max_failures > 1024 ||
      window_ms <= 0)
    return CH_EINVAL;
  l->_entries = ch_xcalloc(max_keys, sizeof *l->_entries);
  l->_stamps = ch_xcalloc(max_keys * max_failures, sizeof *l->_stamps);
  l->_max_keys = max_keys;
  l->_max_failures = max_failures;
  l->_window_ms = window_ms;
  pthread_mutex_init(&l->_mu, NULL);
  return 0;
}

void ch_auth_limiter_dispose(ch_auth_limiter_t *l) {
  if (l->_entries == NULL) return;
  pthread_mutex_destroy(&l->_mu);
  free(l->_entries);
  free(l->_stamps);
  l->_entries = NULL;
  l->_stamps = NULL;
}

static ch_auth_limiter_entry_t *ch__find(ch_auth_limiter_t *l, const char *key, uint64_t h) {
  for (size_t i = 0; i < l->_max_keys; i++) {
    ch_auth_limiter_entry_t *e = &l->_entries[i];
    if (e->count > 0 && e->hash == h && strncmp(e->key, key, CH_AUTH_LIMITER_KEY_MAX - 1) == 0)
      return e;
  }
  return NULL;
}

static int64_t *ch__ring(ch_auth_limiter_t *l, ch_auth_limiter_entry_t *e) {
  return l->_stamps + (size_t)(e - l->_entries) * l->_max_failures;
}

/* Drop failures that left the window. */
static void ch__prune(ch_auth_limiter_t *l, ch_auth_limiter_entry_t *e, int64_t now) {
  int64_t *r = ch__ring(l, e);
  while (e->count > 0 && now - r[e->head] >= l->_window_ms) {
    e->head = (e->head + 1) % l->_max_failures;
    e->count--;
  }
}

int ch_auth_limiter_check(ch_auth_limiter_t *l, const char *key, int64_t now_ms,
                          int64_t *retry_after_ms) {
  int rc = 0;
  if (retry_after_ms) *retry_after_ms = 0;
  if (key == NULL) key = "";
  pthread_mutex_lock(&l->_mu);
  ch_auth_limiter_entry_t *e = ch__find(l, key, ch__fnv1a(key));
  if (e != NULL) {
    ch__prune(l, e, now_ms);
    if (e->count >= l->_max_failures) {
      rc = CH_ELIMIT;
      if (retry_after_ms) {
        int64_t ra = ch__ring(l, e)[e->head] + l->_window_ms - now_ms;
        *retry_after_ms = ra > 0 ? ra : 1;
      }
    }
  }
  pthread_mutex_unlock(&l->_mu);
  return rc;
}

void ch_auth_limiter_fail(ch_auth_limiter_t *l, const char *key, int64_t now_ms) {
  if (key == NULL) key = "";
  uint64_t h = ch__fnv1a(key);
  pthread_mutex_lock(&l->_mu);
  ch_auth_limiter_entry_t *e = ch__find(l, key, h);
  if (e == NULL) {
    ch_auth_limiter_entry_t *victim = NULL;
    for (size_t i = 0; i < l->_max_keys; i++) {
      ch_auth_limiter_entry_t *c = &l->_entries[i];
      if (c->count == 0 || now_ms - c->newest_ms >= l->_window_ms) {
        victim = c; /* free, or every failure it holds has expired */
        break;
      }
      if (victim == NULL || c->newest_ms < victim->newest_ms) victim = c;
    }
    e = victim;
    memset(e, 0, sizeof *e);
    size_t n = strlen(key);
    if (n > CH_AUTH_LIMITER_KEY_MAX - 1) n = CH_AUTH_LIMITER_KEY_MAX - 1;
    memcpy(e->key, key, n);
    e->key[n] = '\0';
    e->hash = h;
  } else {
    ch__prune(l, e, now_ms);
  }
  int64_t *r = ch__ring(l, e);
  if (e->count == l->_max_failures) { /* keep the newest max_failures */
    e->head = (e->head + 1) % l->_max_failures;
    e->count--;
  }
  r[(e->head + e->count) % l->_max_failures] = now_ms;
  e->count++;
  e->newest_ms = now_ms;
  pthread_mutex_unlock(&l->_mu);
}

void ch_auth_limiter_reset(ch_auth_limiter_t *l, const char *key) {
  if (key == NULL) key = "";
  pthread_mutex_lock(&l->_mu);
  ch_auth_limiter_entry_t *e = ch__find(l, key, ch__fnv1a(key));
  if (e != NULL) memset(e, 0, sizeof *e);
  pthread_mutex_unlock(&l->_mu);
}

size_t ch_auth_limiter_count(ch_auth_limiter_t *l) {
  size_t n = 0;
  pthread_mutex_lock(&l->_mu);
  for (size_t i = 0; i < l->_max_keys; i++)
    if (l->_entries[i].count > 0) n++;
  pthread_mutex_unlock(&l->_mu);
  return n;
}

void ch_auth_conn_limit_init(ch_auth_conn_limit_t *c, unsigned max) {
  c->failures = 0;
  c->max = max ? max : CH_AUTH_CONN_MAX_FAILURES;
}

int ch_auth_conn_limit_check(const ch_auth_conn_limit_t *c) {
  return c->failures >= c->max ? CH_ELIMIT : 0;
}

int ch_auth_conn_limit_fail(ch_auth_conn_limit_t *c) {
  if (c->failures < c->max) c->failures++;
  return ch_auth_conn_limit_check(c);
}
