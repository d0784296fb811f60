/*
 * exec.h — pieces of the `exec` agent back end (exec.c) that are pure, for
 * the unit tests: splitting the command line of a spec into argv.
 */
#ifndef CH_AGENT_EXEC_H
#define CH_AGENT_EXEC_H

#include <stddef.h>

/* Split a command line into words, without a shell: blanks (space, tab)
 * separate words; '...' keeps its text as is; "..." keeps its text except
 * that \" and \\ stand for " and \; outside quotes a backslash keeps the next
 * character as is; quotes next to text join it ("a"'b'c is one word abc).
 * No variables, globbing, pipes or redirections. On success *argv is a
 * NULL-terminated array (owned by the caller: ch_agent_exec_argv_free) of
 * *argc >= 1 words. Returns 0 or CH_EINVAL (no word, an unterminated quote,
 * a trailing backslash). */
int ch_agent_exec_split(const char *line, char ***argv, size_t *argc);
void ch_agent_exec_argv_free(char **argv);

#endif
