/* A session: one client connection and its upstream connection, the
 * startup/authentication relay, and the message pump in both directions
 * with row-plan tracking and row rewriting. I/O lives here; protocol
 * decisions are delegated to the pure modules. */
#ifndef PGVEIL_SESSION_H
#define PGVEIL_SESSION_H

#include "pgveil/worker.h"

/* Accepts one pending connection from w's listener and starts its session.
 * Errors close the connection; nothing is returned. */
void pv_session_accept(pv_worker_t *w);

/* Closes a session now (shutdown timeout). */
void pv_session_kill(pv_session_t *s);

/* Next session in the worker's list (for shutdown walks). */
pv_session_t *pv_session_next(pv_session_t *s);

#endif
