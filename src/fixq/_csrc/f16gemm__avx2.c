/* fp16-weight linear, AVX2 + FMA + F16C.  Same summation order as
 * f16gemm__scalar.c (one fmaf chain per FIXQ__F16_KC block of k, blocks added
 * in order, then the bias), so the results are bit-identical to it.
 *
 * BLIS-style blocking (as OpenBLAS/BLIS Haswell sgemm): k in blocks of KC,
 * rows of x in blocks of MC packed to [kc][mr] groups of MR = 6 rows, weights
 * pre-packed in fp16 panels of NR = 16 columns ([k][16], fixq.h) converted
 * with vcvtph2ps inside the loop.  The 6x16 micro-tile keeps 12 accumulators;
 * a remainder of 1 or 2 rows spans several panels at once so that it still
 * has 8 independent accumulators (M = 1 is a GEMV: 1 x 64). */
#include <immintrin.h>

#include "fixq_internal.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define NR FIXQ__F16_NR
#define KC FIXQ__F16_KC
#define MC FIXQ__F16_MC
#define MR 6

/* One kc block of an mr x (np * 16) tile: acc from +0, then y = y + acc (or
 * y = acc on the first block), then + bias on the last (bias != NULL).
 * x[r][kk] is a[kk * ak + r * ar] (packed: ak = mr, ar = 1; in place: 1, ldx). */
ALWAYS_INLINE void tile(const int mr, const int np, size_t kc, const float *a, size_t ak, size_t ar,
                        const uint16_t *b, size_t bstride, float *y, size_t ldy, size_t ncols, int first,
                        const float *bias) {
  __m256 acc[MR][8];
#pragma GCC unroll 6
  for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
    for (int c = 0; c < 2 * np; c++) acc[r][c] = _mm256_setzero_ps();
  for (size_t kk = 0; kk < kc; kk++) {
    if (np == 1) { /* 6x16: convert the panel's 16 weights once, broadcast x row by row */
      const uint16_t *bp = b + kk * NR;
      const __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)bp));
      const __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(bp + 8)));
#pragma GCC unroll 6
      for (int r = 0; r < mr; r++) {
        const __m256 av = _mm256_broadcast_ss(a + kk * ak + r * ar);
        acc[r][0] = _mm256_fmadd_ps(av, w0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(av, w1, acc[r][1]);
      }
    } else { /* 1-2 rows over several panels: broadcast x once, convert panel by panel */
      __m256 av[2];
#pragma GCC unroll 2
      for (int r = 0; r < mr; r++) av[r] = _mm256_broadcast_ss(a + kk * ak + r * ar);
#pragma GCC unroll 4
      for (int p = 0; p < np; p++) {
        const uint16_t *bp = b + p * bstride + kk * NR;
        const __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)bp));
        const __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(bp + 8)));
#pragma GCC unroll 2
        for (int r = 0; r < mr; r++) {
          acc[r][2 * p] = _mm256_fmadd_ps(av[r], w0, acc[r][2 * p]);
          acc[r][2 * p + 1] = _mm256_fmadd_ps(av[r], w1, acc[r][2 * p + 1]);
        }
      }
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < mr; r++) {
#pragma GCC unroll 8
    for (int c = 0; c < 2 * np; c++) {
      float *yp = y + r * ldy + c * 8;
      const size_t col0 = (size_t)c * 8;
      if (col0 + 8 <= ncols) {
        __m256 v = first ? acc[r][c] : _mm256_add_ps(_mm256_loadu_ps(yp), acc[r][c]);
        if (bias != NULL) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + col0));
        _mm256_storeu_ps(yp, v);
      } else if (col0 < ncols) {
        float t[8];
        _mm256_storeu_ps(t, acc[r][c]);
        for (size_t j = 0; j < ncols - col0; j++) {
          float v = first ? t[j] : yp[j] + t[j];
          if (bias != NULL) v = v + bias[col0 + j];
          yp[j] = v;
        }
      }
    }
  }
}

