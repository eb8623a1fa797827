/* Owns one client session: accept, startup and authentication relay,
 * upstream connect, CancelRequest forwarding, the message pump in both
 * directions (framing, row-plan tracking, row rewriting), write queues with
 * backpressure, and orderly close. Protocol decisions are delegated to the
 * pure modules (pg_frame, row_plan, row_rewrite); this file does the I/O. */
#include "pgveil/session.h"

#include <stdarg.h>
#include <sys/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgveil/copy_rewrite.h"
#include "pgveil/error_scrub.h"
#include "pgveil/guard_cache.h"
#include "pgveil/log.h"
#include "pgveil/pg_frame.h"
#include "pgveil/pg_msg_backend.h"
#include "pgveil/pg_msg_frontend.h"
#include "pgveil/pg_options.h"
#include "pgveil/plan_actions.h"
#include "pgveil/row_plan.h"
#include "pgveil/reldir.h"
#include "pgveil/row_rewrite.h"
#include "pgveil/sql_guard.h"

#define STARTUP_MAX 10000u    /* PostgreSQL's MAX_STARTUP_PACKET_LENGTH */
#define STARTUP_PARAMS_MAX 64 /* parameters in a StartupMessage */
#define EMIT_IOV_MAX 64       /* slices gathered before a write */
#define PURPOSE_MAX 64        /* bytes of a pgveil.purpose value */
#define NAME_MAX_BYTES 64     /* role and database names (NAMEDATALEN) */
#define REFUSALS 8            /* refusal messages awaiting their error */
#define REFUSAL_MAX 240       /* bytes of one refusal message */
#define COPY_PLANS_MAX 16     /* COPY TO STDOUT statements in flight */
#define SEARCH_PATH_MAX 8     /* schemas tracked in search_path */
#define GUARD_CACHE_SLOTS 4096 /* analyses cached per worker */
#define NO_LOCAL (-1000)      /* local_saved: no SET LOCAL active */

typedef enum {
  S_STARTUP,    /* waiting for the client's startup packet */
  S_CONNECTING, /* connecting to the upstream */
  S_AUTH,       /* relaying authentication until ReadyForQuery */
  S_READY,      /* normal operation: tracked */
  S_CANCEL,     /* forwarding a CancelRequest */
} state_t;

/* Bytes waiting to be written to one end: `pend` accumulates while `fly`
 * is being written by libuv. Both are allocated only under backpressure
 * (when the kernel does not take a write at once) and freed when idle. */
typedef struct {
  uint8_t *pend, *fly;
  size_t pend_len, pend_cap, fly_len;
  uv_write_t req;
  bool writing;
} outq_t;

/* One end of the session: the socket, bytes read from it that are not yet
 * processed, and the queue of bytes to write to it. */
typedef struct {
  uv_tcp_t tcp;
  pv_session_t *s;
  uint8_t *in; /* from the worker's free list, or grown for big messages */
  uint32_t in_len, in_cap;
  uint32_t stream_left; /* bytes of a streamed message still to forward */
  outq_t out;
  bool open, reading, paused, held;
} end_t;

/* How the rows of one COPY TO STDOUT are rewritten. ra NULL: untouched.
 * Owner: the session. */
typedef struct {
  uint64_t unit; /* the Query it belongs to (units_sent when queued) */
  pv_row_actions_t *ra;
  pv_copy_opts_t opts;
  bool header; /* the first row is the header line */
} copy_plan_t;

/* Owner: the worker's session list; freed when its last handle closes. */
struct pv_session {
  pv_worker_t *w;
  pv_session_t *prev, *next;
  uint64_t id;
  state_t state;
  end_t client, server;
  uv_connect_t connect_req;
  uv_timer_t timer; /* connect timeout */
  int open_handles;
  bool timer_open, closing, draining, over_limit, timed_out;
  pv_tracker_t *tracker;
  uint8_t *startup; /* packet for the upstream, until written */
  size_t startup_len;
  char purpose_name[PURPOSE_MAX]; /* declared at startup, "" if none */
  char role[NAME_MAX_BYTES], dbname[NAME_MAX_BYTES]; /* from startup */
  int purpose;               /* index into the rules, or PV_PURPOSE_NONE */
  pv_policy_t *policy;       /* reference held; NULL in --passthrough */
  const pv_policy_db_t *db;  /* this database's resolution in policy */
  uv_async_t *db_async;      /* while waiting for the control thread */
  bool db_waited;            /* asked the control thread once already */
  bool restricted;           /* some column is protected for the purpose */
  int startup_purpose;       /* what RESET / DISCARD ALL go back to */
  int local_saved;           /* purpose before SET LOCAL, or NO_LOCAL */
  uint32_t nonce;            /* makes refusal tokens unforgeable */
  uint32_t nrefused;
  char refusal[REFUSALS][REFUSAL_MAX];
  uint64_t units_sent, units_done; /* Query/Sync/FunctionCall vs RFQ */
  copy_plan_t copies[COPY_PLANS_MAX]; /* FIFO of COPY TO STDOUT plans */
  unsigned copy_head, copy_len;
  copy_plan_t cur_copy;      /* the COPY OUT in progress */
  bool copy_active;
};

/* Row-plan extension: the plan's actions under the snapshot generation
 * they were built from. Owner: the plan (ext_free). */
typedef struct {
  uint64_t generation;
  pv_row_actions_t *ra;
} plan_ext_t;

/* Slices gathered for one write to dst. Rewritten or injected bytes live in
 * the worker's scratch, valid until the flush. */
typedef struct {
  pv_session_t *s;
  end_t *dst;
  uv_buf_t iov[EMIT_IOV_MAX];
  unsigned n;
} emit_t;

static void session_close(pv_session_t *s);
static void session_drain(pv_session_t *s);
static void pump(pv_session_t *s, end_t *src);
static void start_reading(end_t *e);

static const pv_config_t *cfg_of(const pv_session_t *s) {
  return s->w->shared->cfg;
}
static end_t *other(pv_session_t *s, end_t *e) {
  return e == &s->client ? &s->server : &s->client;
}

/* ---- write queues ---------------------------------------------------- */

static size_t queued(const end_t *e) {
  return e->out.pend_len + (e->out.writing ? e->out.fly_len : 0);
}

static void on_write(uv_write_t *req, int status);

