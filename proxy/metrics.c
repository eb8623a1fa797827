/* Owns the process counters: per-worker blocks, their sum, refusal
 * reasons, the Prometheus text format and the readiness decision.
 * Pure: no I/O, no clock, no globals besides constant tables. */
#include "pgveil/metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const uint64_t pv_metrics_lat_bounds_ns[PV_METRICS_LAT_BUCKETS] = {
    250,   500,   1000,   2000,   5000,    10000,
    25000, 50000, 100000, 250000, 1000000, 10000000};

static const char *const reason_names[PV_REFUSE_NREASONS] = {
    "expression", "predicate",       "whole_row",      "function", "copy",
    "ddl",        "analysis_failed", "purpose_denied", "other"};

/* Labels per pv_action_kind_t: unique (pv_action_name says "hash" for
 * both hash kinds). */
static const char *const action_labels[PV_METRICS_NACTIONS] = {
    "clear",    "withhold", "redact",     "hash",
    "hash_hex", "mask",     "mask_email", "generalize"};

_Static_assert(PV_ACT_GENERALIZE + 1 == PV_METRICS_NACTIONS,
               "a new action kind needs a metrics label");

const char *pv_metrics_reason_name(pv_refusal_reason_t r) {
  return (unsigned)r < PV_REFUSE_NREASONS ? reason_names[r] : "other";
}

/* ---- Refusal reasons ---------------------------------------------------- */

typedef struct {
  const char *needle;
  pv_refusal_reason_t reason;
} rule_t;

/* First match wins: order from the most specific text to the least. The
 * texts are the guard's (proxy/sql_guard.c, sql_resolve.c) and the
 * session's refusal messages. */
static const rule_t rules_by_text[] = {
    {"may not declare purpose", PV_REFUSE_PURPOSE},
    {"could not be analysed", PV_REFUSE_ANALYSIS},
    {"could not analyse", PV_REFUSE_ANALYSIS},
    {"to analyse", PV_REFUSE_ANALYSIS}, /* too deeply nested to analyse */
    {"could not resolve", PV_REFUSE_ANALYSIS},
    {"not supported by the guard", PV_REFUSE_ANALYSIS},
    {"a whole-row reference", PV_REFUSE_WHOLE_ROW},
    {"COPY", PV_REFUSE_COPY},
    {"(it would copy the value)", PV_REFUSE_COPY},
    {"a BINARY cursor", PV_REFUSE_COPY},
    {"is not on the allowed list", PV_REFUSE_FUNCTION},
    {"set_config()", PV_REFUSE_FUNCTION},
    {"a DO block", PV_REFUSE_FUNCTION},
    {"CALL is not allowed", PV_REFUSE_FUNCTION},
    {"fast-path function call", PV_REFUSE_FUNCTION},
    {"CREATE ", PV_REFUSE_DDL},
    {"ALTER on", PV_REFUSE_DDL},
    {"RENAME on", PV_REFUSE_DDL},
    {"SET SCHEMA on", PV_REFUSE_DDL},
    {"changing server or role settings", PV_REFUSE_DDL},
    {"LOAD is not allowed", PV_REFUSE_DDL},
    {"may only be changed with SET", PV_REFUSE_DDL},
    {"standard_conforming_strings", PV_REFUSE_DDL},
    {"unknown pgveil setting", PV_REFUSE_DDL},
    {"EXPLAIN", PV_REFUSE_EXPRESSION},
    {"may not be read under purpose", PV_REFUSE_EXPRESSION},
    {"an expression", PV_REFUSE_EXPRESSION},
    {"output column", PV_REFUSE_EXPRESSION},
    {"a RETURNING list", PV_REFUSE_EXPRESSION},
    {"CASE result", PV_REFUSE_EXPRESSION},
    {"MERGE", PV_REFUSE_EXPRESSION},
    /* Every other clause the guard names is a predicate: WHERE, JOIN ...
     * USING, ORDER BY, GROUP BY, HAVING, DISTINCT, CASE condition, window,
     * aggregate FILTER/ORDER BY, ON CONFLICT, set operations. */
    {"may not be used in", PV_REFUSE_PREDICATE},
};

pv_refusal_reason_t pv_metrics_refusal_reason(const char *msg) {
  if (!msg)
    return PV_REFUSE_OTHER;
  for (size_t i = 0; i < sizeof rules_by_text / sizeof *rules_by_text; i++)
    if (strstr(msg, rules_by_text[i].needle))
      return rules_by_text[i].reason;
  return PV_REFUSE_OTHER;
}

/* ---- Blocks ------------------------------------------------------------- */

