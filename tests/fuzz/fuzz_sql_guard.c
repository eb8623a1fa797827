/* Fuzz target for the guard (proxy/sql_guard*.c): arbitrary text through the
 * pre-scan and the analysis, under each purpose, against a small fake
 * catalog with a view. Invariants: never crashes or leaks; a refused
 * statement has a message and SQLSTATE; the pre-scan saying "clean" means
 * the analysis touches nothing protected. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pgveil/rules.h"
#include "pgveil/sql_guard.h"

static const char RULES[] =
    "version: 1\n"
    "purposes:\n"
    "  marketing:\n"
    "    roles: [app]\n"
    "  support:\n"
    "    roles: [sup]\n"
    "tables:\n"
    "  public.customers:\n"
    "    subject: id\n"
    "    columns:\n"
    "      email: { default: withhold, marketing: hash, support: clear }\n"
    "      ssn: { default: withhold, marketing: withhold, support: "
    "\"mask(keep_last=4)\", }\n";

static const char *const CUST[] = {"id", "email", "ssn", "city"};
static const char *const ORD[] = {"id", "customer_id", "total"};
static const char *const VIEWC[] = {"id", "email"};
static const pv_rules_t *rules;

static int lookup(void *ctx, const char *schema, const char *name,
                  const char *const *sp, size_t nsp, pv_guard_rel_t *out) {
  (void)ctx;
  (void)sp;
  (void)nsp;
  memset(out, 0, sizeof *out);
  if (schema && strcmp(schema, "public") != 0)
    return 0;
  out->schema = "public";
  out->name = name;
  if (!strcmp(name, "customers")) {
    out->kind = PV_GUARD_REL_TABLE;
    out->columns = CUST;
    out->ncolumns = 4;
    out->rules_table = pv_rules_table_find(rules, "public", "customers");
  } else if (!strcmp(name, "orders")) {
    out->kind = PV_GUARD_REL_TABLE;
    out->columns = ORD;
    out->ncolumns = 3;
  } else if (!strcmp(name, "v")) {
    out->kind = PV_GUARD_REL_VIEW;
    out->columns = VIEWC;
    out->ncolumns = 2;
    out->view_sql = "SELECT id, email FROM public.customers";
  } else if (!strcmp(name, "loop")) {
    out->kind = PV_GUARD_REL_VIEW; /* a view that reads itself */
    out->columns = VIEWC;
    out->ncolumns = 2;
    out->view_sql = "SELECT id, email FROM public.loop";
  }
  return 0;
}

static const char *const NAMES[] = {"customers", "v", "loop"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static pv_rules_t *r;
  if (!r) {
    pv_rules_errors_t *errs = NULL;
    if (pv_rules_load_buffer(RULES, strlen(RULES), "fuzz", &r, &errs) != 0)
      abort();
    rules = r;
  }
  if (size > 8192)
    return 0;
  char *sql = malloc(size + 1);
  if (!sql)
    return 0;
  memcpy(sql, data, size);
  sql[size] = '\0';
  size_t len = strlen(sql); /* the server stops at NUL too */
  pv_guard_names_t *names = NULL;
  if (pv_guard_names_new(NAMES, 3, &names) != 0)
    abort();
  bool may = pv_guard_prescan(names, sql, len);
  const char *const sp[] = {"public"};
  for (int purpose = -1; purpose < 2; purpose++) {
    pv_guard_input_t in = {0};
    in.rules = rules;
    in.purpose = purpose;
    in.search_path = sp;
    in.nsearch_path = 1;
    in.lookup = lookup;
    pv_guard_result_t *res = NULL;
    if (pv_guard_analyze(&in, sql, &res) != 0)
      continue;
    for (size_t i = 0; i < res->nstmts; i++) {
      const pv_guard_stmt_t *st = &res->stmts[i];
      if (st->verdict == PV_GUARD_REFUSE && (!st->message || !st->sqlstate[0]))
        abort();
      for (size_t k = 0; k < st->noutcols; k++)
        if (!st->outcols[k].name)
          abort();
    }
    if (!may && res->touches_protected)
      abort(); /* pre-scan said clean, yet protected data was touched */
    pv_guard_result_free(res);
  }
  pv_guard_names_free(names);
  free(sql);
  return 0;
}
