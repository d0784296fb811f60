/*
 * credentials.c — `chorus token`, `chorus pin`, `chorus apikey ...`: the
 * operator's way to hand out credentials, on the hub's data directory.
 *
 *   argv ──ch_config_load──> data_dir (--data-dir / CHORUS_DATA_DIR / --config file)
 *        └─ leftovers ──ch__opts_parse──> --user, --device, --scopes, --ttl, --label, positionals
 *
 *   token   secret.key (created if missing) ──> ch_auth_token_mint ──> stdout
 *   pin     secret.key + store ──> ch_auth_pin_issue ──> stdout
 *   apikey  store ──> add (ch_auth_apikey_generate + apikey_put) | list | revoke
 *
 * The secret a command produces is the only thing on stdout (one line), so
 * `TOKEN=$(chorus token ...)` works; explanations go to stderr, and only when
 * stderr is a terminal. Secrets are never written anywhere else: not to logs,
 * not to error messages. API keys and PINs are stored hashed (see auth.h).
 *
 * Exit codes: 0 ok, 1 failure, 2 usage (see cli.h).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "auth/auth.h"
#include "cli/args.h"
#include "cli/cli.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/err.h"
#include "store/store.h"


#define CH__DEFAULT_TTL_S ((int64_t)30 * 86400)
#define CH__MAX_TTL_S ((int64_t)10 * 366 * 86400)
#define CH__LABEL_MAX 200


/* ------------------------------------------------------------- options */

/* "3600", "90m", "24h", "30d", "45s"; 0 = never. -1 when invalid. */
static int64_t ch__ttl_parse(const char *s) {
  if (s == NULL || *s < '0' || *s > '9') return -1;
  int64_t v = 0;
  const char *p = s;
  for (; *p >= '0' && *p <= '9'; p++) {
    v = v * 10 + (*p - '0');
    if (v > CH__MAX_TTL_S) return -1;
  }
  int64_t mul = 1;
  if (*p == 's') mul = 1, p++;
  else if (*p == 'm') mul = 60, p++;
  else if (*p == 'h') mul = 3600, p++;
  else if (*p == 'd') mul = 86400, p++;
  if (*p != '\0' || v > CH__MAX_TTL_S / mul) return -1;
  return v * mul;
}

static int ch__check_user(const char *cmd, const char *what, const char *v) {
  if (v == NULL) {
    fprintf(stderr, "chorus %s: %s is required (see `chorus %s --help`)\n", cmd, what, cmd);
    return CH_CLI_EXIT_USAGE;
  }
  if (!ch_auth_id_valid(v)) {
    fprintf(stderr, "chorus %s: %s must be 1..128 characters of A-Z a-z 0-9 . _ @ : -\n", cmd, what);
    return CH_CLI_EXIT_USAGE;
  }
  return 0;
}

static int ch__check_scopes(const char *cmd, const char *v, unsigned *out) {
  if (ch_auth_scopes_parse(v ? v : "read write", out) != 0) {
    fprintf(stderr, "chorus %s: --scopes takes read, write and/or admin (e.g. \"read write\")\n", cmd);
    return CH_CLI_EXIT_USAGE;
  }
  return 0;
}

static int ch__load_secret(const char *cmd, const char *data_dir, ch_auth_secret_t *s) {
  ch_buf_t err = CH_BUF_INIT;
  int created = 0;
  int rc = ch_auth_secret_load(data_dir, 1, s, &created, &err);
  if (rc != 0) fprintf(stderr, "chorus %s: %s", cmd, ch_buf_cstr(&err));
  else if (created && isatty(STDERR_FILENO))
    fprintf(stderr, "chorus %s: created a new signing secret in %s/%s\n", cmd, data_dir,
            CH_AUTH_SECRET_FILE);
  ch_buf_dispose(&err);
  return rc == 0 ? 0 : CH_CLI_EXIT_FAIL;
}


static void ch__store_error(const char *cmd, const char *what, int rc) {
  fprintf(stderr, "chorus %s: %s failed: %s\n", cmd, what, ch_strerror(rc));
}

/* --------------------------------------------------------------- token */

