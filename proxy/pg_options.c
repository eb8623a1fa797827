/* Owns reading settings out of the `options` startup parameter
 * (include/pgveil/pg_options.h). Pure: no I/O, no globals. */
#include "pgveil/pg_options.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

/* Copies the next whitespace-separated word (backslash escapes the next
 * byte) into w[0..cap); returns its length, -1 when it does not fit, and
 * advances *p. */
static long next_word(const char **p, char *w, size_t cap) {
  const char *s = *p;
  while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
    s++;
  size_t n = 0;
  bool over = false;
  while (*s && *s != ' ' && *s != '\t' && *s != '\n' && *s != '\r') {
    if (*s == '\\' && s[1])
      s++;
    if (n + 1 < cap)
      w[n++] = *s;
    else
      over = true;
    s++;
  }
  w[n] = '\0';
  *p = s;
  return over ? -1 : (long)n;
}

/* If setting "k=v" names `name`, copies v; returns 1 found, 0 not, or
 * PV_ELIMIT. GUC names treat '-' and '_' alike only on the command line;
 * PostgreSQL maps '-' to '_' for -c, so do we. */
static int match(const char *kv, const char *name, char *out, size_t cap) {
  const char *eq = strchr(kv, '=');
  if (!eq)
    return 0;
  size_t klen = (size_t)(eq - kv);
  if (klen != strlen(name))
    return 0;
  for (size_t i = 0; i < klen; i++) {
    char a = kv[i], b = name[i];
    if (a == '-')
      a = '_';
    if (a >= 'A' && a <= 'Z')
      a = (char)(a - 'A' + 'a');
    if (b >= 'A' && b <= 'Z')
      b = (char)(b - 'A' + 'a');
    if (a != b)
      return 0;
  }
  if (strlen(eq + 1) >= cap)
    return PV_ELIMIT;
  strcpy(out, eq + 1);
  return 1;
}

int pv_options_find(const char *options, const char *name, char *out,
                    size_t cap) {
  char w[1024];
  const char *p = options;
  int found = 0;
  for (;;) {
    long n = next_word(&p, w, sizeof w);
    if (n == 0)
      return found;
    if (n < 0)
      return PV_ELIMIT;
    const char *kv = NULL;
    if (strcmp(w, "-c") == 0) {
      n = next_word(&p, w, sizeof w);
      if (n <= 0)
        return n < 0 ? PV_ELIMIT : PV_ESYNTAX;
      kv = w;
    } else if (strncmp(w, "-c", 2) == 0 || strncmp(w, "--", 2) == 0) {
      kv = w + 2; /* -cname=value and --name=value alike */
    }
    if (kv) {
      int rc = match(kv, name, out, cap);
      if (rc < 0)
        return rc;
      found |= rc;
    }
  }
}
