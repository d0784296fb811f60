/*
 * err.c — messages and names for the CH_* codes, generated from CH_ERRNO_MAP.
 */
#include "core/err.h"

const char *ch_strerror(int code) {
  switch (code) {
  case 0:
    return "success";
#define CH__ERR_MSG(name, val, msg) \
  case CH_##name:                   \
    return msg;
    CH_ERRNO_MAP(CH__ERR_MSG)
#undef CH__ERR_MSG
  default:
    return "unknown error";
  }
}

const char *ch_err_name(int code) {
  switch (code) {
  case 0:
    return "CH_OK";
#define CH__ERR_NAME(name, val, msg) \
  case CH_##name:                    \
    return "CH_" #name;
    CH_ERRNO_MAP(CH__ERR_NAME)
#undef CH__ERR_NAME
  default:
    return "CH_UNKNOWN";
  }
}
