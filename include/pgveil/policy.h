/* The policy snapshot (DESIGN.md §1): one immutable, refcounted object
 * holding the rules, their resolution per database (pgveil/catalog.h) and
 * the per-purpose mask keys, and the holder through which sessions on any
 * worker take it and the control thread swaps in a new one. No I/O.
 *
 * Threads: a snapshot is never written once it is published, so any thread
 * may read everything reachable from it while it holds a reference. The
 * holder's only lock is held for a pointer load and an atomic increment.
 *
 * Sessions use it like this, once per statement (or per plan build):
 *   pv_policy_t *p = pv_policy_acquire(holder);     // NULL: no rules yet
 *   const pv_policy_db_t *db = pv_policy_db(p, dbname);
 *   if (!db) ...ask the control thread (pgveil/control.h), wait, retry...
 *   if (pv_policy_db_error(db)) ...refuse: fail closed...
 *   const pv_policy_col_t *c = pv_policy_column(db, table_oid, attnum);
 *   ...build the plan: c ? pv_rules_decide(c->rule, purpose) : unprotected
 *   pv_policy_release(p);
 * The guard (pgveil/sql_guard.h) resolves relation names through the
 * database's relation directory (pgveil/reldir.h):
 *   const pv_reldir_t *dir = pv_policy_db_reldir(db);
 *   in.lookup = pv_reldir_lookup;         // NULL dir: fails closed
 *   in.lookup_ctx = (void *)dir;
 *   pre-scan set: pv_reldir_guard_names(dir) (NULL dir: always parse)
 * A plan built from a snapshot stays valid while the snapshot's generation
 * is current: compare pv_policy_generation() to decide when to rebuild. */
#ifndef PGVEIL_POLICY_H
#define PGVEIL_POLICY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgveil/catalog.h"
#include "pgveil/errors.h"
#include "pgveil/mask.h"
#include "pgveil/reldir.h"
#include "pgveil/rules.h"

typedef struct pv_policy pv_policy_t;
typedef struct pv_policy_db pv_policy_db_t;
/* A protected column: rule (pv_rules_column_t *), table, type_oid, typmod
 * and the relation's subject_attnum (0 when it has none). */
typedef pv_catalog_col_t pv_policy_col_t;
typedef pv_catalog_rel_t pv_policy_rel_t;

/* ---- Reading a snapshot (any thread, while holding a reference) -------- */

const pv_rules_t *pv_policy_rules(const pv_policy_t *p);

/* Increases with every snapshot a holder publishes (1 for the first). */
uint64_t pv_policy_generation(const pv_policy_t *p);

/* The resolution for database `dbname` (exact, as in the startup packet),
 * or NULL while pgveil has not resolved it yet. */
const pv_policy_db_t *pv_policy_db(const pv_policy_t *p, const char *dbname);

/* NULL when the database is resolved and usable; otherwise a one-line
 * message for the client's ErrorResponse (e.g. "pgveil: ... column
 * public.customers.email does not exist in database \"crm\""): sessions to
 * this database must be refused (fail closed). */
const char *pv_policy_db_error(const pv_policy_db_t *db);

/* True when the failure was the control connection (PostgreSQL down, the
 * database missing, authentication): pv_control_request_db() retries it.
 * False for rules that do not match the catalog: that waits for DDL, the
 * periodic check or a reload. */
bool pv_policy_db_transient(const pv_policy_db_t *db);

/* The column (table_oid, attnum) of a RowDescription, or NULL when no rule
 * protects it. O(1). When the database's latest resolution failed this
 * still answers from its last good one, so a caller that forgot to check
 * pv_policy_db_error() keeps masking; NULL db gives NULL. */
const pv_policy_col_t *pv_policy_column(const pv_policy_db_t *db,
                                        uint32_t table_oid, int16_t attnum);

/* The protected relation table_oid (guard, COPY), or NULL. */
const pv_policy_rel_t *pv_policy_relation(const pv_policy_db_t *db,
                                          uint32_t table_oid);

/* The catalog behind db: its last good resolution, NULL if none. */
const pv_catalog_t *pv_policy_db_catalog(const pv_policy_db_t *db);