static void ch__token_help(void) {
  printf("usage: chorus token --user U --device D [--scopes S] [--ttl T] [--data-dir DIR]\n\n"
         "Print a signed access token (JWT, HS256) for user U on device D. Clients present it as\n"
         "?token=... or \"Authorization: Bearer ...\". It is signed with DIR/secret.key (created\n"
         "when missing), so the hub on the same data directory accepts it.\n\n"
         "  --user U      user id (1..128 of A-Z a-z 0-9 . _ @ : -)\n"
         "  --device D    device id (same characters)\n"
         "  --scopes S    read, write, admin; space- or comma-separated (default \"read write\")\n"
         "  --ttl T       lifetime: seconds, or with a unit 90m, 24h, 30d; 0 = never expires\n"
         "                (default 30d)\n\n%s",
         ch_cli_common_help);
}

int ch_cli_token(int argc, char **argv) {
  const char *user = NULL, *device = NULL, *scopes_s = NULL, *ttl_s = NULL;
  const ch_cli_opt_t opts[] = {
      {.name = "--user", .val = &user}, {.name = "--device", .val = &device},
      {.name = "--scopes", .val = &scopes_s}, {.name = "--ttl", .val = &ttl_s},
  };
  ch_cli_args_t a;
  ch_auth_secret_t secret;
  memset(&secret, 0, sizeof secret);
  char *tok = NULL;
  unsigned scopes = 0;
  int64_t ttl = CH__DEFAULT_TTL_S;
  int rc = ch_cli_args_parse("token", argc, argv, opts, CH_ARRAY_SIZE(opts), 0, &a);
  if (rc != 0) goto Exit;
  if (a.help) {
    ch__token_help();
    goto Exit;
  }
  if ((rc = ch__check_user("token", "--user", user)) != 0) goto Exit;
  if ((rc = ch__check_user("token", "--device", device)) != 0) goto Exit;
  if ((rc = ch__check_scopes("token", scopes_s, &scopes)) != 0) goto Exit;
  if (ttl_s != NULL && (ttl = ch__ttl_parse(ttl_s)) < 0) {
    fprintf(stderr, "chorus token: --ttl takes seconds or a number with s, m, h or d "
                    "(e.g. 3600, 90m, 24h, 30d; at most 10 years; 0 = never)\n");
    rc = CH_CLI_EXIT_USAGE;
    goto Exit;
  }
  if ((rc = ch__load_secret("token", a.cfg.data_dir, &secret)) != 0) goto Exit;
  int64_t now = ch_clock_wall_ms();
  if (ch_auth_token_mint(&secret, user, device, scopes, ttl, now, &tok) != 0) {
    fprintf(stderr, "chorus token: could not sign the token\n");
    rc = CH_CLI_EXIT_FAIL;
    goto Exit;
  }
  printf("%s\n", tok);
  if (fflush(stdout) != 0) rc = CH_CLI_EXIT_FAIL;
  if (isatty(STDERR_FILENO)) {
    char iso[CH_ISO8601_LEN + 1];
    if (ttl > 0) {
      ch_clock_iso8601(now / 1000 * 1000 + ttl * 1000, iso);
      fprintf(stderr, "token for %s on %s, expires %s\n", user, device, iso);
    } else {
      fprintf(stderr, "token for %s on %s, never expires\n", user, device);
    }
  }
Exit:
  if (tok) {
    OPENSSL_cleanse(tok, strlen(tok));
    free(tok);
  }
  ch_auth_secret_dispose(&secret);
  ch_config_dispose(&a.cfg);
  return rc;
}

/* ----------------------------------------------------------------- pin */

static void ch__pin_help(void) {
  printf("usage: chorus pin --user U [--data-dir DIR]\n\n"
         "Print a fresh 6-digit pairing PIN for user U. It is valid for 5 minutes and works\n"
         "once: a client that presents it (relay profile) becomes a new device of U.\n\n"
         "  --user U      user id (1..128 of A-Z a-z 0-9 . _ @ : -)\n\n%s",
         ch_cli_common_help);
}

