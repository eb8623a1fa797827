/* Owns decoding and encoding of the messages a server sends. Pure: no I/O,
 * no globals; server bytes are untrusted, nothing is read outside a body. */
#include "pgveil/pg_msg_backend.h"

#include <string.h>

#include "pg_reader.h"

#define ROWDESC_FIELD_MIN 19u /* "" + 4 + 2 + 4 + 2 + 4 + 2 */
#define SQLSTATE_LEN 5u

/* A format code: only text (0) and binary (1) exist. */
static int check_format(int16_t f) {
  return f == 0 || f == 1 ? PV_OK : PV_EPROTO;
}

static int decode_field(pv_rd_t *r, pv_be_field_t *f) {
  uint32_t u32;
  uint16_t u16;
  TRY(pv_rd_cstr(r, &f->name, NULL));
  TRY(pv_rd_u32(r, &f->table_oid));
  TRY(pv_rd_u16(r, &u16));
  f->attnum = (int16_t)u16;
  TRY(pv_rd_u32(r, &f->type_oid));
  TRY(pv_rd_u16(r, &u16));
  f->typlen = (int16_t)u16;
  TRY(pv_rd_u32(r, &u32));
  f->typmod = (int32_t)u32;
  TRY(pv_rd_u16(r, &u16));
  f->format = (int16_t)u16;
  return check_format(f->format);
}

int pv_be_rowdesc_decode(const pv_msg_t *m, pv_be_field_t *fields, size_t max,
                         uint16_t *nfields) {
  pv_rd_t r;
  uint16_t n;
  pv_rd_init(&r, m);
  TRY(pv_rd_u16(&r, &n));
  /* A count the body cannot hold is malformed, not merely too many. */
  if ((size_t)n * ROWDESC_FIELD_MIN > pv_rd_left(&r))
    return PV_EPROTO;
  if (n > max)
    return PV_ELIMIT;
  for (uint16_t i = 0; i < n; i++)
    TRY(decode_field(&r, &fields[i]));
  TRY(pv_rd_end(&r));
  *nfields = n;
  return PV_OK;
}

int pv_be_datarow_begin(const pv_msg_t *m, pv_be_datarow_iter_t *it) {
  pv_rd_t r;
  pv_rd_init(&r, m);
  it->p = NULL; /* NULL p marks a failed iterator: next keeps failing */
  it->end = NULL;
  it->nfields = 0;
  it->i = 0;
  TRY(pv_rd_u16(&r, &it->nfields));
  if ((size_t)it->nfields * 4 > pv_rd_left(&r))
    return PV_EPROTO;
  it->p = r.p;
  it->end = r.end;
  return PV_OK;
}

static int datarow_fail(pv_be_datarow_iter_t *it) {
  it->p = NULL;
  return PV_EPROTO;
}

int pv_be_datarow_next(pv_be_datarow_iter_t *it, const uint8_t **val,
                       int32_t *len) {
  *val = NULL;
  *len = -1;
  if (!it->p)
    return PV_EPROTO;
  size_t left = (size_t)(it->end - it->p);
  if (it->i == it->nfields)
    return left == 0 ? 0 : datarow_fail(it); /* trailing bytes */
  if (left < 4)
    return datarow_fail(it);
  int32_t l = (int32_t)pv_get_u32(it->p);
  if (l < -1 || (l >= 0 && (size_t)l > left - 4))
    return datarow_fail(it);
  it->p += 4;
  it->i++;
  if (l == -1)
    return 1;
  *val = it->p;
  *len = l;
  it->p += l;
  return 1;
}

void pv_be_errfield_begin(const pv_msg_t *m, pv_be_errfield_iter_t *it) {
  pv_rd_t r;
  pv_rd_init(&r, m);
  it->p = r.p;
  it->end = r.end;
}

/* After the terminator, p stays on it so later calls return 0 again; after
 * an error p == end so later calls fail again. */
int pv_be_errfield_next(pv_be_errfield_iter_t *it, uint8_t *code,
                        const char **value) {
  *code = 0;
  *value = NULL;
  if (!it->p || it->p >= it->end)
    goto fail; /* missing terminator */
  if (it->p[0] == 0) {
    if (it->p + 1 != it->end)
      goto fail; /* trailing bytes */
    return 0;
  }
  size_t left = (size_t)(it->end - it->p) - 1;
  const uint8_t *nul = memchr(it->p + 1, 0, left);
  if (!nul)
    goto fail;
  *code = it->p[0];
  *value = (const char *)(it->p + 1);
  it->p = nul + 1;
  return 1;
fail:
  *code = 0;
  *value = NULL;
  it->p = it->end;
  return PV_EPROTO;
}

/* SQLSTATE: five characters from [0-9A-Z]. We forward it to clients when
 * scrubbing errors, so anything else is refused. */
