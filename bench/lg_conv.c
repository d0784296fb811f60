/*
 * lg_conv.c — chorus-loadgen's conversation modes: chorus's native protocol on /ws
 * (docs/PROTOCOL.md), measured the way a client experiences it.
 *
 *   send    --url ws://H:P/ws?token=T -c CONNS -w WINDOW -s SIZE -d SEC [--conversations K] [--rate R]
 *   convfan --url ws://H:P/ws?token=T -c SUBS -w WINDOW -s SIZE -d SEC
 *   resume  --url ws://H:P/ws?token=T -n N [-w WINDOW] [--repeat K]
 *
 * The URL's first "{i}" becomes the connection's index, so with `--insecure-dev`
 * `?token=bench:d{i}` gives every connection its own device of one user (who
 * may therefore join every conversation). A signed token works as well (then
 * every connection is the same device).
 *
 * What goes over the wire (one text frame each; SIZE is the content's length):
 *
 *   -> {"type":"join","conversationId":C,"id":"j"}
 *   <- {"type":"sync","id":"j",...,"lastSeq":L,...}                member from here on
 *   -> {"type":"message","conversationId":C,"message":{"id":MID,"content":CONTENT},"id":RID}
 *   <- {"type":"ack","id":RID,"seq":S,"clientId":MID,"duplicate":false,...}   = durable
 *   <- {"type":"message","conversationId":C,"seq":S,"message":{"seq":S,...,"content":CONTENT,...}}
 *
 *   CONTENT = the generator's payload (lg.h): 16 hex digits of the sender's message
 *             number n, 16 of its send time, then the filler; checked byte by byte
 *             wherever it comes back (broadcasts, sync data).
 *   MID     = "m<run nonce>-<connection, 8 hex>-<n, 16 hex>": unique per run.
 *   RID     = n in 16 hex digits; each connection keeps its in-flight requests in
 *             WINDOW slots indexed n % WINDOW, so an ack finds its send time
 *             without a search and an ack nobody waits for is caught.
 *
 * send:    connection i joins conversation i % K; once every connection has its
 *          sync, each keeps WINDOW requests in flight (closed loop: the next one
 *          leaves when an ack lands) or, with --rate R, follows an open-loop
 *          schedule of R messages/s in total (connection i's k-th message is due
 *          at t0 + (k*CONNS + i)/R; its latency is counted from that due time,
 *          so a server that falls behind is not hidden by a generator that
 *          waits: no coordinated omission). Measured: acks/s and ack latency;
 *          also every broadcast each member gets (its conversation's seq must
 *          go up by exactly one: a jump is `lost`, a repeat `out_of_order`),
 *          with its latency from the sender's send time.
 * convfan: SUBS connections join one conversation; one more connection, the
 *          publisher (not joined), keeps at most WINDOW messages not yet
 *          delivered to every subscriber — the rule of the raw `fanout` mode,
 *          so the two figures compare. Measured: deliveries/s, delivery
 *          latency, the publisher's ack latency, losses by seq.
 * resume:  connection A sends one message and joins (learning seq L and the
 *          epoch), then disconnects; B sends N messages (WINDOW in flight,
 *          every ack awaited); A reconnects and joins with since=L and the
 *          epoch. Measured: from the join leaving A to the read that completed
 *          the sync; the sync must hold exactly the N messages, seq L+1..L+N in
 *          order, each content intact, no reset or truncation. Repeated
 *          --repeat times (A reconnects each time); the median is reported.
 *
 * Phases (a 5 ms tick moves between them; the callbacks do the work):
 *
 *   CONNECT+JOIN ─every member joined (or failed)─> RUN |warmup|measured d s| ─> DRAIN ─> TEARDOWN ─> CLOSED
 *   resume:  SEED(A) ─> CLOSE A ─> FILL(B) ─> [REOPEN A ─> JOIN since] x repeat ─> TEARDOWN
 *
 * The hot path allocates nothing: frames are built in the connection's output
 * buffer, whole messages come in place from the read buffer (lg_conn.c) and
 * are scanned by lg_json.c, latencies go into fixed histograms, per-connection
 * state lives in arrays sized at start.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <uv.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/err.h"
#include "lg.h"

#define NS_PER_S 1000000000ull
#define NS_PER_MS 1000000ull
#define CV_FREE UINT64_MAX /* an unused request slot */
#define CV_MID_LEN 35      /* "m" + 8 + "-" + 8 + "-" + 16 */
#define CV_MAX_SAMPLES 64  /* resume repetitions */

typedef enum { CV_SEND, CV_CONVFAN, CV_RESUME } cv_mode_t;
typedef enum { CV_P_CONNECT, CV_P_RUN, CV_P_DRAIN, CV_P_RESUME, CV_P_TEARDOWN, CV_P_CLOSED } cv_phase_t;
typedef enum { RS_SEED, RS_CLOSE_A, RS_FILL, RS_REOPEN, RS_JOINING, RS_DONE } cv_rstep_t;
typedef enum { CV_R_CLIENT, CV_R_SUB, CV_R_PUB, CV_R_A, CV_R_B } cv_role_t;

typedef struct cv_slot_s {
  uint64_t n; /* message number in flight, CV_FREE when unused */
  uint64_t t; /* its send time (rate mode: its due time), ns */
} cv_slot_t;

typedef struct cv_conv_s {
  char id[64];       /* conversation id */
  size_t len;
  uint64_t base;     /* lastSeq its members saw when they joined */
  uint64_t top;      /* highest seq acknowledged */
  uint64_t acks;     /* acks of messages to it (whole run) */
  int based;         /* base is set */
} cv_conv_t;

typedef struct cv_peer_s {
  uint32_t conv;     /* index in V.convs */
  uint8_t role;      /* cv_role_t */
  uint8_t joined;    /* its sync came: a member */
  uint8_t dead;      /* failed after connecting: out of every count */
  uint8_t resolved;  /* counted once in the join phase */
  uint64_t last_seq; /* newest conversation seq delivered to it */
  uint64_t next_n;   /* next message number it sends */
  uint64_t inflight; /* requests without an answer */
  cv_slot_t *slots;  /* o.window slots in V.slot_pool (senders), else NULL */
} cv_peer_t;

typedef struct cv_opts_s {
  cv_mode_t mode;
  const char *label, *url_s;
  lg_url_t url;
  unsigned conns, window, size, batch, convs, n, repeat;
  int retries;
  double duration, warmup, connect_timeout, join_timeout, rate, settle;
  long server_pid;
} cv_opts_t;

typedef struct cv_run_s {
  cv_opts_t o;
  uv_loop_t *loop;
  lg_engine_t eng;
  uv_timer_t tick, rtimer; /* phases (5 ms); open-loop sends (1 ms, when no timerfd) */
  uv_check_t rcheck;       /* open-loop sends after each loop turn's I/O */
  uv_poll_t rpoll;         /* open-loop sends: a 100 us timerfd (libuv timers are 1 ms coarse) */
  int rfd;                 /* the timerfd, -1 when none */
  uv_signal_t sigint, sigterm;
  lg_conn_t *conns;        /* owned, nconns */
  cv_peer_t *peers;        /* owned, parallel to conns */
  cv_slot_t *slot_pool;    /* owned */
  cv_conv_t *convs;        /* owned, o.convs */
  unsigned nconns, members; /* members: connections that join (send: all; convfan: subs) */
  lg_conn_t *pub;          /* convfan */
  char nonce[9];
  const uint8_t *filler;
  cv_phase_t phase;
  unsigned resolved, joined, dead;
  int pub_open, pub_started; /* convfan: the publisher connected; its connect was started */
  uint64_t t0, t_run, t_meas0, t_meas1, t_phase_end, t_hard, t_last_progress;
  int measuring_started, measuring_done;
  struct rusage ru0, ru1;
  uint64_t srv0, srv1, t_cpu0, t_cpu1;
  lg_hist_t hist;          /* send: ack latency; convfan: delivery latency */
  lg_hist_t hist2;         /* send: broadcast latency; convfan: the publisher's ack latency */
  uint64_t sent_w, acked_w; /* sends (due) and acks inside the window */
  uint64_t bcasts_w;       /* broadcasts received inside the window */
  uint64_t inflight;       /* all requests without an answer */
  uint64_t late;           /* rate mode: messages that left > 1 ms after their due time */
  uint64_t rate_g;         /* rate mode: next message of the global schedule */
  uint64_t lost, out_of_order, undelivered, timeouts;
  uint64_t presence, other;
  uint64_t errors, corrupt;
  int stalled;
  char first_error[200];
  char fatal[260];
  double join_s;           /* from the start until every member had its sync */
  double settle_s;         /* from then until presence went quiet (the run starts) */
  uint64_t t_joined;       /* every member resolved (0: not yet) */
  uint64_t t_last_presence;
  /* convfan */
  uint32_t *fan_recv;      /* owned, o.window: receipts of in-flight message k at k % window */
  uint64_t fan_sent, fan_done, fan_msgs_w;
  unsigned participants;
  /* resume */
  cv_rstep_t rs;
  uint64_t t_step, since, fill_acked, t_fill0, t_fill1, t_join, sync_bytes, received;
  char epoch[80];
  unsigned reps;
  double samples_ms[CV_MAX_SAMPLES];
} cv_run_t;

