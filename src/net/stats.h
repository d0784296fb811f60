/*
 * stats.h — per-loop counters.
 *
 * Each counter has exactly one writer (its loop's thread) and any number of
 * readers (/metrics, /api/status on whatever loop serves them). Counters are
 * C11 atomics updated with a relaxed load + store: no lock prefix on the hot
 * path, and no data race for the readers.
 */
#ifndef CH_NET_STATS_H
#define CH_NET_STATS_H

#include <stdatomic.h>
#include <stdint.h>

/* X(name, help) — drives the struct and the /metrics output. */
#define CH_LOOP_STATS(X)                                                         \
  X(conns_open, gauge, "open connections (all protocols)")                       \
  X(conns_accepted, counter, "connections accepted")                             \
  X(ws_open, gauge, "open WebSocket connections")                                \
  X(sse_open, gauge, "open Server-Sent Events streams")                          \
  X(http_requests, counter, "HTTP requests served")                              \
  X(frames_in, counter, "WebSocket messages received")                           \
  X(frames_out, counter, "WebSocket frames queued for sending")                  \
  X(bytes_in, counter, "bytes read from sockets")                                \
  X(bytes_out, counter, "bytes written to sockets")                              \
  X(writes, counter, "write system calls (writev) issued")                       \
  X(slow_consumers_dropped, counter, "connections closed for exceeding max-outbound") \
  X(ws_pong_timeouts, counter, "WebSocket peers dropped for silence past pong-timeout") \
  X(protocol_errors, counter, "connections closed for protocol errors")          \
  X(tls_handshake_errors, counter, "failed TLS handshakes")                      \
  X(broadcasts, counter, "broadcast messages delivered to this loop")            \
  X(deliveries, counter, "broadcast deliveries to connections")                  \
  X(subscriptions, gauge, "conversation subscriptions (joins) held by clients")  \
  X(acks, counter, "message acknowledgements sent after a durable commit")      \
  X(client_errors, counter, "error frames sent to clients")

typedef struct ch_loop_stats_s {
#define CH__STAT_FIELD(name, type, help) _Atomic uint64_t name;
  CH_LOOP_STATS(CH__STAT_FIELD)
#undef CH__STAT_FIELD
} ch_loop_stats_t;

#define CH_STAT_ADD(s, field, n)                                                     \
  atomic_store_explicit(&(s)->field,                                                 \
                        atomic_load_explicit(&(s)->field, memory_order_relaxed) + (n), \
                        memory_order_relaxed)
#define CH_STAT_SUB(s, field, n) CH_STAT_ADD(s, field, -(uint64_t)(n))
#define CH_STAT_GET(s, field) atomic_load_explicit(&(s)->field, memory_order_relaxed)

#endif
