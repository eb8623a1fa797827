/* Unit tests for the rules loader and model (include/pgveil/rules.h): the
 * documented example, every error kind at its exact line:column, several
 * errors at once, limits, the shipped rule files. Run from the repo root. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "pgveil/rules.h"

/* The format example of the brief, with legacy_app allowed to declare its
 * default purpose (the verbatim one is an error, see test_brief_verbatim). */
static const char *EXAMPLE =
    "version: 1\n"
    "purposes:\n"
    "  marketing: { roles: [crm_app, marketing], consent: opt_in }\n"
    "  support:   { roles: [support_agent, legacy_app] }\n"
    "  analytics: { roles: [analyst], explain: notice }\n"
    "defaults:\n"
    "  purpose_by_role: { legacy_app: support }\n"
    "consent:\n"
    "  table: public.consent\n"
    "  subject_column: subject_id\n"
    "  purpose_column: purpose\n"
    "  granted_column: granted\n"
    "  max_staleness: 5s\n"
    "allow_functions: [ lower, upper ]\n"
    "tables:\n"
    "  public.customers:\n"
    "    subject: id\n"
    "    columns:\n"
    "      email:\n"
    "        default: hash\n"
    "        support: clear\n"
    "        marketing: { action: clear, consent: required, otherwise: hash }\n"
    "      phone:      { default: \"mask(keep_last=2)\", support: clear }\n"
    "      ssn:        { default: withhold, support: \"mask(keep_last=4)\" }\n"
    "      birth_date: { default: \"generalize(year)\", support: clear }\n"
    "      notes: withhold\n"
    "      full_name: { default: withhold, support: { action: clear, filter: "
    "allow } }\n"
    "  public.support_tickets:\n"
    "    subject: customer_id\n"
    "    columns:\n"
    "      body: { default: withhold, support: clear }\n";

static int load(const char *text, pv_rules_t **r, pv_rules_errors_t **e) {
  return pv_rules_load_buffer(text, strlen(text), "t.yaml", r, e);
}

static void dump(const pv_rules_errors_t *e) {
  for (size_t i = 0; e && i < e->count; i++)
    fprintf(stderr, "    | %s\n", e->msgs[i]);
}

/* Loading `text` fails with exactly one error, at "t.yaml:<pos>: ", whose
 * message contains `part`. */
static void expect_one(int line, const char *text, const char *pos,
                       const char *part) {
  pv_rules_t *r = NULL;
  pv_rules_errors_t *e = NULL;
  int rc = load(text, &r, &e);
  char prefix[64];
  snprintf(prefix, sizeof prefix, "t.yaml:%s: ", pos);
  bool ok = rc == PV_ESYNTAX && !r && e && e->count == 1 && !e->omitted &&
            strncmp(e->msgs[0], prefix, strlen(prefix)) == 0 &&
            strstr(e->msgs[0], part) != NULL;
  CHECK(ok);
  if (!ok) {
    fprintf(stderr, "  (case at test line %d: rc %d, want '%s...%s')\n", line,
            rc, prefix, part);
    dump(e);
  }
  pv_rules_free(r);
  pv_rules_errors_free(e);
}
#define EXPECT_ONE(text, pos, part) expect_one(__LINE__, text, pos, part)

static const pv_rules_column_t *col(const pv_rules_t *r, const char *t,
                                    const char *c) {
  const pv_rules_table_t *tb = pv_rules_table_find(r, "public", t);
  return tb ? pv_rules_column_find(tb, c) : NULL;
}

