/* Fuzz target of the masking layer: arbitrary action (from a table or a
 * parsed spec), type, typmod, format, buffer size and value bytes. Checks:
 * no crash, output within cap and pv_mask_out_max, PV_ELIMIT only below
 * out_max, deterministic, misfits withheld, output valid for the type
 * where checkable; parsed specs round-trip through pv_action_format.
 * Input: [sel][spec?][type][typmod][format][cap][value...] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgveil/action.h"
#include "pgveil/mask.h"

static const char *const SPECS[] = {
    "clear",
    "withhold",
    "redact('[redacted]')",
    "redact('caf\xc3\xa9 \"q\" \\\\')",
    "hash",
    "hash(hex)",
    "mask",
    "mask(keep_first=1, keep_last=2, char='#')",
    "mask(keep_last=4)",
    "mask_email",
    "generalize(year)",
    "generalize(month)",
    "generalize(decade)",
    "generalize(zip3)",
    "generalize(bucket=10)",
    "generalize(bucket=7)",
    "generalize(bucket=9223372036854775807)",
};
#define NSPECS (sizeof SPECS / sizeof SPECS[0])

static const uint32_t TYPES[] = {
    PV_OID_TEXT,   PV_OID_VARCHAR,   PV_OID_BPCHAR,      PV_OID_NAME,
    PV_OID_INT2,   PV_OID_INT4,      PV_OID_INT8,        PV_OID_NUMERIC,
    PV_OID_DATE,   PV_OID_TIMESTAMP, PV_OID_TIMESTAMPTZ, PV_OID_UUID,
    PV_OID_JSON,   PV_OID_JSONB,     PV_OID_BOOL,        PV_OID_BYTEA,
    PV_OID_FLOAT8,
};
#define NTYPES (sizeof TYPES / sizeof TYPES[0])

#define FAIL(...)                                                              \
  do {                                                                         \
    fprintf(stderr, "fuzz_mask: " __VA_ARGS__);                                \
    fprintf(stderr, "\n");                                                     \
    abort();                                                                   \
  } while (0)

/* Characters as the masking layer counts them: a well-formed UTF-8
 * sequence, else one byte. */
static size_t utf8_chars(const uint8_t *s, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; c++) {
    size_t l = s[i] >= 0xf0 && s[i] <= 0xf4   ? 4
               : s[i] >= 0xe0 && s[i] <= 0xef ? 3
               : s[i] >= 0xc2 && s[i] <= 0xdf ? 2
                                              : 1;
    if (l > n - i)
      l = 1;
    for (size_t j = 1; j < l; j++)
      if ((s[i + j] & 0xc0) != 0x80)
        l = 1;
    i += l;
  }
  return c;
}

static unsigned be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }

/* What can be checked about an output without a PostgreSQL parser. */
static void check_valid(const pv_action_t *a, uint32_t oid, int32_t typmod,
                        int16_t fmt, const uint8_t *o, size_t n) {
  if (a->kind == PV_ACT_CLEAR)
    return; /* the input, unchanged: not ours to judge */
  switch (oid) {
  case PV_OID_INT2:
  case PV_OID_INT4:
  case PV_OID_INT8: {
    size_t w = oid == PV_OID_INT2 ? 2 : oid == PV_OID_INT4 ? 4 : 8;
    if (fmt ? n != w : (n == 0 || n > 20))
      FAIL("int output of %zu bytes", n);
    break;
  }
  case PV_OID_DATE:
    if (fmt ? n != 4 : n < 8)
      FAIL("date output of %zu bytes", n);
    break;
  case PV_OID_TIMESTAMP:
  case PV_OID_TIMESTAMPTZ:
    if (fmt ? n != 8 : n < 8)
      FAIL("timestamp output of %zu bytes", n);
    break;
  case PV_OID_UUID:
    if (n != (fmt ? 16u : 36u))
      FAIL("uuid output of %zu bytes", n);
    break;
  case PV_OID_NUMERIC:
    if (fmt) {
      if (n < 8 || n != 8 + 2 * (size_t)be16(o))
        FAIL("numeric header says %u digits, %zu bytes", be16(o), n);
      for (size_t i = 8; i < n; i += 2)
        if (be16(o + i) >= 10000)
          FAIL("numeric digit %u", be16(o + i));
    }
    break;
  case PV_OID_TEXT:
  case PV_OID_VARCHAR:
  case PV_OID_BPCHAR:
  case PV_OID_NAME:
    if (memchr(o, 0, n))
      FAIL("NUL in text output");
    if (oid == PV_OID_NAME && n > 63)
      FAIL("name of %zu bytes", n);
    if (oid == PV_OID_VARCHAR && typmod >= 4 &&
        utf8_chars(o, n) > (size_t)typmod - 4)
      FAIL("varchar(%d) output of %zu chars", typmod - 4, utf8_chars(o, n));
    if (oid == PV_OID_BPCHAR && typmod >= 4 &&
        utf8_chars(o, n) != (size_t)typmod - 4)
      FAIL("char(%d) output of %zu chars", typmod - 4, utf8_chars(o, n));
    break;
  case PV_OID_JSON:
  case PV_OID_JSONB: {
    size_t off = oid == PV_OID_JSONB && fmt ? 1 : 0;
    if (n < off + 2 || o[off] != '"' || o[n - 1] != '"')
      FAIL("json output is not a string");
    break;
  }
  default:
    break;
  }
}

