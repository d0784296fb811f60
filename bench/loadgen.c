/*
 * loadgen.c — chorus-loadgen: the WebSocket load generator behind `make bench`.
 *
 *   chorus-loadgen echo   --url ws://127.0.0.1:P/echo -c CONNS -p PIPELINE -s SIZE -d SECONDS
 *   chorus-loadgen fanout --sub-url ws://.../bench/sub?channel=x --pub-url ws://.../bench/pub?channel=x
 *                         -c SUBS -w WINDOW -s SIZE -d SECONDS
 *   chorus-loadgen idle   --url ws://... -c CONNS --server-pid PID -d SECONDS
 *   chorus-loadgen send|convfan|resume ...   chorus's native protocol: lg_conv.c
 *   chorus-loadgen agent-ttfc|agent-fan ...   chorus's agent relay: lg_agent.c
 *
 * Each run prints exactly one JSON line on stdout (also when it fails: then
 * with "error"), and messages on stderr. Exit status: 0 on a clean run; 1 when
 * the run failed or saw errors or losses; 2 on a usage error (no JSON).
 *
 * Run phases (one libuv loop, one thread; a 5 ms tick timer moves between
 * phases, the connection callbacks do the work):
 *
 *   CONNECT ─all resolved─> [SYNC: fanout only] ─> RUN ─t_end─> DRAIN ─> TEARDOWN ─> CLOSED
 *                                                  |warmup|measure d s|
 *
 * echo:   every connection keeps PIPELINE messages in flight; each echo is
 *         checked (seq in order, length, filler) and its round trip recorded;
 *         a new message leaves at once while the window is open.
 * fanout: SUBS subscribers and one publisher. A sync phase first publishes
 *         probes until every subscriber has seen the latest one (so every
 *         subscription is live and no probe is queued before seq 0). Then the publisher keeps at most WINDOW messages
 *         in flight; message s is complete when every live subscriber has it
 *         (or has provably missed it: a later seq arrived). Per subscriber, a
 *         seq above the expected one counts the gap as lost, a seq below as
 *         out of order; a correct server has neither.
 * idle:   CONNS connections opened and held; the server's VmRSS is read
 *         before connecting and after the hold; a ping to every connection
 *         then counts the ones still alive.
 *
 * Latency samples go into a fixed histogram (lg_hist_t): the hot path does a
 * clock read per socket read, a frame build in a reused buffer and a counter
 * increment; it never allocates.
 *
 * Everything is bounded: connects (per attempt and overall), sync (15 s), the
 * drain after the window (3x the worst latency seen, 3..30 s: late is not
 * lost), stalls (10 s without progress), the closing handshakes (3 s), and a
 * hard watchdog that prints the report and exits 1.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/err.h"
#include "lg.h"

#define NS_PER_S 1000000000ull
#define NS_PER_MS 1000000ull

typedef enum { M_ECHO, M_FANOUT, M_IDLE } lg_mode_t;
typedef enum { P_CONNECT, P_SYNC, P_RUN, P_DRAIN, P_PING, P_TEARDOWN, P_CLOSED } lg_phase_t;

typedef struct lg_opts_s {
  lg_mode_t mode;
  const char *label;       /* "server" in the JSON */
  const char *url_s, *sub_s, *pub_s;
  lg_url_t url, sub, pub;
  unsigned conns, pipeline, window, size, batch;
  int retries;
  double duration, warmup, connect_timeout;
  long server_pid;         /* 0: none */
} lg_opts_t;

typedef struct lg_run_s {
  lg_opts_t o;
  uv_loop_t *loop;
  lg_engine_t eng;
  uv_timer_t tick;
  uv_signal_t sigint, sigterm; /* both end the run early (report, then exit 1) */
  lg_conn_t *conns;        /* owned array: echo/idle o.conns; fanout o.conns subs + 1 publisher */
  unsigned nconns;
  lg_conn_t *pub;          /* fanout: &conns[o.conns] */
  lg_phase_t phase;
  unsigned resolved;       /* connect phase: opened or failed */
  unsigned open;           /* connections that opened (fanout: subscribers still in the sync) */
  unsigned gone;           /* echo/idle: connections that opened and later failed */
  uint64_t t0, t_run, t_meas0, t_meas1, t_phase_end, t_hard;
  int measuring_started, measuring_done;
  struct rusage ru0, ru1;
  uint64_t srv0, srv1;     /* server utime+stime, clock ticks */
  uint64_t t_cpu0, t_cpu1;
  lg_hist_t hist;
  uint64_t msgs;           /* echo: round trips in window; fanout: messages completed in window */
  uint64_t deliveries;     /* fanout: deliveries in window */
  uint64_t errors;
  uint64_t corrupt;        /* messages with a wrong length, seq or filler */
  char first_error[160];
  char fatal[200];         /* non-empty: the run failed */
  const uint8_t *tmpl;     /* lg_filler_table(): payload filler; static, not owned */
  /* echo */
  uint64_t inflight;
  uint64_t timeouts;
  /* fanout */
  uint32_t *slots;         /* owned, o.window: receipts of in-flight seq s at s % window */
  uint64_t sent, done;     /* publisher: messages sent; oldest incomplete seq */
  unsigned participants, dead, synced;
  uint64_t lost, out_of_order, pub_replies, last_progress;
  uint64_t undelivered;    /* deliveries still missing at a stall or at the end of the drain */
  uint64_t probes, next_probe; /* sync probes sent; time of the next one (ns) */
  int stalled;
  /* idle */
  long rss0_kb, rss1_kb;
  unsigned alive;
} lg_run_t;

