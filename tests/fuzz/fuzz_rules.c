/* Fuzz target for the rules loader (rules/rules_load.c): arbitrary bytes as
 * a rules file. Never crash or leak; a failure always explains itself; a
 * success yields a model whose lookups agree with its arrays. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgveil/rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_CHECK(cond)                                                         \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
              #cond);                                                          \
      abort();                                                                 \
    }                                                                          \
  } while (0)

static void check_decision(const pv_rules_decision_t *d) {
  FZ_CHECK(d != NULL);
  FZ_CHECK(d->action.kind <= PV_ACT_GENERALIZE);
  FZ_CHECK(d->otherwise.kind <= PV_ACT_GENERALIZE);
  if (pv_rules_decision_is_clear(d))
    FZ_CHECK(d->filter_allow);
}

static void check_model(const pv_rules_t *r) {
  for (size_t i = 0; i < r->npurposes; i++) {
    const pv_rules_purpose_t *p = &r->purposes[i];
    FZ_CHECK(pv_rules_purpose_find(r, p->name) == (int)i);
    FZ_CHECK(p->nroles > 0);
    for (size_t j = 0; j < p->nroles; j++)
      FZ_CHECK(pv_rules_role_may_declare(r, p->roles[j], (int)i));
  }
  for (size_t i = 0; i < r->nrole_defaults; i++) {
    const pv_rules_role_default_t *d = &r->role_defaults[i];
    FZ_CHECK(pv_rules_default_purpose(r, d->role) == d->purpose);
    FZ_CHECK(pv_rules_role_may_declare(r, d->role, d->purpose));
  }
  size_t ncols = 0;
  for (size_t i = 0; i < r->ntables; i++) {
    const pv_rules_table_t *t = &r->tables[i];
    FZ_CHECK(t->schema && t->name && t->subject);
    FZ_CHECK(pv_rules_table_find(r, t->schema, t->name) == t);
    for (size_t j = 0; j < t->ncolumns; j++) {
      const pv_rules_column_t *c = &t->columns[j];
      FZ_CHECK(c->table == t);
      FZ_CHECK(pv_rules_column_find(t, c->name) == c);
      check_decision(pv_rules_decide(c, PV_PURPOSE_NONE));
      check_decision(pv_rules_decide(c, PV_PURPOSE_UNKNOWN));
      for (size_t k = 0; k < r->npurposes; k++)
        check_decision(pv_rules_decide(c, (int)k));
      for (size_t k = 0; k < c->nentries; k++) {
        FZ_CHECK(c->entries[k].purpose >= 0 &&
                 (size_t)c->entries[k].purpose < r->npurposes);
        if (c->entries[k].d.consent_required)
          FZ_CHECK(r->consent.configured);
      }
      FZ_CHECK(!c->dflt.consent_required);
    }
    ncols += t->ncolumns;
  }
  FZ_CHECK(ncols == r->ncolumns);
  char sum[512];
  int n = pv_rules_check_summary(r, sum, sizeof sum);
  FZ_CHECK(n > 0 && strncmp(sum, "rules OK: ", 10) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  pv_rules_t *r = NULL;
  pv_rules_errors_t *e = NULL;
  int rc = pv_rules_load_buffer((const char *)data, size, "fuzz", &r, &e);
  if (rc == 0) {
    FZ_CHECK(r != NULL && e == NULL);
    check_model(r);
    pv_rules_free(r);
    return 0;
  }
  FZ_CHECK(r == NULL);
  FZ_CHECK(rc == PV_ESYNTAX || rc == PV_ENOMEM || rc == PV_ETOOBIG);
  if (!e)
    return 0; /* only when out of memory */
  FZ_CHECK(e->count > 0 || e->omitted > 0);
  FZ_CHECK(e->count <= PV_RULES_MAX_ERRORS);
  for (size_t i = 0; i < e->count; i++) {
    FZ_CHECK(strncmp(e->msgs[i], "fuzz:", 5) == 0);
    FZ_CHECK(strchr(e->msgs[i], '\n') == NULL);
  }
  pv_rules_errors_free(e);
  return 0;
}
