/* Dot-product int8 GEMM (Armv8.2-A DotProd), bit-identical to
 * qgemm_s8__scalar.c; A packed by fixq_qgemm_pack_a__neon.  A tile of 4 rows
 * x 16 columns in 16 int32x4 accumulators: per group of 4 k, one load of the
 * 4 rows' a' and four of B, then 16 sdot by element (ruy's kernel_arm64.cc
 * 8x8 dotprod kernel has the same shape of step).  sdot multiplies
 * int8 x int8 exactly and adds modulo 2^32: one kernel for b' = -128 too. */
#include "fixq_neon.h"

#define MR FIXQ__ARM_MR
#define NR FIXQ_GEMM_NR

void fixq_qgemm_s8__dotprod(size_t mr, size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                            size_t ldc, const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                            const int32_t *col_term) {
  (void)row_neg;
  for (size_t p = 0; p < np; p++) {
    int32x4_t acc[MR][4];
    for (size_t r = 0; r < MR; r++)
      for (size_t g = 0; g < 4; g++) acc[r][g] = vdupq_n_s32(0);
    const int8_t *ap = (const int8_t *)a, *bp = b + p * kq * NR * 4;
    for (size_t q = 0; q < kq; q++, ap += MR * 4, bp += NR * 4) {
      const int8x16_t av = vld1q_s8(ap);
      for (size_t g = 0; g < 4; g++) {
        const int8x16_t bv = vld1q_s8(bp + 16 * g);
        acc[0][g] = vdotq_laneq_s32(acc[0][g], bv, av, 0);
        acc[1][g] = vdotq_laneq_s32(acc[1][g], bv, av, 1);
        acc[2][g] = vdotq_laneq_s32(acc[2][g], bv, av, 2);
        acc[3][g] = vdotq_laneq_s32(acc[3][g], bv, av, 3);
      }
    }
    const size_t j0 = p * NR;
    for (size_t r = 0; r < mr; r++)
      for (size_t g = 0; g < 4; g++)
        arm_finish4(acc[r][g], c + r * ldc + j0 + 4 * g, row_sum, r, b_zp + j0 + 4 * g, col_term + j0 + 4 * g);
  }
}
