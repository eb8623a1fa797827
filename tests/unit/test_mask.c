/* Unit tests of the masking layer (rules/mask*.c): every action x type x
 * format, binary outputs decoded to prove them valid, the keyed hash's
 * determinism, shape and separation, typmods, invalid inputs. */
#include "check.h"

#include <inttypes.h>
#include <stdlib.h>
#include <time.h>

#include "../../rules/mask_internal.h"
#include "pgveil/mask.h"

static pv_mask_key_t K, K_SECRET2, K_PURPOSE2;

static const uint8_t SECRET[] = "0123456789abcdef-test-secret";
static const uint8_t SECRET2[] = "another secret of 32 bytes long!";

static pv_action_t act(const char *spec) {
  pv_action_t a;
  char err[200];
  size_t off;
  memset(&a, 0, sizeof a);
  if (pv_action_parse(spec, strlen(spec), &a, err, sizeof err, &off) != 0) {
    fprintf(stderr, "bad spec in test: %s: %s\n", spec, err);
    exit(2);
  }
  return a;
}

/* Applies spec to a text/binary value; out is NUL-terminated for text. */
static int64_t apply_k(const pv_mask_key_t *k, const char *spec,
                       const char *col, uint32_t oid, int32_t typmod,
                       int16_t fmt, const void *in, size_t len, uint8_t *out,
                       size_t cap) {
  pv_action_t a = act(spec);
  int64_t r = pv_mask_apply(&a, k, col, oid, typmod, fmt, in, len, out, cap);
  if (r >= 0 && (size_t)r < cap)
    out[r] = 0;
  if (r >= 0 && (size_t)r > pv_mask_out_max(&a, oid, typmod, len)) {
    check_failures++;
    fprintf(stderr, "%s on oid %u: output %" PRId64 " > out_max\n", spec, oid,
            r);
  }
  return r;
}

static int64_t ap(const char *spec, uint32_t oid, int32_t typmod, int16_t fmt,
                  const void *in, size_t len, uint8_t *out) {
  return apply_k(&K, spec, "public.t.c", oid, typmod, fmt, in, len, out, 4096);
}

/* Text in, text out: returns the output or "<NULL>" / "<ERR n>". */
static const char *tx(const char *spec, uint32_t oid, int32_t typmod,
                      const char *in) {
  static uint8_t out[8][4096];
  static int slot;
  uint8_t *o = out[slot++ % 8];
  int64_t r = ap(spec, oid, typmod, 0, in, strlen(in), o);
  if (r == PV_MASK_NULL)
    return "<NULL>";
  if (r < 0) {
    snprintf((char *)o, 4096, "<ERR %d>", (int)r);
    return (const char *)o;
  }
  return (const char *)o;
}

/* ---- independent decoders of PostgreSQL binary formats ---- */

static int64_t be(const uint8_t *p, size_t n) {
  uint64_t u = 0;
  for (size_t i = 0; i < n; i++)
    u = u << 8 | p[i];
  if (n < 8 && (u >> (8 * n - 1)) & 1)
    u |= ~(uint64_t)0 << (8 * n);
  return (int64_t)u;
}

static void put_be(uint8_t *p, int64_t v, size_t n) {
  for (size_t i = 0; i < n; i++)
    p[i] = (uint8_t)((uint64_t)v >> (8 * (n - 1 - i)));
}

/* Howard Hinnant's days_from_civil, shifted to PostgreSQL's epoch. */
static int64_t pgdays(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  unsigned yoe = (unsigned)(y - era * 400);
  unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468 - 10957;
}

static void civil(int64_t pgd, int64_t *y, unsigned *m, unsigned *d) {
  int64_t z = pgd + 10957 + 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  unsigned doe = (unsigned)(z - era * 146097);
  unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t yy = (int64_t)yoe + era * 400;
  unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = yy + (*m <= 2);
}

/* numeric binary -> "[-]int[.000]" text, checking every header field. */
static bool numeric_bin_to_text(const uint8_t *b, size_t len, char *out) {
  if (len < 8)
    return false;
  unsigned nd = (unsigned)be(b, 2) & 0xffff,
           sign = (unsigned)be(b + 4, 2) & 0xffff;
  int weight = (int)be(b + 2, 2);
  unsigned dscale = (unsigned)be(b + 6, 2) & 0xffff;
  if (len != 8 + 2 * nd || dscale > 0x3fff)
    return false;
  if (sign == 0xC000) {
    strcpy(out, nd == 0 ? "NaN" : "bad");
    return nd == 0;
  }
  if (sign != 0 && sign != 0x4000)
    return false;
  for (unsigned i = 0; i < nd; i++)
    if ((be(b + 8 + 2 * i, 2) & 0xffff) >= 10000)
      return false;
  /* Canonical: no leading or trailing zero groups. */
  if (nd && ((be(b + 8, 2) & 0xffff) == 0 ||
             (be(b + 8 + 2 * (nd - 1), 2) & 0xffff) == 0))
    return false;
  char *p = out;
  if (sign == 0x4000)
    *p++ = '-';
  if (nd == 0 || weight < 0) {
    *p++ = '0';
  } else {
    for (int g = 0; g <= weight; g++) {
      unsigned v =
          (unsigned)g < nd ? (unsigned)be(b + 8 + 2 * g, 2) & 0xffff : 0;
      p += sprintf(p, g == 0 ? "%u" : "%04u", v);
    }
  }
  /* Fraction groups must be zero (the result of a bucket is an integer). */
  for (unsigned g = weight < 0 ? 0 : (unsigned)weight + 1; g < nd; g++)
    if ((be(b + 8 + 2 * g, 2) & 0xffff) != 0)
      return false;
  if (dscale) {
    *p++ = '.';
    for (unsigned i = 0; i < dscale; i++)
      *p++ = '0';
  }
  *p = 0;
  return true;
}

/* "[-]digits[.digits]" -> numeric binary (canonical), for inputs. */
static size_t numeric_text_to_bin(const char *s, uint8_t *b) {
  bool neg = *s == '-';
  if (neg)
    s++;
  const char *dot = strchr(s, '.');
  size_t il = dot ? (size_t)(dot - s) : strlen(s);
  size_t fl = dot ? strlen(dot + 1) : 0;
  /* Digits aligned to groups: pad the integer part on the left to a
   * multiple of 4 and the fraction on the right. */
  char dig[512];
  size_t lpad = (4 - il % 4) % 4, n = 0;
  for (size_t i = 0; i < lpad; i++)
    dig[n++] = '0';
  memcpy(dig + n, s, il);
  n += il;
  if (fl)
    memcpy(dig + n, dot + 1, fl);
  n += fl;
  while (n % 4)
    dig[n++] = '0';
  int weight = (int)((il + lpad) / 4) - 1;
  unsigned groups[128], ng = (unsigned)(n / 4);
  for (unsigned g = 0; g < ng; g++)
    groups[g] =
        (unsigned)((dig[4 * g] - '0') * 1000 + (dig[4 * g + 1] - '0') * 100 +
                   (dig[4 * g + 2] - '0') * 10 + (dig[4 * g + 3] - '0'));
  unsigned s0 = 0, e = ng;
  while (s0 < ng && groups[s0] == 0) {
    s0++;
    weight--;
  }
  while (e > s0 && groups[e - 1] == 0)
    e--;
  if (e == s0)
    weight = 0;
  put_be(b, e - s0, 2);
  put_be(b + 2, weight, 2);
  put_be(b + 4, neg && e > s0 ? 0x4000 : 0, 2);
  put_be(b + 6, (int64_t)fl, 2);
  for (unsigned g = s0; g < e; g++)
    put_be(b + 8 + 2 * (g - s0), groups[g], 2);
  return 8 + 2 * (e - s0);
}

