/* Owns framing of PostgreSQL v3 messages: regular typed messages and the
 * untyped startup-phase packets. Pure: no I/O, no globals, copies nothing. */
#include "pgveil/pg_frame.h"

#include <limits.h>
#include <string.h>

#define STARTUP_MIN 8u    /* int32 length + int32 code */
#define CANCEL_FIXED 12u  /* length + code + pid */
#define CANCEL_KEY_MIN 4u /* protocol 3.0 keys are exactly 4 bytes */
#define PROTO_MAJOR_3 3u

int pv_frame_parse(const uint8_t *buf, size_t n, uint32_t max_body,
                   pv_msg_t *out) {
  if (n < PV_FRAME_HEADER)
    return PV_EAGAIN;
  uint32_t wire = pv_get_u32(buf + 1);
  /* The wire length is a signed int32 that counts itself. */
  if (wire < 4 || wire > (uint32_t)INT32_MAX)
    return PV_EPROTO;
  uint32_t len = wire - 4;
  /* Checked before the body arrives so a peer cannot make us buffer it;
   * the second bound keeps the returned size representable as int. */
  if (len > max_body || len > (uint32_t)INT_MAX - PV_FRAME_HEADER)
    return PV_ETOOBIG;
  out->type = buf[0];
  out->len = len;
  out->body = NULL;
  if (n - PV_FRAME_HEADER < len)
    return PV_EAGAIN;
  out->body = buf + PV_FRAME_HEADER;
  return (int)(PV_FRAME_HEADER + len);
}

/* CancelRequest: pid then a key of 4..PV_CANCEL_KEY_MAX bytes (3.2). */
static int parse_cancel(const uint8_t *buf, uint32_t len, pv_startup_t *out) {
  if (len < CANCEL_FIXED + CANCEL_KEY_MIN ||
      len > CANCEL_FIXED + PV_CANCEL_KEY_MAX)
    return PV_EPROTO;
  out->kind = PV_STARTUP_CANCEL;
  out->cancel_pid = pv_get_u32(buf + 8);
  out->cancel_key = buf + CANCEL_FIXED;
  out->cancel_key_len = len - CANCEL_FIXED;
  return (int)len;
}

/* One NUL-terminated string at buf[*pos..end). OUT: *s; advances *pos. */
static int take_cstr(const uint8_t *buf, size_t *pos, size_t end,
                     const char **s) {
  const uint8_t *nul = memchr(buf + *pos, 0, end - *pos);
  if (!nul)
    return PV_EPROTO;
  *s = (const char *)(buf + *pos);
  *pos = (size_t)(nul - buf) + 1;
  return PV_OK;
}

/* StartupMessage body: key\0val\0 pairs, then a final \0 as last byte.
 * Duplicate keys are kept: the server decides what they mean. */
static int parse_params(const uint8_t *buf, uint32_t len, pv_param_t *params,
                        size_t max_params, pv_startup_t *out) {
  size_t pos = STARTUP_MIN, n = 0;
  int have_user = 0;
  for (;;) {
    if (pos >= len)
      return PV_EPROTO; /* missing final NUL */
    if (buf[pos] == 0)
      break;
    pv_param_t p;
    if (take_cstr(buf, &pos, len, &p.key) != PV_OK ||
        take_cstr(buf, &pos, len, &p.val) != PV_OK)
      return PV_EPROTO;
    if (n == max_params)
      return PV_ELIMIT;
    params[n++] = p;
    if (strcmp(p.key, "user") == 0)
      have_user = 1;
  }
  if (pos + 1 != len || !have_user)
    return PV_EPROTO;
  out->kind = PV_STARTUP_NORMAL;
  out->params = params;
  out->nparams = n;
  return (int)len;
}

int pv_startup_parse(const uint8_t *buf, size_t n, uint32_t max_len,
                     pv_param_t *params, size_t max_params, pv_startup_t *out) {
  if (n < 4)
    return PV_EAGAIN;
  uint32_t len = pv_get_u32(buf);
  if (len < STARTUP_MIN || len > (uint32_t)INT32_MAX)
    return PV_EPROTO;
  if (len > max_len)
    return PV_ETOOBIG;
  if (n < len)
    return PV_EAGAIN;
  memset(out, 0, sizeof *out);
  uint32_t code = pv_get_u32(buf + 4);
  switch (code) {
  case PV_PROTO_SSL_CODE:
  case PV_PROTO_GSSENC_CODE:
    if (len != STARTUP_MIN)
      return PV_EPROTO;
    out->kind = code == PV_PROTO_SSL_CODE ? PV_STARTUP_SSL : PV_STARTUP_GSSENC;
    return (int)len;
  case PV_PROTO_CANCEL_CODE:
    return parse_cancel(buf, len, out);
  default:
    break;
  }
  /* Any 3.x minor: the server answers NegotiateProtocolVersion itself. */
  if (code >> 16 != PROTO_MAJOR_3)
    return PV_EPROTO;
  out->version = code;
  return parse_params(buf, len, params, max_params, out);
}

int pv_startup_encode(uint8_t *out, size_t cap, uint32_t version,
                      const pv_param_t *params, size_t n) {
  size_t total = STARTUP_MIN + 1;
  for (size_t i = 0; i < n; i++) {
    /* An empty key would read back as the terminator. */
    if (!params[i].key || !params[i].val || !params[i].key[0])
      return PV_EINVAL;
    total += strlen(params[i].key) + strlen(params[i].val) + 2;
    if (total > (size_t)INT32_MAX)
      return PV_ELIMIT;
  }
  if (total > cap)
    return PV_ELIMIT;
  pv_put_u32(out, (uint32_t)total);
  pv_put_u32(out + 4, version);
  size_t pos = STARTUP_MIN;
  for (size_t i = 0; i < n; i++) {
    size_t kl = strlen(params[i].key) + 1, vl = strlen(params[i].val) + 1;
    memcpy(out + pos, params[i].key, kl);
    pos += kl;
    memcpy(out + pos, params[i].val, vl);
    pos += vl;
  }
  out[pos++] = 0;
  return (int)pos;
}

int pv_cancel_encode(uint8_t *out, size_t cap, uint32_t pid, const uint8_t *key,
                     size_t key_len) {
  if (!key || key_len < CANCEL_KEY_MIN || key_len > PV_CANCEL_KEY_MAX)
    return PV_EINVAL;
  size_t total = CANCEL_FIXED + key_len;
  if (total > cap)
    return PV_ELIMIT;
  pv_put_u32(out, (uint32_t)total);
  pv_put_u32(out + 4, PV_PROTO_CANCEL_CODE);
  pv_put_u32(out + 8, pid);
  memcpy(out + CANCEL_FIXED, key, key_len);
  return (int)total;
}
