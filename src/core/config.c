/*
 * config.c — the key table and the four sources that feed it (see config.h).
 *
 * Data flow:
 *
 *   ch__keys[] --init--> defaults
 *        |                  |  ch__load_file  "key = value" lines  (origin "path:line")
 *        |                  |  ch__load_env   CHORUS_<KEY>          (origin "env CHORUS_KEY")
 *        |                  |  ch__load_flags --key v, --key=v     (origin "flag --key")
 *        |                  v
 *        +--- ch__set(key row, text) -> ch__parse(type) -> store at offsetof(field)
 *        |
 *        +--> usage / dump / get / reference  (all read the same rows)
 *
 * Every value, defaults included, goes through the same text parser, so a
 * default that does not parse is caught by the first ch_config_init() of the
 * unit tests. Each layer keeps a "touched" bit per key so that the first
 * occurrence of a list key in a layer replaces what lower layers gave it.
 *
 * Invariants: string fields are never NULL after init; c->_src[i] is the
 * origin text of key i's current value (NULL = the default); a refused value
 * leaves the field as it was.
 */
#include "core/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/err.h"

/* ------------------------------------------------------------------------ */
/* The table                                                                  */

typedef enum {
  CH__T_BOOL, /* bool */
  CH__T_INT,  /* int, range lo..hi */
  CH__T_SIZE, /* size_t bytes, range lo..hi */
  CH__T_DUR,  /* uint64_t milliseconds, range lo..hi */
  CH__T_ENUM, /* int index into choices "a|b|c" */
  CH__T_STR,  /* char * owned; lo = minimum length */
  CH__T_PATH, /* char * owned; lo = minimum length */
  CH__T_ADDR, /* char * host (off) + uint16_t port (off2) */
  CH__T_LIST  /* ch_config_list_t of owned strings */
} ch__type_t;

typedef struct ch__key_s {
  const char *key;       /* file spelling; flag is "--" key; env is CHORUS_ + KEY */
  ch__type_t type;
  size_t off;            /* offsetof the field in ch_config_t */
  size_t off2;           /* ADDR: offsetof the port field */
  const char *def;       /* default, as text (lists: comma-separated) */
  long long lo, hi;      /* INT/SIZE (bytes)/DUR (ms): allowed range; STR/PATH: lo = min length */
  const char *zero;      /* INT/SIZE/DUR: when set, 0 is allowed too and means this */
  const char *choices;   /* ENUM: "a|b|c"; the field holds the index */
  const char *metavar;   /* value name in --help; NULL = from the type */
  int (*check)(const char *v); /* STR/PATH/LIST: extra check of one value, 0 = good */
  const char *expect;    /* with check: what a good value looks like */
  const char *help;      /* one line, no trailing period */
} ch__key_t;

#define CH__F(field) offsetof(ch_config_t, field)
#define CH__KIB 1024LL
#define CH__MIB (1024LL * 1024)
#define CH__GIB (1024LL * 1024 * 1024)
#define CH__S 1000LL
#define CH__M (60 * 1000LL)
#define CH__H (3600 * 1000LL)

static int ch__check_origin(const char *v);

/* command-agent: empty, or an agent name as src/agent/ accepts it. */
static int ch__check_agent_name(const char *v) {
  size_t n = strlen(v);
  if (n > 64) return -1;
  for (size_t i = 0; i < n; i++)
    if (!((v[i] >= 'a' && v[i] <= 'z') || (v[i] >= 'A' && v[i] <= 'Z') || (v[i] >= '0' && v[i] <= '9') || v[i] == '-' ||
          v[i] == '_'))
      return -1;
  return 0;
}

