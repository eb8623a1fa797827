/* Owns what a session does with server messages: the policy snapshot and
 * database resolution at startup, purpose authorization, per-plan actions,
 * DataRow / COPY / error rewriting, and the end of each Query or Sync.
 * No socket I/O here: bytes go out through the emitter (session.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pgveil/control.h"
#include "pgveil/error_scrub.h"
#include "pgveil/log.h"
#include "pgveil/metrics.h"
#include "pgveil/pg_msg_backend.h"
#include "pgveil/row_rewrite.h"
#include "pgveil/sql_guard.h"
#include "session_internal.h"

/* ---- policy ---------------------------------------------------------- */

enum { POLICY_OK = 0, POLICY_WAIT = 1 };

static void on_db_ready(uv_async_t *a) {
  pv_session_t *s = a->data;
  pv_control_cancel(s->w->shared->control, a);
  pv_sess_close_handle(s, (uv_handle_t *)a);
  if (s->closing)
    return;
  s->db_waited = true;
  s->server.held = false;
  pv_sess_start_reading(&s->server);
  pv_sess_pump(s, &s->server);
}

/* Asks the control thread to resolve this session's database. */
static int wait_for_db(pv_session_t *s) {
  s->db_async = malloc(sizeof *s->db_async);
  if (!s->db_async || uv_async_init(&s->w->loop, s->db_async, on_db_ready)) {
    free(s->db_async);
    s->db_async = NULL;
    return PV_ENOMEM;
  }
  s->db_async->data = s;
  s->open_handles++;
  int rc = pv_control_request_db(s->w->shared->control, s->dbname, s->db_async);
  if (rc) {
    pv_sess_close_handle(s, (uv_handle_t *)s->db_async);
    return rc;
  }
  s->server.held = true;
  pv_sess_stop_reading(&s->server);
  return POLICY_WAIT;
}

/* Authorizes the declared purpose, or picks the role's default. */
static bool settle_purpose(pv_session_t *s) {
  const pv_rules_t *rules = pv_policy_rules(s->policy);
  s->local_saved = NO_LOCAL;
  if (!s->purpose_name[0]) {
    s->purpose = pv_rules_default_purpose(rules, s->role);
    s->startup_purpose = s->purpose;
    s->restricted = pv_guard_purpose_restricted(rules, s->purpose);
    return true;
  }
  s->purpose = pv_rules_purpose_find(rules, s->purpose_name);
  s->startup_purpose = s->purpose;
  s->restricted = pv_guard_purpose_restricted(rules, s->purpose);
  if (s->purpose != PV_PURPOSE_UNKNOWN &&
      pv_rules_role_may_declare(rules, s->role, s->purpose))
    return true;
  pv_metrics_refusal(s->w->metrics, "may not declare purpose");
  char why[256];
  snprintf(why, sizeof why,
           "pgveil: role \"%s\" may not declare purpose "
           "\"%s\" (connection refused)",
           s->role, s->purpose_name);
  const pv_msg_t none = {0}; /* no statement: the connection itself */
  s->purpose = PV_PURPOSE_NONE;
  pv_sess_audit_refused(s, &none, why);
  pv_sess_fail(s, "FATAL", "42501", "%s", why);
  return false;
}

/* At the first ReadyForQuery: takes the policy, settles the purpose and
 * this database's resolution. Returns POLICY_OK, POLICY_WAIT (the session
 * is parked until the control thread answers) or an error after failing
 * the session. */
static int attach_policy(pv_session_t *s) {
  if (!s->policy)
    s->policy = pv_policy_acquire(s->w->shared->policy);
  if (!s->policy) {
    pv_sess_fail(s, "FATAL", "08004", "pgveil: no rules are loaded");
    return PV_ESTATE;
  }
  if (!settle_purpose(s))
    return PV_EDENIED;
  s->db = pv_policy_db(s->policy, s->dbname);
  if ((!s->db || pv_policy_db_transient(s->db)) && !s->db_waited) {
    int rc = wait_for_db(s);
    if (rc == POLICY_WAIT)
      return rc;
  }
  /* The answer may be in a newer snapshot than the one we hold. */
  pv_policy_release(s->policy);
  s->policy = pv_policy_acquire(s->w->shared->policy);
  s->db = s->policy ? pv_policy_db(s->policy, s->dbname) : NULL;
  const char *err = s->db ? pv_policy_db_error(s->db) : "not resolved";
  if (!s->db || err) {
    pv_sess_fail(s, "FATAL", "08004",
                 "pgveil: database \"%s\" cannot be served: %s", s->dbname,
                 err ? err : "not resolved");
    return PV_ESTATE;
  }
  pv_log(PV_LOG_INFO, "session %llu: role=%s database=%s purpose=%s",
         (unsigned long long)s->id, s->role, s->dbname,
         s->purpose >= 0
             ? s->purpose_name[0]
                   ? s->purpose_name
                   : pv_policy_rules(s->policy)->purposes[s->purpose].name
             : "none");
  return POLICY_OK;
}