int pv_metrics_new(unsigned nworkers, pv_metrics_t **out) {
  *out = NULL;
  if (nworkers == 0)
    return PV_EINVAL;
  pv_metrics_t *m = calloc(1, sizeof *m);
  size_t bytes = (size_t)nworkers * sizeof(pv_metrics_worker_t);
  void *blocks = m ? aligned_alloc(64, bytes) : NULL;
  if (!blocks) {
    free(m);
    return PV_ENOMEM;
  }
  memset(blocks, 0, bytes);
  m->nworkers = nworkers;
  m->workers = blocks;
  *out = m;
  return PV_OK;
}

void pv_metrics_free(pv_metrics_t *m) {
  if (!m)
    return;
  free(m->workers);
  free(m);
}

pv_metrics_worker_t *pv_metrics_worker(pv_metrics_t *m, unsigned i) {
  return m && i < m->nworkers ? &m->workers[i] : NULL;
}

void pv_metrics_row(pv_metrics_worker_t *mw, const pv_row_actions_t *ra,
                    const uint8_t *consent, uint64_t t0_ns, uint64_t t1_ns) {
  if (!mw || !ra)
    return;
  pv_counter_add(&mw->rows, 1);
  unsigned seen = 0; /* one bit per action kind taken in this row */
  for (uint16_t i = 0; i < ra->ncols; i++) {
    const pv_col_action_t *c = &ra->cols[i];
    const pv_action_t *a =
        c->otherwise && !(consent && consent[i]) ? c->otherwise : c->action;
    if (a && (unsigned)a->kind < PV_METRICS_NACTIONS)
      seen |= 1u << a->kind;
  }
  for (unsigned k = 0; seen; k++, seen >>= 1)
    if (seen & 1u)
      pv_counter_add(&mw->rows_action[k], 1);
  if (!t0_ns)
    return;
  uint64_t d = t1_ns > t0_ns ? t1_ns - t0_ns : 0;
  unsigned b = 0;
  while (b < PV_METRICS_LAT_BUCKETS && d > pv_metrics_lat_bounds_ns[b])
    b++;
  pv_counter_add(&mw->lat_bucket[b], 1);
  pv_counter_add(&mw->lat_sum_ns, d);
}

void pv_metrics_refusal(pv_metrics_worker_t *mw, const char *msg) {
  if (mw)
    pv_counter_add(&mw->refusals[pv_metrics_refusal_reason(msg)], 1);
}

static uint64_t ld(const pv_counter_t *c) {
  return atomic_load_explicit(c, memory_order_relaxed);
}

void pv_metrics_sum(const pv_metrics_t *m, pv_metrics_sum_t *out) {
  memset(out, 0, sizeof *out);
  for (unsigned w = 0; m && w < m->nworkers; w++) {
    const pv_metrics_worker_t *b = &m->workers[w];
    out->bytes_from_client += ld(&b->bytes_from_client);
    out->bytes_from_server += ld(&b->bytes_from_server);
    out->stmt_simple += ld(&b->stmt_simple);
    out->stmt_extended += ld(&b->stmt_extended);
    out->rows += ld(&b->rows);
    for (unsigned k = 0; k < PV_METRICS_NACTIONS; k++)
      out->rows_action[k] += ld(&b->rows_action[k]);
    for (unsigned k = 0; k < PV_REFUSE_NREASONS; k++)
      out->refusals[k] += ld(&b->refusals[k]);
    for (unsigned k = 0; k <= PV_METRICS_LAT_BUCKETS; k++)
      out->lat_bucket[k] += ld(&b->lat_bucket[k]);
    out->lat_sum_ns += ld(&b->lat_sum_ns);
  }
}

/* ---- Prometheus text format --------------------------------------------- */

/* An output cursor that counts what it could not write. */
typedef struct {
  char *p;
  size_t cap, len;
} out_t;

__attribute__((format(printf, 2, 3))) static void put(out_t *o, const char *fmt,
                                                      ...) {
  va_list ap;
  va_start(ap, fmt);
  size_t room = o->len < o->cap ? o->cap - o->len : 0;
  int n = vsnprintf(room ? o->p + o->len : NULL, room, fmt, ap);
  va_end(ap);
  if (n > 0)
    o->len += (size_t)n;
}

/* A label value escaped as the format requires: \\, \" and \n. */
static void put_label(out_t *o, const char *v) {
  for (; v && *v; v++) {
    if (*v == '\\' || *v == '"')
      put(o, "\\%c", *v);
    else if (*v == '\n')
      put(o, "\\n");
    else
      put(o, "%c", *v);
  }
}

