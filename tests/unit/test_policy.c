/* Unit tests for the catalog resolution model (pgveil/catalog.h) and the
 * policy snapshot (pgveil/policy.h): lookups over a synthetic resolution,
 * missing tables/columns and misfit actions with their rules lines, keys,
 * and refcount/swap semantics with readers racing a publisher (run it under
 * ASan: make BUILD=build-asan SAN=1 build-asan/tests/test_policy). */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "pgveil/catalog.h"
#include "pgveil/mask.h"
#include "pgveil/policy.h"
#include "pgveil/rules.h"

/* Line numbers matter: messages are checked against them. */
static const char *RULES =
    "version: 1\n"                                         /* 1 */
    "purposes:\n"                                          /* 2 */
    "  marketing: { roles: [app] }\n"                      /* 3 */
    "  support: { roles: [app] }\n"                        /* 4 */
    "tables:\n"                                            /* 5 */
    "  public.customers:\n"                                /* 6 */
    "    subject: id\n"                                    /* 7 */
    "    columns:\n"                                       /* 8 */
    "      email:\n"                                       /* 9 */
    "        default: hash\n"                              /* 10 */
    "        marketing: clear\n"                           /* 11 */
    "      birth_date:\n"                                  /* 12 */
    "        default: \"generalize(year)\"\n"              /* 13 */
    "        support: clear\n"                             /* 14 */
    "      full_name: withhold\n"                          /* 15 */
    "  crm.tickets:\n"                                     /* 16 */
    "    subject: customer_id\n"                           /* 17 */
    "    columns:\n"                                       /* 18 */
    "      body: { default: withhold, support: clear }\n"; /* 19 */

static const char *RULES_NOHASH = "version: 1\n"
                                  "tables:\n"
                                  "  public.customers:\n"
                                  "    subject: id\n"
                                  "    columns:\n"
                                  "      email: \"mask(keep_last=2)\"\n";

#define CUST 16400u
#define PART 16500u /* a partition of customers, other column order */
#define TICK 16600u

static pv_rules_t *load_rules(const char *text) {
  pv_rules_t *r = NULL;
  pv_rules_errors_t *e = NULL;
  int rc = pv_rules_load_buffer(text, strlen(text), "t.yaml", &r, &e);
  for (size_t i = 0; e && i < e->count; i++)
    fprintf(stderr, "    | %s\n", e->msgs[i]);
  pv_rules_errors_free(e);
  CHECK_EQ(rc, PV_OK);
  return r;
}

/* Index of schema.name in rules->tables (sorted by the loader). */
static uint32_t tidx(const pv_rules_t *r, const char *schema,
                     const char *name) {
  for (size_t i = 0; i < r->ntables; i++)
    if (!strcmp(r->tables[i].schema, schema) &&
        !strcmp(r->tables[i].name, name))
      return (uint32_t)i;
  CHECK(0);
  return 0;
}

typedef struct {
  pv_catalog_row_t v[32];
  size_t n;
} rows_t;

static void add(rows_t *rs, uint32_t idx, uint32_t relid, bool child,
                const char *att, int16_t attnum, uint32_t type, int32_t typmod,
                const char *tname) {
  rs->v[rs->n++] =
      (pv_catalog_row_t){idx, relid, child, att, attnum, type, typmod, tname};
}

