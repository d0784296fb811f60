/*
 * test_presence.c — presence sets (src/hub/presence.c) on a bare hub struct.
 *
 * Covers the contract of presence.h: first/last connection of a user, duplicate
 * adds, counts of connections and users, listings in join order (whole and
 * capped, JSON-escaped), claims living and dying with the set, and a long
 * random sequence of adds and removes checked step by step against a plain
 * model (the indexes must never disagree with the list). Run under ASan, the
 * dispose test also proves that nothing leaks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "core/err.h"
#include "core/map.h"
#include "hub/hub.h"
#include "hub/presence.h"

static ch_hub_t *hub_new(void) {
  ch_hub_t *h = calloc(1, sizeof(*h));
  ch_map_init(&h->presence);
  return h;
}

static void hub_free(ch_hub_t *h) {
  ch_presence_dispose(h);
  ch_map_dispose(&h->presence);
  free(h);
}

static ch_presence_entry_t entry(uint64_t id, const char *user, const char *device, const char *source) {
  ch_presence_entry_t e;
  memset(&e, 0, sizeof(e));
  e.client_id = id;
  snprintf(e.user_id, sizeof(e.user_id), "%s", user);
  snprintf(e.device_id, sizeof(e.device_id), "%s", device);
  snprintf(e.source, sizeof(e.source), "%s", source);
  return e;
}

/* The listing as parsed JSON (asserting it parses), caller deletes. */
static cJSON *listing(ch_hub_t *h, const char *key, size_t max, size_t *listed) {
  ch_buf_t b = CH_BUF_INIT;
  size_t n = ch_presence_json_max(h, key, max, &b);
  if (listed) *listed = n;
  cJSON *a = cJSON_ParseWithLength(b.base, b.len);
  assert_non_null(a);
  assert_true(cJSON_IsArray(a));
  assert_int_equal((size_t)cJSON_GetArraySize(a), n);
  ch_buf_dispose(&b);
  return a;
}

static const char *str_at(cJSON *a, int i, const char *field) {
  return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(a, i), field));
}

static void test_first_and_last_connection_of_a_user(void **state) {
  (void)state;
  ch_hub_t *h = hub_new();
  ch_presence_entry_t a1 = entry(1, "alice", "laptop", "desktop"), a2 = entry(2, "alice", "phone", "iphone"),
                      b1 = entry(3, "bob", "tab", "web");
  assert_int_equal(ch_presence_add(h, "c:r", &a1), 1);
  assert_int_equal(ch_presence_add(h, "c:r", &a2), 0);
  assert_int_equal(ch_presence_add(h, "c:r", &b1), 1);
  assert_int_equal(ch_presence_add(h, "c:r", &a2), CH_EEXIST); /* same connection again: no change */
  assert_int_equal(ch_presence_count(h, "c:r"), 3);
  assert_int_equal(ch_presence_user_count(h, "c:r"), 2);
  assert_int_equal(ch_presence_count(h, "c:other"), 0);
  assert_int_equal(ch_presence_user_count(h, "c:other"), 0);

  ch_presence_entry_t out;
  int found = -1;
  assert_int_equal(ch_presence_remove(h, "c:r", 99, &out, &found), 0);
  assert_int_equal(found, 0);
  assert_int_equal(ch_presence_remove(h, "c:nope", 1, &out, &found), 0);
  assert_int_equal(found, 0);
  assert_int_equal(ch_presence_remove(h, "c:r", 1, &out, &found), 0); /* alice still has the phone */
  assert_int_equal(found, 1);
  assert_int_equal(out.client_id, 1);
  assert_string_equal(out.device_id, "laptop");
  assert_int_equal(ch_presence_user_count(h, "c:r"), 2);
  assert_int_equal(ch_presence_remove(h, "c:r", 2, &out, &found), 1); /* her last */
  assert_int_equal(found, 1);
  assert_string_equal(out.source, "iphone");
  assert_int_equal(ch_presence_user_count(h, "c:r"), 1);
  assert_int_equal(ch_presence_remove(h, "c:r", 2, &out, &found), 0); /* gone already */
  assert_int_equal(found, 0);
  /* The same client id in another set is another presence. */
  assert_int_equal(ch_presence_add(h, "u:bob", &b1), 1);
  assert_int_equal(ch_presence_remove(h, "c:r", 3, &out, &found), 1);
  assert_int_equal(ch_presence_count(h, "c:r"), 0);
  assert_int_equal(ch_presence_count(h, "u:bob"), 1);
  assert_int_equal(h->presence.count, 1); /* the empty set is gone from the hub's map */
  hub_free(h);
}

