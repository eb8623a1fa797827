/* Unit tests for proxy/pg_msg_frontend.c and proxy/pg_msg_backend.c: every
 * decoder on hand-built messages, every truncation, malformed variants. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "pgveil/pg_msg_backend.h"
#include "pgveil/pg_msg_frontend.h"

typedef struct {
  uint8_t b[4096];
  size_t n;
} buf_t;

static void put8(buf_t *b, uint8_t v) { b->b[b->n++] = v; }
static void put16(buf_t *b, uint16_t v) {
  pv_put_u16(b->b + b->n, v);
  b->n += 2;
}
static void put32(buf_t *b, uint32_t v) {
  pv_put_u32(b->b + b->n, v);
  b->n += 4;
}
static void putn(buf_t *b, const void *p, size_t n) {
  memcpy(b->b + b->n, p, n);
  b->n += n;
}
static void putstr(buf_t *b, const char *s) { putn(b, s, strlen(s) + 1); }

static pv_msg_t msg_of(uint8_t type, const buf_t *b) {
  pv_msg_t m = {type, (uint32_t)b->n, b->b};
  return m;
}

/* Runs a decoder on a heap copy of exactly len bytes (so ASan sees any
 * overread); returns its result. */
typedef int (*decode_fn)(const pv_msg_t *m);

static int run_on_copy(decode_fn fn, uint8_t type, const uint8_t *body,
                       size_t len) {
  uint8_t *copy = malloc(len ? len : 1);
  memcpy(copy, body, len);
  pv_msg_t m = {type, (uint32_t)len, len ? copy : NULL};
  int rc = fn(&m);
  free(copy);
  return rc;
}

/* Every strict prefix of a valid body must be PV_EPROTO. */
static void check_truncations(decode_fn fn, uint8_t type, const buf_t *b) {
  CHECK_EQ(run_on_copy(fn, type, b->b, b->n), PV_OK);
  for (size_t k = 0; k < b->n; k++) {
    int rc = run_on_copy(fn, type, b->b, k);
    CHECK_EQ(rc, PV_EPROTO);
    if (rc != PV_EPROTO)
      fprintf(stderr, "  prefix %zu of %zu\n", k, b->n);
  }
}

/* Adapters so every decoder fits decode_fn. */
static int dec_query(const pv_msg_t *m) {
  pv_fe_query_t q;
  return pv_fe_query_decode(m, &q);
}
static int dec_parse(const pv_msg_t *m) {
  pv_fe_parse_t p;
  return pv_fe_parse_decode(m, &p);
}
static int dec_bind(const pv_msg_t *m) {
  pv_fe_bind_t b;
  return pv_fe_bind_decode(m, &b);
}
static int dec_describe(const pv_msg_t *m) {
  pv_fe_target_t t;
  return pv_fe_describe_decode(m, &t);
}
static int dec_close(const pv_msg_t *m) {
  pv_fe_target_t t;
  return pv_fe_close_decode(m, &t);
}
static int dec_execute(const pv_msg_t *m) {
  pv_fe_execute_t e;
  return pv_fe_execute_decode(m, &e);
}
static int dec_rowdesc(const pv_msg_t *m) {
  pv_be_field_t f[8];
  uint16_t n;
  return pv_be_rowdesc_decode(m, f, 8, &n);
}
/* Walks a whole DataRow: PV_OK only if begin and every next succeed. */
static int dec_datarow(const pv_msg_t *m) {
  pv_be_datarow_iter_t it;
  const uint8_t *v;
  int32_t len;
  int rc = pv_be_datarow_begin(m, &it);
  if (rc != PV_OK)
    return rc;
  while ((rc = pv_be_datarow_next(&it, &v, &len)) == 1) {
    if (len >= 0 && (v < m->body || v + len > m->body + m->len))
      return PV_EINVAL; /* a slice outside the body: a test failure */
  }
  return rc;
}
static int dec_errfields(const pv_msg_t *m) {
  pv_be_errfield_iter_t it;
  uint8_t code;
  const char *v;
  int rc;
  pv_be_errfield_begin(m, &it);
  while ((rc = pv_be_errfield_next(&it, &code, &v)) == 1)
    ;
  return rc;
}
static int dec_sqlstate(const pv_msg_t *m) {
  char s[6];
  return pv_be_error_sqlstate(m, s);
}
static int dec_command_complete(const pv_msg_t *m) {
  const char *tag;
  return pv_be_command_complete_decode(m, &tag);
}
static int dec_ready(const pv_msg_t *m) {
  uint8_t s;
  return pv_be_ready_decode(m, &s);
}
static int dec_auth(const pv_msg_t *m) {
  uint32_t t;
  return pv_be_auth_decode(m, &t);
}
static int dec_key_data(const pv_msg_t *m) {
  uint32_t pid;
  const uint8_t *key;
  size_t len;
  return pv_be_key_data_decode(m, &pid, &key, &len);
}
static int dec_copy(const pv_msg_t *m) {
  uint8_t f;
  uint16_t n;
  const uint8_t *cols;
  return pv_be_copy_response_decode(m, &f, &n, &cols);
}

