/* The guard's pre-scan: a byte-level pass that says whether SQL text could
 * touch protected data or change the session, so that clean statements skip
 * the parser. Pure: no I/O, no globals; conservative (when in doubt: yes). */
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "sql_guard_internal.h"

#define NAME_MAX_BYTES 63 /* NAMEDATALEN - 1: longer names are truncated */

struct pv_guard_names {
  size_t mask; /* slots - 1, power of two */
  char **slot; /* lower-cased names, NULL when empty */
};

static void lower_into(char *dst, const char *src, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char ch = src[i];
    if (ch >= 'A' && ch <= 'Z')
      ch = (char)(ch - 'A' + 'a');
    dst[i] = ch;
  }
  dst[n] = '\0';
}

static size_t slot_of(const pv_guard_names_t *s, const char *w, size_t n) {
  return (size_t)XXH3_64bits(w, n) & s->mask;
}

int pv_guard_names_new(const char *const *names, size_t n,
                       pv_guard_names_t **out) {
  if (!out || (n && !names))
    return PV_EINVAL;
  *out = NULL;
  pv_guard_names_t *s = calloc(1, sizeof *s);
  if (!s)
    return PV_ENOMEM;
  size_t slots = 16;
  while (slots < n * 2 + 2)
    slots *= 2;
  s->mask = slots - 1;
  s->slot = calloc(slots, sizeof *s->slot);
  if (!s->slot)
    goto fail;
  for (size_t i = 0; i < n; i++) {
    if (!names[i] || !*names[i])
      continue;
    size_t len = strlen(names[i]);
    if (len > NAME_MAX_BYTES)
      len = NAME_MAX_BYTES;
    char *w = malloc(len + 1);
    if (!w)
      goto fail;
    lower_into(w, names[i], len);
    size_t k = slot_of(s, w, len);
    while (s->slot[k] && strcmp(s->slot[k], w) != 0)
      k = (k + 1) & s->mask;
    if (s->slot[k])
      free(w);
    else
      s->slot[k] = w;
  }
  *out = s;
  return 0;
fail:
  pv_guard_names_free(s);
  return PV_ENOMEM;
}

void pv_guard_names_free(pv_guard_names_t *s) {
  if (!s)
    return;
  for (size_t i = 0; s->slot && i <= s->mask; i++)
    free(s->slot[i]);
  free(s->slot);
  free(s);
}

static bool names_has(const pv_guard_names_t *s, const char *w, size_t n) {
  if (!s)
    return false;
  size_t k = slot_of(s, w, n);
  while (s->slot[k]) {
    if (strlen(s->slot[k]) == n && memcmp(s->slot[k], w, n) == 0)
      return true;
    k = (k + 1) & s->mask;
  }
  return false;
}

static bool ident_byte(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || ch == '_' || ch >= 0x80;
}

/* Skips whitespace and comments from i; returns the next index. */
static size_t skip_space(const char *s, size_t len, size_t i) {
  for (;;) {
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' ||
                       s[i] == '\r' || s[i] == '\f' || s[i] == '\v'))
      i++;
    if (i + 1 < len && s[i] == '-' && s[i + 1] == '-') {
      while (i < len && s[i] != '\n')
        i++;
      continue;
    }
    if (i + 1 < len && s[i] == '/' && s[i + 1] == '*') {
      int depth = 0;
      while (i + 1 < len) {
        if (s[i] == '/' && s[i + 1] == '*') {
          depth++;
          i += 2;
        } else if (s[i] == '*' && s[i + 1] == '/') {
          i += 2;
          if (--depth == 0)
            break;
        } else {
          i++;
        }
      }
      if (depth > 0)
        return len;
      continue;
    }
    return i;
  }
}

/* One word (lower-cased, truncated to 63 bytes): true when it forces a
 * parse. `dotted`: the word is preceded by '.' (schema-qualified). */
static bool word_hits(const pv_guard_names_t *names, const char *w, size_t n,
                      const char *s, size_t len, size_t after, bool dotted) {
  if (n > NAME_MAX_BYTES)
    n = NAME_MAX_BYTES;
  if (names_has(names, w, n) || g_prescan_keyword(w, n))
    return true;
  size_t j = skip_space(s, len, after);
  if (j < len && s[j] == '(')
    return dotted || !g_prescan_paren_ok(w, n);
  return false;
}

bool pv_guard_prescan(const pv_guard_names_t *names, const char *sql,
                      size_t len) {
  char w[NAME_MAX_BYTES + 1];
  if (!sql)
    return true;
  for (size_t i = 0; i < len;) {
    unsigned char ch = (unsigned char)sql[i];
    if ((ch == 'u' || ch == 'U') && i + 2 < len && sql[i + 1] == '&' &&
        (sql[i + 2] == '"' || sql[i + 2] == '\''))
      return true;   /* Unicode escapes can spell any name */
    if (ch == '"') { /* quoted identifier: compare its content too */
      size_t j = i + 1, n = 0;
      while (j < len) {
        if (sql[j] == '"') {
          if (j + 1 < len && sql[j + 1] == '"') {
            if (n < NAME_MAX_BYTES)
              w[n++] = '"';
            j += 2;
            continue;
          }
          break;
        }
        if (n < NAME_MAX_BYTES)
          w[n++] = sql[j];
        j++;
      }
      lower_into(w, w, n);
      bool dotted = i > 0 && sql[i - 1] == '.';
      if (word_hits(names, w, n, sql, len, j < len ? j + 1 : len, dotted))
        return true;
      /* the words inside count too (e.g. "x customers") */
      i++;
      continue;
    }
    if (ident_byte(ch) && !(ch >= '0' && ch <= '9')) {
      size_t j = i, n = 0;
      while (j < len && ident_byte((unsigned char)sql[j])) {
        if (n < NAME_MAX_BYTES)
          w[n++] = sql[j];
        j++;
      }
      lower_into(w, w, n);
      bool dotted = i > 0 && sql[i - 1] == '.';
      if (word_hits(names, w, n, sql, len, j, dotted))
        return true;
      i = j;
      continue;
    }
    if (ch >= '0' && ch <= '9') { /* numbers, 1e5, 0x1F: skip as a unit */
      while (i < len && ident_byte((unsigned char)sql[i]))
        i++;
      continue;
    }
    i++;
  }
  return false;
}

bool pv_guard_search_path_trusted(const char *const *sp, size_t n) {
  size_t cat = n;
  for (size_t i = 0; i < n && cat == n; i++)
    if (sp[i] && !strcmp(sp[i], "pg_catalog"))
      cat = i;
  if (cat == n)
    return true; /* pg_catalog not listed: searched first */
  for (size_t i = 0; i < cat; i++)
    if (sp[i] && strcmp(sp[i], "pg_temp") != 0 &&
        strncmp(sp[i], "pg_temp_", 8) != 0)
      return false; /* a schema before pg_catalog can shadow built-ins */
  return true;
}
