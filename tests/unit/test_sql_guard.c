/* Unit tests for the guard's SQL analysis (proxy/sql_guard*.c): a fake
 * catalog from the leak corpus schema, rules equivalent to its SPEC, every
 * leak-case family as a statement with its expected decision, legitimate
 * queries (false positives are failures), SET/SHOW/RESET and COPY reports,
 * the pre-scan, and timings. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <pg_query.h>

#include "check.h"
#include "pgveil/rules.h"
#include "pgveil/sql_guard.h"

bool pv_guard_tables_sorted(void);

/* ---- Fake catalog (leakcases/schema.sql) --------------------------------- */

static const char *const CUSTOMERS[] = {
    "id",         "full_name",      "email",     "phone", "ssn",
    "birth_date", "street",         "city",      "zip",   "country",
    "notes",      "lifetime_value", "created_at"};
static const char *const ORDERS[] = {"id", "customer_id", "ordered_at", "total",
                                     "status"};
static const char *const TICKETS[] = {"id", "customer_id", "opened_at",
                                      "subject", "body"};
static const char *const CONSENT[] = {"subject_id", "purpose", "granted"};
static const char *const RISK[] = {"id", "tax_ref", "lifetime_value"};
static const char *const CONTACTS[] = {"id", "full_name", "email", "phone"};
static const char *const OVERVIEW[] = {"id", "city", "country", "display_name",
                                       "order_count"};

typedef struct {
  const char *name;
  pv_guard_rel_kind_t kind;
  const char *const *cols;
  size_t ncols;
  const char *view_sql;
} fake_rel_t;

#define N(a) (sizeof(a) / sizeof((a)[0]))
static const fake_rel_t PUBLIC_RELS[] = {
    {"customers", PV_GUARD_REL_TABLE, CUSTOMERS, N(CUSTOMERS), NULL},
    {"orders", PV_GUARD_REL_TABLE, ORDERS, N(ORDERS), NULL},
    {"support_tickets", PV_GUARD_REL_TABLE, TICKETS, N(TICKETS), NULL},
    {"consent", PV_GUARD_REL_TABLE, CONSENT, N(CONSENT), NULL},
    {"customer_risk", PV_GUARD_REL_TABLE, RISK, N(RISK), NULL},
    {"customer_contacts", PV_GUARD_REL_VIEW, CONTACTS, N(CONTACTS),
     "SELECT id, full_name, email, phone FROM public.customers"},
    {"customer_overview", PV_GUARD_REL_VIEW, OVERVIEW, N(OVERVIEW),
     "SELECT c.id, c.city, c.country, c.full_name AS display_name, "
     "count(o.id) AS order_count FROM public.customers c LEFT JOIN "
     "public.orders o ON o.customer_id = c.id GROUP BY c.id"},
    {"upper_contacts", PV_GUARD_REL_VIEW, CONTACTS, N(CONTACTS),
     "SELECT id, upper(full_name) AS full_name, city AS email, "
     "lower(email) AS phone FROM public.customers"},
};

static const pv_rules_t *g_rules;
static int lookups;

static int fake_lookup(void *ctx, const char *schema, const char *name,
                       const char *const *sp, size_t nsp, pv_guard_rel_t *out) {
  (void)ctx;
  lookups++;
  memset(out, 0, sizeof *out);
  bool in_public = schema ? strcmp(schema, "public") == 0 : false;
  if (!schema)
    for (size_t i = 0; i < nsp; i++)
      if (!strcmp(sp[i], "public"))
        in_public = true;
  if (!in_public)
    return 0;
  for (size_t i = 0; i < N(PUBLIC_RELS); i++) {
    const fake_rel_t *r = &PUBLIC_RELS[i];
    if (strcmp(r->name, name) != 0)
      continue;
    out->kind = r->kind;
    out->schema = "public";
    out->name = r->name;
    out->columns = r->cols;
    out->ncolumns = r->ncols;
    out->view_sql = r->view_sql;
    if (r->kind == PV_GUARD_REL_TABLE)
      out->rules_table = pv_rules_table_find(g_rules, "public", r->name);
    return 0;
  }
  return 0;
}

/* Same rules as tests/leakcases.yaml, used when that file is missing. */
static const char RULES_YAML[] =
    "version: 1\n"
    "purposes:\n"
    "  marketing:\n"
    "    roles: [crm_app]\n"
    "    consent: opt_in\n"
    "  support:\n"
    "    roles: [crm_support]\n"
    "consent:\n"
    "  table: public.consent\n"
    "  subject_column: subject_id\n"
    "  purpose_column: purpose\n"
    "  granted_column: granted\n"
    "  max_staleness: 5s\n"
    "tables:\n"
    "  public.customers:\n"
    "    subject: id\n"
    "    columns:\n"
    "      full_name:  { default: withhold, marketing: hash, support: clear }\n"
    "      email:\n"
    "        default: withhold\n"
    "        marketing: { action: hash, consent: required, otherwise: withhold "
    "}\n"
    "        support: clear\n"
    "      phone:      { default: withhold, marketing: \"mask(keep_last=2)\", "
    "support: clear }\n"
    "      ssn:        { default: withhold, marketing: withhold, support: "
    "\"mask(keep_last=4)\" }\n"
    "      birth_date: { default: withhold, marketing: \"generalize(year)\", "
    "support: clear }\n"
    "      street:     { default: withhold, marketing: withhold, support: "
    "clear }\n"
    "      notes:      { default: withhold, marketing: withhold, support: "
    "clear }\n"
    "  public.support_tickets:\n"
    "    subject: customer_id\n"
    "    columns:\n"
    "      body: { default: withhold, marketing: withhold, support: clear }\n"
    "  public.customer_risk:\n"
    "    subject: id\n"
    "    columns:\n"
    "      tax_ref: { default: withhold, marketing: withhold, support: "
    "\"mask(keep_last=4)\" }\n";

static pv_rules_t *load_rules(void) {
  pv_rules_t *r = NULL;
  pv_rules_errors_t *errs = NULL;
  if (pv_rules_load_file("tests/leakcases.yaml", &r, &errs) == 0)
    return r;
  pv_rules_errors_free(errs);
  errs = NULL;
  if (pv_rules_load_buffer(RULES_YAML, strlen(RULES_YAML), "inline", &r,
                           &errs) != 0) {
    for (size_t i = 0; errs && i < errs->count; i++)
      fprintf(stderr, "%s\n", errs->msgs[i]);
    pv_rules_errors_free(errs);
    return NULL;
  }
  return r;
}

static const char *const SP[] = {"crm_app", "public"};

static pv_guard_result_t *analyze_sp(const char *sql, int purpose,
                                     const char *const *sp, size_t nsp) {
  pv_guard_input_t in = {0};
  in.rules = g_rules;
  in.purpose = purpose;
  in.search_path = sp;
  in.nsearch_path = nsp;
  in.lookup = fake_lookup;
  pv_guard_result_t *res = NULL;
  int rc = pv_guard_analyze(&in, sql, &res);
  CHECK_EQ(rc, 0);
  return res;
}

