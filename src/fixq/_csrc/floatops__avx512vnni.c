/* Layer norm, softmax, GELU and attention: the AVX-512 path, 16 floats a
 * vector, the tail of a row through masked loads and stores.  The same
 * formulas as floatops__scalar.c with FMA and 16 partial sums. */
#include <immintrin.h>

#include "fixq_floatops.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE __mmask16 tail_mask(size_t left) {
  return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

/* Cephes expf of x in the lanes of keep, 0 in the others */
ALWAYS_INLINE __m512 exp16_lanes(__mmask16 keep, __m512 x) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(FIXQ__LOG2E)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(FIXQ__LN2_HI), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(FIXQ__LN2_LO), r);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(FIXQ__EXP_P0), r, _mm512_set1_ps(FIXQ__EXP_P1));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FIXQ__EXP_P2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FIXQ__EXP_P3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FIXQ__EXP_P4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FIXQ__EXP_P5));
  const __m512 e = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(keep, e, n);
}

ALWAYS_INLINE __m512 exp16(__m512 x) {
  const __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(FIXQ__EXP_LO), _CMP_LT_OQ);
  x = _mm512_min_ps(_mm512_set1_ps(FIXQ__EXP_HI), x); /* min/max return the second operand for NaN */
  return exp16_lanes((__mmask16)~under, x);
}

/* _mm512_maskz_mov_ps(k, exp16(x)) where each lane of k holds x <= 0 or NaN (a softmax's x - max): the
 * clamp to FIXQ__EXP_HI changes none of them */
ALWAYS_INLINE __m512 exp16_nonpositive(__mmask16 k, __m512 x) {
  return exp16_lanes(_mm512_mask_cmp_ps_mask(k, x, _mm512_set1_ps(FIXQ__EXP_LO), _CMP_NLT_UQ), x);
}

ALWAYS_INLINE __m512 erf16(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(4.0f), _mm512_max_ps(_mm512_set1_ps(-4.0f), x));
  const __m512 x2 = _mm512_mul_ps(x, x);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(FIXQ__ERF_A13), x2, _mm512_set1_ps(FIXQ__ERF_A11));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(FIXQ__ERF_A9));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(FIXQ__ERF_A7));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(FIXQ__ERF_A5));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(FIXQ__ERF_A3));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(FIXQ__ERF_A1));
  __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(FIXQ__ERF_B8), x2, _mm512_set1_ps(FIXQ__ERF_B6));
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(FIXQ__ERF_B4));
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(FIXQ__ERF_B2));
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(FIXQ__ERF_B0));
  return _mm512_div_ps(_mm512_mul_ps(x, p), q);
}

ALWAYS_INLINE __m512 gelu16(__m512 x, fixq_gelu_form form) {
  if (form == FIXQ_GELU_ERF) {
    const __m512 e = erf16(_mm512_mul_ps(x, _mm512_set1_ps(FIXQ__SQRT1_2)));
    return _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5f)), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
  }
  const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
  const __m512 u = _mm512_mul_ps(_mm512_set1_ps(FIXQ__SQRT_2_OVER_PI),
                                 _mm512_fmadd_ps(_mm512_set1_ps(FIXQ__GELU_TANH_C), x3, x));
  const __m512 e = exp16(_mm512_mul_ps(_mm512_set1_ps(-2.0f), u));
  return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

static void gelu_row(size_t count, const float *x, fixq_gelu_form form, float *y) {
  size_t i = 0;
  for (; i + 64 <= count; i += 64) { /* four vectors a step: their chains (~70 cycles) overlap */
    const __m512 a = gelu16(_mm512_loadu_ps(x + i), form), b = gelu16(_mm512_loadu_ps(x + i + 16), form);
    const __m512 c = gelu16(_mm512_loadu_ps(x + i + 32), form), d = gelu16(_mm512_loadu_ps(x + i + 48), form);
    _mm512_storeu_ps(y + i, a);
    _mm512_storeu_ps(y + i + 16, b);
    _mm512_storeu_ps(y + i + 32, c);
    _mm512_storeu_ps(y + i + 48, d);
  }
  for (; i + 16 <= count; i += 16) _mm512_storeu_ps(y + i, gelu16(_mm512_loadu_ps(x + i), form));
  if (i < count) {
    const __mmask16 k = tail_mask(count - i);
    _mm512_mask_storeu_ps(y + i, k, gelu16(_mm512_maskz_loadu_ps(k, x + i), form));
  }
}

/* rows x cols floats, rows ldx (x) and ldy (y) apart; rows apart from each other: their vectors in order,
 * four a step as above, a row's last vector masked to its tail (a dynamic linear's tile of 8 rows x 48
 * columns runs as 6 steps of 4, not 8 rows of 3 vectors one after another) */
