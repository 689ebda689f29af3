/* AVX2 requantize / quantize / dequantize, bit-identical to requant__scalar.c.
 * Eight int32 lanes at a time; the last group of a row through masks. */
#include <immintrin.h>
#include <string.h>

#include "fixq_avx2.h"

/* Same operations, same order as fixq__requant_fp32. */
ALWAYS_INLINE __m256i requant_fp32(__m256i x, __m256 scale, __m256 lo, __m256 hi, __m256i zp) {
  return _mm256_add_epi32(clamp_round_f32(_mm256_mul_ps(_mm256_cvtepi32_ps(x), scale), lo, hi), zp);
}

/* Lanes 0..n-1 set (n <= 8), for vpmaskmov. */
ALWAYS_INLINE __m256i lane_mask(size_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Per-lane parameters of one group of 8 outputs. */
typedef struct {
  mbqm_double_params D; /* FIXQ_ROUND_DOUBLE */
  __m256i m, total;     /* FIXQ_ROUND_SINGLE */
  __m256i zp;
  __m256 scale, lo, hi; /* FIXQ_ROUND_FP32 */
} lanes;

/* The first n (<= 8) lanes of p's arrays from c on (per_lane), or channel c
 * in every lane. */
ALWAYS_INLINE __m256i load_lanes(const int32_t *v, size_t n, int per_lane) {
  if (!per_lane) return _mm256_set1_epi32(*v);
  return n == 8 ? _mm256_loadu_si256((const __m256i *)v) : _mm256_maskload_epi32(v, lane_mask(n));
}

ALWAYS_INLINE lanes lanes_load(const fixq_requant *p, size_t c, size_t n, int per_lane, fixq_rounding mode) {
  lanes L;
  L.zp = load_lanes(p->zero_point + c, n, per_lane);
  if (mode == FIXQ_ROUND_FP32) {
    L.scale = !per_lane ? _mm256_set1_ps(p->scale[c])
              : n == 8  ? _mm256_loadu_ps(p->scale + c)
                        : _mm256_maskload_ps(p->scale + c, lane_mask(n));
    L.lo = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_set1_epi32(p->qmin), L.zp));
    L.hi = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_set1_epi32(p->qmax), L.zp));
    return L;
  }
  const __m256i zero = _mm256_setzero_si256();
  const __m256i s = load_lanes(p->shift + c, n, per_lane), m = load_lanes(p->multiplier + c, n, per_lane);
  if (mode == FIXQ_ROUND_DOUBLE) {
    L.D = mbqm_double_prepare(m, _mm256_max_epi32(s, zero), _mm256_max_epi32(_mm256_sub_epi32(zero, s), zero));
  } else {
    L.m = m;
    L.total = _mm256_sub_epi32(_mm256_set1_epi32(31), s);
  }
  return L;
}

ALWAYS_INLINE __m256i requant8(__m256i x, const lanes *L, fixq_rounding mode, __m256i qmin, __m256i qmax) {
  __m256i v;
  if (mode == FIXQ_ROUND_FP32) return requant_fp32(x, L->scale, L->lo, L->hi, L->zp);
  v = mode == FIXQ_ROUND_DOUBLE ? mbqm_double(x, &L->D) : mbqm_single(x, L->m, L->total);
  /* clamp(v + zp, qmin, qmax) == clamp(v, qmin - zp, qmax - zp) + zp, without int32 overflow */
  v = _mm256_min_epi32(_mm256_max_epi32(v, _mm256_sub_epi32(qmin, L->zp)), _mm256_sub_epi32(qmax, L->zp));
  return _mm256_add_epi32(v, L->zp);
}

