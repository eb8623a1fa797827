/* Internals shared by the rules loader (rules_load.c) and the rules model
 * (rules_model.c): the arena the model lives in and the error list the
 * loader fills. Not for other modules: include/pgveil/rules.h is the API. */
#ifndef PGVEIL_RULES_INTERNAL_H
#define PGVEIL_RULES_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgveil/rules.h"

/* A chunked bump allocator: every allocation is zeroed and aligned for any
 * type, nothing is freed before pv_rules__arena_dispose. Owner: the loader
 * while it builds, then the pv_rules_t (rules->arena = head). */
typedef struct pv_rules_blk pv_rules_blk_t;
typedef struct {
  pv_rules_blk_t *head;
  bool oom; /* an allocation failed: the load fails with PV_ENOMEM */
} pv_rules_arena_t;

void *pv_rules__alloc(pv_rules_arena_t *a, size_t count, size_t size);
char *pv_rules__strdup(pv_rules_arena_t *a, const char *s, size_t len);
void pv_rules__arena_dispose(pv_rules_blk_t *head);

/* Errors collected during one load, sorted by position at the end. */
typedef struct {
  uint32_t line, col; /* 1-based; line 0 = no position */
  uint32_t seq;       /* order found, to keep the sort stable */
  char *msg;          /* "name:line:col: text", malloc'd */
} pv_rules_err_t;

typedef struct {
  const char *name; /* source name for the prefix */
  pv_rules_err_t *v;
  size_t n, cap, max, omitted;
  bool oom;
} pv_rules_errlist_t;

void pv_rules__err_init(pv_rules_errlist_t *el, const char *name, size_t max);
void pv_rules__err_add(pv_rules_errlist_t *el, uint32_t line, uint32_t col,
                       const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
bool pv_rules__err_any(const pv_rules_errlist_t *el);
/* Moves the errors (sorted) into a new pv_rules_errors_t; disposes el.
 * Returns NULL when even that allocation fails. */
pv_rules_errors_t *pv_rules__err_finish(pv_rules_errlist_t *el);
void pv_rules__err_dispose(pv_rules_errlist_t *el);

#endif
