/* The guard's name resolution and data-flow walk: FROM items, scopes,
 * CTEs, views, column references, expressions and their uses.
 * Pure: no I/O, no globals; the catalog comes through the lookup callback. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sql_guard_internal.h"

#define NK(x) PG_QUERY__NODE__NODE_##x

bool g_empty(const char *s) { return !s || !*s; }

const char *g_str(const PgQuery__Node *n) {
  if (n && n->node_case == NK(STRING) && n->string)
    return n->string->sval;
  return NULL;
}

static bool streq(const char *a, const char *b) {
  return a && b && strcmp(a, b) == 0;
}

/* ---- Scopes -------------------------------------------------------------- */

static bool grow(gctx_t *c, void *pp, size_t *cap, size_t n, size_t elem) {
  void **p = (void **)pp;
  if (n < *cap)
    return true;
  size_t nc = *cap ? *cap * 2 : 8;
  void *np = ga_alloc(c->work, nc * elem);
  if (!np) {
    c->err = PV_ENOMEM;
    return false;
  }
  if (*p)
    memcpy(np, *p, n * elem);
  *p = np;
  *cap = nc;
  return true;
}

static gscope_t *scope_new(gctx_t *c, gscope_t *parent) {
  gscope_t *s = ga_alloc(c->work, sizeof *s);
  if (!s) {
    c->err = PV_ENOMEM;
    return NULL;
  }
  s->parent = parent;
  return s;
}

void g_scope_add(gctx_t *c, gscope_t *sc, gitem_t *it, bool top) {
  if (!it)
    return;
  if (top) {
    if (!grow(c, &sc->top, &sc->captop, sc->ntop, sizeof(gitem_t *)))
      return;
    sc->top[sc->ntop++] = it;
  }
  if (it->refname) {
    if (!grow(c, &sc->named, &sc->capnamed, sc->nnamed, sizeof(gitem_t *)))
      return;
    sc->named[sc->nnamed++] = it;
  }
}

static gitem_t *item_new(gctx_t *c, size_t ncols) {
  gitem_t *it = ga_alloc(c->work, sizeof *it);
  gcol_t *cols = ncols ? ga_alloc(c->work, ncols * sizeof *cols) : NULL;
  if (!it || (ncols && !cols)) {
    c->err = PV_ENOMEM;
    return NULL;
  }
  it->cols = cols;
  it->ncols = ncols;
  return it;
}

/* Renames the first columns after an alias list `(a, b, ...)`. */
static void apply_colnames(gitem_t *it, PgQuery__Node **names, size_t n) {
  for (size_t i = 0; i < n && i < it->ncols; i++) {
    const char *s = g_str(names[i]);
    if (s)
      it->cols[i].name = s;
  }
}

/* ---- Column uses ------------------------------------------------------- */

void g_use_col(gctx_t *c, const gcol_t *col, guse_t use) {
  if (!col->prot || !g_ok(c))
    return;
  g_touch(c, col->prot);
  switch (use) {
  case U_DISCARD:
    return;
  case U_OUTPUT:
    if (col->plain && (!col->no_origin || c->in->trust_outcols))
      return;
    if (c->taint_only)
      return;
    g_refuse_col(c, col->prot,
                 col->plain ? "in an output column combined by a set "
                              "operation or recursive query"
                            : "in a computed output column");
    return;
  case U_EXPR:
    if (c->taint_only)
      return;
    g_refuse_col(c, col->prot, c->clause ? c->clause : "an expression");
    return;
  case U_PRED:
    if (col->plain && col->prot->dec->filter_allow)
      return;
    g_refuse_col(c, col->prot, c->clause ? c->clause : "a predicate");
    return;
  }
}

/* ---- Column references ------------------------------------------------- */

static gcol_t clean_col(const char *name) {
  gcol_t r = {0};
  r.name = name;
  return r;
}

static const gcol_t *best_in_item(const gitem_t *it, const char *name) {
  const gcol_t *best = NULL;
  for (size_t i = 0; i < it->ncols; i++)
    if (streq(it->cols[i].name, name) &&
        (!best || (!best->prot && it->cols[i].prot)))
      best = &it->cols[i];
  return best;
}

static const gitem_t *find_named(const gscope_t *sc, const char *schema,
                                 const char *ref, const gscope_t **where) {
  for (const gscope_t *s = sc; s; s = s->parent)
    for (size_t i = s->nnamed; i-- > 0;) {
      const gitem_t *it = s->named[i];
      if (!streq(it->refname, ref))
        continue;
      if (schema && !streq(it->schema, schema))
        continue;
      if (where)
        *where = s;
      return it;
    }
  return NULL;
}

/* Whole-row use of an item: refused when any of its columns is protected. */
static gcol_t whole_row(gctx_t *c, const gitem_t *it, guse_t use) {
  gcol_t r = clean_col(it->refname);
  for (size_t i = 0; i < it->ncols; i++) {
    if (!it->cols[i].prot)
      continue;
    r.prot = it->cols[i].prot;
    if (use == U_DISCARD) {
      g_touch(c, r.prot);
      continue;
    }
    if (!c->taint_only || use == U_PRED) {
      g_touch(c, r.prot);
      g_refuse_col(c, r.prot, "a whole-row reference");
    }
    break;
  }
  return r;
}

/* Unqualified name: innermost level with a concrete match wins; an opaque
 * item (unknown columns) makes the name resolve clean only when no outer
 * level has it either (conservative when a protected column could match). */
static bool lookup_unqualified(const gscope_t *sc, const char *name,
                               gcol_t *out) {
  bool opaque = false;
  for (const gscope_t *s = sc; s; s = s->parent) {
    const gcol_t *best = NULL;
    for (size_t i = 0; i < s->ntop; i++) {
      const gcol_t *m = best_in_item(s->top[i], name);
      if (m && (!best || (!best->prot && m->prot)))
        best = m;
      if (s->top[i]->opaque)
        opaque = true;
    }
    if (best) {
      *out = *best;
      return true;
    }
  }
  if (opaque) {
    *out = clean_col(name);
    return true;
  }
  return false;
}

