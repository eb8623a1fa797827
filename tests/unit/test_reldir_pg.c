/* Tests of the guard's relation directory as the control thread builds it
 * from a real PostgreSQL loaded with the leak corpus schema
 * (leakcases/schema.sql): its views and matview with their definitions, a
 * view over a view, a view calling a user function, an unrelated view left
 * out, unqualified names across schemas, the guard analysing through it,
 * and DDL picked up through NOTIFY. Needs a superuser DSN in
 * PGVEIL_TEST_DSN (tests/integration/test_reldir.py gives one) and the
 * schema file in PGVEIL_LEAK_SCHEMA (default tests/leakcases/corpus/
 * schema.sql); skips without them. Run from the repo root. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "pgveil/control.h"
#include "pgveil/policy.h"
#include "pgveil/reldir.h"
#include "pgveil/sql_guard.h"

static const char *DSN;
static char DIR_[256], RULES[300], SECRET[300], DBNAME[64];

static char *read_all(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (buf) {
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = '\0';
  }
  fclose(f);
  return buf;
}

static bool write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (!f)
    return false;
  fputs(text, f);
  fclose(f);
  return true;
}

static bool sql(const char *q) {
  PGconn *pg = PQconnectdb(DSN);
  bool ok = false;
  if (PQstatus(pg) == CONNECTION_OK) {
    PGresult *r = PQexec(pg, q);
    ExecStatusType st = PQresultStatus(r);
    ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
      fprintf(stderr, "sql failed: %.200s: %s", q, PQresultErrorMessage(r));
    PQclear(r);
  } else {
    fprintf(stderr, "connect: %s", PQerrorMessage(pg));
  }
  PQfinish(pg);
  return ok;
}

/* Looks a relation up in the current snapshot's directory. */
typedef struct {
  pv_guard_rel_kind_t kind;
  int rc;
  char schema[64];
  char def[4096];
  char cols[512]; /* comma-separated */
} found_t;

static found_t find(pv_policy_holder_t *h, const char *schema, const char *name,
                    const char *first_path) {
  found_t f = {0};
  pv_policy_t *p = pv_policy_acquire(h);
  const pv_reldir_t *dir = pv_policy_db_reldir(pv_policy_db(p, DBNAME));
  const char *sp[] = {first_path ? first_path : "public"};
  pv_guard_rel_t rel;
  f.rc = pv_reldir_lookup((void *)dir, schema, name, sp, 1, &rel);
  if (f.rc == PV_OK) {
    f.kind = rel.kind;
    snprintf(f.schema, sizeof f.schema, "%s", rel.schema ? rel.schema : "");
    snprintf(f.def, sizeof f.def, "%s", rel.view_sql ? rel.view_sql : "");
    for (size_t i = 0; i < rel.ncolumns; i++) {
      size_t n = strlen(f.cols);
      snprintf(f.cols + n, sizeof f.cols - n, "%s%s", i ? "," : "",
               rel.columns[i]);
    }
  }
  pv_policy_release(p);
  return f;
}

/* Runs the guard under purpose `none` through the snapshot's directory. */
static bool refused(pv_policy_holder_t *h, const char *q) {
  pv_policy_t *p = pv_policy_acquire(h);
  const pv_reldir_t *dir = pv_policy_db_reldir(pv_policy_db(p, DBNAME));
  const char *sp[] = {"public"};
  pv_guard_input_t in = {.rules = pv_policy_rules(p),
                         .purpose = PV_PURPOSE_NONE,
                         .search_path = sp,
                         .nsearch_path = 1,
                         .lookup = pv_reldir_lookup,
                         .lookup_ctx = (void *)dir};
  pv_guard_result_t *res = NULL;
  int rc = pv_guard_analyze(&in, q, &res);
  bool out = rc != PV_OK || res->refused;
  if (getenv("RELDIR_VERBOSE"))
    fprintf(stderr, "    %s -> %s\n", q,
            rc             ? pv_strerror(rc)
            : res->refused ? res->first_refused->message
                           : "allowed");
  pv_guard_result_free(res);
  pv_policy_release(p);
  return out;
}

