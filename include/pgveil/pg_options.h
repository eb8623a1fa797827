/* The `options` startup parameter ("-c name=value --name=value ...", with
 * backslash-escaped spaces, as PostgreSQL's pg_split_opts reads it): finding
 * a setting in it. Pure: no I/O, no globals. */
#ifndef PGVEIL_PG_OPTIONS_H
#define PGVEIL_PG_OPTIONS_H

#include <stddef.h>

#include "pgveil/errors.h"

/* Finds the last setting of `name` (case-insensitive, as GUC names are) in
 * options; writes its value into out[0..cap). Returns 1 when found, 0 when
 * not, PV_ELIMIT when the value does not fit, PV_ESYNTAX for a `-c` without
 * an argument. */
PV_WARN_UNUSED int pv_options_find(const char *options, const char *name,
                                   char *out, size_t cap);

#endif
