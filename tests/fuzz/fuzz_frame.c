/* Fuzz target for proxy/pg_frame.c and the message codecs: a startup packet,
 * then framed messages, each run through every decoder with invariants. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgveil/pg_frame.h"
#include "pgveil/pg_msg_backend.h"
#include "pgveil/pg_msg_frontend.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_BODY (1u << 20)
#define MAX_PARAMS 16
#define MAX_FIELDS 64

#define FZ_CHECK(cond)                                                         \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
              #cond);                                                          \
      abort();                                                                 \
    }                                                                          \
  } while (0)

/* [p, p+n) lies inside [base, base+len). */
static int inside(const void *p, size_t n, const uint8_t *base, size_t len) {
  const uint8_t *q = p;
  return q >= base && n <= len && (size_t)(q - base) <= len - n;
}

/* A NUL-terminated string wholly inside the body. */
static void check_cstr(const char *s, const pv_msg_t *m) {
  FZ_CHECK(s && inside(s, 1, m->body, m->len));
  size_t left = m->len - (size_t)((const uint8_t *)s - m->body);
  FZ_CHECK(memchr(s, 0, left) != NULL);
}

static void fuzz_query(const pv_msg_t *m) {
  pv_fe_query_t q;
  int rc = pv_fe_query_decode(m, &q);
  FZ_CHECK(rc == PV_OK || rc == PV_EPROTO);
  if (rc != PV_OK)
    return;
  check_cstr(q.sql, m);
  FZ_CHECK(q.sql_len + 1 == m->len && strlen(q.sql) == q.sql_len);
}

static void fuzz_parse(const pv_msg_t *m) {
  pv_fe_parse_t p;
  int rc = pv_fe_parse_decode(m, &p);
  FZ_CHECK(rc == PV_OK || rc == PV_EPROTO);
  if (rc != PV_OK)
    return;
  check_cstr(p.stmt, m);
  check_cstr(p.sql, m);
  FZ_CHECK(strlen(p.sql) == p.sql_len);
  FZ_CHECK(p.param_types + (size_t)p.nparam_types * 4 == m->body + m->len);
}

static void fuzz_bind(const pv_msg_t *m) {
  pv_fe_bind_t b;
  int rc = pv_fe_bind_decode(m, &b);
  FZ_CHECK(rc == PV_OK || rc == PV_EPROTO);
  if (rc != PV_OK)
    return;
  check_cstr(b.portal, m);
  check_cstr(b.stmt, m);
  FZ_CHECK(b.nparam_formats <= 1 || b.nparam_formats == b.nparams);
  FZ_CHECK(
      inside(b.param_formats, (size_t)b.nparam_formats * 2, m->body, m->len));
  FZ_CHECK(inside(b.params, 0, m->body, m->len));
  FZ_CHECK(b.result_formats + (size_t)b.nresult_formats * 2 ==
           m->body + m->len);
  uint16_t ncols = b.nresult_formats > 1 ? b.nresult_formats : 3;
  for (uint16_t i = 0; i <= ncols && i < 70; i++) {
    int16_t f = -1;
    rc = pv_fe_bind_result_format(&b, ncols, i, &f);
    if (i == ncols)
      FZ_CHECK(rc == PV_EINVAL);
    else
      FZ_CHECK(rc == PV_EPROTO || (rc == PV_OK && (f == 0 || f == 1)));
  }
}

static void fuzz_target(const pv_msg_t *m, int describe) {
  pv_fe_target_t t;
  int rc = describe ? pv_fe_describe_decode(m, &t) : pv_fe_close_decode(m, &t);
  FZ_CHECK(rc == PV_OK || rc == PV_EPROTO);
  if (rc != PV_OK)
    return;
  FZ_CHECK(t.kind == 'S' || t.kind == 'P');
  check_cstr(t.name, m);
  FZ_CHECK(strlen(t.name) + 2 == m->len);
  if (!describe)
    return;
  /* Re-encode and decode again: the same target comes back. */
  uint8_t out[512];
  int n = pv_fe_describe_encode(out, sizeof out, t.kind, t.name);
  if (m->len + PV_FRAME_HEADER > sizeof out) {
    FZ_CHECK(n == PV_ELIMIT);
    return;
  }
  FZ_CHECK(n == (int)(m->len + PV_FRAME_HEADER));
  pv_msg_t again;
  FZ_CHECK(pv_frame_parse(out, (size_t)n, MAX_BODY, &again) == n);
  FZ_CHECK(memcmp(again.body, m->body, m->len) == 0);
}