/* A catalog that matches RULES: customers, a partition of it, tickets. */
static void good_rows(const pv_rules_t *r, rows_t *rs) {
  uint32_t c = tidx(r, "public", "customers"), t = tidx(r, "crm", "tickets");
  rs->n = 0;
  add(rs, c, CUST, false, "id", 1, PV_OID_INT4, -1, "integer");
  add(rs, c, CUST, false, "full_name", 2, PV_OID_TEXT, -1, "text");
  add(rs, c, CUST, false, "email", 3, PV_OID_VARCHAR, 84, "varchar(80)");
  add(rs, c, CUST, false, "birth_date", 4, PV_OID_DATE, -1, "date");
  add(rs, c, CUST, false, "city", 5, PV_OID_TEXT, -1, "text");
  add(rs, c, PART, true, "email", 1, PV_OID_VARCHAR, 84, "varchar(80)");
  add(rs, c, PART, true, "id", 2, PV_OID_INT4, -1, "integer");
  add(rs, c, PART, true, "full_name", 3, PV_OID_TEXT, -1, "text");
  add(rs, c, PART, true, "birth_date", 4, PV_OID_DATE, -1, "date");
  add(rs, t, TICK, false, "ticket_id", 1, PV_OID_INT4, -1, "integer");
  add(rs, t, TICK, false, "customer_id", 2, PV_OID_INT4, -1, "integer");
  add(rs, t, TICK, false, "body", 3, PV_OID_TEXT, -1, "text");
}

static pv_catalog_t *build_ok(const pv_rules_t *r, const rows_t *rs,
                              const char *db) {
  pv_catalog_t *cat = NULL;
  pv_rules_errors_t *e = NULL;
  CHECK_EQ(pv_catalog_build(r, db, rs->v, rs->n, 100, &cat, &e), PV_OK);
  CHECK(e == NULL);
  pv_rules_errors_free(e);
  return cat;
}

/* Builds, expecting failure; returns the messages joined by '\n'. */
static char *build_fail(const pv_rules_t *r, const rows_t *rs, size_t *count) {
  pv_catalog_t *cat = NULL;
  pv_rules_errors_t *e = NULL;
  CHECK_EQ(pv_catalog_build(r, "crm", rs->v, rs->n, 100, &cat, &e), PV_ENOENT);
  CHECK(cat == NULL);
  CHECK(e != NULL);
  static char buf[4096];
  buf[0] = '\0';
  *count = e ? e->count : 0;
  for (size_t i = 0; e && i < e->count; i++) {
    strncat(buf, e->msgs[i], sizeof buf - strlen(buf) - 2);
    strcat(buf, "\n");
  }
  pv_rules_errors_free(e);
  pv_catalog_free(cat);
  return buf;
}

static void test_lookups(void) {
  pv_rules_t *r = load_rules(RULES);
  if (!r)
    return;
  rows_t rs;
  good_rows(r, &rs);
  pv_catalog_t *cat = build_ok(r, &rs, "crm");
  CHECK(cat != NULL);
  CHECK_STR(pv_catalog_dbname(cat), "crm");
  CHECK(pv_catalog_rules(cat) == r);
  CHECK_EQ(pv_catalog_nrelations(cat), 3);
  CHECK_EQ(pv_catalog_ncolumns(cat), 3 + 3 + 1);

  const pv_catalog_col_t *c = pv_catalog_column(cat, CUST, 3);
  CHECK(c != NULL);
  if (c) {
    CHECK_STR(c->rule->name, "email");
    CHECK_STR(c->table->name, "customers");
    CHECK_EQ(c->type_oid, PV_OID_VARCHAR);
    CHECK_EQ(c->typmod, 84);
    CHECK_EQ(c->subject_attnum, 1);
  }
  CHECK(pv_catalog_column(cat, CUST, 5) == NULL); /* city: unprotected */
  CHECK(pv_catalog_column(cat, CUST, 1) == NULL); /* id: subject only */
  CHECK(pv_catalog_column(cat, CUST, 99) == NULL);
  CHECK(pv_catalog_column(cat, 0, 3) == NULL); /* computed column */
  CHECK(pv_catalog_column(cat, CUST, 0) == NULL);
  CHECK(pv_catalog_column(cat, CUST, -2) == NULL); /* system column */
  CHECK(pv_catalog_column(cat, 12345, 3) == NULL);

  /* The partition maps by name: its own attnums and subject. */
  c = pv_catalog_column(cat, PART, 1);
  CHECK(c && !strcmp(c->rule->name, "email"));
  CHECK(c && c->subject_attnum == 2);
  c = pv_catalog_column(cat, PART, 4);
  CHECK(c && !strcmp(c->rule->name, "birth_date"));
  const pv_catalog_rel_t *rel = pv_catalog_relation(cat, PART);
  CHECK(rel && rel->child && rel->subject_attnum == 2);
  rel = pv_catalog_relation(cat, CUST);
  CHECK(rel && !rel->child && rel->subject_type_oid == PV_OID_INT4);
  CHECK(pv_catalog_relation(cat, 1) == NULL);

  c = pv_catalog_column(cat, TICK, 3);
  CHECK(c && !strcmp(c->rule->name, "body") && c->subject_attnum == 2);

  /* The fingerprint follows the rows. */
  uint64_t fp = pv_catalog_rows_fingerprint(rs.v, rs.n);
  CHECK(fp == pv_catalog_fingerprint(cat));
  rs.v[2].attnum = 7;
  CHECK(fp != pv_catalog_rows_fingerprint(rs.v, rs.n));
  rs.v[2].attnum = 3;
  rs.v[2].attname = "emai1";
  CHECK(fp != pv_catalog_rows_fingerprint(rs.v, rs.n));
  pv_catalog_free(cat);
  pv_rules_free(r);
}

