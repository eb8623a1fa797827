/* Decoders and encoders for the messages a server (backend) sends:
 * RowDescription, DataRow, ErrorResponse/NoticeResponse, CommandComplete,
 * ReadyForQuery, BackendKeyData, Authentication, CopyOut/CopyIn/CopyBoth
 * responses. Pure: no I/O, no globals. Server bytes are untrusted: every
 * count and length is checked against the message body; decoders return
 * PV_OK or PV_EPROTO and never read outside the body. */
#ifndef PGVEIL_PG_MSG_BACKEND_H
#define PGVEIL_PG_MSG_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "pgveil/errors.h"
#include "pgveil/pg_frame.h"

/* Backend message type bytes. */
enum {
  PV_BE_AUTH = 'R',
  PV_BE_KEY_DATA = 'K',
  PV_BE_PARAMETER_STATUS = 'S',
  PV_BE_READY = 'Z',
  PV_BE_ROW_DESCRIPTION = 'T',
  PV_BE_DATA_ROW = 'D',
  PV_BE_COMMAND_COMPLETE = 'C',
  PV_BE_EMPTY_QUERY = 'I',
  PV_BE_ERROR = 'E',
  PV_BE_NOTICE = 'N',
  PV_BE_NOTIFICATION = 'A',
  PV_BE_PARSE_COMPLETE = '1',
  PV_BE_BIND_COMPLETE = '2',
  PV_BE_CLOSE_COMPLETE = '3',
  PV_BE_NO_DATA = 'n',
  PV_BE_PORTAL_SUSPENDED = 's',
  PV_BE_PARAMETER_DESCRIPTION = 't',
  PV_BE_COPY_IN = 'G',
  PV_BE_COPY_OUT = 'H',
  PV_BE_COPY_BOTH = 'W',
  PV_BE_COPY_DATA = 'd',
  PV_BE_COPY_DONE = 'c',
  PV_BE_FUNCTION_RESULT = 'V',
  PV_BE_NEGOTIATE_VERSION = 'v',
};

/* One column of a RowDescription. name points into the message body. */
typedef struct {
  const char *name;
  uint32_t table_oid; /* 0 when not a plain table column */
  int16_t attnum;
  uint32_t type_oid;
  int16_t typlen;
  int32_t typmod;
  int16_t format; /* 0 text, 1 binary (0 in a Describe(S) reply) */
} pv_be_field_t;

/* Decodes a RowDescription into fields[0..max). Returns PV_OK with
 * OUT: *nfields set, PV_ELIMIT when the message has more than max fields,
 * PV_EPROTO when malformed. */
PV_WARN_UNUSED int pv_be_rowdesc_decode(const pv_msg_t *m,
                                        pv_be_field_t *fields, size_t max,
                                        uint16_t *nfields);

/* Iterator over the fields of a DataRow. Usage:
 *   pv_be_datarow_iter_t it; pv_be_datarow_begin(m, &it) == PV_OK;
 *   while ((rc = pv_be_datarow_next(&it, &val, &len)) == 1) ...
 * next returns 1 with a field (len -1 = NULL, val NULL), 0 at the end after
 * exactly the announced count of fields with no trailing bytes, or
 * PV_EPROTO. */
typedef struct {
  const uint8_t *p, *end;
  uint16_t nfields, i;
} pv_be_datarow_iter_t;
PV_WARN_UNUSED int pv_be_datarow_begin(const pv_msg_t *m,
                                       pv_be_datarow_iter_t *it);
PV_WARN_UNUSED int pv_be_datarow_next(pv_be_datarow_iter_t *it,
                                      const uint8_t **val, int32_t *len);

/* Iterator over the fields of an ErrorResponse or NoticeResponse:
 * next returns 1 with (code, value NUL-terminated), 0 at the terminator,
 * PV_EPROTO when malformed. */
typedef struct {
  const uint8_t *p, *end;
} pv_be_errfield_iter_t;
void pv_be_errfield_begin(const pv_msg_t *m, pv_be_errfield_iter_t *it);
PV_WARN_UNUSED int pv_be_errfield_next(pv_be_errfield_iter_t *it, uint8_t *code,
                                       const char **value);

/* Copies the SQLSTATE ('C' field) of an ErrorResponse into out[6] (NUL
 * terminated). Returns PV_OK, PV_ENOENT when missing, PV_EPROTO. */
PV_WARN_UNUSED int pv_be_error_sqlstate(const pv_msg_t *m, char out[6]);

/* CommandComplete: the tag, NUL-terminated inside the body. */
PV_WARN_UNUSED int pv_be_command_complete_decode(const pv_msg_t *m,
                                                 const char **tag);
/* ParameterStatus: name and value, NUL-terminated inside the body. */
PV_WARN_UNUSED int pv_be_parameter_status_decode(const pv_msg_t *m,
                                                 const char **name,
                                                 const char **value);
/* ReadyForQuery: 'I', 'T' or 'E'. */
PV_WARN_UNUSED int pv_be_ready_decode(const pv_msg_t *m, uint8_t *status);
/* Authentication: the int32 subtype (0 ok, 3 cleartext, 5 md5, 10 SASL,
 * 11 SASL continue, 12 SASL final). */
PV_WARN_UNUSED int pv_be_auth_decode(const pv_msg_t *m, uint32_t *subtype);
/* BackendKeyData: pid and a key of 4..PV_CANCEL_KEY_MAX bytes. */
PV_WARN_UNUSED int pv_be_key_data_decode(const pv_msg_t *m, uint32_t *pid,
                                         const uint8_t **key, size_t *key_len);
/* CopyInResponse/CopyOutResponse/CopyBothResponse: overall format (0 text,
 * 1 binary) and column count; per-column formats at *col_formats. */
PV_WARN_UNUSED int pv_be_copy_response_decode(const pv_msg_t *m,
                                              uint8_t *format, uint16_t *ncols,
                                              const uint8_t **col_formats);

/* Encodes an ErrorResponse (severity "ERROR" or "FATAL", SQLSTATE, message)
 * into out[0..cap). Returns bytes written or PV_ELIMIT. */
PV_WARN_UNUSED int pv_be_error_encode(uint8_t *out, size_t cap,
                                      const char *severity,
                                      const char *sqlstate,
                                      const char *message);

#endif
