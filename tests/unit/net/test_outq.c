/*
 * test_outq.c — the connection output queue (net/conn.h): where urgent items
 * (WebSocket pings and pongs) go, and what they never overtake or split.
 *
 *   rules, one test each: urgent on an idle queue and at the head of
 *   unstarted data (FIFO among urgent items); after a partly written head;
 *   after the items handed to the write in flight; never before a CONT item
 *   (inside a frame queued as several chunks); never ahead of an ORDERED item
 *   (a 101, a close); the ring wrapping and growing past its inline slots;
 *   pongs coalescing behind a backlog; the overflow rule (urgent bytes count
 *   but never trigger it; a started frame is finished).
 *
 *   model: random operations against a plain-array model of the same rules,
 *   with random partial writes, through wraps and growth.
 *
 *   socket: a real loopback TCP pair and the real flush: a head chunk too big
 *   for the kernel stays in flight, an urgent frame is queued, and the peer,
 *   reading in random splits, sees it right after the in-flight chunk.
 *
 * The ring is driven through ch__outq_push/started/consume (conn.h, net-
 * internal) and ch_conn_send_flags on a connection of a minimal loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/err.h"
#include "net/conn.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static ch_loop_t L;

static int loop_setup(void **state) {
  (void)state;
  memset(&L, 0, sizeof(L));
  assert_int_equal(uv_loop_init(&L.uv), 0);
  ch_list_init(&L.pending);
  ch_list_init(&L.conns);
  return 0;
}

/* A failed test may leave its connection open: close it, or uv_run would wait
 * for its write for ever. */
static void close_left_over(uv_handle_t *h, void *arg) {
  (void)arg;
  if (h->type == UV_TCP && !uv_is_closing(h)) ch_conn_close(h->data);
}

static int loop_teardown(void **state) {
  (void)state;
  uv_walk(&L.uv, close_left_over, NULL);
  uv_run(&L.uv, UV_RUN_DEFAULT); /* close callbacks free the connections */
  assert_int_equal(uv_loop_close(&L.uv), 0);
  return 0;
}

static void conn_free(ch_conn_t *c) {
  ch_conn_close(c);
  uv_run(&L.uv, UV_RUN_NOWAIT);
}

/* A chunk whose bytes are its name, e.g. "A" or "H1". */
static ch_chunk_t *K(const char *name) { return ch_chunk_from(name, strlen(name)); }

/* The ring as the names of its chunks, separated by spaces. */
static const char *order(ch_conn_t *c) {
  static char out[4096];
  size_t n = 0;
  out[0] = '\0';
  for (uint32_t i = 0; i < c->qcount; i++) {
    ch_outq_item_t *it = &c->q[(c->qhead + i) & (c->qcap - 1)];
    n += (size_t)snprintf(out + n, sizeof(out) - n, "%s%.*s", i ? " " : "", (int)it->chunk->len,
                          it->chunk->data);
  }
  return out;
}

static size_t unwritten(ch_conn_t *c) {
  size_t n = 0;
  for (uint32_t i = 0; i < c->qcount; i++) {
    ch_outq_item_t *it = &c->q[(c->qhead + i) & (c->qcap - 1)];
    n += it->chunk->len - it->off;
  }
  return n;
}

static void push(ch_conn_t *c, const char *name, unsigned flags) { ch__outq_push(c, K(name), flags); }
static void urgent(ch_conn_t *c, const char *name) { ch__outq_push(c, K(name), CH_CONN_SEND_URGENT); }
static void pong(ch_conn_t *c, const char *name) {
  ch__outq_push(c, K(name), CH_CONN_SEND_URGENT | CH_CONN_SEND_COALESCE);
}

/* ---- the rules ----------------------------------------------------------- */

static void test_urgent_on_idle_and_unstarted_queue(void **state) {
  (void)state;
  ch_conn_t *c = ch__conn_new(&L);
  urgent(c, "U");
  assert_string_equal(order(c), "U");
  push(c, "A", 0);
  push(c, "B", 0);
  urgent(c, "V"); /* behind the earlier urgent item, ahead of the data */
  assert_string_equal(order(c), "U V A B");
  urgent(c, "W");
  assert_string_equal(order(c), "U V W A B");
  assert_int_equal(c->qbytes, 5);
  assert_int_equal(c->qsent, 0);
  assert_true(c->q != c->qinline); /* 5 items: grown past the inline slots */
  conn_free(c);
}

static void test_urgent_at_head_of_unstarted_data(void **state) {
  (void)state;
  ch_conn_t *c = ch__conn_new(&L);
  push(c, "A", 0);
  push(c, "B", 0);
  push(c, "C", 0);
  urgent(c, "U");
  assert_string_equal(order(c), "U A B C");
  assert_true(c->q == c->qinline);
  conn_free(c);
}

