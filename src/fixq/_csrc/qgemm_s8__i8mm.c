/* Int8 matrix-multiply GEMM (Armv8.6-A I8MM), bit-identical to
 * qgemm_s8__scalar.c.  smmla multiplies a 2x8 int8 block of A by an 8x2
 * block of B into a 2x2 int32 tile, exactly, adding modulo 2^32 (one kernel
 * for b' = -128 too).  The packed B (fixq.h, unchanged) holds 4 k per column:
 * zip1/zip2 on 32-bit lanes of two groups of 4 k give the 8-k column pairs.
 * A 4 x 16 tile is 2 row pairs x 8 column pairs = 16 accumulators; per 8 k:
 * 2 loads of A, 8 of B, 8 zips, 16 smmla (512 multiply-adds).  One row
 * (mr == 1) runs the dotprod kernel's row loop: smmla would multiply a row of
 * zeros beside it, twice the instructions for the same bytes of B. */
#include "fixq_neon.h"

#define MR FIXQ__ARM_MR
#define NR FIXQ_GEMM_NR

void fixq_qgemm_pack_a__i8mm(size_t rows, size_t k, const void *a, size_t lda, fixq_dtype a_dtype,
                             fixq_gemm_kernel kernel, uint8_t *dst, int32_t *row_sum, int32_t *row_neg) {
  (void)kernel;
  (void)row_neg;
  if (rows == 1) {
    arm_pack_row1(k, a, a_dtype, (int8_t *)dst, row_sum);
    return;
  }
  const size_t kq = (k + 3) / 4;
  uint32_t sum[MR] = {0};
  int8_t *d = (int8_t *)dst;
  size_t q = 0;
  for (; q + 2 <= kq; q += 2, d += 2 * MR * 4) /* rows 2i, 2i+1: 8 k each, side by side */
    for (size_t r = 0; r < MR; r++) {
      arm_a_quad(rows, r, q, k, a, lda, a_dtype, d + r * 8, &sum[r]);
      arm_a_quad(rows, r, q + 1, k, a, lda, a_dtype, d + r * 8 + 4, &sum[r]);
    }
  if (q < kq)
    for (size_t r = 0; r < MR; r++) arm_a_quad(rows, r, q, k, a, lda, a_dtype, d + r * 4, &sum[r]);
  if (row_sum != NULL)
    for (size_t r = 0; r < rows; r++) row_sum[r] = (int32_t)sum[r];
}

void fixq_qgemm_s8__i8mm(size_t mr, size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                         size_t ldc, const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                         const int32_t *col_term) {
  (void)row_neg;
  if (mr == 1) {
    fixq_qgemm_s8_row1__dotprod(np, kq, a, b, c, row_sum, b_zp, col_term);
    return;
  }
  for (size_t p = 0; p < np; p++) {
    int32x4_t acc[2][8]; /* [row pair][column pair]: lanes r0c0, r0c1, r1c0, r1c1 */
    for (size_t i = 0; i < 2; i++)
      for (size_t j = 0; j < 8; j++) acc[i][j] = vdupq_n_s32(0);
    const int8_t *ap = (const int8_t *)a, *bp = b + p * kq * NR * 4;
    size_t q = 0;
    for (; q + 2 <= kq; q += 2, ap += 2 * MR * 4, bp += 2 * NR * 4) {
      const int8x16_t a0 = vld1q_s8(ap), a1 = vld1q_s8(ap + 16);
      for (size_t g = 0; g < 4; g++) { /* columns 4g..4g+3 */
        const int32x4_t lo = vreinterpretq_s32_s8(vld1q_s8(bp + 16 * g));
        const int32x4_t hi = vreinterpretq_s32_s8(vld1q_s8(bp + NR * 4 + 16 * g));
        const int8x16_t c01 = vreinterpretq_s8_s32(vzip1q_s32(lo, hi)), c23 = vreinterpretq_s8_s32(vzip2q_s32(lo, hi));
        acc[0][2 * g] = vmmlaq_s32(acc[0][2 * g], a0, c01);
        acc[0][2 * g + 1] = vmmlaq_s32(acc[0][2 * g + 1], a0, c23);
        acc[1][2 * g] = vmmlaq_s32(acc[1][2 * g], a1, c01);
        acc[1][2 * g + 1] = vmmlaq_s32(acc[1][2 * g + 1], a1, c23);
      }
    }
    if (q < kq) { /* the last group of 4 k: A's other 4 k are zero */
      const int32x4_t a4 = vreinterpretq_s32_s8(vld1q_s8(ap)), zero = vdupq_n_s32(0);
      const int8x16_t a0 = vreinterpretq_s8_s32(vzip1q_s32(a4, zero)), a1 = vreinterpretq_s8_s32(vzip2q_s32(a4, zero));
      for (size_t g = 0; g < 4; g++) {
        const int32x4_t lo = vreinterpretq_s32_s8(vld1q_s8(bp + 16 * g));
        const int8x16_t c01 = vreinterpretq_s8_s32(vzip1q_s32(lo, lo)), c23 = vreinterpretq_s8_s32(vzip2q_s32(lo, lo));
        acc[0][2 * g] = vmmlaq_s32(acc[0][2 * g], a0, c01);
        acc[0][2 * g + 1] = vmmlaq_s32(acc[0][2 * g + 1], a0, c23);
        acc[1][2 * g] = vmmlaq_s32(acc[1][2 * g], a1, c01);
        acc[1][2 * g + 1] = vmmlaq_s32(acc[1][2 * g + 1], a1, c23);
      }
    }
    const size_t j0 = p * NR;
    for (size_t r = 0; r < mr; r++)
      for (size_t g = 0; g < 4; g++) {
        const int64x2_t x = vreinterpretq_s64_s32(acc[r / 2][2 * g]), y = vreinterpretq_s64_s32(acc[r / 2][2 * g + 1]);
        const int32x4_t row = vreinterpretq_s32_s64(r % 2 ? vzip2q_s64(x, y) : vzip1q_s64(x, y));
        arm_finish4(row, c + r * ldc + j0 + 4 * g, row_sum, r, b_zp + j0 + 4 * g, col_term + j0 + 4 * g);
      }
  }
}
