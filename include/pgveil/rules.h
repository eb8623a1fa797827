/* The rules model: the DBA's rules file (rules/README.md) loaded, validated
 * and frozen into one immutable object, with the lookups the session, the
 * guard and the catalog checker need. Pure: no globals; the only I/O is
 * pv_rules_load_file reading the file it is given.
 *
 * Lifetime: a pv_rules_t owns every string and array reachable from it (one
 * chunked arena) and is freed with one pv_rules_free(). Nothing in it is
 * ever written after pv_rules_load_* returns, so any number of threads may
 * read it at once; a reload builds a new one (DESIGN.md §1). */
#ifndef PGVEIL_RULES_H
#define PGVEIL_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgveil/action.h"
#include "pgveil/errors.h"

/* ---- Limits ------------------------------------------------------------
 * Defaults used by pv_rules_load_file / pv_rules_load_buffer; pass a
 * pv_rules_limits_t to pv_rules_load_buffer_limits to change them. */
#define PV_RULES_MAX_FILE_BYTES (4u << 20) /* 4 MiB */
#define PV_RULES_MAX_PURPOSES 64
#define PV_RULES_MAX_ROLES 1024 /* per purpose, and in purpose_by_role */
#define PV_RULES_MAX_TABLES 1024
#define PV_RULES_MAX_COLUMNS 16384  /* in all tables together */
#define PV_RULES_MAX_FUNCTIONS 1024 /* allow_functions entries */
#define PV_RULES_MAX_ERRORS 100     /* messages kept; the rest are counted */
#define PV_RULES_MAX_NODES 200000   /* YAML nodes (scalars, maps, lists) */
#define PV_RULES_MAX_DEPTH 32       /* YAML nesting */
#define PV_RULES_NAME_MAX 63        /* identifier bytes, as NAMEDATALEN-1 */

typedef struct {
  size_t max_file_bytes;
  size_t max_purposes;
  size_t max_roles;
  size_t max_tables;
  size_t max_columns;
  size_t max_functions;
  size_t max_errors;
  size_t max_nodes;
  size_t max_depth;
} pv_rules_limits_t;

/* The defaults above as a struct. */
pv_rules_limits_t pv_rules_limits_default(void);

/* ---- Model (read-only; owned by the pv_rules_t) ------------------------ */

/* Purpose indexes: >= 0 is an index into rules->purposes. */
#define PV_PURPOSE_NONE (-1)    /* no purpose: the `default` actions */
#define PV_PURPOSE_UNKNOWN (-2) /* a name the rules do not declare */

typedef enum {
  PV_CONSENT_OPT_IN = 0, /* consent only where a row says granted = true */
  PV_CONSENT_OPT_OUT,    /* consent unless a row says granted = false */
} pv_consent_mode_t;

typedef enum {
  PV_EXPLAIN_NONE = 0, /* rewrite silently */
  PV_EXPLAIN_NOTICE,   /* tell the client which columns were rewritten */
} pv_explain_t;

typedef struct {
  const char *name;         /* [a-z][a-z0-9_]*, at most 63 bytes */
  const char *const *roles; /* roles that may declare it, folded */
  size_t nroles;
  pv_consent_mode_t consent;
  pv_explain_t explain;
  uint32_t line; /* 1-based position in the rules file */
} pv_rules_purpose_t;

/* defaults.purpose_by_role: the purpose of a session that declares none. */
typedef struct {
  const char *role;
  int purpose; /* index, or PV_PURPOSE_NONE when written as `none` */
  uint32_t line;
} pv_rules_role_default_t;

typedef struct {
  bool configured; /* false: no consent table; no column requires consent */
  const char *schema, *table; /* identifiers, folded */
  const char *subject_column, *purpose_column, *granted_column;
  uint64_t max_staleness_ms;   /* older consent set counts as no consent */
  uint64_t resync_interval_ms; /* periodic full reload, default 60 s */
  const char *notify_channel;  /* LISTEN channel, default "pgveil_consent" */
  uint32_t line;
} pv_rules_consent_t;

typedef struct {
  const char *schema; /* NULL when written unqualified: any schema */
  const char *name;
} pv_rules_function_t;

/* What a column shows under one purpose. */
typedef struct {
  pv_action_t action;    /* applies unless consent_required and not given */
  bool consent_required; /* the subject's consent for the session purpose */
  pv_action_t otherwise; /* applies when consent is required and not given;
                            withhold unless the file says otherwise */
  /* Predicates (WHERE/JOIN/ORDER BY/GROUP BY...) on the column are allowed:
   * the file says `filter: allow`, or the column is shown in clear
   * unconditionally (action clear and no consent condition). */
  bool filter_allow;
  uint32_t line, col; /* where it was written; 0 for the implied default */
} pv_rules_decision_t;

typedef struct {
  int purpose; /* index into rules->purposes */
  pv_rules_decision_t d;
} pv_rules_entry_t;

struct pv_rules_table;

typedef struct {
  const char *name; /* folded identifier */
  const struct pv_rules_table *table;
  pv_rules_decision_t dflt;        /* `default`, or withhold when not written */
  const pv_rules_entry_t *entries; /* per named purpose, few */
  size_t nentries;
  uint32_t line, col;
} pv_rules_column_t;