static void test_urgent_after_partly_written_head(void **state) {
  (void)state;
  ch_conn_t *c = ch__conn_new(&L);
  push(c, "AAAA", 0);
  push(c, "B", 0);
  push(c, "C", 0);
  ch__outq_consume(c, 2); /* half of AAAA is on the wire: it must be finished first */
  assert_int_equal(c->qsent, 1);
  urgent(c, "U");
  assert_string_equal(order(c), "AAAA U B C");
  assert_int_equal(c->q[c->qhead].off, 2);
  assert_int_equal(c->qbytes, unwritten(c));
  assert_int_equal(c->qbytes, 2 + 1 + 1 + 1);
  conn_free(c);
}

static void test_urgent_after_items_in_flight(void **state) {
  (void)state;
  ch_conn_t *c = ch__conn_new(&L);
  push(c, "A", 0);
  push(c, "B", 0);
  push(c, "C", 0);
  push(c, "D", 0);
  ch__outq_started(c, 2); /* A and B handed to the uv_write in flight */
  urgent(c, "U");
  assert_string_equal(order(c), "A B U C D");
  /* The write completes: A and B leave, U stays first, a later urgent goes behind it. */
  ch__outq_consume(c, 2);
  assert_string_equal(order(c), "U C D");
  assert_int_equal(c->qsent, 0);
  assert_int_equal(c->qfloor, 1);
  urgent(c, "V");
  assert_string_equal(order(c), "U V C D");
  /* Everything written: the ring is given back. */
  ch__outq_consume(c, 4);
  assert_int_equal(c->qcount, 0);
  assert_null(c->q);
  assert_int_equal(c->qbytes, 0);
  assert_int_equal(c->qfloor, 0);
  urgent(c, "W");
  assert_string_equal(order(c), "W");
  conn_free(c);
}

static void test_never_inside_a_frame(void **state) {
  (void)state;
  ch_conn_t *c = ch__conn_new(&L);
  /* Two frames, each a header chunk and a payload reference. */
  push(c, "H1", 0);
  push(c, "P1", CH_CONN_SEND_CONT);
  push(c, "H2", 0);
  push(c, "P2", CH_CONN_SEND_CONT);
  push(c, "Q2", CH_CONN_SEND_CONT);
  ch__outq_started(c, 1); /* only H1 in flight */
  urgent(c, "U");
  assert_string_equal(order(c), "H1 P1 U H2 P2 Q2");
  /* H1 written; U stays ahead of H2, V goes behind U. */
  ch__outq_consume(c, 2);
  assert_string_equal(order(c), "P1 U H2 P2 Q2");
  assert_int_equal(c->qsent, 0);
  urgent(c, "V");
  assert_string_equal(order(c), "P1 U V H2 P2 Q2");
  conn_free(c);

  /* A CONT item at the very head with nothing started. */
  c = ch__conn_new(&L);
  push(c, "H", 0);
  push(c, "P", CH_CONN_SEND_CONT);
  push(c, "Q", CH_CONN_SEND_CONT);
  push(c, "X", 0);
  ch__outq_consume(c, 1);
  urgent(c, "U");
  assert_string_equal(order(c), "P Q U X");
  conn_free(c);

  /* A frame partly written mid-payload. */
  c = ch__conn_new(&L);
  push(c, "H", 0);
  push(c, "PPPP", CH_CONN_SEND_CONT);
  push(c, "X", 0);
  ch__outq_consume(c, 3);
  urgent(c, "U");
  assert_string_equal(order(c), "PPPP U X");
  conn_free(c);
}

static void test_ordered_items_are_not_overtaken(void **state) {
  (void)state;
  ch_conn_t *c = ch__conn_new(&L);
  push(c, "101", CH_CONN_SEND_ORDERED); /* the handshake response */
  pong(c, "P");                         /* answering a ping pipelined behind the upgrade */
  assert_string_equal(order(c), "101 P");
  push(c, "A", 0);
  urgent(c, "U");
  assert_string_equal(order(c), "101 P U A");
  push(c, "B", 0);
  push(c, "CLOSE", CH_CONN_SEND_ORDERED);
  urgent(c, "V");
  assert_string_equal(order(c), "101 P U A B CLOSE V");
  conn_free(c);
}

