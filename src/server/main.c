/*
 * main.c — the `chorus` command line: one binary, subcommands.
 *
 *   chorus [serve] [--listen HOST:PORT] [--config FILE] [...]   run the hub (default)
 *   chorus token|pin|apikey ...                                 credentials (src/cli/credentials.c)
 *   chorus export|import ...                                    JSON export and restore (src/cli/export.c)
 *   chorus version                                              print the version
 *   chorus help | --help                                        usage
 *
 * Exit codes: 0 success, 1 failure, 2 usage error.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/export.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "server/server.h"

static void ch__usage(FILE *f) {
  fprintf(f,
          "chorus %s — a real-time conversation sync hub\n\n"
          "usage: chorus <command> [options]\n\n"
          "commands:\n"
          "  serve     run the hub (the default when no command is given)\n"
          "  token     mint a signed token for a user and device\n"
          "  pin       issue a 6-digit pairing PIN for a user\n"
          "  apikey    add, list or revoke API keys\n"
          "  export    write conversations as JSON (chorus format, or one file each as profile unified)\n"
          "  import    restore an export, or a folder of unified per-conversation files\n"
          "  version   print the version\n"
          "  help      this text; `chorus <command> --help` for a command's options\n",
          CH_VERSION);
}

static int ch__cmd_serve(int argc, char **argv) {
  ch_config_t cfg;
  ch_config_init(&cfg);
  ch_buf_t err = CH_BUF_INIT;
  char **rest = NULL;
  int nrest = 0;
  int rc = 2;
  if (ch_config_load(&cfg, argc, argv, &rest, &nrest, &err) != 0) {
    fputs(ch_buf_cstr(&err), stderr);
    fputs("(see `chorus serve --help`)\n", stderr);
    goto Exit;
  }
  for (int i = 0; i < nrest; i++) {
    if (strcmp(rest[i], "--help") == 0 || strcmp(rest[i], "-h") == 0) {
      ch_buf_t u = CH_BUF_INIT;
      ch_config_usage(&u);
      printf("usage: chorus serve [options]\n\nRun the hub. Options (also CHORUS_<KEY> environment "
             "variables and `key = value` lines in --config FILE; flags win over env over file):\n\n%s",
             ch_buf_cstr(&u));
      ch_buf_dispose(&u);
      rc = 0;
      goto Exit;
    }
  }
  if (nrest > 0) {
    if (strncmp(rest[0], "--", 2) == 0) ch_config_unknown_flag(rest[0], &err);
    else ch_buf_printf(&err, "serve: unexpected argument '%s'\n", rest[0]);
    fputs(ch_buf_cstr(&err), stderr);
    goto Exit;
  }
  ch_log_setup((ch_log_level_t)cfg.log_level, cfg.log_format == CH_CONFIG_LOG_JSON);
  rc = ch_server_run(&cfg);
Exit:
  ch_buf_dispose(&err);
  ch_config_dispose(&cfg);
  return rc;
}

int main(int argc, char **argv) {
  const char *cmd = argc > 1 ? argv[1] : "serve";
  if (argc > 1 && argv[1][0] == '-' && strcmp(argv[1], "--help") != 0 && strcmp(argv[1], "-h") != 0 &&
      strcmp(argv[1], "--version") != 0) {
    /* Options without a command: `chorus --listen ...` means serve. */
    return ch__cmd_serve(argc, argv);
  }
  if (strcmp(cmd, "serve") == 0) return ch__cmd_serve(argc > 1 ? argc - 1 : argc, argc > 1 ? argv + 1 : argv);
  if (strcmp(cmd, "token") == 0) return ch_cli_token(argc - 1, argv + 1);
  if (strcmp(cmd, "pin") == 0) return ch_cli_pin(argc - 1, argv + 1);
  if (strcmp(cmd, "apikey") == 0) return ch_cli_apikey(argc - 1, argv + 1);
  if (strcmp(cmd, "export") == 0) return ch_cli_export(argc - 1, argv + 1);
  if (strcmp(cmd, "import") == 0) return ch_cli_import(argc - 1, argv + 1);
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    printf("chorus %s\n", CH_VERSION);
    return 0;
  }
  if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
    ch__usage(stdout);
    return 0;
  }
  fprintf(stderr, "chorus: unknown command '%s'\n\n", cmd);
  ch__usage(stderr);
  return 2;
}
