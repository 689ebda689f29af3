/* Layer norm, softmax and GELU: the AVX2 path, 8 floats a vector, the tail
 * of a row through vmaskmovps.  The same formulas as floatops__scalar.c with
 * FMA and 8 partial sums. */
#include <immintrin.h>

#include "fixq_floatops.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

static const int32_t mask_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

ALWAYS_INLINE __m256i tail_mask(size_t left) {
  return _mm256_loadu_si256((const __m256i *)(mask_table + 8 - (left >= 8 ? 8 : left)));
}
ALWAYS_INLINE __m256 load(const float *p, __m256i k) { return _mm256_maskload_ps(p, k); }

ALWAYS_INLINE __m256 exp8(__m256 x) {
  const __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(FIXQ__EXP_LO), _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_set1_ps(FIXQ__EXP_HI), _mm256_max_ps(_mm256_set1_ps(FIXQ__EXP_LO), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(FIXQ__LOG2E)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(FIXQ__LN2_HI), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(FIXQ__LN2_LO), r);
  __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(FIXQ__EXP_P0), r, _mm256_set1_ps(FIXQ__EXP_P1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(FIXQ__EXP_P2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(FIXQ__EXP_P3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(FIXQ__EXP_P4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(FIXQ__EXP_P5));
  const __m256 e = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  /* 2^n for n in [-126, 127] (NaN lanes give some finite scale: e is NaN there) */
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(under, _mm256_mul_ps(e, _mm256_castsi256_ps(bits)));
}

ALWAYS_INLINE __m256 erf8(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(4.0f), _mm256_max_ps(_mm256_set1_ps(-4.0f), x));
  const __m256 x2 = _mm256_mul_ps(x, x);
  __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(FIXQ__ERF_A13), x2, _mm256_set1_ps(FIXQ__ERF_A11));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(FIXQ__ERF_A9));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(FIXQ__ERF_A7));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(FIXQ__ERF_A5));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(FIXQ__ERF_A3));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(FIXQ__ERF_A1));
  __m256 q = _mm256_fmadd_ps(_mm256_set1_ps(FIXQ__ERF_B8), x2, _mm256_set1_ps(FIXQ__ERF_B6));
  q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(FIXQ__ERF_B4));
  q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(FIXQ__ERF_B2));
  q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(FIXQ__ERF_B0));
  return _mm256_div_ps(_mm256_mul_ps(x, p), q);
}

ALWAYS_INLINE __m256 gelu8(__m256 x, fixq_gelu_form form) {
  if (form == FIXQ_GELU_ERF) {
    const __m256 e = erf8(_mm256_mul_ps(x, _mm256_set1_ps(FIXQ__SQRT1_2)));
    return _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(0.5f)), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
  }
  const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
  const __m256 u = _mm256_mul_ps(_mm256_set1_ps(FIXQ__SQRT_2_OVER_PI),
                                 _mm256_fmadd_ps(_mm256_set1_ps(FIXQ__GELU_TANH_C), x3, x));
  const __m256 e = exp8(_mm256_mul_ps(_mm256_set1_ps(-2.0f), u));
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

static void gelu(size_t count, const float *x, fixq_gelu_form form, float *y) {
  size_t i = 0;
  for (; i + 8 <= count; i += 8) _mm256_storeu_ps(y + i, gelu8(_mm256_loadu_ps(x + i), form));
  if (i < count) {
    const __m256i k = tail_mask(count - i);
    _mm256_maskstore_ps(y + i, k, gelu8(load(x + i, k), form));
  }
}

ALWAYS_INLINE double hsum_pd(__m256d v) {
  const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

ALWAYS_INLINE float hsum_ps(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

ALWAYS_INLINE float hmax_ps(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

static void layer_norm(size_t rows, size_t n, const float *x, const float *w, const float *b, float eps, float *y) {
  for (size_t r = 0; r < rows; r++, x += n, y += n) {
    __m256d s0 = _mm256_setzero_pd(), s1 = s0, q0 = s0, q1 = s0;
    for (size_t i = 0; i < n; i += 8) {
      const __m256 v = load(x + i, tail_mask(n - i)); /* zeros past n */
      const __m256d d0 = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), d1 = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
      s0 = _mm256_add_pd(s0, d0);
      s1 = _mm256_add_pd(s1, d1);
      q0 = _mm256_fmadd_pd(d0, d0, q0);
      q1 = _mm256_fmadd_pd(d1, d1, q1);
    }
    const double mean = hsum_pd(_mm256_add_pd(s0, s1)) / (double)n;
    const double var = fmax(hsum_pd(_mm256_add_pd(q0, q1)) / (double)n - mean * mean, 0.0);
    const __m256 rstd = _mm256_set1_ps((float)(1.0 / sqrt(var + eps))), m = _mm256_set1_ps((float)mean);
    for (size_t i = 0; i < n; i += 8) {
      const __m256i k = tail_mask(n - i);
      const __m256 v = _mm256_mul_ps(_mm256_sub_ps(load(x + i, k), m), rstd);
      _mm256_maskstore_ps(y + i, k, _mm256_fmadd_ps(v, load(w + i, k), load(b + i, k)));
    }
  }
}

static void softmax(size_t rows, size_t n, const float *x, float *y) {
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  for (size_t r = 0; r < rows; r++, x += n, y += n) {
    __m256 mx = ninf;
    for (size_t i = 0; i < n; i += 8) {
      const __m256i k = tail_mask(n - i);
      mx = _mm256_max_ps(mx, _mm256_blendv_ps(ninf, load(x + i, k), _mm256_castsi256_ps(k)));
    }
    const __m256 max = _mm256_set1_ps(hmax_ps(mx));
    __m256 sum = _mm256_setzero_ps();
    for (size_t i = 0; i < n; i += 8) {
      const __m256i k = tail_mask(n - i);
      const __m256 e = _mm256_and_ps(_mm256_castsi256_ps(k), exp8(_mm256_sub_ps(load(x + i, k), max)));
      _mm256_maskstore_ps(y + i, k, e);
      sum = _mm256_add_ps(sum, e);
    }
    const __m256 inv = _mm256_set1_ps(1.0f / hsum_ps(sum));
    for (size_t i = 0; i < n; i += 8) {
      const __m256i k = tail_mask(n - i);
      _mm256_maskstore_ps(y + i, k, _mm256_mul_ps(load(y + i, k), inv));
    }
  }
}

const fixq__float_kernels fixq__float_kernels__avx2 = {layer_norm, softmax, gelu};