static void test_ring_wrap_and_growth(void **state) {
  (void)state;
  ch_conn_t *c = ch__conn_new(&L);
  push(c, "A", 0);
  push(c, "B", 0);
  push(c, "C", 0);
  push(c, "D", 0);
  ch__outq_consume(c, 2); /* head at slot 2 */
  push(c, "E", 0);        /* slot 0: wrapped */
  assert_int_equal(c->qhead, 2);
  urgent(c, "U"); /* prefix side is shorter: head moves back to slot 1 */
  assert_string_equal(order(c), "U C D E");
  assert_int_equal(c->qhead, 1);
  assert_true(c->q == c->qinline);
  ch__outq_consume(c, 2); /* U, C written */
  push(c, "F", 0);
  push(c, "G", 0);
  ch__outq_started(c, 3); /* D E F in flight; G unstarted: suffix side is shorter */
  urgent(c, "V");
  assert_string_equal(order(c), "D E F V G");
  assert_true(c->q != c->qinline); /* five items: grown */
  assert_int_equal(c->qcap, 8);
  assert_int_equal(c->qbytes, 5);
  /* Keep going past several growths. */
  char name[16];
  for (int i = 0; i < 40; i++) {
    snprintf(name, sizeof(name), "d%d", i);
    push(c, name, 0);
  }
  urgent(c, "W");
  assert_int_equal(c->qcount, 46);
  assert_int_equal(c->qcap, 64);
  assert_memory_equal(order(c), "D E F V W G d0 d1", 17);
  conn_free(c);
}

static void test_pongs_coalesce_behind_a_backlog(void **state) {
  (void)state;
  ch_conn_t *c = ch__conn_new(&L);
  push(c, "data", 0);
  char name[16];
  for (int i = 0; i < CH_OUTQ_URGENT_MAX; i++) {
    snprintf(name, sizeof(name), "p%d", i);
    pong(c, name);
  }
  assert_int_equal(c->qcount, CH_OUTQ_URGENT_MAX + 1);
  /* One pong more replaces the last (RFC 6455 5.5.3: answer the latest ping). */
  char head[CH_OUTQ_URGENT_MAX * 8] = "", want[sizeof(head) + 64];
  for (int i = 0; i < CH_OUTQ_URGENT_MAX - 1; i++)
    snprintf(head + strlen(head), sizeof(head) - strlen(head), "p%d ", i);
  pong(c, "pX");
  assert_int_equal(c->qcount, CH_OUTQ_URGENT_MAX + 1);
  snprintf(want, sizeof(want), "%spX data", head);
  assert_string_equal(order(c), want);
  assert_int_equal(c->qbytes, unwritten(c));
  /* A ping is never replaced, nor replaces. */
  urgent(c, "PING");
  pong(c, "pY");
  snprintf(want, sizeof(want), "%spX PING pY data", head);
  assert_string_equal(order(c), want);
  pong(c, "pZ");
  snprintf(want, sizeof(want), "%spX PING pZ data", head);
  assert_string_equal(order(c), want);
  /* Once the earlier ones are on their way, pongs queue again. */
  ch__outq_started(c, 9);
  pong(c, "q");
  snprintf(want, sizeof(want), "%spX PING pZ q data", head);
  assert_string_equal(order(c), want);
  conn_free(c);
}

static ch_conn_limits_t saved_limits;
static int limits_restore(void **state) {
  (void)state;
  ch_conn_limits = saved_limits;
  return 0;
}

static void test_overflow_rule(void **state) {
  (void)state;
  saved_limits = ch_conn_limits;
  ch_conn_limits.max_outbound = 10;
  ch_conn_t *c = ch__conn_new(&L);
  assert_int_equal(ch_conn_send(c, K("123456")), 0);
  /* An urgent frame may take the queue past the cap without dropping the connection. */
  assert_int_equal(ch_conn_send_urgent(c, K("PINGPING")), 0);
  assert_false(c->closing);
  assert_int_equal(c->qbytes, 14);
  assert_string_equal(order(c), "PINGPING 123456");
  /* The next data send finds it over: slow consumer, unstarted items dropped. */
  uint64_t dropped = CH_STAT_GET(&L.stats, slow_consumers_dropped);
  assert_int_equal(ch_conn_send(c, K("x")), CH_ELIMIT);
  assert_true(c->closing);
  assert_int_equal(CH_STAT_GET(&L.stats, slow_consumers_dropped), dropped + 1);
  assert_int_equal(c->qcount, 0);
  assert_int_equal(c->qbytes, 0);
  assert_int_equal(ch_conn_send_urgent(c, K("late")), CH_ECLOSED);
  conn_free(c);

  /* A frame whose header is in flight is finished; the rest goes. */
  c = ch__conn_new(&L);
  assert_int_equal(ch_conn_send(c, K("H")), 0);
  assert_int_equal(ch_conn_send_flags(c, K("PP"), CH_CONN_SEND_CONT), 0);
  assert_int_equal(ch_conn_send(c, K("next")), 0);
  ch__outq_started(c, 1);
  assert_int_equal(ch_conn_send(c, K("overflowing")), CH_ELIMIT);
  assert_string_equal(order(c), "H PP");
  assert_int_equal(c->qbytes, 3);
  conn_free(c);
}

