/* Dot-product int8 GEMM (Armv8.2-A DotProd), bit-identical to
 * qgemm_s8__scalar.c; A packed by fixq_qgemm_pack_a__neon.  A tile of 4 rows
 * x 16 columns in 16 int32x4 accumulators: per group of 4 k, one load of the
 * 4 rows' a' and four of B, then 16 sdot by element (ruy's kernel_arm64.cc
 * 8x8 dotprod kernel has the same shape of step).  sdot multiplies
 * int8 x int8 exactly and adds modulo 2^32: one kernel for b' = -128 too.
 * One row (mr == 1, A in the one-row format of fixq_internal.h) has its own
 * loop, which the i8mm kernel runs too. */
#include <string.h>

#include "fixq_neon.h"

#define MR FIXQ__ARM_MR
#define NR FIXQ_GEMM_NR

/* One row (GEMV, bound by reading B): the np panels side by side; per 4
 * groups of 4 k one 16-byte load of A, each group's lane serving np * 64
 * bytes of B (one ld1 of 4 registers a panel), 4 sdot a panel.  At least 8
 * accumulators, so that no sdot waits on the one before: one panel
 * alternates between two sets of 4 (e, o). */
ALWAYS_INLINE void row1_np(const size_t np, size_t kq, const int8_t *a, const int8_t *b, int32_t *c,
                           const int32_t *row_sum, const int32_t *b_zp, const int32_t *col_term) {
  const size_t ps = kq * NR * 4, gs = NR * 4;
  int32x4_t e[FIXQ__ARM_NP][4], o[FIXQ__ARM_NP][4];
  for (size_t p = 0; p < np; p++)
    for (size_t g = 0; g < 4; g++) e[p][g] = o[p][g] = vdupq_n_s32(0);
  size_t q = 0;
#define ROW1_GROUP(acc, j, av, lane)                                          \
  for (size_t p = 0; p < np; p++) {                                           \
    const int8x16x4_t w = vld1q_s8_x4(b + p * ps + (j) * gs);                 \
    for (size_t g = 0; g < 4; g++) acc[p][g] = vdotq_laneq_s32(acc[p][g], w.val[g], av, lane); \
  }
  for (; q + 4 <= kq; q += 4, a += 16, b += 4 * gs) {
    const int8x16_t av = vld1q_s8(a);
    if (np == 1) { /* 8 chains: e and o */
      ROW1_GROUP(e, 0, av, 0)
      ROW1_GROUP(o, 1, av, 1)
      ROW1_GROUP(e, 2, av, 2)
      ROW1_GROUP(o, 3, av, 3)
    } else { /* 8 chains already (o stays 0): 32 registers hold e and B */
      ROW1_GROUP(e, 0, av, 0)
      ROW1_GROUP(e, 1, av, 1)
      ROW1_GROUP(e, 2, av, 2)
      ROW1_GROUP(e, 3, av, 3)
    }
  }
  for (; q < kq; q++, a += 4, b += gs) { /* the last 1-3 groups */
    int32_t a4;
    memcpy(&a4, a, 4);
    const int8x16_t av = vreinterpretq_s8_s32(vdupq_n_s32(a4));
    ROW1_GROUP(e, 0, av, 0)
  }
#undef ROW1_GROUP
  for (size_t p = 0; p < np; p++)
    for (size_t g = 0; g < 4; g++)
      arm_finish4(vaddq_s32(e[p][g], o[p][g]), c + p * NR + 4 * g, row_sum, 0, b_zp + p * NR + 4 * g,
                  col_term + p * NR + 4 * g);
}

void fixq_qgemm_s8_row1__dotprod(size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                                 const int32_t *row_sum, const int32_t *b_zp, const int32_t *col_term) {
  if (np == 1) row1_np(1, kq, (const int8_t *)a, b, c, row_sum, b_zp, col_term);
  else row1_np(2, kq, (const int8_t *)a, b, c, row_sum, b_zp, col_term);
}

void fixq_qgemm_s8__dotprod(size_t mr, size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                            size_t ldc, const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                            const int32_t *col_term) {
  (void)row_neg;
  if (mr == 1) {
    fixq_qgemm_s8_row1__dotprod(np, kq, a, b, c, row_sum, b_zp, col_term);
    return;
  }
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
