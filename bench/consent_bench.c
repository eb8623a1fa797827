/* Consent store benchmark: starts the store (pgveil/consent.h) against the
 * table bench.consent of PGVEIL_BENCH_DSN and reports the full-load time,
 * the set's own memory accounting and the RSS delta per subject, and the
 * lookup cost. Built and run by bench/consent_bench.sh; never writes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgveil/consent.h"
#include "pgveil/log.h"
#include "pgveil/policy.h"

static const char *RULES = "version: 1\n"
                           "purposes:\n"
                           "  marketing: { roles: [app], consent: opt_in }\n"
                           "  support: { roles: [app], consent: opt_out }\n"
                           "  analytics: { roles: [app], consent: opt_in }\n"
                           "  profiling: { roles: [app], consent: opt_out }\n"
                           "consent:\n"
                           "  table: bench.consent\n"
                           "  subject_column: subject_id\n"
                           "  purpose_column: purpose\n"
                           "  granted_column: granted\n"
                           "  max_staleness: 60s\n"
                           "  resync_interval: 1h\n"
                           "tables:\n"
                           "  bench.people:\n"
                           "    subject: id\n"
                           "    columns:\n"
                           "      email: { default: withhold }\n";

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0)
      v = strtol(line + 6, NULL, 10);
  if (f)
    fclose(f);
  return v;
}

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(void) {
  const char *dsn = getenv("PGVEIL_BENCH_DSN");
  if (!dsn) {
    fprintf(stderr, "PGVEIL_BENCH_DSN not set\n");
    return 2;
  }
  pv_log_set_level(PV_LOG_INFO);
  pv_rules_t *rules = NULL;
  pv_rules_errors_t *errs = NULL;
  if (pv_rules_load_buffer(RULES, strlen(RULES), "bench.yaml", &rules, &errs))
    return 2;
  pv_policy_t *p = NULL;
  char err[256];
  pv_policy_holder_t holder;
  if (pv_policy_new(rules, NULL, 0, &p, err, sizeof err) ||
      pv_policy_holder_init(&holder))
    return 2;
  pv_policy_publish(&holder, p);
  static pv_config_t cfg;
  snprintf(cfg.control_dsn, sizeof cfg.control_dsn, "%s", dsn);
  pv_consent_store_limits_t lim = pv_consent_store_limits_default();
  lim.start_wait_ms = 300000;
  const char *parts = getenv("PGVEIL_BENCH_PARTS"); /* 0/unset: auto */
  lim.load_parts = parts ? (size_t)strtoul(parts, NULL, 10) : 0;
  long rss0 = rss_kib();
  double t0 = mono_s();
  pv_consent_store_t *st = NULL;
  if (pv_consent_store_start(&cfg, &holder, &lim, &st, err, sizeof err)) {
    fprintf(stderr, "start: %s\n", err);
    return 1;
  }
  double wall = mono_s() - t0;
  long rss1 = rss_kib();
  pv_consent_stats_t s;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
  pv_consent_store_stats(st, now, &s);
  if (!s.loaded || !s.subjects) {
    fprintf(stderr, "nothing loaded\n");
    return 1;
  }
  /* lookups: random existing subjects, binary int8, all 4 purposes */
  pv_consent_snap_t *snap = pv_consent_acquire(st);
  uint64_t x = 88172645463325252ull, hits = 0;
  const int N = 4000000;
  double l0 = mono_s();
  for (int i = 0; i < N; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    uint64_t sub = 1 + x % s.subjects;
    uint8_t be[8];
    for (int b = 0; b < 8; b++)
      be[b] = (uint8_t)(sub >> (56 - 8 * b));
    int purpose = i & 3;
    hits += pv_consent_allowed(
        snap, purpose, purpose & 1 ? PV_CONSENT_OPT_OUT : PV_CONSENT_OPT_IN, 20,
        1, be, 8);
  }
  double lookup_ns = (mono_s() - l0) / N * 1e9;
  pv_consent_release(snap);
  printf("rows=%llu subjects=%zu load_ms=%llu start_wall_s=%.2f "
         "set_bytes=%zu set_bytes_per_subject=%.1f "
         "rss_delta_kib=%ld rss_bytes_per_subject=%.1f "
         "lookup_ns=%.0f allowed=%llu/%d\n",
         (unsigned long long)s.load_rows, s.subjects,
         (unsigned long long)s.load_ms, wall, s.bytes,
         (double)s.bytes / (double)s.subjects, rss1 - rss0,
         (double)(rss1 - rss0) * 1024.0 / (double)s.subjects, lookup_ns,
         (unsigned long long)hits, N);
  pv_consent_store_stop(st);
  pv_policy_holder_dispose(&holder);
  return 0;
}
