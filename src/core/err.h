/*
 * err.h — chorus error codes.
 *
 * Every function that can fail returns an int: 0 on success or a negative
 * CH_E* code. The codes come from one X-macro table, CH_ERRNO_MAP, which also
 * generates ch_strerror() and ch_err_name(), so a code, its name and its
 * message can never drift apart (libuv's UV_ERRNO_MAP is the model).
 *
 * CH_AGAIN is not an error: it means "need more bytes" for a parser or
 * "would block" for an I/O call, and callers treat it as a normal state.
 */
#ifndef CH_CORE_ERR_H
#define CH_CORE_ERR_H

#define CH_ERRNO_MAP(X)                                                    \
  X(AGAIN, -1, "need more input or would block")                           \
  X(EINVAL, -2, "invalid argument")                                        \
  X(ENOMEM, -3, "out of memory")                                           \
  X(EPROTO, -4, "protocol error")                                          \
  X(ETOOBIG, -5, "too large")                                              \
  X(EUTF8, -6, "invalid UTF-8")                                            \
  X(ECLOSED, -7, "connection closed")                                      \
  X(EIO, -8, "input/output error")                                         \
  X(ENOTFOUND, -9, "not found")                                            \
  X(EPERM, -10, "permission denied")                                       \
  X(EAUTH, -11, "authentication failed")                                   \
  X(ETIMEDOUT, -12, "timed out")                                           \
  X(EBUSY, -13, "resource busy")                                           \
  X(EEXIST, -14, "already exists")                                         \
  X(ECONFIG, -15, "configuration error")                                   \
  X(ETLS, -16, "TLS error")                                                \
  X(ELIMIT, -17, "limit exceeded")                                         \
  X(EUNSUPPORTED, -18, "not supported")

enum {
#define CH__ERR_ENUM(name, val, msg) CH_##name = (val),
  CH_ERRNO_MAP(CH__ERR_ENUM)
#undef CH__ERR_ENUM
};

#define CH_OK 0

/* Human-readable message for a CH_* code ("unknown error" otherwise). */
const char *ch_strerror(int code);
/* Symbolic name of a CH_* code, e.g. "CH_EPROTO". */
const char *ch_err_name(int code);

#endif
