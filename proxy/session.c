/* Owns one client session's I/O: accept, startup and authentication relay,
 * upstream connect, CancelRequest forwarding, the message pump in both
 * directions, write queues with backpressure, and orderly close. What
 * happens to each message is decided in session_rows.c (server messages)
 * and session_guard.c (client messages); protocol logic lives in the pure
 * modules. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "pgveil/log.h"
#include "pgveil/metrics.h"
#include "pgveil/pg_msg_backend.h"
#include "pgveil/pg_msg_frontend.h"
#include "pgveil/pg_options.h"
#include "pgveil/tls.h"
#include "session_internal.h"

static void session_close(pv_session_t *s);
static void session_drain(pv_session_t *s);
static void consume_in(end_t *e, size_t n);

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
    pv_sess_start_reading(src);
    /* TLS may hold bytes read before the pause: the socket will not wake
     * us for them. */
    if (src->tls && pv_tls_has_input(src->tls))
      pv_sess_pump(s, src);
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

/* Writes iov to dst's socket as it is: straight to the socket when its
 * queue is empty, the rest copied to the queue. Pauses the opposite end
 * above high water. */
static void write_raw(pv_session_t *s, end_t *dst, uv_buf_t *iov, unsigned n) {
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

/* Sends the ciphertext TLS produced for e (handshake records, alerts,
 * encrypted messages, replies to post-handshake messages). */
static void flush_tls(pv_session_t *s, end_t *e) {
  size_t len;
  const uint8_t *p = pv_tls_out(e->tls, &len);
  if (len == 0)
    return;
  uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
  write_raw(s, e, &b, 1); /* copies what the socket does not take */
  pv_tls_out_done(e->tls);
}

/* Writes plaintext iov to dst, encrypting it on a TLS end. */
static void write_iovs(pv_session_t *s, end_t *dst, uv_buf_t *iov, unsigned n) {
  if (!dst->tls) {
    write_raw(s, dst, iov, n);
    return;
  }
  if (!dst->open || s->closing || n == 0)
    return;
  if (!pv_tls_established(dst->tls))
    return; /* nothing can be said before the handshake ends */
  for (unsigned i = 0; i < n; i++)
    if (pv_tls_write(dst->tls, (const uint8_t *)iov[i].base, iov[i].len)) {
      pv_log(PV_LOG_WARN, "session %llu: %s TLS: %s", (unsigned long long)s->id,
             dst == &s->client ? "client" : "upstream",
             pv_tls_conn_error(dst->tls));
      session_close(s);
      return;
    }
  flush_tls(s, dst);
}

/* ---- emitting -------------------------------------------------------- */

static void emit_flush(emit_t *e) {
  write_iovs(e->s, e->dst, e->iov, e->n);
  e->n = 0;
  e->s->w->scratch_len = 0;
}

void pv_sess_emit_span(emit_t *e, const uint8_t *p, size_t len) {
  if (len == 0)
    return;
  if (e->n &&
      (const uint8_t *)e->iov[e->n - 1].base + e->iov[e->n - 1].len == p) {
    e->iov[e->n - 1].len += len;
    return;
  }
  if (e->n == EMIT_IOV_MAX)
    emit_flush(e);
  e->iov[e->n++] = uv_buf_init((char *)p, (unsigned)len);
}

/* Scratch space for len bytes, valid until the next flush; NULL on OOM. */
uint8_t *pv_sess_emit_reserve(emit_t *e, size_t len) {
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

void pv_sess_emit_commit(emit_t *e, size_t len) {
  pv_worker_t *w = e->s->w;
  pv_sess_emit_span(e, w->scratch + w->scratch_len, len);
  w->scratch_len += len;
}

int pv_sess_emit_copy(emit_t *e, const void *p, size_t len) {
  uint8_t *dst = pv_sess_emit_reserve(e, len);
  if (!dst)
    return PV_ENOMEM;
  memcpy(dst, p, len);
  pv_sess_emit_commit(e, len);
  return PV_OK;
}

/* Sends an ErrorResponse to the client, then closes once it is written. */
void pv_sess_fail(pv_session_t *s, const char *severity, const char *sqlstate,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

void pv_sess_fail(pv_session_t *s, const char *severity, const char *sqlstate,
                  const char *fmt, ...) {
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
    pv_tls_conn_free(ends[i]->tls);
    if (ends[i]->cin)
      pv_worker_buf_put(w, ends[i]->cin);
  }
  free(s->startup);
  pv_tracker_free(s->tracker);
  pv_sess_audit_free(s); /* writes what is pending: before the policy */
  pv_policy_release(s->policy);
  pv_consent_release(s->consent);
  free(s->flags);
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

void pv_sess_close_handle(pv_session_t *s, uv_handle_t *h) {
  if (!uv_is_closing(h)) {
    h->data = s;
    uv_close(h, on_handle_closed);
  }
}

/* Best effort: a close_notify alert, if the socket takes it right now. */
static void tls_goodbye(end_t *e) {
  if (!e->tls || !e->open || !pv_tls_established(e->tls) || e->out.writing ||
      e->out.pend_len)
    return;
  pv_tls_shutdown(e->tls);
  size_t len;
  const uint8_t *p = pv_tls_out(e->tls, &len);
  uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
  if (len)
    (void)uv_try_write((uv_stream_t *)&e->tcp, &b, 1);
  pv_tls_out_done(e->tls);
}

static void session_close(pv_session_t *s) {
  if (s->closing)
    return;
  tls_goodbye(&s->client);
  tls_goodbye(&s->server);
  s->closing = true;
  if (s->client.open)
    pv_sess_close_handle(s, (uv_handle_t *)&s->client.tcp);
  if (s->server.open)
    pv_sess_close_handle(s, (uv_handle_t *)&s->server.tcp);
  if (s->timer_open)
    pv_sess_close_handle(s, (uv_handle_t *)&s->timer);
  if (s->db_async) {
    pv_control_cancel(s->w->shared->control, s->db_async);
    pv_sess_close_handle(s, (uv_handle_t *)s->db_async);
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

/* Makes room in e->in for more bytes; false when it cannot grow. */
static bool in_space(pv_session_t *s, end_t *e) {
  if (!e->in) {
    e->in = pv_worker_buf_get(s->w);
    e->in_cap = e->in ? cfg_of(s)->read_buffer_bytes : 0;
  } else if (e->in_len == e->in_cap) {
    /* pv_sess_pump() grows the buffer to the size of a partial message;
     * reaching here means a message is still incomplete at that size: grow. */
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
  return e->in && e->in_len < e->in_cap;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  end_t *e = h->data;
  pv_session_t *s = e->s;
  (void)suggested;
  if (e->tls) {
    /* Ciphertext: a worker buffer, handed back in on_read. */
    if (!e->cin)
      e->cin = pv_worker_buf_get(s->w);
    *buf = e->cin ? uv_buf_init((char *)e->cin, cfg_of(s)->read_buffer_bytes)
                  : uv_buf_init(NULL, 0);
    return;
  }
  if (!in_space(s, e)) {
    *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
    return;
  }
  *buf = uv_buf_init((char *)e->in + e->in_len, e->in_cap - e->in_len);
}

/* The end reached EOF (or close_notify): the server's last words still go
 * to the client; anything else ends the session. */
static void end_eof(pv_session_t *s, end_t *e) {
  if (e == &s->server && s->state != S_CANCEL)
    session_drain(s); /* deliver what the server sent, then close */
  else
    session_close(s);
}

static void upstream_tls_reply(pv_session_t *s);
static void tls_input(pv_session_t *s, end_t *e);

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  end_t *e = stream->data;
  pv_session_t *s = e->s;
  (void)buf;
  int fed = PV_OK;
  if (e->tls && e->cin) {
    if (nread > 0)
      fed = pv_tls_feed(e->tls, e->cin, (size_t)nread);
    pv_worker_buf_put(s->w, e->cin);
    e->cin = NULL;
  }
  if (nread < 0) {
    if (nread == UV_EOF)
      end_eof(s, e);
    else
      session_close(s);
    return;
  }
  if (fed != PV_OK) {
    session_close(s);
    return;
  }
  if (e->tls) {
    if (nread > 0)
      tls_input(s, e);
  } else {
    e->in_len += (uint32_t)nread;
    if (nread > 0 && e->tls_asked)
      upstream_tls_reply(s);
    else if (nread > 0)
      pv_sess_pump(s, e);
  }
  if (!s->closing && e->in_len == 0)
    release_in(s, e);
}

void pv_sess_start_reading(end_t *e) {
  if (e->reading || e->paused || e->held || !e->open || e->s->closing ||
      e->s->draining)
    return;
  if (uv_read_start((uv_stream_t *)&e->tcp, on_alloc, on_read) == 0)
    e->reading = true;
}

void pv_sess_stop_reading(end_t *e) {
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
  pv_sess_close_handle(s, (uv_handle_t *)&s->server.tcp);
}

static void upstream_ready(pv_session_t *s);

static void on_tls_timeout(uv_timer_t *t) {
  pv_session_t *s = t->data;
  const pv_config_t *cfg = cfg_of(s);
  pv_sess_fail(s, "FATAL", "08006", "pgveil: TLS with upstream %s:%u timed out",
               cfg->upstream_host, cfg->upstream_port);
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
    pv_sess_fail(s, "FATAL", "08006",
                 "pgveil: cannot connect to upstream %s:%u: %s",
                 cfg->upstream_host, cfg->upstream_port,
                 s->timed_out ? "connection timed out" : uv_strerror(status));
    return;
  }
  uv_tcp_nodelay(&s->server.tcp, 1);
  if (pv_tls_upstream_mode(s->w->shared->tls) != PV_UPSTREAM_TLS_DISABLE) {
    static const char ssl_request[8] = {0,          0,    0,   8, 0x04,
                                        (char)0xd2, 0x16, 0x2f}; /* 80877103 */
    uv_buf_t b = uv_buf_init((char *)ssl_request, sizeof ssl_request);
    write_raw(s, &s->server, &b, 1);
    s->server.tls_asked = true;
    pv_sess_start_reading(&s->server);
    /* The TLS negotiation gets its own --connect-timeout. */
    if (s->timer_open)
      uv_timer_start(&s->timer, on_tls_timeout,
                     (uint64_t)(cfg->connect_timeout * 1000.0), 0);
    return;
  }
  upstream_ready(s);
}

/* The upstream leg is up (TLS or not): send the startup packet (or the
 * CancelRequest) and start relaying. */
static void upstream_ready(pv_session_t *s) {
  if (s->timer_open)
    uv_timer_stop(&s->timer);
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
  pv_sess_start_reading(&s->server);
  pv_sess_start_reading(&s->client);
  if (s->client.in_len || (s->client.tls && pv_tls_has_input(s->client.tls)))
    pv_sess_pump(s, &s->client);
}

static const char *upstream_tls_name(const pv_session_t *s) {
  switch (cfg_of(s)->upstream_tls) {
  case PV_UPSTREAM_TLS_PREFER:
    return "prefer";
  case PV_UPSTREAM_TLS_REQUIRE:
    return "require";
  case PV_UPSTREAM_TLS_VERIFY_FULL:
    return "verify-full";
  default:
    return "disable";
  }
}

/* The server's one-byte answer to our SSLRequest. */
static void upstream_tls_reply(pv_session_t *s) {
  end_t *sv = &s->server;
  const pv_config_t *cfg = cfg_of(s);
  uint8_t r = sv->in[0];
  bool extra = sv->in_len > 1;
  sv->tls_asked = false;
  consume_in(sv, sv->in_len);
  if (r == 'S' && !extra) {
    sv->tls = pv_tls_conn_new(s->w->shared->tls, PV_TLS_CONNECT);
    if (!sv->tls) {
      pv_sess_fail(s, "FATAL", "53200", "pgveil: out of memory");
      return;
    }
    tls_input(s, sv); /* sends the ClientHello */
    return;
  }
  if (r == 'N' && !extra && cfg->upstream_tls == PV_UPSTREAM_TLS_PREFER) {
    upstream_ready(s);
    return;
  }
  /* Bytes after 'S' were not encrypted and may have been injected
   * (CVE-2021-23222): refuse them like libpq does. */
  pv_sess_fail(s, "FATAL", "08006",
               r == 'S' ? "pgveil: upstream %s:%u sent unencrypted data after "
                          "accepting TLS (--upstream-tls %s)"
               : r == 'N'
                   ? "pgveil: upstream %s:%u does not accept TLS "
                     "(--upstream-tls %s)"
                   : "pgveil: upstream %s:%u did not answer the TLS request "
                     "(--upstream-tls %s)",
               cfg->upstream_host, cfg->upstream_port, upstream_tls_name(s));
}

static void connect_upstream(pv_session_t *s) {
  pv_worker_t *w = s->w;
  int rc = uv_tcp_init(&w->loop, &s->server.tcp);
  if (rc) {
    pv_sess_fail(s, "FATAL", "53000", "pgveil: %s", uv_strerror(rc));
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
  rc =
      uv_tcp_connect(&s->connect_req, &s->server.tcp,
                     (const struct sockaddr *)&w->shared->upstream, on_connect);
  if (rc)
    on_connect(&s->connect_req, rc);
}

/* ---- startup --------------------------------------------------------- */

/* Remembers role, database and a declared purpose (startup parameter
 * pgveil.purpose, or -c pgveil.purpose=... in options; the parameter wins).
 * Returns PV_OK or PV_EINVAL for a value that does not fit. */
static int note_startup_param(pv_session_t *s, const pv_param_t *p) {
  const char *k = p->key;
  if (strcmp(k, "application_name") == 0) { /* for the audit log */
    snprintf(s->app_name, sizeof s->app_name, "%s", p->val);
    return PV_OK;
  }
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

/* Answers an SSLRequest: 'N' without --tls-cert, else 'S' and the
 * handshake begins with the next bytes. Returns true when the caller must
 * stop parsing plaintext. */
static bool start_client_tls(pv_session_t *s) {
  end_t *c = &s->client;
  if (c->tls) {
    pv_sess_fail(s, "FATAL", "08P01", "pgveil: SSLRequest inside TLS");
    return true;
  }
  if (!pv_tls_accepts(s->w->shared->tls)) {
    write_const(s, c, "N", 1);
    return false;
  }
  /* Anything sent after the SSLRequest and before the handshake was not
   * encrypted and may have been injected (CVE-2021-23214): refuse it. */
  if (c->in_len) {
    pv_sess_fail(s, "FATAL", "08P01",
                 "pgveil: received unencrypted data after SSLRequest");
    return true;
  }
  pv_tls_conn_t *t = pv_tls_conn_new(s->w->shared->tls, PV_TLS_ACCEPT);
  if (!t) {
    session_close(s);
    return true;
  }
  write_const(s, c, "S", 1);
  c->tls = t; /* from here every byte read is ciphertext */
  return true;
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
      pv_sess_fail(s, "FATAL", "08P01", "pgveil: invalid startup packet: %s",
                   pv_strerror(n));
      return;
    }
    switch (st.kind) {
    case PV_STARTUP_SSL:
      consume_in(c, (size_t)n);
      if (start_client_tls(s))
        return;
      continue;
    case PV_STARTUP_GSSENC:
      /* No GSS encryption: decline; the client goes on in plaintext or
       * asks for TLS next. */
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
      pv_sess_stop_reading(c);
      connect_upstream(s);
      return;
    case PV_STARTUP_NORMAL:
      break;
    }
    if (cfg_of(s)->require_tls && !c->tls) {
      pv_sess_fail(s, "FATAL", "28000", "pgveil: TLS required");
      return;
    }
    if (s->over_limit) {
      pv_sess_fail(s, "FATAL", "53300",
                   "pgveil: sorry, too many clients already (--max-clients "
                   "%u)",
                   cfg_of(s)->max_clients);
      return;
    }
    int rc = prepare_startup(s, &st);
    consume_in(c, (size_t)n);
    if (rc) {
      pv_sess_fail(s, "FATAL", "08P01", "pgveil: cannot relay startup: %s",
                   pv_strerror(rc));
      return;
    }
    s->state = S_CONNECTING;
    pv_sess_stop_reading(c);
    connect_upstream(s);
  }
}

/* ---- the message pv_sess_pump
 * ------------------------------------------------ */

int pv_sess_enter_ready(pv_session_t *s) {
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
    pv_sess_start_reading(&s->client);
  }
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
    pv_sess_fail(s, "FATAL", "54000",
                 "pgveil: %s message of type '%c' is %u bytes, above "
                 "--max-message-bytes (%u)",
                 from_client ? "client" : "server", at[0],
                 pv_get_u32(at + 1) - 4, cfg_of(s)->max_message_bytes);
  } else if (rc == PV_EDENIED) {
    pv_sess_fail(s, "FATAL", "42501",
                 "pgveil: the fast-path function call interface is refused "
                 "for sessions that see protected data");
  } else if (rc == PV_ESTATE) {
    pv_sess_fail(s, "FATAL", "XX000",
                 "pgveil: a result row could not be matched to its "
                 "statement; closing the session rather than risk a leak");
  } else {
    pv_sess_fail(s, "FATAL", from_client ? "08P01" : "XX000",
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

/* Channel binding cannot cross pgveil: the client binds to the TLS
 * session it has with pgveil, the server to its own. pgveil removes the
 * -PLUS mechanisms from AuthenticationSASL, unless the server presented
 * the very certificate pgveil serves (tls-server-end-point then matches on
 * both legs), and refuses with a clear error a client that would fail
 * later for it. Returns 0 to pass m on, 1 when handled, or an error. */
static int sasl_filter(pv_session_t *s, emit_t *e, const pv_msg_t *m,
                       const uint8_t *raw, size_t rawlen) {
  const pv_shared_t *sh = s->w->shared;
  if (e->dst == &s->client && m->type == PV_BE_AUTH && m->len >= 4 &&
      pv_get_u32(m->body) == 10) {
    s->sasl_initial = true;
    if (s->client.tls && s->server.tls &&
        pv_tls_same_cert(s->server.tls, sh->tls))
      return 0; /* one certificate on both legs: binding works */
    uint8_t *out = pv_sess_emit_reserve(e, rawlen);
    if (!out)
      return PV_ENOMEM;
    int n = pv_tls_sasl_strip_plus(m->body, m->len, out + PV_FRAME_HEADER,
                                   rawlen - PV_FRAME_HEADER);
    if (n == PV_ENOENT)
      return 0;
    if (n < 0)
      return n;
    out[0] = m->type;
    pv_put_u32(out + 1, (uint32_t)n + 4);
    pv_sess_emit_commit(e, PV_FRAME_HEADER + (size_t)n);
    s->sasl_stripped = true;
    return 1;
  }
  if (e->dst == &s->server && m->type == PV_FE_PASSWORD && s->sasl_initial) {
    s->sasl_initial = false;
    int flag = pv_tls_sasl_cbind_flag(m->body, m->len);
    /* 'y' ("I can bind, the server cannot") is a downgrade to a server
     * that can: PostgreSQL over TLS rejects it. 'p' names a mechanism we
     * removed. */
    if (s->sasl_stripped && (flag == 'p' || (flag == 'y' && s->server.tls))) {
      pv_sess_fail(s, "FATAL", "28000",
                   "pgveil: SCRAM channel binding cannot pass through pgveil, "
                   "which terminates TLS; connect with "
                   "channel_binding=disable, or give pgveil the server's "
                   "certificate (--tls-cert), or use --upstream-tls disable");
      return 1;
    }
  }
  (void)raw;
  return 0;
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
      pv_sess_emit_span(&e, p, k);
      src->stream_left -= (uint32_t)k;
      pos += k;
      continue;
    }
    pv_msg_t m;
    int n = pv_frame_parse(p, avail, max, &m);
    if (n == PV_EAGAIN) {
      if (avail >= PV_FRAME_HEADER && streamable(s, src, p[0])) {
        pv_sess_emit_span(&e, p, avail);
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
    if (s->state == S_AUTH && (rc = sasl_filter(s, &e, &m, p, (size_t)n))) {
      if (rc < 0)
        break;
      rc = PV_OK;
      pos += (size_t)n;
      continue;
    }
    rc = src == &s->client ? pv_sess_client_msg(s, &e, &m, p, (size_t)n)
                           : pv_sess_server_msg(s, &e, &m, p, (size_t)n);
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
  pv_metrics_bytes(s->w->metrics, src == &s->client, pos);
  consume_in(src, pos);
  if (want && reserve_in(s, src, want) != PV_OK)
    pv_sess_fail(s, "FATAL", "53200", "pgveil: out of memory");
}

static void pump_plain(pv_session_t *s, end_t *src) {
  if (src->in_len == 0)
    return;
  if (src == &s->client && s->state == S_STARTUP)
    handle_startup(s);
  else if (s->state == S_AUTH || s->state == S_READY)
    pump_messages(s, src);
}

/* Decrypts what TLS holds for src into src->in while src may be read.
 * Returns true when plaintext was added. OUT: *eof when the peer sent
 * close_notify (handled by the caller once the plaintext before it is
 * processed). */
static bool tls_decrypt(pv_session_t *s, end_t *src, bool *eof) {
  bool got = false;
  while (src->reading && !s->closing && !s->draining &&
         pv_tls_established(src->tls) && in_space(s, src)) {
    int n =
        pv_tls_read(src->tls, src->in + src->in_len, src->in_cap - src->in_len);
    if (n > 0) {
      src->in_len += (uint32_t)n;
      got = true;
      continue;
    }
    if (n == 0) {
      *eof = true;
    } else if (n != PV_EAGAIN) {
      pv_log(PV_LOG_WARN, "session %llu: %s TLS: %s", (unsigned long long)s->id,
             src == &s->client ? "client" : "upstream",
             pv_tls_conn_error(src->tls));
      session_close(s);
    }
    break;
  }
  return got && !s->closing;
}

/* Processes src's plaintext, decrypting more from TLS as it is consumed. */
static void pump_end(pv_session_t *s, end_t *src) {
  bool eof = false;
  do
    pump_plain(s, src);
  while (!s->closing && src->tls && !eof && tls_decrypt(s, src, &eof));
  if (eof && !s->closing) {
    end_eof(s, src);
    return;
  }
  if (src->tls && !s->closing) {
    flush_tls(s, src); /* replies to post-handshake records, if any */
    pv_tls_trim(src->tls);
  }
}

void pv_sess_pump(pv_session_t *s, end_t *src) {
  if (s->closing)
    return;
  pump_end(s, src);
  /* A hold released by ReadyForQuery: process what the client sent. */
  if (src == &s->server && !s->closing && s->state == S_READY &&
      !s->client.held &&
      (s->client.in_len || (s->client.tls && pv_tls_has_input(s->client.tls))))
    pump_end(s, &s->client);
}

/* A TLS handshake failed on e. The client leg gets only the alert (it
 * cannot read a plaintext error); the upstream's failure is explained to
 * the client. */
static void tls_failed(pv_session_t *s, end_t *e) {
  if (e == &s->client) {
    pv_log(PV_LOG_WARN, "session %llu: client TLS: %s",
           (unsigned long long)s->id, pv_tls_conn_error(e->tls));
    session_drain(s);
    return;
  }
  const pv_config_t *cfg = cfg_of(s);
  pv_sess_fail(s, "FATAL", "08006",
               "pgveil: TLS with upstream %s:%u failed (--upstream-tls %s): %s",
               cfg->upstream_host, cfg->upstream_port, upstream_tls_name(s),
               pv_tls_conn_error(e->tls));
}

/* Ciphertext arrived on e: advance the handshake, then pump plaintext. */
static void tls_input(pv_session_t *s, end_t *e) {
  if (!pv_tls_established(e->tls)) {
    int rc = pv_tls_handshake(e->tls);
    flush_tls(s, e);
    if (s->closing)
      return;
    if (rc == PV_EAGAIN) {
      pv_tls_trim(e->tls);
      return;
    }
    if (rc != PV_OK) {
      tls_failed(s, e);
      return;
    }
    char d[96];
    pv_log(PV_LOG_DEBUG, "session %llu: %s TLS established: %s",
           (unsigned long long)s->id, e == &s->client ? "client" : "upstream",
           pv_tls_describe(e->tls, d, sizeof d));
    if (e == &s->server) {
      upstream_ready(s);
      if (s->closing || s->draining)
        return;
    }
  }
  pv_sess_pump(s, e);
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
  if (w->shared->audit)
    pv_sess_audit_peer(s);
  pv_sess_start_reading(&s->client);
}
