/* Masking actions as the rules name them ("hash", "mask(keep_last=2)",
 * "generalize(year)", ...): their parsed form and the parser of their
 * textual spec. Pure: no I/O, no globals. The transformations themselves
 * live in include/pgveil/mask.h. */
#ifndef PGVEIL_ACTION_H
#define PGVEIL_ACTION_H

#include <stddef.h>
#include <stdint.h>

#include "pgveil/errors.h"

typedef enum {
  PV_ACT_CLEAR = 0,
  PV_ACT_WITHHOLD,   /* NULL */
  PV_ACT_REDACT,     /* a constant: redact('...') */
  PV_ACT_HASH,       /* keyed, format-preserving pseudonym */
  PV_ACT_HASH_HEX,   /* hash(hex): hex digest */
  PV_ACT_MASK,       /* mask(keep_first=N, keep_last=N, char='*') */
  PV_ACT_MASK_EMAIL, /* a***@example.com */
  PV_ACT_GENERALIZE, /* generalize(year|month|decade|zip3|bucket=N) */
} pv_action_kind_t;

typedef enum {
  PV_GEN_YEAR = 1,
  PV_GEN_MONTH,
  PV_GEN_DECADE,
  PV_GEN_ZIP3,
  PV_GEN_BUCKET,
} pv_generalize_t;

#define PV_REDACT_MAX 256 /* bytes of a redact('...') constant */

/* A parsed action. Plain value, no pointers: copyable. */
typedef struct {
  pv_action_kind_t kind;
  uint16_t keep_first;            /* MASK */
  uint16_t keep_last;             /* MASK */
  char mask_char;                 /* MASK: ASCII, default '*' */
  pv_generalize_t gen;            /* GENERALIZE */
  int64_t bucket;                 /* GENERALIZE bucket=N, N > 0 */
  uint16_t redact_len;            /* REDACT */
  char redact[PV_REDACT_MAX + 1]; /* REDACT: NUL-terminated */
} pv_action_t;

/* Parses an action spec such as `mask(keep_last=2, char='#')`. On error
 * returns PV_ESYNTAX and writes a one-line explanation of what was
 * expected into err[0..errcap), with *err_offset the byte offset in spec
 * where the problem is (so the rules loader can report line:column). */
PV_WARN_UNUSED int pv_action_parse(const char *spec, size_t len,
                                   pv_action_t *out, char *err, size_t errcap,
                                   size_t *err_offset);

/* Canonical text of an action, e.g. "mask(keep_first=0, keep_last=2,
 * char='*')", for logs and the audit. Returns bytes written (truncated to
 * cap-1, always NUL-terminated). */
size_t pv_action_format(const pv_action_t *a, char *out, size_t cap);

/* The action's name ("hash", "mask", ...). */
const char *pv_action_name(pv_action_kind_t k);

#endif
