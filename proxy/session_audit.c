/* Owns what a session tells the audit log and its explanation notices:
 * which statements touched protected data (from the guard), how many rows
 * each sent, refusals, the disclosure ledger of consent-gated values shown
 * in clear, and the per-result-set NOTICE of purposes with `explain:
 * notice`. Never formats a protected value; no socket I/O (the notice goes
 * through the emitter). Costs nothing when both are off. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgveil/audit.h"
#include "pgveil/pg_msg_backend.h"
#include "pgveil/pg_msg_frontend.h"
#include "session_internal.h"

#define SUBJECT_MAX 256 /* bytes of one subject id in the ledger */

/* What one statement touched, formatted once. Refcounted: shared by the
 * statement/portal maps and the FIFO. */
typedef struct {
  unsigned refs;
  uint64_t fingerprint;
  char detail[];
} tmpl_t;

/* One audited statement run: rows counted until it is written. */
typedef struct {
  tmpl_t *t;
  uint32_t stmt_index; /* within its simple Query */
  uint64_t rows;
  bool error;
  char purpose[PURPOSE_MAX];
} rec_t;

/* A row producer in server answer order: a Query (its audited statements)
 * or an Execute (one record or none). */
typedef struct {
  bool query;
  uint64_t unit;
  rec_t *recs;
  uint32_t nrecs, done; /* done: statements of the Query completed */
} ent_t;

typedef struct {
  char *name;
  tmpl_t *t;
} name_t;

typedef struct {
  name_t *v;
  size_t n, cap;
} map_t;

/* Consent-gated values shown in clear, gathered per statement. */
typedef struct {
  uint64_t plan_id;
  int32_t subject_col; /* -1: empty */
  unsigned part;
  char table[2 * NAME_MAX_BYTES + 2];
  char *cols[16];
  size_t ncols;
  char ids[PV_AUDIT_LEDGER_IDS][SUBJECT_MAX + 1];
  size_t nids;
  uint64_t fingerprint;
} ledger_t;

struct pv_sess_audit {
  const pv_guard_result_t *noted; /* the current Query/Parse's analysis */
  ent_t *fifo;
  size_t head, len, cap;
  map_t stmts, portals;
  ledger_t ledger;
  /* explanations */
  bool explained;      /* this result set got its notice */
  char *pending;       /* built at RowDescription, for a result set */
  uint64_t cache_plan; /* plan id, purpose and generation of `cached` */
  int cache_purpose;
  uint64_t cache_gen;
  char *cached;
};

static bool audit_on(const pv_session_t *s) {
  return s->w->shared->audit != NULL && s->policy != NULL;
}

static bool explain_on(const pv_session_t *s) {
  if (!s->policy || s->purpose < 0)
    return false;
  const pv_rules_t *r = pv_policy_rules(s->policy);
  return (size_t)s->purpose < r->npurposes &&
         r->purposes[s->purpose].explain == PV_EXPLAIN_NOTICE;
}

static struct pv_sess_audit *state(pv_session_t *s) {
  if (!s->audit && (s->audit = calloc(1, sizeof *s->audit)) != NULL)
    s->audit->ledger.subject_col = -1;
  return s->audit;
}

static const char *purpose_name(const pv_session_t *s) {
  if (!s->policy || s->purpose < 0)
    return "none";
  const pv_rules_t *r = pv_policy_rules(s->policy);
  return (size_t)s->purpose < r->npurposes ? r->purposes[s->purpose].name
                                           : "none";
}

static void tmpl_unref(tmpl_t *t) {
  if (t && --t->refs == 0)
    free(t);
}

static tmpl_t *tmpl_ref(tmpl_t *t) {
  if (t)
    t->refs++;
  return t;
}

/* ---- writing entries ---------------------------------------------------- */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void base_entry(const pv_session_t *s, pv_audit_entry_t *e,
                       pv_audit_event_t ev, const char *purpose) {
  *e = (pv_audit_entry_t){.event = ev,
                          .time_ms = now_ms(),
                          .session = s->id,
                          .client = s->client_addr[0] ? s->client_addr : NULL,
                          .role = s->role,
                          .database = s->dbname,
                          .application_name =
                              s->app_name[0] ? s->app_name : NULL,
                          .purpose = purpose};
}

