/* Owns the consent store thread (include/pgveil/consent.h): its uv loop, its
 * LISTEN connection, full loads on a second short-lived connection in the
 * libuv thread pool, NOTIFY deltas, heartbeats, staleness and publication.
 * Must not touch the control thread's state, block a worker, or log the DSN
 * or any subject value. */
#include "pgveil/conninfo.h"
#include "pgveil/consent.h"

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "pgveil/log.h"

#define ERRMSG_MAX 512
#define IDENT_MAX 64
#define TICK_MS 50
#define STOP_CHECK_ROWS 65536

pv_consent_store_limits_t pv_consent_store_limits_default(void) {
  return (pv_consent_store_limits_t){.backoff_min_ms = 100,
                                     .backoff_max_ms = 5000,
                                     .config_poll_ms = 1000,
                                     .start_wait_ms = 30000,
                                     .max_subjects = 200000000,
                                     .delta_merge = 0,
                                     .load_parts = 0};
}

static uint64_t now_ms(void) { return uv_hrtime() / 1000000u; }

/* The consent section of the rules, copied so a reload can be compared. */
typedef struct {
  bool configured;
  char schema[IDENT_MAX], table[IDENT_MAX], scol[IDENT_MAX], pcol[IDENT_MAX],
      gcol[IDENT_MAX], chan[IDENT_MAX];
  uint64_t max_staleness_ms, resync_ms, purposes_hash;
} ccfg_t;

typedef struct pollbox {
  uv_poll_t h;
  PGconn *pg; /* finished in the close callback */
} pollbox_t;

/* One full load, run in the thread pool. Owner: the store until
 * after_load frees it. */
typedef struct {
  uv_work_t req;
  pv_consent_store_t *st;
  ccfg_t cc;
  pv_policy_t *policy; /* for purpose names; a reference */
  pv_consent_key_kind_t kind;
  uint64_t cfg_gen, epoch, started_ms;
  /* results */
  int rc;
  char err[ERRMSG_MAX];
  pv_consent_set_t *set;
  uint64_t rows, ignored, ms;
  size_t parts; /* COPYs it ran in parallel */
} load_job_t;

struct pv_consent_store {
  const pv_config_t *cfg;
  pv_policy_holder_t *ph;
  pv_consent_store_limits_t lim;
  uv_loop_t loop;
  uv_thread_t thread;
  uv_async_t wake;
  uv_timer_t tick;
  pthread_mutex_t mu; /* guards the request flags and first_done */
  pthread_cond_t cv;
  bool want_stop, want_resync, first_done;
  atomic_bool stopping; /* read by load jobs */
  pv_consent_holder_t holder;
  pv_consent_clock_t *clock;

  /* loop-thread state */
  uint64_t policy_gen, cfg_gen, next_cfg_poll_ms;
  pv_policy_t *policy; /* current rules, a reference */
  ccfg_t cc;
  PGconn *pg;
  pollbox_t *poll;
  uint64_t epoch; /* increases with every (re)connect */
  pv_consent_key_kind_t kind;
  bool hb_inflight;
  uint64_t hb_sent_ms, next_hb_ms, next_connect_ms, backoff_ms;
  pv_consent_set_t *base, *delta, *since; /* since: while a load runs */
  load_job_t *job;
  bool resync_pending, dirty, was_stale, ever_loaded;
  uint64_t next_resync_ms;

  /* counters for stats (relaxed atomics) */
  _Atomic uint64_t confirmed_ms, loads, load_ms, load_rows, notifies, forced,
      reconnects, stale_events;
  atomic_bool configured, connected;
};

/* ---- Configuration ------------------------------------------------------ */

static void cfg_from_rules(const pv_rules_t *r, ccfg_t *c) {
  memset(c, 0, sizeof *c);
  if (!r || !r->consent.configured)
    return;
  const pv_rules_consent_t *k = &r->consent;
  c->configured = true;
  snprintf(c->schema, sizeof c->schema, "%s", k->schema ? k->schema : "public");
  snprintf(c->table, sizeof c->table, "%s", k->table);
  snprintf(c->scol, sizeof c->scol, "%s", k->subject_column);
  snprintf(c->pcol, sizeof c->pcol, "%s", k->purpose_column);
  snprintf(c->gcol, sizeof c->gcol, "%s", k->granted_column);
  snprintf(c->chan, sizeof c->chan, "%s",
           k->notify_channel ? k->notify_channel : "pgveil_consent");
  c->max_staleness_ms = k->max_staleness_ms ? k->max_staleness_ms : 5000;
  c->resync_ms = k->resync_interval_ms ? k->resync_interval_ms : 60000;
  c->purposes_hash = pv_consent_purposes_hash(r);
}

/* Member by member: the struct has padding. */
static bool ccfg_eq(const ccfg_t *a, const ccfg_t *b) {
  return a->configured == b->configured && strcmp(a->schema, b->schema) == 0 &&
         strcmp(a->table, b->table) == 0 && strcmp(a->scol, b->scol) == 0 &&
         strcmp(a->pcol, b->pcol) == 0 && strcmp(a->gcol, b->gcol) == 0 &&
         strcmp(a->chan, b->chan) == 0 &&
         a->max_staleness_ms == b->max_staleness_ms &&
         a->resync_ms == b->resync_ms && a->purposes_hash == b->purposes_hash;
}

/* ---- libpq -------------------------------------------------------------- */

static void trim_nl(char *s) {
  size_t n = strlen(s);
  while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
    s[--n] = '\0';
}

static PGconn *connect_pg(const pv_config_t *cfg, const char *app, char *err,
                          size_t errcap) {
  pv_conninfo_t p;
  if (pv_conninfo_build(cfg, NULL, app, true, "5", &p, err, errcap))
    return NULL;
  PGconn *pg = PQconnectdbParams(p.k, p.v, 0);
  pv_conninfo_dispose(&p);
  if (!pg || PQstatus(pg) != CONNECTION_OK) {
    snprintf(err, errcap, "cannot connect for consent: %s",
             pg ? PQerrorMessage(pg) : "out of memory");
    trim_nl(err);
    PQfinish(pg);
    return NULL;
  }
  return pg;
}

static bool pq_ok(PGconn *pg, PGresult *r, char *err, size_t errcap) {
  ExecStatusType s = PQresultStatus(r);
  if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK || s == PGRES_COPY_OUT)
    return true;
  snprintf(err, errcap, "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(pg));
  trim_nl(err);
  return false;
}

