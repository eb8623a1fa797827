/* Owns the audit log's text: JSON escaping, entry lines, the statement
 * fingerprint and the explanation notice. Pure: no I/O, no globals; never
 * handles a protected value (entries carry names, actions and counts). */
#include "pgveil/audit.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

/* ---- a bounded text builder ------------------------------------------- */

typedef struct {
  char *p;
  size_t cap, len; /* len may pass cap: then the output is truncated */
} sb_t;

static void sb_raw(sb_t *b, const char *s, size_t n) {
  if (b->len < b->cap) {
    size_t room = b->cap - b->len;
    memcpy(b->p + b->len, s, n < room ? n : room);
  }
  b->len += n;
}

static void sb_str(sb_t *b, const char *s) { sb_raw(b, s, strlen(s)); }

static void sb_fmt(sb_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void sb_fmt(sb_t *b, const char *fmt, ...) {
  char tmp[64];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n > 0)
    sb_raw(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A JSON string value, or null. */
static void sb_json(sb_t *b, const char *s) {
  if (!s) {
    sb_str(b, "null");
    return;
  }
  sb_raw(b, "\"", 1);
  size_t room = b->len < b->cap ? b->cap - b->len : 0;
  size_t n =
      pv_audit_json_escape(s, strlen(s), room ? b->p + b->len : NULL, room);
  b->len += n;
  sb_raw(b, "\"", 1);
}

static void sb_key(sb_t *b, const char *key) { sb_fmt(b, ",\"%s\":", key); }

/* ---- JSON escaping ----------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t left) {
  unsigned char c = s[0];
  size_t n;
  uint32_t min, cp;
  if (c < 0x80)
    return 1;
  if ((c & 0xE0) == 0xC0)
    n = 2, min = 0x80, cp = c & 0x1F;
  else if ((c & 0xF0) == 0xE0)
    n = 3, min = 0x800, cp = c & 0x0F;
  else if ((c & 0xF8) == 0xF0)
    n = 4, min = 0x10000, cp = c & 0x07;
  else
    return 0;
  if (n > left)
    return 0;
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return 0;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return n;
}

size_t pv_audit_json_escape(const char *s, size_t len, char *out, size_t cap) {
  sb_t b = {out, cap ? cap - 1 : 0, 0};
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < len;) {
    unsigned char c = u[i];
    size_t n = utf8_len(u + i, len - i);
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      sb_raw(&b, e, 2);
    } else if (c == '\n') {
      sb_raw(&b, "\\n", 2);
    } else if (c == '\t') {
      sb_raw(&b, "\\t", 2);
    } else if (c == '\r') {
      sb_raw(&b, "\\r", 2);
    } else if (c < 0x20 || c == 0x7F || n == 0) {
      sb_fmt(&b, "\\u%04x", c); /* control, DEL, or a stray byte */
      n = 1;
    } else {
      sb_raw(&b, s + i, n);
    }
    i += n ? n : 1;
  }
  if (cap)
    out[b.len < cap ? b.len : cap - 1] = '\0';
  return b.len;
}

/* ---- entries ------------------------------------------------------------ */

static void sb_action(sb_t *b, const pv_action_t *a) {
  char text[PV_REDACT_MAX + 64];
  pv_action_format(a, text, sizeof text);
  sb_json(b, text);
}

static void sb_qualified(sb_t *b, const char *schema, const char *table) {
  char name[2 * 64 + 2];
  snprintf(name, sizeof name, "%s.%s", schema ? schema : "?",
           table ? table : "?");
  sb_json(b, name);
}

/* True when touched[i]'s table already appeared before i. */
static bool seen_table(const pv_guard_touch_t *t, size_t i) {
  for (size_t j = 0; j < i; j++)
    if (strcmp(t[j].schema ? t[j].schema : "",
               t[i].schema ? t[i].schema : "") == 0 &&
        strcmp(t[j].table ? t[j].table : "", t[i].table ? t[i].table : "") == 0)
      return true;
  return false;
}

