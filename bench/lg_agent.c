/*
 * lg_agent.c — chorus-loadgen's agent modes: what chorus adds to an AI agent's
 * streamed reply (issue 4's targets T1 and T2), measured against a fake
 * OpenAI-compatible upstream that runs inside this process.
 *
 *   agent-ttfc --url 'ws://H:P/ws?token=T' --upstream 127.0.0.1:U --agent NAME -n SAMPLES
 *   agent-fan  --url 'ws://H:P/ws?token=T' --upstream 127.0.0.1:U --agent NAME -c SUBS
 *
 * chorus runs with an `openai` agent whose base URL is the fake upstream:
 *
 *   chorus serve --insecure-dev \
 *     --agent 'bench=openai:bench-model;base-url=http://127.0.0.1:U/v1;key-env=CHORUS_BENCH_NO_KEY'
 *
 * The fake upstream (one loopback listener on this loop) answers
 * POST /v1/chat/completions with `200 text/event-stream` (chunked, keep-alive):
 * after --ttfc ms the first chunk, then one every --interval ms, --chunks in
 * all, in OpenAI's shape
 *
 *   data: {"id":"chatcmpl-bench","object":"chat.completion.chunk",...,
 *          "choices":[{"index":0,"delta":{"content":"<C>"},"finish_reason":null}]}
 *   ... data: {... "finish_reason":"stop"}  [data: {"choices":[],"usage":{...}}]  data: [DONE]
 *
 *   C (-s bytes) = chunk index from 1 (16 hex) | its write time, ns (16 hex) | filler (lg.h)
 *
 * so every chunk that comes back through chorus is checked byte for byte and
 * carries the time it left the upstream. Upstream and clients share one
 * process and CLOCK_MONOTONIC (uv_hrtime), so one clock times both ends.
 *
 * agent-ttfc (T1): one client joined to a conversation sends a prompt naming
 * the agent and waits for the whole reply; then the same request (the bytes
 * chorus sent upstream, replayed) goes DIRECT from this process's own HTTP
 * client to the upstream, on a fresh connection as chorus's is (chorus's
 * libcurl closes idle connections). The two alternate, one sample each, N times
 * (after --warmup-samples unrecorded):
 *
 *   client (/ws)                 chorus                              fake upstream
 *   t0  message + agent ───────> parse, append, COMMIT (fsync)
 *   t_ack <──────── ack ──────── (after the commit)
 *                                trigger: request built, curl ─────> t_acc  connection accepted
 *                                POST /v1/chat/completions ────────> t1     request complete
 *                                                                           (--ttfc)
 *                                <──────────────── SSE chunk 1 ─────  t2     chunk 1 written
 *   t3 <── stream chunk 1 ────── publish to c:<conv>
 *        ... every chunk, the stored reply (message), stream end: all checked
 *
 *   direct: d0 connect ──> d_acc ──> d1 request complete ... d2 chunk 1 written ──> d3 parsed
 *
 *   added by chorus = (t1 - t0) + (t3 - t2) = the client's time to first chunk
 *                     minus the upstream's own; direct = (d1 - d0) + (d3 - d2)
 *
 * Reported, exact quantiles over the samples: added, its request leg (t1-t0)
 * and chunk leg (t3-t2), the request leg's part before the upstream
 * connection (t_acc-t0: frame parse, durable append + fsync, request build,
 * curl start, TCP connect) and the client's ack (t_ack-t0: the commit as the
 * client sees it), the direct figures, and added minus direct per sample pair.
 *
 * agent-fan (T2): SUBS clients join one conversation (N joins into one room
 * cost ~N^2 presence frames: the run waits until they stop for --settle s);
 * then a publisher (not a member) sends one prompt; the upstream streams
 * --chunks chunks every --interval ms (100/s by default). Each subscriber
 * checks stream start, every chunk (index exactly one more than the last: a
 * jump counts `lost`, a repeat `out_of_order`; content = what the upstream
 * wrote under that index: else `corrupt`), the stored reply (= the whole text,
 * byte for byte, its inReplyTo the prompt's seq) and the end (its seq the
 * reply's). Reported: chunks/s written and received (slowest subscriber),
 * delivery latency from the upstream's write (every delivery a sample), the
 * time until a chunk had reached every subscriber, and every loss.
 *
 * Phases (a 5 ms tick moves between them; callbacks do the work):
 *
 *   CONNECT+JOIN ─joined (fan: settled, publisher open)─> RUN ─done─> TEARDOWN ─> CLOSED
 *
 * Bounded: connects (--connect-timeout), joins (--join-timeout), each T1 sample
 * (10 s + the reply's own length), the T2 stream (its length + 30 s; 10 s
 * without a delivery is a stall), closing handshakes (3 s) and a hard
 * deadline that prints the report and exits 1. The upstream listens on a
 * loopback address only (127.0.0.0/8); the WebSocket URL must be loopback too.
 * Everything runs on the one loop thread.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/err.h"
#include "lg.h"

#define NS_PER_S 1000000000ull
#define NS_PER_MS 1000000ull
#define AG_MAX_UP 64                 /* upstream connections at once */
#define AG_REQ_MAX (16u << 20)       /* request bytes the upstream accepts */
#define AG_RBUF 65536                /* read buffer of the upstream and the direct client */
#define AG_MAX_CHUNKS 1000000u
#define AG_STREAM_ID_MAX 64

typedef enum { AG_TTFC, AG_FAN } ag_mode_t;
typedef enum { AG_P_CONNECT, AG_P_RUN, AG_P_TEARDOWN, AG_P_CLOSED } ag_phase_t;
typedef enum { AG_R_PROMPTER, AG_R_SUB, AG_R_PUB } ag_role_t;
typedef enum { ST_IDLE, ST_CHORUS, ST_DIRECT } ag_step_t;

typedef struct ag_opts_s {
  ag_mode_t mode;
  const char *label, *url_s, *up_s, *agent;
  lg_url_t url;
  struct sockaddr_in up_addr;
  char up_host[64];            /* "127.0.0.1:U" for the direct client's Host header */
  unsigned conns, n, warm, chunks, size, batch, drop_chunk;
  int retries;
  double ttfc_ms, interval_ms, connect_timeout, join_timeout, settle;
  long server_pid;
} ag_opts_t;

/* One connection of the fake upstream (a slot of A.ups). */
typedef struct ag_up_s {
  uv_tcp_t tcp;            /* tcp.data = this */
  uv_write_t wreq;
  ch_buf_t in;             /* request bytes not yet handled; owned */
  ch_buf_t out;            /* response bytes waiting for the write in flight; owned */
  ch_buf_t wbuf;           /* bytes handed to uv_write; owned, untouched while writing */
  uint8_t used;            /* slot taken (handle live or closing) */
  uint8_t writing;
  uint8_t closing;
  uint8_t replying;        /* A.rec is this connection's reply */
  uint8_t close_after;     /* the request said Connection: close */
  uint8_t continued;       /* 100 Continue sent for the request in progress */
  uint8_t parsing;         /* inside ag_up_parse (a reply written at once must not re-enter it) */
  uint64_t t_accept;       /* ns */
  unsigned requests;       /* served on this connection */
} ag_up_t;

/* The reply being written (one at a time: T1 is sequential, T2 has one prompt). */
typedef struct ag_rec_s {
  int active;              /* chunks still to write */
  int done;                /* [DONE] written */
  int direct;              /* asked by our own direct client */
  int usage;               /* the request asked for usage */
  ag_up_t *up;             /* the connection it goes out on; not owned */
  uint64_t t_acc, t1;      /* accept (0: a reused connection), request complete; ns */
  uint64_t t_first_due;    /* ns */
  uint32_t next;           /* next chunk to write, from 1 */
  uint64_t *emit_t;        /* owned, chunks + 1: write time of chunk k (0: not yet) */
  ch_buf_t text;           /* every chunk's content, in order (the reply chorus must store); owned */
} ag_rec_t;

/* Per WebSocket connection. */
typedef struct ag_peer_s {
  uint8_t role;            /* ag_role_t */
  uint8_t joined, resolved, dead;
  uint8_t got_start, got_reply, got_end;
  uint64_t last_seq;       /* newest conversation seq seen (message broadcasts) */
  uint32_t last_index;     /* newest chunk index of the stream */
  uint64_t reply_seq;      /* seq of the stored reply */
  uint64_t t_first, t_last; /* first and last chunk received, ns */
} ag_peer_t;

/* The direct HTTP client (T1). */
typedef struct ag_direct_s {
  uv_tcp_t tcp;
  uv_connect_t creq;
  uv_write_t wreq;
  ch_buf_t req;            /* the request; owned, untouched while writing */
  ch_buf_t raw;            /* response bytes; owned */
  ch_buf_t body;           /* de-chunked body; owned */
  size_t rpos, bpos;       /* parsed up to, in raw and body */
  int live, hdr_done, chunked, body_end, done;
  uint64_t clen_left;      /* bytes left in the current HTTP chunk (+2 for its CRLF) */
  int in_chunk;
  uint32_t got;            /* content chunks parsed */
} ag_direct_t;

/* One T1 sample's times (ns). */
typedef struct ag_sample_s {
  uint64_t t0, t_ack, t_acc, t1, t2, t3;
  uint64_t d0, d_acc, d1, d2, d3;
} ag_sample_t;

typedef struct ag_run_s {
  ag_opts_t o;
  uv_loop_t *loop;
  lg_engine_t eng;
  uv_timer_t tick, up_timer;
  uv_signal_t sigint, sigterm;
  uv_tcp_t listener;
  int listening;
  ag_up_t ups[AG_MAX_UP];
  unsigned live;           /* our handles not yet closed (listener, upstream and direct sockets) */
  ag_rec_t rec;
  ch_buf_t last_body;      /* the last request body chorus sent (T1: replayed direct); owned */
  ch_buf_t ev, hc;         /* the upstream's event and HTTP chunk being built; owned, reused */
  ag_direct_t dc;
  lg_conn_t *conns;        /* owned, nconns */
  ag_peer_t *peers;        /* owned, parallel to conns */
  unsigned nconns, members;
  lg_conn_t *pub;          /* T1: the prompter; T2: the publisher */
  char nonce[9], conv[64], prompt_pfx[64], stream_id[AG_STREAM_ID_MAX];
  size_t conv_len, stream_id_len;
  const uint8_t *filler;
  ag_phase_t phase;
  unsigned resolved, joined, dead;
  int pub_started, pub_open;
  uint64_t t0, t_hard, t_joined, t_last_presence, t_phase_end, t_last_progress;
  double join_s, settle_s;
  int measuring_started, measuring_done;
  struct rusage ru0, ru1;
  uint64_t srv0, srv1, t_cpu0, t_cpu1;
  uint64_t presence, other, errors, corrupt, lost, out_of_order, undelivered, timeouts;
  uint64_t up_conns, up_requests, up_reused, up_rejected;
  char first_error[256];
  char fatal[400];
  /* T1 */
  ag_step_t step;
  uint64_t k;              /* current sample (warm-up ones included) */
  uint64_t t_step;
  uint64_t prompt_seq;     /* from the ack */
  uint64_t start_reply_to; /* inReplyTo of stream start */
  uint32_t nchunks;        /* chunks the prompter got in this sample */
  int got_ack, got_start, got_reply, got_end;
  ag_sample_t cur;
  ag_sample_t *samples;    /* owned, o.n */
  uint64_t nsamples;
  /* T2 */
  unsigned participants;
  uint64_t t_prompt, t_ack_pub, fan_prompt_seq, deliveries, ends, replies;
  uint32_t *chunk_count;   /* owned, chunks + 1: subscribers that got chunk k */
  uint64_t *chunk_all_t;   /* owned, chunks + 1: when the last of them got it */
  lg_hist_t hist;          /* T2: delivery latency */
  lg_hist_t hist_all;      /* T2: until every subscriber had the chunk */
  int stalled;
} ag_run_t;

