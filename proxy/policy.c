/* Owns the policy snapshot (rules + per-database catalogs + mask keys), its
 * reference counts and the holder that publishes it. No I/O, no globals;
 * snapshots are never modified once published. */
#include "pgveil/policy.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The rules and their keys: shared by every snapshot built on them. */
typedef struct {
  atomic_size_t refs;
  pv_rules_t *rules;
  pv_mask_key_t *keys; /* npurposes + 1, [0] for PV_PURPOSE_NONE; or NULL */
} core_t;

/* One database: shared by the snapshots of the same core. */
struct pv_policy_db {
  atomic_size_t refs;
  char name[PV_CATALOG_DBNAME_MAX + 1];
  pv_catalog_t *cat;             /* NULL when this resolution failed */
  pv_reldir_t *dir;              /* built with cat; may be NULL */
  struct pv_policy_db *fallback; /* failed: the last good one, or NULL */
  char *error;                   /* NULL when resolved */
  bool transient;
};

struct pv_policy {
  atomic_size_t refs;
  uint64_t generation; /* set by pv_policy_publish */
  core_t *core;
  pv_policy_db_t **dbs; /* sorted by name */
  size_t ndbs;
};

/* ---- Reference counting ------------------------------------------------- */

static void core_release(core_t *c) {
  if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
    return;
  if (c->keys) {
    for (size_t i = 0; i <= c->rules->npurposes; i++)
      pv_mask_key_dispose(&c->keys[i]);
    free(c->keys);
  }
  pv_rules_free(c->rules);
  free(c);
}

static void db_release(pv_policy_db_t *d) {
  if (!d || atomic_fetch_sub_explicit(&d->refs, 1, memory_order_acq_rel) != 1)
    return;
  pv_reldir_free(d->dir);
  pv_catalog_free(d->cat);
  db_release(d->fallback);
  free(d->error);
  free(d);
}

static pv_policy_db_t *db_ref(pv_policy_db_t *d) {
  atomic_fetch_add_explicit(&d->refs, 1, memory_order_relaxed);
  return d;
}

pv_policy_t *pv_policy_ref(pv_policy_t *p) {
  if (p)
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
  return p;
}

