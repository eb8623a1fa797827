/* Owns the parsing of pgveil's flags and PGVEIL_* environment variables
 * into pv_config_t. Pure: no I/O, no globals beyond the constant table. */
#include "pgveil/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
  OPT_FLAG,
  OPT_HOSTPORT,
  OPT_UINT,
  OPT_SECONDS,
  OPT_STRING,
  OPT_CHOICE
} opt_kind_t;

typedef enum {
  O_LISTEN,
  O_UPSTREAM,
  O_WORKERS,
  O_RULES,
  O_CONTROL_DSN,
  O_PASSTHROUGH,
  O_MAX_MESSAGE,
  O_MAX_CLIENTS,
  O_SHUTDOWN,
  O_CONNECT_TIMEOUT,
  O_READ_BUFFER,
  O_HIGH_WATER,
  O_MAX_STATEMENTS,
  O_MAX_PORTALS,
  O_MAX_PENDING,
  O_TAG_ROWS,
  O_CHECK,
  O_HELP,
  O_VERSION,
  O_SECRET_FILE,
  O_TLS_CERT,
  O_TLS_KEY,
  O_REQUIRE_TLS,
  O_UPSTREAM_TLS,
  O_UPSTREAM_CA,
  O_AUDIT_LOG,
  O_ADMIN,
} opt_id_t;

typedef struct {
  opt_id_t id;
  const char *flag; /* without the leading "--" */
  const char *env;  /* NULL: flag only */
  opt_kind_t kind;
  uint64_t min, max; /* OPT_UINT bounds */
} opt_t;

static const opt_t OPTS[] = {
    {O_LISTEN, "listen", "PGVEIL_LISTEN", OPT_HOSTPORT, 0, 0},
    {O_UPSTREAM, "upstream", "PGVEIL_UPSTREAM", OPT_HOSTPORT, 0, 0},
    {O_WORKERS, "workers", "PGVEIL_WORKERS", OPT_UINT, 1, 256},
    {O_RULES, "rules", "PGVEIL_RULES", OPT_STRING, 0, 0},
    {O_CONTROL_DSN, "control-dsn", "PGVEIL_CONTROL_DSN", OPT_STRING, 0, 0},
    {O_SECRET_FILE, "secret-file", "PGVEIL_SECRET_FILE", OPT_STRING, 0, 0},
    {O_TLS_CERT, "tls-cert", "PGVEIL_TLS_CERT", OPT_STRING, 0, 0},
    {O_TLS_KEY, "tls-key", "PGVEIL_TLS_KEY", OPT_STRING, 0, 0},
    {O_REQUIRE_TLS, "require-tls", "PGVEIL_REQUIRE_TLS", OPT_FLAG, 0, 0},
    {O_UPSTREAM_TLS, "upstream-tls", "PGVEIL_UPSTREAM_TLS", OPT_CHOICE, 0, 0},
    {O_UPSTREAM_CA, "upstream-ca", "PGVEIL_UPSTREAM_CA", OPT_STRING, 0, 0},
    {O_AUDIT_LOG, "audit-log", "PGVEIL_AUDIT_LOG", OPT_STRING, 0, 0},
    {O_ADMIN, "admin", "PGVEIL_ADMIN", OPT_HOSTPORT, 0, 0},
    {O_PASSTHROUGH, "passthrough", "PGVEIL_PASSTHROUGH", OPT_FLAG, 0, 0},
    {O_MAX_MESSAGE, "max-message-bytes", "PGVEIL_MAX_MESSAGE_BYTES", OPT_UINT,
     1024, 1073741824},
    {O_MAX_CLIENTS, "max-clients", "PGVEIL_MAX_CLIENTS", OPT_UINT, 1, 1000000},
    {O_SHUTDOWN, "shutdown-timeout", "PGVEIL_SHUTDOWN_TIMEOUT", OPT_SECONDS, 0,
     0},
    {O_CONNECT_TIMEOUT, "connect-timeout", "PGVEIL_CONNECT_TIMEOUT",
     OPT_SECONDS, 0, 0},
    {O_READ_BUFFER, "read-buffer-bytes", "PGVEIL_READ_BUFFER_BYTES", OPT_UINT,
     1024, 16777216},
    {O_HIGH_WATER, "write-high-water", "PGVEIL_WRITE_HIGH_WATER", OPT_UINT,
     4096, 1073741824},
    {O_MAX_STATEMENTS, "max-statements", "PGVEIL_MAX_STATEMENTS", OPT_UINT, 1,
     10000000},
    {O_MAX_PORTALS, "max-portals", "PGVEIL_MAX_PORTALS", OPT_UINT, 1, 10000000},
    {O_MAX_PENDING, "max-pending", "PGVEIL_MAX_PENDING", OPT_UINT, 16,
     10000000},
    {O_TAG_ROWS, "debug-tag-rows", NULL, OPT_FLAG, 0, 0},
    {O_CHECK, "check", NULL, OPT_FLAG, 0, 0},
    {O_HELP, "help", NULL, OPT_FLAG, 0, 0},
    {O_VERSION, "version", NULL, OPT_FLAG, 0, 0},
};
#define NOPTS (sizeof OPTS / sizeof OPTS[0])

