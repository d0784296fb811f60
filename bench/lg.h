/*
 * lg.h — internals shared by the source files of chorus-loadgen (everything in bench/).
 *
 * chorus-loadgen is a single-threaded libuv program: one loop, many client
 * WebSocket connections, one mode driving them (echo, fanout, idle; see
 * loadgen.c). The pieces:
 *
 *   lg_hist.c  log-linear latency histogram, fixed size, no allocation
 *   lg_url.c   ws:// URL parsing, loopback-only
 *   lg_conn.c  the client connection: paced connect with retries, the HTTP
 *              Upgrade handshake (checks 101 + Sec-WebSocket-Accept), a
 *              resumable frame parser for server frames, masked frame
 *              building into a per-connection output buffer that one
 *              uv_prepare/uv_check pair flushes per loop turn
 *   loadgen.c  command line, the three modes, JSON report
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
  char path[1024];         /* path + query, starts with '/' */
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

/* Random bytes from getrandom(2); 0 or CH_EIO. */
int lg_random(void *p, size_t n);
/* Compute the Sec-WebSocket-Accept value for key into out (>= 29 bytes). */
int lg_ws_accept(const char *key, char *out, size_t outlen);

#endif
