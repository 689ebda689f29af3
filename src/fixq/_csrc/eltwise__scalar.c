/* Scalar elementwise add / mul: the contract every ISA matches. */
#include "fixq_internal.h"

void fixq_eltwise__scalar(size_t rows, size_t n, const void *a, ptrdiff_t a_stride, int a_bcast, const void *b,
                          ptrdiff_t b_stride, int b_bcast, void *y, ptrdiff_t y_stride, const fixq_eltwise *p) {
  for (size_t r = 0; r < rows; r++) {
    const char *ar = (const char *)a + (ptrdiff_t)r * a_stride, *br = (const char *)b + (ptrdiff_t)r * b_stride;
    char *yr = (char *)y + (ptrdiff_t)r * y_stride;
    for (size_t i = 0; i < n; i++) {
      const int32_t va = fixq__load(ar, p->a_dtype, a_bcast ? 0 : i) - p->a_zero_point;
      const int32_t vb = fixq__load(br, p->b_dtype, b_bcast ? 0 : i) - p->b_zero_point;
      fixq__store(yr, p->y_dtype, i, fixq__eltwise_one(va, vb, p));
    }
  }
}
