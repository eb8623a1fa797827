/* TLS for both legs of a session with OpenSSL over memory BIOs: contexts
 * built once from the configuration, and per-connection state that turns
 * ciphertext into plaintext and back. No sockets, no libuv: the session
 * moves the bytes. Also the SCRAM -PLUS rewriting TLS termination needs. */
#ifndef PGVEIL_TLS_H
#define PGVEIL_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgveil/config.h"
#include "pgveil/errors.h"

/* Contexts of both legs. Owner: main(); read-only and shared by every
 * worker once built (SSL_CTX is thread-safe for creating connections). */
typedef struct pv_tls pv_tls_t;

/* One TLS connection. Owner: the session end it belongs to. */
typedef struct pv_tls_conn pv_tls_conn_t;

typedef enum {
  PV_TLS_ACCEPT,  /* client leg: pgveil is the TLS server */
  PV_TLS_CONNECT, /* upstream leg: pgveil is the TLS client */
} pv_tls_role_t;

/* Builds the contexts cfg asks for (--tls-cert/--tls-key, --upstream-tls,
 * --upstream-ca). *out is NULL when neither leg uses TLS. On error returns
 * PV_EINVAL with a one-line message (file, OpenSSL reason) in err. */
PV_WARN_UNUSED int pv_tls_new(const pv_config_t *cfg, pv_tls_t **out, char *err,
                              size_t errcap);
void pv_tls_free(pv_tls_t *t);

/* Reads --tls-cert/--tls-key (and --upstream-ca) again and swaps the new
 * contexts in for new connections (SIGHUP: certificate rotation without a
 * restart); open sessions keep theirs. On error the old contexts stay and
 * err says why. Thread-safe. NULL t: nothing to do. */
PV_WARN_UNUSED int pv_tls_reload(pv_tls_t *t, const pv_config_t *cfg, char *err,
                                 size_t errcap);

/* Whether t (may be NULL) can accept TLS clients / should talk TLS to the
 * upstream, and the --upstream-tls mode. */
bool pv_tls_accepts(const pv_tls_t *t);
pv_upstream_tls_t pv_tls_upstream_mode(const pv_tls_t *t);

/* A new connection in the given role; NULL on OOM or when t has no
 * context for that role. */
pv_tls_conn_t *pv_tls_conn_new(pv_tls_t *t, pv_tls_role_t role);
void pv_tls_conn_free(pv_tls_conn_t *c);

/* Hands ciphertext read from the socket to c (copied). PV_OK or PV_ENOMEM. */
PV_WARN_UNUSED int pv_tls_feed(pv_tls_conn_t *c, const uint8_t *p, size_t n);

/* Advances the handshake with what was fed. PV_OK once established,
 * PV_EAGAIN while it needs more input, PV_EIO on failure (reason in
 * pv_tls_conn_error). Either way, flush pv_tls_out afterwards: it may hold
 * handshake records or an alert. */
PV_WARN_UNUSED int pv_tls_handshake(pv_tls_conn_t *c);
bool pv_tls_established(const pv_tls_conn_t *c);

/* Decrypts into out[0..cap). Returns bytes (> 0); 0 when the peer sent
 * close_notify; PV_EAGAIN when no plaintext is available until more
 * ciphertext is fed; PV_EIO on a TLS error. Post-handshake records
 * (tickets, key updates) are handled inside and may leave output to flush. */
PV_WARN_UNUSED int pv_tls_read(pv_tls_conn_t *c, uint8_t *out, size_t cap);

/* True when fed ciphertext or decrypted plaintext is still waiting in c. */
bool pv_tls_has_input(const pv_tls_conn_t *c);

/* Encrypts p[0..n) into c's output. PV_OK, or PV_EIO / PV_ENOMEM. */
PV_WARN_UNUSED int pv_tls_write(pv_tls_conn_t *c, const uint8_t *p, size_t n);

/* Ciphertext waiting for the socket, valid until pv_tls_out_done, which
 * drops all of it (the caller wrote or copied it) and releases its memory. */
const uint8_t *pv_tls_out(pv_tls_conn_t *c, size_t *len);
void pv_tls_out_done(pv_tls_conn_t *c);

/* Releases the input buffer's memory when nothing is waiting in it: an
 * idle connection keeps no ciphertext buffers. */
void pv_tls_trim(pv_tls_conn_t *c);

/* Queues a close_notify alert (flush pv_tls_out afterwards). */
void pv_tls_shutdown(pv_tls_conn_t *c);

/* The last failure, human-readable ("certificate verify failed: ..."). */
const char *pv_tls_conn_error(const pv_tls_conn_t *c);

/* "TLSv1.3/TLS_AES_256_GCM_SHA384" for logs. */
const char *pv_tls_describe(const pv_tls_conn_t *c, char *buf, size_t cap);

/* True when the upstream connection c presented exactly the certificate
 * the client leg of t serves: then tls-server-end-point channel binding
 * computed by a client against pgveil matches the server's. */
bool pv_tls_same_cert(const pv_tls_conn_t *c, const pv_tls_t *t);

/* ---- SCRAM channel binding through a TLS-terminating proxy (pure) ---- */

/* Rewrites an AuthenticationSASL body (int32 10, then NUL-terminated
 * mechanism names, then a final NUL) without the names ending in "-PLUS".
 * Writes the new body to out[0..cap). Returns its length; PV_ENOENT when
 * the body names no -PLUS mechanism (forward it unchanged); PV_EPROTO for
 * a malformed body; PV_ELIMIT when cap is too small. */
PV_WARN_UNUSED int pv_tls_sasl_strip_plus(const uint8_t *body, size_t len,
                                          uint8_t *out, size_t cap);

/* The channel-binding flag of a SASLInitialResponse body (mechanism name,
 * int32 length, client-first-message): 'n', 'y' or 'p'. PV_EPROTO when
 * malformed; PV_ENOENT when the message carries no SCRAM data. */
PV_WARN_UNUSED int pv_tls_sasl_cbind_flag(const uint8_t *body, size_t len);

#endif
