/* Rewriting of COPY ... TO STDOUT data in text and CSV format, one row per
 * CopyData message (as PostgreSQL's backend sends it), under the same
 * per-column actions as DataRow rewriting. Pure: no I/O, no globals, no
 * allocation (the caller provides the buffers). */
#ifndef PGVEIL_COPY_REWRITE_H
#define PGVEIL_COPY_REWRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgveil/errors.h"
#include "pgveil/row_rewrite.h"

#define PV_COPY_NULL_MAX 64

/* The COPY options that shape the data. */
typedef struct {
  bool csv;    /* FORMAT csv; else text */
  bool header; /* CSV/text HEADER: the first row is column names */
  char delim;  /* '\t' text, ',' csv */
  char quote;  /* csv: '"' */
  char escape; /* csv: defaults to quote */
  char null_str[PV_COPY_NULL_MAX + 1]; /* "\\N" text, "" csv */
} pv_copy_opts_t;

/* Defaults of PostgreSQL for text (csv=false) or CSV. */
void pv_copy_opts_default(pv_copy_opts_t *f, bool csv);

/* Rewrites one row row[0..len) (including its line end) into out[0..cap)
 * as the payload of a CopyData message (no message header). Values of
 * acted-on columns are unescaped, passed to pv_mask_apply in text format,
 * and escaped again; NULL stays NULL; a failed action yields NULL.
 * consent as for pv_rewrite_datarow. Returns the bytes written, PV_ELIMIT
 * when cap is too small (OUT: *needed), or PV_EPROTO when the row does not
 * have ra->ncols fields or is not valid COPY data. tmp[0..tmpcap) is work
 * space for one unescaped field; tmpcap >= len always suffices. */
PV_WARN_UNUSED int pv_copy_rewrite_row(const pv_row_actions_t *ra,
                                       const uint8_t *consent,
                                       const pv_copy_opts_t *f,
                                       const uint8_t *row, size_t len,
                                       uint8_t *out, size_t cap, size_t *needed,
                                       uint8_t *tmp, size_t tmpcap);

/* Extracts field i of a COPY row, unescaped, into tmp (OUT: *vlen, or
 * *is_null). For the consent subject. Returns PV_OK or PV_EPROTO. */
PV_WARN_UNUSED int pv_copy_field(const pv_copy_opts_t *f, const uint8_t *row,
                                 size_t len, uint16_t i, uint8_t *tmp,
                                 size_t tmpcap, size_t *vlen, bool *is_null);

#endif
