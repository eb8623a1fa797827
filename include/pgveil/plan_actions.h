/* Per-plan column actions: ties each column of a row plan to its rule
 * (through the database's catalog resolution) and to the action the
 * session's purpose gets. Built once per plan, never per row.
 * Pure: no I/O, no globals. */
#ifndef PGVEIL_PLAN_ACTIONS_H
#define PGVEIL_PLAN_ACTIONS_H

#include "pgveil/catalog.h"
#include "pgveil/mask.h"
#include "pgveil/reldir.h"
#include "pgveil/row_plan.h"
#include "pgveil/row_rewrite.h"
#include "pgveil/rules.h"

/* One column of a result: where it comes from and how it arrives. */
typedef struct {
  uint32_t table_oid;
  int16_t attnum;
  uint32_t type_oid;
  int32_t typmod;
  int16_t format;
} pv_result_col_t;

/* Builds the actions of ncols result columns under purpose (index or
 * PV_PURPOSE_NONE) in the database resolved by cat; a column of a view
 * over a protected column (dir, may be NULL) gets the base column's
 * action; key is the purpose's
 * mask key (NULL when the rules use no hash). One allocation holding
 * everything; free with pv_plan_actions_free. An action that does not fit
 * the column's type as it arrives becomes withhold (never clear).
 * Returns PV_OK with *out (nacted may be 0), or PV_ENOMEM. */
PV_WARN_UNUSED int pv_plan_actions_build(const pv_result_col_t *cols,
                                         uint16_t ncols,
                                         const pv_catalog_t *cat,
                                         const pv_reldir_t *dir, int purpose,
                                         const pv_mask_key_t *key,
                                         pv_row_actions_t **out);

/* The same for a row plan's columns. */
PV_WARN_UNUSED int pv_plan_actions_for_plan(const pv_plan_t *plan,
                                            const pv_catalog_t *cat,
                                            const pv_reldir_t *dir, int purpose,
                                            const pv_mask_key_t *key,
                                            pv_row_actions_t **out);

void pv_plan_actions_free(pv_row_actions_t *ra);

#endif
