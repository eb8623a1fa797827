/* Owns the text of pgveil's error codes (include/pgveil/errors.h).
 * Pure: no I/O, no globals beyond constant tables. */
#include "pgveil/errors.h"

const char *pv_strerror(int err) {
  switch (err) {
  case PV_OK:
    return "success";
#define PV_ERR_MSG(name, code, msg)                                            \
  case PV_##name:                                                              \
    return msg;
    PV_ERRNO_MAP(PV_ERR_MSG)
#undef PV_ERR_MSG
  }
  return "unknown error";
}

const char *pv_err_name(int err) {
  switch (err) {
  case PV_OK:
    return "PV_OK";
#define PV_ERR_NAME(name, code, msg)                                           \
  case PV_##name:                                                              \
    return "PV_" #name;
    PV_ERRNO_MAP(PV_ERR_NAME)
#undef PV_ERR_NAME
  }
  return "PV_UNKNOWN";
}
