/* Unit tests for the pure parts of tls.c: SCRAM -PLUS stripping from
 * AuthenticationSASL and the channel-binding flag of SASLInitialResponse. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "pgveil/tls.h"

/* An AuthenticationSASL body: int32 10, names, final NUL. */
static size_t sasl_body(uint8_t *out, const char *const *names, size_t n) {
  size_t o = 0;
  out[o++] = 0, out[o++] = 0, out[o++] = 0, out[o++] = 10;
  for (size_t i = 0; i < n; i++) {
    size_t l = strlen(names[i]) + 1;
    memcpy(out + o, names[i], l);
    o += l;
  }
  out[o++] = 0;
  return o;
}

static void test_strip_plus(void) {
  uint8_t in[128], out[128], want[128];
  const char *both[] = {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"};
  const char *plain[] = {"SCRAM-SHA-256"};
  size_t n = sasl_body(in, both, 2);
  size_t wn = sasl_body(want, plain, 1);
  int r = pv_tls_sasl_strip_plus(in, n, out, sizeof out);
  CHECK_EQ(r, (int)wn);
  CHECK(r > 0 && memcmp(out, want, wn) == 0);
  /* order does not matter, several -PLUS names all go */
  const char *three[] = {"SCRAM-SHA-256", "X-PLUS", "SCRAM-SHA-256-PLUS"};
  n = sasl_body(in, three, 3);
  r = pv_tls_sasl_strip_plus(in, n, out, sizeof out);
  CHECK_EQ(r, (int)wn);
  CHECK(r > 0 && memcmp(out, want, wn) == 0);
  /* nothing to strip */
  n = sasl_body(in, plain, 1);
  CHECK_EQ(pv_tls_sasl_strip_plus(in, n, out, sizeof out), PV_ENOENT);
  /* only -PLUS: an empty list remains (the server's list, our removal) */
  const char *only[] = {"SCRAM-SHA-256-PLUS"};
  n = sasl_body(in, only, 1);
  CHECK_EQ(pv_tls_sasl_strip_plus(in, n, out, sizeof out), 5);
  CHECK(out[4] == 0);
  /* "-PLUS" alone is not a suffix of a longer name: 5 bytes do match */
  const char *odd[] = {"-PLUS", "A"};
  n = sasl_body(in, odd, 2);
  CHECK_EQ(pv_tls_sasl_strip_plus(in, n, out, sizeof out), 7);
}

static void test_strip_malformed(void) {
  uint8_t in[64], out[64];
  const char *both[] = {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"};
  size_t n = sasl_body(in, both, 2);
  CHECK_EQ(pv_tls_sasl_strip_plus(in, n - 1, out, sizeof out), PV_EPROTO);
  CHECK_EQ(pv_tls_sasl_strip_plus(in, 4, out, sizeof out), PV_EPROTO);
  CHECK_EQ(pv_tls_sasl_strip_plus(in, n, out, 8), PV_ELIMIT);
  in[3] = 11; /* SASLContinue, not a mechanism list */
  CHECK_EQ(pv_tls_sasl_strip_plus(in, n, out, sizeof out), PV_EPROTO);
  in[3] = 10;
  /* bytes after the list terminator */
  uint8_t tail[64];
  memcpy(tail, in, n);
  tail[n] = 'Z';
  tail[n + 1] = 0;
  CHECK_EQ(pv_tls_sasl_strip_plus(tail, n + 2, out, sizeof out), PV_EPROTO);
}

static size_t initial(uint8_t *out, const char *mech, const char *data,
                      int32_t len) {
  size_t o = strlen(mech) + 1;
  memcpy(out, mech, o);
  uint32_t l = (uint32_t)len;
  out[o++] = (uint8_t)(l >> 24), out[o++] = (uint8_t)(l >> 16);
  out[o++] = (uint8_t)(l >> 8), out[o++] = (uint8_t)l;
  if (data) { /* the data itself may be shorter than the length says */
    memcpy(out + o, data, strlen(data));
    o += strlen(data);
  }
  return o;
}

static void test_cbind_flag(void) {
  uint8_t b[128];
  const char *n = "n,,n=,r=abc", *y = "y,,n=,r=abc";
  const char *p = "p=tls-server-end-point,,n=,r=abc";
  size_t len = initial(b, "SCRAM-SHA-256", n, (int32_t)strlen(n));
  CHECK_EQ(pv_tls_sasl_cbind_flag(b, len), 'n');
  len = initial(b, "SCRAM-SHA-256", y, (int32_t)strlen(y));
  CHECK_EQ(pv_tls_sasl_cbind_flag(b, len), 'y');
  len = initial(b, "SCRAM-SHA-256-PLUS", p, (int32_t)strlen(p));
  CHECK_EQ(pv_tls_sasl_cbind_flag(b, len), 'p');
  len = initial(b, "SCRAM-SHA-256", NULL, -1);
  CHECK_EQ(pv_tls_sasl_cbind_flag(b, len), PV_ENOENT);
  len = initial(b, "SCRAM-SHA-256", "q,,", 3);
  CHECK_EQ(pv_tls_sasl_cbind_flag(b, len), PV_EPROTO);
  len = initial(b, "SCRAM-SHA-256", n, 100); /* length beyond the body */
  CHECK_EQ(pv_tls_sasl_cbind_flag(b, len), PV_EPROTO);
  CHECK_EQ(pv_tls_sasl_cbind_flag((const uint8_t *)"SCRAM", 5), PV_EPROTO);
  len = initial(b, "SCRAM-SHA-256", n, (int32_t)strlen(n));
  CHECK_EQ(pv_tls_sasl_cbind_flag(b, strlen("SCRAM-SHA-256") + 3),
           PV_EPROTO); /* truncated length field */
}

int main(void) {
  RUN(test_strip_plus);
  RUN(test_strip_malformed);
  RUN(test_cbind_flag);
  return check_exit("tls");
}
