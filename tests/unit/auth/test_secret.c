/*
 * test_secret.c — auth/secret.c on a real temporary directory: creation of
 * missing directories (0700) and the key file (0600, 64 hex + newline, even
 * under umask 0), reuse, create = 0, refusal of group/other-accessible files
 * with a clear message that never contains the key, bad content, a
 * non-regular file, no temporary files left behind, and many processes
 * racing to create it (all must end with the same key, exactly one creator).
 */
#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/auth.h"
#include "core/err.h"

static char root[256];

static int setup(void **state) {
  (void)state;
  snprintf(root, sizeof root, "/tmp/chorus-auth-test-XXXXXX");
  return mkdtemp(root) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  return system(cmd) == 0 ? 0 : -1;
}

static void path_of(char *out, size_t n, const char *rel) { snprintf(out, n, "%s/%s", root, rel); }

static void write_file(const char *path, const char *text, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  assert_int_equal(chmod(path, mode), 0);
}

static void hex_of(const ch_auth_secret_t *s, char out[65]) {
  for (int i = 0; i < 32; i++) sprintf(out + 2 * i, "%02x", s->key[i]);
}

static void test_create_and_reuse(void **state) {
  (void)state;
  char dir[512], file[600], parent[512];
  path_of(dir, sizeof dir, "nested/deeper/data");
  path_of(parent, sizeof parent, "nested");
  snprintf(file, sizeof file, "%s/secret.key", dir);
  mode_t old = umask(0); /* creation must not depend on the umask */
  ch_auth_secret_t a, b;
  int created = -1;
  ch_buf_t err = CH_BUF_INIT;
  assert_int_equal(ch_auth_secret_load(dir, 1, &a, &created, &err), 0);
  umask(old);
  assert_int_equal(created, 1);
  assert_int_equal(err.len, 0);

  struct stat st;
  assert_int_equal(stat(dir, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0700);
  assert_int_equal(stat(parent, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0700);
  assert_int_equal(stat(file, &st), 0);
  assert_true(S_ISREG(st.st_mode));
  assert_int_equal(st.st_mode & 07777, 0600);
  assert_int_equal(st.st_size, 65);

  char text[128] = {0}, hex[65];
  FILE *f = fopen(file, "r");
  assert_non_null(f);
  assert_int_equal(fread(text, 1, sizeof text - 1, f), 65);
  fclose(f);
  hex_of(&a, hex);
  assert_memory_equal(text, hex, 64);
  assert_int_equal(text[64], '\n');

  /* Only secret.key in the directory: no temporary file left. */
  DIR *d = opendir(dir);
  assert_non_null(d);
  int entries = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
      entries++;
      assert_string_equal(e->d_name, "secret.key");
    }
  closedir(d);
  assert_int_equal(entries, 1);

  /* Reused, not recreated; also with create = 0. */
  assert_int_equal(ch_auth_secret_load(dir, 1, &b, &created, &err), 0);
  assert_int_equal(created, 0);
  assert_memory_equal(a.key, b.key, 32);
  memset(&b, 0, sizeof b);
  assert_int_equal(ch_auth_secret_load(dir, 0, &b, NULL, NULL), 0);
  assert_memory_equal(a.key, b.key, 32);

  /* Not all zero, and another directory gets another key. */
  static const unsigned char zero[32];
  assert_memory_not_equal(a.key, zero, 32);
  char dir2[512];
  path_of(dir2, sizeof dir2, "other");
  assert_int_equal(ch_auth_secret_load(dir2, 1, &b, &created, NULL), 0);
  assert_int_equal(created, 1);
  assert_memory_not_equal(a.key, b.key, 32);

  ch_auth_secret_dispose(&b);
  assert_memory_equal(b.key, zero, 32);
  ch_buf_dispose(&err);
}

static void test_missing_no_create(void **state) {
  (void)state;
  char dir[512];
  path_of(dir, sizeof dir, "absent");
  ch_auth_secret_t s;
  ch_buf_t err = CH_BUF_INIT;
  int created = 7;
  assert_int_equal(ch_auth_secret_load(dir, 0, &s, &created, &err), CH_ENOTFOUND);
  assert_int_equal(created, 0);
  assert_non_null(strstr(ch_buf_cstr(&err), "absent/secret.key"));
  struct stat st;
  assert_int_equal(stat(dir, &st), -1); /* nothing created */
  ch_buf_dispose(&err);
  assert_int_equal(ch_auth_secret_load(NULL, 1, &s, NULL, NULL), CH_EINVAL);
  assert_int_equal(ch_auth_secret_load("", 1, &s, NULL, NULL), CH_EINVAL);
}

static void test_permissions(void **state) {
  (void)state;
  char dir[512], file[600];
  path_of(dir, sizeof dir, "perm");
  snprintf(file, sizeof file, "%s/secret.key", dir);
  ch_auth_secret_t s;
  assert_int_equal(ch_auth_secret_load(dir, 1, &s, NULL, NULL), 0);
  char hex[65];
  hex_of(&s, hex);
  const mode_t bad[] = {0644, 0640, 0604, 0660, 0666, 0601, 0610, 0700 | 0004};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(chmod(file, bad[i]), 0);
    ch_buf_t err = CH_BUF_INIT;
    ch_auth_secret_t t;
    memset(&t, 0x55, sizeof t);
    assert_int_equal(ch_auth_secret_load(dir, 1, &t, NULL, &err), CH_EPERM);
    const char *msg = ch_buf_cstr(&err);
    assert_non_null(strstr(msg, "secret.key"));
    assert_non_null(strstr(msg, "chmod 600"));
    assert_null(strstr(msg, hex));   /* the key never appears */
    assert_null(strstr(msg, hex + 32));
    ch_buf_dispose(&err);
  }
  /* Owner-only modes are fine. */
  assert_int_equal(chmod(file, 0400), 0);
  ch_auth_secret_t t;
  assert_int_equal(ch_auth_secret_load(dir, 0, &t, NULL, NULL), 0);
  assert_memory_equal(s.key, t.key, 32);
  assert_int_equal(chmod(file, 0600), 0);
}