static pv_guard_result_t *analyze(const char *sql, int purpose) {
  return analyze_sp(sql, purpose, SP, N(SP));
}

static int P_MKT, P_SUP;

enum { ALLOW = 0, REFUSE = 1 };

typedef struct {
  const char *sql;
  int who; /* 0 marketing, 1 support, 2 none */
  int expect;
  const char *note;
} gcase_t;

/* Leak-case families (leakcases/cases) and legitimate queries (cases/legit.py),
 * each with the decision the guard must take. ALLOW for plain protected
 * output columns: the row rewriter masks them. */
static const gcase_t CASES[] = {
    /* basic.py: plain selects and syntax variations (rewriter's job) */
    {"SELECT id, email FROM customers", 0, ALLOW, "plain_email"},
    {"SELECT id, ssn FROM customers", 0, ALLOW, "plain_ssn"},
    {"SELECT id, birth_date FROM customers", 0, ALLOW, "plain_birth_date"},
    {"SELECT ssn AS tax_ref, email AS contact FROM customers", 0, ALLOW,
     "plain_alias"},
    {"SELECT c.street FROM customers AS c", 0, ALLOW, "plain_table_alias"},
    {"SELECT * FROM customers", 0, ALLOW, "plain_star"},
    /* writing protected columns: a unique-violation oracle */
    {"INSERT INTO customers (id, full_name, email, city, country) VALUES "
     "(9, 'x', 'guess@ex.test', 'c', 'd')",
     0, REFUSE, "write_guess_email"},
    {"UPDATE customers SET email = 'guess@ex.test' WHERE id = 1", 0, REFUSE,
     "update_guess_email"},
    {"INSERT INTO customers VALUES (9, 'x')", 0, REFUSE, "insert_all_columns"},
    {"INSERT INTO customers (id, email) VALUES (9, 'g') ON CONFLICT (id) "
     "DO UPDATE SET city = 'x'",
     0, REFUSE, "upsert_email"},
    {"UPDATE customers SET email = 'a@b' WHERE id = 1", 1, ALLOW,
     "support_writes_email"},
    {"UPDATE customers SET city = 'Oslo' WHERE id = 1", 0, ALLOW,
     "update_unprotected"},
    {"INSERT INTO orders (id, customer_id, ordered_at, total, status) VALUES "
     "(9, 1, now(), 1, 'new')",
     0, ALLOW, "insert_unprotected_table"},
    {"SELECT id, body FROM support_tickets", 0, ALLOW, "plain_ticket_body"},
    {"sElEcT SsN, EmAiL fRoM CuStOmErS", 0, ALLOW, "syntax_mixed_case"},
    {"SELECT /* email */ ssn -- harmless\n , /* x */ street FROM /* orders */ "
     "customers",
     0, ALLOW, "syntax_comments"},
    {"SELECT\tssn\n\n,\r\nemail\fFROM\t\tcustomers", 0, ALLOW,
     "syntax_odd_whitespace"},
    {"SELECT U&\"\\0065mail\", U&\"!0073sn\" UESCAPE '!' FROM customers", 0,
     ALLOW, "syntax_unicode_ident"},
    {"SET standard_conforming_strings = off", 0, REFUSE, "syntax_scs_off"},
    {"SELECT \"SSN\" FROM customers", 0, REFUSE, "quoted: no such column"},
    /* whole-row references */
    {"SELECT c FROM customers c", 0, REFUSE, "wholerow_ref"},
    {"SELECT row_to_json(c) FROM customers c", 0, REFUSE, "row_to_json"},
    {"SELECT to_jsonb(c) FROM customers c", 0, REFUSE, "to_jsonb"},
    {"SELECT json_agg(c) FROM customers c", 0, REFUSE, "json_agg"},
    {"SELECT array_agg(c) FROM customers c", 0, REFUSE, "array_agg"},
    {"SELECT c::text FROM customers c", 0, REFUSE, "wholerow cast"},
    {"SELECT ROW(c.*) FROM customers c", 0, REFUSE, "ROW(c.*)"},
    {"SELECT (c).ssn FROM customers c", 0, REFUSE, "field of whole row"},
    {"SELECT customers FROM customers", 0, REFUSE, "table name as row"},
    /* expr.py */
    {"SELECT upper(email), lower(full_name) FROM customers", 0, REFUSE,
     "expr_upper_lower"},
    {"SELECT concat('x:', ssn), 'y:' || street FROM customers", 0, REFUSE,
     "expr_concat"},
    {"SELECT substring(email from 2), substr(notes, 5, 60) FROM customers", 0,
     REFUSE, "expr_substring"},
    {"SELECT reverse(email), reverse(ssn) FROM customers", 0, REFUSE,
     "expr_reverse"},
    {"SELECT replace(email, '@', ' at ') FROM customers", 0, REFUSE,
     "expr_replace"},
    {"SELECT format('%s|%s|%s', ssn, email, street) FROM customers", 0, REFUSE,
     "expr_format"},
    {"SELECT encode(convert_to(email, 'UTF8'), 'base64') FROM customers", 0,
     REFUSE, "expr_base64"},
    {"SELECT md5(email), md5(ssn) FROM customers", 0, REFUSE, "expr_md5"},
    {"SELECT string_to_array(ssn, NULL) FROM customers", 0, REFUSE,
     "expr_char_arrays"},
    {"SELECT substr(c.ssn, g, 1) FROM customers c, generate_series(1, 11) g "
     "WHERE c.id = 7 ORDER BY g",
     0, REFUSE, "expr_char_per_row"},
    {"SELECT to_tsvector('simple', notes) FROM customers", 0, REFUSE,
     "expr_tsvector"},
    {"SELECT replace(ssn, '-', '')::bigint FROM customers", 0, REFUSE,
     "expr_numeric_digits"},
    {"SELECT ssn::int FROM customers", 0, REFUSE, "cast_ssn_int"},
    {"SELECT email::json FROM customers", 0, REFUSE, "cast_email_json"},
    {"SELECT email::bytea, street::bytea FROM customers", 0, REFUSE,
     "cast_email_bytea"},
    {"SELECT id FROM customers WHERE ssn::int > 0", 0, REFUSE,
     "cast_where_only"},
    {"SELECT phone::numeric FROM customers", 0, REFUSE, "cast_phone_numeric"},
    {"SELECT email COLLATE \"C\" FROM customers", 0, REFUSE, "collate"},
    {"SELECT c.id, string_agg(CASE WHEN substr(c.ssn, p, 1) = d THEN d END, '' "
     "ORDER BY p) FROM customers c, generate_series(1, 11) p, "
     "unnest(ARRAY['0','1','2','3','4','5','6','7','8','9','-']) d GROUP BY "
     "c.id",
     0, REFUSE, "cond_case_reconstruct"},
    {"SELECT string_agg(email, ',') FROM customers", 0, REFUSE,
     "agg_string_agg"},
    {"SELECT min(ssn), max(email) FROM customers", 0, REFUSE, "agg_min_max"},
    {"SELECT array_agg(ssn ORDER BY ssn) FROM customers", 0, REFUSE,
     "agg_array_agg"},
    {"SELECT ssn, count(*) FROM customers GROUP BY ssn", 0, REFUSE,
     "agg_group_by_protected"},
    {"SELECT count(ssn) FROM customers", 0, REFUSE, "count of column"},
    {"SELECT coalesce(ssn, 'x') FROM customers", 0, REFUSE, "coalesce"},
    {"SELECT (string_to_array(ssn, '-'))[1] FROM customers", 0, REFUSE,
     "subscript"},
    {"SELECT DISTINCT ssn FROM customers", 0, REFUSE, "distinct"},
    {"SELECT DISTINCT ON (email) id FROM customers", 0, REFUSE, "distinct on"},
    /* query.py */
    {"SELECT o.id, (SELECT c.ssn FROM customers c WHERE c.id = "
     "o.customer_id) AS ref FROM orders o",
     0, REFUSE, "sub_scalar"},
    {"SELECT t.x FROM (SELECT ssn AS x FROM customers) t", 0, ALLOW,
     "sub_derived (plain through sub-query)"},
    {"WITH t AS (SELECT email AS e FROM customers) SELECT e FROM t", 0, ALLOW,
     "cte_basic (plain through CTE)"},
    {"WITH RECURSIVE r(i, ch, rest) AS (SELECT 0, '', ssn FROM customers WHERE "
     "id = 3 UNION ALL SELECT i + 1, left(rest, 1), substr(rest, 2) FROM r "
     "WHERE rest <> '') SELECT ch FROM r WHERE i > 0 ORDER BY i",
     0, REFUSE, "cte_recursive_chars"},
    {"SELECT city FROM customers UNION ALL SELECT ssn FROM customers", 0,
     REFUSE, "setop_union_all"},
    {"SELECT id::text FROM orders UNION SELECT email FROM customers", 0, REFUSE,
     "setop_union_cast"},
    {"SELECT ssn FROM customers UNION ALL SELECT ssn FROM customers", 0, REFUSE,
     "same column, no origin in RowDescription"},
    {"SELECT o.id, x.s FROM orders o, LATERAL (SELECT ssn AS s FROM customers "
     "c WHERE c.id = o.customer_id) x",
     0, ALLOW, "join_lateral (plain)"},
    {"SELECT v.label, c.email FROM (VALUES (1, 'a'), (2, 'b')) v(k, label) "
     "JOIN customers c ON c.id = v.k",
     0, ALLOW, "join_values (plain)"},
    {"SELECT o.id, x.city FROM orders o JOIN (SELECT id AS customer_id, email "
     "AS city FROM customers) x USING (customer_id)",
     0, ALLOW, "join_using_rename (plain)"},
    {"SELECT o.id FROM orders o JOIN customers c ON c.email = o.status", 0,
     REFUSE, "join on protected"},
    {"SELECT id FROM customers JOIN support_tickets USING (id)", 0, ALLOW,
     "using unprotected"},
    {"SELECT id, lag(ssn) OVER (ORDER BY id) FROM customers", 0, REFUSE,
     "window_lag"},
    {"SELECT first_value(email) OVER (PARTITION BY city ORDER BY id) FROM "
     "customers",
     0, REFUSE, "window_first_value"},
    {"SELECT id, rank() OVER (PARTITION BY ssn) FROM customers", 0, REFUSE,
     "window partition"},
    /* infer.py */
    {"SELECT id FROM customers WHERE ssn = '950-19-9204'", 0, REFUSE,
     "infer_eq_confirm_ssn"},
    {"SELECT id FROM customers ORDER BY ssn", 0, REFUSE, "infer_order_ssn"},
    {"SELECT id FROM customers ORDER BY 1, 2", 0, ALLOW,
     "ordinal out of range"},
    {"SELECT id, ssn FROM customers ORDER BY 2", 0, REFUSE, "ordinal ssn"},
    {"SELECT count(*) FILTER (WHERE ssn LIKE '90%') FROM customers", 0, REFUSE,
     "infer_count_prefix"},
    {"SELECT id, CASE WHEN ssn LIKE '90%' THEN 'low' ELSE 'high' END FROM "
     "customers",
     0, REFUSE, "infer_case_vector"},
    {"SELECT id FROM customers WHERE id = 42 AND ascii(substr(ssn, 1, 1)) < 53",
     0, REFUSE, "infer_extract_ssn_ascii"},
    {"SELECT 1 / (CASE WHEN ssn LIKE '9%' THEN 0 ELSE 1 END) FROM customers "
     "WHERE id = 44",
     0, REFUSE, "infer_extract_ssn_error"},
    {"SELECT c.id FROM customers c JOIN (VALUES ('900-11-1111')) v(s) ON "
     "c.ssn = v.s",
     0, REFUSE, "infer_join_candidates"},
    {"SELECT id FROM customers WHERE birth_date < '1980-01-01'", 0, REFUSE,
     "infer_extract_birth_date"},
    {"SELECT id FROM orders o WHERE EXISTS (SELECT 1 FROM customers c WHERE "
     "c.id = o.customer_id AND c.ssn LIKE '9%')",
     0, REFUSE, "exists predicate"},
    {"SELECT id FROM orders o WHERE EXISTS (SELECT * FROM customers c WHERE "
     "c.id = o.customer_id)",
     0, ALLOW, "exists star"},
    {"SELECT id FROM orders WHERE customer_id IN (SELECT id FROM customers "
     "WHERE ssn LIKE '9%')",
     0, REFUSE, "IN sub-query predicate"},
    {"SELECT id FROM orders WHERE status IN (SELECT ssn FROM customers)", 0,
     REFUSE, "IN compares protected"},
    {"SELECT id FROM customers LIMIT (SELECT length(ssn) FROM customers "
     "LIMIT 1)",
     0, REFUSE, "limit"},
    {"SELECT id, email FROM customers WHERE email IS NOT NULL", 0, REFUSE,
     "null test"},
    /* objects.py */
    {"SELECT email, phone, full_name FROM customer_contacts", 0, ALLOW,
     "view_dba_contacts (plain through view)"},
    {"SELECT upper(email) FROM customer_contacts", 0, REFUSE, "expr on view"},
    {"SELECT display_name, order_count FROM customer_overview", 0, ALLOW,
     "view with aggregate"},
    {"SELECT id FROM upper_contacts", 0, ALLOW, "unused computed view column"},
    {"SELECT email FROM upper_contacts", 0, ALLOW, "view column from city"},
    {"SELECT full_name FROM upper_contacts", 0, REFUSE, "computed view column"},
    {"SELECT tax_ref FROM customer_risk", 0, ALLOW, "view_dba_matview"},
    {"SELECT upper(tax_ref) FROM customer_risk", 0, REFUSE, "matview expr"},
    {"CREATE TEMP VIEW v_leak AS SELECT id, email AS e, ssn AS s FROM "
     "customers",
     0, REFUSE, "view_temp"},
    {"CREATE FUNCTION pg_temp.ident(text) RETURNS text LANGUAGE sql AS "
     "'SELECT $1'",
     0, REFUSE, "func_sql_identity"},
    {"SELECT pg_temp.ident(email) FROM customers", 0, REFUSE, "func identity"},
    {"SELECT * FROM pg_temp.dump()", 0, REFUSE, "func_setof"},
    {"DO $$ DECLARE r record; BEGIN FOR r IN SELECT ssn FROM public.customers "
     "LOOP RAISE NOTICE 'v=%', r.ssn; END LOOP; END $$",
     0, REFUSE, "func_raise_notice"},
    {"SELECT query_to_xml('SELECT ssn, email FROM customers', true, false, '')",
     0, REFUSE, "func_query_to_xml"},
    {"CREATE TEMP TABLE t1 AS SELECT id, email, ssn FROM customers", 0, REFUSE,
     "copy_ctas"},
    {"CREATE TEMP TABLE t2 AS SELECT id, city FROM customers", 0, ALLOW,
     "ctas unprotected"},
    {"SELECT id, notes INTO TEMP t3 FROM customers", 0, REFUSE,
     "copy_select_into"},
    {"UPDATE customers SET city = ssn WHERE id <= 3 RETURNING id, city", 0,
     REFUSE, "copy_update_returning"},
    {"UPDATE customers SET city = email WHERE id <= 3", 0, REFUSE,
     "copy_update_then_select"},
    {"UPDATE customers SET city = 'x' WHERE id <= 3 RETURNING ssn", 0, REFUSE,
     "returning protected"},
    {"CREATE TEMP TABLE customers AS SELECT id, ssn AS city, email AS country "
     "FROM public.customers",
     0, REFUSE, "sp_shadow_temp_table"},
    {"INSERT INTO customers (id, full_name, email, city, country) SELECT "
     "100000, 'x', email, 'x', 'x' FROM customers WHERE id = 5",
     0, REFUSE, "dml_unique_violation"},
    {"UPDATE customers SET lifetime_value = -1 WHERE id = 6", 0, ALLOW,
     "dml_check_violation (errors are scrubbed)"},
    {"INSERT INTO orders (customer_id, ordered_at, total, status) VALUES (1, "
     "now(), 10, 'new') RETURNING id",
     0, ALLOW, "insert values"},
    {"DELETE FROM orders WHERE id = 1", 0, ALLOW, "delete"},
    {"DELETE FROM orders o USING customers c WHERE c.id = o.customer_id AND "
     "c.ssn = 'x'",
     0, REFUSE, "delete using predicate"},
    {"MERGE INTO orders o USING customers c ON c.id = o.customer_id WHEN "
     "MATCHED THEN DO NOTHING",
     0, REFUSE, "merge"},
    {"SELECT customer_label(1)", 0, REFUSE, "DBA function reads customers"},
    {"ALTER TABLE customers ADD COLUMN x text", 0, REFUSE, "alter protected"},
    {"CREATE INDEX ON customers ((ssn::int))", 0, REFUSE, "index protected"},
    {"CREATE TABLE t9 (a text DEFAULT customer_label(1))", 0, REFUSE,
     "default with function"},
    {"CREATE TABLE t9 (a int CHECK (a > 0))", 0, ALLOW, "plain create"},
    /* channels.py */
    {"COPY customers TO STDOUT", 0, ALLOW, "copyout_table (rewritten)"},
    {"COPY (SELECT id, ssn FROM customers) TO STDOUT", 0, ALLOW,
     "copyout_query (rewritten)"},
    {"COPY customers TO STDOUT (FORMAT binary)", 0, REFUSE, "copyout_binary"},
    {"COPY customers TO STDOUT WITH BINARY", 0, REFUSE, "legacy binary"},
    {"COPY (SELECT upper(email) FROM customers) TO STDOUT", 0, REFUSE,
     "copy expr"},
    {"COPY customers TO '/tmp/x.csv' (FORMAT csv)", 0, REFUSE, "copy to file"},
    {"COPY customers TO PROGRAM 'cat'", 0, REFUSE, "copy to program"},
    {"COPY orders TO STDOUT (FORMAT binary)", 0, ALLOW, "binary unprotected"},
    {"DECLARE c1 CURSOR FOR SELECT email, ssn FROM customers", 0, ALLOW,
     "cursor_declare_fetch (rewritten)"},
    {"DECLARE c3 BINARY CURSOR FOR SELECT ssn, birth_date, notes FROM "
     "customers",
     0, REFUSE, "cursor_binary_declare"},
    {"DECLARE c4 CURSOR FOR SELECT lower(email) FROM customers", 0, REFUSE,
     "cursor over expression"},
    {"SELECT pg_notify('leak', email) FROM customers", 0, REFUSE,
     "notify_pg_notify"},
    {"SELECT pg_notify('chan', 'hello')", 0, ALLOW, "pg_notify constant"},
    {"NOTIFY chan, 'hello'", 0, ALLOW, "notify"},
    {"SELECT set_config('application_name', (SELECT email FROM customers "
     "ORDER BY id LIMIT 1), false)",
     0, REFUSE, "chan_application_name"},
    {"SELECT attname, most_common_vals::text FROM pg_stats WHERE tablename = "
     "'customers'",
     0, REFUSE, "catalog_pg_stats"},
    {"SELECT * FROM pg_catalog.pg_stats WHERE schemaname = 'public'", 0, REFUSE,
     "catalog_pg_stats_all"},
    {"SELECT * FROM pg_statistic", 0, REFUSE, "pg_statistic"},
    {"SELECT * FROM pg_stats_ext_exprs", 0, REFUSE, "pg_stats_ext_exprs"},
    {"EXPLAIN (VERBOSE) SELECT pg_temp.k()", 0, REFUSE, "catalog_explain_fold"},
    {"EXPLAIN ANALYZE SELECT email FROM customers", 0, REFUSE,
     "explain analyze"},
    {"EXPLAIN SELECT email FROM customers", 0, ALLOW, "plain explain"},
    {"SELECT set_config('pgveil.purpose', 'support', false)", 0, REFUSE,
     "purpose via set_config"},
    {"SET pgveil.other = 'x'", 0, REFUSE, "unknown pgveil setting"},
    {"SELECT lo_get(16384)", 0, REFUSE, "large object"},
    {"SELECT * FROM pg_largeobject", 0, REFUSE, "pg_largeobject"},
    {"SELECT pg_read_file('/etc/passwd')", 0, REFUSE, "read file"},
    {"SELECT * FROM dblink('dbname=crm', 'SELECT ssn FROM customers') AS "
     "t(s text)",
     0, REFUSE, "dblink"},
    {"CALL p()", 0, REFUSE, "call"},
    {"CREATE RULE r AS ON INSERT TO orders DO ALSO NOTIFY x", 0, REFUSE,
     "rule"},
    {"LOAD 'x'", 0, REFUSE, "load"},
    /* protocol.py */
    {"PREPARE p1(int) AS SELECT email FROM customers WHERE id > $1", 0, ALLOW,
     "prep_sql_execute"},
    {"PREPARE p2(text) AS SELECT id FROM customers WHERE ssn = $1", 0, REFUSE,
     "prepare refused query"},
    {"EXECUTE p1(0)", 0, ALLOW, "execute"},
    {"SELECT 'pg_temp.leakf'::regproc::oid", 0, ALLOW, "regproc constant"},
    {"SELECT pg_temp.leakf()", 0, REFUSE, "wire_fastpath_udf"},
    {"SELEC ssn FROM customers", 0, REFUSE, "syntax error fails closed"},
    /* support purpose: only ssn (mask) is protected */
    {"SELECT id, ssn FROM customers", 1, ALLOW, "purpose_support_ssn_plain"},
    {"SELECT upper(email), lower(street) FROM customers WHERE notes LIKE '%x%' "
     "ORDER BY full_name",
     1, ALLOW, "support: clear columns are free"},
    {"SELECT id FROM customers WHERE ssn LIKE '9%'", 1, REFUSE,
     "support: masked ssn predicate"},
    {"SELECT right(ssn, 4) FROM customers", 1, REFUSE,
     "support: masked ssn expression"},
    {"SELECT id, email, phone, full_name FROM customers ORDER BY id", 1, ALLOW,
     "legit_support_contact"},
    /* no purpose: everything withheld */
    {"SELECT id, email, phone, ssn, street FROM customers ORDER BY id", 2,
     ALLOW, "purpose_none_declared"},
    {"SELECT upper(city) FROM customers", 2, ALLOW, "none: unprotected expr"},
    {"SELECT upper(email) FROM customers", 2, REFUSE, "none: protected expr"},
    /* legit.py: must be allowed */
    {"SELECT id, city, country FROM customers ORDER BY id", 0, ALLOW,
     "legit_city_country"},
    {"SELECT count(*) FROM customers", 0, ALLOW, "legit_count"},
    {"SELECT customer_id, sum(total), count(*) FROM orders GROUP BY "
     "customer_id ORDER BY customer_id",
     0, ALLOW, "legit_order_totals"},
    {"SELECT id, phone FROM customers ORDER BY id", 0, ALLOW,
     "legit_phone_masked"},
    {"SELECT id, email FROM customers ORDER BY id", 0, ALLOW,
     "legit_email_pseudonym"},
    {"SELECT id, birth_date FROM customers ORDER BY id", 0, ALLOW,
     "legit_birth_year"},
    {"SELECT * FROM customers WHERE id = 5", 0, ALLOW, "legit_star_one"},
    {"COPY (SELECT id, city, zip FROM customers ORDER BY id) TO STDOUT", 0,
     ALLOW, "legit_copy_unprotected"},
    {"SELECT c.id FROM customers c JOIN consent k ON k.subject_id = c.id WHERE "
     "k.purpose = 'marketing' AND k.granted ORDER BY c.id",
     0, ALLOW, "legit_consent_join"},
    {"SELECT city AS email, country AS ssn FROM customers ORDER BY id", 0,
     ALLOW, "legit_alias_like_protected"},
    {"SELECT city AS ssn FROM customers ORDER BY ssn", 0, ALLOW,
     "ORDER BY output alias"},
    {"SELECT id, ordered_at FROM orders WHERE ordered_at >= '2023-01-01 "
     "00:00:00+00' ORDER BY id",
     0, ALLOW, "legit_orders_date_range"},
    {"SELECT country, count(*), avg(lifetime_value) FROM customers GROUP BY "
     "country HAVING count(*) > 1 ORDER BY 2 DESC",
     0, ALLOW, "group by unprotected"},
    {"SELECT id, country, rank() OVER (PARTITION BY country ORDER BY "
     "lifetime_value DESC, id) FROM customers",
     0, ALLOW, "window unprotected"},
    {"SELECT c.country, sum(o.total) FROM orders o JOIN customers c ON c.id = "
     "o.customer_id GROUP BY c.country ORDER BY 1",
     0, ALLOW, "join revenue"},
    {"SELECT c.id, (SELECT count(*) FROM orders o WHERE o.customer_id = c.id) "
     "FROM customers c ORDER BY c.id",
     0, ALLOW, "scalar sub-query count"},
    {"WITH big AS (SELECT customer_id FROM orders WHERE total > 100) SELECT "
     "c.id, c.email FROM customers c WHERE c.id IN (SELECT customer_id FROM "
     "big)",
     0, ALLOW, "CTE + IN + plain output"},
    {"SELECT id, upper(city), lower(country), date_trunc('year', created_at) "
     "FROM customers",
     0, ALLOW, "functions on unprotected"},
    {"SELECT now(), current_user, version()", 0, ALLOW, "no table"},
    {"BEGIN", 0, ALLOW, "transaction"},
    {"SELECT id FROM orders WHERE total BETWEEN 1 AND 9 AND status NOT "
     "BETWEEN SYMMETRIC 'a' AND 'b' AND status SIMILAR TO 'x%' AND status "
     "LIKE 'a!%' ESCAPE '!' AND ordered_at AT TIME ZONE 'UTC' > now()",
     0, ALLOW, "SQL-syntax built-ins"},
    {"SELECT trim(both 'x' from status), position('a' in status), "
     "extract(year from ordered_at), substring(status from 2 for 3), "
     "overlay(status placing 'x' from 1), collation for (status) FROM orders",
     0, ALLOW, "SQL-syntax functions"},
    {"SELECT id FROM customers WHERE ssn BETWEEN '1' AND '2'", 0, REFUSE,
     "between on protected"},
    {"SELECT c.*, o.total FROM customers c JOIN orders o ON o.customer_id = "
     "c.id",
     0, ALLOW, "c.* at top level"},
};