static lg_run_t R;

/* ---- small helpers ------------------------------------------------------------------------ */

static void lg_note_error(const char *why) {
  R.errors++;
  lg_keep_first_error(R.first_error, sizeof(R.first_error), why);
}

/* The run failed: keep the first reason, with the first error seen if any. */
static void lg_set_fatal(const char *why) { lg_keep_fatal(R.fatal, sizeof(R.fatal), why, R.first_error); }

static double lg_tv(const struct timeval *tv) { return (double)tv->tv_sec + tv->tv_usec / 1e6; }

static void lg_cpu_snapshot(int end) {
  struct rusage *ru = end ? &R.ru1 : &R.ru0;
  getrusage(RUSAGE_SELF, ru);
  if (end) {
    R.t_cpu1 = uv_hrtime();
    if (R.o.server_pid) R.srv1 = lg_proc_cpu_ticks(R.o.server_pid);
  } else {
    R.t_cpu0 = uv_hrtime();
    if (R.o.server_pid) R.srv0 = lg_proc_cpu_ticks(R.o.server_pid);
  }
}

/* Build one payload message on c: seq, now, filler. Returns 0 or CH_ECLOSED. */
static int lg_send_payload(lg_conn_t *c, uint64_t seq, uint64_t now) {
  uint8_t *p = lg_conn_frame_begin(c, 0x1, R.o.size);
  if (p == NULL) return CH_ECLOSED;
  memcpy(p + LG_PFX, R.tmpl + LG_PFX, R.o.size - LG_PFX);
  lg_payload_stamp(p, seq, now);
  lg_conn_frame_end(c);
  return 0;
}

/* Count c once as settled in the connect phase; returns 1 the first time. */
static int lg_resolve(lg_conn_t *c) {
  if (c->u_resolved) return 0;
  c->u_resolved = 1;
  return 1;
}

static void lg_teardown(void) {
  if (R.phase >= P_TEARDOWN) return;
  R.phase = P_TEARDOWN;
  R.eng.stopping = 1;
  R.t_phase_end = uv_hrtime() + 3 * NS_PER_S;
  for (unsigned i = 0; i < R.nconns; i++) lg_conn_close(&R.conns[i]);
}

static void lg_begin_window(uint64_t now) {
  R.phase = P_RUN;
  R.t_run = now;
  R.t_meas0 = now + (uint64_t)(R.o.warmup * NS_PER_S);
  R.t_meas1 = R.t_meas0 + (uint64_t)(R.o.duration * NS_PER_S);
}

/* ---- echo --------------------------------------------------------------------------------- */

static void echo_begin(uint64_t now) {
  if (R.open == R.gone) {
    lg_set_fatal("no connection could be opened");
    lg_teardown();
    return;
  }
  lg_begin_window(now);
  for (unsigned i = 0; i < R.nconns; i++) {
    lg_conn_t *c = &R.conns[i];
    if (c->state != LG_C_OPEN) continue;
    for (unsigned k = 0; k < R.o.pipeline; k++) {
      if (lg_send_payload(c, c->u_next_send, now) == 0) {
        c->u_next_send++;
        R.inflight++;
      }
    }
  }
}

static void echo_on_open(lg_conn_t *c) {
  c->u_opened = 1;
  R.open++;
  if (R.phase == P_CONNECT && lg_resolve(c) && ++R.resolved == R.nconns) echo_begin(uv_hrtime());
}

static void echo_on_fail(lg_conn_t *c, const char *why) {
  if (R.phase >= P_TEARDOWN) return;
  lg_note_error(why);
  if (c->u_opened) R.gone++;
  if (R.phase == P_CONNECT) {
    if (lg_resolve(c) && ++R.resolved == R.nconns) echo_begin(uv_hrtime());
    return;
  }
  if (R.phase == P_RUN || R.phase == P_DRAIN) {
    R.inflight -= c->u_next_send - c->u_next_recv;
    if (R.gone == R.open) {
      lg_set_fatal("echo: every connection was lost");
      lg_teardown();
    }
  }
}

