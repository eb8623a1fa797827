/* Owns worker threads: the listening socket per worker, the libuv loop,
 * accept, graceful shutdown with a grace timer, and the free list of read
 * buffers. Sessions themselves live in session.c. */
#include "pgveil/worker.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgveil/guard_cache.h"
#include "pgveil/log.h"
#include "pgveil/metrics.h"
#include "pgveil/session.h"

#define FREE_BUFS_MAX 64 /* read buffers kept for reuse per worker */

/* Binds a throwaway socket WITHOUT SO_REUSEPORT: it fails when anyone,
 * another pgveil included, holds the port. With SO_REUSEPORT alone Linux
 * would let a second instance of the same user share the port silently. */
static int port_free(const struct addrinfo *ai) {
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int one = 1, rc = 0;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(fd, ai->ai_addr, ai->ai_addrlen) != 0)
    rc = -errno;
  close(fd);
  return rc;
}

int pv_listen_socket(const pv_config_t *cfg, bool probe, char *err,
                     size_t errcap) {
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  char port[8];
  snprintf(port, sizeof port, "%u", cfg->listen_port);
  int gai = getaddrinfo(cfg->listen_host, port, &hints, &res);
  if (gai != 0) {
    snprintf(err, errcap, "cannot resolve listen address %s: %s",
             cfg->listen_host, gai_strerror(gai));
    return -EINVAL;
  }
  int fd = -1, one = 1, rc = probe ? port_free(res) : 0;
  if (rc == 0) {
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    rc = -errno;
  }
  if (fd >= 0 &&
      (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
       setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
       bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0))
    rc = -errno;
  else if (fd >= 0)
    rc = 0;
  freeaddrinfo(res);
  if (rc != 0) {
    snprintf(err, errcap, "cannot listen on %s:%u: %s", cfg->listen_host,
             cfg->listen_port, strerror(-rc));
    if (fd >= 0)
      close(fd);
    return rc;
  }
  return fd;
}

uint8_t *pv_worker_buf_get(pv_worker_t *w) {
  pv_buf_node_t *n = w->free_bufs;
  if (n) {
    w->free_bufs = n->next;
    w->nfree_bufs--;
    return (uint8_t *)n;
  }
  return malloc(w->shared->cfg->read_buffer_bytes);
}

void pv_worker_buf_put(pv_worker_t *w, uint8_t *buf) {
  if (w->nfree_bufs >= FREE_BUFS_MAX) {
    free(buf);
    return;
  }
  pv_buf_node_t *n = (pv_buf_node_t *)(void *)buf;
  n->next = w->free_bufs;
  w->free_bufs = n;
  w->nfree_bufs++;
}

static void on_connection(uv_stream_t *server, int status) {
  pv_worker_t *w = server->data;
  if (status < 0) {
    pv_log(PV_LOG_WARN, "worker %u: accept failed: %s", w->id,
           uv_strerror(status));
    return;
  }
  pv_session_accept(w);
}

static void close_worker_handles(pv_worker_t *w) {
  if (!uv_is_closing((uv_handle_t *)&w->wakeup))
    uv_close((uv_handle_t *)&w->wakeup, NULL);
  if (!uv_is_closing((uv_handle_t *)&w->grace_timer))
    uv_close((uv_handle_t *)&w->grace_timer, NULL);
}

static void on_grace_timeout(uv_timer_t *t) {
  pv_worker_t *w = t->data;
  pv_log(PV_LOG_WARN, "worker %u: shutdown timeout, closing %zu sessions",
         w->id, w->nsessions);
  pv_session_t *s = w->sessions;
  while (s) {
    pv_session_t *next = pv_session_next(s);
    pv_session_kill(s);
    s = next;
  }
}

static void begin_stop(pv_worker_t *w) {
  if (w->stopping)
    return;
  w->stopping = true;
  uv_close((uv_handle_t *)&w->listener, NULL);
  if (w->nsessions == 0) {
    close_worker_handles(w);
    return;
  }
  uint64_t ms = (uint64_t)(w->shared->cfg->shutdown_timeout * 1000.0);
  uv_timer_start(&w->grace_timer, on_grace_timeout, ms, 0);
}

static void on_wakeup(uv_async_t *a) {
  pv_worker_t *w = a->data;
  if (atomic_load(&w->stop_requested))
    begin_stop(w);
}

void pv_worker_session_gone(pv_worker_t *w, pv_session_t *s) {
  (void)s;
  w->nsessions--;
  if (w->stopping && w->nsessions == 0)
    close_worker_handles(w);
}

static void worker_main(void *arg) {
  pv_worker_t *w = arg;
  uv_run(&w->loop, UV_RUN_DEFAULT);
}

int pv_worker_start(pv_worker_t *w, unsigned id, pv_shared_t *shared,
                    int listen_fd) {
  memset(w, 0, sizeof *w);
  w->id = id;
  w->shared = shared;
  w->listen_fd = listen_fd;
  w->metrics = pv_metrics_worker(shared->metrics, id); /* NULL: off */
  int rc = uv_loop_init(&w->loop);
  if (rc)
    return rc;
  if ((rc = uv_tcp_init(&w->loop, &w->listener)) ||
      (rc = uv_tcp_open(&w->listener, listen_fd)) ||
      (rc = uv_async_init(&w->loop, &w->wakeup, on_wakeup)) ||
      (rc = uv_timer_init(&w->loop, &w->grace_timer)))
    return rc;
  w->listener.data = w;
  w->wakeup.data = w;
  w->grace_timer.data = w;
  rc = uv_listen((uv_stream_t *)&w->listener, 1024, on_connection);
  if (rc)
    return rc;
  return uv_thread_create(&w->thread, worker_main, w);
}

void pv_worker_request_stop(pv_worker_t *w) {
  atomic_store(&w->stop_requested, true);
  uv_async_send(&w->wakeup);
}

void pv_worker_join(pv_worker_t *w) {
  uv_thread_join(&w->thread);
  uv_loop_close(&w->loop);
  while (w->free_bufs) {
    pv_buf_node_t *n = w->free_bufs;
    w->free_bufs = n->next;
    free(n);
  }
  free(w->scratch);
  w->scratch = NULL;
  pv_guard_cache_free(w->guard_cache);
  w->guard_cache = NULL;
}
