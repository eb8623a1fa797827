/* Owns the control thread: libpq connections per database, catalog
 * resolution I/O, LISTEN for DDL, periodic rechecks, rules reloads, the
 * publishing of policy snapshots, and `pgveil --check`. Never runs on a
 * worker loop and never logs the DSN or the secret. */
#include "pgveil/control.h"
#include "pgveil/conninfo.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pgveil/catalog.h"
#include "pgveil/log.h"
#include "pgveil/reldir.h"

#define SECRET_MAX 4096
#define ERRMSG_MAX 1024

pv_control_limits_t pv_control_limits_default(void) {
  return (pv_control_limits_t){
      .check_interval_ms = 30000,
      .debounce_ms = 300,
      .retry_ms = 1000,
      .statement_timeout_ms = 10000,
      .max_dbs = 256,
      .max_requests = 65536,
      .max_errors = 100,
      .reldir_max_relations = PV_RELDIR_MAX_RELATIONS,
      .reldir_max_viewdef = PV_RELDIR_MAX_VIEWDEF,
  };
}

/* A uv_poll_t on a libpq socket. Owner: its conn until dropped, then its
 * close callback, which finishes the PGconn and frees the box. */
typedef struct pollbox {
  uv_poll_t h;
  PGconn *pg;
  struct conn *c; /* NULL once dropped */
} pollbox_t;

/* One database pgveil has tried to resolve. Owner: the control thread. */
typedef struct conn {
  struct conn *next;
  pv_control_t *ctl;
  char db[PV_CATALOG_DBNAME_MAX + 1];
  PGconn *pg;      /* NULL when not connected */
  pollbox_t *poll; /* watches pg for NOTIFY and loss */
  uint64_t last_attempt_ms;
  bool ever_tried;
} conn_t;

/* A session waiting for a database. Owner: the request list. */
typedef struct request {
  struct request *next;
  uv_async_t *notify;
  char db[PV_CATALOG_DBNAME_MAX + 1];
} request_t;

struct pv_control {
  const pv_config_t *cfg;
  pv_control_limits_t lim;
  pv_policy_holder_t *holder;
  pv_policy_t *cur; /* the last snapshot published, one reference */
  uv_loop_t loop;
  uv_thread_t thread;
  uv_async_t wake;
  uv_timer_t check_timer, debounce_timer;
  uv_fs_event_t fsev;
  bool fsev_on, handles_on;
  conn_t *conns;
  size_t nconns;
  char rules_dir[PV_PATH_MAX];
  pthread_mutex_t mu; /* guards what follows; held while signalling */
  request_t *reqs;
  size_t nreqs;
  bool want_reload, want_stop, stopped;
  pv_control_stats_t stats; /* control_db is set before the thread runs */
};

static uint64_t now_ms(void) { return uv_hrtime() / 1000000u; }

/* Copies a database name, cut to PV_CATALOG_DBNAME_MAX bytes. */
static void copy_db(char dst[PV_CATALOG_DBNAME_MAX + 1], const char *src) {
  size_t n = strnlen(src, PV_CATALOG_DBNAME_MAX);
  memcpy(dst, src, n);
  dst[n] = '\0';
}

static void trim_nl(char *s) {
  size_t n = strlen(s);
  while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
    s[--n] = '\0';
}

/* ---- Secret ------------------------------------------------------------- */

/* Reads the secret file into buf; trailing newlines and blanks are not part
 * of it (echo and editors add them). OUT: *len. Wipe buf after use. */
static int read_secret(const char *path, uint8_t *buf, size_t cap, size_t *len,
                       char *err, size_t errcap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(err, errcap, "cannot open secret file %s: %s", path,
             strerror(errno));
    return PV_EIO;
  }
  struct stat st;
  if (fstat(fd, &st) == 0 && (st.st_mode & 077))
    pv_log(PV_LOG_WARN,
           "secret file %s is readable by group or others; "
           "chmod 600 it",
           path);
  size_t n = 0;
  ssize_t r;
  while (n < cap && (r = read(fd, buf + n, cap - n)) > 0)
    n += (size_t)r;
  char extra;
  bool more = n == cap && read(fd, &extra, 1) > 0;
  close(fd);
  while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
               buf[n - 1] == '\t'))
    n--;
  if (more) {
    snprintf(err, errcap, "secret file %s is larger than %d bytes", path,
             (int)cap);
    return PV_EINVAL;
  }
  if (n < PV_MASK_SECRET_MIN) {
    snprintf(err, errcap,
             "secret file %s holds %zu bytes; at least %d are "
             "needed (e.g. openssl rand -hex 32 > FILE)",
             path, n, PV_MASK_SECRET_MIN);
    return PV_EINVAL;
  }
  *len = n;
  return PV_OK;
}

/* ---- Rules + secret -> base snapshot ------------------------------------ */

static void log_rules_errors(const pv_rules_errors_t *e) {
  for (size_t i = 0; e && i < e->count; i++)
    pv_log(PV_LOG_ERROR, "%s", e->msgs[i]);
  if (e && e->omitted)
    pv_log(PV_LOG_ERROR, "... and %zu more problems", e->omitted);
}

static size_t nproblems(const pv_rules_errors_t *e) {
  return e ? e->count + e->omitted : 1;
}

/* Loads the rules and the secret into a snapshot without databases. Every
 * problem is logged; err gets a one-line summary. */
