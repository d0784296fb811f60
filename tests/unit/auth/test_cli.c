/*
 * test_cli.c — the credential subcommands (src/cli/credentials.c) run
 * in-process against a temporary data directory and the real SQLite store:
 * exit codes (0 / 1 / 2), --help, stdout holding exactly the secret, and the
 * secrets they print accepted by the auth module on the same directory
 * (token verified, PIN redeemed once, API key resolved until revoked); the
 * list never shows a key; stderr never contains the secret.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/auth.h"
#include "cli/cli.h"
#include "core/clock.h"
#include "core/err.h"
#include "store/store.h"

static char root[256], data_dir[300], ddflag[320];
static char out[8192], errtext[8192];

static int setup(void **state) {
  (void)state;
  snprintf(root, sizeof root, "/tmp/chorus-cli-test-XXXXXX");
  if (!mkdtemp(root)) return -1;
  snprintf(data_dir, sizeof data_dir, "%s/data", root);
  snprintf(ddflag, sizeof ddflag, "--data-dir=%s", data_dir);
  unsetenv("CHORUS_CONFIG");
  unsetenv("CHORUS_DATA_DIR");
  return 0;
}

static int teardown(void **state) {
  (void)state;
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  return system(cmd) == 0 ? 0 : -1;
}

static void slurp(int fd, char *buf, size_t cap) {
  lseek(fd, 0, SEEK_SET);
  ssize_t n = read(fd, buf, cap - 1);
  buf[n > 0 ? n : 0] = '\0';
}

/* Run fn(argc, argv) with stdout/stderr captured into out/errtext. */
static int runv(int (*fn)(int, char **), int argc, char **argv) {
  char p1[320], p2[320];
  snprintf(p1, sizeof p1, "%s/out", root);
  snprintf(p2, sizeof p2, "%s/err", root);
  fflush(stdout);
  fflush(stderr);
  int o = open(p1, O_RDWR | O_CREAT | O_TRUNC, 0600), e = open(p2, O_RDWR | O_CREAT | O_TRUNC, 0600);
  int so = dup(1), se = dup(2);
  dup2(o, 1);
  dup2(e, 2);
  int rc = fn(argc, argv);
  fflush(stdout);
  fflush(stderr);
  dup2(so, 1);
  dup2(se, 2);
  close(so);
  close(se);
  slurp(o, out, sizeof out);
  slurp(e, errtext, sizeof errtext);
  close(o);
  close(e);
  return rc;
}

/* run(fn, "token", "--user", "u", ..., NULL) */
static int run(int (*fn)(int, char **), ...) {
  char *argv[32];
  int argc = 0;
  va_list ap;
  va_start(ap, fn);
  for (const char *a; (a = va_arg(ap, const char *)) != NULL;) argv[argc++] = (char *)a;
  va_end(ap);
  argv[argc] = NULL;
  return runv(fn, argc, argv);
}

/* out holds exactly one line: return it without the newline. */
static const char *one_line(void) {
  size_t n = strlen(out);
  assert_true(n > 1);
  assert_int_equal(out[n - 1], '\n');
  out[n - 1] = '\0';
  assert_null(strchr(out, '\n'));
  return out;
}

static void load_secret(ch_auth_secret_t *s) {
  assert_int_equal(ch_auth_secret_load(data_dir, 0, s, NULL, NULL), 0);
}

