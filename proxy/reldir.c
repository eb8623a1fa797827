/* Owns the guard's relation directory: the directory query's text, turning
 * its rows into a sorted per-database directory, and the guard's lookup
 * over it. Pure: no I/O, no globals; libpq lives in control.c. */
#include "pgveil/reldir.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

/* Every relation and function is schema-qualified and the control
 * connection runs with search_path = '' (so pg_get_viewdef qualifies every
 * relation too). A view or matview is held when its _RETURN rule depends
 * (pg_depend, through pg_rewrite) on a protected relation, on a view held,
 * or on a function outside pg_catalog and information_schema: only
 * non-pinned functions have pg_depend entries (so this sees user and
 * extension functions, and information_schema's helpers, which are left
 * out), and those may read anything. Views are held once
 * (UNION), so a dependency cycle cannot loop. */
const char PV_RELDIR_QUERY[] =
    "WITH RECURSIVE prot(relid) AS ("
    " SELECT DISTINCT p.p FROM pg_catalog.unnest($1::pg_catalog.oid[]) AS p(p)"
    "), ruledep(viewid, refclass, refid) AS ("
    " SELECT r.ev_class, d.refclassid, d.refobjid"
    " FROM pg_catalog.pg_depend d"
    " JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid"
    " WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass"
    "  AND r.rulename = '_RETURN' AND d.refobjid <> r.ev_class"
    "), reach(relid) AS ("
    " SELECT rd.viewid FROM ruledep rd"
    " WHERE (rd.refclass = 'pg_catalog.pg_class'::pg_catalog.regclass"
    "        AND rd.refid IN (SELECT prot.relid FROM prot))"
    "    OR (rd.refclass = 'pg_catalog.pg_proc'::pg_catalog.regclass"
    "        AND rd.refid IN (SELECT f.oid FROM pg_catalog.pg_proc f"
    "         JOIN pg_catalog.pg_namespace fn ON fn.oid = f.pronamespace"
    "         WHERE fn.nspname NOT IN ('pg_catalog', 'information_schema')))"
    " UNION"
    " SELECT rd.viewid FROM reach"
    " JOIN ruledep rd ON rd.refid = reach.relid"
    "  AND rd.refclass = 'pg_catalog.pg_class'::pg_catalog.regclass"
    "), rels(relid, prot) AS ("
    " SELECT prot.relid, true FROM prot"
    " UNION ALL"
    " SELECT reach.relid, false FROM reach"
    " WHERE reach.relid NOT IN (SELECT prot.relid FROM prot)"
    ") SELECT c.oid, n.nspname, c.relname, c.relkind, rels.prot,"
    " a.attname, a.attnum,"
    " CASE WHEN NOT rels.prot AND pg_catalog.row_number() OVER"
    "   (PARTITION BY c.oid ORDER BY a.attnum) = 1"
    "  THEN pg_catalog.pg_get_viewdef(c.oid, true) END"
    " FROM rels"
    " JOIN pg_catalog.pg_class c ON c.oid = rels.relid"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " LEFT JOIN pg_catalog.pg_attribute a"
    "  ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
    " WHERE rels.prot OR c.relkind IN ('v', 'm')"
    " ORDER BY c.oid, a.attnum";

/* One relation. Strings point into the directory's arena. */
typedef struct {
  const char *schema, *name;
  uint32_t relid;
  char relkind;
  bool prot;
  bool oversize; /* definition longer than max_viewdef: lookups fail */
  const pv_rules_table_t *table;
  const char *const *cols;
  size_t ncols;
  const char *viewdef; /* "SELECT ..." for views; NULL otherwise */
} ent_t;

/* A column of a view or matview that is a plain reference to a protected
 * column: RowDescription names the view (its OID and attnum), so the row
 * rewriter maps it back to the base column through this. */
typedef struct {
  uint32_t relid;
  int16_t attnum;
  const pv_catalog_col_t *base; /* protected column, or NULL for a subject */
  uint32_t subject_oid;         /* base == NULL: the table whose subject */
  int16_t subject_attnum;       /* column this view column passes through */
} alias_t;