static void test_example_decisions(void) {
  pv_rules_t *r = NULL;
  pv_rules_errors_t *e = NULL;
  CHECK_EQ(load(EXAMPLE, &r, &e), 0);
  dump(e);
  CHECK(e == NULL);
  if (!r)
    return;
  CHECK_EQ(r->npurposes, 3);
  CHECK_EQ(r->ntables, 2);
  CHECK_EQ(r->ncolumns, 7);
  int mk = pv_rules_purpose_find(r, "marketing");
  int sp = pv_rules_purpose_find(r, "support");
  int an = pv_rules_purpose_find(r, "analytics");
  CHECK_EQ(mk, 0);
  CHECK_EQ(sp, 1);
  CHECK_EQ(an, 2);
  CHECK_EQ(pv_rules_purpose_find(r, "Marketing"), 0);
  CHECK_EQ(pv_rules_purpose_find(r, "none"), PV_PURPOSE_NONE);
  CHECK_EQ(pv_rules_purpose_find(r, "sales"), PV_PURPOSE_UNKNOWN);
  CHECK_EQ(r->purposes[mk].consent, PV_CONSENT_OPT_IN);
  CHECK_EQ(r->purposes[an].explain, PV_EXPLAIN_NOTICE);
  CHECK_EQ(r->purposes[sp].explain, PV_EXPLAIN_NONE);
  CHECK_EQ(r->purposes[mk].line, 3);

  CHECK(pv_rules_role_may_declare(r, "crm_app", mk));
  CHECK(pv_rules_role_may_declare(r, "marketing", mk));
  CHECK(!pv_rules_role_may_declare(r, "crm_app", sp));
  CHECK(!pv_rules_role_may_declare(r, "CRM_APP", mk));
  CHECK(pv_rules_role_may_declare(r, "analyst", an));
  CHECK(pv_rules_role_may_declare(r, "anyone", PV_PURPOSE_NONE));
  CHECK(!pv_rules_role_may_declare(r, "crm_app", PV_PURPOSE_UNKNOWN));
  CHECK(!pv_rules_role_may_declare(r, "crm_app", 7));
  CHECK_EQ(pv_rules_default_purpose(r, "legacy_app"), sp);
  CHECK_EQ(pv_rules_default_purpose(r, "crm_app"), PV_PURPOSE_NONE);

  CHECK(r->consent.configured);
  CHECK_STR(r->consent.schema, "public");
  CHECK_STR(r->consent.table, "consent");
  CHECK_STR(r->consent.subject_column, "subject_id");
  CHECK_STR(r->consent.purpose_column, "purpose");
  CHECK_STR(r->consent.granted_column, "granted");
  CHECK_EQ(r->consent.max_staleness_ms, 5000);
  CHECK_EQ(r->consent.resync_interval_ms, 60000);
  CHECK_STR(r->consent.notify_channel, "pgveil_consent");

  CHECK_EQ(r->nfunctions, 2);
  CHECK(pv_rules_function_allowed(r, NULL, "lower"));
  CHECK(pv_rules_function_allowed(r, "pg_catalog", "upper"));
  CHECK(!pv_rules_function_allowed(r, NULL, "md5"));

  const pv_rules_table_t *cu = pv_rules_table_find(r, "public", "customers");
  CHECK(cu != NULL);
  CHECK(pv_rules_table_find(r, "public", "orders") == NULL);
  CHECK(pv_rules_table_find(r, "other", "customers") == NULL);
  if (!cu)
    goto out;
  CHECK_STR(cu->subject, "id");
  CHECK_EQ(cu->ncolumns, 6);
  CHECK_EQ(cu->line, 16);
  CHECK(pv_rules_column_find(cu, "city") == NULL);

  /* email: default hash, support clear, marketing clear iff consent. */
  const pv_rules_column_t *c = pv_rules_column_find(cu, "email");
  CHECK(c && c->table == cu);
  const pv_rules_decision_t *d = pv_rules_decide(c, PV_PURPOSE_NONE);
  CHECK_EQ(d->action.kind, PV_ACT_HASH);
  CHECK(!d->consent_required);
  CHECK(!d->filter_allow);
  CHECK_EQ(d->line, 20);
  CHECK_EQ(pv_rules_decide(c, an)->action.kind, PV_ACT_HASH);
  CHECK_EQ(pv_rules_decide(c, PV_PURPOSE_UNKNOWN)->action.kind, PV_ACT_HASH);
  d = pv_rules_decide(c, sp);
  CHECK_EQ(d->action.kind, PV_ACT_CLEAR);
  CHECK(d->filter_allow); /* unconditional clear */
  CHECK(pv_rules_decision_is_clear(d));
  d = pv_rules_decide(c, mk);
  CHECK_EQ(d->action.kind, PV_ACT_CLEAR);
  CHECK(d->consent_required);
  CHECK_EQ(d->otherwise.kind, PV_ACT_HASH);
  CHECK(!d->filter_allow);
  CHECK(!pv_rules_decision_is_clear(d));
  CHECK_EQ(d->line, 22);
  CHECK_EQ(d->col, 20);
  CHECK(pv_rules_decide_name(r, c, "marketing") == d);
  CHECK_EQ(pv_rules_decide_name(r, c, "nope")->action.kind, PV_ACT_HASH);

  /* phone */
  c = pv_rules_column_find(cu, "phone");
  d = pv_rules_decide(c, mk);
  CHECK_EQ(d->action.kind, PV_ACT_MASK);
  CHECK_EQ(d->action.keep_last, 2);
  CHECK_EQ(d->action.keep_first, 0);
  CHECK_EQ(pv_rules_decide(c, sp)->action.kind, PV_ACT_CLEAR);
  /* ssn */
  c = pv_rules_column_find(cu, "ssn");
  CHECK_EQ(pv_rules_decide(c, mk)->action.kind, PV_ACT_WITHHOLD);
  CHECK_EQ(pv_rules_decide(c, PV_PURPOSE_NONE)->action.kind, PV_ACT_WITHHOLD);
  d = pv_rules_decide(c, sp);
  CHECK_EQ(d->action.kind, PV_ACT_MASK);
  CHECK_EQ(d->action.keep_last, 4);
  CHECK(!d->filter_allow);
  /* birth_date */
  c = pv_rules_column_find(cu, "birth_date");
  d = pv_rules_decide(c, an);
  CHECK_EQ(d->action.kind, PV_ACT_GENERALIZE);
  CHECK_EQ(d->action.gen, PV_GEN_YEAR);
  CHECK_EQ(pv_rules_decide(c, sp)->action.kind, PV_ACT_CLEAR);
  /* notes: a bare action is the default of every purpose */
  c = pv_rules_column_find(cu, "notes");
  CHECK_EQ(c->nentries, 0);
  CHECK_EQ(pv_rules_decide(c, sp)->action.kind, PV_ACT_WITHHOLD);
  CHECK_EQ(pv_rules_decide(c, mk)->action.kind, PV_ACT_WITHHOLD);
  CHECK_EQ(c->line, 26);
  CHECK_EQ(c->col, 7);
  /* full_name: filter allow */
  c = pv_rules_column_find(cu, "full_name");
  d = pv_rules_decide(c, sp);
  CHECK_EQ(d->action.kind, PV_ACT_CLEAR);
  CHECK(d->filter_allow);
  CHECK_EQ(pv_rules_decide(c, mk)->action.kind, PV_ACT_WITHHOLD);
  /* sorted columns */
  for (size_t i = 1; i < cu->ncolumns; i++)
    CHECK(strcmp(cu->columns[i - 1].name, cu->columns[i].name) < 0);

  const pv_rules_table_t *st =
      pv_rules_table_find(r, "public", "support_tickets");
  CHECK(st && strcmp(st->subject, "customer_id") == 0);
  c = pv_rules_column_find(st, "body");
  CHECK(c && pv_rules_decide(c, sp)->action.kind == PV_ACT_CLEAR);
  CHECK(c && pv_rules_decide(c, mk)->action.kind == PV_ACT_WITHHOLD);
  CHECK(c && c->table == st);

  char sum[256];
  int n = pv_rules_check_summary(r, sum, sizeof sum);
  CHECK(n > 0 && (size_t)n < sizeof sum);
  CHECK(strncmp(sum,
                "rules OK: 3 purposes, 2 tables, 7 columns, consent "
                "from public.consent (max staleness 5000 ms), "
                "fingerprint ",
                sizeof("rules OK: 3 purposes, 2 tables, 7 columns, consent "
                       "from public.consent (max staleness 5000 ms), "
                       "fingerprint ") -
                    1) == 0);
  CHECK_EQ(strlen(sum), (size_t)n);
  char tiny[8];
  CHECK_EQ(pv_rules_check_summary(r, tiny, sizeof tiny), n);
  CHECK_STR(tiny, "rules O");
out:
  pv_rules_free(r);
}

