/* Owns decoding and encoding of the messages a client sends after startup.
 * Pure: no I/O, no globals; slices point into the message body. */
#include "pgveil/pg_msg_frontend.h"

#include <limits.h>
#include <string.h>

#include "pg_reader.h"

int pv_fe_query_decode(const pv_msg_t *m, pv_fe_query_t *out) {
  pv_rd_t r;
  pv_rd_init(&r, m);
  TRY(pv_rd_cstr(&r, &out->sql, &out->sql_len));
  return pv_rd_end(&r);
}

int pv_fe_parse_decode(const pv_msg_t *m, pv_fe_parse_t *out) {
  pv_rd_t r;
  pv_rd_init(&r, m);
  TRY(pv_rd_cstr(&r, &out->stmt, NULL));
  TRY(pv_rd_cstr(&r, &out->sql, &out->sql_len));
  TRY(pv_rd_u16(&r, &out->nparam_types));
  TRY(pv_rd_skip(&r, (size_t)out->nparam_types * 4, &out->param_types));
  return pv_rd_end(&r);
}

/* Parameter values: int32 length (-1 = NULL) then that many bytes each. */
static int skip_param_values(pv_rd_t *r, uint16_t n) {
  for (uint16_t i = 0; i < n; i++) {
    uint32_t raw;
    TRY(pv_rd_u32(r, &raw));
    int32_t len = (int32_t)raw;
    if (len == -1)
      continue;
    if (len < 0)
      return PV_EPROTO;
    TRY(pv_rd_skip(r, (size_t)len, NULL));
  }
  return PV_OK;
}

int pv_fe_bind_decode(const pv_msg_t *m, pv_fe_bind_t *out) {
  pv_rd_t r;
  pv_rd_init(&r, m);
  TRY(pv_rd_cstr(&r, &out->portal, NULL));
  TRY(pv_rd_cstr(&r, &out->stmt, NULL));
  TRY(pv_rd_u16(&r, &out->nparam_formats));
  TRY(pv_rd_skip(&r, (size_t)out->nparam_formats * 2, &out->param_formats));
  TRY(pv_rd_u16(&r, &out->nparams));
  /* As the server does: one format for all, or one per parameter. */
  if (out->nparam_formats > 1 && out->nparam_formats != out->nparams)
    return PV_EPROTO;
  out->params = r.p;
  TRY(skip_param_values(&r, out->nparams));
  TRY(pv_rd_u16(&r, &out->nresult_formats));
  TRY(pv_rd_skip(&r, (size_t)out->nresult_formats * 2, &out->result_formats));
  return pv_rd_end(&r);
}

/* Describe and Close share a layout: 'S'|'P', then a name. */
static int decode_target(const pv_msg_t *m, pv_fe_target_t *out) {
  pv_rd_t r;
  pv_rd_init(&r, m);
  TRY(pv_rd_u8(&r, &out->kind));
  if (out->kind != 'S' && out->kind != 'P')
    return PV_EPROTO;
  TRY(pv_rd_cstr(&r, &out->name, NULL));
  return pv_rd_end(&r);
}

int pv_fe_describe_decode(const pv_msg_t *m, pv_fe_target_t *out) {
  return decode_target(m, out);
}

int pv_fe_close_decode(const pv_msg_t *m, pv_fe_target_t *out) {
  return decode_target(m, out);
}

int pv_fe_execute_decode(const pv_msg_t *m, pv_fe_execute_t *out) {
  pv_rd_t r;
  pv_rd_init(&r, m);
  uint32_t raw;
  TRY(pv_rd_cstr(&r, &out->portal, NULL));
  TRY(pv_rd_u32(&r, &raw));
  /* The server treats any value <= 0 as "all rows": normalise to 0 so
   * callers have one spelling of "no limit". */
  out->max_rows = (int32_t)raw <= 0 ? 0 : raw;
  return pv_rd_end(&r);
}

int pv_fe_bind_result_format(const pv_fe_bind_t *b, uint16_t ncols, uint16_t i,
                             int16_t *fmt) {
  if (i >= ncols)
    return PV_EINVAL;
  const uint8_t *code;
  if (b->nresult_formats == 0) {
    *fmt = 0;
    return PV_OK;
  }
  if (b->nresult_formats == 1)
    code = b->result_formats;
  else if (b->nresult_formats == ncols)
    code = b->result_formats + (size_t)i * 2;
  else
    return PV_EPROTO;
  int16_t v = (int16_t)pv_get_u16(code);
  if (v != 0 && v != 1)
    return PV_EPROTO;
  *fmt = v;
  return PV_OK;
}

int pv_fe_describe_encode(uint8_t *out, size_t cap, uint8_t kind,
                          const char *name) {
  if (!name || (kind != 'S' && kind != 'P'))
    return PV_EINVAL;
  size_t nl = strlen(name) + 1;
  size_t total = PV_FRAME_HEADER + 1 + nl;
  if (total > (size_t)INT32_MAX || total > cap)
    return PV_ELIMIT;
  out[0] = PV_FE_DESCRIBE;
  pv_put_u32(out + 1, (uint32_t)(total - 1));
  out[PV_FRAME_HEADER] = kind;
  memcpy(out + PV_FRAME_HEADER + 1, name, nl);
  return (int)total;
}
