/* The guard's SQL analysis (DESIGN.md §5): decides, per statement of a
 * client's SQL text, whether protected columns could leave other than as
 * plain output columns the row rewriter handles, and reports what the
 * session needs (SET/RESET/SHOW targets, COPY shape, output column origins,
 * protected columns touched). Pure: no I/O, no globals except constant
 * tables; everything it needs (rules, purpose, search_path, the catalog via
 * a callback) comes through arguments. Uses libpg_query (thread-safe).
 *
 * Decision model (docs/guard.md): a column is *protected* under a purpose
 * when its decision is not unconditionally clear. Protected columns may be
 * output as plain column references (through subqueries, CTEs, joins and
 * views); anywhere else (expressions, predicates, copies, whole-row use,
 * non-allowlisted functions...) the statement is refused with SQLSTATE
 * 42501. Predicates are allowed when the rules say `filter: allow`.
 * Anything the analyser does not understand is refused when the session is
 * restricted (at least one protected column under its purpose). */
#ifndef PGVEIL_SQL_GUARD_H
#define PGVEIL_SQL_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgveil/action.h"
#include "pgveil/errors.h"
#include "pgveil/rules.h"

/* ---- Catalog callback --------------------------------------------------- */

typedef enum {
  PV_GUARD_REL_UNKNOWN = 0, /* not found (or not visible): treated as opaque
                               and unprotected; the catalog must know every
                               protected table and every view over one */
  PV_GUARD_REL_TABLE,       /* table, materialized view, foreign table... */
  PV_GUARD_REL_VIEW,        /* plain view: analysed from its definition */
} pv_guard_rel_kind_t;

/* What the lookup callback fills in. Every pointer must stay valid until
 * pv_guard_analyze returns (the guard copies what it keeps). */
typedef struct {
  pv_guard_rel_kind_t kind;
  const char *schema, *name;  /* resolved names, as in pg_class */
  const char *const *columns; /* in attnum order, dropped columns left out;
                                 for a view: its output column names */
  size_t ncolumns;
  const pv_rules_table_t *rules_table; /* TABLE: pv_rules_table_find(), or
                                          NULL when no rule names it */
  const char *view_sql;                /* VIEW: its definition, "SELECT ..." */
} pv_guard_rel_t;

/* Resolves a relation reference as PostgreSQL would: `schema` is NULL for
 * an unqualified name (then search `search_path`, with pg_temp and
 * pg_catalog searched first unless listed). Names are as the parser folded
 * them (unquoted: lower case; quoted: exact). Returns 0 and fills *out
 * (kind UNKNOWN allowed), or a negative PV_E* (analysis then fails closed). */
typedef int (*pv_guard_lookup_fn)(void *ctx, const char *schema,
                                  const char *name,
                                  const char *const *search_path,
                                  size_t nsearch_path, pv_guard_rel_t *out);

/* ---- Input --------------------------------------------------------------- */

#define PV_GUARD_DEFAULT_VIEW_DEPTH 8        /* views within views */
#define PV_GUARD_DEFAULT_MAX_DEPTH 200       /* expression/query nesting */
#define PV_GUARD_DEFAULT_MAX_TEXT (1u << 20) /* bytes of SQL analysed */

typedef struct {
  const pv_rules_t *rules; /* required */
  int purpose;             /* index, PV_PURPOSE_NONE or PV_PURPOSE_UNKNOWN */
  const char *const *search_path; /* "$user" already expanded */
  size_t nsearch_path;
  pv_guard_lookup_fn lookup; /* required */
  void *lookup_ctx;
  unsigned max_view_depth; /* 0: PV_GUARD_DEFAULT_VIEW_DEPTH */
  unsigned max_depth;      /* 0: PV_GUARD_DEFAULT_MAX_DEPTH */
  size_t max_text;         /* 0: PV_GUARD_DEFAULT_MAX_TEXT */
  /* A protected column reaching the output through UNION ALL or a recursive
   * CTE arrives with table OID 0 in RowDescription. When the session builds
   * its row plan from pv_guard_stmt_t.outcols for such statements it may
   * set this; otherwise (default) they are refused. */
  bool trust_outcols;
  /* Analyse as if no column were protected: only to learn where output
   * columns come from (the relation directory maps view columns to their
   * base columns this way). Never for a client's statement. */
  bool map_only;
} pv_guard_input_t;

