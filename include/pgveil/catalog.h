/* Catalog resolution: the rules' tables and columns tied to one database's
 * (table OID, attnum, type OID, typmod), with the type-fit check of every
 * action and the O(1) lookups the row planner makes. Pure: no I/O, no
 * globals; proxy/control.c runs the query and feeds its rows in here.
 *
 * Table OIDs differ per database, so there is one pv_catalog_t per database
 * name. Lifetime: a pv_catalog_t points into the pv_rules_t it was built
 * from (rule columns and tables), so it must not outlive those rules; the
 * policy snapshot (pgveil/policy.h) keeps both alive together. Immutable
 * once built: any number of threads may read it. */
#ifndef PGVEIL_CATALOG_H
#define PGVEIL_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgveil/errors.h"
#include "pgveil/rules.h"

#define PV_CATALOG_DBNAME_MAX 63 /* NAMEDATALEN-1 */

/* The resolution query (control.c runs it on a connection whose search_path
 * is ''; every relation and function in it is schema-qualified). Parameters:
 * $1 text[] of schemas, $2 text[] of table names (pv_catalog_query_params),
 * element i being rules->tables[i], and the consent table last when the
 * rules name one. One row per live attribute (attnum > 0) of every named
 * relation and of every relation inheriting from it (partitions), columns:
 *   0 idx      int4  index into the arrays
 *   1 relid    oid
 *   2 child    bool  true for an inheriting relation / partition
 *   3 attname  name  NULL for a relation without columns
 *   4 attnum   int2
 *   5 typid    oid   base type (domains resolved, as RowDescription sends)
 *   6 typmod   int4  base typmod
 *   7 typname  text  format_type(typid, typmod), for messages
 * A named relation that does not exist yields no row. */
extern const char PV_CATALOG_QUERY[];
#define PV_CATALOG_QUERY_NCOLS 8

/* One row of the resolution query. Strings are borrowed for the duration
 * of pv_catalog_build only. */
typedef struct {
  uint32_t idx;
  uint32_t relid;
  bool child;
  const char *attname; /* NULL: relation without columns */
  int16_t attnum;
  uint32_t type_oid;
  int32_t typmod;
  const char *type_name;
} pv_catalog_row_t;

/* A protected column of one relation in one database. */
typedef struct {
  uint32_t table_oid;
  int16_t attnum;
  uint32_t type_oid; /* base type */
  int32_t typmod;
  const pv_rules_column_t *rule;
  const pv_rules_table_t *table;
  int16_t subject_attnum; /* attnum of the table's subject column here */
} pv_catalog_col_t;

/* A protected relation (a rules table, or a partition / child of one). */
typedef struct {
  uint32_t table_oid;
  const pv_rules_table_t *table;
  int16_t subject_attnum;
  uint32_t subject_type_oid;
  int32_t subject_typmod;
  bool child; /* reached through pg_inherits */
} pv_catalog_rel_t;

typedef struct pv_catalog pv_catalog_t;

/* Writes the query's two array parameters as PostgreSQL text[] literals
 * ('{"public","crm"}') into schemas[0..cap) and tables[0..cap), NUL
 * terminated. Returns PV_OK or PV_ELIMIT when cap is too small (4 * the
 * bytes of all names + 8 per table always suffices; see
 * pv_catalog_query_params_size). */
PV_WARN_UNUSED int pv_catalog_query_params(const pv_rules_t *rules,
                                           char *schemas, char *tables,
                                           size_t cap);
size_t pv_catalog_query_params_size(const pv_rules_t *rules);

/* XXH3 of the rows' content (order as given): equal fingerprints mean an
 * unchanged resolution; the periodic check compares them. */
uint64_t pv_catalog_rows_fingerprint(const pv_catalog_row_t *rows,
                                     size_t nrows);

/* Builds the resolution of database `dbname` from the query's rows. Checks
 * that every rules table, its subject column and each rule column exists
 * (and the consent table and its columns, when configured), and that
 * every action written for a column fits its type (pv_mask_fits), for
 * its default, every purpose and every `otherwise`.
 * On success returns PV_OK with *out set (free with pv_catalog_free) and
 * *errs NULL. On failure returns PV_ENOENT (something missing or a
 * misfit) or PV_ENOMEM, *out NULL, and *errs the list of every problem, each
 * "rulesfile:line:col: message" (free with pv_rules_errors_free; NULL
 * only when even that allocation failed). max_errors bounds the messages
 * kept; the rest are counted in (*errs)->omitted. */
PV_WARN_UNUSED int pv_catalog_build(const pv_rules_t *rules, const char *dbname,
                                    const pv_catalog_row_t *rows, size_t nrows,
                                    size_t max_errors, pv_catalog_t **out,
                                    pv_rules_errors_t **errs);

void pv_catalog_free(pv_catalog_t *cat);

/* The protected column (table_oid, attnum), or NULL when the rules do not
 * protect it. O(1): open addressing on XXH3. */
const pv_catalog_col_t *pv_catalog_column(const pv_catalog_t *cat,
                                          uint32_t table_oid, int16_t attnum);

/* The protected column schema.table.column (folded names as in pg_class)
 * of the relation the rules name (not a partition), or NULL. O(columns):
 * for plan building (COPY, view mapping), not per row. */
const pv_catalog_col_t *pv_catalog_column_by_name(const pv_catalog_t *cat,
                                                  const char *schema,
                                                  const char *table,
                                                  const char *column);

/* The relation schema.table the rules name (not a partition), or NULL. */
const pv_catalog_rel_t *pv_catalog_relation_by_name(const pv_catalog_t *cat,
                                                    const char *schema,
                                                    const char *table);

/* The protected relation table_oid, or NULL. */
const pv_catalog_rel_t *pv_catalog_relation(const pv_catalog_t *cat,
                                            uint32_t table_oid);

const pv_rules_t *pv_catalog_rules(const pv_catalog_t *cat); /* built from */
const char *pv_catalog_dbname(const pv_catalog_t *cat);
uint64_t pv_catalog_fingerprint(const pv_catalog_t *cat); /* of its rows */
size_t pv_catalog_ncolumns(const pv_catalog_t *cat);
size_t pv_catalog_nrelations(const pv_catalog_t *cat);

/* The i-th protected relation (0 <= i < pv_catalog_nrelations), in no
 * particular order; NULL past the end. For the relation directory
 * (pgveil/reldir.h). */
const pv_catalog_rel_t *pv_catalog_relation_at(const pv_catalog_t *cat,
                                               size_t i);

#endif
