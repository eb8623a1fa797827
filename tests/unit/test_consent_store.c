/* Tests of the consent store thread (pgveil/consent.h, proxy/consent_store.c)
 * against a real PostgreSQL: full load, grant/revoke/delete through the
 * rules/sql/consent_notify.sql trigger within 100 ms, a burst of 100k
 * changes without loss, TRUNCATE, and the connection killed -> stale ->
 * fresh again. Needs a superuser DSN in PGVEIL_TEST_DSN
 * (tests/integration/test_consent.py gives one); skips without it. Run
 * from the repo root. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "pgveil/consent.h"
#include "pgveil/log.h"
#include "pgveil/policy.h"

static const char *DSN;
static PGconn *DB;

static const char *RULES =
    "version: 1\n"
    "purposes:\n"
    "  marketing: { roles: [app], consent: opt_in }\n"
    "  support: { roles: [app], consent: opt_out }\n"
    "consent:\n"
    "  table: pvtest.consent\n"
    "  subject_column: subject_id\n"
    "  purpose_column: purpose\n"
    "  granted_column: granted\n"
    "  max_staleness: 1s\n"
    "  resync_interval: 1h\n"
    "tables:\n"
    "  pvtest.people:\n"
    "    subject: id\n"
    "    columns:\n"
    "      email: { default: withhold, marketing: { action: clear, consent: "
    "required } }\n";

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms) { usleep(ms * 1000u); }

static bool sql(const char *q) {
  PGresult *r = PQexec(DB, q);
  ExecStatusType st = PQresultStatus(r);
  bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
  if (!ok)
    fprintf(stderr, "sql failed: %.200s: %s", q, PQresultErrorMessage(r));
  PQclear(r);
  return ok;
}

/* rules/sql/consent_notify.sql, adapted to pvtest.consent. */
static bool install_trigger(void) {
  FILE *f = fopen("rules/sql/consent_notify.sql", "rb");
  if (!f)
    return false;
  static char buf[1 << 16], out[1 << 16];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  size_t o = 0;
  for (const char *p = buf; *p && o + 32 < sizeof out;) {
    if (strncmp(p, "ON public.consent", 17) == 0) {
      o += (size_t)sprintf(out + o, "ON pvtest.consent");
      p += 17;
    } else {
      out[o++] = *p++;
    }
  }
  out[o] = '\0';
  return sql(out);
}

static bool allowed(pv_consent_snap_t *s, int purpose, int subject) {
  char v[16];
  snprintf(v, sizeof v, "%d", subject);
  return pv_consent_allowed(s, purpose,
                            purpose ? PV_CONSENT_OPT_OUT : PV_CONSENT_OPT_IN,
                            23, 0, (const uint8_t *)v, (int32_t)strlen(v));
}

static bool allowed_now(pv_consent_store_t *st, int purpose, int subject) {
  pv_consent_snap_t *s = pv_consent_acquire(st);
  bool a = s && allowed(s, purpose, subject);
  pv_consent_release(s);
  return a;
}

/* Waits until subject's consent for purpose equals want; returns the ms it
 * took, or -1 after timeout_ms. */
static long wait_for(pv_consent_store_t *st, int purpose, int subject,
                     bool want, uint64_t t0, unsigned timeout_ms) {
  for (;;) {
    pv_consent_snap_t *s = pv_consent_acquire(st);
    bool got = s && allowed(s, purpose, subject);
    pv_consent_release(s);
    uint64_t now = mono_ms();
    if (got == want)
      return (long)(now - t0);
    if (now - t0 > timeout_ms)
      return -1;
    usleep(500);
  }
}

/* Every row of the table and a few absent subjects agree with the store. */
static long mismatches(pv_consent_store_t *st, int max_subject) {
  PGresult *r = PQexec(DB, "SELECT subject_id, purpose, granted FROM "
                           "pvtest.consent ORDER BY 1, 2");
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    PQclear(r);
    return -1;
  }
  /* [subject][purpose] = -1 absent, 0 refused, 1 granted */
  signed char *want = malloc((size_t)(max_subject + 1) * 2);
  memset(want, -1, (size_t)(max_subject + 1) * 2);
  for (int i = 0; i < PQntuples(r); i++) {
    int sub = atoi(PQgetvalue(r, i, 0));
    const char *pn = PQgetvalue(r, i, 1);
    int p = strcmp(pn, "marketing") == 0 ? 0
            : strcmp(pn, "support") == 0 ? 1
                                         : -1;
    if (p >= 0 && sub >= 0 && sub <= max_subject)
      want[sub * 2 + p] = PQgetvalue(r, i, 2)[0] == 't';
  }
  PQclear(r);
  pv_consent_snap_t *s = pv_consent_acquire(st);
  long bad = 0;
  for (int sub = 0; sub <= max_subject; sub++) {
    bool in = allowed(s, 0, sub), out = allowed(s, 1, sub);
    bad += in != (want[sub * 2] == 1);
    bad += out != (want[sub * 2 + 1] != 0);
  }
  pv_consent_release(s);
  free(want);
  return bad;
}

