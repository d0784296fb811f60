/*
 * conn.c — connection life cycle, output queue and corked writes (see conn.h).
 *
 * The ring (ch__outq_*) keeps three counts relative to its head: qcount
 * items, of which the first qsent are started (handed to the uv_write in
 * flight, or partly written) and the first qfloor may not be overtaken by an
 * urgent item. Popping the head decrements all three; an urgent insert at p
 * sets qfloor = p + 1. With TLS the ring holds plaintext and qsent stays 0:
 * items leave the ring whole when the flush encrypts them into tls_out.
 */
#include "net/conn.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "net/tls.h"

#define CH__IOV_MAX 64               /* iovecs per write: bounds the work of one flush */
#define CH__WRITE_MAX (256u << 10)   /* bytes per uv_write, and plaintext per TLS pass: bounds what
                                        an urgent frame waits behind in user space */
#define CH__NOTSENT_LOWAT (128 << 10) /* unsent bytes the kernel may hold (TCP_NOTSENT_LOWAT) */

ch_conn_limits_t ch_conn_limits = {8u << 20, 1u << 20};
static atomic_uint_fast64_t ch__conn_next_id = 1;

ch_conn_t *ch__conn_new(ch_loop_t *l) {
  ch_conn_t *c = ch_xcalloc(1, sizeof(*c));
  c->loop = l;
  uv_tcp_init(&l->uv, &c->tcp);
  c->tcp.data = c;
  ch_list_init(&c->node);
  ch_list_init(&c->pending_node);
  c->created_ms = l->now_ms;
  c->id = atomic_fetch_add(&ch__conn_next_id, 1);
  return c;
}

/* ---- output queue ------------------------------------------------------ */

static inline ch_outq_item_t *ch__q_at(ch_conn_t *c, uint32_t i) {
  return &c->q[(c->qhead + i) & (c->qcap - 1)];
}

/* Room for one more item (indexes relative to the head stay valid). */
static void ch__q_reserve(ch_conn_t *c) {
  if (c->qcap == 0) {
    /* The common case — a few frames per turn — needs no allocation. */
    c->q = c->qinline;
    c->qcap = CH_OUTQ_INLINE;
    c->qhead = 0;
  }
  if (c->qcount == c->qcap) {
    uint32_t ncap = c->qcap * 2;
    ch_outq_item_t *nq = ch_xmalloc(ncap * sizeof(*nq));
    for (uint32_t i = 0; i < c->qcount; i++) nq[i] = *ch__q_at(c, i);
    if (c->q != c->qinline) free(c->q);
    c->q = nq;
    c->qcap = ncap;
    c->qhead = 0;
  }
}

static void ch__q_release_if_empty(ch_conn_t *c) {
  if (c->qcount == 0) {
    /* Drained: give the ring back so idle connections hold no queue. */
    if (c->q != c->qinline) free(c->q);
    c->q = NULL;
    c->qcap = c->qhead = 0;
    c->qsent = c->qfloor = 0;
  }
}

/* Drop the head item (its bytes are already out of qbytes). */
static void ch__q_pop(ch_conn_t *c) {
  ch_chunk_unref(c->q[c->qhead].chunk);
  c->qhead = (c->qhead + 1) & (c->qcap - 1);
  c->qcount--;
  if (c->qsent) c->qsent--;
  if (c->qfloor) c->qfloor--;
}

