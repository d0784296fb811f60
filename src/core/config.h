/*
 * config.h — the hub's settings: one table of keys drives every source.
 *
 * Each setting is one row of a table in config.c (key, type, field, default,
 * range, help), after Redis's standardConfig table. That row alone gives the
 * key its config-file spelling, its environment variable, its command-line
 * flag, its line in --help, in the effective-config dump and in the generated
 * reference of docs/CONFIG.md. Adding a setting is a field here plus one row.
 *
 * Sources, lowest precedence first; each layer overrides the one before:
 *
 *   defaults (table) < file (--config / CHORUS_CONFIG) < env CHORUS_<KEY> < flags --key
 *
 *   key          data-dir           (file:  data-dir = ./data)
 *   environment  CHORUS_DATA_DIR    ('-' -> '_', upper case)
 *   flag         --data-dir ./data  or --data-dir=./data; booleans also --deflate / --no-deflate
 *
 * List keys (origins) are repeatable: within one layer each occurrence
 * appends; the first occurrence in a higher layer replaces the lower layers'
 * list; an empty value clears it. In the environment a list is one variable,
 * comma-separated.
 *
 * Values are checked when set. A refusal names the key, the value, where it
 * came from and what is allowed:
 *   config: threads = 'abc' (chorus.conf:3): expected an integer 1..256, or 0 for one per CPU
 * Unknown keys in a file are refused with a "did you mean". CHORUS_* variables
 * that are not keys are ignored (the environment is shared with other tools).
 * Command-line arguments that are not config flags are handed back untouched.
 *
 * Ownership: ch_config_t owns every string and array it points to; they live
 * until ch_config_dispose() or until the key is set again. Readers treat the
 * struct as read-only once loading is done (it is shared by the loop threads).
 */
#ifndef CH_CORE_CONFIG_H
#define CH_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* A repeatable string key. */
typedef struct ch_config_list_s {
  char **v; /* owned array of n owned NUL-terminated strings; NULL when n == 0 */
  size_t n; /* number of entries */
} ch_config_list_t;

enum { CH_CONFIG_LOG_TEXT = 0, CH_CONFIG_LOG_JSON = 1 }; /* values of log_format */

typedef struct ch_config_s {
  /* Network. Strings are owned and never NULL ("" when unset). */
  char *listen_host;            /* from listen: "127.0.0.1", "::1" (no brackets) or a name */
  uint16_t listen_port;         /* from listen: 1..65535 */
  int threads;                  /* event-loop threads, 1..256; 0 = one per CPU */
  int max_connections;          /* open connections before new ones are refused */
  char *tls_cert;               /* PEM certificate chain path; "" = plain TCP */
  char *tls_key;                /* PEM private key path; set exactly when tls_cert is */
  ch_config_list_t origins;     /* allowed Origin header values; empty = any */
  ch_config_list_t agents;      /* agent specs "NAME=KIND[:ARG][;key=value]..." (checked by src/agent/) */
  char *command_agent;          /* agent answering profile command; "" = the first agent */
  int rate_limit;               /* agent requests per minute per API key (token bucket); 0 = off */
  int rate_burst;               /* agent requests an API key may make at once (bucket depth) */
  char *data_dir;               /* state directory, never "" */
  char *static_dir;             /* web assets served over HTTP; "" = none */
  bool test_endpoints;          /* expose test-only HTTP endpoints */
  bool insecure_dev;            /* development shortcuts (literal userId:deviceId tokens) */
  /* Logging. */
  int log_level;                /* a ch_log_level_t (CH_LOG_ERROR..CH_LOG_DEBUG) */
  int log_format;               /* CH_CONFIG_LOG_TEXT or CH_CONFIG_LOG_JSON */
  /* Limits, in bytes (max_connections above is a count). */
  size_t max_frame;             /* largest WebSocket frame payload accepted */
  size_t max_message;           /* largest reassembled WebSocket message */
  size_t max_outbound;          /* bytes queued to one connection before it is dropped as slow */
  size_t max_header;            /* largest HTTP request head */
  size_t max_body;              /* largest HTTP request body */
  /* Timeouts, in milliseconds. */
  uint64_t header_timeout_ms;   /* time allowed for an HTTP request head */
  uint64_t ping_interval_ms;    /* WebSocket ping period */
  uint64_t pong_timeout_ms;     /* drop a WebSocket peer silent this long (> ping_interval_ms) */
  uint64_t shutdown_timeout_ms; /* graceful drain on SIGTERM/SIGINT; 0 = close at once */
  uint64_t sse_heartbeat_ms;    /* comment sent on an idle SSE stream this often */
  /* WebSocket compression (permessage-deflate). */
  bool deflate;                 /* offer/accept permessage-deflate */
  int deflate_level;            /* zlib level 1..9 for outgoing messages */
  size_t deflate_min_size;      /* messages shorter than this (bytes) go uncompressed */
  /* Presence in big rooms (hub/client.h). */
  int presence_broadcast_limit; /* rooms with more connections announce no single joins/leaves; 0 = no limit */
  int presence_sync_limit;      /* presence entries a sync lists while its room is over that limit */

  /* Private. */
  char **_src;  /* owned array, one entry per key: owned origin text of the value, NULL = default */
  char **_rest; /* owned NULL-terminated array handed out by ch_config_load; strings are argv's */
} ch_config_t;

