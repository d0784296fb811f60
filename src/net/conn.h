/*
 * conn.h — a TCP (optionally TLS) connection and its output queue.
 *
 * A connection belongs to one loop for its whole life. The byte stream is
 * handed to the current protocol (HTTP first; WebSocket or SSE after an
 * upgrade) through a small vtable, so upgrading is swapping `proto` and
 * `proto_state`.
 *
 * Output path (the only one):
 *
 *   ch_conn_send(c, chunk) ──> outq ring of (chunk ref, offset) ──> c on loop->pending
 *                                                                      │ uv_prepare
 *                                       uv_try_write(iov[]) ◄──────────┘
 *                                       remainder: one uv_write(iov[]) in flight
 *
 * Chunks are shared and immutable: a broadcast frame is referenced by every
 * subscriber's queue and released as each socket takes it. With TLS, plaintext
 * is encrypted at send time into a per-connection buffer that becomes one
 * chunk per flush.
 *
 * Backpressure: when queued bytes pass max_outbound the connection is a slow
 * consumer: queued chunks not yet started are dropped, the protocol's last
 * words (a WebSocket close 1013) are queued, and the socket is closed once
 * they are written or after a short deadline. Reading pauses while more than
 * pause_reading bytes are queued, so a fast pipelining client throttles
 * itself instead of being dropped.
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

#define CH_OUTQ_INLINE 4 /* queue slots inside the connection (power of two) */

typedef struct {
  ch_chunk_t *chunk; /* one reference owned by the queue */
  size_t off;        /* bytes of chunk already written */
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
  size_t qbytes;                 /* unwritten bytes queued */
  size_t inflight_bytes;         /* bytes handed to the uv_write in flight */
  size_t tls_plain;              /* TLS: plaintext encrypted since the last flush (in qbytes) */
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

/* Queue a chunk for sending; takes ownership of one reference. Returns 0, or
 * CH_ECLOSED (chunk released) when the connection is closing. */
int ch_conn_send(ch_conn_t *c, ch_chunk_t *k);
/* Copy bytes into a new chunk and queue it. */
int ch_conn_send_copy(ch_conn_t *c, const void *p, size_t len);
/* Close now (queued output is dropped). Safe to call twice. */
void ch_conn_close(ch_conn_t *c);
/* Close once everything queued has been written, or after deadline_ms. */
void ch_conn_close_after_flush(ch_conn_t *c, uint64_t deadline_ms);
/* Switch protocol (the old proto_state must already be released by the caller). */
void ch_conn_set_proto(ch_conn_t *c, const ch_conn_proto_t *proto, void *state);

/* Loop-internal (net/ only). */
void ch__conn_accepted(ch_loop_t *l, ch_conn_t *c);
void ch__conn_flush(ch_conn_t *c);
void ch__conn_sweep(ch_conn_t *c, uint64_t now_ms);
ch_conn_t *ch__conn_new(ch_loop_t *l);

#endif
