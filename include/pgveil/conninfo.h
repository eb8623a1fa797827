/* The libpq connection parameters of pgveil's own connections (catalog
 * control, consent store): --control-dsn's, or the upstream's host and port
 * with user $PGUSER (else postgres); a database and an application_name on
 * top. The DSN is never logged. */
#ifndef PGVEIL_CONNINFO_H
#define PGVEIL_CONNINFO_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "pgveil/config.h"
#include "pgveil/errors.h"

/* Keyword/value arrays for PQconnectdbParams. Owner: the caller, released
 * with pv_conninfo_dispose once the connection is made. */
typedef struct {
  PQconninfoOption *opts;
  const char **k, **v; /* NULL-terminated */
  char port[8];
} pv_conninfo_t;

/* Builds the parameters: dbname overrides the DSN's when not NULL;
 * application_name is `app`, over the DSN's when app_override; connect
 * timeout `timeout_s` unless the DSN sets one. Returns PV_OK, PV_EINVAL (a
 * DSN libpq cannot parse; err says why without showing it) or PV_ENOMEM. */
PV_WARN_UNUSED int pv_conninfo_build(const pv_config_t *cfg, const char *dbname,
                                     const char *app, bool app_override,
                                     const char *timeout_s, pv_conninfo_t *out,
                                     char *err, size_t errcap);

void pv_conninfo_dispose(pv_conninfo_t *p);

#endif
