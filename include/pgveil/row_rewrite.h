/* Rewriting of DataRow messages: walk the fields once, copy untouched
 * fields, replace acted-on ones, fix the lengths. Pure: no I/O, no globals,
 * no allocation (the caller provides the output buffer). */
#ifndef PGVEIL_ROW_REWRITE_H
#define PGVEIL_ROW_REWRITE_H

#include <stddef.h>
#include <stdint.h>

#include "pgveil/errors.h"
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

#endif
