/* Owns the process: configuration, the upstream address, listening
 * sockets, worker threads, and signals (SIGTERM/SIGINT drain and stop).
 * Everything else is delegated; no protocol logic here. */
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "pgveil/admin.h"
#include "pgveil/audit.h"
#include "pgveil/config.h"
#include "pgveil/control.h"
#include "pgveil/log.h"
#include "pgveil/metrics.h"
#include "pgveil/policy.h"
#include "pgveil/tls.h"
#include "pgveil/worker.h"

#define EXIT_USAGE 2 /* bad flag, port in use, unresolvable address */

typedef struct {
  pv_worker_t *workers;
  unsigned nworkers;
  uv_signal_t sigterm, sigint, sighup;
  pv_control_t *control;
  bool stopping;
  uv_signal_t sigusr1; /* reopens the audit log */
  pv_audit_t *audit;
  pv_tls_t *tls; /* reloaded on SIGHUP */
  const pv_config_t *cfg;
} pv_main_t;

static int resolve_upstream(const pv_config_t *cfg, pv_shared_t *sh) {
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  char port[8];
  snprintf(port, sizeof port, "%u", cfg->upstream_port);
  int gai = getaddrinfo(cfg->upstream_host, port, &hints, &res);
  if (gai != 0) {
    fprintf(stderr, "pgveil: cannot resolve upstream %s: %s\n",
            cfg->upstream_host, gai_strerror(gai));
    return -1;
  }
  memcpy(&sh->upstream, res->ai_addr, res->ai_addrlen);
  sh->upstream_len = res->ai_addrlen;
  freeaddrinfo(res);
  return 0;
}

static void on_stop_signal(uv_signal_t *sig, int signum) {
  pv_main_t *m = sig->data;
  if (m->stopping) {
    pv_log(PV_LOG_WARN, "second signal %d: exiting now", signum);
    _exit(1);
  }
  m->stopping = true;
  pv_log(PV_LOG_INFO, "signal %d: no longer accepting, draining sessions",
         signum);
  for (unsigned i = 0; i < m->nworkers; i++)
    pv_worker_request_stop(&m->workers[i]);
  uv_close((uv_handle_t *)&m->sigterm, NULL);
  uv_close((uv_handle_t *)&m->sigint, NULL);
  uv_close((uv_handle_t *)&m->sighup, NULL);
  uv_close((uv_handle_t *)&m->sigusr1, NULL);
}

static void on_reload_signal(uv_signal_t *sig, int signum) {
  pv_main_t *m = sig->data;
  (void)signum;
  if (m->tls) {
    char err[PV_PATH_MAX + 300];
    if (pv_tls_reload(m->tls, m->cfg, err, sizeof err) == PV_OK)
      pv_log(PV_LOG_INFO, "SIGHUP: TLS certificates reloaded");
    else
      pv_log(PV_LOG_ERROR,
             "SIGHUP: TLS certificates not reloaded, keeping the old ones: %s",
             err);
  }
  if (!m->control) {
    pv_log(PV_LOG_INFO, "SIGHUP: --passthrough, no rules to reload");
    return;
  }
  pv_log(PV_LOG_INFO, "SIGHUP: reloading rules");
  pv_control_reload(m->control);
}

/* Loads the rules, resolves them and starts the control thread; exits the
 * process on failure (pgveil refuses to start on invalid rules). */
static int start_control(const pv_config_t *cfg, pv_shared_t *sh,
                         pv_policy_holder_t *holder) {
  if (pv_policy_holder_init(holder) != PV_OK) {
    fprintf(stderr, "pgveil: out of memory\n");
    return 1;
  }
  if (!cfg->rules_path[0])
    return 0;
  char err[512];
  if (pv_control_start(cfg, holder, NULL, &sh->control, err, sizeof err) !=
      PV_OK) {
    fprintf(stderr, "pgveil: %s\n", err);
    return 1;
  }
  sh->policy = holder;
  if (pv_consent_store_start(cfg, holder, NULL, &sh->consent, err,
                             sizeof err) != PV_OK) {
    fprintf(stderr, "pgveil: consent store: %s\n", err);
    return 1;
  }
  return 0;
}

static void on_reopen_signal(uv_signal_t *sig, int signum) {
  pv_main_t *m = sig->data;
  (void)signum;
  if (m->audit)
    pv_audit_reopen(m->audit); /* the writer thread reopens it */
}

/* --audit-log: one queue per worker, a writer thread. */
static int start_audit(const pv_config_t *cfg, pv_shared_t *sh,
                       unsigned nworkers) {
  char err[PV_PATH_MAX + 100];
  if (!cfg->audit_log[0])
    return 0;
  if (pv_audit_start(cfg->audit_log, nworkers, 4u << 20, &sh->audit, err,
                     sizeof err) != PV_OK) {
    fprintf(stderr, "pgveil: %s\n", err);
    return 1;
  }
  return 0;
}