static long wait_consistent(pv_consent_store_t *st, int max_subject,
                            unsigned timeout_ms) {
  uint64_t t0 = mono_ms();
  long bad;
  while ((bad = mismatches(st, max_subject)) != 0 &&
         mono_ms() - t0 < timeout_ms)
    sleep_ms(50);
  return bad;
}

static pv_policy_holder_t HOLDER;
static pv_config_t CFG;

static pv_consent_store_t *
start_store_lim(const pv_consent_store_limits_t *lim) {
  pv_rules_t *rules = NULL;
  pv_rules_errors_t *errs = NULL;
  int rc = pv_rules_load_buffer(RULES, strlen(RULES), "t.yaml", &rules, &errs);
  CHECK_EQ(rc, PV_OK);
  for (size_t i = 0; errs && i < errs->count; i++)
    fprintf(stderr, "%s\n", errs->msgs[i]);
  pv_rules_errors_free(errs);
  if (rc)
    return NULL;
  pv_policy_t *p = NULL;
  char err[256];
  CHECK_EQ(pv_policy_new(rules, NULL, 0, &p, err, sizeof err), PV_OK);
  CHECK_EQ(pv_policy_holder_init(&HOLDER), PV_OK);
  pv_policy_publish(&HOLDER, p);
  memset(&CFG, 0, sizeof CFG);
  snprintf(CFG.control_dsn, sizeof CFG.control_dsn, "%s", DSN);
  pv_consent_store_t *st = NULL;
  CHECK_EQ(pv_consent_store_start(&CFG, &HOLDER, lim, &st, err, sizeof err),
           PV_OK);
  return st;
}

static pv_consent_store_t *start_store(void) { return start_store_lim(NULL); }

