/* Unit tests of the consent set (pgveil/consent.h, proxy/consent_set.c):
 * key canonicalisation, opt_in/opt_out semantics, base + delta, staleness,
 * purposes hash, and 1M inserts with the memory bound. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "pgveil/consent.h"

#define U8(s) ((const uint8_t *)(s))
#define T(s) U8(s), (int32_t)strlen(s)

static pv_consent_key_t key_of(pv_consent_key_kind_t kind, const char *text) {
  pv_consent_key_t k;
  int rc =
      pv_consent_key_make(kind, 25, 0, U8(text), (int32_t)strlen(text), &k);
  CHECK_EQ(rc, PV_OK);
  return k;
}

static void test_keys_int(void) {
  pv_consent_key_t k;
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_INT, 23, 0, T("42"), &k), PV_OK);
  CHECK_EQ(k.i, 42);
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_INT, 20, 0,
                               T("-9223372036854775808"), &k),
           PV_OK);
  CHECK(k.i == INT64_MIN);
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_INT, 20, 0,
                               T("9223372036854775808"), &k),
           PV_EINVAL);
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_INT, 23, 0, T("4x2"), &k),
           PV_EINVAL);
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_INT, 23, 0, T(""), &k),
           PV_EINVAL);
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_INT, 23, 0, T("-"), &k),
           PV_EINVAL);
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_INT, 23, 0, NULL, -1, &k),
           PV_EINVAL);
  const uint8_t b2[2] = {0xff, 0xfe}, b4[4] = {0, 0, 0, 42},
                b8[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe};
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_INT, 21, 1, b2, 2, &k), PV_OK);
  CHECK_EQ(k.i, -2);
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_INT, 23, 1, b4, 4, &k), PV_OK);
  CHECK_EQ(k.i, 42);
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_INT, 20, 1, b8, 8, &k), PV_OK);
  CHECK_EQ(k.i, -2);
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_INT, 23, 1, b8, 8, &k),
           PV_EINVAL);
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_INT, 1700, 1, b4, 4, &k),
           PV_EINVAL);
  /* a text column holding digits, in binary: its bytes are text */
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_INT, 25, 1, T("17"), &k), PV_OK);
  CHECK_EQ(k.i, 17);
  CHECK_EQ(pv_consent_key_kind(21), PV_CONSENT_KEY_INT);
  CHECK_EQ(pv_consent_key_kind(2950), PV_CONSENT_KEY_UUID);
  CHECK_EQ(pv_consent_key_kind(1043), PV_CONSENT_KEY_TEXT);
}

static void test_keys_uuid_text(void) {
  static const uint8_t raw[16] = {0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b,
                                  0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9,
                                  0xbd, 0x38, 0x0a, 0x11};
  const char *forms[] = {"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                         "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
                         "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
                         "a0eebc999c0b4ef8bb6d6bb9bd380a11",
                         "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11"};
  pv_consent_key_t k;
  for (size_t i = 0; i < sizeof forms / sizeof *forms; i++) {
    CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_UUID, 2950, 0, T(forms[i]), &k),
             PV_OK);
    CHECK(k.len == 16 && !k.p && memcmp(k.buf, raw, 16) == 0);
  }
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_UUID, 2950, 1, raw, 16, &k),
           PV_OK);
  CHECK(k.len == 16 && !k.p && memcmp(k.buf, raw, 16) == 0);
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_UUID, 2950, 0,
                               T("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1"), &k),
           PV_EINVAL);
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_UUID, 2950, 0,
                               T("a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11"), &k),
           PV_EINVAL);
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_UUID, 2950, 1, raw, 15, &k),
           PV_EINVAL);
  /* TEXT sets: binary ints and uuids become their text form */
  const uint8_t b4[4] = {0, 0, 1, 0};
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_TEXT, 23, 1, b4, 4, &k), PV_OK);
  CHECK(k.len == 3 && !k.p && memcmp(k.buf, "256", 3) == 0);
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_TEXT, 2950, 1, raw, 16, &k),
           PV_OK);
  CHECK(k.len == 36 && !k.p && memcmp(k.buf, forms[0], 36) == 0);
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_TEXT, 1043, 1, T("bob"), &k),
           PV_OK);
  CHECK(k.len == 3 && memcmp(k.p, "bob", 3) == 0);
  char big[PV_CONSENT_KEY_MAX + 2];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  CHECK_EQ(pv_consent_key_make(PV_CONSENT_KEY_TEXT, 25, 0, T(big), &k),
           PV_EINVAL);
}

