/* Owns the entry points of the masking layer (pgveil/mask.h): which action
 * fits which type, output bounds, dispatch per type, and uuids.
 * Pure: no I/O, no globals, no allocation per value. */
#include "mask_internal.h"

#include <string.h>

#include <openssl/crypto.h>

#define UUID_TEXT_LEN 36

typedef enum {
  TC_OTHER = 0,
  TC_TEXT, /* text, varchar, bpchar, name */
  TC_INT,  /* int2, int4, int8 */
  TC_NUMERIC,
  TC_DATE,      /* date */
  TC_TIMESTAMP, /* timestamp, timestamptz */
  TC_UUID,
  TC_JSON, /* json, jsonb */
} tclass_t;

static tclass_t type_class(uint32_t oid) {
  switch (oid) {
  case PV_OID_TEXT:
  case PV_OID_VARCHAR:
  case PV_OID_BPCHAR:
  case PV_OID_NAME:
    return TC_TEXT;
  case PV_OID_INT2:
  case PV_OID_INT4:
  case PV_OID_INT8:
    return TC_INT;
  case PV_OID_NUMERIC:
    return TC_NUMERIC;
  case PV_OID_DATE:
    return TC_DATE;
  case PV_OID_TIMESTAMP:
  case PV_OID_TIMESTAMPTZ:
    return TC_TIMESTAMP;
  case PV_OID_UUID:
    return TC_UUID;
  case PV_OID_JSON:
  case PV_OID_JSONB:
    return TC_JSON;
  default:
    return TC_OTHER;
  }
}

/* The action's own fields are in their documented ranges (a pv_action_t
 * need not come from the parser). */
static bool action_sane(const pv_action_t *a) {
  switch (a->kind) {
  case PV_ACT_CLEAR:
  case PV_ACT_WITHHOLD:
  case PV_ACT_HASH:
  case PV_ACT_HASH_HEX:
  case PV_ACT_MASK_EMAIL:
    return true;
  case PV_ACT_REDACT:
    return a->redact_len <= PV_REDACT_MAX &&
           memchr(a->redact, 0, a->redact_len) == NULL;
  case PV_ACT_MASK:
    return a->keep_first <= 1000 && a->keep_last <= 1000 &&
           a->mask_char >= 0x20 && a->mask_char <= 0x7e;
  case PV_ACT_GENERALIZE:
    return (a->gen >= PV_GEN_YEAR && a->gen <= PV_GEN_ZIP3) ||
           (a->gen == PV_GEN_BUCKET && a->bucket > 0);
  }
  return false;
}

bool pv_mask_fits(const pv_action_t *a, uint32_t type_oid, int32_t typmod) {
  if (!a || !action_sane(a))
    return false;
  tclass_t tc = type_class(type_oid);
  switch (a->kind) {
  case PV_ACT_CLEAR:
  case PV_ACT_WITHHOLD:
    return true;
  case PV_ACT_REDACT:
    return tc == TC_TEXT || tc == TC_JSON;
  case PV_ACT_HASH:
    return tc == TC_TEXT || tc == TC_INT || tc == TC_UUID || tc == TC_DATE;
  case PV_ACT_HASH_HEX:
  case PV_ACT_MASK:
  case PV_ACT_MASK_EMAIL:
    return tc == TC_TEXT;
  case PV_ACT_GENERALIZE:
    switch (a->gen) {
    case PV_GEN_YEAR:
    case PV_GEN_MONTH:
    case PV_GEN_DECADE:
      return tc == TC_DATE || tc == TC_TIMESTAMP;
    case PV_GEN_BUCKET:
      return tc == TC_INT || tc == TC_NUMERIC;
    case PV_GEN_ZIP3:
      return tc == TC_TEXT;
    }
  }
  return false;
}

static size_t text_out_max(const pv_action_t *a, uint32_t oid, int32_t typmod,
                           size_t len) {
  size_t pad = oid == PV_OID_BPCHAR && typmod >= 4 ? (size_t)typmod - 4 : 0;
  size_t body;
  switch (a->kind) {
  case PV_ACT_REDACT:
    body = a->redact_len;
    break;
  case PV_ACT_HASH_HEX:
    body = 64;
    break;
  case PV_ACT_MASK_EMAIL:
    body = len + 3; /* "***" may be longer than a short local part */
    break;
  default:
    body = len; /* one byte or the input's bytes per character */
    break;
  }
  return body + pad;
}

