/* Owns the masking of text-like values (text, varchar, bpchar, name) and the
 * redaction of json/jsonb: typmod limits, char(n) padding, the
 * format-preserving hash. Pure: no I/O, no globals, no allocation. */
#include "mask_internal.h"

#include <openssl/crypto.h>
#include <string.h>

#define NAME_MAX_BYTES 63 /* NAMEDATALEN - 1 */
#define VARHDRSZ 4
#define EMAIL_STARS 3

/* What the column's type allows. */
typedef struct {
  size_t max_chars; /* varchar(n)/char(n): n; else SIZE_MAX */
  size_t max_bytes; /* name: 63; else SIZE_MAX */
  size_t pad_to;    /* char(n): n; else 0 */
} tlim_t;

/* Character writer honouring the limits: a character that does not fit
 * ends the output (no later, smaller character may slip in after it). */
typedef struct {
  pv__out_t *o;
  tlim_t lim;
  size_t start; /* o->n when the value started */
  size_t chars;
  bool full;
} tw_t;

static tlim_t text_limits(uint32_t oid, int32_t typmod) {
  tlim_t l = {SIZE_MAX, SIZE_MAX, 0};
  if (oid == PV_OID_NAME)
    l.max_bytes = NAME_MAX_BYTES;
  if ((oid == PV_OID_VARCHAR || oid == PV_OID_BPCHAR) && typmod >= VARHDRSZ)
    l.max_chars = (size_t)(typmod - VARHDRSZ);
  if (oid == PV_OID_BPCHAR && typmod >= VARHDRSZ)
    l.pad_to = (size_t)(typmod - VARHDRSZ);
  return l;
}

/* Length of the character at s[0..n): a well-formed UTF-8 sequence, else
 * one byte (other client encodings, or garbage: still one character). */
static size_t seqlen(const uint8_t *s, size_t n) {
  size_t len;
  if (s[0] < 0x80)
    return 1;
  if (s[0] >= 0xc2 && s[0] <= 0xdf)
    len = 2;
  else if (s[0] >= 0xe0 && s[0] <= 0xef)
    len = 3;
  else if (s[0] >= 0xf0 && s[0] <= 0xf4)
    len = 4;
  else
    return 1;
  if (n < len)
    return 1;
  for (size_t i = 1; i < len; i++)
    if ((s[i] & 0xc0) != 0x80)
      return 1;
  return len;
}

static size_t count_chars(const uint8_t *s, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; i += seqlen(s + i, n - i))
    c++;
  return c;
}

static void tw_char(tw_t *w, const void *c, size_t n) {
  if (w->full || w->chars >= w->lim.max_chars ||
      w->o->n - w->start + n > w->lim.max_bytes) {
    w->full = true;
    return;
  }
  pv__put(w->o, c, n);
  w->chars++;
}

static void tw_byte(tw_t *w, uint8_t c) { tw_char(w, &c, 1); }

static void tw_str(tw_t *w, const uint8_t *s, size_t n) {
  for (size_t i = 0; i < n;) {
    size_t l = seqlen(s + i, n - i);
    tw_char(w, s + i, l);
    i += l;
  }
}

static int64_t tw_finish(tw_t *w) {
  while (w->chars < w->lim.pad_to) {
    pv__putc(w->o, ' ');
    w->chars++;
  }
  return pv__out_result(w->o);
}

static void hash_text(const pv_mask_key_t *k, const char *col, const uint8_t *v,
                      size_t len, tw_t *w) {
  pv__hmac_t h;
  uint8_t seed[32];
  pv__stream_t st;
  pv__hmac_begin(&h, k, MK_TAG_TEXT, col);
  pv__hmac_update(&h, v, len);
  pv__hmac_final(&h, k, seed);
  pv__stream_init(&st, k, seed);
  OPENSSL_cleanse(seed, sizeof seed);
  for (size_t i = 0; i < len && !w->full;) {
    size_t l = seqlen(v + i, len - i);
    uint8_t c = v[i];
    /* a non-ASCII letter we cannot classify becomes a lowercase one */
    if ((c >= 'a' && c <= 'z') || c >= 0x80)
      tw_byte(w, (uint8_t)('a' + pv__stream_uniform(&st, 26)));
    else if (c >= 'A' && c <= 'Z')
      tw_byte(w, (uint8_t)('A' + pv__stream_uniform(&st, 26)));
    else if (c >= '0' && c <= '9')
      tw_byte(w, (uint8_t)('0' + pv__stream_uniform(&st, 10)));
    else
      tw_byte(w, c);
    i += l;
  }
  pv__stream_wipe(&st);
}

static void hash_hex(const pv_mask_key_t *k, const char *col, const uint8_t *v,
                     size_t len, tw_t *w) {
  static const char hex[] = "0123456789abcdef";
  pv__hmac_t h;
  uint8_t mac[32];
  pv__hmac_begin(&h, k, MK_TAG_HEX, col);
  pv__hmac_update(&h, v, len);
  pv__hmac_final(&h, k, mac);
  for (size_t i = 0; i < sizeof mac; i++) {
    tw_byte(w, (uint8_t)hex[mac[i] >> 4]);
    tw_byte(w, (uint8_t)hex[mac[i] & 15]);
  }
  OPENSSL_cleanse(mac, sizeof mac);
}

