/* Owns the masking of date, timestamp and timestamptz: generalize to the
 * start of a year/month/decade and the keyed date, in DateStyle ISO text
 * and in binary. Pure: no I/O, no globals, no allocation. */
#include "mask_internal.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#define POSTGRES_EPOCH_JDATE 2451545   /* date2j(2000, 1, 1) */
#define DATE_END_JULIAN 2147483494     /* date2j(5874898, 1, 1) */
#define TIMESTAMP_END_JULIAN 109203528 /* date2j(294277, 1, 1) */
#define USECS_PER_DAY INT64_C(86400000000)
#define MIN_TIMESTAMP INT64_C(-211813488000000000) /* julian day 0 */
#define END_TIMESTAMP INT64_C(9223371331200000000) /* 294277-01-01 */
#define HASH_DATE_FIRST_YEAR 1900
#define HASH_DATE_END_YEAR 2100 /* exclusive */

/* PostgreSQL's date2j/j2date (src/backend/utils/adt/datetime.c): the
 * proleptic Gregorian calendar, astronomical years (0 = 1 BC). */
static int date2j(int y, int m, int d) {
  int julian, century;
  if (m > 2) {
    m += 1;
    y += 4800;
  } else {
    m += 13;
    y += 4799;
  }
  century = y / 100;
  julian = y * 365 - 32167;
  julian += y / 4 - century + century / 4;
  julian += 7834 * m / 256 + d;
  return julian;
}

static void j2date(int jd, int *year, int *month, int *day) {
  unsigned int julian, quad, extra;
  int y;
  julian = (unsigned)jd + 32044;
  quad = julian / 146097;
  extra = (julian - quad * 146097) * 4 + 3;
  julian += 60 + quad * 3 + extra / 146097;
  quad = julian / 1461;
  julian -= quad * 1461;
  y = (int)(julian * 4 / 1461);
  julian = ((y != 0) ? ((julian + 305) % 365) : ((julian + 306) % 366)) + 123;
  y += (int)quad * 4;
  *year = y - 4800;
  quad = julian * 2141 / 65536;
  *day = (int)(julian - 7834 * quad / 256);
  *month = (int)((quad + 10) % 12 + 1);
}