static int load_base(const pv_config_t *cfg, pv_policy_t **out, char *err,
                     size_t errcap) {
  pv_rules_t *rules = NULL;
  pv_rules_errors_t *errs = NULL;
  int rc = pv_rules_load_file(cfg->rules_path, &rules, &errs);
  if (rc) {
    log_rules_errors(errs);
    snprintf(err, errcap, "invalid rules in %s: %zu problem%s%s%s",
             cfg->rules_path, nproblems(errs), nproblems(errs) == 1 ? "" : "s",
             errs && errs->count ? "; first: " : "",
             errs && errs->count ? errs->msgs[0] : "");
    pv_rules_errors_free(errs);
    return rc;
  }
  uint8_t secret[SECRET_MAX];
  size_t slen = 0;
  if (cfg->secret_path[0]) {
    rc = read_secret(cfg->secret_path, secret, sizeof secret, &slen, err,
                     errcap);
    if (rc) {
      pv_rules_free(rules);
      return rc;
    }
  }
  rc = pv_policy_new(rules, cfg->secret_path[0] ? secret : NULL, slen, out, err,
                     errcap);
  OPENSSL_cleanse(secret, sizeof secret);
  return rc;
}

/* ---- libpq -------------------------------------------------------------- */

static void pq_error(PGconn *pg, const char *what, char *err, size_t errcap) {
  snprintf(err, errcap, "%s: %s", what, pg ? PQerrorMessage(pg) : "no memory");
  trim_nl(err);
}

/* Runs a command that returns no rows or one row; false on failure. */
static bool pq_run(PGconn *pg, const char *sql, int nparams,
                   const char *const *params, char *err, size_t errcap) {
  PGresult *r = PQexecParams(pg, sql, nparams, NULL, params, NULL, NULL, 0);
  ExecStatusType st = PQresultStatus(r);
  bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
  if (!ok) {
    snprintf(err, errcap, "%s", r ? PQresultErrorMessage(r) : "no memory");
    trim_nl(err);
  }
  PQclear(r);
  return ok;
}

/* Connects to dbname (NULL: the DSN's own) with search_path '' and a
 * statement timeout; LISTENs for DDL when listen is set. */
static PGconn *connect_db(const pv_config_t *cfg, const char *dbname,
                          uint32_t stmt_timeout_ms, bool listen, char *err,
                          size_t errcap) {
  pv_conninfo_t p;
  if (pv_conninfo_build(cfg, dbname, "pgveil-control", false, "10", &p, err,
                        errcap))
    return NULL;
  PGconn *pg = PQconnectdbParams(p.k, p.v, 0);
  pv_conninfo_dispose(&p);
  if (!pg || PQstatus(pg) != CONNECTION_OK) {
    pq_error(pg, "cannot connect for the catalog", err, errcap);
    PQfinish(pg);
    return NULL;
  }
  char tmo[16];
  snprintf(tmo, sizeof tmo, "%u", stmt_timeout_ms);
  const char *params[1] = {tmo};
  char qerr[ERRMSG_MAX];
  if (!pq_run(pg,
              "SELECT pg_catalog.set_config('search_path', '', false),"
              " pg_catalog.set_config('statement_timeout', $1, false)",
              1, params, qerr, sizeof qerr) ||
      (listen &&
       !pq_run(pg, "LISTEN " PV_CONTROL_CHANNEL, 0, NULL, qerr, sizeof qerr))) {
    snprintf(err, errcap, "cannot set up the catalog connection: %s", qerr);
    PQfinish(pg);
    return NULL;
  }
  return pg;
}

static bool parse_u32(const char *s, uint32_t *out) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || end == s || *end || v > UINT32_MAX)
    return false;
  *out = (uint32_t)v;
  return true;
}

static bool parse_i32(const char *s, int32_t *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < INT32_MIN || v > INT32_MAX)
    return false;
  *out = (int32_t)v;
  return true;
}

/* Row i of the resolution query; false when the server sent something
 * this query cannot produce. */
static bool parse_row(const PGresult *r, int i, pv_catalog_row_t *row) {
  int32_t attnum = 0;
  memset(row, 0, sizeof *row);
  for (int c = 0; c < PV_CATALOG_QUERY_NCOLS; c++)
    if (c != 3 && PQgetisnull(r, i, c) && (c < 3 || !PQgetisnull(r, i, 3)))
      return false; /* only the attribute columns may be NULL, together */
  row->child = PQgetvalue(r, i, 2)[0] == 't';
  if (!parse_u32(PQgetvalue(r, i, 0), &row->idx) ||
      !parse_u32(PQgetvalue(r, i, 1), &row->relid))
    return false;
  if (PQgetisnull(r, i, 3))
    return true; /* a relation without columns */
  row->attname = PQgetvalue(r, i, 3);
  row->type_name = PQgetvalue(r, i, 7);
  if (!parse_i32(PQgetvalue(r, i, 4), &attnum) || attnum <= 0 ||
      attnum > INT16_MAX || !parse_u32(PQgetvalue(r, i, 5), &row->type_oid) ||
      !parse_i32(PQgetvalue(r, i, 6), &row->typmod))
    return false;
  row->attnum = (int16_t)attnum;
  return true;
}

/* Row i of the directory query; false when the server sent something
 * this query cannot produce. */
static bool parse_dir_row(const PGresult *r, int i, pv_reldir_row_t *row) {
  memset(row, 0, sizeof *row);
  for (int c = 0; c <= 4; c++)
    if (PQgetisnull(r, i, c))
      return false;
  if (PQgetisnull(r, i, 5) != PQgetisnull(r, i, 6))
    return false;
  row->schema = PQgetvalue(r, i, 1);
  row->name = PQgetvalue(r, i, 2);
  row->relkind = PQgetvalue(r, i, 3)[0];
  row->prot = PQgetvalue(r, i, 4)[0] == 't';
  row->viewdef = PQgetisnull(r, i, 7) ? NULL : PQgetvalue(r, i, 7);
  if (!parse_u32(PQgetvalue(r, i, 0), &row->relid))
    return false;
  if (PQgetisnull(r, i, 5))
    return true; /* a relation without columns */
  int32_t attnum = 0;
  row->attname = PQgetvalue(r, i, 5);
  if (!parse_i32(PQgetvalue(r, i, 6), &attnum) || attnum <= 0 ||
      attnum > INT16_MAX)
    return false;
  row->attnum = (int16_t)attnum;
  return true;
}

