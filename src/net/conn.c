/*
 * conn.c — connection life cycle, output queue and corked writes (see conn.h).
 */
#include "net/conn.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "net/tls.h"

#define CH__IOV_MAX 64 /* iovecs per write: bounds the work of one flush */

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

static void ch__q_push(ch_conn_t *c, ch_chunk_t *k) {
  if (c->qcap == 0) {
    /* The common case — a few frames per turn — needs no allocation. */
    c->q = c->qinline;
    c->qcap = CH_OUTQ_INLINE;
    c->qhead = 0;
  }
  if (c->qcount == c->qcap) {
    uint32_t ncap = c->qcap * 2;
    ch_outq_item_t *nq = ch_xmalloc(ncap * sizeof(*nq));
    for (uint32_t i = 0; i < c->qcount; i++) nq[i] = c->q[(c->qhead + i) & (c->qcap - 1)];
    if (c->q != c->qinline) free(c->q);
    c->q = nq;
    c->qcap = ncap;
    c->qhead = 0;
  }
  c->q[(c->qhead + c->qcount) & (c->qcap - 1)] = (ch_outq_item_t){k, 0};
  c->qcount++;
  c->qbytes += k->len;
}

/* Release n written bytes from the head of the queue. */
static void ch__q_consume(ch_conn_t *c, size_t n) {
  c->qbytes -= n;
  while (n > 0) {
    ch_outq_item_t *it = &c->q[c->qhead];
    size_t left = it->chunk->len - it->off;
    if (n < left) {
      it->off += n;
      return;
    }
    n -= left;
    ch_chunk_unref(it->chunk);
    c->qhead = (c->qhead + 1) & (c->qcap - 1);
    c->qcount--;
  }
  if (c->qcount == 0) {
    /* Drained: give the ring back so idle connections hold no queue. */
    if (c->q != c->qinline) free(c->q);
    c->q = NULL;
    c->qcap = c->qhead = 0;
  }
}

static void ch__q_clear(ch_conn_t *c, int keep_started) {
  uint32_t keep = 0;
  if (keep_started && c->qcount > 0 && (c->q[c->qhead].off > 0 || c->writing)) {
    /* Items handed to the write in flight (or partly written) must stay. */
    size_t inflight = c->inflight_bytes;
    while (keep < c->qcount) {
      ch_outq_item_t *it = &c->q[(c->qhead + keep) & (c->qcap - 1)];
      size_t left = it->chunk->len - it->off;
      if (inflight == 0 && it->off == 0) break;
      keep++;
      if (inflight <= left) {
        inflight = 0;
        if (it->off == 0 && !c->writing) break;
      } else {
        inflight -= left;
      }
    }
  }
  while (c->qcount > keep) {
    uint32_t idx = (c->qhead + c->qcount - 1) & (c->qcap - 1);
    c->qbytes -= c->q[idx].chunk->len - c->q[idx].off;
    ch_chunk_unref(c->q[idx].chunk);
    c->qcount--;
  }
  if (c->qcount == 0) {
    if (c->q != c->qinline) free(c->q);
    c->q = NULL;
    c->qcap = c->qhead = 0;
  }
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
    if (c->tls) {
      ch_tls_write(c->tls, last->data, last->len);
      ch_chunk_unref(last);
    } else {
      ch__q_push(c, last);
    }
    ch__conn_mark_pending(c);
  }
  ch_conn_close_after_flush(c, 5000);
  c->closing = 1; /* refuse further sends; the close happens after the flush */
}

int ch_conn_send(ch_conn_t *c, ch_chunk_t *k) {
  if (c->closing) {
    ch_chunk_unref(k);
    return CH_ECLOSED;
  }
  if (c->tls) {
    int r = ch_tls_write(c->tls, k->data, k->len);
    c->qbytes += k->len; /* accounted until the flush turns it into ciphertext */
    c->tls_plain += k->len;
    ch_chunk_unref(k);
    if (r < 0) {
      ch_conn_close(c);
      return r;
    }
  } else {
    ch__q_push(c, k);
  }
  ch__conn_mark_pending(c);
  if (c->qbytes > ch_conn_limits.max_outbound) {
    ch__conn_overflow(c);
    return CH_ELIMIT;
  }
  return 0;
}

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

void ch__conn_flush(ch_conn_t *c) {
  if (c->writing || uv_is_closing((uv_handle_t *)&c->tcp)) return;
  if (c->tls) {
    /* Plaintext was accounted in qbytes by ch_conn_send; swap it for ciphertext. */
    c->qbytes -= c->tls_plain;
    c->tls_plain = 0;
    ch_chunk_t *k = ch_tls_take_output(c->tls);
    if (k) ch__q_push(c, k);
  }
  while (c->qcount > 0) {
    uv_buf_t iov[CH__IOV_MAX];
    unsigned n = 0;
    size_t total = 0;
    for (uint32_t i = 0; i < c->qcount && n < CH__IOV_MAX; i++) {
      ch_outq_item_t *it = &c->q[(c->qhead + i) & (c->qcap - 1)];
      iov[n] = uv_buf_init(it->chunk->data + it->off, (unsigned)(it->chunk->len - it->off));
      total += iov[n].len;
      n++;
    }
    int r = uv_try_write((uv_stream_t *)&c->tcp, iov, n);
    CH_STAT_ADD(&c->loop->stats, writes, 1);
    if (r == UV_EAGAIN || r == UV_ENOSYS) r = 0;
    if (r < 0) {
      ch_log_debug("conn %llu: write error: %s", (unsigned long long)c->id, uv_strerror(r));
      ch_conn_close(c);
      return;
    }
    CH_STAT_ADD(&c->loop->stats, bytes_out, (uint64_t)r);
    ch__q_consume(c, (size_t)r);
    if ((size_t)r == total) continue; /* more than CH__IOV_MAX items: go again */
    /* The kernel buffer is full: hand the rest to libuv and wait for writability. */
    n = 0;
    total = 0;
    for (uint32_t i = 0; i < c->qcount && n < CH__IOV_MAX; i++) {
      ch_outq_item_t *it = &c->q[(c->qhead + i) & (c->qcap - 1)];
      iov[n] = uv_buf_init(it->chunk->data + it->off, (unsigned)(it->chunk->len - it->off));
      total += iov[n].len;
      n++;
    }
    c->wreq.data = c;
    r = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, iov, n, ch__conn_write_cb);
    if (r < 0) {
      ch_conn_close(c);
      return;
    }
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
  ch__q_consume(c, c->inflight_bytes);
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
