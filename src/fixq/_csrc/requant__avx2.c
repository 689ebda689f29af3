/* AVX2 requantize / quantize / dequantize, bit-identical to requant__scalar.c.
 * Eight int32 lanes at a time; the last group of a row through masks. */
#include "fixq_requant_avx2.h"

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