/* ---- frontend ---- */

static void test_query(void) {
  buf_t b = {.n = 0};
  putstr(&b, "SELECT 1; SELECT 2");
  pv_msg_t m = msg_of('Q', &b);
  pv_fe_query_t q;
  CHECK_EQ(pv_fe_query_decode(&m, &q), PV_OK);
  CHECK_STR(q.sql, "SELECT 1; SELECT 2");
  CHECK_EQ(q.sql_len, 18);
  check_truncations(dec_query, 'Q', &b);
  put8(&b, 'x'); /* trailing bytes */
  CHECK_EQ(run_on_copy(dec_query, 'Q', b.b, b.n), PV_EPROTO);
}

static void test_parse(void) {
  buf_t b = {.n = 0};
  putstr(&b, "s1");
  putstr(&b, "SELECT $1::int, $2");
  put16(&b, 2);
  put32(&b, 23);
  put32(&b, 25);
  pv_msg_t m = msg_of('P', &b);
  pv_fe_parse_t p;
  CHECK_EQ(pv_fe_parse_decode(&m, &p), PV_OK);
  CHECK_STR(p.stmt, "s1");
  CHECK_STR(p.sql, "SELECT $1::int, $2");
  CHECK_EQ(p.sql_len, 18);
  CHECK_EQ(p.nparam_types, 2);
  CHECK_EQ(pv_get_u32(p.param_types), 23);
  CHECK_EQ(pv_get_u32(p.param_types + 4), 25);
  check_truncations(dec_parse, 'P', &b);
  put8(&b, 0);
  CHECK_EQ(run_on_copy(dec_parse, 'P', b.b, b.n), PV_EPROTO);
  /* A count larger than the body. */
  buf_t c = {.n = 0};
  putstr(&c, "");
  putstr(&c, "SELECT 1");
  put16(&c, 0xffff);
  put32(&c, 23);
  CHECK_EQ(run_on_copy(dec_parse, 'P', c.b, c.n), PV_EPROTO);
}

/* Bind "p1" of "s1": formats [1], params [NULL, "abc", ""], results fmts. */
static void build_bind(buf_t *b, uint16_t nfmt, uint16_t nres,
                       const uint16_t *res) {
  b->n = 0;
  putstr(b, "p1");
  putstr(b, "s1");
  put16(b, nfmt);
  for (uint16_t i = 0; i < nfmt; i++)
    put16(b, 1);
  put16(b, 3);
  put32(b, 0xffffffffu);
  put32(b, 3);
  putn(b, "abc", 3);
  put32(b, 0);
  put16(b, nres);
  for (uint16_t i = 0; i < nres; i++)
    put16(b, res[i]);
}

static void test_bind(void) {
  buf_t b;
  const uint16_t res[3] = {0, 1, 0};
  build_bind(&b, 1, 3, res);
  pv_msg_t m = msg_of('B', &b);
  pv_fe_bind_t d;
  CHECK_EQ(pv_fe_bind_decode(&m, &d), PV_OK);
  CHECK_STR(d.portal, "p1");
  CHECK_STR(d.stmt, "s1");
  CHECK_EQ(d.nparam_formats, 1);
  CHECK_EQ(pv_get_u16(d.param_formats), 1);
  CHECK_EQ(d.nparams, 3);
  CHECK(d.params == b.b + 3 + 3 + 2 + 2 + 2);
  CHECK_EQ(pv_get_u32(d.params), 0xffffffffu);
  CHECK_EQ(d.nresult_formats, 3);
  CHECK(d.result_formats == b.b + b.n - 6);
  check_truncations(dec_bind, 'B', &b);
  /* Param format counts: 0 and 3 (= nparams) are fine, 2 is not. */
  build_bind(&b, 0, 0, res);
  CHECK_EQ(run_on_copy(dec_bind, 'B', b.b, b.n), PV_OK);
  build_bind(&b, 3, 1, res);
  CHECK_EQ(run_on_copy(dec_bind, 'B', b.b, b.n), PV_OK);
  build_bind(&b, 2, 0, res);
  CHECK_EQ(run_on_copy(dec_bind, 'B', b.b, b.n), PV_EPROTO);
  /* Trailing bytes. */
  build_bind(&b, 1, 0, res);
  put8(&b, 0);
  CHECK_EQ(run_on_copy(dec_bind, 'B', b.b, b.n), PV_EPROTO);
}