static void test_cases(void) {
  size_t n = N(CASES), failed = 0;
  for (size_t i = 0; i < n; i++) {
    const gcase_t *k = &CASES[i];
    int purpose = k->who == 0 ? P_MKT : k->who == 1 ? P_SUP : PV_PURPOSE_NONE;
    pv_guard_result_t *r = analyze(k->sql, purpose);
    if (!r)
      continue;
    int got = r->refused ? REFUSE : ALLOW;
    CHECK_EQ(got, k->expect);
    if (got != k->expect) {
      failed++;
      fprintf(stderr, "  case %zu (%s): expected %s, got %s%s%s\n    %s\n", i,
              k->note, k->expect ? "REFUSE" : "ALLOW",
              got ? "REFUSE: " : "ALLOW",
              got && r->first_refused->message ? r->first_refused->message : "",
              "", k->sql);
    }
    if (got == REFUSE) {
      CHECK(r->first_refused != NULL);
      CHECK(r->first_refused->message != NULL);
      CHECK(strncmp(r->first_refused->message, "pgveil: ", 8) == 0);
      CHECK(!strcmp(r->first_refused->sqlstate, "42501") ||
            !strcmp(r->first_refused->sqlstate, "42601"));
    }
    pv_guard_result_free(r);
  }
  printf("sql_guard: %zu statements, %zu wrong\n", n, failed);
  CHECK(n >= 80);
}