/* ---- random operations against a model ------------------------------------ */

typedef struct {
  ch_chunk_t *k; /* not owned: the ring holds the reference */
  size_t off;
  unsigned flags;
} mitem_t;

typedef struct {
  mitem_t a[4096];
  uint32_t n, sent, floor;
  size_t bytes;
} model_t;

static void model_push(model_t *m, ch_chunk_t *k, unsigned flags) {
  if (!(flags & CH_CONN_SEND_URGENT)) {
    m->a[m->n++] = (mitem_t){k, 0, flags};
    m->bytes += k->len;
    if (flags & CH_CONN_SEND_ORDERED) m->floor = m->n;
    return;
  }
  uint32_t p = m->floor > m->sent ? m->floor : m->sent;
  while (p < m->n && (m->a[p].flags & CH_CONN_SEND_CONT)) p++;
  if ((flags & CH_CONN_SEND_COALESCE) && p > m->sent && p - m->sent >= CH_OUTQ_URGENT_MAX &&
      (m->a[p - 1].flags & CH_CONN_SEND_COALESCE) && m->a[p - 1].off == 0) {
    m->bytes += k->len - m->a[p - 1].k->len;
    m->a[p - 1].k = k;
    return;
  }
  memmove(&m->a[p + 1], &m->a[p], (m->n - p) * sizeof(mitem_t));
  m->a[p] = (mitem_t){k, 0, flags};
  m->n++;
  m->bytes += k->len;
  m->floor = p + 1;
}

static void model_consume(model_t *m, size_t n) {
  m->bytes -= n;
  while (m->n > 0) {
    size_t left = m->a[0].k->len - m->a[0].off;
    if (n < left) {
      if (n) {
        m->a[0].off += n;
        if (m->sent == 0) m->sent = 1;
      }
      return;
    }
    n -= left;
    memmove(&m->a[0], &m->a[1], (m->n - 1) * sizeof(mitem_t));
    m->n--;
    if (m->sent) m->sent--;
    if (m->floor) m->floor--;
  }
}

static void model_check(const model_t *m, ch_conn_t *c) {
  assert_int_equal(c->qcount, m->n);
  assert_int_equal(c->qbytes, m->bytes);
  assert_int_equal(c->qbytes, unwritten(c));
  if (m->n) {
    assert_int_equal(c->qsent, m->sent);
    assert_int_equal(c->qfloor, m->floor);
  }
  for (uint32_t i = 0; i < m->n; i++) {
    ch_outq_item_t *it = &c->q[(c->qhead + i) & (c->qcap - 1)];
    assert_ptr_equal(it->chunk, m->a[i].k);
    assert_int_equal(it->off, m->a[i].off);
    assert_int_equal(it->flags, m->a[i].flags);
  }
}

static void test_random_against_model(void **state) {
  (void)state;
  static model_t m;
  for (int round = 0; round < 200; round++) {
    ch_conn_t *c = ch__conn_new(&L);
    memset(&m, 0, sizeof(m));
    int frame_open = 0; /* the last data item may be continued */
    for (int op = 0; op < 300; op++) {
      unsigned r = (unsigned)(rng() % 100);
      if (r < 45 && m.n < 4000) {
        unsigned flags = 0;
        if (frame_open && rng() % 3 == 0) flags = CH_CONN_SEND_CONT;
        else if (rng() % 20 == 0) flags = CH_CONN_SEND_ORDERED;
        ch_chunk_t *k = ch_chunk_new(1 + rng() % 40);
        memset(k->data, 'd', k->len);
        model_push(&m, k, flags);
        ch__outq_push(c, k, flags);
        frame_open = 1;
      } else if (r < 65 && m.n < 4000) {
        unsigned flags = CH_CONN_SEND_URGENT | (rng() % 2 ? CH_CONN_SEND_COALESCE : 0);
        ch_chunk_t *k = ch_chunk_new(2 + rng() % 6);
        memset(k->data, 'u', k->len);
        model_push(&m, k, flags);
        ch__outq_push(c, k, flags);
        frame_open = 0;
      } else if (r < 75) {
        /* A write in flight covers the first n items (flush only starts one when none is). */
        if (m.sent == 0 || (m.sent == 1 && m.n && m.a[0].off)) {
          uint32_t n = m.n ? 1 + (uint32_t)(rng() % m.n) : 0;
          if (n > m.sent) m.sent = n;
          ch__outq_started(c, n);
          frame_open = 0;
        }
      } else {
        /* Bytes written: a random part of what is queued (possibly 0, possibly all). */
        size_t n = m.bytes ? (size_t)(rng() % (m.bytes + 1)) : 0;
        if (rng() % 4 == 0) n = m.bytes;
        model_consume(&m, n);
        ch__outq_consume(c, n);
        if (m.n == 0) frame_open = 0;
      }
      model_check(&m, c);
    }
    conn_free(c);
  }
}

