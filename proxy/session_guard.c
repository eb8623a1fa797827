/* Owns what a session does with client messages: every Query and Parse
 * analysed by the guard (cached per worker), refusals, purpose changes,
 * COPY TO STDOUT plans, then tracking and forwarding. No socket I/O here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgveil/guard_cache.h"
#include "pgveil/log.h"
#include "pgveil/metrics.h"
#include "pgveil/pg_msg_frontend.h"
#include "pgveil/reldir.h"
#include "pgveil/sql_guard.h"
#include "pgveil/sql_normalize.h"
#include "session_internal.h"

/* ---- guard ------------------------------------------------------------- */

/* Runs the guard over sql (NUL-terminated): OUT *res NULL when the pre-scan
 * shows it cannot touch protected data. The result lives in the worker's
 * cache until the next analysis. Returns PV_OK or an analysis error. */
#define NORM_MAX 4096 /* longer statements are cached by exact text only */
#define SHAPE_SALT 0x9e3779b97f4a7c15ULL

/* True when the analysis cannot depend on the statement's constants: one
 * plain SELECT/INSERT/UPDATE/DELETE (byte offsets of several statements
 * would shift with the constants' lengths), no set_config(), no COPY. */
static bool shape_only(const pv_guard_result_t *r) {
  for (size_t i = 0; i < r->nstmts; i++) {
    const pv_guard_stmt_t *st = &r->stmts[i];
    if ((st->kind != PV_GSTMT_SELECT && st->kind != PV_GSTMT_INSERT &&
         st->kind != PV_GSTMT_UPDATE && st->kind != PV_GSTMT_DELETE) ||
        st->set_name || st->has_copy)
      return false;
  }
  return r->nstmts == 1;
}

static int guard_analyze(pv_session_t *s, const char *sql, size_t len,
                         const pv_guard_result_t **res) {
  pv_worker_t *w = s->w;
  const pv_rules_t *rules = pv_policy_rules(s->policy);
  const pv_reldir_t *dir = pv_policy_db_reldir(s->db);
  const char *sp[2] = {s->role, "public"};
  *res = NULL;
  const pv_guard_names_t *names = pv_reldir_guard_names(dir);
  if (names && !pv_guard_prescan(names, sql, len))
    return PV_OK;
  if (!w->guard_cache &&
      !(w->guard_cache = pv_guard_cache_new(GUARD_CACHE_SLOTS)))
    return PV_ENOMEM;
  /* Statements that differ only in constants share one analysis, keyed by
   * their literal-free form (salted apart from exact texts). */
  char norm[NORM_MAX];
  size_t nlen = 0;
  bool by_shape = len <= sizeof norm &&
                  pv_sql_normalize(sql, len, norm, sizeof norm, &nlen) == 1;
  uint64_t gen = pv_policy_generation(s->policy);
  uint64_t shape_key = 0,
           key = pv_guard_cache_key(sql, len, s->purpose, rules->fingerprint,
                                    gen, sp, 2);
  if (by_shape) {
    shape_key = pv_guard_cache_key(norm, nlen, s->purpose, rules->fingerprint,
                                   gen, sp, 2) ^
                SHAPE_SALT;
    if ((*res = pv_guard_cache_get(w->guard_cache, shape_key)) != NULL)
      return PV_OK;
  }
  if ((*res = pv_guard_cache_get(w->guard_cache, key)) != NULL)
    return PV_OK;
  pv_guard_input_t in = {.rules = rules,
                         .purpose = s->purpose,
                         .search_path = sp,
                         .nsearch_path = 2,
                         .lookup = pv_reldir_lookup,
                         .lookup_ctx = (void *)dir};
  pv_guard_result_t *r = NULL;
  int rc = pv_guard_analyze(&in, sql, &r);
  if (rc)
    return rc;
  /* Shared by shape only when its constants cannot matter. */
  pv_guard_cache_put(w->guard_cache,
                     by_shape && shape_only(r) ? shape_key : key, r);
  *res = r;
  return PV_OK;
}

/* Statements of well-known tools that the guard would refuse for their
 * shape (set_config() with a column as its name) but that provably touch
 * no data: matched exactly, byte for byte. pg_dump 15.8+ sends the first
 * at startup. */