static void test_messages(void) {
  pv_guard_result_t *r =
      analyze("SELECT id FROM customers WHERE ssn = '1'", P_MKT);
  CHECK_STR(r->first_refused->message,
            "pgveil: column customers.ssn may not be used in a WHERE clause "
            "under purpose \"marketing\"");
  CHECK_STR(r->first_refused->sqlstate, "42501");
  CHECK(r->touches_protected);
  CHECK_EQ(r->stmts[0].ntouched, 1);
  CHECK_STR(r->stmts[0].touched[0].column, "ssn");
  CHECK_EQ(r->stmts[0].touched[0].action.kind, PV_ACT_WITHHOLD);
  pv_guard_result_free(r);

  r = analyze("SELECT upper(email) FROM customers", P_MKT);
  CHECK(strstr(r->first_refused->message, "customers.email") != NULL);
  CHECK(strstr(r->first_refused->message, "expression") != NULL);
  pv_guard_result_free(r);

  r = analyze("SELECT id FROM customers ORDER BY ssn", PV_PURPOSE_NONE);
  CHECK_STR(r->first_refused->message,
            "pgveil: column customers.ssn may not be used in ORDER BY under "
            "purpose \"none\"");
  pv_guard_result_free(r);

  /* audit: plain columns touched, with their actions */
  r = analyze("SELECT id, email, phone FROM customers", P_MKT);
  CHECK(!r->refused);
  CHECK_EQ(r->stmts[0].ntouched, 2);
  CHECK(r->stmts[0].touched[0].consent_required);
  CHECK_EQ(r->stmts[0].touched[0].action.kind, PV_ACT_HASH);
  CHECK_EQ(r->stmts[0].touched[1].action.kind, PV_ACT_MASK);
  pv_guard_result_free(r);
  r = analyze("SELECT id, city FROM customers", P_MKT);
  CHECK(!r->touches_protected);
  CHECK_EQ(r->stmts[0].kind, PV_GSTMT_SELECT);
  pv_guard_result_free(r);
}