/* Panels per tile for a group of mr rows: 2 * mr * np accumulators, all in registers. */
static int panels_for(size_t mr) { return mr == 1 ? 4 : mr == 2 ? 2 : 1; }

#define TILE_CASE(MR_, NP_) \
  case MR_ * 8 + NP_: tile(MR_, NP_, kc, a, ak, ar, b, bstride, y, ldy, ncols, first, bias); break;

static void run_tile(size_t mr, int np, size_t kc, const float *a, size_t ak, size_t ar, const uint16_t *b,
                     size_t bstride, float *y, size_t ldy, size_t ncols, int first, const float *bias) {
  switch (mr * 8 + (size_t)np) {
    TILE_CASE(1, 1) TILE_CASE(1, 2) TILE_CASE(1, 3) TILE_CASE(1, 4)
    TILE_CASE(2, 1) TILE_CASE(2, 2) TILE_CASE(3, 1)
    TILE_CASE(4, 1) TILE_CASE(5, 1) TILE_CASE(6, 1)
    default: break;
  }
}

/* x rows [0, mc) x cols [0, kc) into groups of MR rows, each [kc][mr]. */
static void pack_x(size_t mc, size_t kc, const float *x, size_t ldx, float *dst) {
  for (size_t g = 0; g < mc; g += MR) {
    const size_t mr = mc - g < MR ? mc - g : MR;
    for (size_t kk = 0; kk < kc; kk++)
      for (size_t r = 0; r < mr; r++) *dst++ = x[(g + r) * ldx + kk];
  }
}

void fixq_f16_linear__avx2(size_t m, size_t n, size_t k, const float *x, size_t ldx, const uint16_t *packed,
                           const float *bias, float *y, size_t ldy, float *work) {
  const size_t panels = (n + NR - 1) / NR, bstride = k * NR, full = m / MR * MR, rest = m - full;
  /* full 6-row groups, BLIS loop order: k block, row block (packed), panel (its kc x 16 slice stays in
   * L1 across the row groups), row group */
  for (size_t k0 = 0; k0 < k; k0 += KC) {
    const size_t kc = k - k0 < KC ? k - k0 : KC;
    const float *bias_here = k0 + kc == k ? bias : NULL;
    for (size_t m0 = 0; m0 < full; m0 += MC) {
      const size_t mc = full - m0 < MC ? full - m0 : MC;
      pack_x(mc, kc, x + m0 * ldx + k0, ldx, work);
      for (size_t p = 0; p < panels; p++) {
        const size_t n0 = p * NR, ncols = n - n0 < NR ? n - n0 : NR;
        for (size_t g = 0; g < mc; g += MR)
          run_tile(MR, 1, kc, work + g * kc, MR, 1, packed + p * bstride + k0 * NR, bstride,
                   y + (m0 + g) * ldy + n0, ldy, ncols, k0 == 0, bias_here != NULL ? bias_here + n0 : NULL);
      }
    }
  }
  if (rest == 0) return;
  /* the last 1-5 rows (all of a GEMV): panels outer and k inner, so each panel is read as
   * one contiguous stream; x is read in place */
  const int np0 = panels_for(rest);
  for (size_t p = 0; p < panels;) {
    const int np = panels - p < (size_t)np0 ? (int)(panels - p) : np0;
    const size_t n0 = p * NR, span = (size_t)np * NR, ncols = n - n0 < span ? n - n0 : span;
    for (size_t k0 = 0; k0 < k; k0 += KC) {
      const size_t kc = k - k0 < KC ? k - k0 : KC;
      run_tile(rest, np, kc, x + full * ldx + k0, 1, ldx, packed + p * bstride + k0 * NR, bstride,
               y + full * ldy + n0, ldy, ncols, k0 == 0, k0 + kc == k && bias != NULL ? bias + n0 : NULL);
    }
    p += (size_t)np;
  }
}