static void submit(pv_session_t *s, const pv_audit_entry_t *e) {
  char line[PV_AUDIT_LINE_MAX];
  int n = pv_audit_format_entry(e, line, sizeof line);
  if (n > 0)
    (void)pv_audit_submit(s->w->shared->audit, s->w->id, line, (size_t)n);
}

static void write_rec(pv_session_t *s, const rec_t *r) {
  pv_audit_entry_t e;
  base_entry(s, &e, PV_AUDIT_STATEMENT, r->purpose);
  e.fingerprint = r->t->fingerprint;
  e.detail = r->t->detail;
  e.rows = r->rows;
  e.error = r->error;
  submit(s, &e);
}

static void ledger_flush(pv_session_t *s, struct pv_sess_audit *a) {
  ledger_t *l = &a->ledger;
  if (l->nids == 0)
    return;
  const char *ids[PV_AUDIT_LEDGER_IDS];
  for (size_t i = 0; i < l->nids; i++)
    ids[i] = l->ids[i];
  pv_audit_entry_t e;
  base_entry(s, &e, PV_AUDIT_LEDGER, purpose_name(s));
  e.fingerprint = l->fingerprint;
  e.table = l->table;
  e.columns = (const char *const *)l->cols;
  e.ncolumns = l->ncols;
  e.subjects = ids;
  e.nsubjects = l->nids;
  e.part = l->part++;
  submit(s, &e);
  l->nids = 0;
}

/* A statement ended: its disclosures are written, the next starts anew. */
static void ledger_end(pv_session_t *s, struct pv_sess_audit *a) {
  ledger_flush(s, a);
  ledger_t *l = &a->ledger;
  for (size_t i = 0; i < l->ncols; i++)
    free(l->cols[i]);
  l->ncols = 0;
  l->part = 0;
  l->plan_id = 0;
  l->subject_col = -1;
}

/* ---- the FIFO of row producers ------------------------------------------ */

static ent_t *fifo_at(struct pv_sess_audit *a, size_t i) {
  return &a->fifo[(a->head + i) % a->cap];
}

static ent_t *fifo_push(struct pv_sess_audit *a) {
  if (a->len == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 16;
    ent_t *f = malloc(cap * sizeof *f);
    if (!f)
      return NULL;
    for (size_t i = 0; i < a->len; i++)
      f[i] = *fifo_at(a, i);
    free(a->fifo);
    a->fifo = f;
    a->head = 0;
    a->cap = cap;
  }
  ent_t *e = fifo_at(a, a->len++);
  memset(e, 0, sizeof *e);
  return e;
}

/* Writes (unless drop) and forgets the head entry. */
static void fifo_pop(pv_session_t *s, struct pv_sess_audit *a, bool drop) {
  ent_t *e = fifo_at(a, 0);
  if (!drop)
    ledger_end(s, a);
  for (uint32_t i = 0; i < e->nrecs; i++) {
    if (!drop)
      write_rec(s, &e->recs[i]);
    tmpl_unref(e->recs[i].t);
  }
  free(e->recs);
  a->head = (a->head + 1) % a->cap;
  a->len--;
}

/* ---- statement and portal names ----------------------------------------- */

static name_t *map_find(map_t *m, const char *name) {
  for (size_t i = 0; i < m->n; i++)
    if (strcmp(m->v[i].name, name) == 0)
      return &m->v[i];
  return NULL;
}

static void map_del(map_t *m, const char *name) {
  name_t *e = map_find(m, name);
  if (!e)
    return;
  free(e->name);
  tmpl_unref(e->t);
  *e = m->v[--m->n];
}

