/* Owns the admin HTTP thread: its loop, listening socket and connections,
 * request parsing (strict, bounded), and the /metrics, /healthz and /readyz
 * answers. Never touches a worker's state besides reading counters. */
#include "pgveil/admin.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgveil/log.h"
#include "pgveil/metrics.h"
#include "pgveil/policy.h"

#define TARGET_MAX 1024     /* bytes of a request target */
#define LINGER_MS 1000      /* reading the rest after the reply */
#define METRICS_FIRST 16384 /* first guess of the /metrics size */

typedef struct conn {
  struct conn *prev, *next;
  struct pv_admin *a;
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t wr;
  uv_shutdown_t sd;
  int open_handles;
  bool closing, responded;
  char *resp; /* the reply, until written */
  size_t len; /* request bytes in buf */
  char buf[PV_ADMIN_REQUEST_MAX];
} conn_t;

struct pv_admin {
  pv_shared_t *sh;
  uv_loop_t loop;
  uv_thread_t thread;
  uv_tcp_t listener;
  uv_async_t stop;
  conn_t *conns;
  unsigned nconns;
  bool stopping;
};

/* ---- Connections -------------------------------------------------------- */

static void on_conn_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (--c->open_handles == 0)
    free(c);
}

static void conn_close(conn_t *c) {
  if (c->closing)
    return;
  c->closing = true;
  pv_admin_t *a = c->a;
  if (c->prev)
    c->prev->next = c->next;
  else
    a->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  a->nconns--;
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void on_timeout(uv_timer_t *t) { conn_close(t->data); }

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)req;
  (void)status; /* the timer or EOF closes the connection */
}

static void on_written(uv_write_t *req, int status) {
  conn_t *c = req->data;
  free(c->resp);
  c->resp = NULL;
  if (c->closing)
    return;
  /* Half-close, then read what the client still sends until it closes:
   * closing with unread bytes would reset the connection and could
   * destroy the reply before the client reads it. */
  if (status < 0 || uv_shutdown(&c->sd, (uv_stream_t *)&c->tcp, on_shutdown)) {
    conn_close(c);
    return;
  }
  uv_timer_start(&c->timer, on_timeout, LINGER_MS, 0);
}

/* Sends one reply and ends the exchange (Connection: close). */
static void respond(conn_t *c, int status, const char *reason,
                    const char *ctype, const char *body, size_t body_len,
                    bool head_only, const char *extra) {
  if (c->responded)
    return;
  c->responded = true;
  char hdr[512];
  int h = snprintf(hdr, sizeof hdr,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n"
                   "Cache-Control: no-store\r\n%s\r\n",
                   status, reason, ctype, body_len, extra ? extra : "");
  size_t n = (size_t)h + (head_only ? 0 : body_len);
  c->resp = malloc(n);
  if (h < 0 || (size_t)h >= sizeof hdr || !c->resp) {
    free(c->resp);
    c->resp = NULL;
    conn_close(c);
    return;
  }
  memcpy(c->resp, hdr, (size_t)h);
  if (!head_only && body_len)
    memcpy(c->resp + h, body, body_len);
  uv_buf_t b = uv_buf_init(c->resp, (unsigned)n);
  c->wr.data = c;
  uv_timer_start(&c->timer, on_timeout, PV_ADMIN_TIMEOUT_MS, 0);
  if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_written)) {
    free(c->resp);
    c->resp = NULL;
    conn_close(c);
  }
}

static void respond_text(conn_t *c, int status, const char *reason,
                         const char *text, bool head_only) {
  respond(c, status, reason, "text/plain; charset=utf-8", text, strlen(text),
          head_only, NULL);
}

/* ---- The view of the process --------------------------------------------- */

/* Fills v from the shared state. OUT: *held, a policy reference the names
 * in v->dbs borrow from; *dbs, an array to free. */