/* One row per key. To add a setting: a field in ch_config_t and a row here. */
static const ch__key_t ch__keys[] = {
  {.key = "listen", .type = CH__T_ADDR, .off = CH__F(listen_host), .off2 = CH__F(listen_port), .def = "127.0.0.1:4000", .help = "address to listen on; IPv6 as [::1]:4000"},
  {.key = "data-dir", .type = CH__T_PATH, .off = CH__F(data_dir), .def = "./data", .lo = 1, .help = "directory for the database and other state"},
  {.key = "static-dir", .type = CH__T_PATH, .off = CH__F(static_dir), .def = "", .help = "directory of web assets served over HTTP; empty = none"},
  {.key = "threads", .type = CH__T_INT, .off = CH__F(threads), .def = "0", .lo = 1, .hi = 256, .zero = "one per CPU", .help = "event-loop threads"},
  {.key = "max-connections", .type = CH__T_INT, .off = CH__F(max_connections), .def = "100000", .lo = 1, .hi = 10000000, .help = "open connections before new ones are refused"},
  {.key = "tls-cert", .type = CH__T_PATH, .off = CH__F(tls_cert), .def = "", .help = "PEM certificate chain; with tls-key enables TLS; empty = plain TCP"},
  {.key = "tls-key", .type = CH__T_PATH, .off = CH__F(tls_key), .def = "", .help = "PEM private key of tls-cert"},
  {.key = "origins", .type = CH__T_LIST, .off = CH__F(origins), .def = "", .metavar = "ORIGIN", .check = ch__check_origin, .expect = "an origin like https://app.example.com (scheme://host[:port], no path)", .help = "allowed browser Origin, repeatable; none = any"},
  {.key = "agent", .type = CH__T_LIST, .off = CH__F(agents), .def = "", .metavar = "NAME=KIND[:ARG]", .help = "an AI agent, repeatable: KIND is echo, exec, openai or anthropic; options follow as ;key=value (docs/AGENTS.md)"},
  {.key = "command-agent", .type = CH__T_STR, .off = CH__F(command_agent), .def = "", .metavar = "NAME", .check = ch__check_agent_name, .expect = "an agent NAME (1..64 letters, digits, - or _) or empty", .help = "agent that answers profile command (/ws/command); empty = the first agent"},
  {.key = "rate-limit", .type = CH__T_INT, .off = CH__F(rate_limit), .def = "0", .lo = 1, .hi = 1000000, .zero = "no limit", .help = "agent requests per minute allowed per API key (per user for other credentials)"},
  {.key = "rate-burst", .type = CH__T_INT, .off = CH__F(rate_burst), .def = "10", .lo = 1, .hi = 1000000, .help = "agent requests an API key may make at once before rate-limit paces it"},
  {.key = "test-endpoints", .type = CH__T_BOOL, .off = CH__F(test_endpoints), .def = "false", .help = "expose test-only HTTP endpoints (never in production)"},
  {.key = "insecure-dev", .type = CH__T_BOOL, .off = CH__F(insecure_dev), .def = "false", .help = "development shortcuts such as literal userId:deviceId tokens"},
  {.key = "log-level", .type = CH__T_ENUM, .off = CH__F(log_level), .def = "info", .choices = "error|warn|info|debug", .help = "least severe log records written"},
  {.key = "log-format", .type = CH__T_ENUM, .off = CH__F(log_format), .def = "text", .choices = "text|json", .help = "log lines as text or one JSON object each"},
  {.key = "max-frame", .type = CH__T_SIZE, .off = CH__F(max_frame), .def = "1MiB", .lo = CH__KIB, .hi = CH__GIB, .help = "largest WebSocket frame payload accepted"},
  {.key = "max-message", .type = CH__T_SIZE, .off = CH__F(max_message), .def = "4MiB", .lo = CH__KIB, .hi = CH__GIB, .help = "largest reassembled WebSocket message"},
  {.key = "max-outbound", .type = CH__T_SIZE, .off = CH__F(max_outbound), .def = "8MiB", .lo = 64 * CH__KIB, .hi = CH__GIB, .help = "bytes queued to one connection before it is dropped as a slow consumer"},
  {.key = "max-header", .type = CH__T_SIZE, .off = CH__F(max_header), .def = "16KiB", .lo = CH__KIB, .hi = CH__MIB, .help = "largest HTTP request head"},
  {.key = "max-body", .type = CH__T_SIZE, .off = CH__F(max_body), .def = "1MiB", .lo = CH__KIB, .hi = CH__GIB, .help = "largest HTTP request body"},
  {.key = "header-timeout", .type = CH__T_DUR, .off = CH__F(header_timeout_ms), .def = "10s", .lo = 100, .hi = CH__H, .help = "time allowed to receive an HTTP request head"},
  {.key = "ping-interval", .type = CH__T_DUR, .off = CH__F(ping_interval_ms), .def = "30s", .lo = CH__S, .hi = CH__H, .help = "WebSocket ping period"},
  {.key = "pong-timeout", .type = CH__T_DUR, .off = CH__F(pong_timeout_ms), .def = "60s", .lo = CH__S, .hi = CH__H, .help = "drop a WebSocket peer silent this long (must exceed ping-interval)"},
  {.key = "shutdown-timeout", .type = CH__T_DUR, .off = CH__F(shutdown_timeout_ms), .def = "5s", .lo = 0, .hi = 10 * CH__M, .help = "time to drain connections on SIGTERM/SIGINT; 0 = close at once"},
  {.key = "sse-heartbeat", .type = CH__T_DUR, .off = CH__F(sse_heartbeat_ms), .def = "15s", .lo = CH__S, .hi = CH__H, .help = "comment sent on an idle SSE stream this often"},
  {.key = "deflate", .type = CH__T_BOOL, .off = CH__F(deflate), .def = "true", .help = "WebSocket permessage-deflate compression"},
  {.key = "deflate-level", .type = CH__T_INT, .off = CH__F(deflate_level), .def = "1", .lo = 1, .hi = 9, .help = "zlib level for outgoing compressed messages"},
  {.key = "deflate-min-size", .type = CH__T_SIZE, .off = CH__F(deflate_min_size), .def = "64", .lo = 0, .hi = CH__GIB, .help = "messages shorter than this are sent uncompressed"},
  {.key = "presence-broadcast-limit", .type = CH__T_INT, .off = CH__F(presence_broadcast_limit), .def = "1000", .lo = 1, .hi = 10000000, .zero = "no limit", .help = "a conversation with more connections present announces no single joins and leaves (syncs carry the count)"},
  {.key = "presence-sync-limit", .type = CH__T_INT, .off = CH__F(presence_sync_limit), .def = "100", .lo = 1, .hi = 10000000, .zero = "the count only", .help = "presence entries a sync lists while its conversation is over presence-broadcast-limit"},
};

#define CH__NKEYS CH_ARRAY_SIZE(ch__keys)
#define CH__KEY_MAX 64 /* longest key name we expect; longer names are never keys */

/* ------------------------------------------------------------------------ */
/* Small helpers                                                              */

#define CH__FIELD(c, k, type) ((type *)(void *)((char *)(c) + (k)->off))
#define CH__CFIELD(c, k, type) ((const type *)(const void *)((const char *)(c) + (k)->off))

static int ch__is_ws(char ch) { return ch == ' ' || ch == '\t'; }

static const ch__key_t *ch__find(const char *name, size_t n) {
  for (size_t i = 0; i < CH__NKEYS; i++) {
    if (strlen(ch__keys[i].key) == n && memcmp(ch__keys[i].key, name, n) == 0) return &ch__keys[i];
  }
  return NULL;
}

static size_t ch__index(const ch__key_t *k) { return (size_t)(k - ch__keys); }