static void touched_into(sb_t *b, const pv_guard_touch_t *t, size_t n,
                         size_t upto) {
  sb_str(b, "\"tables\":[");
  bool first = true;
  for (size_t i = 0; i < n; i++) {
    if (seen_table(t, i))
      continue;
    if (!first)
      sb_raw(b, ",", 1);
    first = false;
    sb_qualified(b, t[i].schema, t[i].table);
  }
  sb_str(b, "],\"columns\":[");
  for (size_t i = 0; i < upto; i++) {
    sb_str(b, i ? ",{\"table\":" : "{\"table\":");
    sb_qualified(b, t[i].schema, t[i].table);
    sb_key(b, "column");
    sb_json(b, t[i].column);
    sb_key(b, "action");
    sb_action(b, &t[i].action);
    if (t[i].consent_required) {
      sb_str(b, ",\"consent\":\"required\",\"otherwise\":");
      sb_action(b, &t[i].otherwise);
    }
    sb_raw(b, "}", 1);
  }
  sb_raw(b, "]", 1);
  if (upto < n)
    sb_str(b, ",\"columns_truncated\":true");
}

int pv_audit_format_touched(const pv_guard_touch_t *t, size_t n, char *out,
                            size_t cap) {
  if (!cap)
    return PV_ELIMIT;
  /* Fewer columns until it fits: the entry stays valid JSON. */
  for (size_t upto = n;; upto = upto / 2) {
    sb_t b = {out, cap - 1, 0};
    touched_into(&b, t, n, upto);
    if (b.len < cap) {
      out[b.len] = '\0';
      return upto == n ? (int)b.len : PV_ELIMIT;
    }
    if (upto == 0) {
      out[0] = '\0';
      return PV_ELIMIT;
    }
  }
}

static const char *event_name(pv_audit_event_t e) {
  switch (e) {
  case PV_AUDIT_STATEMENT:
    return "statement";
  case PV_AUDIT_REFUSED:
    return "refused";
  case PV_AUDIT_LEDGER:
    return "ledger";
  }
  return "statement";
}

static void sb_time(sb_t *b, int64_t ms) {
  time_t sec = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&sec, &tm);
  char t[96];
  snprintf(t, sizeof t, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
           tm.tm_sec, (int)(ms % 1000));
  sb_json(b, t);
}

static void sb_list(sb_t *b, const char *const *v, size_t n) {
  sb_raw(b, "[", 1);
  for (size_t i = 0; i < n; i++) {
    if (i)
      sb_raw(b, ",", 1);
    sb_json(b, v[i]);
  }
  sb_raw(b, "]", 1);
}

int pv_audit_format_entry(const pv_audit_entry_t *e, char *out, size_t cap) {
  sb_t b = {out, cap ? cap - 1 : 0, 0};
  sb_str(&b, "{\"event\":");
  sb_json(&b, event_name(e->event));
  sb_key(&b, "time");
  sb_time(&b, e->time_ms);
  sb_fmt(&b, ",\"session\":%" PRIu64, e->session);
  sb_key(&b, "client");
  sb_json(&b, e->client);
  sb_key(&b, "role");
  sb_json(&b, e->role);
  sb_key(&b, "database");
  sb_json(&b, e->database);
  sb_key(&b, "application_name");
  sb_json(&b, e->application_name);
  sb_key(&b, "purpose");
  sb_json(&b, e->purpose);
  if (e->fingerprint)
    sb_fmt(&b, ",\"fingerprint\":\"%016" PRIx64 "\"", e->fingerprint);
  if (e->event != PV_AUDIT_LEDGER && e->detail && e->detail[0]) {
    sb_raw(&b, ",", 1);
    sb_str(&b, e->detail);
  }
  if (e->event == PV_AUDIT_STATEMENT) {
    sb_fmt(&b, ",\"rows\":%" PRIu64, e->rows);
    if (e->error)
      sb_str(&b, ",\"error\":true");
  } else if (e->event == PV_AUDIT_REFUSED) {
    sb_key(&b, "reason");
    sb_json(&b, e->reason);
  } else {
    sb_key(&b, "table");
    sb_json(&b, e->table);
    sb_key(&b, "columns");
    sb_list(&b, e->columns, e->ncolumns);
    sb_key(&b, "subjects");
    sb_list(&b, e->subjects, e->nsubjects);
    sb_fmt(&b, ",\"part\":%u", e->part);
  }
  sb_str(&b, "}\n");
  if (b.len >= cap) {
    if (cap)
      out[0] = '\0';
    return PV_ELIMIT;
  }
  out[b.len] = '\0';
  return (int)b.len;
}

