/* pgveil error codes: one X-macro list, 0 for success, negative PV_E* on
 * failure. Pure: no I/O, no globals. */
#ifndef PGVEIL_ERRORS_H
#define PGVEIL_ERRORS_H

#define PV_ERRNO_MAP(X)                                                        \
  X(EAGAIN, -1, "need more input")                                             \
  X(ETOOBIG, -2, "message exceeds the size limit")                             \
  X(EPROTO, -3, "malformed protocol message")                                  \
  X(ENOMEM, -4, "out of memory")                                               \
  X(EINVAL, -5, "invalid argument")                                            \
  X(ELIMIT, -6, "a configured limit was reached")                              \
  X(ENOENT, -7, "not found")                                                   \
  X(ESYNTAX, -8, "syntax error")                                               \
  X(EIO, -9, "input/output error")                                             \
  X(EDENIED, -10, "refused by policy")                                         \
  X(ESTATE, -11, "message not valid in the current protocol state")

enum pv_errno {
  PV_OK = 0,
#define PV_ERR_ENUM(name, code, msg) PV_##name = (code),
  PV_ERRNO_MAP(PV_ERR_ENUM)
#undef PV_ERR_ENUM
};

#define PV_WARN_UNUSED __attribute__((warn_unused_result))

/* A static, human-readable message for err ("success" for 0). */
const char *pv_strerror(int err);
/* The symbolic name, e.g. "PV_EPROTO". */
const char *pv_err_name(int err);

#endif