static void test_fingerprint(void) {
  pv_rules_t *a = NULL, *b = NULL;
  pv_rules_errors_t *e = NULL;
  CHECK_EQ(load(EXAMPLE, &a, &e), 0);
  char *copy = malloc(strlen(EXAMPLE) + 16);
  sprintf(copy, "%s# comment\n", EXAMPLE);
  CHECK_EQ(load(copy, &b, &e), 0);
  CHECK(a && b && a->fingerprint != b->fingerprint);
  CHECK(a && a->nbytes == strlen(EXAMPLE));
  CHECK(a && strcmp(a->source, "t.yaml") == 0);
  pv_rules_t *c = NULL;
  CHECK_EQ(load(EXAMPLE, &c, &e), 0);
  CHECK(a && c && a->fingerprint == c->fingerprint);
  free(copy);
  pv_rules_free(a);
  pv_rules_free(b);
  pv_rules_free(c);
}

/* The brief's example verbatim: legacy_app defaults to support but is not
 * among support's roles. */
static void test_brief_verbatim(void) {
  const char *t = "version: 1\n"
                  "purposes:\n"
                  "  support:   { roles: [support_agent] }\n"
                  "defaults:\n"
                  "  purpose_by_role: { legacy_app: support }\n"
                  "tables: {}\n";
  EXPECT_ONE(t, "5:22",
             "role 'legacy_app' has default purpose 'support' but may not "
             "declare it (add it to purposes.support.roles)");
}

#define HEAD "version: 1\npurposes:\n  support: { roles: [agent] }\n"

static void test_errors_keys(void) {
  EXPECT_ONE("version: 1\ntables: {}\ncolums: 1\n", "3:1",
             "unknown key 'colums' at the top level (expected one of: "
             "version, purposes, defaults, consent, allow_functions, "
             "tables)");
  /* a misspelt key: reported, and so is the missing key it stood for */
  pv_rules_t *r = NULL;
  pv_rules_errors_t *e = NULL;
  CHECK_EQ(load(HEAD "tables:\n  public.t:\n    subject: id\n    colums: {}\n",
                &r, &e),
           PV_ESYNTAX);
  CHECK(e && e->count == 2);
  CHECK(e && e->count == 2 &&
        strcmp(e->msgs[0], "t.yaml:5:3: table public.t: missing 'columns'") ==
            0 &&
        strcmp(e->msgs[1],
               "t.yaml:7:5: unknown key 'colums' in table "
               "public.t (expected one of: subject, columns)") == 0);
  pv_rules_errors_free(e);
  EXPECT_ONE(HEAD "tables:\n  public.t:\n    subject: id\n    columns:\n"
                  "      a: { default: hash, action: clear }\n",
             "8:27",
             "column a: 'action' is neither 'default' nor a declared "
             "purpose (support)");
  EXPECT_ONE(HEAD "tables:\n  public.t:\n    subject: id\n    columns:\n"
                  "      a: { support: { action: clear, filtr: allow } }\n",
             "8:38", "unknown key 'filtr' in column a, support");
  EXPECT_ONE(HEAD "consent:\n  table: public.c\n  subject_column: s\n"
                  "  purpose_column: p\n  granted_column: g\n  ttl: 5s\n"
                  "tables: {}\n",
             "9:3", "unknown key 'ttl' in consent");
  EXPECT_ONE("version: 1\npurposes:\n  x: { roles: [a], mode: opt_in }\n"
             "tables: {}\n",
             "3:20", "unknown key 'mode' in purpose 'x'");
}