static void echo_on_message(lg_conn_t *c, int opcode, const uint8_t *pfx, uint64_t len, int tail_ok,
                            uint64_t now) {
  if (R.phase != P_RUN && R.phase != P_DRAIN) return;
  uint64_t seq = 0, ts = 0;
  if (opcode != 0x1 || len != R.o.size || !tail_ok || lg_payload_parse(pfx, &seq, &ts) < 0 ||
      seq != c->u_next_recv) {
    R.corrupt++;
    lg_note_error("echo: reply differs from the message sent (or out of order)");
  } else if (now >= R.t_meas0 && now < R.t_meas1) {
    R.msgs++;
    lg_hist_record(&R.hist, now - ts);
  }
  if (c->u_next_recv < c->u_next_send) {
    c->u_next_recv++;
    R.inflight--;
  }
  if (R.phase == P_RUN && now < R.t_meas1) {
    if (lg_send_payload(c, c->u_next_send, now) == 0) {
      c->u_next_send++;
      R.inflight++;
    }
  }
}

static const lg_ops_t echo_ops = {echo_on_open, echo_on_message, NULL, echo_on_fail, NULL};

/* ---- fanout ------------------------------------------------------------------------------- */

static void fanout_advance(uint64_t now);

static void fanout_pump(uint64_t now) {
  if (R.phase != P_RUN || now >= R.t_meas1) return;
  while (R.sent - R.done < R.o.window) {
    if (lg_send_payload(R.pub, R.sent, now) < 0) return;
    R.slots[R.sent % R.o.window] = R.dead;
    R.sent++;
  }
}

static void fanout_advance(uint64_t now) {
  while (R.done < R.sent && R.slots[R.done % R.o.window] >= R.participants) {
    R.done++;
    R.last_progress = now;
    if (now >= R.t_meas0 && now < R.t_meas1) R.msgs++;
  }
  fanout_pump(now);
}

/* Sync probes carry seq LG_SEQ_SYNC and their index where data carries a time.
 * They leave at growing intervals (50 ms doubling to 1 s) so a slow server is
 * not flooded; the sync ends once every subscriber has the latest probe, so no
 * probe is still queued ahead of message 0. */
static void fanout_send_sync(uint64_t now) {
  if (lg_send_payload(R.pub, LG_SEQ_SYNC, R.probes) == 0) R.probes++;
  uint64_t gap = (50 * NS_PER_MS) << (R.probes < 5 ? R.probes : 5);
  R.next_probe = now + (gap > NS_PER_S ? NS_PER_S : gap);
}

static void fanout_begin_sync(uint64_t now) {
  R.phase = P_SYNC;
  R.t_phase_end = now + 15 * NS_PER_S;
  fanout_send_sync(now);
}

/* 1 when every open subscriber has seen the latest probe. */
static int fanout_synced(void) {
  if (R.open == 0 || R.synced < R.open) return 0;
  for (unsigned i = 0; i < R.o.conns; i++) {
    const lg_conn_t *c = &R.conns[i];
    if (c->u_flag == 1 && c->state == LG_C_OPEN && c->u_next_send != R.probes) return 0;
  }
  return 1;
}

static void fanout_begin_run(uint64_t now) {
  /* Participants are the subscribers that saw a probe; the others are dropped. */
  for (unsigned i = 0; i < R.o.conns; i++) {
    lg_conn_t *c = &R.conns[i];
    if (c->state == LG_C_OPEN && c->u_flag == 0) {
      lg_note_error("fanout: subscriber never received a sync probe");
      lg_conn_abort(c);
    }
  }
  R.participants = R.synced;
  if (R.participants == 0) {
    lg_set_fatal("fanout: no subscriber received anything");
    lg_teardown();
    return;
  }
  lg_begin_window(now);
  R.last_progress = now;
  fanout_pump(now);
}

static void fanout_subs_resolved(uint64_t now) {
  if (R.open == 0) {
    lg_set_fatal("fanout: no subscriber could connect");
    lg_teardown();
    return;
  }
  R.eng.connect_deadline = now + 15 * NS_PER_S;
  lg_conn_start(R.pub);
}

static void fanout_on_open(lg_conn_t *c) {
  uint64_t now = uv_hrtime();
  if (c == R.pub) {
    fanout_begin_sync(now);
    return;
  }
  c->u_opened = 1;
  R.open++;
  if (lg_resolve(c) && ++R.resolved == R.o.conns) fanout_subs_resolved(now);
}

static void fanout_on_fail(lg_conn_t *c, const char *why) {
  uint64_t now = uv_hrtime();
  if (R.phase >= P_TEARDOWN) return;
  lg_note_error(why);
  if (c == R.pub) {
    lg_set_fatal("fanout: the publisher connection failed");
    lg_teardown();
    return;
  }
  if (R.phase == P_CONNECT || R.phase == P_SYNC) {
    /* Not (yet) a participant: take it out of the counts the sync waits on. */
    if (c->u_opened) R.open--;
    if (c->u_flag == 1) R.synced--;
    c->u_flag = 2;
    if (R.phase == P_CONNECT && lg_resolve(c) && ++R.resolved == R.o.conns) fanout_subs_resolved(now);
    return;
  }
  if (c->u_flag != 1) return; /* not a participant, or already dropped */
  /* A participant is gone: resolve what it still owed, count it out of the rest. */
  c->u_flag = 2;
  for (uint64_t m = c->u_next_recv; m < R.sent; m++) R.slots[m % R.o.window]++;
  R.dead++;
  if (R.dead == R.participants) {
    lg_set_fatal("fanout: every subscriber was lost");
    lg_teardown();
    return;
  }
  fanout_advance(now);
}

