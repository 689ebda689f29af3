/* Dynamic linear kernels, AVX-512: bit-identical to dynlinear__scalar.c
 * (the quotient x / scale rounded half to even as there, through the
 * reciprocal where that provably gives the same integer, fixq_floatops.h;
 * no FMA in the epilogue). */
#include <immintrin.h>

#include "fixq_floatops.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE __mmask16 tail_mask(size_t left) {
  return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

/* Four chains of min, max and x * 0 side by side (each one waits on its own
 * latency only): the min and max of a set are the same in any order, and the
 * zeros' signs do not reach fixq__dyn_qparams. */
static int finite_range(size_t n, const float *x, float *lo, float *hi) {
  const __m512 zero = _mm512_setzero_ps();
  __m512 l[4], h[4], z[4];
  for (int c = 0; c < 4; c++) {
    l[c] = h[c] = _mm512_set1_ps(x[0]);
    z[c] = zero;
  }
  size_t i = 0;
  for (; i + 64 <= n; i += 64)
    for (int c = 0; c < 4; c++) {
      const __m512 v = _mm512_loadu_ps(x + i + 16 * c);
      l[c] = _mm512_min_ps(l[c], v);
      h[c] = _mm512_max_ps(h[c], v);
      z[c] = _mm512_fmadd_ps(v, zero, z[c]); /* NaN once some x[i] is NaN or infinite */
    }
  for (; i < n; i += 16) {
    const __mmask16 k = tail_mask(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(k, x + i);
    l[0] = _mm512_mask_min_ps(l[0], k, l[0], v);
    h[0] = _mm512_mask_max_ps(h[0], k, h[0], v);
    z[0] = _mm512_fmadd_ps(v, zero, z[0]);
  }
  *lo = _mm512_reduce_min_ps(_mm512_min_ps(_mm512_min_ps(l[0], l[1]), _mm512_min_ps(l[2], l[3])));
  *hi = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(h[0], h[1]), _mm512_max_ps(h[2], h[3])));
  const __m512 zs = _mm512_add_ps(_mm512_add_ps(z[0], z[1]), _mm512_add_ps(z[2], z[3]));
  return _mm512_cmp_ps_mask(zs, zero, _CMP_EQ_OQ) == 0xFFFF;
}

static void quantize_u8(size_t n, const float *x, float scale, int32_t zp, uint8_t *q) {
  const __m512 s = _mm512_set1_ps(scale), lo = _mm512_set1_ps((float)-zp), hi = _mm512_set1_ps((float)(UINT8_MAX - zp));
  const __m512 r = _mm512_set1_ps(1.0f / scale), far = _mm512_set1_ps(0.5f - FIXQ__DYN_NEAR_TIE);
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
  const __m512i z = _mm512_set1_epi32(zp);
  const int fast = FIXQ__DYN_RECIPROCAL_OK(scale);
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 k = tail_mask(n - i);
    const __m512 xv = _mm512_maskz_loadu_ps(k, x + i);
    __m512 v = _mm512_mul_ps(xv, r);
    /* x / scale where v - round(v) is within FIXQ__DYN_NEAR_TIE of +-1/2 (or scale is out of range) */
    if (!fast || _mm512_cmp_ps_mask(_mm512_and_ps(_mm512_reduce_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                                                  abs_mask), far, _CMP_GT_OQ))
      v = _mm512_div_ps(xv, s);
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    const __m512i qi = _mm512_add_epi32(_mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), z);
    _mm512_mask_cvtepi32_storeu_epi8(q + i, k, qi);
  }
}

static void epilogue(size_t rows, size_t cols, const int32_t *acc, size_t lda, const fixq__dyn_row *row,
                     const int32_t *col_sum, const float *w_scale, const float *bias, const float *res, float *y,
                     size_t ldy) {
  for (size_t r = 0; r < rows; r++, acc += lda, y += ldy, row++, res = res != NULL ? res + ldy : NULL) {
    const __m512i z = _mm512_set1_epi32(row->zp);
    const __m512 xs = _mm512_set1_ps(row->scale);
    for (size_t j = 0; j < cols; j += 16) {
      const __mmask16 k = tail_mask(cols - j);
      const __m512i a = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(k, acc + j),
                                         _mm512_mullo_epi32(z, _mm512_maskz_loadu_epi32(k, col_sum + j)));
      const __m512 f = _mm512_cvt_roundepi32_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      const __m512 s = _mm512_mul_ps(xs, _mm512_maskz_loadu_ps(k, w_scale + j));
      const __m512 v = _mm512_add_ps(_mm512_mul_ps(f, s), _mm512_maskz_loadu_ps(k, bias + j));
      _mm512_mask_storeu_ps(y + j, k, res != NULL ? _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, res + j)) : v);
    }
  }
}

const fixq__dyn_kernels fixq__dyn_kernels__avx512vnni = {finite_range, quantize_u8, epilogue};