/* ---- tests ---- */

static void test_hmac_rfc4231(void) {
  /* RFC 4231 test cases 1, 2 and 6 (key longer than a block). */
  pv_mask_key_t k;
  uint8_t mac[32], key[131];
  memset(key, 0x0b, 20);
  pv__mask_key_from_raw(key, 20, &k);
  pv__hmac_raw(&k, "Hi There", 8, mac);
  static const uint8_t t1[4] = {0xb0, 0x34, 0x4c, 0x61};
  static const uint8_t t1end[4] = {0x2e, 0x32, 0xcf, 0xf7};
  CHECK(memcmp(mac, t1, 4) == 0 && memcmp(mac + 28, t1end, 4) == 0);
  pv__mask_key_from_raw((const uint8_t *)"Jefe", 4, &k);
  pv__hmac_raw(&k, "what do ya want for nothing?", 28, mac);
  static const uint8_t t2[4] = {0x5b, 0xdc, 0xc1, 0x46};
  static const uint8_t t2end[4] = {0x64, 0xec, 0x38, 0x43};
  CHECK(memcmp(mac, t2, 4) == 0 && memcmp(mac + 28, t2end, 4) == 0);
  memset(key, 0xaa, 131);
  pv__mask_key_from_raw(key, 131, &k);
  const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
  pv__hmac_raw(&k, m6, strlen(m6), mac);
  static const uint8_t t6[4] = {0x60, 0xe4, 0x31, 0x59};
  static const uint8_t t6end[4] = {0x0e, 0xe3, 0x7f, 0x54};
  CHECK(memcmp(mac, t6, 4) == 0 && memcmp(mac + 28, t6end, 4) == 0);
  pv_mask_key_dispose(&k);
  CHECK_EQ(k.magic_, 0);
}

static void test_key_derive(void) {
  pv_mask_key_t k;
  CHECK_EQ(pv_mask_key_derive(SECRET, 15, "p", &k), PV_EINVAL);
  CHECK_EQ(k.magic_, 0);
  CHECK_EQ(pv_mask_key_derive(NULL, 20, "p", &k), PV_EINVAL);
  CHECK_EQ(pv_mask_key_derive(SECRET, 16, NULL, &k), PV_EINVAL);
  char longp[300];
  memset(longp, 'p', sizeof longp - 1);
  longp[sizeof longp - 1] = 0;
  CHECK_EQ(pv_mask_key_derive(SECRET, 16, longp, &k), PV_EINVAL);
  longp[PV_MASK_PURPOSE_MAX] = 0;
  CHECK_EQ(pv_mask_key_derive(SECRET, 16, longp, &k), PV_OK);
  CHECK_EQ(pv_mask_key_derive(SECRET, 16, "", &k), PV_OK);
  /* A wiped key is refused rather than used. */
  pv_mask_key_dispose(&k);
  uint8_t out[64];
  pv_action_t a = act("hash");
  CHECK_EQ(pv_mask_apply(&a, &k, "c", PV_OID_TEXT, -1, 0, (const uint8_t *)"x",
                         1, out, sizeof out),
           PV_EINVAL);
  CHECK_EQ(pv_mask_apply(&a, NULL, "c", PV_OID_TEXT, -1, 0,
                         (const uint8_t *)"x", 1, out, sizeof out),
           PV_EINVAL);
  /* Actions without a key need none. */
  a = act("mask");
  CHECK_EQ(pv_mask_apply(&a, NULL, "c", PV_OID_TEXT, -1, 0,
                         (const uint8_t *)"xy", 2, out, sizeof out),
           2);
}

typedef struct {
  uint32_t oid;
  const char *name;
} tname_t;

static const tname_t TYPES[] = {
    {PV_OID_TEXT, "text"},
    {PV_OID_VARCHAR, "varchar"},
    {PV_OID_BPCHAR, "bpchar"},
    {PV_OID_NAME, "name"},
    {PV_OID_INT2, "int2"},
    {PV_OID_INT4, "int4"},
    {PV_OID_INT8, "int8"},
    {PV_OID_NUMERIC, "numeric"},
    {PV_OID_DATE, "date"},
    {PV_OID_TIMESTAMP, "timestamp"},
    {PV_OID_TIMESTAMPTZ, "tstz"},
    {PV_OID_UUID, "uuid"},
    {PV_OID_BYTEA, "bytea"},
    {PV_OID_BOOL, "bool"},
    {PV_OID_FLOAT4, "float4"},
    {PV_OID_FLOAT8, "float8"},
    {PV_OID_JSON, "json"},
    {PV_OID_JSONB, "jsonb"},
    {600, "point"},
};
#define NTYPES (sizeof TYPES / sizeof TYPES[0])

/* Which types each action fits: one letter per TYPES entry (x = fits). */
static const struct {
  const char *spec;
  const char *fits;
} FITS[] = {
    /* Columns in TYPES order: text varchar bpchar name int2 int4 int8
     * numeric date timestamp tstz uuid bytea bool float4 float8 json jsonb
     * point. */
    {"clear", /*            */ "xxxxxxxxxxxxxxxxxxx"},
    {"withhold", /*         */ "xxxxxxxxxxxxxxxxxxx"},
    {"redact('x')", /*      */ "xxxx............xx."},
    {"hash", /*             */ "xxxxxxx.x..x......."},
    {"hash(hex)", /*        */ "xxxx..............."},
    {"mask", /*             */ "xxxx..............."},
    {"mask_email", /*       */ "xxxx..............."},
    {"generalize(year)", /* */ "........xxx........"},
    {"generalize(month)", /**/ "........xxx........"},
    {"generalize(decade)", /**/ "........xxx........"},
    {"generalize(zip3)", /* */ "xxxx..............."},
    {"generalize(bucket=5)", "....xxxx..........."},
};

static void test_fits_matrix(void) {
  for (size_t i = 0; i < sizeof FITS / sizeof FITS[0]; i++) {
    pv_action_t a = act(FITS[i].spec);
    for (size_t t = 0; t < NTYPES; t++) {
      bool want = FITS[i].fits[t] == 'x';
      if (pv_mask_fits(&a, TYPES[t].oid, -1) != want) {
        check_failures++;
        fprintf(stderr, "fits(%s, %s) != %d\n", FITS[i].spec, TYPES[t].name,
                want);
      }
      check_count++;
      /* At run time a misfit is withheld, in either format. */
      if (!want) {
        uint8_t out[64];
        CHECK_EQ(pv_mask_apply(&a, &K, "c", TYPES[t].oid, -1, 0,
                               (const uint8_t *)"1", 1, out, sizeof out),
                 PV_MASK_NULL);
        CHECK_EQ(pv_mask_apply(&a, &K, "c", TYPES[t].oid, -1, 1,
                               (const uint8_t *)"\0\0\0\1", 4, out, sizeof out),
                 PV_MASK_NULL);
      }
    }
  }
  /* A hand-built action out of range fits nothing but is still refused. */
  pv_action_t bad = act("mask");
  bad.mask_char = '\n';
  CHECK(!pv_mask_fits(&bad, PV_OID_TEXT, -1));
  bad = act("generalize(bucket=5)");
  bad.bucket = 0;
  CHECK(!pv_mask_fits(&bad, PV_OID_INT4, -1));
  bad.kind = (pv_action_kind_t)42;
  CHECK(!pv_mask_fits(&bad, PV_OID_INT4, -1));
  CHECK(!pv_mask_fits(NULL, PV_OID_INT4, -1));
}