static void test_errors_actions(void) {
  /* unknown action: column of the scalar */
  EXPECT_ONE(HEAD "tables:\n  public.t:\n    subject: id\n    columns:\n"
                  "      a: scramble\n",
             "8:10", "column a, default: unknown action 'scramble'");
  /* bad argument: column inside the plain scalar */
  EXPECT_ONE(HEAD "tables:\n  public.t:\n    subject: id\n    columns:\n"
                  "      a: mask(keep_lst=2)\n",
             "8:15", "unknown argument 'keep_lst'");
  /* inside a double-quoted scalar: one more for the quote */
  EXPECT_ONE(HEAD "tables:\n  public.t:\n    subject: id\n    columns:\n"
                  "      a: { support: \"generalize(week)\" }\n",
             "8:33", "column a, support: bad value: expected year, month");
  /* an action that is a mapping where a name is expected */
  EXPECT_ONE(HEAD "tables:\n  public.t:\n    subject: id\n    columns:\n"
                  "      a: { support: { action: [clear] } }\n",
             "8:31", "expected an action");
  /* empty value */
  EXPECT_ONE(HEAD "tables:\n  public.t:\n    subject: id\n    columns:\n"
                  "      a:\n",
             "8:9", "column a, default: expected an action");
  EXPECT_ONE(HEAD "tables:\n  public.t:\n    subject: id\n    columns:\n"
                  "      a: { support: { filter: allow } }\n",
             "8:21", "column a, support: missing 'action'");
}

static void test_errors_duplicates(void) {
  EXPECT_ONE("version: 1\ntables: {}\nversion: 1\n", "3:1",
             "duplicate key 'version' at the top level (first at line 1)");
  EXPECT_ONE(HEAD "tables:\n  public.t:\n    subject: id\n    columns:\n"
                  "      a: hash\n      b: hash\n      A: clear\n",
             "10:7", "table public.t: duplicate column 'a' (first at line 8)");
  EXPECT_ONE(HEAD "tables:\n  public.t:\n    subject: id\n    columns: {}\n"
                  "  Public.T:\n    subject: id\n    columns: {}\n",
             "8:3", "duplicate table 'public.t' (first at line 5)");
  EXPECT_ONE("version: 1\npurposes:\n  a: { roles: [x] }\n  a: { roles: [y] "
             "}\ntables: {}\n",
             "4:3", "duplicate purpose 'a' (first at line 3)");
  EXPECT_ONE("version: 1\npurposes:\n  a: { roles: [x, y, x] }\ntables: {}\n",
             "3:22", "duplicate role 'x' (first at line 3)");
  EXPECT_ONE(HEAD "tables:\n  public.t:\n    subject: id\n    columns:\n"
                  "      a: { support: hash, default: clear, support: "
                  "clear }\n",
             "8:43", "column a: duplicate key 'support' (first at line 8)");
  EXPECT_ONE(HEAD "tables:\n  public.t:\n    subject: id\n    subject: x\n"
                  "    columns: {}\n",
             "7:5", "duplicate key 'subject' in table public.t");
  EXPECT_ONE("version: 1\nallow_functions: [lower, LOWER]\ntables: {}\n",
             "2:26", "duplicate function 'lower'");
  EXPECT_ONE(HEAD "defaults:\n  purpose_by_role: { agent: support, agent: "
                  "support }\ntables: {}\n",
             "5:38", "duplicate role 'agent' (first at line 5)");
}