static ag_run_t A;

/* ---- helpers ---------------------------------------------------------------------------------- */

static void ag_note_error(const char *why) {
  A.errors++;
  lg_keep_first_error(A.first_error, sizeof(A.first_error), why);
}

static void ag_corrupt(const char *why) {
  A.corrupt++;
  ag_note_error(why);
}

static void ag_set_fatal(const char *why) { lg_keep_fatal(A.fatal, sizeof(A.fatal), why, A.first_error); }

static double ag_tv(const struct timeval *tv) { return (double)tv->tv_sec + tv->tv_usec / 1e6; }

static void ag_cpu_snapshot(int end) {
  getrusage(RUSAGE_SELF, end ? &A.ru1 : &A.ru0);
  uint64_t now = uv_hrtime();
  uint64_t srv = A.o.server_pid ? lg_proc_cpu_ticks(A.o.server_pid) : 0;
  if (end) A.t_cpu1 = now, A.srv1 = srv;
  else A.t_cpu0 = now, A.srv0 = srv;
}

static void ag_measure_start(void) {
  if (A.measuring_started) return;
  A.measuring_started = 1;
  ag_cpu_snapshot(0);
}

static void ag_measure_end(void) {
  if (!A.measuring_started || A.measuring_done) return;
  A.measuring_done = 1;
  ag_cpu_snapshot(1);
}

static uint64_t ag_interval_ns(void) { return (uint64_t)(A.o.interval_ms * 1e6); }
static uint64_t ag_ttfc_ns(void) { return (uint64_t)(A.o.ttfc_ms * 1e6); }

static int ag_jv_eq(const lg_jv_t *v, const char *p, size_t n) {
  return v->kind == 's' && v->n == n && memcmp(v->p, p, n) == 0;
}

/* Content of chunk idx written at t (o.size bytes) into p. */
static void ag_chunk_content(uint8_t *p, uint32_t idx, uint64_t t) {
  lg_payload_stamp(p, idx, t);
  memcpy(p + LG_PFX, A.filler + LG_PFX, A.o.size - LG_PFX);
}

/* A chunk's content as it came back: it must be what the upstream wrote as chunk idx.
 * Returns 0 or CH_EPROTO. */
static int ag_check_chunk(const char *p, size_t n, uint32_t idx) {
  uint64_t i = 0, t = 0;
  if (n != A.o.size || idx == 0 || idx > A.o.chunks) return CH_EPROTO;
  if (lg_payload_parse((const uint8_t *)p, &i, &t) < 0 || i != idx) return CH_EPROTO;
  if (A.rec.emit_t == NULL || A.rec.emit_t[idx] == 0 || t != A.rec.emit_t[idx]) return CH_EPROTO;
  if (memcmp(p + LG_PFX, A.filler + LG_PFX, A.o.size - LG_PFX) != 0) return CH_EPROTO;
  return 0;
}

static void ag_teardown(void);

static void ag_fail_run(const char *why) {
  ag_set_fatal(why);
  ag_measure_end();
  ag_teardown();
}

/* ---- the fake upstream ------------------------------------------------------------------------ */

static uint8_t ag_rbuf[AG_RBUF];

static void ag_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)h, (void)hint;
  *b = uv_buf_init((char *)ag_rbuf, sizeof(ag_rbuf));
}

static void ag_on_handle_closed(uv_handle_t *h) {
  (void)h;
  A.live--;
}

static void ag_on_extra_closed(uv_handle_t *h) {
  free(h);
  A.live--;
}

static void ag_up_on_closed(uv_handle_t *h) {
  ag_up_t *u = h->data;
  ch_buf_dispose(&u->in);
  ch_buf_dispose(&u->out);
  ch_buf_dispose(&u->wbuf);
  u->used = 0;
  A.live--;
}

static void ag_up_close(ag_up_t *u) {
  if (u->closing) return;
  u->closing = 1;
  if (u->replying) {
    u->replying = 0;
    if (A.rec.active) {
      A.rec.active = 0;
      if (A.phase < AG_P_TEARDOWN) ag_note_error("upstream: the connection closed before the reply was written");
    }
    A.rec.up = NULL;
  }
  uv_close((uv_handle_t *)&u->tcp, ag_up_on_closed);
}

static void ag_up_flush(ag_up_t *u);

static void ag_up_on_write(uv_write_t *req, int status) {
  ag_up_t *u = req->data;
  u->writing = 0;
  u->wbuf.len = 0;
  if (status < 0) {
    if (!u->closing) ag_up_close(u);
    return;
  }
  ag_up_flush(u);
}

static void ag_up_flush(ag_up_t *u) {
  if (u->writing || u->closing || u->out.len == 0) return;
  ch_buf_t t = u->wbuf; /* empty: no write in flight */
  u->wbuf = u->out;
  u->out = t;
  uv_buf_t b = uv_buf_init(u->wbuf.base, (unsigned)u->wbuf.len);
  u->wreq.data = u;
  if (uv_write(&u->wreq, (uv_stream_t *)&u->tcp, &b, 1, ag_up_on_write) < 0) {
    u->wbuf.len = 0;
    ag_up_close(u);
    return;
  }
  u->writing = 1;
}

/* Write now when nothing is queued (the time taken before the call is when the bytes
 * reach the kernel), else queue behind what is. */
static void ag_up_write(ag_up_t *u, const void *p, size_t n) {
  if (u->closing || n == 0) return;
  if (!u->writing && u->out.len == 0) {
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int r = uv_try_write((uv_stream_t *)&u->tcp, &b, 1);
    if (r == (int)n) return;
    if (r < 0 && r != UV_EAGAIN) {
      ag_up_close(u);
      return;
    }
    if (r > 0) p = (const char *)p + r, n -= (size_t)r;
  }
  ch_buf_append(&u->out, p, n);
  ag_up_flush(u);
}

/* One HTTP chunk holding ev[0..n). */
static void ag_up_write_chunk(ag_up_t *u, const char *ev, size_t n) {
  ch_buf_t *b = &A.hc;
  b->len = 0;
  ch_buf_printf(b, "%zx\r\n", n);
  ch_buf_append(b, ev, n);
  ch_buf_append(b, "\r\n", 2);
  ag_up_write(u, b->base, b->len);
}

static void ag_up_error_reply(ag_up_t *u, int status, const char *why) {
  char b[512];
  char body[300];
  int bn = snprintf(body, sizeof(body), "{\"error\":{\"message\":\"%s\",\"type\":\"invalid_request_error\"}}", why);
  int n = snprintf(b, sizeof(b),
                   "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
                   status, status == 404 ? "Not Found" : status == 503 ? "Service Unavailable" : "Bad Request", bn, body);
  ag_up_write(u, b, (size_t)n);
  u->close_after = 1;
  char m[200];
  snprintf(m, sizeof(m), "upstream: refused a request (%d): %s", status, why);
  ag_note_error(m);
}

static void ag_up_arm(void);
static void ag_up_parse(ag_up_t *u, uint64_t now);
static void ag_up_parse_some(ag_up_t *u, uint64_t now);

