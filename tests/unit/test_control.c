/* Tests of the control thread (pgveil/control.h) against a real PostgreSQL:
 * --check on good, missing and misfit rules; startup resolution; DDL picked
 * up through NOTIFY and through the periodic check; lazily resolved
 * databases; reloads (bad file kept out, file change picked up). Needs a
 * superuser DSN in PGVEIL_TEST_DSN (tests/integration/test_catalog.py gives
 * one); skips without it. Run from the repo root. */
#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "check.h"
#include "pgveil/control.h"
#include "pgveil/policy.h"

static const char *DSN;
static char DIR_[256], RULES[300], SECRET[300];

static const char *RULES_OK = "version: 1\n"
                              "purposes:\n"
                              "  support: { roles: [app] }\n"
                              "tables:\n"
                              "  pvtest.people:\n"
                              "    subject: id\n"
                              "    columns:\n"
                              "      email: { default: hash, support: clear }\n"
                              "      born: \"generalize(year)\"\n";

static PGconn *db_connect(const char *dbname) {
  const char *k[] = {"dbname", dbname ? "dbname" : NULL, NULL};
  const char *v[] = {DSN, dbname, NULL};
  PGconn *pg = PQconnectdbParams(k, v, 1);
  if (PQstatus(pg) != CONNECTION_OK) {
    fprintf(stderr, "connect: %s", PQerrorMessage(pg));
    PQfinish(pg);
    return NULL;
  }
  return pg;
}

static bool sql(const char *dbname, const char *q) {
  PGconn *pg = db_connect(dbname);
  if (!pg)
    return false;
  PGresult *r = PQexec(pg, q);
  ExecStatusType st = PQresultStatus(r);
  bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
  if (!ok)
    fprintf(stderr, "sql failed: %s: %s", q, PQresultErrorMessage(r));
  PQclear(r);
  PQfinish(pg);
  return ok;
}

static uint32_t query_u32(const char *q) {
  PGconn *pg = db_connect(NULL);
  uint32_t v = 0;
  PGresult *r = pg ? PQexec(pg, q) : NULL;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
    v = (uint32_t)strtoul(PQgetvalue(r, 0, 0), NULL, 10);
  PQclear(r);
  PQfinish(pg);
  return v;
}

