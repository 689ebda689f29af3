/* The AVX2 requantize output stage of 8 int32 lanes (fixq_requant, every rounding) and its narrowing
 * stores, shared by requant__avx2.c and the kernels that requantize in registers
 * (engine_dwconv__avx2.c), bit-identical to requant__scalar.c.  Include only from files compiled with the
 * AVX2 flags. */
#ifndef FIXQ_REQUANT_AVX2_H_
#define FIXQ_REQUANT_AVX2_H_

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

#endif /* FIXQ_REQUANT_AVX2_H_ */