static void test_bind_bad_values(void) {
  /* A parameter length of -2, and one beyond the body. */
  uint32_t bad[] = {0xfffffffeu, 0x80000000u, 1000, 0x7fffffffu};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    buf_t b = {.n = 0};
    putstr(&b, "");
    putstr(&b, "");
    put16(&b, 0);
    put16(&b, 1);
    put32(&b, bad[i]);
    putn(&b, "abcd", 4);
    put16(&b, 0);
    CHECK_EQ(run_on_copy(dec_bind, 'B', b.b, b.n), PV_EPROTO);
  }
  /* A parameter count larger than the values present. */
  buf_t b = {.n = 0};
  putstr(&b, "");
  putstr(&b, "");
  put16(&b, 0);
  put16(&b, 500);
  put32(&b, 0);
  put16(&b, 0);
  CHECK_EQ(run_on_copy(dec_bind, 'B', b.b, b.n), PV_EPROTO);
}

static void test_bind_result_format(void) {
  buf_t b;
  pv_fe_bind_t d;
  int16_t f = -9;
  pv_msg_t m;
  const uint16_t res[3] = {0, 1, 0};

  build_bind(&b, 0, 0, res);
  m = msg_of('B', &b);
  CHECK_EQ(pv_fe_bind_decode(&m, &d), PV_OK);
  for (uint16_t i = 0; i < 4; i++) {
    CHECK_EQ(pv_fe_bind_result_format(&d, 4, i, &f), PV_OK);
    CHECK_EQ(f, 0);
  }
  CHECK_EQ(pv_fe_bind_result_format(&d, 4, 4, &f), PV_EINVAL);

  const uint16_t one[1] = {1};
  build_bind(&b, 0, 1, one);
  m = msg_of('B', &b);
  CHECK_EQ(pv_fe_bind_decode(&m, &d), PV_OK);
  for (uint16_t i = 0; i < 5; i++) {
    f = -9;
    CHECK_EQ(pv_fe_bind_result_format(&d, 5, i, &f), PV_OK);
    CHECK_EQ(f, 1);
  }

  build_bind(&b, 0, 3, res);
  m = msg_of('B', &b);
  CHECK_EQ(pv_fe_bind_decode(&m, &d), PV_OK);
  for (uint16_t i = 0; i < 3; i++) {
    CHECK_EQ(pv_fe_bind_result_format(&d, 3, i, &f), PV_OK);
    CHECK_EQ(f, res[i]);
  }
  /* Three codes for two or four columns. */
  CHECK_EQ(pv_fe_bind_result_format(&d, 2, 0, &f), PV_EPROTO);
  CHECK_EQ(pv_fe_bind_result_format(&d, 4, 0, &f), PV_EPROTO);

  const uint16_t bad[2] = {0, 2};
  build_bind(&b, 0, 2, bad);
  m = msg_of('B', &b);
  CHECK_EQ(pv_fe_bind_decode(&m, &d), PV_OK);
  CHECK_EQ(pv_fe_bind_result_format(&d, 2, 0, &f), PV_OK);
  CHECK_EQ(pv_fe_bind_result_format(&d, 2, 1, &f), PV_EPROTO);
  const uint16_t neg[1] = {0xffff};
  build_bind(&b, 0, 1, neg);
  m = msg_of('B', &b);
  CHECK_EQ(pv_fe_bind_decode(&m, &d), PV_OK);
  CHECK_EQ(pv_fe_bind_result_format(&d, 1, 0, &f), PV_EPROTO);
}