static gcol_t column_ref(gctx_t *c, gscope_t *sc, const PgQuery__ColumnRef *cr,
                         guse_t use) {
  size_t n = cr->n_fields;
  const char *f[4] = {0};
  bool star = n > 0 && cr->fields[n - 1]->node_case == NK(A_STAR);
  if (n == 0 || n > 4) {
    g_refuse_unknown(c, "column reference");
    return clean_col("?column?");
  }
  for (size_t i = 0; i < n; i++) {
    f[i] = g_str(cr->fields[i]);
    if (!f[i] && !(star && i == n - 1)) {
      g_refuse_unknown(c, "column reference");
      return clean_col("?column?");
    }
  }
  if (star) { /* `*` / `t.*` inside an expression: a whole row */
    if (n == 1) {
      gcol_t r = clean_col("*");
      for (size_t i = 0; i < sc->ntop && g_ok(c); i++)
        r = whole_row(c, sc->top[i], use);
      return r;
    }
    const gitem_t *it =
        find_named(sc, n >= 3 ? f[n - 3] : NULL, f[n - 2], NULL);
    if (!it) {
      g_refuse(c, "pgveil: could not resolve \"%s.*\"", f[n - 2]);
      return clean_col("?column?");
    }
    return whole_row(c, it, use);
  }
  gcol_t col;
  if (n == 1) {
    if (lookup_unqualified(sc, f[0], &col)) {
      g_use_col(c, &col, use);
      return col;
    }
    const gitem_t *it = find_named(sc, NULL, f[0], NULL);
    if (it)
      return whole_row(c, it, use);
    g_refuse(c, "pgveil: could not resolve column \"%s\"", f[0]);
    return clean_col(f[0]);
  }
  /* rel.col, schema.rel.col, db.schema.rel.col */
  const char *schema = n >= 3 ? f[n - 3] : NULL;
  const gitem_t *it = find_named(sc, schema, f[n - 2], NULL);
  if (it) {
    const gcol_t *m = best_in_item(it, f[n - 1]);
    if (m) {
      col = *m;
      g_use_col(c, &col, use);
      return col;
    }
    if (it->opaque)
      return clean_col(f[n - 1]);
  }
  /* col.field (composite field access): the column inside an expression */
  if (n == 2 && lookup_unqualified(sc, f[0], &col)) {
    col.plain = false;
    g_use_col(c, &col, use == U_OUTPUT ? U_EXPR : use);
    return col;
  }
  g_refuse(c, "pgveil: could not resolve column \"%s\"", f[n - 1]);
  return clean_col(f[n - 1]);
}

/* ---- Expressions ------------------------------------------------------- */

static void taint(gcol_t *r, const gcol_t *x) {
  if (!r->prot && x->prot)
    r->prot = x->prot;
}

static guse_t inner_use(guse_t use) {
  return use == U_PRED ? U_PRED : (use == U_DISCARD ? U_DISCARD : U_EXPR);
}

static void exprs(gctx_t *c, gscope_t *sc, PgQuery__Node **v, size_t n,
                  guse_t use, gcol_t *r) {
  for (size_t i = 0; i < n && g_ok(c); i++) {
    gcol_t x = g_expr(c, sc, v[i], use);
    taint(r, &x);
  }
}

gcol_t g_expr_clause(gctx_t *c, gscope_t *sc, const PgQuery__Node *n,
                     guse_t use, const char *clause) {
  const char *saved = c->clause;
  c->clause = clause;
  gcol_t r = g_expr(c, sc, n, use);
  c->clause = saved;
  return r;
}

static const char *func_name(const PgQuery__FuncCall *f, const char **schema) {
  *schema = NULL;
  if (f->n_funcname == 0)
    return NULL;
  if (f->n_funcname >= 2)
    *schema = g_str(f->funcname[f->n_funcname - 2]);
  return g_str(f->funcname[f->n_funcname - 1]);
}

static bool search_path_trusted(const gctx_t *c) {
  return pv_guard_search_path_trusted(c->search_path, c->nsearch_path);
}

static void check_function(gctx_t *c, const char *schema, const char *name) {
  if (!name) {
    g_refuse_unknown(c, "function name");
    return;
  }
  if (pv_rules_function_allowed(c->in->rules, schema, name))
    return;
  bool builtin_schema = !schema || streq(schema, "pg_catalog");
  if (builtin_schema && g_func_safe_name(name) &&
      (schema || search_path_trusted(c)))
    return;
  g_refuse(c,
           "pgveil: function %s%s%s is not on the allowed list under purpose "
           "\"%s\" (it could read protected data)",
           schema ? schema : "", schema ? "." : "", name, c->purpose_name);
}

static bool const_text(const PgQuery__Node *n, const char **out) {
  if (n && n->node_case == NK(A_CONST) && n->a_const &&
      n->a_const->val_case == PG_QUERY__A__CONST__VAL_SVAL &&
      n->a_const->sval) {
    *out = n->a_const->sval->sval;
    return true;
  }
  if (n && n->node_case == NK(TYPE_CAST) && n->type_cast)
    return const_text(n->type_cast->arg, out);
  return false;
}

static bool const_bool(const PgQuery__Node *n, bool *out) {
  const char *s;
  if (n && n->node_case == NK(A_CONST) && n->a_const &&
      n->a_const->val_case == PG_QUERY__A__CONST__VAL_BOOLVAL) {
    *out = n->a_const->boolval && n->a_const->boolval->boolval;
    return true;
  }
  if (const_text(n, &s)) {
    *out = s[0] == 't' || s[0] == 'T' || s[0] == '1' || s[0] == 'y' ||
           s[0] == 'Y' || !strcmp(s, "on");
    return true;
  }
  return false;
}

/* set_config(name, value, is_local): only constant arguments; reported as
 * a SET; pgveil's own settings only through SET (intercepted). */
static void set_config_call(gctx_t *c, const PgQuery__FuncCall *f) {
  const char *name, *value;
  bool local;
  if (f->n_args != 3 || !const_text(f->args[0], &name) ||
      !const_text(f->args[1], &value) || !const_bool(f->args[2], &local)) {
    g_refuse(c,
             "pgveil: set_config() needs constant arguments under purpose "
             "\"%s\"",
             c->purpose_name);
    return;
  }
  if (c->st->set_name) {
    g_refuse(c, "pgveil: only one set_config() per statement");
    return;
  }
  char *lname = ga_strdup(c->res, name);
  if (!lname) {
    c->err = PV_ENOMEM;
    return;
  }
  for (char *p = lname; *p; p++)
    if (*p >= 'A' && *p <= 'Z')
      *p = (char)(*p - 'A' + 'a');
  if (!strncmp(lname, "pgveil.", 7)) {
    c->hard = true;
    g_refuse(c, "pgveil: %s may only be changed with SET", lname);
    return;
  }
  if (strcmp(lname, "standard_conforming_strings") == 0 &&
      strcmp(value, "on") != 0 && strcmp(value, "true") != 0) {
    g_refuse(c, "pgveil: standard_conforming_strings must stay on");
    return;
  }
  c->st->kind = PV_GSTMT_SET;
  c->st->set_name = lname;
  c->st->set_value = ga_strdup(c->res, value);
  c->st->set_local = local;
}

static void window_def(gctx_t *c, gscope_t *sc, const PgQuery__WindowDef *w) {
  if (!w)
    return;
  const char *saved = c->clause;
  c->clause = "a window definition";
  exprs(c, sc, w->partition_clause, w->n_partition_clause, U_PRED,
        &(gcol_t){0});
  for (size_t i = 0; i < w->n_order_clause && g_ok(c); i++) {
    const PgQuery__Node *o = w->order_clause[i];
    if (o->node_case == NK(SORT_BY) && o->sort_by)
      (void)g_expr(c, sc, o->sort_by->node, U_PRED);
    else
      (void)g_expr(c, sc, o, U_PRED);
  }
  c->clause = "a window frame";
  if (w->start_offset)
    (void)g_expr(c, sc, w->start_offset, U_PRED);
  if (w->end_offset)
    (void)g_expr(c, sc, w->end_offset, U_PRED);
  c->clause = saved;
}

