/* The guard's decisions per statement: parsing with libpg_query, statement
 * kinds (SET/RESET/SHOW/COPY/DDL/...), refusals, the result object and its
 * cache key. Pure: no I/O, no globals; names and expressions are resolved
 * in sql_resolve.c, constant lists live in sql_funcs.c. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "sql_guard_internal.h"

#define NK(x) PG_QUERY__NODE__NODE_##x
#define CURSOR_OPT_BINARY 0x0001

/* ---- Arena --------------------------------------------------------------- */

void *ga_alloc(garena_t *a, size_t n) {
  n = (n + 15) & ~(size_t)15;
  if (n == 0)
    n = 16;
  garena_chunk_t *h = a->head;
  if (!h || h->cap - h->used < n) {
    size_t cap = n > 16384 ? n : 16384;
    h = malloc(sizeof *h + cap);
    if (!h)
      return NULL;
    h->next = a->head;
    h->used = 0;
    h->cap = cap;
    a->head = h;
  }
  void *p = h->data + h->used;
  h->used += n;
  memset(p, 0, n);
  return p;
}

char *ga_strdup(garena_t *a, const char *s) {
  if (!s)
    return NULL;
  size_t n = strlen(s);
  char *d = ga_alloc(a, n + 1);
  if (d)
    memcpy(d, s, n + 1);
  return d;
}

void ga_free(garena_t *a) {
  for (garena_chunk_t *h = a->head, *next; h; h = next) {
    next = h->next;
    free(h);
  }
  a->head = NULL;
}

/* ---- Refusals and touched columns ---------------------------------------- */

bool g_ok(const gctx_t *c) { return !c->stop && !c->err; }

static void refuse_v(gctx_t *c, const char *sqlstate, const char *fmt,
                     va_list ap) {
  if (c->stop || c->err)
    return;
  char buf[512];
  vsnprintf(buf, sizeof buf, fmt, ap);
  c->stop = true;
  c->st->verdict = PV_GUARD_REFUSE;
  memcpy(c->st->sqlstate, sqlstate, 6);
  c->st->message = ga_strdup(c->res, buf);
  if (!c->st->message)
    c->err = PV_ENOMEM;
}

void g_refuse(gctx_t *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  refuse_v(c, "42501", fmt, ap);
  va_end(ap);
}

void g_refuse_col(gctx_t *c, const gprot_t *p, const char *why) {
  g_refuse(c, "pgveil: column %s.%s may not be used in %s under purpose \"%s\"",
           p->table, p->column, why, c->purpose_name);
}

void g_refuse_unknown(gctx_t *c, const char *what) {
  g_refuse(c,
           "pgveil: statement refused under purpose \"%s\": %s is not "
           "supported by the guard",
           c->purpose_name, what);
}

void g_touch(gctx_t *c, const gprot_t *p) {
  for (size_t i = 0; i < c->ntouched; i++)
    if (c->touched[i] == p || (!strcmp(c->touched[i]->schema, p->schema) &&
                               !strcmp(c->touched[i]->table, p->table) &&
                               !strcmp(c->touched[i]->column, p->column)))
      return;
  if (c->ntouched == c->captouched) {
    size_t nc = c->captouched ? c->captouched * 2 : 8;
    const gprot_t **nt = ga_alloc(c->work, nc * sizeof(const gprot_t *));
    if (!nt) {
      c->err = PV_ENOMEM;
      return;
    }
    if (c->ntouched)
      memcpy(nt, c->touched, c->ntouched * sizeof(const gprot_t *));
    c->touched = nt;
    c->captouched = nc;
  }
  c->touched[c->ntouched++] = p;
}

bool pv_guard_purpose_restricted(const pv_rules_t *rules, int purpose) {
  if (!rules)
    return true;
  for (size_t t = 0; t < rules->ntables; t++)
    for (size_t k = 0; k < rules->tables[t].ncolumns; k++)
      if (!pv_rules_decision_is_clear(
              pv_rules_decide(&rules->tables[t].columns[k], purpose)))
        return true;
  return false;
}

/* ---- Helpers ------------------------------------------------------------- */

static char *lower_dup(gctx_t *c, const char *s) {
  char *d = ga_strdup(c->res, s ? s : "");
  if (!d) {
    c->err = PV_ENOMEM;
    return NULL;
  }
  for (char *p = d; *p; p++)
    if (*p >= 'A' && *p <= 'Z')
      *p = (char)(*p - 'A' + 'a');
  return d;
}

/* Text of a constant (SET values, COPY options); NULL when not constant. */
static const char *const_str(gctx_t *c, const PgQuery__Node *n) {
  char buf[32];
  if (!n)
    return NULL;
  switch (n->node_case) {
  case NK(STRING):
    return n->string->sval;
  case NK(INTEGER):
    snprintf(buf, sizeof buf, "%d", n->integer->ival);
    return ga_strdup(c->work, buf);
  case NK(BOOLEAN):
    return n->boolean->boolval ? "true" : "false";
  case NK(TYPE_CAST):
    return const_str(c, n->type_cast->arg);
  case NK(A_CONST): {
    const PgQuery__AConst *k = n->a_const;
    switch (k->val_case) {
    case PG_QUERY__A__CONST__VAL_SVAL:
      return k->sval ? k->sval->sval : NULL;
    case PG_QUERY__A__CONST__VAL_IVAL:
      snprintf(buf, sizeof buf, "%d", k->ival ? k->ival->ival : 0);
      return ga_strdup(c->work, buf);
    case PG_QUERY__A__CONST__VAL_FVAL:
      return k->fval ? k->fval->fval : NULL;
    case PG_QUERY__A__CONST__VAL_BOOLVAL:
      return k->boolval && k->boolval->boolval ? "true" : "false";
    default:
      return NULL;
    }
  }
  default:
    return NULL;
  }
}