/* name -> t (a reference taken); t NULL removes it. */
static void map_set(map_t *m, const char *name, tmpl_t *t) {
  map_del(m, name);
  if (!t)
    return;
  if (m->n == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 8;
    name_t *v = realloc(m->v, cap * sizeof *v);
    if (!v)
      return; /* not audited: the statement still runs under the guard */
    m->v = v;
    m->cap = cap;
  }
  char *n = strdup(name);
  if (!n)
    return;
  m->v[m->n++] = (name_t){n, tmpl_ref(t)};
}

static void map_free(map_t *m) {
  for (size_t i = 0; i < m->n; i++) {
    free(m->v[i].name);
    tmpl_unref(m->v[i].t);
  }
  free(m->v);
  memset(m, 0, sizeof *m);
}

/* ---- client messages ----------------------------------------------------- */

static tmpl_t *tmpl_new(const pv_guard_stmt_t *st, const char *sql,
                        size_t len) {
  char detail[PV_AUDIT_DETAIL_MAX];
  if (pv_audit_format_touched(st->touched, st->ntouched, detail,
                              sizeof detail) < 0) {
    /* truncated, and says so: still valid JSON */
  }
  size_t dl = strlen(detail);
  tmpl_t *t = malloc(sizeof *t + dl + 1);
  if (!t)
    return NULL;
  t->refs = 1;
  size_t from =
      st->location > 0 && (size_t)st->location < len ? (size_t)st->location : 0;
  size_t n = st->length > 0 && from + (size_t)st->length <= len
                 ? (size_t)st->length
                 : len - from;
  t->fingerprint = pv_audit_fingerprint(sql + from, n);
  memcpy(t->detail, detail, dl + 1);
  return t;
}

/* The first statement of an allowed Parse that touched protected data. */
static tmpl_t *parse_tmpl(const pv_guard_result_t *res, const char *sql,
                          size_t len) {
  for (size_t i = 0; res && i < res->nstmts; i++)
    if (res->stmts[i].touches_protected && res->stmts[i].ntouched)
      return tmpl_new(&res->stmts[i], sql, len);
  return NULL;
}

static void query_recs(pv_session_t *s, ent_t *e, const pv_guard_result_t *res,
                       const char *sql, size_t len) {
  size_t n = 0;
  for (size_t i = 0; res && i < res->nstmts; i++)
    n += res->stmts[i].touches_protected && res->stmts[i].ntouched;
  if (!n || !(e->recs = calloc(n, sizeof *e->recs)))
    return;
  for (size_t i = 0; i < res->nstmts; i++) {
    const pv_guard_stmt_t *st = &res->stmts[i];
    if (!st->touches_protected || !st->ntouched)
      continue;
    rec_t *r = &e->recs[e->nrecs];
    if (!(r->t = tmpl_new(st, sql, len)))
      continue;
    r->stmt_index = (uint32_t)i;
    snprintf(r->purpose, sizeof r->purpose, "%s", purpose_name(s));
    e->nrecs++;
  }
}

void pv_sess_audit_note(pv_session_t *s, const pv_guard_result_t *res) {
  if (audit_on(s) && state(s))
    s->audit->noted = res;
}

void pv_sess_audit_refused(pv_session_t *s, const pv_msg_t *m,
                           const char *why) {
  if (!audit_on(s) || !state(s))
    return;
  const char *sql = "";
  size_t len = 0;
  pv_fe_query_t q;
  pv_fe_parse_t p;
  if (m->type == PV_FE_QUERY && pv_fe_query_decode(m, &q) == PV_OK)
    sql = q.sql, len = q.sql_len;
  else if (m->type == PV_FE_PARSE && pv_fe_parse_decode(m, &p) == PV_OK)
    sql = p.sql, len = p.sql_len;
  const pv_guard_result_t *res = s->audit->noted;
  const pv_guard_stmt_t *st = res ? res->first_refused : NULL;
  char detail[PV_AUDIT_DETAIL_MAX] = "";
  if (st && st->ntouched)
    if (pv_audit_format_touched(st->touched, st->ntouched, detail,
                                sizeof detail) < 0) {
      /* truncated, and says so */
    }
  pv_audit_entry_t e;
  base_entry(s, &e, PV_AUDIT_REFUSED, purpose_name(s));
  e.fingerprint = pv_audit_fingerprint(sql, len);
  e.detail = detail;
  e.reason = why;
  submit(s, &e);
}