static void fuzz_execute(const pv_msg_t *m) {
  pv_fe_execute_t e;
  int rc = pv_fe_execute_decode(m, &e);
  FZ_CHECK(rc == PV_OK || rc == PV_EPROTO);
  if (rc != PV_OK)
    return;
  check_cstr(e.portal, m);
  FZ_CHECK(e.max_rows <= (uint32_t)INT32_MAX);
}

static void fuzz_rowdesc(const pv_msg_t *m) {
  pv_be_field_t f[MAX_FIELDS];
  uint16_t n = 0xffff;
  int rc = pv_be_rowdesc_decode(m, f, MAX_FIELDS, &n);
  FZ_CHECK(rc == PV_OK || rc == PV_EPROTO || rc == PV_ELIMIT);
  if (rc != PV_OK)
    return;
  FZ_CHECK(n <= MAX_FIELDS);
  for (uint16_t i = 0; i < n; i++) {
    check_cstr(f[i].name, m);
    FZ_CHECK(f[i].format == 0 || f[i].format == 1);
  }
}

static void fuzz_datarow(const pv_msg_t *m) {
  pv_be_datarow_iter_t it;
  const uint8_t *v;
  int32_t len;
  int rc = pv_be_datarow_begin(m, &it);
  FZ_CHECK(rc == PV_OK || rc == PV_EPROTO);
  if (rc != PV_OK)
    return;
  uint32_t seen = 0;
  while ((rc = pv_be_datarow_next(&it, &v, &len)) == 1) {
    seen++;
    FZ_CHECK(seen <= it.nfields);
    FZ_CHECK(len >= -1);
    if (len == -1)
      FZ_CHECK(v == NULL);
    else
      FZ_CHECK(inside(v, (size_t)len, m->body, m->len));
  }
  FZ_CHECK(rc == 0 || rc == PV_EPROTO);
  if (rc == 0)
    FZ_CHECK(seen == it.nfields);
  /* Exhausted or failed iterators stay that way. */
  FZ_CHECK(pv_be_datarow_next(&it, &v, &len) == rc);
}

static void fuzz_errfields(const pv_msg_t *m) {
  pv_be_errfield_iter_t it;
  uint8_t code;
  const char *v;
  int rc, has_c = 0;
  pv_be_errfield_begin(m, &it);
  while ((rc = pv_be_errfield_next(&it, &code, &v)) == 1) {
    FZ_CHECK(code != 0);
    check_cstr(v, m);
    has_c |= code == 'C';
  }
  FZ_CHECK(rc == 0 || rc == PV_EPROTO);
  FZ_CHECK(pv_be_errfield_next(&it, &code, &v) == rc);
  char state[6];
  int src = pv_be_error_sqlstate(m, state);
  if (rc == PV_EPROTO)
    FZ_CHECK(src == PV_EPROTO);
  else if (!has_c)
    FZ_CHECK(src == PV_ENOENT);
  else
    FZ_CHECK(src == PV_EPROTO || (src == PV_OK && strlen(state) == 5));
  if (src != PV_OK)
    return;
  /* A scrubbed error keeps the SQLSTATE: encode one and read it back. */
  uint8_t out[64];
  char back[6];
  int n = pv_be_error_encode(out, sizeof out, "ERROR", state, "scrubbed");
  FZ_CHECK(n > 0);
  pv_msg_t e;
  FZ_CHECK(pv_frame_parse(out, (size_t)n, MAX_BODY, &e) == n);
  FZ_CHECK(pv_be_error_sqlstate(&e, back) == PV_OK);
  FZ_CHECK(strcmp(back, state) == 0);
}

static void fuzz_small_backend(const pv_msg_t *m) {
  const char *tag;
  int rc = pv_be_command_complete_decode(m, &tag);
  FZ_CHECK(rc == PV_OK || rc == PV_EPROTO);
  if (rc == PV_OK)
    check_cstr(tag, m);
  uint8_t st;
  rc = pv_be_ready_decode(m, &st);
  FZ_CHECK(rc == PV_EPROTO || (rc == PV_OK && m->len == 1 &&
                               (st == 'I' || st == 'T' || st == 'E')));
  uint32_t sub;
  rc = pv_be_auth_decode(m, &sub);
  FZ_CHECK(rc == PV_OK || rc == PV_EPROTO);
  if (rc == PV_OK)
    FZ_CHECK(m->len >= 4 && sub == pv_get_u32(m->body));
  uint32_t pid;
  const uint8_t *key;
  size_t klen;
  rc = pv_be_key_data_decode(m, &pid, &key, &klen);
  FZ_CHECK(rc == PV_OK || rc == PV_EPROTO);
  if (rc == PV_OK)
    FZ_CHECK(klen >= 4 && klen <= PV_CANCEL_KEY_MAX &&
             key + klen == m->body + m->len);
  uint8_t fmt;
  uint16_t ncols;
  const uint8_t *cols;
  rc = pv_be_copy_response_decode(m, &fmt, &ncols, &cols);
  FZ_CHECK(rc == PV_OK || rc == PV_EPROTO);
  if (rc == PV_OK)
    FZ_CHECK(fmt <= 1 && cols + (size_t)ncols * 2 == m->body + m->len);
}

