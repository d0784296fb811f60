/*
 * auth.h — identities and credentials: who a connection is, and the proof.
 *
 * Every connection of every profile carries exactly one credential. This
 * module turns the presented text into an identity (user, device, scopes) or
 * a refusal with a short reason that is safe to send back and to log (it never
 * contains the credential itself):
 *
 *   presented text ──classify──┬─ "chk_<id8>_<rand32>"  API key ──sha256──> store.apikey_find
 *                              ├─ "<b64u>.<b64u>.<b64u>" JWT HS256 ──HMAC──> claims
 *                              ├─ "user:device"          insecure dev pair (only with the flag)
 *                              └─ anything else          refused
 *   6-digit PIN (relay, in-band) ──HMAC(secret)──> store.pin_take ──> user + NEW device id
 *
 * Secrets and what is stored:
 *   data_dir/secret.key  32 random bytes as 64 hex chars, mode 0600. It signs
 *                        tokens (HS256) and keys the PIN hashes. Losing it
 *                        invalidates every token; leaking it lets anyone mint.
 *   API keys             only hex SHA-256(key) is stored; the key is shown once.
 *                        A key has 32 base62 chars (~190 bits), so a plain hash
 *                        is enough (no salt/stretching needed).
 *   PINs                 only hex HMAC-SHA256(secret, pin): the PIN space is
 *                        tiny (10^6), so a plain hash would be reversible from a
 *                        stolen database; the keyed hash is not without the
 *                        secret file.
 * Secrets are compared in constant time (CRYPTO_memcmp) and never logged.
 *
 * Threading: everything here is reentrant. Token verification and
 * classification are pure (no I/O) and may run on any loop thread. Functions
 * taking a ch_store_t call it synchronously, so they run where the store may
 * be used (store.h: one thread at a time — the hub thread). The attempt
 * limiter has its own mutex and may be shared by all loops.
 *
 * Clocks: every function that needs the time takes now_ms (wall clock, UTC
 * milliseconds, as ch_clock_wall_ms()); none reads a clock itself, so tests
 * inject time. The limiter takes any monotonic millisecond count.
 */
#ifndef CH_AUTH_AUTH_H
#define CH_AUTH_AUTH_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "store/store.h"

struct ch_http_req_s;

/* ---------------------------------------------------------------- scopes */

#define CH_SCOPE_READ 1u
#define CH_SCOPE_WRITE 2u
#define CH_SCOPE_ADMIN 4u /* implies read and write (and everything else) */
#define CH_SCOPE_ALL (CH_SCOPE_READ | CH_SCOPE_WRITE | CH_SCOPE_ADMIN)
#define CH_AUTH_SCOPES_MAX 24 /* bytes for the longest formatted set, "read write admin" + NUL */

/* Parse a scope list: words "read", "write", "admin" separated by spaces,
 * tabs and/or commas, in any order, repeats allowed ("read write",
 * "read,write", "admin"). "admin" yields CH_SCOPE_ALL. *out gets the set.
 *   0          parsed (at least one word)
 *   CH_EINVAL  empty list, unknown word, or s NULL */
int ch_auth_scopes_parse(const char *s, unsigned *out);
/* Format a set as space-separated words in the order read, write, admin
 * ("read write", "read write admin"; "" for 0). out: CH_AUTH_SCOPES_MAX bytes. */
void ch_auth_scopes_format(unsigned scopes, char out[CH_AUTH_SCOPES_MAX]);
/* 1 when `have` grants every scope in `need` (admin grants everything), else 0. */
int ch_auth_scopes_allow(unsigned have, unsigned need);

/* -------------------------------------------------------------- identity */

#define CH_AUTH_ID_MAX 128 /* user and device ids: 1..128 bytes of [A-Za-z0-9._@:-] */

typedef enum {
  CH_AUTH_KIND_NONE = 0,
  CH_AUTH_KIND_TOKEN = 1,    /* a JWT minted with the hub's secret */
  CH_AUTH_KIND_APIKEY = 2,   /* an API key found in the store */
  CH_AUTH_KIND_PIN = 3,      /* a redeemed PIN (relay): a new device of the PIN's user */
  CH_AUTH_KIND_INSECURE = 4, /* a literal "user:device" pair, insecure_dev mode only */
  CH_AUTH_KIND_ADMIN = 5,    /* reserved for an operator/admin credential of the hub */
} ch_auth_kind_t;