static const char *const TOOL_STATEMENTS[] = {
    "SELECT set_config(name, 'view, foreign-table', false) FROM pg_settings "
    "WHERE name = 'restrict_nonsystem_relation_kind'",
};

static bool tool_statement(const char *sql, size_t len) {
  while (len &&
         (sql[len - 1] == ';' || sql[len - 1] == ' ' || sql[len - 1] == '\n'))
    len--;
  for (size_t i = 0; i < sizeof TOOL_STATEMENTS / sizeof *TOOL_STATEMENTS; i++)
    if (strlen(TOOL_STATEMENTS[i]) == len &&
        memcmp(TOOL_STATEMENTS[i], sql, len) == 0)
      return true;
  return false;
}

/* Replaces a refused Query or Parse with one whose only effect is a syntax
 * error naming a token; the server answers it in order (transaction state
 * stays exact) and pv_sess_server_msg swaps that error for the refusal. OUT:
 * *repl, the replacement message in scratch. */
static int refuse_msg(pv_session_t *s, emit_t *e, const pv_msg_t *m,
                      const char *why, pv_msg_t *repl, size_t *repl_len) {
  uint32_t n = s->nrefused++;
  snprintf(s->refusal[n % REFUSALS], REFUSAL_MAX, "%s", why);
  pv_metrics_refusal(s->w->metrics, why);
  char token[48];
  int tlen =
      snprintf(token, sizeof token, "pgveil_refused_%08x_%u", s->nonce, n);
  pv_fe_parse_t p = {.stmt = "", .nparam_types = 0};
  if (m->type == PV_FE_PARSE && pv_fe_parse_decode(m, &p) != PV_OK)
    return PV_EPROTO;
  size_t namelen = m->type == PV_FE_PARSE ? strlen(p.stmt) + 1 : 0;
  size_t tail = m->type == PV_FE_PARSE ? 2 + (size_t)p.nparam_types * 4 : 0;
  size_t total = PV_FRAME_HEADER + namelen + (size_t)tlen + 1 + tail;
  uint8_t *out = pv_sess_emit_reserve(e, total);
  if (!out)
    return PV_ENOMEM;
  uint8_t *q = out + PV_FRAME_HEADER;
  memcpy(q, p.stmt, namelen);
  q += namelen;
  memcpy(q, token, (size_t)tlen + 1);
  q += tlen + 1;
  if (tail) {
    pv_put_u16(q, p.nparam_types);
    memcpy(q + 2, p.param_types, (size_t)p.nparam_types * 4);
  }
  out[0] = m->type;
  pv_put_u32(out + 1, (uint32_t)(total - 1));
  *repl = (pv_msg_t){.type = m->type,
                     .len = (uint32_t)(total - 5),
                     .body = out + PV_FRAME_HEADER};
  *repl_len = total;
  pv_sess_audit_refused(s, m, why);
  pv_log(PV_LOG_INFO, "session %llu: refused: %s", (unsigned long long)s->id,
         why);
  return PV_OK;
}

/* A SET / RESET / DISCARD touching pgveil.purpose. Returns NULL when fine,
 * else why it is refused (the previous purpose stays). */
static const char *apply_purpose(pv_session_t *s, const pv_guard_stmt_t *st,
                                 char *why, size_t cap) {
  const pv_rules_t *rules = pv_policy_rules(s->policy);
  bool all = st->set_name && strcmp(st->set_name, "all") == 0;
  bool ours = st->set_name && strcmp(st->set_name, "pgveil.purpose") == 0;
  if ((st->kind == PV_GSTMT_RESET && (ours || all)) ||
      (st->kind == PV_GSTMT_DISCARD && all) ||
      (st->kind == PV_GSTMT_SET && ours && !st->set_value)) {
    s->purpose = s->startup_purpose;
    s->local_saved = NO_LOCAL;
  } else if (st->kind == PV_GSTMT_SET && ours) {
    int idx = pv_rules_purpose_find(rules, st->set_value);
    if (idx == PV_PURPOSE_UNKNOWN ||
        !pv_rules_role_may_declare(rules, s->role, idx)) {
      snprintf(why, cap, "pgveil: role \"%s\" may not declare purpose \"%s\"",
               s->role, st->set_value);
      return why;
    }
    if (st->set_local && s->local_saved == NO_LOCAL)
      s->local_saved = s->purpose;
    else if (!st->set_local)
      s->local_saved = NO_LOCAL;
    s->purpose = idx;
  } else {
    return NULL;
  }
  s->restricted = pv_guard_purpose_restricted(rules, s->purpose);
  return NULL;
}

