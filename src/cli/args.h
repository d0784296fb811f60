/*
 * args.h — what every store-side subcommand shares: argument parsing (the
 * config sources first, for the data directory, then the command's own
 * options from the leftovers), the common help text, opening the store.
 */
#ifndef CH_CLI_ARGS_H
#define CH_CLI_ARGS_H

#include <stddef.h>

#include "core/config.h"
#include "store/store.h"

#define CH_CLI_EXIT_OK 0
#define CH_CLI_EXIT_FAIL 1
#define CH_CLI_EXIT_USAGE 2

/* One option. Exactly one of on / val / list is set. */
typedef struct {
  const char *name;   /* "--user" */
  int *on;            /* a switch (takes no value): set to 1 */
  const char **val;   /* a value (the last one wins), borrowed from argv */
  const char ***list; /* repeatable: values appended to *list (owned array of borrowed strings) */
  size_t *nlist;
} ch_cli_opt_t;

typedef struct {
  ch_config_t cfg;    /* the hub's configuration sources (data-dir, config file, env) */
  const char *pos[4]; /* positional arguments, in order (borrowed from argv) */
  int npos;
  int help;           /* -h / --help was given */
} ch_cli_args_t;

extern const char ch_cli_common_help[];

/* Parse argv (argv[0] is the subcommand). 0, or CH_CLI_EXIT_USAGE after
 * printing why. a->cfg must be disposed either way. */
int ch_cli_args_parse(const char *cmd, int argc, char **argv, const ch_cli_opt_t *opts, size_t nopts,
                      int maxpos, ch_cli_args_t *a);
/* Open the store of data_dir: 0, or CH_CLI_EXIT_FAIL after printing why. */
int ch_cli_open_store(const char *cmd, const char *data_dir, ch_store_t **st);

#endif