static void test_describe_close(void) {
  buf_t b = {.n = 0};
  put8(&b, 'S');
  putstr(&b, "stmt_7");
  pv_msg_t m = msg_of('D', &b);
  pv_fe_target_t t;
  CHECK_EQ(pv_fe_describe_decode(&m, &t), PV_OK);
  CHECK_EQ(t.kind, 'S');
  CHECK_STR(t.name, "stmt_7");
  b.b[0] = 'P';
  CHECK_EQ(pv_fe_close_decode(&m, &t), PV_OK);
  CHECK_EQ(t.kind, 'P');
  check_truncations(dec_describe, 'D', &b);
  check_truncations(dec_close, 'C', &b);
  b.b[0] = 'X';
  CHECK_EQ(run_on_copy(dec_describe, 'D', b.b, b.n), PV_EPROTO);
  CHECK_EQ(run_on_copy(dec_close, 'C', b.b, b.n), PV_EPROTO);
  b.b[0] = 'S';
  put8(&b, 0);
  CHECK_EQ(run_on_copy(dec_describe, 'D', b.b, b.n), PV_EPROTO);
}

static void test_describe_encode(void) {
  uint8_t out[64];
  int n = pv_fe_describe_encode(out, sizeof out, 'S', "s42");
  CHECK_EQ(n, 1 + 4 + 1 + 4);
  pv_msg_t m;
  CHECK_EQ(pv_frame_parse(out, (size_t)n, 1024, &m), n);
  CHECK_EQ(m.type, PV_FE_DESCRIBE);
  pv_fe_target_t t;
  CHECK_EQ(pv_fe_describe_decode(&m, &t), PV_OK);
  CHECK_EQ(t.kind, 'S');
  CHECK_STR(t.name, "s42");
  n = pv_fe_describe_encode(out, sizeof out, 'P', "");
  CHECK_EQ(n, 7);
  CHECK_EQ(pv_frame_parse(out, (size_t)n, 1024, &m), n);
  CHECK_EQ(pv_fe_describe_decode(&m, &t), PV_OK);
  CHECK_EQ(t.kind, 'P');
  CHECK_STR(t.name, "");
  for (size_t cap = 0; cap < 10; cap++)
    CHECK_EQ(pv_fe_describe_encode(out, cap, 'S', "s42"), PV_ELIMIT);
  CHECK_EQ(pv_fe_describe_encode(out, 10, 'S', "s42"), 10);
  CHECK_EQ(pv_fe_describe_encode(out, sizeof out, 'Q', "x"), PV_EINVAL);
}

static void test_execute(void) {
  const struct {
    uint32_t raw, want;
  } cases[] = {{0, 0}, {10, 10}, {0xffffffffu, 0}, {0x7fffffffu, 0x7fffffffu}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    buf_t b = {.n = 0};
    putstr(&b, "portal");
    put32(&b, cases[i].raw);
    pv_msg_t m = msg_of('E', &b);
    pv_fe_execute_t e;
    CHECK_EQ(pv_fe_execute_decode(&m, &e), PV_OK);
    CHECK_STR(e.portal, "portal");
    CHECK_EQ(e.max_rows, cases[i].want);
    check_truncations(dec_execute, 'E', &b);
    put8(&b, 0);
    CHECK_EQ(run_on_copy(dec_execute, 'E', b.b, b.n), PV_EPROTO);
  }
}

/* ---- backend ---- */

static void put_field(buf_t *b, const char *name, uint32_t table, uint16_t att,
                      uint32_t type, uint16_t typlen, uint32_t typmod,
                      uint16_t fmt) {
  putstr(b, name);
  put32(b, table);
  put16(b, att);
  put32(b, type);
  put16(b, typlen);
  put32(b, typmod);
  put16(b, fmt);
}

