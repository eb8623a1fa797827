/* The consent set (DESIGN.md §4): an exact in-memory set of (subject,
 * purpose) -> granted / refused / absent, published as refcounted immutable
 * snapshots, and the consent store thread that keeps it fresh from the
 * consent table (full COPY load, NOTIFY deltas, periodic resync).
 *
 * Pure part (proxy/consent_set.c): key canonicalisation, the hash tables,
 * snapshots, the holder, lookups. No I/O, no globals, limits are arguments.
 * Store part (proxy/consent_store.c): its own thread, uv loop and libpq
 * connection, separate from the control thread.
 *
 * How a session uses it, once per statement (at ReadyForQuery / when the
 * statement starts) and then per row without locks or allocation:
 *
 *   uint64_t now = uv_hrtime() / 1000000;           // CLOCK_MONOTONIC ms
 *   pv_consent_snap_t *cs = pv_consent_acquire(store); // NULL: no consent
 *   if (!pv_consent_usable(cs, rules, now)) { pv_consent_release(cs);
 *                                             cs = NULL; } // fail closed
 *   ...per row, per gated column i (ra->cols[i].otherwise != NULL):
 *   consent[i] = pv_consent_allowed(cs, purpose, rules->purposes[purpose]
 *                     .consent, subj_type_oid, subj_format, val, len);
 *   ...at the end of the statement: pv_consent_release(cs);
 *
 * Staleness is decided once per statement (pv_consent_usable /
 * pv_consent_stale with the caller's monotonic clock), not per row: a
 * statement that started on a fresh snapshot finishes on it.
 * pv_consent_allowed(NULL, ...) is false: no snapshot, no consent. */
#ifndef PGVEIL_CONSENT_H
#define PGVEIL_CONSENT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgveil/config.h"
#include "pgveil/errors.h"
#include "pgveil/policy.h"
#include "pgveil/rules.h"

/* Longest subject key kept (bytes of its text form); longer subjects in
 * the table are skipped at load and never match (so never consented). */
#define PV_CONSENT_KEY_MAX 1024
/* Purposes a set can hold: one bit each. Equals PV_RULES_MAX_PURPOSES. */
#define PV_CONSENT_MAX_PURPOSES 64

/* How subjects are compared: by the consent table's subject column type. */
typedef enum {
  PV_CONSENT_KEY_INT = 0, /* int2/int4/int8: compared as int64 */
  PV_CONSENT_KEY_UUID,    /* uuid: 16 bytes */
  PV_CONSENT_KEY_TEXT,    /* anything else: the bytes of its text form */
} pv_consent_key_kind_t;

/* The key kind for a subject column of type type_oid. */
pv_consent_key_kind_t pv_consent_key_kind(uint32_t type_oid);

/* A subject in canonical form. Owner: the caller (stack); p points into
 * the value it was made from, or is NULL when the bytes are in buf (so a
 * copy of the struct stays valid). */
typedef struct {
  int64_t i;        /* INT */
  const uint8_t *p; /* UUID (16 bytes) and TEXT; NULL: in buf */
  size_t len;
  uint8_t buf[40];
} pv_consent_key_t;

/* Canonicalises a subject value of type type_oid in wire format `format`
 * (0 text, 1 binary) for a set of `kind`: the text "42" and the binary
 * int4/int8 42 give the same key; a uuid in any case, with or without
 * hyphens or braces, or as 16 binary bytes, gives the same key. Returns
 * PV_OK, or PV_EINVAL when the subject cannot be determined (NULL: len < 0,
 * not a number for an INT set, over PV_CONSENT_KEY_MAX, a binary type it
 * cannot read). No allocation. */
PV_WARN_UNUSED int pv_consent_key_make(pv_consent_key_kind_t kind,
                                       uint32_t type_oid, int16_t format,
                                       const uint8_t *val, int32_t len,
                                       pv_consent_key_t *out);

/* ---- Sets --------------------------------------------------------------- */

/* An open-addressing hash table (XXH3) of subject -> per-purpose bitmasks
 * (granted, refused, and for a delta the purposes it overrides). Owner:
 * whoever built it; once put in a snapshot it is immutable and shared by
 * reference count. Integer subjects cost 24 bytes a slot at load 0.7 after
 * pv_consent_set_compact (about 35 bytes per subject); uuid/text 32 bytes
 * a slot plus their bytes in an arena. */
typedef struct pv_consent_set pv_consent_set_t;

/* A base set (loaded from the table) or a delta (is_delta: entries
 * override only the purposes they touched). max_entries bounds subjects.
 * Returns PV_OK or PV_ENOMEM. */
PV_WARN_UNUSED int pv_consent_set_new(pv_consent_key_kind_t kind, bool is_delta,
                                      size_t cap_hint, size_t max_entries,
                                      pv_consent_set_t **out);
pv_consent_set_t *pv_consent_set_ref(pv_consent_set_t *s);
void pv_consent_set_release(pv_consent_set_t *s); /* NULL ok */

