/*
 * lg.h — internals shared by the source files of chorus-loadgen (everything in bench/).
 *
 * chorus-loadgen is a single-threaded libuv program: one loop, many client
 * WebSocket connections, one mode driving them (echo, fanout, idle: see
 * loadgen.c; send, convfan, resume on chorus's native protocol: see
 * lg_conv.c). The pieces:
 *
 *   lg_util.c  log-linear latency histogram (fixed size, no allocation),
 *              ws:// URL parsing (loopback only), payload stamps, /proc
 *              readings, option parsing helpers
 *   lg_conn.c  the client connection: paced connect with retries, the HTTP
 *              Upgrade handshake (checks 101 + Sec-WebSocket-Accept), a
 *              resumable frame parser for server frames, masked frame
 *              building into a per-connection output buffer that one
 *              uv_prepare/uv_check pair flushes per loop turn
 *   lg_json.c  a JSON scanner that finds members without allocating
 *              (for the native protocol's documents)
 *   loadgen.c  command line, echo/fanout/idle, JSON report
 *   lg_conv.c  the conversation modes (send, convfan, resume), own report
 *   lg_agent.c the agent modes (agent-ttfc, agent-fan): a fake OpenAI-compatible
 *              upstream on this loop, chorus's agent relay measured against it
 *
 * Data flow of one connection:
 *
 *   lg_conn_start ─> wait list ─(pacer, <= batch at once)─> uv_tcp_connect
 *      ─> GET + Sec-WebSocket-Key ─> 101 + Accept checked ─> OPEN ─> ops->on_open
 *   read: shared 256 KiB buffer ─> frame parser ─> ops->on_message(prefix, len)
 *   write: lg_conn_frame_begin/end (masked in place) ─> out ─> flush
 *
 * Payload layout used by the modes (text frames, ASCII only, so every peer
 * forwards them unchanged whatever it does with opcodes):
 *
 *   0               16              32                         size
 *   +---------------+---------------+--------------------------+
 *   | seq, 16 hex   | send time ns, | filler: 'a' + (i % 26)   |
 *   | digits        | 16 hex digits | checked byte by byte     |
 *   +---------------+---------------+--------------------------+
 *
 * Everything here runs on the loop thread; no locking anywhere.
 * Symbols use the lg_ prefix (the program is "loadgen", not part of the hub).
 */
#ifndef CH_BENCH_LG_H
#define CH_BENCH_LG_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "core/buf.h"
#include "core/list.h"

/* ---- latency histogram ------------------------------------------------------------------ */

#define LG_HIST_BUCKETS 3776 /* 128 exact + 58 octaves x 64 sub-buckets, up to 2^64 ns */

typedef struct lg_hist_s {
  uint64_t counts[LG_HIST_BUCKETS];
  uint64_t n;   /* samples recorded */
  uint64_t max; /* largest sample, ns */
} lg_hist_t;

void lg_hist_reset(lg_hist_t *h);
/* Record one sample (ns). Never allocates; precision 1/64 of the value. */
void lg_hist_record(lg_hist_t *h, uint64_t ns);
/* Value (ns) at quantile q in [0,1]; 0 when empty. Midpoint of the bucket. */
uint64_t lg_hist_quantile(const lg_hist_t *h, double q);

/* ---- URLs -------------------------------------------------------------------------------- */

typedef struct lg_url_s {
  struct sockaddr_in addr; /* resolved, always in 127.0.0.0/8 */
  char host[128];          /* as written, for the Host header (with :port) */
  char path[1024];         /* path + query, starts with '/'; its first "{i}" is replaced by
                            * the connection's u_index in the request line (per-connection
                            * credentials, e.g. ?token=user:dev{i}) */
} lg_url_t;

/* Parse "ws://HOST:PORT/path?query". HOST must be localhost or an address in
 * 127.0.0.0/8: this tool never sends load anywhere else.
 * Returns 0, or CH_EINVAL with a message in err (errlen bytes). */
int lg_url_parse(const char *s, lg_url_t *u, char *err, size_t errlen);

/* ---- payloads ---------------------------------------------------------------------------- */

#define LG_PFX 32                   /* bytes of header (seq + time) in a payload */
#define LG_SEQ_SYNC UINT64_MAX      /* seq of fanout sync probes */
#define LG_MAX_PAYLOAD (1u << 20)   /* -s upper bound */

/* Filler byte i of every payload (i >= LG_PFX). */
static inline uint8_t lg_filler(size_t i) { return (uint8_t)('a' + i % 26); }
/* LG_MAX_PAYLOAD bytes with byte i = lg_filler(i): a static table, built on
 * the first call (call it once before the loop runs; not thread-safe). */