void ch__outq_push(ch_conn_t *c, ch_chunk_t *k, unsigned flags) {
  if (!(flags & CH_CONN_SEND_URGENT)) {
    ch__q_reserve(c);
    *ch__q_at(c, c->qcount) = (ch_outq_item_t){k, 0, flags};
    c->qcount++;
    c->qbytes += k->len;
    if (flags & CH_CONN_SEND_ORDERED) c->qfloor = c->qcount;
    return;
  }
  /* Where an urgent item goes: after the started items, the earlier urgent
   * and ORDERED items, and the rest of a frame the position would split. */
  uint32_t p = c->qfloor > c->qsent ? c->qfloor : c->qsent;
  while (p < c->qcount && (ch__q_at(c, p)->flags & CH_CONN_SEND_CONT)) p++;
  if ((flags & CH_CONN_SEND_COALESCE) && p > c->qsent && p - c->qsent >= CH_OUTQ_URGENT_MAX) {
    ch_outq_item_t *prev = ch__q_at(c, p - 1);
    if ((prev->flags & CH_CONN_SEND_COALESCE) && prev->off == 0) {
      c->qbytes -= prev->chunk->len;
      ch_chunk_unref(prev->chunk);
      prev->chunk = k;
      c->qbytes += k->len;
      return;
    }
  }
  ch__q_reserve(c);
  if (p <= c->qcount - p) {
    /* Fewer items before the spot: move them one slot towards the head. */
    c->qhead = (c->qhead - 1) & (c->qcap - 1);
    for (uint32_t i = 0; i < p; i++) *ch__q_at(c, i) = *ch__q_at(c, i + 1);
  } else {
    for (uint32_t i = c->qcount; i > p; i--) *ch__q_at(c, i) = *ch__q_at(c, i - 1);
  }
  *ch__q_at(c, p) = (ch_outq_item_t){k, 0, flags};
  c->qcount++;
  c->qbytes += k->len;
  c->qfloor = p + 1; /* later urgent items stay in order behind this one */
}

void ch__outq_started(ch_conn_t *c, uint32_t n) {
  if (n > c->qsent) c->qsent = n;
}

void ch__outq_consume(ch_conn_t *c, size_t n) {
  c->qbytes -= n;
  while (c->qcount > 0) {
    ch_outq_item_t *it = &c->q[c->qhead];
    size_t left = it->chunk->len - it->off;
    if (n < left) {
      if (n > 0) {
        it->off += n;
        if (c->qsent == 0) c->qsent = 1; /* a partly written item is started */
      }
      break;
    }
    n -= left;
    ch__q_pop(c);
  }
  ch__q_release_if_empty(c);
}

/* Drop queued items: all of them, or (keep_started) those not started —
 * but never the rest of a frame that has started. */
static void ch__q_clear(ch_conn_t *c, int keep_started) {
  uint32_t keep = 0;
  if (keep_started) {
    keep = c->qsent; /* a partly written head is counted there too */
    if (keep > 0)
      while (keep < c->qcount && (ch__q_at(c, keep)->flags & CH_CONN_SEND_CONT)) keep++;
  }
  while (c->qcount > keep) {
    ch_outq_item_t *it = ch__q_at(c, c->qcount - 1);
    c->qbytes -= it->chunk->len - it->off;
    ch_chunk_unref(it->chunk);
    c->qcount--;
  }
  if (c->qfloor > c->qcount) c->qfloor = c->qcount;
  ch__q_release_if_empty(c);
}

static void ch__conn_mark_pending(ch_conn_t *c) {
  if (!ch_list_linked(&c->pending_node)) ch_list_insert_tail(&c->loop->pending, &c->pending_node);
}

static void ch__conn_overflow(ch_conn_t *c) {
  CH_STAT_ADD(&c->loop->stats, slow_consumers_dropped, 1);
  ch_log_debug("conn %llu (%s): slow consumer, %zu bytes queued; closing",
               (unsigned long long)c->id, c->peer, c->qbytes);
  ch__q_clear(c, 1);
  ch_chunk_t *last = c->proto && c->proto->on_overflow ? c->proto->on_overflow(c) : NULL;
  if (last) {
    ch__outq_push(c, last, CH_CONN_SEND_ORDERED);
    ch__conn_mark_pending(c);
  }
  ch_conn_close_after_flush(c, 5000);
  c->closing = 1; /* refuse further sends; the close happens after the flush */
}

int ch_conn_send_flags(ch_conn_t *c, ch_chunk_t *k, unsigned flags) {
  if (c->closing) {
    ch_chunk_unref(k);
    return CH_ECLOSED;
  }
  ch__outq_push(c, k, flags);
  ch__conn_mark_pending(c);
  if (!(flags & CH_CONN_SEND_URGENT) && c->qbytes > ch_conn_limits.max_outbound) {
    ch__conn_overflow(c);
    return CH_ELIMIT;
  }
  return 0;
}

int ch_conn_send(ch_conn_t *c, ch_chunk_t *k) { return ch_conn_send_flags(c, k, 0); }

int ch_conn_send_copy(ch_conn_t *c, const void *p, size_t len) {
  return ch_conn_send(c, ch_chunk_from(p, len));
}

