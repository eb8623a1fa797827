/* Internals shared by rules/mask*.c: the keyed HMAC, the byte stream
 * expanded from it, the output writer and the per-type appliers.
 * Not for other modules: they use include/pgveil/mask.h. */
#ifndef PGVEIL_MASK_INTERNAL_H
#define PGVEIL_MASK_INTERNAL_H

/* The low-level SHA256_CTX is a plain struct: copying a pre-keyed state per
 * value costs no allocation, unlike EVP_MD_CTX_copy_ex in OpenSSL 3.0,
 * which re-creates the provider context on every copy. */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgveil/mask.h"

/* pv_mask_key_t.magic_ of a derived, not yet wiped key. */
#define PV__KEY_MAGIC 0x70766b31u

/* Domain-separation tags: the first byte hashed for each use of the key. */
enum {
  MK_TAG_TEXT = 'F', /* format-preserving text */
  MK_TAG_HEX = 'X',  /* hash(hex) */
  MK_TAG_INT = 'I',  /* integer permutation round */
  MK_TAG_UUID = 'U',
  MK_TAG_DATE = 'D',
  MK_TAG_EXPAND = 'E', /* byte stream block */
};

/* An HMAC computation in progress: the inner hash state. Stack only. */
typedef struct {
  SHA256_CTX inner;
} pv__hmac_t;

/* Starts HMAC(key, tag || be32(len(column_id)) || column_id || ...). */
void pv__hmac_begin(pv__hmac_t *h, const pv_mask_key_t *k, uint8_t tag,
                    const char *column_id);
void pv__hmac_update(pv__hmac_t *h, const void *p, size_t n);
/* Finishes into out and wipes h. */
void pv__hmac_final(pv__hmac_t *h, const pv_mask_key_t *k, uint8_t out[32]);

/* Plain HMAC(key, msg) and a key from raw bytes: for known-answer tests. */
void pv__hmac_raw(const pv_mask_key_t *k, const void *msg, size_t n,
                  uint8_t out[32]);
void pv__mask_key_from_raw(const uint8_t *raw, size_t n, pv_mask_key_t *out);

/* Pseudo-random bytes: block i = HMAC(key, 'E' || seed || be32(i)). */
typedef struct {
  const pv_mask_key_t *k;
  uint8_t seed[32];
  uint8_t block[32];
  uint32_t counter;
  uint32_t pos; /* next unread byte of block; 32 = exhausted */
} pv__stream_t;

void pv__stream_init(pv__stream_t *s, const pv_mask_key_t *k,
                     const uint8_t seed[32]);
/* A uniform value in [0, n), 1 <= n <= 256 (rejection sampling). */
unsigned pv__stream_uniform(pv__stream_t *s, unsigned n);
void pv__stream_wipe(pv__stream_t *s);

/* Keyed permutation of the signed integers of `bits` bits (16, 32, 64)
 * that keeps the sign. OUT: *res. False only if cycle-walking did not end
 * in bound (probability below 2^-200): the caller withholds. */
bool pv__mask_int_perm(const pv_mask_key_t *k, const char *column_id,
                       unsigned bits, int64_t v, int64_t *res);

/* Output writer: bytes past cap are counted, not written, so one check at
 * the end turns overflow into PV_ELIMIT. */
typedef struct {
  uint8_t *p;
  size_t cap;
  size_t n;
} pv__out_t;

static inline void pv__put(pv__out_t *o, const void *src, size_t n) {
  if (o->n <= o->cap && n <= o->cap - o->n) {
    const uint8_t *s = src;
    for (size_t i = 0; i < n; i++)
      o->p[o->n + i] = s[i];
  }
  o->n += n;
}

static inline void pv__putc(pv__out_t *o, uint8_t c) {
  if (o->n < o->cap)
    o->p[o->n] = c;
  o->n++;
}

/* The result of a writer: its length or PV_ELIMIT. */
static inline int64_t pv__out_result(const pv__out_t *o) {
  return o->n > o->cap ? PV_ELIMIT : (int64_t)o->n;
}

static inline uint32_t pv__be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}

static inline void pv__put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* Per-type appliers (format 0 text, 1 binary); same results as
 * pv_mask_apply. The action already fits the type. */
int64_t pv__mask_text(const pv_action_t *a, const pv_mask_key_t *k,
                      const char *col, uint32_t oid, int32_t typmod,
                      const uint8_t *val, size_t len, pv__out_t *o);
int64_t pv__mask_json_redact(const pv_action_t *a, uint32_t oid, int16_t format,
                             pv__out_t *o);
int64_t pv__mask_int(const pv_action_t *a, const pv_mask_key_t *k,
                     const char *col, uint32_t oid, int16_t format,
                     const uint8_t *val, size_t len, pv__out_t *o);
int64_t pv__mask_numeric(const pv_action_t *a, int32_t typmod, int16_t format,
                         const uint8_t *val, size_t len, pv__out_t *o);
int64_t pv__mask_datetime(const pv_action_t *a, const pv_mask_key_t *k,
                          const char *col, uint32_t oid, int16_t format,
                          const uint8_t *val, size_t len, pv__out_t *o);
int64_t pv__mask_uuid(const pv_action_t *a, const pv_mask_key_t *k,
                      const char *col, int16_t format, const uint8_t *val,
                      size_t len, pv__out_t *o);

#endif
