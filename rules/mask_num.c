/* Owns the masking of int2/int4/int8 (keyed permutation, buckets) and of
 * numeric (buckets) in text and binary form, with decimal arithmetic done
 * in the output buffer. Pure: no I/O, no globals, no allocation. */
#include "mask_internal.h"

#include <stdio.h>
#include <string.h>

#define NUMERIC_POS 0x0000
#define NUMERIC_NEG 0x4000
#define NUMERIC_NAN 0xC000
#define NUMERIC_PINF 0xD000
#define NUMERIC_NINF 0xF000
#define NUMERIC_DSCALE_MASK 0x3FFF
#define NBASE 10000
#define CARRY_DIGITS 20   /* room above the integer part for + N (< 10^19) */
#define CARRY_GROUPS 6    /* the same in base-10000 groups */
#define NUMERIC_GROWTH 24 /* bytes an output may exceed its input by */

typedef struct {
  unsigned bits;
  int64_t min, max;
} int_type_t;

static int_type_t int_type(uint32_t oid) {
  switch (oid) {
  case PV_OID_INT2:
    return (int_type_t){16, INT16_MIN, INT16_MAX};
  case PV_OID_INT4:
    return (int_type_t){32, INT32_MIN, INT32_MAX};
  default:
    return (int_type_t){64, INT64_MIN, INT64_MAX};
  }
}

/* PostgreSQL's int output: -?[0-9]+, in range. */
static int parse_int_text(const uint8_t *s, size_t n, int_type_t t,
                          int64_t *out) {
  size_t i = 0;
  bool neg = false;
  if (n && s[0] == '-') {
    neg = true;
    i = 1;
  }
  if (i == n || n - i > 19)
    return PV_EPROTO;
  uint64_t mag = 0;
  for (; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return PV_EPROTO;
    mag = mag * 10 + (uint64_t)(s[i] - '0'); /* 19 digits cannot wrap */
  }
  uint64_t lim = neg ? (uint64_t)0 - (uint64_t)t.min : (uint64_t)t.max;
  if (mag > lim)
    return PV_EPROTO;
  *out = neg ? (int64_t)((uint64_t)0 - mag) : (int64_t)mag;
  return PV_OK;
}

static int decode_int(const uint8_t *val, size_t len, int16_t format,
                      int_type_t t, int64_t *v) {
  if (format == 0)
    return parse_int_text(val, len, t, v);
  if (len != t.bits / 8)
    return PV_EPROTO;
  uint64_t u = 0;
  for (size_t i = 0; i < len; i++)
    u = u << 8 | val[i];
  /* Sign-extend from the type's width. */
  if (t.bits < 64 && (u >> (t.bits - 1)) & 1)
    u |= ~(uint64_t)0 << t.bits;
  *v = (int64_t)u;
  return PV_OK;
}

static int64_t encode_int(int64_t v, int16_t format, int_type_t t,
                          pv__out_t *o) {
  if (format == 0) {
    char buf[24];
    int n = snprintf(buf, sizeof buf, "%lld", (long long)v);
    pv__put(o, buf, (size_t)n);
  } else {
    for (unsigned sh = t.bits; sh > 0; sh -= 8)
      pv__putc(o, (uint8_t)((uint64_t)v >> (sh - 8)));
  }
  return pv__out_result(o);
}

/* floor(v / n) * n, clamped to the type's minimum. */
static int64_t bucket_int(int64_t v, int64_t n, int_type_t t) {
  __int128 q = v / n;
  if (v % n != 0 && v < 0)
    q--;
  __int128 r = q * n;
  return r < t.min ? t.min : (int64_t)r;
}

int64_t pv__mask_int(const pv_action_t *a, const pv_mask_key_t *k,
                     const char *col, uint32_t oid, int16_t format,
                     const uint8_t *val, size_t len, pv__out_t *o) {
  int_type_t t = int_type(oid);
  int64_t v, r;
  int rc = decode_int(val, len, format, t, &v);
  if (rc < 0)
    return rc;
  if (a->kind == PV_ACT_HASH) {
    if (!pv__mask_int_perm(k, col, t.bits, v, &r))
      return PV_MASK_NULL;
  } else if (a->kind == PV_ACT_GENERALIZE && a->gen == PV_GEN_BUCKET &&
             a->bucket > 0) {
    r = bucket_int(v, a->bucket, t);
  } else {
    return PV_MASK_NULL;
  }
  return encode_int(r, format, t, o);
}

/* Integer digits a numeric(p,s) typmod allows (p - s), or INT32_MAX.
 * PostgreSQL 15 packs s as 11-bit two's complement (negative scales). */
static int32_t numeric_int_digits(int32_t typmod) {
  if (typmod < 4)
    return INT32_MAX;
  int32_t tm = typmod - 4;
  int32_t p = (tm >> 16) & 0xffff;
  int32_t s = ((tm & 0x7ff) ^ 1024) - 1024;
  return p - s;
}