void pv_policy_release(pv_policy_t *p) {
  if (!p || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
    return;
  for (size_t i = 0; i < p->ndbs; i++)
    db_release(p->dbs[i]);
  free(p->dbs);
  core_release(p->core);
  free(p);
}

/* ---- Reading ------------------------------------------------------------ */

const pv_rules_t *pv_policy_rules(const pv_policy_t *p) {
  return p ? p->core->rules : NULL;
}

uint64_t pv_policy_generation(const pv_policy_t *p) {
  return p ? p->generation : 0;
}

static int db_cmp_name(const void *key, const void *elem) {
  const pv_policy_db_t *const *d = elem;
  return strcmp(key, (*d)->name);
}

const pv_policy_db_t *pv_policy_db(const pv_policy_t *p, const char *dbname) {
  if (!p || !dbname || !p->ndbs)
    return NULL;
  pv_policy_db_t **d =
      bsearch(dbname, p->dbs, p->ndbs, sizeof(pv_policy_db_t *), db_cmp_name);
  return d ? *d : NULL;
}

const char *pv_policy_db_error(const pv_policy_db_t *db) {
  return db ? db->error : "pgveil: database not resolved";
}

bool pv_policy_db_transient(const pv_policy_db_t *db) {
  return db && db->transient;
}

const pv_catalog_t *pv_policy_db_catalog(const pv_policy_db_t *db) {
  if (!db)
    return NULL;
  return db->cat ? db->cat : db->fallback ? db->fallback->cat : NULL;
}

const pv_reldir_t *pv_policy_db_reldir(const pv_policy_db_t *db) {
  if (!db)
    return NULL;
  if (db->cat)
    return db->dir;
  return db->fallback ? db->fallback->dir : NULL;
}

const char *pv_policy_db_name(const pv_policy_db_t *db) {
  return db ? db->name : NULL;
}

const pv_policy_col_t *pv_policy_column(const pv_policy_db_t *db,
                                        uint32_t table_oid, int16_t attnum) {
  return pv_catalog_column(pv_policy_db_catalog(db), table_oid, attnum);
}

const pv_policy_rel_t *pv_policy_relation(const pv_policy_db_t *db,
                                          uint32_t table_oid) {
  return pv_catalog_relation(pv_policy_db_catalog(db), table_oid);
}

const pv_mask_key_t *pv_policy_key(const pv_policy_t *p, int purpose) {
  if (!p || !p->core->keys || purpose < PV_PURPOSE_NONE ||
      (purpose >= 0 && (size_t)purpose >= p->core->rules->npurposes))
    return NULL;
  return &p->core->keys[purpose + 1];
}

size_t pv_policy_ndbs(const pv_policy_t *p) { return p ? p->ndbs : 0; }

const pv_policy_db_t *pv_policy_db_at(const pv_policy_t *p, size_t i) {
  return p && i < p->ndbs ? p->dbs[i] : NULL;
}

/* ---- Holder ------------------------------------------------------------- */

int pv_policy_holder_init(pv_policy_holder_t *h) {
  memset(h, 0, sizeof *h);
  return pthread_mutex_init(&h->mu, NULL) ? PV_ENOMEM : PV_OK;
}

void pv_policy_holder_dispose(pv_policy_holder_t *h) {
  pv_policy_release(h->cur);
  h->cur = NULL;
  pthread_mutex_destroy(&h->mu);
}

pv_policy_t *pv_policy_acquire(pv_policy_holder_t *h) {
  pthread_mutex_lock(&h->mu);
  pv_policy_t *p = pv_policy_ref(h->cur);
  pthread_mutex_unlock(&h->mu);
  return p;
}

void pv_policy_publish(pv_policy_holder_t *h, pv_policy_t *p) {
  pthread_mutex_lock(&h->mu);
  pv_policy_t *old = h->cur;
  if (p)
    p->generation = h->generation + 1;
  h->cur = p;
  /* Sessions compare it without the lock to skip an unchanged snapshot. */
  __atomic_store_n(&h->generation, h->generation + (p != NULL),
                   __ATOMIC_RELEASE);
  pthread_mutex_unlock(&h->mu);
  pv_policy_release(old); /* outside the lock: it may free a lot */
}

/* ---- Building ----------------------------------------------------------- */

static const pv_rules_decision_t *first_hash(const pv_rules_t *r) {
  for (size_t t = 0; t < r->ntables; t++)
    for (size_t c = 0; c < r->tables[t].ncolumns; c++) {
      const pv_rules_column_t *col = &r->tables[t].columns[c];
      for (size_t e = 0; e <= col->nentries; e++) {
        const pv_rules_decision_t *d =
            e == col->nentries ? &col->dflt : &col->entries[e].d;
        pv_action_kind_t k1 = d->action.kind, k2 = d->otherwise.kind;
        if (k1 == PV_ACT_HASH || k1 == PV_ACT_HASH_HEX ||
            (d->consent_required &&
             (k2 == PV_ACT_HASH || k2 == PV_ACT_HASH_HEX)))
          return d->line ? d : &col->dflt;
      }
    }
  return NULL;
}

bool pv_policy_rules_need_secret(const pv_rules_t *rules) {
  return rules && first_hash(rules) != NULL;
}

static int derive_keys(core_t *c, const uint8_t *secret, size_t len, char *err,
                       size_t errcap) {
  const pv_rules_t *r = c->rules;
  c->keys = calloc(r->npurposes + 1, sizeof *c->keys);
  if (!c->keys) {
    snprintf(err, errcap, "out of memory");
    return PV_ENOMEM;
  }
  for (size_t i = 0; i <= r->npurposes; i++) {
    const char *name = i == 0 ? "none" : r->purposes[i - 1].name;
    int rc = pv_mask_key_derive(secret, len, name, &c->keys[i]);
    if (rc == PV_EINVAL) {
      snprintf(err, errcap, "the secret is too short: at least %d bytes",
               PV_MASK_SECRET_MIN);
      return rc;
    }
    if (rc) {
      snprintf(err, errcap, "cannot derive mask keys (OpenSSL)");
      return rc;
    }
  }
  return PV_OK;
}

int pv_policy_new(pv_rules_t *rules, const uint8_t *secret, size_t secret_len,
                  pv_policy_t **out, char *err, size_t errcap) {
  *out = NULL;
  if (errcap)
    err[0] = '\0';
  if (!rules)
    return PV_EINVAL;
  const pv_rules_decision_t *h = first_hash(rules);
  if (h && !secret) {
    snprintf(err, errcap,
             "%s:%u:%u: the rules use hash, which needs a secret: give "
             "--secret-file FILE (PGVEIL_SECRET_FILE)",
             rules->source ? rules->source : "rules", h->line, h->col);
    pv_rules_free(rules);
    return PV_EINVAL;
  }
  pv_policy_t *p = calloc(1, sizeof *p);
  core_t *c = calloc(1, sizeof *c);
  if (!p || !c) {
    free(p);
    free(c);
    pv_rules_free(rules);
    snprintf(err, errcap, "out of memory");
    return PV_ENOMEM;
  }
  atomic_init(&c->refs, 1);
  c->rules = rules;
  atomic_init(&p->refs, 1);
  p->core = c;
  int rc = secret ? derive_keys(c, secret, secret_len, err, errcap) : PV_OK;
  if (rc) {
    pv_policy_release(p);
    return rc;
  }
  *out = p;
  return PV_OK;
}

static pv_policy_db_t *db_new(const pv_policy_db_t *prev, const char *name,
                              pv_catalog_t *cat, pv_reldir_t *dir,
                              const char *error, bool transient) {
  pv_policy_db_t *d = calloc(1, sizeof *d);
  if (!d)
    return NULL;
  atomic_init(&d->refs, 1);
  snprintf(d->name, sizeof d->name, "%s", name);
  d->transient = transient;
  if (error) {
    d->error = strdup(error);
    if (!d->error) {
      free(d);
      return NULL;
    }
    /* Keep answering lookups from the last good resolution. */
    const pv_policy_db_t *good = prev && !prev->cat ? prev->fallback : prev;
    if (good)
      d->fallback = db_ref((pv_policy_db_t *)good);
  }
  d->cat = cat;
  d->dir = dir;
  return d;
}

int pv_policy_with_db(const pv_policy_t *base, const char *dbname,
                      pv_catalog_t *cat, const char *error, bool transient,
                      pv_policy_t **out) {
  return pv_policy_with_db_reldir(base, dbname, cat, NULL, error, transient,
                                  out);
}

int pv_policy_with_db_reldir(const pv_policy_t *base, const char *dbname,
                             pv_catalog_t *cat, pv_reldir_t *dir,
                             const char *error, bool transient,
                             pv_policy_t **out) {
  *out = NULL;
  if (!base || !dbname || strlen(dbname) > PV_CATALOG_DBNAME_MAX ||
      !cat == !error || (dir && error) ||
      (cat && pv_catalog_rules(cat) != base->core->rules)) {
    pv_reldir_free(dir);
    pv_catalog_free(cat);
    return PV_EINVAL;
  }
  pv_policy_t *p = calloc(1, sizeof *p);
  pv_policy_db_t **dbs = calloc(base->ndbs + 1, sizeof(pv_policy_db_t *));
  pv_policy_db_t *d = p && dbs ? db_new(pv_policy_db(base, dbname), dbname, cat,
                                        dir, error, transient)
                               : NULL;
  if (!d) {
    free(p);
    free(dbs);
    pv_reldir_free(dir);
    pv_catalog_free(cat);
    return PV_ENOMEM;
  }
  /* Merge d into the sorted list, replacing the old entry of dbname. */
  size_t n = 0;
  bool placed = false;
  for (size_t i = 0; i < base->ndbs; i++) {
    int c = strcmp(base->dbs[i]->name, dbname);
    if (c >= 0 && !placed) {
      dbs[n++] = d;
      placed = true;
    }
    if (c != 0)
      dbs[n++] = db_ref(base->dbs[i]);
  }
  if (!placed)
    dbs[n++] = d;
  atomic_init(&p->refs, 1);
  p->core = base->core;
  atomic_fetch_add_explicit(&p->core->refs, 1, memory_order_relaxed);
  p->dbs = dbs;
  p->ndbs = n;
  *out = p;
  return PV_OK;
}
