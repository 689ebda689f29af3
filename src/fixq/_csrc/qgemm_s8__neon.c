/* NEON int8 GEMM (Armv8-A Advanced SIMD), bit-identical to qgemm_s8__scalar.c.
 * A tile of 4 rows x 16 columns, in two halves of 8 columns: per group of 4 k,
 * each row's 4 a' are broadcast to 16 bytes and multiplied with the half's 32
 * bytes of B by smull/smull2 (int8 x int8 -> int16: at most 128 * 128, exact,
 * so b' = -128 is fine), and sadalp adds the int16 pairs into int32 lanes
 * (gemmlowp's and ruy's pre-dotprod kernels use smull + smlal2 + sadalp,
 * which needs b' > -128 for the int16 pair; fixq adds every product pair in
 * int32).  vpaddq folds the two k pairs of each column at the end.  One row
 * (mr == 1, A in the one-row format of fixq_internal.h) has its own loop. */
#include <string.h>

#include "fixq_neon.h"

#define MR FIXQ__ARM_MR
#define NR FIXQ_GEMM_NR

void fixq_qgemm_pack_a__neon(size_t rows, size_t k, const void *a, size_t lda, fixq_dtype a_dtype,
                             fixq_gemm_kernel kernel, uint8_t *dst, int32_t *row_sum, int32_t *row_neg) {
  (void)kernel;
  (void)row_neg;
  if (rows == 1) {
    arm_pack_row1(k, a, a_dtype, (int8_t *)dst, row_sum);
    return;
  }
  const size_t kq = (k + 3) / 4;
  uint32_t sum[MR] = {0};
  for (size_t q = 0; q < kq; q++)
    for (size_t r = 0; r < MR; r++) arm_a_quad(rows, r, q, k, a, lda, a_dtype, (int8_t *)dst + (q * MR + r) * 4, &sum[r]);
  if (row_sum != NULL)
    for (size_t r = 0; r < rows; r++) row_sum[r] = (int32_t)sum[r];
}

/* acc[r][h] += row r's a' (broadcast in a) times the 4 columns of b (h = 0:
 * the first two, 1: the last two), as pair sums [c k01, c k23, c+1 k01, c+1 k23] */
#define MAC_ROW(r, av)                                                         \
  do {                                                                         \
    const int8x16_t ar = (av);                                                 \
    acc[r][0] = vpadalq_s16(acc[r][0], vmull_s8(vget_low_s8(ar), vget_low_s8(b0))); \
    acc[r][1] = vpadalq_s16(acc[r][1], vmull_high_s8(ar, b0));                \
    acc[r][2] = vpadalq_s16(acc[r][2], vmull_s8(vget_low_s8(ar), vget_low_s8(b1))); \
    acc[r][3] = vpadalq_s16(acc[r][3], vmull_high_s8(ar, b1));                \
  } while (0)

/* One row (GEMV, bound by reading B): the np panels side by side, one
 * broadcast of the row's 4 a' per group of 4 k serving np * 64 bytes of B;
 * per 16 bytes of B (4 columns x 4 k) smull + smull2 + 2 sadalp, 8
 * accumulators a panel. */
ALWAYS_INLINE void row1_np(const size_t np, size_t kq, const int8_t *a, const int8_t *b, int32_t *c,
                           const int32_t *row_sum, const int32_t *b_zp, const int32_t *col_term) {
  const size_t ps = kq * NR * 4;
  int32x4_t acc[FIXQ__ARM_NP][8];
  for (size_t p = 0; p < np; p++)
    for (size_t h = 0; h < 8; h++) acc[p][h] = vdupq_n_s32(0);
  for (size_t q = 0; q < kq; q++, a += 4, b += NR * 4) {
    int32_t a4;
    memcpy(&a4, a, 4);
    const int8x16_t ar = vreinterpretq_s8_s32(vdupq_n_s32(a4));
    for (size_t p = 0; p < np; p++)
      for (size_t g = 0; g < 4; g++) {
        const int8x16_t bg = vld1q_s8(b + p * ps + 16 * g);
        acc[p][2 * g] = vpadalq_s16(acc[p][2 * g], vmull_s8(vget_low_s8(ar), vget_low_s8(bg)));
        acc[p][2 * g + 1] = vpadalq_s16(acc[p][2 * g + 1], vmull_high_s8(ar, bg));
      }
  }
  for (size_t p = 0; p < np; p++)
    for (size_t g = 0; g < 4; g++)
      arm_finish4(vpaddq_s32(acc[p][2 * g], acc[p][2 * g + 1]), c + p * NR + 4 * g, row_sum, 0, b_zp + p * NR + 4 * g,
                  col_term + p * NR + 4 * g);
}

void fixq_qgemm_s8__neon(size_t mr, size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                         size_t ldc, const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                         const int32_t *col_term) {
  (void)row_neg;
  if (mr == 1) {
    if (np == 1) row1_np(1, kq, (const int8_t *)a, b, c, row_sum, b_zp, col_term);
    else row1_np(2, kq, (const int8_t *)a, b, c, row_sum, b_zp, col_term);
    return;
  }
  for (size_t p = 0; p < np * 2; p++) { /* half panels of 8 columns */
    int32x4_t acc[MR][4];
    for (size_t r = 0; r < MR; r++)
      for (size_t h = 0; h < 4; h++) acc[r][h] = vdupq_n_s32(0);
    const int8_t *ap = (const int8_t *)a, *bp = b + (p / 2) * kq * NR * 4 + (p % 2) * 32;
    for (size_t q = 0; q < kq; q++, ap += MR * 4, bp += NR * 4) {
      const int8x16_t b0 = vld1q_s8(bp), b1 = vld1q_s8(bp + 16);
      const int32x4_t a4 = vreinterpretq_s32_s8(vld1q_s8(ap));
      MAC_ROW(0, vreinterpretq_s8_s32(vdupq_laneq_s32(a4, 0)));
      MAC_ROW(1, vreinterpretq_s8_s32(vdupq_laneq_s32(a4, 1)));
      MAC_ROW(2, vreinterpretq_s8_s32(vdupq_laneq_s32(a4, 2)));
      MAC_ROW(3, vreinterpretq_s8_s32(vdupq_laneq_s32(a4, 3)));
    }
    const size_t j = p * 8;
    for (size_t r = 0; r < mr; r++) {
      arm_finish4(vpaddq_s32(acc[r][0], acc[r][1]), c + r * ldc + j, row_sum, r, b_zp + j, col_term + j);
      arm_finish4(vpaddq_s32(acc[r][2], acc[r][3]), c + r * ldc + j + 4, row_sum, r, b_zp + j + 4, col_term + j + 4);
    }
  }
}