struct pv_reldir {
  alias_t *aliases; /* sorted by (relid, attnum) */
  size_t naliases;
  ent_t *ents; /* sorted by (name, schema) */
  size_t nents, nviews;
  const char **names; /* distinct ents[].name, sorted */
  size_t nnames;
  pv_guard_names_t *gnames;
  uint64_t fingerprint;
  const char **colv; /* every ent's column pointers */
  char *arena;       /* every string */
};

pv_reldir_limits_t pv_reldir_limits_default(void) {
  return (pv_reldir_limits_t){.max_relations = PV_RELDIR_MAX_RELATIONS,
                              .max_viewdef = PV_RELDIR_MAX_VIEWDEF};
}

/* ---- Query parameter ---------------------------------------------------- */

size_t pv_reldir_query_param_size(const pv_catalog_t *cat) {
  return 3 + 11 * pv_catalog_nrelations(cat); /* "4294967295," each */
}

int pv_reldir_query_param(const pv_catalog_t *cat, char *buf, size_t cap) {
  if (!buf || cap < 3)
    return PV_ELIMIT;
  size_t pos = 0;
  buf[pos++] = '{';
  for (size_t i = 0; i < pv_catalog_nrelations(cat); i++) {
    int n = snprintf(buf + pos, cap - pos, "%s%u", i ? "," : "",
                     pv_catalog_relation_at(cat, i)->table_oid);
    if (n < 0 || (size_t)n >= cap - pos)
      return PV_ELIMIT;
    pos += (size_t)n;
  }
  if (pos + 2 > cap)
    return PV_ELIMIT;
  buf[pos++] = '}';
  buf[pos] = '\0';
  return PV_OK;
}

/* ---- Fingerprint -------------------------------------------------------- */

static void fp_str(XXH3_state_t *st, const char *s) {
  /* A leading byte tells NULL from "", the NUL ends the string. */
  char tag = s ? 1 : 0;
  XXH3_64bits_update(st, &tag, 1);
  if (s)
    XXH3_64bits_update(st, s, strlen(s) + 1);
}

uint64_t pv_reldir_rows_fingerprint(const pv_reldir_row_t *rows, size_t nrows) {
  XXH3_state_t st;
  XXH3_64bits_reset(&st);
  for (size_t i = 0; i < nrows; i++) {
    const pv_reldir_row_t *r = &rows[i];
    uint32_t fixed[4] = {r->relid, (uint8_t)r->relkind, r->prot,
                         (uint16_t)r->attnum};
    XXH3_64bits_update(&st, fixed, sizeof fixed);
    fp_str(&st, r->schema);
    fp_str(&st, r->name);
    fp_str(&st, r->attname);
    fp_str(&st, r->viewdef);
  }
  return XXH3_64bits_digest(&st);
}

/* ---- Building ----------------------------------------------------------- */

/* The definition without the blanks around it and the final ';', so it
 * parses as exactly one SELECT. OUT: *len. */
static const char *trim_def(const char *s, size_t *len) {
  while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')
    s++;
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t' ||
               s[n - 1] == '\r' || s[n - 1] == ';'))
    n--;
  *len = n;
  return s;
}

static bool same_rel(const pv_reldir_row_t *a, const pv_reldir_row_t *b) {
  return a->relid == b->relid && a->relkind == b->relkind &&
         a->prot == b->prot && !strcmp(a->schema, b->schema) &&
         !strcmp(a->name, b->name);
}

/* Checks the rows' shape and counts what the directory needs. Rows of one
 * relation are together, relids increase, attnums increase within one. */
static int scan_rows(const pv_reldir_row_t *rows, size_t nrows,
                     const pv_reldir_limits_t *lim, size_t *nrels,
                     size_t *ncols, size_t *bytes) {
  *nrels = *ncols = *bytes = 0;
  for (size_t i = 0; i < nrows; i++) {
    const pv_reldir_row_t *r = &rows[i];
    bool first = i == 0 || rows[i - 1].relid != r->relid;
    if (!r->schema || !r->name || !r->schema[0] || !r->name[0])
      return PV_EINVAL;
    if (first) {
      if (i && rows[i - 1].relid > r->relid)
        return PV_EINVAL;
      if (++*nrels > lim->max_relations)
        return PV_ELIMIT;
      *bytes += strlen(r->schema) + strlen(r->name) + 2;
      if (r->viewdef) {
        size_t n;
        trim_def(r->viewdef, &n);
        if (n <= lim->max_viewdef)
          *bytes += n + 1;
      }
    } else if (!same_rel(&rows[i - 1], r) || !r->attname ||
               !rows[i - 1].attname || r->attnum <= rows[i - 1].attnum ||
               r->viewdef) {
      return PV_EINVAL;
    }
    if (!r->prot && r->relkind != 'v' && r->relkind != 'm')
      return PV_EINVAL;
    if (r->attname) {
      if (r->attnum <= 0)
        return PV_EINVAL;
      (*ncols)++;
      *bytes += strlen(r->attname) + 1;
    }
  }
  return PV_OK;
}

