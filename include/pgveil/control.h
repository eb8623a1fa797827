/* The control thread: its own libuv loop and libpq connections (one per
 * database pgveil serves) that resolve the rules against each database's
 * catalog, LISTEN for DDL (channel "pgveil_catalog", rules/sql/
 * catalog_notify.sql), recheck every 30 s, reload the rules on SIGHUP or a
 * change of the file, and publish each new policy snapshot (pgveil/policy.h)
 * to the holder. Also `pgveil --check`. With each resolution it builds
 * the database's relation directory for the guard (pgveil/reldir.h:
 * protected relations and the views over them) from the same catalog
 * snapshot; DDL, the periodic check and reloads rebuild it.
 *
 * Databases: the one named in --control-dsn is resolved at start (a rule
 * that does not match it stops pgveil from starting). Any other is resolved
 * the first time a session asks (pv_control_request_db). Without
 * --control-dsn, pgveil connects as "host=<upstream host> port=<upstream
 * port> dbname=<db> user=$PGUSER|postgres". The DSN is never logged. */
#ifndef PGVEIL_CONTROL_H
#define PGVEIL_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "pgveil/config.h"
#include "pgveil/errors.h"
#include "pgveil/policy.h"

#define PV_CONTROL_CHANNEL "pgveil_catalog" /* NOTIFY channel for DDL */

/* Tunables; pv_control_limits_default() gives the values in comments. */
typedef struct {
  uint64_t check_interval_ms;    /* periodic re-resolution: 30000 */
  uint64_t debounce_ms;          /* rules file change -> reload: 300 */
  uint64_t retry_ms;             /* min gap between connects to one db: 1000 */
  uint32_t statement_timeout_ms; /* for catalog queries: 10000 */
  size_t max_dbs;                /* databases resolved at once: 256 */
  size_t max_requests;           /* pending session requests: 65536 */
  size_t max_errors;             /* catalog problems kept per resolution: 100 */
  /* The guard's relation directory (pgveil/reldir.h), built with every
   * resolution: more relations than this fail the database closed;
   * a view definition longer than this makes the guard refuse statements
   * that name the view. */
  size_t reldir_max_relations; /* PV_RELDIR_MAX_RELATIONS */
  size_t reldir_max_viewdef;   /* PV_RELDIR_MAX_VIEWDEF */
} pv_control_limits_t;

pv_control_limits_t pv_control_limits_default(void);

typedef struct pv_control pv_control_t;

/* Loads cfg->rules_path and the secret (cfg->secret_path), resolves the
 * --control-dsn database when one is given, publishes the first snapshot to
 * holder and starts the control thread. Blocks for the first resolution
 * (libpq connect_timeout, 10 s unless the DSN says otherwise).
 * Returns PV_OK with *out set, or an error with a one-line message in err
 * (every rules or catalog problem is also logged): PV_ESYNTAX invalid rules,
 * PV_ENOENT the rules do not match the catalog, PV_EIO unreadable file or
 * no connection, PV_EINVAL secret missing/too short, PV_ENOMEM.
 * cfg and holder must outlive the control. lim may be NULL (defaults). */
PV_WARN_UNUSED int pv_control_start(const pv_config_t *cfg,
                                    pv_policy_holder_t *holder,
                                    const pv_control_limits_t *lim,
                                    pv_control_t **out, char *err,
                                    size_t errcap);

/* Asks for a reload of the rules (and the secret): SIGHUP. Thread-safe,
 * returns at once; the work happens on the control thread. A bad file is
 * logged and rejected; the old snapshot stays. */
void pv_control_reload(pv_control_t *c);

/* Asks the control thread to resolve database `dbname` (exact, as in the
 * startup packet; at most 63 bytes). Thread-safe, returns at once. When
 * the work is done (resolved, failed, or nothing to do because the current
 * snapshot already has it), uv_async_send(notify) is called exactly once;
 * the session then acquires the policy again and looks at pv_policy_db():
 * still NULL means pgveil could not take the database on (refuse the
 * session), pv_policy_db_error() non-NULL means refuse with that message.
 * A transient failure (pv_policy_db_transient) is retried by a new request,
 * at most once per second per database.
 * notify must stay valid until it has fired or pv_control_cancel(notify)
 * has returned. Returns PV_OK, PV_EINVAL (bad name), PV_ELIMIT (too many
 * pending requests) or PV_ENOMEM; on error notify is never called. */
PV_WARN_UNUSED int pv_control_request_db(pv_control_t *c, const char *dbname,
                                         uv_async_t *notify);

/* Forgets every pending request that would signal notify; once it
 * returns, the control thread never touches notify. Call before closing
 * the uv_async_t. Thread-safe. */
void pv_control_cancel(pv_control_t *c, uv_async_t *notify);

/* Counters for /metrics and /readyz. */
typedef struct {
  uint64_t reloads;         /* reloads that published new rules */
  uint64_t reload_failures; /* reloads refused: the old rules stayed */
  bool last_reload_failed;  /* the latest reload attempt was refused */
  char control_db[PV_CATALOG_DBNAME_MAX + 1]; /* --control-dsn's database
                                                 resolved at start, or "" */
} pv_control_stats_t;

/* A copy of c's counters (zeros for NULL c). Thread-safe. */
void pv_control_stats(pv_control_t *c, pv_control_stats_t *out);

/* Stops the thread, closes its connections and frees c. The holder keeps
 * the last snapshot (dispose it after the workers are joined). NULL ok. */
void pv_control_stop(pv_control_t *c);

/* `pgveil --check`: loads cfg->rules_path and prints every problem as
 * "file:line:col: message" to out; with cfg->control_dsn, also resolves
 * every table and column in that database and checks each action against
 * its column's type; with cfg->secret_path, checks the secret can be read.
 * Ends with a summary line. Returns the exit code: 0 valid, 1 not. */
int pv_control_check(const pv_config_t *cfg, FILE *out);

#endif
