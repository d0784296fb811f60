/*
 * test_exec_split.c — the exec agent's command-line splitting
 * (ch_agent_exec_split, agent/exec.h): words, the two quotes, backslashes,
 * joined pieces, empty words, and the refusals (no word, an unterminated
 * quote, a trailing backslash). Each input is read from right before a
 * PROT_NONE guard page, so reading past its NUL faults.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/exec.h"
#include "core/err.h"

static char *g_guard;

static int setup_guard(void **state) {
  (void)state;
  long page = sysconf(_SC_PAGESIZE);
  char *m = mmap(NULL, 2 * (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(m != MAP_FAILED);
  assert_int_equal(mprotect(m + page, (size_t)page, PROT_NONE), 0);
  g_guard = m + page;
  return 0;
}

static const char *guarded(const char *s) {
  size_t n = strlen(s) + 1;
  memcpy(g_guard - n, s, n);
  return g_guard - n;
}

/* want: the words joined by '|' */
static void ok(const char *line, const char *want, size_t want_n) {
  char **argv = NULL;
  size_t argc = 0;
  assert_int_equal(ch_agent_exec_split(guarded(line), &argv, &argc), 0);
  char got[512] = "";
  for (size_t i = 0; i < argc; i++) {
    if (i) strcat(got, "|");
    strcat(got, argv[i]);
  }
  if (strcmp(got, want) != 0 || argc != want_n || argv[argc] != NULL) {
    fprintf(stderr, "split of <%s>: got <%s> (%zu words), want <%s> (%zu)\n", line, got, argc, want, want_n);
    fail();
  }
  ch_agent_exec_argv_free(argv);
}

static void bad(const char *line) {
  char **argv = (char **)1;
  size_t argc = 99;
  assert_int_equal(ch_agent_exec_split(guarded(line), &argv, &argc), CH_EINVAL);
  assert_null(argv);
  assert_int_equal(argc, 0);
}

static void test_words(void **state) {
  (void)state;
  ok("prog", "prog", 1);
  ok("  /usr/bin/python3   agent.py\t--x  1 ", "/usr/bin/python3|agent.py|--x|1", 4);
  ok("a 'b c' d", "a|b c|d", 3);
  ok("'it''s'", "its", 1);
  ok("\"a \\\"q\\\" \\\\ b\"", "a \"q\" \\ b", 1);
  ok("\"keep \\n and \\x\"", "keep \\n and \\x", 1);
  ok("'single \\ \" kept'", "single \\ \" kept", 1);
  ok("a\\ b c", "a b|c", 2);
  ok("\\'x", "'x", 1);
  ok("\"a\"'b'c", "abc", 1);
  ok("x '' y", "x||y", 3);
  ok("\"\"", "", 1);
  ok("caf\xc3\xa9 \xe2\x82\xac", "caf\xc3\xa9|\xe2\x82\xac", 2);
}

static void test_refusals(void **state) {
  (void)state;
  bad("");
  bad("   \t ");
  bad("'abc");
  bad("a \"abc");
  bad("a \"ab\\\"");
  bad("abc\\");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_words),
      cmocka_unit_test(test_refusals),
  };
  return cmocka_run_group_tests(tests, setup_guard, NULL);
}