static void test_outcols(void) {
  pv_guard_result_t *r = analyze(
      "SELECT x.e AS mail, v.phone, 1 AS one, c.id FROM (SELECT email AS e, "
      "id FROM customers) x JOIN customer_contacts v USING (id) JOIN "
      "customers c ON c.id = x.id",
      P_MKT);
  CHECK(!r->refused);
  const pv_guard_stmt_t *s = &r->stmts[0];
  CHECK_EQ(s->noutcols, 4);
  if (s->noutcols == 4) {
    CHECK_STR(s->outcols[0].name, "mail");
    CHECK_STR(s->outcols[0].table, "customers");
    CHECK_STR(s->outcols[0].column, "email");
    CHECK(s->outcols[0].protected_col);
    CHECK_STR(s->outcols[1].column, "phone");
    CHECK(s->outcols[2].column == NULL);
    CHECK(!s->outcols[2].protected_col);
    CHECK_STR(s->outcols[3].column, "id");
    CHECK(!s->outcols[3].protected_col);
  }
  pv_guard_result_free(r);

  /* unicode identifiers resolve to the real columns */
  r = analyze("SELECT U&\"\\0065mail\" FROM customers", P_MKT);
  CHECK(!r->refused);
  CHECK_EQ(r->stmts[0].noutcols, 1);
  CHECK_STR(r->stmts[0].outcols[0].column, "email");
  pv_guard_result_free(r);

  /* SELECT * expands in table order */
  r = analyze("SELECT * FROM customers", P_MKT);
  CHECK_EQ(r->stmts[0].noutcols, 13);
  CHECK_STR(r->stmts[0].outcols[4].column, "ssn");
  CHECK(r->stmts[0].outcols[4].protected_col);
  CHECK(!r->stmts[0].outcols[7].protected_col);
  pv_guard_result_free(r);

  /* UNION ALL of the same column: allowed only when the caller maps it */
  pv_guard_input_t in = {0};
  in.rules = g_rules;
  in.purpose = P_MKT;
  in.search_path = SP;
  in.nsearch_path = 2;
  in.lookup = fake_lookup;
  in.trust_outcols = true;
  r = NULL;
  CHECK_EQ(pv_guard_analyze(&in,
                            "SELECT ssn FROM customers WHERE id < 3 UNION ALL "
                            "SELECT ssn FROM customers WHERE id > 9",
                            &r),
           0);
  CHECK(r && !r->refused);
  if (r && r->stmts[0].noutcols == 1) {
    CHECK(r->stmts[0].outcols[0].no_origin);
    CHECK_STR(r->stmts[0].outcols[0].column, "ssn");
  }
  pv_guard_result_free(r);
}