static const pv_mask_key_t *fuzz_key(void) {
  static pv_mask_key_t k;
  static int ready;
  if (!ready) {
    static const uint8_t secret[] = "fuzzing secret, 32 bytes long..";
    if (pv_mask_key_derive(secret, sizeof secret - 1, "fuzz", &k) != 0)
      FAIL("key derivation");
    ready = 1;
  }
  return &k;
}

static int pick_action(const uint8_t **d, size_t *n, pv_action_t *a) {
  if (*n < 1)
    return -1;
  uint8_t sel = (*d)[0];
  (*d)++, (*n)--;
  const char *spec;
  size_t len;
  if (sel < 0xf0) {
    spec = SPECS[sel % NSPECS];
    len = strlen(spec);
  } else {
    if (*n < 1)
      return -1;
    len = (*d)[0];
    (*d)++, (*n)--;
    if (len > *n)
      len = *n;
    spec = (const char *)*d;
    *d += len, *n -= len;
  }
  char err[128];
  size_t off;
  if (pv_action_parse(spec, len, a, err, sizeof err, &off) != 0) {
    if (off > len || strlen(err) == 0)
      FAIL("parse error offset %zu of %zu, msg \"%s\"", off, len, err);
    return -1;
  }
  /* Canonical text parses back to the same action. */
  char canon[1024];
  pv_action_t b;
  size_t cl = pv_action_format(a, canon, sizeof canon);
  if (pv_action_parse(canon, cl, &b, err, sizeof err, &off) != 0 ||
      memcmp(a, &b, sizeof b) != 0)
    FAIL("format round trip: \"%s\"", canon);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  pv_action_t a;
  if (pick_action(&data, &size, &a) != 0 || size < 4)
    return 0;
  uint32_t oid = TYPES[data[0] % NTYPES];
  uint8_t tm = data[1];
  /* 0: none; < 0x80: varchar/char(tm - 1); else a numeric(p,s) typmod. */
  int32_t typmod = tm == 0 ? -1
                   : tm < 0x80
                       ? (int32_t)tm + 3
                       : (int32_t)(((tm & 0x1f) << 16) | ((tm >> 5) & 3)) + 4;
  int16_t fmt = (int16_t)(data[2] & 1);
  uint8_t capsel = data[3];
  const uint8_t *val = data + 4;
  size_t len = size - 4;

  const pv_mask_key_t *k = fuzz_key();
  size_t max = pv_mask_out_max(&a, oid, typmod, len);
  size_t cap = capsel == 0 ? max : (size_t)capsel - 1;
  uint8_t *out = malloc(cap ? cap : 1); /* exact size: ASan sees overruns */
  uint8_t *out2 = malloc(max ? max : 1);
  if (!out || !out2)
    abort();
  const char *col = "public.fuzz.col";
  int64_t r = pv_mask_apply(&a, k, col, oid, typmod, fmt, val, len, out, cap);
  bool fits = pv_mask_fits(&a, oid, typmod);
  if (!fits && r != PV_MASK_NULL)
    FAIL("misfit %d on %u returned %lld", a.kind, oid, (long long)r);
  if (r >= 0 && ((size_t)r > cap || (size_t)r > max))
    FAIL("output %lld beyond cap %zu / max %zu", (long long)r, cap, max);
  if (r < 0 && r != PV_MASK_NULL && r != PV_ELIMIT && r != PV_EPROTO)
    FAIL("unexpected result %lld", (long long)r);
  if (r == PV_ELIMIT && cap >= max)
    FAIL("PV_ELIMIT with cap %zu >= out_max %zu", cap, max);
  /* With out_max, never PV_ELIMIT, and the same answer (deterministic). */
  int64_t r2 = pv_mask_apply(&a, k, col, oid, typmod, fmt, val, len, out2, max);
  if (r2 == PV_ELIMIT)
    FAIL("PV_ELIMIT at out_max %zu", max);
  if (r != PV_ELIMIT && (r2 != r || (r > 0 && memcmp(out, out2, (size_t)r))))
    FAIL("not deterministic: %lld then %lld", (long long)r, (long long)r2);
  if (r2 >= 0)
    check_valid(&a, oid, typmod, fmt, out2, (size_t)r2);
  free(out);
  free(out2);
  return 0;
}
