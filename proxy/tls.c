/* Owns OpenSSL for both legs: the two contexts, and per-connection TLS
 * state over memory BIOs (ciphertext in, plaintext out and back). Must not
 * touch sockets or libuv; the session moves every byte. */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "pgveil/pg_frame.h"
#include "pgveil/tls.h"

#define ERR_MAX 200

struct pv_tls {
  pthread_mutex_t mu;   /* guards the two contexts against a reload */
  SSL_CTX *accept_ctx;  /* client leg; NULL without --tls-cert */
  SSL_CTX *connect_ctx; /* upstream leg; NULL with --upstream-tls disable */
  pv_upstream_tls_t mode;
  bool accepts, connects; /* fixed at start: which legs have a context */
  char host[PV_HOST_MAX]; /* --upstream's host: SNI and verify-full */
  bool host_is_ip;
};

struct pv_tls_conn {
  SSL *ssl;
  BIO *rbio, *wbio; /* memory BIOs; SSL owns them */
  bool established;
  char err[ERR_MAX];
};

/* ---- errors ---------------------------------------------------------- */

/* The reason of the newest OpenSSL error, clearing the thread's queue. */
static void take_ssl_error(char *buf, size_t cap, const char *what) {
  unsigned long e, last = 0;
  while ((e = ERR_get_error()) != 0)
    last = e;
  if (last) {
    char r[160];
    ERR_error_string_n(last, r, sizeof r);
    snprintf(buf, cap, "%s: %s", what, r);
  } else {
    snprintf(buf, cap, "%s", what);
  }
}

/* ---- contexts -------------------------------------------------------- */

