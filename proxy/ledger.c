/* Owns `pgveil ledger`: reads audit logs (JSON lines) and prints, for one
 * data subject, every disclosure of its consent-gated data in clear: when,
 * to which role and application, from where, for what purpose, which
 * columns (GDPR Art. 15). Reads files only; never connects anywhere. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgveil/audit.h"

#define MAX_FILES 64
#define FIELD_MAX 512
#define LIST_MAX 64

/* The fields of one ledger line that the report needs. */
typedef struct {
  char event[16], time[40], role[FIELD_MAX], app[FIELD_MAX], client[80],
      purpose[80], table[FIELD_MAX];
  char columns[FIELD_MAX];
  bool subject_match;
} line_t;

typedef struct {
  const char *p, *end;
} rd_t;

static void ws(rd_t *r) {
  while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\r'))
    r->p++;
}

static void put_utf8(char *out, size_t cap, size_t *n, unsigned cp) {
  char b[4];
  size_t k;
  if (cp < 0x80)
    b[0] = (char)cp, k = 1;
  else if (cp < 0x800)
    b[0] = (char)(0xC0 | cp >> 6), b[1] = (char)(0x80 | (cp & 0x3F)), k = 2;
  else
    b[0] = (char)(0xE0 | cp >> 12), b[1] = (char)(0x80 | ((cp >> 6) & 0x3F)),
    b[2] = (char)(0x80 | (cp & 0x3F)), k = 3;
  for (size_t i = 0; i < k && *n + 1 < cap; i++)
    out[(*n)++] = b[i];
}

/* A JSON string at r->p (the opening quote), unescaped into out (may be
 * NULL to skip). Returns false when malformed. */
static bool str(rd_t *r, char *out, size_t cap) {
  size_t n = 0;
  if (r->p >= r->end || *r->p != '"')
    return false;
  for (r->p++; r->p < r->end; r->p++) {
    char c = *r->p;
    if (c == '"') {
      r->p++;
      if (out && cap)
        out[n] = '\0';
      return true;
    }
    if (c == '\\') {
      if (++r->p >= r->end)
        return false;
      c = *r->p;
      unsigned cp = 0;
      switch (c) {
      case 'n':
        c = '\n';
        break;
      case 't':
        c = '\t';
        break;
      case 'r':
        c = '\r';
        break;
      case 'b':
        c = '\b';
        break;
      case 'f':
        c = '\f';
        break;
      case 'u':
        if (r->end - r->p < 5 || sscanf(r->p + 1, "%4x", &cp) != 1)
          return false;
        r->p += 4;
        if (out)
          put_utf8(out, cap, &n, cp);
        continue;
      default:
        break; /* " \ / as themselves */
      }
    }
    if (out && n + 1 < cap)
      out[n++] = c;
  }
  return false;
}

static bool skip_value(rd_t *r);

static bool skip_compound(rd_t *r, char open, char close) {
  (void)open;
  r->p++;
  ws(r);
  if (r->p < r->end && *r->p == close) {
    r->p++;
    return true;
  }
  for (;;) {
    ws(r);
    if (close == '}') {
      if (!str(r, NULL, 0))
        return false;
      ws(r);
      if (r->p >= r->end || *r->p++ != ':')
        return false;
    }
    if (!skip_value(r))
      return false;
    ws(r);
    if (r->p < r->end && *r->p == ',') {
      r->p++;
      continue;
    }
    if (r->p < r->end && *r->p == close) {
      r->p++;
      return true;
    }
    return false;
  }
}

static bool skip_value(rd_t *r) {
  ws(r);
  if (r->p >= r->end)
    return false;
  if (*r->p == '"')
    return str(r, NULL, 0);
  if (*r->p == '{')
    return skip_compound(r, '{', '}');
  if (*r->p == '[')
    return skip_compound(r, '[', ']');
  while (r->p < r->end && *r->p != ',' && *r->p != '}' && *r->p != ']')
    r->p++; /* number, true, false, null */
  return true;
}

/* A list of strings: joined with ", " into out (when given); `match`
 * set when one equals want (when given). */
static bool str_list(rd_t *r, char *out, size_t cap, const char *want,
                     bool *match) {
  if (r->p >= r->end || *r->p != '[')
    return skip_value(r);
  r->p++;
  size_t n = 0;
  if (out && cap)
    out[0] = '\0';
  for (;;) {
    ws(r);
    if (r->p < r->end && *r->p == ']') {
      r->p++;
      return true;
    }
    char v[FIELD_MAX];
    if (!str(r, v, sizeof v))
      return false;
    if (want && strcmp(v, want) == 0)
      *match = true;
    if (out) {
      int k =
          snprintf(out + n, n < cap ? cap - n : 0, "%s%s", n ? ", " : "", v);
      n += k > 0 ? (size_t)k : 0;
      if (n >= cap)
        n = cap - 1;
    }
    ws(r);
    if (r->p < r->end && *r->p == ',')
      r->p++;
  }
}