/* ---- Result -------------------------------------------------------------- */

typedef enum {
  PV_GUARD_ALLOW = 0,
  PV_GUARD_REFUSE,
} pv_guard_verdict_t;

typedef enum {
  PV_GSTMT_OTHER = 0, /* utility statement with nothing to report */
  PV_GSTMT_SELECT,    /* SELECT, VALUES, TABLE */
  PV_GSTMT_INSERT,
  PV_GSTMT_UPDATE,
  PV_GSTMT_DELETE,
  PV_GSTMT_MERGE,
  PV_GSTMT_COPY,
  PV_GSTMT_SET,     /* SET / SET LOCAL / SET ... TO DEFAULT / set_config() */
  PV_GSTMT_RESET,   /* RESET name; RESET ALL has set_name "all" */
  PV_GSTMT_SHOW,    /* SHOW name; SHOW ALL has set_name "all" */
  PV_GSTMT_DISCARD, /* DISCARD ALL|PLANS|SEQUENCES|TEMP (set_name) */
  PV_GSTMT_PREPARE, /* name in `name` */
  PV_GSTMT_EXECUTE, /* name in `name` */
  PV_GSTMT_DEALLOCATE,
  PV_GSTMT_DECLARE, /* cursor name in `name`, binary_cursor */
  PV_GSTMT_FETCH,   /* FETCH/MOVE, cursor name in `name` */
  PV_GSTMT_CLOSE,
  PV_GSTMT_EXPLAIN,
  PV_GSTMT_TRANSACTION,
  PV_GSTMT_LISTEN,
  PV_GSTMT_NOTIFY,
  PV_GSTMT_DDL, /* CREATE/ALTER/DROP/... */
  PV_GSTMT_EMPTY,
} pv_guard_kind_t;

typedef enum {
  PV_COPY_TEXT = 0,
  PV_COPY_CSV,
  PV_COPY_BINARY,
} pv_copy_format_t;

/* One output column (SELECT list, COPY (query), RETURNING). */
typedef struct {
  const char *name;                    /* output column name, or "?column?" */
  const char *schema, *table, *column; /* base table column when the value
                                          is a plain reference to it (through
                                          views, subqueries, CTEs, joins);
                                          all NULL when derived */
  bool protected_col; /* the base column is protected under the purpose */
  bool no_origin;     /* RowDescription will carry table OID 0 (set op,
                         recursive CTE): the plan must come from here */
} pv_guard_outcol_t;

/* A protected column the statement touches, for the audit log. */
typedef struct {
  const char *schema, *table, *column;
  pv_action_t action;    /* the decision's action under the purpose */
  bool consent_required; /* then `otherwise` applies without consent */
  pv_action_t otherwise;
} pv_guard_touch_t;

typedef struct {
  const char *schema, *table; /* COPY table: resolved names; NULL for a query */
  const char *const *columns; /* COPY table: in order (all when none given) */
  size_t ncolumns;
  bool is_query; /* COPY (query) TO: see the statement's outcols */
  bool is_from;  /* direction: true FROM (client to server) */
  bool is_stdio; /* STDIN/STDOUT; false: a file or PROGRAM */
  pv_copy_format_t format;
  const char *delimiter, *null_str, *quote, *escape; /* NULL: default */
  bool header;
} pv_guard_copy_t;