static void build_view(pv_admin_t *a, pv_metrics_view_t *v,
                       pv_control_stats_t *cs, pv_policy_t **held,
                       pv_metrics_db_t **dbs) {
  pv_shared_t *sh = a->sh;
  memset(v, 0, sizeof *v);
  pv_metrics_sum(sh->metrics, &v->sum);
  v->workers = sh->metrics ? sh->metrics->nworkers : 0;
  v->sessions_current =
      atomic_load_explicit(&sh->clients, memory_order_relaxed);
  v->sessions_total = atomic_load_explicit(&sh->sessions, memory_order_relaxed);
  v->passthrough = sh->cfg->passthrough;
  pv_control_stats(sh->control, cs);
  v->reloads = cs->reloads;
  v->reload_failures = cs->reload_failures;
  v->last_reload_failed = cs->last_reload_failed;
  v->control_db = cs->control_db;
  pv_policy_t *p = sh->policy ? pv_policy_acquire(sh->policy) : NULL;
  *held = p;
  *dbs = NULL;
  if (p) {
    v->rules_loaded = true;
    v->rules_fingerprint = pv_policy_rules(p)->fingerprint;
    v->rules_generation = pv_policy_generation(p);
    size_t n = pv_policy_ndbs(p);
    *dbs = n ? calloc(n, sizeof **dbs) : NULL;
    for (size_t i = 0; *dbs && i < n; i++) {
      const pv_policy_db_t *d = pv_policy_db_at(p, i);
      const pv_catalog_t *cat = pv_policy_db_catalog(d);
      (*dbs)[i] =
          (pv_metrics_db_t){.name = pv_policy_db_name(d),
                            .resolved = pv_policy_db_error(d) == NULL,
                            .has_catalog = cat != NULL,
                            .relations = cat ? pv_catalog_nrelations(cat) : 0,
                            .columns = cat ? pv_catalog_ncolumns(cat) : 0};
    }
    v->dbs = *dbs;
    v->ndbs = *dbs ? n : 0;
  }
  v->has_consent_store = sh->consent != NULL;
  pv_consent_store_stats(sh->consent, uv_hrtime() / 1000000u, &v->consent);
}

static void serve_metrics(conn_t *c, bool head_only) {
  pv_metrics_view_t v;
  pv_control_stats_t cs;
  pv_policy_t *held;
  pv_metrics_db_t *dbs;
  build_view(c->a, &v, &cs, &held, &dbs);
  size_t cap = METRICS_FIRST, need = 0;
  char *buf = NULL;
  int n = PV_ELIMIT;
  for (int attempt = 0; attempt < 2 && n == PV_ELIMIT; attempt++) {
    char *nb = realloc(buf, cap);
    if (!nb)
      break;
    buf = nb;
    n = pv_metrics_format(&v, buf, cap, &need);
    cap = need;
  }
  pv_policy_release(held);
  free(dbs);
  if (n < 0)
    respond_text(c, 500, "Internal Server Error", "out of memory\n", head_only);
  else
    respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", buf,
            (size_t)n, head_only, NULL);
  free(buf);
}

static void serve_ready(conn_t *c, bool head_only) {
  pv_metrics_view_t v;
  pv_control_stats_t cs;
  pv_policy_t *held;
  pv_metrics_db_t *dbs;
  build_view(c->a, &v, &cs, &held, &dbs);
  char why[256], body[300];
  bool ok = pv_metrics_ready(&v, why, sizeof why);
  pv_policy_release(held);
  free(dbs);
  snprintf(body, sizeof body, "%s%s\n", ok ? "" : "not ready: ", why);
  if (ok)
    respond_text(c, 200, "OK", body, head_only);
  else
    respond_text(c, 503, "Service Unavailable", body, head_only);
}

/* ---- Request parsing ----------------------------------------------------- */

static bool is_tchar(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* True when every byte of the head is visible ASCII, space or tab, and
 * every line ends with CRLF (bare CR or LF is refused). */
static bool head_clean(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)p[i];
    if (ch == '\r') {
      if (i + 1 >= n || p[i + 1] != '\n')
        return false;
      i++;
    } else if (ch == '\n' || ((ch < 0x20 || ch > 0x7e) && ch != '\t')) {
      return false;
    }
  }
  return true;
}

/* Checks the header lines in [p, end): "name: value" each; no request
 * body allowed. OUT: *has_host. */
