/* Owns the parser and canonical printer of action specs (pgveil/action.h):
 * `name` or `name(arg, key=value, ...)`. Pure: no I/O, no globals. */
#include "pgveil/action.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define KEEP_MAX 1000 /* keep_first / keep_last */

/* Parser state over spec[0..len). */
typedef struct {
  const char *s;
  size_t len;
  size_t pos;
  char *err;
  size_t errcap;
  size_t *err_offset;
} pstate_t;

/* One argument value as written. */
typedef enum { VAL_NONE = 0, VAL_IDENT, VAL_INT, VAL_STRING } val_kind_t;

typedef struct {
  val_kind_t kind;
  size_t off;        /* where the value starts */
  const char *ident; /* VAL_IDENT: points into spec */
  size_t ident_len;
  int64_t num;                 /* VAL_INT */
  char str[PV_REDACT_MAX + 2]; /* VAL_STRING, NUL-terminated */
  size_t str_len;              /* may exceed PV_REDACT_MAX: too long */
} val_t;

static const char *const kind_names[] = {
    [PV_ACT_CLEAR] = "clear",           [PV_ACT_WITHHOLD] = "withhold",
    [PV_ACT_REDACT] = "redact",         [PV_ACT_HASH] = "hash",
    [PV_ACT_HASH_HEX] = "hash",         [PV_ACT_MASK] = "mask",
    [PV_ACT_MASK_EMAIL] = "mask_email", [PV_ACT_GENERALIZE] = "generalize",
};

static const char *const gen_names[] = {
    [PV_GEN_YEAR] = "year",     [PV_GEN_MONTH] = "month",
    [PV_GEN_DECADE] = "decade", [PV_GEN_ZIP3] = "zip3",
    [PV_GEN_BUCKET] = "bucket",
};

const char *pv_action_name(pv_action_kind_t k) {
  if ((unsigned)k >= sizeof kind_names / sizeof kind_names[0])
    return "unknown";
  return kind_names[k];
}

/* Records the first error (later ones are consequences) and returns
 * PV_ESYNTAX so callers can `return fail(...)`. */
__attribute__((format(printf, 3, 4))) static int fail(pstate_t *p, size_t off,
                                                      const char *fmt, ...) {
  if (p->err && p->errcap) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, p->errcap, fmt, ap);
    va_end(ap);
  }
  if (p->err_offset)
    *p->err_offset = off;
  return PV_ESYNTAX;
}

static bool at_end(const pstate_t *p) { return p->pos >= p->len; }

static char peek(const pstate_t *p) {
  if (at_end(p))
    return '\0';
  return p->s[p->pos];
}

static void skip_ws(pstate_t *p) {
  while (!at_end(p) && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                        p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
    p->pos++;
}

static bool is_ident_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_ident_char(char c) {
  return is_ident_start(c) || (c >= '0' && c <= '9');
}

/* Case-insensitive comparison of an identifier with a lowercase word:
 * rules files are written by people, SQL keywords are case-insensitive. */
static bool ident_is(const char *id, size_t n, const char *word) {
  size_t wl = strlen(word);
  if (n != wl)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = id[i];
    if (c >= 'A' && c <= 'Z')
      c = (char)(c - 'A' + 'a');
    if (c != word[i])
      return false;
  }
  return true;
}

static void read_ident(pstate_t *p, const char **id, size_t *n) {
  size_t start = p->pos;
  while (!at_end(p) && is_ident_char(p->s[p->pos]))
    p->pos++;
  *id = p->s + start;
  *n = p->pos - start;
}

/* Length of the valid UTF-8 sequence at s[0..n), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t len;
  uint32_t cp;
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf) {
    len = 2;
    cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (n < len)
    return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
      (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
    return 0;
  return len;
}

/* '...' with '' for a quote. The constant must be printable UTF-8: it is
 * sent to clients as text (and as a JSON string for json columns). */
