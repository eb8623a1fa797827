/* A per-worker cache of guard analyses, keyed by pv_guard_cache_key (XXH3
 * of text, purpose, rules, catalog version and search_path). Direct-mapped:
 * a colliding key evicts. Owner: one worker thread; no locks. */
#ifndef PGVEIL_GUARD_CACHE_H
#define PGVEIL_GUARD_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "pgveil/sql_guard.h"

typedef struct pv_guard_cache pv_guard_cache_t;

/* nslots is rounded up to a power of two. NULL on OOM. */
pv_guard_cache_t *pv_guard_cache_new(size_t nslots);
void pv_guard_cache_free(pv_guard_cache_t *c);

/* The cached result for key, or NULL. Valid until the next put. */
const pv_guard_result_t *pv_guard_cache_get(pv_guard_cache_t *c, uint64_t key);
/* Stores res under key (the cache takes ownership, frees what it evicts). */
void pv_guard_cache_put(pv_guard_cache_t *c, uint64_t key,
                        pv_guard_result_t *res);

#endif