static int valid_sqlstate(const char *s) {
  if (strlen(s) != SQLSTATE_LEN)
    return 0;
  for (size_t i = 0; i < SQLSTATE_LEN; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z')))
      return 0;
  return 1;
}

int pv_be_error_sqlstate(const pv_msg_t *m, char out[6]) {
  pv_be_errfield_iter_t it;
  uint8_t code;
  const char *value, *state = NULL;
  int rc;
  out[0] = 0;
  pv_be_errfield_begin(m, &it);
  /* Walk to the end: a malformed message is malformed even after 'C'. */
  while ((rc = pv_be_errfield_next(&it, &code, &value)) == 1) {
    if (code == 'C' && !state)
      state = value;
  }
  if (rc != 0)
    return PV_EPROTO;
  if (!state)
    return PV_ENOENT;
  if (!valid_sqlstate(state))
    return PV_EPROTO;
  memcpy(out, state, SQLSTATE_LEN + 1);
  return PV_OK;
}

int pv_be_command_complete_decode(const pv_msg_t *m, const char **tag) {
  pv_rd_t r;
  pv_rd_init(&r, m);
  TRY(pv_rd_cstr(&r, tag, NULL));
  return pv_rd_end(&r);
}

int pv_be_ready_decode(const pv_msg_t *m, uint8_t *status) {
  pv_rd_t r;
  uint8_t s;
  pv_rd_init(&r, m);
  TRY(pv_rd_u8(&r, &s));
  TRY(pv_rd_end(&r));
  if (s != 'I' && s != 'T' && s != 'E')
    return PV_EPROTO;
  *status = s;
  return PV_OK;
}

/* AuthenticationSASL: mechanism names, each NUL-terminated, then "". */
static int check_sasl_list(pv_rd_t *r) {
  const char *mech;
  size_t len;
  do {
    TRY(pv_rd_cstr(r, &mech, &len));
  } while (len > 0);
  return pv_rd_end(r);
}

enum {
  AUTH_OK = 0,
  AUTH_KERBEROS_V5 = 2,
  AUTH_CLEARTEXT = 3,
  AUTH_MD5 = 5,
  AUTH_GSS = 7,
  AUTH_GSS_CONTINUE = 8,
  AUTH_SSPI = 9,
  AUTH_SASL = 10,
  AUTH_SASL_CONTINUE = 11,
  AUTH_SASL_FINAL = 12,
};

int pv_be_auth_decode(const pv_msg_t *m, uint32_t *subtype) {
  pv_rd_t r;
  uint32_t t;
  pv_rd_init(&r, m);
  TRY(pv_rd_u32(&r, &t));
  switch (t) {
  case AUTH_OK:
  case AUTH_KERBEROS_V5:
  case AUTH_CLEARTEXT:
  case AUTH_GSS:
  case AUTH_SSPI:
    TRY(pv_rd_end(&r));
    break;
  case AUTH_MD5:
    TRY(pv_rd_skip(&r, 4, NULL)); /* salt */
    TRY(pv_rd_end(&r));
    break;
  case AUTH_SASL:
    TRY(check_sasl_list(&r));
    break;
  case AUTH_GSS_CONTINUE:
  case AUTH_SASL_CONTINUE:
  case AUTH_SASL_FINAL:
    break; /* opaque mechanism data, any length */
  default:
    return PV_EPROTO; /* unknown: we cannot relay what we cannot frame */
  }
  *subtype = t;
  return PV_OK;
}

int pv_be_key_data_decode(const pv_msg_t *m, uint32_t *pid, const uint8_t **key,
                          size_t *key_len) {
  pv_rd_t r;
  pv_rd_init(&r, m);
  TRY(pv_rd_u32(&r, pid));
  size_t n = pv_rd_left(&r);
  if (n < 4 || n > PV_CANCEL_KEY_MAX)
    return PV_EPROTO;
  *key = r.p;
  *key_len = n;
  return PV_OK;
}

int pv_be_copy_response_decode(const pv_msg_t *m, uint8_t *format,
                               uint16_t *ncols, const uint8_t **col_formats) {
  pv_rd_t r;
  uint8_t f;
  uint16_t n;
  const uint8_t *cols;
  pv_rd_init(&r, m);
  TRY(pv_rd_u8(&r, &f));
  TRY(pv_rd_u16(&r, &n));
  TRY(pv_rd_skip(&r, (size_t)n * 2, &cols));
  TRY(pv_rd_end(&r));
  if (f != 0 && f != 1)
    return PV_EPROTO;
  /* The protocol requires every column to be text in a text COPY. */
  for (uint16_t i = 0; i < n; i++) {
    int16_t c = (int16_t)pv_get_u16(cols + (size_t)i * 2);
    if (check_format(c) != PV_OK || (f == 0 && c != 0))
      return PV_EPROTO;
  }
  *format = f;
  *ncols = n;
  *col_formats = cols;
  return PV_OK;
}

/* Appends code + NUL-terminated s at out[*pos]; the caller sized out. */
static void put_field(uint8_t *out, size_t *pos, uint8_t code, const char *s,
                      size_t len) {
  out[(*pos)++] = code;
  memcpy(out + *pos, s, len + 1);
  *pos += len + 1;
}

int pv_be_error_encode(uint8_t *out, size_t cap, const char *severity,
                       const char *sqlstate, const char *message) {
  if (!severity || !sqlstate || !message || !valid_sqlstate(sqlstate))
    return PV_EINVAL;
  size_t sl = strlen(severity), cl = SQLSTATE_LEN, ml = strlen(message);
  /* 'S' and 'V' (non-localised severity) carry the same text. */
  size_t total = PV_FRAME_HEADER + 2 * (sl + 2) + (cl + 2) + (ml + 2) + 1;
  if (total > (size_t)INT32_MAX || total > cap)
    return PV_ELIMIT;
  size_t pos = PV_FRAME_HEADER;
  out[0] = PV_BE_ERROR;
  pv_put_u32(out + 1, (uint32_t)(total - 1));
  put_field(out, &pos, 'S', severity, sl);
  put_field(out, &pos, 'V', severity, sl);
  put_field(out, &pos, 'C', sqlstate, cl);
  put_field(out, &pos, 'M', message, ml);
  out[pos++] = 0;
  return (int)pos;
}

int pv_be_parameter_status_decode(const pv_msg_t *m, const char **name,
                                  const char **value) {
  pv_rd_t r;
  pv_rd_init(&r, m);
  TRY(pv_rd_cstr(&r, name, NULL));
  TRY(pv_rd_cstr(&r, value, NULL));
  return pv_rd_end(&r);
}