/* Environment variable of a key: CHORUS_ + upper case, '-' -> '_'. */
static void ch__env_name(const ch__key_t *k, char *out, size_t cap) {
  size_t j = (size_t)snprintf(out, cap, "CHORUS_");
  for (const char *p = k->key; *p && j + 1 < cap; p++) {
    out[j++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
  }
  out[j] = '\0';
}

/* Edit distance, for "did you mean". Names longer than CH__KEY_MAX never match. */
static size_t ch__distance(const char *a, size_t na, const char *b) {
  size_t nb = strlen(b);
  if (na > CH__KEY_MAX || nb > CH__KEY_MAX) return (size_t)-1;
  size_t row[CH__KEY_MAX + 1];
  for (size_t j = 0; j <= nb; j++) row[j] = j;
  for (size_t i = 1; i <= na; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= nb; j++) {
      size_t up = row[j];
      size_t cost = tolower((unsigned char)a[i - 1]) == b[j - 1] ? 0 : 1;
      size_t best = diag + cost;
      if (row[j] + 1 < best) best = row[j] + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[nb];
}

/* The key closest to name[0..n), or NULL if none is close enough to be a typo. */
static const char *ch__suggest(const char *name, size_t n) {
  const char *best = NULL;
  size_t bestd = n >= 4 ? 3 : 2; /* accept distance < bestd: 2 edits, 1 for short names */
  for (size_t i = 0; i < CH__NKEYS; i++) {
    size_t d = ch__distance(name, n, ch__keys[i].key);
    if (d < bestd) {
      bestd = d;
      best = ch__keys[i].key;
    }
  }
  return best;
}

/* Append v for an error message: quoted content, control bytes escaped, long values cut. */
static void ch__append_shown(ch_buf_t *b, const char *v) {
  size_t n = strlen(v);
  size_t shown = n > 80 ? 80 : n;
  for (size_t i = 0; i < shown; i++) {
    unsigned char ch = (unsigned char)v[i];
    if (ch < 0x20 || ch == 0x7f) {
      ch_buf_printf(b, "\\x%02x", ch);
    } else {
      ch_buf_append_byte(b, (char)ch);
    }
  }
  if (shown < n) ch_buf_append_str(b, "...");
}

static void ch__fmt_size(ch_buf_t *b, unsigned long long n) {
  if (n != 0 && n % (unsigned long long)CH__GIB == 0) {
    ch_buf_printf(b, "%lluGiB", n / (unsigned long long)CH__GIB);
  } else if (n != 0 && n % (unsigned long long)CH__MIB == 0) {
    ch_buf_printf(b, "%lluMiB", n / (unsigned long long)CH__MIB);
  } else if (n != 0 && n % (unsigned long long)CH__KIB == 0) {
    ch_buf_printf(b, "%lluKiB", n / (unsigned long long)CH__KIB);
  } else {
    ch_buf_printf(b, "%lluB", n);
  }
}

static void ch__fmt_dur(ch_buf_t *b, unsigned long long ms) {
  if (ms == 0) {
    ch_buf_append_str(b, "0s");
  } else if (ms % (unsigned long long)CH__H == 0) {
    ch_buf_printf(b, "%lluh", ms / (unsigned long long)CH__H);
  } else if (ms % (unsigned long long)CH__M == 0) {
    ch_buf_printf(b, "%llum", ms / (unsigned long long)CH__M);
  } else if (ms % (unsigned long long)CH__S == 0) {
    ch_buf_printf(b, "%llus", ms / (unsigned long long)CH__S);
  } else {
    ch_buf_printf(b, "%llums", ms);
  }
}

/* What a good value of k looks like, as the object of "expected ...". */
static void ch__expect(const ch__key_t *k, ch_buf_t *b) {
  switch (k->type) {
  case CH__T_BOOL:
    ch_buf_append_str(b, "a boolean: true/false, yes/no, on/off or 1/0");
    break;
  case CH__T_INT:
    ch_buf_printf(b, "an integer %lld..%lld", k->lo, k->hi);
    break;
  case CH__T_SIZE:
    ch_buf_append_str(b, "a size ");
    ch__fmt_size(b, (unsigned long long)k->lo);
    ch_buf_append_str(b, "..");
    ch__fmt_size(b, (unsigned long long)k->hi);
    ch_buf_append_str(b, " such as 16KiB (B, KiB, MiB, GiB; k, m, g)");
    break;
  case CH__T_DUR:
    ch_buf_append_str(b, "a duration ");
    ch__fmt_dur(b, (unsigned long long)k->lo);
    ch_buf_append_str(b, "..");
    ch__fmt_dur(b, (unsigned long long)k->hi);
    ch_buf_append_str(b, " such as 10s (ms, s, m, h)");
    break;
  case CH__T_ENUM:
    ch_buf_printf(b, "one of %s", k->choices);
    break;
  case CH__T_ADDR:
    ch_buf_append_str(b, "host:port with a port 1..65535 (IPv6 in brackets: [::1]:4000)");
    break;
  case CH__T_STR:
  case CH__T_PATH:
  case CH__T_LIST:
    if (k->expect) {
      ch_buf_append_str(b, k->expect);
    } else {
      ch_buf_printf(b, "a%s %s", k->lo > 0 ? " non-empty" : "", k->type == CH__T_PATH ? "path" : "string");
    }
    break;
  }
  if (k->zero) ch_buf_printf(b, ", or 0 for %s", k->zero);
}

static void ch__fail(ch_buf_t *err, const ch__key_t *k, const char *value, const char *origin) {
  if (err == NULL) return;
  ch_buf_printf(err, "config: %s = '", k->key);
  ch__append_shown(err, value);
  ch_buf_append_str(err, "'");
  if (origin) ch_buf_printf(err, " (%s)", origin);
  ch_buf_append_str(err, ": expected ");
  ch__expect(k, err);
  ch_buf_append_str(err, "\n");
}

static void ch__unknown(ch_buf_t *err, const char *what, const char *name, size_t n,
                        const char *prefix, const char *origin) {
  if (err == NULL) return;
  ch_buf_printf(err, "config: unknown %s '%s", what, prefix);
  char *tmp = ch_xstrndup(name, n);
  ch__append_shown(err, tmp);
  free(tmp);
  ch_buf_append_str(err, "'");
  if (origin) ch_buf_printf(err, " (%s)", origin);
  const char *s = ch__suggest(name, n);
  if (s) ch_buf_printf(err, "; did you mean '%s%s'?", prefix, s);
  ch_buf_append_str(err, "\n");
}

/* ------------------------------------------------------------------------ */
/* Value parsers: text -> value, 0 or CH_EINVAL; never write on failure.      */

/* Copy v without surrounding blanks into a small buffer; CH_EINVAL if too long. */
static int ch__trim(const char *v, char *out, size_t cap) {
  while (ch__is_ws(*v)) v++;
  size_t n = strlen(v);
  while (n > 0 && ch__is_ws(v[n - 1])) n--;
  if (n >= cap) return CH_EINVAL;
  memcpy(out, v, n);
  out[n] = '\0';
  return 0;
}

/* Decimal digits at *p (at least one) -> *out; advances *p. Overflow fails. */
static int ch__digits(const char **p, unsigned long long *out) {
  const char *s = *p;
  unsigned long long n = 0;
  if (!isdigit((unsigned char)*s)) return CH_EINVAL;
  for (; isdigit((unsigned char)*s); s++) {
    unsigned d = (unsigned)(*s - '0');
    if (n > (~0ULL - d) / 10) return CH_EINVAL;
    n = n * 10 + d;
  }
  *p = s;
  *out = n;
  return 0;
}

static int ch__parse_bool(const char *v, bool *out) {
  static const char *const yes[] = {"true", "yes", "on", "1"};
  static const char *const no[] = {"false", "no", "off", "0"};
  char t[16];
  if (ch__trim(v, t, sizeof(t)) != 0) return CH_EINVAL;
  for (size_t i = 0; i < CH_ARRAY_SIZE(yes); i++) {
    if (strcasecmp(t, yes[i]) == 0) {
      *out = true;
      return 0;
    }
    if (strcasecmp(t, no[i]) == 0) {
      *out = false;
      return 0;
    }
  }
  return CH_EINVAL;
}

static int ch__in_range(const ch__key_t *k, unsigned long long n) {
  if (n == 0 && k->zero) return 1;
  return n >= (unsigned long long)k->lo && n <= (unsigned long long)k->hi;
}

static int ch__parse_int(const ch__key_t *k, const char *v, long long *out) {
  char t[32];
  unsigned long long n;
  const char *p = t;
  if (ch__trim(v, t, sizeof(t)) != 0 || ch__digits(&p, &n) != 0 || *p != '\0') return CH_EINVAL;
  if (!ch__in_range(k, n)) return CH_EINVAL;
  *out = (long long)n;
  return 0;
}

/* Multiply by a unit; fails on overflow. */
static int ch__scale(unsigned long long n, unsigned long long unit, unsigned long long *out) {
  if (unit != 0 && n > ~0ULL / unit) return CH_EINVAL;
  *out = n * unit;
  return 0;
}

static int ch__parse_size(const ch__key_t *k, const char *v, unsigned long long *out) {
  static const struct {
    const char *s;
    unsigned long long unit;
  } units[] = {{"", 1},           {"b", 1},           {"k", CH__KIB},    {"kb", CH__KIB},
               {"kib", CH__KIB},  {"m", CH__MIB},     {"mb", CH__MIB},   {"mib", CH__MIB},
               {"g", CH__GIB},    {"gb", CH__GIB},    {"gib", CH__GIB}};
  char t[48];
  unsigned long long n, bytes;
  const char *p = t;
  if (ch__trim(v, t, sizeof(t)) != 0 || ch__digits(&p, &n) != 0) return CH_EINVAL;
  while (ch__is_ws(*p)) p++;
  for (size_t i = 0; i < CH_ARRAY_SIZE(units); i++) {
    if (strcasecmp(p, units[i].s) == 0) {
      if (ch__scale(n, units[i].unit, &bytes) != 0 || !ch__in_range(k, bytes)) return CH_EINVAL;
      *out = bytes;
      return 0;
    }
  }
  return CH_EINVAL;
}

static int ch__parse_dur(const ch__key_t *k, const char *v, unsigned long long *out) {
  static const struct {
    const char *s;
    unsigned long long unit;
  } units[] = {{"ms", 1}, {"s", CH__S}, {"m", CH__M}, {"h", CH__H}};
  char t[48];
  unsigned long long n, ms;
  const char *p = t;
  if (ch__trim(v, t, sizeof(t)) != 0 || ch__digits(&p, &n) != 0) return CH_EINVAL;
  while (ch__is_ws(*p)) p++;
  if (*p == '\0') {
    /* A bare number is ambiguous; only 0 means the same in every unit. */
    if (n != 0 || !ch__in_range(k, 0)) return CH_EINVAL;
    *out = 0;
    return 0;
  }
  for (size_t i = 0; i < CH_ARRAY_SIZE(units); i++) {
    if (strcasecmp(p, units[i].s) == 0) {
      if (ch__scale(n, units[i].unit, &ms) != 0 || !ch__in_range(k, ms)) return CH_EINVAL;
      *out = ms;
      return 0;
    }
  }
  return CH_EINVAL;
}

static int ch__parse_enum(const ch__key_t *k, const char *v, int *out) {
  char t[32];
  if (ch__trim(v, t, sizeof(t)) != 0 || t[0] == '\0') return CH_EINVAL;
  size_t n = strlen(t);
  int idx = 0;
  for (const char *p = k->choices;; idx++) {
    const char *bar = strchr(p, '|');
    size_t len = bar ? (size_t)(bar - p) : strlen(p);
    if (len == n && strncasecmp(p, t, n) == 0) {
      *out = idx;
      return 0;
    }
    if (bar == NULL) return CH_EINVAL;
    p = bar + 1;
  }
}

/* The idx-th name of an ENUM row, as pointer + length. */
static const char *ch__enum_name(const ch__key_t *k, int idx, size_t *len) {
  const char *p = k->choices;
  for (int i = 0; i < idx; i++) {
    const char *bar = strchr(p, '|');
    if (bar == NULL) break;
    p = bar + 1;
  }
  const char *bar = strchr(p, '|');
  *len = bar ? (size_t)(bar - p) : strlen(p);
  return p;
}

static int ch__port(const char *p, uint16_t *out) {
  unsigned long long n;
  if (strlen(p) > 5 || ch__digits(&p, &n) != 0 || *p != '\0' || n < 1 || n > 65535) return CH_EINVAL;
  *out = (uint16_t)n;
  return 0;
}

static int ch__hostname_ok(const char *h) {
  if (*h == '\0' || strlen(h) > 253) return 0;
  for (const char *p = h; *p; p++) {
    if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_') return 0;
  }
  return 1;
}

/* "host:port" or "[v6]:port" -> owned host (no brackets) + port. */
static int ch__parse_addr(const char *v, char **host, uint16_t *port) {
  char t[300];
  if (ch__trim(v, t, sizeof(t)) != 0) return CH_EINVAL;
  char *h, *p;
  if (t[0] == '[') {
    char *close = strchr(t, ']');
    if (close == NULL || close[1] != ':') return CH_EINVAL;
    *close = '\0';
    h = t + 1;
    p = close + 2;
    unsigned char a6[16];
    if (inet_pton(AF_INET6, h, a6) != 1) return CH_EINVAL;
  } else {
    char *colon = strchr(t, ':');
    if (colon == NULL || strchr(colon + 1, ':') != NULL) return CH_EINVAL; /* v6 needs brackets */
    *colon = '\0';
    h = t;
    p = colon + 1;
    if (!ch__hostname_ok(h)) return CH_EINVAL;
  }
  uint16_t n;
  if (ch__port(p, &n) != 0) return CH_EINVAL;
  *host = ch_xstrdup(h);
  *port = n;
  return 0;
}

/* An Origin header value: scheme "://" host [":" port], nothing after. */
static int ch__check_origin(const char *v) {
  const char *p = v;
  if (!isalpha((unsigned char)*p)) return CH_EINVAL;
  while (isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.') p++;
  if (strncmp(p, "://", 3) != 0) return CH_EINVAL;
  p += 3;
  const char *host = p;
  if (*p == '[') {
    const char *close = strchr(p, ']');
    if (close == NULL || close == p + 1) return CH_EINVAL;
    p = close + 1;
  } else {
    while (isalnum((unsigned char)*p) || *p == '-' || *p == '.' || *p == '_') p++;
    if (p == host) return CH_EINVAL;
  }
  if (*p == ':') {
    uint16_t port;
    return ch__port(p + 1, &port);
  }
  return *p == '\0' ? 0 : CH_EINVAL;
}

/* ------------------------------------------------------------------------ */
/* Storing                                                                    */

static void ch__list_clear(ch_config_list_t *l) {
  for (size_t i = 0; i < l->n; i++) free(l->v[i]);
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

static void ch__list_add(ch_config_list_t *l, const char *s) {
  l->v = ch_xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
  l->v[l->n++] = ch_xstrdup(s);
}

static void ch__set_src(ch_config_t *c, const ch__key_t *k, const char *origin) {
  size_t i = ch__index(k);
  free(c->_src[i]);
  c->_src[i] = origin ? ch_xstrdup(origin) : NULL;
}

/* Parse value for row k and store it in c. On failure c is untouched. */
static int ch__set(ch_config_t *c, const ch__key_t *k, const char *value, const char *origin,
                   ch_buf_t *err) {
  int rc = 0;
  switch (k->type) {
  case CH__T_BOOL: {
    bool b;
    if ((rc = ch__parse_bool(value, &b)) == 0) *CH__FIELD(c, k, bool) = b;
    break;
  }
  case CH__T_INT: {
    long long n;
    if ((rc = ch__parse_int(k, value, &n)) == 0) *CH__FIELD(c, k, int) = (int)n;
    break;
  }
  case CH__T_SIZE: {
    unsigned long long n;
    if ((rc = ch__parse_size(k, value, &n)) == 0) *CH__FIELD(c, k, size_t) = (size_t)n;
    break;
  }
  case CH__T_DUR: {
    unsigned long long n;
    if ((rc = ch__parse_dur(k, value, &n)) == 0) *CH__FIELD(c, k, uint64_t) = (uint64_t)n;
    break;
  }
  case CH__T_ENUM: {
    int idx;
    if ((rc = ch__parse_enum(k, value, &idx)) == 0) *CH__FIELD(c, k, int) = idx;
    break;
  }
  case CH__T_STR:
  case CH__T_PATH: {
    if (strlen(value) < (size_t)k->lo || (k->check && k->check(value) != 0)) {
      rc = CH_EINVAL;
      break;
    }
    char **f = CH__FIELD(c, k, char *);
    free(*f);
    *f = ch_xstrdup(value);
    break;
  }
  case CH__T_ADDR: {
    char *host;
    uint16_t port;
    if ((rc = ch__parse_addr(value, &host, &port)) != 0) break;
    char **f = CH__FIELD(c, k, char *);
    free(*f);
    *f = host;
    *(uint16_t *)(void *)((char *)c + k->off2) = port;
    break;
  }
  case CH__T_LIST: {
    ch_config_list_t *l = CH__FIELD(c, k, ch_config_list_t);
    if (value[0] == '\0') {
      ch__list_clear(l);
    } else if (k->check && k->check(value) != 0) {
      rc = CH_EINVAL;
    } else {
      ch__list_add(l, value);
    }
    break;
  }
  }
  if (rc != 0) {
    ch__fail(err, k, value, origin);
    return CH_ECONFIG;
  }
  ch__set_src(c, k, origin);
  return 0;
}

/*
 * Set within a layer: the first value a layer gives a list key replaces the
 * list of the lower layers. touched has one byte per key, zeroed per layer.
 */
static int ch__set_layer(ch_config_t *c, const ch__key_t *k, const char *value, const char *origin,
                         unsigned char *touched, ch_buf_t *err) {
  if (k->type == CH__T_LIST && !touched[ch__index(k)]) {
    ch__list_clear(CH__FIELD(c, k, ch_config_list_t));
  }
  touched[ch__index(k)] = 1;
  return ch__set(c, k, value, origin, err);
}

/* A list value from one string (default, environment): comma-separated, blanks trimmed. */
static int ch__set_split(ch_config_t *c, const ch__key_t *k, const char *value, const char *origin,
                         unsigned char *touched, ch_buf_t *err) {
  if (k->type != CH__T_LIST) return ch__set_layer(c, k, value, origin, touched, err);
  int rc = ch__set_layer(c, k, "", origin, touched, err); /* clears */
  const char *p = value;
  while (*p) {
    const char *comma = strchr(p, ',');
    const char *end = comma ? comma : p + strlen(p);
    const char *s = p;
    while (s < end && (ch__is_ws(*s))) s++;
    const char *e = end;
    while (e > s && ch__is_ws(e[-1])) e--;
    if (e > s) {
      char *item = ch_xstrndup(s, (size_t)(e - s));
      if (ch__set(c, k, item, origin, err) != 0) rc = CH_ECONFIG;
      free(item);
    }
    if (comma == NULL) break;
    p = comma + 1;
  }
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Public: init, dispose, set, get, check                                     */

void ch_config_init(ch_config_t *c) {
  memset(c, 0, sizeof(*c));
  c->_src = ch_xcalloc(CH__NKEYS, sizeof(*c->_src));
  unsigned char touched[CH__NKEYS] = {0};
  for (size_t i = 0; i < CH__NKEYS; i++) {
    const ch__key_t *k = &ch__keys[i];
    ch_buf_t err = CH_BUF_INIT;
    if (ch__set_split(c, k, k->def, "default", touched, &err) != 0) {
      /* A programmer error in the table; the unit tests catch it first. */
      fprintf(stderr, "chorus: bad default in the config table: %s", ch_buf_cstr(&err));
      abort();
    }
    ch_buf_dispose(&err);
    ch__set_src(c, k, NULL);
  }
}

void ch_config_dispose(ch_config_t *c) {
  for (size_t i = 0; i < CH__NKEYS; i++) {
    const ch__key_t *k = &ch__keys[i];
    switch (k->type) {
    case CH__T_STR:
    case CH__T_PATH:
    case CH__T_ADDR:
      free(*CH__FIELD(c, k, char *));
      *CH__FIELD(c, k, char *) = NULL;
      break;
    case CH__T_LIST:
      ch__list_clear(CH__FIELD(c, k, ch_config_list_t));
      break;
    default:
      break;
    }
    if (c->_src) free(c->_src[i]);
  }
  free(c->_src);
  free(c->_rest);
  c->_src = NULL;
  c->_rest = NULL;
}

int ch_config_set(ch_config_t *c, const char *key, const char *value, const char *origin,
                  ch_buf_t *err) {
  const ch__key_t *k = ch__find(key, strlen(key));
  if (k == NULL) {
    ch__unknown(err, "key", key, strlen(key), "", origin);
    return CH_ENOTFOUND;
  }
  return ch__set(c, k, value, origin, err);
}

static void ch__get(const ch_config_t *c, const ch__key_t *k, ch_buf_t *out) {
  switch (k->type) {
  case CH__T_BOOL:
    ch_buf_append_str(out, *CH__CFIELD(c, k, bool) ? "true" : "false");
    break;
  case CH__T_INT:
    ch_buf_printf(out, "%d", *CH__CFIELD(c, k, int));
    break;
  case CH__T_SIZE:
    ch__fmt_size(out, *CH__CFIELD(c, k, size_t));
    break;
  case CH__T_DUR:
    ch__fmt_dur(out, *CH__CFIELD(c, k, uint64_t));
    break;
  case CH__T_ENUM: {
    size_t len;
    const char *name = ch__enum_name(k, *CH__CFIELD(c, k, int), &len);
    ch_buf_append(out, name, len);
    break;
  }
  case CH__T_STR:
  case CH__T_PATH:
    ch_buf_append_str(out, *CH__CFIELD(c, k, char *));
    break;
  case CH__T_ADDR: {
    const char *host = *CH__CFIELD(c, k, char *);
    unsigned port = *(const uint16_t *)(const void *)((const char *)c + k->off2);
    ch_buf_printf(out, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
    break;
  }
  case CH__T_LIST: {
    const ch_config_list_t *l = CH__CFIELD(c, k, ch_config_list_t);
    for (size_t i = 0; i < l->n; i++) {
      if (i) ch_buf_append_byte(out, ',');
      ch_buf_append_str(out, l->v[i]);
    }
    break;
  }
  }
}

int ch_config_get(const ch_config_t *c, const char *key, ch_buf_t *out) {
  const ch__key_t *k = ch__find(key, strlen(key));
  if (k == NULL) return CH_ENOTFOUND;
  ch__get(c, k, out);
  return 0;
}

static const char *ch__src(const ch_config_t *c, const char *key) {
  const ch__key_t *k = ch__find(key, strlen(key));
  const char *s = k && c->_src ? c->_src[ch__index(k)] : NULL;
  return s ? s : "default";
}

int ch_config_check(const ch_config_t *c, ch_buf_t *err) {
  int rc = 0;
  if ((c->tls_cert[0] != '\0') != (c->tls_key[0] != '\0')) {
    const char *set = c->tls_cert[0] ? "tls-cert" : "tls-key";
    const char *unset = c->tls_cert[0] ? "tls-key" : "tls-cert";
    if (err) {
      ch_buf_printf(err, "config: %s is set (%s) but %s is not: give both or neither\n", set,
                    ch__src(c, set), unset);
    }
    rc = CH_ECONFIG;
  }
  if (c->pong_timeout_ms <= c->ping_interval_ms) {
    if (err) {
      ch_buf_append_str(err, "config: pong-timeout (");
      ch__fmt_dur(err, c->pong_timeout_ms);
      ch_buf_printf(err, ", %s) must be longer than ping-interval (", ch__src(c, "pong-timeout"));
      ch__fmt_dur(err, c->ping_interval_ms);
      ch_buf_printf(err, ", %s)\n", ch__src(c, "ping-interval"));
    }
    rc = CH_ECONFIG;
  }
  return rc;
}

const char *ch_config_key(size_t i) { return i < CH__NKEYS ? ch__keys[i].key : NULL; }

/* ------------------------------------------------------------------------ */
/* The file layer                                                             */

#define CH__FILE_MAX (1024 * 1024) /* a config file larger than this is a mistake */

/* Read a whole file into a NUL-terminated buffer. 0, CH_EIO or CH_ETOOBIG. */
static int ch__read_file(const char *path, ch_buf_t *out, int *errnum) {
  int rc = 0;
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    *errnum = errno;
    return CH_EIO;
  }
  char tmp[4096];
  size_t n;
  while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0) {
    if (out->len + n > CH__FILE_MAX) {
      rc = CH_ETOOBIG;
      goto Exit;
    }
    ch_buf_append(out, tmp, n);
  }
  if (ferror(f)) {
    *errnum = errno;
    rc = CH_EIO;
  }
Exit:
  fclose(f);
  ch_buf_cstr(out);
  return rc;
}

/*
 * The value part of a line, starting after '=' and blanks: a double-quoted
 * string with \" \\ \n \r \t escapes, or raw text up to a '#' that follows a
 * blank (a comment), trailing blanks removed. Fills val; returns NULL or a
 * static description of what is wrong.
 */
static const char *ch__line_value(const char *p, const char *end, ch_buf_t *val) {
  if (p < end && *p == '"') {
    for (p++; p < end && *p != '"'; p++) {
      if (*p != '\\') {
        ch_buf_append_byte(val, *p);
        continue;
      }
      if (++p == end) break;
      switch (*p) {
      case '"': ch_buf_append_byte(val, '"'); break;
      case '\\': ch_buf_append_byte(val, '\\'); break;
      case 'n': ch_buf_append_byte(val, '\n'); break;
      case 'r': ch_buf_append_byte(val, '\r'); break;
      case 't': ch_buf_append_byte(val, '\t'); break;
      default: return "unknown escape in quoted value (use \\\" \\\\ \\n \\r \\t)";
      }
    }
    if (p >= end) return "unterminated quoted value";
    for (p++; p < end && ch__is_ws(*p); p++) {
    }
    if (p < end && *p != '#') return "text after the closing quote";
  } else {
    const char *e = p;
    while (e < end && !(*e == '#' && (e == p || ch__is_ws(e[-1])))) e++;
    while (e > p && ch__is_ws(e[-1])) e--;
    ch_buf_append(val, p, (size_t)(e - p));
  }
  ch_buf_cstr(val);
  return NULL;
}

static int ch__load_file(ch_config_t *c, const char *path, ch_buf_t *err) {
  int rc = 0, errnum = 0;
  unsigned char touched[CH__NKEYS] = {0};
  ch_buf_t text = CH_BUF_INIT, val = CH_BUF_INIT, origin = CH_BUF_INIT;
  int r = ch__read_file(path, &text, &errnum);
  if (r != 0) {
    if (err) {
      ch_buf_printf(err, "config: cannot read config file %s: %s\n", path,
                    r == CH_ETOOBIG ? "larger than 1MiB" : strerror(errnum));
    }
    rc = CH_ECONFIG;
    goto Exit;
  }
  if (memchr(text.base, '\0', text.len) != NULL) {
    if (err) ch_buf_printf(err, "config: %s: contains a NUL byte; not a text file\n", path);
    rc = CH_ECONFIG;
    goto Exit;
  }
  const char *p = text.base, *end = text.base + text.len;
  if (end - p >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) p += 3; /* UTF-8 BOM */
  for (int line = 1; p < end; line++) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *next = eol ? eol + 1 : end;
    if (eol == NULL) eol = end;
    if (eol > p && eol[-1] == '\r') eol--;
    origin.len = 0;
    ch_buf_printf(&origin, "%s:%d", path, line);
    const char *s = p;
    p = next;
    while (s < eol && ch__is_ws(*s)) s++;
    if (s == eol || *s == '#') continue;
    const char *eq = memchr(s, '=', (size_t)(eol - s));
    if (eq == NULL) {
      if (err) ch_buf_printf(err, "config: %s: expected 'key = value'\n", ch_buf_cstr(&origin));
      rc = CH_ECONFIG;
      continue;
    }
    const char *ke = eq;
    while (ke > s && ch__is_ws(ke[-1])) ke--;
    const ch__key_t *k = ch__find(s, (size_t)(ke - s));
    if (k == NULL) {
      ch__unknown(err, "key", s, (size_t)(ke - s), "", ch_buf_cstr(&origin));
      rc = CH_ECONFIG;
      continue;
    }
    const char *v = eq + 1;
    while (v < eol && ch__is_ws(*v)) v++;
    val.len = 0;
    const char *why = ch__line_value(v, eol, &val);
    if (why != NULL) {
      if (err) ch_buf_printf(err, "config: %s (%s): %s\n", k->key, ch_buf_cstr(&origin), why);
      rc = CH_ECONFIG;
      continue;
    }
    if (ch__set_layer(c, k, ch_buf_cstr(&val), ch_buf_cstr(&origin), touched, err) != 0) rc = CH_ECONFIG;
  }
Exit:
  ch_buf_dispose(&text);
  ch_buf_dispose(&val);
  ch_buf_dispose(&origin);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* The environment and flag layers                                            */

static int ch__load_env(ch_config_t *c, ch_buf_t *err) {
  int rc = 0;
  unsigned char touched[CH__NKEYS] = {0};
  for (size_t i = 0; i < CH__NKEYS; i++) {
    char name[CH__KEY_MAX + 16], origin[CH__KEY_MAX + 32];
    ch__env_name(&ch__keys[i], name, sizeof(name));
    const char *v = getenv(name);
    if (v == NULL) continue;
    snprintf(origin, sizeof(origin), "env %s", name);
    if (ch__set_split(c, &ch__keys[i], v, origin, touched, err) != 0) rc = CH_ECONFIG;
  }
  return rc;
}

/* "--name" or "--name=value": the name's length, and the value (NULL if no '='). */
static size_t ch__flag_name(const char *arg, const char **value) {
  const char *eq = strchr(arg + 2, '=');
  *value = eq ? eq + 1 : NULL;
  return eq ? (size_t)(eq - (arg + 2)) : strlen(arg + 2);
}

/* The config file named on the command line or in CHORUS_CONFIG; NULL = none. */
static const char *ch__config_path(int argc, char **argv) {
  const char *path = getenv("CHORUS_CONFIG");
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0) break;
    if (strcmp(a, "--config") == 0 && i + 1 < argc) {
      path = argv[++i];
    } else if (strncmp(a, "--config=", 9) == 0) {
      path = a + 9;
    }
  }
  return path && path[0] ? path : NULL;
}

static void ch__rest_add(ch_config_t *c, int *n, char *arg) {
  c->_rest = ch_xrealloc(c->_rest, ((size_t)*n + 2) * sizeof(*c->_rest));
  c->_rest[(*n)++] = arg;
  c->_rest[*n] = NULL;
}

static int ch__load_flags(ch_config_t *c, int argc, char **argv, int *nrest, ch_buf_t *err) {
  int rc = 0;
  unsigned char touched[CH__NKEYS] = {0};
  char origin[CH__KEY_MAX + 16];
  for (int i = 1; i < argc; i++) {
    char *a = argv[i];
    if (strcmp(a, "--") == 0) {
      while (++i < argc) ch__rest_add(c, nrest, argv[i]);
      break;
    }
    if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
      ch__rest_add(c, nrest, a);
      continue;
    }
    const char *value;
    size_t n = ch__flag_name(a, &value);
    if (n == 6 && memcmp(a + 2, "config", 6) == 0) {
      if (value == NULL) {
        if (i + 1 >= argc) {
          if (err) ch_buf_append_str(err, "config: flag --config needs a value (a file path)\n");
          rc = CH_ECONFIG;
        }
        i++;
      }
      continue;
    }
    const ch__key_t *k = ch__find(a + 2, n);
    const char *boolval = NULL;
    if (k == NULL && n > 3 && memcmp(a + 2, "no-", 3) == 0) {
      k = ch__find(a + 5, n - 3);
      if (k && k->type != CH__T_BOOL) k = NULL;
      if (k && value != NULL) {
        if (err) ch_buf_printf(err, "config: flag --no-%s takes no value\n", k->key);
        rc = CH_ECONFIG;
        continue;
      }
      boolval = "false";
    }
    if (k == NULL) {
      ch__rest_add(c, nrest, a); /* not ours: the caller decides */
      continue;
    }
    snprintf(origin, sizeof(origin), "flag --%s", k->key);
    if (boolval == NULL && value == NULL) {
      if (k->type == CH__T_BOOL) {
        boolval = "true";
      } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
        value = argv[++i];
      } else {
        if (err) {
          ch_buf_printf(err, "config: flag --%s needs a value: ", k->key);
          ch__expect(k, err);
          ch_buf_append_str(err, "\n");
        }
        rc = CH_ECONFIG;
        continue;
      }
    }
    if (ch__set_layer(c, k, boolval ? boolval : value, origin, touched, err) != 0) rc = CH_ECONFIG;
  }
  return rc;
}

