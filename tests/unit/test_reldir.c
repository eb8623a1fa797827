/* Unit tests for the guard's relation directory (pgveil/reldir.h): building
 * from synthetic query rows, malformed rows, limits, qualified and
 * unqualified lookups across schemas, the pre-scan names, and the guard
 * analysing statements through it (run it under ASan:
 * make BUILD=build-asan SAN=1 build-asan/tests/test_reldir). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "pgveil/catalog.h"
#include "pgveil/policy.h"
#include "pgveil/reldir.h"
#include "pgveil/rules.h"
#include "pgveil/sql_guard.h"

static const char *RULES =
    "version: 1\n"
    "purposes:\n"
    "  support: { roles: [app] }\n"
    "tables:\n"
    "  public.customers:\n"
    "    subject: id\n"
    "    columns:\n"
    "      email: { default: withhold, support: clear }\n"
    "      ssn: withhold\n";

#define CUST 16400u
#define PART 16410u
#define CONTACTS 16500u
#define RISK 16510u
#define OVERVIEW 16520u
#define SCRATCH_V 16530u
#define DUP_A 16540u
#define DUP_B 16550u
#define EMPTY_V 16560u

static pv_rules_t *load_rules(void) {
  pv_rules_t *r = NULL;
  pv_rules_errors_t *e = NULL;
  int rc = pv_rules_load_buffer(RULES, strlen(RULES), "t.yaml", &r, &e);
  for (size_t i = 0; e && i < e->count; i++)
    fprintf(stderr, "    | %s\n", e->msgs[i]);
  pv_rules_errors_free(e);
  CHECK_EQ(rc, PV_OK);
  return r;
}

static pv_catalog_t *load_catalog(const pv_rules_t *r) {
  static const char *const cols[] = {"id", "full_name", "email", "ssn"};
  pv_catalog_row_t rows[8];
  size_t n = 0;
  for (int rel = 0; rel < 2; rel++)
    for (int i = 0; i < 4; i++)
      rows[n++] =
          (pv_catalog_row_t){0,       rel ? PART : CUST,     rel == 1,
                             cols[i], (int16_t)(i + 1),      i ? 25 : 23,
                             -1,      i ? "text" : "integer"};
  pv_catalog_t *cat = NULL;
  pv_rules_errors_t *e = NULL;
  int rc = pv_catalog_build(r, "crm", rows, n, 10, &cat, &e);
  for (size_t i = 0; e && i < e->count; i++)
    fprintf(stderr, "    | %s\n", e->msgs[i]);
  pv_rules_errors_free(e);
  CHECK_EQ(rc, PV_OK);
  return cat;
}

typedef struct {
  pv_reldir_row_t v[64];
  size_t n;
} rows_t;

static void rel(rows_t *rs, uint32_t relid, const char *schema,
                const char *name, char kind, bool prot, const char *def,
                const char *const *cols, size_t ncols) {
  if (!ncols)
    rs->v[rs->n++] =
        (pv_reldir_row_t){relid, schema, name, kind, prot, NULL, 0, def};
  for (size_t i = 0; i < ncols; i++)
    rs->v[rs->n++] =
        (pv_reldir_row_t){relid,   schema,           name,          kind, prot,
                          cols[i], (int16_t)(i + 1), i ? NULL : def};
}

static const char *const CUST_COLS[] = {"id", "full_name", "email", "ssn"};
static const char *const CONTACT_COLS[] = {"id", "full_name", "email"};
static const char *const RISK_COLS[] = {"id", "tax_ref"};
static const char *const OVER_COLS[] = {"id", "display_name"};
static const char *const ID_COL[] = {"id"};

#define CONTACTS_DEF                                                           \
  " SELECT customers.id,\n    customers.full_name,\n    customers.email\n"     \
  "   FROM public.customers;"

/* The rows PV_RELDIR_QUERY gives for the leak-corpus schema, plus a view
 * over a view in app_scratch, two views named "dup" and a view without
 * columns. Ordered by relid, as the query orders them. */
