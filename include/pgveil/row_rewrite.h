/* Rewriting of DataRow messages: walk the fields once, copy untouched
 * fields, replace acted-on ones, fix the lengths. Pure: no I/O, no globals,
 * no allocation (the caller provides the output buffer). */
#ifndef PGVEIL_ROW_REWRITE_H
#define PGVEIL_ROW_REWRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgveil/action.h"
#include "pgveil/errors.h"
#include "pgveil/mask.h"
#include "pgveil/pg_frame.h"
#include "pgveil/row_plan.h"

/* Test-only "tag" rewrite: every non-NULL field of a text (25) or varchar
 * (1043) column becomes "<column name>=<value>"; other fields are copied.
 * Writes a whole DataRow message (type and length included) into
 * out[0..cap). Returns the bytes written, PV_ELIMIT when cap is too small
 * (OUT: *needed is the size required), or PV_EPROTO when the row does not
 * match the plan. */
PV_WARN_UNUSED int pv_rewrite_tag_datarow(const pv_plan_t *plan,
                                          const pv_msg_t *m, uint8_t *out,
                                          size_t cap, size_t *needed);

/* What happens to one column of a plan. Owner: the pv_row_actions_t. */
typedef struct {
  const pv_action_t *action;    /* NULL: column left untouched */
  const pv_action_t *otherwise; /* consent-gated: used when the row's subject
                                   has not consented; NULL: not gated */
  const pv_mask_key_t *key;     /* for hash actions */
  const char *column_id;        /* pseudonym domain "schema.table.column" */
  uint32_t type_oid;
  int32_t typmod;
  int16_t format;
  int32_t subject_col; /* gated: row index of its table's subject, or -1
                          (no subject in the result: never consented) */
} pv_col_action_t;

/* The actions of a whole plan, built once per plan (never per row). */
typedef struct {
  uint16_t ncols;
  uint16_t nacted;       /* columns with an action other than clear */
  uint16_t ngated;       /* consent-gated columns */
  pv_col_action_t *cols; /* ncols entries */
} pv_row_actions_t;

/* Rewrites DataRow m under ra: untouched fields copied, acted-on fields
 * replaced via pv_mask_apply. For a gated column i, consent[i] != 0 selects
 * `action`, else `otherwise`; consent NULL means no consent for any column.
 * Any failure of an action yields NULL, never the clear value. Writes the whole
 * message into out[0..cap). Returns bytes written, PV_ELIMIT when cap is too
 * small (OUT: *needed), or PV_EPROTO when the row does not match the plan. */
PV_WARN_UNUSED int pv_rewrite_datarow(const pv_row_actions_t *ra,
                                      const uint8_t *consent, const pv_msg_t *m,
                                      uint8_t *out, size_t cap, size_t *needed);

/* Finds field i of DataRow m. OUT: *val, *len (-1 for NULL). Returns PV_OK
 * or PV_EPROTO. */
PV_WARN_UNUSED int pv_datarow_field(const pv_msg_t *m, uint16_t i,
                                    const uint8_t **val, int32_t *len);

#endif