/* "schema"."table" with identifiers quoted. */
static bool qualified(PGconn *pg, const ccfg_t *c, char *out, size_t cap) {
  char *s = PQescapeIdentifier(pg, c->schema, strlen(c->schema));
  char *t = PQescapeIdentifier(pg, c->table, strlen(c->table));
  bool ok = s && t && (size_t)snprintf(out, cap, "%s.%s", s, t) < cap;
  PQfreemem(s);
  PQfreemem(t);
  return ok;
}

/* The key kind of the subject column; PV_ENOENT when the table or column
 * is missing. */
static int subject_kind(PGconn *pg, const ccfg_t *c,
                        pv_consent_key_kind_t *kind, char *err, size_t errcap) {
  const char *params[3] = {c->schema, c->table, c->scol};
  PGresult *r =
      PQexecParams(pg,
                   "SELECT a.atttypid::int8 FROM pg_catalog.pg_attribute a"
                   " JOIN pg_catalog.pg_class k ON k.oid = a.attrelid"
                   " JOIN pg_catalog.pg_namespace n ON n.oid = k.relnamespace"
                   " WHERE n.nspname = $1 AND k.relname = $2 AND a.attname = $3"
                   " AND NOT a.attisdropped",
                   3, NULL, params, NULL, NULL, 0);
  int rc = PV_OK;
  if (!pq_ok(pg, r, err, errcap))
    rc = PV_EIO;
  else if (PQntuples(r) != 1) {
    snprintf(err, errcap, "consent table %s.%s has no column %s", c->schema,
             c->table, c->scol);
    rc = PV_ENOENT;
  } else {
    *kind =
        pv_consent_key_kind((uint32_t)strtoul(PQgetvalue(r, 0, 0), NULL, 10));
  }
  PQclear(r);
  return rc;
}

/* ---- Full load (thread pool) ------------------------------------------- */

/* COPY text-format unescaping of src[0..n) into out (NUL-terminated).
 * False when it does not fit or is malformed. */
static bool copy_unescape(const char *src, size_t n, char *out, size_t cap,
                          size_t *outlen) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    char ch = src[i];
    if (ch == '\\') {
      if (++i == n)
        return false;
      ch = src[i];
      switch (ch) {
      case 'b':
        ch = '\b';
        break;
      case 'f':
        ch = '\f';
        break;
      case 'n':
        ch = '\n';
        break;
      case 'r':
        ch = '\r';
        break;
      case 't':
        ch = '\t';
        break;
      case 'v':
        ch = '\v';
        break;
      case 'x': {
        int v = 0, d = 0;
        while (d < 2 && i + 1 < n) {
          char h = src[i + 1];
          int x = h >= '0' && h <= '9' ? h - '0'
                  : (h | 0x20) >= 'a' && (h | 0x20) <= 'f'
                      ? (h | 0x20) - 'a' + 10
                      : -1;
          if (x < 0)
            break;
          v = v * 16 + x;
          i++;
          d++;
        }
        if (!d)
          return false;
        ch = (char)v;
        break;
      }
      default:
        if (ch >= '0' && ch <= '7') {
          int v = ch - '0';
          for (int d = 1;
               d < 3 && i + 1 < n && src[i + 1] >= '0' && src[i + 1] <= '7';
               d++)
            v = v * 8 + (src[++i] - '0');
          ch = (char)v;
        }
      }
    }
    if (o + 1 >= cap)
      return false;
    out[o++] = ch;
  }
  out[o] = '\0';
  *outlen = o;
  return true;
}

/* Purpose names already seen in this load, exactly as the table spells
 * them, so most rows skip pv_rules_purpose_find's case folding. */
#define PCACHE_MAX 16
typedef struct {
  char name[PCACHE_MAX][IDENT_MAX + 1];
  size_t len[PCACHE_MAX];
  int idx[PCACHE_MAX];
  int n;
} pcache_t;

static int purpose_of(pcache_t *c, const pv_rules_t *rules, const char *name,
                      size_t len) {
  for (int i = 0; i < c->n; i++)
    if (c->len[i] == len && memcmp(c->name[i], name, len) == 0)
      return c->idx[i];
  int p = pv_rules_purpose_find(rules, name);
  if (c->n < PCACHE_MAX) {
    memcpy(c->name[c->n], name, len + 1);
    c->len[c->n] = len;
    c->idx[c->n++] = p;
  }
  return p;
}

/* A COPY field: as is when it has no escapes, else unescaped into buf. */
static const char *field(const char *src, size_t n, char *buf, size_t cap,
                         size_t *outlen) {
  if (!memchr(src, '\\', n) && n < cap) {
    *outlen = n;
    return src;
  }
  return copy_unescape(src, n, buf, cap, outlen) ? buf : NULL;
}

/* Parses one COPY row "subject\tpurpose\tgranted\n" into out. sbuf
 * (PV_CONSENT_KEY_MAX + 1 bytes) takes an unescaped text subject, so
 * out->key may point into row or into sbuf. Returns 1 parsed, 0 ignored,
 * or a negative PV_E*. */
static int parse_row(const pv_rules_t *rules, pcache_t *pc,
                     pv_consent_key_kind_t kind, const char *row, size_t len,
                     char *sbuf, pv_consent_put_t *out) {
  if (len && row[len - 1] == '\n')
    len--;
  const char *t1 = memchr(row, '\t', len);
  const char *t2 =
      t1 ? memchr(t1 + 1, '\t', len - (size_t)(t1 + 1 - row)) : NULL;
  if (!t2)
    return PV_EPROTO;
  const char *g = t2 + 1;
  size_t glen = len - (size_t)(g - row);
  if (glen != 1 || (g[0] != 't' && g[0] != 'f'))
    return 0; /* NULL granted: no row */
  char pbuf[IDENT_MAX + 1];
  size_t slen, plen;
  if (t1 - row == 2 && row[0] == '\\' && row[1] == 'N')
    return 0;
  const char *subj =
      field(row, (size_t)(t1 - row), sbuf, PV_CONSENT_KEY_MAX + 1, &slen);
  const char *purp =
      field(t1 + 1, (size_t)(t2 - t1 - 1), pbuf, sizeof pbuf, &plen);
  if (!subj || !purp)
    return 0;
  if (purp != pbuf) { /* NUL-terminated for the rules lookup */
    memcpy(pbuf, purp, plen);
    pbuf[plen] = '\0';
  }
  out->purpose = purpose_of(pc, rules, pbuf, plen);
  out->value = g[0] == 't';
  if (out->purpose < 0 ||
      pv_consent_key_make(kind, 25, 0, (const uint8_t *)subj, (int32_t)slen,
                          &out->key))
    return 0;
  return 1;
}

