/* Owns the catalog resolution model: the resolution query's text, turning
 * its rows into per-database lookups, and the existence and type-fit checks.
 * Pure: no I/O, no globals; libpq lives in control.c. */
#include "pgveil/catalog.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "pgveil/mask.h"

/* Every relation, function and type is schema-qualified, and the control
 * connection runs with search_path = '' too: a session's or a role's
 * search_path can never make this read another schema's objects.
 * Multi-array unnest is spelled ROWS FROM because the unnest(a, b) sugar
 * does not apply to a qualified name. Domains are resolved to their base
 * type and typmod (at most 32 levels), as RowDescription reports them. */
const char PV_CATALOG_QUERY[] =
    "WITH RECURSIVE want AS ("
    " SELECT (w.ord - 1)::pg_catalog.int4 AS idx, w.nsp, w.rel"
    " FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]),"
    "                 pg_catalog.unnest($2::pg_catalog.text[]))"
    "      WITH ORDINALITY AS w(nsp, rel, ord)"
    "), tree(idx, relid, child) AS ("
    " SELECT w.idx, c.oid, false FROM want w"
    " JOIN pg_catalog.pg_namespace n ON n.nspname = w.nsp"
    " JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = "
    "w.rel"
    " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')"
    " UNION ALL"
    " SELECT t.idx, i.inhrelid, true FROM tree t"
    " JOIN pg_catalog.pg_inherits i ON i.inhparent = t.relid"
    ") SELECT t.idx, t.relid, t.child, a.attname, a.attnum, b.typid, b.typmod,"
    " pg_catalog.format_type(b.typid, b.typmod)"
    " FROM tree t"
    " LEFT JOIN pg_catalog.pg_attribute a"
    "  ON a.attrelid = t.relid AND a.attnum > 0 AND NOT a.attisdropped"
    " LEFT JOIN LATERAL ("
    "  WITH RECURSIVE d(typid, typmod, depth) AS ("
    "   SELECT a.atttypid, a.atttypmod, 0"
    "   UNION ALL"
    "   SELECT ty.typbasetype, ty.typtypmod, d.depth + 1"
    "   FROM d JOIN pg_catalog.pg_type ty ON ty.oid = d.typid"
    "   WHERE ty.typtype = 'd' AND d.depth < 32"
    "  ) SELECT d.typid, d.typmod FROM d ORDER BY d.depth DESC LIMIT 1"
    " ) b ON true"
    " ORDER BY t.idx, t.child, t.relid, a.attnum";

struct pv_catalog {
  const pv_rules_t *rules; /* built from; not owned */
  char dbname[PV_CATALOG_DBNAME_MAX + 1];
  uint64_t fingerprint;
  pv_catalog_rel_t *rels;
  size_t nrels;
  pv_catalog_col_t *cols;
  size_t ncols;
  uint32_t *rel_slots; /* index + 1 into rels; 0 = empty */
  uint32_t *col_slots; /* index + 1 into cols; 0 = empty */
  size_t mask;         /* both tables have mask + 1 slots */
};

/* ---- Query parameters --------------------------------------------------- */

static size_t want_count(const pv_rules_t *r) {
  return r->ntables + (r->consent.configured ? 1 : 0);
}

static const char *want_name(const pv_rules_t *r, size_t i, bool schema) {
  if (i < r->ntables)
    return schema ? r->tables[i].schema : r->tables[i].name;
  return schema ? r->consent.schema : r->consent.table;
}

size_t pv_catalog_query_params_size(const pv_rules_t *rules) {
  size_t n = 3;
  for (size_t i = 0; rules && i < want_count(rules); i++) {
    size_t a = strlen(want_name(rules, i, true));
    size_t b = strlen(want_name(rules, i, false));
    n += 2 * (a > b ? a : b) + 3;
  }
  return n;
}