static bool parse_line(const char *s, size_t len, const char *subject,
                       line_t *l) {
  rd_t r = {s, s + len};
  memset(l, 0, sizeof *l);
  ws(&r);
  if (r.p >= r.end || *r.p++ != '{')
    return false;
  for (;;) {
    ws(&r);
    char key[64];
    if (!str(&r, key, sizeof key))
      return false;
    ws(&r);
    if (r.p >= r.end || *r.p++ != ':')
      return false;
    ws(&r);
    char *dst = NULL;
    size_t cap = 0;
    bool ok;
#define FIELD(name, f)                                                         \
  else if (strcmp(key, name) == 0) dst = l->f, cap = sizeof l->f
    if (0) {
    }
    FIELD("event", event);
    FIELD("time", time);
    FIELD("role", role);
    FIELD("application_name", app);
    FIELD("client", client);
    FIELD("purpose", purpose);
    FIELD("table", table);
#undef FIELD
    if (strcmp(key, "columns") == 0)
      ok = str_list(&r, l->columns, sizeof l->columns, NULL, NULL);
    else if (strcmp(key, "subjects") == 0)
      ok = str_list(&r, NULL, 0, subject, &l->subject_match);
    else if (dst && r.p < r.end && *r.p == '"')
      ok = str(&r, dst, cap);
    else
      ok = skip_value(&r);
    if (!ok)
      return false;
    ws(&r);
    if (r.p < r.end && *r.p == ',') {
      r.p++;
      continue;
    }
    return r.p < r.end && *r.p == '}';
  }
}

/* One row of the report, kept to size the columns. */
typedef struct {
  char time[40], role[FIELD_MAX], app[FIELD_MAX], client[80], purpose[80],
      columns[2 * FIELD_MAX + 2];
} row_t;

static const char *HEAD[6] = {"time",   "role",    "application_name",
                              "client", "purpose", "columns"};

static const char *cell(const row_t *r, int i) {
  const char *v[6] = {r->time,   r->role,    r->app,
                      r->client, r->purpose, r->columns};
  return v[i][0] ? v[i] : "-";
}

static void print_cells(FILE *out, const char *const *v, const int *w) {
  for (int i = 0; i < 5; i++)
    fprintf(out, "%-*s | ", w[i], v[i]);
  fprintf(out, "%s\n", v[5]);
}

static void print_rows(FILE *out, const row_t *rows, size_t n) {
  int w[6];
  for (int i = 0; i < 6; i++) {
    w[i] = (int)strlen(HEAD[i]);
    for (size_t k = 0; k < n; k++)
      if ((int)strlen(cell(&rows[k], i)) > w[i])
        w[i] = (int)strlen(cell(&rows[k], i));
  }
  print_cells(out, HEAD, w);
  for (int i = 0; i < 6; i++) {
    for (int k = 0; k < w[i]; k++)
      fputc('-', out);
    fputs(i < 5 ? "-+-" : "\n", out);
  }
  for (size_t k = 0; k < n; k++) {
    const char *v[6];
    for (int i = 0; i < 6; i++)
      v[i] = cell(&rows[k], i);
    print_cells(out, v, w);
  }
  fprintf(out, "(%zu disclosure%s)\n", n, n == 1 ? "" : "s");
}

static int scan_file(const char *path, const char *subject, row_t **rows,
                     size_t *n, size_t *cap) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
  if (!f) {
    perror(path);
    return 1;
  }
  char *line = NULL;
  size_t lcap = 0;
  ssize_t len;
  while ((len = getline(&line, &lcap, f)) > 0) {
    if (!strstr(line, "\"ledger\""))
      continue; /* cheap: most lines are statements */
    line_t l;
    if (!parse_line(line, (size_t)len, subject, &l) ||
        strcmp(l.event, "ledger") != 0 || !l.subject_match)
      continue;
    if (*n == *cap) {
      size_t nc = *cap ? *cap * 2 : 16;
      row_t *nr = realloc(*rows, nc * sizeof *nr);
      if (!nr)
        break;
      *rows = nr;
      *cap = nc;
    }
    row_t *r = &(*rows)[(*n)++];
    snprintf(r->time, sizeof r->time, "%s", l.time);
    snprintf(r->role, sizeof r->role, "%s", l.role);
    snprintf(r->app, sizeof r->app, "%s", l.app);
    snprintf(r->client, sizeof r->client, "%s", l.client);
    snprintf(r->purpose, sizeof r->purpose, "%s", l.purpose);
    snprintf(r->columns, sizeof r->columns, "%s: %s", l.table, l.columns);
  }
  bool bad = ferror(f);
  free(line);
  if (f != stdin)
    fclose(f);
  if (bad) {
    fprintf(stderr, "pgveil ledger: cannot read %s\n", path);
    return 1;
  }
  return 0;
}

static const char USAGE[] =
    "usage: pgveil ledger --audit-log FILE [--audit-log FILE...] --subject ID\n"
    "Lists who saw a data subject's consent-gated data in clear: time, role,\n"
    "application_name, client address, purpose and columns. Pass rotated\n"
    "files too (oldest first). Exit 0, 1 when a file cannot be read.\n";

int pv_ledger_main(int argc, char **argv) {
  const char *files[MAX_FILES];
  size_t nfiles = 0;
  const char *subject = NULL;
  for (int i = 1; i < argc; i++) {
    bool has = i + 1 < argc;
    if (strcmp(argv[i], "--audit-log") == 0 && has && nfiles < MAX_FILES)
      files[nfiles++] = argv[++i];
    else if (strcmp(argv[i], "--subject") == 0 && has)
      subject = argv[++i];
    else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      fputs(USAGE, stdout);
      return 0;
    } else {
      fprintf(stderr, "pgveil ledger: unexpected argument \"%s\"\n%s", argv[i],
              USAGE);
      return 2;
    }
  }
  if (!nfiles || !subject) {
    fprintf(stderr, "pgveil ledger: --audit-log and --subject are required\n%s",
            USAGE);
    return 2;
  }
  row_t *rows = NULL;
  size_t n = 0, cap = 0;
  int rc = 0;
  for (size_t i = 0; i < nfiles; i++)
    rc |= scan_file(files[i], subject, &rows, &n, &cap);
  if (rc == 0) {
    printf("subject %s\n", subject);
    print_rows(stdout, rows, n);
  }
  free(rows);
  return rc;
}
