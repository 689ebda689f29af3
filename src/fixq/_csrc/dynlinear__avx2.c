/* Dynamic linear kernels, AVX2: bit-identical to dynlinear__scalar.c (IEEE
 * division and round-half-even as there, no FMA in the epilogue); the last
 * n % 8 values of a row through the scalar formulas. */
#include <immintrin.h>

#include "fixq_floatops.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Four chains of min, max and x * 0 side by side (each one waits on its own
 * latency only): the min and max of a set are the same in any order, and the
 * zeros' signs do not reach fixq__dyn_qparams.  The 8 lanes of l and h hold
 * the row's partial minima and maxima, z is NaN in some lane once some x[i]
 * of the first n - n % 8 is NaN or infinite (n >= 1). */
ALWAYS_INLINE void row_range(size_t n, const float *x, __m256 *lo, __m256 *hi, __m256 *zs) {
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
  *lo = l;
  *hi = h;
  *zs = z;
}

static int finite_range(size_t n, const float *x, float *lo, float *hi) {
  __m256 l, h, z;
  row_range(n, x, &l, &h, &z);
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
  for (size_t i = n - n % 8; i < n; i++) {
    lm = x[i] < lm ? x[i] : lm;
    hm = x[i] > hm ? x[i] : hm;
    zs += x[i] * 0.0f;
  }
  *lo = lm;
  *hi = hm;
  return zs == 0.0f;
}

/* clamp(round_half_even(x / s) + zp, 0, 255) in int32 lanes, 8 values at a time. */
ALWAYS_INLINE __m256i quantize8(const float *x, __m256 s, __m256 lo, __m256 hi, __m256i z) {
  const __m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(_mm256_loadu_ps(x), s), lo), hi);
  return _mm256_add_epi32(_mm256_cvttps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)), z);
}

static void quantize_u8(size_t n, const float *x, float scale, int32_t zp, uint8_t *q) {
  const __m256 s = _mm256_set1_ps(scale), lo = _mm256_set1_ps((float)-zp), hi = _mm256_set1_ps((float)(UINT8_MAX - zp));
  const __m256i z = _mm256_set1_epi32(zp);
  /* dword p of the packed bytes of four vectors a..d (half h of each at dword 4 h + a..d) */
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  size_t i = 0;
  for (; i + 32 <= n; i += 32) { /* four vectors packed to bytes (values in [0, 255]: no saturation) */
    const __m256i r0 = quantize8(x + i, s, lo, hi, z), r1 = quantize8(x + i + 8, s, lo, hi, z);
    const __m256i r2 = quantize8(x + i + 16, s, lo, hi, z), r3 = quantize8(x + i + 24, s, lo, hi, z);
    const __m256i b = _mm256_packus_epi16(_mm256_packs_epi32(r0, r1), _mm256_packs_epi32(r2, r3));
    _mm256_storeu_si256((__m256i *)(q + i), _mm256_permutevar8x32_epi32(b, order));
  }
  for (; i + 8 <= n; i += 8) {
    const __m256i r = quantize8(x + i, s, lo, hi, z);
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storel_epi64((__m128i *)(q + i), _mm_packus_epi16(w, w));
  }
  for (; i < n; i++) q[i] = (uint8_t)fixq__clamp_round_f32(x[i] / scale, zp, 0, UINT8_MAX);
}

/* Lane L of the result: min (or max) of v[L]'s 8 lanes, when v[i] holds the vector of lane
 * {0, 4, 1, 5, 2, 6, 3, 7}[i] (each step halves the partials of two sets of vectors side by side). */
#define ACROSS8(name, op)                                                                                       \
  ALWAYS_INLINE __m256 name(const __m256 *v) {                                                                  \
    __m256 a[4], b[2];                                                                                          \
    for (int i = 0; i < 4; i++)                                                                                 \
      a[i] = op(_mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x20),                                           \
                _mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x31));                                          \
    for (int i = 0; i < 2; i++)                                                                                 \
      b[i] = op(_mm256_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),                             \
                _mm256_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));                            \
    return op(_mm256_shuffle_ps(b[0], b[1], _MM_SHUFFLE(2, 0, 2, 0)),                                           \
              _mm256_shuffle_ps(b[0], b[1], _MM_SHUFFLE(3, 1, 3, 1)));                                          \
  }
ACROSS8(min_across8, _mm256_min_ps)
ACROSS8(max_across8, _mm256_max_ps)

/* Eight rows at a time: their minima and maxima reduced together, the tails' values (k % 8) broadcast into
 * them, fixq__dyn_qparams in eight lanes with its operations in its order (min/max against 0 are its
 * selects, the NaN-free operands make every lane's IEEE result the scalar one), then each row quantized. */
static int quantize_rows(size_t rows, size_t k, const float *x, fixq__dyn_row *row, uint8_t *q) {
  static const int slot[8] = {0, 2, 4, 6, 1, 3, 5, 7}; /* row r's vector: v[slot[r]] */
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f), top = _mm256_set1_ps(255.0f);
  const __m256 magic = _mm256_set1_ps(12582912.0f), inf = _mm256_set1_ps(INFINITY);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const size_t k8 = k - k % 8;
  for (size_t r0 = 0; r0 < rows; r0 += 8) {
    const size_t nr = rows - r0 < 8 ? rows - r0 : 8;
    __m256 lv[8], hv[8], zs = zero;
    for (size_t r = 0; r < 8; r++) {
      const float *xr = x + (r0 + (r < nr ? r : 0)) * k; /* rows past the last: the first again */
      __m256 l, h, z;
      row_range(k, xr, &l, &h, &z);
      for (size_t i = k8; i < k; i++) {
        const __m256 t = _mm256_set1_ps(xr[i]);
        l = _mm256_min_ps(l, t);
        h = _mm256_max_ps(h, t);
        z = _mm256_fmadd_ps(t, zero, z);
      }
      lv[slot[r]] = l;
      hv[slot[r]] = h;
      zs = _mm256_add_ps(zs, z);
    }
    if (_mm256_movemask_ps(_mm256_cmp_ps(zs, zero, _CMP_NEQ_UQ))) return 0;
    /* lo = lo < 0 ? lo : 0; hi = hi > 0 ? hi : 0 */
    const __m256 lo = _mm256_min_ps(min_across8(lv), zero), hi = _mm256_max_ps(max_across8(hv), zero);
    __m256 s = _mm256_div_ps(_mm256_sub_ps(hi, lo), top);
    s = _mm256_blendv_ps(s, one, _mm256_cmp_ps(s, zero, _CMP_EQ_OQ));
    if (_mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(s, abs_mask), inf, _CMP_EQ_OQ)) & ((1 << nr) - 1)) return 0;
    __m256 z = _mm256_sub_ps(zero, _mm256_div_ps(lo, s));
    z = _mm256_min_ps(_mm256_max_ps(z, zero), top); /* z's sign at 0 does not reach the integer */
    const __m256i zp = _mm256_cvttps_epi32(_mm256_sub_ps(_mm256_add_ps(z, magic), magic));
    float sv[8];
    int32_t zv[8];
    _mm256_storeu_ps(sv, s);
    _mm256_storeu_si256((__m256i *)zv, zp);
    for (size_t r = 0; r < nr; r++) {
      row[r0 + r].scale = sv[r];
      row[r0 + r].zp = zv[r];
      quantize_u8(k, x + (r0 + r) * k, sv[r], zv[r], q + (r0 + r) * k);
    }
  }
  return 1;
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

const fixq__dyn_kernels fixq__dyn_kernels__avx2 = {finite_range, quantize_u8, quantize_rows, epilogue};
