/* Owns loading a rules file: YAML (libyaml) to the frozen model of
 * include/pgveil/rules.h, reporting every problem with file:line:col.
 * Pure but for pv_rules_load_file reading its file; no globals; a rules
 * file is untrusted input: every check is a real error branch. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <yaml.h>

#include "rules_internal.h"

/* One load in progress. Owner: pv_rules_load_buffer_limits, on its stack. */
typedef struct {
  const pv_rules_limits_t *lim;
  yaml_document_t *doc;
  pv_rules_errlist_t *el;
  pv_rules_arena_t *ar;
  pv_rules_t *r;
  pv_rules_purpose_t *purposes; /* writable view of r->purposes */
  bool consent_declared;        /* a consent: section exists (even invalid) */
  bool columns_limit_hit;
} ld_t;

typedef char ident_t[PV_RULES_NAME_MAX + 1];

#define SHOW_MAX 48 /* bytes of a file value quoted in a message */

/* ---- Positions and messages -------------------------------------------- */

static uint32_t mline(yaml_mark_t m) { return (uint32_t)m.line + 1; }
static uint32_t mcol(yaml_mark_t m) { return (uint32_t)m.column + 1; }

#define ERR_AT(ld, node, ...)                                                  \
  pv_rules__err_add((ld)->el, mline((node)->start_mark),                       \
                    mcol((node)->start_mark), __VA_ARGS__)

/* The column of byte `off` inside a scalar: exact for one-line plain and
 * quoted scalars without escapes, the scalar's start otherwise. */
static uint32_t scalar_col(const yaml_node_t *n, size_t off) {
  uint32_t col = mcol(n->start_mark);
  if (n->type != YAML_SCALAR_NODE || n->end_mark.line != n->start_mark.line)
    return col;
  yaml_scalar_style_t st = n->data.scalar.style;
  if (st == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
      st == YAML_DOUBLE_QUOTED_SCALAR_STYLE)
    col++;
  else if (st != YAML_PLAIN_SCALAR_STYLE)
    return col;
  const unsigned char *s = n->data.scalar.value;
  size_t len = n->data.scalar.length;
  if (off > len)
    off = len;
  for (size_t i = 0; i < off; i++) /* libyaml counts characters */
    if ((s[i] & 0xC0) != 0x80)
      col++;
  return col;
}

/* A file value made safe for a one-line message. */
static const char *show(char out[SHOW_MAX + 4], const void *p, size_t len) {
  const unsigned char *s = p;
  size_t n = len > SHOW_MAX ? SHOW_MAX : len, j = 0;
  for (size_t i = 0; i < n; i++)
    out[j++] = (char)((s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i]);
  if (len > SHOW_MAX)
    for (int k = 0; k < 3; k++)
      out[j++] = '.';
  out[j] = '\0';
  return out;
}

static const char *kind_name(const yaml_node_t *n) {
  switch (n->type) {
  case YAML_MAPPING_NODE:
    return "a mapping";
  case YAML_SEQUENCE_NODE:
    return "a list";
  case YAML_SCALAR_NODE:
    return n->data.scalar.length ? "a value" : "nothing";
  default:
    return "nothing";
  }
}

/* ---- Node helpers ------------------------------------------------------- */

static yaml_node_t *node(ld_t *ld, int id) {
  return yaml_document_get_node(ld->doc, id);
}