static int serve(const pv_config_t *cfg) {
  pv_shared_t shared = {.cfg = cfg};
  pv_policy_holder_t holder;
  if (resolve_upstream(cfg, &shared))
    return EXIT_USAGE;
  int admin_fd = -1; /* --admin: bound first, served once everything runs */
  char aerr[256];
  if (cfg->admin_port &&
      (admin_fd = pv_admin_listen(cfg, aerr, sizeof aerr)) < 0) {
    fprintf(stderr, "pgveil: %s\n", aerr);
    return EXIT_USAGE;
  }
  char tls_err[PV_PATH_MAX + 300];
  if (pv_tls_new(cfg, &shared.tls, tls_err, sizeof tls_err) != PV_OK) {
    fprintf(stderr, "pgveil: %s\n", tls_err);
    return EXIT_USAGE;
  }
  unsigned n = cfg->workers;
  if (n == 0) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    n = cores > 0 ? (unsigned)cores : 1;
  }
  int rc = 1, *fds = calloc(n, sizeof *fds);
  pv_main_t m = {.nworkers = n,
                 .workers = calloc(n, sizeof(pv_worker_t)),
                 .tls = shared.tls,
                 .cfg = cfg};
  if (!fds || !m.workers) {
    fprintf(stderr, "pgveil: out of memory\n");
    goto fail;
  }
  /* Signals before the port accepts: a SIGTERM right after start must
   * still drain and exit 0 (it is delivered when the loop runs). */
  uv_loop_t *loop = uv_default_loop();
  uv_signal_init(loop, &m.sigterm);
  uv_signal_init(loop, &m.sigint);
  uv_signal_init(loop, &m.sighup);
  m.sigterm.data = m.sigint.data = m.sighup.data = &m;
  uv_signal_start(&m.sigterm, on_stop_signal, SIGTERM);
  uv_signal_start(&m.sigint, on_stop_signal, SIGINT);
  uv_signal_start(&m.sighup, on_reload_signal, SIGHUP);
  uv_signal_init(loop, &m.sigusr1);
  m.sigusr1.data = &m;
  uv_signal_start(&m.sigusr1, on_reopen_signal, SIGUSR1);
  /* All sockets first: a port in use fails before any thread starts. */
  for (unsigned i = 0; i < n; i++) {
    char err[256];
    fds[i] = pv_listen_socket(cfg, i == 0, err, sizeof err);
    if (fds[i] < 0) {
      fprintf(stderr, "pgveil: %s\n", err);
      rc = EXIT_USAGE;
      goto fail;
    }
  }
  if (admin_fd >= 0) {
    if (pv_metrics_new(n, &shared.metrics) != PV_OK) {
      fprintf(stderr, "pgveil: out of memory\n");
      goto fail;
    }
  }
  if (cfg->passthrough)
    pv_log(PV_LOG_WARN, "--passthrough: no rules loaded, NOTHING IS MASKED");
  if (start_audit(cfg, &shared, n))
    goto fail;
  m.audit = shared.audit;
  if (start_control(cfg, &shared, &holder))
    goto fail; /* the process exits: threads it started end with it */
  m.control = shared.control;
  for (unsigned i = 0; i < n; i++) {
    int wrc = pv_worker_start(&m.workers[i], i, &shared, fds[i]);
    if (wrc) {
      fprintf(stderr, "pgveil: cannot start worker %u: %s\n", i,
              uv_strerror(wrc));
      return 1; /* other workers run: exit without unwinding them */
    }
  }
  pv_admin_t *admin = NULL;
  if (admin_fd >= 0 &&
      pv_admin_start(admin_fd, &shared, &admin, aerr, sizeof aerr) != PV_OK)
    pv_log(PV_LOG_ERROR, "%s; serving without the admin endpoint", aerr);
  pv_log(PV_LOG_INFO, "listening on %s:%u, upstream %s:%u, %u workers, pid %d",
         cfg->listen_host, cfg->listen_port, cfg->upstream_host,
         cfg->upstream_port, n, (int)getpid());
  uv_run(loop, UV_RUN_DEFAULT);
  for (unsigned i = 0; i < n; i++)
    pv_worker_join(&m.workers[i]);
  pv_audit_stop(shared.audit); /* every producer has stopped */
  pv_admin_stop(admin);        /* reads what follows: stop it first */
  pv_consent_store_stop(shared.consent);
  pv_control_stop(shared.control);
  pv_policy_holder_dispose(&holder);
  pv_metrics_free(shared.metrics);
  pv_tls_free(shared.tls);
  uv_loop_close(loop);
  free(m.workers);
  free(fds);
  pv_log(PV_LOG_INFO, "stopped");
  return 0;
fail: /* before any worker runs: release what the exit checker would flag */
  for (unsigned i = 0; fds && i < n; i++)
    if (fds[i] > 0)
      close(fds[i]);
  free(fds);
  free(m.workers);
  pv_metrics_free(shared.metrics);
  pv_tls_free(shared.tls);
  return rc;
}

static const char *env_get(const char *name) { return getenv(name); }

int main(int argc, char **argv) {
  static pv_config_t cfg; /* read-only once parsed; lives for the process */
  char err[512];
  signal(SIGPIPE, SIG_IGN);
  if (argc > 1 && strcmp(argv[1], "ledger") == 0)
    return pv_ledger_main(argc - 1, argv + 1);
  if (pv_config_parse(argc, argv, env_get, &cfg, err, sizeof err) != PV_OK) {
    fprintf(stderr, "pgveil: %s\n", err);
    return EXIT_USAGE;
  }
  switch (cfg.mode) {
  case PV_MODE_HELP:
    fputs(pv_config_usage(), stdout);
    return 0;
  case PV_MODE_VERSION:
    printf("pgveil %s\n", PV_VERSION);
    return 0;
  case PV_MODE_CHECK:
    return pv_control_check(&cfg, stdout);
  case PV_MODE_SERVE:
    break;
  }
  return serve(&cfg);
}