static void test_set_show(void) {
  pv_guard_result_t *r = analyze(
      "SET pgveil.purpose = 'support'; SELECT 1; RESET pgveil.purpose; SHOW "
      "pgveil.purpose; SET LOCAL search_path = a, public; DISCARD ALL; RESET "
      "ALL; SET SESSION PgVeil.Purpose TO DEFAULT",
      P_MKT);
  CHECK(!r->refused);
  CHECK_EQ(r->nstmts, 8);
  if (r->nstmts == 8) {
    CHECK_EQ(r->stmts[0].kind, PV_GSTMT_SET);
    CHECK_STR(r->stmts[0].set_name, "pgveil.purpose");
    CHECK_STR(r->stmts[0].set_value, "support");
    CHECK(!r->stmts[0].set_local);
    CHECK_EQ(r->stmts[0].location, 0);
    CHECK_EQ(r->stmts[1].kind, PV_GSTMT_SELECT);
    CHECK_EQ(r->stmts[2].kind, PV_GSTMT_RESET);
    CHECK_STR(r->stmts[2].set_name, "pgveil.purpose");
    CHECK_EQ(r->stmts[3].kind, PV_GSTMT_SHOW);
    CHECK_STR(r->stmts[3].set_name, "pgveil.purpose");
    CHECK_EQ(r->stmts[4].kind, PV_GSTMT_SET);
    CHECK(r->stmts[4].set_local);
    CHECK_STR(r->stmts[4].set_value, "a, public");
    CHECK_EQ(r->stmts[5].kind, PV_GSTMT_DISCARD);
    CHECK_STR(r->stmts[5].set_name, "all");
    CHECK_EQ(r->stmts[6].kind, PV_GSTMT_RESET);
    CHECK_STR(r->stmts[6].set_name, "all");
    CHECK_EQ(r->stmts[7].kind, PV_GSTMT_SET);
    CHECK_STR(r->stmts[7].set_name, "pgveil.purpose");
    CHECK(r->stmts[7].set_value == NULL);
  }
  pv_guard_result_free(r);

  /* pg_dump's set_config is reported as a SET */
  r = analyze("SELECT pg_catalog.set_config('search_path', '', false)", P_MKT);
  CHECK(!r->refused);
  CHECK_EQ(r->stmts[0].kind, PV_GSTMT_SET);
  CHECK_STR(r->stmts[0].set_name, "search_path");
  CHECK_STR(r->stmts[0].set_value, "");
  pv_guard_result_free(r);

  /* SET search_path applies to the following statements of the same text:
   * a schema before pg_catalog can shadow built-ins */
  r = analyze("SET search_path = app_scratch, pg_catalog, public; SELECT "
              "md5(city) FROM customers",
              P_MKT);
  CHECK_EQ(r->nstmts, 2);
  CHECK_EQ(r->stmts[0].verdict, PV_GUARD_ALLOW);
  CHECK_EQ(r->stmts[1].verdict, PV_GUARD_REFUSE);
  pv_guard_result_free(r);
  r = analyze("SET search_path = app_scratch; SELECT email FROM customers",
              P_MKT);
  CHECK_EQ(r->stmts[1].verdict, PV_GUARD_ALLOW); /* not found: opaque */
  pv_guard_result_free(r);

  /* multi-statement: each verdict on its own */
  r = analyze("CREATE TEMP VIEW mv AS SELECT email AS e FROM customers; "
              "SELECT e FROM mv",
              P_MKT);
  CHECK_EQ(r->nstmts, 2);
  CHECK(r->refused);
  CHECK(r->first_refused == &r->stmts[0]);
  pv_guard_result_free(r);
  r = analyze("SELECT 1 /* ; */; SELECT ssn FROM customers -- ;", P_MKT);
  CHECK_EQ(r->nstmts, 2);
  CHECK(!r->refused);
  CHECK(r->stmts[1].touches_protected);
  pv_guard_result_free(r);

  r = analyze("DECLARE lc CURSOR FOR SELECT ssn, notes FROM customers; FETCH "
              "10 FROM lc; CLOSE lc",
              P_MKT);
  CHECK_EQ(r->nstmts, 3);
  CHECK_EQ(r->stmts[0].kind, PV_GSTMT_DECLARE);
  CHECK_STR(r->stmts[0].name, "lc");
  CHECK_EQ(r->stmts[0].noutcols, 2);
  CHECK_EQ(r->stmts[1].kind, PV_GSTMT_FETCH);
  CHECK_STR(r->stmts[1].name, "lc");
  CHECK_EQ(r->stmts[2].kind, PV_GSTMT_CLOSE);
  pv_guard_result_free(r);

  r = analyze("", P_MKT);
  CHECK(!r->refused);
  CHECK_EQ(r->nstmts, 0);
  pv_guard_result_free(r);
}