/* Write what is due of the reply. */
static void ag_up_emit(void) {
  ag_rec_t *r = &A.rec;
  ch_buf_t *ev = &A.ev;
  static uint8_t content[65536]; /* -s is at most 65536 */
  if (!r->active || r->up == NULL) return;
  ag_up_t *u = r->up;
  uint64_t now = uv_hrtime(), iv = ag_interval_ns();
  while (r->next <= A.o.chunks) {
    uint64_t due = r->t_first_due + (uint64_t)(r->next - 1) * iv;
    if (due > now + 50000) break; /* libuv timers are 1 ms coarse: 50 us early is on time */
    ev->len = 0;
    ch_buf_append_str(ev, "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
                           "\"model\":\"bench-model\",\"choices\":[{\"index\":0,\"delta\":{");
    if (r->next == 1) ch_buf_append_str(ev, "\"role\":\"assistant\",");
    ch_buf_append_str(ev, "\"content\":\"");
    size_t at = ev->len;
    ch_buf_reserve(ev, A.o.size);
    ev->len += A.o.size;
    ch_buf_append_str(ev, "\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    uint64_t t = uv_hrtime();
    ag_chunk_content(content, r->next, t);
    memcpy(ev->base + at, content, A.o.size);
    r->emit_t[r->next] = t;
    ch_buf_append(&r->text, content, A.o.size);
    if (r->next != A.o.drop_chunk) ag_up_write_chunk(u, ev->base, ev->len); /* --drop-chunk: a self-test */
    r->next++;
    if (u->closing) return;
    now = t;
  }
  if (r->next <= A.o.chunks) {
    ag_up_arm();
    return;
  }
  /* The end: finish_reason, usage when asked, [DONE], the last HTTP chunk. */
  ev->len = 0;
  ch_buf_append_str(ev, "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
                         "\"model\":\"bench-model\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
                         "\"finish_reason\":\"stop\"}]}\n\n");
  if (r->usage)
    ch_buf_printf(ev,
                  "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
                  "\"model\":\"bench-model\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":%u,"
                  "\"total_tokens\":%u}}\n\n",
                  A.o.chunks, A.o.chunks + 10);
  ch_buf_append_str(ev, "data: [DONE]\n\n");
  ag_up_write_chunk(u, ev->base, ev->len);
  ag_up_write(u, "0\r\n\r\n", 5);
  r->active = 0;
  r->done = 1;
  r->up = NULL;
  u->replying = 0;
  if (u->close_after) {
    ag_up_close(u);
    return;
  }
  if (u->in.len && !u->parsing) ag_up_parse(u, uv_hrtime()); /* a request that came meanwhile (keep-alive) */
}

static void ag_on_up_timer(uv_timer_t *t) {
  (void)t;
  ag_up_emit();
}

static void ag_up_arm(void) {
  ag_rec_t *r = &A.rec;
  if (!r->active) return;
  uint64_t due = r->t_first_due + (uint64_t)(r->next - 1) * ag_interval_ns(), now = uv_hrtime();
  uint64_t ms = due > now ? (due - now + NS_PER_MS - 1) / NS_PER_MS : 0;
  uv_timer_start(&A.up_timer, ag_on_up_timer, ms, 0);
}

/* Case-insensitive header lookup in the header block h[0..n) (after the request line). */
static int ag_header(const char *h, size_t n, const char *name, const char **v, size_t *vn) {
  size_t nl = strlen(name);
  const char *p = h, *end = h + n;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (eol == NULL) eol = end;
    if ((size_t)(eol - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
      const char *s = p + nl + 1, *e = eol;
      while (s < e && (*s == ' ' || *s == '\t')) s++;
      while (e > s && (e[-1] == '\r' || e[-1] == ' ')) e--;
      *v = s;
      *vn = (size_t)(e - s);
      return 1;
    }
    p = eol + 1;
  }
  return 0;
}

/* The request whose body is b[0..n): start its reply. */
static void ag_up_request(ag_up_t *u, const char *b, size_t n, int direct, uint64_t now) {
  ag_rec_t *r = &A.rec;
  A.up_requests++;
  if (u->requests > 0) A.up_reused++;
  u->requests++;
  if (r->active) {
    ag_up_error_reply(u, 503, "one reply at a time (a second request came while one was streaming)");
    return;
  }
  /* The prompt: the last occurrence of this run's prompt prefix, then the sample number. */
  size_t pl = strlen(A.prompt_pfx);
  const char *last = NULL, *p = b, *end = b + n;
  while (p < end && (p = memmem(p, (size_t)(end - p), A.prompt_pfx, pl)) != NULL) last = p++;
  uint64_t k = 0;
  if (last == NULL || (size_t)(end - last) < pl + 16 || lg_unhex16((const uint8_t *)last + pl, &k) < 0) {
    ag_up_error_reply(u, 400, "the request does not carry this run's prompt");
    return;
  }
  uint64_t want = A.o.mode == AG_TTFC ? A.k : 0;
  if (k != want) {
    ag_up_error_reply(u, 400, "the request's last prompt is not the one in flight");
    return;
  }
  if (memmem(b, n, "\"stream\":true", 13) == NULL || memmem(b, n, "\"model\":\"bench-model\"", 21) == NULL) {
    ag_up_error_reply(u, 400, "the request is not a streamed chat completion for bench-model");
    return;
  }
  if (!direct) {
    A.last_body.len = 0;
    ch_buf_append(&A.last_body, b, n);
  }
  memset(r->emit_t, 0, ((size_t)A.o.chunks + 1) * sizeof(uint64_t));
  r->text.len = 0;
  r->active = 1;
  r->done = 0;
  r->direct = direct;
  r->usage = memmem(b, n, "\"include_usage\":true", 20) != NULL;
  r->up = u;
  r->t_acc = u->requests == 1 ? u->t_accept : 0;
  r->t1 = now;
  r->t_first_due = now + ag_ttfc_ns();
  r->next = 1;
  u->replying = 1;
  static const char hdr[] =
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
      "Transfer-Encoding: chunked\r\n\r\n";
  ag_up_write(u, hdr, sizeof(hdr) - 1);
  if (A.o.ttfc_ms <= 0) ag_up_emit();
  else ag_up_arm();
}

/* Handle the complete requests in u->in. */
static void ag_up_parse(ag_up_t *u, uint64_t now) {
  u->parsing = 1;
  ag_up_parse_some(u, now);
  u->parsing = 0;
}

static void ag_up_parse_some(ag_up_t *u, uint64_t now) {
  while (!u->replying && !u->closing && u->in.len > 0) {
    const char *base = u->in.base;
    const char *he = memmem(base, u->in.len, "\r\n\r\n", 4);
    if (he == NULL) {
      if (u->in.len > 65536) ag_up_error_reply(u, 400, "request headers larger than 64 KiB");
      return;
    }
    size_t hlen = (size_t)(he - base) + 4;
    const char *eol = memchr(base, '\n', hlen);
    size_t rl = (size_t)(eol - base);
    const char *hdrs = eol + 1;
    size_t hn = hlen - 2 - (size_t)(hdrs - base);
    const char *v;
    size_t vn;
    uint64_t clen = 0;
    if (ag_header(hdrs, hn, "transfer-encoding", &v, &vn)) {
      ag_up_error_reply(u, 400, "chunked request bodies are not supported by this fake");
      return;
    }
    if (ag_header(hdrs, hn, "content-length", &v, &vn)) {
      char tmp[24];
      if (vn == 0 || vn >= sizeof(tmp)) {
        ag_up_error_reply(u, 400, "bad Content-Length");
        return;
      }
      memcpy(tmp, v, vn);
      tmp[vn] = '\0';
      char *e = NULL;
      clen = strtoull(tmp, &e, 10);
      if (*e != '\0' || clen > AG_REQ_MAX) {
        ag_up_error_reply(u, 400, "bad Content-Length");
        return;
      }
    }
    if (ag_header(hdrs, hn, "connection", &v, &vn) && vn == 5 && strncasecmp(v, "close", 5) == 0) u->close_after = 1;
    if (u->in.len < hlen + clen) {
      if (!u->continued && ag_header(hdrs, hn, "expect", &v, &vn) && vn == 12 && strncasecmp(v, "100-continue", 12) == 0) {
        u->continued = 1;
        ag_up_write(u, "HTTP/1.1 100 Continue\r\n\r\n", 25);
      }
      return;
    }
    u->continued = 0;
    int direct = ag_header(hdrs, hn, "x-chorus-bench", &v, &vn) && vn == 6 && memcmp(v, "direct", 6) == 0;
    static const char line[] = "POST /v1/chat/completions HTTP/1.1";
    if (rl < sizeof(line) - 1 || memcmp(base, line, sizeof(line) - 1) != 0) {
      ag_up_error_reply(u, 404, "only POST /v1/chat/completions HTTP/1.1 is served");
      return;
    }
    ag_up_request(u, base + hlen, (size_t)clen, direct, now);
    ch_buf_consume(&u->in, hlen + (size_t)clen);
  }
}

static void ag_up_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  ag_up_t *u = s->data;
  uint64_t now = uv_hrtime();
  if (nread < 0) {
    ag_up_close(u);
    return;
  }
  if (nread == 0 || u->closing) return;
  if (u->in.len + (size_t)nread > AG_REQ_MAX + 65536) {
    ag_up_error_reply(u, 400, "request too large");
    ag_up_close(u);
    return;
  }
  ch_buf_append(&u->in, buf->base, (size_t)nread);
  ag_up_parse(u, now);
}

static void ag_on_connection(uv_stream_t *server, int status) {
  uint64_t now = uv_hrtime();
  if (status < 0) {
    ag_note_error("upstream: accept failed");
    return;
  }
  ag_up_t *u = NULL;
  for (unsigned i = 0; i < AG_MAX_UP; i++) {
    if (!A.ups[i].used) {
      u = &A.ups[i];
      break;
    }
  }
  if (u == NULL || A.phase >= AG_P_TEARDOWN) {
    /* No slot (or closing down): take the connection and close it at once. */
    uv_tcp_t *x = ch_xmalloc(sizeof(*x));
    uv_tcp_init(A.loop, x);
    A.live++;
    uv_accept(server, (uv_stream_t *)x);
    uv_close((uv_handle_t *)x, ag_on_extra_closed);
    if (A.phase < AG_P_TEARDOWN) {
      A.up_rejected++;
      ag_note_error("upstream: more connections at once than it serves");
    }
    return;
  }
  memset(u, 0, sizeof(*u));
  u->used = 1;
  u->t_accept = now;
  uv_tcp_init(A.loop, &u->tcp);
  u->tcp.data = u;
  A.live++;
  if (uv_accept(server, (uv_stream_t *)&u->tcp) < 0) {
    u->closing = 1;
    uv_close((uv_handle_t *)&u->tcp, ag_up_on_closed);
    return;
  }
  uv_tcp_nodelay(&u->tcp, 1);
  A.up_conns++;
  uv_read_start((uv_stream_t *)&u->tcp, ag_alloc, ag_up_on_read);
}

static int ag_up_listen(void) {
  uv_tcp_init(A.loop, &A.listener);
  A.live++;
  A.listening = 1;
  int r = uv_tcp_bind(&A.listener, (const struct sockaddr *)&A.o.up_addr, 0);
  if (r == 0) r = uv_listen((uv_stream_t *)&A.listener, 128, ag_on_connection);
  if (r < 0) {
    fprintf(stderr, "chorus-loadgen: cannot listen on %s: %s\n", A.o.up_s, uv_strerror(r));
    return CH_EIO;
  }
  return 0;
}

/* ---- the direct client (T1) ------------------------------------------------------------------- */

static void ag_ttfc_next(uint64_t now);

static void ag_direct_on_closed(uv_handle_t *h) {
  (void)h;
  A.live--;
  A.dc.live = 0;
  if (A.phase != AG_P_RUN || A.step != ST_DIRECT) return;
  uint64_t now = uv_hrtime();
  if (!A.dc.done) {
    ag_fail_run("direct: the upstream's reply ended early");
    return;
  }
  if (!A.rec.done || !A.rec.direct) {
    ag_fail_run("direct: the upstream did not serve the direct request");
    return;
  }
  A.cur.d_acc = A.rec.t_acc;
  A.cur.d1 = A.rec.t1;
  A.cur.d2 = A.rec.emit_t[1];
  if (A.k >= A.o.warm && A.nsamples < A.o.n) A.samples[A.nsamples++] = A.cur;
  A.k++;
  ag_ttfc_next(now);
}

static void ag_direct_close(void) {
  if (A.dc.live && !uv_is_closing((uv_handle_t *)&A.dc.tcp)) uv_close((uv_handle_t *)&A.dc.tcp, ag_direct_on_closed);
}

/* One SSE event of the direct response (the text between blank lines). */
static void ag_direct_event(const char *p, size_t n, uint64_t now) {
  ag_direct_t *d = &A.dc;
  const char *end = p + n;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (eol == NULL) eol = end;
    if ((size_t)(eol - p) >= 6 && memcmp(p, "data: ", 6) == 0) {
      const char *data = p + 6;
      size_t dn = (size_t)(eol - data);
      if (dn == 6 && memcmp(data, "[DONE]", 6) == 0) {
        d->done = 1;
        if (d->got != A.o.chunks) ag_corrupt("direct: [DONE] before every chunk");
        return;
      }
      static const char *const k1[] = {"choices"};
      static const char *const k2[] = {"delta"};
      static const char *const k3[] = {"content"};
      lg_jv_t v1, v2, v3, el;
      const char *cur = NULL;
      if (lg_json_object(data, dn, k1, 1, &v1) < 0 || v1.kind != 'a') {
        ag_corrupt("direct: an event without choices");
      } else if (lg_json_array_next(&v1, &cur, &el) == 1) {
        if (el.kind == 'o' && lg_json_object(el.p, el.n, k2, 1, &v2) == 0 && v2.kind == 'o' &&
            lg_json_object(v2.p, v2.n, k3, 1, &v3) == 0 && v3.kind == 's') {
          d->got++;
          if (ag_check_chunk(v3.p, v3.n, d->got) < 0) ag_corrupt("direct: a chunk differs from the one written");
          if (d->got == 1) A.cur.d3 = now;
        }
      }
    }
    p = eol + 1;
  }
}