static bool has(pv_policy_holder_t *h, const char *name, bool want) {
  for (int t = 0; t < 250; t++) {
    found_t f = find(h, NULL, name, NULL);
    if ((f.rc == PV_OK && f.kind != PV_GUARD_REL_UNKNOWN) == want)
      return true;
    usleep(20000);
  }
  return false;
}

static void test_directory(void) {
  CHECK(sql("SET client_min_messages = warning;"
            "DROP VIEW IF EXISTS public.unrelated_v, public.contacts_again,"
            " public.labels_v, public.late_v;"
            "CREATE VIEW public.unrelated_v AS"
            " SELECT id, status FROM public.orders;"
            "CREATE VIEW public.contacts_again AS"
            " SELECT id, email AS mail FROM public.customer_contacts;"
            "CREATE VIEW public.labels_v AS"
            " SELECT id, public.customer_label(customer_id) AS label"
            " FROM public.orders;"
            "DROP MATERIALIZED VIEW IF EXISTS public.risk_copy;"
            "CREATE MATERIALIZED VIEW public.risk_copy AS"
            " SELECT id, ssn AS tax_ref FROM public.customers;"
            "CREATE VIEW app_scratch.customers_v AS"
            " SELECT id, email FROM public.customers"));
  pv_policy_holder_t h;
  CHECK_EQ(pv_policy_holder_init(&h), PV_OK);
  pv_config_t cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.mode = PV_MODE_SERVE;
  snprintf(cfg.rules_path, sizeof cfg.rules_path, "%s", RULES);
  snprintf(cfg.control_dsn, sizeof cfg.control_dsn, "%s", DSN);
  snprintf(cfg.secret_path, sizeof cfg.secret_path, "%s", SECRET);
  pv_control_limits_t lim = pv_control_limits_default();
  lim.check_interval_ms = 600000; /* only NOTIFY may notice DDL here */
  pv_control_t *ctl = NULL;
  char err[1024] = "";
  int rc = pv_control_start(&cfg, &h, &lim, &ctl, err, sizeof err);
  CHECK_EQ(rc, PV_OK);
  if (rc) {
    fprintf(stderr, "start: %s\n", err);
    pv_policy_holder_dispose(&h);
    return;
  }

  /* Protected tables: every column, in order. */
  found_t f = find(&h, NULL, "customers", NULL);
  CHECK_EQ(f.kind, PV_GUARD_REL_TABLE);
  CHECK_STR(f.cols, "id,full_name,email,phone,ssn,birth_date,street,city,zip,"
                    "country,notes,lifetime_value,created_at");
  f = find(&h, "public", "support_tickets", NULL);
  CHECK_EQ(f.kind, PV_GUARD_REL_TABLE);
  /* The corpus's views and matview, with complete definitions. */
  f = find(&h, NULL, "customer_contacts", NULL);
  CHECK_EQ(f.kind, PV_GUARD_REL_VIEW);
  CHECK_STR(f.schema, "public");
  CHECK_STR(f.cols, "id,full_name,email,phone");
  CHECK(!strncmp(f.def, "SELECT ", 7));
  CHECK(strstr(f.def, "FROM public.customers") != NULL);
  CHECK(f.def[strlen(f.def) - 1] != ';');
  f = find(&h, "public", "customer_overview", NULL);
  CHECK_EQ(f.kind, PV_GUARD_REL_VIEW);
  CHECK_STR(f.cols, "id,city,country,display_name,order_count");
  CHECK(strstr(f.def, "LEFT JOIN public.orders") != NULL);
  /* The rules name the matview customer_risk: a protected table. */
  f = find(&h, NULL, "customer_risk", NULL);
  CHECK_EQ(f.kind, PV_GUARD_REL_TABLE);
  CHECK_STR(f.cols, "id,tax_ref,lifetime_value");
  /* A matview the rules do not name is analysed as a view. */
  f = find(&h, NULL, "risk_copy", NULL);
  CHECK_EQ(f.kind, PV_GUARD_REL_VIEW);
  CHECK_STR(f.cols, "id,tax_ref");
  CHECK(strstr(f.def, "ssn AS tax_ref") != NULL);
  /* A view over a view, a view through a user function. */
  f = find(&h, NULL, "contacts_again", NULL);
  CHECK_EQ(f.kind, PV_GUARD_REL_VIEW);
  CHECK_STR(f.cols, "id,mail");
  CHECK(strstr(f.def, "FROM public.customer_contacts") != NULL);
  f = find(&h, NULL, "labels_v", NULL);
  CHECK_EQ(f.kind, PV_GUARD_REL_VIEW);
  /* Unrelated relations are unknown. */
  CHECK_EQ(find(&h, NULL, "unrelated_v", NULL).kind, PV_GUARD_REL_UNKNOWN);
  CHECK_EQ(find(&h, NULL, "orders", NULL).kind, PV_GUARD_REL_UNKNOWN);
  /* Unqualified across schemas: search_path [public] still finds it. */
  f = find(&h, NULL, "customers_v", "public");
  CHECK_EQ(f.kind, PV_GUARD_REL_VIEW);
  CHECK_STR(f.schema, "app_scratch");
  CHECK_EQ(find(&h, "public", "customers_v", NULL).kind, PV_GUARD_REL_UNKNOWN);

  /* Pre-scan names. */
  pv_policy_t *p = pv_policy_acquire(&h);
  const pv_reldir_t *dir = pv_policy_db_reldir(pv_policy_db(p, DBNAME));
  const char *const *names = NULL;
  size_t nn = 0;
  pv_reldir_names(dir, &names, &nn);
  bool seen_risk = false, seen_unrelated = false;
  for (size_t i = 0; i < nn; i++) {
    seen_risk |= !strcmp(names[i], "customer_risk");
    seen_unrelated |= !strcmp(names[i], "unrelated_v");
  }
  CHECK(seen_risk && !seen_unrelated);
  const char *q = "select * from CUSTOMERS_V";
  CHECK(pv_guard_prescan(pv_reldir_guard_names(dir), q, strlen(q)));
  pv_policy_release(p);

  /* The guard, through the real definitions. */
  CHECK(refused(&h, "SELECT upper(email) FROM customer_contacts"));
  CHECK(refused(&h, "SELECT upper(tax_ref) FROM customer_risk"));
  CHECK(refused(&h, "SELECT upper(tax_ref) FROM risk_copy"));
  CHECK(refused(&h, "SELECT lower(mail) FROM contacts_again"));
  CHECK(refused(&h, "SELECT upper(email) FROM customers_v"));
  CHECK(refused(&h, "SELECT label FROM labels_v"));
  CHECK(refused(&h, "SELECT id FROM customer_overview "
                    "WHERE display_name LIKE 'A%'"));
  CHECK(!refused(&h, "SELECT upper(status) FROM unrelated_v"));
  CHECK(!refused(&h, "SELECT id, email FROM customer_contacts"));
  CHECK(!refused(&h, "SELECT id, display_name, order_count "
                     "FROM customer_overview"));

  /* DDL: a new view over protected data appears, a dropped one goes. */
  CHECK(sql("CREATE VIEW public.late_v AS SELECT ssn FROM public.customers"));
  CHECK(has(&h, "late_v", true));
  CHECK(refused(&h, "SELECT upper(ssn) FROM late_v"));
  CHECK(sql("DROP VIEW public.late_v"));
  CHECK(has(&h, "late_v", false));
  /* Rewiring an unrelated view onto protected data is noticed. */
  CHECK(sql("CREATE OR REPLACE VIEW public.unrelated_v AS"
            " SELECT o.id, c.email AS status FROM public.orders o"
            " JOIN public.customers c ON c.id = o.customer_id"));
  CHECK(has(&h, "unrelated_v", true));
  CHECK(refused(&h, "SELECT upper(status) FROM unrelated_v"));

  pv_control_stop(ctl);
  pv_policy_holder_dispose(&h);
  sql("DROP VIEW IF EXISTS public.unrelated_v, public.contacts_again,"
      " public.labels_v, app_scratch.customers_v;"
      "DROP MATERIALIZED VIEW IF EXISTS public.risk_copy");
}

