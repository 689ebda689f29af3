/* Shared by the aarch64 GEMM kernels (qgemm_s8__neon.c, __dotprod.c,
 * __i8mm.c): the A packer's row loads and the tile's output step. */
#ifndef FIXQ_NEON_H_
#define FIXQ_NEON_H_

#include <arm_neon.h>

#include "fixq_internal.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* a' of a[i]: int8 as is, uint8 ^ 0x80 (= a - 128) */
ALWAYS_INLINE int8_t arm_load_a(const void *a, fixq_dtype dt, size_t i) {
  return dt == FIXQ_INT8 ? ((const int8_t *)a)[i] : (int8_t)(((const uint8_t *)a)[i] ^ 0x80);
}

/* Row r's a' for k = 4q..4q+3 into out (zeros past k and past `rows`); adds
 * them to *sum (mod 2^32). */
ALWAYS_INLINE void arm_a_quad(size_t rows, size_t r, size_t q, size_t k, const void *a, size_t lda,
                              fixq_dtype dt, int8_t out[4], uint32_t *sum) {
  for (size_t t = 0; t < 4; t++) {
    const size_t kk = 4 * q + t;
    out[t] = r < rows && kk < k ? arm_load_a(a, dt, r * lda + kk) : 0;
    *sum += (uint32_t)(int32_t)out[t];
  }
}

/* c[r * ldc + j] = acc + col_term[j] - b_zp[j] * row_sum[r] (mod 2^32; the
 * row_sum term skipped when row_sum is NULL), for 4 columns from j. */
ALWAYS_INLINE void arm_finish4(int32x4_t acc, int32_t *c, const int32_t *row_sum, size_t r, const int32_t *b_zp,
                               const int32_t *col_term) {
  acc = vaddq_s32(acc, vld1q_s32(col_term));
  if (row_sum != NULL) acc = vmlsq_n_s32(acc, vld1q_s32(b_zp), row_sum[r]);
  vst1q_s32(c, acc);
}

#endif /* FIXQ_NEON_H_ */