static void test_store(void) {
  CHECK(sql("DROP SCHEMA IF EXISTS pvtest CASCADE; CREATE SCHEMA pvtest;"
            "CREATE TABLE pvtest.consent (subject_id int, purpose text, "
            "granted boolean, PRIMARY KEY (subject_id, purpose));"
            "INSERT INTO pvtest.consent SELECT g, 'marketing', g % 3 = 0 "
            "FROM generate_series(1, 10000) g;"
            "INSERT INTO pvtest.consent SELECT g, 'support', g % 5 <> 0 "
            "FROM generate_series(1, 10000) g WHERE g % 2 = 0;"
            "INSERT INTO pvtest.consent VALUES (1, 'other', true);"));
  CHECK(install_trigger());
  uint64_t t0 = mono_ms();
  pv_consent_store_t *st = start_store();
  if (!st)
    return;
  printf("test_consent_store: first load in %llu ms\n",
         (unsigned long long)(mono_ms() - t0));
  pv_consent_stats_t stats;
  pv_consent_store_stats(st, mono_ms(), &stats);
  CHECK(stats.configured && stats.loaded && stats.connected && !stats.stale);
  CHECK_EQ(stats.subjects, 10000);
  CHECK_EQ(stats.load_rows, 15001);
  pv_policy_t *pol = pv_policy_acquire(&HOLDER);
  pv_consent_snap_t *s = pv_consent_acquire(st);
  CHECK(pv_consent_usable(s, pv_policy_rules(pol), mono_ms()));
  CHECK(allowed(s, 0, 3) && !allowed(s, 0, 4));
  CHECK(!allowed(s, 1, 10) && allowed(s, 1, 12) && allowed(s, 1, 11));
  pv_consent_release(s);
  CHECK_EQ(mismatches(st, 10010), 0);

  /* revoke / grant / delete / insert, each within 100 ms of COMMIT */
  long worst = 0;
  for (int i = 0; i < 20; i++) {
    int sub = 3 * (i + 1);
    char q[256];
    snprintf(q, sizeof q,
             "UPDATE pvtest.consent SET granted = false WHERE subject_id = %d "
             "AND purpose = 'marketing'",
             sub);
    CHECK(sql(q));
    long ms = wait_for(st, 0, sub, false, mono_ms(), 2000);
    CHECK(ms >= 0);
    worst = ms > worst ? ms : worst;
    snprintf(q, sizeof q,
             "INSERT INTO pvtest.consent VALUES (%d, 'support', false) "
             "ON CONFLICT (subject_id, purpose) DO UPDATE SET granted = false",
             20000 + i);
    CHECK(sql(q));
    ms = wait_for(st, 1, 20000 + i, false, mono_ms(), 2000);
    CHECK(ms >= 0);
    worst = ms > worst ? ms : worst;
    snprintf(q, sizeof q, "DELETE FROM pvtest.consent WHERE subject_id = %d",
             20000 + i);
    CHECK(sql(q));
    ms = wait_for(st, 1, 20000 + i, true, mono_ms(), 2000);
    CHECK(ms >= 0);
    worst = ms > worst ? ms : worst;
  }
  printf("test_consent_store: worst COMMIT -> visible: %ld ms (60 changes)\n",
         worst);
  CHECK(worst <= 100);

  /* a changed subject key moves the consent */
  CHECK(sql("UPDATE pvtest.consent SET subject_id = 30001 WHERE subject_id = "
            "99 AND purpose = 'marketing'"));
  CHECK(wait_for(st, 0, 30001, true, mono_ms(), 2000) >= 0);
  CHECK(wait_for(st, 0, 99, false, mono_ms(), 2000) >= 0);

  /* 100k changes in bursts: the final state equals the table, with no
   * resync to repair it */
  pv_consent_store_stats(st, mono_ms(), &stats);
  uint64_t loads0 = stats.loads, forced0 = stats.resyncs_forced;
  t0 = mono_ms();
  CHECK(sql("BEGIN; UPDATE pvtest.consent SET granted = NOT granted; "
            "UPDATE pvtest.consent SET granted = NOT granted WHERE "
            "subject_id % 7 = 0; COMMIT"));
  for (int r = 0; r < 4; r++)
    CHECK(sql("UPDATE pvtest.consent SET granted = NOT granted WHERE "
              "subject_id % 2 = 0"));
  CHECK(sql("INSERT INTO pvtest.consent SELECT g, 'marketing', g % 4 = 0 "
            "FROM generate_series(30002, 80000) g"));
  CHECK(sql("DELETE FROM pvtest.consent WHERE subject_id % 11 = 0"));
  uint64_t t1 = mono_ms();
  long bad = wait_consistent(st, 80010, 20000);
  pv_consent_store_stats(st, mono_ms(), &stats);
  printf("test_consent_store: burst: %llu notifications applied; SQL took "
         "%llu ms, consistent %llu ms after the last COMMIT, %ld mismatches\n",
         (unsigned long long)stats.notifies, (unsigned long long)(t1 - t0),
         (unsigned long long)(mono_ms() - t1), bad);
  CHECK_EQ(bad, 0);
  CHECK(stats.notifies >= 100000);
  CHECK_EQ(stats.loads, loads0);
  CHECK_EQ(stats.resyncs_forced, forced0);

  /* one transaction sets a row true, false, true, false: the last wins
   * (PostgreSQL would drop the repeated payloads without the trigger's
   * sequence number) */
  CHECK(
      sql("BEGIN; UPDATE pvtest.consent SET granted = true WHERE subject_id = "
          "30003;"
          "UPDATE pvtest.consent SET granted = false WHERE subject_id = 30003;"
          "UPDATE pvtest.consent SET granted = true WHERE subject_id = 30003;"
          "UPDATE pvtest.consent SET granted = false WHERE subject_id = 30003;"
          "COMMIT"));
  CHECK(sql("INSERT INTO pvtest.consent VALUES (30004, 'marketing', true) ON "
            "CONFLICT DO NOTHING"));
  CHECK(wait_for(st, 0, 30004, true, mono_ms(), 2000) >= 0);
  CHECK(!allowed_now(st, 0, 30003));

  /* TRUNCATE: a resync, then nobody has opted in */
  CHECK(sql("TRUNCATE pvtest.consent"));
  CHECK(wait_consistent(st, 80010, 5000) == 0);
  pv_consent_store_stats(st, mono_ms(), &stats);
  CHECK(stats.loads > loads0);
  CHECK(sql("INSERT INTO pvtest.consent VALUES (5, 'marketing', true)"));
  CHECK(wait_for(st, 0, 5, true, mono_ms(), 2000) >= 0);

  /* kill the store's connection: stale after max_staleness (1 s), fresh
   * again after the reconnect and reload */
  CHECK(sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
            "application_name = 'pgveil-consent'"));
  t0 = mono_ms();
  bool went_stale = false;
  uint64_t stale_at = 0, fresh_at = 0;
  while (mono_ms() - t0 < 10000) {
    s = pv_consent_acquire(st);
    bool stale = pv_consent_stale(s, mono_ms());
    pv_consent_release(s);
    if (stale && !went_stale) {
      went_stale = true;
      stale_at = mono_ms();
    }
    if (!stale && went_stale) {
      fresh_at = mono_ms();
      break;
    }
    sleep_ms(5);
  }
  if (went_stale)
    printf("test_consent_store: terminated: stale after %llu ms, fresh "
           "again %llu ms later\n",
           (unsigned long long)(stale_at - t0),
           (unsigned long long)(fresh_at ? fresh_at - stale_at : 0));
  else
    printf("test_consent_store: terminated: reconnected and reloaded "
           "without going stale\n");
  pv_consent_store_stats(st, mono_ms(), &stats);
  CHECK(stats.reconnects >= 1);
  CHECK(stats.connected);
  /* the reconnect happens within the backoff (100 ms), yet the data may
   * only count as fresh after a load started after it: either it never
   * went stale (reload within 1 s) or it came back */
  CHECK(!went_stale || fresh_at > 0);
  CHECK(stale_at == 0 || stale_at - t0 <= 1200);
  CHECK(wait_for(st, 0, 5, true, mono_ms(), 2000) >= 0);

  /* the store down for longer than max_staleness: stale, fail closed */
  pv_consent_store_stop(st);
  pv_policy_release(pol);
  pv_policy_holder_dispose(&HOLDER);
}