static void start_write(end_t *e) {
  outq_t *q = &e->out;
  uint8_t *t = q->fly;
  q->fly = q->pend;
  q->fly_len = q->pend_len;
  q->pend = t;
  q->pend_len = 0;
  q->pend_cap = t ? q->pend_cap : 0;
  uv_buf_t b = uv_buf_init((char *)q->fly, (unsigned)q->fly_len);
  q->req.data = e;
  int rc = uv_write(&q->req, (uv_stream_t *)&e->tcp, &b, 1, on_write);
  if (rc) {
    session_close(e->s);
    return;
  }
  q->writing = true;
}

static void resume_source(pv_session_t *s, end_t *dst) {
  end_t *src = other(s, dst);
  uint32_t low = cfg_of(s)->write_high_water / 2;
  if (src->paused && queued(dst) <= low) {
    src->paused = false;
    start_reading(src);
  }
}

static void on_write(uv_write_t *req, int status) {
  end_t *e = req->data;
  pv_session_t *s = e->s;
  outq_t *q = &e->out;
  q->writing = false;
  if (status < 0 || s->closing) {
    session_close(s);
    return;
  }
  /* Release the written buffer; the pending one becomes the next write. */
  free(q->fly);
  q->fly = NULL;
  q->fly_len = 0;
  if (q->pend_len) {
    start_write(e);
  } else {
    free(q->pend);
    q->pend = NULL;
    q->pend_cap = 0;
  }
  if (s->draining && e == &s->client && queued(e) == 0) {
    session_close(s);
    return;
  }
  resume_source(s, e);
}

static int append_pending(outq_t *q, const uint8_t *p, size_t len) {
  if (q->pend_len + len > q->pend_cap) {
    size_t cap = q->pend_cap ? q->pend_cap : 16384;
    while (cap < q->pend_len + len)
      cap *= 2;
    uint8_t *np = realloc(q->pend, cap);
    if (!np)
      return PV_ENOMEM;
    q->pend = np;
    q->pend_cap = cap;
  }
  memcpy(q->pend + q->pend_len, p, len);
  q->pend_len += len;
  return PV_OK;
}

/* Writes iov to dst: straight to the socket when its queue is empty, the
 * rest copied to the queue. Pauses the opposite end above high water. */
static void write_iovs(pv_session_t *s, end_t *dst, uv_buf_t *iov,
                       unsigned n) {
  if (!dst->open || s->closing || n == 0)
    return;
  unsigned i = 0;
  if (!dst->out.writing && dst->out.pend_len == 0) {
    int w = uv_try_write((uv_stream_t *)&dst->tcp, iov, n);
    if (w == UV_EAGAIN || w == UV_ENOSYS)
      w = 0;
    if (w < 0) {
      session_close(s);
      return;
    }
    size_t done = (size_t)w;
    while (i < n && done >= iov[i].len)
      done -= iov[i++].len;
    if (i < n) {
      iov[i].base += done;
      iov[i].len -= done;
    }
  }
  for (; i < n; i++)
    if (append_pending(&dst->out, (uint8_t *)iov[i].base, iov[i].len)) {
      session_close(s);
      return;
    }
  if (!dst->out.writing && dst->out.pend_len)
    start_write(dst);
  end_t *src = other(s, dst);
  if (!s->closing && queued(dst) > cfg_of(s)->write_high_water &&
      !src->paused) {
    src->paused = true;
    if (src->reading) {
      uv_read_stop((uv_stream_t *)&src->tcp);
      src->reading = false;
    }
  }
}

/* ---- emitting -------------------------------------------------------- */

static void emit_flush(emit_t *e) {
  write_iovs(e->s, e->dst, e->iov, e->n);
  e->n = 0;
  e->s->w->scratch_len = 0;
}

static void emit_span(emit_t *e, const uint8_t *p, size_t len) {
  if (len == 0)
    return;
  if (e->n && (const uint8_t *)e->iov[e->n - 1].base + e->iov[e->n - 1].len ==
                  p) {
    e->iov[e->n - 1].len += len;
    return;
  }
  if (e->n == EMIT_IOV_MAX)
    emit_flush(e);
  e->iov[e->n++] = uv_buf_init((char *)p, (unsigned)len);
}

/* Scratch space for len bytes, valid until the next flush; NULL on OOM. */
static uint8_t *emit_reserve(emit_t *e, size_t len) {
  pv_worker_t *w = e->s->w;
  if (w->scratch_len + len > w->scratch_cap) {
    emit_flush(e);
    if (len > w->scratch_cap) {
      size_t cap = w->scratch_cap ? w->scratch_cap : 65536;
      while (cap < len)
        cap *= 2;
      uint8_t *np = realloc(w->scratch, cap);
      if (!np)
        return NULL;
      w->scratch = np;
      w->scratch_cap = cap;
    }
  }
  return w->scratch + w->scratch_len;
}

static void emit_commit(emit_t *e, size_t len) {
  pv_worker_t *w = e->s->w;
  emit_span(e, w->scratch + w->scratch_len, len);
  w->scratch_len += len;
}

static int emit_copy(emit_t *e, const void *p, size_t len) {
  uint8_t *dst = emit_reserve(e, len);
  if (!dst)
    return PV_ENOMEM;
  memcpy(dst, p, len);
  emit_commit(e, len);
  return PV_OK;
}