static gcol_t func_call(gctx_t *c, gscope_t *sc, const PgQuery__FuncCall *f,
                        guse_t use) {
  gcol_t r = clean_col(NULL);
  const char *schema, *name = func_name(f, &schema);
  r.name = name;
  if (name && streq(name, "set_config") &&
      (!schema || streq(schema, "pg_catalog")))
    set_config_call(c, f);
  else
    check_function(c, schema, name);
  const char *saved = c->clause;
  c->clause = "an expression (function argument)";
  exprs(c, sc, f->args, f->n_args, use == U_DISCARD ? U_DISCARD : U_EXPR, &r);
  c->clause = "an aggregate ORDER BY";
  for (size_t i = 0; i < f->n_agg_order && g_ok(c); i++) {
    const PgQuery__Node *o = f->agg_order[i];
    (void)g_expr(
        c, sc, o->node_case == NK(SORT_BY) && o->sort_by ? o->sort_by->node : o,
        U_PRED);
  }
  c->clause = "an aggregate FILTER";
  if (f->agg_filter)
    (void)g_expr(c, sc, f->agg_filter, U_PRED);
  c->clause = saved;
  window_def(c, sc, f->over);
  return r;
}

static gcol_t sublink(gctx_t *c, gscope_t *sc, const PgQuery__SubLink *s,
                      guse_t use) {
  gcol_t r = clean_col(NULL);
  if (!s->subselect || s->subselect->node_case != NK(SELECT_STMT)) {
    g_refuse_unknown(c, "sub-query");
    return r;
  }
  gcol_t *out = NULL;
  size_t nout = 0;
  const char **names = NULL;
  bool is_exists = s->sub_link_type == PG_QUERY__SUB_LINK_TYPE__EXISTS_SUBLINK;
  guse_t ouse = use == U_OUTPUT ? U_EXPR : use;
  switch (s->sub_link_type) {
  case PG_QUERY__SUB_LINK_TYPE__EXISTS_SUBLINK:
    break;
  case PG_QUERY__SUB_LINK_TYPE__ANY_SUBLINK:
  case PG_QUERY__SUB_LINK_TYPE__ALL_SUBLINK:
  case PG_QUERY__SUB_LINK_TYPE__ROWCOMPARE_SUBLINK:
    ouse = use == U_PRED ? U_PRED : U_EXPR;
    if (s->testexpr) {
      gcol_t t = g_expr(c, sc, s->testexpr, ouse);
      taint(&r, &t);
    }
    break;
  case PG_QUERY__SUB_LINK_TYPE__EXPR_SUBLINK:
    break;
  case PG_QUERY__SUB_LINK_TYPE__ARRAY_SUBLINK:
  case PG_QUERY__SUB_LINK_TYPE__MULTIEXPR_SUBLINK:
    ouse = U_EXPR;
    break;
  default:
    g_refuse_unknown(c, "sub-query kind");
    return r;
  }
  bool saved_discard = c->discard_targets;
  c->discard_targets = is_exists;
  g_select(c, s->subselect->select_stmt, sc, &out, &nout, &names);
  c->discard_targets = saved_discard;
  if (!is_exists)
    for (size_t i = 0; i < nout && g_ok(c); i++) {
      g_use_col(c, &out[i], ouse);
      taint(&r, &out[i]);
    }
  return r;
}

static gcol_t a_expr(gctx_t *c, gscope_t *sc, const PgQuery__AExpr *e,
                     guse_t use) {
  gcol_t r = clean_col(NULL);
  bool between = e->kind >= PG_QUERY__A__EXPR__KIND__AEXPR_BETWEEN &&
                 e->kind <= PG_QUERY__A__EXPR__KIND__AEXPR_NOT_BETWEEN_SYM;
  if (e->n_name > 0 && !between) {
    const char *op = g_str(e->name[e->n_name - 1]);
    const char *schema = e->n_name >= 2 ? g_str(e->name[e->n_name - 2]) : NULL;
    if (!op || (schema && !streq(schema, "pg_catalog")) || !g_op_safe(op) ||
        (!schema && !search_path_trusted(c)))
      g_refuse(c,
               "pgveil: operator %s is not on the allowed list under purpose "
               "\"%s\"",
               op ? op : "?", c->purpose_name);
  }
  guse_t u = inner_use(use);
  if (e->kind == PG_QUERY__A__EXPR__KIND__AEXPR_NULLIF && u == U_PRED)
    u = U_EXPR;
  const char *saved = c->clause;
  if (u == U_EXPR && !c->clause_fixed)
    c->clause = "an expression (operator)";
  if (e->lexpr) {
    gcol_t x = g_expr(c, sc, e->lexpr, u);
    taint(&r, &x);
  }
  if (e->rexpr) {
    gcol_t x = g_expr(c, sc, e->rexpr, u);
    taint(&r, &x);
  }
  c->clause = saved;
  return r;
}

static gcol_t case_expr(gctx_t *c, gscope_t *sc, const PgQuery__CaseExpr *e,
                        guse_t use) {
  gcol_t r = clean_col(NULL);
  guse_t u = use == U_DISCARD ? U_DISCARD : U_EXPR;
  const char *saved = c->clause;
  c->clause = "a CASE condition";
  if (e->arg)
    (void)g_expr(c, sc, e->arg, U_PRED);
  for (size_t i = 0; i < e->n_args && g_ok(c); i++) {
    const PgQuery__Node *w = e->args[i];
    if (w->node_case != NK(CASE_WHEN) || !w->case_when) {
      g_refuse_unknown(c, "CASE branch");
      break;
    }
    c->clause = "a CASE condition";
    (void)g_expr(c, sc, w->case_when->expr, U_PRED);
    c->clause = "an expression (CASE result)";
    gcol_t x = g_expr(c, sc, w->case_when->result, u);
    taint(&r, &x);
  }
  c->clause = "an expression (CASE result)";
  if (e->defresult) {
    gcol_t x = g_expr(c, sc, e->defresult, u);
    taint(&r, &x);
  }
  c->clause = saved;
  return r;
}