/* Many columns, so probing collisions are exercised. */
static void test_many_columns(void) {
  char text[64 * 1024];
  size_t n = (size_t)snprintf(text, sizeof text,
                              "version: 1\ntables:\n  public.wide:\n"
                              "    subject: c0\n    columns:\n");
  for (int i = 1; i <= 600; i++)
    n +=
        (size_t)snprintf(text + n, sizeof text - n, "      c%d: withhold\n", i);
  pv_rules_t *r = load_rules(text);
  if (!r)
    return;
  static pv_catalog_row_t rows[1202];
  static char names[1202][16];
  size_t nr = 0;
  for (uint32_t rel = 0; rel < 2; rel++)
    for (int i = 0; i <= 600; i++) {
      snprintf(names[nr], sizeof names[nr], "c%d", i);
      rows[nr] = (pv_catalog_row_t){0,
                                    20000 + rel,
                                    rel == 1,
                                    names[nr],
                                    (int16_t)(rel ? 601 - i : i + 1),
                                    PV_OID_TEXT,
                                    -1,
                                    "text"};
      nr++;
    }
  pv_catalog_t *cat = NULL;
  pv_rules_errors_t *e = NULL;
  CHECK_EQ(pv_catalog_build(r, "db", rows, nr, 10, &cat, &e), PV_OK);
  CHECK_EQ(pv_catalog_ncolumns(cat), 1200);
  int bad = 0;
  for (int i = 1; i <= 600; i++) {
    char want[16];
    snprintf(want, sizeof want, "c%d", i);
    const pv_catalog_col_t *a = pv_catalog_column(cat, 20000, (int16_t)(i + 1));
    const pv_catalog_col_t *b =
        pv_catalog_column(cat, 20001, (int16_t)(601 - i));
    bad += !a || strcmp(a->rule->name, want) || a->subject_attnum != 1;
    bad += !b || strcmp(b->rule->name, want) || b->subject_attnum != 601;
  }
  CHECK_EQ(bad, 0);
  CHECK(pv_catalog_column(cat, 20000, 1) == NULL); /* c0: the subject */
  pv_catalog_free(cat);
  pv_rules_errors_free(e);
  pv_rules_free(r);
}