/* Sends an ErrorResponse to the client, then closes once it is written. */
static void fail_session(pv_session_t *s, const char *severity,
                         const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void fail_session(pv_session_t *s, const char *severity,
                         const char *sqlstate, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  pv_log(PV_LOG_WARN, "session %llu: %s (%s)", (unsigned long long)s->id, msg,
         sqlstate);
  if (s->client.open && !s->closing) {
    uint8_t buf[700];
    int n = pv_be_error_encode(buf, sizeof buf, severity, sqlstate, msg);
    if (n > 0) {
      uv_buf_t b = uv_buf_init((char *)buf, (unsigned)n);
      write_iovs(s, &s->client, &b, 1);
    }
  }
  session_drain(s);
}

/* ---- closing --------------------------------------------------------- */

static void release_in(pv_session_t *s, end_t *e) {
  if (!e->in)
    return;
  if (e->in_cap == cfg_of(s)->read_buffer_bytes)
    pv_worker_buf_put(s->w, e->in);
  else
    free(e->in);
  e->in = NULL;
  e->in_len = e->in_cap = 0;
}

static void session_free(pv_session_t *s) {
  pv_worker_t *w = s->w;
  end_t *ends[2] = {&s->client, &s->server};
  for (int i = 0; i < 2; i++) {
    release_in(s, ends[i]);
    free(ends[i]->out.pend);
    free(ends[i]->out.fly);
  }
  free(s->startup);
  pv_tracker_free(s->tracker);
  pv_policy_release(s->policy);
  for (unsigned i = 0; i < s->copy_len; i++)
    pv_plan_actions_free(s->copies[(s->copy_head + i) % COPY_PLANS_MAX].ra);
  pv_plan_actions_free(s->cur_copy.ra);
  if (s->prev)
    s->prev->next = s->next;
  else
    w->sessions = s->next;
  if (s->next)
    s->next->prev = s->prev;
  atomic_fetch_sub(&w->shared->clients, 1);
  pv_worker_session_gone(w, s);
  free(s);
}

static void on_handle_closed(uv_handle_t *h) {
  pv_session_t *s = h->data;
  if (h == (uv_handle_t *)s->db_async) {
    free(s->db_async);
    s->db_async = NULL;
  }
  if (--s->open_handles == 0)
    session_free(s);
}

static void close_handle(pv_session_t *s, uv_handle_t *h) {
  if (!uv_is_closing(h)) {
    h->data = s;
    uv_close(h, on_handle_closed);
  }
}

static void session_close(pv_session_t *s) {
  if (s->closing)
    return;
  s->closing = true;
  if (s->client.open)
    close_handle(s, (uv_handle_t *)&s->client.tcp);
  if (s->server.open)
    close_handle(s, (uv_handle_t *)&s->server.tcp);
  if (s->timer_open)
    close_handle(s, (uv_handle_t *)&s->timer);
  if (s->db_async) {
    pv_control_cancel(s->w->shared->control, s->db_async);
    close_handle(s, (uv_handle_t *)s->db_async);
  }
}

/* Stops reading and closes once the client has received what is queued. */
static void session_drain(pv_session_t *s) {
  if (s->closing)
    return;
  s->draining = true;
  end_t *ends[2] = {&s->client, &s->server};
  for (int i = 0; i < 2; i++)
    if (ends[i]->reading) {
      uv_read_stop((uv_stream_t *)&ends[i]->tcp);
      ends[i]->reading = false;
    }
  if (queued(&s->client) == 0)
    session_close(s);
}

void pv_session_kill(pv_session_t *s) { session_close(s); }
pv_session_t *pv_session_next(pv_session_t *s) { return s->next; }

/* ---- reading --------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  end_t *e = h->data;
  pv_session_t *s = e->s;
  (void)suggested;
  if (!e->in) {
    e->in = pv_worker_buf_get(s->w);
    e->in_cap = e->in ? cfg_of(s)->read_buffer_bytes : 0;
  } else if (e->in_len == e->in_cap) {
    /* pump() grows the buffer to the size of a partial message; reaching
     * here means a message is still incomplete at that size: grow. */
    uint64_t cap = (uint64_t)e->in_cap * 2;
    uint64_t lim = (uint64_t)cfg_of(s)->max_message_bytes + PV_FRAME_HEADER;
    if (cap > lim)
      cap = lim > e->in_cap ? lim : e->in_cap;
    uint8_t *np = cap > e->in_cap ? realloc(e->in, cap) : NULL;
    if (np) {
      e->in = np;
      e->in_cap = (uint32_t)cap;
    }
  }
  if (!e->in || e->in_len == e->in_cap) {
    *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
    return;
  }
  *buf = uv_buf_init((char *)e->in + e->in_len, e->in_cap - e->in_len);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  end_t *e = stream->data;
  pv_session_t *s = e->s;
  (void)buf;
  if (nread < 0) {
    if (e == &s->server && s->state != S_CANCEL && nread == UV_EOF)
      session_drain(s); /* deliver what the server sent, then close */
    else
      session_close(s);
    return;
  }
  e->in_len += (uint32_t)nread;
  if (nread > 0)
    pump(s, e);
  if (!s->closing && e->in_len == 0)
    release_in(s, e);
}

static void start_reading(end_t *e) {
  if (e->reading || e->paused || e->held || !e->open || e->s->closing ||
      e->s->draining)
    return;
  if (uv_read_start((uv_stream_t *)&e->tcp, on_alloc, on_read) == 0)
    e->reading = true;
}

static void stop_reading(end_t *e) {
  if (e->reading) {
    uv_read_stop((uv_stream_t *)&e->tcp);
    e->reading = false;
  }
}

/* ---- upstream connection --------------------------------------------- */

static void on_connect_timeout(uv_timer_t *t) {
  pv_session_t *s = t->data;
  s->timed_out = true;
  /* Closing the socket cancels the connect: on_connect sees UV_ECANCELED. */
  s->server.open = false;
  close_handle(s, (uv_handle_t *)&s->server.tcp);
}

static void on_connect(uv_connect_t *req, int status) {
  pv_session_t *s = req->data;
  if (s->timer_open)
    uv_timer_stop(&s->timer);
  if (s->closing)
    return;
  const pv_config_t *cfg = cfg_of(s);
  if (status < 0) {
    if (s->state == S_CANCEL) {
      session_close(s);
      return;
    }
    fail_session(s, "FATAL", "08006",
                 "pgveil: cannot connect to upstream %s:%u: %s",
                 cfg->upstream_host, cfg->upstream_port,
                 s->timed_out ? "connection timed out" : uv_strerror(status));
    return;
  }
  uv_tcp_nodelay(&s->server.tcp, 1);
  uv_buf_t b = uv_buf_init((char *)s->startup, (unsigned)s->startup_len);
  write_iovs(s, &s->server, &b, 1);
  free(s->startup);
  s->startup = NULL;
  if (s->state == S_CANCEL) {
    /* The server closes after reading a CancelRequest; so do we. */
    session_drain(s);
    if (!s->closing && queued(&s->server) == 0)
      session_close(s);
    return;
  }
  s->state = S_AUTH;
  start_reading(&s->server);
  start_reading(&s->client);
  if (s->client.in_len)
    pump(s, &s->client);
}

static void connect_upstream(pv_session_t *s) {
  pv_worker_t *w = s->w;
  int rc = uv_tcp_init(&w->loop, &s->server.tcp);
  if (rc) {
    fail_session(s, "FATAL", "53000", "pgveil: %s", uv_strerror(rc));
    return;
  }
  s->server.open = true;
  s->server.tcp.data = &s->server;
  s->open_handles++;
  if (uv_timer_init(&w->loop, &s->timer) == 0) {
    s->timer_open = true;
    s->open_handles++;
    s->timer.data = s;
    uv_timer_start(&s->timer, on_connect_timeout,
                   (uint64_t)(cfg_of(s)->connect_timeout * 1000.0), 0);
  }
  s->connect_req.data = s;
  rc = uv_tcp_connect(&s->connect_req, &s->server.tcp,
                      (const struct sockaddr *)&w->shared->upstream,
                      on_connect);
  if (rc)
    on_connect(&s->connect_req, rc);
}