gcol_t g_expr(gctx_t *c, gscope_t *sc, const PgQuery__Node *n, guse_t use) {
  gcol_t r = clean_col(NULL);
  if (!n || !g_ok(c))
    return r;
  if (++c->depth > c->max_depth) {
    g_refuse(c, "pgveil: statement too deeply nested to analyse");
    c->depth--;
    return r;
  }
  guse_t u = inner_use(use);
  const char *saved = c->clause;
  if (u == U_EXPR && use != U_EXPR && !c->clause_fixed)
    c->clause = "an expression";
  switch (n->node_case) {
  case NK(COLUMN_REF):
    c->clause = saved;
    r = column_ref(c, sc, n->column_ref, use);
    break;
  case NK(A_CONST):
  case NK(PARAM_REF):
  case NK(SQLVALUE_FUNCTION):
  case NK(SET_TO_DEFAULT):
  case NK(CURRENT_OF_EXPR):
    break;
  case NK(A_EXPR):
    c->clause = saved;
    r = a_expr(c, sc, n->a_expr, use);
    break;
  case NK(BOOL_EXPR):
    c->clause = saved;
    exprs(c, sc, n->bool_expr->args, n->bool_expr->n_args, u, &r);
    break;
  case NK(NULL_TEST):
    c->clause = saved;
    r = g_expr(c, sc, n->null_test->arg, u);
    r.plain = false;
    break;
  case NK(BOOLEAN_TEST):
    c->clause = saved;
    r = g_expr(c, sc, n->boolean_test->arg, u);
    r.plain = false;
    break;
  case NK(FUNC_CALL):
    r = func_call(c, sc, n->func_call, use);
    break;
  case NK(TYPE_CAST):
    c->clause = "an expression (cast)";
    r = g_expr(c, sc, n->type_cast->arg, use == U_DISCARD ? U_DISCARD : U_EXPR);
    r.plain = false;
    break;
  case NK(COLLATE_CLAUSE):
    r = g_expr(c, sc, n->collate_clause->arg, u);
    r.plain = false;
    break;
  case NK(CASE_EXPR):
    r = case_expr(c, sc, n->case_expr, use);
    break;
  case NK(COALESCE_EXPR):
    exprs(c, sc, n->coalesce_expr->args, n->coalesce_expr->n_args, U_EXPR, &r);
    break;
  case NK(MIN_MAX_EXPR):
    exprs(c, sc, n->min_max_expr->args, n->min_max_expr->n_args, U_EXPR, &r);
    break;
  case NK(A_ARRAY_EXPR):
    exprs(c, sc, n->a_array_expr->elements, n->a_array_expr->n_elements, U_EXPR,
          &r);
    break;
  case NK(ROW_EXPR):
    exprs(c, sc, n->row_expr->args, n->row_expr->n_args, U_EXPR, &r);
    break;
  case NK(A_INDIRECTION): {
    gcol_t x = g_expr(c, sc, n->a_indirection->arg, U_EXPR);
    taint(&r, &x);
    for (size_t i = 0; i < n->a_indirection->n_indirection && g_ok(c); i++) {
      const PgQuery__Node *ind = n->a_indirection->indirection[i];
      if (ind->node_case == NK(A_INDICES)) {
        (void)g_expr(c, sc, ind->a_indices->lidx, U_EXPR);
        (void)g_expr(c, sc, ind->a_indices->uidx, U_EXPR);
      } else if (ind->node_case != NK(STRING) && ind->node_case != NK(A_STAR)) {
        g_refuse_unknown(c, "indirection");
      }
    }
    break;
  }
  case NK(SUB_LINK):
    c->clause = saved;
    r = sublink(c, sc, n->sub_link, use);
    break;
  case NK(XML_EXPR):
    exprs(c, sc, n->xml_expr->named_args, n->xml_expr->n_named_args, U_EXPR,
          &r);
    exprs(c, sc, n->xml_expr->args, n->xml_expr->n_args, U_EXPR, &r);
    break;
  case NK(XML_SERIALIZE):
    r = g_expr(c, sc, n->xml_serialize->expr, U_EXPR);
    r.plain = false;
    break;
  case NK(RES_TARGET): /* xmlelement/xmlattributes named args */
    r = g_expr(c, sc, n->res_target->val, U_EXPR);
    r.plain = false;
    break;
  case NK(GROUPING_FUNC):
    exprs(c, sc, n->grouping_func->args, n->grouping_func->n_args, U_PRED, &r);
    break;
  case NK(NAMED_ARG_EXPR):
    c->clause = saved;
    if (n->named_arg_expr->arg)
      r = g_expr(c, sc, n->named_arg_expr->arg, use);
    break;
  case NK(LIST):
    c->clause = saved;
    exprs(c, sc, n->list->items, n->list->n_items, use, &r);
    break;
  case NK(MULTI_ASSIGN_REF):
    r = g_expr(c, sc, n->multi_assign_ref->source, U_EXPR);
    break;
  default:
    g_refuse_unknown(c, "expression");
    break;
  }
  c->clause = saved;
  c->depth--;
  if (n->node_case != NK(COLUMN_REF) && n->node_case != NK(NAMED_ARG_EXPR))
    r.plain = false, r.schema = r.table = r.base = NULL, r.no_origin = false;
  return r;
}

/* ---- FROM items -------------------------------------------------------- */

static const gcte_t *find_cte(const gscope_t *sc, const char *name) {
  for (const gscope_t *s = sc; s; s = s->parent)
    for (const gcte_t *t = s->ctes; t; t = t->next)
      if (streq(t->name, name))
        return t;
  return NULL;
}

static gprot_t *prot_new(gctx_t *c, const char *schema, const char *table,
                         const char *col, const pv_rules_decision_t *d) {
  gprot_t *p = ga_alloc(c->work, sizeof *p);
  if (!p) {
    c->err = PV_ENOMEM;
    return NULL;
  }
  p->schema = ga_strdup(c->work, schema);
  p->table = ga_strdup(c->work, table);
  p->column = ga_strdup(c->work, col);
  p->dec = d;
  if (!p->schema || !p->table || !p->column)
    c->err = PV_ENOMEM;
  return p;
}

static void table_cols(gctx_t *c, gitem_t *it, const pv_guard_rel_t *rel) {
  for (size_t i = 0; i < it->ncols && g_ok(c); i++) {
    gcol_t *col = &it->cols[i];
    col->name = ga_strdup(c->work, rel->columns[i] ? rel->columns[i] : "");
    col->schema = ga_strdup(c->work, rel->schema ? rel->schema : "");
    col->table = ga_strdup(c->work, rel->name ? rel->name : "");
    col->base = col->name;
    col->plain = true;
    if (!col->name || !col->schema || !col->table) {
      c->err = PV_ENOMEM;
      return;
    }
    const pv_rules_column_t *rc =
        rel->rules_table ? pv_rules_column_find(rel->rules_table, col->name)
                         : NULL;
    if (!rc)
      continue;
    const pv_rules_decision_t *d = pv_rules_decide(rc, c->in->purpose);
    if (!c->in->map_only && !pv_rules_decision_is_clear(d))
      col->prot = prot_new(c, col->schema, col->table, col->name, d);
  }
}

/* A view: its definition analysed like a sub-query, apart from the caller's
 * scope; computed output columns carry their taint instead of refusing. */