static void test_copy(void) {
  pv_guard_result_t *r = analyze("COPY customers TO STDOUT", P_MKT);
  const pv_guard_copy_t *cp = &r->stmts[0].copy;
  CHECK(!r->refused);
  CHECK_EQ(r->stmts[0].kind, PV_GSTMT_COPY);
  CHECK(r->stmts[0].has_copy);
  CHECK_STR(cp->schema, "public");
  CHECK_STR(cp->table, "customers");
  CHECK_EQ(cp->ncolumns, 13);
  CHECK_STR(cp->columns[4], "ssn");
  CHECK_EQ(cp->format, PV_COPY_TEXT);
  CHECK(!cp->is_from);
  CHECK(cp->is_stdio);
  CHECK(r->touches_protected);
  pv_guard_result_free(r);

  r = analyze("COPY public.customers (id, email) TO STDOUT WITH (FORMAT csv, "
              "HEADER, DELIMITER ';', NULL 'NA')",
              P_MKT);
  cp = &r->stmts[0].copy;
  CHECK(!r->refused);
  CHECK_EQ(cp->ncolumns, 2);
  CHECK_STR(cp->columns[1], "email");
  CHECK_EQ(cp->format, PV_COPY_CSV);
  CHECK(cp->header);
  CHECK_STR(cp->delimiter, ";");
  CHECK_STR(cp->null_str, "NA");
  pv_guard_result_free(r);

  r = analyze("COPY (SELECT c.id, c.ssn, 2 AS two FROM customers c) TO STDOUT",
              P_MKT);
  cp = &r->stmts[0].copy;
  CHECK(!r->refused);
  CHECK(cp->is_query);
  CHECK(cp->table == NULL);
  CHECK_EQ(r->stmts[0].noutcols, 3);
  if (r->stmts[0].noutcols == 3) {
    CHECK_STR(r->stmts[0].outcols[1].table, "customers");
    CHECK_STR(r->stmts[0].outcols[1].column, "ssn");
    CHECK(r->stmts[0].outcols[1].protected_col);
    CHECK(r->stmts[0].outcols[2].column == NULL);
  }
  pv_guard_result_free(r);

  r = analyze("COPY customers FROM STDIN", P_MKT);
  CHECK(!r->refused);
  CHECK(r->stmts[0].copy.is_from);
  pv_guard_result_free(r);

  r = analyze("COPY customers TO STDOUT (FORMAT binary)", P_MKT);
  CHECK(r->refused);
  CHECK(strstr(r->first_refused->message, "binary") != NULL);
  pv_guard_result_free(r);
}

static const char UNRESTRICTED_YAML[] =
    "version: 1\n"
    "purposes:\n"
    "  audit:\n"
    "    roles: [auditor]\n"
    "tables:\n"
    "  public.customers:\n"
    "    subject: id\n"
    "    columns:\n"
    "      ssn: { default: withhold, audit: clear }\n";

static void test_unrestricted(void) {
  pv_rules_t *u = NULL;
  pv_rules_errors_t *errs = NULL;
  int rc = pv_rules_load_buffer(UNRESTRICTED_YAML, strlen(UNRESTRICTED_YAML),
                                "u", &u, &errs);
  CHECK_EQ(rc, 0);
  pv_rules_errors_free(errs);
  if (rc)
    return;
  const pv_rules_t *saved = g_rules;
  g_rules = u;
  int audit = pv_rules_purpose_find(u, "audit");
  CHECK(!pv_guard_purpose_restricted(u, audit));
  CHECK(pv_guard_purpose_restricted(u, PV_PURPOSE_NONE));
  pv_guard_result_t *r = analyze("DO $$ BEGIN END $$; SELECT upper(ssn) FROM "
                                 "customers ORDER BY ssn; SELEC",
                                 audit);
  CHECK(!r->refused); /* parse error too: nothing to protect */
  pv_guard_result_free(r);
  r = analyze("DO $$ BEGIN END $$", audit);
  CHECK(!r->refused);
  CHECK(!r->restricted);
  pv_guard_result_free(r);
  r = analyze("SELECT set_config('pgveil.purpose', 'x', false)", audit);
  CHECK(r->refused); /* purpose changes only through SET, always */
  pv_guard_result_free(r);
  r = analyze("SELECT upper(ssn) FROM customers", PV_PURPOSE_NONE);
  CHECK(r->refused);
  pv_guard_result_free(r);
  g_rules = saved;
  pv_rules_free(u);
}