static bool is_null(const yaml_node_t *n) {
  if (n->type != YAML_SCALAR_NODE ||
      n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
    return false;
  const char *s = (const char *)n->data.scalar.value;
  return n->data.scalar.length == 0 || strcmp(s, "~") == 0 ||
         strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
         strcmp(s, "NULL") == 0;
}

static size_t npairs(const yaml_node_t *n) {
  return (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
}

static size_t nitems(const yaml_node_t *n) {
  return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
}

static bool expect(ld_t *ld, const yaml_node_t *n, yaml_node_type_t t,
                   const char *what) {
  if (n->type == t)
    return true;
  const char *want = t == YAML_MAPPING_NODE    ? "a mapping"
                     : t == YAML_SEQUENCE_NODE ? "a list"
                                               : "a single value";
  ERR_AT(ld, n, "%s: expected %s, got %s", what, want, kind_name(n));
  return false;
}

/* A non-empty scalar without NUL bytes. */
static bool get_str(ld_t *ld, const yaml_node_t *n, const char *what,
                    const char **s, size_t *len) {
  if (n->type != YAML_SCALAR_NODE || is_null(n)) {
    ERR_AT(ld, n, "%s: expected a value, got %s", what, kind_name(n));
    return false;
  }
  *s = (const char *)n->data.scalar.value;
  *len = n->data.scalar.length;
  if (memchr(*s, '\0', *len)) {
    ERR_AT(ld, n, "%s: NUL byte in value", what);
    return false;
  }
  return true;
}

static bool str_is(const yaml_node_t *n, const char *lit) {
  return n->type == YAML_SCALAR_NODE && n->data.scalar.length == strlen(lit) &&
         memcmp(n->data.scalar.value, lit, n->data.scalar.length) == 0;
}

/* Matches the keys of mapping `m` against `keys`: vals[i] (and kpos[i] when
 * given) get the value (key) node of keys[i] or NULL. Unknown, duplicate and
 * non-scalar keys are errors. */
static void map_keys(ld_t *ld, const yaml_node_t *m, const char *const *keys,
                     size_t nkeys, yaml_node_t **vals, yaml_node_t **kpos,
                     const char *where) {
  yaml_node_t *kn[16] = {0};
  for (size_t i = 0; i < nkeys; i++)
    vals[i] = NULL;
  for (yaml_node_pair_t *p = m->data.mapping.pairs.start;
       p < m->data.mapping.pairs.top; p++) {
    yaml_node_t *k = node(ld, p->key), *v = node(ld, p->value);
    if (!k || !v)
      continue;
    if (k->type != YAML_SCALAR_NODE) {
      ERR_AT(ld, k, "%s: expected a key name, got %s", where, kind_name(k));
      continue;
    }
    size_t i = 0;
    while (i < nkeys && !str_is(k, keys[i]))
      i++;
    char q[SHOW_MAX + 4];
    if (i == nkeys) {
      char list[256] = "";
      for (size_t j = 0; j < nkeys; j++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
                 j ? ", " : "", keys[j]);
      ERR_AT(ld, k, "unknown key '%s' %s (expected one of: %s)",
             show(q, k->data.scalar.value, k->data.scalar.length), where, list);
      continue;
    }
    if (vals[i]) {
      ERR_AT(ld, k, "duplicate key '%s' %s (first at line %u)", keys[i], where,
             mline(kn[i]->start_mark));
      continue;
    }
    vals[i] = v;
    kn[i] = k;
  }
  if (kpos)
    for (size_t i = 0; i < nkeys; i++)
      kpos[i] = kn[i];
}

/* ---- Identifiers -------------------------------------------------------- */

static bool ident_start(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
         c >= 0x80;
}

static bool ident_cont(unsigned char c) {
  return ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

/* Parses dot-separated SQL identifiers as PostgreSQL does: unquoted ones
 * folded to lower case, "quoted" ones kept exactly ("" is a quote). Returns
 * the number of parts (at most maxp), or -1 with *off and *why set. */
static int ident_parse(const char *s, size_t len, ident_t *out, int maxp,
                       size_t *off, const char **why) {
  size_t i = 0;
  int parts = 0;
  for (;;) {
    if (parts == maxp) {
      *off = i;
      *why = maxp == 1 ? "expected one name, without a dot"
                       : "too many dotted parts";
      return -1;
    }
    char *o = out[parts];
    size_t n = 0;
    if (i < len && s[i] == '"') {
      size_t start = i++;
      for (;;) {
        if (i >= len) {
          *off = start;
          *why = "unterminated quoted identifier";
          return -1;
        }
        if (s[i] == '"') {
          if (i + 1 < len && s[i + 1] == '"')
            i++;
          else
            break;
        }
        if (n == PV_RULES_NAME_MAX) {
          *off = start;
          *why = "identifier longer than 63 bytes";
          return -1;
        }
        o[n++] = s[i++];
      }
      i++; /* closing quote */
      if (n == 0) {
        *off = start;
        *why = "empty quoted identifier";
        return -1;
      }
    } else {
      if (i >= len || !ident_start((unsigned char)s[i])) {
        *off = i;
        *why = "expected an identifier (a letter or _ first, or \"quoted\")";
        return -1;
      }
      size_t start = i;
      while (i < len && ident_cont((unsigned char)s[i])) {
        if (n == PV_RULES_NAME_MAX) {
          *off = start;
          *why = "identifier longer than 63 bytes";
          return -1;
        }
        char c = s[i++];
        o[n++] = (char)((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c);
      }
    }
    o[n] = '\0';
    parts++;
    if (i == len)
      return parts;
    if (s[i] != '.') {
      *off = i;
      *why = "unexpected character in identifier (quote it: '\"Name\"')";
      return -1;
    }
    i++;
  }
}

/* One identifier (a column, a role). */
static bool ident1(ld_t *ld, const yaml_node_t *n, const char *what,
                   ident_t out) {
  const char *s;
  size_t len, off;
  const char *why;
  if (!get_str(ld, n, what, &s, &len))
    return false;
  if (ident_parse(s, len, (ident_t *)out, 1, &off, &why) == 1)
    return true;
  char q[SHOW_MAX + 4];
  pv_rules__err_add(ld->el, mline(n->start_mark), scalar_col(n, off),
                    "%s '%s': %s", what, show(q, s, len), why);
  return false;
}

/* One or two identifiers; *nparts says which. */
static bool ident12(ld_t *ld, const yaml_node_t *n, const char *what,
                    ident_t out[2], int *nparts) {
  const char *s;
  size_t len, off;
  const char *why;
  if (!get_str(ld, n, what, &s, &len))
    return false;
  *nparts = ident_parse(s, len, out, 2, &off, &why);
  if (*nparts > 0)
    return true;
  char q[SHOW_MAX + 4];
  pv_rules__err_add(ld->el, mline(n->start_mark), scalar_col(n, off),
                    "%s '%s': %s", what, show(q, s, len), why);
  return false;
}

/* schema.table, schema required. */
static bool ident_qualified(ld_t *ld, const yaml_node_t *n, const char *what,
                            ident_t out[2]) {
  int parts;
  if (!ident12(ld, n, what, out, &parts))
    return false;
  if (parts == 2)
    return true;
  char q[SHOW_MAX + 4];
  ERR_AT(ld, n, "%s '%s' must be schema-qualified, e.g. public.%s", what,
         show(q, n->data.scalar.value, n->data.scalar.length), out[0]);
  return false;
}

static char *adup(ld_t *ld, const char *s) {
  return pv_rules__strdup(ld->ar, s, strlen(s));
}

/* ---- Scalars ------------------------------------------------------------ */

/* A duration "5s", "500ms", "2m", "1h", between 1 ms and 24 h. */
static bool get_duration(ld_t *ld, const yaml_node_t *n, const char *what,
                         uint64_t *ms) {
  const char *s;
  size_t len, i = 0;
  if (!get_str(ld, n, what, &s, &len))
    return false;
  uint64_t v = 0;
  while (i < len && s[i] >= '0' && s[i] <= '9' && v < 100000000)
    v = v * 10 + (uint64_t)(s[i++] - '0');
  const char *u = s + i;
  size_t ul = len - i;
  uint64_t mult = 0;
  if (ul == 2 && memcmp(u, "ms", 2) == 0)
    mult = 1;
  else if (ul == 1 && *u == 's')
    mult = 1000;
  else if (ul == 1 && *u == 'm')
    mult = 60000;
  else if (ul == 1 && *u == 'h')
    mult = 3600000;
  char q[SHOW_MAX + 4];
  if (i == 0 || !mult) {
    pv_rules__err_add(ld->el, mline(n->start_mark), scalar_col(n, i),
                      "%s: expected a duration such as 500ms, 5s, 2m or 1h, "
                      "got '%s'",
                      what, show(q, s, len));
    return false;
  }
  v *= mult;
  if (v == 0 || v > 24ull * 3600000) {
    ERR_AT(ld, n, "%s: '%s' is out of range (1ms to 24h)", what,
           show(q, s, len));
    return false;
  }
  *ms = v;
  return true;
}

/* One of `words`; returns its index or -1 after reporting. */
static int get_word(ld_t *ld, const yaml_node_t *n, const char *what,
                    const char *const *words, size_t nwords) {
  const char *s;
  size_t len;
  if (!get_str(ld, n, what, &s, &len))
    return -1;
  for (size_t i = 0; i < nwords; i++)
    if (str_is(n, words[i]))
      return (int)i;
  char list[128] = "", q[SHOW_MAX + 4];
  for (size_t j = 0; j < nwords; j++)
    snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
             j ? " or " : "", words[j]);
  ERR_AT(ld, n, "%s: expected %s, got '%s'", what, list, show(q, s, len));
  return -1;
}

static bool get_action(ld_t *ld, const yaml_node_t *n, const char *what,
                       pv_action_t *a) {
  if (n->type != YAML_SCALAR_NODE || is_null(n)) {
    ERR_AT(ld, n,
           "%s: expected an action (clear, withhold, hash, mask(...), "
           "mask_email, generalize(...), redact('...')), got %s",
           what, kind_name(n));
    return false;
  }
  const char *s;
  size_t len;
  if (!get_str(ld, n, what, &s, &len))
    return false;
  char why[256] = "";
  size_t off = 0;
  if (pv_action_parse(s, len, a, why, sizeof why, &off) == 0)
    return true;
  why[sizeof why - 1] = '\0';
  for (char *w = why; *w; w++) /* it may quote the file: keep one line */
    if ((unsigned char)*w < 0x20 || *w == 0x7f)
      *w = '?';
  pv_rules__err_add(ld->el, mline(n->start_mark), scalar_col(n, off), "%s: %s",
                    what, why[0] ? why : "not a valid action");
  return false;
}

/* ---- Sorting and duplicates -------------------------------------------- */

typedef struct {
  const char *a, *b; /* b may be NULL */
  uint32_t line, col;
  size_t idx;
} named_t;

static int cmp_opt(const char *x, const char *y) {
  if (!x || !y)
    return (x != NULL) - (y != NULL);
  return strcmp(x, y);
}

static int named_cmp(const void *pa, const void *pb) {
  const named_t *x = pa, *y = pb;
  int c = cmp_opt(x->a, y->a);
  if (!c)
    c = cmp_opt(x->b, y->b);
  if (!c)
    c = x->line < y->line ? -1 : x->line > y->line;
  if (!c)
    c = x->col < y->col ? -1 : x->col > y->col;
  return c;
}

/* Sorts v and reports each entry equal to its predecessor as a duplicate;
 * those get idx = SIZE_MAX. */
static void sort_dups(ld_t *ld, named_t *v, size_t n, const char *what) {
  qsort(v, n, sizeof *v, named_cmp);
  for (size_t i = 1; i < n; i++) {
    if (cmp_opt(v[i].a, v[i - 1].a) || cmp_opt(v[i].b, v[i - 1].b))
      continue;
    size_t first = i - 1;
    while (v[first].idx == SIZE_MAX)
      first--;
    pv_rules__err_add(ld->el, v[i].line, v[i].col,
                      "duplicate %s '%s%s%s' (first at line %u)", what,
                      v[i].b ? v[i].a : "", v[i].b ? "." : "",
                      v[i].b ? v[i].b : v[i].a, v[first].line);
    v[i].idx = SIZE_MAX;
  }
}

/* ---- purposes ------------------------------------------------------------ */

static bool purpose_name_ok(ld_t *ld, const yaml_node_t *k) {
  const char *s;
  size_t len;
  if (!get_str(ld, k, "purpose name", &s, &len))
    return false;
  char q[SHOW_MAX + 4];
  bool ok = len <= PV_RULES_NAME_MAX && s[0] >= 'a' && s[0] <= 'z';
  for (size_t i = 0; ok && i < len; i++)
    ok = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
         s[i] == '_';
  if (!ok) {
    ERR_AT(ld, k,
           "purpose name '%s': expected lower-case letters, digits and _, "
           "starting with a letter, at most 63 bytes",
           show(q, s, len));
    return false;
  }
  if (str_is(k, "none") || str_is(k, "default")) {
    ERR_AT(ld, k, "purpose name '%s' is reserved", s);
    return false;
  }
  return true;
}

static void load_roles(ld_t *ld, pv_rules_purpose_t *p, const yaml_node_t *v,
                       const char *pname) {
  char what[96];
  snprintf(what, sizeof what, "purposes.%s.roles", pname);
  if (!expect(ld, v, YAML_SEQUENCE_NODE, what))
    return;
  size_t n = nitems(v);
  if (n == 0) {
    ERR_AT(ld, v, "%s: expected at least one role", what);
    return;
  }
  if (n > ld->lim->max_roles) {
    ERR_AT(ld, v, "%s: %zu roles, over the limit of %zu", what, n,
           ld->lim->max_roles);
    n = ld->lim->max_roles;
  }
  named_t *tmp = calloc(n, sizeof *tmp);
  const char **roles = pv_rules__alloc(ld->ar, n, sizeof *roles);
  if (!tmp || !roles) {
    free(tmp);
    ld->ar->oom = true;
    return;
  }
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    yaml_node_t *item = node(ld, v->data.sequence.items.start[i]);
    ident_t id;
    if (!item || !ident1(ld, item, "role", id))
      continue;
    tmp[m] = (named_t){adup(ld, id), NULL, mline(item->start_mark),
                       mcol(item->start_mark), m};
    m++;
  }
  sort_dups(ld, tmp, m, "role");
  size_t k = 0;
  for (size_t i = 0; i < m; i++)
    if (tmp[i].idx != SIZE_MAX && tmp[i].a)
      roles[k++] = tmp[i].a;
  free(tmp);
  p->roles = roles;
  p->nroles = k;
}

static void load_purpose(ld_t *ld, pv_rules_purpose_t *p,
                         const yaml_node_t *v) {
  char where[96];
  snprintf(where, sizeof where, "in purpose '%s'", p->name);
  if (!expect(ld, v, YAML_MAPPING_NODE, where + 3))
    return;
  static const char *const keys[] = {"roles", "consent", "explain"};
  yaml_node_t *val[3];
  map_keys(ld, v, keys, 3, val, NULL, where);
  if (!val[0])
    ERR_AT(ld, v,
           "purpose '%s': missing 'roles' (the roles that may "
           "declare it)",
           p->name);
  else
    load_roles(ld, p, val[0], p->name);
  static const char *const modes[] = {"opt_in", "opt_out"};
  if (val[1]) {
    int m = get_word(ld, val[1], "consent", modes, 2);
    p->consent = m == 1 ? PV_CONSENT_OPT_OUT : PV_CONSENT_OPT_IN;
  }
  static const char *const explains[] = {"none", "notice"};
  if (val[2])
    p->explain = get_word(ld, val[2], "explain", explains, 2) == 1
                     ? PV_EXPLAIN_NOTICE
                     : PV_EXPLAIN_NONE;
}

static void load_purposes(ld_t *ld, const yaml_node_t *v) {
  if (!v || is_null(v) || !expect(ld, v, YAML_MAPPING_NODE, "purposes"))
    return;
  size_t n = npairs(v);
  if (n > ld->lim->max_purposes) {
    ERR_AT(ld, v, "purposes: %zu purposes, over the limit of %zu", n,
           ld->lim->max_purposes);
    n = ld->lim->max_purposes;
  }
  ld->purposes = pv_rules__alloc(ld->ar, n, sizeof *ld->purposes);
  if (!ld->purposes)
    return;
  ld->r->purposes = ld->purposes;
  for (size_t i = 0; i < n; i++) {
    yaml_node_pair_t *pr = &v->data.mapping.pairs.start[i];
    yaml_node_t *k = node(ld, pr->key), *val = node(ld, pr->value);
    if (!k || !val || !purpose_name_ok(ld, k))
      continue;
    const char *name = (const char *)k->data.scalar.value;
    bool dup = false;
    for (size_t j = 0; j < ld->r->npurposes && !dup; j++)
      if (strcmp(ld->purposes[j].name, name) == 0) {
        ERR_AT(ld, k, "duplicate purpose '%s' (first at line %u)", name,
               ld->purposes[j].line);
        dup = true;
      }
    if (dup)
      continue;
    pv_rules_purpose_t *p = &ld->purposes[ld->r->npurposes++];
    p->name = adup(ld, name);
    p->line = mline(k->start_mark);
    if (!p->name)
      return;
    load_purpose(ld, p, val);
  }
}

/* Index of a purpose named exactly by a node, or PV_PURPOSE_UNKNOWN. */
static int purpose_index(ld_t *ld, const yaml_node_t *k) {
  for (size_t i = 0; i < ld->r->npurposes; i++)
    if (str_is(k, ld->purposes[i].name))
      return (int)i;
  return PV_PURPOSE_UNKNOWN;
}

static void purposes_list(ld_t *ld, char *out, size_t cap) {
  out[0] = '\0';
  for (size_t i = 0; i < ld->r->npurposes; i++)
    snprintf(out + strlen(out), cap - strlen(out), "%s%s", i ? ", " : "",
             ld->purposes[i].name);
  if (!ld->r->npurposes)
    snprintf(out, cap, "none declared");
}

/* ---- defaults ------------------------------------------------------------ */

static void load_purpose_by_role(ld_t *ld, const yaml_node_t *v) {
  const char *what = "defaults.purpose_by_role";
  if (is_null(v) || !expect(ld, v, YAML_MAPPING_NODE, what))
    return;
  size_t n = npairs(v);
  if (n > ld->lim->max_roles) {
    ERR_AT(ld, v, "%s: %zu roles, over the limit of %zu", what, n,
           ld->lim->max_roles);
    n = ld->lim->max_roles;
  }
  named_t *tmp = calloc(n ? n : 1, sizeof *tmp);
  pv_rules_role_default_t *rd = pv_rules__alloc(ld->ar, n, sizeof *rd);
  pv_rules_role_default_t *out = pv_rules__alloc(ld->ar, n, sizeof *out);
  if (!tmp || !rd || !out) {
    free(tmp);
    ld->ar->oom = true;
    return;
  }
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    yaml_node_pair_t *pr = &v->data.mapping.pairs.start[i];
    yaml_node_t *k = node(ld, pr->key), *val = node(ld, pr->value);
    ident_t role;
    if (!k || !val || !ident1(ld, k, "role", role))
      continue;
    const char *ps;
    size_t pl;
    if (!get_str(ld, val, "default purpose", &ps, &pl))
      continue;
    int pi = str_is(val, "none") ? PV_PURPOSE_NONE : purpose_index(ld, val);
    char q[SHOW_MAX + 4], list[256];
    if (pi == PV_PURPOSE_UNKNOWN) {
      purposes_list(ld, list, sizeof list);
      ERR_AT(ld, val, "purpose '%s' is not declared under purposes (%s)",
             show(q, ps, pl), list);
      continue;
    }
    if (pi >= 0) {
      const pv_rules_purpose_t *p = &ld->purposes[pi];
      bool may = false;
      for (size_t j = 0; j < p->nroles && !may; j++)
        may = strcmp(p->roles[j], role) == 0;
      if (!may) {
        ERR_AT(ld, k,
               "role '%s' has default purpose '%s' but may not declare it "
               "(add it to purposes.%s.roles)",
               role, p->name, p->name);
        continue;
      }
    }
    rd[m] = (pv_rules_role_default_t){adup(ld, role), pi, mline(k->start_mark)};
    tmp[m] = (named_t){rd[m].role, NULL, mline(k->start_mark),
                       mcol(k->start_mark), m};
    m++;
  }
  sort_dups(ld, tmp, m, "role");
  size_t c = 0;
  for (size_t i = 0; i < m; i++)
    if (tmp[i].idx != SIZE_MAX && tmp[i].a)
      out[c++] = rd[tmp[i].idx];
  free(tmp);
  ld->r->role_defaults = out;
  ld->r->nrole_defaults = c;
}

static void load_defaults(ld_t *ld, const yaml_node_t *v) {
  if (!v || is_null(v) || !expect(ld, v, YAML_MAPPING_NODE, "defaults"))
    return;
  static const char *const keys[] = {"purpose_by_role"};
  yaml_node_t *val[1];
  map_keys(ld, v, keys, 1, val, NULL, "in defaults");
  if (val[0])
    load_purpose_by_role(ld, val[0]);
}

/* ---- consent ------------------------------------------------------------- */

static void load_consent(ld_t *ld, const yaml_node_t *v) {
  pv_rules_consent_t *c = &ld->r->consent;
  if (!v || is_null(v))
    return;
  ld->consent_declared = true;
  if (!expect(ld, v, YAML_MAPPING_NODE, "consent"))
    return;
  c->line = mline(v->start_mark);
  static const char *const keys[] = {
      "table",         "subject_column",  "purpose_column", "granted_column",
      "max_staleness", "resync_interval", "notify_channel"};
  yaml_node_t *val[7];
  map_keys(ld, v, keys, 7, val, NULL, "in consent");
  bool ok = true;
  for (size_t i = 0; i < 4; i++)
    if (!val[i]) {
      ERR_AT(ld, v, "consent: missing '%s'", keys[i]);
      ok = false;
    }
  ident_t t[2], col;
  if (val[0] && ident_qualified(ld, val[0], "consent table", t)) {
    c->schema = adup(ld, t[0]);
    c->table = adup(ld, t[1]);
  } else {
    ok = false;
  }
  const char **cols[3] = {&c->subject_column, &c->purpose_column,
                          &c->granted_column};
  for (size_t i = 0; i < 3; i++) {
    if (val[i + 1] && ident1(ld, val[i + 1], keys[i + 1], col))
      *cols[i] = adup(ld, col);
    else
      ok = false;
  }
  if (val[4] &&
      !get_duration(ld, val[4], "max_staleness", &c->max_staleness_ms))
    ok = false;
  if (val[5] &&
      !get_duration(ld, val[5], "resync_interval", &c->resync_interval_ms))
    ok = false;
  if (val[6]) {
    if (ident1(ld, val[6], "notify_channel", col))
      c->notify_channel = adup(ld, col);
    else
      ok = false;
  }
  c->configured = ok;
}

/* ---- allow_functions ----------------------------------------------------- */

static void load_functions(ld_t *ld, const yaml_node_t *v) {
  const char *what = "allow_functions";
  if (!v || is_null(v) || !expect(ld, v, YAML_SEQUENCE_NODE, what))
    return;
  size_t n = nitems(v);
  if (n > ld->lim->max_functions) {
    ERR_AT(ld, v, "%s: %zu functions, over the limit of %zu", what, n,
           ld->lim->max_functions);
    n = ld->lim->max_functions;
  }
  named_t *tmp = calloc(n ? n : 1, sizeof *tmp);
  pv_rules_function_t *f = pv_rules__alloc(ld->ar, n, sizeof *f);
  if (!tmp || !f) {
    free(tmp);
    ld->ar->oom = true;
    return;
  }
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    yaml_node_t *item = node(ld, v->data.sequence.items.start[i]);
    ident_t id[2];
    int parts;
    if (!item || !ident12(ld, item, "function", id, &parts))
      continue;
    const char *schema = parts == 2 ? adup(ld, id[0]) : NULL;
    const char *name = adup(ld, id[parts - 1]);
    /* Sorted with the bare name first so duplicates are adjacent. */
    tmp[m] = (named_t){schema ? schema : name, schema ? name : NULL,
                       mline(item->start_mark), mcol(item->start_mark), m};
    m++;
  }
  sort_dups(ld, tmp, m, "function");
  size_t c = 0;
  for (size_t i = 0; i < m; i++)
    if (tmp[i].idx != SIZE_MAX && tmp[i].a)
      f[c++] = tmp[i].b ? (pv_rules_function_t){tmp[i].a, tmp[i].b}
                        : (pv_rules_function_t){NULL, tmp[i].a};
  free(tmp);
  ld->r->functions = f;
  ld->r->nfunctions = c;
}

