/* Framing of PostgreSQL v3 protocol messages in both directions: regular
 * messages (type byte + int32 length) and the untyped startup-phase packets.
 * Pure: no I/O, no globals, every limit an argument. Parsers copy nothing;
 * their slices point into the caller's buffer. */
#ifndef PGVEIL_PG_FRAME_H
#define PGVEIL_PG_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "pgveil/errors.h"

#define PV_FRAME_HEADER 5u /* type byte + int32 length */

/* One regular message. body points into the caller's buffer and is valid
 * while that buffer is; len counts body bytes only (the wire length - 4). */
typedef struct {
  uint8_t type;
  uint32_t len;
  const uint8_t *body;
} pv_msg_t;

/* Frames one regular message at buf[0..n).
 * Returns the bytes the whole message occupies (PV_FRAME_HEADER + len) when
 * it is complete; PV_EAGAIN when more input is needed (if the 5-byte header
 * is present, OUT: out->type and out->len are set so the caller knows the
 * total size); PV_EPROTO when the length field is below 4; PV_ETOOBIG when
 * the body is longer than max_body. */
PV_WARN_UNUSED int pv_frame_parse(const uint8_t *buf, size_t n,
                                  uint32_t max_body, pv_msg_t *out);

/* Startup-phase packets: int32 length, int32 code, payload. */
typedef enum {
  PV_STARTUP_NORMAL = 1, /* StartupMessage (protocol 3.x) */
  PV_STARTUP_SSL,        /* SSLRequest */
  PV_STARTUP_GSSENC,     /* GSSENCRequest */
  PV_STARTUP_CANCEL,     /* CancelRequest */
} pv_startup_kind_t;

#define PV_PROTO_SSL_CODE 80877103u
#define PV_PROTO_GSSENC_CODE 80877104u
#define PV_PROTO_CANCEL_CODE 80877102u
#define PV_CANCEL_KEY_MAX 256u /* protocol 3.2 keys are up to 256 bytes */

typedef struct {
  const char *key; /* NUL-terminated, inside the caller's buffer */
  const char *val; /* NUL-terminated, inside the caller's buffer */
} pv_param_t;

/* A parsed startup-phase packet. Owner: the caller; slices point into the
 * buffer passed to pv_startup_parse and die with it. */
typedef struct {
  pv_startup_kind_t kind;
  uint32_t version;          /* NORMAL: major << 16 | minor */
  pv_param_t *params;        /* NORMAL: caller-provided array */
  size_t nparams;            /* NORMAL: entries filled */
  uint32_t cancel_pid;       /* CANCEL */
  const uint8_t *cancel_key; /* CANCEL: 4..PV_CANCEL_KEY_MAX bytes */
  size_t cancel_key_len;
} pv_startup_t;

/* Parses one startup-phase packet at buf[0..n). params/max_params is a
 * caller-provided array for StartupMessage parameters. Returns the packet's
 * size when complete, PV_EAGAIN for partial input, PV_ETOOBIG above
 * max_len, PV_ELIMIT for more than max_params parameters, PV_EPROTO for a
 * malformed packet (bad length, unknown code, protocol major != 3,
 * unterminated strings, missing final NUL, missing "user"). */
PV_WARN_UNUSED int pv_startup_parse(const uint8_t *buf, size_t n,
                                    uint32_t max_len, pv_param_t *params,
                                    size_t max_params, pv_startup_t *out);

/* Encodes a StartupMessage with the given version and parameters into
 * out[0..cap). Returns the bytes written, or PV_ELIMIT if cap is too small. */
PV_WARN_UNUSED int pv_startup_encode(uint8_t *out, size_t cap, uint32_t version,
                                     const pv_param_t *params, size_t n);

/* Encodes a CancelRequest. Returns bytes written or PV_ELIMIT/PV_EINVAL. */
PV_WARN_UNUSED int pv_cancel_encode(uint8_t *out, size_t cap, uint32_t pid,
                                    const uint8_t *key, size_t key_len);

/* Big-endian helpers shared by the codecs. */
static inline uint32_t pv_get_u32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         (uint32_t)p[3];
}
static inline uint16_t pv_get_u16(const uint8_t *p) {
  return (uint16_t)((uint16_t)p[0] << 8 | (uint16_t)p[1]);
}
static inline void pv_put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}
static inline void pv_put_u16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

#endif