typedef struct {
  char user_id[CH_AUTH_ID_MAX + 1];   /* always a valid id when filled by this module */
  char device_id[CH_AUTH_ID_MAX + 1]; /* valid id, or "" when the credential names none */
  unsigned scopes;                    /* CH_SCOPE_* bits */
  int kind;                           /* ch_auth_kind_t */
  int64_t expires_ms;                 /* wall-clock UTC ms after which it is void; 0 = never */
  char key_id[32];                    /* API key id (public, loggable); "" otherwise */
} ch_identity_t;

/* 1 when s[0..n) is a valid user/device id (1..128 bytes of [A-Za-z0-9._@:-]), else 0. */
int ch_auth_id_valid_n(const char *s, size_t n);
/* Same for a NUL-terminated string; NULL is invalid. */
int ch_auth_id_valid(const char *s);

/* ---------------------------------------------------------------- secret */

#define CH_AUTH_SECRET_LEN 32
#define CH_AUTH_SECRET_FILE "secret.key"

typedef struct {
  unsigned char key[CH_AUTH_SECRET_LEN]; /* raw HMAC key; wipe with ch_auth_secret_dispose */
} ch_auth_secret_t;

/*
 * Load data_dir/secret.key into *out. With create = 1 a missing file is
 * created with 32 fresh random bytes (hex, mode 0600), and a missing data_dir
 * with mode 0700 (parents too). Creation is race-free between processes (the
 * hub and a CLI started at the same moment): the file is written under a
 * temporary name (O_EXCL) and published with link(2), which fails if another
 * process won; the winner's file is then read. *created (may be NULL) is set
 * to 1 when this call created the file, else 0.
 *   0             loaded
 *   CH_ENOTFOUND  missing and create == 0
 *   CH_EPERM      the file is accessible by group or others (mode & 077), or
 *                 not a regular file: err says which and how to fix it (chmod 600)
 *   CH_ECONFIG    the content is not 64 hex digits
 *   CH_EIO        a system call failed (err names it and the path)
 * err (may be NULL) gets one line ending in "\n" naming the path. The key
 * never appears in err.
 */
int ch_auth_secret_load(const char *data_dir, int create, ch_auth_secret_t *out, int *created,
                        ch_buf_t *err);
/* Wipe the key bytes (OPENSSL_cleanse). */
void ch_auth_secret_dispose(ch_auth_secret_t *s);

/* ---------------------------------------------------------------- tokens */

#define CH_AUTH_TOKEN_MAX 4096 /* longest token verify accepts, bytes */
#define CH_AUTH_ISSUER "chorus"

/*
 * Mint a JWT (HS256) for user/device: header {"alg":"HS256","typ":"JWT"},
 * claims sub = user, dev = device (omitted when device is NULL), scope =
 * formatted scopes, iat = now (s), exp = now + ttl_s (omitted when ttl_s is
 * 0: the token never expires), iss = "chorus".
 * now_ms: wall clock UTC ms (0 = read the clock now).
 * *out: a new malloc'd NUL-terminated token, the caller's to free().
 *   0          minted
 *   CH_EINVAL  user/device not a valid id, scopes 0 or unknown bits, ttl_s < 0
 *   CH_EIO     libjwt failed
 */
int ch_auth_token_mint(const ch_auth_secret_t *s, const char *user, const char *device,
                       unsigned scopes, int64_t ttl_s, int64_t now_ms, char **out);
/*
 * Verify a presented token at time now_ms and fill *id (kind TOKEN, key_id "").
 * Checks, in this order, each failing with CH_EAUTH and *reason (static text,
 * may be NULL) =
 *   "malformed token"   not three base64url parts, too long, header (or, once the
 *                       signature holds, claims) not a JSON object
 *   "wrong algorithm"   header alg is not exactly "HS256" (so "none", HS512 ...)
 *   "bad signature"     HMAC-SHA256 mismatch (constant-time compare)
 *   "invalid claims"    iss not "chorus", sub/dev not valid ids, bad scope, bad exp
 *   "token expired"     now_ms >= exp * 1000
 * On success returns 0 and *reason = NULL. *id is zeroed on failure.
 */
int ch_auth_token_verify(const ch_auth_secret_t *s, const char *token, int64_t now_ms,
                         ch_identity_t *id, const char **reason);

/* -------------------------------------------------------------- API keys */

/* "chk_" + 8-char id + "_" + 32 random base62 chars = 45 chars. */
#define CH_AUTH_APIKEY_PREFIX "chk_"
#define CH_AUTH_APIKEY_ID_LEN 8
#define CH_AUTH_APIKEY_RAND_LEN 32
#define CH_AUTH_APIKEY_LEN (4 + CH_AUTH_APIKEY_ID_LEN + 1 + CH_AUTH_APIKEY_RAND_LEN)
#define CH_AUTH_HASH_HEX_LEN 64

