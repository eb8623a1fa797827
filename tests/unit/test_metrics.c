/* Unit tests for proxy/metrics.c: per-worker counters and their sum,
 * refusal reasons from the real refusal texts, the Prometheus text format
 * (values, escaping, histogram), buffer sizing and readiness. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "pgveil/metrics.h"

/* The value of the sample line that starts with `series ` in text. */
static double value_of(const char *text, const char *series) {
  size_t n = strlen(series);
  for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p)
    if (strncmp(p, series, n) == 0 && p[n] == ' ')
      return strtod(p + n + 1, NULL);
  return -1;
}

static char *format(const pv_metrics_view_t *v) {
  size_t need = 0;
  char small[16];
  CHECK_EQ(pv_metrics_format(v, small, sizeof small, &need), PV_ELIMIT);
  CHECK(need > sizeof small);
  char *buf = malloc(need);
  int n = pv_metrics_format(v, buf, need, &need);
  CHECK(n > 0 && (size_t)n + 1 == need);
  CHECK_EQ(strlen(buf), n);
  return buf;
}

static void test_reasons(void) {
  static const struct {
    const char *msg;
    pv_refusal_reason_t r;
  } cases[] = {
      {"pgveil: column customers.email may not be used in a WHERE clause "
       "under purpose \"marketing\"",
       PV_REFUSE_PREDICATE},
      {"pgveil: column customers.email may not be used in ORDER BY under "
       "purpose \"x\"",
       PV_REFUSE_PREDICATE},
      {"pgveil: column customers.email may not be used in a JOIN ... USING "
       "under purpose \"x\"",
       PV_REFUSE_PREDICATE},
      {"pgveil: column customers.email may not be used in an expression "
       "(function argument) under purpose \"x\"",
       PV_REFUSE_EXPRESSION},
      {"pgveil: column customers.email may not be used in a computed output "
       "column under purpose \"x\"",
       PV_REFUSE_EXPRESSION},
      {"pgveil: column customers.email may not be used in a whole-row "
       "reference under purpose \"x\"",
       PV_REFUSE_WHOLE_ROW},
      {"pgveil: function public.f is not on the allowed list under purpose "
       "\"x\"",
       PV_REFUSE_FUNCTION},
      {"pgveil: operator ||| is not on the allowed list under purpose \"x\"",
       PV_REFUSE_FUNCTION},
      {"pgveil: a DO block is not allowed under purpose \"x\"",
       PV_REFUSE_FUNCTION},
      {"pgveil: column customers.email may not be used in an INSERT (it "
       "would copy the value) under purpose \"x\"",
       PV_REFUSE_COPY},
      {"pgveil: column customers.email may not be used in a binary COPY (it "
       "cannot be rewritten) under purpose \"x\"",
       PV_REFUSE_COPY},
      {"pgveil: COPY to or from a server file or program is not allowed "
       "under purpose \"x\"",
       PV_REFUSE_COPY},
      {"pgveil: COPY of protected data is only served in the simple query "
       "protocol",
       PV_REFUSE_COPY},
      {"pgveil: CREATE INDEX on customers is not allowed under purpose \"x\"",
       PV_REFUSE_DDL},
      {"pgveil: column customers.email may not be used in CREATE VIEW (it "
       "would expose the value) under purpose \"x\"",
       PV_REFUSE_DDL},
      {"pgveil: CREATE TRIGGER is not allowed under purpose \"x\"",
       PV_REFUSE_DDL},
      {"pgveil: changing server or role settings is not allowed under "
       "purpose \"x\"",
       PV_REFUSE_DDL},
      {"pgveil: the statement could not be analysed, so it is refused",
       PV_REFUSE_ANALYSIS},
      {"pgveil: could not analyse the statement: syntax error at or near "
       "\"FROM\"",
       PV_REFUSE_ANALYSIS},
      {"pgveil: statement refused under purpose \"x\": this kind of "
       "statement is not supported by the guard",
       PV_REFUSE_ANALYSIS},
      {"pgveil: could not resolve column \"zz\"", PV_REFUSE_ANALYSIS},
      {"pgveil: role \"bob\" may not declare purpose \"support\"",
       PV_REFUSE_PURPOSE},
      {"pgveil: statement refused by policy", PV_REFUSE_OTHER},
      {NULL, PV_REFUSE_OTHER},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    pv_refusal_reason_t r = pv_metrics_refusal_reason(cases[i].msg);
    if (r != cases[i].r)
      fprintf(stderr, "reason of \"%s\": %s, want %s\n",
              cases[i].msg ? cases[i].msg : "(null)", pv_metrics_reason_name(r),
              pv_metrics_reason_name(cases[i].r));
    CHECK_EQ(r, cases[i].r);
  }
  CHECK_STR(pv_metrics_reason_name(PV_REFUSE_WHOLE_ROW), "whole_row");
  CHECK_STR(pv_metrics_reason_name(PV_REFUSE_ANALYSIS), "analysis_failed");
  CHECK_STR(pv_metrics_reason_name(PV_REFUSE_NREASONS), "other");
}