static pv_rules_t *load_rules(const char *purposes) {
  char buf[1024];
  snprintf(buf, sizeof buf,
           "version: 1\npurposes:\n%s"
           "consent: { table: public.consent, subject_column: s, "
           "purpose_column: p, granted_column: g }\n"
           "tables:\n  public.t:\n    subject: id\n    columns:\n"
           "      email: { default: withhold }\n",
           purposes);
  pv_rules_t *r = NULL;
  pv_rules_errors_t *e = NULL;
  int rc = pv_rules_load_buffer(buf, strlen(buf), "test.yaml", &r, &e);
  if (rc && e)
    for (size_t i = 0; i < e->count; i++)
      fprintf(stderr, "%s\n", e->msgs[i]);
  pv_rules_errors_free(e);
  CHECK_EQ(rc, PV_OK);
  return r;
}

/* The README's example: 1 marketing true, 2 marketing false, 1 profiling
 * false; marketing opt_in (bit 0), profiling opt_out (bit 1). */
static void test_modes_base_delta(void) {
  pv_consent_set_t *base = NULL, *delta = NULL;
  pv_consent_clock_t *clk = NULL;
  CHECK_EQ(pv_consent_set_new(PV_CONSENT_KEY_INT, false, 0, 100, &base), PV_OK);
  CHECK_EQ(pv_consent_clock_new(&clk), PV_OK);
  pv_consent_key_t k1 = key_of(PV_CONSENT_KEY_INT, "1"),
                   k2 = key_of(PV_CONSENT_KEY_INT, "2");
  CHECK_EQ(pv_consent_set_put(base, &k1, 0, 1), PV_OK);
  CHECK_EQ(pv_consent_set_put(base, &k2, 0, 0), PV_OK);
  CHECK_EQ(pv_consent_set_put(base, &k1, 1, 0), PV_OK);
  CHECK_EQ(pv_consent_set_put(base, &k1, 64, 0), PV_EINVAL);
  CHECK_EQ(pv_consent_set_count(base), 2);
  pv_consent_snap_t *s = NULL;
  CHECK_EQ(pv_consent_snap_new(base, NULL, clk, 7, &s), PV_OK);
  const pv_consent_mode_t IN = PV_CONSENT_OPT_IN, OUT = PV_CONSENT_OPT_OUT;
  CHECK(pv_consent_allowed(s, 0, IN, 23, 0, T("1")));
  CHECK(!pv_consent_allowed(s, 0, IN, 23, 0, T("2")));
  CHECK(!pv_consent_allowed(s, 0, IN, 23, 0, T("3")));
  CHECK(!pv_consent_allowed(s, 1, OUT, 23, 0, T("1")));
  CHECK(pv_consent_allowed(s, 1, OUT, 23, 0, T("2")));
  CHECK(pv_consent_allowed(s, 1, OUT, 23, 0, T("3")));
  /* binary int8 subject 1 == text "1" */
  const uint8_t one8[8] = {0, 0, 0, 0, 0, 0, 0, 1};
  CHECK(pv_consent_allowed(s, 0, IN, 20, 1, one8, 8));
  CHECK(!pv_consent_allowed(s, 1, OUT, 20, 1, one8, 8));
  /* undeterminable subjects: never consented, in either mode */
  CHECK(!pv_consent_allowed(s, 1, OUT, 23, 0, NULL, -1));
  CHECK(!pv_consent_allowed(s, 1, OUT, 23, 0, T("x")));
  CHECK(!pv_consent_allowed(s, 70, OUT, 23, 0, T("3")));
  CHECK(!pv_consent_allowed(NULL, 0, OUT, 23, 0, T("3")));

  /* delta: 1 revokes marketing, 2's marketing row deleted, 3 refuses
   * profiling; untouched purposes come from the base */
  CHECK_EQ(pv_consent_set_new(PV_CONSENT_KEY_INT, true, 0, 100, &delta), PV_OK);
  pv_consent_key_t k3 = key_of(PV_CONSENT_KEY_INT, "3");
  CHECK_EQ(pv_consent_set_put(delta, &k1, 0, 0), PV_OK);
  CHECK_EQ(pv_consent_set_put(delta, &k2, 0, -1), PV_OK);
  CHECK_EQ(pv_consent_set_put(delta, &k3, 1, 0), PV_OK);
  pv_consent_snap_t *s2 = NULL;
  CHECK_EQ(pv_consent_snap_new(base, delta, clk, 7, &s2), PV_OK);
  CHECK(!pv_consent_allowed(s2, 0, IN, 23, 0, T("1")));
  CHECK(!pv_consent_allowed(s2, 1, OUT, 23, 0, T("1"))); /* from base */
  CHECK(!pv_consent_allowed(s2, 0, IN, 23, 0, T("2")));
  CHECK(pv_consent_allowed(s2, 0, OUT, 23, 0, T("2"))); /* deleted false row */
  CHECK(!pv_consent_allowed(s2, 1, OUT, 23, 0, T("3")));
  CHECK(pv_consent_allowed(s2, 0, OUT, 23, 0, T("3")));
  /* the old snapshot is unchanged */
  CHECK(pv_consent_allowed(s, 0, IN, 23, 0, T("1")));
  CHECK_EQ(pv_consent_snap_subjects(s2), 2);
  CHECK_EQ(pv_consent_snap_delta(s2), 3);

  /* clone is independent (copy-on-write deltas) */
  pv_consent_set_t *d2 = NULL;
  CHECK_EQ(pv_consent_set_clone(delta, &d2), PV_OK);
  CHECK_EQ(pv_consent_set_put(d2, &k1, 0, 1), PV_OK);
  uint64_t g, r, t;
  CHECK(pv_consent_set_get(delta, &k1, &g, &r, &t));
  CHECK_EQ(g, 0);
  CHECK(pv_consent_set_get(d2, &k1, &g, &r, &t));
  CHECK_EQ(g, 1);
  CHECK_EQ(t, 1);
  pv_consent_set_release(d2);

  /* staleness and the purposes hash */
  pv_rules_t *rules =
      load_rules("  marketing: { roles: [app], consent: opt_in }\n"
                 "  profiling: { roles: [app], consent: opt_out }\n");
  pv_rules_t *other =
      load_rules("  profiling: { roles: [app], consent: opt_out }\n"
                 "  marketing: { roles: [app], consent: opt_in }\n");
  uint64_t ph = pv_consent_purposes_hash(rules);
  CHECK(ph != pv_consent_purposes_hash(other));
  pv_consent_snap_t *s3 = NULL;
  CHECK_EQ(pv_consent_snap_new(base, delta, clk, ph, &s3), PV_OK);
  CHECK(pv_consent_stale(s3, 1000)); /* never confirmed */
  pv_consent_clock_set(clk, 5000);
  CHECK(!pv_consent_stale(s3, 4999));
  CHECK(pv_consent_stale(s3, 5000));
  CHECK(pv_consent_usable(s3, rules, 100));
  CHECK(!pv_consent_usable(s3, other, 100));
  CHECK(!pv_consent_usable(s3, rules, 6000));
  CHECK(!pv_consent_usable(NULL, rules, 100));

  /* holder */
  pv_consent_holder_t h;
  CHECK_EQ(pv_consent_holder_init(&h), PV_OK);
  CHECK(pv_consent_holder_acquire(&h) == NULL);
  pv_consent_holder_publish(&h, pv_consent_ref(s3));
  pv_consent_snap_t *got = pv_consent_holder_acquire(&h);
  CHECK(got == s3);
  pv_consent_holder_publish(&h, NULL);
  CHECK(pv_consent_allowed(got, 1, OUT, 23, 0, T("2"))); /* still alive */
  pv_consent_release(got);
  pv_consent_holder_dispose(&h);

  pv_rules_free(rules);
  pv_rules_free(other);
  pv_consent_release(s);
  pv_consent_release(s2);
  pv_consent_release(s3);
  pv_consent_set_release(base);
  pv_consent_set_release(delta);
  pv_consent_clock_release(clk);
}