static bool headers_ok(const char *p, const char *end, bool *has_host) {
  *has_host = false;
  while (p < end) {
    const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
    if (!eol)
      return false;
    const char *colon = memchr(p, ':', (size_t)(eol - p));
    if (!colon || colon == p)
      return false;
    for (const char *q = p; q < colon; q++)
      if (!is_tchar(*q))
        return false;
    size_t nl = (size_t)(colon - p);
    const char *val = colon + 1;
    while (val < eol && (*val == ' ' || *val == '\t'))
      val++;
    if (nl == 4 && strncasecmp(p, "host", 4) == 0)
      *has_host = true;
    if (nl == 17 && strncasecmp(p, "transfer-encoding", 17) == 0)
      return false;
    if (nl == 14 && strncasecmp(p, "content-length", 14) == 0 &&
        !(eol - val >= 1 && *val == '0' &&
          (eol - val == 1 || val[1] == ' ' || val[1] == '\t')))
      return false;
    p = eol + 2;
  }
  return true;
}

/* One complete request head buf[0..n), the final CRLF CRLF included. */
static void handle_request(conn_t *c, size_t n) {
  const char *p = c->buf, *end = c->buf + n - 2; /* keep the last CRLF */
  if (!head_clean(p, n)) {
    respond_text(c, 400, "Bad Request", "malformed request\n", false);
    return;
  }
  const char *eol = memmem(p, n, "\r\n", 2);
  const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
  const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
  if (!sp1 || !sp2 || sp1 == p || sp2 == sp1 + 1 ||
      memchr(sp2 + 1, ' ', (size_t)(eol - sp2 - 1))) {
    respond_text(c, 400, "Bad Request", "malformed request line\n", false);
    return;
  }
  size_t mlen = (size_t)(sp1 - p), tlen = (size_t)(sp2 - sp1 - 1);
  size_t vlen = (size_t)(eol - sp2 - 1);
  const char *target = sp1 + 1, *version = sp2 + 1;
  bool http11 = vlen == 8 && memcmp(version, "HTTP/1.1", 8) == 0;
  if (!http11 && !(vlen == 8 && memcmp(version, "HTTP/1.0", 8) == 0)) {
    if (vlen > 5 && memcmp(version, "HTTP/", 5) == 0)
      respond_text(c, 505, "HTTP Version Not Supported", "use HTTP/1.1\n",
                   false);
    else
      respond_text(c, 400, "Bad Request", "malformed request line\n", false);
    return;
  }
  bool has_host;
  if (!headers_ok(eol + 2, end, &has_host) || (http11 && !has_host)) {
    respond_text(c, 400, "Bad Request", "malformed or unsupported headers\n",
                 false);
    return;
  }
  bool head_only = mlen == 4 && memcmp(p, "HEAD", 4) == 0;
  if (!head_only && !(mlen == 3 && memcmp(p, "GET", 3) == 0)) {
    respond(c, 405, "Method Not Allowed", "text/plain; charset=utf-8",
            "only GET and HEAD\n", 18, false, "Allow: GET, HEAD\r\n");
    return;
  }
  if (tlen > TARGET_MAX || target[0] != '/') {
    respond_text(c, 400, "Bad Request", "bad request target\n", head_only);
    return;
  }
  const char *q = memchr(target, '?', tlen);
  size_t plen = q ? (size_t)(q - target) : tlen;
#define PATH_IS(s) (plen == sizeof(s) - 1 && memcmp(target, s, plen) == 0)
  if (PATH_IS("/metrics"))
    serve_metrics(c, head_only);
  else if (PATH_IS("/healthz"))
    respond_text(c, 200, "OK", "ok\n", head_only);
  else if (PATH_IS("/readyz"))
    serve_ready(c, head_only);
  else
    respond_text(c, 404, "Not Found",
                 "not found: try /metrics, /healthz or /readyz\n", head_only);
#undef PATH_IS
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  conn_t *c = h->data;
  (void)hint;
  if (c->responded) /* discarding what follows the request */
    *buf = uv_buf_init(c->buf, sizeof c->buf);
  else
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof c->buf - c->len));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = st->data;
  (void)buf;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  if (c->responded || nread == 0)
    return;
  size_t from = c->len > 3 ? c->len - 3 : 0;
  c->len += (size_t)nread;
  const char *e = memmem(c->buf + from, c->len - from, "\r\n\r\n", 4);
  if (e)
    handle_request(c, (size_t)(e - c->buf) + 4);
  else if (c->len == sizeof c->buf)
    respond_text(c, 431, "Request Header Fields Too Large",
                 "request too large\n", false);
}