/* Runs the directory query for cat's protected relations and builds the
 * guard's relation directory. Returns PV_OK (*dir), PV_ELIMIT (too many
 * relations: err), PV_EIO (query failed or odd rows: err) or PV_ENOMEM. */
static int resolve_reldir(PGconn *pg, const pv_catalog_t *cat,
                          const char *dbname, const pv_reldir_limits_t *lim,
                          pv_reldir_t **dir, char *err, size_t errcap) {
  *dir = NULL;
  size_t cap = pv_reldir_query_param_size(cat);
  char *oids = malloc(cap);
  pv_reldir_row_t *rows = NULL;
  PGresult *res = NULL;
  int rc = PV_ENOMEM;
  if (!oids || (rc = pv_reldir_query_param(cat, oids, cap)) != PV_OK)
    goto fail;
  const char *params[1] = {oids};
  res = PQexecParams(pg, PV_RELDIR_QUERY, 1, NULL, params, NULL, NULL, 0);
  if (PQresultStatus(res) != PGRES_TUPLES_OK ||
      PQnfields(res) != PV_RELDIR_QUERY_NCOLS) {
    snprintf(err, errcap,
             "relation directory query failed in database "
             "\"%s\": %s",
             dbname, res ? PQresultErrorMessage(res) : PQerrorMessage(pg));
    trim_nl(err);
    rc = PV_EIO;
    goto fail;
  }
  int n = PQntuples(res);
  rc = PV_ENOMEM;
  rows = calloc(n > 0 ? (size_t)n : 1, sizeof *rows);
  if (!rows)
    goto fail;
  rc = PV_EIO;
  for (int i = 0; i < n; i++)
    if (!parse_dir_row(res, i, &rows[i])) {
      snprintf(err, errcap,
               "unexpected relation directory row %d in "
               "database \"%s\"",
               i, dbname);
      goto fail;
    }
  rc = pv_reldir_build(cat, rows, (size_t)n, lim, dir);
  if (rc == PV_ELIMIT)
    snprintf(err, errcap,
             "pgveil: database \"%s\" has more than %zu protected "
             "relations and views over them; the guard cannot cover them",
             dbname, lim->max_relations);
  else if (rc == PV_EINVAL)
    snprintf(err, errcap,
             "unexpected relation directory rows in database "
             "\"%s\"",
             dbname);
  if (rc == PV_EINVAL)
    rc = PV_EIO;
fail:
  if (rc == PV_ENOMEM)
    snprintf(err, errcap, "out of memory");
  PQclear(res);
  free(rows);
  free(oids);
  return rc;
}

static int resolve_catalog(PGconn *pg, const pv_rules_t *rules,
                           const char *dbname, size_t max_errors,
                           uint64_t *fingerprint, pv_catalog_t **cat,
                           pv_rules_errors_t **errs, char *err, size_t errcap);

/* Resolves the rules on pg and, when dir is non-NULL, builds the relation
 * directory from the same snapshot of the catalog (one REPEATABLE READ
 * transaction, so a view created between the two queries cannot be
 * missed). Returns PV_OK (*cat, *dir), PV_ENOENT (*errs: rules do not
 * match), PV_ELIMIT (directory too large: err), PV_EIO (query failed:
 * err) or PV_ENOMEM. */
static int resolve(PGconn *pg, const pv_rules_t *rules, const char *dbname,
                   const pv_control_limits_t *lim, uint64_t *fingerprint,
                   pv_catalog_t **cat, pv_reldir_t **dir,
                   pv_rules_errors_t **errs, char *err, size_t errcap) {
  *cat = NULL;
  *errs = NULL;
  if (dir)
    *dir = NULL;
  char qerr[ERRMSG_MAX];
  if (!pq_run(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL,
              qerr, sizeof qerr)) {
    snprintf(err, errcap, "cannot read the catalog of database \"%s\": %s",
             dbname, qerr);
    return PV_EIO;
  }
  int rc = resolve_catalog(pg, rules, dbname, lim->max_errors, fingerprint, cat,
                           errs, err, errcap);
  if (rc == PV_OK && dir) {
    pv_reldir_limits_t rl = {lim->reldir_max_relations,
                             lim->reldir_max_viewdef};
    rc = resolve_reldir(pg, *cat, dbname, &rl, dir, err, errcap);
    if (rc) {
      pv_catalog_free(*cat);
      *cat = NULL;
    }
  }
  /* Read only: ROLLBACK and COMMIT end it alike; a failed one leaves the
   * connection for conn_drop. */
  (void)pq_run(pg, "ROLLBACK", 0, NULL, qerr, sizeof qerr);
  return rc;
}

/* Runs the resolution query for rules on pg and builds the catalog.
 * Returns PV_OK (*cat), PV_ENOENT (*errs: rules do not match), PV_EIO
 * (query failed: err) or PV_ENOMEM. */
