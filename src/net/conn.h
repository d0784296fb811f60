/*
 * conn.h — a TCP (optionally TLS) connection and its output queue.
 *
 * A connection belongs to one loop for its whole life. The byte stream is
 * handed to the current protocol (HTTP first; WebSocket or SSE after an
 * upgrade) through a small vtable, so upgrading is swapping `proto` and
 * `proto_state`.
 *
 * Output path:
 *
 *   ch_conn_send(c, chunk) ──────> outq ring of (chunk ref, offset, flags) ──> c on loop->pending
 *   ch_conn_send_urgent(c, ping) ─┘ (spliced ahead of unstarted data)            │ uv_prepare
 *                                       uv_try_write(iov[]) ◄────────────────────┘
 *                                       remainder (≤ 256 KiB): one uv_write in flight
 *
 * Chunks are shared and immutable: a broadcast frame is referenced by every
 * subscriber's queue and released as each socket takes it.
 *
 * Urgent items (WebSocket pings and pongs) bypass queued data, so a peer
 * with seconds of backlog still hears a ping at once. The ring around an
 * urgent insert:
 *
 *   head                                                            tail
 *   [ started: partly written or in the uv_write ][ fixed ][ data, unstarted ... ]
 *     never moved or split                         │        ^ urgent goes here (qfloor)
 *                                                  └ earlier urgent items (FIFO) and
 *                                                    ORDERED items (the 101, a close)
 *
 * and never before a CONT item, which continues the previous item's frame: a
 * frame queued as several chunks is never split by a control frame (RFC 6455
 * 5.4 allows those only between the frames of a fragmented message). The
 * splice moves the shorter side of the ring by one slot: the fixed prefix is
 * bounded (≤ 64 iovecs in flight, ≤ CH_OUTQ_URGENT_MAX unsent urgent items
 * before coalescing), so the insert is O(1) and allocation-free while the
 * ring fits its CH_OUTQ_INLINE slots. The kernel holds at most ~128 KiB of
 * not-yet-sent bytes (TCP_NOTSENT_LOWAT) and one uv_write at most ~256 KiB,
 * so what an urgent frame waits behind is bounded too; the rest of a backlog
 * stays in the ring where it can be overtaken.
 *
 * TLS: ordering is decided where plaintext is encrypted, so the ring holds
 * plaintext and the flush encrypts it (≤ 256 KiB per pass) just before the
 * socket needs it; one ciphertext chunk (tls_out) is written at a time.
 *
 * Backpressure: when queued bytes pass max_outbound the connection is a slow
 * consumer: queued chunks not yet started are dropped (a started frame is
 * finished), the protocol's last words (a WebSocket close 1013) are queued,
 * and the socket is closed once they are written or after a short deadline.
 * Urgent bytes count in qbytes like any other, but an urgent send never
 * triggers the overflow itself: the next data send does, so a ping is never
 * what pushes a connection over. Reading pauses while more than
 * pause_reading bytes are queued, so a fast pipelining client throttles
 * itself instead of being dropped; ch_conn_read_once() lets a protocol hear
 * one more read's worth (a pong) while paused.
 *
 * Closing has two phases (libuv): ch_conn_close() asks, the close callback
 * frees. A connection closed from inside its own callback stays valid until
 * that callback returns.
 */
#ifndef CH_NET_CONN_H
#define CH_NET_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"
#include "core/list.h"
#include "net/loop.h"

typedef struct ch_tls_s ch_tls_t;

typedef struct ch_conn_proto_s {
  const char *name;
  /* Plaintext bytes arrived. data is writable and only valid during the call.
   * Return 0, or a negative code to close the connection at once. */
  int (*on_read)(ch_conn_t *c, char *data, size_t len);
  /* Once a second (loop->now_ms is current). May close the connection. */
  void (*on_sweep)(ch_conn_t *c, uint64_t now_ms);
  /* Slow consumer: return the last words to queue (one reference), or NULL. */
  ch_chunk_t *(*on_overflow)(ch_conn_t *c);
  /* The server is shutting down: say goodbye (e.g. close 1001) and close. */
  void (*on_shutdown)(ch_conn_t *c);
  /* The connection is going away: free proto_state. Called exactly once. */
  void (*on_close)(ch_conn_t *c);
} ch_conn_proto_t;

#define CH_OUTQ_INLINE 4     /* queue slots inside the connection (power of two) */
#define CH_OUTQ_URGENT_MAX 64 /* unsent urgent items before COALESCE items replace each other */

/* ch_conn_send_flags() flags, kept on the queue item. */
enum {
  CH_CONN_SEND_URGENT = 1u << 0,   /* ahead of unstarted data (see the diagram above) */
  CH_CONN_SEND_COALESCE = 1u << 1, /* with URGENT: once CH_OUTQ_URGENT_MAX urgent items wait, replaces
                                      the last one if it is an unsent COALESCE item too (a pong
                                      answering only the latest ping, RFC 6455 5.5.3) */
  CH_CONN_SEND_ORDERED = 1u << 2,  /* no later urgent item overtakes this one (a 101, a close frame) */
  CH_CONN_SEND_CONT = 1u << 3,     /* continues the previous item's frame: nothing goes in between */
};

