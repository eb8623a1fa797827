/* Owns the connection parameters of pgveil's own libpq connections
 * (include/pgveil/conninfo.h). No I/O besides reading $PGUSER. */
#include "pgveil/conninfo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pv_conninfo_dispose(pv_conninfo_t *p) {
  if (p->opts)
    PQconninfoFree(p->opts);
  free(p->k);
  free(p->v);
  memset(p, 0, sizeof *p);
}

static void set(pv_conninfo_t *p, size_t *n, const char *k, const char *v,
                bool override) {
  for (size_t i = 0; i < *n; i++)
    if (strcmp(p->k[i], k) == 0) {
      if (override)
        p->v[i] = v;
      return;
    }
  p->k[*n] = k;
  p->v[(*n)++] = v;
}

int pv_conninfo_build(const pv_config_t *cfg, const char *dbname,
                      const char *app, bool app_override, const char *timeout_s,
                      pv_conninfo_t *p, char *err, size_t errcap) {
  memset(p, 0, sizeof *p);
  char *perr = NULL;
  p->opts = PQconninfoParse(cfg->control_dsn, &perr);
  if (!p->opts) {
    /* perr never contains the password; the DSN itself is not shown */
    snprintf(err, errcap, "invalid --control-dsn: %s",
             perr ? perr : "out of memory");
    if (perr)
      PQfreemem(perr);
    return PV_EINVAL;
  }
  size_t cap = 8, n = 0; /* the DSN's keywords and ours, then NULL */
  for (PQconninfoOption *o = p->opts; o->keyword; o++)
    cap++;
  p->k = calloc(cap, sizeof(const char *));
  p->v = calloc(cap, sizeof(const char *));
  if (!p->k || !p->v) {
    pv_conninfo_dispose(p);
    snprintf(err, errcap, "out of memory");
    return PV_ENOMEM;
  }
  for (PQconninfoOption *o = p->opts; o->keyword; o++)
    if (o->val)
      set(p, &n, o->keyword, o->val, true);
  if (!cfg->control_dsn[0]) {
    const char *user = getenv("PGUSER");
    snprintf(p->port, sizeof p->port, "%u", cfg->upstream_port);
    set(p, &n, "host", cfg->upstream_host, true);
    set(p, &n, "port", p->port, true);
    set(p, &n, "user", user && *user ? user : "postgres", true);
  }
  if (dbname)
    set(p, &n, "dbname", dbname, true);
  set(p, &n, "application_name", app, app_override);
  set(p, &n, "connect_timeout", timeout_s, false);
  p->k[n] = p->v[n] = NULL;
  return PV_OK;
}