static void test_text_uuid_sets(void) {
  pv_consent_set_t *base = NULL;
  pv_consent_clock_t *clk = NULL;
  CHECK_EQ(pv_consent_clock_new(&clk), PV_OK);
  /* uuid */
  CHECK_EQ(pv_consent_set_new(PV_CONSENT_KEY_UUID, false, 0, 100000, &base),
           PV_OK);
  char u[40];
  for (int i = 0; i < 5000; i++) {
    snprintf(u, sizeof u, "%08x-0000-4000-8000-%012x", i, i * 7);
    pv_consent_key_t k = key_of(PV_CONSENT_KEY_UUID, u);
    CHECK_EQ(pv_consent_set_put(base, &k, i % 3, i % 2), PV_OK);
  }
  pv_consent_snap_t *s = NULL;
  CHECK_EQ(pv_consent_snap_new(base, NULL, clk, 0, &s), PV_OK);
  int allowed = 0;
  uint8_t raw[16];
  for (int i = 0; i < 5000; i++) {
    snprintf(u, sizeof u, "%08X0000400080%014X", i, i * 7);
    allowed += pv_consent_allowed(s, i % 3, PV_CONSENT_OPT_IN, 2950, 0, T(u));
    pv_consent_key_t k = key_of(PV_CONSENT_KEY_UUID, u);
    memcpy(raw, k.buf, 16);
    CHECK(pv_consent_allowed(s, i % 3, PV_CONSENT_OPT_IN, 2950, 1, raw, 16) ==
          (i % 2 == 1));
  }
  CHECK_EQ(allowed, 2500);
  CHECK(!pv_consent_allowed(s, 0, PV_CONSENT_OPT_IN, 2950, 0,
                            T("ffffffff-0000-4000-8000-000000000000")));
  pv_consent_release(s);
  pv_consent_set_release(base);
  /* text, with keys past several rehashes (arena offsets stay right) */
  CHECK_EQ(pv_consent_set_new(PV_CONSENT_KEY_TEXT, false, 0, 100000, &base),
           PV_OK);
  char t[64];
  for (int i = 0; i < 20000; i++) {
    snprintf(t, sizeof t, "cust-%d@example.com", i);
    pv_consent_key_t k = key_of(PV_CONSENT_KEY_TEXT, t);
    CHECK_EQ(pv_consent_set_put(base, &k, 5, i % 4 == 0), PV_OK);
  }
  CHECK_EQ(pv_consent_set_compact(base), PV_OK);
  CHECK_EQ(pv_consent_set_count(base), 20000);
  CHECK_EQ(pv_consent_snap_new(base, NULL, clk, 0, &s), PV_OK);
  allowed = 0;
  int refused = 0;
  for (int i = 0; i < 20000; i++) {
    snprintf(t, sizeof t, "cust-%d@example.com", i);
    allowed += pv_consent_allowed(s, 5, PV_CONSENT_OPT_IN, 1043, 1, T(t));
    refused += !pv_consent_allowed(s, 5, PV_CONSENT_OPT_OUT, 25, 0, T(t));
  }
  CHECK_EQ(allowed, 5000);
  CHECK_EQ(refused, 15000);
  CHECK(!pv_consent_allowed(s, 5, PV_CONSENT_OPT_IN, 25, 0,
                            T("cust-1@example.co")));
  /* a TEXT set looked up with a binary int column */
  pv_consent_set_t *b2 = NULL;
  CHECK_EQ(pv_consent_set_new(PV_CONSENT_KEY_TEXT, false, 0, 10, &b2), PV_OK);
  pv_consent_key_t k7 = key_of(PV_CONSENT_KEY_TEXT, "7");
  CHECK_EQ(pv_consent_set_put(b2, &k7, 0, 1), PV_OK);
  pv_consent_snap_t *s2 = NULL;
  CHECK_EQ(pv_consent_snap_new(b2, NULL, clk, 0, &s2), PV_OK);
  const uint8_t seven[4] = {0, 0, 0, 7};
  CHECK(pv_consent_allowed(s2, 0, PV_CONSENT_OPT_IN, 23, 1, seven, 4));
  pv_consent_release(s2);
  pv_consent_set_release(b2);
  pv_consent_release(s);
  pv_consent_set_release(base);
  pv_consent_clock_release(clk);
}