static int read_string(pstate_t *p, val_t *v) {
  size_t start = p->pos;
  p->pos++; /* opening quote */
  v->str_len = 0;
  for (;;) {
    if (at_end(p))
      return fail(p, start, "unterminated string: expected a closing '");
    unsigned char c = (unsigned char)p->s[p->pos];
    if (c == '\'') {
      if (p->pos + 1 < p->len && p->s[p->pos + 1] == '\'') {
        p->pos++;
      } else {
        p->pos++;
        break;
      }
    } else if (c < 0x20 || c == 0x7f) {
      return fail(p, p->pos,
                  "control character in string: expected printable text");
    } else if (c >= 0x80) {
      size_t n =
          utf8_seq((const unsigned char *)p->s + p->pos, p->len - p->pos);
      if (n == 0)
        return fail(p, p->pos, "invalid UTF-8 in string");
      for (size_t i = 0; i < n; i++, p->pos++)
        if (v->str_len < sizeof v->str - 1)
          v->str[v->str_len++] = p->s[p->pos];
        else
          v->str_len = sizeof v->str; /* marks "too long" */
      continue;
    }
    if (v->str_len < sizeof v->str - 1)
      v->str[v->str_len++] = (char)c;
    else
      v->str_len = sizeof v->str;
    p->pos++;
  }
  if (v->str_len < sizeof v->str)
    v->str[v->str_len] = '\0';
  else
    v->str[sizeof v->str - 1] = '\0';
  v->kind = VAL_STRING;
  return PV_OK;
}

static int read_int(pstate_t *p, val_t *v) {
  size_t start = p->pos;
  bool neg = false;
  if (peek(p) == '-' || peek(p) == '+') {
    neg = peek(p) == '-';
    p->pos++;
  }
  if (!(peek(p) >= '0' && peek(p) <= '9'))
    return fail(p, start, "bad value: expected an integer");
  uint64_t mag = 0;
  uint64_t lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  while (peek(p) >= '0' && peek(p) <= '9') {
    uint64_t d = (uint64_t)(peek(p) - '0');
    if (mag > (lim - d) / 10)
      return fail(p, start, "integer out of range");
    mag = mag * 10 + d;
    p->pos++;
  }
  if (is_ident_char(peek(p)))
    return fail(p, p->pos, "bad value: expected digits only in an integer");
  v->kind = VAL_INT;
  v->num = neg ? (int64_t)(0 - mag) : (int64_t)mag;
  return PV_OK;
}

static int read_value(pstate_t *p, val_t *v) {
  v->off = p->pos;
  char c = peek(p);
  if (c == '\'')
    return read_string(p, v);
  if (c == '-' || c == '+' || (c >= '0' && c <= '9'))
    return read_int(p, v);
  if (is_ident_start(c)) {
    read_ident(p, &v->ident, &v->ident_len);
    v->kind = VAL_IDENT;
    return PV_OK;
  }
  if (at_end(p))
    return fail(p, p->pos, "missing ')': expected an argument");
  return fail(p, p->pos,
              "bad value: expected a quoted string, an integer or a word");
}

/* Per-action argument handling. `key` is NULL for a positional argument;
 * `index` counts positional arguments so far. */
typedef struct {
  bool seen_keep_first, seen_keep_last, seen_char, seen_gen;
  int positional;
} argstate_t;

static int set_keep(pstate_t *p, const val_t *v, const char *what,
                    uint16_t *dst, bool *seen, size_t key_off) {
  if (*seen)
    return fail(p, key_off, "%s given twice", what);
  *seen = true;
  if (v->kind != VAL_INT)
    return fail(p, v->off, "bad value for %s: expected an integer 0..%d", what,
                KEEP_MAX);
  if (v->num < 0)
    return fail(p, v->off, "%s must be >= 0", what);
  if (v->num > KEEP_MAX)
    return fail(p, v->off, "%s too large: at most %d", what, KEEP_MAX);
  *dst = (uint16_t)v->num;
  return PV_OK;
}

