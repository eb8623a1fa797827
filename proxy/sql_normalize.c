/* Owns the literal-free form of statements used to share guard analyses
 * between statements that differ only in constants
 * (include/pgveil/sql_normalize.h). Pure: no I/O, no globals.
 *
 * The scanner walks tokens the way PostgreSQL 15's lexer (scan.l) does,
 * for the subset it accepts; tests/fuzz/fuzz_sql_normalize.c checks it
 * against libpg_query's scanner. */
#include "pgveil/sql_normalize.h"

#include <stdbool.h>

static bool ident_start(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool digit(unsigned char c) { return c >= '0' && c <= '9'; }

static bool ident_cont(unsigned char c) {
  return ident_start(c) || digit(c) || c == '$';
}

/* Length of a plain '...' string at s[i] ('' is a quote; backslash is an
 * ordinary byte under standard_conforming_strings), 0 when unterminated. */
static size_t string_len(const char *s, size_t len, size_t i) {
  for (size_t k = i + 1; k < len; k++) {
    if (s[k] != '\'')
      continue;
    if (k + 1 < len && s[k + 1] == '\'') {
      k++;
      continue;
    }
    return k - i + 1;
  }
  return 0;
}

/* After a string ending at s[k]: whitespace with a newline and another
 * quote continue the same constant ('a'\n'b' is 'ab'). Returns the length
 * of the continuation up to its closing quote, 0 for none, or -1 when a
 * comment sits in between (scan.l allows that; we do not go there). */
static long continuation_len(const char *s, size_t len, size_t k) {
  size_t j = k;
  bool newline = false;
  while (j < len) {
    if (s[j] == ' ' || s[j] == '\t' || s[j] == '\f')
      j++;
    else if (s[j] == '\n' || s[j] == '\r')
      newline = true, j++;
    else if (s[j] == '-' && j + 1 < len && s[j + 1] == '-')
      return -1;
    else
      break;
  }
  if (!newline || j >= len || s[j] != '\'')
    return 0;
  size_t n = string_len(s, len, j);
  return n ? (long)(j + n - k) : -1;
}

/* Length of a number at s[i] as scan.l's {integer}, {decimal} or {real}
 * match it; 0 for the forms PostgreSQL splits or rejects (1e, 1e+, 1..,
 * a number glued to an identifier), which we do not normalize. */
static size_t number_len(const char *s, size_t len, size_t i) {
  size_t k = i;
  while (k < len && digit((unsigned char)s[k]))
    k++;
  if (k < len && s[k] == '.') {
    if (k + 1 < len && s[k + 1] == '.')
      return 0; /* 1..2: decimalfail */
    for (k++; k < len && digit((unsigned char)s[k]);)
      k++;
  }
  if (k == i + 1 && s[i] == '.')
    return 0;
  if (k < len && (s[k] == 'e' || s[k] == 'E')) {
    size_t e = k + 1;
    if (e < len && (s[e] == '+' || s[e] == '-'))
      e++;
    if (e >= len || !digit((unsigned char)s[e]))
      return 0; /* realfail */
    for (k = e; k < len && digit((unsigned char)s[k]);)
      k++;
  }
  if (k < len && (ident_cont((unsigned char)s[k]) || s[k] == '.'))
    return 0; /* trailing junk */
  return k - i;
}

/* Copies a comment or quoted identifier at s[i] verbatim; returns its
 * length, 0 when it is malformed or nested. */
static size_t verbatim_len(const char *s, size_t len, size_t i) {
  size_t k = i;
  if (s[i] == '-') { /* -- to end of line (\n or \r, as scan.l) */
    while (k < len && s[k] != '\n' && s[k] != '\r')
      k++;
    return k - i;
  }
  if (s[i] == '/') { /* block comment, not nested */
    for (k = i + 2; k + 1 < len; k++) {
      if (s[k] == '/' && s[k + 1] == '*')
        return 0;
      if (s[k] == '*' && s[k + 1] == '/')
        return k + 2 - i;
    }
    return 0;
  }
  for (k = i + 1; k < len; k++) { /* "quoted identifier" with "" inside */
    if (s[k] != '"')
      continue;
    if (k + 1 < len && s[k + 1] == '"') {
      k++;
      continue;
    }
    return k + 1 - i;
  }
  return 0;
}

int pv_sql_normalize(const char *sql, size_t len, char *out, size_t cap,
                     size_t *outlen) {
  if (cap < len)
    return PV_ELIMIT;
  size_t o = 0, literals = 0, n;
  for (size_t i = 0; i < len;) {
    unsigned char c = (unsigned char)sql[i];
    unsigned char next = i + 1 < len ? (unsigned char)sql[i + 1] : 0;
    if (c >= 0x80 || c == '\\' ||
        (c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f'))
      return 0;
    if ((c == '-' && next == '-') || (c == '/' && next == '*') || c == '"') {
      if (!(n = verbatim_len(sql, len, i)))
        return 0;
    } else if (ident_start(c)) {
      for (n = 1; i + n < len && ident_cont((unsigned char)sql[i + n]);)
        n++;
      if (i + n < len && (sql[i + n] == '\'' || sql[i + n] == '&' ||
                          (unsigned char)sql[i + n] >= 0x80))
        return 0; /* E'', B'', X'', N'', U&'' or U&"" prefixes */
    } else if (c == '.' && next == '.') {
      n = 2; /* DOT_DOT, as scan.l pairs dots before reading numbers */
    } else if (c == '$') {
      if (!digit(next))
        return 0; /* dollar quoting */
      for (n = 1; i + n < len && digit((unsigned char)sql[i + n]);)
        n++;
      if (i + n < len && ident_cont((unsigned char)sql[i + n]))
        return 0;
    } else if (c == '\'' || digit(c) || (c == '.' && digit(next))) {
      n = c == '\'' ? string_len(sql, len, i) : number_len(sql, len, i);
      if (!n)
        return 0;
      for (long more; c == '\'' && (more = continuation_len(sql, len, i + n));
           n += (size_t)more)
        if (more < 0)
          return 0;
      out[o++] = PV_SQL_LITERAL;
      i += n;
      literals++;
      continue;
    } else {
      n = 1;
    }
    for (size_t k = 0; k < n; k++)
      out[o++] = sql[i++];
  }
  *outlen = o;
  return literals ? 1 : 0;
}