/* Stores 8 int32 values already inside the output dtype's range. */
ALWAYS_INLINE void store8(void *y, size_t i, fixq_dtype dt, __m256i v) {
  const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
  switch (dt) {
    case FIXQ_INT8: {
      const __m128i w = _mm_packs_epi32(lo, hi);
      _mm_storel_epi64((__m128i *)((int8_t *)y + i), _mm_packs_epi16(w, w));
      break;
    }
    case FIXQ_UINT8: {
      const __m128i w = _mm_packs_epi32(lo, hi);
      _mm_storel_epi64((__m128i *)((uint8_t *)y + i), _mm_packus_epi16(w, w));
      break;
    }
    case FIXQ_INT16:
      _mm_storeu_si128((__m128i *)((int16_t *)y + i), _mm_packs_epi32(lo, hi));
      break;
    default:
      _mm256_storeu_si256((__m256i *)((int32_t *)y + i), v);
      break;
  }
}

/* The first n (< 8) of the 8 values store8 would write. */
ALWAYS_INLINE void store_partial(void *y, size_t i, fixq_dtype dt, __m256i v, size_t n) {
  uint8_t tmp[32] __attribute__((aligned(32)));
  store8(tmp, 0, dt, v);
  const size_t esize = fixq__dtype_size(dt), bytes = n * esize;
  uint8_t *d = (uint8_t *)y + i * esize;
  const uint8_t *s = tmp;
  if (bytes & 16) memcpy(d, s, 16), d += 16, s += 16;
  if (bytes & 8) memcpy(d, s, 8), d += 8, s += 8;
  if (bytes & 4) memcpy(d, s, 4), d += 4, s += 4;
  if (bytes & 2) memcpy(d, s, 2), d += 2, s += 2;
  if (bytes & 1) *d = *s;
}

/* Each group of parameters is prepared once for all rows; the last group of
 * a row (n < 8) is read and written through masks. */
ALWAYS_INLINE void requant_rows(size_t rows, size_t channels, size_t inner, const int32_t *x, size_t x_stride,
                                void *y, size_t y_stride, fixq_dtype dt, const fixq_requant *p,
                                fixq_rounding mode) {
  const __m256i qmin = _mm256_set1_epi32(p->qmin), qmax = _mm256_set1_epi32(p->qmax);
  if (inner == 1) {
    /* parameters vary along the vector */
    for (size_t c = 0; c < channels; c += 8) {
      const size_t n = channels - c < 8 ? channels - c : 8;
      const lanes L = lanes_load(p, c, n, 1, mode);
      if (n == 8) {
        for (size_t r = 0; r < rows; r++)
          store8(y, r * y_stride + c, dt,
                 requant8(_mm256_loadu_si256((const __m256i *)(x + r * x_stride + c)), &L, mode, qmin, qmax));
      } else {
        const __m256i mask = lane_mask(n);
        for (size_t r = 0; r < rows; r++)
          store_partial(y, r * y_stride + c, dt,
                        requant8(_mm256_maskload_epi32(x + r * x_stride + c, mask), &L, mode, qmin, qmax), n);
      }
    }
    return;
  }
  const __m256i mask = lane_mask(inner % 8);
  for (size_t c = 0; c < channels; c++) {
    const lanes L = lanes_load(p, c, 1, 0, mode);
    for (size_t r = 0; r < rows; r++) {
      const int32_t *xr = x + r * x_stride + c * inner;
      const size_t yr = r * y_stride + c * inner;
      size_t i = 0;
      for (; i + 8 <= inner; i += 8)
        store8(y, yr + i, dt, requant8(_mm256_loadu_si256((const __m256i *)(xr + i)), &L, mode, qmin, qmax));
      if (i < inner)
        store_partial(y, yr + i, dt, requant8(_mm256_maskload_epi32(xr + i, mask), &L, mode, qmin, qmax),
                      inner - i);
    }
  }
}