static void test_missing(void) {
  pv_rules_t *r = load_rules(RULES);
  if (!r)
    return;
  rows_t rs;
  size_t n = 0;
  /* birth_date gone (renamed), tickets gone entirely. */
  good_rows(r, &rs);
  rs.v[3].attname = "born_on";
  rs.n = 9;
  char *msg = build_fail(r, &rs, &n);
  CHECK_EQ(n, 2);
  CHECK(strstr(msg, "t.yaml:12:7: column public.customers.birth_date does "
                    "not exist in database \"crm\"\n") != NULL);
  CHECK(strstr(msg, "t.yaml:16:3: table crm.tickets does not exist in "
                    "database \"crm\"\n") != NULL);
  CHECK(strstr(msg, "t.yaml:12") < strstr(msg, "t.yaml:16")); /* file order */

  /* Subject column missing. */
  good_rows(r, &rs);
  rs.v[10].attname = "cust";
  msg = build_fail(r, &rs, &n);
  CHECK_EQ(n, 1);
  CHECK(strstr(msg, "t.yaml:16:3: subject column customer_id of table "
                    "crm.tickets does not exist") != NULL);

  /* A column only a partition has does not count for the table. */
  good_rows(r, &rs);
  rs.v[1].attname = "name";
  msg = build_fail(r, &rs, &n);
  CHECK_EQ(n, 1);
  CHECK(strstr(msg, "t.yaml:15:7: column public.customers.full_name") != NULL);

  /* Rows the query cannot produce are ignored, not trusted. */
  good_rows(r, &rs);
  add(&rs, 77, 999, false, "email", 1, PV_OID_TEXT, -1, "text");
  pv_catalog_t *cat = build_ok(r, &rs, "crm");
  CHECK(pv_catalog_relation(cat, 999) == NULL);
  pv_catalog_free(cat);

  /* max_errors: one kept, the rest counted. */
  good_rows(r, &rs);
  rs.n = 0;
  pv_rules_errors_t *e = NULL;
  CHECK_EQ(pv_catalog_build(r, "crm", rs.v, 0, 1, &cat, &e), PV_ENOENT);
  CHECK(e && e->count == 1 && e->omitted == 1);
  pv_rules_errors_free(e);
  pv_rules_free(r);
}

static void test_misfit(void) {
  pv_rules_t *r = load_rules(RULES);
  if (!r)
    return;
  rows_t rs;
  size_t n = 0;
  good_rows(r, &rs);
  rs.v[3].type_oid = PV_OID_TEXT; /* birth_date text: generalize(year)? */
  rs.v[3].type_name = "text";
  char *msg = build_fail(r, &rs, &n);
  CHECK_EQ(n, 1);
  CHECK(strstr(msg, "t.yaml:13:18: action generalize(year) (default) does "
                    "not fit column public.customers.birth_date of type "
                    "text") != NULL);

  /* hash fits int4 and varchar, not bool; only written actions count. */
  good_rows(r, &rs);
  rs.v[2].type_oid = PV_OID_BOOL;
  rs.v[2].type_name = "boolean";
  msg = build_fail(r, &rs, &n);
  CHECK_EQ(n, 1);
  CHECK(strstr(msg, ":10:18: action hash (default) does not fit column "
                    "public.customers.email of type boolean") != NULL);
  good_rows(r, &rs);
  rs.v[2].type_oid = PV_OID_INT8;
  pv_catalog_t *cat = build_ok(r, &rs, "crm");
  pv_catalog_free(cat);
  pv_rules_free(r);
}

static void test_params(void) {
  pv_rules_t *r = load_rules(RULES);
  if (!r)
    return;
  size_t cap = pv_catalog_query_params_size(r);
  char *s = malloc(cap), *t = malloc(cap);
  CHECK_EQ(pv_catalog_query_params(r, s, t, cap), PV_OK);
  /* sorted by (schema, name): crm.tickets first */
  CHECK_STR(s, "{\"crm\",\"public\"}");
  CHECK_STR(t, "{\"tickets\",\"customers\"}");
  CHECK_EQ(pv_catalog_query_params(r, s, t, 10), PV_ELIMIT);
  CHECK(strstr(PV_CATALOG_QUERY, "pg_catalog.pg_attribute") != NULL);
  CHECK(strstr(PV_CATALOG_QUERY, " pg_class") == NULL); /* always qualified */
  free(s);
  free(t);
  pv_rules_free(r);
}

/* ---- Policy ------------------------------------------------------------- */