static int set_char(pstate_t *p, const val_t *v, pv_action_t *a, argstate_t *st,
                    size_t key_off) {
  if (st->seen_char)
    return fail(p, key_off, "char given twice");
  st->seen_char = true;
  if (v->kind != VAL_STRING || v->str_len != 1 || v->str[0] < 0x20 ||
      v->str[0] > 0x7e)
    return fail(p, v->off,
                "bad value for char: expected one ASCII printable character "
                "in quotes, e.g. char='#'");
  a->mask_char = v->str[0];
  return PV_OK;
}

static int arg_mask(pstate_t *p, const char *key, size_t klen, size_t key_off,
                    const val_t *v, pv_action_t *a, argstate_t *st) {
  if (!key) {
    switch (st->positional++) {
    case 0:
      return set_keep(p, v, "keep_first", &a->keep_first, &st->seen_keep_first,
                      v->off);
    case 1:
      return set_keep(p, v, "keep_last", &a->keep_last, &st->seen_keep_last,
                      v->off);
    case 2:
      return set_char(p, v, a, st, v->off);
    default:
      return fail(p, v->off,
                  "too many arguments: mask takes keep_first, "
                  "keep_last and char");
    }
  }
  if (ident_is(key, klen, "keep_first"))
    return set_keep(p, v, "keep_first", &a->keep_first, &st->seen_keep_first,
                    key_off);
  if (ident_is(key, klen, "keep_last"))
    return set_keep(p, v, "keep_last", &a->keep_last, &st->seen_keep_last,
                    key_off);
  if (ident_is(key, klen, "char"))
    return set_char(p, v, a, st, key_off);
  return fail(p, key_off,
              "unknown argument '%.*s': expected keep_first, keep_last or char",
              (int)klen, key);
}

static int arg_generalize(pstate_t *p, const char *key, size_t klen,
                          size_t key_off, const val_t *v, pv_action_t *a,
                          argstate_t *st) {
  if (st->seen_gen)
    return fail(p, key ? key_off : v->off, "generalize takes one argument");
  st->seen_gen = true;
  if (key) {
    if (!ident_is(key, klen, "bucket"))
      return fail(p, key_off,
                  "unknown argument '%.*s': expected year, month, decade, "
                  "zip3 or bucket=N",
                  (int)klen, key);
    if (v->kind != VAL_INT)
      return fail(p, v->off, "bad value for bucket: expected an integer > 0");
    if (v->num <= 0)
      return fail(p, v->off, "bucket must be > 0");
    a->gen = PV_GEN_BUCKET;
    a->bucket = v->num;
    return PV_OK;
  }
  if (v->kind == VAL_IDENT) {
    for (int g = PV_GEN_YEAR; g <= PV_GEN_ZIP3; g++)
      if (ident_is(v->ident, v->ident_len, gen_names[g])) {
        a->gen = (pv_generalize_t)g;
        return PV_OK;
      }
    if (ident_is(v->ident, v->ident_len, "bucket"))
      return fail(p, v->off, "bucket needs a size: expected bucket=N");
  }
  return fail(p, v->off,
              "bad value: expected year, month, decade, zip3 or bucket=N");
}

