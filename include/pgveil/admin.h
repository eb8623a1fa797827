/* The admin HTTP endpoint (--admin HOST:PORT): /metrics (Prometheus text
 * format, pgveil/metrics.h), /healthz and /readyz, served by its own thread
 * and libuv loop so a slow scraper never touches a worker. A tiny, strict
 * HTTP/1.x server: GET and HEAD only, one request per connection, bounded
 * request size, timeouts. */
#ifndef PGVEIL_ADMIN_H
#define PGVEIL_ADMIN_H

#include <stddef.h>

#include "pgveil/errors.h"
#include "pgveil/worker.h"

#define PV_ADMIN_REQUEST_MAX 8192 /* bytes of request line and headers */
#define PV_ADMIN_TIMEOUT_MS 5000  /* to send the request / take the reply */
#define PV_ADMIN_MAX_CONNS 64     /* further connections are closed */

typedef struct pv_admin pv_admin_t;

/* Binds and listens on cfg->admin_host:admin_port (call it early, with the
 * other listening sockets, so a port in use stops pgveil before anything
 * starts). Returns the fd, or a negative errno with a message in err. */
int pv_admin_listen(const pv_config_t *cfg, char *err, size_t errcap);

/* Starts the admin thread serving on fd (taken over). shared (with its
 * metrics, policy, control and consent pointers already set) must outlive
 * the admin. Returns PV_OK with *out, or PV_ENOMEM / PV_EIO with a message
 * in err (fd is closed then). */
PV_WARN_UNUSED int pv_admin_start(int fd, pv_shared_t *shared, pv_admin_t **out,
                                  char *err, size_t errcap);

/* Stops the thread, closes every connection and frees a. NULL ok. Call
 * before the control, consent store and metrics it reads are freed. */
void pv_admin_stop(pv_admin_t *a);

#endif
