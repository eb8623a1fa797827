/* Unit tests of error/notice scrubbing. */
#include <string.h>

#include "check.h"
#include "pgveil/error_scrub.h"
#include "pgveil/pg_msg_backend.h"

/* Builds an ErrorResponse from "Cxxxxx\0Mmsg\0..." pairs. */
static size_t build(uint8_t *buf, uint8_t type, const char *const *fields,
                    size_t n) {
  uint8_t *p = buf + 5;
  for (size_t i = 0; i < n; i++) {
    size_t l = strlen(fields[i]);
    memcpy(p, fields[i], l + 1);
    p += l + 1;
  }
  *p++ = 0;
  buf[0] = type;
  pv_put_u32(buf + 1, (uint32_t)(p - buf - 1));
  return (size_t)(p - buf);
}

static const char *field_of(const uint8_t *msg, size_t n, uint8_t want) {
  static char v[256];
  pv_msg_t m = {.type = msg[0], .len = (uint32_t)(n - 5), .body = msg + 5};
  pv_be_errfield_iter_t it;
  pv_be_errfield_begin(&m, &it);
  uint8_t code;
  const char *val;
  while (pv_be_errfield_next(&it, &code, &val) == 1)
    if (code == want) {
      strncpy(v, val, sizeof v - 1);
      return v;
    }
  return NULL;
}

static int scrub(const uint8_t *in, size_t n, uint8_t *out) {
  pv_msg_t m = {.type = in[0], .len = (uint32_t)(n - 5), .body = in + 5};
  return pv_scrub_error(&m, out, 512);
}

static void test_unsafe_class(void) {
  const char *f[] = {"SERROR",
                     "VERROR",
                     "C23505",
                     "Mduplicate key value violates unique constraint",
                     "DKey (email)=(alice@example.com) already exists.",
                     "nemail_key",
                     "Wsome context alice"};
  uint8_t in[512], out[512];
  size_t n = build(in, 'E', f, 7);
  int w = scrub(in, n, out);
  CHECK(w > 0);
  CHECK_STR(field_of(out, (size_t)w, 'C'), "23505");
  CHECK_STR(field_of(out, (size_t)w, 'S'), "ERROR");
  CHECK(field_of(out, (size_t)w, 'D') == NULL);
  CHECK(field_of(out, (size_t)w, 'W') == NULL);
  CHECK(field_of(out, (size_t)w, 'n') == NULL);
  CHECK(strstr(field_of(out, (size_t)w, 'M'), "withheld") != NULL);
  CHECK(memmem(out, (size_t)w, "alice", 5) == NULL);
}

static void test_safe_class(void) {
  const char *f[] = {"SERROR", "C42601", "Msyntax error at or near \"x\"", "P8",
                     "Hhint with data"};
  uint8_t in[512], out[512];
  size_t n = build(in, 'E', f, 5);
  int w = scrub(in, n, out);
  CHECK_STR(field_of(out, (size_t)w, 'M'), "syntax error at or near \"x\"");
  CHECK_STR(field_of(out, (size_t)w, 'P'), "8");
  CHECK(field_of(out, (size_t)w, 'H') == NULL);
}

static void test_notice_and_missing_state(void) {
  const char *f[] = {"SNOTICE", "C00000", "Mssn is 123-45-6789"};
  uint8_t in[512], out[512];
  size_t n = build(in, 'N', f, 3);
  int w = scrub(in, n, out);
  CHECK(out[0] == 'N');
  CHECK(memmem(out, (size_t)w, "123-45", 6) == NULL);
  const char *g[] = {"SERROR", "Mboom alice"};
  n = build(in, 'E', g, 2);
  w = scrub(in, n, out);
  CHECK_STR(field_of(out, (size_t)w, 'C'), "XX000");
  CHECK(memmem(out, (size_t)w, "alice", 5) == NULL);
  /* malformed: no terminator */
  in[n - 1] = 'x';
  CHECK_EQ(scrub(in, n, out), PV_EPROTO);
}

int main(void) {
  RUN(test_unsafe_class);
  RUN(test_safe_class);
  RUN(test_notice_and_missing_state);
  return check_exit("test_error_scrub");
}