const uint8_t *lg_filler_table(void);
/* Write seq and t_ns as 32 hex digits into p. */
void lg_payload_stamp(uint8_t *p, uint64_t seq, uint64_t t_ns);
/* Parse the first 32 bytes; returns 0 or CH_EPROTO. */
int lg_payload_parse(const uint8_t *p, uint64_t *seq, uint64_t *t_ns);

/* ---- connections ------------------------------------------------------------------------- */

typedef enum {
  LG_C_NEW = 0,   /* initialised, not started */
  LG_C_WAIT,      /* on the pacer's wait list */
  LG_C_CONNECT,   /* TCP connect in progress */
  LG_C_HANDSHAKE, /* request sent, reading the response */
  LG_C_OPEN,      /* WebSocket open */
  LG_C_CLOSING,   /* close frame sent or received; waiting for EOF */
  LG_C_DONE,      /* closed after being open (handle closed or closing) */
  LG_C_FAILED     /* gave up connecting, or failed while open */
} lg_state_t;

typedef struct lg_conn_s lg_conn_t;
typedef struct lg_engine_s lg_engine_t;

typedef struct lg_ops_s {
  /* The handshake succeeded. May send. */
  void (*on_open)(lg_conn_t *c);
  /* A complete data message. pfx holds its first min(len, LG_PFX) bytes;
   * tail_ok is 1 when every byte after the prefix matched lg_filler() (and
   * the message is at most LG_MAX_PAYLOAD bytes).
   * now is the time of the read that completed it (uv_hrtime, ns). */
  void (*on_message)(lg_conn_t *c, int opcode, const uint8_t *pfx, uint64_t len, int tail_ok,
                     uint64_t now);
  /* A pong arrived (idle mode counts them). May be NULL. */
  void (*on_pong)(lg_conn_t *c);
  /* The connection failed for good (after retries, or while open: error, or an
   * unexpected close from the server). Not called for closes we asked for.
   * The conn must not be used for sending afterwards. */
  void (*on_fail)(lg_conn_t *c, const char *why);
  /* Optional. When set, every complete data message is handed over whole
   * here instead of through on_message (and without the filler check):
   * data/len is the message, borrowed until return. It points into the
   * shared read buffer when the message arrived unfragmented in one read,
   * else into c->msg, where the fragments were gathered (a buffer that
   * reaches its steady size and is then reused: no allocation per message). */
  void (*on_text)(lg_conn_t *c, int opcode, const uint8_t *data, size_t len, uint64_t now);
} lg_ops_t;

struct lg_conn_s {
  uv_tcp_t tcp;           /* the socket; tcp.data = this */
  uv_connect_t creq;      /* the connect in progress */
  uv_write_t wreq;        /* the one write in flight */
  lg_engine_t *eng;       /* not owned */
  const lg_url_t *url;    /* not owned; outlives the conn */
  const lg_ops_t *ops;    /* static vtable */
  void *ud;               /* the mode's per-connection state; not owned */
  ch_list_t node;         /* on eng->wait or eng->connecting */
  ch_list_t pnode;        /* on eng->pending while out has bytes */
  lg_state_t state;
  uint8_t handle_live;    /* tcp initialised and not yet closed */
  uint8_t writing;        /* wreq in flight (wbuf owned by libuv until write_cb) */
  uint8_t close_sent;     /* our close frame is queued */
  uint8_t want_fail_cb;   /* a failure to report from the close callback */
  uint8_t want_retry;     /* the close callback schedules another attempt */
  const char *fail_why;   /* static text of the failure to report */
  int attempts;           /* connect attempts made */
  uint64_t t_attempt;     /* ns, start of the current attempt */
  uint64_t not_before;    /* ns, earliest start of the next attempt */
  char key[32];           /* Sec-WebSocket-Key, base64 of 16 random bytes */
  char accept[32];        /* expected Sec-WebSocket-Accept */
  ch_buf_t hs;            /* handshake response bytes; freed once open */
  /* frame parser (resumable across reads) */
  uint8_t rstate;         /* 0: header, 1: payload */
  uint8_t hdr[14];        /* header bytes gathered so far */
  uint8_t hdr_len;        /* bytes in hdr */
  uint8_t fr_opcode;      /* opcode of the current frame */
  uint8_t fr_fin;         /* FIN of the current frame */
  uint8_t msg_opcode;     /* opcode of the data message in progress; 0: none */
  uint8_t tail_ok;        /* message bytes past the prefix matched so far */
  uint8_t ctrl_len;       /* control payload bytes gathered */
  uint64_t fr_left;       /* payload bytes left in the current frame */
  uint64_t msg_len;       /* data message bytes so far */
  uint8_t pfx[LG_PFX];    /* first bytes of the data message */
  uint8_t ctrl[125];      /* control frame payload */
  ch_buf_t msg;           /* ops->on_text: a message gathered across reads; owned, reused */
  /* output */
  ch_buf_t out;           /* frames waiting to be written; owned */
  ch_buf_t wbuf;          /* bytes handed to uv_write; owned, untouched while writing */
  size_t fr_payload_off;  /* lg_conn_frame_begin: offset of the payload in out */
  size_t fr_payload_len;
  uint8_t fr_mask[4];
  /* free for the modes */
  uint64_t u_next_send;   /* echo: next seq to send */
  uint64_t u_next_recv;   /* echo/fanout: next seq expected */
  uint32_t u_flag;        /* fanout: 0 new, 1 participant, 2 dropped; idle: ponged */
  uint8_t u_resolved;     /* counted once in the connect phase (opened or failed) */
  uint8_t u_opened;       /* the handshake completed once */
  uint32_t u_index;       /* position in the mode's array */
};