static void ag_direct_parse(uint64_t now) {
  ag_direct_t *d = &A.dc;
  if (!d->hdr_done) {
    const char *he = memmem(d->raw.base, d->raw.len, "\r\n\r\n", 4);
    if (he == NULL) return;
    size_t hlen = (size_t)(he - d->raw.base) + 4;
    if (d->raw.len < 12 || memcmp(d->raw.base, "HTTP/1.1 200", 12) != 0) {
      ag_fail_run("direct: the upstream did not answer 200");
      return;
    }
    const char *v;
    size_t vn;
    const char *hdrs = (const char *)memchr(d->raw.base, '\n', hlen) + 1;
    d->chunked = ag_header(hdrs, hlen - (size_t)(hdrs - d->raw.base), "transfer-encoding", &v, &vn) && vn == 7 &&
                 strncasecmp(v, "chunked", 7) == 0;
    d->hdr_done = 1;
    d->rpos = hlen;
  }
  /* De-chunk what has arrived. */
  while (d->rpos < d->raw.len && !d->body_end) {
    const char *p = d->raw.base + d->rpos;
    size_t left = d->raw.len - d->rpos;
    if (!d->chunked) {
      ch_buf_append(&d->body, p, left);
      d->rpos += left;
      break;
    }
    if (!d->in_chunk) {
      const char *eol = memmem(p, left, "\r\n", 2);
      if (eol == NULL) break;
      char *e = NULL;
      unsigned long long sz = strtoull(p, &e, 16);
      if (e == p) {
        ag_fail_run("direct: bad chunk size line");
        return;
      }
      d->rpos += (size_t)(eol - p) + 2;
      if (sz == 0) {
        d->body_end = 1;
        break;
      }
      d->in_chunk = 1;
      d->clen_left = sz + 2;
      continue;
    }
    size_t take = left < d->clen_left ? left : (size_t)d->clen_left;
    size_t data = d->clen_left > 2 ? (size_t)(d->clen_left - 2) : 0;
    ch_buf_append(&d->body, p, take < data ? take : data);
    d->clen_left -= take;
    d->rpos += take;
    if (d->clen_left == 0) d->in_chunk = 0;
  }
  /* Events. */
  for (;;) {
    const char *p = d->body.base + d->bpos;
    size_t left = d->body.len - d->bpos;
    const char *ee = left ? memmem(p, left, "\n\n", 2) : NULL;
    if (ee == NULL) break;
    ag_direct_event(p, (size_t)(ee - p), now);
    d->bpos += (size_t)(ee - p) + 2;
  }
  if (d->done) ag_direct_close();
}

static void ag_direct_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)s;
  uint64_t now = uv_hrtime();
  if (nread < 0) {
    ag_direct_close();
    return;
  }
  if (nread == 0) return;
  ch_buf_append(&A.dc.raw, buf->base, (size_t)nread);
  ag_direct_parse(now);
}

static void ag_direct_on_write(uv_write_t *w, int status) {
  (void)w;
  if (status < 0 && status != UV_ECANCELED && A.phase == AG_P_RUN) ag_fail_run("direct: the request could not be written");
}

static void ag_direct_on_connect(uv_connect_t *c, int status) {
  (void)c;
  if (status == UV_ECANCELED || A.phase != AG_P_RUN || uv_is_closing((uv_handle_t *)&A.dc.tcp)) return;
  if (status < 0) {
    ag_fail_run("direct: cannot connect to the upstream");
    return;
  }
  uv_tcp_nodelay(&A.dc.tcp, 1);
  uv_read_start((uv_stream_t *)&A.dc.tcp, ag_alloc, ag_direct_on_read);
  uv_buf_t b = uv_buf_init(A.dc.req.base, (unsigned)A.dc.req.len);
  int r = uv_try_write((uv_stream_t *)&A.dc.tcp, &b, 1);
  if (r == (int)A.dc.req.len) return;
  if (r < 0 && r != UV_EAGAIN) {
    ag_fail_run("direct: the request could not be written");
    return;
  }
  if (r > 0) b = uv_buf_init(A.dc.req.base + r, (unsigned)(A.dc.req.len - (size_t)r));
  if (uv_write(&A.dc.wreq, (uv_stream_t *)&A.dc.tcp, &b, 1, ag_direct_on_write) < 0)
    ag_fail_run("direct: the request could not be written");
}

static void ag_direct_start(void) {
  ag_direct_t *d = &A.dc;
  d->req.len = d->raw.len = d->body.len = 0;
  d->rpos = d->bpos = 0;
  d->hdr_done = d->chunked = d->body_end = d->done = d->in_chunk = 0;
  d->clen_left = 0;
  d->got = 0;
  ch_buf_printf(&d->req,
                "POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nUser-Agent: chorus-loadgen\r\n"
                "Content-Type: application/json\r\nAccept: text/event-stream\r\nX-Chorus-Bench: direct\r\n"
                "Content-Length: %zu\r\n\r\n",
                A.o.up_host, A.last_body.len);
  ch_buf_append(&d->req, A.last_body.base, A.last_body.len);
  uv_tcp_init(A.loop, &d->tcp);
  d->live = 1;
  A.live++;
  A.cur.d0 = uv_hrtime();
  if (uv_tcp_connect(&d->creq, &d->tcp, (const struct sockaddr *)&A.o.up_addr, ag_direct_on_connect) < 0)
    ag_fail_run("direct: cannot connect to the upstream");
}

/* ---- the WebSocket side ----------------------------------------------------------------------- */

static void ag_teardown(void) {
  if (A.phase >= AG_P_TEARDOWN) return;
  A.phase = AG_P_TEARDOWN;
  A.eng.stopping = 1;
  A.t_phase_end = uv_hrtime() + 3 * NS_PER_S;
  uv_timer_stop(&A.up_timer);
  for (unsigned i = 0; i < A.nconns; i++) lg_conn_close(&A.conns[i]);
  ag_direct_close();
}

/* Send prompt k (T1: sample k; T2: 0) from c. Returns 0 or CH_ECLOSED. */
static int ag_send_prompt(lg_conn_t *c, uint64_t k) {
  char b[512];
  uint8_t h[17];
  lg_hex16(h, k);
  h[16] = '\0';
  int n = snprintf(b, sizeof(b),
                   "{\"type\":\"message\",\"conversationId\":\"%s\",\"message\":{\"id\":\"p%s-%s\",\"content\":\"%s%s "
                   "Please answer.\"},\"agent\":\"%s\",\"id\":\"%s\"}",
                   A.conv, A.nonce, (const char *)h, A.prompt_pfx, (const char *)h, A.o.agent, (const char *)h);
  return lg_conn_send(c, 0x1, b, (size_t)n);
}

/* T1: start sample A.k (or finish). */
static void ag_ttfc_next(uint64_t now) {
  if (A.phase != AG_P_RUN) return;
  if (A.k >= (uint64_t)A.o.warm + A.o.n) {
    ag_measure_end();
    ag_teardown();
    return;
  }
  if (A.k == A.o.warm) ag_measure_start();
  memset(&A.cur, 0, sizeof(A.cur));
  A.got_ack = A.got_start = A.got_reply = A.got_end = 0;
  A.nchunks = 0;
  A.prompt_seq = A.start_reply_to = 0;
  A.stream_id_len = 0;
  A.step = ST_CHORUS;
  A.t_step = now;
  A.t_last_progress = now;
  A.rec.done = 0;
  if (ag_send_prompt(A.pub, A.k) < 0) {
    ag_fail_run("the prompter's connection is closed");
    return;
  }
  A.cur.t0 = uv_hrtime();
  lg_engine_flush(&A.eng); /* now, not at the end of the loop turn: t0 is the write */
}

/* T1: the chorus half of the sample is complete when everything came and checked out. */
static void ag_ttfc_check(void) {
  if (A.step != ST_CHORUS || !A.got_ack || !A.got_end || !A.rec.done || A.rec.direct) return;
  /* The end comes after every chunk (chunks are published as they come, the end after the
   * reply's commit): what is missing now is lost. */
  if (!A.got_start || A.start_reply_to != A.prompt_seq) ag_corrupt("stream start missing, or its inReplyTo is not the prompt's seq");
  if (!A.got_reply) ag_corrupt("the stored reply did not come before the end");
  if (A.nchunks < A.o.chunks) {
    A.undelivered += A.o.chunks - A.nchunks;
    ag_note_error("chunks missing at the end of a reply");
  }
  A.cur.t_acc = A.rec.t_acc;
  A.cur.t1 = A.rec.t1;
  A.cur.t2 = A.rec.emit_t[1];
  if (A.last_body.len == 0) {
    ag_fail_run("no request body to replay directly");
    return;
  }
  A.step = ST_DIRECT;
  A.t_step = uv_hrtime();
  ag_direct_start();
}

/* T2: the run is complete when every live subscriber has the end and the publisher its ack. */
static void ag_fan_check(uint64_t now) {
  if (A.o.mode != AG_FAN || A.phase != AG_P_RUN || A.t_ack_pub == 0) return;
  if (A.ends + A.dead < A.participants) return;
  (void)now;
  ag_measure_end();
  ag_teardown();
}

static void ag_resolve(ag_peer_t *pe, uint64_t now) {
  if (pe->resolved) return;
  pe->resolved = 1;
  A.resolved++;
  if (A.phase == AG_P_CONNECT && A.resolved == A.members && A.t_joined == 0) {
    A.t_joined = now;
    A.join_s = (double)(now - A.t0) / 1e9;
  }
}

enum { K_TYPE, K_ID, K_SEQ, K_MESSAGE, K_LASTSEQ, K_DUP, K_CLIENTID, K_CODE, K_ERROR, K_OP, K_STREAMID, K_INDEX,
       K_DELTA, K_INREPLYTO, K_NKEYS };
static const char *const ag_keys[K_NKEYS] = {"type",  "id",    "seq",      "message", "lastSeq",
                                             "duplicate", "clientId", "code", "error", "op",
                                             "streamId", "index", "delta",    "inReplyTo"};