/* Appends "..." with \ and " escaped, as array_in wants. */
static int put_elem(char *out, size_t *pos, size_t cap, const char *s) {
  if (*pos + 2 * strlen(s) + 4 > cap)
    return PV_ELIMIT;
  out[(*pos)++] = '"';
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      out[(*pos)++] = '\\';
    out[(*pos)++] = *s;
  }
  out[(*pos)++] = '"';
  return PV_OK;
}

static int array_literal(const pv_rules_t *r, bool schema, char *out,
                         size_t cap) {
  size_t pos = 0;
  if (cap < 3)
    return PV_ELIMIT;
  out[pos++] = '{';
  for (size_t i = 0; i < want_count(r); i++) {
    if (i)
      out[pos++] = ',';
    if (put_elem(out, &pos, cap, want_name(r, i, schema)))
      return PV_ELIMIT;
  }
  if (pos + 2 > cap)
    return PV_ELIMIT;
  out[pos++] = '}';
  out[pos] = '\0';
  return PV_OK;
}

int pv_catalog_query_params(const pv_rules_t *rules, char *schemas,
                            char *tables, size_t cap) {
  if (!rules || !schemas || !tables)
    return PV_EINVAL;
  int rc = array_literal(rules, true, schemas, cap);
  return rc ? rc : array_literal(rules, false, tables, cap);
}

uint64_t pv_catalog_rows_fingerprint(const pv_catalog_row_t *rows,
                                     size_t nrows) {
  XXH3_state_t st;
  XXH3_64bits_reset(&st);
  for (size_t i = 0; i < nrows; i++) {
    const pv_catalog_row_t *r = &rows[i];
    uint32_t fixed[6] = {r->idx,      r->relid,
                         r->child,    (uint16_t)r->attnum,
                         r->type_oid, (uint32_t)r->typmod};
    XXH3_64bits_update(&st, fixed, sizeof fixed);
    const char *s = r->attname ? r->attname : "";
    XXH3_64bits_update(&st, s, strlen(s) + 1); /* the NUL separates */
  }
  return XXH3_64bits_digest(&st);
}

/* ---- Errors ------------------------------------------------------------- */

typedef struct {
  uint32_t line, col;
  char *msg;
} err_t;

typedef struct {
  const char *source;
  err_t *v;
  size_t n, max, omitted;
  bool oom;
} errlist_t;