static bool is_leap(int y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m) {
  static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* Julian day of the start of the period containing jd, clamped to 0. */
static int generalize_jd(int jd, pv_generalize_t g) {
  int y, m, d;
  j2date(jd, &y, &m, &d);
  if (g == PV_GEN_YEAR)
    m = 1;
  else if (g == PV_GEN_DECADE) {
    m = 1;
    y -= ((y % 10) + 10) % 10; /* floor, also for astronomical y <= 0 */
  }
  int r = date2j(y, m, 1);
  return r < 0 ? 0 : r;
}

/* A parsed ISO text value. */
typedef struct {
  int jd;        /* julian day of the date part */
  bool infinite; /* "infinity" / "-infinity": kept as is */
  bool neg_inf;
  size_t tz_off; /* where the UTC offset starts in the text */
  size_t tz_len; /* timestamptz: "+02", "-03:30", "+00:53:28" */
} isotext_t;

static bool digits(const uint8_t *s, size_t n, size_t at, size_t cnt,
                   int *out) {
  int v = 0;
  if (at > n || n - at < cnt)
    return false;
  for (size_t i = 0; i < cnt; i++) {
    if (s[at + i] < '0' || s[at + i] > '9')
      return false;
    v = v * 10 + (s[at + i] - '0');
  }
  *out = v;
  return true;
}

static bool lit(const uint8_t *s, size_t n, size_t at, const char *w) {
  size_t l = strlen(w);
  return at <= n && n - at >= l && memcmp(s + at, w, l) == 0;
}

/* "YYYY-MM-DD" (4 to 7 year digits). OUT: y/m/d as written (BC applied
 * later), *pos after them. */
static bool parse_ymd(const uint8_t *s, size_t n, size_t *pos, int *y, int *m,
                      int *d) {
  size_t yl = 0;
  while (yl < n && s[yl] >= '0' && s[yl] <= '9')
    yl++;
  if (yl < 4 || yl > 7 || !digits(s, n, 0, yl, y))
    return false;
  if (!lit(s, n, yl, "-") || !digits(s, n, yl + 1, 2, m) ||
      !lit(s, n, yl + 3, "-") || !digits(s, n, yl + 4, 2, d))
    return false;
  *pos = yl + 6;
  /* 5874897 is PostgreSQL's last year; also keeps date2j from overflow. */
  return *y >= 1 && *y <= 5874897 && *m >= 1 && *m <= 12 && *d >= 1;
}

/* " HH:MM:SS[.ffffff]" */
static bool parse_time(const uint8_t *s, size_t n, size_t *pos) {
  int hh, mi, ss;
  size_t p = *pos;
  if (!lit(s, n, p, " ") || !digits(s, n, p + 1, 2, &hh) ||
      !lit(s, n, p + 3, ":") || !digits(s, n, p + 4, 2, &mi) ||
      !lit(s, n, p + 6, ":") || !digits(s, n, p + 7, 2, &ss))
    return false;
  if (hh > 24 || mi > 59 || ss > 60)
    return false;
  p += 9;
  if (lit(s, n, p, ".")) {
    size_t f = ++p;
    while (p < n && s[p] >= '0' && s[p] <= '9' && p - f < 6)
      p++;
    if (p == f)
      return false;
  }
  *pos = p;
  return true;
}

/* "+HH[:MM[:SS]]" */
static bool parse_tz(const uint8_t *s, size_t n, size_t *pos) {
  int v;
  size_t p = *pos;
  if (p >= n || (s[p] != '+' && s[p] != '-') || !digits(s, n, p + 1, 2, &v))
    return false;
  p += 3;
  for (int i = 0; i < 2 && lit(s, n, p, ":"); i++) {
    if (!digits(s, n, p + 1, 2, &v) || v > 59)
      return false;
    p += 3;
  }
  *pos = p;
  return true;
}

static int parse_iso(const uint8_t *s, size_t n, uint32_t oid, isotext_t *t) {
  memset(t, 0, sizeof *t);
  if ((n == 8 && memcmp(s, "infinity", 8) == 0) ||
      (n == 9 && memcmp(s, "-infinity", 9) == 0)) {
    t->infinite = true;
    t->neg_inf = n == 9;
    return PV_OK;
  }
  int y, m, d;
  size_t pos;
  if (!parse_ymd(s, n, &pos, &y, &m, &d))
    return PV_EPROTO;
  if (oid != PV_OID_DATE && !parse_time(s, n, &pos))
    return PV_EPROTO;
  if (oid == PV_OID_TIMESTAMPTZ) {
    t->tz_off = pos;
    if (!parse_tz(s, n, &pos))
      return PV_EPROTO;
    t->tz_len = pos - t->tz_off;
  }
  bool bc = lit(s, n, pos, " BC");
  if (bc)
    pos += 3;
  if (pos != n)
    return PV_EPROTO;
  if (bc)
    y = 1 - y;
  if (d > days_in_month(y, m))
    return PV_EPROTO;
  t->jd = date2j(y, m, d);
  if (t->jd < 0 ||
      t->jd >= (oid == PV_OID_DATE ? DATE_END_JULIAN : TIMESTAMP_END_JULIAN))
    return PV_EPROTO;
  return PV_OK;
}

/* ISO text of julian day jd, with a midnight time for timestamps and the
 * given UTC offset for timestamptz, " BC" last as PostgreSQL prints it. */
static int64_t put_iso(int jd, uint32_t oid, const uint8_t *tz, size_t tzlen,
                       pv__out_t *o) {
  int y, m, d;
  char buf[48];
  j2date(jd, &y, &m, &d);
  bool bc = y <= 0;
  int n = snprintf(buf, sizeof buf, "%04d-%02d-%02d%s", bc ? 1 - y : y, m, d,
                   oid == PV_OID_DATE ? "" : " 00:00:00");
  pv__put(o, buf, (size_t)n);
  pv__put(o, tz, tzlen);
  if (bc)
    pv__put(o, " BC", 3);
  return pv__out_result(o);
}

/* Binary values as a julian day; *infinite for the +-infinity sentinels. */
static int decode_bin(uint32_t oid, const uint8_t *v, size_t len, int64_t *raw,
                      bool *infinite, int *jd) {
  *infinite = false;
  if (oid == PV_OID_DATE) {
    if (len != 4)
      return PV_EPROTO;
    int32_t days = (int32_t)pv__be32(v);
    *raw = days;
    if (days == INT32_MIN || days == INT32_MAX) {
      *infinite = true;
      return PV_OK;
    }
    int64_t j = (int64_t)days + POSTGRES_EPOCH_JDATE;
    if (j < 0 || j >= DATE_END_JULIAN)
      return PV_EPROTO;
    *jd = (int)j;
    return PV_OK;
  }
  if (len != 8)
    return PV_EPROTO;
  int64_t us = (int64_t)((uint64_t)pv__be32(v) << 32 | pv__be32(v + 4));
  *raw = us;
  if (us == INT64_MIN || us == INT64_MAX) {
    *infinite = true;
    return PV_OK;
  }
  if (us < MIN_TIMESTAMP || us >= END_TIMESTAMP)
    return PV_EPROTO;
  int64_t days = us / USECS_PER_DAY - (us % USECS_PER_DAY < 0);
  *jd = (int)(days + POSTGRES_EPOCH_JDATE);
  return PV_OK;
}

static int64_t put_bin(uint32_t oid, int jd, pv__out_t *o) {
  uint8_t b[8];
  if (oid == PV_OID_DATE) {
    pv__put_be32(b, (uint32_t)(int32_t)(jd - POSTGRES_EPOCH_JDATE));
    pv__put(o, b, 4);
  } else {
    uint64_t us =
        (uint64_t)((int64_t)(jd - POSTGRES_EPOCH_JDATE) * USECS_PER_DAY);
    pv__put_be32(b, (uint32_t)(us >> 32));
    pv__put_be32(b + 4, (uint32_t)us);
    pv__put(o, b, 8);
  }
  return pv__out_result(o);
}

/* A keyed julian day in [1900-01-01, 2100-01-01) from the canonical date
 * (days since 2000-01-01 as int32; the infinities are values too). */
static int hash_jd(const pv_mask_key_t *k, const char *col, int32_t days) {
  pv__hmac_t h;
  uint8_t in[4], mac[32];
  pv__put_be32(in, (uint32_t)days);
  pv__hmac_begin(&h, k, MK_TAG_DATE, col);
  pv__hmac_update(&h, in, sizeof in);
  pv__hmac_final(&h, k, mac);
  uint64_t x = (uint64_t)pv__be32(mac) << 32 | pv__be32(mac + 4);
  OPENSSL_cleanse(mac, sizeof mac);
  int lo = date2j(HASH_DATE_FIRST_YEAR, 1, 1);
  int hi = date2j(HASH_DATE_END_YEAR, 1, 1);
  return lo + (int)(x % (uint64_t)(hi - lo)); /* bias < 2^-47 */
}

static int64_t datetime_text(const pv_action_t *a, const pv_mask_key_t *k,
                             const char *col, uint32_t oid, const uint8_t *val,
                             size_t len, pv__out_t *o) {
  isotext_t t;
  int rc = parse_iso(val, len, oid, &t);
  if (rc < 0)
    return rc;
  if (a->kind == PV_ACT_HASH) {
    int32_t days = t.infinite ? (t.neg_inf ? INT32_MIN : INT32_MAX)
                              : t.jd - POSTGRES_EPOCH_JDATE;
    return put_iso(hash_jd(k, col, days), oid, NULL, 0, o);
  }
  if (t.infinite) {
    pv__put(o, val, len);
    return pv__out_result(o);
  }
  return put_iso(generalize_jd(t.jd, a->gen), oid, val + t.tz_off, t.tz_len, o);
}

static int64_t datetime_bin(const pv_action_t *a, const pv_mask_key_t *k,
                            const char *col, uint32_t oid, const uint8_t *val,
                            size_t len, pv__out_t *o) {
  int64_t raw;
  bool infinite;
  int jd = 0;
  int rc = decode_bin(oid, val, len, &raw, &infinite, &jd);
  if (rc < 0)
    return rc;
  if (a->kind == PV_ACT_HASH)
    return put_bin(oid, hash_jd(k, col, (int32_t)raw), o);
  if (infinite) {
    pv__put(o, val, len);
    return pv__out_result(o);
  }
  return put_bin(oid, generalize_jd(jd, a->gen), o);
}

int64_t pv__mask_datetime(const pv_action_t *a, const pv_mask_key_t *k,
                          const char *col, uint32_t oid, int16_t format,
                          const uint8_t *val, size_t len, pv__out_t *o) {
  bool gen = a->kind == PV_ACT_GENERALIZE &&
             (a->gen == PV_GEN_YEAR || a->gen == PV_GEN_MONTH ||
              a->gen == PV_GEN_DECADE);
  bool hash = a->kind == PV_ACT_HASH && oid == PV_OID_DATE;
  if (!gen && !hash)
    return PV_MASK_NULL;
  return format == 0 ? datetime_text(a, k, col, oid, val, len, o)
                     : datetime_bin(a, k, col, oid, val, len, o);
}
