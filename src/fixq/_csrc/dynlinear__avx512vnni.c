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
 * zeros' signs do not reach fixq__dyn_qparams.  The 16 lanes of l and h hold
 * the row's partial minima and maxima, z is NaN in some lane once some x[i]
 * is NaN or infinite (n >= 1). */
ALWAYS_INLINE void row_range(size_t n, const float *x, __m512 *lo, __m512 *hi, __m512 *zs) {
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
  *lo = _mm512_min_ps(_mm512_min_ps(l[0], l[1]), _mm512_min_ps(l[2], l[3]));
  *hi = _mm512_max_ps(_mm512_max_ps(h[0], h[1]), _mm512_max_ps(h[2], h[3]));
  *zs = _mm512_add_ps(_mm512_add_ps(z[0], z[1]), _mm512_add_ps(z[2], z[3]));
}

static int finite_range(size_t n, const float *x, float *lo, float *hi) {
  __m512 l, h, z;
  row_range(n, x, &l, &h, &z);
  *lo = _mm512_reduce_min_ps(l);
  *hi = _mm512_reduce_max_ps(h);
  return _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_EQ_OQ) == 0xFFFF;
}

/* q = clamp(round_half_even(x / s) + zp, 0, 255) (quantize_u8), r = 1 / s rounded: clamp(round(v) + zp)
 * in int32 lanes, 16 values at a time. */
ALWAYS_INLINE __m512i quantize16(__m512 xv, __m512 s, __m512 r, __m512 lo, __m512 hi, __m512i z, int fast) {
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
  __m512 v = _mm512_mul_ps(xv, r);
  /* x / scale where v - round(v) is within FIXQ__DYN_NEAR_TIE of +-1/2 (or scale is out of range) */
  if (!fast || _mm512_cmp_ps_mask(_mm512_and_ps(_mm512_reduce_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                                                abs_mask), _mm512_set1_ps(0.5f - FIXQ__DYN_NEAR_TIE), _CMP_GT_OQ))
    v = _mm512_div_ps(xv, s);
  v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
  return _mm512_add_epi32(_mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), z);
}

ALWAYS_INLINE void quantize_row(size_t n, const float *x, float scale, float recip, int32_t zp, uint8_t *q) {
  const __m512 s = _mm512_set1_ps(scale), lo = _mm512_set1_ps((float)-zp), hi = _mm512_set1_ps((float)(UINT8_MAX - zp));
  const __m512 r = _mm512_set1_ps(recip);
  const __m512i z = _mm512_set1_epi32(zp);
  /* dword p of the packed bytes of four vectors a..d (lane j of each at dword 4 j + a..d): 4 (p % 4) + p / 4 */
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const int fast = FIXQ__DYN_RECIPROCAL_OK(scale);
  size_t i = 0;
  for (; i + 64 <= n; i += 64) { /* four vectors packed to bytes (values in [0, 255]: no saturation) */
    const __m512i q0 = quantize16(_mm512_loadu_ps(x + i), s, r, lo, hi, z, fast);
    const __m512i q1 = quantize16(_mm512_loadu_ps(x + i + 16), s, r, lo, hi, z, fast);
    const __m512i q2 = quantize16(_mm512_loadu_ps(x + i + 32), s, r, lo, hi, z, fast);
    const __m512i q3 = quantize16(_mm512_loadu_ps(x + i + 48), s, r, lo, hi, z, fast);
    const __m512i b = _mm512_packus_epi16(_mm512_packs_epi32(q0, q1), _mm512_packs_epi32(q2, q3));
    _mm512_storeu_si512(q + i, _mm512_permutexvar_epi32(order, b));
  }
  for (; i < n; i += 16) {
    const __mmask16 k = tail_mask(n - i);
    _mm512_mask_cvtepi32_storeu_epi8(q + i, k, quantize16(_mm512_maskz_loadu_ps(k, x + i), s, r, lo, hi, z, fast));
  }
}

static void quantize_u8(size_t n, const float *x, float scale, int32_t zp, uint8_t *q) {
  quantize_row(n, x, scale, 1.0f / scale, zp, q);
}

