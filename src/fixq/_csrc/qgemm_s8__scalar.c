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
  for (size_t r = 0; r < rows; r++) {
    uint32_t sum = 0, neg = 0;
    for (size_t q = 0; q < kq; q++) {
      uint8_t *rec = dst + (q * rows + r) * 8;
      for (size_t t = 0; t < 4; t++) {
        const size_t kk = 4 * q + t;
        const int32_t v = kk < k ? load_a(a, a_dtype, r * lda + kk) : 0;
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
    if (row_sum != NULL) row_sum[r] = (int32_t)sum;
    row_neg[r] = (int32_t)neg;
  }
}

static inline void finish_tile(size_t mr, uint32_t acc[MR][NR], int32_t *c, size_t ldc, const int32_t *row_sum,
                               const int32_t *b_zp, const int32_t *col_term) {
  for (size_t r = 0; r < mr; r++)
    for (size_t j = 0; j < NR; j++) {
      uint32_t v = acc[r][j] + (uint32_t)col_term[j];
      if (row_sum != NULL) v -= (uint32_t)b_zp[j] * (uint32_t)row_sum[r];
      c[r * ldc + j] = (int32_t)v;
    }
}

void fixq_qgemm_s8__scalar(size_t mr, size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                           size_t ldc, const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                           const int32_t *col_term) {
  (void)row_neg; /* the scalar contract multiplies a' b' directly */
  for (size_t p = 0; p < np; p++) {
    uint32_t acc[MR][NR] = {{0}};
    const uint8_t *ap = a;
    const int8_t *bp = b + p * kq * NR * 4;
    for (size_t q = 0; q < kq; q++, ap += mr * 8, bp += NR * 4)
      for (size_t r = 0; r < mr; r++)
        for (size_t j = 0; j < NR; j++)
          for (size_t t = 0; t < 4; t++)
            acc[r][j] += (uint32_t)((ap[r * 8 + t] ? -(int32_t)ap[r * 8 + 4 + t] : ap[r * 8 + 4 + t]) * bp[4 * j + t]);
    finish_tile(mr, acc, c + p * NR, ldc, row_sum, b_zp + p * NR, col_term + p * NR);
  }
}

void fixq_qgemm_s16__scalar(size_t mr, size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                            size_t ldc, const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                            const int32_t *col_term) {
  (void)row_neg;
  for (size_t p = 0; p < np; p++) {
    uint32_t acc[MR][NR] = {{0}};
    const uint8_t *ap = a;
    const int8_t *bp = b + p * kq * NR * 4;
    for (size_t q = 0; q < kq; q++, ap += mr * 8, bp += NR * 4)
      for (size_t r = 0; r < mr; r++)
        for (size_t t = 0; t < 4; t++) {
          int16_t v;
          memcpy(&v, ap + r * 8 + 2 * t, 2);
          for (size_t j = 0; j < NR; j++) acc[r][j] += (uint32_t)((int32_t)v * bp[4 * j + t]);
        }
    finish_tile(mr, acc, c + p * NR, ldc, row_sum, b_zp + p * NR, col_term + p * NR);
  }
}

void fixq_qgemm_col_term__scalar(size_t ncols, size_t n_bias, uint32_t col_mult, uint32_t zp_mult,
                                 const int32_t *col_sum, const int32_t *zp, const int32_t *bias, int32_t *col_term) {
  fixq__qgemm_col_term(ncols, n_bias, col_mult, zp_mult, col_sum, zp, bias, col_term);
}
