/*
 * test_limiter.c — auth/limiter.c with an injected clock: lockout after
 * max failures, the exact sliding-window release time and retry-after, keys
 * kept apart (also long ones), reset, ring overflow, eviction of the least
 * recently failing key when the table is full, reuse of expired slots, and a
 * multi-threaded smoke test of the mutex.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "auth/auth.h"
#include "core/err.h"

#define MIN ((int64_t)60 * 1000)
#define T0 ((int64_t)5000000) /* arbitrary monotonic origin */

static void test_init_args(void **state) {
  (void)state;
  ch_auth_limiter_t l;
  assert_int_equal(ch_auth_limiter_init(&l, 0, 20, 15 * MIN), CH_EINVAL);
  assert_int_equal(ch_auth_limiter_init(&l, 10, 0, 15 * MIN), CH_EINVAL);
  assert_int_equal(ch_auth_limiter_init(&l, 10, 2000, 15 * MIN), CH_EINVAL);
  assert_int_equal(ch_auth_limiter_init(&l, 10, 20, 0), CH_EINVAL);
  assert_int_equal(ch_auth_limiter_init(&l, 10, 20, 15 * MIN), 0);
  assert_int_equal(ch_auth_limiter_count(&l), 0);
  ch_auth_limiter_dispose(&l);
  ch_auth_limiter_dispose(&l); /* idempotent */
}

static void test_lockout_and_window(void **state) {
  (void)state;
  ch_auth_limiter_t l;
  assert_int_equal(ch_auth_limiter_init(&l, 64, CH_AUTH_ADDR_MAX_FAILURES, CH_AUTH_ADDR_WINDOW_MS), 0);
  int64_t ra = -1;
  /* 19 failures one second apart: still allowed. */
  for (int i = 0; i < 19; i++) {
    assert_int_equal(ch_auth_limiter_check(&l, "10.0.0.1", T0 + i * 1000, &ra), 0);
    assert_true(ra == 0);
    ch_auth_limiter_fail(&l, "10.0.0.1", T0 + i * 1000);
  }
  assert_int_equal(ch_auth_limiter_check(&l, "10.0.0.1", T0 + 19000, &ra), 0);
  ch_auth_limiter_fail(&l, "10.0.0.1", T0 + 19000); /* the 20th */
  assert_int_equal(ch_auth_limiter_check(&l, "10.0.0.1", T0 + 19000, &ra), CH_ELIMIT);
  assert_true(ra == 15 * MIN - 19000); /* until the first (T0) leaves the window */
  assert_int_equal(ch_auth_limiter_check(&l, "10.0.0.1", T0 + 10 * MIN, &ra), CH_ELIMIT);
  assert_true(ra == 5 * MIN);
  assert_int_equal(ch_auth_limiter_check(&l, "10.0.0.1", T0 + 15 * MIN - 1, &ra), CH_ELIMIT);
  assert_true(ra == 1);
  assert_int_equal(ch_auth_limiter_check(&l, "10.0.0.1", T0 + 15 * MIN, NULL), 0);
  /* Sliding: exactly one more failure is allowed, then locked until the
   * second-oldest (T0 + 1 s) leaves. */
  ch_auth_limiter_fail(&l, "10.0.0.1", T0 + 15 * MIN);
  assert_int_equal(ch_auth_limiter_check(&l, "10.0.0.1", T0 + 15 * MIN, &ra), CH_ELIMIT);
  assert_true(ra == 1000);
  /* Other keys are unaffected. */
  assert_int_equal(ch_auth_limiter_check(&l, "10.0.0.2", T0 + 19000, &ra), 0);
  assert_int_equal(ch_auth_limiter_check(&l, "10.0.0.10", T0 + 19000, &ra), 0);
  /* Reset (e.g. a success) forgets the key. */
  ch_auth_limiter_reset(&l, "10.0.0.1");
  assert_int_equal(ch_auth_limiter_check(&l, "10.0.0.1", T0 + 15 * MIN, &ra), 0);
  assert_int_equal(ch_auth_limiter_count(&l), 0);
  ch_auth_limiter_reset(&l, "never-seen"); /* no-op */
  ch_auth_limiter_dispose(&l);
}