static void fanout_on_message(lg_conn_t *c, int opcode, const uint8_t *pfx, uint64_t len,
                              int tail_ok, uint64_t now) {
  if (c == R.pub) {
    R.pub_replies++;
    return;
  }
  uint64_t seq = 0, ts = 0;
  if (opcode != 0x1 || len != R.o.size || !tail_ok || lg_payload_parse(pfx, &seq, &ts) < 0) {
    R.corrupt++;
    lg_note_error("fanout: a delivered payload differs from the one published");
    return;
  }
  if (seq == LG_SEQ_SYNC) {
    /* u_next_send holds 1 + the latest probe index seen (unused otherwise in fanout). */
    if (R.phase == P_SYNC && c->u_flag != 2) {
      if (c->u_flag == 0) {
        c->u_flag = 1;
        R.synced++;
      }
      if (ts + 1 > c->u_next_send) c->u_next_send = ts + 1;
    }
    return;
  }
  if (c->u_flag != 1 || (R.phase != P_RUN && R.phase != P_DRAIN)) return;
  if (seq >= R.sent) {
    R.corrupt++;
    lg_note_error("fanout: delivered a sequence number never published");
    return;
  }
  if (seq < c->u_next_recv) {
    R.out_of_order++;
    return;
  }
  if (seq > c->u_next_recv) {
    R.lost += seq - c->u_next_recv;
    for (uint64_t m = c->u_next_recv; m < seq; m++) R.slots[m % R.o.window]++;
  }
  R.slots[seq % R.o.window]++;
  c->u_next_recv = seq + 1;
  if (now >= R.t_meas0 && now < R.t_meas1) {
    R.deliveries++;
    lg_hist_record(&R.hist, now - ts);
  }
  fanout_advance(now);
}

static const lg_ops_t fanout_ops = {fanout_on_open, fanout_on_message, NULL, fanout_on_fail, NULL};

/* Deliveries still missing from live participants (stall or drain timeout). */
static uint64_t fanout_missing(void) {
  uint64_t miss = 0;
  for (unsigned i = 0; i < R.o.conns; i++) {
    lg_conn_t *c = &R.conns[i];
    if (c->u_flag == 1 && c->state == LG_C_OPEN) miss += R.sent - c->u_next_recv;
  }
  return miss;
}

/* ---- idle --------------------------------------------------------------------------------- */

static void idle_begin(uint64_t now) {
  if (R.open == R.gone) {
    lg_set_fatal("idle: no connection could be opened");
    lg_teardown();
    return;
  }
  lg_begin_window(now);
  R.t_meas0 = now; /* no warm-up: the hold is the measurement */
  R.t_meas1 = now + (uint64_t)(R.o.duration * NS_PER_S);
}

static void idle_on_open(lg_conn_t *c) {
  c->u_opened = 1;
  R.open++;
  if (R.phase == P_CONNECT && lg_resolve(c) && ++R.resolved == R.nconns) idle_begin(uv_hrtime());
}

static void idle_on_fail(lg_conn_t *c, const char *why) {
  if (R.phase >= P_TEARDOWN) return;
  lg_note_error(why);
  if (c->u_opened) R.gone++;
  if (R.phase == P_CONNECT && lg_resolve(c) && ++R.resolved == R.nconns) idle_begin(uv_hrtime());
  if (R.phase != P_CONNECT && R.gone == R.open) {
    lg_set_fatal("idle: every connection was lost");
    lg_teardown();
  }
}

static void idle_on_message(lg_conn_t *c, int opcode, const uint8_t *pfx, uint64_t len, int tail_ok,
                            uint64_t now) {
  (void)c, (void)opcode, (void)pfx, (void)len, (void)tail_ok, (void)now;
}

static void idle_on_pong(lg_conn_t *c) {
  if (R.phase == P_PING && c->u_flag == 0) {
    c->u_flag = 1;
    R.alive++;
  }
}

static const lg_ops_t idle_ops = {idle_on_open, idle_on_message, idle_on_pong, idle_on_fail, NULL};

/* ---- the tick: phase changes and deadlines ------------------------------------------------ */

static void lg_finish_check(void) {
  if (R.phase == P_TEARDOWN && R.eng.live_handles == 0) {
    R.phase = P_CLOSED;
    uv_timer_stop(&R.tick);
    uv_close((uv_handle_t *)&R.tick, NULL);
    uv_close((uv_handle_t *)&R.sigint, NULL);
    uv_close((uv_handle_t *)&R.sigterm, NULL);
    lg_engine_dispose(&R.eng);
  }
}

static void lg_report(void);

