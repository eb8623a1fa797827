/* Unit tests for proxy/row_plan.c: recorded conversations, built as bytes
 * in both directions and fed in stream order, asserting which plan each
 * DataRow gets, what is injected and swallowed, and that the FIFO drains. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "pgveil/pg_msg_backend.h"
#include "pgveil/pg_msg_frontend.h"
#include "pgveil/row_plan.h"

/* ---- message builders ---------------------------------------------------- */

typedef struct {
  uint8_t type;
  uint8_t b[8192];
  size_t n;
} mb_t;

static void put8(mb_t *b, uint8_t v) { b->b[b->n++] = v; }
static void put16(mb_t *b, uint16_t v) {
  pv_put_u16(b->b + b->n, v);
  b->n += 2;
}
static void put32(mb_t *b, uint32_t v) {
  pv_put_u32(b->b + b->n, v);
  b->n += 4;
}
static void putstr(mb_t *b, const char *s) {
  size_t l = strlen(s) + 1;
  memcpy(b->b + b->n, s, l);
  b->n += l;
}
static mb_t *mb(uint8_t type) {
  static mb_t m;
  m.type = type;
  m.n = 0;
  return &m;
}

static pv_tracker_t *T;
static pv_fe_effect_t FE;
static pv_be_effect_t BE;

static const pv_tracker_limits_t LIM = {
    .max_statements = 100,
    .max_portals = 100,
    .max_pending = 1000,
    .max_columns = 64,
};

static int fe(const mb_t *b) {
  pv_msg_t m = {b->type, (uint32_t)b->n, b->b};
  return pv_tracker_frontend(T, &m, &FE);
}
static int be(const mb_t *b) {
  pv_msg_t m = {b->type, (uint32_t)b->n, b->b};
  return pv_tracker_backend(T, &m, &BE);
}

/* Frontend. */
static int fe_query(const char *sql) {
  mb_t *b = mb('Q');
  putstr(b, sql);
  return fe(b);
}
static int fe_parse(const char *name, const char *sql) {
  mb_t *b = mb('P');
  putstr(b, name);
  putstr(b, sql);
  put16(b, 0);
  return fe(b);
}
/* Bind with no parameters and nfmt result format codes fmts[]. */
static int fe_bind(const char *portal, const char *stmt, uint16_t nfmt,
                   const int16_t *fmts) {
  mb_t *b = mb('B');
  putstr(b, portal);
  putstr(b, stmt);
  put16(b, 0);
  put16(b, 0);
  put16(b, nfmt);
  for (uint16_t i = 0; i < nfmt; i++)
    put16(b, (uint16_t)fmts[i]);
  return fe(b);
}
static int fe_target(uint8_t type, uint8_t kind, const char *name) {
  mb_t *b = mb(type);
  put8(b, kind);
  putstr(b, name);
  return fe(b);
}
static int fe_describe(uint8_t kind, const char *name) {
  return fe_target('D', kind, name);
}
static int fe_close(uint8_t kind, const char *name) {
  return fe_target('C', kind, name);
}
static int fe_execute(const char *portal, uint32_t max_rows) {
  mb_t *b = mb('E');
  putstr(b, portal);
  put32(b, max_rows);
  return fe(b);
}
static int fe_type(uint8_t type) { return fe(mb(type)); }

/* Backend. */
typedef struct {
  const char *name;
  uint32_t table_oid;
  int16_t attnum;
  uint32_t type_oid;
  int16_t format;
} col_t;

static int be_rowdesc(uint16_t n, const col_t *c) {
  mb_t *b = mb('T');
  put16(b, n);
  for (uint16_t i = 0; i < n; i++) {
    putstr(b, c[i].name);
    put32(b, c[i].table_oid);
    put16(b, (uint16_t)c[i].attnum);
    put32(b, c[i].type_oid);
    put16(b, (uint16_t)-1);
    put32(b, (uint32_t)-1);
    put16(b, (uint16_t)c[i].format);
  }
  return be(b);
}
/* A DataRow of n one-byte fields. */
static int be_datarow(uint16_t n) {
  mb_t *b = mb('D');
  put16(b, n);
  for (uint16_t i = 0; i < n; i++) {
    put32(b, 1);
    put8(b, 'x');
  }
  return be(b);
}
static int be_complete(const char *tag) {
  mb_t *b = mb('C');
  putstr(b, tag);
  return be(b);
}
static int be_ready(uint8_t st) {
  mb_t *b = mb('Z');
  put8(b, st);
  return be(b);
}
static int be_error(void) {
  mb_t *b = mb('E');
  put8(b, 'S');
  putstr(b, "ERROR");
  put8(b, 'C');
  putstr(b, "42P01");
  put8(b, 'M');
  putstr(b, "boom");
  put8(b, 0);
  return be(b);
}
static int be_paramdesc(void) {
  mb_t *b = mb('t');
  put16(b, 0);
  return be(b);
}
static int be_copy_response(uint8_t type, uint8_t fmt, uint16_t ncols) {
  mb_t *b = mb(type);
  put8(b, fmt);
  put16(b, ncols);
  for (uint16_t i = 0; i < ncols; i++)
    put16(b, fmt);
  return be(b);
}
static int be_copy_data(const char *line) {
  mb_t *b = mb('d');
  memcpy(b->b, line, strlen(line));
  b->n = strlen(line);
  return be(b);
}
static int be_type(uint8_t type) { return be(mb(type)); }

/* ---- assertions ---------------------------------------------------------- */

static void start(void) {
  T = pv_tracker_new(&LIM);
  CHECK(T != NULL);
}
static void finish(void) {
  pv_tracker_free(T);
  T = NULL;
}

