/* Worker threads: each runs one libuv loop with its own SO_REUSEPORT
 * listening socket and owns the sessions accepted on it (no locks on the
 * hot path). Also the process-wide state shared by all workers. */
#ifndef PGVEIL_WORKER_H
#define PGVEIL_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "pgveil/config.h"
#include "pgveil/consent.h"
#include "pgveil/control.h"
#include "pgveil/policy.h"

/* Shared by every worker; owner: main(), outlives all workers. */
typedef struct {
  const pv_config_t *cfg;
  struct sockaddr_storage upstream; /* resolved once at startup */
  socklen_t upstream_len;
  atomic_uint clients;         /* live client connections, all workers */
  atomic_ullong sessions;      /* sessions ever accepted (ids) */
  pv_policy_holder_t *policy;  /* NULL in --passthrough */
  pv_control_t *control;       /* NULL in --passthrough */
  pv_consent_store_t *consent; /* NULL without rules */
  struct pv_tls *tls;         /* TLS contexts of both legs (tls.h); NULL: off */
  struct pv_audit *audit;     /* audit log writer (audit.h); NULL: off */
  struct pv_metrics *metrics; /* process counters (metrics.h); NULL: off */
} pv_shared_t;

typedef struct pv_session pv_session_t;

/* A reusable buffer on the worker's free list. */
typedef struct pv_buf_node {
  struct pv_buf_node *next;
} pv_buf_node_t;

/* One worker. Owner: main(); the thread owns everything inside once
 * started. */
typedef struct pv_worker {
  unsigned id;
  pv_shared_t *shared;
  uv_loop_t loop;
  uv_thread_t thread;
  uv_tcp_t listener;
  uv_async_t wakeup;      /* main -> worker: begin shutdown */
  uv_timer_t grace_timer; /* shutdown timeout */
  int listen_fd;
  atomic_bool stop_requested;
  bool stopping;
  pv_session_t *sessions; /* intrusive list of live sessions */
  size_t nsessions;
  pv_buf_node_t *free_bufs; /* read buffers of cfg->read_buffer_bytes */
  size_t nfree_bufs;
  struct pv_guard_cache *guard_cache; /* analyses, created on first use */
  struct pv_metrics_worker *metrics;  /* this worker's counters (metrics.h) */
  uint8_t *scratch; /* per-pump scratch for rewritten messages */
  size_t scratch_cap, scratch_len;
} pv_worker_t;

/* Opens the listening socket (SO_REUSEPORT) for cfg->listen_host:port;
 * with probe, first checks that nobody else holds the port. Returns the
 * fd, or a negative errno with a message in err. */
int pv_listen_socket(const pv_config_t *cfg, bool probe, char *err,
                     size_t errcap);

/* Starts w's thread accepting on listen_fd. Returns 0 or a libuv error. */
int pv_worker_start(pv_worker_t *w, unsigned id, pv_shared_t *shared,
                    int listen_fd);
/* Asks w to stop accepting and drain (thread-safe). */
void pv_worker_request_stop(pv_worker_t *w);
/* Waits for w's thread to end and releases the worker's memory. */
void pv_worker_join(pv_worker_t *w);

/* Buffers from the worker's free list (size cfg->read_buffer_bytes). */
uint8_t *pv_worker_buf_get(pv_worker_t *w);
void pv_worker_buf_put(pv_worker_t *w, uint8_t *buf);

/* Called by sessions when they end, to update lists and shutdown. */
void pv_worker_session_gone(pv_worker_t *w, pv_session_t *s);

#endif