static void gelu(size_t rows, size_t cols, const float *x, size_t ldx, fixq_gelu_form form, float *y, size_t ldy) {
  if (rows == 1 || (ldx == cols && ldy == cols)) {
    gelu_row(rows * cols, x, form, y);
    return;
  }
  for (size_t r = 0, c = 0; r < rows;) {
    const float *xs[4];
    float *ys[4];
    __mmask16 k[4];
    for (int j = 0; j < 4; j++) { /* past the last row: mask 0 (no access) */
      k[j] = r < rows ? tail_mask(cols - c) : 0;
      xs[j] = r < rows ? x + r * ldx + c : x;
      ys[j] = r < rows ? y + r * ldy + c : y;
      if (r < rows && (c += 16) >= cols) {
        c = 0;
        r++;
      }
    }
    const __m512 a = gelu16(_mm512_maskz_loadu_ps(k[0], xs[0]), form);
    const __m512 b = gelu16(_mm512_maskz_loadu_ps(k[1], xs[1]), form);
    const __m512 d = gelu16(_mm512_maskz_loadu_ps(k[2], xs[2]), form);
    const __m512 e = gelu16(_mm512_maskz_loadu_ps(k[3], xs[3]), form);
    _mm512_mask_storeu_ps(ys[0], k[0], a);
    _mm512_mask_storeu_ps(ys[1], k[1], b);
    _mm512_mask_storeu_ps(ys[2], k[2], d);
    _mm512_mask_storeu_ps(ys[3], k[3], e);
  }
}

/* the 16 floats of v widened: two vectors of 8 doubles */
ALWAYS_INLINE __m512d lo8(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
ALWAYS_INLINE __m512d hi8(__m512 v) {
  return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

static void layer_norm(size_t rows, size_t n, const float *x, const float *w, const float *b, float eps, float *y) {
  for (size_t r = 0; r < rows; r++, x += n, y += n) {
    __m512d s0 = _mm512_setzero_pd(), s1 = s0, q0 = s0, q1 = s0;
    for (size_t i = 0; i < n; i += 16) {
      const __m512 v = _mm512_maskz_loadu_ps(tail_mask(n - i), x + i); /* zeros past n */
      const __m512d d0 = lo8(v), d1 = hi8(v);
      s0 = _mm512_add_pd(s0, d0);
      s1 = _mm512_add_pd(s1, d1);
      q0 = _mm512_fmadd_pd(d0, d0, q0);
      q1 = _mm512_fmadd_pd(d1, d1, q1);
    }
    const double mean = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1)) / (double)n;
    const double var = fmax(_mm512_reduce_add_pd(_mm512_add_pd(q0, q1)) / (double)n - mean * mean, 0.0);
    const __m512 rstd = _mm512_set1_ps((float)(1.0 / sqrt(var + eps))), m = _mm512_set1_ps((float)mean);
    for (size_t i = 0; i < n; i += 16) {
      const __mmask16 k = tail_mask(n - i);
      const __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), m), rstd);
      const __m512 wv = _mm512_maskz_loadu_ps(k, w + i), bv = _mm512_maskz_loadu_ps(k, b + i);
      _mm512_mask_storeu_ps(y + i, k, _mm512_fmadd_ps(v, wv, bv));
    }
  }
}

static void softmax(size_t rows, size_t n, const float *x, float *y) {
  for (size_t r = 0; r < rows; r++, x += n, y += n) {
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (size_t i = 0; i < n; i += 16) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mx, tail_mask(n - i), x + i));
    const __m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 16) {
      const __mmask16 k = tail_mask(n - i);
      const __m512 e = exp16_nonpositive(k, _mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), max));
      _mm512_mask_storeu_ps(y + i, k, e);
      sum = _mm512_add_ps(sum, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (size_t i = 0; i < n; i += 16) {
      const __mmask16 k = tail_mask(n - i);
      _mm512_mask_storeu_ps(y + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, y + i), inv));
    }
  }
}

/* sum of |x| over rows of d floats, `stride` apart (NaN and infinity propagate) */
static float abs_sum(size_t rows, size_t d, const float *x, ptrdiff_t stride) {
  __m512 acc = _mm512_setzero_ps();
  for (size_t j = 0; j < rows; j++, x += stride)
    for (size_t c = 0; c < d; c += 16)
      acc = _mm512_add_ps(acc, _mm512_abs_ps(_mm512_maskz_loadu_ps(tail_mask(d - c), x + c)));
  return _mm512_reduce_add_ps(acc);
}

/* s[r][0, 16 nv) = sum_c qb[r][c] kt[c][0, 16 nv) (+ bias[0, 16 nv)) for the 8 rows r of a block, rows of
 * kt and s lp apart; nv <= 3 */