static void test_limits(void) {
  pv_consent_set_t *s = NULL;
  CHECK_EQ(pv_consent_set_new(PV_CONSENT_KEY_INT, false, 0, 3, &s), PV_OK);
  for (int i = 0; i < 3; i++) {
    pv_consent_key_t k = {.i = i};
    CHECK_EQ(pv_consent_set_put(s, &k, 0, 1), PV_OK);
  }
  pv_consent_key_t k = {.i = 99};
  CHECK_EQ(pv_consent_set_put(s, &k, 0, 1), PV_ELIMIT);
  CHECK_EQ(pv_consent_set_put(s, &k, 0, -1), PV_OK); /* absent: no entry */
  pv_consent_key_t k0 = {.i = 0};
  CHECK_EQ(pv_consent_set_put(s, &k0, 1, 0), PV_OK); /* existing: fine */
  CHECK_EQ(pv_consent_set_count(s), 3);
  pv_consent_set_release(s);
}

/* 1M subjects x 4 purposes: every lookup right, <= 48 bytes a subject. */
static void test_million(void) {
  const int N = 1000000;
  clock_t t0 = clock();
  pv_consent_set_t *s = NULL;
  CHECK_EQ(pv_consent_set_new(PV_CONSENT_KEY_INT, false, 0, 2 * (size_t)N, &s),
           PV_OK);
  for (int i = 0; i < N; i++) {
    pv_consent_key_t k = {.i = (int64_t)i * 7919};
    for (int p = 0; p < 4; p++)
      if (pv_consent_set_put(s, &k, p, (i + p) % 3 == 0 ? 0 : 1) != PV_OK) {
        CHECK(0);
        break;
      }
  }
  CHECK_EQ(pv_consent_set_compact(s), PV_OK);
  CHECK_EQ(pv_consent_set_count(s), N);
  double per = (double)pv_consent_set_bytes(s) / N;
  CHECK(per <= 48.0);
  pv_consent_clock_t *clk = NULL;
  pv_consent_snap_t *snap = NULL;
  CHECK_EQ(pv_consent_clock_new(&clk), PV_OK);
  CHECK_EQ(pv_consent_snap_new(s, NULL, clk, 0, &snap), PV_OK);
  int wrong = 0;
  uint8_t be[8];
  for (int i = 0; i < N; i++) {
    int64_t v = (int64_t)i * 7919;
    for (int b = 0; b < 8; b++)
      be[b] = (uint8_t)((uint64_t)v >> (56 - 8 * b));
    for (int p = 0; p < 4; p++)
      wrong += pv_consent_allowed(snap, p, PV_CONSENT_OPT_IN, 20, 1, be, 8) !=
               ((i + p) % 3 != 0);
  }
  CHECK_EQ(wrong, 0);
  CHECK(!pv_consent_allowed(snap, 0, PV_CONSENT_OPT_IN, 23, 0, T("1")));
  printf("test_consent_set: 1M subjects x 4 purposes: %.1f bytes/subject, "
         "%.2f s cpu\n",
         per, (double)(clock() - t0) / CLOCKS_PER_SEC);
  pv_consent_release(snap);
  pv_consent_clock_release(clk);
  pv_consent_set_release(s);
}