static void test_clear_withhold(void) {
  uint8_t out[64];
  for (size_t t = 0; t < NTYPES; t++)
    for (int16_t f = 0; f <= 1; f++) {
      CHECK_EQ(ap("withhold", TYPES[t].oid, -1, f, "\1\2\3", 3, out),
               PV_MASK_NULL);
      CHECK_EQ(ap("clear", TYPES[t].oid, -1, f, "\1\2\3", 3, out), 3);
      CHECK(memcmp(out, "\1\2\3", 3) == 0);
    }
  pv_action_t a = act("clear");
  CHECK_EQ(pv_mask_apply(&a, NULL, "c", PV_OID_TEXT, -1, 0,
                         (const uint8_t *)"abc", 3, out, 2),
           PV_ELIMIT);
  CHECK_EQ(pv_mask_apply(&a, NULL, "c", PV_OID_TEXT, -1, 2,
                         (const uint8_t *)"abc", 3, out, 8),
           PV_EINVAL);
  CHECK_EQ(pv_mask_apply(&a, NULL, "c", PV_OID_TEXT, -1, 0, NULL, 0, out, 8),
           0);
}

static void test_redact(void) {
  CHECK_STR(tx("redact('[hidden]')", PV_OID_TEXT, -1, "alice"), "[hidden]");
  CHECK_STR(tx("redact('[hidden]')", PV_OID_VARCHAR, 4 + 5, "alice"), "[hidd");
  CHECK_STR(tx("redact('x')", PV_OID_BPCHAR, 4 + 4, "abcd"), "x   ");
  CHECK_STR(tx("redact('caf\xc3\xa9!')", PV_OID_VARCHAR, 4 + 4, "zzzzz"),
            "caf\xc3\xa9");
  CHECK_STR(tx("redact('')", PV_OID_TEXT, -1, "secret"), "");
  /* name holds 63 bytes: never cut inside a UTF-8 sequence. */
  char spec[300];
  strcpy(spec, "redact('");
  memset(spec + 8, 'n', 62);
  strcpy(spec + 70, "\xc3\xa9')");
  const char *r = tx(spec, PV_OID_NAME, -1, "x");
  CHECK_EQ(strlen(r), 62);
  /* json: a JSON string; jsonb binary: version 1 then the text. */
  CHECK_STR(tx("redact('say \"hi\" \\ ok')", PV_OID_JSON, -1, "{\"a\":1}"),
            "\"say \\\"hi\\\" \\\\ ok\"");
  uint8_t out[64];
  CHECK_EQ(ap("redact('x')", PV_OID_JSONB, -1, 1, "\1{}", 3, out), 4);
  CHECK(memcmp(out, "\1\"x\"", 4) == 0);
  CHECK_EQ(ap("redact('x')", PV_OID_JSONB, -1, 0, "{}", 2, out), 3);
  CHECK_STR((char *)out, "\"x\"");
}

/* Same character classes at every position; returns true when so. */
static bool same_shape(const char *a, const char *b) {
  if (strlen(a) != strlen(b))
    return false;
  for (size_t i = 0; a[i]; i++) {
    char x = a[i], y = b[i];
    bool ok = (x >= 'a' && x <= 'z')   ? (y >= 'a' && y <= 'z')
              : (x >= 'A' && x <= 'Z') ? (y >= 'A' && y <= 'Z')
              : (x >= '0' && x <= '9') ? (y >= '0' && y <= '9')
                                       : x == y;
    if (!ok)
      return false;
  }
  return true;
}

static void test_hash_text_shape(void) {
  static const char *vals[] = {"alice.smith@example.com",
                               "+1 (555) 123-4567",
                               "MixedCase Name-42",
                               "ZZZZ",
                               "0000000000",
                               ""};
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
    const char *h = tx("hash", PV_OID_TEXT, -1, vals[i]);
    CHECK(same_shape(vals[i], h));
    if (strlen(vals[i]) > 3)
      CHECK(strcmp(vals[i], h) != 0);
    /* Deterministic. */
    CHECK_STR(tx("hash", PV_OID_TEXT, -1, vals[i]), h);
  }
  const char *e = tx("hash", PV_OID_TEXT, -1, "alice@example.com");
  CHECK(strchr(e, '@') == e + 5);
  CHECK(e[13] == '.');
  /* Not per character: equal characters at different places differ
   * (with 10 draws each, all equal would happen with p = 10^-9). */
  const char *z = tx("hash", PV_OID_TEXT, -1, "0000000000");
  bool all_same = true;
  for (int i = 1; z[i]; i++)
    all_same &= z[i] == z[0];
  CHECK(!all_same);
  /* A one-character change changes the whole pseudonym. */
  const char *p1 = tx("hash", PV_OID_TEXT, -1, "555-123-4567");
  const char *p2 = tx("hash", PV_OID_TEXT, -1, "555-123-4568");
  CHECK(memcmp(p1, p2, 7) != 0);
  /* Non-ASCII characters become one ASCII lowercase letter each. */
  const char *u = tx("hash", PV_OID_TEXT, -1, "Jos\xc3\xa9 \xe6\x9d\xb1");
  CHECK_EQ(strlen(u), 6);
  CHECK(u[0] >= 'A' && u[0] <= 'Z' && u[3] >= 'a' && u[3] <= 'z' &&
        u[4] == ' ' && u[5] >= 'a' && u[5] <= 'z');
  /* A long value draws many stream blocks. */
  char big[3000];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = 0;
  const char *hb = tx("hash", PV_OID_TEXT, -1, big);
  CHECK(same_shape(big, hb));
  CHECK(memcmp(hb, hb + 1000, 100) != 0);
}

static void test_hash_separation(void) {
  uint8_t a[128], b[128];
  const char *v = "alice@example.com";
  size_t n = strlen(v);
  int64_t ra = apply_k(&K, "hash", "public.customers.email", PV_OID_TEXT, -1, 0,
                       v, n, a, sizeof a);
  CHECK_EQ(ra, (int64_t)n);
  /* Other secret, other purpose, other column: other pseudonym. */
  CHECK_EQ(apply_k(&K_SECRET2, "hash", "public.customers.email", PV_OID_TEXT,
                   -1, 0, v, n, b, sizeof b),
           (int64_t)n);
  CHECK(memcmp(a, b, n) != 0);
  CHECK_EQ(apply_k(&K_PURPOSE2, "hash", "public.customers.email", PV_OID_TEXT,
                   -1, 0, v, n, b, sizeof b),
           (int64_t)n);
  CHECK(memcmp(a, b, n) != 0);
  CHECK_EQ(apply_k(&K, "hash", "public.leads.email", PV_OID_TEXT, -1, 0, v, n,
                   b, sizeof b),
           (int64_t)n);
  CHECK(memcmp(a, b, n) != 0);
  /* Same column, same key, binary format, varchar: same pseudonym. */
  CHECK_EQ(apply_k(&K, "hash", "public.customers.email", PV_OID_VARCHAR, -1, 1,
                   v, n, b, sizeof b),
           (int64_t)n);
  CHECK(memcmp(a, b, n) == 0);
  /* The same derivation again gives the same key. */
  pv_mask_key_t k2;
  CHECK_EQ(pv_mask_key_derive(SECRET, sizeof SECRET - 1, "support", &k2),
           PV_OK);
  CHECK_EQ(apply_k(&k2, "hash", "public.customers.email", PV_OID_TEXT, -1, 0, v,
                   n, b, sizeof b),
           (int64_t)n);
  CHECK(memcmp(a, b, n) == 0);
  pv_mask_key_dispose(&k2);
  /* hash and hash(hex) do not share outputs. */
  const char *h = tx("hash", PV_OID_TEXT, -1, "abcdef");
  const char *x = tx("hash(hex)", PV_OID_TEXT, -1, "abcdef");
  CHECK(strncmp(h, x, 6) != 0);
}