static void test_counters_and_sum(void) {
  pv_metrics_t *m = NULL;
  CHECK_EQ(pv_metrics_new(0, &m), PV_EINVAL);
  CHECK_EQ(pv_metrics_new(3, &m), PV_OK);
  CHECK(pv_metrics_worker(m, 3) == NULL);
  CHECK(pv_metrics_worker(NULL, 0) == NULL);
  pv_metrics_worker_t *a = pv_metrics_worker(m, 0),
                      *b = pv_metrics_worker(m, 2);
  CHECK(((uintptr_t)a & 63) == 0 && ((uintptr_t)b & 63) == 0);
  pv_metrics_bytes(a, true, 100);
  pv_metrics_bytes(b, true, 20);
  pv_metrics_bytes(b, false, 7);
  pv_metrics_bytes(NULL, false, 7); /* metrics off: no-op */
  for (int i = 0; i < 5; i++)
    pv_metrics_client_msg(a, 'Q');
  pv_metrics_client_msg(b, 'E');
  pv_metrics_client_msg(b, 'P'); /* Parse is not a statement */
  pv_metrics_client_msg(b, 'B');
  pv_metrics_refusal(a, "pgveil: column t.c may not be used in a WHERE "
                        "clause under purpose \"m\"");
  pv_metrics_refusal(b, "pgveil: column t.c may not be used in a WHERE "
                        "clause under purpose \"m\"");
  pv_metrics_refusal(b, "something else");

  /* A plan: col0 hash, col1 gated (clear with consent, else withhold),
   * col2 untouched. */
  pv_action_t hash = {.kind = PV_ACT_HASH}, clear = {.kind = PV_ACT_CLEAR},
              wh = {.kind = PV_ACT_WITHHOLD};
  pv_col_action_t cols[3] = {
      {.action = &hash, .subject_col = -1},
      {.action = &clear, .otherwise = &wh, .subject_col = 2},
      {.subject_col = -1}};
  pv_row_actions_t ra = {.ncols = 3, .nacted = 2, .ngated = 1, .cols = cols};
  uint8_t yes[3] = {0, 1, 0};
  pv_metrics_row(a, &ra, NULL, 0, 0);       /* no consent: hash, withhold */
  pv_metrics_row(a, &ra, yes, 1000, 1400);  /* consent: hash, clear; 400ns */
  pv_metrics_row(b, &ra, yes, 1000, 61000); /* 60 us */
  pv_metrics_row(b, NULL, yes, 0, 0);       /* ignored */

  pv_metrics_sum_t s;
  pv_metrics_sum(m, &s);
  CHECK_EQ(s.bytes_from_client, 120);
  CHECK_EQ(s.bytes_from_server, 7);
  CHECK_EQ(s.stmt_simple, 5);
  CHECK_EQ(s.stmt_extended, 1);
  CHECK_EQ(s.refusals[PV_REFUSE_PREDICATE], 2);
  CHECK_EQ(s.refusals[PV_REFUSE_OTHER], 1);
  CHECK_EQ(s.rows, 3);
  CHECK_EQ(s.rows_action[PV_ACT_HASH], 3);
  CHECK_EQ(s.rows_action[PV_ACT_WITHHOLD], 1);
  CHECK_EQ(s.rows_action[PV_ACT_CLEAR], 2);
  CHECK_EQ(s.rows_action[PV_ACT_MASK], 0);
  CHECK_EQ(s.lat_bucket[1], 1); /* 400 ns: le 500 ns */
  CHECK_EQ(s.lat_bucket[8], 1); /* 60 us: le 100 us */
  CHECK_EQ(s.lat_sum_ns, 60400);

  /* Sampling: exactly one row in 64. */
  int sampled = 0;
  for (int i = 0; i < 640; i++)
    sampled += pv_metrics_sample(a);
  CHECK_EQ(sampled, 10);
  CHECK(!pv_metrics_sample(NULL));

  pv_metrics_sum(NULL, &s);
  CHECK_EQ(s.rows, 0);
  pv_metrics_free(m);
  pv_metrics_free(NULL);
}