static void ch__conn_write_cb(uv_write_t *req, int status);
static void ch__conn_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void ch__conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void ch__conn_maybe_resume_reading(ch_conn_t *c);

static void ch__conn_shutdown_cb(uv_shutdown_t *req, int status) { free(req); }

/* Everything is written and the connection should end. Closing now while the
 * peer is still sending would make the kernel answer with a reset, and a peer
 * that gets a reset may drop our last words (a close frame, an error
 * response) unread. So half-close our side and keep reading, discarding,
 * until the peer closes too or the deadline passes (RFC 9112 9.6). */
static void ch__conn_linger(ch_conn_t *c) {
  if (c->lingering) return;
  if (c->tls || c->in_read) {
    if (!c->in_read) ch_conn_close(c);
    else ch__conn_mark_pending(c); /* retried at the flush, after the read callback */
    return;
  }
  c->lingering = 1;
  uv_shutdown_t *req = ch_xmalloc(sizeof(*req));
  if (uv_shutdown(req, (uv_stream_t *)&c->tcp, ch__conn_shutdown_cb) != 0) {
    free(req);
    ch_conn_close(c);
    return;
  }
  uint64_t linger_deadline = c->loop->now_ms + 2000;
  if (!c->close_deadline_ms || c->close_deadline_ms > linger_deadline) c->close_deadline_ms = linger_deadline;
  c->reading_paused = 0;
  uv_read_start((uv_stream_t *)&c->tcp, ch__conn_alloc_cb, ch__conn_read_cb);
}

/* TLS: encrypt up to CH__WRITE_MAX of queued plaintext (whole items, from
 * the head) and take the ciphertext, with any handshake records, as tls_out.
 * Returns 0 (tls_out may still be NULL: nothing to send) or CH_ETLS. */
static int ch__conn_tls_fill(ch_conn_t *c) {
  for (;;) {
    size_t n = 0;
    while (c->qcount > 0 && n < CH__WRITE_MAX) {
      ch_outq_item_t *it = &c->q[c->qhead];
      size_t len = it->chunk->len - it->off;
      if (ch_tls_write(c->tls, it->chunk->data + it->off, len) < 0) return CH_ETLS;
      c->qbytes -= len;
      n += len;
      ch__q_pop(c);
    }
    ch__q_release_if_empty(c);
    ch_chunk_t *k = ch_tls_take_output(c->tls);
    if (k) {
      c->tls_out = k;
      c->tls_off = 0;
      c->qbytes += k->len;
      return 0;
    }
    /* No output for plaintext taken: the handshake has not finished and it
     * waits in the TLS early buffer. Go on until the ring is empty. */
    if (c->qcount == 0) return 0;
  }
}

/* n bytes were written. */
static void ch__conn_consume(ch_conn_t *c, size_t n) {
  if (c->tls) {
    c->qbytes -= n;
    c->tls_off += n;
    if (c->tls_out && c->tls_off >= c->tls_out->len) {
      ch_chunk_unref(c->tls_out);
      c->tls_out = NULL;
      c->tls_off = 0;
    }
  } else {
    ch__outq_consume(c, n);
  }
}

/* Fill iov from the unwritten bytes: at most CH__IOV_MAX items, and no
 * further items once max bytes are reached. Returns the count. */
static unsigned ch__conn_iov(ch_conn_t *c, uv_buf_t *iov, size_t max, size_t *total) {
  unsigned n = 0;
  *total = 0;
  if (c->tls) {
    if (c->tls_out) {
      iov[n++] = uv_buf_init(c->tls_out->data + c->tls_off, (unsigned)(c->tls_out->len - c->tls_off));
      *total = iov[0].len;
    }
    return n;
  }
  for (uint32_t i = 0; i < c->qcount && n < CH__IOV_MAX && (n == 0 || *total < max); i++) {
    ch_outq_item_t *it = ch__q_at(c, i);
    iov[n] = uv_buf_init(it->chunk->data + it->off, (unsigned)(it->chunk->len - it->off));
    *total += iov[n].len;
    n++;
  }
  return n;
}