static int arg_one(pstate_t *p, const char *key, size_t klen, size_t key_off,
                   const val_t *v, pv_action_t *a, argstate_t *st) {
  switch (a->kind) {
  case PV_ACT_REDACT:
    if (key)
      return fail(p, key_off,
                  "unknown argument '%.*s': redact takes one quoted constant",
                  (int)klen, key);
    if (st->positional++ > 0)
      return fail(p, v->off, "too many arguments: redact takes one constant");
    if (v->kind != VAL_STRING)
      return fail(p, v->off,
                  "bad value: expected a quoted string, e.g. "
                  "redact('[redacted]')");
    if (v->str_len > PV_REDACT_MAX)
      return fail(p, v->off, "redact constant too long: at most %d bytes",
                  PV_REDACT_MAX);
    memcpy(a->redact, v->str, v->str_len + 1);
    a->redact_len = (uint16_t)v->str_len;
    return PV_OK;
  case PV_ACT_HASH:
  case PV_ACT_HASH_HEX:
    if (key)
      return fail(p, key_off, "unknown argument '%.*s': expected hex",
                  (int)klen, key);
    if (st->positional++ > 0)
      return fail(p, v->off, "too many arguments: hash takes at most hex");
    if (v->kind != VAL_IDENT || !ident_is(v->ident, v->ident_len, "hex"))
      return fail(p, v->off, "bad value: expected hex");
    a->kind = PV_ACT_HASH_HEX;
    return PV_OK;
  case PV_ACT_MASK:
    return arg_mask(p, key, klen, key_off, v, a, st);
  case PV_ACT_GENERALIZE:
    return arg_generalize(p, key, klen, key_off, v, a, st);
  default:
    return fail(p, key ? key_off : v->off, "%s takes no arguments",
                pv_action_name(a->kind));
  }
}

/* One `value` or `key = value`. */
static int parse_arg(pstate_t *p, pv_action_t *a, argstate_t *st) {
  val_t v;
  memset(&v, 0, sizeof v);
  size_t start = p->pos;
  int rc = read_value(p, &v);
  if (rc < 0)
    return rc;
  skip_ws(p);
  if (v.kind == VAL_IDENT && peek(p) == '=') {
    const char *key = v.ident;
    size_t klen = v.ident_len;
    p->pos++;
    skip_ws(p);
    memset(&v, 0, sizeof v);
    if (at_end(p) || peek(p) == ',' || peek(p) == ')')
      return fail(p, p->pos, "bad value: expected a value after '='");
    rc = read_value(p, &v);
    if (rc < 0)
      return rc;
    skip_ws(p);
    return arg_one(p, key, klen, start, &v, a, st);
  }
  return arg_one(p, NULL, 0, start, &v, a, st);
}

static int parse_args(pstate_t *p, pv_action_t *a, argstate_t *st) {
  size_t open = p->pos;
  p->pos++; /* '(' */
  skip_ws(p);
  if (peek(p) == ')') {
    p->pos++;
    return PV_OK;
  }
  for (;;) {
    if (at_end(p))
      return fail(p, p->pos, "missing ')' for '(' at offset %zu", open);
    int rc = parse_arg(p, a, st);
    if (rc < 0)
      return rc;
    if (peek(p) == ',') {
      p->pos++;
      skip_ws(p);
      continue;
    }
    if (peek(p) == ')') {
      p->pos++;
      return PV_OK;
    }
    if (at_end(p))
      return fail(p, p->pos, "missing ')' for '(' at offset %zu", open);
    return fail(p, p->pos, "expected ',' or ')'");
  }
}

static int lookup_kind(pstate_t *p, const char *id, size_t n, size_t off,
                       pv_action_kind_t *k) {
  static const pv_action_kind_t order[] = {
      PV_ACT_CLEAR, PV_ACT_WITHHOLD,   PV_ACT_REDACT,    PV_ACT_HASH,
      PV_ACT_MASK,  PV_ACT_MASK_EMAIL, PV_ACT_GENERALIZE};
  for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
    if (ident_is(id, n, kind_names[order[i]])) {
      *k = order[i];
      return PV_OK;
    }
  return fail(p, off,
              "unknown action '%.*s': expected clear, withhold, redact, hash, "
              "mask, mask_email or generalize",
              (int)(n > 64 ? 64 : n), id);
}

/* Arguments an action cannot do without. */
static int check_required(pstate_t *p, const pv_action_t *a, size_t off) {
  if (a->kind == PV_ACT_GENERALIZE && a->gen == 0)
    return fail(p, off,
                "generalize needs one of year, month, decade, zip3, bucket=N");
  return PV_OK;
}