/* ---- tables and columns -------------------------------------------------- */

static void finish_decision(pv_rules_decision_t *d, bool filter_allow) {
  d->filter_allow = filter_allow || pv_rules_decision_is_clear(d);
}

/* One action entry of a column: `action` or {action, consent, otherwise,
 * filter}. `pname` is NULL for `default`. */
static void load_decision(ld_t *ld, const yaml_node_t *v, const char *pname,
                          const char *colname, pv_rules_decision_t *d) {
  char what[200];
  snprintf(what, sizeof what, "column %s, %s", colname,
           pname ? pname : "default");
  d->line = mline(v->start_mark);
  d->col = mcol(v->start_mark);
  d->action.kind = PV_ACT_WITHHOLD;
  d->otherwise.kind = PV_ACT_WITHHOLD;
  if (v->type != YAML_MAPPING_NODE) {
    (void)get_action(ld, v, what, &d->action);
    finish_decision(d, false);
    return;
  }
  static const char *const keys[] = {"action", "consent", "otherwise",
                                     "filter"};
  yaml_node_t *val[4], *kpos[4];
  char where[220];
  snprintf(where, sizeof where, "in %s", what);
  map_keys(ld, v, keys, 4, val, kpos, where);
  if (!val[0])
    ERR_AT(ld, v, "%s: missing 'action'", what);
  else
    (void)get_action(ld, val[0], what, &d->action);
  static const char *const cwords[] = {"required", "none"};
  if (val[1] && get_word(ld, val[1], "consent", cwords, 2) == 0) {
    if (!pname)
      ERR_AT(ld, kpos[1],
             "%s: consent: required is not allowed on default (consent is "
             "given per purpose; put it on a purpose entry)",
             what);
    else if (!ld->consent_declared)
      ERR_AT(ld, val[1],
             "%s: consent: required needs a top-level consent: section "
             "naming the consent table",
             what);
    else
      d->consent_required = true;
  }
  if (val[2]) {
    if (!val[1] || !str_is(val[1], "required"))
      ERR_AT(ld, kpos[2],
             "%s: 'otherwise' applies only with consent: "
             "required",
             what);
    else
      (void)get_action(ld, val[2], what, &d->otherwise);
  }
  static const char *const fwords[] = {"allow", "deny"};
  bool allow = val[3] && get_word(ld, val[3], "filter", fwords, 2) == 0;
  finish_decision(d, allow);
}