void pv_sess_audit_client(pv_session_t *s, const pv_msg_t *m, bool refused) {
  if (!audit_on(s) || !state(s))
    return;
  struct pv_sess_audit *a = s->audit;
  const pv_guard_result_t *res = refused ? NULL : a->noted;
  a->noted = NULL;
  switch (m->type) {
  case PV_FE_QUERY: {
    pv_fe_query_t q;
    ent_t *e = fifo_push(a);
    if (!e)
      return;
    e->query = true;
    e->unit = s->units_sent + 1; /* counted after this call */
    if (res && pv_fe_query_decode(m, &q) == PV_OK)
      query_recs(s, e, res, q.sql, q.sql_len);
    return;
  }
  case PV_FE_PARSE: {
    pv_fe_parse_t p;
    if (pv_fe_parse_decode(m, &p) != PV_OK)
      return;
    tmpl_t *t = parse_tmpl(res, p.sql, p.sql_len);
    map_set(&a->stmts, p.stmt, t);
    tmpl_unref(t);
    return;
  }
  case PV_FE_BIND: {
    pv_fe_bind_t b;
    if (pv_fe_bind_decode(m, &b) != PV_OK)
      return;
    name_t *st = map_find(&a->stmts, b.stmt);
    map_set(&a->portals, b.portal, st ? st->t : NULL);
    return;
  }
  case PV_FE_CLOSE: {
    pv_fe_target_t c;
    if (pv_fe_close_decode(m, &c) == PV_OK)
      map_del(c.kind == 'S' ? &a->stmts : &a->portals, c.name);
    return;
  }
  case PV_FE_EXECUTE: {
    pv_fe_execute_t x;
    if (pv_fe_execute_decode(m, &x) != PV_OK)
      return;
    name_t *pt = map_find(&a->portals, x.portal);
    ent_t *e = fifo_push(a);
    if (!e)
      return;
    e->unit = s->units_sent + 1; /* the next Sync */
    if (pt && (e->recs = calloc(1, sizeof *e->recs))) {
      e->recs[0].t = tmpl_ref(pt->t);
      snprintf(e->recs[0].purpose, sizeof e->recs[0].purpose, "%s",
               purpose_name(s));
      e->nrecs = 1;
    }
    return;
  }
  default:
    return;
  }
}

/* ---- server messages ----------------------------------------------------- */

/* The head entry when it belongs to the unit the server is answering. */
static ent_t *current(const pv_session_t *s, struct pv_sess_audit *a) {
  if (!a->len || fifo_at(a, 0)->unit != s->units_done + 1)
    return NULL;
  return fifo_at(a, 0);
}

static rec_t *current_rec(const pv_session_t *s, struct pv_sess_audit *a,
                          const pv_be_effect_t *eff) {
  ent_t *e = current(s, a);
  if (!e)
    return NULL;
  if (!e->query)
    return e->nrecs ? &e->recs[0] : NULL;
  for (uint32_t i = 0; i < e->nrecs; i++)
    if (e->recs[i].stmt_index == eff->stmt_index)
      return &e->recs[i];
  return NULL;
}

static void on_error(pv_session_t *s, struct pv_sess_audit *a) {
  ent_t *e = current(s, a);
  if (!e)
    return;
  if (e->query) {
    for (uint32_t i = 0; i < e->nrecs; i++)
      e->recs[i].error |= e->recs[i].stmt_index >= e->done;
    return;
  }
  /* The server skips the rest up to Sync: those Executes never ran. */
  uint64_t unit = e->unit;
  for (uint32_t i = 0; i < e->nrecs; i++)
    e->recs[i].error = true;
  fifo_pop(s, a, false);
  while (a->len && fifo_at(a, 0)->unit == unit && !fifo_at(a, 0)->query)
    fifo_pop(s, a, true);
}