typedef struct {
  char *p;
} bump_t;

static const char *bump_put(bump_t *b, const char *s, size_t n) {
  char *d = b->p;
  memcpy(d, s, n);
  d[n] = '\0';
  b->p += n + 1;
  return d;
}

static int ent_cmp(const void *pa, const void *pb) {
  const ent_t *a = pa, *b = pb;
  int c = strcmp(a->name, b->name);
  return c ? c : strcmp(a->schema, b->schema);
}

/* Fills dir->ents from the rows (already checked by scan_rows). */
static int fill(pv_reldir_t *d, const pv_catalog_t *cat,
                const pv_reldir_row_t *rows, size_t nrows,
                const pv_reldir_limits_t *lim) {
  bump_t b = {d->arena};
  size_t col = 0;
  ent_t *e = NULL;
  for (size_t i = 0; i < nrows; i++) {
    const pv_reldir_row_t *r = &rows[i];
    if (i == 0 || rows[i - 1].relid != r->relid) {
      e = &d->ents[d->nents++];
      e->schema = bump_put(&b, r->schema, strlen(r->schema));
      e->name = bump_put(&b, r->name, strlen(r->name));
      e->relid = r->relid;
      e->relkind = r->relkind;
      e->prot = r->prot;
      e->cols = &d->colv[col];
      if (r->prot) {
        const pv_catalog_rel_t *cr = pv_catalog_relation(cat, r->relid);
        if (!cr)
          return PV_EINVAL; /* not a relation the rules protect */
        e->table = cr->table;
      } else {
        d->nviews++;
      }
      if (r->viewdef) {
        size_t n;
        const char *s = trim_def(r->viewdef, &n);
        if (n > lim->max_viewdef)
          e->oversize = true;
        else
          e->viewdef = bump_put(&b, s, n);
      }
    }
    if (r->attname) {
      d->colv[col++] = bump_put(&b, r->attname, strlen(r->attname));
      e->ncols++;
    }
  }
  qsort(d->ents, d->nents, sizeof *d->ents, ent_cmp);
  for (size_t i = 1; i < d->nents; i++)
    if (ent_cmp(&d->ents[i - 1], &d->ents[i]) == 0)
      return PV_EINVAL; /* one (schema, name), two relations */
  return PV_OK;
}

static int make_names(pv_reldir_t *d) {
  d->names = calloc(d->nents ? d->nents : 1, sizeof *d->names);
  if (!d->names)
    return PV_ENOMEM;
  for (size_t i = 0; i < d->nents; i++)
    if (!d->nnames || strcmp(d->names[d->nnames - 1], d->ents[i].name) != 0)
      d->names[d->nnames++] = d->ents[i].name;
  return pv_guard_names_new(d->names, d->nnames, &d->gnames);
}

static int alias_cmp(const void *pa, const void *pb) {
  const alias_t *a = pa, *b = pb;
  if (a->relid != b->relid)
    return a->relid < b->relid ? -1 : 1;
  return a->attnum - b->attnum;
}

/* Maps one view's output columns to base columns. Views cannot drop
 * columns, so output column i is attnum i + 1. A definition the guard
 * cannot analyse maps nothing: queries over it are refused the same way. */