static const uint8_t SECRET[] = "0123456789abcdef0123456789abcdef";

static pv_policy_t *new_policy(const char *text) {
  pv_policy_t *p = NULL;
  char err[512];
  CHECK_EQ(pv_policy_new(load_rules(text), SECRET, 32, &p, err, sizeof err),
           PV_OK);
  return p;
}

static void test_secret(void) {
  pv_policy_t *p = NULL;
  char err[512];
  pv_rules_t *r = load_rules(RULES);
  CHECK(pv_policy_rules_need_secret(r));
  CHECK_EQ(pv_policy_new(r, NULL, 0, &p, err, sizeof err), PV_EINVAL);
  CHECK(p == NULL);
  CHECK(strstr(err, "t.yaml:10:18: the rules use hash") != NULL);
  CHECK(strstr(err, "--secret-file") != NULL);

  CHECK_EQ(pv_policy_new(load_rules(RULES), SECRET, 8, &p, err, sizeof err),
           PV_EINVAL);
  CHECK(strstr(err, "too short") != NULL);

  r = load_rules(RULES_NOHASH);
  CHECK(!pv_policy_rules_need_secret(r));
  CHECK_EQ(pv_policy_new(r, NULL, 0, &p, err, sizeof err), PV_OK);
  CHECK(pv_policy_key(p, PV_PURPOSE_NONE) == NULL);
  pv_policy_release(p);

  p = new_policy(RULES);
  const pv_mask_key_t *k0 = pv_policy_key(p, PV_PURPOSE_NONE);
  const pv_mask_key_t *k1 = pv_policy_key(p, 0), *k2 = pv_policy_key(p, 1);
  CHECK(k0 && k1 && k2);
  CHECK(pv_policy_key(p, 2) == NULL);
  CHECK(pv_policy_key(p, PV_PURPOSE_UNKNOWN) == NULL);
  /* Per-purpose keys give different pseudonyms of the same value. */
  pv_action_t h = {.kind = PV_ACT_HASH};
  uint8_t a[64], b[64], c[64];
  const uint8_t v[] = "alice@example.com";
  int64_t na = pv_mask_apply(&h, k0, "public.customers.email", PV_OID_TEXT, -1,
                             0, v, sizeof v - 1, a, sizeof a);
  int64_t nb = pv_mask_apply(&h, k1, "public.customers.email", PV_OID_TEXT, -1,
                             0, v, sizeof v - 1, b, sizeof b);
  int64_t nc = pv_mask_apply(&h, k0, "public.customers.email", PV_OID_TEXT, -1,
                             0, v, sizeof v - 1, c, sizeof c);
  CHECK(na == (int64_t)sizeof v - 1 && nb == na && nc == na);
  CHECK(memcmp(a, b, (size_t)na) != 0);
  CHECK(memcmp(a, c, (size_t)na) == 0);
  pv_policy_release(p);
}