int ch_config_load(ch_config_t *c, int argc, char **argv, char ***rest, int *nrest, ch_buf_t *err) {
  int rc = 0, n = 0;
  free(c->_rest);
  c->_rest = NULL;
  ch__rest_add(c, &n, NULL); /* an empty, NULL-terminated array even with no leftovers */
  n = 0;

  const char *path = ch__config_path(argc, argv);
  if (path && ch__load_file(c, path, err) != 0) rc = CH_ECONFIG;
  if (ch__load_env(c, err) != 0) rc = CH_ECONFIG;
  if (ch__load_flags(c, argc, argv, &n, err) != 0) rc = CH_ECONFIG;
  if (ch_config_check(c, err) != 0) rc = CH_ECONFIG;

  if (rest == NULL && n > 0) {
    if (err) {
      for (int i = 0; i < n; i++) {
        if (strncmp(c->_rest[i], "--", 2) == 0 && c->_rest[i][2] != '\0') {
          ch_config_unknown_flag(c->_rest[i], err);
        } else {
          ch_buf_append_str(err, "config: unexpected argument '");
          ch__append_shown(err, c->_rest[i]);
          ch_buf_append_str(err, "'\n");
        }
      }
    }
    rc = CH_ECONFIG;
  }
  if (rest) *rest = c->_rest;
  if (nrest) *nrest = n;
  return rc;
}