int ch_cli_pin(int argc, char **argv) {
  const char *user = NULL;
  const ch_cli_opt_t opts[] = {{.name = "--user", .val = &user}};
  ch_cli_args_t a;
  ch_auth_secret_t secret;
  memset(&secret, 0, sizeof secret);
  ch_store_t *st = NULL;
  char pin[CH_AUTH_PIN_LEN + 1] = {0};
  int rc = ch_cli_args_parse("pin", argc, argv, opts, CH_ARRAY_SIZE(opts), 0, &a);
  if (rc != 0) goto Exit;
  if (a.help) {
    ch__pin_help();
    goto Exit;
  }
  if ((rc = ch__check_user("pin", "--user", user)) != 0) goto Exit;
  if ((rc = ch__load_secret("pin", a.cfg.data_dir, &secret)) != 0) goto Exit;
  if ((rc = ch_cli_open_store("pin", a.cfg.data_dir, &st)) != 0) goto Exit;
  int64_t now = ch_clock_wall_ms();
  int r = ch_auth_pin_issue(st, &secret, user, CH_AUTH_PIN_TTL_MS, now, pin);
  if (r != 0) {
    ch__store_error("pin", "storing the PIN", r);
    rc = CH_CLI_EXIT_FAIL;
    goto Exit;
  }
  printf("%s\n", pin);
  if (fflush(stdout) != 0) rc = CH_CLI_EXIT_FAIL;
  if (isatty(STDERR_FILENO)) {
    char iso[CH_ISO8601_LEN + 1];
    ch_clock_iso8601(now + CH_AUTH_PIN_TTL_MS, iso);
    fprintf(stderr, "PIN for %s, single use, valid until %s\n", user, iso);
  }
Exit:
  OPENSSL_cleanse(pin, sizeof pin);
  ch_store_close(st);
  ch_auth_secret_dispose(&secret);
  ch_config_dispose(&a.cfg);
  return rc;
}

/* -------------------------------------------------------------- apikey */

static void ch__apikey_help(void) {
  printf("usage: chorus apikey add --user U [--scopes S] [--label L] [--data-dir DIR]\n"
         "       chorus apikey list [--json] [--data-dir DIR]\n"
         "       chorus apikey revoke ID [--data-dir DIR]\n\n"
         "add     create an API key for user U and print it. This is the only time the key is\n"
         "        shown: the hub stores only its SHA-256 hash. Clients present it as\n"
         "        \"Authorization: Bearer chk_...\", ?token=chk_..., or as agent-ws's first message.\n"
         "          --user U     user id (1..128 of A-Z a-z 0-9 . _ @ : -)\n"
         "          --scopes S   read, write, admin; space- or comma-separated (default \"read write\")\n"
         "          --label L    a note for the list (up to 200 bytes, no control characters)\n"
         "list    show every key: id, user, scopes, label, created, revoked (never the key)\n"
         "          --json       one JSON array instead of a table\n"
         "revoke  revoke the key with id ID (the 8 characters after \"chk_\"); it stops working\n"
         "        for new connections at once\n\n%s",
         ch_cli_common_help);
}

static int ch__label_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > CH__LABEL_MAX) return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return 0;
  return 1;
}