size_t pv_mask_out_max(const pv_action_t *a, uint32_t type_oid, int32_t typmod,
                       size_t len) {
  if (!a || a->kind == PV_ACT_WITHHOLD || !pv_mask_fits(a, type_oid, typmod))
    return 0;
  if (a->kind == PV_ACT_CLEAR)
    return len;
  switch (type_class(type_oid)) {
  case TC_TEXT:
    return text_out_max(a, type_oid, typmod, len);
  case TC_JSON:
    return 3 + 6 * (size_t)a->redact_len;
  case TC_INT:
    return 24;
  case TC_NUMERIC: /* NUMERIC_GROWTH in mask_num.c */
    return len + 24;
  case TC_DATE:
  case TC_TIMESTAMP:
    return len + 64;
  case TC_UUID:
    return UUID_TEXT_LEN;
  default:
    return 0;
  }
}

static int hexval(uint8_t c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* uuid_out's form: 8-4-4-4-12 hex digits. */
static int parse_uuid_text(const uint8_t *s, size_t n, uint8_t u[16]) {
  if (n != UUID_TEXT_LEN)
    return PV_EPROTO;
  size_t b = 0;
  for (size_t i = 0; i < n;) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i++] != '-')
        return PV_EPROTO;
      continue;
    }
    int hi = hexval(s[i]), lo = hexval(s[i + 1]);
    if (hi < 0 || lo < 0)
      return PV_EPROTO;
    u[b++] = (uint8_t)(hi << 4 | lo);
    i += 2;
  }
  return PV_OK;
}

int64_t pv__mask_uuid(const pv_action_t *a, const pv_mask_key_t *k,
                      const char *col, int16_t format, const uint8_t *val,
                      size_t len, pv__out_t *o) {
  static const char hex[] = "0123456789abcdef";
  uint8_t u[16], mac[32];
  if (a->kind != PV_ACT_HASH)
    return PV_MASK_NULL;
  if (format == 0) {
    int rc = parse_uuid_text(val, len, u);
    if (rc < 0)
      return rc;
  } else {
    if (len != 16)
      return PV_EPROTO;
    memcpy(u, val, 16);
  }
  pv__hmac_t h;
  pv__hmac_begin(&h, k, MK_TAG_UUID, col);
  pv__hmac_update(&h, u, sizeof u);
  pv__hmac_final(&h, k, mac);
  memcpy(u, mac, 16);
  OPENSSL_cleanse(mac, sizeof mac);
  u[6] = (uint8_t)((u[6] & 0x0f) | 0x40); /* version 4 */
  u[8] = (uint8_t)((u[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  if (format == 1) {
    pv__put(o, u, 16);
    return pv__out_result(o);
  }
  for (size_t i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10)
      pv__putc(o, '-');
    pv__putc(o, (uint8_t)hex[u[i] >> 4]);
    pv__putc(o, (uint8_t)hex[u[i] & 15]);
  }
  return pv__out_result(o);
}

int64_t pv_mask_apply(const pv_action_t *a, const pv_mask_key_t *key,
                      const char *column_id, uint32_t type_oid, int32_t typmod,
                      int16_t format, const uint8_t *val, size_t len,
                      uint8_t *out, size_t cap) {
  static const uint8_t empty[1] = {0};
  if (!a || (!val && len) || (!out && cap) || (format != 0 && format != 1))
    return PV_EINVAL;
  if (!val)
    val = empty;
  if (a->kind == PV_ACT_WITHHOLD || !pv_mask_fits(a, type_oid, typmod))
    return PV_MASK_NULL; /* never clear: the fallback is withhold */
  if (a->kind == PV_ACT_CLEAR) {
    if (len > cap)
      return PV_ELIMIT;
    if (len)
      memcpy(out, val, len);
    return (int64_t)len;
  }
  if ((a->kind == PV_ACT_HASH || a->kind == PV_ACT_HASH_HEX) &&
      (!key || key->magic_ != PV__KEY_MAGIC))
    return PV_EINVAL;
  pv__out_t o = {out, cap, 0};
  switch (type_class(type_oid)) {
  case TC_TEXT:
    return pv__mask_text(a, key, column_id, type_oid, typmod, val, len, &o);
  case TC_JSON:
    return pv__mask_json_redact(a, type_oid, format, &o);
  case TC_INT:
    return pv__mask_int(a, key, column_id, type_oid, format, val, len, &o);
  case TC_NUMERIC:
    return pv__mask_numeric(a, typmod, format, val, len, &o);
  case TC_DATE:
  case TC_TIMESTAMP:
    return pv__mask_datetime(a, key, column_id, type_oid, format, val, len, &o);
  case TC_UUID:
    return pv__mask_uuid(a, key, column_id, format, val, len, &o);
  default:
    return PV_MASK_NULL;
  }
}