static void test_burst_split_window(void **state) {
  (void)state;
  ch_auth_limiter_t l;
  assert_int_equal(ch_auth_limiter_init(&l, 8, 20, 15 * MIN), 0);
  for (int i = 0; i < 10; i++) ch_auth_limiter_fail(&l, "a", T0);
  for (int i = 0; i < 10; i++) ch_auth_limiter_fail(&l, "a", T0 + 5 * MIN);
  int64_t ra;
  assert_int_equal(ch_auth_limiter_check(&l, "a", T0 + 5 * MIN, &ra), CH_ELIMIT);
  assert_true(ra == 10 * MIN);
  /* When the first ten age out, ten attempts are free again, not twenty. */
  assert_int_equal(ch_auth_limiter_check(&l, "a", T0 + 15 * MIN, &ra), 0);
  for (int i = 0; i < 9; i++) ch_auth_limiter_fail(&l, "a", T0 + 15 * MIN);
  assert_int_equal(ch_auth_limiter_check(&l, "a", T0 + 15 * MIN, &ra), 0);
  ch_auth_limiter_fail(&l, "a", T0 + 15 * MIN);
  assert_int_equal(ch_auth_limiter_check(&l, "a", T0 + 15 * MIN, &ra), CH_ELIMIT);
  assert_true(ra == 5 * MIN);
  /* Everything expires 15 min after the newest failure. */
  assert_int_equal(ch_auth_limiter_check(&l, "a", T0 + 30 * MIN, &ra), 0);
  assert_int_equal(ch_auth_limiter_count(&l), 0); /* the expired entry was dropped */
  ch_auth_limiter_dispose(&l);
}

static void test_ring_overflow(void **state) {
  (void)state;
  ch_auth_limiter_t l;
  assert_int_equal(ch_auth_limiter_init(&l, 4, 3, 1000), 0);
  /* 10 failures at 0..9 ms: only the newest 3 (7, 8, 9) are kept. */
  for (int i = 0; i < 10; i++) ch_auth_limiter_fail(&l, "k", T0 + i);
  int64_t ra;
  assert_int_equal(ch_auth_limiter_check(&l, "k", T0 + 9, &ra), CH_ELIMIT);
  assert_true(ra == 7 + 1000 - 9);
  assert_int_equal(ch_auth_limiter_check(&l, "k", T0 + 1006, &ra), CH_ELIMIT);
  assert_int_equal(ch_auth_limiter_check(&l, "k", T0 + 1007, &ra), 0);
  ch_auth_limiter_dispose(&l);
}

static void test_eviction(void **state) {
  (void)state;
  ch_auth_limiter_t l;
  assert_int_equal(ch_auth_limiter_init(&l, 4, 1, 15 * MIN), 0);
  const char *keys[] = {"a", "b", "c", "d"};
  for (int i = 0; i < 4; i++) ch_auth_limiter_fail(&l, keys[i], T0 + i);
  assert_int_equal(ch_auth_limiter_count(&l), 4);
  /* "a" fails again: now "b" is the least recently failing. */
  ch_auth_limiter_fail(&l, "a", T0 + 10);
  ch_auth_limiter_fail(&l, "e", T0 + 11);
  assert_int_equal(ch_auth_limiter_count(&l), 4); /* bounded */
  assert_int_equal(ch_auth_limiter_check(&l, "b", T0 + 12, NULL), 0); /* evicted */
  assert_int_equal(ch_auth_limiter_check(&l, "a", T0 + 12, NULL), CH_ELIMIT);
  assert_int_equal(ch_auth_limiter_check(&l, "c", T0 + 12, NULL), CH_ELIMIT);
  assert_int_equal(ch_auth_limiter_check(&l, "d", T0 + 12, NULL), CH_ELIMIT);
  assert_int_equal(ch_auth_limiter_check(&l, "e", T0 + 12, NULL), CH_ELIMIT);
  /* 1000 distinct addresses: memory stays at 4 entries, the newest 4 remain. */
  char k[32];
  for (int i = 0; i < 1000; i++) {
    snprintf(k, sizeof k, "192.0.2.%d", i);
    ch_auth_limiter_fail(&l, k, T0 + 100 + i);
  }
  assert_int_equal(ch_auth_limiter_count(&l), 4);
  for (int i = 996; i < 1000; i++) {
    snprintf(k, sizeof k, "192.0.2.%d", i);
    assert_int_equal(ch_auth_limiter_check(&l, k, T0 + 2000, NULL), CH_ELIMIT);
  }
  snprintf(k, sizeof k, "192.0.2.%d", 995);
  assert_int_equal(ch_auth_limiter_check(&l, k, T0 + 2000, NULL), 0);
  ch_auth_limiter_dispose(&l);
}