void ch__conn_flush(ch_conn_t *c) {
  if (c->writing || uv_is_closing((uv_handle_t *)&c->tcp)) return;
  for (;;) {
    if (c->tls && c->tls_out == NULL && ch__conn_tls_fill(c) < 0) {
      ch_log_debug("conn %llu: TLS encryption failed", (unsigned long long)c->id);
      ch_conn_close(c);
      return;
    }
    uv_buf_t iov[CH__IOV_MAX];
    size_t total;
    unsigned n = ch__conn_iov(c, iov, SIZE_MAX, &total);
    if (n == 0) break;
    int r = uv_try_write((uv_stream_t *)&c->tcp, iov, n);
    CH_STAT_ADD(&c->loop->stats, writes, 1);
    if (r == UV_EAGAIN || r == UV_ENOSYS) r = 0;
    if (r < 0) {
      ch_log_debug("conn %llu: write error: %s", (unsigned long long)c->id, uv_strerror(r));
      ch_conn_close(c);
      return;
    }
    CH_STAT_ADD(&c->loop->stats, bytes_out, (uint64_t)r);
    ch__conn_consume(c, (size_t)r);
    if ((size_t)r == total) continue; /* more than CH__IOV_MAX items, or TLS: go again */
    /* The kernel buffer is full: hand libuv a bounded part of the rest and
     * wait for writability. What is not handed over stays overtakable. */
    n = ch__conn_iov(c, iov, CH__WRITE_MAX, &total);
    c->wreq.data = c;
    r = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, iov, n, ch__conn_write_cb);
    if (r < 0) {
      ch_conn_close(c);
      return;
    }
    if (!c->tls) ch__outq_started(c, n);
    c->writing = 1;
    c->inflight_bytes = total;
    return;
  }
  ch__conn_maybe_resume_reading(c);
  if (c->close_after_flush) ch__conn_linger(c);
}

static void ch__conn_write_cb(uv_write_t *req, int status) {
  ch_conn_t *c = req->data;
  c->writing = 0;
  if (status < 0) {
    c->inflight_bytes = 0;
    ch_conn_close(c);
    return;
  }
  CH_STAT_ADD(&c->loop->stats, bytes_out, c->inflight_bytes);
  ch__conn_consume(c, c->inflight_bytes);
  c->inflight_bytes = 0;
  ch__conn_flush(c);
}

/* ---- reading ----------------------------------------------------------- */

static void ch__conn_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  ch_conn_t *c = h->data;
  *buf = uv_buf_init(c->loop->rbuf, CH_LOOP_RBUF_SIZE);
}

static int ch__conn_plain_cb(void *ud, char *data, size_t len) {
  ch_conn_t *c = ud;
  if (c->closing && !c->close_after_flush) return CH_ECLOSED;
  if (c->proto == NULL) return 0; /* detached (refused upgrade) and closing: drop */
  return c->proto->on_read(c, data, len);
}

static void ch__conn_pause_reading(ch_conn_t *c) {
  if (!c->reading_paused) {
    c->reading_paused = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
  }
}

static void ch__conn_maybe_resume_reading(ch_conn_t *c) {
  if (c->reading_paused && !c->closing && c->qbytes <= ch_conn_limits.pause_reading / 2) {
    c->reading_paused = 0;
    uv_read_start((uv_stream_t *)&c->tcp, ch__conn_alloc_cb, ch__conn_read_cb);
  }
}

static void ch__conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  ch_conn_t *c = s->data;
  if (nread == 0) return;
  if (nread < 0) {
    ch_conn_close(c);
    return;
  }
  CH_STAT_ADD(&c->loop->stats, bytes_in, (uint64_t)nread);
  if (c->close_after_flush && !c->tls) return; /* ending: input is read only to be discarded */
  int r;
  c->in_read = 1;
  if (c->tls) {
    r = ch_tls_read(c->tls, buf->base, (size_t)nread, ch__conn_plain_cb, c);
    if (r == CH_ETLS) CH_STAT_ADD(&c->loop->stats, tls_handshake_errors, 1);
    if (r >= 0 || r == CH_ETLS) {
      /* Handshake records (or a TLS alert) must go out even without app data. */
      if (ch_tls_has_output(c->tls)) ch__conn_mark_pending(c);
    }
    if (r == CH_ETLS) {
      ch_conn_close_after_flush(c, 1000);
      c->closing = 1;
      r = 0;
    }
  } else {
    r = c->closing || c->proto == NULL ? 0 : c->proto->on_read(c, buf->base, (size_t)nread);
  }
  c->in_read = 0;
  if (r < 0 || c->close_pending) {
    ch_conn_close(c);
    return;
  }
  if (c->qbytes > ch_conn_limits.pause_reading) ch__conn_pause_reading(c);
}