/* Feeds one DataRow of n fields and checks it gets a plan whose first
 * column is col0 (NULL: no plan). Returns the plan for further checks. */
static const pv_plan_t *row(uint16_t n, const char *col0) {
  CHECK_EQ(be_datarow(n), PV_OK);
  CHECK_EQ(BE.rows, PV_ROWS_DATAROW);
  CHECK(!BE.swallow);
  if (!col0) {
    CHECK(BE.plan == NULL);
    return NULL;
  }
  CHECK(BE.plan != NULL);
  if (!BE.plan)
    return NULL;
  CHECK_EQ(BE.plan->ncols, n);
  CHECK_STR(BE.plan->cols[0].name, col0);
  return BE.plan;
}

/* Checks the last frontend effect injected Describe('P', portal). */
static void check_injected(const char *portal) {
  CHECK(FE.inject_len > 0);
  if (!FE.inject_len)
    return;
  pv_msg_t m;
  CHECK_EQ(pv_frame_parse(FE.inject, FE.inject_len, 1 << 20, &m),
           (int)FE.inject_len);
  CHECK_EQ(m.type, 'D');
  pv_fe_target_t d;
  CHECK_EQ(pv_fe_describe_decode(&m, &d), PV_OK);
  CHECK_EQ(d.kind, 'P');
  CHECK_STR(d.name, portal);
}

static const col_t COL_A[] = {{"a", 16384, 1, 23, 0}};
static const col_t COL_BC[] = {{"b", 16384, 2, 25, 0}, {"c", 16384, 3, 25, 0}};
static const col_t COL_ID_EMAIL[] = {{"id", 16400, 1, 23, 0},
                                     {"email", 16400, 2, 25, 0}};

/* ---- 1. simple Query with three statements ------------------------------- */

static void test_simple_multi(void) {
  start();
  CHECK_EQ(fe_query("SELECT a FROM t; SELECT b, c FROM t; UPDATE t SET a=1"),
           PV_OK);
  CHECK(FE.inject_len == 0);
  CHECK_EQ(pv_tracker_pending(T), 1);
  CHECK_EQ(be_rowdesc(1, COL_A), PV_OK);
  CHECK(!BE.swallow);
  const pv_plan_t *p1 = row(1, "a");
  CHECK_EQ(BE.stmt_index, 0);
  CHECK(p1 && p1->cols[0].table_oid == 16384 && p1->cols[0].type_oid == 23);
  uint64_t id1 = p1 ? p1->id : 0;
  row(1, "a");
  CHECK_EQ(BE.stmt_index, 0);
  CHECK_EQ(be_complete("SELECT 2"), PV_OK);
  CHECK_EQ(be_rowdesc(2, COL_BC), PV_OK);
  const pv_plan_t *p2 = row(2, "b");
  CHECK_EQ(BE.stmt_index, 1);
  CHECK(p2 && p2->id != id1);
  CHECK_STR(p2 ? p2->cols[1].name : NULL, "c");
  CHECK_EQ(be_complete("SELECT 1"), PV_OK);
  /* UPDATE: no RowDescription; a stray row has no plan. */
  row(2, NULL);
  CHECK_EQ(BE.stmt_index, 2);
  CHECK_EQ(be_complete("UPDATE 3"), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 1);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);
  CHECK_EQ(pv_tracker_tx_status(T), 'I');
  /* EmptyQueryResponse also counts as a statement. */
  CHECK_EQ(fe_query(";SELECT a"), PV_OK);
  CHECK_EQ(be_type('I'), PV_OK);
  CHECK_EQ(be_rowdesc(1, COL_A), PV_OK);
  row(1, "a");
  CHECK_EQ(BE.stmt_index, 1);
  CHECK_EQ(be_complete("SELECT 1"), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);
  finish();
}

/* ---- 2. describe once, execute many (pgjdbc) ----------------------------- */

static void execute_binary_batch(uint64_t *plan_id) {
  static const int16_t bin[] = {1};
  CHECK_EQ(fe_bind("", "S_1", 1, bin), PV_OK);
  CHECK_EQ(fe_execute("", 0), PV_OK);
  CHECK(FE.inject_len == 0); /* the statement's shape is known */
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 3);
  CHECK_EQ(be_type('2'), PV_OK);
  for (int i = 0; i < 3; i++) {
    const pv_plan_t *p = row(2, "id");
    if (!p)
      continue;
    CHECK_EQ(p->cols[0].format, 1);
    CHECK_EQ(p->cols[1].format, 1);
    CHECK_STR(p->cols[1].name, "email");
    CHECK_EQ(p->cols[1].table_oid, 16400);
    CHECK_EQ(p->cols[1].attnum, 2);
    *plan_id = p->id;
  }
  CHECK_EQ(be_complete("SELECT 3"), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);
}

static void test_describe_once_execute_many(void) {
  start();
  CHECK_EQ(fe_parse("S_1", "SELECT id, email FROM customers WHERE id > $1"),
           PV_OK);
  CHECK_EQ(fe_describe('S', "S_1"), PV_OK);
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 3);
  CHECK_EQ(be_type('1'), PV_OK);
  CHECK_EQ(be_paramdesc(), PV_OK);
  CHECK_EQ(be_rowdesc(2, COL_ID_EMAIL), PV_OK);
  CHECK(!BE.swallow);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_statements(T), 1);
  uint64_t id1 = 0, id2 = 0;
  execute_binary_batch(&id1);
  execute_binary_batch(&id2);
  /* The same formats reuse one plan: per-plan work is done once. */
  CHECK(id1 != 0 && id1 == id2);
  /* A text Bind gets text columns. */
  CHECK_EQ(fe_bind("", "S_1", 0, NULL), PV_OK);
  CHECK_EQ(fe_execute("", 0), PV_OK);
  CHECK(FE.inject_len == 0);
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(be_type('2'), PV_OK);
  const pv_plan_t *p = row(2, "id");
  CHECK(p && p->cols[0].format == 0 && p->cols[1].format == 0);
  CHECK_EQ(be_complete("SELECT 1"), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);
  CHECK_EQ(pv_tracker_portals(T), 0); /* gone with the transaction */
  finish();
}