/* A stream event for pe. */
static void ag_on_stream(lg_conn_t *c, ag_peer_t *pe, const lg_jv_t *f, uint64_t now) {
  (void)c;
  if (pe->role == AG_R_PUB) {
    ag_note_error("a stream event reached the publisher, which is no member");
    return;
  }
  const lg_jv_t *sid = &f[K_STREAMID];
  if (sid->kind != 's' || sid->n == 0 || sid->n >= AG_STREAM_ID_MAX) {
    ag_corrupt("a stream event without a streamId");
    return;
  }
  if (A.stream_id_len == 0) {
    memcpy(A.stream_id, sid->p, sid->n);
    A.stream_id_len = sid->n;
  } else if (!ag_jv_eq(sid, A.stream_id, A.stream_id_len)) {
    ag_corrupt("a stream event names another stream");
    return;
  }
  int is_t1 = A.o.mode == AG_TTFC;
  if (lg_json_is(&f[K_OP], "start")) {
    uint64_t irt = 0;
    if (pe->got_start && !is_t1) ag_note_error("stream start twice");
    if (lg_json_u64(&f[K_INREPLYTO], &irt) < 0) ag_corrupt("stream start without inReplyTo");
    if (is_t1) {
      A.got_start = 1;
      A.start_reply_to = irt;
    } else {
      pe->got_start = 1;
      if (A.fan_prompt_seq && irt != A.fan_prompt_seq) ag_corrupt("stream start: inReplyTo is not the prompt's seq");
    }
    return;
  }
  if (lg_json_is(&f[K_OP], "chunk")) {
    uint64_t idx = 0;
    if (lg_json_u64(&f[K_INDEX], &idx) < 0 || idx == 0 || idx > UINT32_MAX) {
      ag_corrupt("a chunk without a valid index");
      return;
    }
    const lg_jv_t *dl = &f[K_DELTA];
    int ok = dl->kind == 's' && ag_check_chunk(dl->p, dl->n, (uint32_t)idx) == 0;
    if (!ok) ag_corrupt("a chunk's delta differs from what the upstream wrote under its index");
    if (is_t1) {
      if (idx != (uint64_t)A.nchunks + 1) {
        if (idx <= A.nchunks) A.out_of_order++;
        else A.lost += idx - A.nchunks - 1;
      }
      if (idx > A.nchunks) A.nchunks = (uint32_t)idx;
      if (idx == 1) A.cur.t3 = now;
      A.t_last_progress = now;
      return;
    }
    if (idx <= pe->last_index) {
      A.out_of_order++;
      return;
    }
    if (idx != (uint64_t)pe->last_index + 1) A.lost += idx - pe->last_index - 1;
    pe->last_index = (uint32_t)idx;
    if (pe->t_first == 0) pe->t_first = now;
    pe->t_last = now;
    A.t_last_progress = now;
    if (ok) {
      A.deliveries++;
      lg_hist_record(&A.hist, now - A.rec.emit_t[idx]);
      A.chunk_count[idx]++;
      A.chunk_all_t[idx] = now;
    }
    return;
  }
  if (lg_json_is(&f[K_OP], "end")) {
    uint64_t seq = 0;
    if (lg_json_u64(&f[K_SEQ], &seq) < 0) ag_corrupt("stream end without seq");
    if (is_t1) {
      if (!A.got_reply || seq != A.prompt_seq + 1) ag_corrupt("stream end: its seq is not the stored reply's");
      A.got_end = 1;
      A.t_last_progress = now;
      ag_ttfc_check();
      return;
    }
    if (pe->got_end) {
      ag_note_error("stream end twice");
      return;
    }
    if (!pe->got_reply || seq != pe->reply_seq) ag_corrupt("stream end: its seq is not the stored reply's");
    pe->got_end = 1;
    A.ends++;
    ag_fan_check(now);
    return;
  }
  if (lg_json_is(&f[K_OP], "error")) {
    char m[200];
    snprintf(m, sizeof(m), "stream error: %.*s", (int)(f[K_ERROR].kind == 's' && f[K_ERROR].n < 150 ? f[K_ERROR].n : 0),
             f[K_ERROR].p ? f[K_ERROR].p : "");
    ag_fail_run(m);
    return;
  }
  A.other++;
}

/* A message broadcast: the prompt (role user) or the stored reply (role assistant). */
static void ag_on_bcast(lg_conn_t *c, ag_peer_t *pe, const lg_jv_t *f, uint64_t now) {
  (void)c, (void)now;
  static const char *const mk[] = {"seq", "role", "content", "streamId", "inReplyTo"};
  lg_jv_t m[5];
  uint64_t seq = 0, mseq = 0, irt = 0;
  if (pe->role == AG_R_PUB) {
    ag_note_error("a broadcast reached the publisher, which is no member");
    return;
  }
  if (lg_json_u64(&f[K_SEQ], &seq) < 0 || f[K_MESSAGE].kind != 'o' ||
      lg_json_object(f[K_MESSAGE].p, f[K_MESSAGE].n, mk, 5, m) < 0 || lg_json_u64(&m[0], &mseq) < 0 || mseq != seq) {
    ag_corrupt("a broadcast message is malformed");
    return;
  }
  if (seq <= pe->last_seq) A.out_of_order++;
  else if (seq != pe->last_seq + 1) A.lost += seq - pe->last_seq - 1;
  if (seq > pe->last_seq) pe->last_seq = seq;
  if (lg_json_is(&m[1], "user")) {
    if (A.o.mode == AG_FAN && A.fan_prompt_seq == 0) A.fan_prompt_seq = seq;
    return;
  }
  if (!lg_json_is(&m[1], "assistant")) {
    A.other++;
    return;
  }
  int ok = m[2].kind == 's' && A.rec.done && m[2].n == A.rec.text.len &&
           memcmp(m[2].p, A.rec.text.base, A.rec.text.len) == 0 &&
           ag_jv_eq(&m[3], A.stream_id, A.stream_id_len) && lg_json_u64(&m[4], &irt) == 0;
  if (!ok) ag_corrupt("the stored reply is not the text the upstream wrote (or names another stream)");
  if (A.o.mode == AG_TTFC) {
    if (irt != A.prompt_seq || seq != A.prompt_seq + 1) ag_corrupt("the stored reply's seq or inReplyTo is wrong");
    A.got_reply = 1;
    return;
  }
  if (irt != A.fan_prompt_seq) ag_corrupt("the stored reply's inReplyTo is not the prompt's seq");
  if (pe->got_reply) ag_note_error("the stored reply came twice");
  pe->got_reply = 1;
  pe->reply_seq = seq;
  if (ok) A.replies++;
}

static void ag_on_ack(lg_conn_t *c, ag_peer_t *pe, const lg_jv_t *f, uint64_t now) {
  (void)c;
  uint64_t n = 0, seq = 0;
  uint64_t want = A.o.mode == AG_TTFC ? A.k : 0;
  if (pe != A.pub->ud || f[K_ID].kind != 's' || f[K_ID].n != 16 || lg_unhex16((const uint8_t *)f[K_ID].p, &n) < 0 ||
      n != want || lg_json_u64(&f[K_SEQ], &seq) < 0 || f[K_DUP].kind != 'l' || f[K_DUP].n != 5 ||
      memcmp(f[K_DUP].p, "false", 5) != 0) {
    ag_corrupt("an ack that answers no prompt in flight, or says duplicate");
    return;
  }
  if (A.o.mode == AG_TTFC) {
    if (A.got_ack) ag_corrupt("a second ack");
    A.got_ack = 1;
    A.prompt_seq = seq;
    A.cur.t_ack = now;
    ag_ttfc_check();
    return;
  }
  A.t_ack_pub = now;
  if (A.fan_prompt_seq && A.fan_prompt_seq != seq) ag_corrupt("the ack's seq is not the prompt's");
  A.fan_prompt_seq = seq;
  ag_fan_check(now);
}

static void ag_on_sync(lg_conn_t *c, ag_peer_t *pe, const lg_jv_t *f, uint64_t now) {
  (void)c;
  uint64_t last = 0;
  if (pe->joined || pe->role == AG_R_PUB || !lg_json_is(&f[K_ID], "j") || lg_json_u64(&f[K_LASTSEQ], &last) < 0) {
    ag_note_error("an unexpected sync");
    return;
  }
  pe->last_seq = last;
  pe->joined = 1;
  A.joined++;
  ag_resolve(pe, now);
}

static void ag_on_error_frame(lg_conn_t *c, ag_peer_t *pe, const lg_jv_t *f, uint64_t now) {
  (void)c;
  char m[220];
  snprintf(m, sizeof(m), "server error: %.*s: %.*s", (int)(f[K_CODE].kind == 's' && f[K_CODE].n < 40 ? f[K_CODE].n : 0),
           f[K_CODE].p ? f[K_CODE].p : "", (int)(f[K_ERROR].kind == 's' && f[K_ERROR].n < 120 ? f[K_ERROR].n : 0),
           f[K_ERROR].p ? f[K_ERROR].p : "");
  if (lg_json_is(&f[K_ID], "j") && A.phase == AG_P_CONNECT && !pe->joined) {
    ag_note_error(m);
    pe->dead = 1;
    ag_resolve(pe, now);
    return;
  }
  ag_fail_run(m);
}

static void ag_on_text(lg_conn_t *c, int opcode, const uint8_t *data, size_t len, uint64_t now) {
  ag_peer_t *pe = c->ud;
  lg_jv_t f[K_NKEYS];
  (void)opcode;
  if (A.phase >= AG_P_TEARDOWN) return;
  static const char pres[] = "{\"type\":\"presence\",";
  if (len > sizeof(pres) && memcmp(data, pres, sizeof(pres) - 1) == 0) {
    A.presence++;
    A.t_last_presence = now;
    return;
  }
  /* The frequent one: chunks, walked only as far as their delta. */
  static const char chunk[] = "{\"type\":\"stream\",\"op\":\"chunk\",";
  if (len > sizeof(chunk) && memcmp(data, chunk, sizeof(chunk) - 1) == 0) {
    static const char *const kc[] = {"type", "op", "streamId", "index", "delta"};
    lg_jv_t g[5];
    if (lg_json_object((const char *)data, len, kc, 5, g) < 0) {
      ag_corrupt("a chunk event is not well-formed JSON");
      return;
    }
    for (int i = 0; i < K_NKEYS; i++) f[i].kind = 0, f[i].p = NULL, f[i].n = 0;
    f[K_TYPE] = g[0], f[K_OP] = g[1], f[K_STREAMID] = g[2], f[K_INDEX] = g[3], f[K_DELTA] = g[4];
    ag_on_stream(c, pe, f, now);
    return;
  }
  if (lg_json_object((const char *)data, len, ag_keys, K_NKEYS, f) < 0 || f[K_TYPE].kind != 's') {
    ag_corrupt("a server message is not a JSON object with a type");
    return;
  }
  const lg_jv_t *ty = &f[K_TYPE];
  if (lg_json_is(ty, "stream")) ag_on_stream(c, pe, f, now);
  else if (lg_json_is(ty, "message")) ag_on_bcast(c, pe, f, now);
  else if (lg_json_is(ty, "ack")) ag_on_ack(c, pe, f, now);
  else if (lg_json_is(ty, "presence")) A.presence++, A.t_last_presence = now;
  else if (lg_json_is(ty, "sync")) ag_on_sync(c, pe, f, now);
  else if (lg_json_is(ty, "error")) ag_on_error_frame(c, pe, f, now);
  else A.other++;
}

static void ag_on_message(lg_conn_t *c, int opcode, const uint8_t *pfx, uint64_t len, int tail_ok, uint64_t now) {
  (void)c, (void)opcode, (void)pfx, (void)len, (void)tail_ok, (void)now; /* on_text gets them all */
}

static void ag_begin_run(uint64_t now) {
  A.phase = AG_P_RUN;
  A.t_last_progress = now;
  if (A.o.mode == AG_TTFC) {
    ag_ttfc_next(now);
    return;
  }
  A.participants = A.joined;
  if (A.participants == 0) {
    ag_fail_run("no subscriber could join");
    return;
  }
  ag_measure_start();
  if (ag_send_prompt(A.pub, 0) < 0) {
    ag_fail_run("the publisher's connection is closed");
    return;
  }
  A.t_prompt = uv_hrtime();
  lg_engine_flush(&A.eng);
}

static void ag_on_open(lg_conn_t *c) {
  ag_peer_t *pe = c->ud;
  if (pe->role == AG_R_PUB) {
    A.pub_open = 1;
    if (A.phase == AG_P_CONNECT) ag_begin_run(uv_hrtime());
    return;
  }
  char b[200];
  int n = snprintf(b, sizeof(b), "{\"type\":\"join\",\"conversationId\":\"%s\",\"id\":\"j\"}", A.conv);
  lg_conn_send(c, 0x1, b, (size_t)n);
}