static void good_rows(rows_t *rs) {
  rs->n = 0;
  rel(rs, CUST, "public", "customers", 'r', true, NULL, CUST_COLS, 4);
  rel(rs, PART, "public", "customers_2024", 'r', true, NULL, CUST_COLS, 4);
  rel(rs, CONTACTS, "public", "customer_contacts", 'v', false, CONTACTS_DEF,
      CONTACT_COLS, 3);
  rel(rs, RISK, "public", "customer_risk", 'm', false,
      " SELECT customers.id,\n    customers.ssn AS tax_ref\n"
      "   FROM public.customers;",
      RISK_COLS, 2);
  rel(rs, OVERVIEW, "public", "customer_overview", 'v', false,
      " SELECT c.id,\n    c.full_name AS display_name\n"
      "   FROM public.customers c;",
      OVER_COLS, 2);
  rel(rs, SCRATCH_V, "app_scratch", "customers_v", 'v', false,
      " SELECT customer_contacts.id,\n    customer_contacts.full_name,\n"
      "    customer_contacts.email\n"
      "   FROM public.customer_contacts;",
      CONTACT_COLS, 3);
  rel(rs, DUP_A, "a", "dup", 'v', false,
      " SELECT customers.id FROM public.customers;", ID_COL, 1);
  rel(rs, DUP_B, "b", "dup", 'm', false,
      " SELECT customers.id FROM public.customers;", ID_COL, 1);
  rel(rs, EMPTY_V, "public", "nothing_v", 'v', false,
      " SELECT\n   FROM public.customers;", NULL, 0);
}

static pv_reldir_t *build(const pv_catalog_t *cat, const rows_t *rs,
                          const pv_reldir_limits_t *lim, int want) {
  pv_reldir_t *d = NULL;
  int rc = pv_reldir_build(cat, rs->v, rs->n, lim, &d);
  CHECK_EQ(rc, want);
  CHECK(want == PV_OK ? d != NULL : d == NULL);
  return d;
}

static int look(const pv_reldir_t *d, const char *schema, const char *name,
                const char *const *sp, size_t nsp, pv_guard_rel_t *out) {
  return pv_reldir_lookup((void *)d, schema, name, sp, nsp, out);
}