static void test_listing_is_in_join_order_and_capped(void **state) {
  (void)state;
  ch_hub_t *h = hub_new();
  for (uint64_t i = 1; i <= 6; i++) {
    char user[16];
    snprintf(user, sizeof(user), "u%llu", (unsigned long long)(i % 3));
    ch_presence_entry_t e = entry(i, user, "d", "s");
    ch_presence_add(h, "c:r", &e);
  }
  ch_presence_entry_t out;
  int found;
  ch_presence_remove(h, "c:r", 2, &out, &found); /* from the middle: the order of the rest stays */
  ch_presence_entry_t again = entry(2, "u2", "d", "s");
  ch_presence_add(h, "c:r", &again); /* comes back as the newest */

  static const char *const want[] = {"1", "3", "4", "5", "6", "2"};
  size_t listed;
  cJSON *a = listing(h, "c:r", SIZE_MAX, &listed);
  assert_int_equal(listed, 6);
  for (int i = 0; i < 6; i++) assert_string_equal(str_at(a, i, "clientId"), want[i]);
  assert_string_equal(str_at(a, 0, "userId"), "u1");
  assert_string_equal(str_at(a, 0, "deviceId"), "d");
  assert_string_equal(str_at(a, 0, "source"), "s");
  cJSON_Delete(a);

  a = listing(h, "c:r", 3, &listed); /* the oldest three */
  assert_int_equal(listed, 3);
  for (int i = 0; i < 3; i++) assert_string_equal(str_at(a, i, "clientId"), want[i]);
  cJSON_Delete(a);
  a = listing(h, "c:r", 0, &listed);
  assert_int_equal(listed, 0);
  cJSON_Delete(a);
  a = listing(h, "c:missing", 10, &listed);
  assert_int_equal(listed, 0);
  cJSON_Delete(a);

  /* ch_presence_json is the uncapped listing, byte for byte. */
  ch_buf_t x = CH_BUF_INIT, y = CH_BUF_INIT;
  ch_presence_json(h, "c:r", &x);
  ch_presence_json_max(h, "c:r", 6, &y);
  assert_int_equal(x.len, y.len);
  assert_memory_equal(x.base, y.base, x.len);
  ch_buf_dispose(&x);
  ch_buf_dispose(&y);
  hub_free(h);
}

static void test_listing_escapes_strings(void **state) {
  (void)state;
  ch_hub_t *h = hub_new();
  ch_presence_entry_t e = entry(18446744073709551615ull, "al\"ice\\", "dev\n1", "w\xc3\xa9" "b");
  ch_presence_add(h, "c:r", &e);
  cJSON *a = listing(h, "c:r", 10, NULL);
  assert_string_equal(str_at(a, 0, "clientId"), "18446744073709551615");
  assert_string_equal(str_at(a, 0, "userId"), "al\"ice\\");
  assert_string_equal(str_at(a, 0, "deviceId"), "dev\n1");
  assert_string_equal(str_at(a, 0, "source"), "w\xc3\xa9" "b");
  cJSON_Delete(a);
  hub_free(h);
}

static void test_claims_live_with_the_set(void **state) {
  (void)state;
  ch_hub_t *h = hub_new();
  ch_presence_set_claim(h, "c:r", "alice"); /* nobody present: no claim */
  assert_null(ch_presence_claim(h, "c:r"));
  ch_presence_entry_t e = entry(1, "alice", "d", "s"), f = entry(2, "bob", "d", "s");
  ch_presence_add(h, "c:r", &e);
  ch_presence_set_claim(h, "c:r", "alice");
  assert_string_equal(ch_presence_claim(h, "c:r"), "alice");
  ch_presence_add(h, "c:r", &f);
  ch_presence_entry_t out;
  int found;
  ch_presence_remove(h, "c:r", 1, &out, &found);
  assert_string_equal(ch_presence_claim(h, "c:r"), "alice"); /* held while anyone is present */
  ch_presence_set_claim(h, "c:r", NULL);
  assert_null(ch_presence_claim(h, "c:r"));
  ch_presence_set_claim(h, "c:r", "bob");
  ch_presence_remove(h, "c:r", 2, &out, &found);
  assert_null(ch_presence_claim(h, "c:r")); /* the last one left: the claim went with the set */
  ch_presence_add(h, "c:r", &e);
  assert_null(ch_presence_claim(h, "c:r"));
  hub_free(h);
}

/* ---- random sequence against a model ------------------------------------------------ */

#define NCLIENTS 400
#define NUSERS 23