static void ag_on_fail(lg_conn_t *c, const char *why) {
  ag_peer_t *pe = c->ud;
  uint64_t now = uv_hrtime();
  if (A.phase >= AG_P_TEARDOWN) return;
  ag_note_error(why);
  if (pe->role != AG_R_SUB) {
    ag_fail_run(pe->role == AG_R_PUB ? "the publisher's connection failed" : "the prompter's connection failed");
    return;
  }
  if (pe->dead) return;
  pe->dead = 1;
  if (A.phase == AG_P_CONNECT) {
    if (pe->joined) A.joined--;
    pe->joined = 0;
    ag_resolve(pe, now);
    return;
  }
  if (pe->joined) {
    A.dead++;
    if (A.dead >= A.participants) ag_fail_run("every subscriber was lost");
    else ag_fan_check(now);
  }
}

static const lg_ops_t ag_ops = {ag_on_open, ag_on_message, NULL, ag_on_fail, ag_on_text};

/* ---- the tick --------------------------------------------------------------------------------- */

static void ag_report(void);

static void ag_finish_check(void) {
  if (A.phase == AG_P_TEARDOWN && A.eng.live_handles == 0 && !A.dc.live) {
    /* Upstream connections: close what chorus left open, then the listener. */
    for (unsigned i = 0; i < AG_MAX_UP; i++)
      if (A.ups[i].used && !A.ups[i].closing) ag_up_close(&A.ups[i]);
    if (A.listening) {
      A.listening = 0;
      uv_close((uv_handle_t *)&A.listener, ag_on_handle_closed);
    }
    if (A.live > 0) return;
    A.phase = AG_P_CLOSED;
    uv_timer_stop(&A.tick);
    uv_close((uv_handle_t *)&A.tick, NULL);
    uv_close((uv_handle_t *)&A.up_timer, NULL);
    uv_close((uv_handle_t *)&A.sigint, NULL);
    uv_close((uv_handle_t *)&A.sigterm, NULL);
    lg_engine_dispose(&A.eng);
  }
}

static void ag_maybe_begin(uint64_t now) {
  if (A.t_joined == 0 || A.pub_started) return;
  if (A.o.mode == AG_TTFC) {
    A.pub_started = 1;
    if (A.joined == 0) {
      ag_fail_run("the prompter could not join");
      return;
    }
    ag_begin_run(now);
    return;
  }
  if (A.joined == 0) {
    A.pub_started = 1;
    ag_fail_run("no subscriber could join");
    return;
  }
  uint64_t quiet = (uint64_t)(A.o.settle * NS_PER_S);
  uint64_t last = A.t_last_presence > A.t_joined ? A.t_last_presence : A.t_joined;
  int timeout = now - A.t_joined > (uint64_t)(A.o.join_timeout * NS_PER_S);
  if (now - last < quiet && !timeout) return;
  if (now - last < quiet) ag_note_error("presence frames kept coming for the whole join timeout");
  A.settle_s = (double)(now - A.t_joined) / 1e9;
  A.pub_started = 1;
  A.eng.connect_deadline = now + (uint64_t)(A.o.connect_timeout * NS_PER_S);
  lg_conn_start(A.pub); /* ag_on_open begins the run */
}

/* T2: chunks still missing at live subscribers, plus the stream starts, stored replies and ends
 * they did not get. */
static void ag_fan_missing(void) {
  uint64_t miss = 0;
  for (unsigned i = 0; i < A.o.conns; i++) {
    const ag_peer_t *pe = &A.peers[i];
    if (!pe->joined || pe->dead) continue;
    if (pe->last_index < A.o.chunks) miss += A.o.chunks - pe->last_index;
    miss += !pe->got_start + !pe->got_reply + !pe->got_end;
  }
  A.undelivered = miss;
}

static void ag_on_tick(uv_timer_t *t) {
  (void)t;
  uint64_t now = uv_hrtime();
  if (now >= A.t_hard) {
    ag_set_fatal("hard deadline reached; gave up");
    ag_report();
    fprintf(stderr, "chorus-loadgen: hard deadline reached in phase %d; giving up\n", (int)A.phase);
    exit(1);
  }
  uint64_t reply_ns = ag_ttfc_ns() + (uint64_t)A.o.chunks * ag_interval_ns();
  switch (A.phase) {
  case AG_P_CONNECT:
    if (A.t_joined) {
      ag_maybe_begin(now);
    } else if (now - A.t0 > (uint64_t)((A.o.connect_timeout + A.o.join_timeout) * NS_PER_S)) {
      char m[120];
      snprintf(m, sizeof(m), "%u of %u connections did not join in time", A.members - A.joined, A.members);
      ag_note_error(m);
      for (unsigned i = 0; i < A.nconns; i++) {
        ag_peer_t *pe = &A.peers[i];
        if (pe->role != AG_R_PUB && !pe->resolved) {
          pe->dead = 1;
          lg_conn_abort(&A.conns[i]);
          pe->resolved = 1;
          A.resolved++;
        }
      }
      A.t_joined = now;
      A.join_s = (double)(now - A.t0) / 1e9;
    }
    break;
  case AG_P_RUN:
    if (A.o.mode == AG_TTFC) {
      if (A.step != ST_IDLE && now - A.t_step > 10 * NS_PER_S + reply_ns) {
        char m[240];
        A.timeouts++;
        snprintf(m, sizeof(m),
                 "sample %" PRIu64 " (%s) timed out: ack %d, start %d, chunks %u of %u, reply %d, end %d, upstream done %d",
                 A.k, A.step == ST_CHORUS ? "through chorus" : "direct", A.got_ack, A.got_start, A.nchunks, A.o.chunks,
                 A.got_reply, A.got_end, A.rec.done);
        ag_fail_run(m);
      }
      break;
    }
    if (now - A.t_last_progress > 10 * NS_PER_S + (A.deliveries ? 0 : ag_ttfc_ns())) {
      A.stalled = 1;
      ag_fan_missing();
      ag_fail_run("agent-fan: no delivery for 10 s (stalled)");
    } else if (now - A.t_prompt > reply_ns + 30 * NS_PER_S) {
      ag_fan_missing();
      ag_fail_run("agent-fan: the stream did not complete within its length + 30 s");
    }
    break;
  case AG_P_TEARDOWN:
    if (now >= A.t_phase_end) {
      for (unsigned i = 0; i < A.nconns; i++) lg_conn_abort(&A.conns[i]);
      if (A.dc.live && !uv_is_closing((uv_handle_t *)&A.dc.tcp)) uv_close((uv_handle_t *)&A.dc.tcp, ag_direct_on_closed);
    }
    break;
  case AG_P_CLOSED: break;
  }
  ag_finish_check();
}

static void ag_on_signal(uv_signal_t *s, int signum) {
  (void)s;
  if (A.phase >= AG_P_TEARDOWN) exit(1);
  ag_fail_run(signum == SIGTERM ? "terminated (SIGTERM)" : "interrupted (SIGINT)");
}

/* ---- report ----------------------------------------------------------------------------------- */

static int ag_cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int ag_cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank quantile of a sorted array. */
static size_t ag_rank(size_t n, double q) {
  size_t r = (size_t)(q * (double)n + 0.999999);
  if (r == 0) r = 1;
  if (r > n) r = n;
  return r - 1;
}

/* ,"<name>_p50_us":..,"_p99_us","_p999_us","_max_us" of v[0..n) (sorted here). */
static void ag_quantiles(ch_buf_t *b, const char *name, uint64_t *v, size_t n) {
  if (n == 0) return;
  qsort(v, n, sizeof(*v), ag_cmp_u64);
  ch_buf_printf(b, ",\"%s_p50_us\":%.1f,\"%s_p99_us\":%.1f,\"%s_p999_us\":%.1f,\"%s_max_us\":%.1f", name,
                v[ag_rank(n, 0.5)] / 1e3, name, v[ag_rank(n, 0.99)] / 1e3, name, v[ag_rank(n, 0.999)] / 1e3, name,
                v[n - 1] / 1e3);
}

typedef uint64_t (*ag_pick_t)(const ag_sample_t *s, int *ok);

static uint64_t ag_d(uint64_t a, uint64_t b, int *ok) {
  if (a == 0 || b == 0 || b < a) {
    *ok = 0;
    return 0;
  }
  return b - a;
}
static uint64_t pk_added(const ag_sample_t *s, int *ok) { return ag_d(s->t0, s->t1, ok) + ag_d(s->t2, s->t3, ok); }
static uint64_t pk_req(const ag_sample_t *s, int *ok) { return ag_d(s->t0, s->t1, ok); }
static uint64_t pk_chunk(const ag_sample_t *s, int *ok) { return ag_d(s->t2, s->t3, ok); }
static uint64_t pk_preconn(const ag_sample_t *s, int *ok) { return ag_d(s->t0, s->t_acc, ok); }
static uint64_t pk_postconn(const ag_sample_t *s, int *ok) { return ag_d(s->t_acc, s->t1, ok); }
static uint64_t pk_ack(const ag_sample_t *s, int *ok) { return ag_d(s->t0, s->t_ack, ok); }
static uint64_t pk_client(const ag_sample_t *s, int *ok) { return ag_d(s->t0, s->t3, ok); }
static uint64_t pk_upttfc(const ag_sample_t *s, int *ok) { return ag_d(s->t1, s->t2, ok); }
static uint64_t pk_d_added(const ag_sample_t *s, int *ok) { return ag_d(s->d0, s->d1, ok) + ag_d(s->d2, s->d3, ok); }
static uint64_t pk_d_req(const ag_sample_t *s, int *ok) { return ag_d(s->d0, s->d1, ok); }
static uint64_t pk_d_connect(const ag_sample_t *s, int *ok) { return ag_d(s->d0, s->d_acc, ok); }
static uint64_t pk_d_chunk(const ag_sample_t *s, int *ok) { return ag_d(s->d2, s->d3, ok); }
static uint64_t pk_d_client(const ag_sample_t *s, int *ok) { return ag_d(s->d0, s->d3, ok); }

static void ag_series(ch_buf_t *b, const char *name, ag_pick_t pick, uint64_t *tmp) {
  size_t n = 0;
  for (uint64_t i = 0; i < A.nsamples; i++) {
    int ok = 1;
    uint64_t v = pick(&A.samples[i], &ok);
    if (ok) tmp[n++] = v;
  }
  ag_quantiles(b, name, tmp, n);
}