static void lg_on_tick(uv_timer_t *t) {
  (void)t;
  uint64_t now = uv_hrtime();
  if (now >= R.t_hard) {
    lg_set_fatal("hard deadline reached; gave up");
    lg_report();
    fprintf(stderr, "chorus-loadgen: hard deadline reached in phase %d; giving up\n", (int)R.phase);
    exit(1);
  }
  if ((R.phase == P_RUN || R.phase == P_DRAIN) && !R.measuring_started && now >= R.t_meas0) {
    R.measuring_started = 1;
    lg_cpu_snapshot(0);
  }
  if ((R.phase == P_RUN || R.phase == P_DRAIN || R.phase == P_PING) && R.measuring_started &&
      !R.measuring_done && now >= R.t_meas1) {
    R.measuring_done = 1;
    lg_cpu_snapshot(1);
  }
  switch (R.phase) {
  case P_CONNECT:
    break;
  case P_SYNC:
    if (fanout_synced() || now >= R.t_phase_end) {
      fanout_begin_run(now);
    } else if (now >= R.next_probe) {
      fanout_send_sync(now);
    }
    break;
  case P_RUN:
    if (R.o.mode == M_FANOUT && R.sent > R.done && now - R.last_progress > 10 * NS_PER_S) {
      R.stalled = 1;
      R.undelivered = fanout_missing();
      lg_note_error("fanout: no message completed for 10 s (stalled)");
      lg_teardown();
      break;
    }
    if (now >= R.t_meas1) {
      /* Drain: wait for what is in flight, longer on a slow server (3x the worst
       * latency seen, 3..30 s), so that late is not mistaken for lost. */
      uint64_t grace = 3 * R.hist.max;
      if (grace < 3 * NS_PER_S) grace = 3 * NS_PER_S;
      if (grace > 30 * NS_PER_S) grace = 30 * NS_PER_S;
      R.phase = P_DRAIN;
      R.t_phase_end = now + grace;
      if (R.o.mode == M_IDLE) {
        R.rss1_kb = lg_proc_rss_kb(R.o.server_pid);
        R.phase = P_PING;
        R.t_phase_end = now + 5 * NS_PER_S;
        for (unsigned i = 0; i < R.nconns; i++) lg_conn_send(&R.conns[i], 0x9, "lg", 2);
      }
    }
    break;
  case P_DRAIN:
    if (R.o.mode == M_ECHO) {
      if (R.inflight == 0 || now >= R.t_phase_end) {
        if (R.inflight) {
          R.timeouts = R.inflight;
          lg_note_error("echo: replies still missing after the drain time");
        }
        lg_teardown();
      }
    } else if (R.o.mode == M_FANOUT) {
      if (R.done == R.sent || now >= R.t_phase_end) {
        if (R.done != R.sent) {
          R.undelivered = fanout_missing();
          lg_note_error("fanout: deliveries still missing after the drain time");
        }
        lg_teardown();
      }
    }
    break;
  case P_PING:
    if (R.alive + R.gone >= R.open || now >= R.t_phase_end) lg_teardown();
    break;
  case P_TEARDOWN:
    if (now >= R.t_phase_end) {
      for (unsigned i = 0; i < R.nconns; i++) lg_conn_abort(&R.conns[i]);
    }
    break;
  case P_CLOSED: break;
  }
  lg_finish_check();
}

static void lg_on_signal(uv_signal_t *s, int signum) {
  (void)s;
  lg_set_fatal(signum == SIGTERM ? "terminated (SIGTERM)" : "interrupted (SIGINT)");
  if (R.phase < P_TEARDOWN) {
    if (!R.measuring_done) {
      R.measuring_done = 1;
      lg_cpu_snapshot(1);
    }
    lg_teardown();
  } else {
    exit(1);
  }
}

/* ---- report ------------------------------------------------------------------------------- */