static void load_column(ld_t *ld, const yaml_node_t *v, pv_rules_column_t *c) {
  c->dflt.action.kind = PV_ACT_WITHHOLD; /* fail closed */
  c->dflt.otherwise.kind = PV_ACT_WITHHOLD;
  if (v->type == YAML_SCALAR_NODE) {
    load_decision(ld, v, NULL, c->name, &c->dflt);
    return;
  }
  char what[96];
  snprintf(what, sizeof what, "column %s", c->name);
  if (!expect(ld, v, YAML_MAPPING_NODE, what))
    return;
  size_t n = npairs(v);
  pv_rules_entry_t *e = pv_rules__alloc(ld->ar, n, sizeof *e);
  if (!e)
    return;
  c->entries = e;
  const yaml_node_t *dflt_key = NULL;
  for (size_t i = 0; i < n; i++) {
    yaml_node_pair_t *pr = &v->data.mapping.pairs.start[i];
    yaml_node_t *k = node(ld, pr->key), *val = node(ld, pr->value);
    if (!k || !val)
      continue;
    if (k->type != YAML_SCALAR_NODE) {
      ERR_AT(ld, k, "%s: expected 'default' or a purpose name, got %s", what,
             kind_name(k));
      continue;
    }
    if (str_is(k, "default")) {
      if (dflt_key) {
        ERR_AT(ld, k, "%s: duplicate key 'default' (first at line %u)", what,
               mline(dflt_key->start_mark));
        continue;
      }
      dflt_key = k;
      load_decision(ld, val, NULL, c->name, &c->dflt);
      continue;
    }
    int pi = purpose_index(ld, k);
    char q[SHOW_MAX + 4], list[256];
    if (pi < 0) {
      purposes_list(ld, list, sizeof list);
      ERR_AT(ld, k, "%s: '%s' is neither 'default' nor a declared purpose (%s)",
             what, show(q, k->data.scalar.value, k->data.scalar.length), list);
      continue;
    }
    bool dup = false;
    for (size_t j = 0; j < c->nentries && !dup; j++)
      if (e[j].purpose == pi) {
        ERR_AT(ld, k, "%s: duplicate key '%s' (first at line %u)", what,
               ld->purposes[pi].name, e[j].d.line);
        dup = true;
      }
    if (dup)
      continue;
    e[c->nentries].purpose = pi;
    load_decision(ld, val, ld->purposes[pi].name, c->name, &e[c->nentries].d);
    c->nentries++;
  }
}