/* Rows parsed but not yet put, so their table slots can be fetched from
 * memory together (pv_consent_set_put_many). bufs: the libpq row buffers
 * that keys point into, freed once the batch is put. */
#define LOAD_BATCH 256
typedef struct {
  pv_consent_put_t puts[LOAD_BATCH];
  char *bufs[LOAD_BATCH];
  size_t n, nbufs;
} batch_t;

/* What the parts of one full load share. Owner: load_work's frame. */
typedef struct {
  pv_consent_store_t *st;
  const pv_rules_t *rules;
  pv_consent_key_kind_t kind;
  pv_consent_set_t *set;
  pthread_mutex_t mu; /* serialises the puts of the parts into set */
  atomic_bool failed; /* a part failed: the others stop early */
} load_ctx_t;

static int batch_flush(load_ctx_t *ctx, batch_t *b) {
  size_t done = 0;
  int rc = PV_OK;
  if (b->n) {
    pthread_mutex_lock(&ctx->mu);
    rc = pv_consent_set_put_many(ctx->set, b->puts, b->n, &done);
    pthread_mutex_unlock(&ctx->mu);
  }
  for (size_t i = 0; i < b->nbufs; i++)
    PQfreemem(b->bufs[i]);
  b->n = b->nbufs = 0;
  return rc;
}

/* Takes one COPY row (and ownership of buf). Returns 1 applied or queued,
 * 0 ignored, or a negative PV_E*. */
static int load_row(load_ctx_t *ctx, pcache_t *pc, batch_t *b, char *buf,
                    size_t len) {
  char sbuf[PV_CONSENT_KEY_MAX + 1];
  pv_consent_put_t *put = &b->puts[b->n];
  int r = parse_row(ctx->rules, pc, ctx->kind, buf, len, sbuf, put);
  if (r <= 0 || !put->key.p) { /* nothing points into buf */
    PQfreemem(buf);
  } else if (put->key.p == (const uint8_t *)sbuf) {
    /* an unescaped subject lives on this stack frame: put it now */
    int rc = batch_flush(ctx, b);
    if (!rc) {
      pthread_mutex_lock(&ctx->mu);
      rc = pv_consent_set_put(ctx->set, &put->key, put->purpose, put->value);
      pthread_mutex_unlock(&ctx->mu);
    }
    PQfreemem(buf);
    return rc ? rc : 1;
  } else {
    b->bufs[b->nbufs++] = buf;
  }
  if (r <= 0)
    return r;
  if (++b->n == LOAD_BATCH) {
    int rc = batch_flush(ctx, b);
    if (rc)
      return rc;
  }
  return 1;
}

/* What a load needs to know of the table: kind r (or m) can be read in
 * block ranges; relpages is its size now (pg_class.relpages can lag far
 * behind a growing table); reltuples the planner's estimate as of the last
 * VACUUM or ANALYZE. Both only size the load: they never bound it. */
typedef struct {
  char relkind;
  uint32_t relpages;
  size_t reltuples;
} relinfo_t;

static void rel_info(PGconn *pg, const ccfg_t *c, relinfo_t *ri) {
  const char *params[2] = {c->schema, c->table};
  PGresult *r =
      PQexecParams(pg,
                   "SELECT k.relkind, pg_catalog.pg_relation_size(k.oid)"
                   " / pg_catalog.current_setting('block_size')::int8,"
                   " greatest(k.reltuples, 0)::int8 FROM pg_catalog.pg_class k"
                   " JOIN pg_catalog.pg_namespace n ON n.oid = k.relnamespace"
                   " WHERE n.nspname = $1 AND k.relname = $2",
                   2, NULL, params, NULL, NULL, 0);
  memset(ri, 0, sizeof *ri);
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
    ri->relkind = PQgetvalue(r, 0, 0)[0];
    unsigned long long pages = strtoull(PQgetvalue(r, 0, 1), NULL, 10);
    ri->relpages = pages > UINT32_MAX ? UINT32_MAX : (uint32_t)pages;
    ri->reltuples = (size_t)strtoull(PQgetvalue(r, 0, 2), NULL, 10);
  }
  PQclear(r);
}

/* Parallel parts of a full load: each its own connection, block range and
 * thread, all reading one exported snapshot. PostgreSQL produces COPY
 * rows on one core per connection, and that is most of a big load. */
#define PARTS_MAX 4
/* Auto mode: one part per this many heap pages (64 MiB), up to PARTS_MAX
 * and the cores of this machine (each part parses on its own thread):
 * below it a second connection costs more than it saves. */
#define PART_MIN_PAGES 8192

/* One COPY on its own connection. Owner: load_work's frame. */
typedef struct {
  load_ctx_t *ctx;
  PGconn *pg;
  char sql[1024];
  uv_thread_t thread;
  bool threaded;
  int rc;
  char err[ERRMSG_MAX];
  uint64_t rows, ignored;
} load_part_t;

static int copy_rows(load_part_t *part) {
  load_ctx_t *ctx = part->ctx;
  PGconn *pg = part->pg;
  char *buf = NULL;
  int n;
  int rc = PV_OK;
  pcache_t pc = {.n = 0};
  batch_t *b = malloc(sizeof *b);
  if (!b) {
    snprintf(part->err, sizeof part->err, "out of memory");
    return PV_ENOMEM;
  }
  b->n = b->nbufs = 0;
  while ((n = PQgetCopyData(pg, &buf, 0)) > 0) {
    if (rc == PV_OK) {
      int r = load_row(ctx, &pc, b, buf, (size_t)n);
      if (r < 0)
        rc = r;
      else if (r == 0)
        part->ignored++;
    } else {
      PQfreemem(buf);
    }
    if (++part->rows % STOP_CHECK_ROWS == 0 &&
        (atomic_load(&ctx->st->stopping) || atomic_load(&ctx->failed))) {
      (void)batch_flush(ctx, b);
      free(b);
      snprintf(part->err, sizeof part->err, "stopped");
      return PV_EIO; /* the connection is dropped by the caller */
    }
  }
  int frc = batch_flush(ctx, b);
  free(b);
  if (rc == PV_OK)
    rc = frc;
  if (rc != PV_OK)
    snprintf(part->err, sizeof part->err, "consent load: %s", pv_strerror(rc));
  if (n == -2) {
    snprintf(part->err, sizeof part->err, "consent COPY: %s",
             PQerrorMessage(pg));
    trim_nl(part->err);
    return PV_EIO;
  }
  PGresult *r;
  while ((r = PQgetResult(pg)) != NULL) {
    if (rc == PV_OK && !pq_ok(pg, r, part->err, sizeof part->err))
      rc = PV_EIO;
    PQclear(r);
  }
  return rc;
}

