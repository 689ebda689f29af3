/* Shared by the aarch64 kernels: the GEMM's A packer row loads and tile
 * output step (qgemm_s8__neon.c, __dotprod.c, __i8mm.c), and the fixed-point
 * multipliers of the requantize and elementwise kernels (requant__neon.c,
 * eltwise__neon.c). */
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

/* The packers' one-row format: the row's a' in order, zeros up to 4 kq; its
 * sum (mod 2^32) in *row_sum unless NULL. */
ALWAYS_INLINE void arm_pack_row1(size_t k, const void *a, fixq_dtype dt, int8_t *dst, int32_t *row_sum) {
  uint32_t sum = 0;
  for (size_t q = 0; q < (k + 3) / 4; q++) arm_a_quad(1, 0, q, k, a, 0, dt, dst + 4 * q, &sum);
  if (row_sum != NULL) row_sum[0] = (int32_t)sum;
}

/* c[r * ldc + j] = acc + col_term[j] - b_zp[j] * row_sum[r] (mod 2^32; the
 * row_sum term skipped when row_sum is NULL), for 4 columns from j. */
ALWAYS_INLINE void arm_finish4(int32x4_t acc, int32_t *c, const int32_t *row_sum, size_t r, const int32_t *b_zp,
                               const int32_t *col_term) {
  acc = vaddq_s32(acc, vld1q_s32(col_term));
  if (row_sum != NULL) acc = vmlsq_n_s32(acc, vld1q_s32(b_zp), row_sum[r]);
  vst1q_s32(c, acc);
}

/* fixq__rdbpot on four lanes, neg_right = -e.  srshl by -e rounds ties
 * toward +inf where RoundingDivideByPOT rounds them away from zero:
 * gemmlowp's NEON fix-up (fixedpoint_neon.h) first adds -1 to negative v when
 * e > 0 (saturating: INT32_MIN gives the same quotient). */
ALWAYS_INLINE int32x4_t neon_rdbpot(int32x4_t v, int32x4_t neg_right) {
  return vrshlq_s32(vqaddq_s32(v, vshrq_n_s32(vandq_s32(v, neg_right), 31)), neg_right);
}

/* fixq__mbqm_double on four lanes, left = max(shift, 0), neg_right =
 * min(shift, 0).  sqrdmulh is gemmlowp's SaturatingRoundingDoublingHighMul
 * exactly ((2ab + 2^31) >> 32, ties toward +inf, INT32_MIN^2 saturated:
 * gemmlowp's nudge-and-truncate gives floor((ab + 2^30) / 2^31) for either
 * sign of ab); the left shift is sqshl (SaturatingRoundingMultiplyByPOT). */
ALWAYS_INLINE int32x4_t neon_mbqm_double(int32x4_t x, int32x4_t m, int32x4_t left, int32x4_t neg_right) {
  return neon_rdbpot(vqrdmulhq_s32(vqshlq_s32(x, left), m), neg_right);
}

/* fixq__mbqm_single on four lanes, neg_total = shift - 31: smull to int64 and
 * srshl by -(31 - shift) is ruy's (x m + 2^(total-1)) >> total exactly (the
 * rounding shift has the headroom); sqxtn saturates. */
ALWAYS_INLINE int32x4_t neon_mbqm_single(int32x4_t x, int32x4_t m, int32x4_t neg_total) {
  const int64x2_t lo = vrshlq_s64(vmull_s32(vget_low_s32(x), vget_low_s32(m)), vmovl_s32(vget_low_s32(neg_total)));
  const int64x2_t hi = vrshlq_s64(vmull_high_s32(x, m), vmovl_high_s32(neg_total));
  return vcombine_s32(vqmovn_s64(lo), vqmovn_s64(hi));
}

/* fixq__round_even_small on four lanes, then fcvtzs: + 1.5 * 2^23 - 1.5 * 2^23
 * (round half to even for |f| < 2^22) and truncation of the integer left;
 * a NaN lane gives 0 (fcvtzs). */
ALWAYS_INLINE int32x4_t neon_round_even_small(float32x4_t f) {
  const float32x4_t bias = vdupq_n_f32(12582912.0f);
  return vcvtq_s32_f32(vsubq_f32(vaddq_f32(f, bias), bias));
}

#endif /* FIXQ_NEON_H_ */