static void test_hash_typmod(void) {
  /* char(n): blanks are padding; hashed without them, padded again. */
  const char *c = tx("hash", PV_OID_BPCHAR, 4 + 8, "ab1     ");
  CHECK_EQ(strlen(c), 8);
  CHECK(same_shape("ab1     ", c));
  CHECK_STR(tx("hash", PV_OID_BPCHAR, 4 + 8, "ab1"), c);
  CHECK(strncmp(tx("hash", PV_OID_TEXT, -1, "ab1"), c, 3) == 0);
  /* An input longer than varchar(n) (a lying server) is cut to n. */
  CHECK_EQ(strlen(tx("hash", PV_OID_VARCHAR, 4 + 3, "abcdef")), 3);
  /* hash(hex): 64 hex digits, cut to the typmod, padded for char(n). */
  const char *x = tx("hash(hex)", PV_OID_TEXT, -1, "alice");
  CHECK_EQ(strlen(x), 64);
  CHECK_EQ(strspn(x, "0123456789abcdef"), 64);
  const char *x10 = tx("hash(hex)", PV_OID_VARCHAR, 4 + 10, "alice");
  CHECK_EQ(strlen(x10), 10);
  CHECK(strncmp(x, x10, 10) == 0);
  const char *x70 = tx("hash(hex)", PV_OID_BPCHAR, 4 + 70, "alice");
  CHECK_EQ(strlen(x70), 70);
  CHECK(strncmp(x, x70, 64) == 0 && strspn(x70 + 64, " ") == 6);
  CHECK_EQ(strlen(tx("hash(hex)", PV_OID_NAME, -1, "alice")), 63);
  CHECK_EQ(strlen(tx("hash(hex)", PV_OID_BPCHAR, -1, "alice")), 64);
}

static void test_mask_actions(void) {
  CHECK_STR(tx("mask", PV_OID_TEXT, -1, "secret"), "******");
  CHECK_STR(tx("mask(keep_last=4)", PV_OID_TEXT, -1, "4111111111111234"),
            "************1234");
  CHECK_STR(tx("mask(keep_first=1, keep_last=2, char='#')", PV_OID_TEXT, -1,
               "abcdefg"),
            "a####fg");
  /* Keeping every character would be clear: all are masked. */
  CHECK_STR(tx("mask(keep_last=4)", PV_OID_TEXT, -1, "1234"), "****");
  CHECK_STR(tx("mask(keep_first=2, keep_last=2)", PV_OID_TEXT, -1, "abc"),
            "***");
  CHECK_STR(tx("mask(keep_first=1)", PV_OID_TEXT, -1, ""), "");
  /* Characters, not bytes. */
  CHECK_STR(tx("mask(keep_first=1, keep_last=1)", PV_OID_TEXT, -1,
               "\xc3\x91o\xc3\xb1o\xc3\xa9"),
            "\xc3\x91***\xc3\xa9");
  CHECK_STR(tx("mask(keep_first=1)", PV_OID_BPCHAR, 4 + 6, "abc   "), "a**   ");
  CHECK_STR(tx("mask(keep_last=1)", PV_OID_VARCHAR, 4 + 3, "abcdef"), "***");

  CHECK_STR(tx("mask_email", PV_OID_TEXT, -1, "alice@example.com"),
            "a***@example.com");
  CHECK_STR(tx("mask_email", PV_OID_TEXT, -1, "a@b.io"), "a***@b.io");
  CHECK_STR(tx("mask_email", PV_OID_TEXT, -1, "not-an-email"), "n***");
  CHECK_STR(tx("mask_email", PV_OID_TEXT, -1, "@x.org"), "***@x.org");
  CHECK_STR(tx("mask_email", PV_OID_TEXT, -1, "we\"ird@x@y.com"), "w***@y.com");
  CHECK_STR(tx("mask_email", PV_OID_TEXT, -1, ""), "***");
  CHECK_STR(tx("mask_email", PV_OID_TEXT, -1, "\xc3\xa9mile@ex.fr"),
            "\xc3\xa9***@ex.fr");
  /* "***" would overflow varchar(8): the local part keeps its length. */
  CHECK_STR(tx("mask_email", PV_OID_VARCHAR, 4 + 8, "ab@x.io"), "a*@x.io");
  CHECK_STR(tx("mask_email", PV_OID_BPCHAR, 4 + 8, "ab@x.io"), "a*@x.io ");
  CHECK_STR(tx("mask_email", PV_OID_BPCHAR, 4 + 10, "ab@x.io"), "a***@x.io ");
  CHECK_STR(tx("mask_email", PV_OID_VARCHAR, 4 + 20, "ab@x.io"), "a***@x.io");

  CHECK_STR(tx("generalize(zip3)", PV_OID_TEXT, -1, "94107-1234"),
            "941**-****");
  CHECK_STR(tx("generalize(zip3)", PV_OID_TEXT, -1, "SW1A 1AA"), "SW1* ***");
  CHECK_STR(tx("generalize(zip3)", PV_OID_BPCHAR, 4 + 6, "12345"), "123** ");
  CHECK_STR(tx("generalize(zip3)", PV_OID_TEXT, -1, "12"), "12");
}

static int64_t int_bin(const char *spec, uint32_t oid, int64_t v,
                       const char *col, size_t *w) {
  uint8_t in[8], out[64];
  size_t width = oid == PV_OID_INT2 ? 2 : oid == PV_OID_INT4 ? 4 : 8;
  put_be(in, v, width);
  int64_t r = apply_k(&K, spec, col, oid, -1, 1, in, width, out, sizeof out);
  *w = (size_t)r;
  if (r < 0)
    return INT64_MIN + 1 + r;
  return be(out, (size_t)r);
}

static void test_int_hash(void) {
  static const struct {
    uint32_t oid;
    int64_t min, max;
  } T[] = {{PV_OID_INT2, INT16_MIN, INT16_MAX},
           {PV_OID_INT4, INT32_MIN, INT32_MAX},
           {PV_OID_INT8, INT64_MIN, INT64_MAX}};
  for (size_t t = 0; t < 3; t++) {
    int64_t samples[] = {0, 1, -1, 42, 1000, -1000, T[t].min, T[t].max};
    size_t width = t == 0 ? 2 : t == 1 ? 4 : 8;
    for (size_t i = 0; i < 8; i++) {
      size_t w;
      int64_t h = int_bin("hash", T[t].oid, samples[i], "public.t.c", &w);
      CHECK_EQ(w, width);
      CHECK(h >= T[t].min && h <= T[t].max);
      CHECK((h < 0) == (samples[i] < 0)); /* the sign stays */
      /* The text format gives the same pseudonym. */
      char in[32], want[32];
      snprintf(in, sizeof in, "%" PRId64, samples[i]);
      snprintf(want, sizeof want, "%" PRId64, h);
      CHECK_STR(tx("hash", T[t].oid, -1, in), want);
      /* Another column: another pseudonym (p of equal: ~2^-15 for int2,
       * the sample is fixed so this cannot flake). */
      CHECK(int_bin("hash", T[t].oid, samples[i], "other", &w) != h);
    }
  }
  /* int2: a permutation of the whole non-negative and negative halves. */
  static uint8_t seen[65536];
  memset(seen, 0, sizeof seen);
  bool ok = true;
  for (int32_t v = INT16_MIN; v <= INT16_MAX; v++) {
    size_t w;
    int64_t h = int_bin("hash", PV_OID_INT2, v, "perm", &w);
    if (w != 2 || (h < 0) != (v < 0) || seen[(uint16_t)h]++)
      ok = false;
  }
  CHECK(ok);
}