static void part_run(void *arg) {
  load_part_t *part = arg;
  PGresult *r = PQexec(part->pg, part->sql);
  bool ok = pq_ok(part->pg, r, part->err, sizeof part->err) &&
            PQresultStatus(r) == PGRES_COPY_OUT;
  PQclear(r);
  part->rc = ok ? copy_rows(part) : PV_EIO;
  if (part->rc)
    atomic_store(&part->ctx->failed, true);
}

static bool exec_ok(PGconn *pg, const char *sql, char *err, size_t errcap) {
  PGresult *r = PQexec(pg, sql);
  bool ok = pq_ok(pg, r, err, errcap);
  PQclear(r);
  return ok;
}

/* Opens parts 1..n-1 on new connections that read the snapshot of part
 * 0's REPEATABLE READ transaction (pg_export_snapshot), so every part sees
 * the same instant and NOTIFY replay covers exactly what came after it.
 * On failure the caller closes what was opened and falls back. */
static int parts_open(const pv_consent_store_t *st, load_part_t *parts,
                      size_t n, char *err, size_t errcap) {
  static const char begin[] =
      "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";
  if (!exec_ok(parts[0].pg, begin, err, errcap))
    return PV_EIO;
  PGresult *r = PQexec(parts[0].pg, "SELECT pg_catalog.pg_export_snapshot()");
  if (!pq_ok(parts[0].pg, r, err, errcap) || PQntuples(r) != 1) {
    PQclear(r);
    return PV_EIO;
  }
  char *lit = PQescapeLiteral(parts[0].pg, PQgetvalue(r, 0, 0),
                              strlen(PQgetvalue(r, 0, 0)));
  PQclear(r);
  char sql[256];
  if (!lit || (size_t)snprintf(sql, sizeof sql, "SET TRANSACTION SNAPSHOT %s",
                               lit) >= sizeof sql) {
    PQfreemem(lit);
    snprintf(err, errcap, "snapshot id");
    return PV_EIO;
  }
  PQfreemem(lit);
  for (size_t i = 1; i < n; i++) {
    parts[i].pg = connect_pg(st->cfg, "pgveil-consent-load", err, errcap);
    if (!parts[i].pg || !exec_ok(parts[i].pg, begin, err, errcap) ||
        !exec_ok(parts[i].pg, sql, err, errcap))
      return PV_EIO;
  }
  return PV_OK;
}

/* How many parts: 1 unless the table is a plain table (or materialized
 * view) on PostgreSQL 14+ (TID range scans; older servers would scan the
 * whole table once per part). lim.load_parts, or by size. */
static size_t parts_wanted(const pv_consent_store_t *st, PGconn *pg,
                           const relinfo_t *ri) {
  if ((ri->relkind != 'r' && ri->relkind != 'm') ||
      PQserverVersion(pg) < 140000)
    return 1;
  size_t n = st->lim.load_parts;
  if (!n) {
    size_t cores = (size_t)uv_available_parallelism();
    n = ri->relpages / PART_MIN_PAGES;
    n = n > cores ? cores : n;
  }
  return n < 1 ? 1 : n > PARTS_MAX ? PARTS_MAX : n;
}

/* The COPY of part i of n: blocks [i*pages/n, (i+1)*pages/n), the first
 * part open below and the last open above, so rows in pages added since
 * relpages was counted are read too. One part: the whole relation. */
static bool part_sql(const char *cols, const char *rel, const relinfo_t *ri,
                     size_t i, size_t n, char *out, size_t cap) {
  int w;
  if (n == 1 && ri->relkind == 'r') /* no executor: ~10% less server time */
    w = snprintf(out, cap, "COPY %s (%s) TO STDOUT", rel, cols);
  else if (n == 1)
    w = snprintf(out, cap, "COPY (SELECT %s FROM %s) TO STDOUT", cols, rel);
  else {
    uint64_t lo = (uint64_t)ri->relpages * i / n;
    uint64_t hi = (uint64_t)ri->relpages * (i + 1) / n;
    char lo_s[64] = "", hi_s[64] = "";
    if (i > 0)
      snprintf(lo_s, sizeof lo_s, " AND ctid >= '(%llu,0)'::pg_catalog.tid",
               (unsigned long long)lo);
    if (i + 1 < n)
      snprintf(hi_s, sizeof hi_s, " AND ctid < '(%llu,0)'::pg_catalog.tid",
               (unsigned long long)hi);
    w = snprintf(out, cap, "COPY (SELECT %s FROM %s WHERE true%s%s) TO STDOUT",
                 cols, rel, lo_s, hi_s);
  }
  return w > 0 && (size_t)w < cap;
}

/* The quoted "subject, purpose, granted" column list. No ::text casts:
 * COPY's text output is each type's output function, the same text as
 * the cast and as the trigger's to_jsonb ->> for integer, uuid and text
 * subjects, and the casts cost ~20% of the server's time on a 40M-row
 * load. */
static bool col_list(PGconn *pg, const ccfg_t *c, char *out, size_t cap) {
  char *s = PQescapeIdentifier(pg, c->scol, strlen(c->scol));
  char *p = PQescapeIdentifier(pg, c->pcol, strlen(c->pcol));
  char *g = PQescapeIdentifier(pg, c->gcol, strlen(c->gcol));
  bool ok =
      s && p && g && (size_t)snprintf(out, cap, "%s, %s, %s", s, p, g) < cap;
  PQfreemem(s);
  PQfreemem(p);
  PQfreemem(g);
  return ok;
}

/* Runs parts[0..n) at once (part 0 on this thread) and waits for all. */
static void parts_run(load_part_t *parts, size_t n) {
  for (size_t i = 1; i < n; i++)
    parts[i].threaded =
        uv_thread_create(&parts[i].thread, part_run, &parts[i]) == 0;
  part_run(&parts[0]);
  for (size_t i = 1; i < n; i++) {
    if (parts[i].threaded)
      uv_thread_join(&parts[i].thread);
    else
      part_run(&parts[i]); /* same snapshot, one after the other */
  }
}

/* The first real error of the parts ("stopped" ones only followed it). */
static void parts_result(load_job_t *j, load_part_t *parts, size_t n) {
  j->rc = PV_OK;
  for (size_t i = 0; i < n; i++) {
    j->rows += parts[i].rows;
    j->ignored += parts[i].ignored;
    if (parts[i].rc && (j->rc == PV_OK || strcmp(j->err, "stopped") == 0)) {
      j->rc = parts[i].rc;
      snprintf(j->err, sizeof j->err, "%s", parts[i].err);
    }
  }
}