static int explain_end(pv_session_t *s, emit_t *e);
static int explain_rowdesc(pv_session_t *s, const pv_msg_t *m,
                           const pv_be_effect_t *eff);

int pv_sess_audit_server(pv_session_t *s, emit_t *em, const pv_msg_t *m,
                         const pv_be_effect_t *eff) {
  if (m->type == PV_BE_ROW_DESCRIPTION)
    return explain_rowdesc(s, m, eff);
  struct pv_sess_audit *a = s->audit;
  if (!a)
    return PV_OK;
  bool on = audit_on(s);
  int rc = PV_OK;
  if (m->type == PV_BE_COMMAND_COMPLETE || m->type == PV_BE_EMPTY_QUERY ||
      m->type == PV_BE_PORTAL_SUSPENDED)
    rc = explain_end(s, em); /* a result set without rows */
  switch (m->type) {
  case PV_BE_DATA_ROW:
  case PV_BE_COPY_DATA:
    if (on && eff->rows != PV_ROWS_NONE) {
      rec_t *r = current_rec(s, a, eff);
      if (r)
        r->rows++;
    }
    return rc;
  case PV_BE_COMMAND_COMPLETE:
  case PV_BE_EMPTY_QUERY:
  case PV_BE_PORTAL_SUSPENDED:
    a->explained = false;
    if (!on || !current(s, a))
      return rc;
    if (fifo_at(a, 0)->query) {
      fifo_at(a, 0)->done++;
      ledger_end(s, a); /* the Query's next statement starts */
    } else {
      fifo_pop(s, a, false);
    }
    return rc;
  case PV_BE_ERROR:
    a->explained = false;
    free(a->pending);
    a->pending = NULL;
    if (on)
      on_error(s, a);
    return rc;
  case PV_BE_READY: {
    a->explained = false;
    free(a->pending);
    a->pending = NULL;
    uint64_t unit = s->units_done + 1; /* the unit this ends */
    while (a->len && fifo_at(a, 0)->unit <= unit)
      fifo_pop(s, a, false);
    ledger_end(s, a);
    return rc;
  }
  default:
    return rc;
  }
}

void pv_sess_audit_free(pv_session_t *s) {
  struct pv_sess_audit *a = s->audit;
  if (!a)
    return;
  while (a->len)
    fifo_pop(s, a, !audit_on(s));
  if (audit_on(s))
    ledger_end(s, a);
  for (size_t i = 0; i < a->ledger.ncols; i++)
    free(a->ledger.cols[i]);
  free(a->fifo);
  map_free(&a->stmts);
  map_free(&a->portals);
  free(a->pending);
  free(a->cached);
  free(a);
  s->audit = NULL;
}

void pv_sess_audit_peer(pv_session_t *s) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getpeername(&s->client.tcp, (struct sockaddr *)&ss, &len) != 0)
    return;
  char host[64] = "";
  int port = 0;
  if (ss.ss_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
    uv_ip4_name(in, host, sizeof host);
    port = ntohs(in->sin_port);
    snprintf(s->client_addr, sizeof s->client_addr, "%s:%d", host, port);
  } else if (ss.ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
    uv_ip6_name(in6, host, sizeof host);
    port = ntohs(in6->sin6_port);
    snprintf(s->client_addr, sizeof s->client_addr, "[%s]:%d", host, port);
  }
}

/* ---- the disclosure ledger ----------------------------------------------- */

/* A subject id as text: text format as it is, binary integers in decimal,
 * other binary values in hex. */
static void subject_text(const pv_col_action_t *c, const uint8_t *v,
                         int32_t len, char *out, size_t cap) {
  if (c->format == 0) {
    size_t n = (size_t)len < cap - 1 ? (size_t)len : cap - 1;
    memcpy(out, v, n);
    out[n] = '\0';
    return;
  }
  if ((c->type_oid == 21 && len == 2) || (c->type_oid == 23 && len == 4) ||
      (c->type_oid == 20 && len == 8)) {
    int64_t x = 0;
    for (int32_t i = 0; i < len; i++)
      x = (int64_t)((uint64_t)x << 8 | v[i]);
    if (len == 2)
      x = (int16_t)x;
    else if (len == 4)
      x = (int32_t)x;
    snprintf(out, cap, "%lld", (long long)x);
    return;
  }
  size_t o = 0;
  o += (size_t)snprintf(out, cap, "\\x");
  for (int32_t i = 0; i < len && o + 3 < cap; i++)
    o += (size_t)snprintf(out + o, cap - o, "%02x", v[i]);
}