static void test_snapshot_dbs(void) {
  pv_policy_t *p0 = new_policy(RULES);
  if (!p0)
    return;
  const pv_rules_t *r = pv_policy_rules(p0);
  CHECK(pv_policy_db(p0, "crm") == NULL);
  rows_t rs;
  good_rows(r, &rs);

  pv_policy_t *p1 = NULL, *p2 = NULL, *p3 = NULL, *p4 = NULL;
  CHECK_EQ(
      pv_policy_with_db(p0, "crm", build_ok(r, &rs, "crm"), NULL, false, &p1),
      PV_OK);
  CHECK_EQ(
      pv_policy_with_db(p1, "alpha", NULL, "pgveil: cannot read", true, &p2),
      PV_OK);
  CHECK(pv_policy_db(p0, "crm") == NULL); /* p0 unchanged */
  CHECK_EQ(pv_policy_ndbs(p2), 2);
  CHECK_STR(pv_policy_db_name(pv_policy_db_at(p2, 0)), "alpha");
  const pv_policy_db_t *crm = pv_policy_db(p2, "crm");
  CHECK(crm == pv_policy_db(p1, "crm")); /* shared, not copied */
  CHECK(pv_policy_db_error(crm) == NULL);
  const pv_policy_col_t *c = pv_policy_column(crm, CUST, 3);
  CHECK(c && !strcmp(c->rule->name, "email"));
  CHECK(pv_policy_relation(crm, PART) != NULL);
  const pv_policy_db_t *alpha = pv_policy_db(p2, "alpha");
  CHECK(alpha && pv_policy_db_transient(alpha));
  CHECK_STR(pv_policy_db_error(alpha), "pgveil: cannot read");
  CHECK(pv_policy_column(alpha, CUST, 3) == NULL);
  CHECK(pv_policy_db(p2, "CRM") == NULL); /* exact names */

  /* A failed re-resolution keeps answering from the last good one. */
  CHECK_EQ(pv_policy_with_db(p2, "crm", NULL, "pgveil: mismatch", false, &p3),
           PV_OK);
  crm = pv_policy_db(p3, "crm");
  CHECK_STR(pv_policy_db_error(crm), "pgveil: mismatch");
  CHECK(!pv_policy_db_transient(crm));
  c = pv_policy_column(crm, CUST, 3);
  CHECK(c && !strcmp(c->rule->name, "email"));
  CHECK_EQ(pv_policy_with_db(p3, "crm", NULL, "pgveil: again", false, &p4),
           PV_OK);
  CHECK(pv_policy_column(pv_policy_db(p4, "crm"), CUST, 3) != NULL);

  /* Argument checks: both or neither of cat/error, foreign rules. */
  pv_policy_t *bad = NULL;
  CHECK_EQ(pv_policy_with_db(p0, "x", NULL, NULL, false, &bad), PV_EINVAL);
  pv_policy_t *other = new_policy(RULES);
  CHECK_EQ(
      pv_policy_with_db(other, "x", build_ok(r, &rs, "x"), NULL, false, &bad),
      PV_EINVAL);
  CHECK(bad == NULL);

  /* Releasing older snapshots first must keep shared parts alive. */
  pv_policy_release(p0);
  pv_policy_release(p1);
  pv_policy_release(p2);
  pv_policy_release(p3);
  CHECK(pv_policy_column(pv_policy_db(p4, "crm"), PART, 1) != NULL);
  CHECK_STR(pv_policy_rules(p4)->tables[1].name, "customers");
  pv_policy_release(p4);
  pv_policy_release(other);
  pv_policy_release(NULL);
}

static void test_holder(void) {
  pv_policy_holder_t h;
  CHECK_EQ(pv_policy_holder_init(&h), PV_OK);
  CHECK(pv_policy_acquire(&h) == NULL);
  pv_policy_t *p = new_policy(RULES);
  pv_policy_publish(&h, p); /* takes our reference */
  pv_policy_t *a = pv_policy_acquire(&h);
  CHECK(a == p);
  CHECK_EQ(pv_policy_generation(a), 1);
  pv_policy_t *q = NULL;
  rows_t rs;
  good_rows(pv_policy_rules(a), &rs);
  CHECK_EQ(pv_policy_with_db(a, "crm", build_ok(pv_policy_rules(a), &rs, "crm"),
                             NULL, false, &q),
           PV_OK);
  pv_policy_publish(&h, q);
  pv_policy_t *b = pv_policy_acquire(&h);
  CHECK(b == q);
  CHECK_EQ(pv_policy_generation(b), 2);
  /* a was swapped out but is still ours to read. */
  CHECK(pv_policy_db(a, "crm") == NULL);
  CHECK(pv_policy_rules(a)->ntables == 2);
  pv_policy_release(a);
  CHECK(pv_policy_db(b, "crm") != NULL);
  pv_policy_holder_dispose(&h);
  CHECK(pv_policy_column(pv_policy_db(b, "crm"), CUST, 3) != NULL);
  pv_policy_release(b);
}

