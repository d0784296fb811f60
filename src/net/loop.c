/*
 * loop.c — per-thread event loops: listener, inbox, flush, sweep (see loop.h).
 */
#include "net/loop.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "net/conn.h"

typedef struct {
  ch_list_t node;
  ch_loop_task_cb cb;
  void *arg;
} ch_loop_task_t;

static void ch__loop_flush_cb(uv_prepare_t *h) {
  ch_loop_t *l = h->data;
  /* Flushing may re-queue a conn (partial write): detach the list first. */
  while (!ch_list_empty(&l->pending)) {
    ch_list_t *n = l->pending.next;
    ch_list_remove(n);
    ch__conn_flush(CH_LIST_DATA(n, ch_conn_t, pending_node));
  }
}

static void ch__loop_inbox_cb(uv_async_t *h) {
  ch_loop_t *l = h->data;
  ch_list_t batch;
  ch_list_init(&batch);
  uv_mutex_lock(&l->inbox_lock);
  if (!ch_list_empty(&l->inbox)) {
    batch.next = l->inbox.next;
    batch.prev = l->inbox.prev;
    batch.next->prev = &batch;
    batch.prev->next = &batch;
    ch_list_init(&l->inbox);
  }
  uv_mutex_unlock(&l->inbox_lock);
  while (!ch_list_empty(&batch)) {
    ch_list_t *n = batch.next;
    ch_list_remove(n);
    ch_loop_task_t *t = CH_LIST_DATA(n, ch_loop_task_t, node);
    t->cb(l, t->arg);
    free(t);
  }
}

static void ch__loop_sweep_cb(uv_timer_t *h) {
  ch_loop_t *l = h->data;
  l->now_ms = ch_clock_mono_ms();
  ch_list_t *it, *tmp;
  ch_list_foreach_safe(it, tmp, &l->conns) {
    ch__conn_sweep(CH_LIST_DATA(it, ch_conn_t, node), l->now_ms);
  }
}

static void ch__loop_on_connection(uv_stream_t *server, int status) {
  ch_loop_t *l = server->data;
  if (status < 0) {
    ch_log_warn("loop %d: accept error: %s", l->id, uv_strerror(status));
    return;
  }
  ch_conn_t *c = ch__conn_new(l);
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    ch_conn_close(c);
    return;
  }
  ch__conn_accepted(l, c);
}

int ch_loop_init(ch_loop_t *l, int id, void *owner, ch_loop_accept_cb on_accept) {
  memset(l, 0, sizeof(*l));
  l->id = id;
  l->owner = owner;
  l->on_accept = on_accept;
  if (uv_loop_init(&l->uv) != 0) return CH_EIO;
  l->uv.data = l;
  ch_list_init(&l->inbox);
  ch_list_init(&l->conns);
  ch_list_init(&l->pending);
  uv_mutex_init(&l->inbox_lock);
  l->rbuf = ch_xmalloc(CH_LOOP_RBUF_SIZE);
  uv_prepare_init(&l->uv, &l->flush);
  l->flush.data = l;
  uv_prepare_start(&l->flush, ch__loop_flush_cb);
  uv_async_init(&l->uv, &l->inbox_async, ch__loop_inbox_cb);
  l->inbox_async.data = l;
  uv_timer_init(&l->uv, &l->sweep);
  l->sweep.data = l;
  uv_timer_start(&l->sweep, ch__loop_sweep_cb, 1000, 1000);
  l->now_ms = ch_clock_mono_ms();
  return 0;
}

static int ch__loop_addr(const char *host, int port, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof(*ss));
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0) return 0;
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0) return 0;
  return CH_EINVAL;
}

int ch_loop_probe(const char *host, int port) {
  struct sockaddr_storage ss;
  if (ch__loop_addr(host, port, &ss) != 0) {
    ch_log_error("listen: '%s' is not an IP address", host);
    return CH_EINVAL;
  }
  /* Without SO_REUSEPORT: fails if anything (another chorus included) holds the port. */
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return CH_EIO;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  socklen_t alen = ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
  int rc = bind(fd, (struct sockaddr *)&ss, alen) == 0 ? 0 : CH_EBUSY;
  if (rc) ch_log_error("listen on %s:%d: %s", host, port, strerror(errno));
  close(fd);
  return rc;
}

int ch_loop_listen(ch_loop_t *l, const char *host, int port, int backlog) {
  struct sockaddr_storage ss;
  if (ch__loop_addr(host, port, &ss) != 0) {
    ch_log_error("listen: '%s' is not an IP address", host);
    return CH_EINVAL;
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) goto Fail;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) goto Fail;
  if (ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  socklen_t alen = ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
  if (bind(fd, (struct sockaddr *)&ss, alen) != 0) goto Fail;
  uv_tcp_init(&l->uv, &l->listener);
  l->listener.data = l;
  if (uv_tcp_open(&l->listener, fd) != 0) {
    uv_close((uv_handle_t *)&l->listener, NULL);
    close(fd);
    return CH_EIO;
  }
  l->listening = 1;
  int r = uv_listen((uv_stream_t *)&l->listener, backlog, ch__loop_on_connection);
  if (r != 0) {
    ch_log_error("listen on %s:%d: %s", host, port, uv_strerror(r));
    return CH_EIO;
  }
  return 0;
Fail:
  ch_log_error("listen on %s:%d: %s", host, port, strerror(errno));
  if (fd >= 0) close(fd);
  return CH_EIO;
}

void ch_loop_post(ch_loop_t *l, ch_loop_task_cb cb, void *arg) {
  ch_loop_task_t *t = ch_xmalloc(sizeof(*t));
  t->cb = cb;
  t->arg = arg;
  uv_mutex_lock(&l->inbox_lock);
  ch_list_insert_tail(&l->inbox, &t->node);
  uv_mutex_unlock(&l->inbox_lock);
  uv_async_send(&l->inbox_async);
}

void ch_loop_stop_accepting(ch_loop_t *l) {
  if (l->listening) {
    l->listening = 0;
    uv_close((uv_handle_t *)&l->listener, NULL);
  }
}

void ch_loop_stop(ch_loop_t *l) {
  ch_loop_stop_accepting(l);
  /* Remaining connections are closed abruptly: the graceful part is over. */
  ch_list_t *it, *tmp;
  ch_list_foreach_safe(it, tmp, &l->conns) ch_conn_close(CH_LIST_DATA(it, ch_conn_t, node));
  uv_close((uv_handle_t *)&l->flush, NULL);
  uv_close((uv_handle_t *)&l->sweep, NULL);
  uv_close((uv_handle_t *)&l->inbox_async, NULL);
}

void ch_loop_join(ch_loop_t *l) {
  uv_thread_join(&l->thread);
  /* Tasks posted after the loop stopped still own their args: run them so they
   * release what they hold (they see l->stopping). */
  ch_list_t *it, *tmp;
  ch_list_foreach_safe(it, tmp, &l->inbox) {
    ch_loop_task_t *t = CH_LIST_DATA(it, ch_loop_task_t, node);
    ch_list_remove(it);
    t->cb(l, t->arg);
    free(t);
  }
  uv_loop_close(&l->uv);
  uv_mutex_destroy(&l->inbox_lock);
  free(l->rbuf);
  l->rbuf = NULL;
}