static void test_errors_references(void) {
  EXPECT_ONE(HEAD "tables:\n  public.t:\n    subject: id\n    columns:\n"
                  "      a: { marketing: clear }\n",
             "8:12",
             "column a: 'marketing' is neither 'default' nor a declared "
             "purpose (support)");
  EXPECT_ONE(HEAD "defaults:\n  purpose_by_role:\n    agent: sales\n"
                  "tables: {}\n",
             "6:12", "purpose 'sales' is not declared under purposes");
  /* `none` is always allowed as a default */
  pv_rules_t *r = NULL;
  pv_rules_errors_t *e = NULL;
  CHECK_EQ(load(HEAD "defaults:\n  purpose_by_role: { agent: none }\n"
                     "tables: {}\n",
                &r, &e),
           0);
  CHECK(r && pv_rules_default_purpose(r, "agent") == PV_PURPOSE_NONE);
  pv_rules_free(r);
  EXPECT_ONE(HEAD "tables:\n  public.t:\n    subject: id\n    columns:\n"
                  "      a: { support: { action: clear, consent: required } "
                  "}\n",
             "8:47",
             "column a, support: consent: required needs a top-level "
             "consent: section");
  EXPECT_ONE(HEAD "consent:\n  table: public.c\n  subject_column: s\n"
                  "  purpose_column: p\n  granted_column: g\n"
                  "tables:\n  public.t:\n    subject: id\n    columns:\n"
                  "      a: { default: { action: clear, consent: required } "
                  "}\n",
             "13:38", "consent: required is not allowed on default");
  EXPECT_ONE(HEAD "tables:\n  public.t:\n    subject: id\n    columns:\n"
                  "      a: { support: { action: clear, otherwise: hash } }\n",
             "8:38", "'otherwise' applies only with consent: required");
}

static void test_errors_structure(void) {
  EXPECT_ONE(HEAD "tables:\n  public.t:\n    columns: {}\n", "5:3",
             "table public.t: missing 'subject'");
  EXPECT_ONE("version: 2\ntables: {}\n", "1:10",
             "version: expected 1 (the only version), got '2'");
  EXPECT_ONE("tables: {}\n", "1:1", "missing 'version: 1'");
  EXPECT_ONE("version: 1\n", "1:1", "missing 'tables'");
  EXPECT_ONE("version: 1\npurposes:\n  - support\ntables: {}\n", "3:3",
             "purposes: expected a mapping, got a list");
  EXPECT_ONE(HEAD "tables:\n  public.t:\n    subject: id\n    columns:\n"
                  "      a: [hash]\n",
             "8:10", "column a: expected a mapping, got a list");
  EXPECT_ONE(HEAD "tables:\n  public.t:\n    subject: [id]\n"
                  "    columns: {}\n",
             "6:14", "subject: expected a value, got a list");
  EXPECT_ONE("version: 1\nallow_functions: lower\ntables: {}\n", "2:18",
             "allow_functions: expected a list, got a value");
  EXPECT_ONE("- version: 1\n", "1:1",
             "the rules file must be a mapping of keys");
  EXPECT_ONE("", "1:1", "empty rules file");
  EXPECT_ONE("# only a comment\n\n", "1:1", "empty rules file");
  EXPECT_ONE("---\n", "1:1", "empty rules file");
  EXPECT_ONE("version: 1\npurposes:\n  x: {}\ntables: {}\n", "3:6",
             "purpose 'x': missing 'roles'");
  EXPECT_ONE("version: 1\npurposes:\n  x: { roles: [] }\ntables: {}\n", "3:15",
             "purposes.x.roles: expected at least one role");
  EXPECT_ONE("version: 1\npurposes:\n  Sales: { roles: [a] }\ntables: {}\n",
             "3:3", "purpose name 'Sales': expected lower-case letters");
  EXPECT_ONE("version: 1\npurposes:\n  none: { roles: [a] }\ntables: {}\n",
             "3:3", "purpose name 'none' is reserved");
  EXPECT_ONE("version: 1\npurposes:\n  x: { roles: [a], consent: gdpr }\n"
             "tables: {}\n",
             "3:29", "consent: expected opt_in or opt_out, got 'gdpr'");
  EXPECT_ONE(HEAD "consent:\n  table: public.c\n  subject_column: s\n"
                  "  purpose_column: p\n  granted_column: g\n"
                  "  max_staleness: 5 s\ntables: {}\n",
             "9:19", "max_staleness: expected a duration such as 500ms");
  EXPECT_ONE(HEAD "consent:\n  table: public.c\n  subject_column: s\n"
                  "  purpose_column: p\n  granted_column: g\n"
                  "  max_staleness: 0ms\ntables: {}\n",
             "9:18", "max_staleness: '0ms' is out of range");
  EXPECT_ONE(HEAD "consent:\n  table: public.c\n  subject_column: s\n"
                  "  purpose_column: p\ntables: {}\n",
             "5:3", "consent: missing 'granted_column'");
}

static void test_errors_yaml(void) {
  /* libyaml's own position for a syntax error */
  EXPECT_ONE("version: 1\ntables:\n  public.t: {subject: id\n", "4:1",
             "YAML: did not find expected ',' or '}'");
  EXPECT_ONE("version: 1\n tables: {}\n", "2:8",
             "YAML: mapping values are not allowed in this context");
  EXPECT_ONE("version: 1\ntables: &t {}\nother: *t\n", "3:8",
             "YAML aliases (*name) are not supported");
  EXPECT_ONE("version: 1\ntables: {}\n---\nversion: 1\n", "3:1",
             "several YAML documents");
  EXPECT_ONE("version: 1\ntables: {}\nx: \"\xff\"\n", "3:5", "YAML:");
  EXPECT_ONE("version: 1\ntables:\n\tpublic.t: {}\n", "3:1", "YAML:");
}