static int column_cmp(const void *pa, const void *pb) {
  const pv_rules_column_t *a = pa, *b = pb;
  int c = strcmp(a->name, b->name);
  return c ? c : (a->line < b->line ? -1 : a->line > b->line);
}

static void load_columns(ld_t *ld, pv_rules_table_t *t, const yaml_node_t *v,
                         const char *tname) {
  char what[160];
  snprintf(what, sizeof what, "table %s, columns", tname);
  if (is_null(v) || !expect(ld, v, YAML_MAPPING_NODE, what))
    return;
  size_t n = npairs(v);
  size_t room = ld->lim->max_columns - ld->r->ncolumns;
  if (n > room) {
    if (!ld->columns_limit_hit)
      ERR_AT(ld, v, "%s: over the limit of %zu columns in all tables", what,
             ld->lim->max_columns);
    ld->columns_limit_hit = true;
    n = room;
  }
  pv_rules_column_t *cols = pv_rules__alloc(ld->ar, n, sizeof *cols);
  if (!cols)
    return;
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    yaml_node_pair_t *pr = &v->data.mapping.pairs.start[i];
    yaml_node_t *k = node(ld, pr->key), *val = node(ld, pr->value);
    ident_t id;
    if (!k || !val || !ident1(ld, k, "column name", id))
      continue;
    pv_rules_column_t *c = &cols[m];
    c->name = adup(ld, id);
    if (!c->name)
      return;
    c->line = mline(k->start_mark);
    c->col = mcol(k->start_mark);
    load_column(ld, val, c);
    m++;
  }
  qsort(cols, m, sizeof *cols, column_cmp);
  for (size_t i = 1; i < m; i++)
    if (strcmp(cols[i].name, cols[i - 1].name) == 0)
      pv_rules__err_add(ld->el, cols[i].line, cols[i].col,
                        "table %s: duplicate column '%s' (first at line %u)",
                        tname, cols[i].name, cols[i - 1].line);
  t->columns = cols;
  t->ncolumns = m;
  ld->r->ncolumns += m;
}