static void test_build_and_lookup(void) {
  pv_rules_t *r = load_rules();
  pv_catalog_t *cat = load_catalog(r);
  rows_t rs;
  good_rows(&rs);
  pv_reldir_t *d = build(cat, &rs, NULL, PV_OK);
  CHECK_EQ(pv_reldir_nrelations(d), 9);
  CHECK_EQ(pv_reldir_nviews(d), 7);
  CHECK(pv_reldir_fingerprint(d) == pv_reldir_rows_fingerprint(rs.v, rs.n));
  CHECK(pv_reldir_fingerprint(d) != 0);

  const char *pub[] = {"public"};
  pv_guard_rel_t o;
  /* Qualified: exact. */
  CHECK_EQ(look(d, "public", "customers", pub, 1, &o), PV_OK);
  CHECK_EQ(o.kind, PV_GUARD_REL_TABLE);
  CHECK_STR(o.schema, "public");
  CHECK_STR(o.name, "customers");
  CHECK_EQ(o.ncolumns, 4);
  CHECK_STR(o.columns[0], "id");
  CHECK_STR(o.columns[3], "ssn");
  CHECK(o.rules_table == pv_rules_table_find(r, "public", "customers"));
  CHECK(o.view_sql == NULL);
  /* A partition carries its parent's rules table. */
  CHECK_EQ(look(d, "public", "customers_2024", pub, 1, &o), PV_OK);
  CHECK_EQ(o.kind, PV_GUARD_REL_TABLE);
  CHECK(o.rules_table == pv_rules_table_find(r, "public", "customers"));
  CHECK_EQ(look(d, "crm", "customers", pub, 1, &o), PV_OK);
  CHECK_EQ(o.kind, PV_GUARD_REL_UNKNOWN);
  CHECK_STR(o.name, "customers");
  CHECK_EQ(look(d, "public", "orders", pub, 1, &o), PV_OK);
  CHECK_EQ(o.kind, PV_GUARD_REL_UNKNOWN);

  /* Views: a complete SELECT, no blanks around it, no ';'. */
  CHECK_EQ(look(d, NULL, "customer_contacts", pub, 1, &o), PV_OK);
  CHECK_EQ(o.kind, PV_GUARD_REL_VIEW);
  CHECK_STR(o.view_sql, "SELECT customers.id,\n    customers.full_name,\n"
                        "    customers.email\n   FROM public.customers");
  CHECK_EQ(o.ncolumns, 3);
  CHECK_STR(o.columns[2], "email");
  CHECK(o.rules_table == NULL);
  /* A matview over protected data is analysed as a view. */
  CHECK_EQ(look(d, NULL, "customer_risk", pub, 1, &o), PV_OK);
  CHECK_EQ(o.kind, PV_GUARD_REL_VIEW);
  CHECK_STR(o.columns[1], "tax_ref");
  CHECK(o.view_sql && !strncmp(o.view_sql, "SELECT customers.id", 19));
  CHECK_EQ(look(d, NULL, "nothing_v", pub, 1, &o), PV_OK);
  CHECK_EQ(o.kind, PV_GUARD_REL_VIEW);
  CHECK_EQ(o.ncolumns, 0);

  /* Unqualified, one candidate: found whatever the search_path says. */
  CHECK_EQ(look(d, NULL, "customers_v", pub, 1, &o), PV_OK);
  CHECK_EQ(o.kind, PV_GUARD_REL_VIEW);
  CHECK_STR(o.schema, "app_scratch");
  CHECK_EQ(look(d, NULL, "customers_v", NULL, 0, &o), PV_OK);
  CHECK_STR(o.schema, "app_scratch");
  CHECK_EQ(look(d, "public", "customers_v", pub, 1, &o), PV_OK);
  CHECK_EQ(o.kind, PV_GUARD_REL_UNKNOWN);
  /* Several: the search_path's pick, else the first by schema. */
  const char *b_first[] = {"public", "b", "a"};
  CHECK_EQ(look(d, NULL, "dup", b_first, 3, &o), PV_OK);
  CHECK_STR(o.schema, "b");
  CHECK_EQ(look(d, NULL, "dup", pub, 1, &o), PV_OK);
  CHECK_STR(o.schema, "a");
  CHECK_EQ(look(d, NULL, "dup", b_first + 2, 1, &o), PV_OK);
  CHECK_STR(o.schema, "a");
  CHECK_EQ(look(d, NULL, "no_such", pub, 1, &o), PV_OK);
  CHECK_EQ(o.kind, PV_GUARD_REL_UNKNOWN);
  /* Names are exact (the parser folded them already). */
  CHECK_EQ(look(d, NULL, "Customers", pub, 1, &o), PV_OK);
  CHECK_EQ(o.kind, PV_GUARD_REL_UNKNOWN);

  /* No directory: fail closed. */
  CHECK_EQ(look(NULL, NULL, "customers", pub, 1, &o), PV_EINVAL);
  CHECK_EQ(look(d, NULL, NULL, pub, 1, &o), PV_EINVAL);

  /* Pre-scan names: distinct bare names, sorted. */
  const char *const *names = NULL;
  size_t nn = 0;
  pv_reldir_names(d, &names, &nn);
  CHECK_EQ(nn, 8);
  CHECK_STR(names[0], "customer_contacts");
  CHECK_STR(names[5], "customers_v");
  CHECK_STR(names[6], "dup");
  const pv_guard_names_t *gn = pv_reldir_guard_names(d);
  CHECK(gn != NULL);
  const char *q1 = "SELECT * FROM app_scratch.customers_v";
  const char *q2 = "SELECT 1 FROM public.orders";
  CHECK(pv_guard_prescan(gn, q1, strlen(q1)));
  CHECK(!pv_guard_prescan(gn, q2, strlen(q2)));

  pv_reldir_free(d);
  pv_catalog_free(cat);
  pv_rules_free(r);
}

