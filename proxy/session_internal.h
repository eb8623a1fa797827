/* Internals shared by the session's files (not for other modules):
 * session.c (I/O: queues, reads, connect, startup, the pump),
 * session_rows.c (policy, purposes, row/COPY/error rewriting, server
 * messages) and session_guard.c (statement analysis, client messages). */
#ifndef PGVEIL_SESSION_INTERNAL_H
#define PGVEIL_SESSION_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "pgveil/consent.h"
#include "pgveil/copy_rewrite.h"
#include "pgveil/pg_frame.h"
#include "pgveil/plan_actions.h"
#include "pgveil/policy.h"
#include "pgveil/row_plan.h"
#include "pgveil/session.h"
#include "pgveil/sql_guard.h"

#define STARTUP_MAX 10000u     /* PostgreSQL's MAX_STARTUP_PACKET_LENGTH */
#define STARTUP_PARAMS_MAX 64  /* parameters in a StartupMessage */
#define EMIT_IOV_MAX 64        /* slices gathered before a write */
#define PURPOSE_MAX 64         /* bytes of a pgveil.purpose value */
#define NAME_MAX_BYTES 64      /* role and database names (NAMEDATALEN) */
#define REFUSALS 8             /* refusal messages awaiting their error */
#define REFUSAL_MAX 240        /* bytes of one refusal message */
#define COPY_PLANS_MAX 16      /* COPY TO STDOUT statements in flight */
#define GUARD_CACHE_SLOTS 4096 /* analyses cached per worker */
#define NO_LOCAL (-1000)       /* local_saved: no SET LOCAL active */

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
  /* TLS on this end (tls.h), NULL for plaintext. Ciphertext is read into
   * `cin` (a worker buffer held only during one read callback) and
   * decrypted into `in`; writes are encrypted before the queue. */
  struct pv_tls_conn *tls;
  uint8_t *cin;
  bool tls_asked; /* server end: SSLRequest sent, awaiting 'S' or 'N' */
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
  int purpose;              /* index into the rules, or PV_PURPOSE_NONE */
  pv_policy_t *policy;      /* reference held; NULL in --passthrough */
  const pv_policy_db_t *db; /* this database's resolution in policy */
  uv_async_t *db_async;     /* while waiting for the control thread */
  bool db_waited;           /* asked the control thread once already */
  bool restricted;          /* some column is protected for the purpose */
  int startup_purpose;      /* what RESET / DISCARD ALL go back to */
  int local_saved;          /* purpose before SET LOCAL, or NO_LOCAL */
  uint32_t nonce;           /* makes refusal tokens unforgeable */
  uint32_t nrefused;
  char refusal[REFUSALS][REFUSAL_MAX];
  uint64_t units_sent, units_done;    /* Query/Sync/FunctionCall vs RFQ */
  copy_plan_t copies[COPY_PLANS_MAX]; /* FIFO of COPY TO STDOUT plans */
  unsigned copy_head, copy_len;
  copy_plan_t cur_copy; /* the COPY OUT in progress */
  bool copy_active;
  pv_consent_snap_t *consent; /* this statement's consent, or NULL */
  bool consent_taken;         /* looked up since the last ReadyForQuery */
  /* The server reads SQL differently from the guard while either holds:
   * standard_conforming_strings off, or a client encoding whose multibyte
   * characters may hide quote/backslash bytes (SJIS, BIG5, GBK, ...). */
  bool scs_off, enc_unsafe;
  uint8_t *flags; /* per-row consent flags, one per column */
  size_t flags_cap;
  struct pv_sess_audit *audit;   /* session_audit.c: audit log, ledger and
                                    explanations; NULL until needed */
  char client_addr[64];          /* "host:port" of the client */
  char app_name[NAME_MAX_BYTES]; /* application_name at startup */
  bool sasl_stripped; /* -PLUS mechanisms removed from AuthenticationSASL */
  bool sasl_initial;  /* the next client 'p' is a SASLInitialResponse */
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

static inline const pv_config_t *cfg_of(const pv_session_t *s) {
  return s->w->shared->cfg;
}
static inline end_t *other(pv_session_t *s, end_t *e) {
  return e == &s->client ? &s->server : &s->client;
}