typedef struct pv_rules_table {
  const char *schema, *name;        /* folded identifiers */
  const char *subject;              /* column identifying the data subject */
  const pv_rules_column_t *columns; /* sorted by name */
  size_t ncolumns;
  uint32_t line, col;
} pv_rules_table_t;

typedef struct pv_rules {
  uint64_t fingerprint; /* XXH3-64 of the file bytes, for metrics/logs */
  const char *source;   /* the name given to the loader (file path) */
  size_t nbytes;        /* size of the file */
  const pv_rules_purpose_t *purposes; /* in file order; index = purpose id */
  size_t npurposes;
  const pv_rules_role_default_t *role_defaults; /* sorted by role */
  size_t nrole_defaults;
  pv_rules_consent_t consent;
  const pv_rules_function_t *functions;
  size_t nfunctions;
  const pv_rules_table_t *tables; /* sorted by (schema, name) */
  size_t ntables;
  size_t ncolumns; /* in all tables */
  void *arena;     /* private */
} pv_rules_t;

/* ---- Errors ------------------------------------------------------------ */

/* Every problem found in one load, each "file:line:col: message", in file
 * order. Owner: the caller, freed with pv_rules_errors_free. */
typedef struct {
  size_t count;   /* messages in msgs */
  size_t omitted; /* further problems not kept (max_errors reached) */
  char **msgs;
} pv_rules_errors_t;

void pv_rules_errors_free(pv_rules_errors_t *errs);

/* ---- Loading ------------------------------------------------------------ */

/* Loads and validates rules. On success returns 0, sets *out (free with
 * pv_rules_free) and *errs = NULL. On failure returns PV_ESYNTAX (invalid
 * rules), PV_EIO (unreadable file), PV_ETOOBIG (file over the limit) or
 * PV_ENOMEM, sets *out = NULL and *errs to the list of every problem found
 * (NULL only if even that allocation failed). `name` is used in messages. */
PV_WARN_UNUSED int pv_rules_load_buffer(const char *buf, size_t len,
                                        const char *name, pv_rules_t **out,
                                        pv_rules_errors_t **errs);
PV_WARN_UNUSED int pv_rules_load_buffer_limits(const char *buf, size_t len,
                                               const char *name,
                                               const pv_rules_limits_t *lim,
                                               pv_rules_t **out,
                                               pv_rules_errors_t **errs);
PV_WARN_UNUSED int pv_rules_load_file(const char *path, pv_rules_t **out,
                                      pv_rules_errors_t **errs);

void pv_rules_free(pv_rules_t *rules);

/* ---- Lookups (setup path: per session/statement/plan, not per row) ----- */

/* Index of the purpose `name` (ASCII case-insensitive), PV_PURPOSE_NONE for
 * "none", PV_PURPOSE_UNKNOWN otherwise. */
int pv_rules_purpose_find(const pv_rules_t *rules, const char *name);

/* True when `role` (exact, as in the startup packet) may declare purpose
 * index `purpose`. Anyone may declare PV_PURPOSE_NONE; nobody may declare
 * PV_PURPOSE_UNKNOWN. */
bool pv_rules_role_may_declare(const pv_rules_t *rules, const char *role,
                               int purpose);

/* The purpose of a session of `role` that declares none: its
 * defaults.purpose_by_role entry, else PV_PURPOSE_NONE. */
int pv_rules_default_purpose(const pv_rules_t *rules, const char *role);

/* The table schema.name (exact, already-folded names as in pg_class), or
 * NULL when the rules do not protect it. */
const pv_rules_table_t *pv_rules_table_find(const pv_rules_t *rules,
                                            const char *schema,
                                            const char *name);

/* The column `name` of a protected table, or NULL (unprotected column). */
const pv_rules_column_t *pv_rules_column_find(const pv_rules_table_t *table,
                                              const char *name);

/* The decision for a column under purpose index `purpose`: its entry for
 * that purpose, else its default (also for NONE and UNKNOWN). Never NULL. */
const pv_rules_decision_t *pv_rules_decide(const pv_rules_column_t *column,
                                           int purpose);
/* Same, by purpose name (unknown names get the default). */
const pv_rules_decision_t *pv_rules_decide_name(const pv_rules_t *rules,
                                                const pv_rules_column_t *column,
                                                const char *purpose);

/* True when the decision always shows the value unchanged (clear, and no
 * consent condition that could fall back to something else). */
bool pv_rules_decision_is_clear(const pv_rules_decision_t *d);

/* True when allow_functions names `name` (bare entries match any schema;
 * schema may be NULL for an unqualified call). */
bool pv_rules_function_allowed(const pv_rules_t *rules, const char *schema,
                               const char *name);

/* Writes a one-line human summary for `pgveil --check`, e.g. "rules OK:
 * 3 purposes, 2 tables, 9 columns, consent from public.consent (max
 * staleness 5000 ms), fingerprint 0123456789abcdef". Returns the length
 * snprintf would have written (output truncated to cap-1, NUL-terminated),
 * or PV_EINVAL. */
int pv_rules_check_summary(const pv_rules_t *rules, char *out, size_t cap);

/* Name of a consent mode ("opt_in", "opt_out") / explain mode. */
const char *pv_rules_consent_mode_name(pv_consent_mode_t m);

#endif