/* ---- startup --------------------------------------------------------- */

/* Remembers role, database and a declared purpose (startup parameter
 * pgveil.purpose, or -c pgveil.purpose=... in options; the parameter wins).
 * Returns PV_OK or PV_EINVAL for a value that does not fit. */
static int note_startup_param(pv_session_t *s, const pv_param_t *p) {
  const char *k = p->key;
  char *dst = NULL;
  size_t cap = 0;
  if (strcmp(k, "user") == 0)
    dst = s->role, cap = sizeof s->role;
  else if (strcmp(k, "database") == 0)
    dst = s->dbname, cap = sizeof s->dbname;
  else if (strcmp(k, "pgveil.purpose") == 0)
    dst = s->purpose_name, cap = sizeof s->purpose_name;
  if (dst) {
    if (strlen(p->val) >= cap)
      return PV_EINVAL;
    strcpy(dst, p->val);
  } else if (strcmp(k, "options") == 0 && !s->purpose_name[0]) {
    int rc = pv_options_find(p->val, "pgveil.purpose", s->purpose_name,
                             sizeof s->purpose_name);
    if (rc < 0)
      return PV_EINVAL;
  }
  return PV_OK;
}

/* Builds the StartupMessage for the upstream: the client's parameters
 * without pgveil's own, except pgveil.purpose, which the server keeps as a
 * custom setting (current_setting('pgveil.purpose') for RLS, triggers). */
static int prepare_startup(pv_session_t *s, const pv_startup_t *st) {
  pv_param_t kept[STARTUP_PARAMS_MAX];
  size_t nkept = 0;
  for (size_t i = 0; i < st->nparams; i++)
    if (note_startup_param(s, &st->params[i]) != PV_OK)
      return PV_EINVAL;
  for (size_t i = 0; i < st->nparams; i++) {
    if (strncmp(st->params[i].key, "pgveil.", 7) == 0 &&
        strcmp(st->params[i].key, "pgveil.purpose") != 0)
      continue;
    kept[nkept++] = st->params[i];
  }
  if (!s->dbname[0])
    strcpy(s->dbname, s->role); /* PostgreSQL's default database */
  size_t cap = STARTUP_MAX + 16;
  s->startup = malloc(cap);
  if (!s->startup)
    return PV_ENOMEM;
  int n = pv_startup_encode(s->startup, cap, st->version, kept, nkept);
  if (n < 0)
    return n;
  s->startup_len = (size_t)n;
  return PV_OK;
}

static void consume_in(end_t *e, size_t n) {
  memmove(e->in, e->in + n, e->in_len - n);
  e->in_len -= (uint32_t)n;
}

static void write_const(pv_session_t *s, end_t *dst, const char *p,
                        size_t len) {
  uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
  write_iovs(s, dst, &b, 1);
}

/* Handles startup-phase packets; returns when it needs more input or the
 * session moved on. */
static void handle_startup(pv_session_t *s) {
  end_t *c = &s->client;
  while (s->state == S_STARTUP && !s->closing && !s->draining) {
    pv_param_t params[STARTUP_PARAMS_MAX];
    pv_startup_t st;
    int n = pv_startup_parse(c->in, c->in_len, STARTUP_MAX, params,
                             STARTUP_PARAMS_MAX, &st);
    if (n == PV_EAGAIN)
      return;
    if (n < 0) {
      fail_session(s, "FATAL", "08P01", "pgveil: invalid startup packet: %s",
                   pv_strerror(n));
      return;
    }
    switch (st.kind) {
    case PV_STARTUP_SSL:
    case PV_STARTUP_GSSENC:
      /* No TLS or GSS encryption on the client leg (yet): decline. */
      consume_in(c, (size_t)n);
      write_const(s, c, "N", 1);
      continue;
    case PV_STARTUP_CANCEL:
      s->startup = malloc((size_t)n);
      if (!s->startup) {
        session_close(s);
        return;
      }
      memcpy(s->startup, c->in, (size_t)n);
      s->startup_len = (size_t)n;
      consume_in(c, (size_t)n);
      s->state = S_CANCEL;
      stop_reading(c);
      connect_upstream(s);
      return;
    case PV_STARTUP_NORMAL:
      break;
    }
    if (s->over_limit) {
      fail_session(s, "FATAL", "53300",
                   "pgveil: sorry, too many clients already (--max-clients "
                   "%u)",
                   cfg_of(s)->max_clients);
      return;
    }
    int rc = prepare_startup(s, &st);
    consume_in(c, (size_t)n);
    if (rc) {
      fail_session(s, "FATAL", "08P01", "pgveil: cannot relay startup: %s",
                   pv_strerror(rc));
      return;
    }
    s->state = S_CONNECTING;
    stop_reading(c);
    connect_upstream(s);
  }
}

/* ---- the message pump ------------------------------------------------ */

enum { MSG_DONE = 0, MSG_HOLD = 1 }; /* handler results besides errors */

static int enter_ready(pv_session_t *s) {
  const pv_config_t *cfg = cfg_of(s);
  pv_tracker_limits_t lim = {
      .max_statements = cfg->max_statements,
      .max_portals = cfg->max_portals,
      .max_pending = cfg->max_pending,
      .max_columns = 1664, /* PostgreSQL's MaxTupleAttributeNumber */
  };
  s->tracker = pv_tracker_new(&lim);
  if (!s->tracker)
    return PV_ENOMEM;
  s->state = S_READY;
  if (s->client.held) {
    s->client.held = false;
    start_reading(&s->client);
  }
  return PV_OK;
}

/* ---- policy ---------------------------------------------------------- */

enum { POLICY_OK = 0, POLICY_WAIT = 1 };

static void on_db_ready(uv_async_t *a) {
  pv_session_t *s = a->data;
  pv_control_cancel(s->w->shared->control, a);
  close_handle(s, (uv_handle_t *)a);
  if (s->closing)
    return;
  s->db_waited = true;
  s->server.held = false;
  start_reading(&s->server);
  pump(s, &s->server);
}

/* Asks the control thread to resolve this session's database. */
static int wait_for_db(pv_session_t *s) {
  s->db_async = malloc(sizeof *s->db_async);
  if (!s->db_async || uv_async_init(&s->w->loop, s->db_async, on_db_ready)) {
    free(s->db_async);
    s->db_async = NULL;
    return PV_ENOMEM;
  }
  s->db_async->data = s;
  s->open_handles++;
  int rc = pv_control_request_db(s->w->shared->control, s->dbname,
                                 s->db_async);
  if (rc) {
    close_handle(s, (uv_handle_t *)s->db_async);
    return rc;
  }
  s->server.held = true;
  stop_reading(&s->server);
  return POLICY_WAIT;
}

