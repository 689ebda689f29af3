/* fixq_status_string: the text of each status code of fixq.h. */
#include "fixq_internal.h"

const char *fixq_status_string(fixq_status status) {
  switch (status) {
    case FIXQ_OK: return "ok";
    case FIXQ_ERR_INVALID_ARGUMENT: return "invalid argument";
    case FIXQ_ERR_OVERFLOW: return "int32 accumulation could overflow";
    case FIXQ_ERR_NAN: return "NaN in the input";
    case FIXQ_ERR_OUT_OF_MEMORY: return "out of memory";
    case FIXQ_ERR_UNSUPPORTED: return "CPU path not compiled in or not supported by this CPU";
    default: return "unknown status";
  }
}