static void load_work(uv_work_t *req) {
  load_job_t *j = req->data;
  pv_consent_store_t *st = j->st;
  uint64_t t0 = now_ms();
  load_part_t parts[PARTS_MAX];
  memset(parts, 0, sizeof parts);
  size_t n = 1;
  load_ctx_t ctx = {
      .st = st, .rules = pv_policy_rules(j->policy), .kind = j->kind};
  atomic_init(&ctx.failed, false);
  j->rc = PV_EIO;
  parts[0].pg =
      connect_pg(st->cfg, "pgveil-consent-load", j->err, sizeof j->err);
  if (!parts[0].pg)
    goto done;
  char rel[2 * IDENT_MAX + 8], cols[3 * IDENT_MAX + 16];
  if (!qualified(parts[0].pg, &j->cc, rel, sizeof rel) ||
      !col_list(parts[0].pg, &j->cc, cols, sizeof cols)) {
    snprintf(j->err, sizeof j->err, "out of memory");
    goto done;
  }
  relinfo_t ri;
  rel_info(parts[0].pg, &j->cc, &ri);
  n = parts_wanted(st, parts[0].pg, &ri);
  char perr[ERRMSG_MAX] = "";
  if (n > 1 && parts_open(st, parts, n, perr, sizeof perr)) {
    pv_log(PV_LOG_WARN, "consent: parallel load unavailable (%s); one COPY",
           perr);
    for (size_t i = 1; i < n; i++) {
      PQfinish(parts[i].pg);
      parts[i].pg = NULL;
    }
    n = 1;
    if (!exec_ok(parts[0].pg, "ROLLBACK", j->err, sizeof j->err))
      goto done;
  }
  for (size_t i = 0; i < n; i++) {
    parts[i].ctx = &ctx;
    if (!part_sql(cols, rel, &ri, i, n, parts[i].sql, sizeof parts[i].sql)) {
      snprintf(j->err, sizeof j->err, "consent query too long");
      goto done;
    }
  }
  size_t np = ctx.rules->npurposes ? ctx.rules->npurposes : 1;
  if ((j->rc = pv_consent_set_new(j->kind, false, ri.reltuples / np,
                                  st->lim.max_subjects, &ctx.set))) {
    snprintf(j->err, sizeof j->err, "out of memory");
    goto done;
  }
  if (pthread_mutex_init(&ctx.mu, NULL)) {
    j->rc = PV_ENOMEM;
    snprintf(j->err, sizeof j->err, "out of memory");
    goto done;
  }
  j->parts = n;
  parts_run(parts, n);
  pthread_mutex_destroy(&ctx.mu);
  parts_result(j, parts, n);
  if (!j->rc && pv_consent_set_compact(ctx.set))
    pv_log(PV_LOG_WARN, "consent set not compacted (out of memory)");
done:
  for (size_t i = 0; i < n; i++)
    PQfinish(parts[i].pg); /* ends the snapshot's transactions */
  if (j->rc)
    pv_consent_set_release(ctx.set);
  else
    j->set = ctx.set;
  j->ms = now_ms() - t0;
}

/* ---- Publication and freshness ----------------------------------------- */

/* Publishes base + a copy of the working delta (copy-on-write: sessions
 * keep the delta they took). Without a base, publishes nothing new. */
static void publish(pv_consent_store_t *st) {
  if (!st->base)
    return;
  pv_consent_set_t *d = NULL;
  if (st->delta && pv_consent_set_count(st->delta) &&
      pv_consent_set_clone(st->delta, &d)) {
    pv_log(PV_LOG_ERROR, "consent: out of memory publishing a change; "
                         "consent data goes stale");
    st->dirty = true;
    return;
  }
  pv_consent_snap_t *s = NULL;
  if (pv_consent_snap_new(st->base, d, st->clock, st->cc.purposes_hash, &s)) {
    st->dirty = true;
  } else {
    pv_consent_holder_publish(&st->holder, s);
  }
  pv_consent_set_release(d);
}

/* Data as of `as_of` (monotonic ms) is confirmed: fresh for max_staleness
 * from then, unless a change was missed (dirty) or nothing is loaded. */
static void confirm(pv_consent_store_t *st, uint64_t as_of) {
  if (!st->base || st->dirty)
    return;
  atomic_store_explicit(&st->confirmed_ms, as_of, memory_order_relaxed);
  uint64_t until = as_of + st->cc.max_staleness_ms;
  if (until > pv_consent_clock_get(st->clock))
    pv_consent_clock_set(st->clock, until);
}

static void check_stale(pv_consent_store_t *st, uint64_t now) {
  if (!st->cc.configured)
    return;
  bool stale = now >= pv_consent_clock_get(st->clock);
  if (stale == st->was_stale)
    return;
  st->was_stale = stale;
  if (stale) {
    atomic_fetch_add_explicit(&st->stale_events, 1, memory_order_relaxed);
    pv_log(PV_LOG_WARN,
           "consent data for %s.%s is stale (older than %llu ms): every "
           "consent-gated column takes its otherwise action until it is "
           "fresh again",
           st->cc.schema, st->cc.table,
           (unsigned long long)st->cc.max_staleness_ms);
  } else {
    pv_log(PV_LOG_INFO, "consent data for %s.%s is fresh%s", st->cc.schema,
           st->cc.table, st->stale_events ? " again" : "");
  }
}

static void resize_delta(pv_consent_store_t *st) {
  pv_consent_set_release(st->delta);
  pv_consent_set_release(st->since);
  st->delta = st->since = NULL;
  if (pv_consent_set_new(st->kind, true, 0, st->lim.max_subjects, &st->delta))
    st->delta = NULL;
}

static void signal_first(pv_consent_store_t *st) {
  pthread_mutex_lock(&st->mu);
  st->first_done = true;
  pthread_cond_broadcast(&st->cv);
  pthread_mutex_unlock(&st->mu);
}

/* ---- Notifications ------------------------------------------------------ */

static void force_resync(pv_consent_store_t *st, bool missed, const char *why) {
  atomic_fetch_add_explicit(&st->forced, 1, memory_order_relaxed);
  st->resync_pending = true;
  if (!st->job)
    st->next_resync_ms = 0; /* else right after the running load */
  if (missed)
    st->dirty = true;
  pv_log(PV_LOG_INFO, "consent: full resync (%s)", why);
}

