/* Scalar GEMM micro-kernels: the contract the SIMD kernels match.  Sums are
 * uint32 so that they wrap modulo 2^32 (fixq_qgemm proves the exact result
 * fits int32, so the wrapped sum is that result). */
#include <string.h>

#include "fixq_internal.h"

#define MR FIXQ_GEMM_MR
#define NR FIXQ_GEMM_NR

/* a' of a[i]: int8 as is, uint8 minus 128 (= v ^ 0x80 read as int8) */
static inline int32_t load_a(const void *a, fixq_dtype dt, size_t i) {
  return dt == FIXQ_INT8 ? ((const int8_t *)a)[i] : (int32_t)((const uint8_t *)a)[i] - 128;
}

void fixq_qgemm_pack_a__scalar(size_t rows, size_t k, const void *a, size_t lda, fixq_dtype a_dtype,
                               fixq_gemm_kernel kernel, uint8_t *dst, int32_t *row_sum, int32_t *row_neg) {
  const size_t kq = (k + 3) / 4;
  for (size_t r = 0; r < MR; r++) {
    uint32_t sum = 0, neg = 0;
    for (size_t q = 0; q < kq; q++) {
      uint8_t *rec = dst + (q * MR + r) * 8;
      for (size_t t = 0; t < 4; t++) {
        const size_t kk = 4 * q + t;
        const int32_t v = r < rows && kk < k ? load_a(a, a_dtype, r * lda + kk) : 0;
        sum += (uint32_t)v;
        neg += (uint32_t)(v < 0 ? -v : 0);
        if (kernel == FIXQ_GEMM_S8) {
          rec[t] = v < 0 ? 0xFF : 0;
          rec[4 + t] = (uint8_t)(v < 0 ? -v : v);
        } else {
          const int16_t w = (int16_t)v;
          memcpy(rec + 2 * t, &w, 2);
        }
      }
    }
    if (r < rows) {
      if (row_sum != NULL) row_sum[r] = (int32_t)sum;
      row_neg[r] = (int32_t)neg;
    }
  }
}

static inline void finish_tile(size_t mr, uint32_t acc[MR][NR], int32_t *c, const int32_t *row_sum,
                               const int32_t *b_zp, const int32_t *col_term) {
  for (size_t r = 0; r < mr; r++)
    for (size_t j = 0; j < NR; j++) {
      uint32_t v = acc[r][j] + (uint32_t)col_term[j];
      if (row_sum != NULL) v -= (uint32_t)b_zp[j] * (uint32_t)row_sum[r];
      c[r * NR + j] = (int32_t)v;
    }
}

void fixq_qgemm_s8__scalar(size_t mr, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                           const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                           const int32_t *col_term) {
  uint32_t acc[MR][NR] = {{0}};
  for (size_t q = 0; q < kq; q++, a += MR * 8, b += NR * 4)
    for (size_t r = 0; r < mr; r++)
      for (size_t j = 0; j < NR; j++)
        for (size_t t = 0; t < 4; t++)
          acc[r][j] += (uint32_t)((a[r * 8 + t] ? -(int32_t)a[r * 8 + 4 + t] : a[r * 8 + 4 + t]) * b[4 * j + t]);
  (void)row_neg; /* the scalar contract multiplies a' b' directly */
  finish_tile(mr, acc, c, row_sum, b_zp, col_term);
}

void fixq_qgemm_s16__scalar(size_t mr, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                            const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                           const int32_t *col_term) {
  uint32_t acc[MR][NR] = {{0}};
  for (size_t q = 0; q < kq; q++, a += MR * 8, b += NR * 4)
    for (size_t r = 0; r < mr; r++)
      for (size_t t = 0; t < 4; t++) {
        int16_t v;
        memcpy(&v, a + r * 8 + 2 * t, 2);
        for (size_t j = 0; j < NR; j++) acc[r][j] += (uint32_t)((int32_t)v * b[4 * j + t]);
      }
  (void)row_neg;
  finish_tile(mr, acc, c, row_sum, b_zp, col_term);
}