/* Without the event trigger, the periodic check notices a new view; the
 * limits fail closed. */
static void test_periodic_and_limits(void) {
  CHECK(sql("DROP EVENT TRIGGER IF EXISTS pgveil_catalog_ddl;"
            "DROP EVENT TRIGGER IF EXISTS pgveil_catalog_drop;"
            "DROP VIEW IF EXISTS public.late_v"));
  pv_policy_holder_t h;
  CHECK_EQ(pv_policy_holder_init(&h), PV_OK);
  pv_config_t cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.mode = PV_MODE_SERVE;
  snprintf(cfg.rules_path, sizeof cfg.rules_path, "%s", RULES);
  snprintf(cfg.control_dsn, sizeof cfg.control_dsn, "%s", DSN);
  snprintf(cfg.secret_path, sizeof cfg.secret_path, "%s", SECRET);
  pv_control_limits_t lim = pv_control_limits_default();
  lim.check_interval_ms = 300;
  lim.reldir_max_viewdef = 120; /* customer_overview's is longer */
  pv_control_t *ctl = NULL;
  char err[1024] = "";
  CHECK_EQ(pv_control_start(&cfg, &h, &lim, &ctl, err, sizeof err), PV_OK);
  if (!ctl) {
    fprintf(stderr, "start: %s\n", err);
    pv_policy_holder_dispose(&h);
    return;
  }
  CHECK_EQ(find(&h, NULL, "customer_overview", NULL).rc, PV_ELIMIT);
  CHECK(refused(&h, "SELECT id FROM customer_overview"));
  CHECK_EQ(find(&h, NULL, "customer_contacts", NULL).kind, PV_GUARD_REL_VIEW);
  CHECK_EQ(find(&h, NULL, "late_v", NULL).kind, PV_GUARD_REL_UNKNOWN);
  CHECK(sql("CREATE VIEW public.late_v AS SELECT ssn FROM public.customers"));
  CHECK(has(&h, "late_v", true));
  pv_control_stop(ctl);
  pv_policy_holder_dispose(&h);
  CHECK(sql("DROP VIEW public.late_v"));

  /* More relations than the limit: pgveil does not start. */
  lim.reldir_max_relations = 3;
  CHECK_EQ(pv_policy_holder_init(&h), PV_OK);
  CHECK_EQ(pv_control_start(&cfg, &h, &lim, &ctl, err, sizeof err), PV_ELIMIT);
  CHECK(strstr(err, "more than 3 protected relations and views") != NULL);
  pv_policy_holder_dispose(&h);
}