/* A new key with a random base62 id, and its hash (hex SHA-256 of the whole
 * key). key_out: CH_AUTH_APIKEY_LEN + 1 bytes; id_out: CH_AUTH_APIKEY_ID_LEN + 1;
 * hash_out: CH_AUTH_HASH_HEX_LEN + 1. All NUL-terminated.
 *   0 or CH_EIO (no randomness) */
int ch_auth_apikey_generate(char *key_out, char *id_out, char *hash_out);
/* 1 when key has exactly the API key format (prefix, lengths, base62), else 0. */
int ch_auth_apikey_valid(const char *key);
/* Copy the id of a well-formed key into id_out (CH_AUTH_APIKEY_ID_LEN + 1 bytes).
 *   0 or CH_EINVAL (not the key format) */
int ch_auth_apikey_parse_id(const char *key, char *id_out);
/* hash_out (CH_AUTH_HASH_HEX_LEN + 1 bytes) = lower-case hex SHA-256 of key. */
void ch_auth_apikey_hash(const char *key, char *hash_out);
/*
 * Resolve a presented key through the store (apikey_find by hash) and fill
 * *id: kind APIKEY, the key's user and scopes, device_id "apikey-<id>",
 * key_id = the key's id, expires_ms 0. Runs on the store's thread.
 *   0          resolved
 *   CH_EAUTH   malformed, unknown, revoked, or the stored record is unusable
 *   other <0   the store's error (CH_EIO ...): not the client's fault
 */
int ch_auth_apikey_resolve(ch_store_t *st, const char *key, ch_identity_t *id);

/* ------------------------------------------------------------------ PINs */

#define CH_AUTH_PIN_LEN 6
#define CH_AUTH_PIN_TTL_MS ((int64_t)5 * 60 * 1000)
#define CH_AUTH_DEVICE_RAND_LEN 12 /* device id minted at redemption: "dev-" + 12 chars */

/* A uniform random 6-digit PIN ("000000".."999999"), by rejection sampling
 * of RAND_bytes (no modulo bias). pin_out: CH_AUTH_PIN_LEN + 1 bytes. 0 or CH_EIO. */
int ch_auth_pin_generate(char *pin_out);
/* hash_out (CH_AUTH_HASH_HEX_LEN + 1 bytes) = lower-case hex HMAC-SHA256(secret, pin). */
void ch_auth_pin_hash(const ch_auth_secret_t *s, const char *pin, char *hash_out);
/* 1 when pin is exactly 6 ASCII digits, else 0. */
int ch_auth_pin_valid(const char *pin);
/*
 * Issue a PIN for user, valid ttl_ms from now_ms (ttl_ms 0 = CH_AUTH_PIN_TTL_MS):
 * stores only the HMAC. pin_out: CH_AUTH_PIN_LEN + 1 bytes (show it once).
 *   0, CH_EINVAL (bad user id, ttl_ms < 0), CH_EIO (randomness), or the store's error.
 */
int ch_auth_pin_issue(ch_store_t *st, const ch_auth_secret_t *s, const char *user, int64_t ttl_ms,
                      int64_t now_ms, char *pin_out);
/*
 * Redeem a PIN at now_ms: consumed atomically by the store (single use; expired
 * ones fail). *id: kind PIN, the issuing user, a NEW device id "dev-" + 12
 * random base62 chars, scopes read+write, expires_ms 0.
 *   0          redeemed
 *   CH_EAUTH   not 6 digits, unknown, used or expired (count a failure)
 *   other <0   the store's error, or CH_EIO (randomness)
 */
int ch_auth_pin_redeem(ch_store_t *st, const ch_auth_secret_t *s, const char *pin, int64_t now_ms,
                       ch_identity_t *id);

/* ------------------------------------------------------ attempt limiting */

#define CH_AUTH_LIMITER_KEY_MAX 64       /* bytes kept of a key (incl. NUL); longer keys are
                                            told apart by a hash of the whole key */
#define CH_AUTH_ADDR_MAX_FAILURES 20     /* defaults for the per-address limiter */
#define CH_AUTH_ADDR_WINDOW_MS ((int64_t)15 * 60 * 1000)
#define CH_AUTH_CONN_MAX_FAILURES 5      /* default for the per-connection counter */

typedef struct ch_auth_limiter_entry_s ch_auth_limiter_entry_t;

/*
 * Failures per key (e.g. a source address) in a sliding window: a key with
 * max_failures failures in the last window_ms is locked until the oldest of
 * them leaves the window. Memory is fixed at init: max_keys entries, each
 * with a ring of max_failures timestamps. When the table is full, a new key
 * takes the slot of an entry with no failure left in the window, else of the
 * entry whose newest failure is the oldest (least recently failing).
 * Thread-safe (internal mutex). Time is any monotonic ms count, injected.
 */