typedef struct {
  pv_guard_kind_t kind;
  pv_guard_verdict_t verdict;
  char sqlstate[6];     /* "42501" when refused by policy, "42601" syntax */
  const char *message;  /* refusal message; NULL when allowed */
  int location, length; /* byte range of the statement in the SQL text
                           (length 0: to the end) */
  /* SET/RESET/SHOW/DISCARD: set_name folded ("pgveil.purpose",
   * "search_path", "all", ...); set_value the value as text (list items
   * joined by ", ", NULL for DEFAULT/RESET); set_local for SET LOCAL and
   * set_config(..., true). */
  const char *set_name, *set_value;
  bool set_local;
  const char *name;   /* PREPARE/EXECUTE/DEALLOCATE/DECLARE/FETCH/CLOSE */
  bool binary_cursor; /* DECLARE ... BINARY CURSOR */
  bool has_copy;
  pv_guard_copy_t copy;
  pv_guard_outcol_t *outcols; /* SELECT, COPY (query), DECLARE, RETURNING */
  size_t noutcols;
  bool outcols_inexact; /* `*` over a relation whose columns are unknown */
  bool touches_protected;
  pv_guard_touch_t *touched; /* deduplicated */
  size_t ntouched;
} pv_guard_stmt_t;

/* Owner: the caller (e.g. a per-worker cache), freed with
 * pv_guard_result_free. Self-contained: no pointer into the SQL text, the
 * rules or the catalog, so it may outlive them. */
typedef struct pv_guard_result {
  pv_guard_stmt_t *stmts;
  size_t nstmts;
  bool refused;           /* some statement was refused */
  bool touches_protected; /* some statement touched protected data */
  bool restricted;        /* the purpose has protected columns */
  const pv_guard_stmt_t *first_refused; /* NULL when none */
  void *arena;                          /* private */
} pv_guard_result_t;

/* Analyses NUL-terminated `sql`. On success returns 0 with *out set (parse
 * errors and refusals are results, not errors). Returns PV_EINVAL for bad
 * arguments, PV_ENOMEM, or the lookup callback's error; then *out is NULL
 * and the caller must refuse the query. */
PV_WARN_UNUSED int pv_guard_analyze(const pv_guard_input_t *in, const char *sql,
                                    pv_guard_result_t **out);

void pv_guard_result_free(pv_guard_result_t *res);

/* True when some column under `purpose` is protected (not clear). */
bool pv_guard_purpose_restricted(const pv_rules_t *rules, int purpose);

/* Cache key: XXH3-64 of the text, purpose, rules fingerprint, a catalog
 * version the caller bumps when the catalog snapshot changes, and the
 * search_path. */
uint64_t pv_guard_cache_key(const char *sql, size_t len, int purpose,
                            uint64_t rules_fingerprint,
                            uint64_t catalog_version,
                            const char *const *search_path,
                            size_t nsearch_path);

/* ---- Pre-scan ------------------------------------------------------------ */

/* The set of relation names (tables and views that read protected tables)
 * whose mention makes a statement worth parsing. Built once per policy.
 * Owner: the caller, freed with pv_guard_names_free. */
typedef struct pv_guard_names pv_guard_names_t;

/* Names are matched ASCII case-insensitively; NULL entries are skipped. */
PV_WARN_UNUSED int pv_guard_names_new(const char *const *names, size_t n,
                                      pv_guard_names_t **out);
void pv_guard_names_free(pv_guard_names_t *names);

/* Fast, conservative: returns false only when `sql` certainly cannot touch
 * protected data nor change the session (no protected name anywhere, even
 * in strings or comments; no U& escapes; no SET/RESET/SHOW/DISCARD/DO/COPY/
 * CREATE/ALTER/PREPARE/EXECUTE/DECLARE/EXPLAIN/CALL/NOTIFY/...; every
 * `name(` a known-safe built-in). Then the statement may skip
 * pv_guard_analyze. Only valid when pv_guard_search_path_trusted() holds. */
bool pv_guard_prescan(const pv_guard_names_t *names, const char *sql,
                      size_t len);

/* False when the search_path lists some schema before pg_catalog (then an
 * unqualified built-in name could resolve to someone else's function). */
bool pv_guard_search_path_trusted(const char *const *search_path, size_t n);

#endif