static void mask_chars(const pv_action_t *a, const uint8_t *v, size_t len,
                       tw_t *w) {
  size_t total = count_chars(v, len);
  size_t kf = a->keep_first, kl = a->keep_last;
  if (kf + kl >= total)
    kf = kl = 0; /* keeping everything would be clear */
  size_t idx = 0;
  for (size_t i = 0; i < len; idx++) {
    size_t l = seqlen(v + i, len - i);
    if (idx < kf || idx >= total - kl)
      tw_char(w, v + i, l);
    else
      tw_byte(w, (uint8_t)a->mask_char);
    i += l;
  }
}

static void mask_email(const uint8_t *v, size_t len, tw_t *w) {
  const uint8_t *at = NULL;
  for (size_t i = len; i > 0; i--)
    if (v[i - 1] == '@') {
      at = v + i - 1;
      break;
    }
  size_t local_len = at ? (size_t)(at - v) : len;
  size_t first = local_len ? seqlen(v, local_len) : 0;
  size_t local_chars = count_chars(v, local_len);
  size_t dom_len = at ? len - local_len - 1 : 0;
  size_t dom_chars = count_chars(v + len - dom_len, dom_len);
  size_t stars = EMAIL_STARS;
  size_t out_chars = (first ? 1 : 0) + stars + (at ? 1 + dom_chars : 0);
  size_t out_bytes = first + stars + (at ? 1 + dom_len : 0);
  if (out_chars > w->lim.max_chars || out_bytes > w->lim.max_bytes)
    stars = local_chars ? local_chars - 1 : 0; /* as long as the input */
  if (first)
    tw_char(w, v, first);
  for (size_t i = 0; i < stars; i++)
    tw_byte(w, '*');
  if (at) {
    tw_byte(w, '@');
    tw_str(w, at + 1, dom_len);
  }
}

static void zip3(const uint8_t *v, size_t len, tw_t *w) {
  size_t idx = 0;
  for (size_t i = 0; i < len; idx++) {
    size_t l = seqlen(v + i, len - i);
    uint8_t c = v[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c >= '0' && c <= '9') || c >= 0x80;
    if (idx < 3)
      tw_char(w, v + i, l);
    else
      tw_byte(w, alnum ? '*' : c);
    i += l;
  }
}

int64_t pv__mask_text(const pv_action_t *a, const pv_mask_key_t *k,
                      const char *col, uint32_t oid, int32_t typmod,
                      const uint8_t *val, size_t len, pv__out_t *o) {
  tw_t w = {o, text_limits(oid, typmod), o->n, 0, false};
  if (memchr(val, 0, len))
    return PV_EPROTO; /* text never holds NUL */
  /* char(n) blanks are padding, not data (PostgreSQL ignores them in
   * comparisons): hash and mask the value without them, pad again. */
  if (oid == PV_OID_BPCHAR)
    while (len && val[len - 1] == ' ')
      len--;
  switch (a->kind) {
  case PV_ACT_REDACT:
    tw_str(&w, (const uint8_t *)a->redact, a->redact_len);
    break;
  case PV_ACT_HASH:
    hash_text(k, col, val, len, &w);
    break;
  case PV_ACT_HASH_HEX:
    hash_hex(k, col, val, len, &w);
    break;
  case PV_ACT_MASK:
    mask_chars(a, val, len, &w);
    break;
  case PV_ACT_MASK_EMAIL:
    mask_email(val, len, &w);
    break;
  case PV_ACT_GENERALIZE:
    if (a->gen != PV_GEN_ZIP3)
      return PV_MASK_NULL;
    zip3(val, len, &w);
    break;
  default:
    return PV_MASK_NULL;
  }
  return tw_finish(&w);
}

/* json/jsonb: the constant as a JSON string; jsonb's binary form is a
 * version byte (1) then the text. */
int64_t pv__mask_json_redact(const pv_action_t *a, uint32_t oid, int16_t format,
                             pv__out_t *o) {
  if (oid == PV_OID_JSONB && format == 1)
    pv__putc(o, 1);
  pv__putc(o, '"');
  for (size_t i = 0; i < a->redact_len; i++) {
    uint8_t c = (uint8_t)a->redact[i];
    if (c == '"' || c == '\\') {
      pv__putc(o, '\\');
      pv__putc(o, c);
    } else if (c < 0x20) { /* the parser refuses these; stay valid anyway */
      static const char hex[] = "0123456789abcdef";
      uint8_t esc[6] = {
          '\\', 'u', '0', '0', (uint8_t)hex[c >> 4], (uint8_t)hex[c & 15]};
      pv__put(o, esc, sizeof esc);
    } else {
      pv__putc(o, c);
    }
  }
  pv__putc(o, '"');
  return pv__out_result(o);
}
