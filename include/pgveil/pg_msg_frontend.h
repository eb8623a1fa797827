/* Decoders and encoders for the messages a client (frontend) sends after
 * startup: Query, Parse, Bind, Describe, Execute, Close, and the encoders
 * pgveil needs to inject its own. Pure: no I/O, no globals; decoded slices
 * point into the message body and live as long as it does. Every decoder
 * validates lengths and NUL terminators and returns PV_OK or PV_EPROTO. */
#ifndef PGVEIL_PG_MSG_FRONTEND_H
#define PGVEIL_PG_MSG_FRONTEND_H

#include <stddef.h>
#include <stdint.h>

#include "pgveil/errors.h"
#include "pgveil/pg_frame.h"

/* Frontend message type bytes. */
enum {
  PV_FE_QUERY = 'Q',
  PV_FE_PARSE = 'P',
  PV_FE_BIND = 'B',
  PV_FE_DESCRIBE = 'D',
  PV_FE_EXECUTE = 'E',
  PV_FE_CLOSE = 'C',
  PV_FE_SYNC = 'S',
  PV_FE_FLUSH = 'H',
  PV_FE_TERMINATE = 'X',
  PV_FE_COPY_DATA = 'd',
  PV_FE_COPY_DONE = 'c',
  PV_FE_COPY_FAIL = 'f',
  PV_FE_FUNCTION_CALL = 'F',
  PV_FE_PASSWORD = 'p', /* also SASLInitialResponse, SASLResponse, GSS */
};

typedef struct {
  const char *sql; /* NUL-terminated */
  size_t sql_len;
} pv_fe_query_t;

typedef struct {
  const char *stmt; /* "" = unnamed */
  const char *sql;
  size_t sql_len;
  uint16_t nparam_types;
  const uint8_t *param_types; /* nparam_types big-endian uint32 OIDs */
} pv_fe_parse_t;

typedef struct {
  const char *portal; /* "" = unnamed */
  const char *stmt;
  uint16_t nparam_formats;
  const uint8_t *param_formats; /* big-endian int16 each */
  uint16_t nparams;
  const uint8_t *params;    /* start of the parameter values (len-prefixed) */
  uint16_t nresult_formats; /* 0: all text; 1: applies to all; else per col */
  const uint8_t *result_formats; /* big-endian int16 each */
} pv_fe_bind_t;

typedef struct {
  uint8_t kind; /* 'S' statement or 'P' portal */
  const char *name;
} pv_fe_target_t; /* Describe and Close */

typedef struct {
  const char *portal;
  uint32_t max_rows; /* 0 = no limit */
} pv_fe_execute_t;

PV_WARN_UNUSED int pv_fe_query_decode(const pv_msg_t *m, pv_fe_query_t *out);
PV_WARN_UNUSED int pv_fe_parse_decode(const pv_msg_t *m, pv_fe_parse_t *out);
PV_WARN_UNUSED int pv_fe_bind_decode(const pv_msg_t *m, pv_fe_bind_t *out);
PV_WARN_UNUSED int pv_fe_describe_decode(const pv_msg_t *m,
                                         pv_fe_target_t *out);
PV_WARN_UNUSED int pv_fe_close_decode(const pv_msg_t *m, pv_fe_target_t *out);
PV_WARN_UNUSED int pv_fe_execute_decode(const pv_msg_t *m,
                                        pv_fe_execute_t *out);

/* Result format of column i (0-based) of ncols under a Bind's format codes:
 * 0 text, 1 binary. Returns PV_EPROTO for a count that is neither 0, 1 nor
 * ncols, or a code other than 0/1. */
PV_WARN_UNUSED int pv_fe_bind_result_format(const pv_fe_bind_t *b,
                                            uint16_t ncols, uint16_t i,
                                            int16_t *fmt);

/* Encodes Describe(kind, name) into out[0..cap). Returns bytes written or
 * PV_ELIMIT. */
PV_WARN_UNUSED int pv_fe_describe_encode(uint8_t *out, size_t cap, uint8_t kind,
                                         const char *name);

#endif