typedef struct {
  ch_chunk_t *chunk; /* one reference owned by the queue */
  size_t off;        /* bytes of chunk already written (TLS: always 0, items are encrypted whole) */
  unsigned flags;    /* CH_CONN_SEND_* it was queued with */
} ch_outq_item_t;

struct ch_conn_s {
  uv_tcp_t tcp;                  /* first: handles cast back to the conn */
  ch_loop_t *loop;               /* owner loop; not owned */
  const ch_conn_proto_t *proto;  /* current protocol (static vtable) */
  void *proto_state;             /* owned by the protocol, freed in on_close */
  ch_tls_t *tls;                 /* owned; NULL for plain TCP */
  ch_list_t node;                /* in loop->conns */
  ch_list_t pending_node;        /* in loop->pending while output waits */
  ch_outq_item_t *q;             /* the ring: qinline, or owned heap memory past CH_OUTQ_INLINE items
                                    (freed when drained); NULL when empty */
  ch_outq_item_t qinline[CH_OUTQ_INLINE]; /* small ring without allocation */
  uint32_t qhead, qcount, qcap;  /* ring indexes; qcap is a power of two */
  uint32_t qsent;                /* items at the head that are started (partly written, or in the
                                    uv_write in flight): never moved, split or dropped */
  uint32_t qfloor;               /* items at the head no urgent item may overtake (≥ the urgent and
                                    ORDERED items queued so far; qsent is checked separately) */
  size_t qbytes;                 /* unwritten bytes queued: ring items + tls_out */
  size_t inflight_bytes;         /* bytes handed to the uv_write in flight */
  ch_chunk_t *tls_out;           /* TLS: ciphertext being written (one reference, owned), or NULL */
  size_t tls_off;                /* bytes of tls_out already written */
  uv_write_t wreq;               /* the one write in flight */
  uint64_t close_deadline_ms;    /* force-close after this (0: none) */
  uint64_t created_ms;
  uint64_t id;                   /* unique per process */
  unsigned writing : 1;          /* wreq in flight */
  unsigned closing : 1;          /* ch_conn_close called */
  unsigned close_after_flush : 1;/* close once the queue is empty */
  unsigned reading_paused : 1;   /* read stopped for backpressure */
  unsigned in_read : 1;          /* inside on_read */
  unsigned close_pending : 1;    /* ch_conn_close called inside on_read: close after it */
  unsigned lingering : 1;        /* write side shut down; draining input until EOF or deadline */
  char peer[64];                 /* "ip:port" for logs */
};

/* Limits shared by all connections (set once from the config at start-up). */
typedef struct {
  size_t max_outbound;   /* slow-consumer cap on queued bytes */
  size_t pause_reading;  /* stop reading above this many queued bytes */
} ch_conn_limits_t;
extern ch_conn_limits_t ch_conn_limits;

/* Queue a chunk for sending; takes ownership of one reference. Returns 0,
 * CH_ECLOSED (chunk released) when the connection is closing, or CH_ELIMIT
 * when this send made the connection a slow consumer (it is closing now). */
int ch_conn_send(ch_conn_t *c, ch_chunk_t *k);
/* ch_conn_send with CH_CONN_SEND_* flags. An URGENT send never returns
 * CH_ELIMIT (it does not trigger the overflow; its bytes still count). */
int ch_conn_send_flags(ch_conn_t *c, ch_chunk_t *k, unsigned flags);
/* A small control frame ahead of queued data that has not started to be
 * written: ch_conn_send_flags(c, k, CH_CONN_SEND_URGENT). */
static inline int ch_conn_send_urgent(ch_conn_t *c, ch_chunk_t *k) {
  return ch_conn_send_flags(c, k, CH_CONN_SEND_URGENT);
}
/* Copy bytes into a new chunk and queue it. */
int ch_conn_send_copy(ch_conn_t *c, const void *p, size_t len);
/* Close now (queued output is dropped). Safe to call twice. */
void ch_conn_close(ch_conn_t *c);
/* Close once everything queued has been written, or after deadline_ms. */
void ch_conn_close_after_flush(ch_conn_t *c, uint64_t deadline_ms);
/* Switch protocol (the old proto_state must already be released by the caller). */
void ch_conn_set_proto(ch_conn_t *c, const ch_conn_proto_t *proto, void *state);
/* Reading is paused for backpressure: read once more (at most one read
 * buffer, 64 KiB) and pause again if the queue is still above the mark, so a
 * protocol waiting for a pong can hear it. No-op unless paused and open. */
void ch_conn_read_once(ch_conn_t *c);

/* Loop-internal (net/ only). */
void ch__conn_accepted(ch_loop_t *l, ch_conn_t *c);
void ch__conn_flush(ch_conn_t *c);
void ch__conn_sweep(ch_conn_t *c, uint64_t now_ms);
ch_conn_t *ch__conn_new(ch_loop_t *l);
/* The ring itself (net/ and its unit tests): push as ch_conn_send_flags
 * does without the closing/overflow checks; mark the first n items started
 * (handed to a write); release n written bytes from the head. */
void ch__outq_push(ch_conn_t *c, ch_chunk_t *k, unsigned flags);
void ch__outq_started(ch_conn_t *c, uint32_t n);
void ch__outq_consume(ch_conn_t *c, size_t n);

#endif