static void test_rowdesc(void) {
  buf_t b = {.n = 0};
  put16(&b, 2);
  put_field(&b, "email", 16384, 3, 25, 0xffff, 0xffffffffu, 0);
  put_field(&b, "age", 0, 0, 23, 4, 0xffffffffu, 1);
  pv_msg_t m = msg_of('T', &b);
  pv_be_field_t f[2];
  uint16_t n = 0;
  CHECK_EQ(pv_be_rowdesc_decode(&m, f, 2, &n), PV_OK);
  CHECK_EQ(n, 2);
  CHECK_STR(f[0].name, "email");
  CHECK_EQ(f[0].table_oid, 16384);
  CHECK_EQ(f[0].attnum, 3);
  CHECK_EQ(f[0].type_oid, 25);
  CHECK_EQ(f[0].typlen, -1);
  CHECK_EQ(f[0].typmod, -1);
  CHECK_EQ(f[0].format, 0);
  CHECK_STR(f[1].name, "age");
  CHECK_EQ(f[1].table_oid, 0);
  CHECK_EQ(f[1].typlen, 4);
  CHECK_EQ(f[1].format, 1);
  CHECK_EQ(pv_be_rowdesc_decode(&m, f, 1, &n), PV_ELIMIT);
  check_truncations(dec_rowdesc, 'T', &b);
  /* Trailing byte; count larger than the fields present. */
  buf_t c = b;
  put8(&c, 0);
  CHECK_EQ(run_on_copy(dec_rowdesc, 'T', c.b, c.n), PV_EPROTO);
  c = b;
  pv_put_u16(c.b, 3);
  CHECK_EQ(run_on_copy(dec_rowdesc, 'T', c.b, c.n), PV_EPROTO);
  c = b;
  pv_put_u16(c.b, 1);
  CHECK_EQ(run_on_copy(dec_rowdesc, 'T', c.b, c.n), PV_EPROTO);
  /* A format code other than 0/1. */
  c = b;
  pv_put_u16(c.b + c.n - 2, 2);
  CHECK_EQ(run_on_copy(dec_rowdesc, 'T', c.b, c.n), PV_EPROTO);
  /* Zero columns. */
  c.n = 0;
  put16(&c, 0);
  m = msg_of('T', &c);
  CHECK_EQ(pv_be_rowdesc_decode(&m, f, 0, &n), PV_OK);
  CHECK_EQ(n, 0);
}

/* DataRow: "alice@example.com", NULL, "" */
static void build_datarow(buf_t *b) {
  b->n = 0;
  put16(b, 3);
  put32(b, 17);
  putn(b, "alice@example.com", 17);
  put32(b, 0xffffffffu);
  put32(b, 0);
}

static void test_datarow(void) {
  buf_t b;
  build_datarow(&b);
  pv_msg_t m = msg_of('D', &b);
  pv_be_datarow_iter_t it;
  const uint8_t *v;
  int32_t len;
  CHECK_EQ(pv_be_datarow_begin(&m, &it), PV_OK);
  CHECK_EQ(it.nfields, 3);
  CHECK_EQ(pv_be_datarow_next(&it, &v, &len), 1);
  CHECK_EQ(len, 17);
  CHECK(v == b.b + 6);
  CHECK(memcmp(v, "alice@example.com", 17) == 0);
  CHECK_EQ(pv_be_datarow_next(&it, &v, &len), 1);
  CHECK_EQ(len, -1);
  CHECK(v == NULL);
  CHECK_EQ(pv_be_datarow_next(&it, &v, &len), 1);
  CHECK_EQ(len, 0);
  CHECK(v == b.b + b.n);
  CHECK_EQ(pv_be_datarow_next(&it, &v, &len), 0);
  CHECK_EQ(pv_be_datarow_next(&it, &v, &len), 0);
  check_truncations(dec_datarow, 'D', &b);
}

static void test_datarow_malformed(void) {
  buf_t b;
  /* Announced 4 fields, 3 present. */
  build_datarow(&b);
  pv_put_u16(b.b, 4);
  CHECK_EQ(run_on_copy(dec_datarow, 'D', b.b, b.n), PV_EPROTO);
  /* Announced 2 fields, 3 present: trailing bytes. */
  build_datarow(&b);
  pv_put_u16(b.b, 2);
  CHECK_EQ(run_on_copy(dec_datarow, 'D', b.b, b.n), PV_EPROTO);
  /* Announced 0xffff: the body cannot hold the length words. */
  build_datarow(&b);
  pv_put_u16(b.b, 0xffff);
  CHECK_EQ(run_on_copy(dec_datarow, 'D', b.b, b.n), PV_EPROTO);
  /* Negative lengths other than -1, and a length past the body. */
  uint32_t bad[] = {0xfffffffeu, 0x80000000u, 18, 0x7fffffffu, 1000};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    build_datarow(&b);
    pv_put_u32(b.b + 2, bad[i]);
    CHECK_EQ(run_on_copy(dec_datarow, 'D', b.b, b.n), PV_EPROTO);
  }
  /* Trailing byte after a well-formed row. */
  build_datarow(&b);
  put8(&b, 'x');
  CHECK_EQ(run_on_copy(dec_datarow, 'D', b.b, b.n), PV_EPROTO);
  /* After an error the iterator keeps failing. */
  build_datarow(&b);
  pv_put_u32(b.b + 2, 0xfffffffeu);
  pv_msg_t m = msg_of('D', &b);
  pv_be_datarow_iter_t it;
  const uint8_t *v;
  int32_t len;
  CHECK_EQ(pv_be_datarow_begin(&m, &it), PV_OK);
  CHECK_EQ(pv_be_datarow_next(&it, &v, &len), PV_EPROTO);
  CHECK_EQ(pv_be_datarow_next(&it, &v, &len), PV_EPROTO);
  /* Zero fields, empty body. */
  b.n = 0;
  put16(&b, 0);
  CHECK_EQ(run_on_copy(dec_datarow, 'D', b.b, b.n), 0);
  CHECK_EQ(run_on_copy(dec_datarow, 'D', b.b, 0), PV_EPROTO);
}

