/* Owns the literal-free form of statements used to share guard analyses
 * between statements that differ only in constants
 * (include/pgveil/sql_normalize.h). Pure: no I/O, no globals. */
#include "pgveil/sql_normalize.h"

#include <stdbool.h>

static bool ident_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '_' || c == '$';
}

static bool digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* Length of a plain '...' string at s[i] (standard conforming: '' is a
 * quote, backslash is not special but refused by the caller), or 0 when
 * unterminated. */
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

/* Length of an unsigned decimal number at s[i]: 12, 1.5, 1e5, 2.5E-3;
 * 0 when it is glued to an identifier character or malformed. */
static size_t number_len(const char *s, size_t len, size_t i) {
  size_t k = i;
  while (k < len && digit((unsigned char)s[k]))
    k++;
  if (k < len && s[k] == '.' && k + 1 < len && digit((unsigned char)s[k + 1]))
    for (k++; k < len && digit((unsigned char)s[k]);)
      k++;
  if (k < len && (s[k] == 'e' || s[k] == 'E')) {
    size_t e = k + 1;
    if (e < len && (s[e] == '+' || s[e] == '-'))
      e++;
    if (e >= len || !digit((unsigned char)s[e]))
      return 0;
    for (k = e; k < len && digit((unsigned char)s[k]);)
      k++;
  }
  if (k < len && (ident_char((unsigned char)s[k]) || s[k] == '.'))
    return 0;
  return k - i;
}

int pv_sql_normalize(const char *sql, size_t len, char *out, size_t cap,
                     size_t *outlen) {
  if (cap < len)
    return PV_ELIMIT;
  size_t o = 0, literals = 0;
  for (size_t i = 0; i < len;) {
    unsigned char c = (unsigned char)sql[i];
    if (c >= 0x80 || c == '\\' || c == 0)
      return 0;
    if (c == '-' && i + 1 < len && sql[i + 1] == '-') { /* line comment */
      while (i < len && sql[i] != '\n')
        out[o++] = sql[i++];
      continue;
    }
    if (c == '/' && i + 1 < len && sql[i + 1] == '*') { /* block comment */
      size_t k = i + 2;
      while (k + 1 < len && !(sql[k] == '*' && sql[k + 1] == '/')) {
        if (sql[k] == '/' && sql[k + 1] == '*')
          return 0; /* nested: not worth getting right */
        k++;
      }
      if (k + 1 >= len)
        return 0;
      for (k += 2; i < k;)
        out[o++] = sql[i++];
      continue;
    }
    if (c == '"') { /* quoted identifier, kept verbatim */
      size_t k = i + 1;
      while (k < len && !(sql[k] == '"' && !(k + 1 < len && sql[k + 1] == '"')))
        k += sql[k] == '"' ? 2 : 1;
      if (k >= len)
        return 0;
      for (k++; i < k;)
        out[o++] = sql[i++];
      continue;
    }
    if (c == '\'') {
      if (i > 0 && (ident_char((unsigned char)sql[i - 1]) || sql[i - 1] == '&'))
        return 0; /* E'', U&'', B'', X'', N'' or worse */
      size_t n = string_len(sql, len, i);
      if (!n)
        return 0;
      out[o++] = '?';
      i += n;
      literals++;
      continue;
    }
    if (digit(c) && (i == 0 || !(ident_char((unsigned char)sql[i - 1]) ||
                                 sql[i - 1] == '.'))) {
      size_t n = number_len(sql, len, i);
      if (!n)
        return 0;
      out[o++] = '?';
      i += n;
      literals++;
      continue;
    }
    if (c == '$' && (i == 0 || !ident_char((unsigned char)sql[i - 1])) &&
        !(i + 1 < len && digit((unsigned char)sql[i + 1])))
      return 0; /* dollar quoting ($$ or $tag$); $1 parameters are kept */
    out[o++] = (char)c;
    i++;
  }
  *outlen = o;
  return literals ? 1 : 0;
}
