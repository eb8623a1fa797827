/* Owns the per-worker cache of guard results (include/pgveil/guard_cache.h).
 * No I/O, no globals; single-threaded by construction. */
#include "pgveil/guard_cache.h"

#include <stdlib.h>

typedef struct {
  uint64_t key;
  pv_guard_result_t *res;
} slot_t;

struct pv_guard_cache {
  size_t mask;
  slot_t slots[];
};

pv_guard_cache_t *pv_guard_cache_new(size_t nslots) {
  size_t n = 16;
  while (n < nslots)
    n *= 2;
  pv_guard_cache_t *c = calloc(1, sizeof *c + n * sizeof(slot_t));
  if (c)
    c->mask = n - 1;
  return c;
}

void pv_guard_cache_free(pv_guard_cache_t *c) {
  if (!c)
    return;
  for (size_t i = 0; i <= c->mask; i++)
    pv_guard_result_free(c->slots[i].res);
  free(c);
}

const pv_guard_result_t *pv_guard_cache_get(pv_guard_cache_t *c, uint64_t key) {
  slot_t *s = &c->slots[key & c->mask];
  return s->res && s->key == key ? s->res : NULL;
}

void pv_guard_cache_put(pv_guard_cache_t *c, uint64_t key,
                        pv_guard_result_t *res) {
  slot_t *s = &c->slots[key & c->mask];
  if (s->res)
    pv_guard_result_free(s->res);
  s->key = key;
  s->res = res;
}