/* Authorizes the declared purpose, or picks the role's default. */
static bool settle_purpose(pv_session_t *s) {
  const pv_rules_t *rules = pv_policy_rules(s->policy);
  s->local_saved = NO_LOCAL;
  if (!s->purpose_name[0]) {
    s->purpose = pv_rules_default_purpose(rules, s->role);
    s->startup_purpose = s->purpose;
    s->restricted = pv_guard_purpose_restricted(rules, s->purpose);
    return true;
  }
  s->purpose = pv_rules_purpose_find(rules, s->purpose_name);
  s->startup_purpose = s->purpose;
  s->restricted = pv_guard_purpose_restricted(rules, s->purpose);
  if (s->purpose != PV_PURPOSE_UNKNOWN &&
      pv_rules_role_may_declare(rules, s->role, s->purpose))
    return true;
  fail_session(s, "FATAL", "42501",
               "pgveil: role \"%s\" may not declare purpose \"%s\"", s->role,
               s->purpose_name);
  return false;
}

/* At the first ReadyForQuery: takes the policy, settles the purpose and
 * this database's resolution. Returns POLICY_OK, POLICY_WAIT (the session
 * is parked until the control thread answers) or an error after failing
 * the session. */
static int attach_policy(pv_session_t *s) {
  if (!s->policy)
    s->policy = pv_policy_acquire(s->w->shared->policy);
  if (!s->policy) {
    fail_session(s, "FATAL", "08004", "pgveil: no rules are loaded");
    return PV_ESTATE;
  }
  if (!settle_purpose(s))
    return PV_EDENIED;
  s->db = pv_policy_db(s->policy, s->dbname);
  if ((!s->db || pv_policy_db_transient(s->db)) && !s->db_waited) {
    int rc = wait_for_db(s);
    if (rc == POLICY_WAIT)
      return rc;
  }
  /* The answer may be in a newer snapshot than the one we hold. */
  pv_policy_release(s->policy);
  s->policy = pv_policy_acquire(s->w->shared->policy);
  s->db = s->policy ? pv_policy_db(s->policy, s->dbname) : NULL;
  const char *err = s->db ? pv_policy_db_error(s->db) : "not resolved";
  if (!s->db || err) {
    fail_session(s, "FATAL", "08004",
                 "pgveil: database \"%s\" cannot be served: %s", s->dbname,
                 err ? err : "not resolved");
    return PV_ESTATE;
  }
  pv_log(PV_LOG_INFO, "session %llu: role=%s database=%s purpose=%s",
         (unsigned long long)s->id, s->role, s->dbname,
         s->purpose >= 0 ? s->purpose_name[0]
                               ? s->purpose_name
                               : pv_policy_rules(s->policy)
                                     ->purposes[s->purpose]
                                     .name
                         : "none");
  return POLICY_OK;
}

/* Between statements (ReadyForQuery): picks up a newer snapshot. A
 * database whose resolution broke (DDL) closes the session: fail closed. */
static int refresh_policy(pv_session_t *s) {
  pv_policy_t *p = pv_policy_acquire(s->w->shared->policy);
  if (p == s->policy) {
    pv_policy_release(p);
    return PV_OK;
  }
  pv_policy_release(s->policy);
  s->policy = p;
  s->db = p ? pv_policy_db(p, s->dbname) : NULL;
  if (!s->db || pv_policy_db_error(s->db))
    return PV_ESTATE;
  return PV_OK;
}

static void plan_ext_free(void *ext) {
  plan_ext_t *pe = ext;
  pv_plan_actions_free(pe->ra);
  free(pe);
}

/* The plan's actions under the current snapshot, built once per plan and
 * again only when the snapshot changes. NULL on OOM. */
static const pv_row_actions_t *plan_actions(pv_session_t *s,
                                            const pv_plan_t *cplan) {
  pv_plan_t *plan = (pv_plan_t *)cplan; /* ext is the rewriter's slot */
  uint64_t gen = pv_policy_generation(s->policy);
  plan_ext_t *pe = plan->ext;
  if (pe && pe->generation == gen)
    return pe->ra;
  pv_row_actions_t *ra = NULL;
  if (pv_plan_actions_for_plan(plan, pv_policy_db_catalog(s->db), s->purpose,
                               pv_policy_key(s->policy, s->purpose),
                               &ra) != PV_OK)
    return NULL;
  if (!pe) {
    pe = malloc(sizeof *pe);
    if (!pe) {
      pv_plan_actions_free(ra);
      return NULL;
    }
    plan->ext = pe;
    plan->ext_free = plan_ext_free;
  } else {
    pv_plan_actions_free(pe->ra);
  }
  pe->generation = gen;
  pe->ra = ra;
  return ra;
}

/* Writes the rewritten form of a row-carrying message through rewrite(),
 * growing scratch to what it says it needs. */
typedef int (*rewrite_fn)(const void *ctx, const pv_msg_t *m, uint8_t *out,
                          size_t cap, size_t *needed);

static int emit_rewritten(emit_t *e, const pv_msg_t *m, size_t rawlen,
                          rewrite_fn fn, const void *ctx) {
  size_t need = rawlen;
  for (int attempt = 0; attempt < 2; attempt++) {
    uint8_t *out = emit_reserve(e, need);
    if (!out)
      return PV_ENOMEM;
    int n = fn(ctx, m, out, need, &need);
    if (n >= 0) {
      emit_commit(e, (size_t)n);
      return PV_OK;
    }
    if (n != PV_ELIMIT)
      return n;
  }
  return PV_ELIMIT;
}

static int tag_fn(const void *ctx, const pv_msg_t *m, uint8_t *out,
                  size_t cap, size_t *needed) {
  return pv_rewrite_tag_datarow(ctx, m, out, cap, needed);
}

static int mask_fn(const void *ctx, const pv_msg_t *m, uint8_t *out,
                   size_t cap, size_t *needed) {
  /* Consent lookups arrive with the consent store; until then no subject
   * has consented (fail closed). */
  return pv_rewrite_datarow(ctx, NULL, m, out, cap, needed);
}

