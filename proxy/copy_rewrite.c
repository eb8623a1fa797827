/* Owns parsing and re-encoding of COPY TO STDOUT rows in text and CSV
 * format (include/pgveil/copy_rewrite.h). Pure: no I/O, no globals, no
 * allocation. */
#include "pgveil/copy_rewrite.h"

#include <string.h>

#include "pgveil/mask.h"

void pv_copy_opts_default(pv_copy_opts_t *f, bool csv) {
  memset(f, 0, sizeof *f);
  f->csv = csv;
  f->delim = csv ? ',' : '\t';
  f->quote = '"';
  f->escape = '"';
  strcpy(f->null_str, csv ? "" : "\\N");
}

/* A raw field: bytes [start, end) of the row, before unescaping. */
typedef struct {
  size_t start, end;
  bool quoted; /* csv: the field was quoted */
} raw_field_t;

/* Finds the raw extent of the field beginning at *pos; advances *pos past
 * the delimiter or line end. Returns 1 with more fields following, 0 at the
 * last field, PV_EPROTO on malformed input. */
static int next_raw(const pv_copy_opts_t *f, const uint8_t *r, size_t len,
                    size_t *pos, raw_field_t *out) {
  size_t p = *pos;
  out->start = p;
  out->quoted = false;
  if (f->csv && p < len && r[p] == (uint8_t)f->quote) {
    out->quoted = true;
    p++;
    for (;;) {
      if (p >= len)
        return PV_EPROTO;
      if (r[p] == (uint8_t)f->escape && f->escape != f->quote && p + 1 < len &&
          (r[p + 1] == (uint8_t)f->quote || r[p + 1] == (uint8_t)f->escape)) {
        p += 2;
        continue;
      }
      if (r[p] == (uint8_t)f->quote) {
        if (f->escape == f->quote && p + 1 < len &&
            r[p + 1] == (uint8_t)f->quote) {
          p += 2;
          continue;
        }
        p++;
        break;
      }
      p++;
    }
  } else {
    while (p < len && r[p] != (uint8_t)f->delim && r[p] != '\n' &&
           r[p] != '\r') {
      if (!f->csv && r[p] == '\\' && p + 1 < len)
        p++; /* an escaped byte, e.g. "\<tab>", never ends the field */
      p++;
    }
  }
  out->end = p;
  if (p < len && r[p] == (uint8_t)f->delim) {
    *pos = p + 1;
    return 1;
  }
  /* The row must end here: "\n" or "\r\n". */
  if (p < len && r[p] == '\r')
    p++;
  if (p + 1 != len || r[p] != '\n')
    return PV_EPROTO;
  *pos = len;
  return 0;
}

static bool raw_is_null(const pv_copy_opts_t *f, const uint8_t *r,
                        const raw_field_t *rf) {
  size_t n = strlen(f->null_str);
  return !rf->quoted && rf->end - rf->start == n &&
         memcmp(r + rf->start, f->null_str, n) == 0;
}

static int hexval(uint8_t c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Text-format backslash escapes, as COPY FROM reads them. */
static size_t unescape_text(const uint8_t *s, size_t n, uint8_t *o) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] != '\\' || i + 1 >= n) {
      o[k++] = s[i];
      continue;
    }
    uint8_t c = s[++i];
    switch (c) {
    case 'b':
      o[k++] = '\b';
      break;
    case 'f':
      o[k++] = '\f';
      break;
    case 'n':
      o[k++] = '\n';
      break;
    case 'r':
      o[k++] = '\r';
      break;
    case 't':
      o[k++] = '\t';
      break;
    case 'v':
      o[k++] = '\v';
      break;
    case 'x': {
      int v = 0, d = 0;
      while (d < 2 && i + 1 < n && hexval(s[i + 1]) >= 0)
        v = v * 16 + hexval(s[++i]), d++;
      if (d == 0)
        o[k++] = 'x';
      else
        o[k++] = (uint8_t)v;
      break;
    }
    default:
      if (c >= '0' && c <= '7') {
        int v = c - '0', d = 1;
        while (d < 3 && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '7')
          v = v * 8 + (s[++i] - '0'), d++;
        o[k++] = (uint8_t)v;
      } else {
        o[k++] = c; /* "\\", "\<delim>", any other byte as itself */
      }
    }
  }
  return k;
}

static size_t unescape_csv(const pv_copy_opts_t *f, const uint8_t *s, size_t n,
                           bool quoted, uint8_t *o) {
  if (!quoted) {
    memcpy(o, s, n);
    return n;
  }
  size_t k = 0;
  for (size_t i = 1; i + 1 < n; i++) { /* inside the outer quotes */
    if ((s[i] == (uint8_t)f->escape || s[i] == (uint8_t)f->quote) && i + 2 < n)
      i++;
    o[k++] = s[i];
  }
  return k;
}

static size_t unescape(const pv_copy_opts_t *f, const uint8_t *r,
                       const raw_field_t *rf, uint8_t *o) {
  const uint8_t *s = r + rf->start;
  size_t n = rf->end - rf->start;
  return f->csv ? unescape_csv(f, s, n, rf->quoted, o) : unescape_text(s, n, o);
}

/* Encodes a value for the output; returns bytes written (o may be NULL to
 * count only). */