void ch_config_unknown_flag(const char *arg, ch_buf_t *err) {
  const char *name = strncmp(arg, "--", 2) == 0 ? arg + 2 : arg;
  const char *eq = strchr(name, '=');
  size_t n = eq ? (size_t)(eq - name) : strlen(name);
  ch__unknown(err, "flag", name, n, "--", NULL);
}

/* ------------------------------------------------------------------------ */
/* Output: usage, dump, reference                                             */

static const char *ch__metavar(const ch__key_t *k) {
  if (k->metavar) return k->metavar;
  switch (k->type) {
  case CH__T_INT: return "N";
  case CH__T_SIZE: return "SIZE";
  case CH__T_DUR: return "DURATION";
  case CH__T_ENUM: return k->choices;
  case CH__T_PATH: return "PATH";
  case CH__T_ADDR: return "HOST:PORT";
  default: return "TEXT";
  }
}

void ch_config_usage(ch_buf_t *out) {
  ch_config_t d;
  ch_config_init(&d);
  ch_buf_append_str(out, "Configuration (defaults < file < environment < flags):\n");
  ch_buf_printf(out, "  %-34s %s\n", "--config PATH", "read settings from this file (env CHORUS_CONFIG)");
  for (size_t i = 0; i < CH__NKEYS; i++) {
    const ch__key_t *k = &ch__keys[i];
    ch_buf_t flag = CH_BUF_INIT;
    if (k->type == CH__T_BOOL) {
      ch_buf_printf(&flag, "--[no-]%s", k->key);
    } else {
      ch_buf_printf(&flag, "--%s %s", k->key, ch__metavar(k));
    }
    ch_buf_printf(out, "  %-34s %s (default ", ch_buf_cstr(&flag), k->help);
    size_t before = out->len;
    ch__get(&d, k, out);
    if (out->len == before) ch_buf_append_str(out, "none");
    if (k->zero && strcmp(out->base + before, "0") == 0) ch_buf_printf(out, " = %s", k->zero);
    ch_buf_append_str(out, ")\n");
    ch_buf_dispose(&flag);
  }
  ch_buf_append_str(out,
                    "Each flag can also be set as CHORUS_<FLAG> in the environment (CHORUS_DATA_DIR for\n"
                    "--data-dir) or as 'key = value' in the file. Sizes take B, KiB, MiB, GiB (k, m, g);\n"
                    "durations ms, s, m, h. Repeat --origins for several; in the environment separate\n"
                    "them with commas.\n");
  ch_config_dispose(&d);
}