static int resolve_catalog(PGconn *pg, const pv_rules_t *rules,
                           const char *dbname, size_t max_errors,
                           uint64_t *fingerprint, pv_catalog_t **cat,
                           pv_rules_errors_t **errs, char *err, size_t errcap) {
  size_t cap = pv_catalog_query_params_size(rules);
  char *schemas = malloc(cap), *tables = malloc(cap);
  pv_catalog_row_t *rows = NULL;
  PGresult *res = NULL;
  int rc = PV_ENOMEM;
  if (!schemas || !tables)
    goto fail;
  rc = pv_catalog_query_params(rules, schemas, tables, cap);
  if (rc)
    goto fail;
  const char *params[2] = {schemas, tables};
  res = PQexecParams(pg, PV_CATALOG_QUERY, 2, NULL, params, NULL, NULL, 0);
  if (PQresultStatus(res) != PGRES_TUPLES_OK ||
      PQnfields(res) != PV_CATALOG_QUERY_NCOLS) {
    snprintf(err, errcap, "catalog query failed in database \"%s\": %s", dbname,
             res ? PQresultErrorMessage(res) : PQerrorMessage(pg));
    trim_nl(err);
    rc = PV_EIO;
    goto fail;
  }
  int n = PQntuples(res);
  rows = calloc(n > 0 ? (size_t)n : 1, sizeof *rows);
  if (!rows)
    goto fail;
  for (int i = 0; i < n; i++)
    if (!parse_row(res, i, &rows[i])) {
      snprintf(err, errcap, "unexpected catalog row %d in database \"%s\"", i,
               dbname);
      rc = PV_EIO;
      goto fail;
    }
  *fingerprint = pv_catalog_rows_fingerprint(rows, (size_t)n);
  rc = pv_catalog_build(rules, dbname, rows, (size_t)n, max_errors, cat, errs);
  if (rc == PV_ENOMEM)
    snprintf(err, errcap, "out of memory");
fail:
  if (rc == PV_ENOMEM && !err[0])
    snprintf(err, errcap, "out of memory");
  PQclear(res);
  free(rows);
  free(schemas);
  free(tables);
  return rc;
}

/* The client-facing message of a database whose catalog does not match. */
static void mismatch_message(const pv_rules_errors_t *e, const char *db,
                             char *out, size_t cap) {
  size_t more = e ? e->count + e->omitted - (e->count ? 1 : 0) : 0;
  char tail[96] = "";
  if (more)
    snprintf(tail, sizeof tail, " (and %zu more problem%s; see the pgveil log)",
             more, more == 1 ? "" : "s");
  snprintf(out, cap, "pgveil: the rules do not match database \"%s\": %s%s", db,
           e && e->count ? e->msgs[0] : "see the pgveil log", tail);
}

/* ---- Control thread: snapshots ------------------------------------------ */

static void publish(pv_control_t *ctl, pv_policy_t *p) {
  pv_policy_publish(ctl->holder, pv_policy_ref(p));
  pv_policy_release(ctl->cur);
  ctl->cur = p;
}

/* Publishes cur with db set to cat and dir, or error (taking both). */
static void publish_db(pv_control_t *ctl, const char *db, pv_catalog_t *cat,
                       pv_reldir_t *dir, const char *error, bool transient) {
  pv_policy_t *p = NULL;
  if (pv_policy_with_db_reldir(ctl->cur, db, cat, dir, error, transient, &p)) {
    pv_log(PV_LOG_ERROR,
           "out of memory building a policy snapshot for "
           "database %s",
           db);
    return;
  }
  publish(ctl, p);
}

/* ---- Control thread: connections ---------------------------------------- */

static void on_check_timer(uv_timer_t *t);

static void schedule_check(pv_control_t *ctl, uint64_t in_ms) {
  uv_timer_start(&ctl->check_timer, on_check_timer, in_ms,
                 ctl->lim.check_interval_ms);
}

static void on_poll_closed(uv_handle_t *h) {
  pollbox_t *b = (pollbox_t *)h;
  PQfinish(b->pg);
  free(b);
}

static void conn_drop(conn_t *c) {
  if (c->poll) {
    c->poll->c = NULL;
    uv_close((uv_handle_t *)&c->poll->h, on_poll_closed);
  } else {
    PQfinish(c->pg);
  }
  c->poll = NULL;
  c->pg = NULL;
}

static void refresh_db(pv_control_t *ctl, conn_t *c, const char *why);

static void on_poll(uv_poll_t *h, int status, int events) {
  pollbox_t *b = (pollbox_t *)h;
  conn_t *c = b->c;
  if (!c)
    return;
  if (status < 0 || !PQconsumeInput(c->pg) ||
      PQstatus(c->pg) != CONNECTION_OK) {
    pv_log(PV_LOG_WARN,
           "catalog connection to database %s lost; "
           "reconnecting",
           c->db);
    conn_drop(c);
    schedule_check(c->ctl, c->ctl->lim.retry_ms);
    return;
  }
  bool ddl = false;
  PGnotify *n;
  while ((n = PQnotifies(c->pg)) != NULL) {
    ddl |= strcmp(n->relname, PV_CONTROL_CHANNEL) == 0;
    PQfreemem(n);
  }
  if (ddl)
    refresh_db(c->ctl, c, "DDL notification");
}

/* Watches c->pg for notifications and loss. */
static void conn_watch(pv_control_t *ctl, conn_t *c) {
  pollbox_t *b = calloc(1, sizeof *b);
  if (!b || uv_poll_init(&ctl->loop, &b->h, PQsocket(c->pg)) != 0) {
    free(b);
    pv_log(PV_LOG_WARN,
           "cannot watch the catalog connection of %s; "
           "relying on the periodic check",
           c->db);
    return;
  }
  b->pg = c->pg;
  b->c = c;
  c->poll = b;
  uv_poll_start(&b->h, UV_READABLE, on_poll);
}

static conn_t *conn_find(pv_control_t *ctl, const char *db) {
  for (conn_t *c = ctl->conns; c; c = c->next)
    if (strcmp(c->db, db) == 0)
      return c;
  return NULL;
}

static conn_t *conn_add(pv_control_t *ctl, const char *db) {
  conn_t *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->ctl = ctl;
  copy_db(c->db, db);
  c->next = ctl->conns;
  ctl->conns = c;
  ctl->nconns++;
  return c;
}