/* Lane L of the result: the minimum of v[L]'s 16 lanes, when v[i] holds the vector of lane
 * 4 * (i % 4) + i / 4 (each step halves the partials of two sets of vectors side by side). */
ALWAYS_INLINE __m512 min_across16(const __m512 *v) {
  __m512 a[8], b[4];
  for (int i = 0; i < 8; i++)
    a[i] = _mm512_min_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                         _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
  for (int i = 0; i < 4; i++)
    b[i] = _mm512_min_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  for (int i = 0; i < 2; i++)
    a[i] = _mm512_min_ps(_mm512_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm512_min_ps(_mm512_shuffle_ps(a[0], a[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_ps(a[0], a[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* Eight rows at a time: their minima and (negated) maxima reduced together, fixq__dyn_qparams in eight
 * lanes with its operations in its order (min/max against 0 are its selects, the NaN-free operands make
 * every lane's IEEE result the scalar one), then each row quantized. */
static int quantize_rows(size_t rows, size_t k, const float *x, fixq__dyn_row *row, uint8_t *q) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f), top = _mm256_set1_ps(255.0f);
  const __m256 magic = _mm256_set1_ps(12582912.0f), inf = _mm256_set1_ps(INFINITY);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  for (size_t r0 = 0; r0 < rows; r0 += 8) {
    const size_t nr = rows - r0 < 8 ? rows - r0 : 8;
    __m512 v[16], zs = _mm512_setzero_ps();
    for (size_t r = 0; r < 8; r++) {
      __m512 l, h, z;
      row_range(k, x + (r0 + (r < nr ? r : 0)) * k, &l, &h, &z); /* rows past the last: the first again */
      const size_t lane = r, neg = r + 8;   /* lanes 0-7 minima, 8-15 maxima negated (max = -min(-x)) */
      v[4 * (lane % 4) + lane / 4] = l;
      v[4 * (neg % 4) + neg / 4] = _mm512_sub_ps(_mm512_setzero_ps(), h);
      zs = _mm512_add_ps(zs, z);
    }
    if (_mm512_cmp_ps_mask(zs, _mm512_setzero_ps(), _CMP_EQ_OQ) != 0xFFFF) return 0;
    const __m512 m = min_across16(v);
    /* lo = lo < 0 ? lo : 0; hi = hi > 0 ? hi : 0 */
    const __m256 lo = _mm256_min_ps(_mm512_castps512_ps256(m), zero);
    const __m256 hi = _mm256_max_ps(_mm256_sub_ps(zero, _mm512_extractf32x8_ps(m, 1)), zero);
    __m256 s = _mm256_div_ps(_mm256_sub_ps(hi, lo), top);
    s = _mm256_blendv_ps(s, one, _mm256_cmp_ps(s, zero, _CMP_EQ_OQ));
    if (_mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(s, abs_mask), inf, _CMP_EQ_OQ)) & ((1 << nr) - 1)) return 0;
    __m256 z = _mm256_sub_ps(zero, _mm256_div_ps(lo, s));
    z = _mm256_min_ps(_mm256_max_ps(z, zero), top); /* z's sign at 0 does not reach the integer */
    const __m256i zp = _mm256_cvttps_epi32(_mm256_sub_ps(_mm256_add_ps(z, magic), magic));
    float sv[8], rv[8];
    int32_t zv[8];
    _mm256_storeu_ps(sv, s);
    _mm256_storeu_ps(rv, _mm256_div_ps(one, s));
    _mm256_storeu_si256((__m256i *)zv, zp);
    for (size_t r = 0; r < nr; r++) {
      row[r0 + r].scale = sv[r];
      row[r0 + r].zp = zv[r];
      quantize_row(k, x + (r0 + r) * k, sv[r], rv[r], zv[r], q + (r0 + r) * k);
    }
  }
  return 1;
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

const fixq__dyn_kernels fixq__dyn_kernels__avx512vnni = {finite_range, quantize_u8, quantize_rows, epilogue};