/* One literal per line of --help, so each fits in 80 columns. */
static const char USAGE[] =
    "usage: pgveil --listen HOST:PORT --upstream HOST:PORT [options]\n"
    "       pgveil --check --rules FILE [--control-dsn DSN]\n"
    "       pgveil ledger --audit-log FILE --subject ID\n"
    "\n"
    "  --listen HOST:PORT          where clients connect (PGVEIL_LISTEN)\n"
    "  --upstream HOST:PORT        the PostgreSQL server (PGVEIL_UPSTREAM)\n"
    "  --rules FILE                rules file (PGVEIL_RULES)\n"
    "  --passthrough               run without rules: nothing is masked\n"
    "  --control-dsn DSN           libpq DSN for catalog and consent\n"
    "  --secret-file FILE          secret for hash pseudonyms (>= 16 bytes)\n"
    "  --workers N                 event-loop threads (default: cores)\n"
    "  --max-message-bytes N       largest message buffered (64 MiB)\n"
    "  --max-clients N             concurrent clients (10000)\n"
    "  --shutdown-timeout S        grace for sessions on SIGTERM (30)\n"
    "  --connect-timeout S         to reach the upstream (10)\n"
    "  --read-buffer-bytes N       read buffer per direction (16 KiB)\n"
    "  --write-high-water N        pause reading above this queue (256 KiB)\n"
    "  --max-statements N          prepared statements per session (10000)\n"
    "  --max-portals N             open portals per session (10000)\n"
    "  --max-pending N             pipelined messages in flight (100000)\n"
    "  --tls-cert FILE, --tls-key FILE  TLS for clients (PEM)\n"
    "  --require-tls               refuse clients that do not use TLS\n"
    "  --upstream-tls MODE         disable|prefer|require|verify-full\n"
    "  --upstream-ca FILE          CA bundle for verify-full\n"
    "  --audit-log FILE|-          JSON lines audit log (SIGUSR1 reopens)\n"
    "  --admin HOST:PORT           /metrics, /healthz, /readyz\n"
    "  --check                     validate --rules and exit 0 or 1\n"
    "  --help, --version\n"
    "Every option NAME may also be given as PGVEIL_NAME in the environment\n"
    "(upper case, dashes as underscores); flags win.\n";

const char *pv_config_usage(void) { return USAGE; }

static void set_defaults(pv_config_t *c) {
  memset(c, 0, sizeof *c);
  c->mode = PV_MODE_SERVE;
  c->workers = 0; /* 0: main picks the core count */
  c->max_message_bytes = 64u << 20;
  c->max_clients = 10000;
  c->shutdown_timeout = 30.0;
  c->connect_timeout = 10.0;
  c->read_buffer_bytes = 16u << 10;
  c->write_high_water = 256u << 10;
  c->max_statements = 10000;
  c->max_portals = 10000;
  c->max_pending = 100000;
}

static int parse_hostport(const char *s, char *host, uint16_t *port) {
  const char *colon = strrchr(s, ':');
  if (!colon || colon == s)
    return PV_EINVAL;
  const char *h = s;
  size_t hlen = (size_t)(colon - s);
  if (h[0] == '[' && hlen >= 2 && h[hlen - 1] == ']') { /* [::1]:5432 */
    h++;
    hlen -= 2;
  }
  if (hlen == 0 || hlen >= PV_HOST_MAX)
    return PV_EINVAL;
  char *end;
  errno = 0;
  unsigned long p = strtoul(colon + 1, &end, 10);
  if (errno || *end || colon[1] == '\0' || p == 0 || p > 65535)
    return PV_EINVAL;
  memcpy(host, h, hlen);
  host[hlen] = '\0';
  *port = (uint16_t)p;
  return PV_OK;
}