/* Fill c with the defaults. Never fails. Pair with ch_config_dispose(). */
void ch_config_init(ch_config_t *c);
/* Free everything c owns (including the *rest array of ch_config_load). c may be re-inited. */
void ch_config_dispose(ch_config_t *c);

/*
 * Apply, on top of c's current values: the file named by --config PATH (or
 * --config=PATH; else $CHORUS_CONFIG; none if both are missing or empty), then
 * the CHORUS_* environment, then the config flags of argv[1..argc). Then
 * ch_config_check() runs.
 *
 * Every argument that is not a config flag (positional arguments, unknown
 * --flags, -h, everything after "--") is returned in order in *rest / *nrest;
 * the array is NULL-terminated, owned by c (freed by ch_config_dispose), and
 * its strings are argv's. If rest is NULL such arguments are errors. Callers
 * that accept no other flags report a leftover "--x" with
 * ch_config_unknown_flag().
 *
 * Every problem found is appended to err (if not NULL) as one line ending in
 * "\n", and loading continues so that all of them are reported at once.
 *   0            loaded
 *   CH_ECONFIG   at least one error (c holds whatever was valid; dispose it)
 */
int ch_config_load(ch_config_t *c, int argc, char **argv, char ***rest, int *nrest, ch_buf_t *err);

/*
 * Set one key from text, as if from the source named by origin ("chorus.conf:3",
 * "env CHORUS_THREADS", "flag --threads"; NULL = unnamed). List keys append
 * (an empty value clears the list). On error c is unchanged.
 *   0            set
 *   CH_ENOTFOUND unknown key (err says so, with a suggestion when one is close)
 *   CH_ECONFIG   value refused (err names key, value, origin and what is allowed)
 */
int ch_config_set(ch_config_t *c, const char *key, const char *value, const char *origin,
                  ch_buf_t *err);

/* Append the value of key as config-file text (unquoted; lists comma-joined). 0 or CH_ENOTFOUND. */
int ch_config_get(const ch_config_t *c, const char *key, ch_buf_t *out);

/* Rules between keys (tls-cert with tls-key, pong-timeout > ping-interval). 0 or CH_ECONFIG. */
int ch_config_check(const ch_config_t *c, ch_buf_t *err);

/* Append one error line for a command-line argument that is not a known flag
 * ("config: unknown flag --thred; did you mean --threads?"). */
void ch_config_unknown_flag(const char *arg, ch_buf_t *err);

/* Append the flag list with help, allowed values and defaults, for --help. */
void ch_config_usage(ch_buf_t *out);
/* Append the effective configuration as a commented config file that loads back to c. */
void ch_config_dump(const ch_config_t *c, ch_buf_t *out);
/* Append the Markdown reference table of every key (the generated part of docs/CONFIG.md). */
void ch_config_reference(ch_buf_t *out);

/* The i-th key in table order (a static string), or NULL when i is past the last. */
const char *ch_config_key(size_t i);

#endif