static int rewrite_datarow(pv_session_t *s, emit_t *e, const pv_msg_t *m,
                           const uint8_t *raw, size_t rawlen,
                           const pv_be_effect_t *eff) {
  bool tag = cfg_of(s)->debug_tag_rows;
  if (!tag && !s->policy) {
    emit_span(e, raw, rawlen); /* --passthrough */
    return PV_OK;
  }
  if (!eff->plan)
    return PV_ESTATE; /* rows we cannot attribute: fail closed */
  if (tag)
    return emit_rewritten(e, m, rawlen, tag_fn, eff->plan);
  const pv_row_actions_t *ra = plan_actions(s, eff->plan);
  if (!ra)
    return PV_ENOMEM;
  if (ra->nacted == 0) {
    emit_span(e, raw, rawlen);
    return PV_OK;
  }
  return emit_rewritten(e, m, rawlen, mask_fn, ra);
}

/* The refusal whose token the server's syntax error names, or NULL. */
static const char *refusal_of(pv_session_t *s, const pv_msg_t *m) {
  char state[6];
  if (pv_be_error_sqlstate(m, state) != PV_OK || strcmp(state, "42601") != 0)
    return NULL;
  char prefix[32];
  int plen = snprintf(prefix, sizeof prefix, "pgveil_refused_%08x_", s->nonce);
  pv_be_errfield_iter_t it;
  pv_be_errfield_begin(m, &it);
  uint8_t code;
  const char *v;
  while (pv_be_errfield_next(&it, &code, &v) == 1) {
    const char *at = code == 'M' ? strstr(v, prefix) : NULL;
    if (!at)
      continue;
    unsigned long n = strtoul(at + plen, NULL, 10);
    if (n < s->nrefused && s->nrefused - n <= REFUSALS)
      return s->refusal[n % REFUSALS];
    return "pgveil: statement refused by policy";
  }
  return NULL;
}

static int scrub_fn(const void *ctx, const pv_msg_t *m, uint8_t *out,
                    size_t cap, size_t *needed) {
  (void)ctx;
  *needed = m->len + 160;
  return pv_scrub_error(m, out, cap);
}

/* ErrorResponse/NoticeResponse: a refusal's placeholder error becomes the
 * refusal; for restricted sessions texts that may echo data are scrubbed. */
static int rewrite_error(pv_session_t *s, emit_t *e, const pv_msg_t *m,
                         const uint8_t *raw, size_t rawlen) {
  const char *why = m->type == PV_BE_ERROR ? refusal_of(s, m) : NULL;
  if (why) {
    uint8_t *out = emit_reserve(e, REFUSAL_MAX + 64);
    if (!out)
      return PV_ENOMEM;
    int n = pv_be_error_encode(out, REFUSAL_MAX + 64, "ERROR", "42501", why);
    if (n < 0)
      return n;
    emit_commit(e, (size_t)n);
    return PV_OK;
  }
  if (!s->restricted) {
    emit_span(e, raw, rawlen);
    return PV_OK;
  }
  return emit_rewritten(e, m, rawlen + 160, scrub_fn, NULL);
}

/* CopyOutResponse: the next queued plan of the current Query, if any. */
static void begin_copy_out(pv_session_t *s) {
  pv_plan_actions_free(s->cur_copy.ra);
  memset(&s->cur_copy, 0, sizeof s->cur_copy);
  s->copy_active = true;
  if (s->copy_len &&
      s->copies[s->copy_head].unit == s->units_done + 1) {
    s->cur_copy = s->copies[s->copy_head];
    s->copy_head = (s->copy_head + 1) % COPY_PLANS_MAX;
    s->copy_len--;
  }
}

typedef struct {
  const pv_copy_opts_t *opts;
  const pv_row_actions_t *ra;
  uint8_t *tmp;
  size_t tmpcap;
} copy_ctx_t;

static int copy_fn(const void *ctx, const pv_msg_t *m, uint8_t *out,
                   size_t cap, size_t *needed) {
  const copy_ctx_t *c = ctx;
  if (cap < PV_FRAME_HEADER) {
    *needed = PV_FRAME_HEADER + 2 * (size_t)m->len + 256;
    return PV_ELIMIT;
  }
  int n = pv_copy_rewrite_row(c->ra, NULL, c->opts, m->body, m->len,
                              out + PV_FRAME_HEADER, cap - PV_FRAME_HEADER,
                              needed, c->tmp, c->tmpcap);
  *needed += PV_FRAME_HEADER;
  if (n < 0)
    return n;
  out[0] = PV_BE_COPY_DATA;
  pv_put_u32(out + 1, (uint32_t)n + 4);
  return n + PV_FRAME_HEADER;
}

/* One CopyData row of a COPY TO STDOUT. */
static int rewrite_copy(pv_session_t *s, emit_t *e, const pv_msg_t *m,
                        const uint8_t *raw, size_t rawlen,
                        const pv_be_effect_t *eff) {
  copy_plan_t *cp = &s->cur_copy;
  if (!s->policy || !cp->ra || cp->ra->nacted == 0) {
    emit_span(e, raw, rawlen);
    return PV_OK;
  }
  if (eff->copy_format != 0)
    return PV_ESTATE; /* binary COPY of protected data: refused earlier */
  if (cp->header) {
    cp->header = false;
    emit_span(e, raw, rawlen);
    return PV_OK;
  }
  uint8_t stack[4096], *tmp = m->len <= sizeof stack ? stack : malloc(m->len);
  if (!tmp)
    return PV_ENOMEM;
  copy_ctx_t ctx = {&cp->opts, cp->ra, tmp, m->len};
  int rc = emit_rewritten(e, m, 2 * rawlen + 256, copy_fn, &ctx);
  if (tmp != stack)
    free(tmp); /* only rows over 4 KiB pay this */
  return rc;
}

/* ReadyForQuery: a Query/Sync finished; SET LOCAL ends with the
 * transaction; queued COPY plans of finished Queries are dropped. */
static int end_unit(pv_session_t *s, const pv_msg_t *m) {
  s->units_done++;
  s->copy_active = false;
  while (s->copy_len && s->copies[s->copy_head].unit <= s->units_done) {
    pv_plan_actions_free(s->copies[s->copy_head].ra);
    s->copy_head = (s->copy_head + 1) % COPY_PLANS_MAX;
    s->copy_len--;
  }
  if (!s->policy)
    return PV_OK;
  uint8_t status = 'I';
  if (pv_be_ready_decode(m, &status) == PV_OK && status == 'I' &&
      s->local_saved != NO_LOCAL) {
    s->purpose = s->local_saved;
    s->local_saved = NO_LOCAL;
    s->restricted =
        pv_guard_purpose_restricted(pv_policy_rules(s->policy), s->purpose);
  }
  return refresh_policy(s);
}

