/* The guard's relation directory for one database: every protected relation
 * (a rules table, or a partition / child of one) with all its columns, and
 * every view or materialized view whose definition reads protected data,
 * with its output columns and definition. Pure: no I/O, no globals;
 * proxy/control.c runs PV_RELDIR_QUERY and feeds its rows in here.
 *
 * It answers the guard's catalog callback (pgveil/sql_guard.h,
 * pv_guard_lookup_fn) and gives the relation names for the guard's pre-scan.
 * Any relation it does not hold is UNKNOWN (the guard treats it as opaque
 * and unprotected).
 *
 * Materialized views: their rows are copies of protected data, but
 * RowDescription ties their columns to the matview's own OID, which no rule
 * names, so the row rewriter would pass them in clear. The directory
 * therefore returns a matview over protected data as PV_GUARD_REL_VIEW with
 * its definition, so the guard analyses it as if it were a view (plain
 * protected columns through it get their rules' decisions in the guard's
 * outcols). A matview the rules name explicitly is a protected relation and
 * is returned as PV_GUARD_REL_TABLE with its rules table.
 *
 * Views whose rewrite rule depends on a function outside pg_catalog (a
 * user or extension function, recorded in pg_depend) are held too: the
 * function may read protected data, so the guard must analyse the view
 * (and refuses the call unless the rules allow the function).
 *
 * Unqualified names: the session's real search_path may differ from the one
 * pgveil tracks (ALTER ROLE ... SET search_path, set_config() inside a
 * function), so the lookup searches every schema (docs/guard.md, "Relation
 * directory"):
 *  - no relation of that name in the directory: UNKNOWN;
 *  - exactly one: that one, whatever the search_path says;
 *  - several: a view whose definition is over the size limit makes the
 *    lookup fail (fail closed); else the one the given search_path picks
 *    (pg_temp, then pg_catalog unless listed, then the listed schemas), else
 *    the first by schema name. All of them are protected or read protected
 *    data, so an unprotected relation of the same name never wins.
 *
 * Lifetime: a pv_reldir_t points into the pv_rules_t its catalog was built
 * from (rules tables), so it must not outlive those rules; the policy
 * snapshot keeps them together. Immutable once built: any number of threads
 * may read it and call pv_reldir_lookup concurrently. */
#ifndef PGVEIL_RELDIR_H
#define PGVEIL_RELDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgveil/catalog.h"
#include "pgveil/errors.h"
#include "pgveil/sql_guard.h"

/* Defaults for pv_reldir_limits_t. */
#define PV_RELDIR_MAX_RELATIONS 100000u /* relations held */
/* bytes of one view definition */
#define PV_RELDIR_MAX_VIEWDEF ((size_t)256 * 1024)

typedef struct {
  size_t max_relations; /* more: pv_reldir_build fails with PV_ELIMIT */
  size_t max_viewdef;   /* longer definition: its lookups fail PV_ELIMIT */
} pv_reldir_limits_t;

pv_reldir_limits_t pv_reldir_limits_default(void);

/* The directory query (control.c runs it on a connection whose search_path
 * is '', so pg_get_viewdef qualifies every relation it names). Parameter:
 * $1 oid[] of the protected relations (pv_reldir_query_param). One row per
 * live column (attnum > 0) of each relation held, ordered by relid then
 * attnum; a relation without columns gives one row with NULL attname:
 *   0 relid    oid
 *   1 nspname  name
 *   2 relname  name
 *   3 relkind  "char"  'r','p','v','m','f'
 *   4 prot     bool    true: a protected relation ($1)
 *   5 attname  name    NULL for a relation without columns
 *   6 attnum   int2    NULL likewise
 *   7 viewdef  text    view/matview that is not protected: its definition,
 *                      on its first row only; NULL elsewhere */
extern const char PV_RELDIR_QUERY[];
#define PV_RELDIR_QUERY_NCOLS 8

/* One row of the directory query. Strings are borrowed for the duration of
 * pv_reldir_build only. */
typedef struct {
  uint32_t relid;
  const char *schema, *name;
  char relkind;
  bool prot;
  const char *attname; /* NULL: relation without columns */
  int16_t attnum;
  const char *viewdef; /* NULL unless a view's first row */
} pv_reldir_row_t;

typedef struct pv_reldir pv_reldir_t;

/* Writes $1, the protected relations of cat as an oid[] literal
 * ("{16384,16390}"), into buf[0..cap), NUL terminated. Returns PV_OK or
 * PV_ELIMIT; pv_reldir_query_param_size(cat) bytes always suffice. */
PV_WARN_UNUSED int pv_reldir_query_param(const pv_catalog_t *cat, char *buf,
                                         size_t cap);
size_t pv_reldir_query_param_size(const pv_catalog_t *cat);

/* XXH3 of the rows' content: equal fingerprints mean an unchanged
 * directory; the periodic check compares them. */
uint64_t pv_reldir_rows_fingerprint(const pv_reldir_row_t *rows, size_t nrows);

/* Builds the directory from the query's rows; cat gives each protected
 * relation's rules table (pv_catalog_relation). lim NULL: the defaults.
 * Returns PV_OK with *out set (free with pv_reldir_free); PV_ELIMIT when
 * more than lim->max_relations relations; PV_EINVAL for rows the query
 * cannot produce (a protected relid cat does not know, a relation's rows
 * not together, a duplicate name, an empty name); PV_ENOMEM. */
PV_WARN_UNUSED int pv_reldir_build(const pv_catalog_t *cat,
                                   const pv_reldir_row_t *rows, size_t nrows,
                                   const pv_reldir_limits_t *lim,
                                   pv_reldir_t **out);

void pv_reldir_free(pv_reldir_t *dir);

/* pv_guard_lookup_fn over the directory: ctx is a const pv_reldir_t *
 * (pv_policy_db_reldir()). Fills *out (pointers valid while the directory
 * lives) and returns 0; PV_ELIMIT when the answer is a view whose
 * definition exceeded max_viewdef; PV_EINVAL when ctx or name is NULL
 * (no directory: the guard fails closed). */
int pv_reldir_lookup(void *ctx, const char *schema, const char *name,
                     const char *const *search_path, size_t nsearch_path,
                     pv_guard_rel_t *out);

/* The protected base column that column attnum of view or matview relid
 * plainly passes through (RowDescription names the view, not the base
 * table), or NULL. O(log n); called when a plan is built, not per row. */
const pv_catalog_col_t *pv_reldir_alias(const pv_reldir_t *dir, uint32_t relid,
                                        int16_t attnum);

/* When column attnum of view relid plainly passes through the consent
 * subject column of a protected table: OUT that table and the subject's
 * attnum there, and true. */
bool pv_reldir_subject_alias(const pv_reldir_t *dir, uint32_t relid,
                             int16_t attnum, uint32_t *table_oid,
                             int16_t *subject_attnum);

/* The distinct bare names of every relation held (for
 * pv_guard_names_new), owned by dir. */
void pv_reldir_names(const pv_reldir_t *dir, const char *const **names,
                     size_t *n);

/* The pre-scan set built from those names, owned by dir; NULL for NULL. */
const pv_guard_names_t *pv_reldir_guard_names(const pv_reldir_t *dir);

size_t pv_reldir_nrelations(const pv_reldir_t *dir);
size_t pv_reldir_nviews(const pv_reldir_t *dir);        /* views and matviews */
uint64_t pv_reldir_fingerprint(const pv_reldir_t *dir); /* of its rows */

#endif