typedef struct lg_engine_stats_s {
  uint64_t opened;        /* handshakes completed */
  uint64_t failed;        /* connections given up */
  uint64_t retries;       /* connect attempts beyond the first */
  uint64_t closed_by_peer;/* open connections the server closed or reset */
} lg_engine_stats_t;

struct lg_engine_s {
  uv_loop_t *loop;        /* not owned */
  uv_timer_t pacer;       /* starts waiting connects, times out handshakes */
  uv_prepare_t prep;      /* flushes pending output before the loop sleeps */
  uv_check_t check;       /* flushes output queued by I/O callbacks */
  ch_list_t wait;         /* conns waiting to connect (FIFO) */
  ch_list_t connecting;   /* conns in CONNECT or HANDSHAKE */
  ch_list_t pending;      /* conns with output */
  unsigned inflight;      /* conns in connecting */
  unsigned batch;         /* max inflight */
  int max_attempts;       /* connect attempts per conn */
  uint64_t hs_timeout;    /* ns for connect + handshake */
  uint64_t connect_deadline; /* ns; conns still waiting after it fail (0: none) */
  unsigned live_handles;  /* conn handles not yet closed */
  uint64_t rng;           /* xorshift64* state for masks */
  const uint8_t *filler;  /* lg_filler_table(); static, not owned */
  lg_engine_stats_t st;
  int stopping;           /* no new connects */
};

/* Initialise eng on loop. batch = concurrent connects, attempts = tries per conn,
 * hs_timeout_ms = budget for TCP connect + handshake of one attempt. */
int lg_engine_init(lg_engine_t *eng, uv_loop_t *loop, unsigned batch, int attempts,
                   unsigned hs_timeout_ms);
/* Close the engine's own handles (conns must be closed first). */
void lg_engine_dispose(lg_engine_t *eng);

void lg_conn_init(lg_conn_t *c, lg_engine_t *eng, const lg_url_t *url, const lg_ops_t *ops,
                  void *ud);
/* Queue c for connecting (paced by eng->batch). */
void lg_conn_start(lg_conn_t *c);
/* Reserve a masked frame of len payload bytes in c's output and return where
 * the (clear) payload goes; the caller writes exactly len bytes, then calls
 * lg_conn_frame_end, which masks them. NULL when c is not open. */
uint8_t *lg_conn_frame_begin(lg_conn_t *c, int opcode, size_t len);
void lg_conn_frame_end(lg_conn_t *c);
/* Send a whole frame (copies payload). Returns 0 or CH_ECLOSED. */
int lg_conn_send(lg_conn_t *c, int opcode, const void *payload, size_t len);
/* Start the closing handshake (close 1000); the socket closes on the server's
 * EOF or when lg_conn_abort is called. No callbacks follow. */
void lg_conn_close(lg_conn_t *c);
/* Close the socket now, whatever the state. No callbacks follow. */
void lg_conn_abort(lg_conn_t *c);
/* Free the buffers of a connection whose handle is closed (state NEW, FAILED
 * or DONE with no live handle). */
void lg_conn_dispose(lg_conn_t *c);
/* Write out every pending output buffer now (also done once per loop turn). */
void lg_engine_flush(lg_engine_t *eng);

/* ---- process readings and option helpers (lg_util.c) ------------------------------------ */