static void test_format(void) {
  pv_metrics_t *m = NULL;
  CHECK_EQ(pv_metrics_new(1, &m), PV_OK);
  pv_metrics_worker_t *w = pv_metrics_worker(m, 0);
  pv_metrics_client_msg(w, 'Q');
  pv_metrics_client_msg(w, 'Q');
  pv_metrics_refusal(w, "pgveil: a DO block is not allowed under purpose x");
  pv_action_t mask = {.kind = PV_ACT_MASK_EMAIL};
  pv_col_action_t cols[1] = {{.action = &mask, .subject_col = -1}};
  pv_row_actions_t ra = {.ncols = 1, .nacted = 1, .cols = cols};
  pv_metrics_row(w, &ra, NULL, 10, 20000010); /* 20 ms: +Inf bucket */
  pv_metrics_row(w, &ra, NULL, 10, 1010);     /* 1 us */
  pv_metrics_db_t dbs[2] = {{.name = "crm",
                             .resolved = true,
                             .has_catalog = true,
                             .relations = 3,
                             .columns = 9},
                            {.name = "we\"ird\\db\n", .resolved = false}};
  pv_metrics_view_t v = {.workers = 1,
                         .sessions_current = 4,
                         .sessions_total = 17,
                         .rules_loaded = true,
                         .rules_fingerprint = 0xabcULL,
                         .rules_generation = 5,
                         .reloads = 2,
                         .reload_failures = 1,
                         .last_reload_failed = true,
                         .control_db = "crm",
                         .dbs = dbs,
                         .ndbs = 2,
                         .has_consent_store = true};
  v.consent.configured = v.consent.loaded = true;
  v.consent.subjects = 1234;
  v.consent.bytes = 65536;
  v.consent.age_ms = 1500;
  pv_metrics_sum(m, &v.sum);
  char *t = format(&v);
  CHECK(value_of(t, "pgveil_sessions") == 4);
  CHECK(value_of(t, "pgveil_sessions_total") == 17);
  CHECK(value_of(t, "pgveil_statements_total{protocol=\"simple\"}") == 2);
  CHECK(value_of(t, "pgveil_statements_total{protocol=\"extended\"}") == 0);
  CHECK(value_of(t, "pgveil_refusals_total{reason=\"function\"}") == 1);
  CHECK(value_of(t, "pgveil_refusals_total{reason=\"predicate\"}") == 0);
  CHECK(value_of(t, "pgveil_rows_rewritten_total") == 2);
  CHECK(
      value_of(
          t, "pgveil_rows_rewritten_by_action_total{action=\"mask_email\"}") ==
      2);
  CHECK(value_of(
            t, "pgveil_rows_rewritten_by_action_total{action=\"hash_hex\"}") ==
        0);
  CHECK(value_of(t, "pgveil_row_rewrite_seconds_bucket{le=\"1e-06\"}") == 1);
  CHECK(value_of(t, "pgveil_row_rewrite_seconds_bucket{le=\"0.01\"}") == 1);
  CHECK(value_of(t, "pgveil_row_rewrite_seconds_bucket{le=\"+Inf\"}") == 2);
  CHECK(value_of(t, "pgveil_row_rewrite_seconds_count") == 2);
  CHECK(value_of(t, "pgveil_row_rewrite_seconds_sum") > 0.020 &&
        value_of(t, "pgveil_row_rewrite_seconds_sum") < 0.021);
  CHECK(value_of(t, "pgveil_rules_info{fingerprint=\"0000000000000abc\"}") ==
        1);
  CHECK(value_of(t, "pgveil_rules_generation") == 5);
  CHECK(value_of(t, "pgveil_rules_reload_failures_total") == 1);
  CHECK(value_of(t, "pgveil_rules_last_reload_failed") == 1);
  CHECK(value_of(t, "pgveil_catalog_resolved{database=\"crm\"}") == 1);
  CHECK(value_of(t, "pgveil_catalog_protected_columns{database=\"crm\"}") == 9);
  CHECK(
      value_of(t, "pgveil_catalog_resolved{database=\"we\\\"ird\\\\db\\n\"}") ==
      0);
  CHECK(value_of(t, "pgveil_consent_subjects") == 1234);
  CHECK(value_of(t, "pgveil_consent_age_seconds") == 1.5);
  CHECK(value_of(t, "pgveil_consent_stale") == 0);
  /* Every metric has HELP and TYPE, every line ends with \n. */
  CHECK(strstr(t, "# TYPE pgveil_row_rewrite_seconds histogram\n") != NULL);
  CHECK(strstr(t, "# TYPE pgveil_refusals_total counter\n") != NULL);
  CHECK(t[strlen(t) - 1] == '\n');
  free(t);

  v.consent.age_ms = UINT64_MAX; /* never confirmed */
  t = format(&v);
  CHECK(strstr(t, "\npgveil_consent_age_seconds +Inf\n") != NULL);
  free(t);

  /* Without a consent table the consent series are left out. */
  v.consent.configured = false;
  t = format(&v);
  CHECK(value_of(t, "pgveil_consent_configured") == 0);
  CHECK(value_of(t, "pgveil_consent_subjects") == -1);
  free(t);
  pv_metrics_free(m);
}