typedef struct {
  int present[NCLIENTS + 1];
  uint64_t order[NCLIENTS]; /* join order of those present */
  size_t n;
} model_t;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static int user_of(uint64_t id) { return (int)(id * 7 % NUSERS); }

static size_t model_user_conns(const model_t *m, int user) {
  size_t k = 0;
  for (size_t i = 0; i < m->n; i++) k += user_of(m->order[i]) == user;
  return k;
}

static size_t model_users(const model_t *m) {
  size_t k = 0;
  for (int u = 0; u < NUSERS; u++) k += model_user_conns(m, u) > 0;
  return k;
}

static void test_random_operations_match_a_model(void **state) {
  (void)state;
  ch_hub_t *h = hub_new();
  model_t *m = calloc(1, sizeof(*m));
  for (int step = 0; step < 20000; step++) {
    uint64_t id = 1 + rnd() % NCLIENTS;
    char user[16];
    snprintf(user, sizeof(user), "user%d", user_of(id));
    if (rnd() % 2) {
      ch_presence_entry_t e = entry(id, user, "d", "s");
      int want = m->present[id] ? CH_EEXIST : model_user_conns(m, user_of(id)) == 0;
      assert_int_equal(ch_presence_add(h, "c:big", &e), want);
      if (!m->present[id]) {
        m->present[id] = 1;
        m->order[m->n++] = id;
      }
    } else {
      ch_presence_entry_t out;
      int found;
      int last = ch_presence_remove(h, "c:big", id, &out, &found);
      assert_int_equal(found, m->present[id]);
      if (m->present[id]) {
        assert_int_equal(out.client_id, id);
        assert_string_equal(out.user_id, user);
        m->present[id] = 0;
        size_t i = 0;
        while (m->order[i] != id) i++;
        memmove(&m->order[i], &m->order[i + 1], (m->n - i - 1) * sizeof(m->order[0]));
        m->n--;
        assert_int_equal(last, model_user_conns(m, user_of(id)) == 0);
      } else {
        assert_int_equal(last, 0);
      }
    }
    assert_int_equal(ch_presence_count(h, "c:big"), m->n);
    if (step % 97 == 0) {
      assert_int_equal(ch_presence_user_count(h, "c:big"), model_users(m));
      size_t cap = (size_t)(rnd() % (NCLIENTS + 2));
      size_t listed;
      cJSON *a = listing(h, "c:big", cap, &listed);
      assert_int_equal(listed, m->n < cap ? m->n : cap);
      for (size_t i = 0; i < listed; i++) {
        char want[24];
        snprintf(want, sizeof(want), "%llu", (unsigned long long)m->order[i]);
        assert_string_equal(str_at(a, (int)i, "clientId"), want);
      }
      cJSON_Delete(a);
    }
  }
  free(m);
  hub_free(h); /* whatever is left is freed by dispose (ASan: no leak) */
}

/* Many connections in one room: adding and removing stay cheap (a quadratic
 * set would take seconds here, and this bounds the work, not the time). */
static void test_a_room_of_fifty_thousand(void **state) {
  (void)state;
  ch_hub_t *h = hub_new();
  const uint64_t n = 50000;
  for (uint64_t i = 1; i <= n; i++) {
    ch_presence_entry_t e = entry(i, i % 2 ? "odd" : "even", "d", "s");
    assert_int_equal(ch_presence_add(h, "c:huge", &e), i <= 2);
  }
  assert_int_equal(ch_presence_count(h, "c:huge"), n);
  assert_int_equal(ch_presence_user_count(h, "c:huge"), 2);
  size_t listed;
  cJSON *a = listing(h, "c:huge", 100, &listed);
  assert_int_equal(listed, 100);
  assert_string_equal(str_at(a, 99, "clientId"), "100");
  cJSON_Delete(a);
  for (uint64_t i = 1; i <= n; i++) {
    ch_presence_entry_t out;
    int found;
    int last = ch_presence_remove(h, "c:huge", i, &out, &found);
    assert_int_equal(found, 1);
    assert_int_equal(last, i >= n - 1);
  }
  assert_int_equal(h->presence.count, 0);
  hub_free(h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_first_and_last_connection_of_a_user),
      cmocka_unit_test(test_listing_is_in_join_order_and_capped),
      cmocka_unit_test(test_listing_escapes_strings),
      cmocka_unit_test(test_claims_live_with_the_set),
      cmocka_unit_test(test_random_operations_match_a_model),
      cmocka_unit_test(test_a_room_of_fifty_thousand),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
