/* Process counters for /metrics (DESIGN.md §6): per-worker counter blocks
 * written only by their worker thread, summed at scrape time, and the
 * Prometheus text formatter and readiness decision over a view of them.
 * Pure (proxy/metrics.c): no I/O, no clock, no globals; the caller passes
 * times and every gauge it wants shown.
 *
 * Hot path: a worker bumps its own block with a relaxed atomic load and
 * store (a plain add on x86-64 and arm64: no lock prefix, no sharing), and
 * the admin thread reads with relaxed loads. Blocks are cache-line aligned
 * so workers never share a line. Every bump function takes a NULL block
 * (metrics off: --admin not given) and does nothing. */
#ifndef PGVEIL_METRICS_H
#define PGVEIL_METRICS_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgveil/action.h"
#include "pgveil/consent.h"
#include "pgveil/errors.h"
#include "pgveil/row_rewrite.h"

/* Why a statement (or a purpose at startup) was refused: a small fixed set
 * for the `reason` label. */
typedef enum {
  PV_REFUSE_EXPRESSION = 0, /* protected column in an expression/output */
  PV_REFUSE_PREDICATE,      /* WHERE, JOIN, ORDER BY, GROUP BY, DISTINCT... */
  PV_REFUSE_WHOLE_ROW,      /* a whole-row reference */
  PV_REFUSE_FUNCTION,       /* function/operator not allowed, DO, CALL */
  PV_REFUSE_COPY,           /* COPY, INSERT ... SELECT, SELECT INTO copies */
  PV_REFUSE_DDL,            /* DDL, views, triggers, settings */
  PV_REFUSE_ANALYSIS,       /* the guard could not analyse it */
  PV_REFUSE_PURPOSE,        /* the role may not declare the purpose */
  PV_REFUSE_OTHER,
  PV_REFUSE_NREASONS
} pv_refusal_reason_t;

/* The label of a reason ("expression", ..., "other"). */
const char *pv_metrics_reason_name(pv_refusal_reason_t r);

/* Classifies a refusal message as produced by the guard and the session
 * ("pgveil: column t.c may not be used in a WHERE clause ..."). NULL:
 * other. */
pv_refusal_reason_t pv_metrics_refusal_reason(const char *msg);

#define PV_METRICS_NACTIONS 8 /* pv_action_kind_t values */
#define PV_METRICS_LAT_BUCKETS 12
/* Rows timed: one in (mask + 1). */
#define PV_METRICS_SAMPLE_MASK 63u
/* Upper bounds of the rewrite latency buckets, ns (+Inf implied). */
extern const uint64_t pv_metrics_lat_bounds_ns[PV_METRICS_LAT_BUCKETS];

typedef _Atomic uint64_t pv_counter_t;

/* One worker's counters. Owner: the pv_metrics_t; written only by the
 * worker thread (and tests), read by the admin thread. */
typedef struct pv_metrics_worker {
  alignas(64) pv_counter_t bytes_from_client;
  pv_counter_t bytes_from_server;
  pv_counter_t stmt_simple;   /* Query messages */
  pv_counter_t stmt_extended; /* Execute messages */
  pv_counter_t rows;          /* rows through the rewriter (DataRow, COPY) */
  pv_counter_t rows_action[PV_METRICS_NACTIONS]; /* rows where a column took
                                                    that action */
  pv_counter_t refusals[PV_REFUSE_NREASONS];
  pv_counter_t lat_bucket[PV_METRICS_LAT_BUCKETS + 1]; /* last: +Inf */
  pv_counter_t lat_sum_ns;
  uint32_t tick; /* worker-private: sampling counter */
} pv_metrics_worker_t;

/* Every worker's block. Owner: main(); outlives workers and the admin
 * thread. */
typedef struct pv_metrics {
  unsigned nworkers;
  pv_metrics_worker_t *workers;
} pv_metrics_t;

PV_WARN_UNUSED int pv_metrics_new(unsigned nworkers, pv_metrics_t **out);
void pv_metrics_free(pv_metrics_t *m); /* NULL ok */
/* Worker i's block, or NULL when m is NULL or i is out of range. */
pv_metrics_worker_t *pv_metrics_worker(pv_metrics_t *m, unsigned i);