/* PostgreSQL 17 clients may offer ALPN "postgresql"; accept it. */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg) {
  (void)ssl;
  (void)arg;
  static const unsigned char pg[] = "\x0apostgresql";
  unsigned char *sel = NULL;
  if (SSL_select_next_proto(&sel, outlen, pg, sizeof pg - 1, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

static void common_options(SSL_CTX *ctx) {
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  /* Renegotiation is refused (PostgreSQL dropped it, and it would make a
   * write wait for a read); compression is an attack surface. */
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  /* Record buffers are freed whenever a connection is idle. */
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
}

static int build_accept_ctx(const pv_config_t *cfg, pv_tls_t *t, char *err,
                            size_t errcap) {
  t->accept_ctx = SSL_CTX_new(TLS_server_method());
  if (!t->accept_ctx)
    goto fail_ssl;
  common_options(t->accept_ctx);
  SSL_CTX_set_options(t->accept_ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
  /* Clients rarely resume: no cache, no tickets, less memory. */
  SSL_CTX_set_session_cache_mode(t->accept_ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(t->accept_ctx, 0);
  SSL_CTX_set_alpn_select_cb(t->accept_ctx, on_alpn, NULL);
  if (SSL_CTX_use_certificate_chain_file(t->accept_ctx, cfg->tls_cert) != 1) {
    char what[PV_PATH_MAX + 40];
    snprintf(what, sizeof what, "--tls-cert %s", cfg->tls_cert);
    take_ssl_error(err, errcap, what);
    return PV_EINVAL;
  }
  if (SSL_CTX_use_PrivateKey_file(t->accept_ctx, cfg->tls_key,
                                  SSL_FILETYPE_PEM) != 1) {
    char what[PV_PATH_MAX + 40];
    snprintf(what, sizeof what, "--tls-key %s", cfg->tls_key);
    take_ssl_error(err, errcap, what);
    return PV_EINVAL;
  }
  if (SSL_CTX_check_private_key(t->accept_ctx) != 1) {
    take_ssl_error(err, errcap, "--tls-key does not match --tls-cert");
    return PV_EINVAL;
  }
  return PV_OK;
fail_ssl:
  take_ssl_error(err, errcap, "cannot create the client-leg TLS context");
  return PV_EINVAL;
}

static int build_connect_ctx(const pv_config_t *cfg, pv_tls_t *t, char *err,
                             size_t errcap) {
  t->connect_ctx = SSL_CTX_new(TLS_client_method());
  if (!t->connect_ctx) {
    take_ssl_error(err, errcap, "cannot create the upstream TLS context");
    return PV_EINVAL;
  }
  common_options(t->connect_ctx);
  if (cfg->upstream_ca[0] && SSL_CTX_load_verify_locations(
                                 t->connect_ctx, cfg->upstream_ca, NULL) != 1) {
    char what[PV_PATH_MAX + 40];
    snprintf(what, sizeof what, "--upstream-ca %s", cfg->upstream_ca);
    take_ssl_error(err, errcap, what);
    return PV_EINVAL;
  }
  /* Only verify-full checks the certificate (chain and host name), as
   * libpq does without a root certificate for require and prefer. */
  SSL_CTX_set_verify(t->connect_ctx,
                     t->mode == PV_UPSTREAM_TLS_VERIFY_FULL ? SSL_VERIFY_PEER
                                                            : SSL_VERIFY_NONE,
                     NULL);
  snprintf(t->host, sizeof t->host, "%s", cfg->upstream_host);
  unsigned char a[16];
  t->host_is_ip = inet_pton(AF_INET, t->host, a) == 1 ||
                  inet_pton(AF_INET6, t->host, a) == 1;
  return PV_OK;
}

int pv_tls_new(const pv_config_t *cfg, pv_tls_t **out, char *err,
               size_t errcap) {
  *out = NULL;
  if (!cfg->tls_cert[0] && cfg->upstream_tls == PV_UPSTREAM_TLS_DISABLE)
    return PV_OK;
  pv_tls_t *t = calloc(1, sizeof *t);
  if (!t) {
    snprintf(err, errcap, "out of memory");
    return PV_ENOMEM;
  }
  t->mode = cfg->upstream_tls;
  if (pthread_mutex_init(&t->mu, NULL) != 0) {
    free(t);
    snprintf(err, errcap, "out of memory");
    return PV_ENOMEM;
  }
  int rc = PV_OK;
  if (cfg->tls_cert[0] && (rc = build_accept_ctx(cfg, t, err, errcap)))
    goto fail;
  if (t->mode != PV_UPSTREAM_TLS_DISABLE &&
      (rc = build_connect_ctx(cfg, t, err, errcap)))
    goto fail;
  t->accepts = t->accept_ctx != NULL;
  t->connects = t->connect_ctx != NULL;
  *out = t;
  return PV_OK;
fail:
  pv_tls_free(t);
  return rc;
}

void pv_tls_free(pv_tls_t *t) {
  if (!t)
    return;
  SSL_CTX_free(t->accept_ctx);
  SSL_CTX_free(t->connect_ctx);
  pthread_mutex_destroy(&t->mu);
  free(t);
}

int pv_tls_reload(pv_tls_t *t, const pv_config_t *cfg, char *err,
                  size_t errcap) {
  if (!t)
    return PV_OK;
  pv_tls_t fresh = {.mode = t->mode};
  memcpy(fresh.host, t->host, sizeof fresh.host);
  fresh.host_is_ip = t->host_is_ip;
  int rc = PV_OK;
  if (t->accepts && (rc = build_accept_ctx(cfg, &fresh, err, errcap)))
    goto fail;
  if (t->connects && (rc = build_connect_ctx(cfg, &fresh, err, errcap)))
    goto fail;
  pthread_mutex_lock(&t->mu);
  SSL_CTX *old_accept = t->accept_ctx, *old_connect = t->connect_ctx;
  t->accept_ctx = fresh.accept_ctx;
  t->connect_ctx = fresh.connect_ctx;
  pthread_mutex_unlock(&t->mu);
  /* Sessions made from the old contexts hold references of their own. */
  SSL_CTX_free(old_accept);
  SSL_CTX_free(old_connect);
  return PV_OK;
fail:
  SSL_CTX_free(fresh.accept_ctx);
  SSL_CTX_free(fresh.connect_ctx);
  return rc;
}

bool pv_tls_accepts(const pv_tls_t *t) { return t && t->accepts; }

pv_upstream_tls_t pv_tls_upstream_mode(const pv_tls_t *t) {
  return t && t->connects ? t->mode : PV_UPSTREAM_TLS_DISABLE;
}

/* ---- connections ----------------------------------------------------- */

/* Upstream: SNI for host names, and the name or address verify-full
 * checks against the certificate. */
static int set_peer_name(pv_tls_conn_t *c, const pv_tls_t *t) {
  if (!t->host_is_ip && SSL_set_tlsext_host_name(c->ssl, t->host) != 1)
    return PV_ENOMEM;
  if (t->mode != PV_UPSTREAM_TLS_VERIFY_FULL)
    return PV_OK;
  if (t->host_is_ip) {
    X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
    return X509_VERIFY_PARAM_set1_ip_asc(vp, t->host) == 1 ? PV_OK : PV_EINVAL;
  }
  return SSL_set1_host(c->ssl, t->host) == 1 ? PV_OK : PV_ENOMEM;
}

/* The current context of a leg with a reference of the caller's, or NULL. */
static SSL_CTX *ctx_ref(pv_tls_t *t, pv_tls_role_t role) {
  if (!t)
    return NULL;
  pthread_mutex_lock(&t->mu);
  SSL_CTX *ctx = role == PV_TLS_ACCEPT ? t->accept_ctx : t->connect_ctx;
  if (ctx)
    SSL_CTX_up_ref(ctx);
  pthread_mutex_unlock(&t->mu);
  return ctx;
}

pv_tls_conn_t *pv_tls_conn_new(pv_tls_t *t, pv_tls_role_t role) {
  SSL_CTX *ctx = ctx_ref(t, role);
  if (!ctx)
    return NULL;
  pv_tls_conn_t *c = calloc(1, sizeof *c);
  if (!c) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  c->ssl = SSL_new(ctx);
  SSL_CTX_free(ctx); /* the SSL holds its own reference */
  c->rbio = BIO_new(BIO_s_mem());
  c->wbio = BIO_new(BIO_s_mem());
  if (!c->ssl || !c->rbio || !c->wbio)
    goto fail;
  /* A drained memory BIO answers "retry", never EOF. */
  BIO_set_mem_eof_return(c->rbio, -1);
  BIO_set_mem_eof_return(c->wbio, -1);
  SSL_set_bio(c->ssl, c->rbio, c->wbio); /* SSL owns both from here */
  if (role == PV_TLS_ACCEPT) {
    SSL_set_accept_state(c->ssl);
  } else {
    SSL_set_connect_state(c->ssl);
    if (set_peer_name(c, t) != PV_OK) {
      pv_tls_conn_free(c);
      return NULL;
    }
  }
  return c;
fail:
  if (c->ssl) {
    SSL_free(c->ssl);
  } else {
    BIO_free(c->rbio);
    BIO_free(c->wbio);
  }
  free(c);
  return NULL;
}

void pv_tls_conn_free(pv_tls_conn_t *c) {
  if (!c)
    return;
  SSL_free(c->ssl); /* frees both BIOs */
  free(c);
}

int pv_tls_feed(pv_tls_conn_t *c, const uint8_t *p, size_t n) {
  while (n > 0) {
    int chunk = n > (1u << 30) ? (1 << 30) : (int)n;
    int w = BIO_write(c->rbio, p, chunk);
    if (w <= 0)
      return PV_ENOMEM;
    p += w;
    n -= (size_t)w;
  }
  return PV_OK;
}

/* Explains a failed handshake; a certificate rejected by our own check
 * names the verification error. */
static void handshake_error(pv_tls_conn_t *c) {
  long vr = SSL_get_verify_result(c->ssl);
  if (vr != X509_V_OK) {
    snprintf(c->err, sizeof c->err, "certificate verify failed: %s",
             X509_verify_cert_error_string(vr));
    ERR_clear_error();
    return;
  }
  take_ssl_error(c->err, sizeof c->err, "TLS handshake failed");
}

int pv_tls_handshake(pv_tls_conn_t *c) {
  if (c->established)
    return PV_OK;
  ERR_clear_error();
  int r = SSL_do_handshake(c->ssl);
  if (r == 1) {
    c->established = true;
    return PV_OK;
  }
  int e = SSL_get_error(c->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
    return PV_EAGAIN;
  handshake_error(c);
  return PV_EIO;
}

bool pv_tls_established(const pv_tls_conn_t *c) { return c->established; }

int pv_tls_read(pv_tls_conn_t *c, uint8_t *out, size_t cap) {
  if (cap == 0)
    return PV_EAGAIN;
  int want = cap > (1u << 30) ? (1 << 30) : (int)cap;
  ERR_clear_error();
  int r = SSL_read(c->ssl, out, want);
  if (r > 0)
    return r;
  switch (SSL_get_error(c->ssl, r)) {
  case SSL_ERROR_WANT_READ:
  case SSL_ERROR_WANT_WRITE: /* memory BIOs never block a write */
    return PV_EAGAIN;
  case SSL_ERROR_ZERO_RETURN:
    return 0; /* close_notify */
  default:
    take_ssl_error(c->err, sizeof c->err, "TLS read failed");
    return PV_EIO;
  }
}

bool pv_tls_has_input(const pv_tls_conn_t *c) {
  return SSL_pending(c->ssl) > 0 || BIO_ctrl_pending(c->rbio) > 0;
}

int pv_tls_write(pv_tls_conn_t *c, const uint8_t *p, size_t n) {
  while (n > 0) {
    int chunk = n > (1u << 30) ? (1 << 30) : (int)n;
    ERR_clear_error();
    int w = SSL_write(c->ssl, p, chunk);
    if (w <= 0) {
      /* With renegotiation refused and memory BIOs, a write never waits:
       * anything else is a broken connection. */
      take_ssl_error(c->err, sizeof c->err, "TLS write failed");
      return PV_EIO;
    }
    p += w;
    n -= (size_t)w;
  }
  return PV_OK;
}

const uint8_t *pv_tls_out(pv_tls_conn_t *c, size_t *len) {
  char *p = NULL;
  long n = BIO_get_mem_data(c->wbio, &p);
  *len = n > 0 ? (size_t)n : 0;
  return (const uint8_t *)p;
}

/* A fresh, empty memory BIO in place of one whose data is all consumed:
 * a drained memory BIO keeps its largest allocation otherwise. */
static BIO *fresh_bio(void) {
  BIO *b = BIO_new(BIO_s_mem());
  if (b)
    BIO_set_mem_eof_return(b, -1);
  return b;
}

void pv_tls_out_done(pv_tls_conn_t *c) {
  size_t len;
  (void)pv_tls_out(c, &len);
  if (len == 0)
    return;
  BIO *b = fresh_bio();
  if (b) {
    SSL_set0_wbio(c->ssl, b); /* frees the old one */
    c->wbio = b;
    return;
  }
  /* Out of memory: drop the data in place, keeping the allocation. */
  (void)BIO_reset(c->wbio);
}

void pv_tls_trim(pv_tls_conn_t *c) {
  if (BIO_ctrl_pending(c->rbio) > 0)
    return;
  BUF_MEM *bm = NULL;
  BIO_get_mem_ptr(c->rbio, &bm);
  if (!bm || bm->max == 0)
    return;
  BIO *b = fresh_bio();
  if (!b)
    return;
  SSL_set0_rbio(c->ssl, b); /* frees the old one */
  c->rbio = b;
}

void pv_tls_shutdown(pv_tls_conn_t *c) {
  if (c->established && !(SSL_get_shutdown(c->ssl) & SSL_SENT_SHUTDOWN)) {
    ERR_clear_error();
    (void)SSL_shutdown(c->ssl);
    ERR_clear_error();
  }
}

const char *pv_tls_conn_error(const pv_tls_conn_t *c) {
  return c->err[0] ? c->err : "TLS error";
}

const char *pv_tls_describe(const pv_tls_conn_t *c, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/%s", SSL_get_version(c->ssl),
           SSL_get_cipher_name(c->ssl));
  return buf;
}

bool pv_tls_same_cert(const pv_tls_conn_t *c, const pv_tls_t *t) {
  if (!t || !c->established)
    return false;
  SSL_CTX *ctx = ctx_ref((pv_tls_t *)t, PV_TLS_ACCEPT);
  if (!ctx)
    return false;
  X509 *mine = SSL_CTX_get0_certificate(ctx);
  X509 *peer = SSL_get0_peer_certificate(c->ssl);
  bool same = mine && peer && X509_cmp(mine, peer) == 0;
  SSL_CTX_free(ctx);
  return same;
}

/* ---- SCRAM -PLUS ----------------------------------------------------- */

static bool ends_with_plus(const char *name, size_t len) {
  return len >= 5 && memcmp(name + len - 5, "-PLUS", 5) == 0;
}

int pv_tls_sasl_strip_plus(const uint8_t *body, size_t len, uint8_t *out,
                           size_t cap) {
  if (len < 5 || pv_get_u32(body) != 10 || body[len - 1] != 0)
    return PV_EPROTO;
  if (cap < len)
    return PV_ELIMIT;
  memcpy(out, body, 4);
  size_t pos = 4, o = 4;
  bool stripped = false;
  for (;;) {
    const uint8_t *nul = memchr(body + pos, 0, len - pos);
    if (!nul)
      return PV_EPROTO;
    size_t n = (size_t)(nul - (body + pos));
    if (n == 0)
      break; /* the list's terminator */
    if (ends_with_plus((const char *)body + pos, n)) {
      stripped = true;
    } else {
      memcpy(out + o, body + pos, n + 1);
      o += n + 1;
    }
    pos += n + 1;
  }
  if (pos != len - 1)
    return PV_EPROTO; /* bytes after the terminator */
  if (!stripped)
    return PV_ENOENT;
  out[o++] = 0;
  return (int)o;
}

int pv_tls_sasl_cbind_flag(const uint8_t *body, size_t len) {
  const uint8_t *nul = memchr(body, 0, len);
  if (!nul)
    return PV_EPROTO;
  size_t pos = (size_t)(nul - body) + 1;
  if (len - pos < 4)
    return PV_EPROTO;
  uint32_t n = pv_get_u32(body + pos);
  pos += 4;
  if (n == 0xffffffffu || n == 0)
    return PV_ENOENT;
  if (n > len - pos)
    return PV_EPROTO;
  uint8_t flag = body[pos];
  if (flag != 'n' && flag != 'y' && flag != 'p')
    return PV_EPROTO;
  return flag;
}