static size_t escape_value(const pv_copy_opts_t *f, const uint8_t *v, size_t n,
                           uint8_t *o) {
  size_t k = 0;
  if (f->csv) {
    if (o)
      o[k] = (uint8_t)f->quote;
    k++;
    for (size_t i = 0; i < n; i++) {
      if (v[i] == (uint8_t)f->quote || v[i] == (uint8_t)f->escape) {
        if (o)
          o[k] = (uint8_t)f->escape;
        k++;
      }
      if (o)
        o[k] = v[i];
      k++;
    }
    if (o)
      o[k] = (uint8_t)f->quote;
    return k + 1;
  }
  for (size_t i = 0; i < n; i++) {
    uint8_t c = v[i], e = 0;
    switch (c) {
    case '\\':
      e = '\\';
      break;
    case '\n':
      e = 'n';
      break;
    case '\r':
      e = 'r';
      break;
    case '\t':
      e = 't';
      break;
    case '\b':
      e = 'b';
      break;
    case '\f':
      e = 'f';
      break;
    case '\v':
      e = 'v';
      break;
    default:
      if (c == (uint8_t)f->delim)
        e = c;
    }
    if (e) {
      if (o) {
        o[k] = '\\';
        o[k + 1] = e;
      }
      k += 2;
    } else {
      if (o)
        o[k] = c;
      k++;
    }
  }
  return k;
}

static const pv_action_t *effective(const pv_col_action_t *c,
                                    const uint8_t *consent, uint16_t i) {
  if (c->otherwise && !(consent && consent[i]))
    return c->otherwise;
  return c->action;
}

/* Writes the NULL marker; returns its length. */
static size_t put_null(const pv_copy_opts_t *f, uint8_t *o) {
  size_t n = strlen(f->null_str);
  memcpy(o, f->null_str, n);
  return n;
}

int pv_copy_rewrite_row(const pv_row_actions_t *ra, const uint8_t *consent,
                        const pv_copy_opts_t *f, const uint8_t *row, size_t len,
                        uint8_t *out, size_t cap, size_t *needed, uint8_t *tmp,
                        size_t tmpcap) {
  if (tmpcap < len)
    return PV_ELIMIT;
  /* Bound: raw copy of everything plus, per acted field, the escaped
   * maximum of its masked value (every byte escaped: x2, plus quotes). */
  size_t bound = len + 2, pos = 0;
  raw_field_t rf;
  uint16_t i = 0;
  int more = 1;
  while (more == 1) {
    if (i >= ra->ncols)
      return PV_EPROTO;
    more = next_raw(f, row, len, &pos, &rf);
    if (more < 0)
      return PV_EPROTO;
    const pv_action_t *a = effective(&ra->cols[i], consent, i);
    if (a && a->kind != PV_ACT_CLEAR)
      bound += 2 * pv_mask_out_max(a, ra->cols[i].type_oid, ra->cols[i].typmod,
                                   rf.end - rf.start) +
               PV_COPY_NULL_MAX + 2;
    i++;
  }
  if (i != ra->ncols)
    return PV_EPROTO;
  *needed = bound;
  if (bound > cap)
    return PV_ELIMIT;
  size_t k = 0;
  pos = 0;
  for (i = 0, more = 1; more == 1; i++) {
    more = next_raw(f, row, len, &pos, &rf);
    const pv_col_action_t *c = &ra->cols[i];
    const pv_action_t *a = effective(c, consent, i);
    if (!a || a->kind == PV_ACT_CLEAR || raw_is_null(f, row, &rf)) {
      memcpy(out + k, row + rf.start, rf.end - rf.start);
      k += rf.end - rf.start;
    } else {
      size_t vlen = unescape(f, row, &rf, tmp);
      /* Masked value goes to the end of out, then is escaped in place. */
      size_t room = (cap - k) / 2;
      uint8_t *mv = out + cap - room;
      int64_t n = a->kind == PV_ACT_WITHHOLD
                      ? PV_MASK_NULL
                      : pv_mask_apply(a, c->key, c->column_id, c->type_oid,
                                      c->typmod, 0, tmp, vlen, mv, room);
      if (n < 0)
        k += put_null(f, out + k);
      else if (escape_value(f, mv, (size_t)n, NULL) > (size_t)(mv - out) - k)
        return PV_ELIMIT;
      else
        k += escape_value(f, mv, (size_t)n, out + k);
    }
    out[k++] = more == 1 ? (uint8_t)f->delim : '\n';
  }
  return (int)k;
}

int pv_copy_field(const pv_copy_opts_t *f, const uint8_t *row, size_t len,
                  uint16_t i, uint8_t *tmp, size_t tmpcap, size_t *vlen,
                  bool *is_null) {
  if (tmpcap < len)
    return PV_ELIMIT;
  size_t pos = 0;
  raw_field_t rf;
  for (uint16_t k = 0;; k++) {
    int more = next_raw(f, row, len, &pos, &rf);
    if (more < 0)
      return PV_EPROTO;
    if (k == i) {
      *is_null = raw_is_null(f, row, &rf);
      *vlen = *is_null ? 0 : unescape(f, row, &rf, tmp);
      return PV_OK;
    }
    if (more == 0)
      return PV_EPROTO;
  }
}