/* Append v as a config-file value, quoted when it would not read back as is. */
static void ch__append_value(ch_buf_t *out, const char *v) {
  size_t n = strlen(v);
  int quote = n == 0 || ch__is_ws(v[0]) || ch__is_ws(v[n - 1]) || v[0] == '"';
  for (size_t i = 0; i < n && !quote; i++) {
    unsigned char ch = (unsigned char)v[i];
    if (ch == '#' || ch == '\\' || ch < 0x20 || ch == 0x7f) quote = 1;
  }
  if (!quote) {
    ch_buf_append(out, v, n);
    return;
  }
  ch_buf_append_byte(out, '"');
  for (size_t i = 0; i < n; i++) {
    switch (v[i]) {
    case '"': ch_buf_append_str(out, "\\\""); break;
    case '\\': ch_buf_append_str(out, "\\\\"); break;
    case '\n': ch_buf_append_str(out, "\\n"); break;
    case '\r': ch_buf_append_str(out, "\\r"); break;
    case '\t': ch_buf_append_str(out, "\\t"); break;
    default: ch_buf_append_byte(out, v[i]);
    }
  }
  ch_buf_append_byte(out, '"');
}

void ch_config_dump(const ch_config_t *c, ch_buf_t *out) {
  ch_config_t d;
  ch_config_init(&d);
  ch_buf_append_str(out,
                    "# chorus configuration: the effective value of every key.\n"
                    "# Precedence: defaults < this file < environment CHORUS_<KEY> < flags --key.\n");
  for (size_t i = 0; i < CH__NKEYS; i++) {
    const ch__key_t *k = &ch__keys[i];
    char env[CH__KEY_MAX + 16];
    ch__env_name(k, env, sizeof(env));
    ch_buf_printf(out, "\n# %s.\n# Expects ", k->help);
    ch__expect(k, out);
    ch_buf_append_str(out, "; default ");
    size_t before = out->len;
    ch__get(&d, k, out);
    if (out->len == before) ch_buf_append_str(out, "none");
    ch_buf_printf(out, ". Env %s, flag --%s.", env, k->key);
    if (c->_src && c->_src[i]) ch_buf_printf(out, " Set by %s.", c->_src[i]);
    ch_buf_append_str(out, "\n");
    if (k->type == CH__T_LIST) {
      const ch_config_list_t *l = CH__CFIELD(c, k, ch_config_list_t);
      if (l->n == 0) ch_buf_printf(out, "%s = \"\"\n", k->key);
      for (size_t j = 0; j < l->n; j++) {
        ch_buf_printf(out, "%s = ", k->key);
        ch__append_value(out, l->v[j]);
        ch_buf_append_str(out, "\n");
      }
    } else {
      ch_buf_t v = CH_BUF_INIT;
      ch__get(c, k, &v);
      ch_buf_printf(out, "%s = ", k->key);
      ch__append_value(out, ch_buf_cstr(&v));
      ch_buf_append_str(out, "\n");
      ch_buf_dispose(&v);
    }
  }
  ch_config_dispose(&d);
}

