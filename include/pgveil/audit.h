/* The audit log (DESIGN.md §6, docs/audit.md): pure formatting of its JSON
 * lines (audit.c) and the writer that puts them in a file off the hot path
 * (audit_writer.c). Formatting never sees a protected value: entries carry
 * names, actions, counts, a fingerprint and, for the disclosure ledger,
 * subject ids only. */
#ifndef PGVEIL_AUDIT_H
#define PGVEIL_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgveil/errors.h"
#include "pgveil/row_rewrite.h"
#include "pgveil/sql_guard.h"

/* ---- Formatting (audit.c): pure, no I/O, no globals ------------------- */

#define PV_AUDIT_LINE_MAX 16384   /* bytes of one JSON line, '\n' included */
#define PV_AUDIT_DETAIL_MAX 8192  /* bytes of a statement's columns detail */
#define PV_AUDIT_LEDGER_IDS 64    /* subject ids per ledger entry */
#define PV_AUDIT_EXPLAIN_MAX 1024 /* bytes of an explanation notice */

typedef enum {
  PV_AUDIT_STATEMENT = 0, /* an allowed statement touched protected data */
  PV_AUDIT_REFUSED,       /* the guard refused a statement */
  PV_AUDIT_LEDGER,        /* consent-gated values shown in clear */
} pv_audit_event_t;

/* One line. Strings may be NULL (written as null); every string is
 * JSON-escaped. Owner: the caller; nothing is kept. */
typedef struct {
  pv_audit_event_t event;
  int64_t time_ms; /* Unix time in milliseconds (UTC) */
  uint64_t session;
  const char *client, *role, *database, *application_name, *purpose;
  uint64_t fingerprint; /* pv_audit_fingerprint() of the statement, 0: none */
  const char *detail;   /* STATEMENT/REFUSED: pv_audit_format_touched()
                           output, inserted as is; NULL: none */
  uint64_t rows;        /* STATEMENT: DataRows / COPY rows sent */
  bool error;           /* STATEMENT: the statement ended with an error */
  const char *reason;   /* REFUSED: the refusal message */
  /* LEDGER: the table, the gated columns shown in clear and the subjects
   * whose values they were; `part` numbers continuation entries (0 first)
   * of one statement's disclosures. */
  const char *table;
  const char *const *columns;
  size_t ncolumns;
  const char *const *subjects;
  size_t nsubjects;
  unsigned part;
} pv_audit_entry_t;

/* Writes s[0..len) JSON-escaped (no quotes) into out[0..cap). Control
 * characters, quotes, backslashes, DEL and invalid UTF-8 bytes are
 * escaped (invalid bytes as \u00XX of the byte), so any input gives one
 * valid JSON string on one line. Returns the length needed (as snprintf:
 * truncated output when >= cap, always NUL-terminated when cap > 0). */
size_t pv_audit_json_escape(const char *s, size_t len, char *out, size_t cap);

/* `"tables":[...],"columns":[{"table":..,"column":..,"action":..}, ...]`
 * for the protected columns a statement touches (consent-gated ones also
 * get "consent":"required","otherwise":..). Returns the length written, or
 * PV_ELIMIT when it does not fit in cap (then out holds a shorter valid
 * fragment naming "columns_truncated":true). */
PV_WARN_UNUSED int pv_audit_format_touched(const pv_guard_touch_t *t, size_t n,
                                           char *out, size_t cap);

/* One whole JSON line ending in '\n' into out[0..cap), NUL-terminated.
 * Returns its length,
 * or PV_ELIMIT when it does not fit. */
PV_WARN_UNUSED int pv_audit_format_entry(const pv_audit_entry_t *e, char *out,
                                         size_t cap);

/* Statement fingerprint: XXH3-64 of the text with literals (strings,
 * numbers, $n parameters) replaced by `?`, comments dropped, whitespace
 * collapsed, keywords and unquoted identifiers folded to lower case. Equal
 * for the same statement with different values; reveals no value. */
uint64_t pv_audit_fingerprint(const char *sql, size_t len);

/* The explanation notice of one result set: for each acted-on column of
 * ra, "<name> <what> (purpose P[, without consent])", joined by "; ",
 * after "pgveil: ". names[i] is column i's name as the client sees it.
 * Returns the length written (0 when nothing is acted on), truncated with
 * "..." to fit cap. Never names a value. */
size_t pv_audit_explain(const pv_row_actions_t *ra, const char *const *names,
                        const char *purpose, char *out, size_t cap);

/* ---- Writer (audit_writer.c) ------------------------------------------ */

/* A writer thread with one bounded queue per worker. Owner: main(). */
typedef struct pv_audit pv_audit_t;

/* Opens path ("-": stdout) for appending and starts the writer thread;
 * nqueues single-producer queues of queue_bytes each. Returns PV_OK with
 * *out, or PV_EIO (message in err) / PV_ENOMEM. */
PV_WARN_UNUSED int pv_audit_start(const char *path, unsigned nqueues,
                                  size_t queue_bytes, pv_audit_t **out,
                                  char *err, size_t errcap);

/* Queues one line from producer thread `queue` (a worker id; one thread
 * per queue). Never blocks: a full queue drops the line, counts it, and
 * logs a warning once per 1000 drops. Returns PV_OK or PV_ELIMIT. */
int pv_audit_submit(pv_audit_t *a, unsigned queue, const char *line,
                    size_t len);

/* Asks the writer to reopen the file (log rotation; SIGUSR1). Async-safe
 * enough for a uv_signal callback: sets a flag. */
void pv_audit_reopen(pv_audit_t *a);

/* Lines dropped because a queue was full. */
uint64_t pv_audit_dropped(const pv_audit_t *a);

/* Writes what is queued, fsyncs, stops the thread and frees a (NULL ok).
 * Call after every producer has stopped. */
void pv_audit_stop(pv_audit_t *a);

/* ---- `pgveil ledger` (ledger.c) ---------------------------------------- */

/* argv[0] is "ledger". Prints who saw a subject's data. Exit status: 0,
 * 1 when a file cannot be read, 2 for bad arguments. */
int pv_ledger_main(int argc, char **argv);

#endif