ALWAYS_INLINE void scores(int nv, size_t d, const float *kt, size_t lp, const float *qb, const float *bias, float *s) {
  enum { MB = FIXQ__ATT_MB };
  __m512 acc[MB][3];
  for (size_t r = 0; r < MB; r++)
    for (int t = 0; t < nv; t++) acc[r][t] = _mm512_setzero_ps();
  for (size_t c = 0; c < d; c++) {
    __m512 kc[3];
    for (int t = 0; t < nv; t++) kc[t] = _mm512_load_ps(kt + c * lp + 16 * t);
    for (size_t r = 0; r < MB; r++) {
      const __m512 x = _mm512_set1_ps(qb[r * d + c]);
      for (int t = 0; t < nv; t++) acc[r][t] = _mm512_fmadd_ps(x, kc[t], acc[r][t]);
    }
  }
  for (size_t r = 0; r < MB; r++)
    for (int t = 0; t < nv; t++) {
      const __m512 x = acc[r][t];
      _mm512_store_ps(s + r * lp + 16 * t, bias != NULL ? _mm512_add_ps(x, _mm512_load_ps(bias + 16 * t)) : x);
    }
}

/* x[r][c] -> x[c][r] for 16 rows of 16 floats: four rounds, round b swapping bit b of the row and the lane */
ALWAYS_INLINE void transpose16(__m512 x[16]) {
  /* per round, lane c of rows r and r + b (bit b of r clear): the lane of x[r] (< 16) or x[r + b] (16 +) taken */
  static const int32_t take[4][2][16] = {
      {{0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}, {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}},
      {{0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29}, {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31}},
      {{0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27}, {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31}},
      {{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}, {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}}};
  for (int round = 0, b = 1; round < 4; round++, b <<= 1) {
    const __m512i ilo = _mm512_loadu_si512(take[round][0]), ihi = _mm512_loadu_si512(take[round][1]);
    for (int r = 0; r < 16; r++)
      if (!(r & b)) {
        const __m512 a = x[r], c = x[r + b];
        x[r] = _mm512_permutex2var_ps(a, ilo, c);
        x[r + b] = _mm512_permutex2var_ps(a, ihi, c);
      }
  }
}

/* K^T columns [j0, j0 + 16) of [d][lp]: keys j0.. (j0 < l), zeros past l */
static void pack_keys(size_t j0, size_t l, size_t d, const float *k, ptrdiff_t sk, float *kt, size_t lp) {
  const size_t keys = l - j0 < 16 ? l - j0 : 16;
  for (size_t c = 0; c < d; c += 16) {
    const __mmask16 m = tail_mask(d - c);
    __m512 x[16];
    for (size_t r = 0; r < 16; r++)
      x[r] = r < keys ? _mm512_maskz_loadu_ps(m, k + (ptrdiff_t)(j0 + r) * sk + (ptrdiff_t)c) : _mm512_setzero_ps();
    transpose16(x);
    for (size_t t = 0; t < 16 && c + t < d; t++) _mm512_store_ps(kt + (c + t) * lp + j0, x[t]);
  }
}

/* softmax(1, n, ...) of each of the 8 rows of s (lp apart) in place, the rows interleaved: the same
 * operations on each row in the same order, so the same bits */
static void softmax_block(size_t n, float *s, size_t lp) {
  enum { MB = FIXQ__ATT_MB };
  __m512 mx[MB], sum[MB];
  for (size_t r = 0; r < MB; r++) {
    mx[r] = _mm512_set1_ps(-INFINITY);
    sum[r] = _mm512_setzero_ps();
  }
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 k = tail_mask(n - i);
    for (size_t r = 0; r < MB; r++) mx[r] = _mm512_max_ps(mx[r], _mm512_mask_loadu_ps(mx[r], k, s + r * lp + i));
  }
  for (size_t r = 0; r < MB; r++) mx[r] = _mm512_set1_ps(_mm512_reduce_max_ps(mx[r]));
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 k = tail_mask(n - i);
    for (size_t r = 0; r < MB; r++) {
      float *sr = s + r * lp + i;
      const __m512 e = exp16_nonpositive(k, _mm512_sub_ps(_mm512_maskz_loadu_ps(k, sr), mx[r]));
      _mm512_mask_storeu_ps(sr, k, e);
      sum[r] = _mm512_add_ps(sum[r], e);
    }
  }
  for (size_t r = 0; r < MB; r++) sum[r] = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum[r]));
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 k = tail_mask(n - i);
    for (size_t r = 0; r < MB; r++)
      _mm512_mask_storeu_ps(s + r * lp + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, s + r * lp + i), sum[r]));
  }
}