/* Append s for a Markdown table cell ('|' escaped). */
static void ch__append_md(ch_buf_t *out, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '|') ch_buf_append_byte(out, '\\');
    ch_buf_append_byte(out, s[i]);
  }
}

void ch_config_reference(ch_buf_t *out) {
  ch_config_t d;
  ch_config_init(&d);
  ch_buf_append_str(out, "| Key (file, `--flag`) | Environment | Default | Allowed | Meaning |\n"
                         "|---|---|---|---|---|\n");
  for (size_t i = 0; i < CH__NKEYS; i++) {
    const ch__key_t *k = &ch__keys[i];
    char env[CH__KEY_MAX + 16];
    ch__env_name(k, env, sizeof(env));
    ch_buf_t cell = CH_BUF_INIT;
    ch_buf_printf(out, "| `%s` | `%s` | ", k->key, env);
    ch__get(&d, k, &cell);
    if (cell.len) {
      ch_buf_append_byte(out, '`');
      ch__append_md(out, cell.base, cell.len);
      ch_buf_append_byte(out, '`');
    } else {
      ch_buf_append_str(out, "(none)");
    }
    ch_buf_append_str(out, " | ");
    cell.len = 0;
    ch__expect(k, &cell);
    ch__append_md(out, cell.base, cell.len);
    ch_buf_append_str(out, " | ");
    ch__append_md(out, k->help, strlen(k->help));
    ch_buf_append_str(out, " |\n");
    ch_buf_dispose(&cell);
  }
  ch_config_dispose(&d);
}