static void lg_report(void) {
  ch_buf_t b = CH_BUF_INIT;
  static const char *names[] = {"echo", "fanout", "idle"};
  double win_s = 0, cpu_pct = 0, srv_pct = -1;
  if (R.measuring_started && R.measuring_done && R.t_cpu1 > R.t_cpu0) {
    win_s = (double)(R.t_cpu1 - R.t_cpu0) / 1e9;
    double used = lg_tv(&R.ru1.ru_utime) + lg_tv(&R.ru1.ru_stime) - lg_tv(&R.ru0.ru_utime) -
                  lg_tv(&R.ru0.ru_stime);
    cpu_pct = 100.0 * used / win_s;
    if (R.o.server_pid && R.srv1 >= R.srv0) {
      srv_pct = 100.0 * (double)(R.srv1 - R.srv0) / (double)sysconf(_SC_CLK_TCK) / win_s;
    }
  }
  double d = R.o.duration;
  ch_buf_printf(&b, "{\"mode\":\"%s\",\"server\":\"", names[R.o.mode]);
  ch_buf_append_json_str(&b, R.o.label, strlen(R.o.label));
  ch_buf_append_str(&b, "\"");
  switch (R.o.mode) {
  case M_ECHO:
    ch_buf_printf(&b, ",\"conns\":%u,\"open\":%u,\"pipeline\":%u,\"size\":%u,\"duration_s\":%g",
                  R.o.conns, R.open, R.o.pipeline, R.o.size, d);
    ch_buf_printf(&b, ",\"msgs\":%" PRIu64 ",\"msgs_per_s\":%.0f,\"timeouts\":%" PRIu64, R.msgs,
                  R.msgs / d, R.timeouts);
    break;
  case M_FANOUT:
    ch_buf_printf(&b, ",\"subs\":%u,\"open\":%u,\"window\":%u,\"size\":%u,\"duration_s\":%g",
                  R.o.conns, R.participants, R.o.window, R.o.size, d);
    ch_buf_printf(&b,
                  ",\"published\":%" PRIu64 ",\"msgs\":%" PRIu64 ",\"msgs_per_s\":%.0f"
                  ",\"deliveries\":%" PRIu64 ",\"deliveries_per_s\":%.0f",
                  R.sent, R.msgs, R.msgs / d, R.deliveries, R.deliveries / d);
    break;
  case M_IDLE: {
    double per = -1;
    if (R.rss0_kb >= 0 && R.rss1_kb >= 0 && R.open > 0)
      per = (double)(R.rss1_kb - R.rss0_kb) * 1024.0 / R.open;
    ch_buf_printf(&b, ",\"conns\":%u,\"open\":%u,\"duration_s\":%g", R.o.conns, R.open, d);
    ch_buf_printf(&b, ",\"rss_before_kb\":%ld,\"rss_after_kb\":%ld,\"bytes_per_conn\":%.0f", R.rss0_kb,
                  R.rss1_kb, per);
    ch_buf_printf(&b, ",\"alive\":%u", R.alive);
    break;
  }
  }
  if (R.o.mode != M_IDLE) {
    ch_buf_printf(&b, ",\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f",
                  lg_hist_quantile(&R.hist, 0.50) / 1e3, lg_hist_quantile(&R.hist, 0.99) / 1e3,
                  lg_hist_quantile(&R.hist, 0.999) / 1e3, R.hist.max / 1e3);
  }
  if (R.o.mode == M_FANOUT) {
    ch_buf_printf(&b,
                  ",\"losses\":%" PRIu64 ",\"lost\":%" PRIu64 ",\"out_of_order\":%" PRIu64
                  ",\"undelivered\":%" PRIu64 ",\"stalled\":%s,\"pub_replies\":%" PRIu64,
                  R.lost + R.out_of_order + R.undelivered, R.lost, R.out_of_order, R.undelivered,
                  R.stalled ? "true" : "false", R.pub_replies);
  }
  ch_buf_printf(&b, ",\"errors\":%" PRIu64 ",\"corrupt\":%" PRIu64, R.errors, R.corrupt);
  ch_buf_printf(&b, ",\"connect_retries\":%" PRIu64 ",\"closed_by_server\":%" PRIu64, R.eng.st.retries,
                R.eng.st.closed_by_peer);
  ch_buf_printf(&b, ",\"gen_cpu_pct\":%.1f", cpu_pct);
  if (srv_pct >= 0) ch_buf_printf(&b, ",\"server_cpu_pct\":%.1f", srv_pct);
  if (R.o.server_pid) {
    long rss = R.o.mode == M_IDLE ? R.rss1_kb : lg_proc_rss_kb(R.o.server_pid);
    ch_buf_printf(&b, ",\"server_rss_kb\":%ld", rss);
  }
  if (R.fatal[0] || R.first_error[0]) {
    const char *e = R.fatal[0] ? R.fatal : R.first_error;
    ch_buf_append_str(&b, ",\"error\":\"");
    ch_buf_append_json_str(&b, e, strlen(e));
    ch_buf_append_str(&b, "\"");
  }
  ch_buf_append_str(&b, "}\n");
  fwrite(b.base, 1, b.len, stdout);
  fflush(stdout);
  ch_buf_dispose(&b);
}

/* ---- command line ------------------------------------------------------------------------- */

static void lg_usage(FILE *f) {
  fputs(
      "usage: chorus-loadgen MODE [options]\n"
      "\n"
      "modes:\n"
      "  echo    --url ws://127.0.0.1:P/echo -c CONNS -p PIPELINE -s SIZE -d SECONDS\n"
      "          every connection keeps PIPELINE messages in flight; reports msgs/s and\n"
      "          round-trip latency p50/p99/p999 (us)\n"
      "  fanout  --sub-url ws://.../bench/sub?channel=x --pub-url ws://.../bench/pub?channel=x\n"
      "          -c SUBS -w WINDOW -s SIZE -d SECONDS\n"
      "          SUBS subscribers + 1 publisher keeping at most WINDOW messages in flight;\n"
      "          reports deliveries/s, delivery latency, losses (must be 0)\n"
      "  idle    --url ws://... -c CONNS --server-pid PID -d SECONDS\n"
      "          opens and holds CONNS connections; reports the server's RSS growth per\n"
      "          connection (VmRSS from /proc/PID/status before and after)\n"
      "\n"
      "options:\n"
      "  -c, --conns N          connections (echo, idle) or subscribers (fanout)   [100]\n"
      "  -p, --pipeline N       echo: messages in flight per connection            [1]\n"
      "  -w, --window N         fanout: messages in flight                         [16]\n"
      "  -s, --size BYTES       payload size, 32..1048576                          [32]\n"
      "  -d, --duration SEC     measured seconds (idle: hold time)                 [5]\n"
      "      --warmup SEC       unmeasured seconds before the window               [1]\n"
      "      --url URL          echo/idle target (ws://, loopback only)\n"
      "      --sub-url URL      fanout subscriber URL\n"
      "      --pub-url URL      fanout publisher URL\n"
      "      --server-pid PID   read the server's RSS and CPU from /proc (required by idle)\n"
      "      --label NAME       server name written in the JSON                    [unknown]\n"
      "      --batch N          connections connecting at once                      [128]\n"
      "      --retries N        connect attempts per connection                     [5]\n"
      "      --connect-timeout SEC  budget for opening all connections             [120]\n"
      "  -h, --help             this text\n"
      "\n",
      f);
  lg_conv_usage(f);
  lg_agent_usage(f);
  fputs(
      "\n"
      "Prints one JSON line on stdout. Exit 0: clean run; 1: failed, or errors/losses seen;\n"
      "2: usage error. Only 127.0.0.0/8 targets are accepted.\n",
      f);
}