static void view_cols(gctx_t *c, gitem_t **itp, const pv_guard_rel_t *rel) {
  if (c->view_depth >= c->max_view_depth) {
    g_refuse(c, "pgveil: views nested too deeply to analyse (%s.%s)",
             rel->schema ? rel->schema : "", rel->name ? rel->name : "");
    return;
  }
  if (!rel->view_sql) {
    g_refuse_unknown(c, "view without definition");
    return;
  }
  PgQueryProtobufParseResult pr = pg_query_parse_protobuf(rel->view_sql);
  PgQuery__ParseResult *tree = NULL;
  if (!pr.error)
    tree = pg_query__parse_result__unpack(NULL, pr.parse_tree.len,
                                          (const uint8_t *)pr.parse_tree.data);
  if (!tree || tree->n_stmts != 1 || !tree->stmts[0]->stmt ||
      tree->stmts[0]->stmt->node_case != NK(SELECT_STMT)) {
    g_refuse_unknown(c, "view definition");
    goto done;
  }
  gcol_t *out = NULL;
  size_t nout = 0;
  const char **names = NULL;
  c->view_depth++;
  bool saved_view_top = c->view_top;
  c->view_top = true;
  g_select(c, tree->stmts[0]->stmt->select_stmt, NULL, &out, &nout, &names);
  c->view_top = saved_view_top;
  c->view_depth--;
  if (!g_ok(c))
    goto done;
  gitem_t *it = item_new(c, nout);
  if (!it)
    goto done;
  for (size_t i = 0; i < nout; i++) {
    it->cols[i] = out[i];
    const char *nm = i < rel->ncolumns && rel->columns[i] ? rel->columns[i]
                     : names[i]                           ? names[i]
                                                          : "?column?";
    it->cols[i].name = ga_strdup(c->work, nm); /* tree memory goes below */
    if (!it->cols[i].name)
      c->err = PV_ENOMEM;
  }
  *itp = it;
done:
  if (tree)
    pg_query__parse_result__free_unpacked(tree, NULL);
  pg_query_free_protobuf_parse_result(pr);
}

gitem_t *g_relation(gctx_t *c, const PgQuery__RangeVar *rv, const char *alias,
                    gscope_t *sc) {
  const char *schema = g_empty(rv->schemaname) ? NULL : rv->schemaname;
  const char *name = rv->relname;
  gitem_t *it = NULL;
  if (g_empty(name)) {
    g_refuse_unknown(c, "relation");
    return NULL;
  }
  const gcte_t *cte = schema ? NULL : find_cte(sc, name);
  if (cte) {
    it = item_new(c, cte->ncols);
    if (!it)
      return NULL;
    memcpy(it->cols, cte->cols, cte->ncols * sizeof(gcol_t));
    it->opaque = cte->opaque;
    it->refname = alias ? alias : name;
    return it;
  }
  if (g_rel_denied(name) && (!schema || streq(schema, "pg_catalog"))) {
    g_refuse(c,
             "pgveil: %s may not be read under purpose \"%s\" (it holds "
             "sampled column values or other sessions' data)",
             name, c->purpose_name);
    return NULL;
  }
  pv_guard_rel_t rel = {0};
  int rc = c->in->lookup(c->in->lookup_ctx, schema, name, c->search_path,
                         c->nsearch_path, &rel);
  if (rc < 0) {
    c->err = rc;
    return NULL;
  }
  switch (rel.kind) {
  case PV_GUARD_REL_TABLE:
    it = item_new(c, rel.ncolumns);
    if (it)
      table_cols(c, it, &rel);
    break;
  case PV_GUARD_REL_VIEW:
    view_cols(c, &it, &rel);
    break;
  default:
    it = item_new(c, 0);
    if (it)
      it->opaque = true;
    break;
  }
  if (!it)
    return NULL;
  it->refname = alias ? alias : name;
  if (!alias)
    it->schema =
        schema ? schema : ga_strdup(c->work, rel.schema ? rel.schema : "");
  return it;
}

static void merge_using(gctx_t *c, gitem_t *j, const gitem_t *l,
                        const gitem_t *r, const char **names, size_t nn,
                        PgQuery__JoinType jt) {
  size_t k = 0;
  const char *saved = c->clause;
  c->clause = "a JOIN ... USING";
  for (size_t i = 0; i < nn && g_ok(c); i++) {
    const gcol_t *lc = best_in_item(l, names[i]);
    const gcol_t *rc = best_in_item(r, names[i]);
    gcol_t lx = lc ? *lc : clean_col(names[i]);
    gcol_t rx = rc ? *rc : clean_col(names[i]);
    if ((!lc && !l->opaque) || (!rc && !r->opaque))
      g_refuse(c, "pgveil: could not resolve USING column \"%s\"", names[i]);
    g_use_col(c, &lx, U_PRED);
    g_use_col(c, &rx, U_PRED);
    gcol_t m = jt == PG_QUERY__JOIN_TYPE__JOIN_RIGHT ? rx : lx;
    if (jt == PG_QUERY__JOIN_TYPE__JOIN_FULL) {
      m = clean_col(names[i]);
      taint(&m, &lx);
      taint(&m, &rx);
    }
    m.name = names[i];
    j->cols[k++] = m;
  }
  c->clause = saved;
  for (size_t i = 0; i < l->ncols; i++) {
    bool used = false;
    for (size_t u = 0; u < nn; u++)
      used = used || streq(l->cols[i].name, names[u]);
    if (!used)
      j->cols[k++] = l->cols[i];
  }
  for (size_t i = 0; i < r->ncols; i++) {
    bool used = false;
    for (size_t u = 0; u < nn; u++)
      used = used || streq(r->cols[i].name, names[u]);
    if (!used)
      j->cols[k++] = r->cols[i];
  }
  j->ncols = k;
}

static gitem_t *join_item(gctx_t *c, gscope_t *sc,
                          const PgQuery__JoinExpr *je) {
  size_t before = sc->ntop;
  gitem_t *l = g_from_item(c, sc, je->larg);
  gitem_t *r = g_from_item(c, sc, je->rarg);
  if (!l || !r || !g_ok(c))
    return NULL;
  const char **names = NULL;
  size_t nn = 0;
  if (je->is_natural) {
    names = ga_alloc(c->work, (l->ncols + 1) * sizeof *names);
    if (!names) {
      c->err = PV_ENOMEM;
      return NULL;
    }
    for (size_t i = 0; i < l->ncols; i++)
      if (best_in_item(r, l->cols[i].name))
        names[nn++] = l->cols[i].name;
    if (l->opaque || r->opaque)
      g_refuse_unknown(c, "NATURAL join with unknown columns");
  } else if (je->n_using_clause) {
    names = ga_alloc(c->work, je->n_using_clause * sizeof *names);
    if (!names) {
      c->err = PV_ENOMEM;
      return NULL;
    }
    for (size_t i = 0; i < je->n_using_clause; i++) {
      names[nn] = g_str(je->using_clause[i]);
      if (names[nn])
        nn++;
    }
  }
  if (je->quals)
    (void)g_expr_clause(c, sc, je->quals, U_PRED, "a JOIN condition");
  gitem_t *j = item_new(c, l->ncols + r->ncols + nn);
  if (!j)
    return NULL;
  merge_using(c, j, l, r, names, nn, je->jointype);
  j->opaque = l->opaque || r->opaque;
  sc->ntop = before; /* the join replaces its sides as one top item */
  if (je->alias && !g_empty(je->alias->aliasname)) {
    j->refname = je->alias->aliasname;
    apply_colnames(j, je->alias->colnames, je->alias->n_colnames);
  }
  if (je->join_using_alias && !g_empty(je->join_using_alias->aliasname)) {
    gitem_t *u = item_new(c, nn);
    if (u) {
      memcpy(u->cols, j->cols, nn * sizeof(gcol_t));
      u->refname = je->join_using_alias->aliasname;
      g_scope_add(c, sc, u, false);
    }
  }
  return j;
}

