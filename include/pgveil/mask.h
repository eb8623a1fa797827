/* Masking transformations: applies a parsed action (pgveil/action.h) to one
 * field value in PostgreSQL's text or binary wire format (typoutput/typsend
 * encodings). Pure: no I/O, no globals, no allocation per value.
 *
 * Hot path: a rewriter builds one pv_mask_key_t per (secret, purpose) when a
 * policy snapshot is built, checks pv_mask_fits() per column when the plan
 * is built, sizes its scratch with pv_mask_out_max() and then calls
 * pv_mask_apply() per field. A key is read-only after derivation and may be
 * shared by every worker thread.
 *
 * What each action does (text-like = text, varchar, bpchar, name):
 *  clear       any type: the value unchanged.
 *  withhold    any type: NULL.
 *  redact('c') text-like: the constant, cut to varchar(n)/char(n) (and to
 *              63 bytes for name), char(n) padded. json/jsonb: the constant
 *              as a JSON string.
 *  hash        keyed pseudonym, deterministic per (key, column_id, value):
 *              - text-like: format-preserving. ASCII letters stay letters of
 *                the same case, digits stay digits, other ASCII bytes
 *                (separators, '@', '.', spaces) stay as they are, a
 *                non-ASCII character becomes one lowercase ASCII letter, so
 *                the character count and the shape stay and the output is
 *                ASCII. Each output character is picked from a byte stream
 *                expanded (HMAC with a counter) from HMAC-SHA256(key,
 *                column_id, whole value): nothing is derived per input
 *                character. char(n): trailing blanks are not part of the
 *                value (as in PostgreSQL) and the result is padded again.
 *              - int2/int4/int8: a keyed permutation of the type's range
 *                that keeps the sign (a Feistel network whose round function
 *                is HMAC-SHA256(key, column_id, round, half), cycle-walked
 *                into range). A permutation rather than a truncated HMAC so
 *                that distinct ids never merge: an int4 HMAC would collide
 *                after ~77k distinct values and break GROUP BY and joins.
 *              - uuid: 16 bytes of HMAC-SHA256(key, column_id, uuid), marked
 *                version 4 / RFC 4122 variant.
 *              - date: a keyed date in 1900-01-01 .. 2099-12-31.
 *              The text and binary encodings of one value give the same
 *              pseudonym (integers, uuids and dates are hashed in a canonical
 *              form).
 *  hash(hex)   text-like: the 64 lowercase hex digits of HMAC-SHA256(key,
 *              column_id, value), cut to varchar(n)/char(n) and to 63 bytes
 *              for name; char(n) padded.
 *  mask(keep_first=F, keep_last=L, char=C)
 *              text-like: every character but the first F and the last L is
 *              replaced by C (one byte per character, so the character count
 *              stays). When F + L >= the character count, every character
 *              is replaced: short values must not pass in clear.
 *  mask_email  text-like: first character of the local part, then "***",
 *              then '@' and the domain as given ("alice@example.com" ->
 *              "a***@example.com"; no '@': "a***"). The last '@' splits.
 *              When "***" would not fit varchar(n)/char(n) (or name's 63
 *              bytes), the local part keeps its length instead ("a*@x.io"),
 *              which fits whenever the input did.
 *  generalize(year|month|decade)
 *              date, timestamp, timestamptz: the first instant of the period,
 *              same type: 1987-06-12 -> 1987-01-01 (year), 1987-06-01
 *              (month), 1980-01-01 (decade). Text must be in DateStyle ISO
 *              (PostgreSQL's default, e.g. "1987-06-12 14:30:00.5+02"); the
 *              result keeps the text's UTC offset as given ("1987-01-01
 *              00:00:00+02") and its " BC" marker. Binary timestamptz is a
 *              UTC instant and is truncated in UTC. infinity stays infinity.
 *              A result before PostgreSQL's first date is clamped to it.
 *  generalize(bucket=N)
 *              int2/int4/int8/numeric: floor(value / N) * N. Numeric keeps
 *              its scale (the text's number of fraction digits, the binary
 *              dscale) with zero fraction digits; NaN and +-Infinity stay. A
 *              result outside the type's range is clamped to the type's
 *              minimum (integers); a numeric result that no longer fits the
 *              column's numeric(p,s) is withheld, and so is a binary
 *              numeric whose bucket would be more than 24 bytes longer than
 *              the value (>= 10^24 stored with few digits, e.g. 1e30 with
 *              bucket=7: binary numeric has no sparse form).
 *  generalize(zip3)
 *              text-like: the first 3 characters stay, every later ASCII
 *              letter or digit and every non-ASCII character becomes '*',
 *              other characters stay ("94107-1234" -> "941**-****",
 *              "SW1A 1AA" -> "SW1* ***"): visibly coarsened, never a real
 *              code, same length.
 *
 * Text-like values: characters are counted as UTF-8 sequences (an invalid
 * byte counts as one character); every byte this layer writes itself is
 * ASCII, so outputs stay valid in any client encoding. A NUL byte in a
 * text-like value is invalid input (PV_EPROTO). */