static void test_int_bucket(void) {
  CHECK_STR(tx("generalize(bucket=10)", PV_OID_INT4, -1, "47"), "40");
  CHECK_STR(tx("generalize(bucket=10)", PV_OID_INT4, -1, "-47"), "-50");
  CHECK_STR(tx("generalize(bucket=10)", PV_OID_INT4, -1, "-40"), "-40");
  CHECK_STR(tx("generalize(bucket=10)", PV_OID_INT4, -1, "0"), "0");
  CHECK_STR(tx("generalize(bucket=1000)", PV_OID_INT2, -1, "32767"), "32000");
  /* Below the type's minimum: clamped to it. */
  CHECK_STR(tx("generalize(bucket=20000)", PV_OID_INT2, -1, "-32768"),
            "-32768");
  CHECK_STR(
      tx("generalize(bucket=10)", PV_OID_INT8, -1, "-9223372036854775808"),
      "-9223372036854775808");
  CHECK_STR(tx("generalize(bucket=9223372036854775807)", PV_OID_INT8, -1, "-1"),
            "-9223372036854775807");
  size_t w;
  CHECK_EQ(int_bin("generalize(bucket=100)", PV_OID_INT2, -150, "c", &w), -200);
  CHECK_EQ(w, 2);
  CHECK_EQ(int_bin("generalize(bucket=100)", PV_OID_INT8, 123456789, "c", &w),
           123456700);
  CHECK_EQ(w, 8);
}

static const char *num_text(const char *spec, int32_t typmod, const char *v) {
  return tx(spec, PV_OID_NUMERIC, typmod, v);
}

/* The same value in binary: decoded result text, or "<NULL>"/"<ERR>". */
static const char *num_bin(const char *spec, int32_t typmod, const char *v) {
  static char res[8][600];
  static int slot;
  char *r = res[slot++ % 8];
  uint8_t in[300], out[70000];
  size_t n = numeric_text_to_bin(v, in);
  int64_t rc =
      apply_k(&K, spec, "c", PV_OID_NUMERIC, typmod, 1, in, n, out, sizeof out);
  if (rc == PV_MASK_NULL)
    return "<NULL>";
  if (rc < 0 || !numeric_bin_to_text(out, (size_t)rc, r))
    return "<ERR>";
  return r;
}

static void test_numeric_bucket(void) {
  static const struct {
    const char *spec, *in, *want;
  } C[] = {
      {"generalize(bucket=100)", "12345.678", "12300.000"},
      {"generalize(bucket=100)", "-12345.678", "-12400.000"},
      {"generalize(bucket=100)", "-12300", "-12300"},
      {"generalize(bucket=100)", "-12300.00", "-12300.00"},
      {"generalize(bucket=100)", "-12300.01", "-12400.00"},
      {"generalize(bucket=10)", "0.5", "0.0"},
      {"generalize(bucket=10)", "-0.5", "-10.0"},
      {"generalize(bucket=10)", "9999.99", "9990.00"},
      {"generalize(bucket=10)", "-9999.99", "-10000.00"},
      {"generalize(bucket=7)", "100", "98"},
      {"generalize(bucket=1)", "123456789012345678901234567890.5",
       "123456789012345678901234567890.0"},
      {"generalize(bucket=1000000000000000000)", "5", "0"},
      {"generalize(bucket=1000000000000000000)", "-5", "-1000000000000000000"},
      {"generalize(bucket=9223372036854775807)",
       "-99999999999999999999999999999", "-100000000001336979969498407075"},
      {"generalize(bucket=3)", "10000000000000000000000000000000001",
       "9999999999999999999999999999999999"},
      {"generalize(bucket=10000)", "123456789", "123450000"},
  };
  for (size_t i = 0; i < sizeof C / sizeof C[0]; i++) {
    CHECK_STR(num_text(C[i].spec, -1, C[i].in), C[i].want);
    CHECK_STR(num_bin(C[i].spec, -1, C[i].in), C[i].want);
  }
  CHECK_STR(num_text("generalize(bucket=5)", -1, "NaN"), "NaN");
  CHECK_STR(num_text("generalize(bucket=5)", -1, "-Infinity"), "-Infinity");
  uint8_t nan[8] = {0, 0, 0, 0, 0xC0, 0, 0, 0}, out[64];
  CHECK_EQ(ap("generalize(bucket=5)", PV_OID_NUMERIC, -1, 1, nan, 8, out), 8);
  CHECK(memcmp(out, nan, 8) == 0);
  /* numeric(6,2) holds 4 integer digits: -9999.5 -> -10000 does not fit. */
  int32_t tm = ((6 << 16) | 2) + 4;
  CHECK_STR(num_text("generalize(bucket=10)", tm, "-9999.50"), "<NULL>");
  CHECK_STR(num_bin("generalize(bucket=10)", tm, "-9999.50"), "<NULL>");
  CHECK_STR(num_text("generalize(bucket=10)", tm, "9999.50"), "9990.00");
  /* A binary value with a huge weight and one digit group: 10^131064.
   * Its bucket of 3 would be 32766 groups of 9999: withheld; a bucket
   * that divides it leaves it as it is. */
  uint8_t big[10] = {0, 1, 0x7f, 0xfe, 0, 0, 0, 0, 0, 1};
  uint8_t bout[64];
  pv_action_t a = act("generalize(bucket=3)");
  CHECK_EQ(pv_mask_apply(&a, NULL, "c", PV_OID_NUMERIC, -1, 1, big, sizeof big,
                         bout, sizeof bout),
           PV_MASK_NULL);
  a = act("generalize(bucket=2)");
  CHECK_EQ(pv_mask_apply(&a, NULL, "c", PV_OID_NUMERIC, -1, 1, big, sizeof big,
                         bout, sizeof bout),
           10);
  CHECK(memcmp(bout, big, 10) == 0);
  CHECK_EQ(pv_mask_apply(&a, NULL, "c", PV_OID_NUMERIC, -1, 1, big, sizeof big,
                         bout, 9),
           PV_ELIMIT);
  /* 10^24 in one group still gets its bucket: 10^24 - 1. */
  CHECK_STR(num_bin("generalize(bucket=3)", -1, "1000000000000000000000000"),
            "999999999999999999999999");
  CHECK_STR(
      num_bin("generalize(bucket=7)", -1, "-1000000000000000000000000000000"),
      "<NULL>");
  CHECK_STR(
      num_text("generalize(bucket=7)", -1, "-1000000000000000000000000000000"),
      "-1000000000000000000000000000006");
}

static const char *dt_text(const char *spec, uint32_t oid, const char *v) {
  return tx(spec, oid, -1, v);
}