static size_t merge_threshold(const pv_consent_store_t *st) {
  if (st->lim.delta_merge)
    return st->lim.delta_merge;
  size_t b = pv_consent_set_count(st->base) / 16;
  return b > 65536 ? b : 65536;
}

/* Applies one payload (rules/sql/consent_notify.sql). Returns true when
 * the working delta changed. */
static bool apply_payload(pv_consent_store_t *st, const char *pl) {
  size_t n = strlen(pl);
  if (n == 2 && pl[0] == '1' && pl[1] == 'R') {
    force_resync(st, true, "TRUNCATE or oversized change");
    return false;
  }
  /* skip the sequence field: digits then '|' */
  const char *pp = n > 4 ? pl + 4 : pl + n;
  while (pp < pl + n && *pp >= '0' && *pp <= '9')
    pp++;
  bool seq_ok = pp > pl + 4 && pp < pl + n && *pp == '|';
  pp++;
  const char *bar = seq_ok ? memchr(pp, '|', (size_t)(pl + n - pp)) : NULL;
  int value = -2;
  if (n > 4 && pl[0] == '1' && pl[3] == '|') {
    if (pl[1] == 'S' && pl[2] == 't')
      value = 1;
    else if (pl[1] == 'S' && pl[2] == 'f')
      value = 0;
    else if (pl[1] == 'D' && pl[2] == '-')
      value = -1;
  }
  if (value == -2 || !bar || (size_t)(bar - pp) > IDENT_MAX) {
    force_resync(st, true, "unknown notification format");
    return false;
  }
  char purp[IDENT_MAX + 1];
  memcpy(purp, pp, (size_t)(bar - pp));
  purp[bar - pp] = '\0';
  int p = pv_rules_purpose_find(pv_policy_rules(st->policy), purp);
  pv_consent_key_t k;
  if (p < 0 || pv_consent_key_make(st->kind, 25, 0, (const uint8_t *)bar + 1,
                                   (int32_t)(n - (size_t)(bar + 1 - pl)), &k))
    return false; /* a purpose or subject pgveil never matches */
  if (!st->delta || pv_consent_set_put(st->delta, &k, p, value) ||
      (st->since && pv_consent_set_put(st->since, &k, p, value))) {
    force_resync(st, true, "change not recorded (memory or limit)");
    return false;
  }
  atomic_fetch_add_explicit(&st->notifies, 1, memory_order_relaxed);
  return true;
}

static void conn_lost(pv_consent_store_t *st, const char *why);

/* Drains what libpq has: heartbeat results and notifications. */
static void drain(pv_consent_store_t *st) {
  bool hb_done = false;
  while (st->hb_inflight && !PQisBusy(st->pg)) {
    PGresult *r = PQgetResult(st->pg);
    if (!r) {
      st->hb_inflight = false;
      hb_done = true;
      break;
    }
    PQclear(r);
  }
  bool changed = false;
  PGnotify *nt;
  while ((nt = PQnotifies(st->pg)) != NULL) {
    if (strcmp(nt->relname, st->cc.chan) == 0)
      changed |= apply_payload(st, nt->extra);
    PQfreemem(nt);
  }
  if (changed) {
    publish(st);
    if (pv_consent_set_count(st->delta) > merge_threshold(st) && !st->job &&
        !st->resync_pending)
      force_resync(st, false, "delta merge");
  }
  /* after the changes it covers are published */
  if (hb_done)
    confirm(st, st->hb_sent_ms);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  pv_consent_store_t *st = h->data;
  if (!st || !st->pg)
    return;
  if (status < 0 || !PQconsumeInput(st->pg) ||
      PQstatus(st->pg) != CONNECTION_OK) {
    conn_lost(st, status < 0 ? uv_strerror(status) : PQerrorMessage(st->pg));
    return;
  }
  drain(st);
}

static void on_poll_closed(uv_handle_t *h) {
  pollbox_t *b = (pollbox_t *)h;
  PQfinish(b->pg);
  free(b);
}

static void conn_close(pv_consent_store_t *st) {
  if (st->poll) {
    st->poll->h.data = NULL;
    uv_close((uv_handle_t *)&st->poll->h, on_poll_closed);
  } else {
    PQfinish(st->pg);
  }
  st->poll = NULL;
  st->pg = NULL;
  st->hb_inflight = false;
  atomic_store(&st->connected, false);
}

static void conn_lost(pv_consent_store_t *st, const char *why) {
  char msg[ERRMSG_MAX];
  snprintf(msg, sizeof msg, "%s", why ? why : "");
  trim_nl(msg);
  pv_log(PV_LOG_WARN,
         "consent connection lost (%s); reconnecting; the consent data goes "
         "stale after %llu ms",
         msg, (unsigned long long)st->cc.max_staleness_ms);
  atomic_fetch_add_explicit(&st->reconnects, 1, memory_order_relaxed);
  conn_close(st);
  st->dirty = true; /* notifications may be lost until the next load */
  st->next_connect_ms = now_ms() + st->backoff_ms;
}

/* Connects, checks the table, LISTENs. Blocking, on the store thread. */
static void conn_open(pv_consent_store_t *st) {
  char err[ERRMSG_MAX] = "";
  uint64_t now = now_ms();
  PGconn *pg = connect_pg(st->cfg, "pgveil-consent", err, sizeof err);
  pv_consent_key_kind_t kind = PV_CONSENT_KEY_TEXT;
  char *chan = NULL;
  PGresult *r = NULL;
  if (!pg)
    goto fail;
  r = PQexec(pg, "SELECT pg_catalog.set_config('search_path', '', false)");
  if (!pq_ok(pg, r, err, sizeof err))
    goto fail;
  PQclear(r);
  r = NULL;
  if (subject_kind(pg, &st->cc, &kind, err, sizeof err))
    goto fail;
  chan = PQescapeIdentifier(pg, st->cc.chan, strlen(st->cc.chan));
  char sql[IDENT_MAX * 2 + 16];
  snprintf(sql, sizeof sql, "LISTEN %s", chan ? chan : "\"\"");
  r = PQexec(pg, sql);
  if (!chan || !pq_ok(pg, r, err, sizeof err))
    goto fail;
  PQclear(r);
  PQfreemem(chan);
  pollbox_t *b = calloc(1, sizeof *b);
  if (!b || uv_poll_init(&st->loop, &b->h, PQsocket(pg))) {
    free(b);
    snprintf(err, sizeof err, "cannot watch the connection");
    r = NULL;
    chan = NULL;
    goto fail;
  }
  b->pg = pg;
  b->h.data = st;
  st->poll = b;
  st->pg = pg;
  st->epoch++;
  st->backoff_ms = st->lim.backoff_min_ms;
  atomic_store(&st->connected, true);
  if (kind != st->kind || !st->delta) {
    /* a new subject type: what is loaded cannot be compared any more */
    st->kind = kind;
    pv_consent_set_release(st->base);
    st->base = NULL;
    resize_delta(st);
    pv_consent_holder_publish(&st->holder, NULL);
  }
  uv_poll_start(&b->h, UV_READABLE, on_poll);
  pv_log(PV_LOG_INFO, "consent: listening on %s for %s.%s", st->cc.chan,
         st->cc.schema, st->cc.table);
  st->resync_pending = true; /* whatever happened while we were away */
  st->next_resync_ms = 0;
  st->next_hb_ms = now;
  drain(st);
  return;
fail:
  PQclear(r);
  PQfreemem(chan);
  PQfinish(pg);
  pv_log(PV_LOG_WARN, "consent: %s; retrying in %llu ms", err,
         (unsigned long long)st->backoff_ms);
  signal_first(st); /* pgveil starts, failing closed */
  st->next_connect_ms = now + st->backoff_ms;
  st->backoff_ms *= 2;
  if (st->backoff_ms > st->lim.backoff_max_ms)
    st->backoff_ms = st->lim.backoff_max_ms;
}