/* The relation directory of db for the guard, from the same resolution as
 * pv_policy_db_catalog() (the last good one when the latest failed); NULL
 * when none was built: then pv_reldir_lookup(NULL, ...) fails and the
 * guard refuses (fail closed). */
const pv_reldir_t *pv_policy_db_reldir(const pv_policy_db_t *db);

const char *pv_policy_db_name(const pv_policy_db_t *db);

/* The mask key of purpose index `purpose` (PV_PURPOSE_NONE for sessions
 * without a purpose), or NULL when no secret was configured or the index
 * is unknown. Pass it to pv_mask_apply(); NULL makes hash withhold. */
const pv_mask_key_t *pv_policy_key(const pv_policy_t *p, int purpose);

/* Number of databases known to this snapshot and the i-th (sorted by
 * name), for the control thread and /metrics. */
size_t pv_policy_ndbs(const pv_policy_t *p);
const pv_policy_db_t *pv_policy_db_at(const pv_policy_t *p, size_t i);

/* ---- References --------------------------------------------------------- */

/* Takes one more reference (thread-safe). Returns p. */
pv_policy_t *pv_policy_ref(pv_policy_t *p);
/* Drops one reference; the last one frees the snapshot. NULL is a no-op. */
void pv_policy_release(pv_policy_t *p);

/* ---- The holder --------------------------------------------------------- */

/* Where the current snapshot lives. Owner: main(); it outlives every worker
 * and the control thread. Initialise before any thread uses it. */
typedef struct {
  pthread_mutex_t mu;
  pv_policy_t *cur; /* one reference owned by the holder */
  uint64_t generation;
} pv_policy_holder_t;

PV_WARN_UNUSED int pv_policy_holder_init(pv_policy_holder_t *h);
/* Drops the holder's reference; snapshots still held elsewhere live on. */
void pv_policy_holder_dispose(pv_policy_holder_t *h);

/* The current snapshot with a reference the caller must release, or NULL
 * when none was published. Any thread; O(1), never waits on I/O. */
pv_policy_t *pv_policy_acquire(pv_policy_holder_t *h);

/* Publishes p, taking over the caller's reference, and drops the holder's
 * reference to the previous one (freed once its last session releases
 * it). Sets p's generation. p must not have been published before. */
void pv_policy_publish(pv_policy_holder_t *h, pv_policy_t *p);

/* ---- Building snapshots (the control thread, tests) -------------------- */

/* True when any decision uses hash or hash(hex): a secret is required. */
bool pv_policy_rules_need_secret(const pv_rules_t *rules);

/* A new snapshot of `rules` with no database resolved. Takes ownership of
 * rules on success and on failure. When secret is non-NULL it derives one
 * key per purpose and one for PV_PURPOSE_NONE (HKDF, pv_mask_key_derive;
 * the caller still owns and wipes secret). Returns PV_OK with *out holding
 * one reference; PV_EINVAL with a message in err when the rules use hash
 * and secret is NULL, or the secret is too short; PV_ENOMEM. */
PV_WARN_UNUSED int pv_policy_new(pv_rules_t *rules, const uint8_t *secret,
                                 size_t secret_len, pv_policy_t **out,
                                 char *err, size_t errcap);

/* A new snapshot equal to base (same rules and keys, same other databases)
 * with database `dbname` set to:
 *  - cat != NULL, error == NULL: resolved (takes ownership of cat, whose
 *    rules must be base's);
 *  - error != NULL: failed with that message; cat must be NULL. The last
 *    good catalog of dbname in base, if any, is kept for lookups.
 * base is not changed. Returns PV_OK with *out holding one reference, or
 * PV_EINVAL / PV_ENOMEM (cat is freed on failure too). */
PV_WARN_UNUSED int pv_policy_with_db(const pv_policy_t *base,
                                     const char *dbname, pv_catalog_t *cat,
                                     const char *error, bool transient,
                                     pv_policy_t **out);

/* pv_policy_with_db with the relation directory built from cat (taken
 * over with cat, freed on failure; NULL allowed: the guard then fails
 * closed for that database). dir must be NULL when error is given. */
PV_WARN_UNUSED int pv_policy_with_db_reldir(const pv_policy_t *base,
                                            const char *dbname,
                                            pv_catalog_t *cat, pv_reldir_t *dir,
                                            const char *error, bool transient,
                                            pv_policy_t **out);

#endif