/* Before each statement: picks up a newer snapshot (a reload, DDL). The
 * generation is read without the lock; only a change takes it. A database
 * whose resolution broke closes the session: fail closed. */
int pv_sess_refresh_policy(pv_session_t *s) {
  pv_policy_holder_t *h = s->w->shared->policy;
  if (s->policy && __atomic_load_n(&h->generation, __ATOMIC_ACQUIRE) ==
                       pv_policy_generation(s->policy))
    return PV_OK;
  pv_policy_t *p = pv_policy_acquire(h);
  if (p == s->policy) {
    pv_policy_release(p);
    return PV_OK;
  }
  pv_policy_release(s->policy);
  s->policy = p;
  s->db = p ? pv_policy_db(p, s->dbname) : NULL;
  if (!s->db || pv_policy_db_error(s->db))
    return PV_ESTATE;
  return PV_OK;
}

static void plan_ext_free(void *ext) {
  plan_ext_t *pe = ext;
  pv_plan_actions_free(pe->ra);
  free(pe);
}

/* The plan's actions under the current snapshot, built once per plan and
 * again only when the snapshot changes. NULL on OOM. */
static const pv_row_actions_t *plan_actions(pv_session_t *s,
                                            const pv_plan_t *cplan) {
  pv_plan_t *plan = (pv_plan_t *)cplan; /* ext is the rewriter's slot */
  uint64_t gen = pv_policy_generation(s->policy);
  plan_ext_t *pe = plan->ext;
  if (pe && pe->generation == gen)
    return pe->ra;
  pv_row_actions_t *ra = NULL;
  if (pv_plan_actions_for_plan(
          plan, pv_policy_db_catalog(s->db), pv_policy_db_reldir(s->db),
          s->purpose, pv_policy_key(s->policy, s->purpose), &ra) != PV_OK)
    return NULL;
  if (!pe) {
    pe = malloc(sizeof *pe);
    if (!pe) {
      pv_plan_actions_free(ra);
      return NULL;
    }
    plan->ext = pe;
    plan->ext_free = plan_ext_free;
  } else {
    pv_plan_actions_free(pe->ra);
  }
  pe->generation = gen;
  pe->ra = ra;
  return ra;
}

/* Writes the rewritten form of a row-carrying message through rewrite(),
 * growing scratch to what it says it needs. */

int pv_sess_emit_rewritten(emit_t *e, const pv_msg_t *m, size_t rawlen,
                           pv_sess_rewrite_fn fn, const void *ctx) {
  size_t need = rawlen;
  for (int attempt = 0; attempt < 2; attempt++) {
    uint8_t *out = pv_sess_emit_reserve(e, need);
    if (!out)
      return PV_ENOMEM;
    int n = fn(ctx, m, out, need, &need);
    if (n >= 0) {
      pv_sess_emit_commit(e, (size_t)n);
      return PV_OK;
    }
    if (n != PV_ELIMIT)
      return n;
  }
  return PV_ELIMIT;
}

static int tag_fn(const void *ctx, const pv_msg_t *m, uint8_t *out, size_t cap,
                  size_t *needed) {
  return pv_rewrite_tag_datarow(ctx, m, out, cap, needed);
}

/* ---- server settings ---------------------------------------------------- */

/* ParameterStatus: tracks the settings that change how the server reads a
 * statement's text. The guard parses as PostgreSQL does with UTF-8 and
 * standard_conforming_strings on; otherwise restricted sessions are refused
 * every statement (session_guard.c). */
static void note_parameter(pv_session_t *s, const pv_msg_t *m) {
  static const char *const unsafe_enc[] = {
      "SJIS", "SHIFT_JIS_2004", "BIG5", "GBK", "UHC", "GB18030", "JOHAB"};
  const char *name, *value;
  if (pv_be_parameter_status_decode(m, &name, &value) != PV_OK)
    return;
  if (strcmp(name, "standard_conforming_strings") == 0) {
    s->scs_off = strcmp(value, "on") != 0;
  } else if (strcmp(name, "client_encoding") == 0) {
    s->enc_unsafe = false;
    for (size_t i = 0; i < sizeof unsafe_enc / sizeof unsafe_enc[0]; i++)
      if (strcasecmp(value, unsafe_enc[i]) == 0)
        s->enc_unsafe = true;
  }
}