static void copy_opts_from(const pv_guard_copy_t *cp, pv_copy_opts_t *o) {
  pv_copy_opts_default(o, cp->format == PV_COPY_CSV);
  if (cp->delimiter && strlen(cp->delimiter) == 1)
    o->delim = cp->delimiter[0];
  if (cp->quote && strlen(cp->quote) == 1)
    o->quote = o->escape = cp->quote[0];
  if (cp->escape && strlen(cp->escape) == 1)
    o->escape = cp->escape[0];
  if (cp->null_str && strlen(cp->null_str) <= PV_COPY_NULL_MAX)
    strcpy(o->null_str, cp->null_str);
  o->header = cp->header;
}

/* Queues the rewriting plan of one COPY ... TO STDOUT of a simple Query. */
static const char *plan_copy(pv_session_t *s, const pv_guard_stmt_t *st,
                             char *why, size_t cap) {
  const pv_guard_copy_t *cp = &st->copy;
  if (s->copy_len == COPY_PLANS_MAX)
    return "pgveil: too many COPY statements in flight";
  size_t n = cp->is_query ? st->noutcols : cp->ncolumns;
  pv_result_col_t cols[256];
  if (n > 256) {
    snprintf(why, cap, "pgveil: COPY of more than 256 columns is refused");
    return why;
  }
  const pv_catalog_t *cat = pv_policy_db_catalog(s->db);
  for (size_t i = 0; i < n; i++) {
    const char *sch = cp->is_query ? st->outcols[i].schema : cp->schema;
    const char *tab = cp->is_query ? st->outcols[i].table : cp->table;
    const char *col = cp->is_query ? st->outcols[i].column : cp->columns[i];
    const pv_catalog_col_t *c =
        sch && tab && col ? pv_catalog_column_by_name(cat, sch, tab, col)
                          : NULL;
    const pv_catalog_rel_t *rel =
        !c && sch && tab && col ? pv_catalog_relation_by_name(cat, sch, tab)
                                : NULL;
    if (c)
      cols[i] =
          (pv_result_col_t){c->table_oid, c->attnum, c->type_oid, c->typmod, 0};
    else if (rel && strcmp(rel->table->subject, col) == 0)
      cols[i] = (pv_result_col_t){rel->table_oid, rel->subject_attnum,
                                  rel->subject_type_oid, rel->subject_typmod,
                                  0}; /* the consent subject */
    else
      cols[i] = (pv_result_col_t){0, 0, 0, -1, 0};
  }
  copy_plan_t *cpl = &s->copies[(s->copy_head + s->copy_len) % COPY_PLANS_MAX];
  memset(cpl, 0, sizeof *cpl);
  if (pv_plan_actions_build(cols, (uint16_t)n, cat, NULL, s->purpose,
                            pv_policy_key(s->policy, s->purpose),
                            &cpl->ra) != PV_OK)
    return "pgveil: out of memory";
  cpl->unit = s->units_sent + 1; /* this Query's unit, counted after */
  copy_opts_from(cp, &cpl->opts);
  cpl->header = cp->header;
  s->copy_len++;
  return NULL;
}

/* Session effects of an allowed statement, in order; returns a refusal
 * reason or NULL. */
static const char *apply_stmt(pv_session_t *s, const pv_guard_stmt_t *st,
                              bool extended, char *why, size_t cap) {
  if (st->kind == PV_GSTMT_SET || st->kind == PV_GSTMT_RESET ||
      st->kind == PV_GSTMT_DISCARD) {
    const char *r = apply_purpose(s, st, why, cap);
    if (r)
      return r;
  }
  if (st->has_copy && !st->copy.is_from && st->copy.is_stdio) {
    if (extended && st->touches_protected && s->restricted)
      return "pgveil: COPY of protected data is only served in the simple "
             "query protocol";
    if (!extended)
      return plan_copy(s, st, why, cap);
  }
  return NULL;
}

/* Decides a Query or Parse. OUT: *repl and *repl_len set when the message is
 * replaced by a refusal. */