/* (Writer only, before publication.) Records the value of (key, purpose):
 * granted = 1, refused = 0, absent = -1 (a deleted row). In a delta absent
 * overrides the base with "absent"; a base set records loads only: absent
 * is a no-op for a subject it lacks, and PV_EINVAL when it would leave a
 * subject with no purpose at all (slots are marked used by their masks).
 * Returns PV_OK, PV_EINVAL (purpose out of range), PV_ELIMIT (max_entries)
 * or PV_ENOMEM. */
PV_WARN_UNUSED int pv_consent_set_put(pv_consent_set_t *s,
                                      const pv_consent_key_t *key, int purpose,
                                      int value);

/* One row for pv_consent_set_put_many. */
typedef struct {
  pv_consent_key_t key; /* key.p must stay valid until the call returns */
  int purpose;
  int value;
} pv_consent_put_t;

/* (Writer only.) pv_consent_set_put of puts[0..n) in order, with the table
 * slots of a batch fetched from memory together before any is written: a
 * load of millions of subjects is bound by one cache and TLB miss per
 * subject, and overlapping them is several times faster. Stops at the
 * first error and returns it. OUT: *done, entries applied. */
PV_WARN_UNUSED int pv_consent_set_put_many(pv_consent_set_t *s,
                                           const pv_consent_put_t *puts,
                                           size_t n, size_t *done);

/* (Writer only.) Rehashes to about 70% load to save memory after a load,
 * unless that would save under ~6%. PV_OK or PV_ENOMEM (the set is
 * unchanged then). */
PV_WARN_UNUSED int pv_consent_set_compact(pv_consent_set_t *s);

/* A private copy (for the next copy-on-write delta). */
PV_WARN_UNUSED int pv_consent_set_clone(const pv_consent_set_t *s,
                                        pv_consent_set_t **out);

pv_consent_key_kind_t pv_consent_set_kind(const pv_consent_set_t *s);
size_t pv_consent_set_count(const pv_consent_set_t *s); /* subjects */
size_t pv_consent_set_bytes(const pv_consent_set_t *s); /* heap bytes */

/* The raw masks of a subject: returns true when the set has an entry.
 * OUT: granted, refused and touched (all ones for a base set). */
bool pv_consent_set_get(const pv_consent_set_t *s, const pv_consent_key_t *key,
                        uint64_t *granted, uint64_t *refused,
                        uint64_t *touched);

/* ---- Freshness ---------------------------------------------------------- */

/* Shared by every snapshot of one store: the monotonic time (ms) until
 * which the data counts as fresh. Written by the store thread only. */
typedef struct pv_consent_clock pv_consent_clock_t;

PV_WARN_UNUSED int pv_consent_clock_new(pv_consent_clock_t **out);
pv_consent_clock_t *pv_consent_clock_ref(pv_consent_clock_t *c);
void pv_consent_clock_release(pv_consent_clock_t *c); /* NULL ok */
void pv_consent_clock_set(pv_consent_clock_t *c, uint64_t fresh_until_ms);
uint64_t pv_consent_clock_get(const pv_consent_clock_t *c);

/* ---- Snapshots ---------------------------------------------------------- */

/* base + delta + clock, immutable once built; shared by reference count by
 * any number of sessions on any worker. */
typedef struct pv_consent_snap pv_consent_snap_t;

/* Takes references to base, delta (may be NULL) and clock. purposes_hash
 * is pv_consent_purposes_hash() of the rules the purpose bits follow. */
PV_WARN_UNUSED int pv_consent_snap_new(pv_consent_set_t *base,
                                       pv_consent_set_t *delta,
                                       pv_consent_clock_t *clock,
                                       uint64_t purposes_hash,
                                       pv_consent_snap_t **out);
pv_consent_snap_t *pv_consent_ref(pv_consent_snap_t *s);
void pv_consent_release(pv_consent_snap_t *s); /* NULL ok */

/* XXH3 of the rules' purpose names in order: purpose bit i of a snapshot
 * means rules->purposes[i] only while the hashes agree. */
uint64_t pv_consent_purposes_hash(const pv_rules_t *rules);

/* True when the data is older than max_staleness at now_ms (the caller's
 * monotonic clock, ms, as uv_hrtime()/1e6). NULL is stale. */
bool pv_consent_stale(const pv_consent_snap_t *s, uint64_t now_ms);

/* The per-statement check: s is non-NULL, not stale, and built for the
 * same purposes as rules. False: treat every gated column as not
 * consented (fail closed). */
bool pv_consent_usable(const pv_consent_snap_t *s, const pv_rules_t *rules,
                       uint64_t now_ms);

/* The per-row decision (hot path: no locks, no allocation). True when the
 * subject value (type_oid, format 0 text / 1 binary, val[0..len), len < 0
 * for NULL) has consented to purpose index `purpose` under `mode`:
 * opt_in: a granted row exists; opt_out: no refused row exists. False for
 * NULL s, a purpose outside 0..63, or a subject it cannot determine.
 * Staleness is NOT checked here: see pv_consent_usable. */
