/* Fuzz target for proxy/row_plan.c: the input is a conversation, a sequence
 * of (direction byte, framed message) pairs; bit 0 of the direction byte
 * picks frontend (0) or backend (1). Every message goes to the tracker, the
 * tracker is freed at the end so LeakSanitizer sees lost references, and
 * the effects are checked against the message they describe. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgveil/pg_frame.h"
#include "pgveil/pg_msg_frontend.h"
#include "pgveil/row_plan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_BODY (1u << 16)

#define FZ_CHECK(cond)                                                         \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
              #cond);                                                          \
      abort();                                                                 \
    }                                                                          \
  } while (0)

/* Small limits, so that inputs of a few hundred bytes reach them. */
static const pv_tracker_limits_t LIM = {
    .max_statements = 8,
    .max_portals = 8,
    .max_pending = 48,
    .max_columns = 16,
};

static void check_plan(const pv_plan_t *p) {
  FZ_CHECK(p->refs > 0 && p->id > 0);
  FZ_CHECK(p->ncols <= LIM.max_columns);
  for (uint16_t i = 0; i < p->ncols; i++) {
    FZ_CHECK(p->cols[i].format == 0 || p->cols[i].format == 1);
    FZ_CHECK(p->cols[i].name != NULL);
    FZ_CHECK(strlen(p->cols[i].name) < MAX_BODY);
  }
}

static void feed_frontend(pv_tracker_t *t, const pv_msg_t *m) {
  pv_fe_effect_t eff;
  size_t before = pv_tracker_pending(t);
  int rc = pv_tracker_frontend(t, m, &eff);
  FZ_CHECK(rc == PV_OK || rc == PV_EPROTO || rc == PV_ELIMIT ||
           rc == PV_ENOMEM);
  FZ_CHECK(pv_tracker_pending(t) <= LIM.max_pending);
  if (rc != PV_OK || eff.inject_len == 0) {
    /* A refused message leaves no entry behind. */
    FZ_CHECK(rc == PV_OK || rc == PV_ENOMEM || pv_tracker_pending(t) == before);
    return;
  }
  /* An injection is a well-formed Describe(P) of the Execute's portal. */
  FZ_CHECK(m->type == PV_FE_EXECUTE && eff.inject != NULL);
  pv_msg_t d;
  FZ_CHECK(pv_frame_parse(eff.inject, eff.inject_len, MAX_BODY, &d) ==
           (int)eff.inject_len);
  pv_fe_target_t tg;
  pv_fe_execute_t x;
  FZ_CHECK(d.type == PV_FE_DESCRIBE && pv_fe_describe_decode(&d, &tg) == 0);
  FZ_CHECK(pv_fe_execute_decode(m, &x) == PV_OK);
  FZ_CHECK(tg.kind == 'P' && strcmp(tg.name, x.portal) == 0);
  FZ_CHECK(pv_tracker_pending(t) == before + 2);
}

static void feed_backend(pv_tracker_t *t, const pv_msg_t *m) {
  pv_be_effect_t eff;
  int rc = pv_tracker_backend(t, m, &eff);
  FZ_CHECK(rc == PV_OK || rc == PV_EPROTO || rc == PV_ELIMIT ||
           rc == PV_ENOMEM);
  if (rc != PV_OK)
    return;
  if (eff.swallow)
    FZ_CHECK(m->type == 'T' || m->type == 'n');
  if (eff.rows == PV_ROWS_DATAROW) {
    FZ_CHECK(m->type == 'D' && m->len >= 2);
    if (eff.plan) {
      check_plan(eff.plan);
      FZ_CHECK(eff.plan->ncols == pv_get_u16(m->body));
    }
  } else {
    FZ_CHECK(eff.plan == NULL);
  }
  if (eff.rows == PV_ROWS_COPY_OUT)
    FZ_CHECK(m->type == 'd' && eff.copy_format <= 1);
  if (m->type == 'Z')
    FZ_CHECK(pv_tracker_tx_status(t) == m->body[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  pv_tracker_t *t = pv_tracker_new(&LIM);
  FZ_CHECK(t != NULL);
  size_t pos = 0;
  while (pos < size) {
    uint8_t dir = data[pos++];
    pv_msg_t m;
    int n = pv_frame_parse(data + pos, size - pos, MAX_BODY, &m);
    if (n <= 0)
      break;
    /* An exact-size copy, so ASan sees any read past the body. */
    uint8_t *copy = malloc(m.len ? m.len : 1);
    FZ_CHECK(copy != NULL);
    memcpy(copy, m.body, m.len);
    pv_msg_t c = {m.type, m.len, m.len ? copy : NULL};
    if (dir & 1)
      feed_backend(t, &c);
    else
      feed_frontend(t, &c);
    free(copy);
    pos += (size_t)n;
  }
  pv_tracker_free(t);
  return 0;
}
