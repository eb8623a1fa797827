/* pgveil's run-time configuration: command-line flags, each also readable
 * from a PGVEIL_* environment variable (flags win). Pure: no I/O besides
 * reading the environment through the getter passed in, no globals. */
#ifndef PGVEIL_CONFIG_H
#define PGVEIL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgveil/errors.h"

#define PV_HOST_MAX 256
#define PV_PATH_MAX 4096

typedef enum {
  PV_MODE_SERVE = 0, /* run the proxy */
  PV_MODE_HELP,      /* --help: print usage, exit 0 */
  PV_MODE_VERSION,   /* --version: print version, exit 0 */
  PV_MODE_CHECK,     /* --check: validate rules, exit 0/1 */
} pv_mode_t;

/* --upstream-tls: how pgveil talks TLS to the server. */
typedef enum {
  PV_UPSTREAM_TLS_DISABLE = 0, /* plaintext */
  PV_UPSTREAM_TLS_PREFER,      /* TLS if the server accepts SSLRequest */
  PV_UPSTREAM_TLS_REQUIRE,     /* TLS or fail; no certificate check */
  PV_UPSTREAM_TLS_VERIFY_FULL, /* TLS, certificate chain and host name */
} pv_upstream_tls_t;

/* Owner: main(); lives for the whole process, read-only once parsed. */
typedef struct {
  pv_mode_t mode;
  char listen_host[PV_HOST_MAX];
  uint16_t listen_port;
  char upstream_host[PV_HOST_MAX];
  uint16_t upstream_port;
  unsigned workers;               /* event-loop threads */
  char rules_path[PV_PATH_MAX];   /* "" when none */
  char control_dsn[PV_PATH_MAX];  /* "" when none */
  char secret_path[PV_PATH_MAX];  /* --secret-file: mask key secret, or "" */
  char tls_cert[PV_PATH_MAX];     /* --tls-cert: client-leg certificate (PEM) */
  char tls_key[PV_PATH_MAX];      /* --tls-key: its private key (PEM) */
  bool require_tls;               /* --require-tls: refuse plaintext clients */
  pv_upstream_tls_t upstream_tls; /* --upstream-tls */
  char upstream_ca[PV_PATH_MAX];  /* --upstream-ca: CA bundle (PEM) */
  char audit_log[PV_PATH_MAX];    /* --audit-log FILE, "-" for stdout */
  char admin_host[PV_HOST_MAX];   /* --admin HOST:PORT; port 0: off */
  uint16_t admin_port;
  bool passthrough;           /* explicit: run without rules */
  uint32_t max_message_bytes; /* largest message pgveil buffers whole */
  uint32_t max_clients;       /* concurrent client connections */
  double shutdown_timeout;    /* seconds sessions get to finish */
  double connect_timeout;     /* seconds to reach the upstream */
  uint32_t read_buffer_bytes; /* per-direction read buffer */
  uint32_t write_high_water;  /* pause the source above this queue size */
  uint32_t max_statements;    /* named prepared statements per session */
  uint32_t max_portals;       /* named portals per session */
  uint32_t max_pending;       /* pipelined messages awaiting replies */
  bool debug_tag_rows;        /* test-only: prefix text fields with names */
} pv_config_t;

/* Looks up an environment variable; NULL when unset. */
typedef const char *(*pv_getenv_fn)(const char *name);

/* Fills cfg from defaults, then the environment, then argv. On error
 * returns PV_EINVAL with a one-line message in err. */
PV_WARN_UNUSED int pv_config_parse(int argc, char *const *argv,
                                   pv_getenv_fn getenv_fn, pv_config_t *cfg,
                                   char *err, size_t errcap);

/* The --help text. */
const char *pv_config_usage(void);

#define PV_VERSION "0.1.0"

#endif