static void on_connection(uv_stream_t *server, int status) {
  pv_admin_t *a = server->data;
  if (status < 0)
    return;
  conn_t *c = calloc(1, sizeof *c);
  if (!c || uv_tcp_init(&a->loop, &c->tcp)) {
    free(c);
    return;
  }
  c->a = a;
  c->tcp.data = c->timer.data = c;
  c->open_handles = 2;
  uv_timer_init(&a->loop, &c->timer);
  c->next = a->conns;
  if (a->conns)
    a->conns->prev = c;
  a->conns = c;
  a->nconns++;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) ||
      a->nconns > PV_ADMIN_MAX_CONNS || a->stopping) {
    conn_close(c);
    return;
  }
  uv_timer_start(&c->timer, on_timeout, PV_ADMIN_TIMEOUT_MS, 0);
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read))
    conn_close(c);
}

/* ---- Thread -------------------------------------------------------------- */

static void on_stop(uv_async_t *as) {
  pv_admin_t *a = as->data;
  a->stopping = true;
  while (a->conns)
    conn_close(a->conns);
  uv_close((uv_handle_t *)&a->listener, NULL);
  uv_close((uv_handle_t *)&a->stop, NULL);
}

static void admin_main(void *arg) {
  pv_admin_t *a = arg;
  uv_run(&a->loop, UV_RUN_DEFAULT);
}

int pv_admin_listen(const pv_config_t *cfg, char *err, size_t errcap) {
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  char port[8];
  snprintf(port, sizeof port, "%u", cfg->admin_port);
  int gai = getaddrinfo(cfg->admin_host[0] ? cfg->admin_host : NULL, port,
                        &hints, &res);
  if (gai != 0) {
    snprintf(err, errcap, "cannot resolve --admin address %s: %s",
             cfg->admin_host, gai_strerror(gai));
    return -EINVAL;
  }
  int one = 1, rc = 0;
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 64) != 0)
    rc = -errno;
  freeaddrinfo(res);
  if (rc) {
    snprintf(err, errcap, "cannot listen on --admin %s:%u: %s", cfg->admin_host,
             cfg->admin_port, strerror(-rc));
    if (fd >= 0)
      close(fd);
    return rc;
  }
  return fd;
}

int pv_admin_start(int fd, pv_shared_t *shared, pv_admin_t **out, char *err,
                   size_t errcap) {
  *out = NULL;
  pv_admin_t *a = calloc(1, sizeof *a);
  if (!a) {
    close(fd);
    snprintf(err, errcap, "out of memory");
    return PV_ENOMEM;
  }
  a->sh = shared;
  int rc = uv_loop_init(&a->loop);
  if (rc) {
    close(fd);
    free(a);
    snprintf(err, errcap, "admin loop: %s", uv_strerror(rc));
    return PV_EIO;
  }
  uv_tcp_init(&a->loop, &a->listener);
  uv_async_init(&a->loop, &a->stop, on_stop);
  a->listener.data = a->stop.data = a;
  if ((rc = uv_tcp_open(&a->listener, fd)) != 0)
    close(fd); /* not the listener's yet */
  else if ((rc = uv_listen((uv_stream_t *)&a->listener, 64, on_connection)) ==
               0 &&
           (rc = uv_thread_create(&a->thread, admin_main, a)) == 0) {
    *out = a;
    return PV_OK;
  }
  snprintf(err, errcap, "admin endpoint: %s", uv_strerror(rc));
  uv_close((uv_handle_t *)&a->listener, NULL); /* closes fd once opened */
  uv_close((uv_handle_t *)&a->stop, NULL);
  uv_run(&a->loop, UV_RUN_DEFAULT);
  uv_loop_close(&a->loop);
  free(a);
  return PV_EIO;
}

void pv_admin_stop(pv_admin_t *a) {
  if (!a)
    return;
  uv_async_send(&a->stop);
  uv_thread_join(&a->thread);
  uv_loop_close(&a->loop);
  free(a);
}