static int on_server_msg(pv_session_t *s, emit_t *e, const pv_msg_t *m,
                         const uint8_t *raw, size_t rawlen) {
  if (s->state == S_AUTH) {
    if (m->type == PV_BE_READY && s->w->shared->policy) {
      int rc = attach_policy(s);
      if (rc)
        return MSG_HOLD; /* parked, or the session is failing */
    }
    emit_span(e, raw, rawlen);
    if (m->type == PV_BE_READY)
      return enter_ready(s);
    return PV_OK;
  }
  pv_be_effect_t eff;
  int rc = pv_tracker_backend(s->tracker, m, &eff);
  if (rc)
    return rc;
  if (eff.swallow)
    return PV_OK;
  switch (m->type) {
  case PV_BE_DATA_ROW:
    if (eff.rows == PV_ROWS_DATAROW)
      return rewrite_datarow(s, e, m, raw, rawlen, &eff);
    break;
  case PV_BE_COPY_OUT:
    begin_copy_out(s);
    break;
  case PV_BE_COPY_DATA:
    if (eff.rows == PV_ROWS_COPY_OUT && s->copy_active)
      return rewrite_copy(s, e, m, raw, rawlen, &eff);
    break;
  case PV_BE_COPY_DONE:
    s->copy_active = false;
    break;
  case PV_BE_ERROR:
  case PV_BE_NOTICE:
    if (s->policy)
      return rewrite_error(s, e, m, raw, rawlen);
    break;
  case PV_BE_READY:
    if (end_unit(s, m) != PV_OK)
      return PV_ESTATE;
    break;
  default:
    break;
  }
  emit_span(e, raw, rawlen);
  return PV_OK;
}

/* ---- guard ------------------------------------------------------------- */

/* Runs the guard over sql (NUL-terminated): OUT *res NULL when the pre-scan
 * shows it cannot touch protected data. The result lives in the worker's
 * cache until the next analysis. Returns PV_OK or an analysis error. */
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
  if (!w->guard_cache && !(w->guard_cache = pv_guard_cache_new(GUARD_CACHE_SLOTS)))
    return PV_ENOMEM;
  uint64_t key = pv_guard_cache_key(sql, len, s->purpose, rules->fingerprint,
                                    pv_policy_generation(s->policy), sp, 2);
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
  pv_guard_cache_put(w->guard_cache, key, r);
  *res = r;
  return PV_OK;
}

/* Replaces a refused Query or Parse with one whose only effect is a syntax
 * error naming a token; the server answers it in order (transaction state
 * stays exact) and on_server_msg swaps that error for the refusal. OUT:
 * *repl, the replacement message in scratch. */
static int refuse_msg(pv_session_t *s, emit_t *e, const pv_msg_t *m,
                      const char *why, pv_msg_t *repl, size_t *repl_len) {
  uint32_t n = s->nrefused++;
  snprintf(s->refusal[n % REFUSALS], REFUSAL_MAX, "%s", why);
  char token[48];
  int tlen = snprintf(token, sizeof token, "pgveil_refused_%08x_%u", s->nonce,
                      n);
  pv_fe_parse_t p = {.stmt = "", .nparam_types = 0};
  if (m->type == PV_FE_PARSE && pv_fe_parse_decode(m, &p) != PV_OK)
    return PV_EPROTO;
  size_t namelen = m->type == PV_FE_PARSE ? strlen(p.stmt) + 1 : 0;
  size_t tail = m->type == PV_FE_PARSE ? 2 + 4u * p.nparam_types : 0;
  size_t total = PV_FRAME_HEADER + namelen + (size_t)tlen + 1 + tail;
  uint8_t *out = emit_reserve(e, total);
  if (!out)
    return PV_ENOMEM;
  uint8_t *q = out + PV_FRAME_HEADER;
  memcpy(q, p.stmt, namelen);
  q += namelen;
  memcpy(q, token, (size_t)tlen + 1);
  q += tlen + 1;
  if (tail) {
    pv_put_u16(q, p.nparam_types);
    memcpy(q + 2, p.param_types, 4u * p.nparam_types);
  }
  out[0] = m->type;
  pv_put_u32(out + 1, (uint32_t)(total - 1));
  *repl = (pv_msg_t){.type = m->type, .len = (uint32_t)(total - 5),
                     .body = out + PV_FRAME_HEADER};
  *repl_len = total;
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

/* Finds the catalog column (schema.table.column) of this database. */
static const pv_catalog_col_t *find_column(const pv_catalog_t *cat,
                                           const char *schema,
                                           const char *table,
                                           const char *column) {
  for (size_t i = 0; i < pv_catalog_nrelations(cat); i++) {
    const pv_catalog_rel_t *rel = pv_catalog_relation_at(cat, i);
    if (rel->child || strcmp(rel->table->schema, schema) != 0 ||
        strcmp(rel->table->name, table) != 0)
      continue;
    for (int16_t a = 1; a <= 1600; a++) {
      const pv_catalog_col_t *c = pv_catalog_column(cat, rel->table_oid, a);
      if (c && strcmp(c->rule->name, column) == 0)
        return c;
    }
    return NULL;
  }
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
        sch && tab && col ? find_column(cat, sch, tab, col) : NULL;
    cols[i] = c ? (pv_result_col_t){c->table_oid, c->attnum, c->type_oid,
                                    c->typmod, 0}
                : (pv_result_col_t){0, 0, 0, -1, 0};
  }
  copy_plan_t *cpl =
      &s->copies[(s->copy_head + s->copy_len) % COPY_PLANS_MAX];
  memset(cpl, 0, sizeof *cpl);
  if (pv_plan_actions_build(cols, (uint16_t)n, cat, s->purpose,
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
  const pv_guard_result_t *res = NULL;
  int rc = guard_analyze(s, sql, len, &res);
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
    const char *r = apply_stmt(s, &res->stmts[i], m->type == PV_FE_PARSE, why,
                               sizeof why);
    if (r) {
      while (s->copy_len > copies_before) /* nothing of it will run */
        pv_plan_actions_free(
            s->copies[(s->copy_head + --s->copy_len) % COPY_PLANS_MAX].ra);
      return refuse_msg(s, e, m, r, repl, repl_len);
    }
  }
  return PV_OK;
}

static int on_client_msg(pv_session_t *s, emit_t *e, const pv_msg_t *m,
                         const uint8_t *raw, size_t rawlen) {
  if (s->state == S_AUTH) {
    if (m->type != PV_FE_PASSWORD) {
      /* A query pipelined before ReadyForQuery: hold it until the session
       * is tracked, so nothing passes unaccounted. */
      s->client.held = true;
      stop_reading(&s->client);
      return MSG_HOLD;
    }
    emit_span(e, raw, rawlen);
    return PV_OK;
  }
  pv_msg_t repl = {0};
  size_t repl_len = 0;
  if (s->policy && (m->type == PV_FE_QUERY || m->type == PV_FE_PARSE)) {
    int rc = guard_message(s, e, m, &repl, &repl_len);
    if (rc)
      return rc;
  }
  if (s->policy && m->type == PV_FE_FUNCTION_CALL && s->restricted)
    return PV_EDENIED;
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
    emit_span(e, (const uint8_t *)repl.body - PV_FRAME_HEADER, repl_len);
    return PV_OK;
  }
  if (eff.inject_len && (rc = emit_copy(e, eff.inject, eff.inject_len)))
    return rc;
  emit_span(e, raw, rawlen);
  return PV_OK;
}