static void test_identifiers(void) {
  EXPECT_ONE(HEAD "tables:\n  customers:\n    subject: id\n    columns: {}\n",
             "5:3",
             "table name 'customers' must be schema-qualified, e.g. "
             "public.customers");
  EXPECT_ONE(HEAD "tables:\n  db.public.t:\n    subject: id\n    columns: {}\n",
             "5:13", "table name 'db.public.t': too many dotted parts");
  EXPECT_ONE(HEAD "tables:\n  public.t:\n    subject: id\n    columns:\n"
                  "      'a b': hash\n",
             "8:9", "column name 'a b': unexpected character");
  EXPECT_ONE(HEAD "tables:\n  'public.\"t':\n    subject: id\n"
                  "    columns: {}\n",
             "5:11", "unterminated quoted identifier");
  EXPECT_ONE(HEAD
             "tables:\n  public.t:\n    subject: id\n    columns:\n"
             "      aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
             "aaaaaaaaa: hash\n",
             "8:7", "identifier longer than 63 bytes");
  const char *t = HEAD "consent:\n  table: public.\"Consent\"\n"
                       "  subject_column: '\"Subject\"'\n"
                       "  purpose_column: p\n  granted_column: g\n"
                       "tables:\n  public.\"Customers\":\n    subject: ID\n"
                       "    columns:\n"
                       "      Email: hash\n"
                       "      '\"E-Mail\"': withhold\n"
                       "      '\"Say \"\"hi\"\"\"': clear\n"
                       "  '\"My Schema\".x':\n    subject: id\n"
                       "    columns: {}\n";
  pv_rules_t *r = NULL;
  pv_rules_errors_t *e = NULL;
  CHECK_EQ(load(t, &r, &e), 0);
  dump(e);
  if (!r)
    return;
  CHECK_STR(r->consent.table, "Consent");
  CHECK_STR(r->consent.subject_column, "Subject");
  const pv_rules_table_t *tb = pv_rules_table_find(r, "public", "Customers");
  CHECK(tb != NULL);
  CHECK(pv_rules_table_find(r, "public", "customers") == NULL);
  CHECK(pv_rules_table_find(r, "My Schema", "x") != NULL);
  if (tb) {
    CHECK_STR(tb->subject, "id");
    CHECK(pv_rules_column_find(tb, "email") != NULL);
    CHECK(pv_rules_column_find(tb, "Email") == NULL);
    CHECK(pv_rules_column_find(tb, "E-Mail") != NULL);
    CHECK(pv_rules_column_find(tb, "Say \"hi\"") != NULL);
  }
  pv_rules_free(r);
}

static void test_many_errors(void) {
  const char *t = "version: 3\n"                                 /* 1 */
                  "purposes:\n"                                  /* 2 */
                  "  sales: { roles: [rep], consent: maybe }\n"  /* 3 */
                  "tables:\n"                                    /* 4 */
                  "  public.a:\n"                                /* 5 */
                  "    columns:\n"                               /* 6 */
                  "      x: { salse: clear }\n"                  /* 7 */
                  "  b:\n"                                       /* 8 */
                  "    subject: id\n"                            /* 9 */
                  "    columns: { y: \"mask(keep_last=-1)\" }\n" /* 10 */
                  "extra: 1\n";                                  /* 11 */
  pv_rules_t *r = NULL;
  pv_rules_errors_t *e = NULL;
  CHECK_EQ(load(t, &r, &e), PV_ESYNTAX);
  CHECK(r == NULL);
  CHECK(e != NULL);
  if (!e)
    return;
  CHECK_EQ(e->count, 7);
  CHECK_EQ(e->omitted, 0);
  const char *want[] = {
      "t.yaml:1:10: version:",
      "t.yaml:3:35: consent:",
      "t.yaml:5:3: table public.a: missing 'subject'",
      "t.yaml:7:12: column x: 'salse'",
      "t.yaml:8:3: table name 'b'",
      "t.yaml:10:35: column y, default: keep_last must be >= 0",
      "t.yaml:11:1: unknown key 'extra'"};
  for (size_t i = 0; i < 7 && i < e->count; i++)
    CHECK(strncmp(e->msgs[i], want[i], strlen(want[i])) == 0);
  if (e->count != 7)
    dump(e);
  pv_rules_errors_free(e);
}

static void test_error_cap(void) {
  size_t cap = 64 + 150 * 16;
  char *t = malloc(cap);
  size_t n = (size_t)sprintf(t, "version: 1\ntables: {}\n");
  for (int i = 0; i < 150; i++)
    n += (size_t)sprintf(t + n, "bad%d: 1\n", i);
  pv_rules_t *r = NULL;
  pv_rules_errors_t *e = NULL;
  CHECK_EQ(pv_rules_load_buffer(t, n, "t.yaml", &r, &e), PV_ESYNTAX);
  CHECK(e && e->count == PV_RULES_MAX_ERRORS);
  CHECK(e && e->omitted == 50);
  CHECK(e && strncmp(e->msgs[0], "t.yaml:3:1: unknown key 'bad0'", 30) == 0);
  pv_rules_errors_free(e);
  free(t);
}