/* VmRSS of pid in KiB, or -1. */
long lg_proc_rss_kb(long pid);
/* utime + stime of pid (all threads), in clock ticks; 0 when unreadable. */
uint64_t lg_proc_cpu_ticks(long pid);
/* A run's error bookkeeping, shared by every mode: keep the first error's
 * text in first (n bytes) while it is empty; and, when the run fails, keep
 * the first reason in fatal (n bytes), with the first error if there was one. */
void lg_keep_first_error(char *first, size_t n, const char *why);
void lg_keep_fatal(char *fatal, size_t n, const char *why, const char *first_error);
/* Decimal unsigned in [lo, hi]; 0 or CH_EINVAL. */
int lg_parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out);
/* Decimal seconds in [lo, hi]; 0 or CH_EINVAL. */
int lg_parse_sec(const char *s, double lo, double hi, double *out);
/* Raise RLIMIT_NOFILE to the hard limit; warn on stderr when need connections cannot fit. */
void lg_raise_nofile(unsigned need);
/* Lowercase hex digits of v, exactly 16, into p. */
void lg_hex16(uint8_t *p, uint64_t v);
/* Parse exactly 16 lowercase hex digits; 0 or CH_EPROTO. */
int lg_unhex16(const uint8_t *p, uint64_t *out);

/* ---- JSON scanning (lg_json.c) ----------------------------------------------------------- */

/* A value found in a JSON text: spans point into the caller's buffer. */
typedef struct lg_jv_s {
  const char *p; /* string: the bytes between the quotes (escapes left as they are);
                  * other kinds: the whole token, brackets included */
  size_t n;
  char kind;     /* 's' string, 'o' object, 'a' array, 'n' number, 'l' true/false/null, 0 absent */
} lg_jv_t;

#define LG_JSON_MAX_KEYS 32

/* Walk the members of the object in p[0..n) (leading blanks allowed) once; for
 * each member whose key equals keys[i] (compared raw), out[i] gets its value
 * (first occurrence wins); keys not present keep kind 0. Nested values are
 * skipped by bracket matching, aware of strings and escapes. Never allocates.
 * The walk stops as soon as every key was found (what follows is not looked
 * at), and when the last key found has an object value, that value is not
 * skipped either: its span then runs from its '{' to the end of the text
 * (still kind 'o'; lg_json_object on it stops at its own closing brace).
 * Returns 0, CH_EPROTO when the text is not an object or is cut short before
 * every key was found, CH_EINVAL for more than LG_JSON_MAX_KEYS keys. */
int lg_json_object(const char *p, size_t n, const char *const *keys, size_t nkeys, lg_jv_t *out);
/* Iterate the elements of an array value (kind 'a'): start with *cur = NULL;
 * returns 1 with *v set, 0 after the last element, CH_EPROTO on malformed text. */
int lg_json_array_next(const lg_jv_t *arr, const char **cur, lg_jv_t *v);
/* A number value that is a plain unsigned integer (no sign, fraction or exponent);
 * 0 or CH_EPROTO. */
int lg_json_u64(const lg_jv_t *v, uint64_t *out);
/* 1 when v is the string s (compared raw). */
int lg_json_is(const lg_jv_t *v, const char *s);

/* ---- the conversation modes (lg_conv.c) -------------------------------------------------- */

/* 1 when argv[1] names a conversation mode (send, convfan, resume). */
int lg_conv_is_mode(const char *mode);
/* Run a conversation mode; argv[1] is the mode. Returns the exit status
 * (0 clean, 1 failed or errors/losses, 2 usage error). */
int lg_conv_main(int argc, char **argv);
/* The usage lines of the conversation modes and their options (for --help). */
void lg_conv_usage(FILE *f);

/* ---- the agent modes (lg_agent.c) -------------------------------------------------------- */

/* 1 when argv[1] names an agent mode (agent-ttfc, agent-fan). */
int lg_agent_is_mode(const char *mode);
/* Run an agent mode (a fake OpenAI-compatible upstream in this process, chorus's
 * /ws clients against it); argv[1] is the mode. Returns the exit status (0 clean,
 * 1 failed or errors/losses, 2 usage error). */
int lg_agent_main(int argc, char **argv);
/* The usage lines of the agent modes and their options (for --help). */
void lg_agent_usage(FILE *f);

/* Random bytes from getrandom(2); 0 or CH_EIO. */
int lg_random(void *p, size_t n);
/* Compute the Sec-WebSocket-Accept value for key into out (>= 29 bytes). */
int lg_ws_accept(const char *key, char *out, size_t outlen);

#endif