static const char *const PROT_NAMES[] = {"customers", "support_tickets",
                                         "customer_contacts",
                                         "customer_overview", "customer_risk"};

static void test_prescan(void) {
  pv_guard_names_t *names = NULL;
  CHECK_EQ(pv_guard_names_new(PROT_NAMES, N(PROT_NAMES), &names), 0);
  struct {
    const char *sql;
    bool expect;
  } t[] = {
      {"SELECT id, total FROM orders WHERE status = 'x'", false},
      {"SELECT count(*) FROM orders", false},
      {"SELECT lower(status), sum(total) FROM orders GROUP BY 1", false},
      {"INSERT INTO orders (id, total) VALUES (1, 2)", true}, /* orders ( */
      {"BEGIN", false},
      {"SELECT * FROM Customers", true},
      {"SELECT * FROM \"CUSTOMERS\"", true},
      {"SELECT * FROM \"customers\"", true},
      {"SELECT * FROM U&\"\\0063ustomers\"", true},
      {"SELECT * FROM u&'x'", true},
      {"SELECT customer_label(1)", true},
      {"SELECT customer_label (1)", true},
      {"SELECT customer_label/**/(1)", true},
      {"SET x = 1", true},
      {"show pgveil.purpose", true},
      {"SELECT app.lower(status) FROM orders", true},
      {"SELECT pg_catalog.lower(status) FROM orders", true},
      {"DO $$ BEGIN END $$", true},
      {"SELECT query_to_xml('select 1', true, false, '')", true},
      {"SELECT * FROM pg_stats", true},
      {"SELECT 1 /* customers */", true},
      {"SELECT $$customers$$", true},
      {"SELECT $x$customers$x$", true},
      {"SELECT 'customers'", true},
      {"copy orders to stdout", true},
      {"SELECT 1; DISCARD ALL", true},
      {"SELECT \"lower\"(status) FROM orders", false},
      {"SELECT \"evil\"(status) FROM orders", true},
      {"SELECT id FROM orders WHERE total > 1e5", false},
      {"SELECT x FROM customers_archive", false},
      {"SELECT set_config('a', 'b', false)", true},
      {"", false},
  };
  for (size_t i = 0; i < N(t); i++) {
    bool got = pv_guard_prescan(names, t[i].sql, strlen(t[i].sql));
    CHECK_EQ(got, t[i].expect);
    if (got != t[i].expect)
      fprintf(stderr, "  prescan: %s\n", t[i].sql);
  }
  CHECK(pv_guard_prescan(names, NULL, 0));
  const char *const sp1[] = {"app_scratch", "pg_catalog"};
  const char *const sp2[] = {"pg_temp", "pg_catalog", "app_scratch"};
  const char *const sp3[] = {"public"};
  CHECK(!pv_guard_search_path_trusted(sp1, 2));
  CHECK(pv_guard_search_path_trusted(sp2, 3));
  CHECK(pv_guard_search_path_trusted(sp3, 1));
  pv_guard_names_free(names);
}

static void test_misc(void) {
  CHECK(pv_guard_tables_sorted());
  const char *const a[] = {"public"};
  const char *const b[] = {"publi", "c"};
  uint64_t k1 = pv_guard_cache_key("SELECT 1", 8, 0, 1, 1, a, 1);
  CHECK(k1 != pv_guard_cache_key("SELECT 1", 8, 1, 1, 1, a, 1));
  CHECK(k1 != pv_guard_cache_key("SELECT 1", 8, 0, 2, 1, a, 1));
  CHECK(k1 != pv_guard_cache_key("SELECT 1", 8, 0, 1, 2, a, 1));
  CHECK(k1 != pv_guard_cache_key("SELECT 1", 8, 0, 1, 1, b, 2));
  CHECK(k1 != pv_guard_cache_key("SELECT 2", 8, 0, 1, 1, a, 1));
  CHECK(k1 == pv_guard_cache_key("SELECT 1", 8, 0, 1, 1, a, 1));
  pv_guard_result_t *r = NULL;
  CHECK_EQ(pv_guard_analyze(NULL, "x", &r), PV_EINVAL);
  CHECK(r == NULL);
  pv_guard_result_free(NULL);

  /* deep nesting fails closed, never crashes */
  size_t depth = 3000;
  char *deep = malloc(depth * 8 + 64);
  strcpy(deep, "SELECT ");
  size_t p = strlen(deep);
  for (size_t i = 0; i < depth; i++) {
    memcpy(deep + p, "lower(", 6);
    p += 6;
  }
  deep[p++] = '1';
  for (size_t i = 0; i < depth; i++)
    deep[p++] = ')';
  deep[p] = '\0';
  r = analyze(deep, P_MKT);
  CHECK(r && r->refused);
  pv_guard_result_free(r);
  free(deep);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_timing(void) {
  const char *sql = "SELECT c.id, c.email, c.city, count(o.id) FROM customers "
                    "c LEFT JOIN orders o ON o.customer_id = c.id WHERE "
                    "c.country = 'PT' GROUP BY c.id ORDER BY "
                    "c.id LIMIT 50";
  int iters = 2000;
  double t0 = now_s();
  for (int i = 0; i < iters; i++) {
    pv_guard_result_t *r = analyze(sql, P_MKT);
    CHECK(r && !r->refused);
    pv_guard_result_free(r);
  }
  double t1 = now_s();
  pv_guard_names_t *names = NULL;
  CHECK_EQ(pv_guard_names_new(PROT_NAMES, N(PROT_NAMES), &names), 0);
  const char *clean = "SELECT id, total, status FROM orders WHERE customer_id "
                      "= $1 AND status = 'new' ORDER BY ordered_at DESC "
                      "LIMIT 20";
  size_t len = strlen(clean);
  int piters = 200000;
  int hits = 0;
  double t2 = now_s();
  for (int i = 0; i < piters; i++)
    hits += pv_guard_prescan(names, clean, len);
  double t3 = now_s();
  CHECK_EQ(hits, 0);
  printf("sql_guard timing: parse+analyse %.1f us/statement, pre-scan %.3f "
         "us/statement (%zu bytes)\n",
         (t1 - t0) / iters * 1e6, (t3 - t2) / piters * 1e6, len);
  pv_guard_names_free(names);
}

int main(void) {
  pv_rules_t *rules = load_rules();
  CHECK(rules != NULL);
  if (!rules)
    return check_exit("sql_guard");
  g_rules = rules;
  P_MKT = pv_rules_purpose_find(rules, "marketing");
  P_SUP = pv_rules_purpose_find(rules, "support");
  CHECK(P_MKT >= 0 && P_SUP >= 0);
  RUN(test_cases);
  RUN(test_messages);
  RUN(test_outcols);
  RUN(test_set_show);
  RUN(test_copy);
  RUN(test_unrestricted);
  RUN(test_prescan);
  RUN(test_misc);
  RUN(test_timing);
  pv_rules_free(rules);
  pg_query_exit();
  return check_exit("sql_guard");
}