static int map_view(pv_reldir_t *d, const pv_catalog_t *cat, const ent_t *e,
                    size_t *cap) {
  pv_guard_input_t in = {.rules = pv_catalog_rules(cat),
                         .purpose = PV_PURPOSE_NONE,
                         .lookup = pv_reldir_lookup,
                         .lookup_ctx = d,
                         .map_only = true};
  pv_guard_result_t *res = NULL;
  if (pv_guard_analyze(&in, e->viewdef, &res) != PV_OK)
    return PV_OK;
  const pv_guard_stmt_t *st = res->nstmts == 1 ? &res->stmts[0] : NULL;
  for (size_t i = 0; st && i < st->noutcols && i < e->ncols; i++) {
    const pv_guard_outcol_t *o = &st->outcols[i];
    if (!o->schema || !o->table || !o->column)
      continue;
    const pv_catalog_col_t *base =
        pv_catalog_column_by_name(cat, o->schema, o->table, o->column);
    const pv_catalog_rel_t *rel =
        base ? NULL : pv_catalog_relation_by_name(cat, o->schema, o->table);
    if (!base && !(rel && strcmp(rel->table->subject, o->column) == 0))
      continue; /* neither protected nor a consent subject */
    if (d->naliases == *cap) {
      size_t nc = *cap ? *cap * 2 : 64;
      alias_t *na = realloc(d->aliases, nc * sizeof *na);
      if (!na) {
        pv_guard_result_free(res);
        return PV_ENOMEM;
      }
      d->aliases = na;
      *cap = nc;
    }
    alias_t a = {.relid = e->relid, .attnum = (int16_t)(i + 1), .base = base};
    if (rel) {
      a.subject_oid = rel->table_oid;
      a.subject_attnum = rel->subject_attnum;
    }
    d->aliases[d->naliases++] = a;
  }
  pv_guard_result_free(res);
  return PV_OK;
}

static int make_aliases(pv_reldir_t *d, const pv_catalog_t *cat) {
  size_t cap = 0;
  for (size_t i = 0; i < d->nents; i++) {
    const ent_t *e = &d->ents[i];
    if (e->prot || !e->viewdef)
      continue;
    int rc = map_view(d, cat, e, &cap);
    if (rc)
      return rc;
  }
  if (d->naliases)
    qsort(d->aliases, d->naliases, sizeof *d->aliases, alias_cmp);
  return PV_OK;
}

const pv_catalog_col_t *pv_reldir_alias(const pv_reldir_t *dir, uint32_t relid,
                                        int16_t attnum) {
  if (!dir || !dir->naliases)
    return NULL;
  alias_t key = {relid, attnum, NULL, 0, 0};
  const alias_t *a =
      bsearch(&key, dir->aliases, dir->naliases, sizeof key, alias_cmp);
  return a ? a->base : NULL;
}

bool pv_reldir_subject_alias(const pv_reldir_t *dir, uint32_t relid,
                             int16_t attnum, uint32_t *table_oid,
                             int16_t *subject_attnum) {
  if (!dir || !dir->naliases)
    return false;
  alias_t key = {relid, attnum, NULL, 0, 0};
  const alias_t *a =
      bsearch(&key, dir->aliases, dir->naliases, sizeof key, alias_cmp);
  if (!a || a->base)
    return false;
  *table_oid = a->subject_oid;
  *subject_attnum = a->subject_attnum;
  return true;
}

int pv_reldir_build(const pv_catalog_t *cat, const pv_reldir_row_t *rows,
                    size_t nrows, const pv_reldir_limits_t *lim,
                    pv_reldir_t **out) {
  *out = NULL;
  pv_reldir_limits_t dl = pv_reldir_limits_default();
  if (!lim)
    lim = &dl;
  if (!cat || (nrows && !rows))
    return PV_EINVAL;
  size_t nrels, ncols, bytes;
  int rc = scan_rows(rows, nrows, lim, &nrels, &ncols, &bytes);
  if (rc)
    return rc;
  pv_reldir_t *d = calloc(1, sizeof *d);
  rc = PV_ENOMEM;
  if (!d)
    return rc;
  d->ents = calloc(nrels ? nrels : 1, sizeof *d->ents);
  d->colv = calloc(ncols ? ncols : 1, sizeof *d->colv);
  d->arena = malloc(bytes ? bytes : 1);
  if (!d->ents || !d->colv || !d->arena)
    goto fail;
  rc = fill(d, cat, rows, nrows, lim);
  if (!rc)
    rc = make_names(d);
  if (!rc)
    rc = make_aliases(d, cat);
  if (rc)
    goto fail;
  d->fingerprint = pv_reldir_rows_fingerprint(rows, nrows);
  *out = d;
  return PV_OK;
fail:
  pv_reldir_free(d);
  return rc;
}