static void test_token(void **state) {
  (void)state;
  assert_int_equal(run(ch_cli_token, "token", "--help", NULL), 0);
  assert_non_null(strstr(out, "usage: chorus token"));
  assert_int_equal(run(ch_cli_token, "token", ddflag, "--user", "alice", "--device", "laptop", NULL), 0);
  char tok[4096];
  snprintf(tok, sizeof tok, "%s", one_line());
  assert_null(strstr(errtext, tok));
  ch_auth_secret_t s;
  load_secret(&s);
  ch_identity_t id;
  int64_t now = ch_clock_wall_ms();
  assert_int_equal(ch_auth_token_verify(&s, tok, now, &id, NULL), 0);
  assert_string_equal(id.user_id, "alice");
  assert_string_equal(id.device_id, "laptop");
  assert_int_equal(id.scopes, CH_SCOPE_READ | CH_SCOPE_WRITE);
  /* Default ttl 30 days (minted within the last seconds). */
  int64_t d = id.expires_ms - now;
  assert_true(d > (int64_t)30 * 86400000 - 10000 && d <= (int64_t)30 * 86400000);

  assert_int_equal(run(ch_cli_token, "token", ddflag, "--user=bob", "--device=phone", "--scopes",
                       "read", "--ttl", "90m", NULL), 0);
  assert_int_equal(ch_auth_token_verify(&s, one_line(), now, &id, NULL), 0);
  assert_int_equal(id.scopes, CH_SCOPE_READ);
  d = id.expires_ms - now;
  assert_true(d > 90 * 60000 - 10000 && d <= 90 * 60000);
  assert_int_equal(run(ch_cli_token, "token", ddflag, "--user=bob", "--device=phone", "--ttl=0", NULL), 0);
  assert_int_equal(ch_auth_token_verify(&s, one_line(), now, &id, NULL), 0);
  assert_true(id.expires_ms == 0);
  const char *ttls[][2] = {{"3600", "3600"}, {"45s", "45"}, {"24h", "86400"}, {"2d", "172800"}};
  for (size_t i = 0; i < 4; i++) {
    assert_int_equal(run(ch_cli_token, "token", ddflag, "--user=u", "--device=d", "--ttl", ttls[i][0], NULL), 0);
    assert_int_equal(ch_auth_token_verify(&s, one_line(), now, &id, NULL), 0);
    d = id.expires_ms - now;
    int64_t want = atoll(ttls[i][1]) * 1000;
    assert_true(d > want - 10000 && d <= want);
  }

  /* Usage errors: exit 2, nothing on stdout. */
  const char *bad[][8] = {
      {"token", ddflag, "--device", "d", NULL},
      {"token", ddflag, "--user", "u", NULL},
      {"token", ddflag, "--user", "a b", "--device", "d", NULL},
      {"token", ddflag, "--user", "u", "--device", "d", "--ttl", NULL},
      {"token", ddflag, "--user", "u", "--device", "d", "--ttl=5x", NULL},
      {"token", ddflag, "--user", "u", "--device", "d", "--ttl=-1", NULL},
      {"token", ddflag, "--user", "u", "--device", "d", "--ttl=99999d", NULL},
      {"token", ddflag, "--user", "u", "--device", "d", "--scopes=root", NULL},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *argv[8];
    int argc = 0;
    while (argc < 8 && bad[i][argc]) {
      argv[argc] = (char *)bad[i][argc];
      argc++;
    }
    int rc = runv(ch_cli_token, argc, argv);
    if (rc != 2) fail_msg("case %zu: exit %d, want 2", i, rc);
    assert_string_equal(out, "");
    assert_true(strlen(errtext) > 0);
  }
  assert_int_equal(run(ch_cli_token, "token", ddflag, "--user", "u", "--device", "d", "--what", NULL), 2);
  assert_non_null(strstr(errtext, "--what"));
  assert_int_equal(run(ch_cli_token, "token", ddflag, "--user", "u", "--device", "d", "extra", NULL), 2);

  /* A secret file others can read: failure (1), with the fix in the message. */
  char path[400];
  snprintf(path, sizeof path, "%s/secret.key", data_dir);
  assert_int_equal(chmod(path, 0644), 0);
  assert_int_equal(run(ch_cli_token, "token", ddflag, "--user", "u", "--device", "d", NULL), 1);
  assert_string_equal(out, "");
  assert_non_null(strstr(errtext, "chmod 600"));
  assert_int_equal(chmod(path, 0600), 0);
}

static void test_pin(void **state) {
  (void)state;
  assert_int_equal(run(ch_cli_pin, "pin", "-h", NULL), 0);
  assert_non_null(strstr(out, "usage: chorus pin"));
  assert_int_equal(run(ch_cli_pin, "pin", ddflag, NULL), 2);
  assert_int_equal(run(ch_cli_pin, "pin", ddflag, "--user", "no/slash", NULL), 2);
  assert_int_equal(run(ch_cli_pin, "pin", ddflag, "--user", "carol", NULL), 0);
  char pin[16];
  snprintf(pin, sizeof pin, "%s", one_line());
  assert_true(ch_auth_pin_valid(pin));
  assert_null(strstr(errtext, pin));

  ch_auth_secret_t s;
  load_secret(&s);
  ch_store_t *st = NULL;
  assert_int_equal(ch_store_open(data_dir, &st, NULL), 0);
  ch_identity_t id;
  int64_t now = ch_clock_wall_ms();
  assert_int_equal(ch_auth_pin_redeem(st, &s, pin, now, &id), 0);
  assert_string_equal(id.user_id, "carol");
  assert_int_equal(id.kind, CH_AUTH_KIND_PIN);
  assert_memory_equal(id.device_id, "dev-", 4);
  assert_int_equal(ch_auth_pin_redeem(st, &s, pin, now, &id), CH_EAUTH); /* single use */
  /* Valid 5 minutes: a fresh one is refused after that. */
  assert_int_equal(run(ch_cli_pin, "pin", ddflag, "--user", "carol", NULL), 0);
  snprintf(pin, sizeof pin, "%s", one_line());
  assert_int_equal(ch_auth_pin_redeem(st, &s, pin, now + 5 * 60000 + 5000, &id), CH_EAUTH);
  ch_store_close(st);
}

