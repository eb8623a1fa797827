/* Internals shared by the guard's files (sql_guard.c decisions and
 * statements, sql_resolve.c names and expressions, sql_funcs.c constant
 * lists, sql_prescan.c). Pure: no I/O, no globals. */
#ifndef PGVEIL_SQL_GUARD_INTERNAL_H
#define PGVEIL_SQL_GUARD_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include "pgveil/sql_guard.h"

/* ---- Arena: chunked bump allocator; freed in one call ------------------- */
typedef struct garena_chunk {
  struct garena_chunk *next;
  size_t used, cap;
  _Alignas(16) unsigned char data[];
} garena_chunk_t;

typedef struct {
  garena_chunk_t *head;
} garena_t;

void *ga_alloc(garena_t *a, size_t n); /* zeroed; NULL on OOM */
char *ga_strdup(garena_t *a, const char *s);
void ga_free(garena_t *a);

/* ---- Analysis model ------------------------------------------------------ */

/* A protected base column (taint source). */
typedef struct {
  const char *schema, *table, *column;
  const pv_rules_decision_t *dec;
} gprot_t;

/* What a column of a FROM item or a subquery output carries. */
typedef struct {
  const char *name;                  /* column name as seen by the query */
  const char *schema, *table, *base; /* base column when plain, else NULL */
  const gprot_t *prot;               /* protected source, or NULL */
  bool plain;                        /* a plain reference to `base` */
  bool no_origin;                    /* through a set op / recursive CTE */
} gcol_t;

typedef struct gitem {
  const char *refname; /* alias or relation name; NULL: not nameable */
  const char *schema;  /* relation items without alias: for s.t.c refs */
  gcol_t *cols;
  size_t ncols;
  bool opaque; /* columns unknown: unmatched names resolve here, clean */
} gitem_t;

typedef struct gcte {
  struct gcte *next;
  const char *name;
  gcol_t *cols;
  size_t ncols;
  bool opaque;
} gcte_t;

typedef struct gscope {
  struct gscope *parent;
  gitem_t **top; /* FROM items, for unqualified names and `*` */
  size_t ntop, captop;
  gitem_t **named; /* every nameable item, for qualified names */
  size_t nnamed, capnamed;
  gcte_t *ctes; /* WITH of this query level */
  /* output list of this level, for ORDER BY name/ordinal */
  gcol_t *out;
  const char *const *outnames;
  size_t nout;
} gscope_t;

typedef enum {
  U_OUTPUT = 0, /* top-level output column */
  U_EXPR,       /* inside an expression */
  U_PRED,       /* predicate or ordering */
  U_DISCARD,    /* value not used (EXISTS target list) */
} guse_t;

typedef struct {
  const pv_guard_input_t *in;
  garena_t *res;  /* result arena */
  garena_t *work; /* freed when analysis returns */
  const char *purpose_name;
  bool restricted;
  /* current statement */
  pv_guard_stmt_t *st;
  bool stop; /* refused (message set) */
  bool hard; /* refusal holds even for unrestricted sessions */
  unsigned max_depth, max_view_depth;
  bool view_top;        /* next g_select is a view body's top level */
  bool discard_targets; /* next g_select is an EXISTS sub-query */
  bool clause_fixed;    /* keep `clause` for nested expressions */
  bool st_outcols_inexact;
  int err;        /* PV_ENOMEM or callback error: whole analysis fails */
  unsigned depth; /* recursion */
  unsigned view_depth;
  bool taint_only;    /* view body target list: taint instead of refuse */
  const char *clause; /* for messages */
  const char *const *search_path; /* may change after SET search_path */
  size_t nsearch_path;
  /* touched columns, deduplicated (work arena) */
  const gprot_t **touched;
  size_t ntouched, captouched;
} gctx_t;

/* sql_guard.c */
void g_refuse(gctx_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void g_refuse_col(gctx_t *c, const gprot_t *p, const char *why);
void g_refuse_unknown(gctx_t *c, const char *what);
void g_touch(gctx_t *c, const gprot_t *p);
bool g_ok(const gctx_t *c); /* !stop && !err */
int g_analyze_stmt_node(gctx_t *c, const PgQuery__Node *n, gscope_t *parent,
                        gcol_t **out, size_t *nout);

/* sql_resolve.c */
/* Analyses a SELECT (or set operation) under `parent` (for correlated
 * references); output columns into *out (work arena). */
void g_select(gctx_t *c, const PgQuery__SelectStmt *s, gscope_t *parent,
              gcol_t **out, size_t *nout, const char ***names);
/* Analyses an expression used as `use`; returns its column info (derived
 * unless a plain reference). */
gcol_t g_expr(gctx_t *c, gscope_t *sc, const PgQuery__Node *n, guse_t use);
/* g_expr with c->clause set to `clause` (names it in refusals), restored
 * after. */
gcol_t g_expr_clause(gctx_t *c, gscope_t *sc, const PgQuery__Node *n,
                     guse_t use, const char *clause);
/* Applies a use to a column (refuses as needed). */
void g_use_col(gctx_t *c, const gcol_t *col, guse_t use);
/* Adds a FROM item (RangeVar, subselect, join, function...) to sc. */
gitem_t *g_from_item(gctx_t *c, gscope_t *sc, const PgQuery__Node *n);
gitem_t *g_relation(gctx_t *c, const PgQuery__RangeVar *rv, const char *alias,
                    gscope_t *sc);
void g_scope_add(gctx_t *c, gscope_t *sc, gitem_t *it, bool top);
/* Expands a target list (handles `*`), appending to out. */
void g_target_list(gctx_t *c, gscope_t *sc, PgQuery__Node **tl, size_t n,
                   guse_t use, gcol_t **out, size_t *nout, const char ***names);
void g_with(gctx_t *c, gscope_t *sc, const PgQuery__WithClause *w);
const char *g_str(const PgQuery__Node *n); /* String node value or NULL */
bool g_empty(const char *s);

/* sql_funcs.c */
bool g_func_safe_name(const char *name); /* on the built-in safe list */
bool g_func_reads_sql(const char *name); /* never safe (runs SQL etc.) */
bool g_op_safe(const char *op);
bool g_rel_denied(const char *name); /* pg_stats, pg_statistic, ... */
bool g_prescan_keyword(const char *lower, size_t len);  /* forces a parse */
bool g_prescan_paren_ok(const char *lower, size_t len); /* `word (` ok */

#endif