static bool truthy(const char *s) {
  return !s || !strcmp(s, "true") || !strcmp(s, "on") || !strcmp(s, "1") ||
         !strcmp(s, "yes") || !strcmp(s, "match");
}

static bool def_bool(gctx_t *c, const PgQuery__DefElem *d) {
  const char *s = d->arg ? const_str(c, d->arg) : NULL;
  if (d->arg && !s)
    return true; /* unknown: assume the option is on (stricter) */
  return truthy(s);
}

static void copy_outcols(gctx_t *c, const gcol_t *out, size_t n) {
  pv_guard_stmt_t *st = c->st;
  st->outcols = n ? ga_alloc(c->res, n * sizeof *st->outcols) : NULL;
  if (n && !st->outcols) {
    c->err = PV_ENOMEM;
    return;
  }
  st->noutcols = n;
  for (size_t i = 0; i < n; i++) {
    pv_guard_outcol_t *o = &st->outcols[i];
    o->name = ga_strdup(c->res, out[i].name ? out[i].name : "?column?");
    if (out[i].plain && out[i].base) {
      o->schema = ga_strdup(c->res, out[i].schema);
      o->table = ga_strdup(c->res, out[i].table);
      o->column = ga_strdup(c->res, out[i].base);
    }
    o->protected_col = out[i].prot != NULL;
    o->no_origin = out[i].no_origin;
  }
  st->outcols_inexact = c->st_outcols_inexact;
}

/* Refuses when any output column carries protected data (copies). */
static void no_protected_out(gctx_t *c, const gcol_t *out, size_t n,
                             const char *what) {
  for (size_t i = 0; i < n && g_ok(c); i++)
    if (out[i].prot) {
      g_touch(c, out[i].prot);
      g_refuse_col(c, out[i].prot, what);
    }
}

/* ---- DML ----------------------------------------------------------------- */

static gscope_t *new_scope(gctx_t *c, gscope_t *parent) {
  gscope_t *s = ga_alloc(c->work, sizeof *s);
  if (!s)
    c->err = PV_ENOMEM;
  else
    s->parent = parent;
  return s;
}

static gitem_t *target_rel(gctx_t *c, gscope_t *sc,
                           const PgQuery__RangeVar *rv) {
  if (!rv) {
    g_refuse_unknown(c, "statement without target");
    return NULL;
  }
  const char *alias =
      rv->alias && !g_empty(rv->alias->aliasname) ? rv->alias->aliasname : NULL;
  gitem_t *it = g_relation(c, rv, alias, sc);
  g_scope_add(c, sc, it, true);
  return it;
}

static void returning(gctx_t *c, gscope_t *sc, PgQuery__Node **rl, size_t n,
                      gcol_t **out, size_t *nout) {
  const char **names = NULL;
  const char *saved = c->clause;
  bool fixed = c->clause_fixed;
  c->clause = "a RETURNING list";
  c->clause_fixed = true;
  g_target_list(c, sc, rl, n, U_EXPR, out, nout, &names);
  c->clause = saved;
  c->clause_fixed = fixed;
}

/* Writing a protected column (not clear for the purpose) is refused unless
 * the rules allow predicates on it (filter: allow): a unique or exclusion
 * constraint's error would tell whether another row holds the written
 * value, an oracle on data the caller may not see. name NULL: every column
 * of the target (an INSERT without a column list). */
static void check_written(gctx_t *c, const gitem_t *t, const char *name) {
  for (size_t i = 0; t && i < t->ncols && g_ok(c); i++) {
    const gcol_t *col = &t->cols[i];
    if (name && strcmp(col->name, name) != 0)
      continue;
    if (col->prot && !col->prot->dec->filter_allow)
      g_refuse(c,
               "pgveil: column %s.%s may not be written under purpose \"%s\" "
               "(a constraint error could reveal other rows' values; the "
               "rules can allow it with filter: allow)",
               col->prot->table, col->prot->column, c->purpose_name);
    if (name)
      return;
  }
}

static void check_written_targets(gctx_t *c, const gitem_t *t,
                                  PgQuery__Node **tl, size_t n) {
  for (size_t i = 0; i < n && g_ok(c); i++)
    if (tl[i]->node_case == NK(RES_TARGET) && tl[i]->res_target->name)
      check_written(c, t, tl[i]->res_target->name);
}

static void set_targets(gctx_t *c, gscope_t *sc, PgQuery__Node **tl, size_t n,
                        const char *clause) {
  const char *saved = c->clause;
  bool fixed = c->clause_fixed;
  c->clause = clause;
  c->clause_fixed = true;
  for (size_t i = 0; i < n && g_ok(c); i++) {
    if (tl[i]->node_case != NK(RES_TARGET)) {
      g_refuse_unknown(c, "SET target");
      break;
    }
    const PgQuery__ResTarget *rt = tl[i]->res_target;
    for (size_t k = 0; k < rt->n_indirection && g_ok(c); k++)
      if (rt->indirection[k]->node_case == NK(A_INDICES)) {
        (void)g_expr(c, sc, rt->indirection[k]->a_indices->lidx, U_EXPR);
        (void)g_expr(c, sc, rt->indirection[k]->a_indices->uidx, U_EXPR);
      }
    (void)g_expr(c, sc, rt->val, U_EXPR);
  }
  c->clause = saved;
  c->clause_fixed = fixed;
}