static void ag_report(void) {
  ch_buf_t b = CH_BUF_INIT;
  double win_s = 0, cpu = 0, srv = -1;
  if (A.measuring_started && A.measuring_done && A.t_cpu1 > A.t_cpu0) {
    win_s = (double)(A.t_cpu1 - A.t_cpu0) / 1e9;
    double used = ag_tv(&A.ru1.ru_utime) + ag_tv(&A.ru1.ru_stime) - ag_tv(&A.ru0.ru_utime) - ag_tv(&A.ru0.ru_stime);
    cpu = 100.0 * used / win_s;
    if (A.o.server_pid && A.srv1 >= A.srv0)
      srv = 100.0 * (double)(A.srv1 - A.srv0) / (double)sysconf(_SC_CLK_TCK) / win_s;
  }
  ch_buf_printf(&b, "{\"mode\":\"%s\",\"server\":\"", A.o.mode == AG_TTFC ? "agent-ttfc" : "agent-fan");
  ch_buf_append_json_str(&b, A.o.label, strlen(A.o.label));
  ch_buf_printf(&b, "\",\"chunks\":%u,\"interval_ms\":%g,\"ttfc_ms\":%g,\"size\":%u", A.o.chunks, A.o.interval_ms,
                A.o.ttfc_ms, A.o.size);
  if (A.o.mode == AG_TTFC) {
    uint64_t *tmp = ch_xmalloc((A.nsamples ? A.nsamples : 1) * sizeof(uint64_t));
    ch_buf_printf(&b, ",\"samples\":%" PRIu64 ",\"samples_wanted\":%u,\"warmup_samples\":%u,\"duration_s\":%.2f",
                  A.nsamples, A.o.n, A.o.warm, win_s);
    ag_series(&b, "added", pk_added, tmp);
    ag_series(&b, "req_leg", pk_req, tmp);
    ag_series(&b, "chunk_leg", pk_chunk, tmp);
    ag_series(&b, "pre_connect", pk_preconn, tmp);
    ag_series(&b, "post_connect", pk_postconn, tmp);
    ag_series(&b, "ack", pk_ack, tmp);
    ag_series(&b, "client_ttfc", pk_client, tmp);
    ag_series(&b, "upstream_ttfc", pk_upttfc, tmp);
    ag_series(&b, "direct_added", pk_d_added, tmp);
    ag_series(&b, "direct_req_leg", pk_d_req, tmp);
    ag_series(&b, "direct_chunk_leg", pk_d_chunk, tmp);
    ag_series(&b, "direct_connect", pk_d_connect, tmp);
    ag_series(&b, "direct_client_ttfc", pk_d_client, tmp);
    /* Per sample pair: chorus's added time minus the direct path's (adjacent in time). */
    int64_t *dif = (int64_t *)tmp;
    size_t n = 0;
    for (uint64_t i = 0; i < A.nsamples; i++) {
      int ok = 1;
      uint64_t a = pk_added(&A.samples[i], &ok), d = pk_d_added(&A.samples[i], &ok);
      if (ok) dif[n++] = (int64_t)a - (int64_t)d;
    }
    if (n) {
      qsort(dif, n, sizeof(*dif), ag_cmp_i64);
      ch_buf_printf(&b, ",\"excess_p50_us\":%.1f,\"excess_p99_us\":%.1f,\"excess_p999_us\":%.1f,\"excess_max_us\":%.1f",
                    dif[ag_rank(n, 0.5)] / 1e3, dif[ag_rank(n, 0.99)] / 1e3, dif[ag_rank(n, 0.999)] / 1e3,
                    dif[n - 1] / 1e3);
    }
    free(tmp);
  } else {
    uint64_t emitted = 0, t_first = A.rec.emit_t ? A.rec.emit_t[1] : 0, t_last = 0;
    for (uint32_t k = 1; A.rec.emit_t && k <= A.o.chunks; k++)
      if (A.rec.emit_t[k]) emitted++, t_last = A.rec.emit_t[k];
    double emit_rate = emitted > 1 && t_last > t_first ? (double)(emitted - 1) * 1e9 / (double)(t_last - t_first) : 0;
    double recv_min = -1;
    unsigned complete = 0;
    for (unsigned i = 0; i < A.o.conns; i++) {
      const ag_peer_t *pe = &A.peers[i];
      if (!pe->joined || pe->dead) continue;
      if (pe->last_index == A.o.chunks && pe->got_reply && pe->got_end) complete++;
      if (pe->t_last > pe->t_first && pe->last_index > 1) {
        double r = (double)(pe->last_index - 1) * 1e9 / (double)(pe->t_last - pe->t_first);
        if (recv_min < 0 || r < recv_min) recv_min = r;
      }
    }
    lg_hist_reset(&A.hist_all);
    uint64_t all = 0;
    for (uint32_t k = 1; A.chunk_count && k <= A.o.chunks; k++) {
      if (A.rec.emit_t[k] && A.chunk_count[k] >= A.participants - A.dead && A.participants) {
        lg_hist_record(&A.hist_all, A.chunk_all_t[k] - A.rec.emit_t[k]);
        all++;
      }
    }
    ch_buf_printf(&b, ",\"subs\":%u,\"open\":%u,\"join_s\":%.2f,\"settle_s\":%.2f,\"presence_frames\":%" PRIu64,
                  A.o.conns, A.participants - A.dead, A.join_s, A.settle_s, A.presence);
    ch_buf_printf(&b,
                  ",\"emitted\":%" PRIu64 ",\"emit_chunks_per_s\":%.1f,\"recv_chunks_per_s_min\":%.1f"
                  ",\"deliveries\":%" PRIu64 ",\"expected_deliveries\":%" PRIu64 ",\"deliveries_per_s\":%.0f"
                  ",\"chunks_to_all\":%" PRIu64 ",\"complete_subs\":%u,\"replies_ok\":%" PRIu64 ",\"ends\":%" PRIu64,
                  emitted, emit_rate, recv_min < 0 ? 0 : recv_min, A.deliveries,
                  (uint64_t)(A.participants - A.dead) * A.o.chunks, win_s > 0 ? A.deliveries / win_s : 0, all, complete,
                  A.replies, A.ends);
    ch_buf_printf(&b, ",\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f",
                  lg_hist_quantile(&A.hist, 0.50) / 1e3, lg_hist_quantile(&A.hist, 0.99) / 1e3,
                  lg_hist_quantile(&A.hist, 0.999) / 1e3, A.hist.max / 1e3);
    ch_buf_printf(&b, ",\"all_p50_us\":%.1f,\"all_p99_us\":%.1f,\"all_max_us\":%.1f",
                  lg_hist_quantile(&A.hist_all, 0.50) / 1e3, lg_hist_quantile(&A.hist_all, 0.99) / 1e3,
                  A.hist_all.max / 1e3);
    ch_buf_printf(&b, ",\"ack_us\":%.1f,\"duration_s\":%.2f", A.t_ack_pub ? (A.t_ack_pub - A.t_prompt) / 1e3 : 0.0, win_s);
    ch_buf_printf(&b, ",\"stalled\":%s", A.stalled ? "true" : "false");
  }
  ch_buf_printf(&b,
                ",\"upstream_conns\":%" PRIu64 ",\"upstream_requests\":%" PRIu64 ",\"upstream_reused\":%" PRIu64
                ",\"upstream_rejected\":%" PRIu64,
                A.up_conns, A.up_requests, A.up_reused, A.up_rejected);
  ch_buf_printf(&b,
                ",\"losses\":%" PRIu64 ",\"lost\":%" PRIu64 ",\"out_of_order\":%" PRIu64 ",\"undelivered\":%" PRIu64
                ",\"timeouts\":%" PRIu64,
                A.lost + A.out_of_order + A.undelivered, A.lost, A.out_of_order, A.undelivered, A.timeouts);
  ch_buf_printf(&b, ",\"errors\":%" PRIu64 ",\"corrupt\":%" PRIu64, A.errors, A.corrupt);
  ch_buf_printf(&b, ",\"connect_retries\":%" PRIu64 ",\"closed_by_server\":%" PRIu64, A.eng.st.retries,
                A.eng.st.closed_by_peer);
  ch_buf_printf(&b, ",\"gen_cpu_pct\":%.1f", cpu);
  if (srv >= 0) ch_buf_printf(&b, ",\"server_cpu_pct\":%.1f", srv);
  if (A.o.server_pid) ch_buf_printf(&b, ",\"server_rss_kb\":%ld", lg_proc_rss_kb(A.o.server_pid));
  if (A.fatal[0] || A.first_error[0]) {
    const char *e = A.fatal[0] ? A.fatal : A.first_error;
    ch_buf_append_str(&b, ",\"error\":\"");
    ch_buf_append_json_str(&b, e, strlen(e));
    ch_buf_append_str(&b, "\"");
  }
  ch_buf_append_str(&b, "}\n");
  fwrite(b.base, 1, b.len, stdout);
  fflush(stdout);
  ch_buf_dispose(&b);
}

/* ---- command line ----------------------------------------------------------------------------- */

int lg_agent_is_mode(const char *m) { return strcmp(m, "agent-ttfc") == 0 || strcmp(m, "agent-fan") == 0; }

void lg_agent_usage(FILE *f) {
  fputs("agent modes (an `openai` agent of chorus pointed at a fake upstream inside this process):\n"
        "  agent-ttfc --url 'ws://127.0.0.1:P/ws?token=bench:d{i}' --upstream 127.0.0.1:U --agent NAME -n SAMPLES\n"
        "          one client sends prompts naming the agent, one at a time; the same request also goes\n"
        "          direct to the upstream (alternating). Reports what chorus adds to the upstream's time to\n"
        "          first chunk, (t1-t0)+(t3-t2), split into its request and chunk legs, next to the direct path\n"
        "  agent-fan  --url ... --upstream 127.0.0.1:U --agent NAME -c SUBS\n"
        "          SUBS clients join one conversation; one prompt; the upstream streams --chunks chunks every\n"
        "          --interval ms; every subscriber checks every chunk (in order, once, intact), the stored\n"
        "          reply and the end; reports chunks/s, delivery latency from the upstream's write, losses\n"
        "  chorus: --agent 'NAME=openai:bench-model;base-url=http://127.0.0.1:U/v1;key-env=CHORUS_BENCH_NO_KEY'\n"
        "  agent options: --chunks N [ttfc: 4; fan: 1000]; --interval MS [ttfc: 1; fan: 10]; --ttfc MS: the\n"
        "          upstream's time to first chunk [ttfc: 5; fan: 0]; -s BYTES per chunk (32..65536) [32];\n"
        "          -n SAMPLES [1000]; --warmup-samples K [10]; -c SUBS [1000]; --agent NAME [bench];\n"
        "          --settle SEC [0.5]; --join-timeout SEC [300];\n"
        "          --drop-chunk K: the upstream leaves chunk K out of the wire (self-test: must be reported)\n",
        f);
}