static void test_apikey(void **state) {
  (void)state;
  assert_int_equal(run(ch_cli_apikey, "apikey", "--help", NULL), 0);
  assert_non_null(strstr(out, "apikey add"));
  assert_int_equal(run(ch_cli_apikey, "apikey", ddflag, NULL), 2);
  assert_int_equal(run(ch_cli_apikey, "apikey", ddflag, "frob", NULL), 2);
  assert_int_equal(run(ch_cli_apikey, "apikey", ddflag, "add", NULL), 2);
  assert_int_equal(run(ch_cli_apikey, "apikey", ddflag, "add", "--user", "u", "--scopes", "x", NULL), 2);
  assert_int_equal(run(ch_cli_apikey, "apikey", ddflag, "add", "--user", "u", "--label", "a\nb", NULL), 2);
  assert_int_equal(run(ch_cli_apikey, "apikey", ddflag, "list", "--user", "u", NULL), 2);
  assert_int_equal(run(ch_cli_apikey, "apikey", ddflag, "revoke", NULL), 2);
  assert_int_equal(run(ch_cli_apikey, "apikey", ddflag, "revoke", "a", "b", NULL), 2);
  assert_string_equal(out, "");

  assert_int_equal(run(ch_cli_apikey, "apikey", ddflag, "add", "--user", "bot", "--label", "CI deploy",
                       "--scopes", "read,write", NULL), 0);
  char key[64];
  snprintf(key, sizeof key, "%s", one_line());
  assert_true(ch_auth_apikey_valid(key));
  assert_null(strstr(errtext, key));
  char kid[9];
  assert_int_equal(ch_auth_apikey_parse_id(key, kid), 0);
  assert_int_equal(run(ch_cli_apikey, "apikey", ddflag, "add", "--user", "root", "--scopes", "admin", NULL), 0);
  char key2[64];
  snprintf(key2, sizeof key2, "%s", one_line());

  ch_store_t *st = NULL;
  assert_int_equal(ch_store_open(data_dir, &st, NULL), 0);
  ch_identity_t id;
  assert_int_equal(ch_auth_apikey_resolve(st, key, &id), 0);
  assert_string_equal(id.user_id, "bot");
  assert_int_equal(id.scopes, CH_SCOPE_READ | CH_SCOPE_WRITE);
  assert_string_equal(id.key_id, kid);
  assert_int_equal(ch_auth_apikey_resolve(st, key2, &id), 0);
  assert_int_equal(id.scopes, CH_SCOPE_ALL);

  /* List: ids, users, label; never the keys or their hashes. */
  assert_int_equal(run(ch_cli_apikey, "apikey", ddflag, "list", NULL), 0);
  assert_non_null(strstr(out, "ID"));
  assert_non_null(strstr(out, kid));
  assert_non_null(strstr(out, "CI deploy"));
  assert_non_null(strstr(out, "read write admin"));
  assert_null(strstr(out, key));
  assert_null(strstr(out, key2));
  assert_null(strstr(out, key + 13));
  char hash[65];
  ch_auth_apikey_hash(key, hash);
  assert_null(strstr(out, hash));
  assert_int_equal(run(ch_cli_apikey, "apikey", ddflag, "list", "--json", NULL), 0);
  assert_non_null(strstr(out, "\"label\":\"CI deploy\""));
  assert_non_null(strstr(out, "\"revoked\":false"));
  assert_null(strstr(out, key + 13));

  /* Revoke by id: the key stops resolving; unknown ids fail with 1. */
  assert_int_equal(run(ch_cli_apikey, "apikey", ddflag, "revoke", key, NULL), 2); /* the key, not its id */
  assert_int_equal(run(ch_cli_apikey, "apikey", ddflag, "revoke", kid, NULL), 0);
  assert_int_equal(ch_auth_apikey_resolve(st, key, &id), CH_EAUTH);
  assert_int_equal(ch_auth_apikey_resolve(st, key2, &id), 0);
  assert_int_equal(run(ch_cli_apikey, "apikey", ddflag, "revoke", "ZZZZZZZZ", NULL), 1);
  assert_non_null(strstr(errtext, "ZZZZZZZZ"));
  assert_int_equal(run(ch_cli_apikey, "apikey", ddflag, "list", "--json", NULL), 0);
  assert_non_null(strstr(out, "\"revoked\":true"));
  ch_store_close(st);
}

static void test_data_dir_sources(void **state) {
  (void)state;
  /* CHORUS_DATA_DIR is honoured like the hub does; the flag wins over it. */
  char other[400];
  snprintf(other, sizeof other, "%s/envdir", root);
  setenv("CHORUS_DATA_DIR", other, 1);
  assert_int_equal(run(ch_cli_token, "token", "--user", "u", "--device", "d", NULL), 0);
  char path[450];
  snprintf(path, sizeof path, "%s/secret.key", other);
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0600);
  unsetenv("CHORUS_DATA_DIR");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_token),
      cmocka_unit_test(test_pin),
      cmocka_unit_test(test_apikey),
      cmocka_unit_test(test_data_dir_sources),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