static void insert_stmt(gctx_t *c, const PgQuery__InsertStmt *s,
                        gscope_t *parent, gcol_t **out, size_t *nout) {
  gscope_t *sc = new_scope(c, parent);
  if (!sc)
    return;
  if (s->with_clause)
    g_with(c, sc, s->with_clause);
  if (s->select_stmt) {
    if (s->select_stmt->node_case != NK(SELECT_STMT)) {
      g_refuse_unknown(c, "INSERT source");
      return;
    }
    gcol_t *src = NULL;
    size_t nsrc = 0;
    const char **names = NULL;
    g_select(c, s->select_stmt->select_stmt, sc, &src, &nsrc, &names);
    no_protected_out(c, src, nsrc, "an INSERT (it would copy the value)");
  }
  gscope_t *tsc = new_scope(c, sc);
  if (!tsc || !g_ok(c))
    return;
  gitem_t *t = target_rel(c, tsc, s->relation);
  if (!t || !g_ok(c))
    return;
  if (s->n_cols)
    check_written_targets(c, t, s->cols, s->n_cols);
  else
    check_written(c, t, NULL);
  if (s->on_conflict_clause) {
    const PgQuery__OnConflictClause *oc = s->on_conflict_clause;
    gitem_t *ex = ga_alloc(c->work, sizeof *ex);
    if (!ex) {
      c->err = PV_ENOMEM;
      return;
    }
    *ex = *t;
    ex->refname = "excluded";
    ex->schema = NULL;
    g_scope_add(c, tsc, ex, false);
    if (oc->infer) {
      const char *saved = c->clause;
      c->clause = "an ON CONFLICT target";
      for (size_t i = 0; i < oc->infer->n_index_elems && g_ok(c); i++) {
        const PgQuery__Node *ie = oc->infer->index_elems[i];
        if (ie->node_case == NK(INDEX_ELEM) && ie->index_elem->expr)
          (void)g_expr(c, tsc, ie->index_elem->expr, U_PRED);
      }
      if (oc->infer->where_clause)
        (void)g_expr(c, tsc, oc->infer->where_clause, U_PRED);
      c->clause = saved;
    }
    check_written_targets(c, t, oc->target_list, oc->n_target_list);
    set_targets(c, tsc, oc->target_list, oc->n_target_list,
                "an INSERT ... ON CONFLICT DO UPDATE");
    if (oc->where_clause)
      (void)g_expr_clause(c, tsc, oc->where_clause, U_PRED,
                          "an ON CONFLICT ... WHERE");
  }
  returning(c, tsc, s->returning_list, s->n_returning_list, out, nout);
}

static void update_stmt(gctx_t *c, const PgQuery__UpdateStmt *s,
                        gscope_t *parent, gcol_t **out, size_t *nout) {
  gscope_t *sc = new_scope(c, parent);
  if (!sc)
    return;
  if (s->with_clause)
    g_with(c, sc, s->with_clause);
  gitem_t *t = target_rel(c, sc, s->relation);
  if (!t)
    return;
  check_written_targets(c, t, s->target_list, s->n_target_list);
  for (size_t i = 0; i < s->n_from_clause && g_ok(c); i++)
    (void)g_from_item(c, sc, s->from_clause[i]);
  set_targets(c, sc, s->target_list, s->n_target_list,
              "an UPDATE ... SET (it would copy the value)");
  if (s->where_clause && g_ok(c))
    (void)g_expr_clause(c, sc, s->where_clause, U_PRED, "a WHERE clause");
  returning(c, sc, s->returning_list, s->n_returning_list, out, nout);
}

static void delete_stmt(gctx_t *c, const PgQuery__DeleteStmt *s,
                        gscope_t *parent, gcol_t **out, size_t *nout) {
  gscope_t *sc = new_scope(c, parent);
  if (!sc)
    return;
  if (s->with_clause)
    g_with(c, sc, s->with_clause);
  if (!target_rel(c, sc, s->relation))
    return;
  for (size_t i = 0; i < s->n_using_clause && g_ok(c); i++)
    (void)g_from_item(c, sc, s->using_clause[i]);
  if (s->where_clause && g_ok(c))
    (void)g_expr_clause(c, sc, s->where_clause, U_PRED, "a WHERE clause");
  returning(c, sc, s->returning_list, s->n_returning_list, out, nout);
}

int g_analyze_stmt_node(gctx_t *c, const PgQuery__Node *n, gscope_t *parent,
                        gcol_t **out, size_t *nout) {
  *out = NULL;
  *nout = 0;
  const char **names = NULL;
  if (!n) {
    g_refuse_unknown(c, "empty statement");
    return -1;
  }
  switch (n->node_case) {
  case NK(SELECT_STMT):
    g_select(c, n->select_stmt, parent, out, nout, &names);
    /* set operations merge their branches only here */
    for (size_t i = 0; i < *nout && g_ok(c); i++)
      g_use_col(c, &(*out)[i], U_OUTPUT);
    if (n->select_stmt->into_clause)
      no_protected_out(c, *out, *nout, "SELECT INTO (it would copy the value)");
    return PV_GSTMT_SELECT;
  case NK(INSERT_STMT):
    insert_stmt(c, n->insert_stmt, parent, out, nout);
    return PV_GSTMT_INSERT;
  case NK(UPDATE_STMT):
    update_stmt(c, n->update_stmt, parent, out, nout);
    return PV_GSTMT_UPDATE;
  case NK(DELETE_STMT):
    delete_stmt(c, n->delete_stmt, parent, out, nout);
    return PV_GSTMT_DELETE;
  default:
    g_refuse_unknown(c, "this kind of statement here");
    return -1;
  }
}