/* ---- Hot path (the owning worker only) ---------------------------------- */

static inline void pv_counter_add(pv_counter_t *c, uint64_t n) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                        memory_order_relaxed);
}

/* Bytes read from the client (from_client) or the server. */
static inline void pv_metrics_bytes(pv_metrics_worker_t *mw, bool from_client,
                                    uint64_t n) {
  if (mw)
    pv_counter_add(
        from_client ? &mw->bytes_from_client : &mw->bytes_from_server, n);
}

/* A client message of type `type`: Query and Execute count as statements. */
static inline void pv_metrics_client_msg(pv_metrics_worker_t *mw,
                                         uint8_t type) {
  if (mw && (type == 'Q' || type == 'E'))
    pv_counter_add(type == 'Q' ? &mw->stmt_simple : &mw->stmt_extended, 1);
}

/* True for the one row in PV_METRICS_SAMPLE_MASK + 1 that is timed. */
static inline bool pv_metrics_sample(pv_metrics_worker_t *mw) {
  return mw && (++mw->tick & PV_METRICS_SAMPLE_MASK) == 0;
}

/* A row rewritten under ra with consent flags `consent` (as given to
 * pv_rewrite_datarow). When t0_ns is non-zero the row was sampled and
 * took t1_ns - t0_ns (monotonic ns) to rewrite. */
void pv_metrics_row(pv_metrics_worker_t *mw, const pv_row_actions_t *ra,
                    const uint8_t *consent, uint64_t t0_ns, uint64_t t1_ns);

/* A refusal with the message the client gets. */
void pv_metrics_refusal(pv_metrics_worker_t *mw, const char *msg);

/* ---- Scrape ------------------------------------------------------------- */

/* Sum of every worker's counters (plain values). */
typedef struct {
  uint64_t bytes_from_client, bytes_from_server;
  uint64_t stmt_simple, stmt_extended;
  uint64_t rows;
  uint64_t rows_action[PV_METRICS_NACTIONS];
  uint64_t refusals[PV_REFUSE_NREASONS];
  uint64_t lat_bucket[PV_METRICS_LAT_BUCKETS + 1]; /* not cumulative */
  uint64_t lat_sum_ns;
} pv_metrics_sum_t;

/* Sums m's workers into out (relaxed loads; zeros for NULL m). */
void pv_metrics_sum(const pv_metrics_t *m, pv_metrics_sum_t *out);

/* One database the policy snapshot knows. Strings owned by the caller. */
typedef struct {
  const char *name;
  bool resolved;    /* usable: no error */
  bool has_catalog; /* a last good resolution exists */
  size_t relations; /* protected relations in it */
  size_t columns;   /* protected columns in it */
} pv_metrics_db_t;

/* Everything one scrape shows. Owner: the caller (stack); strings and
 * arrays borrowed for the duration of the call. */
typedef struct {
  pv_metrics_sum_t sum;
  unsigned workers;
  uint64_t sessions_current, sessions_total;
  bool passthrough;
  bool rules_loaded;          /* a policy snapshot is published */
  uint64_t rules_fingerprint; /* of the rules in force */
  uint64_t rules_generation;
  uint64_t reloads, reload_failures;
  bool last_reload_failed;
  const char *control_db; /* the --control-dsn database, "" or NULL: none */
  const pv_metrics_db_t *dbs;
  size_t ndbs;
  bool has_consent_store;
  pv_consent_stats_t consent;
} pv_metrics_view_t;

/* Writes v in the Prometheus text exposition format (0.0.4) into
 * out[0..cap), NUL-terminated. Returns the length, or PV_ELIMIT when cap
 * is too small (OUT: *needed, the size to retry with, NUL included). */
PV_WARN_UNUSED int pv_metrics_format(const pv_metrics_view_t *v, char *out,
                                     size_t cap, size_t *needed);

/* Readiness for /readyz: rules loaded (or --passthrough), the control
 * database resolved without error, and fresh consent when the rules name a
 * consent table. Returns true, or false with a one-line reason in why. */
bool pv_metrics_ready(const pv_metrics_view_t *v, char *why, size_t cap);

#endif