/* The parallel load (parts over ctid ranges of one exported snapshot)
 * reads every row exactly once: forced to 3 parts on a table spread over
 * many pages, the set equals the table. */
static void test_parallel_load(void) {
  CHECK(sql("DROP SCHEMA IF EXISTS pvtest CASCADE; CREATE SCHEMA pvtest;"
            "CREATE TABLE pvtest.consent (subject_id int, purpose text, "
            "granted boolean, PRIMARY KEY (subject_id, purpose));"
            "INSERT INTO pvtest.consent SELECT g, 'marketing', g % 7 = 0 "
            "FROM generate_series(1, 60000) g;"
            "INSERT INTO pvtest.consent SELECT g, 'support', g % 2 = 0 "
            "FROM generate_series(1, 60000, 3) g;"
            "DELETE FROM pvtest.consent WHERE subject_id % 11 = 0;"));
  CHECK(install_trigger());
  pv_consent_store_limits_t lim = pv_consent_store_limits_default();
  lim.load_parts = 3;
  pv_consent_store_t *st = start_store_lim(&lim);
  if (!st)
    return;
  pv_consent_stats_t stats;
  pv_consent_store_stats(st, mono_ms(), &stats);
  CHECK(stats.loaded && !stats.stale);
  CHECK_EQ(stats.load_rows, 54546 + 18182);
  CHECK_EQ(mismatches(st, 60010), 0);
  pv_consent_store_stop(st);
  pv_policy_holder_dispose(&HOLDER);
}

/* With the connection going away and not coming back (the table is
 * dropped), the snapshot goes stale after max_staleness. */
static void test_stale_when_unreachable(void) {
  CHECK(sql("DROP SCHEMA IF EXISTS pvtest CASCADE; CREATE SCHEMA pvtest;"
            "CREATE TABLE pvtest.consent (subject_id int, purpose text, "
            "granted boolean);"
            "INSERT INTO pvtest.consent VALUES (1, 'marketing', true)"));
  pv_consent_store_t *st = start_store();
  if (!st)
    return;
  pv_consent_snap_t *s = pv_consent_acquire(st);
  CHECK(!pv_consent_stale(s, mono_ms()));
  CHECK(allowed(s, 0, 1));
  pv_consent_release(s);
  CHECK(sql("ALTER TABLE pvtest.consent RENAME COLUMN subject_id TO sid"));
  CHECK(sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
            "application_name = 'pgveil-consent'"));
  uint64_t t0 = mono_ms();
  bool stale = false;
  while (!stale && mono_ms() - t0 < 3000) {
    s = pv_consent_acquire(st);
    stale = pv_consent_stale(s, mono_ms());
    pv_consent_release(s);
    sleep_ms(10);
  }
  long took = (long)(mono_ms() - t0);
  sleep_ms(2 * 50 + 20); /* the store's tick notices and logs it */
  printf("test_consent_store: unreachable: stale after %ld ms\n", took);
  CHECK(stale);
  CHECK(took >= 600 && took <= 1300);
  pv_consent_stats_t stats;
  pv_consent_store_stats(st, mono_ms(), &stats);
  CHECK(stats.stale && !stats.connected && stats.stale_events >= 1);
  pv_consent_store_stop(st);
  pv_policy_holder_dispose(&HOLDER);
  CHECK(sql("DROP SCHEMA pvtest CASCADE"));
}

int main(void) {
  DSN = getenv("PGVEIL_TEST_DSN");
  if (!DSN || !*DSN) {
    printf("test_consent_store: skipped (PGVEIL_TEST_DSN not set)\n");
    return 0;
  }
  pv_log_set_level(PV_LOG_WARN);
  DB = PQconnectdb(DSN);
  if (PQstatus(DB) != CONNECTION_OK) {
    fprintf(stderr, "connect: %s", PQerrorMessage(DB));
    return 1;
  }
  RUN(test_store);
  RUN(test_parallel_load);
  RUN(test_stale_when_unreachable);
  PQfinish(DB);
  return check_exit("test_consent_store");
}
