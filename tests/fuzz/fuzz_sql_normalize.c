/* libFuzzer target: pv_sql_normalize against PostgreSQL's own lexer. When
 * our scanner accepts a statement, every literal it replaces must be
 * exactly a string or numeric constant token of PostgreSQL's scanner
 * (pg_query_scan), and every such token must be replaced: the expected
 * output is built from PostgreSQL's tokens and compared byte for byte. A
 * mismatch would let two different statements share a guard analysis. */
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgveil/sql_normalize.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int is_const(PgQuery__Token t) {
  return t == PG_QUERY__TOKEN__SCONST || t == PG_QUERY__TOKEN__ICONST ||
         t == PG_QUERY__TOKEN__FCONST || t == PG_QUERY__TOKEN__USCONST ||
         t == PG_QUERY__TOKEN__BCONST || t == PG_QUERY__TOKEN__XCONST;
}

/* sql with PostgreSQL's constant tokens as '?'; -1 when it cannot scan. */
static long expected(const char *sql, size_t len, char *out) {
  PgQueryScanResult r = pg_query_scan(sql);
  long o = -1;
  if (!r.error) {
    PgQuery__ScanResult *sr = pg_query__scan_result__unpack(
        NULL, r.pbuf.len, (const uint8_t *)r.pbuf.data);
    if (sr) {
      size_t pos = 0;
      o = 0;
      for (size_t i = 0; i < sr->n_tokens; i++) {
        const PgQuery__ScanToken *t = sr->tokens[i];
        if (!is_const(t->token))
          continue;
        memcpy(out + o, sql + pos, (size_t)t->start - pos);
        o += t->start - (long)pos;
        out[o++] = PV_SQL_LITERAL;
        pos = (size_t)t->end;
      }
      memcpy(out + o, sql + pos, len - pos);
      o += (long)(len - pos);
      pg_query__scan_result__free_unpacked(sr, NULL);
    }
  }
  pg_query_free_scan_result(r);
  return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096 || memchr(data, 0, size) ||
      memchr(data, PV_SQL_LITERAL, size))
    return 0;
  char *sql = malloc(size + 1), *ours = malloc(size + 1),
       *theirs = malloc(size + 1);
  memcpy(sql, data, size);
  sql[size] = 0;
  size_t n = 0;
  int rc = pv_sql_normalize(sql, size, ours, size + 1, &n);
  if (rc == 1) {
    if (n > size)
      abort();
    long t = expected(sql, size, theirs);
    if (t >= 0 && ((size_t)t != n || memcmp(ours, theirs, n) != 0)) {
      fprintf(stderr,
              "normalize mismatch:\n  sql:    %s\n  ours:   %.*s\n"
              "  theirs: %.*s\n",
              sql, (int)n, ours, (int)t, theirs);
      abort();
    }
  }
  free(sql);
  free(ours);
  free(theirs);
  return 0;
}