static bool load_table(ld_t *ld, const yaml_node_t *k, const yaml_node_t *v,
                       pv_rules_table_t *t) {
  ident_t id[2];
  bool named = ident_qualified(ld, k, "table name", id);
  char tname[2 * sizeof(ident_t) + 2];
  if (named)
    snprintf(tname, sizeof tname, "%s.%s", id[0], id[1]);
  else if (k->type == YAML_SCALAR_NODE)
    show(tname, k->data.scalar.value, k->data.scalar.length);
  else
    snprintf(tname, sizeof tname, "?");
  char what[160];
  snprintf(what, sizeof what, "table %s", tname);
  if (!expect(ld, v, YAML_MAPPING_NODE, what))
    return false;
  static const char *const keys[] = {"subject", "columns"};
  yaml_node_t *val[2];
  char where[180];
  snprintf(where, sizeof where, "in table %s", tname);
  map_keys(ld, v, keys, 2, val, NULL, where);
  ident_t subj;
  if (!val[0])
    ERR_AT(ld, k,
           "table %s: missing 'subject' (the column that identifies the "
           "data subject, e.g. subject: id)",
           tname);
  else if (ident1(ld, val[0], "subject", subj))
    t->subject = adup(ld, subj);
  if (!val[1])
    ERR_AT(ld, k, "table %s: missing 'columns'", tname);
  else
    load_columns(ld, t, val[1], tname);
  if (!named)
    return false;
  t->schema = adup(ld, id[0]);
  t->name = adup(ld, id[1]);
  t->line = mline(k->start_mark);
  t->col = mcol(k->start_mark);
  return t->schema && t->name;
}

static int table_cmp(const void *pa, const void *pb) {
  const pv_rules_table_t *a = pa, *b = pb;
  int c = strcmp(a->schema, b->schema);
  if (!c)
    c = strcmp(a->name, b->name);
  return c ? c : (a->line < b->line ? -1 : a->line > b->line);
}

