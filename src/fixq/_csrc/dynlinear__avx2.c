/* Dynamic linear kernels, AVX2: bit-identical to dynlinear__scalar.c (IEEE
 * division and round-half-even as there, no FMA in the epilogue); the last
 * n % 8 values of a row through the scalar formulas. */
#include <immintrin.h>

#include "fixq_floatops.h"

/* Four chains of min, max and x * 0 side by side (each one waits on its own
 * latency only): the min and max of a set are the same in any order, and the
 * zeros' signs do not reach fixq__dyn_qparams. */
static int finite_range(size_t n, const float *x, float *lo, float *hi) {
  const __m256 zero = _mm256_setzero_ps();
  __m256 lc[4], hc[4], zc[4];
  for (int c = 0; c < 4; c++) {
    lc[c] = hc[c] = _mm256_set1_ps(x[0]);
    zc[c] = zero;
  }
  size_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int c = 0; c < 4; c++) {
      const __m256 v = _mm256_loadu_ps(x + i + 8 * c);
      lc[c] = _mm256_min_ps(lc[c], v);
      hc[c] = _mm256_max_ps(hc[c], v);
      zc[c] = _mm256_fmadd_ps(v, zero, zc[c]); /* NaN once some x[i] is NaN or infinite */
    }
  __m256 l = _mm256_min_ps(_mm256_min_ps(lc[0], lc[1]), _mm256_min_ps(lc[2], lc[3]));
  __m256 h = _mm256_max_ps(_mm256_max_ps(hc[0], hc[1]), _mm256_max_ps(hc[2], hc[3]));
  __m256 z = _mm256_add_ps(_mm256_add_ps(zc[0], zc[1]), _mm256_add_ps(zc[2], zc[3]));
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    l = _mm256_min_ps(l, v);
    h = _mm256_max_ps(h, v);
    z = _mm256_fmadd_ps(v, zero, z);
  }
  float lv[8], hv[8], zv[8], zs = 0.0f;
  _mm256_storeu_ps(lv, l);
  _mm256_storeu_ps(hv, h);
  _mm256_storeu_ps(zv, z);
  float lm = lv[0], hm = hv[0];
  for (int j = 0; j < 8; j++) {
    lm = lv[j] < lm ? lv[j] : lm;
    hm = hv[j] > hm ? hv[j] : hm;
    zs += zv[j];
  }
  for (; i < n; i++) {
    lm = x[i] < lm ? x[i] : lm;
    hm = x[i] > hm ? x[i] : hm;
    zs += x[i] * 0.0f;
  }
  *lo = lm;
  *hi = hm;
  return zs == 0.0f;
}

static void quantize_u8(size_t n, const float *x, float scale, int32_t zp, uint8_t *q) {
  const __m256 s = _mm256_set1_ps(scale), lo = _mm256_set1_ps((float)-zp), hi = _mm256_set1_ps((float)(UINT8_MAX - zp));
  const __m256i z = _mm256_set1_epi32(zp);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(_mm256_loadu_ps(x + i), s), lo), hi);
    const __m256i r = _mm256_add_epi32(
        _mm256_cvttps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)), z);
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storel_epi64((__m128i *)(q + i), _mm_packus_epi16(w, w));
  }
  for (; i < n; i++) q[i] = (uint8_t)fixq__clamp_round_f32(x[i] / scale, zp, 0, UINT8_MAX);
}

static void epilogue(size_t rows, size_t cols, const int32_t *acc, size_t lda, const fixq__dyn_row *row,
                     const int32_t *col_sum, const float *w_scale, const float *bias, const float *res, float *y,
                     size_t ldy) {
  for (size_t r = 0; r < rows; r++, acc += lda, y += ldy, row++, res = res != NULL ? res + ldy : NULL) {
    const __m256i z = _mm256_set1_epi32(row->zp);
    const __m256 xs = _mm256_set1_ps(row->scale);
    size_t j = 0;
    for (; j + 8 <= cols; j += 8) {
      const __m256i a = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(acc + j)),
                                         _mm256_mullo_epi32(z, _mm256_loadu_si256((const __m256i *)(col_sum + j))));
      const __m256 s = _mm256_mul_ps(xs, _mm256_loadu_ps(w_scale + j));
      const __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(a), s), _mm256_loadu_ps(bias + j));
      _mm256_storeu_ps(y + j, res != NULL ? _mm256_add_ps(v, _mm256_loadu_ps(res + j)) : v);
    }
    for (; j < cols; j++) {
      const int32_t a = (int32_t)((uint32_t)acc[j] - (uint32_t)row->zp * (uint32_t)col_sum[j]);
      const float v = (float)a * (row->scale * w_scale[j]) + bias[j];
      y[j] = res != NULL ? v + res[j] : v;
    }
  }
}

const fixq__dyn_kernels fixq__dyn_kernels__avx2 = {finite_range, quantize_u8, epilogue};
