/* Literal-free form of a statement, for caching guard analyses by shape:
 * "SELECT id FROM customers WHERE id = 42" and "... id = 7" share one
 * analysis. Pure: no I/O, no globals, no allocation.
 *
 * Safety rests on finding literals exactly where PostgreSQL's lexer does,
 * so the scanner accepts only a conservative subset of the language and
 * refuses (returns 0) everything else: E'', U&'', B'', X'', N'' strings and
 * any quote glued to a letter, dollar quoting, nested block comments,
 * backslashes and non-ASCII bytes outside strings, numbers glued to
 * identifiers. Plain '...' strings (with '' inside; any bytes, since
 * standard_conforming_strings is enforced on and the encoding is UTF-8) and
 * unsigned decimal numbers become PV_SQL_LITERAL, a control byte that the
 * scanner refuses in its input, so it cannot be confused with anything
 * written (unlike '?', an operator); everything else is kept byte for
 * byte, quoted identifiers and comments included. */
#ifndef PGVEIL_SQL_NORMALIZE_H
#define PGVEIL_SQL_NORMALIZE_H

#include <stddef.h>

#include "pgveil/errors.h"

#define PV_SQL_LITERAL '\x01' /* stands for one constant */

/* Writes the literal-free form of sql[0..len) into out[0..cap) (not
 * NUL-terminated), OUT: *outlen. Returns 1 when the statement is in the
 * accepted subset and had at least one literal, 0 when it must not be
 * normalized (or has nothing to normalize), PV_ELIMIT when cap < len. */
PV_WARN_UNUSED int pv_sql_normalize(const char *sql, size_t len, char *out,
                                    size_t cap, size_t *outlen);

#endif