static cv_run_t V;

/* ---- helpers ---------------------------------------------------------------------------------- */

static void cv_note_error(const char *why) {
  V.errors++;
  lg_keep_first_error(V.first_error, sizeof(V.first_error), why);
}

static void cv_set_fatal(const char *why) { lg_keep_fatal(V.fatal, sizeof(V.fatal), why, V.first_error); }

static void cv_corrupt(const char *why) {
  V.corrupt++;
  cv_note_error(why);
}

static double cv_tv(const struct timeval *tv) { return (double)tv->tv_sec + tv->tv_usec / 1e6; }

static void cv_cpu_snapshot(int end) {
  getrusage(RUSAGE_SELF, end ? &V.ru1 : &V.ru0);
  uint64_t now = uv_hrtime();
  uint64_t srv = V.o.server_pid ? lg_proc_cpu_ticks(V.o.server_pid) : 0;
  if (end) V.t_cpu1 = now, V.srv1 = srv;
  else V.t_cpu0 = now, V.srv0 = srv;
}

static int cv_in_window(uint64_t t) { return t >= V.t_meas0 && t < V.t_meas1; }

static unsigned cv_index(const lg_conn_t *c) { return (unsigned)(c - V.conns); }

static void cv_mid(uint8_t *p, unsigned ci, uint64_t n) {
  uint8_t h[16];
  p[0] = 'm';
  memcpy(p + 1, V.nonce, 8);
  p[9] = '-';
  lg_hex16(h, ci);
  memcpy(p + 10, h + 8, 8);
  p[18] = '-';
  lg_hex16(p + 19, n);
}

/* The open-loop schedule is over (its handles stay open until the end). */
static void cv_rate_stop(void) {
  if (V.o.rate <= 0) return;
  uv_timer_stop(&V.rtimer);
  uv_check_stop(&V.rcheck);
  if (V.rfd >= 0) uv_poll_stop(&V.rpoll);
}

static void cv_teardown(void) {
  if (V.phase >= CV_P_TEARDOWN) return;
  V.phase = CV_P_TEARDOWN;
  V.eng.stopping = 1;
  V.t_phase_end = uv_hrtime() + 3 * NS_PER_S;
  cv_rate_stop();
  for (unsigned i = 0; i < V.nconns; i++) lg_conn_close(&V.conns[i]);
}

static void cv_fail_run(const char *why) {
  cv_set_fatal(why);
  if (!V.measuring_done && V.measuring_started) {
    V.measuring_done = 1;
    cv_cpu_snapshot(1);
  }
  cv_teardown();
}

/* ---- frames out ------------------------------------------------------------------------------- */

static const char CV_F1[] = "{\"type\":\"message\",\"conversationId\":\"";
static const char CV_F2[] = "\",\"message\":{\"id\":\"";
static const char CV_F3[] = "\",\"content\":\"";
static const char CV_F4[] = "\"},\"id\":\"";
static const char CV_F5[] = "\"}";

#define CV_PUT(w, s) (memcpy(w, s, sizeof(s) - 1), (w) += sizeof(s) - 1)

/* Send message n from c (t = its send or due time, stamped in the content).
 * Returns 0, CH_AGAIN when slot n % window is still busy, CH_ECLOSED. */
static int cv_send(lg_conn_t *c, cv_peer_t *pe, uint64_t n, uint64_t t) {
  cv_slot_t *sl = &pe->slots[n % V.o.window];
  if (sl->n != CV_FREE) return CH_AGAIN;
  const cv_conv_t *cv = &V.convs[pe->conv];
  size_t len = sizeof(CV_F1) - 1 + cv->len + sizeof(CV_F2) - 1 + CV_MID_LEN + sizeof(CV_F3) - 1 + V.o.size +
               sizeof(CV_F4) - 1 + 16 + sizeof(CV_F5) - 1;
  uint8_t *w = lg_conn_frame_begin(c, 0x1, len);
  if (w == NULL) return CH_ECLOSED;
  CV_PUT(w, CV_F1);
  memcpy(w, cv->id, cv->len), w += cv->len;
  CV_PUT(w, CV_F2);
  cv_mid(w, cv_index(c), n), w += CV_MID_LEN;
  CV_PUT(w, CV_F3);
  lg_payload_stamp(w, n, t);
  memcpy(w + LG_PFX, V.filler + LG_PFX, V.o.size - LG_PFX), w += V.o.size;
  CV_PUT(w, CV_F4);
  lg_hex16(w, n), w += 16;
  CV_PUT(w, CV_F5);
  lg_conn_frame_end(c);
  sl->n = n;
  sl->t = t;
  pe->inflight++;
  V.inflight++;
  if (n >= pe->next_n) pe->next_n = n + 1;
  if (cv_in_window(t)) V.sent_w++;
  return 0;
}

static int cv_send_join(lg_conn_t *c, const cv_conv_t *cv, const char *rid, int with_since) {
  char b[256];
  int n;
  if (with_since)
    n = snprintf(b, sizeof(b), "{\"type\":\"join\",\"conversationId\":\"%s\",\"since\":%" PRIu64 ",\"epoch\":\"%s\",\"id\":\"%s\"}",
                 cv->id, V.since, V.epoch, rid);
  else n = snprintf(b, sizeof(b), "{\"type\":\"join\",\"conversationId\":\"%s\",\"id\":\"%s\"}", cv->id, rid);
  return lg_conn_send(c, 0x1, b, (size_t)n);
}

/* ---- content checks --------------------------------------------------------------------------- */

/* A stored message as it comes back: its content must be exactly a payload of o.size bytes,
 * with a send time inside this run, and its id one of this run's (MID) naming the same message
 * number as the content. Returns 0 or CH_EPROTO; *n, *t: the content's number and time. */
static int cv_message(const lg_jv_t *content, const lg_jv_t *id, uint64_t now, uint64_t *n, uint64_t *t) {
  const lg_jv_t *v = content;
  uint64_t idn = 0;
  if (v->kind != 's' || v->n != V.o.size) return CH_EPROTO;
  if (lg_payload_parse((const uint8_t *)v->p, n, t) < 0) return CH_EPROTO;
  if (memcmp(v->p + LG_PFX, V.filler + LG_PFX, V.o.size - LG_PFX) != 0) return CH_EPROTO;
  if (*t < V.t0 || *t > now) return CH_EPROTO;
  if (id->kind != 's' || id->n != CV_MID_LEN || id->p[0] != 'm' || memcmp(id->p + 1, V.nonce, 8) != 0 ||
      lg_unhex16((const uint8_t *)id->p + 19, &idn) < 0 || idn != *n)
    return CH_EPROTO;
  return 0;
}

/* ---- the run -------------------------------------------------------------------------------- */

static void cv_fan_pump(uint64_t now);
static void cv_rate_pump(uint64_t now);
static void cv_on_rtimer(uv_timer_t *t);
static void cv_on_rcheck(uv_check_t *h);
static void cv_on_rpoll(uv_poll_t *h, int status, int events);

