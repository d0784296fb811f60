/*
 * args.c — shared argument parsing for the subcommands (see args.h).
 */
#include "cli/args.h"

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/err.h"

const char ch_cli_common_help[] =
    "common options:\n"
    "  --data-dir DIR    the hub's data directory (default ./data; env CHORUS_DATA_DIR)\n"
    "  --config FILE     read data-dir from the hub's config file (env CHORUS_CONFIG)\n"
    "  -h, --help        this text\n"
    "exit codes: 0 ok, 1 failure, 2 usage error\n";

int ch_cli_args_parse(const char *cmd, int argc, char **argv, const ch_cli_opt_t *opts, size_t nopts,
                      int maxpos, ch_cli_args_t *a) {
  ch_buf_t err = CH_BUF_INIT;
  char **rest = NULL;
  int nrest = 0, rc = 0;
  memset(a->pos, 0, sizeof a->pos);
  a->npos = 0;
  a->help = 0;
  if (maxpos > (int)CH_ARRAY_SIZE(a->pos)) maxpos = (int)CH_ARRAY_SIZE(a->pos);
  ch_config_init(&a->cfg);
  if (ch_config_load(&a->cfg, argc, argv, &rest, &nrest, &err) != 0) {
    fprintf(stderr, "%s", ch_buf_cstr(&err));
    rc = CH_CLI_EXIT_USAGE;
    goto Exit;
  }
  for (int i = 0; i < nrest; i++) {
    const char *arg = rest[i];
    if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
      a->help = 1;
      continue;
    }
    if (strncmp(arg, "--", 2) == 0 && arg[2] != '\0') {
      const char *eq = strchr(arg, '=');
      size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
      const ch_cli_opt_t *o = NULL;
      for (size_t k = 0; k < nopts; k++)
        if (strlen(opts[k].name) == n && memcmp(opts[k].name, arg, n) == 0) o = &opts[k];
      if (o == NULL) {
        fprintf(stderr, "chorus %s: unknown option %.*s (see `chorus %s --help`)\n", cmd, (int)n, arg, cmd);
        rc = CH_CLI_EXIT_USAGE;
        goto Exit;
      }
      if (o->on) {
        if (eq) {
          fprintf(stderr, "chorus %s: %s takes no value\n", cmd, o->name);
          rc = CH_CLI_EXIT_USAGE;
          goto Exit;
        }
        *o->on = 1;
        continue;
      }
      const char *v;
      if (eq) {
        v = eq + 1;
      } else if (i + 1 < nrest) {
        v = rest[++i];
      } else {
        fprintf(stderr, "chorus %s: %s needs a value\n", cmd, o->name);
        rc = CH_CLI_EXIT_USAGE;
        goto Exit;
      }
      if (o->val) {
        *o->val = v;
      } else {
        *o->list = ch_xrealloc((void *)*o->list, (*o->nlist + 1) * sizeof(**o->list));
        (*o->list)[(*o->nlist)++] = v;
      }
      continue;
    }
    if (a->npos >= maxpos) {
      fprintf(stderr, "chorus %s: unexpected argument '%s' (see `chorus %s --help`)\n", cmd, arg, cmd);
      rc = CH_CLI_EXIT_USAGE;
      goto Exit;
    }
    a->pos[a->npos++] = arg;
  }
Exit:
  ch_buf_dispose(&err);
  return rc;
}

int ch_cli_open_store(const char *cmd, const char *data_dir, ch_store_t **st) {
  ch_buf_t err = CH_BUF_INIT;
  int rc = ch_store_open(data_dir, st, &err);
  if (rc != 0) {
    const char *m = ch_buf_cstr(&err);
    size_t n = strlen(m);
    fprintf(stderr, "chorus %s: cannot open the store in %s: %s%s", cmd, data_dir, n ? m : ch_strerror(rc),
            n && m[n - 1] == '\n' ? "" : "\n");
  }
  ch_buf_dispose(&err);
  return rc == 0 ? 0 : CH_CLI_EXIT_FAIL;
}