/* ---- Readers racing a publisher ----------------------------------------- */

typedef struct {
  pv_policy_holder_t *h;
  atomic_bool *done;
  atomic_long reads;
  long bad;
} reader_t;

static void *reader(void *arg) {
  reader_t *rd = arg;
  uint64_t last = 0;
  while (!atomic_load(rd->done)) {
    pv_policy_t *p = pv_policy_acquire(rd->h);
    if (!p) {
      rd->bad++;
      continue;
    }
    uint64_t g = pv_policy_generation(p);
    rd->bad += g < last;
    last = g;
    const pv_policy_db_t *db = pv_policy_db(p, "crm");
    /* Odd generations fail crm and keep the fallback; even ones resolve. */
    const pv_policy_col_t *c = pv_policy_column(db, CUST, 3);
    rd->bad += !db || !c || strcmp(c->rule->name, "email") != 0;
    rd->bad += (pv_policy_db_error(db) != NULL) != (g % 2 == 1);
    rd->bad += pv_policy_key(p, 0) == NULL;
    rd->reads++;
    pv_policy_release(p);
  }
  return NULL;
}

static void test_race(void) {
  pv_policy_holder_t h;
  CHECK_EQ(pv_policy_holder_init(&h), PV_OK);
  pv_policy_t *base = new_policy(RULES);
  if (!base)
    return;
  rows_t rs;
  good_rows(pv_policy_rules(base), &rs);
  pv_policy_t *cur = NULL;
  /* generation 1 (odd): failed with fallback */
  pv_policy_t *ok = NULL;
  CHECK_EQ(pv_policy_with_db(base, "crm",
                             build_ok(pv_policy_rules(base), &rs, "crm"), NULL,
                             false, &ok),
           PV_OK);
  CHECK_EQ(pv_policy_with_db(ok, "crm", NULL, "pgveil: x", false, &cur), PV_OK);
  pv_policy_release(base);
  pv_policy_release(ok);
  pv_policy_publish(&h, pv_policy_ref(cur));

  atomic_bool done = false;
  reader_t rd[2] = {{&h, &done, 0, 0}, {&h, &done, 0, 0}};
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    CHECK_EQ(pthread_create(&th[i], NULL, reader, &rd[i]), 0);
  while (atomic_load(&rd[0].reads) == 0 || atomic_load(&rd[1].reads) == 0)
    sched_yield(); /* both readers in the loop before the swaps start */
  for (int i = 2; i <= 3000; i++) {
    pv_policy_t *next = NULL;
    int rc =
        i % 2 == 0
            ? pv_policy_with_db(cur, "crm",
                                build_ok(pv_policy_rules(cur), &rs, "crm"),
                                NULL, false, &next)
            : pv_policy_with_db(cur, "crm", NULL, "pgveil: x", false, &next);
    CHECK_EQ(rc, PV_OK);
    if (rc)
      break;
    pv_policy_release(cur);
    cur = next;
    pv_policy_publish(&h, pv_policy_ref(cur));
    if (i % 64 == 0)
      sched_yield();
  }
  atomic_store(&done, true);
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  fprintf(stderr, "    race: %ld + %ld reads over 3000 swaps\n",
          (long)atomic_load(&rd[0].reads), (long)atomic_load(&rd[1].reads));
  CHECK_EQ(rd[0].bad + rd[1].bad, 0);
  pv_policy_t *last = pv_policy_acquire(&h);
  CHECK_EQ(pv_policy_generation(last), 3000);
  pv_policy_release(last);
  pv_policy_release(cur);
  pv_policy_holder_dispose(&h);
}

int main(void) {
  RUN(test_lookups);
  RUN(test_many_columns);
  RUN(test_missing);
  RUN(test_misfit);
  RUN(test_params);
  RUN(test_secret);
  RUN(test_snapshot_dbs);
  RUN(test_holder);
  RUN(test_race);
  return check_exit("test_policy");
}