/* ---- SET / RESET / SHOW -------------------------------------------------- */

static void apply_search_path(gctx_t *c, const PgQuery__VariableSetStmt *v) {
  const char **sp = ga_alloc(c->work, (v->n_args + 1) * sizeof *sp);
  if (!sp) {
    c->err = PV_ENOMEM;
    return;
  }
  size_t n = 0;
  for (size_t i = 0; i < v->n_args; i++) {
    const char *s = const_str(c, v->args[i]);
    if (s)
      sp[n++] = s;
  }
  c->search_path = sp;
  c->nsearch_path = n;
}

static void variable_set(gctx_t *c, const PgQuery__VariableSetStmt *v) {
  pv_guard_stmt_t *st = c->st;
  st->set_local = v->is_local;
  switch (v->kind) {
  case PG_QUERY__VARIABLE_SET_KIND__VAR_RESET:
    st->kind = PV_GSTMT_RESET;
    break;
  case PG_QUERY__VARIABLE_SET_KIND__VAR_RESET_ALL:
    st->kind = PV_GSTMT_RESET;
    st->set_name = "all";
    return;
  default:
    st->kind = PV_GSTMT_SET;
    break;
  }
  st->set_name = lower_dup(c, v->name);
  if (!st->set_name)
    return;
  if (v->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_SET_VALUE) {
    size_t cap = 1;
    for (size_t i = 0; i < v->n_args; i++) {
      const char *s = const_str(c, v->args[i]);
      cap += (s ? strlen(s) : 1) + 2;
    }
    char *val = ga_alloc(c->res, cap);
    if (!val) {
      c->err = PV_ENOMEM;
      return;
    }
    for (size_t i = 0; i < v->n_args; i++) {
      const char *s = const_str(c, v->args[i]);
      if (i)
        strcat(val, ", ");
      strcat(val, s ? s : "?");
    }
    st->set_value = val;
  }
  const char *name = st->set_name;
  if (!strncmp(name, "pgveil.", 7) && strcmp(name, "pgveil.purpose") != 0) {
    c->hard = true;
    g_refuse(c, "pgveil: unknown pgveil setting \"%s\"", name);
    return;
  }
  if (!strcmp(name, "standard_conforming_strings") &&
      v->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_SET_VALUE &&
      !truthy(st->set_value ? st->set_value : "off")) {
    /* the guard parses with standard strings: turning them off would let
     * the server read a statement differently from the guard */
    g_refuse(c,
             "pgveil: standard_conforming_strings must stay on under "
             "purpose \"%s\"",
             c->purpose_name);
    return;
  }
  if (!strcmp(name, "search_path") &&
      v->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_SET_VALUE)
    apply_search_path(c, v);
}

/* ---- COPY ---------------------------------------------------------------- */

static void copy_options(gctx_t *c, const PgQuery__CopyStmt *s,
                         pv_guard_copy_t *cp) {
  for (size_t i = 0; i < s->n_options; i++) {
    const PgQuery__Node *o = s->options[i];
    if (o->node_case != NK(DEF_ELEM))
      continue;
    const PgQuery__DefElem *d = o->def_elem;
    const char *v = d->arg ? const_str(c, d->arg) : NULL;
    if (!strcmp(d->defname, "format")) {
      if (v && !strcmp(v, "csv"))
        cp->format = PV_COPY_CSV;
      else if (!v || strcmp(v, "text") != 0)
        cp->format = PV_COPY_BINARY; /* unknown: treat as the strictest */
    } else if (!strcmp(d->defname, "delimiter")) {
      cp->delimiter = ga_strdup(c->res, v);
    } else if (!strcmp(d->defname, "null")) {
      cp->null_str = ga_strdup(c->res, v);
    } else if (!strcmp(d->defname, "quote")) {
      cp->quote = ga_strdup(c->res, v);
    } else if (!strcmp(d->defname, "escape")) {
      cp->escape = ga_strdup(c->res, v);
    } else if (!strcmp(d->defname, "header")) {
      cp->header = def_bool(c, d);
    }
  }
}