/* A scope that sees the CTEs of `sc` but not its FROM items (for sub-queries
 * in FROM that are not LATERAL). */
static gscope_t *cte_only_scope(gctx_t *c, gscope_t *sc) {
  gscope_t *s = scope_new(c, sc ? sc->parent : NULL);
  if (s && sc)
    s->ctes = sc->ctes;
  if (s && sc && sc->parent == NULL && sc->ctes == NULL)
    s->parent = NULL;
  return s;
}

static gitem_t *function_item(gctx_t *c, gscope_t *sc,
                              const PgQuery__RangeFunction *rf) {
  for (size_t i = 0; i < rf->n_functions && g_ok(c); i++) {
    const PgQuery__Node *fl = rf->functions[i];
    const PgQuery__Node *fn = fl;
    if (fl->node_case == NK(LIST) && fl->list->n_items > 0)
      fn = fl->list->items[0];
    if (!fn || fn->node_case != NK(FUNC_CALL)) {
      /* e.g. FROM CAST(... AS ...), FROM current_date: plain expressions */
      (void)g_expr_clause(c, sc, fn, U_EXPR, "a function in FROM");
      continue;
    }
    (void)g_expr_clause(c, sc, fn, U_EXPR, "a function in FROM");
  }
  size_t n = rf->alias ? rf->alias->n_colnames : 0;
  gitem_t *it = item_new(c, n ? n : 1);
  if (!it)
    return NULL;
  it->opaque = true; /* composite results have columns we do not know */
  it->ncols = 0;
  if (rf->alias && !g_empty(rf->alias->aliasname)) {
    it->refname = rf->alias->aliasname;
    if (n) {
      it->ncols = n;
      apply_colnames(it, rf->alias->colnames, n);
    } else {
      it->ncols = 1;
      it->cols[0] = clean_col(rf->alias->aliasname);
    }
  }
  return it;
}

gitem_t *g_from_item(gctx_t *c, gscope_t *sc, const PgQuery__Node *n) {
  gitem_t *it = NULL;
  if (!n || !g_ok(c))
    return NULL;
  switch (n->node_case) {
  case NK(RANGE_VAR): {
    const PgQuery__RangeVar *rv = n->range_var;
    const char *alias = rv->alias && !g_empty(rv->alias->aliasname)
                            ? rv->alias->aliasname
                            : NULL;
    it = g_relation(c, rv, alias, sc);
    if (it && rv->alias)
      apply_colnames(it, rv->alias->colnames, rv->alias->n_colnames);
    break;
  }
  case NK(RANGE_SUBSELECT): {
    const PgQuery__RangeSubselect *rs = n->range_subselect;
    if (!rs->subquery || rs->subquery->node_case != NK(SELECT_STMT)) {
      g_refuse_unknown(c, "sub-query in FROM");
      return NULL;
    }
    gscope_t *ps = rs->lateral ? sc : cte_only_scope(c, sc);
    gcol_t *out = NULL;
    size_t nout = 0;
    const char **names = NULL;
    g_select(c, rs->subquery->select_stmt, ps, &out, &nout, &names);
    if (!g_ok(c))
      return NULL;
    it = item_new(c, 0);
    if (!it)
      return NULL;
    it->cols = out;
    it->ncols = nout;
    for (size_t i = 0; i < nout; i++)
      it->cols[i].name = names[i];
    if (rs->alias && !g_empty(rs->alias->aliasname)) {
      it->refname = rs->alias->aliasname;
      apply_colnames(it, rs->alias->colnames, rs->alias->n_colnames);
    }
    break;
  }
  case NK(JOIN_EXPR):
    it = join_item(c, sc, n->join_expr);
    break;
  case NK(RANGE_FUNCTION):
    it = function_item(c, sc, n->range_function);
    break;
  case NK(RANGE_TABLE_SAMPLE): {
    const PgQuery__RangeTableSample *ts = n->range_table_sample;
    exprs(c, sc, ts->args, ts->n_args, U_EXPR, &(gcol_t){0});
    if (ts->repeatable)
      (void)g_expr(c, sc, ts->repeatable, U_EXPR);
    return g_from_item(c, sc, ts->relation);
  }
  default:
    g_refuse_unknown(c, "FROM item");
    return NULL;
  }
  if (it && g_ok(c))
    g_scope_add(c, sc, it, true);
  return it;
}

/* ---- Target lists, SELECT, WITH ----------------------------------------- */

static bool push_out(gctx_t *c, gcol_t **out, size_t *nout, size_t *cap,
                     const char ***names, const gcol_t *col, const char *name) {
  if (*nout == *cap) {
    size_t nc = *cap ? *cap * 2 : 8;
    gcol_t *no = ga_alloc(c->work, nc * sizeof *no);
    const char **nn = ga_alloc(c->work, nc * sizeof *nn);
    if (!no || !nn) {
      c->err = PV_ENOMEM;
      return false;
    }
    if (*nout) {
      memcpy(no, *out, *nout * sizeof *no);
      memcpy(nn, *names, *nout * sizeof *nn);
    }
    *out = no;
    *names = nn;
    *cap = nc;
  }
  (*out)[*nout] = *col;
  (*out)[*nout].name = name;
  (*names)[*nout] = name;
  (*nout)++;
  return true;
}

static const char *target_name(const PgQuery__ResTarget *rt,
                               const gcol_t *col) {
  if (!g_empty(rt->name))
    return rt->name;
  const PgQuery__Node *v = rt->val;
  if (v && v->node_case == NK(COLUMN_REF) && v->column_ref->n_fields > 0) {
    const char *s = g_str(v->column_ref->fields[v->column_ref->n_fields - 1]);
    if (s)
      return s;
  }
  if (v && v->node_case == NK(FUNC_CALL) && col->name)
    return col->name;
  return "?column?";
}

static void expand_item(gctx_t *c, const gitem_t *it, guse_t use, gcol_t **out,
                        size_t *nout, size_t *cap, const char ***names) {
  for (size_t i = 0; i < it->ncols && g_ok(c); i++) {
    g_use_col(c, &it->cols[i], use);
    if (!push_out(c, out, nout, cap, names, &it->cols[i], it->cols[i].name))
      return;
  }
  if (it->opaque && c->st)
    c->st_outcols_inexact = true;
}