/* Handler results besides PV_OK and errors: stop here, keep the bytes. */
enum { MSG_HOLD = 1 };

/* ---- session.c ---- */
void pv_sess_emit_span(emit_t *e, const uint8_t *p, size_t len);
/* Scratch for len bytes, valid until the next flush; NULL on OOM. */
uint8_t *pv_sess_emit_reserve(emit_t *e, size_t len);
void pv_sess_emit_commit(emit_t *e, size_t len);
PV_WARN_UNUSED int pv_sess_emit_copy(emit_t *e, const void *p, size_t len);
/* Sends an ErrorResponse to the client, then closes once it is written. */
void pv_sess_fail(pv_session_t *s, const char *severity, const char *sqlstate,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void pv_sess_close_handle(pv_session_t *s, uv_handle_t *h);
void pv_sess_start_reading(end_t *e);
void pv_sess_stop_reading(end_t *e);
void pv_sess_pump(pv_session_t *s, end_t *src);
PV_WARN_UNUSED int pv_sess_enter_ready(pv_session_t *s);

/* ---- session_rows.c ---- */
/* Reads field j of a row (DataRow or COPY line). */
typedef int (*pv_sess_field_fn)(const void *row, uint16_t j,
                                const uint8_t **val, int32_t *len);
/* pv_sess_field_fn over a DataRow message (row is a const pv_msg_t *). */
int pv_sess_datarow_field(const void *row, uint16_t j, const uint8_t **val,
                          int32_t *len);
/* Writes a rewritten message produced by fn, growing scratch to what fn
 * says it needs. */
typedef int (*pv_sess_rewrite_fn)(const void *ctx, const pv_msg_t *m,
                                  uint8_t *out, size_t cap, size_t *needed);
PV_WARN_UNUSED int pv_sess_emit_rewritten(emit_t *e, const pv_msg_t *m,
                                          size_t rawlen, pv_sess_rewrite_fn fn,
                                          const void *ctx);
/* Takes a newer policy snapshot if one was published; PV_ESTATE when this
 * database can no longer be served. */
PV_WARN_UNUSED int pv_sess_refresh_policy(pv_session_t *s);
/* One complete server message: track, rewrite, emit. */
PV_WARN_UNUSED int pv_sess_server_msg(pv_session_t *s, emit_t *e,
                                      const pv_msg_t *m, const uint8_t *raw,
                                      size_t rawlen);

/* ---- session_audit.c ---- */
/* The guard's analysis of the Query/Parse being handled (NULL: none). */
void pv_sess_audit_note(pv_session_t *s, const pv_guard_result_t *res);
/* A Query/Parse refused for `why`: one audit entry now. */
void pv_sess_audit_refused(pv_session_t *s, const pv_msg_t *m, const char *why);
/* Every client message after the guard (refused: it was replaced). */
void pv_sess_audit_client(pv_session_t *s, const pv_msg_t *m, bool refused);
/* Every server message not swallowed, before it is emitted: row counts,
 * entries at statement ends, explanations of row-less results. */
PV_WARN_UNUSED int pv_sess_audit_server(pv_session_t *s, emit_t *e,
                                        const pv_msg_t *m,
                                        const pv_be_effect_t *eff);
/* A rewritten DataRow, before it is emitted: ledger and explanation. */
PV_WARN_UNUSED int pv_sess_audit_row(pv_session_t *s, emit_t *e,
                                     const pv_plan_t *plan,
                                     const pv_row_actions_t *ra,
                                     const uint8_t *consent,
                                     const pv_msg_t *row);
/* A rewritten COPY row: the ledger of its consented values. */
void pv_sess_audit_copy_row(pv_session_t *s, const pv_row_actions_t *ra,
                            const uint8_t *consent, pv_sess_field_fn get,
                            const void *row);
void pv_sess_audit_peer(pv_session_t *s); /* client_addr, at accept */
void pv_sess_audit_free(pv_session_t *s);

/* ---- session_guard.c ---- */
/* One complete client message: guard, track, emit. */
PV_WARN_UNUSED int pv_sess_client_msg(pv_session_t *s, emit_t *e,
                                      const pv_msg_t *m, const uint8_t *raw,
                                      size_t rawlen);

#endif