bool pv_consent_allowed(const pv_consent_snap_t *s, int purpose,
                        pv_consent_mode_t mode, uint32_t type_oid,
                        int16_t format, const uint8_t *val, int32_t len);

/* Subjects in base + delta entries, and heap bytes, for /metrics. */
size_t pv_consent_snap_subjects(const pv_consent_snap_t *s);
size_t pv_consent_snap_bytes(const pv_consent_snap_t *s);
size_t pv_consent_snap_delta(const pv_consent_snap_t *s);

/* ---- Holder ------------------------------------------------------------- */

/* Where the current snapshot lives; the lock covers a pointer load and an
 * atomic increment. Owner: the store. */
typedef struct {
  pthread_mutex_t mu;
  pv_consent_snap_t *cur; /* one reference owned by the holder, or NULL */
} pv_consent_holder_t;

PV_WARN_UNUSED int pv_consent_holder_init(pv_consent_holder_t *h);
void pv_consent_holder_dispose(pv_consent_holder_t *h);
pv_consent_snap_t *pv_consent_holder_acquire(pv_consent_holder_t *h);
/* Takes over the caller's reference to s (NULL: no consent data). */
void pv_consent_holder_publish(pv_consent_holder_t *h, pv_consent_snap_t *s);

/* ---- The store thread (proxy/consent_store.c) -------------------------- */

typedef struct pv_consent_store pv_consent_store_t;

/* Tunables; pv_consent_store_limits_default() gives the values shown. */
typedef struct {
  uint64_t backoff_min_ms; /* reconnect backoff start: 100 */
  uint64_t backoff_max_ms; /* reconnect backoff cap: 5000 */
  uint64_t config_poll_ms; /* policy generation poll: 1000 */
  uint64_t start_wait_ms;  /* pv_consent_store_start waits for the first
                              load this long: 30000 */
  size_t max_subjects;     /* subjects in a set: 200000000 */
  size_t delta_merge;      /* delta subjects that trigger a resync:
                              max(65536, base/16) when 0 */
  size_t load_parts;       /* parallel COPYs (connections) of a full load of
                              a plain table on PostgreSQL 14+, over block
                              ranges of one exported snapshot, 1..4; 0: one
                              per 64 MiB of table, up to 4 and the
                              machine's cores */
} pv_consent_store_limits_t;

pv_consent_store_limits_t pv_consent_store_limits_default(void);

/* Counters for /metrics; a consistent-enough copy (relaxed atomics). */
typedef struct {
  bool configured;         /* the rules name a consent table */
  bool loaded;             /* a snapshot is published */
  bool stale;              /* past max_staleness now */
  bool connected;          /* the LISTEN connection is up */
  size_t subjects;         /* in the current snapshot (base + delta) */
  size_t bytes;            /* heap bytes of the current snapshot's sets */
  uint64_t age_ms;         /* since the data was last confirmed fresh */
  uint64_t loads;          /* full loads completed (start, resync, reconnect) */
  uint64_t load_ms;        /* duration of the last full load */
  uint64_t load_rows;      /* rows read by the last full load */
  uint64_t notifies;       /* change notifications applied */
  uint64_t resyncs_forced; /* resyncs asked by a payload, TRUNCATE, merge */
  uint64_t reconnects;     /* connections lost */
  uint64_t stale_events;   /* fresh -> stale transitions */
} pv_consent_stats_t;

/* Starts the store thread for the consent table of the rules in holder's
 * current snapshot (and of every later one: it polls the generation and
 * reloads when the consent section or the purposes change). Connects as
 * the control thread does (cfg->control_dsn, else host/port of the
 * upstream, user $PGUSER|postgres), LISTENs on notify_channel, loads the
 * table with COPY and waits up to lim->start_wait_ms for that first load;
 * if it fails pgveil runs on and every gated column takes its otherwise
 * action until a load succeeds. Returns PV_OK with *out set, or PV_ENOMEM /
 * PV_EINVAL (bad DSN) with a message in err. cfg and holder must outlive
 * the store. lim may be NULL. */
PV_WARN_UNUSED int pv_consent_store_start(const pv_config_t *cfg,
                                          pv_policy_holder_t *holder,
                                          const pv_consent_store_limits_t *lim,
                                          pv_consent_store_t **out, char *err,
                                          size_t errcap);

/* Stops the thread, closes its connection, frees the store and drops its
 * snapshot (sessions still holding one keep it alive). NULL ok. Call after
 * the workers are joined, or make sure none calls pv_consent_acquire. */
void pv_consent_store_stop(pv_consent_store_t *st);

/* The current snapshot with a reference to release, or NULL when the
 * rules name no consent table or nothing is loaded yet. Any thread. */
pv_consent_snap_t *pv_consent_acquire(pv_consent_store_t *st);

/* Counters for /metrics at monotonic time now_ms. */
void pv_consent_store_stats(pv_consent_store_t *st, uint64_t now_ms,
                            pv_consent_stats_t *out);

/* Asks for a full resync now (tests, admin). Thread-safe. */
void pv_consent_store_resync(pv_consent_store_t *st);

#endif