int main(void) {
  DSN = getenv("PGVEIL_TEST_DSN");
  const char *schema_path = getenv("PGVEIL_LEAK_SCHEMA");
  if (!schema_path || !*schema_path)
    schema_path = "tests/leakcases/corpus/schema.sql";
  char *schema = read_all(schema_path);
  char *rules = read_all("tests/leakcases.yaml");
  char *trig = read_all("rules/sql/catalog_notify.sql");
  if (!DSN || !*DSN || !schema || !rules || !trig) {
    printf("test_reldir_pg: skipped (%s)\n",
           !DSN || !*DSN ? "PGVEIL_TEST_DSN not set"
           : !schema     ? "leak corpus schema.sql not found"
                         : "run from the repo root");
    free(schema);
    free(rules);
    free(trig);
    return 0;
  }
  snprintf(DIR_, sizeof DIR_, "/tmp/pgveil-reldir-XXXXXX");
  if (!mkdtemp(DIR_))
    return 1;
  snprintf(RULES, sizeof RULES, "%s/rules.yaml", DIR_);
  snprintf(SECRET, sizeof SECRET, "%s/secret", DIR_);
  CHECK(write_file(RULES, rules));
  CHECK(write_file(SECRET, "0123456789abcdef0123456789abcdef\n"));
  chmod(SECRET, 0600);
  PGconn *pg = PQconnectdb(DSN);
  if (PQstatus(pg) != CONNECTION_OK) {
    fprintf(stderr, "connect: %s", PQerrorMessage(pg));
    PQfinish(pg);
    return 1;
  }
  snprintf(DBNAME, sizeof DBNAME, "%s", PQdb(pg));
  PQfinish(pg);
  CHECK(sql(schema));
  CHECK(sql(trig));

  RUN(test_directory);
  RUN(test_periodic_and_limits);

  unlink(RULES);
  unlink(SECRET);
  rmdir(DIR_);
  free(schema);
  free(rules);
  free(trig);
  return check_exit("test_reldir_pg");
}