/* ---- fingerprint --------------------------------------------------------- */

typedef struct {
  XXH3_state_t st;
  char buf[256];
  size_t n;
  bool space;         /* a separator is due before the next token */
  unsigned char last; /* last byte hashed */
} fp_t;

static bool ident_char(unsigned char c);

/* Whitespace counts only where it separates two words ("id = 1" and
 * "id=1" are the same statement). */
static void fp_put(fp_t *f, const char *s, size_t n) {
  bool word =
      n && (ident_char((unsigned char)s[0]) || s[0] == '?' || s[0] == '"');
  if (f->space && word &&
      (ident_char(f->last) || f->last == '?' || f->last == '"')) {
    f->space = false;
    fp_put(f, " ", 1);
  }
  f->space = false;
  if (n)
    f->last = (unsigned char)s[n - 1];
  for (size_t i = 0; i < n; i++) {
    if (f->n == sizeof f->buf) {
      XXH3_64bits_update(&f->st, f->buf, f->n);
      f->n = 0;
    }
    f->buf[f->n++] = s[i];
  }
}

static bool ident_char(unsigned char c) {
  return isalnum(c) || c == '_' || c == '$' || c >= 0x80;
}

/* End of a quoted run starting at i (the opening quote): doubled quotes
 * stay inside; with backslashes (E'...') a backslash escapes one byte. */
static size_t skip_quoted(const char *s, size_t len, size_t i, char q,
                          bool backslash) {
  for (i++; i < len; i++) {
    if (backslash && s[i] == '\\') {
      i++;
      continue;
    }
    if (s[i] == q) {
      if (i + 1 < len && s[i + 1] == q) {
        i++;
        continue;
      }
      return i + 1;
    }
  }
  return len;
}

/* A dollar-quote tag at i ("$tag$" or "$$"): its length, or 0. */
static size_t dollar_tag(const char *s, size_t len, size_t i) {
  size_t j = i + 1;
  if (j < len && isdigit((unsigned char)s[j]))
    return 0; /* $1: a parameter */
  while (j < len && (isalnum((unsigned char)s[j]) || s[j] == '_' ||
                     (unsigned char)s[j] >= 0x80))
    j++;
  return j < len && s[j] == '$' ? j - i + 1 : 0;
}

static size_t skip_comment(const char *s, size_t len, size_t i) {
  if (s[i] == '-') {
    while (i < len && s[i] != '\n')
      i++;
    return i;
  }
  int depth = 0;
  while (i < len) {
    if (i + 1 < len && s[i] == '/' && s[i + 1] == '*') {
      depth++, i += 2;
    } else if (i + 1 < len && s[i] == '*' && s[i + 1] == '/') {
      i += 2;
      if (--depth == 0)
        return i;
    } else {
      i++;
    }
  }
  return len;
}

