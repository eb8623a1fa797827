/* Row-plan tracking: follows both directions of one session's protocol
 * stream so that every DataRow (and COPY-out CopyData) is attributed to the
 * column plan of the statement that produced it. Owns the statement map,
 * the portal map and the FIFO of expected responses.
 * Pure: no I/O, no globals, limits as arguments. Allocates per statement,
 * portal and RowDescription, never per DataRow.
 *
 * How it works (see DESIGN.md §2):
 * - pv_tracker_frontend() is called for each complete client message, in
 *   order, before it is forwarded. Messages that produce responses push an
 *   entry on the FIFO (Query, Parse, Bind, Describe, Execute, Close, Sync,
 *   FunctionCall). Parse defines a statement object; Bind defines a portal
 *   object that holds a reference to its statement and copies the result
 *   format codes. Objects are refcounted: a pending entry keeps its own
 *   reference, so a statement or portal re-defined or closed by a later
 *   pipelined message does not change the plan of rows already in flight.
 * - When an Execute names a portal whose row shape is unknown and not about
 *   to become known (no RowDescription for its statement, no Describe of the
 *   statement or the portal pending), the tracker asks the session to inject
 *   Describe('P', portal) before the Execute; the reply (RowDescription or
 *   NoData) is marked swallow. (DESIGN §2 says Describe(S) after Parse; a
 *   portal Describe right before the Execute is needed only when the shape
 *   is really unknown, and its reply carries the result formats directly.)
 * - pv_tracker_backend() is called for each complete server message, in
 *   order. It advances the FIFO: RowDescription sets the plan of a simple
 *   Query's current result set or of the statement/portal being described;
 *   CommandComplete / EmptyQueryResponse / PortalSuspended end an Execute;
 *   ErrorResponse ends the current extended-protocol entry and drops every
 *   pending entry up to the next Sync (the server skips them) and, if no
 *   Sync is pending, makes later client messages push nothing until Sync;
 *   ReadyForQuery pops up to and including the first Query, FunctionCall or
 *   Sync entry. Notice, Notification and ParameterStatus consume nothing.
 * - A plan is built once per RowDescription (simple Query, FETCH, EXECUTE)
 *   or once per portal (from its statement's RowDescription and the Bind's
 *   formats), never per row.
 * Server bytes are untrusted: a message that does not fit the state is
 * reported (plan NULL, or PV_EPROTO for a malformed one), never trusted. */
#ifndef PGVEIL_ROW_PLAN_H
#define PGVEIL_ROW_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgveil/errors.h"
#include "pgveil/pg_frame.h"

/* One column of a plan. */
typedef struct {
  uint32_t table_oid; /* 0: not a plain table column */
  int16_t attnum;
  uint32_t type_oid;
  int32_t typmod;
  int16_t format;   /* 0 text, 1 binary: the format rows really arrive in */
  const char *name; /* NUL-terminated, owned by the plan */
} pv_plan_col_t;

/* A column plan: immutable once built, refcounted. Owner: the tracker and
 * every entry/portal that references it; freed when the last reference
 * goes. ext is a slot for the rewriting layer (per-column actions computed
 * once per plan); ext_free, when set, is called on it when the plan dies. */
typedef struct pv_plan {
  uint32_t refs;
  uint64_t id; /* unique within the tracker, increasing; for tests/debug */
  uint16_t ncols;
  pv_plan_col_t *cols;
  void *ext;
  void (*ext_free)(void *ext);
} pv_plan_t;

typedef struct {
  uint32_t max_statements; /* named prepared statements per session */
  uint32_t max_portals;    /* named portals per session */
  uint32_t max_pending;    /* FIFO entries (pipelined messages) */
  uint16_t max_columns;    /* columns per RowDescription, <= 1664 in PG */
} pv_tracker_limits_t;

typedef struct pv_tracker pv_tracker_t;

/* Returns NULL when out of memory. Limits are copied. */
pv_tracker_t *pv_tracker_new(const pv_tracker_limits_t *lim);
void pv_tracker_free(pv_tracker_t *t);

/* What the session must do around a frontend message. inject (when
 * inject_len > 0) must be written to the server BEFORE the message; it
 * points into tracker-owned memory valid until the next tracker call. */
typedef struct {
  const uint8_t *inject;
  size_t inject_len;
} pv_fe_effect_t;

/* Feeds one complete frontend message (after startup). Returns PV_OK,
 * PV_EPROTO for a malformed message, PV_ELIMIT when a limit is exceeded,
 * PV_ENOMEM. On error the session must end (send an error, close). */
PV_WARN_UNUSED int pv_tracker_frontend(pv_tracker_t *t, const pv_msg_t *m,
                                       pv_fe_effect_t *eff);

typedef enum {
  PV_ROWS_NONE = 0, /* not a row-carrying message */
  PV_ROWS_DATAROW,  /* a DataRow: plan says which columns */
  PV_ROWS_COPY_OUT, /* CopyData of a COPY TO STDOUT */
} pv_rows_kind_t;

/* What the session must do with a backend message. */
typedef struct {
  bool swallow;          /* reply to an injected message: do not forward */
  pv_rows_kind_t rows;   /* row-carrying message kind */
  const pv_plan_t *plan; /* DATAROW: its plan; NULL if unknown (fail closed) */
  uint32_t stmt_index;   /* index of the statement within a simple Query */
  uint8_t copy_format;   /* COPY_OUT: 0 text, 1 binary */
} pv_be_effect_t;

/* Feeds one complete backend message (after startup). Returns PV_OK or
 * PV_EPROTO (malformed) or PV_ENOMEM. */
PV_WARN_UNUSED int pv_tracker_backend(pv_tracker_t *t, const pv_msg_t *m,
                                      pv_be_effect_t *eff);

/* Introspection for tests and metrics. */
size_t pv_tracker_pending(const pv_tracker_t *t);
size_t pv_tracker_statements(const pv_tracker_t *t);
size_t pv_tracker_portals(const pv_tracker_t *t);
/* Transaction status from the last ReadyForQuery ('I' before the first). */
uint8_t pv_tracker_tx_status(const pv_tracker_t *t);

#endif