static char *read_all(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  static char buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

static void write_file(const char *path, const char *text) {
  /* Write then rename, as editors and config managers do. */
  char tmp[400];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  CHECK(f != NULL);
  if (!f)
    return;
  fputs(text, f);
  fclose(f);
  CHECK_EQ(rename(tmp, path), 0);
}

static void base_cfg(pv_config_t *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->mode = PV_MODE_CHECK;
  snprintf(cfg->rules_path, sizeof cfg->rules_path, "%s", RULES);
  snprintf(cfg->control_dsn, sizeof cfg->control_dsn, "%s", DSN);
  snprintf(cfg->secret_path, sizeof cfg->secret_path, "%s", SECRET);
}

/* Runs pv_control_check on `rules`; returns its output, *rc the code. */
static char *run_check(const char *rules, bool with_dsn, int *rc) {
  static char out[8192];
  write_file(RULES, rules);
  pv_config_t cfg;
  base_cfg(&cfg);
  if (!with_dsn)
    cfg.control_dsn[0] = '\0';
  FILE *f = fmemopen(out, sizeof out, "w");
  *rc = pv_control_check(&cfg, f);
  fclose(f);
  return out;
}

static void setup_db(const char *dbname) {
  CHECK(sql(dbname,
            "SET client_min_messages = warning;"
            "DROP SCHEMA IF EXISTS pvtest CASCADE; CREATE SCHEMA pvtest;"
            "CREATE DOMAIN pvtest.email_t AS varchar(80);"
            "CREATE TABLE pvtest.people (id int PRIMARY KEY, "
            " email pvtest.email_t, born date, note text, city text)"
            " PARTITION BY RANGE (id);"
            "CREATE TABLE pvtest.people_1 PARTITION OF pvtest.people "
            " FOR VALUES FROM (0) TO (1000)"));
}

static void test_check(void) {
  int rc = -1;
  char *out = run_check(RULES_OK, true, &rc);
  CHECK_EQ(rc, 0);
  CHECK(strstr(out, "rules OK:") != NULL);
  CHECK(strstr(out, "catalog OK: database \"") != NULL);
  CHECK(strstr(out, "2 relations, 4 protected columns") != NULL);
  if (rc)
    fprintf(stderr, "%s", out);

  out = run_check(RULES_OK, false, &rc);
  CHECK_EQ(rc, 0);
  CHECK(strstr(out, "catalog not checked") != NULL);

  char bad[2048];
  snprintf(bad, sizeof bad,
           "%s      phone: withhold\n"
           "      note: \"generalize(year)\"\n",
           RULES_OK);
  out = run_check(bad, true, &rc);
  CHECK_EQ(rc, 1);
  char want[600];
  snprintf(want, sizeof want,
           "%s:10:7: column pvtest.people.phone does not "
           "exist in database",
           RULES);
  CHECK(strstr(out, want) != NULL);
  snprintf(want, sizeof want,
           "%s:11:13: action generalize(year) (default) "
           "does not fit column pvtest.people.note of type text",
           RULES);
  CHECK(strstr(out, want) != NULL);
  CHECK(strstr(out, "catalog INVALID: 2 problems") != NULL);
  if (rc != 1)
    fprintf(stderr, "%s", out);

  out = run_check("version: 1\ntables: [\n", false, &rc);
  CHECK_EQ(rc, 1);
  CHECK(strstr(out, "rules INVALID") != NULL);
  write_file(RULES, RULES_OK);
}

/* ---- The running control thread ----------------------------------------- */

typedef bool (*pred_fn)(pv_policy_t *p, void *arg);

/* Waits up to ms for the published snapshot to satisfy pred. */
static bool wait_for(pv_policy_holder_t *h, pred_fn pred, void *arg, int ms) {
  for (int t = 0; t <= ms; t += 20) {
    pv_policy_t *p = pv_policy_acquire(h);
    bool ok = p && pred(p, arg);
    pv_policy_release(p);
    if (ok)
      return true;
    usleep(20000);
  }
  return false;
}

static char DBNAME[64];

static bool db_failed_with(pv_policy_t *p, void *arg) {
  const char *e = pv_policy_db_error(pv_policy_db(p, DBNAME));
  return pv_policy_db(p, DBNAME) && e && strstr(e, arg);
}

static bool db_ok(pv_policy_t *p, void *arg) {
  const pv_policy_db_t *d = pv_policy_db(p, arg ? arg : DBNAME);
  return d && !pv_policy_db_error(d);
}

static bool has_note_rule(pv_policy_t *p, void *arg) {
  const pv_rules_t *r = pv_policy_rules(p);
  return r->ntables == 1 &&
         pv_rules_column_find(&r->tables[0], "note") != NULL && db_ok(p, arg);
}

static uint32_t people_oid(void) {
  return query_u32("SELECT 'pvtest.people'::pg_catalog.regclass::oid");
}

static void check_resolved(pv_policy_holder_t *h) {
  pv_policy_t *p = pv_policy_acquire(h);
  CHECK(p != NULL);
  const pv_policy_db_t *d = pv_policy_db(p, DBNAME);
  CHECK(d && !pv_policy_db_error(d));
  uint32_t oid = people_oid(),
           part =
               query_u32("SELECT 'pvtest.people_1'::pg_catalog.regclass::oid");
  const pv_policy_col_t *c = pv_policy_column(d, oid, 2);
  CHECK(c && !strcmp(c->rule->name, "email"));
  CHECK(c && c->type_oid == 1043 && c->typmod == 84); /* the domain's base */
  CHECK(c && c->subject_attnum == 1);
  CHECK(pv_policy_column(d, oid, 5) == NULL); /* city */
  c = pv_policy_column(d, part, 3);
  CHECK(c && !strcmp(c->rule->name, "born")); /* partitions too */
  CHECK(pv_policy_key(p, 0) != NULL);
  pv_policy_release(p);
}

typedef struct {
  uv_loop_t loop;
  uv_async_t done;
  uv_timer_t timeout;
  int fired;
} waiter_t;

static void on_done(uv_async_t *a) {
  waiter_t *w = a->data;
  w->fired++;
  uv_stop(&w->loop);
}

static void on_timeout(uv_timer_t *t) { uv_stop(t->loop); }

/* Asks the control for dbname and runs a loop until it answers. */
static bool request_and_wait(pv_control_t *ctl, const char *dbname) {
  waiter_t w = {0};
  uv_loop_init(&w.loop);
  uv_async_init(&w.loop, &w.done, on_done);
  w.done.data = &w;
  uv_timer_init(&w.loop, &w.timeout);
  uv_timer_start(&w.timeout, on_timeout, 15000, 0);
  CHECK_EQ(pv_control_request_db(ctl, dbname, &w.done), PV_OK);
  uv_run(&w.loop, UV_RUN_DEFAULT);
  pv_control_cancel(ctl, &w.done);
  uv_close((uv_handle_t *)&w.done, NULL);
  uv_close((uv_handle_t *)&w.timeout, NULL);
  uv_run(&w.loop, UV_RUN_DEFAULT);
  uv_loop_close(&w.loop);
  return w.fired == 1;
}

static void test_running(void) {
  pv_policy_holder_t h;
  CHECK_EQ(pv_policy_holder_init(&h), PV_OK);
  pv_config_t cfg;
  base_cfg(&cfg);
  cfg.mode = PV_MODE_SERVE;
  pv_control_limits_t lim = pv_control_limits_default();
  lim.check_interval_ms = 600000; /* only NOTIFY may notice DDL here */
  lim.debounce_ms = 100;
  pv_control_t *ctl = NULL;
  char err[1024] = "";
  int rc = pv_control_start(&cfg, &h, &lim, &ctl, err, sizeof err);
  CHECK_EQ(rc, PV_OK);
  if (rc) {
    fprintf(stderr, "start: %s\n", err);
    pv_policy_holder_dispose(&h);
    return;
  }
  check_resolved(&h);

  /* DDL: a protected column renamed -> the database fails closed, lookups
   * keep the last good resolution; renamed back -> resolved again. */
  CHECK(sql(NULL, "ALTER TABLE pvtest.people RENAME COLUMN email TO mail"));
  CHECK(wait_for(&h, db_failed_with,
                 "column pvtest.people.email does not exist", 5000));
  pv_policy_t *p = pv_policy_acquire(&h);
  const pv_policy_db_t *d = pv_policy_db(p, DBNAME);
  CHECK(d && !pv_policy_db_transient(d));
  CHECK(d && strstr(pv_policy_db_error(d), "pgveil: the rules do not match "
                                           "database") != NULL);
  CHECK(pv_policy_column(d, people_oid(), 2) != NULL);
  pv_policy_release(p);
  CHECK(sql(NULL, "ALTER TABLE pvtest.people RENAME COLUMN mail TO email"));
  CHECK(wait_for(&h, db_ok, NULL, 5000));
  check_resolved(&h);

  /* Lazily resolved databases. */
  CHECK(request_and_wait(ctl, "pvtest_other"));
  p = pv_policy_acquire(&h);
  d = pv_policy_db(p, "pvtest_other");
  CHECK(d && !pv_policy_db_error(d));
  CHECK(pv_catalog_ncolumns(pv_policy_db_catalog(d)) == 4);
  pv_policy_release(p);

  CHECK(request_and_wait(ctl, "pvtest_empty"));
  p = pv_policy_acquire(&h);
  d = pv_policy_db(p, "pvtest_empty");
  CHECK(d && pv_policy_db_error(d) &&
        strstr(pv_policy_db_error(d), "table pvtest.people does not exist in "
                                      "database \"pvtest_empty\""));
  CHECK(d && !pv_policy_db_transient(d));
  pv_policy_release(p);

  CHECK(request_and_wait(ctl, "pvtest_nope"));
  p = pv_policy_acquire(&h);
  d = pv_policy_db(p, "pvtest_nope");
  CHECK(d && pv_policy_db_transient(d));
  CHECK(d && strstr(pv_policy_db_error(d), "cannot read the catalog") != NULL);
  pv_policy_release(p);
  CHECK(request_and_wait(ctl, DBNAME)); /* nothing to do: answered at once */
  uv_async_t dummy;
  CHECK_EQ(pv_control_request_db(ctl, "", &dummy), PV_EINVAL);

  /* Reloads: a bad file and rules that do not match are refused. */
  p = pv_policy_acquire(&h);
  uint64_t gen = pv_policy_generation(p);
  pv_policy_release(p);
  write_file(RULES, "version: 1\ntables: [\n");
  pv_control_reload(ctl);
  char mism[1024];
  snprintf(mism, sizeof mism, "%s      phone: withhold\n", RULES_OK);
  usleep(400000);
  write_file(RULES, mism);
  usleep(600000);
  p = pv_policy_acquire(&h);
  CHECK_EQ(pv_policy_generation(p), gen);
  pv_policy_release(p);
  check_resolved(&h);

  /* A good change of the file is picked up without SIGHUP. */
  char more[1024];
  snprintf(more, sizeof more, "%s      note: withhold\n", RULES_OK);
  write_file(RULES, more);
  CHECK(wait_for(&h, has_note_rule, NULL, 5000));
  CHECK(wait_for(&h, has_note_rule, "pvtest_other", 100));
  p = pv_policy_acquire(&h);
  d = pv_policy_db(p, DBNAME);
  const pv_policy_col_t *c = pv_policy_column(d, people_oid(), 4);
  CHECK(c && !strcmp(c->rule->name, "note"));
  pv_policy_release(p);

  pv_control_stop(ctl);
  /* The holder keeps the last snapshot after the control is gone. */
  check_resolved(&h);
  pv_policy_holder_dispose(&h);
  write_file(RULES, RULES_OK);
}

/* Without the event trigger, the periodic check notices DDL. */
static void test_periodic(void) {
  CHECK(sql(NULL, "DROP EVENT TRIGGER IF EXISTS pgveil_catalog_ddl;"
                  "DROP EVENT TRIGGER IF EXISTS pgveil_catalog_drop"));
  pv_policy_holder_t h;
  CHECK_EQ(pv_policy_holder_init(&h), PV_OK);
  pv_config_t cfg;
  base_cfg(&cfg);
  cfg.mode = PV_MODE_SERVE;
  pv_control_limits_t lim = pv_control_limits_default();
  lim.check_interval_ms = 300;
  pv_control_t *ctl = NULL;
  char err[1024] = "";
  CHECK_EQ(pv_control_start(&cfg, &h, &lim, &ctl, err, sizeof err), PV_OK);
  if (!ctl) {
    fprintf(stderr, "start: %s\n", err);
    pv_policy_holder_dispose(&h);
    return;
  }
  CHECK(sql(NULL, "ALTER TABLE pvtest.people DROP COLUMN born"));
  CHECK(wait_for(&h, db_failed_with,
                 "column pvtest.people.born does not "
                 "exist",
                 5000));
  pv_control_stop(ctl);
  pv_policy_holder_dispose(&h);

  /* And a database that does not match stops pgveil from starting. */
  CHECK(pv_policy_holder_init(&h) == PV_OK);
  CHECK_EQ(pv_control_start(&cfg, &h, &lim, &ctl, err, sizeof err), PV_ENOENT);
  CHECK(strstr(err, "column pvtest.people.born does not exist") != NULL);
  CHECK(pv_policy_acquire(&h) == NULL);
  /* Neither do hash rules without a secret. */
  cfg.secret_path[0] = '\0';
  CHECK_EQ(pv_control_start(&cfg, &h, &lim, &ctl, err, sizeof err), PV_EINVAL);
  CHECK(strstr(err, "--secret-file") != NULL);
  pv_policy_holder_dispose(&h);
}

int main(void) {
  DSN = getenv("PGVEIL_TEST_DSN");
  if (!DSN || !*DSN) {
    printf("test_control: skipped (PGVEIL_TEST_DSN not set)\n");
    return 0;
  }
  snprintf(DIR_, sizeof DIR_, "/tmp/pgveil-ctl-XXXXXX");
  if (!mkdtemp(DIR_))
    return 1;
  snprintf(RULES, sizeof RULES, "%s/rules.yaml", DIR_);
  snprintf(SECRET, sizeof SECRET, "%s/secret", DIR_);
  write_file(SECRET, "0123456789abcdef0123456789abcdef\n");
  chmod(SECRET, 0600);
  PGconn *pg = db_connect(NULL);
  if (!pg)
    return 1;
  snprintf(DBNAME, sizeof DBNAME, "%s", PQdb(pg));
  PQfinish(pg);
  sql(NULL, "DROP DATABASE IF EXISTS pvtest_other WITH (FORCE)");
  sql(NULL, "DROP DATABASE IF EXISTS pvtest_empty WITH (FORCE)");
  CHECK(sql(NULL, "CREATE DATABASE pvtest_other"));
  CHECK(sql(NULL, "CREATE DATABASE pvtest_empty"));
  setup_db(NULL);
  setup_db("pvtest_other");
  char *trig = read_all("rules/sql/catalog_notify.sql");
  CHECK(trig != NULL);
  if (trig)
    CHECK(sql(NULL, trig));

  RUN(test_check);
  RUN(test_running);
  RUN(test_periodic);

  sql(NULL, "DROP SCHEMA IF EXISTS pvtest CASCADE");
  sql(NULL, "DROP DATABASE IF EXISTS pvtest_other WITH (FORCE)");
  sql(NULL, "DROP DATABASE IF EXISTS pvtest_empty WITH (FORCE)");
  unlink(RULES);
  unlink(SECRET);
  rmdir(DIR_);
  return check_exit("test_control");
}