void g_target_list(gctx_t *c, gscope_t *sc, PgQuery__Node **tl, size_t n,
                   guse_t use, gcol_t **out, size_t *nout,
                   const char ***names) {
  size_t cap = *nout;
  for (size_t i = 0; i < n && g_ok(c); i++) {
    if (tl[i]->node_case != NK(RES_TARGET)) {
      g_refuse_unknown(c, "target");
      return;
    }
    const PgQuery__ResTarget *rt = tl[i]->res_target;
    const PgQuery__Node *v = rt->val;
    if (v && v->node_case == NK(COLUMN_REF)) {
      const PgQuery__ColumnRef *cr = v->column_ref;
      size_t nf = cr->n_fields;
      if (nf > 0 && cr->fields[nf - 1]->node_case == NK(A_STAR)) {
        if (nf == 1) {
          for (size_t k = 0; k < sc->ntop && g_ok(c); k++)
            expand_item(c, sc->top[k], use, out, nout, &cap, names);
          continue;
        }
        const char *rel = g_str(cr->fields[nf - 2]);
        const char *schema = nf >= 3 ? g_str(cr->fields[nf - 3]) : NULL;
        const gitem_t *it = rel ? find_named(sc, schema, rel, NULL) : NULL;
        if (!it) {
          g_refuse(c, "pgveil: could not resolve \"%s.*\"", rel ? rel : "?");
          return;
        }
        expand_item(c, it, use, out, nout, &cap, names);
        continue;
      }
    }
    gcol_t col = g_expr(c, sc, v, use);
    if (!push_out(c, out, nout, &cap, names, &col, target_name(rt, &col)))
      return;
  }
}

/* ORDER BY / GROUP BY / DISTINCT ON item: an output ordinal or output name
 * (ORDER BY prefers output names, GROUP BY input columns), else an
 * expression over the input. */
static void sort_item(gctx_t *c, gscope_t *sc, const PgQuery__Node *n,
                      const gcol_t *out, const char **names, size_t nout,
                      bool output_first) {
  if (n && n->node_case == NK(A_CONST) && n->a_const &&
      n->a_const->val_case == PG_QUERY__A__CONST__VAL_IVAL) {
    int k = n->a_const->ival ? n->a_const->ival->ival : 0;
    if (k >= 1 && (size_t)k <= nout)
      g_use_col(c, &out[k - 1], U_PRED);
    return;
  }
  if (n && n->node_case == NK(COLUMN_REF) && n->column_ref->n_fields == 1) {
    const char *nm = g_str(n->column_ref->fields[0]);
    gcol_t tmp;
    bool input = nm && lookup_unqualified(sc, nm, &tmp);
    if (nm && (output_first || !input))
      for (size_t i = 0; i < nout; i++)
        if (streq(names[i], nm)) {
          g_use_col(c, &out[i], U_PRED);
          return;
        }
  }
  (void)g_expr(c, sc, n, U_PRED);
}

static void sort_clause(gctx_t *c, gscope_t *sc, PgQuery__Node **v, size_t n,
                        const gcol_t *out, const char **names, size_t nout) {
  const char *saved = c->clause;
  c->clause = "ORDER BY";
  for (size_t i = 0; i < n && g_ok(c); i++) {
    const PgQuery__Node *s = v[i];
    sort_item(c, sc, s->node_case == NK(SORT_BY) ? s->sort_by->node : s, out,
              names, nout, true);
  }
  c->clause = saved;
}

static void group_clause(gctx_t *c, gscope_t *sc, PgQuery__Node **v, size_t n,
                         const gcol_t *out, const char **names, size_t nout) {
  for (size_t i = 0; i < n && g_ok(c); i++) {
    if (v[i]->node_case == NK(GROUPING_SET)) {
      group_clause(c, sc, v[i]->grouping_set->content,
                   v[i]->grouping_set->n_content, out, names, nout);
      continue;
    }
    if (v[i]->node_case == NK(LIST)) {
      group_clause(c, sc, v[i]->list->items, v[i]->list->n_items, out, names,
                   nout);
      continue;
    }
    sort_item(c, sc, v[i], out, names, nout, false);
  }
}

static void merge_setop(gctx_t *c, gcol_t *l, const gcol_t *r) {
  bool same = l->plain && r->plain && !l->prot == !r->prot &&
              streq(l->schema, r->schema) && streq(l->table, r->table) &&
              streq(l->base, r->base);
  if (same) {
    l->no_origin = true;
    return;
  }
  if (!l->prot && r->prot)
    l->prot = r->prot;
  l->plain = false;
  l->schema = l->table = l->base = NULL;
  l->no_origin = true;
}

static void setop(gctx_t *c, const PgQuery__SelectStmt *s, gscope_t *ps,
                  gcol_t **out, size_t *nout, const char ***names) {
  gcol_t *r = NULL;
  size_t nr = 0;
  const char **rn = NULL;
  bool view_top = c->view_top;
  g_select(c, s->larg, ps, out, nout, names);
  c->view_top = view_top;
  g_select(c, s->rarg, ps, &r, &nr, &rn);
  if (!g_ok(c))
    return;
  if (nr != *nout) {
    g_refuse_unknown(c, "set operation with differing column counts");
    return;
  }
  for (size_t i = 0; i < nr; i++)
    merge_setop(c, &(*out)[i], &r[i]);
  const char *saved = c->clause;
  c->clause = "a set operation that removes duplicates (UNION/INTERSECT/"
              "EXCEPT)";
  if (!s->all || s->op != PG_QUERY__SET_OPERATION__SETOP_UNION)
    for (size_t i = 0; i < *nout && g_ok(c); i++) {
      gcol_t x = (*out)[i];
      x.no_origin = false;
      g_use_col(c, &x, U_PRED);
    }
  c->clause = saved;
}

static void cte_register(gctx_t *c, gscope_t *sc,
                         const PgQuery__CommonTableExpr *ce, gcol_t *cols,
                         size_t n, const char **names) {
  gcte_t *t = ga_alloc(c->work, sizeof *t);
  if (!t) {
    c->err = PV_ENOMEM;
    return;
  }
  t->name = ce->ctename;
  t->cols = cols;
  t->ncols = n;
  for (size_t i = 0; i < n; i++)
    cols[i].name = names ? names[i] : cols[i].name;
  for (size_t i = 0; i < ce->n_aliascolnames && i < n; i++) {
    const char *s = g_str(ce->aliascolnames[i]);
    if (s)
      cols[i].name = s;
  }
  t->next = sc->ctes;
  sc->ctes = t;
}

