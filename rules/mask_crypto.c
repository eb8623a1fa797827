/* Owns the keys of the masking layer: HKDF derivation of per-purpose keys,
 * HMAC-SHA256 from pre-keyed states, the expanded byte stream and the keyed
 * integer permutation. Pure: no I/O, no globals, no allocation per value. */
#include "mask_internal.h"

#include <assert.h>
#include <stddef.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#define HKDF_SALT "pgveil-mask-v1"
#define FEISTEL_ROUNDS 8
#define WALK_MAX 256 /* cycle-walk bound; each step leaves with p >= 1/2 */

/* The layout behind pv_mask_key_t.state_. */
typedef struct {
  SHA256_CTX inner; /* after absorbing key ^ ipad */
  SHA256_CTX outer; /* after absorbing key ^ opad */
} key_state_t;

_Static_assert(sizeof(key_state_t) <= sizeof(((pv_mask_key_t *)0)->state_),
               "pv_mask_key_t.state_ too small for two SHA256_CTX");

/* The states are copied in and out with memcpy: state_ is declared as
 * bytes, and memcpy is the access that strict aliasing allows. */
static void load_inner(const pv_mask_key_t *k, SHA256_CTX *c) {
  memcpy(c, k->state_ + offsetof(key_state_t, inner), sizeof *c);
}

static void load_outer(const pv_mask_key_t *k, SHA256_CTX *c) {
  memcpy(c, k->state_ + offsetof(key_state_t, outer), sizeof *c);
}

/* Standard HMAC key schedule (RFC 2104) from raw key bytes. */
void pv__mask_key_from_raw(const uint8_t *raw, size_t n, pv_mask_key_t *out) {
  uint8_t block[SHA256_CBLOCK], pad[SHA256_CBLOCK];
  key_state_t st;
  memset(out, 0, sizeof *out);
  memset(block, 0, sizeof block);
  if (n > sizeof block)
    SHA256(raw, n, block);
  else if (n)
    memcpy(block, raw, n);
  for (size_t i = 0; i < sizeof pad; i++)
    pad[i] = block[i] ^ 0x36;
  SHA256_Init(&st.inner);
  SHA256_Update(&st.inner, pad, sizeof pad);
  for (size_t i = 0; i < sizeof pad; i++)
    pad[i] = block[i] ^ 0x5c;
  SHA256_Init(&st.outer);
  SHA256_Update(&st.outer, pad, sizeof pad);
  memcpy(out->state_, &st, sizeof st);
  OPENSSL_cleanse(&st, sizeof st);
  OPENSSL_cleanse(block, sizeof block);
  OPENSSL_cleanse(pad, sizeof pad);
  out->magic_ = PV__KEY_MAGIC;
}

static int hkdf(const uint8_t *secret, size_t len, const uint8_t *info,
                size_t info_len, uint8_t okm[32]) {
  int rc = PV_ENOMEM;
  size_t outlen = 32;
  EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
  if (!pctx)
    goto fail;
  if (EVP_PKEY_derive_init(pctx) <= 0 ||
      EVP_PKEY_CTX_set_hkdf_md(pctx, EVP_sha256()) <= 0 ||
      EVP_PKEY_CTX_set1_hkdf_salt(pctx, (const unsigned char *)HKDF_SALT,
                                  (int)strlen(HKDF_SALT)) <= 0 ||
      EVP_PKEY_CTX_set1_hkdf_key(pctx, secret, (int)len) <= 0 ||
      EVP_PKEY_CTX_add1_hkdf_info(pctx, info, (int)info_len) <= 0 ||
      EVP_PKEY_derive(pctx, okm, &outlen) <= 0 || outlen != 32)
    goto fail;
  rc = PV_OK;
fail:
  EVP_PKEY_CTX_free(pctx); /* frees (and OpenSSL wipes) its key copy */
  return rc;
}

int pv_mask_key_derive(const uint8_t *secret, size_t len, const char *purpose,
                       pv_mask_key_t *out) {
  /* HKDF info is bytes, not a string: the prefix carries no terminator */
  static const uint8_t prefix[8] = {'p', 'u', 'r', 'p', 'o', 's', 'e', ':'};
  uint8_t info[sizeof prefix + PV_MASK_PURPOSE_MAX];
  uint8_t okm[32];
  int rc = PV_EINVAL;
  if (!out)
    return PV_EINVAL;
  memset(out, 0, sizeof *out);
  if (!secret || len < PV_MASK_SECRET_MIN || len > (size_t)INT32_MAX ||
      !purpose)
    goto fail;
  size_t plen = strnlen(purpose, PV_MASK_PURPOSE_MAX + 1);
  if (plen > PV_MASK_PURPOSE_MAX)
    goto fail;
  memcpy(info, prefix, sizeof prefix);
  memcpy(info + sizeof prefix, purpose, plen);
  rc = hkdf(secret, len, info, sizeof prefix + plen, okm);
  if (rc < 0)
    goto fail;
  pv__mask_key_from_raw(okm, sizeof okm, out);
  rc = PV_OK;
fail:
  OPENSSL_cleanse(okm, sizeof okm);
  return rc;
}

void pv_mask_key_dispose(pv_mask_key_t *k) {
  if (k)
    OPENSSL_cleanse(k, sizeof *k);
}

