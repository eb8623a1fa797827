/* Unit tests of the literal-free statement form used by the guard cache. */
#include <string.h>

#include "check.h"
#include "pgveil/sql_normalize.h"

static const char *norm(const char *sql, int *rc) {
  static char out[512];
  size_t n = 0;
  *rc = pv_sql_normalize(sql, strlen(sql), out, sizeof out - 1, &n);
  out[*rc == 1 ? n : 0] = 0;
  for (char *p = out; *p; p++) /* show the marker as '?' */
    if (*p == PV_SQL_LITERAL)
      *p = '?';
  return out;
}

static void expect(const char *sql, const char *want) {
  int rc;
  const char *got = norm(sql, &rc);
  CHECK_EQ(rc, 1);
  CHECK_STR(got, want);
}

static void refuse(const char *sql) {
  int rc;
  norm(sql, &rc);
  if (rc != 0)
    fprintf(stderr, "should not normalize: %s\n", sql);
  CHECK_EQ(rc, 0);
}

static void test_literals(void) {
  expect("SELECT id FROM customers WHERE id = 42",
         "SELECT id FROM customers WHERE id = ?");
  expect("SELECT a FROM t WHERE b = 'x''y' AND c > 1.5e-3",
         "SELECT a FROM t WHERE b = ? AND c > ?");
  expect("SELECT t1.c2 FROM t1 WHERE c3 IN (1,2,3)",
         "SELECT t1.c2 FROM t1 WHERE c3 IN (?,?,?)");
  expect("SELECT \"we'ird\"\"x\" FROM t -- it's\nWHERE a = '1'",
         "SELECT \"we'ird\"\"x\" FROM t -- it's\nWHERE a = ?");
  expect("SELECT $1::int, 7 /* c'mt */", "SELECT $1::int, ? /* c'mt */");
  expect("SELECT '2020-01-01'::date", "SELECT ?::date");
  /* inside a plain string (standard conforming) bytes are just data */
  expect("SELECT 'caf\xc3\xa9', 'a\\'", "SELECT ?, ?");
}

static void test_refused(void) {
  refuse("SELECT E'\\'' FROM t");
  refuse("SELECT e'abc'");
  refuse("SELECT U&'d\\0061t' FROM t");
  refuse("SELECT B'101', X'1F'");
  refuse("SELECT N'abc'");
  refuse("SELECT $$a$$");
  refuse("SELECT $tag$ ' $tag$");
  refuse("SELECT 'a\\' , ssn , '");
  refuse("SELECT 1 /* a /* b */ c */");
  refuse("SELECT 'unterminated");
  refuse("SELECT \"unterminated");
  refuse("SELECT 12abc");
  refuse("SELECT 1.2.3");
  refuse("SELECT caf\xc3\xa9 FROM t WHERE a = 1"); /* non-ASCII code */
  refuse("SELECT id FROM customers"); /* no literal: nothing to share */
}

static void test_distinct_shapes_stay_distinct(void) {
  int rc;
  char a[256], b[256];
  strcpy(a, norm("SELECT id FROM customers WHERE id = 1", &rc));
  strcpy(b, norm("SELECT id FROM customers WHERE ssn = '1'", &rc));
  CHECK(strcmp(a, b) != 0);
  /* '?' the operator and a constant stay apart */
  strcpy(a, norm("SELECT x ? 1", &rc));
  size_t na = 0, nb = 0;
  char ra[64], rb[64];
  CHECK_EQ(pv_sql_normalize("SELECT x ? 1", 12, ra, sizeof ra, &na), 1);
  CHECK_EQ(pv_sql_normalize("SELECT x 1 ?", 12, rb, sizeof rb, &nb), 1);
  CHECK(na != nb || memcmp(ra, rb, na) != 0);
  strcpy(a, norm("SELECT 'x' || 'y' FROM t", &rc));
  strcpy(b, norm("SELECT 'x' , ssn FROM t", &rc));
  CHECK(strcmp(a, b) != 0);
  char small[4];
  size_t n;
  CHECK_EQ(pv_sql_normalize("SELECT 1", 8, small, sizeof small, &n), PV_ELIMIT);
}

int main(void) {
  RUN(test_literals);
  RUN(test_refused);
  RUN(test_distinct_shapes_stay_distinct);
  return check_exit("test_sql_normalize");
}