/* ---- Loads --------------------------------------------------------------- */

static void after_load(uv_work_t *req, int status) {
  load_job_t *j = req->data;
  pv_consent_store_t *st = j->st;
  st->job = NULL;
  bool current = status == 0 && j->cfg_gen == st->cfg_gen &&
                 !atomic_load(&st->stopping) && j->kind == st->kind;
  if (current && j->rc == PV_OK) {
    pv_consent_set_release(st->base);
    st->base = j->set;
    j->set = NULL;
    /* changes heard since the load began override what it read */
    pv_consent_set_release(st->delta);
    st->delta = st->since;
    st->since = NULL;
    bool connected_throughout = st->pg && j->epoch == st->epoch;
    if (connected_throughout)
      st->dirty = false;
    st->ever_loaded = true;
    publish(st);
    if (connected_throughout)
      confirm(st, j->started_ms);
    atomic_fetch_add_explicit(&st->loads, 1, memory_order_relaxed);
    atomic_store_explicit(&st->load_ms, j->ms, memory_order_relaxed);
    atomic_store_explicit(&st->load_rows, j->rows, memory_order_relaxed);
    pv_log(PV_LOG_INFO,
           "consent: loaded %s.%s: %llu rows, %zu subjects, %zu bytes, "
           "%llu ignored, %llu ms, %zu part%s",
           st->cc.schema, st->cc.table, (unsigned long long)j->rows,
           pv_consent_set_count(st->base), pv_consent_set_bytes(st->base),
           (unsigned long long)j->ignored, (unsigned long long)j->ms, j->parts,
           j->parts == 1 ? "" : "s");
    st->next_resync_ms = st->resync_pending ? 0 : now_ms() + st->cc.resync_ms;
  } else {
    pv_consent_set_release(st->since);
    st->since = NULL;
    if (current) {
      pv_log(PV_LOG_WARN, "consent: load of %s.%s failed: %s; retrying",
             st->cc.schema, st->cc.table, j->err);
      st->resync_pending = true;
      st->next_resync_ms = now_ms() + st->backoff_ms;
    }
  }
  pv_consent_set_release(j->set);
  pv_policy_release(j->policy);
  free(j);
  signal_first(st);
}

static void start_load(pv_consent_store_t *st) {
  load_job_t *j = calloc(1, sizeof *j);
  if (!j ||
      pv_consent_set_new(st->kind, true, 0, st->lim.max_subjects, &st->since)) {
    free(j);
    st->since = NULL;
    return;
  }
  j->req.data = j;
  j->st = st;
  j->cc = st->cc;
  j->policy = pv_policy_ref(st->policy);
  j->kind = st->kind;
  j->cfg_gen = st->cfg_gen;
  j->epoch = st->epoch;
  j->started_ms = now_ms();
  if (uv_queue_work(&st->loop, &j->req, load_work, after_load)) {
    pv_policy_release(j->policy);
    free(j);
    pv_consent_set_release(st->since);
    st->since = NULL;
    return;
  }
  st->job = j;
  st->resync_pending = false;
}

/* ---- Configuration changes ---------------------------------------------- */

/* Picks up a new policy snapshot; a changed consent section or purpose
 * list starts over (fail closed until the new load). */
static void poll_config(pv_consent_store_t *st) {
  pv_policy_t *p = pv_policy_acquire(st->ph);
  if (!p)
    return;
  if (st->cfg_gen && pv_policy_generation(p) == st->policy_gen) {
    pv_policy_release(p);
    return;
  }
  ccfg_t nc;
  cfg_from_rules(pv_policy_rules(p), &nc);
  pv_policy_release(st->policy);
  st->policy = p;
  st->policy_gen = pv_policy_generation(p);
  if (st->cfg_gen && ccfg_eq(&nc, &st->cc))
    return;
  st->cc = nc;
  st->cfg_gen++;
  atomic_store(&st->configured, nc.configured);
  conn_close(st);
  pv_consent_set_release(st->base);
  st->base = NULL;
  resize_delta(st);
  pv_consent_holder_publish(&st->holder, NULL);
  pv_consent_clock_set(st->clock, 0);
  st->was_stale = true;
  st->dirty = true;
  st->ever_loaded = false;
  st->backoff_ms = st->lim.backoff_min_ms;
  st->next_connect_ms = 0;
  if (nc.configured)
    pv_log(PV_LOG_INFO, "consent: following %s.%s (channel %s)", nc.schema,
           nc.table, nc.chan);
  else
    signal_first(st); /* nothing to wait for */
}

/* ---- The loop ----------------------------------------------------------- */

static uint64_t hb_interval(const pv_consent_store_t *st) {
  uint64_t i = st->cc.max_staleness_ms / 4;
  return i < 50 ? 50 : i > 1000 ? 1000 : i;
}