typedef struct ch_auth_limiter_s {
  ch_auth_limiter_entry_t *_entries; /* owned array of _max_keys */
  int64_t *_stamps;                  /* owned: _max_keys * _max_failures failure times (ms) */
  size_t _max_keys;                  /* table size, entries */
  unsigned _max_failures;            /* failures allowed in the window before locking */
  int64_t _window_ms;                /* window length, ms */
  pthread_mutex_t _mu;               /* guards everything above */
} ch_auth_limiter_t;

/* Prepare l. max_keys 1..1<<20, max_failures 1..1024, window_ms > 0. 0 or CH_EINVAL. */
int ch_auth_limiter_init(ch_auth_limiter_t *l, size_t max_keys, unsigned max_failures,
                         int64_t window_ms);
void ch_auth_limiter_dispose(ch_auth_limiter_t *l);
/* Before an attempt by key at now_ms:
 *   0          allowed
 *   CH_ELIMIT  locked; *retry_after_ms (may be NULL) = ms until one attempt is allowed */
int ch_auth_limiter_check(ch_auth_limiter_t *l, const char *key, int64_t now_ms,
                          int64_t *retry_after_ms);
/* Record one failed attempt by key at now_ms. */
void ch_auth_limiter_fail(ch_auth_limiter_t *l, const char *key, int64_t now_ms);
/* Forget key's failures (e.g. after a success). */
void ch_auth_limiter_reset(ch_auth_limiter_t *l, const char *key);
/* Keys currently held (for tests and stats). */
size_t ch_auth_limiter_count(ch_auth_limiter_t *l);

/* Per-connection counter: embed in the connection, no locking (one thread). */
typedef struct {
  unsigned failures; /* failed attempts so far */
  unsigned max;      /* attempts allowed to fail; after that every attempt is refused */
} ch_auth_conn_limit_t;

/* max 0 = CH_AUTH_CONN_MAX_FAILURES. */
void ch_auth_conn_limit_init(ch_auth_conn_limit_t *c, unsigned max);
/* 0 when another attempt is allowed, CH_ELIMIT once max failures were recorded. */
int ch_auth_conn_limit_check(const ch_auth_conn_limit_t *c);
/* Record a failure; returns ch_auth_conn_limit_check() after it. */
int ch_auth_conn_limit_fail(ch_auth_conn_limit_t *c);

/* ------------------------------------------------- presented credentials */

typedef enum {
  CH_AUTH_CRED_NONE = 0,     /* NULL or empty */
  CH_AUTH_CRED_APIKEY = 1,   /* starts with "chk_" (format checked on resolve) */
  CH_AUTH_CRED_JWT = 2,      /* three dot-separated base64url parts (third may be empty) */
  CH_AUTH_CRED_INSECURE = 3, /* "user:device": split at the FIRST ':', both valid ids */
  CH_AUTH_CRED_UNKNOWN = 4,  /* anything else */
} ch_auth_cred_kind_t;

/* Classify presented text (no verification). */
int ch_auth_cred_classify(const char *cred);

/*
 * The credential of an HTTP request (also the WebSocket upgrade request):
 * "Authorization: Bearer X" (scheme case-insensitive) wins, else the query
 * parameter ?token=X. *out is borrowed from req (its arena), NUL-terminated.
 *   0             found (non-empty)
 *   CH_ENOTFOUND  none
 */
int ch_auth_cred_from_request(struct ch_http_req_s *req, const char **out);

#define CH_AUTH_INSECURE_DEV 1 /* flag: accept literal "user:device" pairs */

/*
 * Authenticate presented text: dispatch on ch_auth_cred_classify().
 *   JWT       ch_auth_token_verify (pure; st unused)
 *   API key   ch_auth_apikey_resolve through st (st NULL: CH_EUNSUPPORTED,
 *             reason "api keys need the store" — call again on the store thread)
 *   INSECURE  accepted only with CH_AUTH_INSECURE_DEV in flags (kind INSECURE,
 *             scopes read+write), else "insecure dev tokens are disabled"
 * Returns 0, CH_EAUTH with *reason (static, safe to send/log), or another
 * negative code (store failure). Reasons besides the token ones:
 * "missing credential", "invalid api key", "unrecognised credential".
 */
int ch_auth_authenticate(const ch_auth_secret_t *s, ch_store_t *st, const char *cred, int flags,
                         int64_t now_ms, ch_identity_t *id, const char **reason);

#endif