/* ---- consent ---------------------------------------------------------- */

/* The consent snapshot of the current statement: taken at its first gated
 * row, dropped at ReadyForQuery, so a committed revocation is seen by the
 * next statement. NULL (no table, nothing loaded, stale): nobody has
 * consented (fail closed). */
static const pv_consent_snap_t *statement_consent(pv_session_t *s) {
  if (s->consent_taken)
    return s->consent;
  s->consent_taken = true;
  pv_consent_store_t *st = s->w->shared->consent;
  pv_consent_snap_t *cs = st ? pv_consent_acquire(st) : NULL;
  if (cs && !pv_consent_usable(cs, pv_policy_rules(s->policy),
                               uv_hrtime() / 1000000)) {
    pv_consent_release(cs);
    cs = NULL;
  }
  s->consent = cs;
  return cs;
}

static void drop_consent(pv_session_t *s) {
  pv_consent_release(s->consent);
  s->consent = NULL;
  s->consent_taken = false;
}

/* Reads field j of a row: DataRow or COPY line. */
int pv_sess_datarow_field(const void *row, uint16_t j, const uint8_t **val,
                          int32_t *len) {
  return pv_datarow_field(row, j, val, len);
}

/* Per gated column of one row: has its subject consented to the session's
 * purpose? Fills s->flags (one per column) and returns it, or NULL when
 * nobody has (or on OOM: fail closed). */
static const uint8_t *row_consent(pv_session_t *s, const pv_row_actions_t *ra,
                                  pv_sess_field_fn get, const void *row) {
  const pv_consent_snap_t *cs = statement_consent(s);
  if (!cs || s->purpose < 0)
    return NULL;
  if (s->flags_cap < ra->ncols) {
    uint8_t *f = realloc(s->flags, ra->ncols);
    if (!f)
      return NULL;
    s->flags = f;
    s->flags_cap = ra->ncols;
  }
  pv_consent_mode_t mode =
      pv_policy_rules(s->policy)->purposes[s->purpose].consent;
  int32_t last_j = -1;
  uint8_t last = 0;
  for (uint16_t i = 0; i < ra->ncols; i++) {
    int32_t j = ra->cols[i].otherwise ? ra->cols[i].subject_col : -1;
    s->flags[i] = 0;
    if (j < 0)
      continue;
    if (j != last_j) {
      const uint8_t *val;
      int32_t len;
      const pv_col_action_t *subj = &ra->cols[j];
      last = get(row, (uint16_t)j, &val, &len) == PV_OK &&
             pv_consent_allowed(cs, s->purpose, mode, subj->type_oid,
                                subj->format, val, len);
      last_j = j;
    }
    s->flags[i] = last;
  }
  return s->flags;
}

typedef struct {
  const pv_row_actions_t *ra;
  const uint8_t *consent;
} mask_ctx_t;

static int mask_fn(const void *ctx, const pv_msg_t *m, uint8_t *out, size_t cap,
                   size_t *needed) {
  const mask_ctx_t *c = ctx;
  return pv_rewrite_datarow(c->ra, c->consent, m, out, cap, needed);
}

static int rewrite_datarow(pv_session_t *s, emit_t *e, const pv_msg_t *m,
                           const uint8_t *raw, size_t rawlen,
                           const pv_be_effect_t *eff) {
  bool tag = cfg_of(s)->debug_tag_rows;
  if (!tag && !s->policy) {
    pv_sess_emit_span(e, raw, rawlen); /* --passthrough */
    return PV_OK;
  }
  if (!eff->plan)
    return PV_ESTATE; /* rows we cannot attribute: fail closed */
  if (tag)
    return pv_sess_emit_rewritten(e, m, rawlen, tag_fn, eff->plan);
  const pv_row_actions_t *ra = plan_actions(s, eff->plan);
  if (!ra)
    return PV_ENOMEM;
  if (ra->nacted == 0) {
    pv_sess_emit_span(e, raw, rawlen);
    return PV_OK;
  }
  uint64_t t0 = pv_metrics_sample(s->w->metrics) ? uv_hrtime() : 0;
  mask_ctx_t ctx = {
      ra, ra->ngated ? row_consent(s, ra, pv_sess_datarow_field, m) : NULL};
  int arc = pv_sess_audit_row(s, e, eff->plan, ra, ctx.consent, m);
  if (arc)
    return arc;
  /* Room for twice the row: the usual rewrite fits at the first try, so
   * its bound is computed once per row. */
  int rc = pv_sess_emit_rewritten(e, m, 2 * rawlen + 64, mask_fn, &ctx);
  pv_metrics_row(s->w->metrics, ra, ctx.consent, t0, t0 ? uv_hrtime() : 0);
  return rc;
}

