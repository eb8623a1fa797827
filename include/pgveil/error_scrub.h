/* Scrubbing of ErrorResponse and NoticeResponse messages for restricted
 * sessions: error texts can echo data ("invalid input syntax ...
 * \"alice@...\"", "Key (email)=(...) already exists", RAISE messages), so only
 * fields that cannot carry a value pass, and a message of a class that can is
 * replaced by a generic one naming the SQLSTATE. Pure: no I/O, no globals, no
 * allocation. */
#ifndef PGVEIL_ERROR_SCRUB_H
#define PGVEIL_ERROR_SCRUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgveil/errors.h"
#include "pgveil/pg_frame.h"

/* True when messages of this SQLSTATE may quote data: classes 00 (RAISE
 * NOTICE), 01 (warnings), 22 (data exceptions), 23 (integrity constraint
 * violations), 27, 38, 39 (routine exceptions), P0 (PL/pgSQL), XX
 * (internal), and every class pgveil does not know. */
bool pv_scrub_class_unsafe(const char sqlstate[5]);

/* Rewrites the ErrorResponse/NoticeResponse m (type 'E' or 'N') into
 * out[0..cap) as a whole message: keeps severity (S, V), SQLSTATE (C) and
 * position (P); keeps the message (M) when its class is safe, else writes
 * "pgveil: <kind> (SQLSTATE xxxxx); details withheld"; drops detail, hint,
 * context, internal query and every other field. A message without a
 * SQLSTATE is treated as unsafe with SQLSTATE XX000. Returns bytes written,
 * PV_ELIMIT when cap is too small (m->len + 128 always suffices), or
 * PV_EPROTO for a malformed message. */
PV_WARN_UNUSED int pv_scrub_error(const pv_msg_t *m, uint8_t *out, size_t cap);

#endif