void ch__conn_accepted(ch_loop_t *l, ch_conn_t *c) {
  ch_list_insert_tail(&l->conns, &c->node);
  CH_STAT_ADD(&l->stats, conns_open, 1);
  CH_STAT_ADD(&l->stats, conns_accepted, 1);
  c->created_ms = l->now_ms;
  uv_tcp_nodelay(&c->tcp, 1);
  /* Keep a backlog in the ring, where urgent frames can overtake it, rather
   * than in the kernel's send buffer (up to megabytes), where they cannot.
   * Best effort: without it pings only wait longer. */
  uv_os_fd_t fd;
  int lowat = CH__NOTSENT_LOWAT;
  if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof(lowat));
  struct sockaddr_storage ss;
  int alen = sizeof(ss);
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &alen) == 0) {
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss.ss_family == AF_INET) {
      uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof(ip));
      port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
      port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    snprintf(c->peer, sizeof(c->peer), "%s:%d", ip, port);
  }
  if (ch_tls_enabled()) c->tls = ch_tls_new();
  l->on_accept(l, c);
  if (!c->closing) uv_read_start((uv_stream_t *)&c->tcp, ch__conn_alloc_cb, ch__conn_read_cb);
}

/* ---- closing ----------------------------------------------------------- */

static void ch__conn_close_cb(uv_handle_t *h) {
  ch_conn_t *c = h->data;
  ch__q_clear(c, 0);
  if (c->tls_out) ch_chunk_unref(c->tls_out);
  ch_tls_free(c->tls);
  free(c);
}

void ch_conn_close(ch_conn_t *c) {
  if (uv_is_closing((uv_handle_t *)&c->tcp)) return;
  c->closing = 1;
  if (c->in_read) {
    /* The protocol is on the stack: its state must outlive this call. */
    c->close_pending = 1;
    return;
  }
  if (ch_list_linked(&c->pending_node)) ch_list_remove(&c->pending_node);
  if (ch_list_linked(&c->node)) {
    ch_list_remove(&c->node);
    CH_STAT_SUB(&c->loop->stats, conns_open, 1);
  }
  if (c->proto && c->proto->on_close) c->proto->on_close(c);
  c->proto = NULL;
  c->proto_state = NULL;
  /* Queued chunks are released in the close callback: an in-flight uv_write
   * still points into them until libuv cancels it. */
  uv_close((uv_handle_t *)&c->tcp, ch__conn_close_cb);
}

void ch_conn_close_after_flush(ch_conn_t *c, uint64_t deadline_ms) {
  if (uv_is_closing((uv_handle_t *)&c->tcp)) return;
  c->close_after_flush = 1;
  c->close_deadline_ms = c->loop->now_ms + deadline_ms;
  if (c->tls) uv_read_stop((uv_stream_t *)&c->tcp);
  /* Plain TCP keeps reading (and discarding): see ch__conn_linger. The flush
   * at the end of this turn ends the connection once the queue is empty. */
  ch__conn_mark_pending(c);
}

void ch_conn_read_once(ch_conn_t *c) {
  if (!c->reading_paused || c->closing || c->close_after_flush || uv_is_closing((uv_handle_t *)&c->tcp))
    return;
  /* The read callback pauses again after this read if the queue is still
   * above the mark. */
  c->reading_paused = 0;
  uv_read_start((uv_stream_t *)&c->tcp, ch__conn_alloc_cb, ch__conn_read_cb);
}

void ch_conn_set_proto(ch_conn_t *c, const ch_conn_proto_t *proto, void *state) {
  c->proto = proto;
  c->proto_state = state;
}

void ch__conn_sweep(ch_conn_t *c, uint64_t now_ms) {
  if (c->close_deadline_ms && now_ms >= c->close_deadline_ms) {
    ch_conn_close(c);
    return;
  }
  if (c->proto && c->proto->on_sweep && !c->closing) c->proto->on_sweep(c, now_ms);
}