/* Every decoder on one message, whatever its type byte: decoders must be
 * safe on any bytes. The body is copied to an exact-size heap block so ASan
 * sees any read past it. */
static void fuzz_message(const pv_msg_t *framed) {
  uint8_t *copy = malloc(framed->len ? framed->len : 1);
  FZ_CHECK(copy != NULL);
  memcpy(copy, framed->body, framed->len);
  pv_msg_t m = {framed->type, framed->len, framed->len ? copy : NULL};
  fuzz_query(&m);
  fuzz_parse(&m);
  fuzz_bind(&m);
  fuzz_target(&m, 1);
  fuzz_target(&m, 0);
  fuzz_execute(&m);
  fuzz_rowdesc(&m);
  fuzz_datarow(&m);
  fuzz_errfields(&m);
  fuzz_small_backend(&m);
  free(copy);
}

/* Returns where regular messages start: after a valid startup packet. */
static size_t fuzz_startup(const uint8_t *data, size_t size) {
  pv_param_t params[MAX_PARAMS];
  pv_startup_t s;
  int rc = pv_startup_parse(data, size, 10000, params, MAX_PARAMS, &s);
  if (rc <= 0) {
    FZ_CHECK(rc == PV_EAGAIN || rc == PV_ETOOBIG || rc == PV_EPROTO ||
             rc == PV_ELIMIT);
    return 0;
  }
  FZ_CHECK((size_t)rc <= size && rc >= 8 && (uint32_t)rc == pv_get_u32(data));
  switch (s.kind) {
  case PV_STARTUP_NORMAL: {
    int user = 0;
    FZ_CHECK(s.version >> 16 == 3 && s.nparams <= MAX_PARAMS);
    for (size_t i = 0; i < s.nparams; i++) {
      FZ_CHECK(inside(s.params[i].key, 1, data, (size_t)rc));
      FZ_CHECK(inside(s.params[i].val, 1, data, (size_t)rc));
      user |= strcmp(s.params[i].key, "user") == 0;
    }
    FZ_CHECK(user);
    /* Re-encoding gives back the same bytes. */
    uint8_t out[10000];
    int n = pv_startup_encode(out, sizeof out, s.version, s.params, s.nparams);
    FZ_CHECK(n == rc && memcmp(out, data, (size_t)n) == 0);
    break;
  }
  case PV_STARTUP_SSL:
  case PV_STARTUP_GSSENC:
    FZ_CHECK(rc == 8);
    break;
  case PV_STARTUP_CANCEL: {
    FZ_CHECK(s.cancel_key_len >= 4 && s.cancel_key_len <= PV_CANCEL_KEY_MAX);
    FZ_CHECK(s.cancel_key + s.cancel_key_len == data + rc);
    uint8_t out[12 + PV_CANCEL_KEY_MAX];
    int n = pv_cancel_encode(out, sizeof out, s.cancel_pid, s.cancel_key,
                             s.cancel_key_len);
    FZ_CHECK(n == rc && memcmp(out, data, (size_t)n) == 0);
    break;
  }
  default:
    FZ_CHECK(0);
  }
  return (size_t)rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t pos = fuzz_startup(data, size);
  for (;;) {
    pv_msg_t m;
    size_t left = size - pos;
    int rc = pv_frame_parse(data + pos, left, MAX_BODY, &m);
    if (rc <= 0) {
      FZ_CHECK(rc == PV_EAGAIN || rc == PV_ETOOBIG || rc == PV_EPROTO);
      if (rc == PV_EAGAIN && left >= PV_FRAME_HEADER)
        FZ_CHECK(m.type == data[pos] && m.len + PV_FRAME_HEADER > left);
      break;
    }
    FZ_CHECK((size_t)rc <= left && (size_t)rc == PV_FRAME_HEADER + m.len);
    FZ_CHECK(m.body == data + pos + PV_FRAME_HEADER);
    /* A smaller limit refuses exactly the larger bodies. */
    pv_msg_t small;
    int src = pv_frame_parse(data + pos, left, 64, &small);
    FZ_CHECK(m.len > 64 ? src == PV_ETOOBIG : src == rc);
    fuzz_message(&m);
    pos += (size_t)rc;
  }
  return 0;
}
