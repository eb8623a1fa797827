/* Unit tests of pv_options_find. */
#include "check.h"
#include "pgveil/pg_options.h"

static void test_find(void) {
  char v[64];
  CHECK_EQ(pv_options_find("-c pgveil.purpose=marketing", "pgveil.purpose", v,
                           sizeof v),
           1);
  CHECK_STR(v, "marketing");
  CHECK_EQ(pv_options_find("-c search_path=a -cpgveil.purpose=support",
                           "pgveil.purpose", v, sizeof v),
           1);
  CHECK_STR(v, "support");
  CHECK_EQ(pv_options_find("--PGVEIL.PURPOSE=x -c pgveil.purpose=y",
                           "pgveil.purpose", v, sizeof v),
           1);
  CHECK_STR(v, "y"); /* the last one wins, as in PostgreSQL */
  CHECK_EQ(pv_options_find("-c application_name=a\\ b", "application_name", v,
                           sizeof v),
           1);
  CHECK_STR(v, "a b");
  CHECK_EQ(pv_options_find("-c geqo=off", "pgveil.purpose", v, sizeof v), 0);
  CHECK_EQ(pv_options_find("", "pgveil.purpose", v, sizeof v), 0);
  CHECK_EQ(pv_options_find("-c", "pgveil.purpose", v, sizeof v), PV_ESYNTAX);
  CHECK_EQ(
      pv_options_find("-c pgveil.purpose=0123456789", "pgveil.purpose", v, 4),
      PV_ELIMIT);
}

int main(void) {
  RUN(test_find);
  return check_exit("test_pg_options");
}