static void copy_stmt(gctx_t *c, const PgQuery__CopyStmt *s) {
  pv_guard_stmt_t *st = c->st;
  pv_guard_copy_t *cp = &st->copy;
  st->kind = PV_GSTMT_COPY;
  st->has_copy = true;
  cp->is_from = s->is_from;
  cp->is_stdio = g_empty(s->filename) && !s->is_program;
  copy_options(c, s, cp);
  if (!cp->is_stdio)
    g_refuse(c,
             "pgveil: COPY to or from a server file or program is not "
             "allowed under purpose \"%s\"",
             c->purpose_name);
  const char *why = cp->format == PV_COPY_BINARY
                        ? "a binary COPY (it cannot be rewritten)"
                        : "COPY";
  if (s->query) {
    gcol_t *out = NULL;
    size_t nout = 0;
    cp->is_query = true;
    (void)g_analyze_stmt_node(c, s->query, NULL, &out, &nout);
    if (cp->format == PV_COPY_BINARY)
      no_protected_out(c, out, nout, why);
    if (g_ok(c))
      copy_outcols(c, out, nout);
    return;
  }
  gscope_t *sc = new_scope(c, NULL);
  if (!sc || !s->relation)
    return;
  const PgQuery__RangeVar *rv = s->relation;
  pv_guard_rel_t rel = {0};
  int rc = c->in->lookup(c->in->lookup_ctx,
                         g_empty(rv->schemaname) ? NULL : rv->schemaname,
                         rv->relname, c->search_path, c->nsearch_path, &rel);
  if (rc < 0) {
    c->err = rc;
    return;
  }
  if (rel.kind == PV_GUARD_REL_VIEW) {
    g_refuse_unknown(c, "COPY of a view");
    return;
  }
  gitem_t *it = g_relation(c, rv, NULL, sc);
  if (!it || !g_ok(c))
    return;
  cp->schema = ga_strdup(c->res, rel.kind ? rel.schema : rv->schemaname);
  cp->table = ga_strdup(c->res, rel.kind ? rel.name : rv->relname);
  size_t n = s->n_attlist ? s->n_attlist : it->ncols;
  const char **cols = n ? ga_alloc(c->res, n * sizeof *cols) : NULL;
  if (n && !cols) {
    c->err = PV_ENOMEM;
    return;
  }
  for (size_t i = 0; i < n && g_ok(c); i++) {
    const char *name = s->n_attlist ? g_str(s->attlist[i]) : it->cols[i].name;
    cols[i] = ga_strdup(c->res, name ? name : "");
    const gcol_t *col = NULL;
    for (size_t k = 0; k < it->ncols; k++)
      if (name && !strcmp(it->cols[k].name, name))
        col = &it->cols[k];
    if (!col && !it->opaque)
      g_refuse(c, "pgveil: COPY names unknown column \"%s\"", name ? name : "");
    if (col && col->prot) {
      g_touch(c, col->prot);
      if (cp->format == PV_COPY_BINARY && !cp->is_from)
        g_refuse_col(c, col->prot, why);
    }
  }
  cp->columns = cols;
  cp->ncolumns = n;
}

/* ---- Other statements ---------------------------------------------------- */

/* Refused when the relation is protected (ALTER, CREATE INDEX, RENAME...). */
static void not_on_protected(gctx_t *c, const PgQuery__RangeVar *rv,
                             const char *what) {
  if (!rv || g_empty(rv->relname))
    return;
  pv_guard_rel_t rel = {0};
  int rc = c->in->lookup(c->in->lookup_ctx,
                         g_empty(rv->schemaname) ? NULL : rv->schemaname,
                         rv->relname, c->search_path, c->nsearch_path, &rel);
  if (rc < 0) {
    c->err = rc;
    return;
  }
  bool prot = rel.kind == PV_GUARD_REL_VIEW;
  if (rel.kind == PV_GUARD_REL_TABLE && rel.rules_table)
    prot = true;
  if (prot)
    g_refuse(c, "pgveil: %s on %s is not allowed under purpose \"%s\"", what,
             rv->relname, c->purpose_name);
}

/* Expressions in DDL (defaults, CHECK constraints): any column resolves
 * clean, functions must be on the safe list. */
static void ddl_expr(gctx_t *c, const PgQuery__Node *e) {
  if (!e)
    return;
  gscope_t *sc = new_scope(c, NULL);
  gitem_t *it = ga_alloc(c->work, sizeof *it);
  if (!sc || !it) {
    c->err = PV_ENOMEM;
    return;
  }
  it->opaque = true;
  g_scope_add(c, sc, it, true);
  (void)g_expr(c, sc, e, U_DISCARD);
}

static void constraints(gctx_t *c, PgQuery__Node **v, size_t n) {
  for (size_t i = 0; i < n && g_ok(c); i++)
    if (v[i]->node_case == NK(CONSTRAINT)) {
      ddl_expr(c, v[i]->constraint->raw_expr);
      if (v[i]->constraint->where_clause)
        ddl_expr(c, v[i]->constraint->where_clause);
    }
}

static void create_stmt(gctx_t *c, const PgQuery__CreateStmt *s) {
  for (size_t i = 0; i < s->n_table_elts && g_ok(c); i++) {
    const PgQuery__Node *e = s->table_elts[i];
    if (e->node_case == NK(COLUMN_DEF))
      constraints(c, e->column_def->constraints, e->column_def->n_constraints);
    else if (e->node_case == NK(CONSTRAINT))
      constraints(c, (PgQuery__Node **)&s->table_elts[i], 1);
  }
  if (s->n_inh_relations || s->partbound)
    for (size_t i = 0; i < s->n_inh_relations && g_ok(c); i++)
      if (s->inh_relations[i]->node_case == NK(RANGE_VAR))
        not_on_protected(c, s->inh_relations[i]->range_var,
                         "CREATE TABLE ... INHERITS/PARTITION OF");
}

static void alter_table(gctx_t *c, const PgQuery__AlterTableStmt *s) {
  not_on_protected(c, s->relation, "ALTER");
  for (size_t i = 0; i < s->n_cmds && g_ok(c); i++) {
    if (s->cmds[i]->node_case != NK(ALTER_TABLE_CMD))
      continue;
    const PgQuery__Node *d = s->cmds[i]->alter_table_cmd->def;
    if (!d)
      continue;
    if (d->node_case == NK(COLUMN_DEF))
      constraints(c, d->column_def->constraints, d->column_def->n_constraints);
    else if (d->node_case == NK(CONSTRAINT))
      constraints(c, (PgQuery__Node **)&s->cmds[i]->alter_table_cmd->def, 1);
    else
      ddl_expr(c, d);
  }
}