static void test_bad_rows_and_limits(void) {
  pv_rules_t *r = load_rules();
  pv_catalog_t *cat = load_catalog(r);
  rows_t rs;

  /* A protected relid the catalog does not know. */
  good_rows(&rs);
  rs.v[0].relid = rs.v[1].relid = rs.v[2].relid = rs.v[3].relid = 99;
  build(cat, &rs, NULL, PV_EINVAL);
  /* Rows of one relation not together / relids decreasing. */
  good_rows(&rs);
  pv_reldir_row_t t = rs.v[0];
  rs.v[0] = rs.v[4];
  rs.v[4] = t;
  build(cat, &rs, NULL, PV_EINVAL);
  /* attnums not increasing. */
  good_rows(&rs);
  rs.v[2].attnum = 1;
  build(cat, &rs, NULL, PV_EINVAL);
  /* A non-protected relation that is not a view. */
  good_rows(&rs);
  for (size_t i = 0; i < rs.n; i++)
    if (rs.v[i].relid == CONTACTS)
      rs.v[i].relkind = 'r';
  build(cat, &rs, NULL, PV_EINVAL);
  /* Two relations, one (schema, name). */
  good_rows(&rs);
  for (size_t i = 0; i < rs.n; i++)
    if (rs.v[i].relid == DUP_B)
      rs.v[i].schema = "a";
  build(cat, &rs, NULL, PV_EINVAL);
  /* A definition on a later row. */
  good_rows(&rs);
  rs.v[9].viewdef = "SELECT 1";
  build(cat, &rs, NULL, PV_EINVAL);
  /* Empty names. */
  good_rows(&rs);
  rs.v[0].name = "";
  build(cat, &rs, NULL, PV_EINVAL);
  /* No rows: an empty directory, everything unknown. */
  good_rows(&rs);
  rs.n = 0;
  pv_reldir_t *d = build(cat, &rs, NULL, PV_OK);
  pv_guard_rel_t o;
  CHECK_EQ(look(d, NULL, "customers", NULL, 0, &o), PV_OK);
  CHECK_EQ(o.kind, PV_GUARD_REL_UNKNOWN);
  pv_reldir_free(d);

  /* Too many relations. */
  good_rows(&rs);
  pv_reldir_limits_t lim = pv_reldir_limits_default();
  CHECK_EQ(lim.max_relations, PV_RELDIR_MAX_RELATIONS);
  lim.max_relations = 8;
  build(cat, &rs, &lim, PV_ELIMIT);
  lim.max_relations = 9;
  d = build(cat, &rs, &lim, PV_OK);
  pv_reldir_free(d);

  /* A definition over the limit: its lookups fail, others still work,
   * and an unqualified name with it among several candidates fails. */
  lim = pv_reldir_limits_default();
  lim.max_viewdef = strlen("SELECT customers.id FROM public.customers") - 1;
  d = build(cat, &rs, &lim, PV_OK);
  const char *pub[] = {"public"};
  CHECK_EQ(look(d, NULL, "dup", pub, 1, &o), PV_ELIMIT);
  CHECK_EQ(look(d, "b", "dup", pub, 1, &o), PV_ELIMIT);
  CHECK_EQ(look(d, NULL, "customer_contacts", pub, 1, &o), PV_ELIMIT);
  CHECK_EQ(look(d, NULL, "customers", pub, 1, &o), PV_OK);
  CHECK_EQ(o.kind, PV_GUARD_REL_TABLE);
  const char *const *names;
  size_t nn;
  pv_reldir_names(d, &names, &nn);
  CHECK_EQ(nn, 8); /* still in the pre-scan set */
  pv_reldir_free(d);

  /* Fingerprints follow content. */
  good_rows(&rs);
  uint64_t f1 = pv_reldir_rows_fingerprint(rs.v, rs.n);
  rs.v[8].viewdef = " SELECT customers.id, customers.ssn FROM public.customers";
  CHECK(pv_reldir_rows_fingerprint(rs.v, rs.n) != f1);

  /* The query parameter. */
  char buf[64];
  CHECK_EQ(pv_reldir_query_param(cat, buf, sizeof buf), PV_OK);
  char want1[64], want2[64];
  snprintf(want1, sizeof want1, "{%u,%u}", CUST, PART);
  snprintf(want2, sizeof want2, "{%u,%u}", PART, CUST);
  CHECK(!strcmp(buf, want1) || !strcmp(buf, want2));
  CHECK(pv_reldir_query_param_size(cat) >= strlen(buf) + 1);
  CHECK_EQ(pv_reldir_query_param(cat, buf, 8), PV_ELIMIT);
  CHECK(strstr(PV_RELDIR_QUERY, "pg_catalog.pg_get_viewdef") != NULL);

  pv_catalog_free(cat);
  pv_rules_free(r);
}

/* The guard through the directory: protected data through views, a
 * matview and a view over a view is refused in expressions; an unrelated
 * relation is not. */
static int analyse(const pv_rules_t *r, const pv_reldir_t *d, int purpose,
                   const char *sql, bool *refused) {
  const char *sp[] = {"public"};
  pv_guard_input_t in = {.rules = r,
                         .purpose = purpose,
                         .search_path = sp,
                         .nsearch_path = 1,
                         .lookup = pv_reldir_lookup,
                         .lookup_ctx = (void *)d};
  pv_guard_result_t *res = NULL;
  int rc = pv_guard_analyze(&in, sql, &res);
  *refused = res ? res->refused : true;
  if (res && res->refused && getenv("RELDIR_VERBOSE"))
    fprintf(stderr, "    %s -> %s\n", sql, res->first_refused->message);
  pv_guard_result_free(res);
  return rc;
}