/* Integer part I of |v| mod n, over decimal digits or base-10000 groups. */
static uint64_t mod_step(uint64_t r, unsigned digit, unsigned base,
                         uint64_t n) {
  return (uint64_t)(((unsigned __int128)r * base + digit) % n);
}

/* Decimal text: -?digits(.digits)?, or NaN / Infinity / -Infinity. */
static int64_t numeric_text(const pv_action_t *a, int32_t typmod,
                            const uint8_t *val, size_t len, pv__out_t *o) {
  static const char *const special[] = {"NaN", "Infinity", "-Infinity"};
  for (size_t i = 0; i < 3; i++)
    if (len == strlen(special[i]) && memcmp(val, special[i], len) == 0) {
      pv__put(o, val, len);
      return pv__out_result(o);
    }
  size_t i = 0, ip, il, fl = 0;
  bool neg = false, frac_nonzero = false;
  if (len && val[0] == '-') {
    neg = true;
    i = 1;
  }
  ip = i;
  while (i < len && val[i] >= '0' && val[i] <= '9')
    i++;
  il = i - ip;
  if (il == 0)
    return PV_EPROTO;
  if (i < len && val[i] == '.') {
    size_t fp = ++i;
    while (i < len && val[i] >= '0' && val[i] <= '9')
      frac_nonzero |= val[i++] != '0';
    fl = i - fp;
    if (fl == 0)
      return PV_EPROTO;
  }
  if (i != len)
    return PV_EPROTO;

  uint64_t n = (uint64_t)a->bucket, r = 0;
  for (size_t j = 0; j < il; j++)
    r = mod_step(r, (unsigned)(val[ip + j] - '0'), 10, n);

  /* Work area: [sign][CARRY_DIGITS zeros][integer digits]. */
  size_t need = 1 + CARRY_DIGITS + il + 1 + fl;
  if (o->n > o->cap || o->cap - o->n < need)
    return PV_ELIMIT;
  uint8_t *d = o->p + o->n + 1;
  size_t nd = CARRY_DIGITS + il;
  memset(d, '0', CARRY_DIGITS);
  memcpy(d + CARRY_DIGITS, val + ip, il);
  /* floor(v/n)*n: positive: I - r. Negative: -(I - r + n) unless v is
   * an exact multiple of n. */
  bool add_n = neg && (r != 0 || frac_nonzero);
  int borrow = 0;
  for (size_t j = nd; j > 0 && (r || borrow); j--) {
    int dg = d[j - 1] - '0' - (int)(r % 10) - borrow;
    r /= 10;
    borrow = dg < 0;
    d[j - 1] = (uint8_t)('0' + (dg + (borrow ? 10 : 0)));
  }
  uint64_t m = add_n ? n : 0;
  int carry = 0;
  for (size_t j = nd; j > 0 && (m || carry); j--) {
    int dg = d[j - 1] - '0' + (int)(m % 10) + carry;
    m /= 10;
    carry = dg >= 10;
    d[j - 1] = (uint8_t)('0' + dg % 10);
  }
  size_t s = 0;
  while (s < nd && d[s] == '0')
    s++;
  size_t sig = nd - s; /* significant integer digits, 0 for zero */
  if ((int64_t)sig > numeric_int_digits(typmod))
    return PV_MASK_NULL; /* does not fit numeric(p,s) any more */
  uint8_t *base = o->p + o->n;
  size_t w = 0;
  if (neg && sig)
    base[w++] = '-';
  if (sig) {
    memmove(base + w, d + s, sig);
    w += sig;
  } else {
    base[w++] = '0';
  }
  if (fl) {
    base[w++] = '.';
    memset(base + w, '0', fl);
    w += fl;
  }
  o->n += w;
  return pv__out_result(o);
}

static unsigned get16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }

static void set16(uint8_t *p, unsigned v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

static int64_t numeric_special(unsigned sign, pv__out_t *o) {
  uint8_t h[8] = {0};
  set16(h + 4, sign);
  pv__put(o, h, sizeof h);
  return pv__out_result(o);
}

/* Decimal digits of a base-10000 group (1..4; 0 for 0). */
static int group_digits(unsigned g) {
  return g >= 1000 ? 4 : g >= 100 ? 3 : g >= 10 ? 2 : g ? 1 : 0;
}

/* numeric_send: ndigits, weight, sign, dscale (int16 each), then ndigits
 * base-10000 digits, most significant first, weight = exponent of the
 * first. */
static int64_t numeric_bin(const pv_action_t *a, int32_t typmod,
                           const uint8_t *val, size_t len, pv__out_t *o) {
  if (len < 8)
    return PV_EPROTO;
  unsigned nd = get16(val), sign = get16(val + 4), dscale = get16(val + 6);
  int weight = (int16_t)get16(val + 2);
  if (len != 8 + 2 * (size_t)nd || (dscale & NUMERIC_DSCALE_MASK) != dscale)
    return PV_EPROTO;
  if (sign == NUMERIC_NAN || sign == NUMERIC_PINF || sign == NUMERIC_NINF)
    return numeric_special(sign, o);
  if (sign != NUMERIC_POS && sign != NUMERIC_NEG)
    return PV_EPROTO;
  const uint8_t *dg = val + 8;
  for (size_t j = 0; j < nd; j++)
    if (get16(dg + 2 * j) >= NBASE)
      return PV_EPROTO;

  size_t G = weight >= 0 ? (size_t)weight + 1 : 0; /* integer groups */
  bool frac_nonzero = false;
  for (size_t j = G; j < nd; j++)
    frac_nonzero |= get16(dg + 2 * j) != 0;
  uint64_t n = (uint64_t)a->bucket, r = 0;
  for (size_t j = 0; j < G; j++)
    r = mod_step(r, j < nd ? get16(dg + 2 * j) : 0, NBASE, n);

  bool neg = sign == NUMERIC_NEG;
  bool add_n = neg && (r != 0 || frac_nonzero);
  bool changes = r != 0 || add_n;
  /* Work area after the header: CARRY_GROUPS zero groups, then the
   * integer groups; slot i has exponent (CARRY_GROUPS + G - 1 - i). The
   * implicit zero groups below the stored digits are materialized only
   * when the arithmetic reaches them; a result that would outgrow the
   * input by more than NUMERIC_GROWTH bytes (a value >= 10^24 stored with
   * few digits) is withheld, so pv_mask_out_max stays len-bound. */
  size_t slots = CARRY_GROUPS + (changes || G < nd ? G : nd);
  if (8 + 2 * slots > len + NUMERIC_GROWTH)
    return PV_MASK_NULL;
  if (o->n > o->cap || o->cap - o->n < 8 + 2 * slots)
    return PV_ELIMIT;
  uint8_t *hdr = o->p + o->n, *ws = hdr + 8;
  for (size_t i = 0; i < slots; i++) {
    size_t j = i - CARRY_GROUPS;
    set16(ws + 2 * i, i >= CARRY_GROUPS && j < nd ? get16(dg + 2 * j) : 0);
  }
  int borrow = 0;
  for (size_t i = slots; i > 0 && (r || borrow); i--) {
    int g = (int)get16(ws + 2 * (i - 1)) - (int)(r % NBASE) - borrow;
    r /= NBASE;
    borrow = g < 0;
    set16(ws + 2 * (i - 1), (unsigned)(g + (borrow ? NBASE : 0)));
  }
  uint64_t m = add_n ? n : 0;
  unsigned carry = 0;
  for (size_t i = slots; i > 0 && (m || carry); i--) {
    unsigned g = get16(ws + 2 * (i - 1)) + (unsigned)(m % NBASE) + carry;
    m /= NBASE;
    carry = g >= NBASE;
    set16(ws + 2 * (i - 1), g % NBASE);
  }
  size_t s = 0, e = slots;
  while (s < slots && get16(ws + 2 * s) == 0)
    s++;
  while (e > s && get16(ws + 2 * (e - 1)) == 0)
    e--;
  unsigned rnd = 0, rsign = NUMERIC_POS;
  int rweight = 0;
  if (e > s) {
    long wgt = (long)(CARRY_GROUPS + G) - 1 - (long)s;
    long idigits = group_digits(get16(ws + 2 * s)) + 4 * wgt;
    if (wgt > INT16_MAX || idigits > numeric_int_digits(typmod))
      return PV_MASK_NULL; /* no longer fits the type or numeric(p,s) */
    rnd = (unsigned)(e - s);
    rweight = (int)wgt;
    rsign = neg ? NUMERIC_NEG : NUMERIC_POS;
    memmove(ws, ws + 2 * s, 2 * (size_t)rnd);
  }
  set16(hdr, rnd);
  set16(hdr + 2, (unsigned)(uint16_t)(int16_t)rweight);
  set16(hdr + 4, rsign);
  set16(hdr + 6, dscale);
  o->n += 8 + 2 * (size_t)rnd;
  return pv__out_result(o);
}

int64_t pv__mask_numeric(const pv_action_t *a, int32_t typmod, int16_t format,
                         const uint8_t *val, size_t len, pv__out_t *o) {
  if (a->kind != PV_ACT_GENERALIZE || a->gen != PV_GEN_BUCKET || a->bucket <= 0)
    return PV_MASK_NULL;
  return format == 0 ? numeric_text(a, typmod, val, len, o)
                     : numeric_bin(a, typmod, val, len, o);
}