static bool conn_ensure(pv_control_t *ctl, conn_t *c, char *err,
                        size_t errcap) {
  if (c->pg)
    return true;
  c->last_attempt_ms = now_ms();
  c->ever_tried = true;
  c->pg = connect_db(ctl->cfg, c->db, ctl->lim.statement_timeout_ms, true, err,
                     errcap);
  if (!c->pg)
    return false;
  conn_watch(ctl, c);
  return true;
}

static bool same_error(const pv_policy_db_t *d, const char *msg) {
  const char *e = pv_policy_db_error(d);
  return d && e && strcmp(e, msg) == 0;
}

/* Resolves c's database against the current rules and publishes what
 * changed. A database pgveil knows keeps its resolution while the
 * connection is down (its OIDs were right at the last check); a new one
 * gets a transient failure so its sessions are refused. */
static void refresh_db(pv_control_t *ctl, conn_t *c, const char *why) {
  const pv_policy_db_t *d = pv_policy_db(ctl->cur, c->db);
  bool known = d && pv_policy_db_catalog(d) && !pv_policy_db_transient(d);
  char err[ERRMSG_MAX] = "", msg[ERRMSG_MAX + 128];
  pv_catalog_t *cat = NULL;
  pv_reldir_t *dir = NULL;
  pv_rules_errors_t *errs = NULL;
  uint64_t fp = 0;
  int rc = PV_EIO;
  if (conn_ensure(ctl, c, err, sizeof err))
    rc = resolve(c->pg, pv_policy_rules(ctl->cur), c->db, &ctl->lim, &fp, &cat,
                 &dir, &errs, err, sizeof err);
  if (rc == PV_EIO || rc == PV_ENOMEM) {
    if (c->pg && PQstatus(c->pg) != CONNECTION_OK)
      conn_drop(c);
    snprintf(msg, sizeof msg,
             "pgveil: cannot read the catalog of database "
             "\"%s\": %s",
             c->db, err);
    pv_log(PV_LOG_WARN, "%s (%s)%s", msg, why,
           known ? "; keeping its last resolution" : "");
    if (!known && !same_error(d, msg))
      publish_db(ctl, c->db, NULL, NULL, msg, true);
    return;
  }
  if (rc == PV_ELIMIT) {
    /* Too much to cover: fail closed until the DBA drops some. */
    if (!same_error(d, err)) {
      pv_log(PV_LOG_ERROR, "%s (%s); refusing its sessions", err, why);
      publish_db(ctl, c->db, NULL, NULL, err, false);
    }
    return;
  }
  if (rc == PV_ENOENT) {
    mismatch_message(errs, c->db, msg, sizeof msg);
    if (!same_error(d, msg)) {
      pv_log(PV_LOG_ERROR,
             "database %s does not match the rules (%s); "
             "refusing its sessions:",
             c->db, why);
      log_rules_errors(errs);
      publish_db(ctl, c->db, NULL, NULL, msg, false);
    }
    pv_rules_errors_free(errs);
    return;
  }
  if (d && !pv_policy_db_error(d) &&
      pv_catalog_fingerprint(pv_policy_db_catalog(d)) == fp &&
      pv_policy_db_reldir(d) &&
      pv_reldir_fingerprint(pv_policy_db_reldir(d)) ==
          pv_reldir_fingerprint(dir)) {
    pv_reldir_free(dir); /* unchanged */
    pv_catalog_free(cat);
    return;
  }
  pv_log(PV_LOG_INFO,
         "catalog of database %s resolved (%s): %zu relations, "
         "%zu protected columns, %zu views over protected data",
         c->db, why, pv_catalog_nrelations(cat), pv_catalog_ncolumns(cat),
         pv_reldir_nviews(dir));
  publish_db(ctl, c->db, cat, dir, NULL, false);
}

static void on_check_timer(uv_timer_t *t) {
  pv_control_t *ctl = t->data;
  for (conn_t *c = ctl->conns; c; c = c->next) {
    const pv_policy_db_t *d = pv_policy_db(ctl->cur, c->db);
    if (d && !pv_policy_db_transient(d))
      refresh_db(ctl, c, "periodic check");
  }
}

/* ---- Control thread: session requests ----------------------------------- */

/* Resolves db if the current snapshot cannot answer for it yet. */
static void serve_request(pv_control_t *ctl, const char *db) {
  const pv_policy_db_t *d = pv_policy_db(ctl->cur, db);
  conn_t *c = conn_find(ctl, db);
  if (d && !pv_policy_db_transient(d))
    return;
  if (c && c->ever_tried && now_ms() - c->last_attempt_ms < ctl->lim.retry_ms)
    return;
  if (!c && ctl->nconns >= ctl->lim.max_dbs) {
    pv_log(PV_LOG_WARN,
           "database %s refused: pgveil already serves %zu "
           "databases (the limit)",
           db, ctl->nconns);
    return;
  }
  if (!c && !(c = conn_add(ctl, db)))
    return;
  refresh_db(ctl, c, "first session");
}

static void process_requests(pv_control_t *ctl) {
  enum { BATCH = 64 };
  char dbs[BATCH][PV_CATALOG_DBNAME_MAX + 1];
  size_t n = 0;
  pthread_mutex_lock(&ctl->mu);
  for (request_t *r = ctl->reqs; r && n < BATCH; r = r->next) {
    size_t i = 0;
    while (i < n && strcmp(dbs[i], r->db) != 0)
      i++;
    if (i == n)
      memcpy(dbs[n++], r->db, sizeof dbs[0]);
  }
  pthread_mutex_unlock(&ctl->mu);
  for (size_t i = 0; i < n; i++)
    serve_request(ctl, dbs[i]);
  /* Answer under the lock, so pv_control_cancel() orders with it. */
  pthread_mutex_lock(&ctl->mu);
  bool left = false;
  for (request_t **pp = &ctl->reqs; *pp;) {
    request_t *r = *pp;
    size_t i = 0;
    while (i < n && strcmp(dbs[i], r->db) != 0)
      i++;
    if (i == n) {
      left = true;
      pp = &r->next;
      continue;
    }
    uv_async_send(r->notify);
    *pp = r->next;
    ctl->nreqs--;
    free(r);
  }
  pthread_mutex_unlock(&ctl->mu);
  if (left)
    uv_async_send(&ctl->wake); /* more than one batch: go round again */
}