static void test_guard(void) {
  pv_rules_t *r = load_rules();
  pv_catalog_t *cat = load_catalog(r);
  rows_t rs;
  good_rows(&rs);
  pv_reldir_t *d = build(cat, &rs, NULL, PV_OK);
  bool refused = false;
  static const char *const bad[] = {
      "SELECT upper(email) FROM customer_contacts",
      "SELECT upper(email) FROM app_scratch.customers_v",
      "SELECT upper(email) FROM customers_v", /* not on the search_path */
      "SELECT lower(tax_ref) FROM customer_risk",
      "SELECT id FROM customer_contacts WHERE email LIKE 'a%'",
      "SELECT upper(ssn) FROM customers",
      "SELECT upper(ssn) FROM public.customers_2024",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    CHECK_EQ(analyse(r, d, PV_PURPOSE_NONE, bad[i], &refused), PV_OK);
    if (!refused)
      fprintf(stderr, "    not refused: %s\n", bad[i]);
    CHECK(refused);
  }
  static const char *const ok[] = {
      "SELECT id, email FROM customer_contacts",
      "SELECT email FROM customers_v",
      "SELECT upper(status) FROM orders",
      "SELECT id, display_name FROM customer_overview",
  };
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
    CHECK_EQ(analyse(r, d, PV_PURPOSE_NONE, ok[i], &refused), PV_OK);
    if (refused)
      fprintf(stderr, "    refused: %s\n", ok[i]);
    CHECK(!refused);
  }
  /* An over-long definition makes the analysis fail (caller refuses). */
  pv_reldir_free(d);
  pv_reldir_limits_t lim = pv_reldir_limits_default();
  lim.max_viewdef = 16;
  d = build(cat, &rs, &lim, PV_OK);
  CHECK_EQ(analyse(r, d, PV_PURPOSE_NONE, "SELECT id FROM customer_contacts",
                   &refused),
           PV_ELIMIT);
  CHECK(analyse(r, NULL, PV_PURPOSE_NONE, "SELECT 1 FROM customers", &refused) <
        0);
  pv_reldir_free(d);
  pv_catalog_free(cat);
  pv_rules_free(r);
}

/* The policy snapshot carries the directory, and keeps the last good one
 * when a resolution fails. */
static void test_policy(void) {
  pv_rules_t *r = load_rules();
  pv_policy_t *base = NULL, *p1 = NULL, *p2 = NULL, *p3 = NULL;
  char err[256];
  CHECK_EQ(pv_policy_new(r, NULL, 0, &base, err, sizeof err), PV_OK);
  const pv_rules_t *pr = pv_policy_rules(base);
  pv_catalog_t *cat = load_catalog(pr);
  rows_t rs;
  good_rows(&rs);
  pv_reldir_t *d = build(cat, &rs, NULL, PV_OK);
  CHECK_EQ(pv_policy_with_db_reldir(base, "crm", cat, d, NULL, false, &p1),
           PV_OK);
  const pv_policy_db_t *db = pv_policy_db(p1, "crm");
  CHECK(pv_policy_db_reldir(db) == d);
  CHECK_EQ(pv_policy_with_db_reldir(p1, "crm", NULL, NULL, "boom", false, &p2),
           PV_OK);
  db = pv_policy_db(p2, "crm");
  CHECK(pv_policy_db_error(db) != NULL);
  CHECK(pv_policy_db_reldir(db) == d); /* the last good one */
  /* Without a directory (pv_policy_with_db): NULL, lookups fail closed. */
  CHECK_EQ(pv_policy_with_db(p2, "crm", load_catalog(pr), NULL, false, &p3),
           PV_OK);
  CHECK(pv_policy_db_reldir(pv_policy_db(p3, "crm")) == NULL);
  /* A directory with an error is refused (and freed). */
  pv_policy_t *bad = NULL;
  pv_reldir_t *d2 = build(cat, &rs, NULL, PV_OK);
  CHECK_EQ(pv_policy_with_db_reldir(p1, "crm", NULL, d2, "x", false, &bad),
           PV_EINVAL);
  CHECK(pv_policy_db_reldir(NULL) == NULL);
  pv_policy_release(p3);
  pv_policy_release(p2);
  pv_policy_release(p1);
  pv_policy_release(base);
}

int main(void) {
  RUN(test_build_and_lookup);
  RUN(test_bad_rows_and_limits);
  RUN(test_guard);
  RUN(test_policy);
  return check_exit("test_reldir");
}