/* True for messages forwarded as their bytes arrive instead of whole:
 * COPY data from the client, which pgveil never inspects. */
static bool streamable(const pv_session_t *s, const end_t *src, uint8_t type) {
  return src == &s->client && s->state == S_READY && type == PV_FE_COPY_DATA;
}

static void report_error(pv_session_t *s, end_t *src, int rc,
                         const uint8_t *at) {
  bool from_client = src == &s->client;
  if (rc == PV_ETOOBIG) {
    fail_session(s, "FATAL", "54000",
                 "pgveil: %s message of type '%c' is %u bytes, above "
                 "--max-message-bytes (%u)",
                 from_client ? "client" : "server", at[0],
                 pv_get_u32(at + 1) - 4, cfg_of(s)->max_message_bytes);
  } else if (rc == PV_EDENIED) {
    fail_session(s, "FATAL", "42501",
                 "pgveil: the fast-path function call interface is refused "
                 "for sessions that see protected data");
  } else if (rc == PV_ESTATE) {
    fail_session(s, "FATAL", "XX000",
                 "pgveil: a result row could not be matched to its "
                 "statement; closing the session rather than risk a leak");
  } else {
    fail_session(s, "FATAL", from_client ? "08P01" : "XX000",
                 "pgveil: %s sent an invalid protocol message: %s",
                 from_client ? "client" : "server", pv_strerror(rc));
  }
}

/* Grows src->in so a partial message of `total` bytes fits. */
static int reserve_in(pv_session_t *s, end_t *src, size_t total) {
  if (total <= src->in_cap)
    return PV_OK;
  uint8_t *np;
  if (src->in_cap == cfg_of(s)->read_buffer_bytes) {
    np = malloc(total);
    if (np) {
      memcpy(np, src->in, src->in_len);
      pv_worker_buf_put(s->w, src->in);
    }
  } else {
    np = realloc(src->in, total);
  }
  if (!np)
    return PV_ENOMEM;
  src->in = np;
  src->in_cap = (uint32_t)total;
  return PV_OK;
}

static void pump_messages(pv_session_t *s, end_t *src) {
  end_t *dst = other(s, src);
  emit_t e = {.s = s, .dst = dst, .n = 0};
  uint32_t max = cfg_of(s)->max_message_bytes;
  size_t pos = 0, want = 0;
  int rc = PV_OK;
  while (pos < src->in_len && !s->closing && !s->draining) {
    const uint8_t *p = src->in + pos;
    size_t avail = src->in_len - pos;
    if (src->stream_left) {
      size_t k = avail < src->stream_left ? avail : src->stream_left;
      emit_span(&e, p, k);
      src->stream_left -= (uint32_t)k;
      pos += k;
      continue;
    }
    pv_msg_t m;
    int n = pv_frame_parse(p, avail, max, &m);
    if (n == PV_EAGAIN) {
      if (avail >= PV_FRAME_HEADER && streamable(s, src, p[0])) {
        emit_span(&e, p, avail);
        src->stream_left = (uint32_t)(PV_FRAME_HEADER + m.len - avail);
        pos += avail;
        continue;
      }
      if (avail >= PV_FRAME_HEADER)
        want = PV_FRAME_HEADER + (size_t)m.len;
      break;
    }
    if (n < 0) {
      rc = n;
      break;
    }
    rc = src == &s->client ? on_client_msg(s, &e, &m, p, (size_t)n)
                           : on_server_msg(s, &e, &m, p, (size_t)n);
    if (rc == MSG_HOLD) {
      rc = PV_OK;
      break;
    }
    if (rc)
      break;
    pos += (size_t)n;
  }
  emit_flush(&e);
  if (rc && !s->closing) {
    report_error(s, src, rc, src->in + pos);
    return;
  }
  if (s->closing)
    return;
  consume_in(src, pos);
  if (want && reserve_in(s, src, want) != PV_OK)
    fail_session(s, "FATAL", "53200", "pgveil: out of memory");
}

static void pump(pv_session_t *s, end_t *src) {
  if (s->closing)
    return;
  if (src == &s->client && s->state == S_STARTUP) {
    handle_startup(s);
    return;
  }
  if (s->state == S_AUTH || s->state == S_READY) {
    pump_messages(s, src);
    /* A hold released by ReadyForQuery: process what the client sent. */
    if (src == &s->server && !s->closing && s->state == S_READY &&
        s->client.in_len && !s->client.held)
      pump_messages(s, &s->client);
  }
}

/* ---- accept ---------------------------------------------------------- */

void pv_session_accept(pv_worker_t *w) {
  pv_session_t *s = calloc(1, sizeof *s);
  if (!s)
    return;
  s->w = w;
  s->client.s = s;
  s->server.s = s;
  s->state = S_STARTUP;
  if (uv_tcp_init(&w->loop, &s->client.tcp) != 0) {
    free(s);
    return;
  }
  s->client.tcp.data = &s->client;
  s->client.open = true;
  s->open_handles = 1;
  s->id = atomic_fetch_add(&w->shared->sessions, 1) + 1;
  if (getrandom(&s->nonce, sizeof s->nonce, GRND_NONBLOCK) != sizeof s->nonce)
    s->nonce = (uint32_t)(s->id * 2654435761u) ^ (uint32_t)uv_hrtime();
  unsigned prev = atomic_fetch_add(&w->shared->clients, 1);
  s->over_limit = prev >= w->shared->cfg->max_clients;
  s->next = w->sessions;
  if (w->sessions)
    w->sessions->prev = s;
  w->sessions = s;
  w->nsessions++;
  if (uv_accept((uv_stream_t *)&w->listener, (uv_stream_t *)&s->client.tcp)) {
    session_close(s);
    return;
  }
  uv_tcp_nodelay(&s->client.tcp, 1);
  start_reading(&s->client);
}