/* The refusal whose token the server's syntax error names, or NULL. */
static const char *refusal_of(pv_session_t *s, const pv_msg_t *m) {
  char state[6];
  if (pv_be_error_sqlstate(m, state) != PV_OK || strcmp(state, "42601") != 0)
    return NULL;
  char prefix[32];
  int plen = snprintf(prefix, sizeof prefix, "pgveil_refused_%08x_", s->nonce);
  pv_be_errfield_iter_t it;
  pv_be_errfield_begin(m, &it);
  uint8_t code;
  const char *v;
  while (pv_be_errfield_next(&it, &code, &v) == 1) {
    const char *at = code == 'M' ? strstr(v, prefix) : NULL;
    if (!at)
      continue;
    unsigned long n = strtoul(at + plen, NULL, 10);
    if (n < s->nrefused && s->nrefused - n <= REFUSALS)
      return s->refusal[n % REFUSALS];
    return "pgveil: statement refused by policy";
  }
  return NULL;
}

static int scrub_fn(const void *ctx, const pv_msg_t *m, uint8_t *out,
                    size_t cap, size_t *needed) {
  (void)ctx;
  *needed = m->len + 160;
  return pv_scrub_error(m, out, cap);
}

/* ErrorResponse/NoticeResponse: a refusal's placeholder error becomes the
 * refusal; for restricted sessions texts that may echo data are scrubbed. */
static int rewrite_error(pv_session_t *s, emit_t *e, const pv_msg_t *m,
                         const uint8_t *raw, size_t rawlen) {
  const char *why = m->type == PV_BE_ERROR ? refusal_of(s, m) : NULL;
  if (why) {
    uint8_t *out = pv_sess_emit_reserve(e, REFUSAL_MAX + 64);
    if (!out)
      return PV_ENOMEM;
    int n = pv_be_error_encode(out, REFUSAL_MAX + 64, "ERROR", "42501", why);
    if (n < 0)
      return n;
    pv_sess_emit_commit(e, (size_t)n);
    return PV_OK;
  }
  if (!s->restricted) {
    pv_sess_emit_span(e, raw, rawlen);
    return PV_OK;
  }
  return pv_sess_emit_rewritten(e, m, rawlen + 160, scrub_fn, NULL);
}

/* CopyOutResponse: the next queued plan of the current Query, if any. */
static void begin_copy_out(pv_session_t *s) {
  pv_plan_actions_free(s->cur_copy.ra);
  memset(&s->cur_copy, 0, sizeof s->cur_copy);
  s->copy_active = true;
  if (s->copy_len && s->copies[s->copy_head].unit == s->units_done + 1) {
    s->cur_copy = s->copies[s->copy_head];
    s->copy_head = (s->copy_head + 1) % COPY_PLANS_MAX;
    s->copy_len--;
  }
}

typedef struct {
  const pv_copy_opts_t *opts;
  const pv_row_actions_t *ra;
  const uint8_t *consent;
  uint8_t *tmp;
  size_t tmpcap;
  const pv_msg_t *m;
} copy_ctx_t;

/* pv_sess_field_fn over a COPY line: the value is unescaped into ctx->tmp. */
static int copy_field(const void *row, uint16_t j, const uint8_t **val,
                      int32_t *len) {
  const copy_ctx_t *c = row;
  size_t vlen;
  bool is_null;
  int rc = pv_copy_field(c->opts, c->m->body, c->m->len, j, c->tmp, c->tmpcap,
                         &vlen, &is_null);
  if (rc)
    return rc;
  *val = c->tmp;
  *len = is_null ? -1 : (int32_t)vlen;
  return PV_OK;
}

static int copy_fn(const void *ctx, const pv_msg_t *m, uint8_t *out, size_t cap,
                   size_t *needed) {
  const copy_ctx_t *c = ctx;
  if (cap < PV_FRAME_HEADER) {
    *needed = PV_FRAME_HEADER + 2 * (size_t)m->len + 256;
    return PV_ELIMIT;
  }
  int n = pv_copy_rewrite_row(c->ra, c->consent, c->opts, m->body, m->len,
                              out + PV_FRAME_HEADER, cap - PV_FRAME_HEADER,
                              needed, c->tmp, c->tmpcap);
  *needed += PV_FRAME_HEADER;
  if (n < 0)
    return n;
  out[0] = PV_BE_COPY_DATA;
  pv_put_u32(out + 1, (uint32_t)n + 4);
  return n + (int)PV_FRAME_HEADER;
}

