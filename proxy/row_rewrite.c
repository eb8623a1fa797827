/* Owns DataRow rewriting (see include/pgveil/row_rewrite.h).
 * Pure: no I/O, no globals, no allocation. */
#include "pgveil/row_rewrite.h"

#include <string.h>

#include "pgveil/pg_msg_backend.h"

#define OID_TEXT 25u
#define OID_VARCHAR 1043u

static int is_tagged(const pv_plan_col_t *c) {
  return c->type_oid == OID_TEXT || c->type_oid == OID_VARCHAR;
}

/* Size of the tagged row, or PV_EPROTO. */
static int64_t tagged_size(const pv_plan_t *plan, const pv_msg_t *m) {
  pv_be_datarow_iter_t it;
  if (pv_be_datarow_begin(m, &it) != PV_OK || it.nfields != plan->ncols)
    return PV_EPROTO;
  int64_t size = PV_FRAME_HEADER + 2;
  const uint8_t *val;
  int32_t len;
  int rc;
  for (uint16_t i = 0; (rc = pv_be_datarow_next(&it, &val, &len)) == 1; i++) {
    size += 4 + (len > 0 ? len : 0);
    if (len >= 0 && is_tagged(&plan->cols[i]))
      size += (int64_t)strlen(plan->cols[i].name) + 1;
  }
  return rc == 0 ? size : PV_EPROTO;
}

int pv_rewrite_tag_datarow(const pv_plan_t *plan, const pv_msg_t *m,
                           uint8_t *out, size_t cap, size_t *needed) {
  int64_t size = tagged_size(plan, m);
  if (size < 0)
    return (int)size;
  if (size > INT32_MAX)
    return PV_ELIMIT;
  *needed = (size_t)size;
  if ((size_t)size > cap)
    return PV_ELIMIT;
  uint8_t *p = out;
  *p++ = 'D';
  pv_put_u32(p, (uint32_t)(size - 1));
  p += 4;
  pv_put_u16(p, plan->ncols);
  p += 2;
  pv_be_datarow_iter_t it;
  const uint8_t *val;
  int32_t len;
  if (pv_be_datarow_begin(m, &it) != PV_OK)
    return PV_EPROTO;
  for (uint16_t i = 0; pv_be_datarow_next(&it, &val, &len) == 1; i++) {
    if (len < 0) {
      pv_put_u32(p, UINT32_MAX);
      p += 4;
      continue;
    }
    size_t tag = is_tagged(&plan->cols[i]) ? strlen(plan->cols[i].name) : 0;
    size_t total = (size_t)len + (tag ? tag + 1 : 0);
    pv_put_u32(p, (uint32_t)total);
    p += 4;
    if (tag) {
      memcpy(p, plan->cols[i].name, tag);
      p[tag] = '=';
      p += tag + 1;
    }
    if (len)
      memcpy(p, val, (size_t)len);
    p += len;
  }
  return (int)(p - out);
}

static const pv_action_t *effective(const pv_col_action_t *c,
                                    const uint8_t *consent, uint16_t i) {
  if (c->otherwise && !(consent && consent[i]))
    return c->otherwise;
  return c->action;
}

/* Upper bound of the rewritten row, or PV_EPROTO. */
static int64_t rewritten_bound(const pv_row_actions_t *ra,
                               const uint8_t *consent, const pv_msg_t *m) {
  pv_be_datarow_iter_t it;
  if (pv_be_datarow_begin(m, &it) != PV_OK || it.nfields != ra->ncols)
    return PV_EPROTO;
  int64_t size = PV_FRAME_HEADER + 2;
  const uint8_t *val;
  int32_t len;
  int rc;
  for (uint16_t i = 0; (rc = pv_be_datarow_next(&it, &val, &len)) == 1; i++) {
    const pv_col_action_t *c = &ra->cols[i];
    const pv_action_t *a = effective(c, consent, i);
    size += 4;
    if (len <= 0)
      continue;
    if (!a || a->kind == PV_ACT_CLEAR)
      size += len;
    else
      size += (int64_t)pv_mask_out_max(a, c->type_oid, c->typmod, (size_t)len);
  }
  return rc == 0 ? size : PV_EPROTO;
}

/* Writes one acted-on field at p (room: end - p); returns bytes used. */
static size_t write_masked(const pv_col_action_t *c, const pv_action_t *a,
                           const uint8_t *val, int32_t len, uint8_t *p,
                           const uint8_t *end) {
  int64_t n = PV_MASK_NULL;
  if (a->kind != PV_ACT_WITHHOLD && end - p >= 4)
    n = pv_mask_apply(a, c->key, c->column_id, c->type_oid, c->typmod,
                      c->format, val, (size_t)len, p + 4,
                      (size_t)(end - p - 4));
  if (n < 0) { /* withhold, misfit, invalid input: NULL, never clear */
    pv_put_u32(p, UINT32_MAX);
    return 4;
  }
  pv_put_u32(p, (uint32_t)n);
  return 4 + (size_t)n;
}

int pv_rewrite_datarow(const pv_row_actions_t *ra, const uint8_t *consent,
                       const pv_msg_t *m, uint8_t *out, size_t cap,
                       size_t *needed) {
  int64_t bound = rewritten_bound(ra, consent, m);
  if (bound < 0)
    return (int)bound;
  if (bound > INT32_MAX)
    return PV_ELIMIT;
  *needed = (size_t)bound;
  if ((size_t)bound > cap)
    return PV_ELIMIT;
  uint8_t *p = out + PV_FRAME_HEADER, *end = out + bound;
  pv_put_u16(p, ra->ncols);
  p += 2;
  pv_be_datarow_iter_t it;
  const uint8_t *val;
  int32_t len;
  if (pv_be_datarow_begin(m, &it) != PV_OK)
    return PV_EPROTO;
  for (uint16_t i = 0; pv_be_datarow_next(&it, &val, &len) == 1; i++) {
    const pv_col_action_t *c = &ra->cols[i];
    const pv_action_t *a = effective(c, consent, i);
    if (len < 0 || !a || a->kind == PV_ACT_CLEAR) {
      /* NULL stays NULL under every action; clear copies. */
      pv_put_u32(p, len < 0 ? UINT32_MAX : (uint32_t)len);
      p += 4;
      if (len > 0)
        memcpy(p, val, (size_t)len);
      p += len > 0 ? len : 0;
      continue;
    }
    p += write_masked(c, a, val, len, p, end);
  }
  out[0] = 'D';
  pv_put_u32(out + 1, (uint32_t)(p - out - 1));
  return (int)(p - out);
}

int pv_datarow_field(const pv_msg_t *m, uint16_t i, const uint8_t **val,
                     int32_t *len) {
  pv_be_datarow_iter_t it;
  if (pv_be_datarow_begin(m, &it) != PV_OK || i >= it.nfields)
    return PV_EPROTO;
  for (uint16_t k = 0; k <= i; k++)
    if (pv_be_datarow_next(&it, val, len) != 1)
      return PV_EPROTO;
  return PV_OK;
}