static void test_limits(void) {
  pv_rules_limits_t lim = pv_rules_limits_default();
  CHECK_EQ(lim.max_file_bytes, 4u << 20);
  lim.max_tables = 1;
  const char *t = HEAD "tables:\n  public.a: { subject: id, columns: {} }\n"
                       "  public.b: { subject: id, columns: {} }\n";
  pv_rules_t *r = NULL;
  pv_rules_errors_t *e = NULL;
  CHECK_EQ(pv_rules_load_buffer_limits(t, strlen(t), "t.yaml", &lim, &r, &e),
           PV_ESYNTAX);
  CHECK(e && e->count == 1 &&
        strstr(e->msgs[0], "t.yaml:5:3: tables: 2 tables, over the limit "
                           "of 1") != NULL);
  pv_rules_errors_free(e);

  lim = pv_rules_limits_default();
  lim.max_columns = 2;
  t = HEAD "tables:\n  public.a: { subject: id, columns: { x: hash, y: hash } "
           "}\n  public.b: { subject: id, columns: { z: hash } }\n";
  CHECK_EQ(pv_rules_load_buffer_limits(t, strlen(t), "t.yaml", &lim, &r, &e),
           PV_ESYNTAX);
  CHECK(e && e->count == 1 &&
        strstr(e->msgs[0], "over the limit of 2 "
                           "columns") != NULL);
  pv_rules_errors_free(e);

  lim = pv_rules_limits_default();
  lim.max_file_bytes = 10;
  CHECK_EQ(pv_rules_load_buffer_limits(t, strlen(t), "t.yaml", &lim, &r, &e),
           PV_ETOOBIG);
  CHECK(r == NULL);
  CHECK(e && e->count == 1 && strstr(e->msgs[0], "t.yaml: file is") != NULL);
  pv_rules_errors_free(e);

  lim = pv_rules_limits_default();
  lim.max_depth = 3;
  t = "version: 1\ntables: {a: {b: {c: 1}}}\n";
  CHECK_EQ(pv_rules_load_buffer_limits(t, strlen(t), "t.yaml", &lim, &r, &e),
           PV_ESYNTAX);
  CHECK(e && e->count == 1 &&
        strstr(e->msgs[0], "t.yaml:2:17: YAML nested") != NULL);
  pv_rules_errors_free(e);

  lim = pv_rules_limits_default();
  lim.max_nodes = 4;
  t = "version: 1\ntables: {a: 1}\n";
  CHECK_EQ(pv_rules_load_buffer_limits(t, strlen(t), "t.yaml", &lim, &r, &e),
           PV_ESYNTAX);
  CHECK(e && e->count == 1 && strstr(e->msgs[0], "more than 4 YAML nodes"));
  pv_rules_errors_free(e);

  CHECK_EQ(pv_rules_load_buffer(NULL, 3, "x", &r, &e), PV_EINVAL);
}

static void test_files(void) {
  pv_rules_t *r = NULL;
  pv_rules_errors_t *e = NULL;
  CHECK_EQ(pv_rules_load_file("rules/examples/crm.yaml", &r, &e), 0);
  dump(e);
  pv_rules_errors_free(e);
  if (r) {
    int mk = pv_rules_purpose_find(r, "marketing");
    int sp = pv_rules_purpose_find(r, "support");
    CHECK(mk >= 0 && sp >= 0);
    CHECK(pv_rules_role_may_declare(r, "support_agent", sp));
    CHECK_EQ(pv_rules_default_purpose(r, "legacy_app"), sp);
    CHECK_EQ(pv_rules_default_purpose(r, "analyst"),
             pv_rules_purpose_find(r, "analytics"));
    const pv_rules_column_t *c = col(r, "customers", "email");
    CHECK(c && pv_rules_decide(c, mk)->consent_required);
    c = col(r, "support_tickets", "subject");
    CHECK(c &&
          pv_rules_decide(c, PV_PURPOSE_NONE)->action.kind == PV_ACT_REDACT);
    CHECK(pv_rules_table_find(r, "public", "orders") == NULL);
    CHECK(strcmp(r->source, "rules/examples/crm.yaml") == 0);
    pv_rules_free(r);
  }

  r = NULL;
  CHECK_EQ(pv_rules_load_file("tests/leakcases.yaml", &r, &e), 0);
  dump(e);
  pv_rules_errors_free(e);
  if (r) {
    int mk = pv_rules_purpose_find(r, "marketing");
    int sp = pv_rules_purpose_find(r, "support");
    CHECK(pv_rules_role_may_declare(r, "crm_app", mk));
    CHECK(!pv_rules_role_may_declare(r, "crm_app", sp));
    CHECK(pv_rules_role_may_declare(r, "crm_support", sp));
    CHECK_EQ(pv_rules_default_purpose(r, "crm_app"), PV_PURPOSE_NONE);
    /* every protected column: withhold by default */
    static const char *prot[][2] = {
        {"customers", "full_name"},  {"customers", "email"},
        {"customers", "phone"},      {"customers", "ssn"},
        {"customers", "birth_date"}, {"customers", "street"},
        {"customers", "notes"},      {"support_tickets", "body"}};
    for (size_t i = 0; i < 8; i++) {
      const pv_rules_column_t *c = col(r, prot[i][0], prot[i][1]);
      CHECK(c != NULL);
      if (c)
        CHECK_EQ(pv_rules_decide(c, PV_PURPOSE_NONE)->action.kind,
                 PV_ACT_WITHHOLD);
    }
    const pv_rules_decision_t *d =
        pv_rules_decide(col(r, "customers", "email"), mk);
    CHECK(d->action.kind == PV_ACT_HASH && d->consent_required &&
          d->otherwise.kind == PV_ACT_WITHHOLD);
    CHECK_EQ(pv_rules_decide(col(r, "customers", "ssn"), sp)->action.keep_last,
             4);
    CHECK_EQ(
        pv_rules_decide(col(r, "customers", "phone"), mk)->action.keep_last, 2);
    CHECK(col(r, "customers", "city") == NULL);
    CHECK(col(r, "customers", "id") == NULL);
    CHECK(pv_rules_table_find(r, "public", "orders") == NULL);
    pv_rules_free(r);
  }

  CHECK_EQ(pv_rules_load_file("tests/no/such/file.yaml", &r, &e), PV_EIO);
  CHECK(r == NULL);
  CHECK(e && e->count == 1 &&
        strcmp(e->msgs[0], "tests/no/such/file.yaml: cannot read: No such "
                           "file or directory") == 0);
  pv_rules_errors_free(e);
  CHECK_EQ(pv_rules_load_file("tests", &r, &e), PV_EIO);
  CHECK(e && e->count == 1);
  pv_rules_errors_free(e);
}