static int lg_parse_args(int argc, char **argv, lg_opts_t *o) {
  enum { O_URL = 256, O_SUB, O_PUB, O_PID, O_LABEL, O_WARMUP, O_BATCH, O_RETRIES, O_CTO };
  static const struct option longs[] = {
      {"conns", required_argument, NULL, 'c'},    {"pipeline", required_argument, NULL, 'p'},
      {"window", required_argument, NULL, 'w'},   {"size", required_argument, NULL, 's'},
      {"duration", required_argument, NULL, 'd'}, {"help", no_argument, NULL, 'h'},
      {"url", required_argument, NULL, O_URL},    {"sub-url", required_argument, NULL, O_SUB},
      {"pub-url", required_argument, NULL, O_PUB}, {"server-pid", required_argument, NULL, O_PID},
      {"label", required_argument, NULL, O_LABEL}, {"warmup", required_argument, NULL, O_WARMUP},
      {"batch", required_argument, NULL, O_BATCH}, {"retries", required_argument, NULL, O_RETRIES},
      {"connect-timeout", required_argument, NULL, O_CTO}, {NULL, 0, NULL, 0}};
  memset(o, 0, sizeof(*o));
  o->label = "unknown";
  o->conns = 100;
  o->pipeline = 1;
  o->window = 16;
  o->size = 32;
  o->duration = 5;
  o->warmup = 1;
  o->batch = 128;
  o->retries = 5;
  o->connect_timeout = 120;
  if (argc < 2) {
    lg_usage(stderr);
    return CH_EINVAL;
  }
  if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
    lg_usage(stdout);
    exit(0);
  }
  if (strcmp(argv[1], "echo") == 0) o->mode = M_ECHO;
  else if (strcmp(argv[1], "fanout") == 0) o->mode = M_FANOUT;
  else if (strcmp(argv[1], "idle") == 0) o->mode = M_IDLE;
  else {
    fprintf(stderr, "chorus-loadgen: unknown mode '%s' (echo, fanout, idle, send, convfan, resume, agent-ttfc, agent-fan; --help)\n",
            argv[1]);
    return CH_EINVAL;
  }
  optind = 2;
  int ch;
  unsigned u;
  while ((ch = getopt_long(argc, argv, "c:p:w:s:d:h", longs, NULL)) != -1) {
    const char *bad = NULL;
    switch (ch) {
    case 'c': if (lg_parse_uint(optarg, 1, 1000000, &o->conns) < 0) bad = "-c"; break;
    case 'p': if (lg_parse_uint(optarg, 1, 100000, &o->pipeline) < 0) bad = "-p"; break;
    case 'w': if (lg_parse_uint(optarg, 1, 1000000, &o->window) < 0) bad = "-w"; break;
    case 's': if (lg_parse_uint(optarg, LG_PFX, LG_MAX_PAYLOAD, &o->size) < 0) bad = "-s (32..1048576)"; break;
    case 'd': if (lg_parse_sec(optarg, 0.1, 3600, &o->duration) < 0) bad = "-d"; break;
    case 'h': lg_usage(stdout); exit(0);
    case O_URL: o->url_s = optarg; break;
    case O_SUB: o->sub_s = optarg; break;
    case O_PUB: o->pub_s = optarg; break;
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
  char err[256];
  if (o->mode == M_FANOUT) {
    if (!o->sub_s || !o->pub_s) {
      fprintf(stderr, "chorus-loadgen: fanout needs --sub-url and --pub-url\n");
      return CH_EINVAL;
    }
    if (lg_url_parse(o->sub_s, &o->sub, err, sizeof(err)) < 0 ||
        lg_url_parse(o->pub_s, &o->pub, err, sizeof(err)) < 0) {
      fprintf(stderr, "chorus-loadgen: %s\n", err);
      return CH_EINVAL;
    }
  } else {
    if (!o->url_s) {
      fprintf(stderr, "chorus-loadgen: %s needs --url\n", argv[1]);
      return CH_EINVAL;
    }
    if (lg_url_parse(o->url_s, &o->url, err, sizeof(err)) < 0) {
      fprintf(stderr, "chorus-loadgen: %s\n", err);
      return CH_EINVAL;
    }
  }
  if (o->mode == M_IDLE && !o->server_pid) {
    fprintf(stderr, "chorus-loadgen: idle needs --server-pid\n");
    return CH_EINVAL;
  }
  return 0;
}

int main(int argc, char **argv) {
  int rc = 1;
  if (argc >= 2 && lg_conv_is_mode(argv[1])) return lg_conv_main(argc, argv);
  if (argc >= 2 && lg_agent_is_mode(argv[1])) return lg_agent_main(argc, argv);
  if (lg_parse_args(argc, argv, &R.o) < 0) return 2;
  signal(SIGPIPE, SIG_IGN);
  R.nconns = R.o.conns + (R.o.mode == M_FANOUT ? 1 : 0);
  lg_raise_nofile(R.nconns);

  R.loop = uv_default_loop();
  if (lg_engine_init(&R.eng, R.loop, R.o.batch, R.o.retries, 10000) < 0) {
    fprintf(stderr, "chorus-loadgen: cannot initialise (getrandom failed)\n");
    return 1;
  }
  R.tmpl = lg_filler_table();
  if (R.o.mode == M_FANOUT) R.slots = ch_xcalloc(R.o.window, sizeof(*R.slots));
  R.conns = ch_xcalloc(R.nconns, sizeof(*R.conns));
  lg_hist_reset(&R.hist);
  R.rss0_kb = R.rss1_kb = -1;

  const lg_ops_t *ops = R.o.mode == M_ECHO ? &echo_ops : R.o.mode == M_FANOUT ? &fanout_ops : &idle_ops;
  const lg_url_t *url = R.o.mode == M_FANOUT ? &R.o.sub : &R.o.url;
  for (unsigned i = 0; i < R.nconns; i++) {
    int is_pub = R.o.mode == M_FANOUT && i == R.o.conns;
    lg_conn_init(&R.conns[i], &R.eng, is_pub ? &R.o.pub : url, ops, NULL);
    R.conns[i].u_index = i;
  }
  if (R.o.mode == M_FANOUT) R.pub = &R.conns[R.o.conns];

  if (R.o.mode == M_IDLE) {
    R.rss0_kb = lg_proc_rss_kb(R.o.server_pid);
    if (R.rss0_kb < 0) {
      fprintf(stderr, "chorus-loadgen: cannot read /proc/%ld/status\n", R.o.server_pid);
      goto Exit;
    }
  }

  R.t0 = uv_hrtime();
  R.eng.connect_deadline = R.t0 + (uint64_t)(R.o.connect_timeout * NS_PER_S);
  /* connect + pub connect + sync + window + drain + ping + closing + margin */
  double hard_s = R.o.connect_timeout + 15 + 15 + R.o.warmup + R.o.duration + 30 + 5 + 3 + 10;
  R.t_hard = R.t0 + (uint64_t)(hard_s * NS_PER_S);
  R.phase = P_CONNECT;
  uv_timer_init(R.loop, &R.tick);
  uv_timer_start(&R.tick, lg_on_tick, 5, 5);
  uv_signal_init(R.loop, &R.sigint);
  uv_signal_start(&R.sigint, lg_on_signal, SIGINT);
  uv_unref((uv_handle_t *)&R.sigint);
  uv_signal_init(R.loop, &R.sigterm);
  uv_signal_start(&R.sigterm, lg_on_signal, SIGTERM);
  uv_unref((uv_handle_t *)&R.sigterm);
  for (unsigned i = 0; i < R.o.conns; i++) lg_conn_start(&R.conns[i]);

  uv_run(R.loop, UV_RUN_DEFAULT);

  if (!R.measuring_done) lg_set_fatal("the run ended before the window closed");
  if (R.o.mode == M_ECHO && R.msgs == 0) lg_set_fatal("echo: no reply inside the measured window");
  if (R.o.mode == M_FANOUT && R.deliveries == 0) lg_set_fatal("fanout: no delivery inside the window");
  lg_report();
  if (R.fatal[0]) {
    static const char *names[] = {"echo", "fanout", "idle"};
    fprintf(stderr, "chorus-loadgen: %s failed: %s\n", names[R.o.mode], R.fatal);
  } else if (R.errors || R.lost || R.out_of_order || R.undelivered) {
    fprintf(stderr,
            "chorus-loadgen: %" PRIu64 " errors, %" PRIu64 " lost, %" PRIu64 " out of order, %" PRIu64
            " undelivered (first: %s)\n",
            R.errors, R.lost, R.out_of_order, R.undelivered, R.first_error[0] ? R.first_error : "-");
  } else {
    rc = 0;
  }
Exit:
  for (unsigned i = 0; i < R.nconns; i++) lg_conn_dispose(&R.conns[i]);
  free(R.conns);
  free(R.slots);
  uv_loop_close(R.loop);
  return rc;
}