static void head(out_t *o, const char *name, const char *type,
                 const char *help) {
  put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metric(out_t *o, const char *name, const char *type,
                   const char *help, uint64_t v) {
  head(o, name, type, help);
  put(o, "%s %" PRIu64 "\n", name, v);
}

static void fmt_traffic(out_t *o, const pv_metrics_view_t *v) {
  const pv_metrics_sum_t *s = &v->sum;
  metric(o, "pgveil_workers", "gauge", "Event-loop worker threads.",
         v->workers);
  metric(o, "pgveil_sessions", "gauge", "Client connections open now.",
         v->sessions_current);
  metric(o, "pgveil_sessions_total", "counter",
         "Client connections accepted since start.", v->sessions_total);
  head(o, "pgveil_bytes_received_total", "counter",
       "Bytes read from clients and from the server.");
  put(o, "pgveil_bytes_received_total{from=\"client\"} %" PRIu64 "\n",
      s->bytes_from_client);
  put(o, "pgveil_bytes_received_total{from=\"server\"} %" PRIu64 "\n",
      s->bytes_from_server);
  head(o, "pgveil_statements_total", "counter",
       "Query (simple protocol) and Execute (extended protocol) messages.");
  put(o, "pgveil_statements_total{protocol=\"simple\"} %" PRIu64 "\n",
      s->stmt_simple);
  put(o, "pgveil_statements_total{protocol=\"extended\"} %" PRIu64 "\n",
      s->stmt_extended);
}

static void fmt_rows(out_t *o, const pv_metrics_view_t *v) {
  const pv_metrics_sum_t *s = &v->sum;
  metric(o, "pgveil_rows_rewritten_total", "counter",
         "Result and COPY rows that went through the rewriter.", s->rows);
  head(o, "pgveil_rows_rewritten_by_action_total", "counter",
       "Rewritten rows in which at least one column took this action.");
  for (unsigned k = 0; k < PV_METRICS_NACTIONS; k++)
    put(o, "pgveil_rows_rewritten_by_action_total{action=\"%s\"} %" PRIu64 "\n",
        action_labels[k], s->rows_action[k]);
  head(o, "pgveil_refusals_total", "counter",
       "Statements (and declared purposes) refused, by reason.");
  for (unsigned k = 0; k < PV_REFUSE_NREASONS; k++)
    put(o, "pgveil_refusals_total{reason=\"%s\"} %" PRIu64 "\n",
        reason_names[k], s->refusals[k]);
  head(o, "pgveil_row_rewrite_seconds", "histogram",
       "Time to rewrite one DataRow (one row in 64 is timed).");
  uint64_t cum = 0;
  for (unsigned b = 0; b < PV_METRICS_LAT_BUCKETS; b++) {
    cum += s->lat_bucket[b];
    put(o, "pgveil_row_rewrite_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
        (double)pv_metrics_lat_bounds_ns[b] / 1e9, cum);
  }
  cum += s->lat_bucket[PV_METRICS_LAT_BUCKETS];
  put(o, "pgveil_row_rewrite_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", cum);
  put(o, "pgveil_row_rewrite_seconds_sum %.9f\n", (double)s->lat_sum_ns / 1e9);
  put(o, "pgveil_row_rewrite_seconds_count %" PRIu64 "\n", cum);
}

static void fmt_rules(out_t *o, const pv_metrics_view_t *v) {
  metric(o, "pgveil_passthrough", "gauge",
         "1 when running without rules (nothing is masked).", v->passthrough);
  metric(o, "pgveil_rules_loaded", "gauge",
         "1 when a rules snapshot is in force.", v->rules_loaded);
  head(o, "pgveil_rules_info", "gauge",
       "The rules in force: XXH3-64 fingerprint of the file.");
  if (v->rules_loaded)
    put(o, "pgveil_rules_info{fingerprint=\"%016" PRIx64 "\"} 1\n",
        v->rules_fingerprint);
  metric(o, "pgveil_rules_generation", "gauge",
         "Policy snapshots published (rules reloads and catalog changes).",
         v->rules_generation);
  metric(o, "pgveil_rules_reloads_total", "counter",
         "Rules reloads that took effect.", v->reloads);
  metric(o, "pgveil_rules_reload_failures_total", "counter",
         "Rules reloads refused (the old rules stayed in force).",
         v->reload_failures);
  metric(o, "pgveil_rules_last_reload_failed", "gauge",
         "1 when the latest reload attempt was refused.",
         v->last_reload_failed);
  head(o, "pgveil_catalog_resolved", "gauge",
       "1 when the rules resolve against the database's catalog.");
  for (size_t i = 0; i < v->ndbs; i++) {
    put(o, "pgveil_catalog_resolved{database=\"");
    put_label(o, v->dbs[i].name);
    put(o, "\"} %d\n", v->dbs[i].resolved);
  }
  head(o, "pgveil_catalog_relations", "gauge",
       "Protected relations found in the database (last good resolution).");
  for (size_t i = 0; i < v->ndbs; i++) {
    put(o, "pgveil_catalog_relations{database=\"");
    put_label(o, v->dbs[i].name);
    put(o, "\"} %zu\n", v->dbs[i].relations);
  }
  head(o, "pgveil_catalog_protected_columns", "gauge",
       "Protected columns found in the database (last good resolution).");
  for (size_t i = 0; i < v->ndbs; i++) {
    put(o, "pgveil_catalog_protected_columns{database=\"");
    put_label(o, v->dbs[i].name);
    put(o, "\"} %zu\n", v->dbs[i].columns);
  }
}

static void fmt_consent(out_t *o, const pv_metrics_view_t *v) {
  const pv_consent_stats_t *c = &v->consent;
  bool on = v->has_consent_store && c->configured;
  metric(o, "pgveil_consent_configured", "gauge",
         "1 when the rules name a consent table.", on);
  if (!on)
    return;
  metric(o, "pgveil_consent_loaded", "gauge", "1 when consent data is loaded.",
         c->loaded);
  metric(o, "pgveil_consent_stale", "gauge",
         "1 when consent is older than max_staleness (gated columns take "
         "their otherwise action).",
         c->stale);
  metric(o, "pgveil_consent_connected", "gauge",
         "1 while the LISTEN connection is up.", c->connected);
  head(o, "pgveil_consent_age_seconds", "gauge",
       "Seconds since the consent data was last confirmed fresh.");
  if (c->age_ms == UINT64_MAX) /* never confirmed */
    put(o, "pgveil_consent_age_seconds +Inf\n");
  else
    put(o, "pgveil_consent_age_seconds %.3f\n", (double)c->age_ms / 1e3);
  metric(o, "pgveil_consent_subjects", "gauge",
         "Subjects in the consent snapshot.", c->subjects);
  metric(o, "pgveil_consent_bytes", "gauge",
         "Heap bytes of the consent snapshot.", c->bytes);
  metric(o, "pgveil_consent_loads_total", "counter",
         "Full loads of the consent table.", c->loads);
  head(o, "pgveil_consent_last_load_seconds", "gauge",
       "Duration of the last full load.");
  put(o, "pgveil_consent_last_load_seconds %.3f\n", (double)c->load_ms / 1e3);
  metric(o, "pgveil_consent_notifies_total", "counter",
         "Consent change notifications applied.", c->notifies);
  metric(o, "pgveil_consent_resyncs_forced_total", "counter",
         "Resyncs forced by a payload, TRUNCATE or delta size.",
         c->resyncs_forced);
  metric(o, "pgveil_consent_reconnects_total", "counter",
         "Consent connections lost.", c->reconnects);
  metric(o, "pgveil_consent_stale_events_total", "counter",
         "Transitions from fresh to stale.", c->stale_events);
}

int pv_metrics_format(const pv_metrics_view_t *v, char *out, size_t cap,
                      size_t *needed) {
  out_t o = {out, cap, 0};
  head(&o, "pgveil_build_info", "gauge", "pgveil version.");
  put(&o, "pgveil_build_info{version=\"%s\"} 1\n", PV_VERSION);
  fmt_traffic(&o, v);
  fmt_rows(&o, v);
  fmt_rules(&o, v);
  fmt_consent(&o, v);
  *needed = o.len + 1;
  if (o.len >= cap || o.len > INT32_MAX)
    return PV_ELIMIT;
  return (int)o.len;
}

/* ---- Readiness ---------------------------------------------------------- */

static const pv_metrics_db_t *find_db(const pv_metrics_view_t *v,
                                      const char *name) {
  for (size_t i = 0; i < v->ndbs; i++)
    if (v->dbs[i].name && strcmp(v->dbs[i].name, name) == 0)
      return &v->dbs[i];
  return NULL;
}

bool pv_metrics_ready(const pv_metrics_view_t *v, char *why, size_t cap) {
  if (v->passthrough) {
    snprintf(why, cap, "ready (--passthrough: nothing is masked)");
    return true;
  }
  if (!v->rules_loaded) {
    snprintf(why, cap, "no rules loaded");
    return false;
  }
  if (v->control_db && v->control_db[0]) {
    const pv_metrics_db_t *d = find_db(v, v->control_db);
    if (!d || !d->resolved) {
      snprintf(why, cap, "catalog of database \"%s\" not resolved",
               v->control_db);
      return false;
    }
  }
  const pv_consent_stats_t *c = &v->consent;
  if (v->has_consent_store && c->configured) {
    if (!c->loaded) {
      snprintf(why, cap, "consent not loaded");
      return false;
    }
    if (c->stale) {
      if (c->age_ms == UINT64_MAX)
        snprintf(why, cap, "consent stale (never confirmed fresh)");
      else
        snprintf(why, cap, "consent stale (%.1f s since fresh)",
                 (double)c->age_ms / 1e3);
      return false;
    }
  }
  snprintf(why, cap, "ready");
  return true;
}
