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

/* Cephes expf of x in the lanes of keep (all ones), 0 in the others (all zeros) */
ALWAYS_INLINE __m256 exp8_lanes(__m256 keep, __m256 x) {
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
  return _mm256_and_ps(keep, _mm256_mul_ps(e, _mm256_castsi256_ps(bits)));
}

ALWAYS_INLINE __m256 exp8(__m256 x) {
  const __m256 keep = _mm256_cmp_ps(x, _mm256_set1_ps(FIXQ__EXP_LO), _CMP_NLT_UQ); /* NaN kept */
  x = _mm256_min_ps(_mm256_set1_ps(FIXQ__EXP_HI), _mm256_max_ps(_mm256_set1_ps(FIXQ__EXP_LO), x));
  return exp8_lanes(keep, x);
}

/* _mm256_and_ps(k, exp8(x)) where each lane of k holds x <= 0 or NaN (a softmax's x - max) */
ALWAYS_INLINE __m256 exp8_nonpositive(__m256i k, __m256 x) {
  const __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(FIXQ__EXP_LO), _CMP_LT_OQ);
  return exp8_lanes(_mm256_andnot_ps(under, _mm256_castsi256_ps(k)), _mm256_max_ps(_mm256_set1_ps(FIXQ__EXP_LO), x));
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

static void gelu_row(size_t count, const float *x, fixq_gelu_form form, float *y) {
  size_t i = 0;
  for (; i + 32 <= count; i += 32) { /* four vectors a step: their chains (~70 cycles) overlap */
    const __m256 a = gelu8(_mm256_loadu_ps(x + i), form), b = gelu8(_mm256_loadu_ps(x + i + 8), form);
    const __m256 c = gelu8(_mm256_loadu_ps(x + i + 16), form), d = gelu8(_mm256_loadu_ps(x + i + 24), form);
    _mm256_storeu_ps(y + i, a);
    _mm256_storeu_ps(y + i + 8, b);
    _mm256_storeu_ps(y + i + 16, c);
    _mm256_storeu_ps(y + i + 24, d);
  }
  for (; i + 8 <= count; i += 8) _mm256_storeu_ps(y + i, gelu8(_mm256_loadu_ps(x + i), form));
  if (i < count) {
    const __m256i k = tail_mask(count - i);
    _mm256_maskstore_ps(y + i, k, gelu8(load(x + i, k), form));
  }
}