/* Per block of 8 query rows: scores S [8][lp] = Qs K^T (+ bias) as 8 rows x 48 keys of FMA accumulators over
 * K^T packed [d][lp] (packed as far as a block needs it), each row's softmax (the function above's bits, the
 * 8 rows interleaved), then O = P V as 8 rows x 32 columns of accumulators over V's rows copied to vb. */
static void attention(size_t i0, size_t i1, size_t l, size_t l_kept, size_t d, const float *q, ptrdiff_t sq,
                      const float *k, ptrdiff_t sk, const float *v, ptrdiff_t sv, float scale, const float *bias,
                      float *o, size_t so, float *work) {
  enum { MB = FIXQ__ATT_MB };
  const size_t lp = FIXQ__ATT_LP(l);
  const size_t dp = (d + 15) & ~(size_t)15;
  float *kt = work, *s = kt + d * lp, *bs = s + MB * lp, *qb = bs + lp, *vb = qb + MB * dp;
  const int bound = l_kept < l; /* fixq__att_keys reads the sums only then */
  const float kv = bound ? abs_sum(l, d, k, sk) + abs_sum(l - l_kept, d, v + (ptrdiff_t)l_kept * sv, sv) : 0.0f;
  for (size_t j = 0; j < lp; j++) bs[j] = bias != NULL && j < l ? bias[j] : 0.0f;
  size_t packed = 0, copied = 0; /* K^T columns [0, packed) hold keys, zeros past l; vb rows [0, copied) V's */
  for (size_t i = i0; i < i1; i += MB) {
    const size_t rows = i1 - i < MB ? i1 - i : MB;
    float qsum[MB];
    for (size_t r = 0; r < MB; r++) {
      __m512 acc = _mm512_setzero_ps();
      for (size_t c = 0; c < d; c += 16) {
        const __mmask16 m = tail_mask(d - c);
        const __m512 x = r < rows ? _mm512_mul_ps(_mm512_set1_ps(scale),
                                                  _mm512_maskz_loadu_ps(m, q + (ptrdiff_t)(i + r) * sq + c))
                                  : _mm512_setzero_ps();
        _mm512_mask_storeu_ps(qb + r * d + c, m, x);
        acc = _mm512_add_ps(acc, _mm512_abs_ps(x));
      }
      qsum[r] = bound ? _mm512_reduce_add_ps(acc) : 0.0f;
    }
    const size_t n = fixq__att_keys(l, l_kept, kv, qsum, rows), np = FIXQ__ATT_LP(n);
    for (; packed < np; packed += 16) pack_keys(packed, l, d, k, sk, kt, lp);
    for (; copied < n; copied++) /* in L1 for the context product: V's rows hold one head of H apart */
      for (size_t c = 0; c < d; c += 16)
        _mm512_store_ps(vb + copied * dp + c, _mm512_maskz_loadu_ps(tail_mask(d - c), v + (ptrdiff_t)copied * sv + c));
    for (size_t j = 0; j < np; j += 48) {
      const float *bj = bias != NULL ? bs + j : NULL;
      if (np - j >= 48) scores(3, d, kt + j, lp, qb, bj, s + j);
      else if (np - j == 32) scores(2, d, kt + j, lp, qb, bj, s + j);
      else scores(1, d, kt + j, lp, qb, bj, s + j);
    }
    softmax_block(n, s, lp);
    for (size_t c = 0; c < d; c += 32) {
      const __mmask16 m0 = tail_mask(d - c), m1 = d - c > 16 ? tail_mask(d - c - 16) : 0;
      __m512 acc[MB][2];
      for (size_t r = 0; r < MB; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
      for (size_t j = 0; j < n; j++) {
        const float *vj = vb + j * dp + c;
        const __m512 v0 = _mm512_maskz_loadu_ps(m0, vj), v1 = _mm512_maskz_loadu_ps(m1, vj + 16);
        for (size_t r = 0; r < MB; r++) {
          const __m512 p = _mm512_set1_ps(s[r * lp + j]);
          acc[r][0] = _mm512_fmadd_ps(p, v0, acc[r][0]);
          acc[r][1] = _mm512_fmadd_ps(p, v1, acc[r][1]);
        }
      }
      for (size_t r = 0; r < MB; r++) /* a constant trip count keeps acc in registers */
        if (r < rows) {
          _mm512_mask_storeu_ps(o + (i + r) * so + c, m0, acc[r][0]);
          _mm512_mask_storeu_ps(o + (i + r) * so + c + 16, m1, acc[r][1]);
        }
    }
  }
}

const fixq__float_kernels fixq__float_kernels__avx512vnni = {layer_norm, softmax, gelu, attention};