static void explain_stmt(gctx_t *c, const PgQuery__ExplainStmt *s) {
  bool deep = false;
  for (size_t i = 0; i < s->n_options; i++) {
    const PgQuery__Node *o = s->options[i];
    if (o->node_case != NK(DEF_ELEM))
      continue;
    const char *nm = o->def_elem->defname;
    if ((!strcmp(nm, "analyze") || !strcmp(nm, "verbose")) &&
        def_bool(c, o->def_elem))
      deep = true;
  }
  gcol_t *out = NULL;
  size_t nout = 0;
  (void)g_analyze_stmt_node(c, s->query, NULL, &out, &nout);
  if (deep && g_ok(c) && c->ntouched)
    g_refuse_col(c, c->touched[0],
                 "EXPLAIN ANALYZE/VERBOSE (plans show values and counts)");
}

static void view_stmt(gctx_t *c, const PgQuery__ViewStmt *s) {
  gcol_t *out = NULL;
  size_t nout = 0;
  if (!s->query || s->query->node_case != NK(SELECT_STMT)) {
    g_refuse_unknown(c, "view query");
    return;
  }
  (void)g_analyze_stmt_node(c, s->query, NULL, &out, &nout);
  no_protected_out(c, out, nout, "CREATE VIEW (it would expose the value)");
}

static void ctas_stmt(gctx_t *c, const PgQuery__CreateTableAsStmt *s) {
  gcol_t *out = NULL;
  size_t nout = 0;
  if (!s->query || s->query->node_case != NK(SELECT_STMT)) {
    g_refuse_unknown(c, "CREATE TABLE AS source");
    return;
  }
  (void)g_analyze_stmt_node(c, s->query, NULL, &out, &nout);
  no_protected_out(c, out, nout,
                   "CREATE TABLE AS / MATERIALIZED VIEW (it would copy the "
                   "value)");
}

static void cursor_stmt(gctx_t *c, const PgQuery__DeclareCursorStmt *s) {
  gcol_t *out = NULL;
  size_t nout = 0;
  c->st->kind = PV_GSTMT_DECLARE;
  c->st->name = ga_strdup(c->res, s->portalname);
  c->st->binary_cursor = (s->options & CURSOR_OPT_BINARY) != 0;
  (void)g_analyze_stmt_node(c, s->query, NULL, &out, &nout);
  if (c->st->binary_cursor)
    no_protected_out(c, out, nout, "a BINARY cursor (it cannot be rewritten)");
  if (g_ok(c))
    copy_outcols(c, out, nout);
}

static void prepare_stmt(gctx_t *c, const PgQuery__PrepareStmt *s) {
  gcol_t *out = NULL;
  size_t nout = 0;
  c->st->kind = PV_GSTMT_PREPARE;
  c->st->name = ga_strdup(c->res, s->name);
  (void)g_analyze_stmt_node(c, s->query, NULL, &out, &nout);
  if (g_ok(c))
    copy_outcols(c, out, nout);
}

static void refuse_restricted(gctx_t *c, const char *what) {
  g_refuse(c, "pgveil: %s is not allowed under purpose \"%s\"", what,
           c->purpose_name);
}

/* Plain data statements: the guard's main case. */
static bool data_stmt(gctx_t *c, const PgQuery__Node *n) {
  gcol_t *out = NULL;
  size_t nout = 0;
  switch (n->node_case) {
  case NK(SELECT_STMT):
  case NK(INSERT_STMT):
  case NK(UPDATE_STMT):
  case NK(DELETE_STMT): {
    int kind = g_analyze_stmt_node(c, n, NULL, &out, &nout);
    if (kind >= 0 && c->st->kind == PV_GSTMT_OTHER)
      c->st->kind = (pv_guard_kind_t)kind;
    if (n->node_case == NK(SELECT_STMT) && n->select_stmt->into_clause)
      c->st->kind = PV_GSTMT_DDL;
    if (g_ok(c))
      copy_outcols(c, out, nout);
    return true;
  }
  default:
    return false;
  }
}