/* rows x cols floats, rows ldx (x) and ldy (y) apart, row by row */
static void gelu(size_t rows, size_t cols, const float *x, size_t ldx, fixq_gelu_form form, float *y, size_t ldy) {
  for (size_t r = 0; r < rows; r++) gelu_row(cols, x + r * ldx, form, y + r * ldy);
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
      const __m256 e = exp8_nonpositive(k, _mm256_sub_ps(load(x + i, k), max));
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

/* x[r][c] -> x[c][r] for 8 rows of 8 floats */
ALWAYS_INLINE void transpose8(__m256 x[8]) {
  __m256 t[8], u[8];
  for (int r = 0; r < 8; r += 2) {
    t[r] = _mm256_unpacklo_ps(x[r], x[r + 1]);
    t[r + 1] = _mm256_unpackhi_ps(x[r], x[r + 1]);
  }
  for (int r = 0; r < 8; r += 4) {
    u[r] = _mm256_shuffle_ps(t[r], t[r + 2], 0x44);
    u[r + 1] = _mm256_shuffle_ps(t[r], t[r + 2], 0xEE);
    u[r + 2] = _mm256_shuffle_ps(t[r + 1], t[r + 3], 0x44);
    u[r + 3] = _mm256_shuffle_ps(t[r + 1], t[r + 3], 0xEE);
  }
  for (int r = 0; r < 4; r++) {
    x[r] = _mm256_permute2f128_ps(u[r], u[r + 4], 0x20);
    x[r + 4] = _mm256_permute2f128_ps(u[r], u[r + 4], 0x31);
  }
}

/* K^T columns [j0, j0 + 16) of [d][lp]: keys j0.. (j0 < l), zeros past l */
static void pack_keys(size_t j0, size_t l, size_t d, const float *k, ptrdiff_t sk, float *kt, size_t lp) {
  for (size_t j = j0; j < j0 + 16; j += 8) {
    const size_t keys = j >= l ? 0 : l - j < 8 ? l - j : 8;
    for (size_t c = 0; c < d; c += 8) {
      const __m256i m = tail_mask(d - c);
      __m256 x[8];
      for (size_t r = 0; r < 8; r++)
        x[r] = r < keys ? load(k + (ptrdiff_t)(j + r) * sk + (ptrdiff_t)c, m) : _mm256_setzero_ps();
      transpose8(x);
      for (size_t t = 0; t < 8 && c + t < d; t++) _mm256_store_ps(kt + (c + t) * lp + j, x[t]);
    }
  }
}

/* softmax(1, n, ...) of 4 rows of s (lp apart) in place, the rows interleaved: the same operations on each
 * row in the same order, so the same bits */
static void softmax_rows4(size_t n, float *s, size_t lp) {
  enum { MR = 4 };
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  __m256 mx[MR], sum[MR];
  for (size_t r = 0; r < MR; r++) {
    mx[r] = ninf;
    sum[r] = _mm256_setzero_ps();
  }
  for (size_t i = 0; i < n; i += 8) {
    const __m256i k = tail_mask(n - i);
    for (size_t r = 0; r < MR; r++)
      mx[r] = _mm256_max_ps(mx[r], _mm256_blendv_ps(ninf, load(s + r * lp + i, k), _mm256_castsi256_ps(k)));
  }
  for (size_t r = 0; r < MR; r++) mx[r] = _mm256_set1_ps(hmax_ps(mx[r]));
  for (size_t i = 0; i < n; i += 8) {
    const __m256i k = tail_mask(n - i);
    for (size_t r = 0; r < MR; r++) {
      float *sr = s + r * lp + i;
      const __m256 e = exp8_nonpositive(k, _mm256_sub_ps(load(sr, k), mx[r]));
      _mm256_maskstore_ps(sr, k, e);
      sum[r] = _mm256_add_ps(sum[r], e);
    }
  }
  for (size_t r = 0; r < MR; r++) sum[r] = _mm256_set1_ps(1.0f / hsum_ps(sum[r]));
  for (size_t i = 0; i < n; i += 8) {
    const __m256i k = tail_mask(n - i);
    for (size_t r = 0; r < MR; r++) _mm256_maskstore_ps(s + r * lp + i, k, _mm256_mul_ps(load(s + r * lp + i, k), sum[r]));
  }
}

/* s[r][0, 8 nv) = sum_c qb[r][c] kt[c][0, 8 nv) (+ bias[0, 8 nv)) for 4 rows r, rows of kt and s lp apart;
 * nv <= 3 */
ALWAYS_INLINE void scores(int nv, size_t d, const float *kt, size_t lp, const float *qb, const float *bias, float *s) {
  enum { MR = 4 };
  __m256 acc[MR][3];
  for (size_t r = 0; r < MR; r++)
    for (int t = 0; t < nv; t++) acc[r][t] = _mm256_setzero_ps();
  for (size_t c = 0; c < d; c++) {
    __m256 kc[3];
    for (int t = 0; t < nv; t++) kc[t] = _mm256_load_ps(kt + c * lp + 8 * t);
    for (size_t r = 0; r < MR; r++) {
      const __m256 x = _mm256_broadcast_ss(qb + r * d + c);
      for (int t = 0; t < nv; t++) acc[r][t] = _mm256_fmadd_ps(x, kc[t], acc[r][t]);
    }
  }
  for (size_t r = 0; r < MR; r++)
    for (int t = 0; t < nv; t++) {
      const __m256 x = acc[r][t];
      _mm256_store_ps(s + r * lp + 8 * t, bias != NULL ? _mm256_add_ps(x, _mm256_load_ps(bias + 8 * t)) : x);
    }
}

/* Per block of 8 query rows: scores S [8][lp] = Qs K^T (+ bias) as 4 rows x 24 keys of FMA accumulators over
 * K^T packed [d][lp] (packed as far as a block needs it), each row's softmax (the function above's bits, 4
 * rows at a time), then O = P V as 4 rows x 16 columns of accumulators over V's rows copied to vb. */
static void attention(size_t i0, size_t i1, size_t l, size_t l_kept, size_t d, const float *q, ptrdiff_t sq,
                      const float *k, ptrdiff_t sk, const float *v, ptrdiff_t sv, float scale, const float *bias,
                      float *o, size_t so, float *work) {
  enum { MB = FIXQ__ATT_MB, MR = 4 };
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const size_t lp = FIXQ__ATT_LP(l), dp = (d + 15) & ~(size_t)15;
  float *kt = work, *s = kt + d * lp, *bs = s + MB * lp, *qb = bs + lp, *vb = qb + MB * dp;
  const int bound = l_kept < l; /* fixq__att_keys reads the sums only then */
  const float kv = bound ? abs_sum(l, d, k, sk) + abs_sum(l - l_kept, d, v + (ptrdiff_t)l_kept * sv, sv) : 0.0f;
  for (size_t j = 0; j < lp; j++) bs[j] = bias != NULL && j < l ? bias[j] : 0.0f;
  size_t packed = 0, copied = 0; /* K^T columns [0, packed) hold keys, zeros past l; vb rows [0, copied) V's */
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
      qsum[r] = bound ? hsum_ps(acc) : 0.0f;
    }
    const size_t n = fixq__att_keys(l, l_kept, kv, qsum, rows), np = FIXQ__ATT_LP(n);
    for (; packed < np; packed += 16) pack_keys(packed, l, d, k, sk, kt, lp);
    for (; copied < n; copied++) /* in L1 for the context product: V's rows hold one head of H apart */
      for (size_t c = 0; c < d; c += 8) {
        const __m256i m = tail_mask(d - c);
        _mm256_store_ps(vb + copied * dp + c, _mm256_and_ps(_mm256_castsi256_ps(m), load(v + (ptrdiff_t)copied * sv + c, m)));
      }
    for (size_t r0 = 0; r0 < MB; r0 += MR)
      for (size_t j = 0; j < np; j += 24) {
        const float *bj = bias != NULL ? bs + j : NULL;
        if (np - j >= 24) scores(3, d, kt + j, lp, qb + r0 * d, bj, s + r0 * lp + j);
        else if (np - j == 16) scores(2, d, kt + j, lp, qb + r0 * d, bj, s + r0 * lp + j);
        else scores(1, d, kt + j, lp, qb + r0 * d, bj, s + r0 * lp + j);
      }
    softmax_rows4(n, s, lp);
    softmax_rows4(n, s + MR * lp, lp);
    for (size_t r0 = 0; r0 < rows; r0 += MR)
      for (size_t c = 0; c < d; c += 16) {
        const __m256i m0 = tail_mask(d - c), m1 = tail_mask(d - c > 8 ? d - c - 8 : 0);
        __m256 acc[MR][2];
        for (size_t r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
        for (size_t j = 0; j < n; j++) {
          const float *vj = vb + j * dp + c;
          const __m256 v0 = _mm256_load_ps(vj), v1 = _mm256_load_ps(vj + 8);
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