static void cv_begin_run(uint64_t now) {
  if (V.joined == 0) {
    cv_fail_run("no connection could join");
    return;
  }
  if (V.o.mode == CV_CONVFAN && !V.pub_open) {
    cv_fail_run("convfan: the publisher could not connect");
    return;
  }
  V.phase = CV_P_RUN;
  V.t_run = now;
  V.t_meas0 = now + (uint64_t)(V.o.warmup * NS_PER_S);
  V.t_meas1 = V.t_meas0 + (uint64_t)(V.o.duration * NS_PER_S);
  V.t_last_progress = now;
  if (V.o.mode == CV_CONVFAN) {
    V.participants = V.joined;
    cv_fan_pump(now);
    return;
  }
  if (V.o.rate > 0) {
    /* The schedule is kept to within ~100 us by a timerfd ticking at 10 kHz (libuv's own
     * timers have a 1 ms resolution, which would add up to 2 ms to every latency counted
     * from a due time); every loop turn also sends what has fallen due. */
    struct itimerspec its = {.it_interval = {0, 100000}, .it_value = {0, 100000}};
    V.rfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (V.rfd >= 0 && timerfd_settime(V.rfd, 0, &its, NULL) == 0 && uv_poll_init(V.loop, &V.rpoll, V.rfd) == 0) {
      uv_poll_start(&V.rpoll, UV_READABLE, cv_on_rpoll);
    } else {
      if (V.rfd >= 0) close(V.rfd);
      V.rfd = -1;
      uv_timer_start(&V.rtimer, cv_on_rtimer, 1, 1);
    }
    uv_check_start(&V.rcheck, cv_on_rcheck);
    cv_rate_pump(now);
    return;
  }
  for (unsigned i = 0; i < V.nconns; i++) {
    cv_peer_t *pe = &V.peers[i];
    if (!pe->joined || pe->dead) continue;
    while (pe->inflight < V.o.window && cv_send(&V.conns[i], pe, pe->next_n, now) == 0) {
    }
  }
}

/* A member settled in the join phase (joined, refused or failed). */
static void cv_resolve(cv_peer_t *pe, uint64_t now) {
  if (pe->resolved) return;
  pe->resolved = 1;
  V.resolved++;
  if (V.phase == CV_P_CONNECT && V.resolved == V.members && V.t_joined == 0) {
    V.t_joined = now;
    V.join_s = (double)(now - V.t0) / 1e9;
  }
}

/* Join phase over: every member resolved and no presence frame came for o.settle s (N clients
 * joining one room at once cause ~N^2 presence frames, which must not spill into the measured
 * window), or the settling has taken o.join_timeout. convfan then connects its publisher (on
 * a quiet server: in the middle of a join storm its handshake could time out) and starts when
 * it is open. */
static void cv_maybe_begin(uint64_t now) {
  if (V.t_joined == 0 || V.pub_started) return;
  uint64_t quiet = (uint64_t)(V.o.settle * NS_PER_S);
  uint64_t last = V.t_last_presence > V.t_joined ? V.t_last_presence : V.t_joined;
  int timeout = now - V.t_joined > (uint64_t)(V.o.join_timeout * NS_PER_S);
  if (now - last < quiet && !timeout) return;
  if (now - last < quiet) cv_note_error("presence frames kept coming for the whole join timeout");
  V.settle_s = (double)(now - V.t_joined) / 1e9;
  if (V.o.mode == CV_CONVFAN) {
    V.pub_started = 1;
    V.eng.connect_deadline = now + (uint64_t)(V.o.connect_timeout * NS_PER_S);
    lg_conn_start(V.pub); /* cv_on_open begins the run */
    return;
  }
  cv_begin_run(now);
}

/* ---- open-loop schedule ---------------------------------------------------------------------- */

static uint64_t cv_due(unsigned i, uint64_t k) {
  return V.t_run + (uint64_t)(((double)k * V.nconns + i) * 1e9 / V.o.rate);
}

/* Send what connection i has due (its window permitting; what does not fit waits for acks,
 * and its latency still counts from its due time). */
static void cv_rate_catch_up(unsigned i, uint64_t now) {
  cv_peer_t *pe = &V.peers[i];
  if (V.phase != CV_P_RUN || !pe->joined || pe->dead) return;
  for (;;) {
    uint64_t due = cv_due(i, pe->next_n);
    if (due > now || due >= V.t_meas1) break;
    if (cv_send(&V.conns[i], pe, pe->next_n, due) != 0) break;
    if (now - due > NS_PER_MS) V.late++;
  }
}

/* Walk the global schedule (message g is connection g % CONNS's number g / CONNS) up to now:
 * the cost is per message, not per connection and wake-up. */
static void cv_rate_pump(uint64_t now) {
  if (V.phase != CV_P_RUN) return;
  for (;;) {
    uint64_t due = V.t_run + (uint64_t)((double)V.rate_g * 1e9 / V.o.rate);
    if (due > now || due >= V.t_meas1) break;
    cv_rate_catch_up((unsigned)(V.rate_g % V.nconns), now);
    V.rate_g++;
  }
}

static void cv_on_rtimer(uv_timer_t *t) {
  (void)t;
  cv_rate_pump(uv_hrtime());
}

static void cv_on_rcheck(uv_check_t *h) {
  (void)h;
  cv_rate_pump(uv_hrtime());
}