static void test_generalize_dates_text(void) {
  CHECK_STR(dt_text("generalize(year)", PV_OID_DATE, "1987-06-12"),
            "1987-01-01");
  CHECK_STR(dt_text("generalize(month)", PV_OID_DATE, "1987-06-12"),
            "1987-06-01");
  CHECK_STR(dt_text("generalize(decade)", PV_OID_DATE, "1987-06-12"),
            "1980-01-01");
  CHECK_STR(dt_text("generalize(decade)", PV_OID_DATE, "2000-12-31"),
            "2000-01-01");
  CHECK_STR(dt_text("generalize(year)", PV_OID_DATE, "infinity"), "infinity");
  CHECK_STR(dt_text("generalize(year)", PV_OID_DATE, "-infinity"), "-infinity");
  CHECK_STR(dt_text("generalize(year)", PV_OID_DATE, "0044-03-15 BC"),
            "0044-01-01 BC");
  /* 44 BC is astronomical -43; its decade starts at -50 = 51 BC. */
  CHECK_STR(dt_text("generalize(decade)", PV_OID_DATE, "0044-03-15 BC"),
            "0051-01-01 BC");
  CHECK_STR(dt_text("generalize(decade)", PV_OID_DATE, "0005-03-15"),
            "0001-01-01 BC");
  /* Before PostgreSQL's first day: clamped to it. */
  CHECK_STR(dt_text("generalize(year)", PV_OID_DATE, "4714-12-01 BC"),
            "4714-11-24 BC");
  CHECK_STR(dt_text("generalize(month)", PV_OID_DATE, "12345-07-08"),
            "12345-07-01");
  CHECK_STR(dt_text("generalize(month)", PV_OID_DATE, "2024-02-29"),
            "2024-02-01");
  CHECK_STR(dt_text("generalize(year)", PV_OID_TIMESTAMP,
                    "1987-06-12 14:30:00.123456"),
            "1987-01-01 00:00:00");
  CHECK_STR(
      dt_text("generalize(month)", PV_OID_TIMESTAMP, "1987-06-12 14:30:00"),
      "1987-06-01 00:00:00");
  CHECK_STR(
      dt_text("generalize(year)", PV_OID_TIMESTAMPTZ, "1987-06-12 14:30:00+02"),
      "1987-01-01 00:00:00+02");
  CHECK_STR(dt_text("generalize(year)", PV_OID_TIMESTAMPTZ,
                    "1987-06-12 14:30:00.5-03:30"),
            "1987-01-01 00:00:00-03:30");
  CHECK_STR(dt_text("generalize(year)", PV_OID_TIMESTAMPTZ,
                    "0044-03-15 10:00:00+00:53:28 BC"),
            "0044-01-01 00:00:00+00:53:28 BC");
  CHECK_STR(dt_text("generalize(decade)", PV_OID_TIMESTAMPTZ,
                    "1987-06-12 14:30:00+00"),
            "1980-01-01 00:00:00+00");
  /* Not DateStyle ISO, or not a valid value: refused (withheld). */
  static const struct {
    uint32_t oid;
    const char *v;
  } bad[] = {{PV_OID_DATE, "06/12/1987"},
             {PV_OID_DATE, "12.06.1987"},
             {PV_OID_DATE, "1987-02-30"},
             {PV_OID_DATE, "1987-13-01"},
             {PV_OID_DATE, "0000-01-01"},
             {PV_OID_DATE, "87-06-12"},
             {PV_OID_DATE, "1987-06-12 "},
             {PV_OID_DATE, "9999999-01-01"},
             {PV_OID_TIMESTAMP, "1987-06-12"},
             {PV_OID_TIMESTAMP, "1987-06-12 25:00:00"},
             {PV_OID_TIMESTAMP, "1987-06-12 14:30:00+02"},
             {PV_OID_TIMESTAMP, "300000-01-01 00:00:00"},
             {PV_OID_TIMESTAMPTZ, "1987-06-12 14:30:00"},
             {PV_OID_TIMESTAMPTZ, "Fri Jun 12 14:30:00 1987 PDT"},
             {PV_OID_TIMESTAMPTZ, "1987-06-12 14:30:00+2"},
             {PV_OID_DATE, ""}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECK_STR(dt_text("generalize(year)", bad[i].oid, bad[i].v), "<ERR -3>");
}

static void test_generalize_dates_binary(void) {
  uint8_t in[8], out[64];
  /* date: int32 days since 2000-01-01. */
  put_be(in, pgdays(1987, 6, 12), 4);
  CHECK_EQ(ap("generalize(year)", PV_OID_DATE, -1, 1, in, 4, out), 4);
  CHECK_EQ(be(out, 4), pgdays(1987, 1, 1));
  CHECK_EQ(ap("generalize(month)", PV_OID_DATE, -1, 1, in, 4, out), 4);
  CHECK_EQ(be(out, 4), pgdays(1987, 6, 1));
  CHECK_EQ(ap("generalize(decade)", PV_OID_DATE, -1, 1, in, 4, out), 4);
  CHECK_EQ(be(out, 4), pgdays(1980, 1, 1));
  put_be(in, INT32_MAX, 4);
  CHECK_EQ(ap("generalize(year)", PV_OID_DATE, -1, 1, in, 4, out), 4);
  CHECK_EQ(be(out, 4), INT32_MAX);
  put_be(in, -2451546, 4); /* one day before julian day 0 */
  CHECK_EQ(ap("generalize(year)", PV_OID_DATE, -1, 1, in, 4, out), PV_EPROTO);
  CHECK_EQ(ap("generalize(year)", PV_OID_DATE, -1, 1, in, 3, out), PV_EPROTO);

  /* timestamp(tz): int64 microseconds since 2000-01-01 00:00:00. */
  int64_t day = INT64_C(86400000000);
  int64_t ts = pgdays(1987, 6, 12) * day + INT64_C(52200123456);
  for (uint32_t oid = PV_OID_TIMESTAMP; oid;
       oid = oid == PV_OID_TIMESTAMP ? PV_OID_TIMESTAMPTZ : 0) {
    put_be(in, ts, 8);
    CHECK_EQ(ap("generalize(year)", oid, -1, 1, in, 8, out), 8);
    CHECK_EQ(be(out, 8), pgdays(1987, 1, 1) * day);
    CHECK_EQ(ap("generalize(month)", oid, -1, 1, in, 8, out), 8);
    CHECK_EQ(be(out, 8), pgdays(1987, 6, 1) * day);
    put_be(in, -1, 8); /* 1999-12-31 23:59:59.999999 */
    CHECK_EQ(ap("generalize(decade)", oid, -1, 1, in, 8, out), 8);
    CHECK_EQ(be(out, 8), pgdays(1990, 1, 1) * day);
    put_be(in, INT64_MIN, 8);
    CHECK_EQ(ap("generalize(year)", oid, -1, 1, in, 8, out), 8);
    CHECK_EQ(be(out, 8), INT64_MIN);
    put_be(in, INT64_C(9223371331200000000), 8); /* END_TIMESTAMP */
    CHECK_EQ(ap("generalize(year)", oid, -1, 1, in, 8, out), PV_EPROTO);
    CHECK_EQ(ap("generalize(year)", oid, -1, 1, in, 4, out), PV_EPROTO);
  }
  /* Text and binary agree on a sweep of dates. */
  bool agree = true;
  for (int64_t d = -800000; d < 800000; d += 7919) {
    int64_t y;
    unsigned m, dd;
    civil(d, &y, &m, &dd);
    if (y < 1)
      continue;
    char txt[32], want[32];
    snprintf(txt, sizeof txt, "%04" PRId64 "-%02u-%02u", y, m, dd);
    put_be(in, d, 4);
    if (ap("generalize(month)", PV_OID_DATE, -1, 1, in, 4, out) != 4)
      agree = false;
    int64_t gy;
    unsigned gm, gd;
    civil(be(out, 4), &gy, &gm, &gd);
    snprintf(want, sizeof want, "%04" PRId64 "-%02u-%02u", gy, gm, gd);
    if (strcmp(tx("generalize(month)", PV_OID_DATE, -1, txt), want) != 0 ||
        gy != y || gm != m || gd != 1)
      agree = false;
  }
  CHECK(agree);
}

static void test_hash_date_uuid(void) {
  uint8_t in[16], out[64];
  const char *h = tx("hash", PV_OID_DATE, -1, "1987-06-12");
  int y, m, d;
  CHECK(sscanf(h, "%d-%d-%d", &y, &m, &d) == 3 && strlen(h) == 10);
  CHECK(y >= 1900 && y <= 2099);
  CHECK_STR(tx("hash", PV_OID_DATE, -1, "1987-06-12"), h);
  put_be(in, pgdays(1987, 6, 12), 4);
  CHECK_EQ(ap("hash", PV_OID_DATE, -1, 1, in, 4, out), 4);
  CHECK_EQ(be(out, 4), pgdays(y, (unsigned)m, (unsigned)d));
  CHECK(strcmp(tx("hash", PV_OID_DATE, -1, "1987-06-13"), h) != 0);
  bool in_range = true;
  for (int64_t dd = -100000; dd < 100000; dd += 997) {
    put_be(in, dd, 4);
    if (ap("hash", PV_OID_DATE, -1, 1, in, 4, out) != 4 ||
        be(out, 4) < pgdays(1900, 1, 1) || be(out, 4) >= pgdays(2100, 1, 1))
      in_range = false;
  }
  CHECK(in_range);
  CHECK_STR(tx("hash", PV_OID_DATE, -1, "1987/06/12"), "<ERR -3>");

  const char *u = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
  const char *hu = tx("hash", PV_OID_UUID, -1, u);
  CHECK_EQ(strlen(hu), 36);
  CHECK(hu[8] == '-' && hu[13] == '-' && hu[18] == '-' && hu[23] == '-');
  CHECK(hu[14] == '4' && strchr("89ab", hu[19]) != NULL);
  CHECK(strcmp(hu, u) != 0);
  CHECK_STR(tx("hash", PV_OID_UUID, -1, "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"),
            hu);
  static const uint8_t ub[16] = {0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b,
                                 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9,
                                 0xbd, 0x38, 0x0a, 0x11};
  CHECK_EQ(ap("hash", PV_OID_UUID, -1, 1, ub, 16, out), 16);
  char hex[40];
  snprintf(hex, sizeof hex,
           "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%"
           "02x",
           out[0], out[1], out[2], out[3], out[4], out[5], out[6], out[7],
           out[8], out[9], out[10], out[11], out[12], out[13], out[14],
           out[15]);
  CHECK_STR(hex, hu);
  CHECK_STR(tx("hash", PV_OID_UUID, -1, "a0eebc999c0b4ef8bb6d6bb9bd380a11"),
            "<ERR -3>");
  CHECK_STR(tx("hash", PV_OID_UUID, -1, "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            "<ERR -3>");
  CHECK_EQ(ap("hash", PV_OID_UUID, -1, 1, ub, 15, out), PV_EPROTO);
}

static void test_invalid_inputs(void) {
  uint8_t out[64];
  CHECK_EQ(ap("hash", PV_OID_INT4, -1, 1, "\0\0\1", 3, out), PV_EPROTO);
  CHECK_EQ(ap("hash", PV_OID_INT2, -1, 1, "\0\0\0\1", 4, out), PV_EPROTO);
  CHECK_EQ(ap("generalize(bucket=2)", PV_OID_INT8, -1, 1, "\0", 1, out),
           PV_EPROTO);
  static const char *badint[] = {
      "",           "-",           "12a",
      " 1",         "+1",          "1.0",
      "2147483648", "-2147483649", "99999999999999999999"};
  for (size_t i = 0; i < sizeof badint / sizeof badint[0]; i++)
    CHECK_STR(tx("hash", PV_OID_INT4, -1, badint[i]), "<ERR -3>");
  CHECK_STR(tx("hash", PV_OID_INT4, -1, "-2147483648"),
            tx("hash", PV_OID_INT4, -1, "-2147483648"));
  CHECK_STR(tx("generalize(bucket=2)", PV_OID_INT2, -1, "32768"), "<ERR -3>");
  static const char *badnum[] = {"",    "-",   ".5", "5.",   "1e5",
                                 "1,5", "nan", "+1", "1.2.3"};
  for (size_t i = 0; i < sizeof badnum / sizeof badnum[0]; i++)
    CHECK_STR(num_text("generalize(bucket=2)", -1, badnum[i]), "<ERR -3>");
  /* numeric binary: length, sign, digit and dscale checks. */
  uint8_t nb[10] = {0, 1, 0, 0, 0, 0, 0, 0, 0x27, 0x10}; /* digit 10000 */
  CHECK_EQ(ap("generalize(bucket=2)", PV_OID_NUMERIC, -1, 1, nb, 10, out),
           PV_EPROTO);
  nb[8] = 0;
  nb[9] = 5;
  CHECK_EQ(ap("generalize(bucket=2)", PV_OID_NUMERIC, -1, 1, nb, 10, out), 10);
  CHECK_EQ(ap("generalize(bucket=2)", PV_OID_NUMERIC, -1, 1, nb, 9, out),
           PV_EPROTO);
  nb[4] = 0x80; /* unknown sign */
  CHECK_EQ(ap("generalize(bucket=2)", PV_OID_NUMERIC, -1, 1, nb, 10, out),
           PV_EPROTO);
  nb[4] = 0;
  nb[6] = 0x40; /* dscale beyond 0x3fff */
  CHECK_EQ(ap("generalize(bucket=2)", PV_OID_NUMERIC, -1, 1, nb, 10, out),
           PV_EPROTO);
  CHECK_EQ(ap("generalize(bucket=2)", PV_OID_NUMERIC, -1, 1, nb, 4, out),
           PV_EPROTO);
  /* Text never holds NUL. */
  CHECK_EQ(ap("mask", PV_OID_TEXT, -1, 0, "a\0b", 3, out), PV_EPROTO);
  CHECK_EQ(ap("hash", PV_OID_VARCHAR, -1, 1, "a\0b", 3, out), PV_EPROTO);
}

/* Every fitting action, every type, both formats, on a valid value: the
 * output decodes as the type, stays within out_max, and a too-small
 * buffer gives PV_ELIMIT and never a partial value. */
typedef struct {
  uint32_t oid;
  int32_t typmod;
  const char *text;
  uint8_t bin[16];
  size_t bin_len;
} sample_t;

static size_t count_utf8(const uint8_t *s, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; i++)
    c += (s[i] & 0xc0) != 0x80;
  return c;
}

static bool valid_for_type(uint32_t oid, int32_t typmod, int16_t fmt,
                           const uint8_t *o, size_t n) {
  char buf[800];
  switch (oid) {
  case PV_OID_INT2:
  case PV_OID_INT4:
  case PV_OID_INT8: {
    size_t w = oid == PV_OID_INT2 ? 2 : oid == PV_OID_INT4 ? 4 : 8;
    if (fmt)
      return n == w;
    memcpy(buf, o, n);
    buf[n] = 0;
    char *end;
    long long v = strtoll(buf, &end, 10);
    return n && *end == 0 &&
           (w == 8 || (v >= -(1LL << (8 * w - 1)) && v < (1LL << (8 * w - 1))));
  }
  case PV_OID_DATE:
    if (fmt)
      return n == 4;
    return n == 10 && o[4] == '-' && o[7] == '-';
  case PV_OID_TIMESTAMP:
  case PV_OID_TIMESTAMPTZ:
    if (fmt)
      return n == 8;
    return n >= 19 && memcmp(o + 10, " 00:00:00", 9) == 0;
  case PV_OID_UUID:
    return fmt ? n == 16 : n == 36;
  case PV_OID_NUMERIC:
    if (fmt)
      return numeric_bin_to_text(o, n, buf);
    for (size_t i = 0; i < n; i++)
      if (!strchr("-0123456789.", o[i]) || !o[i])
        return false;
    return n > 0;
  case PV_OID_BPCHAR:
    return typmod < 4 || count_utf8(o, n) == (size_t)(typmod - 4);
  case PV_OID_VARCHAR:
    return typmod < 4 || count_utf8(o, n) <= (size_t)(typmod - 4);
  case PV_OID_NAME:
    return n <= 63 && !memchr(o, 0, n);
  default:
    return !memchr(o, 0, n);
  }
}

static void test_all_actions_all_types(void) {
  sample_t S[] = {
      {PV_OID_TEXT, -1, "Alice.Smith@example.com", {0}, 0},
      {PV_OID_VARCHAR, 4 + 12, "+1 555 12345", {0}, 0},
      {PV_OID_BPCHAR, 4 + 10, "94107     ", {0}, 0},
      {PV_OID_NAME, -1, "some_role", {0}, 0},
      {PV_OID_INT2, -1, "-1234", {0xfb, 0x2e}, 2},
      {PV_OID_INT4, -1, "123456", {0, 1, 0xe2, 0x40}, 4},
      {PV_OID_INT8,
       -1,
       "-5",
       {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb},
       8},
      {PV_OID_NUMERIC,
       -1,
       "-12.5",
       {0, 2, 0, 0, 0x40, 0, 0, 1, 0, 12, 0x13, 0x88},
       12},
      {PV_OID_DATE, -1, "1987-06-12", {0xff, 0xff, 0xee, 0x16}, 4},
      {PV_OID_TIMESTAMP,
       -1,
       "1987-06-12 14:30:00",
       {0xff, 0xfe, 0x97, 0xad, 0x93, 0x1f, 0x0a, 0x00},
       8},
      {PV_OID_TIMESTAMPTZ,
       -1,
       "1987-06-12 14:30:00+02",
       {0xff, 0xfe, 0x97, 0xad, 0x93, 0x1f, 0x0a, 0x00},
       8},
      {PV_OID_UUID,
       -1,
       "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
       {0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9,
        0xbd, 0x38, 0x0a, 0x11},
       16},
      {PV_OID_JSON, -1, "{\"a\":1}", {0}, 0},
      {PV_OID_JSONB, -1, "{\"a\": 1}", {1, '{', '}'}, 3},
      {PV_OID_BOOL, -1, "t", {1}, 1},
      {PV_OID_FLOAT8, -1, "1.5", {0x3f, 0xf8, 0, 0, 0, 0, 0, 0}, 8},
  };
  for (size_t i = 0; i < sizeof FITS / sizeof FITS[0]; i++) {
    pv_action_t a = act(FITS[i].spec);
    for (size_t s = 0; s < sizeof S / sizeof S[0]; s++)
      for (int16_t f = 0; f <= 1; f++) {
        const uint8_t *in = f ? S[s].bin : (const uint8_t *)S[s].text;
        size_t len = f ? S[s].bin_len : strlen(S[s].text);
        bool text_like = S[s].bin_len == 0;
        if (f && text_like)
          in = (const uint8_t *)S[s].text, len = strlen(S[s].text);
        uint8_t out[256], small[2];
        int64_t r = pv_mask_apply(&a, &K, "c", S[s].oid, S[s].typmod, f, in,
                                  len, out, sizeof out);
        bool fits = pv_mask_fits(&a, S[s].oid, S[s].typmod);
        bool ok = fits
                      ? (a.kind == PV_ACT_WITHHOLD ? r == PV_MASK_NULL : r >= 0)
                      : r == PV_MASK_NULL;
        if (ok && r >= 0) {
          ok = (size_t)r <= pv_mask_out_max(&a, S[s].oid, S[s].typmod, len);
          if (a.kind != PV_ACT_CLEAR &&
              !(S[s].oid == PV_OID_JSON || S[s].oid == PV_OID_JSONB))
            ok = ok && valid_for_type(S[s].oid, S[s].typmod, f, out, (size_t)r);
          if (r > 2)
            ok = ok && pv_mask_apply(&a, &K, "c", S[s].oid, S[s].typmod, f, in,
                                     len, small, sizeof small) == PV_ELIMIT;
        }
        if (!ok) {
          check_failures++;
          fprintf(stderr, "%s on oid %u format %d: %" PRId64 "\n", FITS[i].spec,
                  S[s].oid, f, r);
        }
        check_count++;
      }
  }
}

static void bench_hash(void) {
  uint8_t out[64];
  pv_action_t a = act("hash");
  const char *v = "alice.smith@example.com";
  size_t n = strlen(v);
  int iters = 100000;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int64_t sum = 0;
  for (int i = 0; i < iters; i++)
    sum += pv_mask_apply(&a, &K, "public.customers.email", PV_OID_TEXT, -1, 0,
                         (const uint8_t *)v, n, out, sizeof out);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  CHECK_EQ(sum, (int64_t)iters * (int64_t)n);
  uint8_t in[4] = {0, 1, 0xe2, 0x40};
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < iters / 10; i++)
    sum += pv_mask_apply(&a, &K, "public.customers.id", PV_OID_INT4, -1, 1, in,
                         4, out, sizeof out);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s2 = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("test_mask: hash of a 23-byte email: %.0f values/s; int4: %.0f/s\n",
         iters / s, iters / 10 / s2);
}

int main(void) {
  if (pv_mask_key_derive(SECRET, sizeof SECRET - 1, "support", &K) != 0 ||
      pv_mask_key_derive(SECRET2, sizeof SECRET2 - 1, "support", &K_SECRET2) !=
          0 ||
      pv_mask_key_derive(SECRET, sizeof SECRET - 1, "marketing", &K_PURPOSE2) !=
          0) {
    fprintf(stderr, "key derivation failed\n");
    return 1;
  }
  RUN(test_hmac_rfc4231);
  RUN(test_key_derive);
  RUN(test_fits_matrix);
  RUN(test_clear_withhold);
  RUN(test_redact);
  RUN(test_hash_text_shape);
  RUN(test_hash_separation);
  RUN(test_hash_typmod);
  RUN(test_mask_actions);
  RUN(test_int_hash);
  RUN(test_int_bucket);
  RUN(test_numeric_bucket);
  RUN(test_generalize_dates_text);
  RUN(test_generalize_dates_binary);
  RUN(test_hash_date_uuid);
  RUN(test_invalid_inputs);
  RUN(test_all_actions_all_types);
  RUN(bench_hash);
  pv_mask_key_dispose(&K);
  pv_mask_key_dispose(&K_SECRET2);
  pv_mask_key_dispose(&K_PURPOSE2);
  return check_exit("test_mask");
}