static void load_tables(ld_t *ld, const yaml_node_t *v) {
  if (is_null(v) || !expect(ld, v, YAML_MAPPING_NODE, "tables"))
    return;
  size_t n = npairs(v);
  if (n > ld->lim->max_tables) {
    ERR_AT(ld, v, "tables: %zu tables, over the limit of %zu", n,
           ld->lim->max_tables);
    n = ld->lim->max_tables;
  }
  pv_rules_table_t *t = pv_rules__alloc(ld->ar, n, sizeof *t);
  if (!t)
    return;
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    yaml_node_pair_t *pr = &v->data.mapping.pairs.start[i];
    yaml_node_t *k = node(ld, pr->key), *val = node(ld, pr->value);
    if (k && val && load_table(ld, k, val, &t[m]))
      m++;
    else
      memset(&t[m], 0, sizeof t[m]);
  }
  qsort(t, m, sizeof *t, table_cmp);
  for (size_t i = 0; i < m; i++) {
    if (i && strcmp(t[i].schema, t[i - 1].schema) == 0 &&
        strcmp(t[i].name, t[i - 1].name) == 0)
      pv_rules__err_add(ld->el, t[i].line, t[i].col,
                        "duplicate table '%s.%s' (first at line %u)",
                        t[i].schema, t[i].name, t[i - 1].line);
    /* Back pointers only now that the tables stopped moving. */
    for (size_t j = 0; j < t[i].ncolumns; j++)
      ((pv_rules_column_t *)t[i].columns)[j].table = &t[i];
  }
  ld->r->tables = t;
  ld->r->ntables = m;
}

/* ---- Root ---------------------------------------------------------------- */

static void load_root(ld_t *ld, const yaml_node_t *root) {
  if (is_null(root)) {
    pv_rules__err_add(ld->el, 1, 1,
                      "empty rules file: expected a mapping starting with "
                      "'version: 1'");
    return;
  }
  if (root->type != YAML_MAPPING_NODE) {
    ERR_AT(ld, root,
           "the rules file must be a mapping of keys (version, purposes, "
           "tables, ...), got %s",
           kind_name(root));
    return;
  }
  static const char *const keys[] = {"version", "purposes",        "defaults",
                                     "consent", "allow_functions", "tables"};
  yaml_node_t *val[6];
  map_keys(ld, root, keys, 6, val, NULL, "at the top level");
  char q[SHOW_MAX + 4];
  if (!val[0])
    ERR_AT(ld, root, "missing 'version: 1' at the top level");
  else if (!str_is(val[0], "1"))
    ERR_AT(ld, val[0], "version: expected 1 (the only version), got %s%s%s",
           val[0]->type == YAML_SCALAR_NODE ? "'" : "",
           val[0]->type == YAML_SCALAR_NODE
               ? show(q, val[0]->data.scalar.value, val[0]->data.scalar.length)
               : kind_name(val[0]),
           val[0]->type == YAML_SCALAR_NODE ? "'" : "");
  /* Order matters: columns refer to purposes and to the consent table. */
  load_purposes(ld, val[1]);
  load_consent(ld, val[3]);
  load_functions(ld, val[4]);
  load_defaults(ld, val[2]);
  if (!val[5])
    ERR_AT(ld, root, "missing 'tables' at the top level");
  else
    load_tables(ld, val[5]);
}

/* ---- YAML stream --------------------------------------------------------- */

/* Line and column of a byte offset, for libyaml reader errors. */
static void offset_pos(const char *buf, size_t len, size_t off, uint32_t *line,
                       uint32_t *col) {
  *line = 1;
  *col = 1;
  for (size_t i = 0; i < off && i < len; i++) {
    if (buf[i] == '\n') {
      (*line)++;
      *col = 1;
    } else if (((unsigned char)buf[i] & 0xC0) != 0x80) {
      (*col)++;
    }
  }
}

static void yaml_error(ld_t *ld, const yaml_parser_t *p, const char *buf,
                       size_t len) {
  const char *problem = p->problem ? p->problem : "malformed YAML";
  if (p->error == YAML_READER_ERROR) {
    uint32_t line, col;
    offset_pos(buf, len, p->problem_offset, &line, &col);
    pv_rules__err_add(ld->el, line, col, "YAML: %s", problem);
  } else if (p->error == YAML_MEMORY_ERROR) {
    ld->ar->oom = true;
  } else if (p->context) {
    pv_rules__err_add(ld->el, mline(p->problem_mark), mcol(p->problem_mark),
                      "YAML: %s %s (line %u)", problem, p->context,
                      mline(p->context_mark));
  } else {
    pv_rules__err_add(ld->el, mline(p->problem_mark), mcol(p->problem_mark),
                      "YAML: %s", problem);
  }
}

/* A first pass over the event stream: syntax errors, aliases, several
 * documents, node count and depth, before libyaml builds a tree. Returns
 * the number of documents, or -1 after reporting. */
static int prescan(ld_t *ld, const char *buf, size_t len) {
  yaml_parser_t p;
  if (!yaml_parser_initialize(&p)) {
    ld->ar->oom = true;
    return -1;
  }
  yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
  size_t nodes = 0, depth = 0;
  int docs = 0, rc = -1;
  for (;;) {
    yaml_event_t ev;
    if (!yaml_parser_parse(&p, &ev)) {
      yaml_error(ld, &p, buf, len);
      break;
    }
    yaml_event_type_t t = ev.type;
    uint32_t line = mline(ev.start_mark), col = mcol(ev.start_mark);
    bool stop = false;
    if (t == YAML_ALIAS_EVENT) {
      pv_rules__err_add(ld->el, line, col,
                        "YAML aliases (*name) are not supported: write each "
                        "rule out");
      stop = true;
    } else if (t == YAML_DOCUMENT_START_EVENT && ++docs > 1) {
      pv_rules__err_add(ld->el, line, col,
                        "several YAML documents: a rules file holds one");
      stop = true;
    } else if (t == YAML_SCALAR_EVENT || t == YAML_SEQUENCE_START_EVENT ||
               t == YAML_MAPPING_START_EVENT) {
      if (++nodes > ld->lim->max_nodes) {
        pv_rules__err_add(ld->el, line, col,
                          "more than %zu YAML nodes: file too complex",
                          ld->lim->max_nodes);
        stop = true;
      }
      if (t != YAML_SCALAR_EVENT && ++depth > ld->lim->max_depth) {
        pv_rules__err_add(ld->el, line, col,
                          "YAML nested more than %zu levels deep",
                          ld->lim->max_depth);
        stop = true;
      }
    } else if (t == YAML_SEQUENCE_END_EVENT || t == YAML_MAPPING_END_EVENT) {
      depth--;
    }
    yaml_event_delete(&ev);
    if (stop)
      break;
    if (t == YAML_STREAM_END_EVENT) {
      rc = docs;
      break;
    }
  }
  yaml_parser_delete(&p);
  return rc;
}