static void test_ready(void) {
  char why[128];
  pv_metrics_db_t dbs[1] = {{.name = "crm", .resolved = true}};
  pv_metrics_view_t v = {.rules_loaded = true,
                         .control_db = "crm",
                         .dbs = dbs,
                         .ndbs = 1,
                         .has_consent_store = true};
  v.consent.configured = true;
  v.consent.loaded = true;
  CHECK(pv_metrics_ready(&v, why, sizeof why));
  CHECK_STR(why, "ready");
  v.consent.stale = true;
  v.consent.age_ms = 2500;
  CHECK(!pv_metrics_ready(&v, why, sizeof why));
  CHECK(strstr(why, "consent stale") != NULL);
  v.consent.stale = false;
  v.consent.loaded = false;
  CHECK(!pv_metrics_ready(&v, why, sizeof why));
  CHECK_STR(why, "consent not loaded");
  v.consent.configured = false; /* no consent table: consent is not asked */
  CHECK(pv_metrics_ready(&v, why, sizeof why));
  dbs[0].resolved = false;
  CHECK(!pv_metrics_ready(&v, why, sizeof why));
  CHECK(strstr(why, "\"crm\" not resolved") != NULL);
  v.ndbs = 0;
  CHECK(!pv_metrics_ready(&v, why, sizeof why));
  v.control_db = NULL; /* no --control-dsn: nothing resolved at start */
  CHECK(pv_metrics_ready(&v, why, sizeof why));
  v.rules_loaded = false;
  CHECK(!pv_metrics_ready(&v, why, sizeof why));
  CHECK_STR(why, "no rules loaded");
  v.passthrough = true;
  CHECK(pv_metrics_ready(&v, why, sizeof why));
}

int main(void) {
  RUN(test_reasons);
  RUN(test_counters_and_sum);
  RUN(test_format);
  RUN(test_ready);
  return check_exit("test_metrics");
}