static void test_bad_content(void **state) {
  (void)state;
  char dir[512], file[600];
  path_of(dir, sizeof dir, "content");
  mkdir(dir, 0700);
  snprintf(file, sizeof file, "%s/secret.key", dir);
  ch_auth_secret_t s;
  ch_buf_t err = CH_BUF_INIT;
  const char *bad[] = {
      "not hex at all\n",
      "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg\n", /* 'g' */
      "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef00\n", /* 66 */
      "0123456789abcdef\n",                                                   /* short */
      "",                                                                     /* empty */
      "0123456789abcdef0123456789abcdef 0123456789abcdef0123456789abcdef\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    write_file(file, bad[i], 0600);
    err.len = 0;
    assert_int_equal(ch_auth_secret_load(dir, 1, &s, NULL, &err), CH_ECONFIG);
    assert_non_null(strstr(ch_buf_cstr(&err), "secret.key"));
  }
  /* Upper case and trailing blanks are accepted. */
  write_file(file, "00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff \r\n", 0600);
  assert_int_equal(ch_auth_secret_load(dir, 0, &s, NULL, &err), 0);
  assert_int_equal(s.key[0], 0x00);
  assert_int_equal(s.key[1], 0x11);
  assert_int_equal(s.key[10], 0xAA);
  assert_int_equal(s.key[31], 0xFF);
  /* A directory in its place. */
  unlink(file);
  assert_int_equal(mkdir(file, 0700), 0);
  err.len = 0;
  assert_int_equal(ch_auth_secret_load(dir, 1, &s, NULL, &err), CH_EPERM);
  assert_non_null(strstr(ch_buf_cstr(&err), "not a regular file"));
  rmdir(file);
  ch_buf_dispose(&err);
}

static void test_race(void **state) {
  (void)state;
  enum { N = 12 };
  char dir[512];
  path_of(dir, sizeof dir, "race/data");
  int fds[N][2];
  pid_t pids[N];
  int go[2];
  assert_int_equal(pipe(go), 0);
  for (int i = 0; i < N; i++) {
    assert_int_equal(pipe(fds[i]), 0);
    pids[i] = fork();
    assert_true(pids[i] >= 0);
    if (pids[i] == 0) {
      close(go[1]);
      char c;
      (void)!read(go[0], &c, 1); /* all start together when the pipe closes */
      ch_auth_secret_t s;
      int created = -1;
      char out[80];
      int rc = ch_auth_secret_load(dir, 1, &s, &created, NULL);
      out[0] = (char)('0' + (rc == 0));
      out[1] = (char)('0' + created);
      hex_of(&s, out + 2);
      (void)!write(fds[i][1], out, 66);
      _exit(0);
    }
    close(fds[i][1]);
  }
  close(go[0]);
  close(go[1]);
  char first[65] = {0};
  int creators = 0;
  for (int i = 0; i < N; i++) {
    char out[80] = {0};
    assert_int_equal(read(fds[i][0], out, 66), 66);
    close(fds[i][0]);
    int status;
    waitpid(pids[i], &status, 0);
    assert_int_equal(out[0], '1');
    creators += out[1] == '1';
    if (i == 0) memcpy(first, out + 2, 64);
    else assert_memory_equal(first, out + 2, 64);
  }
  assert_int_equal(creators, 1);
  ch_auth_secret_t s;
  assert_int_equal(ch_auth_secret_load(dir, 0, &s, NULL, NULL), 0);
  char hex[65];
  hex_of(&s, hex);
  assert_memory_equal(first, hex, 64);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_create_and_reuse), cmocka_unit_test(test_missing_no_create),
      cmocka_unit_test(test_permissions),      cmocka_unit_test(test_bad_content),
      cmocka_unit_test(test_race),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