uint64_t pv_audit_fingerprint(const char *s, size_t len) {
  fp_t f;
  XXH3_64bits_reset(&f.st);
  f.n = 0;
  f.space = false;
  f.last = 0;
  size_t i = 0;
  while (i < len) {
    unsigned char c = (unsigned char)s[i];
    if (isspace(c)) {
      f.space = true;
      i++;
    } else if ((c == '-' && i + 1 < len && s[i + 1] == '-') ||
               (c == '/' && i + 1 < len && s[i + 1] == '*')) {
      i = skip_comment(s, len, i);
      f.space = true;
    } else if (c == '\'') {
      /* E'..' / e'..': the prefix was written as an identifier already. */
      bool esc = i > 0 && (s[i - 1] == 'e' || s[i - 1] == 'E');
      i = skip_quoted(s, len, i, '\'', esc);
      fp_put(&f, "?", 1);
    } else if (c == '"') {
      size_t j = skip_quoted(s, len, i, '"', false);
      fp_put(&f, s + i, j - i); /* a quoted identifier is exact */
      i = j;
    } else if (c == '$' && dollar_tag(s, len, i)) {
      size_t t = dollar_tag(s, len, i), j = i + t;
      while (j + t <= len && memcmp(s + j, s + i, t) != 0)
        j++;
      i = j + t <= len ? j + t : len;
      fp_put(&f, "?", 1);
    } else if (c == '$' || isdigit(c) ||
               (c == '.' && i + 1 < len && isdigit((unsigned char)s[i + 1]))) {
      i++; /* $n, 42, 4.2e-1, 0x1F: one placeholder */
      while (i < len &&
             (isalnum((unsigned char)s[i]) || s[i] == '.' || s[i] == '_' ||
              ((s[i] == '+' || s[i] == '-') &&
               (s[i - 1] == 'e' || s[i - 1] == 'E'))))
        i++;
      fp_put(&f, "?", 1);
    } else if (ident_char(c)) {
      char low[64];
      size_t n = 0;
      while (i < len && ident_char((unsigned char)s[i])) {
        if (n == sizeof low) {
          fp_put(&f, low, n);
          n = 0;
        }
        low[n++] = (char)tolower((unsigned char)s[i++]);
      }
      fp_put(&f, low, n);
    } else {
      fp_put(&f, (const char *)&s[i], 1);
      i++;
    }
  }
  XXH3_64bits_update(&f.st, f.buf, f.n);
  uint64_t h = XXH3_64bits_digest(&f.st);
  return h ? h : 1; /* 0 means "none" in entries */
}

/* ---- explanation --------------------------------------------------------- */

static const char *verb(const pv_action_t *a) {
  switch (a->kind) {
  case PV_ACT_CLEAR:
    return "shown";
  case PV_ACT_WITHHOLD:
    return "withheld";
  case PV_ACT_REDACT:
    return "redacted";
  case PV_ACT_HASH:
  case PV_ACT_HASH_HEX:
    return "hashed";
  case PV_ACT_MASK:
  case PV_ACT_MASK_EMAIL:
    return "masked";
  case PV_ACT_GENERALIZE:
    return "generalized";
  }
  return "rewritten";
}

size_t pv_audit_explain(const pv_row_actions_t *ra, const char *const *names,
                        const char *purpose, char *out, size_t cap) {
  if (!cap)
    return 0;
  sb_t b = {out, cap - 1, 0};
  bool any = false;
  for (uint16_t i = 0; i < ra->ncols; i++) {
    const pv_col_action_t *c = &ra->cols[i];
    if (!c->action)
      continue;
    sb_str(&b, any ? "; " : "pgveil: ");
    any = true;
    /* The client's own column name, made printable. */
    char nm[128];
    const char *n = names && names[i] ? names[i] : "?column?";
    pv_audit_json_escape(n, strlen(n), nm, sizeof nm);
    sb_str(&b, nm);
    sb_raw(&b, " ", 1);
    if (c->otherwise) {
      sb_str(&b, verb(c->otherwise));
      sb_str(&b, " (purpose ");
      sb_str(&b, purpose ? purpose : "none");
      sb_str(&b, ", without consent");
      if (c->action->kind != PV_ACT_CLEAR) {
        sb_str(&b, "; with consent ");
        sb_str(&b, verb(c->action));
      }
      sb_raw(&b, ")", 1);
    } else {
      sb_str(&b, verb(c->action));
      sb_str(&b, " (purpose ");
      sb_str(&b, purpose ? purpose : "none");
      sb_raw(&b, ")", 1);
    }
  }
  if (!any) {
    out[0] = '\0';
    return 0;
  }
  if (b.len > b.cap && b.cap >= 3) {
    memcpy(out + b.cap - 3, "...", 3);
    b.len = b.cap;
  }
  out[b.len] = '\0';
  return b.len;
}