void pv_reldir_free(pv_reldir_t *dir) {
  if (!dir)
    return;
  pv_guard_names_free(dir->gnames);
  free(dir->aliases);
  free(dir->names);
  free(dir->ents);
  free(dir->colv);
  free(dir->arena);
  free(dir);
}

/* ---- Lookup ------------------------------------------------------------- */

/* The first entry named `name` (ents are sorted by name, then schema). */
static size_t lower_bound(const pv_reldir_t *d, const char *name) {
  size_t lo = 0, hi = d->nents;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (strcmp(d->ents[mid].name, name) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static const ent_t *in_schema(const ent_t *v, size_t n, const char *schema) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(v[i].schema, schema))
      return &v[i];
  return NULL;
}

static bool listed(const char *const *sp, size_t n, const char *schema) {
  for (size_t i = 0; i < n; i++)
    if (sp[i] && !strcmp(sp[i], schema))
      return true;
  return false;
}

/* Among candidates v[0..n) (same name, n >= 2): the one the search_path
 * picks (pg_catalog first unless listed; pg_temp holds none of them), else
 * the first by schema name. */
static const ent_t *pick(const ent_t *v, size_t n, const char *const *sp,
                         size_t nsp) {
  const ent_t *e = NULL;
  if (!listed(sp, nsp, "pg_catalog"))
    e = in_schema(v, n, "pg_catalog");
  for (size_t i = 0; !e && i < nsp; i++)
    if (sp[i])
      e = in_schema(v, n, sp[i]);
  return e ? e : &v[0];
}

int pv_reldir_lookup(void *ctx, const char *schema, const char *name,
                     const char *const *search_path, size_t nsearch_path,
                     pv_guard_rel_t *out) {
  const pv_reldir_t *d = ctx;
  memset(out, 0, sizeof *out);
  if (!d || !name)
    return PV_EINVAL;
  size_t lo = lower_bound(d, name), hi = lo;
  while (hi < d->nents && !strcmp(d->ents[hi].name, name))
    hi++;
  const ent_t *v = &d->ents[lo], *e = NULL;
  size_t n = hi - lo;
  if (schema) {
    e = in_schema(v, n, schema);
  } else if (n == 1) {
    e = v; /* whatever schema the session would really search */
  } else if (n > 1) {
    for (size_t i = 0; i < n; i++)
      if (v[i].oversize)
        return PV_ELIMIT; /* it might be the one: fail closed */
    e = pick(v, n, search_path, nsearch_path);
  }
  if (!e) {
    out->kind = PV_GUARD_REL_UNKNOWN;
    out->schema = schema;
    out->name = name;
    return PV_OK;
  }
  if (e->oversize)
    return PV_ELIMIT;
  out->kind = e->prot ? PV_GUARD_REL_TABLE : PV_GUARD_REL_VIEW;
  out->schema = e->schema;
  out->name = e->name;
  out->columns = e->cols;
  out->ncolumns = e->ncols;
  out->rules_table = e->prot ? e->table : NULL;
  out->view_sql = e->prot ? NULL : e->viewdef;
  return PV_OK;
}

/* ---- Accessors ---------------------------------------------------------- */

void pv_reldir_names(const pv_reldir_t *dir, const char *const **names,
                     size_t *n) {
  *names = dir ? dir->names : NULL;
  *n = dir ? dir->nnames : 0;
}

const pv_guard_names_t *pv_reldir_guard_names(const pv_reldir_t *dir) {
  return dir ? dir->gnames : NULL;
}

size_t pv_reldir_nrelations(const pv_reldir_t *dir) {
  return dir ? dir->nents : 0;
}

size_t pv_reldir_nviews(const pv_reldir_t *dir) {
  return dir ? dir->nviews : 0;
}

uint64_t pv_reldir_fingerprint(const pv_reldir_t *dir) {
  return dir ? dir->fingerprint : 0;
}