/* ---- 3. injection of Describe(P) ----------------------------------------- */

static void test_inject(void) {
  start();
  CHECK_EQ(fe_parse("", "SELECT id, email FROM customers"), PV_OK);
  CHECK(FE.inject_len == 0);
  CHECK_EQ(fe_bind("", "", 0, NULL), PV_OK);
  CHECK_EQ(fe_execute("", 0), PV_OK);
  check_injected("");
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 5); /* Parse Bind Describe Execute Sync */
  CHECK_EQ(be_type('1'), PV_OK);
  CHECK(!BE.swallow);
  CHECK_EQ(be_type('2'), PV_OK);
  CHECK(!BE.swallow);
  col_t c[2] = {COL_ID_EMAIL[0], COL_ID_EMAIL[1]};
  CHECK_EQ(be_rowdesc(2, c), PV_OK);
  CHECK(BE.swallow);
  row(2, "id");
  row(2, "id");
  CHECK_EQ(be_complete("SELECT 2"), PV_OK);
  CHECK(!BE.swallow);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);

  /* A statement without rows: NoData is swallowed, nothing else. */
  CHECK_EQ(fe_parse("", "UPDATE customers SET x = 1"), PV_OK);
  CHECK_EQ(fe_bind("", "", 0, NULL), PV_OK);
  CHECK_EQ(fe_execute("", 0), PV_OK);
  check_injected("");
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(be_type('1'), PV_OK);
  CHECK_EQ(be_type('2'), PV_OK);
  CHECK_EQ(be_type('n'), PV_OK);
  CHECK(BE.swallow);
  CHECK_EQ(be_complete("UPDATE 4"), PV_OK);
  CHECK(!BE.swallow);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);

  /* The injected Describe fails: its error is forwarded, Execute dropped. */
  CHECK_EQ(fe_execute("nosuch", 0), PV_OK);
  check_injected("nosuch");
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(be_error(), PV_OK);
  CHECK(!BE.swallow);
  CHECK_EQ(pv_tracker_pending(T), 1);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);
  finish();
}

/* ---- 4. pipelined batch -------------------------------------------------- */

static void test_pipeline(void) {
  static const col_t cols[5] = {{"c0", 1, 1, 23, 0},
                                {"c1", 1, 2, 23, 0},
                                {"c2", 1, 3, 23, 0},
                                {"c3", 1, 4, 23, 0},
                                {"c4", 1, 5, 23, 0}};
  start();
  char name[16];
  for (int i = 0; i < 5; i++) {
    snprintf(name, sizeof name, "s%d", i);
    CHECK_EQ(fe_parse(name, "SELECT ..."), PV_OK);
    int16_t fmt = (int16_t)(i & 1);
    CHECK_EQ(fe_bind("", name, 1, &fmt), PV_OK);
    CHECK_EQ(fe_describe('P', ""), PV_OK);
    CHECK_EQ(fe_execute("", 0), PV_OK);
    CHECK(FE.inject_len == 0);
  }
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 21);
  for (int i = 0; i < 5; i++) {
    CHECK_EQ(be_type('1'), PV_OK);
    CHECK_EQ(be_type('2'), PV_OK);
    col_t c[5];
    for (int k = 0; k <= i; k++) {
      c[k] = cols[k];
      c[k].format = (int16_t)(i & 1);
    }
    CHECK_EQ(be_rowdesc((uint16_t)(i + 1), c), PV_OK);
    CHECK(!BE.swallow);
    const pv_plan_t *p = row((uint16_t)(i + 1), "c0");
    CHECK(p && p->cols[i].format == (i & 1));
    CHECK_STR(p ? p->cols[i].name : NULL, cols[i].name);
    CHECK_EQ(be_complete("SELECT 1"), PV_OK);
  }
  CHECK_EQ(pv_tracker_pending(T), 1);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);
  CHECK_EQ(pv_tracker_statements(T), 5);
  finish();
}

/* ---- 5. row limit and PortalSuspended ------------------------------------ */

