/* Owns the frozen rules model: its arena, the lookups used when sessions,
 * plans and guard decisions are set up, the --check summary, the error list.
 * Pure: no I/O, no globals; never writes to a pv_rules_t after loading. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rules_internal.h"

/* ---- Arena -------------------------------------------------------------- */

struct pv_rules_blk {
  pv_rules_blk_t *next;
  size_t used, cap;
  _Alignas(max_align_t) unsigned char data[];
};

#define ARENA_BLOCK (32u << 10)
#define ARENA_ALIGN (_Alignof(max_align_t))

void *pv_rules__alloc(pv_rules_arena_t *a, size_t count, size_t size) {
  if (a->oom)
    return NULL;
  if (size && count > SIZE_MAX / size / 2) {
    a->oom = true;
    return NULL;
  }
  size_t n = count * size;
  n = (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
  if (n == 0)
    n = ARENA_ALIGN;
  pv_rules_blk_t *b = a->head;
  if (!b || b->cap - b->used < n) {
    size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
    b = malloc(sizeof *b + cap);
    if (!b) {
      a->oom = true;
      return NULL;
    }
    b->used = 0;
    b->cap = cap;
    /* A large allocation gets its own block behind the current one, so the
     * free space of the current block is not abandoned. */
    if (a->head && cap > ARENA_BLOCK) {
      b->next = a->head->next;
      a->head->next = b;
    } else {
      b->next = a->head;
      a->head = b;
    }
  }
  void *p = b->data + b->used;
  b->used += n;
  memset(p, 0, n);
  return p;
}

char *pv_rules__strdup(pv_rules_arena_t *a, const char *s, size_t len) {
  char *p = pv_rules__alloc(a, len + 1, 1);
  if (p) {
    memcpy(p, s, len);
    p[len] = '\0';
  }
  return p;
}

void pv_rules__arena_dispose(pv_rules_blk_t *head) {
  while (head) {
    pv_rules_blk_t *next = head->next;
    free(head);
    head = next;
  }
}

void pv_rules_free(pv_rules_t *rules) {
  if (rules)
    pv_rules__arena_dispose(rules->arena); /* rules lives in the arena */
}

/* ---- Errors ------------------------------------------------------------- */

void pv_rules__err_init(pv_rules_errlist_t *el, const char *name, size_t max) {
  memset(el, 0, sizeof *el);
  el->name = name;
  el->max = max ? max : 1;
}

void pv_rules__err_add(pv_rules_errlist_t *el, uint32_t line, uint32_t col,
                       const char *fmt, ...) {
  if (el->n >= el->max) {
    el->omitted++;
    return;
  }
  if (el->n == el->cap) {
    size_t cap = el->cap ? el->cap * 2 : 8;
    pv_rules_err_t *v = realloc(el->v, cap * sizeof *v);
    if (!v) {
      el->oom = true;
      el->omitted++;
      return;
    }
    el->v = v;
    el->cap = cap;
  }
  char text[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  char *msg = malloc(strlen(el->name) + strlen(text) + 32);
  if (!msg) {
    el->oom = true;
    el->omitted++;
    return;
  }
  if (line)
    sprintf(msg, "%s:%u:%u: %s", el->name, line, col, text);
  else
    sprintf(msg, "%s: %s", el->name, text);
  el->v[el->n] = (pv_rules_err_t){line, col, (uint32_t)el->n, msg};
  el->n++;
}

bool pv_rules__err_any(const pv_rules_errlist_t *el) {
  return el->n > 0 || el->omitted > 0;
}

static int err_cmp(const void *pa, const void *pb) {
  const pv_rules_err_t *a = pa, *b = pb;
  if (a->line != b->line)
    return a->line < b->line ? -1 : 1;
  if (a->col != b->col)
    return a->col < b->col ? -1 : 1;
  return a->seq < b->seq ? -1 : a->seq > b->seq;
}

pv_rules_errors_t *pv_rules__err_finish(pv_rules_errlist_t *el) {
  pv_rules_errors_t *e = calloc(1, sizeof *e);
  if (!e) {
    pv_rules__err_dispose(el);
    return NULL;
  }
  e->msgs = calloc(el->n ? el->n : 1, sizeof *e->msgs);
  if (!e->msgs) {
    free(e);
    pv_rules__err_dispose(el);
    return NULL;
  }
  if (el->n)
    qsort(el->v, el->n, sizeof *el->v, err_cmp);
  for (size_t i = 0; i < el->n; i++)
    e->msgs[i] = el->v[i].msg;
  e->count = el->n;
  e->omitted = el->omitted;
  free(el->v);
  memset(el, 0, sizeof *el);
  return e;
}

void pv_rules__err_dispose(pv_rules_errlist_t *el) {
  for (size_t i = 0; i < el->n; i++)
    free(el->v[i].msg);
  free(el->v);
  memset(el, 0, sizeof *el);
}

void pv_rules_errors_free(pv_rules_errors_t *errs) {
  if (!errs)
    return;
  for (size_t i = 0; i < errs->count; i++)
    free(errs->msgs[i]);
  free(errs->msgs);
  free(errs);
}

/* ---- Limits ------------------------------------------------------------- */

pv_rules_limits_t pv_rules_limits_default(void) {
  return (pv_rules_limits_t){
      .max_file_bytes = PV_RULES_MAX_FILE_BYTES,
      .max_purposes = PV_RULES_MAX_PURPOSES,
      .max_roles = PV_RULES_MAX_ROLES,
      .max_tables = PV_RULES_MAX_TABLES,
      .max_columns = PV_RULES_MAX_COLUMNS,
      .max_functions = PV_RULES_MAX_FUNCTIONS,
      .max_errors = PV_RULES_MAX_ERRORS,
      .max_nodes = PV_RULES_MAX_NODES,
      .max_depth = PV_RULES_MAX_DEPTH,
  };
}

/* ---- Lookups ------------------------------------------------------------ */

int pv_rules_purpose_find(const pv_rules_t *rules, const char *name) {
  if (!rules || !name)
    return PV_PURPOSE_UNKNOWN;
  if (strcasecmp(name, "none") == 0)
    return PV_PURPOSE_NONE;
  for (size_t i = 0; i < rules->npurposes; i++)
    if (strcasecmp(rules->purposes[i].name, name) == 0)
      return (int)i;
  return PV_PURPOSE_UNKNOWN;
}

static int str_cmp(const void *key, const void *elem) {
  return strcmp((const char *)key, *(const char *const *)elem);
}

bool pv_rules_role_may_declare(const pv_rules_t *rules, const char *role,
                               int purpose) {
  if (purpose == PV_PURPOSE_NONE)
    return true;
  if (!rules || !role || purpose < 0 || (size_t)purpose >= rules->npurposes)
    return false;
  const pv_rules_purpose_t *p = &rules->purposes[purpose];
  if (!p->nroles)
    return false;
  /* roles are sorted by the loader */
  return bsearch(role, p->roles, p->nroles, sizeof *p->roles, str_cmp) != NULL;
}

static int role_default_cmp(const void *key, const void *elem) {
  return strcmp((const char *)key,
                ((const pv_rules_role_default_t *)elem)->role);
}

int pv_rules_default_purpose(const pv_rules_t *rules, const char *role) {
  if (!rules || !role || !rules->nrole_defaults)
    return PV_PURPOSE_NONE;
  const pv_rules_role_default_t *d =
      bsearch(role, rules->role_defaults, rules->nrole_defaults, sizeof *d,
              role_default_cmp);
  return d ? d->purpose : PV_PURPOSE_NONE;
}

typedef struct {
  const char *schema, *name;
} table_key_t;

static int table_key_cmp(const void *key, const void *elem) {
  const table_key_t *k = key;
  const pv_rules_table_t *t = elem;
  int c = strcmp(k->schema, t->schema);
  return c ? c : strcmp(k->name, t->name);
}

const pv_rules_table_t *pv_rules_table_find(const pv_rules_t *rules,
                                            const char *schema,
                                            const char *name) {
  if (!rules || !schema || !name || !rules->ntables)
    return NULL;
  table_key_t k = {schema, name};
  return bsearch(&k, rules->tables, rules->ntables, sizeof *rules->tables,
                 table_key_cmp);
}

static int column_key_cmp(const void *key, const void *elem) {
  return strcmp((const char *)key, ((const pv_rules_column_t *)elem)->name);
}

const pv_rules_column_t *pv_rules_column_find(const pv_rules_table_t *table,
                                              const char *name) {
  if (!table || !name || !table->ncolumns)
    return NULL;
  return bsearch(name, table->columns, table->ncolumns, sizeof *table->columns,
                 column_key_cmp);
}

const pv_rules_decision_t *pv_rules_decide(const pv_rules_column_t *column,
                                           int purpose) {
  if (purpose >= 0)
    for (size_t i = 0; i < column->nentries; i++)
      if (column->entries[i].purpose == purpose)
        return &column->entries[i].d;
  return &column->dflt;
}

const pv_rules_decision_t *pv_rules_decide_name(const pv_rules_t *rules,
                                                const pv_rules_column_t *column,
                                                const char *purpose) {
  return pv_rules_decide(column, pv_rules_purpose_find(rules, purpose));
}

bool pv_rules_decision_is_clear(const pv_rules_decision_t *d) {
  return d->action.kind == PV_ACT_CLEAR &&
         (!d->consent_required || d->otherwise.kind == PV_ACT_CLEAR);
}

bool pv_rules_function_allowed(const pv_rules_t *rules, const char *schema,
                               const char *name) {
  if (!rules || !name)
    return false;
  for (size_t i = 0; i < rules->nfunctions; i++) {
    const pv_rules_function_t *f = &rules->functions[i];
    if (strcmp(f->name, name) != 0)
      continue;
    /* A qualified entry matches only a call qualified the same way: an
     * unqualified call could resolve elsewhere through search_path. */
    if (!f->schema || (schema && strcmp(f->schema, schema) == 0))
      return true;
  }
  return false;
}

const char *pv_rules_consent_mode_name(pv_consent_mode_t m) {
  return m == PV_CONSENT_OPT_OUT ? "opt_out" : "opt_in";
}

int pv_rules_check_summary(const pv_rules_t *rules, char *out, size_t cap) {
  if (!rules || (!out && cap))
    return PV_EINVAL;
  char consent[300];
  if (rules->consent.configured)
    snprintf(consent, sizeof consent,
             "consent from %s.%s (max staleness %llu ms)",
             rules->consent.schema, rules->consent.table,
             (unsigned long long)rules->consent.max_staleness_ms);
  else
    snprintf(consent, sizeof consent, "no consent table");
  int n = snprintf(out, cap,
                   "rules OK: %zu purpose%s, %zu table%s, %zu column%s, %s, "
                   "fingerprint %016llx",
                   rules->npurposes, rules->npurposes == 1 ? "" : "s",
                   rules->ntables, rules->ntables == 1 ? "" : "s",
                   rules->ncolumns, rules->ncolumns == 1 ? "" : "s", consent,
                   (unsigned long long)rules->fingerprint);
  return n < 0 ? PV_EINVAL : n;
}
