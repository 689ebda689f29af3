/* Scalar elementwise add / mul: the contract every ISA matches. */
#include "fixq_internal.h"

void fixq_eltwise__scalar(size_t n, const void *a, int a_bcast, const void *b, int b_bcast, void *y,
                          const fixq_eltwise *p) {
  for (size_t i = 0; i < n; i++) {
    const int32_t va = fixq__load(a, p->a_dtype, a_bcast ? 0 : i) - p->a_zero_point;
    const int32_t vb = fixq__load(b, p->b_dtype, b_bcast ? 0 : i) - p->b_zero_point;
    fixq__store(y, p->y_dtype, i, fixq__eltwise_one(va, vb, p));
  }
}