static void on_tick(uv_timer_t *t) {
  pv_consent_store_t *st = t->data;
  uint64_t now = now_ms();
  if (now >= st->next_cfg_poll_ms) {
    st->next_cfg_poll_ms = now + st->lim.config_poll_ms;
    poll_config(st);
  }
  if (!st->cc.configured)
    return;
  if (!st->pg && now >= st->next_connect_ms)
    conn_open(st);
  if (st->pg && st->hb_inflight &&
      now - st->hb_sent_ms > 2 * st->cc.max_staleness_ms + 5000) {
    conn_lost(st, "no answer to the heartbeat");
  } else if (st->pg && !st->hb_inflight && now >= st->next_hb_ms) {
    if (!PQsendQuery(st->pg, "SELECT 1")) {
      conn_lost(st, PQerrorMessage(st->pg));
    } else {
      st->hb_inflight = true;
      st->hb_sent_ms = now;
      st->next_hb_ms = now + hb_interval(st);
    }
  }
  if (st->pg && !st->job && now >= st->next_resync_ms)
    start_load(st);
  check_stale(st, now_ms());
}

static void on_wake(uv_async_t *a) {
  pv_consent_store_t *st = a->data;
  pthread_mutex_lock(&st->mu);
  bool stop = st->want_stop, resync = st->want_resync;
  st->want_resync = false;
  pthread_mutex_unlock(&st->mu);
  if (resync && st->cc.configured)
    force_resync(st, false, "requested");
  if (!stop)
    return;
  atomic_store(&st->stopping, true);
  if (st->job)
    uv_cancel((uv_req_t *)&st->job->req);
  conn_close(st);
  uv_close((uv_handle_t *)&st->tick, NULL);
  uv_close((uv_handle_t *)&st->wake, NULL);
}

static void thread_main(void *arg) {
  pv_consent_store_t *st = arg;
  uv_run(&st->loop, UV_RUN_DEFAULT);
}

static void store_free(pv_consent_store_t *st) {
  pv_consent_set_release(st->base);
  pv_consent_set_release(st->delta);
  pv_consent_set_release(st->since);
  pv_policy_release(st->policy);
  pv_consent_holder_dispose(&st->holder);
  pv_consent_clock_release(st->clock);
  pthread_cond_destroy(&st->cv);
  pthread_mutex_destroy(&st->mu);
  free(st);
}

int pv_consent_store_start(const pv_config_t *cfg, pv_policy_holder_t *holder,
                           const pv_consent_store_limits_t *lim,
                           pv_consent_store_t **out, char *err, size_t errcap) {
  *out = NULL;
  err[0] = '\0';
  pv_conninfo_t p; /* only checks that the DSN parses */
  int rc = pv_conninfo_build(cfg, NULL, "pgveil-consent", true, "5", &p, err,
                             errcap);
  if (rc)
    return rc;
  pv_conninfo_dispose(&p);
  pv_consent_store_t *st = calloc(1, sizeof *st);
  if (!st || pthread_mutex_init(&st->mu, NULL)) {
    free(st);
    snprintf(err, errcap, "out of memory");
    return PV_ENOMEM;
  }
  pthread_cond_init(&st->cv, NULL);
  st->cfg = cfg;
  st->ph = holder;
  st->lim = lim ? *lim : pv_consent_store_limits_default();
  st->backoff_ms = st->lim.backoff_min_ms;
  st->was_stale = true;
  st->kind = PV_CONSENT_KEY_TEXT;
  if (pv_consent_holder_init(&st->holder) || pv_consent_clock_new(&st->clock) ||
      uv_loop_init(&st->loop)) {
    snprintf(err, errcap, "out of memory");
    store_free(st);
    return PV_ENOMEM;
  }
  uv_async_init(&st->loop, &st->wake, on_wake);
  st->wake.data = st;
  uv_timer_init(&st->loop, &st->tick);
  st->tick.data = st;
  uv_timer_start(&st->tick, on_tick, 0, TICK_MS);
  if (uv_thread_create(&st->thread, thread_main, st)) {
    snprintf(err, errcap, "cannot start the consent thread");
    uv_close((uv_handle_t *)&st->tick, NULL);
    uv_close((uv_handle_t *)&st->wake, NULL);
    uv_run(&st->loop, UV_RUN_DEFAULT);
    uv_loop_close(&st->loop);
    store_free(st);
    return PV_ENOMEM;
  }
  /* Wait for the first load (or for "no consent table"), bounded. */
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += (time_t)(st->lim.start_wait_ms / 1000);
  dl.tv_nsec += (long)(st->lim.start_wait_ms % 1000) * 1000000L;
  if (dl.tv_nsec >= 1000000000L) {
    dl.tv_sec++;
    dl.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&st->mu);
  while (!st->first_done)
    if (pthread_cond_timedwait(&st->cv, &st->mu, &dl))
      break;
  bool done = st->first_done;
  pthread_mutex_unlock(&st->mu);
  if (!done)
    pv_log(PV_LOG_WARN, "consent: no data loaded yet; consent-gated columns "
                        "take their otherwise action until it is");
  *out = st;
  return PV_OK;
}

void pv_consent_store_stop(pv_consent_store_t *st) {
  if (!st)
    return;
  pthread_mutex_lock(&st->mu);
  st->want_stop = true;
  pthread_mutex_unlock(&st->mu);
  uv_async_send(&st->wake);
  uv_thread_join(&st->thread);
  uv_loop_close(&st->loop);
  store_free(st);
}

void pv_consent_store_resync(pv_consent_store_t *st) {
  if (!st)
    return;
  pthread_mutex_lock(&st->mu);
  st->want_resync = true;
  pthread_mutex_unlock(&st->mu);
  uv_async_send(&st->wake);
}

pv_consent_snap_t *pv_consent_acquire(pv_consent_store_t *st) {
  return st ? pv_consent_holder_acquire(&st->holder) : NULL;
}

void pv_consent_store_stats(pv_consent_store_t *st, uint64_t now,
                            pv_consent_stats_t *out) {
  memset(out, 0, sizeof *out);
  if (!st)
    return;
  pv_consent_snap_t *s = pv_consent_acquire(st);
  out->configured = atomic_load(&st->configured);
  out->loaded = s != NULL;
  out->stale = pv_consent_stale(s, now);
  out->connected = atomic_load(&st->connected);
  out->subjects = pv_consent_snap_subjects(s) + pv_consent_snap_delta(s);
  out->bytes = pv_consent_snap_bytes(s);
  uint64_t c = atomic_load(&st->confirmed_ms);
  out->age_ms = c == 0 ? UINT64_MAX : now > c ? now - c : 0;
  out->loads = atomic_load(&st->loads);
  out->load_ms = atomic_load(&st->load_ms);
  out->load_rows = atomic_load(&st->load_rows);
  out->notifies = atomic_load(&st->notifies);
  out->resyncs_forced = atomic_load(&st->forced);
  out->reconnects = atomic_load(&st->reconnects);
  out->stale_events = atomic_load(&st->stale_events);
  pv_consent_release(s);
}