static void utility_stmt(gctx_t *c, const PgQuery__Node *n) {
  pv_guard_stmt_t *st = c->st;
  st->kind = PV_GSTMT_DDL;
  switch (n->node_case) {
  case NK(COPY_STMT):
    copy_stmt(c, n->copy_stmt);
    break;
  case NK(VARIABLE_SET_STMT):
    variable_set(c, n->variable_set_stmt);
    break;
  case NK(VARIABLE_SHOW_STMT):
    st->kind = PV_GSTMT_SHOW;
    st->set_name = lower_dup(c, n->variable_show_stmt->name);
    break;
  case NK(DISCARD_STMT): {
    static const char *const modes[] = {"?", "all", "plans", "sequences",
                                        "temp"};
    unsigned m = (unsigned)n->discard_stmt->target;
    st->kind = PV_GSTMT_DISCARD;
    st->set_name = m < 5 ? modes[m] : "?";
    break;
  }
  case NK(TRANSACTION_STMT):
    st->kind = PV_GSTMT_TRANSACTION;
    break;
  case NK(LISTEN_STMT):
  case NK(UNLISTEN_STMT):
    st->kind = PV_GSTMT_LISTEN;
    break;
  case NK(NOTIFY_STMT):
    st->kind = PV_GSTMT_NOTIFY;
    break;
  case NK(EXPLAIN_STMT):
    st->kind = PV_GSTMT_EXPLAIN;
    explain_stmt(c, n->explain_stmt);
    break;
  case NK(PREPARE_STMT):
    prepare_stmt(c, n->prepare_stmt);
    break;
  case NK(EXECUTE_STMT): {
    st->kind = PV_GSTMT_EXECUTE;
    st->name = ga_strdup(c->res, n->execute_stmt->name);
    gscope_t *sc = new_scope(c, NULL);
    for (size_t i = 0; sc && i < n->execute_stmt->n_params && g_ok(c); i++)
      (void)g_expr(c, sc, n->execute_stmt->params[i], U_EXPR);
    break;
  }
  case NK(DEALLOCATE_STMT):
    st->kind = PV_GSTMT_DEALLOCATE;
    st->name = ga_strdup(c->res, n->deallocate_stmt->name);
    break;
  case NK(DECLARE_CURSOR_STMT):
    cursor_stmt(c, n->declare_cursor_stmt);
    break;
  case NK(FETCH_STMT):
    st->kind = PV_GSTMT_FETCH;
    st->name = ga_strdup(c->res, n->fetch_stmt->portalname);
    break;
  case NK(CLOSE_PORTAL_STMT):
    st->kind = PV_GSTMT_CLOSE;
    st->name = ga_strdup(c->res, n->close_portal_stmt->portalname);
    break;
  case NK(VIEW_STMT):
    view_stmt(c, n->view_stmt);
    break;
  case NK(CREATE_TABLE_AS_STMT):
    ctas_stmt(c, n->create_table_as_stmt);
    break;
  case NK(CREATE_STMT):
    create_stmt(c, n->create_stmt);
    break;
  case NK(ALTER_TABLE_STMT):
    alter_table(c, n->alter_table_stmt);
    break;
  case NK(INDEX_STMT):
    not_on_protected(c, n->index_stmt->relation, "CREATE INDEX");
    break;
  case NK(RENAME_STMT):
    not_on_protected(c, n->rename_stmt->relation, "RENAME");
    break;
  case NK(ALTER_OBJECT_SCHEMA_STMT):
    not_on_protected(c, n->alter_object_schema_stmt->relation, "SET SCHEMA");
    break;
  case NK(CREATE_SCHEMA_STMT):
    if (n->create_schema_stmt->n_schema_elts)
      refuse_restricted(c, "CREATE SCHEMA with elements");
    break;
  case NK(CREATE_SEQ_STMT):
  case NK(ALTER_SEQ_STMT):
  case NK(DROP_STMT):
  case NK(TRUNCATE_STMT):
  case NK(COMMENT_STMT):
  case NK(GRANT_STMT):
  case NK(GRANT_ROLE_STMT):
  case NK(LOCK_STMT):
  case NK(VACUUM_STMT):
  case NK(CHECK_POINT_STMT):
  case NK(CONSTRAINTS_SET_STMT):
  case NK(REFRESH_MAT_VIEW_STMT):
  case NK(CREATE_ENUM_STMT):
  case NK(COMPOSITE_TYPE_STMT):
  case NK(CREATE_ROLE_STMT):
  case NK(DROP_ROLE_STMT):
  case NK(CREATEDB_STMT):
  case NK(DROPDB_STMT):
  case NK(CLUSTER_STMT):
  case NK(REINDEX_STMT):
    break;
  case NK(DO_STMT):
    refuse_restricted(c, "a DO block");
    break;
  case NK(CREATE_FUNCTION_STMT):
    refuse_restricted(c, "CREATE FUNCTION/PROCEDURE");
    break;
  case NK(CALL_STMT):
    refuse_restricted(c, "CALL");
    break;
  case NK(RULE_STMT):
    refuse_restricted(c, "CREATE RULE");
    break;
  case NK(CREATE_TRIG_STMT):
    refuse_restricted(c, "CREATE TRIGGER");
    break;
  case NK(MERGE_STMT):
    st->kind = PV_GSTMT_MERGE;
    refuse_restricted(c, "MERGE");
    break;
  case NK(LOAD_STMT):
    refuse_restricted(c, "LOAD");
    break;
  case NK(ALTER_SYSTEM_STMT):
  case NK(ALTER_ROLE_SET_STMT):
  case NK(ALTER_DATABASE_SET_STMT):
    refuse_restricted(c, "changing server or role settings");
    break;
  default:
    g_refuse_unknown(c, "this kind of statement");
    break;
  }
}

/* ---- Driver -------------------------------------------------------------- */

static int build_touched(gctx_t *c) {
  pv_guard_stmt_t *st = c->st;
  if (!c->ntouched)
    return 0;
  st->touched = ga_alloc(c->res, c->ntouched * sizeof *st->touched);
  if (!st->touched)
    return PV_ENOMEM;
  st->ntouched = c->ntouched;
  st->touches_protected = true;
  for (size_t i = 0; i < c->ntouched; i++) {
    const gprot_t *p = c->touched[i];
    pv_guard_touch_t *t = &st->touched[i];
    t->schema = ga_strdup(c->res, p->schema);
    t->table = ga_strdup(c->res, p->table);
    t->column = ga_strdup(c->res, p->column);
    t->action = p->dec->action;
    t->consent_required = p->dec->consent_required;
    t->otherwise = p->dec->otherwise;
    if (!t->schema || !t->table || !t->column)
      return PV_ENOMEM;
  }
  return 0;
}

static void analyze_one(gctx_t *c, const PgQuery__RawStmt *raw) {
  pv_guard_stmt_t *st = c->st;
  st->location = raw->stmt_location;
  st->length = raw->stmt_len;
  memcpy(st->sqlstate, "00000", 6);
  c->stop = c->hard = false;
  c->ntouched = 0;
  c->depth = 0;
  c->clause = NULL;
  c->clause_fixed = false;
  c->st_outcols_inexact = false;
  if (!raw->stmt) {
    st->kind = PV_GSTMT_EMPTY;
    return;
  }
  if (!data_stmt(c, raw->stmt))
    utility_stmt(c, raw->stmt);
}