static void build_error(buf_t *b, const char *sqlstate) {
  b->n = 0;
  put8(b, 'S');
  putstr(b, "ERROR");
  put8(b, 'V');
  putstr(b, "ERROR");
  if (sqlstate) {
    put8(b, 'C');
    putstr(b, sqlstate);
  }
  put8(b, 'M');
  putstr(b, "duplicate key value violates unique constraint");
  put8(b, 'D');
  putstr(b, "Key (email)=(alice@example.com) already exists.");
  put8(b, 0);
}

static void test_errfields(void) {
  buf_t b;
  build_error(&b, "23505");
  pv_msg_t m = msg_of('E', &b);
  pv_be_errfield_iter_t it;
  uint8_t code;
  const char *v;
  const char want_codes[] = "SVCMD";
  pv_be_errfield_begin(&m, &it);
  for (int i = 0; i < 5; i++) {
    CHECK_EQ(pv_be_errfield_next(&it, &code, &v), 1);
    CHECK_EQ(code, want_codes[i]);
  }
  CHECK_STR(v, "Key (email)=(alice@example.com) already exists.");
  CHECK_EQ(pv_be_errfield_next(&it, &code, &v), 0);
  CHECK_EQ(pv_be_errfield_next(&it, &code, &v), 0);
  char s[6] = "xxxxx";
  CHECK_EQ(pv_be_error_sqlstate(&m, s), PV_OK);
  CHECK_STR(s, "23505");
  check_truncations(dec_errfields, 'E', &b);
  check_truncations(dec_sqlstate, 'E', &b);
  /* Trailing byte after the terminator. */
  put8(&b, 'x');
  CHECK_EQ(run_on_copy(dec_errfields, 'E', b.b, b.n), PV_EPROTO);
  CHECK_EQ(run_on_copy(dec_sqlstate, 'E', b.b, b.n), PV_EPROTO);
}

static void test_sqlstate(void) {
  buf_t b;
  pv_msg_t m;
  char s[6];
  build_error(&b, NULL);
  m = msg_of('E', &b);
  CHECK_EQ(pv_be_error_sqlstate(&m, s), PV_ENOENT);
  const char *bad[] = {"2350", "235050", "", "2350a", "23 05"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    build_error(&b, bad[i]);
    m = msg_of('E', &b);
    CHECK_EQ(pv_be_error_sqlstate(&m, s), PV_EPROTO);
  }
  /* Only the terminator: no fields, no SQLSTATE. */
  b.n = 0;
  put8(&b, 0);
  m = msg_of('E', &b);
  CHECK_EQ(pv_be_error_sqlstate(&m, s), PV_ENOENT);
  CHECK_EQ(run_on_copy(dec_sqlstate, 'E', b.b, 0), PV_EPROTO);
  /* A field whose value runs to the end without a NUL. */
  b.n = 0;
  put8(&b, 'C');
  putn(&b, "23505", 5);
  CHECK_EQ(run_on_copy(dec_sqlstate, 'E', b.b, b.n), PV_EPROTO);
}

