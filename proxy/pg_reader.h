/* Internal to the protocol codecs: a bounds-checked cursor over one message
 * body. Pure: no I/O, no globals; never reads outside [p, end). */
#ifndef PGVEIL_PG_READER_H
#define PGVEIL_PG_READER_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "pgveil/errors.h"
#include "pgveil/pg_frame.h"

/* Returns from the enclosing function when expr is not PV_OK. */
#define TRY(expr)                                                              \
  do {                                                                         \
    int try_rc_ = (expr);                                                      \
    if (try_rc_ != PV_OK)                                                      \
      return try_rc_;                                                          \
  } while (0)

/* Owner: the decoding function's stack; points into a message body. */
typedef struct {
  const uint8_t *p, *end;
} pv_rd_t;

static inline void pv_rd_init(pv_rd_t *r, const pv_msg_t *m) {
  r->p = m->body;
  r->end = m->body ? m->body + m->len : m->body;
}

static inline size_t pv_rd_left(const pv_rd_t *r) {
  return (size_t)(r->end - r->p);
}

PV_WARN_UNUSED static inline int pv_rd_u8(pv_rd_t *r, uint8_t *v) {
  if (pv_rd_left(r) < 1)
    return PV_EPROTO;
  *v = r->p[0];
  r->p += 1;
  return PV_OK;
}

PV_WARN_UNUSED static inline int pv_rd_u16(pv_rd_t *r, uint16_t *v) {
  if (pv_rd_left(r) < 2)
    return PV_EPROTO;
  *v = pv_get_u16(r->p);
  r->p += 2;
  return PV_OK;
}

PV_WARN_UNUSED static inline int pv_rd_u32(pv_rd_t *r, uint32_t *v) {
  if (pv_rd_left(r) < 4)
    return PV_EPROTO;
  *v = pv_get_u32(r->p);
  r->p += 4;
  return PV_OK;
}

/* Skips n bytes; OUT: *start (may be NULL) gets where they began. */
PV_WARN_UNUSED static inline int pv_rd_skip(pv_rd_t *r, size_t n,
                                            const uint8_t **start) {
  if (pv_rd_left(r) < n)
    return PV_EPROTO;
  if (start)
    *start = r->p;
  r->p += n;
  return PV_OK;
}

/* A NUL-terminated string that must end inside the body. OUT: *s, *len
 * (may be NULL) without the NUL. */
PV_WARN_UNUSED static inline int pv_rd_cstr(pv_rd_t *r, const char **s,
                                            size_t *len) {
  size_t left = pv_rd_left(r);
  const uint8_t *nul = left ? memchr(r->p, 0, left) : NULL;
  if (!nul)
    return PV_EPROTO;
  *s = (const char *)r->p;
  if (len)
    *len = (size_t)(nul - r->p);
  r->p = nul + 1;
  return PV_OK;
}

/* Every decoder consumes the whole body: trailing bytes are malformed. */
PV_WARN_UNUSED static inline int pv_rd_end(const pv_rd_t *r) {
  return r->p == r->end ? PV_OK : PV_EPROTO;
}

#endif