/* Starts gathering for (plan, subject column j): the table and the gated
 * columns shown in clear with it. */
static void ledger_begin(pv_session_t *s, struct pv_sess_audit *a, uint64_t key,
                         const pv_row_actions_t *ra, int32_t j) {
  ledger_end(s, a);
  ledger_t *l = &a->ledger;
  l->plan_id = key;
  l->subject_col = j;
  l->table[0] = '\0';
  l->fingerprint = 0;
  if (a->len) {
    rec_t *r = NULL;
    ent_t *e = fifo_at(a, 0);
    if (!e->query && e->nrecs)
      r = &e->recs[0];
    for (uint32_t i = 0; e->query && i < e->nrecs; i++)
      if (e->recs[i].stmt_index == e->done)
        r = &e->recs[i];
    l->fingerprint = r ? r->t->fingerprint : 0;
  }
  for (uint16_t i = 0; i < ra->ncols; i++) {
    const pv_col_action_t *c = &ra->cols[i];
    if (!c->otherwise || c->subject_col != j || !c->action ||
        c->action->kind != PV_ACT_CLEAR || !c->column_id)
      continue;
    const char *dot = strrchr(c->column_id, '.');
    if (!dot)
      continue;
    if (!l->table[0])
      snprintf(l->table, sizeof l->table, "%.*s", (int)(dot - c->column_id),
               c->column_id);
    bool dup = false;
    for (size_t k = 0; k < l->ncols; k++)
      dup |= strcmp(l->cols[k], dot + 1) == 0;
    if (!dup && l->ncols < sizeof l->cols / sizeof *l->cols &&
        (l->cols[l->ncols] = strdup(dot + 1)))
      l->ncols++;
  }
}

/* key: the plan's id, or a COPY's actions (bit 63 set). */
static void disclosed(pv_session_t *s, uint64_t key, const pv_row_actions_t *ra,
                      const uint8_t *consent, pv_sess_field_fn get,
                      const void *row) {
  if (!consent || !audit_on(s) || !state(s))
    return;
  struct pv_sess_audit *a = s->audit;
  int32_t done_j = -1;
  for (uint16_t i = 0; i < ra->ncols; i++) {
    const pv_col_action_t *c = &ra->cols[i];
    int32_t j = c->subject_col;
    if (!consent[i] || !c->otherwise || j < 0 || j == done_j || !c->action ||
        c->action->kind != PV_ACT_CLEAR)
      continue;
    done_j = j;
    ledger_t *l = &a->ledger;
    if (l->plan_id != key || l->subject_col != j)
      ledger_begin(s, a, key, ra, j);
    const uint8_t *v;
    int32_t len;
    if (get(row, (uint16_t)j, &v, &len) != PV_OK || len < 0)
      continue;
    char id[SUBJECT_MAX + 1];
    subject_text(&ra->cols[j], v, len, id, sizeof id);
    bool dup = false;
    for (size_t k = 0; k < l->nids && !dup; k++)
      dup = strcmp(l->ids[k], id) == 0;
    if (dup)
      continue;
    if (l->nids == PV_AUDIT_LEDGER_IDS)
      ledger_flush(s, a); /* a continuation entry follows */
    memcpy(l->ids[l->nids++], id, strlen(id) + 1);
  }
}

/* ---- explanations -------------------------------------------------------- */

static int emit_notice(emit_t *e, const char *text) {
  size_t cap = strlen(text) + 64;
  uint8_t *out = pv_sess_emit_reserve(e, cap);
  if (!out)
    return PV_ENOMEM;
  int n = pv_be_error_encode(out, cap, "NOTICE", "00000", text);
  if (n < 0)
    return n;
  out[0] = PV_BE_NOTICE; /* the same fields as an ErrorResponse */
  pv_sess_emit_commit(e, (size_t)n);
  return PV_OK;
}