static void test_error_encode(void) {
  uint8_t out[256];
  int n = pv_be_error_encode(out, sizeof out, "FATAL", "42501",
                             "purpose \"x\" not allowed");
  int want = 5 + 7 + 7 + 7 + 25 + 1;
  CHECK_EQ(n, want);
  pv_msg_t m;
  CHECK_EQ(pv_frame_parse(out, (size_t)n, 1024, &m), n);
  CHECK_EQ(m.type, PV_BE_ERROR);
  char s[6];
  CHECK_EQ(pv_be_error_sqlstate(&m, s), PV_OK);
  CHECK_STR(s, "42501");
  pv_be_errfield_iter_t it;
  uint8_t code;
  const char *v;
  pv_be_errfield_begin(&m, &it);
  CHECK_EQ(pv_be_errfield_next(&it, &code, &v), 1);
  CHECK_EQ(code, 'S');
  CHECK_STR(v, "FATAL");
  CHECK_EQ(pv_be_errfield_next(&it, &code, &v), 1);
  CHECK_EQ(code, 'V');
  CHECK_EQ(pv_be_errfield_next(&it, &code, &v), 1);
  CHECK_EQ(code, 'C');
  CHECK_EQ(pv_be_errfield_next(&it, &code, &v), 1);
  CHECK_EQ(code, 'M');
  CHECK_STR(v, "purpose \"x\" not allowed");
  CHECK_EQ(pv_be_errfield_next(&it, &code, &v), 0);
  for (size_t cap = 0; cap < (size_t)want; cap++)
    CHECK_EQ(pv_be_error_encode(out, cap, "FATAL", "42501",
                                "purpose \"x\" not allowed"),
             PV_ELIMIT);
  CHECK_EQ(pv_be_error_encode(out, sizeof out, "ERROR", "4250", "m"),
           PV_EINVAL);
  CHECK_EQ(pv_be_error_encode(out, sizeof out, "ERROR", "42501", NULL),
           PV_EINVAL);
}

static void test_command_complete_ready(void) {
  buf_t b = {.n = 0};
  putstr(&b, "INSERT 0 1");
  pv_msg_t m = msg_of('C', &b);
  const char *tag;
  CHECK_EQ(pv_be_command_complete_decode(&m, &tag), PV_OK);
  CHECK_STR(tag, "INSERT 0 1");
  check_truncations(dec_command_complete, 'C', &b);
  put8(&b, 'x');
  CHECK_EQ(run_on_copy(dec_command_complete, 'C', b.b, b.n), PV_EPROTO);

  const char ok[] = "ITE";
  for (int i = 0; i < 3; i++) {
    uint8_t st = 0;
    pv_msg_t r = {'Z', 1, (const uint8_t *)ok + i};
    CHECK_EQ(pv_be_ready_decode(&r, &st), PV_OK);
    CHECK_EQ(st, ok[i]);
  }
  CHECK_EQ(run_on_copy(dec_ready, 'Z', (const uint8_t *)"X", 1), PV_EPROTO);
  CHECK_EQ(run_on_copy(dec_ready, 'Z', (const uint8_t *)"II", 2), PV_EPROTO);
  CHECK_EQ(run_on_copy(dec_ready, 'Z', (const uint8_t *)"", 0), PV_EPROTO);
}

static void test_auth(void) {
  buf_t b = {.n = 0};
  uint32_t t = 99;
  pv_msg_t m;
  put32(&b, 0);
  m = msg_of('R', &b);
  CHECK_EQ(pv_be_auth_decode(&m, &t), PV_OK);
  CHECK_EQ(t, 0);
  check_truncations(dec_auth, 'R', &b);
  put8(&b, 0);
  CHECK_EQ(run_on_copy(dec_auth, 'R', b.b, b.n), PV_EPROTO);

  b.n = 0;
  put32(&b, 5);
  putn(&b, "salt", 4);
  m = msg_of('R', &b);
  CHECK_EQ(pv_be_auth_decode(&m, &t), PV_OK);
  CHECK_EQ(t, 5);
  check_truncations(dec_auth, 'R', &b);

  b.n = 0;
  put32(&b, 10);
  putstr(&b, "SCRAM-SHA-256-PLUS");
  putstr(&b, "SCRAM-SHA-256");
  put8(&b, 0);
  m = msg_of('R', &b);
  CHECK_EQ(pv_be_auth_decode(&m, &t), PV_OK);
  CHECK_EQ(t, 10);
  check_truncations(dec_auth, 'R', &b);
  put8(&b, 'x');
  CHECK_EQ(run_on_copy(dec_auth, 'R', b.b, b.n), PV_EPROTO);

  /* SASL continue/final carry opaque data of any length. */
  b.n = 0;
  put32(&b, 11);
  CHECK_EQ(run_on_copy(dec_auth, 'R', b.b, b.n), PV_OK);
  putn(&b, "r=abc,s=xyz,i=4096", 18);
  CHECK_EQ(run_on_copy(dec_auth, 'R', b.b, b.n), PV_OK);
  b.n = 0;
  put32(&b, 99); /* unknown subtype */
  CHECK_EQ(run_on_copy(dec_auth, 'R', b.b, b.n), PV_EPROTO);
}