/* ---- Control thread: reload --------------------------------------------- */

/* Resolves every database of the current snapshot under next's rules.
 * Returns false (reload refused) when a database that matched the old
 * rules does not match the new ones. */
static bool resolve_all(pv_control_t *ctl, pv_policy_t **next) {
  for (size_t i = 0; i < pv_policy_ndbs(ctl->cur); i++) {
    const pv_policy_db_t *old = pv_policy_db_at(ctl->cur, i);
    const char *db = pv_policy_db_name(old);
    conn_t *c = conn_find(ctl, db);
    char err[ERRMSG_MAX] = "", msg[ERRMSG_MAX + 128];
    pv_catalog_t *cat = NULL;
    pv_reldir_t *dir = NULL;
    pv_rules_errors_t *errs = NULL;
    uint64_t fp = 0;
    int rc = PV_EIO;
    if (c && conn_ensure(ctl, c, err, sizeof err))
      rc = resolve(c->pg, pv_policy_rules(*next), db, &ctl->lim, &fp, &cat,
                   &dir, &errs, err, sizeof err);
    if (rc == PV_ENOENT && !pv_policy_db_error(old)) {
      pv_log(PV_LOG_ERROR,
             "reload refused: the new rules do not match "
             "database %s; the old rules stay in force:",
             db);
      log_rules_errors(errs);
      pv_rules_errors_free(errs);
      return false;
    }
    if (rc == PV_ENOENT)
      mismatch_message(errs, db, msg, sizeof msg);
    else if (rc == PV_ELIMIT)
      snprintf(msg, sizeof msg, "%s", err);
    else if (rc)
      snprintf(msg, sizeof msg,
               "pgveil: cannot read the catalog of "
               "database \"%s\": %s",
               db, err);
    pv_rules_errors_free(errs);
    pv_policy_t *p = NULL;
    if (pv_policy_with_db_reldir(
            *next, db, cat, dir, rc ? msg : NULL,
            rc != PV_OK && rc != PV_ENOENT && rc != PV_ELIMIT, &p))
      return false;
    pv_policy_release(*next);
    *next = p;
  }
  return true;
}

/* For /metrics: the outcome of one reload attempt. */
static void count_reload(pv_control_t *ctl, bool ok) {
  pthread_mutex_lock(&ctl->mu);
  if (ok)
    ctl->stats.reloads++;
  else
    ctl->stats.reload_failures++;
  ctl->stats.last_reload_failed = !ok;
  pthread_mutex_unlock(&ctl->mu);
}

static void do_reload(pv_control_t *ctl, bool forced) {
  pv_policy_t *next = NULL;
  char err[ERRMSG_MAX];
  int rc = load_base(ctl->cfg, &next, err, sizeof err);
  if (rc) {
    pv_log(PV_LOG_ERROR, "reload refused: %s; the old rules stay in force",
           err);
    count_reload(ctl, false);
    return;
  }
  const pv_rules_t *nr = pv_policy_rules(next);
  if (!forced && nr->fingerprint == pv_policy_rules(ctl->cur)->fingerprint) {
    pv_policy_release(next); /* touched, not changed */
    return;
  }
  if (!resolve_all(ctl, &next)) {
    pv_policy_release(next);
    count_reload(ctl, false);
    return;
  }
  char sum[512];
  if (pv_rules_check_summary(nr, sum, sizeof sum) < 0)
    snprintf(sum, sizeof sum, "rules OK");
  publish(ctl, next);
  count_reload(ctl, true);
  pv_log(PV_LOG_INFO, "rules reloaded from %s: %s", ctl->cfg->rules_path, sum);
}

static void on_debounce(uv_timer_t *t) { do_reload(t->data, false); }

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events,
                        int status) {
  pv_control_t *ctl = h->data;
  /* Any change in the directory (editors rename, Kubernetes swaps a
   * symlink): wait for quiet, then compare the file's fingerprint. */
  uv_timer_start(&ctl->debounce_timer, on_debounce, ctl->lim.debounce_ms, 0);
}

/* ---- Control thread: lifecycle ------------------------------------------ */

static void close_handles(pv_control_t *ctl) {
  for (conn_t *c = ctl->conns; c; c = c->next)
    conn_drop(c);
  if (!ctl->handles_on)
    return;
  uv_close((uv_handle_t *)&ctl->wake, NULL);
  uv_close((uv_handle_t *)&ctl->check_timer, NULL);
  uv_close((uv_handle_t *)&ctl->debounce_timer, NULL);
  if (ctl->fsev_on)
    uv_close((uv_handle_t *)&ctl->fsev, NULL);
}

/* Wakes every waiting session: they find no resolution and refuse. */
static void answer_all(pv_control_t *ctl) {
  while (ctl->reqs) {
    request_t *r = ctl->reqs;
    ctl->reqs = r->next;
    uv_async_send(r->notify);
    free(r);
  }
  ctl->nreqs = 0;
}

static void on_wake(uv_async_t *a) {
  pv_control_t *ctl = a->data;
  pthread_mutex_lock(&ctl->mu);
  bool stop = ctl->want_stop, reload = ctl->want_reload;
  ctl->want_reload = false;
  if (stop) {
    ctl->stopped = true;
    answer_all(ctl);
  }
  pthread_mutex_unlock(&ctl->mu);
  if (stop) {
    close_handles(ctl);
    return;
  }
  if (reload)
    do_reload(ctl, true);
  process_requests(ctl);
}