static int ag_parse_args(int argc, char **argv, ag_opts_t *o) {
  enum { O_URL = 256, O_PID, O_LABEL, O_BATCH, O_RETRIES, O_CTO, O_JTO, O_SETTLE, O_UP, O_AGENT, O_CHUNKS,
         O_INTERVAL, O_TTFC, O_WARMN, O_DROP };
  static const struct option longs[] = {
      {"conns", required_argument, NULL, 'c'},          {"size", required_argument, NULL, 's'},
      {"count", required_argument, NULL, 'n'},          {"help", no_argument, NULL, 'h'},
      {"url", required_argument, NULL, O_URL},          {"server-pid", required_argument, NULL, O_PID},
      {"label", required_argument, NULL, O_LABEL},      {"batch", required_argument, NULL, O_BATCH},
      {"retries", required_argument, NULL, O_RETRIES},  {"connect-timeout", required_argument, NULL, O_CTO},
      {"join-timeout", required_argument, NULL, O_JTO}, {"settle", required_argument, NULL, O_SETTLE},
      {"upstream", required_argument, NULL, O_UP},      {"agent", required_argument, NULL, O_AGENT},
      {"chunks", required_argument, NULL, O_CHUNKS},    {"interval", required_argument, NULL, O_INTERVAL},
      {"ttfc", required_argument, NULL, O_TTFC},        {"warmup-samples", required_argument, NULL, O_WARMN},
      {"drop-chunk", required_argument, NULL, O_DROP},  {NULL, 0, NULL, 0}};
  memset(o, 0, sizeof(*o));
  o->mode = strcmp(argv[1], "agent-ttfc") == 0 ? AG_TTFC : AG_FAN;
  o->label = "unknown";
  o->agent = "bench";
  o->conns = 1000;
  o->n = 1000;
  o->warm = 10;
  o->size = 32;
  o->batch = 128;
  o->retries = 5;
  o->connect_timeout = 120;
  o->join_timeout = 300;
  o->settle = 0.5;
  o->chunks = o->mode == AG_TTFC ? 4 : 1000;
  o->interval_ms = o->mode == AG_TTFC ? 1 : 10;
  o->ttfc_ms = o->mode == AG_TTFC ? 5 : 0;
  optind = 2;
  int ch;
  unsigned u;
  while ((ch = getopt_long(argc, argv, "c:s:n:h", longs, NULL)) != -1) {
    const char *bad = NULL;
    switch (ch) {
    case 'c': if (lg_parse_uint(optarg, 1, 1000000, &o->conns) < 0) bad = "-c"; break;
    case 's': if (lg_parse_uint(optarg, LG_PFX, 65536, &o->size) < 0) bad = "-s (32..65536)"; break;
    case 'n': if (lg_parse_uint(optarg, 1, 10000000, &o->n) < 0) bad = "-n"; break;
    case 'h':
      lg_agent_usage(stdout);
      exit(0);
    case O_URL: o->url_s = optarg; break;
    case O_PID:
      if (lg_parse_uint(optarg, 1, 0x7fffffff, &u) < 0) bad = "--server-pid";
      o->server_pid = (long)u;
      break;
    case O_LABEL: o->label = optarg; break;
    case O_BATCH: if (lg_parse_uint(optarg, 1, 100000, &o->batch) < 0) bad = "--batch"; break;
    case O_RETRIES:
      if (lg_parse_uint(optarg, 1, 100, &u) < 0) bad = "--retries";
      o->retries = (int)u;
      break;
    case O_CTO: if (lg_parse_sec(optarg, 1, 3600, &o->connect_timeout) < 0) bad = "--connect-timeout"; break;
    case O_JTO: if (lg_parse_sec(optarg, 1, 3600, &o->join_timeout) < 0) bad = "--join-timeout"; break;
    case O_SETTLE: if (lg_parse_sec(optarg, 0, 600, &o->settle) < 0) bad = "--settle"; break;
    case O_UP: o->up_s = optarg; break;
    case O_AGENT: o->agent = optarg; break;
    case O_CHUNKS: if (lg_parse_uint(optarg, 1, AG_MAX_CHUNKS, &o->chunks) < 0) bad = "--chunks"; break;
    case O_INTERVAL: if (lg_parse_sec(optarg, 0, 60000, &o->interval_ms) < 0) bad = "--interval (ms)"; break;
    case O_TTFC: if (lg_parse_sec(optarg, 0, 60000, &o->ttfc_ms) < 0) bad = "--ttfc (ms)"; break;
    case O_WARMN: if (lg_parse_uint(optarg, 0, 1000000, &o->warm) < 0) bad = "--warmup-samples"; break;
    case O_DROP: if (lg_parse_uint(optarg, 1, AG_MAX_CHUNKS, &o->drop_chunk) < 0) bad = "--drop-chunk"; break;
    default: return CH_EINVAL;
    }
    if (bad) {
      fprintf(stderr, "chorus-loadgen: bad value for %s: '%s'\n", bad, optarg);
      return CH_EINVAL;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "chorus-loadgen: unexpected argument '%s'\n", argv[optind]);
    return CH_EINVAL;
  }
  if (!o->url_s || !o->up_s) {
    fprintf(stderr, "chorus-loadgen: %s needs --url and --upstream\n", argv[1]);
    return CH_EINVAL;
  }
  char err[256];
  if (lg_url_parse(o->url_s, &o->url, err, sizeof(err)) < 0) {
    fprintf(stderr, "chorus-loadgen: %s\n", err);
    return CH_EINVAL;
  }
  /* --upstream HOST:PORT goes through the same loopback-only check as the URLs. */
  char us[200];
  lg_url_t uu;
  snprintf(us, sizeof(us), "ws://%s/", o->up_s);
  if (strlen(o->up_s) >= sizeof(o->up_host) || lg_url_parse(us, &uu, err, sizeof(err)) < 0) {
    fprintf(stderr, "chorus-loadgen: --upstream: %s\n", strlen(o->up_s) >= sizeof(o->up_host) ? "too long" : err);
    return CH_EINVAL;
  }
  o->up_addr = uu.addr;
  snprintf(o->up_host, sizeof(o->up_host), "%s", o->up_s);
  size_t al = strlen(o->agent);
  if (al == 0 || al > 64 || strspn(o->agent, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != al) {
    fprintf(stderr, "chorus-loadgen: --agent must be 1..64 letters, digits, - or _\n");
    return CH_EINVAL;
  }
  if (o->drop_chunk > o->chunks) {
    fprintf(stderr, "chorus-loadgen: --drop-chunk beyond --chunks\n");
    return CH_EINVAL;
  }
  return 0;
}

/* ---- main ------------------------------------------------------------------------------------- */

int lg_agent_main(int argc, char **argv) {
  int rc = 1;
  if (ag_parse_args(argc, argv, &A.o) < 0) return 2;
  signal(SIGPIPE, SIG_IGN);
  A.nconns = A.o.mode == AG_TTFC ? 1 : A.o.conns + 1;
  A.members = A.o.mode == AG_TTFC ? 1 : A.o.conns;
  lg_raise_nofile(A.nconns + 16);
  A.loop = uv_default_loop();
  if (lg_engine_init(&A.eng, A.loop, A.o.batch, A.o.retries, 10000) < 0) {
    fprintf(stderr, "chorus-loadgen: cannot initialise (getrandom failed)\n");
    return 1;
  }
  uint8_t rnd[4];
  if (lg_random(rnd, sizeof(rnd)) < 0) return 1;
  snprintf(A.nonce, sizeof(A.nonce), "%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3]);
  A.conv_len = (size_t)snprintf(A.conv, sizeof(A.conv), "bench-%s-agent", A.nonce);
  snprintf(A.prompt_pfx, sizeof(A.prompt_pfx), "bench prompt %s ", A.nonce);
  A.filler = lg_filler_table();
  lg_hist_reset(&A.hist);
  A.rec.emit_t = ch_xcalloc((size_t)A.o.chunks + 1, sizeof(uint64_t));
  if (A.o.mode == AG_TTFC) {
    A.samples = ch_xcalloc(A.o.n, sizeof(*A.samples));
  } else {
    A.chunk_count = ch_xcalloc((size_t)A.o.chunks + 1, sizeof(uint32_t));
    A.chunk_all_t = ch_xcalloc((size_t)A.o.chunks + 1, sizeof(uint64_t));
  }
  A.conns = ch_xcalloc(A.nconns, sizeof(*A.conns));
  A.peers = ch_xcalloc(A.nconns, sizeof(*A.peers));
  for (unsigned i = 0; i < A.nconns; i++) {
    ag_peer_t *pe = &A.peers[i];
    pe->role = A.o.mode == AG_TTFC ? AG_R_PROMPTER : i == A.o.conns ? AG_R_PUB : AG_R_SUB;
    lg_conn_init(&A.conns[i], &A.eng, &A.o.url, &ag_ops, pe);
    A.conns[i].u_index = i;
  }
  A.pub = &A.conns[A.o.mode == AG_TTFC ? 0 : A.o.conns];

  uv_timer_init(A.loop, &A.up_timer);
  uv_timer_init(A.loop, &A.tick);
  uv_signal_init(A.loop, &A.sigint);
  uv_signal_init(A.loop, &A.sigterm);
  if (ag_up_listen() < 0) {
    ag_set_fatal("the fake upstream cannot listen");
    ag_report();
    uv_close((uv_handle_t *)&A.listener, ag_on_handle_closed);
    A.listening = 0;
    uv_close((uv_handle_t *)&A.up_timer, NULL);
    uv_close((uv_handle_t *)&A.tick, NULL);
    uv_close((uv_handle_t *)&A.sigint, NULL);
    uv_close((uv_handle_t *)&A.sigterm, NULL);
    lg_engine_dispose(&A.eng);
    uv_run(A.loop, UV_RUN_DEFAULT);
    goto Exit;
  }
  A.t0 = uv_hrtime();
  A.eng.connect_deadline = A.t0 + (uint64_t)(A.o.connect_timeout * NS_PER_S);
  double reply_s = (A.o.ttfc_ms + A.o.chunks * A.o.interval_ms) / 1e3;
  double hard_s = A.o.connect_timeout * 2 + A.o.join_timeout + 60 + 3 + 10 +
                  (A.o.mode == AG_TTFC ? (A.o.n + A.o.warm) * (2 * reply_s + 0.2) : reply_s + 30);
  A.t_hard = A.t0 + (uint64_t)(hard_s * NS_PER_S);
  A.phase = AG_P_CONNECT;
  uv_timer_start(&A.tick, ag_on_tick, 5, 5);
  uv_signal_start(&A.sigint, ag_on_signal, SIGINT);
  uv_unref((uv_handle_t *)&A.sigint);
  uv_signal_start(&A.sigterm, ag_on_signal, SIGTERM);
  uv_unref((uv_handle_t *)&A.sigterm);
  for (unsigned i = 0; i < A.members; i++) lg_conn_start(&A.conns[i]); /* agent-fan: the publisher later */

  uv_run(A.loop, UV_RUN_DEFAULT);

  if (A.o.mode == AG_FAN && !A.fatal[0]) {
    ag_fan_missing();
    if (A.undelivered) ag_note_error("chunks, replies or ends still missing at the end");
  }
  if (!A.measuring_done) ag_set_fatal("the run ended before the measurement was complete");
  if (A.o.mode == AG_TTFC && A.nsamples < A.o.n) ag_set_fatal("agent-ttfc: not every sample completed");
  ag_report();
  if (A.fatal[0]) {
    fprintf(stderr, "chorus-loadgen: %s failed: %s\n", argv[1], A.fatal);
  } else if (A.errors || A.lost || A.out_of_order || A.undelivered || A.timeouts || A.corrupt) {
    fprintf(stderr,
            "chorus-loadgen: %" PRIu64 " errors, %" PRIu64 " corrupt, %" PRIu64 " lost, %" PRIu64
            " out of order, %" PRIu64 " undelivered (first: %s)\n",
            A.errors, A.corrupt, A.lost, A.out_of_order, A.undelivered, A.first_error[0] ? A.first_error : "-");
  } else {
    rc = 0;
  }
Exit:
  for (unsigned i = 0; i < A.nconns; i++) lg_conn_dispose(&A.conns[i]);
  free(A.conns);
  free(A.peers);
  free(A.samples);
  free(A.chunk_count);
  free(A.chunk_all_t);
  free(A.rec.emit_t);
  ch_buf_dispose(&A.rec.text);
  ch_buf_dispose(&A.last_body);
  ch_buf_dispose(&A.ev);
  ch_buf_dispose(&A.hc);
  ch_buf_dispose(&A.dc.req);
  ch_buf_dispose(&A.dc.raw);
  ch_buf_dispose(&A.dc.body);
  uv_loop_close(A.loop);
  return rc;
}
