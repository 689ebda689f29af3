/* Layer norm, softmax, GELU and attention: the AVX2 path, 8 floats a vector,
 * the tail of a row through vmaskmovps.  The same formulas as
 * floatops__scalar.c with FMA and 8 partial sums. */
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

/* sum of |x| over rows of d floats, `stride` apart (NaN and infinity propagate) */
static float abs_sum(size_t rows, size_t d, const float *x, ptrdiff_t stride) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 acc = _mm256_setzero_ps();
  for (size_t j = 0; j < rows; j++, x += stride)
    for (size_t c = 0; c < d; c += 8) acc = _mm256_add_ps(acc, _mm256_andnot_ps(sign, load(x + c, tail_mask(d - c))));
  return hsum_ps(acc);
}

/* Per block of 8 query rows: scores S [8][lp] = Qs K^T (+ bias) as 4 rows x 16 keys of FMA accumulators over
 * K^T packed [d][lp] (packed as far as a block needs it), each row's softmax (the function above), then
 * O = P V as 4 rows x 16 columns of accumulators over V read in place. */
static void attention(size_t i0, size_t i1, size_t l, size_t l_kept, size_t d, const float *q, ptrdiff_t sq,
                      const float *k, ptrdiff_t sk, const float *v, ptrdiff_t sv, float scale, const float *bias,
                      float *o, size_t so, float *work) {
  enum { MB = FIXQ__ATT_MB, MR = 4 };
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const size_t lp = FIXQ__ATT_LP(l);
  float *kt = work, *s = kt + d * lp, *bs = s + MB * lp, *qb = bs + lp;
  const float kv = abs_sum(l, d, k, sk) + (l_kept < l ? abs_sum(l - l_kept, d, v + (ptrdiff_t)l_kept * sv, sv) : 0.0f);
  for (size_t j = 0; j < lp; j++) bs[j] = bias != NULL && j < l ? bias[j] : 0.0f;
  size_t packed = 0; /* K^T columns [0, packed) hold keys, zeros past l */
  for (size_t i = i0; i < i1; i += MB) {
    const size_t rows = i1 - i < MB ? i1 - i : MB;
    float qsum[MB];
    for (size_t r = 0; r < MB; r++) {
      __m256 acc = _mm256_setzero_ps();
      for (size_t c = 0; c < d; c += 8) {
        const __m256i m = tail_mask(d - c);
        const __m256 x = r < rows ? _mm256_mul_ps(_mm256_set1_ps(scale), load(q + (ptrdiff_t)(i + r) * sq + c, m))
                                  : _mm256_setzero_ps();
        _mm256_maskstore_ps(qb + r * d + c, m, x);
        acc = _mm256_add_ps(acc, _mm256_andnot_ps(sign, x));
      }
      qsum[r] = hsum_ps(acc);
    }
    const size_t n = fixq__att_keys(l, l_kept, kv, qsum, rows), np = FIXQ__ATT_LP(n);
    for (; packed < np; packed++)
      for (size_t c = 0; c < d; c++) kt[c * lp + packed] = packed < l ? k[(ptrdiff_t)packed * sk + (ptrdiff_t)c] : 0.0f;
    for (size_t r0 = 0; r0 < MB; r0 += MR)
      for (size_t j = 0; j < np; j += 16) {
        __m256 acc[MR][2];
        for (size_t r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
        for (size_t c = 0; c < d; c++) {
          const __m256 k0 = _mm256_load_ps(kt + c * lp + j), k1 = _mm256_load_ps(kt + c * lp + j + 8);
          for (size_t r = 0; r < MR; r++) {
            const __m256 x = _mm256_broadcast_ss(qb + (r0 + r) * d + c);
            acc[r][0] = _mm256_fmadd_ps(x, k0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(x, k1, acc[r][1]);
          }
        }
        const __m256 b0 = _mm256_load_ps(bs + j), b1 = _mm256_load_ps(bs + j + 8);
        for (size_t r = 0; r < MR; r++) {
          float *sr = s + (r0 + r) * lp + j;
          _mm256_store_ps(sr, bias != NULL ? _mm256_add_ps(acc[r][0], b0) : acc[r][0]);
          _mm256_store_ps(sr + 8, bias != NULL ? _mm256_add_ps(acc[r][1], b1) : acc[r][1]);
        }
      }
    for (size_t r = 0; r < rows; r++) softmax(1, n, s + r * lp, s + r * lp);
    for (size_t r0 = 0; r0 < rows; r0 += MR)
      for (size_t c = 0; c < d; c += 16) {
        const __m256i m0 = tail_mask(d - c), m1 = tail_mask(d - c > 8 ? d - c - 8 : 0);
        __m256 acc[MR][2];
        for (size_t r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
        for (size_t j = 0; j < n; j++) {
          const float *vj = v + (ptrdiff_t)j * sv + c;
          const __m256 v0 = load(vj, m0), v1 = load(vj + 8, m1);
          for (size_t r = 0; r < MR; r++) {
            const __m256 p = _mm256_broadcast_ss(s + (r0 + r) * lp + j);
            acc[r][0] = _mm256_fmadd_ps(p, v0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(p, v1, acc[r][1]);
          }
        }
        for (size_t r = 0; r < MR; r++) /* a constant trip count keeps acc in registers */
          if (r0 + r < rows) {
            _mm256_maskstore_ps(o + (i + r0 + r) * so + c, m0, acc[r][0]);
            _mm256_maskstore_ps(o + (i + r0 + r) * so + c + 8, m1, acc[r][1]);
          }
      }
  }
}

const fixq__float_kernels fixq__float_kernels__avx2 = {layer_norm, softmax, gelu, attention};