/* Print s with control characters shown as '?' (labels come from the store). */
static void ch__print_clean(const char *s, int width) {
  int n = 0;
  for (; s && *s; s++, n++) putchar((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s);
  for (; n < width; n++) putchar(' ');
}

static int ch__apikey_add(const char *user, const char *scopes_s, const char *label,
                          const char *data_dir) {
  unsigned scopes = 0;
  ch_store_t *st = NULL;
  char key[CH_AUTH_APIKEY_LEN + 1] = {0}, id[CH_AUTH_APIKEY_ID_LEN + 1], hash[CH_AUTH_HASH_HEX_LEN + 1];
  char sc[CH_AUTH_SCOPES_MAX];
  int rc = ch__check_user("apikey add", "--user", user);
  if (rc != 0) goto Exit;
  if ((rc = ch__check_scopes("apikey add", scopes_s, &scopes)) != 0) goto Exit;
  if (label != NULL && !ch__label_ok(label)) {
    fprintf(stderr, "chorus apikey add: --label must be 1..%d bytes without control characters\n",
            CH__LABEL_MAX);
    rc = CH_CLI_EXIT_USAGE;
    goto Exit;
  }
  if ((rc = ch_cli_open_store("apikey add", data_dir, &st)) != 0) goto Exit;
  ch_auth_scopes_format(scopes, sc);
  int r = CH_EEXIST;
  /* An id already taken (about 1 in 2^47 per existing key): draw a new key. */
  for (int tries = 0; tries < 3 && r == CH_EEXIST; tries++) {
    if (ch_auth_apikey_generate(key, id, hash) != 0) {
      fprintf(stderr, "chorus apikey add: no randomness available\n");
      rc = CH_CLI_EXIT_FAIL;
      goto Exit;
    }
    ch_apikey_t rec = {.id = id, .hash = hash, .user_id = (char *)user, .scopes = sc,
                       .label = (char *)label, .created_ms = ch_clock_wall_ms(), .revoked = 0};
    r = st->ops->apikey_put(st, &rec);
  }
  if (r != 0) {
    ch__store_error("apikey add", "storing the key", r);
    rc = CH_CLI_EXIT_FAIL;
    goto Exit;
  }
  printf("%s\n", key);
  if (fflush(stdout) != 0) rc = CH_CLI_EXIT_FAIL;
  if (isatty(STDERR_FILENO))
    fprintf(stderr, "API key %s for %s (%s). It is shown only now: store it safely.\n", id, user, sc);
Exit:
  OPENSSL_cleanse(key, sizeof key);
  ch_store_close(st);
  return rc;
}

static int ch__apikey_list(int json, const char *data_dir) {
  ch_store_t *st = NULL;
  ch_apikey_t *keys = NULL;
  size_t n = 0;
  int rc = ch_cli_open_store("apikey list", data_dir, &st);
  if (rc != 0) goto Exit;
  int r = st->ops->apikey_list(st, &keys, &n);
  if (r != 0) {
    ch__store_error("apikey list", "listing keys", r);
    rc = CH_CLI_EXIT_FAIL;
    goto Exit;
  }
  char iso[CH_ISO8601_LEN + 1];
  if (json) {
    ch_buf_t b = CH_BUF_INIT;
    ch_buf_append_byte(&b, '[');
    for (size_t i = 0; i < n; i++) {
      const ch_apikey_t *k = &keys[i];
      ch_clock_iso8601(k->created_ms, iso);
      ch_buf_append_str(&b, i ? ",\n {\"id\":\"" : "\n {\"id\":\"");
      ch_buf_append_json_str(&b, k->id ? k->id : "", strlen(k->id ? k->id : ""));
      ch_buf_append_str(&b, "\",\"user\":\"");
      ch_buf_append_json_str(&b, k->user_id ? k->user_id : "", strlen(k->user_id ? k->user_id : ""));
      ch_buf_append_str(&b, "\",\"scopes\":\"");
      ch_buf_append_json_str(&b, k->scopes ? k->scopes : "", strlen(k->scopes ? k->scopes : ""));
      ch_buf_append_str(&b, "\",\"label\":");
      if (k->label) {
        ch_buf_append_byte(&b, '"');
        ch_buf_append_json_str(&b, k->label, strlen(k->label));
        ch_buf_append_byte(&b, '"');
      } else {
        ch_buf_append_str(&b, "null");
      }
      ch_buf_printf(&b, ",\"created\":\"%s\",\"revoked\":%s}", iso, k->revoked ? "true" : "false");
    }
    ch_buf_append_str(&b, n ? "\n]\n" : "]\n");
    fwrite(b.base, 1, b.len, stdout);
    ch_buf_dispose(&b);
  } else {
    int wid = 2, wuser = 4, wscopes = 6, wlabel = 5;
    for (size_t i = 0; i < n; i++) {
      const ch_apikey_t *k = &keys[i];
      if (k->id && (int)strlen(k->id) > wid) wid = (int)strlen(k->id);
      if (k->user_id && (int)strlen(k->user_id) > wuser) wuser = (int)strlen(k->user_id);
      if (k->scopes && (int)strlen(k->scopes) > wscopes) wscopes = (int)strlen(k->scopes);
      if (k->label && (int)strlen(k->label) > wlabel) wlabel = (int)strlen(k->label);
    }
    if (n == 0) {
      printf("no API keys (add one with `chorus apikey add --user U`)\n");
    } else {
      printf("%-*s  %-*s  %-*s  %-*s  %-24s  %s\n", wid, "ID", wuser, "USER", wscopes, "SCOPES",
             wlabel, "LABEL", "CREATED", "REVOKED");
      for (size_t i = 0; i < n; i++) {
        const ch_apikey_t *k = &keys[i];
        ch_clock_iso8601(k->created_ms, iso);
        ch__print_clean(k->id, wid);
        fputs("  ", stdout);
        ch__print_clean(k->user_id, wuser);
        fputs("  ", stdout);
        ch__print_clean(k->scopes, wscopes);
        fputs("  ", stdout);
        ch__print_clean(k->label ? k->label : "-", wlabel);
        printf("  %-24s  %s\n", iso, k->revoked ? "yes" : "no");
      }
    }
  }
  if (fflush(stdout) != 0) rc = CH_CLI_EXIT_FAIL;
Exit:
  for (size_t i = 0; i < n; i++) ch_apikey_dispose(&keys[i]);
  free(keys);
  ch_store_close(st);
  return rc;
}

static int ch__apikey_revoke(const char *id, const char *data_dir) {
  ch_store_t *st = NULL;
  int rc = 0;
  int ok = id != NULL && strlen(id) == CH_AUTH_APIKEY_ID_LEN;
  for (size_t i = 0; ok && i < CH_AUTH_APIKEY_ID_LEN; i++) {
    char c = id[i];
    ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  }
  if (!ok) {
    fprintf(stderr, "chorus apikey revoke: give the key's id: 8 letters/digits, as shown by "
                    "`chorus apikey list` (not the key itself)\n");
    rc = CH_CLI_EXIT_USAGE;
    goto Exit;
  }
  if ((rc = ch_cli_open_store("apikey revoke", data_dir, &st)) != 0) goto Exit;
  int r = st->ops->apikey_revoke(st, id);
  if (r == CH_ENOTFOUND) {
    fprintf(stderr, "chorus apikey revoke: no API key with id %s\n", id);
    rc = CH_CLI_EXIT_FAIL;
  } else if (r != 0) {
    ch__store_error("apikey revoke", "revoking the key", r);
    rc = CH_CLI_EXIT_FAIL;
  } else if (isatty(STDERR_FILENO)) {
    fprintf(stderr, "API key %s revoked\n", id);
  }
Exit:
  ch_store_close(st);
  return rc;
}

int ch_cli_apikey(int argc, char **argv) {
  const char *user = NULL, *scopes_s = NULL, *label = NULL;
  int json = 0;
  ch_cli_args_t a;
  const ch_cli_opt_t opts[] = {
      {.name = "--user", .val = &user}, {.name = "--scopes", .val = &scopes_s},
      {.name = "--label", .val = &label}, {.name = "--json", .on = &json},
  };
  int rc = ch_cli_args_parse("apikey", argc, argv, opts, CH_ARRAY_SIZE(opts), 2, &a);
  if (rc != 0) goto Exit;
  const char *sub = a.npos > 0 ? a.pos[0] : NULL;
  if (a.help || (sub != NULL && strcmp(sub, "help") == 0)) {
    ch__apikey_help();
    goto Exit;
  }
  if (sub == NULL) {
    fprintf(stderr, "chorus apikey: say add, list or revoke (see `chorus apikey --help`)\n");
    rc = CH_CLI_EXIT_USAGE;
    goto Exit;
  }
  int is_add = strcmp(sub, "add") == 0, is_list = strcmp(sub, "list") == 0,
      is_revoke = strcmp(sub, "revoke") == 0;
  if (!is_add && !is_list && !is_revoke) {
    fprintf(stderr, "chorus apikey: unknown action '%s': add, list or revoke\n", sub);
    rc = CH_CLI_EXIT_USAGE;
    goto Exit;
  }
  /* Options that do not belong to the action are usage errors, not ignored. */
  const char *stray = NULL;
  if (!is_add && user) stray = "--user";
  else if (!is_add && scopes_s) stray = "--scopes";
  else if (!is_add && label) stray = "--label";
  else if (!is_list && json) stray = "--json";
  if (stray) {
    fprintf(stderr, "chorus apikey %s: %s does not apply here (see `chorus apikey --help`)\n", sub,
            stray);
    rc = CH_CLI_EXIT_USAGE;
    goto Exit;
  }
  if (is_revoke) {
    if (a.npos != 2) {
      fprintf(stderr, "chorus apikey revoke: give exactly one key id\n");
      rc = CH_CLI_EXIT_USAGE;
      goto Exit;
    }
    rc = ch__apikey_revoke(a.pos[1], a.cfg.data_dir);
    goto Exit;
  }
  if (a.npos != 1) {
    fprintf(stderr, "chorus apikey %s: unexpected argument '%s'\n", sub, a.pos[1]);
    rc = CH_CLI_EXIT_USAGE;
    goto Exit;
  }
  rc = is_add ? ch__apikey_add(user, scopes_s, label, a.cfg.data_dir)
              : ch__apikey_list(json, a.cfg.data_dir);
Exit:
  ch_config_dispose(&a.cfg);
  return rc;
}