static int parse_uint(const char *s, const opt_t *o, uint64_t *out) {
  char *end;
  errno = 0;
  if (*s == '-' || *s == '\0')
    return PV_EINVAL;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || v < o->min || v > o->max)
    return PV_EINVAL;
  *out = v;
  return PV_OK;
}

static int parse_seconds(const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *end || end == s || !(v >= 0 && v <= 86400))
    return PV_EINVAL;
  *out = v;
  return PV_OK;
}

static bool truthy(const char *v) {
  return !(strcmp(v, "0") == 0 || strcmp(v, "false") == 0 ||
           strcmp(v, "no") == 0 || strcmp(v, "off") == 0 || v[0] == '\0');
}

static int apply(pv_config_t *c, const opt_t *o, const char *val,
                 const char *origin, char *err, size_t errcap) {
  uint64_t u = 0;
  int rc = PV_OK;
  switch (o->kind) {
  case OPT_FLAG:
    if (val && !truthy(val))
      return PV_OK;
    break;
  case OPT_HOSTPORT:
    rc = parse_hostport(val,
                        o->id == O_LISTEN     ? c->listen_host
                        : o->id == O_UPSTREAM ? c->upstream_host
                                              : c->admin_host,
                        o->id == O_LISTEN     ? &c->listen_port
                        : o->id == O_UPSTREAM ? &c->upstream_port
                                              : &c->admin_port);
    if (rc)
      snprintf(err, errcap, "%s: expected HOST:PORT, got \"%s\"", origin, val);
    return rc;
  case OPT_UINT:
    rc = parse_uint(val, o, &u);
    if (rc) {
      snprintf(err, errcap,
               "%s: expected an integer in [%llu, %llu], got \"%s\"", origin,
               (unsigned long long)o->min, (unsigned long long)o->max, val);
      return rc;
    }
    break;
  case OPT_SECONDS:
    break;
  case OPT_CHOICE: {
    static const char *const modes[] = {"disable", "prefer", "require",
                                        "verify-full"};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
      if (strcmp(val, modes[i]) == 0) {
        c->upstream_tls = (pv_upstream_tls_t)i;
        return PV_OK;
      }
    snprintf(err, errcap,
             "%s: expected disable, prefer, require or verify-full, got "
             "\"%s\"",
             origin, val);
    return PV_EINVAL;
  }
  case OPT_STRING:
    if (strlen(val) >= PV_PATH_MAX || val[0] == '\0') {
      snprintf(err, errcap, "%s: expected a non-empty value", origin);
      return PV_EINVAL;
    }
    break;
  }
  switch (o->id) {
  case O_WORKERS:
    c->workers = (unsigned)u;
    break;
  case O_RULES:
    strcpy(c->rules_path, val);
    break;
  case O_CONTROL_DSN:
    strcpy(c->control_dsn, val);
    break;
  case O_SECRET_FILE:
    strcpy(c->secret_path, val);
    break;
  case O_TLS_CERT:
    strcpy(c->tls_cert, val);
    break;
  case O_TLS_KEY:
    strcpy(c->tls_key, val);
    break;
  case O_REQUIRE_TLS:
    c->require_tls = true;
    break;
  case O_UPSTREAM_CA:
    strcpy(c->upstream_ca, val);
    break;
  case O_AUDIT_LOG:
    strcpy(c->audit_log, val);
    break;
  case O_UPSTREAM_TLS:
  case O_ADMIN:
    break;
  case O_PASSTHROUGH:
    c->passthrough = true;
    break;
  case O_MAX_MESSAGE:
    c->max_message_bytes = (uint32_t)u;
    break;
  case O_MAX_CLIENTS:
    c->max_clients = (uint32_t)u;
    break;
  case O_READ_BUFFER:
    c->read_buffer_bytes = (uint32_t)u;
    break;
  case O_HIGH_WATER:
    c->write_high_water = (uint32_t)u;
    break;
  case O_MAX_STATEMENTS:
    c->max_statements = (uint32_t)u;
    break;
  case O_MAX_PORTALS:
    c->max_portals = (uint32_t)u;
    break;
  case O_MAX_PENDING:
    c->max_pending = (uint32_t)u;
    break;
  case O_TAG_ROWS:
    c->debug_tag_rows = true;
    break;
  case O_CHECK:
    c->mode = PV_MODE_CHECK;
    break;
  case O_HELP:
    c->mode = PV_MODE_HELP;
    break;
  case O_VERSION:
    c->mode = PV_MODE_VERSION;
    break;
  case O_SHUTDOWN:
  case O_CONNECT_TIMEOUT:
    rc = parse_seconds(val, o->id == O_SHUTDOWN ? &c->shutdown_timeout
                                                : &c->connect_timeout);
    if (rc)
      snprintf(err, errcap, "%s: expected seconds, got \"%s\"", origin, val);
    return rc;
  case O_LISTEN:
  case O_UPSTREAM:
    break;
  }
  return PV_OK;
}