static void test_modes(void) {
  const char *t = "version: 1\n"
                  "purposes:\n"
                  "  ads: { roles: [b, a], consent: opt_out, explain: none }\n"
                  "consent: { table: s.c, subject_column: s, purpose_column: "
                  "p, granted_column: g, max_staleness: 250ms, "
                  "resync_interval: 2m, notify_channel: Chan }\n"
                  "tables:\n"
                  "  s.t:\n"
                  "    subject: id\n"
                  "    columns:\n"
                  "      a: { ads: { action: hash, consent: none, filter: deny "
                  "} }\n"
                  "      b: { ads: { action: clear, consent: required, "
                  "otherwise: clear } }\n"
                  "      c: { default: { action: hash, filter: allow } }\n";
  pv_rules_t *r = NULL;
  pv_rules_errors_t *e = NULL;
  CHECK_EQ(load(t, &r, &e), 0);
  dump(e);
  if (!r)
    return;
  CHECK_EQ(r->purposes[0].consent, PV_CONSENT_OPT_OUT);
  CHECK_STR(pv_rules_consent_mode_name(r->purposes[0].consent), "opt_out");
  CHECK_EQ(r->purposes[0].nroles, 2);
  CHECK_STR(r->purposes[0].roles[0], "a"); /* sorted */
  CHECK_EQ(r->consent.max_staleness_ms, 250);
  CHECK_EQ(r->consent.resync_interval_ms, 120000);
  CHECK_STR(r->consent.notify_channel, "chan");
  const pv_rules_table_t *tb = pv_rules_table_find(r, "s", "t");
  const pv_rules_decision_t *d =
      pv_rules_decide(pv_rules_column_find(tb, "a"), 0);
  CHECK(d->action.kind == PV_ACT_HASH && !d->consent_required &&
        !d->filter_allow);
  /* clear whatever the consent: clear, so filters are allowed */
  d = pv_rules_decide(pv_rules_column_find(tb, "b"), 0);
  CHECK(d->consent_required && pv_rules_decision_is_clear(d) &&
        d->filter_allow);
  d = pv_rules_decide(pv_rules_column_find(tb, "c"), PV_PURPOSE_NONE);
  CHECK(d->action.kind == PV_ACT_HASH && d->filter_allow);
  CHECK(pv_rules_decide(pv_rules_column_find(tb, "c"), 0) == d);
  char sum[200];
  CHECK(pv_rules_check_summary(r, sum, sizeof sum) > 0);
  CHECK(strncmp(sum,
                "rules OK: 1 purpose, 1 table, 3 columns, consent from "
                "s.c (max staleness 250 ms)",
                60) == 0);
  pv_rules_free(r);
}

int main(void) {
  RUN(test_example_decisions);
  RUN(test_fingerprint);
  RUN(test_brief_verbatim);
  RUN(test_errors_keys);
  RUN(test_errors_actions);
  RUN(test_errors_duplicates);
  RUN(test_errors_references);
  RUN(test_errors_structure);
  RUN(test_errors_yaml);
  RUN(test_identifiers);
  RUN(test_many_errors);
  RUN(test_error_cap);
  RUN(test_limits);
  RUN(test_files);
  RUN(test_modes);
  return check_exit("test_rules");
}