static int guard_message(pv_session_t *s, emit_t *e, const pv_msg_t *m,
                         pv_msg_t *repl, size_t *repl_len) {
  const char *sql;
  size_t len;
  if (m->type == PV_FE_QUERY) {
    pv_fe_query_t q;
    if (pv_fe_query_decode(m, &q) != PV_OK)
      return PV_EPROTO;
    sql = q.sql, len = q.sql_len;
  } else {
    pv_fe_parse_t p;
    if (pv_fe_parse_decode(m, &p) != PV_OK)
      return PV_EPROTO;
    sql = p.sql, len = p.sql_len;
  }
  if (s->restricted && (s->scs_off || s->enc_unsafe))
    return refuse_msg(s, e, m,
                      s->scs_off
                          ? "pgveil: standard_conforming_strings is off; "
                            "statements are refused until it is on"
                          : "pgveil: this client_encoding can hide quotes "
                            "inside multibyte characters; use UTF8",
                      repl, repl_len);
  if (tool_statement(sql, len))
    return PV_OK;
  const pv_guard_result_t *res = NULL;
  int rc = guard_analyze(s, sql, len, &res);
  pv_sess_audit_note(s, res);
  if (rc)
    return s->restricted
               ? refuse_msg(s, e, m,
                            "pgveil: the statement could not be analysed, so "
                            "it is refused",
                            repl, repl_len)
               : PV_OK;
  if (!res)
    return PV_OK;
  if (res->refused && res->first_refused)
    return refuse_msg(s, e, m, res->first_refused->message, repl, repl_len);
  char why[REFUSAL_MAX];
  unsigned copies_before = s->copy_len;
  for (size_t i = 0; i < res->nstmts; i++) {
    const char *r =
        apply_stmt(s, &res->stmts[i], m->type == PV_FE_PARSE, why, sizeof why);
    if (r) {
      while (s->copy_len > copies_before) /* nothing of it will run */
        pv_plan_actions_free(
            s->copies[(s->copy_head + --s->copy_len) % COPY_PLANS_MAX].ra);
      return refuse_msg(s, e, m, r, repl, repl_len);
    }
  }
  return PV_OK;
}

int pv_sess_client_msg(pv_session_t *s, emit_t *e, const pv_msg_t *m,
                       const uint8_t *raw, size_t rawlen) {
  if (s->state == S_AUTH) {
    if (m->type != PV_FE_PASSWORD) {
      /* A query pipelined before ReadyForQuery: hold it until the session
       * is tracked, so nothing passes unaccounted. */
      s->client.held = true;
      pv_sess_stop_reading(&s->client);
      return MSG_HOLD;
    }
    pv_sess_emit_span(e, raw, rawlen);
    return PV_OK;
  }
  pv_msg_t repl = {0};
  size_t repl_len = 0;
  if (s->policy &&
      (m->type == PV_FE_QUERY || m->type == PV_FE_PARSE ||
       m->type == PV_FE_BIND || m->type == PV_FE_EXECUTE) &&
      pv_sess_refresh_policy(s) != PV_OK)
    return PV_ESTATE;
  if (s->policy && (m->type == PV_FE_QUERY || m->type == PV_FE_PARSE)) {
    int rc = guard_message(s, e, m, &repl, &repl_len);
    if (rc)
      return rc;
  }
  if (s->policy && m->type == PV_FE_FUNCTION_CALL && s->restricted)
    return PV_EDENIED;
  pv_sess_audit_client(s, m, repl_len != 0);
  pv_metrics_client_msg(s->w->metrics, m->type);
  if (m->type == PV_FE_QUERY || m->type == PV_FE_SYNC ||
      m->type == PV_FE_FUNCTION_CALL)
    s->units_sent++;
  pv_fe_effect_t eff = {0};
  int rc = pv_tracker_frontend(s->tracker, repl_len ? &repl : m, &eff);
  if (rc)
    return rc;
  if (repl_len) {
    /* The replacement sits in scratch; an injected Describe goes first. */
    if (eff.inject_len)
      return PV_ESTATE; /* never for Query/Parse */
    pv_sess_emit_span(e, (const uint8_t *)repl.body - PV_FRAME_HEADER,
                      repl_len);
    return PV_OK;
  }
  if (eff.inject_len && (rc = pv_sess_emit_copy(e, eff.inject, eff.inject_len)))
    return rc;
  pv_sess_emit_span(e, raw, rawlen);
  return PV_OK;
}