#ifndef PGVEIL_MASK_H
#define PGVEIL_MASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgveil/action.h"
#include "pgveil/errors.h"

/* Type OIDs (PostgreSQL's pg_type.dat) this layer knows. RowDescription
 * reports the base type of a domain, so domains need nothing special. */
#define PV_OID_BOOL 16
#define PV_OID_BYTEA 17
#define PV_OID_NAME 19
#define PV_OID_INT8 20
#define PV_OID_INT2 21
#define PV_OID_INT4 23
#define PV_OID_TEXT 25
#define PV_OID_JSON 114
#define PV_OID_FLOAT4 700
#define PV_OID_FLOAT8 701
#define PV_OID_BPCHAR 1042
#define PV_OID_VARCHAR 1043
#define PV_OID_DATE 1082
#define PV_OID_TIMESTAMP 1114
#define PV_OID_TIMESTAMPTZ 1184
#define PV_OID_NUMERIC 1700
#define PV_OID_UUID 2950
#define PV_OID_JSONB 3802

#define PV_MASK_NULL (-1)       /* pv_mask_apply: send NULL (length -1) */
#define PV_MASK_SECRET_MIN 16   /* bytes of secret pv_mask_key_derive wants */
#define PV_MASK_PURPOSE_MAX 255 /* bytes of a purpose name */

/* A per-purpose HMAC-SHA256 key, derived once per policy snapshot with HKDF
 * from the rules' secret, so pseudonyms of different purposes (and of
 * different secrets) do not link. Holds the pre-keyed SHA-256 inner and
 * outer states: copying them per value costs no allocation and no key
 * schedule. Owner: the policy snapshot (embed it; no heap inside); read-only
 * after pv_mask_key_derive, shareable between threads; wipe with
 * pv_mask_key_dispose. Fields are private to rules/mask_*.c. */
typedef struct pv_mask_key {
  _Alignas(16) unsigned char state_[256];
  uint32_t magic_;
} pv_mask_key_t;

/* Derives the key of `purpose` (NUL-terminated, at most PV_MASK_PURPOSE_MAX
 * bytes) from secret[0..len): HKDF-SHA256(salt "pgveil-mask-v1",
 * info "purpose:" purpose). OUT: *out. Returns PV_OK, PV_EINVAL (secret
 * shorter than PV_MASK_SECRET_MIN, purpose NULL or too long) or PV_ENOMEM
 * (OpenSSL failed). Intermediate key bytes are wiped with OPENSSL_cleanse;
 * the caller still owns and wipes `secret`. */
PV_WARN_UNUSED int pv_mask_key_derive(const uint8_t *secret, size_t len,
                                      const char *purpose, pv_mask_key_t *out);

/* Wipes a key (OPENSSL_cleanse). Safe on a zeroed or already wiped key. */
void pv_mask_key_dispose(pv_mask_key_t *k);

/* Whether action a is defined for a column of this type (typmod as in
 * RowDescription / pg_attribute, -1 for none). The rules checker refuses
 * an action that does not fit; pv_mask_apply withholds it. clear and
 * withhold fit every type. */
bool pv_mask_fits(const pv_action_t *a, uint32_t type_oid, int32_t typmod);

/* An upper bound of pv_mask_apply's output for an input of len bytes: a
 * scratch buffer this large never gets PV_ELIMIT. */
size_t pv_mask_out_max(const pv_action_t *a, uint32_t type_oid, int32_t typmod,
                       size_t len);

/* Applies action a to one non-NULL field value val[0..len) of a column of
 * type type_oid/typmod sent in format (0 text, 1 binary). NULL fields stay
 * NULL under every action: do not call this for them. column_id names the
 * pseudonym domain, e.g. "public.customers.email": the same value gets a
 * different pseudonym in another domain, so pass the same string for
 * columns that must still join (a foreign key and its target). key may be
 * NULL for actions other than hash and hash(hex).
 * OUT: out[0..cap), which must not overlap val.
 * Returns:
 *  >= 0          the length of the new value in out;
 *  PV_MASK_NULL  send NULL (withhold, or an action that does not fit the
 *                type: never the clear value);
 *  PV_ELIMIT     cap is too small: grow to pv_mask_out_max() and retry;
 *  PV_EPROTO     val is not a valid value of the type in that format
 *                (e.g. a binary int4 of 3 bytes, a non-ISO date text);
 *  PV_EINVAL     a, format or key unusable (hash without a key).
 * The caller sends NULL on every negative result. */
PV_WARN_UNUSED int64_t pv_mask_apply(const pv_action_t *a,
                                     const pv_mask_key_t *key,
                                     const char *column_id, uint32_t type_oid,
                                     int32_t typmod, int16_t format,
                                     const uint8_t *val, size_t len,
                                     uint8_t *out, size_t cap);

#endif