static void parse_failed(gctx_t *c, pv_guard_result_t *r, const char *msg) {
  pv_guard_stmt_t *st = ga_alloc(c->res, sizeof *st);
  if (!st) {
    c->err = PV_ENOMEM;
    return;
  }
  r->stmts = st;
  r->nstmts = 1;
  memcpy(st->sqlstate, "00000", 6);
  if (!c->restricted)
    return;
  char buf[300];
  snprintf(buf, sizeof buf, "pgveil: could not analyse the statement: %.200s",
           msg ? msg : "unknown error");
  st->verdict = PV_GUARD_REFUSE;
  memcpy(st->sqlstate, msg ? "42601" : "42501", 6);
  st->message = ga_strdup(c->res, buf);
  r->refused = true;
  r->first_refused = st;
  if (!st->message)
    c->err = PV_ENOMEM;
}

static const char *purpose_label(const pv_rules_t *rules, int purpose) {
  if (purpose >= 0 && (size_t)purpose < rules->npurposes)
    return rules->purposes[purpose].name;
  return purpose == PV_PURPOSE_NONE ? "none" : "unknown";
}

static void analyze_all(gctx_t *c, pv_guard_result_t *r, const char *sql) {
  size_t len = strlen(sql);
  if (len > c->in->max_text && c->in->max_text) {
    parse_failed(c, r, NULL);
    return;
  }
  PgQueryProtobufParseResult pr = pg_query_parse_protobuf(sql);
  PgQuery__ParseResult *tree = NULL;
  if (pr.error) {
    parse_failed(c, r, pr.error->message);
    goto done;
  }
  tree = pg_query__parse_result__unpack(NULL, pr.parse_tree.len,
                                        (const uint8_t *)pr.parse_tree.data);
  if (!tree) {
    parse_failed(c, r, NULL);
    goto done;
  }
  r->stmts =
      tree->n_stmts ? ga_alloc(c->res, tree->n_stmts * sizeof *r->stmts) : NULL;
  if (tree->n_stmts && !r->stmts) {
    c->err = PV_ENOMEM;
    goto done;
  }
  r->nstmts = tree->n_stmts;
  for (size_t i = 0; i < tree->n_stmts && !c->err; i++) {
    c->st = &r->stmts[i];
    analyze_one(c, tree->stmts[i]);
    if (c->err)
      break;
    if (c->st->verdict == PV_GUARD_REFUSE && !c->restricted && !c->hard) {
      c->st->verdict = PV_GUARD_ALLOW; /* nothing to protect: advisory only */
      c->st->message = NULL;
      memcpy(c->st->sqlstate, "00000", 6);
    }
    c->err = c->err ? c->err : build_touched(c);
    if (c->st->verdict == PV_GUARD_REFUSE && !r->first_refused) {
      r->refused = true;
      r->first_refused = c->st;
    }
    r->touches_protected = r->touches_protected || c->st->touches_protected;
  }
done:
  if (tree)
    pg_query__parse_result__free_unpacked(tree, NULL);
  pg_query_free_protobuf_parse_result(pr);
}

int pv_guard_analyze(const pv_guard_input_t *in, const char *sql,
                     pv_guard_result_t **out) {
  if (!out)
    return PV_EINVAL;
  *out = NULL;
  if (!in || !sql || !in->rules || !in->lookup ||
      (in->nsearch_path && !in->search_path))
    return PV_EINVAL;
  garena_t *res = calloc(1, sizeof *res);
  garena_t work = {0};
  if (!res)
    return PV_ENOMEM;
  pv_guard_result_t *r = ga_alloc(res, sizeof *r);
  if (!r) {
    free(res);
    return PV_ENOMEM;
  }
  r->arena = res;
  gctx_t c = {0};
  c.in = in;
  c.res = res;
  c.work = &work;
  c.purpose_name = purpose_label(in->rules, in->purpose);
  c.restricted =
      !in->map_only && pv_guard_purpose_restricted(in->rules, in->purpose);
  c.max_depth = in->max_depth ? in->max_depth : PV_GUARD_DEFAULT_MAX_DEPTH;
  c.max_view_depth =
      in->max_view_depth ? in->max_view_depth : PV_GUARD_DEFAULT_VIEW_DEPTH;
  c.search_path = in->search_path;
  c.nsearch_path = in->nsearch_path;
  r->restricted = c.restricted;
  analyze_all(&c, r, sql);
  ga_free(&work);
  if (c.err) {
    pv_guard_result_free(r);
    return c.err;
  }
  *out = r;
  return 0;
}

void pv_guard_result_free(pv_guard_result_t *res) {
  if (!res)
    return;
  garena_t *a = res->arena;
  ga_free(a); /* res itself lives in the arena */
  free(a);
}

uint64_t pv_guard_cache_key(const char *sql, size_t len, int purpose,
                            uint64_t rules_fingerprint,
                            uint64_t catalog_version,
                            const char *const *search_path,
                            size_t nsearch_path) {
  XXH3_state_t st;
  XXH3_64bits_reset(&st);
  int64_t p = purpose;
  XXH3_64bits_update(&st, &p, sizeof p);
  XXH3_64bits_update(&st, &rules_fingerprint, sizeof rules_fingerprint);
  XXH3_64bits_update(&st, &catalog_version, sizeof catalog_version);
  for (size_t i = 0; i < nsearch_path; i++) {
    const char *s = search_path[i] ? search_path[i] : "";
    XXH3_64bits_update(&st, s, strlen(s) + 1); /* NUL separates entries */
  }
  uint64_t n = nsearch_path;
  XXH3_64bits_update(&st, &n, sizeof n);
  if (sql)
    XXH3_64bits_update(&st, sql, len);
  return XXH3_64bits_digest(&st);
}