int pv_action_parse(const char *spec, size_t len, pv_action_t *out, char *err,
                    size_t errcap, size_t *err_offset) {
  pstate_t p = {spec, len, 0, err, errcap, err_offset};
  pv_action_t a;
  argstate_t st;
  memset(&a, 0, sizeof a);
  memset(&st, 0, sizeof st);
  a.mask_char = '*';
  if (err && errcap)
    err[0] = '\0';
  if (err_offset)
    *err_offset = 0;
  if (!spec)
    return fail(&p, 0, "expected an action name");

  skip_ws(&p);
  if (!is_ident_start(peek(&p)))
    return fail(&p, p.pos, "expected an action name");
  size_t name_off = p.pos;
  const char *id;
  size_t n;
  read_ident(&p, &id, &n);
  int rc = lookup_kind(&p, id, n, name_off, &a.kind);
  if (rc < 0)
    return rc;
  skip_ws(&p);
  if (peek(&p) == '(') {
    rc = parse_args(&p, &a, &st);
    if (rc < 0)
      return rc;
    skip_ws(&p);
  }
  if (!at_end(&p))
    return fail(&p, p.pos, "unexpected text: expected '(' or end of action");
  if (a.kind == PV_ACT_REDACT && st.positional == 0)
    return fail(&p, p.pos,
                "redact needs a quoted constant, e.g. redact('[redacted]')");
  rc = check_required(&p, &a, p.pos);
  if (rc < 0)
    return rc;
  *out = a;
  return PV_OK;
}

/* Appends to out[0..cap) keeping it NUL-terminated; *n counts what would
 * have been written so truncation is detectable. */
static void put(char *out, size_t cap, size_t *n, const char *s, size_t len) {
  for (size_t i = 0; i < len; i++, (*n)++)
    if (*n + 1 < cap)
      out[*n] = s[i];
}

static void put_quoted(char *out, size_t cap, size_t *n, const char *s,
                       size_t len) {
  put(out, cap, n, "'", 1);
  for (size_t i = 0; i < len; i++) {
    if (s[i] == '\'')
      put(out, cap, n, "''", 2);
    else
      put(out, cap, n, s + i, 1);
  }
  put(out, cap, n, "'", 1);
}

size_t pv_action_format(const pv_action_t *a, char *out, size_t cap) {
  size_t n = 0;
  char num[96];
  const char *name = pv_action_name(a->kind);
  put(out, cap, &n, name, strlen(name));
  switch (a->kind) {
  case PV_ACT_REDACT:
    put(out, cap, &n, "(", 1);
    put_quoted(out, cap, &n, a->redact, a->redact_len);
    put(out, cap, &n, ")", 1);
    break;
  case PV_ACT_HASH_HEX:
    put(out, cap, &n, "(hex)", 5);
    break;
  case PV_ACT_MASK:
    snprintf(num, sizeof num,
             "(keep_first=%u, keep_last=%u, char=", (unsigned)a->keep_first,
             (unsigned)a->keep_last);
    put(out, cap, &n, num, strlen(num));
    put_quoted(out, cap, &n, &a->mask_char, 1);
    put(out, cap, &n, ")", 1);
    break;
  case PV_ACT_GENERALIZE:
    if (a->gen == PV_GEN_BUCKET)
      snprintf(num, sizeof num, "(bucket=%lld)", (long long)a->bucket);
    else if (a->gen >= PV_GEN_YEAR && a->gen <= PV_GEN_ZIP3)
      snprintf(num, sizeof num, "(%s)", gen_names[a->gen]);
    else
      snprintf(num, sizeof num, "(?)");
    put(out, cap, &n, num, strlen(num));
    break;
  default:
    break;
  }
  if (cap)
    out[n < cap ? n : cap - 1] = '\0';
  return n < cap ? n : (cap ? cap - 1 : 0);
}
