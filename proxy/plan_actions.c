/* Owns the mapping of a result's columns to their actions under a purpose
 * (include/pgveil/plan_actions.h). Pure: no I/O, no globals; one
 * allocation per plan. */
#include "pgveil/plan_actions.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const pv_action_t WITHHOLD = {.kind = PV_ACT_WITHHOLD};

/* The action actually applied: a misfit for the arriving type withholds. */
static const pv_action_t *fitted(const pv_action_t *a,
                                 const pv_result_col_t *rc) {
  if (a->kind == PV_ACT_CLEAR || pv_mask_fits(a, rc->type_oid, rc->typmod))
    return a;
  return &WITHHOLD;
}

static size_t column_id_len(const pv_catalog_col_t *cc) {
  return strlen(cc->table->schema) + strlen(cc->table->name) +
         strlen(cc->rule->name) + 3;
}

/* The result column holding cc's table's subject: the table's own column,
 * or a view column passing it through. */
static int32_t find_subject(const pv_result_col_t *cols, uint16_t ncols,
                            const pv_catalog_col_t *cc,
                            const pv_reldir_t *dir) {
  for (uint16_t i = 0; i < ncols; i++) {
    uint32_t oid = cols[i].table_oid;
    int16_t att = cols[i].attnum;
    if (oid != cc->table_oid)
      (void)pv_reldir_subject_alias(dir, oid, att, &oid, &att);
    if (oid == cc->table_oid && att == cc->subject_attnum)
      return i;
  }
  return -1;
}

/* Fills c for protected column cc; returns true when it is acted on. */
static bool fill(pv_col_action_t *c, const pv_result_col_t *cols,
                 uint16_t ncols, const pv_result_col_t *rc,
                 const pv_catalog_col_t *cc, const pv_reldir_t *dir,
                 int purpose, const pv_mask_key_t *key, char *id) {
  const pv_rules_decision_t *d = pv_rules_decide(cc->rule, purpose);
  c->action = fitted(&d->action, rc);
  c->otherwise = d->consent_required ? fitted(&d->otherwise, rc) : NULL;
  c->subject_col = c->otherwise ? find_subject(cols, ncols, cc, dir) : -1;
  c->key = key;
  c->column_id = id;
  sprintf(id, "%s.%s.%s", cc->table->schema, cc->table->name, cc->rule->name);
  bool acted = c->action->kind != PV_ACT_CLEAR ||
               (c->otherwise && c->otherwise->kind != PV_ACT_CLEAR);
  if (!acted) {
    c->action = NULL;
    c->otherwise = NULL;
  }
  return acted;
}

/* The protected column behind a result column: a table's own, or the base
 * column a view passes through. */
static const pv_catalog_col_t *lookup(const pv_catalog_t *cat,
                                      const pv_reldir_t *dir,
                                      const pv_result_col_t *rc) {
  if (!rc->table_oid)
    return NULL;
  const pv_catalog_col_t *cc =
      pv_catalog_column(cat, rc->table_oid, rc->attnum);
  return cc ? cc : pv_reldir_alias(dir, rc->table_oid, rc->attnum);
}

int pv_plan_actions_build(const pv_result_col_t *cols, uint16_t ncols,
                          const pv_catalog_t *cat, const pv_reldir_t *dir,
                          int purpose, const pv_mask_key_t *key,
                          pv_row_actions_t **out) {
  *out = NULL;
  size_t strings = 0;
  for (uint16_t i = 0; i < ncols; i++) {
    const pv_catalog_col_t *cc = lookup(cat, dir, &cols[i]);
    if (cc)
      strings += column_id_len(cc);
  }
  size_t size = sizeof(pv_row_actions_t) + ncols * sizeof(pv_col_action_t);
  pv_row_actions_t *ra = calloc(1, size + strings);
  if (!ra)
    return PV_ENOMEM;
  ra->ncols = ncols;
  ra->cols = (pv_col_action_t *)(ra + 1);
  char *id = (char *)ra + size;
  for (uint16_t i = 0; i < ncols; i++) {
    pv_col_action_t *c = &ra->cols[i];
    c->type_oid = cols[i].type_oid;
    c->typmod = cols[i].typmod;
    c->format = cols[i].format;
    c->subject_col = -1;
    const pv_catalog_col_t *cc = lookup(cat, dir, &cols[i]);
    if (!cc)
      continue;
    if (fill(c, cols, ncols, &cols[i], cc, dir, purpose, key, id)) {
      ra->nacted++;
      ra->ngated += c->otherwise != NULL;
    }
    id += column_id_len(cc);
  }
  *out = ra;
  return PV_OK;
}

int pv_plan_actions_for_plan(const pv_plan_t *plan, const pv_catalog_t *cat,
                             const pv_reldir_t *dir, int purpose,
                             const pv_mask_key_t *key, pv_row_actions_t **out) {
  pv_result_col_t stackcols[64] = {{0}};
  pv_result_col_t *cols =
      plan->ncols <= 64 ? stackcols : malloc(plan->ncols * sizeof *cols);
  if (!cols)
    return PV_ENOMEM;
  for (uint16_t i = 0; i < plan->ncols; i++) {
    const pv_plan_col_t *pc = &plan->cols[i];
    cols[i] = (pv_result_col_t){pc->table_oid, pc->attnum, pc->type_oid,
                                pc->typmod, pc->format};
  }
  int rc =
      pv_plan_actions_build(cols, plan->ncols, cat, dir, purpose, key, out);
  if (cols != stackcols)
    free(cols);
  return rc;
}

void pv_plan_actions_free(pv_row_actions_t *ra) { free(ra); }