static const opt_t *find_flag(const char *name, size_t len) {
  for (size_t i = 0; i < NOPTS; i++)
    if (strlen(OPTS[i].flag) == len && memcmp(OPTS[i].flag, name, len) == 0)
      return &OPTS[i];
  return NULL;
}

static int apply_env(pv_config_t *c, pv_getenv_fn getenv_fn, char *err,
                     size_t errcap) {
  for (size_t i = 0; getenv_fn && i < NOPTS; i++) {
    const char *v = OPTS[i].env ? getenv_fn(OPTS[i].env) : NULL;
    if (!v)
      continue;
    int rc = apply(c, &OPTS[i], v, OPTS[i].env, err, errcap);
    if (rc)
      return rc;
  }
  return PV_OK;
}

static int apply_argv(pv_config_t *c, int argc, char *const *argv, char *err,
                      size_t errcap) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strncmp(a, "--", 2) != 0) {
      snprintf(err, errcap, "unexpected argument \"%s\" (see --help)", a);
      return PV_EINVAL;
    }
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
    const opt_t *o = find_flag(name, nlen);
    if (!o) {
      snprintf(err, errcap, "unknown option \"%s\" (see --help)", a);
      return PV_EINVAL;
    }
    const char *val = eq ? eq + 1 : NULL;
    if (o->kind != OPT_FLAG && !val) {
      if (i + 1 >= argc) {
        snprintf(err, errcap, "option --%s needs a value", o->flag);
        return PV_EINVAL;
      }
      val = argv[++i];
    }
    if (o->kind == OPT_FLAG && val) {
      snprintf(err, errcap, "option --%s takes no value", o->flag);
      return PV_EINVAL;
    }
    char origin[64];
    snprintf(origin, sizeof origin, "--%s", o->flag);
    int rc = apply(c, o, val, origin, err, errcap);
    if (rc)
      return rc;
  }
  return PV_OK;
}

static int validate(const pv_config_t *c, char *err, size_t errcap) {
  if (c->mode != PV_MODE_SERVE && c->mode != PV_MODE_CHECK)
    return PV_OK;
  if (c->mode == PV_MODE_CHECK) {
    if (!c->rules_path[0]) {
      snprintf(err, errcap, "--check needs --rules FILE");
      return PV_EINVAL;
    }
    return PV_OK;
  }
  if (!c->listen_port || !c->upstream_port) {
    snprintf(err, errcap, "--listen and --upstream are required (see --help)");
    return PV_EINVAL;
  }
  if (!c->rules_path[0] && !c->passthrough) {
    snprintf(err, errcap,
             "no --rules given: refusing to start; pass --passthrough to run "
             "without masking");
    return PV_EINVAL;
  }
  if (c->rules_path[0] && c->passthrough) {
    snprintf(err, errcap, "--rules and --passthrough exclude each other");
    return PV_EINVAL;
  }
  if (!c->tls_cert[0] != !c->tls_key[0]) {
    snprintf(err, errcap, "--tls-cert and --tls-key go together");
    return PV_EINVAL;
  }
  if (c->require_tls && !c->tls_cert[0]) {
    snprintf(err, errcap, "--require-tls needs --tls-cert and --tls-key");
    return PV_EINVAL;
  }
  if (c->upstream_tls == PV_UPSTREAM_TLS_VERIFY_FULL && !c->upstream_ca[0]) {
    snprintf(err, errcap, "--upstream-tls verify-full needs --upstream-ca");
    return PV_EINVAL;
  }
  if (c->write_high_water < c->read_buffer_bytes) {
    snprintf(err, errcap,
             "--write-high-water must be at least --read-buffer-bytes");
    return PV_EINVAL;
  }
  return PV_OK;
}

int pv_config_parse(int argc, char *const *argv, pv_getenv_fn getenv_fn,
                    pv_config_t *cfg, char *err, size_t errcap) {
  set_defaults(cfg);
  err[0] = '\0';
  int rc = apply_env(cfg, getenv_fn, err, errcap);
  if (!rc)
    rc = apply_argv(cfg, argc, argv, err, errcap);
  if (!rc)
    rc = validate(cfg, err, errcap);
  return rc;
}