void fixq_requant_s32__avx2(size_t rows, size_t channels, size_t inner, const int32_t *x, size_t x_stride,
                            void *y, size_t y_stride, fixq_dtype y_dtype, const fixq_requant *p) {
  switch (p->rounding) {
    case FIXQ_ROUND_DOUBLE:
      requant_rows(rows, channels, inner, x, x_stride, y, y_stride, y_dtype, p, FIXQ_ROUND_DOUBLE);
      break;
    case FIXQ_ROUND_SINGLE:
      requant_rows(rows, channels, inner, x, x_stride, y, y_stride, y_dtype, p, FIXQ_ROUND_SINGLE);
      break;
    default:
      requant_rows(rows, channels, inner, x, x_stride, y, y_stride, y_dtype, p, FIXQ_ROUND_FP32);
      break;
  }
}

/* ---- quantize: same float ops as fixq_quantize_f32__scalar ---------------- */
int fixq_quantize_f32__avx2(size_t rows, size_t channels, size_t inner, const float *x, void *y,
                            fixq_dtype dt, const float *scale, const int32_t *zero_point, int32_t qmin,
                            int32_t qmax) {
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  __m256 nan = _mm256_setzero_ps();
  int nan_tail = 0;
  size_t k = 0;
  for (size_t r = 0; r < rows; r++)
    for (size_t c = 0; c < channels; c++) {
      const float s = scale[c];
      const int32_t zp = zero_point[c];
      const __m256 vs = _mm256_set1_ps(s);
      const __m256 lo = _mm256_set1_ps((float)(qmin - zp)), hi = _mm256_set1_ps((float)(qmax - zp));
      const __m256i vzp = _mm256_set1_epi32(zp);
      size_t i = 0;
      for (; i + 8 <= inner; i += 8, k += 8) {
        __m256 f = _mm256_div_ps(_mm256_loadu_ps(x + k), vs);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(f, f, _CMP_UNORD_Q));
        f = _mm256_min_ps(_mm256_max_ps(f, lo), hi);
        f = _mm256_sub_ps(_mm256_add_ps(f, magic), magic);
        store8(y, k, dt, _mm256_add_epi32(_mm256_cvttps_epi32(f), vzp));
      }
      if (i < inner) {
        nan_tail |= fixq_quantize_f32__scalar(1, 1, inner - i, x + k, (char *)y + k * fixq__dtype_size(dt), dt,
                                              &s, &zp, qmin, qmax);
        k += inner - i;
      }
    }
  return nan_tail | (_mm256_movemask_ps(nan) != 0);
}

/* ---- dequantize ------------------------------------------------------------ */
ALWAYS_INLINE __m256i load8_widen(const void *q, fixq_dtype dt, size_t k) {
  switch (dt) {
    case FIXQ_INT8: return _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)q + k)));
    case FIXQ_UINT8: return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)((const uint8_t *)q + k)));
    default: return _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)((const int16_t *)q + k)));
  }
}

void fixq_dequantize__avx2(size_t rows, size_t channels, size_t inner, const void *q, fixq_dtype dt, float *y,
                           const float *scale, const int32_t *zero_point) {
  if (dt == FIXQ_INT32) { /* q - zero_point needs int64 here: the scalar contract */
    fixq_dequantize__scalar(rows, channels, inner, q, dt, y, scale, zero_point);
    return;
  }
  const size_t esize = fixq__dtype_size(dt);
  size_t k = 0;
  for (size_t r = 0; r < rows; r++)
    for (size_t c = 0; c < channels; c++) {
      const __m256 vs = _mm256_set1_ps(scale[c]);
      const __m256i vzp = _mm256_set1_epi32(zero_point[c]);
      size_t i = 0;
      for (; i + 8 <= inner; i += 8, k += 8)
        _mm256_storeu_ps(y + k, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(load8_widen(q, dt, k), vzp)), vs));
      if (i < inner) {
        fixq_dequantize__scalar(1, 1, inner - i, (const char *)q + k * esize, dt, y + k, scale + c,
                                zero_point + c);
        k += inner - i;
      }
    }
}