static char *explain_text(pv_session_t *s, const pv_row_actions_t *ra,
                          const char *const *names) {
  char buf[PV_AUDIT_EXPLAIN_MAX];
  if (pv_audit_explain(ra, names, purpose_name(s), buf, sizeof buf) == 0)
    return NULL;
  return strdup(buf);
}

static int explain_rowdesc(pv_session_t *s, const pv_msg_t *m,
                           const pv_be_effect_t *eff) {
  if (eff->swallow || !explain_on(s) || !s->db || !state(s))
    return PV_OK;
  struct pv_sess_audit *a = s->audit;
  pv_be_field_t f[256];
  uint16_t n;
  if (pv_be_rowdesc_decode(m, f, 256, &n) != PV_OK)
    return PV_OK; /* wide results: explained at their first row */
  pv_result_col_t cols[256];
  const char *names[256];
  for (uint16_t i = 0; i < n; i++) {
    cols[i] = (pv_result_col_t){f[i].table_oid, f[i].attnum, f[i].type_oid,
                                f[i].typmod, f[i].format};
    names[i] = f[i].name;
  }
  pv_row_actions_t *ra = NULL;
  if (pv_plan_actions_build(cols, n, pv_policy_db_catalog(s->db),
                            pv_policy_db_reldir(s->db), s->purpose,
                            pv_policy_key(s->policy, s->purpose), &ra) != PV_OK)
    return PV_ENOMEM;
  free(a->pending);
  a->pending = ra->nacted ? explain_text(s, ra, names) : NULL;
  a->explained = false;
  pv_plan_actions_free(ra);
  return PV_OK;
}

static int explain_row(pv_session_t *s, emit_t *e, const pv_plan_t *plan,
                       const pv_row_actions_t *ra) {
  if (!explain_on(s) || !state(s) || s->audit->explained)
    return PV_OK;
  struct pv_sess_audit *a = s->audit;
  a->explained = true;
  if (a->pending) {
    int rc = emit_notice(e, a->pending);
    free(a->pending);
    a->pending = NULL;
    return rc;
  }
  uint64_t gen = pv_policy_generation(s->policy);
  if (!a->cached || a->cache_plan != plan->id ||
      a->cache_purpose != s->purpose || a->cache_gen != gen) {
    const char *stack[64];
    const char **names =
        plan->ncols <= 64 ? stack : malloc(plan->ncols * sizeof *names);
    if (!names)
      return PV_ENOMEM;
    for (uint16_t i = 0; i < plan->ncols; i++)
      names[i] = plan->cols[i].name;
    free(a->cached);
    a->cached = explain_text(s, ra, names);
    if (names != stack)
      free(names);
    a->cache_plan = plan->id;
    a->cache_purpose = s->purpose;
    a->cache_gen = gen;
  }
  return a->cached ? emit_notice(e, a->cached) : PV_OK;
}

static int explain_end(pv_session_t *s, emit_t *e) {
  struct pv_sess_audit *a = s->audit;
  if (!a || !a->pending || a->explained)
    return PV_OK;
  int rc = emit_notice(e, a->pending);
  free(a->pending);
  a->pending = NULL;
  return rc;
}

int pv_sess_audit_row(pv_session_t *s, emit_t *e, const pv_plan_t *plan,
                      const pv_row_actions_t *ra, const uint8_t *consent,
                      const pv_msg_t *row) {
  if (consent)
    disclosed(s, plan->id, ra, consent, pv_sess_datarow_field, row);
  return explain_row(s, e, plan, ra);
}

void pv_sess_audit_copy_row(pv_session_t *s, const pv_row_actions_t *ra,
                            const uint8_t *consent, pv_sess_field_fn get,
                            const void *row) {
  if (consent)
    disclosed(s, (uint64_t)(uintptr_t)ra | (1ull << 63), ra, consent, get, row);
}