/* One CopyData row of a COPY TO STDOUT. */
static int rewrite_copy(pv_session_t *s, emit_t *e, const pv_msg_t *m,
                        const uint8_t *raw, size_t rawlen,
                        const pv_be_effect_t *eff) {
  copy_plan_t *cp = &s->cur_copy;
  if (!s->policy || !cp->ra || cp->ra->nacted == 0) {
    pv_sess_emit_span(e, raw, rawlen);
    return PV_OK;
  }
  if (eff->copy_format != 0)
    return PV_ESTATE; /* binary COPY of protected data: refused earlier */
  if (cp->header) {
    cp->header = false;
    pv_sess_emit_span(e, raw, rawlen);
    return PV_OK;
  }
  uint8_t stack[4096], *tmp = m->len <= sizeof stack ? stack : malloc(m->len);
  if (!tmp)
    return PV_ENOMEM;
  copy_ctx_t ctx = {&cp->opts, cp->ra, NULL, tmp, m->len, m};
  if (cp->ra->ngated)
    ctx.consent = row_consent(s, cp->ra, copy_field, &ctx);
  pv_sess_audit_copy_row(s, cp->ra, ctx.consent, copy_field, &ctx);
  int rc = pv_sess_emit_rewritten(e, m, 2 * rawlen + 256, copy_fn, &ctx);
  pv_metrics_row(s->w->metrics, cp->ra, ctx.consent, 0, 0);
  if (tmp != stack)
    free(tmp); /* only rows over 4 KiB pay this */
  return rc;
}

/* ReadyForQuery: a Query/Sync finished; SET LOCAL ends with the
 * transaction; queued COPY plans of finished Queries are dropped. */
static int end_unit(pv_session_t *s, const pv_msg_t *m) {
  s->units_done++;
  drop_consent(s);
  s->copy_active = false;
  while (s->copy_len && s->copies[s->copy_head].unit <= s->units_done) {
    pv_plan_actions_free(s->copies[s->copy_head].ra);
    s->copy_head = (s->copy_head + 1) % COPY_PLANS_MAX;
    s->copy_len--;
  }
  if (!s->policy)
    return PV_OK;
  uint8_t status = 'I';
  if (pv_be_ready_decode(m, &status) == PV_OK && status == 'I' &&
      s->local_saved != NO_LOCAL) {
    s->purpose = s->local_saved;
    s->local_saved = NO_LOCAL;
    s->restricted =
        pv_guard_purpose_restricted(pv_policy_rules(s->policy), s->purpose);
  }
  return PV_OK;
}

int pv_sess_server_msg(pv_session_t *s, emit_t *e, const pv_msg_t *m,
                       const uint8_t *raw, size_t rawlen) {
  if (m->type == PV_BE_PARAMETER_STATUS)
    note_parameter(s, m);
  if (s->state == S_AUTH) {
    if (m->type == PV_BE_READY && s->w->shared->policy) {
      int rc = attach_policy(s);
      if (rc)
        return MSG_HOLD; /* parked, or the session is failing */
    }
    pv_sess_emit_span(e, raw, rawlen);
    if (m->type == PV_BE_READY)
      return pv_sess_enter_ready(s);
    return PV_OK;
  }
  pv_be_effect_t eff;
  int rc = pv_tracker_backend(s->tracker, m, &eff);
  if (rc)
    return rc;
  if (eff.swallow)
    return PV_OK;
  if ((rc = pv_sess_audit_server(s, e, m, &eff)) != PV_OK)
    return rc;
  switch (m->type) {
  case PV_BE_DATA_ROW:
    if (eff.rows == PV_ROWS_DATAROW)
      return rewrite_datarow(s, e, m, raw, rawlen, &eff);
    break;
  case PV_BE_COPY_OUT:
    begin_copy_out(s);
    break;
  case PV_BE_COPY_DATA:
    if (eff.rows == PV_ROWS_COPY_OUT && s->copy_active)
      return rewrite_copy(s, e, m, raw, rawlen, &eff);
    break;
  case PV_BE_COPY_DONE:
    s->copy_active = false;
    break;
  case PV_BE_ERROR:
  case PV_BE_NOTICE:
    if (s->policy)
      return rewrite_error(s, e, m, raw, rawlen);
    break;
  case PV_BE_READY:
    if (end_unit(s, m) != PV_OK)
      return PV_ESTATE;
    break;
  default:
    break;
  }
  pv_sess_emit_span(e, raw, rawlen);
  return PV_OK;
}