static void thread_main(void *arg) {
  pv_control_t *ctl = arg;
  uv_run(&ctl->loop, UV_RUN_DEFAULT);
}

static int init_handles(pv_control_t *ctl) {
  int rc = uv_async_init(&ctl->loop, &ctl->wake, on_wake);
  if (rc)
    return rc;
  ctl->wake.data = ctl;
  ctl->handles_on = true;
  uv_timer_init(&ctl->loop, &ctl->check_timer);
  uv_timer_init(&ctl->loop, &ctl->debounce_timer);
  ctl->check_timer.data = ctl->debounce_timer.data = ctl;
  uv_timer_start(&ctl->check_timer, on_check_timer, ctl->lim.check_interval_ms,
                 ctl->lim.check_interval_ms);
  char path[PV_PATH_MAX];
  snprintf(path, sizeof path, "%s", ctl->cfg->rules_path);
  snprintf(ctl->rules_dir, sizeof ctl->rules_dir, "%s", dirname(path));
  uv_fs_event_init(&ctl->loop, &ctl->fsev);
  ctl->fsev.data = ctl;
  rc = uv_fs_event_start(&ctl->fsev, on_fs_event, ctl->rules_dir, 0);
  if (rc) {
    pv_log(PV_LOG_WARN,
           "cannot watch %s for rules changes (%s); reload "
           "with SIGHUP",
           ctl->rules_dir, uv_strerror(rc));
    uv_close((uv_handle_t *)&ctl->fsev, NULL);
  } else {
    ctl->fsev_on = true;
  }
  return 0;
}

/* Resolves the DSN's database on the calling thread, before any worker
 * runs: a mismatch stops pgveil from starting. */
static int resolve_startup_db(pv_control_t *ctl, char *err, size_t errcap) {
  PGconn *pg = connect_db(ctl->cfg, NULL, ctl->lim.statement_timeout_ms, true,
                          err, errcap);
  if (!pg)
    return PV_EIO;
  char db[PV_CATALOG_DBNAME_MAX + 1];
  copy_db(db, PQdb(pg));
  copy_db(ctl->stats.control_db, db);
  conn_t *c = conn_add(ctl, db);
  if (!c) {
    PQfinish(pg);
    return PV_ENOMEM;
  }
  c->pg = pg;
  c->ever_tried = true;
  c->last_attempt_ms = now_ms();
  pv_catalog_t *cat = NULL;
  pv_reldir_t *dir = NULL;
  pv_rules_errors_t *errs = NULL;
  uint64_t fp = 0;
  int rc = resolve(pg, pv_policy_rules(ctl->cur), db, &ctl->lim, &fp, &cat,
                   &dir, &errs, err, errcap);
  if (rc == PV_ENOENT) {
    log_rules_errors(errs);
    mismatch_message(errs, db, err, errcap);
  }
  pv_rules_errors_free(errs);
  if (rc)
    return rc;
  pv_policy_t *p = NULL;
  rc = pv_policy_with_db_reldir(ctl->cur, db, cat, dir, NULL, false, &p);
  if (rc) {
    snprintf(err, errcap, "out of memory");
    return rc;
  }
  pv_policy_release(ctl->cur);
  ctl->cur = p;
  pv_log(PV_LOG_INFO,
         "catalog of database %s resolved: %zu relations, %zu "
         "protected columns, %zu views over protected data",
         db, pv_catalog_nrelations(cat), pv_catalog_ncolumns(cat),
         pv_reldir_nviews(dir));
  return PV_OK;
}

static void control_free(pv_control_t *ctl) {
  while (ctl->conns) {
    conn_t *c = ctl->conns;
    ctl->conns = c->next;
    if (!c->poll)
      PQfinish(c->pg);
    free(c);
  }
  pv_policy_release(ctl->cur);
  pthread_mutex_destroy(&ctl->mu);
  free(ctl);
}

int pv_control_start(const pv_config_t *cfg, pv_policy_holder_t *holder,
                     const pv_control_limits_t *lim, pv_control_t **out,
                     char *err, size_t errcap) {
  *out = NULL;
  err[0] = '\0';
  pv_control_t *ctl = calloc(1, sizeof *ctl);
  if (!ctl || pthread_mutex_init(&ctl->mu, NULL)) {
    free(ctl);
    snprintf(err, errcap, "out of memory");
    return PV_ENOMEM;
  }
  ctl->cfg = cfg;
  ctl->holder = holder;
  ctl->lim = lim ? *lim : pv_control_limits_default();
  int rc = load_base(cfg, &ctl->cur, err, errcap);
  if (!rc && cfg->control_dsn[0])
    rc = resolve_startup_db(ctl, err, errcap);
  if (!rc && (rc = uv_loop_init(&ctl->loop)) != 0) {
    snprintf(err, errcap, "cannot create the control loop: %s",
             uv_strerror(rc));
    rc = PV_ENOMEM;
  }
  if (rc) {
    control_free(ctl);
    return rc;
  }
  for (conn_t *c = ctl->conns; c; c = c->next)
    conn_watch(ctl, c);
  rc = init_handles(ctl);
  if (!rc)
    rc = uv_thread_create(&ctl->thread, thread_main, ctl);
  if (rc) {
    snprintf(err, errcap, "cannot start the control thread: %s",
             uv_strerror(rc));
    close_handles(ctl);
    uv_run(&ctl->loop, UV_RUN_DEFAULT);
    uv_loop_close(&ctl->loop);
    control_free(ctl);
    return PV_ENOMEM;
  }
  pv_policy_publish(holder, pv_policy_ref(ctl->cur));
  *out = ctl;
  return PV_OK;
}