__attribute__((format(printf, 4, 5))) static void
err_add(errlist_t *el, uint32_t line, uint32_t col, const char *fmt, ...) {
  if (el->n >= el->max) {
    el->omitted++;
    return;
  }
  char text[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  size_t cap = strlen(el->source) + strlen(text) + 32;
  char *msg = malloc(cap);
  if (!msg) {
    el->oom = true;
    el->omitted++;
    return;
  }
  snprintf(msg, cap, "%s:%u:%u: %s", el->source, line, col, text);
  el->v[el->n++] = (err_t){line, col, msg};
}

static int err_cmp(const void *pa, const void *pb) {
  const err_t *a = pa, *b = pb;
  if (a->line != b->line)
    return a->line < b->line ? -1 : 1;
  return a->col < b->col ? -1 : a->col > b->col;
}

static void errlist_dispose(errlist_t *el) {
  for (size_t i = 0; el->v && i < el->n; i++)
    free(el->v[i].msg);
  free(el->v);
  el->v = NULL;
  el->n = 0;
}

/* Moves el into a pv_rules_errors_t (file order); NULL when out of memory. */
static pv_rules_errors_t *errlist_finish(errlist_t *el) {
  pv_rules_errors_t *e = calloc(1, sizeof *e);
  if (!e) {
    errlist_dispose(el);
    return NULL;
  }
  qsort(el->v, el->n, sizeof *el->v, err_cmp);
  e->msgs = calloc(el->n ? el->n : 1, sizeof *e->msgs);
  if (!e->msgs) {
    free(e);
    errlist_dispose(el);
    return NULL;
  }
  for (size_t i = 0; i < el->n; i++)
    e->msgs[i] = el->v[i].msg;
  e->count = el->n;
  e->omitted = el->omitted;
  free(el->v);
  el->v = NULL;
  el->n = 0;
  return e;
}

/* ---- Hash tables -------------------------------------------------------- */

static uint64_t col_key(uint32_t oid, int16_t attnum) {
  return ((uint64_t)oid << 16) | (uint16_t)attnum;
}

static size_t slot_of(uint64_t key, size_t mask) {
  return (size_t)XXH3_64bits(&key, sizeof key) & mask;
}

static const pv_catalog_rel_t *rel_get(const pv_catalog_t *c, uint32_t oid) {
  for (size_t s = slot_of(oid, c->mask);; s = (s + 1) & c->mask) {
    uint32_t i = c->rel_slots[s];
    if (i == 0)
      return NULL;
    if (c->rels[i - 1].table_oid == oid)
      return &c->rels[i - 1];
  }
}

static void rel_put(pv_catalog_t *c, size_t idx) {
  size_t s = slot_of(c->rels[idx].table_oid, c->mask);
  while (c->rel_slots[s])
    s = (s + 1) & c->mask;
  c->rel_slots[s] = (uint32_t)idx + 1;
}

static const pv_catalog_col_t *col_get(const pv_catalog_t *c, uint32_t oid,
                                       int16_t attnum) {
  for (size_t s = slot_of(col_key(oid, attnum), c->mask);;
       s = (s + 1) & c->mask) {
    uint32_t i = c->col_slots[s];
    if (i == 0)
      return NULL;
    const pv_catalog_col_t *e = &c->cols[i - 1];
    if (e->table_oid == oid && e->attnum == attnum)
      return e;
  }
}

static void col_put(pv_catalog_t *c, size_t idx) {
  const pv_catalog_col_t *e = &c->cols[idx];
  size_t s = slot_of(col_key(e->table_oid, e->attnum), c->mask);
  while (c->col_slots[s])
    s = (s + 1) & c->mask;
  c->col_slots[s] = (uint32_t)idx + 1;
}

/* ---- Build -------------------------------------------------------------- */

typedef struct {
  const pv_rules_t *rules;
  const char *dbname;
  const pv_catalog_row_t *rows;
  size_t nrows;
  errlist_t el;
  size_t *col_base; /* per rules table: offset of its columns in found[] */
  bool *found;      /* per rules column: seen on the named relation */
  bool *table_seen; /* per wanted relation (tables, then consent) */
  bool consent_cols[3];
  pv_catalog_t *cat;
} build_t;

static void check_fit(build_t *b, const pv_rules_table_t *t,
                      const pv_rules_column_t *c, const pv_action_t *a,
                      const char *what, const pv_rules_decision_t *d,
                      const pv_catalog_row_t *row) {
  if (pv_mask_fits(a, row->type_oid, row->typmod))
    return;
  char act[PV_REDACT_MAX + 64];
  pv_action_format(a, act, sizeof act);
  uint32_t line = d->line ? d->line : c->line, col = d->line ? d->col : c->col;
  err_add(&b->el, line, col,
          "action %s (%s) does not fit column %s.%s.%s of type %s in "
          "database \"%s\"",
          act, what, t->schema, t->name, c->name,
          row->type_name ? row->type_name : "?", b->dbname);
}

static void check_decision(build_t *b, const pv_rules_table_t *t,
                           const pv_rules_column_t *c,
                           const pv_rules_decision_t *d, const char *purpose,
                           const pv_catalog_row_t *row) {
  char what[PV_RULES_NAME_MAX + 40];
  snprintf(what, sizeof what, "%s%s", purpose ? "purpose " : "default",
           purpose ? purpose : "");
  check_fit(b, t, c, &d->action, what, d, row);
  if (d->consent_required) {
    snprintf(what, sizeof what, "otherwise, %s%s",
             purpose ? "purpose " : "default", purpose ? purpose : "");
    check_fit(b, t, c, &d->otherwise, what, d, row);
  }
}

static void check_column(build_t *b, const pv_rules_table_t *t,
                         const pv_rules_column_t *c,
                         const pv_catalog_row_t *row) {
  check_decision(b, t, c, &c->dflt, NULL, row);
  for (size_t i = 0; i < c->nentries; i++) {
    int p = c->entries[i].purpose;
    const char *pname = p >= 0 && (size_t)p < b->rules->npurposes
                            ? b->rules->purposes[p].name
                            : "?";
    check_decision(b, t, c, &c->entries[i].d, pname, row);
  }
}

/* The relation entry of row->relid, added when new. NULL when relid
 * already belongs to another rules table (multiple inheritance): the
 * first one, a directly named table before children, wins. */
static pv_catalog_rel_t *rel_for(build_t *b, const pv_catalog_row_t *row) {
  pv_catalog_t *c = b->cat;
  pv_catalog_rel_t *r = (pv_catalog_rel_t *)rel_get(c, row->relid);
  const pv_rules_table_t *t = &b->rules->tables[row->idx];
  if (r)
    return r->table == t ? r : NULL;
  r = &c->rels[c->nrels];
  *r = (pv_catalog_rel_t){.table_oid = row->relid,
                          .table = t,
                          .child = row->child,
                          .subject_typmod = -1};
  rel_put(c, c->nrels++);
  return r;
}

static void consent_row(build_t *b, const pv_catalog_row_t *row) {
  const pv_rules_consent_t *k = &b->rules->consent;
  const char *names[3] = {k->subject_column, k->purpose_column,
                          k->granted_column};
  b->table_seen[row->idx] = true;
  for (int i = 0; i < 3 && row->attname; i++)
    if (names[i] && strcmp(names[i], row->attname) == 0)
      b->consent_cols[i] = true;
}

static void add_row(build_t *b, const pv_catalog_row_t *row) {
  if (row->relid == 0 || row->idx >= want_count(b->rules))
    return; /* not from our query: ignore rather than trust */
  if (row->idx == b->rules->ntables) {
    if (!row->child)
      consent_row(b, row);
    return;
  }
  const pv_rules_table_t *t = &b->rules->tables[row->idx];
  if (!row->child)
    b->table_seen[row->idx] = true;
  pv_catalog_rel_t *r = rel_for(b, row);
  if (!r || !row->attname || row->attnum <= 0)
    return;
  if (t->subject && strcmp(t->subject, row->attname) == 0) {
    r->subject_attnum = row->attnum;
    r->subject_type_oid = row->type_oid;
    r->subject_typmod = row->typmod;
  }
  const pv_rules_column_t *rc = pv_rules_column_find(t, row->attname);
  if (!rc || col_get(b->cat, row->relid, row->attnum))
    return;
  pv_catalog_t *c = b->cat;
  c->cols[c->ncols] = (pv_catalog_col_t){.table_oid = row->relid,
                                         .attnum = row->attnum,
                                         .type_oid = row->type_oid,
                                         .typmod = row->typmod,
                                         .rule = rc,
                                         .table = t};
  col_put(c, c->ncols++);
  if (!row->child) {
    b->found[b->col_base[row->idx] + (size_t)(rc - t->columns)] = true;
    check_column(b, t, rc, row);
  }
}

static void report_missing(build_t *b) {
  const pv_rules_t *R = b->rules;
  for (size_t i = 0; i < R->ntables; i++) {
    const pv_rules_table_t *t = &R->tables[i];
    if (!b->table_seen[i]) {
      err_add(&b->el, t->line, t->col,
              "table %s.%s does not exist in database \"%s\"", t->schema,
              t->name, b->dbname);
      continue;
    }
    for (size_t j = 0; j < t->ncolumns; j++)
      if (!b->found[b->col_base[i] + j])
        err_add(&b->el, t->columns[j].line, t->columns[j].col,
                "column %s.%s.%s does not exist in database \"%s\"", t->schema,
                t->name, t->columns[j].name, b->dbname);
  }
  if (!R->consent.configured)
    return;
  const pv_rules_consent_t *k = &R->consent;
  if (!b->table_seen[R->ntables]) {
    err_add(&b->el, k->line, 1,
            "consent table %s.%s does not exist in database \"%s\"", k->schema,
            k->table, b->dbname);
    return;
  }
  const char *names[3] = {k->subject_column, k->purpose_column,
                          k->granted_column};
  for (int i = 0; i < 3; i++)
    if (names[i] && !b->consent_cols[i])
      err_add(&b->el, k->line, 1,
              "consent column %s.%s.%s does not exist in database \"%s\"",
              k->schema, k->table, names[i], b->dbname);
}

/* Subject columns of named tables must exist; children inherit them. */
static void report_subjects(build_t *b) {
  for (size_t i = 0; i < b->cat->nrels; i++) {
    const pv_catalog_rel_t *r = &b->cat->rels[i];
    if (!r->child && r->table->subject && r->subject_attnum == 0)
      err_add(&b->el, r->table->line, r->table->col,
              "subject column %s of table %s.%s does not exist in database "
              "\"%s\"",
              r->table->subject, r->table->schema, r->table->name, b->dbname);
  }
}

static void link_subjects(pv_catalog_t *c) {
  for (size_t i = 0; i < c->ncols; i++) {
    const pv_catalog_rel_t *r = rel_get(c, c->cols[i].table_oid);
    c->cols[i].subject_attnum = 0;
    if (r)
      c->cols[i].subject_attnum = r->subject_attnum;
  }
}

static pv_catalog_t *catalog_alloc(size_t nrows) {
  pv_catalog_t *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  size_t cap = 8;
  while (cap < 2 * nrows + 2)
    cap *= 2;
  c->mask = cap - 1;
  c->rels = calloc(nrows ? nrows : 1, sizeof *c->rels);
  c->cols = calloc(nrows ? nrows : 1, sizeof *c->cols);
  c->rel_slots = calloc(cap, sizeof *c->rel_slots);
  c->col_slots = calloc(cap, sizeof *c->col_slots);
  if (!c->rels || !c->cols || !c->rel_slots || !c->col_slots) {
    pv_catalog_free(c);
    return NULL;
  }
  return c;
}

static int build_init(build_t *b) {
  const pv_rules_t *R = b->rules;
  b->col_base = calloc(R->ntables + 1, sizeof *b->col_base);
  b->found = calloc(R->ncolumns + 1, sizeof *b->found);
  b->table_seen = calloc(want_count(R) + 1, sizeof *b->table_seen);
  b->el.v = calloc(b->el.max ? b->el.max : 1, sizeof *b->el.v);
  b->cat = catalog_alloc(b->nrows);
  if (!b->col_base || !b->found || !b->table_seen || !b->el.v || !b->cat)
    return PV_ENOMEM;
  for (size_t i = 1; i <= R->ntables; i++)
    b->col_base[i] = b->col_base[i - 1] + R->tables[i - 1].ncolumns;
  if (b->col_base[R->ntables] > R->ncolumns)
    return PV_EINVAL; /* rules->ncolumns disagrees with its tables */
  return PV_OK;
}

static void build_dispose(build_t *b) {
  free(b->col_base);
  free(b->found);
  free(b->table_seen);
  pv_catalog_free(b->cat);
  errlist_dispose(&b->el);
}

int pv_catalog_build(const pv_rules_t *rules, const char *dbname,
                     const pv_catalog_row_t *rows, size_t nrows,
                     size_t max_errors, pv_catalog_t **out,
                     pv_rules_errors_t **errs) {
  *out = NULL;
  *errs = NULL;
  if (!rules || !dbname || (!rows && nrows) ||
      strlen(dbname) > PV_CATALOG_DBNAME_MAX || nrows >= UINT32_MAX / 4)
    return PV_EINVAL;
  build_t b = {.rules = rules, .dbname = dbname, .rows = rows, .nrows = nrows};
  b.el.source = rules->source ? rules->source : "rules";
  b.el.max = max_errors ? max_errors : 1;
  int rc = build_init(&b);
  if (rc)
    goto fail;
  /* Named relations first, so they win over children for shared OIDs. */
  for (int pass = 0; pass < 2; pass++)
    for (size_t i = 0; i < nrows; i++)
      if (rows[i].child == (pass == 1))
        add_row(&b, &rows[i]);
  report_missing(&b);
  report_subjects(&b);
  if (b.el.n || b.el.omitted) {
    rc = b.el.oom && !b.el.n ? PV_ENOMEM : PV_ENOENT;
    goto fail;
  }
  link_subjects(b.cat);
  snprintf(b.cat->dbname, sizeof b.cat->dbname, "%s", dbname);
  b.cat->rules = rules;
  b.cat->fingerprint = pv_catalog_rows_fingerprint(rows, nrows);
  *out = b.cat;
  b.cat = NULL;
  build_dispose(&b);
  return PV_OK;
fail:
  if (b.el.v && (b.el.n || b.el.omitted))
    *errs = errlist_finish(&b.el);
  build_dispose(&b);
  return rc;
}

void pv_catalog_free(pv_catalog_t *cat) {
  if (!cat)
    return;
  free(cat->rels);
  free(cat->cols);
  free(cat->rel_slots);
  free(cat->col_slots);
  free(cat);
}

/* ---- Lookups ------------------------------------------------------------ */

const pv_catalog_col_t *pv_catalog_column(const pv_catalog_t *cat,
                                          uint32_t table_oid, int16_t attnum) {
  if (!cat || table_oid == 0 || attnum <= 0)
    return NULL;
  return col_get(cat, table_oid, attnum);
}

const pv_catalog_rel_t *pv_catalog_relation(const pv_catalog_t *cat,
                                            uint32_t table_oid) {
  if (!cat || table_oid == 0)
    return NULL;
  return rel_get(cat, table_oid);
}

const pv_rules_t *pv_catalog_rules(const pv_catalog_t *cat) {
  return cat ? cat->rules : NULL;
}

const char *pv_catalog_dbname(const pv_catalog_t *cat) {
  return cat ? cat->dbname : NULL;
}

uint64_t pv_catalog_fingerprint(const pv_catalog_t *cat) {
  return cat ? cat->fingerprint : 0;
}

size_t pv_catalog_ncolumns(const pv_catalog_t *cat) {
  return cat ? cat->ncols : 0;
}

size_t pv_catalog_nrelations(const pv_catalog_t *cat) {
  return cat ? cat->nrels : 0;
}

const pv_catalog_rel_t *pv_catalog_relation_at(const pv_catalog_t *cat,
                                               size_t i) {
  return cat && i < cat->nrels ? &cat->rels[i] : NULL;
}

const pv_catalog_rel_t *pv_catalog_relation_by_name(const pv_catalog_t *cat,
                                                    const char *schema,
                                                    const char *table) {
  for (size_t i = 0; i < pv_catalog_nrelations(cat); i++) {
    const pv_catalog_rel_t *rel = pv_catalog_relation_at(cat, i);
    if (!rel->child && strcmp(rel->table->schema, schema) == 0 &&
        strcmp(rel->table->name, table) == 0)
      return rel;
  }
  return NULL;
}

const pv_catalog_col_t *pv_catalog_column_by_name(const pv_catalog_t *cat,
                                                  const char *schema,
                                                  const char *table,
                                                  const char *column) {
  const pv_catalog_rel_t *rel = pv_catalog_relation_by_name(cat, schema, table);
  for (size_t k = 0; rel && k < cat->ncols; k++) {
    const pv_catalog_col_t *c = &cat->cols[k];
    if (c->table_oid == rel->table_oid && strcmp(c->rule->name, column) == 0)
      return c;
  }
  return NULL;
}
