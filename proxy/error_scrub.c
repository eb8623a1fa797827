/* Owns the scrubbing of server error and notice texts for restricted
 * sessions (include/pgveil/error_scrub.h). Pure: no I/O, no globals. */
#include "pgveil/error_scrub.h"

#include <stdio.h>
#include <string.h>

#include "pgveil/pg_msg_backend.h"

/* Classes whose messages are built from the statement text, identifiers or
 * server state, never from row values. */
static const char *const SAFE_CLASSES[] = {
    "03", /* SQL statement not yet complete */
    "08", /* connection exception */
    "0A", /* feature not supported */
    "0B", /* invalid transaction initiation */
    "25", /* invalid transaction state */
    "26", /* invalid SQL statement name */
    "28", /* invalid authorization specification */
    "2B", /* dependent privilege descriptors still exist */
    "34", /* invalid cursor name */
    "3D", /* invalid catalog name */
    "3F", /* invalid schema name */
    "40", /* transaction rollback */
    "42", /* syntax error or access rule violation */
    "53", /* insufficient resources */
    "54", /* program limit exceeded */
    "55", /* object not in prerequisite state */
    "57", /* operator intervention */
    "58", /* system error */
};

bool pv_scrub_class_unsafe(const char sqlstate[5]) {
  for (size_t i = 0; i < sizeof SAFE_CLASSES / sizeof SAFE_CLASSES[0]; i++)
    if (sqlstate[0] == SAFE_CLASSES[i][0] && sqlstate[1] == SAFE_CLASSES[i][1])
      return false;
  return true;
}

static bool kept_field(uint8_t code) {
  return code == 'S' || code == 'V' || code == 'C' || code == 'P';
}

/* Appends one field; returns false when out of room. */
static bool put_field(uint8_t **p, const uint8_t *end, uint8_t code,
                      const char *v) {
  size_t n = strlen(v);
  if ((size_t)(end - *p) < n + 2)
    return false;
  *(*p)++ = code;
  memcpy(*p, v, n + 1);
  *p += n + 1;
  return true;
}

int pv_scrub_error(const pv_msg_t *m, uint8_t *out, size_t cap) {
  char state[6];
  if (pv_be_error_sqlstate(m, state) != PV_OK)
    strcpy(state, "XX000");
  bool unsafe = pv_scrub_class_unsafe(state);
  if (cap < PV_FRAME_HEADER + 1)
    return PV_ELIMIT;
  uint8_t *p = out + PV_FRAME_HEADER, *end = out + cap - 1;
  pv_be_errfield_iter_t it;
  pv_be_errfield_begin(m, &it);
  uint8_t code;
  const char *v;
  int rc;
  bool have_c = false;
  while ((rc = pv_be_errfield_next(&it, &code, &v)) == 1) {
    if (code == 'M' && !unsafe) {
      if (!put_field(&p, end, 'M', v))
        return PV_ELIMIT;
    } else if (kept_field(code)) {
      if (code == 'C') {
        v = state;
        have_c = true;
      }
      if (!put_field(&p, end, code, v))
        return PV_ELIMIT;
    }
  }
  if (rc < 0)
    return PV_EPROTO;
  if (!have_c && !put_field(&p, end, 'C', state))
    return PV_ELIMIT;
  if (unsafe) {
    char msg[96];
    snprintf(msg, sizeof msg, "pgveil: %s (SQLSTATE %s); details withheld",
             m->type == 'N' ? "notice" : "error", state);
    if (!put_field(&p, end, 'M', msg))
      return PV_ELIMIT;
  }
  *p++ = 0;
  out[0] = m->type;
  pv_put_u32(out + 1, (uint32_t)(p - out - 1));
  return (int)(p - out);
}