static void test_portal_suspended(void) {
  start();
  CHECK_EQ(fe_query("BEGIN"), PV_OK);
  CHECK_EQ(be_complete("BEGIN"), PV_OK);
  CHECK_EQ(be_ready('T'), PV_OK);
  CHECK_EQ(pv_tracker_tx_status(T), 'T');
  CHECK_EQ(fe_parse("S_2", "SELECT id, email FROM customers"), PV_OK);
  CHECK_EQ(fe_bind("C_1", "S_2", 0, NULL), PV_OK);
  CHECK_EQ(fe_describe('P', "C_1"), PV_OK);
  CHECK_EQ(fe_execute("C_1", 2), PV_OK);
  CHECK(FE.inject_len == 0);
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(be_type('1'), PV_OK);
  CHECK_EQ(be_type('2'), PV_OK);
  CHECK_EQ(be_rowdesc(2, COL_ID_EMAIL), PV_OK);
  const pv_plan_t *p = row(2, "id");
  uint64_t id = p ? p->id : 0;
  row(2, "id");
  CHECK_EQ(be_type('s'), PV_OK);
  CHECK_EQ(be_ready('T'), PV_OK);
  CHECK_EQ(pv_tracker_portals(T), 1);
  for (int round = 0; round < 2; round++) {
    CHECK_EQ(fe_execute("C_1", 2), PV_OK);
    CHECK(FE.inject_len == 0);
    CHECK_EQ(fe_type('S'), PV_OK);
    p = row(2, "id");
    CHECK(p && p->id == id);
    if (round == 0) {
      row(2, "id");
      CHECK_EQ(be_type('s'), PV_OK);
    } else {
      CHECK_EQ(be_complete("SELECT 1"), PV_OK);
    }
    CHECK_EQ(be_ready('T'), PV_OK);
    CHECK_EQ(pv_tracker_pending(T), 0);
  }
  /* The transaction ends: the server drops every portal. */
  CHECK_EQ(fe_query("COMMIT"), PV_OK);
  CHECK_EQ(be_complete("COMMIT"), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_portals(T), 0);
  CHECK_EQ(pv_tracker_statements(T), 1);
  /* Execute of the vanished portal: asks again rather than guess. */
  CHECK_EQ(fe_execute("C_1", 2), PV_OK);
  check_injected("C_1");
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(be_error(), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);
  finish();
}

/* ---- 6. errors ----------------------------------------------------------- */

static void test_error_pipeline(void) {
  start();
  CHECK_EQ(fe_parse("s1", "SELECT a"), PV_OK);
  CHECK_EQ(fe_bind("", "s1", 0, NULL), PV_OK);
  CHECK_EQ(fe_describe('P', ""), PV_OK);
  CHECK_EQ(fe_execute("", 0), PV_OK);
  CHECK_EQ(fe_parse("s2", "SELEC broken"), PV_OK);
  CHECK_EQ(fe_bind("", "s2", 0, NULL), PV_OK);
  CHECK_EQ(fe_describe('P', ""), PV_OK);
  CHECK_EQ(fe_execute("", 0), PV_OK);
  CHECK_EQ(fe_type('S'), PV_OK);
  /* The next batch is already on the wire before the error comes back. */
  CHECK_EQ(fe_parse("s3", "SELECT b, c"), PV_OK);
  CHECK_EQ(fe_bind("", "s3", 0, NULL), PV_OK);
  CHECK_EQ(fe_describe('P', ""), PV_OK);
  CHECK_EQ(fe_execute("", 0), PV_OK);
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 14);
  CHECK_EQ(pv_tracker_statements(T), 3);
  CHECK_EQ(be_type('1'), PV_OK);
  CHECK_EQ(be_type('2'), PV_OK);
  CHECK_EQ(be_rowdesc(1, COL_A), PV_OK);
  row(1, "a");
  CHECK_EQ(be_complete("SELECT 1"), PV_OK);
  CHECK_EQ(be_error(), PV_OK);           /* Parse s2 fails */
  CHECK_EQ(pv_tracker_pending(T), 6);    /* Sync + the whole next batch */
  CHECK_EQ(pv_tracker_statements(T), 2); /* s2 never existed */
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 5);
  CHECK_EQ(be_type('1'), PV_OK);
  CHECK_EQ(be_type('2'), PV_OK);
  CHECK_EQ(be_rowdesc(2, COL_BC), PV_OK);
  row(2, "b");
  CHECK_EQ(be_complete("SELECT 1"), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);
  finish();
}

