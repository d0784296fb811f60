/*
 * cli.h — the operator subcommands of the `chorus` binary other than serve.
 *
 * Each ch_cli_* is a main() for one subcommand: argv[0] is the subcommand's
 * name ("token", "pin", "apikey"), argv[1..argc) its arguments, exactly as
 * src/server/main.c hands `serve` its arguments (argc - 1, argv + 1). Each
 * returns the process exit code:
 *   0  success (the requested secret, alone on a line, on stdout)
 *   1  failure (cannot open the store, secret file refused, unknown key id ...)
 *   2  usage error (unknown flag, missing or invalid value)
 * Messages go to stderr; --help / -h prints usage on stdout and returns 0.
 *
 * Every subcommand takes the hub's config sources for the data directory:
 * --data-dir DIR (default ./data), CHORUS_DATA_DIR, or `data-dir` in the file
 * named by --config FILE / CHORUS_CONFIG — so it works on the same directory
 * as a hub started the same way, also while that hub runs (secret.key is
 * created race-free when missing, else only read; the SQLite store in WAL
 * mode lets a second process write).
 */
#ifndef CH_CLI_CLI_H
#define CH_CLI_CLI_H

/* chorus token --user U --device D [--scopes S] [--ttl T]
 * Prints a signed access token (JWT HS256). T: seconds, or a number with
 * s/m/h/d (90m, 24h, 30d); 0 = never expires; default 30d. S default
 * "read write". Creates data_dir/secret.key when missing. */
int ch_cli_token(int argc, char **argv);

/* chorus pin --user U
 * Prints a fresh single-use 6-digit pairing PIN, valid 5 minutes. */
int ch_cli_pin(int argc, char **argv);

/* chorus apikey add --user U [--scopes S] [--label L]   prints the new key (shown only now)
 * chorus apikey list [--json]                            id, user, scopes, label, created, revoked
 * chorus apikey revoke ID                                 revokes by key id */
int ch_cli_apikey(int argc, char **argv);

#endif