void pv__hmac_begin(pv__hmac_t *h, const pv_mask_key_t *k, uint8_t tag,
                    const char *column_id) {
  uint8_t hdr[5];
  size_t cl = column_id ? strlen(column_id) : 0;
  assert(k->magic_ == PV__KEY_MAGIC);
  load_inner(k, &h->inner);
  hdr[0] = tag;
  /* Length-prefixed so that (column, value) pairs cannot run together. */
  pv__put_be32(hdr + 1, (uint32_t)cl);
  SHA256_Update(&h->inner, hdr, sizeof hdr);
  if (cl)
    SHA256_Update(&h->inner, column_id, cl);
}

void pv__hmac_update(pv__hmac_t *h, const void *p, size_t n) {
  if (n)
    SHA256_Update(&h->inner, p, n);
}

void pv__hmac_final(pv__hmac_t *h, const pv_mask_key_t *k, uint8_t out[32]) {
  uint8_t ih[32];
  SHA256_CTX outer;
  load_outer(k, &outer);
  SHA256_Final(ih, &h->inner);
  SHA256_Update(&outer, ih, sizeof ih);
  SHA256_Final(out, &outer);
  OPENSSL_cleanse(ih, sizeof ih);
  OPENSSL_cleanse(&outer, sizeof outer);
  OPENSSL_cleanse(h, sizeof *h);
}

void pv__hmac_raw(const pv_mask_key_t *k, const void *msg, size_t n,
                  uint8_t out[32]) {
  pv__hmac_t h;
  load_inner(k, &h.inner);
  pv__hmac_update(&h, msg, n);
  pv__hmac_final(&h, k, out);
}

void pv__stream_init(pv__stream_t *s, const pv_mask_key_t *k,
                     const uint8_t seed[32]) {
  s->k = k;
  memcpy(s->seed, seed, 32);
  s->counter = 0;
  s->pos = sizeof s->block;
}

static uint8_t stream_byte(pv__stream_t *s) {
  if (s->pos >= sizeof s->block) {
    pv__hmac_t h;
    uint8_t ctr[4];
    load_inner(s->k, &h.inner);
    pv__put_be32(ctr, s->counter++);
    uint8_t tag = MK_TAG_EXPAND;
    pv__hmac_update(&h, &tag, 1);
    pv__hmac_update(&h, s->seed, sizeof s->seed);
    pv__hmac_update(&h, ctr, sizeof ctr);
    pv__hmac_final(&h, s->k, s->block);
    s->pos = 0;
  }
  return s->block[s->pos++];
}

unsigned pv__stream_uniform(pv__stream_t *s, unsigned n) {
  /* Reject the top 256 % n byte values so every residue is equally likely. */
  unsigned lim = 256 - (256 % n);
  for (;;) {
    unsigned b = stream_byte(s);
    if (b < lim)
      return b % n;
  }
}

void pv__stream_wipe(pv__stream_t *s) { OPENSSL_cleanse(s, sizeof *s); }

/* One balanced Feistel permutation of [0, 2^bits). The round function is
 * HMAC(key, 'I', column, bits, sign, round, right half): prefix computed
 * once per value, then copied per round. */
static uint64_t feistel(const pv__hmac_t *prefix, const pv_mask_key_t *k,
                        unsigned bits, uint64_t x) {
  unsigned half = bits / 2;
  uint64_t mask = half == 32 ? 0xffffffffu : ((uint64_t)1 << half) - 1;
  uint64_t l = (x >> half) & mask, r = x & mask;
  for (unsigned round = 0; round < FEISTEL_ROUNDS; round++) {
    pv__hmac_t h = *prefix;
    uint8_t in[5], mac[32];
    in[0] = (uint8_t)round;
    pv__put_be32(in + 1, (uint32_t)r);
    pv__hmac_update(&h, in, sizeof in);
    pv__hmac_final(&h, k, mac);
    uint64_t f = ((uint64_t)pv__be32(mac) << 32 | pv__be32(mac + 4)) & mask;
    uint64_t nl = r;
    r = l ^ f;
    l = nl;
  }
  return (l << half) | r;
}

bool pv__mask_int_perm(const pv_mask_key_t *k, const char *column_id,
                       unsigned bits, int64_t v, int64_t *res) {
  bool neg = v < 0;
  /* Map a sign half onto [0, 2^(bits-1)): -1 - v is in range for every
   * negative v, including the type's minimum. */
  uint64_t u = neg ? (uint64_t)(-1 - v) : (uint64_t)v;
  uint64_t lim = (uint64_t)1 << (bits - 1);
  uint8_t hdr[2] = {(uint8_t)bits, (uint8_t)neg};
  pv__hmac_t prefix;
  pv__hmac_begin(&prefix, k, MK_TAG_INT, column_id);
  pv__hmac_update(&prefix, hdr, sizeof hdr);
  /* Cycle-walking: apply the permutation of [0, 2^bits) until the result
   * falls back into [0, 2^(bits-1)); this restricts it to a permutation
   * of that half. */
  bool ok = false;
  for (int i = 0; i < WALK_MAX; i++) {
    u = feistel(&prefix, k, bits, u);
    if (u < lim) {
      ok = true;
      break;
    }
  }
  OPENSSL_cleanse(&prefix, sizeof prefix);
  if (!ok)
    return false;
  *res = neg ? -1 - (int64_t)u : (int64_t)u;
  return true;
}