static void test_error_flush(void) {
  start();
  CHECK_EQ(fe_parse("", "SELECT nosuch"), PV_OK);
  CHECK_EQ(fe_bind("", "", 0, NULL), PV_OK);
  CHECK_EQ(fe_describe('P', ""), PV_OK);
  CHECK_EQ(fe_execute("", 0), PV_OK);
  CHECK_EQ(fe_type('H'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 4);
  CHECK_EQ(be_error(), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);
  CHECK_EQ(pv_tracker_statements(T), 0);
  CHECK_EQ(pv_tracker_portals(T), 0);
  /* The server skips everything until Sync; so does the tracker. */
  CHECK_EQ(fe_parse("x", "SELECT 1"), PV_OK);
  CHECK_EQ(fe_bind("", "x", 0, NULL), PV_OK);
  CHECK_EQ(fe_execute("", 0), PV_OK);
  CHECK(FE.inject_len == 0);
  CHECK_EQ(fe_query("SELECT 1"), PV_OK);
  CHECK_EQ(fe_type('H'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);
  CHECK_EQ(pv_tracker_statements(T), 0);
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 1);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);
  /* Back to normal. */
  CHECK_EQ(fe_query("SELECT a"), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 1);
  CHECK_EQ(be_rowdesc(1, COL_A), PV_OK);
  row(1, "a");
  CHECK_EQ(be_complete("SELECT 1"), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);
  /* An error in a simple Query keeps the entry until ReadyForQuery. */
  CHECK_EQ(fe_query("SELECT a; SELECT 1/0; SELECT a"), PV_OK);
  CHECK_EQ(be_rowdesc(1, COL_A), PV_OK);
  row(1, "a");
  CHECK_EQ(be_error(), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 1);
  row(1, NULL);
  CHECK_EQ(be_ready('E'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);
  CHECK_EQ(pv_tracker_tx_status(T), 'E');
  finish();
}

/* A failed Bind of an existing named portal leaves the old one in place:
 * its rows must keep the old plan, not the failed Bind's. */
static void test_failed_bind_restores(void) {
  start();
  CHECK_EQ(fe_query("BEGIN"), PV_OK);
  CHECK_EQ(be_complete("BEGIN"), PV_OK);
  CHECK_EQ(be_ready('T'), PV_OK);
  CHECK_EQ(fe_parse("sa", "SELECT a"), PV_OK);
  CHECK_EQ(fe_describe('S', "sa"), PV_OK);
  CHECK_EQ(fe_parse("sbc", "SELECT b, c"), PV_OK);
  CHECK_EQ(fe_describe('S', "sbc"), PV_OK);
  CHECK_EQ(fe_bind("p", "sa", 0, NULL), PV_OK);
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(be_type('1'), PV_OK);
  CHECK_EQ(be_paramdesc(), PV_OK);
  CHECK_EQ(be_rowdesc(1, COL_A), PV_OK);
  CHECK_EQ(be_type('1'), PV_OK);
  CHECK_EQ(be_paramdesc(), PV_OK);
  CHECK_EQ(be_rowdesc(2, COL_BC), PV_OK);
  CHECK_EQ(be_type('2'), PV_OK);
  CHECK_EQ(be_ready('T'), PV_OK);
  CHECK_EQ(pv_tracker_portals(T), 1);
  /* Bind p again: the server refuses (portal exists). */
  CHECK_EQ(fe_bind("p", "sbc", 0, NULL), PV_OK);
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(be_error(), PV_OK);
  CHECK_EQ(be_ready('E'), PV_OK);
  CHECK_EQ(pv_tracker_portals(T), 1);
  CHECK_EQ(fe_query("ROLLBACK"), PV_OK);
  CHECK_EQ(be_complete("ROLLBACK"), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_portals(T), 0);

  /* Same in one transaction-less pipeline: Bind fails, Sync, Execute of
   * the name runs whatever the server has: no guessed plan. */
  CHECK_EQ(fe_query("BEGIN"), PV_OK);
  CHECK_EQ(be_complete("BEGIN"), PV_OK);
  CHECK_EQ(be_ready('T'), PV_OK);
  CHECK_EQ(fe_bind("q", "sa", 0, NULL), PV_OK);
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(fe_bind("q", "sbc", 0, NULL), PV_OK);
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(fe_execute("q", 0), PV_OK);
  CHECK(FE.inject_len == 0); /* looked known when sent */
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(be_type('2'), PV_OK);
  CHECK_EQ(be_ready('T'), PV_OK);
  CHECK_EQ(be_error(), PV_OK); /* second Bind q: exists */
  CHECK_EQ(be_ready('T'), PV_OK);
  /* The server runs the first q: even a row that fits the failed Bind's
   * shape gets no plan. */
  row(2, NULL);
  CHECK_EQ(be_complete("SELECT 1"), PV_OK);
  CHECK_EQ(be_ready('T'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);
  /* Afterwards q is the first Bind's portal again. */
  CHECK_EQ(fe_execute("q", 0), PV_OK);
  CHECK(FE.inject_len == 0);
  CHECK_EQ(fe_type('S'), PV_OK);
  row(1, "a");
  CHECK_EQ(be_complete("SELECT 1"), PV_OK);
  CHECK_EQ(be_ready('T'), PV_OK);
  finish();
}

/* ---- 7. re-Parse with another shape while an Execute is pending ---------- */

static void test_reparse(void) {
  start();
  CHECK_EQ(fe_parse("st", "SELECT a"), PV_OK);
  CHECK_EQ(fe_describe('S', "st"), PV_OK);
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(be_type('1'), PV_OK);
  CHECK_EQ(be_paramdesc(), PV_OK);
  CHECK_EQ(be_rowdesc(1, COL_A), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);

  CHECK_EQ(fe_bind("", "st", 0, NULL), PV_OK);
  CHECK_EQ(fe_execute("", 0), PV_OK);
  CHECK(FE.inject_len == 0);
  CHECK_EQ(fe_close('S', "st"), PV_OK);
  CHECK_EQ(pv_tracker_statements(T), 0);
  CHECK_EQ(fe_parse("st", "SELECT b, c"), PV_OK);
  CHECK_EQ(fe_describe('S', "st"), PV_OK);
  CHECK_EQ(fe_bind("p2", "st", 0, NULL), PV_OK);
  CHECK_EQ(fe_execute("p2", 0), PV_OK);
  CHECK(FE.inject_len == 0); /* Describe S of the new one is pending */
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(be_type('2'), PV_OK);
  row(1, "a");
  row(1, "a");
  CHECK_EQ(be_complete("SELECT 2"), PV_OK);
  CHECK_EQ(be_type('3'), PV_OK);
  CHECK_EQ(be_type('1'), PV_OK);
  CHECK_EQ(be_paramdesc(), PV_OK);
  CHECK_EQ(be_rowdesc(2, COL_BC), PV_OK);
  CHECK_EQ(be_type('2'), PV_OK);
  row(2, "b");
  row(1, NULL); /* wrong field count: not this plan's row */
  CHECK_EQ(be_complete("SELECT 2"), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);
  CHECK_EQ(pv_tracker_statements(T), 1);
  finish();
}

/* ---- 8. cursors and prepared statements through SQL ---------------------- */

static void test_sql_cursor_prepare(void) {
  start();
  CHECK_EQ(fe_query("BEGIN; DECLARE c CURSOR FOR SELECT a FROM t"), PV_OK);
  CHECK_EQ(be_complete("BEGIN"), PV_OK);
  CHECK_EQ(be_complete("DECLARE CURSOR"), PV_OK);
  CHECK_EQ(be_ready('T'), PV_OK);
  uint64_t last = 0;
  for (int i = 0; i < 2; i++) {
    CHECK_EQ(fe_query("FETCH 2 FROM c"), PV_OK);
    CHECK_EQ(be_rowdesc(1, COL_A), PV_OK);
    const pv_plan_t *p = row(1, "a");
    CHECK(p && p->id != last);
    last = p ? p->id : 0;
    CHECK_EQ(be_complete("FETCH 1"), PV_OK);
    CHECK_EQ(be_ready('T'), PV_OK);
  }
  CHECK_EQ(fe_query("CLOSE c; COMMIT"), PV_OK);
  CHECK_EQ(be_complete("CLOSE CURSOR"), PV_OK);
  CHECK_EQ(be_complete("COMMIT"), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);

  /* A protocol statement, described. */
  CHECK_EQ(fe_parse("s9", "SELECT a"), PV_OK);
  CHECK_EQ(fe_describe('S', "s9"), PV_OK);
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(be_type('1'), PV_OK);
  CHECK_EQ(be_paramdesc(), PV_OK);
  CHECK_EQ(be_rowdesc(1, COL_A), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_statements(T), 1);

  CHECK_EQ(fe_query("PREPARE q AS SELECT b, c FROM t; EXECUTE q"), PV_OK);
  CHECK_EQ(be_complete("PREPARE"), PV_OK);
  CHECK_EQ(be_rowdesc(2, COL_BC), PV_OK);
  row(2, "b");
  CHECK_EQ(BE.stmt_index, 1);
  CHECK_EQ(be_complete("SELECT 1"), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);
  /* SQL PREPARE may have re-used a name: known statements are forgotten
   * and the next Execute asks the server. */
  CHECK_EQ(pv_tracker_statements(T), 0);
  CHECK_EQ(fe_bind("", "s9", 0, NULL), PV_OK);
  CHECK_EQ(fe_execute("", 0), PV_OK);
  check_injected("");
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(be_type('2'), PV_OK);
  CHECK_EQ(be_rowdesc(1, COL_A), PV_OK);
  CHECK(BE.swallow);
  row(1, "a");
  CHECK_EQ(be_complete("SELECT 1"), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);

  CHECK_EQ(fe_query("DEALLOCATE q"), PV_OK);
  CHECK_EQ(be_complete("DEALLOCATE"), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);
  finish();
}

/* SQL DECLARE can reuse the name of a portal the server closed but the
 * tracker still maps: it forgets its portals. DEALLOCATE only drops. */
static void test_declare_purges_portals(void) {
  start();
  CHECK_EQ(fe_query("BEGIN"), PV_OK);
  CHECK_EQ(be_complete("BEGIN"), PV_OK);
  CHECK_EQ(be_ready('T'), PV_OK);
  CHECK_EQ(fe_parse("sa", "SELECT a"), PV_OK);
  CHECK_EQ(fe_describe('S', "sa"), PV_OK);
  CHECK_EQ(fe_bind("p", "sa", 0, NULL), PV_OK);
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(be_type('1'), PV_OK);
  CHECK_EQ(be_paramdesc(), PV_OK);
  CHECK_EQ(be_rowdesc(1, COL_A), PV_OK);
  CHECK_EQ(be_type('2'), PV_OK);
  CHECK_EQ(be_ready('T'), PV_OK);
  CHECK_EQ(pv_tracker_portals(T), 1);
  CHECK_EQ(fe_query("SAVEPOINT s; DEALLOCATE x; CLOSE p"), PV_OK);
  CHECK_EQ(be_complete("SAVEPOINT"), PV_OK);
  CHECK_EQ(be_complete("DEALLOCATE"), PV_OK);
  CHECK_EQ(be_complete("CLOSE CURSOR"), PV_OK);
  CHECK_EQ(be_ready('T'), PV_OK);
  CHECK_EQ(pv_tracker_statements(T), 1);
  CHECK_EQ(pv_tracker_portals(T), 1);
  CHECK_EQ(fe_query("DECLARE p CURSOR FOR SELECT b, c FROM t"), PV_OK);
  CHECK_EQ(be_complete("DECLARE CURSOR"), PV_OK);
  CHECK_EQ(be_ready('T'), PV_OK);
  CHECK_EQ(pv_tracker_portals(T), 0);
  CHECK_EQ(pv_tracker_statements(T), 1);
  CHECK_EQ(fe_execute("p", 10), PV_OK);
  check_injected("p");
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(be_rowdesc(2, COL_BC), PV_OK);
  CHECK(BE.swallow);
  row(2, "b");
  CHECK_EQ(be_complete("FETCH 1"), PV_OK);
  CHECK_EQ(be_ready('T'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);
  finish();
}

/* Statements prepared after an invalidating command in the same pipeline
 * are not forgotten. */
static void test_purge_keeps_newer(void) {
  start();
  CHECK_EQ(fe_parse("old", "SELECT a"), PV_OK);
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(fe_query("DISCARD ALL"), PV_OK);
  CHECK_EQ(fe_parse("new", "SELECT a"), PV_OK);
  CHECK_EQ(fe_describe('S', "new"), PV_OK);
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(pv_tracker_statements(T), 2);
  CHECK_EQ(be_type('1'), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(be_complete("DISCARD ALL"), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_statements(T), 1);
  CHECK_EQ(be_type('1'), PV_OK);
  CHECK_EQ(be_paramdesc(), PV_OK);
  CHECK_EQ(be_rowdesc(1, COL_A), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(fe_bind("", "new", 0, NULL), PV_OK);
  CHECK_EQ(fe_execute("", 0), PV_OK);
  CHECK(FE.inject_len == 0);
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(be_type('2'), PV_OK);
  row(1, "a");
  CHECK_EQ(be_complete("SELECT 1"), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);
  finish();
}

/* ---- 9. COPY
 * ----------------------------------------------------------------- */

static void test_copy(void) {
  start();
  CHECK_EQ(fe_query("COPY t TO STDOUT; SELECT a FROM t"), PV_OK);
  CHECK_EQ(be_copy_response('H', 0, 2), PV_OK);
  CHECK_EQ(BE.rows, PV_ROWS_NONE);
  for (int i = 0; i < 2; i++) {
    CHECK_EQ(be_copy_data("1\talice@example.com\n"), PV_OK);
    CHECK_EQ(BE.rows, PV_ROWS_COPY_OUT);
    CHECK_EQ(BE.copy_format, 0);
    CHECK_EQ(BE.stmt_index, 0);
  }
  CHECK_EQ(be_type('c'), PV_OK);
  CHECK_EQ(be_complete("COPY 2"), PV_OK);
  CHECK_EQ(be_rowdesc(1, COL_A), PV_OK);
  row(1, "a");
  CHECK_EQ(BE.stmt_index, 1);
  CHECK_EQ(be_complete("SELECT 1"), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);

  /* Binary COPY out says so. */
  CHECK_EQ(fe_query("COPY t TO STDOUT (FORMAT binary)"), PV_OK);
  CHECK_EQ(be_copy_response('H', 1, 2), PV_OK);
  CHECK_EQ(be_copy_data("PGCOPY\n\377\r\n"), PV_OK);
  CHECK_EQ(BE.rows, PV_ROWS_COPY_OUT);
  CHECK_EQ(BE.copy_format, 1);
  CHECK_EQ(be_type('c'), PV_OK);
  CHECK_EQ(be_copy_data("late"), PV_OK);
  CHECK_EQ(BE.rows, PV_ROWS_NONE);
  CHECK_EQ(be_complete("COPY 1"), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);

  /* COPY FROM STDIN: client data pushes nothing. */
  CHECK_EQ(fe_query("COPY t FROM STDIN"), PV_OK);
  CHECK_EQ(be_copy_response('G', 0, 2), PV_OK);
  mb_t *d = mb('d');
  memcpy(d->b, "1\tx\n", 4);
  d->n = 4;
  CHECK_EQ(fe(d), PV_OK);
  CHECK_EQ(fe_type('c'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 1);
  CHECK_EQ(be_complete("COPY 1"), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);

  /* COPY through Execute, then CopyFail. */
  CHECK_EQ(fe_parse("", "COPY t FROM STDIN"), PV_OK);
  CHECK_EQ(fe_bind("", "", 0, NULL), PV_OK);
  CHECK_EQ(fe_describe('P', ""), PV_OK);
  CHECK_EQ(fe_execute("", 0), PV_OK);
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(be_type('1'), PV_OK);
  CHECK_EQ(be_type('2'), PV_OK);
  CHECK_EQ(be_type('n'), PV_OK);
  CHECK(!BE.swallow);
  CHECK_EQ(be_copy_response('G', 0, 1), PV_OK);
  mb_t *f = mb('f');
  putstr(f, "abort");
  CHECK_EQ(fe(f), PV_OK);
  CHECK_EQ(be_error(), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 1);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);

  /* COPY BOTH: passed through, data is not rows. */
  CHECK_EQ(fe_query("START_REPLICATION"), PV_OK);
  CHECK_EQ(be_copy_response('W', 0, 0), PV_OK);
  CHECK_EQ(be_copy_data("w..."), PV_OK);
  CHECK_EQ(BE.rows, PV_ROWS_NONE);
  finish();
}

/* ---- 10. malformed input and limits -------------------------------------- */

static int ext_freed;
static void count_free(void *ext) {
  ext_freed++;
  free(ext);
}

static void test_malformed(void) {
  start();
  row(1, NULL); /* nothing pending */
  CHECK_EQ(fe_query("SELECT a"), PV_OK);
  row(3, NULL); /* before any RowDescription */
  mb_t *b = mb('T');
  put16(b, 2);
  putstr(b, "a");
  put32(b, 1);
  CHECK_EQ(be(b), PV_EPROTO);
  b = mb('T');
  put16(b, 1);
  putstr(b, "a");
  put32(b, 1);
  put16(b, 1);
  put32(b, 23);
  put16(b, 4);
  put32(b, (uint32_t)-1);
  put16(b, 7); /* format 7 */
  CHECK_EQ(be(b), PV_EPROTO);
  CHECK_EQ(be_type('D'), PV_EPROTO); /* DataRow without a count */
  CHECK_EQ(be_type('1'), PV_EPROTO); /* ParseComplete for a Query */
  CHECK_EQ(be_type('s'), PV_EPROTO);
  CHECK_EQ(be_type('3'), PV_EPROTO);
  CHECK_EQ(be_type('Z'), PV_EPROTO); /* no status byte */
  CHECK_EQ(be_type('C'), PV_EPROTO); /* no tag */
  CHECK_EQ(be_type('H'), PV_EPROTO);
  /* Things that consume nothing. */
  CHECK_EQ(be_type('N'), PV_OK);
  CHECK_EQ(be_type('A'), PV_OK);
  CHECK_EQ(be_type('S'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 1);

  /* The plan's ext dies with the plan. */
  CHECK_EQ(be_rowdesc(1, COL_A), PV_OK);
  const pv_plan_t *p = row(1, "a");
  if (p) {
    pv_plan_t *w = (pv_plan_t *)p;
    w->ext = malloc(16);
    w->ext_free = count_free;
  }
  CHECK_EQ(ext_freed, 0);
  CHECK_EQ(be_complete("SELECT 1"), PV_OK);
  CHECK_EQ(ext_freed, 1);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK); /* unsolicited: tolerated */
  CHECK_EQ(pv_tracker_pending(T), 0);

  /* Malformed frontend messages and unknown types. */
  CHECK_EQ(fe_type('Q'), PV_EPROTO);
  CHECK_EQ(fe_type('P'), PV_EPROTO);
  CHECK_EQ(fe_type('B'), PV_EPROTO);
  CHECK_EQ(fe_type('E'), PV_EPROTO);
  CHECK_EQ(fe_target('D', 'X', "a"), PV_EPROTO);
  CHECK_EQ(fe_type('z'), PV_EPROTO);
  CHECK_EQ(pv_tracker_pending(T), 0);
  /* Replies nobody asked for. */
  CHECK_EQ(be_type('2'), PV_EPROTO);
  CHECK_EQ(be_type('n'), PV_EPROTO);
  CHECK_EQ(be_paramdesc(), PV_EPROTO);
  CHECK_EQ(be_rowdesc(1, COL_A), PV_EPROTO);
  CHECK_EQ(be_complete("SELECT 1"), PV_EPROTO);
  CHECK_EQ(be_error(), PV_OK);
  finish();
}

static void test_limits(void) {
  pv_tracker_limits_t lim = {.max_statements = 2,
                             .max_portals = 1,
                             .max_pending = 6,
                             .max_columns = 2};
  T = pv_tracker_new(&lim);
  CHECK(T != NULL);
  CHECK_EQ(fe_parse("a", "SELECT 1"), PV_OK);
  CHECK_EQ(fe_parse("b", "SELECT 1"), PV_OK);
  CHECK_EQ(fe_parse("c", "SELECT 1"), PV_ELIMIT);
  CHECK_EQ(fe_parse("a", "SELECT 2"), PV_OK); /* re-definition */
  CHECK_EQ(fe_parse("", "SELECT 2"), PV_OK);  /* unnamed */
  CHECK_EQ(fe_bind("p", "a", 0, NULL), PV_OK);
  CHECK_EQ(fe_bind("q", "a", 0, NULL), PV_ELIMIT);
  CHECK_EQ(pv_tracker_pending(T), 5);
  /* An Execute needing injection needs two slots. */
  CHECK_EQ(fe_execute("p", 0), PV_ELIMIT);
  CHECK_EQ(fe_type('S'), PV_OK);
  CHECK_EQ(fe_type('S'), PV_ELIMIT);
  CHECK_EQ(pv_tracker_pending(T), 6);
  /* Too many columns. */
  CHECK_EQ(be_type('1'), PV_OK);
  CHECK_EQ(be_type('1'), PV_OK);
  CHECK_EQ(be_type('1'), PV_OK);
  CHECK_EQ(be_type('1'), PV_OK);
  CHECK_EQ(be_type('2'), PV_OK);
  CHECK_EQ(be_ready('I'), PV_OK);
  CHECK_EQ(fe_query("SELECT 1,2,3"), PV_OK);
  static const col_t three[] = {
      {"x", 0, 0, 23, 0}, {"y", 0, 0, 23, 0}, {"z", 0, 0, 23, 0}};
  CHECK_EQ(be_rowdesc(3, three), PV_ELIMIT);
  CHECK_EQ(be_rowdesc(2, three), PV_OK);
  finish();

  /* max_pending 0: nothing can be sent that expects a reply. */
  pv_tracker_limits_t zero = {0};
  T = pv_tracker_new(&zero);
  CHECK(T != NULL);
  CHECK_EQ(fe_type('S'), PV_ELIMIT);
  CHECK_EQ(fe_type('H'), PV_OK);
  finish();
}

/* Many statements and portals: the maps grow and free cleanly. */
static void test_many_names(void) {
  start();
  char name[16];
  for (int i = 0; i < 90; i++) {
    snprintf(name, sizeof name, "S_%d", i);
    CHECK_EQ(fe_parse(name, "SELECT a"), PV_OK);
    CHECK_EQ(fe_bind(name, name, 0, NULL), PV_OK);
  }
  CHECK_EQ(pv_tracker_statements(T), 90);
  CHECK_EQ(pv_tracker_portals(T), 90);
  for (int i = 0; i < 90; i += 2) {
    snprintf(name, sizeof name, "S_%d", i);
    CHECK_EQ(fe_close('S', name), PV_OK);
  }
  CHECK_EQ(pv_tracker_statements(T), 45);
  CHECK_EQ(fe_type('S'), PV_OK);
  for (int i = 0; i < 90; i++) {
    CHECK_EQ(be_type('1'), PV_OK);
    CHECK_EQ(be_type('2'), PV_OK);
  }
  for (int i = 0; i < 45; i++)
    CHECK_EQ(be_type('3'), PV_OK);
  CHECK_EQ(be_ready('T'), PV_OK);
  CHECK_EQ(pv_tracker_pending(T), 0);
  CHECK_EQ(pv_tracker_portals(T), 90);
  finish();
}

int main(void) {
  RUN(test_simple_multi);
  RUN(test_describe_once_execute_many);
  RUN(test_inject);
  RUN(test_pipeline);
  RUN(test_portal_suspended);
  RUN(test_error_pipeline);
  RUN(test_error_flush);
  RUN(test_failed_bind_restores);
  RUN(test_reparse);
  RUN(test_sql_cursor_prepare);
  RUN(test_declare_purges_portals);
  RUN(test_purge_keeps_newer);
  RUN(test_copy);
  RUN(test_malformed);
  RUN(test_limits);
  RUN(test_many_names);
  return check_exit("test_row_plan");
}