void g_with(gctx_t *c, gscope_t *sc, const PgQuery__WithClause *w) {
  for (size_t i = 0; i < w->n_ctes && g_ok(c); i++) {
    const PgQuery__Node *cn = w->ctes[i];
    if (cn->node_case != NK(COMMON_TABLE_EXPR) || !cn->common_table_expr ||
        !cn->common_table_expr->ctequery) {
      g_refuse_unknown(c, "WITH item");
      return;
    }
    const PgQuery__CommonTableExpr *ce = cn->common_table_expr;
    const PgQuery__Node *q = ce->ctequery;
    if (ce->search_clause || ce->cycle_clause) {
      g_refuse_unknown(c, "WITH ... SEARCH/CYCLE");
      return;
    }
    gcol_t *out = NULL;
    size_t nout = 0;
    const char **names = NULL;
    if (q->node_case == NK(SELECT_STMT) && w->recursive &&
        q->select_stmt->op == PG_QUERY__SET_OPERATION__SETOP_UNION) {
      /* recursive: the non-recursive term defines the columns, then the
       * recursive term sees them; all outputs lose their origin */
      const PgQuery__SelectStmt *s = q->select_stmt;
      g_select(c, s->larg, sc, &out, &nout, &names);
      if (!g_ok(c))
        return;
      for (size_t k = 0; k < nout; k++)
        if (out[k].prot)
          out[k].no_origin = true;
      cte_register(c, sc, ce, out, nout, names);
      gcol_t *r = NULL;
      size_t nr = 0;
      const char **rn = NULL;
      g_select(c, s->rarg, sc, &r, &nr, &rn);
      if (!g_ok(c))
        return;
      if (nr != nout) {
        g_refuse_unknown(c, "recursive WITH with differing column counts");
        return;
      }
      for (size_t k = 0; k < nr; k++) {
        const char *nm = out[k].name;
        merge_setop(c, &out[k], &r[k]);
        out[k].name = nm;
      }
      if (!s->all) {
        const char *saved = c->clause;
        c->clause = "a recursive UNION that removes duplicates";
        for (size_t k = 0; k < nout && g_ok(c); k++)
          g_use_col(c, &(gcol_t){.prot = out[k].prot, .plain = out[k].plain},
                    U_PRED);
        c->clause = saved;
      }
      continue;
    }
    if (q->node_case == NK(SELECT_STMT))
      g_select(c, q->select_stmt, sc, &out, &nout, &names);
    else {
      (void)g_analyze_stmt_node(c, q, sc, &out, &nout);
      names = ga_alloc(c->work, (nout + 1) * sizeof *names);
      if (!names) {
        c->err = PV_ENOMEM;
        return;
      }
      for (size_t k = 0; k < nout; k++)
        names[k] = out[k].name;
    }
    if (!g_ok(c))
      return;
    cte_register(c, sc, ce, out, nout, names);
  }
}

static void values_lists(gctx_t *c, gscope_t *sc, const PgQuery__SelectStmt *s,
                         gcol_t **out, size_t *nout, const char ***names) {
  size_t cap = 0, ncols = 0;
  for (size_t i = 0; i < s->n_values_lists && g_ok(c); i++) {
    const PgQuery__Node *row = s->values_lists[i];
    if (row->node_case != NK(LIST)) {
      g_refuse_unknown(c, "VALUES row");
      return;
    }
    for (size_t k = 0; k < row->list->n_items && g_ok(c); k++) {
      gcol_t x =
          g_expr_clause(c, sc, row->list->items[k], U_EXPR, "a VALUES list");
      x.plain = false;
      x.schema = x.table = x.base = NULL;
      if (i == 0) {
        char nm[32];
        snprintf(nm, sizeof nm, "column%zu", k + 1);
        const char *d = ga_strdup(c->work, nm);
        if (!d || !push_out(c, out, nout, &cap, names, &x, d)) {
          c->err = PV_ENOMEM;
          return;
        }
        ncols++;
      } else if (k < ncols) {
        taint(&(*out)[k], &x);
      }
    }
  }
}

void g_select(gctx_t *c, const PgQuery__SelectStmt *s, gscope_t *parent,
              gcol_t **out, size_t *nout, const char ***names) {
  *out = NULL;
  *nout = 0;
  *names = NULL;
  if (!s || !g_ok(c))
    return;
  if (++c->depth > c->max_depth) {
    g_refuse(c, "pgveil: statement too deeply nested to analyse");
    return;
  }
  bool view_top = c->view_top;
  c->view_top = false;
  bool discard = c->discard_targets;
  c->discard_targets = false;
  gscope_t *sc = scope_new(c, parent);
  if (!sc)
    goto done;
  if (s->with_clause)
    g_with(c, sc, s->with_clause);
  if (s->op != PG_QUERY__SET_OPERATION__SETOP_NONE &&
      s->op != PG_QUERY__SET_OPERATION__SET_OPERATION_UNDEFINED) {
    c->view_top = view_top;
    setop(c, s, sc, out, nout, names);
    c->view_top = false;
    sc->out = *out;
    sc->nout = *nout;
    sort_clause(c, sc, s->sort_clause, s->n_sort_clause, *out, *names, *nout);
    goto limits;
  }
  if (s->n_values_lists) {
    values_lists(c, sc, s, out, nout, names);
    goto done;
  }
  for (size_t i = 0; i < s->n_from_clause && g_ok(c); i++)
    (void)g_from_item(c, sc, s->from_clause[i]);
  if (s->where_clause)
    (void)g_expr_clause(c, sc, s->where_clause, U_PRED, "a WHERE clause");
  bool saved_taint = c->taint_only;
  c->taint_only = view_top;
  g_target_list(c, sc, s->target_list, s->n_target_list,
                discard ? U_DISCARD : U_OUTPUT, out, nout, names);
  c->taint_only = saved_taint;
  if (!g_ok(c))
    goto done;
  const char *saved = c->clause;
  c->clause = "GROUP BY";
  group_clause(c, sc, s->group_clause, s->n_group_clause, *out, *names, *nout);
  c->clause = "HAVING";
  if (s->having_clause)
    (void)g_expr(c, sc, s->having_clause, U_PRED);
  for (size_t i = 0; i < s->n_window_clause && g_ok(c); i++)
    if (s->window_clause[i]->node_case == NK(WINDOW_DEF))
      window_def(c, sc, s->window_clause[i]->window_def);
  c->clause = "DISTINCT";
  if (s->n_distinct_clause) {
    bool plain_distinct = s->n_distinct_clause == 1 &&
                          (!s->distinct_clause[0] ||
                           s->distinct_clause[0]->node_case == NK(_NOT_SET));
    if (plain_distinct) {
      for (size_t i = 0; i < *nout && g_ok(c); i++)
        g_use_col(c, &(*out)[i], U_PRED);
    } else {
      c->clause = "DISTINCT ON";
      for (size_t i = 0; i < s->n_distinct_clause && g_ok(c); i++)
        sort_item(c, sc, s->distinct_clause[i], *out, *names, *nout, true);
    }
  }
  c->clause = saved;
  sort_clause(c, sc, s->sort_clause, s->n_sort_clause, *out, *names, *nout);
limits:
  if (s->limit_count)
    (void)g_expr_clause(c, sc, s->limit_count, U_PRED, "LIMIT");
  if (s->limit_offset)
    (void)g_expr_clause(c, sc, s->limit_offset, U_PRED, "OFFSET");
done:
  c->depth--;
}