static void test_expired_slot_reused(void **state) {
  (void)state;
  ch_auth_limiter_t l;
  assert_int_equal(ch_auth_limiter_init(&l, 2, 2, 10000), 0);
  ch_auth_limiter_fail(&l, "x", T0);          /* expires at T0 + 10000 */
  ch_auth_limiter_fail(&l, "y", T0 + 9000);
  ch_auth_limiter_fail(&l, "y", T0 + 9500);   /* y locked until T0 + 19000 */
  ch_auth_limiter_fail(&l, "z", T0 + 10500);  /* takes x's expired slot */
  assert_int_equal(ch_auth_limiter_check(&l, "y", T0 + 10500, NULL), CH_ELIMIT);
  ch_auth_limiter_fail(&l, "z", T0 + 10600);
  assert_int_equal(ch_auth_limiter_check(&l, "z", T0 + 10600, NULL), CH_ELIMIT);
  ch_auth_limiter_dispose(&l);
}

static void test_long_keys(void **state) {
  (void)state;
  ch_auth_limiter_t l;
  assert_int_equal(ch_auth_limiter_init(&l, 8, 1, 1000), 0);
  char a[200], b[200];
  memset(a, 'k', sizeof a - 1);
  a[sizeof a - 1] = '\0';
  memcpy(b, a, sizeof a);
  b[150] = 'j'; /* differs only after the stored prefix */
  ch_auth_limiter_fail(&l, a, T0);
  assert_int_equal(ch_auth_limiter_check(&l, a, T0, NULL), CH_ELIMIT);
  assert_int_equal(ch_auth_limiter_check(&l, b, T0, NULL), 0);
  assert_int_equal(ch_auth_limiter_check(&l, NULL, T0, NULL), 0);
  ch_auth_limiter_fail(&l, NULL, T0); /* treated as "" */
  assert_int_equal(ch_auth_limiter_check(&l, "", T0, NULL), CH_ELIMIT);
  ch_auth_limiter_dispose(&l);
}

static ch_auth_limiter_t shared;
static void *hammer(void *arg) {
  char k[32];
  int t = (int)(intptr_t)arg;
  for (int i = 0; i < 2000; i++) {
    snprintf(k, sizeof k, "t%d-%d", t, i % 8);
    ch_auth_limiter_fail(&shared, k, T0 + i);
    (void)ch_auth_limiter_check(&shared, k, T0 + i, NULL);
  }
  return NULL;
}

static void test_threads(void **state) {
  (void)state;
  /* 4 threads x 8 keys x 250 failures each, max 1000: all kept, none locked. */
  assert_int_equal(ch_auth_limiter_init(&shared, 64, 1000, 1000000), 0);
  pthread_t th[4];
  for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, hammer, (void *)(intptr_t)i);
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  assert_int_equal(ch_auth_limiter_count(&shared), 32);
  assert_int_equal(ch_auth_limiter_check(&shared, "t0-0", T0 + 2000, NULL), 0);
  ch_auth_limiter_dispose(&shared);
  /* Same, with max = 250 per key: every key ends exactly at the limit. */
  assert_int_equal(ch_auth_limiter_init(&shared, 64, 250, 1000000), 0);
  for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, hammer, (void *)(intptr_t)i);
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  char k[32];
  for (int t = 0; t < 4; t++)
    for (int j = 0; j < 8; j++) {
      snprintf(k, sizeof k, "t%d-%d", t, j);
      assert_int_equal(ch_auth_limiter_check(&shared, k, T0 + 2000, NULL), CH_ELIMIT);
    }
  ch_auth_limiter_dispose(&shared);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_init_args),      cmocka_unit_test(test_lockout_and_window),
      cmocka_unit_test(test_burst_split_window), cmocka_unit_test(test_ring_overflow),
      cmocka_unit_test(test_eviction),       cmocka_unit_test(test_expired_slot_reused),
      cmocka_unit_test(test_long_keys),      cmocka_unit_test(test_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