/* put_many gives exactly the set that put one by one gives, for integer
 * and text subjects, with repeats, overrides and deletes in the batch. */
static void compare_put_many(pv_consent_key_kind_t kind) {
  enum { N = 5000 };
  static pv_consent_put_t puts[N];
  static char texts[N][16];
  for (int i = 0; i < N; i++) {
    int subject = (i * 7919) % 1500; /* repeats */
    snprintf(texts[i], sizeof texts[i], "%d", subject);
    puts[i].key = key_of(kind, texts[i]);
    puts[i].purpose = i % 3;
    puts[i].value = i % 11 == 0 ? -1 : (i % 2);
  }
  pv_consent_set_t *a = NULL, *b = NULL;
  CHECK_EQ(pv_consent_set_new(kind, true, 16, 100000, &a), PV_OK);
  CHECK_EQ(pv_consent_set_new(kind, true, 16, 100000, &b), PV_OK);
  if (!a || !b)
    return;
  for (int i = 0; i < N; i++)
    CHECK_EQ(
        pv_consent_set_put(a, &puts[i].key, puts[i].purpose, puts[i].value),
        PV_OK);
  size_t done = 0;
  CHECK_EQ(pv_consent_set_put_many(b, puts, N, &done), PV_OK);
  CHECK_EQ(done, N);
  CHECK_EQ(pv_consent_set_count(a), pv_consent_set_count(b));
  int differ = 0;
  for (int subject = 0; subject < 1500; subject++) {
    char t[16];
    snprintf(t, sizeof t, "%d", subject);
    pv_consent_key_t k = key_of(kind, t);
    uint64_t ga = 0, ra = 0, ta = 0, gb = 0, rb = 0, tb = 0;
    bool ha = pv_consent_set_get(a, &k, &ga, &ra, &ta);
    bool hb = pv_consent_set_get(b, &k, &gb, &rb, &tb);
    differ += ha != hb || ga != gb || ra != rb || ta != tb;
  }
  CHECK_EQ(differ, 0);
  pv_consent_set_release(a);
  pv_consent_set_release(b);
}

static void test_put_many(void) {
  compare_put_many(PV_CONSENT_KEY_INT);
  compare_put_many(PV_CONSENT_KEY_TEXT);
}

int main(void) {
  RUN(test_keys_int);
  RUN(test_put_many);
  RUN(test_keys_uuid_text);
  RUN(test_modes_base_delta);
  RUN(test_text_uuid_sets);
  RUN(test_limits);
  RUN(test_million);
  return check_exit("test_consent_set");
}