void pv_control_reload(pv_control_t *c) {
  if (!c)
    return;
  pthread_mutex_lock(&c->mu);
  c->want_reload = true;
  pthread_mutex_unlock(&c->mu);
  uv_async_send(&c->wake);
}

void pv_control_stats(pv_control_t *c, pv_control_stats_t *out) {
  memset(out, 0, sizeof *out);
  if (!c)
    return;
  pthread_mutex_lock(&c->mu);
  *out = c->stats;
  pthread_mutex_unlock(&c->mu);
}

int pv_control_request_db(pv_control_t *c, const char *dbname,
                          uv_async_t *notify) {
  if (!c || !dbname || !notify || !dbname[0] ||
      strlen(dbname) > PV_CATALOG_DBNAME_MAX)
    return PV_EINVAL;
  request_t *r = calloc(1, sizeof *r);
  if (!r)
    return PV_ENOMEM;
  r->notify = notify;
  copy_db(r->db, dbname);
  pthread_mutex_lock(&c->mu);
  if (c->stopped || c->nreqs >= c->lim.max_requests) {
    pthread_mutex_unlock(&c->mu);
    free(r);
    return PV_ELIMIT;
  }
  r->next = c->reqs;
  c->reqs = r;
  c->nreqs++;
  pthread_mutex_unlock(&c->mu);
  uv_async_send(&c->wake);
  return PV_OK;
}

void pv_control_cancel(pv_control_t *c, uv_async_t *notify) {
  if (!c)
    return;
  pthread_mutex_lock(&c->mu);
  for (request_t **pp = &c->reqs; *pp;) {
    request_t *r = *pp;
    if (r->notify == notify) {
      *pp = r->next;
      c->nreqs--;
      free(r);
    } else {
      pp = &r->next;
    }
  }
  pthread_mutex_unlock(&c->mu);
}

void pv_control_stop(pv_control_t *c) {
  if (!c)
    return;
  pthread_mutex_lock(&c->mu);
  c->want_stop = true;
  pthread_mutex_unlock(&c->mu);
  uv_async_send(&c->wake);
  uv_thread_join(&c->thread);
  uv_loop_close(&c->loop);
  control_free(c);
}

/* ---- pgveil --check ----------------------------------------------------- */

static void print_errors(FILE *out, const pv_rules_errors_t *e) {
  for (size_t i = 0; e && i < e->count; i++)
    fprintf(out, "%s\n", e->msgs[i]);
  if (e && e->omitted)
    fprintf(out, "... and %zu more problems\n", e->omitted);
}

static int check_secret(const pv_config_t *cfg, const pv_rules_t *rules,
                        FILE *out) {
  if (!cfg->secret_path[0]) {
    if (pv_policy_rules_need_secret(rules))
      fprintf(out, "note: the rules use hash; pgveil needs --secret-file to "
                   "serve them\n");
    return 0;
  }
  uint8_t secret[SECRET_MAX];
  size_t len = 0;
  char err[ERRMSG_MAX];
  int rc = read_secret(cfg->secret_path, secret, sizeof secret, &len, err,
                       sizeof err);
  OPENSSL_cleanse(secret, sizeof secret);
  if (rc)
    fprintf(out, "%s\n", err);
  return rc ? 1 : 0;
}

static int check_catalog(const pv_config_t *cfg, const pv_rules_t *rules,
                         FILE *out) {
  pv_control_limits_t lim = pv_control_limits_default();
  char err[ERRMSG_MAX] = "";
  PGconn *pg =
      connect_db(cfg, NULL, lim.statement_timeout_ms, false, err, sizeof err);
  if (!pg) {
    fprintf(out, "%s\n", err);
    return 1;
  }
  char db[PV_CATALOG_DBNAME_MAX + 1];
  copy_db(db, PQdb(pg));
  pv_catalog_t *cat = NULL;
  pv_rules_errors_t *errs = NULL;
  uint64_t fp = 0;
  lim.max_errors = 10000;
  int rc =
      resolve(pg, rules, db, &lim, &fp, &cat, NULL, &errs, err, sizeof err);
  PQfinish(pg);
  if (rc == PV_ENOENT) {
    print_errors(out, errs);
    fprintf(out, "catalog INVALID: %zu problem%s in database \"%s\"\n",
            nproblems(errs), nproblems(errs) == 1 ? "" : "s", db);
  } else if (rc) {
    fprintf(out, "%s\n", err);
  } else {
    fprintf(out,
            "catalog OK: database \"%s\", %zu relations, %zu protected "
            "columns, every action fits its column's type\n",
            db, pv_catalog_nrelations(cat), pv_catalog_ncolumns(cat));
  }
  pv_rules_errors_free(errs);
  pv_catalog_free(cat);
  return rc ? 1 : 0;
}

int pv_control_check(const pv_config_t *cfg, FILE *out) {
  pv_rules_t *rules = NULL;
  pv_rules_errors_t *errs = NULL;
  int rc = pv_rules_load_file(cfg->rules_path, &rules, &errs);
  if (rc) {
    print_errors(out, errs);
    fprintf(out, "rules INVALID: %zu problem%s in %s\n", nproblems(errs),
            nproblems(errs) == 1 ? "" : "s", cfg->rules_path);
    pv_rules_errors_free(errs);
    return 1;
  }
  char sum[512];
  if (pv_rules_check_summary(rules, sum, sizeof sum) >= 0)
    fprintf(out, "%s\n", sum);
  int bad = check_secret(cfg, rules, out);
  if (cfg->control_dsn[0])
    bad |= check_catalog(cfg, rules, out);
  else
    fprintf(out, "catalog not checked: give --control-dsn DSN to check the "
                 "tables, columns and types\n");
  pv_rules_free(rules);
  fflush(out);
  return bad ? 1 : 0;
}