/* ---- a real socket --------------------------------------------------------- */

static void tcp_pair(int *server_fd, int *peer_fd) {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(ls >= 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
  socklen_t sl = sizeof(sa);
  assert_int_equal(getsockname(ls, (struct sockaddr *)&sa, &sl), 0);
  assert_int_equal(listen(ls, 1), 0);
  int p = socket(AF_INET, SOCK_STREAM, 0);
  int small = 16384;
  setsockopt(p, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  assert_int_equal(connect(p, (struct sockaddr *)&sa, sizeof(sa)), 0);
  int s = accept(ls, NULL, NULL);
  assert_true(s >= 0);
  setsockopt(s, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  close(ls);
  fcntl(p, F_SETFL, fcntl(p, F_GETFL) | O_NONBLOCK);
  *server_fd = s;
  *peer_fd = p;
}

static void test_socket_urgent_frame_after_the_write_in_flight(void **state) {
  (void)state;
  int sfd, pfd;
  tcp_pair(&sfd, &pfd);
  ch_conn_t *c = ch__conn_new(&L);
  assert_int_equal(uv_tcp_open(&c->tcp, sfd), 0);

  size_t big = 4u << 20;
  ch_chunk_t *a = ch_chunk_new(big);
  for (size_t i = 0; i < big; i++) a->data[i] = (char)('a' + i % 23);
  assert_int_equal(ch_conn_send(c, a), 0);
  assert_int_equal(ch_conn_send(c, K("[B]")), 0);
  assert_int_equal(ch_conn_send(c, K("[C]")), 0);
  ch__conn_flush(c); /* the kernel takes part of A; the rest of A goes in flight */
  assert_true(c->writing);
  assert_int_equal(c->qsent, 1); /* the in-flight write holds A only (> 256 KiB) */
  assert_true(c->q[c->qhead].off > 0 && c->q[c->qhead].off < big);
  assert_int_equal(ch_conn_send_urgent(c, K("[U]")), 0);
  assert_int_equal(c->qcount, 4);
  ch_outq_item_t *second = &c->q[(c->qhead + 1) & (c->qcap - 1)];
  assert_memory_equal(second->chunk->data, "[U]", 3);

  /* Read everything in random splits while the loop writes. */
  size_t want = big + 9, got = 0;
  char *buf = malloc(want);
  while (got < want) {
    uv_run(&L.uv, UV_RUN_NOWAIT);
    size_t n = 1 + rng() % 70000;
    if (n > want - got) n = want - got;
    ssize_t r = recv(pfd, buf + got, n, 0);
    if (r < 0) {
      assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
      usleep(200);
      continue;
    }
    assert_true(r > 0);
    got += (size_t)r;
  }
  uv_run(&L.uv, UV_RUN_NOWAIT);
  for (size_t i = 0; i < big; i += 4099) assert_int_equal(buf[i], (char)('a' + i % 23));
  assert_memory_equal(buf + big, "[U][B][C]", 9);
  assert_int_equal(c->qcount, 0);
  assert_int_equal(c->qbytes, 0);
  assert_false(c->writing);
  free(buf);
  close(pfd);
  conn_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_urgent_on_idle_and_unstarted_queue),
      cmocka_unit_test(test_urgent_at_head_of_unstarted_data),
      cmocka_unit_test(test_urgent_after_partly_written_head),
      cmocka_unit_test(test_urgent_after_items_in_flight),
      cmocka_unit_test(test_never_inside_a_frame),
      cmocka_unit_test(test_ordered_items_are_not_overtaken),
      cmocka_unit_test(test_ring_wrap_and_growth),
      cmocka_unit_test(test_pongs_coalesce_behind_a_backlog),
      cmocka_unit_test_teardown(test_overflow_rule, limits_restore),
      cmocka_unit_test(test_random_against_model),
      cmocka_unit_test(test_socket_urgent_frame_after_the_write_in_flight),
  };
  return cmocka_run_group_tests(tests, loop_setup, loop_teardown);
}