static void cv_on_rpoll(uv_poll_t *h, int status, int events) {
  uint64_t expirations;
  (void)h, (void)status, (void)events;
  if (read(V.rfd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN) cv_note_error("timerfd read failed");
  cv_rate_pump(uv_hrtime());
}

static void cv_on_rpoll_closed(uv_handle_t *h) {
  (void)h;
  close(V.rfd);
  V.rfd = -1;
}

/* ---- convfan ---------------------------------------------------------------------------------- */

static void cv_fan_advance(uint64_t now) {
  while (V.fan_done < V.fan_sent && V.fan_recv[V.fan_done % V.o.window] >= V.participants) {
    V.fan_done++;
    V.t_last_progress = now;
    if (cv_in_window(now)) V.fan_msgs_w++;
  }
  cv_fan_pump(now);
}

static void cv_fan_pump(uint64_t now) {
  if (V.phase != CV_P_RUN || now >= V.t_meas1) return;
  cv_peer_t *pe = V.pub->ud;
  while (V.fan_sent - V.fan_done < V.o.window) {
    if (cv_send(V.pub, pe, V.fan_sent, now) != 0) return; /* its ack slot is still busy, or closed */
    V.fan_recv[V.fan_sent % V.o.window] = V.dead;
    V.fan_sent++;
  }
}

/* A subscriber is gone: it owes nothing more. */
static void cv_fan_drop(cv_peer_t *pe, uint64_t now) {
  uint64_t conv_base = V.convs[0].base;
  for (uint64_t k = pe->last_seq - conv_base; k < V.fan_sent; k++) V.fan_recv[k % V.o.window]++;
  V.dead++;
  if (V.dead == V.participants) {
    cv_fail_run("convfan: every subscriber was lost");
    return;
  }
  cv_fan_advance(now);
}

/* ---- resume ----------------------------------------------------------------------------------- */

static void cv_resume_step(cv_rstep_t s, uint64_t now) {
  V.rs = s;
  V.t_step = now;
}

static void cv_resume_reopen(void) {
  lg_conn_t *a = &V.conns[0];
  lg_conn_dispose(a);
  lg_conn_init(a, &V.eng, &V.o.url, a->ops, &V.peers[0]);
  a->u_index = 0;
  lg_conn_start(a);
  cv_resume_step(RS_JOINING, uv_hrtime());
}

static int cv_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The sync answering a resume join: exactly N events, seq since+1.., contents intact. */
static void cv_resume_synced(const lg_jv_t *f_data, const lg_jv_t *f_last, const lg_jv_t *f_reset,
                             const lg_jv_t *f_trunc, size_t len, uint64_t now) {
  double ms = (double)(now - V.t_join) / 1e6;
  if (V.reps < CV_MAX_SAMPLES) V.samples_ms[V.reps] = ms;
  V.reps++;
  V.sync_bytes = len;
  uint64_t last = 0;
  if (f_reset->kind || f_trunc->kind) cv_corrupt("resume: the sync says reset or truncated");
  if (lg_json_u64(f_last, &last) < 0 || last != V.since + V.o.n) cv_corrupt("resume: lastSeq is not since + N");
  static const char *const ek[] = {"seq", "content", "id"};
  lg_jv_t ev[3], el;
  const char *cur = NULL;
  uint64_t i = 0;
  int r;
  while ((r = lg_json_array_next(f_data, &cur, &el)) == 1) {
    uint64_t seq = 0, n = 0, t = 0;
    if (el.kind != 'o' || lg_json_object(el.p, el.n, ek, 3, ev) < 0 || lg_json_u64(&ev[0], &seq) < 0 ||
        cv_message(&ev[1], &ev[2], now, &n, &t) < 0) {
      cv_corrupt("resume: an event of the sync is malformed or its content differs");
    } else if (seq != V.since + 1 + i || n != i) {
      cv_corrupt("resume: the sync's events are not the N missed ones in order");
    }
    i++;
  }
  if (r < 0) cv_corrupt("resume: the sync's data is not a JSON array");
  V.received += i;
  if (i != V.o.n) {
    char m[120];
    snprintf(m, sizeof(m), "resume: the sync holds %" PRIu64 " events, not %u", i, V.o.n);
    cv_corrupt(m);
  }
  lg_conn_close(&V.conns[0]);
  if (V.reps >= V.o.repeat || V.reps >= CV_MAX_SAMPLES) {
    V.measuring_done = 1;
    cv_cpu_snapshot(1);
    cv_resume_step(RS_DONE, now);
    cv_teardown();
    return;
  }
  cv_resume_step(RS_REOPEN, now);
}

/* ---- messages in ------------------------------------------------------------------------------ */

enum { K_TYPE, K_ID, K_SEQ, K_MESSAGE, K_LASTSEQ, K_EPOCH, K_DATA, K_DUP, K_CLIENTID, K_RESET, K_TRUNC,
       K_CODE, K_ERROR, K_NKEYS };
static const char *const cv_keys[K_NKEYS] = {"type",     "id",    "seq",       "message", "lastSeq",
                                             "epoch",    "data",  "duplicate", "clientId", "reset",
                                             "truncated", "code", "error"};

static void cv_on_bcast(lg_conn_t *c, cv_peer_t *pe, const lg_jv_t *f, uint64_t now) {
  static const char *const mk[] = {"seq", "content", "id"};
  lg_jv_t m[3];
  uint64_t seq = 0, mseq = 0, n = 0, t = 0;
  (void)c;
  if (lg_json_u64(&f[K_SEQ], &seq) < 0) {
    cv_corrupt("a broadcast message without a numeric seq");
    return;
  }
  /* A damaged message still counts as delivered for the seq accounting (it is corrupt, not lost). */
  int bad = f[K_MESSAGE].kind != 'o' || lg_json_object(f[K_MESSAGE].p, f[K_MESSAGE].n, mk, 3, m) < 0 ||
            lg_json_u64(&m[0], &mseq) < 0 || mseq != seq || cv_message(&m[1], &m[2], now, &n, &t) < 0;
  if (bad) cv_corrupt("a broadcast message is malformed or its content differs from the one sent");
  if (!pe->joined || pe->dead || pe->role == CV_R_A || pe->role == CV_R_B || pe->role == CV_R_PUB) {
    cv_note_error("a broadcast reached a connection that is no member");
    return;
  }
  if (seq <= pe->last_seq) {
    V.out_of_order++;
    return;
  }
  uint64_t gap = seq - pe->last_seq - 1;
  if (gap) V.lost += gap;
  if (V.o.mode == CV_CONVFAN) {
    uint64_t base = V.convs[0].base, k = seq - base - 1;
    if (k >= V.fan_sent) {
      cv_corrupt("convfan: a broadcast with a seq beyond what was published");
      return;
    }
    if (!bad && n != k) cv_corrupt("convfan: a broadcast's seq does not match the publisher's order");
    for (uint64_t x = pe->last_seq - base; x <= k; x++) V.fan_recv[x % V.o.window]++;
    pe->last_seq = seq;
    if (!bad && cv_in_window(now)) {
      V.bcasts_w++;
      lg_hist_record(&V.hist, now - t);
    }
    cv_fan_advance(now);
    return;
  }
  pe->last_seq = seq;
  if (!bad && cv_in_window(now)) {
    V.bcasts_w++;
    lg_hist_record(&V.hist2, now - t);
  }
}

static void cv_on_ack(lg_conn_t *c, cv_peer_t *pe, const lg_jv_t *f, uint64_t now) {
  uint64_t n = 0, seq = 0;
  if (pe->slots == NULL || f[K_ID].kind != 's' || f[K_ID].n != 16 ||
      lg_unhex16((const uint8_t *)f[K_ID].p, &n) < 0) {
    cv_corrupt("an ack carries no request id of ours");
    return;
  }
  cv_slot_t *sl = &pe->slots[n % V.o.window];
  if (sl->n != n) {
    cv_corrupt("an ack for a request not in flight (duplicate ack?)");
    return;
  }
  uint8_t mid[CV_MID_LEN];
  cv_mid(mid, cv_index(c), n);
  if (lg_json_u64(&f[K_SEQ], &seq) < 0 || seq == 0 || f[K_DUP].kind != 'l' || f[K_DUP].n != 5 ||
      memcmp(f[K_DUP].p, "false", 5) != 0 || f[K_CLIENTID].kind != 's' || f[K_CLIENTID].n != CV_MID_LEN ||
      memcmp(f[K_CLIENTID].p, mid, CV_MID_LEN) != 0) {
    cv_corrupt("an ack is malformed, names another message, or says duplicate");
  }
  uint64_t lat = now - sl->t;
  sl->n = CV_FREE;
  pe->inflight--;
  V.inflight--;
  V.t_last_progress = now;
  cv_conv_t *cv = &V.convs[pe->conv];
  cv->acks++;
  if (seq > cv->top) cv->top = seq;
  switch (V.o.mode) {
  case CV_SEND:
    if (cv_in_window(now)) {
      V.acked_w++;
      lg_hist_record(&V.hist, lat);
    }
    if (V.o.rate > 0) {
      cv_rate_catch_up(cv_index(c), now); /* its window may have held due messages back */
    } else if (V.phase == CV_P_RUN && now < V.t_meas1) {
      /* Closed loop: refill the window (a slot still busy after an out-of-order ack waits). */
      while (pe->inflight < V.o.window && cv_send(c, pe, pe->next_n, now) == 0) {
      }
    }
    break;
  case CV_CONVFAN:
    if (cv_in_window(now)) {
      V.acked_w++;
      lg_hist_record(&V.hist2, lat);
    }
    cv_fan_pump(now);
    break;
  case CV_RESUME:
    lg_hist_record(&V.hist2, lat);
    if (pe->role == CV_R_A && V.rs == RS_SEED) {
      cv_send_join(c, cv, "j", 0);
    } else if (pe->role == CV_R_B && V.rs == RS_FILL) {
      if (seq != V.since + 1 + n) cv_corrupt("resume: a message got a seq out of the order it was sent in");
      V.fill_acked++;
      while (pe->next_n < V.o.n && pe->inflight < V.o.window && cv_send(c, pe, pe->next_n, now) == 0) {
      }
      if (V.fill_acked == V.o.n) {
        V.t_fill1 = now;
        lg_conn_close(c);
        cv_resume_step(RS_REOPEN, now);
      }
    }
    break;
  }
}

static void cv_on_sync(lg_conn_t *c, cv_peer_t *pe, const lg_jv_t *f, size_t len, uint64_t now) {
  uint64_t last = 0;
  if (lg_json_u64(&f[K_LASTSEQ], &last) < 0) {
    cv_corrupt("a sync without a numeric lastSeq");
    return;
  }
  if (V.o.mode == CV_RESUME) {
    if (pe->role != CV_R_A) {
      cv_note_error("resume: a sync for the wrong connection");
    } else if (V.rs == RS_SEED && lg_json_is(&f[K_ID], "j")) {
      if (f[K_EPOCH].kind != 's' || f[K_EPOCH].n >= sizeof(V.epoch) || last == 0) {
        cv_fail_run("resume: the seeding join returned no epoch or no message");
        return;
      }
      memcpy(V.epoch, f[K_EPOCH].p, f[K_EPOCH].n);
      V.epoch[f[K_EPOCH].n] = '\0';
      V.since = last;
      V.convs[0].base = last;
      lg_conn_close(c);
      cv_resume_step(RS_CLOSE_A, now);
    } else if (V.rs == RS_JOINING && lg_json_is(&f[K_ID], "r")) {
      cv_resume_synced(&f[K_DATA], &f[K_LASTSEQ], &f[K_RESET], &f[K_TRUNC], len, now);
    } else {
      cv_note_error("resume: an unexpected sync");
    }
    return;
  }
  if (pe->role == CV_R_PUB || pe->joined || !lg_json_is(&f[K_ID], "j")) {
    cv_note_error("an unexpected sync");
    return;
  }
  cv_conv_t *cv = &V.convs[pe->conv];
  if (!cv->based) {
    cv->base = last;
    cv->top = last;
    cv->based = 1;
  } else if (last != cv->base) {
    cv_note_error("members of one conversation joined at different lastSeq");
  }
  pe->last_seq = last;
  pe->joined = 1;
  V.joined++;
  cv_resolve(pe, now);
}

static void cv_on_error_frame(lg_conn_t *c, cv_peer_t *pe, const lg_jv_t *f, uint64_t now) {
  char m[200];
  snprintf(m, sizeof(m), "server error: %.*s: %.*s", (int)(f[K_CODE].kind == 's' ? f[K_CODE].n : 0),
           f[K_CODE].p ? f[K_CODE].p : "", (int)(f[K_ERROR].kind == 's' && f[K_ERROR].n < 120 ? f[K_ERROR].n : 0),
           f[K_ERROR].p ? f[K_ERROR].p : "");
  cv_note_error(m);
  uint64_t n;
  if (f[K_ID].kind == 's' && f[K_ID].n == 16 && pe->slots && lg_unhex16((const uint8_t *)f[K_ID].p, &n) == 0 &&
      pe->slots[n % V.o.window].n == n) {
    pe->slots[n % V.o.window].n = CV_FREE; /* answered, with a refusal */
    pe->inflight--;
    V.inflight--;
    return;
  }
  if (lg_json_is(&f[K_ID], "j") && V.phase == CV_P_CONNECT && !pe->joined) {
    pe->dead = 1;
    cv_resolve(pe, now);
    return;
  }
  if (V.o.mode == CV_RESUME) cv_fail_run("resume: the server refused a request");
  (void)c;
}

static void cv_on_text(lg_conn_t *c, int opcode, const uint8_t *data, size_t len, uint64_t now) {
  cv_peer_t *pe = c->ud;
  lg_jv_t f[K_NKEYS];
  (void)opcode;
  if (V.phase >= CV_P_TEARDOWN) return;
  /* Presence frames come N^2 when N clients join one room at once: count them without a walk. */
  static const char pres[] = "{\"type\":\"presence\",";
  if (len > sizeof(pres) && memcmp(data, pres, sizeof(pres) - 1) == 0) {
    V.presence++;
    V.t_last_presence = now;
    return;
  }
  /* The frequent documents (broadcasts, acks) are walked only as far as the members needed. */
  static const char bmsg[] = "{\"type\":\"message\",", back[] = "{\"type\":\"ack\",";
  static const char *const kmsg[] = {"type", "seq", "message"};
  static const char *const kack[] = {"type", "id", "seq", "clientId", "duplicate"};
  if (len > sizeof(bmsg) && memcmp(data, bmsg, sizeof(bmsg) - 1) == 0) {
    lg_jv_t g[3];
    if (lg_json_object((const char *)data, len, kmsg, 3, g) < 0) {
      cv_corrupt("a broadcast message is not well-formed JSON");
      return;
    }
    for (int i = 0; i < K_NKEYS; i++) f[i].kind = 0, f[i].p = NULL, f[i].n = 0;
    f[K_TYPE] = g[0], f[K_SEQ] = g[1], f[K_MESSAGE] = g[2];
    cv_on_bcast(c, pe, f, now);
    return;
  }
  if (len > sizeof(back) && memcmp(data, back, sizeof(back) - 1) == 0) {
    lg_jv_t g[5];
    if (lg_json_object((const char *)data, len, kack, 5, g) < 0) {
      cv_corrupt("an ack is not well-formed JSON");
      return;
    }
    for (int i = 0; i < K_NKEYS; i++) f[i].kind = 0, f[i].p = NULL, f[i].n = 0;
    f[K_TYPE] = g[0], f[K_ID] = g[1], f[K_SEQ] = g[2], f[K_CLIENTID] = g[3], f[K_DUP] = g[4];
    cv_on_ack(c, pe, f, now);
    return;
  }
  if (lg_json_object((const char *)data, len, cv_keys, K_NKEYS, f) < 0 || f[K_TYPE].kind != 's') {
    cv_corrupt("a server message is not a JSON object with a type");
    return;
  }
  const lg_jv_t *ty = &f[K_TYPE];
  if (lg_json_is(ty, "message")) cv_on_bcast(c, pe, f, now);
  else if (lg_json_is(ty, "ack")) cv_on_ack(c, pe, f, now);
  else if (lg_json_is(ty, "presence")) V.presence++, V.t_last_presence = now;
  else if (lg_json_is(ty, "sync")) cv_on_sync(c, pe, f, len, now);
  else if (lg_json_is(ty, "error")) cv_on_error_frame(c, pe, f, now);
  else V.other++;
}

static void cv_on_message(lg_conn_t *c, int opcode, const uint8_t *pfx, uint64_t len, int tail_ok, uint64_t now) {
  (void)c, (void)opcode, (void)pfx, (void)len, (void)tail_ok, (void)now; /* on_text gets them all */
}

static void cv_on_open(lg_conn_t *c) {
  cv_peer_t *pe = c->ud;
  uint64_t now = uv_hrtime();
  switch ((cv_role_t)pe->role) {
  case CV_R_CLIENT:
  case CV_R_SUB: cv_send_join(c, &V.convs[pe->conv], "j", 0); break;
  case CV_R_PUB:
    V.pub_open = 1;
    if (V.phase == CV_P_CONNECT) cv_begin_run(now);
    break;
  case CV_R_A:
    if (V.rs == RS_SEED) {
      cv_send(c, pe, 0, now);
    } else if (V.rs == RS_JOINING) {
      if (!V.measuring_started) {
        V.measuring_started = 1;
        cv_cpu_snapshot(0);
      }
      V.t_join = now;
      cv_send_join(c, &V.convs[0], "r", 1);
    }
    break;
  case CV_R_B:
    V.t_fill0 = now;
    for (unsigned k = 0; k < V.o.window && pe->next_n < V.o.n; k++) cv_send(c, pe, pe->next_n, now);
    break;
  }
}

static void cv_on_fail(lg_conn_t *c, const char *why) {
  cv_peer_t *pe = c->ud;
  uint64_t now = uv_hrtime();
  if (V.phase >= CV_P_TEARDOWN) return;
  cv_note_error(why);
  if (V.o.mode == CV_RESUME) {
    cv_fail_run("resume: a connection failed");
    return;
  }
  if (pe->role == CV_R_PUB) {
    cv_fail_run("convfan: the publisher connection failed");
    return;
  }
  if (pe->dead) return;
  pe->dead = 1;
  V.inflight -= pe->inflight;
  pe->inflight = 0;
  if (V.phase == CV_P_CONNECT) {
    if (pe->joined) V.joined--;
    pe->joined = 0;
    cv_resolve(pe, now);
    return;
  }
  if (!pe->joined) return;
  if (V.o.mode == CV_CONVFAN) {
    cv_fan_drop(pe, now);
    return;
  }
  if (++V.dead == V.joined) cv_fail_run("send: every connection was lost");
}

static const lg_ops_t cv_ops = {cv_on_open, cv_on_message, NULL, cv_on_fail, cv_on_text};

/* ---- the tick --------------------------------------------------------------------------------- */

/* send: every live member has its conversation's newest acknowledged seq. */
static uint64_t cv_send_missing(void) {
  uint64_t miss = 0;
  for (unsigned i = 0; i < V.nconns; i++) {
    const cv_peer_t *pe = &V.peers[i];
    if (!pe->joined || pe->dead || V.conns[i].state != LG_C_OPEN) continue;
    uint64_t top = V.convs[pe->conv].top;
    if (pe->last_seq < top) miss += top - pe->last_seq;
  }
  return miss;
}

static uint64_t cv_fan_missing(void) {
  uint64_t miss = 0, top = V.convs[0].base + V.fan_sent;
  for (unsigned i = 0; i < V.o.conns; i++) {
    const cv_peer_t *pe = &V.peers[i];
    if (pe->joined && !pe->dead && V.conns[i].state == LG_C_OPEN && pe->last_seq < top) miss += top - pe->last_seq;
  }
  return miss;
}

static void cv_finish_check(void) {
  if (V.phase == CV_P_TEARDOWN && V.eng.live_handles == 0) {
    V.phase = CV_P_CLOSED;
    uv_timer_stop(&V.tick);
    uv_close((uv_handle_t *)&V.tick, NULL);
    uv_close((uv_handle_t *)&V.rtimer, NULL);
    uv_close((uv_handle_t *)&V.rcheck, NULL);
    if (V.rfd >= 0) uv_close((uv_handle_t *)&V.rpoll, cv_on_rpoll_closed);
    uv_close((uv_handle_t *)&V.sigint, NULL);
    uv_close((uv_handle_t *)&V.sigterm, NULL);
    lg_engine_dispose(&V.eng);
  }
}

static void cv_report(void);

static void cv_tick_resume(uint64_t now) {
  lg_conn_t *a = &V.conns[0];
  switch (V.rs) {
  case RS_SEED:
    if (now - V.t0 > (uint64_t)(V.o.connect_timeout * NS_PER_S) + 30 * NS_PER_S)
      cv_fail_run("resume: seeding (connect, send, join) did not finish");
    break;
  case RS_CLOSE_A:
  case RS_REOPEN:
    if (a->handle_live == 0) {
      if (V.rs == RS_CLOSE_A) {
        cv_resume_step(RS_FILL, now);
        lg_conn_start(&V.conns[1]);
      } else {
        cv_resume_reopen();
      }
    } else if (now - V.t_step > 3 * NS_PER_S) {
      lg_conn_abort(a); /* the server did not finish the closing handshake: drop it */
    }
    break;
  case RS_FILL:
    if (now - V.t_last_progress > 30 * NS_PER_S && now - V.t_step > 30 * NS_PER_S)
      cv_fail_run("resume: no ack for 30 s while filling");
    break;
  case RS_JOINING:
    if (now - V.t_step > 60 * NS_PER_S) cv_fail_run("resume: no sync within 60 s of reconnecting");
    break;
  case RS_DONE: break;
  }
}

static void cv_on_tick(uv_timer_t *t) {
  (void)t;
  uint64_t now = uv_hrtime();
  if (now >= V.t_hard) {
    cv_set_fatal("hard deadline reached; gave up");
    cv_report();
    fprintf(stderr, "chorus-loadgen: hard deadline reached in phase %d; giving up\n", (int)V.phase);
    exit(1);
  }
  if (V.o.mode != CV_RESUME) {
    if ((V.phase == CV_P_RUN || V.phase == CV_P_DRAIN) && !V.measuring_started && now >= V.t_meas0) {
      V.measuring_started = 1;
      cv_cpu_snapshot(0);
    }
    if ((V.phase == CV_P_RUN || V.phase == CV_P_DRAIN) && V.measuring_started && !V.measuring_done &&
        now >= V.t_meas1) {
      V.measuring_done = 1;
      cv_cpu_snapshot(1);
    }
  }
  switch (V.phase) {
  case CV_P_CONNECT:
    if (V.t_joined) {
      cv_maybe_begin(now);
    } else if (now - V.t0 > (uint64_t)((V.o.connect_timeout + V.o.join_timeout) * NS_PER_S)) {
      char m[120];
      snprintf(m, sizeof(m), "%u of %u connections did not join in time", V.members - V.joined, V.members);
      cv_note_error(m);
      for (unsigned i = 0; i < V.nconns; i++) {
        cv_peer_t *pe = &V.peers[i];
        if (pe->role != CV_R_PUB && !pe->resolved) {
          pe->dead = 1;
          lg_conn_abort(&V.conns[i]);
          pe->resolved = 1;
          V.resolved++;
        }
      }
      V.t_joined = now; /* the next ticks settle and begin with those that joined */
      V.join_s = (double)(now - V.t0) / 1e9;
    }
    break;
  case CV_P_RUN:
    if (V.o.mode == CV_CONVFAN && V.fan_sent > V.fan_done && now - V.t_last_progress > 10 * NS_PER_S) {
      V.stalled = 1;
      V.undelivered = cv_fan_missing();
      cv_note_error("convfan: no message completed for 10 s (stalled)");
      cv_fail_run("convfan: stalled");
      break;
    }
    if (V.o.mode == CV_SEND && V.inflight > 0 && now - V.t_last_progress > 10 * NS_PER_S) {
      V.stalled = 1;
      V.timeouts = V.inflight;
      cv_fail_run("send: no ack for 10 s (stalled)");
      break;
    }
    if (now >= V.t_meas1) {
      uint64_t worst = V.hist.max > V.hist2.max ? V.hist.max : V.hist2.max;
      uint64_t grace = 3 * worst;
      if (grace < 3 * NS_PER_S) grace = 3 * NS_PER_S;
      if (grace > 30 * NS_PER_S) grace = 30 * NS_PER_S;
      V.phase = CV_P_DRAIN;
      V.t_phase_end = now + grace;
      cv_rate_stop();
    }
    break;
  case CV_P_DRAIN: {
    int done;
    if (V.o.mode == CV_CONVFAN) done = V.fan_done == V.fan_sent && V.inflight == 0;
    else done = V.inflight == 0 && cv_send_missing() == 0;
    if (done || now >= V.t_phase_end) {
      if (!done) {
        V.timeouts = V.inflight;
        V.undelivered = V.o.mode == CV_CONVFAN ? cv_fan_missing() : cv_send_missing();
        cv_note_error("acks or broadcasts still missing after the drain time");
      }
      if (V.o.mode == CV_SEND) {
        for (unsigned k = 0; k < V.o.convs; k++) {
          const cv_conv_t *cv = &V.convs[k];
          if (cv->based && cv->acks != cv->top - cv->base && !V.timeouts) {
            cv_note_error("a conversation's acks do not match its seq range");
            break;
          }
        }
      }
      cv_teardown();
    }
    break;
  }
  case CV_P_RESUME: cv_tick_resume(now); break;
  case CV_P_TEARDOWN:
    if (now >= V.t_phase_end)
      for (unsigned i = 0; i < V.nconns; i++) lg_conn_abort(&V.conns[i]);
    break;
  case CV_P_CLOSED: break;
  }
  cv_finish_check();
}

static void cv_on_signal(uv_signal_t *s, int signum) {
  (void)s;
  if (V.phase >= CV_P_TEARDOWN) exit(1);
  cv_fail_run(signum == SIGTERM ? "terminated (SIGTERM)" : "interrupted (SIGINT)");
}

/* ---- report ----------------------------------------------------------------------------------- */

static void cv_lat(ch_buf_t *b, const char *pfx, const lg_hist_t *h) {
  ch_buf_printf(b, ",\"%sp50_us\":%.1f,\"%sp99_us\":%.1f,\"%sp999_us\":%.1f,\"%smax_us\":%.1f", pfx,
                lg_hist_quantile(h, 0.50) / 1e3, pfx, lg_hist_quantile(h, 0.99) / 1e3, pfx,
                lg_hist_quantile(h, 0.999) / 1e3, pfx, h->max / 1e3);
}

static void cv_report(void) {
  static const char *names[] = {"send", "convfan", "resume"};
  ch_buf_t b = CH_BUF_INIT;
  double win_s = 0, cpu = 0, srv = -1, d = V.o.duration;
  if (V.measuring_started && V.measuring_done && V.t_cpu1 > V.t_cpu0) {
    win_s = (double)(V.t_cpu1 - V.t_cpu0) / 1e9;
    double used = cv_tv(&V.ru1.ru_utime) + cv_tv(&V.ru1.ru_stime) - cv_tv(&V.ru0.ru_utime) - cv_tv(&V.ru0.ru_stime);
    cpu = 100.0 * used / win_s;
    if (V.o.server_pid && V.srv1 >= V.srv0)
      srv = 100.0 * (double)(V.srv1 - V.srv0) / (double)sysconf(_SC_CLK_TCK) / win_s;
  }
  ch_buf_printf(&b, "{\"mode\":\"%s\",\"server\":\"", names[V.o.mode]);
  ch_buf_append_json_str(&b, V.o.label, strlen(V.o.label));
  ch_buf_append_str(&b, "\"");
  switch (V.o.mode) {
  case CV_SEND:
    ch_buf_printf(&b, ",\"conns\":%u,\"open\":%u,\"conversations\":%u,\"window\":%u,\"size\":%u,\"rate\":%.0f",
                  V.o.conns, V.joined - V.dead, V.o.convs, V.o.window, V.o.size, V.o.rate);
    ch_buf_printf(&b, ",\"duration_s\":%g,\"join_s\":%.2f,\"settle_s\":%.2f,\"sent\":%" PRIu64 ",\"sent_per_s\":%.0f", d, V.join_s, V.settle_s,
                  V.sent_w, V.sent_w / d);
    ch_buf_printf(&b, ",\"msgs\":%" PRIu64 ",\"msgs_per_s\":%.0f", V.acked_w, V.acked_w / d);
    cv_lat(&b, "", &V.hist);
    ch_buf_printf(&b, ",\"late\":%" PRIu64 ",\"bcasts\":%" PRIu64 ",\"bcasts_per_s\":%.0f", V.late, V.bcasts_w,
                  V.bcasts_w / d);
    cv_lat(&b, "bcast_", &V.hist2);
    break;
  case CV_CONVFAN:
    ch_buf_printf(&b,
                  ",\"subs\":%u,\"open\":%u,\"window\":%u,\"size\":%u,\"duration_s\":%g,\"join_s\":%.2f,\"settle_s\":%.2f",
                  V.o.conns, V.participants - V.dead, V.o.window, V.o.size, d, V.join_s, V.settle_s);
    ch_buf_printf(&b,
                  ",\"published\":%" PRIu64 ",\"msgs\":%" PRIu64 ",\"msgs_per_s\":%.0f,\"deliveries\":%" PRIu64
                  ",\"deliveries_per_s\":%.0f",
                  V.fan_sent, V.fan_msgs_w, V.fan_msgs_w / d, V.bcasts_w, V.bcasts_w / d);
    cv_lat(&b, "", &V.hist);
    cv_lat(&b, "ack_", &V.hist2);
    ch_buf_printf(&b, ",\"stalled\":%s", V.stalled ? "true" : "false");
    break;
  case CV_RESUME: {
    double s[CV_MAX_SAMPLES];
    unsigned k = V.reps < CV_MAX_SAMPLES ? V.reps : CV_MAX_SAMPLES;
    memcpy(s, V.samples_ms, k * sizeof(double));
    qsort(s, k, sizeof(double), cv_cmp_double);
    ch_buf_printf(&b, ",\"n\":%u,\"size\":%u,\"window\":%u,\"repeat\":%u,\"resumes\":%u,\"since\":%" PRIu64,
                  V.o.n, V.o.size, V.o.window, V.o.repeat, V.reps, V.since);
    if (k) {
      ch_buf_printf(&b, ",\"resume_ms\":%.2f,\"resume_min_ms\":%.2f,\"resume_max_ms\":%.2f,\"resume_first_ms\":%.2f",
                    k % 2 ? s[k / 2] : (s[k / 2 - 1] + s[k / 2]) / 2, s[0], s[k - 1], V.samples_ms[0]);
      ch_buf_append_str(&b, ",\"samples_ms\":[");
      for (unsigned i = 0; i < k; i++) ch_buf_printf(&b, "%s%.2f", i ? "," : "", V.samples_ms[i]);
      ch_buf_append_str(&b, "]");
    }
    double fill_s = V.t_fill1 > V.t_fill0 ? (double)(V.t_fill1 - V.t_fill0) / 1e9 : 0;
    ch_buf_printf(&b, ",\"received\":%" PRIu64 ",\"sync_bytes\":%" PRIu64 ",\"fill_msgs_per_s\":%.0f", V.received,
                  V.sync_bytes, fill_s > 0 ? V.fill_acked / fill_s : 0);
    cv_lat(&b, "fill_ack_", &V.hist2);
    break;
  }
  }
  if (V.o.mode != CV_RESUME)
    ch_buf_printf(&b,
                  ",\"losses\":%" PRIu64 ",\"lost\":%" PRIu64 ",\"out_of_order\":%" PRIu64 ",\"undelivered\":%" PRIu64
                  ",\"timeouts\":%" PRIu64 ",\"presence_frames\":%" PRIu64,
                  V.lost + V.out_of_order + V.undelivered, V.lost, V.out_of_order, V.undelivered, V.timeouts,
                  V.presence);
  ch_buf_printf(&b, ",\"errors\":%" PRIu64 ",\"corrupt\":%" PRIu64, V.errors, V.corrupt);
  ch_buf_printf(&b, ",\"connect_retries\":%" PRIu64 ",\"closed_by_server\":%" PRIu64, V.eng.st.retries,
                V.eng.st.closed_by_peer);
  ch_buf_printf(&b, ",\"gen_cpu_pct\":%.1f", cpu);
  if (srv >= 0) ch_buf_printf(&b, ",\"server_cpu_pct\":%.1f", srv);
  if (V.o.server_pid) ch_buf_printf(&b, ",\"server_rss_kb\":%ld", lg_proc_rss_kb(V.o.server_pid));
  if (V.fatal[0] || V.first_error[0]) {
    const char *e = V.fatal[0] ? V.fatal : V.first_error;
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

int lg_conv_is_mode(const char *m) {
  return strcmp(m, "send") == 0 || strcmp(m, "convfan") == 0 || strcmp(m, "resume") == 0;
}

void lg_conv_usage(FILE *f) {
  fputs("conversation modes (chorus's native protocol on /ws; \"{i}\" in the URL = connection index):\n"
        "  send    --url 'ws://127.0.0.1:P/ws?token=bench:d{i}' -c CONNS -w WINDOW -s SIZE -d SECONDS\n"
        "          [--conversations K] [--rate R]\n"
        "          CONNS clients join K conversations (client i -> i % K) and each keeps WINDOW\n"
        "          messages with request ids in flight; reports acked msgs/s, ack latency, broadcasts\n"
        "          received (losses by seq). --rate R: open loop, R msgs/s in total, latency from due time\n"
        "  convfan --url ... -c SUBS -w WINDOW -s SIZE -d SECONDS\n"
        "          SUBS clients join one conversation, one publisher keeps at most WINDOW messages not\n"
        "          yet delivered to all; reports deliveries/s, delivery latency, losses (compare: fanout)\n"
        "  resume  --url ... -n N [-w WINDOW] [--repeat K]\n"
        "          A joins and leaves; B sends N messages (acks awaited); A rejoins with since+epoch:\n"
        "          time from the join to the sync holding all N (exactly N, in order); K times, median\n"
        "  conversation options: -s is the content size (32..1048576) [32]; --conversations K [= CONNS];\n"
        "          --rate MSGS_PER_S [closed loop]; -n N [10000]; --repeat K [5]; --join-timeout SEC [300];\n"
        "          --settle SEC: after the joins, wait until no presence frame came for SEC [0.5]\n",
        f);
}

static int cv_parse_args(int argc, char **argv, cv_opts_t *o) {
  enum { O_URL = 256, O_PID, O_LABEL, O_WARMUP, O_BATCH, O_RETRIES, O_CTO, O_JTO, O_CONVS, O_RATE, O_REPEAT, O_SETTLE };
  static const struct option longs[] = {
      {"conns", required_argument, NULL, 'c'},         {"window", required_argument, NULL, 'w'},
      {"size", required_argument, NULL, 's'},          {"duration", required_argument, NULL, 'd'},
      {"count", required_argument, NULL, 'n'},         {"help", no_argument, NULL, 'h'},
      {"url", required_argument, NULL, O_URL},         {"server-pid", required_argument, NULL, O_PID},
      {"label", required_argument, NULL, O_LABEL},     {"warmup", required_argument, NULL, O_WARMUP},
      {"batch", required_argument, NULL, O_BATCH},     {"retries", required_argument, NULL, O_RETRIES},
      {"connect-timeout", required_argument, NULL, O_CTO}, {"join-timeout", required_argument, NULL, O_JTO},
      {"conversations", required_argument, NULL, O_CONVS}, {"rate", required_argument, NULL, O_RATE},
      {"repeat", required_argument, NULL, O_REPEAT},   {"settle", required_argument, NULL, O_SETTLE},
      {NULL, 0, NULL, 0}};
  memset(o, 0, sizeof(*o));
  o->mode = strcmp(argv[1], "send") == 0 ? CV_SEND : strcmp(argv[1], "convfan") == 0 ? CV_CONVFAN : CV_RESUME;
  o->label = "unknown";
  o->conns = 100;
  o->window = 16;
  o->size = 32;
  o->duration = 5;
  o->warmup = 1;
  o->batch = 128;
  o->retries = 5;
  o->connect_timeout = 120;
  o->join_timeout = 300;
  o->settle = 0.5;
  o->n = 10000;
  o->repeat = 5;
  optind = 2;
  int ch;
  unsigned u;
  while ((ch = getopt_long(argc, argv, "c:w:s:d:n:h", longs, NULL)) != -1) {
    const char *bad = NULL;
    switch (ch) {
    case 'c': if (lg_parse_uint(optarg, 1, 1000000, &o->conns) < 0) bad = "-c"; break;
    case 'w': if (lg_parse_uint(optarg, 1, 100000, &o->window) < 0) bad = "-w"; break;
    case 's': if (lg_parse_uint(optarg, LG_PFX, LG_MAX_PAYLOAD, &o->size) < 0) bad = "-s (32..1048576)"; break;
    case 'd': if (lg_parse_sec(optarg, 0.1, 3600, &o->duration) < 0) bad = "-d"; break;
    case 'n': if (lg_parse_uint(optarg, 1, 10000000, &o->n) < 0) bad = "-n"; break;
    case 'h':
      lg_conv_usage(stdout);
      exit(0);
    case O_URL: o->url_s = optarg; break;
    case O_PID:
      if (lg_parse_uint(optarg, 1, 0x7fffffff, &u) < 0) bad = "--server-pid";
      o->server_pid = (long)u;
      break;
    case O_LABEL: o->label = optarg; break;
    case O_WARMUP: if (lg_parse_sec(optarg, 0, 600, &o->warmup) < 0) bad = "--warmup"; break;
    case O_BATCH: if (lg_parse_uint(optarg, 1, 100000, &o->batch) < 0) bad = "--batch"; break;
    case O_RETRIES:
      if (lg_parse_uint(optarg, 1, 100, &u) < 0) bad = "--retries";
      o->retries = (int)u;
      break;
    case O_CTO: if (lg_parse_sec(optarg, 1, 3600, &o->connect_timeout) < 0) bad = "--connect-timeout"; break;
    case O_JTO: if (lg_parse_sec(optarg, 1, 3600, &o->join_timeout) < 0) bad = "--join-timeout"; break;
    case O_CONVS: if (lg_parse_uint(optarg, 1, 1000000, &o->convs) < 0) bad = "--conversations"; break;
    case O_RATE: if (lg_parse_sec(optarg, 1, 1e8, &o->rate) < 0) bad = "--rate"; break;
    case O_SETTLE: if (lg_parse_sec(optarg, 0, 600, &o->settle) < 0) bad = "--settle"; break;
    case O_REPEAT: if (lg_parse_uint(optarg, 1, CV_MAX_SAMPLES, &o->repeat) < 0) bad = "--repeat (1..64)"; break;
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
  if (!o->url_s) {
    fprintf(stderr, "chorus-loadgen: %s needs --url\n", argv[1]);
    return CH_EINVAL;
  }
  char err[256];
  if (lg_url_parse(o->url_s, &o->url, err, sizeof(err)) < 0) {
    fprintf(stderr, "chorus-loadgen: %s\n", err);
    return CH_EINVAL;
  }
  if (o->mode == CV_SEND) {
    if (o->convs == 0) o->convs = o->conns;
    if (o->convs > o->conns) {
      fprintf(stderr, "chorus-loadgen: --conversations cannot exceed -c\n");
      return CH_EINVAL;
    }
  } else if (o->convs || o->rate > 0) {
    fprintf(stderr, "chorus-loadgen: --conversations and --rate are for send\n");
    return CH_EINVAL;
  }
  if (o->mode != CV_SEND) o->convs = 1;
  return 0;
}

/* ---- main ------------------------------------------------------------------------------------- */

int lg_conv_main(int argc, char **argv) {
  int rc = 1;
  if (cv_parse_args(argc, argv, &V.o) < 0) return 2;
  signal(SIGPIPE, SIG_IGN);
  V.nconns = V.o.mode == CV_SEND ? V.o.conns : V.o.mode == CV_CONVFAN ? V.o.conns + 1 : 2;
  V.members = V.o.mode == CV_RESUME ? 0 : V.o.conns;
  lg_raise_nofile(V.nconns);
  V.loop = uv_default_loop();
  if (lg_engine_init(&V.eng, V.loop, V.o.batch, V.o.retries, 10000) < 0) {
    fprintf(stderr, "chorus-loadgen: cannot initialise (getrandom failed)\n");
    return 1;
  }
  uint8_t rnd[4];
  if (lg_random(rnd, sizeof(rnd)) < 0) return 1;
  snprintf(V.nonce, sizeof(V.nonce), "%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3]);
  V.filler = lg_filler_table();
  V.rfd = -1;
  lg_hist_reset(&V.hist);
  lg_hist_reset(&V.hist2);

  V.convs = ch_xcalloc(V.o.convs, sizeof(*V.convs));
  for (unsigned k = 0; k < V.o.convs; k++) {
    cv_conv_t *cv = &V.convs[k];
    const char *kind = V.o.mode == CV_SEND ? "s" : V.o.mode == CV_CONVFAN ? "fan" : "resume";
    int n = snprintf(cv->id, sizeof(cv->id), "bench-%s-%s-%u", V.nonce, kind, k);
    cv->len = (size_t)n;
  }
  V.conns = ch_xcalloc(V.nconns, sizeof(*V.conns));
  V.peers = ch_xcalloc(V.nconns, sizeof(*V.peers));
  unsigned senders = V.o.mode == CV_SEND ? V.nconns : 1 + (V.o.mode == CV_RESUME);
  V.slot_pool = ch_xmalloc((size_t)senders * V.o.window * sizeof(*V.slot_pool));
  for (size_t i = 0; i < (size_t)senders * V.o.window; i++) V.slot_pool[i].n = CV_FREE;
  if (V.o.mode == CV_CONVFAN) V.fan_recv = ch_xcalloc(V.o.window, sizeof(*V.fan_recv));
  unsigned si = 0;
  for (unsigned i = 0; i < V.nconns; i++) {
    cv_peer_t *pe = &V.peers[i];
    switch (V.o.mode) {
    case CV_SEND:
      pe->role = CV_R_CLIENT;
      pe->conv = i % V.o.convs;
      break;
    case CV_CONVFAN: pe->role = i == V.o.conns ? CV_R_PUB : CV_R_SUB; break;
    case CV_RESUME: pe->role = i == 0 ? CV_R_A : CV_R_B; break;
    }
    if (pe->role == CV_R_CLIENT || pe->role == CV_R_PUB || pe->role == CV_R_A || pe->role == CV_R_B)
      pe->slots = &V.slot_pool[(size_t)si++ * V.o.window];
    lg_conn_init(&V.conns[i], &V.eng, &V.o.url, &cv_ops, pe);
    V.conns[i].u_index = i;
  }
  if (V.o.mode == CV_CONVFAN) V.pub = &V.conns[V.o.conns];

  V.t0 = uv_hrtime();
  V.eng.connect_deadline = V.t0 + (uint64_t)(V.o.connect_timeout * NS_PER_S);
  double hard_s = V.o.connect_timeout + V.o.join_timeout + V.o.warmup + V.o.duration + 30 + 3 + 10;
  if (V.o.mode == CV_RESUME) hard_s = V.o.connect_timeout + 60 + V.o.n * 0.01 + V.o.repeat * 70.0;
  V.t_hard = V.t0 + (uint64_t)(hard_s * NS_PER_S);
  V.phase = V.o.mode == CV_RESUME ? CV_P_RESUME : CV_P_CONNECT;
  uv_timer_init(V.loop, &V.tick);
  uv_timer_start(&V.tick, cv_on_tick, 5, 5);
  uv_timer_init(V.loop, &V.rtimer);
  uv_check_init(V.loop, &V.rcheck);
  uv_signal_init(V.loop, &V.sigint);
  uv_signal_start(&V.sigint, cv_on_signal, SIGINT);
  uv_unref((uv_handle_t *)&V.sigint);
  uv_signal_init(V.loop, &V.sigterm);
  uv_signal_start(&V.sigterm, cv_on_signal, SIGTERM);
  uv_unref((uv_handle_t *)&V.sigterm);
  if (V.o.mode == CV_RESUME) {
    V.rs = RS_SEED;
    lg_conn_start(&V.conns[0]);
  } else {
    for (unsigned i = 0; i < V.o.conns; i++) lg_conn_start(&V.conns[i]); /* convfan: the publisher later */
  }

  uv_run(V.loop, UV_RUN_DEFAULT);

  if (!V.measuring_done) cv_set_fatal("the run ended before the measurement was complete");
  if (V.o.mode == CV_SEND && V.acked_w == 0) cv_set_fatal("send: no ack inside the measured window");
  if (V.o.mode == CV_CONVFAN && V.bcasts_w == 0) cv_set_fatal("convfan: no delivery inside the window");
  if (V.o.mode == CV_RESUME && V.reps < V.o.repeat) cv_set_fatal("resume: not every resume completed");
  cv_report();
  if (V.fatal[0]) {
    fprintf(stderr, "chorus-loadgen: %s failed: %s\n", argv[1], V.fatal);
  } else if (V.errors || V.lost || V.out_of_order || V.undelivered || V.timeouts || V.corrupt) {
    fprintf(stderr,
            "chorus-loadgen: %" PRIu64 " errors, %" PRIu64 " lost, %" PRIu64 " out of order, %" PRIu64
            " undelivered, %" PRIu64 " unanswered (first: %s)\n",
            V.errors, V.lost, V.out_of_order, V.undelivered, V.timeouts, V.first_error[0] ? V.first_error : "-");
  } else {
    rc = 0;
  }
  for (unsigned i = 0; i < V.nconns; i++) lg_conn_dispose(&V.conns[i]);
  free(V.conns);
  free(V.peers);
  free(V.slot_pool);
  free(V.convs);
  free(V.fan_recv);
  uv_loop_close(V.loop);
  return rc;
}