static void test_key_data(void) {
  size_t lens[] = {4, 32, 256};
  for (size_t i = 0; i < 3; i++) {
    buf_t b = {.n = 0};
    put32(&b, 31337);
    for (size_t k = 0; k < lens[i]; k++)
      put8(&b, (uint8_t)k);
    pv_msg_t m = msg_of('K', &b);
    uint32_t pid;
    const uint8_t *key;
    size_t len;
    CHECK_EQ(pv_be_key_data_decode(&m, &pid, &key, &len), PV_OK);
    CHECK_EQ(pid, 31337);
    CHECK_EQ(len, lens[i]);
    CHECK(key == b.b + 4);
    for (size_t k = 0; k < 8; k++)
      CHECK_EQ(run_on_copy(dec_key_data, 'K', b.b, k), PV_EPROTO);
  }
  buf_t b = {.n = 0};
  put32(&b, 1);
  for (size_t k = 0; k < 257; k++)
    put8(&b, 0);
  CHECK_EQ(run_on_copy(dec_key_data, 'K', b.b, b.n), PV_EPROTO);
  CHECK_EQ(run_on_copy(dec_key_data, 'K', b.b, b.n - 1), PV_OK);
}

static void test_copy_response(void) {
  buf_t b = {.n = 0};
  put8(&b, 1);
  put16(&b, 3);
  put16(&b, 1);
  put16(&b, 0);
  put16(&b, 1);
  pv_msg_t m = msg_of('H', &b);
  uint8_t f = 9;
  uint16_t n = 0;
  const uint8_t *cols = NULL;
  CHECK_EQ(pv_be_copy_response_decode(&m, &f, &n, &cols), PV_OK);
  CHECK_EQ(f, 1);
  CHECK_EQ(n, 3);
  CHECK(cols == b.b + 3);
  CHECK_EQ(pv_get_u16(cols + 2), 0);
  check_truncations(dec_copy, 'H', &b);
  /* Text COPY with a binary column; overall format 2; column code 2. */
  buf_t c = b;
  c.b[0] = 0;
  CHECK_EQ(run_on_copy(dec_copy, 'H', c.b, c.n), PV_EPROTO);
  c.b[0] = 2;
  CHECK_EQ(run_on_copy(dec_copy, 'H', c.b, c.n), PV_EPROTO);
  c = b;
  pv_put_u16(c.b + 5, 2);
  CHECK_EQ(run_on_copy(dec_copy, 'H', c.b, c.n), PV_EPROTO);
  /* Count mismatch either way. */
  c = b;
  pv_put_u16(c.b + 1, 4);
  CHECK_EQ(run_on_copy(dec_copy, 'H', c.b, c.n), PV_EPROTO);
  pv_put_u16(c.b + 1, 2);
  CHECK_EQ(run_on_copy(dec_copy, 'H', c.b, c.n), PV_EPROTO);
  /* Plain text COPY of two columns. */
  c.n = 0;
  put8(&c, 0);
  put16(&c, 2);
  put16(&c, 0);
  put16(&c, 0);
  CHECK_EQ(run_on_copy(dec_copy, 'G', c.b, c.n), PV_OK);
}

int main(void) {
  RUN(test_query);
  RUN(test_parse);
  RUN(test_bind);
  RUN(test_bind_bad_values);
  RUN(test_bind_result_format);
  RUN(test_describe_close);
  RUN(test_describe_encode);
  RUN(test_execute);
  RUN(test_rowdesc);
  RUN(test_datarow);
  RUN(test_datarow_malformed);
  RUN(test_errfields);
  RUN(test_sqlstate);
  RUN(test_error_encode);
  RUN(test_command_complete_ready);
  RUN(test_auth);
  RUN(test_key_data);
  RUN(test_copy_response);
  return check_exit("test_pg_msg");
}