static void load_yaml(ld_t *ld, const char *buf, size_t len) {
  int docs = prescan(ld, buf, len);
  if (docs < 0)
    return;
  if (docs == 0) {
    pv_rules__err_add(ld->el, 1, 1,
                      "empty rules file: expected a mapping starting with "
                      "'version: 1'");
    return;
  }
  yaml_parser_t p;
  yaml_document_t doc;
  if (!yaml_parser_initialize(&p)) {
    ld->ar->oom = true;
    return;
  }
  yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
  if (!yaml_parser_load(&p, &doc)) {
    yaml_error(ld, &p, buf, len);
    yaml_parser_delete(&p);
    return;
  }
  ld->doc = &doc;
  yaml_node_t *root = yaml_document_get_root_node(&doc);
  if (root)
    load_root(ld, root);
  else
    pv_rules__err_add(ld->el, 1, 1, "empty rules file");
  ld->doc = NULL;
  yaml_document_delete(&doc);
  yaml_parser_delete(&p);
}

/* ---- Entry points -------------------------------------------------------- */

int pv_rules_load_buffer_limits(const char *buf, size_t len, const char *name,
                                const pv_rules_limits_t *lim, pv_rules_t **out,
                                pv_rules_errors_t **errs) {
  if (!out || !errs || (!buf && len))
    return PV_EINVAL;
  *out = NULL;
  *errs = NULL;
  pv_rules_limits_t dl = pv_rules_limits_default();
  if (!lim)
    lim = &dl;
  if (!name)
    name = "<rules>";
  pv_rules_errlist_t el;
  pv_rules__err_init(&el, name, lim->max_errors);
  pv_rules_arena_t ar = {0};
  int rc = PV_ESYNTAX;
  if (len > lim->max_file_bytes) {
    pv_rules__err_add(&el, 0, 0,
                      "file is %zu bytes, over the limit of %zu bytes", len,
                      lim->max_file_bytes);
    rc = PV_ETOOBIG;
    goto fail;
  }
  pv_rules_t *r = pv_rules__alloc(&ar, 1, sizeof *r);
  if (!r)
    goto fail;
  r->source = pv_rules__strdup(&ar, name, strlen(name));
  r->nbytes = len;
  r->fingerprint = XXH3_64bits(buf ? buf : "", len);
  r->consent.max_staleness_ms = 5000;
  r->consent.resync_interval_ms = 60000;
  r->consent.notify_channel = "pgveil_consent"; /* static: fine, immutable */
  ld_t ld = {.lim = lim, .el = &el, .ar = &ar, .r = r};
  load_yaml(&ld, buf ? buf : "", len);
  if (ar.oom || el.oom) {
    rc = PV_ENOMEM;
    goto fail;
  }
  if (pv_rules__err_any(&el))
    goto fail;
  pv_rules__err_dispose(&el);
  r->arena = ar.head;
  *out = r;
  return 0;
fail:
  if (ar.oom && rc == PV_ENOMEM)
    pv_rules__err_add(&el, 0, 0, "out of memory while loading rules");
  pv_rules__arena_dispose(ar.head);
  *errs = pv_rules__err_finish(&el);
  return rc;
}

int pv_rules_load_buffer(const char *buf, size_t len, const char *name,
                         pv_rules_t **out, pv_rules_errors_t **errs) {
  return pv_rules_load_buffer_limits(buf, len, name, NULL, out, errs);
}

/* Reads a whole file of at most max bytes; *err describes a failure. */
static int read_file(const char *path, size_t max, char **buf, size_t *len,
                     int *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *err = errno;
    return PV_EIO;
  }
  struct stat st;
  int rc = PV_EIO;
  char *b = NULL;
  if (fstat(fd, &st) != 0) {
    *err = errno;
    goto fail;
  }
  if (!S_ISREG(st.st_mode)) {
    *err = EISDIR;
    goto fail;
  }
  if ((uint64_t)st.st_size > max) {
    *len = (size_t)st.st_size;
    rc = PV_ETOOBIG;
    goto fail;
  }
  /* Read up to max+1 bytes: the file may grow between fstat and read. */
  size_t cap = (size_t)st.st_size + 4096;
  if (cap > max + 1)
    cap = max + 1;
  b = malloc(cap);
  if (!b) {
    rc = PV_ENOMEM;
    goto fail;
  }
  size_t n = 0;
  while (n < cap) {
    ssize_t r = read(fd, b + n, cap - n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      *err = errno;
      goto fail;
    }
    if (r == 0)
      break;
    n += (size_t)r;
  }
  if (n > max) {
    *len = n;
    rc = PV_ETOOBIG;
    goto fail;
  }
  close(fd);
  *buf = b;
  *len = n;
  return 0;
fail:
  free(b);
  close(fd);
  return rc;
}

int pv_rules_load_file(const char *path, pv_rules_t **out,
                       pv_rules_errors_t **errs) {
  if (!path || !out || !errs)
    return PV_EINVAL;
  *out = NULL;
  *errs = NULL;
  pv_rules_limits_t lim = pv_rules_limits_default();
  char *buf = NULL;
  size_t len = 0;
  int err = 0;
  int rc = read_file(path, lim.max_file_bytes, &buf, &len, &err);
  if (rc == 0) {
    rc = pv_rules_load_buffer_limits(buf, len, path, &lim, out, errs);
    free(buf);
    return rc;
  }
  pv_rules_errlist_t el;
  pv_rules__err_init(&el, path, lim.max_errors);
  char eb[128];
  if (rc == PV_ETOOBIG)
    pv_rules__err_add(&el, 0, 0, "file is over the limit of %zu bytes",
                      lim.max_file_bytes);
  else if (rc == PV_ENOMEM)
    pv_rules__err_add(&el, 0, 0, "out of memory reading the file");
  else
    pv_rules__err_add(&el, 0, 0, "cannot read: %s",
                      strerror_r(err, eb, sizeof eb));
  *errs = pv_rules__err_finish(&el);
  return rc;
}
